//! The PV console ring (`xencons_interface`, `XEN-ABI.md` §3.7): output, and input with
//! [`read`].
//!
//! When the builder gave the domain a console ring (`HVM_PARAM_CONSOLE_PFN` and
//! `HVM_PARAM_CONSOLE_EVTCHN` both non-zero), [`crate::print!`]/[`crate::println!`] write
//! into its `out[2048]` array (at offset 1024) instead of calling `console_io`: copy the
//! bytes at `out[out_prod & 2047]`, then release-store `out_prod` (offset 3084) and send on
//! the console port. The backend advances `out_cons` (offset 3080). When the ring is full
//! the writer yields and retries; if the backend makes no progress for [`STALL_NS`], or
//! publishes impossible indices, the ring is abandoned and output goes to `console_io` from
//! then on (with one line saying so).
//!
//! Output before `init` (early boot), panics and exception reports always use
//! `console_io` (see [`crate::console`]).

use core::sync::atomic::{AtomicBool, Ordering};

use microvisor_abi::hvm::{HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN};
use microvisor_abi::rings::console::{
    IN, IN_CONS, IN_PROD, IN_SIZE, OUT, OUT_CONS, OUT_PROD, OUT_SIZE,
};
use spin::Mutex;

use crate::byte_ring;
use crate::events::{self, Port};
use crate::layout::IDENTITY_MAP_END;
use crate::shared_mem::ForeignPage;
use crate::{hypercall, time};
use xen_ring::SharedPage;

/// How long a full ring may stay full before the runtime gives up on it.
pub const STALL_NS: u64 = 5_000_000_000;

struct Ring {
    page: ForeignPage,
    port: Port,
}

static RING: Mutex<Option<Ring>> = Mutex::new(None);

/// `out[]`: this domain produces (`out_prod`), the backend consumes (`out_cons`).
const OUTPUT: byte_ring::Spec = byte_ring::Spec {
    data: OUT,
    size: OUT_SIZE,
    prod: OUT_PROD,
    cons: OUT_CONS,
};
/// `in[]`: the backend produces (`in_prod`), this domain consumes (`in_cons`).
const INPUT: byte_ring::Spec = byte_ring::Spec {
    data: IN,
    size: IN_SIZE,
    prod: IN_PROD,
    cons: IN_CONS,
};
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether output goes to the console ring.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// The console port, if the ring is in use.
pub fn port() -> Option<Port> {
    RING.lock().as_ref().map(|r| r.port)
}

/// Switches output to the console ring if the domain has one; called at boot with the end
/// of the domain's RAM. Returns whether it did.
pub(crate) fn init(ram_top: u64) -> bool {
    let pfn = hypercall::hvm_get_param(HVM_PARAM_CONSOLE_PFN).unwrap_or(0);
    let port = hypercall::hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN).unwrap_or(0);
    let Some(addr) = pfn.checked_mul(4096) else {
        return false;
    };
    if pfn == 0 || port == 0 || port >= 4096 || addr < ram_top || addr >= IDENTITY_MAP_END {
        return false;
    }
    // SAFETY: the builder mapped the console ring page at this address, outside the
    // domain's RAM (checked) and below 4 GiB, for the domain's lifetime; no Rust object is
    // there and the backend and this module access it atomically.
    let page = unsafe { ForeignPage::new(addr) };
    *RING.lock() = Some(Ring {
        page,
        port: Port(port as u32),
    });
    ACTIVE.store(true, Ordering::Release);
    true
}

fn abandon(why: &str) {
    ACTIVE.store(false, Ordering::Release);
    let mut line = heapless::String::<96>::new();
    let _ = core::fmt::write(
        &mut line,
        format_args!("runtime: console ring {why}, using console_io\n"),
    );
    hypercall::console_write(line.as_bytes());
}

/// Wait (at most `timeout_ns`) until the backend has consumed everything written, so the
/// last lines are not lost when the domain shuts down right after printing them.
pub(crate) fn drain(timeout_ns: u64) {
    if !active() {
        return;
    }
    let Some(guard) = RING.try_lock() else { return };
    let Some(ring) = guard.as_ref() else { return };
    let deadline = time::now_ns().saturating_add(timeout_ns);
    while ring.page.load_u32(OUT_CONS) != ring.page.load_u32(OUT_PROD) && time::now_ns() < deadline
    {
        let _ = events::send(ring.port);
        hypercall::sched_yield();
    }
}

/// Writes `bytes` to the ring; returns how many went in (all of them unless the ring is not
/// in use or was just abandoned: the caller sends the rest with `console_io`).
pub(crate) fn write(bytes: &[u8]) -> usize {
    let guard = RING.lock();
    let Some(ring) = guard.as_ref() else {
        return 0;
    };
    if !active() {
        return 0;
    }
    let mut written = 0;
    let mut stalled_since: Option<u64> = None;
    while written < bytes.len() {
        let Ok(n) = byte_ring::produce(&ring.page, &OUTPUT, &bytes[written..]) else {
            abandon("has impossible indices");
            return written;
        };
        if n == 0 {
            let now = time::now_ns();
            match stalled_since {
                None => stalled_since = Some(now),
                Some(since) if now.saturating_sub(since) > STALL_NS => {
                    abandon("stalled");
                    return written;
                }
                Some(_) => {}
            }
            hypercall::sched_yield();
            continue;
        }
        stalled_since = None;
        let _ = events::send(ring.port);
        written += n;
    }
    written
}

/// Moves typed input (what the console backend put in `in[]`) into `out`; returns how many
/// bytes (0: none, or no console ring). The backend is told that `in[]` has room again.
pub fn read(out: &mut [u8]) -> usize {
    let guard = RING.lock();
    let Some(ring) = guard.as_ref() else {
        return 0;
    };
    match byte_ring::consume(&ring.page, &INPUT, out) {
        Ok(0) | Err(_) => 0,
        Ok(n) => {
            let _ = events::send(ring.port);
            n
        }
    }
}
