//! The node operations, written once over [`View`] so they behave the same on the live
//! tree and inside a transaction.
//!
//! Permission rules (Xen's): reading a node, listing it or reading its permissions needs
//! `r` on it; changing its value or removing it needs `w` on it; creating it needs `w` on
//! the nearest existing ancestor (missing parents are created too); changing its
//! permissions needs ownership. When the node does not exist the answer is `ENOENT` only if
//! the nearest existing ancestor would allow the operation, `EACCES` otherwise, so that a
//! domain cannot probe for nodes it may not see. A new node gets its parent's access list,
//! and a node created by an unprivileged domain is owned by that domain (one created by a
//! privileged connection keeps the parent's owner).

use alloc::vec::Vec;

use crate::path::{self, DomId};
use crate::perms::{Access, Perms};
use crate::quota::Quotas;
use crate::tree::View;
use crate::watch::Change;
use crate::wire::{push_decimal, XsError, PAYLOAD_MAX};

/// Who asks, and the limits that apply to them (`None` for a privileged connection).
pub(crate) struct Caller<'q> {
    pub(crate) domid: DomId,
    pub(crate) privileged: bool,
    pub(crate) quotas: Option<&'q Quotas>,
}

/// The kind of access an operation needs.
#[derive(Clone, Copy)]
enum Need {
    Read,
    Write,
    Owner,
}

impl Caller<'_> {
    fn access(&self, perms: &Perms) -> Access {
        perms.access_for(self.domid, self.privileged)
    }

    fn allowed(&self, perms: &Perms, need: Need) -> bool {
        let access = self.access(perms);
        match need {
            Need::Read => access.read,
            Need::Write => access.write,
            Need::Owner => access.owner,
        }
    }
}

/// The error for a missing node: `ENOENT` if the nearest existing ancestor allows `need`
/// (for `Owner`: write or ownership), `EACCES` if it does not.
fn missing_error(
    view: &mut dyn View,
    caller: &Caller<'_>,
    path: &str,
    need: Need,
) -> Result<XsError, XsError> {
    let mut current = path;
    while let Some(parent) = path::parent(current) {
        if let Some(node) = view.node(parent)? {
            let access = caller.access(&node.perms);
            let allowed = match need {
                Need::Read => access.read,
                Need::Write => access.write,
                Need::Owner => access.write || access.owner,
            };
            return Ok(if allowed {
                XsError::Enoent
            } else {
                XsError::Eacces
            });
        }
        current = parent;
    }
    Err(XsError::Eio)
}

/// Succeeds if the node exists and `need` is allowed on it.
fn check(view: &mut dyn View, caller: &Caller<'_>, path: &str, need: Need) -> Result<(), XsError> {
    let allowed = view
        .node(path)?
        .map(|node| caller.allowed(&node.perms, need));
    match allowed {
        Some(true) => Ok(()),
        Some(false) => Err(XsError::Eacces),
        None => Err(missing_error(view, caller, path, need)?),
    }
}

/// `READ`: the value.
pub(crate) fn read(
    view: &mut dyn View,
    caller: &Caller<'_>,
    path: &str,
) -> Result<Vec<u8>, XsError> {
    check(view, caller, path, Need::Read)?;
    Ok(view.node(path)?.ok_or(XsError::Eio)?.value.clone())
}

/// `GET_PERMS`: the access list, each entry NUL-terminated.
pub(crate) fn get_perms(
    view: &mut dyn View,
    caller: &Caller<'_>,
    path: &str,
) -> Result<Vec<u8>, XsError> {
    check(view, caller, path, Need::Read)?;
    let mut out = Vec::new();
    view.node(path)?.ok_or(XsError::Eio)?.perms.encode(&mut out);
    Ok(out)
}

/// The children of a readable node, each name NUL-terminated.
fn child_list(
    view: &mut dyn View,
    caller: &Caller<'_>,
    path: &str,
) -> Result<(Vec<u8>, u64), XsError> {
    check(view, caller, path, Need::Read)?;
    let node = view.node(path)?.ok_or(XsError::Eio)?;
    let mut out = Vec::new();
    for child in &node.children {
        out.extend_from_slice(child.as_bytes());
        out.push(0);
    }
    Ok((out, node.generation))
}

/// `DIRECTORY`: the child names, each NUL-terminated (empty for a leaf).
pub(crate) fn directory(
    view: &mut dyn View,
    caller: &Caller<'_>,
    path: &str,
) -> Result<Vec<u8>, XsError> {
    Ok(child_list(view, caller, path)?.0)
}

/// `DIRECTORY_PART`: the node's generation and NUL, then as many whole child names as fit
/// starting at byte `offset` of the full list; an extra NUL (an empty name) marks the end
/// of the list. A client restarts from offset 0 when the generation changes.
pub(crate) fn directory_part(
    view: &mut dyn View,
    caller: &Caller<'_>,
    path: &str,
    offset: usize,
) -> Result<Vec<u8>, XsError> {
    let (list, generation) = child_list(view, caller, path)?;
    let mut out = Vec::new();
    push_decimal(&mut out, generation);
    out.push(0);
    let rest = list.get(offset..).unwrap_or(&[]);
    let room = PAYLOAD_MAX - out.len() - 1;
    let mut taken = 0;
    for name in rest.split_inclusive(|&byte| byte == 0) {
        if taken + name.len() > room {
            break;
        }
        taken += name.len();
    }
    out.extend_from_slice(&rest[..taken]);
    if taken == rest.len() {
        out.push(0);
    }
    Ok(out)
}

/// Creates `path` and its missing parents, the last with `value`.
fn create(
    view: &mut dyn View,
    caller: &Caller<'_>,
    path: &str,
    value: Vec<u8>,
    changes: &mut Vec<Change>,
) -> Result<(), XsError> {
    let mut missing = alloc::vec![path];
    let mut current = path;
    let ancestor_perms = loop {
        let parent = path::parent(current).ok_or(XsError::Eio)?;
        if let Some(node) = view.node(parent)? {
            break node.perms.clone();
        }
        missing.push(parent);
        current = parent;
    };
    if !caller.allowed(&ancestor_perms, Need::Write) {
        return Err(XsError::Eacces);
    }
    if let Some(quotas) = caller.quotas {
        let owned = view.owned_nodes(caller.domid);
        if owned.saturating_add(missing.len()) > quotas.max_nodes_per_domain {
            return Err(XsError::Enospc);
        }
    }
    let perms = if caller.privileged {
        ancestor_perms
    } else {
        ancestor_perms.with_owner(caller.domid)
    };
    let mut value = Some(value);
    for (index, node_path) in missing.iter().enumerate().rev() {
        let node_value = if index == 0 {
            value.take().unwrap_or_default()
        } else {
            Vec::new()
        };
        view.create(node_path, node_value, perms.clone())?;
    }
    changes.push(Change::Written {
        path: path.into(),
        perms: alloc::vec![perms],
    });
    Ok(())
}

/// `WRITE`: sets the value, creating the node and missing parents.
pub(crate) fn write(
    view: &mut dyn View,
    caller: &Caller<'_>,
    path: &str,
    value: &[u8],
    changes: &mut Vec<Change>,
) -> Result<(), XsError> {
    if caller
        .quotas
        .is_some_and(|quotas| value.len() > quotas.max_value_bytes)
    {
        return Err(XsError::Enospc);
    }
    let existing = view.node(path)?.map(|node| node.perms.clone());
    match existing {
        Some(perms) => {
            if !caller.allowed(&perms, Need::Write) {
                return Err(XsError::Eacces);
            }
            view.set_value(path, value.to_vec())?;
            changes.push(Change::Written {
                path: path.into(),
                perms: alloc::vec![perms],
            });
            Ok(())
        }
        None => create(view, caller, path, value.to_vec(), changes),
    }
}

/// `MKDIR`: creates the node with an empty value; nothing happens if it exists.
pub(crate) fn mkdir(
    view: &mut dyn View,
    caller: &Caller<'_>,
    path: &str,
    changes: &mut Vec<Change>,
) -> Result<(), XsError> {
    let allowed = view
        .node(path)?
        .map(|node| caller.allowed(&node.perms, Need::Write));
    match allowed {
        Some(true) => Ok(()),
        Some(false) => Err(XsError::Eacces),
        None => create(view, caller, path, Vec::new(), changes),
    }
}

/// `RM`: removes the node and its subtree. Removing an absent node succeeds if its parent
/// exists.
pub(crate) fn rm(
    view: &mut dyn View,
    caller: &Caller<'_>,
    path: &str,
    changes: &mut Vec<Change>,
) -> Result<(), XsError> {
    let parent = path::parent(path).ok_or(XsError::Einval)?;
    let allowed = view
        .node(path)?
        .map(|node| caller.allowed(&node.perms, Need::Write));
    match allowed {
        Some(true) => {
            let removed = view.remove_subtree(path)?;
            changes.push(Change::Removed {
                path: path.into(),
                removed,
            });
            Ok(())
        }
        Some(false) => Err(XsError::Eacces),
        None => match missing_error(view, caller, path, Need::Write)? {
            XsError::Enoent if view.node(parent)?.is_some() => Ok(()),
            error => Err(error),
        },
    }
}

/// `SET_PERMS`: replaces the access list. Needs ownership; only a privileged connection
/// may name a different owner (`EPERM`).
pub(crate) fn set_perms(
    view: &mut dyn View,
    caller: &Caller<'_>,
    path: &str,
    perms: Perms,
    changes: &mut Vec<Change>,
) -> Result<(), XsError> {
    check(view, caller, path, Need::Owner)?;
    let old = view.node(path)?.ok_or(XsError::Eio)?.perms.clone();
    if !caller.privileged && perms.owner() != old.owner() {
        return Err(XsError::Eperm);
    }
    if caller
        .quotas
        .is_some_and(|quotas| perms.entries().len() > quotas.max_perms_per_node)
    {
        return Err(XsError::Enospc);
    }
    view.set_perms(path, perms.clone())?;
    changes.push(Change::Written {
        path: path.into(),
        perms: alloc::vec![old, perms],
    });
    Ok(())
}
