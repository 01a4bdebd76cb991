//! Transactions: optimistic, with conflict detection by generation number.
//!
//! A transaction never copies the tree. It remembers the generation of every node it looks
//! at (or that the node was absent) the first time it looks, and keeps its own copy of each
//! node it changes. Reads see its own changes first, then the live tree. At commit, if any
//! node it looked at has a different generation now (or appeared, or vanished), the commit
//! fails with `EAGAIN` and the client retries the whole transaction; otherwise its copies
//! replace the live nodes in one step. Because every node it read is checked, what it read
//! is exactly what it would have read at the moment of the commit (serializable), even
//! though it did not read a snapshot. Watch events it caused fire only after the commit.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::path::{self, DomId};
use crate::perms::Perms;
use crate::tree::{Node, Tree, View};
use crate::watch::Change;
use crate::wire::XsError;

/// One open transaction of a connection.
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    /// First-seen generation of every node looked at; `None` if it was absent.
    seen: BTreeMap<String, Option<u64>>,
    /// This transaction's version of each node it changed; `None` if it removed it.
    changed: BTreeMap<String, Option<Node>>,
    /// Change of each domain's owned-node count the commit will bring.
    owned_delta: BTreeMap<DomId, isize>,
    /// Watch events to fire after a successful commit.
    pub(crate) changes: Vec<Change>,
    /// Limit on `seen.len()`, for unprivileged connections.
    max_nodes: Option<usize>,
    /// Number of mutator calls so far (to notice an operation that failed half-way).
    pub(crate) writes: u64,
    /// Set when an operation failed after changing this transaction's copy: the commit
    /// then fails with this error instead of applying half an operation.
    pub(crate) poisoned: Option<XsError>,
}

impl Transaction {
    pub(crate) fn new(max_nodes: Option<usize>) -> Self {
        Self {
            max_nodes,
            ..Self::default()
        }
    }

    fn see(&mut self, live: &Tree, path: &str) -> Result<(), XsError> {
        if self.seen.contains_key(path) {
            return Ok(());
        }
        if self.max_nodes.is_some_and(|max| self.seen.len() >= max) {
            return Err(XsError::Enospc);
        }
        self.seen
            .insert(path.to_string(), live.get(path).map(|node| node.generation));
        Ok(())
    }

    fn shift_owned(&mut self, domid: DomId, delta: isize) {
        let entry = self.owned_delta.entry(domid).or_insert(0);
        *entry += delta;
    }

    /// Applies the transaction to `live` unless something it looked at changed. `quota`
    /// is `(domid, max_nodes)` for an unprivileged owner of the transaction.
    pub(crate) fn commit(
        self,
        live: &mut Tree,
        quota: Option<(DomId, usize)>,
    ) -> Result<Vec<Change>, XsError> {
        if let Some(error) = self.poisoned {
            return Err(error);
        }
        for (path, generation) in &self.seen {
            if live.get(path).map(|node| node.generation) != *generation {
                return Err(XsError::Eagain);
            }
        }
        if let Some((domid, max_nodes)) = quota {
            let delta = self.owned_delta.get(&domid).copied().unwrap_or(0);
            if delta > 0 && live.owned_nodes(domid).saturating_add_signed(delta) > max_nodes {
                return Err(XsError::Enospc);
            }
        }
        for (path, node) in self.changed {
            live.replace(&path, node);
        }
        Ok(self.changes)
    }
}

/// The tree as one transaction sees it.
pub(crate) struct TxView<'a> {
    pub(crate) live: &'a Tree,
    pub(crate) tx: &'a mut Transaction,
}

impl TxView<'_> {
    /// This transaction's own copy of the node at `path` (absent: `None`), made on first use.
    fn touch(&mut self, path: &str) -> Result<&mut Option<Node>, XsError> {
        if !self.tx.changed.contains_key(path) {
            self.tx.see(self.live, path)?;
            self.tx
                .changed
                .insert(path.to_string(), self.live.get(path).cloned());
        }
        self.tx.changed.get_mut(path).ok_or(XsError::Eio)
    }
}

impl View for TxView<'_> {
    fn node(&mut self, path: &str) -> Result<Option<&Node>, XsError> {
        if self.tx.changed.contains_key(path) {
            return Ok(self.tx.changed.get(path).and_then(Option::as_ref));
        }
        self.tx.see(self.live, path)?;
        Ok(self.live.get(path))
    }

    fn owned_nodes(&self, domid: DomId) -> usize {
        let delta = self.tx.owned_delta.get(&domid).copied().unwrap_or(0);
        self.live.owned_nodes(domid).saturating_add_signed(delta)
    }

    fn set_value(&mut self, path: &str, value: Vec<u8>) -> Result<(), XsError> {
        self.tx.writes += 1;
        let node = self.touch(path)?.as_mut().ok_or(XsError::Eio)?;
        node.value = value;
        Ok(())
    }

    fn set_perms(&mut self, path: &str, perms: Perms) -> Result<(), XsError> {
        self.tx.writes += 1;
        let new_owner = perms.owner();
        let node = self.touch(path)?.as_mut().ok_or(XsError::Eio)?;
        let old_owner = node.perms.owner();
        node.perms = perms;
        self.tx.shift_owned(old_owner, -1);
        self.tx.shift_owned(new_owner, 1);
        Ok(())
    }

    fn create(&mut self, path: &str, value: Vec<u8>, perms: Perms) -> Result<(), XsError> {
        self.tx.writes += 1;
        let parent_path = path::parent(path).ok_or(XsError::Eio)?;
        if self.touch(path)?.is_some() {
            return Err(XsError::Eio);
        }
        let parent = self.touch(parent_path)?.as_mut().ok_or(XsError::Eio)?;
        parent.children.insert(path::basename(path).to_string());
        let owner = perms.owner();
        let node = Node {
            value,
            perms,
            children: Default::default(),
            generation: 0,
        };
        *self.touch(path)? = Some(node);
        self.tx.shift_owned(owner, 1);
        Ok(())
    }

    fn remove_subtree(&mut self, path: &str) -> Result<BTreeMap<String, Perms>, XsError> {
        self.tx.writes += 1;
        let parent_path = path::parent(path).ok_or(XsError::Eio)?;
        let mut removed = BTreeMap::new();
        let mut pending = alloc::vec![path.to_string()];
        while let Some(current) = pending.pop() {
            let Some(node) = self.touch(&current)?.take() else {
                continue;
            };
            self.tx.shift_owned(node.perms.owner(), -1);
            pending.extend(
                node.children
                    .iter()
                    .map(|child| path::join(&current, child)),
            );
            removed.insert(current, node.perms);
        }
        let parent = self.touch(parent_path)?.as_mut().ok_or(XsError::Eio)?;
        parent.children.remove(path::basename(path));
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perms::Grant;

    fn tree() -> Tree {
        let mut tree = Tree::new(Perms::owned_by(0, Grant::None));
        tree.create("/a", b"1".to_vec(), Perms::owned_by(0, Grant::None))
            .unwrap();
        tree
    }

    #[test]
    fn sees_own_changes_and_commits() {
        let mut live = tree();
        let mut tx = Transaction::new(None);
        let mut view = TxView {
            live: &live,
            tx: &mut tx,
        };
        view.create("/a/b", b"2".to_vec(), Perms::owned_by(7, Grant::None))
            .unwrap();
        view.set_value("/a", b"x".to_vec()).unwrap();
        assert_eq!(view.node("/a/b").unwrap().unwrap().value, b"2");
        assert_eq!(view.owned_nodes(7), 1);
        assert!(live.get("/a/b").is_none());
        tx.commit(&mut live, None).unwrap();
        assert_eq!(live.get("/a").unwrap().value, b"x");
        assert_eq!(live.owned_nodes(7), 1);
        live.check_invariants().unwrap();
    }

    #[test]
    fn conflicts_on_anything_seen() {
        let mut live = tree();
        let mut tx = Transaction::new(None);
        let mut view = TxView {
            live: &live,
            tx: &mut tx,
        };
        assert!(view.node("/a/missing").unwrap().is_none());
        live.create("/a/missing", Vec::new(), Perms::owned_by(0, Grant::None))
            .unwrap();
        assert_eq!(tx.commit(&mut live, None).unwrap_err(), XsError::Eagain);
    }

    #[test]
    fn removal_inside_transaction() {
        let mut live = tree();
        live.create("/a/b", Vec::new(), Perms::owned_by(2, Grant::None))
            .unwrap();
        let mut tx = Transaction::new(None);
        let mut view = TxView {
            live: &live,
            tx: &mut tx,
        };
        let removed = view.remove_subtree("/a").unwrap();
        assert_eq!(removed.len(), 2);
        assert!(view.node("/a/b").unwrap().is_none());
        assert_eq!(view.owned_nodes(2), 0);
        tx.commit(&mut live, None).unwrap();
        assert_eq!(live.len(), 1);
        live.check_invariants().unwrap();
    }

    #[test]
    fn node_limit_and_commit_quota() {
        let mut live = tree();
        let mut tx = Transaction::new(Some(2));
        let mut view = TxView {
            live: &live,
            tx: &mut tx,
        };
        view.node("/").unwrap();
        view.node("/a").unwrap();
        assert_eq!(view.node("/b").unwrap_err(), XsError::Enospc);
        let mut tx = Transaction::new(None);
        let mut view = TxView {
            live: &live,
            tx: &mut tx,
        };
        view.create("/a/c", Vec::new(), Perms::owned_by(9, Grant::None))
            .unwrap();
        assert_eq!(
            tx.commit(&mut live, Some((9, 0))).unwrap_err(),
            XsError::Enospc
        );
    }
}
