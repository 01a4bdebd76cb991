//! Tests of the grant-table rules: entry checks and flags, pin counts, the maptrack, the
//! op-struct decoders, and a model of granter + mapper showing that a granted frame is
//! never revoked while mapped.

use super::*;
use microvisor_abi::grant::{GNTST_BAD_DOMAIN, GTF_INVALID};
use proptest::prelude::*;

const GRANTER: DomId = 1;
const MAPPER: DomId = 2;

fn entry(flags: u16, domid: u16, frame: u32) -> GrantEntry {
    GrantEntry {
        flags,
        domid,
        frame,
    }
}

// ---------------------------------------------------------------------------------------
// Entries, acquire, release
// ---------------------------------------------------------------------------------------

#[test]
fn entry_layout_and_round_trip() {
    let e = GrantEntry::decode([0x05, 0x00, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12]);
    assert_eq!(
        e,
        entry(GTF_PERMIT_ACCESS | GTF_READONLY, 0x1234, 0x1234_5678)
    );
    assert_eq!(e.encode(), [0x05, 0x00, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12]);
    assert_eq!(e.header(), 0x1234_0005);
    assert_eq!(header_word(0xffff, 0), 0xffff);
}

#[test]
fn acquire_read_and_write() {
    let e = entry(GTF_PERMIT_ACCESS, MAPPER, 42);
    assert_eq!(
        acquire(e, MAPPER, false),
        Ok(GTF_PERMIT_ACCESS | GTF_READING)
    );
    assert_eq!(
        acquire(e, MAPPER, true),
        Ok(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING)
    );
    // Already reading (another pin): the write adds writing, keeps the rest.
    let busy = entry(GTF_PERMIT_ACCESS | GTF_READING | (1 << 5), MAPPER, 42);
    assert_eq!(
        acquire(busy, MAPPER, true),
        Ok(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING | (1 << 5))
    );
}

#[test]
fn acquire_readonly_grant() {
    let ro = entry(GTF_PERMIT_ACCESS | GTF_READONLY, MAPPER, 42);
    assert_eq!(
        acquire(ro, MAPPER, false),
        Ok(GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING)
    );
    assert_eq!(acquire(ro, MAPPER, true), Err(GNTST_GENERAL_ERROR));
    assert_eq!(acquire_for_map(ro, MAPPER, true), Err(GNTST_GENERAL_ERROR));
}

#[test]
fn acquire_refuses_wrong_grantee_and_types() {
    let e = entry(GTF_PERMIT_ACCESS, MAPPER, 42);
    assert_eq!(acquire(e, 3, false), Err(GNTST_GENERAL_ERROR));
    assert_eq!(acquire(e, GRANTER, false), Err(GNTST_GENERAL_ERROR));
    for ty in [GTF_INVALID, 2, 3] {
        let e = entry(ty, MAPPER, 42);
        assert_eq!(
            acquire(e, MAPPER, false),
            Err(GNTST_GENERAL_ERROR),
            "type {ty}"
        );
        assert_eq!(
            acquire(e, MAPPER, true),
            Err(GNTST_GENERAL_ERROR),
            "type {ty}"
        );
    }
    // A revoked entry (flags 0) whose domid and frame are still there.
    assert_eq!(
        acquire(entry(0, MAPPER, 42), MAPPER, false),
        Err(GNTST_GENERAL_ERROR)
    );
}

#[test]
fn sub_page_refused_only_for_maps() {
    let e = entry(GTF_PERMIT_ACCESS | GTF_SUB_PAGE, MAPPER, 1);
    assert_eq!(acquire_for_map(e, MAPPER, false), Err(GNTST_GENERAL_ERROR));
    assert!(acquire(e, MAPPER, false).is_ok());
    let plain = entry(GTF_PERMIT_ACCESS, MAPPER, 1);
    assert_eq!(
        acquire_for_map(plain, MAPPER, false),
        acquire(plain, MAPPER, false)
    );
}

#[test]
fn release_clears_flags_only_when_the_last_pin_goes() {
    let busy = GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING;
    assert_eq!(release_flags(busy, 0, 0), GTF_PERMIT_ACCESS);
    assert_eq!(release_flags(busy, 1, 0), GTF_PERMIT_ACCESS | GTF_READING);
    assert_eq!(release_flags(busy, 0, 1), busy);
    assert_eq!(release_flags(busy, 5, 2), busy);
    assert_eq!(
        release_flags(busy | GTF_READONLY, 0, 0),
        GTF_PERMIT_ACCESS | GTF_READONLY,
        "other bits stay"
    );
    assert_eq!(release_clear_bits(0, 0), GTF_READING | GTF_WRITING);
    assert_eq!(release_clear_bits(3, 0), GTF_WRITING);
    assert_eq!(release_clear_bits(0, 3), 0);
}

#[test]
fn ref_locations() {
    assert_eq!(ref_location(0, 1), Some((0, 0)));
    assert_eq!(ref_location(1, 1), Some((0, 8)));
    assert_eq!(ref_location(511, 1), Some((0, 4088)));
    assert_eq!(ref_location(512, 1), None);
    assert_eq!(ref_location(512, 2), Some((1, 0)));
    assert_eq!(ref_location(2047, 4), Some((3, 4088)));
    assert_eq!(ref_location(2048, 4), None);
    assert_eq!(
        ref_location(2048, 64),
        None,
        "frames clamp to MAX_GRANT_FRAMES"
    );
    assert_eq!(ref_location(0, 0), None, "no table yet");
    assert_eq!(ref_location(u32::MAX, u32::MAX), None);
    assert_eq!(MAX_GRANT_REFS, 2048);
}

#[test]
fn copy_extents() {
    assert_eq!(check_copy_extent(0, 4096), Ok(()));
    assert_eq!(check_copy_extent(4095, 1), Ok(()));
    assert_eq!(check_copy_extent(4096, 0), Ok(()));
    assert_eq!(check_copy_extent(0, 0), Ok(()));
    assert_eq!(check_copy_extent(4095, 2), Err(GNTST_BAD_COPY_ARG));
    assert_eq!(check_copy_extent(0, 4097), Err(GNTST_BAD_COPY_ARG));
    assert_eq!(
        check_copy_extent(u16::MAX, u16::MAX),
        Err(GNTST_BAD_COPY_ARG)
    );
}

// ---------------------------------------------------------------------------------------
// Active grants
// ---------------------------------------------------------------------------------------

#[test]
fn pin_and_unpin_count_readers_and_writers() {
    let mut a: ActiveGrants<MAX_GRANT_REFS> = ActiveGrants::new();
    assert!(!a.is_active(8));
    assert!(a.needs_flag_update(8, false));
    a.pin(8, 0x100, false).unwrap();
    assert!(a.is_active(8));
    assert_eq!(a.pinned_gfn(8), Some(0x100));
    assert!(!a.needs_flag_update(8, false), "reading already set");
    assert!(a.needs_flag_update(8, true), "first writer sets writing");
    a.pin(8, 0x100, true).unwrap();
    assert!(!a.needs_flag_update(8, true));
    a.pin(8, 0x100, true).unwrap();
    assert_eq!(a.pins(8), (1, 2));
    assert!(a.is_gfn_active(0x100));
    assert!(!a.is_gfn_active(0x101));
    assert_eq!(a.active_count(), 1);

    assert_eq!(a.unpin(8, true), Some((1, 1)));
    assert_eq!(a.unpin(8, false), Some((0, 1)));
    assert_eq!(a.unpin(8, false), None, "no read-only pin left");
    assert_eq!(a.pins(8), (0, 1));
    assert_eq!(a.unpin(8, true), Some((0, 0)));
    assert!(!a.is_active(8));
    assert_eq!(a.pinned_gfn(8), None);
    assert!(!a.is_gfn_active(0x100));
    assert_eq!(a.unpin(8, true), None);
    assert_eq!(a.active_count(), 0);
}

#[test]
fn pin_errors() {
    let mut a: ActiveGrants<16> = ActiveGrants::new();
    assert_eq!(a.pin(16, 1, false), Err(GNTST_BAD_GNTREF));
    assert_eq!(a.pin(u32::MAX, 1, true), Err(GNTST_BAD_GNTREF));
    assert_eq!(a.unpin(16, false), None);
    assert_eq!(a.unpin(u32::MAX, true), None);
    assert!(!a.is_active(u32::MAX));
    assert_eq!(a.pins(u32::MAX), (0, 0));
    assert!(a.needs_flag_update(u32::MAX, false));
    a.pin(3, 0x55, false).unwrap();
    assert_eq!(
        a.pin(3, 0x56, true),
        Err(GNTST_GENERAL_ERROR),
        "frame is fixed"
    );
    assert_eq!(a.pins(3), (1, 0));
    // Once idle, the ref may be pinned on another frame.
    a.unpin(3, false).unwrap();
    a.pin(3, 0x56, true).unwrap();
    assert_eq!(a.pinned_gfn(3), Some(0x56));
}

#[test]
fn pin_count_overflow_is_refused() {
    let mut a: ActiveGrants<1> = ActiveGrants::new();
    a.entries[0] = ActiveEntry {
        gfn: 7,
        readers: u32::MAX,
        writers: 0,
    };
    assert_eq!(a.pin(0, 7, false), Err(GNTST_GENERAL_ERROR));
    assert_eq!(a.pins(0), (u32::MAX, 0));
    assert_eq!(a.pin(0, 7, true), Ok(()));
}

#[test]
fn table_sizes_stay_small() {
    // What a domain carries; the hardware crate keeps these in statics, not on a stack.
    assert!(std::mem::size_of::<ActiveGrants<MAX_GRANT_REFS>>() <= 32 * 1024);
    assert!(std::mem::size_of::<MapTrack<MAX_MAPTRACK>>() <= 8 * 1024);
    assert!(std::mem::size_of::<crate::evtchn::PortTable>() <= 17 * 1024);
}

#[test]
fn active_grants_in_a_static() {
    static IDLE: ActiveGrants<MAX_GRANT_REFS> = ActiveGrants::new();
    static NO_MAPS: MapTrack<MAX_MAPTRACK> = MapTrack::new();
    assert_eq!(IDLE.active_count(), 0);
    assert!(NO_MAPS.is_empty());
}

// ---------------------------------------------------------------------------------------
// Maptrack
// ---------------------------------------------------------------------------------------

fn mapping(granter: DomId, gref: GrantRef, gpa: u64) -> Mapping {
    Mapping {
        granter,
        gref,
        gpa,
        gfn_in_granter: 0x1000 + u64::from(gref),
        readonly: gref.is_multiple_of(2),
    }
}

#[test]
fn maptrack_insert_find_remove() {
    let mut t: MapTrack<4> = MapTrack::new();
    assert_eq!(t.insert(mapping(1, 8, 0x10_0000)), Ok(0));
    assert_eq!(t.insert(mapping(1, 9, 0x10_1000)), Ok(1));
    assert_eq!(t.insert(mapping(3, 8, 0x10_2000)), Ok(2));
    assert_eq!(t.len(), 3);
    assert_eq!(t.find_gpa(0x10_1000), Some(1));
    assert_eq!(t.find_gpa(0x10_1ff8), Some(1), "same page");
    assert_eq!(t.find_gpa(0x10_3000), None);
    assert_eq!(t.count_for_granter(1), 2);
    assert_eq!(t.count_for_granter(3), 1);
    assert_eq!(t.count_for_granter(2), 0);
    assert_eq!(t.get(1), Ok(mapping(1, 9, 0x10_1000)));
    assert_eq!(t.remove(1), Ok(mapping(1, 9, 0x10_1000)));
    assert_eq!(t.remove(1), Err(GNTST_BAD_HANDLE), "double unmap");
    assert_eq!(t.get(1), Err(GNTST_BAD_HANDLE));
    assert_eq!(t.find_gpa(0x10_1000), None);
    assert_eq!(
        t.insert(mapping(1, 10, 0x10_1000)),
        Ok(1),
        "lowest handle reused"
    );
}

#[test]
fn maptrack_full_duplicate_and_bad_handles() {
    let mut t: MapTrack<2> = MapTrack::new();
    t.insert(mapping(1, 8, 0x1000)).unwrap();
    assert_eq!(
        t.insert(mapping(1, 9, 0x1800)),
        Err(GNTST_GENERAL_ERROR),
        "page already holds a mapping"
    );
    t.insert(mapping(1, 9, 0x2000)).unwrap();
    assert_eq!(t.insert(mapping(1, 10, 0x3000)), Err(GNTST_NO_SPACE));
    for bad in [2, 3, 255, u32::MAX] {
        assert_eq!(t.remove(bad), Err(GNTST_BAD_HANDLE));
        assert_eq!(t.get(bad), Err(GNTST_BAD_HANDLE));
        assert_eq!(t.remove_checked(bad, 0x1000), Err(GNTST_BAD_HANDLE));
    }
    assert_eq!(t.len(), 2);
}

#[test]
fn maptrack_remove_checked_requires_the_mapping_page() {
    let mut t: MapTrack<4> = MapTrack::new();
    let h = t.insert(mapping(1, 8, 0x5000)).unwrap();
    assert_eq!(t.remove_checked(h, 0x6000), Err(GNTST_GENERAL_ERROR));
    assert_eq!(t.remove_checked(h, 0), Err(GNTST_GENERAL_ERROR));
    assert_eq!(t.len(), 1, "nothing removed");
    assert_eq!(t.remove_checked(h, 0x5000), Ok(mapping(1, 8, 0x5000)));
    assert!(t.is_empty());
}

#[test]
fn maptrack_drain_takes_everything() {
    let mut t: MapTrack<MAX_MAPTRACK> = MapTrack::new();
    for i in 0..MAX_MAPTRACK as u32 {
        assert_eq!(
            t.insert(mapping(1 + (i % 2) as u16, i, u64::from(i) << 12)),
            Ok(i)
        );
    }
    assert_eq!(t.insert(mapping(1, 999, 0xffff_0000)), Err(GNTST_NO_SPACE));
    t.remove(17).unwrap();
    let drained: Vec<Mapping> = t.drain().collect();
    assert_eq!(drained.len(), MAX_MAPTRACK - 1);
    assert!(drained.iter().all(|m| m.gref != 17));
    assert!(t.is_empty());
    assert_eq!(t.count_for_granter(1), 0);
    assert_eq!(t.drain().count(), 0);
}

// ---------------------------------------------------------------------------------------
// Op structs
// ---------------------------------------------------------------------------------------

#[test]
fn map_grant_ref_layout() {
    let mut b = [0u8; MAP_GRANT_REF_SIZE];
    b[0..8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
    b[8..12].copy_from_slice(&(GNTMAP_HOST_MAP | GNTMAP_READONLY).to_le_bytes());
    b[12..16].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    b[16..18].copy_from_slice(&0x7ff0u16.to_le_bytes());
    b[18..32].fill(0xee); // outputs the guest left there
    let op = MapGrantRef::decode(&b);
    assert_eq!(
        op,
        MapGrantRef {
            host_addr: 0x1122_3344_5566_7788,
            flags: GNTMAP_HOST_MAP | GNTMAP_READONLY,
            gref: 0xdead_beef,
            dom: 0x7ff0,
        }
    );
    assert!(op.readonly());
    assert_eq!(&op.encode()[..18], &b[..18]);

    MapGrantRef::encode_status(&mut b, GNTST_BAD_DOMAIN);
    assert_eq!(&b[18..20], &(-2i16).to_le_bytes());
    assert_eq!(&b[20..32], &[0xee; 12], "only status written on failure");
    MapGrantRef::encode_result(&mut b, 7, 0);
    assert_eq!(&b[18..20], &[0, 0]);
    assert_eq!(&b[20..24], &7u32.to_le_bytes());
    assert_eq!(&b[24..32], &[0; 8]);
    assert_eq!(MapGrantRef::decode(&b), op, "outputs do not disturb inputs");
}

#[test]
fn map_flag_checks_for_translated_mappers() {
    let op = |flags| MapGrantRef {
        host_addr: 0x1000,
        flags,
        gref: 8,
        dom: 1,
    };
    assert_eq!(op(GNTMAP_HOST_MAP).check_flags(), Ok(()));
    assert_eq!(op(GNTMAP_HOST_MAP | GNTMAP_READONLY).check_flags(), Ok(()));
    assert_eq!(
        op(GNTMAP_HOST_MAP | 0x1_0000).check_flags(),
        Ok(()),
        "guest_avail bits"
    );
    assert_eq!(op(0).check_flags(), Err(GNTST_BAD_GNTREF));
    assert_eq!(op(GNTMAP_READONLY).check_flags(), Err(GNTST_BAD_GNTREF));
    assert_eq!(
        op(GNTMAP_DEVICE_MAP).check_flags(),
        Err(GNTST_GENERAL_ERROR)
    );
    assert_eq!(
        op(GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP).check_flags(),
        Err(GNTST_GENERAL_ERROR)
    );
    assert_eq!(
        op(GNTMAP_HOST_MAP | GNTMAP_APPLICATION_MAP).check_flags(),
        Err(GNTST_GENERAL_ERROR)
    );
    assert_eq!(
        op(GNTMAP_HOST_MAP | GNTMAP_CONTAINS_PTE).check_flags(),
        Err(GNTST_GENERAL_ERROR)
    );
}

#[test]
fn unmap_grant_ref_layout() {
    let mut b = [0u8; UNMAP_GRANT_REF_SIZE];
    b[0..8].copy_from_slice(&0xabcd_0000u64.to_le_bytes());
    b[8..16].copy_from_slice(&5u64.to_le_bytes());
    b[16..20].copy_from_slice(&42u32.to_le_bytes());
    let op = UnmapGrantRef::decode(&b);
    assert_eq!(
        op,
        UnmapGrantRef {
            host_addr: 0xabcd_0000,
            dev_bus_addr: 5,
            handle: 42
        }
    );
    assert_eq!(op.encode(), b);
    UnmapGrantRef::encode_status(&mut b, GNTST_BAD_HANDLE);
    assert_eq!(&b[20..22], &(-4i16).to_le_bytes());
    assert_eq!(&b[22..24], &[0, 0]);
    assert_eq!(UnmapGrantRef::decode(&b), op);
}

#[test]
fn copy_layout_and_union() {
    let mut b = [0u8; COPY_SIZE];
    // Source by gref: only the low 32 bits of the union count.
    b[0..8].copy_from_slice(&0xffff_ffff_0000_0009u64.to_le_bytes());
    b[8..10].copy_from_slice(&3u16.to_le_bytes());
    b[10..12].copy_from_slice(&100u16.to_le_bytes());
    // Dest by frame.
    b[16..24].copy_from_slice(&0x1_2345_6789u64.to_le_bytes());
    b[24..26].copy_from_slice(&DOMID_SELF.to_le_bytes());
    b[26..28].copy_from_slice(&200u16.to_le_bytes());
    b[32..34].copy_from_slice(&1000u16.to_le_bytes());
    b[34..36].copy_from_slice(&GNTCOPY_SOURCE_GREF.to_le_bytes());
    let op = GnttabCopy::decode(&b);
    assert_eq!(
        op,
        GnttabCopy {
            source: CopySide {
                target: CopyTarget::Gref(9),
                domid: 3,
                offset: 100
            },
            dest: CopySide {
                target: CopyTarget::Gmfn(0x1_2345_6789),
                domid: DOMID_SELF,
                offset: 200
            },
            len: 1000,
            flags: GNTCOPY_SOURCE_GREF,
        }
    );
    assert_eq!(op.check(MAPPER), Ok(()));
    GnttabCopy::encode_status(&mut b, GNTST_BAD_COPY_ARG);
    assert_eq!(&b[36..38], &(-10i16).to_le_bytes());
    assert_eq!(GnttabCopy::decode(&b), op);
    // Both by gref.
    b[34..36].copy_from_slice(&(GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF).to_le_bytes());
    assert_eq!(
        GnttabCopy::decode(&b).dest.target,
        CopyTarget::Gref(0x2345_6789)
    );
}

#[test]
fn copy_checks() {
    let side = |target, domid, offset| CopySide {
        target,
        domid,
        offset,
    };
    let op = |source, dest, len| GnttabCopy {
        source,
        dest,
        len,
        flags: 0,
    };
    let gref = |d| side(CopyTarget::Gref(8), d, 0);
    let own = side(CopyTarget::Gmfn(5), DOMID_SELF, 0);
    assert_eq!(op(gref(1), own, 4096).check(MAPPER), Ok(()));
    assert_eq!(
        op(gref(1), side(CopyTarget::Gmfn(5), MAPPER, 0), 16).check(MAPPER),
        Ok(()),
        "own id by number"
    );
    assert_eq!(
        op(side(CopyTarget::Gmfn(5), 1, 0), own, 16).check(MAPPER),
        Err(GNTST_PERMISSION_DENIED),
        "someone else's frame by number"
    );
    assert_eq!(
        op(gref(1), side(CopyTarget::Gmfn(5), 1, 0), 16).check(MAPPER),
        Err(GNTST_PERMISSION_DENIED)
    );
    assert_eq!(
        op(side(CopyTarget::Gref(8), 1, 4000), own, 200).check(MAPPER),
        Err(GNTST_BAD_COPY_ARG)
    );
    assert_eq!(
        op(gref(1), side(CopyTarget::Gmfn(5), DOMID_SELF, 4000), 200).check(MAPPER),
        Err(GNTST_BAD_COPY_ARG)
    );
    assert_eq!(
        op(side(CopyTarget::Gmfn(5), 1, 4000), own, 200).check(MAPPER),
        Err(GNTST_PERMISSION_DENIED),
        "permission is checked before extents"
    );
}

fn copy_side(is_gref: bool) -> impl Strategy<Value = CopySide> {
    (any::<u64>(), any::<u16>(), any::<u16>()).prop_map(move |(raw, domid, offset)| CopySide {
        target: if is_gref {
            CopyTarget::Gref(raw as u32)
        } else {
            CopyTarget::Gmfn(raw)
        },
        domid,
        offset,
    })
}

fn gnttab_copy() -> impl Strategy<Value = GnttabCopy> {
    (any::<u16>(), any::<u16>()).prop_flat_map(|(flags, len)| {
        (
            copy_side(flags & GNTCOPY_SOURCE_GREF != 0),
            copy_side(flags & GNTCOPY_DEST_GREF != 0),
        )
            .prop_map(move |(source, dest)| GnttabCopy {
                source,
                dest,
                len,
                flags,
            })
    })
}

proptest! {
    #[test]
    fn decoders_are_total_and_round_trip(
        map in proptest::array::uniform32(any::<u8>()),
        unmap in proptest::array::uniform24(any::<u8>()),
        copy in proptest::collection::vec(any::<u8>(), COPY_SIZE),
        e in any::<[u8; 8]>(),
    ) {
        prop_assert_eq!(GrantEntry::decode(e).encode(), e);
        let m = MapGrantRef::decode(&map);
        prop_assert_eq!(MapGrantRef::decode(&m.encode()), m);
        prop_assert_eq!(&m.encode()[..18], &map[..18]);
        let u = UnmapGrantRef::decode(&unmap);
        prop_assert_eq!(UnmapGrantRef::decode(&u.encode()), u);
        prop_assert_eq!(&u.encode()[..20], &unmap[..20]);
        let bytes: [u8; COPY_SIZE] = copy.try_into().unwrap();
        let c = GnttabCopy::decode(&bytes);
        prop_assert_eq!(GnttabCopy::decode(&c.encode()), c);
        let _ = c.check(MAPPER);
        let _ = m.check_flags();
    }

    #[test]
    fn copy_encode_decode_round_trip(c in gnttab_copy()) {
        prop_assert_eq!(GnttabCopy::decode(&c.encode()), c);
    }

    #[test]
    fn random_pins_never_underflow(
        ops in proptest::collection::vec((any::<bool>(), 0u32..20, 0u64..3, any::<bool>()), 1..400)
    ) {
        let mut a: ActiveGrants<16> = ActiveGrants::new();
        let mut model = [(0u32, 0u32, 0u64); 16];
        for (is_pin, gref, gfn, write) in ops {
            let slot = model.get_mut(gref as usize);
            if is_pin {
                let result = a.pin(gref, gfn, write);
                match slot {
                    None => prop_assert_eq!(result, Err(GNTST_BAD_GNTREF)),
                    Some(s) => {
                        let active = s.0 + s.1 > 0;
                        if active && s.2 != gfn {
                            prop_assert_eq!(result, Err(GNTST_GENERAL_ERROR));
                        } else {
                            prop_assert_eq!(result, Ok(()));
                            if write { s.1 += 1 } else { s.0 += 1 }
                            s.2 = gfn;
                        }
                    }
                }
            } else {
                let result = a.unpin(gref, write);
                match slot {
                    Some(s) if (if write { s.1 } else { s.0 }) > 0 => {
                        if write { s.1 -= 1 } else { s.0 -= 1 }
                        prop_assert_eq!(result, Some((s.0, s.1)));
                    }
                    _ => prop_assert_eq!(result, None),
                }
            }
            for (i, s) in model.iter().enumerate() {
                prop_assert_eq!(a.pins(i as u32), (s.0, s.1));
                prop_assert_eq!(a.is_active(i as u32), s.0 + s.1 > 0);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Model: a granter, a mapper, maps/unmaps/copies/revokes in any order
// ---------------------------------------------------------------------------------------

const REFS: usize = 16;
const FRAMES: u32 = 1;

/// The granter's table (as the guest sees it) and its active grants; the mapper's maptrack.
struct World {
    table: [GrantEntry; REFS],
    active: ActiveGrants<REFS>,
    maps: MapTrack<6>,
    /// What the mapper's nested page table holds: gpa page → (granter gfn, writable).
    npt: std::collections::BTreeMap<u64, (u64, bool)>,
}

#[derive(Clone, Debug)]
enum GrantOp {
    /// The granter (Linux style) grants `gref` to `to` on `frame`.
    Grant {
        gref: u32,
        to: DomId,
        frame: u32,
        readonly: bool,
    },
    /// The granter tries to revoke `gref` (Linux: only if neither reading nor writing).
    Revoke {
        gref: u32,
    },
    /// A misbehaving granter overwrites an entry.
    Scribble {
        gref: u32,
        flags: u16,
        domid: u16,
        frame: u32,
    },
    Map {
        gref: u32,
        page: u64,
        write: bool,
    },
    Unmap {
        handle: u32,
        page: u64,
    },
    Copy {
        gref: u32,
        write: bool,
    },
    Teardown,
}

fn grant_op() -> impl Strategy<Value = GrantOp> {
    let gref = 0u32..20;
    prop_oneof![
        3 => (gref.clone(), prop_oneof![4 => Just(MAPPER), 1 => Just(3u16)], 0u32..4, any::<bool>())
            .prop_map(|(gref, to, frame, readonly)| GrantOp::Grant { gref, to, frame, readonly }),
        2 => gref.clone().prop_map(|gref| GrantOp::Revoke { gref }),
        1 => (gref.clone(), any::<u16>(), prop_oneof![Just(MAPPER), any::<u16>()], 0u32..4)
            .prop_map(|(gref, flags, domid, frame)| GrantOp::Scribble { gref, flags, domid, frame }),
        4 => (gref.clone(), 0u64..8, any::<bool>()).prop_map(|(gref, page, write)| GrantOp::Map { gref, page, write }),
        3 => (0u32..8, 0u64..8).prop_map(|(handle, page)| GrantOp::Unmap { handle, page }),
        2 => (gref, any::<bool>()).prop_map(|(gref, write)| GrantOp::Copy { gref, write }),
        1 => Just(GrantOp::Teardown),
    ]
}

impl World {
    fn new() -> Self {
        World {
            table: [entry(0, 0, 0); REFS],
            active: ActiveGrants::new(),
            maps: MapTrack::new(),
            npt: Default::default(),
        }
    }

    /// Reads entry `gref` the way the microvisor does: bounds, then one copy.
    fn read_entry(&self, gref: u32) -> Result<GrantEntry, i16> {
        let (frame, offset) = ref_location(gref, FRAMES).ok_or(GNTST_BAD_GNTREF)?;
        assert_eq!(frame, 0);
        // The model's table is shorter than its one frame.
        let e = self
            .table
            .get(offset / GRANT_ENTRY_SIZE)
            .ok_or(GNTST_BAD_GNTREF)?;
        Ok(GrantEntry::decode(e.encode()))
    }

    /// Acquire + pin + publish flags; the caller undoes with `release`.
    fn acquire_pin(&mut self, gref: u32, write: bool, for_map: bool) -> Result<u64, i16> {
        let e = self.read_entry(gref)?;
        let new_flags = if for_map {
            acquire_for_map(e, MAPPER, write)?
        } else {
            acquire(e, MAPPER, write)?
        };
        let update = self.active.needs_flag_update(gref, write);
        self.active.pin(gref, u64::from(e.frame), write)?;
        if update {
            // Single-threaded: the swap cannot fail.
            self.table[gref as usize].flags = new_flags;
        }
        Ok(u64::from(e.frame))
    }

    fn release(&mut self, gref: u32, write: bool) {
        let (r, w) = self.active.unpin(gref, write).expect("pinned");
        let e = &mut self.table[gref as usize];
        e.flags &= !release_clear_bits(r, w);
    }

    fn apply(&mut self, op: &GrantOp) {
        match *op {
            GrantOp::Grant {
                gref,
                to,
                frame,
                readonly,
            } => {
                let Some(e) = self.table.get_mut(gref as usize) else {
                    return;
                };
                if e.flags & (GTF_READING | GTF_WRITING) != 0 {
                    return; // Linux never reuses a ref that is still in use
                }
                e.domid = to;
                e.frame = frame;
                e.flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
            }
            GrantOp::Revoke { gref } => {
                let Some(e) = self.table.get_mut(gref as usize) else {
                    return;
                };
                if e.flags & (GTF_READING | GTF_WRITING) == 0 {
                    e.flags = 0;
                }
            }
            GrantOp::Scribble {
                gref,
                flags,
                domid,
                frame,
            } => {
                if let Some(e) = self.table.get_mut(gref as usize) {
                    *e = entry(flags, domid, frame);
                }
            }
            GrantOp::Map { gref, page, write } => {
                let op = MapGrantRef {
                    host_addr: page << 12,
                    flags: GNTMAP_HOST_MAP | if write { 0 } else { GNTMAP_READONLY },
                    gref,
                    dom: GRANTER,
                };
                assert_eq!(op.check_flags(), Ok(()));
                if self.maps.find_gpa(op.host_addr).is_some() {
                    return; // the caller could also rely on insert's refusal, below
                }
                let Ok(gfn) = self.acquire_pin(gref, write, true) else {
                    return;
                };
                let m = Mapping {
                    granter: GRANTER,
                    gref,
                    gpa: op.host_addr,
                    gfn_in_granter: gfn,
                    readonly: op.readonly(),
                };
                match self.maps.insert(m) {
                    Ok(_) => {
                        self.npt.insert(page, (gfn, write));
                    }
                    Err(status) => {
                        assert!(status == GNTST_NO_SPACE || status == GNTST_GENERAL_ERROR);
                        self.release(gref, write);
                    }
                }
            }
            GrantOp::Unmap { handle, page } => {
                let Ok(m) = self.maps.remove_checked(handle, page << 12) else {
                    return;
                };
                self.npt.remove(&(m.gpa >> 12)).expect("mapped page");
                self.release(m.gref, !m.readonly);
            }
            GrantOp::Copy { gref, write } => {
                if self.acquire_pin(gref, write, false).is_ok() {
                    // ... copy ...
                    self.release(gref, write);
                }
            }
            GrantOp::Teardown => {
                let all: Vec<Mapping> = self.maps.drain().collect();
                for m in all {
                    self.npt.remove(&(m.gpa >> 12)).expect("mapped page");
                    self.release(m.gref, !m.readonly);
                }
            }
        }
    }

    /// Checks that the maptrack, the NPT and the pins agree, and, for entries no one has
    /// scribbled over while they were in use, that the flags show the use.
    fn check(&self, scribbled: &[bool; REFS]) {
        let mut readers = [0u32; REFS];
        let mut writers = [0u32; REFS];
        let mut n = 0;
        for handle in 0..6 {
            let Ok(m) = self.maps.get(handle) else {
                continue;
            };
            n += 1;
            let i = m.gref as usize;
            if m.readonly {
                readers[i] += 1;
            } else {
                writers[i] += 1;
            }
            // The mapping is what the NPT holds and what the active entry pins.
            assert_eq!(
                self.npt.get(&(m.gpa >> 12)),
                Some(&(m.gfn_in_granter, !m.readonly))
            );
            assert_eq!(self.active.pinned_gfn(m.gref), Some(m.gfn_in_granter));
            // A mapped grant cannot have been revoked by the (well-behaved) granter:
            // GTF_reading stays set, and GTF_writing for a writable mapping.
            if !scribbled[i] {
                let flags = self.table[i].flags;
                assert!(flags & GTF_READING != 0);
                assert!(m.readonly || flags & GTF_WRITING != 0);
            }
        }
        assert_eq!(n, self.npt.len());
        for i in 0..REFS {
            // Copies are over by now, so pins are exactly the mappings.
            assert_eq!(self.active.pins(i as u32), (readers[i], writers[i]));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_mapped_grant_is_never_revoked(ops in proptest::collection::vec(grant_op(), 1..200)) {
        let mut world = World::new();
        let mut scribbled = [false; REFS];
        for op in &ops {
            if let GrantOp::Scribble { gref, .. } = *op {
                if let Some(s) = scribbled.get_mut(gref as usize) { *s = true; }
            }
            if let GrantOp::Grant { gref, .. } = *op {
                // Honest again once nothing holds the ref any more.
                if !world.active.is_active(gref) {
                    if let Some(s) = scribbled.get_mut(gref as usize) { *s = false; }
                }
            }
            world.apply(op);
            world.check(&scribbled);
        }
        // A teardown always leaves nothing pinned, mapped or flagged (reading/writing).
        world.apply(&GrantOp::Teardown);
        prop_assert!(world.maps.is_empty());
        prop_assert!(world.npt.is_empty());
        prop_assert_eq!(world.active.active_count(), 0);
    }
}
