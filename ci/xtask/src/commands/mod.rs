//! The subcommands of `cargo xtask`.

pub mod bench;
pub mod build;
pub mod linux;
pub mod run;
pub mod soak;
pub mod test;

use std::path::Path;

use anyhow::Result;

use crate::qemu::Machine;
use crate::serial::{self, Capture, Watch};
use crate::system::PackedSystem;
use crate::workspace::Workspace;

/// How the machine for one boot differs from the standard one.
pub struct MachineOptions {
    pub cpus: u32,
    pub memory_mib: u32,
    /// The microvisor's command line.
    pub cmdline: Option<String>,
    /// QEMU's `-cpu` model, if not the standard SVM-capable one.
    pub cpu_model: Option<String>,
    /// More QEMU arguments (devices).
    pub extra_args: Vec<std::ffi::OsString>,
    /// The IOMMU device, if not `intel-iommu`.
    pub iommu: Option<String>,
    /// One host thread per emulated CPU (see [`Machine::multi_threaded_tcg`]).
    pub multi_threaded_tcg: bool,
}

impl MachineOptions {
    pub fn standard(cpus: u32, memory_mib: u32) -> Self {
        Self {
            cpus,
            memory_mib,
            cmdline: None,
            cpu_model: None,
            extra_args: Vec::new(),
            iommu: None,
            multi_threaded_tcg: false,
        }
    }
}

/// PCI address of the disk `cargo xtask run` and the scenarios attach (the blkback domain's
/// `pci` in the systems that have one).
pub const DISK_PCI_SLOT: &str = "03.0";

/// QEMU arguments attaching the raw image `path` as a `virtio-blk-pci` at 00:03.0, behind
/// the IOMMU (`iommu_platform=on`): the passthrough disk a driver domain drives.
pub fn disk_args(path: &Path) -> Vec<std::ffi::OsString> {
    let mut drive = std::ffi::OsString::from("file=");
    drive.push(path);
    drive.push(",if=none,id=disk0,format=raw");
    vec![
        "-drive".into(),
        drive,
        "-device".into(),
        format!(
            "virtio-blk-pci,drive=disk0,disable-legacy=on,iommu_platform=on,addr={DISK_PCI_SLOT}"
        )
        .into(),
    ]
}

/// PCI address of the NIC `cargo xtask run` and the network scenarios attach (the netback
/// domain's `pci` in the systems that have one).
pub const NIC_PCI_SLOT: &str = "04.0";
/// The address QEMU's user network forwards host ports to: the first address its DHCP
/// server hands out, which the guests of the default system take statically
/// (`guest.ip=10.0.2.15/24,10.0.2.2`).
pub const GUEST_ADDR: &str = "10.0.2.15";

/// A host port on 127.0.0.1 that QEMU forwards to a TCP port of [`GUEST_ADDR`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub host: u16,
    pub guest: u16,
}

impl std::str::FromStr for Forward {
    type Err = String;

    /// `HOST:GUEST`, two port numbers.
    fn from_str(text: &str) -> Result<Self, String> {
        let (host, guest) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}` is not HOST:GUEST (two port numbers)"))?;
        let port = |part: &str| {
            part.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("`{part}` in `{text}` is not a port number (1-65535)"))
        };
        Ok(Forward {
            host: port(host)?,
            guest: port(guest)?,
        })
    }
}

/// QEMU arguments attaching a `virtio-net-pci` NIC at 00:04.0, behind the IOMMU, on QEMU's
/// user network (10.0.2.0/24, gateway and DNS at 10.0.2.2/.3), with `forwards` from
/// 127.0.0.1: the passthrough NIC the netback domain bridges its guests to.
pub fn nic_args(forwards: &[Forward]) -> Vec<std::ffi::OsString> {
    let mut netdev = String::from("user,id=net0,net=10.0.2.0/24");
    for forward in forwards {
        netdev.push_str(&format!(
            ",hostfwd=tcp:127.0.0.1:{}-{GUEST_ADDR}:{}",
            forward.host, forward.guest
        ));
    }
    vec![
        "-netdev".into(),
        netdev.into(),
        "-device".into(),
        format!(
            "virtio-net-pci,netdev=net0,disable-legacy=on,iommu_platform=on,addr={NIC_PCI_SLOT}"
        )
        .into(),
    ]
}

/// PCI address of the management channel's virtio console (the control domain's `pci` in
/// the systems that have one).
pub const MGMT_PCI_SLOT: &str = "05.0";

/// QEMU arguments attaching a virtio console at 00:05.0, behind the IOMMU, whose port 0 is
/// a unix socket at `socket` (QEMU listens; `xl` connects): the management channel the
/// control domain serves.
pub fn mgmt_args(socket: &Path) -> Vec<std::ffi::OsString> {
    // A stale socket of an earlier run would make QEMU's listen fail.
    let _ = std::fs::remove_file(socket);
    let mut chardev = std::ffi::OsString::from("socket,id=mgmt,server=on,wait=off,path=");
    chardev.push(socket);
    vec![
        "-chardev".into(),
        chardev,
        "-device".into(),
        format!("virtio-serial-pci,disable-legacy=on,iommu_platform=on,addr={MGMT_PCI_SLOT}")
            .into(),
        "-device".into(),
        "virtconsole,chardev=mgmt".into(),
    ]
}

/// QEMU arguments giving the machine a second serial port (COM2, I/O ports 0x2f8-0x2ff)
/// whose far end is a unix socket at `socket` (QEMU listens, one client at a time; output
/// while nobody is connected is dropped): the console domain's attach line, which `xl
/// console` connects to.
pub fn attach_args(socket: &Path) -> Vec<std::ffi::OsString> {
    // A stale socket of an earlier run would make QEMU's listen fail.
    let _ = std::fs::remove_file(socket);
    let mut chardev = std::ffi::OsString::from("socket,id=attach,server=on,wait=off,path=");
    chardev.push(socket);
    // The first `-serial` (stdio, in every machine's standard arguments) is COM1; this one
    // is COM2.
    vec![
        "-chardev".into(),
        chardev,
        "-serial".into(),
        "chardev:attach".into(),
    ]
}

/// A TCP port on 127.0.0.1 that nothing listens on just now (the kernel's pick).
pub fn free_port() -> Result<u16> {
    use anyhow::Context;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("could not find a free TCP port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// Creates a zero-filled (sparse) raw image of `size_mib` MiB at `path`, replacing any.
pub fn create_disk(path: &Path, size_mib: u32) -> Result<()> {
    use anyhow::Context;
    let file = std::fs::File::create(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    file.set_len(u64::from(size_mib) << 20)
        .with_context(|| format!("could not size {}", path.display()))?;
    Ok(())
}

/// Boots a packed system and watches it to the end.
pub fn boot(
    workspace: &Workspace,
    qemu: &Path,
    system: &PackedSystem,
    options: MachineOptions,
    watch: &Watch,
) -> Result<Capture> {
    let machine = Machine {
        qemu: qemu.to_path_buf(),
        kernel: workspace.microvisor_image(),
        modules: system.modules.clone(),
        cmdline: options.cmdline,
        cpus: options.cpus,
        memory_mib: options.memory_mib,
        cpu_model: options.cpu_model,
        extra_args: options.extra_args,
        iommu: options.iommu,
        multi_threaded_tcg: options.multi_threaded_tcg,
    };
    serial::run(machine.command()?, watch)
}

/// The last `count` lines of a capture, for a failure report.
pub fn tail(capture: &Capture, count: usize) -> impl Iterator<Item = &str> {
    let skip = capture.lines.len().saturating_sub(count);
    capture.lines[skip..].iter().map(|line| line.text.as_str())
}
