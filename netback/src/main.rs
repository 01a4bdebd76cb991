//! `netback`: the network backend domain (see the library, `src/lib.rs`, for the protocol
//! logic and `README.md` for the whole picture).
//!
//! At start it opens the virtio-net function the manifest passed through to it (`pci =
//! [...]`; the bridge's uplink), connects to xenstore and watches its own `backend/vif`
//! directory, where the xenstore domain writes one entry per `vif` of the manifests that
//! this domain serves. For each entry it walks the xenbus handshake with the front-end and
//! adds the vif to the bridge with the entry's MAC as its only source address. Then,
//! whenever a vif's event channel or the NIC's interrupt fires, frames move: tx slots are
//! grant-copied out of the guest, the bridge decides where each goes, the NIC sends it or
//! it is queued for the other vifs, whose posted rx pages it is grant-copied into.
//!
//! Lines it prints (labelled `[netback]` by the console domain):
//!
//! | line | when |
//! |---|---|
//! | `nic <bdf>: mac <mac>, <interrupts>` | the NIC was opened |
//! | `vif <fe>.<n> of <name>: mac <mac>, bridge <bridge>; waiting for the front-end` | a new entry |
//! | `vif <fe>.<n> of <name>: connected, <q> queue(s), port(s) <p>, ...` | handshake done |
//! | `vif <fe>.<n> of <name> cut off: <reason>` | a hostile or broken front-end |
//! | `vif <fe>.<n> of <name> closed (<why>): <counts>` | the vif was closed (by either end) |
//! | `vif <fe>.<n> of <name>: <problem>; not served` | an entry that cannot be served |
//! | `vif <fe>.<n> of <name>: stats: <counts>` and `...: own: <events, hypercalls, exits, heap>` | with `stats=idle` on the command line (the benchmark's): each time a vif goes idle after moving frames |
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use driver_domains::dma::DmaRegion;
use driver_domains::events::{self, Port};
use driver_domains::grant_table::{self, BounceCopy, GrantRef, MappedGrant};
use driver_domains::pci;
use driver_domains::virtio::{self, NetDevice};
use driver_domains::xenstore::{Client, Error as XsError, Tx};
use driver_domains::{cmdline, println, time, BootInfo};
use microvisor_abi::grant::{GNTST_GENERAL_ERROR, GNTST_OKAY};
use netback::bridge::{flow_hash, Bridge, Forward, PortId};
use netback::handshake::{self, QueueKeys, State, MAX_FRAME};
use netback::mac::Mac;
use netback::tx::Piece;
use netback::vif::{CopyError, Counters, Platform, Vif};
use xen_ring::BackRing;

driver_domains::entry!(main);

/// Without any event, how often the main loop looks at xenstore and the NIC again.
const IDLE_NS: u64 = 100_000_000;
/// Watch token of the backend directory.
const TOKEN_BACKEND: &str = "vifs";
/// Watch token of the front-ends' `state` nodes.
const TOKEN_FRONTEND: &str = "fe";
/// The bounce buffer of the grant copies: the largest tx frame (64 KiB with GSO).
const BOUNCE_BYTES: usize = 64 * 1024;
/// Frames taken from the NIC in one turn of the main loop.
const NIC_BURST: usize = 64;

/// The grant copies, through one bounce page (a frame is at most [`MAX_FRAME`] bytes).
struct Copier<'a> {
    bounce: &'a mut DmaRegion,
    domid: u16,
}

impl Copier<'_> {
    fn run(&mut self, ops: &mut [BounceCopy]) -> Result<(), CopyError> {
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
}

impl Platform for Copier<'_> {
    fn copy_from_guest(&mut self, pieces: &[Piece], out: &mut [u8]) -> Result<(), CopyError> {
        let mut at = 0usize;
        // An empty piece has nothing to copy (and the runtime refuses a copy of 0 bytes).
        let mut ops: Vec<BounceCopy> = pieces
            .iter()
            .filter(|piece| piece.len > 0)
            .map(|piece| {
                let op = BounceCopy {
                    domid: self.domid,
                    gref: GrantRef(piece.gref),
                    guest_offset: piece.offset,
                    bounce_offset: at,
                    len: piece.len,
                    to_guest: false,
                    status: GNTST_OKAY,
                };
                at += usize::from(piece.len);
                op
            })
            .collect();
        if at != out.len() || at > self.bounce.len() {
            return Err(CopyError {
                gref: 0,
                status: GNTST_GENERAL_ERROR,
            });
        }
        self.run(&mut ops)?;
        out.copy_from_slice(&self.bounce.as_slice()[..at]);
        Ok(())
    }

    fn copy_to_guest(&mut self, copies: &[(u32, &[u8])], done: &mut [bool]) {
        // Each frame in a slot of its own in the bounce buffer, all copied out in one call
        // (a hypercall per 16 copies).
        const SLOT: usize = 2048;
        let mut ops: Vec<BounceCopy> = Vec::with_capacity(copies.len());
        let mut which = Vec::with_capacity(copies.len());
        for (index, &(gref, frame)) in copies.iter().enumerate() {
            let at = index * SLOT;
            done[index] = false;
            if frame.is_empty() || frame.len() > SLOT || at + SLOT > self.bounce.len() {
                continue;
            }
            self.bounce.as_mut_slice()[at..at + frame.len()].copy_from_slice(frame);
            ops.push(BounceCopy {
                domid: self.domid,
                gref: GrantRef(gref),
                guest_offset: 0,
                bounce_offset: at,
                len: frame.len() as u16,
                to_guest: true,
                status: GNTST_OKAY,
            });
            which.push(index);
        }
        // A failed hypercall marks its copies failed; each op's status says.
        let _ = grant_table::copy_with_bounce(&mut ops, self.bounce);
        for (op, index) in ops.iter().zip(which) {
            done[index] = op.status == GNTST_OKAY;
        }
    }
}

/// One queue of a connected vif: its tx and rx rings and its event channel.
struct Queue {
    vif: Vif<MappedGrant>,
    port: Port,
}

impl Queue {
    /// Maps the queue's rings and binds its port. With `resume`, the rings are taken over
    /// from an earlier instance of this domain where it left them
    /// ([`xen_ring::BackRing::resume`]); otherwise they start afresh, journaled so that a
    /// later instance can.
    fn open(fe: u16, keys: &QueueKeys, resume: bool) -> Result<Self, String> {
        let map = |gref: u32| {
            grant_table::map_grant(fe, GrantRef(gref), false)
                .map_err(|status| format!("ring grant {gref} refused (status {status})"))
        };
        let tx_page = map(keys.tx_ring_ref)?;
        let rx_page = match map(keys.rx_ring_ref) {
            Ok(page) => page,
            Err(why) => {
                let _ = tx_page.unmap();
                return Err(why);
            }
        };
        let rings = if resume {
            match BackRing::resume(tx_page) {
                Ok((tx, _)) => BackRing::resume(rx_page).map(|(rx, _)| (tx, rx)).ok(),
                Err(_) => None,
            }
        } else {
            BackRing::journaled(tx_page)
                .ok()
                .and_then(|tx| BackRing::journaled(rx_page).ok().map(|rx| (tx, rx)))
        };
        // The pages were dropped with the failed ring, which unmaps them.
        let Some((tx, rx)) = rings else {
            return Err(String::from("its ring pages do not hold a ring"));
        };
        let vif = Vif::new(tx, rx);
        match events::bind_interdomain(fe, keys.event_channel) {
            Ok(port) => {
                let _ = events::unmask(port);
                Ok(Self { vif, port })
            }
            Err(e) => {
                let (tx_page, rx_page) = vif.into_pages();
                let _ = tx_page.unmap();
                let _ = rx_page.unmap();
                Err(format!("cannot bind port {} ({e})", keys.event_channel))
            }
        }
    }

    /// Closes the port and unmaps the rings.
    fn close(self) {
        let _ = events::close(self.port);
        let (tx_page, rx_page) = self.vif.into_pages();
        // A front-end that died took its grants with it; nothing to undo then.
        let _ = tx_page.unmap();
        let _ = rx_page.unmap();
    }
}

/// Where a vif's handshake stands.
enum Phase {
    /// Features published (`InitWait`), waiting for the front-end's rings.
    Waiting,
    /// Serving, on one to [`handshake::MAX_QUEUES`] queues.
    Connected { queues: Vec<Queue> },
    /// Closed; published again if the front-end starts over.
    Closed,
    /// Cut off or unusable: never served again.
    Dead,
}

/// One entry of `backend/vif`.
struct Entry {
    fe: u16,
    handle: String,
    name: String,
    back: String,
    front: String,
    bridge_port: PortId,
    phase: Phase,
    /// The state last written to the back-end's `state`.
    published: Option<State>,
    /// An earlier instance of this domain had connected it (the back-end's `state` said
    /// `Connected` when this instance found the entry): its rings are resumed and nothing
    /// is published again.
    resume: bool,
}

impl Entry {
    fn label(&self) -> String {
        format!("vif {}.{} of {}", self.fe, self.handle, self.name)
    }
}

struct Backend {
    xs: Client,
    root: String,
    nic: Option<NetDevice>,
    uplink: PortId,
    bridge: Bridge,
    bounce: DmaRegion,
    entries: Vec<Entry>,
    /// Frames the NIC could not send (counted, not retried).
    nic_errors: u64,
    /// `restart=given-up` on the command line: the microvisor gave up on this domain (a
    /// restart loop) and built it once more only so that the front-ends fail their
    /// interfaces instead of waiting: it opens no NIC and closes every vif it finds.
    given_up: bool,
}

fn main(info: &'static BootInfo) -> ! {
    let domid = info.domain.domid;
    let given_up = cmdline::get(info.cmdline, "restart") == Some("given-up");
    let nic = if given_up {
        println!("given up on by the microvisor (a restart loop): closing every vif");
        None
    } else {
        open_nic(domid)
    };
    let Some(bounce) = DmaRegion::new(BOUNCE_BYTES) else {
        halt("no memory for the bounce buffer");
    };
    let mut xs = match Client::connect() {
        Ok(xs) => xs,
        Err(e) => halt(&format!("cannot connect to xenstore ({e})")),
    };
    let root = format!("/local/domain/{domid}/backend/vif");
    if let Err(e) = xs.watch(&root, TOKEN_BACKEND) {
        halt(&format!("cannot watch {root} ({e})"));
    }
    let mut bridge = Bridge::new();
    let uplink = bridge.add_uplink();
    let mut backend = Backend {
        xs,
        root,
        nic,
        uplink,
        bridge,
        bounce,
        entries: Vec::new(),
        nic_errors: 0,
        given_up,
    };
    let mut idle_stats = IdleStats::new(info.cmdline);
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
        idle_stats.report(&backend);
        events::wait_since(generation, Some(time::now_ns().saturating_add(IDLE_NS)));
    }
}

fn halt(why: &str) -> ! {
    println!("{why}");
    loop {
        events::wait();
    }
}

/// Opens the first virtio-net function of this domain, the bridge's uplink.
fn open_nic(domid: u16) -> Option<NetDevice> {
    let functions = match pci::list() {
        Ok(functions) => functions,
        Err(e) => {
            println!("MVOP_PCI_LIST failed ({e})");
            return None;
        }
    };
    let Some(function) = functions
        .iter()
        .find(|f| virtio::is_virtio_net(f.vendor(), f.device()))
    else {
        println!("no virtio-net function is assigned to this domain; bridging the vifs only");
        return None;
    };
    let (interrupts, how) = virtio::bind_interrupts(function, domid);
    match NetDevice::open(function, interrupts) {
        Ok(nic) => {
            println!("nic {}: mac {}, {how}", function.bdf, Mac(nic.mac()));
            Some(nic)
        }
        Err(e) => {
            println!("nic {}: cannot initialise ({e})", function.bdf);
            None
        }
    }
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

    /// Writes the back-end's state, unless it already says so.
    fn set_state(&mut self, index: usize, state: State) {
        if self.entries[index].published == Some(state) {
            return;
        }
        self.entries[index].published = Some(state);
        let path = format!("{}/state", self.entries[index].back);
        self.write(&path, &format!("{}", state.as_u32()));
    }

    /// The name of domain `domid`, from the xenstore domain's index `/local/names/<name>`.
    fn name_of(&mut self, domid: u16) -> String {
        let wanted = format!("{domid}");
        for name in self.directory("/local/names") {
            if self.read(&format!("/local/names/{name}")).as_deref() == Some(wanted.as_str()) {
                return name;
            }
        }
        String::from("?")
    }

    /// Brings the entries in line with `backend/vif` and each front-end's state.
    fn reconcile(&mut self) {
        let mut listed = Vec::new();
        let root = self.root.clone();
        for fe in self.directory(&root) {
            for handle in self.directory(&format!("{root}/{fe}")) {
                listed.push((fe.clone(), handle));
            }
        }
        let mut index = 0;
        while index < self.entries.len() {
            let entry = &self.entries[index];
            let key = (format!("{}", entry.fe), entry.handle.clone());
            if listed.contains(&key) {
                index += 1;
            } else {
                self.disconnect(index, "its entry was removed");
                self.entries.remove(index);
            }
        }
        for (fe, handle) in listed {
            let known = self
                .entries
                .iter()
                .any(|e| format!("{}", e.fe) == fe && e.handle == handle);
            if !known {
                self.add(&fe, &handle);
            }
        }
        for index in 0..self.entries.len() {
            self.step(index);
        }
    }

    /// Sets up a new entry: checks its keys, adds its bridge port, publishes the features,
    /// `InitWait`.
    fn add(&mut self, fe_text: &str, handle: &str) {
        let back = format!("{}/{fe_text}/{handle}", self.root);
        let fe = self
            .read(&format!("{back}/frontend-id"))
            .and_then(|v| v.parse::<u16>().ok());
        let front = self.read(&format!("{back}/frontend")).unwrap_or_default();
        let mac = self
            .read(&format!("{back}/mac"))
            .and_then(|text| Mac::parse(&text));
        let bridge_name = self
            .read(&format!("{back}/bridge"))
            .unwrap_or_else(|| String::from("?"));
        let (Some(fe), Some(mac), false) = (fe, mac, front.is_empty()) else {
            println!("vif {fe_text}.{handle}: no usable frontend-id, frontend or mac; not served");
            self.write(
                &format!("{back}/state"),
                &format!("{}", State::Closed.as_u32()),
            );
            return;
        };
        let name = self.name_of(fe);
        if mac.is_group() {
            println!("vif {fe}.{handle} of {name}: mac {mac} is a group address; not served");
            self.write(
                &format!("{back}/state"),
                &format!("{}", State::Closed.as_u32()),
            );
            return;
        }
        // An earlier instance of this domain connected it and died (this one has the same
        // domain id): the front-end still uses its rings, so take them over as they are.
        let resume = self
            .read(&format!("{back}/state"))
            .and_then(|s| State::from_decimal(s.as_bytes()))
            == Some(State::Connected);
        let (phase, published) = if self.given_up {
            println!("vif {fe}.{handle} of {name}: closing it (given up)");
            self.write(
                &format!("{back}/state"),
                &format!("{}", State::Closing.as_u32()),
            );
            (Phase::Closed, Some(State::Closing))
        } else {
            println!(
                "vif {fe}.{handle} of {name}: mac {mac}, bridge {bridge_name}; {}",
                if resume {
                    "connected by this domain's previous instance: resuming"
                } else {
                    "waiting for the front-end"
                }
            );
            (Phase::Waiting, resume.then_some(State::Connected))
        };
        let bridge_port = self.bridge.add_vif(mac);
        self.entries.push(Entry {
            fe,
            handle: String::from(handle),
            name,
            back,
            front: front.clone(),
            bridge_port,
            phase,
            published,
            resume: resume && !self.given_up,
        });
        if published.is_none() {
            self.publish(self.entries.len() - 1);
        }
        if let Err(e) = self.xs.watch(&format!("{front}/state"), TOKEN_FRONTEND) {
            println!("cannot watch {front}/state ({e})");
        }
    }

    /// Features, then `InitWait`.
    fn publish(&mut self, index: usize) {
        let back = self.entries[index].back.clone();
        for (key, value) in handshake::backend_keys() {
            self.write(&format!("{back}/{key}"), &value);
        }
        self.set_state(index, State::InitWait);
    }

    /// Follows the front-end's state as Linux's own back-end does.
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
                if matches!(phase, Phase::Closed) && !self.given_up =>
            {
                self.entries[index].phase = Phase::Waiting;
                self.publish(index);
            }
            _ => {}
        }
    }

    fn refuse(&mut self, index: usize, why: &str) {
        println!("{}: {why}; closing", self.entries[index].label());
        self.entries[index].phase = Phase::Dead;
        self.set_state(index, State::Closing);
        self.set_state(index, State::Closed);
    }

    /// Reads the front-end's keys, maps its rings, binds its port, `Connected`.
    fn connect(&mut self, index: usize) {
        let (front, fe) = (self.entries[index].front.clone(), self.entries[index].fe);
        let xs = RefCell::new(&mut self.xs);
        let parsed = handshake::parse_frontend(|key| {
            xs.borrow_mut()
                .read_string(Tx::NONE, &format!("{front}/{key}"))
                .ok()
        });
        let frontend = match parsed {
            Ok(frontend) => frontend,
            Err(e) => return self.refuse(index, &format!("{e}")),
        };
        let mut queues: Vec<Queue> = Vec::new();
        let resume = core::mem::take(&mut self.entries[index].resume);
        for keys in &frontend.queues {
            match Queue::open(fe, keys, resume) {
                Ok(queue) => queues.push(queue),
                Err(why) => {
                    queues.into_iter().for_each(Queue::close);
                    return self.refuse(index, &why);
                }
            }
        }
        let ports: Vec<String> = queues.iter().map(|q| format!("{}", q.port.0)).collect();
        println!(
            "{}: {}, {} queue(s), port(s) {}{}",
            self.entries[index].label(),
            if resume { "resumed" } else { "connected" },
            queues.len(),
            ports.join(", "),
            if frontend.rx_notify {
                ""
            } else {
                ", no rx notifications"
            }
        );
        self.bridge.set_up(self.entries[index].bridge_port, true);
        let ports: Vec<Port> = queues.iter().map(|q| q.port).collect();
        self.entries[index].phase = Phase::Connected { queues };
        self.set_state(index, State::Connected);
        // Frames it may have queued already.
        for port in ports {
            let _ = events::send(port);
        }
    }

    /// Stops serving (if it was) and prints the counts.
    fn disconnect(&mut self, index: usize, why: &str) {
        let entry = &mut self.entries[index];
        let phase = core::mem::replace(&mut entry.phase, Phase::Closed);
        let Phase::Connected { queues } = phase else {
            if matches!(phase, Phase::Dead) {
                entry.phase = Phase::Dead;
            }
            return;
        };
        self.bridge.set_up(entry.bridge_port, false);
        let c = queues
            .iter()
            .fold(Counters::default(), |sum, q| sum.add(&q.vif.counters()));
        println!(
            "{} closed ({why}): tx {} frames {} B ({} dropped, {} copy errors, {} GSO into {} segments), rx {} frames {} B ({} dropped), {} copies, {} notifications",
            entry.label(),
            c.tx_frames,
            c.tx_bytes,
            c.tx_dropped,
            c.tx_copy_errors,
            c.tx_gso_frames,
            c.tx_segments,
            c.rx_frames,
            c.rx_bytes,
            c.rx_dropped,
            c.grant_copies,
            c.notifications
        );
        queues.into_iter().for_each(Queue::close);
    }

    fn cut_off(&mut self, index: usize, reason: &str) {
        // A front-end destroyed under us (`xl destroy`) has its ring grants revoked: its ring
        // reads as garbage before its entries go. If its entries are gone already, it left;
        // it did not misbehave.
        let (back, front) = (
            self.entries[index].back.clone(),
            self.entries[index].front.clone(),
        );
        let mut gone = |path: &str| self.xs.read(Tx::NONE, &format!("{path}/state")).is_err();
        if gone(&back) || gone(&front) {
            self.disconnect(index, "its front-end went away");
            self.entries[index].phase = Phase::Dead;
            return;
        }
        println!("{} cut off: {reason}", self.entries[index].label());
        self.disconnect(index, "cut off");
        self.entries[index].phase = Phase::Dead;
        self.set_state(index, State::Closing);
        self.set_state(index, State::Closed);
    }

    /// Sends `frame`, which came in on bridge port `from`, where the bridge says.
    fn forward(&mut self, from: PortId, frame: &[u8]) {
        let Forward::To(ports) = self.bridge.forward(from, frame) else {
            return;
        };
        for to in ports {
            if to == self.uplink {
                if let Some(nic) = self.nic.as_mut() {
                    if nic.send(frame).is_err() {
                        self.nic_errors += 1;
                    }
                }
                continue;
            }
            if let Some(entry) = self.entries.iter_mut().find(|e| e.bridge_port == to) {
                if let Phase::Connected { queues } = &mut entry.phase {
                    // One flow always takes the same queue, so it stays in order.
                    let queue = flow_hash(frame) as usize % queues.len();
                    queues[queue].vif.queue_rx(frame);
                }
            }
        }
    }

    /// One turn: frames from the NIC and from every vif whose port fired go through the
    /// bridge; then every vif's queued frames go to its guest.
    fn serve(&mut self) {
        if let Some(port) = self.nic.as_ref().and_then(NetDevice::port) {
            events::take(port);
        }
        let mut buffer = [0u8; MAX_FRAME];
        for _ in 0..NIC_BURST {
            let Some(len) = self.nic.as_mut().and_then(|nic| nic.receive(&mut buffer)) else {
                break;
            };
            self.forward(self.uplink, &buffer[..len]);
        }
        let mut frames = Vec::new();
        for index in 0..self.entries.len() {
            let entry = &mut self.entries[index];
            let Phase::Connected { queues } = &mut entry.phase else {
                continue;
            };
            let mut cut = None;
            for queue in queues.iter_mut() {
                // Looked at whether or not the port fired: a ring read costs no hypercall.
                let fired = events::take(queue.port);
                let mut copier = Copier {
                    bounce: &mut self.bounce,
                    domid: entry.fe,
                };
                match queue.vif.take_tx(&mut copier, &mut frames) {
                    Ok(true) => {
                        let _ = events::send(queue.port);
                    }
                    Ok(false) => {}
                    Err(reason) => {
                        cut = Some(format!("{reason}"));
                        break;
                    }
                }
                // Notifications that keep finding nothing new: an event storm.
                if let Some(Err(reason)) = fired.then(|| queue.vif.notified()) {
                    cut = Some(format!("{reason}"));
                    break;
                }
            }
            if let Some(reason) = cut {
                self.cut_off(index, &reason);
                frames.clear();
                continue;
            }
            let from = entry.bridge_port;
            for frame in frames.drain(..) {
                self.forward(from, &frame);
            }
        }
        for index in 0..self.entries.len() {
            let entry = &mut self.entries[index];
            let Phase::Connected { queues } = &mut entry.phase else {
                continue;
            };
            let mut cut = None;
            for queue in queues.iter_mut() {
                let mut copier = Copier {
                    bounce: &mut self.bounce,
                    domid: entry.fe,
                };
                match queue.vif.deliver_rx(&mut copier) {
                    Ok(true) => {
                        let _ = events::send(queue.port);
                    }
                    Ok(false) => {}
                    Err(reason) => {
                        cut = Some(format!("{reason}"));
                        break;
                    }
                }
            }
            if let Some(reason) = cut {
                self.cut_off(index, &reason);
            }
        }
    }
}

/// How long a vif must move no frame before `stats=idle` prints its counts.
const IDLE_STATS_NS: u64 = 300_000_000;

/// `stats=idle` on the command line: a connected vif's counts, printed once it has moved no
/// frame for [`IDLE_STATS_NS`] after moving some (`cargo xtask bench --only net` takes their
/// differences across its tests). Cumulative, as in the closing line, then netback's own.
struct IdleStats {
    on: bool,
    /// Per vif label: its frames when last seen changing, when that was, and when printed.
    seen: Vec<(String, u64, u64, u64)>,
}

impl IdleStats {
    fn new(cmdline: &str) -> Self {
        Self {
            on: driver_domains::cmdline::get(cmdline, "stats") == Some("idle"),
            seen: Vec::new(),
        }
    }

    fn report(&mut self, backend: &Backend) {
        if !self.on {
            return;
        }
        let now = time::now_ns();
        for entry in &backend.entries {
            let Phase::Connected { queues } = &entry.phase else {
                continue;
            };
            let c = queues
                .iter()
                .fold(Counters::default(), |sum, q| sum.add(&q.vif.counters()));
            let frames = c.tx_frames + c.rx_frames;
            let label = entry.label();
            let at = match self.seen.iter().position(|seen| seen.0 == label) {
                Some(at) => at,
                None => {
                    self.seen.push((label.clone(), 0, now, 0));
                    self.seen.len() - 1
                }
            };
            let seen = &mut self.seen[at];
            if frames != seen.1 {
                (seen.1, seen.2) = (frames, now);
                continue;
            }
            if frames == seen.3 || now.saturating_sub(seen.2) < IDLE_STATS_NS {
                continue;
            }
            seen.3 = frames;
            let me = driver_domains::hypercall::domain_stats().unwrap_or_default();
            // Two lines: the console domain keeps lines to 200 bytes.
            println!(
                "{label}: stats: tx {} frames {} B, rx {} frames {} B, {} copies, {} notifications",
                c.tx_frames, c.tx_bytes, c.rx_frames, c.rx_bytes, c.grant_copies, c.notifications
            );
            println!(
                "{label}: own: {} events, {} hypercalls, {} exits, {} KiB heap, {} KiB bounce",
                me.events_sent,
                me.hypercalls,
                me.vm_exits,
                (driver_domains::heap::size_bytes() - driver_domains::heap::free_bytes()) / 1024,
                backend.bounce.len() / 1024,
            );
        }
    }
}
