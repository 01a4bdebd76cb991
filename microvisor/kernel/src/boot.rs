//! Boot code: the Multiboot1 header, the 32-bit entry that switches the bootstrap CPU to
//! long mode, and the real-mode trampoline that brings the other CPUs to the same state.
//!
//! Memory at entry (QEMU's Multiboot1 loader): EAX = 0x2BADB002, EBX = physical address of
//! the Multiboot information, protected mode, paging off, no usable stack.
//! The host identity-maps physical 0..4 GiB with 2 MiB pages (writable, cacheable; the
//! MMIO pages of the LAPIC, IOMMU and ECAM live below 4 GiB and TCG ignores cache types).
//! CR4 gets PAE, OSFXSR and OSXMMEXCPT and CR0 gets MP and NE before any Rust code runs,
//! because the prebuilt `core` uses SSE (see BUILD-NOTES).

/// Physical address the AP trampoline is copied to (page 8, below 1 MiB, kept from the
/// frame allocator). The SIPI vector is this address >> 12.
pub const TRAMPOLINE_PA: u64 = 0x8000;

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_stack_slot: u8;
}

/// The trampoline code as bytes, to be copied to [`TRAMPOLINE_PA`].
pub fn trampoline_bytes() -> &'static [u8] {
    // SAFETY: both symbols delimit the trampoline in .text (defined in the global_asm below,
    // start before end, same section); the bytes are immutable code.
    unsafe {
        let start = core::ptr::addr_of!(ap_trampoline_start);
        let end = core::ptr::addr_of!(ap_trampoline_end);
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}

/// Offset of the 8-byte stack-top slot inside the trampoline.
pub fn trampoline_stack_slot_offset() -> usize {
    core::ptr::addr_of!(ap_stack_slot) as usize - core::ptr::addr_of!(ap_trampoline_start) as usize
}

core::arch::global_asm!(
    r#"
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00010002
    .set CR4_BITS, 0x620          /* PAE | OSFXSR | OSXMMEXCPT */
    .set CR0_BITS, 0x80010023     /* PG | WP | NE | MP | PE */
    .set EFER_MSR, 0xC0000080

    .section .multiboot, "a"
    .balign 4
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long mb_header
    .long __image_start
    .long __load_end
    .long __image_end
    .long _start32

    .section .text.boot, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    movl %eax, mb_magic
    movl %ebx, mb_info
    movl $boot_stack_top, %esp

    /* zero the boot page tables (6 pages) */
    movl $boot_pml4, %edi
    xorl %eax, %eax
    movl $(6 * 1024), %ecx
    rep stosl

    /* PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3; PDn[j] -> 2 MiB page */
    movl $boot_pdpt, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $3, %eax
    movl $boot_pdpt, %edi
    movl $4, %ecx
1:  movl %eax, (%edi)
    addl $4096, %eax
    addl $8, %edi
    loop 1b
    movl $boot_pd, %edi
    movl $0x83, %eax          /* present | writable | 2 MiB */
    xorl %edx, %edx
    movl $2048, %ecx
2:  movl %eax, (%edi)
    movl %edx, 4(%edi)
    addl $0x200000, %eax
    adcl $0, %edx
    addl $8, %edi
    loop 2b

    movl %cr4, %eax
    orl $CR4_BITS, %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $EFER_MSR, %ecx
    rdmsr
    orl $0x100, %eax          /* LME */
    wrmsr
    movl %cr0, %eax
    andl $~0x4, %eax          /* EM off */
    orl $CR0_BITS, %eax
    movl %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $start64

    .code64
start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp
    movl mb_magic(%rip), %edi
    movl mb_info(%rip), %esi
    call bsp_main
3:  hlt
    jmp 3b

    /* ---- AP trampoline, copied to 0x8000 and entered in real mode by SIPI ---- */
    .set TB, 0x8000
    .code16
    .global ap_trampoline_start
ap_trampoline_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl (TB + ap_gdt_ptr - ap_trampoline_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(TB + ap_prot - ap_trampoline_start)
    .code32
ap_prot:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $CR4_BITS, %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $EFER_MSR, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    andl $~0x4, %eax
    orl $CR0_BITS, %eax
    movl %eax, %cr0
    ljmp $0x18, $(TB + ap_long - ap_trampoline_start)
    .code64
ap_long:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq (TB + ap_stack_slot - ap_trampoline_start), %rsp
    movabsq $ap_main, %rax
    call *%rax
4:  hlt
    jmp 4b
    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF      /* 0x08: 32-bit code */
    .quad 0x00CF92000000FFFF      /* 0x10: data */
    .quad 0x00AF9A000000FFFF      /* 0x18: 64-bit code */
ap_gdt_ptr:
    .word 31
    .long TB + ap_gdt - ap_trampoline_start
    .balign 8
    .global ap_stack_slot
ap_stack_slot:
    .quad 0
    .global ap_trampoline_end
ap_trampoline_end:

    .section .rodata.boot_gdt, "a"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF      /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF      /* 0x10: data */
boot_gdt_ptr:
    .word 23
    .quad boot_gdt

    .section .data.boot, "aw"
    .balign 4
mb_magic: .long 0
mb_info:  .long 0

    .section .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4 * 4096
boot_stack: .skip 256 * 1024
boot_stack_top:
"#,
    options(att_syntax)
);
