//! `grant_table_op` (20): map, unmap, copy, query_size, set/get_version (v1 only).
//! Each element of an operation array gets its own `GNTST_*` status; the hypercall returns 0
//! unless the array itself cannot be read (`-EFAULT`) or `count` is absurd (`-EINVAL`).
//!
//! A mapping lands at the guest-physical address the mapper names (`host_addr`), which must
//! lie outside its RAM, page-aligned, below 64 GiB, and not already mapped. A read-only grant
//! (or a `GNTMAP_readonly` request) is mapped read-only in the mapper's nested page table.
//!
//! Each element of an operation array is read once ([`Caller::read_arg`]) and decoded by
//! `microvisor_core::grant`; only that copy is checked and used, and only the element's
//! output fields (status, and a map's handle) are written back.

use microvisor_abi::errno::{EINVAL, ENOSYS};
use microvisor_abi::grant::*;
use microvisor_core::grant::{
    CopySide, CopyTarget, GnttabCopy, MapGrantRef, Mapping, UnmapGrantRef, MAX_GRANT_FRAMES,
};
use microvisor_core::guest_arg::{resolve_domid, QuerySize, SetVersion, GET_VERSION_OFFSET};

use crate::grants::{self, GRANTS};
use crate::hypercall::Caller;
use crate::npt::NptView;

const MAX_OPS_PER_CALL: u64 = 512;
const MAP_WINDOW_END: u64 = 64 << 30;

pub fn grant_table_op(caller: &mut Caller, [cmd, uop, count, ..]: [u64; 5]) -> Result<i64, i64> {
    match cmd {
        GNTTABOP_QUERY_SIZE => {
            let query: QuerySize = caller.read_arg(uop)?;
            let (nr, status) =
                if resolve_domid(query.dom, caller.domain.domid) == caller.domain.domid {
                    (GRANTS[caller.slot].lock().nr_frames, GNTST_OKAY)
                } else {
                    (0, GNTST_PERMISSION_DENIED)
                };
            let out = QuerySize::encode_out(nr, MAX_GRANT_FRAMES, status);
            caller
                .write_field(uop, QuerySize::OUT_OFFSET, &out)
                .map(|()| 0)
        }
        GNTTABOP_SET_VERSION => match caller.read_arg::<SetVersion>(uop)?.version {
            1 => Ok(0),
            _ => Err(EINVAL),
        },
        GNTTABOP_GET_VERSION => caller
            .write_field(uop, GET_VERSION_OFFSET, &1u32.to_le_bytes())
            .map(|()| 0),
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
    let request: MapGrantRef = caller.read_arg(at)?;
    // A success writes status, handle and dev_bus_addr; a failure only the status.
    let mut out = [0u8; MAP_GRANT_REF_SIZE];
    let end = match map_checked(caller, &request) {
        Ok(handle) => {
            MapGrantRef::encode_result(&mut out, handle, 0);
            MAP_GRANT_REF_SIZE
        }
        Err(status) => {
            MapGrantRef::encode_status(&mut out, status);
            MapGrantRef::HANDLE_OFFSET
        }
    };
    caller.write_field(
        at,
        MapGrantRef::STATUS_OFFSET,
        &out[MapGrantRef::STATUS_OFFSET..end],
    )
}

fn map_checked(caller: &Caller, request: &MapGrantRef) -> Result<u32, i16> {
    request.check_flags()?;
    let (host_addr, gref) = (request.host_addr, request.gref);
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
    let granter_domid = resolve_domid(request.dom, caller.domain.domid);
    let granter = crate::domain::slot_of(granter_domid).ok_or(GNTST_BAD_DOMAIN)?;
    let granter_npt = crate::domain::view(granter)
        .ok_or(GNTST_BAD_DOMAIN)?
        .npt_root;
    let readonly_wanted = request.readonly();

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
    let request: UnmapGrantRef = caller.read_arg(at)?;
    let removed = GRANTS[caller.slot]
        .lock()
        .maptrack
        .remove_checked(request.handle, request.host_addr);
    let status = match removed {
        Ok(mapping) => {
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
        Err(status) => status,
    };
    caller.write_field(at, UnmapGrantRef::STATUS_OFFSET, &status.to_le_bytes())?;
    Ok(false)
}

/// One side of a copy: a guest frame of the caller, or a grant of another domain.
struct Side {
    hpa: u64,
    granter: Option<(usize, u32, bool)>,
}

fn copy_side(caller: &Caller, side: &CopySide, write: bool) -> Result<Side, i16> {
    let domid = resolve_domid(side.domid, caller.domain.domid);
    let offset = u64::from(side.offset);
    match side.target {
        CopyTarget::Gref(gref) => {
            let slot = crate::domain::slot_of(domid).ok_or(GNTST_BAD_DOMAIN)?;
            let npt = crate::domain::view(slot).ok_or(GNTST_BAD_DOMAIN)?.npt_root;
            let mut state = GRANTS[slot].lock();
            let gfn = grants::acquire(&mut state, gref, caller.domain.domid, write, false)?;
            match NptView::from_root(npt).translate_owned(gfn.wrapping_mul(4096)) {
                Some(hpa) => Ok(Side {
                    hpa: hpa + offset,
                    granter: Some((slot, gref, write)),
                }),
                None => {
                    grants::release(&mut state, gref, write);
                    Err(GNTST_BAD_PAGE)
                }
            }
        }
        // A plain frame number names the caller's own memory only (GnttabCopy::check).
        CopyTarget::Gmfn(gfn) => {
            let view = NptView::from_root(caller.domain.npt_root);
            let gpa = gfn.checked_mul(4096).ok_or(GNTST_BAD_PAGE)?;
            if gpa >= caller.domain.ram_bytes || (write && !view.is_writable(gpa)) {
                return Err(GNTST_BAD_PAGE);
            }
            let hpa = view.translate_owned(gpa).ok_or(GNTST_BAD_PAGE)?;
            Ok(Side {
                hpa: hpa + offset,
                granter: None,
            })
        }
    }
}

fn release_side(side: &Side) {
    if let Some((slot, gref, write)) = side.granter {
        grants::release(&mut GRANTS[slot].lock(), gref, write);
    }
}

fn copy_one(caller: &mut Caller, at: u64) -> Result<(), i64> {
    let request: GnttabCopy = caller.read_arg(at)?;
    let status = copy_checked(caller, &request).err().unwrap_or(GNTST_OKAY);
    caller.write_field(at, GnttabCopy::STATUS_OFFSET, &status.to_le_bytes())
}

fn copy_checked(caller: &Caller, request: &GnttabCopy) -> Result<(), i16> {
    request.check(caller.domain.domid)?;
    let source = copy_side(caller, &request.source, false)?;
    let dest = match copy_side(caller, &request.dest, true) {
        Ok(dest) => dest,
        Err(status) => {
            release_side(&source);
            return Err(status);
        }
    };
    // Frame to frame, no buffer between: a granter's side stays pinned (its ref active, its
    // frame fixed) until released below, and `check` kept `offset + len` within each page.
    crate::mem::copy_phys(dest.hpa, source.hpa, usize::from(request.len));
    release_side(&source);
    release_side(&dest);
    Ok(())
}
