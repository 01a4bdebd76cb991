//! Host-physical memory: the frame allocator (a bitmap from `microvisor-core`, lowest frame
//! first) behind one lock, and the scrub rules.
//!
//! Invariant: a frame is handed out zeroed. A frame freed by a domain is scrubbed at once,
//! before it returns to the free pool, and marked clean; a frame never used since boot is
//! zeroed the first time it is handed out. `alloc` reports whether a frame was reused from an
//! earlier owner, so the domain builder can say how much scrubbed memory it received.
//! All of RAM the allocator manages lies below 4 GiB and is identity-mapped.

use core::sync::atomic::{AtomicU64, Ordering};
use microvisor_core::frames::FrameAllocator;
use spin::Mutex;

pub const PAGE_SIZE: u64 = 4096;
/// The allocator manages host-physical memory below this bound (the identity map's reach).
pub const MAX_PHYS: u64 = 4 << 30;
const NR_FRAMES: usize = (MAX_PHYS / PAGE_SIZE) as usize;

struct Frames {
    allocator: FrameAllocator<'static>,
    /// Bit set: the frame was scrubbed after a previous owner and is known to be zero.
    clean: &'static mut [u64],
}

static FRAMES: Mutex<Option<Frames>> = Mutex::new(None);
static ALLOCATED: AtomicU64 = AtomicU64::new(0);

/// Bitmap storage, taken exactly once by `init`.
static mut USED_BITS: [u64; NR_FRAMES / 64] = [0; NR_FRAMES / 64];
static mut CLEAN_BITS: [u64; NR_FRAMES / 64] = [0; NR_FRAMES / 64];

/// Set up the allocator: every RAM region in `usable` becomes free, then every range in
/// `reserved` is taken out again (microvisor image, boot modules, firmware tables, low memory).
pub fn init(usable: &[(u64, u64)], reserved: &[(u64, u64)]) {
    // SAFETY: `init` runs once, on the bootstrap CPU, before any other CPU runs; the two
    // statics are never touched again except through the references stored in FRAMES.
    let (used, clean) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(USED_BITS),
            &mut *core::ptr::addr_of_mut!(CLEAN_BITS),
        )
    };
    let mut allocator = FrameAllocator::new(&mut used[..], NR_FRAMES as u64);
    for &(start, end) in usable {
        allocator.free_range(start.min(MAX_PHYS), end.min(MAX_PHYS));
    }
    for &(start, end) in reserved {
        allocator.reserve_range(start, end);
    }
    *FRAMES.lock() = Some(Frames {
        allocator,
        clean: &mut clean[..],
    });
}

pub fn free_frames() -> u64 {
    FRAMES
        .lock()
        .as_ref()
        .map_or(0, |f| f.allocator.free_count())
}

pub fn allocated_frames() -> u64 {
    ALLOCATED.load(Ordering::Relaxed)
}

/// A zeroed frame, and whether it had an earlier owner (scrubbed on its release).
pub fn alloc() -> Option<(u64, bool)> {
    let (pa, reused) = {
        let mut guard = FRAMES.lock();
        let frames = guard.as_mut()?;
        let pa = frames.allocator.alloc()?;
        let index = (pa / PAGE_SIZE) as usize;
        let reused = frames.clean[index / 64] & (1 << (index % 64)) != 0;
        frames.clean[index / 64] &= !(1 << (index % 64));
        (pa, reused)
    };
    if !reused {
        zero(pa);
    }
    ALLOCATED.fetch_add(1, Ordering::Relaxed);
    Some((pa, reused))
}

/// `n` physically contiguous zeroed frames (for the permission maps, which the hardware
/// reads as one block); each is freed on its own with [`free`].
pub fn alloc_contiguous(n: u64) -> Option<u64> {
    let pa = FRAMES.lock().as_mut()?.allocator.alloc_contiguous(n, 1)?;
    for i in 0..n {
        zero(pa + i * PAGE_SIZE);
    }
    ALLOCATED.fetch_add(n, Ordering::Relaxed);
    Some(pa)
}

pub fn alloc_zeroed() -> Option<u64> {
    alloc().map(|(pa, _)| pa)
}

/// Scrub a frame and give it back. Freeing a frame that is not allocated is a microvisor bug.
pub fn free(pa: u64) {
    zero(pa);
    let mut guard = FRAMES.lock();
    let frames = guard.as_mut().expect("allocator initialised");
    frames
        .allocator
        .free(pa)
        .expect("freeing a frame that is not allocated");
    let index = (pa / PAGE_SIZE) as usize;
    frames.clean[index / 64] |= 1 << (index % 64);
    ALLOCATED.fetch_sub(1, Ordering::Relaxed);
}

/// A pointer to host-physical memory through the identity map.
pub fn phys_ptr<T>(pa: u64) -> *mut T {
    debug_assert!(pa < MAX_PHYS);
    pa as *mut T
}

pub fn zero(pa: u64) {
    // SAFETY: `pa` is a page-aligned frame below 4 GiB that the caller owns (just allocated
    // or being freed); nothing else holds a reference into it.
    unsafe { core::ptr::write_bytes(phys_ptr::<u8>(pa & !(PAGE_SIZE - 1)), 0, PAGE_SIZE as usize) };
}

/// Copy `bytes` into host-physical memory at `pa` (a frame the caller owns).
pub fn write_phys(pa: u64, bytes: &[u8]) {
    assert!(pa
        .checked_add(bytes.len() as u64)
        .is_some_and(|end| end <= MAX_PHYS));
    // SAFETY: the range lies below 4 GiB (checked) in frames the caller owns; `bytes` cannot
    // overlap them because they are not mapped anywhere in the microvisor's data.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), phys_ptr::<u8>(pa), bytes.len()) };
}

/// Copy guest memory at host-physical `pa` into `buf`, fetching each byte exactly once:
/// volatile loads (8 bytes at a time where aligned), so the compiler can neither fetch a
/// byte again later in place of the copy nor merge this copy with a later one. Every
/// hypercall argument is read through here (`guestmem`), and only the copy is used.
pub fn read_phys_once(pa: u64, buf: &mut [u8]) {
    assert!(pa
        .checked_add(buf.len() as u64)
        .is_some_and(|end| end <= MAX_PHYS));
    let mut done = 0;
    while done < buf.len() {
        let at = pa + done as u64;
        let (len, bytes) = if at.is_multiple_of(8) && buf.len() - done >= 8 {
            // SAFETY: `at..at + 8` lies below 4 GiB (checked above) in the identity map and
            // is 8-byte aligned; a volatile load of plain bytes is valid whatever a guest
            // writes there concurrently.
            (
                8,
                unsafe { core::ptr::read_volatile(phys_ptr::<u64>(at)) }.to_le_bytes(),
            )
        } else {
            // SAFETY: as above, one byte.
            let byte = unsafe { core::ptr::read_volatile(phys_ptr::<u8>(at)) };
            (1, [byte, 0, 0, 0, 0, 0, 0, 0])
        };
        buf[done..done + len].copy_from_slice(&bytes[..len]);
        done += len;
    }
}

/// Copy `len` bytes of host-physical memory from `src` to `dest`, frame to frame through
/// the identity map, without a buffer in between (a grant copy). The ranges may be the same
/// frame (a domain may copy within its own memory), so overlap is allowed. Either side may
/// be guest memory that a guest changes concurrently: its bytes are moved, never borrowed.
pub fn copy_phys(dest: u64, src: u64, len: usize) {
    let within = |pa: u64| {
        pa.checked_add(len as u64)
            .is_some_and(|end| end <= MAX_PHYS)
    };
    assert!(within(src) && within(dest));
    let disjoint = src + len as u64 <= dest || dest + len as u64 <= src;
    if disjoint && (src | dest | len as u64).is_multiple_of(64) {
        // The usual case, whole pages or aligned parts of them: 64 bytes a turn in eight
        // quadword loads and stores. Under QEMU's TCG this is about twice as fast as
        // `rep movsq`, whose every iteration is a pass through the translated block.
        let (mut from, mut to) = (phys_ptr::<u64>(src), phys_ptr::<u64>(dest));
        for _ in 0..len / 64 {
            // SAFETY: as below; the ranges are disjoint and 8-byte aligned, and each turn
            // stays within them (len / 64 turns of 8 quadwords). Volatile accesses keep the
            // compiler from turning the loop back into a call to memcpy.
            unsafe {
                let q = [
                    from.read_volatile(),
                    from.add(1).read_volatile(),
                    from.add(2).read_volatile(),
                    from.add(3).read_volatile(),
                    from.add(4).read_volatile(),
                    from.add(5).read_volatile(),
                    from.add(6).read_volatile(),
                    from.add(7).read_volatile(),
                ];
                for (i, q) in q.into_iter().enumerate() {
                    to.add(i).write_volatile(q);
                }
                from = from.add(8);
                to = to.add(8);
            }
        }
        return;
    }
    // SAFETY: both ranges lie below 4 GiB (checked) in the identity map, in frames the
    // caller has checked the right to read (`src`) and write (`dest`) and holds for the
    // length of the copy; neither range is microvisor data nor referenced by a Rust
    // reference, and `copy` (memmove) is correct if they overlap.
    unsafe { core::ptr::copy(phys_ptr::<u8>(src), phys_ptr::<u8>(dest), len) };
}

/// Copy host-physical memory at `pa` into `buf`.
pub fn read_phys(pa: u64, buf: &mut [u8]) {
    assert!(pa
        .checked_add(buf.len() as u64)
        .is_some_and(|end| end <= MAX_PHYS));
    // SAFETY: the range lies below 4 GiB (checked); the source may be guest memory that a
    // guest changes concurrently, which is why it is copied out as bytes and never borrowed.
    unsafe { core::ptr::copy_nonoverlapping(phys_ptr::<u8>(pa), buf.as_mut_ptr(), buf.len()) };
}
