//! The network backend's logic, pure and host-tested (`cargo test -p netback`):
//!
//! | module | what |
//! |---|---|
//! | [`wire`] | netif ring entries (`io/netif.h`): tx and rx requests and responses, extra-info slots, flags, statuses |
//! | [`tx`] | a frame's tx slots, copied out once, checked into a [`tx::Frame`] (sizes, fragment count, offsets within the page, extra slots) or a refusal |
//! | [`bridge`] | the L2 bridge: MAC learning, forwarding between ports, flooding, no spoofed source MACs |
//! | [`mac`] | MAC addresses: parsing `xx:xx:...`, and Xen's `00:16:3e` prefix with a suffix stable for a domain name |
//! | [`csum`] | completing the TCP/UDP checksum of a frame the guest sent with a blank one |
//! | [`gso`] | cutting a TCP/IPv4 frame of up to 64 KiB that the guest sent with a GSO extra into segments for the bridge |
//! | [`handshake`] | the vif's xenbus keys: what the back-end offers, what it reads from the front-end |
//! | [`vif`] | one connected vif over a grant-copy platform: tx frames out of the guest, rx frames into its posted pages |
//!
//! The domain binary (`src/main.rs`) drives the NIC (virtio-net through the IOMMU) and the
//! vifs' handshakes around them.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod bridge;
pub mod csum;
pub mod gso;
pub mod handshake;
/// MAC addresses (shared with the manifest compiler, which makes the stable ones).
pub use service_common::mac;
pub mod tx;
pub mod vif;
pub mod wire;
