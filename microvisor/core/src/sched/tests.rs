//! Tests of the scheduling policy: FIFO order, timers, wake-ups, domain removal, fairness.

use super::*;
use proptest::prelude::*;

fn v(domain: u16, vcpu: u8) -> VcpuRef {
    VcpuRef { domain, vcpu }
}

#[test]
fn fifo_round_robin_on_one_cpu() {
    let mut s: Scheduler<8> = Scheduler::new();
    for i in 0..3 {
        s.add(v(1, i), true).unwrap();
    }
    s.add(v(2, 0), false).unwrap();
    assert_eq!(s.runnable_count(), 3);
    let mut order = Vec::new();
    for _ in 0..6 {
        let next = s.pick_next(0, 0).unwrap();
        assert_eq!(s.state(next), Some(VcpuState::Running { cpu: 0 }));
        order.push(next.vcpu);
        s.preempt(next).unwrap();
    }
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    assert_eq!(s.state(v(2, 0)), Some(VcpuState::Down));
}

#[test]
fn add_errors() {
    let mut s: Scheduler<2> = Scheduler::new();
    s.add(v(1, 0), true).unwrap();
    assert_eq!(s.add(v(1, 0), false), Err(SchedError::AlreadyPresent));
    s.add(v(1, 1), true).unwrap();
    assert_eq!(s.add(v(1, 2), true), Err(SchedError::Full));
    assert_eq!(
        s.preempt(v(1, 0)),
        Err(SchedError::WrongState(VcpuState::Runnable))
    );
    assert_eq!(s.preempt(v(9, 0)), Err(SchedError::UnknownVcpu));
    assert_eq!(s.block(v(9, 0), None, 0), Err(SchedError::UnknownVcpu));
}

#[test]
fn blocked_with_deadline_is_picked_after_the_deadline() {
    let mut s: Scheduler<4> = Scheduler::new();
    s.add(v(1, 0), true).unwrap();
    let a = s.pick_next(0, 100).unwrap();
    assert_eq!(s.block(a, Some(1_000), 100), Ok(true));
    assert_eq!(
        s.state(a),
        Some(VcpuState::Blocked {
            wake_at_ns: Some(1_000)
        })
    );
    assert_eq!(s.next_deadline(), Some(1_000));
    assert_eq!(s.pick_next(0, 999), None);
    assert_eq!(s.pick_next(0, 1_000), Some(a));
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn blocked_without_deadline_waits_for_wake() {
    let mut s: Scheduler<4> = Scheduler::new();
    s.add(v(1, 0), true).unwrap();
    s.add(v(1, 1), true).unwrap();
    let a = s.pick_next(0, 0).unwrap();
    assert_eq!(s.block(a, None, 0), Ok(true));
    assert_eq!(s.next_deadline(), None);
    let b = s.pick_next(0, u64::MAX).unwrap();
    assert_eq!(b, v(1, 1));
    s.preempt(b).unwrap();
    assert!(s.wake(a));
    assert!(!s.wake(a)); // already runnable
                         // Woken after b was queued: b first.
    assert_eq!(s.pick_next(0, 0), Some(b));
    assert_eq!(s.pick_next(1, 0), Some(a));
}

#[test]
fn block_with_expired_deadline_stays_runnable() {
    let mut s: Scheduler<4> = Scheduler::new();
    s.add(v(1, 0), true).unwrap();
    let a = s.pick_next(0, 500).unwrap();
    assert_eq!(s.block(a, Some(500), 500), Ok(false));
    assert_eq!(s.state(a), Some(VcpuState::Runnable));
    assert_eq!(s.pick_next(0, 500), Some(a));
}

#[test]
fn wake_while_running_is_not_lost() {
    let mut s: Scheduler<4> = Scheduler::new();
    s.add(v(1, 0), true).unwrap();
    let a = s.pick_next(0, 0).unwrap();
    assert!(!s.wake(a)); // an event arrives while it still runs
    assert_eq!(s.block(a, None, 0), Ok(false));
    assert_eq!(s.pick_next(0, 0), Some(a));
    // The pending wake-up was consumed: the next block sleeps.
    assert_eq!(s.block(a, None, 0), Ok(true));
}

#[test]
fn next_deadline_is_the_earliest() {
    let mut s: Scheduler<4> = Scheduler::new();
    for i in 0..3 {
        s.add(v(1, i), true).unwrap();
    }
    let deadlines = [Some(300), None, Some(200)];
    for deadline in deadlines {
        let x = s.pick_next(0, 0).unwrap();
        s.block(x, deadline, 0).unwrap();
    }
    assert_eq!(s.next_deadline(), Some(200));
    assert_eq!(s.pick_next(0, 250), Some(v(1, 2)));
    assert_eq!(s.next_deadline(), Some(300));
}

#[test]
fn remove_domain_marks_running_vcpus_dead_until_retired() {
    let mut s: Scheduler<8> = Scheduler::new();
    for i in 0..3 {
        s.add(v(1, i), true).unwrap();
    }
    s.add(v(2, 0), true).unwrap();
    let running = s.pick_next(3, 0).unwrap();
    assert_eq!(running, v(1, 0));
    let blocked = s.pick_next(0, 0).unwrap();
    s.block(blocked, Some(10), 0).unwrap();
    s.remove_domain(1);
    assert!(s.is_dead(running));
    assert_eq!(s.state(running), Some(VcpuState::Dead));
    assert!(s.is_dead(blocked)); // forgotten
    assert_eq!(s.state(blocked), None);
    assert!(s.all_dead_or_down(1));
    assert!(!s.domain_quiesced(1));
    // Only domain 2 is left in the queue, and the expired timer of a removed vCPU is gone.
    assert_eq!(s.runnable_count(), 1);
    assert_eq!(s.pick_next(0, 100), Some(v(2, 0)));
    assert_eq!(s.pick_next(1, 100), None);
    // The CPU running the dead vCPU finds out and retires it.
    assert_eq!(
        s.preempt(running),
        Err(SchedError::WrongState(VcpuState::Dead))
    );
    assert!(!s.wake(running));
    assert_eq!(s.add(running, true), Err(SchedError::AlreadyPresent));
    assert!(s.retire(running));
    assert!(!s.retire(running));
    assert!(s.domain_quiesced(1));
    // The slot can be reused by a new domain 1.
    s.add(v(1, 0), true).unwrap();
    assert!(!s.is_dead(v(1, 0)));
}

#[test]
fn retire_only_dead_vcpus() {
    let mut s: Scheduler<2> = Scheduler::new();
    s.add(v(1, 0), true).unwrap();
    assert!(!s.retire(v(1, 0)));
    assert_eq!(s.state(v(1, 0)), Some(VcpuState::Runnable));
}

#[test]
fn down_and_up() {
    let mut s: Scheduler<4> = Scheduler::new();
    s.add(v(1, 0), true).unwrap();
    s.add(v(1, 1), false).unwrap();
    assert!(!s.all_dead_or_down(1));
    s.set_down(v(1, 0)).unwrap();
    assert_eq!(s.runnable_count(), 0);
    assert!(s.all_dead_or_down(1));
    assert_eq!(s.set_up(v(1, 1)), Ok(true));
    assert_eq!(s.set_up(v(1, 1)), Ok(false));
    let b = s.pick_next(0, 0).unwrap();
    assert_eq!(b, v(1, 1));
    // The running vCPU takes itself down (HLT with IF=0).
    s.set_down(b).unwrap();
    assert_eq!(s.state(b), Some(VcpuState::Down));
    assert!(s.all_dead_or_down(1));
    assert!(s.all_dead_or_down(7)); // no vCPUs at all
    assert_eq!(s.set_down(v(3, 0)), Err(SchedError::UnknownVcpu));
    assert_eq!(s.set_up(v(3, 0)), Err(SchedError::UnknownVcpu));
    assert!(!s.wake(b)); // down vCPUs are not woken by events
}

proptest! {
    /// With K always-runnable vCPUs on C <= K CPUs that preempt round-robin, every vCPU
    /// runs within any K consecutive picks.
    #[test]
    fn round_robin_is_fair(k in 1usize..24, cpus in 1usize..5, rounds in 1usize..6) {
        let cpus = cpus.min(k);
        let mut s: Scheduler<32> = Scheduler::new();
        for i in 0..k {
            s.add(v(i as u16 % 3, i as u8), true).unwrap();
        }
        let mut current: Vec<Option<VcpuRef>> = vec![None; cpus];
        let mut picks = Vec::new();
        for n in 0..k * rounds + k {
            let cpu = n % cpus;
            if let Some(prev) = current[cpu].take() {
                s.preempt(prev).unwrap();
            }
            let next = s.pick_next(cpu as u16, 0).unwrap();
            current[cpu] = Some(next);
            picks.push(next);
        }
        for window in picks.windows(k) {
            let mut seen: Vec<VcpuRef> = window.to_vec();
            seen.sort();
            seen.dedup();
            prop_assert_eq!(seen.len(), k);
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add(u16, u8, bool),
    Pick(u16, u64),
    Preempt(usize),
    Block(usize, Option<u64>, u64),
    Wake(u16, u8),
    Down(u16, u8),
    Up(u16, u8),
    RemoveDomain(u16),
    Retire(u16, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u16..3, 0u8..4, any::<bool>()).prop_map(|(d, i, r)| Op::Add(d, i, r)),
        (0u16..3, 0u64..100).prop_map(|(c, t)| Op::Pick(c, t)),
        any::<usize>().prop_map(Op::Preempt),
        (any::<usize>(), proptest::option::of(0u64..100), 0u64..100)
            .prop_map(|(c, w, t)| Op::Block(c, w, t)),
        (0u16..3, 0u8..4).prop_map(|(d, i)| Op::Wake(d, i)),
        (0u16..3, 0u8..4).prop_map(|(d, i)| Op::Down(d, i)),
        (0u16..3, 0u8..4).prop_map(|(d, i)| Op::Up(d, i)),
        (0u16..3).prop_map(Op::RemoveDomain),
        (0u16..3, 0u8..4).prop_map(|(d, i)| Op::Retire(d, i)),
    ]
}

proptest! {
    /// Whatever the sequence of calls (made the way the protocol says: preempt/block only
    /// by the CPU that runs the vCPU), the queue holds exactly the Runnable vCPUs, once
    /// each, and no two CPUs run the same vCPU.
    #[test]
    fn invariants_hold(ops in proptest::collection::vec(op(), 0..200)) {
        let mut s: Scheduler<8> = Scheduler::new();
        // What each of 3 CPUs runs.
        let mut cpus: [Option<VcpuRef>; 3] = [None; 3];
        for op in ops {
            match op {
                Op::Add(d, i, r) => { let _ = s.add(v(d, i), r); }
                Op::Pick(cpu, now) => {
                    if cpus[cpu as usize].is_none() {
                        cpus[cpu as usize] = s.pick_next(cpu, now);
                    }
                }
                Op::Preempt(c) => {
                    if let Some(x) = cpus[c % 3].take() {
                        if s.is_dead(x) {
                            prop_assert!(s.retire(x));
                        } else {
                            s.preempt(x).unwrap();
                        }
                    }
                }
                Op::Block(c, wake, now) => {
                    if let Some(x) = cpus[c % 3].take() {
                        if s.is_dead(x) {
                            prop_assert!(s.retire(x));
                        } else {
                            s.block(x, wake, now).unwrap();
                        }
                    }
                }
                Op::Wake(d, i) => { s.wake(v(d, i)); }
                Op::Down(d, i) => {
                    // Only a vCPU that is not running elsewhere, or by its own CPU.
                    if let Some(c) = cpus.iter().position(|c| *c == Some(v(d, i))) {
                        if !s.is_dead(v(d, i)) {
                            s.set_down(v(d, i)).unwrap();
                            cpus[c] = None;
                        }
                    } else {
                        let _ = s.set_down(v(d, i));
                    }
                }
                Op::Up(d, i) => { let _ = s.set_up(v(d, i)); }
                Op::RemoveDomain(d) => s.remove_domain(d),
                Op::Retire(d, i) => {
                    // Retiring a vCPU no CPU runs must be harmless.
                    if !cpus.contains(&Some(v(d, i))) {
                        s.retire(v(d, i));
                    }
                }
            }
            // The queue holds exactly the Runnable vCPUs, each once.
            let queued: Vec<VcpuRef> = s.run_queue.iter().copied().collect();
            let mut dedup = queued.clone();
            dedup.sort();
            dedup.dedup();
            prop_assert_eq!(dedup.len(), queued.len());
            for e in s.entries.iter().flatten() {
                let in_queue = queued.contains(&e.vcpu);
                prop_assert_eq!(in_queue, e.state == VcpuState::Runnable);
            }
            // What the scheduler thinks runs matches what the CPUs run.
            for (cpu, running) in cpus.iter().enumerate() {
                if let Some(x) = running {
                    let state = s.state(*x);
                    prop_assert!(
                        state == Some(VcpuState::Running { cpu: cpu as u16 }) || state == Some(VcpuState::Dead),
                        "cpu {} runs {:?} in state {:?}", cpu, x, state
                    );
                }
            }
            for e in s.entries.iter().flatten() {
                if let VcpuState::Running { cpu } = e.state {
                    prop_assert_eq!(cpus[cpu as usize], Some(e.vcpu));
                }
                if e.state == VcpuState::Dead {
                    prop_assert!(cpus.contains(&Some(e.vcpu)));
                }
            }
        }
    }
}

#[test]
fn the_cached_deadline_is_never_late_and_is_corrected() {
    let mut s: Scheduler<4> = Scheduler::new();
    s.add(v(1, 0), true).unwrap();
    s.add(v(1, 1), true).unwrap();
    assert_eq!(s.free_slots(), 2);
    let a = s.pick_next(0, 0).unwrap();
    let b = s.pick_next(1, 0).unwrap();
    assert!(s.block(a, Some(100), 10).unwrap());
    assert!(s.block(b, Some(300), 10).unwrap());
    assert_eq!(s.next_deadline(), Some(100));
    // An event wakes `a` early: the cache may still say 100 (never later than the truth).
    assert!(s.wake(a));
    assert_eq!(s.pick_next(0, 50), Some(a));
    assert!(s.next_deadline().is_some_and(|t| t <= 300));
    // Past 100, a pick looks at the entries and keeps only `b`'s deadline.
    s.preempt(a).unwrap();
    assert_eq!(s.pick_next(0, 150), Some(a));
    assert_eq!(s.next_deadline(), Some(300));
    s.preempt(a).unwrap();
    // `b`'s timer is due: it is woken and queued behind `a`.
    assert_eq!(s.pick_next(0, 300), Some(a));
    assert_eq!(s.pick_next(1, 300), Some(b));
    assert_eq!(s.next_deadline(), None);
}
