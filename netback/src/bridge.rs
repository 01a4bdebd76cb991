//! The L2 bridge inside netback: ports are the vifs (each with the one MAC its manifest
//! gave it) and the uplink (the passthrough NIC). It learns where source MACs live,
//! forwards known unicast to its port, floods broadcast, multicast and unknown unicast to
//! every other port that is up, and never forwards:
//! - a frame from a vif whose source MAC is not that vif's own (spoofing);
//! - a frame from the uplink whose source MAC is a vif's (stealing a guest's address);
//! - a frame with a group (multicast) source MAC, or shorter than two MACs and a type.
//!
//! The table holds at most [`TABLE_ENTRIES`] learned addresses; past that the one seen
//! least recently is forgotten, so a stream of made-up source MACs from the uplink costs
//! nothing but the table's churn.

use alloc::vec::Vec;

use crate::mac::Mac;

/// Learned addresses kept.
pub const TABLE_ENTRIES: usize = 256;

/// A bridge port's index.
pub type PortId = usize;

#[derive(Debug, Clone, Copy)]
struct Port {
    /// A vif's own MAC; `None` for the uplink.
    own: Option<Mac>,
    up: bool,
}

/// Where a frame goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// To these ports (empty: nowhere else is up).
    To(Vec<PortId>),
    /// Nowhere, and why.
    Drop(Refused),
}

/// Why a frame is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Shorter than an Ethernet header.
    Runt,
    /// A vif sent a source MAC not its own.
    Spoofed { port: PortId, source: Mac },
    /// The uplink sent a vif's MAC as its source.
    Stolen { source: Mac },
    /// A group address as the source.
    GroupSource,
    /// The destination lives on the port it came from.
    SamePort,
    /// The port is not up (or not a port).
    PortDown,
}

/// The bridge's state.
#[derive(Debug, Default)]
pub struct Bridge {
    ports: Vec<Port>,
    /// Learned (address, port, last seen).
    table: Vec<(Mac, PortId, u64)>,
    clock: u64,
}

impl Bridge {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the uplink port.
    pub fn add_uplink(&mut self) -> PortId {
        self.ports.push(Port {
            own: None,
            up: true,
        });
        self.ports.len() - 1
    }

    /// Adds a vif whose only source address is `own`; it starts down.
    pub fn add_vif(&mut self, own: Mac) -> PortId {
        self.ports.push(Port {
            own: Some(own),
            up: false,
        });
        self.ports.len() - 1
    }

    /// A vif connected (up) or went away (down); a port that goes down is forgotten by the
    /// table.
    pub fn set_up(&mut self, port: PortId, up: bool) {
        if let Some(p) = self.ports.get_mut(port) {
            p.up = up;
        }
        if !up {
            self.table.retain(|&(_, at, _)| at != port);
        }
    }

    fn lookup(&self, mac: Mac) -> Option<PortId> {
        // A vif's own address needs no learning: it can only be there.
        if let Some(port) = self.ports.iter().position(|p| p.own == Some(mac)) {
            return Some(port);
        }
        self.table.iter().find(|e| e.0 == mac).map(|e| e.1)
    }

    fn learn(&mut self, mac: Mac, port: PortId) {
        self.clock += 1;
        if self.ports[port].own.is_some() {
            return;
        }
        if let Some(entry) = self.table.iter_mut().find(|e| e.0 == mac) {
            entry.1 = port;
            entry.2 = self.clock;
            return;
        }
        if self.table.len() >= TABLE_ENTRIES {
            if let Some(oldest) = (0..self.table.len()).min_by_key(|&i| self.table[i].2) {
                self.table.swap_remove(oldest);
            }
        }
        self.table.push((mac, port, self.clock));
    }

    /// Decides where `frame`, which arrived on `from`, goes (and learns its source).
    pub fn forward(&mut self, from: PortId, frame: &[u8]) -> Forward {
        let (Some(dest), Some(source)) = (Mac::destination(frame), Mac::source(frame)) else {
            return Forward::Drop(Refused::Runt);
        };
        if frame.len() < 14 {
            return Forward::Drop(Refused::Runt);
        }
        let Some(port) = self.ports.get(from).copied().filter(|p| p.up) else {
            return Forward::Drop(Refused::PortDown);
        };
        if source.is_group() {
            return Forward::Drop(Refused::GroupSource);
        }
        match port.own {
            Some(own) if own != source => {
                return Forward::Drop(Refused::Spoofed { port: from, source });
            }
            None if self.ports.iter().any(|p| p.own == Some(source)) => {
                return Forward::Drop(Refused::Stolen { source });
            }
            _ => {}
        }
        self.learn(source, from);
        if !dest.is_group() {
            if let Some(to) = self.lookup(dest) {
                if to == from {
                    return Forward::Drop(Refused::SamePort);
                }
                return if self.ports[to].up {
                    Forward::To(Vec::from([to]))
                } else {
                    Forward::Drop(Refused::PortDown)
                };
            }
        }
        Forward::To(
            (0..self.ports.len())
                .filter(|&p| p != from && self.ports[p].up)
                .collect(),
        )
    }
}

/// A hash of the flow `frame` belongs to, to pick one of a vif's queues: the IPv4
/// addresses and, for TCP and UDP (not fragments), the ports; for other frames, the two
/// MACs. The frames of one flow always hash alike, so they stay in order on one queue.
pub fn flow_hash(frame: &[u8]) -> u32 {
    let mix = |hash: u32, bytes: &[u8]| {
        bytes
            .iter()
            .fold(hash, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
    };
    let start = 0x811c_9dc5;
    let is_ipv4 = frame.len() >= 34 && frame[12..14] == [0x08, 0x00] && frame[14] >> 4 == 4;
    if !is_ipv4 {
        return mix(start, frame.get(..12).unwrap_or(frame));
    }
    let header = usize::from(frame[14] & 0x0f) * 4;
    let mut hash = mix(start, &frame[26..34]);
    let l4 = 14 + header;
    let not_fragment = u16::from_be_bytes([frame[20], frame[21]]) & 0x3fff == 0;
    if matches!(frame[23], 6 | 17) && not_fragment && frame.len() >= l4 + 4 {
        hash = mix(hash, &frame[l4..l4 + 4]);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(dest: Mac, source: Mac) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(dest.0);
        f.extend(source.0);
        f.extend([0x08, 0x00]);
        f.extend([0u8; 46]);
        f
    }

    fn setup() -> (Bridge, PortId, PortId, PortId, Mac, Mac) {
        let mut bridge = Bridge::new();
        let uplink = bridge.add_uplink();
        let (a, b) = (Mac::for_domain("a", 0), Mac::for_domain("b", 0));
        let va = bridge.add_vif(a);
        let vb = bridge.add_vif(b);
        bridge.set_up(va, true);
        bridge.set_up(vb, true);
        (bridge, uplink, va, vb, a, b)
    }

    #[test]
    fn vifs_reach_each_other_and_the_uplink_learns() {
        let (mut bridge, uplink, va, vb, a, b) = setup();
        assert_eq!(
            bridge.forward(va, &frame(b, a)),
            Forward::To(Vec::from([vb]))
        );
        assert_eq!(
            bridge.forward(vb, &frame(Mac::BROADCAST, b)),
            Forward::To(Vec::from([uplink, va]))
        );
        let host = Mac::parse("52:55:0a:00:02:02").unwrap();
        // Unknown unicast floods; once the host spoke it is known.
        assert_eq!(
            bridge.forward(va, &frame(host, a)),
            Forward::To(Vec::from([uplink, vb]))
        );
        assert_eq!(
            bridge.forward(uplink, &frame(a, host)),
            Forward::To(Vec::from([va]))
        );
        assert_eq!(
            bridge.forward(vb, &frame(host, b)),
            Forward::To(Vec::from([uplink]))
        );
    }

    #[test]
    fn spoofing_stealing_and_junk_are_refused() {
        let (mut bridge, uplink, va, vb, a, b) = setup();
        assert_eq!(
            bridge.forward(va, &frame(b, b)),
            Forward::Drop(Refused::Spoofed {
                port: va,
                source: b
            })
        );
        assert_eq!(
            bridge.forward(uplink, &frame(b, a)),
            Forward::Drop(Refused::Stolen { source: a })
        );
        assert_eq!(
            bridge.forward(va, &frame(b, Mac::BROADCAST)),
            Forward::Drop(Refused::GroupSource)
        );
        assert_eq!(bridge.forward(va, &[0u8; 13]), Forward::Drop(Refused::Runt));
        assert_eq!(
            bridge.forward(va, &frame(a, a)),
            Forward::Drop(Refused::SamePort)
        );
        bridge.set_up(vb, false);
        assert_eq!(
            bridge.forward(va, &frame(b, a)),
            Forward::Drop(Refused::PortDown)
        );
        assert_eq!(
            bridge.forward(vb, &frame(a, b)),
            Forward::Drop(Refused::PortDown)
        );
        assert_eq!(
            bridge.forward(99, &frame(a, b)),
            Forward::Drop(Refused::PortDown)
        );
    }

    #[test]
    fn the_table_is_bounded_and_keeps_recent_addresses() {
        let (mut bridge, uplink, va, _, a, _) = setup();
        let first = Mac([0x52, 0, 0, 0, 0, 1]);
        bridge.forward(uplink, &frame(a, first));
        for i in 0..1000u32 {
            let b = i.to_le_bytes();
            bridge.forward(uplink, &frame(a, Mac([0x52, 1, b[0], b[1], b[2], b[3]])));
        }
        assert!(bridge.table.len() <= TABLE_ENTRIES);
        // The first host was forgotten: its frames flood again.
        assert_eq!(
            bridge.forward(va, &frame(first, a)).clone(),
            Forward::To(Vec::from([0, 2]))
        );
    }

    proptest! {
        #[test]
        fn a_vif_never_gets_a_frame_out_with_another_source(
            frames in proptest::collection::vec((0usize..3, any::<[u8; 6]>(), any::<[u8; 6]>()), 0..200)
        ) {
            let (mut bridge, uplink, _va, _vb, _a, _b) = setup();
            let owns = [None, Some(Mac::for_domain("a", 0)), Some(Mac::for_domain("b", 0))];
            for (from, dest, source) in frames {
                let f = frame(Mac(dest), Mac(source));
                if let Forward::To(ports) = bridge.forward(from, &f) {
                    prop_assert!(!ports.contains(&from));
                    match owns[from] {
                        Some(own) => prop_assert_eq!(own, Mac(source)),
                        None => prop_assert!(from == uplink && !owns.contains(&Some(Mac(source)))),
                    }
                }
            }
        }
    }

    #[test]
    fn a_flow_hashes_alike_and_flows_spread() {
        let frame = |port: u8| {
            let mut f = alloc::vec![0u8; 60];
            f[12] = 0x08;
            f[14] = 0x45;
            f[23] = 6;
            f[26..34].copy_from_slice(&[10, 0, 2, 15, 10, 0, 2, 2]);
            f[34..38].copy_from_slice(&[0x04, port, 0x00, 0x50]);
            f
        };
        let mut same = frame(1);
        same[40] = 0x77; // another sequence number: the same flow
        assert_eq!(flow_hash(&frame(1)), flow_hash(&same));
        let queues: alloc::collections::BTreeSet<u32> =
            (0..32).map(|p| flow_hash(&frame(p)) % 4).collect();
        assert_eq!(queues.len(), 4, "32 flows reach every one of 4 queues");
        assert_eq!(flow_hash(&[1, 2, 3]), flow_hash(&[1, 2, 3]));
    }
}
