//! A vCPU's virtual local APIC in x2APIC mode (the MSR interface only), enough for Linux
//! as a Xen PVH guest.
//!
//! A vCPU starts with x2APIC already enabled (`IA32_APIC_BASE` = 0xfee00000 | EN | EXTD,
//! and BSP on vCPU 0), as firmware that enabled x2APIC would leave it, so there is no xAPIC
//! MMIO page to emulate. The registers (Intel SDM vol. 3, "Local APIC Register Address Map
//! Supported by x2APIC"; every one is 32 bits wide except the ICR, so bits 63:32 of a write
//! are reserved):
//!
//! | MSR | register | access |
//! |---|---|---|
//! | 0x1b | IA32_APIC_BASE | read; a write must leave it as it is |
//! | 0x802 | ID | read-only: the vCPU's APIC ID |
//! | 0x803 | version | read-only: [`VERSION`] = 0x00060014 |
//! | 0x808 | TPR | read/write, bits 7:0 |
//! | 0x80a | PPR | read-only: max(TPR, class of the highest in-service vector) |
//! | 0x80b | EOI | write-only, value 0: ends the highest in-service vector |
//! | 0x80d | LDR | read-only: cluster `id >> 4` in bits 31:16, bit `id & 15` in 15:0 |
//! | 0x80f | SVR | read/write, bits 9:0 and 12 (reset 0xff: software-disabled) |
//! | 0x810-0x817 | ISR | read-only |
//! | 0x818-0x81f | TMR | read-only, zero (every interrupt here is edge-triggered) |
//! | 0x820-0x827 | IRR | read-only |
//! | 0x828 | ESR | read/write; a write (of 0) latches the errors seen since the last one |
//! | 0x82f | LVT CMCI | read/write: vector, delivery mode, mask |
//! | 0x830 | ICR | read/write, 64 bits; a write sends an IPI |
//! | 0x832 | LVT timer | read/write: vector, mask, mode one-shot or periodic |
//! | 0x833, 0x834 | LVT thermal, LVT PMC | read/write: vector, delivery mode, mask |
//! | 0x835, 0x836 | LVT LINT0, LINT1 | read/write: vector, delivery mode, polarity, trigger, mask |
//! | 0x837 | LVT error | read/write: vector, mask |
//! | 0x838 | timer initial count | read/write |
//! | 0x839 | timer current count | read-only, always 0 |
//! | 0x83e | timer divide configuration | read/write, bits 0, 1 and 3 |
//! | 0x83f | SELF IPI | write-only, bits 7:0: makes the vector pending here |
//!
//! Any other MSR in 0x800-0x8ff (xAPIC-only registers such as DFR, APR or ICR high
//! included), a write to a read-only register, a read of a write-only one, a non-zero write
//! to EOI or ESR, and a write with reserved bits set is a fault ([`LapicFault`]: the guest
//! gets #GP), as on hardware in x2APIC mode. The read-only status bits of the LVTs
//! (delivery status, remote IRR) read as 0 and are ignored in writes.
//!
//! The version register ([`VERSION`]) says: version 0x14 (an integrated APIC), bits 23:16
//! = 6 (seven LVT entries: CMCI, timer, thermal, PMC, LINT0, LINT1, error), bit 24 clear
//! (no directed EOI). SVR bit 12 (suppress EOI broadcast) is still accepted and kept: no
//! interrupt here is level-triggered, so there is never an EOI broadcast to suppress.
//!
//! When software-disabled (SVR bit 8 clear, the reset state), every LVT is masked and stays
//! masked, fixed interrupts that arrive are kept pending in the IRR but not delivered, and
//! IPIs can still be sent.
//!
//! **The timer never fires.** Linux as a Xen guest takes its ticks from Xen's PV timer
//! (`VIRQ_TIMER`, `VCPUOP_set_singleshot_timer`) and never calibrates or arms the LAPIC
//! timer; its registers are kept so setup code that writes them works, and the current
//! count reads 0, as for a timer that has expired.
//!
//! **IPIs.** A write to the ICR decodes to an [`Ipi`] returned as [`LapicEffect::Ipi`] for
//! the caller to route, *every* destination included: the model knows nothing of the other
//! vCPUs, so even a fixed IPI to [`Destination::SelfOnly`] or to the vCPU's own APIC ID is
//! returned, and the caller raises it on this LAPIC with [`VirtualLapic::raise`] (as it
//! does for [`Destination::AllIncludingSelf`]). The SELF IPI register (0x83f) is the one
//! exception: it raises the vector here and returns [`LapicEffect::None`]. ICR fields:
//!
//! - vector, bits 7:0: fixed IPIs with a vector below 16 are not sent; ESR bit 5 (send
//!   illegal vector) is set instead. For STARTUP it is the start page (`vector << 12`); for
//!   NMI and INIT it has no meaning and the returned `vector` is 0.
//! - delivery mode, bits 10:8: 0 fixed, 4 NMI, 5 INIT, 6 STARTUP. Lowest priority (1) and
//!   SMI (2), which Linux does not send on this platform (a domain has no SMM), and the
//!   reserved encodings 3 and 7 are a fault.
//! - destination mode, bit 11: physical (0): the destination field, bits 63:32, is an APIC
//!   ID, and 0xffffffff is the broadcast [`Destination::AllIncludingSelf`]. Logical (1),
//!   x2APIC cluster form (cluster in bits 63:48, a 16-bit member mask in 47:32): one member
//!   becomes [`Destination::Physical`] of its APIC ID (`cluster << 4 | bit`), 0xffffffff is
//!   a broadcast, no member sends nothing, several members are a fault (a single `Ipi`
//!   cannot name them; the FADT forces physical mode and Linux uses physical mode without
//!   interrupt remapping anyway).
//! - level, bit 14: INIT with level 0 (the INIT level-deassert Linux sends after INIT) does
//!   nothing; the bit is ignored for the other modes, as on current processors.
//! - trigger mode, bit 15: ignored (no level-triggered IPIs).
//! - shorthand, bits 19:18: 0 the destination field, 1 [`Destination::SelfOnly`], 2
//!   [`Destination::AllIncludingSelf`], 3 [`Destination::AllExcludingSelf`]; with a
//!   shorthand the destination field and mode are ignored.
//! - bits 12 (delivery status, which no longer exists in x2APIC mode), 13, 16, 17 and
//!   31:20 are reserved. A read returns the last value written (delivery status is thus
//!   always clear: an IPI is sent the moment it is written).
//!
//! `IA32_APIC_BASE` cannot be changed: disabling the APIC, leaving x2APIC mode (to xAPIC,
//! which would need the MMIO page), moving the base or clearing BSP are all a fault. Linux
//! does none of them on this platform: it finds x2APIC enabled and keeps it.

/// `IA32_APIC_BASE`.
pub const MSR_APIC_BASE: u32 = 0x1b;
/// `IA32_APIC_BASE` bit 8: the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE` bit 10: x2APIC mode.
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// `IA32_APIC_BASE` bit 11: the APIC is enabled.
pub const APIC_BASE_EN: u64 = 1 << 11;
/// The (unused) xAPIC MMIO base `IA32_APIC_BASE` reports.
pub const APIC_BASE_ADDRESS: u64 = 0xfee0_0000;

/// The version register: version 0x14, seven LVT entries, no directed EOI.
pub const VERSION: u32 = 0x0006_0014;

/// ESR bit 5: an IPI with an illegal vector (0..16) was not sent.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR bit 6: an interrupt with an illegal vector (0..16) was not accepted.
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

/// Where an IPI goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The vCPU with this APIC ID (which may be the sender itself).
    Physical(u32),
    /// The sender only.
    SelfOnly,
    /// Every vCPU of the domain, the sender included.
    AllIncludingSelf,
    /// Every vCPU of the domain but the sender.
    AllExcludingSelf,
}

/// The delivery mode of an IPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpiKind {
    /// Make `vector` pending at the destination.
    Fixed,
    /// A non-maskable interrupt.
    Nmi,
    /// INIT (assert): the destination waits for STARTUP.
    Init,
    /// STARTUP: start in real mode at `vector << 12`.
    Startup,
}

/// An IPI an ICR write asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipi {
    pub kind: IpiKind,
    /// The vector (fixed), the start page (STARTUP), or 0 (NMI, INIT).
    pub vector: u8,
    pub dest: Destination,
}

/// What a register write asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LapicEffect {
    /// Nothing: the write only changed this LAPIC.
    None,
    /// Send this IPI.
    Ipi(Ipi),
}

/// The guest gets #GP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LapicFault;

const MSR_ID: u32 = 0x802;
const MSR_VERSION: u32 = 0x803;
const MSR_TPR: u32 = 0x808;
const MSR_PPR: u32 = 0x80a;
const MSR_EOI: u32 = 0x80b;
const MSR_LDR: u32 = 0x80d;
const MSR_SVR: u32 = 0x80f;
const MSR_ISR0: u32 = 0x810;
const MSR_TMR0: u32 = 0x818;
const MSR_IRR0: u32 = 0x820;
const MSR_ESR: u32 = 0x828;
const MSR_ICR: u32 = 0x830;
const MSR_TIMER_INITIAL: u32 = 0x838;
const MSR_TIMER_CURRENT: u32 = 0x839;
const MSR_TIMER_DIVIDE: u32 = 0x83e;
const MSR_SELF_IPI: u32 = 0x83f;

const SVR_ENABLE: u32 = 1 << 8;
/// Spurious vector (7:0), APIC software enable (8), focus processor checking (9),
/// suppress EOI broadcast (12).
const SVR_WRITABLE: u32 = 0x13ff;
const SVR_RESET: u32 = 0xff;
const TIMER_DIVIDE_WRITABLE: u32 = 0b1011;

const LVT_MASKED: u32 = 1 << 16;
/// Delivery status (12) and remote IRR (14): read-only, read as 0, ignored in writes.
const LVT_STATUS: u32 = (1 << 12) | (1 << 14);
const LVT_COUNT: usize = 7;
/// The LVT registers, in the order of [`LVT_WRITABLE`].
const LVT_MSRS: [u32; LVT_COUNT] = [0x82f, 0x832, 0x833, 0x834, 0x835, 0x836, 0x837];
const LVT_VECTOR: u32 = 0xff;
const LVT_DELIVERY_MODE: u32 = 0x700;
const LVT_POLARITY_TRIGGER: u32 = (1 << 13) | (1 << 15);
/// Timer mode bit 17 (periodic); bit 18 (TSC deadline) is reserved, as CPUID hides it.
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// The writable bits of each LVT register.
const LVT_WRITABLE: [u32; LVT_COUNT] = [
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_MASKED,  // CMCI
    LVT_VECTOR | LVT_TIMER_PERIODIC | LVT_MASKED, // timer
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_MASKED,  // thermal
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_MASKED,  // PMC
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_POLARITY_TRIGGER | LVT_MASKED, // LINT0
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_POLARITY_TRIGGER | LVT_MASKED, // LINT1
    LVT_VECTOR | LVT_MASKED,                      // error
];

const ICR_VECTOR: u64 = 0xff;
const ICR_LOGICAL: u64 = 1 << 11;
const ICR_LEVEL_ASSERT: u64 = 1 << 14;
/// Delivery status (12), bits 13, 16, 17 and 31:20.
const ICR_RESERVED: u64 = (1 << 12) | (1 << 13) | (0b11 << 16) | (0xfff << 20);
const BROADCAST: u32 = u32::MAX;

/// A 256-bit vector set (IRR, ISR), bit `v % 32` of word `v / 32` for vector `v`.
type VectorSet = [u32; 8];

fn contains(set: &VectorSet, vector: u8) -> bool {
    set[usize::from(vector / 32)] & (1 << (vector % 32)) != 0
}

fn insert(set: &mut VectorSet, vector: u8) {
    set[usize::from(vector / 32)] |= 1 << (vector % 32);
}

fn remove(set: &mut VectorSet, vector: u8) {
    set[usize::from(vector / 32)] &= !(1 << (vector % 32));
}

fn highest(set: &VectorSet) -> Option<u8> {
    (0..8u32)
        .rev()
        .find(|&word| set[word as usize] != 0)
        .map(|word| (word * 32 + 31 - set[word as usize].leading_zeros()) as u8)
}

/// One vCPU's local APIC.
#[derive(Clone, Debug)]
pub struct VirtualLapic {
    apic_id: u32,
    bsp: bool,
    tpr: u8,
    svr: u32,
    /// ESR as last latched (what a read returns).
    esr: u32,
    /// Errors seen since the last ESR write.
    esr_pending: u32,
    icr: u64,
    lvt: [u32; LVT_COUNT],
    timer_initial: u32,
    timer_divide: u32,
    irr: VectorSet,
    isr: VectorSet,
}

impl VirtualLapic {
    /// Reset state, x2APIC already enabled (APIC_BASE = 0xfee00000 | EN | EXTD |
    /// BSP-if-bsp), SVR = 0xff (software-disabled), LVTs masked.
    pub const fn new(apic_id: u32, bsp: bool) -> Self {
        Self {
            apic_id,
            bsp,
            tpr: 0,
            svr: SVR_RESET,
            esr: 0,
            esr_pending: 0,
            icr: 0,
            lvt: [LVT_MASKED; LVT_COUNT],
            timer_initial: 0,
            timer_divide: 0,
            irr: [0; 8],
            isr: [0; 8],
        }
    }

    /// The x2APIC ID (register 0x802).
    pub fn apic_id(&self) -> u32 {
        self.apic_id
    }

    /// Whether `msr` is one this model answers (0x1b and 0x800..=0x8ff).
    pub fn handles(msr: u32) -> bool {
        msr == MSR_APIC_BASE || (0x800..=0x8ff).contains(&msr)
    }

    /// Whether the software-enable bit of SVR is set (a disabled APIC still accepts
    /// INIT/SIPI/NMI but fixed interrupts are held).
    pub fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// The value of `IA32_APIC_BASE`.
    pub fn apic_base(&self) -> u64 {
        let bsp = if self.bsp { APIC_BASE_BSP } else { 0 };
        APIC_BASE_ADDRESS | APIC_BASE_EN | APIC_BASE_EXTD | bsp
    }

    /// The task priority (register 0x808).
    pub fn tpr(&self) -> u8 {
        self.tpr
    }

    /// The processor priority (register 0x80a): the TPR, or the priority class of the
    /// highest in-service vector if that is higher.
    pub fn ppr(&self) -> u8 {
        let isr_class = highest(&self.isr).map_or(0, |vector| vector & 0xf0);
        if self.tpr & 0xf0 >= isr_class {
            self.tpr
        } else {
            isr_class
        }
    }

    /// The logical destination (register 0x80d), derived from the APIC ID.
    pub fn ldr(&self) -> u32 {
        ((self.apic_id >> 4) << 16) | (1 << (self.apic_id & 0xf))
    }

    /// RDMSR of `msr` (one [`Self::handles`] accepts).
    pub fn read_msr(&self, msr: u32) -> Result<u64, LapicFault> {
        let value = match msr {
            MSR_APIC_BASE => return Ok(self.apic_base()),
            MSR_ICR => return Ok(self.icr),
            MSR_ID => self.apic_id,
            MSR_VERSION => VERSION,
            MSR_TPR => u32::from(self.tpr),
            MSR_PPR => u32::from(self.ppr()),
            MSR_LDR => self.ldr(),
            MSR_SVR => self.svr,
            MSR_ISR0..=0x817 => self.isr[(msr - MSR_ISR0) as usize],
            MSR_TMR0..=0x81f => 0,
            MSR_IRR0..=0x827 => self.irr[(msr - MSR_IRR0) as usize],
            MSR_ESR => self.esr,
            MSR_TIMER_INITIAL => self.timer_initial,
            MSR_TIMER_CURRENT => 0,
            MSR_TIMER_DIVIDE => self.timer_divide,
            _ => self.lvt[lvt_index(msr).ok_or(LapicFault)?],
        };
        Ok(u64::from(value))
    }

    /// WRMSR of `value` to `msr` (one [`Self::handles`] accepts). A fault changes nothing.
    pub fn write_msr(&mut self, msr: u32, value: u64) -> Result<LapicEffect, LapicFault> {
        match msr {
            MSR_APIC_BASE if value == self.apic_base() => return Ok(LapicEffect::None),
            MSR_APIC_BASE => return Err(LapicFault),
            MSR_ICR => return self.write_icr(value),
            _ => {}
        }
        let value = u32::try_from(value).map_err(|_| LapicFault)?;
        let writable = |mask: u32| {
            if value & !mask == 0 {
                Ok(value)
            } else {
                Err(LapicFault)
            }
        };
        match msr {
            MSR_TPR => self.tpr = writable(0xff)? as u8,
            MSR_EOI => {
                writable(0)?;
                if let Some(vector) = highest(&self.isr) {
                    remove(&mut self.isr, vector);
                }
            }
            MSR_SVR => {
                self.svr = writable(SVR_WRITABLE)?;
                if !self.software_enabled() {
                    self.lvt.iter_mut().for_each(|lvt| *lvt |= LVT_MASKED);
                }
            }
            MSR_ESR => {
                writable(0)?;
                self.esr = core::mem::take(&mut self.esr_pending);
            }
            MSR_TIMER_INITIAL => self.timer_initial = value,
            MSR_TIMER_DIVIDE => self.timer_divide = writable(TIMER_DIVIDE_WRITABLE)?,
            MSR_SELF_IPI => self.raise(writable(0xff)? as u8),
            _ => {
                let index = lvt_index(msr).ok_or(LapicFault)?;
                let value = value & !LVT_STATUS;
                if value & !LVT_WRITABLE[index] != 0 {
                    return Err(LapicFault);
                }
                // A software-disabled APIC keeps every LVT masked.
                let forced = if self.software_enabled() {
                    0
                } else {
                    LVT_MASKED
                };
                self.lvt[index] = value | forced;
            }
        }
        Ok(LapicEffect::None)
    }

    fn write_icr(&mut self, value: u64) -> Result<LapicEffect, LapicFault> {
        if value & ICR_RESERVED != 0 {
            return Err(LapicFault);
        }
        let kind = match (value >> 8) & 0b111 {
            0 => IpiKind::Fixed,
            4 => IpiKind::Nmi,
            5 => IpiKind::Init,
            6 => IpiKind::Startup,
            _ => return Err(LapicFault),
        };
        let field = (value >> 32) as u32;
        let dest = match (value >> 18) & 0b11 {
            0 if field == BROADCAST => Some(Destination::AllIncludingSelf),
            0 if value & ICR_LOGICAL == 0 => Some(Destination::Physical(field)),
            0 => logical_destination(field)?,
            1 => Some(Destination::SelfOnly),
            2 => Some(Destination::AllIncludingSelf),
            _ => Some(Destination::AllExcludingSelf),
        };
        self.icr = value;
        let raw_vector = (value & ICR_VECTOR) as u8;
        let vector = match kind {
            IpiKind::Fixed if raw_vector < 16 => {
                self.esr_pending |= ESR_SEND_ILLEGAL_VECTOR;
                return Ok(LapicEffect::None);
            }
            IpiKind::Init if value & ICR_LEVEL_ASSERT == 0 => return Ok(LapicEffect::None),
            IpiKind::Fixed | IpiKind::Startup => raw_vector,
            IpiKind::Nmi | IpiKind::Init => 0,
        };
        Ok(match dest {
            Some(dest) => LapicEffect::Ipi(Ipi { kind, vector, dest }),
            None => LapicEffect::None,
        })
    }

    /// Make `vector` pending (IRR); vectors 0..16 are illegal and set ESR's
    /// receive-illegal-vector bit instead. A software-disabled APIC keeps it pending.
    pub fn raise(&mut self, vector: u8) {
        if vector < 16 {
            self.esr_pending |= ESR_RECEIVE_ILLEGAL_VECTOR;
        } else {
            insert(&mut self.irr, vector);
        }
    }

    /// The vector to deliver now, if any: the highest IRR vector whose priority class
    /// (vector >> 4) is above both the highest in-service class and the TPR class. Does not
    /// change state. None while the APIC is software-disabled.
    pub fn deliverable(&self) -> Option<u8> {
        if !self.software_enabled() {
            return None;
        }
        let vector = highest(&self.irr)?;
        (vector >> 4 > self.ppr() >> 4).then_some(vector)
    }

    /// The guest took `vector` (moves it IRR → ISR). Nothing happens if it is not pending.
    pub fn accept(&mut self, vector: u8) {
        if contains(&self.irr, vector) {
            remove(&mut self.irr, vector);
            insert(&mut self.isr, vector);
        }
    }
}

fn lvt_index(msr: u32) -> Option<usize> {
    LVT_MSRS.iter().position(|&lvt| lvt == msr)
}

/// The destination of a logical-mode IPI without shorthand (x2APIC cluster model): `None`
/// inside the `Ok` when the mask names no vCPU, a fault when it names several.
fn logical_destination(field: u32) -> Result<Option<Destination>, LapicFault> {
    let cluster = field >> 16;
    let members = field & 0xffff;
    match members.count_ones() {
        0 => Ok(None),
        1 => Ok(Some(Destination::Physical(
            (cluster << 4) | members.trailing_zeros(),
        ))),
        _ => Err(LapicFault),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A software-enabled LAPIC with spurious vector 0xff, as Linux sets it up.
    fn enabled(id: u32) -> VirtualLapic {
        let mut lapic = VirtualLapic::new(id, id == 0);
        assert_eq!(lapic.write_msr(0x80f, 0x1ff), Ok(LapicEffect::None));
        lapic
    }

    fn ipi(kind: IpiKind, vector: u8, dest: Destination) -> Result<LapicEffect, LapicFault> {
        Ok(LapicEffect::Ipi(Ipi { kind, vector, dest }))
    }

    fn latched_esr(lapic: &mut VirtualLapic) -> u64 {
        lapic.write_msr(0x828, 0).unwrap();
        lapic.read_msr(0x828).unwrap()
    }

    #[test]
    fn reset_state() {
        let ap = VirtualLapic::new(3, false);
        assert_eq!(ap.read_msr(0x1b), Ok(0xfee0_0c00));
        assert_eq!(VirtualLapic::new(0, true).read_msr(0x1b), Ok(0xfee0_0d00));
        assert_eq!(ap.read_msr(0x80f), Ok(0xff));
        assert!(!ap.software_enabled());
        for lvt in [0x82f, 0x832, 0x833, 0x834, 0x835, 0x836, 0x837] {
            assert_eq!(ap.read_msr(lvt), Ok(0x1_0000), "LVT {lvt:#x} masked");
        }
        for msr in [0x808, 0x80a, 0x828, 0x830, 0x838, 0x839, 0x83e] {
            assert_eq!(ap.read_msr(msr), Ok(0), "{msr:#x}");
        }
        for i in 0..8 {
            assert_eq!(ap.read_msr(0x810 + i), Ok(0));
            assert_eq!(ap.read_msr(0x818 + i), Ok(0));
            assert_eq!(ap.read_msr(0x820 + i), Ok(0));
        }
        assert_eq!(ap.deliverable(), None);
    }

    #[test]
    fn which_msrs_are_handled() {
        assert!(VirtualLapic::handles(0x1b));
        assert!(VirtualLapic::handles(0x800));
        assert!(VirtualLapic::handles(0x8ff));
        assert!(!VirtualLapic::handles(0x7ff));
        assert!(!VirtualLapic::handles(0x900));
        assert!(!VirtualLapic::handles(0x1a));
        assert!(!VirtualLapic::handles(0x4000_0000));
    }

    #[test]
    fn identity_registers_are_read_only() {
        let mut lapic = enabled(0x13);
        assert_eq!(lapic.apic_id(), 0x13);
        assert_eq!(lapic.read_msr(0x802), Ok(0x13));
        assert_eq!(lapic.read_msr(0x803), Ok(0x0006_0014));
        assert_eq!(lapic.read_msr(0x80d), Ok((1 << 16) | (1 << 3)));
        assert_eq!(enabled(0).read_msr(0x80d), Ok(1));
        assert_eq!(enabled(0x2f).read_msr(0x80d), Ok((2 << 16) | (1 << 15)));
        for msr in [
            0x802, 0x803, 0x80a, 0x80d, 0x810, 0x817, 0x818, 0x81f, 0x820, 0x827, 0x839,
        ] {
            assert_eq!(lapic.write_msr(msr, 0), Err(LapicFault), "{msr:#x}");
        }
        assert_eq!(lapic.read_msr(0x802), Ok(0x13));
    }

    #[test]
    fn undefined_and_write_only_registers_fault() {
        let mut lapic = enabled(1);
        // The xAPIC-only or unassigned offsets: 0x800, 0x801, 0x804-0x807, APR (0x809), RRD
        // (0x80c), DFR (0x80e), 0x829-0x82e, ICR high (0x831), 0x83a-0x83d, and 0x840 on.
        let mut undefined = vec![0x800, 0x801, 0x809, 0x80c, 0x80e, 0x831];
        undefined.extend((0x804..=0x807).chain(0x829..=0x82e).chain(0x83a..=0x83d));
        undefined.extend(0x840..=0x8ff);
        for msr in undefined {
            assert_eq!(lapic.read_msr(msr), Err(LapicFault), "read {msr:#x}");
            assert_eq!(lapic.write_msr(msr, 0), Err(LapicFault), "write {msr:#x}");
        }
        assert_eq!(lapic.read_msr(0x80b), Err(LapicFault), "EOI is write-only");
        assert_eq!(
            lapic.read_msr(0x83f),
            Err(LapicFault),
            "SELF IPI is write-only"
        );
    }

    #[test]
    fn apic_base_cannot_change() {
        let mut bsp = VirtualLapic::new(0, true);
        assert_eq!(bsp.write_msr(0x1b, 0xfee0_0d00), Ok(LapicEffect::None));
        for bad in [
            0,
            0xfee0_0900, // xAPIC mode
            0xfee0_0500, // disabled, EXTD left set
            0xfee0_0c00, // BSP cleared
            0xfed0_0d00, // moved
            0xfee0_0d01, // reserved bit
            0x1_fee0_0d00,
        ] {
            assert_eq!(bsp.write_msr(0x1b, bad), Err(LapicFault), "{bad:#x}");
        }
        let mut ap = VirtualLapic::new(1, false);
        assert_eq!(
            ap.write_msr(0x1b, 0xfee0_0d00),
            Err(LapicFault),
            "AP made BSP"
        );
        assert_eq!(ap.write_msr(0x1b, 0xfee0_0c00), Ok(LapicEffect::None));
        assert_eq!(ap.read_msr(0x1b), Ok(0xfee0_0c00));
    }

    #[test]
    fn thirty_two_bit_registers_reject_high_bits() {
        let mut lapic = enabled(0);
        for msr in [0x808, 0x80b, 0x80f, 0x828, 0x832, 0x838, 0x83e, 0x83f] {
            assert_eq!(lapic.write_msr(msr, 1 << 32), Err(LapicFault), "{msr:#x}");
        }
        assert_eq!(lapic.read_msr(0x80f), Ok(0x1ff));
    }

    #[test]
    fn tpr_and_ppr() {
        let mut lapic = enabled(0);
        assert_eq!(lapic.write_msr(0x808, 0x5c), Ok(LapicEffect::None));
        assert_eq!(lapic.read_msr(0x808), Ok(0x5c));
        assert_eq!(lapic.tpr(), 0x5c);
        assert_eq!(
            lapic.read_msr(0x80a),
            Ok(0x5c),
            "PPR = TPR without in-service vectors"
        );
        assert_eq!(lapic.write_msr(0x808, 0x100), Err(LapicFault));
        lapic.raise(0x71);
        lapic.accept(0x71);
        assert_eq!(lapic.read_msr(0x80a), Ok(0x70), "the in-service class wins");
        lapic.write_msr(0x808, 0x7a).unwrap();
        assert_eq!(
            lapic.read_msr(0x80a),
            Ok(0x7a),
            "a TPR of the same class wins"
        );
        lapic.write_msr(0x808, 0x81).unwrap();
        assert_eq!(lapic.ppr(), 0x81);
    }

    #[test]
    fn svr_bits_and_software_disable() {
        let mut lapic = VirtualLapic::new(0, true);
        assert_eq!(lapic.write_msr(0x80f, 0x13ff), Ok(LapicEffect::None));
        assert_eq!(lapic.read_msr(0x80f), Ok(0x13ff));
        assert!(lapic.software_enabled());
        for reserved in [1 << 10, 1 << 11, 1 << 13, 1 << 31] {
            assert_eq!(lapic.write_msr(0x80f, 0x1ff | reserved), Err(LapicFault));
        }
        lapic.write_msr(0x835, 0x700).unwrap();
        lapic.write_msr(0x837, 0xfe).unwrap();
        assert_eq!(lapic.read_msr(0x837), Ok(0xfe), "unmasked while enabled");
        // Disabling masks every LVT, and they stay masked until it is enabled again.
        lapic.write_msr(0x80f, 0xff).unwrap();
        assert!(!lapic.software_enabled());
        assert_eq!(lapic.read_msr(0x835), Ok(0x1_0700));
        assert_eq!(lapic.read_msr(0x837), Ok(0x1_00fe));
        lapic.write_msr(0x837, 0xfe).unwrap();
        assert_eq!(lapic.read_msr(0x837), Ok(0x1_00fe));
        lapic.write_msr(0x80f, 0x1ff).unwrap();
        lapic.write_msr(0x837, 0xfe).unwrap();
        assert_eq!(lapic.read_msr(0x837), Ok(0xfe));
    }

    #[test]
    fn lvt_writable_bits() {
        let mut lapic = enabled(0);
        let cases = [
            (0x82f, 0x1_07ff), // CMCI: vector, delivery mode, mask
            (0x832, 0x3_00ff), // timer: vector, mask, periodic
            (0x833, 0x1_07ff), // thermal
            (0x834, 0x1_07ff), // PMC
            (0x835, 0x1_a7ff), // LINT0: + polarity, trigger
            (0x836, 0x1_a7ff), // LINT1
            (0x837, 0x1_00ff), // error: vector, mask
        ];
        for (msr, writable) in cases {
            assert_eq!(
                lapic.write_msr(msr, writable),
                Ok(LapicEffect::None),
                "{msr:#x}"
            );
            assert_eq!(lapic.read_msr(msr), Ok(writable), "{msr:#x}");
            for bit in 0..32 {
                let bit = 1u64 << bit;
                let status = bit == 1 << 12 || bit == 1 << 14;
                let result = lapic.write_msr(msr, bit);
                if writable & bit != 0 || status {
                    assert_eq!(result, Ok(LapicEffect::None), "{msr:#x} bit {bit:#x}");
                    let read = lapic.read_msr(msr).unwrap();
                    assert_eq!(read, if status { 0 } else { bit }, "{msr:#x} bit {bit:#x}");
                } else {
                    assert_eq!(result, Err(LapicFault), "{msr:#x} bit {bit:#x}");
                }
            }
        }
        assert_eq!(
            lapic.write_msr(0x832, 2 << 17),
            Err(LapicFault),
            "TSC-deadline mode"
        );
        assert_eq!(
            lapic.write_msr(0x832, 3 << 17),
            Err(LapicFault),
            "reserved timer mode"
        );
    }

    #[test]
    fn timer_registers_are_kept_but_the_timer_never_runs() {
        let mut lapic = enabled(0);
        lapic.write_msr(0x83e, 0b1011).unwrap();
        assert_eq!(lapic.read_msr(0x83e), Ok(0b1011));
        assert_eq!(lapic.write_msr(0x83e, 0b0100), Err(LapicFault));
        lapic.write_msr(0x832, 0x2_00ef).unwrap();
        lapic.write_msr(0x838, 0xffff_ffff).unwrap();
        assert_eq!(lapic.read_msr(0x838), Ok(0xffff_ffff));
        assert_eq!(lapic.read_msr(0x839), Ok(0));
        assert_eq!(lapic.deliverable(), None);
    }

    #[test]
    fn priority_tpr_masking_isr_nesting_and_eoi_order() {
        let mut lapic = enabled(0);
        lapic.raise(0x31);
        lapic.raise(0x52);
        lapic.raise(0xf6);
        assert_eq!(lapic.read_msr(0x821), Ok(1 << 0x11));
        assert_eq!(lapic.read_msr(0x822), Ok(1 << 0x12));
        assert_eq!(lapic.read_msr(0x827), Ok(1 << 0x16));
        assert_eq!(lapic.deliverable(), Some(0xf6));
        assert_eq!(
            lapic.deliverable(),
            Some(0xf6),
            "deliverable changes nothing"
        );
        lapic.accept(0xf6);
        assert_eq!(lapic.read_msr(0x817), Ok(1 << 0x16));
        assert_eq!(lapic.read_msr(0x827), Ok(0));
        assert_eq!(lapic.deliverable(), None, "lower classes wait for the EOI");
        lapic.raise(0xfe);
        assert_eq!(lapic.deliverable(), None, "the same class does not nest");
        lapic.accept(0xfe);
        lapic.raise(0x40);
        // EOI ends the highest in-service vector first.
        lapic.write_msr(0x80b, 0).unwrap();
        assert_eq!(
            lapic.read_msr(0x817),
            Ok(1 << 0x16),
            "0xfe ended, 0xf6 still in service"
        );
        lapic.write_msr(0x80b, 0).unwrap();
        assert_eq!(lapic.read_msr(0x817), Ok(0));
        assert_eq!(lapic.deliverable(), Some(0x52));
        // A higher class nests over an in-service one.
        lapic.accept(0x52);
        lapic.raise(0x61);
        assert_eq!(lapic.deliverable(), Some(0x61));
        lapic.accept(0x61);
        assert_eq!(lapic.read_msr(0x80a), Ok(0x60));
        lapic.write_msr(0x80b, 0).unwrap();
        assert_eq!(lapic.read_msr(0x813), Ok(0), "0x61 ended first");
        assert_eq!(
            lapic.read_msr(0x812),
            Ok(1 << 0x12),
            "0x52 still in service"
        );
        lapic.write_msr(0x80b, 0).unwrap();
        // TPR masks classes at or below its own.
        lapic.write_msr(0x808, 0x50).unwrap();
        assert_eq!(
            lapic.deliverable(),
            None,
            "0x40 and 0x31 are at or below TPR class 5"
        );
        lapic.raise(0x5f);
        assert_eq!(lapic.deliverable(), None, "TPR class 5 holds 0x5f");
        lapic.raise(0x60);
        assert_eq!(lapic.deliverable(), Some(0x60));
        lapic.write_msr(0x808, 0).unwrap();
        assert_eq!(lapic.deliverable(), Some(0x60));
        // EOI with nothing in service is harmless; a non-zero EOI is a fault.
        for vector in [0x60, 0x5f, 0x40, 0x31] {
            assert_eq!(lapic.deliverable(), Some(vector));
            lapic.accept(vector);
            lapic.write_msr(0x80b, 0).unwrap();
        }
        assert_eq!(lapic.deliverable(), None);
        assert_eq!(lapic.write_msr(0x80b, 0), Ok(LapicEffect::None));
        assert_eq!(lapic.write_msr(0x80b, 1), Err(LapicFault));
    }

    #[test]
    fn accept_of_a_vector_not_pending_does_nothing() {
        let mut lapic = enabled(0);
        lapic.accept(0x80);
        assert_eq!(lapic.read_msr(0x814), Ok(0));
        assert_eq!(lapic.read_msr(0x80a), Ok(0));
    }

    #[test]
    fn a_disabled_apic_holds_fixed_interrupts() {
        let mut lapic = VirtualLapic::new(0, true);
        lapic.raise(0x40);
        assert_eq!(lapic.read_msr(0x822), Ok(1));
        assert_eq!(lapic.deliverable(), None);
        lapic.write_msr(0x80f, 0x1ff).unwrap();
        assert_eq!(lapic.deliverable(), Some(0x40));
        lapic.write_msr(0x80f, 0xff).unwrap();
        assert_eq!(lapic.deliverable(), None);
    }

    #[test]
    fn illegal_vectors_and_the_esr() {
        let mut lapic = enabled(0);
        for vector in 0..16 {
            lapic.raise(vector);
        }
        assert!((0..8).all(|i| lapic.read_msr(0x820 + i) == Ok(0)));
        assert_eq!(
            lapic.read_msr(0x828),
            Ok(0),
            "nothing latched before the write"
        );
        assert_eq!(latched_esr(&mut lapic), 0x40, "receive illegal vector");
        assert_eq!(latched_esr(&mut lapic), 0, "the write cleared it");
        assert_eq!(
            lapic.write_msr(0x830, (1 << 32) | 0x0f),
            Ok(LapicEffect::None)
        );
        assert_eq!(lapic.write_msr(0x83f, 0x0f), Ok(LapicEffect::None));
        assert_eq!(
            latched_esr(&mut lapic),
            0x60,
            "send and receive illegal vector"
        );
        assert_eq!(lapic.write_msr(0x828, 1), Err(LapicFault));
        // The vector of a STARTUP is a page number: 0 is fine.
        assert_eq!(
            lapic.write_msr(0x830, (1 << 32) | (6 << 8)),
            ipi(IpiKind::Startup, 0, Destination::Physical(1))
        );
        assert_eq!(latched_esr(&mut lapic), 0);
    }

    #[test]
    fn self_ipi_register() {
        let mut lapic = enabled(2);
        assert_eq!(lapic.write_msr(0x83f, 0xf6), Ok(LapicEffect::None));
        assert_eq!(lapic.read_msr(0x827), Ok(1 << 0x16));
        assert_eq!(lapic.deliverable(), Some(0xf6));
        assert_eq!(lapic.write_msr(0x83f, 0x1f6), Err(LapicFault));
    }

    #[test]
    fn icr_delivery_modes() {
        let mut lapic = enabled(0);
        let to_1 = 1u64 << 32;
        assert_eq!(
            lapic.write_msr(0x830, to_1 | 0xf8),
            ipi(IpiKind::Fixed, 0xf8, Destination::Physical(1))
        );
        assert_eq!(
            lapic.write_msr(0x830, to_1 | (4 << 8)),
            ipi(IpiKind::Nmi, 0, Destination::Physical(1))
        );
        assert_eq!(
            lapic.write_msr(0x830, to_1 | (4 << 8) | 0x02),
            ipi(IpiKind::Nmi, 0, Destination::Physical(1)),
            "an NMI's vector field has no meaning"
        );
        // Linux's AP start: INIT assert (level-triggered), INIT deassert, STARTUP twice.
        assert_eq!(
            lapic.write_msr(0x830, to_1 | (1 << 15) | (1 << 14) | (5 << 8)),
            ipi(IpiKind::Init, 0, Destination::Physical(1))
        );
        assert_eq!(
            lapic.write_msr(0x830, to_1 | (1 << 15) | (5 << 8)),
            Ok(LapicEffect::None),
            "INIT level deassert"
        );
        assert_eq!(
            lapic.write_msr(0x830, to_1 | (5 << 8)),
            Ok(LapicEffect::None)
        );
        assert_eq!(
            lapic.write_msr(0x830, to_1 | (6 << 8) | 0x9a),
            ipi(IpiKind::Startup, 0x9a, Destination::Physical(1))
        );
        for mode in [1u64, 2, 3, 7] {
            assert_eq!(
                lapic.write_msr(0x830, to_1 | (mode << 8) | 0x40),
                Err(LapicFault)
            );
        }
        // The level and trigger bits do not change a fixed IPI.
        assert_eq!(
            lapic.write_msr(0x830, to_1 | (1 << 15) | (1 << 14) | 0x40),
            ipi(IpiKind::Fixed, 0x40, Destination::Physical(1))
        );
    }

    #[test]
    fn icr_shorthands_and_destinations() {
        let mut lapic = enabled(5);
        let cases = [
            ((7u64 << 32) | 0x40, Destination::Physical(7)),
            ((5u64 << 32) | 0x40, Destination::Physical(5)),
            ((0xffff_ffffu64 << 32) | 0x40, Destination::AllIncludingSelf),
            ((7u64 << 32) | (1 << 18) | 0x40, Destination::SelfOnly),
            (
                (7u64 << 32) | (2 << 18) | 0x40,
                Destination::AllIncludingSelf,
            ),
            (
                (7u64 << 32) | (3 << 18) | 0x40,
                Destination::AllExcludingSelf,
            ),
        ];
        for (value, dest) in cases {
            assert_eq!(
                lapic.write_msr(0x830, value),
                ipi(IpiKind::Fixed, 0x40, dest)
            );
        }
        // A fixed IPI to itself is the caller's to deliver: nothing is raised here.
        assert_eq!(lapic.read_msr(0x822), Ok(0));
        for (shorthand, dest) in [
            (1u64, Destination::SelfOnly),
            (2, Destination::AllIncludingSelf),
            (3, Destination::AllExcludingSelf),
        ] {
            let nmi = (shorthand << 18) | (4 << 8);
            assert_eq!(lapic.write_msr(0x830, nmi), ipi(IpiKind::Nmi, 0, dest));
            let init = (shorthand << 18) | (1 << 14) | (5 << 8);
            assert_eq!(lapic.write_msr(0x830, init), ipi(IpiKind::Init, 0, dest));
            let sipi = (shorthand << 18) | (6 << 8) | 0x10;
            assert_eq!(
                lapic.write_msr(0x830, sipi),
                ipi(IpiKind::Startup, 0x10, dest)
            );
        }
    }

    #[test]
    fn icr_logical_destinations() {
        let mut lapic = enabled(0);
        let logical = |field: u64| (field << 32) | (1 << 11) | 0x40;
        assert_eq!(
            lapic.write_msr(0x830, logical(1 << 3)),
            ipi(IpiKind::Fixed, 0x40, Destination::Physical(3))
        );
        assert_eq!(
            lapic.write_msr(0x830, logical((2 << 16) | (1 << 15))),
            ipi(IpiKind::Fixed, 0x40, Destination::Physical(0x2f))
        );
        assert_eq!(
            lapic.write_msr(0x830, logical(0xffff_ffff)),
            ipi(IpiKind::Fixed, 0x40, Destination::AllIncludingSelf)
        );
        assert_eq!(
            lapic.write_msr(0x830, logical(2 << 16)),
            Ok(LapicEffect::None)
        );
        assert_eq!(lapic.write_msr(0x830, logical(0b11)), Err(LapicFault));
        // With a shorthand the destination is not looked at.
        assert_eq!(
            lapic.write_msr(0x830, logical(0b11) | (3 << 18)),
            ipi(IpiKind::Fixed, 0x40, Destination::AllExcludingSelf)
        );
    }

    #[test]
    fn icr_reserved_bits_and_read_back() {
        let mut lapic = enabled(0);
        let good = (9u64 << 32) | (6 << 8) | 0x9a;
        lapic.write_msr(0x830, good).unwrap();
        for bit in [12, 13, 16, 17, 20, 25, 31] {
            assert_eq!(
                lapic.write_msr(0x830, (1 << bit) | 0x40),
                Err(LapicFault),
                "bit {bit}"
            );
        }
        assert_eq!(
            lapic.read_msr(0x830),
            Ok(good),
            "a faulting write changes nothing"
        );
        assert_eq!(
            lapic.read_msr(0x830).unwrap() & (1 << 12),
            0,
            "delivery status idle"
        );
        // Dropped IPIs are still written to the register.
        lapic
            .write_msr(0x830, (1 << 32) | (1 << 15) | (5 << 8))
            .unwrap();
        assert_eq!(lapic.read_msr(0x830), Ok((1 << 32) | (1 << 15) | (5 << 8)));
    }

    #[test]
    fn garbage_never_panics() {
        let mut lapic = enabled(0);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let msr = 0x800 + (x as u32 & 0xff);
            let _ = lapic.read_msr(msr);
            let _ = lapic.write_msr(
                msr,
                x.rotate_left(17) & if x & 1 == 0 { 0xffff } else { !0 },
            );
            lapic.raise((x >> 40) as u8);
            if let Some(vector) = lapic.deliverable() {
                lapic.accept(vector);
            }
        }
    }
}
