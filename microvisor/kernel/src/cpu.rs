//! Per-CPU descriptor tables: a GDT with a TSS (IST1 for exceptions, IST2 for #DF, NMI and
//! #MC), and the shared IDT.
//!
//! The host runs with IF=0 except inside `idle_wait` and around VMRUN (`sti; vmrun` ...
//! `stgi; cli`). Interrupt vectors (32 and up) run on the stack they interrupt, without an
//! IST switch, so taking one never reads the TSS: from #VMEXIT to the host's `vmload`, TR
//! still names the guest's TSS, and an IST pointer read there would be the guest's (see
//! `build_idt`). Both places where IF=1 are asm that Rust keeps no red-zone data across.
//! An exception in the microvisor is a bug: it prints an epitaph and stops the machine.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::{lidt, load_tss};
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::{tss::TaskStateSegment, DescriptorTablePointer};
use x86_64::VirtAddr;

pub const MAX_CPUS: usize = 16;
const IST_STACK_BYTES: usize = 16 * 1024;
pub const AP_STACK_BYTES: usize = 256 * 1024;

/// Vector of the LAPIC timer (scheduler tick and idle wake-up).
pub const TIMER_VECTOR: u8 = 0xf0;
/// Vector of the IPI that makes a CPU leave its guest (handled like any other interrupt:
/// acknowledged, and the INTR exit makes the scheduler look again).
pub const KICK_VECTOR: u8 = 0xf1;
/// Vector of the LAPIC spurious interrupt.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// The code selector of the IDT's gates: the first descriptor `init_this_cpu` appends.
const KERNEL_CS: u16 = 0x08;

struct CpuTables {
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
}

#[repr(C, align(16))]
struct Stack<const N: usize>([u8; N]);

/// Storage that each CPU touches only at its own index, during its own bring-up.
struct PerCpu<T>(UnsafeCell<[T; MAX_CPUS]>);
// SAFETY: CPU i only ever accesses element i (see `init_this_cpu`), so there is no sharing.
unsafe impl<T> Sync for PerCpu<T> {}

static TABLES: PerCpu<CpuTables> = PerCpu(UnsafeCell::new(
    [const {
        CpuTables {
            gdt: GlobalDescriptorTable::new(),
            tss: TaskStateSegment::new(),
        }
    }; MAX_CPUS],
));
static IST_STACKS: PerCpu<Stack<IST_STACK_BYTES>> = PerCpu(UnsafeCell::new(
    [const { Stack([0; IST_STACK_BYTES]) }; MAX_CPUS],
));
/// A second IST stack, only for #DF, NMI and #MC: if something ever goes wrong on IST1 (an
/// exception inside an interrupt handler), the double fault still has a clean stack and
/// prints its epitaph instead of turning into a silent triple fault.
static IST2_STACKS: PerCpu<Stack<IST_STACK_BYTES>> = PerCpu(UnsafeCell::new(
    [const { Stack([0; IST_STACK_BYTES]) }; MAX_CPUS],
));
static AP_STACKS: PerCpu<Stack<AP_STACK_BYTES>> = PerCpu(UnsafeCell::new(
    [const { Stack([0; AP_STACK_BYTES]) }; MAX_CPUS],
));

#[repr(C, align(16))]
struct Idt([u64; 512]);
struct IdtCell(UnsafeCell<Idt>);
// SAFETY: written once by the bootstrap CPU before any other CPU loads it, read-only after.
unsafe impl Sync for IdtCell {}
static IDT: IdtCell = IdtCell(UnsafeCell::new(Idt([0; 512])));
static IDT_BUILT: AtomicBool = AtomicBool::new(false);

extern "C" {
    static exc_stub_table: [u64; 32];
    static device_irq_stub_table: [u64; 16];
    fn timer_stub();
    fn spurious_stub();
    fn other_irq_stub();
}

/// Top of the main stack for application processor `cpu` (its RSP when it leaves the trampoline).
pub fn ap_stack_top(cpu: usize) -> u64 {
    assert!(cpu < MAX_CPUS);
    // SAFETY: only the address is computed; the stack is used by that AP alone.
    unsafe { (*AP_STACKS.0.get()).as_ptr().add(cpu) as u64 + AP_STACK_BYTES as u64 }
}

fn idt_entry(handler: u64, ist: u64) -> (u64, u64) {
    let low = (handler & 0xffff)
        | (u64::from(KERNEL_CS) << 16)
        | (ist << 32)
        | (0x8eu64 << 40) // present, DPL0, 64-bit interrupt gate
        | ((handler >> 16) & 0xffff) << 48;
    (low, handler >> 32)
}

/// Build the IDT (bootstrap CPU, once).
pub fn build_idt() {
    // SAFETY: runs once on the bootstrap CPU before any CPU loads the IDT; the stub table is
    // an immutable array of code addresses from the global_asm below.
    unsafe {
        let idt = &mut *IDT.0.get();
        for (vector, slot) in idt.0.chunks_exact_mut(2).enumerate() {
            let handler = match vector {
                0..=31 => exc_stub_table[vector],
                v if (0x30..0x40).contains(&v) => device_irq_stub_table[v - 0x30],
                v if v == usize::from(TIMER_VECTOR) => timer_stub as *const () as u64,
                v if v == usize::from(SPURIOUS_VECTOR) => spurious_stub as *const () as u64,
                _ => other_irq_stub as *const () as u64,
            };
            // #DF, NMI and #MC on IST2, other exceptions on IST1. Interrupts take no IST: a
            // CPU that delivers one between #VMEXIT and the host's `vmload` (GIF should hold
            // it off; QEMU's multi-threaded TCG does not always) would otherwise load RSP
            // from the guest's TSS, push onto whatever memory that names, and triple fault.
            let ist = match vector {
                2 | 8 | 18 => 2,
                0..=31 => 1,
                _ => 0,
            };
            let (low, high) = idt_entry(handler, ist);
            slot[0] = low;
            slot[1] = high;
        }
    }
    IDT_BUILT.store(true, Ordering::Release);
}

/// Load this CPU's GDT, TSS (with its IST1 and IST2 stacks) and the shared IDT. Runs once
/// per CPU.
pub fn init_this_cpu(cpu: usize) {
    assert!(cpu < MAX_CPUS && IDT_BUILT.load(Ordering::Acquire));
    // SAFETY: CPU `cpu` is the only one touching element `cpu` of TABLES, IST_STACKS and
    // IST2_STACKS, and only here, once; the statics live for ever.
    let (tables, ist1_top, ist2_top): (&'static mut CpuTables, u64, u64) = unsafe {
        (
            &mut (*TABLES.0.get())[cpu],
            (*IST_STACKS.0.get()).as_ptr().add(cpu) as u64 + IST_STACK_BYTES as u64,
            (*IST2_STACKS.0.get()).as_ptr().add(cpu) as u64 + IST_STACK_BYTES as u64,
        )
    };
    let CpuTables { gdt, tss } = tables;
    tss.interrupt_stack_table[0] = VirtAddr::new(ist1_top);
    tss.interrupt_stack_table[1] = VirtAddr::new(ist2_top);
    let code = gdt.append(Descriptor::kernel_code_segment());
    assert_eq!(code.0, KERNEL_CS);
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss = gdt.append(Descriptor::tss_segment(tss));
    let gdt: &'static GlobalDescriptorTable = gdt;
    gdt.load();
    let idt = DescriptorTablePointer {
        limit: 4095,
        base: VirtAddr::from_ptr(IDT.0.get()),
    };
    // SAFETY: (1) the GDT just loaded holds valid 64-bit code, data and TSS descriptors and
    // lives for ever; (2) reloading CS via far return keeps executing the same code with an
    // equivalent selector; (3) the IDT is built (IDT_BUILT) and static, its gates use `code`.
    unsafe {
        CS::set_reg(code);
        DS::set_reg(data);
        ES::set_reg(data);
        SS::set_reg(data);
        load_tss(tss);
        lidt(&idt);
    }
}

/// The register frame an exception stub hands to Rust.
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

#[no_mangle]
extern "C" fn exception_rust(frame: &ExceptionFrame) -> ! {
    crate::serial::force_log(format_args!(
        "PANIC on cpu {}: exception {} (error {:#x}) at rip {:#x}, rsp {:#x}, cr2 {:#x}",
        crate::lapic::current_cpu_index(),
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.rsp,
        x86_64::registers::control::Cr2::read_raw()
    ));
    crate::arch::machine_exit(crate::arch::ExitCode::Panic)
}

core::arch::global_asm!(
    r#"
    .section .text.interrupts, "ax"
    .irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
exc_stub_\v:
    pushq $0
    pushq $\v
    jmp exc_common
    .endr
    .irp v, 8,10,11,12,13,14,17,21,29,30
exc_stub_\v:
    pushq $\v
    jmp exc_common
    .endr
exc_common:
    movq %rsp, %rdi
    andq $-16, %rsp
    call exception_rust
    .global timer_stub
timer_stub:
    pushq %rax
    movabsq $0xfee000b0, %rax
    movl $0, (%rax)
    popq %rax
    iretq
    .global other_irq_stub
other_irq_stub:
    pushq %rax
    movabsq $0xfee000b0, %rax
    movl $0, (%rax)
    popq %rax
    iretq
    .global spurious_stub
spurious_stub:
    iretq

    /* Device interrupts (MSI-X of passthrough functions): note the vector, acknowledge. */
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
device_irq_stub_\v:
    lock btsq $\v, DEVICE_IRQ_PENDING(%rip)
    pushq %rax
    movabsq $0xfee000b0, %rax
    movl $0, (%rax)
    popq %rax
    iretq
    .endr

    .section .rodata.exc_table, "a"
    .balign 8
    .global exc_stub_table
exc_stub_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exc_stub_\v
    .endr
    .global device_irq_stub_table
device_irq_stub_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .quad device_irq_stub_\v
    .endr
"#,
    options(att_syntax)
);
