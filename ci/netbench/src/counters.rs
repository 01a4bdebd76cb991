//! What the guest's network interface did, from Linux's `/proc/net/dev` and
//! `/proc/interrupts`.

use std::fmt;

/// Counts of one interface: cumulative when read, or the change between two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestCounts {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets the interface dropped, received and sent.
    pub dropped: u64,
    /// Interrupts of the interface's driver, on every CPU: xen-netfront's event channels
    /// (named after the interface, `eth0-q0`, ...) or virtio-net's queue vectors
    /// (`virtio0-input.0`, `virtio0-output.0`).
    pub interrupts: u64,
}

impl GuestCounts {
    /// Reads `iface`'s counts from the two files' texts; `None` if `/proc/net/dev` has no
    /// such interface.
    pub fn parse(iface: &str, net_dev: &str, interrupts: &str) -> Option<Self> {
        let fields: Vec<u64> = net_dev.lines().find_map(|line| {
            let (name, rest) = line.split_once(':')?;
            (name.trim() == iface).then(|| {
                rest.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
        })?;
        // receive: bytes packets errs drop fifo frame compressed multicast,
        // transmit: bytes packets errs drop fifo colls carrier compressed.
        if fields.len() < 16 {
            return None;
        }
        Some(GuestCounts {
            rx_bytes: fields[0],
            rx_packets: fields[1],
            tx_bytes: fields[8],
            tx_packets: fields[9],
            dropped: fields[3] + fields[11],
            interrupts: interrupt_count(iface, interrupts),
        })
    }

    /// The change from `before` to `self`.
    pub fn since(&self, before: &GuestCounts) -> GuestCounts {
        GuestCounts {
            rx_packets: self.rx_packets.saturating_sub(before.rx_packets),
            rx_bytes: self.rx_bytes.saturating_sub(before.rx_bytes),
            tx_packets: self.tx_packets.saturating_sub(before.tx_packets),
            tx_bytes: self.tx_bytes.saturating_sub(before.tx_bytes),
            dropped: self.dropped.saturating_sub(before.dropped),
            interrupts: self.interrupts.saturating_sub(before.interrupts),
        }
    }

    /// Reads back what [`fmt::Display`] wrote.
    pub fn from_line(line: &str) -> Option<Self> {
        let numbers: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|part| !part.is_empty())
            .filter_map(|part| part.parse().ok())
            .collect();
        let [rx_packets, rx_bytes, tx_packets, tx_bytes, dropped, interrupts] = numbers[..] else {
            return None;
        };
        line.starts_with("rx ").then_some(GuestCounts {
            rx_packets,
            rx_bytes,
            tx_packets,
            tx_bytes,
            dropped,
            interrupts,
        })
    }
}

impl fmt::Display for GuestCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rx {} packets {} B, tx {} packets {} B, {} dropped, {} interrupts",
            self.rx_packets,
            self.rx_bytes,
            self.tx_packets,
            self.tx_bytes,
            self.dropped,
            self.interrupts
        )
    }
}

/// The interrupts of `iface`'s driver in `/proc/interrupts`, summed over the CPUs.
fn interrupt_count(iface: &str, interrupts: &str) -> u64 {
    let mut lines = interrupts.lines();
    let cpus = lines
        .next()
        .map_or(0, |header| header.split_whitespace().count());
    lines
        .filter(|line| {
            let Some(name) = line.split_whitespace().last() else {
                return false;
            };
            let queue = name
                .strip_prefix(iface)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'));
            let virtio = name.starts_with("virtio")
                && (name.contains("-input.") || name.contains("-output."));
            queue || virtio
        })
        .map(|line| {
            line.split_whitespace()
                .skip(1)
                .take(cpus)
                .filter_map(|count| count.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0: 1500000    1000    0    3    0     0          0         0    64000     500    0    4    0     0       0          0
";

    const XEN_INTERRUPTS: &str = "           CPU0       CPU1
  24:        100         20  xen-dyn    -event     eth0-q0
  25:          7          1  xen-dyn    -event     eth0-q1
  26:         50          0  xen-dyn    -event     blkif
 NMI:          0          0   Non-maskable interrupts
";

    const VIRTIO_INTERRUPTS: &str = "           CPU0       CPU1
  40:          0          0  IR-PCI-MSIX-0000:00:04.0   0-edge      virtio0-config
  41:        300          5  IR-PCI-MSIX-0000:00:04.0   1-edge      virtio0-input.0
  42:          2         40  IR-PCI-MSIX-0000:00:04.0   2-edge      virtio0-output.0
";

    #[test]
    fn counts_come_from_proc() {
        let xen = GuestCounts::parse("eth0", NET_DEV, XEN_INTERRUPTS).unwrap();
        assert_eq!(
            xen,
            GuestCounts {
                rx_packets: 1000,
                rx_bytes: 1_500_000,
                tx_packets: 500,
                tx_bytes: 64000,
                dropped: 7,
                interrupts: 128,
            }
        );
        let virtio = GuestCounts::parse("eth0", NET_DEV, VIRTIO_INTERRUPTS).unwrap();
        assert_eq!(virtio.interrupts, 347);
        assert!(GuestCounts::parse("eth1", NET_DEV, XEN_INTERRUPTS).is_none());
    }

    #[test]
    fn a_line_reads_back() {
        let counts = GuestCounts::parse("eth0", NET_DEV, XEN_INTERRUPTS).unwrap();
        let line = counts.to_string();
        assert_eq!(GuestCounts::from_line(&line), Some(counts));
        assert_eq!(counts.since(&counts), GuestCounts::default());
        assert!(GuestCounts::from_line("ok").is_none());
    }
}
