//! Tests of PVH image parsing: each rule and error, and no panics on random or mutated images.

use super::test_image::{put32, put64, Load, Note, TestImage};
use super::*;
use proptest::prelude::*;

const RAM: u64 = 64 << 20;
const PHDR0: usize = 64;

fn parse(image: &TestImage) -> Result<PvhImage, ImageError> {
    parse_pvh_image(&image.build(), RAM)
}

#[test]
fn valid_image_loads_at_paddr_with_entry_from_note() {
    let bytes = TestImage::pvh(0x100_0850).build();
    let image = parse_pvh_image(&bytes, RAM).unwrap();
    assert_eq!(image.entry, 0x100_0850);
    assert_eq!(image.segments.len(), 1);
    let s = image.segments[0];
    assert_eq!(
        (s.paddr, s.file_bytes, s.mem_bytes),
        (0x100_0000, 0x2000, 0x3000)
    );
    let data = &bytes[s.file_offset as usize..(s.file_offset + s.file_bytes) as usize];
    assert!(data.iter().all(|&b| b == 0x90));
}

#[test]
fn four_byte_entry_note_and_several_segments() {
    let mut image = TestImage::pvh(0);
    image.notes[1].desc = 0x20_0010u32.to_le_bytes().to_vec();
    image.loads.push(Load {
        paddr: 0x20_0000,
        data: vec![1; 16],
        mem_bytes: 0x1000,
    });
    image.loads.push(Load {
        paddr: 0x30_0000,
        data: vec![],
        mem_bytes: 0,
    }); // empty: skipped
    let parsed = parse(&image).unwrap();
    assert_eq!(parsed.entry, 0x20_0010);
    assert_eq!(parsed.segments.len(), 2);
    assert_eq!(parsed.segments[1].paddr, 0x20_0000);
}

#[test]
fn segment_may_end_exactly_at_ram_end() {
    let mut image = TestImage::pvh(0x100_0000);
    image.loads[0].mem_bytes = RAM - 0x100_0000;
    assert!(parse(&image).is_ok());
    image.loads[0].mem_bytes += 1;
    assert_eq!(
        parse(&image),
        Err(ImageError::SegmentBeyondRam {
            index: 0,
            end: RAM + 1
        })
    );
}

#[test]
fn header_errors() {
    assert_eq!(parse_pvh_image(b"", RAM), Err(ImageError::MalformedElf));
    assert_eq!(
        parse_pvh_image(
            b"MZ\x90\0 not an elf file at all, just text......................",
            RAM
        ),
        Err(ImageError::MalformedElf)
    );

    let good = TestImage::pvh(0x100_0850).build();
    let mut elf32 = good.clone();
    elf32[4] = 1;
    elf32[28..36].fill(0); // ELF32 e_phoff and e_shoff
    assert_eq!(parse_pvh_image(&elf32, RAM), Err(ImageError::NotElf64));

    let mut big = good.clone();
    big[5] = 2;
    big[32..40].fill(0); // no program headers, so the header itself parses
    assert_eq!(parse_pvh_image(&big, RAM), Err(ImageError::NotLittleEndian));

    let mut image = TestImage::pvh(0x100_0850);
    image.machine = 3;
    assert_eq!(parse(&image), Err(ImageError::WrongMachine(3)));
    image.machine = 62;
    image.elf_type = 3;
    assert_eq!(parse(&image), Err(ImageError::NotExecutable(3)));

    let mut no_phdrs = good.clone();
    no_phdrs[32..40].fill(0);
    assert_eq!(
        parse_pvh_image(&no_phdrs, RAM),
        Err(ImageError::NoProgramHeaders)
    );

    let truncated = &good[..PHDR0 + 20];
    assert_eq!(
        parse_pvh_image(truncated, RAM),
        Err(ImageError::MalformedElf)
    );
}

#[test]
fn segment_count_errors() {
    let mut image = TestImage::pvh(0x100_0850);
    for i in 0..MAX_SEGMENTS as u64 {
        image.loads.push(Load {
            paddr: 0x200_0000 + i * 0x1000,
            data: vec![],
            mem_bytes: 0x1000,
        });
    }
    assert_eq!(parse(&image), Err(ImageError::TooManySegments));
    image.loads.truncate(MAX_SEGMENTS);
    assert!(parse(&image).is_ok());

    let mut empty = TestImage::pvh(0x100_0850);
    empty.loads.clear();
    assert_eq!(parse(&empty), Err(ImageError::NoLoadableSegments));
    empty.loads.push(Load {
        paddr: 0,
        data: vec![],
        mem_bytes: 0,
    });
    assert_eq!(parse(&empty), Err(ImageError::NoLoadableSegments));
}

#[test]
fn segment_errors() {
    let mut image = TestImage::pvh(0x100_0850);
    image.loads[0].mem_bytes = 0x1000;
    assert_eq!(
        parse(&image),
        Err(ImageError::FileBytesExceedMemBytes { index: 0 })
    );

    let mut image = TestImage::pvh(0x100_0850);
    image.loads.insert(
        0,
        Load {
            paddr: 0xf_f000,
            data: vec![],
            mem_bytes: 0x1000,
        },
    );
    assert_eq!(
        parse(&image),
        Err(ImageError::SegmentBelowLoadFloor {
            index: 0,
            paddr: 0xf_f000
        })
    );

    let mut image = TestImage::pvh(0x100_0850);
    image.loads.push(Load {
        paddr: u64::MAX - 0xfff,
        data: vec![],
        mem_bytes: 0x1000,
    });
    assert_eq!(
        parse(&image),
        Err(ImageError::SegmentAddressOverflow { index: 1 })
    );

    let mut image = TestImage::pvh(0x100_0850);
    image.loads.push(Load {
        paddr: 0x100_2000,
        data: vec![],
        mem_bytes: 0x2000,
    });
    assert_eq!(
        parse(&image),
        Err(ImageError::SegmentsOverlap {
            first: 0,
            second: 1
        })
    );
    // Touching is not overlapping.
    image.loads[1].paddr = 0x100_3000;
    assert!(parse(&image).is_ok());

    let mut bytes = TestImage::pvh(0x100_0850).build();
    let near_end = bytes.len() as u64 - 0x1000;
    put64(&mut bytes, PHDR0 + 8, near_end); // p_offset: runs off the end
    assert_eq!(
        parse_pvh_image(&bytes, RAM),
        Err(ImageError::SegmentOutsideFile { index: 0 })
    );
    put64(&mut bytes, PHDR0 + 8, u64::MAX - 10);
    assert_eq!(
        parse_pvh_image(&bytes, RAM),
        Err(ImageError::SegmentOutsideFile { index: 0 })
    );
}

#[test]
fn note_errors() {
    let mut image = TestImage::pvh(0x100_0850);
    image.notes.remove(1);
    assert_eq!(parse(&image), Err(ImageError::MissingEntryNote));

    let mut image = TestImage::pvh(0x100_0850);
    image.notes[1].owner = b"GNU";
    assert_eq!(parse(&image), Err(ImageError::MissingEntryNote));

    let mut image = TestImage::pvh(0x100_0850);
    image.notes.clear();
    assert_eq!(parse(&image), Err(ImageError::MissingEntryNote));

    let mut image = TestImage::pvh(0);
    image.notes[1].desc = vec![0x50, 0x08];
    assert_eq!(parse(&image), Err(ImageError::BadEntryNoteSize(2)));

    let mut image = TestImage::pvh(0);
    image.notes[1].desc = 0x1_0100_0850u64.to_le_bytes().to_vec();
    assert_eq!(
        parse(&image),
        Err(ImageError::EntryAbove4GiB(0x1_0100_0850))
    );

    assert_eq!(
        parse(&TestImage::pvh(0x100_3000)),
        Err(ImageError::EntryOutsideSegments(0x100_3000))
    );
    assert_eq!(
        parse(&TestImage::pvh(0xfff)),
        Err(ImageError::EntryOutsideSegments(0xfff))
    );

    let mut bytes = TestImage::pvh(0x100_0850).build();
    let note_phdr = PHDR0 + 56;
    put64(&mut bytes, note_phdr + 32, u64::MAX); // p_filesz
    assert_eq!(
        parse_pvh_image(&bytes, RAM),
        Err(ImageError::NoteSegmentOutsideFile { index: 1 })
    );
}

#[test]
fn truncated_note_record_ends_the_scan() {
    let mut bytes = TestImage::pvh(0x100_0850).build();
    let note_phdr = PHDR0 + 56;
    // Shrink the PT_NOTE to cut the entry note's descriptor short.
    let filesz = u64::from_le_bytes(bytes[note_phdr + 32..note_phdr + 40].try_into().unwrap());
    put64(&mut bytes, note_phdr + 32, filesz - 4);
    assert_eq!(
        parse_pvh_image(&bytes, RAM),
        Err(ImageError::MissingEntryNote)
    );
    // A descriptor size that overflows.
    let mut bytes = TestImage::pvh(0x100_0850).build();
    let offset =
        u64::from_le_bytes(bytes[note_phdr + 8..note_phdr + 16].try_into().unwrap()) as usize;
    put32(&mut bytes, offset + 4, u32::MAX);
    assert_eq!(
        parse_pvh_image(&bytes, RAM),
        Err(ImageError::MissingEntryNote)
    );
}

#[test]
fn errors_print() {
    let text = format!(
        "{}",
        ImageError::SegmentBeyondRam {
            index: 2,
            end: 0x4000_0000
        }
    );
    assert_eq!(
        text,
        "segment 2: ends at 0x40000000, beyond the domain's RAM"
    );
}

#[test]
fn unused_note_fields_do_not_matter() {
    // An owner with a longer name that starts with "Xen" is a different owner.
    let mut image = TestImage::pvh(0x100_0850);
    image.notes[1].owner = b"XenX";
    assert_eq!(parse(&image), Err(ImageError::MissingEntryNote));
    image.notes.push(Note {
        owner: b"Xen",
        note_type: 18,
        desc: 0x100_0900u64.to_le_bytes().to_vec(),
    });
    assert_eq!(parse(&image).unwrap().entry, 0x100_0900);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), ram in any::<u64>()) {
        let _ = parse_pvh_image(&bytes, ram);
    }

    #[test]
    fn random_bytes_behind_an_elf_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
        ram in any::<u64>(),
    ) {
        let mut bytes = TestImage::pvh(0x100_0850).build()[..PHDR0].to_vec();
        bytes.extend_from_slice(&tail);
        let _ = parse_pvh_image(&bytes, ram);
    }

    #[test]
    fn mutated_images_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        words in proptest::collection::vec((0usize..PHDR0 + 3 * 56, any::<u64>()), 0..4),
        cut in any::<prop::sample::Index>(),
        ram in prop_oneof![Just(RAM), any::<u64>()],
    ) {
        let mut image = TestImage::pvh(0x100_0850);
        image.loads.push(Load { paddr: 0x200_0000, data: vec![7; 64], mem_bytes: 0x100 });
        let mut bytes = image.build();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        for (at, value) in words {
            put64(&mut bytes, at, value);
        }
        let len = bytes.len();
        let _ = parse_pvh_image(&bytes, ram);
        let _ = parse_pvh_image(&bytes[..cut.index(len)], ram);
    }
}
