//! Freestanding support for images built for the host target without its C library.
//!
//! The prebuilt `core` calls `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp`, and refers
//! to `rust_eh_personality` and `_Unwind_Resume` even with `panic = "abort"`. This crate
//! provides them. Copies and fills use `rep movsq`/`rep stosq` for the whole quadwords and
//! `rep movsb`/`rep stosb` for the bytes left (under QEMU's TCG each iteration of a `rep`
//! string instruction costs about the same whatever its size, so quadwords are eight times
//! fewer; LLVM cannot turn inline assembly back into a call to itself); the
//! comparisons are byte loops kept out of LLVM's idiom recognition by
//! `#[inline(never)]` plus a `core::hint::black_box` on the index.
#![no_std]

use core::hint::black_box;

/// # Safety
/// `dest` and `src` must be valid for `n` bytes and must not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid for n bytes and do not overlap;
    // `rep movsq` copies the n / 8 quadwords forwards, then `rep movsb` the n % 8 bytes
    // left, n bytes in all (DF is clear in our code and the ABI).
    unsafe {
        core::arch::asm!("rep movsq", "mov rcx, {tail}", "rep movsb",
            tail = in(reg) n % 8, inout("rcx") n / 8 => _, inout("rdi") dest => _,
            inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// `dest` and `src` must be valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when dest is below src or the ranges are disjoint.
        unsafe { memcpy(dest, src, n) };
    } else {
        // SAFETY: valid for n bytes (caller); a backward `rep movsb` (DF set, from the last
        // byte) is correct when dest is above src; DF is cleared again before returning.
        unsafe {
            core::arch::asm!("std", "rep movsb", "cld",
                inout("rcx") n => _, inout("rdi") dest.add(n).wrapping_sub(1) => _,
                inout("rsi") src.add(n).wrapping_sub(1) => _, options(nostack));
        }
    }
    dest
}

/// # Safety
/// `dest` must be valid for writes of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    // The byte in each of the eight bytes of a quadword (its low byte is `al` for the tail).
    let pattern = u64::from(value as u8) * 0x0101_0101_0101_0101;
    // SAFETY: the caller guarantees dest is valid for n bytes; `rep stosq` writes the n / 8
    // quadwords, then `rep stosb` the n % 8 bytes left: exactly n.
    unsafe {
        core::arch::asm!("rep stosq", "mov rcx, {tail}", "rep stosb",
            tail = in(reg) n % 8, inout("rcx") n / 8 => _, inout("rdi") dest => _,
            in("rax") pattern, options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller guarantees both are valid for n bytes; i < n.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i = black_box(i + 1);
    }
    0
}

/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp, passed on unchanged.
    unsafe { memcmp(a, b, n) }
}

/// Never called: images are built with `panic = "abort"`, but the prebuilt `core` refers to it.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// Never called, as above.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    loop {
        core::hint::spin_loop();
    }
}
