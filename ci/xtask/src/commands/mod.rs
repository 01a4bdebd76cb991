//! The subcommands of `cargo xtask`.

pub mod bench;
pub mod build;
pub mod run;
pub mod test;

use std::path::Path;

use anyhow::Result;

use crate::qemu::Machine;
use crate::serial::{self, Capture, Watch};
use crate::system::PackedSystem;
use crate::workspace::Workspace;

/// Boots a packed system on the standard machine and watches it to the end.
pub fn boot(
    workspace: &Workspace,
    qemu: &Path,
    system: &PackedSystem,
    cpus: u32,
    memory_mib: u32,
    cmdline: Option<String>,
    cpu_model: Option<String>,
    extra_args: Vec<std::ffi::OsString>,
    watch: &Watch,
) -> Result<Capture> {
    let machine = Machine {
        qemu: qemu.to_path_buf(),
        kernel: workspace.microvisor_image(),
        modules: system.modules.clone(),
        cmdline,
        cpus,
        memory_mib,
        cpu_model,
        extra_args,
    };
    serial::run(machine.command()?, watch)
}

/// The last `count` lines of a capture, for a failure report.
pub fn tail(capture: &Capture, count: usize) -> impl Iterator<Item = &str> {
    let skip = capture.lines.len().saturating_sub(count);
    capture.lines[skip..].iter().map(|line| line.text.as_str())
}
