//! The 16550 UART's registers as the backend uses them (COM1 at I/O port 0x3f8). The
//! microvisor programmed the UART at boot (115200 8N1, FIFOs on, interrupts off); the
//! backend only reads, polling: a byte while data is ready. (Its output goes through the
//! microvisor, the UART's one writer.) The port accesses themselves are in the binary.

/// COM1's base I/O port.
pub const COM1: u16 = 0x3f8;
/// Receive buffer (read), offset 0.
pub const DATA: u16 = 0;
/// Line status register, offset 5.
pub const LINE_STATUS: u16 = 5;
/// Line status: a received byte is ready.
pub const LSR_DATA_READY: u8 = 0x01;
/// Most bytes read from the UART in one poll.
pub const READ_BURST: usize = 64;
