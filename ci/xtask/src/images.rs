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
/// Images built by a cargo of their own, with the feature that turns their binary on: their
/// dependencies need features (serde's `alloc`, for the management channel's messages) that
/// must not reach the microvisor, which has no heap; one cargo unifies the features of
/// everything it builds.
const SEPARATE_IMAGES: &[(&str, &str)] = &[("control", "control/domain")];

/// `cargo build --release -p microvisor -p hello ... --features blkback/domain`, then one
/// cargo per [`SEPARATE_IMAGES`] entry, output streamed to the terminal.
pub fn build(workspace: &Workspace) -> Result<()> {
    let mut command = workspace.cargo_command();
    command.args(["build", "--release"]);
    for package in IMAGE_PACKAGES {
        command.args(["-p", package]);
    }
    for feature in IMAGE_FEATURES {
        command.args(["--features", feature]);
    }
    run(workspace, command)?;
    for (package, feature) in SEPARATE_IMAGES {
        let mut command = workspace.cargo_command();
        command.args(["build", "--release", "-p", package, "--features", feature]);
        run(workspace, command)?;
    }
    // The host's `xl`, which the scenarios with a control domain run.
    let mut command = workspace.cargo_command();
    command.args(["build", "--release", "-p", "xl"]);
    run(workspace, command)?;
    let kernel = workspace.microvisor_image();
    if !kernel.is_file() {
        bail!(
            "the build succeeded but {} is missing: the `microvisor` package must build a binary named `microvisor`",
            kernel.display()
        );
    }
    Ok(())
}

fn run(workspace: &Workspace, mut command: std::process::Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start `{}`", workspace.cargo.to_string_lossy()))?;
    if !status.success() {
        bail!("building the images failed ({status}): fix the compile errors shown above");
    }
    Ok(())
}
