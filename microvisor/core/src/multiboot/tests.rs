//! Tests of Multiboot1 parsing over hand-built structures in fake physical memory.

use super::*;
use crate::phys::fake::FakePhys;
use proptest::prelude::*;
use std::vec::Vec;

const INFO: u64 = 0x9000;
const MMAP: u64 = 0xa000;
const MODS: u64 = 0xb000;
const STRINGS: u64 = 0xc000;

fn mmap_entry(base: u64, len: u64, kind: u32) -> [u8; 24] {
    let mut e = [0u8; 24];
    e[..4].copy_from_slice(&20u32.to_le_bytes());
    e[4..12].copy_from_slice(&base.to_le_bytes());
    e[12..20].copy_from_slice(&len.to_le_bytes());
    e[20..24].copy_from_slice(&kind.to_le_bytes());
    e
}

fn info_header(flags: u32, fields: &[(usize, u32)]) -> [u8; 52] {
    let mut h = [0u8; 52];
    h[..4].copy_from_slice(&flags.to_le_bytes());
    for &(at, value) in fields {
        h[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
    h
}

/// What QEMU gives a Multiboot kernel with two modules.
fn qemu_like() -> FakePhys {
    let mut mem = FakePhys::default().with_region(0, 0x1_0000);
    let regions = [
        mmap_entry(0, 0x9_fc00, 1),
        mmap_entry(0x9_fc00, 0x400, 2),
        mmap_entry(0xf_0000, 0x1_0000, 2),
        mmap_entry(0x10_0000, 0x1fee_0000, 1),
        mmap_entry(0xfffc_0000, 0x4_0000, 2),
    ];
    let mmap: Vec<u8> = regions.iter().flatten().copied().collect();
    mem.put(MMAP, &mmap);
    let mut mods = Vec::new();
    for (start, end, string) in [
        (0x20_0000u32, 0x20_0400u32, STRINGS as u32 + 0x100),
        (0x20_1000, 0x30_0000, STRINGS as u32 + 0x200),
    ] {
        mods.extend_from_slice(&start.to_le_bytes());
        mods.extend_from_slice(&end.to_le_bytes());
        mods.extend_from_slice(&string.to_le_bytes());
        mods.extend_from_slice(&0u32.to_le_bytes());
    }
    mem.put(MODS, &mods);
    mem.put(STRINGS, b"serial=com1 loglevel=debug\0");
    mem.put(STRINGS + 0x100, b"manifest.bin\0");
    mem.put(STRINGS + 0x200, b"hello.elf console=hvc0\0");
    let header = info_header(
        FLAG_MEM | FLAG_CMDLINE | FLAG_MODS | FLAG_MMAP,
        &[
            (4, 639),
            (8, 523_136),
            (16, STRINGS as u32),
            (20, 2),
            (24, MODS as u32),
            (44, mmap.len() as u32),
            (48, MMAP as u32),
        ],
    );
    mem.put(INFO, &header);
    mem
}

#[test]
fn parses_what_qemu_passes() {
    let info = parse_multiboot(&qemu_like(), INFO).unwrap();
    assert_eq!(info.mem_map.len(), 5);
    assert_eq!(
        info.mem_map[3],
        MemRegion {
            base: 0x10_0000,
            len: 0x1fee_0000,
            kind: 1
        }
    );
    assert!(info.mem_map[3].is_available() && !info.mem_map[1].is_available());
    assert!(!info.mem_map_truncated);
    assert_eq!(info.modules.len(), 2);
    assert_eq!(
        (info.modules[0].start, info.modules[0].end),
        (0x20_0000, 0x20_0400)
    );
    assert_eq!(info.modules[0].cmdline.as_str(), "manifest.bin");
    assert_eq!(info.modules[1].cmdline.as_str(), "hello.elf console=hvc0");
    assert_eq!(info.cmdline.as_str(), "serial=com1 loglevel=debug");
}

#[test]
fn absent_parts_are_empty() {
    let mut mem = qemu_like();
    mem.put(INFO, &info_header(0, &[]));
    assert_eq!(
        parse_multiboot(&mem, INFO).unwrap(),
        MultibootInfo::default()
    );
    // Without a memory map, mem_lower/mem_upper give two regions.
    mem.put(INFO, &info_header(FLAG_MEM, &[(4, 639), (8, 1024)]));
    let info = parse_multiboot(&mem, INFO).unwrap();
    assert_eq!(
        &info.mem_map[..],
        &[
            MemRegion {
                base: 0,
                len: 639 * 1024,
                kind: 1
            },
            MemRegion {
                base: 0x10_0000,
                len: 1 << 20,
                kind: 1
            }
        ]
    );
}

#[test]
fn mmap_entries_with_larger_size_are_stepped_over() {
    let mut mem = qemu_like();
    let mut mmap = Vec::new();
    for (base, kind) in [(0u64, 1u32), (0x10_0000, 2)] {
        let mut e = mmap_entry(base, 0x1000, kind).to_vec();
        e[..4].copy_from_slice(&28u32.to_le_bytes());
        e.extend_from_slice(&[0xee; 8]);
        mmap.extend_from_slice(&e);
    }
    mem.put(MMAP, &mmap);
    mem.put(
        INFO,
        &info_header(FLAG_MMAP, &[(44, mmap.len() as u32), (48, MMAP as u32)]),
    );
    let info = parse_multiboot(&mem, INFO).unwrap();
    assert_eq!(info.mem_map.len(), 2);
    assert_eq!(info.mem_map[1].base, 0x10_0000);
}

#[test]
fn long_mmaps_are_truncated() {
    let mut mem = FakePhys::default().with_region(0, 0x2_0000);
    let mmap: Vec<u8> = (0..100u64)
        .flat_map(|i| mmap_entry(i << 20, 0x1000, 1))
        .collect();
    mem.put(MMAP, &mmap);
    mem.put(
        INFO,
        &info_header(FLAG_MMAP, &[(44, mmap.len() as u32), (48, MMAP as u32)]),
    );
    let info = parse_multiboot(&mem, INFO).unwrap();
    assert_eq!(info.mem_map.len(), MAX_MEM_REGIONS);
    assert!(info.mem_map_truncated);
}

#[test]
fn mmap_errors() {
    let mut mem = qemu_like();
    let mut bad = mmap_entry(0, 0x1000, 1);
    bad[..4].copy_from_slice(&0u32.to_le_bytes()); // size 0 would loop forever
    mem.put(MMAP, &bad);
    mem.put(
        INFO,
        &info_header(FLAG_MMAP, &[(44, 24), (48, MMAP as u32)]),
    );
    assert_eq!(
        parse_multiboot(&mem, INFO),
        Err(MultibootError::BadMemMapEntry { offset: 0 })
    );
    // Length not a whole number of entries.
    mem.put(MMAP, &mmap_entry(0, 0x1000, 1));
    mem.put(
        INFO,
        &info_header(FLAG_MMAP, &[(44, 30), (48, MMAP as u32)]),
    );
    assert_eq!(
        parse_multiboot(&mem, INFO),
        Err(MultibootError::BadMemMapEntry { offset: 24 })
    );
    // An entry whose size runs past the end.
    let mut big = mmap_entry(0, 0x1000, 1);
    big[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    mem.put(MMAP, &big);
    mem.put(
        INFO,
        &info_header(FLAG_MMAP, &[(44, 24), (48, MMAP as u32)]),
    );
    assert_eq!(
        parse_multiboot(&mem, INFO),
        Err(MultibootError::BadMemMapEntry { offset: 0 })
    );
    // Unreadable.
    mem.put(
        INFO,
        &info_header(FLAG_MMAP, &[(44, 24), (48, 0x8000_0000)]),
    );
    assert_eq!(
        parse_multiboot(&mem, INFO),
        Err(MultibootError::MemMapUnreadable(0x8000_0000))
    );
    assert_eq!(
        parse_multiboot(&mem, 0x9_0000),
        Err(MultibootError::InfoUnreadable(0x9_0000))
    );
}

#[test]
fn module_errors() {
    let mut mem = qemu_like();
    mem.put(
        INFO,
        &info_header(FLAG_MODS, &[(20, 17), (24, MODS as u32)]),
    );
    assert_eq!(
        parse_multiboot(&mem, INFO),
        Err(MultibootError::TooManyModules(17))
    );
    mem.put(INFO, &info_header(FLAG_MODS, &[(20, 1), (24, 0x8000_0000)]));
    assert_eq!(
        parse_multiboot(&mem, INFO),
        Err(MultibootError::ModuleListUnreadable(0x8000_0000))
    );
    let mut backwards = [0u8; 16];
    backwards[..4].copy_from_slice(&0x3000u32.to_le_bytes());
    backwards[4..8].copy_from_slice(&0x2000u32.to_le_bytes());
    mem.put(MODS + 16, &backwards);
    mem.put(INFO, &info_header(FLAG_MODS, &[(20, 2), (24, MODS as u32)]));
    assert_eq!(
        parse_multiboot(&mem, INFO),
        Err(MultibootError::BadModule { index: 1 })
    );
}

#[test]
fn string_errors() {
    let mut mem = qemu_like();
    mem.put(STRINGS, &[b'a'; 300]);
    mem.put(STRINGS + 300, &[0]);
    assert_eq!(
        parse_multiboot(&mem, INFO),
        Err(MultibootError::StringTooLong {
            pa: STRINGS,
            capacity: 256
        })
    );
    // Exactly 256 bytes fit.
    mem.put(STRINGS + 256, &[0]);
    assert_eq!(parse_multiboot(&mem, INFO).unwrap().cmdline.len(), 256);
    mem.put(STRINGS, b"\xff\xfe\0");
    assert_eq!(
        parse_multiboot(&mem, INFO),
        Err(MultibootError::StringNotUtf8(STRINGS))
    );
    // A string running into unreadable memory.
    mem.put(STRINGS, b"ok\0");
    mem.put(0xfff0, &[b'x'; 16]);
    mem.put(MODS + 8, &0xfff0u32.to_le_bytes());
    assert_eq!(
        parse_multiboot(&mem, INFO),
        Err(MultibootError::StringUnreadable(0xfff0))
    );
}

proptest! {
    /// Random information structures, memory maps and module lists never cause a panic.
    #[test]
    fn random_info_never_panics(
        header in proptest::collection::vec(any::<u8>(), 52),
        table in proptest::collection::vec(any::<u8>(), 0..1024),
        pointers in proptest::collection::vec(prop_oneof![0u32..0x1_0000, any::<u32>()], 5),
    ) {
        let mut mem = FakePhys::default().with_region(0, 0x1_0000);
        mem.put(INFO, &header);
        mem.put(MMAP, &table);
        let mut header = header.clone();
        // Point some fields back into readable memory so the parser gets further.
        for (i, at) in [16usize, 24, 44, 48, 20].iter().enumerate() {
            if pointers[i] % 3 != 0 {
                header[*at..*at + 4].copy_from_slice(&(pointers[i] % 0x1_0000).to_le_bytes());
            }
        }
        mem.put(INFO, &header);
        let _ = parse_multiboot(&mem, INFO);
        let _ = parse_multiboot(&mem, u64::MAX - 10);
    }
}
