//! Tests of the argument reader and decoders: guest memory that a second vCPU rewrites after
//! every fetch still yields one whole version, each byte fetched once; the decoders' layouts
//! and the checks on the decoded values.

use super::*;
use core::cell::{Cell, RefCell};
use core::fmt::Debug;
use microvisor_abi::errno::{EINVAL, EPERM};
use microvisor_abi::evtchn::{EVTCHNSTAT_IPI, EVTCHNSTAT_UNBOUND};
use microvisor_abi::grant::{
    COPY_SIZE, GNTCOPY_DEST_GREF, GNTMAP_HOST_MAP, MAP_GRANT_REF_SIZE, UNMAP_GRANT_REF_SIZE,
};
use proptest::prelude::*;

use crate::evtchn::{Status, StatusDetail};
use crate::grant::{CopyTarget, GnttabCopy, MapGrantRef, UnmapGrantRef};

/// Paging off: a guest-virtual address is the guest-physical one.
const NO_PAGING: PagingMode = PagingMode {
    cr0: 0,
    cr3: 0,
    cr4: 0,
    efer: 0,
};

/// Two pages of guest RAM holding an argument that another vCPU flips between `versions[0]`
/// and `versions[1]` after every fetch the microvisor makes, counting each byte's fetches.
struct FlippingRam {
    bytes: RefCell<Vec<u8>>,
    at: usize,
    versions: [Vec<u8>; 2],
    current: Cell<usize>,
    fetches: RefCell<Vec<u32>>,
    /// What each byte's last fetch returned.
    seen: RefCell<Vec<u8>>,
}

impl FlippingRam {
    fn new(at: usize, first: &[u8], second: &[u8]) -> Self {
        assert_eq!(first.len(), second.len());
        let mut bytes = vec![0x5a; 8192];
        bytes[at..at + first.len()].copy_from_slice(first);
        FlippingRam {
            bytes: RefCell::new(bytes),
            at,
            versions: [first.to_vec(), second.to_vec()],
            current: Cell::new(0),
            fetches: RefCell::new(vec![0; 8192]),
            seen: RefCell::new(vec![0; 8192]),
        }
    }

    /// The other vCPU's store: the argument becomes the other version.
    fn flip(&self) {
        let next = 1 - self.current.get();
        let version = &self.versions[next];
        self.bytes.borrow_mut()[self.at..self.at + version.len()].copy_from_slice(version);
        self.current.set(next);
    }
}

impl GuestPhysMemory for FlippingRam {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b).then(|| u64::from_le_bytes(b))
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let start = gpa as usize;
        let Some(src) = self
            .bytes
            .borrow()
            .get(start..start + buf.len())
            .map(<[u8]>::to_vec)
        else {
            return false;
        };
        buf.copy_from_slice(&src);
        self.seen.borrow_mut()[start..start + buf.len()].copy_from_slice(&src);
        for count in &mut self.fetches.borrow_mut()[start..start + buf.len()] {
            *count += 1;
        }
        self.flip();
        true
    }

    fn write(&mut self, _gpa: u64, _buf: &[u8]) -> bool {
        unreachable!("reading an argument never writes")
    }
}

/// Reads a `T` whose bytes flip between `valid` and `hostile` after every fetch, at `at`:
/// each byte of the struct is fetched exactly once (no byte around it at all), and the
/// value is the decoding of exactly the bytes fetched. Inside one page that is `valid`,
/// whole; across a page boundary (copied page by page) the part in the second page may be
/// `hostile`'s, but every byte is one version's, and no check can see another.
fn reads_once<T: GuestArg + Debug>(at: usize, valid: &[u8], hostile: &[u8]) -> T {
    assert_eq!(valid.len(), T::SIZE);
    let ram = FlippingRam::new(at, valid, hostile);
    let value: T = read(&ram, &NO_PAGING, at as u64).expect("readable");
    let fetches = ram.fetches.borrow();
    assert!(
        fetches[at..at + T::SIZE].iter().all(|&n| n == 1),
        "each byte fetched once: {:?}",
        &fetches[at..at + T::SIZE]
    );
    assert_eq!(fetches.iter().map(|&n| n as usize).sum::<usize>(), T::SIZE);
    let seen = ram.seen.borrow()[at..at + T::SIZE].to_vec();
    assert_eq!(
        format!("{value:?}"),
        format!("{:?}", T::decode(&seen)),
        "the value is what was fetched"
    );
    let split = (4096 - at % 4096).min(T::SIZE);
    assert_eq!(
        &seen[..split],
        &valid[..split],
        "the first page: the first version"
    );
    if split < T::SIZE {
        assert_eq!(
            &seen[split..],
            &hostile[split..],
            "the second page: one fetch later"
        );
    } else {
        assert_eq!(seen, valid, "inside a page: one version, whole");
    }
    value
}

fn bytes_of(fields: &[(usize, &[u8])], size: usize) -> Vec<u8> {
    let mut b = vec![0u8; size];
    for (off, v) in fields {
        b[*off..*off + v.len()].copy_from_slice(v);
    }
    b
}

/// Every argument struct a hypercall family reads: copied once, each byte fetched once, in
/// the middle of a page (the first version, whole) and across a page boundary.
#[test]
fn every_family_reads_its_argument_once() {
    fn both<T: GuestArg + Debug>(valid: &[u8], hostile: &[u8]) -> T {
        reads_once::<T>(4096 - T::SIZE / 2 - 1, valid, hostile);
        reads_once::<T>(64, valid, hostile)
    }
    let info: XenFeatureInfo = both(&[0; 8], &[0xff; 8]);
    assert_eq!(info.submap_idx, 0);
    let shutdown: SchedShutdown = both(&0u32.to_le_bytes(), &99u32.to_le_bytes());
    assert_eq!(shutdown.reason, 0);
    let poll: SchedPoll = both(
        &bytes_of(
            &[(0, &0x1000u64.to_le_bytes()), (8, &1u32.to_le_bytes())],
            24,
        ),
        &bytes_of(
            &[(0, &u64::MAX.to_le_bytes()), (8, &129u32.to_le_bytes())],
            24,
        ),
    );
    assert_eq!(poll.ports_bytes(), Ok(4));
    let ctx: VcpuHvmContext = both(
        &bytes_of(
            &[
                (0, &1u32.to_le_bytes()),
                (8 + 8 * 8, &0x1234u64.to_le_bytes()),
            ],
            120,
        ),
        &[0xee; 120],
    );
    assert_eq!((ctx.mode, ctx.rip), (1, 0x1234));
    let timer: VcpuSetSingleshotTimer = both(
        &bytes_of(&[(0, &5_000u64.to_le_bytes())], 16),
        &bytes_of(&[(0, &1u64.to_le_bytes()), (8, &1u32.to_le_bytes())], 16),
    );
    assert_eq!((timer.timeout_abs_ns, timer.flags), (5_000, 0));
    let area: VcpuRegisterTimeMemoryArea = both(&0x2000u64.to_le_bytes(), &0x2ffcu64.to_le_bytes());
    assert_eq!(check_time_area(area.addr_gva), Ok(()));
    let runstate: RegisterRunstateArea = both(&0x3000u64.to_le_bytes(), &[0xff; 8]);
    assert_eq!(runstate.addr_gva, 0x3000);
    let info: RegisterVcpuInfo = both(
        &bytes_of(&[(0, &7u64.to_le_bytes()), (8, &64u32.to_le_bytes())], 16),
        &bytes_of(&[(0, &7u64.to_le_bytes()), (8, &4090u32.to_le_bytes())], 16),
    );
    assert_eq!(info.gpa(), Ok(7 * 4096 + 64));
    let physmap: AddToPhysmap = both(
        &bytes_of(
            &[
                (0, &DOMID_SELF.to_le_bytes()),
                (16, &0xfeffu64.to_le_bytes()),
            ],
            24,
        ),
        &bytes_of(
            &[(0, &5u16.to_le_bytes()), (16, &(1u64 << 40).to_le_bytes())],
            24,
        ),
    );
    assert_eq!(physmap.check(3), Ok(()));
    let param: HvmParam = both(
        &bytes_of(
            &[
                (0, &DOMID_SELF.to_le_bytes()),
                (8, &(2u64 << 56 | 0xf3).to_le_bytes()),
            ],
            16,
        ),
        &bytes_of(
            &[
                (0, &DOMID_SELF.to_le_bytes()),
                (8, &(2u64 << 56 | 0x10).to_le_bytes()),
            ],
            16,
        ),
    );
    assert_eq!(callback_vector(param.value), Ok(0xf3));
    let alloc: AllocUnbound = both(
        &[0xf0, 0x7f, 0xf0, 0x7f, 0, 0, 0, 0],
        &[5, 0, 5, 0, 0, 0, 0, 0],
    );
    assert_eq!(alloc.dom, DOMID_SELF);
    let bind: BindInterdomain = both(
        &bytes_of(&[(0, &1u16.to_le_bytes()), (4, &9u32.to_le_bytes())], 12),
        &bytes_of(
            &[(0, &0x7ff5u16.to_le_bytes()), (4, &5000u32.to_le_bytes())],
            12,
        ),
    );
    assert_eq!((bind.remote_dom, bind.remote_port), (1, 9));
    let virq: BindVirq = both(&bytes_of(&[], 12), &[0xff; 12]);
    assert_eq!((virq.virq, virq.vcpu), (0, 0));
    let ipi: BindIpi = both(&0u32.to_le_bytes().repeat(2), &[0xff; 8]);
    assert_eq!(ipi.vcpu, 0);
    let port: PortArg = both(&3u32.to_le_bytes(), &5000u32.to_le_bytes());
    assert_eq!(port.port, 3);
    let bind_vcpu: BindVcpu = both(&bytes_of(&[(0, &3u32.to_le_bytes())], 8), &[0xff; 8]);
    assert_eq!((bind_vcpu.port, bind_vcpu.vcpu), (3, 0));
    let status: StatusQuery = both(
        &bytes_of(
            &[(0, &DOMID_SELF.to_le_bytes()), (4, &3u32.to_le_bytes())],
            24,
        ),
        &[0xff; 24],
    );
    assert_eq!((status.dom, status.port), (DOMID_SELF, 3));
    let query: QuerySize = both(
        &bytes_of(&[(0, &DOMID_SELF.to_le_bytes())], 16),
        &[0xff; 16],
    );
    assert_eq!(query.dom, DOMID_SELF);
    let version: SetVersion = both(&1u32.to_le_bytes(), &2u32.to_le_bytes());
    assert_eq!(version.version, 1);
    let map: MapGrantRef = both(
        &bytes_of(
            &[
                (0, &0xc000_0000u64.to_le_bytes()),
                (8, &GNTMAP_HOST_MAP.to_le_bytes()),
                (12, &8u32.to_le_bytes()),
                (16, &DOMID_SELF.to_le_bytes()),
            ],
            MAP_GRANT_REF_SIZE,
        ),
        &[0xff; MAP_GRANT_REF_SIZE],
    );
    assert_eq!((map.gref, map.check_flags()), (8, Ok(())));
    let unmap: UnmapGrantRef = both(
        &bytes_of(&[(16, &3u32.to_le_bytes())], UNMAP_GRANT_REF_SIZE),
        &[0xff; UNMAP_GRANT_REF_SIZE],
    );
    assert_eq!(unmap.handle, 3);
    let copy: GnttabCopy = both(
        &bytes_of(
            &[
                (8, &DOMID_SELF.to_le_bytes()),
                (16, &8u32.to_le_bytes()),
                (32, &64u16.to_le_bytes()),
                (34, &GNTCOPY_DEST_GREF.to_le_bytes()),
            ],
            COPY_SIZE,
        ),
        &bytes_of(
            &[(26, &4032u16.to_le_bytes()), (32, &2048u16.to_le_bytes())],
            COPY_SIZE,
        ),
    );
    assert_eq!(copy.dest.target, CopyTarget::Gref(8));
    assert_eq!(copy.check(1), Ok(()));
}

proptest! {
    /// Whatever the two versions are and wherever the struct lies, the copy is the first
    /// version, whole, never a mix.
    #[test]
    fn a_copy_is_one_whole_version(
        valid in proptest::collection::vec(any::<u8>(), 120),
        hostile in proptest::collection::vec(any::<u8>(), 120),
        at in 0usize..(8192 - 120),
    ) {
        let copy: GnttabCopy = reads_once(at, &valid[..COPY_SIZE], &hostile[..COPY_SIZE]);
        if at % 4096 + COPY_SIZE <= 4096 {
            prop_assert_eq!(copy, GnttabCopy::decode(&valid));
        }
        // `reads_once` compares the whole decoded context with the bytes fetched.
        let ctx: VcpuHvmContext = reads_once(at, &valid, &hostile);
        if at % 4096 + 120 <= 4096 {
            prop_assert_eq!(ctx.efer, u64_at(&valid, 112));
        }
    }
}

#[test]
fn an_unreadable_argument_is_a_fault_and_nothing_is_decoded() {
    let ram = FlippingRam::new(0, &[1; 8], &[2; 8]);
    let beyond: Result<HvmParam, _> = read(&ram, &NO_PAGING, 8192 - 8);
    assert!(beyond.is_err(), "the struct runs past guest RAM");
}

#[test]
fn poll_ports_are_counted_and_split() {
    let poll = |nr_ports| SchedPoll {
        ports_gva: 0x1000,
        nr_ports,
        timeout_ns: 0,
    };
    assert_eq!(poll(0).ports_bytes(), Ok(0));
    assert_eq!(poll(128).ports_bytes(), Ok(POLL_PORTS_MAX_BYTES));
    assert_eq!(poll(129).ports_bytes(), Err(EINVAL));
    assert_eq!(poll(u32::MAX).ports_bytes(), Err(EINVAL));
    let bytes = [1u32, 7, 4095].map(u32::to_le_bytes).concat();
    assert_eq!(poll_ports(&bytes).collect::<Vec<_>>(), [1, 7, 4095]);
}

#[test]
fn time_area_and_vcpu_info_places() {
    assert_eq!(check_time_area(0x2000), Ok(()));
    assert_eq!(
        check_time_area(0x2fe0),
        Ok(()),
        "the record ends at the page end"
    );
    assert_eq!(
        check_time_area(0x2fe8),
        Err(EINVAL),
        "crosses into the next page"
    );
    assert_eq!(check_time_area(0x2004), Err(EINVAL), "not 8-byte aligned");
    let info = |gfn, offset| RegisterVcpuInfo { gfn, offset };
    assert_eq!(info(1, 0).gpa(), Ok(4096));
    assert_eq!(info(1, 4032).gpa(), Ok(4096 + 4032));
    assert_eq!(info(1, 4040).gpa(), Err(EINVAL));
    assert_eq!(info(1, 12).gpa(), Err(EINVAL));
    assert_eq!(info(u64::MAX, 0).gpa(), Err(EINVAL), "no wrap-around");
    assert_eq!(info(u64::MAX / 4096, 64).gpa(), Ok(u64::MAX - 4095 + 64));
}

#[test]
fn add_to_physmap_checks() {
    let op = |domid, gpfn| AddToPhysmap {
        domid,
        space: 0,
        idx: 0,
        gpfn,
    };
    assert_eq!(op(DOMID_SELF, 0xfeff0).check(3), Ok(()));
    assert_eq!(op(3, 0xfeff0).check(3), Ok(()));
    assert_eq!(op(4, 0xfeff0).check(3), Err(EPERM));
    assert_eq!(op(3, PHYSMAP_GPFN_LIMIT).check(3), Err(EINVAL));
    assert_eq!(
        op(4, PHYSMAP_GPFN_LIMIT).check(3),
        Err(EPERM),
        "domain first"
    );
    let b = bytes_of(
        &[
            (0, &0x7ff0u16.to_le_bytes()),
            (2, &0xffffu16.to_le_bytes()),
            (4, &1u32.to_le_bytes()),
            (8, &2u64.to_le_bytes()),
            (16, &0xfef00u64.to_le_bytes()),
        ],
        24,
    );
    assert_eq!(
        AddToPhysmap::decode(&b),
        AddToPhysmap {
            domid: DOMID_SELF,
            space: 1,
            idx: 2,
            gpfn: 0xfef00
        }
    );
}

#[test]
fn callback_values() {
    assert_eq!(callback_vector(0), Ok(0));
    assert_eq!(callback_vector(2 << 56 | 0x20), Ok(0x20));
    assert_eq!(callback_vector(2 << 56 | 0xff), Ok(0xff));
    assert_eq!(
        callback_vector(2 << 56 | 0x1f),
        Err(EINVAL),
        "an exception vector"
    );
    assert_eq!(callback_vector(2 << 56), Err(EINVAL));
    assert_eq!(callback_vector(2 << 56 | 0x1_00f3), Err(EINVAL));
    assert_eq!(callback_vector(1 << 56 | 0xf3), Err(EINVAL), "GSI type");
    assert_eq!(callback_vector(0xf3), Err(EINVAL));
}

#[test]
fn event_channel_layouts() {
    let b = bytes_of(&[(0, &9u16.to_le_bytes()), (4, &77u32.to_le_bytes())], 12);
    assert_eq!(
        BindInterdomain::decode(&b),
        BindInterdomain {
            remote_dom: 9,
            remote_port: 77
        }
    );
    let b = bytes_of(&[(0, &1u32.to_le_bytes()), (4, &2u32.to_le_bytes())], 12);
    assert_eq!(BindVirq::decode(&b), BindVirq { virq: 1, vcpu: 2 });
    assert_eq!(
        AllocUnbound::decode(&[1, 0, 2, 0, 0xee, 0xee, 0xee, 0xee]),
        AllocUnbound {
            dom: 1,
            remote_dom: 2
        }
    );
    assert_eq!(
        BindVcpu::decode(&[5, 0, 0, 0, 1, 0, 0, 0]),
        BindVcpu { port: 5, vcpu: 1 }
    );
    assert_eq!(
        (
            AllocUnbound::PORT_OFFSET,
            BindInterdomain::PORT_OFFSET,
            BindVirq::PORT_OFFSET,
            BindIpi::PORT_OFFSET,
            Status::OUT_OFFSET,
        ),
        (4, 8, 8, 4, 8)
    );
    let out = Status {
        status: EVTCHNSTAT_UNBOUND,
        vcpu: 0,
        detail: StatusDetail::Unbound { dom: 3 },
    }
    .encode_out();
    assert_eq!(out, [1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
    let ipi = Status {
        status: EVTCHNSTAT_IPI,
        vcpu: 1,
        detail: StatusDetail::None,
    }
    .encode_out();
    assert_eq!(&ipi[..8], &[5, 0, 0, 0, 1, 0, 0, 0]);
}

#[test]
fn grant_answers_are_output_fields_only() {
    let out = QuerySize::encode_out(2, 4, -8);
    assert_eq!(out, [2, 0, 0, 0, 4, 0, 0, 0, 0xf8, 0xff]);
    assert_eq!(
        QuerySize::OUT_OFFSET + out.len(),
        14,
        "ends before the padding"
    );
    assert_eq!(GET_VERSION_OFFSET, 4);
    assert_eq!(FEATURE_SUBMAP_OFFSET, 4);
    assert_eq!(HvmParam::VALUE_OFFSET, 8);
}
