//! The vif's xenbus handshake (`XEN-ABI.md` §3.6), as pure functions over key values.
//!
//! # Order (what Linux's `xen-netfront` does)
//!
//! 1. Back-end, in its directory: the features ([`backend_keys`]), then state `InitWait` (2).
//! 2. Front-end, on seeing `InitWait`: grants one tx and one rx ring page, allocates an event
//!    channel, writes `tx-ring-ref`, `rx-ring-ref`, `event-channel`, `request-rx-copy`,
//!    `feature-rx-notify`, `feature-sg`, ... in one transaction, and goes straight to
//!    `Connected` (4).
//! 3. Back-end: parses them ([`parse_frontend`]), maps the rings, binds the port and goes
//!    `Connected`.
//! 4. Either end `Closing` (5): the back-end stops serving, unmaps, and goes `Closed` (6).
//!
//! Offered: `feature-rx-copy` (the only receive mode), `feature-sg` (a frame may take
//! several tx slots), `feature-gso-tcpv4` (the front-end may send TCP/IPv4 frames of up to
//! 64 KiB with a GSO extra; the back-end cuts them into segments, [`crate::gso`]), up to
//! [`MAX_QUEUES`] queues (`multi-queue-max-queues`; with more than one, the front-end
//! writes each queue's keys under `queue-<n>/`), no split event channels. Not offered (0):
//! GSO to the front-end, IPv6 checksum offload, page flipping, multicast control: the NIC
//! behind the bridge is driven without offloads, so every frame on the bridge is a whole
//! Ethernet frame of at most [`MAX_FRAME`] bytes.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// The xenbus states (`io/xenbus.h`).
pub use microvisor_abi::xenbus::XenbusState as State;

/// The longest frame on the bridge: an Ethernet header, a VLAN tag and a 1500-byte payload.
pub const MAX_FRAME: usize = 1518;

/// The most queues (pairs of tx and rx rings, each with its event channel) one vif may use.
pub const MAX_QUEUES: u32 = 4;

/// The keys the back-end publishes before `InitWait`.
pub fn backend_keys() -> Vec<(&'static str, String)> {
    let max_queues = MAX_QUEUES.to_string();
    [
        ("feature-rx-copy", "1"),
        ("feature-rx-flip", "0"),
        ("feature-sg", "1"),
        ("feature-gso-tcpv4", "1"),
        ("feature-gso-tcpv6", "0"),
        ("feature-ipv6-csum-offload", "0"),
        ("feature-split-event-channels", "0"),
        ("feature-multicast-control", "0"),
        ("feature-dynamic-multicast-control", "0"),
        ("multi-queue-max-queues", max_queues.as_str()),
    ]
    .into_iter()
    .map(|(key, value)| (key, value.to_string()))
    .collect()
}

/// One queue's keys: its two rings and its event channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueKeys {
    pub tx_ring_ref: u32,
    pub rx_ring_ref: u32,
    pub event_channel: u32,
}

/// What the front-end wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// One entry per queue, at least one and at most [`MAX_QUEUES`].
    pub queues: Vec<QueueKeys>,
    /// It notifies when it posts rx buffers (`feature-rx-notify`).
    pub rx_notify: bool,
    /// It computes its own checksums (`feature-no-csum-offload`).
    pub no_csum_offload: bool,
}

/// Why the front-end's keys cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A key that must be there is missing or not a number.
    Missing(String),
    /// `request-rx-copy` is not 1: the front-end wants page flipping.
    NoRxCopy,
    /// No queue, or more queues than offered.
    Queues(u32),
    /// Split event channels, which were not offered.
    SplitEvents,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(key) => write!(f, "no usable `{key}`"),
            Self::NoRxCopy => write!(
                f,
                "it does not request rx copy (page flipping is not served)"
            ),
            Self::Queues(n) => write!(f, "it asks for {n} queues, 1 to {MAX_QUEUES} offered"),
            Self::SplitEvents => write!(f, "it uses split event channels, not offered"),
        }
    }
}

fn number(value: Option<String>) -> Option<u32> {
    value?.trim().parse().ok()
}

/// Reads the front-end's keys (`read(key)` gives the value of `<front-end dir>/<key>`,
/// where `key` may be `queue-<n>/<name>`).
///
/// # Errors
///
/// A [`Refusal`] for keys this back-end cannot serve.
pub fn parse_frontend(mut read: impl FnMut(&str) -> Option<String>) -> Result<Frontend, Refusal> {
    let count = number(read("multi-queue-num-queues")).unwrap_or(1);
    if count == 0 || count > MAX_QUEUES {
        return Err(Refusal::Queues(count));
    }
    // One queue: its keys are in the front-end's directory; several: under `queue-<n>/`.
    let prefixes: Vec<String> = if count == 1 {
        alloc::vec![String::new()]
    } else {
        (0..count).map(|n| format!("queue-{n}/")).collect()
    };
    let mut queues = Vec::new();
    for prefix in &prefixes {
        let split = ["event-channel-tx", "event-channel-rx"];
        if split
            .iter()
            .any(|key| read(&format!("{prefix}{key}")).is_some())
        {
            return Err(Refusal::SplitEvents);
        }
        let mut required = |key: &str| {
            let key = format!("{prefix}{key}");
            number(read(&key)).ok_or(Refusal::Missing(key))
        };
        queues.push(QueueKeys {
            tx_ring_ref: required("tx-ring-ref")?,
            rx_ring_ref: required("rx-ring-ref")?,
            event_channel: required("event-channel")?,
        });
    }
    if number(read("request-rx-copy")) != Some(1) {
        return Err(Refusal::NoRxCopy);
    }
    Ok(Frontend {
        queues,
        rx_notify: number(read("feature-rx-notify")) == Some(1),
        no_csum_offload: number(read("feature-no-csum-offload")) == Some(1),
    })
}

/// A vif's label in log lines: `vif <fe>.<handle> of <name>`.
pub fn label(fe: u16, handle: u32, name: &str) -> String {
    format!("vif {fe}.{handle} of {name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    fn keys(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn linux() -> BTreeMap<String, String> {
        keys(&[
            ("tx-ring-ref", "8"),
            ("rx-ring-ref", "9"),
            ("event-channel", "12"),
            ("request-rx-copy", "1"),
            ("feature-rx-notify", "1"),
            ("feature-sg", "1"),
            ("feature-gso-tcpv4", "1"),
            ("multi-queue-num-queues", "1"),
        ])
    }

    fn parse(map: &BTreeMap<String, String>) -> Result<Frontend, Refusal> {
        parse_frontend(|key| map.get(key).cloned())
    }

    #[test]
    fn linux_netfront_keys_parse() {
        assert_eq!(
            parse(&linux()),
            Ok(Frontend {
                queues: alloc::vec![QueueKeys {
                    tx_ring_ref: 8,
                    rx_ring_ref: 9,
                    event_channel: 12,
                }],
                rx_notify: true,
                no_csum_offload: false,
            })
        );
        let published = backend_keys();
        assert!(published.contains(&("feature-rx-copy", "1".to_string())));
        assert!(published.contains(&("feature-gso-tcpv4", "1".to_string())));
        assert!(published.contains(&("multi-queue-max-queues", "4".to_string())));
    }

    #[test]
    fn several_queues_are_read_from_their_directories() {
        let mut map = linux();
        for key in ["tx-ring-ref", "rx-ring-ref", "event-channel"] {
            map.remove(key);
        }
        map.insert("multi-queue-num-queues".into(), "2".into());
        for (n, base) in [(0u32, 10u32), (1, 20)] {
            map.insert(format!("queue-{n}/tx-ring-ref"), format!("{base}"));
            map.insert(format!("queue-{n}/rx-ring-ref"), format!("{}", base + 1));
            map.insert(format!("queue-{n}/event-channel"), format!("{}", base + 2));
        }
        let frontend = parse(&map).unwrap();
        assert_eq!(frontend.queues.len(), 2);
        assert_eq!(
            frontend.queues[1],
            QueueKeys {
                tx_ring_ref: 20,
                rx_ring_ref: 21,
                event_channel: 22
            }
        );
        map.remove("queue-1/rx-ring-ref");
        assert_eq!(
            parse(&map),
            Err(Refusal::Missing("queue-1/rx-ring-ref".into()))
        );
        map.insert("queue-1/rx-ring-ref".into(), "21".into());
        map.insert("queue-0/event-channel-tx".into(), "5".into());
        assert_eq!(parse(&map), Err(Refusal::SplitEvents));
    }

    #[test]
    fn unservable_front_ends_are_refused() {
        let mut map = linux();
        map.remove("rx-ring-ref");
        assert_eq!(parse(&map), Err(Refusal::Missing("rx-ring-ref".into())));
        let mut map = linux();
        map.insert("event-channel".into(), "x".into());
        assert_eq!(parse(&map), Err(Refusal::Missing("event-channel".into())));
        let mut map = linux();
        map.insert("request-rx-copy".into(), "0".into());
        assert_eq!(parse(&map), Err(Refusal::NoRxCopy));
        let mut map = linux();
        map.insert("multi-queue-num-queues".into(), "5".into());
        assert_eq!(parse(&map), Err(Refusal::Queues(5)));
        map.insert("multi-queue-num-queues".into(), "0".into());
        assert_eq!(parse(&map), Err(Refusal::Queues(0)));
        let mut map = linux();
        map.insert("event-channel-tx".into(), "3".into());
        assert_eq!(parse(&map), Err(Refusal::SplitEvents));
        assert!(format!("{}", Refusal::NoRxCopy).contains("rx copy"));
    }
}
