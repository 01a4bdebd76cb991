//! A domain's `disk` list: the virtual disks the guest sees, each served by the block
//! backend of a driver domain from a PCI function (a disk controller) that domain owns.
//!
//! Each item is a disk specification in the syntax of xl's disk configuration: parameters
//! separated by commas, each either positional or `key=value`, in any mix. Each positional
//! parameter is the first of target, format, vdev and access that is not given yet (by key
//! or by position); `target=` must be the last parameter, since everything after it, commas
//! included, is the target. Each parameter is given once; an empty value is its default.
//! Blanks around parameters are ignored. xl's deprecated layout (`phy:/dev/vg/guest,xvda,w`)
//! is refused.
//!
//! ```text
//! 0000:00:03.0,raw,xvda,rw                      positional
//! vdev=xvdb, access=ro, target=0000:00:03.0     by key
//! 0000:00:03.0@64M+128M,,xvdc,backend=blkback   mixed; format left at its default
//! ```
//!
//! | parameter | value | default |
//! |---|---|---|
//! | `target` | the backend's PCI function `[DDDD:]BB:DD.F` (as the `pci` key reads it), or `<function>@<start>+<size>` for a slice of the disk: byte counts, decimal, with an optional `K`, `M`, `G` or `T` (powers of 1024, either case), multiples of 512, size above 0 | required |
//! | `vdev` | `xvd<letters>` (`xvda` to `xvdz`, then `xvdaa`, ...) or the device number in decimal; whole disks only, so no partition number | required |
//! | `access` | `r` or `ro` (read-only), `w` or `rw` (writable) | `rw` |
//! | `format` | `raw` | `raw` |
//! | `devtype` | `disk` (`cdrom` is refused) | `disk` |
//! | `backend` | the name of the driver domain that serves the disk | the system's `disk_backend` |
//! | `backendtype` | `phy` | `phy` |
//!
//! Device numbers follow xen-vbd-interface(7): disk `n` (`xvda` is 0, `xvdz` 25, `xvdaa` 26)
//! is `(202 << 8) | (n << 4)` below 16 and `(1 << 28) | (n << 8)` from 16 on, up to
//! `n` = 2^20 - 1 (`xvdbgqcv`). `hd` and `sd` names are refused: a Linux PVH guest sees its
//! disks as `/dev/xvd*`.
//!
//! Checked here, for one file: each specification, at most [`MAX_DISKS`] disks, each vdev
//! once. The backend, its `pci`, overlapping slices and the xenstore domain's command line
//! are checked when the system is compiled (see `vbds`).

use std::path::Path;

use microvisor_abi::manifest::PciAddress;

use crate::domain::{parse_bdf, BdfError};
use crate::error::{DiskDefect, ManifestError, Problem};
use crate::syntax::{ListItem, Setting};

/// The most disks one domain may have.
pub const MAX_DISKS: usize = 8;
/// The unit of a slice's start and size.
pub const SECTOR_BYTES: u64 = 512;
/// The highest disk number an `xvd` name reaches: the extended numbering keeps 20 bits for it.
const MAX_DISK_INDEX: u32 = (1 << 20) - 1;
/// xl disk parameters that take a value and are not supported here.
const UNSUPPORTED_KEYS: &[&str] = &[
    "script",
    "colo-host",
    "colo-port",
    "colo-export",
    "active-disk",
    "hidden-disk",
];
/// xl disk flags (parameters without a value) that are not supported here.
const UNSUPPORTED_FLAGS: &[&str] = &[
    "discard",
    "no-discard",
    "direct-io-safe",
    "trusted",
    "untrusted",
    "colo",
];
const BLANKS: [char; 2] = [' ', '\t'];

/// One item of `disk`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskEntry {
    /// The device number the guest sees (xen-vbd-interface(7)): 51712 for `xvda`.
    pub vdev: u32,
    /// The vdev as written: `"xvda"` or `"51712"`.
    pub vdev_text: String,
    /// The backend's PCI function that holds the physical disk.
    pub target: PciAddress,
    /// The part of that disk the guest gets; `None` for all of it.
    pub slice: Option<DiskSlice>,
    pub writable: bool,
    /// The driver domain named by `backend=`; `None` for the system's `disk_backend`.
    pub backend: Option<String>,
    /// The specification as written and its line, for messages.
    pub text: String,
    pub line: usize,
}

/// A part of a disk, in bytes, both multiples of [`SECTOR_BYTES`]; `size_bytes` is above 0
/// and the slice ends within 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSlice {
    pub start_bytes: u64,
    pub size_bytes: u64,
}

impl DiskEntry {
    /// The part of the target disk it covers in sectors: the first sector and the number of
    /// sectors, `(0, 0)` for the whole disk (the form of the device table).
    pub fn sectors(&self) -> (u64, u64) {
        match self.slice {
            Some(slice) => (
                slice.start_bytes / SECTOR_BYTES,
                slice.size_bytes / SECTOR_BYTES,
            ),
            None => (0, 0),
        }
    }

    /// Whether the two disks share a byte of one PCI function's disk: the whole disk shares
    /// one with every slice of it. (Whether they have the same backend is the caller's
    /// business.)
    pub fn overlaps(&self, other: &DiskEntry) -> bool {
        let (start, end) = self.byte_range();
        let (other_start, other_end) = other.byte_range();
        self.target == other.target && start < other_end && other_start < end
    }

    /// The bytes covered, `start..end`; the whole disk is all that a 64-bit count reaches.
    fn byte_range(&self) -> (u64, u64) {
        match self.slice {
            // The end fits: checked when the slice was read.
            Some(slice) => (
                slice.start_bytes,
                slice.start_bytes.saturating_add(slice.size_bytes),
            ),
            None => (0, u64::MAX),
        }
    }

    /// An error about this disk, in the domain file `file`.
    pub(crate) fn error(&self, file: &Path, defect: DiskDefect) -> ManifestError {
        disk_error(file, self.line, &self.text, defect)
    }
}

fn disk_error(file: &Path, line: usize, text: &str, defect: DiskDefect) -> ManifestError {
    let problem = Problem::Disk {
        spec: format!("{text:?}"),
        defect: Box::new(defect),
    };
    ManifestError::new(file, Some(line), Some("disk"), problem)
}

/// `disk`: a list of disk specifications, at most [`MAX_DISKS`], each vdev once.
pub(crate) fn disks(file: &Path, setting: &Setting) -> Result<Vec<DiskEntry>, ManifestError> {
    let items = setting.list(
        file,
        "a list of disk specifications, such as [ \"0000:00:03.0,raw,xvda,rw\" ]",
    )?;
    if items.len() > MAX_DISKS {
        let problem = Problem::TooManyDisks {
            count: items.len(),
            max: MAX_DISKS,
        };
        return Err(setting.error(file, problem));
    }
    let mut entries: Vec<DiskEntry> = Vec::with_capacity(items.len());
    for item in items {
        let entry = disk(item).map_err(|defect| disk_error(file, item.line, &item.text, defect))?;
        if let Some(other) = entries.iter().find(|other| other.vdev == entry.vdev) {
            let found = if entry.vdev_text == entry.vdev.to_string() {
                quoted(&entry.vdev_text)
            } else {
                format!("{:?} (device number {})", entry.vdev_text, entry.vdev)
            };
            let defect = DiskDefect::VdevTwice {
                found,
                other: format!("{:?} (line {})", other.text, other.line),
            };
            return Err(entry.error(file, defect));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// The parameters of one specification as written, before their values are checked.
#[derive(Default)]
struct Given<'s> {
    target: Option<&'s str>,
    format: Option<&'s str>,
    vdev: Option<&'s str>,
    access: Option<&'s str>,
    devtype: Option<&'s str>,
    backend: Option<&'s str>,
    backendtype: Option<&'s str>,
}

impl<'s> Given<'s> {
    /// The parameter named `key` (also the positional ones), if there is one.
    fn slot(&mut self, key: &str) -> Option<(&'static str, &mut Option<&'s str>)> {
        Some(match key {
            "target" => ("target", &mut self.target),
            "format" => ("format", &mut self.format),
            "vdev" => ("vdev", &mut self.vdev),
            "access" => ("access", &mut self.access),
            "devtype" => ("devtype", &mut self.devtype),
            "backend" => ("backend", &mut self.backend),
            "backendtype" => ("backendtype", &mut self.backendtype),
            _ => return None,
        })
    }

    /// Sets `key` (a known parameter) to `value`, once.
    fn set(&mut self, key: &str, value: &'s str) -> Result<(), DiskDefect> {
        let Some((parameter, slot)) = self.slot(key) else {
            return Err(unknown_key(key));
        };
        if slot.is_some() {
            return Err(DiskDefect::ParameterTwice { parameter });
        }
        *slot = Some(value);
        Ok(())
    }
}

fn unknown_key(key: &str) -> DiskDefect {
    if UNSUPPORTED_KEYS.contains(&key) {
        DiskDefect::UnsupportedParameter {
            parameter: format!("{key}="),
        }
    } else {
        DiskDefect::UnknownParameter {
            key: key.to_owned(),
        }
    }
}

/// The positional parameters, in order.
const POSITIONAL: [&str; 4] = ["target", "format", "vdev", "access"];

/// One disk specification.
fn disk(item: &ListItem) -> Result<DiskEntry, DiskDefect> {
    let given = parameters(&item.text)?;

    // xl's deprecated `phy:/dev/...,xvda,w` layout, or what kind of disk it is: either way
    // the rest of the specification means something else than it says here.
    if let Some(prefix) = value(given.target).and_then(legacy_prefix) {
        return Err(DiskDefect::LegacyPrefix {
            prefix: prefix.to_owned(),
        });
    }
    match value(given.devtype) {
        None | Some("disk") => {}
        Some("cdrom") => return Err(DiskDefect::Cdrom),
        Some(other) => {
            return Err(DiskDefect::BadDevtype {
                found: quoted(other),
            })
        }
    }
    match value(given.backendtype) {
        None | Some("phy") => {}
        Some(other) => {
            return Err(DiskDefect::BadBackendtype {
                found: quoted(other),
            })
        }
    }
    match value(given.format) {
        None | Some("raw") => {}
        Some(other) => {
            return Err(DiskDefect::BadFormat {
                found: quoted(other),
            })
        }
    }
    let target_text = value(given.target).ok_or(DiskDefect::MissingTarget)?;
    let (target, slice) = target(target_text)?;
    let vdev_text = value(given.vdev).ok_or(DiskDefect::MissingVdev)?;
    let vdev = vdev_number(vdev_text)?;
    let writable = match value(given.access) {
        None | Some("w" | "rw") => true,
        Some("r" | "ro") => false,
        Some(other) => {
            return Err(DiskDefect::BadAccess {
                found: quoted(other),
            })
        }
    };
    let backend = match value(given.backend) {
        Some(name) if is_domain_name(name) => Some(name.to_owned()),
        Some(other) => {
            return Err(DiskDefect::BadBackendName {
                found: quoted(other),
            })
        }
        None => None,
    };
    Ok(DiskEntry {
        vdev,
        vdev_text: vdev_text.to_owned(),
        target,
        slice,
        writable,
        backend,
        text: item.text.clone(),
        line: item.line,
    })
}

/// A parameter's value; an empty value is the default, as if the parameter were not given.
fn value(given: Option<&str>) -> Option<&str> {
    given.filter(|text| !text.is_empty())
}

/// The prefixes of xl's deprecated target syntax (`phy:/dev/vg/guest`, `raw:...`), none of
/// which is a hex PCI segment.
const LEGACY_PREFIXES: &[&str] = &[
    "phy", "file", "tap", "tap2", "aio", "raw", "qcow", "qcow2", "vhd", "qdisk",
];

/// The deprecated prefix of a target, if it has one.
fn legacy_prefix(target: &str) -> Option<&str> {
    let (prefix, _) = target.split_once(':')?;
    LEGACY_PREFIXES.contains(&prefix).then_some(prefix)
}

/// Splits a specification into its parameters, as xl does: `key=value` sets `key`; a flag
/// is a flag; anything else is the next positional parameter (target, format, vdev, access)
/// not given yet. `target=` takes the rest of the text. Each parameter is given once.
fn parameters(text: &str) -> Result<Given<'_>, DiskDefect> {
    let mut given = Given::default();
    let mut rest = text;
    loop {
        let (head, tail) = match rest.split_once(',') {
            Some((head, tail)) => (head, Some(tail)),
            None => (rest, None),
        };
        if let Some((key, value)) = head.split_once('=') {
            let key = key.trim_matches(BLANKS);
            if key == "target" {
                // The first `=` of `rest` is the one in `head`: the target runs to the end.
                let target = rest.split_once('=').map_or("", |(_, target)| target);
                given.set(key, target.trim_matches(BLANKS))?;
                return Ok(given);
            }
            given.set(key, value.trim_matches(BLANKS))?;
        } else {
            let word = head.trim_matches(BLANKS);
            if word == "cdrom" {
                return Err(DiskDefect::Cdrom);
            }
            if UNSUPPORTED_FLAGS.contains(&word) {
                return Err(DiskDefect::UnsupportedParameter {
                    parameter: word.to_owned(),
                });
            }
            let next = POSITIONAL.into_iter().find(|parameter| {
                given
                    .slot(parameter)
                    .is_some_and(|(_, slot)| slot.is_none())
            });
            match next {
                Some(parameter) => given.set(parameter, word)?,
                // An empty one past the last (a trailing comma) is nothing.
                None if word.is_empty() => {}
                None => {
                    return Err(DiskDefect::TooManyPositional {
                        found: quoted(word),
                    })
                }
            }
        }
        match tail {
            Some(tail) => rest = tail,
            None => return Ok(given),
        }
    }
}

/// A domain name, as the `name` key allows it: 1 to 31 of `A-Z a-z 0-9 _ . -`.
pub(crate) fn is_domain_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    !name.is_empty() && name.len() <= crate::domain::MAX_NAME_LEN && name.chars().all(allowed)
}

fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// The device number of a vdev: `xvd<letters>` or a decimal number.
fn vdev_number(text: &str) -> Result<u32, DiskDefect> {
    let found = || quoted(text);
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| DiskDefect::VdevOutOfRange { found: found() });
    }
    // Lowercase letters, then digits (a partition number) or nothing.
    let letters_then_digits = |name: &'_ str| {
        let split = name
            .find(|c: char| !c.is_ascii_lowercase())
            .unwrap_or(name.len());
        let (letters, digits) = name.split_at(split);
        let fits = !letters.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit());
        fits.then(|| (letters.to_owned(), digits.to_owned()))
    };
    if let Some(name) = text.strip_prefix("xvd") {
        let (letters, partition) =
            letters_then_digits(name).ok_or_else(|| DiskDefect::BadVdev { found: found() })?;
        let disk =
            disk_index(&letters).ok_or_else(|| DiskDefect::VdevOutOfRange { found: found() })?;
        if !partition.is_empty() {
            return Err(DiskDefect::Partition {
                found: found(),
                disk: format!("xvd{letters}"),
            });
        }
        return Ok(if disk < 16 {
            (202 << 8) | (disk << 4)
        } else {
            (1 << 28) | (disk << 8)
        });
    }
    for legacy in ["hd", "sd"] {
        if let Some((letters, _)) = text.strip_prefix(legacy).and_then(letters_then_digits) {
            return Err(DiskDefect::LegacyVdev {
                found: found(),
                instead: format!("xvd{letters}"),
            });
        }
    }
    Err(DiskDefect::BadVdev { found: found() })
}

/// The disk number of `xvd<letters>`: the letters read as a number in bijective base 26
/// (a = 1, ..., z = 26, aa = 27, ...) less one, if it is at most [`MAX_DISK_INDEX`].
fn disk_index(letters: &str) -> Option<u32> {
    let mut value: u32 = 0;
    for byte in letters.bytes() {
        value = value
            .checked_mul(26)?
            .checked_add(u32::from(byte - b'a') + 1)?;
    }
    let index = value.checked_sub(1)?;
    (index <= MAX_DISK_INDEX).then_some(index)
}

/// A target: a PCI function, alone or `@START+SIZE`.
fn target(text: &str) -> Result<(PciAddress, Option<DiskSlice>), DiskDefect> {
    let found = || quoted(text);
    if text.contains('/') {
        return Err(DiskDefect::TargetPath { found: found() });
    }
    let (bdf, slice) = match text.split_once('@') {
        Some((bdf, slice)) => (bdf, Some(slice)),
        None => (text, None),
    };
    let address = parse_bdf(bdf).map_err(|refused| match refused {
        BdfError::OutOfRange { part, value } => DiskDefect::TargetOutOfRange {
            found: found(),
            part,
            value,
        },
        BdfError::Invalid | BdfError::AllFunctions { .. } => {
            DiskDefect::BadTarget { found: found() }
        }
    })?;
    let Some(slice) = slice else {
        return Ok((address, None));
    };
    let (start, size) = slice.split_once('+').ok_or_else(|| DiskDefect::BadSlice {
        found: quoted(slice),
    })?;
    let start_bytes = byte_count("start", start, slice)?;
    let size_bytes = byte_count("size", size, slice)?;
    if size_bytes == 0 {
        return Err(DiskDefect::EmptySlice {
            found: quoted(size),
        });
    }
    if start_bytes.checked_add(size_bytes).is_none() {
        return Err(DiskDefect::SliceTooLarge {
            found: quoted(slice),
        });
    }
    Ok((
        address,
        Some(DiskSlice {
            start_bytes,
            size_bytes,
        }),
    ))
}

/// A byte count of a slice: decimal digits and an optional K, M, G or T (powers of 1024),
/// a multiple of the sector. `what` is `start` or `size`, `slice` the whole slice.
fn byte_count(what: &'static str, text: &str, slice: &str) -> Result<u64, DiskDefect> {
    let found = || quoted(text);
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
        Some(b'T' | b't') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(DiskDefect::BadByteCount {
            what,
            found: found(),
        });
    }
    let too_large = || DiskDefect::SliceTooLarge {
        found: quoted(slice),
    };
    // All digits: the only way to fail is to be too large.
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    let bytes = number.checked_mul(1 << shift).ok_or_else(too_large)?;
    if bytes % SECTOR_BYTES != 0 {
        return Err(DiskDefect::NotSectorMultiple {
            what,
            found: found(),
            bytes,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(text: &str) -> ListItem {
        ListItem {
            text: text.to_owned(),
            line: 1,
        }
    }

    fn read(text: &str) -> Result<DiskEntry, DiskDefect> {
        disk(&item(text))
    }

    /// The message of a refused specification, without its `"<spec>": ` prefix.
    fn refused(text: &str) -> String {
        match read(text) {
            Ok(entry) => panic!("{text:?} was accepted: {entry:?}"),
            Err(defect) => defect.to_string(),
        }
    }

    const DISK: PciAddress = PciAddress {
        segment: 0,
        bus: 0,
        device: 3,
        function: 0,
    };

    #[test]
    fn positional_parameters_fill_target_format_vdev_access() {
        let entry = read("0000:00:03.0,raw,xvda,rw").unwrap();
        assert_eq!(
            entry,
            DiskEntry {
                vdev: 51712,
                vdev_text: "xvda".into(),
                target: DISK,
                slice: None,
                writable: true,
                backend: None,
                text: "0000:00:03.0,raw,xvda,rw".into(),
                line: 1,
            }
        );
        assert_eq!(entry.sectors(), (0, 0));
        // Trailing ones may be left out; access defaults to rw.
        let short = read("00:03.0,raw,xvdb").unwrap();
        assert_eq!((short.vdev, short.writable), (51728, true));
        // Empty ones keep their defaults, and blanks around parameters are ignored.
        let empty = read(" 03.0 , , xvdc , ro ,").unwrap_err().to_string();
        assert!(empty.starts_with("target \"03.0\""), "{empty}");
        let empty = read(" 00:03.0 , , xvdc , ro ,").unwrap();
        assert_eq!((empty.vdev, empty.writable), (51744, false));
        assert_eq!(read("00:03.0,,xvdd").unwrap().vdev, 51760);
    }

    #[test]
    fn key_parameters_in_any_order_with_target_last() {
        let entry =
            read("vdev=xvdb, access=ro, format=raw, devtype=disk, backendtype=phy, backend=blk.0, target=0000:00:03.0")
                .unwrap();
        assert_eq!(entry.vdev, 51728);
        assert!(!entry.writable);
        assert_eq!(entry.backend.as_deref(), Some("blk.0"));
        assert_eq!(entry.target, DISK);
        // Everything after `target=` is the target, commas included.
        assert_eq!(
            refused("vdev=xvda,target=00:03.0,access=ro"),
            "target \"00:03.0,access=ro\" is not a PCI function [DDDD:]BB:DD.F in hex, with or without a slice @START+SIZE, such as \"0000:00:03.0\" or \"0000:00:03.0@64M+128M\""
        );
        assert_eq!(
            read("vdev = xvda , target = 00:03.0 ").unwrap().target,
            DISK
        );
    }

    #[test]
    fn positional_and_key_parameters_mix() {
        // A positional parameter is the first of target, format, vdev, access not given yet.
        let entry = read("access=r,00:03.0,raw,xvdc").unwrap();
        assert_eq!((entry.vdev, entry.writable), (51744, false));
        let entry = read("00:03.0@1M+1M,backend=blkback,,xvdd,w").unwrap();
        assert_eq!((entry.vdev, entry.writable), (51760, true));
        assert_eq!(entry.sectors(), (2048, 2048));
        let entry = read("vdev=xvde,00:03.0,,ro").unwrap();
        assert_eq!((entry.vdev, entry.writable), (51776, false));
        // Here `ro` is the second positional parameter, the format.
        assert_eq!(
            refused("vdev=xvde,00:03.0,ro"),
            "format \"ro\" is not supported: the backend serves raw disks only (format raw)"
        );
        // `format` is given, so `xvda` is the vdev.
        let entry = read("00:03.0,format=raw,xvda").unwrap();
        assert_eq!(entry.vdev, 51712);
        let entry = read("format=raw,vdev=xvdb,0000:00:03.0,r").unwrap();
        assert_eq!(
            (entry.vdev, entry.writable, entry.target),
            (51728, false, DISK)
        );
        assert_eq!(
            refused("00:03.0,raw,xvda,format=raw"),
            "gives `format` twice (each parameter once, by position or by key)"
        );
        assert_eq!(
            refused("00:03.0,raw,xvda,rw,vdev=xvdb"),
            "gives `vdev` twice (each parameter once, by position or by key)"
        );
        assert_eq!(
            refused("vdev=xvda,00:03.0,target=00:03.0"),
            "gives `target` twice (each parameter once, by position or by key)"
        );
    }

    #[test]
    fn vdev_numbers_follow_the_vbd_interface() {
        let number = |vdev: &str| read(&format!("00:03.0,raw,{vdev}")).map(|entry| entry.vdev);
        assert_eq!(number("xvda"), Ok(202 << 8));
        assert_eq!(number("xvda"), Ok(51712));
        assert_eq!(number("xvdb"), Ok(51728));
        assert_eq!(number("xvdp"), Ok(51952));
        assert_eq!(number("xvdq"), Ok((1 << 28) | (16 << 8)));
        assert_eq!(number("xvdz"), Ok((1 << 28) | (25 << 8)));
        assert_eq!(number("xvdaa"), Ok((1 << 28) | (26 << 8)));
        assert_eq!(number("xvdba"), Ok((1 << 28) | (52 << 8)));
        assert_eq!(number("xvdaaa"), Ok((1 << 28) | (702 << 8)));
        assert_eq!(number("xvdbgqcv"), Ok((1 << 28) | (MAX_DISK_INDEX << 8)));
        assert_eq!(number("51712"), Ok(51712));
        assert_eq!(number("0"), Ok(0));
        assert_eq!(number("4294967295"), Ok(u32::MAX));
        let out_of_range = |vdev: &str| {
            format!("vdev \"{vdev}\" is out of range: the disks are xvda to xvdbgqcv (1048576 of them), the device numbers 0 to 4294967295")
        };
        for vdev in ["xvdbgqcw", "xvdzzzzzzzzzzzz", "4294967296"] {
            assert_eq!(refused(&format!("00:03.0,raw,{vdev}")), out_of_range(vdev));
        }
    }

    #[test]
    fn vdevs_that_are_not_whole_xvd_disks_are_refused() {
        let message = |vdev: &str| refused(&format!("00:03.0,raw,{vdev}"));
        assert_eq!(
            message("xvda1"),
            "vdev \"xvda1\" is a partition; give whole disks only, such as \"xvda\" (the guest partitions it, or give it a slice of the backend's disk as a disk of its own)"
        );
        assert_eq!(
            message("sda"),
            "vdev \"sda\": use xvd names (\"xvda\"): a Linux PVH guest sees its disks as /dev/xvd*"
        );
        assert!(message("hdc2").starts_with("vdev \"hdc2\": use xvd names (\"xvdc\")"));
        for vdev in [
            "xvd", "xvdA", "xvda1x", "xvd1", "vda", "d0p1", "sd", "-1", "+5", "0x10", "xvda b",
        ] {
            assert_eq!(
                message(vdev),
                format!("vdev {vdev:?} is not a virtual disk: write xvd and letters (xvda, xvdb, ..., xvdz, xvdaa, ...) or the device number in decimal"),
            );
        }
        assert_eq!(
            refused("vdev=,target=00:03.0"),
            "no vdev: give the name the guest sees the disk by, such as `xvda`"
        );
    }

    #[test]
    fn slices_are_byte_counts_in_whole_sectors() {
        let slice = |target: &str| {
            read(&format!("{target},raw,xvda"))
                .map(|entry| entry.slice.map(|s| (s.start_bytes, s.size_bytes)))
                .map_err(|defect| defect.to_string())
        };
        assert_eq!(slice("0000:00:03.0"), Ok(None));
        assert_eq!(
            slice("0000:00:03.0@64M+128M"),
            Ok(Some((64 << 20, 128 << 20)))
        );
        assert_eq!(slice("00:03.0@0+512"), Ok(Some((0, 512))));
        assert_eq!(slice("00:03.0@1k+2K"), Ok(Some((1024, 2048))));
        assert_eq!(slice("00:03.0@1g+1T"), Ok(Some((1 << 30, 1 << 40))));
        let entry = read("0000:00:03.0@64M+128M,raw,xvda").unwrap();
        assert_eq!(entry.sectors(), (131072, 262144));
        // The last byte a 64-bit count reaches is fine; one more is not.
        let last = u64::MAX - 511;
        assert_eq!(slice(&format!("00:03.0@0+{last}")), Ok(Some((0, last))));
        let too_large = |text: &str| {
            format!("slice {text:?} ends past the 16 EiB that a 64-bit byte count reaches")
        };
        assert_eq!(
            slice(&format!("00:03.0@512+{last}")),
            Err(too_large(&format!("512+{last}")))
        );
        assert_eq!(
            slice("00:03.0@16777216T+1M"),
            Err(too_large("16777216T+1M"))
        );
        assert_eq!(
            slice("00:03.0@0+99999999999999999999"),
            Err(too_large("0+99999999999999999999"))
        );

        assert_eq!(
            slice("00:03.0@64M"),
            Err("slice \"64M\" is not START+SIZE, such as \"64M+128M\"".into())
        );
        assert_eq!(
            slice("00:03.0@"),
            Err("slice \"\" is not START+SIZE, such as \"64M+128M\"".into())
        );
        for (target, what, found) in [
            ("00:03.0@+1M", "start", ""),
            ("00:03.0@1M+", "size", ""),
            ("00:03.0@1MB+1M", "start", "1MB"),
            ("00:03.0@0x200+1M", "start", "0x200"),
            ("00:03.0@1M+-1M", "size", "-1M"),
            ("00:03.0@1M+1M+1M", "size", "1M+1M"),
            ("00:03.0@1 M+1M", "start", "1 M"),
            ("00:03.0@1M+1P", "size", "1P"),
            ("00:03.0@M+1M", "start", "M"),
        ] {
            assert_eq!(
                slice(target),
                Err(format!("slice {what} {found:?} is not a byte count: decimal digits, then K, M, G or T for KiB, MiB, GiB or TiB if you like")),
                "{target}"
            );
        }
        assert_eq!(
            slice("00:03.0@1000+1M"),
            Err("slice start \"1000\" is 1000 bytes, not a multiple of the 512-byte sector".into())
        );
        assert_eq!(slice("00:03.0@0+1k"), Ok(Some((0, 1024))));
        assert_eq!(
            slice("00:03.0@0+100"),
            Err("slice size \"100\" is 100 bytes, not a multiple of the 512-byte sector".into())
        );
        assert_eq!(
            slice("00:03.0@1M+0G"),
            Err("slice size \"0G\" is 0; a slice holds at least one sector (512 bytes)".into())
        );
    }

    #[test]
    fn targets_are_pci_functions_of_the_backend() {
        let message = |target: &str| refused(&format!("{target},raw,xvda"));
        for target in [
            "eth0",
            "00:03",
            "0:0:0:03.0",
            "00:03.*",
            "dead:beef:00:03.0",
            "00:03.0 @0+1M",
            "@0+1M",
        ] {
            assert_eq!(
                message(target),
                format!("target {target:?} is not a PCI function [DDDD:]BB:DD.F in hex, with or without a slice @START+SIZE, such as \"0000:00:03.0\" or \"0000:00:03.0@64M+128M\""),
                "{target}"
            );
        }
        assert_eq!(
            message("/dev/vg/guest"),
            "target \"/dev/vg/guest\" is a path, but a disk here is on a PCI function of its backend: write the function, as in the backend's `pci`, such as \"0000:00:03.0\", and @START+SIZE for a slice of it"
        );
        assert!(message("/dev/sda").starts_with("target \"/dev/sda\" is a path"));
        // A segment may be spelt in hex letters; xl's deprecated prefixes are not hex.
        assert_eq!(
            read("dead:00:03.0,raw,xvda").unwrap().target.segment,
            0xdead
        );
        for legacy in [
            "phy:/dev/vg/guest,xvda,w",
            "raw:/dev/vg/guest,hda,w",
            "phy:00:03.0,xvda,w",
            "vdev=xvda,target=tap:aio:/a.img",
        ] {
            let prefix = legacy
                .split_once(':')
                .unwrap()
                .0
                .rsplit('=')
                .next()
                .unwrap();
            assert_eq!(
                refused(legacy),
                format!("`{prefix}:` before the target is xl's deprecated syntax, which is not supported: write <target>,<format>,<vdev>,<access> or key=value parameters, such as \"0000:00:03.0,raw,xvda,rw\""),
            );
        }
        assert_eq!(
            message("00:20.0@0+1M"),
            "target \"00:20.0@0+1M\": device 20 is out of range: PCI devices are 00 to 1f (hex)"
        );
        assert_eq!(
            message("00:03.9"),
            "target \"00:03.9\": function 9 is out of range: PCI functions are 0 to 7 (hex)"
        );
        assert_eq!(
            refused(",raw,xvda"),
            "no target: give the backend's PCI function that holds the disk, such as `0000:00:03.0,raw,xvda,rw` or `target=0000:00:03.0`"
        );
        assert_eq!(refused(""), refused("target="));
    }

    #[test]
    fn every_other_parameter_says_what_is_allowed() {
        assert_eq!(
            refused("00:03.0,raw,xvda,rwx"),
            "access \"rwx\" is not r or ro (read-only), w or rw (writable)"
        );
        // An empty value is the default.
        assert!(read("00:03.0,raw,xvda,access=").unwrap().writable);
        assert!(read("00:03.0,format=,xvda,devtype=,backendtype=").is_ok());
        assert_eq!(read("00:03.0,,xvda,backend=").unwrap().backend, None);
        assert_eq!(
            refused("00:03.0,qcow2,xvda"),
            "format \"qcow2\" is not supported: the backend serves raw disks only (format raw)"
        );
        assert_eq!(
            refused("00:03.0,raw,xvdc,ro,devtype=cdrom"),
            "CD-ROM drives are not supported; a disk is devtype=disk"
        );
        assert_eq!(refused("00:03.0,raw,xvdc,cdrom"), refused("devtype=cdrom"));
        assert_eq!(
            refused("devtype=floppy,00:03.0,raw,xvda"),
            "devtype \"floppy\" is not known; the device type is disk"
        );
        assert_eq!(
            refused("00:03.0,raw,xvda,backendtype=qdisk"),
            "backendtype \"qdisk\" is not supported: disks are served by a block backend in a driver domain (backendtype phy)"
        );
        assert_eq!(
            refused("00:03.0,raw,xvda,backend=my backend"),
            "backend \"my backend\" is not a domain name (1 to 31 of A-Z a-z 0-9 _ . -)"
        );
        assert_eq!(
            refused("00:03.0,raw,xvda,rw,w"),
            "\"w\" is a positional parameter, but target, format, vdev and access (the positional parameters) are all given already"
        );
        assert_eq!(
            refused("access=ro,00:03.0,raw,xvda,w"),
            "\"w\" is a positional parameter, but target, format, vdev and access (the positional parameters) are all given already"
        );
        assert_eq!(
            refused("00:03.0,raw,xvda,mode=rw"),
            "unknown parameter `mode=` (parameters allowed: target, vdev, access, format, devtype, backend, backendtype)"
        );
        assert_eq!(
            refused("00:03.0,raw,xvda,script=block-iscsi"),
            "`script=` is not supported yet"
        );
        assert_eq!(
            refused("00:03.0,raw,xvda,discard"),
            "`discard` is not supported yet"
        );
    }

    #[test]
    fn whole_disks_overlap_their_slices_and_adjacent_slices_do_not() {
        let disk = |target: &str| read(&format!("{target},raw,xvda")).unwrap();
        let whole = disk("00:03.0");
        let low = disk("00:03.0@0+1M");
        let high = disk("00:03.0@1M+1M");
        let middle = disk("00:03.0@512K+1M");
        let elsewhere = disk("00:04.0@0+1M");
        assert!(whole.overlaps(&whole) && whole.overlaps(&low) && high.overlaps(&whole));
        assert!(!low.overlaps(&high) && !high.overlaps(&low));
        assert!(middle.overlaps(&low) && middle.overlaps(&high));
        assert!(!elsewhere.overlaps(&low) && !elsewhere.overlaps(&whole));
        let last = disk(&format!("00:03.0@{}+512", u64::MAX - 1023));
        assert!(last.overlaps(&whole) && !last.overlaps(&high));
    }
}
