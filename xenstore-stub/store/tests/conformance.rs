//! Conformance of the store to Xen's xenstore protocol, through the wire format only:
//! every request is built as bytes and every reply and event parsed from bytes.

use std::collections::BTreeMap;

use xenstore_store::wire::{self, Header, MessageType, HEADER_BYTES, PAYLOAD_MAX};
use xenstore_store::{ConnId, Outgoing, ProtocolError, Quotas, Store};

/// A parsed reply.
#[derive(Debug)]
struct Reply {
    header: Header,
    payload: Vec<u8>,
}

impl Reply {
    /// The payload of a successful reply, or the error name.
    fn result(&self) -> Result<Vec<u8>, String> {
        if self.header.kind == MessageType::Error as u32 {
            let name = self
                .payload
                .strip_suffix(&[0])
                .expect("error names end with NUL");
            Err(String::from_utf8(name.to_vec()).unwrap())
        } else {
            Ok(self.payload.clone())
        }
    }
}

/// A store with a few connections, recording the watch events each receives.
struct Harness {
    store: Store,
    events: BTreeMap<ConnId, Vec<(String, String)>>,
    other: Vec<Outgoing>,
    last_req_id: u32,
}

impl Harness {
    fn new() -> Self {
        Self::with_quotas(Quotas::default())
    }

    fn with_quotas(quotas: Quotas) -> Self {
        Self {
            store: Store::new(quotas),
            events: BTreeMap::new(),
            other: Vec::new(),
            last_req_id: 0,
        }
    }

    /// A store with domains 1 and 2 introduced (their homes exist), a privileged
    /// toolstack connection and one connection per domain.
    fn with_domains() -> (Self, ConnId, ConnId, ConnId) {
        let mut harness = Self::new();
        harness.store.introduce_domain(1, "one").unwrap();
        harness.store.introduce_domain(2, "two").unwrap();
        let tools = harness.store.add_connection(0, true);
        let one = harness.store.add_connection(1, false);
        let two = harness.store.add_connection(2, false);
        (harness, tools, one, two)
    }

    /// Sends one raw message; the reply must come first, with the request's ids.
    fn raw(&mut self, conn: ConnId, message: &[u8]) -> Reply {
        let request = Header::decode(message).unwrap();
        let out = self
            .store
            .handle(conn, message)
            .expect("well-framed request");
        self.store.check_invariants().unwrap();
        let mut items = out.into_iter();
        let Some(Outgoing::Message { conn: to, bytes }) = items.next() else {
            panic!("the reply must come first")
        };
        assert_eq!(to, conn, "reply goes to the caller");
        let (header, payload) = wire::split_message(&bytes).unwrap();
        assert!(
            header.kind == request.kind || header.kind == MessageType::Error as u32,
            "reply type {} to request type {}",
            header.kind,
            request.kind
        );
        assert_eq!(header.req_id, request.req_id);
        assert_eq!(header.tx_id, request.tx_id);
        let reply = Reply {
            header,
            payload: payload.to_vec(),
        };
        for item in items {
            self.record(item);
        }
        reply
    }

    fn record(&mut self, item: Outgoing) {
        match item {
            Outgoing::Message { conn, bytes } => {
                let (header, payload) = wire::split_message(&bytes).unwrap();
                assert_eq!(
                    header.kind,
                    MessageType::WatchEvent as u32,
                    "only events follow"
                );
                assert_eq!((header.req_id, header.tx_id), (0, 0));
                let strings = wire::split_strings(payload).unwrap();
                let [path, token] = strings[..] else {
                    panic!("event {payload:?}")
                };
                let event = (
                    String::from_utf8(path.to_vec()).unwrap(),
                    String::from_utf8(token.to_vec()).unwrap(),
                );
                self.events.entry(conn).or_default().push(event);
            }
            other => self.other.push(other),
        }
    }

    fn request(
        &mut self,
        conn: ConnId,
        kind: MessageType,
        tx: u32,
        args: &[&str],
    ) -> Result<Vec<u8>, String> {
        self.last_req_id += 1;
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        let message = wire::encode_request(kind, self.last_req_id, tx, &args);
        self.raw(conn, &message).result()
    }

    fn write_tx(&mut self, conn: ConnId, tx: u32, path: &str, value: &[u8]) -> Result<(), String> {
        self.last_req_id += 1;
        let message = wire::encode_write(self.last_req_id, tx, path.as_bytes(), value);
        let reply = self.raw(conn, &message).result()?;
        assert_eq!(reply, b"OK\0");
        Ok(())
    }

    fn write(&mut self, conn: ConnId, path: &str, value: &str) -> Result<(), String> {
        self.write_tx(conn, 0, path, value.as_bytes())
    }

    fn read(&mut self, conn: ConnId, path: &str) -> Result<String, String> {
        self.read_tx(conn, 0, path)
    }

    fn read_tx(&mut self, conn: ConnId, tx: u32, path: &str) -> Result<String, String> {
        let value = self.request(conn, MessageType::Read, tx, &[path])?;
        Ok(String::from_utf8(value).unwrap())
    }

    fn ok(&mut self, conn: ConnId, kind: MessageType, args: &[&str]) -> Result<(), String> {
        let reply = self.request(conn, kind, 0, args)?;
        assert_eq!(reply, b"OK\0");
        Ok(())
    }

    fn directory(&mut self, conn: ConnId, path: &str) -> Result<Vec<String>, String> {
        let reply = self.request(conn, MessageType::Directory, 0, &[path])?;
        Ok(names(&reply))
    }

    fn perms(&mut self, conn: ConnId, path: &str) -> Result<Vec<String>, String> {
        let reply = self.request(conn, MessageType::GetPerms, 0, &[path])?;
        Ok(names(&reply))
    }

    fn set_perms(&mut self, conn: ConnId, path: &str, perms: &[&str]) -> Result<(), String> {
        let mut args = vec![path];
        args.extend_from_slice(perms);
        self.ok(conn, MessageType::SetPerms, &args)
    }

    fn watch(&mut self, conn: ConnId, path: &str, token: &str) -> Result<(), String> {
        self.ok(conn, MessageType::Watch, &[path, token])
    }

    fn start(&mut self, conn: ConnId) -> Result<u32, String> {
        let reply = self.request(conn, MessageType::TransactionStart, 0, &[""])?;
        let text = reply.strip_suffix(&[0]).expect("NUL-terminated id");
        Ok(std::str::from_utf8(text).unwrap().parse().unwrap())
    }

    fn end(&mut self, conn: ConnId, tx: u32, commit: bool) -> Result<(), String> {
        let reply = self.request(
            conn,
            MessageType::TransactionEnd,
            tx,
            &[if commit { "T" } else { "F" }],
        )?;
        assert_eq!(reply, b"OK\0");
        Ok(())
    }

    /// Takes the events `conn` received so far.
    fn events(&mut self, conn: ConnId) -> Vec<(String, String)> {
        self.events.remove(&conn).unwrap_or_default()
    }
}

fn names(reply: &[u8]) -> Vec<String> {
    if reply.is_empty() {
        return Vec::new();
    }
    wire::split_strings(reply)
        .expect("NUL-terminated names")
        .into_iter()
        .map(|name| String::from_utf8(name.to_vec()).unwrap())
        .collect()
}

fn event(path: &str, token: &str) -> (String, String) {
    (path.to_string(), token.to_string())
}

fn err<T>(result: Result<T, String>) -> String {
    match result {
        Ok(_) => "success".to_string(),
        Err(name) => name,
    }
}

// ---------------------------------------------------------------- basic operations

#[test]
fn reply_echoes_request_ids_and_type() {
    let mut h = Harness::new();
    let tools = h.store.add_connection(0, true);
    let message = wire::encode_write(0xdead_beef, 0, b"/a", b"1");
    let reply = h.raw(tools, &message);
    assert_eq!(reply.header.kind, MessageType::Write as u32);
    assert_eq!(reply.header.req_id, 0xdead_beef);
    assert_eq!(reply.payload, b"OK\0");
    let missing = wire::encode_request(MessageType::Read, 77, 0, &[b"/nope"]);
    let reply = h.raw(tools, &missing);
    assert_eq!(reply.header.kind, MessageType::Error as u32);
    assert_eq!(reply.header.req_id, 77);
    assert_eq!(reply.payload, b"ENOENT\0");
}

#[test]
fn write_creates_parents_and_values_are_raw_bytes() {
    let mut h = Harness::new();
    let tools = h.store.add_connection(0, true);
    h.write_tx(tools, 0, "/a/b/c", b"with\0nul and no terminator")
        .unwrap();
    assert_eq!(
        h.request(tools, MessageType::Read, 0, &["/a/b/c"]).unwrap(),
        b"with\0nul and no terminator"
    );
    assert_eq!(h.read(tools, "/a").unwrap(), "");
    assert_eq!(h.read(tools, "/a/b").unwrap(), "");
    h.write_tx(tools, 0, "/a/b/c", b"").unwrap();
    assert_eq!(h.read(tools, "/a/b/c").unwrap(), "");
    assert_eq!(err(h.read(tools, "/a/x")), "ENOENT");
}

#[test]
fn mkdir_creates_and_tolerates_existing() {
    let mut h = Harness::new();
    let tools = h.store.add_connection(0, true);
    h.ok(tools, MessageType::Mkdir, &["/d/e"]).unwrap();
    assert_eq!(h.read(tools, "/d/e").unwrap(), "");
    h.write(tools, "/d/e", "kept").unwrap();
    h.ok(tools, MessageType::Mkdir, &["/d/e"]).unwrap();
    assert_eq!(h.read(tools, "/d/e").unwrap(), "kept");
}

#[test]
fn rm_removes_subtrees_and_follows_parent_rules() {
    let mut h = Harness::new();
    let tools = h.store.add_connection(0, true);
    h.write(tools, "/r/a/b", "1").unwrap();
    h.write(tools, "/r/c", "2").unwrap();
    h.ok(tools, MessageType::Rm, &["/r/a"]).unwrap();
    assert_eq!(err(h.read(tools, "/r/a/b")), "ENOENT");
    assert_eq!(h.directory(tools, "/r").unwrap(), ["c"]);
    // Absent node with an existing parent: fine. Absent parent: ENOENT.
    h.ok(tools, MessageType::Rm, &["/r/a"]).unwrap();
    assert_eq!(err(h.ok(tools, MessageType::Rm, &["/r/a/b"])), "ENOENT");
    assert_eq!(err(h.ok(tools, MessageType::Rm, &["/"])), "EINVAL");
    assert_eq!(h.store.tree().owned_counts().get(&0), Some(&3));
}

#[test]
fn directory_lists_children_and_leaves_are_empty() {
    let mut h = Harness::new();
    let tools = h.store.add_connection(0, true);
    h.write(tools, "/dir/x", "").unwrap();
    h.write(tools, "/dir/y/z", "").unwrap();
    let mut list = h.directory(tools, "/dir").unwrap();
    list.sort();
    assert_eq!(list, ["x", "y"]);
    assert_eq!(h.directory(tools, "/dir/x").unwrap(), Vec::<String>::new());
    assert_eq!(
        h.request(tools, MessageType::Directory, 0, &["/dir/x"])
            .unwrap(),
        b""
    );
    assert_eq!(err(h.directory(tools, "/dir/none")), "ENOENT");
}

#[test]
fn huge_directory_is_e2big_and_comes_in_parts() {
    let mut h = Harness::new();
    let tools = h.store.add_connection(0, true);
    let mut expected = Vec::new();
    for index in 0..400 {
        let name = format!("child-with-a-long-name-{index:04}");
        h.write(tools, &format!("/big/{name}"), "").unwrap();
        expected.push(name);
    }
    assert_eq!(err(h.directory(tools, "/big")), "E2BIG");
    let mut collected = Vec::new();
    let mut offset = 0usize;
    let mut generation = None;
    loop {
        let reply = h
            .request(
                tools,
                MessageType::DirectoryPart,
                0,
                &["/big", &offset.to_string()],
            )
            .unwrap();
        assert!(reply.len() <= PAYLOAD_MAX);
        let strings = wire::split_strings(&reply).unwrap();
        let (gen, rest) = strings.split_first().unwrap();
        assert!(
            generation.is_none() || generation == Some(gen.to_vec()),
            "generation is stable"
        );
        generation = Some(gen.to_vec());
        let done = rest.last() == Some(&&b""[..]);
        for name in rest.iter().filter(|name| !name.is_empty()) {
            offset += name.len() + 1;
            collected.push(String::from_utf8(name.to_vec()).unwrap());
        }
        if done {
            break;
        }
    }
    assert_eq!(collected, expected);
    let past_end = h
        .request(tools, MessageType::DirectoryPart, 0, &["/big", "999999"])
        .unwrap();
    assert!(past_end.ends_with(b"\0\0"));
}

#[test]
fn get_and_set_perms() {
    let mut h = Harness::new();
    let tools = h.store.add_connection(0, true);
    h.write(tools, "/p", "").unwrap();
    assert_eq!(h.perms(tools, "/p").unwrap(), ["n0"]);
    h.set_perms(tools, "/p", &["r5", "b6", "w7"]).unwrap();
    assert_eq!(h.perms(tools, "/p").unwrap(), ["r5", "b6", "w7"]);
    assert_eq!(err(h.set_perms(tools, "/p", &["x5"])), "EINVAL");
    assert_eq!(err(h.set_perms(tools, "/p", &["r"])), "EINVAL");
    assert_eq!(err(h.set_perms(tools, "/p", &["r70000"])), "EINVAL");
    assert_eq!(err(h.ok(tools, MessageType::SetPerms, &["/p"])), "EINVAL");
    assert_eq!(err(h.set_perms(tools, "/missing", &["r5"])), "ENOENT");
    assert_eq!(h.perms(tools, "@introduceDomain").unwrap(), ["n0"]);
    assert_eq!(err(h.perms(tools, "@other")), "ENOENT");
}

#[test]
fn domain_paths_and_introduction() {
    let mut h = Harness::new();
    let tools = h.store.add_connection(0, true);
    assert_eq!(
        h.request(tools, MessageType::GetDomainPath, 0, &["7"])
            .unwrap(),
        b"/local/domain/7\0"
    );
    assert_eq!(
        err(h.request(tools, MessageType::GetDomainPath, 0, &["x"])),
        "EINVAL"
    );
    assert_eq!(
        h.request(tools, MessageType::IsDomainIntroduced, 0, &["7"])
            .unwrap(),
        b"F\0"
    );
    h.watch(tools, "@introduceDomain", "intro").unwrap();
    h.watch(tools, "@releaseDomain", "release").unwrap();
    assert_eq!(
        h.events(tools),
        [
            event("@introduceDomain", "intro"),
            event("@releaseDomain", "release")
        ]
    );
    h.ok(tools, MessageType::Introduce, &["7", "4096", "3"])
        .unwrap();
    assert_eq!(h.events(tools), [event("@introduceDomain", "intro")]);
    assert_eq!(
        h.other.pop(),
        Some(Outgoing::Introduce {
            domid: 7,
            gfn: 4096,
            evtchn: 3
        })
    );
    assert_eq!(
        h.request(tools, MessageType::IsDomainIntroduced, 0, &["7"])
            .unwrap(),
        b"T\0"
    );
    // Introducing again updates the ring without a second event.
    h.ok(tools, MessageType::Introduce, &["7", "8192", "4"])
        .unwrap();
    assert_eq!(h.events(tools), []);
    assert_eq!(h.store.ring(7).map(|ring| ring.gfn), Some(8192));
    for bad in [
        &["7", "1"][..],
        &["x", "1", "2"],
        &["7", "1", "99999999999"],
        &["32752", "1", "2"],
    ] {
        assert_eq!(
            err(h.ok(tools, MessageType::Introduce, bad)),
            "EINVAL",
            "{bad:?}"
        );
    }

    let guest = h.store.add_connection(7, false);
    h.watch(guest, "device", "dev").unwrap();
    assert_eq!(
        err(h.ok(guest, MessageType::Introduce, &["8", "1", "2"])),
        "EACCES"
    );
    assert_eq!(err(h.ok(guest, MessageType::Release, &["7"])), "EACCES");
    h.ok(tools, MessageType::Release, &["7"]).unwrap();
    assert_eq!(h.events(tools), [event("@releaseDomain", "release")]);
    assert_eq!(h.other.pop(), Some(Outgoing::Close { conn: guest }));
    assert_eq!(h.store.connection_info(guest), None);
    assert_eq!(h.store.usage(7), (0, 0));
    assert_eq!(
        h.request(tools, MessageType::IsDomainIntroduced, 0, &["7"])
            .unwrap(),
        b"F\0"
    );
    assert_eq!(err(h.ok(tools, MessageType::Release, &["7"])), "ENOENT");
    assert_eq!(
        h.store.handle(
            guest,
            &wire::encode_request(MessageType::Read, 1, 0, &[b"x"])
        ),
        Err(ProtocolError::UnknownConnection)
    );
}

#[test]
fn introduce_domain_builds_a_private_home() {
    let (mut h, tools, one, two) = Harness::with_domains();
    assert_eq!(h.read(one, "name").unwrap(), "one");
    assert_eq!(h.read(one, "domid").unwrap(), "1");
    assert_eq!(h.read(tools, "/local/domain/2/name").unwrap(), "two");
    assert_eq!(h.perms(one, "/local/domain/1").unwrap(), ["n1"]);
    assert_eq!(h.perms(one, "name").unwrap(), ["n1"]);
    assert_eq!(err(h.read(two, "/local/domain/1/name")), "EACCES");
    assert_eq!(h.store.tree().owned_counts().get(&1), Some(&3));
    assert_eq!(
        h.store.introduce_domain(1, "again").unwrap_err().name(),
        "EEXIST"
    );
    assert_eq!(
        h.request(tools, MessageType::IsDomainIntroduced, 0, &["1"])
            .unwrap(),
        b"T\0"
    );
}

#[test]
fn unsupported_types_are_enosys() {
    let mut h = Harness::new();
    let tools = h.store.add_connection(0, true);
    for kind in [0u32, 18, 19, 20, 23, 24, 25, 26, 27, 0xffff, u32::MAX] {
        let reply = h.raw(tools, &wire::encode_message(kind, 5, 0, b"x\0"));
        assert_eq!(reply.result().unwrap_err(), "ENOSYS", "type {kind}");
    }
    for kind in [MessageType::WatchEvent, MessageType::Error] {
        let reply = h.raw(tools, &wire::encode_message(kind as u32, 5, 0, b"x\0"));
        assert_eq!(reply.result().unwrap_err(), "EINVAL");
    }
}

#[test]
fn reset_watches_drops_watches_and_transactions() {
    let (mut h, _, one, _) = Harness::with_domains();
    h.watch(one, "a", "t").unwrap();
    let tx = h.start(one).unwrap();
    assert_eq!(h.store.usage(1), (1, 1));
    h.ok(one, MessageType::ResetWatches, &[""]).unwrap();
    assert_eq!(h.store.usage(1), (0, 0));
    assert_eq!(err(h.end(one, tx, true)), "ENOENT");
    h.events(one);
    h.write(one, "a", "1").unwrap();
    assert_eq!(h.events(one), []);
}

// ---------------------------------------------------------------- malformed input

#[test]
fn malformed_payloads_get_einval() {
    let mut h = Harness::new();
    let tools = h.store.add_connection(0, true);
    h.write(tools, "/m", "v").unwrap();
    let cases: Vec<(MessageType, &[u8])> = vec![
        (MessageType::Read, b"/m"),            // missing NUL
        (MessageType::Read, b""),              // nothing at all
        (MessageType::Read, b"/m\0/n\0"),      // two paths
        (MessageType::Write, b"/m"),           // no NUL between path and value
        (MessageType::Directory, b"/m\0x"),    // trailing bytes
        (MessageType::Watch, b"/m\0"),         // no token
        (MessageType::Watch, b"/m\0t"),        // token without NUL
        (MessageType::Unwatch, b"/m\0t\0x\0"), // too many strings
        (MessageType::TransactionEnd, b"T"),   // (no such transaction first)
        (MessageType::GetDomainPath, b"1"),
        (MessageType::DirectoryPart, b"/m\0"),
        (MessageType::DirectoryPart, b"/m\0-1\0"),
    ];
    for (kind, payload) in cases {
        let reply = h.raw(tools, &wire::encode_message(kind as u32, 1, 0, payload));
        let error = reply.result().unwrap_err();
        let expected = if kind == MessageType::TransactionEnd {
            "ENOENT"
        } else {
            "EINVAL"
        };
        assert_eq!(error, expected, "{kind:?} {payload:?}");
    }
    let tx = h.start(tools).unwrap();
    for payload in [&b"T"[..], b"X\0", b"", b"T\0F\0"] {
        let reply = h.raw(
            tools,
            &wire::encode_message(MessageType::TransactionEnd as u32, 1, tx, payload),
        );
        assert_eq!(reply.result().unwrap_err(), "EINVAL", "{payload:?}");
    }
    h.end(tools, tx, false).unwrap();
}

#[test]
fn broken_framing_is_a_protocol_error_not_a_panic() {
    let mut store = Store::new(Quotas::default());
    let conn = store.add_connection(3, false);
    let good = wire::encode_request(MessageType::Read, 1, 0, &[b"x"]);
    assert_eq!(
        store.handle(conn, &good[..10]),
        Err(ProtocolError::ShortHeader)
    );
    assert_eq!(store.handle(conn, &[]), Err(ProtocolError::ShortHeader));
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(
        store.handle(conn, &longer),
        Err(ProtocolError::LengthMismatch { len: 2, actual: 3 })
    );
    assert_eq!(
        store.handle(conn, &good[..good.len() - 1]),
        Err(ProtocolError::LengthMismatch { len: 2, actual: 1 })
    );
    let mut oversize = Header {
        kind: 2,
        req_id: 0,
        tx_id: 0,
        len: 5000,
    }
    .encode()
    .to_vec();
    oversize.resize(HEADER_BYTES + 5000, b'a');
    assert_eq!(
        store.handle(conn, &oversize),
        Err(ProtocolError::Oversize { len: 5000 })
    );
    let mut framer = xenstore_store::Framer::new();
    assert_eq!(
        framer.feed(&oversize[..HEADER_BYTES]),
        Err(ProtocolError::Oversize { len: 5000 })
    );
    // A payload of exactly the maximum is fine.
    let mut path = b"/".to_vec();
    path.extend(std::iter::repeat_n(b'a', 3000));
    let max = wire::encode_write(1, 0, &path, &vec![b'v'; PAYLOAD_MAX - path.len() - 1]);
    assert_eq!(max.len(), HEADER_BYTES + PAYLOAD_MAX);
    let tools = store.add_connection(0, true);
    assert!(store.handle(tools, &max).is_ok());
    store.check_invariants().unwrap();
}

#[test]
fn paths_are_checked_and_relative_ones_resolved() {
    let (mut h, tools, one, _) = Harness::with_domains();
    h.write(one, "device/vbd", "x").unwrap();
    assert_eq!(h.read(tools, "/local/domain/1/device/vbd").unwrap(), "x");
    assert_eq!(h.read(one, "/local/domain/1/device/vbd").unwrap(), "x");
    for bad in ["/a//b", "/a/", "a b", "/a.b", "/ä", "//"] {
        assert_eq!(err(h.read(tools, bad)), "EINVAL", "{bad}");
        assert_eq!(err(h.write(tools, bad, "")), "EINVAL", "{bad}");
    }
    let long_abs = format!("/{}", "a".repeat(3072));
    assert_eq!(err(h.write(tools, &long_abs, "")), "EINVAL");
    let max_abs = format!("/{}", "a".repeat(3071));
    h.write(tools, &max_abs, "").unwrap();
    let long_rel = "a".repeat(2049);
    assert_eq!(err(h.write(one, &long_rel, "")), "EINVAL");
    let max_rel = "a".repeat(2048);
    h.write(one, &max_rel, "").unwrap();
}

// ---------------------------------------------------------------- permissions

#[test]
fn reading_needs_read_permission() {
    let (mut h, tools, one, two) = Harness::with_domains();
    h.write(one, "data/secret", "s").unwrap();
    assert_eq!(err(h.read(two, "/local/domain/1/data/secret")), "EACCES");
    assert_eq!(err(h.directory(two, "/local/domain/1/data")), "EACCES");
    assert_eq!(err(h.perms(two, "/local/domain/1/data")), "EACCES");
    // A missing node below an unreadable one does not reveal that it is missing.
    assert_eq!(err(h.read(two, "/local/domain/1/data/nothing")), "EACCES");
    assert_eq!(err(h.read(one, "data/nothing")), "ENOENT");
    // Grant read to domain 2 only.
    h.set_perms(one, "data/secret", &["n1", "r2"]).unwrap();
    assert_eq!(h.read(two, "/local/domain/1/data/secret").unwrap(), "s");
    assert_eq!(
        err(h.write(two, "/local/domain/1/data/secret", "x")),
        "EACCES"
    );
    // The privileged toolstack reads everything.
    assert_eq!(h.read(tools, "/local/domain/1/data/secret").unwrap(), "s");
    // The owner's letter is the default for unlisted domains.
    h.set_perms(one, "data/secret", &["r1"]).unwrap();
    let three = h.store.add_connection(3, false);
    assert_eq!(h.read(three, "/local/domain/1/data/secret").unwrap(), "s");
}

#[test]
fn writing_and_creating_need_write_permission() {
    let (mut h, tools, one, two) = Harness::with_domains();
    h.write(tools, "/shared", "").unwrap();
    h.set_perms(tools, "/shared", &["n0", "w1", "r2"]).unwrap();
    // Creating needs w on the nearest existing ancestor (missing parents are created).
    h.write(one, "/shared/a/b", "1").unwrap();
    assert_eq!(err(h.write(two, "/shared/c", "1")), "EACCES");
    assert_eq!(err(h.ok(two, MessageType::Mkdir, &["/shared/c"])), "EACCES");
    // Modifying needs w on the node itself: the new nodes belong to domain 1.
    assert_eq!(h.perms(tools, "/shared/a/b").unwrap(), ["n1", "w1", "r2"]);
    h.write(one, "/shared/a/b", "2").unwrap();
    assert_eq!(h.read(two, "/shared/a/b").unwrap(), "2");
    assert_eq!(err(h.write(two, "/shared/a/b", "3")), "EACCES");
    assert_eq!(err(h.ok(two, MessageType::Rm, &["/shared/a"])), "EACCES");
    // Removing an absent node needs w on the nearest ancestor too.
    assert_eq!(err(h.ok(two, MessageType::Rm, &["/shared/zz"])), "EACCES");
    h.ok(one, MessageType::Rm, &["/shared/zz"]).unwrap();
    // Nothing may be written under another domain's home.
    assert_eq!(err(h.write(two, "/local/domain/1/x", "1")), "EACCES");
    // Unprivileged domains cannot create at the top.
    assert_eq!(err(h.write(one, "/top", "1")), "EACCES");
    assert_eq!(h.store.tree().owned_counts().get(&1), Some(&5));
}

#[test]
fn new_nodes_inherit_perms_and_creator_owns_them() {
    let (mut h, tools, one, _) = Harness::with_domains();
    h.write(tools, "/local/domain/1/device/vif/0/state", "1")
        .unwrap();
    // Privileged creation keeps the parent's owner.
    assert_eq!(
        h.perms(tools, "/local/domain/1/device/vif/0/state")
            .unwrap(),
        ["n1"]
    );
    h.write(tools, "/backend", "").unwrap();
    h.set_perms(tools, "/backend", &["n0", "b1"]).unwrap();
    h.write(one, "/backend/x", "").unwrap();
    assert_eq!(h.perms(tools, "/backend/x").unwrap(), ["n1", "b1"]);
    h.write(tools, "/backend/y", "").unwrap();
    assert_eq!(h.perms(tools, "/backend/y").unwrap(), ["n0", "b1"]);
}

#[test]
fn only_owners_change_perms_and_only_privileged_change_owners() {
    let (mut h, tools, one, two) = Harness::with_domains();
    h.write(one, "mine", "").unwrap();
    h.set_perms(one, "mine", &["n1", "b2"]).unwrap();
    // Domain 2 may write the node but does not own it.
    h.write(two, "/local/domain/1/mine", "x").unwrap();
    assert_eq!(
        err(h.set_perms(two, "/local/domain/1/mine", &["n2"])),
        "EACCES"
    );
    assert_eq!(
        err(h.set_perms(two, "/local/domain/1/mine", &["n1", "b2", "b3"])),
        "EACCES"
    );
    // The owner may not give it away.
    assert_eq!(err(h.set_perms(one, "mine", &["n2"])), "EPERM");
    // The toolstack may.
    h.set_perms(tools, "/local/domain/1/mine", &["n2"]).unwrap();
    assert_eq!(h.store.tree().owned_counts().get(&2), Some(&4));
    h.set_perms(two, "/local/domain/1/mine", &["r2"]).unwrap();
    // Special paths: only their owner (domain 0 by default, i.e. privileged) sets them.
    assert_eq!(
        err(h.set_perms(one, "@releaseDomain", &["n0", "r1"])),
        "EACCES"
    );
    h.set_perms(tools, "@releaseDomain", &["n0", "r1"]).unwrap();
    assert_eq!(h.perms(one, "@releaseDomain").unwrap(), ["n0", "r1"]);
}

// ---------------------------------------------------------------- watches

#[test]
fn new_watch_fires_once_at_once() {
    let (mut h, _, one, _) = Harness::with_domains();
    h.watch(one, "device", "tok").unwrap();
    assert_eq!(h.events(one), [event("device", "tok")]);
    h.watch(one, "/local/domain/1/control", "abs").unwrap();
    assert_eq!(h.events(one), [event("/local/domain/1/control", "abs")]);
    // Same path and token again: EEXIST; another token is another watch.
    assert_eq!(err(h.watch(one, "device", "tok")), "EEXIST");
    assert_eq!(err(h.watch(one, "/local/domain/1/device", "tok")), "EEXIST");
    h.watch(one, "device", "tok2").unwrap();
    assert_eq!(h.events(one), [event("device", "tok2")]);
}

#[test]
fn watches_fire_for_the_node_and_descendants() {
    let (mut h, tools, one, _) = Harness::with_domains();
    h.watch(one, "device", "t").unwrap();
    h.events(one);
    h.write(tools, "/local/domain/1/device/vbd/51712/state", "1")
        .unwrap();
    assert_eq!(h.events(one), [event("device/vbd/51712/state", "t")]);
    h.write(tools, "/local/domain/1/device", "v").unwrap();
    assert_eq!(h.events(one), [event("device", "t")]);
    h.set_perms(tools, "/local/domain/1/device/vbd", &["n1", "r0"])
        .unwrap();
    assert_eq!(h.events(one), [event("device/vbd", "t")]);
    h.write(tools, "/local/domain/1/devices", "not below")
        .unwrap();
    h.write(tools, "/local/domain/1/name", "renamed").unwrap();
    assert_eq!(h.events(one), []);
    h.ok(one, MessageType::Mkdir, &["device/new"]).unwrap();
    assert_eq!(h.events(one), [event("device/new", "t")]);
    // MKDIR of an existing node changes nothing and fires nothing.
    h.ok(one, MessageType::Mkdir, &["device/new"]).unwrap();
    assert_eq!(h.events(one), []);
}

#[test]
fn removing_an_ancestor_reports_the_watched_path() {
    let (mut h, tools, one, _) = Harness::with_domains();
    h.write(one, "device/vif/0/state", "4").unwrap();
    h.watch(one, "device/vif/0/state", "deep").unwrap();
    h.watch(one, "device/vif/1", "absent").unwrap();
    h.watch(one, "/local/domain/1/device", "top").unwrap();
    h.events(one);
    h.ok(tools, MessageType::Rm, &["/local/domain/1/device/vif"])
        .unwrap();
    let mut events = h.events(one);
    events.sort();
    assert_eq!(
        events,
        [
            event("/local/domain/1/device/vif", "top"),
            event("device/vif/0/state", "deep"),
            event("device/vif/1", "absent"),
        ]
    );
}

#[test]
fn relative_and_absolute_watches_report_their_form() {
    let (mut h, tools, one, _) = Harness::with_domains();
    h.watch(one, "control", "rel").unwrap();
    h.watch(one, "/local/domain/1/control", "abs").unwrap();
    h.watch(tools, "/local/domain/1/control", "tools").unwrap();
    h.events(one);
    h.events(tools);
    h.write(tools, "/local/domain/1/control/shutdown", "poweroff")
        .unwrap();
    assert_eq!(
        h.events(one),
        [
            event("control/shutdown", "rel"),
            event("/local/domain/1/control/shutdown", "abs")
        ]
    );
    assert_eq!(
        h.events(tools),
        [event("/local/domain/1/control/shutdown", "tools")]
    );
}

#[test]
fn no_event_for_a_node_the_watcher_cannot_read() {
    let (mut h, tools, one, two) = Harness::with_domains();
    h.watch(two, "/local/domain/1", "spy").unwrap();
    assert_eq!(h.events(two), [event("/local/domain/1", "spy")]);
    h.write(one, "data", "private").unwrap();
    h.write(tools, "/local/domain/1/other", "private").unwrap();
    h.ok(one, MessageType::Rm, &["data"]).unwrap();
    assert_eq!(h.events(two), []);
    // Once readable, events flow.
    h.write(one, "public", "").unwrap();
    h.set_perms(one, "public", &["n1", "r2"]).unwrap();
    // (A permission change is reported only to those who could read before and after.)
    assert_eq!(h.events(two), []);
    h.write(one, "public", "x").unwrap();
    assert_eq!(h.events(two), [event("/local/domain/1/public", "spy")]);
    // Taking the read right away fires no event for the domain losing it.
    h.set_perms(one, "public", &["n1"]).unwrap();
    assert_eq!(h.events(two), []);
    // Special events need read permission on the special path.
    h.watch(one, "@introduceDomain", "intro").unwrap();
    assert_eq!(h.events(one), [event("@introduceDomain", "intro")]);
    h.store
        .introduce_domain(5, "five")
        .unwrap()
        .into_iter()
        .for_each(|item| h.record(item));
    assert_eq!(h.events(one), []);
    h.set_perms(tools, "@introduceDomain", &["n0", "r1"])
        .unwrap();
    h.store
        .introduce_domain(6, "six")
        .unwrap()
        .into_iter()
        .for_each(|item| h.record(item));
    assert_eq!(h.events(one), [event("@introduceDomain", "intro")]);
}

#[test]
fn unwatch_stops_events() {
    let (mut h, _, one, _) = Harness::with_domains();
    h.watch(one, "x", "t").unwrap();
    assert_eq!(h.store.usage(1), (1, 0));
    assert_eq!(
        err(h.ok(one, MessageType::Unwatch, &["x", "other"])),
        "ENOENT"
    );
    h.ok(one, MessageType::Unwatch, &["/local/domain/1/x", "t"])
        .unwrap();
    assert_eq!(h.store.usage(1), (0, 0));
    h.events(one);
    h.write(one, "x", "1").unwrap();
    assert_eq!(h.events(one), []);
    let long_token = "t".repeat(xenstore_store::TOKEN_MAX + 1);
    assert_eq!(err(h.watch(one, "x", &long_token)), "EINVAL");
    assert_eq!(err(h.watch(one, "x y", "t")), "EINVAL");
    assert_eq!(err(h.watch(one, "@bad path", "t")), "EINVAL");
}

// ---------------------------------------------------------------- transactions

#[test]
fn transaction_sees_its_writes_and_commits_atomically() {
    let (mut h, tools, one, _) = Harness::with_domains();
    h.watch(tools, "/local/domain/1", "w").unwrap();
    h.events(tools);
    let tx = h.start(one).unwrap();
    assert_ne!(tx, 0);
    h.write_tx(one, tx, "device/vbd/1/ring-ref", b"8").unwrap();
    h.write_tx(one, tx, "device/vbd/1/state", b"3").unwrap();
    assert_eq!(h.read_tx(one, tx, "device/vbd/1/state").unwrap(), "3");
    assert_eq!(err(h.read(one, "device/vbd/1/state")), "ENOENT");
    assert_eq!(h.events(tools), [], "no events before the commit");
    h.end(one, tx, true).unwrap();
    assert_eq!(h.read(one, "device/vbd/1/state").unwrap(), "3");
    let events = h.events(tools);
    assert!(
        events.contains(&event("/local/domain/1/device/vbd/1/state", "w")),
        "{events:?}"
    );
    assert!(
        events.contains(&event("/local/domain/1/device/vbd/1/ring-ref", "w")),
        "{events:?}"
    );
    // The transaction is gone.
    assert_eq!(err(h.end(one, tx, true)), "ENOENT");
    assert_eq!(err(h.read_tx(one, tx, "name")), "ENOENT");
    assert_eq!(h.store.tree().owned_counts().get(&1), Some(&8));
}

#[test]
fn aborted_transaction_changes_nothing() {
    let (mut h, _, one, _) = Harness::with_domains();
    h.write(one, "keep", "old").unwrap();
    let tx = h.start(one).unwrap();
    h.write_tx(one, tx, "keep", b"new").unwrap();
    let rm = h.request(one, MessageType::Rm, tx, &["domid"]).unwrap();
    assert_eq!(rm, b"OK\0");
    assert_eq!(err(h.read_tx(one, tx, "domid")), "ENOENT");
    h.end(one, tx, false).unwrap();
    assert_eq!(h.read(one, "keep").unwrap(), "old");
    assert_eq!(h.read(one, "domid").unwrap(), "1");
    assert_eq!(h.store.usage(1), (0, 0));
}

trait Ignore {
    fn unwrap_err_or_ok(self);
}

impl<T, E> Ignore for Result<T, E> {
    fn unwrap_err_or_ok(self) {}
}

#[test]
fn conflicting_transactions_second_commit_gets_eagain() {
    let (mut h, tools, one, two) = Harness::with_domains();
    h.write(tools, "/shared/state", "1").unwrap();
    h.set_perms(tools, "/shared", &["b0"]).unwrap();
    h.set_perms(tools, "/shared/state", &["b0"]).unwrap();
    let first = h.start(one).unwrap();
    let second = h.start(two).unwrap();
    assert_eq!(h.read_tx(one, first, "/shared/state").unwrap(), "1");
    assert_eq!(h.read_tx(two, second, "/shared/state").unwrap(), "1");
    h.write_tx(one, first, "/shared/state", b"2").unwrap();
    h.write_tx(two, second, "/shared/state", b"3").unwrap();
    h.end(one, first, true).unwrap();
    assert_eq!(err(h.end(two, second, true)), "EAGAIN");
    assert_eq!(h.read(tools, "/shared/state").unwrap(), "2");
    // The retry succeeds.
    let retry = h.start(two).unwrap();
    assert_eq!(h.read_tx(two, retry, "/shared/state").unwrap(), "2");
    h.write_tx(two, retry, "/shared/state", b"3").unwrap();
    h.end(two, retry, true).unwrap();
    assert_eq!(h.read(tools, "/shared/state").unwrap(), "3");
}

#[test]
fn anything_read_in_a_transaction_can_conflict() {
    let (mut h, tools, one, _) = Harness::with_domains();
    // A node read (even found absent) and changed outside makes the commit fail.
    let tx = h.start(one).unwrap();
    assert_eq!(err(h.read_tx(one, tx, "flag")), "ENOENT");
    h.write_tx(one, tx, "other", b"1").unwrap();
    h.write(tools, "/local/domain/1/flag", "set").unwrap();
    assert_eq!(err(h.end(one, tx, true)), "EAGAIN");
    assert_eq!(err(h.read(one, "other")), "ENOENT");
    // Listing a directory conflicts with a new child.
    let tx = h.start(one).unwrap();
    h.request(one, MessageType::Directory, tx, &["device"])
        .unwrap_err_or_ok();
    let listed = h
        .request(one, MessageType::Directory, tx, &["/local/domain/1"])
        .unwrap();
    assert!(!listed.is_empty());
    h.write(tools, "/local/domain/1/newchild", "").unwrap();
    assert_eq!(err(h.end(one, tx, true)), "EAGAIN");
    // Untouched nodes do not conflict.
    let tx = h.start(one).unwrap();
    h.write_tx(one, tx, "mine", b"1").unwrap();
    h.write(tools, "/elsewhere", "x").unwrap();
    h.end(one, tx, true).unwrap();
}

#[test]
fn transaction_rules() {
    let (mut h, tools, one, two) = Harness::with_domains();
    let tx = h.start(one).unwrap();
    let reply = h.request(one, MessageType::TransactionStart, tx, &[""]);
    assert_eq!(err(reply), "EBUSY");
    assert_eq!(err(h.read_tx(one, 999, "name")), "ENOENT");
    // Transaction ids belong to their connection.
    assert_eq!(err(h.read_tx(two, tx, "name")), "ENOENT");
    // Permissions apply inside transactions too.
    assert_eq!(err(h.read_tx(one, tx, "/local/domain/2/name")), "EACCES");
    assert_eq!(
        err(h.write_tx(one, tx, "/local/domain/2/x", b"1")),
        "EACCES"
    );
    h.end(one, tx, true).unwrap();
    // Ids are decimal and distinct.
    let a = h.start(tools).unwrap();
    let b = h.start(tools).unwrap();
    assert!(a != b && a != 0 && b != 0);
}

// ---------------------------------------------------------------- quotas

#[test]
fn node_quota_stops_the_flooder_only() {
    let quotas = Quotas {
        max_nodes_per_domain: 20,
        ..Quotas::default()
    };
    let mut h = Harness::with_quotas(quotas);
    h.store.introduce_domain(1, "flooder").unwrap();
    h.store.introduce_domain(2, "victim").unwrap();
    let flooder = h.store.add_connection(1, false);
    let victim = h.store.add_connection(2, false);
    let mut created = 0;
    let failure = loop {
        match h.write(flooder, &format!("junk/{created}"), "x") {
            Ok(()) => created += 1,
            Err(name) => break name,
        }
        assert!(created < 100, "quota never hit");
    };
    assert_eq!(failure, "ENOSPC");
    assert_eq!(h.store.tree().owned_counts().get(&1), Some(&20));
    // Modifying existing nodes still works for the flooder; creating does not.
    h.write(flooder, "junk/0", "y").unwrap();
    assert_eq!(err(h.ok(flooder, MessageType::Mkdir, &["more"])), "ENOSPC");
    // The other domain is unaffected.
    for index in 0..10 {
        h.write(victim, &format!("data/{index}"), "v").unwrap();
        assert_eq!(h.read(victim, &format!("data/{index}")).unwrap(), "v");
    }
    // A multi-level create counts every new node.
    h.ok(flooder, MessageType::Rm, &["junk/0"]).unwrap();
    assert_eq!(err(h.write(flooder, "a/b", "")), "ENOSPC");
    h.write(flooder, "a", "").unwrap();
    // Removing frees quota; the toolstack is exempt.
    h.ok(flooder, MessageType::Rm, &["junk"]).unwrap();
    h.write(flooder, "fresh/node", "").unwrap();
    let tools = h.store.add_connection(0, true);
    for index in 0..30 {
        h.write(tools, &format!("/local/domain/1/tools/{index}"), "")
            .unwrap();
    }
    // Nodes created in a transaction count again at commit.
    let quotas = Quotas {
        max_nodes_per_domain: 6,
        ..Quotas::default()
    };
    let mut h = Harness::with_quotas(quotas);
    h.store.introduce_domain(1, "one").unwrap();
    let tools = h.store.add_connection(0, true);
    h.write(tools, "/local/domain/1/x", "").unwrap();
    h.write(tools, "/local/domain/1/y", "").unwrap();
    let one = h.store.add_connection(1, false);
    let first = h.start(one).unwrap();
    let second = h.start(one).unwrap();
    h.write_tx(one, first, "x/a", b"").unwrap();
    h.write_tx(one, second, "y/b", b"").unwrap();
    h.end(one, first, true).unwrap();
    assert_eq!(err(h.end(one, second, true)), "ENOSPC");
    assert_eq!(h.store.tree().owned_counts().get(&1), Some(&6));
}

#[test]
fn watch_quota_is_e2big() {
    let quotas = Quotas {
        max_watches_per_domain: 3,
        ..Quotas::default()
    };
    let mut h = Harness::with_quotas(quotas);
    let one = h.store.add_connection(1, false);
    let other = h.store.add_connection(1, false);
    h.watch(one, "a", "1").unwrap();
    h.watch(one, "a", "2").unwrap();
    h.watch(other, "a", "3").unwrap();
    assert_eq!(err(h.watch(one, "a", "4")), "E2BIG");
    assert_eq!(err(h.watch(other, "a", "4")), "E2BIG");
    let two = h.store.add_connection(2, false);
    h.watch(two, "a", "1").unwrap();
    h.store.remove_connection(other);
    h.watch(one, "a", "4").unwrap();
}

#[test]
fn transaction_quota_is_enospc() {
    let quotas = Quotas {
        max_transactions_per_domain: 2,
        ..Quotas::default()
    };
    let mut h = Harness::with_quotas(quotas);
    let one = h.store.add_connection(1, false);
    let first = h.start(one).unwrap();
    h.start(one).unwrap();
    assert_eq!(err(h.start(one)), "ENOSPC");
    h.end(one, first, false).unwrap();
    h.start(one).unwrap();
    let tools = h.store.add_connection(0, true);
    for _ in 0..5 {
        h.start(tools).unwrap();
    }
}

#[test]
fn size_perm_count_depth_and_transaction_node_limits() {
    let quotas = Quotas {
        max_path_depth: 6,
        max_transaction_nodes: 8,
        ..Quotas::default()
    };
    let (mut h, tools, one, _) = {
        let mut h = Harness::with_quotas(quotas);
        h.store.introduce_domain(1, "one").unwrap();
        let tools = h.store.add_connection(0, true);
        let one = h.store.add_connection(1, false);
        (h, tools, one, ())
    };
    h.write(one, "v", &"x".repeat(2048)).unwrap();
    assert_eq!(err(h.write(one, "v", &"x".repeat(2049))), "ENOSPC");
    h.write(tools, "/local/domain/1/v", &"x".repeat(4000))
        .unwrap();
    h.set_perms(one, "v", &["n1", "r2", "r3", "r4", "r5"])
        .unwrap();
    assert_eq!(
        err(h.set_perms(one, "v", &["n1", "r2", "r3", "r4", "r5", "r6"])),
        "ENOSPC"
    );
    // Depth: /local/domain/1/a/b/c is 6 components.
    h.write(one, "a/b/c", "").unwrap();
    assert_eq!(err(h.write(one, "a/b/c/d", "")), "EINVAL");
    h.write(tools, "/local/domain/1/a/b/c/d", "").unwrap();
    // Nodes one transaction may touch.
    let tx = h.start(one).unwrap();
    let mut failure = None;
    for index in 0..20 {
        if let Err(name) = h.write_tx(one, tx, &format!("t{index}"), b"") {
            failure = Some(name);
            break;
        }
    }
    assert_eq!(failure.as_deref(), Some("ENOSPC"));
    // That write failed before changing anything: the rest commits.
    h.end(one, tx, true).unwrap();
    assert_eq!(h.read(one, "t0").unwrap(), "");
    // An operation that fails half-way poisons its transaction: removing a subtree
    // larger than the limit.
    for index in 0..10 {
        h.write(tools, &format!("/local/domain/1/big/{index}"), "")
            .unwrap();
    }
    let tx = h.start(one).unwrap();
    assert_eq!(err(h.request(one, MessageType::Rm, tx, &["big"])), "ENOSPC");
    assert_eq!(err(h.end(one, tx, true)), "ENOSPC");
    assert_eq!(h.directory(one, "big").unwrap().len(), 10);
}
