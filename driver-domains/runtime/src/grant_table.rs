//! Grant tables, version 1 (`XEN-ABI.md` §4.4): granting this domain's pages to a peer, and
//! mapping and copying pages peers granted to it.
//!
//! # Own table
//! Frame `i` of the domain's grant table is mapped with
//! `memory_op(XENMEM_add_to_physmap, {DOMID_SELF, XENMAPSPACE_grant_table, i, gpfn})` at
//! [`TABLE_GPA`]` + i * 4096` (outside RAM), on demand, up to [`MAX_FRAMES`] frames (refs
//! `8..2048`; refs 0..8 are reserved). An entry is `flags u16, domid u16, frame u32`.
//! - grant: write `domid` and `frame`, a release fence, then
//!   `flags = GTF_permit_access [| GTF_readonly]`;
//! - end access: replace `flags` with 0 by a 16-bit compare-and-exchange, only while
//!   neither `GTF_reading` nor `GTF_writing` is set (set by the microvisor while the grantee
//!   has the page mapped or a copy in progress); otherwise [`Busy`].
//!
//! Granting an arbitrary frame would let a peer write into memory Rust owns, so the safe
//! way is [`OwnedPage::grant`]: an [`OwnedPage`] is only accessed atomically and is never
//! returned to the heap while a grant of it may be live. [`grant_access`] for any frame is
//! `unsafe`.
//!
//! # Foreign grants
//! [`map_grant`] issues `GNTTABOP_map_grant_ref` with `GNTMAP_host_map [| GNTMAP_readonly]`
//! at a page of the window [`MAP_WINDOW_START`]..[`MAP_WINDOW_END`] (above RAM, below 4 GiB,
//! so identity-mapped; the microvisor maps grants only outside the mapper's RAM). The
//! returned [`MappedGrant`] is a [`xen_ring::SharedPage`]; unmapping it
//! ([`MappedGrant::unmap`], or dropping it) issues `GNTTABOP_unmap_grant_ref` and returns
//! the window page. [`grant_copy`] wraps `GNTTABOP_copy`.

use core::fmt;
use core::sync::atomic::{fence, Ordering};

use microvisor_abi::grant::{
    COPY_SIZE, ENTRIES_PER_FRAME, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTMAP_HOST_MAP,
    GNTMAP_READONLY, GNTST_BAD_COPY_ARG, GNTST_GENERAL_ERROR, GNTST_OKAY, GNTTABOP_MAP_GRANT_REF,
    GNTTABOP_UNMAP_GRANT_REF, GRANT_ENTRY_SIZE, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY,
    GTF_WRITING, MAP_GRANT_REF_SIZE, UNMAP_GRANT_REF_SIZE,
};
use microvisor_abi::hvm::XENMAPSPACE_GRANT_TABLE;
use spin::Mutex;
use xen_ring::SharedPage;

use crate::dma::DmaRegion;
use crate::grant_alloc::{PageWindow, RefAllocator};
use crate::hypercall;
use crate::shared_mem::{ForeignPage, OwnedPage};

/// Where frame 0 of the domain's own grant table is mapped (frame `i` at `+ i * 4096`).
pub const TABLE_GPA: u64 = 0xfef0_0000;
/// Frames of its own table the domain uses (512 refs each).
pub const MAX_FRAMES: u32 = 4;
/// The window foreign grants are mapped into.
pub const MAP_WINDOW_START: u64 = 0xc000_0000;
pub const MAP_WINDOW_END: u64 = 0xd000_0000;

const WINDOW_PAGES: u32 = ((MAP_WINDOW_END - MAP_WINDOW_START) / 4096) as u32;
const REF_WORDS: usize = (MAX_FRAMES * ENTRIES_PER_FRAME / 64) as usize;

/// A grant reference in this domain's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantRef(pub u32);

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The grantee still has the page mapped (or a copy is in progress): the grant stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy;

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("grant still in use")
    }
}

/// Why a grant could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// All refs of the [`MAX_FRAMES`] frames are in use (or the page has its maximum).
    NoFreeRef,
    /// Mapping another frame of the table failed with this error.
    TableFrame(i64),
    /// The frame number does not fit a v1 entry (32 bits).
    FrameTooHigh,
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoFreeRef => f.write_str("no free grant reference"),
            Self::TableFrame(e) => write!(f, "mapping a grant-table frame failed: {e}"),
            Self::FrameTooHigh => f.write_str("frame number does not fit a grant entry"),
        }
    }
}

struct Table {
    refs: RefAllocator<REF_WORDS>,
    frames_mapped: u32,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    refs: RefAllocator::new(MAX_FRAMES * ENTRIES_PER_FRAME),
    frames_mapped: 0,
});

static WINDOW: Mutex<Option<PageWindow<{ (WINDOW_PAGES / 64) as usize }>>> = Mutex::new(None);

fn table_page(frame: u32) -> ForeignPage {
    // SAFETY: callers only pass frames below `frames_mapped`, which were mapped at these
    // addresses (outside RAM, identity-mapped, never unmapped; no Rust object there); the
    // microvisor and this module access grant entries atomically.
    unsafe { ForeignPage::new(TABLE_GPA + u64::from(frame) * 4096) }
}

/// The page and offset of entry `r`.
fn entry(r: u32) -> (ForeignPage, usize) {
    (
        table_page(r / ENTRIES_PER_FRAME),
        (r % ENTRIES_PER_FRAME) as usize * GRANT_ENTRY_SIZE,
    )
}

fn ram_top() -> u64 {
    crate::boot::boot_info().map_or(0, |info| info.ram_bytes)
}

/// Takes a free ref, mapping the table frame it lives in if needed.
fn alloc_ref() -> Result<u32, GrantError> {
    let mut table = TABLE.lock();
    let r = table.refs.alloc().ok_or(GrantError::NoFreeRef)?;
    let frame = r / ENTRIES_PER_FRAME;
    while table.frames_mapped <= frame {
        let next = table.frames_mapped;
        let gpa = TABLE_GPA + u64::from(next) * 4096;
        let mapped = if ram_top() > TABLE_GPA {
            Err(microvisor_abi::errno::ENOMEM)
        } else {
            // SAFETY: the page lies above the domain's RAM (checked) and below 4 GiB, where no
            // Rust object lives; it is used only through `table_page`.
            unsafe {
                hypercall::add_to_physmap(XENMAPSPACE_GRANT_TABLE, u64::from(next), gpa >> 12)
            }
        };
        if let Err(e) = mapped {
            table.refs.free(r);
            return Err(GrantError::TableFrame(e));
        }
        table.frames_mapped += 1;
    }
    Ok(r)
}

/// Grants `domid` access to this domain's frame `gfn` (read-only if asked).
///
/// # Safety
/// From now until [`end_access`] succeeds, `domid` may read (and unless `readonly`, write)
/// the frame at any time: it must hold no Rust object that is accessed non-atomically, and
/// it must not be freed or reused while the grant may be live. [`OwnedPage::grant`] is the
/// safe form.
pub unsafe fn grant_access(domid: u16, gfn: u64, readonly: bool) -> Result<GrantRef, GrantError> {
    let frame = u32::try_from(gfn).map_err(|_| GrantError::FrameTooHigh)?;
    let r = alloc_ref()?;
    let (page, offset) = entry(r);
    page.u16(offset + 2).store(domid, Ordering::Relaxed);
    page.u32(offset + 4).store(frame, Ordering::Relaxed);
    fence(Ordering::Release);
    let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
    page.u16(offset).store(flags, Ordering::Release);
    Ok(GrantRef(r))
}

/// Revokes a grant: clears its flags unless the grantee is using it ([`Busy`]), then frees
/// the ref. A ref this module did not hand out (or already revoked) is left alone: `Ok`.
pub fn end_access(gref: GrantRef) -> Result<(), Busy> {
    let mut table = TABLE.lock();
    if !table.refs.is_allocated(gref.0) {
        return Ok(());
    }
    let (page, offset) = entry(gref.0);
    let flags = page.u16(offset);
    let mut current = flags.load(Ordering::Acquire);
    loop {
        if current & (GTF_READING | GTF_WRITING) != 0 {
            return Err(Busy);
        }
        match flags.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(now) => current = now,
        }
    }
    table.refs.free(gref.0);
    Ok(())
}

/// The `GTF_*` flags of this domain's entry `gref` now (0 for a ref beyond the table).
pub(crate) fn grant_flags(gref: GrantRef) -> u16 {
    if gref.0 >= TABLE.lock().frames_mapped * ENTRIES_PER_FRAME {
        return 0;
    }
    let (page, offset) = entry(gref.0);
    page.u16(offset).load(Ordering::Acquire)
}

/// Grant refs in use by this domain now.
pub fn refs_in_use() -> u32 {
    TABLE.lock().refs.in_use()
}

impl OwnedPage {
    /// Grants `domid` access to this page (read-only if asked). A page has at most
    /// [`OwnedPage::MAX_GRANTS`] grants at a time.
    pub fn grant(&self, domid: u16, readonly: bool) -> Result<GrantRef, GrantError> {
        let mut grants = self.grants.lock();
        if grants.is_full() {
            return Err(GrantError::NoFreeRef);
        }
        // SAFETY: an OwnedPage is reached only through atomic accesses, and its Drop never
        // frees it while a grant recorded here is still live (see `revoke_all`).
        let gref = unsafe { grant_access(domid, self.gfn(), readonly) }?;
        // Not full: checked above under the same lock.
        let _ = grants.push(gref.0);
        Ok(gref)
    }

    /// Revokes a grant of this page made with [`OwnedPage::grant`]; [`Busy`] while the
    /// grantee still has it mapped. A ref that is not one of this page's grants: `Ok`.
    pub fn end_access(&self, gref: GrantRef) -> Result<(), Busy> {
        let mut grants = self.grants.lock();
        let Some(index) = grants.iter().position(|&r| r == gref.0) else {
            return Ok(());
        };
        end_access(gref)?;
        grants.swap_remove(index);
        Ok(())
    }

    /// The page's live grants.
    pub fn grants(&self) -> heapless::Vec<GrantRef, { OwnedPage::MAX_GRANTS }> {
        self.grants.lock().iter().map(|&r| GrantRef(r)).collect()
    }
}

/// Revokes every grant of `page`; false if one is still in use (then the page must not be
/// freed).
pub(crate) fn revoke_all(page: &OwnedPage) -> bool {
    let mut grants = page.grants.lock();
    grants.retain(|r| end_access(GrantRef(*r)).is_err());
    grants.is_empty()
}

/// A free page of the mapping window (outside RAM), reserved until [`window_free`].
pub(crate) fn window_alloc() -> Option<u64> {
    let mut window = WINDOW.lock();
    let window = window.get_or_insert_with(|| {
        let mut w = PageWindow::new(MAP_WINDOW_START, WINDOW_PAGES);
        w.reserve_below(ram_top());
        w
    });
    window.alloc()
}

pub(crate) fn window_free(addr: u64) {
    if let Some(window) = WINDOW.lock().as_mut() {
        window.free(addr);
    }
}

/// A foreign grant mapped into this domain's window. Reach the page through its
/// [`xen_ring::SharedPage`] methods; dropping it unmaps it.
#[derive(Debug)]
pub struct MappedGrant {
    page: ForeignPage,
    handle: u32,
    domid: u16,
    gref: u32,
    readonly: bool,
    unmapped: bool,
}

impl MappedGrant {
    /// Guest-physical address of the mapping.
    pub fn gpa(&self) -> u64 {
        self.page.addr()
    }

    /// The handle the microvisor gave the mapping.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The granting domain and its ref.
    pub fn source(&self) -> (u16, GrantRef) {
        (self.domid, GrantRef(self.gref))
    }

    pub fn is_readonly(&self) -> bool {
        self.readonly
    }

    /// Unmaps the grant (`GNTTABOP_unmap_grant_ref`); on failure the `GNTST_*` status (the
    /// window page then stays reserved).
    pub fn unmap(mut self) -> Result<(), i16> {
        self.unmapped = true;
        unmap_grant(self.page.addr(), self.handle)
    }
}

impl Drop for MappedGrant {
    fn drop(&mut self) {
        if !self.unmapped {
            let _ = unmap_grant(self.page.addr(), self.handle);
        }
    }
}

impl SharedPage for MappedGrant {
    fn size_bytes(&self) -> usize {
        4096
    }
    fn load_u32(&self, offset: usize) -> u32 {
        self.page.load_u32(offset)
    }
    fn store_u32(&self, offset: usize, value: u32) {
        self.page.store_u32(offset, value)
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.page.read(offset, out)
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) {
        self.page.write(offset, data)
    }
    fn fence(&self) {
        fence(Ordering::SeqCst)
    }
}

/// Maps `domid`'s grant `gref` (read-only if asked) at a free page of the window;
/// `Err(GNTST_*)` if the microvisor refuses (or `GNTST_no_device_space` if the window is
/// full, `GNTST_general_error` if the hypercall itself failed).
pub fn map_grant(domid: u16, gref: GrantRef, readonly: bool) -> Result<MappedGrant, i16> {
    let gpa = window_alloc().ok_or(microvisor_abi::grant::GNTST_NO_DEVICE_SPACE)?;
    let mut op = [0u8; MAP_GRANT_REF_SIZE];
    op[0..8].copy_from_slice(&gpa.to_le_bytes());
    let flags = GNTMAP_HOST_MAP | if readonly { GNTMAP_READONLY } else { 0 };
    op[8..12].copy_from_slice(&flags.to_le_bytes());
    op[12..16].copy_from_slice(&gref.0.to_le_bytes());
    op[16..18].copy_from_slice(&domid.to_le_bytes());
    op[18..20].copy_from_slice(&GNTST_GENERAL_ERROR.to_le_bytes());
    let ret = hypercall::grant_table_op(GNTTABOP_MAP_GRANT_REF, &mut op, 1);
    let status = i16::from_le_bytes([op[18], op[19]]);
    if ret < 0 || status != GNTST_OKAY {
        window_free(gpa);
        return Err(if ret < 0 { GNTST_GENERAL_ERROR } else { status });
    }
    let handle = u32::from_le_bytes([op[20], op[21], op[22], op[23]]);
    Ok(MappedGrant {
        // SAFETY: the microvisor just mapped the granted frame at `gpa`, a window page
        // outside RAM that this module handed out to this mapping alone; it stays mapped
        // until the MappedGrant unmaps it, and is accessed only atomically.
        page: unsafe { ForeignPage::new(gpa) },
        handle,
        domid,
        gref: gref.0,
        readonly,
        unmapped: false,
    })
}

/// `GNTTABOP_unmap_grant_ref` of the mapping at `gpa` with `handle`; on success the window
/// page is free again. Prefer [`MappedGrant::unmap`]: after this, any `MappedGrant` for the
/// same page faults (and ends the domain) when touched.
pub fn unmap_grant(gpa: u64, handle: u32) -> Result<(), i16> {
    let mut op = [0u8; UNMAP_GRANT_REF_SIZE];
    op[0..8].copy_from_slice(&gpa.to_le_bytes());
    op[16..20].copy_from_slice(&handle.to_le_bytes());
    op[20..22].copy_from_slice(&GNTST_GENERAL_ERROR.to_le_bytes());
    let ret = hypercall::grant_table_op(GNTTABOP_UNMAP_GRANT_REF, &mut op, 1);
    let status = i16::from_le_bytes([op[20], op[21]]);
    if ret < 0 {
        return Err(GNTST_GENERAL_ERROR);
    }
    if status != GNTST_OKAY {
        return Err(status);
    }
    window_free(gpa);
    Ok(())
}

/// One side of a [`GrantCopy`].
#[derive(Clone, Copy)]
pub enum CopySide<'a> {
    /// A grant of another domain.
    Grant {
        domid: u16,
        gref: GrantRef,
        offset: u16,
    },
    /// A page of this domain.
    Page { page: &'a OwnedPage, offset: u16 },
}

/// One `GNTTABOP_copy` operation; `status` is the `GNTST_*` result after [`grant_copy`].
#[derive(Clone, Copy)]
pub struct GrantCopy<'a> {
    pub source: CopySide<'a>,
    pub dest: CopySide<'a>,
    pub len: u16,
    pub status: i16,
}

fn encode_side(side: &CopySide<'_>, out: &mut [u8]) -> bool {
    match *side {
        CopySide::Grant {
            domid,
            gref,
            offset,
        } => {
            out[0..4].copy_from_slice(&gref.0.to_le_bytes());
            out[8..10].copy_from_slice(&domid.to_le_bytes());
            out[10..12].copy_from_slice(&offset.to_le_bytes());
            true
        }
        CopySide::Page { page, offset } => {
            out[0..8].copy_from_slice(&page.gfn().to_le_bytes());
            out[8..10].copy_from_slice(&microvisor_abi::evtchn::DOMID_SELF.to_le_bytes());
            out[10..12].copy_from_slice(&offset.to_le_bytes());
            false
        }
    }
}

/// `GNTTABOP_copy` of each operation (in batches); sets each `status`. `Err` only if the
/// hypercall itself failed (then the statuses of that batch are `GNTST_general_error`).
pub fn grant_copy(ops: &mut [GrantCopy<'_>]) -> Result<(), i64> {
    const BATCH: usize = 16;
    for chunk in ops.chunks_mut(BATCH) {
        let mut bytes = [0u8; BATCH * COPY_SIZE];
        for (op, out) in chunk.iter().zip(bytes.chunks_mut(COPY_SIZE)) {
            let mut flags = 0u16;
            if encode_side(&op.source, &mut out[0..16]) {
                flags |= GNTCOPY_SOURCE_GREF;
            }
            if encode_side(&op.dest, &mut out[16..32]) {
                flags |= GNTCOPY_DEST_GREF;
            }
            out[32..34].copy_from_slice(&op.len.to_le_bytes());
            out[34..36].copy_from_slice(&flags.to_le_bytes());
            out[36..38].copy_from_slice(&GNTST_GENERAL_ERROR.to_le_bytes());
        }
        // SAFETY: every destination that is not a grant is an OwnedPage of this domain,
        // which is only ever accessed atomically, so the microvisor writing it breaks no
        // Rust reference.
        let ret = unsafe { hypercall::grant_copy_raw(&mut bytes, chunk.len() as u32) };
        for (op, out) in chunk.iter_mut().zip(bytes.chunks(COPY_SIZE)) {
            op.status = if ret < 0 {
                GNTST_GENERAL_ERROR
            } else {
                i16::from_le_bytes([out[36], out[37]])
            };
        }
        if ret < 0 {
            return Err(ret);
        }
    }
    Ok(())
}

/// One copy between a segment of a peer's grant and a byte range of a [`DmaRegion`] (a
/// backend's bounce buffer), for [`copy_with_bounce`]; `status` is the `GNTST_*` result.
#[derive(Clone, Copy, Debug)]
pub struct BounceCopy {
    pub domid: u16,
    pub gref: GrantRef,
    /// Byte offset in the granted page; `guest_offset + len` is at most 4096.
    pub guest_offset: u16,
    /// Byte offset in the bounce region.
    pub bounce_offset: usize,
    pub len: u16,
    /// Bounce to grant (a block read) rather than grant to bounce (a write).
    pub to_guest: bool,
    pub status: i16,
}

/// `GNTTABOP_copy` of each [`BounceCopy`], in batches: an op whose bounce range crosses a
/// page boundary of `bounce` becomes two hypercall ops (each side of a copy must lie in one
/// page). Sets each op's `status` (the first failure of its parts). An op outside the
/// granted page or the region gets `GNTST_bad_copy_arg` without a hypercall. `Err` only if
/// a hypercall itself failed.
pub fn copy_with_bounce(ops: &mut [BounceCopy], bounce: &mut DmaRegion) -> Result<(), i64> {
    copy_with_bounces(&mut [BounceGroup {
        region: bounce,
        ops,
    }])
}

/// Page-sized parts one grant-copy hypercall of [`copy_with_bounces`] carries: a 128 KiB
/// request (Linux's blkfront sends 32 segments) in one call. Each call is a world switch,
/// dear under emulation; the microvisor takes up to 512.
pub const COPY_BATCH: usize = 64;

/// Copies between peers' grants and one [`DmaRegion`], for [`copy_with_bounces`]: each op's
/// `bounce_offset` is in `region`.
pub struct BounceGroup<'a> {
    pub region: &'a mut DmaRegion,
    pub ops: &'a mut [BounceCopy],
}

/// [`copy_with_bounce`] for several regions at once (a backend's bounce buffers, one per
/// request): the ops of all groups share the hypercalls, [`COPY_BATCH`] parts each, in order.
pub fn copy_with_bounces(groups: &mut [BounceGroup<'_>]) -> Result<(), i64> {
    const BATCH: usize = COPY_BATCH;
    // (group, op index, encoded op) triples, flushed BATCH at a time.
    type Parts = heapless::Vec<(usize, usize, [u8; COPY_SIZE]), BATCH>;
    let mut parts: Parts = heapless::Vec::new();
    let mut result = Ok(());
    let flush = |parts: &mut Parts, groups: &mut [BounceGroup<'_>]| -> Result<(), i64> {
        if parts.is_empty() {
            return Ok(());
        }
        let mut bytes = [0u8; BATCH * COPY_SIZE];
        for ((_, _, part), out) in parts.iter().zip(bytes.chunks_mut(COPY_SIZE)) {
            out.copy_from_slice(part);
        }
        // SAFETY: every local side is a page of a group's region, which the caller lends
        // mutably for the whole call, so nothing else reads or borrows it while the
        // microvisor writes.
        let ret = unsafe {
            hypercall::grant_copy_raw(&mut bytes[..parts.len() * COPY_SIZE], parts.len() as u32)
        };
        for ((group, index, _), out) in parts.iter().zip(bytes.chunks(COPY_SIZE)) {
            let status = if ret < 0 {
                GNTST_GENERAL_ERROR
            } else {
                i16::from_le_bytes([out[36], out[37]])
            };
            let op = &mut groups[*group].ops[*index];
            if op.status == GNTST_OKAY {
                op.status = status;
            }
        }
        parts.clear();
        if ret < 0 {
            Err(ret)
        } else {
            Ok(())
        }
    };
    for group in 0..groups.len() {
        let base = groups[group].region.bus_addr();
        let region_len = groups[group].region.len();
        for index in 0..groups[group].ops.len() {
            let op = groups[group].ops[index];
            groups[group].ops[index].status = GNTST_OKAY;
            let len = usize::from(op.len);
            let in_page = usize::from(op.guest_offset) + len <= 4096;
            let in_region = op
                .bounce_offset
                .checked_add(len)
                .is_some_and(|end| end <= region_len);
            if !in_page || !in_region || len == 0 {
                groups[group].ops[index].status = GNTST_BAD_COPY_ARG;
                continue;
            }
            let mut done = 0usize;
            while done < len {
                let local = base + (op.bounce_offset + done) as u64;
                let room = 4096 - (local % 4096) as usize;
                let chunk = room.min(len - done);
                let mut part = [0u8; COPY_SIZE];
                let (guest, mine) = if op.to_guest { (16, 0) } else { (0, 16) };
                part[guest..guest + 4].copy_from_slice(&op.gref.0.to_le_bytes());
                part[guest + 8..guest + 10].copy_from_slice(&op.domid.to_le_bytes());
                part[guest + 10..guest + 12]
                    .copy_from_slice(&(op.guest_offset + done as u16).to_le_bytes());
                part[mine..mine + 8].copy_from_slice(&(local / 4096).to_le_bytes());
                part[mine + 8..mine + 10]
                    .copy_from_slice(&microvisor_abi::evtchn::DOMID_SELF.to_le_bytes());
                part[mine + 10..mine + 12].copy_from_slice(&((local % 4096) as u16).to_le_bytes());
                part[32..34].copy_from_slice(&(chunk as u16).to_le_bytes());
                let flags = if op.to_guest {
                    GNTCOPY_DEST_GREF
                } else {
                    GNTCOPY_SOURCE_GREF
                };
                part[34..36].copy_from_slice(&flags.to_le_bytes());
                part[36..38].copy_from_slice(&GNTST_GENERAL_ERROR.to_le_bytes());
                if parts.is_full() {
                    if let Err(e) = flush(&mut parts, groups) {
                        result = Err(e);
                    }
                }
                let _ = parts.push((group, index, part));
                done += chunk;
            }
        }
    }
    if let Err(e) = flush(&mut parts, groups) {
        result = Err(e);
    }
    result
}
