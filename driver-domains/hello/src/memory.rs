//! Modes about memory contents: `victim`, `dirty`, `scrubcheck`.

use alloc::vec::Vec;
use core::hint::black_box;

use driver_domains::abi::sched::SHUTDOWN_REBOOT;
use driver_domains::fuzz_policy::XorShift64;
use driver_domains::{hypercall, memory, println, time, BootInfo};

const VICTIM_BYTES: usize = 4 << 20;
const DIRTY_BYTE: u8 = 0xa5;

/// FNV-1a over the words.
fn checksum(words: &[u64]) -> u64 {
    words.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &w| {
        (hash ^ w).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `mode=victim seconds=S`: a 4 MiB pattern must survive S seconds of yielding.
pub fn victim(info: &BootInfo) {
    let seconds = crate::arg(info, "seconds", 2);
    let mut rng = XorShift64::new(0x5eed);
    let mut buffer: Vec<u64> = (0..VICTIM_BYTES / 8).map(|_| rng.next_u64()).collect();
    black_box(buffer.as_mut_ptr());
    let before = checksum(&buffer);
    println!("victim: checksum {before:016x}");
    let deadline = time::now_ns().saturating_add(seconds.saturating_mul(1_000_000_000));
    while time::now_ns() < deadline {
        hypercall::sched_yield();
    }
    black_box(buffer.as_mut_ptr());
    if checksum(black_box(&buffer)) == before {
        println!("victim: memory intact");
    } else {
        println!("victim: MEMORY CHANGED");
    }
}

/// `mode=dirty`: fills free RAM with 0xa5.
pub fn dirty(info: &BootInfo) {
    let pages = memory::fill_free_ram(info, DIRTY_BYTE);
    println!("dirty: filled {pages} pages");
}

/// `mode=scrubcheck wait_ms=W`: on the first boot fill free RAM, wait W ms and reboot; after
/// a restart, count the bytes of free RAM that are not zero.
pub fn scrubcheck(info: &BootInfo) {
    if info.domain.restarts == 0 {
        memory::fill_free_ram(info, DIRTY_BYTE);
        println!("scrubcheck: first boot, waiting");
        time::sleep_ms(crate::arg(info, "wait_ms", 100));
        hypercall::shutdown(SHUTDOWN_REBOOT);
    }
    let (pages, nonzero) = memory::scan_free_ram(info);
    println!("scrubcheck: scanned {pages} pages, {nonzero} nonzero bytes");
}
