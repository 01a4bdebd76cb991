//! The xenstore client (`XEN-ABI.md` §3.1–3.2): requests over the domain's xenstore ring.
//!
//! The ring page is `HVM_PARAM_STORE_PFN` (0: no xenstore, [`Error::Enodev`]) and the port
//! `HVM_PARAM_STORE_EVTCHN`, an unbound port of this domain whose other end is the xenstore
//! domain, so the client only `send`s on it. The page holds two 1024-byte byte rings with
//! free-running indices: `req` (this domain produces, `req_prod`; the server consumes,
//! `req_cons`) and `rsp` (the other way round). Writing: read the server's `req_cons`
//! (acquire), copy bytes, release-store `req_prod`, notify. Reading: acquire-load
//! `rsp_prod`, copy bytes out, release-store `rsp_cons`, notify. Indices more than 1024
//! apart are a protocol error and make the client unusable ([`Error::Eproto`]).
//!
//! One request is outstanding at a time; its reply is matched by `req_id` (a late reply to a
//! request that timed out is dropped). Watch events that arrive meanwhile are queued (at
//! most [`MAX_QUEUED_EVENTS`]; beyond that the oldest are dropped and counted) and handed
//! out by [`Client::next_watch_event`] and friends. Waiting uses [`crate::events`], with a
//! deadline ([`Client::set_timeout_ns`], default [`DEFAULT_TIMEOUT_NS`]).
//!
//! Only one [`Client`] exists at a time (the ring has one stream); [`Client::connect`] gives
//! `EBUSY` while another is alive.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use microvisor_abi::hvm::{HVM_PARAM_STORE_EVTCHN, HVM_PARAM_STORE_PFN};
use microvisor_abi::rings::xenstore::{
    REQ, REQ_CONS, REQ_PROD, RING_SIZE, RSP, RSP_CONS, RSP_PROD,
};

use crate::byte_ring;
use crate::events::{self, Port, Wake};
use crate::layout::IDENTITY_MAP_END;
use crate::shared_mem::ForeignPage;
use crate::xs_wire::{self, kind, Assembler, Header, Incoming};
use crate::{hypercall, time};

pub use crate::xs_wire::{Access, Error, Perm, WatchEvent};

/// How long a request may wait for its reply by default.
pub const DEFAULT_TIMEOUT_NS: u64 = 30_000_000_000;
/// Watch events kept for the caller at most.
pub const MAX_QUEUED_EVENTS: usize = 1024;
/// How often [`Client::transaction`] retries on `EAGAIN`.
pub const TRANSACTION_ATTEMPTS: u32 = 32;

/// A transaction id; [`Tx::NONE`] for a request outside any transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tx(pub u32);

impl Tx {
    pub const NONE: Tx = Tx(0);
}

static CONNECTED: AtomicBool = AtomicBool::new(false);

/// The request ring: this domain produces.
const REQUESTS: byte_ring::Spec = byte_ring::Spec {
    data: REQ,
    size: RING_SIZE,
    prod: REQ_PROD,
    cons: REQ_CONS,
};
/// The response ring: the server produces.
const RESPONSES: byte_ring::Spec = byte_ring::Spec {
    data: RSP,
    size: RING_SIZE,
    prod: RSP_PROD,
    cons: RSP_CONS,
};

/// The connection to xenstore.
pub struct Client {
    page: ForeignPage,
    port: Port,
    next_req_id: u32,
    assembler: Assembler,
    events: VecDeque<WatchEvent>,
    dropped_events: u64,
    timeout_ns: u64,
    broken: bool,
}

/// `/local/domain/<domid>`.
pub fn domain_path(domid: u16) -> String {
    alloc::format!("/local/domain/{domid}")
}

impl Client {
    /// Connects to the domain's xenstore ring: `ENODEV` if it has none, `EBUSY` if a
    /// client already exists.
    pub fn connect() -> Result<Self, Error> {
        let pfn = hypercall::hvm_get_param(HVM_PARAM_STORE_PFN).map_err(|_| Error::Enodev)?;
        let port = hypercall::hvm_get_param(HVM_PARAM_STORE_EVTCHN).map_err(|_| Error::Enodev)?;
        if pfn == 0 || port == 0 || port >= 4096 {
            return Err(Error::Enodev);
        }
        let addr = pfn.checked_mul(4096).ok_or(Error::Enodev)?;
        let ram_top = crate::boot::boot_info().map_or(u64::MAX, |info| {
            info.ram_bytes.max(info.domain.memory_bytes)
        });
        if addr < ram_top || addr >= IDENTITY_MAP_END {
            return Err(Error::Enodev);
        }
        if CONNECTED.swap(true, Ordering::AcqRel) {
            return Err(Error::Ebusy);
        }
        Ok(Self {
            // SAFETY: the builder mapped the xenstore ring page here, outside RAM (checked)
            // and below 4 GiB, for the domain's lifetime; no Rust object is there, and the
            // server and this client access it atomically.
            page: unsafe { ForeignPage::new(addr) },
            port: Port(port as u32),
            next_req_id: 1,
            assembler: Assembler::new(),
            events: VecDeque::new(),
            dropped_events: 0,
            timeout_ns: DEFAULT_TIMEOUT_NS,
            broken: false,
        })
    }

    /// The xenstore port.
    pub fn port(&self) -> Port {
        self.port
    }

    /// How long each request waits for its reply.
    pub fn set_timeout_ns(&mut self, ns: u64) {
        self.timeout_ns = ns;
    }

    fn deadline(&self) -> u64 {
        time::now_ns().saturating_add(self.timeout_ns)
    }

    fn fail(&mut self) -> Error {
        self.broken = true;
        Error::Eproto
    }

    /// Copies `bytes` into the request ring, waiting for room.
    fn write_all(&mut self, bytes: &[u8], deadline: u64) -> Result<(), Error> {
        let mut done = 0;
        while done < bytes.len() {
            let gen = events::generation();
            let Ok(n) = byte_ring::produce(&self.page, &REQUESTS, &bytes[done..]) else {
                return Err(self.fail());
            };
            if n == 0 {
                // Keep reading, so a server waiting for room in our response ring can go on.
                self.receive(None)?;
                if events::wait_since(gen, Some(deadline)) == Wake::Timeout {
                    // Part of a message is in the ring: the stream cannot be resumed.
                    self.broken = true;
                    return Err(Error::Etimedout);
                }
                continue;
            }
            let _ = events::send(self.port);
            done += n;
        }
        Ok(())
    }

    /// Moves what the response ring holds into the assembler; whether there was anything.
    fn read_available(&mut self) -> Result<bool, Error> {
        let mut buffer = [0u8; RING_SIZE as usize];
        let Ok(n) = byte_ring::consume(&self.page, &RESPONSES, &mut buffer) else {
            return Err(self.fail());
        };
        if n == 0 {
            return Ok(false);
        }
        let _ = events::send(self.port);
        self.assembler.push(&buffer[..n]);
        Ok(true)
    }

    fn queue_event(&mut self, event: WatchEvent) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(event);
    }

    /// Reads the ring and sorts whole messages: watch events are queued, stale replies
    /// dropped; returns the reply to `expecting` if it came.
    fn receive(&mut self, expecting: Option<u32>) -> Result<Option<(Header, Vec<u8>)>, Error> {
        if self.broken {
            return Err(Error::Eproto);
        }
        while self.read_available()? {}
        loop {
            let message = match self.assembler.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(None),
                Err(_) => return Err(self.fail()),
            };
            match xs_wire::classify(message.0, message.1, expecting) {
                Incoming::Reply(header, payload) => return Ok(Some((header, payload))),
                Incoming::Watch(event) => self.queue_event(event),
                Incoming::Stale(_) => {}
            }
        }
    }

    /// Sends one request and waits for its reply's payload.
    fn request(&mut self, request_kind: u32, tx: Tx, payload: &[u8]) -> Result<Vec<u8>, Error> {
        if self.broken {
            return Err(Error::Eproto);
        }
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1).max(1);
        let message = xs_wire::request(request_kind, req_id, tx.0, payload)?;
        let deadline = self.deadline();
        self.write_all(&message, deadline)?;
        loop {
            let gen = events::generation();
            if let Some((header, payload)) = self.receive(Some(req_id))? {
                return xs_wire::reply_payload(request_kind, &header, payload);
            }
            if events::wait_since(gen, Some(deadline)) == Wake::Timeout {
                if let Some((header, payload)) = self.receive(Some(req_id))? {
                    return xs_wire::reply_payload(request_kind, &header, payload);
                }
                return Err(Error::Etimedout);
            }
        }
    }

    fn path_request(&mut self, request_kind: u32, tx: Tx, path: &str) -> Result<Vec<u8>, Error> {
        xs_wire::check_path(path)?;
        self.request(request_kind, tx, &xs_wire::strings(&[path.as_bytes()]))
    }

    /// `READ`: the node's value.
    pub fn read(&mut self, tx: Tx, path: &str) -> Result<Vec<u8>, Error> {
        self.path_request(kind::READ, tx, path)
    }

    /// `READ` as text (invalid UTF-8 replaced).
    pub fn read_string(&mut self, tx: Tx, path: &str) -> Result<String, Error> {
        let value = self.read(tx, path)?;
        Ok(String::from_utf8_lossy(&value).into_owned())
    }

    /// `READ` of an unsigned decimal number; `EINVAL` if the value is not one.
    pub fn read_u32(&mut self, tx: Tx, path: &str) -> Result<u32, Error> {
        let value = self.read(tx, path)?;
        xs_wire::parse_decimal(&value).ok_or(Error::Einval)
    }

    /// `WRITE`: sets the node's value, creating it (and missing parents).
    pub fn write(&mut self, tx: Tx, path: &str, value: &[u8]) -> Result<(), Error> {
        xs_wire::check_path(path)?;
        let reply = self.request(kind::WRITE, tx, &xs_wire::write_payload(path, value))?;
        xs_wire::expect_ok(&reply)
    }

    /// `WRITE` of text.
    pub fn write_str(&mut self, tx: Tx, path: &str, value: &str) -> Result<(), Error> {
        self.write(tx, path, value.as_bytes())
    }

    /// `MKDIR`: creates the node with an empty value (fine if it exists).
    pub fn mkdir(&mut self, tx: Tx, path: &str) -> Result<(), Error> {
        let reply = self.path_request(kind::MKDIR, tx, path)?;
        xs_wire::expect_ok(&reply)
    }

    /// `RM`: removes the node and everything below it.
    pub fn rm(&mut self, tx: Tx, path: &str) -> Result<(), Error> {
        let reply = self.path_request(kind::RM, tx, path)?;
        xs_wire::expect_ok(&reply)
    }

    /// `DIRECTORY`: the names of the node's children.
    pub fn directory(&mut self, tx: Tx, path: &str) -> Result<Vec<String>, Error> {
        let reply = self.path_request(kind::DIRECTORY, tx, path)?;
        Ok(xs_wire::split_strings(&reply)
            .into_iter()
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect())
    }

    /// `GET_PERMS`: the node's permission list (owner first).
    pub fn get_perms(&mut self, tx: Tx, path: &str) -> Result<Vec<Perm>, Error> {
        let reply = self.path_request(kind::GET_PERMS, tx, path)?;
        xs_wire::split_strings(&reply)
            .into_iter()
            .map(|p| Perm::parse(p).ok_or(Error::Eproto))
            .collect()
    }

    /// `SET_PERMS`: replaces the node's permission list (the first entry names the owner and
    /// the access of every domain not listed).
    pub fn set_perms(&mut self, tx: Tx, path: &str, perms: &[Perm]) -> Result<(), Error> {
        xs_wire::check_path(path)?;
        let encoded: Vec<String> = perms.iter().map(Perm::encode).collect();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(perms.len() + 1);
        parts.push(path.as_bytes());
        parts.extend(encoded.iter().map(|p| p.as_bytes()));
        let reply = self.request(kind::SET_PERMS, tx, &xs_wire::strings(&parts))?;
        xs_wire::expect_ok(&reply)
    }

    /// `WATCH`: events for `path` and everything below it come with `token`; the first one
    /// (for `path` itself) comes right away.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), Error> {
        xs_wire::check_path(path)?;
        let payload = xs_wire::strings(&[path.as_bytes(), token.as_bytes()]);
        let reply = self.request(kind::WATCH, Tx::NONE, &payload)?;
        xs_wire::expect_ok(&reply)
    }

    /// `UNWATCH`; also drops queued events of that token.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), Error> {
        xs_wire::check_path(path)?;
        let payload = xs_wire::strings(&[path.as_bytes(), token.as_bytes()]);
        let reply = self.request(kind::UNWATCH, Tx::NONE, &payload)?;
        self.events.retain(|e| e.token != token);
        xs_wire::expect_ok(&reply)
    }

    /// `TRANSACTION_START`.
    pub fn transaction_start(&mut self) -> Result<Tx, Error> {
        let reply = self.request(kind::TRANSACTION_START, Tx::NONE, b"\0")?;
        match xs_wire::parse_decimal(&reply) {
            Some(id) if id != 0 => Ok(Tx(id)),
            _ => Err(Error::Eproto),
        }
    }

    /// `TRANSACTION_END`: commits (`EAGAIN` if it conflicted) or aborts.
    pub fn transaction_end(&mut self, tx: Tx, commit: bool) -> Result<(), Error> {
        let payload: &[u8] = if commit { b"T\0" } else { b"F\0" };
        let reply = self.request(kind::TRANSACTION_END, tx, payload)?;
        xs_wire::expect_ok(&reply)
    }

    /// Runs `body` in a transaction and commits it, starting over on `EAGAIN` (from the
    /// body or the commit) up to [`TRANSACTION_ATTEMPTS`] times. Any other error of the
    /// body aborts the transaction and is returned.
    pub fn transaction<T>(
        &mut self,
        mut body: impl FnMut(&mut Client, Tx) -> Result<T, Error>,
    ) -> Result<T, Error> {
        for _ in 0..TRANSACTION_ATTEMPTS {
            let tx = self.transaction_start()?;
            match body(self, tx) {
                Ok(value) => match self.transaction_end(tx, true) {
                    Ok(()) => return Ok(value),
                    Err(Error::Eagain) => continue,
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    let _ = self.transaction_end(tx, false);
                    if e != Error::Eagain {
                        return Err(e);
                    }
                }
            }
        }
        Err(Error::Eagain)
    }

    /// `GET_DOMAIN_PATH`: the home path of `domid`.
    pub fn get_domain_path(&mut self, domid: u16) -> Result<String, Error> {
        let id = alloc::format!("{domid}");
        let reply = self.request(
            kind::GET_DOMAIN_PATH,
            Tx::NONE,
            &xs_wire::strings(&[id.as_bytes()]),
        )?;
        let path = xs_wire::split_strings(&reply)
            .first()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .ok_or(Error::Eproto)?;
        Ok(path)
    }

    /// Reads whatever the ring holds without waiting, queueing watch events.
    pub fn pump(&mut self) -> Result<(), Error> {
        self.receive(None).map(|_| ())
    }

    /// The oldest queued watch event, if any (reads the ring first, without waiting).
    pub fn next_watch_event(&mut self) -> Result<Option<WatchEvent>, Error> {
        self.pump()?;
        Ok(self.events.pop_front())
    }

    /// The oldest queued watch event with `token`, if any (without waiting); events of
    /// other tokens stay queued.
    pub fn take_watch_event(&mut self, token: &str) -> Result<Option<WatchEvent>, Error> {
        self.pump()?;
        let index = self.events.iter().position(|e| e.token == token);
        Ok(index.and_then(|i| self.events.remove(i)))
    }

    /// Waits for a watch event with `token` until `deadline` (system time in ns; `None`:
    /// for ever): `ETIMEDOUT` if none came.
    pub fn wait_watch(&mut self, token: &str, deadline: Option<u64>) -> Result<WatchEvent, Error> {
        loop {
            let gen = events::generation();
            if let Some(event) = self.take_watch_event(token)? {
                return Ok(event);
            }
            if events::wait_since(gen, deadline) == Wake::Timeout {
                return self.take_watch_event(token)?.ok_or(Error::Etimedout);
            }
        }
    }

    /// Waits for any watch event until `deadline` (`None`: for ever).
    pub fn wait_watch_event(&mut self, deadline: Option<u64>) -> Result<WatchEvent, Error> {
        loop {
            let gen = events::generation();
            if let Some(event) = self.next_watch_event()? {
                return Ok(event);
            }
            if events::wait_since(gen, deadline) == Wake::Timeout {
                return self.next_watch_event()?.ok_or(Error::Etimedout);
            }
        }
    }

    /// Drops every queued watch event.
    pub fn clear_watch_events(&mut self) {
        self.events.clear();
    }

    /// Watch events queued now.
    pub fn queued_watch_events(&self) -> usize {
        self.events.len()
    }

    /// Watch events dropped because the queue was full.
    pub fn dropped_watch_events(&self) -> u64 {
        self.dropped_events
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        CONNECTED.store(false, Ordering::Release);
    }
}
