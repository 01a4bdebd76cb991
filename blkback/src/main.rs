//! `blkback`: the block backend domain (see the library, `src/lib.rs`, for the protocol
//! logic and `README.md` for the whole picture).
//!
//! At start it opens every virtio-blk function the manifest passed through to it (`pci =
//! [...]`), connects to xenstore and watches its own `backend/vbd` directory, where the
//! xenstore domain writes one entry per disk of the manifests that this domain serves.
//! For each entry it walks the xenbus handshake with the front-end; once connected it
//! serves each queue whenever the queue's event channel fires. Data moves by grant copy
//! through the disk's bounce buffers (slots: [`SLOTS`], [`LARGE_SLOTS`]), which the disk
//! reads and writes by DMA (through the IOMMU); up to one request per slot is on the disk
//! at once (at most what its virtqueue takes). Each pass of the main loop first hands what
//! the disks finished to the queues that started it, then serves every queue whose event
//! channel fired, that got completions, or that has a request waiting for a slot; with
//! requests on a disk it sleeps until the disk's interrupt (or [`IN_FLIGHT_WAIT_NS`]).
//!
//! Lines it prints (labelled `[blkback]` by the console domain):
//!
//! | line | when |
//! |---|---|
//! | `disk <bdf>: <n> sectors, <interrupts>, <n> requests at once` | a disk was opened |
//! | `vbd <vdev> of <name> (<id>): <slice>, <mode>; waiting for the front-end` | a new entry |
//! | `vbd <vdev> of <name> (<id>): connected, <q> queue(s) of <p> ring page(s), ...` | handshake done |
//! | `vbd <vdev> of <name> (<id>) cut off: <reason>` | a hostile or broken front-end |
//! | `vbd <vdev> of <name> (<id>) closed: <counts>` | the vbd was closed (by either end) |
//! | `vbd <vdev> of <id>: <problem>` | an entry that cannot be served |
//! | `vbd <vdev> of <name> (<id>): stats: <counts>`, then `...: own: <blkback's counts>` | with `stats=idle` on the command line: a connected vbd went idle (no request for [`IDLE_STATS_NS`]) after serving requests; cumulative counts, for the benchmarks |
//!
//! Waits block at once instead of spinning first ([`SPIN_NS`]; `spin_us=N` on the command
//! line spins N µs).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};

use blkback::engine::{
    CopyError, Counters, Cutoff, DeviceError, Direction, Io, Platform, Queue, Round, SlotCopy,
};
use blkback::handshake::{self, Features, State};
use blkback::multi_page::MultiPage;
use blkback::request::{DataSegment, IndirectPages, Limits};
use blkback::slots::{Owner, Pool, Slot};
use blkback::vbd::Vbd;
use blkback::wire::{BlkBackRing, PAGE_BYTES, SECTOR_BYTES};
use driver_domains::dma::DmaRegion;
use driver_domains::events::{self, Port};
use driver_domains::grant_table::{self, BounceCopy, BounceGroup, GrantRef, MappedGrant};
use driver_domains::pci::{self, Bdf};
use driver_domains::virtio::{self, BlkDevice};
use driver_domains::xenstore::{Client, Error as XsError, Tx};
use driver_domains::{cmdline, hypercall, println, time, BootInfo};
use microvisor_abi::grant::{GNTST_GENERAL_ERROR, GNTST_OKAY};

driver_domains::entry!(main);

/// The longest one disk request may take.
const IO_TIMEOUT_NS: u64 = 10_000_000_000;
/// Without any event, how often the main loop looks at xenstore again.
const IDLE_NS: u64 = 1_000_000_000;
/// With requests on a device, how long the main loop sleeps at most without an event.
const IN_FLIGHT_WAIT_NS: u64 = 10_000_000;
/// With `stats=idle`: how long a vbd must go without a request before its counts are
/// printed, and how often the main loop looks.
const IDLE_STATS_NS: u64 = 300_000_000;
const IDLE_STATS_POLL_NS: u64 = 100_000_000;
/// How long a wait spins before it blocks (the runtime's default is 50 µs; `spin_us=N` on
/// the command line sets it). None: under QEMU's TCG every CPU of the machine is emulated
/// by one host thread in turn, so a spinning vCPU only delays the others (the guest, the
/// microvisor) that would produce what it waits for. Measured (QEMU's CPU time per 4 KiB
/// read at queue depth 1, two boots each): 984 and 1114 us without the spin, 1123 and
/// 1281 us with it; sequential and QD32 figures moved the same way.
const SPIN_NS: u64 = 0;
/// Grant maps and unmaps this domain made (ring pages only: the data path copies).
static GRANT_MAPS: AtomicU64 = AtomicU64::new(0);
static GRANT_UNMAPS: AtomicU64 = AtomicU64::new(0);
/// Watch token of the backend directory.
const TOKEN_BACKEND: &str = "vbds";
/// Watch token of the front-ends' `state` nodes.
const TOKEN_FRONTEND: &str = "fe";

/// The slots of each disk, `(pages, how many)`: small ones for an ordinary request (11
/// segments), middle ones for the indirect requests Linux's blkfront sends by default (32
/// segments), and large ones for the largest request this back-end advertises
/// ([`Limits::max_request_bytes`], added at start). As many as the device takes at once.
const SLOTS: [(usize, usize); 2] = [(blkback::wire::MAX_DIRECT_SEGMENTS, 8), (32, 6)];
/// How many slots hold the largest request.
const LARGE_SLOTS: usize = 2;

/// A passthrough disk and the bounce buffers its requests use.
struct Disk {
    bdf: Bdf,
    dev: BlkDevice,
    sectors: u64,
    slots: Pool<DmaRegion>,
}

/// The machine a queue runs on: the vbd's disk and its slots, the front-end's grants.
struct Machine<'a> {
    disk: &'a mut Disk,
    /// Where indirect pages are copied to (one request at a time).
    scratch: &'a mut DmaRegion,
    domid: u16,
    /// The queue's number in the disk's slot pool.
    owner: Owner,
}

/// The copy operations of `segments` into or out of a slot's start.
fn slot_ops(domid: u16, segments: &[DataSegment], direction: Direction) -> Vec<BounceCopy> {
    let mut at = 0usize;
    segments
        .iter()
        .map(|segment| {
            let op = BounceCopy {
                domid,
                gref: GrantRef(segment.gref),
                guest_offset: segment.offset_bytes,
                bounce_offset: at,
                len: segment.len_bytes,
                to_guest: direction == Direction::ToGuest,
                status: GNTST_OKAY,
            };
            at += usize::from(segment.len_bytes);
            op
        })
        .collect()
}

/// Copies `ops` through `region`: the first grant refused, if any.
fn copy_ops(ops: &mut [BounceCopy], region: &mut DmaRegion) -> Result<(), CopyError> {
    let first = ops.first().map_or(0, |op| op.gref.0);
    grant_table::copy_with_bounce(ops, region).map_err(|_| CopyError {
        gref: first,
        status: GNTST_GENERAL_ERROR,
    })?;
    match ops.iter().find(|op| op.status != GNTST_OKAY) {
        Some(op) => Err(CopyError {
            gref: op.gref.0,
            status: op.status,
        }),
        None => Ok(()),
    }
}

/// Copy operations one grant-copy hypercall carries (as the runtime batches them).
const COPY_OPS_PER_CALL: usize = grant_table::COPY_BATCH;

/// Copies the requests `first..` of a [`Platform::copy`] (one group each) in one batch:
/// the index of the first refused and its grant.
fn copy_groups(groups: &mut [BounceGroup<'_>], first: usize) -> Result<(), (usize, CopyError)> {
    let failed = grant_table::copy_with_bounces(groups);
    for (index, group) in groups.iter().enumerate() {
        let refused = group.ops.iter().find(|op| op.status != GNTST_OKAY);
        let error = match (refused, &failed) {
            (Some(op), _) => CopyError {
                gref: op.gref.0,
                status: op.status,
            },
            (None, Err(_)) => CopyError {
                gref: group.ops.first().map_or(0, |op| op.gref.0),
                status: GNTST_GENERAL_ERROR,
            },
            (None, Ok(())) => continue,
        };
        return Err((first + index, error));
    }
    Ok(())
}

/// A device failure as the engine sees it; a device reset by the failure is brought back
/// for the next request.
fn device_error(dev: &mut BlkDevice, e: &virtio::BlkError) -> DeviceError {
    if !matches!(e, virtio::BlkError::Io) && dev.in_flight() == 0 {
        let _ = dev.reinit();
    }
    DeviceError(format!("{e}"))
}

impl Platform for Machine<'_> {
    fn reserve(&mut self, bytes: usize) -> Option<Slot> {
        // A device that is not ready refuses the request when it is started.
        if self.disk.dev.is_ready() && self.disk.slots.busy() >= self.disk.dev.max_in_flight() {
            return None;
        }
        self.disk.slots.reserve(self.owner, bytes)
    }

    fn release(&mut self, slot: Slot) {
        self.disk.slots.release(slot, self.owner);
    }

    /// Small requests' copies share hypercalls (up to [`COPY_OPS_PER_CALL`] operations each);
    /// a larger request's copy has its own.
    fn copy(
        &mut self,
        copies: &[SlotCopy<'_>],
        direction: Direction,
    ) -> Result<(), (usize, CopyError)> {
        let mut held: Vec<Option<(Slot, &mut DmaRegion)>> =
            self.disk.slots.held_mut(self.owner).map(Some).collect();
        let mut regions = Vec::with_capacity(copies.len());
        for (index, copy) in copies.iter().enumerate() {
            let region = held
                .iter_mut()
                .find(|h| h.as_ref().is_some_and(|(slot, _)| *slot == copy.slot))
                .and_then(Option::take)
                .map(|(_, region)| region);
            let Some(region) = region else {
                let error = CopyError {
                    gref: copy.segments.first().map_or(0, |s| s.gref),
                    status: GNTST_GENERAL_ERROR,
                };
                return Err((index, error));
            };
            regions.push(region);
        }
        let mut ops: Vec<Vec<BounceCopy>> = copies
            .iter()
            .map(|copy| slot_ops(self.domid, copy.segments, direction))
            .collect();
        let mut first = 0;
        let mut groups: Vec<BounceGroup<'_>> = Vec::new();
        let mut batch_ops = 0;
        for (index, (region, ops)) in regions.into_iter().zip(ops.iter_mut()).enumerate() {
            if !groups.is_empty() && batch_ops + ops.len() > COPY_OPS_PER_CALL {
                copy_groups(&mut groups, first)?;
                groups.clear();
                first = index;
                batch_ops = 0;
            }
            batch_ops += ops.len();
            groups.push(BounceGroup { region, ops });
        }
        copy_groups(&mut groups, first)
    }

    fn fetch_indirect(
        &mut self,
        grefs: &[u32],
        bytes: &[usize],
        pages: &mut IndirectPages,
    ) -> Result<(), CopyError> {
        let mut ops: Vec<BounceCopy> = grefs
            .iter()
            .zip(bytes)
            .enumerate()
            .map(|(index, (&gref, &count))| BounceCopy {
                domid: self.domid,
                gref: GrantRef(gref),
                guest_offset: 0,
                bounce_offset: index * PAGE_BYTES,
                len: count as u16,
                to_guest: false,
                status: GNTST_OKAY,
            })
            .collect();
        copy_ops(&mut ops, self.scratch)?;
        let scratch = self.scratch.as_slice();
        for (index, &count) in bytes.iter().enumerate() {
            let from = index * PAGE_BYTES;
            pages[index][..count].copy_from_slice(&scratch[from..from + count]);
        }
        Ok(())
    }

    fn start(&mut self, slot: Slot, io: Io) -> Result<(), DeviceError> {
        let Disk { dev, slots, .. } = &mut *self.disk;
        let Some(buffer) = slots.lend(slot, self.owner) else {
            return Err(DeviceError(String::from("slot not held")));
        };
        let tag = u32::from(slot.0);
        let started = match io {
            Io::Read { sector, bytes } => dev.start_read(tag, sector, buffer, bytes, IO_TIMEOUT_NS),
            Io::Write { sector, bytes } => {
                dev.start_write(tag, sector, buffer, bytes, IO_TIMEOUT_NS)
            }
        };
        started.map_err(|(e, buffer)| {
            slots.give_back(slot, buffer);
            device_error(dev, &e)
        })
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        let dev = &mut self.disk.dev;
        dev.flush().map_err(|e| device_error(dev, &e))
    }

    /// The virtio driver has no discard request, so a discard writes zeroes over the range,
    /// from the slot (zeroed first), in chunks as large as the slot, each waited for.
    fn discard(&mut self, slot: Slot, sector: u64, sectors: u64) -> Result<(), DeviceError> {
        let Disk { dev, slots, .. } = &mut *self.disk;
        let Some(zeroes) = slots.buffer_mut(slot, self.owner) else {
            return Err(DeviceError(String::from("slot not held")));
        };
        zeroes.as_mut_slice().fill(0);
        let chunk_sectors = (zeroes.len() / SECTOR_BYTES) as u64;
        let mut done = 0;
        while done < sectors {
            let count = chunk_sectors.min(sectors - done);
            dev.write(
                sector + done,
                &zeroes.as_slice()[..count as usize * SECTOR_BYTES],
                IO_TIMEOUT_NS,
            )
            .map_err(|e| device_error(dev, &e))?;
            done += count;
        }
        Ok(())
    }
}

/// A connected queue.
struct Served {
    queue: Queue<MultiPage<MappedGrant>>,
    port: Port,
    /// Its number in its disk's slot pool.
    owner: Owner,
    /// Serve it once without waiting for its event (a resumed ring: the front-end's
    /// notifications while no instance listened are lost).
    kick: bool,
}

/// Where a vbd's handshake stands.
enum Phase {
    /// Features published (`InitWait`), waiting for the front-end's rings.
    Waiting,
    /// Serving its queues.
    Connected(Vec<Served>),
    /// Closed; published again if the front-end starts over.
    Closed,
    /// Cut off or unusable: never served again.
    Dead,
}

/// One entry of `backend/vbd`.
struct Entry {
    fe: u16,
    vdev: String,
    name: String,
    back: String,
    front: String,
    disk: usize,
    vbd: Vbd,
    phase: Phase,
    /// The state last written to the back-end's `state`.
    published: Option<State>,
    /// An earlier instance of this domain had connected it (the back-end's `state` said
    /// `Connected` when this instance found the entry): its rings are resumed, not started
    /// afresh, and nothing is published again.
    resume: bool,
    /// After a resume: when the queues were taken over, until the first response.
    resumed_at: Option<u64>,
    /// Given up on: when to close it (its rings were answered).
    close_at: Option<u64>,
    totals: Counters,
    /// `stats=idle`: requests when last seen changing, when that was, and when last printed.
    seen: u64,
    active_at: u64,
    reported: u64,
}

impl Entry {
    fn label(&self) -> String {
        format!("vbd {} of {} ({})", self.vdev, self.name, self.fe)
    }
}

struct Backend {
    xs: Client,
    root: String,
    disks: Vec<Disk>,
    /// Where indirect pages are copied to.
    scratch: DmaRegion,
    limits: Limits,
    features: Features,
    entries: Vec<Entry>,
    /// The number the next queue gets in its disk's slot pool.
    next_owner: Owner,
    /// `restart=given-up` on the command line: the microvisor gave up on this domain (a
    /// restart loop) and built it once more only so that the front-ends' devices fail
    /// instead of hanging. It opens no disk, resumes the rings its previous instances
    /// connected, answers every request with an error, then closes each vbd.
    given_up: bool,
}

/// Given up on: how long after its rings were answered a vbd is closed (the front-end
/// handles the error responses first).
const GIVEN_UP_CLOSE_NS: u64 = 200_000_000;

fn main(info: &'static BootInfo) -> ! {
    let domid = info.domain.domid;
    let idle_stats = cmdline::get(info.cmdline, "stats") == Some("idle");
    events::set_spin_ns(
        cmdline::get(info.cmdline, "spin_us")
            .and_then(|us| us.parse::<u64>().ok())
            .map_or(SPIN_NS, |us| us.saturating_mul(1000)),
    );
    let limits = Limits::new(Limits::DEFAULT_MAX_INDIRECT_SEGMENTS).expect("256 segments fit");
    let given_up = cmdline::get(info.cmdline, "restart") == Some("given-up");
    let disks = if given_up {
        println!("given up on by the microvisor (a restart loop): failing every vbd's requests and closing them");
        Vec::new()
    } else {
        open_disks(domid, &limits)
    };
    if disks.is_empty() && !given_up {
        println!("no virtio-blk function is assigned to this domain; nothing to serve");
    }
    let Some(scratch) = DmaRegion::pages(blkback::wire::MAX_INDIRECT_PAGES) else {
        halt("no memory for the indirect pages");
    };
    let mut xs = match Client::connect() {
        Ok(xs) => xs,
        Err(e) => halt(&format!("cannot connect to xenstore ({e})")),
    };
    let root = format!("/local/domain/{domid}/backend/vbd");
    if let Err(e) = xs.watch(&root, TOKEN_BACKEND) {
        halt(&format!("cannot watch {root} ({e})"));
    }
    let mut backend = Backend {
        xs,
        root,
        disks,
        scratch,
        limits,
        features: Features {
            max_indirect_segments: limits.max_indirect_segments(),
            ..Features::default()
        },
        entries: Vec::new(),
        next_owner: 1,
        given_up,
    };
    loop {
        let generation = events::generation();
        let mut changed = false;
        loop {
            match backend.xs.next_watch_event() {
                Ok(Some(_)) => changed = true,
                Ok(None) => break,
                Err(e) => {
                    println!("xenstore failed ({e}); retrying");
                    break;
                }
            }
        }
        if changed {
            backend.reconcile();
        }
        backend.serve();
        let mut wait = if idle_stats {
            backend.report_idle();
            IDLE_STATS_POLL_NS
        } else {
            IDLE_NS
        };
        if backend.disks.iter().any(|d| d.dev.in_flight() > 0) {
            // The device's interrupt ends the wait; a lost one costs at most this.
            wait = wait.min(IN_FLIGHT_WAIT_NS);
        }
        events::wait_since(generation, Some(time::now_ns().saturating_add(wait)));
    }
}

fn halt(why: &str) -> ! {
    println!("{why}");
    loop {
        events::wait();
    }
}

/// Opens every virtio-blk function of this domain, with its slots.
fn open_disks(domid: u16, limits: &Limits) -> Vec<Disk> {
    let functions = match pci::list() {
        Ok(functions) => functions,
        Err(e) => {
            println!("MVOP_PCI_LIST failed ({e})");
            return Vec::new();
        }
    };
    let mut disks = Vec::new();
    for function in functions
        .iter()
        .filter(|f| virtio::is_virtio_blk(f.vendor(), f.device()))
    {
        let (interrupts, how) = virtio::bind_interrupts(function, domid);
        match BlkDevice::open(function, interrupts) {
            Ok(dev) => {
                let sectors = dev.capacity();
                let Some(slots) = make_slots(limits) else {
                    println!("disk {}: no memory for its bounce buffers", function.bdf);
                    continue;
                };
                println!(
                    "disk {}: {sectors} sectors, {how}, {} requests at once",
                    function.bdf,
                    dev.max_in_flight().min(slots.len())
                );
                disks.push(Disk {
                    bdf: function.bdf,
                    dev,
                    sectors,
                    slots,
                });
            }
            Err(e) => println!("disk {}: cannot initialise ({e})", function.bdf),
        }
    }
    disks
}

/// A disk's slots ([`SLOTS`], [`LARGE_SLOTS`]).
fn make_slots(limits: &Limits) -> Option<Pool<DmaRegion>> {
    let large = (limits.max_request_bytes() / PAGE_BYTES, LARGE_SLOTS);
    let mut buffers = Vec::new();
    for (pages, count) in SLOTS.into_iter().chain([large]) {
        for _ in 0..count {
            buffers.push((pages * PAGE_BYTES, DmaRegion::pages(pages)?));
        }
    }
    Some(Pool::new(buffers))
}

impl Backend {
    fn read(&mut self, path: &str) -> Option<String> {
        self.xs.read_string(Tx::NONE, path).ok()
    }

    fn write(&mut self, path: &str, value: &str) {
        if let Err(e) = self.xs.write_str(Tx::NONE, path, value) {
            println!("cannot write {path} ({e})");
        }
    }

    /// Writes the back-end's state, unless it already says so (each write fires the
    /// watch on the back-end's own directory).
    fn set_state(&mut self, index: usize, state: State) {
        if self.entries[index].published == Some(state) {
            return;
        }
        self.entries[index].published = Some(state);
        let path = format!("{}/state", self.entries[index].back);
        self.write(&path, &format!("{}", state.as_u32()));
    }

    /// The name of domain `domid`, from the xenstore domain's world-readable index
    /// `/local/names/<name>` = `<id>`.
    fn name_of(&mut self, domid: u16) -> String {
        let wanted = format!("{domid}");
        for name in self.directory("/local/names") {
            if self.read(&format!("/local/names/{name}")).as_deref() == Some(wanted.as_str()) {
                return name;
            }
        }
        String::from("?")
    }

    fn directory(&mut self, path: &str) -> Vec<String> {
        match self.xs.directory(Tx::NONE, path) {
            Ok(list) => list,
            Err(XsError::Enoent) => Vec::new(),
            Err(e) => {
                println!("cannot list {path} ({e})");
                Vec::new()
            }
        }
    }

    /// Brings the entries in line with `backend/vbd` and each front-end's state.
    fn reconcile(&mut self) {
        let mut listed = Vec::new();
        let root = self.root.clone();
        for fe in self.directory(&root) {
            for vdev in self.directory(&format!("{root}/{fe}")) {
                listed.push((fe.clone(), vdev));
            }
        }
        // Entries whose directory is gone (their front-end went away).
        let mut index = 0;
        while index < self.entries.len() {
            let entry = &self.entries[index];
            let key = (format!("{}", entry.fe), entry.vdev.clone());
            if listed.contains(&key) {
                index += 1;
            } else {
                self.disconnect(index, "its entry was removed");
                self.entries.remove(index);
            }
        }
        for (fe, vdev) in listed {
            let known = self
                .entries
                .iter()
                .any(|e| format!("{}", e.fe) == fe && e.vdev == vdev);
            if !known {
                self.add(&fe, &vdev);
            }
        }
        for index in 0..self.entries.len() {
            self.step(index);
        }
    }

    /// Sets up a new entry: checks its keys, publishes the features, `InitWait`.
    fn add(&mut self, fe_text: &str, vdev: &str) {
        let back = format!("{}/{fe_text}/{vdev}", self.root);
        let key = |this: &mut Self, name: &str| this.read(&format!("{back}/{name}"));
        let fe = match key(self, "frontend-id").and_then(|v| v.parse::<u16>().ok()) {
            Some(fe) => fe,
            None => {
                println!("vbd {vdev} of {fe_text}: no frontend-id; ignored");
                return;
            }
        };
        let front = key(self, "frontend").unwrap_or_default();
        let name = self.name_of(fe);
        let device = key(self, "device").unwrap_or_default();
        let start = key(self, "start-sector").and_then(|v| v.parse::<u64>().ok());
        let sectors = key(self, "sectors").and_then(|v| v.parse::<u64>().ok());
        let writable = key(self, "mode").as_deref() == Some("w");
        let problem = |text: String| format!("vbd {vdev} of {name} ({fe}): {text}; not served");
        // An earlier instance of this domain connected it and died (this one has the same
        // domain id): the front-end still uses its rings, so take them over as they are.
        let resume = key(self, "state").and_then(|s| State::from_decimal(s.as_bytes()))
            == Some(State::Connected);
        if self.given_up {
            if resume {
                println!("vbd {vdev} of {name} ({fe}): failing its requests, then closing it");
                // No disk (`usize::MAX` names none): its requests are only failed.
                self.push_entry(
                    fe,
                    vdev,
                    name,
                    back,
                    front,
                    usize::MAX,
                    Vbd::whole(0, true),
                    true,
                );
            } else {
                println!("{}", problem(String::from("this domain was given up on")));
                self.write(
                    &format!("{back}/state"),
                    &format!("{}", State::Closed.as_u32()),
                );
            }
            return;
        }
        let disk = Bdf::parse(&device).and_then(|bdf| self.disks.iter().position(|d| d.bdf == bdf));
        let (Some(disk), Some(start), Some(sectors), false) =
            (disk, start, sectors, front.is_empty())
        else {
            println!(
                "{}",
                problem(format!("no usable disk {device:?} or slice among its keys"))
            );
            self.write(
                &format!("{back}/state"),
                &format!("{}", State::Closed.as_u32()),
            );
            return;
        };
        let disk_sectors = self.disks[disk].sectors;
        let length = if sectors == 0 {
            disk_sectors.saturating_sub(start)
        } else {
            sectors
        };
        let read_only = !writable || self.disks[disk].dev.readonly();
        let vbd = match Vbd::slice(disk_sectors, start, length, read_only) {
            Ok(vbd) => vbd,
            Err(e) => {
                println!("{}", problem(format!("{e}")));
                self.write(
                    &format!("{back}/state"),
                    &format!("{}", State::Closed.as_u32()),
                );
                return;
            }
        };
        println!(
            "vbd {vdev} of {name} ({fe}): sectors {start}+{length} of {device}, {}; {}",
            if read_only { "read-only" } else { "read-write" },
            if resume {
                "connected by this domain's previous instance: resuming"
            } else {
                "waiting for the front-end"
            }
        );
        self.push_entry(fe, vdev, name, back, front, disk, vbd, resume);
    }

    /// Adds an entry, publishes its features unless it is resumed, and watches its
    /// front-end's state.
    #[allow(clippy::too_many_arguments)]
    fn push_entry(
        &mut self,
        fe: u16,
        vdev: &str,
        name: String,
        back: String,
        front: String,
        disk: usize,
        vbd: Vbd,
        resume: bool,
    ) {
        self.entries.push(Entry {
            fe,
            vdev: String::from(vdev),
            name,
            back,
            front: front.clone(),
            disk,
            vbd,
            phase: Phase::Waiting,
            published: resume.then_some(State::Connected),
            resume,
            resumed_at: None,
            close_at: None,
            totals: Counters::default(),
            seen: 0,
            active_at: 0,
            reported: 0,
        });
        if !resume {
            self.publish(self.entries.len() - 1);
        }
        if let Err(e) = self.xs.watch(&format!("{front}/state"), TOKEN_FRONTEND) {
            println!("cannot watch {front}/state ({e})");
        }
    }

    /// Features, then `InitWait`.
    fn publish(&mut self, index: usize) {
        let back = self.entries[index].back.clone();
        for (key, value) in self.features.backend_keys() {
            self.write(&format!("{back}/{key}"), &value);
        }
        self.set_state(index, State::InitWait);
    }

    /// Follows the front-end's state the way Linux's own back-end does: its `Closing` is
    /// answered with `Closing` (after the queues stopped), its `Closed` with `Closed`, and
    /// a front-end that starts over finds the features published again.
    fn step(&mut self, index: usize) {
        let front = self.entries[index].front.clone();
        let state = self
            .read(&format!("{front}/state"))
            .and_then(|s| State::from_decimal(s.as_bytes()))
            .unwrap_or(State::Closed);
        let phase = &self.entries[index].phase;
        match state {
            State::Initialised | State::Connected if matches!(phase, Phase::Waiting) => {
                self.connect(index)
            }
            State::Closing | State::Closed if !matches!(phase, Phase::Dead) => {
                self.disconnect(index, "the front-end closed it");
                self.set_state(index, state);
            }
            State::Initialising | State::Unknown | State::InitWait
                if matches!(phase, Phase::Closed) =>
            {
                self.entries[index].phase = Phase::Waiting;
                self.publish(index);
            }
            _ => {}
        }
    }

    /// Reads the front-end's rings, maps them, binds the ports, `Connected`.
    fn connect(&mut self, index: usize) {
        let entry = &self.entries[index];
        let (front, fe, label) = (entry.front.clone(), entry.fe, entry.label());
        let xs = RefCell::new(&mut self.xs);
        let parsed = handshake::parse_frontend(
            |key| {
                xs.borrow_mut()
                    .read_string(Tx::NONE, &format!("{front}/{key}"))
                    .ok()
            },
            &self.features,
        );
        let frontend = match parsed {
            Ok(frontend) => frontend,
            Err(e) => {
                println!("{label}: {e}; closing");
                self.entries[index].phase = Phase::Dead;
                self.set_state(index, State::Closing);
                self.set_state(index, State::Closed);
                return;
            }
        };
        let mut served = Vec::new();
        let resume = core::mem::take(&mut self.entries[index].resume);
        let mut taken_again = 0;
        for ring in &frontend.queues {
            let owner = self.next_owner;
            self.next_owner += 1;
            match map_queue(
                fe,
                ring,
                &self.entries[index].vbd,
                &self.limits,
                owner,
                resume,
            ) {
                Ok((queue, unanswered)) => {
                    taken_again += unanswered;
                    served.push(queue)
                }
                Err(why) => {
                    println!("{label}: {why}; closing");
                    release(
                        served,
                        self.disks
                            .get_mut(self.entries[index].disk)
                            .map(|d| &mut d.slots),
                    );
                    self.entries[index].phase = Phase::Dead;
                    self.set_state(index, State::Closing);
                    self.set_state(index, State::Closed);
                    return;
                }
            }
        }
        let back = self.entries[index].back.clone();
        // A resumed vbd's keys are there already (and a given-up domain has no disk).
        if !resume {
            for (key, value) in handshake::connect_keys(&self.entries[index].vbd) {
                self.write(&format!("{back}/{key}"), &value);
            }
        }
        let pages = frontend.queues[0].ring_refs.len();
        if resume {
            self.entries[index].resumed_at = Some(time::now_ns());
        }
        println!(
            "{label}: {}, {} queue(s) of {pages} ring page(s), {}, ports {}",
            if resume {
                format!("resumed with {taken_again} unanswered request(s) to take again")
            } else {
                String::from("connected")
            },
            served.len(),
            if frontend.persistent {
                "persistent grants"
            } else {
                "grants copied per request"
            },
            served
                .iter()
                .map(|s| format!("{}", s.port.0))
                .collect::<Vec<_>>()
                .join(",")
        );
        self.entries[index].phase = Phase::Connected(served);
        self.set_state(index, State::Connected);
    }

    /// Stops serving (if it was) and prints the counts.
    fn disconnect(&mut self, index: usize, why: &str) {
        let entry = &mut self.entries[index];
        let phase = core::mem::replace(&mut entry.phase, Phase::Closed);
        let Phase::Connected(served) = phase else {
            if matches!(phase, Phase::Dead) {
                entry.phase = Phase::Dead;
            }
            return;
        };
        for s in &served {
            entry.totals += s.queue.counters();
        }
        release(served, self.disks.get_mut(entry.disk).map(|d| &mut d.slots));
        let t = entry.totals;
        println!(
            "{} closed ({why}): {} requests ({} reads, {} writes, {} flushes, {} discards, {} indirect), {} KiB in, {} KiB out, {} errors, {} notifications, {} rounds ({} empty)",
            entry.label(),
            t.requests,
            t.reads,
            t.writes,
            t.flushes,
            t.discards,
            t.indirect,
            t.bytes_in / 1024,
            t.bytes_out / 1024,
            t.errors,
            t.notifications,
            t.rounds,
            t.empty_rounds
        );
    }

    /// Hands what each disk finished to the queues that started it, then serves every
    /// connected queue that has something to do: its port fired, the device finished some of
    /// its requests, or a request of it waits for a slot another queue may have freed.
    fn serve(&mut self) {
        if self.given_up {
            return self.serve_given_up();
        }
        let mut done: Vec<(Owner, Slot, Result<(), DeviceError>)> = Vec::new();
        for disk in &mut self.disks {
            while let Some(completion) = disk.dev.poll() {
                let slot = Slot(completion.tag as u16);
                let result = completion.result.map_err(|e| DeviceError(format!("{e}")));
                // A slot whose queue is gone is simply free again.
                if let Some(owner) = disk.slots.give_back(slot, completion.buffer) {
                    done.push((owner, slot, result));
                }
            }
            if !disk.dev.is_ready() && disk.dev.in_flight() == 0 {
                // A failure reset the device; bring it back for the next request.
                let _ = disk.dev.reinit();
            }
        }
        for index in 0..self.entries.len() {
            let cutoff = {
                let entry = &mut self.entries[index];
                let Phase::Connected(served) = &mut entry.phase else {
                    continue;
                };
                let mut machine = Machine {
                    disk: &mut self.disks[entry.disk],
                    scratch: &mut self.scratch,
                    domid: entry.fe,
                    owner: 0,
                };
                let mut cutoff = None;
                let mut answered = false;
                for s in served.iter_mut() {
                    machine.owner = s.owner;
                    let mine: Vec<(Slot, Result<(), DeviceError>)> = done
                        .iter()
                        .filter(|(owner, _, _)| *owner == s.owner)
                        .map(|(_, slot, result)| (*slot, result.clone()))
                        .collect();
                    match serve_queue(s, &mine, &mut machine) {
                        Ok(Some(round)) => {
                            answered |= round.answered > 0;
                            if round.notify {
                                let _ = events::send(s.port);
                            }
                        }
                        Ok(None) => {}
                        Err(reason) => {
                            cutoff = Some(reason);
                            break;
                        }
                    }
                }
                if answered {
                    if let Some(at) = entry.resumed_at.take() {
                        let now = time::now_ns();
                        println!(
                            "{}: first response since the restart at {now} ns, {} us after resuming",
                            entry.label(),
                            (now - at) / 1000
                        );
                    }
                }
                cutoff
            };
            if let Some(reason) = cutoff {
                self.cut_off(index, &reason);
            }
        }
    }

    /// `stats=idle`: prints the counts of each connected vbd that has gone idle after
    /// serving requests.
    fn report_idle(&mut self) {
        let now = time::now_ns();
        // The bounce buffers (slots and the indirect pages' scratch), which the benchmark
        // does not count in the footprint.
        let buffer_bytes = self.scratch.len()
            + self
                .disks
                .iter()
                .map(|d| d.slots.total_bytes())
                .sum::<usize>();
        for entry in &mut self.entries {
            let Phase::Connected(served) = &entry.phase else {
                continue;
            };
            let mut t = entry.totals;
            for s in served {
                t += s.queue.counters();
            }
            if t.requests != entry.seen {
                entry.seen = t.requests;
                entry.active_at = now;
                continue;
            }
            if t.requests == entry.reported || now.saturating_sub(entry.active_at) < IDLE_STATS_NS {
                continue;
            }
            entry.reported = t.requests;
            let me = hypercall::domain_stats().unwrap_or_default();
            // Two lines: the console domain keeps lines to 200 bytes.
            println!(
                "{}: stats: {} requests, {} rounds, {} notifications, {} copies, {} B in, {} B out, {} at once at most",
                entry.label(),
                t.requests,
                t.rounds,
                t.notifications,
                t.grant_copies,
                t.bytes_in,
                t.bytes_out,
                t.most_in_flight,
            );
            println!(
                "{}: own: {} events, {} hypercalls, {} exits, {} maps, {} unmaps, {} KiB heap, {} KiB buffers",
                entry.label(),
                me.events_sent,
                me.hypercalls,
                me.vm_exits,
                GRANT_MAPS.load(Ordering::Relaxed),
                GRANT_UNMAPS.load(Ordering::Relaxed),
                (driver_domains::heap::size_bytes() - driver_domains::heap::free_bytes()) / 1024,
                buffer_bytes / 1024,
            );
        }
    }

    /// Given up on: answers every request of every connected vbd with an error; once a
    /// vbd's rings were answered, closes it (`Closing`), so the front-end fails its device.
    fn serve_given_up(&mut self) {
        let now = time::now_ns();
        for index in 0..self.entries.len() {
            let entry = &mut self.entries[index];
            let label = entry.label();
            let Phase::Connected(served) = &mut entry.phase else {
                continue;
            };
            let mut failed = 0;
            for s in served.iter_mut() {
                if !(events::take(s.port) || core::mem::take(&mut s.kick)) {
                    continue;
                }
                match s.queue.fail_all() {
                    Ok(round) => {
                        failed += round.answered;
                        if round.notify {
                            let _ = events::send(s.port);
                        }
                    }
                    Err(e) => println!("{label}: {e}"),
                }
            }
            if failed > 0 {
                println!("{label}: {failed} request(s) failed (given up)");
            }
            let close_at = *entry.close_at.get_or_insert(now + GIVEN_UP_CLOSE_NS);
            if now >= close_at && entry.published != Some(State::Closing) {
                println!("{label}: closing it (given up)");
                self.set_state(index, State::Closing);
            }
        }
    }

    fn cut_off(&mut self, index: usize, reason: &Cutoff) {
        println!("{} cut off: {reason}", self.entries[index].label());
        self.disconnect(index, "cut off");
        self.entries[index].phase = Phase::Dead;
        self.set_state(index, State::Closing);
        self.set_state(index, State::Closed);
    }
}

/// One queue's turn: the device's outcomes `done` for it, then a pass if it has anything to
/// do (`None` if it had not).
fn serve_queue(
    served: &mut Served,
    done: &[(Slot, Result<(), DeviceError>)],
    machine: &mut Machine<'_>,
) -> Result<Option<Round>, Cutoff> {
    if !done.is_empty() {
        served.queue.complete(done, machine)?;
    }
    if events::take(served.port) || core::mem::take(&mut served.kick) {
        served.queue.service(machine).map(Some)
    } else if !done.is_empty() || served.queue.is_waiting() {
        served.queue.progress(machine).map(Some)
    } else {
        Ok(None)
    }
}

/// Maps one queue's ring pages and binds its port.
///
/// With `resume`, the rings are taken over from an earlier instance of this domain
/// ([`xen_ring::BackRing::resume`]); returns the queue and how many requests in its ring
/// were not answered yet (they are taken again).
fn map_queue(
    fe: u16,
    ring: &handshake::QueueRing,
    vbd: &Vbd,
    limits: &Limits,
    owner: Owner,
    resume: bool,
) -> Result<(Served, u32), String> {
    let mut pages = Vec::new();
    for &gref in &ring.ring_refs {
        match grant_table::map_grant(fe, GrantRef(gref), false) {
            Ok(page) => {
                GRANT_MAPS.fetch_add(1, Ordering::Relaxed);
                pages.push(page)
            }
            Err(status) => return Err(format!("ring grant {gref} refused (status {status})")),
        }
    }
    let region = MultiPage::new(pages).map_err(|e| format!("{e}"))?;
    let ring_state = if resume {
        BlkBackRing::resume(region)
            .map(|(ring, _)| ring)
            .map_err(|e| format!("{e}"))?
    } else {
        BlkBackRing::journaled(region).map_err(|e| format!("{e}"))?
    };
    let unanswered = ring_state.unconsumed_requests().unwrap_or(0);
    let port = events::bind_interdomain(fe, ring.event_channel)
        .map_err(|e| format!("cannot bind port {} ({e})", ring.event_channel))?;
    let _ = events::unmask(port);
    Ok((
        Served {
            queue: Queue::new(ring_state, *vbd, *limits),
            port,
            owner,
            kick: resume,
        },
        unanswered,
    ))
}

/// Closes the ports and unmaps the rings; the queues' slots are free again once the device
/// is done with them.
fn release(served: Vec<Served>, mut slots: Option<&mut Pool<DmaRegion>>) {
    for s in served {
        if let Some(slots) = slots.as_mut() {
            slots.disown(s.owner);
        }
        let _ = events::close(s.port);
        for page in s.queue.into_ring().into_page().into_pages() {
            // A front-end that died took its grants with it; nothing to undo then.
            if page.unmap().is_ok() {
                GRANT_UNMAPS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
