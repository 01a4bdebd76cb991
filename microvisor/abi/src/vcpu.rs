//! `vcpu_op` (hypercall 24): `(cmd, vcpuid, arg)`, from Xen's `vcpu.h` and `hvm/hvm_vcpu.h`.

/// Argument: [`VcpuHvmContext`]; sets the initial state of a vCPU that is down.
pub const VCPUOP_INITIALISE: u64 = 0;
/// Start an initialised vCPU. `-EINVAL` if it was never initialised.
pub const VCPUOP_UP: u64 = 1;
/// Stop the calling domain's vCPU (it can be brought up again).
pub const VCPUOP_DOWN: u64 = 2;
/// Returns 1 if the vCPU is up, 0 if not.
pub const VCPUOP_IS_UP: u64 = 3;
/// Argument: a guest-virtual pointer to a `vcpu_register_runstate_memory_area` (the GVA of a
/// `vcpu_runstate_info`).
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
pub const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
/// Argument: [`VcpuSetSingleshotTimer`].
pub const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u64 = 9;
/// Argument: [`VcpuRegisterTimeMemoryArea`]. The microvisor keeps a [`VcpuTimeInfo`] there.
pub const VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA: u64 = 13;
/// Argument: `struct vcpu_register_vcpu_info { mfn u64 (a gfn), offset u32, rsvd u32 }`.
pub const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;

/// `struct vcpu_set_singleshot_timer`: fire at `timeout_abs_ns` of system time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuSetSingleshotTimer {
    pub timeout_abs_ns: u64,
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<VcpuSetSingleshotTimer>() == 16);
/// `VCPU_SSHOTTMR_future`: fail with `-ETIME` if the deadline is already past.
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1;
/// `-ETIME`.
pub const ETIME: i64 = -62;

/// `struct vcpu_hvm_context` with the 64-bit register set (`VCPU_HVM_MODE_64B`).
/// Segments are implicitly flat 64-bit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuHvmContext {
    pub mode: u32,
    pub _pad: u32,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}
const _: () = assert!(core::mem::size_of::<VcpuHvmContext>() == 8 + 14 * 8);
const _: () = assert!(core::mem::offset_of!(VcpuHvmContext, rip) == 8 + 8 * 8);
pub const VCPU_HVM_MODE_64B: u32 = 1;

/// `struct vcpu_register_time_memory_area`: a guest-virtual address of a [`VcpuTimeInfo`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuRegisterTimeMemoryArea {
    pub addr_gva: u64,
}

/// `struct vcpu_time_info` (pvclock): system time in ns is
/// `system_time + ((tsc - tsc_timestamp) << tsc_shift (or >> -tsc_shift)) * tsc_to_system_mul >> 32`.
/// `version` is odd while the microvisor updates the record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuTimeInfo {
    pub version: u32,
    pub _pad0: u32,
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
    pub flags: u8,
    pub _pad1: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<VcpuTimeInfo>() == 32);
const _: () = assert!(core::mem::offset_of!(VcpuTimeInfo, tsc_to_system_mul) == 24);
