//! Modes about PCI passthrough: `blk-test` (drive an assigned virtio-blk function),
//! `dma-attack` (make it DMA to chosen bus addresses) and `pci-snoop` (poke at a function
//! this domain does not own).

use alloc::string::String;
use alloc::vec::Vec;

use driver_domains::abi::sched::SHUTDOWN_CRASH;
use driver_domains::dma::DmaRegion;
use driver_domains::events;
use driver_domains::pci::{self, Bdf, Function};
use driver_domains::virtio::{
    self, BlkDevice, BlkError, Hal, IdentityHal, RedirectHal, F_ACCESS_PLATFORM, SECTOR_BYTES,
};
use driver_domains::{cmdline, hypercall, println, time, BootInfo};

/// Sectors per request of the timed reads (one 4 KiB page).
const READ_CHUNK_SECTORS: u64 = 8;

fn fail(line: core::fmt::Arguments<'_>) -> ! {
    println!("{line}");
    hypercall::shutdown(SHUTDOWN_CRASH)
}

/// The comma-separated numbers under `key`, or `default` if absent.
fn number_list(info: &BootInfo, key: &str, default: &[u64]) -> Vec<u64> {
    match cmdline::get(info.cmdline, key) {
        None => default.to_vec(),
        Some(text) => text
            .split(',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                cmdline::parse_u64(t).unwrap_or_else(|| {
                    panic!("command line: {key}={text:?} is not a list of numbers")
                })
            })
            .collect(),
    }
}

fn bdf_arg(info: &BootInfo, key: &str) -> Option<Bdf> {
    cmdline::get(info.cmdline, key).map(|text| {
        Bdf::parse(text)
            .unwrap_or_else(|| panic!("command line: {key}={text:?} is not a PCI address"))
    })
}

/// The assigned function named by `device=` (or the first one): prints
/// `<tag>: found <bdf> <vendor>:<device>`.
fn find_function(info: &BootInfo, tag: &str) -> (Function, Vec<Function>) {
    let wanted = bdf_arg(info, "device");
    let functions =
        pci::list().unwrap_or_else(|e| fail(format_args!("{tag}: MVOP_PCI_LIST failed ({e})")));
    let Some(function) = functions
        .iter()
        .find(|f| wanted.is_none_or(|b| f.bdf == b))
        .copied()
    else {
        let name = wanted.map_or(String::from("any device"), |b| alloc::format!("{b}"));
        fail(format_args!(
            "{tag}: {name} is not assigned to this domain ({} functions)",
            functions.len()
        ))
    };
    println!(
        "{tag}: found {} {:04x}:{:04x}",
        function.bdf,
        function.vendor(),
        function.device()
    );
    (function, functions)
}

/// Binds MSI-X entry 0 to a new port of this domain (if the function has MSI-X), opens the
/// device and prints its capacity.
fn open_blk<H: Hal>(info: &BootInfo, tag: &str, function: &Function) -> BlkDevice<H> {
    let (interrupts, how) = virtio::bind_interrupts(function, info.domain.domid);
    println!("{tag}: {how}");
    let dev = BlkDevice::<H>::open(function, interrupts).unwrap_or_else(|e| {
        fail(format_args!(
            "{tag}: cannot initialise {}: {e}",
            function.bdf
        ))
    });
    println!("{tag}: capacity {} sectors", dev.capacity());
    let queue_vector = dev
        .queue_vector()
        .map_or(String::from("none"), |v| alloc::format!("{v}"));
    println!(
        "{tag}: features {:#x}, access_platform {}, queue vector {queue_vector}",
        dev.features(),
        if dev.features() & F_ACCESS_PLATFORM != 0 {
            "on"
        } else {
            "off"
        }
    );
    dev
}

/// `x / y` with two decimals (rounded), for printing.
fn ratio_hundredths(x: u64, y: u64) -> (u64, u64) {
    if y == 0 {
        return (0, 0);
    }
    let scaled = (u128::from(x) * 100 + u128::from(y) / 2) / u128::from(y);
    ((scaled / 100) as u64, (scaled % 100) as u64)
}

/// `mode=blk-test device=BDF sectors=0,7,1000 pattern=0x5a count=2048 timeout_ms=5000`.
pub fn blk_test(info: &BootInfo) {
    let (function, functions) = find_function(info, "blk");
    let walked = virtio::bus_walk(function.bdf.segment, function.bdf.bus, &functions);
    println!(
        "blk: bus {:02x} walk sees {} functions",
        function.bdf.bus,
        walked.len()
    );
    let mut dev = open_blk::<IdentityHal>(info, "blk", &function);
    let sectors = number_list(info, "sectors", &[0, 7, 1000]);
    let pattern = u8::try_from(crate::arg(info, "pattern", 0x5a))
        .unwrap_or_else(|_| panic!("command line: pattern must be a byte"));
    let count = crate::arg(info, "count", 2048);
    let timeout_ns = crate::arg(info, "timeout_ms", 5000).saturating_mul(1_000_000);
    let capacity = dev.capacity();
    let mut page = DmaRegion::new(READ_CHUNK_SECTORS as usize * SECTOR_BYTES)
        .unwrap_or_else(|| fail(format_args!("blk: out of heap")));

    for &sector in &sectors {
        if sector >= capacity {
            fail(format_args!(
                "blk: sector {sector} beyond capacity {capacity}"
            ));
        }
        let buf = &mut page.as_mut_slice()[..SECTOR_BYTES];
        virtio::fill_pattern(buf, sector, pattern);
        if let Err(e) = dev.write(sector, buf, timeout_ns) {
            fail(format_args!("blk: write of sector {sector} failed: {e}"));
        }
        buf.fill(0);
        if let Err(e) = dev.read(sector, buf, timeout_ns) {
            fail(format_args!("blk: read of sector {sector} failed: {e}"));
        }
        if virtio::pattern_mismatch(buf, sector, pattern).is_some() {
            fail(format_args!("blk: MISMATCH at sector {sector}"));
        }
    }
    println!("blk: wrote and verified {} sectors", sectors.len());

    let before = hypercall::domain_stats();
    let interrupts_before = dev.interrupts();
    let start = time::now_ns();
    let mut done = 0u64;
    let mut requests = 0u64;
    while done < count {
        let sector = done % capacity;
        let n = READ_CHUNK_SECTORS.min(count - done).min(capacity - sector);
        let buf = &mut page.as_mut_slice()[..n as usize * SECTOR_BYTES];
        if let Err(e) = dev.read(sector, buf, timeout_ns) {
            fail(format_args!(
                "blk: read of sectors {sector}+{n} failed: {e}"
            ));
        }
        done += n;
        requests += 1;
    }
    let elapsed = time::now_ns().saturating_sub(start).max(1);
    let after = hypercall::domain_stats();
    let interrupts = dev.interrupts() - interrupts_before;
    let rate = u128::from(count) * 1_000_000_000 / u128::from(elapsed);
    println!(
        "blk: read {count} sectors in {} ms ({rate} sectors/s)",
        elapsed / 1_000_000
    );
    match (before, after) {
        (Ok(before), Ok(after)) => {
            let delta = hypercall::stats_between(&before, &after);
            let (whole, hundredths) = ratio_hundredths(delta.vm_exits, requests);
            println!("blk: {whole}.{hundredths:02} exits per request, {interrupts} interrupts");
        }
        (Err(e), _) | (_, Err(e)) => {
            println!("blk: no domain stats ({e}), {interrupts} interrupts");
        }
    }
    println!("blk: done");
}

/// `mode=dma-attack device=BDF targets=0xA,0xB bytes=4096 sector=0 timeout_ms=2000`.
pub fn dma_attack(info: &BootInfo) {
    let targets = number_list(info, "targets", &[]);
    if targets.is_empty() {
        panic!("dma-attack: needs targets=<bus address>,...");
    }
    let bytes = crate::arg(info, "bytes", 4096) as usize;
    let sector = crate::arg(info, "sector", 0);
    let timeout_ns = crate::arg(info, "timeout_ms", 2000).saturating_mul(1_000_000);
    let (function, _) = find_function(info, "dma-attack");
    let mut dev = open_blk::<RedirectHal>(info, "dma-attack", &function);
    for &target in &targets {
        println!("dma-attack: target {target:#x} issued");
        let outcome = dev.read_redirected(info, sector, target, bytes, timeout_ns);
        let result = match &outcome {
            Ok(()) => "ok",
            Err(BlkError::Timeout) => "timeout",
            Err(BlkError::DeviceBroken) => "device-broken",
            Err(BlkError::Refused(_)) => "refused",
            Err(_) => "error",
        };
        if let Err(e) = &outcome {
            println!(
                "dma-attack: target {target:#x}: {e} (device status {:#x})",
                dev.device_status()
            );
        }
        println!("dma-attack: target {target:#x} result {result}");
        // The IOMMU records one fault at a time (QEMU's VT-d drops a new fault while the
        // last is unread); give the microvisor time to log and clear it before the next.
        time::sleep_ms(50);
        if !dev.is_ready() {
            match dev.reinit() {
                Ok(()) => println!("dma-attack: device reset and re-initialised"),
                Err(e) => fail(format_args!("dma-attack: re-initialising failed: {e}")),
            }
        }
    }
    println!("dma-attack: done");
}

/// `mode=pci-snoop bdf=BDF bar=0xADDR`: a domain that does not own the function.
pub fn pci_snoop(info: &BootInfo) {
    let Some(bdf) = bdf_arg(info, "bdf") else {
        panic!("pci-snoop: needs bdf=<SSSS:BB:DD.F>");
    };
    let Some(bar) = cmdline::get(info.cmdline, "bar").and_then(cmdline::parse_u64) else {
        panic!("pci-snoop: needs bar=<address>");
    };
    match pci::list() {
        Ok(functions) => println!("pci-snoop: sees {} functions", functions.len()),
        Err(e) => println!("pci-snoop: list -> {e}"),
    }
    match pci::config_read(bdf, 0, 4) {
        Ok(value) => println!("pci-snoop: config read -> {value:#010x}"),
        Err(e) => println!("pci-snoop: config read -> {e}"),
    }
    let enable = pci::reg::COMMAND_MEMORY | pci::reg::COMMAND_BUS_MASTER;
    match pci::config_write(bdf, pci::reg::COMMAND, 2, enable.into()) {
        Ok(()) => println!("pci-snoop: config write -> 0"),
        Err(e) => println!("pci-snoop: config write -> {e}"),
    }
    match events::alloc_unbound(info.domain.domid) {
        Ok(port) => match pci::bind_msix(bdf, 0, port) {
            Ok(()) => println!("pci-snoop: bind msix -> 0"),
            Err(e) => println!("pci-snoop: bind msix -> {e}"),
        },
        Err(e) => println!("pci-snoop: no port ({e})"),
    }
    println!("pci-snoop: touching bar {bar:#x}");
    match pci::read_u32_phys(info, bar) {
        Ok(value) => {
            println!("pci-snoop: bar read did not fault");
            println!("pci-snoop: bar value {value:#010x}");
        }
        Err(e) => println!("pci-snoop: refused: {e}"),
    }
}
