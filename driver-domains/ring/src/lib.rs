//! Xen's shared request/response ring (`io/ring.h`), as two typed ends over shared memory.
//!
//! A front-end and a back-end share one region (normally one granted 4096-byte page). The
//! front-end produces requests and consumes responses; the back-end consumes requests and
//! produces responses into the same slots. Four free-running `u32` indices at the start of
//! the region say how far each side has got; the layout is in [`layout`].
//!
//! # The index protocol
//!
//! | step | who | what |
//! |---|---|---|
//! | initialise | front | [`Sring::init`]: `req_prod = rsp_prod = 0`, `req_event = rsp_event = 1` |
//! | produce | front | copy a request into slot `req_prod_pvt`, `req_prod_pvt += 1`; at most `slots - (req_prod_pvt - rsp_cons)` outstanding |
//! | publish | front | release-store `req_prod = req_prod_pvt`, full fence, notify the back-end iff `req_event` lies in `(old, new]` |
//! | consume | back | acquire-load `req_prod`, copy out slot `req_cons`, `req_cons += 1` |
//! | answer | back | copy a response into slot `rsp_prod_pvt` (only for a consumed request) and publish `rsp_prod` like `req_prod`, checking `rsp_event` |
//! | sleep | either | "final check": with nothing to consume, store `event = cons + 1`, full fence, look again; sleep only if still empty |
//!
//! Slot of index `i` is `i & (slots - 1)`; all index arithmetic wraps.
//!
//! # Trust
//!
//! The peer can write anything into the region at any time. So: entries are copied out once
//! and handed to the caller by value (there is no reference into shared memory); every
//! producer index read from the region is checked against what the peer may legitimately
//! have produced, and a violation is a [`RingError`] for the caller to act on (disconnect),
//! never a panic or an out-of-range access. Notification decisions use the peer's event
//! index only to return a `bool`.
//!
//! # Modules
//!
//! | module | job |
//! |---|---|
//! | [`layout`] | offsets of the indices and slots, ring size for given entry sizes |
//! | [`shared_page`] | the [`SharedPage`] trait the rings access memory through |
//! | [`local_page`] | [`LocalRegion`]: an in-process [`SharedPage`] for host tests (loom-aware) |
//! | [`entry`] | the [`RingEntry`] trait: fixed-size little-endian encode/decode |
//! | [`sring`] | [`Sring::init`]: initialising a fresh shared ring |
//! | [`front`] | [`FrontRing`]: produce requests, consume responses |
//! | [`back`] | [`BackRing`]: consume requests, produce responses |
//! | [`journal`] | what a back-end saves so that its next instance can resume a ring ([`BackRing::resume`]) |
//! | [`error`] | [`RingError`] (peer misbehaved), [`RingFull`], [`LayoutError`] |
//! | [`test_entries`] | [`test_entries::Message`], an entry for ping-pong tests between domains |
//!
//! # Tests
//!
//! `cargo test -p xen-ring` runs the unit tests, the round-trip and hostile-peer tests and
//! the proptest interleavings. The loom models of the index and notification protocol run
//! with `RUSTFLAGS="--cfg loom" cargo test -p xen-ring --release --test loom`; the fuzz
//! target with `cargo +nightly fuzz run back_ring` in `fuzz/`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod back;
pub mod entry;
pub mod error;
pub mod front;
pub mod journal;
pub mod layout;
pub mod local_page;
pub mod shared_page;
pub mod sring;
pub mod test_entries;

pub use back::BackRing;
pub use entry::{RingEntry, MAX_ENTRY_BYTES};
pub use error::{LayoutError, ResumeError, RingError, RingFull};
pub use front::FrontRing;
pub use layout::{RingLayout, PAGE_SIZE_BYTES};
pub use local_page::{LocalPage, LocalRegion};
pub use shared_page::SharedPage;
pub use sring::Sring;
