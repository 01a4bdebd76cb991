//! Packs a system for booting: compiles the system manifest with the `manifests` crate, writes
//! the blob next to the other scratch files, and lists the boot modules in order (module 0 is
//! the blob, module i+1 the image of `images[i]`).
//!
//! Images are looked for in `<target>/release`, where the build puts this tree's own, and,
//! when a domain names `debian-vmlinux` or `debian-initramfs`, in `<target>/linux`, where
//! they are made first if they are not there yet (see `linux`).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::linux;
use crate::workspace::Workspace;

/// The manifest was rejected: the user must fix the file. `cargo xtask run` exits with status 2.
#[derive(Debug)]
pub struct ManifestRejected(pub manifests::ManifestError);

impl fmt::Display for ManifestRejected {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The details are the source, so that `{:#}` prints them once.
        formatter.write_str("invalid system manifest")
    }
}

impl std::error::Error for ManifestRejected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A compiled system, ready to boot.
#[derive(Clone, Debug)]
pub struct PackedSystem {
    /// The system's name: the name of the directory holding its system file.
    pub name: String,
    /// How many domains the manifest describes.
    pub domain_count: usize,
    /// Whether it has a control domain (`control_domain`): the machine then gets the
    /// management channel `xl` talks to ([`crate::commands::mgmt_args`]).
    pub control: bool,
    /// The boot modules in order: the manifest blob, then the domain images.
    pub modules: Vec<PathBuf>,
}

/// The name of a system: the directory its system file is in (`manifests/default/system.cfg`
/// is `default`).
pub fn system_name(system_file: &Path) -> String {
    system_file
        .canonicalize()
        .unwrap_or_else(|_| system_file.to_path_buf())
        .parent()
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "system".to_string())
}

/// Compiles `system_file` against the images in `<target>/release` (and `<target>/linux` if
/// it needs the Linux guest's) and writes the blob to `<target>/xtask/<name>/manifest.bin`.
pub fn pack(workspace: &Workspace, system_file: &Path, name: &str) -> Result<PackedSystem> {
    if !system_file.is_file() {
        anyhow::bail!("system file {} does not exist", system_file.display());
    }
    let images = manifests::referenced_images(system_file).map_err(ManifestRejected)?;
    let mut image_dirs = vec![workspace.release_dir()];
    if needs_linux_images(&images) {
        image_dirs.push(linux::ensure(workspace)?.dir);
    }
    let compiled = manifests::compile_system(system_file, &image_dirs).map_err(ManifestRejected)?;
    let dir = workspace.xtask_dir().join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let blob_path = dir.join("manifest.bin");
    std::fs::write(&blob_path, &compiled.blob)
        .with_context(|| format!("could not write {}", blob_path.display()))?;
    let mut modules = vec![blob_path];
    modules.extend(compiled.images);
    Ok(PackedSystem {
        name: name.to_string(),
        domain_count: compiled.manifest.domains.len(),
        control: compiled.manifest.control_domain.is_some(),
        modules,
    })
}

/// Whether a domain names one of the Linux guest's images by its bare name (the only form
/// looked for in image directories).
pub fn needs_linux_images(images: &[manifests::ImageRef]) -> bool {
    images
        .iter()
        .filter_map(manifests::ImageRef::bare_name)
        .any(|name| linux::IMAGE_NAMES.contains(&name))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `system` compiles with no image directory up to looking for an image: every file was
    /// read and checked, and only a built or fetched image is missing.
    pub(crate) fn assert_valid_up_to_images(system: &Path) {
        match manifests::compile_system(system, &[]) {
            Err(error)
                if matches!(
                    error.problem,
                    manifests::Problem::KernelNotFound { .. }
                        | manifests::Problem::RamdiskNotFound { .. }
                ) => {}
            Err(error) => panic!("{}: {error}", system.display()),
            Ok(_) => panic!("{}: compiled without an image directory", system.display()),
        }
    }

    /// Every system file this crate boots (the default and demo systems, the scenarios and the
    /// benchmark's) is valid up to its images: with no image directory, compiling stops only
    /// at finding an image the build makes, which the manifest compiler looks for after
    /// reading and checking every file. (So the Linux guest's images are not fetched here.)
    #[test]
    fn checked_in_systems_are_valid_manifests() {
        let root = crate::workspace::workspace_root();
        let mut systems = vec![
            root.join("ci/bench/hcbench/system.cfg"),
            root.join("manifests/default/system.cfg"),
            root.join("manifests/demo/system.cfg"),
        ];
        for scenario in crate::scenario::load_all(&root.join("ci/scenarios")).unwrap() {
            systems.push(scenario.system_file());
        }
        for system in systems {
            assert_valid_up_to_images(&system);
        }
    }

    #[test]
    fn only_systems_naming_the_linux_images_need_them() {
        let root = crate::workspace::workspace_root();
        let images = |system: &str| manifests::referenced_images(&root.join(system)).unwrap();
        assert!(needs_linux_images(&images("manifests/default/system.cfg")));
        assert!(!needs_linux_images(&images("manifests/demo/system.cfg")));
        let image = |key, path: &str| manifests::ImageRef {
            file: PathBuf::from("d.cfg"),
            key,
            path: PathBuf::from(path),
            line: 1,
        };
        assert!(needs_linux_images(&[image("ramdisk", "debian-initramfs")]));
        assert!(!needs_linux_images(&[image(
            "kernel",
            "boot/debian-vmlinux"
        )]));
        assert!(!needs_linux_images(&[]));
    }

    #[test]
    fn system_is_named_after_its_directory() {
        assert_eq!(
            system_name(Path::new("manifests/default/system.cfg")),
            "default"
        );
        assert_eq!(
            system_name(Path::new("/x/ci/scenarios/scrub/system.cfg")),
            "scrub"
        );
    }
}
