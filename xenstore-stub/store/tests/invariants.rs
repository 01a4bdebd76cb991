//! Property tests: random sequences of requests from privileged and unprivileged
//! connections (inside and outside transactions, well-formed or not) never panic, always
//! get a well-formed reply first, and leave the store consistent: every node's parent
//! exists and lists it, per-domain node/watch/transaction counts match what exists.

use proptest::prelude::*;

use xenstore_store::wire::{self, MessageType};
use xenstore_store::{ConnId, DomId, Outgoing, ProtocolError, Quotas, Store};

const COMPONENTS: &[&str] = &["a", "b", "local", "domain", "1", "2", "x"];

#[derive(Clone, Debug)]
enum Op {
    Write {
        conn: usize,
        tx: usize,
        path: String,
        value: Vec<u8>,
    },
    Simple {
        conn: usize,
        tx: usize,
        kind: MessageType,
        path: String,
    },
    SetPerms {
        conn: usize,
        tx: usize,
        path: String,
        perms: Vec<String>,
    },
    Watch {
        conn: usize,
        path: String,
        token: u8,
        remove: bool,
    },
    Start {
        conn: usize,
    },
    End {
        conn: usize,
        tx: usize,
        commit: bool,
    },
    Domain {
        conn: usize,
        domid: DomId,
        release: bool,
    },
    Reset {
        conn: usize,
    },
    Raw {
        conn: usize,
        kind: u32,
        tx: usize,
        payload: Vec<u8>,
    },
}

fn path() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        prop::collection::vec(prop::sample::select(COMPONENTS), 0..5),
    )
        .prop_map(|(absolute, parts)| {
            let joined = parts.join("/");
            if absolute || joined.is_empty() {
                format!("/{joined}")
            } else {
                joined
            }
        })
}

fn perm() -> impl Strategy<Value = String> {
    (prop::sample::select(&['n', 'r', 'w', 'b'][..]), 0u16..4).prop_map(|(c, d)| format!("{c}{d}"))
}

fn op() -> impl Strategy<Value = Op> {
    let conn = 0usize..4;
    // Mostly outside a transaction; slots 1 and 2 pick the connection's transactions.
    let tx = prop_oneof![3 => Just(0usize), 1 => 1usize..3];
    prop_oneof![
        6 => (conn.clone(), tx.clone(), path(), prop::collection::vec(any::<u8>(), 0..7))
            .prop_map(|(conn, tx, path, value)| Op::Write { conn, tx, path, value }),
        4 => (
            conn.clone(),
            tx.clone(),
            prop::sample::select(&[
                MessageType::Read,
                MessageType::Mkdir,
                MessageType::Rm,
                MessageType::Directory,
                MessageType::GetPerms,
            ][..]),
            path()
        )
            .prop_map(|(conn, tx, kind, path)| Op::Simple { conn, tx, kind, path }),
        2 => (conn.clone(), tx.clone(), path(), prop::collection::vec(perm(), 0..4))
            .prop_map(|(conn, tx, path, perms)| Op::SetPerms { conn, tx, path, perms }),
        2 => (conn.clone(), path(), 0u8..3, any::<bool>())
            .prop_map(|(conn, path, token, remove)| Op::Watch { conn, path, token, remove }),
        2 => conn.clone().prop_map(|conn| Op::Start { conn }),
        2 => (conn.clone(), tx.clone(), any::<bool>())
            .prop_map(|(conn, tx, commit)| Op::End { conn, tx, commit }),
        1 => (conn.clone(), 1u16..3, any::<bool>())
            .prop_map(|(conn, domid, release)| Op::Domain { conn, domid, release }),
        1 => conn.clone().prop_map(|conn| Op::Reset { conn }),
        1 => (conn, 0u32..30, tx, prop::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(conn, kind, tx, payload)| Op::Raw { conn, kind, tx, payload }),
    ]
}

/// The connections: privileged domain 0, domains 1 and 2, and a second one for domain 1.
const OWNERS: [(DomId, bool); 4] = [(0, true), (1, false), (2, false), (1, false)];

struct World {
    store: Store,
    conns: Vec<ConnId>,
    /// Transaction ids each connection has seen started (slot 0 means "none").
    txs: Vec<Vec<u32>>,
    req_id: u32,
}

impl World {
    fn new() -> Self {
        let quotas = Quotas {
            max_nodes_per_domain: 15,
            max_watches_per_domain: 4,
            max_transactions_per_domain: 2,
            max_transaction_nodes: 12,
            max_path_depth: 7,
            max_value_bytes: 6,
            ..Quotas::default()
        };
        let mut store = Store::new(quotas);
        let conns = OWNERS
            .iter()
            .map(|&(domid, privileged)| store.add_connection(domid, privileged))
            .collect();
        Self {
            store,
            conns,
            txs: vec![Vec::new(); OWNERS.len()],
            req_id: 0,
        }
    }

    fn tx(&self, conn: usize, slot: usize) -> u32 {
        if slot == 0 {
            0
        } else {
            self.txs[conn]
                .get(slot - 1)
                .copied()
                .unwrap_or(slot as u32 * 1000)
        }
    }

    fn send(&mut self, conn: usize, message: Vec<u8>) -> Result<(), TestCaseError> {
        let id = self.conns[conn];
        let request = wire::Header::decode(&message).unwrap();
        let out = match self.store.handle(id, &message) {
            Ok(out) => out,
            Err(ProtocolError::UnknownConnection) => {
                // Released with its domain: reconnect.
                let (domid, privileged) = OWNERS[conn];
                self.conns[conn] = self.store.add_connection(domid, privileged);
                self.txs[conn].clear();
                return Ok(());
            }
            Err(error) => return Err(TestCaseError::fail(format!("protocol error {error}"))),
        };
        let Some(Outgoing::Message { conn: to, bytes }) = out.first() else {
            return Err(TestCaseError::fail("no reply first"));
        };
        prop_assert_eq!(*to, id);
        let (header, payload) = wire::split_message(bytes).unwrap();
        prop_assert!(header.kind == request.kind || header.kind == MessageType::Error as u32);
        prop_assert_eq!(
            (header.req_id, header.tx_id),
            (request.req_id, request.tx_id)
        );
        if header.kind == MessageType::TransactionStart as u32 {
            let text = std::str::from_utf8(payload.strip_suffix(&[0]).unwrap()).unwrap();
            let tx: u32 = text.parse().unwrap();
            prop_assert_ne!(tx, 0);
            self.txs[conn].push(tx);
        }
        for item in &out[1..] {
            if let Outgoing::Message { bytes, .. } = item {
                let (header, payload) = wire::split_message(bytes).unwrap();
                prop_assert_eq!(header.kind, MessageType::WatchEvent as u32);
                prop_assert_eq!(wire::split_strings(payload).map(|s| s.len()), Some(2));
            }
        }
        if let Err(problem) = self.store.check_invariants() {
            return Err(TestCaseError::fail(problem));
        }
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        self.req_id = self.req_id.wrapping_add(1);
        let req = self.req_id;
        let (conn, message) = match op {
            Op::Write {
                conn,
                tx,
                path,
                value,
            } => (
                conn,
                wire::encode_write(req, self.tx(conn, tx), path.as_bytes(), &value),
            ),
            Op::Simple {
                conn,
                tx,
                kind,
                path,
            } => (
                conn,
                wire::encode_request(kind, req, self.tx(conn, tx), &[path.as_bytes()]),
            ),
            Op::SetPerms {
                conn,
                tx,
                path,
                perms,
            } => {
                let mut args = vec![path.as_bytes()];
                args.extend(perms.iter().map(|perm| perm.as_bytes()));
                (
                    conn,
                    wire::encode_request(MessageType::SetPerms, req, self.tx(conn, tx), &args),
                )
            }
            Op::Watch {
                conn,
                path,
                token,
                remove,
            } => {
                let kind = if remove {
                    MessageType::Unwatch
                } else {
                    MessageType::Watch
                };
                (
                    conn,
                    wire::encode_request(kind, req, 0, &[path.as_bytes(), &[b'a' + token]]),
                )
            }
            Op::Start { conn } => (
                conn,
                wire::encode_request(MessageType::TransactionStart, req, 0, &[b""]),
            ),
            Op::End { conn, tx, commit } => {
                let arg: &[u8] = if commit { b"T" } else { b"F" };
                (
                    conn,
                    wire::encode_request(
                        MessageType::TransactionEnd,
                        req,
                        self.tx(conn, tx),
                        &[arg],
                    ),
                )
            }
            Op::Domain {
                conn,
                domid,
                release,
            } => {
                let id = domid.to_string();
                let message = if release {
                    wire::encode_request(MessageType::Release, req, 0, &[id.as_bytes()])
                } else {
                    wire::encode_request(
                        MessageType::Introduce,
                        req,
                        0,
                        &[id.as_bytes(), b"1", b"2"],
                    )
                };
                (conn, message)
            }
            Op::Reset { conn } => (
                conn,
                wire::encode_request(MessageType::ResetWatches, req, 0, &[b""]),
            ),
            Op::Raw {
                conn,
                kind,
                tx,
                payload,
            } => (
                conn,
                wire::encode_message(kind, req, self.tx(conn, tx), &payload),
            ),
        };
        self.send(conn, message)
    }
}

/// The same operation from an unprivileged connection (connection 0 becomes 2).
fn without_privilege(op: Op) -> Op {
    let swap = |conn: usize| if conn == 0 { 2 } else { conn };
    match op {
        Op::Write {
            conn,
            tx,
            path,
            value,
        } => Op::Write {
            conn: swap(conn),
            tx,
            path,
            value,
        },
        Op::Simple {
            conn,
            tx,
            kind,
            path,
        } => Op::Simple {
            conn: swap(conn),
            tx,
            kind,
            path,
        },
        Op::SetPerms {
            conn,
            tx,
            path,
            perms,
        } => Op::SetPerms {
            conn: swap(conn),
            tx,
            path,
            perms,
        },
        Op::Watch {
            conn,
            path,
            token,
            remove,
        } => Op::Watch {
            conn: swap(conn),
            path,
            token,
            remove,
        },
        Op::Start { conn } => Op::Start { conn: swap(conn) },
        Op::End { conn, tx, commit } => Op::End {
            conn: swap(conn),
            tx,
            commit,
        },
        Op::Domain {
            conn,
            domid,
            release,
        } => Op::Domain {
            conn: swap(conn),
            domid,
            release,
        },
        Op::Reset { conn } => Op::Reset { conn: swap(conn) },
        Op::Raw {
            conn,
            kind,
            tx,
            payload,
        } => Op::Raw {
            conn: swap(conn),
            kind,
            tx,
            payload,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_keep_the_store_consistent(ops in prop::collection::vec(op(), 1..120)) {
        let mut world = World::new();
        for op in ops {
            world.apply(op)?;
        }
        // Closing every connection releases every watch and transaction.
        for conn in world.conns.clone() {
            world.store.remove_connection(conn);
        }
        prop_assert_eq!(world.store.check_invariants(), Ok(()));
        for domid in 0..3 {
            prop_assert_eq!(world.store.usage(domid), (0, 0));
        }
    }

    #[test]
    fn quotas_hold_for_unprivileged_domains(ops in prop::collection::vec(op(), 1..150)) {
        // Only unprivileged connections act (the privileged one may legitimately give a
        // domain more nodes); the toolstack first opens `/a` to everyone.
        let mut world = World::new();
        for domid in [1, 2] {
            world.store.introduce_domain(domid, "guest").unwrap();
        }
        world.send(0, wire::encode_write(1, 0, b"/a", b""))?;
        world.send(0, wire::encode_request(MessageType::SetPerms, 2, 0, &[b"/a", b"b0"]))?;
        for op in ops {
            world.apply(without_privilege(op))?;
            let quotas = *world.store.quotas();
            for domid in [1, 2] {
                let owned = world.store.tree().owned_counts().get(&domid).copied().unwrap_or(0);
                prop_assert!(owned <= quotas.max_nodes_per_domain, "domain {} owns {}", domid, owned);
                let (watches, transactions) = world.store.usage(domid);
                prop_assert!(watches <= quotas.max_watches_per_domain);
                prop_assert!(transactions <= quotas.max_transactions_per_domain);
            }
        }
    }
}
