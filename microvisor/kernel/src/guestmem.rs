//! A domain's guest-physical memory as the microvisor reaches it: through the domain's own
//! nested page table, so a guest pointer can only ever name that domain's frames. Bytes are
//! copied, never borrowed (the guest may change them concurrently), and fetched once
//! ([`mem::read_phys_once`]); hypercall arguments are read through [`GuestAccess::read_arg`].

use microvisor_core::guest_arg::{self, GuestArg};
use microvisor_core::pagewalk::{self, Access, GuestPhysMemory, PagingMode, WalkError};

use crate::mem::{self, PAGE_SIZE};
use crate::npt::NptView;
use crate::svm::{save, Vmcb};

pub struct GuestMemory {
    npt: NptView,
}

impl GuestMemory {
    pub fn new(npt: NptView) -> Self {
        Self { npt }
    }

    fn for_each_page(
        &self,
        gpa: u64,
        len: usize,
        writing: bool,
        mut f: impl FnMut(u64, usize, usize),
    ) -> bool {
        let mut done = 0usize;
        while done < len {
            let Some(at) = gpa.checked_add(done as u64) else {
                return false;
            };
            let chunk = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(len - done);
            let Some(hpa) = self.npt.translate(at) else {
                return false;
            };
            if writing && !self.npt.is_writable(at) {
                return false;
            }
            f(hpa, done, chunk);
            done += chunk;
        }
        true
    }
}

impl GuestPhysMemory for GuestMemory {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let mut bytes = [0u8; 8];
        self.read(gpa, &mut bytes)
            .then(|| u64::from_le_bytes(bytes))
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        // Check the whole range first so nothing is half-read on failure.
        if !self.for_each_page(gpa, buf.len(), false, |_, _, _| {}) {
            return false;
        }
        self.for_each_page(gpa, buf.len(), false, |hpa, off, len| {
            mem::read_phys_once(hpa, &mut buf[off..off + len])
        })
    }

    fn write(&mut self, gpa: u64, buf: &[u8]) -> bool {
        if !self.for_each_page(gpa, buf.len(), true, |_, _, _| {}) {
            return false;
        }
        self.for_each_page(gpa, buf.len(), true, |hpa, off, len| {
            mem::write_phys(hpa, &buf[off..off + len])
        })
    }
}

pub fn paging_mode(vmcb: Vmcb) -> PagingMode {
    PagingMode {
        cr0: vmcb.read64(save::CR0),
        cr3: vmcb.read64(save::CR3),
        cr4: vmcb.read64(save::CR4),
        efer: vmcb.read64(save::EFER),
    }
}

/// The current address space of the vCPU whose VMCB this is: its page tables, then its
/// domain's nested page table.
pub fn of_vcpu(vmcb: Vmcb) -> GuestAccess {
    GuestAccess {
        memory: GuestMemory::new(NptView::from_root(vmcb.read64(crate::svm::control::N_CR3))),
        mode: paging_mode(vmcb),
    }
}

/// Copies between a vCPU's virtual address space and the microvisor.
pub struct GuestAccess {
    pub memory: GuestMemory,
    pub mode: PagingMode,
}

impl GuestAccess {
    /// Copies the argument struct at `gva` out of the guest once and decodes the copy.
    pub fn read_arg<T: GuestArg>(&self, gva: u64) -> Result<T, WalkError> {
        guest_arg::read(&self.memory, &self.mode, gva)
    }

    pub fn read(&self, gva: u64, buf: &mut [u8]) -> Result<(), WalkError> {
        pagewalk::copy_from_guest(&self.memory, &self.mode, gva, buf)
    }

    pub fn write(&mut self, gva: u64, buf: &[u8]) -> Result<(), WalkError> {
        pagewalk::copy_to_guest(&mut self.memory, &self.mode, gva, buf)
    }

    pub fn translate(&self, gva: u64, access: Access) -> Result<u64, WalkError> {
        pagewalk::translate(&self.memory, &self.mode, gva, access)
    }
}
