//! Modes of a "ring" split device between domains: `ring-back`, `ring-front`,
//! `ring-hostile`. The device is a one-page shared ring of [`Message`] entries (32 slots)
//! with one event channel, set up with the xenbus handshake:
//!
//! | step | front-end (`device/ring/0` of domain f) | back-end (`backend/ring/<f>/0` of domain b) |
//! |---|---|---|
//! | 1 | creates its directory: `backend`, `backend-id`, `state` = 1; perms `[n<f>, r<b>]` | creates its directory: `frontend`, `frontend-id`, `state` = 1; perms `[n<b>, r<f>]`; switches to InitWait |
//! | 2 | on InitWait: initialises and grants a ring page, `alloc_unbound(b)`, writes `ring-ref` and `event-channel` in one transaction, switches to Initialised | |
//! | 3 | | on Initialised: reads and checks them, maps the grant, `bind_interdomain`, switches to Connected |
//! | 4 | sends requests; each response has the request's id and status 0 | answers each request (status -1 if it is damaged) |
//! | 5 | switches to Closing, then Closed; revokes the grant once the back-end unmapped it | on Closing/Closed: unmaps, closes the port, switches to Closed |
//!
//! A request carries its sequence number (from 1) as id and 32 payload bytes; a response
//! carries the request's id and a 4-byte little-endian `i32` status. Peers are found by name
//! through `/local/names/<name>`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Display;

use driver_domains::abi::sched::SHUTDOWN_CRASH;
use driver_domains::events::{self, Port, Wake};
use driver_domains::grant_table::{self, GrantRef, MappedGrant};
use driver_domains::ring::test_entries::Message;
use driver_domains::ring::{BackRing, FrontRing, RingError, SharedPage, Sring};
use driver_domains::xenbus::{self, XenbusState};
use driver_domains::xenstore::{self, Access, Client, Error, Perm, Tx};
use driver_domains::{cmdline, hypercall, println, time, BootInfo, OwnedPage};

const PAYLOAD_BYTES: usize = 32;
/// How long a front-end waits for the back-end's name and each handshake step.
const HANDSHAKE_NS: u64 = 60_000_000_000;
/// How long a front-end waits for a response before counting the rest as lost.
const RESPONSE_NS: u64 = 10_000_000_000;
/// How long a front-end retries revoking its grant.
const REVOKE_NS: u64 = 10_000_000_000;
/// How long `ring-hostile` waits for the back-end to close.
const HOSTILE_WAIT_NS: u64 = 10_000_000_000;
/// Events `ring-hostile how=flood` sends before it reports.
const FLOOD_EVENTS: u64 = 200_000;
/// The `req_prod` jump of `ring-hostile how=ring`.
const RING_JUMP: u32 = 100_000;
/// The grant ref `ring-hostile how=gref` publishes.
const BOGUS_GREF: u32 = 4000;
/// Offsets of the shared ring's indices.
const REQ_PROD: usize = 0;
const RSP_PROD: usize = 8;

fn fail(prefix: &str, what: impl Display) -> ! {
    println!("{prefix}: {what}");
    hypercall::shutdown(SHUTDOWN_CRASH)
}

fn connect(prefix: &str) -> Client {
    Client::connect().unwrap_or_else(|e| fail(prefix, format_args!("xenstore unavailable: {e}")))
}

fn frontend_dir(front: u16) -> String {
    format!("{}/device/ring/0", xenstore::domain_path(front))
}

fn backend_dir(back: u16, front: u16) -> String {
    format!("{}/backend/ring/{front}/0", xenstore::domain_path(back))
}

fn request(id: u64) -> Message {
    let mut payload = [0u8; PAYLOAD_BYTES];
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte = (id as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    // 32 bytes fit the 48-byte payload.
    Message::new(id, &payload).expect("request payload fits")
}

fn response(id: u64, status: i32) -> Message {
    Message::new(id, &status.to_le_bytes()).expect("status fits")
}

/// The status of an intact response, `None` if it is damaged or not a response.
fn response_status(message: &Message) -> Option<i32> {
    if !message.is_intact() {
        return None;
    }
    let data: [u8; 4] = message.data()?.try_into().ok()?;
    Some(i32::from_le_bytes(data))
}

/// Creates `dir` with `nodes`, all with `perms`, in one transaction.
fn create_dir(
    xs: &mut Client,
    dir: &str,
    nodes: &[(&str, String)],
    perms: &[Perm],
) -> Result<(), Error> {
    xs.transaction(|xs, tx| {
        xs.mkdir(tx, dir)?;
        xs.set_perms(tx, dir, perms)?;
        for (key, value) in nodes {
            let path = format!("{dir}/{key}");
            xs.write_str(tx, &path, value)?;
            xs.set_perms(tx, &path, perms)?;
        }
        Ok(())
    })
}

/// `spin_us=N` (default: the runtime's): how long waits watch for an event before they
/// block. Both ends of a ping-pong that spin long enough answer each other without
/// blocking and being woken.
fn set_spin(info: &BootInfo) {
    if cmdline::get(info.cmdline, "spin_us").is_some() {
        events::set_spin_ns(crate::arg(info, "spin_us", 0).saturating_mul(1000));
    }
}

fn deadline_in(ns: u64) -> u64 {
    time::now_ns().saturating_add(ns)
}

// ---------------------------------------------------------------------------------------
// ring-back

enum Phase {
    /// Waiting for `/local/names/<name>`.
    Resolving,
    /// Back-end in InitWait, waiting for the front-end to be Initialised.
    WaitingFrontend,
    Connected {
        ring: BackRing<Message, Message, MappedGrant>,
        port: Port,
    },
    Finished,
}

struct Frontend {
    name: String,
    domid: u16,
    phase: Phase,
    requests: u64,
    bad: u64,
    /// Events on the port since the last request.
    idle_events: u64,
    name_token: String,
    state_token: String,
}

struct Backend {
    xs: Client,
    me: u16,
    count: u64,
    flood_limit: u64,
}

impl Backend {
    fn bdir(&self, fe: &Frontend) -> String {
        backend_dir(self.me, fe.domid)
    }

    fn state_watch_path(fe: &Frontend) -> String {
        xenbus::state_path(&frontend_dir(fe.domid))
    }

    fn xs_fail(e: Error) -> ! {
        fail("ring-back", format_args!("xenstore failed: {e}"))
    }

    /// The name appeared (or changed): set the back-end directory up.
    fn on_name(&mut self, fe: &mut Frontend) {
        let path = xenbus::name_path(&fe.name);
        let domid = match self.xs.read_u32(Tx::NONE, &path) {
            Ok(id) => id,
            Err(Error::Enoent | Error::Eacces | Error::Einval) => {
                if !matches!(fe.phase, Phase::Resolving | Phase::Finished) {
                    // Unmapping and closing do not touch the ring's memory.
                    println!("ring-back: {} gone", fe.name);
                    self.disconnect(fe, true);
                }
                return;
            }
            Err(e) => Self::xs_fail(e),
        };
        if !matches!(fe.phase, Phase::Resolving) {
            return;
        }
        let Ok(domid) = u16::try_from(domid) else {
            println!("ring-back: {} has a bad domid {domid}", fe.name);
            return;
        };
        fe.domid = domid;
        let dir = self.bdir(fe);
        let perms = [
            Perm::new(Access::None, self.me),
            Perm::new(Access::Read, domid),
        ];
        let nodes = [
            ("frontend", frontend_dir(domid)),
            ("frontend-id", domid.to_string()),
            ("state", XenbusState::Initialising.as_u32().to_string()),
        ];
        create_dir(&mut self.xs, &dir, &nodes, &perms).unwrap_or_else(|e| Self::xs_fail(e));
        xenbus::switch_state(&mut self.xs, &dir, XenbusState::InitWait)
            .unwrap_or_else(|e| Self::xs_fail(e));
        fe.phase = Phase::WaitingFrontend;
        let watch = Self::state_watch_path(fe);
        self.xs
            .watch(&watch, &fe.state_token)
            .unwrap_or_else(|e| Self::xs_fail(e));
    }

    /// The front-end's state changed.
    fn on_state(&mut self, fe: &mut Frontend) {
        if matches!(fe.phase, Phase::Resolving | Phase::Finished) {
            return;
        }
        let state = xenbus::read_state(&mut self.xs, Tx::NONE, &frontend_dir(fe.domid))
            .unwrap_or_else(|e| Self::xs_fail(e));
        match fe.phase {
            Phase::WaitingFrontend if state.is_closing() => self.finish(fe),
            Phase::WaitingFrontend
                if matches!(state, XenbusState::Initialised | XenbusState::Connected) =>
            {
                self.connect(fe)
            }
            Phase::Connected { .. } if state.is_closing() => {
                self.serve(fe);
                if !matches!(fe.phase, Phase::Finished) {
                    self.finish(fe);
                }
            }
            _ => {}
        }
    }

    fn read_number(&mut self, fe: &Frontend, key: &str) -> Result<u32, String> {
        let path = format!("{}/{key}", frontend_dir(fe.domid));
        match self.xs.read(Tx::NONE, &path) {
            Ok(value) => driver_domains::xs_wire::parse_decimal(&value).ok_or_else(|| {
                format!(
                    "{key} {:?} is not a number",
                    String::from_utf8_lossy(&value)
                )
            }),
            Err(e @ (Error::Etimedout | Error::Eproto | Error::Enodev)) => Self::xs_fail(e),
            Err(e) => Err(format!("{key} unreadable: {e}")),
        }
    }

    fn connect(&mut self, fe: &mut Frontend) {
        let gref = match self.read_number(fe, "ring-ref") {
            Ok(r) => r,
            Err(what) => return self.misbehaved(fe, format!("gref: {what}")),
        };
        let remote_port = match self.read_number(fe, "event-channel") {
            Ok(p) if p != 0 && p < driver_domains::abi::evtchn::NR_EVENT_CHANNELS_2L => p,
            Ok(p) => return self.misbehaved(fe, format!("port: event-channel {p} out of range")),
            Err(what) => return self.misbehaved(fe, format!("port: {what}")),
        };
        let grant = match grant_table::map_grant(fe.domid, GrantRef(gref), false) {
            Ok(grant) => grant,
            Err(status) => {
                return self.misbehaved(
                    fe,
                    format!("gref: map of ref {gref} failed, status {status}"),
                )
            }
        };
        let port = match events::bind_interdomain(fe.domid, remote_port) {
            Ok(port) => port,
            Err(e) => {
                let _ = grant.unmap();
                return self.misbehaved(
                    fe,
                    format!("port: bind of port {remote_port} failed, error {e}"),
                );
            }
        };
        let ring = match BackRing::new(grant) {
            Ok(ring) => ring,
            Err(e) => fail("ring-back", format_args!("ring layout: {e}")),
        };
        fe.phase = Phase::Connected { ring, port };
        let dir = self.bdir(fe);
        xenbus::switch_state(&mut self.xs, &dir, XenbusState::Connected)
            .unwrap_or_else(|e| Self::xs_fail(e));
        println!("ring-back: {} connected", fe.name);
        // Requests published before the bind sent no event that reached us: look now.
        self.serve(fe);
    }

    /// Answers every request in the ring.
    fn serve(&mut self, fe: &mut Frontend) {
        let Phase::Connected { ring, port } = &mut fe.phase else {
            return;
        };
        let port = *port;
        let mut failure: Option<RingError> = None;
        let mut served = 0u64;
        'outer: loop {
            loop {
                match ring.next_request() {
                    Ok(Some(req)) => {
                        served += 1;
                        fe.requests += 1;
                        let good = req.is_intact() && req.id == fe.requests;
                        if !good {
                            fe.bad += 1;
                        }
                        let status = if good { 0 } else { -1 };
                        // A consumed request always has a response slot.
                        let _ = ring.produce_response(&response(req.id, status));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failure = Some(e);
                        break 'outer;
                    }
                }
            }
            if ring.push_responses() {
                let _ = events::send(port);
            }
            match ring.final_check_for_requests() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if served > 0 {
            fe.idle_events = 0;
        }
        if let Some(e) = failure {
            let what = match e {
                RingError::RequestProducerOutOfRange { req_prod, .. } => {
                    format!("ring: impossible req_prod {req_prod}")
                }
                other => format!("ring: {other}"),
            };
            self.misbehaved(fe, what);
        } else if fe.idle_events > self.flood_limit {
            let what = format!("flood: {} events without a request", fe.idle_events);
            self.misbehaved(fe, what);
        }
    }

    /// Unmaps, closes, switches to Closed, stops watching.
    fn disconnect(&mut self, fe: &mut Frontend, switch: bool) {
        if let Phase::Connected { ring, port } = core::mem::replace(&mut fe.phase, Phase::Finished)
        {
            if let Err(status) = ring.into_page().unmap() {
                println!(
                    "ring-back: {}: unmapping the ring failed, status {status}",
                    fe.name
                );
            }
            let _ = events::close(port);
        }
        fe.phase = Phase::Finished;
        if switch {
            let dir = self.bdir(fe);
            if let Err(e) = xenbus::switch_state(&mut self.xs, &dir, XenbusState::Closed) {
                println!("ring-back: {}: switching to Closed failed: {e}", fe.name);
            }
        }
        let watch = Self::state_watch_path(fe);
        let _ = self.xs.unwatch(&watch, &fe.state_token);
        let _ = self
            .xs
            .unwatch(&xenbus::name_path(&fe.name), &fe.name_token);
    }

    fn misbehaved(&mut self, fe: &mut Frontend, what: String) {
        println!("ring-back: {} misbehaved ({what}), disconnected", fe.name);
        self.disconnect(fe, true);
    }

    fn finish(&mut self, fe: &mut Frontend) {
        println!(
            "ring-back: {} done: {} requests, {} bad",
            fe.name, fe.requests, fe.bad
        );
        if self.count != 0 && fe.requests != self.count {
            println!("ring-back: {} expected {} requests", fe.name, self.count);
        }
        self.disconnect(fe, true);
    }
}

/// `mode=ring-back frontends=a,b,c count=N [flood_limit=E] [spin_us=S]`.
pub fn ring_back(info: &BootInfo) {
    let names: Vec<&str> = cmdline::get(info.cmdline, "frontends")
        .unwrap_or("")
        .split(',')
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        fail("ring-back", "needs frontends=<name>,<name>...");
    }
    set_spin(info);
    let mut backend = Backend {
        xs: connect("ring-back"),
        me: info.domain.domid,
        count: crate::arg(info, "count", 0),
        flood_limit: crate::arg(info, "flood_limit", 100_000),
    };
    let mut frontends: Vec<Frontend> = names
        .iter()
        .enumerate()
        .map(|(i, name)| Frontend {
            name: name.to_string(),
            domid: 0,
            phase: Phase::Resolving,
            requests: 0,
            bad: 0,
            idle_events: 0,
            name_token: format!("rb-name-{i}"),
            state_token: format!("rb-state-{i}"),
        })
        .collect();
    for fe in &frontends {
        backend
            .xs
            .watch(&xenbus::name_path(&fe.name), &fe.name_token)
            .unwrap_or_else(|e| Backend::xs_fail(e));
    }
    loop {
        let gen = events::generation();
        while let Some(event) = backend
            .xs
            .next_watch_event()
            .unwrap_or_else(|e| Backend::xs_fail(e))
        {
            let Some(fe) = frontends
                .iter_mut()
                .find(|f| f.name_token == event.token || f.state_token == event.token)
            else {
                continue;
            };
            if fe.name_token == event.token {
                backend.on_name(fe);
            } else {
                backend.on_state(fe);
            }
        }
        for fe in frontends.iter_mut() {
            if let Phase::Connected { port, .. } = fe.phase {
                if events::take(port) {
                    fe.idle_events += 1;
                    backend.serve(fe);
                }
            }
        }
        if frontends.iter().all(|f| matches!(f.phase, Phase::Finished)) {
            break;
        }
        events::wait_since(gen, None);
    }
    println!("ring-back: done");
}

// ---------------------------------------------------------------------------------------
// ring-front and ring-hostile

/// How `ring-hostile` misbehaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Ring,
    Gref,
    Flood,
}

impl How {
    fn name(self) -> &'static str {
        match self {
            How::Ring => "ring",
            How::Gref => "gref",
            How::Flood => "flood",
        }
    }
}

/// A front-end's side of the device.
struct Front {
    prefix: &'static str,
    xs: Client,
    fdir: String,
    bdir: String,
    me: u16,
    backend: u16,
}

impl Front {
    fn fail(&self, what: impl Display) -> ! {
        fail(self.prefix, what)
    }

    /// Finds the back-end, creates the device directory, waits for InitWait.
    fn setup(prefix: &'static str, info: &BootInfo) -> Front {
        let Some(name) = cmdline::get(info.cmdline, "backend").filter(|n| !n.is_empty()) else {
            fail(prefix, "needs backend=<name>");
        };
        let mut xs = connect(prefix);
        let me = info.domain.domid;
        let backend = xenbus::lookup_domid(&mut xs, name, Some(deadline_in(HANDSHAKE_NS)))
            .unwrap_or_else(|e| fail(prefix, format_args!("backend {name} not found: {e}")));
        let mut front = Front {
            prefix,
            xs,
            fdir: frontend_dir(me),
            bdir: backend_dir(backend, me),
            me,
            backend,
        };
        let perms = front.perms();
        let nodes = [
            ("backend", front.bdir.clone()),
            ("backend-id", backend.to_string()),
            ("state", XenbusState::Initialising.as_u32().to_string()),
        ];
        let fdir = front.fdir.clone();
        create_dir(&mut front.xs, &fdir, &nodes, &perms)
            .unwrap_or_else(|e| front.fail(format_args!("creating {fdir} failed: {e}")));
        let state = front.wait_backend(|s| s == XenbusState::InitWait || s.is_closing());
        if state != XenbusState::InitWait {
            front.fail(format_args!("backend is {state}, not InitWait"));
        }
        front
    }

    fn wait_backend(&mut self, pred: impl Fn(XenbusState) -> bool) -> XenbusState {
        let bdir = self.bdir.clone();
        xenbus::wait_for_state(&mut self.xs, &bdir, pred, Some(deadline_in(HANDSHAKE_NS)))
            .unwrap_or_else(|e| self.fail(format_args!("waiting for the backend failed: {e}")))
    }

    /// Publishes `ring-ref` and `event-channel` in one transaction, then Initialised.
    fn publish(&mut self, gref: u32, port: Port) {
        let ring_ref = format!("{}/ring-ref", self.fdir);
        let event_channel = format!("{}/event-channel", self.fdir);
        let (gref, port) = (gref.to_string(), port.0.to_string());
        let perms = self.perms();
        self.xs
            .transaction(|xs, tx| {
                xs.write_str(tx, &ring_ref, &gref)?;
                xs.set_perms(tx, &ring_ref, &perms)?;
                xs.write_str(tx, &event_channel, &port)?;
                xs.set_perms(tx, &event_channel, &perms)
            })
            .unwrap_or_else(|e| self.fail(format_args!("publishing the ring failed: {e}")));
        self.switch(XenbusState::Initialised);
    }

    /// `[n<me>, r<backend>]`: this domain owns the nodes, the back-end may read them.
    fn perms(&self) -> [Perm; 2] {
        [
            Perm::new(Access::None, self.me),
            Perm::new(Access::Read, self.backend),
        ]
    }

    fn switch(&mut self, state: XenbusState) {
        let fdir = self.fdir.clone();
        xenbus::switch_state(&mut self.xs, &fdir, state)
            .unwrap_or_else(|e| self.fail(format_args!("switching to {state} failed: {e}")));
    }

    /// Waits for Connected; the state seen otherwise (the back-end gave up).
    fn wait_connected(&mut self) -> XenbusState {
        self.wait_backend(|s| s == XenbusState::Connected || s.is_closing())
    }
}

/// A granted, initialised ring page and the port for it.
struct Shared {
    page: OwnedPage,
    gref: GrantRef,
    port: Port,
}

fn share(front: &Front) -> Shared {
    let page = OwnedPage::new().unwrap_or_else(|| front.fail("no memory for the ring page"));
    Sring::init(&page);
    let gref = page
        .grant(front.backend, false)
        .unwrap_or_else(|e| front.fail(format_args!("granting the ring failed: {e}")));
    let port = events::alloc_unbound(front.backend)
        .unwrap_or_else(|e| front.fail(format_args!("alloc_unbound failed: {e}")));
    Shared { page, gref, port }
}

/// Revokes the grant (retrying while the back-end still has it mapped) and closes the port.
fn unshare(prefix: &str, shared: Shared) {
    let deadline = deadline_in(REVOKE_NS);
    loop {
        match shared.page.end_access(shared.gref) {
            Ok(()) => break,
            Err(_) if time::now_ns() < deadline => time::sleep_ms(1),
            Err(e) => {
                println!("{prefix}: revoking the ring grant failed: {e}");
                break;
            }
        }
    }
    let _ = events::close(shared.port);
}

/// Results of a run of requests.
#[derive(Default)]
struct Tally {
    received: u64,
    bad: u64,
}

impl Tally {
    fn check(&mut self, response: &Message, expected_id: u64) {
        self.received += 1;
        if response.id != expected_id || response_status(response) != Some(0) {
            self.bad += 1;
        }
    }
}

type Ring<'a> = FrontRing<Message, Message, &'a OwnedPage>;

/// Waits for the next response (`Ok(None)` after [`RESPONSE_NS`] without one).
fn next_response(ring: &mut Ring<'_>) -> Result<Option<Message>, RingError> {
    let deadline = deadline_in(RESPONSE_NS);
    loop {
        let gen = events::generation();
        if let Some(response) = ring.next_response()? {
            return Ok(Some(response));
        }
        if ring.final_check_for_responses()? {
            continue;
        }
        if events::wait_since(gen, Some(deadline)) == Wake::Timeout {
            return ring.next_response();
        }
    }
}

/// batch=0: one request at a time, always notifying.
fn run_single(ring: &mut Ring<'_>, port: Port, count: u64) -> Result<Tally, RingError> {
    let mut tally = Tally::default();
    for id in 1..=count {
        // The ring is empty: there is room.
        let _ = ring.produce_request(&request(id));
        let _ = ring.push_requests();
        let _ = events::send(port);
        match next_response(ring)? {
            Some(response) => tally.check(&response, id),
            None => break,
        }
    }
    Ok(tally)
}

/// batch=1: keep the ring full, push once per fill, notify only when the back-end asks.
fn run_batched(ring: &mut Ring<'_>, port: Port, count: u64) -> Result<Tally, RingError> {
    let mut tally = Tally::default();
    let mut next_id = 1;
    let mut expected = 1;
    let mut deadline = deadline_in(RESPONSE_NS);
    while expected <= count {
        let gen = events::generation();
        let mut produced = false;
        while next_id <= count && !ring.is_full() {
            let _ = ring.produce_request(&request(next_id));
            next_id += 1;
            produced = true;
        }
        if produced && ring.push_requests() {
            let _ = events::send(port);
        }
        let mut progress = false;
        while let Some(response) = ring.next_response()? {
            tally.check(&response, expected);
            expected += 1;
            progress = true;
        }
        if progress {
            deadline = deadline_in(RESPONSE_NS);
            continue;
        }
        if ring.final_check_for_responses()? {
            continue;
        }
        if events::wait_since(gen, Some(deadline)) == Wake::Timeout
            && !ring.final_check_for_responses()?
        {
            break;
        }
    }
    Ok(tally)
}

/// `x / n` with two decimals.
fn per(x: u64, n: u64) -> String {
    if n == 0 {
        return "0.00".to_string();
    }
    let hundredths = (u128::from(x) * 100 + u128::from(n) / 2) / u128::from(n);
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// `mode=ring-front backend=<name> count=N batch=0|1 [spin_us=S]`.
pub fn ring_front(info: &BootInfo) {
    let prefix = "ring-front";
    let count = crate::arg(info, "count", 1000);
    let batch = crate::arg(info, "batch", 0) != 0;
    set_spin(info);
    let mut front = Front::setup(prefix, info);
    let shared = share(&front);
    front.publish(shared.gref.0, shared.port);
    let state = front.wait_connected();
    if state != XenbusState::Connected {
        front.fail(format_args!("backend is {state}, not Connected"));
    }
    println!("ring-front: connected");

    let mut ring: Ring<'_> =
        FrontRing::new(&shared.page).unwrap_or_else(|e| front.fail(format_args!("ring: {e}")));
    let before = hypercall::domain_stats();
    let start = time::now_ns();
    let result = if batch {
        run_batched(&mut ring, shared.port, count)
    } else {
        run_single(&mut ring, shared.port, count)
    };
    let elapsed_ms = (time::now_ns() - start) / 1_000_000;
    let after = hypercall::domain_stats();
    let tally = result.unwrap_or_else(|e| front.fail(format_args!("backend broke the ring: {e}")));
    let stats = match (before, after) {
        (Ok(before), Ok(after)) => hypercall::stats_between(&before, &after),
        (Err(e), _) | (_, Err(e)) => {
            println!("ring-front: domain_stats unavailable: error {e}");
            Default::default()
        }
    };
    let lost = count - tally.received.min(count);
    println!(
        "ring-front: {count} messages, {lost} lost, {} bad, {elapsed_ms} ms, {} events, {} hypercalls, {} exits",
        tally.bad, stats.events_sent, stats.hypercalls, stats.vm_exits
    );
    println!(
        "ring-front: per message: {} events, {} hypercalls",
        per(stats.events_sent, count),
        per(stats.hypercalls, count)
    );
    front.switch(XenbusState::Closing);
    front.switch(XenbusState::Closed);
    unshare(prefix, shared);
    println!("ring-front: done");
}

/// `mode=ring-hostile backend=<name> how=ring|gref|flood [flood=N] [spin_us=S]`.
pub fn ring_hostile(info: &BootInfo) {
    let prefix = "ring-hostile";
    let how = match cmdline::get(info.cmdline, "how") {
        Some("ring") => How::Ring,
        Some("gref") => How::Gref,
        Some("flood") => How::Flood,
        other => fail(
            prefix,
            format_args!("needs how=ring|gref|flood, not {other:?}"),
        ),
    };
    let flood_events = crate::arg(info, "flood", FLOOD_EVENTS);
    set_spin(info);
    let mut front = Front::setup(prefix, info);
    let mut shared = None;
    match how {
        How::Gref => {
            let port = events::alloc_unbound(front.backend)
                .unwrap_or_else(|e| front.fail(format_args!("alloc_unbound failed: {e}")));
            front.publish(BOGUS_GREF, port);
        }
        How::Ring | How::Flood => {
            let s = share(&front);
            front.publish(s.gref.0, s.port);
            let state = front.wait_connected();
            if state != XenbusState::Connected {
                front.fail(format_args!("backend is {state}, not Connected"));
            }
            if how == How::Ring {
                let rsp_prod = s.page.load_u32(RSP_PROD);
                s.page.store_u32(REQ_PROD, rsp_prod.wrapping_add(RING_JUMP));
                let _ = events::send(s.port);
            } else {
                for _ in 0..flood_events {
                    let _ = events::send(s.port);
                }
            }
            shared = Some(s);
        }
    }
    println!("ring-hostile: {} done", how.name());

    // Wait for the back-end to close. A flood keeps going meanwhile: the back-end sees
    // only the events it does not coalesce, so it may need more than were sent so far.
    let deadline = deadline_in(HOSTILE_WAIT_NS);
    let bdir = front.bdir.clone();
    let flood_port = shared
        .as_ref()
        .filter(|_| how == How::Flood)
        .map(|s| s.port);
    let closed = loop {
        let state = xenbus::read_state(&mut front.xs, Tx::NONE, &bdir)
            .unwrap_or_else(|e| front.fail(format_args!("reading the backend state failed: {e}")));
        if state == XenbusState::Closed {
            break true;
        }
        if time::now_ns() >= deadline {
            break false;
        }
        match flood_port {
            Some(port) => {
                for _ in 0..1000 {
                    let _ = events::send(port);
                }
            }
            None => time::sleep_ms(10),
        }
    };
    if closed {
        println!("ring-hostile: backend closed");
    } else {
        let state =
            xenbus::read_state(&mut front.xs, Tx::NONE, &bdir).unwrap_or(XenbusState::Unknown);
        println!("ring-hostile: backend still {state} after 10 s");
    }
    if let Some(s) = shared {
        unshare(prefix, s);
    }
}
