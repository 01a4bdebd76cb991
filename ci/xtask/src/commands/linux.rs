//! `cargo xtask linux`: Debian's cloud kernel as a PVH vmlinux and a busybox initramfs, in
//! `<target>/linux` (fetched with the Debian package client the first time).

use anyhow::Result;
use clap::Args;

use crate::linux;
use crate::workspace::Workspace;

#[derive(Args, Debug)]
pub struct LinuxArgs {
    /// Fetch the packages and make the images again, even if they are there already
    #[arg(long)]
    pub refresh: bool,
}

pub fn linux(workspace: &Workspace, args: LinuxArgs) -> Result<()> {
    let images = if args.refresh {
        linux::fetch(&workspace.linux_dir())?
    } else {
        linux::ensure(workspace)?
    };
    println!("kernel    {}", images.version);
    println!("vmlinux   {}", images.vmlinux.display());
    println!("initramfs {}", images.initramfs.display());
    Ok(())
}
