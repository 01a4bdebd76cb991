//! The compiled system manifest: what the host-side `manifests` crate produces from the
//! user's `xl.cfg` files and the microvisor decodes at boot (boot module 0), as `postcard`.
//!
//! Boot modules: module 0 is this blob; domain images follow, and
//! [`DomainSpec::image_module`] is the index of the module that holds a domain's ELF image,
//! [`DomainSpec::ramdisk_module`] that of its initramfs, if it has one.

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

/// The most domains one system may boot with.
pub const MAX_DOMAINS: usize = 16;
pub const MAX_NAME_BYTES: usize = 32;
pub const MAX_CMDLINE_BYTES: usize = 512;
pub const MAX_VCPUS: u32 = 8;
/// Layout version of the blob; bumped on any incompatible change.
pub const MANIFEST_VERSION: u32 = 7;
/// The most PCI functions one domain may be given (`pci`).
pub const MAX_PCI_FUNCTIONS: usize = 8;
/// The most I/O port ranges one domain may be given (`ioports`).
pub const MAX_IOPORT_RANGES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainType {
    Pvh,
}

/// What to do when a domain shuts down for a given reason (`on_poweroff`, `on_reboot`, `on_crash`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LifecycleAction {
    /// Tear the domain down and give its (scrubbed) memory back.
    Destroy,
    /// Destroy it and build it again from the same manifest entry.
    Restart,
    /// Keep it, stopped, for inspection; its memory stays allocated.
    Preserve,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainSpec {
    pub name: String<MAX_NAME_BYTES>,
    pub kind: DomainType,
    /// Index of the boot module holding the ELF image (>= 1).
    pub image_module: u16,
    /// Index of the boot module holding the initramfs (xl's `ramdisk`), if any; it is passed
    /// to the guest as the one module of `hvm_start_info`.
    pub ramdisk_module: Option<u16>,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub cmdline: String<MAX_CMDLINE_BYTES>,
    pub on_poweroff: LifecycleAction,
    pub on_reboot: LifecycleAction,
    pub on_crash: LifecycleAction,
    /// I/O port ranges the domain may access directly (xl's `ioports`), e.g. the UART of the
    /// console domain.
    pub ioports: Vec<IoPortRange, MAX_IOPORT_RANGES>,
    /// PCI functions passed through to the domain (xl's `pci`), which it drives itself; its
    /// DMA goes through the IOMMU into its own memory only.
    pub pci: Vec<PciAddress, MAX_PCI_FUNCTIONS>,
}

/// A PCI function: `SSSS:BB:DD.F`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciAddress {
    pub segment: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

/// An inclusive range of I/O ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoPortRange {
    pub first: u16,
    pub last: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemManifest {
    pub version: u32,
    pub domains: Vec<DomainSpec, MAX_DOMAINS>,
    /// Index (in `domains`) of the domain that serves xenstore, if any. Every other domain
    /// gets a xenstore ring and port connected to it.
    pub xenstore_domain: Option<u8>,
    /// Index of the console backend domain, if any. Every other domain gets a console ring
    /// and port connected to it; without one, domains use `console_io` only.
    pub console_domain: Option<u8>,
    /// Index of the block backend domain (the system's `disk_backend`), if any: a service
    /// domain like the two above, stopped only once every guest is gone.
    pub disk_backend: Option<u8>,
    /// Index of the network backend domain (the system's `net_backend`), if any: a service
    /// domain too.
    pub net_backend: Option<u8>,
    /// Index of the control domain (the system's `control_domain`), if any: the one domain
    /// the domain-control operations (`MVOP_DOMCTL_*`) answer. A system with one is not
    /// powered off when its guests are gone: the control domain may create more.
    pub control_domain: Option<u8>,
}

impl SystemManifest {
    /// Whether the domain at `index` serves others (xenstore, console, disk or network
    /// backend): such domains are stopped once every guest is gone. The control domain is
    /// not one: like a guest, it keeps the system up.
    pub fn is_service(&self, index: usize) -> bool {
        [
            self.xenstore_domain,
            self.console_domain,
            self.disk_backend,
            self.net_backend,
        ]
        .iter()
        .any(|service| service.map(usize::from) == Some(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_postcard() {
        let mut domains = Vec::new();
        domains
            .push(DomainSpec {
                name: String::try_from("hello").unwrap(),
                kind: DomainType::Pvh,
                image_module: 1,
                ramdisk_module: Some(2),
                memory_mib: 16,
                vcpus: 2,
                cmdline: String::try_from("mode=hello").unwrap(),
                on_poweroff: LifecycleAction::Destroy,
                on_reboot: LifecycleAction::Restart,
                on_crash: LifecycleAction::Preserve,
                ioports: Vec::new(),
                pci: Vec::new(),
            })
            .unwrap();
        let manifest = SystemManifest {
            version: MANIFEST_VERSION,
            domains,
            xenstore_domain: None,
            console_domain: Some(0),
            disk_backend: None,
            net_backend: Some(0),
            control_domain: None,
        };
        assert!(manifest.is_service(0) && !manifest.is_service(1));
        let bytes = postcard::to_allocvec(&manifest).unwrap();
        let back: SystemManifest = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, manifest);
    }
}
