//! The front-end half of a xenbus device, shared by the hostile test front-ends
//! (`blk-hostile`, `net-hostile`): find the back-end from the device directory, follow its
//! state, publish keys in one transaction, and wait for `go` on the console.
//!
//! Every failure ends the domain with a line `<prefix>: <what>` and a crash, which is what
//! the scenarios judge.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Display;

use driver_domains::abi::sched::SHUTDOWN_CRASH;
use driver_domains::events::{self, Port};
use driver_domains::xenbus::{self, XenbusState};
use driver_domains::xenstore::{Access, Client, Perm, Tx};
use driver_domains::{console_ring, hypercall, println, time};

/// How long one handshake step may take.
const STEP_NS: u64 = 60_000_000_000;
/// How long the back-end has to close a device after a misbehaviour.
pub const CLOSE_NS: u64 = 30_000_000_000;
/// How long a front-end waits for `go` on its console.
const GO_NS: u64 = 900_000_000_000;

/// Prints `<prefix>: <what>` and crashes the domain.
pub fn fail(prefix: &str, what: impl Display) -> ! {
    println!("{prefix}: {what}");
    hypercall::shutdown(SHUTDOWN_CRASH)
}

/// The time `ns` from now.
pub fn deadline_in(ns: u64) -> u64 {
    time::now_ns().saturating_add(ns)
}

/// A device's front-end directory and its back-end's.
pub struct Front {
    pub xs: Client,
    /// This domain.
    pub me: u16,
    /// The back-end's domain (`backend-id`).
    pub backend: u16,
    /// The front-end's directory (`device/<class>/<n>`).
    pub fdir: String,
    /// The back-end's directory (`backend`).
    pub bdir: String,
    prefix: &'static str,
}

impl Front {
    /// The device at `fdir`: reads its `backend` and `backend-id`.
    pub fn open(xs: Client, me: u16, fdir: String, prefix: &'static str) -> Self {
        let mut front = Self {
            xs,
            me,
            backend: 0,
            bdir: String::new(),
            fdir,
            prefix,
        };
        let fdir = front.fdir.clone();
        front.bdir = front.read(&format!("{fdir}/backend"));
        let backend = front.read(&format!("{fdir}/backend-id"));
        front.backend = backend
            .parse()
            .unwrap_or_else(|_| fail(prefix, format_args!("bad backend-id {backend:?}")));
        front
    }

    pub fn read(&mut self, path: &str) -> String {
        let prefix = self.prefix;
        self.xs
            .read_string(Tx::NONE, path)
            .unwrap_or_else(|e| fail(prefix, format_args!("reading {path} failed: {e}")))
    }

    /// Waits (at most a minute) until the back-end's state satisfies `pred`.
    pub fn wait_backend(&mut self, pred: impl Fn(XenbusState) -> bool) -> XenbusState {
        let (bdir, prefix) = (self.bdir.clone(), self.prefix);
        xenbus::wait_for_state(&mut self.xs, &bdir, pred, Some(deadline_in(STEP_NS)))
            .unwrap_or_else(|e| fail(prefix, format_args!("waiting for the backend failed: {e}")))
    }

    /// The back-end's state now (`Closed` if it cannot be read).
    pub fn backend_state(&mut self) -> XenbusState {
        let bdir = self.bdir.clone();
        xenbus::read_state(&mut self.xs, Tx::NONE, &bdir).unwrap_or(XenbusState::Closed)
    }

    pub fn switch(&mut self, state: XenbusState) {
        let (fdir, prefix) = (self.fdir.clone(), self.prefix);
        xenbus::switch_state(&mut self.xs, &fdir, state)
            .unwrap_or_else(|e| fail(prefix, format_args!("switching to {state} failed: {e}")));
    }

    /// Writes `nodes` under the front-end's directory in one transaction, owned by this
    /// domain and readable by the back-end, then switches to `then`.
    pub fn publish(&mut self, nodes: &[(&str, String)], then: XenbusState) {
        let perms = [
            Perm::new(Access::None, self.me),
            Perm::new(Access::Read, self.backend),
        ];
        let (fdir, prefix) = (self.fdir.clone(), self.prefix);
        self.xs
            .transaction(|xs, tx| {
                for (key, value) in nodes {
                    let path = format!("{fdir}/{key}");
                    xs.write_str(tx, &path, value)?;
                    xs.set_perms(tx, &path, &perms)?;
                }
                Ok(())
            })
            .unwrap_or_else(|e| fail(prefix, format_args!("publishing the rings failed: {e}")));
        self.switch(then);
    }

    /// After a misbehaviour: waits at most 30 s for the back-end to close the device,
    /// notifying `storm` a thousand times a round meanwhile if given, and prints
    /// `<prefix>: backend closed the <device>` or `<prefix>: backend still <state> after 30 s`.
    pub fn wait_closed(&mut self, device: &str, storm: Option<Port>) {
        let deadline = deadline_in(CLOSE_NS);
        let closed = loop {
            if self.backend_state() == XenbusState::Closed {
                break true;
            }
            if time::now_ns() >= deadline {
                break false;
            }
            match storm {
                Some(port) => {
                    for _ in 0..1000 {
                        let _ = events::send(port);
                    }
                }
                None => time::sleep_ms(10),
            }
        };
        let prefix = self.prefix;
        if closed {
            println!("{prefix}: backend closed the {device}");
        } else {
            let state = self.backend_state();
            println!("{prefix}: backend still {state} after 30 s");
        }
    }
}

/// Waits for a line `go` on the console (the scenario's signal), at most 15 minutes.
pub fn wait_for_go(prefix: &str) {
    println!("{prefix}: waiting for go on the console");
    let deadline = deadline_in(GO_NS);
    let mut line = Vec::new();
    loop {
        let mut buf = [0u8; 64];
        let n = console_ring::read(&mut buf);
        for &byte in &buf[..n] {
            if byte == b'\n' || byte == b'\r' {
                if line == b"go" {
                    return;
                }
                line.clear();
            } else if line.len() < 16 {
                line.push(byte);
            }
        }
        if n == 0 {
            if time::now_ns() >= deadline {
                println!("{prefix}: no go on the console");
                hypercall::shutdown(SHUTDOWN_CRASH);
            }
            time::sleep_ms(20);
        }
    }
}
