//! MAC addresses: `xx:xx:xx:xx:xx:xx` text, and the address a vif gets when its manifest
//! line names none: Xen's `00:16:3e` prefix, then three bytes derived from the domain's
//! name and the vif's index (the first of them below 0x80, as `xl` makes them), so a domain
//! keeps its address across reboots and builds.

use core::fmt;

/// Xen's organisationally unique identifier.
pub const XEN_OUI: [u8; 3] = [0x00, 0x16, 0x3e];

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Parses `xx:xx:xx:xx:xx:xx` (hex digits, either case); `None` for anything else.
    pub fn parse(text: &str) -> Option<Mac> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(bytes))
    }

    /// Group (multicast or broadcast) addresses have bit 0 of the first byte set.
    pub fn is_group(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// The address of vif `index` of the domain called `name`.
    pub fn for_domain(name: &str, index: u32) -> Mac {
        // FNV-1a over the name, a separator and the index.
        let mut hash: u32 = 0x811c_9dc5;
        for byte in name.bytes().chain([0]).chain(index.to_le_bytes()) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        let [a, b, c, _] = hash.to_le_bytes();
        Mac([XEN_OUI[0], XEN_OUI[1], XEN_OUI[2], a & 0x7f, b, c])
    }

    /// The destination address of an Ethernet frame (its first six bytes).
    pub fn destination(frame: &[u8]) -> Option<Mac> {
        Some(Mac(frame.get(0..6)?.try_into().ok()?))
    }

    /// The source address of an Ethernet frame (bytes 6..12).
    pub fn source(frame: &[u8]) -> Option<Mac> {
        Some(Mac(frame.get(6..12)?.try_into().ok()?))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn addresses_parse_and_print() {
        let mac = Mac::parse("00:16:3E:0a:ff:01").unwrap();
        assert_eq!(mac.0, [0, 0x16, 0x3e, 0x0a, 0xff, 0x01]);
        assert_eq!(format!("{mac}"), "00:16:3e:0a:ff:01");
        for bad in [
            "",
            "00:16:3e:0a:ff",
            "00:16:3e:0a:ff:01:02",
            "0:16:3e:0a:ff:01",
            "zz:16:3e:0a:ff:01",
            "00-16-3e-0a-ff-01",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
        assert!(Mac::BROADCAST.is_group() && Mac::parse("01:00:5e:00:00:01").unwrap().is_group());
        assert!(!mac.is_group());
    }

    #[test]
    fn domain_addresses_are_stable_xen_unicast_and_distinct() {
        let a = Mac::for_domain("linux", 0);
        assert_eq!(a, Mac::for_domain("linux", 0));
        assert_eq!(a.0[..3], XEN_OUI);
        assert!(a.0[3] < 0x80 && !a.is_group());
        assert_ne!(a, Mac::for_domain("linux", 1));
        assert_ne!(a, Mac::for_domain("linux2", 0));
    }
}
