//! One domain's configuration file (`*.cfg`, xl.cfg syntax) read into a [`DomainConfig`].
//!
//! | key | required | value | default |
//! |---|---|---|---|
//! | `name` | yes | 1 to 31 of `A-Z a-z 0-9 _ . -`; not `microvisor` | |
//! | `type` | yes | `"pvh"` (`"pv"`, `"hvm"`: not supported yet) | |
//! | `kernel` | yes | path of a PVH ELF image (resolved by the compiler) | |
//! | `ramdisk` | no | path of an initramfs, found like `kernel`; its own boot module | none |
//! | `memory` | yes | MiB, 4 to 2048 | |
//! | `vcpus` | no | 1 to 8 | 1 |
//! | `cmdline` or `extra` | no | kernel command line, at most 511 bytes | empty |
//! | `root` | no | root device; `root=<value> ` goes before the command line | none |
//! | `on_poweroff` | no | `"destroy"`, `"restart"`, `"preserve"` | `"destroy"` |
//! | `on_reboot` | no | same | `"restart"` |
//! | `on_crash` | no | same | `"destroy"` |
//! | `ioports` | no | list of `"START-END"` or `"PORT"`, hex, at most 8, no overlaps | none |
//! | `pci` | no | list of PCI functions `"[DDDD:]BB:DD.F"`, hex, at most 8, each once | none |
//! | `disk` | no | list of disk specifications in xl's syntax (see `disk`), at most 8, each vdev once | none |
//! | `vif` | no | list of network interface specifications in xl's syntax (see `vif`: `mac`, `bridge`, `backend`), at most 8 | none |
//!
//! Reading a domain file touches no file system: the kernel is checked when the system is
//! compiled (see `compile`).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use microvisor_abi::manifest::{
    DomainSpec, DomainType, IoPortRange, LifecycleAction, PciAddress, MAX_CMDLINE_BYTES,
    MAX_IOPORT_RANGES, MAX_NAME_BYTES, MAX_PCI_FUNCTIONS, MAX_VCPUS,
};

use crate::disk::{self, DiskEntry};
use crate::error::{ManifestError, PciPart, Problem};
use crate::syntax::{self, ListItem, Setting};
use crate::table::Table;
use crate::vif::{self, VifEntry};
use crate::xl_keys::is_unsupported_xl_key;

/// The keys a domain file may set.
pub const DOMAIN_KEYS: &[&str] = &[
    "name",
    "type",
    "kernel",
    "ramdisk",
    "memory",
    "vcpus",
    "root",
    "cmdline",
    "extra",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "ioports",
    "pci",
    "disk",
    "vif",
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
    /// The initramfs (`ramdisk`), if any: the path as written and its line. It resolves
    /// like the kernel.
    pub ramdisk: Option<(PathBuf, usize)>,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// The kernel command line: `cmdline` or `extra`, after `root=<root> ` if `root` is set.
    pub cmdline: String,
    pub on_poweroff: LifecycleAction,
    pub on_reboot: LifecycleAction,
    pub on_crash: LifecycleAction,
    /// The I/O port ranges opened to the domain (`ioports`), in file order.
    pub ioports: Vec<IoPortEntry>,
    /// The PCI functions passed through to the domain (`pci`), in file order.
    pub pci: Vec<PciEntry>,
    /// The virtual disks the domain sees (`disk`), in file order. They are not part of its
    /// [`DomainSpec`]: the compiler hands them to the xenstore domain (see `vbds`).
    pub disks: Vec<DiskEntry>,
    /// The network interfaces the domain sees (`vif`), in file order; handed to the
    /// xenstore domain like the disks (see `vifs`).
    pub vifs: Vec<VifEntry>,
}

/// One item of `ioports`: the range, the item as written and its line, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoPortEntry {
    pub range: IoPortRange,
    pub text: String,
    pub line: usize,
}

impl IoPortEntry {
    /// Whether the two ranges share a port.
    pub fn overlaps(&self, other: &IoPortEntry) -> bool {
        self.range.first <= other.range.last && other.range.first <= self.range.last
    }
}

/// One item of `pci`: the function, the item as written and its line, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciEntry {
    pub address: PciAddress,
    pub text: String,
    pub line: usize,
}

impl PciEntry {
    /// The function in full, as `lspci -D` writes it: `0000:00:03.0`.
    pub fn canonical(&self) -> String {
        canonical_bdf(self.address)
    }
}

/// A PCI function in full, as `lspci -D` writes it: `0000:00:03.0`.
pub(crate) fn canonical_bdf(address: PciAddress) -> String {
    let PciAddress {
        segment,
        bus,
        device,
        function,
    } = address;
    format!("{segment:04x}:{bus:02x}:{device:02x}.{function:x}")
}

/// An image a domain file names: its `kernel` or its `ramdisk`, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The domain file that names it.
    pub file: PathBuf,
    /// `"kernel"` or `"ramdisk"`.
    pub key: &'static str,
    /// The path as written.
    pub path: PathBuf,
    pub line: usize,
}

impl ImageRef {
    /// The name, if the path is a bare file name (no `/`): only such a name is also looked
    /// for in the image directories.
    pub fn bare_name(&self) -> Option<&str> {
        self.path.to_str().filter(|name| !name.contains('/'))
    }
}

impl DomainConfig {
    /// The images this domain names: its kernel, then its ramdisk if it has one.
    pub fn images(&self) -> Vec<ImageRef> {
        let image = |key, path: &PathBuf, line| ImageRef {
            file: self.file.clone(),
            key,
            path: path.clone(),
            line,
        };
        let mut images = vec![image("kernel", &self.kernel, self.kernel_line)];
        if let Some((path, line)) = &self.ramdisk {
            images.push(image("ramdisk", path, *line));
        }
        images
    }

    /// The manifest entry for this domain, its image being boot module `image_module` and
    /// its initramfs, if it has one, `ramdisk_module`.
    ///
    /// # Errors
    ///
    /// None for a config from [`parse_domain_config`], which checks the lengths.
    pub fn to_spec(
        &self,
        image_module: u16,
        ramdisk_module: Option<u16>,
    ) -> Result<DomainSpec, ManifestError> {
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
        let mut ioports = heapless::Vec::new();
        for entry in &self.ioports {
            ioports.push(entry.range).map_err(|_| {
                let problem = Problem::TooManyIoPortRanges {
                    count: self.ioports.len(),
                    max: MAX_IOPORT_RANGES,
                };
                ManifestError::new(&self.file, Some(entry.line), Some("ioports"), problem)
            })?;
        }
        let mut pci = heapless::Vec::new();
        for entry in &self.pci {
            pci.push(entry.address).map_err(|_| {
                let problem = Problem::TooManyPciFunctions {
                    count: self.pci.len(),
                    max: MAX_PCI_FUNCTIONS,
                };
                ManifestError::new(&self.file, Some(entry.line), Some("pci"), problem)
            })?;
        }
        Ok(DomainSpec {
            name,
            kind: self.kind,
            image_module,
            ramdisk_module,
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            cmdline,
            on_poweroff: self.on_poweroff,
            on_reboot: self.on_reboot,
            on_crash: self.on_crash,
            ioports,
            pci,
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
    let ramdisk = match table.take("ramdisk") {
        Some(setting) => {
            const EXPECTED: &str = "a path to an initramfs image";
            let path = setting.string(file, EXPECTED)?;
            if path.is_empty() {
                return Err(setting.invalid(file, EXPECTED));
            }
            Some((PathBuf::from(path), setting.line))
        }
        None => None,
    };
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
        ramdisk,
        memory_mib: memory_mib(file, &memory)?,
        vcpus,
        cmdline: command_line(
            file,
            table.take("cmdline"),
            table.take("extra"),
            table.take("root"),
        )?,
        on_poweroff: lifecycle(file, table.take("on_poweroff"), LifecycleAction::Destroy)?,
        on_reboot: lifecycle(file, table.take("on_reboot"), LifecycleAction::Restart)?,
        on_crash: lifecycle(file, table.take("on_crash"), LifecycleAction::Destroy)?,
        ioports: match table.take("ioports") {
            Some(setting) => io_ports(file, &setting)?,
            None => Vec::new(),
        },
        pci: match table.take("pci") {
            Some(setting) => pci_functions(file, &setting)?,
            None => Vec::new(),
        },
        disks: match table.take("disk") {
            Some(setting) => disk::disks(file, &setting)?,
            None => Vec::new(),
        },
        vifs: match table.take("vif") {
            Some(setting) => vif::vifs(file, &setting)?,
            None => Vec::new(),
        },
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

/// `cmdline` and `extra` both set the kernel command line (for PVH, xl treats them alike);
/// `root`, as in xl, puts `root=<root> ` before it.
fn command_line(
    file: &Path,
    cmdline: Option<Setting>,
    extra: Option<Setting>,
    root: Option<Setting>,
) -> Result<String, ManifestError> {
    let setting = match (cmdline, extra) {
        (Some(cmdline), Some(extra)) => {
            let problem = Problem::CmdlineAndExtra {
                cmdline_line: cmdline.line,
            };
            return Err(extra.error(file, problem));
        }
        (Some(setting), None) | (None, Some(setting)) => Some(setting),
        (None, None) => None,
    };
    let text = match &setting {
        Some(setting) => checked_text(file, setting, "a quoted kernel command line")?,
        None => "",
    };
    let Some(root) = root else {
        return Ok(text.to_owned());
    };
    const ROOT_EXPECTED: &str = "a root device, such as \"/dev/xvda1\"";
    let device = checked_text(file, &root, ROOT_EXPECTED)?;
    if device.is_empty() {
        return Err(root.invalid(file, ROOT_EXPECTED));
    }
    let full = if text.is_empty() {
        format!("root={device}")
    } else {
        format!("root={device} {text}")
    };
    if full.len() > MAX_CMDLINE_LEN {
        let problem = match &setting {
            Some(setting) => Problem::TooLongWithRoot {
                length: full.len(),
                max: MAX_CMDLINE_LEN,
                key: setting.key.clone(),
                line: setting.line,
            },
            None => Problem::TooLong {
                length: full.len(),
                max: MAX_CMDLINE_LEN,
            },
        };
        return Err(root.error(file, problem));
    }
    Ok(full)
}

/// A string setting that fits the command line on its own and holds no control character.
fn checked_text<'s>(
    file: &Path,
    setting: &'s Setting,
    expected: &str,
) -> Result<&'s str, ManifestError> {
    let text = setting.string(file, expected)?;
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
    Ok(text)
}

/// `ioports`: a list of `"START-END"` or `"PORT"` in hex, each range inclusive, no two
/// sharing a port, at most [`MAX_IOPORT_RANGES`].
fn io_ports(file: &Path, setting: &Setting) -> Result<Vec<IoPortEntry>, ManifestError> {
    let items = setting.list(
        file,
        "a list of I/O port ranges in hex, such as [ \"3f8-3ff\" ]",
    )?;
    if items.len() > MAX_IOPORT_RANGES {
        let problem = Problem::TooManyIoPortRanges {
            count: items.len(),
            max: MAX_IOPORT_RANGES,
        };
        return Err(setting.error(file, problem));
    }
    let mut entries: Vec<IoPortEntry> = Vec::with_capacity(items.len());
    for item in items {
        let entry = io_port_range(file, item)?;
        if let Some(other) = entries.iter().find(|other| other.overlaps(&entry)) {
            let problem = Problem::IoPortOverlap {
                found: format!("{:?}", entry.text),
                other: format!("{:?}", other.text),
                other_line: other.line,
            };
            return Err(ManifestError::new(
                file,
                Some(item.line),
                Some("ioports"),
                problem,
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// One item of `ioports`: `"START-END"` or `"PORT"`, each number in hex with an optional
/// `0x`, blanks around the numbers allowed.
fn io_port_range(file: &Path, item: &ListItem) -> Result<IoPortEntry, ManifestError> {
    let error = |problem| ManifestError::new(file, Some(item.line), Some("ioports"), problem);
    let invalid = || {
        error(Problem::Invalid {
            expected: "an I/O port or range of ports in hex, such as \"3f8-3ff\" or \"80\""
                .to_owned(),
            found: format!("{:?}", item.text),
        })
    };
    let (first, last) = match item.text.split_once('-') {
        Some((first, last)) => (first, last),
        None => (item.text.as_str(), item.text.as_str()),
    };
    let port = |text: &str| -> Result<u16, ManifestError> {
        let text = text.trim_matches([' ', '\t']);
        let digits = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        // Leading zeros are fine; more than four significant digits is past 0xffff.
        let significant = digits.trim_start_matches('0');
        if significant.len() > 4 {
            return Err(error(Problem::IoPortOutOfRange {
                found: format!("{text:?}"),
            }));
        }
        if significant.is_empty() {
            return Ok(0);
        }
        u16::from_str_radix(significant, 16).map_err(|_| invalid())
    };
    let range = IoPortRange {
        first: port(first)?,
        last: port(last)?,
    };
    if range.first > range.last {
        return Err(error(Problem::IoPortRangeBackwards {
            found: format!("{:?}", item.text),
        }));
    }
    Ok(IoPortEntry {
        range,
        text: item.text.clone(),
        line: item.line,
    })
}

/// `pci`: a list of PCI functions, each `"[DDDD:]BB:DD.F"`, no function twice, at most
/// [`MAX_PCI_FUNCTIONS`]. Whether the functions exist is checked by the microvisor at boot.
fn pci_functions(file: &Path, setting: &Setting) -> Result<Vec<PciEntry>, ManifestError> {
    let items = setting.list(
        file,
        "a list of PCI functions [DDDD:]BB:DD.F in hex, such as [ \"0000:00:03.0\" ]",
    )?;
    if items.len() > MAX_PCI_FUNCTIONS {
        let problem = Problem::TooManyPciFunctions {
            count: items.len(),
            max: MAX_PCI_FUNCTIONS,
        };
        return Err(setting.error(file, problem));
    }
    let mut entries: Vec<PciEntry> = Vec::with_capacity(items.len());
    for item in items {
        let entry = pci_function(file, item)?;
        if let Some(other) = entries.iter().find(|other| other.address == entry.address) {
            let problem = Problem::PciDuplicate {
                found: format!("{:?}", entry.text),
                other: format!("{:?} (line {})", other.text, other.line),
            };
            return Err(ManifestError::new(
                file,
                Some(item.line),
                Some("pci"),
                problem,
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// One item of `pci`, in xl's syntax `[DDDD:]BB:DD.F[@VSLOT][,OPTION...]`, the function as
/// [`parse_bdf`] reads it. The all-functions form `BB:DD.*`, the virtual slot and the options are
/// recognised, and refused as not supported yet. Blanks around the item are allowed.
fn pci_function(file: &Path, item: &ListItem) -> Result<PciEntry, ManifestError> {
    let error = |problem| ManifestError::new(file, Some(item.line), Some("pci"), problem);
    let found = format!("{:?}", item.text);
    let invalid = || {
        error(Problem::Invalid {
            expected:
                "a PCI function [DDDD:]BB:DD.F in hex, such as \"0000:00:03.0\" or \"03:00.1\""
                    .to_owned(),
            found: found.clone(),
        })
    };
    let text = item.text.trim_matches([' ', '\t']);
    let (spec, options) = match text.split_once(',') {
        Some((spec, options)) if !options.is_empty() => (spec, Some(options)),
        Some(_) => return Err(invalid()),
        None => (text, None),
    };
    let (bdf, slot) = match spec.split_once('@') {
        Some((bdf, slot)) if !slot.is_empty() => (bdf, Some(slot)),
        Some(_) => return Err(invalid()),
        None => (spec, None),
    };
    let address = parse_bdf(bdf).map_err(|refused| match refused {
        BdfError::Invalid => invalid(),
        BdfError::OutOfRange { part, value } => error(Problem::PciOutOfRange {
            found: found.clone(),
            part,
            value,
        }),
        BdfError::AllFunctions { head } => error(Problem::PciAllFunctions {
            found: found.clone(),
            example: format!("{head}.0"),
        }),
    })?;
    if let Some(slot) = slot {
        return Err(error(Problem::PciVirtualSlot {
            found,
            slot: slot.to_owned(),
        }));
    }
    if let Some(options) = options {
        return Err(error(Problem::PciOptions {
            found,
            options: options.to_owned(),
        }));
    }
    Ok(PciEntry {
        address,
        text: item.text.clone(),
        line: item.line,
    })
}

/// Why [`parse_bdf`] refused a PCI address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BdfError<'t> {
    /// Not of the form `[DDDD:]BB:DD.F` in hex.
    Invalid,
    /// The device is above 1f or the function above 7.
    OutOfRange { part: PciPart, value: u16 },
    /// `BB:DD.*` (or `DDDD:BB:DD.*`): every function of a device; `head` is the part before
    /// the `.`.
    AllFunctions { head: &'t str },
}

/// A PCI function `[DDDD:]BB:DD.F` in hex: the segment (xl's "domain", 0 if left out) of 1
/// to 4 digits, the bus and the device of 1 or 2, the function of 1; the device at most 1f,
/// the function at most 7. Nothing else may be in `text` (the `pci` key and a disk's target
/// take their own additions off first).
pub(crate) fn parse_bdf(text: &str) -> Result<PciAddress, BdfError<'_>> {
    let (head, function) = text.split_once('.').ok_or(BdfError::Invalid)?;
    let mut parts = head.rsplit(':');
    let device = parts.next().ok_or(BdfError::Invalid)?;
    let bus = parts.next().ok_or(BdfError::Invalid)?;
    let segment = parts.next();
    if parts.next().is_some() {
        return Err(BdfError::Invalid);
    }
    // 1 to `max_digits` hex digits; at most four, so the value fits.
    let hex = |digits: &str, max_digits: usize| -> Result<u16, BdfError<'_>> {
        if digits.is_empty()
            || digits.len() > max_digits
            || !digits.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(BdfError::Invalid);
        }
        u16::from_str_radix(digits, 16).map_err(|_| BdfError::Invalid)
    };
    let byte = |value: u16| u8::try_from(value).map_err(|_| BdfError::Invalid);
    let segment = match segment {
        Some(digits) => hex(digits, 4)?,
        None => 0,
    };
    let bus = byte(hex(bus, 2)?)?;
    let device = hex(device, 2)?;
    if device > 0x1f {
        return Err(BdfError::OutOfRange {
            part: PciPart::Device,
            value: device,
        });
    }
    if function == "*" {
        return Err(BdfError::AllFunctions { head });
    }
    let function = hex(function, 1)?;
    if function > 7 {
        return Err(BdfError::OutOfRange {
            part: PciPart::Function,
            value: function,
        });
    }
    Ok(PciAddress {
        segment,
        bus,
        device: byte(device)?,
        function: byte(function)?,
    })
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
        let spec = config.to_spec(3, Some(4)).unwrap();
        assert_eq!(spec.name.as_str(), name);
        assert_eq!(spec.cmdline.as_str(), cmdline);
        assert_eq!((spec.image_module, spec.ramdisk_module), (3, Some(4)));
    }

    #[test]
    fn root_goes_before_the_command_line_up_to_the_limit() {
        let with = |extra: &str| parse(&format!("{MINIMAL}root = '/dev/xvda1'\n{extra}"));
        assert_eq!(with("").unwrap().cmdline, "root=/dev/xvda1");
        assert_eq!(
            with("cmdline = 'console=hvc0 quiet'\n").unwrap().cmdline,
            "root=/dev/xvda1 console=hvc0 quiet"
        );
        // "root=/dev/xvda1 " is 16 bytes: 495 more fill the command line exactly.
        let fits = with(&format!("extra = '{}'\n", "x".repeat(495))).unwrap();
        assert_eq!(fits.cmdline.len(), MAX_CMDLINE_LEN);
        assert_eq!(
            fits.to_spec(1, None).unwrap().cmdline.len(),
            MAX_CMDLINE_LEN
        );
        let message = with(&format!("cmdline = '{}'\n", "x".repeat(496)))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "d.cfg:5: key `root`: `root=` and `cmdline` (line 6) make a kernel command line of 512 bytes, at most 511 are allowed"
        );
        let config = parse(&format!("{MINIMAL}ramdisk = 'boot/initrd.img'\n")).unwrap();
        assert_eq!(config.ramdisk, Some((PathBuf::from("boot/initrd.img"), 5)));
        assert_eq!(config.images().len(), 2);
        assert_eq!(config.images()[1].bare_name(), None);
        assert_eq!(parse(MINIMAL).unwrap().images()[0].bare_name(), Some("k"));
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

    fn ports(list: &str) -> Result<Vec<(u16, u16)>, String> {
        parse(&format!("{MINIMAL}ioports = {list}\n"))
            .map(|config| {
                let spec = config.to_spec(1, None).unwrap();
                assert_eq!(spec.ioports.len(), config.ioports.len());
                spec.ioports.iter().map(|r| (r.first, r.last)).collect()
            })
            .map_err(|error| error.to_string())
    }

    #[test]
    fn io_ports_are_hex_ranges_or_single_ports() {
        assert_eq!(parse(MINIMAL).unwrap().ioports, vec![]);
        assert_eq!(ports("[]"), Ok(vec![]));
        assert_eq!(ports("[ \"3f8-3ff\" ]"), Ok(vec![(0x3f8, 0x3ff)]));
        assert_eq!(
            ports("[ '80', \"0x2F8-0X2ff\", ' 0 - 1f ', \"fffF\", ]"),
            Ok(vec![
                (0x80, 0x80),
                (0x2f8, 0x2ff),
                (0, 0x1f),
                (0xffff, 0xffff)
            ])
        );
        assert_eq!(ports("[ '0000000-0000ffff' ]"), Ok(vec![(0, 0xffff)]));
        // Adjacent ranges do not overlap.
        assert_eq!(
            ports("[ '3f8-3fb', '3fc-3ff' ]"),
            Ok(vec![(0x3f8, 0x3fb), (0x3fc, 0x3ff)])
        );
        let eight: Vec<String> = (0..8).map(|i| format!("'{:x}'", 0x100 + i)).collect();
        assert_eq!(
            ports(&format!("[ {} ]", eight.join(", "))).unwrap().len(),
            8
        );
    }

    #[test]
    fn io_port_entries_keep_their_text_and_line() {
        let config = parse(&format!(
            "{MINIMAL}ioports = [\n  '3f8-3ff',\n  \"80\",\n]\n"
        ))
        .unwrap();
        let lines: Vec<(&str, usize)> = config
            .ioports
            .iter()
            .map(|entry| (entry.text.as_str(), entry.line))
            .collect();
        assert_eq!(lines, vec![("3f8-3ff", 6), ("80", 7)]);
    }

    #[test]
    fn bad_io_ports_say_what_is_wrong() {
        const EXPECTED: &str =
            "expected an I/O port or range of ports in hex, such as \"3f8-3ff\" or \"80\"";
        for item in [
            "",
            "-",
            "3f8-",
            "-3ff",
            "0x",
            "3f8-3ff-400",
            "com1",
            "3f8..3ff",
            "+80",
            "1 2",
        ] {
            assert_eq!(
                ports(&format!("[ '{item}' ]")),
                Err(format!(
                    "d.cfg:5: key `ioports`: {EXPECTED}, found {item:?}"
                )),
            );
        }
        assert_eq!(
            ports("[ '3f8-10000' ]"),
            Err(
                "d.cfg:5: key `ioports`: \"10000\" is out of range: I/O ports are 0 to ffff (hex)"
                    .into()
            )
        );
        assert_eq!(
            ports("[ '0x123456789abcdef0123' ]"),
            Err("d.cfg:5: key `ioports`: \"0x123456789abcdef0123\" is out of range: I/O ports are 0 to ffff (hex)".into())
        );
        assert_eq!(
            ports("[ '81-80' ]"),
            Err(
                "d.cfg:5: key `ioports`: \"81-80\" is backwards: its first port is above its last"
                    .into()
            )
        );
        assert_eq!(
            ports("[ '80', '0x80' ]"),
            Err(
                "d.cfg:5: key `ioports`: \"0x80\" overlaps \"80\" (line 5); list each port once"
                    .into()
            )
        );
        assert_eq!(
            ports("[ '3f8-3ff', '0-3f8' ]"),
            Err("d.cfg:5: key `ioports`: \"0-3f8\" overlaps \"3f8-3ff\" (line 5); list each port once".into())
        );
        assert_eq!(
            ports("3"),
            Err("d.cfg:5: key `ioports`: expected a list of I/O port ranges in hex, such as [ \"3f8-3ff\" ], found 3".into())
        );
        let nine: Vec<String> = (0..9).map(|i| format!("'{:x}'", 0x100 + i)).collect();
        assert_eq!(
            ports(&format!("[ {} ]", nine.join(", "))),
            Err("d.cfg:5: key `ioports`: lists 9 I/O port ranges, at most 8 are allowed".into())
        );
    }

    fn pci(list: &str) -> Result<Vec<String>, String> {
        parse(&format!("{MINIMAL}pci = {list}\n"))
            .map(|config| {
                let spec = config.to_spec(1, None).unwrap();
                let addresses: Vec<PciAddress> = config.pci.iter().map(|e| e.address).collect();
                assert_eq!(spec.pci.as_slice(), addresses.as_slice());
                config.pci.iter().map(PciEntry::canonical).collect()
            })
            .map_err(|error| error.to_string())
    }

    #[test]
    fn pci_functions_are_read_in_xl_syntax() {
        assert_eq!(parse(MINIMAL).unwrap().pci, vec![]);
        assert_eq!(pci("[]"), Ok(vec![]));
        assert_eq!(
            pci("[ \"0000:00:03.0\" ]"),
            Ok(vec!["0000:00:03.0".to_owned()])
        );
        assert_eq!(
            pci("[ '03:00.1', \"ffff:FF:1f.7\", ' 1:2:3.4 ', \"0:0.0\", ]"),
            Ok(vec![
                "0000:03:00.1".to_owned(),
                "ffff:ff:1f.7".to_owned(),
                "0001:02:03.4".to_owned(),
                "0000:00:00.0".to_owned(),
            ])
        );
        let config = parse(&format!("{MINIMAL}pci = [\n  '0001:02:1e.5',\n]\n")).unwrap();
        assert_eq!(
            config.pci,
            vec![PciEntry {
                address: PciAddress {
                    segment: 1,
                    bus: 2,
                    device: 0x1e,
                    function: 5
                },
                text: "0001:02:1e.5".into(),
                line: 6,
            }]
        );
        let eight: Vec<String> = (0..8).map(|f| format!("'00:03.{f}'")).collect();
        assert_eq!(pci(&format!("[ {} ]", eight.join(", "))).unwrap().len(), 8);
    }

    #[test]
    fn bad_pci_functions_say_what_is_wrong() {
        const EXPECTED: &str = "expected a PCI function [DDDD:]BB:DD.F in hex, such as \"0000:00:03.0\" or \"03:00.1\"";
        for item in [
            "",
            "03",
            "00:03",
            "03.0",
            "00:03.",
            ":00:03.0",
            "00::03.0",
            "0:0:0:03.0",
            "00000:00:03.0",
            "0000:100:03.0",
            "0000:00:003.0",
            "00:03.00",
            "00:03.0.1",
            "0x00:03.0",
            "00:03.g",
            "00:03.0,",
            "00:03.0@",
            "00:03 .0",
            "+0:03.0",
            "eth0",
            "bdf=00:03.0",
        ] {
            assert_eq!(
                pci(&format!("[ '{item}' ]")),
                Err(format!("d.cfg:5: key `pci`: {EXPECTED}, found {item:?}")),
            );
        }
        assert_eq!(
            pci("[ '00:20.0' ]"),
            Err("d.cfg:5: key `pci`: \"00:20.0\": device 20 is out of range: PCI devices are 00 to 1f (hex)".into())
        );
        assert_eq!(
            pci("[ '00:ff.0' ]"),
            Err("d.cfg:5: key `pci`: \"00:ff.0\": device ff is out of range: PCI devices are 00 to 1f (hex)".into())
        );
        assert_eq!(
            pci("[ '00:03.8' ]"),
            Err("d.cfg:5: key `pci`: \"00:03.8\": function 8 is out of range: PCI functions are 0 to 7 (hex)".into())
        );
        assert_eq!(
            pci("[ '0000:00:03.*' ]"),
            Err("d.cfg:5: key `pci`: \"0000:00:03.*\": all the functions of a device at once (`.*`) are not supported yet; list each function, such as \"0000:00:03.0\"".into())
        );
        assert_eq!(
            pci("[ '00:03.0@5' ]"),
            Err("d.cfg:5: key `pci`: \"00:03.0@5\": a virtual slot (`@5`) is not supported yet; the domain sees the function at its own address".into())
        );
        assert_eq!(
            pci("[ '0000:00:03.0,permissive=1,seize=1' ]"),
            Err("d.cfg:5: key `pci`: \"0000:00:03.0,permissive=1,seize=1\": per-device options are not supported yet; write the function alone, without `,permissive=1,seize=1`".into())
        );
        // The address is checked before the options.
        assert_eq!(
            pci("[ '00:03.9,permissive=1' ]"),
            Err("d.cfg:5: key `pci`: \"00:03.9,permissive=1\": function 9 is out of range: PCI functions are 0 to 7 (hex)".into())
        );
        assert_eq!(
            pci("[ '00:03.0', '0000:00:03.0' ]"),
            Err("d.cfg:5: key `pci`: \"0000:00:03.0\" is the same function as \"00:03.0\" (line 5); list each function once".into())
        );
        assert_eq!(
            pci("'00:03.0'"),
            Err("d.cfg:5: key `pci`: expected a list of PCI functions [DDDD:]BB:DD.F in hex, such as [ \"0000:00:03.0\" ], found \"00:03.0\"".into())
        );
        let nine: Vec<String> = (0..9).map(|d| format!("'00:{d:02x}.0'")).collect();
        assert_eq!(
            pci(&format!("[ {} ]", nine.join(", "))),
            Err("d.cfg:5: key `pci`: lists 9 PCI functions, at most 8 are allowed".into())
        );
    }

    #[test]
    fn disks_are_read_in_file_order_with_their_lines() {
        assert_eq!(parse(MINIMAL).unwrap().disks, vec![]);
        let config = parse(&format!(
            "{MINIMAL}disk = [\n  '0000:00:03.0,raw,xvda,rw',\n  # a slice\n  \"vdev=xvdb,access=ro,backend=blk,target=00:03.0@1G+1G\",\n]\n"
        ))
        .unwrap();
        let disks: Vec<(u32, bool, Option<&str>, usize)> = config
            .disks
            .iter()
            .map(|disk| (disk.vdev, disk.writable, disk.backend.as_deref(), disk.line))
            .collect();
        assert_eq!(
            disks,
            vec![(51712, true, None, 6), (51728, false, Some("blk"), 8)]
        );
        assert_eq!(config.disks[1].sectors(), (2097152, 2097152));
        // Disks are not part of the domain's manifest entry.
        assert_eq!(
            config.to_spec(1, None).unwrap(),
            parse(MINIMAL).unwrap().to_spec(1, None).unwrap()
        );
    }

    #[test]
    fn a_vdev_is_given_once_however_it_is_written() {
        let message = parse(&format!(
            "{MINIMAL}disk = [ '00:03.0@0+1M,,51712', '00:03.0@1M+1M,,xvda' ]\n"
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            message,
            "d.cfg:5: key `disk`: \"00:03.0@1M+1M,,xvda\": vdev \"xvda\" (device number 51712) is already the vdev of \"00:03.0@0+1M,,51712\" (line 5); give each disk its own"
        );
        let eight: Vec<String> = (0..8)
            .map(|d| format!("'00:03.0@{d}M+1M,,xvd{}'", char::from(b'a' + d)))
            .collect();
        assert_eq!(
            parse(&format!("{MINIMAL}disk = [ {} ]\n", eight.join(", ")))
                .unwrap()
                .disks
                .len(),
            8
        );
    }

    #[test]
    fn pci_options_of_xl_that_are_keys_are_still_not_supported() {
        let message = parse(&format!("{MINIMAL}pci_permissive = 1\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "d.cfg:5: key `pci_permissive` is not supported yet"
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
