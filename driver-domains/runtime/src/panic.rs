//! The panic handler: prints `panic: <message> at <file>:<line>` (with `console_io`, never
//! through the console ring) and shuts the domain down with `SHUTDOWN_CRASH`. A panic while printing a panic skips the print.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use microvisor_abi::manifest::MAX_VCPUS;
use microvisor_abi::sched::SHUTDOWN_CRASH;

use crate::console::print_direct;
use crate::{hypercall, smp};

static PANICKING: [AtomicBool; MAX_VCPUS as usize] =
    [const { AtomicBool::new(false) }; MAX_VCPUS as usize];

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let vcpu = (smp::current_vcpu() as usize).min(PANICKING.len() - 1);
    if !PANICKING[vcpu].swap(true, Ordering::Relaxed) {
        match info.location() {
            Some(at) => print_direct(format_args!(
                "panic: {} at {}:{}\n",
                info.message(),
                at.file(),
                at.line()
            )),
            None => print_direct(format_args!("panic: {}\n", info.message())),
        }
    }
    hypercall::shutdown(SHUTDOWN_CRASH)
}
