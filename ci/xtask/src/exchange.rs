//! A TCP exchange with a guest's echo server through a port QEMU forwards: the host sends a
//! stream of pseudo-random bytes and reads the echo back at the same time, then compares
//! what came back with what went out (length and a 64-bit FNV-1a checksum, and the first
//! byte that differs).
//!
//! The result is one line, `xtask: tcp exchange: ...`, which the serial watcher adds to the
//! run's log (see `serial::Watch::exchange`) so a scenario judges it like any other line:
//!
//! - `xtask: tcp exchange: <n> bytes each way intact in <s> s (<r> KiB/s each way)`
//! - `xtask: tcp exchange failed: <why>`

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long the whole exchange may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long connecting may keep failing (the guest's server may start a moment later).
const CONNECT_FOR: Duration = Duration::from_secs(30);
const CHUNK: usize = 64 * 1024;

/// The `index`-th byte of the stream (xorshift over the index, so any byte is cheap to
/// recompute and neighbouring streams differ).
pub fn stream_byte(index: u64) -> u8 {
    let mut x = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 29;
    x as u8
}

/// FNV-1a over bytes, continued from `hash`.
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Connects to 127.0.0.1:`port` and exchanges `bytes` bytes (see the module documentation).
/// Returns the result line.
pub fn run(port: u16, bytes: u64) -> String {
    // QEMU's user network accepts the host's connection before the guest does; if the
    // guest's server was not listening yet, the guest resets it and nothing comes back. Such
    // an attempt is made again, a few times.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut received = 0;
        match exchange(port, bytes, &mut received) {
            Ok(line) => return line,
            Err(_) if received == 0 && attempts < RETRIES => {
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return format!("xtask: tcp exchange failed: {e:#}"),
        }
    }
}

/// How many times an exchange that got nothing back is tried.
const RETRIES: u32 = 5;

fn connect(port: u16) -> Result<TcpStream> {
    let start = Instant::now();
    loop {
        // QEMU's user network accepts the host connection first and closes it if the guest
        // refuses; a probe read tells.
        let attempt = TcpStream::connect(("127.0.0.1", port));
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) if start.elapsed() > CONNECT_FOR => {
                return Err(e).with_context(|| format!("could not connect to 127.0.0.1:{port}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn exchange(port: u16, bytes: u64, received: &mut u64) -> Result<String> {
    let start = Instant::now();
    let stream = connect(port)?;
    stream.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    stream.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> Result<u64> {
        let mut sent = 0u64;
        let mut hash = FNV_START;
        let mut buffer = vec![0u8; CHUNK];
        while sent < bytes {
            let count = CHUNK.min((bytes - sent) as usize);
            for (i, byte) in buffer[..count].iter_mut().enumerate() {
                *byte = stream_byte(sent + i as u64);
            }
            writer
                .write_all(&buffer[..count])
                .with_context(|| format!("sending failed after {sent} bytes"))?;
            hash = fnv1a(hash, &buffer[..count]);
            sent += count as u64;
        }
        writer.shutdown(Shutdown::Write)?;
        Ok(hash)
    });
    let mut reader = stream;
    let mut hash = FNV_START;
    let mut first_difference = None;
    let mut buffer = vec![0u8; CHUNK];
    let deadline = start + EXCHANGE_TIMEOUT;
    while *received < bytes {
        if Instant::now() > deadline {
            bail!("timed out after {received} of {bytes} bytes came back");
        }
        let count = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(e) => {
                return Err(e).with_context(|| format!("receiving failed after {received} bytes"))
            }
        };
        for (i, &byte) in buffer[..count].iter().enumerate() {
            let at = *received + i as u64;
            if first_difference.is_none() && byte != stream_byte(at) {
                first_difference = Some(at);
            }
        }
        hash = fnv1a(hash, &buffer[..count]);
        *received += count as u64;
    }
    let sent_hash = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sending thread panicked"))??;
    let seconds = start.elapsed().as_secs_f64();
    if *received != bytes {
        bail!("{received} of {bytes} bytes came back before the guest closed the connection");
    }
    if let Some(at) = first_difference {
        bail!("the echo differs from what was sent from byte {at} on (checksums {hash:016x} back, {sent_hash:016x} sent)");
    }
    if hash != sent_hash {
        bail!("checksums differ: {hash:016x} back, {sent_hash:016x} sent");
    }
    Ok(format!(
        "xtask: tcp exchange: {bytes} bytes each way intact in {seconds:.1} s ({:.0} KiB/s each way), checksum {hash:016x}",
        bytes as f64 / 1024.0 / seconds.max(0.001)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn echo_server(mangle_at: Option<u64>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buffer = [0u8; 4096];
            let mut at = 0u64;
            loop {
                let count = stream.read(&mut buffer).unwrap();
                if count == 0 {
                    break;
                }
                for (i, byte) in buffer[..count].iter_mut().enumerate() {
                    if Some(at + i as u64) == mangle_at {
                        *byte ^= 1;
                    }
                }
                at += count as u64;
                stream.write_all(&buffer[..count]).unwrap();
            }
        });
        port
    }

    #[test]
    fn an_honest_echo_passes_and_a_flipped_bit_is_found() {
        let line = run(echo_server(None), 300_000);
        assert!(
            line.starts_with("xtask: tcp exchange: 300000 bytes each way intact"),
            "{line}"
        );
        let line = run(echo_server(Some(123_456)), 300_000);
        assert!(
            line.contains("failed: the echo differs from what was sent from byte 123456"),
            "{line}"
        );
    }

    #[test]
    fn the_stream_is_not_constant() {
        let first: Vec<u8> = (0..64).map(stream_byte).collect();
        assert!(first.windows(2).any(|w| w[0] != w[1]));
        assert_ne!(fnv1a(FNV_START, b"a"), fnv1a(FNV_START, b"b"));
    }
}
