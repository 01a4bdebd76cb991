//! `blkback`: the block backend domain (see the library, `src/lib.rs`, for the protocol
//! logic and `README.md` for the whole picture).
//!
//! At start it opens every virtio-blk function the manifest passed through to it (`pci =
//! [...]`), connects to xenstore and watches its own `backend/vbd` directory, where the
//! xenstore domain writes one entry per disk of the manifests that this domain serves.
//! For each entry it walks the xenbus handshake with the front-end; once connected it
//! serves each queue whenever the queue's event channel fires. Data moves by grant copy
//! through one bounce buffer that the disk reads and writes by DMA (through the IOMMU).
//!
//! Lines it prints (labelled `[blkback]` by the console domain):
//!
//! | line | when |
//! |---|---|
//! | `disk <bdf>: <n> sectors, <interrupts>` | a disk was opened |
//! | `vbd <vdev> of <name> (<id>): <slice>, <mode>; waiting for the front-end` | a new entry |
//! | `vbd <vdev> of <name> (<id>): connected, <q> queue(s) of <p> ring page(s), ...` | handshake done |
//! | `vbd <vdev> of <name> (<id>) cut off: <reason>` | a hostile or broken front-end |
//! | `vbd <vdev> of <name> (<id>) closed: <counts>` | the vbd was closed (by either end) |
//! | `vbd <vdev> of <id>: <problem>` | an entry that cannot be served |
//! | `vbd <vdev> of <name> (<id>): stats: <counts>`, then `...: own: <blkback's counts>` | with `stats=idle` on the command line: a connected vbd went idle (no request for [`IDLE_STATS_NS`]) after serving requests; cumulative counts, for the benchmarks |
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};

use blkback::engine::{CopyError, Counters, Cutoff, DeviceError, Direction, Platform, Queue};
use blkback::handshake::{self, Features, State};
use blkback::multi_page::MultiPage;
use blkback::request::{DataSegment, IndirectPages, Limits};
use blkback::vbd::Vbd;
use blkback::wire::{BlkBackRing, PAGE_BYTES, SECTOR_BYTES};
use driver_domains::dma::DmaRegion;
use driver_domains::events::{self, Port};
use driver_domains::grant_table::{self, BounceCopy, GrantRef, MappedGrant};
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
/// With `stats=idle`: how long a vbd must go without a request before its counts are
/// printed, and how often the main loop looks.
const IDLE_STATS_NS: u64 = 300_000_000;
const IDLE_STATS_POLL_NS: u64 = 100_000_000;
/// Grant maps and unmaps this domain made (ring pages only: the data path copies).
static GRANT_MAPS: AtomicU64 = AtomicU64::new(0);
static GRANT_UNMAPS: AtomicU64 = AtomicU64::new(0);
/// Watch token of the backend directory.
const TOKEN_BACKEND: &str = "vbds";
/// Watch token of the front-ends' `state` nodes.
const TOKEN_FRONTEND: &str = "fe";

/// A passthrough disk.
struct Disk {
    bdf: Bdf,
    dev: BlkDevice,
    sectors: u64,
}

/// The machine a queue runs on: the vbd's disk, the bounce buffer, the front-end's grants.
struct Machine<'a> {
    disk: &'a mut BlkDevice,
    bounce: &'a mut DmaRegion,
    domid: u16,
    /// Where the indirect pages are fetched to: after the room for a request's data.
    indirect_at: usize,
}

impl Machine<'_> {
    fn copy_ops(&mut self, ops: &mut [BounceCopy]) -> Result<(), CopyError> {
        let first = ops.first().map_or(0, |op| op.gref.0);
        grant_table::copy_with_bounce(ops, self.bounce).map_err(|_| CopyError {
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

    fn device_result(&mut self, result: Result<(), virtio::BlkError>) -> Result<(), DeviceError> {
        result.map_err(|e| {
            let text = format!("{e}");
            if !matches!(e, virtio::BlkError::Io) {
                // The device was reset by the failed request; bring it back for the next one.
                let _ = self.disk.reinit();
            }
            DeviceError(text)
        })
    }
}

impl Platform for Machine<'_> {
    fn copy(&mut self, segments: &[DataSegment], direction: Direction) -> Result<(), CopyError> {
        let mut at = 0usize;
        let mut ops: Vec<BounceCopy> = segments
            .iter()
            .map(|segment| {
                let op = BounceCopy {
                    domid: self.domid,
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
            .collect();
        self.copy_ops(&mut ops)
    }

    fn fetch_indirect(
        &mut self,
        grefs: &[u32],
        bytes: &[usize],
        pages: &mut IndirectPages,
    ) -> Result<(), CopyError> {
        let base = self.indirect_at;
        let mut ops: Vec<BounceCopy> = grefs
            .iter()
            .zip(bytes)
            .enumerate()
            .map(|(index, (&gref, &count))| BounceCopy {
                domid: self.domid,
                gref: GrantRef(gref),
                guest_offset: 0,
                bounce_offset: base + index * PAGE_BYTES,
                len: count as u16,
                to_guest: false,
                status: GNTST_OKAY,
            })
            .collect();
        self.copy_ops(&mut ops)?;
        let bounce = self.bounce.as_slice();
        for (index, &count) in bytes.iter().enumerate() {
            let from = base + index * PAGE_BYTES;
            pages[index][..count].copy_from_slice(&bounce[from..from + count]);
        }
        Ok(())
    }

    fn read(&mut self, sector: u64, bytes: usize) -> Result<(), DeviceError> {
        let result = self.disk.read(
            sector,
            &mut self.bounce.as_mut_slice()[..bytes],
            IO_TIMEOUT_NS,
        );
        self.device_result(result)
    }

    fn write(&mut self, sector: u64, bytes: usize) -> Result<(), DeviceError> {
        let result = self
            .disk
            .write(sector, &self.bounce.as_slice()[..bytes], IO_TIMEOUT_NS);
        self.device_result(result)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        let result = self.disk.flush();
        self.device_result(result)
    }

    /// The virtio driver has no discard request, so a discard writes zeroes over the range
    /// (from the zeroed start of the bounce buffer, in chunks as large as a request).
    fn discard(&mut self, sector: u64, sectors: u64) -> Result<(), DeviceError> {
        let chunk_sectors = (self.indirect_at / SECTOR_BYTES) as u64;
        self.bounce.as_mut_slice()[..self.indirect_at].fill(0);
        let mut done = 0;
        while done < sectors {
            let count = chunk_sectors.min(sectors - done);
            let result = self.disk.write(
                sector + done,
                &self.bounce.as_slice()[..count as usize * SECTOR_BYTES],
                IO_TIMEOUT_NS,
            );
            self.device_result(result)?;
            done += count;
        }
        Ok(())
    }
}

/// A connected queue.
struct Served {
    queue: Queue<MultiPage<MappedGrant>>,
    port: Port,
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
    bounce: DmaRegion,
    limits: Limits,
    features: Features,
    entries: Vec<Entry>,
}

fn main(info: &'static BootInfo) -> ! {
    let domid = info.domain.domid;
    let idle_stats = cmdline::get(info.cmdline, "stats") == Some("idle");
    let limits = Limits::new(Limits::DEFAULT_MAX_INDIRECT_SEGMENTS).expect("256 segments fit");
    let disks = open_disks(domid);
    if disks.is_empty() {
        println!("no virtio-blk function is assigned to this domain; nothing to serve");
    }
    let data_bytes = limits.max_request_bytes();
    let Some(bounce) = DmaRegion::new(data_bytes + blkback::wire::MAX_INDIRECT_PAGES * PAGE_BYTES)
    else {
        halt("no memory for the bounce buffer");
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
        bounce,
        limits,
        features: Features {
            max_indirect_segments: limits.max_indirect_segments(),
            ..Features::default()
        },
        entries: Vec::new(),
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
        let wait = if idle_stats {
            backend.report_idle();
            IDLE_STATS_POLL_NS
        } else {
            IDLE_NS
        };
        events::wait_since(generation, Some(time::now_ns().saturating_add(wait)));
    }
}

fn halt(why: &str) -> ! {
    println!("{why}");
    loop {
        events::wait();
    }
}

/// Opens every virtio-blk function of this domain.
fn open_disks(domid: u16) -> Vec<Disk> {
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
                println!("disk {}: {sectors} sectors, {how}", function.bdf);
                disks.push(Disk {
                    bdf: function.bdf,
                    dev,
                    sectors,
                });
            }
            Err(e) => println!("disk {}: cannot initialise ({e})", function.bdf),
        }
    }
    disks
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
            "vbd {vdev} of {name} ({fe}): sectors {start}+{length} of {device}, {}; waiting for the front-end",
            if read_only { "read-only" } else { "read-write" }
        );
        self.entries.push(Entry {
            fe,
            vdev: String::from(vdev),
            name,
            back: back.clone(),
            front: front.clone(),
            disk,
            vbd,
            phase: Phase::Waiting,
            published: None,
            totals: Counters::default(),
            seen: 0,
            active_at: 0,
            reported: 0,
        });
        self.publish(self.entries.len() - 1);
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
        for ring in &frontend.queues {
            match map_queue(fe, ring, &self.entries[index].vbd, &self.limits) {
                Ok(queue) => served.push(queue),
                Err(why) => {
                    println!("{label}: {why}; closing");
                    release(served);
                    self.entries[index].phase = Phase::Dead;
                    self.set_state(index, State::Closing);
                    self.set_state(index, State::Closed);
                    return;
                }
            }
        }
        let back = self.entries[index].back.clone();
        for (key, value) in handshake::connect_keys(&self.entries[index].vbd) {
            self.write(&format!("{back}/{key}"), &value);
        }
        let pages = frontend.queues[0].ring_refs.len();
        println!(
            "{label}: connected, {} queue(s) of {pages} ring page(s), {}, ports {}",
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
        release(served);
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

    /// Serves every connected queue whose port fired.
    fn serve(&mut self) {
        for index in 0..self.entries.len() {
            let cutoff = {
                let entry = &mut self.entries[index];
                let Phase::Connected(served) = &mut entry.phase else {
                    continue;
                };
                let mut machine = Machine {
                    disk: &mut self.disks[entry.disk].dev,
                    bounce: &mut self.bounce,
                    domid: entry.fe,
                    indirect_at: self.limits.max_request_bytes(),
                };
                let mut cutoff = None;
                for s in served.iter_mut() {
                    if !events::take(s.port) {
                        continue;
                    }
                    match s.queue.service(&mut machine) {
                        Ok(round) => {
                            if round.notify {
                                let _ = events::send(s.port);
                            }
                        }
                        Err(reason) => {
                            cutoff = Some(reason);
                            break;
                        }
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
                "{}: stats: {} requests, {} rounds, {} notifications, {} copies, {} B in, {} B out",
                entry.label(),
                t.requests,
                t.rounds,
                t.notifications,
                t.grant_copies,
                t.bytes_in,
                t.bytes_out,
            );
            println!(
                "{}: own: {} events, {} hypercalls, {} exits, {} maps, {} unmaps, {} KiB heap",
                entry.label(),
                me.events_sent,
                me.hypercalls,
                me.vm_exits,
                GRANT_MAPS.load(Ordering::Relaxed),
                GRANT_UNMAPS.load(Ordering::Relaxed),
                (driver_domains::heap::size_bytes() - driver_domains::heap::free_bytes()) / 1024,
            );
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

/// Maps one queue's ring pages and binds its port.
fn map_queue(
    fe: u16,
    ring: &handshake::QueueRing,
    vbd: &Vbd,
    limits: &Limits,
) -> Result<Served, String> {
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
    let ring_state = BlkBackRing::new(region).map_err(|e| format!("{e}"))?;
    let port = events::bind_interdomain(fe, ring.event_channel)
        .map_err(|e| format!("cannot bind port {} ({e})", ring.event_channel))?;
    let _ = events::unmask(port);
    Ok(Served {
        queue: Queue::new(ring_state, *vbd, *limits),
        port,
    })
}

/// Closes the ports and unmaps the rings.
fn release(served: Vec<Served>) {
    for s in served {
        let _ = events::close(s.port);
        for page in s.queue.into_ring().into_page().into_pages() {
            // A front-end that died took its grants with it; nothing to undo then.
            if page.unmap().is_ok() {
                GRANT_UNMAPS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
