//! The system file (`system.cfg`, xl.cfg syntax): which domains boot.
//!
//! `domains`, required: a list of domain files, relative to the system file's directory, at
//! most [`MAX_DOMAINS`]. An empty list is a system of the microvisor alone.
//!
//! `xenstore_domain` and `console_domain`, optional: the name of the listed domain that
//! serves xenstore, and of the one that serves the console (the same domain may do both).
//!
//! `disk_backend`, optional: the name of the listed driver domain that serves the disks
//! (`disk`) that do not name their own `backend=`.
//!
//! `net_backend`, optional: the same for the network interfaces (`vif`): the listed driver
//! domain that bridges those that do not name their own `backend=`.
//!
//! `control_domain`, optional: the name of the listed domain that runs the toolstack (the
//! control domain `xl` talks to). The microvisor gives it, and only it, the domain-control
//! operations; a system with one stays up once its guests are gone (more can be created).
//!
//! The names are checked against the domain files when the system is compiled.

use std::path::{Path, PathBuf};

use microvisor_abi::manifest::MAX_DOMAINS;

use crate::error::{ManifestError, Problem};
use crate::syntax::{self, Setting};
use crate::table::Table;

/// The keys a system file may set.
pub const SYSTEM_KEYS: &[&str] = &[
    "domains",
    "xenstore_domain",
    "console_domain",
    "disk_backend",
    "net_backend",
    "control_domain",
];

/// A system file, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemConfig {
    pub file: PathBuf,
    pub domains: Vec<DomainEntry>,
    /// The domain that serves xenstore (`xenstore_domain`), if any.
    pub xenstore_domain: Option<DomainRef>,
    /// The domain that serves the console (`console_domain`), if any.
    pub console_domain: Option<DomainRef>,
    /// The driver domain that serves the disks that name no backend (`disk_backend`), if any.
    pub disk_backend: Option<DomainRef>,
    /// The driver domain that serves the vifs that name no backend (`net_backend`), if any.
    pub net_backend: Option<DomainRef>,
    /// The control domain (`control_domain`), if any.
    pub control_domain: Option<DomainRef>,
}

/// A domain named by a system file key (`xenstore_domain`, `console_domain`,
/// `disk_backend`): the name as
/// written and the line, for messages. Resolved by [`crate::compile_system`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRef {
    pub key: &'static str,
    pub name: String,
    pub line: usize,
}

/// One entry of `domains`: the domain file (joined to the system file's directory) and the
/// line of the system file that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainEntry {
    pub path: PathBuf,
    pub line: usize,
}

/// Parses and validates the text of a system file. `file` is used in messages and to
/// resolve the domain files; no file is read.
///
/// # Errors
///
/// The first syntax error, unknown or missing key, or invalid entry.
pub fn parse_system_config(file: &Path, text: &str) -> Result<SystemConfig, ManifestError> {
    let settings = syntax::parse_settings(file, text)?;
    let mut table = Table::new(file, settings, SYSTEM_KEYS, |_| false)?;
    let domains = table.require(
        "domains",
        " (write domains = [] for a system of no domains)",
    )?;
    const EXPECTED: &str = "a list of domain files";
    let items = domains.list(file, EXPECTED)?;
    if items.len() > MAX_DOMAINS {
        let problem = Problem::TooManyDomains {
            count: items.len(),
            max: MAX_DOMAINS,
        };
        return Err(domains.error(file, problem));
    }
    let directory = file.parent().unwrap_or(Path::new(""));
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        if item.text.is_empty() {
            let problem = Problem::Invalid {
                expected: "a domain file".into(),
                found: "\"\"".into(),
            };
            return Err(ManifestError::new(
                file,
                Some(item.line),
                Some("domains"),
                problem,
            ));
        }
        entries.push(DomainEntry {
            path: directory.join(&item.text),
            line: item.line,
        });
    }
    Ok(SystemConfig {
        file: file.to_owned(),
        domains: entries,
        xenstore_domain: domain_ref(file, table.take("xenstore_domain"), "xenstore_domain")?,
        console_domain: domain_ref(file, table.take("console_domain"), "console_domain")?,
        disk_backend: domain_ref(file, table.take("disk_backend"), "disk_backend")?,
        net_backend: domain_ref(file, table.take("net_backend"), "net_backend")?,
        control_domain: domain_ref(file, table.take("control_domain"), "control_domain")?,
    })
}

fn domain_ref(
    file: &Path,
    setting: Option<Setting>,
    key: &'static str,
) -> Result<Option<DomainRef>, ManifestError> {
    let Some(setting) = setting else {
        return Ok(None);
    };
    let name = setting.string(file, "the name of a domain listed in `domains`")?;
    Ok(Some(DomainRef {
        key,
        name: name.to_owned(),
        line: setting.line,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_files_resolve_next_to_the_system_file() {
        let text = "domains = [\n  \"a.cfg\",\n  \"sub/b.cfg\",\n]\n";
        let system = parse_system_config(Path::new("top/system.cfg"), text).unwrap();
        assert_eq!(
            system.domains,
            vec![
                DomainEntry {
                    path: PathBuf::from("top/a.cfg"),
                    line: 2
                },
                DomainEntry {
                    path: PathBuf::from("top/sub/b.cfg"),
                    line: 3
                },
            ]
        );
        let bare = parse_system_config(Path::new("system.cfg"), "domains = ['a.cfg']").unwrap();
        assert_eq!(bare.domains[0].path, PathBuf::from("a.cfg"));
    }

    #[test]
    fn an_empty_list_is_a_system_of_no_domains() {
        let system = parse_system_config(Path::new("s.cfg"), "domains = []").unwrap();
        assert!(system.domains.is_empty());
        assert_eq!(
            (system.xenstore_domain, system.console_domain),
            (None, None)
        );
    }

    #[test]
    fn service_domains_are_read_by_name() {
        let text = "domains = [ 'a.cfg' ]\nconsole_domain = 'io'\nxenstore_domain = \"io\"\n";
        let system = parse_system_config(Path::new("s.cfg"), text).unwrap();
        let io = |key, line| {
            Some(DomainRef {
                key,
                name: "io".into(),
                line,
            })
        };
        assert_eq!(system.xenstore_domain, io("xenstore_domain", 3));
        assert_eq!(system.console_domain, io("console_domain", 2));
        assert_eq!(system.disk_backend, None);
    }

    #[test]
    fn the_disk_backend_is_read_by_name() {
        let text = "domains = [ 'blk.cfg' ]\ndisk_backend = 'blkback'\n";
        let system = parse_system_config(Path::new("s.cfg"), text).unwrap();
        assert_eq!(
            system.disk_backend,
            Some(DomainRef {
                key: "disk_backend",
                name: "blkback".into(),
                line: 2,
            })
        );
        let message = parse_system_config(Path::new("s.cfg"), "domains = []\ndisk_backend = []\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "s.cfg:2: key `disk_backend`: expected the name of a domain listed in `domains`, found a list"
        );
    }
}
