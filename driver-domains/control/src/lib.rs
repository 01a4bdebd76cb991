//! The control domain's logic, kept pure so it is tested on the host:
//! - [`mgmt`]: the management channel's frames and messages, shared with the host's `xl`;
//! - [`rows`] and [`resolve`]: the microvisor's domain list as `xl list` shows it, and a
//!   domain named on `xl`'s command line (by name or id);
//! - [`Upload`]: one `xl create` under way, its images arriving in pieces, checked;
//! - [`Lifecycle`]: which domains this control domain created, with their `on_*` actions,
//!   and what to do when one of them shuts down.
//!
//! The binary (`main.rs`) does the I/O: the management channel (a virtio console), the
//! domain-control hypercalls, and xenstore.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod mgmt;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::mgmt::{state_letters, Action, CreatePlan, DomainRow};
use microvisor_abi::domctl::*;

/// The domains as `xl list` shows them.
pub fn rows(entries: &[DomctlEntry]) -> Vec<DomainRow> {
    entries
        .iter()
        .map(|e| DomainRow {
            domid: e.domid,
            name: e.name_str().to_string(),
            memory_mib: e.memory_bytes >> 20,
            vcpus: e.vcpus,
            state: state_letters(e.state, e.reason).to_string(),
            cpu_ns: e.cpu_ns,
            vm_exits: e.vm_exits,
            hypercalls: e.hypercalls,
            created: e.flags & DOMCTL_FLAG_CREATED != 0,
        })
        .collect()
}

/// The domain `text` names: a name, or a domain id in decimal.
pub fn resolve<'a>(entries: &'a [DomctlEntry], text: &str) -> Result<&'a DomctlEntry, String> {
    if let Some(e) = entries.iter().find(|e| e.name_str() == text) {
        return Ok(e);
    }
    if let Ok(id) = text.parse::<u16>() {
        if let Some(e) = entries.iter().find(|e| e.domid == id) {
            return Ok(e);
        }
    }
    Err(format!(
        "no domain is named or numbered `{text}` (`xl list` shows the domains)"
    ))
}

/// One `xl create` under way: the plan, then the kernel's bytes and the ramdisk's, in order.
pub struct Upload {
    plan: CreatePlan,
    bytes: Vec<u8>,
    total: u64,
}

impl Upload {
    /// Starts an upload of the images `plan` announces, refusing more than `limit` bytes in
    /// all (the control domain's room for them).
    pub fn begin(plan: CreatePlan, limit: u64) -> Result<Self, String> {
        if plan.kernel_bytes == 0 {
            return Err("the kernel is empty".into());
        }
        let total = plan
            .kernel_bytes
            .checked_add(plan.ramdisk_bytes.unwrap_or(0))
            .filter(|&t| t <= limit)
            .ok_or_else(|| {
                format!(
                    "the kernel and ramdisk ({} bytes) do not fit the control domain's {} MiB for images: give it more memory",
                    plan.kernel_bytes.saturating_add(plan.ramdisk_bytes.unwrap_or(0)),
                    limit >> 20
                )
            })?;
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(total as usize)
            .map_err(|_| "the control domain has no memory left for the images".to_string())?;
        Ok(Upload { plan, bytes, total })
    }

    /// The next piece; pieces must come in order, without gaps or overlap.
    pub fn data(&mut self, offset: u64, piece: &[u8]) -> Result<(), String> {
        if offset != self.bytes.len() as u64 {
            return Err(format!(
                "image piece at offset {offset}, expected {}",
                self.bytes.len()
            ));
        }
        if offset + piece.len() as u64 > self.total {
            return Err(format!(
                "image pieces go past the announced {} bytes",
                self.total
            ));
        }
        self.bytes.extend_from_slice(piece);
        Ok(())
    }

    /// All bytes arrived: the plan and the images, split into kernel and ramdisk.
    pub fn finish(self) -> Result<Images, String> {
        if self.bytes.len() as u64 != self.total {
            return Err(format!(
                "only {} of {} image bytes arrived",
                self.bytes.len(),
                self.total
            ));
        }
        Ok(Images {
            plan: self.plan,
            bytes: Arc::from(self.bytes.into_boxed_slice()),
        })
    }
}

/// A created domain's plan and images, kept to build it again (`on_reboot = "restart"`).
#[derive(Clone, Debug)]
pub struct Images {
    pub plan: CreatePlan,
    bytes: Arc<[u8]>,
}

impl Images {
    /// Shares the bytes with an equal set already kept in `pool` (many domains from the same
    /// kernel keep one copy), or adds them there; forgets the pool's sets no domain keeps.
    pub fn share(&mut self, pool: &mut Vec<Arc<[u8]>>) {
        pool.retain(|kept| Arc::strong_count(kept) > 1);
        match pool.iter().find(|kept| kept[..] == self.bytes[..]) {
            Some(kept) => self.bytes = kept.clone(),
            None => pool.push(self.bytes.clone()),
        }
    }

    pub fn kernel(&self) -> &[u8] {
        &self.bytes[..self.plan.kernel_bytes as usize]
    }

    pub fn ramdisk(&self) -> Option<&[u8]> {
        self.plan
            .ramdisk_bytes
            .map(|_| &self.bytes[self.plan.kernel_bytes as usize..])
    }
}

/// What to do about a created domain that shut down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Destroy,
    /// Destroy it and build it again from its images.
    Restart,
    /// Leave it as it is.
    Keep,
}

/// The domains this control domain created, by id, with their images.
#[derive(Default)]
pub struct Lifecycle {
    created: Vec<(u16, Images)>,
    /// Ids already acted on, so a shutdown is handled once.
    handled: Vec<u16>,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, domid: u16, images: Images) {
        self.created.push((domid, images));
    }

    /// Forgets a domain (destroyed); returns its images.
    pub fn remove(&mut self, domid: u16) -> Option<Images> {
        let at = self.created.iter().position(|(id, _)| *id == domid)?;
        self.handled.retain(|&id| id != domid);
        Some(self.created.remove(at).1)
    }

    /// For each created domain that shut down and was not handled yet: its id, name, the
    /// reason's name and the step its `on_*` action asks for. Domains that are gone from
    /// the list are forgotten.
    pub fn due(&mut self, entries: &[DomctlEntry]) -> Vec<(u16, String, &'static str, Step)> {
        self.created
            .retain(|(id, _)| entries.iter().any(|e| e.domid == *id));
        let mut out = Vec::new();
        for (id, images) in &self.created {
            let Some(e) = entries.iter().find(|e| e.domid == *id) else {
                continue;
            };
            if e.state != DOMCTL_STATE_SHUTDOWN || self.handled.contains(id) {
                continue;
            }
            let (reason, action) = match e.reason {
                DOMCTL_REASON_REBOOT => ("reboot", images.plan.on_reboot),
                DOMCTL_REASON_CRASH => ("crash", images.plan.on_crash),
                _ => ("poweroff", images.plan.on_poweroff),
            };
            let step = match action {
                Action::Destroy => Step::Destroy,
                Action::Restart => Step::Restart,
                Action::Preserve => Step::Keep,
            };
            out.push((*id, images.plan.name.clone(), reason, step));
        }
        for (id, ..) in &out {
            self.handled.push(*id);
        }
        out
    }
}

/// The xenstore node where the control domain gives the xenstore domain a created domain's
/// devices (the xenstore domain's run-time device table).
pub fn devices_path(name: &str) -> String {
    format!("/tool/devices/{name}")
}

/// The xenstore value `xl shutdown`/`xl reboot` writes to the guest's `control/shutdown`.
pub fn shutdown_word(reboot: bool) -> &'static str {
    if reboot {
        "reboot"
    } else {
        "poweroff"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(domid: u16, name: &str, state: u8, reason: u8) -> DomctlEntry {
        let mut e = DomctlEntry {
            domid,
            state,
            reason,
            vcpus: 1,
            memory_bytes: 32 << 20,
            flags: DOMCTL_FLAG_CREATED,
            ..DomctlEntry::default()
        };
        e.name[..name.len()].copy_from_slice(name.as_bytes());
        e
    }

    fn plan(kernel: u64, ramdisk: Option<u64>) -> CreatePlan {
        CreatePlan {
            name: "demo".into(),
            memory_mib: 32,
            vcpus: 1,
            cmdline: String::new(),
            kernel_bytes: kernel,
            ramdisk_bytes: ramdisk,
            on_poweroff: Action::Destroy,
            on_reboot: Action::Restart,
            on_crash: Action::Preserve,
            devices: String::new(),
        }
    }

    #[test]
    fn rows_and_names() {
        let list = [
            entry(1, "xenstore", DOMCTL_STATE_RUNNING, 0),
            entry(7, "demo", DOMCTL_STATE_PAUSED, 0),
        ];
        let r = rows(&list);
        assert_eq!(r[1].state, "--p---");
        assert_eq!(r[1].memory_mib, 32);
        assert_eq!(resolve(&list, "demo").unwrap().domid, 7);
        assert_eq!(resolve(&list, "1").unwrap().domid, 1);
        let e = resolve(&list, "nope").unwrap_err();
        assert!(e.contains("`nope`") && e.contains("xl list"), "{e}");
    }

    #[test]
    fn uploads_are_checked() {
        assert!(Upload::begin(plan(0, None), 1 << 20).is_err());
        assert!(Upload::begin(plan(1 << 20, Some(1)), 1 << 20)
            .err()
            .unwrap()
            .contains("give it more memory"));
        let mut u = Upload::begin(plan(4, Some(2)), 1 << 20).unwrap();
        assert!(u.data(1, b"x").is_err(), "a gap");
        u.data(0, b"kern").unwrap();
        assert!(u.data(4, b"rdx").is_err(), "past the end");
        u.data(4, b"rd").unwrap();
        let images = u.finish().unwrap();
        assert_eq!(images.kernel(), b"kern");
        assert_eq!(images.ramdisk(), Some(&b"rd"[..]));
        let short = Upload::begin(plan(4, None), 16).unwrap();
        assert!(short.finish().unwrap_err().contains("only 0 of 4"));
    }

    #[test]
    fn equal_images_are_kept_once() {
        let images = |bytes: &[u8]| {
            let mut u = Upload::begin(plan(bytes.len() as u64, None), 64).unwrap();
            u.data(0, bytes).unwrap();
            u.finish().unwrap()
        };
        let mut pool = Vec::new();
        let mut a = images(b"kernel");
        let mut b = images(b"kernel");
        let mut c = images(b"other");
        a.share(&mut pool);
        b.share(&mut pool);
        c.share(&mut pool);
        assert_eq!(pool.len(), 2);
        assert!(Arc::ptr_eq(&a.bytes, &b.bytes));
        drop((a, b));
        c.share(&mut pool);
        assert_eq!(pool.len(), 1, "a set no domain keeps is forgotten");
    }

    #[test]
    fn lifecycle_steps_follow_the_actions_once() {
        let mut life = Lifecycle::new();
        let mut u = Upload::begin(plan(1, None), 16).unwrap();
        u.data(0, b"k").unwrap();
        let images = u.finish().unwrap();
        life.add(7, images.clone());
        life.add(8, images.clone());
        life.add(9, images);
        let list = [
            entry(7, "demo", DOMCTL_STATE_SHUTDOWN, DOMCTL_REASON_POWEROFF),
            entry(8, "demo", DOMCTL_STATE_SHUTDOWN, DOMCTL_REASON_REBOOT),
            entry(9, "demo", DOMCTL_STATE_SHUTDOWN, DOMCTL_REASON_CRASH),
        ];
        let due = life.due(&list);
        let steps: Vec<_> = due.iter().map(|d| (d.0, d.2, d.3)).collect();
        assert_eq!(
            steps,
            [
                (7, "poweroff", Step::Destroy),
                (8, "reboot", Step::Restart),
                (9, "crash", Step::Keep)
            ]
        );
        assert!(life.due(&list).is_empty(), "each shutdown is handled once");
        assert!(life.remove(8).is_some());
        // Gone from the list: forgotten.
        assert!(life.due(&[]).is_empty());
        assert!(life.remove(7).is_none());
    }
}
