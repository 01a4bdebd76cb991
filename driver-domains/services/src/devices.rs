//! The device table: the virtual block devices (VBDs) of the system, compiled from the
//! domain files' `disk` settings and handed to the xenstore domain on its command line, so
//! that it can write each disk's frontend and backend entries.
//!
//! On the command line the table is one word, `vbds=<table>` ([`VBDS_KEY`]); this module
//! reads and writes the `<table>` part only. The table is a list of entries joined with
//! `;` (an empty table is the empty string), each entry seven fields joined with `/`:
//!
//! ```text
//! frontend/vdev/backend/mode/device/start/sectors
//! linux/51712/blkback/w/0000:00:03.0/0/0
//! ```
//!
//! | field | meaning | form |
//! |---|---|---|
//! | frontend | the domain that sees the disk | a domain name: 1 to 31 of `A-Z a-z 0-9 _ . -` |
//! | vdev | the virtual-device number the frontend sees (xen-vbd-interface numbering: 51712 is xvda) | decimal, fits in 32 bits |
//! | backend | the driver domain that serves it | a domain name |
//! | mode | `r` read-only, `w` writable | |
//! | device | the backend's PCI function that holds the physical disk | `DDDD:BB:DD.F` in full, lowercase hex, device at most 1f, function at most 7 |
//! | start | the first sector (512 bytes) of the slice of the disk | decimal, fits in 64 bits |
//! | sectors | the length of the slice in sectors; 0 is up to the end of the disk | decimal, fits in 64 bits; start + sectors fits too |
//!
//! Decoding is strict: numbers are written without signs or leading zeros, so each table
//! has one spelling, and any other form is refused with a [`DecodeError`] that names the
//! entry (counted from 0) and what is wrong with it.
//!
//! The network interfaces (`vif`s) are a second table, `vifs=<table>` ([`VIFS_KEY`]), in the
//! same form, each entry five fields:
//!
//! ```text
//! frontend/handle/backend/mac/bridge
//! linux/0/netback/00:16:3e:00:00:15/xenbr0
//! ```
//!
//! | field | meaning | form |
//! |---|---|---|
//! | frontend | the domain that sees the interface | a domain name |
//! | handle | the vif's number in its domain (its index in the domain's `vif` list) | decimal, fits in 32 bits |
//! | backend | the driver domain that bridges it | a domain name |
//! | mac | the interface's address, its only source address on the bridge | `xx:xx:xx:xx:xx:xx`, lowercase hex, not a group address |
//! | bridge | the bridge's name | 1 to 15 of `A-Z a-z 0-9 _ . -` |

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use crate::mac::Mac;

use microvisor_abi::manifest::MAX_NAME_BYTES;

/// The command-line key of the table: the xenstore domain's command line has
/// `vbds=<encode_vbds(...)>`.
pub const VBDS_KEY: &str = "vbds";

/// The longest domain name, in bytes (as in the manifest).
const MAX_NAME_LEN: usize = MAX_NAME_BYTES - 1;

/// The fields of an entry, in order.
const FIELDS: usize = 7;

/// One virtual block device: a disk (or a slice of one) that `backend` serves to `frontend`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VbdSpec {
    /// The domain that sees the disk, by name.
    pub frontend: String,
    /// The virtual-device number the frontend sees (xen-vbd-interface(7)), such as 51712
    /// for xvda.
    pub vdev: u32,
    /// The driver domain that serves the disk, by name.
    pub backend: String,
    /// Whether the frontend may write to it.
    pub writable: bool,
    /// The backend's PCI function that holds the physical disk, in full: `0000:00:03.0`.
    pub device: String,
    /// The first sector (512 bytes) of the slice.
    pub start: u64,
    /// The length of the slice in sectors; 0 is up to the end of the device.
    pub sectors: u64,
}

/// Writes the table: the entries joined with `;`, without the `vbds=` key.
pub fn encode_vbds(list: &[VbdSpec]) -> String {
    let mut text = String::new();
    for (index, vbd) in list.iter().enumerate() {
        if index > 0 {
            text.push(';');
        }
        let mode = if vbd.writable { 'w' } else { 'r' };
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "{}/{}/{}/{mode}/{}/{}/{}",
            vbd.frontend, vbd.vdev, vbd.backend, vbd.device, vbd.start, vbd.sectors
        );
    }
    text
}

/// Reads a table written by [`encode_vbds`] (the text after `vbds=`).
///
/// # Errors
///
/// The first entry, in order, that is not seven well-formed fields.
pub fn decode_vbds(text: &str) -> Result<Vec<VbdSpec>, DecodeError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(';')
        .enumerate()
        .map(|(index, entry)| decode_entry(entry).map_err(|problem| DecodeError { index, problem }))
        .collect()
}

fn decode_entry(entry: &str) -> Result<VbdSpec, DecodeProblem> {
    if entry.is_empty() {
        return Err(DecodeProblem::Empty);
    }
    let fields: Vec<&str> = entry.split('/').collect();
    let &[frontend, vdev, backend, mode, device, start, sectors] = fields.as_slice() else {
        return Err(DecodeProblem::FieldCount {
            found: fields.len(),
        });
    };
    let writable = match mode {
        "r" => false,
        "w" => true,
        _ => return Err(DecodeProblem::Mode { found: mode.into() }),
    };
    let vbd = VbdSpec {
        frontend: name("frontend", frontend)?,
        vdev: u32::try_from(number("vdev", vdev)?)
            .map_err(|_| DecodeProblem::number("vdev", vdev))?,
        backend: name("backend", backend)?,
        writable,
        device: pci_function(device)?,
        start: number("start", start)?,
        sectors: number("sectors", sectors)?,
    };
    if vbd.start.checked_add(vbd.sectors).is_none() {
        return Err(DecodeProblem::SliceOverflow {
            start: vbd.start,
            sectors: vbd.sectors,
        });
    }
    Ok(vbd)
}

/// A domain name: 1 to 31 of `A-Z a-z 0-9 _ . -`.
fn name(field: &'static str, text: &str) -> Result<String, DecodeProblem> {
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-');
    if text.is_empty() || text.len() > MAX_NAME_LEN || !text.bytes().all(allowed) {
        return Err(DecodeProblem::Name {
            field,
            found: text.into(),
        });
    }
    Ok(text.into())
}

/// A decimal number without sign or leading zeros that fits in 64 bits.
fn number(field: &'static str, text: &str) -> Result<u64, DecodeProblem> {
    let canonical = !text.is_empty()
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(DecodeProblem::number(field, text));
    }
    text.parse().map_err(|_| DecodeProblem::number(field, text))
}

/// A PCI function in full, lowercase: `DDDD:BB:DD.F`, device at most 1f, function at most 7.
fn pci_function(text: &str) -> Result<String, DecodeProblem> {
    let bad = || DecodeProblem::Device { found: text.into() };
    let bytes = text.as_bytes();
    if !text.is_ascii()
        || bytes.len() != 12
        || bytes[4] != b':'
        || bytes[7] != b':'
        || bytes[10] != b'.'
    {
        return Err(bad());
    }
    let hex = |range: core::ops::Range<usize>| {
        let digits = &text[range];
        let lowercase_hex = digits
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
        if !lowercase_hex {
            return Err(bad());
        }
        u16::from_str_radix(digits, 16).map_err(|_| bad())
    };
    hex(0..4)?;
    hex(5..7)?;
    if hex(8..10)? > 0x1f || hex(11..12)? > 7 {
        return Err(bad());
    }
    Ok(text.into())
}

/// A table that [`decode_vbds`] refused: which entry (counted from 0) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub index: usize,
    pub problem: DecodeProblem,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{VBDS_KEY} entry {}: {}", self.index, self.problem)
    }
}

/// What is wrong with one entry of a table. `field` is the field's name (`frontend`,
/// `vdev`, ...); `found` is the field as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeProblem {
    /// Nothing between two `;` (or before the first, or after the last).
    Empty,
    /// Not seven fields.
    FieldCount { found: usize },
    /// `frontend` or `backend` is not a domain name.
    Name { field: &'static str, found: String },
    /// `vdev`, `start` or `sectors` is not a decimal number of its size.
    Number { field: &'static str, found: String },
    /// The mode is neither `r` nor `w`.
    Mode { found: String },
    /// The device is not a PCI function in full.
    Device { found: String },
    /// The slice ends past the last sector a 64-bit number counts.
    SliceOverflow { start: u64, sectors: u64 },
}

impl DecodeProblem {
    fn number(field: &'static str, found: &str) -> Self {
        DecodeProblem::Number {
            field,
            found: found.into(),
        }
    }
}

impl fmt::Display for DecodeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeProblem::Empty => f.write_str("is empty"),
            DecodeProblem::FieldCount { found } => write!(
                f,
                "has {found} fields, expected {FIELDS}: frontend/vdev/backend/r|w/device/start/sectors"
            ),
            DecodeProblem::Name { field, found } => write!(
                f,
                "{field} {found:?} is not a domain name (1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _ . -)"
            ),
            DecodeProblem::Number { field, found } => {
                let bits = if *field == "vdev" { 32 } else { 64 };
                write!(
                    f,
                    "{field} {found:?} is not a decimal number of at most {bits} bits (digits only, no leading zeros)"
                )
            }
            DecodeProblem::Mode { found } => write!(f, "mode {found:?} is neither r nor w"),
            DecodeProblem::Device { found } => write!(
                f,
                "device {found:?} is not a PCI function in full, such as \"0000:00:03.0\" (lowercase hex, device 00 to 1f, function 0 to 7)"
            ),
            DecodeProblem::SliceOverflow { start, sectors } => write!(
                f,
                "the slice of {sectors} sectors from sector {start} ends past the last sector a 64-bit number counts"
            ),
        }
    }
}

/// The command-line key of the vif table: `vifs=<encode_vifs(...)>`.
pub const VIFS_KEY: &str = "vifs";

/// The longest bridge name (as Linux's interface names).
pub const MAX_BRIDGE_LEN: usize = 15;

/// One network interface: `backend` bridges interface `handle` of `frontend`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VifSpec {
    pub frontend: String,
    pub handle: u32,
    pub backend: String,
    pub mac: Mac,
    pub bridge: String,
}

/// Whether `text` is a bridge name: 1 to [`MAX_BRIDGE_LEN`] of `A-Z a-z 0-9 _ . -`.
pub fn is_bridge_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_BRIDGE_LEN
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

/// Writes the vif table: the entries joined with `;`, without the `vifs=` key.
pub fn encode_vifs(list: &[VifSpec]) -> String {
    let mut text = String::new();
    for (index, vif) in list.iter().enumerate() {
        if index > 0 {
            text.push(';');
        }
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "{}/{}/{}/{}/{}",
            vif.frontend, vif.handle, vif.backend, vif.mac, vif.bridge
        );
    }
    text
}

/// A vif table that [`decode_vifs`] refused: which entry (counted from 0) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VifDecodeError {
    pub index: usize,
    pub problem: String,
}

impl fmt::Display for VifDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{VIFS_KEY} entry {}: {}", self.index, self.problem)
    }
}

/// Reads a table written by [`encode_vifs`] (the text after `vifs=`).
///
/// # Errors
///
/// The first entry, in order, that is not five well-formed fields.
pub fn decode_vifs(text: &str) -> Result<Vec<VifSpec>, VifDecodeError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(';')
        .enumerate()
        .map(|(index, entry)| {
            decode_vif(entry).map_err(|problem| VifDecodeError { index, problem })
        })
        .collect()
}

fn decode_vif(entry: &str) -> Result<VifSpec, String> {
    let fields: Vec<&str> = entry.split('/').collect();
    let &[frontend, handle, backend, mac, bridge] = fields.as_slice() else {
        return Err(alloc::format!(
            "has {} fields, expected 5: frontend/handle/backend/mac/bridge",
            fields.len()
        ));
    };
    let handle = number("handle", handle)
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            alloc::format!("handle {handle:?} is not a decimal number of at most 32 bits")
        })?;
    let parsed = Mac::parse(mac)
        .filter(|parsed| !parsed.is_group() && alloc::format!("{parsed}") == mac)
        .ok_or_else(|| {
            alloc::format!("mac {mac:?} is not a lowercase unicast xx:xx:xx:xx:xx:xx")
        })?;
    if !is_bridge_name(bridge) {
        return Err(alloc::format!(
            "bridge {bridge:?} is not a bridge name (1 to {MAX_BRIDGE_LEN} of A-Z a-z 0-9 _ . -)"
        ));
    }
    Ok(VifSpec {
        frontend: name("frontend", frontend).map_err(|e| alloc::format!("{e}"))?,
        handle,
        backend: name("backend", backend).map_err(|e| alloc::format!("{e}"))?,
        mac: parsed,
        bridge: bridge.into(),
    })
}

#[cfg(test)]
mod vif_tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn vif_tables_round_trip_and_bad_entries_are_named() {
        let list = [
            VifSpec {
                frontend: "linux".into(),
                handle: 0,
                backend: "netback".into(),
                mac: Mac([0, 0x16, 0x3e, 0, 0, 0x15]),
                bridge: "xenbr0".into(),
            },
            VifSpec {
                frontend: "web".into(),
                handle: 3,
                backend: "net2".into(),
                mac: Mac::for_domain("web", 3),
                bridge: "dmz".into(),
            },
        ];
        let text = encode_vifs(&list);
        assert!(text.starts_with("linux/0/netback/00:16:3e:00:00:15/xenbr0;web/3/net2/00:16:3e:"));
        assert_eq!(decode_vifs(&text), Ok(list.to_vec()));
        assert_eq!(decode_vifs(""), Ok(Vec::new()));
        let refused = |text: &str| decode_vifs(text).unwrap_err().to_string();
        assert_eq!(
            refused("linux/0/netback/01:16:3e:00:00:15/xenbr0"),
            "vifs entry 0: mac \"01:16:3e:00:00:15\" is not a lowercase unicast xx:xx:xx:xx:xx:xx"
        );
        assert!(
            refused("a/0/b/00:16:3e:00:00:15/xenbr0;a/01/b/00:16:3e:00:00:15/x")
                .starts_with("vifs entry 1: handle")
        );
        assert!(refused("a/0/b/00:16:3E:00:00:15/x").contains("lowercase"));
        assert!(refused("a/0/b/00:16:3e:00:00:15/bridge-name-too-long").contains("bridge"));
        assert!(refused("a/0/b/00:16:3e:00:00:15").contains("4 fields"));
        assert!(refused("a b/0/b/00:16:3e:00:00:15/x").contains("frontend"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use proptest::prelude::*;

    fn vbd(frontend: &str, vdev: u32, writable: bool, start: u64, sectors: u64) -> VbdSpec {
        VbdSpec {
            frontend: frontend.into(),
            vdev,
            backend: "blkback".into(),
            writable,
            device: "0000:00:03.0".into(),
            start,
            sectors,
        }
    }

    #[test]
    fn the_table_reads_as_the_module_says() {
        let list = [
            vbd("linux", 51712, true, 0, 0),
            vbd("other.1", 268439552, false, 131072, 262144),
        ];
        let text = encode_vbds(&list);
        assert_eq!(
            text,
            "linux/51712/blkback/w/0000:00:03.0/0/0;other.1/268439552/blkback/r/0000:00:03.0/131072/262144"
        );
        assert_eq!(decode_vbds(&text), Ok(list.to_vec()));
        assert_eq!(
            encode_vbds(&list[..1]),
            "linux/51712/blkback/w/0000:00:03.0/0/0"
        );
    }

    #[test]
    fn the_empty_table_is_the_empty_string() {
        assert_eq!(encode_vbds(&[]), "");
        assert_eq!(decode_vbds(""), Ok(Vec::new()));
    }

    #[test]
    fn the_limits_themselves_are_allowed() {
        let name = "N".repeat(MAX_NAME_LEN);
        let text = format!(
            "{name}/4294967295/a-b_c.d/r/ffff:ff:1f.7/0/18446744073709551615;x/0/y/w/0000:00:00.0/18446744073709551615/0"
        );
        let list = decode_vbds(&text).unwrap();
        assert_eq!(list[0].frontend, name);
        assert_eq!(list[0].vdev, u32::MAX);
        assert_eq!(list[0].sectors, u64::MAX);
        assert_eq!((list[1].vdev, list[1].start), (0, u64::MAX));
        assert_eq!(encode_vbds(&list), text);
    }

    /// The message for `text`, which must be refused.
    fn refused(text: &str) -> String {
        match decode_vbds(text) {
            Ok(list) => panic!("{text:?} was accepted: {list:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn the_entry_at_fault_is_named() {
        const GOOD: &str = "linux/51712/blkback/w/0000:00:03.0/0/0";
        assert_eq!(
            refused(&format!(
                "{GOOD};{GOOD};linux/51712/blkback/x/0000:00:03.0/0/0"
            )),
            "vbds entry 2: mode \"x\" is neither r nor w"
        );
        assert_eq!(refused(&format!("{GOOD};")), "vbds entry 1: is empty");
        assert_eq!(refused(&format!(";{GOOD}")), "vbds entry 0: is empty");
        assert_eq!(
            refused(&format!("{GOOD};;{GOOD}")),
            "vbds entry 1: is empty"
        );
        assert_eq!(
            decode_vbds(&format!("{GOOD};linux")),
            Err(DecodeError {
                index: 1,
                problem: DecodeProblem::FieldCount { found: 1 }
            })
        );
    }

    #[test]
    fn every_malformed_entry_is_refused() {
        let cases: &[(&str, &str)] = &[
            ("linux", "has 1 fields, expected 7: frontend/vdev/backend/r|w/device/start/sectors"),
            ("linux/51712/blkback/w/0000:00:03.0/0", "has 6 fields, expected 7: frontend/vdev/backend/r|w/device/start/sectors"),
            ("linux/51712/blkback/w/0000:00:03.0/0/0/", "has 8 fields, expected 7: frontend/vdev/backend/r|w/device/start/sectors"),
            ("linux/51712/blkback/w/0000:00:03.0/0/0/0", "has 8 fields, expected 7: frontend/vdev/backend/r|w/device/start/sectors"),
            // Names.
            ("/51712/blkback/w/0000:00:03.0/0/0", "frontend \"\" is not a domain name (1 to 31 of A-Z a-z 0-9 _ . -)"),
            ("my guest/51712/blkback/w/0000:00:03.0/0/0", "frontend \"my guest\" is not a domain name (1 to 31 of A-Z a-z 0-9 _ . -)"),
            ("gäst/51712/blkback/w/0000:00:03.0/0/0", "frontend \"gäst\" is not a domain name (1 to 31 of A-Z a-z 0-9 _ . -)"),
            ("a-domain-name-of-32-characters-x/51712/blkback/w/0000:00:03.0/0/0", "frontend \"a-domain-name-of-32-characters-x\" is not a domain name (1 to 31 of A-Z a-z 0-9 _ . -)"),
            ("linux/51712//w/0000:00:03.0/0/0", "backend \"\" is not a domain name (1 to 31 of A-Z a-z 0-9 _ . -)"),
            ("linux/51712/blk=back/w/0000:00:03.0/0/0", "backend \"blk=back\" is not a domain name (1 to 31 of A-Z a-z 0-9 _ . -)"),
            // Numbers.
            ("linux//blkback/w/0000:00:03.0/0/0", "vdev \"\" is not a decimal number of at most 32 bits (digits only, no leading zeros)"),
            ("linux/xvda/blkback/w/0000:00:03.0/0/0", "vdev \"xvda\" is not a decimal number of at most 32 bits (digits only, no leading zeros)"),
            ("linux/+51712/blkback/w/0000:00:03.0/0/0", "vdev \"+51712\" is not a decimal number of at most 32 bits (digits only, no leading zeros)"),
            ("linux/-1/blkback/w/0000:00:03.0/0/0", "vdev \"-1\" is not a decimal number of at most 32 bits (digits only, no leading zeros)"),
            ("linux/051712/blkback/w/0000:00:03.0/0/0", "vdev \"051712\" is not a decimal number of at most 32 bits (digits only, no leading zeros)"),
            ("linux/0xca00/blkback/w/0000:00:03.0/0/0", "vdev \"0xca00\" is not a decimal number of at most 32 bits (digits only, no leading zeros)"),
            ("linux/4294967296/blkback/w/0000:00:03.0/0/0", "vdev \"4294967296\" is not a decimal number of at most 32 bits (digits only, no leading zeros)"),
            ("linux/51712/blkback/w/0000:00:03.0/ 0/0", "start \" 0\" is not a decimal number of at most 64 bits (digits only, no leading zeros)"),
            ("linux/51712/blkback/w/0000:00:03.0/00/0", "start \"00\" is not a decimal number of at most 64 bits (digits only, no leading zeros)"),
            ("linux/51712/blkback/w/0000:00:03.0/0/18446744073709551616", "sectors \"18446744073709551616\" is not a decimal number of at most 64 bits (digits only, no leading zeros)"),
            ("linux/51712/blkback/w/0000:00:03.0/0/1.5", "sectors \"1.5\" is not a decimal number of at most 64 bits (digits only, no leading zeros)"),
            ("linux/51712/blkback/w/0000:00:03.0/1/18446744073709551615", "the slice of 18446744073709551615 sectors from sector 1 ends past the last sector a 64-bit number counts"),
            // Modes.
            ("linux/51712/blkback//0000:00:03.0/0/0", "mode \"\" is neither r nor w"),
            ("linux/51712/blkback/rw/0000:00:03.0/0/0", "mode \"rw\" is neither r nor w"),
            ("linux/51712/blkback/W/0000:00:03.0/0/0", "mode \"W\" is neither r nor w"),
        ];
        for &(entry, message) in cases {
            assert_eq!(
                refused(entry),
                format!("vbds entry 0: {message}"),
                "{entry}"
            );
        }
        for device in [
            "",
            "00:03.0",
            "0:00:03.0",
            "0000:0:03.0",
            "0000:00:3.0",
            "0000:00:03.00",
            "0000-00-03.0",
            "0000:00:03:0",
            "0000:00:03.8",
            "0000:00:20.0",
            "0000:00:0A.0",
            "000g:00:03.0",
            "+000:00:03.0",
            "0000:00:03.*",
            "0000:00:03.0@4",
            "0000:00:03é0",
            "0000:é:03.0",
        ] {
            assert_eq!(
                refused(&format!("linux/51712/blkback/w/{device}/0/0")),
                format!("vbds entry 0: device {device:?} is not a PCI function in full, such as \"0000:00:03.0\" (lowercase hex, device 00 to 1f, function 0 to 7)"),
            );
        }
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.-]{1,31}"
    }

    fn device_strategy() -> impl Strategy<Value = String> {
        (any::<u16>(), any::<u8>(), 0u8..=0x1f, 0u8..=7).prop_map(
            |(segment, bus, device, function)| {
                format!("{segment:04x}:{bus:02x}:{device:02x}.{function:x}")
            },
        )
    }

    fn vbd_strategy() -> impl Strategy<Value = VbdSpec> {
        (
            name_strategy(),
            any::<u32>(),
            name_strategy(),
            any::<bool>(),
            device_strategy(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(frontend, vdev, backend, writable, device, start, sectors)| {
                    VbdSpec {
                        frontend,
                        vdev,
                        backend,
                        writable,
                        device,
                        start,
                        // Keep start + sectors within 64 bits.
                        sectors: sectors.min(u64::MAX - start),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn every_table_survives_a_round_trip(list in prop::collection::vec(vbd_strategy(), 0..8)) {
            let text = encode_vbds(&list);
            prop_assert_eq!(decode_vbds(&text), Ok(list));
        }

        /// Whatever the text, decoding returns; what it accepts it writes back the same.
        #[test]
        fn any_text_decodes_or_is_refused(text in "[a-z0-9/;:.rw-]{0,64}") {
            if let Ok(list) = decode_vbds(&text) {
                prop_assert_eq!(encode_vbds(&list), text);
            }
        }

        #[test]
        fn a_changed_byte_is_refused_or_reads_back_the_same(
            list in prop::collection::vec(vbd_strategy(), 1..4),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"/;:.0aA- ".to_vec()),
        ) {
            let mut bytes = encode_vbds(&list).into_bytes();
            let index = at.index(bytes.len());
            bytes[index] = byte;
            let text = String::from_utf8(bytes).expect("ASCII");
            if let Ok(decoded) = decode_vbds(&text) {
                prop_assert_eq!(encode_vbds(&decoded), text);
            }
        }
    }
}
