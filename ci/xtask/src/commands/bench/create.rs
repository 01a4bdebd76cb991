//! `cargo xtask bench --only create`: how long `xl create` takes, against the microvisor's
//! own boot-time build of the same domain in the same run, what a create costs in VM exits
//! and hypercalls, and how many domains can be alive at once.
//!
//! The system (`ci/bench/create`) boots the services, the control domain and two domains
//! built by the microvisor at boot, `ticker-boot` (a small Rust domain) and `linux-boot`
//! (Debian's Linux, which powers off after its first userspace line). Once `linux-boot` is
//! gone, a host task runs the host's `xl`:
//! - `xl create ticker.cfg`, then `xl destroy ticker`, [`RUST_CREATES`] times;
//! - `xl create linux.cfg`, then `xl destroy linux`, [`LINUX_CREATES`] times;
//! - the control domain's counters (`xl list --stats`) before and after each create;
//! - then small domains in a loop until a create is refused.
//!
//! Times come from the serial log: a create runs from its `xl$ create` line to the domain's
//! first console line (`tick 1`) or first userspace line (`guest: userspace up`); a boot-time
//! build runs from the microvisor line before the domain's `built` line (where its build
//! starts) to the same line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use regex::Regex;
use serde::Serialize;

use super::{failure, keep_log, median_f64, BenchArgs, BENCH_CPUS};
use crate::serial::{Capture, Ending, HostTask, Watch};
use crate::workspace::Workspace;
use crate::{commands, linux, system, xl_steps};

const SYSTEM: &str = "ci/bench/create/system.cfg";
const RUST_CREATES: usize = 5;
const LINUX_CREATES: usize = 2;
/// The most small domains the fill tries.
const FILL_MAX: usize = 300;
const MEMORY_MIB: u32 = 2048;
const DONE: &str = "bench: create done";

#[derive(Serialize)]
pub struct CreateReport {
    /// `xl create` of the small Rust domain to its first console line, each, in seconds.
    pub rust_create_s: Vec<f64>,
    pub rust_create_median_s: f64,
    /// The microvisor's boot-time build of the same domain to the same line.
    pub rust_boot_build_s: Vec<f64>,
    pub rust_boot_build_median_s: f64,
    /// rust_create_median_s / rust_boot_build_median_s.
    pub rust_ratio: f64,
    /// `xl create` of Linux (its 56 MB sent over the channel) to its first userspace line.
    pub linux_create_s: Vec<f64>,
    pub linux_create_median_s: f64,
    /// Of that, until `xl create` returned (upload, build and start).
    pub linux_xl_s: Vec<f64>,
    pub linux_boot_build_s: Vec<f64>,
    pub linux_boot_build_median_s: f64,
    pub linux_ratio: f64,
    /// The control domain's VM exits and hypercalls during one create of the small domain
    /// (median): upload, build and start.
    pub rust_create_vm_exits: f64,
    pub rust_create_hypercalls: f64,
    /// The same for a Linux create.
    pub linux_create_vm_exits: f64,
    pub linux_create_hypercalls: f64,
    /// Small domains alive at once when a create was first refused, and the refusal.
    pub domains_alive: Vec<usize>,
    pub refusal: String,
}

/// The host task: creates, destroys and counters, then the fill (see the module's text).
fn boot_task(xl: PathBuf, sockets: (PathBuf, PathBuf), dir: PathBuf) -> HostTask {
    let system = dir.join("system.cfg");
    HostTask {
        seen: None,
        after: Regex::new(r"domain \d+ \(linux-boot\) destroyed").expect("a valid regex"),
        run: Arc::new(move |emit| {
            let sockets = xl_steps::Sockets {
                mgmt: &sockets.0,
                attach: &sockets.1,
                system: &system,
            };
            let xl = |args: &[&str], emit: &mut dyn FnMut(String)| {
                let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                emit(format!("xl$ {}", args.join(" ")));
                match xl_steps::output(&xl, sockets, &dir, &args, None) {
                    Ok((status, lines)) => {
                        for line in &lines {
                            emit(format!("xl: {line}"));
                        }
                        emit(format!("xl: exit {status}"));
                        (status, lines)
                    }
                    Err(e) => {
                        emit(format!("xl: cannot run: {e}"));
                        (-1, Vec::new())
                    }
                }
            };
            for (cfg, name, creates, settle) in [
                ("ticker.cfg", "ticker", RUST_CREATES, 3),
                ("linux.cfg", "linux", LINUX_CREATES, 40),
            ] {
                for _ in 0..creates {
                    xl(&["list", "--stats"], emit);
                    xl(&["create", cfg], emit);
                    xl(&["list", "--stats"], emit);
                    std::thread::sleep(Duration::from_secs(settle));
                    xl(&["destroy", name], emit);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            // Small domains until a create is refused.
            let scratch =
                std::env::temp_dir().join(format!("xtask-bench-fill-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&scratch);
            let mut alive = 0;
            let mut refusal = String::from("none within the limit tried");
            for k in 1..=FILL_MAX {
                let cfg = scratch.join(format!("mini-{k}.cfg"));
                let text = format!(
                    "name = \"mini-{k}\"\ntype = \"pvh\"\nkernel = \"hello\"\nmemory = 4\ncmdline = \"mode=ticker count=1000000 interval_ms=20000\"\n"
                );
                if std::fs::write(&cfg, text).is_err() {
                    break;
                }
                let (status, lines) = xl(&["create", &cfg.display().to_string()], emit);
                if status != 0 {
                    refusal = lines.last().cloned().unwrap_or_default();
                    break;
                }
                alive += 1;
            }
            let _ = std::fs::remove_dir_all(&scratch);
            emit(format!(
                "bench: {alive} small domains alive, then refused: {refusal}"
            ));
            emit(DONE.to_string());
        }),
    }
}

pub fn bench_create(
    workspace: &Workspace,
    qemu: &Path,
    args: &BenchArgs,
    timeout: Duration,
) -> Result<CreateReport> {
    linux::ensure(workspace)?;
    let system_file = workspace.root.join(SYSTEM);
    let packed = system::pack(workspace, &system_file, "bench-create")?;
    let scratch = workspace.xtask_dir().join("bench-create");
    std::fs::create_dir_all(&scratch)?;
    let (mgmt, console) = (scratch.join("mgmt.sock"), scratch.join("console.sock"));
    // No `xl console` here: the machine has no COM2, nothing listens on this socket.
    let attach = scratch.join("attach.sock");
    let dir = system_file
        .parent()
        .expect("a file has a directory")
        .to_path_buf();
    let xl = xl_steps::binary(&workspace.release_dir());
    let mut report = CreateReport {
        rust_create_s: Vec::new(),
        rust_create_median_s: 0.0,
        rust_boot_build_s: Vec::new(),
        rust_boot_build_median_s: 0.0,
        rust_ratio: 0.0,
        linux_create_s: Vec::new(),
        linux_create_median_s: 0.0,
        linux_xl_s: Vec::new(),
        linux_boot_build_s: Vec::new(),
        linux_boot_build_median_s: 0.0,
        linux_ratio: 0.0,
        rust_create_vm_exits: 0.0,
        rust_create_hypercalls: 0.0,
        linux_create_vm_exits: 0.0,
        linux_create_hypercalls: 0.0,
        domains_alive: Vec::new(),
        refusal: String::new(),
    };
    let (mut rust_cost, mut linux_cost) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        let watch = Watch {
            timeout: Some(timeout.max(Duration::from_secs(900))),
            stop_when: Some(Regex::new(DONE)?),
            task: Some(boot_task(
                xl.clone(),
                (mgmt.clone(), attach.clone()),
                dir.clone(),
            )),
            console_socket: Some(console.clone()),
            ..Watch::default()
        };
        let mut options = commands::MachineOptions::standard(BENCH_CPUS, MEMORY_MIB);
        options.extra_args = commands::mgmt_args(&mgmt);
        let capture = commands::boot(workspace, qemu, &packed, options, &watch)?;
        keep_log(workspace, &packed.name, &capture)?;
        if capture.ending != Ending::Stopped {
            bail!(failure("create", "did not reach its end", &capture));
        }
        let read =
            read_run(&capture).map_err(|e| anyhow::anyhow!(failure("create", &e, &capture)))?;
        eprintln!(
            "bench: create run {run}/{}: ticker {:.2} s (boot build {:.2} s), linux {:.2} s (boot build {:.2} s), {} domains alive",
            args.runs,
            median_f64(&read.rust_create),
            read.rust_boot,
            median_f64(&read.linux_create),
            read.linux_boot,
            read.alive
        );
        report.rust_create_s.extend(&read.rust_create);
        report.rust_boot_build_s.push(read.rust_boot);
        report.linux_create_s.extend(&read.linux_create);
        report.linux_xl_s.extend(&read.linux_xl);
        report.linux_boot_build_s.push(read.linux_boot);
        rust_cost.extend(read.rust_cost);
        linux_cost.extend(read.linux_cost);
        report.domains_alive.push(read.alive);
        report.refusal = read.refusal;
    }
    report.rust_create_median_s = median_f64(&report.rust_create_s);
    report.rust_boot_build_median_s = median_f64(&report.rust_boot_build_s);
    report.rust_ratio = report.rust_create_median_s / report.rust_boot_build_median_s;
    report.linux_create_median_s = median_f64(&report.linux_create_s);
    report.linux_boot_build_median_s = median_f64(&report.linux_boot_build_s);
    report.linux_ratio = report.linux_create_median_s / report.linux_boot_build_median_s;
    let exits =
        |costs: &[(u64, u64)]| median_f64(&costs.iter().map(|c| c.0 as f64).collect::<Vec<_>>());
    let calls =
        |costs: &[(u64, u64)]| median_f64(&costs.iter().map(|c| c.1 as f64).collect::<Vec<_>>());
    report.rust_create_vm_exits = exits(&rust_cost);
    report.rust_create_hypercalls = calls(&rust_cost);
    report.linux_create_vm_exits = exits(&linux_cost);
    report.linux_create_hypercalls = calls(&linux_cost);
    Ok(report)
}

/// What one run's log says.
struct Run {
    rust_create: Vec<f64>,
    rust_boot: f64,
    linux_create: Vec<f64>,
    linux_xl: Vec<f64>,
    linux_boot: f64,
    /// (vm exits, hypercalls) of the control domain per create.
    rust_cost: Vec<(u64, u64)>,
    linux_cost: Vec<(u64, u64)>,
    alive: usize,
    refusal: String,
}

fn read_run(capture: &Capture) -> Result<Run, String> {
    let lines = &capture.lines;
    let find_after = |from: usize, pattern: &str| -> Option<usize> {
        let re = Regex::new(pattern).ok()?;
        (from..lines.len()).find(|&i| re.is_match(&lines[i].text))
    };
    let secs = |a: usize, b: usize| (lines[b].at.saturating_sub(lines[a].at)).as_secs_f64();
    // Boot-time builds: from the microvisor line before `built` to the first line.
    let boot_build = |name: &str, first: &str| -> Result<f64, String> {
        let built = find_after(0, &format!(r"^\[microvisor\] domain \d+ \({name}\) built"))
            .ok_or(format!("no build line for {name}"))?;
        let before = (0..built)
            .rev()
            .find(|&i| lines[i].text.starts_with("[microvisor] "))
            .ok_or(format!("no microvisor line before {name}'s build"))?;
        let first = find_after(built, &format!(r"^\[{name}\] .*{first}"))
            .ok_or(format!("{name} printed no `{first}`"))?;
        Ok(secs(before, first))
    };
    let rust_boot = boot_build("ticker-boot", "tick 1")?;
    let linux_boot = boot_build("linux-boot", "guest: userspace up")?;
    let control_counters = |at: usize| -> Option<(u64, u64)> {
        // The control row of the `xl list --stats` output that follows line `at`.
        let row = find_after(at, r"^xl: control +\d+ ")?;
        let fields: Vec<&str> = lines[row].text.split_whitespace().collect();
        let n = fields.len();
        Some((fields[n - 2].parse().ok()?, fields[n - 1].parse().ok()?))
    };
    let mut run = Run {
        rust_create: Vec::new(),
        rust_boot,
        linux_create: Vec::new(),
        linux_xl: Vec::new(),
        linux_boot,
        rust_cost: Vec::new(),
        linux_cost: Vec::new(),
        alive: 0,
        refusal: String::new(),
    };
    let mut at = 0;
    for (cfg, name, first, count) in [
        ("ticker.cfg", "ticker", "tick 1$", RUST_CREATES),
        ("linux.cfg", "linux", "guest: userspace up", LINUX_CREATES),
    ] {
        for _ in 0..count {
            let before = find_after(at, r"^xl\$ list --stats").ok_or("a list is missing")?;
            let create = find_after(before, &format!(r"^xl\$ create {}", regex::escape(cfg)))
                .ok_or(format!("no create of {cfg}"))?;
            let exit = find_after(create, r"^xl: exit ").ok_or("xl create did not end")?;
            if lines[exit].text != "xl: exit 0" {
                return Err(format!("xl create {cfg} failed"));
            }
            let after = find_after(exit, r"^xl\$ list --stats").ok_or("a list is missing")?;
            let first = find_after(create, &format!(r"^\[{name}\] .*{first}"))
                .ok_or(format!("{name} printed no `{first}`"))?;
            let (b, a) = (
                control_counters(before).ok_or("no control row before")?,
                control_counters(after).ok_or("no control row after")?,
            );
            let cost = (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1));
            if name == "ticker" {
                run.rust_create.push(secs(create, first));
                run.rust_cost.push(cost);
            } else {
                run.linux_create.push(secs(create, first));
                run.linux_xl.push(secs(create, exit));
                run.linux_cost.push(cost);
            }
            at = find_after(first.max(after), &format!(r"^xl\$ destroy {name}"))
                .ok_or(format!("no destroy of {name}"))?;
        }
    }
    let fill = find_after(at, r"^bench: \d+ small domains alive").ok_or("the fill did not end")?;
    let re = Regex::new(r"^bench: (\d+) small domains alive, then refused: (.*)$")
        .map_err(|e| e.to_string())?;
    let caps = re.captures(&lines[fill].text).ok_or("bad fill line")?;
    run.alive = caps[1].parse().map_err(|_| "bad count")?;
    run.refusal = caps[2].to_string();
    Ok(run)
}

pub fn print_create(report: &CreateReport, runs: u32) {
    println!();
    println!("domain creation through the control domain ({runs} boots; medians):");
    println!(
        "  small Rust domain: xl create to its first console line {:.3} s; built at boot by the microvisor {:.3} s; ratio {:.2}",
        report.rust_create_median_s, report.rust_boot_build_median_s, report.rust_ratio
    );
    println!(
        "  Debian Linux: xl create to its first userspace line {:.2} s (xl itself {:.2} s: sending 56 MB, build, start); built at boot {:.2} s; ratio {:.2}",
        report.linux_create_median_s,
        median_f64(&report.linux_xl_s),
        report.linux_boot_build_median_s,
        report.linux_ratio
    );
    println!(
        "  the control domain per create: {:.0} VM exits and {:.0} hypercalls (small domain), {:.0} and {:.0} (Linux)",
        report.rust_create_vm_exits,
        report.rust_create_hypercalls,
        report.linux_create_vm_exits,
        report.linux_create_hypercalls
    );
    println!(
        "  small domains alive at once: {:?} (goal 200), then: {}",
        report.domains_alive, report.refusal
    );
}
