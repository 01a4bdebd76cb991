//! `grant-storm`: a granter that grants, revokes and grants again one page as fast as it
//! can, then dies while it is mapped, and a mapper that maps, writes and unmaps that grant
//! from every vCPU at once (XSA-391 class). Neither may disturb the microvisor or anyone
//! else: the granter's revokes fail while the page is mapped (and succeed once it is not),
//! the mapper's maps of a revoked or stale grant are refused, and after the granter's
//! death its mappings read a zeroed stand-in page until unmapped.
//!
//! The grant reference travels through xenstore: the granter writes it to its own
//! `data/storm-gref` (readable by the mapper) each time it grants anew.
//!
//! | role | keys | prints |
//! |---|---|---|
//! | `granter` | `peer` (the mapper's name), `seconds` (5) | `grant-storm: granter: <g> grants, <r> revoked, <b> revokes refused while mapped`, then dies while mapped (`SHUTDOWN_POWEROFF`) |
//! | `mapper` | `peer` (the granter's name), `seconds` (10) | `grant-storm: mapper: <m> maps, <w> writes read back, <f> maps refused, <u> unmaps refused; after the granter died: <d> maps refused` and `grant-storm: done` |

use alloc::format;
use alloc::string::ToString;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use driver_domains::abi::sched::SHUTDOWN_CRASH;
use driver_domains::grant_table::{self, GrantRef};
use driver_domains::ring::SharedPage;
use driver_domains::xenstore::{self, Access, Client, Perm, Tx};
use driver_domains::{cmdline, hypercall, println, smp, time, xenbus, BootInfo, OwnedPage};

const PREFIX: &str = "grant-storm";
const LOOKUP_NS: u64 = 60_000_000_000;

fn fail(what: impl core::fmt::Display) -> ! {
    println!("{PREFIX}: {what}");
    hypercall::shutdown(SHUTDOWN_CRASH)
}

fn gref_path(granter: u16) -> alloc::string::String {
    format!("{}/data/storm-gref", xenstore::domain_path(granter))
}

fn peer(info: &BootInfo, xs: &mut Client) -> u16 {
    let Some(name) = cmdline::get(info.cmdline, "peer") else {
        fail("needs peer=<name>");
    };
    let deadline = time::now_ns().saturating_add(LOOKUP_NS);
    xenbus::lookup_domid(xs, name, Some(deadline))
        .unwrap_or_else(|e| fail(format_args!("peer {name} not found: {e}")))
}

/// `mode=grant-storm role=granter|mapper peer=<name> [seconds=S]`.
pub fn grant_storm(info: &BootInfo) {
    let mut xs = Client::connect().unwrap_or_else(|e| fail(format_args!("no xenstore: {e}")));
    match cmdline::get(info.cmdline, "role") {
        Some("granter") => granter(info, &mut xs),
        Some("mapper") => mapper(info, &mut xs),
        other => fail(format_args!("needs role=granter|mapper, not {other:?}")),
    }
}

fn granter(info: &BootInfo, xs: &mut Client) {
    let me = info.domain.domid;
    let mapper = peer(info, xs);
    let seconds = crate::arg(info, "seconds", 5);
    let page = OwnedPage::new().unwrap_or_else(|| fail("no memory"));
    page.store_u32(0, 0x5107_0000);
    let path = gref_path(me);
    let perms = [Perm::new(Access::None, me), Perm::new(Access::Read, mapper)];
    let publish = |xs: &mut Client, gref: GrantRef| {
        xs.write_str(Tx::NONE, &path, &gref.0.to_string())
            .and_then(|()| xs.set_perms(Tx::NONE, &path, &perms))
            .unwrap_or_else(|e| fail(format_args!("publishing the gref failed: {e}")));
    };
    let deadline = time::now_ns().saturating_add(seconds * 1_000_000_000);
    let (mut grants, mut revoked, mut refused) = (0u64, 0u64, 0u64);
    let mut gref = page
        .grant(mapper, false)
        .unwrap_or_else(|e| fail(format_args!("grant failed: {e}")));
    grants += 1;
    publish(xs, gref);
    while time::now_ns() < deadline {
        time::sleep_ms(2);
        match page.end_access(gref) {
            Ok(()) => {
                revoked += 1;
                gref = page
                    .grant(mapper, false)
                    .unwrap_or_else(|e| fail(format_args!("grant failed: {e}")));
                grants += 1;
                publish(xs, gref);
            }
            Err(_) => refused += 1,
        }
    }
    println!(
        "{PREFIX}: granter: {grants} grants, {revoked} revoked, {refused} revokes refused while mapped"
    );
    // Die with the grant live (and, most likely, mapped).
}

static GREF: AtomicU32 = AtomicU32::new(u32::MAX);
static GRANTER: AtomicU32 = AtomicU32::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static GRANTER_GONE: AtomicBool = AtomicBool::new(false);
static MAPS: AtomicU64 = AtomicU64::new(0);
static WRITES: AtomicU64 = AtomicU64::new(0);
static MAP_REFUSED: AtomicU64 = AtomicU64::new(0);
static UNMAP_REFUSED: AtomicU64 = AtomicU64::new(0);
static REFUSED_AFTER: AtomicU64 = AtomicU64::new(0);
static MAPPERS_DONE: AtomicU32 = AtomicU32::new(0);

/// Maps, writes and reads back, unmaps the current grant `count` times.
fn churn(id: u32, count: u32) {
    let granter = GRANTER.load(Ordering::Acquire) as u16;
    for i in 0..count {
        let gref = GREF.load(Ordering::Acquire);
        if gref == u32::MAX {
            return;
        }
        let gone = GRANTER_GONE.load(Ordering::Acquire);
        match grant_table::map_grant(granter, GrantRef(gref), false) {
            Ok(page) => {
                MAPS.fetch_add(1, Ordering::Relaxed);
                let value = (id << 24) | i;
                page.store_u32(8, value);
                // After the granter's death the stand-in page is ours alone, so this still
                // reads back what was written.
                if page.load_u32(8) == value {
                    WRITES.fetch_add(1, Ordering::Relaxed);
                }
                if page.unmap().is_err() {
                    UNMAP_REFUSED.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) if gone => {
                REFUSED_AFTER.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                MAP_REFUSED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn mapper_vcpu(id: u32) -> ! {
    while !STOP.load(Ordering::Acquire) {
        churn(id, 50);
        hypercall::sched_yield();
    }
    MAPPERS_DONE.fetch_add(1, Ordering::Release);
    smp::park()
}

fn mapper(info: &BootInfo, xs: &mut Client) {
    let granter = peer(info, xs);
    GRANTER.store(u32::from(granter), Ordering::Release);
    let seconds = crate::arg(info, "seconds", 10);
    let path = gref_path(granter);
    let mut started = 0;
    for id in 1..info.domain.vcpus {
        match smp::start_vcpu(id, mapper_vcpu) {
            Ok(()) => started += 1,
            Err(e) => println!("{PREFIX}: vcpu {id} did not start: {e}"),
        }
    }
    let deadline = time::now_ns().saturating_add(seconds * 1_000_000_000);
    while time::now_ns() < deadline {
        match xs.read_string(Tx::NONE, &path) {
            Ok(text) => {
                if let Ok(gref) = text.trim().parse::<u32>() {
                    GREF.store(gref, Ordering::Release);
                }
            }
            // The granter's home went with it.
            Err(_) if GREF.load(Ordering::Acquire) != u32::MAX => {
                GRANTER_GONE.store(true, Ordering::Release);
            }
            Err(_) => {}
        }
        churn(0, 20);
    }
    STOP.store(true, Ordering::Release);
    while MAPPERS_DONE.load(Ordering::Acquire) < started {
        hypercall::sched_yield();
    }
    println!(
        "{PREFIX}: mapper: {} maps, {} writes read back, {} maps refused, {} unmaps refused; after the granter died: {} maps refused",
        MAPS.load(Ordering::Relaxed),
        WRITES.load(Ordering::Relaxed),
        MAP_REFUSED.load(Ordering::Relaxed),
        UNMAP_REFUSED.load(Ordering::Relaxed),
        REFUSED_AFTER.load(Ordering::Relaxed),
    );
    println!("{PREFIX}: done");
}
