//! The domain-control operations (`MVOP_DOMCTL_*`, see `microvisor_abi::domctl`), which the
//! microvisor answers for the system's control domain only (anyone else: `-EPERM`).

use microvisor_abi::domctl::*;
use microvisor_abi::hypercall::MICROVISOR_OP;

use crate::hypercall::raw;

fn result(ret: i64) -> Result<u64, i64> {
    if ret < 0 {
        Err(ret)
    } else {
        Ok(ret as u64)
    }
}

/// Issues one of the operations whose arguments are all integers (no pointer).
fn call_scalar(cmd: u64, args: [u64; 4]) -> i64 {
    debug_assert!(matches!(
        cmd,
        MVOP_DOMCTL_SET_ENTRY
            | MVOP_DOMCTL_UNPAUSE
            | MVOP_DOMCTL_PAUSE
            | MVOP_DOMCTL_DESTROY
            | MVOP_DOMCTL_CRASH
    ));
    // SAFETY: these operations take no pointer; the microvisor touches no memory of ours.
    unsafe { raw(MICROVISOR_OP, cmd, args[0], args[1], args[2], args[3]) }
}

/// Up to `out.len()` domains; returns how many were written.
pub fn list(out: &mut [DomctlEntry]) -> Result<usize, i64> {
    let mut bytes = alloc::vec![0u8; out.len() * DOMCTL_ENTRY_SIZE];
    // SAFETY: the microvisor writes at most `out.len()` entries of DOMCTL_ENTRY_SIZE bytes
    // into `bytes`, which is that long and borrowed mutably for the call.
    let ret = unsafe {
        raw(
            MICROVISOR_OP,
            MVOP_DOMCTL_LIST,
            bytes.as_mut_ptr() as u64,
            out.len() as u64,
            0,
            0,
        )
    };
    let n = (result(ret)? as usize).min(out.len());
    for (i, entry) in out.iter_mut().take(n).enumerate() {
        let chunk: &[u8; DOMCTL_ENTRY_SIZE] = bytes[i * DOMCTL_ENTRY_SIZE..][..DOMCTL_ENTRY_SIZE]
            .try_into()
            .expect("a whole entry");
        *entry = DomctlEntry::from_bytes(chunk);
    }
    Ok(n)
}

/// The machine's figures.
pub fn physinfo() -> Result<PhysInfo, i64> {
    let mut bytes = [0u8; PHYS_INFO_SIZE];
    // SAFETY: the microvisor writes PHYS_INFO_SIZE bytes into `bytes`, borrowed mutably.
    let ret = unsafe {
        raw(
            MICROVISOR_OP,
            MVOP_DOMCTL_PHYSINFO,
            bytes.as_mut_ptr() as u64,
            0,
            0,
            0,
        )
    };
    result(ret)?;
    Ok(PhysInfo::from_bytes(&bytes))
}

/// An empty, paused domain; returns its id.
pub fn create(args: &CreateArgs) -> Result<u16, i64> {
    let bytes = args.to_bytes();
    // SAFETY: the microvisor only reads CREATE_ARGS_SIZE bytes at `bytes`.
    let ret = unsafe {
        raw(
            MICROVISOR_OP,
            MVOP_DOMCTL_CREATE,
            bytes.as_ptr() as u64,
            0,
            0,
            0,
        )
    };
    Ok(result(ret)? as u16)
}

/// Copies `bytes` to guest-physical `gpa` of domain `domid`, which is still being built.
pub fn load(domid: u16, gpa: u64, bytes: &[u8]) -> Result<(), i64> {
    for (i, piece) in bytes.chunks(LOAD_MAX_BYTES as usize).enumerate() {
        let at = gpa + (i as u64) * LOAD_MAX_BYTES;
        // SAFETY: the microvisor only reads `piece.len()` bytes at `piece`.
        let ret = unsafe {
            raw(
                MICROVISOR_OP,
                MVOP_DOMCTL_LOAD,
                u64::from(domid),
                at,
                piece.as_ptr() as u64,
                piece.len() as u64,
            )
        };
        result(ret)?;
    }
    Ok(())
}

pub fn set_entry(domid: u16, entry: u32, start_info: u64) -> Result<(), i64> {
    result(call_scalar(
        MVOP_DOMCTL_SET_ENTRY,
        [u64::from(domid), u64::from(entry), start_info, 0],
    ))
    .map(drop)
}

pub fn unpause(domid: u16) -> Result<(), i64> {
    result(call_scalar(
        MVOP_DOMCTL_UNPAUSE,
        [u64::from(domid), 0, 0, 0],
    ))
    .map(drop)
}

pub fn pause(domid: u16) -> Result<(), i64> {
    result(call_scalar(MVOP_DOMCTL_PAUSE, [u64::from(domid), 0, 0, 0])).map(drop)
}

pub fn destroy(domid: u16) -> Result<(), i64> {
    result(call_scalar(
        MVOP_DOMCTL_DESTROY,
        [u64::from(domid), 0, 0, 0],
    ))
    .map(drop)
}

/// Makes a domain crash now, as if it had faulted: its `on_crash` applies.
pub fn crash(domid: u16) -> Result<(), i64> {
    result(call_scalar(MVOP_DOMCTL_CRASH, [u64::from(domid), 0, 0, 0])).map(drop)
}

/// The microvisor's recent log, oldest first, into `out`; returns how many bytes.
pub fn dmesg(out: &mut [u8]) -> Result<usize, i64> {
    // SAFETY: the microvisor writes at most `out.len()` bytes at `out`, borrowed mutably.
    let ret = unsafe {
        raw(
            MICROVISOR_OP,
            MVOP_DOMCTL_DMESG,
            out.as_mut_ptr() as u64,
            out.len() as u64,
            0,
            0,
        )
    };
    Ok((result(ret)? as usize).min(out.len()))
}

/// Up to `out.len()` vCPUs of domain `domid`; returns how many were written.
pub fn vcpu_list(domid: u16, out: &mut [VcpuEntry]) -> Result<usize, i64> {
    let mut bytes = alloc::vec![0u8; out.len() * VCPU_ENTRY_SIZE];
    // SAFETY: the microvisor writes at most `out.len()` entries of VCPU_ENTRY_SIZE bytes into
    // `bytes`, which is that long and borrowed mutably for the call.
    let ret = unsafe {
        raw(
            MICROVISOR_OP,
            MVOP_DOMCTL_VCPU_LIST,
            u64::from(domid),
            bytes.as_mut_ptr() as u64,
            out.len() as u64,
            0,
        )
    };
    let n = (result(ret)? as usize).min(out.len());
    for (i, entry) in out.iter_mut().take(n).enumerate() {
        let chunk: &[u8; VCPU_ENTRY_SIZE] = bytes[i * VCPU_ENTRY_SIZE..][..VCPU_ENTRY_SIZE]
            .try_into()
            .expect("a whole entry");
        *entry = VcpuEntry::from_bytes(chunk);
    }
    Ok(n)
}
