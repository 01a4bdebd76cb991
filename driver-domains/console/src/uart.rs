//! The 16550 UARTs' registers as the backend uses them: COM1 at I/O port 0x3f8 (the
//! labelled log) and COM2 at 0x2f8 (the attach line, [`crate::attach`]). The microvisor
//! programmed COM1 at boot (115200 8N1, FIFOs on, interrupts off) and is its one writer;
//! the backend programs COM2 itself the same way ([`INIT`]) and writes it directly. Both
//! are polled: a byte while data is ready, and on COM2 a byte while the transmitter has
//! room. The port accesses themselves are in the binary; this module is pure.

/// COM1's base I/O port.
pub const COM1: u16 = 0x3f8;
/// COM2's base I/O port.
pub const COM2: u16 = 0x2f8;
/// A UART's registers span 8 ports from its base.
pub const REGISTERS: u16 = 8;
/// Receive buffer (read) and transmit holding register (write), offset 0; with
/// `LCR_DLAB` set, the divisor's low byte.
pub const DATA: u16 = 0;
/// Interrupt enable, offset 1 (0: none; the backend polls).
pub const INTERRUPT_ENABLE: u16 = 1;
/// FIFO control (write), offset 2.
pub const FIFO_CONTROL: u16 = 2;
/// Line control, offset 3.
pub const LINE_CONTROL: u16 = 3;
/// Modem control, offset 4.
pub const MODEM_CONTROL: u16 = 4;
/// Line status register, offset 5.
pub const LINE_STATUS: u16 = 5;
/// Scratch register, offset 7: holds what is written, which tells a UART from no device.
pub const SCRATCH: u16 = 7;
/// Line status: a received byte is ready.
pub const LSR_DATA_READY: u8 = 0x01;
/// Line status: the transmitter takes a byte.
pub const LSR_THR_EMPTY: u8 = 0x20;
/// Most bytes read from a UART in one poll.
pub const READ_BURST: usize = 64;
/// Most bytes written to COM2 in one call, so that a fast client cannot hold the backend.
pub const WRITE_BURST: usize = 4096;
/// What the probe writes to the scratch register and expects back.
pub const PROBE: u8 = 0x5a;

/// The register writes that program a UART as the microvisor programs COM1: interrupts
/// off, 115200 baud (divisor 1), 8N1, FIFOs on and cleared, DTR and RTS.
pub const INIT: [(u16, u8); 7] = [
    (INTERRUPT_ENABLE, 0x00),
    (LINE_CONTROL, 0x80),
    (DATA, 0x01),
    (INTERRUPT_ENABLE, 0x00),
    (LINE_CONTROL, 0x03),
    (FIFO_CONTROL, 0xc7),
    (MODEM_CONTROL, 0x03),
];

/// Whether a UART answers at a base: its scratch register gave back [`PROBE`] and its line
/// status is not all ones (what a port nobody decodes reads as).
pub fn present(scratch_read_back: u8, line_status: u8) -> bool {
    scratch_read_back == PROBE && line_status != 0xff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_ends_with_the_divisor_latch_off_and_the_registers_in_range() {
        assert!(INIT.iter().all(|&(register, _)| register < REGISTERS));
        let last_lcr = INIT
            .iter()
            .rev()
            .find(|&&(r, _)| r == LINE_CONTROL)
            .unwrap();
        assert_eq!(last_lcr.1 & 0x80, 0);
    }

    #[test]
    fn no_device_is_not_a_uart() {
        assert!(present(PROBE, 0x60));
        assert!(!present(0xff, 0xff));
        assert!(!present(PROBE, 0xff));
    }
}
