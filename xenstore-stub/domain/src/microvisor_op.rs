//! `MVOP_LIST_DOMAINS` (`microvisor_abi::microvisor_op`), which the runtime does not wrap
//! yet: the one hypercall of this domain that passes a pointer the runtime does not check.

use driver_domains::hypercall;
use microvisor_abi::hypercall::MICROVISOR_OP;
use microvisor_abi::microvisor_op::{DomainEntry, MVOP_LIST_DOMAINS};

/// `microvisor_op(MVOP_LIST_DOMAINS, out, out.len())`: the live domains, at most
/// `out.len()`; returns how many were written.
pub fn list_domains(out: &mut [DomainEntry]) -> Result<usize, i64> {
    // SAFETY: the microvisor writes at most `out.len()` 48-byte `DomainEntry` records at
    // `out`, which is borrowed mutably for the call and holds exactly that many;
    // `DomainEntry` is `repr(C)` integers and bytes, valid for any bit pattern.
    let ret = unsafe {
        hypercall::raw(
            MICROVISOR_OP,
            MVOP_LIST_DOMAINS,
            out.as_mut_ptr() as u64,
            out.len() as u64,
            0,
            0,
        )
    };
    if ret < 0 {
        Err(ret)
    } else {
        Ok((ret as usize).min(out.len()))
    }
}
