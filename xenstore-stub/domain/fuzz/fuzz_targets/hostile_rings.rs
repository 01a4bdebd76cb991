//! Two client domains drive the xenstore server through their rings with arbitrary index
//! values, arbitrary bytes and well-formed requests, while domains come, die and go.
//!
//! The server must never panic, never unmap, close or notify what it does not hold (the
//! simulated platform panics if it does), keep the store's invariants, and hold exactly
//! one mapping and one bound port per served domain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microvisor_abi::microvisor_op::DOMAIN_FLAG_DYING;
use xen_ring::SharedPage;
use xenstore_store::wire::{self, MessageType};
use xenstore_stub::server::Server;
use xenstore_stub::sim::{Client, Sim, SELF};
use xenstore_stub::xs_ring::{REQUESTS, RESPONSES};

const DOMAINS: [(u16, u32, &str); 2] = [(2, 5, "alpha"), (3, 6, "beta")];

const PATHS: [&[u8]; 6] = [
    b"data",
    b"data/x",
    b"/local/names",
    b"/local/domain/2",
    b"/local/domain/3/data",
    b"@releaseDomain",
];

const KINDS: [MessageType; 10] = [
    MessageType::Read,
    MessageType::Write,
    MessageType::Directory,
    MessageType::Mkdir,
    MessageType::Rm,
    MessageType::Watch,
    MessageType::Unwatch,
    MessageType::TransactionStart,
    MessageType::TransactionEnd,
    MessageType::SetPerms,
];

/// Takes the next `N` bytes of input (zero-padded at the end).
fn take<const N: usize>(input: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let count = N.min(input.len());
    out[..count].copy_from_slice(&input[..count]);
    *input = &input[count..];
    out
}

fn well_formed(selector: [u8; 4]) -> Vec<u8> {
    let kind = KINDS[usize::from(selector[0]) % KINDS.len()];
    let path = PATHS[usize::from(selector[1]) % PATHS.len()];
    let tx_id = u32::from(selector[2] % 3);
    let req_id = u32::from(selector[3]);
    match kind {
        MessageType::Write => wire::encode_write(req_id, tx_id, path, b"value"),
        MessageType::Watch | MessageType::Unwatch => {
            wire::encode_request(kind, req_id, tx_id, &[path, b"token"])
        }
        MessageType::TransactionEnd => wire::encode_request(kind, req_id, tx_id, &[b"T"]),
        MessageType::TransactionStart => wire::encode_request(kind, req_id, 0, &[b""]),
        MessageType::SetPerms => wire::encode_request(kind, req_id, tx_id, &[path, b"r2", b"b3"]),
        _ => wire::encode_request(kind, req_id, tx_id, &[path]),
    }
}

fn check(server: &Server<Sim>, sim: &Sim) {
    server.store().check_invariants().expect("store invariants");
    let served = server.served_domains();
    assert_eq!(
        sim.bound.len(),
        served.len(),
        "one bound port per served domain"
    );
    assert_eq!(
        sim.mapped.values().sum::<usize>(),
        served.len(),
        "one mapping per served domain"
    );
    for domid in served {
        assert_eq!(sim.mapped.get(&domid), Some(&1));
        assert!(sim.port_of(domid).is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let mut sim = Sim::new();
    for (domid, port, name) in DOMAINS {
        sim.list(domid, 0, port, name);
    }
    let mut server = Server::new(&mut sim, SELF);
    server.sync(&mut sim);
    while !input.is_empty() {
        let [op, which] = take::<2>(&mut input);
        let (domid, port, name) = DOMAINS[usize::from(which) % DOMAINS.len()];
        let page = sim.pages[&domid].clone();
        match op % 9 {
            // Raw bytes into req[] at the current producer index, published.
            0 => {
                let [length] = take::<1>(&mut input);
                let length = usize::from(length).min(input.len());
                let (bytes, rest) = input.split_at(length);
                input = rest;
                let prod = page.load_u32(REQUESTS.prod_offset);
                for (i, &byte) in bytes.iter().enumerate() {
                    let at = prod.wrapping_add(i as u32) & (REQUESTS.size_bytes - 1);
                    page.write_bytes(REQUESTS.data_offset + at as usize, &[byte]);
                }
                page.store_u32(REQUESTS.prod_offset, prod.wrapping_add(length as u32));
            }
            // Any value in any index, the server's own included.
            1 => {
                let [field] = take::<1>(&mut input);
                let value = u32::from_le_bytes(take::<4>(&mut input));
                let offset = [
                    REQUESTS.prod_offset,
                    REQUESTS.cons_offset,
                    RESPONSES.prod_offset,
                    RESPONSES.cons_offset,
                ][usize::from(field) % 4];
                page.store_u32(offset, value);
            }
            // A small step of an index (near-miss values).
            2 => {
                let [field, step] = take::<2>(&mut input);
                let offset = if field % 2 == 0 {
                    REQUESTS.prod_offset
                } else {
                    RESPONSES.cons_offset
                };
                let value = page
                    .load_u32(offset)
                    .wrapping_add(u32::from(step))
                    .wrapping_sub(128);
                page.store_u32(offset, value);
            }
            // A well-formed request, sent like a client (if its ring is sane).
            3 => {
                let message = well_formed(take::<4>(&mut input));
                if let Ok(mut client) = Client::new(&sim, domid) {
                    let _ = client.send(&message);
                }
            }
            // The client reads its replies.
            4 => {
                if let Ok(mut client) = Client::new(&sim, domid) {
                    let _ = client.receive();
                }
            }
            // The domain notifies its port.
            5 => {
                if let Some(local) = sim.port_of(domid) {
                    assert!(server.service(&mut sim, local));
                }
            }
            // The domain dies, goes away or comes back; then a VIRQ_DOMAIN_CHANGE.
            6 => {
                let [state] = take::<1>(&mut input);
                match state % 3 {
                    0 => sim.list(domid, DOMAIN_FLAG_DYING, port, name),
                    1 => sim.unlist(domid),
                    _ => sim.list(domid, 0, port, name),
                }
                server.sync(&mut sim);
            }
            7 => server.run_backlog(&mut sim),
            _ => {
                sim.take_log();
            }
        }
        check(&server, &sim);
    }
});
