//! `cargo xtask bench`: boot times, the hypercall round trip, the Linux boot, its disk and its
//! network, measured from the host.
//!
//! Times are taken when a serial line reaches the host, relative to QEMU's spawn; each system
//! boots several times and the median is reported. Five parts, each of which `--only` can
//! pick:
//! - `boot`: the demo and the empty systems, to `all <n> domains running`, `ready` and exit;
//! - `hcbench`: the `hcbench` domain measures hypercalls from inside and prints one
//!   `hcbench:` line, shown as it is;
//! - `linux`: Debian's kernel and initramfs to their first userspace line (`guest: userspace
//!   up`), booted by QEMU's own PVH loader (the baseline) and through the microvisor
//!   (`ci/bench/linux`), interleaved; reported as the two medians and their ratio, with the
//!   guest domain's exits by kind and hypercalls by number from the microvisor's boot whose
//!   time is the median.
//!
//! - `disk`: the Linux guest's disk through blkback against the same guest booted by QEMU
//!   on its own `virtio-blk-pci` behind `intel-iommu` ([`disk`]).
//! - `net`: the Linux guest's network through netback against the same guest booted by QEMU
//!   on its own `virtio-net-pci` behind `intel-iommu`, both on QEMU's user network ([`net`]).
//! - `create`: `xl create` of a small Rust domain and of Linux against the microvisor's
//!   boot-time build of the same domains, the control domain's cost per create, and how many
//!   small domains can be alive at once ([`create`]).
//!
//! Everything printed is also written to `<target>/xtask/bench.json`. No figure is asserted:
//! the ratio's goal is printed beside it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use regex::Regex;
use serde::Serialize;

use crate::qemu::{self, DirectLinux, Exit, STATUS_POWEROFF};
use crate::serial::{self, Capture, Ending, Watch};
use crate::system::{self, PackedSystem};
use crate::workspace::Workspace;
use crate::{commands, images, linux};

mod create;
mod disk;
mod net;
mod restart;

const BENCH_CPUS: u32 = 2;
const BENCH_MEMORY_MIB: u32 = 512;
/// The machine of the Linux boots, both kinds (as the Linux scenarios').
const LINUX_MEMORY_MIB: u32 = 1024;

const ALL_RUNNING: &str = r"\[microvisor\] all \d+ domains running";
const READY: &str = r"\[microvisor\] ready\b";
const HCBENCH: &str = r"hcbench:";
/// The Linux guest's first userspace line (its `/init`), in both kinds of boot.
const USERSPACE_UP: &str = r"guest: userspace up";
/// The kernel's first line (`[    0.000000] Linux version 6.1.0-...`), in both kinds of boot.
const KERNEL_FIRST_LINE: &str = r"\] Linux version \d";

/// The Linux system booted through the microvisor, relative to the workspace root.
const LINUX_SYSTEM: &str = "ci/bench/linux/system.cfg";
/// Its Linux domain's name, whose teardown counters are reported.
const LINUX_DOMAIN: &str = "linux";
/// The kernel command line of the direct boot: the same guest options, on the UART.
const DIRECT_CMDLINE: &str = "console=ttyS0 guest.poweroff=1";
/// The Linux boot through the microvisor should take at most this many times the direct one.
const RATIO_GOAL: f64 = 1.2;
/// What the direct boot's machine lacks, for the report.
const DIRECT_DIFFERS: &str = "the direct boot has no microvisor, no service domains, no \
    intel-iommu or isa-debug-exit device, its console is ttyS0 (the UART) instead of hvc0 \
    through the console domain and earlyprintk=xen, and the guest has all of the machine's \
    memory instead of its domain's 256 MiB";

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Boots per system; the median is reported
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Use the images already built instead of running `cargo build` first
    #[arg(long)]
    pub no_build: bool,
    /// Give up on a boot after this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// Measure only this part (repeatable) [default: all of them]
    #[arg(long, value_name = "PART")]
    pub only: Vec<Part>,
}

/// The parts of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// Boot times of manifests/demo and manifests/empty
    Boot,
    /// The hypercall round trip measured by the hcbench domain
    Hcbench,
    /// Linux to its first userspace line, direct and through the microvisor
    Linux,
    /// The Linux guest's disk through blkback against QEMU's own virtio-blk
    Disk,
    /// The Linux guest's network through netback against QEMU's own virtio-net
    Net,
    /// `xl create` of a small domain and of Linux against boot-time builds; domains alive
    Create,
    /// blkback crashed 100 times under Linux's writes: crash to first response, the guest's
    /// stall, against a reboot of the guest
    Restart,
}

impl BenchArgs {
    fn measures(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// One system whose boot is timed.
struct Subject {
    label: &'static str,
    /// Relative to the workspace root.
    system_file: &'static str,
}

const SUBJECTS: &[Subject] = &[
    // The demo system of our own domains: it powers off by itself, unlike the default system,
    // whose Linux guest waits at its shell.
    Subject {
        label: "demo",
        system_file: "manifests/demo/system.cfg",
    },
    Subject {
        label: "empty",
        system_file: "manifests/empty/system.cfg",
    },
];
const HCBENCH_SYSTEM: &str = "ci/bench/hcbench/system.cfg";

/// The medians of one subject's boots.
struct BootTimes {
    all_running: Option<Duration>,
    ready: Duration,
    exit: Duration,
}

/// What `bench.json` holds: the parts that were measured.
#[derive(Serialize, Default)]
struct Report {
    /// Boots per system.
    runs: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    boot: Option<Vec<BootRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hcbench: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    linux: Option<LinuxReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<disk::DiskReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    net: Option<net::NetReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    create: Option<create::CreateReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart: Option<restart::RestartReport>,
}

#[derive(Serialize)]
struct BootRow {
    system: &'static str,
    /// Median seconds from QEMU's spawn; `None` for a system without domains.
    all_domains_running_s: Option<f64>,
    ready_s: f64,
    exit_s: f64,
}

#[derive(Serialize)]
struct LinuxReport {
    /// The line timed, a regex.
    marker: &'static str,
    kernel: String,
    direct: LinuxBoots,
    microvisor: LinuxBoots,
    /// microvisor.userspace_median_s / direct.userspace_median_s.
    ratio: f64,
    ratio_goal: f64,
    direct_differs: &'static str,
    /// Which microvisor boot (1-based) the counters are from: the one whose time is the median.
    counters_from_boot: usize,
    /// The guest domain's whole life: boot to the marker, then its power-off.
    counters: DomainCounters,
}

/// One kind of Linux boot, in seconds from QEMU's spawn, boot by boot in the order they ran.
#[derive(Serialize)]
struct LinuxBoots {
    /// To the marker (`guest: userspace up`).
    userspace_s: Vec<f64>,
    userspace_median_s: f64,
    /// To the kernel's first line (`Linux version ...`).
    kernel_line_s: Vec<f64>,
    kernel_line_median_s: f64,
}

impl LinuxBoots {
    fn new(userspace: &[Duration], kernel_line: &[Duration]) -> Self {
        let seconds = |times: &[Duration]| times.iter().map(Duration::as_secs_f64).collect();
        LinuxBoots {
            userspace_s: seconds(userspace),
            userspace_median_s: median(userspace).as_secs_f64(),
            kernel_line_s: seconds(kernel_line),
            kernel_line_median_s: median(kernel_line).as_secs_f64(),
        }
    }
}

/// A domain's counters, as the microvisor logs them when it tears the domain down.
#[derive(Serialize, Debug, Default, PartialEq, Eq)]
struct DomainCounters {
    /// In the order logged.
    vm_exits_by_kind: Vec<ExitCount>,
    vm_exits: u64,
    unclaimed_ports: u64,
    hypercalls_by_number: Vec<HypercallCount>,
    hypercalls: u64,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
struct ExitCount {
    kind: String,
    count: u64,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
struct HypercallCount {
    number: u64,
    /// The microvisor's last counter holds every number at or above its own (`48+`).
    and_above: bool,
    name: &'static str,
    count: u64,
}

pub fn bench(workspace: &Workspace, args: BenchArgs) -> Result<ExitCode> {
    let timeout = Duration::from_secs(args.timeout);
    if !args.no_build {
        images::build(workspace)?;
    }
    let qemu = qemu::ensure_installed()?;
    let mut report = Report {
        runs: args.runs,
        ..Report::default()
    };

    if args.measures(Part::Boot) {
        report.boot = Some(bench_boots(workspace, &qemu, &args, timeout)?);
    }
    if args.measures(Part::Hcbench) {
        let packed = pack(workspace, HCBENCH_SYSTEM)?;
        let capture = boot(workspace, &qemu, &packed, BENCH_MEMORY_MIB, timeout)?;
        let Some(line) = capture.first_match(&Regex::new(HCBENCH)?) else {
            bail!(failure(
                "hcbench",
                "the domain printed no `hcbench:` line",
                &capture
            ));
        };
        report.hcbench = Some(line.text.clone());
    }
    if args.measures(Part::Linux) {
        report.linux = Some(bench_linux(workspace, &qemu, &args, timeout)?);
    }
    if args.measures(Part::Disk) {
        report.disk = Some(disk::bench_disk(workspace, &qemu, &args, timeout)?);
    }
    if args.measures(Part::Net) {
        report.net = Some(net::bench_net(workspace, &qemu, &args, timeout)?);
    }
    if args.measures(Part::Create) {
        report.create = Some(create::bench_create(workspace, &qemu, &args, timeout)?);
    }
    if args.measures(Part::Restart) {
        report.restart = Some(restart::bench_restart(workspace, &qemu, &args)?);
    }

    if let Some(rows) = &report.boot {
        println!();
        println!(
            "{:<10} {:>5} {:>20} {:>10} {:>10}",
            "system", "boots", "all domains running", "ready", "exit"
        );
        for row in rows {
            println!(
                "{:<10} {:>5} {:>20} {:>10} {:>10}",
                row.system,
                args.runs,
                row.all_domains_running_s
                    .map_or("-".to_string(), |s| format!("{s:.3} s")),
                format!("{:.3} s", row.ready_s),
                format!("{:.3} s", row.exit_s)
            );
        }
        println!("(median times from QEMU's spawn to the serial line reaching the host)");
    }
    if let Some(line) = &report.hcbench {
        println!();
        println!("{line}");
    }
    if let Some(linux) = &report.linux {
        print_linux(linux, args.runs);
    }
    if let Some(disk) = &report.disk {
        disk::print_disk(disk, args.runs);
    }
    if let Some(net) = &report.net {
        net::print_net(net, args.runs);
    }
    if let Some(create) = &report.create {
        create::print_create(create, args.runs);
    }
    if let Some(restart) = &report.restart {
        restart::print_restart(restart);
    }

    let path = workspace.xtask_dir().join("bench.json");
    std::fs::create_dir_all(workspace.xtask_dir())
        .with_context(|| format!("could not create {}", workspace.xtask_dir().display()))?;
    let json = serde_json::to_string_pretty(&report).context("could not serialize the figures")?;
    std::fs::write(&path, json + "\n")
        .with_context(|| format!("could not write {}", path.display()))?;
    println!();
    println!("figures written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn bench_boots(
    workspace: &Workspace,
    qemu: &Path,
    args: &BenchArgs,
    timeout: Duration,
) -> Result<Vec<BootRow>> {
    let all_running = Regex::new(ALL_RUNNING)?;
    let ready = Regex::new(READY)?;
    let mut rows = Vec::new();
    for subject in SUBJECTS {
        let packed = pack(workspace, subject.system_file)?;
        let mut samples = Vec::new();
        for run in 1..=args.runs {
            let capture = boot(workspace, qemu, &packed, BENCH_MEMORY_MIB, timeout)?;
            let sample = BootTimes {
                // `all <n> domains running` is awaited only where there are domains.
                all_running: if packed.domain_count > 0 {
                    Some(line_at(&capture, &all_running, subject.label)?)
                } else {
                    None
                },
                ready: line_at(&capture, &ready, subject.label)?,
                exit: capture.elapsed,
            };
            eprintln!(
                "bench: {} boot {run}/{}: {:.3} s to exit",
                subject.label,
                args.runs,
                sample.exit.as_secs_f64()
            );
            samples.push(sample);
        }
        let times = summarize(&samples);
        rows.push(BootRow {
            system: subject.label,
            all_domains_running_s: times.all_running.map(|time| time.as_secs_f64()),
            ready_s: times.ready.as_secs_f64(),
            exit_s: times.exit.as_secs_f64(),
        });
    }
    Ok(rows)
}

/// Boots Linux directly and through the microvisor, alternately, `args.runs` times each.
fn bench_linux(
    workspace: &Workspace,
    qemu: &Path,
    args: &BenchArgs,
    timeout: Duration,
) -> Result<LinuxReport> {
    let images = linux::ensure(workspace)?;
    let packed = pack(workspace, LINUX_SYSTEM)?;
    let direct = DirectLinux {
        qemu: qemu.to_path_buf(),
        kernel: images.vmlinux.clone(),
        initrd: images.initramfs.clone(),
        cmdline: DIRECT_CMDLINE.to_string(),
        cpus: BENCH_CPUS,
        memory_mib: LINUX_MEMORY_MIB,
        multi_threaded_tcg: false,
        extra_args: Vec::new(),
    };
    let marker = Regex::new(USERSPACE_UP)?;
    let kernel_line = Regex::new(KERNEL_FIRST_LINE)?;
    let (mut direct_times, mut direct_kernel) = (Vec::new(), Vec::new());
    let (mut microvisor_times, mut microvisor_kernel) = (Vec::new(), Vec::new());
    let mut microvisor_counters = Vec::new();
    for run in 1..=args.runs {
        let capture = boot_direct(workspace, &direct, timeout)?;
        let at = line_at(&capture, &marker, "linux (direct)")?;
        direct_kernel.push(line_at(&capture, &kernel_line, "linux (direct)")?);
        eprintln!(
            "bench: linux direct boot {run}/{}: {:.3} s to `{USERSPACE_UP}`",
            args.runs,
            at.as_secs_f64()
        );
        direct_times.push(at);

        let capture = boot(workspace, qemu, &packed, LINUX_MEMORY_MIB, timeout)?;
        let at = line_at(&capture, &marker, "linux (microvisor)")?;
        microvisor_kernel.push(line_at(&capture, &kernel_line, "linux (microvisor)")?);
        let lines: Vec<&str> = capture
            .lines
            .iter()
            .map(|line| line.text.as_str())
            .collect();
        let Some(counters) = domain_counters(&lines, LINUX_DOMAIN) else {
            bail!(failure(
                "linux (microvisor)",
                &format!("the microvisor logged no exit and hypercall counts for domain `{LINUX_DOMAIN}`"),
                &capture
            ));
        };
        eprintln!(
            "bench: linux microvisor boot {run}/{}: {:.3} s to `{USERSPACE_UP}`",
            args.runs,
            at.as_secs_f64()
        );
        microvisor_times.push(at);
        microvisor_counters.push(counters);
    }
    let direct_median = median(&direct_times);
    let microvisor_median = median(&microvisor_times);
    let median_boot = median_index(&microvisor_times);
    Ok(LinuxReport {
        marker: USERSPACE_UP,
        kernel: images.version,
        direct: LinuxBoots::new(&direct_times, &direct_kernel),
        microvisor: LinuxBoots::new(&microvisor_times, &microvisor_kernel),
        ratio: microvisor_median.as_secs_f64() / direct_median.as_secs_f64(),
        ratio_goal: RATIO_GOAL,
        direct_differs: DIRECT_DIFFERS,
        counters_from_boot: median_boot + 1,
        counters: microvisor_counters.swap_remove(median_boot),
    })
}

fn print_linux(linux: &LinuxReport, runs: u32) {
    let list = |times: &[f64]| {
        times
            .iter()
            .map(|time| format!("{time:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!();
    println!(
        "Linux {} to `{USERSPACE_UP}`, {runs} boot(s) of each, interleaved (median from QEMU's spawn):",
        linux.kernel
    );
    println!(
        "  {:<26} {:>12} {:>16}   boots (to userspace)",
        "", "to userspace", "to kernel line"
    );
    for (label, boots) in [
        ("direct (QEMU's PVH loader)", &linux.direct),
        ("through the microvisor", &linux.microvisor),
    ] {
        println!(
            "  {:<26} {:>10.3} s {:>14.3} s   {} s",
            label,
            boots.userspace_median_s,
            boots.kernel_line_median_s,
            list(&boots.userspace_s)
        );
    }
    println!(
        "  {:<26} {:>10.2}     (goal <= {RATIO_GOAL}{})",
        "ratio microvisor / direct",
        linux.ratio,
        if linux.ratio <= RATIO_GOAL {
            ", met"
        } else {
            ", not met"
        }
    );
    println!("  ({DIRECT_DIFFERS})");
    let counters = &linux.counters;
    println!(
        "Domain `{LINUX_DOMAIN}` over its whole life (boot to the first userspace line, then the \
         immediate power-off), from microvisor boot {} of {runs}:",
        linux.counters_from_boot
    );
    println!(
        "  vm exits by kind ({} in all): {}; unclaimed ports {}",
        counters.vm_exits,
        counters
            .vm_exits_by_kind
            .iter()
            .map(|exit| format!("{} {}", exit.kind, exit.count))
            .collect::<Vec<_>>()
            .join(", "),
        counters.unclaimed_ports
    );
    println!("  hypercalls by number ({} in all):", counters.hypercalls);
    for call in &counters.hypercalls_by_number {
        println!(
            "    {:>3}{:<1} {:<20} {:>8}",
            call.number,
            if call.and_above { "+" } else { "" },
            call.name,
            call.count
        );
    }
}

fn pack(workspace: &Workspace, relative: &str) -> Result<PackedSystem> {
    let system_file = workspace.root.join(relative);
    let name = format!("bench-{}", system::system_name(&system_file));
    system::pack(workspace, &system_file, &name)
        .with_context(|| format!("packing {relative} for the benchmark"))
}

/// When the first line matching `pattern` arrived; its absence is an error.
fn line_at(capture: &Capture, pattern: &Regex, label: &str) -> Result<Duration> {
    match capture.first_match(pattern) {
        Some(line) => Ok(line.at),
        None => bail!(failure(
            label,
            &format!("never printed a line matching `{pattern}`"),
            capture
        )),
    }
}

/// Boots once through the microvisor; anything but a clean power-off is an error.
fn boot(
    workspace: &Workspace,
    qemu: &Path,
    packed: &PackedSystem,
    memory_mib: u32,
    timeout: Duration,
) -> Result<Capture> {
    boot_machine(
        workspace,
        qemu,
        packed,
        commands::MachineOptions::standard(BENCH_CPUS, memory_mib),
        timeout,
    )
}

/// As [`boot`], on a machine with `options`.
fn boot_machine(
    workspace: &Workspace,
    qemu: &Path,
    packed: &PackedSystem,
    options: commands::MachineOptions,
    timeout: Duration,
) -> Result<Capture> {
    let watch = Watch {
        timeout: Some(timeout),
        ..Watch::default()
    };
    boot_machine_watched(workspace, qemu, packed, options, &watch)
}

/// As [`boot_machine`], watched by `watch` (which should have a timeout).
fn boot_machine_watched(
    workspace: &Workspace,
    qemu: &Path,
    packed: &PackedSystem,
    options: commands::MachineOptions,
    watch: &Watch,
) -> Result<Capture> {
    let timeout = watch.timeout.unwrap_or_default();
    let capture = commands::boot(workspace, qemu, packed, options, watch)?;
    keep_log(workspace, &packed.name, &capture)?;
    match capture.ending {
        Ending::Exited(Exit::Code(STATUS_POWEROFF)) => Ok(capture),
        Ending::Exited(exit) => bail!(failure(&packed.name, &exit.describe(), &capture)),
        Ending::TimedOut => bail!(failure(
            &packed.name,
            &format!("timed out after {} s", timeout.as_secs()),
            &capture
        )),
        Ending::Stopped => bail!(failure(&packed.name, "was stopped", &capture)),
    }
}

/// Boots Linux by QEMU's PVH loader once; the guest's ACPI power-off ends QEMU with status
/// 0, and anything else is an error.
fn boot_direct(workspace: &Workspace, direct: &DirectLinux, timeout: Duration) -> Result<Capture> {
    boot_direct_as(workspace, direct, timeout, "bench-linux-direct")
}

/// As [`boot_direct`], its log kept as `<log>.log`.
fn boot_direct_as(
    workspace: &Workspace,
    direct: &DirectLinux,
    timeout: Duration,
    log: &str,
) -> Result<Capture> {
    let watch = Watch {
        timeout: Some(timeout),
        ..Watch::default()
    };
    boot_direct_watched(workspace, direct, &watch, log)
}

/// As [`boot_direct_as`], watched by `watch` (which should have a timeout).
fn boot_direct_watched(
    workspace: &Workspace,
    direct: &DirectLinux,
    watch: &Watch,
    log: &str,
) -> Result<Capture> {
    let timeout = watch.timeout.unwrap_or_default();
    let capture = serial::run(direct.command(), watch)?;
    keep_log(workspace, log, &capture)?;
    match capture.ending {
        Ending::Exited(Exit::Code(0)) => Ok(capture),
        Ending::Exited(exit) => bail!(failure(
            "linux (direct)",
            &format!("QEMU exited with {exit:?} instead of status 0 after the guest's power-off"),
            &capture
        )),
        Ending::TimedOut => bail!(failure(
            "linux (direct)",
            &format!("timed out after {} s", timeout.as_secs()),
            &capture
        )),
        Ending::Stopped => bail!(failure("linux (direct)", "was stopped", &capture)),
    }
}

/// The last boot's serial log, as `<target>/xtask/logs/<name>.log`.
fn keep_log(workspace: &Workspace, name: &str, capture: &Capture) -> Result<PathBuf> {
    let log = workspace.scenario_log(name);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    std::fs::write(&log, capture.text())
        .with_context(|| format!("could not write {}", log.display()))?;
    Ok(log)
}

fn failure(label: &str, why: &str, capture: &Capture) -> String {
    let mut message = format!("benchmark boot of `{label}` failed: {why}; the last lines were:");
    for line in commands::tail(capture, 20) {
        message.push_str("\n    ");
        message.push_str(line);
    }
    message
}

/// The counters the microvisor logged at the teardown of the domain called `name` (its first
/// teardown), from its two lines:
/// `domain 3 (linux) vm exits by kind: intr 640, hlt 1068, ioio 100134 unclaimed ports 100134`
/// `domain 3 (linux) hypercalls by number: 12:2, 18:88, 48+:3`
fn domain_counters(lines: &[&str], name: &str) -> Option<DomainCounters> {
    let name = regex::escape(name);
    let exits = Regex::new(&format!(
        r"\[microvisor\] domain \d+ \({name}\) vm exits by kind:(.*) unclaimed ports (\d+)\s*$"
    ))
    .ok()?;
    let calls = Regex::new(&format!(
        r"\[microvisor\] domain \d+ \({name}\) hypercalls by number:(.*)$"
    ))
    .ok()?;
    let (index, found) = lines
        .iter()
        .enumerate()
        .find_map(|(index, line)| exits.captures(line).map(|found| (index, found)))?;
    let mut counters = DomainCounters {
        unclaimed_ports: found[2].parse().ok()?,
        ..DomainCounters::default()
    };
    for item in found[1]
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (kind, count) = item.split_once(' ')?;
        counters.vm_exits_by_kind.push(ExitCount {
            kind: kind.to_string(),
            count: count.trim().parse().ok()?,
        });
    }
    counters.vm_exits = counters
        .vm_exits_by_kind
        .iter()
        .map(|exit| exit.count)
        .sum();
    let found = lines[index..]
        .iter()
        .find_map(|line| calls.captures(line))?;
    for item in found[1]
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (number, count) = item.split_once(':')?;
        let (number, and_above) = match number.strip_suffix('+') {
            Some(number) => (number, true),
            None => (number, false),
        };
        let number: u64 = number.parse().ok()?;
        counters.hypercalls_by_number.push(HypercallCount {
            number,
            and_above,
            name: if and_above {
                "(this number and above)"
            } else {
                hypercall_name(number)
            },
            count: count.parse().ok()?,
        });
    }
    counters.hypercalls = counters
        .hypercalls_by_number
        .iter()
        .map(|call| call.count)
        .sum();
    Some(counters)
}

/// Xen's name of a hypercall number: those of `microvisor/abi/src/hypercall.rs` (checked by a
/// test), and the few others a Linux guest is known to try.
fn hypercall_name(number: u64) -> &'static str {
    match number {
        12 => "memory_op",
        13 => "multicall",
        15 => "set_timer_op",
        17 => "xen_version",
        18 => "console_io",
        20 => "grant_table_op",
        21 => "vm_assist",
        24 => "vcpu_op",
        29 => "sched_op",
        32 => "event_channel_op",
        33 => "physdev_op",
        34 => "hvm_op",
        64 => "microvisor_op",
        _ => "(unnamed)",
    }
}

fn summarize(samples: &[BootTimes]) -> BootTimes {
    let all_running: Vec<Duration> = samples
        .iter()
        .filter_map(|sample| sample.all_running)
        .collect();
    BootTimes {
        all_running: (!all_running.is_empty()).then(|| median(&all_running)),
        ready: median(
            &samples
                .iter()
                .map(|sample| sample.ready)
                .collect::<Vec<_>>(),
        ),
        exit: median(&samples.iter().map(|sample| sample.exit).collect::<Vec<_>>()),
    }
}

/// The median of numbers (the lower middle one for an even count); 0 when there are none.
fn median_f64(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0)
}

/// The median (the lower middle one for an even count).
fn median(values: &[Duration]) -> Duration {
    values
        .get(median_index(values))
        .copied()
        .unwrap_or_default()
}

/// The index in `values` of their median (the lower middle one for an even count); 0 when
/// there are none.
fn median_index(values: &[Duration]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by_key(|&index| values[index]);
    order
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values
            .iter()
            .map(|&value| Duration::from_millis(value))
            .collect()
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&ms(&[30, 10, 20])), Duration::from_millis(20));
        assert_eq!(median(&ms(&[40, 10, 30, 20])), Duration::from_millis(20));
        assert_eq!(median(&ms(&[7])), Duration::from_millis(7));
        assert_eq!(median(&[]), Duration::ZERO);
        assert_eq!(median_index(&ms(&[30, 10, 20])), 2);
        assert_eq!(median_index(&ms(&[40, 10, 30, 20])), 3);
        assert_eq!(median_index(&[]), 0);
    }

    #[test]
    fn marker_lines_match() {
        assert!(Regex::new(ALL_RUNNING)
            .unwrap()
            .is_match("[microvisor] all 3 domains running"));
        assert!(Regex::new(READY).unwrap().is_match("[microvisor] ready"));
        assert!(Regex::new(READY)
            .unwrap()
            .is_match("[microvisor] ready: 3 domains in the manifest"));
        assert!(!Regex::new(READY).unwrap().is_match("[microvisor] readying"));
        assert!(Regex::new(HCBENCH)
            .unwrap()
            .is_match("[hcbench] hcbench: 100000 calls, 15.1 us/call"));
        let kernel = Regex::new(KERNEL_FIRST_LINE).unwrap();
        assert!(kernel
            .is_match("[linux] [    0.000000] Linux version 6.1.0-57-cloud-amd64 (debian-kernel@"));
        assert!(
            kernel.is_match("[    0.000000] Linux version 6.1.0-57-cloud-amd64 (debian-kernel@")
        );
        assert!(!kernel.is_match("guest: userspace up: 6.1.0-57-cloud-amd64"));
        let up = Regex::new(USERSPACE_UP).unwrap();
        for line in [
            "[linux] guest: userspace up: 6.1.0-57-cloud-amd64, 2 cpus online, hypervisor xen",
            "guest: userspace up: 6.1.0-57-cloud-amd64, 2 cpus online, hypervisor none",
        ] {
            assert!(up.is_match(line), "{line}");
        }
    }

    #[test]
    fn the_bench_systems_are_in_the_repository() {
        let root = crate::workspace::workspace_root();
        assert!(root.join(HCBENCH_SYSTEM).is_file());
        assert!(root.join(LINUX_SYSTEM).is_file());
    }

    /// The Linux bench system is valid up to its images, names the Linux guest's images, and
    /// its guest powers off by itself after its first userspace line and is then destroyed.
    #[test]
    fn the_linux_bench_system_powers_off_by_itself() {
        let system = crate::workspace::workspace_root().join(LINUX_SYSTEM);
        crate::system::tests::assert_valid_up_to_images(&system);
        assert!(system::needs_linux_images(
            &manifests::referenced_images(&system).unwrap()
        ));
        let guest = std::fs::read_to_string(system.with_file_name("linux.cfg")).unwrap();
        let value = |key: &str| {
            guest.lines().find_map(|line| {
                let (name, value) = line.split_once('=')?;
                (name.trim() == key).then(|| value.trim().trim_matches('"').to_string())
            })
        };
        assert_eq!(value("name").as_deref(), Some(LINUX_DOMAIN));
        assert!(value("extra")
            .unwrap()
            .split(' ')
            .any(|option| option == "guest.poweroff=1"));
        assert_eq!(value("on_poweroff").as_deref(), Some("destroy"));
        assert!(DIRECT_CMDLINE
            .split(' ')
            .any(|option| option == "guest.poweroff=1"));
    }

    #[test]
    fn domain_counters_are_read_from_the_teardown_lines() {
        let lines = [
            "[linux] guest: powering off",
            "[microvisor] domain 3 (linux) vm exits by kind: intr 640, vmmcall 2430, hlt 1068, cpuid 960, msr 197, ioio 100134 unclaimed ports 100134",
            "[microvisor] domain 2 (console) hypercalls by number: 12:1, 48+:3",
            "[microvisor] domain 3 (linux) hypercalls by number: 12:2, 17:3, 18:88, 20:5, 21:1, 24:828, 32:1497, 34:6, 48+:2",
        ];
        let counters = domain_counters(&lines, "linux").unwrap();
        let exit = |kind: &str, count| ExitCount {
            kind: kind.to_string(),
            count,
        };
        assert_eq!(counters.vm_exits_by_kind[0], exit("intr", 640));
        assert_eq!(counters.vm_exits_by_kind[5], exit("ioio", 100134));
        assert_eq!(counters.vm_exits, 640 + 2430 + 1068 + 960 + 197 + 100134);
        assert_eq!(counters.unclaimed_ports, 100134);
        let calls: Vec<(u64, bool, &str, u64)> = counters
            .hypercalls_by_number
            .iter()
            .map(|call| (call.number, call.and_above, call.name, call.count))
            .collect();
        assert_eq!(calls[0], (12, false, "memory_op", 2));
        assert_eq!(calls[4], (21, false, "vm_assist", 1));
        assert_eq!(calls[6], (32, false, "event_channel_op", 1497));
        assert_eq!(calls[8], (48, true, "(this number and above)", 2));
        assert_eq!(counters.hypercalls, 2 + 3 + 88 + 5 + 1 + 828 + 1497 + 6 + 2);
        assert!(
            domain_counters(&lines, "console").is_none(),
            "no exit line for console"
        );
        assert!(domain_counters(&lines, "lin").is_none());
        let no_calls = [
            "[microvisor] domain 1 (x) vm exits by kind: hlt 2 unclaimed ports 0",
            "[microvisor] domain 1 (x) hypercalls by number:",
        ];
        let counters = domain_counters(&no_calls, "x").unwrap();
        assert_eq!((counters.vm_exits, counters.hypercalls), (2, 0));
    }

    /// The names agree with the hypercall numbers the microvisor's ABI crate defines.
    #[test]
    fn hypercall_names_agree_with_the_abi() {
        let path = crate::workspace::workspace_root().join("microvisor/abi/src/hypercall.rs");
        let text = std::fs::read_to_string(&path).unwrap();
        let constant = Regex::new(r"^pub const ([A-Z_]+): u64 = (\d+);").unwrap();
        let mut checked = 0;
        for line in text.lines() {
            let Some(found) = constant.captures(line) else {
                continue;
            };
            let (name, number) = (found[1].to_lowercase(), found[2].parse::<u64>().unwrap());
            // Sub-op constants (CONSOLEIO_WRITE ...) sit in the same file.
            if name.starts_with("consoleio_") {
                continue;
            }
            assert_eq!(hypercall_name(number), name, "hypercall {number}");
            checked += 1;
        }
        assert!(
            checked >= 9,
            "only {checked} hypercall numbers found in {}",
            path.display()
        );
    }

    #[test]
    fn parts_are_chosen_with_only() {
        let args = |only: Vec<Part>| BenchArgs {
            runs: 1,
            no_build: true,
            timeout: 1,
            only,
        };
        assert!(args(vec![]).measures(Part::Linux));
        assert!(args(vec![Part::Linux]).measures(Part::Linux));
        assert!(!args(vec![Part::Linux]).measures(Part::Boot));
    }
}
