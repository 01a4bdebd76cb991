//! The portable logic of the microvisor, tested on the host (the Hubris `kerncore` split).
//!
//! Nothing here touches hardware: the hardware crate owns the page tables, VMCBs, the
//! direct map and the locks, and calls into these modules with plain values, caller-owned
//! storage and small traits over memory it controls. No allocator, no `unsafe`, and no
//! panics on input from firmware, boot modules or domains.
//!
//! | module | job |
//! |---|---|
//! | [`frames`] | host frame allocator: a lowest-first bitmap over caller storage |
//! | [`image`] | PVH ELF image validation (PT_LOAD at `p_paddr`, `PHYS32_ENTRY` note) |
//! | [`cpuid`] | the CPUID policy a domain sees, with Xen's leaves |
//! | [`guest_acpi`] | a PVH domain's ACPI tables (RSDP, XSDT, FADT, MADT, DSDT) |
//! | [`vlapic`] | a domain vCPU's virtual local APIC (x2APIC MSRs, IPIs) |
//! | [`ioexit`] | I/O-instruction intercepts: decoding, the answer for unclaimed ports |
//! | [`start_info`] | the `hvm_start_info` page: start info, memory map, command line |
//! | [`pagewalk`] | guest-virtual to guest-physical walks and copies for hypercall pointers |
//! | [`guest_arg`] | hypercall argument structs: read from guest memory once, decoded, checked |
//! | [`sched`] | scheduling policy: vCPU states and a FIFO run queue |
//! | [`restart`] | what a restarted domain inherits, and when a restart loop is given up on |
//! | [`ratelimit`] | a log-line rate limit (IOMMU fault lines) |
//! | [`acpi`] | host ACPI tables: CPUs, IO-APIC, MCFG, DMAR/IVRS, table ranges |
//! | [`vtd`] / [`amdvi`] | IOMMU encodings: Intel VT-d and AMD-Vi tables, commands, faults |
//! | [`iopt`] | the I/O page tables both IOMMUs walk, one entry format each |
//! | [`multiboot`] | the Multiboot1 information: memory map, modules, command line |
//! | [`time`] | TSC to nanoseconds in pvclock form, PIT calibration |
//! | [`phys`] | the [`PhysRead`] trait the boot-time parsers read memory through |
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod acpi;
pub mod amdvi;
pub mod cpuid;
pub mod evtchn;
pub mod frames;
pub mod grant;
pub mod guest_acpi;
pub mod guest_arg;
pub mod image;
pub mod iopt;
pub mod ioexit;
pub mod multiboot;
pub mod pagewalk;
pub mod pci;
pub mod phys;
pub mod pvh_boot;
pub mod ratelimit;
pub mod restart;
pub mod sched;
pub mod start_info;
pub mod time;
pub mod vlapic;
pub mod vtd;

pub use frames::{FrameAllocator, FrameError};
pub use image::{parse_pvh_image, ImageError, PvhImage, Segment};
pub use pagewalk::{
    copy_from_guest, copy_to_guest, translate, Access, GuestPhysMemory, PagingMode, WalkError,
};
pub use phys::PhysRead;
pub use sched::{SchedError, Scheduler, VcpuRef, VcpuState};
pub use start_info::{write_start_info, BootLayout, MemoryRange, StartInfoError};
pub use time::TscScale;
