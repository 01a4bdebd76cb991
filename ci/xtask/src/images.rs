//! Builds the bare-metal images (the microvisor and the domain images) with a child cargo.

use anyhow::{bail, Context, Result};

use crate::workspace::Workspace;

/// The packages whose binaries are booted: the microvisor and the domain images.
pub const IMAGE_PACKAGES: &[&str] = &[
    "microvisor",
    "hello",
    "xenstore-stub",
    "console-backend",
    "blkback",
    "netback",
];
/// Features that turn on the image binary of a package whose library is a host crate.
const IMAGE_FEATURES: &[&str] = &["blkback/domain", "netback/domain"];

/// `cargo build --release -p microvisor -p hello ... --features blkback/domain`, output streamed to the terminal.
pub fn build(workspace: &Workspace) -> Result<()> {
    let mut command = workspace.cargo_command();
    command.args(["build", "--release"]);
    for package in IMAGE_PACKAGES {
        command.args(["-p", package]);
    }
    for feature in IMAGE_FEATURES {
        command.args(["--features", feature]);
    }
    let status = command
        .status()
        .with_context(|| format!("could not start `{}`", workspace.cargo.to_string_lossy()))?;
    if !status.success() {
        bail!("building the images failed ({status}): fix the compile errors shown above");
    }
    let kernel = workspace.microvisor_image();
    if !kernel.is_file() {
        bail!(
            "the build succeeded but {} is missing: the `microvisor` package must build a binary named `microvisor`",
            kernel.display()
        );
    }
    Ok(())
}
