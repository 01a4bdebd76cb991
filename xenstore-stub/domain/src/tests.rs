//! The whole server on the host, on the simulated machine of [`crate::sim`], with the test
//! playing the client domains.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use microvisor_abi::microvisor_op::{DOMAIN_FLAG_CONTROL, DOMAIN_FLAG_DYING};
use xen_ring::SharedPage;
use xenstore_store::wire::{self, MessageType, HEADER_BYTES};

use crate::server::{Server, MESSAGES_PER_TURN};
use crate::sim::{Client, Sim, SELF};
use crate::xs_ring::{REQUESTS, RESPONSES};

fn started(fake: &mut Sim) -> Server<Sim> {
    let mut server = Server::new(fake, SELF);
    server.sync(fake);
    server
}

const OK: &[u8] = b"OK\0";

#[test]
fn sync_introduces_domains_and_indexes_their_names() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "console");
    fake.list(3, 0, 6, "guest");
    fake.list(4, 0, 0, "unserved");
    let server = started(&mut fake);
    assert_eq!(fake.take_log(), ["xenstore: serving 2 domains"]);
    assert_eq!(server.served_domains(), [2, 3]);
    let store = server.store();
    assert_eq!(store.read("/local/domain/3/name"), Some(&b"guest"[..]));
    assert_eq!(store.read("/local/domain/3/domid"), Some(&b"3"[..]));
    assert_eq!(store.read("/local/names/guest"), Some(&b"3"[..]));
    assert_eq!(store.read("/local/names/console"), Some(&b"2"[..]));
    // Bound to the listed ports, each notified once, pages mapped once.
    assert_eq!(
        fake.bound.values().copied().collect::<Vec<_>>(),
        [(2, 5), (3, 6)]
    );
    let mut notified = fake.notified.clone();
    notified.sort();
    assert_eq!(notified, [10, 11]);
    assert_eq!(fake.mapped.keys().copied().collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn a_guest_reads_and_writes_and_sees_its_names_entry() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "guest");
    fake.list(3, 0, 6, "other");
    let mut server = started(&mut fake);
    let mut guest = client(&fake, 2);
    send(&mut guest, &wire::encode_write(1, 0, b"data/x", b"42"));
    request(&mut guest, MessageType::Read, 2, &[b"data/x"]);
    request(&mut guest, MessageType::Read, 3, &[b"/local/names/other"]);
    request(&mut guest, MessageType::Directory, 4, &[b"/local/names"]);
    request(&mut guest, MessageType::Read, 5, &[b"/local/domain/3/name"]);
    let port = fake.port_of(2).unwrap();
    fake.notified.clear();
    assert!(server.service(&mut fake, port));
    let replies = guest.receive().unwrap();
    assert_eq!(replies[0], (MessageType::Write as u32, 1, OK.to_vec()));
    assert_eq!(replies[1], (MessageType::Read as u32, 2, b"42".to_vec()));
    assert_eq!(replies[2], (MessageType::Read as u32, 3, b"3".to_vec()));
    assert_eq!(
        replies[3],
        (MessageType::Directory as u32, 4, b"guest\0other\0".to_vec())
    );
    // Another domain's home is private.
    assert_eq!(
        replies[4],
        (MessageType::Error as u32, 5, b"EACCES\0".to_vec())
    );
    assert_eq!(fake.notified, [port]);
    assert_eq!(
        server.store().read("/local/domain/2/data/x"),
        Some(&b"42"[..])
    );
    // Guests cannot change the index.
    send(
        &mut guest,
        &wire::encode_write(6, 0, b"/local/names/other", b"2"),
    );
    server.service(&mut fake, port);
    assert_eq!(
        guest.receive().unwrap(),
        [(MessageType::Error as u32, 6, b"EACCES\0".to_vec())]
    );
}

#[test]
fn requests_written_before_the_server_came_are_answered() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "early");
    let mut guest = client(&fake, 2);
    request(&mut guest, MessageType::Read, 9, &[b"name"]);
    let _server = started(&mut fake);
    assert_eq!(
        guest.receive().unwrap(),
        [(MessageType::Read as u32, 9, b"early".to_vec())]
    );
}

#[test]
fn messages_split_across_notifications_and_the_ring_wrap() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "guest");
    let mut server = started(&mut fake);
    let port = fake.port_of(2).unwrap();
    let mut guest = client(&fake, 2);
    let value = [b'v'; 300];
    for round in 0..20u32 {
        let message = wire::encode_write(round, 0, b"big", &value);
        let (first, second) = message.split_at(100 + round as usize);
        send(&mut guest, first);
        server.service(&mut fake, port);
        send(&mut guest, second);
        server.service(&mut fake, port);
        assert_eq!(
            guest.receive().unwrap(),
            [(MessageType::Write as u32, round, OK.to_vec())]
        );
    }
}

#[test]
fn watch_events_reach_other_domains() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "watcher");
    let mut server = started(&mut fake);
    let port = fake.port_of(2).unwrap();
    let mut watcher = client(&fake, 2);
    request(
        &mut watcher,
        MessageType::Watch,
        1,
        &[b"/local/names", b"tok"],
    );
    server.service(&mut fake, port);
    let replies = watcher.receive().unwrap();
    assert_eq!(replies[0], (MessageType::Watch as u32, 1, OK.to_vec()));
    assert_eq!(
        replies[1],
        (
            MessageType::WatchEvent as u32,
            0,
            b"/local/names\0tok\0".to_vec()
        )
    );
    fake.list(3, 0, 6, "newcomer");
    fake.notified.clear();
    server.sync(&mut fake);
    let events = watcher.receive().unwrap();
    assert!(events.contains(&(
        MessageType::WatchEvent as u32,
        0,
        b"/local/names/newcomer\0tok\0".to_vec()
    )));
    assert!(fake.notified.contains(&port), "the watcher is notified");
}

#[test]
fn a_bad_request_index_disconnects_the_domain_for_good() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "rogue");
    fake.list(3, 0, 6, "fine");
    let mut server = started(&mut fake);
    fake.take_log();
    let port = fake.port_of(2).unwrap();
    fake.pages[&2].store_u32(REQUESTS.prod_offset, 1025);
    server.service(&mut fake, port);
    assert_eq!(
        fake.take_log(),
        ["xenstore: domain 2 (rogue) broke the ring protocol, disconnected"]
    );
    assert_eq!(server.served_domains(), [3]);
    assert!(!fake.mapped.contains_key(&2) && fake.port_of(2).is_none());
    assert_eq!(server.store().read("/local/domain/2/name"), None);
    assert_eq!(server.store().read("/local/names/rogue"), None);
    // Not served again while it lives, even with its ring repaired.
    fake.pages[&2].store_u32(REQUESTS.prod_offset, 0);
    server.sync(&mut fake);
    assert_eq!(server.served_domains(), [3]);
    assert!(!fake.mapped.contains_key(&2));
    // Once it is gone, its id is forgotten.
    fake.unlist(2);
    server.sync(&mut fake);
    fake.list(2, 0, 5, "rogue");
    server.sync(&mut fake);
    assert_eq!(server.served_domains(), [3, 2]);
}

#[test]
fn an_oversized_message_is_a_protocol_error() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "rogue");
    let mut server = started(&mut fake);
    fake.take_log();
    let mut rogue = client(&fake, 2);
    let header = wire::Header {
        kind: 2,
        req_id: 1,
        tx_id: 0,
        len: 5000,
    }
    .encode();
    send(&mut rogue, &header);
    poke(&mut server, &mut fake, 2);
    assert_eq!(
        fake.take_log(),
        ["xenstore: domain 2 (rogue) broke the ring protocol, disconnected"]
    );
    assert_eq!(server.served(), 0);
}

#[test]
fn a_bad_response_index_is_a_protocol_error() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "rogue");
    let mut server = started(&mut fake);
    fake.take_log();
    let mut rogue = client(&fake, 2);
    request(&mut rogue, MessageType::Read, 1, &[b"name"]);
    // Claims to have consumed replies that were never produced.
    fake.pages[&2].store_u32(RESPONSES.cons_offset, 5000);
    poke(&mut server, &mut fake, 2);
    assert_eq!(
        fake.take_log(),
        ["xenstore: domain 2 (rogue) broke the ring protocol, disconnected"]
    );
}

#[test]
fn a_ring_broken_before_connecting_is_refused() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "rogue");
    fake.pages[&2].store_u32(REQUESTS.prod_offset, 4000);
    let server = started(&mut fake);
    assert_eq!(
        fake.take_log(),
        [
            "xenstore: domain 2 (rogue) broke the ring protocol, disconnected",
            "xenstore: serving 0 domains"
        ]
    );
    assert_eq!(server.served(), 0);
    assert!(fake.mapped.is_empty() && fake.bound.is_empty());
}

#[test]
fn a_client_that_does_not_read_is_throttled_not_dropped() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "slow");
    let mut server = started(&mut fake);
    let port = fake.port_of(2).unwrap();
    let mut slow = client(&fake, 2);
    // A 900-byte value, read back many times: far more reply bytes than ring + queue.
    send(&mut slow, &wire::encode_write(1, 0, b"v", &[b'x'; 900]));
    server.service(&mut fake, port);
    let mut sent = 0u32;
    for id in 2..200u32 {
        let message = wire::encode_request(MessageType::Read, id, 0, &[b"v"]);
        if slow.requests.space(&slow.page).unwrap() < message.len() as u32 {
            break;
        }
        send(&mut slow, &message);
        sent += 1;
        server.service(&mut fake, port);
    }
    assert_eq!(server.served(), 1, "throttled, still served");
    // Now it reads: every reply arrives, in order.
    let mut replies = Vec::new();
    for _ in 0..1000 {
        replies.extend(slow.receive().unwrap());
        server.service(&mut fake, port);
        if replies.len() as u32 == sent + 1 {
            break;
        }
    }
    assert_eq!(replies.len() as u32, sent + 1);
    assert!(replies
        .iter()
        .skip(1)
        .all(|(kind, _, payload)| *kind == MessageType::Read as u32 && payload.len() == 900));
    assert!(
        sent > 80 && sent < 198,
        "the ring must fill past the queue limit ({sent})"
    );
}

#[test]
fn a_watcher_that_never_reads_is_dropped_when_its_queue_overflows() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "deaf");
    fake.list(3, 0, 6, "writer");
    let mut server = started(&mut fake);
    fake.take_log();
    let mut deaf = client(&fake, 2);
    // Let the writer's home be readable by the deaf one, who watches it.
    let mut writer = client(&fake, 3);
    request(
        &mut writer,
        MessageType::SetPerms,
        1,
        &[b"/local/domain/3", b"n3", b"r2"],
    );
    poke(&mut server, &mut fake, 3);
    request(
        &mut deaf,
        MessageType::Watch,
        1,
        &[b"/local/domain/3", b"t"],
    );
    poke(&mut server, &mut fake, 2);
    let writer_port = fake.port_of(3).unwrap();
    for id in 0..2000u32 {
        if server.served() < 2 {
            break;
        }
        writer.receive().unwrap();
        send(
            &mut writer,
            &wire::encode_write(id, 0, b"key-with-a-long-name-for-bigger-events", b"1"),
        );
        server.service(&mut fake, writer_port);
    }
    assert_eq!(server.served_domains(), [3]);
    assert_eq!(
        fake.take_log(),
        ["xenstore: domain 2 (deaf) does not read its ring, disconnected"]
    );
}

#[test]
fn a_dying_domain_is_released_and_its_nodes_removed() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "guest");
    fake.list(3, 0, 6, "observer");
    let mut server = started(&mut fake);
    let mut guest = client(&fake, 2);
    send(&mut guest, &wire::encode_write(1, 0, b"data", b"x"));
    poke(&mut server, &mut fake, 2);
    let mut observer = client(&fake, 3);
    request(
        &mut observer,
        MessageType::Watch,
        1,
        &[b"/local/names/guest", b"w"],
    );
    poke(&mut server, &mut fake, 3);
    observer.receive().unwrap();
    fake.list(2, DOMAIN_FLAG_DYING, 5, "guest");
    fake.take_log();
    server.sync(&mut fake);
    assert_eq!(fake.take_log(), ["xenstore: serving 1 domains"]);
    assert_eq!(server.served_domains(), [3]);
    assert_eq!(server.store().read("/local/domain/2/data"), None);
    assert_eq!(server.store().read("/local/domain/2"), None);
    assert_eq!(server.store().read("/local/names/guest"), None);
    assert!(!server.store().is_introduced(2));
    assert!(fake.port_of(2).is_none() && !fake.mapped.contains_key(&2));
    assert_eq!(
        observer.receive().unwrap(),
        [(
            MessageType::WatchEvent as u32,
            0,
            b"/local/names/guest\0w\0".to_vec()
        )]
    );
}

#[test]
fn a_restarted_domain_takes_over_its_name() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "guest");
    let mut server = started(&mut fake);
    fake.list(2, DOMAIN_FLAG_DYING, 5, "guest");
    fake.list(7, 0, 9, "guest");
    server.sync(&mut fake);
    assert_eq!(server.served_domains(), [7]);
    assert_eq!(server.store().read("/local/names/guest"), Some(&b"7"[..]));
    assert_eq!(
        server.store().read("/local/domain/7/name"),
        Some(&b"guest"[..])
    );
    // The old instance vanishing later does not take the name away.
    fake.unlist(2);
    server.sync(&mut fake);
    assert_eq!(server.store().read("/local/names/guest"), Some(&b"7"[..]));
}

#[test]
fn a_busy_client_gets_a_bounded_turn() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "busy");
    let mut server = started(&mut fake);
    let mut busy = client(&fake, 2);
    let count = MESSAGES_PER_TURN as u32 + 5;
    for id in 0..count {
        request(&mut busy, MessageType::Read, id, &[b"domid"]);
    }
    assert!(HEADER_BYTES * count as usize <= 1024);
    poke(&mut server, &mut fake, 2);
    assert_eq!(busy.receive().unwrap().len(), MESSAGES_PER_TURN);
    assert!(server.has_backlog());
    server.run_backlog(&mut fake);
    assert_eq!(busy.receive().unwrap().len(), 5);
    assert!(!server.has_backlog());
}

#[test]
fn unknown_ports_are_not_served() {
    let mut fake = Sim::new();
    let mut server = started(&mut fake);
    assert!(!server.service(&mut fake, 99));
    assert!(server.ports().is_empty());
}

/// The domain notifies its port.
fn poke(server: &mut Server<Sim>, fake: &mut Sim, domid: u16) {
    let port = fake.port_of(domid).expect("domain is bound");
    assert!(server.service(fake, port));
}

fn client(sim: &Sim, domid: u16) -> Client {
    Client::new(sim, domid).unwrap()
}

fn send(client: &mut Client, bytes: &[u8]) {
    assert_eq!(client.send(bytes).unwrap(), bytes.len(), "ring full");
}

fn request(client: &mut Client, kind: MessageType, req_id: u32, args: &[&[u8]]) {
    let message = wire::encode_request(kind, req_id, 0, args);
    send(client, &message);
}

fn vbd(frontend: &str, backend: &str) -> crate::devices::VbdSpec {
    crate::devices::VbdSpec {
        frontend: frontend.into(),
        vdev: 51712,
        backend: backend.into(),
        writable: true,
        device: "0000:00:03.0".into(),
        start: 2048,
        sectors: 0,
    }
}

/// Serves `domid`'s ring once and returns its replies.
fn serve(
    server: &mut Server<Sim>,
    fake: &mut Sim,
    client: &mut Client,
    domid: u16,
) -> Vec<(u32, u32, Vec<u8>)> {
    let port = fake.port_of(domid).unwrap();
    assert!(server.service(fake, port));
    client.receive().unwrap()
}

#[test]
fn device_entries_are_written_once_both_ends_are_served() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "linux");
    let mut server = Server::new(&mut fake, SELF);
    server.set_devices(alloc::vec![vbd("linux", "blkback")], alloc::vec::Vec::new());
    server.sync(&mut fake);
    assert_eq!(
        server
            .store()
            .read("/local/domain/2/device/vbd/51712/backend"),
        None
    );
    fake.take_log();
    fake.list(3, 0, 6, "blkback");
    fake.list(4, 0, 7, "other");
    server.sync(&mut fake);
    assert_eq!(
        fake.take_log(),
        [
            "xenstore: vbd 51712 of linux (2) served by blkback (3), read-write 0000:00:03.0 from sector 2048",
            "xenstore: serving 3 domains"
        ]
    );
    let store = server.store();
    let read = |path: &str| {
        store
            .read(path)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    let front = "/local/domain/2/device/vbd/51712";
    let back = "/local/domain/3/backend/vbd/2/51712";
    assert_eq!(read(&format!("{front}/backend")).as_deref(), Some(back));
    assert_eq!(read(&format!("{front}/backend-id")).as_deref(), Some("3"));
    assert_eq!(read(&format!("{front}/state")).as_deref(), Some("1"));
    assert_eq!(
        read(&format!("{front}/virtual-device")).as_deref(),
        Some("51712")
    );
    assert_eq!(
        read(&format!("{front}/device-type")).as_deref(),
        Some("disk")
    );
    assert_eq!(read(&format!("{back}/frontend")).as_deref(), Some(front));
    assert_eq!(read(&format!("{back}/frontend-id")).as_deref(), Some("2"));
    assert_eq!(read(&format!("{back}/mode")).as_deref(), Some("w"));
    assert_eq!(
        read(&format!("{back}/params")).as_deref(),
        Some("0000:00:03.0@2048+0")
    );
    assert_eq!(
        read(&format!("{back}/start-sector")).as_deref(),
        Some("2048")
    );
    assert_eq!(read(&format!("{back}/sectors")).as_deref(), Some("0"));

    // Each end writes its own directory and reads the other's; a third domain sees neither.
    let mut linux = client(&fake, 2);
    let mut blkback = client(&fake, 3);
    let mut other = client(&fake, 4);
    send(
        &mut linux,
        &wire::encode_write(1, 0, format!("{front}/ring-ref").as_bytes(), b"8"),
    );
    request(
        &mut linux,
        MessageType::Read,
        2,
        &[format!("{back}/state").as_bytes()],
    );
    send(
        &mut linux,
        &wire::encode_write(3, 0, format!("{back}/sectors").as_bytes(), b"9"),
    );
    let replies = serve(&mut server, &mut fake, &mut linux, 2);
    assert_eq!(replies[0], (MessageType::Write as u32, 1, OK.to_vec()));
    assert_eq!(replies[1], (MessageType::Read as u32, 2, b"1".to_vec()));
    assert_eq!(
        replies[2],
        (MessageType::Error as u32, 3, b"EACCES\0".to_vec())
    );
    request(
        &mut blkback,
        MessageType::Read,
        1,
        &[format!("{front}/ring-ref").as_bytes()],
    );
    send(
        &mut blkback,
        &wire::encode_write(2, 0, format!("{back}/state").as_bytes(), b"2"),
    );
    send(
        &mut blkback,
        &wire::encode_write(3, 0, format!("{front}/state").as_bytes(), b"4"),
    );
    let replies = serve(&mut server, &mut fake, &mut blkback, 3);
    assert_eq!(replies[0], (MessageType::Read as u32, 1, b"8".to_vec()));
    assert_eq!(replies[1], (MessageType::Write as u32, 2, OK.to_vec()));
    assert_eq!(
        replies[2],
        (MessageType::Error as u32, 3, b"EACCES\0".to_vec())
    );
    request(
        &mut other,
        MessageType::Read,
        1,
        &[format!("{front}/ring-ref").as_bytes()],
    );
    request(
        &mut other,
        MessageType::Read,
        2,
        &[format!("{back}/state").as_bytes()],
    );
    let replies = serve(&mut server, &mut fake, &mut other, 4);
    assert_eq!(
        replies[0],
        (MessageType::Error as u32, 1, b"EACCES\0".to_vec())
    );
    assert_eq!(
        replies[1],
        (MessageType::Error as u32, 2, b"EACCES\0".to_vec())
    );
}

#[test]
fn a_restarted_backend_gets_new_entries_and_a_gone_frontend_loses_them() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "linux");
    fake.list(3, 0, 6, "blkback");
    let mut server = Server::new(&mut fake, SELF);
    server.set_devices(alloc::vec![vbd("linux", "blkback")], alloc::vec::Vec::new());
    server.sync(&mut fake);
    let front = "/local/domain/2/device/vbd/51712";
    // The frontend has moved on: its state must survive the backend's restart.
    let mut linux = client(&fake, 2);
    send(
        &mut linux,
        &wire::encode_write(1, 0, format!("{front}/state").as_bytes(), b"4"),
    );
    serve(&mut server, &mut fake, &mut linux, 2);
    fake.unlist(3);
    server.sync(&mut fake);
    fake.list(5, 0, 8, "blkback");
    server.sync(&mut fake);
    let store = server.store();
    assert_eq!(
        store.read(&format!("{front}/backend")),
        Some(&b"/local/domain/5/backend/vbd/2/51712"[..])
    );
    assert_eq!(store.read(&format!("{front}/backend-id")), Some(&b"5"[..]));
    assert_eq!(store.read(&format!("{front}/state")), Some(&b"4"[..]));
    assert_eq!(
        store.read("/local/domain/5/backend/vbd/2/51712/frontend-id"),
        Some(&b"2"[..])
    );
    // The frontend goes: the backend's directory for it goes too.
    fake.unlist(2);
    server.sync(&mut fake);
    assert_eq!(
        server
            .store()
            .read("/local/domain/5/backend/vbd/2/51712/frontend-id"),
        None
    );
    assert_eq!(server.store().read("/local/domain/5/backend/vbd/2"), None);
}

#[test]
fn vif_entries_carry_the_mac_and_bridge_and_go_with_their_frontend() {
    let mut fake = Sim::new();
    fake.list(2, 0, 5, "linux");
    fake.list(3, 0, 6, "netback");
    let mut server = Server::new(&mut fake, SELF);
    let mac = crate::devices::VifSpec {
        frontend: "linux".into(),
        handle: 1,
        backend: "netback".into(),
        mac: service_common::mac::Mac([0, 0x16, 0x3e, 0, 0, 0x15]),
        bridge: "xenbr0".into(),
    };
    server.set_devices(alloc::vec![vbd("linux", "netback")], alloc::vec![mac]);
    server.sync(&mut fake);
    let log = fake.take_log();
    assert!(
        log.contains(&String::from(
            "xenstore: vif 1 of linux (2) served by netback (3), mac 00:16:3e:00:00:15, bridge xenbr0"
        )),
        "{log:?}"
    );
    let read = |server: &Server<Sim>, path: &str| {
        server
            .store()
            .read(path)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    let front = "/local/domain/2/device/vif/1";
    let back = "/local/domain/3/backend/vif/2/1";
    for (path, value) in [
        (format!("{front}/backend"), back),
        (format!("{front}/backend-id"), "3"),
        (format!("{front}/state"), "1"),
        (format!("{front}/handle"), "1"),
        (format!("{front}/mac"), "00:16:3e:00:00:15"),
        (format!("{back}/frontend"), front),
        (format!("{back}/frontend-id"), "2"),
        (format!("{back}/online"), "1"),
        (format!("{back}/state"), "1"),
        (format!("{back}/handle"), "1"),
        (format!("{back}/mac"), "00:16:3e:00:00:15"),
        (format!("{back}/bridge"), "xenbr0"),
    ] {
        assert_eq!(read(&server, &path).as_deref(), Some(value), "{path}");
    }
    // Both device kinds of the frontend, side by side.
    assert!(read(&server, "/local/domain/2/device/vbd/51712/backend").is_some());
    // The frontend goes: its backend directory goes too.
    fake.unlist(2);
    server.sync(&mut fake);
    assert_eq!(read(&server, back), None);
    assert_eq!(read(&server, "/local/domain/3/backend/vbd/2"), None);
}

/// linux (2) with a vbd served by blkback (3); both ends have moved on (state 4), blkback
/// watches its frontend's state. Returns the server and the two clients.
fn served_vbd(fake: &mut Sim) -> (Server<Sim>, Client, Client) {
    fake.list(2, 0, 5, "linux");
    fake.list(3, 0, 6, "blkback");
    let mut server = Server::new(fake, SELF);
    server.set_devices(alloc::vec![vbd("linux", "blkback")], alloc::vec::Vec::new());
    server.sync(fake);
    let mut linux = client(fake, 2);
    let mut blkback = client(fake, 3);
    send(
        &mut linux,
        &wire::encode_write(1, 0, format!("{FRONT}/state").as_bytes(), b"4"),
    );
    serve(&mut server, fake, &mut linux, 2);
    send(
        &mut blkback,
        &wire::encode_write(1, 0, format!("{BACK}/state").as_bytes(), b"4"),
    );
    request(
        &mut blkback,
        MessageType::Watch,
        2,
        &[format!("{FRONT}/state").as_bytes(), b"fe"],
    );
    serve(&mut server, fake, &mut blkback, 3);
    assert_eq!(server.store().usage(3), (1, 0));
    fake.take_log();
    (server, linux, blkback)
}

const FRONT: &str = "/local/domain/2/device/vbd/51712";
const BACK: &str = "/local/domain/3/backend/vbd/2/51712";

fn read(server: &Server<Sim>, path: &str) -> Option<String> {
    server
        .store()
        .read(path)
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
}

/// What both ends left is still there, as it was.
fn assert_vbd_entries_kept(server: &Server<Sim>) {
    for (path, value) in [
        (format!("{BACK}/state"), "4"),
        (format!("{BACK}/frontend"), FRONT),
        (format!("{BACK}/frontend-id"), "2"),
        (format!("{BACK}/params"), "0000:00:03.0@2048+0"),
        (format!("{FRONT}/state"), "4"),
        (format!("{FRONT}/backend"), BACK),
        (format!("{FRONT}/backend-id"), "3"),
        ("/local/domain/3/name".into(), "blkback"),
        ("/local/names/blkback".into(), "3"),
    ] {
        assert_eq!(read(server, &path).as_deref(), Some(value), "{path}");
    }
}

/// The new build of blkback connects on its fresh ring, reads back where it was and sees
/// no event of its old watch.
fn assert_new_build_resumes(server: &mut Server<Sim>, fake: &mut Sim, linux: &mut Client) {
    let mut blkback = client(fake, 3);
    request(
        &mut blkback,
        MessageType::Directory,
        1,
        &[b"/local/domain/3/backend/vbd/2"],
    );
    request(
        &mut blkback,
        MessageType::Read,
        2,
        &[format!("{BACK}/state").as_bytes()],
    );
    request(
        &mut blkback,
        MessageType::Read,
        3,
        &[format!("{FRONT}/state").as_bytes()],
    );
    let replies = serve(server, fake, &mut blkback, 3);
    assert_eq!(
        replies,
        [
            (MessageType::Directory as u32, 1, b"51712\0".to_vec()),
            (MessageType::Read as u32, 2, b"4".to_vec()),
            (MessageType::Read as u32, 3, b"4".to_vec()),
        ]
    );
    // The old build's watch went with it: the frontend's state change reaches nobody.
    send(
        linux,
        &wire::encode_write(9, 0, format!("{FRONT}/state").as_bytes(), b"5"),
    );
    serve(server, fake, linux, 2);
    assert!(blkback.receive().unwrap().is_empty());
    assert_eq!(server.store().usage(3), (0, 0));
}

#[test]
fn a_backend_restarting_under_its_id_keeps_its_home_and_devices() {
    let mut fake = Sim::new();
    let (mut server, mut linux, _old) = served_vbd(&mut fake);
    // The toolstack watches domains going and coming.
    fake.list(4, DOMAIN_FLAG_CONTROL, 7, "control");
    server.sync(&mut fake);
    let mut control = client(&fake, 4);
    request(
        &mut control,
        MessageType::Watch,
        1,
        &[b"@releaseDomain", b"rel"],
    );
    request(
        &mut control,
        MessageType::Watch,
        2,
        &[b"@introduceDomain", b"intro"],
    );
    serve(&mut server, &mut fake, &mut control, 4);
    fake.take_log();
    // Being rebuilt: dying and restarting.
    fake.list_restarting(3, "blkback");
    server.sync(&mut fake);
    assert_eq!(
        fake.take_log(),
        [
            "xenstore: domain 3 (blkback) is restarting, its entries are kept",
            "xenstore: serving 2 domains"
        ]
    );
    assert_eq!(server.served_domains(), [2, 4]);
    assert_eq!(server.returning(), [3]);
    // Its transport and its store connection went (watches too), its nodes stayed.
    assert!(fake.port_of(3).is_none() && !fake.mapped.contains_key(&3));
    assert!(!server.store().is_introduced(3));
    assert_eq!(server.store().usage(3), (0, 0));
    assert_vbd_entries_kept(&server);
    assert_eq!(
        control.receive().unwrap(),
        [(
            MessageType::WatchEvent as u32,
            0,
            b"@releaseDomain\0rel\0".to_vec()
        )]
    );
    // Still being rebuilt at the next sync: nothing changes.
    server.sync(&mut fake);
    assert_eq!(fake.take_log(), ["xenstore: serving 2 domains"]);
    // The new build: served again under the same id, introduced again, nothing rewritten.
    fake.list_restarted(3, 9, "blkback");
    server.sync(&mut fake);
    assert_eq!(fake.take_log(), ["xenstore: serving 3 domains"]);
    assert_eq!(server.served_domains(), [2, 4, 3]);
    assert_eq!(
        control.receive().unwrap(),
        [(
            MessageType::WatchEvent as u32,
            0,
            b"@introduceDomain\0intro\0".to_vec()
        )]
    );
    assert!(server.returning().is_empty());
    assert!(server.store().is_introduced(3));
    assert_eq!(fake.bound[&fake.port_of(3).unwrap()], (3, 9));
    assert_vbd_entries_kept(&server);
    assert_new_build_resumes(&mut server, &mut fake, &mut linux);
    server.store().check_invariants().unwrap();
}

#[test]
fn a_backend_restart_seen_only_after_the_fact_keeps_its_home_and_devices() {
    let mut fake = Sim::new();
    let (mut server, mut linux, _old) = served_vbd(&mut fake);
    let old_port = fake.port_of(3).unwrap();
    // The server syncs only once the new build is alive.
    fake.list_restarted(3, 9, "blkback");
    server.sync(&mut fake);
    assert_eq!(
        fake.take_log(),
        [
            "xenstore: domain 3 (blkback) is restarting, its entries are kept",
            "xenstore: serving 2 domains"
        ]
    );
    assert_eq!(server.served_domains(), [2, 3]);
    assert!(server.returning().is_empty());
    // The old build's port and page were let go, the new build's bound and mapped.
    assert!(!fake.bound.contains_key(&old_port));
    assert_eq!(fake.bound[&fake.port_of(3).unwrap()], (3, 9));
    assert_eq!(fake.mapped[&3], 1);
    assert_vbd_entries_kept(&server);
    assert_new_build_resumes(&mut server, &mut fake, &mut linux);
    server.store().check_invariants().unwrap();
}

#[test]
fn a_backend_gone_for_good_closes_its_devices() {
    let mut fake = Sim::new();
    let (mut server, mut linux, _blkback) = served_vbd(&mut fake);
    // Linux watches its backend's state, as xenbus does.
    request(
        &mut linux,
        MessageType::Watch,
        2,
        &[format!("{BACK}/state").as_bytes(), b"be"],
    );
    serve(&mut server, &mut fake, &mut linux, 2);
    linux.receive().unwrap();
    fake.list(3, DOMAIN_FLAG_DYING, 6, "blkback");
    server.sync(&mut fake);
    assert_eq!(
        fake.take_log(),
        [
            "xenstore: vbd 51712 of linux (2): backend blkback (3) is gone, device closed",
            "xenstore: serving 1 domains"
        ]
    );
    // Its home went; only the closed state is there, the toolstack's, readable by linux.
    assert_eq!(
        read(&server, &format!("{BACK}/state")).as_deref(),
        Some("6")
    );
    assert_eq!(read(&server, &format!("{BACK}/frontend-id")), None);
    assert_eq!(read(&server, "/local/domain/3/name"), None);
    assert_eq!(read(&server, "/local/names/blkback"), None);
    // The frontend's entries are untouched.
    assert_eq!(
        read(&server, &format!("{FRONT}/state")).as_deref(),
        Some("4")
    );
    request(
        &mut linux,
        MessageType::Read,
        3,
        &[format!("{BACK}/state").as_bytes()],
    );
    request(
        &mut linux,
        MessageType::GetPerms,
        4,
        &[format!("{BACK}/state").as_bytes()],
    );
    let replies = serve(&mut server, &mut fake, &mut linux, 2);
    let events: Vec<_> = replies
        .iter()
        .filter(|(kind, _, _)| *kind == MessageType::WatchEvent as u32)
        .collect();
    assert!(!events.is_empty(), "{replies:?}");
    assert!(events
        .iter()
        .all(|(_, _, payload)| payload == format!("{BACK}/state\0be\0").as_bytes()));
    let answers: Vec<_> = replies
        .iter()
        .filter(|(kind, _, _)| *kind != MessageType::WatchEvent as u32)
        .cloned()
        .collect();
    assert_eq!(
        answers,
        [
            (MessageType::Read as u32, 3, b"6".to_vec()),
            (
                MessageType::GetPerms as u32,
                4,
                format!("n{SELF}\0r2\0").into_bytes()
            ),
        ]
    );
    // Once: later syncs do not write it again.
    fake.unlist(3);
    server.sync(&mut fake);
    assert_eq!(fake.take_log(), ["xenstore: serving 1 domains"]);
    // The frontend goes: the closed node and what was left of the backend's home go too.
    fake.unlist(2);
    server.sync(&mut fake);
    assert_eq!(read(&server, "/local/domain/3"), None);
    assert_eq!(read(&server, "/local/domain/2"), None);
    server.store().check_invariants().unwrap();
}

#[test]
fn a_backend_the_microvisor_gives_up_on_is_dropped_for_good() {
    let mut fake = Sim::new();
    let (mut server, _linux, _blkback) = served_vbd(&mut fake);
    fake.list_restarting(3, "blkback");
    server.sync(&mut fake);
    fake.take_log();
    assert_vbd_entries_kept(&server);
    // A crash loop: the microvisor stops rebuilding it and it is no longer listed.
    fake.unlist(3);
    server.sync(&mut fake);
    assert_eq!(
        fake.take_log(),
        [
            "xenstore: domain 3 (blkback) did not come back, its entries are removed",
            "xenstore: vbd 51712 of linux (2): backend blkback (3) is gone, device closed",
            "xenstore: serving 1 domains"
        ]
    );
    assert!(server.returning().is_empty());
    assert_eq!(
        read(&server, &format!("{BACK}/state")).as_deref(),
        Some("6")
    );
    assert_eq!(read(&server, "/local/domain/3/name"), None);
    assert_eq!(read(&server, "/local/names/blkback"), None);
    // A new blkback (a new id) takes the device over; the closed node goes.
    fake.list(5, 0, 8, "blkback");
    server.sync(&mut fake);
    assert_eq!(read(&server, "/local/domain/3"), None);
    assert_eq!(
        read(&server, &format!("{FRONT}/backend")).as_deref(),
        Some("/local/domain/5/backend/vbd/2/51712")
    );
    assert_eq!(
        read(&server, &format!("{FRONT}/backend-id")).as_deref(),
        Some("5")
    );
    assert_eq!(
        read(&server, "/local/domain/5/backend/vbd/2/51712/state").as_deref(),
        Some("1")
    );
    server.store().check_invariants().unwrap();
}

#[test]
fn a_new_domain_under_a_closed_backends_id_starts_from_a_clean_home() {
    let mut fake = Sim::new();
    let (mut server, _linux, _blkback) = served_vbd(&mut fake);
    fake.unlist(3);
    server.sync(&mut fake);
    assert_eq!(
        read(&server, &format!("{BACK}/state")).as_deref(),
        Some("6")
    );
    // A new blkback under the same id (a new domain, not a restart): written afresh.
    fake.list(3, 0, 6, "blkback");
    server.sync(&mut fake);
    assert!(fake
        .take_log()
        .contains(&String::from(
            "xenstore: vbd 51712 of linux (2) served by blkback (3), read-write 0000:00:03.0 from sector 2048"
        )));
    assert_eq!(
        read(&server, &format!("{BACK}/state")).as_deref(),
        Some("1")
    );
    assert_eq!(
        read(&server, &format!("{BACK}/frontend-id")).as_deref(),
        Some("2")
    );
    assert_eq!(
        read(&server, "/local/domain/3/name").as_deref(),
        Some("blkback")
    );
    assert_eq!(
        read(&server, &format!("{FRONT}/state")).as_deref(),
        Some("4")
    );
    // Its backend directory is its own again.
    let mut blkback = client(&fake, 3);
    request(
        &mut blkback,
        MessageType::Directory,
        1,
        &[b"/local/domain/3/backend/vbd/2"],
    );
    let replies = serve(&mut server, &mut fake, &mut blkback, 3);
    assert_eq!(
        replies,
        [(MessageType::Directory as u32, 1, b"51712\0".to_vec())]
    );
    server.store().check_invariants().unwrap();
}

#[test]
fn a_restarting_domain_whose_ring_breaks_under_us_is_not_blamed() {
    let mut fake = Sim::new();
    let (mut server, _linux, _blkback) = served_vbd(&mut fake);
    // Torn down for a restart before the server synced: its page goes bad.
    fake.list_restarting(3, "blkback");
    fake.pages[&3].store_u32(REQUESTS.prod_offset, 5000);
    poke(&mut server, &mut fake, 3);
    assert_eq!(
        fake.take_log(),
        ["xenstore: domain 3 (blkback) is restarting, its entries are kept"]
    );
    assert_eq!(server.returning(), [3]);
    assert_vbd_entries_kept(&server);
    fake.list_restarted(3, 9, "blkback");
    server.sync(&mut fake);
    assert_eq!(server.served_domains(), [2, 3]);
}

#[test]
fn a_frontend_gone_while_its_backend_restarts_loses_its_backend_directory() {
    let mut fake = Sim::new();
    let (mut server, _linux, _blkback) = served_vbd(&mut fake);
    fake.list_restarting(3, "blkback");
    server.sync(&mut fake);
    fake.unlist(2);
    server.sync(&mut fake);
    // The next build of blkback finds no device for a frontend that is gone.
    assert_eq!(read(&server, "/local/domain/3/backend/vbd/2"), None);
    assert_eq!(
        read(&server, "/local/domain/3/name").as_deref(),
        Some("blkback")
    );
    fake.list_restarted(3, 9, "blkback");
    server.sync(&mut fake);
    assert_eq!(server.served_domains(), [3]);
    assert_eq!(read(&server, "/local/domain/3/backend/vbd/2"), None);
    server.store().check_invariants().unwrap();
}
