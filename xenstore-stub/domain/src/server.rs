//! The xenstore server: the store, one ring connection per served domain, and the sync with
//! the microvisor's domain list. Everything that touches the machine goes through
//! [`Platform`], so the whole server runs on the host in tests with in-memory pages.
//!
//! # Serving a domain
//!
//! On [`Server::sync`] (at start and on every `VIRQ_DOMAIN_CHANGE`) the server lists the
//! domains ([`crate::roster`]) and, for each new one: maps its xenstore ring page (its grant
//! ref 1) read/write, checks the ring's indices, binds its store port, introduces it in the
//! store (`/local/domain/<id>/{name,domid}`), writes the index node `/local/names/<name>` =
//! `<id>` (owned by this domain, readable by all), and notifies it once so it looks at the
//! ring. A domain that is gone or dying is dropped: the store releases it (its watches and
//! transactions go, `@releaseDomain` fires), `/local/domain/<id>` and its names entry are
//! removed, the page is unmapped and the port closed.
//!
//! # Restarts under the same id
//!
//! Each connection is one build of its domain: its id and its `instance`. A service domain
//! the microvisor rebuilds under the same id (listed `DOMAIN_FLAG_DYING |
//! DOMAIN_FLAG_RESTARTING`, or seen alive again with another instance) loses its transport
//! and is released in the store as above (its watches and transactions go,
//! `@releaseDomain` fires), but `/local/domain/<id>` and its names entry stay: the device
//! entries under its home (`backend/vbd/...`, `backend/vif/...`, with both ends' `state`)
//! are what the next build resumes from, and its frontends' entries still name it. It is
//! awaited (`returning`) until its new build is connected (introduced again:
//! `@introduceDomain` fires, its `name` and `domid` are rewritten in place, its devices are
//! not rewritten) or the microvisor gives up on it (no longer listed): then it is dropped
//! for good.
//!
//! # A backend gone for good
//!
//! When a domain serving devices is dropped for good, each of its devices whose frontend
//! is still there is closed: `/local/domain/<be>/backend/<kind>/<fe>/<id>/state` is
//! written `6` (`XenbusStateClosed`, owned by this domain, readable by the frontend), so
//! the frontend (Linux's blkfront and netfront watch that node) fails the device instead
//! of waiting for a backend that never comes; a missing node would read as `Unknown`,
//! which Linux ignores. That node goes when the frontend goes, or when a backend of that
//! name is served again.
//!
//! # Serving a ring
//!
//! When a connection's port fires ([`Server::service`]): send what is queued for it, then
//! read request bytes, never beyond the message being assembled, into its [`Framer`]; hand
//! each whole message to the store and queue what comes back on the destination
//! connections' [`OutputQueue`]s; then send and notify every connection that got output.
//! Requests are read only while the reply is sure to fit in the requester's queue (flow
//! control: a client that does not read replies stops being served), and at most
//! [`MESSAGES_PER_TURN`] per turn, so one busy client cannot starve the others: a
//! connection with input left over stays on the backlog ([`Server::has_backlog`]).
//!
//! # Faults
//!
//! A ring whose indices are out of range, or a message whose header breaks the framing, is
//! a protocol error; a client whose queue overflows with watch events does not read its
//! ring. Either way the domain is dropped as above (with a line saying why) and not served
//! again while it lives.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use microvisor_abi::microvisor_op::{DomainEntry, DOMAIN_FLAG_DYING, DOMAIN_FLAG_RESTARTING};
use xen_ring::SharedPage;
use xenstore_store::wire::{self, MessageType};
use xenstore_store::{ConnId, Framer, Outgoing, OutputQueue, Quotas, Store};

use crate::devices::{VbdSpec, VifSpec};
use crate::roster::{self, Candidate, Served};
use crate::stream_ring::StreamError;
use crate::xs_ring::ServerRing;

/// Room for the domain list the microvisor returns.
pub const MAX_LISTED_DOMAINS: usize = 256;

/// Most requests handled for one connection per turn before the others get theirs.
pub const MESSAGES_PER_TURN: usize = 16;

/// The directory of name index nodes.
pub const NAMES_DIR: &str = "/local/names";

/// Where the toolstack (the control domain) adds devices at run time: one node per frontend
/// domain name, `/tool/devices/<name>`, whose value is `vbds=<table> vifs=<table>` in the
/// device table's encoding (either part may be absent). The server merges these entries into
/// its device table after each request of a privileged connection, and writes and removes
/// their frontend and backend entries like those of the boot manifest. A name there (even
/// with an empty value) replaces the boot manifest's devices of a domain of that name.
pub const TOOL_DEVICES_DIR: &str = "/tool/devices";

/// What the server needs from the machine (the runtime in the domain, fakes in tests).
pub trait Platform {
    /// A mapped ring page.
    type Page: SharedPage;
    /// Lists the live domains into `out` (`MVOP_LIST_DOMAINS`); returns how many.
    fn list_domains(&mut self, out: &mut [DomainEntry]) -> Result<usize, i64>;
    /// Maps `domid`'s xenstore ring page (its grant ref 1) read/write.
    fn map_ring(&mut self, domid: u16) -> Result<Self::Page, i64>;
    /// Unmaps a page [`Platform::map_ring`] returned.
    fn unmap_ring(&mut self, domid: u16, page: Self::Page);
    /// Binds a local port to `domid`'s unbound `remote_port`; returns the local port.
    fn bind(&mut self, domid: u16, remote_port: u32) -> Result<u32, i64>;
    /// Closes a local port.
    fn close(&mut self, local_port: u32);
    /// Notifies the remote end of a local port.
    fn notify(&mut self, local_port: u32);
    /// Prints one line on the domain's console.
    fn log(&mut self, line: fmt::Arguments<'_>);
}

/// One served domain.
struct Connection<Page> {
    domid: u16,
    /// Which build of the domain this is (`DomainEntry::instance`).
    instance: u32,
    name: String,
    conn: ConnId,
    page: Page,
    ring: ServerRing,
    port: u32,
    framer: Framer,
    output: OutputQueue,
    /// Requests may be waiting (the port fired, or the last turn stopped at its budget).
    backlog: bool,
    /// Something was queued for it this turn: send and notify.
    dirty: bool,
}

/// Why a domain is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Ring indices or message framing broken.
    Protocol,
    /// Its output queue overflowed.
    Overflow,
    /// The store closed its connection (a `RELEASE`).
    Released,
}

/// The xenstore service.
pub struct Server<P: Platform> {
    store: Store,
    self_domid: u16,
    /// The server's own privileged connection (it is the store's toolstack).
    toolstack: ConnId,
    /// Request id of the toolstack's next request.
    next_req_id: u32,
    conns: Vec<Connection<P::Page>>,
    /// Faults found during the current operation, acted on by [`Server::settle`].
    faults: Vec<(u16, Fault)>,
    /// Replies to the toolstack's own requests, checked by [`Server::settle`].
    toolstack_replies: Vec<Vec<u8>>,
    /// Builds (id, instance) dropped for a fault: not served again while they are listed.
    banned: Vec<(u16, u32)>,
    /// Domains dropped while restarting under the same id, with their names: their homes
    /// are kept until their next build is connected or they are gone for good.
    returning: Vec<(u16, String)>,
    /// The system's devices (from the command line's `vbds=` and `vifs=`), then those the
    /// toolstack added under [`TOOL_DEVICES_DIR`].
    devices: Vec<Device>,
    /// How many of `devices` came from the command line.
    boot_devices: usize,
    /// A privileged connection made a request: look at [`TOOL_DEVICES_DIR`] again.
    tool_devices_dirty: bool,
    /// The frontend names under [`TOOL_DEVICES_DIR`]: their boot devices are not written.
    tool_names: Vec<String>,
}

/// A device of the device tables, and the (frontend, backend) domain ids its xenstore
/// entries were last written for.
struct Device {
    kind: DeviceSpec,
    written: Option<(u16, u16)>,
    /// Its backend (of `written`) is gone for good and the frontend was told so (the
    /// backend's `state` node is `6`, owned by this domain).
    closed: bool,
}

/// A virtual block device or a network interface.
#[derive(Clone, Debug)]
enum DeviceSpec {
    Vbd(VbdSpec),
    Vif(VifSpec),
}

impl DeviceSpec {
    /// The xenbus device type: the directory under `backend/` and `device/`.
    /// Whether both describe the same device with the same settings.
    fn same_as(&self, other: &DeviceSpec) -> bool {
        match (self, other) {
            (Self::Vbd(a), Self::Vbd(b)) => a == b,
            (Self::Vif(a), Self::Vif(b)) => a == b,
            _ => false,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Vbd(_) => "vbd",
            Self::Vif(_) => "vif",
        }
    }

    fn frontend(&self) -> &str {
        match self {
            Self::Vbd(vbd) => &vbd.frontend,
            Self::Vif(vif) => &vif.frontend,
        }
    }

    fn backend(&self) -> &str {
        match self {
            Self::Vbd(vbd) => &vbd.backend,
            Self::Vif(vif) => &vif.backend,
        }
    }

    /// Its id among its frontend's devices of its type.
    fn id(&self) -> u32 {
        match self {
            Self::Vbd(vbd) => vbd.vdev,
            Self::Vif(vif) => vif.handle,
        }
    }

    /// The backend keys beyond `frontend`, `frontend-id`, `online` and `state`.
    fn backend_keys(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Vbd(vbd) => {
                let mode = if vbd.writable { "w" } else { "r" };
                alloc::vec![
                    ("mode", String::from(mode)),
                    ("device-type", String::from("disk")),
                    (
                        "params",
                        format!("{}@{}+{}", vbd.device, vbd.start, vbd.sectors)
                    ),
                    ("device", vbd.device.clone()),
                    ("start-sector", format!("{}", vbd.start)),
                    ("sectors", format!("{}", vbd.sectors)),
                ]
            }
            Self::Vif(vif) => alloc::vec![
                ("handle", format!("{}", vif.handle)),
                ("mac", format!("{}", vif.mac)),
                ("bridge", vif.bridge.clone()),
            ],
        }
    }

    /// The frontend keys beyond `backend`, `backend-id` and `state`.
    fn frontend_keys(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Vbd(vbd) => alloc::vec![
                ("virtual-device", format!("{}", vbd.vdev)),
                ("device-type", String::from("disk")),
            ],
            Self::Vif(vif) => alloc::vec![
                ("handle", format!("{}", vif.handle)),
                ("mac", format!("{}", vif.mac)),
            ],
        }
    }

    /// The end of its log line.
    fn summary(&self) -> String {
        match self {
            Self::Vbd(vbd) => format!(
                "{} {}",
                if vbd.writable {
                    "read-write"
                } else {
                    "read-only"
                },
                if vbd.sectors == 0 {
                    format!("{} from sector {}", vbd.device, vbd.start)
                } else {
                    format!("{} sectors {}+{}", vbd.device, vbd.start, vbd.sectors)
                },
            ),
            Self::Vif(vif) => format!("mac {}, bridge {}", vif.mac, vif.bridge),
        }
    }
}

impl<P: Platform> Server<P> {
    /// A store whose toolstack is this domain (`self_domid`), with `/local/names` created
    /// readable by all. Serves no domain until [`Server::sync`].
    pub fn new(platform: &mut P, self_domid: u16) -> Self {
        let mut store = Store::new(Quotas::default());
        let toolstack = store.add_connection(self_domid, true);
        let mut server = Self {
            store,
            self_domid,
            toolstack,
            next_req_id: 1,
            conns: Vec::new(),
            faults: Vec::new(),
            toolstack_replies: Vec::new(),
            banned: Vec::new(),
            returning: Vec::new(),
            devices: Vec::new(),
            boot_devices: 0,
            tool_devices_dirty: false,
            tool_names: Vec::new(),
        };
        server.toolstack_request(platform, MessageType::Mkdir, &[NAMES_DIR.as_bytes()]);
        server.set_world_readable(platform, NAMES_DIR);
        server.settle(platform);
        server
    }

    /// Sets the device tables: each device's frontend and backend entries are written once
    /// both its domains are served (see [`Server::sync`]).
    pub fn set_devices(&mut self, vbds: Vec<VbdSpec>, vifs: Vec<VifSpec>) {
        let vbds = vbds.into_iter().map(DeviceSpec::Vbd);
        let vifs = vifs.into_iter().map(DeviceSpec::Vif);
        self.devices = vbds
            .chain(vifs)
            .map(|kind| Device {
                kind,
                written: None,
                closed: false,
            })
            .collect();
        self.boot_devices = self.devices.len();
    }

    /// The devices the toolstack added under [`TOOL_DEVICES_DIR`], in the store's order.
    /// A node that does not decode, or whose entries name another frontend, is skipped with a
    /// log line.
    fn tool_devices(&self, platform: &mut P) -> (Vec<String>, Vec<DeviceSpec>) {
        let prefix = format!("{TOOL_DEVICES_DIR}/");
        let mut out = Vec::new();
        let mut names = Vec::new();
        for (path, node) in self.store.tree().iter() {
            let Some(name) = path.strip_prefix(&prefix) else {
                continue;
            };
            if name.contains('/') {
                continue;
            }
            let text = String::from_utf8_lossy(&node.value);
            let mut found = Vec::new();
            let mut bad = None;
            for word in text.split_whitespace() {
                if let Some(table) = word.strip_prefix("vbds=") {
                    match crate::devices::decode_vbds(table) {
                        Ok(list) => found.extend(list.into_iter().map(DeviceSpec::Vbd)),
                        Err(e) => bad = Some(format!("{e}")),
                    }
                } else if let Some(table) = word.strip_prefix("vifs=") {
                    match crate::devices::decode_vifs(table) {
                        Ok(list) => found.extend(list.into_iter().map(DeviceSpec::Vif)),
                        Err(e) => bad = Some(format!("{e}")),
                    }
                } else {
                    bad = Some(format!("`{word}` is neither vbds= nor vifs="));
                }
            }
            if found.iter().any(|d| d.frontend() != name) {
                bad = Some(format!("an entry is for another domain than {name}"));
            }
            match bad {
                Some(why) => platform.log(format_args!("xenstore: {path} refused: {why}")),
                None => {
                    names.push(String::from(name));
                    out.extend(found);
                }
            }
        }
        (names, out)
    }

    /// Rebuilds the run-time part of the device table from [`TOOL_DEVICES_DIR`], keeping
    /// what was written for devices that stay, and removing the entries of those that went.
    fn sync_tool_devices(&mut self, platform: &mut P) {
        let (names, wanted) = self.tool_devices(platform);
        self.tool_names = names;
        let old: Vec<Device> = self.devices.drain(self.boot_devices..).collect();
        let mut kept: Vec<Device> = Vec::new();
        for kind in wanted {
            let (written, closed) = old
                .iter()
                .find(|d| d.kind.same_as(&kind))
                .map_or((None, false), |d| (d.written, d.closed));
            kept.push(Device {
                kind,
                written,
                closed,
            });
        }
        let mut emptied = Vec::new();
        for gone in old
            .iter()
            .filter(|d| !kept.iter().any(|k| k.kind.same_as(&d.kind)))
        {
            if let Some((fe, be)) = gone.written {
                let (kind, id) = (gone.kind.kind(), gone.kind.id());
                for dir in [
                    format!("/local/domain/{be}/backend/{kind}/{fe}/{id}"),
                    format!("/local/domain/{fe}/device/{kind}/{id}"),
                ] {
                    self.toolstack_request(platform, MessageType::Rm, &[dir.as_bytes()]);
                }
                if gone.closed {
                    emptied.push(be);
                }
            }
        }
        let added = kept.iter().filter(|k| k.written.is_none()).count();
        if added > 0 || kept.len() != old.len() {
            platform.log(format_args!(
                "xenstore: {} devices added by the toolstack ({} new)",
                kept.len(),
                added
            ));
        }
        self.devices.extend(kept);
        for be in emptied {
            self.remove_left_home(platform, be);
        }
        self.write_devices(platform);
    }

    /// The store (for tests and diagnostics).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How many domains are served.
    pub fn served(&self) -> usize {
        self.conns.len()
    }

    /// The domains served, in the order they were connected.
    pub fn served_domains(&self) -> Vec<u16> {
        self.conns.iter().map(|c| c.domid).collect()
    }

    /// The builds served (id and instance), in the order they were connected.
    fn served_builds(&self) -> Vec<Served> {
        self.conns
            .iter()
            .map(|c| Served {
                domid: c.domid,
                instance: c.instance,
            })
            .collect()
    }

    /// The domains dropped while restarting under the same id whose next build is not
    /// served yet (their homes are kept).
    pub fn returning(&self) -> Vec<u16> {
        self.returning.iter().map(|(domid, _)| *domid).collect()
    }

    fn is_returning(&self, domid: u16) -> bool {
        self.returning.iter().any(|(d, _)| *d == domid)
    }

    /// The local ports of the served domains.
    pub fn ports(&self) -> Vec<u32> {
        self.conns.iter().map(|c| c.port).collect()
    }

    /// Whether some connection has requests left over from its last turn.
    pub fn has_backlog(&self) -> bool {
        self.conns.iter().any(|c| c.backlog)
    }

    /// Re-reads the domain list and connects and drops domains to match; prints
    /// `xenstore: serving <n> domains`.
    pub fn sync(&mut self, platform: &mut P) {
        let mut entries = alloc::vec![DomainEntry::default(); MAX_LISTED_DOMAINS];
        let count = match platform.list_domains(&mut entries) {
            Ok(count) => count.min(MAX_LISTED_DOMAINS),
            Err(error) => {
                platform.log(format_args!("xenstore: cannot list domains: error {error}"));
                return;
            }
        };
        let listed = &entries[..count];
        self.banned.retain(|&(domid, instance)| {
            listed
                .iter()
                .any(|entry| entry.domid == domid && entry.instance == instance)
        });
        let plan = roster::plan(&self.served_builds(), &self.returning(), listed, |entry| {
            entry.store_port
        });
        for dropped in plan.drop {
            self.drop_domain(platform, dropped.domid, dropped.restarting);
        }
        for candidate in plan.connect {
            if !self.banned.contains(&(candidate.domid, candidate.instance)) {
                self.connect(platform, candidate);
            }
        }
        self.write_devices(platform);
        self.settle(platform);
        // A new connection may have requests waiting already.
        self.run_backlog(platform);
        platform.log(format_args!(
            "xenstore: serving {} domains",
            self.conns.len()
        ));
    }

    /// Serves the connection whose local port is `port` (the port fired), and any backlog.
    /// Returns false if no served domain has that port.
    pub fn service(&mut self, platform: &mut P, port: u32) -> bool {
        let Some(connection) = self.conns.iter_mut().find(|c| c.port == port) else {
            return false;
        };
        connection.backlog = true;
        self.run_backlog(platform);
        true
    }

    /// Gives every connection with a backlog one turn, then sends and notifies.
    pub fn run_backlog(&mut self, platform: &mut P) {
        for index in 0..self.conns.len() {
            if self.conns[index].backlog {
                self.turn(index);
            }
        }
        if core::mem::take(&mut self.tool_devices_dirty) {
            self.sync_tool_devices(platform);
        }
        self.settle(platform);
    }

    /// One connection's turn: send queued output, then read and handle requests.
    fn turn(&mut self, index: usize) {
        let mut buffer = [0u8; 1024];
        let mut handled = 0;
        loop {
            let connection = &mut self.conns[index];
            let domid = connection.domid;
            if send(connection).is_err() {
                self.faults.push((domid, Fault::Protocol));
                return;
            }
            if !connection.output.ready_for_request() {
                // Served again when it reads its ring and notifies.
                connection.backlog = false;
                return;
            }
            if handled == MESSAGES_PER_TURN {
                return;
            }
            let want = connection.framer.bytes_needed().min(buffer.len());
            let count = match connection
                .ring
                .requests
                .read(&connection.page, &mut buffer[..want])
            {
                Ok(count) => count,
                Err(_) => {
                    self.faults.push((domid, Fault::Protocol));
                    return;
                }
            };
            if count == 0 {
                connection.backlog = false;
                return;
            }
            // Tell the client its request space moved.
            connection.dirty = true;
            // `want` never exceeds what finishes the current message, so all is taken.
            let message = match connection.framer.feed(&buffer[..count]) {
                Ok(fed) => fed.message,
                Err(_) => {
                    self.faults.push((domid, Fault::Protocol));
                    return;
                }
            };
            let Some(message) = message else { continue };
            let conn = connection.conn;
            handled += 1;
            if self
                .store
                .connection_info(conn)
                .is_some_and(|(_, privileged)| privileged)
            {
                self.tool_devices_dirty = true;
            }
            match self.store.handle(conn, &message) {
                Ok(outgoing) => self.deliver(outgoing),
                Err(_) => {
                    self.faults.push((domid, Fault::Protocol));
                    return;
                }
            }
        }
    }

    /// Queues what the store produced on the destination connections.
    fn deliver(&mut self, outgoing: Vec<Outgoing>) {
        for item in outgoing {
            match item {
                Outgoing::Message { conn, bytes } if conn == self.toolstack => {
                    self.toolstack_replies.push(bytes);
                }
                Outgoing::Message { conn, bytes } => {
                    let Some(target) = self.conns.iter_mut().find(|c| c.conn == conn) else {
                        continue;
                    };
                    target.dirty = true;
                    if target.output.push(&bytes).is_err() {
                        self.faults.push((target.domid, Fault::Overflow));
                    }
                }
                Outgoing::Close { conn } => {
                    if let Some(target) = self.conns.iter().find(|c| c.conn == conn) {
                        self.faults.push((target.domid, Fault::Released));
                    }
                }
                // Only the toolstack (this server) may INTRODUCE, and it does not:
                // domains come from the microvisor's list.
                Outgoing::Introduce { .. } => {}
            }
        }
    }

    /// Ends an operation: sends and notifies every connection that got output, and drops
    /// the domains found at fault (which can find more: watchers overflowing on the
    /// events of a drop), until nothing is left to do.
    fn settle(&mut self, platform: &mut P) {
        loop {
            self.report_toolstack_replies(platform);
            for connection in &mut self.conns {
                if !connection.dirty {
                    continue;
                }
                if send(connection).is_err() {
                    self.faults.push((connection.domid, Fault::Protocol));
                    continue;
                }
                connection.dirty = false;
                platform.notify(connection.port);
            }
            let faults = core::mem::take(&mut self.faults);
            if faults.is_empty() {
                return;
            }
            for (domid, fault) in faults {
                let Some(connection) = self.conns.iter().find(|c| c.domid == domid) else {
                    continue;
                };
                let name = connection.name.clone();
                let instance = connection.instance;
                // A domain being torn down (or already rebuilt under its id) may lose its
                // ring page under us: that is a departure, not a fault of its own.
                if fault != Fault::Released {
                    if let Some(restarting) = departure(platform, domid, instance) {
                        self.drop_domain(platform, domid, restarting);
                        continue;
                    }
                }
                match fault {
                    Fault::Protocol => platform.log(format_args!(
                        "xenstore: domain {domid} ({name}) broke the ring protocol, disconnected"
                    )),
                    Fault::Overflow => platform.log(format_args!(
                        "xenstore: domain {domid} ({name}) does not read its ring, disconnected"
                    )),
                    Fault::Released => platform.log(format_args!(
                        "xenstore: domain {domid} ({name}) released, disconnected"
                    )),
                }
                self.banned.push((domid, instance));
                self.drop_domain(platform, domid, false);
            }
        }
    }

    fn connect(&mut self, platform: &mut P, candidate: Candidate) {
        let Candidate {
            domid,
            instance,
            name,
            port: remote_port,
            control,
        } = candidate;
        let page = match platform.map_ring(domid) {
            Ok(page) => page,
            Err(error) => {
                platform.log(format_args!(
                    "xenstore: cannot map the ring of domain {domid} ({name}): error {error}"
                ));
                return;
            }
        };
        let Ok(ring) = ServerRing::attach(&page) else {
            platform.unmap_ring(domid, page);
            platform.log(format_args!(
                "xenstore: domain {domid} ({name}) broke the ring protocol, disconnected"
            ));
            self.banned.push((domid, instance));
            // Not served while this build lives: a home kept for it goes.
            self.drop_domain(platform, domid, false);
            return;
        };
        let port = match platform.bind(domid, remote_port) {
            Ok(port) => port,
            Err(error) => {
                platform.unmap_ring(domid, page);
                platform.log(format_args!(
                    "xenstore: cannot bind port {remote_port} of domain {domid} ({name}): error {error}"
                ));
                return;
            }
        };
        let home = format!("/local/domain/{domid}");
        let returning = self
            .returning
            .iter()
            .position(|(d, _)| *d == domid)
            .map(|index| self.returning.remove(index).1);
        match &returning {
            // The next build of a domain restarted under this id: its home (and the device
            // entries under it) is what it resumes from. Introducing it again only rewrites
            // `name` and `domid`.
            Some(old_name) => {
                if old_name != &name && valid_name(old_name) {
                    self.remove_name_entry(platform, old_name, domid);
                }
            }
            // A new domain under an id whose home was left over (the closed devices of a
            // backend gone for good): it starts from a clean home.
            None => {
                if self.store.read(&home).is_some() {
                    self.toolstack_request(platform, MessageType::Rm, &[home.as_bytes()]);
                }
            }
        }
        let introduced = self.store.introduce_domain(domid, &name);
        // The control domain is the toolstack: its connection is privileged.
        let conn = self.store.add_connection(domid, control);
        self.conns.push(Connection {
            domid,
            instance,
            name: name.clone(),
            conn,
            page,
            ring,
            port,
            framer: Framer::new(),
            output: OutputQueue::new(self.store.quotas().max_output_bytes),
            // Look at the ring at once: requests may have been written before we came.
            backlog: true,
            // Notify once: a client waiting for us looks at the ring again.
            dirty: true,
        });
        match introduced {
            Ok(outgoing) => self.deliver(outgoing),
            Err(error) => platform.log(format_args!(
                "xenstore: cannot introduce domain {domid} ({name}): {error}"
            )),
        }
        if valid_name(&name) {
            let path = format!("{NAMES_DIR}/{name}");
            // A returning domain's entry is already there: left alone, it fires no watch.
            if self.store.read(&path) != Some(decimal(domid).as_slice()) {
                self.toolstack_write(platform, &path, decimal(domid).as_slice());
                self.set_world_readable(platform, &path);
            }
        } else {
            platform.log(format_args!(
                "xenstore: domain {domid} ({name}): name not usable in a path, no {NAMES_DIR} entry"
            ));
        }
    }

    /// Drops a served domain: removes its transport (connection, page, port) and releases
    /// it in the store. If it is `restarting` under the same id, its nodes stay and it is
    /// awaited; otherwise (or for an awaited domain that is not coming back) its home and
    /// names entry are removed and the devices it served are closed.
    fn drop_domain(&mut self, platform: &mut P, domid: u16, restarting: bool) {
        let connection = self
            .conns
            .iter()
            .position(|c| c.domid == domid)
            .map(|index| self.conns.remove(index));
        let awaited = self.returning.iter().position(|(d, _)| *d == domid);
        let name = match (&connection, awaited) {
            (Some(connection), _) => connection.name.clone(),
            (None, Some(index)) if !restarting => self.returning[index].1.clone(),
            (None, _) => return,
        };
        if let Some(connection) = connection {
            platform.close(connection.port);
            platform.unmap_ring(domid, connection.page);
            let outgoing = self.store.release_domain(domid);
            self.deliver(outgoing);
        }
        if restarting {
            if awaited.is_none() {
                self.returning.push((domid, name.clone()));
            }
            platform.log(format_args!(
                "xenstore: domain {domid} ({name}) is restarting, its entries are kept"
            ));
            return;
        }
        if let Some(index) = awaited {
            self.returning.remove(index);
            platform.log(format_args!(
                "xenstore: domain {domid} ({name}) did not come back, its entries are removed"
            ));
        }
        let home = format!("/local/domain/{domid}");
        self.toolstack_request(platform, MessageType::Rm, &[home.as_bytes()]);
        if valid_name(&name) {
            self.remove_name_entry(platform, &name, domid);
        }
        self.close_devices(platform, domid);
    }

    /// Removes `/local/names/<name>` if it is still `domid`'s: a successor may have the
    /// name now.
    fn remove_name_entry(&mut self, platform: &mut P, name: &str, domid: u16) {
        let path = format!("{NAMES_DIR}/{name}");
        if self.store.read(&path) == Some(decimal(domid).as_slice()) {
            self.toolstack_request(platform, MessageType::Rm, &[path.as_bytes()]);
        }
    }

    /// Tells the frontends of the devices `be` served (it is gone for good) that their
    /// backend closed: each device whose frontend is still there gets its backend `state`
    /// node written `6` (`XenbusStateClosed`), owned by this domain and readable by the
    /// frontend, once.
    fn close_devices(&mut self, platform: &mut P, be: u16) {
        for index in 0..self.devices.len() {
            let Some((fe, written_be)) = self.devices[index].written else {
                continue;
            };
            if written_be != be || self.devices[index].closed {
                continue;
            }
            if !self.conns.iter().any(|c| c.domid == fe) && !self.is_returning(fe) {
                // Its frontend is gone too: `write_devices` forgets it.
                continue;
            }
            let device = self.devices[index].kind.clone();
            let (kind, id) = (device.kind(), device.id());
            let back = format!("/local/domain/{be}/backend/{kind}/{fe}/{id}");
            let closed = [("state", String::from("6"))];
            self.write_owned_dir(platform, &back, &closed, self.self_domid, fe);
            self.devices[index].closed = true;
            platform.log(format_args!(
                "xenstore: {kind} {id} of {} ({fe}): backend {} ({be}) is gone, device closed",
                device.frontend(),
                device.backend()
            ));
        }
    }

    /// Removes the home of a domain that is neither served nor awaited once no closed
    /// device's `state` node is left in it.
    fn remove_left_home(&mut self, platform: &mut P, be: u16) {
        let in_use = self.conns.iter().any(|c| c.domid == be)
            || self.is_returning(be)
            || self
                .devices
                .iter()
                .any(|d| d.closed && d.written.is_some_and(|(_, b)| b == be));
        if !in_use {
            let home = format!("/local/domain/{be}");
            self.toolstack_request(platform, MessageType::Rm, &[home.as_bytes()]);
        }
    }

    /// Writes the xenstore entries of every device (virtual block device or network
    /// interface) whose frontend and backend are both served and that were not written for
    /// this pair yet, as Xen's toolstack does before the guest probes (`XEN-ABI.md` §3.5 and
    /// §3.6, step 0):
    /// - vbd backend `/local/domain/<be>/backend/vbd/<fe>/<vdev>/`: `frontend`,
    ///   `frontend-id`, `online`, `state` 1, `mode` (`r`/`w`), `device-type`, and the slice
    ///   the backend serves: `params` (`<device>@<start>+<sectors>`), `device`,
    ///   `start-sector`, `sectors` (0: to the end of the device); frontend
    ///   `/local/domain/<fe>/device/vbd/<vdev>/`: `backend`, `backend-id`, `state` 1,
    ///   `virtual-device`, `device-type` `disk`;
    /// - vif backend `/local/domain/<be>/backend/vif/<fe>/<handle>/`: `frontend`,
    ///   `frontend-id`, `online`, `state` 1, `handle`, `mac`, `bridge`; frontend
    ///   `/local/domain/<fe>/device/vif/<handle>/`: `backend`, `backend-id`, `state` 1,
    ///   `handle`, `mac`.
    ///
    /// The backend directory is owned by the backend and readable by the frontend, the
    /// frontend's the other way round. A device whose backend was restarted under the same
    /// id is not written again: the next build resumes from the entries it left. A device
    /// whose backend came back under a new id (or was closed, see [`Server::close_devices`],
    /// and a backend of that name is served again) only gets its backend entries again and
    /// the frontend's `backend` and `backend-id` updated. A device whose frontend is gone
    /// is forgotten (the frontend's home went with it) and its backend directory removed,
    /// which tells the backend to let go of it.
    fn write_devices(&mut self, platform: &mut P) {
        // Backends gone for good whose closed devices went: their homes may go.
        let mut emptied = Vec::new();
        for index in 0..self.devices.len() {
            let device = self.devices[index].kind.clone();
            // A boot device whose frontend name the toolstack gave devices of its own (a
            // domain created under a boot domain's name) is not written: the toolstack's
            // devices replace the boot ones for that name.
            let shadowed = index < self.boot_devices
                && self.tool_names.iter().any(|name| name == device.frontend());
            let fe = if shadowed {
                None
            } else {
                self.served_id(device.frontend())
            };
            // A frontend restarting under its id keeps its devices: nothing changes until
            // its next build is served or it is gone for good.
            if !shadowed
                && fe.is_none()
                && self
                    .returning
                    .iter()
                    .any(|(_, name)| name == device.frontend())
            {
                continue;
            }
            let be = self.served_id(device.backend());
            let kind = device.kind();
            let written = self.devices[index].written;
            let closed = self.devices[index].closed;
            if let Some((old_fe, old_be)) = written {
                if fe != Some(old_fe) {
                    // The backend's directory is there if the backend is served, awaited
                    // (restarting under its id) or gone with its devices closed.
                    if be == Some(old_be) || closed || self.is_returning(old_be) {
                        let dir = format!("/local/domain/{old_be}/backend/{kind}/{old_fe}");
                        self.toolstack_request(platform, MessageType::Rm, &[dir.as_bytes()]);
                    }
                    if closed {
                        emptied.push(old_be);
                    }
                    self.devices[index].written = None;
                    self.devices[index].closed = false;
                } else if closed && be.is_some_and(|be| be != old_be) {
                    // Its backend is back under another id: the closed node goes.
                    let id = device.id();
                    let dir = format!("/local/domain/{old_be}/backend/{kind}/{old_fe}/{id}");
                    self.toolstack_request(platform, MessageType::Rm, &[dir.as_bytes()]);
                    emptied.push(old_be);
                }
            }
            let (Some(fe), Some(be)) = (fe, be) else {
                continue;
            };
            if self.devices[index].written == Some((fe, be)) && !self.devices[index].closed {
                continue;
            }
            let frontend_known = self.devices[index].written.is_some();
            let id = device.id();
            let back = format!("/local/domain/{be}/backend/{kind}/{fe}/{id}");
            let front = format!("/local/domain/{fe}/device/{kind}/{id}");
            for dir in [
                format!("/local/domain/{be}/backend"),
                format!("/local/domain/{be}/backend/{kind}"),
                format!("/local/domain/{be}/backend/{kind}/{fe}"),
            ] {
                self.toolstack_request(platform, MessageType::Mkdir, &[dir.as_bytes()]);
            }
            let mut back_keys = alloc::vec![
                ("frontend", front.clone()),
                ("frontend-id", format!("{fe}")),
                ("online", String::from("1")),
                ("state", String::from("1")),
            ];
            back_keys.extend(device.backend_keys());
            self.write_owned_dir(platform, &back, &back_keys, be, fe);
            if frontend_known {
                self.toolstack_write(platform, &format!("{front}/backend"), back.as_bytes());
                let id = format!("{be}");
                self.toolstack_write(platform, &format!("{front}/backend-id"), id.as_bytes());
            } else {
                for dir in [
                    format!("/local/domain/{fe}/device"),
                    format!("/local/domain/{fe}/device/{kind}"),
                ] {
                    self.toolstack_request(platform, MessageType::Mkdir, &[dir.as_bytes()]);
                }
                let mut front_keys = alloc::vec![
                    ("backend", back.clone()),
                    ("backend-id", format!("{be}")),
                    ("state", String::from("1")),
                ];
                front_keys.extend(device.frontend_keys());
                self.write_owned_dir(platform, &front, &front_keys, fe, be);
            }
            platform.log(format_args!(
                "xenstore: {kind} {id} of {} ({fe}) served by {} ({be}), {}",
                device.frontend(),
                device.backend(),
                device.summary()
            ));
            self.devices[index].written = Some((fe, be));
            self.devices[index].closed = false;
        }
        for be in emptied {
            self.remove_left_home(platform, be);
        }
    }

    /// Writes `keys` under `dir`, then makes `dir` and each key owned by `owner` and
    /// readable by `reader` (and nobody else).
    fn write_owned_dir(
        &mut self,
        platform: &mut P,
        dir: &str,
        keys: &[(&str, String)],
        owner: u16,
        reader: u16,
    ) {
        self.toolstack_request(platform, MessageType::Mkdir, &[dir.as_bytes()]);
        let owner_perm = format!("n{owner}");
        let reader_perm = format!("r{reader}");
        let perms = [owner_perm.as_bytes(), reader_perm.as_bytes()];
        let set = |server: &mut Self, platform: &mut P, path: &str| {
            let mut args: Vec<&[u8]> = Vec::from([path.as_bytes()]);
            args.extend_from_slice(&perms);
            server.toolstack_request(platform, MessageType::SetPerms, &args);
        };
        set(self, platform, dir);
        for (key, value) in keys {
            let path = format!("{dir}/{key}");
            self.toolstack_write(platform, &path, value.as_bytes());
            set(self, platform, &path);
        }
    }

    /// The id of the served domain called `name`.
    fn served_id(&self, name: &str) -> Option<u16> {
        self.conns.iter().find(|c| c.name == name).map(|c| c.domid)
    }

    fn toolstack_request(&mut self, platform: &mut P, kind: MessageType, args: &[&[u8]]) {
        let message = wire::encode_request(kind, self.take_req_id(), 0, args);
        self.toolstack_send(platform, &message);
    }

    fn toolstack_write(&mut self, platform: &mut P, path: &str, value: &[u8]) {
        let message = wire::encode_write(self.take_req_id(), 0, path.as_bytes(), value);
        self.toolstack_send(platform, &message);
    }

    /// Sets `path`'s access list to "owned by this domain, readable by all".
    fn set_world_readable(&mut self, platform: &mut P, path: &str) {
        let perm = format!("r{}", self.self_domid);
        self.toolstack_request(
            platform,
            MessageType::SetPerms,
            &[path.as_bytes(), perm.as_bytes()],
        );
    }

    /// Handles a request of the toolstack connection; its reply is checked by `settle`.
    fn toolstack_send(&mut self, platform: &mut P, message: &[u8]) {
        match self.store.handle(self.toolstack, message) {
            Ok(outgoing) => self.deliver(outgoing),
            Err(error) => platform.log(format_args!("xenstore: internal request refused: {error}")),
        }
    }

    fn take_req_id(&mut self) -> u32 {
        let id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1).max(1);
        id
    }

    /// Prints the toolstack's failed requests (a bug if it ever happens).
    fn report_toolstack_replies(&mut self, platform: &mut P) {
        for bytes in core::mem::take(&mut self.toolstack_replies) {
            let Ok((header, payload)) = wire::split_message(&bytes) else {
                continue;
            };
            if header.kind == MessageType::Error as u32 {
                let name = payload.strip_suffix(&[0]).unwrap_or(payload);
                platform.log(format_args!(
                    "xenstore: internal request {} failed: {}",
                    header.req_id,
                    String::from_utf8_lossy(name)
                ));
            }
        }
    }
}

/// Whether a faulted connection's domain (`domid`, build `instance`) has left: `None` if
/// this build is listed alive (the fault is its own), `Some(restarting)` if it is gone or
/// dying, `restarting` when it is coming back under the same id (listed with
/// `DOMAIN_FLAG_RESTARTING`, or alive as another build). `None` too if the list fails.
fn departure<P: Platform>(platform: &mut P, domid: u16, instance: u32) -> Option<bool> {
    let mut entries = alloc::vec![DomainEntry::default(); MAX_LISTED_DOMAINS];
    let count = platform
        .list_domains(&mut entries)
        .ok()?
        .min(MAX_LISTED_DOMAINS);
    let listed: Vec<&DomainEntry> = entries[..count]
        .iter()
        .filter(|entry| entry.domid == domid)
        .collect();
    let alive = |entry: &DomainEntry| entry.flags & DOMAIN_FLAG_DYING == 0;
    if listed
        .iter()
        .any(|entry| alive(entry) && entry.instance == instance)
    {
        return None;
    }
    Some(listed.iter().any(|entry| {
        entry.flags & DOMAIN_FLAG_RESTARTING != 0 || (alive(entry) && entry.instance != instance)
    }))
}

/// Sends as much of the connection's queue as its response ring takes.
fn send<Page: SharedPage>(connection: &mut Connection<Page>) -> Result<(), StreamError> {
    while !connection.output.is_empty() {
        let (first, _) = connection.output.as_slices();
        let written = connection.ring.responses.write(&connection.page, first)?;
        if written == 0 {
            break;
        }
        connection.output.consume(written);
    }
    Ok(())
}

/// The decimal form of a domain id, as the store writes it.
fn decimal(domid: u16) -> Vec<u8> {
    let mut text = Vec::new();
    wire::push_decimal(&mut text, u64::from(domid));
    text
}

/// Whether a domain name can be a path component (the store's characters).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
}
