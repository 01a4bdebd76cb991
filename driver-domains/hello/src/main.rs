//! `hello`: a test stub domain. One image; the command line `mode=<m> key=value ...` picks
//! what it does (the microvisor's QEMU tests match the lines it prints):
//!
//! | mode | keys (default) | prints |
//! |---|---|---|
//! | `hello` (default) | | `hello from domain <domid>, vcpus=<n>, ram=<MiB> MiB`, `xen <major>.<minor><extra>`, `vcpu <id> online` (each other vCPU), `slept <ms> ms`, `hello: done` |
//! | `primes` | `limit` (100000) | `primes: <count> primes below <limit>` |
//! | `ticker` | `count` (5), `interval_ms` (100) | `tick 1` ... `tick <count>`, `ticker: done` |
//! | `spin` | | `spin: vcpu <id> spinning` (every vCPU), then spins forever |
//! | `victim` | `seconds` (2) | `victim: checksum <16 hex digits>`, `victim: memory intact` or `victim: MEMORY CHANGED` |
//! | `rogue` | `target` (required) | `rogue: writing to 0x<addr>`, `rogue: write did not fault` |
//! | `fuzz` | `calls` (20000 per vCPU), `seed` (1) | per vCPU `fuzz: vcpu <i>: <n> calls: ...`, then `fuzz: <N> calls: ok=<a> efault=<b> einval=<c> enosys=<d> other=<e>`, `fuzz: detail ...`, `fuzz: done` |
//! | `double-fetch` | `calls` (20000 per family; 4000 for grant map and unmap) | vCPU 1 flips argument fields between a valid and a hostile value while vCPU 0 calls each hypercall family with them: per family `double-fetch: <family>: <n> calls: <v> valid, <h> hostile, <i> inconsistent (<ms> ms)`, then `double-fetch: <N> calls in <ms> ms, <s> stores by vcpu 1, <i> inconsistent`, `double-fetch: done` |
//! | `evtchn-storm` | `rounds` (20) | on every vCPU at once: ports allocated until refused and closed, IPI ports bound, raised and closed; `evtchn-storm: <n> ports free ...`, `evtchn-storm: <n> ports free after: nothing leaked` (or `LEAKED`), `evtchn-storm: done` |
//! | `grant-storm` | `role` (`granter` or `mapper`), `peer`, `seconds` | see [`grantstorm`] |
//! | `dirty` | | `dirty: filled <n> pages` |
//! | `scrubcheck` | `wait_ms` (100) | first boot: `scrubcheck: first boot, waiting` (then reboots); later: `scrubcheck: scanned <n> pages, <z> nonzero bytes` |
//! | `crash` | | `panic: deliberate crash at <file>:<line>` (crashes) |
//! | `hcbench` | `calls` (10000) | `hcbench: <N> hypercalls in <us> us (<rate> per second); plain loop <us2> us` |
//! | `triplefault` | | `triplefault: loading an empty IDT and raising #UD` (then triple-faults) |
//! | `ring-back` | `frontends` (required, comma-separated names), `count` (0: any), `flood_limit` (100000), `spin_us` | per front-end `ring-back: <name> connected`, `ring-back: <name> done: <r> requests, <b> bad` or `ring-back: <name> misbehaved (<what>), disconnected`; then `ring-back: done` |
//! | `ring-front` | `backend` (required), `count` (1000), `batch` (0), `spin_us` | `ring-front: connected`, `ring-front: <N> messages, <lost> lost, <bad> bad, <ms> ms, <e> events, <h> hypercalls, <x> exits`, `ring-front: per message: <e> events, <h> hypercalls`, `ring-front: done` |
//! | `ring-hostile` | `backend` (required), `how` (`ring`, `gref` or `flood`), `flood` (200000), `spin_us` | `ring-hostile: <how> done`, `ring-hostile: backend closed` |
//! | `xs-flood` | | `xs-flood: node quota hit after <n> nodes (<ERR>)`, `... watch quota hit after <n> watches (<ERR>)`, `... transaction quota hit after <n> transactions (<ERR>)`, `xs-flood: done` |
//! | `xs-check` | `count` (100) | `xs-check: <N> writes and reads ok` (or the first failure) |
//! | `blk-test` | `device` (first assigned), `sectors` (`0,7,1000`), `pattern` (0x5a), `count` (2048), `timeout_ms` (5000) | `blk: found <bdf> <vendor>:<device>`, `blk: capacity <n> sectors`, `blk: wrote and verified <k> sectors` (or `blk: MISMATCH at sector <s>`), `blk: read <count> sectors in <ms> ms (<rate> sectors/s)`, `blk: <x.xx> exits per request, <n> interrupts`, `blk: done` |
//! | `dma-attack` | `targets` (required, comma-separated bus addresses), `device`, `bytes` (4096), `sector` (0), `timeout_ms` (2000) | per target `dma-attack: target <addr> issued`, `dma-attack: target <addr> result <ok\|error\|timeout\|device-broken\|refused>`; then `dma-attack: done` |
//! | `pci-snoop` | `bdf`, `bar` (both required) | `pci-snoop: sees <n> functions`, `pci-snoop: config read -> <errno>`, `pci-snoop: config write -> <errno>`, `pci-snoop: bind msix -> <errno>`, `pci-snoop: touching bar <addr>` (then the domain should be ended), `pci-snoop: bar read did not fault` |
//! | `blk-hostile` | `how` (`none`, `ring`, `gref`, `sector`, `segments`, `id`, `storm`), `vdev` (first), `go` (`console`: wait for a line `go`) | `blk-hostile: vbd <vdev>: <n> sectors, <mode>`, `blk-hostile: io ok` (or `write refused with status -1, read ok`), `blk-hostile: <how> done`, `blk-hostile: backend closed the vbd`, `blk-hostile: done` |
//! | `net-hostile` | `how` (`ring`, `slots`, `crosses`, `extra`, `storm`: cut off; `gref`, `size`: that frame refused), `vif` (first), `go` (`console`: wait for a line `go`) | `net-hostile: vif <handle>: mac <mac>, connected`, `net-hostile: frame ok`, `net-hostile: <how> done`, then `net-hostile: backend closed the vif` (or `net-hostile: frame refused with status -1, the next frame ok`, `net-hostile: closed cleanly (backend <state>)`), `net-hostile: done` |
//! | `domctl-eperm` | `target` (1) | `domctl-eperm: <op> on domain <target> -> <ret>` for each of the 11 domain-control operations, then `domctl-eperm: <n> of 11 operations refused with EPERM` |
//!
//! Every mode that finishes powers off (`SHUTDOWN_POWEROFF`). Each mode is in one of the
//! modules below; `spin`, `victim`'s and `hello`'s other vCPUs run on [`driver_domains::smp`].
//! The `ring-*` modes ([`ringdev`]) and `xs-*` modes ([`xs`]) talk to other domains through
//! xenstore, grant tables and event channels. The PCI passthrough modes ([`pcidev`]) drive
//! an assigned virtio-blk function through the runtime's `pci`, `dma` and `virtio` modules.
//! `blk-hostile` ([`blkfront`]) and `net-hostile` ([`netfront`]) are front-ends of blkback
//! and netback that misbehave on purpose.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

mod blkfront;
mod compute;
mod grantstorm;
mod hostile;
mod memory;
mod netfront;
mod pcidev;
mod ringdev;
mod vcpus;
mod xenbus_front;
mod xs;

use driver_domains::abi::sched::SHUTDOWN_CRASH;
use driver_domains::{cmdline, hypercall, println, BootInfo};

driver_domains::entry!(main);

fn main(info: &'static BootInfo) {
    match cmdline::get(info.cmdline, "mode").unwrap_or("hello") {
        "hello" => vcpus::hello(info),
        "primes" => compute::primes(info),
        "ticker" => vcpus::ticker(info),
        "spin" => vcpus::spin(info),
        "victim" => memory::victim(info),
        "rogue" => hostile::rogue(info),
        "fuzz" => hostile::fuzz(info),
        "double-fetch" => hostile::double_fetch(info),
        "evtchn-storm" => hostile::evtchn_storm(info),
        "grant-storm" => grantstorm::grant_storm(info),
        "dirty" => memory::dirty(info),
        "scrubcheck" => memory::scrubcheck(info),
        "crash" => hostile::crash(),
        "hcbench" => compute::hcbench(info),
        "triplefault" => hostile::triplefault(),
        "ring-back" => ringdev::ring_back(info),
        "ring-front" => ringdev::ring_front(info),
        "ring-hostile" => ringdev::ring_hostile(info),
        "xs-flood" => xs::xs_flood(info),
        "xs-check" => xs::xs_check(info),
        "blk-test" => pcidev::blk_test(info),
        "dma-attack" => pcidev::dma_attack(info),
        "pci-snoop" => pcidev::pci_snoop(info),
        "blk-hostile" => blkfront::blk_hostile(info),
        "net-hostile" => netfront::net_hostile(info),
        "domctl-eperm" => hostile::domctl_eperm(info),
        other => {
            println!("hello: unknown mode {other:?}");
            hypercall::shutdown(SHUTDOWN_CRASH);
        }
    }
}

/// The number under `key` on the command line, or `default`; a value that is not a number
/// is a crash with a message naming it.
fn arg(info: &BootInfo, key: &'static str, default: u64) -> u64 {
    cmdline::get_u64(info.cmdline, key, default).unwrap_or_else(|e| panic!("{e}"))
}
