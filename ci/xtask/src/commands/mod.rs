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
        Self { cpus, memory_mib, cmdline: None, cpu_model: None, extra_args: Vec::new(), iommu: None, multi_threaded_tcg: false }
    }
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
