//! `cargo xtask build`: the bare-metal images.

use anyhow::Result;

use crate::images;
use crate::workspace::Workspace;

pub fn build(workspace: &Workspace) -> Result<()> {
    images::build(workspace)?;
    eprintln!("xtask: images are in {}", workspace.release_dir().display());
    Ok(())
}
