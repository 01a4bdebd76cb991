//! `cargo xtask test`: the host unit tests (`cargo test` of the default members), then every QEMU scenario under `ci/scenarios/`,
//! one after the other, closing with `N passed, M failed`.
//!
//! A scenario runs once. A machine reset with no microvisor epitaph (see
//! [`unexplained_reset`]) fails it like any other failure, named as such, with its log also
//! kept as `<scenario>.reset.log`. [`run_scenario`] is shared with `cargo xtask soak`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::judge::{self, Verdict};
use crate::scenario::{self, ExitRule, Scenario};
use crate::serial::{Capture, Watch};
use crate::workspace::Workspace;
use crate::{commands, images, qemu, system};

/// How many log lines a failure report shows.
const TAIL_LINES: usize = 40;
/// The machine every scenario runs on.
const SCENARIO_CPUS: u32 = 2;
const SCENARIO_MEMORY_MIB: u32 = 512;

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Run only this scenario (repeatable); the name of its directory under ci/scenarios
    #[arg(long, value_name = "NAME")]
    pub scenario: Vec<String>,
    /// Skip the host unit tests (`cargo test`)
    #[arg(long)]
    pub no_host_tests: bool,
    /// Print each scenario's serial output as it arrives
    #[arg(long, short)]
    pub verbose: bool,
    /// Use the images already built instead of running `cargo build` first
    #[arg(long)]
    pub no_build: bool,
    /// List the scenarios with what each proves, and run nothing
    #[arg(long)]
    pub list: bool,
}

pub fn test(workspace: &Workspace, args: TestArgs) -> Result<ExitCode> {
    let scenarios = select(
        scenario::load_all(&workspace.scenarios_dir())?,
        &args.scenario,
    )?;
    if args.list {
        for scenario in &scenarios {
            println!("{:<16} {}", scenario.name, scenario.description);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.no_host_tests {
        run_host_tests(workspace)?;
    }
    if !args.no_build {
        images::build(workspace)?;
    }
    let qemu = qemu::ensure_installed()?;
    let (mut passed, mut failed) = (0, 0);
    let mut resets: Vec<&str> = Vec::new();
    for scenario in &scenarios {
        print!("scenario {} ... ", scenario.name);
        if args.verbose {
            println!();
        }
        std::io::stdout().flush().ok();
        let log = workspace.scenario_log(&scenario.name);
        let run = ScenarioRun {
            verbose: args.verbose,
            multi_threaded_tcg: false,
            scratch: scenario.name.clone(),
            log: log.clone(),
        };
        match run_scenario(workspace, &qemu, scenario, &run) {
            Ok(outcome) if outcome.verdict.passed() => {
                passed += 1;
                println!("ok ({:.1} s)", outcome.capture.elapsed.as_secs_f64());
            }
            Ok(outcome) => {
                failed += 1;
                if outcome.reset {
                    // Kept apart too, so that the next run of the scenario does not overwrite it.
                    let kept = log.with_extension("reset.log");
                    let _ = std::fs::copy(&log, &kept);
                    resets.push(&scenario.name);
                }
                report_failures(&outcome.verdict);
                report_tail(&log, &outcome.capture);
            }
            Err(error) => {
                failed += 1;
                println!("FAILED: {error:#}");
            }
        }
    }
    if !resets.is_empty() {
        println!(
            "{} scenario(s) failed with an unexplained machine reset (logs kept as <scenario>.reset.log): {}",
            resets.len(),
            resets.join(", ")
        );
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// QEMU ended with status 0 (a reset, which `-no-reboot` turns into an exit) and the
/// microvisor printed no epitaph: the signature of a triple fault in the host.
pub fn unexplained_reset(capture: &Capture) -> bool {
    matches!(
        capture.ending,
        crate::serial::Ending::Exited(crate::qemu::Exit::Code(0))
    ) && !capture.lines.iter().any(|line| line.text.contains("PANIC"))
}

/// The failure an unexplained reset adds to a verdict, naming the log.
fn reset_failure(log: &std::path::Path) -> String {
    format!(
        "UNEXPLAINED MACHINE RESET: QEMU exited with status 0 and the microvisor printed no \
         epitaph: the machine reset (-no-reboot turns a reset, e.g. a host triple fault, into an \
         exit); log: {}",
        log.display()
    )
}

/// The scenarios named on the command line, or all of them.
pub fn select(all: Vec<Scenario>, names: &[String]) -> Result<Vec<Scenario>> {
    if names.is_empty() {
        return Ok(all);
    }
    for name in names {
        if !all.iter().any(|scenario| &scenario.name == name) {
            let known: Vec<&str> = all.iter().map(|scenario| scenario.name.as_str()).collect();
            bail!(
                "there is no scenario `{name}`; the scenarios are: {}",
                known.join(", ")
            );
        }
    }
    Ok(all
        .into_iter()
        .filter(|scenario| names.contains(&scenario.name))
        .collect())
}

/// The host tests, in three steps:
/// 1. `cargo test` in the workspace root: the default members, which are the host crates. (Not
///    `--workspace`: that takes in the bare-metal crates too, and feature unification with the
///    host crates gives them `std`, which their own panic handler then clashes with.) Xen's own
///    `xenstore-utils` are fetched first (Debian packages, unpacked under the target dir) and
///    named in `XENSTORE_UTILS_DIR`, for the store's interoperability tests.
/// 2. The pure modules of the bare-metal crates, each on its own (`cargo test -p ...`).
/// 3. The `loom` model of the shared-ring index protocol, in its own target dir (it needs
///    `--cfg loom`, which would otherwise invalidate every other build).
fn run_host_tests(workspace: &Workspace) -> Result<()> {
    let tools = workspace.target_dir.join("tools").join("xenstore-utils");
    eprintln!(
        "xtask: fetching Xen's xenstore-utils into {}",
        tools.display()
    );
    run(
        std::process::Command::new("sh")
            .arg(
                workspace
                    .root
                    .join("xenstore-stub/store/fetch-xenstore-utils.sh"),
            )
            .arg(&tools),
        "fetching xenstore-utils (apt-get download) failed; see above",
    )?;

    eprintln!("xtask: host tests (cargo test, the workspace's default members)");
    run(
        workspace
            .cargo_command()
            .arg("test")
            .env("XENSTORE_UTILS_DIR", &tools),
        "the host tests failed; the QEMU scenarios were not run",
    )?;

    for package in BARE_METAL_WITH_PURE_TESTS {
        eprintln!("xtask: host tests of {package}'s pure modules");
        run(
            workspace.cargo_command().args(["test", "-p", package]),
            "the host tests failed; the QEMU scenarios were not run",
        )?;
    }

    eprintln!("xtask: loom model of the ring index protocol");
    run(
        workspace
            .cargo_command()
            .args(["test", "-p", "xen-ring", "--release", "--test", "loom"])
            .env("RUSTFLAGS", "--cfg loom")
            .env("CARGO_TARGET_DIR", workspace.target_dir.join("loom")),
        "the loom model of the ring protocol failed",
    )?;
    Ok(())
}

/// Bare-metal crates whose pure modules have host tests.
const BARE_METAL_WITH_PURE_TESTS: &[&str] = &["driver-domains", "xenstore-stub", "console-backend"];

fn run(command: &mut std::process::Command, what_failed: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{what_failed} ({status})");
    }
    Ok(())
}

/// How to run a scenario once.
pub struct ScenarioRun {
    /// Print the serial output as it arrives.
    pub verbose: bool,
    /// One host thread per emulated CPU (`-accel tcg,thread=multi`).
    pub multi_threaded_tcg: bool,
    /// The name of the scratch directory under `<target>/xtask` (packed manifest, disk image).
    pub scratch: String,
    /// Where the serial log is written.
    pub log: std::path::PathBuf,
}

/// How one run of a scenario went.
pub struct Outcome {
    pub capture: Capture,
    /// With the reset's failure first when [`Outcome::reset`].
    pub verdict: Verdict,
    /// The run ended in an unexplained machine reset (see [`unexplained_reset`]), which fails
    /// it whatever else it printed (unless the scenario accepts any exit).
    pub reset: bool,
}

/// Packs, boots and judges one scenario, and writes its log.
pub fn run_scenario(
    workspace: &Workspace,
    qemu: &std::path::Path,
    scenario: &Scenario,
    run: &ScenarioRun,
) -> Result<Outcome> {
    let packed = system::pack(workspace, &scenario.system_file(), &run.scratch)?;
    let mut extra_args: Vec<std::ffi::OsString> = Vec::new();
    let mut exchange = None;
    if let Some(net) = &scenario.net {
        let mut forwards = Vec::new();
        if let Some(wanted) = &net.exchange {
            let host = commands::free_port()?;
            forwards.push(commands::Forward {
                host,
                guest: wanted.port,
            });
            exchange = Some(crate::serial::ExchangeWhen {
                after: wanted.after.clone(),
                port: host,
                bytes: wanted.bytes,
            });
        }
        extra_args.extend(commands::nic_args(&forwards));
    }
    let mut task = None;
    let mut console_socket = None;
    if let Some(xl) = &scenario.xl {
        if !packed.control {
            anyhow::bail!(
                "scenario {}: `[xl]` steps need a system with a control domain (`control_domain`)",
                scenario.name
            );
        }
        // A `create` of the Debian guest needs its images at hand.
        crate::linux::ensure(workspace)?;
        let scratch = workspace.xtask_dir().join(&run.scratch);
        std::fs::create_dir_all(&scratch)?;
        let socket = scratch.join("mgmt.sock");
        let console = scratch.join("console.sock");
        let attach = scratch.join("attach.sock");
        extra_args.extend(commands::mgmt_args(&socket));
        extra_args.extend(commands::attach_args(&attach));
        console_socket = Some(console.clone());
        let steps = xl.steps.clone();
        let binary = crate::xl_steps::binary(&workspace.release_dir());
        let dir = scenario.dir.clone();
        let system_file = scenario.system_file();
        let seen = crate::serial::SeenLines::default();
        let lines = seen.clone();
        task = Some(crate::serial::HostTask {
            after: xl.after.clone(),
            seen: Some(seen),
            run: std::sync::Arc::new(move |emit| {
                let sockets = crate::xl_steps::Sockets {
                    mgmt: &socket,
                    attach: &attach,
                    system: &system_file,
                };
                crate::xl_steps::run(&steps, &binary, sockets, &dir, &lines, emit)
            }),
        });
    }
    let watch = Watch {
        timeout: Some(scenario.timeout),
        stop_when: scenario.stop_when.clone(),
        echo: run.verbose,
        sends: scenario.sends.clone(),
        forward_stdin: false,
        exchange,
        task,
        console_socket,
    };
    let disk_path = workspace.xtask_dir().join(&run.scratch).join("disk.img");
    if let Some(disk) = &scenario.disk {
        commands::create_disk(&disk_path, disk.size_mib)?;
        extra_args.extend(commands::disk_args(&disk_path));
    }
    let capture = commands::boot(
        workspace,
        qemu,
        &packed,
        commands::MachineOptions {
            cpu_model: scenario.qemu_cpu.clone(),
            extra_args,
            iommu: scenario.qemu_iommu.clone(),
            multi_threaded_tcg: run.multi_threaded_tcg,
            ..commands::MachineOptions::standard(
                SCENARIO_CPUS,
                scenario.qemu_memory_mib.unwrap_or(SCENARIO_MEMORY_MIB),
            )
        },
        &watch,
    )?;
    let log = &run.log;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    std::fs::write(log, capture.text())
        .with_context(|| format!("could not write {}", log.display()))?;
    let (mut verdict, reset) = judge_run(scenario, &capture, log);
    if let Some(disk) = &scenario.disk {
        verdict.failures.extend(check_disk(&disk_path, disk));
    }
    Ok(Outcome {
        capture,
        verdict,
        reset,
    })
}

/// Judges a run by the scenario's rules and its sends; an unexplained reset fails it, first
/// and loudly, unless the scenario accepts any exit. Also says whether it was such a reset.
fn judge_run(scenario: &Scenario, capture: &Capture, log: &std::path::Path) -> (Verdict, bool) {
    let lines: Vec<&str> = capture
        .lines
        .iter()
        .map(|line| line.text.as_str())
        .collect();
    let mut verdict = judge::judge(scenario, &lines, capture.ending);
    verdict.failures.extend(unsent(scenario, capture.sent));
    let reset = scenario.exit != ExitRule::Any && unexplained_reset(capture);
    if reset {
        verdict.failures.insert(0, reset_failure(log));
    }
    (verdict, reset)
}

/// The sends that were never typed, the first of which never saw its pattern.
fn unsent(scenario: &Scenario, sent: usize) -> Option<String> {
    let send = scenario.sends.get(sent)?;
    Some(format!(
        "send[{sent}] was never typed: its `after` '{}' matched no serial output after {}, so \
         {} of {} sends were typed",
        send.after,
        if sent == 0 {
            "the start".to_string()
        } else {
            format!("send[{}]'s match", sent - 1)
        },
        sent,
        scenario.sends.len()
    ))
}

/// Reads the disk image back on the host and checks the sectors and texts the scenario lists.
fn check_disk(path: &std::path::Path, disk: &scenario::Disk) -> Vec<String> {
    let image = match std::fs::read(path) {
        Ok(image) => image,
        Err(e) => {
            return vec![format!(
                "could not read the disk image {}: {e}",
                path.display()
            )]
        }
    };
    let mut failures = Vec::new();
    for &(sector, pattern) in &disk.checks {
        let start = (sector * 512) as usize;
        let Some(bytes) = image.get(start..start + 512) else {
            failures.push(format!("sector {sector} is beyond the disk image"));
            continue;
        };
        let expected = |i: usize| pattern ^ (sector as u8) ^ (i as u8);
        if let Some(i) = (0..512).find(|&i| bytes[i] != expected(i)) {
            failures.push(format!(
                "disk image sector {sector} byte {i} is {:#04x}, expected {:#04x} (the driver domain's write did not reach the disk)",
                bytes[i],
                expected(i)
            ));
        }
    }
    for text in &disk.contains {
        let needle = text.as_bytes();
        if !image.windows(needle.len()).any(|window| window == needle) {
            failures.push(format!("the disk image does not contain {text:?} (the guest's data did not reach the disk)"));
        }
    }
    failures
}

/// `FAILED: <first reason>` on the scenario's line, then every reason when there are several.
pub fn report_failures(verdict: &Verdict) {
    let first = verdict.failures.first().map_or("", String::as_str);
    match verdict.failures.len() {
        0 | 1 => println!("FAILED: {first}"),
        count => {
            println!("FAILED: {first} (and {} more)", count - 1);
            for failure in &verdict.failures {
                println!("    - {failure}");
            }
        }
    }
}

/// The last lines of a failed run, under the path of its full log.
pub fn report_tail(log: &std::path::Path, capture: &Capture) {
    let shown = capture.lines.len().min(TAIL_LINES);
    println!(
        "    --- last {shown} of {} lines of {} ---",
        capture.lines.len(),
        log.display()
    );
    for line in commands::tail(capture, TAIL_LINES) {
        println!("    {line}");
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn scenario(name: &str) -> Scenario {
        Scenario::parse(
            name,
            Path::new("/nowhere"),
            "description = \"x\"\ntimeout_secs = 1\nexit = \"any\"\nexpect = ['a']\n",
        )
        .unwrap()
    }

    #[test]
    fn untyped_sends_are_failures() {
        let scenario = Scenario::parse(
            "typing",
            Path::new("/nowhere"),
            "description = \"x\"\ntimeout_secs = 1\nexit = \"any\"\nexpect = ['a']\n\
             [[send]]\nafter = 'login:'\ntext = \"root\\n\"\n[[send]]\nafter = '# '\ntext = \"ls\\n\"\n",
        )
        .unwrap();
        assert_eq!(unsent(&scenario, 2), None);
        assert_eq!(
            unsent(&scenario, 1).unwrap(),
            "send[1] was never typed: its `after` '# ' matched no serial output after send[0]'s match, so 1 of 2 sends were typed"
        );
        assert!(unsent(&scenario, 0).unwrap().contains("after the start"));
    }

    fn capture(lines: &[&str], ending: crate::serial::Ending) -> Capture {
        Capture {
            lines: lines
                .iter()
                .map(|text| crate::serial::Line {
                    at: std::time::Duration::ZERO,
                    stream: crate::serial::Stream::Stdout,
                    text: text.to_string(),
                })
                .collect(),
            ending,
            elapsed: std::time::Duration::ZERO,
            sent: 0,
        }
    }

    fn exited(code: i32) -> crate::serial::Ending {
        crate::serial::Ending::Exited(crate::qemu::Exit::Code(code))
    }

    #[test]
    fn a_silent_status_0_is_an_unexplained_reset() {
        assert!(unexplained_reset(&capture(&["a"], exited(0))));
        assert!(!unexplained_reset(&capture(
            &["[microvisor] PANIC on cpu 1"],
            exited(0)
        )));
        assert!(!unexplained_reset(&capture(&["a"], exited(1))));
        assert!(!unexplained_reset(&capture(
            &["a"],
            crate::serial::Ending::TimedOut
        )));
    }

    /// A reset fails the run with the reset named first, even where every other rule held;
    /// there is no second attempt.
    #[test]
    fn a_reset_fails_the_run_first_and_loudly() {
        let poweroff = Scenario::parse(
            "p",
            Path::new("/nowhere"),
            "description = \"x\"\ntimeout_secs = 1\nexit = \"poweroff\"\nexpect = ['a']\n",
        )
        .unwrap();
        let log = Path::new("logs/p.log");
        let (verdict, reset) = judge_run(&poweroff, &capture(&["a"], exited(0)), log);
        assert!(reset && !verdict.passed());
        assert!(
            verdict.failures[0].starts_with("UNEXPLAINED MACHINE RESET")
                && verdict.failures[0].contains("logs/p.log"),
            "{:?}",
            verdict.failures
        );
        let (verdict, reset) = judge_run(&poweroff, &capture(&["a"], exited(1)), log);
        assert!(!reset && verdict.passed(), "{:?}", verdict.failures);
        let (verdict, reset) = judge_run(&poweroff, &capture(&["a"], exited(3)), log);
        assert!(!reset && !verdict.passed());

        // A scenario that accepts any exit accepts status 0 too.
        let any = scenario("any");
        let (verdict, reset) = judge_run(&any, &capture(&["a"], exited(0)), log);
        assert!(!reset && verdict.passed(), "{:?}", verdict.failures);
    }

    #[test]
    fn selects_named_scenarios_in_directory_order() {
        let all = || vec![scenario("a"), scenario("b"), scenario("c")];
        let names = |list: Vec<Scenario>| {
            list.into_iter()
                .map(|scenario| scenario.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(select(all(), &[]).unwrap()), ["a", "b", "c"]);
        assert_eq!(
            names(select(all(), &["c".into(), "a".into()]).unwrap()),
            ["a", "c"]
        );
        let error = select(all(), &["d".into()]).unwrap_err().to_string();
        assert!(
            error.contains("no scenario `d`") && error.contains("a, b, c"),
            "{error}"
        );
    }
}
