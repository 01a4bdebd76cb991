//! The vbd's xenbus handshake (`XEN-ABI.md` §3.4, §4.2), as pure functions over key
//! values: what the back-end publishes, what it reads from the front-end, and the state
//! machine both ends walk.
//!
//! # Order (what Linux's `xen-blkfront` expects)
//!
//! 1. Back-end, in its directory: the features ([`Features::backend_keys`]), then state
//!    `InitWait` (2).
//! 2. Front-end, on seeing `InitWait`: reads `max-ring-page-order` and
//!    `multi-queue-max-queues`, grants its rings and writes `ring-ref`/`ring-refN`,
//!    `event-channel` (per queue under `queue-N/` when there is more than one queue),
//!    `ring-page-order`, `multi-queue-num-queues`, `protocol`, `feature-persistent`, then
//!    state `Initialised` (3).
//! 3. Back-end: parses them ([`parse_frontend`]), maps the rings, binds the ports, writes
//!    [`connect_keys`] (`sectors`, `info`, `sector-size`, `physical-sector-size`) and state
//!    `Connected` (4).
//! 4. Front-end: reads the features and the connect keys, state `Connected`; I/O starts.
//! 5. Either end `Closing` (5): the back-end stops serving, unmaps, and goes `Closed` (6).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::vbd::Vbd;
use crate::wire::{SECTOR_BYTES, VDISK_READONLY};

/// The largest ring the back-end accepts: 2^order pages per queue.
pub const MAX_RING_PAGE_ORDER: u32 = 4;
/// The most queues a vbd may have.
pub const MAX_QUEUES: u32 = 4;

/// The xenbus states (`io/xenbus.h`), as the runtime's xenbus helpers know them.
pub use microvisor_abi::xenbus::XenbusState as State;

/// What the back-end offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `max-ring-page-order`.
    pub max_ring_page_order: u32,
    /// `multi-queue-max-queues`.
    pub max_queues: u32,
    /// `feature-max-indirect-segments` (0: no indirect requests).
    pub max_indirect_segments: u16,
    /// `feature-discard` (with `discard-granularity` 4096, `discard-alignment` 0,
    /// `discard-secure` 0).
    pub discard: bool,
    /// `feature-persistent`.
    pub persistent: bool,
}

impl Default for Features {
    fn default() -> Self {
        Self {
            max_ring_page_order: MAX_RING_PAGE_ORDER,
            max_queues: MAX_QUEUES,
            max_indirect_segments: crate::request::Limits::DEFAULT_MAX_INDIRECT_SEGMENTS,
            discard: true,
            persistent: true,
        }
    }
}

impl Features {
    /// The keys written in the back-end's directory before `InitWait`.
    pub fn backend_keys(&self) -> Vec<(&'static str, String)> {
        let flag = |on: bool| String::from(if on { "1" } else { "0" });
        let mut keys = Vec::from([
            ("feature-flush-cache", flag(true)),
            ("feature-barrier", flag(true)),
            ("feature-persistent", flag(self.persistent)),
            (
                "feature-max-indirect-segments",
                self.max_indirect_segments.to_string(),
            ),
            ("max-ring-page-order", self.max_ring_page_order.to_string()),
            ("multi-queue-max-queues", self.max_queues.to_string()),
            ("feature-discard", flag(self.discard)),
        ]);
        if self.discard {
            keys.push(("discard-granularity", String::from("4096")));
            keys.push(("discard-alignment", String::from("0")));
            keys.push(("discard-secure", String::from("0")));
        }
        keys
    }
}

/// One queue's ring, as the front-end published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRing {
    /// The grants of the ring pages, page 0 first (2^`ring-page-order` of them).
    pub ring_refs: Vec<u32>,
    /// The front-end's port for this queue.
    pub event_channel: u32,
}

/// What the front-end published, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// The rings, queue 0 first.
    pub queues: Vec<QueueRing>,
    /// `feature-persistent` from the front-end (it will reuse its grants).
    pub persistent: bool,
}

/// Why the front-end's keys cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// A key that must be there is not.
    Missing(String),
    /// A key whose value is not what it must be.
    Invalid {
        /// The key (relative to the front-end's directory).
        key: String,
        /// Its value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(key) => write!(f, "front-end key {key} is missing"),
            Self::Invalid {
                key,
                value,
                expected,
            } => write!(f, "front-end key {key} = {value:?}: expected {expected}"),
        }
    }
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    expected: &'static str,
    valid: impl Fn(u32) -> bool,
) -> Result<Option<u32>, HandshakeError> {
    let Some(value) = get(key) else {
        return Ok(None);
    };
    match value.trim().parse::<u32>() {
        Ok(n) if valid(n) => Ok(Some(n)),
        _ => Err(HandshakeError::Invalid {
            key: key.to_string(),
            value,
            expected,
        }),
    }
}

fn required(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    expected: &'static str,
    valid: impl Fn(u32) -> bool,
) -> Result<u32, HandshakeError> {
    number(get, key, expected, valid)?.ok_or_else(|| HandshakeError::Missing(key.to_string()))
}

/// Reads and checks the front-end's keys; `get(key)` reads `key` relative to the
/// front-end's directory (`None` if absent). At most `features`' ring order and queues are
/// accepted; `protocol`, when present, must be the native `x86_64-abi`.
///
/// # Errors
///
/// [`HandshakeError`] naming the first key that is missing or wrong.
pub fn parse_frontend(
    get: impl Fn(&str) -> Option<String>,
    features: &Features,
) -> Result<Frontend, HandshakeError> {
    if let Some(protocol) = get("protocol") {
        let protocol = protocol.trim_end_matches('\0').trim();
        if !protocol.is_empty() && protocol != "x86_64-abi" {
            return Err(HandshakeError::Invalid {
                key: String::from("protocol"),
                value: protocol.to_string(),
                expected: "x86_64-abi (the native layout)",
            });
        }
    }
    let max_order = features.max_ring_page_order;
    let order = number(
        &get,
        "ring-page-order",
        "a ring page order the back-end offered",
        |n| n <= max_order,
    )?;
    let max_queues = features.max_queues;
    let queues = number(
        &get,
        "multi-queue-num-queues",
        "1 to multi-queue-max-queues",
        |n| (1..=max_queues).contains(&n),
    )?
    .unwrap_or(1);
    let persistent = number(&get, "feature-persistent", "0 or 1", |n| n <= 1)?.unwrap_or(0) == 1;
    let mut rings = Vec::new();
    for queue in 0..queues {
        let prefix = if queues == 1 {
            String::new()
        } else {
            format!("queue-{queue}/")
        };
        let ring_refs = match order {
            None => Vec::from([required(
                &get,
                &format!("{prefix}ring-ref"),
                "a grant reference",
                |_| true,
            )?]),
            Some(order) => (0..1u32 << order)
                .map(|page| {
                    required(
                        &get,
                        &format!("{prefix}ring-ref{page}"),
                        "a grant reference",
                        |_| true,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let event_channel = required(
            &get,
            &format!("{prefix}event-channel"),
            "a port number",
            |n| n > 0,
        )?;
        rings.push(QueueRing {
            ring_refs,
            event_channel,
        });
    }
    Ok(Frontend {
        queues: rings,
        persistent,
    })
}

/// The keys written in the back-end's directory before `Connected`.
pub fn connect_keys(vbd: &Vbd) -> Vec<(&'static str, String)> {
    let info = if vbd.is_read_only() {
        VDISK_READONLY
    } else {
        0
    };
    Vec::from([
        ("sectors", vbd.sectors().to_string()),
        ("info", info.to_string()),
        ("sector-size", SECTOR_BYTES.to_string()),
        ("physical-sector-size", SECTOR_BYTES.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    fn store(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (String::from(*k), String::from(*v)))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn a_single_page_single_queue_front_end_parses() {
        let front = parse_frontend(
            store(&[
                ("ring-ref", "8"),
                ("event-channel", "5"),
                ("protocol", "x86_64-abi"),
                ("feature-persistent", "1"),
            ]),
            &Features::default(),
        )
        .unwrap();
        assert_eq!(
            front.queues,
            [QueueRing {
                ring_refs: Vec::from([8]),
                event_channel: 5
            }]
        );
        assert!(front.persistent);
    }

    #[test]
    fn multi_page_multi_queue_keys_are_read_per_queue() {
        let front = parse_frontend(
            store(&[
                ("ring-page-order", "1"),
                ("multi-queue-num-queues", "2"),
                ("queue-0/ring-ref0", "10"),
                ("queue-0/ring-ref1", "11"),
                ("queue-0/event-channel", "7"),
                ("queue-1/ring-ref0", "12"),
                ("queue-1/ring-ref1", "13"),
                ("queue-1/event-channel", "8"),
            ]),
            &Features::default(),
        )
        .unwrap();
        assert_eq!(front.queues.len(), 2);
        assert_eq!(front.queues[1].ring_refs, [12, 13]);
        assert_eq!(front.queues[1].event_channel, 8);
        assert!(!front.persistent);
    }

    #[test]
    fn bad_keys_are_named() {
        let features = Features::default();
        let err = parse_frontend(store(&[("event-channel", "5")]), &features).unwrap_err();
        assert_eq!(err, HandshakeError::Missing(String::from("ring-ref")));
        let err = parse_frontend(
            store(&[
                ("ring-ref", "1"),
                ("event-channel", "5"),
                ("ring-page-order", "9"),
            ]),
            &features,
        )
        .unwrap_err();
        assert!(matches!(err, HandshakeError::Invalid { ref key, .. } if key == "ring-page-order"));
        let err = parse_frontend(
            store(&[
                ("ring-ref", "1"),
                ("event-channel", "5"),
                ("multi-queue-num-queues", "0"),
            ]),
            &features,
        )
        .unwrap_err();
        assert!(
            matches!(err, HandshakeError::Invalid { ref key, .. } if key == "multi-queue-num-queues")
        );
        let err = parse_frontend(
            store(&[
                ("ring-ref", "1"),
                ("event-channel", "5"),
                ("protocol", "x86_32-abi"),
            ]),
            &features,
        )
        .unwrap_err();
        assert!(err.to_string().contains("x86_32-abi"), "{err}");
        let err = parse_frontend(
            store(&[("ring-ref", "x1"), ("event-channel", "5")]),
            &features,
        )
        .unwrap_err();
        assert!(err.to_string().contains("ring-ref"), "{err}");
        // A missing key of the second queue is named with its prefix.
        let err = parse_frontend(
            store(&[
                ("multi-queue-num-queues", "2"),
                ("queue-0/ring-ref", "1"),
                ("queue-0/event-channel", "5"),
                ("queue-1/ring-ref", "2"),
            ]),
            &features,
        )
        .unwrap_err();
        assert_eq!(
            err,
            HandshakeError::Missing(String::from("queue-1/event-channel"))
        );
    }

    #[test]
    fn published_keys_cover_the_features_linux_reads() {
        let keys: Vec<&str> = Features::default()
            .backend_keys()
            .iter()
            .map(|(k, _)| *k)
            .collect();
        for wanted in [
            "feature-flush-cache",
            "feature-discard",
            "feature-persistent",
            "feature-max-indirect-segments",
            "max-ring-page-order",
            "multi-queue-max-queues",
        ] {
            assert!(keys.contains(&wanted), "{wanted}");
        }
        let vbd = Vbd::whole(2048, true);
        let connect = connect_keys(&vbd);
        assert!(connect.contains(&("sectors", String::from("2048"))));
        assert!(connect.contains(&("info", String::from("4"))));
    }

    #[test]
    fn states_parse_and_round_trip() {
        assert_eq!(State::from_decimal(b"4"), Some(State::Connected));
        assert_eq!(State::from_decimal(b" 6\n"), Some(State::Closed));
        assert_eq!(State::from_decimal(b"9"), None);
        assert_eq!(State::from_decimal(b"x"), None);
        assert_eq!(State::InitWait.as_u32(), 2);
    }

    proptest::proptest! {
        #[test]
        fn any_keys_parse_or_fail_cleanly(
            pairs in proptest::collection::vec(("[a-z0-9/-]{1,24}", "[0-9a-z]{0,12}"), 0..12)
        ) {
            let map: BTreeMap<String, String> = pairs.into_iter().collect();
            let get = |key: &str| map.get(key).cloned();
            if let Ok(front) = parse_frontend(get, &Features::default()) {
                proptest::prop_assert!(!front.queues.is_empty());
                proptest::prop_assert!(front.queues.len() as u32 <= MAX_QUEUES);
            }
        }
    }
}
