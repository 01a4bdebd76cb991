//! Grant tables, version 1: the rules for checking and pinning a granter's entries, the
//! granter's active grants, the mapper's table of live mappings, and total decoders for
//! the `GNTTABOP_*` argument structs (XEN-ABI.md §4.4; numbers in
//! [`microvisor_abi::grant`]).
//!
//! An entry (`struct grant_entry_v1`, 8 bytes: flags u16, domid u16, frame u32) lives in
//! the granter's memory; the granter may rewrite it at any time. The microvisor therefore
//! reads the entry's first 32 bits (flags + domid) once, with one atomic load
//! ([`GrantEntry::from_header`]), checks that copy, and publishes its use with a
//! compare-and-swap of those 32 bits against the value it checked
//! ([`GrantEntry::header`]), so a concurrent change of either makes the swap fail. Xen
//! retries a failed swap a few times ([`ACQUIRE_ATTEMPTS`]) and then answers
//! `GNTST_general_error`. Only then is the frame read, once: from then on the busy flags
//! forbid the granter to change it, and the value read is the one pinned and used.
//!
//! Per-entry statuses are Xen's `GNTST_*` (`i16`):
//!
//! | rule | status |
//! |---|---|
//! | ref beyond the granter's table ([`ref_location`], [`ActiveGrants::pin`]) | `GNTST_bad_gntref` |
//! | map flags name neither host nor device mapping ([`MapGrantRef::check_flags`]) | `GNTST_bad_gntref` |
//! | device/application/PTE mapping asked by an auto-translated mapper | `GNTST_general_error` |
//! | type not `GTF_permit_access`, domid not the grantee, write to a `GTF_readonly` grant ([`acquire`]) | `GNTST_general_error` |
//! | ref already active on another frame, or a pin count would overflow ([`ActiveGrants::pin`]) | `GNTST_general_error` |
//! | maptrack full ([`MapTrack::insert`]) | `GNTST_no_space` |
//! | GPA already holds a grant mapping ([`MapTrack::insert`]) | `GNTST_general_error` |
//! | unknown or free handle ([`MapTrack::remove`]) | `GNTST_bad_handle` |
//! | unmap naming another GPA than the mapping's ([`MapTrack::remove_checked`]) | `GNTST_general_error` |
//! | copy side leaves its page ([`check_copy_extent`]) | `GNTST_bad_copy_arg` |
//! | copy side by frame number in another domain ([`GnttabCopy::check`]) | `GNTST_permission_denied` |
//!
//! Map (`GNTTABOP_map_grant_ref`) by domain `M` of ref `r` of granter `G`, under `G`'s
//! grant lock: [`MapGrantRef::check_flags`] → [`ref_location`] with `G`'s frame count →
//! read the header once → [`acquire_for_map`] → swap in the busy flags (retried on a
//! change) → read the frame once → [`ActiveGrants::pin`] with that frame (on failure clear
//! the busy flags no other holder needs) → map the frame at `host_addr` in `M`'s nested
//! page table (read-only unless writable) →
//! [`MapTrack::insert`] in `M`'s maptrack (on failure undo the pin, see unmap).
//! Unmap: [`MapTrack::remove_checked`] → remove the NPT entry (and flush) →
//! [`ActiveGrants::unpin`] → atomically clear [`release_clear_bits`] from the entry's flags.
//! Copy (`GNTTABOP_copy`): [`GnttabCopy::check`], then for a grant side the same
//! acquire/pin as a map (with [`acquire`]), the copy, and the same unpin/release.
//! While [`ActiveGrants::is_gfn_active`] holds, the granter must not get the frame back
//! (ballooning, physmap removal, domain destruction keep it alive).

use crate::evtchn::DomId;
use crate::guest_arg::{put, u16_at, u32_at, u64_at, GuestArg};
use microvisor_abi::evtchn::DOMID_SELF;
use microvisor_abi::grant::{
    COPY_SIZE, ENTRIES_PER_FRAME, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTMAP_DEVICE_MAP,
    GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTST_BAD_COPY_ARG, GNTST_BAD_GNTREF, GNTST_BAD_HANDLE,
    GNTST_GENERAL_ERROR, GNTST_NO_SPACE, GNTST_PERMISSION_DENIED, GRANT_ENTRY_SIZE,
    GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_TYPE_MASK, GTF_WRITING, MAP_GRANT_REF_SIZE,
    UNMAP_GRANT_REF_SIZE,
};

/// A grant reference: an index into the granter's table.
pub type GrantRef = u32;

/// Grant-table frames per domain (what `GNTTABOP_query_size` reports as the maximum).
pub const MAX_GRANT_FRAMES: u32 = 4;
/// Grant references per domain: `MAX_GRANT_FRAMES` × 512 = 2048.
pub const MAX_GRANT_REFS: usize = (MAX_GRANT_FRAMES * ENTRIES_PER_FRAME) as usize;
/// Live mappings per mapper domain (the maptrack size).
pub const MAX_MAPTRACK: usize = 256;
/// Size of a granted page.
pub const GRANT_PAGE_SIZE: u32 = 4096;
/// How many times to try the compare-and-swap of an entry's header before giving up with
/// `GNTST_general_error` (the granter keeps changing it).
pub const ACQUIRE_ATTEMPTS: u32 = 5;

/// `GTF_sub_page` (v2 only): a v1 entry with this bit cannot be mapped.
pub const GTF_SUB_PAGE: u16 = 1 << 8;
/// `GNTMAP_application_map`.
pub const GNTMAP_APPLICATION_MAP: u32 = 8;
/// `GNTMAP_contains_pte`.
pub const GNTMAP_CONTAINS_PTE: u32 = 0x10;

/// A decoded `grant_entry_v1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantEntry {
    /// `GTF_*`.
    pub flags: u16,
    /// The grantee.
    pub domid: u16,
    /// The granted page, as a gfn of the granter.
    pub frame: u32,
}

impl GrantEntry {
    /// Decodes the 8 bytes of an entry (little endian).
    pub fn decode(bytes: [u8; GRANT_ENTRY_SIZE]) -> Self {
        GrantEntry {
            flags: u16_at(&bytes, 0),
            domid: u16_at(&bytes, 2),
            frame: u32_at(&bytes, 4),
        }
    }

    /// The flags and grantee in an entry's header word (as [`Self::header`] makes it), read
    /// with one atomic load. `frame` is 0: the frame is read once, after the header swap.
    pub fn from_header(word: u32) -> Self {
        GrantEntry {
            flags: word as u16,
            domid: (word >> 16) as u16,
            frame: 0,
        }
    }

    /// The 8 bytes of this entry.
    pub fn encode(&self) -> [u8; GRANT_ENTRY_SIZE] {
        let mut b = [0; GRANT_ENTRY_SIZE];
        put(&mut b, 0, &self.flags.to_le_bytes());
        put(&mut b, 2, &self.domid.to_le_bytes());
        put(&mut b, 4, &self.frame.to_le_bytes());
        b
    }

    /// The entry's first 32 bits as one little-endian word (flags low, domid high): the
    /// value to compare-and-swap.
    pub fn header(&self) -> u32 {
        header_word(self.flags, self.domid)
    }
}

/// The 32-bit header word of an entry with `flags` and `domid`.
pub fn header_word(flags: u16, domid: u16) -> u32 {
    u32::from(flags) | (u32::from(domid) << 16)
}

/// Checks that `entry` lets `grantee` read (or, with `want_write`, write) the granted
/// frame, and returns the flags to swap in: the entry's flags plus `GTF_reading`, plus
/// `GTF_writing` for a write. All refusals are `GNTST_general_error`, as in Xen.
pub fn acquire(entry: GrantEntry, grantee: DomId, want_write: bool) -> Result<u16, i16> {
    acquire_masked(entry, grantee, want_write, GTF_TYPE_MASK)
}

/// [`acquire`] for a mapping: additionally refuses an entry with `GTF_sub_page` set.
pub fn acquire_for_map(entry: GrantEntry, grantee: DomId, want_write: bool) -> Result<u16, i16> {
    acquire_masked(entry, grantee, want_write, GTF_TYPE_MASK | GTF_SUB_PAGE)
}

fn acquire_masked(
    entry: GrantEntry,
    grantee: DomId,
    want_write: bool,
    type_mask: u16,
) -> Result<u16, i16> {
    if entry.flags & type_mask != GTF_PERMIT_ACCESS || entry.domid != grantee {
        return Err(GNTST_GENERAL_ERROR);
    }
    if !want_write {
        return Ok(entry.flags | GTF_READING);
    }
    if entry.flags & GTF_READONLY != 0 {
        return Err(GNTST_GENERAL_ERROR);
    }
    Ok(entry.flags | GTF_READING | GTF_WRITING)
}

/// The flag bits to clear once a pin goes away and `readers_left` read-only and
/// `writers_left` writable pins of the ref remain: `GTF_writing` when no writable pin is
/// left, and `GTF_reading` too when no pin at all is left (a writable pin also holds
/// `GTF_reading`). Clear them with an atomic AND: the granter may write the other bits.
pub fn release_clear_bits(readers_left: u32, writers_left: u32) -> u16 {
    match (readers_left, writers_left) {
        (0, 0) => GTF_READING | GTF_WRITING,
        (_, 0) => GTF_WRITING,
        _ => 0,
    }
}

/// `flags` after the bits of [`release_clear_bits`] are cleared.
pub fn release_flags(flags: u16, readers_left: u32, writers_left: u32) -> u16 {
    flags & !release_clear_bits(readers_left, writers_left)
}

/// Where ref `gref` lives in a table of `nr_frames` frames (at most [`MAX_GRANT_FRAMES`]
/// count): the frame index and the byte offset of its 8-byte entry in that frame. `None`
/// if the ref is beyond the table (`GNTST_bad_gntref`).
pub fn ref_location(gref: GrantRef, nr_frames: u32) -> Option<(u32, usize)> {
    let nr_refs = nr_frames.min(MAX_GRANT_FRAMES) * ENTRIES_PER_FRAME;
    if gref >= nr_refs {
        return None;
    }
    let slot = usize::try_from(gref % ENTRIES_PER_FRAME).ok()?;
    Some((gref / ENTRIES_PER_FRAME, slot * GRANT_ENTRY_SIZE))
}

/// Checks one side of a `GNTTABOP_copy`: `offset + len` must stay within the page.
pub fn check_copy_extent(offset: u16, len: u16) -> Result<(), i16> {
    if u32::from(offset) + u32::from(len) <= GRANT_PAGE_SIZE {
        Ok(())
    } else {
        Err(GNTST_BAD_COPY_ARG)
    }
}

/// The pins of one ref.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ActiveEntry {
    /// The frame fixed while the ref is active.
    gfn: u64,
    readers: u32,
    writers: u32,
}

impl ActiveEntry {
    const IDLE: ActiveEntry = ActiveEntry {
        gfn: 0,
        readers: 0,
        writers: 0,
    };

    fn is_active(&self) -> bool {
        self.readers != 0 || self.writers != 0
    }
}

/// The active grants of one granter domain: per ref, how many read-only and writable pins
/// (mappings and copies in progress) hold it, and the frame they hold. While a ref is
/// active its frame is fixed and `GTF_reading` (and with writers `GTF_writing`) stays set.
#[derive(Clone, Debug)]
pub struct ActiveGrants<const N: usize> {
    entries: [ActiveEntry; N],
}

impl<const N: usize> Default for ActiveGrants<N> {
    fn default() -> Self {
        Self::new()
    }
}

fn index<const N: usize>(gref: GrantRef) -> Option<usize> {
    usize::try_from(gref).ok().filter(|&i| i < N)
}

impl<const N: usize> ActiveGrants<N> {
    /// No active grants.
    pub const fn new() -> Self {
        ActiveGrants {
            entries: [ActiveEntry::IDLE; N],
        }
    }

    /// Adds a pin of `gref` on frame `gfn`, writable or read-only. The first pin fixes the
    /// frame; a later pin naming another frame is refused.
    pub fn pin(&mut self, gref: GrantRef, gfn: u64, write: bool) -> Result<(), i16> {
        let e = index::<N>(gref)
            .and_then(|i| self.entries.get_mut(i))
            .ok_or(GNTST_BAD_GNTREF)?;
        if e.is_active() && e.gfn != gfn {
            return Err(GNTST_GENERAL_ERROR);
        }
        let count = if write {
            &mut e.writers
        } else {
            &mut e.readers
        };
        *count = count.checked_add(1).ok_or(GNTST_GENERAL_ERROR)?;
        e.gfn = gfn;
        Ok(())
    }

    /// Removes a writable or read-only pin of `gref`. Returns the read-only and writable
    /// pins left, for [`release_flags`]; `None` (and nothing changes) if `gref` had no
    /// such pin.
    pub fn unpin(&mut self, gref: GrantRef, write: bool) -> Option<(u32, u32)> {
        let e = index::<N>(gref).and_then(|i| self.entries.get_mut(i))?;
        let count = if write {
            &mut e.writers
        } else {
            &mut e.readers
        };
        *count = count.checked_sub(1)?;
        Some((e.readers, e.writers))
    }

    /// Whether `gref` has any pin.
    pub fn is_active(&self, gref: GrantRef) -> bool {
        self.get(gref).is_some_and(|e| e.is_active())
    }

    /// The frame an active `gref` is pinned on.
    pub fn pinned_gfn(&self, gref: GrantRef) -> Option<u64> {
        self.get(gref).filter(|e| e.is_active()).map(|e| e.gfn)
    }

    /// The read-only and writable pins of `gref` (`(0, 0)` if out of range).
    pub fn pins(&self, gref: GrantRef) -> (u32, u32) {
        self.get(gref).map_or((0, 0), |e| (e.readers, e.writers))
    }

    /// Whether a new pin of `gref` must swap new flags into the entry: when the ref is not
    /// active yet, or for a first writable pin. Ask before [`pin`](Self::pin).
    pub fn needs_flag_update(&self, gref: GrantRef, write: bool) -> bool {
        self.get(gref)
            .is_none_or(|e| !e.is_active() || (write && e.writers == 0))
    }

    /// Whether some active ref holds frame `gfn` (the granter must not lose that frame).
    pub fn is_gfn_active(&self, gfn: u64) -> bool {
        self.entries.iter().any(|e| e.is_active() && e.gfn == gfn)
    }

    /// Number of active refs.
    pub fn active_count(&self) -> usize {
        self.entries.iter().filter(|e| e.is_active()).count()
    }

    fn get(&self, gref: GrantRef) -> Option<&ActiveEntry> {
        index::<N>(gref).and_then(|i| self.entries.get(i))
    }
}

/// One live grant mapping of a mapper domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The granting domain.
    pub granter: DomId,
    /// The ref in the granter's table.
    pub gref: GrantRef,
    /// Where the mapper sees the frame (page aligned).
    pub gpa: u64,
    /// The granter's frame.
    pub gfn_in_granter: u64,
    /// Mapped read-only (its pin is a read-only pin).
    pub readonly: bool,
}

const PAGE_SHIFT: u32 = 12;

/// The granter recorded for a mapping whose granter was destroyed (Xen's `DOMID_INVALID`).
pub const REVOKED_GRANTER: DomId = 0x7ff4;

/// The live grant mappings of one mapper domain, by handle (the slot index, which the
/// guest gets back from `GNTTABOP_map_grant_ref`). At most one mapping per guest page.
#[derive(Clone, Debug)]
pub struct MapTrack<const N: usize> {
    slots: [Option<Mapping>; N],
}

impl<const N: usize> Default for MapTrack<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> MapTrack<N> {
    /// No mappings.
    pub const fn new() -> Self {
        MapTrack { slots: [None; N] }
    }

    /// Records a mapping and returns its handle (the lowest free one). `GNTST_no_space` if
    /// the table is full; `GNTST_general_error` if the page of `m.gpa` already holds one.
    pub fn insert(&mut self, m: Mapping) -> Result<u32, i16> {
        if self.find_gpa(m.gpa).is_some() {
            return Err(GNTST_GENERAL_ERROR);
        }
        let (i, slot) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.is_none())
            .ok_or(GNTST_NO_SPACE)?;
        let handle = u32::try_from(i).map_err(|_| GNTST_NO_SPACE)?;
        *slot = Some(m);
        Ok(handle)
    }

    /// The mapping of `handle`; `GNTST_bad_handle` if there is none.
    pub fn get(&self, handle: u32) -> Result<Mapping, i16> {
        usize::try_from(handle)
            .ok()
            .and_then(|i| self.slots.get(i))
            .copied()
            .flatten()
            .ok_or(GNTST_BAD_HANDLE)
    }

    /// Forgets the mapping of `handle` and returns it; `GNTST_bad_handle` if there is none.
    pub fn remove(&mut self, handle: u32) -> Result<Mapping, i16> {
        usize::try_from(handle)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .and_then(Option::take)
            .ok_or(GNTST_BAD_HANDLE)
    }

    /// `GNTTABOP_unmap_grant_ref`: removes the mapping of `handle` only if `host_addr`
    /// lies in its page; `GNTST_bad_handle` or `GNTST_general_error` (nothing removed)
    /// otherwise.
    pub fn remove_checked(&mut self, handle: u32, host_addr: u64) -> Result<Mapping, i16> {
        let m = self.get(handle)?;
        if m.gpa >> PAGE_SHIFT != host_addr >> PAGE_SHIFT {
            return Err(GNTST_GENERAL_ERROR);
        }
        self.remove(handle)
    }

    /// The handle of the mapping in the page of `gpa`.
    pub fn find_gpa(&self, gpa: u64) -> Option<u32> {
        let frame = gpa >> PAGE_SHIFT;
        self.slots
            .iter()
            .position(|s| s.is_some_and(|m| m.gpa >> PAGE_SHIFT == frame))
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Domain teardown: takes every mapping out (each must be unmapped and unpinned).
    /// Mappings the iterator has not reached when it is dropped stay recorded.
    pub fn drain(&mut self) -> impl Iterator<Item = Mapping> + '_ {
        self.slots.iter_mut().filter_map(Option::take)
    }

    /// Number of live mappings of frames of `granter`.
    /// The granter of `handle` was destroyed: keep the mapping (so the mapper's later unmap
    /// of this handle still succeeds) but mark it as no longer backed by any granter
    /// ([`REVOKED_GRANTER`]). Returns the mapping as it was.
    pub fn revoke(&mut self, handle: u32) -> Result<Mapping, i16> {
        let slot = usize::try_from(handle)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .and_then(Option::as_mut)
            .ok_or(GNTST_BAD_HANDLE)?;
        let before = *slot;
        slot.granter = REVOKED_GRANTER;
        Ok(before)
    }

    /// A handle of some mapping of `granter`'s frames, if any (for revoking them all when the
    /// granter is destroyed).
    pub fn find_granter(&self, granter: DomId) -> Option<u32> {
        (0..N as u32).find(|&h| self.get(h).is_ok_and(|m| m.granter == granter))
    }

    pub fn count_for_granter(&self, granter: DomId) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|m| m.granter == granter)
            .count()
    }

    /// Number of live mappings.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Whether there is no live mapping.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}

/// `struct gnttab_map_grant_ref`, the inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapGrantRef {
    /// For an auto-translated mapper: the guest-physical address to map at.
    pub host_addr: u64,
    /// `GNTMAP_*`.
    pub flags: u32,
    pub gref: GrantRef,
    /// The granter.
    pub dom: DomId,
}

impl MapGrantRef {
    pub const STATUS_OFFSET: usize = 18;
    pub const HANDLE_OFFSET: usize = 20;
    pub const DEV_BUS_ADDR_OFFSET: usize = 24;

    /// The struct with these inputs and zero outputs.
    pub fn encode(&self) -> [u8; MAP_GRANT_REF_SIZE] {
        let mut b = [0; MAP_GRANT_REF_SIZE];
        put(&mut b, 0, &self.host_addr.to_le_bytes());
        put(&mut b, 8, &self.flags.to_le_bytes());
        put(&mut b, 12, &self.gref.to_le_bytes());
        put(&mut b, 16, &self.dom.to_le_bytes());
        b
    }

    /// Whether `GNTMAP_readonly` is set.
    pub fn readonly(&self) -> bool {
        self.flags & GNTMAP_READONLY != 0
    }

    /// The flag checks for an auto-translated (PVH/HVM) mapper: a host or device mapping
    /// must be asked for (else `GNTST_bad_gntref`), and device, application and PTE
    /// mappings are refused (`GNTST_general_error`); only `GNTMAP_host_map` remains.
    pub fn check_flags(&self) -> Result<(), i16> {
        if self.flags & (GNTMAP_DEVICE_MAP | GNTMAP_HOST_MAP) == 0 {
            return Err(GNTST_BAD_GNTREF);
        }
        if self.flags & (GNTMAP_DEVICE_MAP | GNTMAP_APPLICATION_MAP | GNTMAP_CONTAINS_PTE) != 0 {
            return Err(GNTST_GENERAL_ERROR);
        }
        Ok(())
    }

    /// A failed map: writes only `status`.
    pub fn encode_status(b: &mut [u8; MAP_GRANT_REF_SIZE], status: i16) {
        put(b, Self::STATUS_OFFSET, &status.to_le_bytes());
    }

    /// A successful map: `status` = `GNTST_okay`, `handle` and `dev_bus_addr`.
    pub fn encode_result(b: &mut [u8; MAP_GRANT_REF_SIZE], handle: u32, dev_bus_addr: u64) {
        put(b, Self::STATUS_OFFSET, &0i16.to_le_bytes());
        put(b, Self::HANDLE_OFFSET, &handle.to_le_bytes());
        put(b, Self::DEV_BUS_ADDR_OFFSET, &dev_bus_addr.to_le_bytes());
    }
}

impl GuestArg for MapGrantRef {
    const SIZE: usize = MAP_GRANT_REF_SIZE;
    fn decode(b: &[u8]) -> Self {
        MapGrantRef {
            host_addr: u64_at(b, 0),
            flags: u32_at(b, 8),
            gref: u32_at(b, 12),
            dom: u16_at(b, 16),
        }
    }
}

/// `struct gnttab_unmap_grant_ref`, the inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnmapGrantRef {
    pub host_addr: u64,
    pub dev_bus_addr: u64,
    pub handle: u32,
}

impl UnmapGrantRef {
    pub const STATUS_OFFSET: usize = 20;

    /// The struct with these inputs and a zero status.
    pub fn encode(&self) -> [u8; UNMAP_GRANT_REF_SIZE] {
        let mut b = [0; UNMAP_GRANT_REF_SIZE];
        put(&mut b, 0, &self.host_addr.to_le_bytes());
        put(&mut b, 8, &self.dev_bus_addr.to_le_bytes());
        put(&mut b, 16, &self.handle.to_le_bytes());
        b
    }

    pub fn encode_status(b: &mut [u8; UNMAP_GRANT_REF_SIZE], status: i16) {
        put(b, Self::STATUS_OFFSET, &status.to_le_bytes());
    }
}

impl GuestArg for UnmapGrantRef {
    const SIZE: usize = UNMAP_GRANT_REF_SIZE;
    fn decode(b: &[u8]) -> Self {
        UnmapGrantRef {
            host_addr: u64_at(b, 0),
            dev_bus_addr: u64_at(b, 8),
            handle: u32_at(b, 16),
        }
    }
}

/// What one side of a copy names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyTarget {
    /// A grant ref of domain `domid` (`GNTCOPY_*_gref` set; the low 32 bits of the union).
    Gref(GrantRef),
    /// A frame of the calling domain itself.
    Gmfn(u64),
}

/// One side of a `struct gnttab_copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopySide {
    pub target: CopyTarget,
    pub domid: DomId,
    /// Byte offset in the page.
    pub offset: u16,
}

impl CopySide {
    fn decode(b: &[u8], off: usize, is_gref: bool) -> Self {
        CopySide {
            target: if is_gref {
                CopyTarget::Gref(u32_at(b, off))
            } else {
                CopyTarget::Gmfn(u64_at(b, off))
            },
            domid: u16_at(b, off + 8),
            offset: u16_at(b, off + 10),
        }
    }

    fn encode(&self, b: &mut [u8], off: usize) {
        match self.target {
            CopyTarget::Gref(r) => put(b, off, &u64::from(r).to_le_bytes()),
            CopyTarget::Gmfn(f) => put(b, off, &f.to_le_bytes()),
        }
        put(b, off + 8, &self.domid.to_le_bytes());
        put(b, off + 10, &self.offset.to_le_bytes());
    }

    /// A side named by frame number must be the caller's own (`DOMID_SELF` or `self_id`).
    fn check_owner(&self, self_id: DomId) -> Result<(), i16> {
        match self.target {
            CopyTarget::Gmfn(_) if self.domid != DOMID_SELF && self.domid != self_id => {
                Err(GNTST_PERMISSION_DENIED)
            }
            _ => Ok(()),
        }
    }
}

/// `struct gnttab_copy`, the inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GnttabCopy {
    pub source: CopySide,
    pub dest: CopySide,
    pub len: u16,
    /// `GNTCOPY_*` as given (the bits beyond source/dest gref are ignored).
    pub flags: u16,
}

impl GnttabCopy {
    pub const STATUS_OFFSET: usize = 36;

    /// The struct with these inputs and a zero status. `flags` is written as stored; the
    /// sides are written as their targets say.
    pub fn encode(&self) -> [u8; COPY_SIZE] {
        let mut b = [0; COPY_SIZE];
        self.source.encode(&mut b, 0);
        self.dest.encode(&mut b, 16);
        put(&mut b, 32, &self.len.to_le_bytes());
        put(&mut b, 34, &self.flags.to_le_bytes());
        b
    }

    /// Checks both sides for a caller whose domain id is `self_id`, before any grant is
    /// touched: a side named by frame number must be the caller's own
    /// (`GNTST_permission_denied`), then each side must stay within its page
    /// (`GNTST_bad_copy_arg`). Whether a named granter exists (`GNTST_bad_domain`) is the
    /// caller's check.
    pub fn check(&self, self_id: DomId) -> Result<(), i16> {
        self.source.check_owner(self_id)?;
        self.dest.check_owner(self_id)?;
        check_copy_extent(self.source.offset, self.len)?;
        check_copy_extent(self.dest.offset, self.len)
    }

    pub fn encode_status(b: &mut [u8; COPY_SIZE], status: i16) {
        put(b, Self::STATUS_OFFSET, &status.to_le_bytes());
    }
}

impl GuestArg for GnttabCopy {
    const SIZE: usize = COPY_SIZE;
    fn decode(b: &[u8]) -> Self {
        let flags = u16_at(b, 34);
        GnttabCopy {
            source: CopySide::decode(b, 0, flags & GNTCOPY_SOURCE_GREF != 0),
            dest: CopySide::decode(b, 16, flags & GNTCOPY_DEST_GREF != 0),
            len: u16_at(b, 32),
            flags,
        }
    }
}

#[cfg(test)]
mod tests;
