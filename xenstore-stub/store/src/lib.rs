//! The xenstore of the microvisor's `xenstore-stub` domain, as a library tested on the host.
//!
//! It serves Xen's xenstore wire protocol (`xs_wire.h`; see [`wire`] and the project's
//! `docs/XEN-ABI.md` §3) to any number of connections, each belonging to a domain and each
//! either privileged (the toolstack) or not (guests): a tree of nodes with values and
//! access lists ([`perms`]), relative paths ([`path`]), watches with their events,
//! transactions with conflict detection, domain introduction and release, and per-domain
//! quotas ([`Quotas`]).
//!
//! The core is `no_std` + `alloc` and does no I/O: a transport feeds the bytes it receives
//! into a [`Framer`], hands each whole message to [`Store::handle`], and delivers what comes
//! back ([`Outgoing`]) through one bounded [`OutputQueue`] per connection. The stub domain's
//! transport is its rings; the `std` feature adds [`host`], a unix-socket server that Xen's
//! own client tools (`xenstore-read`, `xenstore-write`, ...) can talk to.
//!
//! ```
//! use xenstore_store::{wire, Outgoing, Quotas, Store};
//!
//! let mut store = Store::new(Quotas::default());
//! let toolstack = store.add_connection(0, true);
//! let request = wire::encode_write(1, 0, b"/vm/name", b"guest");
//! let out = store.handle(toolstack, &request).unwrap();
//! let Outgoing::Message { bytes, .. } = &out[0] else { unreachable!() };
//! assert_eq!(&bytes[wire::HEADER_BYTES..], b"OK\0");
//! assert_eq!(store.read("/vm/name"), Some(&b"guest"[..]));
//! ```

#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod framer;
mod ops;
mod output;
pub mod path;
pub mod perms;
mod quota;
mod store;
mod transaction;
pub mod tree;
mod watch;
pub mod wire;

#[cfg(feature = "std")]
pub mod host;

pub use framer::{Fed, Framer};
pub use output::{OutputQueue, QueueFull};
pub use path::DomId;
pub use quota::Quotas;
pub use store::{ConnId, Outgoing, RingInfo, Store};
pub use watch::TOKEN_MAX;
pub use wire::{MessageType, ProtocolError, XsError};
