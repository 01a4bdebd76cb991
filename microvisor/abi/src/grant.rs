//! `grant_table_op` (hypercall 20): `(cmd, uop array, count)`, grant tables version 1
//! (`grant_table.h`).

pub const GNTTABOP_MAP_GRANT_REF: u64 = 0;
pub const GNTTABOP_UNMAP_GRANT_REF: u64 = 1;
pub const GNTTABOP_SETUP_TABLE: u64 = 2;
pub const GNTTABOP_COPY: u64 = 5;
pub const GNTTABOP_QUERY_SIZE: u64 = 6;
pub const GNTTABOP_SET_VERSION: u64 = 8;
pub const GNTTABOP_GET_VERSION: u64 = 10;

/// `struct grant_entry_v1` (8 bytes): 0 flags u16, 2 domid u16 (grantee), 4 frame u32 (gfn).
pub const GRANT_ENTRY_SIZE: usize = 8;
pub const ENTRIES_PER_FRAME: u32 = 512;
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

/// `GTF_*` flags of a v1 entry.
pub const GTF_TYPE_MASK: u16 = 3;
pub const GTF_INVALID: u16 = 0;
pub const GTF_PERMIT_ACCESS: u16 = 1;
pub const GTF_READONLY: u16 = 1 << 2;
pub const GTF_READING: u16 = 1 << 3;
pub const GTF_WRITING: u16 = 1 << 4;

/// `GNTMAP_*` flags of a map request.
pub const GNTMAP_DEVICE_MAP: u32 = 1;
pub const GNTMAP_HOST_MAP: u32 = 2;
pub const GNTMAP_READONLY: u32 = 4;

/// `GNTCOPY_*` flags of a copy request.
pub const GNTCOPY_SOURCE_GREF: u16 = 1;
pub const GNTCOPY_DEST_GREF: u16 = 2;

/// `GNTST_*` per-operation status codes.
pub const GNTST_OKAY: i16 = 0;
pub const GNTST_GENERAL_ERROR: i16 = -1;
pub const GNTST_BAD_DOMAIN: i16 = -2;
pub const GNTST_BAD_GNTREF: i16 = -3;
pub const GNTST_BAD_HANDLE: i16 = -4;
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
pub const GNTST_PERMISSION_DENIED: i16 = -8;
pub const GNTST_BAD_PAGE: i16 = -9;
pub const GNTST_BAD_COPY_ARG: i16 = -10;
pub const GNTST_NO_SPACE: i16 = -13;

/// `struct gnttab_map_grant_ref` (32 bytes): 0 host_addr u64 (the GPA to map at, for an
/// auto-translated mapper), 8 flags u32, 12 ref u32, 16 dom u16, 18 status i16 (out),
/// 20 handle u32 (out), 24 dev_bus_addr u64 (out).
pub const MAP_GRANT_REF_SIZE: usize = 32;
/// `struct gnttab_unmap_grant_ref` (24 bytes): 0 host_addr u64, 8 dev_bus_addr u64,
/// 16 handle u32, 20 status i16 (out).
pub const UNMAP_GRANT_REF_SIZE: usize = 24;
/// `struct gnttab_copy` (40 bytes): 0 source {0 ref u32 or gmfn u64, 8 domid u16, 10 offset u16},
/// 16 dest {same}, 32 len u16, 34 flags u16, 36 status i16 (out).
pub const COPY_SIZE: usize = 40;
/// `struct gnttab_query_size` (16 bytes): 0 dom u16, 4 nr_frames u32 (out), 8 max_nr_frames u32
/// (out), 12 status i16 (out).
pub const QUERY_SIZE_SIZE: usize = 16;
