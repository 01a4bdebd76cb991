//! Compiling a system: the system file and its domain files become a [`SystemManifest`],
//! its `postcard` encoding and the list of images to pass as boot modules.
//!
//! Boot module 0 is the blob; module `i + 1` holds `images[i]`. Domains whose kernels are the
//! same file share one module.
//!
//! Checks across files: domain names are unique, no I/O port and no PCI function is given to
//! two domains, and `xenstore_domain` and `console_domain` name listed domains (compiled to
//! their indices). Whether a PCI function exists is only known on the machine: the
//! microvisor checks that when it builds the domain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use microvisor_abi::manifest::{SystemManifest, MANIFEST_VERSION, MAX_DOMAINS};

use crate::domain::{parse_domain_config, DomainConfig};
use crate::error::{ManifestError, Problem};
use crate::image::{check_kernel, resolve_kernel};
use crate::system::{parse_system_config, DomainRef};

/// A compiled system, ready to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledSystem {
    /// The manifest, decoded.
    pub manifest: SystemManifest,
    /// `postcard::to_allocvec(&manifest)`: boot module 0.
    pub blob: Vec<u8>,
    /// Boot module `i + 1` holds `images[i]`; [`DomainSpec::image_module`] is `i + 1`.
    ///
    /// [`DomainSpec::image_module`]: microvisor_abi::manifest::DomainSpec::image_module
    pub images: Vec<PathBuf>,
}

/// Reads `system_file` and every domain file it lists, checks them and their kernels, and
/// compiles the system. Kernels named by a bare file name are also looked for in
/// `image_dirs`, in order.
///
/// # Errors
///
/// The first problem found, in the system file, a domain file or a kernel image, with its
/// file, line and key.
pub fn compile_system(
    system_file: &Path,
    image_dirs: &[PathBuf],
) -> Result<CompiledSystem, ManifestError> {
    let system = parse_system_config(system_file, &read_text(system_file, None)?)?;

    // Read every domain file and check the names first: a clash is a mistake in the files,
    // whatever the state of the images.
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
    check_io_ports_unshared(&configs)?;
    check_pci_unshared(&configs)?;
    let xenstore_domain = service_domain(system_file, system.xenstore_domain.as_ref(), &configs)?;
    let console_domain = service_domain(system_file, system.console_domain.as_ref(), &configs)?;

    let mut images: Vec<PathBuf> = Vec::new();
    let mut modules: HashMap<PathBuf, u16> = HashMap::new();
    let mut manifest = SystemManifest {
        version: MANIFEST_VERSION,
        domains: heapless::Vec::new(),
        xenstore_domain,
        console_domain,
    };
    for config in &configs {
        let path = resolve_kernel(config, image_dirs)?;
        let identity = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let module = match modules.get(&identity) {
            Some(&module) => module,
            None => {
                check_kernel(config, &path)?;
                images.push(path);
                // At most MAX_DOMAINS images, so the index fits.
                let module = u16::try_from(images.len()).unwrap_or(u16::MAX);
                modules.insert(identity, module);
                module
            }
        };
        let too_many = || {
            let problem = Problem::TooManyDomains {
                count: configs.len(),
                max: MAX_DOMAINS,
            };
            ManifestError::new(system_file, None, Some("domains"), problem)
        };
        manifest
            .domains
            .push(config.to_spec(module)?)
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
        images,
    })
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
