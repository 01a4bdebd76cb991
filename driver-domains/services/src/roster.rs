//! Which domains to serve: the microvisor's domain list (`MVOP_LIST_DOMAINS`) compared with
//! the domains served now.
//!
//! A service domain serves every listed domain that is not itself (`DOMAIN_FLAG_SELF`), not
//! dying (`DOMAIN_FLAG_DYING`) and has a port for this service (non-zero). A served domain
//! that is no longer listed, or is listed as dying, is dropped. Drops come before connects
//! in a [`Plan`], so a domain restarted under the same name (with a new domid) takes over
//! its name only after the old instance let go of it.

use alloc::string::String;
use alloc::vec::Vec;

use microvisor_abi::microvisor_op::{
    DomainEntry, DOMAIN_FLAG_CONTROL, DOMAIN_FLAG_DYING, DOMAIN_FLAG_SELF,
};

/// A domain to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its domain id.
    pub domid: u16,
    /// Its name (from the manifest; see [`entry_name`]).
    pub name: String,
    /// Its unbound port for this service, to bind with `bind_interdomain`.
    pub port: u32,
    /// It is the system's control domain (`DOMAIN_FLAG_CONTROL`).
    pub control: bool,
}

/// What one sync does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Served domains to drop, in the order they were served.
    pub drop: Vec<u16>,
    /// Domains to connect to, in list order.
    pub connect: Vec<Candidate>,
}

/// The name of a listed domain: the bytes before the first NUL, with anything other than
/// printable ASCII shown as `?` (the microvisor only lists manifest names, which are plain
/// ASCII, but nothing here relies on it).
pub fn entry_name(entry: &DomainEntry) -> String {
    let length = entry
        .name
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(entry.name.len());
    entry.name[..length]
        .iter()
        .map(|&byte| {
            if byte.is_ascii_graphic() {
                char::from(byte)
            } else {
                '?'
            }
        })
        .collect()
}

/// Whether a listed domain should be served, given its port for this service.
fn wanted(entry: &DomainEntry, port: u32) -> bool {
    entry.flags & (DOMAIN_FLAG_SELF | DOMAIN_FLAG_DYING) == 0 && port != 0
}

/// Compares the list with the served domains. `port_of` picks the service's port from an
/// entry (`store_port` or `console_port`). A domain listed twice counts once.
pub fn plan(served: &[u16], listed: &[DomainEntry], port_of: impl Fn(&DomainEntry) -> u32) -> Plan {
    let still_wanted = |domid: u16| {
        listed
            .iter()
            .any(|entry| entry.domid == domid && wanted(entry, port_of(entry)))
    };
    let drop = served
        .iter()
        .copied()
        .filter(|&domid| !still_wanted(domid))
        .collect();
    let mut connect: Vec<Candidate> = Vec::new();
    for entry in listed {
        let port = port_of(entry);
        if !wanted(entry, port)
            || served.contains(&entry.domid)
            || connect
                .iter()
                .any(|candidate| candidate.domid == entry.domid)
        {
            continue;
        }
        connect.push(Candidate {
            domid: entry.domid,
            name: entry_name(entry),
            port,
            control: entry.flags & DOMAIN_FLAG_CONTROL != 0,
        });
    }
    Plan { drop, connect }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(domid: u16, flags: u16, store_port: u32, name: &str) -> DomainEntry {
        let mut entry = DomainEntry {
            domid,
            flags,
            store_port,
            ..DomainEntry::default()
        };
        entry.name[..name.len()].copy_from_slice(name.as_bytes());
        entry
    }

    fn store_port(entry: &DomainEntry) -> u32 {
        entry.store_port
    }

    #[test]
    fn connects_new_domains_but_not_itself_the_dying_or_portless() {
        let listed = [
            entry(1, DOMAIN_FLAG_SELF, 0, "xenstore"),
            entry(2, 0, 5, "console"),
            entry(3, DOMAIN_FLAG_DYING, 6, "gone"),
            entry(4, 0, 0, "noport"),
            entry(5, 0, 7, "guest"),
        ];
        let plan = plan(&[], &listed, store_port);
        assert!(plan.drop.is_empty());
        assert_eq!(
            plan.connect,
            [
                Candidate {
                    domid: 2,
                    name: "console".into(),
                    port: 5,
                    control: false
                },
                Candidate {
                    domid: 5,
                    name: "guest".into(),
                    port: 7,
                    control: false
                },
            ]
        );
    }

    #[test]
    fn the_control_domain_is_marked() {
        let listed = [entry(4, DOMAIN_FLAG_CONTROL, 6, "control")];
        let plan = plan(&[], &listed, store_port);
        assert!(plan.connect[0].control);
    }

    #[test]
    fn drops_the_vanished_and_the_dying_and_keeps_the_rest() {
        let listed = [
            entry(2, 0, 5, "console"),
            entry(3, DOMAIN_FLAG_DYING, 6, "guest"),
        ];
        let plan = plan(&[2, 3, 4], &listed, store_port);
        assert_eq!(plan.drop, [3, 4]);
        assert!(plan.connect.is_empty());
    }

    #[test]
    fn a_restarted_domain_is_dropped_and_its_successor_connected() {
        let listed = [
            entry(3, DOMAIN_FLAG_DYING, 6, "guest"),
            entry(7, 0, 9, "guest"),
        ];
        let plan = plan(&[3], &listed, store_port);
        assert_eq!(plan.drop, [3]);
        assert_eq!(
            plan.connect,
            [Candidate {
                domid: 7,
                name: "guest".into(),
                port: 9,
                control: false
            }]
        );
    }

    #[test]
    fn the_port_picker_decides_who_is_served() {
        let mut with_console = entry(2, 0, 0, "guest");
        with_console.console_port = 8;
        let plan = plan(&[], &[with_console], |entry| entry.console_port);
        assert_eq!(
            plan.connect,
            [Candidate {
                domid: 2,
                name: "guest".into(),
                port: 8,
                control: false
            }]
        );
        assert!(super::plan(&[], &[with_console], store_port)
            .connect
            .is_empty());
    }

    #[test]
    fn duplicates_count_once() {
        let listed = [entry(2, 0, 5, "a"), entry(2, 0, 5, "a")];
        assert_eq!(plan(&[], &listed, store_port).connect.len(), 1);
    }

    #[test]
    fn names_stop_at_nul_and_hide_odd_bytes() {
        let mut odd = entry(2, 0, 5, "ab");
        odd.name[2] = 0x07;
        odd.name[3] = b'c';
        assert_eq!(entry_name(&odd), "ab?c");
        let full = DomainEntry {
            name: [b'x'; 32],
            ..DomainEntry::default()
        };
        assert_eq!(entry_name(&full).len(), 32);
    }
}
