//! The console backend: one connection per served domain's console ring, output printed as
//! labelled lines on the UART, UART input routed by [`crate::input`]. Everything that
//! touches the machine goes through [`Platform`], so it runs on the host in tests.
//!
//! # Serving a domain
//!
//! On [`Backend::sync`] (at start and on every `VIRQ_DOMAIN_CHANGE`) the backend lists the
//! domains ([`crate::roster`]); for each new one it maps its console page (its grant ref 0)
//! read/write, checks the ring's indices and binds its console port. A domain gone or dying
//! is dropped: its partial line is printed, input is detached from it, the page unmapped
//! and the port closed. Then: `[console] serving <n> domains`.
//!
//! Each connection is one build of its domain (its id and `instance`). A domain restarted
//! under the same id (listed `DOMAIN_FLAG_DYING | DOMAIN_FLAG_RESTARTING`, or alive again
//! with another instance) is dropped the same way, except that input stays attached to it
//! (`[console] <name> is restarting; still attached`, when it is the attached one): its next
//! build, on a new console page and port, is connected like any new domain and gets the
//! input typed from then on. What was typed but not delivered to the old build is
//! dropped with it, and its partial line was printed, so the builds' output never mixes.
//! If it does not come back (the microvisor gives up on it), input is detached then.
//!
//! # Output and input
//!
//! When a connection's port fires ([`Backend::service`]), everything in its `out[]` is
//! drained into its [`LineAssembler`] and each line is printed as `[<name>] <line>`; the
//! domain is notified that `out[]` has room again. Input bytes ([`Backend::uart_input`])
//! for the attached domain are queued (at most [`INPUT_QUEUE_MAX`] bytes; more are dropped,
//! as a UART drops bytes nobody reads) and moved into its `in[]` ring, with a
//! notification, as far as the ring has room. [`Backend::tick`] (every poll period)
//! retries queued input and shows the attached domain's partial line (a shell prompt) once
//! it has been quiet for [`PROMPT_QUIET_TICKS`] ticks.
//!
//! # The attach line
//!
//! Bytes from the second UART ([`Backend::attach_input`]) go through [`crate::attach`]: a
//! client (the host's `xl console`) attaches to one domain by name, then gets that domain's
//! output bytes raw (as well as the labelled lines on the first UART) and its bytes go to
//! the domain's input, through the same queue as the first UART's. The output is queued
//! (bounded, dropped and counted when the client does not read) and moved to the UART
//! whenever the backend has drained something and on every tick. The first UART says
//! `[console] xl console attached to <name>`, `[console] xl console left <name>`, and at
//! most once a second `[console] xl console: <n> bytes of output dropped (the client is not
//! reading)`.
//!
//! # Faults
//!
//! An index out of range in either direction is a protocol error: the domain is dropped
//! with `[console] domain <id> (<name>) broke the ring protocol, disconnected` and not served
//! again while it lives.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use microvisor_abi::microvisor_op::{DomainEntry, DOMAIN_FLAG_DYING, DOMAIN_FLAG_RESTARTING};
use xen_ring::SharedPage;

use crate::attach::{self, AttachLine};
use crate::cons_ring::BackendRing;
use crate::input::{Effect, Input};
use crate::lines::{format_line, LineAssembler};
use crate::roster::{self, Candidate, Served};
use crate::stream_ring::StreamError;

/// Room for the domain list the microvisor returns.
pub const MAX_LISTED_DOMAINS: usize = 256;

/// Input bytes queued for the attached domain while its `in[]` ring is full.
pub const INPUT_QUEUE_MAX: usize = 4096;

/// Most reads of one domain's `out[]` per turn (the rest waits for the next tick).
pub const DRAIN_READS_PER_TURN: usize = 4;

/// Ticks without output after which the attached domain's partial line is shown.
pub const PROMPT_QUIET_TICKS: u32 = 5;

/// Fewest ticks between two reports of output dropped on the attach line.
pub const DROP_REPORT_TICKS: u32 = 50;

/// What the backend needs from the machine (the runtime and the UART in the domain, fakes
/// in tests).
pub trait Platform {
    /// A mapped console page.
    type Page: SharedPage;
    /// Lists the live domains into `out` (`MVOP_LIST_DOMAINS`); returns how many.
    fn list_domains(&mut self, out: &mut [DomainEntry]) -> Result<usize, i64>;
    /// Maps `domid`'s console page (its grant ref 0) read/write.
    fn map_ring(&mut self, domid: u16) -> Result<Self::Page, i64>;
    /// Unmaps a page [`Platform::map_ring`] returned.
    fn unmap_ring(&mut self, domid: u16, page: Self::Page);
    /// Binds a local port to `domid`'s unbound `remote_port`; returns the local port.
    fn bind(&mut self, domid: u16, remote_port: u32) -> Result<u32, i64>;
    /// Closes a local port.
    fn close(&mut self, local_port: u32);
    /// Notifies the remote end of a local port.
    fn notify(&mut self, local_port: u32);
    /// Writes bytes to the UART.
    fn uart_write(&mut self, bytes: &[u8]);
    /// Writes what the attach line's UART takes of `bytes` now, without waiting; returns
    /// how many it took (all of them when there is no attach line: nobody listens).
    fn attach_write(&mut self, bytes: &[u8]) -> usize;
}

/// One served domain.
struct Connection<Page> {
    domid: u16,
    /// Which build of the domain this is (`DomainEntry::instance`).
    instance: u32,
    name: String,
    page: Page,
    ring: BackendRing,
    port: u32,
    lines: LineAssembler,
    /// Input waiting for room in `in[]`.
    pending_input: VecDeque<u8>,
    /// Ticks since its last output.
    quiet_ticks: u32,
}

/// The console backend.
pub struct Backend<P: Platform> {
    conns: Vec<Connection<P::Page>>,
    input: Input,
    /// Builds (id, instance) dropped for a fault: not served again while they are listed.
    banned: Vec<(u16, u32)>,
    /// Domains dropped while restarting under the same id, until their next build is
    /// connected or they are gone for good.
    returning: Vec<u16>,
    /// The raw console on the second UART.
    attach: AttachLine,
    /// Ticks since output dropped on the attach line was last reported.
    ticks_since_drop_report: u32,
}

impl<P: Platform> Default for Backend<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Platform> Backend<P> {
    /// Serves nothing until [`Backend::sync`]; input in command mode.
    pub fn new() -> Self {
        Self {
            conns: Vec::new(),
            input: Input::new(),
            banned: Vec::new(),
            returning: Vec::new(),
            attach: AttachLine::new(),
            ticks_since_drop_report: DROP_REPORT_TICKS,
        }
    }

    /// The domain the attach line is attached to, if any.
    pub fn attach_session(&self) -> Option<u16> {
        self.attach.attached()
    }

    /// Output bytes the attach line dropped so far (its client did not read them).
    pub fn attach_dropped(&self) -> u64 {
        self.attach.dropped()
    }

    /// Handles bytes read from the attach line's UART (see [`crate::attach`]).
    pub fn attach_input(&mut self, platform: &mut P, bytes: &[u8]) {
        let conns = &self.conns;
        let events = self.attach.feed(bytes, |name| {
            conns.iter().find(|c| c.name == name).map(|c| c.domid)
        });
        for event in events {
            match event {
                attach::Event::Deliver { domid, bytes } => {
                    if let Some(connection) = self.conns.iter_mut().find(|c| c.domid == domid) {
                        let room = INPUT_QUEUE_MAX.saturating_sub(connection.pending_input.len());
                        connection
                            .pending_input
                            .extend(&bytes[..bytes.len().min(room)]);
                    }
                    self.push_input(platform, domid);
                }
                attach::Event::Attached { name, .. } => say(
                    platform,
                    &format!("[console] xl console attached to {name}"),
                ),
                attach::Event::Ended { name, .. } => {
                    say(platform, &format!("[console] xl console left {name}"))
                }
            }
        }
        self.attach_flush(platform);
    }

    /// Moves the attach line's queued output to its UART, as far as it takes it.
    fn attach_flush(&mut self, platform: &mut P) {
        self.attach.flush(|bytes| platform.attach_write(bytes));
    }

    /// The attached domain `domid` went away: the attach line's client is told.
    fn attach_gone(&mut self, platform: &mut P, domid: u16) {
        if let Some(attach::Event::Ended { name, .. }) = self.attach.gone(domid) {
            say(
                platform,
                &format!("[console] xl console: {name} is gone; detached"),
            );
            self.attach_flush(platform);
        }
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
    /// served yet.
    pub fn returning(&self) -> Vec<u16> {
        self.returning.clone()
    }

    /// The local ports of the served domains.
    pub fn ports(&self) -> Vec<u32> {
        self.conns.iter().map(|c| c.port).collect()
    }

    /// The domain input goes to, if attached.
    pub fn attached(&self) -> Option<u16> {
        match self.input.mode() {
            crate::input::Mode::Attached { domid, .. } => Some(*domid),
            crate::input::Mode::Command => None,
        }
    }

    /// Re-reads the domain list, connects and drops domains to match, and prints
    /// `[console] serving <n> domains`.
    pub fn sync(&mut self, platform: &mut P) {
        let mut entries = alloc::vec![DomainEntry::default(); MAX_LISTED_DOMAINS];
        let count = match platform.list_domains(&mut entries) {
            Ok(count) => count.min(MAX_LISTED_DOMAINS),
            Err(error) => {
                say(
                    platform,
                    &format!("[console] cannot list domains: error {error}"),
                );
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
            entry.console_port
        });
        for dropped in plan.drop {
            self.drop_domain(platform, dropped.domid, dropped.restarting);
        }
        for candidate in plan.connect {
            if !self.banned.contains(&(candidate.domid, candidate.instance)) {
                self.connect(platform, candidate);
            }
        }
        say(
            platform,
            &format!("[console] serving {} domains", self.conns.len()),
        );
        // Output written before we connected.
        for domid in self.served_domains() {
            self.drain(platform, domid);
        }
    }

    /// Drains the output of the domain whose local port is `port` and moves queued input.
    /// Returns false if no served domain has that port.
    pub fn service(&mut self, platform: &mut P, port: u32) -> bool {
        let Some(domid) = self.conns.iter().find(|c| c.port == port).map(|c| c.domid) else {
            return false;
        };
        self.drain(platform, domid);
        self.push_input(platform, domid);
        true
    }

    /// Handles bytes read from the UART.
    pub fn uart_input(&mut self, platform: &mut P, bytes: &[u8]) {
        for &byte in bytes {
            let conns = &self.conns;
            let effect = self.input.feed(
                byte,
                |name| conns.iter().find(|c| c.name == name).map(|c| c.domid),
                || conns.iter().map(|c| c.name.clone()).collect(),
            );
            match effect {
                Some(Effect::Deliver { domid, byte }) => {
                    if let Some(connection) = self.conns.iter_mut().find(|c| c.domid == domid) {
                        if connection.pending_input.len() < INPUT_QUEUE_MAX {
                            connection.pending_input.push_back(byte);
                        }
                    }
                }
                Some(Effect::Say(line)) => say(platform, &line),
                None => {}
            }
        }
        if let Some(domid) = self.attached() {
            self.push_input(platform, domid);
        }
    }

    /// Called every poll period: drains every domain's output (a notification may have been
    /// lost, or a turn cut short), retries queued input, shows a quiet attached domain's
    /// partial line.
    pub fn tick(&mut self, platform: &mut P) {
        for domid in self.served_domains() {
            self.drain(platform, domid);
        }
        let attached = self.attached();
        let mut out = Vec::new();
        for connection in &mut self.conns {
            connection.quiet_ticks = connection.quiet_ticks.saturating_add(1);
            if Some(connection.domid) == attached
                && connection.quiet_ticks >= PROMPT_QUIET_TICKS
                && connection.lines.has_partial()
            {
                let name = &connection.name;
                connection
                    .lines
                    .flush(|line| format_line(name, line, &mut out));
            }
        }
        if !out.is_empty() {
            platform.uart_write(&out);
        }
        if let Some(domid) = attached {
            self.push_input(platform, domid);
        }
        if let Some(domid) = self.attach.attached() {
            self.push_input(platform, domid);
        }
        self.attach_flush(platform);
        self.ticks_since_drop_report = self.ticks_since_drop_report.saturating_add(1);
        if self.ticks_since_drop_report >= DROP_REPORT_TICKS {
            if let Some(count) = self.attach.take_unreported_drops() {
                say(
                    platform,
                    &format!(
                        "[console] xl console: {count} bytes of output dropped (the client is not reading)"
                    ),
                );
                self.ticks_since_drop_report = 0;
            }
        }
    }

    /// Reads a domain's `out[]` (at most [`DRAIN_READS_PER_TURN`] ring-fulls, so a domain
    /// that writes without pause cannot hold the backend) and prints its complete lines.
    fn drain(&mut self, platform: &mut P, domid: u16) {
        let Some(connection) = self.conns.iter_mut().find(|c| c.domid == domid) else {
            return;
        };
        let mut buffer = [0u8; 2048];
        let mut out = Vec::new();
        let mut consumed = false;
        let mut reads = 0;
        let result = loop {
            if reads == DRAIN_READS_PER_TURN {
                break Ok(());
            }
            reads += 1;
            match connection.ring.output.read(&connection.page, &mut buffer) {
                Ok(0) => break Ok(()),
                Ok(count) => {
                    consumed = true;
                    self.attach.output(domid, &buffer[..count]);
                    let name = &connection.name;
                    connection
                        .lines
                        .push(&buffer[..count], |line| format_line(name, line, &mut out));
                }
                Err(error) => break Err(error),
            }
        };
        if consumed {
            connection.quiet_ticks = 0;
        }
        if !out.is_empty() {
            platform.uart_write(&out);
        }
        if consumed && self.attach.attached() == Some(domid) {
            self.attach.flush(|bytes| platform.attach_write(bytes));
        }
        match result {
            Ok(()) if consumed => platform.notify(connection.port),
            Ok(()) => {}
            Err(error) => self.fault(platform, domid, error),
        }
    }

    /// Moves queued input into a domain's `in[]` ring, notifying it if anything moved.
    fn push_input(&mut self, platform: &mut P, domid: u16) {
        let Some(connection) = self.conns.iter_mut().find(|c| c.domid == domid) else {
            return;
        };
        let mut moved = false;
        while !connection.pending_input.is_empty() {
            let (first, _) = connection.pending_input.as_slices();
            match connection.ring.input.write(&connection.page, first) {
                Ok(0) => break,
                Ok(count) => {
                    connection.pending_input.drain(..count);
                    moved = true;
                }
                Err(error) => {
                    self.fault(platform, domid, error);
                    return;
                }
            }
        }
        if moved {
            platform.notify(connection.port);
        }
    }

    fn fault(&mut self, platform: &mut P, domid: u16, _error: StreamError) {
        let Some(connection) = self.conns.iter().find(|c| c.domid == domid) else {
            return;
        };
        // A domain that is being torn down (or was rebuilt under its id already) loses its
        // ring page under us (its grant is revoked), so its indices stop making sense: that
        // is a departure, not a broken protocol.
        let instance = connection.instance;
        let mut entries = alloc::vec![DomainEntry::default(); MAX_LISTED_DOMAINS];
        if let Ok(count) = platform.list_domains(&mut entries) {
            let listed = &entries[..count.min(MAX_LISTED_DOMAINS)];
            let mine = || listed.iter().filter(|entry| entry.domid == domid);
            let alive = |entry: &DomainEntry| entry.flags & DOMAIN_FLAG_DYING == 0;
            if !mine().any(|entry| alive(entry) && entry.instance == instance) {
                let restarting = mine().any(|entry| {
                    entry.flags & DOMAIN_FLAG_RESTARTING != 0
                        || (alive(entry) && entry.instance != instance)
                });
                self.drop_domain(platform, domid, restarting);
                return;
            }
        }
        let line = format!(
            "[console] domain {domid} ({}) broke the ring protocol, disconnected",
            connection.name
        );
        say(platform, &line);
        self.banned.push((domid, instance));
        self.drop_domain(platform, domid, false);
    }

    fn connect(&mut self, platform: &mut P, candidate: Candidate) {
        let Candidate {
            domid,
            instance,
            name,
            port: remote_port,
            ..
        } = candidate;
        let page = match platform.map_ring(domid) {
            Ok(page) => page,
            Err(error) => {
                let line = format!(
                    "[console] cannot map the console of domain {domid} ({name}): error {error}"
                );
                say(platform, &line);
                return;
            }
        };
        let Ok(ring) = BackendRing::attach(&page) else {
            platform.unmap_ring(domid, page);
            let line =
                format!("[console] domain {domid} ({name}) broke the ring protocol, disconnected");
            say(platform, &line);
            self.banned.push((domid, instance));
            // Not served while this build lives: an awaited domain is given up.
            self.drop_domain(platform, domid, false);
            return;
        };
        let port = match platform.bind(domid, remote_port) {
            Ok(port) => port,
            Err(error) => {
                platform.unmap_ring(domid, page);
                let line = format!(
                    "[console] cannot bind port {remote_port} of domain {domid} ({name}): error {error}"
                );
                say(platform, &line);
                return;
            }
        };
        self.returning.retain(|&d| d != domid);
        self.conns.push(Connection {
            domid,
            instance,
            name,
            page,
            ring,
            port,
            lines: LineAssembler::new(),
            pending_input: VecDeque::new(),
            quiet_ticks: 0,
        });
    }

    /// Drops a served domain: prints its partial line, detaches input from it (unless it
    /// is `restarting` under the same id: then it is awaited), unmaps its page and closes
    /// its port. An awaited domain that is not coming back has input detached from it.
    fn drop_domain(&mut self, platform: &mut P, domid: u16, restarting: bool) {
        let awaited = self.returning.iter().position(|&d| d == domid);
        let Some(index) = self.conns.iter().position(|c| c.domid == domid) else {
            if let (Some(index), false) = (awaited, restarting) {
                self.returning.remove(index);
                if let Some(Effect::Say(line)) = self.input.forget(domid) {
                    say(platform, &line);
                }
                self.attach_gone(platform, domid);
            }
            return;
        };
        let mut connection = self.conns.remove(index);
        let mut out = Vec::new();
        let name = &connection.name;
        connection
            .lines
            .flush(|line| format_line(name, line, &mut out));
        if !out.is_empty() {
            platform.uart_write(&out);
        }
        if restarting {
            if self.attached() == Some(domid) {
                say(
                    platform,
                    &format!(
                        "[console] {} is restarting; still attached",
                        connection.name
                    ),
                );
            }
            if awaited.is_none() {
                self.returning.push(domid);
            }
        } else {
            if let Some(index) = awaited {
                self.returning.remove(index);
            }
            if let Some(Effect::Say(line)) = self.input.forget(domid) {
                say(platform, &line);
            }
            self.attach_gone(platform, domid);
        }
        platform.close(connection.port);
        platform.unmap_ring(domid, connection.page);
    }
}

/// Prints one of the backend's own lines.
fn say<P: Platform>(platform: &mut P, line: &str) {
    platform.uart_write(line.as_bytes());
    platform.uart_write(b"\r\n");
}
