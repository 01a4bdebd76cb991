//! `xen_version` (hypercall 17): `(cmd, arg)`, from Xen's `version.h`.

/// Returns `major << 16 | minor` in RAX; no argument.
pub const XENVER_VERSION: u64 = 0;
/// Writes a 16-byte NUL-padded string.
pub const XENVER_EXTRAVERSION: u64 = 1;
/// Writes a 1024-byte NUL-padded string.
pub const XENVER_CAPABILITIES: u64 = 3;
/// Writes [`XenFeatureInfo`]; the guest fills `submap_idx`.
pub const XENVER_GET_FEATURES: u64 = 6;
/// Returns the page size in RAX.
pub const XENVER_PAGESIZE: u64 = 7;

/// The Xen version the microvisor reports (the interface level it follows).
pub const VERSION_MAJOR: u32 = 4;
pub const VERSION_MINOR: u32 = 17;
pub const EXTRAVERSION: &[u8; 16] = b"-microvisor\0\0\0\0\0";
pub const CAPABILITIES: &[u8] = b"hvm-3.0-x86_64";

/// `struct xen_feature_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenFeatureInfo {
    pub submap_idx: u32,
    pub submap: u32,
}
const _: () = assert!(core::mem::size_of::<XenFeatureInfo>() == 8);

/// Feature bits of submap 0 (`XENFEAT_*`).
pub const XENFEAT_WRITABLE_PAGE_TABLES: u32 = 0;
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
pub const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;
/// The features this microvisor reports in submap 0: what Xen gives a PVH domU (0x305).
/// Linux needs `hvm_callback_vector` for event upcalls (and so its PV timer and xenbus)
/// and `hvm_safe_pvclock` for the Xen clocksource.
pub const FEATURES_SUBMAP0: u32 = (1 << XENFEAT_WRITABLE_PAGE_TABLES)
    | (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP)
    | (1 << XENFEAT_HVM_CALLBACK_VECTOR)
    | (1 << XENFEAT_HVM_SAFE_PVCLOCK);
