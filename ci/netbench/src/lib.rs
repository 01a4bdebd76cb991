//! `netbench`: the network benchmark of `cargo xtask bench --only net`, both halves.
//!
//! The guest half ([`guest`], the program `netbench serve`) runs inside the Linux guest,
//! built static and added to the benchmark's initramfs; the host half ([`host`]) is the
//! library `cargo xtask` calls, reaching the guest through ports that QEMU's user network
//! forwards from 127.0.0.1. Both boots that are compared (Linux on the microvisor with its
//! eth0 from netback, and Linux booted by QEMU directly on the NIC) run the same two halves.
//!
//! # Protocol
//!
//! TCP, port [`TCP_PORT`]: each connection starts with one command line.
//!
//! | command | what the guest does |
//! |---|---|
//! | `control` | answers `ok netbench`, then serves the lines below until `quit` |
//! | `sink` | reads until the host shuts its side down, then answers `<bytes>` and closes |
//! | `source <ms>` | writes [`CHUNK`]-byte blocks for `<ms>` milliseconds, then closes |
//!
//! On the control connection: `begin <test>` (the guest notes its interface's counters,
//! prints `netbench: <test> start` and answers `ok`), `end <test>` (prints `netbench: <test>
//! end: <counts>` and answers the counts, a [`GuestCounts`] line: what the interface did in
//! between), `quit` (answers `bye`, prints `netbench: done` and exits).
//!
//! UDP, port [`UDP_PORT`]: datagrams tagged by their first byte, numbers little-endian.
//!
//! | datagram | meaning |
//! |---|---|
//! | `D` seq:u64, zeroes | data, [`DATAGRAM_BYTES`] bytes in all |
//! | `A` count:u64 | the receiver's count of data datagrams, after every [`ACK_EVERY`] |
//! | `R`, answered `r` | the host asks the guest to reset its count |
//! | `Q`, answered `C` count:u64 | the host asks the guest for its count |
//! | `F` ms:u32 | the host asks the guest to stream to it for `ms` milliseconds; the guest then sends `E` sent:u64, [`END_REPEATS`] times |
//!
//! A stream keeps at most [`WINDOW`] datagrams unacknowledged ([`stream`]); when the window
//! stays full for [`LOSS_WAIT`], the missing ones are taken as lost and the window opens
//! again. So both directions measure how many small frames a second the path carries
//! without overrunning one of its queues, and neither side spins sending into a full queue.
#![forbid(unsafe_code)]

pub mod counters;
pub mod guest;
pub mod host;
pub mod stream;

use std::time::Duration;

pub use counters::GuestCounts;

/// The guest's TCP port (control, sink, source).
pub const TCP_PORT: u16 = 5001;
/// The guest's UDP port (the small-datagram streams).
pub const UDP_PORT: u16 = 5002;
/// The blocks a TCP stream is written in.
pub const CHUNK: usize = 64 * 1024;
/// Bytes of a data datagram's payload: with UDP, IPv4 and Ethernet headers, a 106-byte frame.
pub const DATAGRAM_BYTES: usize = 64;
/// The frame a data datagram makes on the wire (Ethernet 14 + IPv4 20 + UDP 8 + payload).
pub const DATAGRAM_FRAME_BYTES: usize = DATAGRAM_BYTES + 42;
/// Data datagrams a stream keeps unacknowledged at most.
pub const WINDOW: u64 = 256;
/// The receiver acknowledges after this many data datagrams.
pub const ACK_EVERY: u64 = 32;
/// How long a full window may go without an acknowledgement before its datagrams are taken
/// as lost.
pub const LOSS_WAIT: Duration = Duration::from_millis(100);
/// How many times the guest sends the `E` datagram that ends its stream.
pub const END_REPEATS: usize = 3;
/// How long either side waits for an answer before giving up.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);
