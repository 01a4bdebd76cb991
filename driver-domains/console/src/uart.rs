//! The 16550 UART's registers as the backend uses them (COM1 at I/O port 0x3f8). The
//! microvisor programmed the UART at boot (115200 8N1, FIFOs on, interrupts off); the
//! backend only polls: it writes a byte when the transmitter holding register is empty and
//! reads one while data is ready. The port accesses themselves are in the binary.

/// COM1's base I/O port.
pub const COM1: u16 = 0x3f8;
/// Receive buffer (read) / transmit holding register (write), offset 0.
pub const DATA: u16 = 0;
/// Line status register, offset 5.
pub const LINE_STATUS: u16 = 5;
/// Line status: a received byte is ready.
pub const LSR_DATA_READY: u8 = 0x01;
/// Line status: the transmit holding register is empty.
pub const LSR_THR_EMPTY: u8 = 0x20;
/// How many status polls a byte may wait for the transmitter before it is dropped (a
/// missing or wedged UART must not hang the backend).
pub const TRANSMIT_SPINS: u32 = 100_000;
/// Most bytes read from the UART in one poll.
pub const READ_BURST: usize = 64;
