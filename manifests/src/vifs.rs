//! The system's network interfaces: each vif's backend found and checked, the addresses
//! checked against one another, and the vif table handed to the xenstore domain, which
//! tells every backend what to bridge and every frontend what it gets.
//!
//! The table is [`service_common::devices`]' encoding of all the vifs of all the domains,
//! in the order of `domains` and then of each `vif` list, appended to the xenstore
//! domain's command line as ` vifs=<table>` (after the disks' `vbds=`). A system without
//! vifs compiles as if this module did not exist.
//!
//! Checks, each an error on the vif's line (key `vif`) unless said otherwise:
//! - a system with vifs has a `xenstore_domain` (else an error on that key of the system
//!   file);
//! - each vif has a backend: its `backend=`, or the system's `net_backend`;
//! - the backend is a domain of the system, and not the vif's own domain;
//! - no two vifs of the system have the same MAC (the later one is at fault);
//! - the xenstore domain's command line, table included, fits (the first vif whose entry
//!   does not fit is at fault).

use service_common::devices::{encode_vifs, VifSpec, VIFS_KEY};

use crate::domain::{DomainConfig, MAX_CMDLINE_LEN};
use crate::error::{ManifestError, Problem, VifDefect};
use crate::system::SystemConfig;
use crate::vif::VifEntry;

/// One vif and the domains at its two ends.
struct Served<'c> {
    frontend: &'c DomainConfig,
    vif: &'c VifEntry,
    backend: &'c DomainConfig,
}

impl Served<'_> {
    fn error(&self, defect: VifDefect) -> ManifestError {
        self.vif.error(&self.frontend.file, defect)
    }

    fn spec(&self) -> VifSpec {
        VifSpec {
            frontend: self.frontend.name.clone(),
            handle: self.vif.handle,
            backend: self.backend.name.clone(),
            mac: self.vif.mac(&self.frontend.name),
            bridge: self.vif.bridge.clone(),
        }
    }
}

/// Checks the vifs of `configs` and appends the vif table to the command line of the
/// xenstore domain. Changes nothing if no domain has vifs.
///
/// # Errors
///
/// The first vif (in the order of the table) that fails a check of the module.
pub(crate) fn attach_vifs(
    system: &SystemConfig,
    xenstore_domain: Option<u8>,
    configs: &mut [DomainConfig],
) -> Result<(), ManifestError> {
    let first = configs
        .iter()
        .find_map(|config| Some((config, config.vifs.first()?)));
    let Some((first_config, first_vif)) = first else {
        return Ok(());
    };
    let Some(xenstore) = xenstore_domain.map(usize::from) else {
        let problem = Problem::VifsNeedXenstore {
            first: format!("{}:{}", first_config.file.display(), first_vif.line),
        };
        return Err(ManifestError::new(
            &system.file,
            None,
            Some("xenstore_domain"),
            problem,
        ));
    };
    let served = resolve_backends(system, configs)?;
    check_macs(&served)?;
    let cmdline = xenstore_cmdline(configs.get(xenstore), &served)?;
    if let Some(store) = configs.get_mut(xenstore) {
        store.cmdline = cmdline;
    }
    Ok(())
}

fn resolve_backends<'c>(
    system: &SystemConfig,
    configs: &'c [DomainConfig],
) -> Result<Vec<Served<'c>>, ManifestError> {
    let mut served = Vec::new();
    for frontend in configs {
        for vif in &frontend.vifs {
            let error = |defect| vif.error(&frontend.file, defect);
            let (name, backend_text) = match (&vif.backend, &system.net_backend) {
                (Some(name), _) => (name.as_str(), format!("backend {name:?}")),
                (None, Some(default)) => (
                    default.name.as_str(),
                    format!(
                        "backend {:?} (`net_backend`, {}:{})",
                        default.name,
                        system.file.display(),
                        default.line
                    ),
                ),
                (None, None) => {
                    return Err(error(VifDefect::NoBackend {
                        system: system.file.clone(),
                    }))
                }
            };
            let Some(backend) = configs.iter().find(|config| config.name == name) else {
                let known: Vec<&str> = configs.iter().map(|config| config.name.as_str()).collect();
                return Err(error(VifDefect::UnknownBackend {
                    backend: backend_text,
                    known: known.join(", "),
                }));
            };
            if backend.name == frontend.name {
                return Err(error(VifDefect::OwnBackend {
                    backend: backend_text,
                }));
            }
            served.push(Served {
                frontend,
                vif,
                backend,
            });
        }
    }
    Ok(served)
}

/// No two vifs of the system share an address.
fn check_macs(served: &[Served<'_>]) -> Result<(), ManifestError> {
    for (index, later) in served.iter().enumerate() {
        let mac = later.vif.mac(&later.frontend.name);
        let clash = served[..index]
            .iter()
            .find(|earlier| earlier.vif.mac(&earlier.frontend.name) == mac);
        if let Some(earlier) = clash {
            return Err(later.error(VifDefect::MacTaken {
                mac: mac.to_string(),
                other: format!(
                    "vif {} of domain {:?} ({}:{})",
                    earlier.vif.handle,
                    earlier.frontend.name,
                    earlier.frontend.file.display(),
                    earlier.vif.line
                ),
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
    let (name, file, cmdline) = match store {
        Some(store) => (
            store.name.as_str(),
            store.file.display().to_string(),
            store.cmdline.as_str(),
        ),
        None => ("", String::new(), ""),
    };
    let separator = if cmdline.is_empty() { "" } else { " " };
    let prefix = format!("{cmdline}{separator}{VIFS_KEY}=");
    let specs: Vec<VifSpec> = served.iter().map(Served::spec).collect();
    let full = format!("{prefix}{}", encode_vifs(&specs));
    if full.len() <= MAX_CMDLINE_LEN {
        return Ok(full);
    }
    let mut length = prefix.len();
    for (index, (vif, spec)) in served.iter().zip(&specs).enumerate() {
        length += usize::from(index > 0) + encode_vifs(std::slice::from_ref(spec)).len();
        if length > MAX_CMDLINE_LEN {
            return Err(vif.error(VifDefect::CmdlineFull {
                domain: name.to_owned(),
                file,
                length,
                max: MAX_CMDLINE_LEN,
            }));
        }
    }
    Ok(full)
}
