//! `cargo xtask bench --only disk`: the Linux guest's disk through blkback against the same
//! guest on QEMU's own `virtio-blk-pci` disk behind `intel-iommu`.
//!
//! Both boots run `diskbench` (`ci/diskbench`, built static and added to the benchmark's
//! initramfs with a script `/init` runs through `guest.run=`) on a fresh scratch image of
//! [`DISK_MIB`] MiB: 1 MiB O_DIRECT sequential write and read, 4 KiB O_DIRECT random reads
//! at queue depth 1 and 32. The boots alternate, `--runs` of each; the medians and their
//! ratios are reported.
//!
//! Through the microvisor, blkback runs with `stats=idle` and prints its counts each time
//! the guest's disk goes idle (in diskbench's pauses between tests); the difference across
//! the QD32 test gives its per-request figures: notifications to the guest, wake-ups,
//! grant copies, grant maps and unmaps, bytes, and blkback's own hypercalls and VM exits.
//! The guest's VM exits and hypercalls come from the microvisor's teardown lines (its whole
//! life, boot included). blkback's footprint is its image's loaded size plus its heap in
//! use, less its bounce buffers (as its `own:` line says).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::Serialize;

use super::{
    boot_direct_as, boot_machine, domain_counters, failure, median_f64, pack, BenchArgs,
    DomainCounters, BENCH_CPUS, LINUX_MEMORY_MIB,
};
use crate::commands;
use crate::linux::{self, cpio::Archive};
use crate::qemu::DirectLinux;
use crate::serial::Capture;
use crate::workspace::Workspace;

/// The disk system booted through the microvisor, relative to the workspace root.
pub const DISK_SYSTEM: &str = "ci/bench/disk/system.cfg";
/// The initramfs both boots use, written beside the Linux images.
pub const BENCH_INITRAMFS: &str = "bench-initramfs";
/// The scratch disk's size.
const DISK_MIB: u32 = 128;
/// Seconds each diskbench test runs.
const TEST_SECONDS: u32 = 5;
/// The direct boot's kernel command line: the guest's console on the UART, the IOMMU on
/// (the device is `iommu_platform=on`, as blkback's is), the benchmark, then power-off.
const DIRECT_CMDLINE: &str =
    "console=ttyS0 intel_iommu=on guest.run=/bench-disk.sh guest.poweroff=1";
const TESTS: [&str; 4] = ["seq-write", "seq-read", "rand-read-qd1", "rand-read-qd32"];
/// Goals of the issue: sequential ratios, then IOPS ratios.
const SEQUENTIAL_GOAL: f64 = 0.9;
const IOPS_GOAL: f64 = 0.7;
const EVENTS_GOAL: f64 = 0.1;
const FOOTPRINT_GOAL_BYTES: u64 = 2 << 20;

/// The script `/init` runs: diskbench on whichever disk the guest has.
const SCRIPT: &str = "#!/bin/sh\n\
# Written by `cargo xtask bench`: the disk benchmark on the guest's disk.\n\
for dev in /dev/xvda /dev/vda; do\n\
    if [ -b \"$dev\" ]; then\n\
        exec /bin/diskbench \"$dev\" @SECONDS@\n\
    fi\n\
done\n\
echo \"diskbench: open FAILED: no disk\"\n";

#[derive(Serialize)]
pub struct DiskReport {
    disk_mib: u32,
    test_seconds: u32,
    /// Per test: direct and microvisor values (MB/s or IOPS), run by run, medians, ratio.
    tests: Vec<TestRow>,
    /// blkback's counts across the QD32 test, per request.
    qd32_per_request: Option<PerRequest>,
    /// The guest's VM exits and hypercalls over its whole life, from the median boot.
    guest_counters: DomainCounters,
    guest_requests: u64,
    blkback_footprint: Footprint,
}

#[derive(Serialize)]
struct TestRow {
    test: &'static str,
    unit: &'static str,
    direct: Vec<f64>,
    microvisor: Vec<f64>,
    direct_median: f64,
    microvisor_median: f64,
    ratio: f64,
    goal: f64,
}

#[derive(Serialize, Clone, Copy, Default, Debug, PartialEq)]
struct PerRequest {
    requests: u64,
    notifications_to_guest: f64,
    backend_wakeups: f64,
    grant_copies: f64,
    grant_maps: f64,
    grant_unmaps: f64,
    bytes: f64,
    backend_events_sent: f64,
    backend_hypercalls: f64,
    backend_vm_exits: f64,
    /// The most requests of one queue on the disk at once, so far (blkback's own count).
    in_flight_at_most: u64,
}

#[derive(Serialize, Default)]
struct Footprint {
    image_bytes: u64,
    heap_in_use_bytes: u64,
    bounce_bytes: u64,
    /// image + heap in use - bounce.
    beside_buffers_bytes: u64,
    goal_bytes: u64,
}

/// One stats line of blkback, its numbers by name.
type Stats = BTreeMap<&'static str, u64>;

/// The keys of the `stats:` line, then of the `own:` line after it.
const STATS_KEYS: [&str; 7] = [
    "requests",
    "rounds",
    "notifications",
    "copies",
    "B in",
    "B out",
    "at once at most",
];
const OWN_KEYS: [&str; 7] = [
    "events",
    "hypercalls",
    "exits",
    "maps",
    "unmaps",
    "KiB heap",
    "KiB buffers",
];

/// Reads `vbd ... of linux (...): stats: 12 requests, 3 rounds, ...` (`part` "stats") or
/// its following `...: own: 4 events, ...` (`part` "own") into its numbers.
fn parse_stats(line: &str, part: &str) -> Option<Stats> {
    if !line.contains("of linux (") || !line.contains(&format!("): {part}: ")) {
        return None;
    }
    let keys: &[&'static str] = if part == "own" {
        &OWN_KEYS
    } else {
        &STATS_KEYS
    };
    let mut stats = Stats::new();
    for &key in keys {
        let pattern = Regex::new(&format!(r"(\d+) {}[,;]?(\s|$)", regex::escape(key))).ok()?;
        let value = pattern.captures(line)?[1].parse().ok()?;
        stats.insert(key, value);
    }
    Some(stats)
}

/// The results of one boot: each test's value, and blkback's stats lines in order, each
/// with the index of the last test finished before it.
struct Boot {
    values: BTreeMap<String, f64>,
    stats_after: Vec<(Option<usize>, Stats)>,
}

fn read_boot(capture: &Capture, label: &str) -> Result<Boot> {
    let result = Regex::new(r"diskbench: (\S+) ([\d.]+) (MB/s|IOPS) \(")?;
    let mut boot = Boot {
        values: BTreeMap::new(),
        stats_after: Vec::new(),
    };
    let mut finished: Option<usize> = None;
    let mut pending: Option<Stats> = None;
    for line in &capture.lines {
        if line.text.contains("diskbench:") && line.text.contains("FAILED") {
            bail!(failure(label, &line.text, capture));
        }
        if let Some(found) = result.captures(&line.text) {
            boot.values
                .insert(found[1].to_string(), found[2].parse().unwrap_or(0.0));
            finished = TESTS.iter().position(|test| *test == &found[1]);
        } else if let Some(stats) = parse_stats(&line.text, "stats") {
            pending = Some(stats);
        } else if let Some(own) = parse_stats(&line.text, "own") {
            if let Some(mut stats) = pending.take() {
                stats.extend(own);
                boot.stats_after.push((finished, stats));
            }
        }
    }
    for test in TESTS {
        if !boot.values.contains_key(test) {
            bail!(failure(
                label,
                &format!("diskbench printed no result for {test}"),
                capture
            ));
        }
    }
    Ok(boot)
}

/// blkback's counts across test `index`: the last stats line before it started and the
/// last one after it ended (before the next test).
fn across(boot: &Boot, index: usize) -> Option<(Stats, Stats)> {
    let previous = index.checked_sub(1);
    let before = boot
        .stats_after
        .iter()
        .rfind(|(finished, _)| *finished == previous)?;
    let after = boot
        .stats_after
        .iter()
        .rfind(|(finished, _)| *finished == Some(index))?;
    Some((before.1.clone(), after.1.clone()))
}

fn per_request(before: &Stats, after: &Stats) -> PerRequest {
    let delta = |key: &str| after[key].saturating_sub(before[key]);
    let requests = delta("requests");
    let per = |value: u64| value as f64 / requests.max(1) as f64;
    PerRequest {
        requests,
        notifications_to_guest: per(delta("notifications")),
        backend_wakeups: per(delta("rounds")),
        grant_copies: per(delta("copies")),
        grant_maps: per(delta("maps")),
        grant_unmaps: per(delta("unmaps")),
        bytes: per(delta("B in") + delta("B out")),
        backend_events_sent: per(delta("events")),
        backend_hypercalls: per(delta("hypercalls")),
        backend_vm_exits: per(delta("exits")),
        in_flight_at_most: after["at once at most"],
    }
}

/// Bytes an ELF64 image occupies once loaded: the sum of its `PT_LOAD` segments' sizes in
/// memory.
pub(super) fn loaded_bytes(path: &Path) -> Result<u64> {
    let elf = std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if !elf.starts_with(b"\x7fELF") {
        bail!("{} is not an ELF file", path.display());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("{} has no program header table", path.display());
    };
    let mut total = 0;
    for index in 0..usize::from(phnum) {
        let at = phoff as usize + index * usize::from(phentsize);
        let kind = elf
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")));
        if kind == Some(1) {
            total += u64_at(at + 0x28).unwrap_or(0);
        }
    }
    Ok(total)
}

/// Builds diskbench as a static program and writes the benchmark's initramfs: the guest's
/// own, followed by a second archive with `/bin/diskbench` and `/bench-disk.sh`.
fn make_initramfs(
    workspace: &Workspace,
    images: &linux::LinuxImages,
) -> Result<std::path::PathBuf> {
    let program = build_static(workspace, "diskbench")?;
    let mut archive = Archive::new();
    archive.file("bin/diskbench", 0o755, &program)?;
    let script = SCRIPT.replace("@SECONDS@", &TEST_SECONDS.to_string());
    archive.file("bench-disk.sh", 0o755, script.as_bytes())?;
    append_to_initramfs(images, archive, BENCH_INITRAMFS)
}

/// Builds the workspace's binary `package` (of the package of that name) as a static Linux
/// program, for a guest's initramfs, and returns it.
pub(super) fn build_static(workspace: &Workspace, package: &str) -> Result<Vec<u8>> {
    let status = std::process::Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()))
        .current_dir(&workspace.root)
        .args([
            "rustc",
            "--release",
            "-q",
            "-p",
            package,
            "--bin",
            package,
            "--",
            "-C",
            "target-feature=+crt-static",
        ])
        .status()
        .with_context(|| format!("could not run cargo to build {package}"))?;
    if !status.success() {
        bail!("building {package} failed");
    }
    let program = workspace.release_dir().join(package);
    std::fs::read(&program).with_context(|| format!("could not read {}", program.display()))
}

/// Writes `<images>/<name>`: the guest's own initramfs followed by `archive` (Linux unpacks
/// concatenated archives in order, so its files are added to the guest's).
pub(super) fn append_to_initramfs(
    images: &linux::LinuxImages,
    archive: Archive,
    name: &str,
) -> Result<std::path::PathBuf> {
    let mut initramfs = std::fs::read(&images.initramfs)
        .with_context(|| format!("could not read {}", images.initramfs.display()))?;
    while initramfs.len() % 4 != 0 {
        initramfs.push(0);
    }
    initramfs.extend(archive.finish());
    let path = images.dir.join(name);
    std::fs::write(&path, initramfs)
        .with_context(|| format!("could not write {}", path.display()))?;
    Ok(path)
}

pub fn bench_disk(
    workspace: &Workspace,
    qemu: &Path,
    args: &BenchArgs,
    timeout: Duration,
) -> Result<DiskReport> {
    let images = linux::ensure(workspace)?;
    let initramfs = make_initramfs(workspace, &images)?;
    let packed = pack(workspace, DISK_SYSTEM)?;
    let disk = workspace.xtask_dir().join("bench-disk.img");
    let mut direct_boots = Vec::new();
    let mut microvisor_boots = Vec::new();
    let mut guest_counters = Vec::new();
    for run in 1..=args.runs {
        commands::create_disk(&disk, DISK_MIB)?;
        let mut extra = vec!["-device".into(), "intel-iommu,intremap=on".into()];
        extra.extend(commands::disk_args(&disk));
        let direct = DirectLinux {
            qemu: qemu.to_path_buf(),
            kernel: images.vmlinux.clone(),
            initrd: initramfs.clone(),
            cmdline: DIRECT_CMDLINE.to_string(),
            cpus: BENCH_CPUS,
            memory_mib: LINUX_MEMORY_MIB,
            multi_threaded_tcg: false,
            extra_args: extra,
        };
        let capture = boot_direct_as(workspace, &direct, timeout, "bench-disk-direct")?;
        direct_boots.push(read_boot(&capture, "disk (direct)")?);
        eprintln!(
            "bench: disk direct boot {run}/{}: {}",
            args.runs,
            summary(direct_boots.last())
        );

        commands::create_disk(&disk, DISK_MIB)?;
        let mut options = commands::MachineOptions::standard(BENCH_CPUS, LINUX_MEMORY_MIB);
        options.extra_args = commands::disk_args(&disk);
        let capture = boot_machine(workspace, qemu, &packed, options, timeout)?;
        let boot = read_boot(&capture, "disk (microvisor)")?;
        let lines: Vec<&str> = capture
            .lines
            .iter()
            .map(|line| line.text.as_str())
            .collect();
        let Some(counters) = domain_counters(&lines, "linux") else {
            bail!(failure(
                "disk (microvisor)",
                "no teardown counters for the guest",
                &capture
            ));
        };
        eprintln!(
            "bench: disk microvisor boot {run}/{}: {}",
            args.runs,
            summary(Some(&boot))
        );
        microvisor_boots.push(boot);
        guest_counters.push(counters);
    }

    let mut tests = Vec::new();
    for (index, test) in TESTS.iter().enumerate() {
        let values = |boots: &[Boot]| {
            boots
                .iter()
                .map(|boot| boot.values[*test])
                .collect::<Vec<_>>()
        };
        let direct = values(&direct_boots);
        let microvisor = values(&microvisor_boots);
        let (direct_median, microvisor_median) = (median_f64(&direct), median_f64(&microvisor));
        tests.push(TestRow {
            test,
            unit: if index < 2 { "MB/s" } else { "IOPS" },
            direct,
            microvisor,
            direct_median,
            microvisor_median,
            ratio: microvisor_median / direct_median.max(f64::MIN_POSITIVE),
            goal: if index < 2 {
                SEQUENTIAL_GOAL
            } else {
                IOPS_GOAL
            },
        });
    }
    // The per-request figures and the counters from the boot with the median QD32 IOPS.
    let qd32: Vec<f64> = microvisor_boots
        .iter()
        .map(|boot| boot.values[TESTS[3]])
        .collect();
    let median_boot = median_index_f64(&qd32);
    let boot = &microvisor_boots[median_boot];
    let qd32_per_request = across(boot, 3).map(|(before, after)| per_request(&before, &after));
    let last = boot
        .stats_after
        .last()
        .map(|(_, stats)| stats.clone())
        .unwrap_or_default();
    let image_bytes = loaded_bytes(&workspace.release_dir().join("blkback"))?;
    let heap = last.get("KiB heap").copied().unwrap_or(0) * 1024;
    let bounce = last.get("KiB buffers").copied().unwrap_or(0) * 1024;
    let footprint = Footprint {
        image_bytes,
        heap_in_use_bytes: heap,
        bounce_bytes: bounce,
        beside_buffers_bytes: (image_bytes + heap).saturating_sub(bounce),
        goal_bytes: FOOTPRINT_GOAL_BYTES,
    };
    Ok(DiskReport {
        disk_mib: DISK_MIB,
        test_seconds: TEST_SECONDS,
        tests,
        qd32_per_request,
        guest_counters: guest_counters.swap_remove(median_boot),
        guest_requests: last.get("requests").copied().unwrap_or(0),
        blkback_footprint: footprint,
    })
}

fn summary(boot: Option<&Boot>) -> String {
    let Some(boot) = boot else {
        return String::new();
    };
    TESTS
        .iter()
        .map(|test| format!("{test} {:.1}", boot.values[*test]))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn median_index_f64(values: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0)
}

pub fn print_disk(report: &DiskReport, runs: u32) {
    println!();
    println!(
        "Disk: the Linux guest's {} MiB scratch disk, {} s per test, {runs} boot(s) of each, interleaved (medians):",
        report.disk_mib, report.test_seconds
    );
    println!(
        "  {:<16} {:>14} {:>14} {:>7}   goal",
        "test", "virtio direct", "via blkback", "ratio"
    );
    for row in &report.tests {
        println!(
            "  {:<16} {:>9.1} {:<4} {:>9.1} {:<4} {:>7.2}   >= {}{}",
            row.test,
            row.direct_median,
            row.unit,
            row.microvisor_median,
            row.unit,
            row.ratio,
            row.goal,
            if row.ratio >= row.goal {
                ", met"
            } else {
                ", not met"
            }
        );
    }
    println!("  (direct: Linux booted by QEMU on virtio-blk-pci behind intel-iommu, intel_iommu=on; via blkback: the same disk passed through to blkback, xvda in the guest)");
    if let Some(per) = &report.qd32_per_request {
        println!(
            "Per request across the QD32 test ({} requests), from blkback's counts:",
            per.requests
        );
        println!(
            "  notifications to the guest {:.3} (goal <= {EVENTS_GOAL}{}), blkback wake-ups {:.3}, grant copies {:.2}, grant maps {:.3}, unmaps {:.3}, bytes {:.0}",
            per.notifications_to_guest,
            if per.notifications_to_guest <= EVENTS_GOAL { ", met" } else { ", not met" },
            per.backend_wakeups,
            per.grant_copies,
            per.grant_maps,
            per.grant_unmaps,
            per.bytes
        );
        println!(
            "  blkback: {:.3} events sent, {:.2} hypercalls, {:.2} vm exits; at most {} requests of a queue on the disk at once",
            per.backend_events_sent,
            per.backend_hypercalls,
            per.backend_vm_exits,
            per.in_flight_at_most
        );
    } else {
        println!("Per request across the QD32 test: blkback printed no stats lines around it");
    }
    let guest = &report.guest_counters;
    let requests = report.guest_requests.max(1) as f64;
    println!(
        "Guest over its whole life ({} disk requests, boot included): {} vm exits ({:.2} per request), {} hypercalls ({:.2} per request)",
        report.guest_requests,
        guest.vm_exits,
        guest.vm_exits as f64 / requests,
        guest.hypercalls,
        guest.hypercalls as f64 / requests
    );
    // The unclaimed-port exits are the boot's PIT calibration (README, "Known issues"): the
    // same count however many requests the run made, so they are no per-request cost.
    println!(
        "  of which {} unclaimed I/O-port exits, all at boot (the kernel's PIT calibration); the other exits: {:.2} per request",
        guest.unclaimed_ports,
        guest.vm_exits.saturating_sub(guest.unclaimed_ports) as f64 / requests
    );
    let f = &report.blkback_footprint;
    println!(
        "blkback footprint: image {} KiB + heap in use {} KiB - bounce buffers {} KiB = {} KiB beside its I/O buffers (goal <= {} KiB{})",
        f.image_bytes / 1024,
        f.heap_in_use_bytes / 1024,
        f.bounce_bytes / 1024,
        f.beside_buffers_bytes / 1024,
        f.goal_bytes / 1024,
        if f.beside_buffers_bytes <= f.goal_bytes { ", met" } else { ", not met" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_lines_are_read() {
        let line = "[blkback] vbd 51712 of linux (4): stats: 700 requests, 420 rounds, 400 notifications, 900 copies, 4096 B in, 8192 B out, 16 at once at most";
        let own = "[blkback] vbd 51712 of linux (4): own: 400 events, 5000 hypercalls, 7000 exits, 8 maps, 0 unmaps, 1100 KiB heap, 900 KiB buffers";
        let mut stats = parse_stats(line, "stats").unwrap();
        assert!(parse_stats(line, "own").is_none());
        stats.extend(parse_stats(own, "own").unwrap());
        assert_eq!(stats["requests"], 700);
        assert_eq!(stats["B out"], 8192);
        assert_eq!(stats["maps"], 8);
        assert_eq!(stats["unmaps"], 0);
        assert_eq!(stats["KiB heap"], 1100);
        assert_eq!(stats["KiB buffers"], 900);
        assert_eq!(stats["at once at most"], 16);
        assert!(parse_stats(
            "[blkback] vbd 51712 of h-ro (5): stats: 1 requests",
            "stats"
        )
        .is_none());
        let mut after = stats.clone();
        for value in after.values_mut() {
            *value *= 2;
        }
        let per = per_request(&stats, &after);
        assert_eq!(per.requests, 700);
        assert!((per.notifications_to_guest - 400.0 / 700.0).abs() < 1e-9);
        assert!((per.bytes - 12288.0 / 700.0).abs() < 1e-9);
    }

    #[test]
    fn the_disk_bench_system_is_valid_up_to_its_images() {
        let system = crate::workspace::workspace_root().join(DISK_SYSTEM);
        crate::system::tests::assert_valid_up_to_images(&system);
    }
}
