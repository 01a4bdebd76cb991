//! A simulated machine for the server: domains listed by the test, ring pages in process
//! memory that the test (playing each client domain) shares with the server, ports and
//! notifications recorded, log lines collected. Used by the unit tests and the fuzz target
//! (feature `sim`).

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use microvisor_abi::microvisor_op::{
    DomainEntry, DOMAIN_FLAG_DYING, DOMAIN_FLAG_RESTARTING, DOMAIN_FLAG_SELF,
};
use xen_ring::{LocalPage, SharedPage};
use xenstore_store::wire::{self, MessageType};
use xenstore_store::Framer;

use crate::server::Platform;
use crate::stream_ring::{StreamConsumer, StreamError, StreamProducer};
use crate::xs_ring::{REQUESTS, RESPONSES};

/// The simulated xenstore domain's own id.
pub const SELF: u16 = 1;

/// A ring page both the fake platform (as the server's mapping) and a test client hold.
/// A ring page the server (through [`Sim::map_ring`]) and the test share.
#[derive(Clone)]
pub struct SimPage(Rc<LocalPage>);

impl SharedPage for SimPage {
    fn size_bytes(&self) -> usize {
        self.0.size_bytes()
    }
    fn load_u32(&self, offset: usize) -> u32 {
        self.0.load_u32(offset)
    }
    fn store_u32(&self, offset: usize, value: u32) {
        self.0.store_u32(offset, value)
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.0.read_bytes(offset, out)
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) {
        self.0.write_bytes(offset, data)
    }
    fn fence(&self) {
        self.0.fence()
    }
}

/// The simulated machine.
#[derive(Default)]
pub struct Sim {
    /// What `list_domains` returns, in order.
    pub listed: Vec<DomainEntry>,
    /// Every domain's ring page (created when it is first listed).
    pub pages: BTreeMap<u16, SimPage>,
    /// How many mappings of each domain's page the server holds.
    pub mapped: BTreeMap<u16, usize>,
    /// Bound local ports: local port -> (domid, remote port).
    pub bound: BTreeMap<u32, (u16, u32)>,
    next_port: u32,
    /// The last build number given (`DomainEntry::instance`).
    last_instance: u32,
    /// Ports notified, in order.
    pub notified: Vec<u32>,
    /// Lines the server printed.
    pub log: Vec<String>,
}

impl Sim {
    /// A machine listing only the xenstore domain itself ([`SELF`]).
    pub fn new() -> Self {
        let mut sim = Self {
            next_port: 10,
            ..Self::default()
        };
        sim.list(SELF, DOMAIN_FLAG_SELF, 0, "xenstore");
        sim
    }

    /// Lists a domain (replacing an entry with the same id); gives it a zeroed ring page
    /// if it has none yet. `name` is cut at 32 bytes. A domain listed already keeps its
    /// build number (`instance`); one that was not gets a new one.
    pub fn list(&mut self, domid: u16, flags: u16, store_port: u32, name: &str) {
        let instance = match self.instance_of(domid) {
            Some(instance) if instance != 0 => instance,
            _ => self.new_instance(),
        };
        self.list_build(domid, instance, flags, store_port, name);
    }

    /// Lists a domain as build `instance` (replacing an entry with the same id); gives it
    /// a zeroed ring page if it has none yet.
    pub fn list_build(
        &mut self,
        domid: u16,
        instance: u32,
        flags: u16,
        store_port: u32,
        name: &str,
    ) {
        let mut entry = DomainEntry {
            domid,
            flags,
            store_port,
            instance,
            ..DomainEntry::default()
        };
        let length = name.len().min(entry.name.len());
        entry.name[..length].copy_from_slice(&name.as_bytes()[..length]);
        self.listed.retain(|e| e.domid != domid);
        self.listed.push(entry);
        self.pages
            .entry(domid)
            .or_insert_with(|| SimPage(Rc::new(LocalPage::new())));
    }

    /// Lists a domain as the microvisor does while rebuilding it under the same id:
    /// `DOMAIN_FLAG_DYING | DOMAIN_FLAG_RESTARTING`, no port, instance 0.
    pub fn list_restarting(&mut self, domid: u16, name: &str) {
        self.list_build(
            domid,
            0,
            DOMAIN_FLAG_DYING | DOMAIN_FLAG_RESTARTING,
            0,
            name,
        );
    }

    /// Lists the next build of a domain restarted under the same id: alive, a new
    /// instance, a fresh zeroed ring page (the old one stays with whoever still maps it).
    /// Returns the new instance.
    pub fn list_restarted(&mut self, domid: u16, store_port: u32, name: &str) -> u32 {
        let instance = self.new_instance();
        self.pages.insert(domid, SimPage(Rc::new(LocalPage::new())));
        self.list_build(domid, instance, 0, store_port, name);
        instance
    }

    /// The build number a listed domain has.
    pub fn instance_of(&self, domid: u16) -> Option<u32> {
        self.listed
            .iter()
            .find(|e| e.domid == domid)
            .map(|e| e.instance)
    }

    fn new_instance(&mut self) -> u32 {
        self.last_instance += 1;
        self.last_instance
    }

    /// Removes a domain from the list (its page stays for the test to look at).
    pub fn unlist(&mut self, domid: u16) {
        self.listed.retain(|e| e.domid != domid);
    }

    /// The local port bound to `domid`, if any.
    pub fn port_of(&self, domid: u16) -> Option<u32> {
        self.bound
            .iter()
            .find(|(_, (d, _))| *d == domid)
            .map(|(&port, _)| port)
    }

    /// The lines printed since the last call.
    pub fn take_log(&mut self) -> Vec<String> {
        core::mem::take(&mut self.log)
    }
}

/// The server must never unmap, close or notify what it does not hold: the simulation
/// panics if it does (the fuzz target relies on this).
impl Platform for Sim {
    type Page = SimPage;

    fn list_domains(&mut self, out: &mut [DomainEntry]) -> Result<usize, i64> {
        let count = self.listed.len().min(out.len());
        out[..count].copy_from_slice(&self.listed[..count]);
        Ok(count)
    }

    fn map_ring(&mut self, domid: u16) -> Result<SimPage, i64> {
        let page = self.pages.get(&domid).cloned().ok_or(-3)?;
        *self.mapped.entry(domid).or_default() += 1;
        Ok(page)
    }

    fn unmap_ring(&mut self, domid: u16, _page: SimPage) {
        let count = self
            .mapped
            .get_mut(&domid)
            .expect("unmap of a page never mapped");
        *count -= 1;
        if *count == 0 {
            self.mapped.remove(&domid);
        }
    }

    fn bind(&mut self, domid: u16, remote_port: u32) -> Result<u32, i64> {
        let port = self.next_port;
        self.next_port += 1;
        self.bound.insert(port, (domid, remote_port));
        Ok(port)
    }

    fn close(&mut self, local_port: u32) {
        assert!(
            self.bound.remove(&local_port).is_some(),
            "close of port {local_port} never bound"
        );
    }

    fn notify(&mut self, local_port: u32) {
        assert!(
            self.bound.contains_key(&local_port),
            "notify on closed port {local_port}"
        );
        self.notified.push(local_port);
    }

    fn log(&mut self, line: fmt::Arguments<'_>) {
        self.log.push(alloc::format!("{line}"));
    }
}

/// A well-behaved client domain's end of its ring.
pub struct Client {
    /// The ring page.
    pub page: SimPage,
    /// The client's end of `req[]`.
    pub requests: StreamProducer,
    /// The client's end of `rsp[]`.
    pub responses: StreamConsumer,
    framer: Framer,
}

impl Client {
    /// Attaches to the ring page of a listed domain.
    pub fn new(sim: &Sim, domid: u16) -> Result<Self, StreamError> {
        let page = sim
            .pages
            .get(&domid)
            .cloned()
            .ok_or(StreamError::BadLayout)?;
        Ok(Self {
            requests: StreamProducer::attach(&page, REQUESTS)?,
            responses: StreamConsumer::attach(&page, RESPONSES)?,
            page,
            framer: Framer::new(),
        })
    }

    /// Writes as much of `bytes` into `req[]` as fits; returns how much.
    pub fn send(&mut self, bytes: &[u8]) -> Result<usize, StreamError> {
        self.requests.write(&self.page, bytes)
    }

    /// Sends a request of NUL-terminated arguments; returns how many bytes fit.
    pub fn request(
        &mut self,
        kind: MessageType,
        req_id: u32,
        args: &[&[u8]],
    ) -> Result<usize, StreamError> {
        self.send(&wire::encode_request(kind, req_id, 0, args))
    }

    /// Every whole message waiting in `rsp[]`, as (type, req_id, payload). A reply stream
    /// the framer rejects ends the list.
    pub fn receive(&mut self) -> Result<Vec<(u32, u32, Vec<u8>)>, StreamError> {
        let mut out = Vec::new();
        let mut buffer = [0u8; 1024];
        loop {
            let count = self.responses.read(&self.page, &mut buffer)?;
            if count == 0 {
                return Ok(out);
            }
            let fed = self.framer.feed_all(&buffer[..count], |message| {
                if let Ok((header, payload)) = wire::split_message(&message) {
                    out.push((header.kind, header.req_id, payload.to_vec()));
                }
            });
            if fed.is_err() {
                return Ok(out);
            }
        }
    }
}
