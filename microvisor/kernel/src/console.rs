//! Domain console output (`console_io` write): bytes are collected per domain into lines and
//! each complete line goes to the debug console labelled with the domain's name. A line
//! longer than the buffer is split. The console backend domain of a later issue takes this
//! over for domains with a console ring; the microvisor's own log always stays here.

use crate::domain::DOMAINS;

pub fn write(slot: usize, bytes: &[u8]) {
    let mut table = DOMAINS.lock();
    let Some(domain) = table[slot].as_mut() else { return };
    for &byte in bytes {
        if byte == b'\n' {
            crate::serial::domain_line(&domain.name, &domain.console);
            domain.console.clear();
            continue;
        }
        if byte == b'\r' {
            continue;
        }
        if domain.console.push(byte).is_err() {
            crate::serial::domain_line(&domain.name, &domain.console);
            domain.console.clear();
            let _ = domain.console.push(byte);
        }
    }
}
