//! Watches and the changes that fire them.
//!
//! A watch on path `W` fires for every change (create, modify, permission change, remove)
//! of `W` or of a node below it, reporting the changed path; removing an ancestor of `W`
//! reports `W` itself. A watch on a special path (`@introduceDomain`, `@releaseDomain`)
//! fires only for that event. A watcher gets an event only if it may read the node: every
//! access list recorded with the change must allow it (for a permission change, the old
//! and the new one; for a removal, the list the node had). A watch registered with a
//! relative path reports paths relative to the watcher's home. Each watch gets at most one
//! event per change. (Xen may send a few more; spurious events are allowed by the protocol,
//! missing ones are not.)

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::path::{self, DomId};
use crate::perms::Perms;
use crate::wire::{encode_message, MessageType, ABS_PATH_MAX, PAYLOAD_MAX};

/// Longest token a `WATCH` may carry, so that an event (longest path, token, two NULs)
/// always fits in one message.
pub const TOKEN_MAX: usize = PAYLOAD_MAX - ABS_PATH_MAX - 2;

/// A change that may fire watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A node was created or its value or permissions changed. A watcher must be able to
    /// read under every list in `perms`.
    Written { path: String, perms: Vec<Perms> },
    /// A subtree was removed; `removed` holds each removed node's access list.
    Removed {
        path: String,
        removed: BTreeMap<String, Perms>,
    },
    /// A special event such as `@introduceDomain`; `perms` is the special node's list.
    Special { path: &'static str, perms: Perms },
}

/// A registered watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Watch {
    /// Absolute path, or a special path starting with `@`.
    pub(crate) path: String,
    /// The client's token, echoed in each event.
    pub(crate) token: Vec<u8>,
    /// Whether the client registered it relative to its home.
    pub(crate) relative: bool,
}

impl Watch {
    /// If `change` fires this watch: the absolute path to report and the access lists that
    /// must allow the watcher to read.
    pub(crate) fn matches<'a>(&'a self, change: &'a Change) -> Option<(&'a str, &'a [Perms])> {
        match change {
            Change::Written { path, perms } => {
                path::is_at_or_below(path, &self.path).then_some((path.as_str(), perms.as_slice()))
            }
            Change::Removed { path, removed } => {
                if path::is_at_or_below(path, &self.path) {
                    let perms = removed.get(path)?;
                    Some((path.as_str(), core::slice::from_ref(perms)))
                } else if path::is_at_or_below(&self.path, path) {
                    // An ancestor went away: report the watched path, judged by the list
                    // the watched node had, or by the removed root's if it did not exist.
                    let perms = removed.get(&self.path).or_else(|| removed.get(path))?;
                    Some((self.path.as_str(), core::slice::from_ref(perms)))
                } else {
                    None
                }
            }
            Change::Special { path, perms } => {
                (self.path == *path).then_some((*path, core::slice::from_ref(perms)))
            }
        }
    }
}

/// Builds the `WATCH_EVENT` message for `watcher_domid`'s watch.
pub(crate) fn encode_event(watch: &Watch, watcher_domid: DomId, absolute: &str) -> Vec<u8> {
    let reported = if watch.relative {
        path::relative_to_home(absolute, watcher_domid)
    } else {
        absolute
    };
    let mut payload = Vec::with_capacity(reported.len() + watch.token.len() + 2);
    payload.extend_from_slice(reported.as_bytes());
    payload.push(0);
    payload.extend_from_slice(&watch.token);
    payload.push(0);
    encode_message(MessageType::WatchEvent as u32, 0, 0, &payload)
}
