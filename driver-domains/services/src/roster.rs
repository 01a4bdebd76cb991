//! Which domains to serve: the microvisor's domain list (`MVOP_LIST_DOMAINS`) compared with
//! the domains served now.
//!
//! A service domain serves every listed domain that is not itself (`DOMAIN_FLAG_SELF`), not
//! dying (`DOMAIN_FLAG_DYING`) and has a port for this service (non-zero). A served domain
//! is one build of a domain: its id and its `instance` (a build number unique in this boot).
//! A served domain that is no longer listed, is listed as dying, or is listed with another
//! instance (it was restarted under the same id and is alive again) is dropped. Drops come
//! before connects in a [`Plan`], so a domain restarted under the same name (with a new
//! domid) takes over its name only after the old instance let go of it, and a domain
//! restarted under the same id is connected again only after its old connection went.
//!
//! # Restarts under the same id
//!
//! A service domain the microvisor rebuilds under the same id (so that its frontends'
//! event channels and grants reach the new build) is listed as `DOMAIN_FLAG_DYING |
//! DOMAIN_FLAG_RESTARTING` (no ports, instance 0) while it is rebuilt, then alive with a
//! new instance; it stays listed until the new build exists. Each [`Dropped`] says whether
//! the domain is coming back under the same id: it is listed with `DOMAIN_FLAG_RESTARTING`,
//! or alive with another instance. A service keeps what the next build resumes from, and
//! passes the ids of the domains it is waiting for (`returning`) to the next [`plan`]: one
//! that is no longer coming back (absent: the microvisor gave up on it; dying without
//! `DOMAIN_FLAG_RESTARTING`; or alive without a port for this service) is dropped again,
//! for good. One that is alive again is connected like any other.

use alloc::string::String;
use alloc::vec::Vec;

use microvisor_abi::microvisor_op::{
    DomainEntry, DOMAIN_FLAG_CONTROL, DOMAIN_FLAG_DYING, DOMAIN_FLAG_RESTARTING, DOMAIN_FLAG_SELF,
};

/// One build of a domain, as served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// Its domain id.
    pub domid: u16,
    /// Its build number (`DomainEntry::instance`).
    pub instance: u32,
}

/// A domain to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its domain id.
    pub domid: u16,
    /// Its build number (`DomainEntry::instance`): a later entry with the same id and
    /// another instance is a restarted build.
    pub instance: u32,
    /// Its name (from the manifest; see [`entry_name`]).
    pub name: String,
    /// Its unbound port for this service, to bind with `bind_interdomain`.
    pub port: u32,
    /// It is the system's control domain (`DOMAIN_FLAG_CONTROL`).
    pub control: bool,
}

/// A domain to drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// Its domain id.
    pub domid: u16,
    /// It is coming back under the same id (listed with `DOMAIN_FLAG_RESTARTING`, or alive
    /// with another instance): keep what the next build resumes from. False: it is gone
    /// for good.
    pub restarting: bool,
}

/// What one sync does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Domains to drop: served ones in the order they were served, then the returning ones
    /// that are not coming back after all (`restarting` false).
    pub drop: Vec<Dropped>,
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

/// Compares the list with the served domains. `returning` are the ids of domains dropped
/// earlier as restarting whose new build is not served yet. `port_of` picks the service's
/// port from an entry (`store_port` or `console_port`). A domain listed twice counts once.
pub fn plan(
    served: &[Served],
    returning: &[u16],
    listed: &[DomainEntry],
    port_of: impl Fn(&DomainEntry) -> u32,
) -> Plan {
    let entries = |domid: u16| listed.iter().filter(move |entry| entry.domid == domid);
    let mut drop = Vec::new();
    let mut kept: Vec<u16> = Vec::new();
    for served in served {
        let still_wanted = entries(served.domid)
            .any(|entry| entry.instance == served.instance && wanted(entry, port_of(entry)));
        if still_wanted {
            kept.push(served.domid);
            continue;
        }
        let restarting = entries(served.domid).any(|entry| {
            entry.flags & DOMAIN_FLAG_RESTARTING != 0
                || (entry.flags & DOMAIN_FLAG_DYING == 0 && entry.instance != served.instance)
        });
        drop.push(Dropped {
            domid: served.domid,
            restarting,
        });
    }
    for &domid in returning {
        if served.iter().any(|served| served.domid == domid)
            || drop.iter().any(|dropped| dropped.domid == domid)
        {
            continue;
        }
        let coming_back = entries(domid).any(|entry| {
            entry.flags & DOMAIN_FLAG_RESTARTING != 0 || wanted(entry, port_of(entry))
        });
        if !coming_back {
            drop.push(Dropped {
                domid,
                restarting: false,
            });
        }
    }
    let mut connect: Vec<Candidate> = Vec::new();
    for entry in listed {
        let port = port_of(entry);
        if !wanted(entry, port)
            || kept.contains(&entry.domid)
            || connect
                .iter()
                .any(|candidate| candidate.domid == entry.domid)
        {
            continue;
        }
        connect.push(Candidate {
            domid: entry.domid,
            instance: entry.instance,
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
        build(domid, 1, flags, store_port, name)
    }

    fn build(domid: u16, instance: u32, flags: u16, store_port: u32, name: &str) -> DomainEntry {
        let mut entry = DomainEntry {
            domid,
            flags,
            store_port,
            instance,
            ..DomainEntry::default()
        };
        entry.name[..name.len()].copy_from_slice(name.as_bytes());
        entry
    }

    fn store_port(entry: &DomainEntry) -> u32 {
        entry.store_port
    }

    /// Domains served as instance 1.
    fn served(domids: &[u16]) -> Vec<Served> {
        domids
            .iter()
            .map(|&domid| Served { domid, instance: 1 })
            .collect()
    }

    fn gone(domid: u16) -> Dropped {
        Dropped {
            domid,
            restarting: false,
        }
    }

    fn restarting(domid: u16) -> Dropped {
        Dropped {
            domid,
            restarting: true,
        }
    }

    fn candidate(domid: u16, instance: u32, name: &str, port: u32) -> Candidate {
        Candidate {
            domid,
            instance,
            name: name.into(),
            port,
            control: false,
        }
    }

    const RESTART: u16 = DOMAIN_FLAG_DYING | DOMAIN_FLAG_RESTARTING;

    #[test]
    fn connects_new_domains_but_not_itself_the_dying_or_portless() {
        let listed = [
            entry(1, DOMAIN_FLAG_SELF, 0, "xenstore"),
            entry(2, 0, 5, "console"),
            entry(3, DOMAIN_FLAG_DYING, 6, "gone"),
            entry(4, 0, 0, "noport"),
            entry(5, 0, 7, "guest"),
            entry(6, RESTART, 0, "rebuilt"),
        ];
        let plan = plan(&[], &[], &listed, store_port);
        assert!(plan.drop.is_empty());
        assert_eq!(
            plan.connect,
            [candidate(2, 1, "console", 5), candidate(5, 1, "guest", 7)]
        );
    }

    #[test]
    fn the_control_domain_is_marked() {
        let listed = [entry(4, DOMAIN_FLAG_CONTROL, 6, "control")];
        let plan = plan(&[], &[], &listed, store_port);
        assert!(plan.connect[0].control);
    }

    #[test]
    fn drops_the_vanished_and_the_dying_and_keeps_the_rest() {
        let listed = [
            entry(2, 0, 5, "console"),
            entry(3, DOMAIN_FLAG_DYING, 6, "guest"),
        ];
        let plan = plan(&served(&[2, 3, 4]), &[], &listed, store_port);
        assert_eq!(plan.drop, [gone(3), gone(4)]);
        assert!(plan.connect.is_empty());
    }

    #[test]
    fn a_domain_restarted_with_a_new_id_is_dropped_and_its_successor_connected() {
        let listed = [
            entry(3, DOMAIN_FLAG_DYING, 6, "guest"),
            build(7, 2, 0, 9, "guest"),
        ];
        let plan = plan(&served(&[3]), &[], &listed, store_port);
        assert_eq!(plan.drop, [gone(3)]);
        assert_eq!(plan.connect, [candidate(7, 2, "guest", 9)]);
    }

    #[test]
    fn a_restart_seen_while_dying_is_a_drop_that_comes_back() {
        // Being rebuilt: dying and restarting, no port, instance 0.
        let listed = [build(3, 0, RESTART, 0, "blkback")];
        let first = plan(&served(&[3]), &[], &listed, store_port);
        assert_eq!(first.drop, [restarting(3)]);
        assert!(first.connect.is_empty());
        // Still being rebuilt: nothing to do while it is awaited.
        let again = plan(&[], &[3], &listed, store_port);
        assert_eq!(again, Plan::default());
        // The new build is alive: connected, under the same id, as instance 2.
        let listed = [build(3, 2, 0, 8, "blkback")];
        let back = plan(&[], &[3], &listed, store_port);
        assert!(back.drop.is_empty());
        assert_eq!(back.connect, [candidate(3, 2, "blkback", 8)]);
        // Served again: it stays.
        let settled = plan(
            &[Served {
                domid: 3,
                instance: 2,
            }],
            &[],
            &listed,
            store_port,
        );
        assert_eq!(settled, Plan::default());
    }

    #[test]
    fn a_restart_seen_only_after_the_fact_drops_then_connects_the_same_id() {
        let listed = [entry(2, 0, 5, "console"), build(3, 4, 0, 8, "blkback")];
        let plan = plan(&served(&[2, 3]), &[], &listed, store_port);
        assert_eq!(plan.drop, [restarting(3)]);
        assert_eq!(plan.connect, [candidate(3, 4, "blkback", 8)]);
    }

    #[test]
    fn a_normal_death_is_not_a_restart() {
        // Dying without the restart flag, then gone.
        let listed = [entry(3, DOMAIN_FLAG_DYING, 6, "guest")];
        assert_eq!(
            plan(&served(&[3]), &[], &listed, store_port).drop,
            [gone(3)]
        );
        assert_eq!(plan(&served(&[3]), &[], &[], store_port).drop, [gone(3)]);
        // A dying entry of another instance does not make it a restart either.
        let listed = [build(3, 5, DOMAIN_FLAG_DYING, 6, "guest")];
        assert_eq!(
            plan(&served(&[3]), &[], &listed, store_port).drop,
            [gone(3)]
        );
    }

    #[test]
    fn a_give_up_drops_the_awaited_domain_for_good() {
        let listed = [build(3, 0, RESTART, 0, "blkback")];
        assert_eq!(
            plan(&served(&[3]), &[], &listed, store_port).drop,
            [restarting(3)]
        );
        // The microvisor gave up on it (a crash loop): it is no longer listed.
        let plan_after = plan(&[], &[3], &[entry(2, 0, 5, "console")], store_port);
        assert_eq!(plan_after.drop, [gone(3)]);
        assert_eq!(plan_after.connect, [candidate(2, 1, "console", 5)]);
        // Dying without the restart flag, or alive without a port, is no return either.
        let dying = [build(3, 2, DOMAIN_FLAG_DYING, 8, "blkback")];
        assert_eq!(plan(&[], &[3], &dying, store_port).drop, [gone(3)]);
        let portless = [build(3, 2, 0, 0, "blkback")];
        assert_eq!(plan(&[], &[3], &portless, store_port).drop, [gone(3)]);
    }

    #[test]
    fn the_port_picker_decides_who_is_served() {
        let mut with_console = entry(2, 0, 0, "guest");
        with_console.console_port = 8;
        let plan = plan(&[], &[], &[with_console], |entry| entry.console_port);
        assert_eq!(plan.connect, [candidate(2, 1, "guest", 8)]);
        assert!(super::plan(&[], &[], &[with_console], store_port)
            .connect
            .is_empty());
    }

    #[test]
    fn duplicates_count_once() {
        let listed = [entry(2, 0, 5, "a"), entry(2, 0, 5, "a")];
        assert_eq!(plan(&[], &[], &listed, store_port).connect.len(), 1);
        // A served domain listed again with another build beside its own is kept, once.
        let listed = [entry(2, 0, 5, "a"), build(2, 9, 0, 5, "a")];
        assert_eq!(
            plan(&served(&[2]), &[], &listed, store_port),
            Plan::default()
        );
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
