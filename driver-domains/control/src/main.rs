//! The control domain: serves `xl` on the management channel (the virtio console passed
//! through to it; `cargo xtask run` puts the host end on a unix socket) and keeps the
//! lifecycle of the domains it created.
//!
//! Each request frame gets one response frame (`control::mgmt`). A garbled frame is
//! answered with an error and counted; a partial frame the host stops sending is dropped
//! after 5 quiet seconds. Domains are built here, not in the microvisor: the image is parsed
//! and laid out with `microvisor_core::pvh_boot` (the same plan the boot builder uses), the
//! microvisor makes an empty paused domain, and this domain loads its memory, sets its entry
//! and unpauses it. After that it can neither read nor write that domain's memory.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use control::mgmt::{self, Deframer, HostInfo, Request, Response};
use control::{devices_path, resolve, rows, shutdown_word, Images, Lifecycle, Step, Upload};
use driver_domains::abi::domctl::{self as abi, CreateArgs, DomctlEntry};
use driver_domains::abi::microvisor_op::VIRQ_DOMAIN_CHANGE;
use driver_domains::events;
use driver_domains::virtio::{self, ConsoleDevice};
use driver_domains::xenstore::{self, Tx};
use driver_domains::{domctl, heap, pci, println, time, BootInfo};

// A heap for the images of one create (Debian's kernel and initramfs are about 56 MiB) and
// of the created domains it may have to restart; the manifest gives it 192 MiB.
driver_domains::entry!(main, heap_bytes = 176 << 20);

/// A partial frame is dropped after this long without a byte. Under a loaded host, QEMU's
/// TCG can leave the channel without a byte for over a second in the middle of an
/// `xl create` upload (seen with 1 s), so this is generous.
const QUIET_NS: u64 = 5_000_000_000;
/// How long the loop sleeps when nothing happens.
const IDLE_NS: u64 = 2_000_000;
/// After the last byte, the loop polls without sleeping this long.
const BUSY_NS: u64 = 20_000_000;
/// The longest wait for the channel's interrupt.
const WAIT_NS: u64 = 250_000_000;

struct Control {
    channel: Option<ConsoleDevice>,
    deframer: Deframer,
    upload: Option<Upload>,
    lifecycle: Lifecycle,
    /// The distinct images the created domains keep (for their restarts), shared.
    pool: Vec<alloc::sync::Arc<[u8]>>,
    store: Option<xenstore::Client>,
    bad_frames: u64,
    requests: u64,
}

fn main(info: &'static BootInfo) -> ! {
    let channel = open_channel(info.domain.domid);
    let virq = events::bind_virq(VIRQ_DOMAIN_CHANGE, 0).ok();
    let store = match xenstore::Client::connect() {
        Ok(mut client) => {
            client.set_timeout_ns(5_000_000_000);
            Some(client)
        }
        Err(e) => {
            println!("control: no xenstore ({e:?}): xl shutdown and reboot are unavailable");
            None
        }
    };
    println!(
        "control: domain {} serving xl{}, {} MiB for images",
        info.domain.domid,
        if channel.is_some() {
            ""
        } else {
            " (no channel)"
        },
        image_room() >> 20
    );
    let mut control = Control {
        channel,
        deframer: Deframer::new(),
        upload: None,
        lifecycle: Lifecycle::new(),
        pool: Vec::new(),
        store,
        bad_frames: 0,
        requests: 0,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_byte = time::now_ns();
    loop {
        let mut got = 0;
        if let Some(channel) = control.channel.as_mut() {
            match channel.receive(&mut buf) {
                Ok(n) => got = n,
                Err(e) => {
                    println!("control: the management channel failed ({e}); closing it");
                    control.channel = None;
                }
            }
        }
        if got > 0 {
            last_byte = time::now_ns();
            control.deframer.push(&buf[..got]);
            while let Some(frame) = control.deframer.next_frame() {
                let response = match frame {
                    Ok(payload) => match mgmt::decode::<Request>(&payload) {
                        Ok(request) => control.handle(request),
                        Err(e) => control.refuse(e),
                    },
                    Err(e) => control.refuse(e),
                };
                control.send(&response);
            }
        } else if control.deframer.pending() > 0
            && time::now_ns().saturating_sub(last_byte) > QUIET_NS
        {
            let dropped = control.deframer.discard();
            control.bad_frames += 1;
            println!("control: dropped {dropped} bytes of a frame that never completed");
            control.send(&Response::Error(format!(
                "{dropped} bytes of an incomplete frame were dropped"
            )));
        }
        if virq.is_some_and(events::take) {
            control.apply_lifecycle();
        }
        // While bytes flow (an image upload), the next buffer follows at once: look again
        // without waiting. Once the channel is quiet, wait for its interrupt (or any other
        // event; the wait is bounded so a stalled partial frame is still given up), or
        // without MSI-X, sleep between looks.
        if got == 0 && time::now_ns().saturating_sub(last_byte) > BUSY_NS {
            match control.channel.as_ref().and_then(ConsoleDevice::port) {
                Some(port) => {
                    if !events::take(port) {
                        let _ = events::wait_until(time::now_ns() + WAIT_NS);
                    }
                }
                None => time::sleep_ns(IDLE_NS),
            }
        }
    }
}

/// The first virtio console passed through to this domain, its received bytes raising an
/// event when it has MSI-X.
fn open_channel(domid: u16) -> Option<ConsoleDevice> {
    let functions = pci::list().ok()?;
    let function = functions
        .iter()
        .find(|f| virtio::is_virtio_console(f.vendor(), f.device()))?;
    let (interrupts, how) = virtio::bind_interrupts(function, domid);
    match ConsoleDevice::open(function, interrupts) {
        Ok(device) => {
            println!("control: management channel {}: {how}", function.bdf);
            Some(device)
        }
        Err(e) => {
            println!(
                "control: management channel {}: cannot open ({e})",
                function.bdf
            );
            None
        }
    }
}

/// Bytes of images one upload may hold: the heap's free room less 4 MiB for the rest.
fn image_room() -> u64 {
    (heap::free_bytes() as u64).saturating_sub(4 << 20)
}

fn list() -> Result<Vec<DomctlEntry>, String> {
    let mut entries = vec![DomctlEntry::default(); abi_max_domains()];
    let n = domctl::list(&mut entries)
        .map_err(|e| format!("the microvisor refused to list the domains (error {e})"))?;
    entries.truncate(n);
    Ok(entries)
}

/// Room for the microvisor's domain table (its size is in `physinfo`).
fn abi_max_domains() -> usize {
    domctl::physinfo().map_or(256, |p| p.max_domains as usize)
}

impl Control {
    fn send(&mut self, response: &Response) {
        if let Some(channel) = self.channel.as_mut() {
            if let Err(e) = channel.send(&mgmt::frame(response)) {
                println!("control: cannot answer on the management channel ({e})");
            }
        }
    }

    fn refuse(&mut self, error: mgmt::FrameError) -> Response {
        self.bad_frames += 1;
        println!("control: refused {error} on the management channel");
        Response::Error(format!("the control domain refused {error}"))
    }

    fn handle(&mut self, request: Request) -> Response {
        self.requests += 1;
        let result = match request {
            Request::List => list().map(|entries| Response::Domains(rows(&entries))),
            Request::Info => self.info(),
            Request::Pause(name) => self.on_target(&name, "paused", domctl::pause),
            Request::Unpause(name) => self.on_target(&name, "unpaused", domctl::unpause),
            Request::Destroy(name) => self.destroy(&name),
            Request::Crash(name) => self.on_target(&name, "crashed", domctl::crash),
            Request::Shutdown { domain, reboot } => self.shutdown(&domain, reboot),
            Request::CreateBegin(plan) => {
                if let Some(old) = self.upload.take() {
                    drop(old);
                    println!("control: an unfinished create was dropped for a new one");
                }
                Upload::begin(plan, image_room()).map(|upload| {
                    self.upload = Some(upload);
                    Response::Done("send the images".into())
                })
            }
            Request::CreateData { offset, bytes } => match self.upload.as_mut() {
                None => Err("image data without a create under way".into()),
                Some(upload) => upload
                    .data(offset, &bytes)
                    .map(|()| Response::Done(String::new())),
            },
            Request::Dmesg => {
                let mut log = vec![0u8; 16 * 1024];
                domctl::dmesg(&mut log)
                    .map(|n| Response::Dmesg(String::from_utf8_lossy(&log[..n]).into_owned()))
                    .map_err(|e| format!("the microvisor refused its log (error {e})"))
            }
            Request::VcpuList => self.vcpu_list(),
            Request::CreateAbort => {
                self.upload = None;
                Ok(Response::Done("create abandoned".into()))
            }
            Request::CreateEnd => match self.upload.take() {
                None => Err("no create under way".into()),
                Some(upload) => upload
                    .finish()
                    .and_then(|images| self.build(images))
                    .map(|domid| Response::Created { domid }),
            },
        };
        result.unwrap_or_else(Response::Error)
    }

    fn vcpu_list(&self) -> Result<Response, String> {
        use driver_domains::abi::domctl::{
            VcpuEntry, VCPU_STATE_BLOCKED, VCPU_STATE_RUNNABLE, VCPU_STATE_RUNNING,
        };
        let mut rows = Vec::new();
        for domain in list()? {
            let mut vcpus = [VcpuEntry::default(); 8];
            let Ok(n) = domctl::vcpu_list(domain.domid, &mut vcpus) else {
                continue;
            };
            let paused = domain.state == abi::DOMCTL_STATE_PAUSED;
            for v in &vcpus[..n] {
                let state = match v.state {
                    _ if paused => "p",
                    VCPU_STATE_RUNNING => "r",
                    VCPU_STATE_BLOCKED => "b",
                    VCPU_STATE_RUNNABLE => "-",
                    _ => "p",
                };
                rows.push(vcpu_row(&domain, v, state));
            }
        }
        Ok(Response::Vcpus(rows))
    }

    fn info(&self) -> Result<Response, String> {
        let p = domctl::physinfo().map_err(|e| format!("physinfo refused (error {e})"))?;
        Ok(Response::Info(HostInfo {
            cpus: p.cpus,
            total_mib: p.total_frames >> 8,
            free_mib: p.free_frames >> 8,
            uptime_ns: p.uptime_ns,
            max_domains: p.max_domains,
            vm_exits: p.vm_exits,
            hypercalls: p.hypercalls,
            bad_frames: self.bad_frames,
        }))
    }

    fn on_target(
        &mut self,
        name: &str,
        done: &str,
        op: fn(u16) -> Result<(), i64>,
    ) -> Result<Response, String> {
        let entries = list()?;
        let target = resolve(&entries, name)?;
        op(target.domid).map_err(|e| refusal(target, e))?;
        println!(
            "control: domain {} ({}) {done}",
            target.domid,
            target.name_str()
        );
        Ok(Response::Done(format!(
            "domain {} ({}) {done}",
            target.domid,
            target.name_str()
        )))
    }

    fn destroy(&mut self, name: &str) -> Result<Response, String> {
        let entries = list()?;
        let target = resolve(&entries, name)?;
        domctl::destroy(target.domid).map_err(|e| refusal(target, e))?;
        if self.lifecycle.remove(target.domid).is_some() {
            self.forget_devices(target.name_str());
        }
        println!(
            "control: domain {} ({}) destroyed",
            target.domid,
            target.name_str()
        );
        Ok(Response::Done(format!(
            "domain {} ({}) destroyed",
            target.domid,
            target.name_str()
        )))
    }

    /// Asks the guest to shut down as Xen's toolstack does: `control/shutdown` in xenstore.
    fn shutdown(&mut self, name: &str, reboot: bool) -> Result<Response, String> {
        let entries = list()?;
        let target = resolve(&entries, name)?;
        let store = self
            .store
            .as_mut()
            .ok_or("the control domain has no xenstore connection")?;
        let path = format!("{}/control/shutdown", xenstore::domain_path(target.domid));
        store
            .write_str(Tx::NONE, &path, shutdown_word(reboot))
            .map_err(|e| format!("cannot write {path}: {e:?}"))?;
        println!(
            "control: asked domain {} ({}) to {}",
            target.domid,
            target.name_str(),
            shutdown_word(reboot)
        );
        Ok(Response::Done(format!(
            "asked domain {} ({}) to {}",
            target.domid,
            target.name_str(),
            shutdown_word(reboot)
        )))
    }

    /// Builds a domain from its images and starts it; keeps the images for its lifecycle.
    /// Its devices go to the xenstore domain before it starts.
    fn build(&mut self, mut images: Images) -> Result<u16, String> {
        images.share(&mut self.pool);
        let store = &mut self.store;
        let domid = build_domain(&images, |_| {
            let path = devices_path(&images.plan.name);
            match store.as_mut() {
                Some(store) => store
                    .write_str(Tx::NONE, &path, &images.plan.devices)
                    .map_err(|e| format!("cannot write {path}: {e:?}")),
                None if images.plan.devices.is_empty() => Ok(()),
                None => Err("the control domain has no xenstore connection for its devices".into()),
            }
        })?;
        self.lifecycle.add(domid, images);
        Ok(domid)
    }

    /// Takes a destroyed domain's devices out of the xenstore domain's table.
    fn forget_devices(&mut self, name: &str) {
        if let Some(store) = self.store.as_mut() {
            let path = devices_path(name);
            if let Err(e) = store.rm(Tx::NONE, &path) {
                println!("control: cannot remove {path}: {e:?}");
            }
        }
    }

    /// Applies `on_poweroff`/`on_reboot`/`on_crash` to the created domains that shut down.
    fn apply_lifecycle(&mut self) {
        let Ok(entries) = list() else { return };
        for (domid, name, reason, step) in self.lifecycle.due(&entries) {
            let word = match step {
                Step::Destroy => "destroy",
                Step::Restart => "restart",
                Step::Keep => "preserve",
            };
            println!("control: domain {domid} ({name}) shut down: {reason} -> {word}");
            if step == Step::Keep {
                continue;
            }
            let images = self.lifecycle.remove(domid);
            if let Err(e) = domctl::destroy(domid) {
                println!("control: cannot destroy domain {domid} ({name}): error {e}");
                continue;
            }
            if step == Step::Destroy {
                self.forget_devices(&name);
            }
            if let (Step::Restart, Some(images)) = (step, images) {
                // The old instance must be gone before its name can be reused.
                let deadline = time::now_ns() + 5_000_000_000;
                while list().is_ok_and(|l| l.iter().any(|e| e.domid == domid))
                    && time::now_ns() < deadline
                {
                    time::sleep_ms(5);
                }
                match self.build(images) {
                    Ok(new) => {
                        println!("control: domain {domid} ({name}) restarted as domain {new}")
                    }
                    Err(e) => println!("control: domain {domid} ({name}) cannot restart: {e}"),
                }
            }
        }
    }
}

fn vcpu_row(
    domain: &DomctlEntry,
    v: &driver_domains::abi::domctl::VcpuEntry,
    state: &str,
) -> control::mgmt::VcpuRow {
    control::mgmt::VcpuRow {
        name: domain.name_str().to_string(),
        domid: domain.domid,
        vcpu: v.vcpu,
        cpu: (v.state == driver_domains::abi::domctl::VCPU_STATE_RUNNING).then_some(v.cpu),
        state: state.to_string(),
        cpu_ns: v.cpu_ns,
    }
}

fn refusal(target: &DomctlEntry, error: i64) -> String {
    let why = match error {
        -1 => "not permitted",
        -3 => "it is gone",
        -22 => "not valid for it (the control domain itself, or its state)",
        _ => "refused",
    };
    format!(
        "domain {} ({}): {why} (error {error})",
        target.domid,
        target.name_str()
    )
}

/// Lays the domain out, has the microvisor create it, loads it and starts it. On any
/// failure after the create, the half-built domain is destroyed.
fn build_domain(
    images: &Images,
    before_start: impl FnOnce(u16) -> Result<(), String>,
) -> Result<u16, String> {
    let plan = &images.plan;
    let ram_bytes = u64::from(plan.memory_mib) << 20;
    let boot = microvisor_core::pvh_boot::plan(
        images.kernel(),
        ram_bytes,
        plan.vcpus,
        plan.cmdline.as_bytes(),
        images.ramdisk().map(|r| r.len() as u64),
    )
    .map_err(|e| format!("{}: {e}", plan.name))?;
    let mut name = [0u8; 32];
    let bytes = plan.name.as_bytes();
    if bytes.is_empty() || bytes.len() > 31 {
        return Err(format!("`{}`: a name is 1 to 31 bytes", plan.name));
    }
    name[..bytes.len()].copy_from_slice(bytes);
    let args = CreateArgs {
        name,
        memory_mib: plan.memory_mib,
        vcpus: plan.vcpus,
    };
    let domid = domctl::create(&args).map_err(|e| {
        let why = match e {
            -17 => "a domain of that name exists".to_string(),
            -28 => "the domain table is full".to_string(),
            -12 => format!("not enough free memory for {} MiB", plan.memory_mib),
            -22 => "its memory or vCPU count is out of range".to_string(),
            _ => format!("error {e}"),
        };
        format!("cannot create {}: {why}", plan.name)
    })?;
    let load = || -> Result<(), i64> {
        for segment in &boot.image.segments {
            let file =
                &images.kernel()[segment.file_offset as usize..][..segment.file_bytes as usize];
            domctl::load(domid, segment.paddr, file)?;
        }
        if let (Some(ramdisk), Some(gpa)) = (images.ramdisk(), boot.ramdisk_gpa) {
            domctl::load(domid, gpa, ramdisk)?;
        }
        domctl::load(domid, abi::ACPI_GPA, &boot.acpi_page)?;
        domctl::load(domid, abi::START_INFO_GPA, &boot.start_info_page)?;
        domctl::set_entry(domid, boot.image.entry, boot.start_info_gpa)
    };
    if let Err(e) = load() {
        let _ = domctl::destroy(domid);
        return Err(format!(
            "cannot load {} (error {e}); destroyed it",
            plan.name
        ));
    }
    if let Err(e) = before_start(domid) {
        let _ = domctl::destroy(domid);
        return Err(format!("{}: {e}; destroyed it", plan.name));
    }
    if let Err(e) = domctl::unpause(domid) {
        let _ = domctl::destroy(domid);
        return Err(format!(
            "cannot start {} (error {e}); destroyed it",
            plan.name
        ));
    }
    println!(
        "control: domain {domid} ({}) built and started: {} MiB, {} vcpus, entry {:#x}",
        plan.name, plan.memory_mib, plan.vcpus, boot.image.entry
    );
    Ok(domid)
}
