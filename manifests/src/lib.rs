//! The host-side manifest compiler.
//!
//! The user describes each domain in Xen's `xl.cfg` syntax (`name`, `type`, `kernel`,
//! `ramdisk`, `memory`, `vcpus`, `cmdline`, `root`, `on_crash`, `ioports`, `pci`, `disk`,
//! ...) and lists the domains that boot in a system file, with the domains that serve
//! xenstore, the console and the disks. This crate reads and validates them (every error
//! names the file, the line and the key) and compiles the system into the `postcard` blob
//! whose schema is [`microvisor_abi::manifest::SystemManifest`]: the microvisor decodes that
//! blob at boot and never sees text (ARCHITECTURE.md, decision 6). The disks are not in the
//! blob: they go to the xenstore domain as a device table on its command line
//! ([`service_common::devices`]).
//!
//! - [`compile_system`]: system file → [`CompiledSystem`] (manifest, blob, boot module images).
//! - [`referenced_images`]: the kernels and ramdisks a system file's domains name.
//! - [`parse_domain_config`]: one domain file's text → [`DomainConfig`] (no file access).
//! - [`parse_system_config`]: a system file's text → [`SystemConfig`].
//! - [`pvh_entry_point`]: checks that an image is a PVH ELF image.
//!
//! `manifests/README.md` describes the file format for users.
#![forbid(unsafe_code)]

mod compile;
mod disk;
mod domain;
mod error;
mod image;
mod syntax;
mod system;
mod table;
mod vbds;
mod vif;
mod vifs;
mod xl_keys;

pub use compile::{compile_system, created_devices, referenced_images, CompiledSystem};
pub use disk::{DiskEntry, DiskSlice, MAX_DISKS, SECTOR_BYTES};
pub use domain::{
    parse_domain_config, DomainConfig, ImageRef, IoPortEntry, PciEntry, DOMAIN_KEYS,
    MAX_CMDLINE_LEN, MAX_NAME_LEN, MEMORY_MIB_RANGE, RESERVED_NAME,
};
pub use error::{DiskDefect, ImageDefect, Location, ManifestError, PciPart, Problem};
pub use image::{domain_images, pvh_entry_point};
pub use system::{parse_system_config, DomainEntry, DomainRef, SystemConfig, SYSTEM_KEYS};
