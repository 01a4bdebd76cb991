//! The system file (`system.cfg`, xl.cfg syntax): which domains boot.
//!
//! One key, `domains`, required: a list of domain files, relative to the system file's
//! directory, at most [`MAX_DOMAINS`]. An empty list is a system of the microvisor alone.

use std::path::{Path, PathBuf};

use microvisor_abi::manifest::MAX_DOMAINS;

use crate::error::{ManifestError, Problem};
use crate::syntax;
use crate::table::Table;

/// The keys a system file may set.
pub const SYSTEM_KEYS: &[&str] = &["domains"];

/// A system file, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemConfig {
    pub file: PathBuf,
    pub domains: Vec<DomainEntry>,
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
    })
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
    }
}
