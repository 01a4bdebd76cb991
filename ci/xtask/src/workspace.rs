//! Where things are: the workspace root, the cargo binary to run child builds with, and the
//! target directory those builds write to (which honours `CARGO_TARGET_DIR` and cargo's
//! `build.target-dir`, because cargo itself is asked).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The workspace this xtask belongs to and the directories derived from it.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// The directory holding the workspace's `Cargo.toml`.
    pub root: PathBuf,
    /// The cargo binary that started us (`$CARGO`), or `cargo` from `PATH`.
    pub cargo: OsString,
    /// cargo's target directory for this workspace.
    pub target_dir: PathBuf,
}

impl Workspace {
    /// Finds the workspace root from this crate's location and asks cargo for the target
    /// directory.
    pub fn locate() -> Result<Self> {
        let root = workspace_root();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let target_dir = query_target_dir(&root, &cargo)?;
        Ok(Self {
            root,
            cargo,
            target_dir,
        })
    }

    /// A `cargo` command that runs in the workspace root.
    pub fn cargo_command(&self) -> Command {
        let mut command = Command::new(&self.cargo);
        command.current_dir(&self.root);
        command
    }

    /// Where `cargo build --release` puts the bare-metal images; the manifests' image directory.
    pub fn release_dir(&self) -> PathBuf {
        self.target_dir.join("release")
    }

    /// The microvisor's Multiboot image.
    pub fn microvisor_image(&self) -> PathBuf {
        self.release_dir().join("microvisor")
    }

    /// Scratch space of this tool: packed manifests and scenario logs.
    pub fn xtask_dir(&self) -> PathBuf {
        self.target_dir.join("xtask")
    }

    /// The unix socket `cargo xtask run` gives the control domain's management channel, and
    /// where `xl` looks for it by default.
    pub fn mgmt_socket(&self) -> PathBuf {
        self.xtask_dir().join("mgmt.sock")
    }

    /// The unix socket where `cargo xtask run` shares the serial console (COM1).
    pub fn console_socket(&self) -> PathBuf {
        self.xtask_dir().join("console.sock")
    }

    /// The unix socket of the second serial port (COM2), the console domain's attach line:
    /// where `xl console` connects by default.
    pub fn attach_socket(&self) -> PathBuf {
        self.xtask_dir().join("attach.sock")
    }

    /// Where `cargo xtask linux` keeps Debian's kernel and the initramfs built for it.
    pub fn linux_dir(&self) -> PathBuf {
        self.target_dir.join("linux")
    }

    /// Where the full serial log of a scenario is kept.
    pub fn scenario_log(&self, scenario: &str) -> PathBuf {
        self.xtask_dir()
            .join("logs")
            .join(format!("{scenario}.log"))
    }

    /// The QEMU test scenarios.
    pub fn scenarios_dir(&self) -> PathBuf {
        self.root.join("ci").join("scenarios")
    }
}

/// The workspace root: two levels above this crate (`ci/xtask`).
pub fn workspace_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate_dir.to_path_buf())
}

fn query_target_dir(root: &Path, cargo: &OsString) -> Result<PathBuf> {
    let output = Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not run `{} metadata`", cargo.to_string_lossy()))?;
    if !output.status.success() {
        bail!(
            "`cargo metadata` failed ({}) in {}: fix the workspace's Cargo.toml first",
            output.status,
            root.display()
        );
    }
    target_dir_from_metadata(&output.stdout)
}

/// Reads `target_directory` out of `cargo metadata --format-version 1` output.
pub fn target_dir_from_metadata(json: &[u8]) -> Result<PathBuf> {
    let metadata: serde_json::Value = serde_json::from_slice(json)
        .context("`cargo metadata` printed something that is not JSON")?;
    let Some(dir) = metadata
        .get("target_directory")
        .and_then(|value| value.as_str())
    else {
        bail!("`cargo metadata` output has no `target_directory`");
    };
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_holds_the_workspace_manifest_and_this_crate() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file());
        assert!(root.join("ci").join("xtask").join("Cargo.toml").is_file());
    }

    #[test]
    fn reads_target_directory_from_metadata() {
        let json = br#"{"packages":[],"target_directory":"/some/where/target","version":1}"#;
        assert_eq!(
            target_dir_from_metadata(json).unwrap(),
            PathBuf::from("/some/where/target")
        );
        assert!(target_dir_from_metadata(br#"{"version":1}"#).is_err());
        assert!(target_dir_from_metadata(b"not json").is_err());
    }
}
