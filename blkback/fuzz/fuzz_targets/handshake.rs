//! The front-end's xenbus keys, arbitrary: which keys exist and what their values are.
//!
//! `parse_frontend` must not panic, and what it accepts must be within what the back-end
//! offered: 1 to `multi-queue-max-queues` queues, each with 2^order ring pages for an order
//! at most `max-ring-page-order`, all queues alike.
#![no_main]

use std::collections::BTreeMap;

use blkback::handshake::{parse_frontend, Features};
use libfuzzer_sys::fuzz_target;

/// Keys the parser may ask for: the real ones, and per-queue ones for a few queues.
fn keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "ring-ref",
        "event-channel",
        "ring-page-order",
        "multi-queue-num-queues",
        "protocol",
        "feature-persistent",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    for page in 0..16 {
        keys.push(format!("ring-ref{page}"));
    }
    for queue in 0..5 {
        keys.push(format!("queue-{queue}/event-channel"));
        keys.push(format!("queue-{queue}/ring-ref"));
        for page in 0..16 {
            keys.push(format!("queue-{queue}/ring-ref{page}"));
        }
    }
    keys
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, mut rest)) = data.split_first() else {
        return;
    };
    let mut features = Features::default();
    features.max_ring_page_order = u32::from(config & 0x7);
    features.max_queues = u32::from((config >> 3) & 0x7);
    let names = keys();
    let mut store = BTreeMap::new();
    // Records: a key index byte, a length byte, that many value bytes.
    while rest.len() >= 2 {
        let key = &names[usize::from(rest[0]) % names.len()];
        let len = usize::from(rest[1]).min(rest.len() - 2);
        let value = String::from_utf8_lossy(&rest[2..2 + len]).into_owned();
        store.insert(key.clone(), value);
        rest = &rest[2 + len..];
    }
    let Ok(frontend) = parse_frontend(|key| store.get(key).cloned(), &features) else {
        return;
    };
    let queues = frontend.queues.len() as u32;
    assert!(queues >= 1 && queues <= features.max_queues.max(1), "{queues} queues accepted");
    let pages = frontend.queues[0].ring_refs.len();
    assert!(pages.is_power_of_two(), "{pages} ring pages");
    assert!(pages <= 1 << features.max_ring_page_order, "{pages} ring pages");
    assert!(frontend.queues.iter().all(|q| q.ring_refs.len() == pages));
});
