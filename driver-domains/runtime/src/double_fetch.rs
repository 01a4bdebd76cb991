//! Hypercalls whose argument memory another vCPU keeps rewriting (the XSA-155 double-fetch
//! class), for the `hello` image's `double-fetch` test mode: vCPU 1 runs [`flipper`], which
//! flips chosen fields of the argument structs between a valid and a hostile value as fast
//! as it can, while vCPU 0 runs [`run`]: every hypercall family in turn, `calls` times,
//! each call on that changing memory. Test-only, like [`crate::testing`].
//!
//! A microvisor that reads each argument once and uses only its copy answers every call as
//! the valid or the hostile value of each field explains. Each call is judged on what the
//! guest can see: the result, the output fields, and the state the call should have left
//! (a mapping that exists or not, a grant's busy flags, the bytes a copy wrote, a canary
//! next to a refused address, the HVM parameters). A result no mix of the two values
//! explains is counted as inconsistent. Per family: `calls`, `valid` (answered as the valid
//! values ask), `hostile` (answered as some hostile value asks), `inconsistent`.
//!
//! | family | fields flipped (valid ↔ hostile) | answers |
//! |---|---|---|
//! | `xen_version` | `get_features` submap index 0 ↔ 1, the struct across a page boundary | submap 0x305 / 0 |
//! | `memory_op` | `add_to_physmap(shared_info)`: domid self ↔ other, idx 0 ↔ 1, gpfn ↔ 2^24 | 0 / `-EPERM`, `-EINVAL` |
//! | `grant-map` | 2 maps of a read-only self-grant: ref ↔ beyond the table, readonly ↔ writable, domid ↔ unknown, host_addr ↔ unaligned | mapped (read back, unmapped) / `GNTST_*` with nothing held |
//! | `grant-unmap` | handle ↔ another, host_addr ↔ another page | unmapped / refused with the mapping still there |
//! | `grant-copy` | 2 copies: dest offset 0 ↔ 4032, len 64 ↔ 2048, dest gref ↔ frame beyond RAM; source offset 0 ↔ 4090 | exactly the bytes asked for / nothing written |
//! | `grant-misc` | `query_size` domid, `set_version` 1 ↔ 2, `get_version` domid; `setup_table` | status, `-EINVAL`; `-ENOSYS` |
//! | `event_channel_op` | `send`/`unmask` port ↔ 5000, `status` port IPI ↔ unbound and domid, `bind_vcpu` vcpu 0 ↔ 9, `alloc_unbound` domid | 0, the port's status / `-EINVAL`, `-EPERM`, `-ENOENT` |
//! | `sched_op` | `poll`: nr_ports 1 ↔ 129, ports pointer ↔ unmapped, port ↔ 5000 | 0 / `-EINVAL`, `-EFAULT` |
//! | `vcpu_op` | single-shot flags 0 ↔ future (past deadline), time area ↔ misaligned (canary beside it), runstate area ↔ unmapped, vcpu_info offset ↔ across a page | 0 / `-ETIME`, `-EINVAL`, `-EFAULT` |
//! | `hvm_op` | `get_param` index 0 ↔ 2 and domid, `set_param` index 0 ↔ 1 and callback vector 0xf3 ↔ 0x10 | the parameter / `-EPERM`, `-EINVAL`; parameters unchanged |
//! | `console_io` | the 48 bytes written: `v` ↔ ESC | 0 (the console prints only `v` and `?`; counted by what the buffer held just before) |
//! | `microvisor_op` | our ops read nothing from guest memory: their output bytes are flipped | 0 / `-EPERM` as always |
//!
//! The argument area is 8 pages at the top of free RAM, reached only with atomic accesses.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use microvisor_abi::errno::{EFAULT, EINVAL, ENOENT, ENOSYS, EPERM};
use microvisor_abi::evtchn::{
    DOMID_SELF, EVTCHNOP_ALLOC_UNBOUND, EVTCHNOP_BIND_VCPU, EVTCHNOP_SEND, EVTCHNOP_STATUS,
    EVTCHNOP_UNMASK, EVTCHNSTAT_IPI, EVTCHNSTAT_UNBOUND,
};
use microvisor_abi::grant::{
    GNTCOPY_DEST_GREF, GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTST_BAD_COPY_ARG, GNTST_BAD_DOMAIN,
    GNTST_BAD_GNTREF, GNTST_BAD_HANDLE, GNTST_BAD_PAGE, GNTST_BAD_VIRT_ADDR, GNTST_GENERAL_ERROR,
    GNTST_OKAY, GNTST_PERMISSION_DENIED, GNTTABOP_COPY, GNTTABOP_GET_VERSION,
    GNTTABOP_MAP_GRANT_REF, GNTTABOP_QUERY_SIZE, GNTTABOP_SETUP_TABLE, GNTTABOP_SET_VERSION,
    GNTTABOP_UNMAP_GRANT_REF, GTF_READING, GTF_WRITING,
};
use microvisor_abi::hvm::XENMEM_ADD_TO_PHYSMAP;
use microvisor_abi::hvm::{HVMOP_GET_PARAM, HVMOP_SET_PARAM, XENMAPSPACE_SHARED_INFO};
use microvisor_abi::hypercall::{
    CONSOLEIO_WRITE, CONSOLE_IO, EVENT_CHANNEL_OP, GRANT_TABLE_OP, HVM_OP, MEMORY_OP,
    MICROVISOR_OP, SCHED_OP, VCPU_OP, XEN_VERSION,
};
use microvisor_abi::microvisor_op::{
    MVOP_DOMAIN_INFO, MVOP_DOMAIN_STATS, MVOP_LIST_DOMAINS, MVOP_PCI_LIST,
};
use microvisor_abi::sched::SCHEDOP_POLL;
use microvisor_abi::vcpu::{
    ETIME, VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA, VCPUOP_REGISTER_VCPU_INFO,
    VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA, VCPUOP_SET_SINGLESHOT_TIMER, VCPU_SSHOTTMR_FUTURE,
};
use microvisor_abi::version::{FEATURES_SUBMAP0, XENVER_GET_FEATURES};

use crate::boot_info::BootInfo;
use crate::grant_table::{self, GrantRef};
use crate::layout::{Range, PAGE_BYTES};
use crate::shared_mem::ForeignPage;
use crate::testing::Refused;
use crate::{events, hypercall, smp, time};

const PAGE: usize = PAGE_BYTES as usize;
const AREA_PAGES: usize = 8;

// Where things lie in the area (byte offsets). Pages 0 and 1: argument structs, the flipped
// ones in page 0 (one across into page 1), clean ones vCPU 1 never touches in page 1.
const FEATURES: usize = PAGE - 4;
const PHYSMAP: usize = 64;
const MAP_OPS: usize = 128;
const UNMAP_OP: usize = 192;
const COPY_OPS: usize = 256;
const QUERY: usize = 384;
const SET_VERSION: usize = 400;
const GET_VERSION: usize = 416;
const SETUP: usize = 432;
const SEND: usize = 512;
const STATUS: usize = 520;
const BIND_VCPU: usize = 544;
const ALLOC: usize = 552;
const UNMASK: usize = 560;
const POLL: usize = 640;
const TIMER: usize = 704;
const TIME_AREA: usize = 720;
const RUNSTATE: usize = 728;
const VCPU_INFO_ARG: usize = 736;
const HVM_GET: usize = 768;
const HVM_SET: usize = 784;
const CLEAN_MAP: usize = PAGE + 512;
const CLEAN_UNMAP: usize = PAGE + 576;
/// Granted read-write to this domain itself: the destination of copy 0.
const RW_PAGE: usize = 2 * PAGE;
/// Granted read-only to this domain itself, holding [`pattern`]: mapped, and copied from.
const RO_PAGE: usize = 3 * PAGE;
/// The destination of copy 1, by frame number.
const GMFN_PAGE: usize = 4 * PAGE;
/// Poll's ports, the time record, the canary beside the refused time-record address, the
/// runstate area.
const MISC_PAGE: usize = 5 * PAGE;
const PORTS: usize = MISC_PAGE;
const TIME_RECORD: usize = MISC_PAGE + 1024;
const CANARY: usize = MISC_PAGE + 2048;
const RUNSTATE_AREA: usize = MISC_PAGE + 3072;
/// Where vCPU 1's `vcpu_info` is moved to (the page after it is the area's too).
const VCPU1_INFO_PAGE: usize = 6 * PAGE;
/// The console bytes, then the output of our own ops.
const TEXT_PAGE: usize = 7 * PAGE;
const TEXT_BYTES: usize = 48;
const OP_OUTPUT: usize = TEXT_PAGE + 2048;

/// A domain id nobody has.
const NO_DOMAIN: u64 = 0x7ff5;
/// A guest-virtual address the runtime does not map (1 TiB).
const UNMAPPED: u64 = 1 << 40;
/// A port beyond the microvisor's port table.
const NO_PORT: u64 = 5000;
const SENTINEL16: u64 = 0x7777;
const CANARY_WORD: u64 = 0xca4a_21e5_ca4a_21e5;
const TEXT_VALID: u64 = u64::from_ne_bytes(*b"vvvvvvvv");
const TEXT_HOSTILE: u64 = u64::from_ne_bytes([0x1b; 8]);
const CALLBACK_HOSTILE: u64 = 2 << 56 | 0x10;

/// Word `i` of the read-only page (no byte of it pairs with zero at the same place twice).
fn pattern(i: usize) -> u64 {
    0x5eed_0000_0000_0000 | ((i as u64 + 1) * 0x0001_0001_0001)
}

/// The argument area: pages of free RAM no Rust object occupies, reached atomically only.
#[derive(Clone, Copy)]
struct Area {
    base: u64,
}

impl Area {
    fn page(&self, offset: usize) -> (ForeignPage, usize) {
        let page = offset / PAGE;
        assert!(page < AREA_PAGES, "area offset {offset:#x}");
        // SAFETY: the area is page-aligned free RAM below 4 GiB (identity-mapped) that the
        // memory plan keeps every Rust object out of; it is only ever accessed atomically
        // (here and by the microvisor) and stays RAM of this domain for good.
        let page = unsafe { ForeignPage::new(self.base + (page * PAGE) as u64) };
        (page, offset % PAGE)
    }

    fn addr(&self, offset: usize) -> u64 {
        self.base + offset as u64
    }

    fn gfn(&self, offset: usize) -> u64 {
        self.addr(offset) / PAGE_BYTES
    }

    fn store(&self, offset: usize, width: usize, value: u64) {
        let (page, at) = self.page(offset);
        match width {
            2 => page.u16(at).store(value as u16, Ordering::Relaxed),
            4 => page.u32(at).store(value as u32, Ordering::Relaxed),
            _ => page.u64(at).store(value, Ordering::Relaxed),
        }
    }

    fn load(&self, offset: usize, width: usize) -> u64 {
        let (page, at) = self.page(offset);
        match width {
            2 => u64::from(page.u16(at).load(Ordering::Relaxed)),
            4 => u64::from(page.u32(at).load(Ordering::Relaxed)),
            _ => page.u64(at).load(Ordering::Relaxed),
        }
    }

    fn fill(&self, offset: usize, bytes: usize, word: u64) {
        for at in (offset..offset + bytes).step_by(8) {
            self.store(at, 8, word);
        }
    }

    /// Whether the words of `[offset, offset + bytes)` are those of `expected`.
    fn holds(&self, offset: usize, bytes: usize, expected: impl Fn(usize) -> u64) -> bool {
        (0..bytes / 8).all(|i| self.load(offset + i * 8, 8) == expected(i))
    }
}

/// The area, once [`run`] has placed it (0 before).
static AREA_BASE: AtomicU64 = AtomicU64::new(0);

// --- the flipper --------------------------------------------------------------------------

const MAX_FLIPS: usize = 8;

/// A field vCPU 1 flips: where, how wide (2, 4 or 8 bytes), and its two values.
#[derive(Clone, Copy)]
struct Flip {
    offset: usize,
    width: usize,
    valid: u64,
    hostile: u64,
}

const fn flip(offset: usize, width: usize, valid: u64, hostile: u64) -> Flip {
    Flip {
        offset,
        width,
        valid,
        hostile,
    }
}

static FLIP_OFFSET: [AtomicUsize; MAX_FLIPS] = [const { AtomicUsize::new(0) }; MAX_FLIPS];
static FLIP_WIDTH: [AtomicUsize; MAX_FLIPS] = [const { AtomicUsize::new(0) }; MAX_FLIPS];
static FLIP_VALID: [AtomicU64; MAX_FLIPS] = [const { AtomicU64::new(0) }; MAX_FLIPS];
static FLIP_HOSTILE: [AtomicU64; MAX_FLIPS] = [const { AtomicU64::new(0) }; MAX_FLIPS];
static FLIP_COUNT: AtomicUsize = AtomicUsize::new(0);
/// `generation << 1 | running`, or [`FINISHED`]: what vCPU 0 wants of the flipper.
static PHASE: AtomicU32 = AtomicU32::new(0);
/// The last phase the flipper saw, stored before it acts on it.
static ACK: AtomicU32 = AtomicU32::new(0);
const FINISHED: u32 = u32::MAX;
/// Field stores the flipper made.
static FLIPS: AtomicU64 = AtomicU64::new(0);

/// vCPU 1: flips the current fields until [`run`] is done. Even rounds store every valid
/// value, odd rounds a changing non-empty set of hostile ones, so the memory is all valid
/// about half the time and any mix at others.
pub fn flipper(_id: u32) -> ! {
    let mut round = 0u64;
    loop {
        let phase = PHASE.load(Ordering::Acquire);
        ACK.store(phase, Ordering::Release);
        if phase == FINISHED {
            smp::park();
        }
        if phase & 1 == 0 {
            core::hint::spin_loop();
            continue;
        }
        let area = Area {
            base: AREA_BASE.load(Ordering::Acquire),
        };
        let n = FLIP_COUNT.load(Ordering::Acquire);
        for _ in 0..64 {
            round = round.wrapping_add(1);
            let all = (1u64 << n) - 1;
            let hostile = match (round & 1, (round >> 1) & all) {
                (0, _) => 0,
                (_, 0) => all,
                (_, some) => some,
            };
            for i in 0..n {
                let value = if hostile >> i & 1 == 0 {
                    FLIP_VALID[i].load(Ordering::Relaxed)
                } else {
                    FLIP_HOSTILE[i].load(Ordering::Relaxed)
                };
                area.store(
                    FLIP_OFFSET[i].load(Ordering::Relaxed),
                    FLIP_WIDTH[i].load(Ordering::Relaxed),
                    value,
                );
            }
        }
        FLIPS.fetch_add(64 * n as u64, Ordering::Relaxed);
    }
}

/// Stops the flipper and waits until it no longer touches the area.
fn stop_flipping() {
    let stopped = (ACK.load(Ordering::Acquire) >> 1).wrapping_add(1) << 1;
    PHASE.store(stopped, Ordering::Release);
    while ACK.load(Ordering::Acquire) != stopped {
        hypercall::sched_yield();
    }
}

/// Writes every field's valid value, then has the flipper flip them; returns once it does.
fn start_flipping(area: Area, flips: &[Flip]) {
    assert!(flips.len() <= MAX_FLIPS);
    for (i, f) in flips.iter().enumerate() {
        area.store(f.offset, f.width, f.valid);
        FLIP_OFFSET[i].store(f.offset, Ordering::Relaxed);
        FLIP_WIDTH[i].store(f.width, Ordering::Relaxed);
        FLIP_VALID[i].store(f.valid, Ordering::Relaxed);
        FLIP_HOSTILE[i].store(f.hostile, Ordering::Relaxed);
    }
    FLIP_COUNT.store(flips.len(), Ordering::Release);
    let running = PHASE.load(Ordering::Acquire) | 1;
    PHASE.store(running, Ordering::Release);
    while ACK.load(Ordering::Acquire) != running {
        hypercall::sched_yield();
    }
}

// --- calls and judgements -----------------------------------------------------------------

/// How one call was answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// As the valid values ask.
    Valid,
    /// As some hostile value asks.
    Hostile,
    /// As neither explains.
    Inconsistent,
}

use Answer::{Hostile, Inconsistent, Valid};

/// The counts of one family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyCounts {
    pub name: &'static str,
    pub calls: u64,
    pub valid: u64,
    pub hostile: u64,
    pub inconsistent: u64,
    /// How long the family took.
    pub ms: u64,
}

/// What [`run`] found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub families: alloc::vec::Vec<FamilyCounts>,
    /// Field stores vCPU 1 made.
    pub flips: u64,
}

/// A hypercall whose pointers name the area.
fn call(num: u64, args: [u64; 5]) -> i64 {
    // SAFETY: every caller in this module passes pointers into the area (free RAM holding no
    // Rust object, accessed atomically only), and structs there name only area pages, map
    // window pages this module reserved, its own shared-info frame at the address the
    // runtime put it, or, as hostile values, addresses outside RAM the microvisor must
    // refuse. Nothing else of the runtime's can be written.
    unsafe { hypercall::raw(num, args[0], args[1], args[2], args[3], args[4]) }
}

/// Runs `calls` calls of one family with `flips` flipping, judging each with `one`.
fn family(
    area: Area,
    name: &'static str,
    calls: u64,
    flips: &[Flip],
    mut one: impl FnMut(u64) -> Answer,
) -> FamilyCounts {
    start_flipping(area, flips);
    let start = time::now_ns();
    let mut counts = FamilyCounts {
        name,
        ..FamilyCounts::default()
    };
    for i in 0..calls {
        match one(i) {
            Valid => counts.valid += 1,
            Hostile => counts.hostile += 1,
            Inconsistent => counts.inconsistent += 1,
        }
        counts.calls += 1;
    }
    stop_flipping();
    counts.ms = (time::now_ns() - start) / 1_000_000;
    counts
}

/// `Valid` if `result` is `valid`, `Hostile` if it is one of `hostile`.
fn judge(result: i64, valid: i64, hostile: &[i64]) -> Answer {
    if result == valid {
        Valid
    } else if hostile.contains(&result) {
        Hostile
    } else {
        Inconsistent
    }
}

/// The worse of two answers (any inconsistency wins, then any hostile part).
fn worse(a: Answer, b: Answer) -> Answer {
    match (a, b) {
        (Inconsistent, _) | (_, Inconsistent) => Inconsistent,
        (Hostile, _) | (_, Hostile) => Hostile,
        _ => Valid,
    }
}

/// The `GNTST_*` status field at `offset`.
fn status_at(area: Area, offset: usize) -> i16 {
    area.load(offset, 2) as u16 as i16
}

/// Places the area: the top [`AREA_PAGES`] pages of the highest free range large enough.
fn place(info: &BootInfo) -> Result<Area, Refused> {
    let bytes = (AREA_PAGES * PAGE) as u64;
    let mut top: Option<Range> = None;
    info.for_each_free_range(|range| {
        if range.len() >= bytes && top.is_none_or(|t| range.end > t.end) {
            top = Some(range);
        }
    });
    let top = top.ok_or(Refused::NoFreeRam)?;
    Ok(Area {
        base: top.end - bytes,
    })
}

/// The families whose calls unmap make this many times fewer calls: every unmap interrupts
/// the CPU that runs vCPU 1 (a TLB shootdown), which costs milliseconds under TCG.
const UNMAPPING_SHARE: u64 = 5;

/// vCPU 0: every family, `calls` calls each (`grant-map` and `grant-unmap` a fifth of that,
/// `console_io` from 64 until it has seen both values, at most 1024), while vCPU 1 runs
/// [`flipper`]. Returns the counts; the flipper parks when this returns.
pub fn run(info: &BootInfo, calls: u64) -> Result<Report, Refused> {
    let area = place(info)?;
    for offset in (0..AREA_PAGES * PAGE).step_by(8) {
        area.store(offset, 8, 0);
    }
    AREA_BASE.store(area.base, Ordering::Release);
    let me = info.domain.domid;
    let mut report = Report::default();
    report.families.push(xen_version(area, calls));
    report.families.push(memory_op(area, calls));
    let grants = Grants::new(area, me);
    report
        .families
        .push(grant_map(area, &grants, calls / UNMAPPING_SHARE));
    report
        .families
        .push(grant_unmap(area, &grants, calls / UNMAPPING_SHARE));
    report.families.push(grant_copy(area, &grants, calls));
    report.families.push(grant_misc(area, calls));
    grants.release();
    report.families.push(event_channel_op(area, me, calls));
    report.families.push(sched_op(area, calls));
    report.families.push(vcpu_op(area, calls));
    report.families.push(hvm_op(area, calls));
    report.families.push(console_io(area, calls.min(64)));
    report.families.push(microvisor_op(area, calls));
    PHASE.store(FINISHED, Ordering::Release);
    report.flips = FLIPS.load(Ordering::Relaxed);
    Ok(report)
}

// --- the families -------------------------------------------------------------------------

fn xen_version(area: Area, calls: u64) -> FamilyCounts {
    let flips = [flip(FEATURES, 4, 0, 1)];
    family(area, "xen_version", calls, &flips, |_| {
        area.store(FEATURES + 4, 4, 0xdead_beef);
        let result = call(
            XEN_VERSION,
            [XENVER_GET_FEATURES, area.addr(FEATURES), 0, 0, 0],
        );
        match (result, area.load(FEATURES + 4, 4) as u32) {
            (0, FEATURES_SUBMAP0) => Valid,
            (0, 0) => Hostile,
            _ => Inconsistent,
        }
    })
}

fn memory_op(area: Area, calls: u64) -> FamilyCounts {
    area.store(PHYSMAP + 4, 4, u64::from(XENMAPSPACE_SHARED_INFO));
    let gpfn = events::SHARED_INFO_GPA / PAGE_BYTES;
    let flips = [
        flip(PHYSMAP, 2, u64::from(DOMID_SELF), NO_DOMAIN),
        flip(PHYSMAP + 8, 8, 0, 1),
        flip(PHYSMAP + 16, 8, gpfn, 1 << 24),
    ];
    family(area, "memory_op", calls, &flips, |_| {
        let result = call(
            MEMORY_OP,
            [XENMEM_ADD_TO_PHYSMAP, area.addr(PHYSMAP), 0, 0, 0],
        );
        judge(result, 0, &[EPERM, EINVAL])
    })
}

/// The grants and map-window pages the grant families use.
struct Grants {
    read_only: GrantRef,
    read_write: GrantRef,
    window: [u64; 2],
}

impl Grants {
    fn new(area: Area, me: u16) -> Self {
        for i in 0..PAGE / 8 {
            area.store(RO_PAGE + i * 8, 8, pattern(i));
        }
        // SAFETY: both pages are area pages (no Rust object, atomic access only) that stay
        // this domain's; the grants are revoked in `release` once no mapping is left.
        let (read_only, read_write) = unsafe {
            (
                grant_table::grant_access(me, area.gfn(RO_PAGE), true),
                grant_table::grant_access(me, area.gfn(RW_PAGE), false),
            )
        };
        let window = [grant_table::window_alloc(), grant_table::window_alloc()];
        match (read_only, read_write, window) {
            (Ok(read_only), Ok(read_write), [Some(w0), Some(w1)]) => Grants {
                read_only,
                read_write,
                window: [w0, w1],
            },
            _ => panic!("double-fetch: granting to itself failed"),
        }
    }

    /// Whether neither grant is busy (nothing mapped, no copy in flight).
    fn idle(&self) -> bool {
        [self.read_only, self.read_write]
            .iter()
            .all(|&r| grant_table::grant_flags(r) & (GTF_READING | GTF_WRITING) == 0)
    }

    fn release(self) {
        let _ = grant_table::end_access(self.read_only);
        let _ = grant_table::end_access(self.read_write);
        for w in self.window {
            grant_table::window_free(w);
        }
    }
}

/// A map (`count` structs at `at`); returns the hypercall's result.
fn map(area: Area, at: usize, count: u64) -> i64 {
    call(
        GRANT_TABLE_OP,
        [GNTTABOP_MAP_GRANT_REF, area.addr(at), count, 0, 0],
    )
}

/// Unmaps `host_addr` with `handle` through the clean struct; returns the status.
fn clean_unmap(area: Area, host_addr: u64, handle: u32) -> i64 {
    area.store(CLEAN_UNMAP, 8, host_addr);
    area.store(CLEAN_UNMAP + 16, 4, u64::from(handle));
    area.store(CLEAN_UNMAP + 20, 2, SENTINEL16);
    let result = call(
        GRANT_TABLE_OP,
        [GNTTABOP_UNMAP_GRANT_REF, area.addr(CLEAN_UNMAP), 1, 0, 0],
    );
    if result == 0 {
        i64::from(status_at(area, CLEAN_UNMAP + 20))
    } else {
        result
    }
}

fn write_map_op(area: Area, at: usize, host_addr: u64, gref: GrantRef, readonly: bool) {
    let flags = GNTMAP_HOST_MAP | if readonly { GNTMAP_READONLY } else { 0 };
    area.store(at, 8, host_addr);
    area.store(at + 8, 4, u64::from(flags));
    area.store(at + 12, 4, u64::from(gref.0));
    area.store(at + 16, 2, u64::from(DOMID_SELF));
}

fn grant_map(area: Area, grants: &Grants, calls: u64) -> FamilyCounts {
    let [w0, w1] = grants.window;
    write_map_op(area, MAP_OPS, w0, grants.read_only, true);
    write_map_op(area, MAP_OPS + 32, w1, grants.read_only, true);
    let readonly = u64::from(GNTMAP_HOST_MAP | GNTMAP_READONLY);
    let flips = [
        flip(MAP_OPS + 12, 4, u64::from(grants.read_only.0), 0x00ff_0000),
        flip(MAP_OPS + 8, 4, readonly, u64::from(GNTMAP_HOST_MAP)),
        flip(MAP_OPS + 32 + 16, 2, u64::from(DOMID_SELF), NO_DOMAIN),
        flip(MAP_OPS + 32, 8, w1, w1 + 1),
    ];
    family(area, "grant-map", calls, &flips, |_| {
        for e in 0..2 {
            area.store(MAP_OPS + 32 * e + 18, 2, SENTINEL16);
        }
        if map(area, MAP_OPS, 2) != 0 {
            return Inconsistent;
        }
        let mut answer = Valid;
        for (e, host_addr) in [w0, w1].into_iter().enumerate() {
            let at = MAP_OPS + 32 * e;
            let status = status_at(area, at + 18);
            let one = if status == GNTST_OKAY {
                let handle = area.load(at + 20, 4) as u32;
                // SAFETY: the microvisor just mapped the read-only grant at this window page,
                // reserved for this test; it is read atomically and unmapped right after.
                let first = unsafe { ForeignPage::new(host_addr) }
                    .u64(0)
                    .load(Ordering::Relaxed);
                let flags = grant_table::grant_flags(grants.read_only);
                let held_read_only = flags & GTF_READING != 0 && flags & GTF_WRITING == 0;
                let unmapped = clean_unmap(area, host_addr, handle) == i64::from(GNTST_OKAY);
                if first == pattern(0) && held_read_only && unmapped {
                    Valid
                } else {
                    Inconsistent
                }
            } else {
                let refused = [
                    GNTST_BAD_GNTREF,
                    GNTST_GENERAL_ERROR,
                    GNTST_BAD_DOMAIN,
                    GNTST_BAD_VIRT_ADDR,
                ];
                if refused.contains(&status) {
                    Hostile
                } else {
                    Inconsistent
                }
            };
            answer = worse(answer, one);
        }
        if grants.idle() {
            answer
        } else {
            Inconsistent
        }
    })
}

fn grant_unmap(area: Area, grants: &Grants, calls: u64) -> FamilyCounts {
    let w0 = grants.window[0];
    write_map_op(area, CLEAN_MAP, w0, grants.read_only, true);
    // Maps cleanly; returns the handle.
    let map_clean = || {
        area.store(CLEAN_MAP + 18, 2, SENTINEL16);
        let ok = map(area, CLEAN_MAP, 1) == 0 && status_at(area, CLEAN_MAP + 18) == GNTST_OKAY;
        ok.then(|| area.load(CLEAN_MAP + 20, 4) as u32)
    };
    let Some(first) = map_clean() else {
        panic!("double-fetch: a clean map failed");
    };
    let _ = clean_unmap(area, w0, first);
    area.store(UNMAP_OP + 8, 8, 0);
    let flips = [
        flip(UNMAP_OP + 16, 4, u64::from(first), u64::from(first) + 100),
        flip(UNMAP_OP, 8, w0, w0 + PAGE_BYTES),
    ];
    family(area, "grant-unmap", calls, &flips, |_| {
        let Some(handle) = map_clean() else {
            return Inconsistent;
        };
        if handle != first {
            FLIP_VALID[0].store(u64::from(handle), Ordering::Relaxed);
            FLIP_HOSTILE[0].store(u64::from(handle) + 100, Ordering::Relaxed);
        }
        area.store(UNMAP_OP + 20, 2, SENTINEL16);
        let result = call(
            GRANT_TABLE_OP,
            [GNTTABOP_UNMAP_GRANT_REF, area.addr(UNMAP_OP), 1, 0, 0],
        );
        let status = status_at(area, UNMAP_OP + 20);
        let again = clean_unmap(area, w0, handle);
        let answer = match (result, status) {
            (0, GNTST_OKAY) if again == i64::from(GNTST_BAD_HANDLE) => Valid,
            (0, GNTST_BAD_HANDLE | GNTST_GENERAL_ERROR) if again == 0 => Hostile,
            _ => Inconsistent,
        };
        if grants.idle() {
            answer
        } else {
            Inconsistent
        }
    })
}

/// Writes one side of a copy at `at`: a gref (`is_gref`) or a frame number.
fn write_copy_side(area: Area, at: usize, target: u64, is_gref: bool) {
    if is_gref {
        // The union's upper half is 1: read as a frame number it lies far beyond RAM.
        area.store(at, 4, target);
        area.store(at + 4, 4, 1);
    } else {
        area.store(at, 8, target);
    }
    area.store(at + 8, 2, u64::from(DOMID_SELF));
    area.store(at + 10, 2, 0);
}

/// What a copy of `len` source bytes to `offset` of the page at `page` left: the bytes
/// asked for and nothing else, for one of the `(offset, len)` pairs (index returned).
fn copied(area: Area, page: usize, pairs: &[(usize, usize)]) -> Option<usize> {
    pairs.iter().position(|&(offset, len)| {
        area.holds(page, offset, |_| 0)
            && area.holds(page + offset, len, |i| area.load(RO_PAGE + i * 8, 8))
            && area.holds(page + offset + len, PAGE - offset - len, |_| 0)
    })
}

fn grant_copy(area: Area, grants: &Grants, calls: u64) -> FamilyCounts {
    // Copy 0: the read-only page's first bytes to the read-write grant; copy 1: the same to
    // a page named by frame number.
    let copy0 = COPY_OPS;
    let copy1 = COPY_OPS + 40;
    write_copy_side(area, copy0, area.gfn(RO_PAGE), false);
    write_copy_side(area, copy0 + 16, u64::from(grants.read_write.0), true);
    area.store(copy0 + 32, 2, 64);
    write_copy_side(area, copy1, area.gfn(RO_PAGE), false);
    write_copy_side(area, copy1 + 16, area.gfn(GMFN_PAGE), false);
    area.store(copy1 + 32, 2, 64);
    area.store(copy1 + 34, 2, 0);
    let flips = [
        flip(copy0 + 16 + 10, 2, 0, 4032),
        flip(copy0 + 32, 2, 64, 2048),
        flip(copy0 + 34, 2, u64::from(GNTCOPY_DEST_GREF), 0),
        flip(copy1 + 10, 2, 0, 4090),
    ];
    let refused = [GNTST_BAD_COPY_ARG, GNTST_BAD_PAGE];
    family(area, "grant-copy", calls, &flips, |_| {
        area.fill(RW_PAGE, PAGE, 0);
        area.fill(GMFN_PAGE, PAGE, 0);
        area.store(copy0 + 36, 2, SENTINEL16);
        area.store(copy1 + 36, 2, SENTINEL16);
        let result = call(
            GRANT_TABLE_OP,
            [GNTTABOP_COPY, area.addr(COPY_OPS), 2, 0, 0],
        );
        if result != 0 {
            return Inconsistent;
        }
        let first = match status_at(area, copy0 + 36) {
            0 => match copied(area, RW_PAGE, &[(0, 64), (4032, 64), (0, 2048)]) {
                Some(0) => Valid,
                Some(_) => Hostile,
                None => Inconsistent,
            },
            s if refused.contains(&s) && area.holds(RW_PAGE, PAGE, |_| 0) => Hostile,
            _ => Inconsistent,
        };
        let second = match status_at(area, copy1 + 36) {
            0 if copied(area, GMFN_PAGE, &[(0, 64)]).is_some() => Valid,
            s if refused.contains(&s) && area.holds(GMFN_PAGE, PAGE, |_| 0) => Hostile,
            _ => Inconsistent,
        };
        if grants.idle() {
            worse(first, second)
        } else {
            Inconsistent
        }
    })
}

fn grant_misc(area: Area, calls: u64) -> FamilyCounts {
    let flips = [
        flip(QUERY, 2, u64::from(DOMID_SELF), NO_DOMAIN),
        flip(SET_VERSION, 4, 1, 2),
        flip(GET_VERSION, 2, u64::from(DOMID_SELF), NO_DOMAIN),
    ];
    family(area, "grant-misc", calls, &flips, |i| match i % 4 {
        0 => {
            area.store(QUERY + 4, 4, u64::MAX);
            area.store(QUERY + 8, 4, u64::MAX);
            area.store(QUERY + 12, 2, SENTINEL16);
            let result = call(
                GRANT_TABLE_OP,
                [GNTTABOP_QUERY_SIZE, area.addr(QUERY), 1, 0, 0],
            );
            let (frames, max) = (area.load(QUERY + 4, 4), area.load(QUERY + 8, 4));
            match (result, status_at(area, QUERY + 12)) {
                (0, GNTST_OKAY) if frames >= 1 && max == 4 => Valid,
                (0, GNTST_PERMISSION_DENIED) if frames == 0 && max == 4 => Hostile,
                _ => Inconsistent,
            }
        }
        1 => judge(
            call(
                GRANT_TABLE_OP,
                [GNTTABOP_SET_VERSION, area.addr(SET_VERSION), 1, 0, 0],
            ),
            0,
            &[EINVAL],
        ),
        2 => {
            area.store(GET_VERSION + 4, 4, 0);
            let result = call(
                GRANT_TABLE_OP,
                [GNTTABOP_GET_VERSION, area.addr(GET_VERSION), 1, 0, 0],
            );
            match (result, area.load(GET_VERSION + 4, 4)) {
                (0, 1) => Valid,
                _ => Inconsistent,
            }
        }
        // Not offered (a PVH domain maps its table with add_to_physmap): nothing is read.
        _ => judge(
            call(
                GRANT_TABLE_OP,
                [GNTTABOP_SETUP_TABLE, area.addr(SETUP), 1, 0, 0],
            ),
            ENOSYS,
            &[],
        ),
    })
}

fn event_channel_op(area: Area, me: u16, calls: u64) -> FamilyCounts {
    let (Ok(unbound), Ok(ipi)) = (events::alloc_unbound(me), events::bind_ipi(0)) else {
        panic!("double-fetch: no ports");
    };
    let (unbound, ipi) = (u64::from(unbound.0), u64::from(ipi.0));
    area.store(BIND_VCPU, 4, unbound);
    area.store(ALLOC + 2, 2, u64::from(DOMID_SELF));
    let flips = [
        flip(SEND, 4, unbound, NO_PORT),
        flip(STATUS + 4, 4, ipi, unbound),
        flip(STATUS, 2, u64::from(DOMID_SELF), NO_DOMAIN),
        flip(BIND_VCPU + 4, 4, 0, 9),
        flip(ALLOC, 2, u64::from(DOMID_SELF), NO_DOMAIN),
        flip(UNMASK, 4, unbound, NO_PORT),
    ];
    let op = |cmd, at| call(EVENT_CHANNEL_OP, [cmd, area.addr(at), 0, 0, 0]);
    let counts = family(area, "event_channel_op", calls, &flips, |i| match i % 5 {
        0 => judge(op(EVTCHNOP_SEND, SEND), 0, &[EINVAL]),
        1 => {
            area.fill(STATUS + 8, 16, u64::MAX);
            let result = op(EVTCHNOP_STATUS, STATUS);
            let (status, vcpu) = (area.load(STATUS + 8, 4) as u32, area.load(STATUS + 12, 4));
            match (result, status) {
                (0, EVTCHNSTAT_IPI) if vcpu == 0 && area.load(STATUS + 16, 8) == 0 => Valid,
                (0, EVTCHNSTAT_UNBOUND) if area.load(STATUS + 16, 2) == u64::from(me) => Hostile,
                (EPERM, u32::MAX) => Hostile,
                _ => Inconsistent,
            }
        }
        2 => judge(op(EVTCHNOP_BIND_VCPU, BIND_VCPU), 0, &[ENOENT]),
        3 => {
            area.store(ALLOC + 4, 4, 0);
            match op(EVTCHNOP_ALLOC_UNBOUND, ALLOC) {
                0 => {
                    let port = area.load(ALLOC + 4, 4) as u32;
                    if port != 0 && events::close(events::Port(port)).is_ok() {
                        Valid
                    } else {
                        Inconsistent
                    }
                }
                EPERM if area.load(ALLOC + 4, 4) == 0 => Hostile,
                _ => Inconsistent,
            }
        }
        _ => judge(op(EVTCHNOP_UNMASK, UNMASK), 0, &[EINVAL]),
    });
    let _ = events::close(events::Port(unbound as u32));
    let _ = events::close(events::Port(ipi as u32));
    counts
}

fn sched_op(area: Area, calls: u64) -> FamilyCounts {
    // A masked IPI port raised once stays pending: a poll of it returns at once.
    let Ok(pending) = events::bind_ipi(0) else {
        panic!("double-fetch: no port");
    };
    events::mask(pending);
    let _ = events::send(pending);
    area.store(POLL + 16, 8, 0);
    let flips = [
        flip(POLL + 8, 4, 1, 129),
        flip(POLL, 8, area.addr(PORTS), UNMAPPED),
        flip(PORTS, 4, u64::from(pending.0), NO_PORT),
    ];
    let counts = family(area, "sched_op", calls, &flips, |_| {
        let result = call(SCHED_OP, [SCHEDOP_POLL, area.addr(POLL), 0, 0, 0]);
        judge(result, 0, &[EINVAL, EFAULT])
    });
    let _ = events::close(pending);
    counts
}

fn vcpu_op(area: Area, calls: u64) -> FamilyCounts {
    area.store(TIMER, 8, 1);
    area.store(VCPU_INFO_ARG, 8, area.gfn(VCPU1_INFO_PAGE));
    area.fill(CANARY, 64, CANARY_WORD);
    let flips = [
        flip(TIMER + 8, 4, 0, u64::from(VCPU_SSHOTTMR_FUTURE)),
        flip(TIME_AREA, 8, area.addr(TIME_RECORD), area.addr(CANARY) + 4),
        flip(RUNSTATE, 8, area.addr(RUNSTATE_AREA), UNMAPPED),
        flip(VCPU_INFO_ARG + 8, 4, 0, 4090),
    ];
    let op = |cmd, vcpu, at| call(VCPU_OP, [cmd, vcpu, area.addr(at), 0, 0]);
    let counts = family(area, "vcpu_op", calls, &flips, |i| match i % 4 {
        0 => judge(op(VCPUOP_SET_SINGLESHOT_TIMER, 0, TIMER), 0, &[ETIME]),
        1 => {
            area.fill(TIME_RECORD, 32, 0);
            let result = op(VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA, 0, TIME_AREA);
            let written = area.load(TIME_RECORD, 4) == 2 && area.load(TIME_RECORD + 24, 4) != 0;
            let answer = match result {
                0 if written => Valid,
                EINVAL if area.holds(TIME_RECORD, 32, |_| 0) => Hostile,
                _ => Inconsistent,
            };
            if area.holds(CANARY, 64, |_| CANARY_WORD) {
                answer
            } else {
                Inconsistent
            }
        }
        2 => judge(
            op(VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA, 0, RUNSTATE),
            0,
            &[EFAULT],
        ),
        // vCPU 1's vcpu_info moves once (then -EBUSY); the flipper takes no events.
        _ => match op(VCPUOP_REGISTER_VCPU_INFO, 1, VCPU_INFO_ARG) {
            0 | microvisor_abi::errno::EBUSY => Valid,
            EINVAL => Hostile,
            _ => Inconsistent,
        },
    });
    hypercall::stop_singleshot_timer();
    if time::register(0) < 0 {
        panic!("double-fetch: the time record could not be registered again");
    }
    counts
}

fn hvm_op(area: Area, calls: u64) -> FamilyCounts {
    let params = [0, 1, 2].map(hypercall::hvm_get_param);
    let [Ok(callback), Ok(store_pfn), Ok(store_port)] = params else {
        panic!("double-fetch: hvm params unreadable");
    };
    area.store(HVM_SET, 2, u64::from(DOMID_SELF));
    let flips = [
        flip(HVM_GET, 2, u64::from(DOMID_SELF), NO_DOMAIN),
        flip(HVM_GET + 4, 4, 0, 2),
        flip(HVM_SET + 4, 4, 0, 1),
        flip(HVM_SET + 8, 8, callback, CALLBACK_HOSTILE),
    ];
    let op = |cmd, at| call(HVM_OP, [cmd, area.addr(at), 0, 0, 0]);
    family(area, "hvm_op", calls, &flips, |i| {
        if i % 2 == 0 {
            area.store(HVM_GET + 8, 8, 0xdead);
            let result = op(HVMOP_GET_PARAM, HVM_GET);
            let value = area.load(HVM_GET + 8, 8);
            return match result {
                0 if value == callback => Valid,
                0 if value == store_port => Hostile,
                EPERM if value == 0xdead => Hostile,
                _ => Inconsistent,
            };
        }
        let answer = judge(op(HVMOP_SET_PARAM, HVM_SET), 0, &[EINVAL, EPERM]);
        let unchanged = hypercall::hvm_get_param(0) == Ok(callback)
            && hypercall::hvm_get_param(1) == Ok(store_pfn);
        if unchanged {
            answer
        } else {
            Inconsistent
        }
    })
}

/// The microvisor copies the bytes once and prints only printable ones (others as `?`):
/// the scenario checks that no ESC reaches the serial line. The result is 0 either way, so a
/// call counts as valid or hostile by what vCPU 0 saw in the buffer just before it; the calls
/// go on (up to 16 times `calls`) until both kinds were seen.
fn console_io(area: Area, calls: u64) -> FamilyCounts {
    let flips: [Flip; TEXT_BYTES / 8] =
        core::array::from_fn(|i| flip(TEXT_PAGE + 8 * i, 8, TEXT_VALID, TEXT_HOSTILE));
    start_flipping(area, &flips);
    let mut counts = FamilyCounts {
        name: "console_io",
        ..FamilyCounts::default()
    };
    while counts.calls < 16 * calls
        && (counts.calls < calls || counts.valid == 0 || counts.hostile == 0)
    {
        let hostile = !area.holds(TEXT_PAGE, TEXT_BYTES, |_| TEXT_VALID);
        let result = call(
            CONSOLE_IO,
            [
                CONSOLEIO_WRITE,
                TEXT_BYTES as u64,
                area.addr(TEXT_PAGE),
                0,
                0,
            ],
        );
        counts.calls += 1;
        match (result, hostile) {
            (0, false) => counts.valid += 1,
            (0, true) => counts.hostile += 1,
            _ => counts.inconsistent += 1,
        }
    }
    stop_flipping();
    area.store(TEXT_PAGE, 8, u64::from(b'\n'));
    call(CONSOLE_IO, [CONSOLEIO_WRITE, 1, area.addr(TEXT_PAGE), 0, 0]);
    counts
}

fn microvisor_op(area: Area, calls: u64) -> FamilyCounts {
    let flips = [
        flip(OP_OUTPUT, 8, 0, u64::MAX),
        flip(OP_OUTPUT + 16, 8, 0, u64::MAX),
    ];
    family(area, "microvisor_op", calls, &flips, |i| {
        let (cmd, count, expected) = match i % 4 {
            0 => (MVOP_DOMAIN_INFO, 0, 0),
            1 => (MVOP_DOMAIN_STATS, 0, 0),
            2 => (MVOP_PCI_LIST, 1, 0),
            _ => (MVOP_LIST_DOMAINS, 1, EPERM),
        };
        judge(
            call(MICROVISOR_OP, [cmd, area.addr(OP_OUTPUT), count, 0, 0]),
            expected,
            &[],
        )
    })
}
