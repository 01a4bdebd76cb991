//! Grant tables (version 1) as the hardware sees them: each domain's table frames (host
//! frames the microvisor owns, which the domain maps with `XENMAPSPACE_grant_table`), its
//! active grants (what others hold of it) and its map track (what it holds of others).
//! The rules are `microvisor-core::grant`; this module reads and updates the entries in the
//! granter's table with atomic compare-and-exchange, maps granted frames into the mapper's
//! nested page table, and makes sure no vCPU keeps a stale translation after an unmap.

use core::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use microvisor_abi::errno::{EINVAL, ENOMEM};
use microvisor_abi::grant::*;
use microvisor_core::grant::{
    self as rules, ActiveGrants, GrantEntry, MapTrack, Mapping, MAX_GRANT_FRAMES,
};
use spin::Mutex;

use crate::domain::MAX_DOMAINS;
use crate::mem;

pub const MAX_REFS: usize = (MAX_GRANT_FRAMES * ENTRIES_PER_FRAME) as usize;
pub const MAX_MAPPINGS: usize = 256;

pub struct GrantState {
    pub frames: [u64; MAX_GRANT_FRAMES as usize],
    pub nr_frames: u32,
    pub active: ActiveGrants<MAX_REFS>,
    pub maptrack: MapTrack<MAX_MAPPINGS>,
    /// A zeroed frame of the microvisor's that stands in, in this domain's nested page table,
    /// for grants it had mapped from a domain that was destroyed (0: none yet).
    pub stand_in: u64,
    /// Set when teardown begins: no new hold on this domain's grants is given after it.
    pub closed: bool,
}

impl GrantState {
    const fn empty() -> Self {
        Self {
            frames: [0; MAX_GRANT_FRAMES as usize],
            nr_frames: 0,
            active: ActiveGrants::new(),
            maptrack: MapTrack::new(),
            stand_in: 0,
            closed: false,
        }
    }
}

pub static GRANTS: [Mutex<GrantState>; MAX_DOMAINS] =
    [const { Mutex::new(GrantState::empty()) }; MAX_DOMAINS];

/// Whose grant table each slot holds (`domid + 1`, 0: none), from the domain's build to the
/// end of its grant teardown. The domain table cannot tell: a domain being torn down is no
/// longer in it, yet a mapper may still be unmapping (and must release) one of its grants.
static OWNERS: [AtomicU32; MAX_DOMAINS] = [const { AtomicU32::new(0) }; MAX_DOMAINS];

/// Records that `slot`'s grant table is `domid`'s; called when the domain is built.
pub fn open(slot: usize, domid: u16) {
    OWNERS[slot].store(u32::from(domid) + 1, Ordering::Release);
}

/// The slot holding `domid`'s grant table, while it has one (during its teardown too).
pub fn granter_slot(domid: u16) -> Option<usize> {
    OWNERS
        .iter()
        .position(|owner| owner.load(Ordering::Acquire) == u32::from(domid) + 1)
}

/// Grow the domain's table to include frame `idx` and return that frame.
pub fn table_frame(slot: usize, idx: u64) -> Result<u64, i64> {
    if idx >= u64::from(MAX_GRANT_FRAMES) {
        return Err(EINVAL);
    }
    let mut state = GRANTS[slot].lock();
    while u64::from(state.nr_frames) <= idx {
        let frame = mem::alloc_zeroed().ok_or(ENOMEM)?;
        let n = state.nr_frames as usize;
        state.frames[n] = frame;
        state.nr_frames += 1;
    }
    Ok(state.frames[idx as usize])
}

/// Host address of grant entry `gref` in the domain's table, if it exists.
fn entry_hpa(state: &GrantState, gref: u32) -> Option<u64> {
    let (frame, offset) = rules::ref_location(gref, state.nr_frames)?;
    Some(state.frames[frame as usize] + offset as u64)
}

fn flags_atomic(hpa: u64) -> &'static AtomicU16 {
    // SAFETY: `hpa` is the flags field of an entry inside a grant-table frame the microvisor
    // allocated for this domain (ref_location checked the range); entries are 8-byte aligned,
    // the frame lives until the domain is destroyed, and the guest uses atomics on it too.
    unsafe { AtomicU16::from_ptr(mem::phys_ptr::<u16>(hpa)) }
}

/// One 32-bit half of an entry: the header (flags and grantee domid, at +0), swapped as one
/// so a concurrent change of either by the granter makes the swap fail, or the frame (+4).
fn word_atomic(hpa: u64) -> &'static AtomicU32 {
    // SAFETY: as for `flags_atomic`; both halves of the 8-byte-aligned entry are 4-byte
    // aligned and inside it.
    unsafe { AtomicU32::from_ptr(mem::phys_ptr::<u32>(hpa)) }
}

/// Take hold of a grant: check it permits `grantee` (for writing if asked), set
/// GTF_reading/GTF_writing atomically, and pin it. Returns the granted guest frame number.
/// The granter may rewrite the entry at any time, so each half is read once: the header
/// (one atomic load, checked, then swapped only if still the value checked), then, with the
/// busy flags set, the frame (one atomic load: the value pinned and used).
pub fn acquire(
    state: &mut GrantState,
    gref: u32,
    grantee: u16,
    write: bool,
    for_map: bool,
) -> Result<u64, i16> {
    if state.closed {
        return Err(GNTST_BAD_DOMAIN);
    }
    let hpa = entry_hpa(state, gref).ok_or(GNTST_BAD_GNTREF)?;
    let header = word_atomic(hpa);
    let mut attempts = 0;
    loop {
        let seen = header.load(Ordering::SeqCst);
        let entry = GrantEntry::from_header(seen);
        let new_flags = if for_map {
            rules::acquire_for_map(entry, grantee, write)?
        } else {
            rules::acquire(entry, grantee, write)?
        };
        let new_header = rules::header_word(new_flags, entry.domid);
        if header
            .compare_exchange(seen, new_header, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            break;
        }
        attempts += 1;
        if attempts >= rules::ACQUIRE_ATTEMPTS {
            return Err(GNTST_GENERAL_ERROR);
        }
    }
    // The frame, read after the busy flags are set: from now on the granter cannot change
    // the entry without seeing GTF_reading/GTF_writing.
    let gfn = u64::from(word_atomic(hpa + 4).load(Ordering::SeqCst));
    if let Err(status) = state.active.pin(gref, gfn, write) {
        // Nothing was pinned: take back only the busy flags no other holder needs (an unpin
        // here would drop another holder's pin of the same ref).
        let (readers, writers) = state.active.pins(gref);
        flags_atomic(hpa).fetch_and(
            !rules::release_clear_bits(readers, writers),
            Ordering::SeqCst,
        );
        return Err(status);
    }
    Ok(gfn)
}

/// Drop one hold on a grant; clear its busy flags when the last holder of that kind is gone.
pub fn release(state: &mut GrantState, gref: u32, write: bool) {
    let Some(hpa) = entry_hpa(state, gref) else {
        return;
    };
    let (readers, writers) = state.active.unpin(gref, write).unwrap_or((0, 0));
    flags_atomic(hpa).fetch_and(
        !rules::release_clear_bits(readers, writers),
        Ordering::SeqCst,
    );
}

/// Write a builder-made grant (the reserved console and xenstore refs): `frame` of the
/// domain in `slot`, granted read/write to `grantee`.
pub fn write_reserved(slot: usize, gref: u32, grantee: u16, gfn: u64) -> Result<(), i64> {
    table_frame(slot, 0)?;
    let state = GRANTS[slot].lock();
    let hpa = entry_hpa(&state, gref).ok_or(EINVAL)?;
    let mut bytes = [0u8; 8];
    bytes[2..4].copy_from_slice(&grantee.to_le_bytes());
    bytes[4..8].copy_from_slice(&(gfn as u32).to_le_bytes());
    mem::write_phys(hpa, &bytes);
    flags_atomic(hpa).store(GTF_PERMIT_ACCESS, Ordering::SeqCst);
    Ok(())
}

/// Unmap every grant the domain holds and every mapping others hold of its frames, then
/// free its table. Runs at teardown, when none of the domain's vCPUs runs. Returns how many
/// mappings of its frames were revoked from other domains.
pub fn destroy_domain(slot: usize, domid: u16) -> usize {
    let mut revoked_count = 0;
    GRANTS[slot].lock().closed = true;
    // What this domain mapped of others.
    let held: heapless::Vec<Mapping, MAX_MAPPINGS> = GRANTS[slot].lock().maptrack.drain().collect();
    for mapping in held {
        unmap_from(slot, mapping.gpa);
        if let Some(granter) = granter_slot(mapping.granter) {
            release(&mut GRANTS[granter].lock(), mapping.gref, !mapping.readonly);
        }
    }
    // What others mapped of this domain: revoke it before its frames are scrubbed and freed.
    // The mapper keeps its handle and finds a zeroed stand-in page at the same address, so a
    // service domain that has not yet noticed the death reads zeros instead of faulting;
    // its later unmap of the handle succeeds as usual. A map or copy that took its hold
    // before `closed` was set may still be on its way: its pin keeps this loop going until it
    // has either put its mapping in the mapper's table (and the next pass revokes it) or let
    // go, so no mapping or copy outlives the frames.
    let deadline = crate::time::now_ns() + 1_000_000_000;
    let backoff = crossbeam_utils::Backoff::new();
    loop {
        let mut revoked_now = 0;
        #[allow(clippy::needless_range_loop)] // slots index several tables
        for other in 0..MAX_DOMAINS {
            if other == slot {
                continue;
            }
            while let Some(mapping) = revoke_one(other, domid) {
                crate::scheduler::shootdown(other);
                release(&mut GRANTS[slot].lock(), mapping.gref, !mapping.readonly);
                revoked_now += 1;
            }
        }
        revoked_count += revoked_now;
        let pinned = GRANTS[slot].lock().active.active_count();
        if revoked_now == 0 && pinned == 0 {
            break;
        }
        if crate::time::now_ns() >= deadline {
            crate::log!(
                "domain {domid}: {pinned} grants still held by others after 1 s; freeing anyway"
            );
            break;
        }
        backoff.snooze();
    }
    let mut state = GRANTS[slot].lock();
    for &frame in &state.frames[..state.nr_frames as usize] {
        mem::free(frame);
    }
    if state.stand_in != 0 {
        mem::free(state.stand_in);
    }
    *state = GrantState::empty();
    OWNERS[slot].store(0, Ordering::Release);
    revoked_count
}

/// Revoke one mapping `other` holds of `granter`'s frames: under `other`'s grant lock (the
/// order every grant path takes: grant state, then the domain table), mark it revoked and put
/// the stand-in page in its place.
fn revoke_one(other: usize, granter: u16) -> Option<Mapping> {
    let mut state = GRANTS[other].lock();
    let handle = state.maptrack.find_granter(granter)?;
    let mapping = state.maptrack.revoke(handle).ok()?;
    if state.stand_in == 0 {
        state.stand_in = mem::alloc_zeroed().unwrap_or(0);
    }
    if let Some(domain) = crate::domain::DOMAINS.lock()[other].as_mut() {
        domain.npt.unmap(mapping.gpa);
        if state.stand_in != 0 {
            let _ = domain.npt.map(mapping.gpa, state.stand_in, true, false);
        }
    }
    Some(mapping)
}

/// Remove a grant mapping from a domain's nested page table.
pub fn unmap_from(slot: usize, gpa: u64) {
    if let Some(domain) = crate::domain::DOMAINS.lock()[slot].as_mut() {
        domain.npt.unmap(gpa);
    }
}
