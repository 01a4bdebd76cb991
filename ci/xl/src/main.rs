//! `xl`: manage the domains of a running system, as Xen's `xl` does, through the system's
//! control domain. `cargo xtask run` opens the management channel (a virtio console of the
//! control domain) as a unix socket; `xl` connects to it, sends one framed request per
//! command (`control::mgmt`) and prints the answer.
//!
//! ```text
//! xl list                      xl create FILE.cfg
//! xl info                      xl shutdown [-w] DOMAIN     xl reboot DOMAIN
//! xl uptime                    xl destroy DOMAIN
//! xl top [-d SECS] [-i N]      xl pause DOMAIN             xl unpause DOMAIN
//! xl console DOMAIN
//! ```
//!
//! `xl console` is the domain's console, raw both ways (Ctrl-] leaves), through the console
//! domain's attach line: the machine's second serial port, which `cargo xtask run` opens as
//! the unix socket `target/xtask/attach.sock` (see `console.rs`).
//!
//! DOMAIN is a name or a domain id. The socket is `target/xtask/mgmt.sock` of this
//! workspace unless `--socket` or `XL_SOCKET` names another.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use control::mgmt::{self, Action, CreatePlan, Deframer, DomainRow, Request, Response, DATA_CHUNK};

mod console;

#[derive(Parser)]
#[command(
    name = "xl",
    about = "Manage the domains of a running system through its control domain"
)]
struct Cli {
    /// The management channel's socket (default: target/xtask/mgmt.sock of this workspace).
    #[arg(long, env = "XL_SOCKET")]
    socket: Option<PathBuf>,
    /// The console domain's attach line (the machine's COM2), for `xl console` (default:
    /// target/xtask/attach.sock of this workspace).
    #[arg(long, env = "XL_ATTACH_SOCKET")]
    attach_socket: Option<PathBuf>,
    /// The system file the running system booted from, for `create`'s disks and vifs
    /// (default: the one `cargo xtask run` recorded in target/xtask/system).
    #[arg(long, env = "XL_SYSTEM")]
    system: Option<PathBuf>,
    /// How long to wait for each answer, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The domains: Name, ID, Mem, VCPUs, State, Time(s).
    List {
        /// Also each domain's VM exits and hypercalls so far.
        #[arg(long)]
        stats: bool,
    },
    /// The machine: CPUs, memory, uptime, counters.
    Info,
    /// How long the system has been up.
    Uptime,
    /// Domains' CPU use and memory, refreshed.
    Top {
        /// Seconds between refreshes.
        #[arg(short, long, default_value_t = 1.0)]
        delay: f64,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(short, long)]
        iterations: Option<u64>,
    },
    /// Create a domain from an xl.cfg file and start it.
    Create { config: PathBuf },
    /// Ask a domain to power off (through xenstore's control/shutdown).
    Shutdown {
        /// Wait until it is gone.
        #[arg(short, long)]
        wait: bool,
        domain: String,
    },
    /// Ask a domain to reboot (through xenstore's control/shutdown).
    Reboot { domain: String },
    /// Tear a domain down at once.
    Destroy { domain: String },
    /// Make a domain crash now, as if it had faulted, so its on_crash applies (fault
    /// injection: a driver domain with on_crash = "restart" comes back under its id).
    Crash { domain: String },
    /// Stop a domain's vCPUs.
    Pause { domain: String },
    /// Let a paused domain run again.
    Unpause { domain: String },
    /// A domain's console, raw both ways (on a terminal, in raw mode); Ctrl-] leaves. Without
    /// a terminal, the end of input leaves too, once the output has been quiet for 2 s.
    Console { domain: String },
    /// The microvisor's recent log.
    Dmesg,
    /// Every vCPU: its domain, the CPU it runs on, its state and its time.
    VcpuList { domain: Option<String> },
}

/// A connection to the control domain.
struct Channel {
    stream: UnixStream,
    deframer: Deframer,
    path: PathBuf,
    timeout: Duration,
}

impl Channel {
    fn open(path: &Path, timeout: Duration) -> Result<Self> {
        let stream = UnixStream::connect(path).with_context(|| {
            format!(
                "cannot reach the control domain at {}: start a system with a control domain \
                 (`cargo xtask run`; its system file sets `control_domain`), or give --socket",
                path.display()
            )
        })?;
        Ok(Channel {
            stream,
            deframer: Deframer::new(),
            path: path.to_owned(),
            timeout,
        })
    }

    /// Sends one request and waits for its answer.
    fn ask(&mut self, request: &Request) -> Result<Response> {
        self.stream
            .write_all(&mgmt::frame(request))
            .with_context(|| format!("cannot write to {}", self.path.display()))?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 65536];
        loop {
            while let Some(frame) = self.deframer.next_frame() {
                match frame {
                    Ok(payload) => {
                        return mgmt::decode::<Response>(&payload)
                            .map_err(|e| anyhow::anyhow!("the control domain sent {e}"))
                    }
                    // Noise before an answer (a console's own output) is not an answer.
                    Err(_) => continue,
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "the control domain did not answer within {} s on {} (is the system still booting?)",
                    self.timeout.as_secs(),
                    self.path.display()
                );
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => bail!("the management channel {} closed", self.path.display()),
                Ok(n) => self.deframer.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e).context("reading the management channel"),
            }
        }
    }

    /// Asks and expects `Done`, `Created` or data; an `Error` becomes this command's error.
    fn expect(&mut self, request: &Request) -> Result<Response> {
        match self.ask(request)? {
            Response::Error(why) => bail!("{why}"),
            other => Ok(other),
        }
    }

    fn domains(&mut self) -> Result<Vec<DomainRow>> {
        match self.expect(&Request::List)? {
            Response::Domains(rows) => Ok(rows),
            other => bail!("unexpected answer to list: {other:?}"),
        }
    }
}

fn default_socket() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/xtask/mgmt.sock")
}

fn default_attach_socket() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/xtask/attach.sock")
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("xl: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let path = cli.socket.clone().unwrap_or_else(default_socket);
    let mut channel = Channel::open(&path, Duration::from_secs(cli.timeout))?;
    match cli.command {
        Command::List { stats } => print_list(&channel.domains()?, stats),
        Command::Info => {
            let Response::Info(info) = channel.expect(&Request::Info)? else {
                bail!("unexpected answer to info");
            };
            println!("host                   : microvisor");
            println!("nr_cpus                : {}", info.cpus);
            println!("total_memory           : {}", info.total_mib);
            println!("free_memory            : {}", info.free_mib);
            println!("max_domains            : {}", info.max_domains);
            println!("uptime                 : {}", uptime(info.uptime_ns));
            println!("vm_exits               : {}", info.vm_exits);
            println!("hypercalls             : {}", info.hypercalls);
            println!("refused_frames         : {}", info.bad_frames);
        }
        Command::Uptime => {
            let Response::Info(info) = channel.expect(&Request::Info)? else {
                bail!("unexpected answer to uptime");
            };
            println!("up {}", uptime(info.uptime_ns));
        }
        Command::Top { delay, iterations } => top(&mut channel, delay, iterations)?,
        Command::Create { config } => create(&mut channel, &config, cli.system.as_deref())?,
        Command::Shutdown { wait, domain } => {
            done(channel.expect(&Request::Shutdown {
                domain: domain.clone(),
                reboot: false,
            })?);
            if wait {
                wait_gone(&mut channel, &domain)?;
            }
        }
        Command::Reboot { domain } => done(channel.expect(&Request::Shutdown {
            domain,
            reboot: true,
        })?),
        Command::Destroy { domain } => done(channel.expect(&Request::Destroy(domain))?),
        Command::Crash { domain } => done(channel.expect(&Request::Crash(domain))?),
        Command::Pause { domain } => done(channel.expect(&Request::Pause(domain))?),
        Command::Unpause { domain } => done(channel.expect(&Request::Unpause(domain))?),
        Command::Dmesg => match channel.expect(&Request::Dmesg)? {
            Response::Dmesg(text) => print!("{text}"),
            other => bail!("unexpected answer to dmesg: {other:?}"),
        },
        Command::VcpuList { domain } => {
            let Response::Vcpus(rows) = channel.expect(&Request::VcpuList)? else {
                bail!("unexpected answer to vcpu-list");
            };
            if let Some(d) = &domain {
                if !rows
                    .iter()
                    .any(|r| &r.name == d || &r.domid.to_string() == d)
                {
                    bail!("no domain is named or numbered `{d}` (`xl list` shows the domains)");
                }
            }
            println!(
                "{:<32}{:>5}{:>6}{:>5}{:>7}{:>11}  Affinity (Hard / Soft)",
                "Name", "ID", "VCPU", "CPU", "State", "Time(s)"
            );
            for r in rows.iter().filter(|r| {
                domain
                    .as_ref()
                    .is_none_or(|d| &r.name == d || &r.domid.to_string() == d)
            }) {
                println!(
                    "{:<32}{:>5}{:>6}{:>5}{:>7}{:>11.1}  all / all",
                    r.name,
                    r.domid,
                    r.vcpu,
                    r.cpu.map_or("-".to_string(), |c| c.to_string()),
                    r.state,
                    r.cpu_ns as f64 / 1e9
                );
            }
        }
        Command::Console { domain } => {
            // The name must exist: the console domain would only say it knows no such domain.
            let rows = channel.domains()?;
            let Some(row) = rows
                .iter()
                .find(|r| r.name == domain || r.domid.to_string() == domain)
            else {
                bail!("no domain is named or numbered `{domain}` (`xl list` shows the domains)");
            };
            let socket = cli.attach_socket.unwrap_or_else(default_attach_socket);
            // The management channel is not needed while the console is open.
            drop(channel);
            console::run(&socket, &row.name)?;
        }
    }
    Ok(())
}

fn done(response: Response) {
    if let Response::Done(text) = response {
        if !text.is_empty() {
            println!("{text}");
        }
    }
}

fn print_list(rows: &[DomainRow], stats: bool) {
    print!(
        "{:<40}{:>5}{:>6}{:>6}     {:<8}{:>9}",
        "Name", "ID", "Mem", "VCPUs", "State", "Time(s)"
    );
    if stats {
        print!("{:>12}{:>12}", "VMExits", "Hypercalls");
    }
    println!();
    for r in rows {
        print!(
            "{:<40}{:>5}{:>6}{:>6}     {:<8}{:>9.1}",
            r.name,
            r.domid,
            r.memory_mib,
            r.vcpus,
            r.state,
            r.cpu_ns as f64 / 1e9
        );
        if stats {
            print!("{:>12}{:>12}", r.vm_exits, r.hypercalls);
        }
        println!();
    }
}

fn uptime(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// `xl top`: each domain's share of one CPU since the last refresh, and its memory.
fn top(channel: &mut Channel, delay: f64, iterations: Option<u64>) -> Result<()> {
    let mut before = channel.domains()?;
    let mut at = Instant::now();
    let mut shown = 0u64;
    loop {
        std::thread::sleep(Duration::from_secs_f64(delay.max(0.1)));
        let now = channel.domains()?;
        let elapsed = at.elapsed().as_secs_f64();
        at = Instant::now();
        if iterations.is_none() {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "{:<24}{:>5} {:<8}{:>10}{:>8}{:>9}{:>6}{:>12}{:>12}",
            "NAME", "ID", "STATE", "CPU(sec)", "CPU(%)", "MEM(MiB)", "VCPUS", "EXITS/s", "HCALLS/s"
        );
        for r in &now {
            let old = before.iter().find(|o| o.domid == r.domid);
            let delta = |new: u64, old: Option<u64>| new.saturating_sub(old.unwrap_or(new)) as f64;
            let cpu = delta(r.cpu_ns, old.map(|o| o.cpu_ns)) / 1e9 / elapsed * 100.0;
            println!(
                "{:<24}{:>5} {:<8}{:>10.1}{:>8.1}{:>9}{:>6}{:>12.0}{:>12.0}",
                r.name,
                r.domid,
                r.state,
                r.cpu_ns as f64 / 1e9,
                cpu,
                r.memory_mib,
                r.vcpus,
                delta(r.vm_exits, old.map(|o| o.vm_exits)) / elapsed,
                delta(r.hypercalls, old.map(|o| o.hypercalls)) / elapsed,
            );
        }
        before = now;
        shown += 1;
        if iterations.is_some_and(|n| shown >= n) {
            return Ok(());
        }
    }
}

/// Waits until `domain` is no longer listed (or is shut down and kept).
fn wait_gone(channel: &mut Channel, domain: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let rows = channel.domains()?;
        let row = rows
            .iter()
            .find(|r| r.name == domain || r.domid.to_string() == domain);
        match row {
            None => {
                println!(
                    "domain {domain} is gone ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Some(r) if r.state.contains('s') || r.state.contains('c') => {
                println!("domain {domain} has shut down and is kept ({})", r.state);
                return Ok(());
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn image_dirs() -> Vec<PathBuf> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    vec![target.join("release"), target.join("linux")]
}

fn action(a: microvisor_abi::manifest::LifecycleAction) -> Action {
    match a {
        microvisor_abi::manifest::LifecycleAction::Destroy => Action::Destroy,
        microvisor_abi::manifest::LifecycleAction::Restart => Action::Restart,
        microvisor_abi::manifest::LifecycleAction::Preserve => Action::Preserve,
    }
}

/// `xl create`: checks the file as the boot manifests are checked, sends the plan and the
/// images, and has the control domain build and start the domain.
fn create(channel: &mut Channel, file: &Path, system: Option<&Path>) -> Result<()> {
    println!("Parsing config from {}", file.display());
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let config = manifests::parse_domain_config(file, &text)?;
    let unsupported = [
        ("pci", !config.pci.is_empty()),
        ("ioports", !config.ioports.is_empty()),
    ];
    if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
        bail!(
            "{}: {key}: `xl create` does not pass devices through; put this domain in the system file instead",
            file.display()
        );
    }
    // Disks and vifs are checked against the running system's manifest, as at boot.
    let devices = if config.disks.is_empty() && config.vifs.is_empty() {
        String::new()
    } else {
        let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/xtask/system");
        let system = match system {
            Some(path) => path.to_owned(),
            None => PathBuf::from(
                std::fs::read_to_string(&recorded)
                    .with_context(|| {
                        format!(
                            "{} has disks or vifs: give the running system's file with --system (none recorded in {})",
                            file.display(),
                            recorded.display()
                        )
                    })?
                    .trim(),
            ),
        };
        manifests::created_devices(&system, config.clone())?
    };
    let (kernel_path, ramdisk_path) = manifests::domain_images(&config, &image_dirs())?;
    let kernel = std::fs::read(&kernel_path)
        .with_context(|| format!("cannot read {}", kernel_path.display()))?;
    // A bzImage (Debian's /boot/vmlinuz-*) is taken as it is: its ELF vmlinux is sent.
    let at = |why: String| {
        anyhow::anyhow!(
            "{}:{}: key `kernel`: {}: {why}",
            file.display(),
            config.kernel_line,
            kernel_path.display()
        )
    };
    let kernel = if bzimage::is_bzimage(&kernel) {
        let vmlinux = bzimage::extract_vmlinux(&kernel).map_err(|e| at(format!("{e:#}")))?;
        println!(
            "Using the ELF vmlinux of bzImage {} ({}, {} bytes)",
            kernel_path.display(),
            vmlinux.compression,
            vmlinux.elf.len()
        );
        vmlinux.elf
    } else {
        manifests::pvh_entry_point(&kernel)
            .map_err(|defect| at(format!("not a PVH ELF image nor a bzImage: {defect}")))?;
        kernel
    };
    let ramdisk = match &ramdisk_path {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        None => None,
    };
    let plan = CreatePlan {
        name: config.name.clone(),
        memory_mib: config.memory_mib,
        vcpus: config.vcpus,
        cmdline: config.cmdline.clone(),
        kernel_bytes: kernel.len() as u64,
        ramdisk_bytes: ramdisk.as_ref().map(|r| r.len() as u64),
        on_poweroff: action(config.on_poweroff),
        on_reboot: action(config.on_reboot),
        on_crash: action(config.on_crash),
        devices,
    };
    channel.expect(&Request::CreateBegin(plan))?;
    let images = kernel.iter().chain(ramdisk.iter().flatten()).copied();
    let all: Vec<u8> = images.collect();
    for (i, piece) in all.chunks(DATA_CHUNK).enumerate() {
        let sent = channel.expect(&Request::CreateData {
            offset: (i * DATA_CHUNK) as u64,
            bytes: piece.to_vec(),
        });
        if let Err(e) = sent {
            let _ = channel.ask(&Request::CreateAbort);
            return Err(e);
        }
    }
    match channel.expect(&Request::CreateEnd)? {
        Response::Created { domid } => {
            println!("domain {} created as domain {domid}", config.name);
            Ok(())
        }
        other => bail!("unexpected answer to create: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn console_takes_a_domain_and_the_attach_socket() {
        let cli = Cli::try_parse_from(["xl", "--attach-socket", "/tmp/a.sock", "console", "linux"])
            .unwrap();
        assert_eq!(cli.attach_socket, Some(PathBuf::from("/tmp/a.sock")));
        assert!(matches!(cli.command, Command::Console { ref domain } if domain == "linux"));
        assert!(Cli::try_parse_from(["xl", "console"]).is_err());
        assert!(Cli::try_parse_from(["xl", "--console-socket", "/x", "console", "linux"]).is_err());
        assert!(default_attach_socket().ends_with("target/xtask/attach.sock"));
    }
}
