//! The system's disks: each disk's backend found and checked, the disks checked against one
//! another, and the device table handed to the xenstore domain, which tells every backend
//! what to serve and every frontend what it gets.
//!
//! The table is [`service_common::devices`]' encoding of all the disks of all the domains,
//! in the order of `domains` and then of each `disk` list, appended to the xenstore
//! domain's command line as ` vbds=<table>` (without the space if the command line was
//! empty). A system without disks compiles as if this module did not exist.
//!
//! Checks, each an error on the disk's line (key `disk`) unless said otherwise:
//! - a system with disks has a `xenstore_domain` (else an error on that key of the system
//!   file);
//! - each disk has a backend: its `backend=`, or the system's `disk_backend`;
//! - the backend is a domain of the system, and not the disk's own domain;
//! - the disk's target is in the backend's `pci`;
//! - two disks on the same disk of the same backend do not overlap if either is writable
//!   (the later one is at fault; a whole disk overlaps every slice of it);
//! - the xenstore domain's command line, table included, fits (the first disk whose entry
//!   does not fit is at fault).

use microvisor_abi::manifest::PciAddress;
use service_common::devices::{encode_vbds, VbdSpec, VBDS_KEY};

use crate::disk::DiskEntry;
use crate::domain::{canonical_bdf, DomainConfig, MAX_CMDLINE_LEN};
use crate::error::{DiskDefect, ManifestError, Problem};
use crate::system::SystemConfig;

/// One disk and the domains at its two ends.
struct Served<'c> {
    frontend: &'c DomainConfig,
    disk: &'c DiskEntry,
    backend: &'c DomainConfig,
}

impl Served<'_> {
    fn error(&self, defect: DiskDefect) -> ManifestError {
        self.disk.error(&self.frontend.file, defect)
    }

    /// Its entry in the device table.
    fn spec(&self) -> VbdSpec {
        let (start, sectors) = self.disk.sectors();
        VbdSpec {
            frontend: self.frontend.name.clone(),
            vdev: self.disk.vdev,
            backend: self.backend.name.clone(),
            writable: self.disk.writable,
            device: canonical_bdf(self.disk.target),
            start,
            sectors,
        }
    }
}

/// Checks the disks of `configs` and appends the device table to the command line of the
/// xenstore domain (`configs[xenstore_domain]`). Changes nothing if no domain has disks.
///
/// # Errors
///
/// The first disk (in the order of the table) that fails a check of the module.
pub(crate) fn attach_disks(
    system: &SystemConfig,
    xenstore_domain: Option<u8>,
    configs: &mut [DomainConfig],
) -> Result<(), ManifestError> {
    let first = configs
        .iter()
        .find_map(|config| Some((config, config.disks.first()?)));
    let Some((first_config, first_disk)) = first else {
        return Ok(());
    };
    let Some(xenstore) = xenstore_domain.map(usize::from) else {
        let problem = Problem::DisksNeedXenstore {
            first: format!("{}:{}", first_config.file.display(), first_disk.line),
        };
        return Err(ManifestError::new(
            &system.file,
            None,
            Some("xenstore_domain"),
            problem,
        ));
    };
    let served = resolve_backends(system, configs)?;
    check_overlaps(&served)?;
    let cmdline = xenstore_cmdline(configs.get(xenstore), &served)?;
    if let Some(store) = configs.get_mut(xenstore) {
        store.cmdline = cmdline;
    }
    Ok(())
}

/// Every disk of every domain, in order, with its backend.
fn resolve_backends<'c>(
    system: &SystemConfig,
    configs: &'c [DomainConfig],
) -> Result<Vec<Served<'c>>, ManifestError> {
    let mut served = Vec::new();
    for frontend in configs {
        for disk in &frontend.disks {
            let error = |defect| disk.error(&frontend.file, defect);
            let (name, backend_text) = match (&disk.backend, &system.disk_backend) {
                (Some(name), _) => (name.as_str(), format!("backend {name:?}")),
                (None, Some(default)) => (
                    default.name.as_str(),
                    format!(
                        "backend {:?} (`disk_backend`, {}:{})",
                        default.name,
                        system.file.display(),
                        default.line
                    ),
                ),
                (None, None) => {
                    return Err(error(DiskDefect::NoBackend {
                        system: system.file.clone(),
                    }))
                }
            };
            let Some(backend) = configs.iter().find(|config| config.name == name) else {
                let known: Vec<&str> = configs.iter().map(|config| config.name.as_str()).collect();
                return Err(error(DiskDefect::UnknownBackend {
                    backend: backend_text,
                    known: known.join(", "),
                }));
            };
            if backend.name == frontend.name {
                return Err(error(DiskDefect::OwnBackend {
                    backend: backend_text,
                }));
            }
            if !backend.pci.iter().any(|entry| entry.address == disk.target) {
                return Err(error(DiskDefect::NotInBackend {
                    target: canonical_bdf(disk.target),
                    backend: backend_text,
                    file: backend.file.display().to_string(),
                    pci: pci_list(backend.pci.iter().map(|entry| entry.address)),
                }));
            }
            served.push(Served {
                frontend,
                disk,
                backend,
            });
        }
    }
    Ok(served)
}

/// A `pci` list in full form, as it would be written: `[ "0000:00:04.0" ]`, or `[]`.
fn pci_list(addresses: impl Iterator<Item = PciAddress>) -> String {
    let items: Vec<String> = addresses
        .map(|address| format!("{:?}", canonical_bdf(address)))
        .collect();
    if items.is_empty() {
        "[]".to_owned()
    } else {
        format!("[ {} ]", items.join(", "))
    }
}

/// No two disks share a byte of a backend's disk if either may write it.
fn check_overlaps(served: &[Served<'_>]) -> Result<(), ManifestError> {
    for (index, later) in served.iter().enumerate() {
        let clash = served[..index].iter().find(|earlier| {
            earlier.backend.name == later.backend.name
                && earlier.disk.overlaps(later.disk)
                && (earlier.disk.writable || later.disk.writable)
        });
        if let Some(earlier) = clash {
            return Err(later.error(DiskDefect::Overlap {
                other: format!(
                    "{:?} of domain {:?} ({}:{})",
                    earlier.disk.text,
                    earlier.frontend.name,
                    earlier.frontend.file.display(),
                    earlier.disk.line
                ),
                target: canonical_bdf(later.disk.target),
                backend: later.backend.name.clone(),
            }));
        }
    }
    Ok(())
}

/// The xenstore domain's command line with the table appended, if it fits.
fn xenstore_cmdline(
    store: Option<&DomainConfig>,
    served: &[Served<'_>],
) -> Result<String, ManifestError> {
    // `compile_system` found the xenstore domain among the configs.
    let (name, file, cmdline) = match store {
        Some(store) => (
            store.name.as_str(),
            store.file.display().to_string(),
            store.cmdline.as_str(),
        ),
        None => ("", String::new(), ""),
    };
    let separator = if cmdline.is_empty() { "" } else { " " };
    let prefix = format!("{cmdline}{separator}{VBDS_KEY}=");
    let specs: Vec<VbdSpec> = served.iter().map(Served::spec).collect();
    let full = format!("{prefix}{}", encode_vbds(&specs));
    if full.len() <= MAX_CMDLINE_LEN {
        return Ok(full);
    }
    // The first disk whose entry (after its `;`) takes the line past the limit.
    let mut length = prefix.len();
    for (index, (vbd, spec)) in served.iter().zip(&specs).enumerate() {
        length += usize::from(index > 0) + encode_vbds(std::slice::from_ref(spec)).len();
        if length > MAX_CMDLINE_LEN {
            return Err(vbd.error(DiskDefect::CmdlineFull {
                domain: name.to_owned(),
                file,
                length,
                max: MAX_CMDLINE_LEN,
            }));
        }
    }
    // Not reached: the entries add up to `full`.
    Ok(full)
}
