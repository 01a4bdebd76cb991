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
//! several tx slots), one queue (`multi-queue-max-queues` 1), no split event channels. Not
//! offered (0): GSO, IPv6 checksum offload, page flipping, multicast control: the NIC
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

/// The keys the back-end publishes before `InitWait`.
pub fn backend_keys() -> Vec<(&'static str, String)> {
    [
        ("feature-rx-copy", "1"),
        ("feature-rx-flip", "0"),
        ("feature-sg", "1"),
        ("feature-gso-tcpv4", "0"),
        ("feature-gso-tcpv6", "0"),
        ("feature-ipv6-csum-offload", "0"),
        ("feature-split-event-channels", "0"),
        ("feature-multicast-control", "0"),
        ("feature-dynamic-multicast-control", "0"),
        ("multi-queue-max-queues", "1"),
    ]
    .into_iter()
    .map(|(key, value)| (key, value.to_string()))
    .collect()
}

/// What the front-end wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frontend {
    pub tx_ring_ref: u32,
    pub rx_ring_ref: u32,
    pub event_channel: u32,
    /// It notifies when it posts rx buffers (`feature-rx-notify`).
    pub rx_notify: bool,
    /// It computes its own checksums (`feature-no-csum-offload`).
    pub no_csum_offload: bool,
}

/// Why the front-end's keys cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A key that must be there is missing or not a number.
    Missing(&'static str),
    /// `request-rx-copy` is not 1: the front-end wants page flipping.
    NoRxCopy,
    /// More queues than offered.
    Queues(u32),
    /// Split event channels, which were not offered.
    SplitEvents,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(key) => write!(f, "no usable `{key}`"),
            Self::NoRxCopy => write!(f, "it does not request rx copy (page flipping is not served)"),
            Self::Queues(n) => write!(f, "it asks for {n} queues, 1 offered"),
            Self::SplitEvents => write!(f, "it uses split event channels, not offered"),
        }
    }
}

fn number(value: Option<String>) -> Option<u32> {
    value?.trim().parse().ok()
}

/// Reads the front-end's keys (`read(key)` gives the value of `<front-end dir>/<key>`).
///
/// # Errors
///
/// A [`Refusal`] for keys this back-end cannot serve.
pub fn parse_frontend(mut read: impl FnMut(&str) -> Option<String>) -> Result<Frontend, Refusal> {
    if let Some(queues) = number(read("multi-queue-num-queues")) {
        if queues != 1 {
            return Err(Refusal::Queues(queues));
        }
    }
    if read("event-channel-tx").is_some() || read("event-channel-rx").is_some() {
        return Err(Refusal::SplitEvents);
    }
    let mut required = |key: &'static str| number(read(key)).ok_or(Refusal::Missing(key));
    let tx_ring_ref = required("tx-ring-ref")?;
    let rx_ring_ref = required("rx-ring-ref")?;
    let event_channel = required("event-channel")?;
    if number(read("request-rx-copy")) != Some(1) {
        return Err(Refusal::NoRxCopy);
    }
    Ok(Frontend {
        tx_ring_ref,
        rx_ring_ref,
        event_channel,
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
                tx_ring_ref: 8,
                rx_ring_ref: 9,
                event_channel: 12,
                rx_notify: true,
                no_csum_offload: false,
            })
        );
        let published = backend_keys();
        assert!(published.contains(&("feature-rx-copy", "1".to_string())));
        assert!(published.contains(&("multi-queue-max-queues", "1".to_string())));
    }

    #[test]
    fn unservable_front_ends_are_refused() {
        let mut map = linux();
        map.remove("rx-ring-ref");
        assert_eq!(parse(&map), Err(Refusal::Missing("rx-ring-ref")));
        let mut map = linux();
        map.insert("event-channel".into(), "x".into());
        assert_eq!(parse(&map), Err(Refusal::Missing("event-channel")));
        let mut map = linux();
        map.insert("request-rx-copy".into(), "0".into());
        assert_eq!(parse(&map), Err(Refusal::NoRxCopy));
        let mut map = linux();
        map.insert("multi-queue-num-queues".into(), "2".into());
        assert_eq!(parse(&map), Err(Refusal::Queues(2)));
        let mut map = linux();
        map.insert("event-channel-tx".into(), "3".into());
        assert_eq!(parse(&map), Err(Refusal::SplitEvents));
        assert!(format!("{}", Refusal::NoRxCopy).contains("rx copy"));
    }
}
