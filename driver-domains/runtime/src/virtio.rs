//! A virtio-blk driver for an assigned PCI function, on the `virtio-drivers` crate.
//!
//! The pieces that crate asks of its user:
//!
//! - [`PciConfigAccess`]: its `ConfigurationAccess` over `MVOP_PCI_CONFIG_READ`/`WRITE`, so
//!   its `PciRoot` walks only what the microvisor shows this domain (every other function
//!   reads as absent, all ones). BAR sizing is answered from the sizes `MVOP_PCI_LIST`
//!   reported ([`crate::pci::BarSizing`]): the microvisor ignores BAR writes.
//! - [`IdentityHal`]: its `Hal`. DMA memory is page-aligned zeroed heap ([`crate::dma`]);
//!   the bus address is the guest-physical address (the IOMMU maps this domain's RAM at its
//!   guest-physical addresses), which the runtime's identity map makes the pointer; memory
//!   BARs are identity-mapped too and must be ones [`crate::pci::list`] recorded.
//! - [`MvTransport`]: wraps its `PciTransport` to add what it does not do:
//!   - `VIRTIO_F_ACCESS_PLATFORM` (bit 33). `VirtIOBlk` accepts only the features it knows
//!     (not bit 33), but a device behind an IOMMU (QEMU's `iommu_platform=on`) offers the bit
//!     and refuses `FEATURES_OK` unless the driver accepts it. The wrapper adds it to the
//!     driver features whenever the device offers it: its meaning (the device uses bus
//!     addresses the platform translates) is exactly what [`IdentityHal`] gives.
//!   - MSI-X vectors. `PciTransport` never writes `msix_config` or `queue_msix_vector`, and
//!     with MSI-X enabled a device does not signal a queue whose vector is `NO_VECTOR`.
//!     When the device is opened with an MSI-X entry (already bound to an event channel with
//!     [`crate::pci::bind_msix`]), the wrapper writes that entry to both, before each queue
//!     is enabled (virtio 1.x, 4.1.5.1.3).
//! - [`BlkDevice`]: `VirtIOBlk` over that transport, with requests that wait for the
//!   device's interrupt (an event on the bound port) or poll, give up after a timeout,
//!   notice `DEVICE_NEEDS_RESET`, and reset the device before returning an error, so a
//!   buffer is never written by the device after its borrow ended. [`BlkDevice::reinit`]
//!   brings a reset device back.
//! - Requests that do not wait: [`BlkDevice::start_read`] and [`BlkDevice::start_write`]
//!   take a [`crate::dma::DmaRegion`] by value and give the device its first bytes; up to
//!   [`BlkDevice::max_in_flight`] such requests are on the device at once, and
//!   [`BlkDevice::poll`] hands each back, buffer and outcome, in the order the device
//!   finishes them (as a [`BlkCompletion`] with the caller's tag). The device owns the
//!   buffer in between, so nothing can touch memory the device is writing; a request that
//!   takes longer than its timeout, or a device that needs a reset, resets the device and
//!   fails every request on it. The waiting requests and the flush first wait until every
//!   started request has finished (their completions are kept for `poll`).
//!
//! Hostile, for test domains: [`RedirectHal`] and [`BlkDevice::read_redirected`] declare a
//! READ's data buffer at an arbitrary bus address, so the device tries to DMA there (the
//! IOMMU must stop it outside this domain's RAM).

use alloc::vec::Vec;
use core::fmt;

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};
/// The DMA interface a [`BlkDevice`] is generic over ([`IdentityHal`], [`RedirectHal`]).
pub use virtio_drivers::Hal;

use crate::pci::{bar_index, BarSizing, Bdf, ConfigBackend, Function, Microvisor, PciBarEntry};

/// `VIRTIO_F_VERSION_1`.
pub const F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_F_ACCESS_PLATFORM`: the device's DMA goes through the platform's IOMMU.
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;

/// The driver features to write, given what the device `offered` and what the device
/// driver `chose`: [`F_ACCESS_PLATFORM`] is added when offered (see the module
/// documentation).
pub const fn driver_features(offered: u64, chosen: u64) -> u64 {
    chosen | (offered & F_ACCESS_PLATFORM)
}

/// The PCI vendor ID of virtio devices.
pub const VIRTIO_VENDOR: u16 = 0x1af4;

/// Whether `vendor:device` is a virtio block device (modern 0x1042 or transitional 0x1001).
pub const fn is_virtio_blk(vendor: u16, device: u16) -> bool {
    vendor == VIRTIO_VENDOR && (device == 0x1042 || device == 0x1001)
}

/// Whether `vendor:device` is a virtio network device (modern 0x1041 or transitional 0x1000).
pub const fn is_virtio_net(vendor: u16, device: u16) -> bool {
    vendor == VIRTIO_VENDOR && (device == 0x1041 || device == 0x1000)
}

/// Whether `vendor:device` is a virtio console (modern 0x1043 or transitional 0x1003).
pub const fn is_virtio_console(vendor: u16, device: u16) -> bool {
    vendor == VIRTIO_VENDOR && (device == 0x1043 || device == 0x1003)
}

/// Bytes of a block-device sector.
pub const SECTOR_BYTES: usize = 512;

/// The test pattern of the `blk-test` mode: byte `i` of sector `sector` is
/// `pattern ^ (sector & 0xff) ^ (i & 0xff)`.
pub const fn pattern_byte(pattern: u8, sector: u64, i: usize) -> u8 {
    pattern ^ (sector as u8) ^ (i as u8)
}

/// Fills `buf` (one or more sectors, starting at `sector`) with the test pattern.
pub fn fill_pattern(buf: &mut [u8], sector: u64, pattern: u8) {
    for (n, chunk) in buf.chunks_mut(SECTOR_BYTES).enumerate() {
        let s = sector.wrapping_add(n as u64);
        for (i, byte) in chunk.iter_mut().enumerate() {
            *byte = pattern_byte(pattern, s, i);
        }
    }
}

/// The offset of the first byte of `buf` that differs from the test pattern, if any.
pub fn pattern_mismatch(buf: &[u8], sector: u64, pattern: u8) -> Option<usize> {
    buf.chunks(SECTOR_BYTES).enumerate().find_map(|(n, chunk)| {
        let s = sector.wrapping_add(n as u64);
        chunk
            .iter()
            .enumerate()
            .find(|&(i, &b)| b != pattern_byte(pattern, s, i))
            .map(|(i, _)| n * SECTOR_BYTES + i)
    })
}

/// `virtio-drivers`' `ConfigurationAccess` for one PCI segment, over a [`ConfigBackend`]
/// (the microvisor's ops by default): 4-byte accesses; a function the backend refuses reads
/// as all ones (absent) and ignores writes; BAR sizing of the known functions is emulated
/// (the writes never reach the backend).
#[derive(Clone, Debug)]
pub struct PciConfigAccess<B = Microvisor> {
    segment: u16,
    backend: B,
    functions: Vec<(Bdf, [PciBarEntry; 6], BarSizing)>,
}

impl<B: ConfigBackend> PciConfigAccess<B> {
    /// Access to segment `segment`, whose BARs are sized from `functions` (functions of other
    /// segments are ignored).
    pub fn new(segment: u16, backend: B, functions: &[Function]) -> Self {
        Self {
            segment,
            backend,
            functions: functions
                .iter()
                .filter(|f| f.bdf.segment == segment)
                .map(|f| (f.bdf, f.entry.bars, BarSizing::default()))
                .collect(),
        }
    }

    /// The [`Bdf`] of `df` in this segment (`None` if out of range).
    pub fn bdf(&self, df: DeviceFunction) -> Option<Bdf> {
        Bdf::new(self.segment, df.bus, df.device, df.function)
    }

    fn known(&self, bdf: Bdf) -> Option<usize> {
        self.functions.iter().position(|(b, _, _)| *b == bdf)
    }

    fn read_dword(&self, bdf: Bdf, offset: u16) -> u32 {
        let real = self.backend.read(bdf, offset, 4).unwrap_or(u32::MAX);
        match (bar_index(offset), self.known(bdf)) {
            (Some(index), Some(f)) => {
                let (_, bars, sizing) = &self.functions[f];
                sizing.read(bars, index, real)
            }
            _ => real,
        }
    }
}

impl<B: ConfigBackend + Clone> ConfigurationAccess for PciConfigAccess<B> {
    fn read_word(&self, device_function: DeviceFunction, register_offset: u8) -> u32 {
        let Some(bdf) = self.bdf(device_function) else {
            return u32::MAX;
        };
        let offset = u16::from(register_offset);
        let dword = self.read_dword(bdf, offset & !3);
        dword >> ((offset & 3) * 8)
    }

    fn write_word(&mut self, device_function: DeviceFunction, register_offset: u8, data: u32) {
        let Some(bdf) = self.bdf(device_function) else {
            return;
        };
        let offset = u16::from(register_offset);
        if offset % 4 != 0 {
            return;
        }
        if let (Some(index), Some(f)) = (bar_index(offset), self.known(bdf)) {
            self.functions[f].2.on_write(index, data);
            return;
        }
        let _ = self.backend.write(bdf, offset, 4, data);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        self.clone()
    }
}

/// Why a virtio-blk operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// The function is not a virtio block device.
    NotVirtioBlock { vendor: u16, device: u16 },
    /// The function is not a virtio network device.
    NotVirtioNet { vendor: u16, device: u16 },
    /// The function is not a virtio console.
    NotVirtioConsole { vendor: u16, device: u16 },
    /// A frame longer than a network buffer holds.
    FrameTooLong(usize),
    /// A config-space op failed (`-errno`).
    Config(i64),
    /// No usable common-configuration structure (capability missing or its BAR not mapped).
    NoCommonConfig,
    /// The PCI transport could not be set up.
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    /// The driver library failed.
    Virtio(virtio_drivers::Error),
    /// The device did not accept the features or the driver (device status shown).
    Rejected { status: u8 },
    /// A buffer that is not a non-empty multiple of 512 bytes.
    BadLength(usize),
    /// The heap has no room for a buffer.
    NoMemory,
    /// The device completed the request with an error status.
    Io,
    /// The device did not complete the request in time (it was reset).
    Timeout,
    /// The device set `DEVICE_NEEDS_RESET` (it was reset).
    DeviceBroken,
    /// The device completed a request that was not the one waited for (it was reset).
    WrongToken,
    /// The device was reset after a failed request: [`BlkDevice::reinit`] first.
    NeedsReinit,
    /// A hostile operation refused to touch the runtime's own memory at this address.
    Refused(u64),
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotVirtioBlock { vendor, device } => {
                write!(f, "{vendor:04x}:{device:04x} is not a virtio block device")
            }
            Self::NotVirtioNet { vendor, device } => {
                write!(
                    f,
                    "{vendor:04x}:{device:04x} is not a virtio network device"
                )
            }
            Self::NotVirtioConsole { vendor, device } => {
                write!(f, "{vendor:04x}:{device:04x} is not a virtio console")
            }
            Self::FrameTooLong(n) => write!(f, "a frame of {n} bytes is too long"),
            Self::Config(e) => write!(f, "config access failed ({e})"),
            Self::NoCommonConfig => write!(f, "no usable virtio common configuration"),
            Self::Transport(e) => write!(f, "virtio PCI transport: {e}"),
            Self::Virtio(e) => write!(f, "virtio: {e}"),
            Self::Rejected { status } => {
                write!(f, "device rejected the driver (status {status:#x})")
            }
            Self::BadLength(n) => write!(f, "buffer of {n} bytes is not whole sectors"),
            Self::NoMemory => write!(f, "out of heap"),
            Self::Io => write!(f, "I/O error"),
            Self::Timeout => write!(f, "timeout"),
            Self::DeviceBroken => write!(f, "device needs reset"),
            Self::WrongToken => write!(f, "device completed an unexpected request"),
            Self::NeedsReinit => write!(f, "device was reset, not re-initialised"),
            Self::Refused(addr) => write!(f, "{addr:#x} is the runtime's own memory"),
        }
    }
}

#[cfg(not(test))]
pub use hw::*;

#[cfg(not(test))]
mod hw {
    use alloc::boxed::Box;
    use alloc::collections::VecDeque;
    use core::ptr::NonNull;

    use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
    use virtio_drivers::device::console::VirtIOConsole;
    use virtio_drivers::device::net::VirtIONet;
    use virtio_drivers::transport::pci::bus::{DeviceFunction, PciRoot};
    use virtio_drivers::transport::pci::PciTransport;
    use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
    use virtio_drivers::{BufferDirection, Hal, PhysAddr};
    use zerocopy::{FromBytes, Immutable, IntoBytes};

    use super::*;
    use crate::boot_info::BootInfo;
    use crate::events::{self, Port};
    use crate::layout::Range;
    use crate::pci::{self, reg, Mmio};
    use crate::{dma, time};

    fn alloc(pages: usize) -> (PhysAddr, NonNull<u8>) {
        match dma::alloc_pages(pages) {
            Some(ptr) => (dma::bus_addr(ptr.as_ptr()), ptr),
            None => (0, NonNull::dangling()),
        }
    }

    fn mmio(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        assert!(
            pci::mmio_registered(paddr, size as u64),
            "virtio: MMIO [{paddr:#x}; {size:#x}) is not a memory BAR of an assigned function"
        );
        NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(paddr as usize))
            .expect("a recorded BAR is not at address 0")
    }

    /// The `Hal` of an assigned device: bus address = guest-physical address = pointer.
    #[derive(Debug)]
    pub struct IdentityHal;

    // SAFETY: `dma_alloc` returns zeroed, page-aligned heap pages that nothing else refers to
    // until `dma_dealloc` frees them, and their guest-physical address, which is what the
    // device uses (the IOMMU maps this domain's RAM 1:1 by guest-physical address);
    // `mmio_phys_to_virt` returns the identity-mapped address of a range inside a memory BAR
    // that `pci::list` recorded (outside RAM, so no Rust object aliases it); `share` returns
    // the buffer's own guest-physical address and `unshare` has nothing to copy back.
    unsafe impl Hal for IdentityHal {
        fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
            alloc(pages)
        }

        unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
            // SAFETY: the caller passes back what `dma_alloc(pages)` returned, once, after
            // the device stopped using it.
            unsafe { dma::free_pages(vaddr, pages) };
            0
        }

        unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
            mmio(paddr, size)
        }

        unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
            dma::bus_addr(buffer.as_ptr())
        }

        unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
    }

    /// A buffer whose bus address [`RedirectHal::share`] replaces: `(address, length, bus)`.
    static REDIRECT: spin::Mutex<Option<(u64, usize, u64)>> = spin::Mutex::new(None);

    /// [`IdentityHal`], except that the one buffer [`BlkDevice::read_redirected`] names is
    /// declared to the device at another bus address. Hostile, for test domains.
    #[derive(Debug)]
    pub struct RedirectHal;

    // SAFETY: as for `IdentityHal`, whose functions these are, except `share` for the one
    // armed buffer: it returns a bus address that `read_redirected` checked lies outside the
    // runtime's image and heap, so a device writing there writes no Rust object.
    unsafe impl Hal for RedirectHal {
        fn dma_alloc(pages: usize, direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
            IdentityHal::dma_alloc(pages, direction)
        }

        unsafe fn dma_dealloc(paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
            // SAFETY: passed on from the caller.
            unsafe { IdentityHal::dma_dealloc(paddr, vaddr, pages) }
        }

        unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
            mmio(paddr, size)
        }

        unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
            let addr = dma::bus_addr(buffer.as_ptr());
            match *REDIRECT.lock() {
                Some((armed, len, bus)) if armed == addr && len == buffer.len() => bus,
                _ => addr,
            }
        }

        unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
    }

    /// Offsets in `virtio_pci_common_cfg` (virtio 1.x, 4.1.4.3).
    mod common {
        pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
        pub const DRIVER_FEATURE: u64 = 0x0c;
        pub const MSIX_CONFIG: u64 = 0x10;
        pub const DEVICE_STATUS: u64 = 0x14;
        pub const QUEUE_SELECT: u64 = 0x16;
        pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
        /// Bytes up to the end of `queue_device`.
        pub const LEN: u64 = 0x38;
    }

    /// `VIRTIO_PCI_CAP_COMMON_CFG`.
    const CAP_COMMON_CFG: u8 = 1;
    /// `VIRTIO_MSI_NO_VECTOR`.
    pub const NO_VECTOR: u16 = 0xffff;
    const STATUS_NEEDS_RESET: u8 = 0x40;
    const STATUS_FAILED: u8 = 0x80;

    /// The registers of the common configuration this module uses besides `PciTransport`
    /// (status, vectors, the driver features read back).
    #[derive(Clone, Copy, Debug)]
    struct CommonCfg(Mmio);

    impl CommonCfg {
        /// The first `VIRTIO_PCI_CAP_COMMON_CFG` vendor capability, as `PciTransport` picks it.
        fn find(function: &Function) -> Result<CommonCfg, BlkError> {
            let config = function.config();
            for (cap, id) in config.capabilities() {
                if id != reg::CAP_VENDOR {
                    continue;
                }
                let header = config.read32(cap).map_err(BlkError::Config)?;
                let (cap_len, cfg_type) = ((header >> 16) as u8, (header >> 24) as u8);
                if cap_len < 16 || cfg_type != CAP_COMMON_CFG {
                    continue;
                }
                let bar = config.read8(cap + 4).map_err(BlkError::Config)?;
                let offset = config.read32(cap + 8).map_err(BlkError::Config)?;
                let length = config.read32(cap + 12).map_err(BlkError::Config)?;
                if u64::from(length) < common::LEN {
                    return Err(BlkError::NoCommonConfig);
                }
                return function
                    .mmio(usize::from(bar))
                    .and_then(|m| m.sub(offset.into(), length.into()))
                    .map(CommonCfg)
                    .ok_or(BlkError::NoCommonConfig);
            }
            Err(BlkError::NoCommonConfig)
        }

        fn status(&self) -> u8 {
            self.0.read_u8(common::DEVICE_STATUS)
        }

        /// Writes 0 to the device status and waits (up to 1 s) until it reads 0: the device
        /// then no longer accesses any queue or buffer.
        fn reset(&self) -> bool {
            // SAFETY: a reset stops the device's DMA; it programs none.
            unsafe { self.0.write_u8(common::DEVICE_STATUS, 0) };
            let deadline = time::now_ns().saturating_add(1_000_000_000);
            while self.status() != 0 {
                if time::now_ns() >= deadline {
                    return false;
                }
                core::hint::spin_loop();
            }
            true
        }

        /// The features the driver wrote (read back).
        fn driver_features(&self) -> u64 {
            let mut features = 0;
            for half in 0..2u32 {
                // SAFETY: a select register programs no DMA.
                unsafe { self.0.write_u32(common::DRIVER_FEATURE_SELECT, half) };
                features |= u64::from(self.0.read_u32(common::DRIVER_FEATURE)) << (32 * half);
            }
            features
        }

        /// Routes the configuration-change interrupt and queue `queue`'s interrupts to MSI-X
        /// table entry `vector`.
        fn set_vectors(&self, queue: u16, vector: u16) {
            // SAFETY: vector and select registers program no DMA.
            unsafe {
                self.0.write_u16(common::MSIX_CONFIG, vector);
                self.0.write_u16(common::QUEUE_SELECT, queue);
                self.0.write_u16(common::QUEUE_MSIX_VECTOR, vector);
            }
        }

        /// `(config vector, queue `queue`'s vector)` as the device accepted them
        /// ([`NO_VECTOR`] if it refused).
        fn vectors(&self, queue: u16) -> (u16, u16) {
            // SAFETY: a select register programs no DMA.
            unsafe { self.0.write_u16(common::QUEUE_SELECT, queue) };
            (
                self.0.read_u16(common::MSIX_CONFIG),
                self.0.read_u16(common::QUEUE_MSIX_VECTOR),
            )
        }
    }

    /// `PciTransport` plus `ACCESS_PLATFORM` and MSI-X vectors (see the module
    /// documentation).
    #[derive(Debug)]
    pub struct MvTransport {
        inner: PciTransport,
        common: CommonCfg,
        vector: Option<u16>,
        offered: u64,
    }

    impl Transport for MvTransport {
        fn device_type(&self) -> DeviceType {
            self.inner.device_type()
        }

        fn read_device_features(&mut self) -> u64 {
            self.offered = self.inner.read_device_features();
            self.offered
        }

        fn write_driver_features(&mut self, driver_features: u64) {
            self.inner
                .write_driver_features(super::driver_features(self.offered, driver_features));
        }

        fn max_queue_size(&mut self, queue: u16) -> u32 {
            self.inner.max_queue_size(queue)
        }

        fn notify(&mut self, queue: u16) {
            self.inner.notify(queue)
        }

        fn get_status(&self) -> DeviceStatus {
            self.inner.get_status()
        }

        fn set_status(&mut self, status: DeviceStatus) {
            self.inner.set_status(status)
        }

        fn set_guest_page_size(&mut self, guest_page_size: u32) {
            self.inner.set_guest_page_size(guest_page_size)
        }

        fn requires_legacy_layout(&self) -> bool {
            self.inner.requires_legacy_layout()
        }

        fn queue_set(
            &mut self,
            queue: u16,
            size: u32,
            descriptors: PhysAddr,
            driver_area: PhysAddr,
            device_area: PhysAddr,
        ) {
            if let Some(vector) = self.vector {
                self.common.set_vectors(queue, vector);
            }
            self.inner
                .queue_set(queue, size, descriptors, driver_area, device_area)
        }

        fn queue_unset(&mut self, queue: u16) {
            self.inner.queue_unset(queue)
        }

        fn queue_used(&mut self, queue: u16) -> bool {
            self.inner.queue_used(queue)
        }

        fn ack_interrupt(&mut self) -> InterruptStatus {
            self.inner.ack_interrupt()
        }

        fn read_config_generation(&self) -> u32 {
            self.inner.read_config_generation()
        }

        fn read_config_space<T: FromBytes + IntoBytes>(
            &self,
            offset: usize,
        ) -> virtio_drivers::Result<T> {
            self.inner.read_config_space(offset)
        }

        fn write_config_space<T: IntoBytes + Immutable>(
            &mut self,
            offset: usize,
            value: T,
        ) -> virtio_drivers::Result<()> {
            self.inner.write_config_space(offset, value)
        }
    }

    /// The functions `virtio-drivers`' `PciRoot` finds on `bus` of `segment` through
    /// [`PciConfigAccess`] (256 config reads): only those the microvisor shows this domain.
    pub fn bus_walk(segment: u16, bus: u8, functions: &[Function]) -> Vec<Bdf> {
        let root = PciRoot::new(PciConfigAccess::new(segment, Microvisor, functions));
        root.enumerate_bus(bus)
            .filter_map(|(df, _)| Bdf::new(segment, df.bus, df.device, df.function))
            .collect()
    }

    /// How an opened device tells about completed requests.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Interrupts {
        /// Busy-poll the used ring.
        Poll,
        /// MSI-X table entry `entry` raises `port` (bound with [`pci::bind_msix`]).
        Msix { entry: u16, port: Port },
    }

    /// Binds MSI-X entry 0 of `function` to a new port of this domain (`domid`), unmasked;
    /// [`Interrupts::Poll`] if the function has no MSI-X or a step fails. The text says
    /// what was done (or why polling), for the caller's log line.
    pub fn bind_interrupts(function: &Function, domid: u16) -> (Interrupts, alloc::string::String) {
        use alloc::format;
        if function.msix_entries() == 0 {
            return (
                Interrupts::Poll,
                alloc::string::String::from("no MSI-X, polling"),
            );
        }
        let port = match events::alloc_unbound(domid) {
            Ok(port) => port,
            Err(e) => {
                return (
                    Interrupts::Poll,
                    format!("no event channel for MSI-X ({e}), polling"),
                )
            }
        };
        let _ = events::unmask(port);
        match pci::bind_msix(function.bdf, 0, port) {
            Ok(()) => (
                Interrupts::Msix { entry: 0, port },
                format!("MSI-X entry 0 bound to port {port}"),
            ),
            Err(e) => {
                let _ = events::close(port);
                (
                    Interrupts::Poll,
                    format!("MSI-X bind failed ({e}), polling"),
                )
            }
        }
    }

    /// A virtio block device on an assigned function (see the module documentation).
    pub struct BlkDevice<H: Hal = IdentityHal> {
        function: Function,
        common: CommonCfg,
        interrupts: Interrupts,
        dev: Option<VirtIOBlk<H, MvTransport>>,
        capacity: u64,
        features: u64,
        vectors: (u16, u16),
        events: u64,
        /// Requests started without waiting, on the device.
        started: Vec<Started>,
        /// Requests the device finished (or that a reset ended), not yet polled.
        finished: VecDeque<BlkCompletion>,
        /// When the device status was last read while requests were on it.
        status_checked_ns: u64,
    }

    /// A request [`BlkDevice::start_read`] or [`BlkDevice::start_write`] put on the device:
    /// what the device was given, kept at a fixed place until it hands the request back.
    struct Started {
        token: u16,
        tag: u32,
        write: bool,
        bytes: usize,
        buffer: dma::DmaRegion,
        req: Box<BlkReq>,
        resp: Box<BlkResp>,
        deadline_ns: u64,
    }

    /// A request started without waiting that is over: the caller's tag, its buffer back,
    /// and the outcome (on an error other than [`BlkError::Io`] the device has been reset:
    /// [`BlkDevice::reinit`] before the next request).
    #[derive(Debug)]
    pub struct BlkCompletion {
        pub tag: u32,
        pub buffer: dma::DmaRegion,
        pub result: Result<(), BlkError>,
    }

    /// `VIRTIO_RING_F_INDIRECT_DESC`: a request takes one descriptor of the queue.
    const F_INDIRECT_DESC: u64 = 1 << 28;
    /// How often [`BlkDevice::poll`] reads the device status while requests are on it.
    const STATUS_CHECK_NS: u64 = 100_000_000;

    fn map_status(e: virtio_drivers::Error) -> BlkError {
        match e {
            virtio_drivers::Error::IoError | virtio_drivers::Error::Unsupported => BlkError::Io,
            other => BlkError::Virtio(other),
        }
    }

    fn check_len(len: usize) -> Result<(), BlkError> {
        if len == 0 || !len.is_multiple_of(SECTOR_BYTES) {
            Err(BlkError::BadLength(len))
        } else {
            Ok(())
        }
    }

    /// The longest a request waits for its interrupt before it looks at the used ring again.
    const WAIT_SLICE_NS: u64 = 10_000_000;

    /// Waits until the device used `token`; the device is left as it is on error.
    fn wait_used<H: Hal>(
        dev: &mut VirtIOBlk<H, MvTransport>,
        common: &CommonCfg,
        interrupts: Interrupts,
        events_seen: &mut u64,
        token: u16,
        deadline: u64,
    ) -> Result<(), BlkError> {
        loop {
            let generation = events::generation();
            if let Interrupts::Msix { port, .. } = interrupts {
                if events::take(port) {
                    *events_seen += 1;
                }
            }
            match dev.peek_used() {
                Some(used) if used == token => return Ok(()),
                Some(_) => return Err(BlkError::WrongToken),
                None => {}
            }
            if common.status() & STATUS_NEEDS_RESET != 0 {
                return Err(BlkError::DeviceBroken);
            }
            if time::now_ns() >= deadline {
                return Err(BlkError::Timeout);
            }
            match interrupts {
                Interrupts::Msix { .. } => {
                    // In slices, so a lost interrupt costs at most one slice.
                    let slice_end = time::now_ns().saturating_add(WAIT_SLICE_NS);
                    events::wait_since(generation, Some(deadline.min(slice_end)));
                }
                Interrupts::Poll => core::hint::spin_loop(),
            }
        }
    }

    impl<H: Hal> BlkDevice<H> {
        /// Enables memory decoding and bus mastering on `function`, sets up the virtio
        /// transport and initialises the device (negotiating `ACCESS_PLATFORM` if offered;
        /// with `Interrupts::Msix`, routing the queue and config interrupts to that entry).
        pub fn open(function: &Function, interrupts: Interrupts) -> Result<Self, BlkError> {
            if !is_virtio_blk(function.vendor(), function.device()) {
                return Err(BlkError::NotVirtioBlock {
                    vendor: function.vendor(),
                    device: function.device(),
                });
            }
            function
                .config()
                .enable(reg::COMMAND_MEMORY | reg::COMMAND_BUS_MASTER | reg::COMMAND_INTX_DISABLE)
                .map_err(BlkError::Config)?;
            let common = CommonCfg::find(function)?;
            let mut device = BlkDevice {
                function: *function,
                common,
                interrupts,
                dev: None,
                capacity: 0,
                features: 0,
                vectors: (NO_VECTOR, NO_VECTOR),
                events: 0,
                started: Vec::new(),
                finished: VecDeque::new(),
                status_checked_ns: 0,
            };
            device.init()?;
            Ok(device)
        }

        fn init(&mut self) -> Result<(), BlkError> {
            let transport = open_transport::<H>(
                &self.function,
                self.common,
                self.interrupts,
                DeviceType::Block,
            )
            .ok_or(BlkError::NotVirtioBlock {
                vendor: self.function.vendor(),
                device: self.function.device(),
            })??;
            let dev = VirtIOBlk::<H, _>::new(transport).map_err(BlkError::Virtio)?;
            let status = self.common.status();
            let wanted = (DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK).bits() as u8;
            if status & wanted != wanted || status & (STATUS_FAILED | STATUS_NEEDS_RESET) != 0 {
                drop(dev);
                return Err(BlkError::Rejected { status });
            }
            self.capacity = dev.capacity();
            self.features = self.common.driver_features();
            self.vectors = self.common.vectors(0);
            self.dev = Some(dev);
            Ok(())
        }

        /// The function this device is on.
        pub fn function(&self) -> &Function {
            &self.function
        }

        /// Capacity in 512-byte sectors.
        pub fn capacity(&self) -> u64 {
            self.capacity
        }

        /// The features the driver accepted (as written to the device).
        pub fn features(&self) -> u64 {
            self.features
        }

        /// The MSI-X entry queue 0 signals, if the device accepted one.
        pub fn queue_vector(&self) -> Option<u16> {
            (self.vectors.1 != NO_VECTOR).then_some(self.vectors.1)
        }

        /// The MSI-X entry configuration changes signal, if the device accepted one.
        pub fn config_vector(&self) -> Option<u16> {
            (self.vectors.0 != NO_VECTOR).then_some(self.vectors.0)
        }

        /// Events taken from the interrupt port so far (interrupts that came close together
        /// may count once).
        pub fn interrupts(&self) -> u64 {
            self.events
        }

        /// The device status register.
        pub fn device_status(&self) -> u8 {
            self.common.status()
        }

        /// How requests wait: for the interrupt only if the device accepted the MSI-X entry
        /// for its queue, else by polling.
        fn wait_mode(&self) -> Interrupts {
            match self.interrupts {
                Interrupts::Msix { entry, .. } if self.vectors.1 == entry => self.interrupts,
                _ => Interrupts::Poll,
            }
        }

        /// Whether the device is initialised (not reset after a failed request).
        pub fn is_ready(&self) -> bool {
            self.dev.is_some()
        }

        /// Resets the device and forgets the driver state, after a request failed while the
        /// device might still have its buffers. A device that does not reset cannot be made
        /// to stop its DMA: that ends the domain. Requests started without waiting end with
        /// `error` (their completions are kept for [`BlkDevice::poll`]).
        fn abandon(&mut self, error: &BlkError) {
            if !self.common.reset() {
                panic!(
                    "virtio-blk {}: device does not reset (status {:#x})",
                    self.function.bdf,
                    self.common.status()
                );
            }
            self.dev = None;
            for started in self.started.drain(..) {
                self.finished.push_back(BlkCompletion {
                    tag: started.tag,
                    buffer: started.buffer,
                    result: Err(error.clone()),
                });
            }
        }

        /// Resets the device and initialises it again (after a failed request, or to start
        /// over). The MSI-X binding stays as it was.
        pub fn reinit(&mut self) -> Result<(), BlkError> {
            if self.dev.is_some() || self.common.status() != 0 {
                self.abandon(&BlkError::NeedsReinit);
            }
            if let Interrupts::Msix { port, .. } = self.interrupts {
                // Forget a late interrupt of the old device.
                events::take(port);
            }
            self.init()
        }

        /// Reads sectors `sector..` into `buf` (whole sectors), waiting at most `timeout_ns`
        /// (after every request started without waiting is over). On an error other than
        /// [`BlkError::Io`] the device has been reset: call [`BlkDevice::reinit`] before the
        /// next request.
        pub fn read(
            &mut self,
            sector: u64,
            buf: &mut [u8],
            timeout_ns: u64,
        ) -> Result<(), BlkError> {
            check_len(buf.len())?;
            self.settle();
            let deadline = time::now_ns().saturating_add(timeout_ns);
            let wait_mode = self.wait_mode();
            let dev = self.dev.as_mut().ok_or(BlkError::NeedsReinit)?;
            let mut req = BlkReq::default();
            let mut resp = BlkResp::default();
            // SAFETY: `req`, `buf` and `resp` stay borrowed by this function until the device
            // used them (then `complete_read_blocks` takes them back) or was reset
            // (`abandon`, which waits until the reset took effect), so the device never
            // accesses them after this function returns.
            let token = unsafe { dev.read_blocks_nb(sector as usize, &mut req, buf, &mut resp) }
                .map_err(BlkError::Virtio)?;
            match wait_used(
                dev,
                &self.common,
                wait_mode,
                &mut self.events,
                token,
                deadline,
            ) {
                // SAFETY: the same buffers as passed to `read_blocks_nb` for this token.
                Ok(()) => unsafe { dev.complete_read_blocks(token, &req, buf, &mut resp) }
                    .map_err(map_status),
                Err(e) => {
                    self.abandon(&e);
                    Err(e)
                }
            }
        }

        /// Writes `buf` (whole sectors) to sectors `sector..`, waiting at most `timeout_ns`.
        /// Errors as for [`BlkDevice::read`].
        pub fn write(&mut self, sector: u64, buf: &[u8], timeout_ns: u64) -> Result<(), BlkError> {
            check_len(buf.len())?;
            self.settle();
            let deadline = time::now_ns().saturating_add(timeout_ns);
            let wait_mode = self.wait_mode();
            let dev = self.dev.as_mut().ok_or(BlkError::NeedsReinit)?;
            let mut req = BlkReq::default();
            let mut resp = BlkResp::default();
            // SAFETY: as in `read`: the buffers stay borrowed until the device used them or
            // was reset.
            let token = unsafe { dev.write_blocks_nb(sector as usize, &mut req, buf, &mut resp) }
                .map_err(BlkError::Virtio)?;
            match wait_used(
                dev,
                &self.common,
                wait_mode,
                &mut self.events,
                token,
                deadline,
            ) {
                // SAFETY: the same buffers as passed to `write_blocks_nb` for this token.
                Ok(()) => unsafe { dev.complete_write_blocks(token, &req, buf, &mut resp) }
                    .map_err(map_status),
                Err(e) => {
                    self.abandon(&e);
                    Err(e)
                }
            }
        }

        /// Makes every completed write durable (`VIRTIO_BLK_T_FLUSH`; a no-op on a device
        /// that did not offer `VIRTIO_BLK_F_FLUSH`, which has no volatile cache). The driver
        /// library polls the used ring for this one.
        pub fn flush(&mut self) -> Result<(), BlkError> {
            self.settle();
            let dev = self.dev.as_mut().ok_or(BlkError::NeedsReinit)?;
            dev.flush().map_err(map_status)
        }

        /// Whether the device reports itself read-only (`VIRTIO_BLK_F_RO`).
        pub fn readonly(&self) -> bool {
            self.dev.as_ref().is_some_and(|dev| dev.readonly())
        }
    }

    /// Requests that do not wait (see the module documentation).
    impl<H: Hal> BlkDevice<H> {
        /// How many requests [`BlkDevice::start_read`] and [`BlkDevice::start_write`] may
        /// have on the device at once: the queue's size with indirect descriptors (one
        /// descriptor a request), else a third of it.
        pub fn max_in_flight(&self) -> usize {
            let size = self
                .dev
                .as_ref()
                .map_or(0, |dev| usize::from(dev.virt_queue_size()));
            if self.features & F_INDIRECT_DESC != 0 {
                size
            } else {
                size / 3
            }
        }

        /// Requests started and not yet handed back by [`BlkDevice::poll`].
        pub fn in_flight(&self) -> usize {
            self.started.len() + self.finished.len()
        }

        /// Starts reading `bytes` bytes (whole sectors, at most the buffer's length) from
        /// sector `sector` into `buffer`'s start, and returns at once; [`BlkDevice::poll`]
        /// hands the buffer back with `tag` once the device is done, or `timeout_ns` has
        /// passed (then the device is reset). On an error nothing was started and the buffer
        /// comes back with it.
        pub fn start_read(
            &mut self,
            tag: u32,
            sector: u64,
            buffer: dma::DmaRegion,
            bytes: usize,
            timeout_ns: u64,
        ) -> Result<(), (BlkError, dma::DmaRegion)> {
            self.start(tag, false, sector, buffer, bytes, timeout_ns)
        }

        /// Starts writing the first `bytes` bytes of `buffer` (whole sectors) to sectors
        /// `sector..`; as [`BlkDevice::start_read`] otherwise.
        pub fn start_write(
            &mut self,
            tag: u32,
            sector: u64,
            buffer: dma::DmaRegion,
            bytes: usize,
            timeout_ns: u64,
        ) -> Result<(), (BlkError, dma::DmaRegion)> {
            self.start(tag, true, sector, buffer, bytes, timeout_ns)
        }

        fn start(
            &mut self,
            tag: u32,
            write: bool,
            sector: u64,
            mut buffer: dma::DmaRegion,
            bytes: usize,
            timeout_ns: u64,
        ) -> Result<(), (BlkError, dma::DmaRegion)> {
            if let Err(e) = check_len(bytes) {
                return Err((e, buffer));
            }
            if bytes > buffer.len() {
                return Err((BlkError::BadLength(bytes), buffer));
            }
            let room = self.max_in_flight();
            let Some(dev) = self.dev.as_mut() else {
                return Err((BlkError::NeedsReinit, buffer));
            };
            if self.started.len() >= room {
                return Err((BlkError::Virtio(virtio_drivers::Error::QueueFull), buffer));
            }
            let mut req = Box::new(BlkReq::default());
            let mut resp = Box::new(BlkResp::default());
            // SAFETY: `req`, `resp` (boxed: they do not move) and the buffer's pages (owned
            // by `buffer`, which is kept in `self.started` with them) are handed back to the
            // caller only after `complete_*_blocks` took them back from the device for this
            // token (`poll`) or the device was reset (`abandon`, which waits until the reset
            // took effect); nothing reads or writes them in between. A `BlkDevice` dropped
            // with requests on the device resets it first (`Drop`).
            let token = unsafe {
                if write {
                    dev.write_blocks_nb(
                        sector as usize,
                        &mut req,
                        &buffer.as_slice()[..bytes],
                        &mut resp,
                    )
                } else {
                    dev.read_blocks_nb(
                        sector as usize,
                        &mut req,
                        &mut buffer.as_mut_slice()[..bytes],
                        &mut resp,
                    )
                }
            };
            match token {
                Ok(token) => {
                    self.started.push(Started {
                        token,
                        tag,
                        write,
                        bytes,
                        buffer,
                        req,
                        resp,
                        deadline_ns: time::now_ns().saturating_add(timeout_ns),
                    });
                    Ok(())
                }
                Err(e) => Err((BlkError::Virtio(e), buffer)),
            }
        }

        /// The next request started without waiting that is over, if any, in the order the
        /// device finished them. Takes the device's pending interrupt; resets the device (and
        /// fails every request on it) if a request is past its timeout or the device reports
        /// that it needs a reset.
        pub fn poll(&mut self) -> Option<BlkCompletion> {
            if self.finished.is_empty() {
                if let Some(done) = self.reap() {
                    return Some(done);
                }
            }
            self.finished.pop_front()
        }

        /// The device side of [`BlkDevice::poll`].
        fn reap(&mut self) -> Option<BlkCompletion> {
            if self.started.is_empty() {
                return None;
            }
            if let Interrupts::Msix { port, .. } = self.interrupts {
                if events::take(port) {
                    self.events += 1;
                }
            }
            let dev = self.dev.as_mut()?;
            let Some(token) = dev.peek_used() else {
                let now = time::now_ns();
                if self.started.iter().any(|s| now >= s.deadline_ns) {
                    self.abandon(&BlkError::Timeout);
                } else if now >= self.status_checked_ns.saturating_add(STATUS_CHECK_NS) {
                    self.status_checked_ns = now;
                    if self.common.status() & STATUS_NEEDS_RESET != 0 {
                        self.abandon(&BlkError::DeviceBroken);
                    }
                }
                return None;
            };
            let Some(index) = self.started.iter().position(|s| s.token == token) else {
                self.abandon(&BlkError::WrongToken);
                return None;
            };
            let mut started = self.started.swap_remove(index);
            let bytes = started.bytes;
            // SAFETY: `started` is the entry `start` recorded for this token: the same `req`,
            // `resp` and buffer pages it passed to `*_blocks_nb` (boxed or owned, so they did
            // not move), the same length, and the device just used the token.
            let result = unsafe {
                if started.write {
                    dev.complete_write_blocks(
                        token,
                        &started.req,
                        &started.buffer.as_slice()[..bytes],
                        &mut started.resp,
                    )
                } else {
                    dev.complete_read_blocks(
                        token,
                        &started.req,
                        &mut started.buffer.as_mut_slice()[..bytes],
                        &mut started.resp,
                    )
                }
            };
            let result = match result {
                Ok(()) => Ok(()),
                Err(e @ (virtio_drivers::Error::IoError | virtio_drivers::Error::Unsupported)) => {
                    Err(map_status(e))
                }
                Err(e) => {
                    // The used ring said this token, and the driver disagrees: start over.
                    let error = BlkError::Virtio(e);
                    self.abandon(&error);
                    Err(error)
                }
            };
            Some(BlkCompletion {
                tag: started.tag,
                buffer: started.buffer,
                result,
            })
        }

        /// Waits until every request started without waiting is over (their completions are
        /// kept for [`BlkDevice::poll`]), so a request that waits is alone on the device.
        fn settle(&mut self) {
            while !self.started.is_empty() {
                let generation = events::generation();
                if let Some(done) = self.reap() {
                    self.finished.push_back(done);
                    continue;
                }
                if self.started.is_empty() {
                    break;
                }
                match self.wait_mode() {
                    Interrupts::Msix { .. } => {
                        let slice_end = time::now_ns().saturating_add(WAIT_SLICE_NS);
                        events::wait_since(generation, Some(slice_end));
                    }
                    Interrupts::Poll => core::hint::spin_loop(),
                }
            }
        }
    }

    impl<H: Hal> Drop for BlkDevice<H> {
        /// Stops the device before the buffers of requests still on it are freed.
        fn drop(&mut self) {
            if !self.started.is_empty() {
                self.abandon(&BlkError::NeedsReinit);
            }
        }
    }

    /// Frames each of a [`NetDevice`]'s queues holds.
    pub const NET_QUEUE_SIZE: usize = 64;
    /// Bytes of each receive buffer: the virtio-net header and a whole Ethernet frame.
    const NET_BUFFER_BYTES: usize = 2048;
    /// The longest frame a [`NetDevice`] sends or receives (no offloads are negotiated).
    pub const NET_MAX_FRAME: usize = 1514;

    /// A virtio network device on an assigned function: [`NET_QUEUE_SIZE`] receive buffers
    /// always posted, frames sent one at a time (the driver library waits for each), no
    /// offloads (the backend gives it whole, checksummed frames of at most
    /// [`NET_MAX_FRAME`] bytes).
    pub struct NetDevice {
        function: Function,
        interrupts: Interrupts,
        dev: VirtIONet<IdentityHal, MvTransport, NET_QUEUE_SIZE>,
        mac: [u8; 6],
        features: u64,
        vectors: (u16, u16),
    }

    impl NetDevice {
        /// Enables memory decoding and bus mastering on `function`, sets up the transport
        /// (as for [`BlkDevice::open`]) and posts the receive buffers.
        pub fn open(function: &Function, interrupts: Interrupts) -> Result<Self, BlkError> {
            let not_net = BlkError::NotVirtioNet {
                vendor: function.vendor(),
                device: function.device(),
            };
            let (transport, common) = open_function(
                function,
                interrupts,
                DeviceType::Network,
                is_virtio_net,
                not_net,
            )?;
            let dev = VirtIONet::<IdentityHal, _, NET_QUEUE_SIZE>::new(transport, NET_BUFFER_BYTES)
                .map_err(BlkError::Virtio)?;
            let status = common.status();
            let wanted = (DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK).bits() as u8;
            if status & wanted != wanted || status & (STATUS_FAILED | STATUS_NEEDS_RESET) != 0 {
                drop(dev);
                return Err(BlkError::Rejected { status });
            }
            Ok(NetDevice {
                function: *function,
                interrupts,
                mac: dev.mac_address(),
                dev,
                features: common.driver_features(),
                vectors: common.vectors(0),
            })
        }

        /// The function this device is on.
        pub fn function(&self) -> &Function {
            &self.function
        }

        /// The device's own MAC address.
        pub fn mac(&self) -> [u8; 6] {
            self.mac
        }

        /// The features the driver accepted.
        pub fn features(&self) -> u64 {
            self.features
        }

        /// The port the device's interrupts arrive on, if it took the MSI-X entry for its
        /// receive queue (else the caller polls).
        pub fn port(&self) -> Option<Port> {
            match self.interrupts {
                Interrupts::Msix { entry, port } if self.vectors.1 == entry => Some(port),
                _ => None,
            }
        }

        /// Sends one frame (an Ethernet header and payload, checksums filled in); returns
        /// once the device has taken it.
        pub fn send(&mut self, frame: &[u8]) -> Result<(), BlkError> {
            if frame.len() > NET_MAX_FRAME {
                return Err(BlkError::FrameTooLong(frame.len()));
            }
            let mut buffer = self.dev.new_tx_buffer(frame.len());
            buffer.packet_mut().copy_from_slice(frame);
            self.dev.send(buffer).map_err(BlkError::Virtio)
        }

        /// Takes the next received frame, if there is one: copies it into `out` and gives
        /// the buffer back to the device. Returns the frame's length (a frame longer than
        /// `out` is cut to it).
        pub fn receive(&mut self, out: &mut [u8]) -> Option<usize> {
            let buffer = self.dev.receive().ok()?;
            let packet = buffer.packet();
            let len = packet.len().min(out.len());
            out[..len].copy_from_slice(&packet[..len]);
            // A buffer that cannot be posted again only makes the queue shorter.
            let _ = self.dev.recycle_rx_buffer(buffer);
            Some(len)
        }
    }

    /// A virtio console device on an assigned function, port 0 only (no multiport): a byte
    /// stream to the host (the control domain's management channel).
    pub struct ConsoleDevice {
        dev: VirtIOConsole<IdentityHal, MvTransport>,
        interrupts: Interrupts,
    }

    impl ConsoleDevice {
        /// Enables memory decoding and bus mastering on `function` and sets up the
        /// transport (as for [`BlkDevice::open`]); with an MSI-X entry, received bytes raise
        /// its port.
        pub fn open(function: &Function, interrupts: Interrupts) -> Result<Self, BlkError> {
            let not_console = BlkError::NotVirtioConsole {
                vendor: function.vendor(),
                device: function.device(),
            };
            let (transport, _) = open_function(
                function,
                interrupts,
                DeviceType::Console,
                is_virtio_console,
                not_console,
            )?;
            let dev = VirtIOConsole::new(transport).map_err(BlkError::Virtio)?;
            Ok(ConsoleDevice { dev, interrupts })
        }

        /// The port its interrupts raise, if it has one (else the caller polls).
        pub fn port(&self) -> Option<Port> {
            match self.interrupts {
                Interrupts::Msix { port, .. } => Some(port),
                Interrupts::Poll => None,
            }
        }

        /// Moves the bytes received so far into `out`, up to its length; returns how many.
        pub fn receive(&mut self, out: &mut [u8]) -> Result<usize, BlkError> {
            let mut n = 0;
            while n < out.len() {
                match self.dev.recv(true).map_err(BlkError::Virtio)? {
                    Some(byte) => {
                        out[n] = byte;
                        n += 1;
                    }
                    None => break,
                }
            }
            Ok(n)
        }

        /// Sends `bytes`; returns once the device has taken them.
        pub fn send(&mut self, bytes: &[u8]) -> Result<(), BlkError> {
            for piece in bytes.chunks(4096) {
                self.dev.send_bytes(piece).map_err(BlkError::Virtio)?;
            }
            Ok(())
        }
    }

    /// Checks that `function` is the kind `is_kind` says (else `wrong_kind`), enables memory
    /// decoding and bus mastering, and sets up its transport for a device of type `kind`.
    fn open_function(
        function: &Function,
        interrupts: Interrupts,
        kind: DeviceType,
        is_kind: fn(u16, u16) -> bool,
        wrong_kind: BlkError,
    ) -> Result<(MvTransport, CommonCfg), BlkError> {
        if !is_kind(function.vendor(), function.device()) {
            return Err(wrong_kind);
        }
        function
            .config()
            .enable(reg::COMMAND_MEMORY | reg::COMMAND_BUS_MASTER | reg::COMMAND_INTX_DISABLE)
            .map_err(BlkError::Config)?;
        let common = CommonCfg::find(function)?;
        let transport = open_transport::<IdentityHal>(function, common, interrupts, kind)
            .ok_or(wrong_kind)??;
        Ok((transport, common))
    }

    /// The virtio PCI transport of `function` for a device of type `expected` (`None`:
    /// another type), with `ACCESS_PLATFORM` and the MSI-X entry of `interrupts`.
    fn open_transport<H: Hal>(
        function: &Function,
        common: CommonCfg,
        interrupts: Interrupts,
        expected: DeviceType,
    ) -> Option<Result<MvTransport, BlkError>> {
        let access = PciConfigAccess::new(
            function.bdf.segment,
            Microvisor,
            core::slice::from_ref(function),
        );
        let mut root = PciRoot::new(access);
        let df = DeviceFunction {
            bus: function.bdf.bus,
            device: function.bdf.device,
            function: function.bdf.function,
        };
        let inner = match PciTransport::new::<H, _>(&mut root, df) {
            Ok(inner) => inner,
            Err(e) => return Some(Err(BlkError::Transport(e))),
        };
        if inner.device_type() != expected {
            return None;
        }
        let vector = match interrupts {
            Interrupts::Msix { entry, .. } => Some(entry),
            Interrupts::Poll => None,
        };
        Some(Ok(MvTransport {
            inner,
            common,
            vector,
            offered: 0,
        }))
    }

    impl BlkDevice<RedirectHal> {
        /// Hostile, for test domains: one READ of `bytes` bytes (whole sectors) from `sector`
        /// whose data buffer is declared to the device at bus address `target`, so the
        /// device writes the data there if the IOMMU lets it. Refuses a target range that
        /// overlaps the runtime's image or heap. Results as for [`BlkDevice::read`].
        pub fn read_redirected(
            &mut self,
            info: &BootInfo,
            sector: u64,
            target: u64,
            bytes: usize,
            timeout_ns: u64,
        ) -> Result<(), BlkError> {
            check_len(bytes)?;
            let owned = Range::new(info.layout.image.start, info.layout.heap.end);
            let aimed = Range::new(target, target.saturating_add(bytes as u64));
            if aimed.overlaps(&owned) {
                return Err(BlkError::Refused(target));
            }
            let mut decoy = dma::DmaRegion::new(bytes).ok_or(BlkError::NoMemory)?;
            let buf = &mut decoy.as_mut_slice()[..bytes];
            *REDIRECT.lock() = Some((dma::bus_addr(buf.as_ptr()), bytes, target));
            let result = self.read(sector, buf, timeout_ns);
            *REDIRECT.lock() = None;
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use virtio_drivers::transport::pci::bus::{BarInfo, MemoryBarType, PciRoot};

    use super::*;
    use crate::pci::{PciFunctionEntry, BAR_KIND_IO, BAR_KIND_MEM32, BAR_KIND_MEM64, ENODEV};

    #[test]
    fn pattern_matches_its_definition() {
        let mut buf = [0u8; 2 * SECTOR_BYTES];
        fill_pattern(&mut buf, 7, 0x5a);
        assert_eq!(buf[0], 0x5a ^ 7);
        assert_eq!(buf[1], 0x5a ^ 7 ^ 1);
        assert_eq!(buf[255], 0x5a ^ 7 ^ 255);
        assert_eq!(buf[256], buf[0]);
        assert_eq!(buf[511], 0x5a ^ 7 ^ 255);
        assert_eq!(buf[512], 0x5a ^ 8);
        assert_eq!(pattern_mismatch(&buf, 7, 0x5a), None);
        assert_eq!(pattern_mismatch(&buf, 8, 0x5a), Some(0));
        buf[700] ^= 1;
        assert_eq!(pattern_mismatch(&buf, 7, 0x5a), Some(700));
        // Sector numbers differing by 256 share a pattern; neighbours do not.
        let mut a = [0u8; SECTOR_BYTES];
        let mut b = [0u8; SECTOR_BYTES];
        fill_pattern(&mut a, 1000, 0x5a);
        fill_pattern(&mut b, 1000 + 256, 0x5a);
        assert_eq!(a, b);
        fill_pattern(&mut b, 1001, 0x5a);
        assert_ne!(a, b);
    }

    #[test]
    fn access_platform_is_accepted_when_offered() {
        let chosen = F_VERSION_1 | 1 << 28;
        assert_eq!(
            driver_features(F_VERSION_1 | F_ACCESS_PLATFORM | 1 << 28, chosen),
            chosen | F_ACCESS_PLATFORM
        );
        assert_eq!(driver_features(F_VERSION_1 | 1 << 28, chosen), chosen);
        assert!(is_virtio_blk(0x1af4, 0x1042));
        assert!(is_virtio_blk(0x1af4, 0x1001));
        assert!(!is_virtio_blk(0x1af4, 0x1041));
        assert!(!is_virtio_blk(0x8086, 0x1042));
    }

    /// Config space as the microvisor shows it to an owner: only owned functions exist,
    /// reads are real, BAR writes are ignored.
    #[derive(Clone)]
    struct Owner {
        spaces: std::rc::Rc<RefCell<HashMap<Bdf, [u8; 256]>>>,
        writes: std::rc::Rc<RefCell<std::vec::Vec<(Bdf, u16, u32)>>>,
    }

    impl ConfigBackend for Owner {
        fn read(&self, bdf: Bdf, offset: u16, size: u8) -> Result<u32, i64> {
            let spaces = self.spaces.borrow();
            let space = spaces.get(&bdf).ok_or(ENODEV)?;
            let mut value = 0u32;
            for i in 0..u16::from(size) {
                value |= u32::from(space[usize::from(offset + i)]) << (8 * i);
            }
            Ok(value)
        }
        fn write(&self, bdf: Bdf, offset: u16, size: u8, value: u32) -> Result<(), i64> {
            self.writes.borrow_mut().push((bdf, offset, value));
            let mut spaces = self.spaces.borrow_mut();
            let space = spaces.get_mut(&bdf).ok_or(ENODEV)?;
            if (0x10..0x28).contains(&offset) {
                return Ok(());
            }
            for i in 0..u16::from(size) {
                if (6..8).contains(&(offset + i)) {
                    continue; // the status register: read-only or write-1-to-clear
                }
                space[usize::from(offset + i)] = (value >> (8 * i)) as u8;
            }
            Ok(())
        }
    }

    fn virtio_blk() -> (Function, [u8; 256]) {
        let bdf = Bdf::new(0, 0, 3, 0).unwrap();
        let mut entry = PciFunctionEntry {
            bdf: bdf.to_arg(),
            vendor: 0x1af4,
            device: 0x1042,
            class: 0x01_00_00,
            msix_entries: 2,
            ..Default::default()
        };
        entry.bars[0] = PciBarEntry {
            base: 0xc040,
            size: 0x40,
            kind: BAR_KIND_IO,
            flags: 0,
        };
        entry.bars[1] = PciBarEntry {
            base: 0xe000_0000,
            size: 0x1000,
            kind: BAR_KIND_MEM32,
            flags: 0,
        };
        entry.bars[4] = PciBarEntry {
            base: 0xe000_4000,
            size: 0x4000,
            kind: BAR_KIND_MEM64,
            flags: 1,
        };
        let mut space = [0u8; 256];
        space[0..4].copy_from_slice(&0x1042_1af4u32.to_le_bytes());
        space[4..8].copy_from_slice(&0x0010_0006u32.to_le_bytes());
        space[8..12].copy_from_slice(&0x0100_0001u32.to_le_bytes());
        space[0x10..0x14].copy_from_slice(&0xc041u32.to_le_bytes());
        space[0x14..0x18].copy_from_slice(&0xe000_0000u32.to_le_bytes());
        space[0x20..0x24].copy_from_slice(&0xe000_400cu32.to_le_bytes());
        space[0x34] = 0x40;
        // A vendor capability: common config in BAR 4 at 0, 0x38 bytes.
        space[0x40..0x50].copy_from_slice(&[9, 0, 16, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0x38, 0, 0, 0]);
        (Function::from_entry(entry), space)
    }

    #[test]
    fn pci_root_sees_only_owned_functions_and_sizes_bars() {
        let (function, space) = virtio_blk();
        let owner = Owner {
            spaces: Default::default(),
            writes: Default::default(),
        };
        owner.spaces.borrow_mut().insert(function.bdf, space);
        let access = PciConfigAccess::new(0, owner.clone(), &[function]);
        let mut root = PciRoot::new(access);

        let seen: std::vec::Vec<_> = root.enumerate_bus(0).collect();
        assert_eq!(seen.len(), 1);
        let (df, info) = &seen[0];
        assert_eq!((df.bus, df.device, df.function), (0, 3, 0));
        assert_eq!((info.vendor_id, info.device_id), (0x1af4, 0x1042));
        assert!(root.enumerate_bus(1).next().is_none());

        let bars = root.bars(*df).unwrap();
        assert_eq!(
            bars[0],
            Some(BarInfo::IO {
                address: 0xc040,
                size: 0x40
            })
        );
        assert_eq!(
            bars[1],
            Some(BarInfo::Memory {
                address_type: MemoryBarType::Width32,
                prefetchable: false,
                address: 0xe000_0000,
                size: 0x1000
            })
        );
        assert_eq!(
            bars[4],
            Some(BarInfo::Memory {
                address_type: MemoryBarType::Width64,
                prefetchable: true,
                address: 0xe000_4000,
                size: 0x4000
            })
        );
        assert_eq!(bars[2], None);
        // No BAR write reached the backend; the command register was restored.
        assert!(owner
            .writes
            .borrow()
            .iter()
            .all(|&(_, offset, _)| offset == 4));
        assert_eq!(root.get_status_command(*df).1.bits(), 0x6);

        let caps: std::vec::Vec<_> = root.capabilities(*df).map(|c| (c.offset, c.id)).collect();
        assert_eq!(caps, [(0x40, 9)]);
    }

    #[test]
    fn unaligned_reads_and_foreign_functions() {
        let (function, space) = virtio_blk();
        let owner = Owner {
            spaces: Default::default(),
            writes: Default::default(),
        };
        owner.spaces.borrow_mut().insert(function.bdf, space);
        let mut access = PciConfigAccess::new(0, owner.clone(), &[function]);
        let df = DeviceFunction {
            bus: 0,
            device: 3,
            function: 0,
        };
        assert_eq!(access.read_word(df, 2), 0x1042);
        let other = DeviceFunction {
            bus: 0,
            device: 4,
            function: 0,
        };
        assert_eq!(access.read_word(other, 0), u32::MAX);
        access.write_word(other, 4, 6);
        let bad = DeviceFunction {
            bus: 0,
            device: 40,
            function: 0,
        };
        assert_eq!(access.read_word(bad, 0), u32::MAX);
        // A function of another segment is not sized here.
        let elsewhere = PciConfigAccess::new(1, owner, &[function]);
        assert!(elsewhere.functions.is_empty());
    }
}
