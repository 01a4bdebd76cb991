//! Scheduling policy: per-vCPU states and one FIFO run queue shared by all physical CPUs.
//!
//! A vCPU is in one of the [`VcpuState`]s. The run queue holds exactly the `Runnable` ones,
//! in the order they became runnable; [`Scheduler::pick_next`] first wakes the `Blocked`
//! vCPUs whose timer has expired, then takes the head. A vCPU that is preempted, yields, or
//! blocks with an already expired deadline goes to the tail, so with K runnable vCPUs each
//! runs at least once in any K consecutive picks.
//!
//! Protocol for the hardware crate (which holds the scheduler under a spin lock):
//! - `preempt`, `yield_`, `block` and `set_down` of a `Running` vCPU are called by the CPU
//!   that runs it, after the vCPU has exited: from then on that CPU no longer runs it.
//! - [`Scheduler::wake`] of a `Running` vCPU records the wake-up, so a `block` that races
//!   with an event does not sleep through it.
//! - [`Scheduler::remove_domain`] cannot stop a vCPU another CPU is running: that vCPU
//!   becomes `Dead` and keeps its slot. At each exit the CPU checks
//!   [`Scheduler::is_dead`]; if so it stops running the vCPU and calls
//!   [`Scheduler::retire`]. Once [`Scheduler::domain_quiesced`] is true no CPU runs any vCPU
//!   of the domain and its VMCBs and frames may be freed.
//!
//! No locking here; all times are in nanoseconds of the caller's monotonic clock.

use heapless::Deque;

/// A vCPU: the slot of its domain and its index in the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VcpuRef {
    pub domain: u16,
    pub vcpu: u8,
}

/// The scheduling state of a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Not started, or taken down (Xen's "down", `VCPUOP_down`, HLT with IF=0).
    Down,
    /// Waiting in the run queue.
    Runnable,
    /// Running on physical CPU `cpu`.
    Running { cpu: u16 },
    /// Waiting for an event, or until `wake_at_ns`.
    Blocked { wake_at_ns: Option<u64> },
    /// Its domain was removed while the vCPU was running; see [`Scheduler::retire`].
    Dead,
}

/// A request the scheduler refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedError {
    /// All `N` slots are taken.
    Full,
    /// The vCPU is already known (perhaps `Dead` and not yet retired).
    AlreadyPresent,
    /// The vCPU is not known.
    UnknownVcpu,
    /// The operation does not apply in the vCPU's current state.
    WrongState(VcpuState),
}

impl core::fmt::Display for SchedError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Full => write!(f, "no free scheduler slot"),
            Self::AlreadyPresent => write!(f, "vCPU already present"),
            Self::UnknownVcpu => write!(f, "unknown vCPU"),
            Self::WrongState(state) => write!(f, "operation not valid in state {state:?}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    vcpu: VcpuRef,
    state: VcpuState,
    /// A wake-up arrived while the vCPU was running.
    wake_pending: bool,
}

/// The scheduler for up to `N` vCPUs.
#[derive(Debug)]
pub struct Scheduler<const N: usize> {
    entries: [Option<Entry>; N],
    /// Exactly the `Runnable` vCPUs, oldest first.
    run_queue: Deque<VcpuRef, N>,
    /// At most the earliest `wake_at_ns` of the `Blocked` vCPUs (`None`: none has one), so
    /// [`pick_next`](Self::pick_next) looks at every entry only once a timer may be due.
    earliest: Option<u64>,
}

impl<const N: usize> Default for Scheduler<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Scheduler<N> {
    /// An empty scheduler.
    pub const fn new() -> Self {
        Scheduler {
            entries: [None; N],
            run_queue: Deque::new(),
            earliest: None,
        }
    }

    /// Adds a vCPU, `Runnable` (at the queue tail) or `Down`.
    pub fn add(&mut self, v: VcpuRef, runnable: bool) -> Result<(), SchedError> {
        if self.find(v).is_some() {
            return Err(SchedError::AlreadyPresent);
        }
        let slot = self
            .entries
            .iter_mut()
            .find(|e| e.is_none())
            .ok_or(SchedError::Full)?;
        let state = if runnable {
            VcpuState::Runnable
        } else {
            VcpuState::Down
        };
        *slot = Some(Entry {
            vcpu: v,
            state,
            wake_pending: false,
        });
        if runnable {
            self.enqueue(v);
        }
        Ok(())
    }

    /// Removes every vCPU of `domain`. Those running on a CPU become `Dead` until
    /// [`retire`](Self::retire)d; the others are forgotten at once.
    pub fn remove_domain(&mut self, domain: u16) {
        self.remove_from_queue(|v| v.domain == domain);
        for slot in self.entries.iter_mut() {
            let Some(entry) = slot else { continue };
            if entry.vcpu.domain != domain {
                continue;
            }
            match entry.state {
                VcpuState::Running { .. } | VcpuState::Dead => entry.state = VcpuState::Dead,
                _ => *slot = None,
            }
        }
    }

    /// Whether `v` must not run any more: it is `Dead` or unknown.
    pub fn is_dead(&self, v: VcpuRef) -> bool {
        matches!(self.state(v), None | Some(VcpuState::Dead))
    }

    /// Forgets a `Dead` vCPU once its CPU has stopped running it. Returns whether it was.
    pub fn retire(&mut self, v: VcpuRef) -> bool {
        match self.find(v) {
            Some((i, entry)) if entry.state == VcpuState::Dead => {
                self.entries[i] = None;
                true
            }
            _ => false,
        }
    }

    /// Whether no vCPU of `domain` is known any more (all retired or removed).
    pub fn domain_quiesced(&self, domain: u16) -> bool {
        !self
            .entries
            .iter()
            .flatten()
            .any(|e| e.vcpu.domain == domain)
    }

    /// The state of `v`, if known.
    pub fn state(&self, v: VcpuRef) -> Option<VcpuState> {
        self.find(v).map(|(_, entry)| entry.state)
    }

    /// Chooses what `cpu` runs next: wakes the `Blocked` vCPUs whose deadline is
    /// `<= now_ns`, then takes the queue head and marks it `Running { cpu }`.
    pub fn pick_next(&mut self, cpu: u16, now_ns: u64) -> Option<VcpuRef> {
        if self.earliest.is_some_and(|t| t <= now_ns) {
            let mut earliest = None;
            for i in 0..N {
                let Some(entry) = self.entries[i] else {
                    continue;
                };
                if let VcpuState::Blocked {
                    wake_at_ns: Some(t),
                } = entry.state
                {
                    if t <= now_ns {
                        self.make_runnable(i);
                    } else {
                        earliest = Some(earliest.map_or(t, |e: u64| e.min(t)));
                    }
                }
            }
            self.earliest = earliest;
        }
        let v = self.run_queue.pop_front()?;
        // The queue holds only known, runnable vCPUs.
        let slot = self.find(v).map(|(i, _)| i)?;
        if let Some(entry) = self.entries[slot].as_mut() {
            entry.state = VcpuState::Running { cpu };
            entry.wake_pending = false;
        }
        Some(v)
    }

    /// Takes a `Running` vCPU off its CPU and puts it at the queue tail.
    pub fn preempt(&mut self, v: VcpuRef) -> Result<(), SchedError> {
        let (i, _) = self.running(v)?;
        self.make_runnable(i);
        Ok(())
    }

    /// The vCPU gives up its CPU (`SCHEDOP_yield`): the same as [`preempt`](Self::preempt).
    pub fn yield_(&mut self, v: VcpuRef) -> Result<(), SchedError> {
        self.preempt(v)
    }

    /// Blocks a `Running` vCPU until [`wake`](Self::wake) or until `wake_at_ns`.
    ///
    /// If `wake_at_ns` is already `<= now_ns`, or a wake-up arrived while it ran, the vCPU
    /// stays runnable (at the queue tail). Returns whether it is now `Blocked`.
    pub fn block(
        &mut self,
        v: VcpuRef,
        wake_at_ns: Option<u64>,
        now_ns: u64,
    ) -> Result<bool, SchedError> {
        let (i, entry) = self.running(v)?;
        let expired = wake_at_ns.is_some_and(|t| t <= now_ns);
        if expired || entry.wake_pending {
            self.make_runnable(i);
            return Ok(false);
        }
        self.set_state(i, VcpuState::Blocked { wake_at_ns });
        if let Some(t) = wake_at_ns {
            self.earliest = Some(self.earliest.map_or(t, |e| e.min(t)));
        }
        Ok(true)
    }

    /// Wakes a `Blocked` vCPU (to the queue tail) and returns true. A `Running` vCPU
    /// remembers the wake-up for its next `block`; other states ignore it.
    pub fn wake(&mut self, v: VcpuRef) -> bool {
        let Some((i, entry)) = self.find(v) else {
            return false;
        };
        match entry.state {
            VcpuState::Blocked { .. } => {
                self.make_runnable(i);
                true
            }
            VcpuState::Running { .. } => {
                if let Some(entry) = self.entries[i].as_mut() {
                    entry.wake_pending = true;
                }
                false
            }
            _ => false,
        }
    }

    /// Takes a vCPU down. A `Running` vCPU must be taken down by the CPU that runs it.
    pub fn set_down(&mut self, v: VcpuRef) -> Result<(), SchedError> {
        let (i, entry) = self.find(v).ok_or(SchedError::UnknownVcpu)?;
        match entry.state {
            VcpuState::Dead => return Err(SchedError::WrongState(VcpuState::Dead)),
            VcpuState::Runnable => self.remove_from_queue(|q| q == v),
            _ => {}
        }
        self.set_state(i, VcpuState::Down);
        Ok(())
    }

    /// Brings a `Down` vCPU up (to the queue tail). Returns whether it was down.
    pub fn set_up(&mut self, v: VcpuRef) -> Result<bool, SchedError> {
        let (i, entry) = self.find(v).ok_or(SchedError::UnknownVcpu)?;
        match entry.state {
            VcpuState::Down => {
                self.make_runnable(i);
                Ok(true)
            }
            VcpuState::Dead => Err(SchedError::WrongState(VcpuState::Dead)),
            _ => Ok(false),
        }
    }

    /// The earliest `wake_at_ns` of the `Blocked` vCPUs: when an idle CPU must look again.
    pub fn next_deadline(&self) -> Option<u64> {
        // May be earlier than the true one (a timed vCPU woken by an event meanwhile): the
        // idle CPU then looks once more, and the next pick corrects it.
        self.earliest
    }

    /// How many more vCPUs [`add`](Self::add) would take.
    pub fn free_slots(&self) -> usize {
        self.entries.iter().filter(|e| e.is_none()).count()
    }

    /// Number of vCPUs waiting in the run queue.
    pub fn runnable_count(&self) -> usize {
        self.run_queue.len()
    }

    /// Whether every known vCPU of `domain` is `Dead` or `Down` (true if none is known):
    /// for a live domain, the moment it has shut itself down.
    pub fn all_dead_or_down(&self, domain: u16) -> bool {
        self.entries
            .iter()
            .flatten()
            .filter(|e| e.vcpu.domain == domain)
            .all(|e| matches!(e.state, VcpuState::Dead | VcpuState::Down))
    }

    /// The slot index of `v` and a copy of its entry.
    fn find(&self, v: VcpuRef) -> Option<(usize, Entry)> {
        self.entries
            .iter()
            .enumerate()
            .find_map(|(i, e)| e.filter(|e| e.vcpu == v).map(|e| (i, e)))
    }

    /// The slot index and entry of `v`, which must be `Running`.
    fn running(&self, v: VcpuRef) -> Result<(usize, Entry), SchedError> {
        let (i, entry) = self.find(v).ok_or(SchedError::UnknownVcpu)?;
        match entry.state {
            VcpuState::Running { .. } => Ok((i, entry)),
            other => Err(SchedError::WrongState(other)),
        }
    }

    /// Sets the state of the entry at slot `i` and clears its pending wake-up.
    fn set_state(&mut self, i: usize, state: VcpuState) {
        if let Some(entry) = self.entries[i].as_mut() {
            entry.state = state;
            entry.wake_pending = false;
        }
    }

    /// Marks the entry at slot `i` runnable and queues it at the tail.
    fn make_runnable(&mut self, i: usize) {
        self.set_state(i, VcpuState::Runnable);
        if let Some(entry) = self.entries[i] {
            self.enqueue(entry.vcpu);
        }
    }

    fn enqueue(&mut self, v: VcpuRef) {
        // Cannot fail: the queue holds only runnable vCPUs, at most one per entry, and
        // there are `N` entries for a queue of capacity `N`.
        let _ = self.run_queue.push_back(v);
    }

    fn remove_from_queue(&mut self, mut drop: impl FnMut(VcpuRef) -> bool) {
        for _ in 0..self.run_queue.len() {
            if let Some(v) = self.run_queue.pop_front() {
                if !drop(v) {
                    self.enqueue(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
