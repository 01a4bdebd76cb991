//! Domain console output (`console_io` write): bytes are collected per domain into lines and
//! each complete line goes to the debug console labelled with the domain's name. A line
//! longer than the buffer is split. The console backend domain serves the domains with a
//! console ring and writes their lines, labelled, through here, so the microvisor stays the
//! UART's only writer.
//!
//! The domain table's lock is held only to move bytes into the domain's line buffer and to
//! take out the lines completed; the UART, which is slow (about 1 ms a line at 115200 baud),
//! is written after it is released, so one domain's output never holds up the others'
//! hypercalls and scheduling.

use heapless::Vec;

use crate::domain::DOMAINS;

/// One `console_io` write: at most `CONSOLEIO_MAX_BYTES` bytes, each line ending in `\n`,
/// plus the domain's partial line from before, plus one separator per split line.
const OUT_BYTES: usize = 2 * microvisor_abi::hypercall::CONSOLEIO_MAX_BYTES as usize + 256;

pub fn write(slot: usize, bytes: &[u8]) {
    let mut out: Vec<u8, OUT_BYTES> = Vec::new();
    let name = {
        let mut table = DOMAINS.lock();
        let Some(domain) = table[slot].as_mut() else {
            return;
        };
        let mut finish = |line: &mut Vec<u8, _>| {
            // Cannot overflow: the input is bounded and every byte lands in `out` at most once
            // with at most one separator per line of at least one byte or one `\n` input byte.
            let _ = out.extend_from_slice(line);
            let _ = out.push(b'\n');
            line.clear();
        };
        for &byte in bytes {
            match byte {
                b'\n' => finish(&mut domain.console),
                b'\r' => {}
                _ => {
                    if domain.console.push(byte).is_err() {
                        finish(&mut domain.console);
                        let _ = domain.console.push(byte);
                    }
                }
            }
        }
        // The console domain's lines are labelled already.
        (!crate::domain::is_console_service(domain.spec_index)).then(|| domain.name.clone())
    };
    if let Some(body) = out.strip_suffix(b"\n") {
        for line in body.split(|&b| b == b'\n') {
            crate::serial::domain_line(name.as_deref(), line);
        }
    }
}
