//! `cargo xtask bench --only restart`: how long a guest's disk stalls when blkback crashes
//! and comes back, against a full reboot of the guest in the same run.
//!
//! It runs the `blk-restart` scenario (blkback crashed 100 times at random moments while
//! Linux writes a verified stream to xvda, then a `reboot -f` of Linux) and reads its log:
//! - per crash, the microvisor's system time when the crash was asked for (`crashed on the
//!   control domain's request at T ns`) to blkback's first response of its new instance
//!   (`first response since the restart at T ns`), the same clock for both;
//! - the same interval in host time (the `xl$ crash` line to the first-response line), which
//!   includes the management channel;
//! - the guest's longest 1 MiB write (fsync included), which holds the longest stall;
//! - the guest's reboot: from the microvisor's `(linux) shut down: reboot` line to Linux's
//!   `guest: shell ready` (host time).
//!
//! The scenario must pass (all data verified) for the figures to count.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::Serialize;

use super::{median_f64, BenchArgs};
use crate::commands::test::{self, ScenarioRun};
use crate::scenario::Scenario;
use crate::serial::Capture;
use crate::workspace::Workspace;

const SCENARIO: &str = "ci/scenarios/blk-restart";

#[derive(Serialize)]
pub struct RestartReport {
    /// Crashes measured.
    pub crashes: usize,
    /// Crash asked → first response of the new instance, microvisor clock, milliseconds.
    pub crash_to_first_response_ms: Vec<f64>,
    pub crash_to_first_response_median_ms: f64,
    pub crash_to_first_response_max_ms: f64,
    /// The same from the host (`xl crash` sent → first response line), milliseconds.
    pub host_crash_to_first_response_median_ms: f64,
    pub host_crash_to_first_response_max_ms: f64,
    /// Of crash → first response: crash → new instance built (the microvisor's teardown and
    /// rebuild), median, milliseconds.
    pub crash_to_rebuilt_median_ms: f64,
    /// The guest's longest 1 MiB write (with its fsync) over the whole run: the longest
    /// stall it saw, milliseconds.
    pub guest_longest_write_ms: f64,
    /// The guest's full reboot in the same run (shut down → its shell), seconds.
    pub guest_reboot_s: f64,
}

/// Runs the scenario once and reads its figures.
pub fn bench_restart(
    workspace: &Workspace,
    qemu: &std::path::Path,
    _args: &BenchArgs,
) -> Result<RestartReport> {
    let scenario = Scenario::load(&workspace.root.join(SCENARIO))?;
    let log = workspace.xtask_dir().join("logs").join("bench-restart.log");
    std::fs::create_dir_all(workspace.xtask_dir().join("logs"))?;
    let run = ScenarioRun {
        verbose: false,
        multi_threaded_tcg: false,
        scratch: String::from("bench-restart"),
        log: log.clone(),
    };
    println!("bench: restart: running {SCENARIO} (about 5 minutes)");
    let outcome = test::run_scenario(workspace, qemu, &scenario, &run)?;
    if !outcome.verdict.passed() {
        test::report_failures(&outcome.verdict);
        bail!(
            "the blk-restart scenario failed; its log is {}",
            log.display()
        );
    }
    read(&outcome.capture).with_context(|| format!("reading {}", log.display()))
}

fn ns_of(line: &str, pattern: &Regex) -> Option<u64> {
    pattern.captures(line)?.get(1)?.as_str().parse().ok()
}

fn read(capture: &Capture) -> Result<RestartReport> {
    let crashed = Regex::new(r"\(blkback\) crashed on the control domain's request at (\d+) ns")?;
    let rebuilt = Regex::new(r"\(blkback\) restarted as domain \d+ \(restart \d+, at (\d+) ns\)")?;
    let answered = Regex::new(
        r"\[blkback\] vbd \S+ of \S+ \(\d+\): first response since the restart at (\d+) ns",
    )?;
    let sent = Regex::new(r"^xl\$ crash blkback")?;
    let longest =
        Regex::new(r"writer: stopped at pass \d+ chunk \d+, longest 1 MiB write (\d+) ms")?;
    let reboot = Regex::new(r"\[microvisor\] domain \d+ \(linux\) shut down: reboot")?;
    let ready = Regex::new(r"\[linux\] guest: shell ready")?;

    let (mut machine_ms, mut host_ms, mut rebuild_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut crash_at: Option<u64> = None;
    let mut rebuilt_at: Option<u64> = None;
    let mut sent_at: Option<Duration> = None;
    let mut longest_ms = None;
    let mut reboot_at = None;
    let mut reboot_s = None;
    for line in &capture.lines {
        let text = line.text.as_str();
        if sent.is_match(text) {
            sent_at = Some(line.at);
        } else if let Some(ns) = ns_of(text, &crashed) {
            crash_at = Some(ns);
            rebuilt_at = None;
        } else if let Some(ns) = ns_of(text, &rebuilt) {
            rebuilt_at = Some(ns);
        } else if let Some(ns) = ns_of(text, &answered) {
            if let Some(crash) = crash_at.take() {
                machine_ms.push(ns.saturating_sub(crash) as f64 / 1e6);
                if let Some(built) = rebuilt_at.take() {
                    rebuild_ms.push(built.saturating_sub(crash) as f64 / 1e6);
                }
            }
            if let Some(at) = sent_at.take() {
                host_ms.push(line.at.saturating_sub(at).as_secs_f64() * 1e3);
            }
        } else if let Some(ms) = ns_of(text, &longest) {
            longest_ms = Some(ms as f64);
        } else if reboot.is_match(text) {
            reboot_at = Some(line.at);
        } else if ready.is_match(text) {
            if let Some(at) = reboot_at.take() {
                reboot_s = Some(line.at.saturating_sub(at).as_secs_f64());
            }
        }
    }
    if machine_ms.is_empty() {
        bail!("no crash was followed by a first response");
    }
    let max = |values: &[f64]| values.iter().copied().fold(0.0, f64::max);
    Ok(RestartReport {
        crashes: machine_ms.len(),
        crash_to_first_response_median_ms: median_f64(&machine_ms),
        crash_to_first_response_max_ms: max(&machine_ms),
        host_crash_to_first_response_median_ms: median_f64(&host_ms),
        host_crash_to_first_response_max_ms: max(&host_ms),
        crash_to_rebuilt_median_ms: median_f64(&rebuild_ms),
        crash_to_first_response_ms: machine_ms,
        guest_longest_write_ms: longest_ms.context("the writer printed no `longest` line")?,
        guest_reboot_s: reboot_s.context("no reboot of linux to its shell in the log")?,
    })
}

pub fn print_restart(report: &RestartReport) {
    println!();
    println!(
        "blkback crashed and restarted {} times under Linux's write stream:",
        report.crashes
    );
    println!(
        "  crash to the new instance's first response: median {:.0} ms, max {:.0} ms (microvisor clock; rebuild alone {:.0} ms)",
        report.crash_to_first_response_median_ms,
        report.crash_to_first_response_max_ms,
        report.crash_to_rebuilt_median_ms
    );
    println!(
        "  from the host (xl crash to the first-response line): median {:.0} ms, max {:.0} ms",
        report.host_crash_to_first_response_median_ms, report.host_crash_to_first_response_max_ms
    );
    println!(
        "  guest's longest 1 MiB write (its longest stall): {:.0} ms; a full reboot of the guest: {:.1} s",
        report.guest_longest_write_ms, report.guest_reboot_s
    );
}
