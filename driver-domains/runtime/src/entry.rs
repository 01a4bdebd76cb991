//! The PVH entry: from 32-bit protected mode without paging to 64-bit Rust.
//!
//! State on entry (Xen's PVH ABI, `XEN-ABI.md` §1.2): 32-bit flat CS/DS/SS, paging off,
//! IF=0, EBX = guest-physical address of `struct hvm_start_info`; no stack, no IDT.
//!
//! `pvh_start32`:
//! 1. loads a boot stack (in .bss) and keeps EBX;
//! 2. builds page tables in .bss that identity-map guest-physical 0..4 GiB with 2 MiB
//!    pages (one PML4, one PDPT, four page directories; all written here, none assumed
//!    zero), so every guest-virtual address equals its guest-physical address;
//! 3. enables PAE and SSE (CR4.PAE|OSFXSR|OSXMMEXCPT), sets EFER.LME, loads CR3, turns on
//!    paging with CR0 = PG|WP|NE|ET|MP|PE (EM and TS clear);
//! 4. loads a 64-bit GDT (0x08 code, 0x10 data) and far-jumps to 64-bit code, which
//!    initialises the FPU/SSE control state and calls `__driver_domain_start(start_info_paddr)`,
//!    which [`crate::entry!`] defines in the domain's binary and which runs `boot::start`.
//!
//! `ap_start64` is where secondary vCPUs begin (see [`crate::smp`]): the microvisor starts
//! them in 64-bit mode with CR3 = these page tables, RSP = a fresh stack top and RDI = the
//! vCPU id. The trampoline loads the same GDT, reloads the segment registers, aligns the
//! stack and calls `smp::ap_start(id)`.
//!
//! The Xen note `XEN_ELFNOTE_PHYS32_ENTRY` (type 18, 4-byte descriptor) names
//! `pvh_start32`; the link script puts section `.note.Xen` in its own PT_NOTE segment.
//!
//! Nothing here is aligned above 4096 bytes (a larger alignment breaks the image loader).

use core::arch::global_asm;

/// Size of the boot vCPU's stack, in .bss.
pub const BOOT_STACK_BYTES: usize = 64 * 1024;

// Only the addresses of these symbols are taken (which needs no `unsafe`); nothing reads them.
extern "C" {
    /// First byte of the PML4 (followed by the PDPT and the four page directories).
    static boot_page_tables: u8;
    /// Lowest byte of the boot vCPU's stack.
    static boot_stack_bottom: u8;
    /// One past the highest byte of the boot vCPU's stack.
    static boot_stack_top: u8;
    /// First instruction of a secondary vCPU.
    static ap_start64: u8;
    /// From the link script: the image's first byte and the page after its .bss.
    static __image_start: u8;
    static __image_end: u8;
}

/// Guest-physical address of the boot page tables' PML4 (the CR3 value for every vCPU).
pub fn page_tables_paddr() -> u64 {
    core::ptr::addr_of!(boot_page_tables) as u64
}

/// The boot vCPU's stack as `[bottom, top)`.
pub fn boot_stack_range() -> (u64, u64) {
    (
        core::ptr::addr_of!(boot_stack_bottom) as u64,
        core::ptr::addr_of!(boot_stack_top) as u64,
    )
}

/// Address of the 64-bit trampoline that secondary vCPUs start at.
pub fn ap_entry_address() -> u64 {
    core::ptr::addr_of!(ap_start64) as u64
}

/// The loaded image, `.bss` included, as `[start, end)`; `end` is page-aligned.
pub fn image_range() -> (u64, u64) {
    (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    )
}

global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz: "Xen\0" */
    .long 4                 /* descsz: a 32-bit entry address */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start32

    .section .bss.boot_page_tables, "aw", @nobits
    .balign 4096
    .global boot_page_tables
boot_page_tables:
    .skip 6 * 4096

    .section .bss.boot_stack, "aw", @nobits
    .balign 4096
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack_bytes}
    .global boot_stack_top
boot_stack_top:

    .section .data.boot_gdt, "aw"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9b000000ffff    /* 0x08: 64-bit code, present, accessed */
    .quad 0x00cf93000000ffff    /* 0x10: data, present, writable, accessed */
boot_gdt_end:
    .balign 8
    .word 0, 0, 0
boot_gdt_ptr:               /* limit (2 bytes) then base (8; 32-bit lgdt reads 4) */
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .rodata.boot_mxcsr, "a"
    .balign 4
boot_mxcsr:
    .long 0x1f80            /* all SSE exceptions masked, round to nearest */

    .section .text.entry, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl $boot_stack_top, %esp

    /* PML4 and PDPT: clear, then link PML4[0] -> PDPT, PDPT[0..4] -> PD0..PD3. */
    movl $boot_page_tables, %edi
    xorl %eax, %eax
    movl $(2 * 4096 / 4), %ecx
    rep stosl
    movl $(boot_page_tables + 0x1000 + 0x3), boot_page_tables
    movl $(boot_page_tables + 0x2000 + 0x3), boot_page_tables + 0x1000
    movl $(boot_page_tables + 0x3000 + 0x3), boot_page_tables + 0x1008
    movl $(boot_page_tables + 0x4000 + 0x3), boot_page_tables + 0x1010
    movl $(boot_page_tables + 0x5000 + 0x3), boot_page_tables + 0x1018

    /* PD0..PD3: 2048 entries, entry k maps k * 2 MiB (present, writable, 2 MiB page). */
    movl $(boot_page_tables + 0x2000), %edi
    xorl %ecx, %ecx
1:
    movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, (%edi, %ecx, 8)
    movl %ecx, %eax
    shrl $11, %eax
    movl %eax, 4(%edi, %ecx, 8)
    incl %ecx
    cmpl $2048, %ecx
    jb 1b

    /* CR4: PAE | OSFXSR | OSXMMEXCPT. */
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4

    movl $boot_page_tables, %eax
    movl %eax, %cr3

    /* EFER.LME */
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr

    /* CR0: PG | WP | NE | ET | MP | PE; EM, TS, CD, NW clear. */
    movl $0x80010033, %eax
    movl %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    movq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    fninit
    ldmxcsr boot_mxcsr(%rip)
    movl %ebx, %edi         /* start_info paddr, zero-extended */
    call __driver_domain_start  /* defined by driver_domains::entry! */
2:
    hlt
    jmp 2b

    .section .text.ap_start64, "ax"
    .global ap_start64
ap_start64:
    lgdt boot_gdt_ptr(%rip)
    pushq $0x08
    leaq 3f(%rip), %rax
    pushq %rax
    lretq
3:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    andq $-16, %rsp
    xorl %ebp, %ebp
    fninit
    ldmxcsr boot_mxcsr(%rip)
    call {ap_start}         /* rdi = vCPU id, as the microvisor set it */
4:
    hlt
    jmp 4b
    "#,
    stack_bytes = const BOOT_STACK_BYTES,
    ap_start = sym crate::smp::ap_start,
    options(att_syntax)
);
