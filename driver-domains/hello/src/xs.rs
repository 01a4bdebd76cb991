//! Modes that use xenstore directly: `xs-flood` (runs into each per-domain quota of the
//! xenstore domain) and `xs-check` (plain writes and reads; run beside `xs-flood`, it shows
//! the flooding domain hurts only itself).

use alloc::format;

use driver_domains::abi::sched::SHUTDOWN_CRASH;
use driver_domains::xenstore::{self, Client, Error, Tx};
use driver_domains::{hypercall, println, BootInfo};

/// Each flood stops here even if no quota was hit.
const MAX_NODES: u64 = 100_000;
const MAX_WATCHES: u64 = 10_000;
const MAX_TRANSACTIONS: u64 = 10_000;

fn connect(prefix: &str) -> Client {
    Client::connect().unwrap_or_else(|e| {
        println!("{prefix}: xenstore unavailable: {e}");
        hypercall::shutdown(SHUTDOWN_CRASH)
    })
}

/// Runs `step(i)` for i = 0, 1, ... until it fails or `limit` steps succeeded; returns the
/// number of successes and the error.
fn until_error(limit: u64, mut step: impl FnMut(u64) -> Result<(), Error>) -> (u64, Option<Error>) {
    for i in 0..limit {
        if let Err(e) = step(i) {
            return (i, Some(e));
        }
    }
    (limit, None)
}

fn report(what: &str, plural: &str, (count, error): (u64, Option<Error>)) {
    match error {
        Some(e) => println!(
            "xs-flood: {what} quota hit after {count} {plural} ({})",
            e.name()
        ),
        None => println!("xs-flood: no {what} quota after {count} {plural}"),
    }
}

/// `mode=xs-flood`.
pub fn xs_flood(info: &BootInfo) {
    let mut xs = connect("xs-flood");
    let home = xenstore::domain_path(info.domain.domid);

    let nodes = until_error(MAX_NODES, |i| {
        xs.write_str(Tx::NONE, &format!("{home}/flood/n{i}"), "x")
    });
    report("node", "nodes", nodes);

    let watches = until_error(MAX_WATCHES, |i| {
        // Every new watch fires once at once: do not let the events pile up.
        if i % 32 == 0 {
            xs.clear_watch_events();
        }
        xs.watch(&format!("{home}/flood/w{i}"), &format!("w{i}"))
    });
    xs.clear_watch_events();
    report("watch", "watches", watches);

    let transactions = until_error(MAX_TRANSACTIONS, |_| xs.transaction_start().map(|_| ()));
    report("transaction", "transactions", transactions);

    println!("xs-flood: done");
}

/// `mode=xs-check count=N`.
pub fn xs_check(info: &BootInfo) {
    let count = crate::arg(info, "count", 100);
    let mut xs = connect("xs-check");
    let home = xenstore::domain_path(info.domain.domid);
    let started = driver_domains::time::now_ns();
    for i in 0..count {
        let path = format!("{home}/data/k{i}");
        let value = format!("value-{i}-of-{count}");
        if let Err(e) = xs.write_str(Tx::NONE, &path, &value) {
            println!("xs-check: write of data/k{i} failed: {e}");
            return;
        }
        match xs.read(Tx::NONE, &path) {
            Ok(read) if read == value.as_bytes() => {}
            Ok(read) => {
                println!(
                    "xs-check: data/k{i} reads {:?}, not {value:?}",
                    alloc::string::String::from_utf8_lossy(&read)
                );
                return;
            }
            Err(e) => {
                println!("xs-check: read of data/k{i} failed: {e}");
                return;
            }
        }
    }
    let elapsed_ns = driver_domains::time::now_ns()
        .saturating_sub(started)
        .max(1);
    println!("xs-check: {count} writes and reads ok");
    println!(
        "xs-check: {} operations in {} ms ({} per second)",
        2 * count,
        elapsed_ns / 1_000_000,
        2 * count * 1_000_000_000 / elapsed_ns
    );
}
