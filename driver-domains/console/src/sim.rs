//! A simulated machine for the backend: domains listed by the test, console pages in
//! process memory that the test (playing each domain) shares with the backend, ports and
//! notifications recorded, the UART's output collected, and the attach line's (COM2) with a
//! client as slow as the test wants.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;

use microvisor_abi::microvisor_op::{
    DomainEntry, DOMAIN_FLAG_DYING, DOMAIN_FLAG_RESTARTING, DOMAIN_FLAG_SELF,
};
use xen_ring::{LocalPage, SharedPage};

use crate::backend::Platform;
use crate::cons_ring::OUTPUT;

/// The simulated console domain's own id.
pub const SELF: u16 = 1;

/// A console page the backend and the test share.
#[derive(Clone)]
pub struct SimPage(pub Rc<LocalPage>, Rc<Cell<u32>>);

impl SimPage {
    fn new() -> Self {
        Self(Rc::new(LocalPage::new()), Rc::new(Cell::new(0)))
    }

    /// Plays a writer on another CPU that refills `out[]` the moment the backend looks:
    /// the next `count` reads of `out_prod` find the ring full again.
    pub fn refill_on_read(&self, count: u32) {
        self.1.set(count);
    }

    /// Refills left (see [`SimPage::refill_on_read`]).
    pub fn refills_left(&self) -> u32 {
        self.1.get()
    }
}

impl SharedPage for SimPage {
    fn size_bytes(&self) -> usize {
        self.0.size_bytes()
    }
    fn load_u32(&self, offset: usize) -> u32 {
        if offset == OUTPUT.prod_offset && self.1.get() > 0 {
            self.1.set(self.1.get() - 1);
            let full = self
                .0
                .load_u32(OUTPUT.cons_offset)
                .wrapping_add(OUTPUT.size_bytes);
            self.0.store_u32(OUTPUT.prod_offset, full);
        }
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
    /// Every domain's console page (created when it is first listed).
    pub pages: BTreeMap<u16, SimPage>,
    /// How many mappings of each domain's page the backend holds.
    pub mapped: BTreeMap<u16, usize>,
    /// Bound local ports: local port -> (domid, remote port).
    pub bound: BTreeMap<u32, (u16, u32)>,
    next_port: u32,
    /// The last build number given (`DomainEntry::instance`).
    last_instance: u32,
    /// Ports notified, in order.
    pub notified: Vec<u32>,
    /// Everything written to the UART.
    pub uart: Vec<u8>,
    /// Everything the attach line's UART (COM2) took.
    pub attach: Vec<u8>,
    /// How many more bytes the attach line's UART takes (`None`: all; a client that does
    /// not read is `Some(0)`).
    pub attach_room: Option<usize>,
}

impl Sim {
    /// A machine listing only the console domain itself ([`SELF`]).
    pub fn new() -> Self {
        let mut sim = Self {
            next_port: 20,
            ..Self::default()
        };
        sim.list(SELF, DOMAIN_FLAG_SELF, 0, "console");
        sim
    }

    /// Lists a domain (replacing an entry with the same id); gives it a zeroed console
    /// page if it has none yet. A domain listed already keeps its build number
    /// (`instance`); one that was not gets a new one.
    pub fn list(&mut self, domid: u16, flags: u16, console_port: u32, name: &str) {
        let instance = match self.instance_of(domid) {
            Some(instance) if instance != 0 => instance,
            _ => self.new_instance(),
        };
        self.list_build(domid, instance, flags, console_port, name);
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
    /// instance, a fresh zeroed console page (the old one stays with whoever still maps
    /// it). Returns the new instance.
    pub fn list_restarted(&mut self, domid: u16, console_port: u32, name: &str) -> u32 {
        let instance = self.new_instance();
        self.pages.insert(domid, SimPage::new());
        self.list_build(domid, instance, 0, console_port, name);
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

    /// Lists a domain as build `instance` (replacing an entry with the same id); gives it
    /// a zeroed console page if it has none yet.
    pub fn list_build(
        &mut self,
        domid: u16,
        instance: u32,
        flags: u16,
        console_port: u32,
        name: &str,
    ) {
        let mut entry = DomainEntry {
            domid,
            flags,
            console_port,
            instance,
            ..DomainEntry::default()
        };
        entry.name[..name.len()].copy_from_slice(name.as_bytes());
        self.listed.retain(|e| e.domid != domid);
        self.listed.push(entry);
        self.pages.entry(domid).or_insert_with(SimPage::new);
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

    /// The UART output since the last call, as lines without their `\r\n`.
    pub fn take_lines(&mut self) -> Vec<String> {
        let text =
            String::from_utf8(core::mem::take(&mut self.uart)).expect("UART output is ASCII");
        assert!(
            text.is_empty() || text.ends_with("\r\n"),
            "partial UART line: {text:?}"
        );
        text.split_terminator("\r\n").map(String::from).collect()
    }
}

/// The backend must never unmap, close or notify what it does not hold: the simulation
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

    fn uart_write(&mut self, bytes: &[u8]) {
        self.uart.extend_from_slice(bytes);
    }

    fn attach_write(&mut self, bytes: &[u8]) -> usize {
        let count = self
            .attach_room
            .map_or(bytes.len(), |room| room.min(bytes.len()));
        if let Some(room) = &mut self.attach_room {
            *room -= count;
        }
        self.attach.extend_from_slice(&bytes[..count]);
        count
    }
}
