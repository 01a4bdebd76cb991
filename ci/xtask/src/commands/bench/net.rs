//! `cargo xtask bench --only net`: the Linux guest's network through netback against the
//! same guest on QEMU's own `virtio-net-pci` NIC behind `intel-iommu`, both on QEMU's user
//! network.
//!
//! Both boots run `netbench serve` (`ci/netbench`, built static and added to the benchmark's
//! initramfs with a script `/init` runs through `guest.run=`), and once it says it is ready
//! the bench drives it from the host (`netbench::host`) through two ports QEMU forwards from
//! 127.0.0.1 to the guest, one TCP and one UDP. Four tests of [`TEST_SECONDS`] each, every
//! time taken on the host's clock:
//!
//! - `tcp-host-to-guest`: one connection, the host writes for the test's time and the time
//!   runs until the guest answers how much arrived (all of it, or the test fails);
//! - `tcp-guest-to-host`: one connection, the guest writes for the test's time, the host
//!   reads to the end;
//! - `udp-host-to-guest`, `udp-guest-to-host`: 64-byte datagrams (106-byte frames), at most
//!   256 of them unacknowledged, the receiver acknowledging every 32nd: the small frames a
//!   second the path carries without overrunning one of its queues.
//!
//! The boots alternate, `--runs` of each; the medians and their ratios are reported. Through
//! the microvisor, netback runs with `stats=idle` and prints its counts whenever the vif has
//! been idle a moment (between two tests, which the bench separates by [`PAUSE`]); the
//! difference across each test gives its per-frame figures: grant copies, notifications to
//! the guest, netback's events sent, hypercalls and VM exits. The guest counts its own
//! interrupts and packets in each test (both boots). The guest's and netback's VM exits and
//! hypercalls over their whole lives come from the microvisor's teardown lines. netback's
//! footprint is its image's loaded size plus its heap in use, less its buffers.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netbench::host::Client;
use netbench::GuestCounts;
use regex::Regex;
use serde::Serialize;

use super::disk::{append_to_initramfs, build_static, loaded_bytes, median_index_f64};
use super::{
    boot_direct_watched, boot_machine_watched, domain_counters, failure, median_f64, pack,
    BenchArgs, DomainCounters, BENCH_CPUS, LINUX_MEMORY_MIB,
};
use crate::commands;
use crate::linux::{self, cpio::Archive};
use crate::qemu::DirectLinux;
use crate::serial::{Capture, Emit, HostTask, Watch};
use crate::workspace::Workspace;

/// The network system booted through the microvisor, relative to the workspace root.
pub const NET_SYSTEM: &str = "ci/bench/net/system.cfg";
/// The initramfs both boots use, written beside the Linux images.
pub const NET_INITRAMFS: &str = "bench-net-initramfs";
/// Seconds each test runs.
const TEST_SECONDS: u64 = 5;
/// The quiet moment before each test and after the last: netback prints its counts once
/// the vif has been idle for 300 ms.
const PAUSE: Duration = Duration::from_millis(1500);
/// The direct boot's kernel command line: the guest's console on the UART, the IOMMU on
/// (the NIC is `iommu_platform=on`, as netback's is), the benchmark, then power-off.
const DIRECT_CMDLINE: &str = "console=ttyS0 intel_iommu=on guest.ip=10.0.2.15/24,10.0.2.2 \
    guest.run=/bench-net.sh guest.poweroff=1";
/// The guest's line that starts the host's half.
const READY: &str = r"netbench: ready on tcp";
/// The host's line when its half failed.
const FAILED: &str = r"^xtask: netbench FAILED";
/// The domains whose counters are read.
const GUEST_DOMAIN: &str = "linux";
const NETBACK_DOMAIN: &str = "netback";
/// netback's footprint goal, beside its buffers.
const FOOTPRINT_GOAL_BYTES: u64 = 2 << 20;
/// netback's NIC receive buffers, which its footprint does not count: driver-domains'
/// `NET_QUEUE_SIZE` buffers of `NET_BUFFER_BYTES` (checked by a test).
const NIC_RX_BUFFER_BYTES: u64 = 64 * 2048;
/// How the two boots' NICs differ, for the report.
const DIRECT_DIFFERS: &str = "direct: Linux booted by QEMU on virtio-net-pci \
    (iommu_platform=on) behind intel-iommu, intel_iommu=on, the guest's own virtio-net driver, \
    to which QEMU's user network offers no segmentation offload; via netback: the same NIC \
    passed through to netback, eth0 from xen-netfront on netback's bridge (netback takes the \
    guest's GSO frames and cuts them into segments for the NIC)";

/// One test: its name, unit and the goal of its ratio microvisor/direct (if the issue set one).
struct Test {
    name: &'static str,
    unit: &'static str,
    goal: Option<f64>,
}

const TESTS: [Test; 4] = [
    Test {
        name: "tcp-host-to-guest",
        unit: "MB/s",
        goal: Some(0.8),
    },
    Test {
        name: "tcp-guest-to-host",
        unit: "MB/s",
        goal: Some(0.8),
    },
    Test {
        name: "udp-host-to-guest",
        unit: "pps",
        goal: None,
    },
    Test {
        name: "udp-guest-to-host",
        unit: "pps",
        goal: None,
    },
];

/// The script `/init` runs: once eth0 has its carrier and the gateway answers, netbench.
const SCRIPT: &str = "#!/bin/sh\n\
# Written by `cargo xtask bench`: the network benchmark's guest half, driven by the host.\n\
tries=0\n\
while [ \"$(cat /sys/class/net/eth0/carrier 2>/dev/null)\" != 1 ] && [ $tries -lt 100 ]; do\n\
    usleep 100000\n\
    tries=$((tries + 1))\n\
done\n\
ping -c 1 -W 5 10.0.2.2 > /dev/null || echo \"netbench: the gateway did not answer a ping\"\n\
exec /bin/netbench serve eth0\n";

#[derive(Serialize)]
pub struct NetReport {
    test_seconds: u64,
    /// UDP payload bytes of the datagram tests, and the frame they make.
    datagram_bytes: usize,
    datagram_frame_bytes: usize,
    direct_differs: &'static str,
    /// Per test: direct and microvisor values, run by run, medians, ratio.
    tests: Vec<TestRow>,
    /// Per test, per frame through netback (from the microvisor boot whose value is the
    /// median), and the guest's interrupts per packet in both kinds of boot.
    per_frame: Vec<PerFrame>,
    /// The guest's and netback's VM exits and hypercalls over their whole lives, from the
    /// microvisor boot whose tcp-host-to-guest value is the median.
    whole_life: WholeLife,
    netback_footprint: Option<Footprint>,
}

#[derive(Serialize)]
struct TestRow {
    test: &'static str,
    unit: &'static str,
    direct: Vec<f64>,
    microvisor: Vec<f64>,
    direct_median: f64,
    microvisor_median: f64,
    ratio: f64,
    goal: Option<f64>,
    /// The host's detail line of the median microvisor boot.
    microvisor_detail: String,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq)]
struct PerFrame {
    test: &'static str,
    /// Through netback, both ways, across the test (`None`: netback printed no counts
    /// around it).
    netback: Option<NetbackPerFrame>,
    /// The guest's interrupts of its network driver per packet (received and sent), in the
    /// median boot of each kind.
    guest_interrupts_per_packet_direct: f64,
    guest_interrupts_per_packet_microvisor: f64,
    guest_packets_direct: u64,
    guest_packets_microvisor: u64,
}

#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq)]
struct NetbackPerFrame {
    /// Frames through the vif: from the guest (tx) and to it (rx).
    frames: u64,
    tx_frames: u64,
    rx_frames: u64,
    bytes: f64,
    grant_copies: f64,
    notifications_to_guest: f64,
    netback_events_sent: f64,
    netback_hypercalls: f64,
    netback_vm_exits: f64,
}

#[derive(Serialize, Default)]
struct WholeLife {
    /// Frames through the vif over its life (its closing line, or netback's last counts).
    vif_frames: Option<u64>,
    guest: Option<DomainCounters>,
    netback: Option<DomainCounters>,
}

#[derive(Serialize)]
struct Footprint {
    image_bytes: u64,
    heap_in_use_bytes: u64,
    /// Its grant copies' bounce buffer and its NIC's receive buffers.
    buffer_bytes: u64,
    /// image + heap in use - buffers.
    beside_buffers_bytes: u64,
    goal_bytes: u64,
}

/// What the host measured in one test.
#[derive(Clone, Debug)]
struct Measured {
    value: f64,
    detail: String,
    guest: GuestCounts,
}

/// What the host's half of one boot left: each test's measurement, or why it stopped.
#[derive(Default)]
struct HostRun {
    measured: Vec<Measured>,
    error: Option<String>,
}

/// netback's counts from one `stats:` line and the `own:` line after it, or its closing
/// line, by name.
type Stats = BTreeMap<&'static str, u64>;

const STATS_KEYS: [&str; 6] = [
    "tx frames",
    "tx B",
    "rx frames",
    "rx B",
    "copies",
    "notifications",
];
const OWN_KEYS: [&str; 5] = ["events", "hypercalls", "exits", "KiB heap", "KiB bounce"];

/// Reads the numbers of netback's lines about the vif of `linux`:
/// `vif 4.0 of linux: stats: tx 10 frames 900 B, rx 8 frames 700 B, 18 copies, 9 notifications`
/// (`part` "stats"), the same after `closed (<why>):` with more in brackets (`part` "closed"),
/// or `vif 4.0 of linux: own: 4 events, 50 hypercalls, 70 exits, 300 KiB heap, 64 KiB bounce`
/// (`part` "own").
fn parse_stats(line: &str, part: &str) -> Option<Stats> {
    let prefix = match part {
        "closed" => Regex::new(r"vif \S+ of linux closed \([^)]*\): ").ok()?,
        _ => Regex::new(&format!(r"vif \S+ of linux: {part}: ")).ok()?,
    };
    let rest = &line[prefix.find(line)?.end()..];
    let mut stats = Stats::new();
    if part == "own" {
        for key in OWN_KEYS {
            let pattern = Regex::new(&format!(r"(\d+) {}(,|$)", regex::escape(key))).ok()?;
            stats.insert(key, pattern.captures(rest)?[1].parse().ok()?);
        }
        return Some(stats);
    }
    let pattern = Regex::new(
        r"^tx (\d+) frames (\d+) B(?: \([^)]*\))?, rx (\d+) frames (\d+) B(?: \([^)]*\))?, (\d+) copies, (\d+) notifications",
    )
    .ok()?;
    let found = pattern.captures(rest)?;
    for (index, key) in STATS_KEYS.into_iter().enumerate() {
        stats.insert(key, found[index + 1].parse().ok()?);
    }
    Some(stats)
}

/// What one boot printed.
#[derive(Default)]
struct Boot {
    measured: Vec<Measured>,
    /// netback's counts (stats and own lines together), each with the index of its line.
    stats: Vec<(usize, Stats)>,
    /// Each test's `start` and `end` lines, by index.
    marks: BTreeMap<&'static str, (usize, usize)>,
    /// The index of `netbench: done`.
    done_at: Option<usize>,
    /// netback's closing line of the vif.
    closed: Option<Stats>,
    guest: Option<DomainCounters>,
    netback: Option<DomainCounters>,
}

fn read_boot(capture: &Capture, run: HostRun, label: &str) -> Result<Boot> {
    if let Some(error) = run.error {
        bail!(failure(
            label,
            &format!("the host's half failed: {error}"),
            capture
        ));
    }
    for line in &capture.lines {
        if line.text.contains("netbench:") && line.text.contains("FAILED") {
            bail!(failure(label, &line.text, capture));
        }
    }
    if run.measured.len() != TESTS.len() {
        bail!(failure(
            label,
            &format!(
                "the host measured {} of the {} tests (did the guest print `{READY}`?)",
                run.measured.len(),
                TESTS.len()
            ),
            capture
        ));
    }
    let mut boot = Boot {
        measured: run.measured,
        ..Boot::default()
    };
    let mut pending: Option<Stats> = None;
    let mut starts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (index, line) in capture.lines.iter().enumerate() {
        let text = line.text.as_str();
        if let Some(stats) = parse_stats(text, "stats") {
            pending = Some(stats);
        } else if let Some(own) = parse_stats(text, "own") {
            if let Some(mut stats) = pending.take() {
                stats.extend(own);
                boot.stats.push((index, stats));
            }
        } else if text.contains("of linux closed (") {
            // The console domain cuts lines at 200 bytes: the rest is on the next line.
            let next = capture.lines.get(index + 1).map_or("", |next| {
                next.text.strip_prefix("[netback] ").unwrap_or(&next.text)
            });
            boot.closed = parse_stats(text, "closed")
                .or_else(|| parse_stats(&format!("{text}{next}"), "closed"));
        } else if text.contains("netbench: done") {
            boot.done_at = Some(index);
        }
        for test in &TESTS {
            if text.ends_with(&format!("netbench: {} start", test.name)) {
                starts.insert(test.name, index);
            } else if text.contains(&format!("netbench: {} end:", test.name)) {
                if let Some(&start) = starts.get(test.name) {
                    boot.marks.insert(test.name, (start, index));
                }
            }
        }
    }
    let lines: Vec<&str> = capture
        .lines
        .iter()
        .map(|line| line.text.as_str())
        .collect();
    boot.guest = domain_counters(&lines, GUEST_DOMAIN);
    boot.netback = domain_counters(&lines, NETBACK_DOMAIN);
    Ok(boot)
}

/// netback's counts across test `index`: the last before it started, and the last before
/// the next test started (or the benchmark ended), which must come after it ended.
fn across(boot: &Boot, index: usize) -> Option<(&Stats, &Stats)> {
    let &(start, end) = boot.marks.get(TESTS[index].name)?;
    let next = TESTS
        .get(index + 1)
        .and_then(|test| boot.marks.get(test.name))
        .map(|&(start, _)| start)
        .or(boot.done_at)
        .unwrap_or(usize::MAX);
    let before = boot.stats.iter().rfind(|(at, _)| *at < start)?;
    let after = boot.stats.iter().rfind(|(at, _)| *at < next)?;
    (after.0 > end).then_some((&before.1, &after.1))
}

fn per_frame(before: &Stats, after: &Stats) -> NetbackPerFrame {
    let delta = |key: &str| after[key].saturating_sub(before[key]);
    let (tx_frames, rx_frames) = (delta("tx frames"), delta("rx frames"));
    let frames = tx_frames + rx_frames;
    let per = |value: u64| value as f64 / frames.max(1) as f64;
    NetbackPerFrame {
        frames,
        tx_frames,
        rx_frames,
        bytes: per(delta("tx B") + delta("rx B")),
        grant_copies: per(delta("copies")),
        notifications_to_guest: per(delta("notifications")),
        netback_events_sent: per(delta("events")),
        netback_hypercalls: per(delta("hypercalls")),
        netback_vm_exits: per(delta("exits")),
    }
}

/// Builds netbench as a static program and writes the benchmark's initramfs: the guest's
/// own, followed by `/bin/netbench` and `/bench-net.sh`.
fn make_initramfs(
    workspace: &Workspace,
    images: &linux::LinuxImages,
) -> Result<std::path::PathBuf> {
    let program = build_static(workspace, "netbench")?;
    let mut archive = Archive::new();
    archive.file("bin/netbench", 0o755, &program)?;
    archive.file("bench-net.sh", 0o755, SCRIPT.as_bytes())?;
    append_to_initramfs(images, archive, NET_INITRAMFS)
}

/// QEMU's arguments for the NIC (as the scenarios attach it) with the two ports forwarded
/// from 127.0.0.1 to netbench's.
fn nic_args(tcp_host: u16, udp_host: u16) -> Vec<std::ffi::OsString> {
    let mut args = commands::nic_args(&[commands::Forward {
        host: tcp_host,
        guest: netbench::TCP_PORT,
    }]);
    // `-netdev user,...`: QEMU's user network takes any number of `hostfwd=`s.
    if let Some(netdev) = args.get_mut(1) {
        netdev.push(format!(
            ",hostfwd=udp:127.0.0.1:{udp_host}-{}:{}",
            commands::GUEST_ADDR,
            netbench::UDP_PORT
        ));
    }
    args
}

/// A UDP port on 127.0.0.1 that nothing uses just now.
fn free_udp_port() -> Result<u16> {
    let socket =
        UdpSocket::bind("127.0.0.1:0").context("could not find a free UDP port on 127.0.0.1")?;
    Ok(socket.local_addr()?.port())
}

/// The host's half of one boot, started once the guest is ready; what it measured goes to
/// `run`, and a line per test to the log.
fn host_task(tcp: SocketAddr, udp: SocketAddr, run: Arc<Mutex<HostRun>>) -> Result<HostTask> {
    Ok(HostTask {
        seen: None,
        after: Regex::new(READY)?,
        run: Arc::new(move |emit: Emit| {
            if let Err(e) = drive(tcp, udp, &run, &mut *emit) {
                emit(format!("xtask: netbench FAILED: {e}"));
                run.lock().expect("not poisoned").error = Some(e.to_string());
            }
        }),
    })
}

fn drive(
    tcp: SocketAddr,
    udp: SocketAddr,
    run: &Mutex<HostRun>,
    emit: Emit,
) -> std::io::Result<()> {
    let mut client = Client::connect(tcp, udp)?;
    let time = Duration::from_secs(TEST_SECONDS);
    for test in &TESTS {
        std::thread::sleep(PAUSE);
        client.begin(test.name)?;
        let (value, detail) = match test.name {
            "tcp-host-to-guest" | "tcp-guest-to-host" => {
                let transfer = if test.name == "tcp-host-to-guest" {
                    client.tcp_to_guest(time)?
                } else {
                    client.tcp_from_guest(time)?
                };
                let detail = format!(
                    "{} B in {:.2} s",
                    transfer.bytes,
                    transfer.elapsed.as_secs_f64()
                );
                (transfer.mb_per_s(), detail)
            }
            _ => {
                let datagrams = if test.name == "udp-host-to-guest" {
                    client.udp_to_guest(time)?
                } else {
                    client.udp_from_guest(time)?
                };
                let detail = format!(
                    "{} datagrams counted in {:.2} s; {} sent, {} received, {} window stalls",
                    datagrams.counted,
                    datagrams.elapsed.as_secs_f64(),
                    datagrams.sent,
                    datagrams.received,
                    datagrams.stalls
                );
                (datagrams.per_second(), detail)
            }
        };
        let guest = client.end(test.name)?;
        emit(format!(
            "xtask: netbench: {} {value:.1} {} ({detail}); guest eth0: {guest}",
            test.name, test.unit
        ));
        run.lock().expect("not poisoned").measured.push(Measured {
            value,
            detail,
            guest,
        });
    }
    std::thread::sleep(PAUSE);
    client.quit()
}

/// The forwarded ports of one boot, the watch that drives netbench once the guest is ready,
/// and where the host's half leaves its results.
fn prepare(timeout: Duration) -> Result<(Vec<std::ffi::OsString>, Watch, Arc<Mutex<HostRun>>)> {
    let (tcp_host, udp_host) = (commands::free_port()?, free_udp_port()?);
    let run = Arc::new(Mutex::new(HostRun::default()));
    let task = host_task(
        SocketAddr::from(([127, 0, 0, 1], tcp_host)),
        SocketAddr::from(([127, 0, 0, 1], udp_host)),
        run.clone(),
    )?;
    let watch = Watch {
        timeout: Some(timeout),
        // The guest would wait for the host to the time limit.
        stop_when: Some(Regex::new(FAILED)?),
        task: Some(task),
        ..Watch::default()
    };
    Ok((nic_args(tcp_host, udp_host), watch, run))
}

fn take(run: &Arc<Mutex<HostRun>>) -> HostRun {
    std::mem::take(&mut *run.lock().expect("not poisoned"))
}

pub fn bench_net(
    workspace: &Workspace,
    qemu: &Path,
    args: &BenchArgs,
    timeout: Duration,
) -> Result<NetReport> {
    let images = linux::ensure(workspace)?;
    let initramfs = make_initramfs(workspace, &images)?;
    let packed = pack(workspace, NET_SYSTEM)?;
    let mut direct_boots = Vec::new();
    let mut microvisor_boots = Vec::new();
    for round in 1..=args.runs {
        let (nic, watch, run) = prepare(timeout)?;
        let mut extra = vec!["-device".into(), "intel-iommu,intremap=on".into()];
        extra.extend(nic);
        let direct = DirectLinux {
            qemu: qemu.to_path_buf(),
            kernel: images.vmlinux.clone(),
            initrd: initramfs.clone(),
            cmdline: DIRECT_CMDLINE.to_string(),
            cpus: BENCH_CPUS,
            memory_mib: LINUX_MEMORY_MIB,
            multi_threaded_tcg: false,
            extra_args: extra,
        };
        let capture = boot_direct_watched(workspace, &direct, &watch, "bench-net-direct")?;
        let boot = read_boot(&capture, take(&run), "net (direct)")?;
        eprintln!(
            "bench: net direct boot {round}/{}: {}",
            args.runs,
            summary(&boot)
        );
        direct_boots.push(boot);

        let (nic, watch, run) = prepare(timeout)?;
        let mut options = commands::MachineOptions::standard(BENCH_CPUS, LINUX_MEMORY_MIB);
        options.extra_args = nic;
        let capture = boot_machine_watched(workspace, qemu, &packed, options, &watch)?;
        let boot = read_boot(&capture, take(&run), "net (microvisor)")?;
        if boot.guest.is_none() {
            bail!(failure(
                "net (microvisor)",
                "no teardown counters for the guest",
                &capture
            ));
        }
        eprintln!(
            "bench: net microvisor boot {round}/{}: {}",
            args.runs,
            summary(&boot)
        );
        microvisor_boots.push(boot);
    }

    let mut tests = Vec::new();
    let mut per_frame_rows = Vec::new();
    for (index, test) in TESTS.iter().enumerate() {
        let values = |boots: &[Boot]| -> Vec<f64> {
            boots.iter().map(|b| b.measured[index].value).collect()
        };
        let (direct, microvisor) = (values(&direct_boots), values(&microvisor_boots));
        let (direct_median, microvisor_median) = (median_f64(&direct), median_f64(&microvisor));
        let (median_direct, median_microvisor) = (
            &direct_boots[median_index_f64(&direct)],
            &microvisor_boots[median_index_f64(&microvisor)],
        );
        let guest_per_packet = |boot: &Boot| {
            let counts = boot.measured[index].guest;
            let packets = counts.rx_packets + counts.tx_packets;
            (counts.interrupts as f64 / packets.max(1) as f64, packets)
        };
        let (direct_irqs, direct_packets) = guest_per_packet(median_direct);
        let (microvisor_irqs, microvisor_packets) = guest_per_packet(median_microvisor);
        per_frame_rows.push(PerFrame {
            test: test.name,
            netback: across(median_microvisor, index)
                .map(|(before, after)| per_frame(before, after)),
            guest_interrupts_per_packet_direct: direct_irqs,
            guest_interrupts_per_packet_microvisor: microvisor_irqs,
            guest_packets_direct: direct_packets,
            guest_packets_microvisor: microvisor_packets,
        });
        tests.push(TestRow {
            test: test.name,
            unit: test.unit,
            direct,
            microvisor,
            direct_median,
            microvisor_median,
            ratio: microvisor_median / direct_median.max(f64::MIN_POSITIVE),
            goal: test.goal,
            microvisor_detail: median_microvisor.measured[index].detail.clone(),
        });
    }

    // The whole-life counters and the footprint from the boot with the median
    // tcp-host-to-guest value.
    let first: Vec<f64> = microvisor_boots
        .iter()
        .map(|b| b.measured[0].value)
        .collect();
    let mut boot = microvisor_boots.swap_remove(median_index_f64(&first));
    let last = boot.stats.last().map(|(_, stats)| stats);
    let frames = |stats: &Stats| stats["tx frames"] + stats["rx frames"];
    let whole_life = WholeLife {
        vif_frames: boot.closed.as_ref().or(last).map(frames),
        guest: boot.guest.take(),
        netback: boot.netback.take(),
    };
    let last = boot.stats.last().map(|(_, stats)| stats);
    let netback_footprint = match last {
        Some(stats) => {
            let image_bytes = loaded_bytes(&workspace.release_dir().join("netback"))?;
            let heap = stats["KiB heap"] * 1024;
            let buffers = stats["KiB bounce"] * 1024 + NIC_RX_BUFFER_BYTES;
            Some(Footprint {
                image_bytes,
                heap_in_use_bytes: heap,
                buffer_bytes: buffers,
                beside_buffers_bytes: (image_bytes + heap).saturating_sub(buffers),
                goal_bytes: FOOTPRINT_GOAL_BYTES,
            })
        }
        None => None,
    };
    Ok(NetReport {
        test_seconds: TEST_SECONDS,
        datagram_bytes: netbench::DATAGRAM_BYTES,
        datagram_frame_bytes: netbench::DATAGRAM_FRAME_BYTES,
        direct_differs: DIRECT_DIFFERS,
        tests,
        per_frame: per_frame_rows,
        whole_life,
        netback_footprint,
    })
}

fn summary(boot: &Boot) -> String {
    TESTS
        .iter()
        .zip(&boot.measured)
        .map(|(test, measured)| format!("{} {:.1} {}", test.name, measured.value, test.unit))
        .collect::<Vec<_>>()
        .join(", ")
}

fn goal_text(ratio: f64, goal: Option<f64>) -> String {
    match goal {
        Some(goal) if ratio >= goal => format!(">= {goal}, met"),
        Some(goal) => format!(">= {goal}, not met"),
        None => "none set".to_string(),
    }
}

pub fn print_net(report: &NetReport, runs: u32) {
    println!();
    println!(
        "Network: the Linux guest's eth0 on QEMU's user network, {} s per test, {runs} boot(s) of each, interleaved (medians):",
        report.test_seconds
    );
    println!(
        "  {:<18} {:>14} {:>14} {:>7}   goal",
        "test", "virtio direct", "via netback", "ratio"
    );
    for row in &report.tests {
        println!(
            "  {:<18} {:>9.1} {:<4} {:>9.1} {:<4} {:>7.2}   {}",
            row.test,
            row.direct_median,
            row.unit,
            row.microvisor_median,
            row.unit,
            row.ratio,
            goal_text(row.ratio, row.goal)
        );
    }
    println!(
        "  (TCP: one connection, MB = 10^6 bytes; UDP: {}-byte datagrams ({}-byte frames), at most {} unacknowledged, counted by the receiver)",
        report.datagram_bytes,
        report.datagram_frame_bytes,
        netbench::WINDOW
    );
    println!("  ({})", report.direct_differs);
    println!("Per frame through netback across each test (frames both ways, from netback's counts), and the guest's network interrupts per packet:");
    println!(
        "  {:<18} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}   {:>13} {:>13}",
        "test",
        "frames",
        "B",
        "copies",
        "notif",
        "events",
        "hcalls",
        "exits",
        "irq/pkt direct",
        "via netback"
    );
    for row in &report.per_frame {
        let netback = match &row.netback {
            Some(n) => format!(
                "{:>8} {:>7.0} {:>7.2} {:>7.3} {:>7.3} {:>7.2} {:>7.2}",
                n.frames,
                n.bytes,
                n.grant_copies,
                n.notifications_to_guest,
                n.netback_events_sent,
                n.netback_hypercalls,
                n.netback_vm_exits
            ),
            None => format!("{:>56}", "(netback printed no counts around it)"),
        };
        println!(
            "  {:<18} {netback}   {:>13.3} {:>13.3}",
            row.test,
            row.guest_interrupts_per_packet_direct,
            row.guest_interrupts_per_packet_microvisor
        );
    }
    println!("  (copies: grant copies; notif: notifications to the guest; events, hcalls, exits: netback's own events sent, hypercalls and VM exits; a GSO frame counts once, here and in the guest's packets; no goal set)");
    let life = &report.whole_life;
    let per_frame = |count: u64| match life.vif_frames {
        Some(frames) => format!(" ({:.2} per frame)", count as f64 / frames.max(1) as f64),
        None => String::new(),
    };
    let mut whole = Vec::new();
    for (name, counters) in [("guest", &life.guest), ("netback", &life.netback)] {
        if let Some(c) = counters {
            whole.push(format!(
                "{name} {} vm exits{}, {} hypercalls{}",
                c.vm_exits,
                per_frame(c.vm_exits),
                c.hypercalls,
                per_frame(c.hypercalls)
            ));
        }
    }
    println!(
        "Over their whole lives ({} frames through the vif, boot included): {}",
        life.vif_frames
            .map_or("an unknown number of".to_string(), |f| f.to_string()),
        whole.join("; ")
    );
    if let Some(guest) = life
        .guest
        .as_ref()
        .filter(|guest| guest.unclaimed_ports > 0)
    {
        let rest = guest.vm_exits.saturating_sub(guest.unclaimed_ports);
        println!(
            "  (the guest's exits without its {} reads of unclaimed ports, its boot's PIT calibration: {rest}{})",
            guest.unclaimed_ports,
            per_frame(rest)
        );
    }
    match &report.netback_footprint {
        Some(f) => println!(
            "netback footprint: image {} KiB + heap in use {} KiB - buffers {} KiB = {} KiB beside its buffers (goal <= {} KiB{})",
            f.image_bytes / 1024,
            f.heap_in_use_bytes / 1024,
            f.buffer_bytes / 1024,
            f.beside_buffers_bytes / 1024,
            f.goal_bytes / 1024,
            if f.beside_buffers_bytes <= f.goal_bytes { ", met" } else { ", not met" }
        ),
        None => println!("netback footprint: unknown, netback printed no counts (its `stats=idle` lines)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netback_lines_are_read() {
        let stats = "[netback] vif 4.0 of linux: stats: tx 100 frames 9000 B, rx 80 frames 70000 B, 190 copies, 40 notifications";
        let own = "[netback] vif 4.0 of linux: own: 50 events, 900 hypercalls, 1200 exits, 300 KiB heap, 64 KiB bounce";
        let closed = "[netback] vif 4.0 of linux closed (the front-end closed it): tx 110 frames 9100 B (0 dropped, 0 copy errors, 3 GSO into 40 segments), rx 90 frames 71000 B (1 dropped), 210 copies, 45 notifications";
        let mut before = parse_stats(stats, "stats").unwrap();
        assert!(parse_stats(stats, "own").is_none());
        assert!(parse_stats(own, "stats").is_none());
        before.extend(parse_stats(own, "own").unwrap());
        assert_eq!(before["tx frames"], 100);
        assert_eq!(before["rx B"], 70000);
        assert_eq!(before["KiB bounce"], 64);
        let closed = parse_stats(closed, "closed").unwrap();
        assert_eq!(
            (closed["tx frames"], closed["rx frames"], closed["copies"]),
            (110, 90, 210)
        );
        assert!(parse_stats(
            "[netback] vif 5.0 of other: stats: tx 1 frames 1 B, rx 1 frames 1 B, 1 copies, 1 notifications",
            "stats"
        )
        .is_none());
        let mut after = before.clone();
        for value in after.values_mut() {
            *value *= 3;
        }
        let per = per_frame(&before, &after);
        assert_eq!((per.frames, per.tx_frames, per.rx_frames), (360, 200, 160));
        assert!((per.grant_copies - 380.0 / 360.0).abs() < 1e-9);
        assert!((per.netback_vm_exits - 2400.0 / 360.0).abs() < 1e-9);
    }

    /// Each test's window runs from the last counts before its start to the last before the
    /// next test's start, which must come after its end.
    #[test]
    fn counts_are_taken_across_each_test() {
        let stats = |n: u64| -> Stats {
            STATS_KEYS
                .iter()
                .chain(OWN_KEYS.iter())
                .map(|&key| (key, n))
                .collect()
        };
        let mut boot = Boot {
            stats: vec![(1, stats(1)), (5, stats(2)), (9, stats(3))],
            ..Boot::default()
        };
        boot.marks.insert(TESTS[0].name, (2, 4));
        boot.marks.insert(TESTS[1].name, (6, 8));
        boot.marks.insert(TESTS[2].name, (10, 12));
        boot.done_at = Some(14);
        let (before, after) = across(&boot, 0).unwrap();
        assert_eq!((before["copies"], after["copies"]), (1, 2));
        let (before, after) = across(&boot, 1).unwrap();
        assert_eq!((before["copies"], after["copies"]), (2, 3));
        // No counts after test 2 ended.
        assert!(across(&boot, 2).is_none());
        assert!(across(&boot, 3).is_none());
    }

    fn capture(lines: &[&str]) -> Capture {
        Capture {
            lines: lines
                .iter()
                .map(|text| crate::serial::Line {
                    at: Duration::ZERO,
                    stream: crate::serial::Stream::Stdout,
                    text: text.to_string(),
                })
                .collect(),
            ending: crate::serial::Ending::Exited(crate::qemu::Exit::Code(1)),
            elapsed: Duration::ZERO,
            sent: 0,
        }
    }

    fn measured() -> HostRun {
        HostRun {
            measured: vec![
                Measured {
                    value: 1.0,
                    detail: String::new(),
                    guest: GuestCounts::default(),
                };
                TESTS.len()
            ],
            error: None,
        }
    }

    /// A boot's log as netback, the guest and the microvisor print it, with the closing
    /// line cut in two by the console domain.
    #[test]
    fn a_boot_is_read_from_its_log() {
        let stats = |n: u64| {
            [
                format!("[netback] vif 4.0 of linux: stats: tx {n} frames {n} B, rx {n} frames {n} B, {n} copies, {n} notifications"),
                format!("[netback] vif 4.0 of linux: own: {n} events, {n} hypercalls, {n} exits, 200 KiB heap, 64 KiB bounce"),
            ]
        };
        let mut lines: Vec<String> =
            vec!["[linux] netbench: ready on tcp 5001 and udp 5002, counting eth0".into()];
        lines.extend(stats(10));
        for (index, test) in TESTS.iter().enumerate() {
            lines.push(format!("[linux] netbench: {} start", test.name));
            lines.push(format!("[linux] netbench: {} end: rx 1 packets 1 B, tx 1 packets 1 B, 0 dropped, 1 interrupts", test.name));
            lines.extend(stats(100 * (index as u64 + 1)));
        }
        lines.push("[linux] netbench: done".into());
        lines.push("[netback] vif 4.0 of linux closed (the front-end closed it): tx 500 frames 9100 B (0 dropped, 0 copy errors, 3 GSO into 40 segments), rx 600 frames 71000 B (1 dropped), 1100 copies, 45 notifi".into());
        lines.push("[netback] cations".into());
        lines.push(
            "[microvisor] domain 4 (linux) vm exits by kind: intr 5, ioio 100 unclaimed ports 100"
                .into(),
        );
        lines.push("[microvisor] domain 4 (linux) hypercalls by number: 20:7".into());
        lines.push(
            "[microvisor] domain 3 (netback) vm exits by kind: vmmcall 9 unclaimed ports 0".into(),
        );
        lines.push("[microvisor] domain 3 (netback) hypercalls by number: 20:9".into());
        let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
        let boot = read_boot(&capture(&texts), measured(), "test").unwrap();
        assert_eq!(boot.stats.len(), 5);
        assert_eq!(boot.marks.len(), TESTS.len());
        let (before, after) = across(&boot, 0).unwrap();
        assert_eq!((before["tx frames"], after["tx frames"]), (10, 100));
        let (before, after) = across(&boot, 3).unwrap();
        assert_eq!((before["exits"], after["exits"]), (300, 400));
        let closed = boot.closed.unwrap();
        assert_eq!(
            (
                closed["tx frames"],
                closed["rx frames"],
                closed["notifications"]
            ),
            (500, 600, 45)
        );
        assert_eq!(boot.guest.unwrap().vm_exits, 105);
        assert_eq!(boot.netback.unwrap().hypercalls, 9);

        let mut failed = measured();
        failed.error = Some("connection refused".into());
        assert!(read_boot(&capture(&texts), failed, "test").is_err());
        let mut short = measured();
        short.measured.pop();
        assert!(read_boot(&capture(&texts), short, "test").is_err());
    }

    #[test]
    fn marker_lines_match() {
        let ready = Regex::new(READY).unwrap();
        assert!(ready.is_match("[linux] netbench: ready on tcp 5001 and udp 5002, counting eth0"));
        assert!(ready.is_match("netbench: ready on tcp 5001 and udp 5002, counting eth0"));
        let failed = Regex::new(FAILED).unwrap();
        assert!(failed.is_match("xtask: netbench FAILED: connection refused"));
        assert!(!failed.is_match("[linux] netbench: udp FAILED: x"));
    }

    #[test]
    fn both_ports_are_forwarded() {
        let args: Vec<String> = nic_args(40001, 40002)
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        assert_eq!(args[0], "-netdev");
        assert!(
            args[1].contains(",hostfwd=tcp:127.0.0.1:40001-10.0.2.15:5001"),
            "{}",
            args[1]
        );
        assert!(
            args[1].contains(",hostfwd=udp:127.0.0.1:40002-10.0.2.15:5002"),
            "{}",
            args[1]
        );
        assert!(args[3].contains("iommu_platform=on"), "{}", args[3]);
    }

    #[test]
    fn the_net_bench_system_is_valid_up_to_its_images() {
        let system = crate::workspace::workspace_root().join(NET_SYSTEM);
        crate::system::tests::assert_valid_up_to_images(&system);
        let guest = std::fs::read_to_string(system.with_file_name("linux.cfg")).unwrap();
        assert!(guest.contains(NET_INITRAMFS));
        // The address QEMU forwards the ports to, in both boots.
        let address = format!("guest.ip={}/24,10.0.2.2", commands::GUEST_ADDR);
        assert!(guest.contains(&address) && DIRECT_CMDLINE.contains(&address));
        assert!(guest.contains("guest.run=/bench-net.sh guest.poweroff=1"));
        let netback = std::fs::read_to_string(system.with_file_name("netback.cfg")).unwrap();
        assert!(netback.contains("stats=idle"));
    }

    /// The NIC's receive buffers the footprint leaves out are the ones driver-domains
    /// allocates.
    #[test]
    fn the_nic_buffers_agree_with_the_runtime() {
        let path = crate::workspace::workspace_root().join("driver-domains/runtime/src/virtio.rs");
        let text = std::fs::read_to_string(&path).unwrap();
        let constant = |name: &str| -> u64 {
            let pattern = Regex::new(&format!(r"const {name}: usize = (\d+);")).unwrap();
            pattern.captures(&text).unwrap()[1].parse().unwrap()
        };
        assert_eq!(
            constant("NET_QUEUE_SIZE") * constant("NET_BUFFER_BYTES"),
            NIC_RX_BUFFER_BYTES
        );
    }
}
