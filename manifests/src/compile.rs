//! Compiling a system: the system file and its domain files become a [`SystemManifest`],
//! its `postcard` encoding and the list of images to pass as boot modules.
//!
//! Boot module 0 is the blob; module `i + 1` holds `images[i]`. The images are the domains'
//! kernels and ramdisks, in the order the domains name them (each domain's kernel, then its
//! ramdisk); domains that name the same file share one module.
//!
//! Checks across files: domain names are unique, no I/O port and no PCI function is given to
//! two domains, `xenstore_domain`, `console_domain` and `disk_backend` name listed domains
//! (the first two compiled to their indices), and the disks fit their backends and one
//! another (see `vbds`, which also hands the disks to the xenstore domain on its command
//! line). Whether a PCI function exists is only known on the machine: the microvisor checks
//! that when it builds the domain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use microvisor_abi::manifest::{SystemManifest, MANIFEST_VERSION, MAX_DOMAINS};

use crate::domain::{parse_domain_config, DomainConfig, ImageRef};
use crate::error::{ManifestError, Problem};
use crate::image::{check_kernel, check_ramdisk, resolve_image};
use crate::system::{parse_system_config, DomainRef, SystemConfig};
use crate::vbds::attach_disks;
use crate::vifs::attach_vifs;

/// A compiled system, ready to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledSystem {
    /// The manifest, decoded.
    pub manifest: SystemManifest,
    /// `postcard::to_allocvec(&manifest)`: boot module 0.
    pub blob: Vec<u8>,
    /// Boot module `i + 1` holds `images[i]`: a kernel ([`DomainSpec::image_module`]) or a
    /// ramdisk ([`DomainSpec::ramdisk_module`]).
    ///
    /// [`DomainSpec::image_module`]: microvisor_abi::manifest::DomainSpec::image_module
    /// [`DomainSpec::ramdisk_module`]: microvisor_abi::manifest::DomainSpec::ramdisk_module
    pub images: Vec<PathBuf>,
}

/// Reads `system_file` and every domain file it lists, checks them and their images, and
/// compiles the system. Images (kernels and ramdisks) named by a bare file name are also
/// looked for in `image_dirs`, in order.
///
/// # Errors
///
/// The first problem found, in the system file, a domain file or an image, with its file,
/// line and key.
pub fn compile_system(
    system_file: &Path,
    image_dirs: &[PathBuf],
) -> Result<CompiledSystem, ManifestError> {
    let (system, mut configs) = read_domains(system_file)?;
    check_io_ports_unshared(&configs)?;
    check_pci_unshared(&configs)?;
    let xenstore_domain = service_domain(system_file, system.xenstore_domain.as_ref(), &configs)?;
    let console_domain = service_domain(system_file, system.console_domain.as_ref(), &configs)?;
    let disk_backend = service_domain(system_file, system.disk_backend.as_ref(), &configs)?;
    attach_disks(&system, xenstore_domain, &mut configs)?;
    let net_backend = service_domain(system_file, system.net_backend.as_ref(), &configs)?;
    attach_vifs(&system, xenstore_domain, &mut configs)?;
    let control_domain = service_domain(system_file, system.control_domain.as_ref(), &configs)?;

    let mut modules = Modules::default();
    let mut manifest = SystemManifest {
        version: MANIFEST_VERSION,
        domains: heapless::Vec::new(),
        xenstore_domain,
        console_domain,
        disk_backend,
        net_backend,
        control_domain,
    };
    for config in &configs {
        let mut kernel_module = None;
        let mut ramdisk_module = None;
        for image in config.images() {
            let path = resolve_image(&image, image_dirs)?;
            if image.key == "kernel" {
                kernel_module = Some(modules.kernel(config, path)?);
            } else {
                ramdisk_module = Some(modules.ramdisk(&image, path)?);
            }
        }
        // `images()` always lists the kernel first.
        let kernel_module = kernel_module.unwrap_or_default();
        let too_many = || {
            let problem = Problem::TooManyDomains {
                count: configs.len(),
                max: MAX_DOMAINS,
            };
            ManifestError::new(system_file, None, Some("domains"), problem)
        };
        manifest
            .domains
            .push(config.to_spec(kernel_module, ramdisk_module)?)
            .map_err(|_| too_many())?;
    }

    let blob = postcard::to_allocvec(&manifest).map_err(|error| {
        ManifestError::new(
            system_file,
            None,
            None,
            Problem::Encode {
                reason: error.to_string(),
            },
        )
    })?;
    Ok(CompiledSystem {
        manifest,
        blob,
        images: modules.images,
    })
}

/// The images a system's domains name, as written and without looking for them: each
/// domain's `kernel`, then its `ramdisk`, in the order of `domains`. For a build tool that
/// makes some images only when a system needs them.
///
/// # Errors
///
/// As [`compile_system`], for the problems found by reading the files (not the images).
pub fn referenced_images(system_file: &Path) -> Result<Vec<ImageRef>, ManifestError> {
    let (_, configs) = read_domains(system_file)?;
    Ok(configs.iter().flat_map(DomainConfig::images).collect())
}

/// Reads `system_file` and every domain file it lists, and checks that the domain names are
/// unique: a clash is a mistake in the files, whatever the state of the images.
fn read_domains(system_file: &Path) -> Result<(SystemConfig, Vec<DomainConfig>), ManifestError> {
    let system = parse_system_config(system_file, &read_text(system_file, None)?)?;
    let mut configs: Vec<DomainConfig> = Vec::with_capacity(system.domains.len());
    for entry in &system.domains {
        let text = read_text(&entry.path, Some((system_file, entry.line)))?;
        let config = parse_domain_config(&entry.path, &text)?;
        if let Some(other) = configs.iter().find(|other| other.name == config.name) {
            let problem = Problem::DuplicateName {
                name: config.name.clone(),
                other: format!("{}:{}", other.file.display(), other.name_line),
            };
            return Err(ManifestError::new(
                &config.file,
                Some(config.name_line),
                Some("name"),
                problem,
            ));
        }
        configs.push(config);
    }
    Ok((system, configs))
}

/// The boot modules after the blob: one per distinct file, numbered from 1 in the order
/// first named.
#[derive(Default)]
struct Modules {
    images: Vec<PathBuf>,
    /// By the file's canonical path: its module, and whether it was checked as a kernel.
    by_file: HashMap<PathBuf, (u16, bool)>,
}

impl Modules {
    /// The module of `path`, added if new.
    fn module(&mut self, path: PathBuf) -> (u16, &mut bool) {
        let identity = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let images = &mut self.images;
        let (module, checked) = self.by_file.entry(identity).or_insert_with(|| {
            images.push(path);
            // At most two images per domain and MAX_DOMAINS domains, so the index fits.
            (u16::try_from(images.len()).unwrap_or(u16::MAX), false)
        });
        (*module, checked)
    }

    /// The module of a kernel, checked to be a PVH image the first time it is a kernel.
    fn kernel(&mut self, config: &DomainConfig, path: PathBuf) -> Result<u16, ManifestError> {
        let (module, checked) = self.module(path.clone());
        if !*checked {
            check_kernel(config, &path)?;
            *checked = true;
        }
        Ok(module)
    }

    /// The module of a ramdisk, checked to be readable.
    fn ramdisk(&mut self, image: &ImageRef, path: PathBuf) -> Result<u16, ManifestError> {
        check_ramdisk(image, &path)?;
        Ok(self.module(path).0)
    }
}

/// An I/O port belongs to one domain at most: the first range of a later domain that
/// overlaps a range of an earlier one is an error, in the later domain's file.
fn check_io_ports_unshared(configs: &[DomainConfig]) -> Result<(), ManifestError> {
    for (index, config) in configs.iter().enumerate() {
        for entry in &config.ioports {
            let taken = configs[..index].iter().find_map(|earlier| {
                let other = earlier.ioports.iter().find(|other| other.overlaps(entry))?;
                Some((earlier, other))
            });
            if let Some((earlier, other)) = taken {
                let problem = Problem::IoPortTaken {
                    found: format!("{:?}", entry.text),
                    other: format!(
                        "{:?} given to domain {:?} ({}:{})",
                        other.text,
                        earlier.name,
                        earlier.file.display(),
                        other.line
                    ),
                };
                return Err(ManifestError::new(
                    &config.file,
                    Some(entry.line),
                    Some("ioports"),
                    problem,
                ));
            }
        }
    }
    Ok(())
}

/// A PCI function belongs to one domain at most: the first function of a later domain that
/// an earlier one has is an error, in the later domain's file.
fn check_pci_unshared(configs: &[DomainConfig]) -> Result<(), ManifestError> {
    for (index, config) in configs.iter().enumerate() {
        for entry in &config.pci {
            let taken = configs[..index].iter().find_map(|earlier| {
                let other = earlier
                    .pci
                    .iter()
                    .find(|other| other.address == entry.address)?;
                Some((earlier, other))
            });
            if let Some((earlier, other)) = taken {
                let problem = Problem::PciTaken {
                    found: format!("{:?}", entry.text),
                    other: format!(
                        "domain {:?} as {:?} ({}:{})",
                        earlier.name,
                        other.text,
                        earlier.file.display(),
                        other.line
                    ),
                };
                return Err(ManifestError::new(
                    &config.file,
                    Some(entry.line),
                    Some("pci"),
                    problem,
                ));
            }
        }
    }
    Ok(())
}

/// The index in `configs` of the domain a system file key names, if it names one.
fn service_domain(
    system_file: &Path,
    named: Option<&DomainRef>,
    configs: &[DomainConfig],
) -> Result<Option<u8>, ManifestError> {
    let Some(named) = named else {
        return Ok(None);
    };
    let index = configs
        .iter()
        .position(|config| config.name == named.name)
        .and_then(|index| u8::try_from(index).ok());
    match index {
        Some(index) => Ok(Some(index)),
        None => {
            let known: Vec<&str> = configs.iter().map(|config| config.name.as_str()).collect();
            let problem = Problem::UnknownDomain {
                name: named.name.clone(),
                known: if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
            };
            Err(ManifestError::new(
                system_file,
                Some(named.line),
                Some(named.key),
                problem,
            ))
        }
    }
}

/// Reads a text file; `named_by` is the system file line that named it, if any, so that the
/// error points at the line to fix.
fn read_text(path: &Path, named_by: Option<(&Path, usize)>) -> Result<String, ManifestError> {
    std::fs::read_to_string(path).map_err(|error| {
        let problem = Problem::Read {
            path: path.to_owned(),
            error,
        };
        match named_by {
            Some((system_file, line)) => {
                ManifestError::new(system_file, Some(line), Some("domains"), problem)
            }
            None => ManifestError::new(path, None, None, problem),
        }
    })
}

/// The device-table entries of `config`, a domain `xl create` makes on a running system
/// booted from `system_file`, checked as the compiler checks a system's disks and vifs (each
/// has a backend of the system that passes its target through; no writable slice overlaps
/// another disk of the system; MACs are unique), with `config` in place of a boot domain of
/// the same name. Returned in the device table's encoding, `vbds=<table> vifs=<table>`
/// (either part absent when empty), for the xenstore domain's run-time table.
///
/// Domains created earlier by `xl create` are not in the system file and are not checked
/// against.
///
/// # Errors
///
/// The first problem, with its file, line and key.
pub fn created_devices(system_file: &Path, config: DomainConfig) -> Result<String, ManifestError> {
    use service_common::devices::{decode_vbds, decode_vifs, VBDS_KEY, VIFS_KEY};
    let (system, mut configs) = read_domains(system_file)?;
    configs.retain(|other| other.name != config.name);
    let name = config.name.clone();
    configs.push(config);
    let xenstore_domain = service_domain(system_file, system.xenstore_domain.as_ref(), &configs)?;
    attach_disks(&system, xenstore_domain, &mut configs)?;
    attach_vifs(&system, xenstore_domain, &mut configs)?;
    let Some(store) = xenstore_domain.and_then(|index| configs.get(usize::from(index))) else {
        return Ok(String::new());
    };
    let mut words = Vec::new();
    for word in store.cmdline.split_whitespace() {
        if let Some(table) = word.strip_prefix(&format!("{VBDS_KEY}=")) {
            let mine: Vec<_> = decode_vbds(table)
                .unwrap_or_default()
                .into_iter()
                .filter(|vbd| vbd.frontend == name)
                .collect();
            if !mine.is_empty() {
                words.push(format!(
                    "{VBDS_KEY}={}",
                    service_common::devices::encode_vbds(&mine)
                ));
            }
        } else if let Some(table) = word.strip_prefix(&format!("{VIFS_KEY}=")) {
            let mine: Vec<_> = decode_vifs(table)
                .unwrap_or_default()
                .into_iter()
                .filter(|vif| vif.frontend == name)
                .collect();
            if !mine.is_empty() {
                words.push(format!(
                    "{VIFS_KEY}={}",
                    service_common::devices::encode_vifs(&mine)
                ));
            }
        }
    }
    Ok(words.join(" "))
}
