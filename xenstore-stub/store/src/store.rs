//! The store: connections, request dispatch, watches, transactions and domains.
//!
//! [`Store::handle`] takes one whole request from one connection and returns everything it
//! caused: the reply to the caller (always first), watch events for any connection, and
//! instructions for the transport ([`Outgoing`]). The store does no I/O and keeps no
//! output queues; transports do, with [`crate::OutputQueue`].
//!
//! Privilege is a property of a connection, given when it is added: the toolstack's (and
//! the host server's clients) are privileged, guests' are not. There is no special dom0.
//! A privileged connection bypasses permission checks and quotas, and alone may
//! `INTRODUCE` and `RELEASE` domains and change nodes' owners.
//!
//! Details the protocol leaves open, and what this store does:
//! - `tx_id` is only looked at by the node operations (`READ`, `WRITE`, `MKDIR`, `RM`,
//!   `DIRECTORY`, `DIRECTORY_PART`, `GET_PERMS`, `SET_PERMS`) and by `TRANSACTION_END`; an
//!   unknown id is `ENOENT`. `TRANSACTION_START` with a non-zero `tx_id` is `EBUSY`.
//!   Transaction ids are per connection, start at 1 and are never 0.
//! - A new watch fires once at once with the watched path, whatever the permissions (the
//!   event tells the watcher nothing it did not send). The event follows the `OK` reply.
//! - `INTRODUCE` of a domain already introduced updates its ring details without firing
//!   `@introduceDomain` again. `RELEASE` of a domain not introduced is `ENOENT`; it closes
//!   the domain's connections (dropping their watches and transactions) but leaves its
//!   nodes, which the toolstack removes.
//! - Replies longer than the protocol's maximum (a huge directory) are `E2BIG`; clients
//!   then use `DIRECTORY_PART`.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::ops::{self, Caller};
use crate::path::{self, DomId, DOMID_FIRST_RESERVED, INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use crate::perms::{Grant, Perms};
use crate::quota::Quotas;
use crate::transaction::{Transaction, TxView};
use crate::tree::{Tree, View};
use crate::watch::{encode_event, Change, Watch, TOKEN_MAX};
use crate::wire::{
    encode_message, parse_decimal, push_decimal, split_message, split_strings, Header, MessageType,
    ProtocolError, XsError, PAYLOAD_MAX,
};

/// Identifies one client connection (a domain's ring, a socket client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(u32);

impl ConnId {
    /// The number behind the id (for logs).
    pub fn get(self) -> u32 {
        self.0
    }
}

impl core::fmt::Display for ConnId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "conn{}", self.0)
    }
}

/// Something [`Store::handle`] asks the transport to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// Send these bytes (one whole message: a reply or a watch event) to `conn`.
    Message {
        /// The receiving connection.
        conn: ConnId,
        /// Header and payload.
        bytes: Vec<u8>,
    },
    /// A privileged client introduced a domain: map its ring page at `gfn`, bind
    /// `evtchn`, and serve it with a new unprivileged connection.
    Introduce {
        /// The domain.
        domid: DomId,
        /// Guest frame of its ring page.
        gfn: u64,
        /// Its event channel port.
        evtchn: u32,
    },
    /// The store dropped this connection (its domain was released): close its transport.
    Close {
        /// The dropped connection.
        conn: ConnId,
    },
}

/// The ring details a domain was introduced with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingInfo {
    /// Guest frame number of the ring page.
    pub gfn: u64,
    /// Event channel port.
    pub evtchn: u32,
}

#[derive(Debug)]
struct Connection {
    domid: DomId,
    privileged: bool,
    watches: Vec<Watch>,
    transactions: BTreeMap<u32, Transaction>,
    last_tx_id: u32,
}

/// What a domain uses that is not counted in the tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Account {
    watches: usize,
    transactions: usize,
}

/// The xenstore.
#[derive(Debug)]
pub struct Store {
    tree: Tree,
    conns: BTreeMap<ConnId, Connection>,
    last_conn: u32,
    accounts: BTreeMap<DomId, Account>,
    /// Introduced domains; `None` for one introduced in-process without ring details.
    introduced: BTreeMap<DomId, Option<RingInfo>>,
    /// Access lists of the special watch paths, which only control who gets their events.
    specials: [(&'static str, Perms); 2],
    quotas: Quotas,
}

const OK: &[u8] = b"OK\0";

impl Store {
    /// An empty store: only `/`, owned by domain 0 and unreadable to others (`n0`).
    pub fn new(quotas: Quotas) -> Self {
        let none_for_others = Perms::owned_by(0, Grant::None);
        Self {
            tree: Tree::new(none_for_others.clone()),
            conns: BTreeMap::new(),
            last_conn: 0,
            accounts: BTreeMap::new(),
            introduced: BTreeMap::new(),
            specials: [
                (INTRODUCE_DOMAIN, none_for_others.clone()),
                (RELEASE_DOMAIN, none_for_others),
            ],
            quotas,
        }
    }

    /// The limits this store applies.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// The live tree (read-only).
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Adds a connection for a domain. `privileged` gives it the toolstack's rights.
    pub fn add_connection(&mut self, domid: DomId, privileged: bool) -> ConnId {
        loop {
            self.last_conn = self.last_conn.wrapping_add(1);
            let id = ConnId(self.last_conn);
            if let alloc::collections::btree_map::Entry::Vacant(slot) = self.conns.entry(id) {
                slot.insert(Connection {
                    domid,
                    privileged,
                    watches: Vec::new(),
                    transactions: BTreeMap::new(),
                    last_tx_id: 0,
                });
                return id;
            }
        }
    }

    /// Drops a connection with its watches and open transactions.
    pub fn remove_connection(&mut self, conn: ConnId) {
        if let Some(connection) = self.conns.remove(&conn) {
            let domid = connection.domid;
            self.adjust(domid, -(connection.watches.len() as isize), 0);
            self.adjust(domid, 0, -(connection.transactions.len() as isize));
        }
    }

    /// The domain and privilege of a connection.
    pub fn connection_info(&self, conn: ConnId) -> Option<(DomId, bool)> {
        self.conns
            .get(&conn)
            .map(|connection| (connection.domid, connection.privileged))
    }

    /// Whether the domain has been introduced (and not released).
    pub fn is_introduced(&self, domid: DomId) -> bool {
        self.introduced.contains_key(&domid)
    }

    /// The ring details the domain was introduced with over the wire.
    pub fn ring(&self, domid: DomId) -> Option<RingInfo> {
        self.introduced.get(&domid).copied().flatten()
    }

    fn adjust(&mut self, domid: DomId, watches: isize, transactions: isize) {
        let account = self.accounts.entry(domid).or_default();
        account.watches = account.watches.saturating_add_signed(watches);
        account.transactions = account.transactions.saturating_add_signed(transactions);
        if *account == Account::default() {
            self.accounts.remove(&domid);
        }
    }

    fn account(&self, domid: DomId) -> Account {
        self.accounts.get(&domid).copied().unwrap_or_default()
    }

    /// Handles one whole message (header and payload) from `conn`. Returns the reply (the
    /// first element) and whatever else it caused. A message whose framing is broken is a
    /// [`ProtocolError`] and changes nothing: the transport should disconnect the client.
    pub fn handle(&mut self, conn: ConnId, message: &[u8]) -> Result<Vec<Outgoing>, ProtocolError> {
        let (header, payload) = split_message(message)?;
        if !self.conns.contains_key(&conn) {
            return Err(ProtocolError::UnknownConnection);
        }
        let mut after = Vec::new();
        let result = self.dispatch(conn, &header, payload, &mut after);
        let bytes = match result {
            Ok(reply) if reply.len() <= PAYLOAD_MAX => {
                encode_message(header.kind, header.req_id, header.tx_id, &reply)
            }
            Ok(_) => error_message(&header, XsError::E2big),
            Err(error) => error_message(&header, error),
        };
        let mut out = Vec::with_capacity(1 + after.len());
        out.push(Outgoing::Message { conn, bytes });
        out.extend(after);
        Ok(out)
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        header: &Header,
        payload: &[u8],
        after: &mut Vec<Outgoing>,
    ) -> Result<Vec<u8>, XsError> {
        let kind = MessageType::from_u32(header.kind).ok_or(XsError::Enosys)?;
        let tx_id = header.tx_id;
        match kind {
            MessageType::Read => {
                let path = self.path_arg(conn, one_arg(payload)?)?;
                self.in_view(conn, tx_id, after, |view, caller, _| {
                    ops::read(view, caller, &path)
                })
            }
            MessageType::Directory => {
                let path = self.path_arg(conn, one_arg(payload)?)?;
                self.in_view(conn, tx_id, after, |view, caller, _| {
                    ops::directory(view, caller, &path)
                })
            }
            MessageType::DirectoryPart => {
                let args = split_strings(payload).ok_or(XsError::Einval)?;
                let [raw_path, raw_offset] = args[..] else {
                    return Err(XsError::Einval);
                };
                let path = self.path_arg(conn, raw_path)?;
                let offset = parse_decimal(raw_offset)
                    .and_then(|value| usize::try_from(value).ok())
                    .ok_or(XsError::Einval)?;
                self.in_view(conn, tx_id, after, |view, caller, _| {
                    ops::directory_part(view, caller, &path, offset)
                })
            }
            MessageType::GetPerms => {
                let raw = one_arg(payload)?;
                if raw.first() == Some(&b'@') {
                    return self.get_special_perms(conn, raw);
                }
                let path = self.path_arg(conn, raw)?;
                self.in_view(conn, tx_id, after, |view, caller, _| {
                    ops::get_perms(view, caller, &path)
                })
            }
            MessageType::Write => {
                let split = payload
                    .iter()
                    .position(|&byte| byte == 0)
                    .ok_or(XsError::Einval)?;
                let path = self.path_arg(conn, &payload[..split])?;
                let value = &payload[split + 1..];
                self.in_view(conn, tx_id, after, |view, caller, changes| {
                    ops::write(view, caller, &path, value, changes)
                })?;
                Ok(OK.to_vec())
            }
            MessageType::Mkdir => {
                let path = self.path_arg(conn, one_arg(payload)?)?;
                self.in_view(conn, tx_id, after, |view, caller, changes| {
                    ops::mkdir(view, caller, &path, changes)
                })?;
                Ok(OK.to_vec())
            }
            MessageType::Rm => {
                let path = self.path_arg(conn, one_arg(payload)?)?;
                self.in_view(conn, tx_id, after, |view, caller, changes| {
                    ops::rm(view, caller, &path, changes)
                })?;
                Ok(OK.to_vec())
            }
            MessageType::SetPerms => {
                let args = split_strings(payload).ok_or(XsError::Einval)?;
                let (raw_path, raw_perms) = args.split_first().ok_or(XsError::Einval)?;
                let perms = Perms::parse(raw_perms)?;
                if raw_path.first() == Some(&b'@') {
                    return self.set_special_perms(conn, raw_path, perms);
                }
                let path = self.path_arg(conn, raw_path)?;
                self.in_view(conn, tx_id, after, |view, caller, changes| {
                    ops::set_perms(view, caller, &path, perms, changes)
                })?;
                Ok(OK.to_vec())
            }
            MessageType::Watch => self.watch(conn, payload, after),
            MessageType::Unwatch => self.unwatch(conn, payload),
            MessageType::TransactionStart => self.transaction_start(conn, tx_id),
            MessageType::TransactionEnd => self.transaction_end(conn, tx_id, payload, after),
            MessageType::ResetWatches => {
                self.reset_watches(conn);
                Ok(OK.to_vec())
            }
            MessageType::Introduce => self.introduce(conn, payload, after),
            MessageType::Release => {
                self.require_privilege(conn)?;
                let domid = parse_domid(one_arg(payload)?)?;
                if !self.is_introduced(domid) {
                    return Err(XsError::Enoent);
                }
                after.extend(self.release_domain(domid));
                Ok(OK.to_vec())
            }
            MessageType::GetDomainPath => {
                let domid = parse_domid(one_arg(payload)?)?;
                let mut reply = path::domain_path(domid).into_bytes();
                reply.push(0);
                Ok(reply)
            }
            MessageType::IsDomainIntroduced => {
                let domid = parse_domid(one_arg(payload)?)?;
                Ok(if self.is_introduced(domid) {
                    b"T\0".to_vec()
                } else {
                    b"F\0".to_vec()
                })
            }
            MessageType::WatchEvent | MessageType::Error => Err(XsError::Einval),
            MessageType::Control | MessageType::Resume | MessageType::SetTarget => {
                Err(XsError::Enosys)
            }
        }
    }

    fn connection(&self, conn: ConnId) -> Result<&Connection, XsError> {
        self.conns.get(&conn).ok_or(XsError::Eio)
    }

    fn require_privilege(&self, conn: ConnId) -> Result<(), XsError> {
        if self.connection(conn)?.privileged {
            Ok(())
        } else {
            Err(XsError::Eacces)
        }
    }

    /// Resolves a node path sent by `conn`.
    fn path_arg(&self, conn: ConnId, raw: &[u8]) -> Result<String, XsError> {
        Ok(self.resolve(conn, raw)?.absolute)
    }

    fn resolve(&self, conn: ConnId, raw: &[u8]) -> Result<path::Resolved, XsError> {
        let connection = self.connection(conn)?;
        let depth = (!connection.privileged).then_some(self.quotas.max_path_depth);
        path::resolve(raw, connection.domid, depth)
    }

    /// Runs a node operation for `conn`, on the live tree or inside transaction `tx_id`.
    /// Live changes fire watches at once; a transaction's wait for its commit.
    fn in_view<T>(
        &mut self,
        conn: ConnId,
        tx_id: u32,
        after: &mut Vec<Outgoing>,
        op: impl FnOnce(&mut dyn View, &Caller<'_>, &mut Vec<Change>) -> Result<T, XsError>,
    ) -> Result<T, XsError> {
        let connection = self.conns.get_mut(&conn).ok_or(XsError::Eio)?;
        let caller = Caller {
            domid: connection.domid,
            privileged: connection.privileged,
            quotas: (!connection.privileged).then_some(&self.quotas),
        };
        let mut changes = Vec::new();
        if tx_id == 0 {
            let value = op(&mut self.tree, &caller, &mut changes)?;
            self.fire(&changes, after);
            return Ok(value);
        }
        let tx = connection
            .transactions
            .get_mut(&tx_id)
            .ok_or(XsError::Enoent)?;
        let writes_before = tx.writes;
        let mut view = TxView {
            live: &self.tree,
            tx,
        };
        let result = op(&mut view, &caller, &mut changes);
        match &result {
            Ok(_) => tx.changes.append(&mut changes),
            Err(error) if tx.writes != writes_before => tx.poisoned = Some(*error),
            Err(_) => {}
        }
        result
    }

    /// Queues the watch events `changes` cause.
    fn fire(&self, changes: &[Change], out: &mut Vec<Outgoing>) {
        for change in changes {
            for (&conn, connection) in &self.conns {
                for watch in &connection.watches {
                    let Some((path, perms)) = watch.matches(change) else {
                        continue;
                    };
                    let readable = perms.iter().all(|list| {
                        list.access_for(connection.domid, connection.privileged)
                            .read
                    });
                    if readable {
                        let bytes = encode_event(watch, connection.domid, path);
                        out.push(Outgoing::Message { conn, bytes });
                    }
                }
            }
        }
    }

    fn special_index(raw: &[u8]) -> Result<usize, XsError> {
        [INTRODUCE_DOMAIN, RELEASE_DOMAIN]
            .iter()
            .position(|name| name.as_bytes() == raw)
            .ok_or(XsError::Enoent)
    }

    fn get_special_perms(&self, conn: ConnId, raw: &[u8]) -> Result<Vec<u8>, XsError> {
        let connection = self.connection(conn)?;
        let perms = &self.specials[Self::special_index(raw)?].1;
        if !perms
            .access_for(connection.domid, connection.privileged)
            .read
        {
            return Err(XsError::Eacces);
        }
        let mut out = Vec::new();
        perms.encode(&mut out);
        Ok(out)
    }

    fn set_special_perms(
        &mut self,
        conn: ConnId,
        raw: &[u8],
        perms: Perms,
    ) -> Result<Vec<u8>, XsError> {
        let index = Self::special_index(raw)?;
        let connection = self.connection(conn)?;
        let old = &self.specials[index].1;
        if !connection.privileged {
            if !old.access_for(connection.domid, false).owner {
                return Err(XsError::Eacces);
            }
            if perms.owner() != old.owner() {
                return Err(XsError::Eperm);
            }
            if perms.entries().len() > self.quotas.max_perms_per_node {
                return Err(XsError::Enospc);
            }
        }
        self.specials[index].1 = perms;
        Ok(OK.to_vec())
    }

    fn watch(
        &mut self,
        conn: ConnId,
        payload: &[u8],
        after: &mut Vec<Outgoing>,
    ) -> Result<Vec<u8>, XsError> {
        let args = split_strings(payload).ok_or(XsError::Einval)?;
        // A third argument (a depth limit, from a newer protocol feature we do not
        // advertise) is accepted and ignored: extra events are allowed.
        let (raw_path, token) = match args[..] {
            [raw_path, token] | [raw_path, token, _] => (raw_path, token),
            _ => return Err(XsError::Einval),
        };
        if token.len() > TOKEN_MAX {
            return Err(XsError::Einval);
        }
        let watch = self.watch_target(conn, raw_path, token)?;
        let connection = self.connection(conn)?;
        let domid = connection.domid;
        if connection
            .watches
            .iter()
            .any(|w| w.path == watch.path && w.token == watch.token)
        {
            return Err(XsError::Eexist);
        }
        if !connection.privileged
            && self.account(domid).watches >= self.quotas.max_watches_per_domain
        {
            return Err(XsError::E2big);
        }
        let initial = encode_event(&watch, domid, &watch.path);
        self.conns
            .get_mut(&conn)
            .ok_or(XsError::Eio)?
            .watches
            .push(watch);
        self.adjust(domid, 1, 0);
        after.push(Outgoing::Message {
            conn,
            bytes: initial,
        });
        Ok(OK.to_vec())
    }

    fn watch_target(&self, conn: ConnId, raw_path: &[u8], token: &[u8]) -> Result<Watch, XsError> {
        if raw_path.first() == Some(&b'@') {
            let path = path::check_special(raw_path)?;
            return Ok(Watch {
                path,
                token: token.to_vec(),
                relative: false,
            });
        }
        let resolved = self.resolve(conn, raw_path)?;
        Ok(Watch {
            path: resolved.absolute,
            token: token.to_vec(),
            relative: resolved.relative,
        })
    }

    fn unwatch(&mut self, conn: ConnId, payload: &[u8]) -> Result<Vec<u8>, XsError> {
        let args = split_strings(payload).ok_or(XsError::Einval)?;
        let [raw_path, token] = args[..] else {
            return Err(XsError::Einval);
        };
        let target = self.watch_target(conn, raw_path, token)?;
        let connection = self.conns.get_mut(&conn).ok_or(XsError::Eio)?;
        let index = connection
            .watches
            .iter()
            .position(|w| w.path == target.path && w.token == target.token)
            .ok_or(XsError::Enoent)?;
        connection.watches.remove(index);
        let domid = connection.domid;
        self.adjust(domid, -1, 0);
        Ok(OK.to_vec())
    }

    fn reset_watches(&mut self, conn: ConnId) {
        let Some(connection) = self.conns.get_mut(&conn) else {
            return;
        };
        let watches = core::mem::take(&mut connection.watches).len();
        let transactions = core::mem::take(&mut connection.transactions).len();
        let domid = connection.domid;
        self.adjust(domid, -(watches as isize), -(transactions as isize));
    }

    fn transaction_start(&mut self, conn: ConnId, tx_id: u32) -> Result<Vec<u8>, XsError> {
        if tx_id != 0 {
            return Err(XsError::Ebusy);
        }
        let connection = self.connection(conn)?;
        let domid = connection.domid;
        let privileged = connection.privileged;
        if !privileged
            && self.account(domid).transactions >= self.quotas.max_transactions_per_domain
        {
            return Err(XsError::Enospc);
        }
        let limit = (!privileged).then_some(self.quotas.max_transaction_nodes);
        let connection = self.conns.get_mut(&conn).ok_or(XsError::Eio)?;
        let id = loop {
            connection.last_tx_id = connection.last_tx_id.wrapping_add(1);
            let candidate = connection.last_tx_id;
            if candidate != 0 && !connection.transactions.contains_key(&candidate) {
                break candidate;
            }
        };
        connection.transactions.insert(id, Transaction::new(limit));
        self.adjust(domid, 0, 1);
        let mut reply = Vec::new();
        push_decimal(&mut reply, u64::from(id));
        reply.push(0);
        Ok(reply)
    }

    fn transaction_end(
        &mut self,
        conn: ConnId,
        tx_id: u32,
        payload: &[u8],
        after: &mut Vec<Outgoing>,
    ) -> Result<Vec<u8>, XsError> {
        if !self.connection(conn)?.transactions.contains_key(&tx_id) {
            return Err(XsError::Enoent);
        }
        let commit = match one_arg(payload)? {
            b"T" => true,
            b"F" => false,
            _ => return Err(XsError::Einval),
        };
        let connection = self.conns.get_mut(&conn).ok_or(XsError::Eio)?;
        let tx = connection
            .transactions
            .remove(&tx_id)
            .ok_or(XsError::Enoent)?;
        let domid = connection.domid;
        let quota = (!connection.privileged).then_some((domid, self.quotas.max_nodes_per_domain));
        self.adjust(domid, 0, -1);
        if commit {
            let changes = tx.commit(&mut self.tree, quota)?;
            self.fire(&changes, after);
        }
        Ok(OK.to_vec())
    }

    fn introduce(
        &mut self,
        conn: ConnId,
        payload: &[u8],
        after: &mut Vec<Outgoing>,
    ) -> Result<Vec<u8>, XsError> {
        self.require_privilege(conn)?;
        let args = split_strings(payload).ok_or(XsError::Einval)?;
        let [raw_domid, raw_gfn, raw_evtchn] = args[..] else {
            return Err(XsError::Einval);
        };
        let domid = parse_domid(raw_domid)?;
        if u32::from(domid) >= DOMID_FIRST_RESERVED {
            return Err(XsError::Einval);
        }
        let gfn = parse_decimal(raw_gfn).ok_or(XsError::Einval)?;
        let evtchn = parse_decimal(raw_evtchn)
            .and_then(|value| u32::try_from(value).ok())
            .ok_or(XsError::Einval)?;
        let first_time = self
            .introduced
            .insert(domid, Some(RingInfo { gfn, evtchn }))
            .is_none();
        after.push(Outgoing::Introduce { domid, gfn, evtchn });
        if first_time {
            self.fire_special(INTRODUCE_DOMAIN, after);
        }
        Ok(OK.to_vec())
    }

    fn fire_special(&self, name: &'static str, out: &mut Vec<Outgoing>) {
        let Some((path, perms)) = self.specials.iter().find(|(path, _)| *path == name) else {
            return;
        };
        self.fire(
            &[Change::Special {
                path,
                perms: perms.clone(),
            }],
            out,
        );
    }

    /// Creates a domain's home `/local/domain/<domid>` with its `name` and `domid` nodes,
    /// owned by the domain and unreadable to other unprivileged domains (`n<domid>`),
    /// records the domain as introduced (without ring details) and fires
    /// `@introduceDomain`. For the builder/toolstack running in-process; a domain already
    /// introduced is `EEXIST`.
    pub fn introduce_domain(&mut self, domid: DomId, name: &str) -> Result<Vec<Outgoing>, XsError> {
        if u32::from(domid) >= DOMID_FIRST_RESERVED {
            return Err(XsError::Einval);
        }
        if self.is_introduced(domid) {
            return Err(XsError::Eexist);
        }
        let caller = Caller {
            domid: 0,
            privileged: true,
            quotas: None,
        };
        let home = path::domain_path(domid);
        let mut changes = Vec::new();
        let mut domid_text = Vec::new();
        push_decimal(&mut domid_text, u64::from(domid));
        ops::mkdir(&mut self.tree, &caller, &home, &mut changes)?;
        let owned = Perms::owned_by(domid, Grant::None);
        ops::set_perms(&mut self.tree, &caller, &home, owned, &mut changes)?;
        let name_path = format!("{home}/name");
        ops::write(
            &mut self.tree,
            &caller,
            &name_path,
            name.as_bytes(),
            &mut changes,
        )?;
        let domid_path = format!("{home}/domid");
        ops::write(
            &mut self.tree,
            &caller,
            &domid_path,
            &domid_text,
            &mut changes,
        )?;
        self.introduced.insert(domid, None);
        let mut out = Vec::new();
        self.fire(&changes, &mut out);
        self.fire_special(INTRODUCE_DOMAIN, &mut out);
        Ok(out)
    }

    /// Forgets a domain: marks it not introduced, drops its unprivileged connections with
    /// their watches and transactions (returning [`Outgoing::Close`] for each) and fires
    /// `@releaseDomain`. Its nodes stay. For the control service when a domain dies; `RELEASE` does the same.
    pub fn release_domain(&mut self, domid: DomId) -> Vec<Outgoing> {
        self.introduced.remove(&domid);
        let dropped: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, connection)| connection.domid == domid && !connection.privileged)
            .map(|(&conn, _)| conn)
            .collect();
        let mut out = Vec::new();
        for conn in dropped {
            self.remove_connection(conn);
            out.push(Outgoing::Close { conn });
        }
        self.fire_special(RELEASE_DOMAIN, &mut out);
        out
    }

    /// Checks the store's invariants: the tree's (every node's parent exists and lists it,
    /// owner counts match the nodes) and that the per-domain watch and transaction counts
    /// match the connections. Linear cost; for tests and fuzzing.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.tree.check_invariants()?;
        let mut accounts: BTreeMap<DomId, Account> = BTreeMap::new();
        for (conn, connection) in &self.conns {
            if connection.transactions.contains_key(&0) {
                return Err(format!("{conn} has a transaction with id 0"));
            }
            let account = accounts.entry(connection.domid).or_default();
            account.watches += connection.watches.len();
            account.transactions += connection.transactions.len();
        }
        accounts.retain(|_, account| *account != Account::default());
        if accounts != self.accounts {
            return Err(format!(
                "accounts {:?}, connections say {accounts:?}",
                self.accounts
            ));
        }
        Ok(())
    }

    /// Number of watches and open transactions a domain has (for tests and monitoring).
    pub fn usage(&self, domid: DomId) -> (usize, usize) {
        let account = self.account(domid);
        (account.watches, account.transactions)
    }

    /// Reads a node's value as a privileged caller would (for the in-process toolstack and
    /// tests).
    pub fn read(&self, path: &str) -> Option<&[u8]> {
        self.tree.get(path).map(|node| node.value.as_slice())
    }
}

fn error_message(header: &Header, error: XsError) -> Vec<u8> {
    let mut payload = error.name().to_string().into_bytes();
    payload.push(0);
    encode_message(
        MessageType::Error as u32,
        header.req_id,
        header.tx_id,
        &payload,
    )
}

/// The single NUL-terminated argument of a request.
fn one_arg(payload: &[u8]) -> Result<&[u8], XsError> {
    match split_strings(payload).as_deref() {
        Some([arg]) => Ok(arg),
        _ => Err(XsError::Einval),
    }
}

fn parse_domid(raw: &[u8]) -> Result<DomId, XsError> {
    parse_decimal(raw)
        .and_then(|value| DomId::try_from(value).ok())
        .ok_or(XsError::Einval)
}
