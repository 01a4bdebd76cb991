//! Any bytes, read as the request stream of an unprivileged domain: every message gets a
//! reply or the stream is cut with a protocol error; nothing panics and the store stays
//! consistent. A privileged watcher on `/` makes every change produce events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore_store::wire::{self, MessageType};
use xenstore_store::{Framer, Outgoing, Quotas, Store};

fuzz_target!(|data: &[u8]| {
    let quotas = Quotas {
        max_nodes_per_domain: 64,
        max_transaction_nodes: 64,
        ..Quotas::default()
    };
    let mut store = Store::new(quotas);
    store.introduce_domain(1, "fuzz").expect("introduce");
    store.introduce_domain(2, "other").expect("introduce");
    let tools = store.add_connection(0, true);
    store
        .handle(
            tools,
            &wire::encode_request(MessageType::Watch, 1, 0, &[b"/", b"all"]),
        )
        .expect("watch");
    let guest = store.add_connection(1, false);
    let mut framer = Framer::new();
    let mut input = data;
    while !input.is_empty() {
        let Ok(fed) = framer.feed(input) else { break };
        input = &input[fed.consumed..];
        let Some(message) = fed.message else { continue };
        let out = store
            .handle(guest, &message)
            .expect("framed messages are well-framed");
        match out.first() {
            Some(Outgoing::Message { conn, bytes }) => {
                assert_eq!(*conn, guest);
                let (header, _) = wire::split_message(bytes).expect("replies are well-formed");
                assert_eq!(&bytes[4..8], &message[4..8], "req_id echoed");
                let request = wire::Header::decode(&message).expect("header");
                assert!(header.kind == request.kind || header.kind == MessageType::Error as u32);
            }
            other => panic!("first output is not the reply: {other:?}"),
        }
    }
    if let Err(problem) = store.check_invariants() {
        panic!("{problem}");
    }
});
