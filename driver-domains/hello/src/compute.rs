//! Modes that compute: `primes` (heap), `hcbench` (hypercall round trips).

use alloc::vec;
use core::hint::black_box;

use driver_domains::abi::version::XENVER_VERSION;
use driver_domains::{hypercall, println, time, BootInfo};

/// The number of primes below `limit` (sieve of Eratosthenes).
fn count_primes(limit: usize) -> usize {
    if limit < 3 {
        return 0;
    }
    let mut composite = vec![false; limit];
    let mut count = 0;
    for n in 2..limit {
        if composite[n] {
            continue;
        }
        count += 1;
        let mut multiple = n.saturating_mul(n);
        while multiple < limit {
            composite[multiple] = true;
            multiple += n;
        }
    }
    count
}

/// `mode=primes limit=N`.
pub fn primes(info: &BootInfo) {
    let limit = crate::arg(info, "limit", 100_000);
    let size =
        usize::try_from(limit).unwrap_or_else(|_| panic!("primes: limit {limit} is too large"));
    println!("primes: {} primes below {}", count_primes(size), limit);
}

#[inline(never)]
fn plain_work(x: u64) -> u64 {
    x.rotate_left(7) ^ 0x5555_5555
}

/// `mode=hcbench calls=N`.
pub fn hcbench(info: &BootInfo) {
    let calls = crate::arg(info, "calls", 10_000);
    let start = time::now_ns();
    for _ in 0..calls {
        black_box(hypercall::xen_version(XENVER_VERSION, &mut []));
    }
    let hypercall_ns = time::now_ns() - start;
    let start = time::now_ns();
    for i in 0..calls {
        black_box(plain_work(black_box(i)));
    }
    let plain_ns = time::now_ns() - start;
    let rate = (u128::from(calls) * 1_000_000_000)
        .checked_div(u128::from(hypercall_ns))
        .unwrap_or(0);
    println!(
        "hcbench: {} hypercalls in {} us ({} per second); plain loop {} us",
        calls,
        hypercall_ns / 1000,
        rate,
        plain_ns / 1000
    );
}
