//! `cargo xtask soak`: runs QEMU scenarios over and over, to measure how often they fail and
//! how often the machine resets with no microvisor epitaph (see
//! [`test::unexplained_reset`]), which one run cannot tell.
//!
//! Each named scenario runs `--runs` times, one run after the other, with the code that
//! `cargo xtask test` runs a scenario with. Every run is one of: passed, failed, or reset (an
//! unexplained machine reset, counted apart from the other failures). The log of every
//! failed or reset run is kept, numbered, under `<target>/xtask/logs/soak/` (`.../soak/mttcg/`
//! with `--mttcg`); a soak first deletes what an earlier soak of the same kind left there for
//! the same scenarios. The exit status is 1 if
//! any run failed or reset. Not part of `cargo xtask test`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::commands::test::{self, ScenarioRun};
use crate::scenario;
use crate::workspace::Workspace;
use crate::{images, qemu};

/// The scenarios soaked when none is named.
pub const DEFAULT_SCENARIOS: &[&str] = &["ipc-ring", "ipc-hostile"];

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// Runs of each scenario
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Soak this scenario (repeatable) [default: ipc-ring and ipc-hostile]
    #[arg(long, value_name = "NAME")]
    pub scenario: Vec<String>,
    /// Run the emulated CPUs on one host thread each (QEMU's -accel tcg,thread=multi)
    /// instead of all on one
    #[arg(long)]
    pub mttcg: bool,
    /// Print each run's serial output as it arrives
    #[arg(long, short)]
    pub verbose: bool,
    /// Use the images already built instead of running `cargo build` first
    #[arg(long)]
    pub no_build: bool,
}

/// How one run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunEnd {
    Passed,
    Failed,
    Reset,
}

/// One scenario's counts.
#[derive(Debug, Default)]
struct Tally {
    passed: u32,
    failed: u32,
    resets: u32,
    /// How long each run took (QEMU's spawn to its end).
    times: Vec<Duration>,
}

impl Tally {
    fn add(&mut self, result: RunEnd, time: Duration) {
        match result {
            RunEnd::Passed => self.passed += 1,
            RunEnd::Failed => self.failed += 1,
            RunEnd::Reset => self.resets += 1,
        }
        self.times.push(time);
    }
}

pub fn soak(workspace: &Workspace, args: SoakArgs) -> Result<ExitCode> {
    let names: Vec<String> = if args.scenario.is_empty() {
        DEFAULT_SCENARIOS
            .iter()
            .map(|name| name.to_string())
            .collect()
    } else {
        args.scenario.clone()
    };
    let scenarios = test::select(scenario::load_all(&workspace.scenarios_dir())?, &names)?;
    if !args.no_build {
        images::build(workspace)?;
    }
    let qemu = qemu::ensure_installed()?;
    let dir = soak_log_dir(workspace, args.mttcg);
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    for scenario in &scenarios {
        remove_old_logs(&dir, &scenario.name)?;
    }
    let threading = threading(args.mttcg);
    println!(
        "soak: {} run(s) of each of {} ({threading}); logs of failed runs go to {}",
        args.runs,
        scenarios
            .iter()
            .map(|scenario| scenario.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        dir.display()
    );

    let start = Instant::now();
    let mut tallies = Vec::new();
    for scenario in &scenarios {
        let mut tally = Tally::default();
        let current = dir.join(format!("{}.current.log", scenario.name));
        for number in 1..=args.runs {
            print!("soak {} {number}/{} ... ", scenario.name, args.runs);
            if args.verbose {
                println!();
            }
            std::io::stdout().flush().ok();
            let run = ScenarioRun {
                verbose: args.verbose,
                multi_threaded_tcg: args.mttcg,
                // Apart from `cargo xtask test`'s, which may be running at the same time.
                scratch: format!("soak-{}", scenario.name),
                log: current.clone(),
            };
            let started = Instant::now();
            let (result, why, time) = match test::run_scenario(workspace, &qemu, scenario, &run) {
                Ok(outcome) if outcome.verdict.passed() => {
                    (RunEnd::Passed, String::new(), outcome.capture.elapsed)
                }
                // The verdict names the log by the path it had while running; the line
                // printed names where it is kept. A reset is told by where it came.
                Ok(outcome) if outcome.reset => (
                    RunEnd::Reset,
                    format!(
                        "QEMU exited with status 0 with no microvisor epitaph; last line: {}",
                        crate::commands::tail(&outcome.capture, 1)
                            .next()
                            .unwrap_or("(none)")
                    ),
                    outcome.capture.elapsed,
                ),
                Ok(outcome) => (
                    RunEnd::Failed,
                    outcome
                        .verdict
                        .failures
                        .first()
                        .cloned()
                        .unwrap_or_default(),
                    outcome.capture.elapsed,
                ),
                Err(error) => (RunEnd::Failed, format!("{error:#}"), started.elapsed()),
            };
            tally.add(result, time);
            let seconds = time.as_secs_f64();
            match result {
                RunEnd::Passed => {
                    let _ = std::fs::remove_file(&current);
                    println!("ok ({seconds:.1} s)");
                }
                RunEnd::Failed | RunEnd::Reset => {
                    let kept = dir.join(kept_log_name(&scenario.name, number, result));
                    let shown = match std::fs::rename(&current, &kept) {
                        Ok(()) => format!("log kept as {}", kept.display()),
                        Err(_) => "no log".to_string(),
                    };
                    let label = if result == RunEnd::Reset {
                        "RESET"
                    } else {
                        "FAILED"
                    };
                    println!("{label} ({seconds:.1} s; {shown}): {why}");
                }
            }
        }
        tallies.push((scenario.name.as_str(), tally));
    }
    let wall = start.elapsed();

    println!();
    println!(
        "soak summary: {} run(s) of each scenario, {threading}, {} in all",
        args.runs,
        clock(wall)
    );
    println!(
        "{:<20} {:>5} {:>7} {:>7} {:>7} {:>11} {:>11}",
        "scenario", "runs", "passed", "failed", "resets", "median run", "total"
    );
    for (name, tally) in &tallies {
        println!(
            "{:<20} {:>5} {:>7} {:>7} {:>7} {:>11} {:>11}",
            name,
            tally.times.len(),
            tally.passed,
            tally.failed,
            tally.resets,
            format!("{:.1} s", median(&tally.times).as_secs_f64()),
            clock(tally.times.iter().sum())
        );
    }
    let bad: u32 = tallies
        .iter()
        .map(|(_, tally)| tally.failed + tally.resets)
        .sum();
    if bad > 0 {
        println!(
            "{bad} run(s) failed or reset; their logs are in {}",
            dir.display()
        );
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `<target>/xtask/logs/soak`, and its `mttcg` subdirectory for `--mttcg` soaks (so that
/// neither kind of soak clears the other's logs).
fn soak_log_dir(workspace: &Workspace, mttcg: bool) -> PathBuf {
    let dir = workspace.xtask_dir().join("logs").join("soak");
    if mttcg {
        dir.join("mttcg")
    } else {
        dir
    }
}

fn threading(mttcg: bool) -> &'static str {
    if mttcg {
        "QEMU -accel tcg,thread=multi"
    } else {
        "QEMU -accel tcg,thread=single"
    }
}

/// `ipc-ring-0007.failed.log`, `ipc-ring-0012.reset.log`.
fn kept_log_name(scenario: &str, number: u32, result: RunEnd) -> String {
    let kind = if result == RunEnd::Reset {
        "reset"
    } else {
        "failed"
    };
    format!("{scenario}-{number:04}.{kind}.log")
}

/// Whether `file` is a log a soak of `scenario` keeps (see [`kept_log_name`]) or is writing.
fn is_soak_log(file: &str, scenario: &str) -> bool {
    if file == format!("{scenario}.current.log") {
        return true;
    }
    let Some(rest) = file
        .strip_prefix(scenario)
        .and_then(|rest| rest.strip_prefix('-'))
    else {
        return false;
    };
    let Some((number, kind)) = rest.split_once('.') else {
        return false;
    };
    number.len() >= 4
        && number.bytes().all(|byte| byte.is_ascii_digit())
        && (kind == "failed.log" || kind == "reset.log")
}

fn remove_old_logs(dir: &Path, scenario: &str) -> Result<()> {
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))?
    {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| is_soak_log(name, scenario))
        {
            std::fs::remove_file(&path)
                .with_context(|| format!("could not remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// `1h 02m 03s`, `12m 34s`, `45.6 s`.
fn clock(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 3600, seconds / 60 % 60, seconds % 60) {
        (0, 0, _) => format!("{:.1} s", duration.as_secs_f64()),
        (0, minutes, seconds) => format!("{minutes}m {seconds:02}s"),
        (hours, minutes, seconds) => format!("{hours}h {minutes:02}m {seconds:02}s"),
    }
}

/// The median (the lower middle one for an even count); zero for none.
fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scenarios_exist() {
        let dir = crate::workspace::workspace_root()
            .join("ci")
            .join("scenarios");
        let names: Vec<String> = DEFAULT_SCENARIOS
            .iter()
            .map(|name| name.to_string())
            .collect();
        let selected = test::select(scenario::load_all(&dir).unwrap(), &names).unwrap();
        assert_eq!(selected.len(), DEFAULT_SCENARIOS.len());
    }

    #[test]
    fn runs_are_counted_by_how_they_ended() {
        let mut tally = Tally::default();
        for result in [
            RunEnd::Passed,
            RunEnd::Reset,
            RunEnd::Passed,
            RunEnd::Failed,
        ] {
            tally.add(result, Duration::from_secs(2));
        }
        assert_eq!((tally.passed, tally.failed, tally.resets), (2, 1, 1));
        assert_eq!(tally.times.len(), 4);
    }

    #[test]
    fn kept_logs_are_numbered_and_only_they_are_cleared() {
        assert_eq!(
            kept_log_name("ipc-ring", 7, RunEnd::Failed),
            "ipc-ring-0007.failed.log"
        );
        assert_eq!(
            kept_log_name("ipc-ring", 12345, RunEnd::Reset),
            "ipc-ring-12345.reset.log"
        );
        for name in [
            "ipc-ring-0007.failed.log",
            "ipc-ring-12345.reset.log",
            "ipc-ring.current.log",
        ] {
            assert!(is_soak_log(name, "ipc-ring"), "{name}");
        }
        for name in [
            "ipc-ring-hostile-0001.failed.log",
            "ipc-ring-0007.log",
            "ipc-ring-07.failed.log",
            "ipc-ring.log",
            "other-0001.failed.log",
        ] {
            assert!(!is_soak_log(name, "ipc-ring"), "{name}");
        }

        let dir = crate::qemu::tests::scratch("soak-logs");
        for name in [
            "a-0001.failed.log",
            "a-0002.reset.log",
            "a.current.log",
            "b-0001.failed.log",
            "notes.txt",
        ] {
            std::fs::write(dir.join(name), "x").unwrap();
        }
        remove_old_logs(&dir, "a").unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["b-0001.failed.log", "notes.txt"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn wall_times_read_as_a_clock() {
        assert_eq!(clock(Duration::from_millis(45_600)), "45.6 s");
        assert_eq!(clock(Duration::from_secs(754)), "12m 34s");
        assert_eq!(clock(Duration::from_secs(3723)), "1h 02m 03s");
        assert_eq!(
            median(&[
                Duration::from_secs(3),
                Duration::from_secs(1),
                Duration::from_secs(2)
            ]),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn threading_is_named() {
        assert!(threading(true).ends_with("thread=multi"));
        assert!(threading(false).ends_with("thread=single"));
    }
}
