//! `grant_table_op` (20): map, unmap, copy, query_size, set/get_version (v1 only).
//! Each element of an operation array gets its own `GNTST_*` status; the hypercall returns 0
//! unless the array itself cannot be read (`-EFAULT`) or `count` is absurd (`-EINVAL`).
//!
//! A mapping lands at the guest-physical address the mapper names (`host_addr`), which must
//! lie outside its RAM, page-aligned, below 64 GiB, and not already mapped. A read-only grant
//! (or a `GNTMAP_readonly` request) is mapped read-only in the mapper's nested page table.

use microvisor_abi::errno::{EINVAL, ENOSYS};
use microvisor_abi::evtchn::DOMID_SELF;
use microvisor_abi::grant::*;
use microvisor_core::grant::{self as rules, Mapping, MAX_GRANT_FRAMES};

use crate::grants::{self, GRANTS};
use crate::hypercall::{u16_at, u32_at, u64_at, Caller};
use crate::npt::NptView;

const MAX_OPS_PER_CALL: u64 = 512;
const MAP_WINDOW_END: u64 = 64 << 30;

pub fn grant_table_op(caller: &mut Caller, [cmd, uop, count, ..]: [u64; 5]) -> Result<i64, i64> {
    match cmd {
        GNTTABOP_QUERY_SIZE => {
            let mut bytes: [u8; QUERY_SIZE_SIZE] = caller.read_struct(uop)?;
            let dom = u16_at(&bytes, 0);
            let (nr, status) = if dom == DOMID_SELF || dom == caller.domain.domid {
                (GRANTS[caller.slot].lock().nr_frames, GNTST_OKAY)
            } else {
                (0, GNTST_PERMISSION_DENIED)
            };
            bytes[4..8].copy_from_slice(&nr.to_le_bytes());
            bytes[8..12].copy_from_slice(&MAX_GRANT_FRAMES.to_le_bytes());
            bytes[12..14].copy_from_slice(&status.to_le_bytes());
            caller.write_bytes(uop, &bytes).map(|()| 0)
        }
        GNTTABOP_SET_VERSION => {
            let bytes: [u8; 4] = caller.read_struct(uop)?;
            if u32_at(&bytes, 0) == 1 {
                Ok(0)
            } else {
                Err(EINVAL)
            }
        }
        GNTTABOP_GET_VERSION => {
            let mut bytes: [u8; 8] = caller.read_struct(uop)?;
            bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
            caller.write_bytes(uop, &bytes).map(|()| 0)
        }
        GNTTABOP_MAP_GRANT_REF | GNTTABOP_UNMAP_GRANT_REF | GNTTABOP_COPY => {
            if count > MAX_OPS_PER_CALL {
                return Err(EINVAL);
            }
            crate::stats::GRANT_OPS.fetch_add(count, core::sync::atomic::Ordering::Relaxed);
            let size = match cmd {
                GNTTABOP_MAP_GRANT_REF => MAP_GRANT_REF_SIZE,
                GNTTABOP_UNMAP_GRANT_REF => UNMAP_GRANT_REF_SIZE,
                _ => COPY_SIZE,
            } as u64;
            let mut unmapped = false;
            for i in 0..count {
                let at = uop.checked_add(i * size).ok_or(EINVAL)?;
                match cmd {
                    GNTTABOP_MAP_GRANT_REF => map_one(caller, at)?,
                    GNTTABOP_UNMAP_GRANT_REF => unmapped |= unmap_one(caller, at)?,
                    _ => copy_one(caller, at)?,
                }
            }
            if unmapped {
                crate::scheduler::shootdown(caller.slot);
            }
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

fn map_one(caller: &mut Caller, at: u64) -> Result<(), i64> {
    let mut bytes: [u8; MAP_GRANT_REF_SIZE] = caller.read_struct(at)?;
    let result = map_checked(caller, &bytes);
    let (status, handle) = match result {
        Ok(handle) => (GNTST_OKAY, handle),
        Err(status) => (status, 0),
    };
    bytes[18..20].copy_from_slice(&status.to_le_bytes());
    bytes[20..24].copy_from_slice(&handle.to_le_bytes());
    bytes[24..32].copy_from_slice(&0u64.to_le_bytes());
    caller.write_bytes(at, &bytes)
}

fn map_checked(caller: &Caller, bytes: &[u8; MAP_GRANT_REF_SIZE]) -> Result<u32, i16> {
    let host_addr = u64_at(bytes, 0);
    let flags = u32_at(bytes, 8);
    let gref = u32_at(bytes, 12);
    let dom = u16_at(bytes, 16);
    if flags & GNTMAP_HOST_MAP == 0 {
        return Err(GNTST_GENERAL_ERROR);
    }
    if !host_addr.is_multiple_of(4096)
        || host_addr < caller.domain.ram_bytes
        || host_addr >= MAP_WINDOW_END
    {
        return Err(GNTST_BAD_VIRT_ADDR);
    }
    let mapper = NptView::from_root(caller.domain.npt_root);
    if mapper.translate(host_addr).is_some() {
        return Err(GNTST_BAD_VIRT_ADDR);
    }
    let granter_domid = if dom == DOMID_SELF {
        caller.domain.domid
    } else {
        dom
    };
    let granter = crate::domain::slot_of(granter_domid).ok_or(GNTST_BAD_DOMAIN)?;
    let granter_npt = crate::domain::view(granter)
        .ok_or(GNTST_BAD_DOMAIN)?
        .npt_root;
    let readonly_wanted = flags & GNTMAP_READONLY != 0;

    let (hpa, gfn) = {
        let mut state = GRANTS[granter].lock();
        let gfn = grants::acquire(
            &mut state,
            gref,
            caller.domain.domid,
            !readonly_wanted,
            true,
        )?;
        // The granted frame must be RAM the granter owns, not something mapped into it.
        match NptView::from_root(granter_npt).translate_owned(gfn.wrapping_mul(4096)) {
            Some(hpa) => (hpa, gfn),
            None => {
                grants::release(&mut state, gref, !readonly_wanted);
                return Err(GNTST_BAD_PAGE);
            }
        }
    };
    let mapping = Mapping {
        granter: granter_domid,
        gref,
        gpa: host_addr,
        gfn_in_granter: gfn,
        readonly: readonly_wanted,
    };
    // Record and map under the mapper's grant lock, which the granter's teardown takes to
    // revoke: either the mapping is in the nested page table before the revoke looks (and is
    // replaced by the stand-in), or the revoke came first and nothing is mapped.
    let outcome = {
        let mut state = GRANTS[caller.slot].lock();
        match state.maptrack.insert(mapping) {
            Err(status) => Err(status),
            Ok(handle) => {
                let mapped = crate::domain::DOMAINS.lock()[caller.slot]
                    .as_mut()
                    .map(|d| d.npt.map(host_addr, hpa, !readonly_wanted, false).is_ok());
                if mapped == Some(true) {
                    Ok(handle)
                } else {
                    let _ = state.maptrack.remove(handle);
                    Err(GNTST_NO_SPACE)
                }
            }
        }
    };
    if outcome.is_err() {
        grants::release(&mut GRANTS[granter].lock(), gref, !readonly_wanted);
    }
    outcome
}

/// Returns whether a mapping was removed (so the caller shoots down stale translations).
fn unmap_one(caller: &mut Caller, at: u64) -> Result<bool, i64> {
    let mut bytes: [u8; UNMAP_GRANT_REF_SIZE] = caller.read_struct(at)?;
    let host_addr = u64_at(&bytes, 0);
    let handle = u32_at(&bytes, 16);
    let removed = {
        let mut state = GRANTS[caller.slot].lock();
        state.maptrack.remove_checked(handle, host_addr).ok()
    };
    let status = match removed {
        Some(mapping) => {
            grants::unmap_from(caller.slot, mapping.gpa);
            // The granter's flags are cleared only after every vCPU of the mapper has dropped
            // its translation: shoot down first, then release.
            crate::scheduler::shootdown(caller.slot);
            // Through the grant-table owners, not the domain table: a granter being torn
            // down is no longer listed there, and its teardown waits for this release.
            if let Some(granter) = grants::granter_slot(mapping.granter) {
                grants::release(&mut GRANTS[granter].lock(), mapping.gref, !mapping.readonly);
            }
            GNTST_OKAY
        }
        None => GNTST_BAD_HANDLE,
    };
    bytes[20..22].copy_from_slice(&status.to_le_bytes());
    caller.write_bytes(at, &bytes)?;
    Ok(false)
}

/// One side of a copy: a guest frame of the caller, or a grant of another domain.
struct Side {
    hpa: u64,
    granter: Option<(usize, u32, bool)>,
}

fn copy_side(
    caller: &Caller,
    bytes: &[u8],
    base: usize,
    is_gref: bool,
    write: bool,
) -> Result<Side, i16> {
    let domid = u16_at(bytes, base + 8);
    let offset = u16_at(bytes, base + 10);
    let domid = if domid == DOMID_SELF {
        caller.domain.domid
    } else {
        domid
    };
    let slot = crate::domain::slot_of(domid).ok_or(GNTST_BAD_DOMAIN)?;
    let npt = crate::domain::view(slot).ok_or(GNTST_BAD_DOMAIN)?.npt_root;
    if is_gref {
        let gref = u32_at(bytes, base);
        let mut state = GRANTS[slot].lock();
        let gfn = grants::acquire(&mut state, gref, caller.domain.domid, write, false)?;
        match NptView::from_root(npt).translate_owned(gfn.wrapping_mul(4096)) {
            Some(hpa) => Ok(Side {
                hpa: hpa + u64::from(offset),
                granter: Some((slot, gref, write)),
            }),
            None => {
                grants::release(&mut state, gref, write);
                Err(GNTST_BAD_PAGE)
            }
        }
    } else {
        // A plain frame number is only allowed for the caller's own memory.
        if domid != caller.domain.domid {
            return Err(GNTST_PERMISSION_DENIED);
        }
        let gfn = u64_at(bytes, base);
        let view = NptView::from_root(npt);
        let gpa = gfn.checked_mul(4096).ok_or(GNTST_BAD_PAGE)?;
        if gpa >= caller.domain.ram_bytes || (write && !view.is_writable(gpa)) {
            return Err(GNTST_BAD_PAGE);
        }
        let hpa = view.translate_owned(gpa).ok_or(GNTST_BAD_PAGE)?;
        Ok(Side {
            hpa: hpa + u64::from(offset),
            granter: None,
        })
    }
}

fn release_side(side: &Side) {
    if let Some((slot, gref, write)) = side.granter {
        grants::release(&mut GRANTS[slot].lock(), gref, write);
    }
}

fn copy_one(caller: &mut Caller, at: u64) -> Result<(), i64> {
    let mut bytes: [u8; COPY_SIZE] = caller.read_struct(at)?;
    let len = u16_at(&bytes, 32);
    let flags = u16_at(&bytes, 34);
    let status = (|| {
        rules::check_copy_extent(u16_at(&bytes, 10), len)?;
        rules::check_copy_extent(u16_at(&bytes, 26), len)?;
        let source = copy_side(caller, &bytes, 0, flags & GNTCOPY_SOURCE_GREF != 0, false)?;
        let dest = match copy_side(caller, &bytes, 16, flags & GNTCOPY_DEST_GREF != 0, true) {
            Ok(dest) => dest,
            Err(status) => {
                release_side(&source);
                return Err(status);
            }
        };
        let mut buffer = [0u8; 4096];
        let buffer = &mut buffer[..usize::from(len)];
        crate::mem::read_phys(source.hpa, buffer);
        crate::mem::write_phys(dest.hpa, buffer);
        release_side(&source);
        release_side(&dest);
        Ok(())
    })()
    .err()
    .unwrap_or(GNTST_OKAY);
    bytes[36..38].copy_from_slice(&status.to_le_bytes());
    caller.write_bytes(at, &bytes)
}
