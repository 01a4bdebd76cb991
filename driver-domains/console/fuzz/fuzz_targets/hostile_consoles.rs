//! Two domains drive the console backend through their console rings with arbitrary index
//! values and bytes, while keyboard input arrives and domains come, die and go.
//!
//! The backend must never panic, never unmap, close or notify what it does not hold (the
//! simulated platform panics if it does), hold exactly one mapping and one bound port per
//! served domain, and put only whole lines of printable ASCII (and tabs) on the UART,
//! whatever the domains write.
#![no_main]

use console_backend::backend::Backend;
use console_backend::cons_ring::{INPUT, OUTPUT};
use console_backend::sim::Sim;
use libfuzzer_sys::fuzz_target;
use microvisor_abi::microvisor_op::DOMAIN_FLAG_DYING;
use xen_ring::SharedPage;

const DOMAINS: [(u16, u32, &str); 2] = [(2, 5, "alpha"), (3, 6, "beta")];

/// Takes the next `N` bytes of input (zero-padded at the end).
fn take<const N: usize>(input: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let count = N.min(input.len());
    out[..count].copy_from_slice(&input[..count]);
    *input = &input[count..];
    out
}

fn check(backend: &Backend<Sim>, sim: &mut Sim) {
    let served = backend.served_domains();
    assert_eq!(
        sim.bound.len(),
        served.len(),
        "one bound port per served domain"
    );
    assert_eq!(
        sim.mapped.values().sum::<usize>(),
        served.len(),
        "one mapping per served domain"
    );
    let uart = core::mem::take(&mut sim.uart);
    assert!(
        uart.is_empty() || uart.ends_with(b"\r\n"),
        "UART output ends mid-line"
    );
    for (index, &byte) in uart.iter().enumerate() {
        let line_end = (byte == b'\r' && uart.get(index + 1) == Some(&b'\n'))
            || (byte == b'\n' && index > 0 && uart[index - 1] == b'\r');
        assert!(
            line_end || byte == b'\t' || (0x20..0x7f).contains(&byte),
            "byte {byte:#04x} reached the UART"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let mut sim = Sim::new();
    for (domid, port, name) in DOMAINS {
        sim.list(domid, 0, port, name);
    }
    let mut backend = Backend::new();
    backend.sync(&mut sim);
    while !input.is_empty() {
        let [op, which] = take::<2>(&mut input);
        let (domid, port, name) = DOMAINS[usize::from(which) % DOMAINS.len()];
        let page = sim.pages[&domid].clone();
        match op % 8 {
            // Raw bytes into out[] at the current producer index, published.
            0 => {
                let [length] = take::<1>(&mut input);
                let length = usize::from(length).min(input.len());
                let (bytes, rest) = input.split_at(length);
                input = rest;
                let prod = page.load_u32(OUTPUT.prod_offset);
                for (i, &byte) in bytes.iter().enumerate() {
                    let at = prod.wrapping_add(i as u32) & (OUTPUT.size_bytes - 1);
                    page.write_bytes(OUTPUT.data_offset + at as usize, &[byte]);
                }
                page.store_u32(OUTPUT.prod_offset, prod.wrapping_add(length as u32));
            }
            // Any value in any index, the backend's own included.
            1 => {
                let [field] = take::<1>(&mut input);
                let value = u32::from_le_bytes(take::<4>(&mut input));
                let offset = [
                    OUTPUT.prod_offset,
                    OUTPUT.cons_offset,
                    INPUT.prod_offset,
                    INPUT.cons_offset,
                ][usize::from(field) % 4];
                page.store_u32(offset, value);
            }
            // The domain reads all its input (a well-behaved reader).
            2 => page.store_u32(INPUT.cons_offset, page.load_u32(INPUT.prod_offset)),
            // The domain notifies its port.
            3 => {
                if let Some(local) = sim.port_of(domid) {
                    assert!(backend.service(&mut sim, local));
                }
            }
            // Keyboard input, sometimes an attach command first.
            4 => {
                let [length, attach] = take::<2>(&mut input);
                if attach % 4 == 0 {
                    let command = format!("attach {name}\r");
                    backend.uart_input(&mut sim, command.as_bytes());
                }
                let length = usize::from(length).min(input.len());
                let (bytes, rest) = input.split_at(length);
                input = rest;
                backend.uart_input(&mut sim, bytes);
            }
            // The domain dies, goes away or comes back; then a VIRQ_DOMAIN_CHANGE.
            5 => {
                let [state] = take::<1>(&mut input);
                match state % 3 {
                    0 => sim.list(domid, DOMAIN_FLAG_DYING, port, name),
                    1 => sim.unlist(domid),
                    _ => sim.list(domid, 0, port, name),
                }
                backend.sync(&mut sim);
            }
            _ => backend.tick(&mut sim),
        }
        check(&backend, &mut sim);
    }
});
