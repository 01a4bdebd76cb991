//! Decoding an SVM I/O-instruction intercept (`#VMEXIT(IOIO)`, exit code 0x7B) and the
//! answer a domain gets for a port nobody gave it.
//!
//! EXITINFO1 (AMD APM vol. 2, "IOIO Intercept Information"): bit 0 TYPE (1 = IN), bit 2 STR
//! (INS/OUTS), bit 3 REP, bits 4-6 operand size (one-hot 8/16/32 bits), bits 7-9 address size
//! (one-hot 16/32/64 bits), bits 10-12 the segment of a string operand, bits 16-31 the port.
//! EXITINFO2 holds the RIP of the next instruction.
//!
//! Xen's rule for ports no device model claims, which we follow: reads return all ones
//! (except the PIT's channel 2 counter, see [`PIT_CHANNEL2`]), writes are dropped. A probe (PCI conf1 at 0xcf8, the PIT, the PIC, i8042, a UART) is not
//! an attack, so it does not crash the domain.

/// The counter of the PIT's channel 2, which nobody owns here. Reading it answers 0, not
/// all ones: Linux's `quick_pit_calibrate` (run when it knows the TSC's rate but not the
/// CPU's, as on an AMD CPU with Xen's time ABI) waits for the counter's high byte to leave
/// 0xff and reads all ones 50,000 times, twice, before giving up: about 100,000 exits and
/// 2 s of a boot under nested emulation. With 0 it gives up after a few reads, and takes
/// the TSC's rate, as it does after the long loop.
pub const PIT_CHANNEL2: u16 = 0x42;

/// One decoded I/O instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    pub port: u16,
    /// IN / INS (true) or OUT / OUTS.
    pub is_in: bool,
    /// INS / OUTS.
    pub string: bool,
    /// With a REP prefix: RCX counts the elements.
    pub rep: bool,
    /// Operand size in bytes: 1, 2 or 4.
    pub size: u8,
    /// Address size in bytes of a string operand (2, 4 or 8).
    pub address_size: u8,
}

impl IoAccess {
    /// Decodes EXITINFO1; `None` if the operand or address size is not one of the encodings.
    pub fn decode(exit_info1: u64) -> Option<Self> {
        let size = match (exit_info1 >> 4) & 0b111 {
            0b001 => 1,
            0b010 => 2,
            0b100 => 4,
            _ => return None,
        };
        let string = exit_info1 & (1 << 2) != 0;
        let address_size = match (exit_info1 >> 7) & 0b111 {
            0b001 => 2,
            0b010 => 4,
            0b100 => 8,
            _ if !string => 8,
            _ => return None,
        };
        Some(Self {
            port: (exit_info1 >> 16) as u16,
            is_in: exit_info1 & 1 != 0,
            string,
            rep: exit_info1 & (1 << 3) != 0,
            size,
            address_size,
        })
    }

    /// The mask of the address registers (RSI, RDI, RCX) for this address size.
    pub fn address_mask(&self) -> u64 {
        match self.address_size {
            2 => 0xffff,
            4 => 0xffff_ffff,
            _ => u64::MAX,
        }
    }

    /// RAX after an IN from an unclaimed port: the low `size` bytes all ones (0 for
    /// [`PIT_CHANNEL2`]), the rest of EAX kept for 8- and 16-bit reads; a 32-bit read clears
    /// bits 63:32 as hardware does.
    pub fn unclaimed_in_rax(&self, rax: u64) -> u64 {
        let fill = if self.port == PIT_CHANNEL2 {
            0
        } else {
            u64::MAX
        };
        match self.size {
            1 => (rax & !0xff) | (fill & 0xff),
            2 => (rax & !0xffff) | (fill & 0xffff),
            _ => fill & 0xffff_ffff,
        }
    }

    /// The number of elements a string instruction moves, from RCX (1 without REP).
    pub fn count(&self, rcx: u64) -> u64 {
        if self.rep {
            rcx & self.address_mask()
        } else {
            1
        }
    }

    /// A string register (RSI or RDI) after moving `elements` in direction `backwards`
    /// (RFLAGS.DF), wrapping within the address size and keeping the bits above it.
    pub fn advance(&self, register: u64, elements: u64, backwards: bool) -> u64 {
        let bytes = elements.wrapping_mul(u64::from(self.size));
        let mask = self.address_mask();
        let moved = if backwards {
            register.wrapping_sub(bytes)
        } else {
            register.wrapping_add(bytes)
        };
        (register & !mask) | (moved & mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_in_al_from_port_0x61() {
        let info = (0x61 << 16) | (1 << 4) | (1 << 9) | 1;
        let access = IoAccess::decode(info).unwrap();
        assert_eq!(
            access,
            IoAccess {
                port: 0x61,
                is_in: true,
                string: false,
                rep: false,
                size: 1,
                address_size: 8
            }
        );
        assert_eq!(
            access.unclaimed_in_rax(0x1234_5678_9abc_def0),
            0x1234_5678_9abc_deff
        );
    }

    #[test]
    fn pit_channel2_reads_zero() {
        let inb = IoAccess::decode((0x42 << 16) | (1 << 4) | (1 << 9) | 1).unwrap();
        assert_eq!((inb.port, inb.size), (PIT_CHANNEL2, 1));
        assert_eq!(
            inb.unclaimed_in_rax(0x1234_5678_9abc_def0),
            0x1234_5678_9abc_de00
        );
    }

    #[test]
    fn out_dword_and_in_word() {
        let out = IoAccess::decode((0xcf8 << 16) | (1 << 6) | (1 << 9)).unwrap();
        assert!(!out.is_in);
        assert_eq!(out.size, 4);
        assert_eq!(out.unclaimed_in_rax(u64::MAX), 0xffff_ffff);
        let word = IoAccess::decode((0xcfc << 16) | (1 << 5) | (1 << 9) | 1).unwrap();
        assert_eq!(word.unclaimed_in_rax(0xaaaa_0000), 0xaaaa_ffff);
    }

    #[test]
    fn rep_string_counts_and_advances_within_the_address_size() {
        let rep_outsb =
            IoAccess::decode((0xe9 << 16) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 8)).unwrap();
        assert!(rep_outsb.string && rep_outsb.rep);
        assert_eq!(rep_outsb.address_size, 4);
        assert_eq!(rep_outsb.count(0xdead_0000_0000_0010), 0x10);
        assert_eq!(rep_outsb.advance(0x1_ffff_fff0, 0x20, false), 0x1_0000_0010);
        assert_eq!(rep_outsb.advance(0x10, 0x20, true), 0xffff_fff0);
        let insw16 = IoAccess::decode((0x1f0 << 16) | (1 << 2) | (1 << 5) | (1 << 7) | 1).unwrap();
        assert_eq!(insw16.count(7), 1);
        assert_eq!(insw16.advance(0xabcd_fffe, 1, false), 0xabcd_0000);
    }

    #[test]
    fn bad_encodings_are_refused() {
        assert_eq!(IoAccess::decode(0), None);
        assert_eq!(IoAccess::decode((1 << 4) | (1 << 5)), None);
        assert_eq!(IoAccess::decode((1 << 2) | (1 << 4)), None);
    }
}
