//! The network backend's logic, pure and host-tested (`cargo test -p netback`):
//!
//! | module | what |
//! |---|---|
//! | [`wire`] | netif ring entries (`io/netif.h`): tx and rx requests and responses, extra-info slots, flags, statuses |
//! | [`tx`] | a frame's tx slots, copied out once, checked into a [`tx::Frame`] (sizes, fragment count, offsets within the page, extra slots) or a refusal |
//! | [`bridge`] | the L2 bridge: MAC learning, forwarding between ports, flooding, no spoofed source MACs |
//! | [`mac`] | MAC addresses: parsing `xx:xx:...`, and Xen's `00:16:3e` prefix with a suffix stable for a domain name |
//!
//! The domain binary (virtio-net through the IOMMU, the vif handshake, grant copies) is not
//! written yet.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod bridge;
pub mod mac;
pub mod tx;
pub mod wire;
