//! Node permissions: an access list of `<letter><domid>` entries.
//!
//! The letter is `n` (none), `r` (read), `w` (write) or `b` (both). The first entry names
//! the node's **owner**, who always has full access, and its letter is the access of every
//! domain the list does not name. Later entries grant their letter to the domain they name
//! (the first match counts). A privileged connection has full access to every node.
//! Only the owner (or a privileged connection) may change a node's list, and only a
//! privileged connection may change the owner.

use alloc::vec::Vec;

use crate::path::DomId;
use crate::wire::{push_decimal, XsError};

/// What a domain may do with a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// May read the value, list children, read the permissions, see watch events.
    pub read: bool,
    /// May change the value, create children, remove the node.
    pub write: bool,
    /// Owns the node (or is privileged): may change its permissions.
    pub owner: bool,
}

impl Access {
    const FULL: Self = Self {
        read: true,
        write: true,
        owner: true,
    };
}

/// The letter of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// `n`
    None,
    /// `r`
    Read,
    /// `w`
    Write,
    /// `b`
    Both,
}

impl Grant {
    fn letter(self) -> u8 {
        match self {
            Self::None => b'n',
            Self::Read => b'r',
            Self::Write => b'w',
            Self::Both => b'b',
        }
    }

    fn access(self) -> Access {
        Access {
            read: matches!(self, Self::Read | Self::Both),
            write: matches!(self, Self::Write | Self::Both),
            owner: false,
        }
    }
}

/// One `<letter><domid>` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The domain the entry names.
    pub domid: DomId,
    /// What it grants.
    pub grant: Grant,
}

/// A node's access list; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Perms {
    entries: Vec<Entry>,
}

impl Perms {
    /// A list with just the owner entry.
    pub fn owned_by(owner: DomId, default: Grant) -> Self {
        Self {
            entries: alloc::vec![Entry {
                domid: owner,
                grant: default
            }],
        }
    }

    /// A list from entries; `None` if `entries` is empty.
    pub fn from_entries(entries: Vec<Entry>) -> Option<Self> {
        if entries.is_empty() {
            None
        } else {
            Some(Self { entries })
        }
    }

    /// The entries, owner first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The owning domain.
    pub fn owner(&self) -> DomId {
        self.entries[0].domid
    }

    /// The same list with a different owner (the owner's letter stays the default).
    pub fn with_owner(&self, owner: DomId) -> Self {
        let mut copy = self.clone();
        copy.entries[0].domid = owner;
        copy
    }

    /// What a connection of `domid` may do with a node carrying this list.
    pub fn access_for(&self, domid: DomId, privileged: bool) -> Access {
        if privileged || self.owner() == domid {
            return Access::FULL;
        }
        let entry = self.entries[1..].iter().find(|entry| entry.domid == domid);
        entry.unwrap_or(&self.entries[0]).grant.access()
    }

    /// Parses the strings of a `SET_PERMS` request.
    pub fn parse(strings: &[&[u8]]) -> Result<Self, XsError> {
        let mut entries = Vec::with_capacity(strings.len());
        for text in strings {
            let (&letter, digits) = text.split_first().ok_or(XsError::Einval)?;
            let grant = match letter {
                b'n' => Grant::None,
                b'r' => Grant::Read,
                b'w' => Grant::Write,
                b'b' => Grant::Both,
                _ => return Err(XsError::Einval),
            };
            let domid = crate::wire::parse_decimal(digits)
                .and_then(|value| DomId::try_from(value).ok())
                .ok_or(XsError::Einval)?;
            entries.push(Entry { domid, grant });
        }
        Self::from_entries(entries).ok_or(XsError::Einval)
    }

    /// The `GET_PERMS` reply form: each entry followed by a NUL.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for entry in &self.entries {
            out.push(entry.grant.letter());
            push_decimal(out, u64::from(entry.domid));
            out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(text: &str) -> Perms {
        let strings: Vec<&[u8]> = text.split(' ').map(str::as_bytes).collect();
        Perms::parse(&strings).unwrap()
    }

    #[test]
    fn owner_and_default() {
        let list = perms("n5 r7 w8 b9");
        assert_eq!(list.owner(), 5);
        assert_eq!(list.access_for(5, false), Access::FULL);
        assert_eq!(list.access_for(0, true), Access::FULL);
        assert_eq!(
            list.access_for(7, false),
            Access {
                read: true,
                write: false,
                owner: false
            }
        );
        assert_eq!(
            list.access_for(8, false),
            Access {
                read: false,
                write: true,
                owner: false
            }
        );
        assert_eq!(
            list.access_for(9, false),
            Access {
                read: true,
                write: true,
                owner: false
            }
        );
        assert_eq!(
            list.access_for(3, false),
            Access {
                read: false,
                write: false,
                owner: false
            }
        );
        let open = perms("r5");
        assert!(open.access_for(3, false).read);
        assert!(!open.access_for(3, false).write);
    }

    #[test]
    fn first_matching_entry_wins() {
        let list = perms("n1 r2 b2");
        assert!(!list.access_for(2, false).write);
    }

    #[test]
    fn parse_and_encode() {
        let list = perms("b0 r65535");
        let mut out = Vec::new();
        list.encode(&mut out);
        assert_eq!(out, b"b0\0r65535\0");
        for bad in [
            &[&b"x1"[..]][..],
            &[b"r"],
            &[b"r65536"],
            &[b"r-1"],
            &[b""],
            &[],
        ] {
            assert_eq!(Perms::parse(bad), Err(XsError::Einval), "{bad:?}");
        }
    }

    #[test]
    fn change_owner_keeps_default() {
        let list = perms("r0 w4").with_owner(9);
        assert_eq!(list.owner(), 9);
        assert!(list.access_for(1, false).read);
        assert!(list.access_for(4, false).write);
    }
}
