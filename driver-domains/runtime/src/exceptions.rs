//! A minimal IDT: every CPU exception (vectors 0-31) prints what happened (with
//! `console_io`) and shuts the domain down with `SHUTDOWN_CRASH`, so a bug is a clear crash,
//! not a triple fault. Vector 0xF3 is the event upcall (see [`crate::events`]), taken only
//! inside a wait's `sti; hlt; cli`.
//!
//! Each stub pushes a dummy error code when the CPU pushes none, then the vector, and
//! jumps to a common path that passes the frame to [`exception_entry`]. No handler
//! returns, so the interrupted code's red zone does not matter. Vectors above 31 other
//! than the upcall have no gate (interrupts stay disabled outside waits). Nested
//! exceptions on one vCPU first skip the print, then halt.
//!
//! Printed line: `exception: vector <n> (<name>) error <code> rip <addr> cr2 <addr>
//! rsp <addr> vcpu <id>`.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU8, Ordering};

use microvisor_abi::manifest::MAX_VCPUS;
use microvisor_abi::sched::SHUTDOWN_CRASH;

use crate::console::print_direct;
use crate::{arch, events, hypercall, smp};

const CODE_SELECTOR: u16 = 0x08;
/// Present, DPL 0, 64-bit interrupt gate.
const INTERRUPT_GATE: u8 = 0x8e;

/// The frame the stubs build, lowest address first.
#[repr(C)]
pub struct ExceptionFrame {
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}
const _: () = assert!(core::mem::size_of::<Gate>() == 16);

impl Gate {
    fn interrupt(handler: u64) -> Self {
        Self {
            offset_low: handler as u16,
            selector: CODE_SELECTOR,
            ist: 0,
            type_attr: INTERRUPT_GATE,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: spin::Once<Idt> = spin::Once::new();
static DEPTH: [AtomicU8; MAX_VCPUS as usize] = [const { AtomicU8::new(0) }; MAX_VCPUS as usize];

extern "C" {
    /// 32 addresses, one stub per vector.
    static exception_stub_table: [u64; 32];
}

/// Builds the IDT (once) and loads it on the calling vCPU.
pub(crate) fn load() {
    let idt = IDT.call_once(|| {
        let mut gates = [Gate::default(); 256];
        // SAFETY: the table is initialised data in .rodata, written by the assembler
        // below and never modified.
        let stubs = unsafe { &*core::ptr::addr_of!(exception_stub_table) };
        for (gate, &stub) in gates.iter_mut().zip(stubs.iter()) {
            *gate = Gate::interrupt(stub);
        }
        gates[usize::from(events::UPCALL_VECTOR)] = Gate::interrupt(events::upcall_entry_address());
        Idt(gates)
    });
    let mut pointer = [0u8; 10];
    pointer[..2].copy_from_slice(&((core::mem::size_of::<Idt>() - 1) as u16).to_le_bytes());
    pointer[2..].copy_from_slice(&(idt as *const Idt as u64).to_le_bytes());
    // SAFETY: the IDT is 'static and never changes once built; its gates point at the stubs
    // below with the runtime's 64-bit code selector, which the GDT of every vCPU has.
    unsafe {
        asm!("lidt [{}]", in(reg) pointer.as_ptr(), options(readonly, nostack, preserves_flags))
    };
}

fn name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD error",
        20 => "#VE virtualization",
        21 => "#CP control protection",
        29 => "#VC VMM communication",
        30 => "#SX security",
        _ => "reserved",
    }
}

extern "C" fn exception_entry(frame: &ExceptionFrame) -> ! {
    let vcpu = smp::current_vcpu();
    let depth = DEPTH[(vcpu as usize).min(DEPTH.len() - 1)].fetch_add(1, Ordering::Relaxed);
    if depth == 0 {
        print_direct(format_args!(
            "exception: vector {} ({}) error {:#x} rip {:#x} cr2 {:#x} rsp {:#x} vcpu {}\n",
            frame.vector,
            name(frame.vector),
            frame.error_code,
            frame.rip,
            arch::cr2(),
            frame.rsp,
            vcpu
        ));
    }
    if depth <= 1 {
        hypercall::shutdown(SHUTDOWN_CRASH);
    }
    loop {
        // SAFETY: HLT with interrupts disabled stops this vCPU for good, which is all that
        // is left to do after a fault inside the fault path.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}

global_asm!(
    r#"
    .macro EXCEPTION_NO_ERROR vector
    .balign 16
exception_stub_\vector:
    pushq $0
    pushq $\vector
    jmp exception_common
    .endm

    .macro EXCEPTION_WITH_ERROR vector
    .balign 16
exception_stub_\vector:
    pushq $\vector
    jmp exception_common
    .endm

    .section .text.exception_stubs, "ax"
    EXCEPTION_NO_ERROR 0
    EXCEPTION_NO_ERROR 1
    EXCEPTION_NO_ERROR 2
    EXCEPTION_NO_ERROR 3
    EXCEPTION_NO_ERROR 4
    EXCEPTION_NO_ERROR 5
    EXCEPTION_NO_ERROR 6
    EXCEPTION_NO_ERROR 7
    EXCEPTION_WITH_ERROR 8
    EXCEPTION_NO_ERROR 9
    EXCEPTION_WITH_ERROR 10
    EXCEPTION_WITH_ERROR 11
    EXCEPTION_WITH_ERROR 12
    EXCEPTION_WITH_ERROR 13
    EXCEPTION_WITH_ERROR 14
    EXCEPTION_NO_ERROR 15
    EXCEPTION_NO_ERROR 16
    EXCEPTION_WITH_ERROR 17
    EXCEPTION_NO_ERROR 18
    EXCEPTION_NO_ERROR 19
    EXCEPTION_NO_ERROR 20
    EXCEPTION_WITH_ERROR 21
    EXCEPTION_NO_ERROR 22
    EXCEPTION_NO_ERROR 23
    EXCEPTION_NO_ERROR 24
    EXCEPTION_NO_ERROR 25
    EXCEPTION_NO_ERROR 26
    EXCEPTION_NO_ERROR 27
    EXCEPTION_NO_ERROR 28
    EXCEPTION_WITH_ERROR 29
    EXCEPTION_WITH_ERROR 30
    EXCEPTION_NO_ERROR 31

exception_common:
    movq %rsp, %rdi         /* &ExceptionFrame */
    andq $-16, %rsp
    call {entry}
    ud2

    .section .rodata.exception_stub_table, "a"
    .balign 8
    .global exception_stub_table
exception_stub_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exception_stub_\v
    .endr
    "#,
    entry = sym exception_entry,
    options(att_syntax)
);
