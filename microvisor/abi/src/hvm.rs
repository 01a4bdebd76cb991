//! `hvm_op` (hypercall 34) and `memory_op` (hypercall 12): HVM parameters and the physmap
//! operations a PVH domain uses (`hvm/hvm_op.h`, `hvm/params.h`, `memory.h`).

pub const HVMOP_SET_PARAM: u64 = 0;
pub const HVMOP_GET_PARAM: u64 = 1;
/// `struct xen_hvm_param` (16 bytes): 0 domid u16, 4 index u32, 8 value u64.
pub const HVM_PARAM_SIZE: usize = 16;

pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
pub const HVM_PARAM_STORE_PFN: u32 = 1;
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// Number of HVM params (`HVM_NR_PARAMS`).
pub const HVM_NR_PARAMS: u32 = 39;
/// `HVM_PARAM_CALLBACK_IRQ` type field (bits 63:56) value for "inject this vector".
pub const CALLBACK_TYPE_VECTOR: u64 = 2;

pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
/// `struct xen_add_to_physmap` (24 bytes): 0 domid u16, 2 size u16, 4 space u32, 8 idx u64, 16 gpfn u64.
pub const ADD_TO_PHYSMAP_SIZE: usize = 24;
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
