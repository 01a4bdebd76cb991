//! The panic handler: prints `panic: <message> at <file>:<line>` and shuts the domain down
//! with `SHUTDOWN_CRASH`. A panic while printing a panic skips the print.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use microvisor_abi::manifest::MAX_VCPUS;
use microvisor_abi::sched::SHUTDOWN_CRASH;

use crate::{hypercall, println, smp};

static PANICKING: [AtomicBool; MAX_VCPUS as usize] =
    [const { AtomicBool::new(false) }; MAX_VCPUS as usize];

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let vcpu = (smp::current_vcpu() as usize).min(PANICKING.len() - 1);
    if !PANICKING[vcpu].swap(true, Ordering::Relaxed) {
        match info.location() {
            Some(at) => println!("panic: {} at {}:{}", info.message(), at.file(), at.line()),
            None => println!("panic: {}", info.message()),
        }
    }
    hypercall::shutdown(SHUTDOWN_CRASH)
}
