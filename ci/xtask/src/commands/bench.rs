//! `cargo xtask bench`: boot times and the hypercall round trip, measured from the host.
//!
//! Times are taken when a serial line reaches the host, relative to QEMU's spawn; each system
//! boots several times and the median is reported. Then the `hcbench` domain measures
//! hypercalls from inside and prints one `hcbench:` line, shown as it is.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use regex::Regex;

use crate::qemu::{self, Exit, STATUS_POWEROFF};
use crate::serial::{Capture, Ending, Watch};
use crate::system::{self, PackedSystem};
use crate::workspace::Workspace;
use crate::{commands, images};

const BENCH_CPUS: u32 = 2;
const BENCH_MEMORY_MIB: u32 = 512;

const ALL_RUNNING: &str = r"\[microvisor\] all \d+ domains running";
const READY: &str = r"\[microvisor\] ready\b";
const HCBENCH: &str = r"hcbench:";

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

pub fn bench(workspace: &Workspace, args: BenchArgs) -> Result<ExitCode> {
    let timeout = Duration::from_secs(args.timeout);
    if !args.no_build {
        images::build(workspace)?;
    }
    let qemu = qemu::ensure_installed()?;
    let all_running = Regex::new(ALL_RUNNING)?;
    let ready = Regex::new(READY)?;

    let mut rows = Vec::new();
    for subject in SUBJECTS {
        let packed = pack(workspace, subject.system_file)?;
        let mut samples = Vec::new();
        for run in 1..=args.runs {
            let capture = boot(workspace, &qemu, &packed, timeout)?;
            let at = |pattern: &Regex| -> Result<Duration> {
                match capture.first_match(pattern) {
                    Some(line) => Ok(line.at),
                    None => bail!(failure(
                        subject.label,
                        &format!("never printed a line matching `{pattern}`"),
                        &capture
                    )),
                }
            };
            let sample = BootTimes {
                // `all <n> domains running` is awaited only where there are domains.
                all_running: if packed.domain_count > 0 {
                    Some(at(&all_running)?)
                } else {
                    None
                },
                ready: at(&ready)?,
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
        rows.push((subject.label, summarize(&samples)));
    }

    let packed = pack(workspace, HCBENCH_SYSTEM)?;
    let capture = boot(workspace, &qemu, &packed, timeout)?;
    let hcbench = Regex::new(HCBENCH)?;
    let Some(hcbench_line) = capture.first_match(&hcbench) else {
        bail!(failure(
            "hcbench",
            "the domain printed no `hcbench:` line",
            &capture
        ));
    };

    println!();
    println!(
        "{:<10} {:>5} {:>20} {:>10} {:>10}",
        "system", "boots", "all domains running", "ready", "exit"
    );
    for (label, times) in &rows {
        println!(
            "{:<10} {:>5} {:>20} {:>10} {:>10}",
            label,
            args.runs,
            times.all_running.map_or("-".to_string(), seconds),
            seconds(times.ready),
            seconds(times.exit)
        );
    }
    println!("(median times from QEMU's spawn to the serial line reaching the host)");
    println!();
    println!("{}", hcbench_line.text);
    Ok(ExitCode::SUCCESS)
}

fn pack(workspace: &Workspace, relative: &str) -> Result<PackedSystem> {
    let system_file = workspace.root.join(relative);
    let name = format!("bench-{}", system::system_name(&system_file));
    system::pack(workspace, &system_file, &name)
        .with_context(|| format!("packing {relative} for the benchmark"))
}

/// Boots once; anything but a clean power-off is an error.
fn boot(
    workspace: &Workspace,
    qemu: &Path,
    packed: &PackedSystem,
    timeout: Duration,
) -> Result<Capture> {
    let watch = Watch {
        timeout: Some(timeout),
        ..Watch::default()
    };
    let capture = commands::boot(
        workspace,
        qemu,
        packed,
        commands::MachineOptions::standard(BENCH_CPUS, BENCH_MEMORY_MIB),
        &watch,
    )?;
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

fn failure(label: &str, why: &str, capture: &Capture) -> String {
    let mut message = format!("benchmark boot of `{label}` failed: {why}; the last lines were:");
    for line in commands::tail(capture, 20) {
        message.push_str("\n    ");
        message.push_str(line);
    }
    message
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

/// The median (the lower middle one for an even count).
fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

fn seconds(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
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
    }

    #[test]
    fn the_bench_systems_are_in_the_repository() {
        let root = crate::workspace::workspace_root();
        assert!(root.join(HCBENCH_SYSTEM).is_file());
    }
}
