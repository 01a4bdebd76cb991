//! One domain's configuration file (`*.cfg`, xl.cfg syntax) read into a [`DomainConfig`].
//!
//! | key | required | value | default |
//! |---|---|---|---|
//! | `name` | yes | 1 to 31 of `A-Z a-z 0-9 _ . -`; not `microvisor` | |
//! | `type` | yes | `"pvh"` (`"pv"`, `"hvm"`: not supported yet) | |
//! | `kernel` | yes | path of a PVH ELF image (resolved by the compiler) | |
//! | `memory` | yes | MiB, 4 to 2048 | |
//! | `vcpus` | no | 1 to 8 | 1 |
//! | `cmdline` or `extra` | no | kernel command line, at most 511 bytes | empty |
//! | `on_poweroff` | no | `"destroy"`, `"restart"`, `"preserve"` | `"destroy"` |
//! | `on_reboot` | no | same | `"restart"` |
//! | `on_crash` | no | same | `"destroy"` |
//!
//! Reading a domain file touches no file system: the kernel is checked when the system is
//! compiled (see `compile`).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use microvisor_abi::manifest::{
    DomainSpec, DomainType, LifecycleAction, MAX_CMDLINE_BYTES, MAX_NAME_BYTES, MAX_VCPUS,
};

use crate::error::{ManifestError, Problem};
use crate::syntax::{self, Setting};
use crate::table::Table;
use crate::xl_keys::is_unsupported_xl_key;

/// The keys a domain file may set.
pub const DOMAIN_KEYS: &[&str] = &[
    "name",
    "type",
    "kernel",
    "memory",
    "vcpus",
    "cmdline",
    "extra",
    "on_poweroff",
    "on_reboot",
    "on_crash",
];

/// The name no domain may take.
pub const RESERVED_NAME: &str = "microvisor";
/// The longest domain name, in bytes (the ABI keeps one byte spare).
pub const MAX_NAME_LEN: usize = MAX_NAME_BYTES - 1;
/// The longest kernel command line, in bytes (the ABI keeps one byte for the final NUL).
pub const MAX_CMDLINE_LEN: usize = MAX_CMDLINE_BYTES - 1;
/// Memory bounds of one domain, in MiB.
pub const MEMORY_MIB_RANGE: RangeInclusive<u32> = 4..=2048;

/// A domain file, validated; the host-side form of a [`DomainSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    /// The file it was read from (as given), for messages.
    pub file: PathBuf,
    pub name: String,
    pub name_line: usize,
    pub kind: DomainType,
    /// The kernel path as written; see [`crate::compile_system`] for how it resolves.
    pub kernel: PathBuf,
    pub kernel_line: usize,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub cmdline: String,
    pub on_poweroff: LifecycleAction,
    pub on_reboot: LifecycleAction,
    pub on_crash: LifecycleAction,
}

impl DomainConfig {
    /// The manifest entry for this domain, its image being boot module `image_module`.
    ///
    /// # Errors
    ///
    /// None for a config from [`parse_domain_config`], which checks the lengths.
    pub fn to_spec(&self, image_module: u16) -> Result<DomainSpec, ManifestError> {
        // Both were checked when the file was read; an error still beats a panic.
        let too_long = |key, length, max| {
            ManifestError::new(
                &self.file,
                None,
                Some(key),
                Problem::TooLong { length, max },
            )
        };
        let name = self
            .name
            .as_str()
            .try_into()
            .map_err(|_| too_long("name", self.name.len(), MAX_NAME_LEN))?;
        let cmdline = self
            .cmdline
            .as_str()
            .try_into()
            .map_err(|_| too_long("cmdline", self.cmdline.len(), MAX_CMDLINE_LEN))?;
        Ok(DomainSpec {
            name,
            kind: self.kind,
            image_module,
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            cmdline,
            on_poweroff: self.on_poweroff,
            on_reboot: self.on_reboot,
            on_crash: self.on_crash,
        })
    }
}

/// Parses and validates the text of one domain file. `file` is used in messages only; no
/// file is read (the kernel is found and checked by [`crate::compile_system`]).
///
/// # Errors
///
/// The first syntax error, duplicate, unknown or missing key, or invalid value.
pub fn parse_domain_config(file: &Path, text: &str) -> Result<DomainConfig, ManifestError> {
    let settings = syntax::parse_settings(file, text)?;
    let mut table = Table::new(file, settings, DOMAIN_KEYS, is_unsupported_xl_key)?;

    let name = table.require("name", "")?;
    let kind = table.require(
        "type",
        " (xl's default is \"pv\", which is not supported: write type = \"pvh\")",
    )?;
    let kernel = table.require("kernel", "")?;
    let memory = table.require("memory", "")?;

    let kernel_path = kernel.string(file, "a path to a PVH kernel image")?;
    if kernel_path.is_empty() {
        return Err(kernel.invalid(file, "a path to a PVH kernel image"));
    }
    let vcpus = match table.take("vcpus") {
        Some(vcpus) => vcpus.integer_in(file, "an integer number of vCPUs", 1..=MAX_VCPUS, "")?,
        None => 1,
    };
    Ok(DomainConfig {
        file: file.to_owned(),
        name: domain_name(file, &name)?,
        name_line: name.line,
        kind: domain_type(file, &kind)?,
        kernel: PathBuf::from(kernel_path),
        kernel_line: kernel.line,
        memory_mib: memory_mib(file, &memory)?,
        vcpus,
        cmdline: command_line(file, table.take("cmdline"), table.take("extra"))?,
        on_poweroff: lifecycle(file, table.take("on_poweroff"), LifecycleAction::Destroy)?,
        on_reboot: lifecycle(file, table.take("on_reboot"), LifecycleAction::Restart)?,
        on_crash: lifecycle(file, table.take("on_crash"), LifecycleAction::Destroy)?,
    })
}

fn domain_name(file: &Path, setting: &Setting) -> Result<String, ManifestError> {
    const EXPECTED: &str = "a name of 1 to 31 characters from A-Z a-z 0-9 _ . -";
    let name = setting.string(file, EXPECTED)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed) {
        return Err(setting.invalid(file, EXPECTED));
    }
    if name == RESERVED_NAME {
        return Err(setting.error(file, Problem::ReservedName));
    }
    Ok(name.to_owned())
}

fn domain_type(file: &Path, setting: &Setting) -> Result<DomainType, ManifestError> {
    match setting.string(file, "\"pvh\"")? {
        "pvh" => Ok(DomainType::Pvh),
        found @ ("pv" | "hvm") => {
            let problem = Problem::NotSupportedYet {
                found: format!("{found:?}"),
                instead: "\"pvh\"",
            };
            Err(setting.error(file, problem))
        }
        _ => Err(setting.invalid(file, "\"pvh\"")),
    }
}

fn memory_mib(file: &Path, setting: &Setting) -> Result<u32, ManifestError> {
    setting.integer_in(file, "an integer number of MiB", MEMORY_MIB_RANGE, " MiB")
}

/// `cmdline` and `extra` both set the kernel command line (for PVH, xl treats them alike).
fn command_line(
    file: &Path,
    cmdline: Option<Setting>,
    extra: Option<Setting>,
) -> Result<String, ManifestError> {
    let setting = match (cmdline, extra) {
        (None, None) => return Ok(String::new()),
        (Some(cmdline), Some(extra)) => {
            let problem = Problem::CmdlineAndExtra {
                cmdline_line: cmdline.line,
            };
            return Err(extra.error(file, problem));
        }
        (Some(setting), None) | (None, Some(setting)) => setting,
    };
    let text = setting.string(file, "a quoted kernel command line")?;
    if text.len() > MAX_CMDLINE_LEN {
        return Err(setting.error(
            file,
            Problem::TooLong {
                length: text.len(),
                max: MAX_CMDLINE_LEN,
            },
        ));
    }
    if let Some(found) = text.chars().find(|c| c.is_control()) {
        return Err(setting.error(file, Problem::ControlCharacter { found }));
    }
    Ok(text.to_owned())
}

fn lifecycle(
    file: &Path,
    setting: Option<Setting>,
    default: LifecycleAction,
) -> Result<LifecycleAction, ManifestError> {
    const CHOICES: &str = "\"destroy\", \"restart\" or \"preserve\"";
    let Some(setting) = setting else {
        return Ok(default);
    };
    match setting.string(file, CHOICES)? {
        "destroy" => Ok(LifecycleAction::Destroy),
        "restart" => Ok(LifecycleAction::Restart),
        "preserve" => Ok(LifecycleAction::Preserve),
        found @ ("rename-restart" | "coredump-destroy" | "coredump-restart" | "soft-reset") => {
            let problem = Problem::NotSupportedYet {
                found: format!("{found:?}"),
                instead: CHOICES,
            };
            Err(setting.error(file, problem))
        }
        _ => Err(setting.invalid(file, CHOICES)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name = \"d\"\ntype = \"pvh\"\nkernel = \"k\"\nmemory = 4\n";

    fn parse(text: &str) -> Result<DomainConfig, ManifestError> {
        parse_domain_config(Path::new("d.cfg"), text)
    }

    #[test]
    fn a_minimal_file_takes_the_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.name, "d");
        assert_eq!((config.name_line, config.kernel_line), (1, 3));
        assert_eq!(config.kernel, PathBuf::from("k"));
        assert_eq!((config.memory_mib, config.vcpus), (4, 1));
        assert_eq!(config.cmdline, "");
        assert_eq!(config.on_poweroff, LifecycleAction::Destroy);
        assert_eq!(config.on_reboot, LifecycleAction::Restart);
        assert_eq!(config.on_crash, LifecycleAction::Destroy);
    }

    #[test]
    fn the_limits_themselves_are_allowed() {
        let name = "N".repeat(MAX_NAME_LEN);
        let cmdline = "c".repeat(MAX_CMDLINE_LEN);
        let text = format!(
            "name = '{name}'\ntype = 'pvh'\nkernel = '/k'\nmemory = 2048\nvcpus = 8\nextra = '{cmdline}'\n"
        );
        let config = parse(&text).unwrap();
        assert_eq!((config.memory_mib, config.vcpus), (2048, 8));
        let spec = config.to_spec(3).unwrap();
        assert_eq!(spec.name.as_str(), name);
        assert_eq!(spec.cmdline.as_str(), cmdline);
        assert_eq!(spec.image_module, 3);
    }

    #[test]
    fn names_may_use_dots_dashes_and_underscores() {
        let config = parse(&MINIMAL.replace("\"d\"", "\"net-back_0.1\"")).unwrap();
        assert_eq!(config.name, "net-back_0.1");
    }

    #[test]
    fn every_action_is_read() {
        let text = format!(
            "{MINIMAL}on_poweroff = 'preserve'\non_reboot = 'destroy'\non_crash = 'restart'\n"
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.on_poweroff, LifecycleAction::Preserve);
        assert_eq!(config.on_reboot, LifecycleAction::Destroy);
        assert_eq!(config.on_crash, LifecycleAction::Restart);
    }

    #[test]
    fn a_misspelt_key_is_reported_before_the_key_it_misses() {
        let text = MINIMAL.replace("memory", "memroy");
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("d.cfg:4: unknown key `memroy`"),
            "{message}"
        );
    }

    #[test]
    fn type_pv_is_not_supported_yet() {
        let message = parse(&MINIMAL.replace("\"pvh\"", "\"pv\""))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "d.cfg:2: key `type`: \"pv\" is not supported yet, use \"pvh\""
        );
    }

    #[test]
    fn every_unsupported_lifecycle_action_says_so() {
        for action in [
            "rename-restart",
            "coredump-destroy",
            "coredump-restart",
            "soft-reset",
        ] {
            let message = parse(&format!("{MINIMAL}on_reboot = '{action}'"))
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&format!(
                    "d.cfg:5: key `on_reboot`: \"{action}\" is not supported yet"
                )),
                "{message}"
            );
        }
    }
}
