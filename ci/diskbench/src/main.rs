//! `diskbench <device> [seconds]`: the guest half of `cargo xtask bench --only disk`.
//!
//! Built as a static Linux program and put into the benchmark's initramfs, it runs inside
//! the Linux guest against a whole disk (the bench's scratch image: its contents are
//! overwritten), the same way in both boots that are compared: Linux on the microvisor with
//! `xvda` from blkback, and Linux booted by QEMU directly on the same `virtio-blk-pci` disk.
//! Every access uses `O_DIRECT`, so the guest's page cache is not measured.
//!
//! | test | what |
//! |---|---|
//! | `seq-write` | 1 MiB writes, one at a time, cycling over the first 64 MiB, then `fdatasync` |
//! | `seq-read` | 1 MiB reads, one at a time, over the same area |
//! | `rand-read-qd1` | 4 KiB reads at random 4 KiB-aligned offsets of the area, one at a time |
//! | `rand-read-qd32` | the same from 32 threads at once (32 requests in flight) |
//!
//! Each test runs for `seconds` (default 5) after a 2 s pause (so the back-end's idle
//! statistics line falls between two tests) and prints one line, `diskbench: <test> <value>
//! <MB/s|IOPS> (<ops> ops in <seconds> s)`, after `diskbench: <test> start`. The last line
//! is `diskbench: done`. Any failure is a line `diskbench: <test> FAILED: <error>` and
//! exit status 1.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Linux's `O_DIRECT` on x86_64.
const O_DIRECT: i32 = 0o40000;
const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
/// The area the tests cycle over (or the whole disk, if smaller).
const AREA: u64 = 64 * MIB;
const QUEUE_DEPTH: usize = 32;
/// The pause before each test and after the last (the back-end prints its counts in it).
const PAUSE_SECONDS: u64 = 2;

/// A buffer of `len` bytes aligned to 4 KiB (as `O_DIRECT` needs), inside a larger vector.
struct Aligned {
    bytes: Vec<u8>,
    offset: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize, fill: u8) -> Self {
        let bytes = vec![fill; len + BLOCK as usize];
        let offset = bytes.as_ptr().align_offset(BLOCK as usize);
        Self { bytes, offset, len }
    }

    fn get(&self) -> &[u8] {
        &self.bytes[self.offset..self.offset + self.len]
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.offset..self.offset + self.len]
    }
}

/// xorshift64*: offsets for the random reads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

struct Outcome {
    ops: u64,
    elapsed: Duration,
}

fn sequential(file: &File, area: u64, seconds: u64, write: bool) -> std::io::Result<Outcome> {
    let mut buffer = Aligned::new(MIB as usize, 0xa5);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut ops = 0u64;
    let blocks = area / MIB;
    while Instant::now() < deadline {
        let offset = (ops % blocks) * MIB;
        if write {
            file.write_all_at(buffer.get(), offset)?;
        } else {
            file.read_exact_at(buffer.get_mut(), offset)?;
        }
        ops += 1;
    }
    if write {
        file.sync_data()?;
    }
    Ok(Outcome {
        ops,
        elapsed: start.elapsed(),
    })
}

fn random(file: &File, area: u64, seconds: u64, depth: usize) -> std::io::Result<Outcome> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let blocks = area / BLOCK;
    let counts: Vec<std::io::Result<u64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..depth)
            .map(|worker| {
                scope.spawn(move || {
                    let mut buffer = Aligned::new(BLOCK as usize, 0);
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (worker as u64 + 1));
                    let mut ops = 0u64;
                    while Instant::now() < deadline {
                        let offset = (rng.next() % blocks) * BLOCK;
                        file.read_exact_at(buffer.get_mut(), offset)?;
                        ops += 1;
                    }
                    Ok(ops)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or(Ok(0)))
            .collect()
    });
    let mut ops = 0;
    for count in counts {
        ops += count?;
    }
    Ok(Outcome {
        ops,
        elapsed: start.elapsed(),
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(device) = args.get(1) else {
        eprintln!("usage: diskbench <block device> [seconds]");
        return ExitCode::from(2);
    };
    let seconds = match args.get(2).map(|s| s.parse::<u64>()) {
        None => 5,
        Some(Ok(s)) if s > 0 => s,
        Some(_) => {
            eprintln!("diskbench: seconds must be a positive number");
            return ExitCode::from(2);
        }
    };
    let mut file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(O_DIRECT)
        .open(device)
    {
        Ok(file) => file,
        Err(e) => {
            println!("diskbench: open FAILED: {device}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let size = file.seek(SeekFrom::End(0)).unwrap_or(0);
    let area = AREA.min(size / MIB * MIB);
    if area < MIB {
        println!("diskbench: open FAILED: {device} has {size} bytes, less than 1 MiB");
        return ExitCode::FAILURE;
    }
    println!(
        "diskbench: {device}: {size} bytes, testing the first {} MiB for {seconds} s each",
        area / MIB
    );
    type Test = fn(&File, u64, u64) -> std::io::Result<Outcome>;
    let tests: [(&str, Test, u64, &str); 4] = [
        (
            "seq-write",
            |f, a, s| sequential(f, a, s, true),
            MIB,
            "MB/s",
        ),
        (
            "seq-read",
            |f, a, s| sequential(f, a, s, false),
            MIB,
            "MB/s",
        ),
        ("rand-read-qd1", |f, a, s| random(f, a, s, 1), BLOCK, "IOPS"),
        (
            "rand-read-qd32",
            |f, a, s| random(f, a, s, QUEUE_DEPTH),
            BLOCK,
            "IOPS",
        ),
    ];
    for (name, test, op_bytes, unit) in tests {
        std::thread::sleep(Duration::from_secs(PAUSE_SECONDS));
        println!("diskbench: {name} start");
        match test(&file, area, seconds) {
            Ok(outcome) => {
                let secs = outcome.elapsed.as_secs_f64();
                let value = if unit == "IOPS" {
                    outcome.ops as f64 / secs
                } else {
                    (outcome.ops * op_bytes) as f64 / 1e6 / secs
                };
                println!(
                    "diskbench: {name} {value:.1} {unit} ({} ops in {secs:.3} s)",
                    outcome.ops
                );
            }
            Err(e) => {
                println!("diskbench: {name} FAILED: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    std::thread::sleep(Duration::from_secs(PAUSE_SECONDS));
    println!("diskbench: done");
    ExitCode::SUCCESS
}
