//! `cargo xtask run`: boots a system in QEMU with the serial console on the terminal.
//!
//! Exit status: 0 after the microvisor powered off; 1 after a microvisor panic or any other
//! end; 2 when the system manifest is invalid (QEMU is not started); 124 when `--timeout` ran
//! out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::qemu::{self, Exit, STATUS_POWEROFF, STATUS_REFUSED};
use crate::serial::{Ending, Watch};
use crate::system;
use crate::workspace::Workspace;
use crate::{commands, images};

/// The system booted when no system file is given, relative to the workspace root.
pub const DEFAULT_SYSTEM: &str = "manifests/default/system.cfg";

/// Exit status after `--timeout` ran out (as timeout(1)).
pub const EXIT_TIMEOUT: u8 = 124;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The system manifest to boot [default: manifests/default/system.cfg in the workspace]
    pub system_file: Option<PathBuf>,
    /// Kill QEMU after this many seconds (exit status 124)
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Number of CPUs of the emulated machine
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub smp: u32,
    /// Memory of the emulated machine, in MiB
    #[arg(long, value_name = "MIB", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(64..))]
    pub memory: u32,
    /// The microvisor's command line
    #[arg(long, value_name = "TEXT")]
    pub cmdline: Option<String>,
    /// Use the images already built instead of running `cargo build` first
    #[arg(long)]
    pub no_build: bool,
    /// The raw disk image attached as the passthrough virtio-blk disk at PCI 00:03.0 (what
    /// the blkback domain serves guests their disks from); created zero-filled, of
    /// --disk-size MiB, if it does not exist [default: target/xtask/disk.img]
    #[arg(long, value_name = "FILE")]
    pub disk: Option<PathBuf>,
    /// Forward TCP port HOST on 127.0.0.1 to port GUEST of the guest at 10.0.2.15 on the
    /// passthrough NIC's network (QEMU's user network, reached through netback's bridge);
    /// repeatable
    #[arg(long = "forward", value_name = "HOST:GUEST", default_values = ["8080:80", "8007:7"])]
    pub forwards: Vec<commands::Forward>,
    /// Size in MiB of a disk image that --disk (or the default) creates
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_DISK_MIB, value_parser = clap::value_parser!(u32).range(1..))]
    pub disk_size: u32,
}

/// Size of the disk image `run` creates when there is none.
pub const DEFAULT_DISK_MIB: u32 = 256;

pub fn run(workspace: &Workspace, args: RunArgs) -> Result<ExitCode> {
    let system_file = args
        .system_file
        .unwrap_or_else(|| workspace.root.join(DEFAULT_SYSTEM));
    if !args.no_build {
        images::build(workspace)?;
    }
    let packed = system::pack(workspace, &system_file, &system::system_name(&system_file))?;
    let qemu = qemu::ensure_installed()?;
    let disk = args
        .disk
        .unwrap_or_else(|| workspace.xtask_dir().join("disk.img"));
    if !disk.exists() {
        if let Some(dir) = disk.parent() {
            std::fs::create_dir_all(dir)?;
        }
        commands::create_disk(&disk, args.disk_size)?;
        eprintln!(
            "xtask: created {} ({} MiB, zero-filled) as the passthrough disk at PCI 00:{}",
            disk.display(),
            args.disk_size,
            commands::DISK_PCI_SLOT
        );
    }
    let forwards = args.forwards;
    for forward in &forwards {
        eprintln!(
            "xtask: 127.0.0.1:{} forwards to port {} of {} (the passthrough NIC at PCI 00:{}, on QEMU's user network)",
            forward.host,
            forward.guest,
            commands::GUEST_ADDR,
            commands::NIC_PCI_SLOT
        );
    }
    if packed.control {
        // `xl create` checks a domain's disks and vifs against the system that runs.
        let recorded = workspace.xtask_dir().join("system");
        let absolute = system_file
            .canonicalize()
            .unwrap_or_else(|_| system_file.clone());
        std::fs::write(&recorded, absolute.display().to_string())
            .with_context(|| format!("could not write {}", recorded.display()))?;
        eprintln!(
            "xtask: the control domain's management channel is {} (PCI 00:{}), the serial console is shared on {}, COM2 (the console domain's attach line) is {}: in another terminal, `cargo run -q -p xl -- list`, `cargo run -q -p xl -- console NAME`",
            workspace.mgmt_socket().display(),
            commands::MGMT_PCI_SLOT,
            workspace.console_socket().display(),
            workspace.attach_socket().display()
        );
    }
    // What is typed on the terminal goes to the serial console (a line at a time, as the
    // terminal sends it).
    let watch = Watch {
        timeout: args.timeout.map(Duration::from_secs),
        echo: true,
        forward_stdin: true,
        console_socket: packed.control.then(|| workspace.console_socket()),
        ..Watch::default()
    };
    let capture = commands::boot(
        workspace,
        &qemu,
        &packed,
        commands::MachineOptions {
            cmdline: args.cmdline,
            extra_args: {
                let mut args = commands::disk_args(&disk);
                args.extend(commands::nic_args(&forwards));
                if packed.control {
                    args.extend(commands::mgmt_args(&workspace.mgmt_socket()));
                    args.extend(commands::attach_args(&workspace.attach_socket()));
                }
                args
            },
            ..commands::MachineOptions::standard(args.smp, args.memory)
        },
        &watch,
    )?;
    Ok(match capture.ending {
        Ending::Exited(Exit::Code(STATUS_POWEROFF)) => ExitCode::SUCCESS,
        Ending::Exited(Exit::Code(STATUS_REFUSED)) => {
            eprintln!("xtask: the microvisor refused to start on this machine (see its last line)");
            ExitCode::from(2)
        }
        Ending::Exited(exit) => {
            eprintln!("xtask: {}", exit.describe());
            ExitCode::FAILURE
        }
        Ending::TimedOut => {
            eprintln!("timeout after {} s", args.timeout.unwrap_or_default());
            ExitCode::from(EXIT_TIMEOUT)
        }
        Ending::Stopped => ExitCode::FAILURE,
    })
}
