//! Hypercall arguments in guest memory, read once.
//!
//! A struct that a hypercall's pointer names lives in memory every vCPU of the calling
//! domain may rewrite while the call runs. The microvisor therefore copies it out of the
//! guest whole, with one [`read`] of exactly its size, into a local buffer; decodes that
//! copy into a plain value ([`GuestArg::decode`]); and validates and uses only that value.
//! It never reads the guest's struct again, and it writes back only the output fields (at
//! the offsets named here), never the inputs. A vCPU that changes an argument during the
//! call decides at most which version of each byte the call saw (a struct that crosses a
//! page is copied page by page, so its two parts may be of different versions, as with
//! any copy racing a writer): a check cannot pass on one value while the work is done on
//! another (the XSA-155 double fetch). Arrays are read the same way, element by element
//! (grant operations) or whole (`SCHEDOP_poll`'s ports), each byte once. The hardware crate
//! copies with volatile loads, so the compiler cannot fetch the guest's bytes again either.
//!
//! Decoders are total: any bytes decode to some value. Layouts are Xen's; the sizes are
//! named in `microvisor_abi`. The `GNTTABOP_*` structs are in [`crate::grant`].

use crate::pagewalk::{copy_from_guest, GuestPhysMemory, PagingMode, WalkError};
use microvisor_abi::errno::{EINVAL, EPERM};
use microvisor_abi::evtchn::{
    ALLOC_UNBOUND_SIZE, BIND_INTERDOMAIN_SIZE, BIND_IPI_SIZE, BIND_VCPU_SIZE, BIND_VIRQ_SIZE,
    DOMID_SELF, PORT_ARG_SIZE, STATUS_SIZE,
};
use microvisor_abi::grant::QUERY_SIZE_SIZE;
use microvisor_abi::hvm::{ADD_TO_PHYSMAP_SIZE, CALLBACK_TYPE_VECTOR, HVM_PARAM_SIZE};
use microvisor_abi::sched::{SchedShutdown, SCHED_POLL_MAX_PORTS, SCHED_POLL_SIZE};
use microvisor_abi::vcpu::{
    VcpuHvmContext, VcpuRegisterTimeMemoryArea, VcpuSetSingleshotTimer, VcpuTimeInfo,
};
use microvisor_abi::version::XenFeatureInfo;

/// The largest argument struct (`vcpu_hvm_context`, 120 bytes) fits.
pub const MAX_ARG_BYTES: usize = 128;

/// A hypercall argument struct as it lies in guest memory.
pub trait GuestArg: Sized {
    /// Its size in guest memory: what [`read`] copies.
    const SIZE: usize;
    /// Decodes a copy of the struct (`SIZE` bytes; missing bytes read as zero).
    fn decode(bytes: &[u8]) -> Self;
}

/// Copies the `T` at guest-virtual `gva` out of the guest, once, and decodes the copy.
pub fn read<T: GuestArg, M: GuestPhysMemory + ?Sized>(
    mem: &M,
    mode: &PagingMode,
    gva: u64,
) -> Result<T, WalkError> {
    const { assert!(T::SIZE <= MAX_ARG_BYTES) };
    let mut buffer = [0u8; MAX_ARG_BYTES];
    let bytes = &mut buffer[..T::SIZE];
    copy_from_guest(mem, mode, gva, bytes)?;
    Ok(T::decode(bytes))
}

/// Reads a little-endian field; 0 if it would not fit.
fn le_bytes<const W: usize>(b: &[u8], off: usize) -> [u8; W] {
    let mut out = [0; W];
    if let Some(src) = off.checked_add(W).and_then(|end| b.get(off..end)) {
        out.copy_from_slice(src);
    }
    out
}

pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(le_bytes(b, off))
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(le_bytes(b, off))
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(le_bytes(b, off))
}

/// Writes `bytes` at `off`, if they fit.
pub(crate) fn put(b: &mut [u8], off: usize, bytes: &[u8]) {
    if let Some(dst) = off
        .checked_add(bytes.len())
        .and_then(|end| b.get_mut(off..end))
    {
        dst.copy_from_slice(bytes);
    }
}

/// An argument struct of ours: its input fields with their byte offsets (`field: type @
/// offset`), and its decoder.
macro_rules! guest_struct {
    ($(#[$doc:meta])* $name:ident, $size:expr, {
        $($(#[$field_doc:meta])* $field:ident: $ty:ident @ $off:expr),* $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name {
            $($(#[$field_doc])* pub $field: $ty,)*
        }

        impl GuestArg for $name {
            const SIZE: usize = $size;
            fn decode(b: &[u8]) -> Self {
                $name { $($field: $ty::from_le_bytes(le_bytes(b, $off)),)* }
            }
        }
    };
}

/// The decoder of an `abi` struct (its padding fields stay zero).
macro_rules! guest_abi_struct {
    ($name:ty, { $($field:ident: $ty:ident @ $off:expr),* $(,)? }) => {
        impl GuestArg for $name {
            const SIZE: usize = core::mem::size_of::<$name>();
            #[allow(clippy::needless_update)] // for the structs without padding
            fn decode(b: &[u8]) -> Self {
                Self {
                    $($field: $ty::from_le_bytes(le_bytes(b, $off)),)*
                    ..Default::default()
                }
            }
        }
    };
}

/// `DOMID_SELF` stands for the caller.
pub fn resolve_domid(domid: u16, self_id: u16) -> u16 {
    if domid == DOMID_SELF {
        self_id
    } else {
        domid
    }
}

// xen_version, sched_op ----------------------------------------------------------------

guest_abi_struct!(XenFeatureInfo, { submap_idx: u32 @ 0, submap: u32 @ 4 });
/// `XENVER_get_features`: the output `submap` is at this offset.
pub const FEATURE_SUBMAP_OFFSET: usize = core::mem::offset_of!(XenFeatureInfo, submap);

guest_abi_struct!(SchedShutdown, { reason: u32 @ 0 });

guest_struct!(
    /// `struct sched_poll`.
    SchedPoll, SCHED_POLL_SIZE, {
        /// Guest-virtual address of `nr_ports` `u32` port numbers.
        ports_gva: u64 @ 0,
        nr_ports: u32 @ 8,
        timeout_ns: u64 @ 16,
    }
);

impl SchedPoll {
    /// The bytes of the port array: `-EINVAL` beyond [`SCHED_POLL_MAX_PORTS`] ports.
    pub fn ports_bytes(&self) -> Result<usize, i64> {
        if self.nr_ports > SCHED_POLL_MAX_PORTS {
            return Err(EINVAL);
        }
        Ok(self.nr_ports as usize * 4)
    }
}

/// The bytes of `SCHEDOP_poll`'s port array, read in one copy.
pub const POLL_PORTS_MAX_BYTES: usize = SCHED_POLL_MAX_PORTS as usize * 4;

/// The ports of a copied `SCHEDOP_poll` array.
pub fn poll_ports(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(4).map(|p| u32_at(p, 0))
}

// vcpu_op --------------------------------------------------------------------------------

guest_abi_struct!(VcpuHvmContext, {
    mode: u32 @ 0, rax: u64 @ 8, rcx: u64 @ 16, rdx: u64 @ 24, rbx: u64 @ 32, rsp: u64 @ 40,
    rbp: u64 @ 48, rsi: u64 @ 56, rdi: u64 @ 64, rip: u64 @ 72, rflags: u64 @ 80,
    cr0: u64 @ 88, cr3: u64 @ 96, cr4: u64 @ 104, efer: u64 @ 112,
});
guest_abi_struct!(VcpuSetSingleshotTimer, { timeout_abs_ns: u64 @ 0, flags: u32 @ 8 });
guest_abi_struct!(VcpuRegisterTimeMemoryArea, { addr_gva: u64 @ 0 });

/// Where a `vcpu_time_info` may be kept: 8-byte aligned, inside one page (`-EINVAL`).
pub fn check_time_area(gva: u64) -> Result<(), i64> {
    let size = core::mem::size_of::<VcpuTimeInfo>() as u64;
    if !gva.is_multiple_of(8) || gva % 4096 + size > 4096 {
        return Err(EINVAL);
    }
    Ok(())
}

guest_struct!(
    /// `struct vcpu_register_runstate_memory_area`: the guest-virtual address of the area.
    RegisterRunstateArea, 8, { addr_gva: u64 @ 0 }
);

guest_struct!(
    /// `struct vcpu_register_vcpu_info`: a frame of the domain and an offset in it.
    RegisterVcpuInfo, 16, { gfn: u64 @ 0, offset: u32 @ 8 }
);

impl RegisterVcpuInfo {
    /// The guest-physical address of the 64-byte `vcpu_info`: 8-byte aligned and inside one
    /// page, else `-EINVAL`.
    pub fn gpa(&self) -> Result<u64, i64> {
        let offset = u64::from(self.offset);
        let size = microvisor_abi::evtchn::vcpu_info::SIZE as u64;
        if !offset.is_multiple_of(8) || offset + size > 4096 {
            return Err(EINVAL);
        }
        self.gfn
            .checked_mul(4096)
            .and_then(|base| base.checked_add(offset))
            .ok_or(EINVAL)
    }
}

// memory_op, hvm_op ------------------------------------------------------------------------

/// Frames mapped by `XENMEM_add_to_physmap` stay below this gpfn (the guest-physical range
/// a domain could have RAM in).
pub const PHYSMAP_GPFN_LIMIT: u64 = 1 << 24;

guest_struct!(
    /// `struct xen_add_to_physmap` (`space`: `XENMAPSPACE_*`).
    AddToPhysmap, ADD_TO_PHYSMAP_SIZE, { domid: u16 @ 0, space: u32 @ 4, idx: u64 @ 8, gpfn: u64 @ 16 }
);

impl AddToPhysmap {
    /// Only the caller's own physmap (`-EPERM`), and only below [`PHYSMAP_GPFN_LIMIT`]
    /// (`-EINVAL`). Which spaces and indices exist is the caller's check.
    pub fn check(&self, self_id: u16) -> Result<(), i64> {
        if resolve_domid(self.domid, self_id) != self_id {
            return Err(EPERM);
        }
        if self.gpfn >= PHYSMAP_GPFN_LIMIT {
            return Err(EINVAL);
        }
        Ok(())
    }
}

guest_struct!(
    /// `struct xen_hvm_param`.
    HvmParam, HVM_PARAM_SIZE, { domid: u16 @ 0, index: u32 @ 4, value: u64 @ 8 }
);

impl HvmParam {
    /// `HVMOP_get_param` writes the value here.
    pub const VALUE_OFFSET: usize = 8;
}

/// The vector an `HVM_PARAM_CALLBACK_IRQ` value asks for: `2 << 56 | vector` with a vector
/// of 0x20..=0xff, or 0 for none; anything else `-EINVAL`.
pub fn callback_vector(value: u64) -> Result<u8, i64> {
    match value >> 56 {
        0 if value == 0 => Ok(0),
        CALLBACK_TYPE_VECTOR
            if (0x20..=0xff).contains(&(value & 0xff)) && value & 0x00ff_ffff_ffff_ff00 == 0 =>
        {
            Ok((value & 0xff) as u8)
        }
        _ => Err(EINVAL),
    }
}

// event_channel_op: the inputs; each new port is written at the type's PORT_OFFSET ------------

guest_struct!(
    /// `struct evtchn_alloc_unbound`.
    AllocUnbound, ALLOC_UNBOUND_SIZE, { dom: u16 @ 0, remote_dom: u16 @ 2 }
);
guest_struct!(
    /// `struct evtchn_bind_interdomain`.
    BindInterdomain, BIND_INTERDOMAIN_SIZE, { remote_dom: u16 @ 0, remote_port: u32 @ 4 }
);
guest_struct!(
    /// `struct evtchn_bind_virq`.
    BindVirq, BIND_VIRQ_SIZE, { virq: u32 @ 0, vcpu: u32 @ 4 }
);
guest_struct!(
    /// `struct evtchn_bind_ipi`.
    BindIpi, BIND_IPI_SIZE, { vcpu: u32 @ 0 }
);
guest_struct!(
    /// `struct evtchn_close`, `evtchn_send`, `evtchn_unmask`: one port.
    PortArg, PORT_ARG_SIZE, { port: u32 @ 0 }
);
guest_struct!(
    /// `struct evtchn_bind_vcpu`.
    BindVcpu, BIND_VCPU_SIZE, { port: u32 @ 0, vcpu: u32 @ 4 }
);
guest_struct!(
    /// `struct evtchn_status`, the inputs; the answer
    /// ([`crate::evtchn::Status::encode_out`]) goes at [`crate::evtchn::Status::OUT_OFFSET`].
    StatusQuery, STATUS_SIZE, { dom: u16 @ 0, port: u32 @ 4 }
);

impl AllocUnbound {
    pub const PORT_OFFSET: usize = 4;
}
impl BindInterdomain {
    pub const PORT_OFFSET: usize = 8;
}
impl BindVirq {
    pub const PORT_OFFSET: usize = 8;
}
impl BindIpi {
    pub const PORT_OFFSET: usize = 4;
}

// grant_table_op, the small sub-ops --------------------------------------------------------

guest_struct!(
    /// `struct gnttab_query_size`, the input; the answer ([`QuerySize::encode_out`]) goes
    /// at [`QuerySize::OUT_OFFSET`].
    QuerySize, QUERY_SIZE_SIZE, { dom: u16 @ 0 }
);

impl QuerySize {
    pub const OUT_OFFSET: usize = 4;

    /// `nr_frames`, `max_nr_frames`, `status`: bytes 4..14.
    pub fn encode_out(nr_frames: u32, max_nr_frames: u32, status: i16) -> [u8; 10] {
        let mut b = [0u8; 10];
        put(&mut b, 0, &nr_frames.to_le_bytes());
        put(&mut b, 4, &max_nr_frames.to_le_bytes());
        put(&mut b, 8, &status.to_le_bytes());
        b
    }
}

guest_struct!(
    /// `struct gnttab_set_version`.
    SetVersion, 4, { version: u32 @ 0 }
);

/// `struct gnttab_get_version`: the version is written at this offset.
pub const GET_VERSION_OFFSET: usize = 4;

#[cfg(test)]
mod tests;
