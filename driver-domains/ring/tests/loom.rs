//! Loom models of the index protocol between a front-end thread and a back-end thread.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p xen-ring --release --test loom`.
//!
//! The ring lives in a loom-backed [`LocalRegion`]: index stores are release, index loads
//! acquire, entry bytes relaxed, and [`SharedPage::fence`] is a `SeqCst` fence, so loom
//! explores every reordering the protocol must survive. An event channel is a
//! [`loom::sync::Notify`]: `notify` leaves one pending wake-up, `wait` sleeps until there is
//! one. A lost wake-up therefore shows up as a deadlock, which loom reports.
//!
//! Two weakened copies of the shared page (no fence; relaxed indices) must make the same
//! model fail: they show that it can see the bugs it is there to catch.
#![cfg(loom)]

mod common;

use common::Word;
use loom::sync::{Arc, Notify};
use loom::thread;
use xen_ring::{BackRing, FrontRing, LocalRegion, SharedPage, Sring};

/// 72 bytes: the 64-byte header and two 4-byte slots.
type Region = LocalRegion<18>;

/// Requests sent per model: more than the two slots, so slots are reused.
const REQUESTS: u32 = 3;

/// Where both ends start: the indices cross `u32::MAX` during the run.
const START: u32 = u32::MAX - 1;

/// How the model reaches the region: faithfully, or with one guarantee taken away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Weakening {
    None,
    NoFence,
    RelaxedIndices,
}

#[derive(Clone)]
struct Shared {
    region: Arc<Region>,
    weakening: Weakening,
}

impl SharedPage for Shared {
    fn size_bytes(&self) -> usize {
        self.region.size_bytes()
    }
    fn load_u32(&self, offset: usize) -> u32 {
        if self.weakening == Weakening::RelaxedIndices {
            let mut bytes = [0; 4];
            self.region.read_bytes(offset, &mut bytes);
            return u32::from_le_bytes(bytes);
        }
        self.region.load_u32(offset)
    }
    fn store_u32(&self, offset: usize, value: u32) {
        if self.weakening == Weakening::RelaxedIndices {
            return self.region.write_bytes(offset, &value.to_le_bytes());
        }
        self.region.store_u32(offset, value)
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.region.read_bytes(offset, out)
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) {
        self.region.write_bytes(offset, data)
    }
    fn fence(&self) {
        if self.weakening != Weakening::NoFence {
            self.region.fence()
        }
    }
}

fn response_to(request: u32) -> u32 {
    request ^ 0xa5a5_0000
}

/// The front-end's event loop: send `REQUESTS` requests, collect their responses, sleep on
/// `wake_front` when there is nothing to do.
fn front_end(page: Shared, wake_back: Arc<Notify>, wake_front: Arc<Notify>) {
    let mut front = FrontRing::<Word, Word, _>::attach(page, START).unwrap();
    let (mut sent, mut received) = (0, 0);
    loop {
        while sent < REQUESTS && front.produce_request(&Word(sent)).is_ok() {
            sent += 1;
        }
        if front.push_requests() {
            wake_back.notify();
        }
        while let Some(response) = front.next_response().unwrap() {
            assert_eq!(
                response,
                Word(response_to(received)),
                "stale or torn response"
            );
            received += 1;
        }
        if received == REQUESTS {
            return;
        }
        if sent < REQUESTS && !front.is_full() {
            // Consuming freed a slot: send before sleeping.
            continue;
        }
        if !front.final_check_for_responses().unwrap() {
            wake_front.wait();
        }
    }
}

/// The back-end's event loop: answer every request, sleep on `wake_back` when idle.
fn back_end(page: Shared, wake_back: Arc<Notify>, wake_front: Arc<Notify>) {
    let mut back = BackRing::<Word, Word, _>::attach(page, START).unwrap();
    let mut answered = 0;
    loop {
        while let Some(request) = back.next_request().unwrap() {
            assert_eq!(request, Word(answered), "stale or torn request");
            back.produce_response(&Word(response_to(request.0)))
                .unwrap();
            answered += 1;
        }
        if back.push_responses() {
            wake_front.notify();
        }
        if answered == REQUESTS {
            return;
        }
        if !back.final_check_for_requests().unwrap() {
            wake_back.wait();
        }
    }
}

fn round_trip(weakening: Weakening) {
    let region = Arc::new(Region::new());
    Sring::init_at(&*region, START);
    let page = Shared { region, weakening };
    let wake_back = Arc::new(Notify::new());
    let wake_front = Arc::new(Notify::new());
    let back = {
        let (page, wake_back, wake_front) = (page.clone(), wake_back.clone(), wake_front.clone());
        thread::spawn(move || back_end(page, wake_back, wake_front))
    };
    front_end(page, wake_back, wake_front);
    back.join().unwrap();
}

fn model(weakening: Weakening) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        // Bounded so the whole file runs in about a minute; LOOM_MAX_PREEMPTIONS overrides.
        builder.preemption_bound = Some(3);
    }
    builder.check(move || round_trip(weakening));
}

#[test]
fn requests_and_responses_arrive_in_order_and_nobody_sleeps_through_work() {
    model(Weakening::None);
}

/// Requests only, explored without a preemption bound: the front-end publishes two
/// requests one at a time and never waits; the back-end drains and sleeps on `wake_back`.
#[test]
fn a_sleeping_back_end_always_sees_published_requests() {
    loom::model(|| {
        let region = Arc::new(Region::new());
        Sring::init_at(&*region, START);
        let page = Shared {
            region,
            weakening: Weakening::None,
        };
        let wake_back = Arc::new(Notify::new());
        let back = {
            let (page, wake_back) = (page.clone(), wake_back.clone());
            thread::spawn(move || {
                let mut back = BackRing::<Word, Word, _>::attach(page, START).unwrap();
                let mut received = 0;
                loop {
                    while let Some(request) = back.next_request().unwrap() {
                        assert_eq!(request, Word(received + 7), "stale or torn request");
                        received += 1;
                    }
                    if received == 2 {
                        return;
                    }
                    if !back.final_check_for_requests().unwrap() {
                        wake_back.wait();
                    }
                }
            })
        };
        let mut front = FrontRing::<Word, Word, _>::attach(page, START).unwrap();
        for value in [7, 8] {
            front.produce_request(&Word(value)).unwrap();
            if front.push_requests() {
                wake_back.notify();
            }
        }
        back.join().unwrap();
    });
}

/// Names the weakened model a child process runs (see [`weakened_models_are_caught`]).
const CHILD_ENV: &str = "XEN_RING_LOOM_WEAKENED";

/// Each weakened model must make loom fail. A failing loom model can abort the process
/// (a panic while its threads unwind), so each runs in a child copy of this test binary,
/// and the parent checks that the child failed for the expected reason.
#[test]
fn weakened_models_are_caught() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("no-fence") => return model(Weakening::NoFence),
        Ok("relaxed-indices") => return model(Weakening::RelaxedIndices),
        Ok(other) => panic!("unknown weakening {other}"),
        Err(_) => {}
    }
    let cases = [
        // Without the fence, store-then-load on both sides can miss each other's update.
        ("no-fence", "deadlock"),
        // Without release/acquire on the indices, a slot can be read before it is written.
        ("relaxed-indices", "stale or torn"),
    ];
    for (weakening, symptom) in cases {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "weakened_models_are_caught",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, weakening)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "loom accepted the {weakening} model"
        );
        assert!(
            stderr.contains(symptom),
            "{weakening}: expected {symptom:?}, got:\n{stderr}"
        );
    }
}
