//! `sched_op` (hypercall 29): sub-ops and shutdown reasons, from Xen's `sched.h`.

pub const SCHEDOP_YIELD: u64 = 0;
pub const SCHEDOP_BLOCK: u64 = 1;
/// Argument: a guest-virtual pointer to [`SchedShutdown`].
pub const SCHEDOP_SHUTDOWN: u64 = 2;
/// Argument: a guest-virtual pointer to a `sched_poll` (ports GVA @0, nr_ports u32 @8,
/// timeout u64 @16).
pub const SCHEDOP_POLL: u64 = 3;
pub const SCHED_POLL_SIZE: usize = 24;
/// Most ports one `SCHEDOP_poll` may name (Xen's limit is the domain's port count).
pub const SCHED_POLL_MAX_PORTS: u32 = 128;

/// `struct sched_shutdown`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SchedShutdown {
    pub reason: u32,
}
const _: () = assert!(core::mem::size_of::<SchedShutdown>() == 4);

pub const SHUTDOWN_POWEROFF: u32 = 0;
pub const SHUTDOWN_REBOOT: u32 = 1;
pub const SHUTDOWN_CRASH: u32 = 3;
pub const SHUTDOWN_WATCHDOG: u32 = 4;
