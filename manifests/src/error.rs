//! The one error type of the crate: where the problem is (file, line, key) and what it is.
//!
//! Display format, one line, meant for a person at a terminal and for editors that jump to
//! `file:line`:
//!
//! ```text
//! manifests/demo/hello.cfg:3: key `memory`: expected an integer number of MiB, found "lots"
//! manifests/demo/hello.cfg: key `kernel`: required key is missing
//! manifests/demo/hello.cfg:7: unknown key `memroy` (keys allowed here: name, type, ...)
//! ```
//!
//! The line is left out when the problem concerns the whole file (a missing key, a file that
//! cannot be read); the key is left out when there is none yet (a syntax error before `=`) or
//! when the message names it itself (unknown and unsupported keys).

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Something in a configuration file, or an image it names, that keeps the system from
/// compiling.
#[derive(Debug, Error)]
#[error("{location}{problem}")]
pub struct ManifestError {
    pub location: Location,
    pub problem: Problem,
}

impl ManifestError {
    pub(crate) fn new(
        file: impl Into<PathBuf>,
        line: Option<usize>,
        key: Option<&str>,
        problem: Problem,
    ) -> Self {
        ManifestError {
            location: Location {
                file: file.into(),
                line,
                key: key.map(str::to_owned),
            },
            problem,
        }
    }
}

/// Where a [`ManifestError`] is: the file, the 1-based line (if one line is at fault) and the
/// key (if the problem belongs to one setting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
}

impl fmt::Display for Location {
    /// Writes the prefix of the message: `file:line: key `k`: ` (parts left out when absent).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        Ok(())
    }
}

/// What is wrong. `found` fields are already quoted for display (`"lots"`, `` `lots` ``,
/// `the end of the line`).
#[derive(Debug, Error)]
pub enum Problem {
    // Syntax.
    #[error("expected a key name, found {found}")]
    ExpectedKey { found: String },
    #[error("expected `=` after the key, found {found}")]
    ExpectedEquals { found: String },
    #[error("missing value after `=`")]
    MissingValue,
    #[error("expected a value (a quoted string, an integer or a list), found {found}")]
    ExpectedValue { found: String },
    #[error("unterminated string: the closing {quote} must be on the same line")]
    UnterminatedString { quote: char },
    #[error("unknown escape `\\{escape}` in a string (the escapes are \\\\, \\\" and \\')")]
    UnknownEscape { escape: char },
    #[error("{found} is not an integer (write decimal digits, or 0x and hex digits)")]
    BadInteger { found: String },
    #[error("list items must be quoted strings, found {found}")]
    ExpectedListItem { found: String },
    #[error("expected `,` or `]` after a list item, found {found}")]
    ExpectedListSeparator { found: String },
    #[error("the list opened on line {opened_line} is never closed with `]`")]
    UnclosedList { opened_line: usize },
    #[error("unexpected {found} after the value (one setting per line)")]
    TrailingText { found: String },

    // Keys.
    #[error("set twice: first on line {first_line}, again on line {second_line}")]
    DuplicateKey {
        first_line: usize,
        second_line: usize,
    },
    #[error("unknown key `{key}` (keys allowed here: {allowed})")]
    UnknownKey { key: String, allowed: String },
    #[error("key `{key}` is not supported yet")]
    UnsupportedKey { key: String },
    #[error("required key is missing{hint}")]
    MissingKey { hint: &'static str },

    // Values.
    #[error("expected {expected}, found {found}")]
    Invalid { expected: String, found: String },
    #[error("{found} is out of range: allowed are {min} to {max}{unit}")]
    OutOfRange {
        found: u64,
        min: u64,
        max: u64,
        unit: &'static str,
    },
    #[error("{found} is not supported yet, use {instead}")]
    NotSupportedYet {
        found: String,
        instead: &'static str,
    },
    #[error("\"microvisor\" is reserved for the microvisor itself")]
    ReservedName,
    #[error("is {length} bytes long, at most {max} are allowed")]
    TooLong { length: usize, max: usize },
    #[error("must not contain control characters (found {found:?})")]
    ControlCharacter { found: char },
    /// `root=<root> ` and the command line of `key` (on `line`) are too long together.
    #[error("`root=` and `{key}` (line {line}) make a kernel command line of {length} bytes, at most {max} are allowed")]
    TooLongWithRoot {
        length: usize,
        max: usize,
        key: String,
        line: usize,
    },
    #[error(
        "both `cmdline` (line {cmdline_line}) and `extra` set the kernel command line; keep one"
    )]
    CmdlineAndExtra { cmdline_line: usize },
    #[error("{found} is out of range: I/O ports are 0 to ffff (hex)")]
    IoPortOutOfRange { found: String },
    #[error("{found} is backwards: its first port is above its last")]
    IoPortRangeBackwards { found: String },
    #[error("{found} overlaps {other} (line {other_line}); list each port once")]
    IoPortOverlap {
        found: String,
        other: String,
        other_line: usize,
    },
    #[error("lists {count} I/O port ranges, at most {max} are allowed")]
    TooManyIoPortRanges { count: usize, max: usize },
    #[error("{found}: {part} {value:x} is out of range: PCI {part}s are {range} (hex)", range = .part.range())]
    PciOutOfRange {
        found: String,
        part: PciPart,
        value: u16,
    },
    #[error("{found}: all the functions of a device at once (`.*`) are not supported yet; list each function, such as {example:?}")]
    PciAllFunctions { found: String, example: String },
    #[error("{found}: a virtual slot (`@{slot}`) is not supported yet; the domain sees the function at its own address")]
    PciVirtualSlot { found: String, slot: String },
    #[error("{found}: per-device options are not supported yet; write the function alone, without `,{options}`")]
    PciOptions { found: String, options: String },
    /// `other` is the item it repeats and its line: `"00:03.0" (line 7)`.
    #[error("{found} is the same function as {other}; list each function once")]
    PciDuplicate { found: String, other: String },
    #[error("lists {count} PCI functions, at most {max} are allowed")]
    TooManyPciFunctions { count: usize, max: usize },
    #[error("lists {count} disks, at most {max} are allowed")]
    TooManyDisks { count: usize, max: usize },
    #[error("lists {count} network interfaces, at most {max} are allowed")]
    TooManyVifs { count: usize, max: usize },
    /// One interface of `vif` (`spec` is its specification, quoted) and what is wrong.
    #[error("{spec}: {defect}")]
    Vif {
        spec: String,
        defect: Box<VifDefect>,
    },
    /// One disk of `disk` (`spec` is its specification, quoted) and what is wrong with it,
    /// on its own or in the system (boxed: some defects are large, errors stay small).
    #[error("{spec}: {defect}")]
    Disk {
        spec: String,
        defect: Box<DiskDefect>,
    },

    // The system.
    #[error("lists {count} domains, at most {max} are allowed")]
    TooManyDomains { count: usize, max: usize },
    #[error("domain name {name:?} is already used by {other}")]
    DuplicateName { name: String, other: String },
    /// `other` is the range it overlaps, the domain given it and where: `"3f8-3ff" given to
    /// domain "uart" (uart.cfg:6)`.
    #[error("{found} overlaps {other}; an I/O port belongs to one domain only")]
    IoPortTaken { found: String, other: String },
    /// `other` is the domain given it, the function as that domain wrote it and where:
    /// `domain "nic" as "0000:03:00.0" (nic.cfg:6)`.
    #[error("{found} is already given to {other}; a PCI function belongs to one domain only")]
    PciTaken { found: String, other: String },
    #[error("no domain listed in `domains` is named {name:?} (the domains are: {known})")]
    UnknownDomain { name: String, known: String },
    /// `first` is the first disk line: `linux.cfg:9`.
    #[error("required when a domain has disks ({first} gives one): the xenstore domain tells the backends which disks to serve")]
    DisksNeedXenstore { first: String },
    /// `first` is the first vif line: `linux.cfg:9`.
    #[error("required when a domain has network interfaces ({first} gives one): the xenstore domain tells the backends which vifs to serve")]
    VifsNeedXenstore { first: String },

    // Files and images.
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("kernel image {name:?} not found; looked for {looked}")]
    KernelNotFound { name: String, looked: String },
    #[error("ramdisk image {name:?} not found; looked for {looked}")]
    RamdiskNotFound { name: String, looked: String },
    #[error("{} is not a PVH image: {defect}", path.display())]
    NotPvhImage { path: PathBuf, defect: ImageDefect },
    #[error("cannot encode the manifest: {reason}")]
    Encode { reason: String },
}

/// The part of a PCI address that is out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciPart {
    Device,
    Function,
}

impl PciPart {
    /// The values allowed, in hex.
    pub fn range(self) -> &'static str {
        match self {
            PciPart::Device => "00 to 1f",
            PciPart::Function => "0 to 7",
        }
    }
}

impl fmt::Display for PciPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PciPart::Device => "device",
            PciPart::Function => "function",
        })
    }
}

/// What is wrong with one disk specification of `disk`. `found` fields are quoted for
/// display.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DiskDefect {
    // The specification itself.
    #[error("unknown parameter `{key}=` (parameters allowed: target, vdev, access, format, devtype, backend, backendtype)")]
    UnknownParameter { key: String },
    /// An xl disk parameter or flag (`script=`, `discard`, ...) not implemented here.
    #[error("`{parameter}` is not supported yet")]
    UnsupportedParameter { parameter: String },
    #[error("gives `{parameter}` twice (each parameter once, by position or by key)")]
    ParameterTwice { parameter: &'static str },
    #[error("{found} is a positional parameter, but target, format, vdev and access (the positional parameters) are all given already")]
    TooManyPositional { found: String },
    #[error("`{prefix}:` before the target is xl's deprecated syntax, which is not supported: write <target>,<format>,<vdev>,<access> or key=value parameters, such as \"0000:00:03.0,raw,xvda,rw\"")]
    LegacyPrefix { prefix: String },
    #[error("no target: give the backend's PCI function that holds the disk, such as `0000:00:03.0,raw,xvda,rw` or `target=0000:00:03.0`")]
    MissingTarget,
    #[error("no vdev: give the name the guest sees the disk by, such as `xvda`")]
    MissingVdev,
    #[error("access {found} is not r or ro (read-only), w or rw (writable)")]
    BadAccess { found: String },
    #[error("format {found} is not supported: the backend serves raw disks only (format raw)")]
    BadFormat { found: String },
    #[error("CD-ROM drives are not supported; a disk is devtype=disk")]
    Cdrom,
    #[error("devtype {found} is not known; the device type is disk")]
    BadDevtype { found: String },
    #[error("backendtype {found} is not supported: disks are served by a block backend in a driver domain (backendtype phy)")]
    BadBackendtype { found: String },
    #[error("backend {found} is not a domain name (1 to 31 of A-Z a-z 0-9 _ . -)")]
    BadBackendName { found: String },

    // The vdev.
    #[error("vdev {found} is not a virtual disk: write xvd and letters (xvda, xvdb, ..., xvdz, xvdaa, ...) or the device number in decimal")]
    BadVdev { found: String },
    #[error(
        "vdev {found}: use xvd names ({instead:?}): a Linux PVH guest sees its disks as /dev/xvd*"
    )]
    LegacyVdev { found: String, instead: String },
    #[error("vdev {found} is a partition; give whole disks only, such as {disk:?} (the guest partitions it, or give it a slice of the backend's disk as a disk of its own)")]
    Partition { found: String, disk: String },
    #[error("vdev {found} is out of range: the disks are xvda to xvdbgqcv (1048576 of them), the device numbers 0 to 4294967295")]
    VdevOutOfRange { found: String },
    /// `found` is the vdev, and its device number if written as a name: `"xvda" (device
    /// number 51712)`; `other` is the disk that has it and its line: `"03:00.0,raw,xvda"
    /// (line 7)`.
    #[error("vdev {found} is already the vdev of {other}; give each disk its own")]
    VdevTwice { found: String, other: String },

    // The target.
    #[error("target {found} is not a PCI function [DDDD:]BB:DD.F in hex, with or without a slice @START+SIZE, such as \"0000:00:03.0\" or \"0000:00:03.0@64M+128M\"")]
    BadTarget { found: String },
    #[error("target {found} is a path, but a disk here is on a PCI function of its backend: write the function, as in the backend's `pci`, such as \"0000:00:03.0\", and @START+SIZE for a slice of it")]
    TargetPath { found: String },
    #[error("target {found}: {part} {value:x} is out of range: PCI {part}s are {range} (hex)", range = .part.range())]
    TargetOutOfRange {
        found: String,
        part: PciPart,
        value: u16,
    },
    #[error("slice {found} is not START+SIZE, such as \"64M+128M\"")]
    BadSlice { found: String },
    /// `what` is `start` or `size`.
    #[error("slice {what} {found} is not a byte count: decimal digits, then K, M, G or T for KiB, MiB, GiB or TiB if you like")]
    BadByteCount { what: &'static str, found: String },
    #[error("slice {what} {found} is {bytes} bytes, not a multiple of the 512-byte sector")]
    NotSectorMultiple {
        what: &'static str,
        found: String,
        bytes: u64,
    },
    #[error("slice size {found} is 0; a slice holds at least one sector (512 bytes)")]
    EmptySlice { found: String },
    #[error("slice {found} ends past the 16 EiB that a 64-bit byte count reaches")]
    SliceTooLarge { found: String },

    // The system (checked when the system is compiled).
    #[error("no backend: give the disk backend=<driver domain>, or set `disk_backend` in the system file {}", system.display())]
    NoBackend { system: PathBuf },
    /// `backend` is the backend and where it was named: `backend "blk"` or `backend "blk"
    /// (`disk_backend`, system.cfg:4)`.
    #[error("{backend} is not a domain of the system (the domains are: {known})")]
    UnknownBackend { backend: String, known: String },
    #[error("{backend} is this domain itself; a disk is served by another domain, the driver domain that has its PCI function")]
    OwnBackend { backend: String },
    /// `pci` is the backend's `pci` list in full form: `[ "0000:00:04.0" ]`.
    #[error("target {target} is not a PCI function of {backend}: its `pci` in {file} is {pci}")]
    NotInBackend {
        target: String,
        backend: String,
        file: String,
        pci: String,
    },
    /// `other` is the other disk, its domain and where: `"03:00.0,raw,xvda,w" of domain
    /// "linux" (linux.cfg:7)`.
    #[error("overlaps {other} on {target} of backend {backend:?}, and one of them is writable; give each writable disk a slice of its own")]
    Overlap {
        other: String,
        target: String,
        backend: String,
    },
    /// The xenstore domain's command line with `vbds=` up to this disk is `length` bytes.
    #[error("its entry makes the command line of the xenstore domain {domain:?} ({file}) {length} bytes long, at most {max} are allowed: the xenstore domain gets the system's disks as `vbds=` on its command line")]
    CmdlineFull {
        domain: String,
        file: String,
        length: usize,
        max: usize,
    },
}

/// What is wrong with one network interface of `vif`. `found` fields are quoted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum VifDefect {
    #[error("unknown parameter `{key}=` (parameters allowed: mac, bridge, backend, type)")]
    UnknownParameter { key: String },
    #[error("`{parameter}` is an xl vif parameter not supported here (parameters allowed: mac, bridge, backend, type)")]
    UnsupportedParameter { parameter: String },
    #[error("{found} is not a parameter: write key=value, such as \"mac=00:16:3e:01:02:03\"")]
    NotKeyValue { found: String },
    #[error("`{parameter}=` is given twice")]
    ParameterTwice { parameter: &'static str },
    #[error("mac {found} is not six hex bytes separated by colons, such as \"00:16:3e:01:02:03\"")]
    BadMac { found: String },
    #[error("mac {found} is a group (multicast) address; a network interface needs a unicast one (bit 0 of the first byte clear)")]
    GroupMac { found: String },
    #[error("mac {found} is all zeroes")]
    ZeroMac { found: String },
    #[error("bridge {found} is not a bridge name: 1 to 15 of A-Z a-z 0-9 _ . -")]
    BadBridge { found: String },
    #[error("backend {found} is not a domain name")]
    BadBackendName { found: String },
    #[error("type ioemu is not supported: a PVH guest has no emulated NIC; its interfaces are xen-netfront vifs (type=vif)")]
    Ioemu,
    #[error("type {found} is not known; the type is vif")]
    BadType { found: String },
    // The system (checked when the system is compiled).
    #[error("no backend: give the interface backend=<driver domain>, or set `net_backend` in the system file {}", system.display())]
    NoBackend { system: PathBuf },
    #[error("{backend} is not a domain of the system (the domains are: {known})")]
    UnknownBackend { backend: String, known: String },
    #[error("{backend} is this domain itself; a vif is served by another domain, the network driver domain")]
    OwnBackend { backend: String },
    /// `other` is the other vif, its domain and where.
    #[error("mac {mac} is already the address of {other}; give each interface its own")]
    MacTaken { mac: String, other: String },
    #[error("its entry makes the command line of the xenstore domain {domain:?} ({file}) {length} bytes long, at most {max} are allowed: the xenstore domain gets the system's vifs as `vifs=` on its command line")]
    CmdlineFull {
        domain: String,
        file: String,
        length: usize,
        max: usize,
    },
}

/// Why a kernel file is not a PVH image the microvisor can boot.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ImageDefect {
    #[error("not an ELF file ({reason})")]
    NotElf { reason: String },
    #[error("a 32-bit ELF file; PVH images must be ELF64")]
    NotElf64,
    #[error("not built for x86-64 (ELF machine {machine}, little-endian {little_endian})")]
    NotX86_64 { machine: u16, little_endian: bool },
    #[error("not an executable (ELF type {e_type}; link it as a static, non-PIE executable)")]
    NotExecutable { e_type: u16 },
    #[error("no XEN_ELFNOTE_PHYS32_ENTRY note")]
    NoPhys32Entry,
    #[error("the XEN_ELFNOTE_PHYS32_ENTRY note holds {length} bytes, expected 4 or 8")]
    BadPhys32Entry { length: usize },
}
