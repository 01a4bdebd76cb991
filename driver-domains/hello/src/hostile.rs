//! Modes that misbehave on purpose: `rogue`, `fuzz`, `crash`, `triplefault`.

use driver_domains::abi::sched::SHUTDOWN_CRASH;
use driver_domains::{cmdline, hypercall, println, testing, BootInfo};

const ROGUE_VALUE: u64 = 0x0bad_c0de_0bad_c0de;

/// `mode=rogue target=0xADDR`: one 8-byte write to a guest-physical address.
pub fn rogue(info: &BootInfo) {
    let Some(target) = cmdline::get(info.cmdline, "target").and_then(cmdline::parse_u64) else {
        panic!("rogue: needs target=<address>");
    };
    println!("rogue: writing to {target:#x}");
    if let Err(e) = testing::write_u64_phys(info, target, ROGUE_VALUE) {
        println!("rogue: refused: {e}");
        hypercall::shutdown(SHUTDOWN_CRASH);
    }
    println!("rogue: write did not fault");
}

/// `mode=fuzz calls=N seed=S`.
pub fn fuzz(info: &BootInfo) {
    let calls = crate::arg(info, "calls", 20_000);
    let seed = crate::arg(info, "seed", 1);
    let stats = testing::fuzz_hypercalls(info, calls, seed).unwrap_or_else(|e| panic!("fuzz: {e}"));
    println!(
        "fuzz: {} calls: ok={} efault={} einval={} enosys={} other={}",
        stats.calls,
        stats.ok(),
        stats.efault,
        stats.einval,
        stats.enosys,
        stats.other()
    );
    println!(
        "fuzz: detail zero={} positive={} eperm={} other_negative={} replaced_by_yield={}",
        stats.zero, stats.positive, stats.eperm, stats.other_negative, stats.replaced
    );
    println!("fuzz: done");
}

/// `mode=crash`.
pub fn crash() -> ! {
    panic!("deliberate crash")
}

/// `mode=triplefault`.
pub fn triplefault() -> ! {
    println!("triplefault: loading an empty IDT and raising #UD");
    testing::triple_fault()
}
