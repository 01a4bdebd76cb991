//! Domain control: the operations the microvisor gives the system's control domain (the
//! manifest's `control_domain`) and nobody else, through [`crate::hypercall::MICROVISOR_OP`]
//! with a `MVOP_DOMCTL_*` command. Any other caller gets `-EPERM`.
//!
//! A domain is built by the control domain, not by the microvisor:
//! 1. [`MVOP_DOMCTL_CREATE`] makes an empty, paused domain: its RAM (zeroed), an empty ACPI
//!    page at [`ACPI_GPA`], its vCPUs (all down), and its xenstore and console rings
//!    connected to the service domains (so they serve it as soon as it runs).
//! 2. [`MVOP_DOMCTL_LOAD`] copies bytes from the control domain into the new domain's memory
//!    (the image, `hvm_start_info` at [`START_INFO_GPA`], the ACPI tables), and
//!    [`MVOP_DOMCTL_SET_ENTRY`] sets vCPU 0's PVH start state. Both work only until the
//!    domain is first unpaused: the control domain never reads a domain's memory, and may
//!    write it only while it is being built.
//! 3. [`MVOP_DOMCTL_UNPAUSE`] starts it.
//!
//! A domain the control domain created that shuts down (poweroff, reboot, crash) stops and
//! stays, with its reason in the list ([`DOMCTL_STATE_SHUTDOWN`]); the control domain, told by
//! `VIRQ_DOMAIN_CHANGE`, applies its `on_poweroff`/`on_reboot`/`on_crash` (destroy it, build it
//! again, or leave it). Domains of the boot manifest keep their manifest's actions.

/// `microvisor_op(MVOP_DOMCTL_LIST, array_gva, count)`: up to `count` [`DomctlEntry`]s, one
/// per domain in the table (running, paused, dying or shut down), ordered by table slot;
/// returns how many were written.
pub const MVOP_DOMCTL_LIST: u64 = 16;
/// `microvisor_op(MVOP_DOMCTL_PHYSINFO, out_gva)`: writes [`PhysInfo`].
pub const MVOP_DOMCTL_PHYSINFO: u64 = 17;
/// `microvisor_op(MVOP_DOMCTL_CREATE, args_gva)` with a [`CreateArgs`]: returns the new
/// domain's id. `-EINVAL` for a bad name, memory or vCPU count, `-EEXIST` for a name in use,
/// `-ENOSPC` when the domain table is full, `-ENOMEM` when the memory is not there.
pub const MVOP_DOMCTL_CREATE: u64 = 18;
/// `microvisor_op(MVOP_DOMCTL_LOAD, domid, gpa, buf_gva, len)`: copies `len` bytes (at most
/// [`LOAD_MAX_BYTES`]) from the caller's `buf_gva` to guest-physical `gpa` of a domain it is
/// building: its RAM or its ACPI page. `-EPERM` once the domain was unpaused, `-EFAULT` for a
/// range the domain does not own.
pub const MVOP_DOMCTL_LOAD: u64 = 19;
/// `microvisor_op(MVOP_DOMCTL_SET_ENTRY, domid, entry, start_info_gpa)`: vCPU 0 starts at
/// `entry` in 32-bit protected mode with EBX = `start_info_gpa` (the PVH entry). Before the
/// first unpause only (`-EPERM` after).
pub const MVOP_DOMCTL_SET_ENTRY: u64 = 20;
/// `microvisor_op(MVOP_DOMCTL_UNPAUSE, domid)`. The first unpause needs an entry
/// (`-EINVAL` without one) and ends the building stage.
pub const MVOP_DOMCTL_UNPAUSE: u64 = 21;
/// `microvisor_op(MVOP_DOMCTL_PAUSE, domid)`: its vCPUs stop running (at once on this CPU,
/// within a time slice elsewhere) until unpaused; events are kept pending meanwhile.
pub const MVOP_DOMCTL_PAUSE: u64 = 22;
/// `microvisor_op(MVOP_DOMCTL_DESTROY, domid)`: tears the domain down at once (no guest
/// shutdown; `xl destroy`), whatever its state. The caller itself: `-EINVAL`.
pub const MVOP_DOMCTL_DESTROY: u64 = 23;

/// `microvisor_op(MVOP_DOMCTL_DMESG, buf, len)`: the microvisor's recent log (its own lines,
/// the last 16 KiB), oldest first, at most `len` bytes (the newest ones); returns how many.
pub const MVOP_DOMCTL_DMESG: u64 = 24;
/// `microvisor_op(MVOP_DOMCTL_VCPU_LIST, domid, array, count)`: up to `count`
/// [`VcpuEntry`]s, one per vCPU of the domain; returns how many were written.
pub const MVOP_DOMCTL_VCPU_LIST: u64 = 25;
/// The highest domain-control command.
/// `microvisor_op(MVOP_DOMCTL_CRASH, domid)`: the domain crashes now, as if it had faulted
/// (fault injection): its `on_crash` applies, including a restart of a service domain under
/// its own id. Not the caller itself (`-EINVAL`).
pub const MVOP_DOMCTL_CRASH: u64 = 26;
pub const MVOP_DOMCTL_LAST: u64 = MVOP_DOMCTL_CRASH;

/// A vCPU is down (not started, or taken down).
pub const VCPU_STATE_DOWN: u8 = 0;
pub const VCPU_STATE_RUNNABLE: u8 = 1;
pub const VCPU_STATE_RUNNING: u8 = 2;
pub const VCPU_STATE_BLOCKED: u8 = 3;

/// One vCPU, for `xl vcpu-list`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuEntry {
    pub vcpu: u32,
    /// `VCPU_STATE_*`.
    pub state: u8,
    pub _pad: u8,
    /// The physical CPU it runs on (when [`VCPU_STATE_RUNNING`]).
    pub cpu: u16,
    /// Time it held a CPU, in ns.
    pub cpu_ns: u64,
}
pub const VCPU_ENTRY_SIZE: usize = 16;
const _: () = assert!(core::mem::size_of::<VcpuEntry>() == VCPU_ENTRY_SIZE);

impl VcpuEntry {
    pub fn to_bytes(&self) -> [u8; VCPU_ENTRY_SIZE] {
        let mut b = [0u8; VCPU_ENTRY_SIZE];
        b[0..4].copy_from_slice(&self.vcpu.to_le_bytes());
        b[4] = self.state;
        b[6..8].copy_from_slice(&self.cpu.to_le_bytes());
        b[8..16].copy_from_slice(&self.cpu_ns.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; VCPU_ENTRY_SIZE]) -> Self {
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&b[8..16]);
        VcpuEntry {
            vcpu: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            state: b[4],
            _pad: 0,
            cpu: u16::from_le_bytes([b[6], b[7]]),
            cpu_ns: u64::from_le_bytes(ns),
        }
    }
}

/// The most bytes one [`MVOP_DOMCTL_LOAD`] copies.
pub const LOAD_MAX_BYTES: u64 = 1 << 20;

/// Guest-physical layout every PVH domain gets (the same for the boot builder and the
/// control domain's builder).
/// `hvm_start_info`, its memory map, module list and command line: one page in RAM.
pub const START_INFO_GPA: u64 = 0x1000;
/// The domain's ACPI tables, one page outside RAM (Xen's `ACPI_INFO_PHYSICAL_ADDRESS`).
pub const ACPI_GPA: u64 = 0xfc00_0000;
/// Xen's special-page region (the xenstore and console rings), reserved in the memory map.
pub const SPECIAL_PAGES_GPA: u64 = 0xfeff_8000;
pub const SPECIAL_PAGES_BYTES: u64 = 0x8000;
/// The xenstore ring page the builder gives a domain.
pub const STORE_RING_GPA: u64 = 0xfeff_c000;
/// The console ring page the builder gives a domain.
pub const CONSOLE_RING_GPA: u64 = 0xfeff_b000;
/// An initramfs goes right after the image, on a 2 MiB boundary, never below 16 MiB.
pub const MIN_RAMDISK_GPA: u64 = 16 << 20;
pub const RAMDISK_ALIGN: u64 = 2 << 20;

/// [`MVOP_DOMCTL_CREATE`]'s argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreateArgs {
    /// NUL-padded; 1..=31 bytes of printable ASCII.
    pub name: [u8; 32],
    /// RAM in MiB: at least 2, below [`ACPI_GPA`].
    pub memory_mib: u32,
    /// 1..=8.
    pub vcpus: u32,
}
pub const CREATE_ARGS_SIZE: usize = 40;
const _: () = assert!(core::mem::size_of::<CreateArgs>() == CREATE_ARGS_SIZE);

impl CreateArgs {
    pub fn to_bytes(&self) -> [u8; CREATE_ARGS_SIZE] {
        let mut b = [0u8; CREATE_ARGS_SIZE];
        b[..32].copy_from_slice(&self.name);
        b[32..36].copy_from_slice(&self.memory_mib.to_le_bytes());
        b[36..40].copy_from_slice(&self.vcpus.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; CREATE_ARGS_SIZE]) -> Self {
        let mut name = [0u8; 32];
        name.copy_from_slice(&b[..32]);
        CreateArgs {
            name,
            memory_mib: u32::from_le_bytes([b[32], b[33], b[34], b[35]]),
            vcpus: u32::from_le_bytes([b[36], b[37], b[38], b[39]]),
        }
    }

    /// The name, if it is 1..=31 printable ASCII bytes followed only by NULs.
    pub fn name_str(&self) -> Option<&str> {
        let len = self.name.iter().position(|&c| c == 0)?;
        let (name, rest) = self.name.split_at(len);
        let ok =
            len > 0 && rest.iter().all(|&c| c == 0) && name.iter().all(|&c| c.is_ascii_graphic());
        ok.then(|| core::str::from_utf8(name).ok()).flatten()
    }
}

/// A domain runs (or waits for events).
pub const DOMCTL_STATE_RUNNING: u8 = 0;
/// Paused by the control domain, or created and not yet unpaused.
pub const DOMCTL_STATE_PAUSED: u8 = 1;
/// Being torn down.
pub const DOMCTL_STATE_DYING: u8 = 2;
/// Shut down and kept (a created domain awaiting its control domain, or `preserve`).
pub const DOMCTL_STATE_SHUTDOWN: u8 = 3;

/// Shutdown reasons in [`DomctlEntry::reason`] (Xen's `SHUTDOWN_*` numbers plus one).
pub const DOMCTL_REASON_NONE: u8 = 0;
pub const DOMCTL_REASON_POWEROFF: u8 = 1;
pub const DOMCTL_REASON_REBOOT: u8 = 2;
pub const DOMCTL_REASON_CRASH: u8 = 3;

/// The domain was created by the control domain (not the boot manifest).
pub const DOMCTL_FLAG_CREATED: u32 = 1;
/// The domain is the boot manifest's xenstore, console, disk or net service, or the control
/// domain itself.
pub const DOMCTL_FLAG_SERVICE: u32 = 2;
/// The entry is the caller.
pub const DOMCTL_FLAG_SELF: u32 = 4;

/// One domain as the control domain sees it (`xl list`, `xl top`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomctlEntry {
    pub domid: u16,
    /// `DOMCTL_STATE_*`.
    pub state: u8,
    /// `DOMCTL_REASON_*` (for [`DOMCTL_STATE_DYING`] and [`DOMCTL_STATE_SHUTDOWN`]).
    pub reason: u8,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// Time its vCPUs spent on a CPU (in the guest and in the microvisor for it), in ns.
    pub cpu_ns: u64,
    pub vm_exits: u64,
    pub hypercalls: u64,
    /// `DOMCTL_FLAG_*`.
    pub flags: u32,
    /// How many times it was rebuilt by the microvisor (`on_*="restart"` of a boot domain).
    pub restarts: u32,
    pub name: [u8; 32],
}
pub const DOMCTL_ENTRY_SIZE: usize = 80;
const _: () = assert!(core::mem::size_of::<DomctlEntry>() == DOMCTL_ENTRY_SIZE);

impl DomctlEntry {
    pub fn to_bytes(&self) -> [u8; DOMCTL_ENTRY_SIZE] {
        let mut b = [0u8; DOMCTL_ENTRY_SIZE];
        b[0..2].copy_from_slice(&self.domid.to_le_bytes());
        b[2] = self.state;
        b[3] = self.reason;
        b[4..8].copy_from_slice(&self.vcpus.to_le_bytes());
        b[8..16].copy_from_slice(&self.memory_bytes.to_le_bytes());
        b[16..24].copy_from_slice(&self.cpu_ns.to_le_bytes());
        b[24..32].copy_from_slice(&self.vm_exits.to_le_bytes());
        b[32..40].copy_from_slice(&self.hypercalls.to_le_bytes());
        b[40..44].copy_from_slice(&self.flags.to_le_bytes());
        b[44..48].copy_from_slice(&self.restarts.to_le_bytes());
        b[48..80].copy_from_slice(&self.name);
        b
    }

    pub fn from_bytes(b: &[u8; DOMCTL_ENTRY_SIZE]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        let mut name = [0u8; 32];
        name.copy_from_slice(&b[48..80]);
        DomctlEntry {
            domid: u16::from_le_bytes([b[0], b[1]]),
            state: b[2],
            reason: b[3],
            vcpus: u32_at(4),
            memory_bytes: u64_at(8),
            cpu_ns: u64_at(16),
            vm_exits: u64_at(24),
            hypercalls: u64_at(32),
            flags: u32_at(40),
            restarts: u32_at(44),
            name,
        }
    }

    /// The name, up to its first NUL (lossy for bytes that are not UTF-8).
    pub fn name_str(&self) -> &str {
        let len = self.name.iter().position(|&c| c == 0).unwrap_or(32);
        core::str::from_utf8(&self.name[..len]).unwrap_or("?")
    }
}

/// The machine, for `xl info` and `xl uptime`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysInfo {
    pub cpus: u32,
    pub max_domains: u32,
    /// Frames the allocator manages, and those free now.
    pub total_frames: u64,
    pub free_frames: u64,
    /// Since the microvisor started.
    pub uptime_ns: u64,
    pub vm_exits: u64,
    pub hypercalls: u64,
}
pub const PHYS_INFO_SIZE: usize = 48;
const _: () = assert!(core::mem::size_of::<PhysInfo>() == PHYS_INFO_SIZE);

impl PhysInfo {
    pub fn to_bytes(&self) -> [u8; PHYS_INFO_SIZE] {
        let mut b = [0u8; PHYS_INFO_SIZE];
        b[0..4].copy_from_slice(&self.cpus.to_le_bytes());
        b[4..8].copy_from_slice(&self.max_domains.to_le_bytes());
        b[8..16].copy_from_slice(&self.total_frames.to_le_bytes());
        b[16..24].copy_from_slice(&self.free_frames.to_le_bytes());
        b[24..32].copy_from_slice(&self.uptime_ns.to_le_bytes());
        b[32..40].copy_from_slice(&self.vm_exits.to_le_bytes());
        b[40..48].copy_from_slice(&self.hypercalls.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; PHYS_INFO_SIZE]) -> Self {
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        PhysInfo {
            cpus: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            max_domains: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            total_frames: u64_at(8),
            free_frames: u64_at(16),
            uptime_ns: u64_at(24),
            vm_exits: u64_at(32),
            hypercalls: u64_at(40),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let mut name = [0u8; 32];
        name[..5].copy_from_slice(b"linux");
        let e = DomctlEntry {
            domid: 7,
            state: DOMCTL_STATE_SHUTDOWN,
            reason: DOMCTL_REASON_CRASH,
            vcpus: 2,
            memory_bytes: 256 << 20,
            cpu_ns: 123,
            vm_exits: 4,
            hypercalls: 5,
            flags: DOMCTL_FLAG_CREATED,
            restarts: 1,
            name,
        };
        assert_eq!(DomctlEntry::from_bytes(&e.to_bytes()), e);
        assert_eq!(e.name_str(), "linux");
        let p = PhysInfo {
            cpus: 2,
            max_domains: 16,
            total_frames: 9,
            free_frames: 8,
            uptime_ns: 7,
            vm_exits: 6,
            hypercalls: 5,
        };
        assert_eq!(PhysInfo::from_bytes(&p.to_bytes()), p);
    }

    #[test]
    fn create_names_are_checked() {
        let mut a = CreateArgs {
            memory_mib: 16,
            vcpus: 1,
            ..CreateArgs::default()
        };
        assert_eq!(a.name_str(), None, "empty");
        a.name[..4].copy_from_slice(b"demo");
        assert_eq!(
            CreateArgs::from_bytes(&a.to_bytes()).name_str(),
            Some("demo")
        );
        a.name[6] = b'x';
        assert_eq!(a.name_str(), None, "bytes after the NUL");
        a.name = [b'a'; 32];
        assert_eq!(a.name_str(), None, "no NUL");
        a.name = [0; 32];
        a.name[..3].copy_from_slice(b"a b");
        assert_eq!(a.name_str(), None, "space");
    }
}
