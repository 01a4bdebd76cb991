//! The node tree, and the [`View`] interface the operations use to read and change it
//! either directly or through a transaction (see `transaction.rs`).
//!
//! Nodes live in one ordered map keyed by absolute path; each node also keeps the names of
//! its children. Every change gives the changed node a fresh **generation** number from a
//! store-wide counter, and adding or removing a child counts as a change of the parent:
//! transactions detect conflicts by comparing generations, and `DIRECTORY_PART` reports
//! the generation so a client can tell that a listing changed between its pieces.
//! The tree also counts the nodes each domain owns, for the node quota.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::path::{self, DomId};
use crate::perms::Perms;
use crate::wire::XsError;

/// One node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The value (any bytes).
    pub value: Vec<u8>,
    /// The access list.
    pub perms: Perms,
    /// Names of the children.
    pub children: BTreeSet<String>,
    /// Generation of the last change to this node or its list of children.
    pub generation: u64,
}

impl Node {
    fn new(value: Vec<u8>, perms: Perms, generation: u64) -> Self {
        Self {
            value,
            perms,
            children: BTreeSet::new(),
            generation,
        }
    }
}

/// Reading and changing nodes, either directly ([`Tree`]) or inside a transaction.
///
/// Mutators expect the node (or, for [`View::create`], its parent) to exist in the view;
/// the operations check that first. They return `Err` rather than panic if it does not.
pub trait View {
    /// The node at `path`, if it exists. A transaction records what it saw.
    fn node(&mut self, path: &str) -> Result<Option<&Node>, XsError>;
    /// How many nodes `domid` owns, as this view sees them.
    fn owned_nodes(&self, domid: DomId) -> usize;
    /// Replaces the value of an existing node.
    fn set_value(&mut self, path: &str, value: Vec<u8>) -> Result<(), XsError>;
    /// Replaces the access list of an existing node.
    fn set_perms(&mut self, path: &str, perms: Perms) -> Result<(), XsError>;
    /// Creates a node under an existing parent and lists it there.
    fn create(&mut self, path: &str, value: Vec<u8>, perms: Perms) -> Result<(), XsError>;
    /// Removes a node and everything below it; returns the access list each removed node
    /// had, by path.
    fn remove_subtree(&mut self, path: &str) -> Result<BTreeMap<String, Perms>, XsError>;
}

/// The live tree.
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    owned: BTreeMap<DomId, usize>,
    last_generation: u64,
}

impl Tree {
    /// A tree holding only the root `/` with access list `root_perms`.
    pub fn new(root_perms: Perms) -> Self {
        let mut tree = Self {
            nodes: BTreeMap::new(),
            owned: BTreeMap::new(),
            last_generation: 0,
        };
        let generation = tree.next_generation();
        tree.count(root_perms.owner(), 1);
        tree.nodes.insert(
            "/".to_string(),
            Node::new(Vec::new(), root_perms, generation),
        );
        tree
    }

    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: the root always exists.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Nodes owned by each domain (domains owning none are absent).
    pub fn owned_counts(&self) -> &BTreeMap<DomId, usize> {
        &self.owned
    }

    /// All nodes in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    fn next_generation(&mut self) -> u64 {
        self.last_generation += 1;
        self.last_generation
    }

    fn count(&mut self, domid: DomId, delta: isize) {
        let entry = self.owned.entry(domid).or_insert(0);
        *entry = entry.saturating_add_signed(delta);
        if *entry == 0 {
            self.owned.remove(&domid);
        }
    }

    fn existing(&mut self, path: &str) -> Result<&mut Node, XsError> {
        self.nodes.get_mut(path).ok_or(XsError::Eio)
    }

    /// Stores `node` at `path` (or removes the node there, for `None`) as a transaction
    /// commit does: children lists come with the node, the generation is fresh, the owner
    /// counts follow.
    pub(crate) fn replace(&mut self, path: &str, node: Option<Node>) {
        if let Some(old) = self.nodes.remove(path) {
            self.count(old.perms.owner(), -1);
        }
        if let Some(mut node) = node {
            node.generation = self.next_generation();
            self.count(node.perms.owner(), 1);
            self.nodes.insert(path.to_string(), node);
        }
    }

    /// Checks the structural invariants; returns a description of the first violation.
    /// Cost is linear in the tree; meant for tests and fuzzing.
    pub fn check_invariants(&self) -> Result<(), String> {
        if !self.nodes.contains_key("/") {
            return Err("the root is missing".to_string());
        }
        let mut owned: BTreeMap<DomId, usize> = BTreeMap::new();
        for (node_path, node) in &self.nodes {
            *owned.entry(node.perms.owner()).or_insert(0) += 1;
            if node.generation > self.last_generation {
                return Err(format!("{node_path}: generation from the future"));
            }
            if let Some(parent_path) = path::parent(node_path) {
                let parent = self
                    .nodes
                    .get(parent_path)
                    .ok_or_else(|| format!("{node_path}: parent {parent_path} is missing"))?;
                if !parent.children.contains(path::basename(node_path)) {
                    return Err(format!("{node_path}: not listed in {parent_path}"));
                }
            }
            for child in &node.children {
                let child_path = path::join(node_path, child);
                if !self.nodes.contains_key(&child_path) {
                    return Err(format!("{node_path}: lists missing child {child}"));
                }
            }
        }
        if owned != self.owned {
            return Err(format!(
                "owner counts {:?}, nodes say {owned:?}",
                self.owned
            ));
        }
        Ok(())
    }
}

impl View for Tree {
    fn node(&mut self, path: &str) -> Result<Option<&Node>, XsError> {
        Ok(self.nodes.get(path))
    }

    fn owned_nodes(&self, domid: DomId) -> usize {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    fn set_value(&mut self, path: &str, value: Vec<u8>) -> Result<(), XsError> {
        let generation = self.next_generation();
        let node = self.existing(path)?;
        node.value = value;
        node.generation = generation;
        Ok(())
    }

    fn set_perms(&mut self, path: &str, perms: Perms) -> Result<(), XsError> {
        let generation = self.next_generation();
        let new_owner = perms.owner();
        let node = self.existing(path)?;
        let old_owner = node.perms.owner();
        node.perms = perms;
        node.generation = generation;
        self.count(old_owner, -1);
        self.count(new_owner, 1);
        Ok(())
    }

    fn create(&mut self, path: &str, value: Vec<u8>, perms: Perms) -> Result<(), XsError> {
        let parent_path = path::parent(path).ok_or(XsError::Eio)?;
        if self.nodes.contains_key(path) {
            return Err(XsError::Eio);
        }
        let generation = self.next_generation();
        let parent = self.existing(parent_path)?;
        parent.children.insert(path::basename(path).to_string());
        parent.generation = generation;
        self.count(perms.owner(), 1);
        self.nodes
            .insert(path.to_string(), Node::new(value, perms, generation));
        Ok(())
    }

    fn remove_subtree(&mut self, path: &str) -> Result<BTreeMap<String, Perms>, XsError> {
        let parent_path = path::parent(path).ok_or(XsError::Eio)?;
        let mut removed = BTreeMap::new();
        let mut pending = alloc::vec![path.to_string()];
        while let Some(current) = pending.pop() {
            let Some(node) = self.nodes.remove(&current) else {
                continue;
            };
            self.count(node.perms.owner(), -1);
            pending.extend(
                node.children
                    .iter()
                    .map(|child| path::join(&current, child)),
            );
            removed.insert(current, node.perms);
        }
        let generation = self.next_generation();
        let parent = self.existing(parent_path)?;
        parent.children.remove(path::basename(path));
        parent.generation = generation;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perms::Grant;

    #[test]
    fn create_change_remove_keep_invariants() {
        let mut tree = Tree::new(Perms::owned_by(0, Grant::None));
        let root_generation = tree.get("/").unwrap().generation;
        tree.create("/a", b"1".to_vec(), Perms::owned_by(3, Grant::None))
            .unwrap();
        tree.create("/a/b", b"2".to_vec(), Perms::owned_by(3, Grant::None))
            .unwrap();
        assert!(tree.get("/").unwrap().generation > root_generation);
        assert_eq!(tree.owned_nodes(3), 2);
        tree.set_perms("/a/b", Perms::owned_by(4, Grant::Read))
            .unwrap();
        assert_eq!(tree.owned_nodes(3), 1);
        assert_eq!(tree.owned_nodes(4), 1);
        tree.check_invariants().unwrap();
        let removed = tree.remove_subtree("/a").unwrap();
        assert_eq!(removed.keys().collect::<Vec<_>>(), ["/a", "/a/b"]);
        assert_eq!(tree.owned_nodes(3), 0);
        assert_eq!(tree.len(), 1);
        tree.check_invariants().unwrap();
    }

    #[test]
    fn mutators_report_missing_nodes() {
        let mut tree = Tree::new(Perms::owned_by(0, Grant::None));
        assert_eq!(tree.set_value("/x", Vec::new()), Err(XsError::Eio));
        assert_eq!(
            tree.create("/x/y", Vec::new(), Perms::owned_by(0, Grant::None)),
            Err(XsError::Eio)
        );
        assert_eq!(
            tree.create("/", Vec::new(), Perms::owned_by(0, Grant::None)),
            Err(XsError::Eio)
        );
        tree.check_invariants().unwrap();
    }
}
