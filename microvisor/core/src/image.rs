//! Parsing of a PVH domain image: an ELF64 x86-64 executable whose PT_LOAD segments are
//! loaded at their physical addresses and whose entry point is the
//! `XEN_ELFNOTE_PHYS32_ENTRY` note.
//!
//! Rules (see `XEN-ABI.md` §1.1):
//! - ELF64, little-endian, `e_machine` = x86-64, `e_type` = `ET_EXEC`;
//! - every non-empty PT_LOAD is loaded at `p_paddr` (never `p_vaddr`): copy `p_filesz`
//!   bytes from `p_offset`, zero up to `p_memsz`; it must lie in `[1 MiB, ram_bytes)`, its
//!   file range inside the file, `p_filesz <= p_memsz`, and no two segments may overlap;
//! - the entry is the descriptor (4 or 8 bytes, fitting 32 bits) of the first note of
//!   owner `"Xen"` and type 18 found in a PT_NOTE segment (4-byte aligned note records),
//!   and must lie inside a loaded segment.
//!
//! The image comes from a boot module and is not trusted: every failure is an
//! [`ImageError`], never a panic.

use elf::abi::{EM_X86_64, ET_EXEC, PT_LOAD, PT_NOTE};
use elf::endian::AnyEndian;
use elf::file::Class;
use elf::ElfBytes;
use microvisor_abi::pvh::{XEN_ELFNOTE_OWNER, XEN_ELFNOTE_PHYS32_ENTRY};

/// Maximum number of loadable segments.
pub const MAX_SEGMENTS: usize = 16;
/// Lowest guest-physical address a segment may occupy.
pub const MIN_LOAD_PADDR: u64 = 0x10_0000;

/// One PT_LOAD segment to copy into guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical load address.
    pub paddr: u64,
    /// Offset of the segment's bytes in the image.
    pub file_offset: u64,
    /// Bytes to copy from the image.
    pub file_bytes: u64,
    /// Bytes the segment occupies in memory; `[file_bytes, mem_bytes)` is zeroed.
    pub mem_bytes: u64,
}

/// A validated PVH image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvhImage {
    /// 32-bit physical entry point (`XEN_ELFNOTE_PHYS32_ENTRY`).
    pub entry: u32,
    /// The non-empty PT_LOAD segments, in program-header order.
    pub segments: heapless::Vec<Segment, MAX_SEGMENTS>,
}

/// Why an image was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The ELF header or program header table could not be parsed.
    MalformedElf,
    /// Not an ELF64 file.
    NotElf64,
    /// Not little-endian.
    NotLittleEndian,
    /// `e_machine` is not x86-64.
    WrongMachine(u16),
    /// `e_type` is not `ET_EXEC`.
    NotExecutable(u16),
    /// There is no program header table.
    NoProgramHeaders,
    /// A program header could not be read.
    MalformedProgramHeader { index: usize },
    /// More than [`MAX_SEGMENTS`] non-empty PT_LOAD segments.
    TooManySegments,
    /// No non-empty PT_LOAD segment.
    NoLoadableSegments,
    /// A segment's `p_filesz` exceeds its `p_memsz`.
    FileBytesExceedMemBytes { index: usize },
    /// A segment's file range `[p_offset, p_offset + p_filesz)` is not inside the file.
    SegmentOutsideFile { index: usize },
    /// A segment starts below [`MIN_LOAD_PADDR`].
    SegmentBelowLoadFloor { index: usize, paddr: u64 },
    /// `p_paddr + p_memsz` overflows.
    SegmentAddressOverflow { index: usize },
    /// A segment ends beyond the domain's RAM.
    SegmentBeyondRam { index: usize, end: u64 },
    /// Two segments overlap in guest-physical memory.
    SegmentsOverlap { first: usize, second: usize },
    /// A PT_NOTE segment's data is not inside the file.
    NoteSegmentOutsideFile { index: usize },
    /// No `XEN_ELFNOTE_PHYS32_ENTRY` note: not a PVH kernel.
    MissingEntryNote,
    /// The entry note's descriptor is not 4 or 8 bytes long.
    BadEntryNoteSize(u64),
    /// The entry point does not fit in 32 bits.
    EntryAbove4GiB(u64),
    /// The entry point is not inside any loaded segment.
    EntryOutsideSegments(u32),
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::MalformedElf => write!(f, "malformed ELF header or program header table"),
            Self::NotElf64 => write!(f, "not an ELF64 file"),
            Self::NotLittleEndian => write!(f, "not a little-endian ELF file"),
            Self::WrongMachine(m) => write!(f, "ELF machine {m} is not x86-64"),
            Self::NotExecutable(t) => write!(f, "ELF type {t} is not ET_EXEC"),
            Self::NoProgramHeaders => write!(f, "no program headers"),
            Self::MalformedProgramHeader { index } => {
                write!(f, "program header {index} is malformed")
            }
            Self::TooManySegments => {
                write!(f, "more than {MAX_SEGMENTS} loadable segments")
            }
            Self::NoLoadableSegments => write!(f, "no loadable segment"),
            Self::FileBytesExceedMemBytes { index } => {
                write!(f, "segment {index}: p_filesz exceeds p_memsz")
            }
            Self::SegmentOutsideFile { index } => {
                write!(f, "segment {index}: file range lies outside the image")
            }
            Self::SegmentBelowLoadFloor { index, paddr } => write!(
                f,
                "segment {index}: p_paddr {paddr:#x} is below {MIN_LOAD_PADDR:#x}"
            ),
            Self::SegmentAddressOverflow { index } => {
                write!(f, "segment {index}: p_paddr + p_memsz overflows")
            }
            Self::SegmentBeyondRam { index, end } => {
                write!(
                    f,
                    "segment {index}: ends at {end:#x}, beyond the domain's RAM"
                )
            }
            Self::SegmentsOverlap { first, second } => {
                write!(f, "segments {first} and {second} overlap")
            }
            Self::NoteSegmentOutsideFile { index } => {
                write!(f, "note segment {index} lies outside the image")
            }
            Self::MissingEntryNote => {
                write!(f, "no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH kernel")
            }
            Self::BadEntryNoteSize(size) => {
                write!(
                    f,
                    "PHYS32_ENTRY note descriptor is {size} bytes, not 4 or 8"
                )
            }
            Self::EntryAbove4GiB(entry) => {
                write!(f, "PHYS32_ENTRY {entry:#x} does not fit in 32 bits")
            }
            Self::EntryOutsideSegments(entry) => {
                write!(f, "PHYS32_ENTRY {entry:#x} is not inside a loaded segment")
            }
        }
    }
}

/// Parses and validates a PVH image for a domain with `ram_bytes` of RAM at GPA 0.
pub fn parse_pvh_image(bytes: &[u8], ram_bytes: u64) -> Result<PvhImage, ImageError> {
    let file = ElfBytes::<AnyEndian>::minimal_parse(bytes).map_err(|_| ImageError::MalformedElf)?;
    let header = &file.ehdr;
    if header.class != Class::ELF64 {
        return Err(ImageError::NotElf64);
    }
    if header.endianness != AnyEndian::Little {
        return Err(ImageError::NotLittleEndian);
    }
    if header.e_machine != EM_X86_64 {
        return Err(ImageError::WrongMachine(header.e_machine));
    }
    if header.e_type != ET_EXEC {
        return Err(ImageError::NotExecutable(header.e_type));
    }
    let program_headers = file.segments().ok_or(ImageError::NoProgramHeaders)?;

    let mut segments: heapless::Vec<Segment, MAX_SEGMENTS> = heapless::Vec::new();
    // Program-header index of each entry of `segments`, for error messages.
    let mut indices: heapless::Vec<usize, MAX_SEGMENTS> = heapless::Vec::new();
    let mut entry: Option<u64> = None;
    for index in 0..program_headers.len() {
        let phdr = program_headers
            .get(index)
            .map_err(|_| ImageError::MalformedProgramHeader { index })?;
        match phdr.p_type {
            PT_LOAD => {
                let segment = Segment {
                    paddr: phdr.p_paddr,
                    file_offset: phdr.p_offset,
                    file_bytes: phdr.p_filesz,
                    mem_bytes: phdr.p_memsz,
                };
                check_segment(&segment, index, bytes.len() as u64, ram_bytes)?;
                if segment.mem_bytes == 0 {
                    continue;
                }
                for (other, &other_index) in segments.iter().zip(indices.iter()) {
                    if overlaps(other, &segment) {
                        return Err(ImageError::SegmentsOverlap {
                            first: other_index,
                            second: index,
                        });
                    }
                }
                segments
                    .push(segment)
                    .map_err(|_| ImageError::TooManySegments)?;
                // Same capacity as `segments`, so this cannot fail once that push succeeded.
                indices
                    .push(index)
                    .map_err(|_| ImageError::TooManySegments)?;
            }
            PT_NOTE if entry.is_none() => {
                let data = file_range(bytes, phdr.p_offset, phdr.p_filesz)
                    .ok_or(ImageError::NoteSegmentOutsideFile { index })?;
                entry = find_entry_note(data)?;
            }
            _ => {}
        }
    }

    if segments.is_empty() {
        return Err(ImageError::NoLoadableSegments);
    }
    let entry = entry.ok_or(ImageError::MissingEntryNote)?;
    let entry = u32::try_from(entry).map_err(|_| ImageError::EntryAbove4GiB(entry))?;
    let inside = segments.iter().any(|s| {
        let start = s.paddr;
        // Checked in `check_segment`: no overflow.
        let end = s.paddr + s.mem_bytes;
        (start..end).contains(&u64::from(entry))
    });
    if !inside {
        return Err(ImageError::EntryOutsideSegments(entry));
    }
    Ok(PvhImage { entry, segments })
}

fn check_segment(
    segment: &Segment,
    index: usize,
    file_len: u64,
    ram_bytes: u64,
) -> Result<(), ImageError> {
    if segment.file_bytes > segment.mem_bytes {
        return Err(ImageError::FileBytesExceedMemBytes { index });
    }
    let file_end = segment
        .file_offset
        .checked_add(segment.file_bytes)
        .ok_or(ImageError::SegmentOutsideFile { index })?;
    if file_end > file_len {
        return Err(ImageError::SegmentOutsideFile { index });
    }
    if segment.mem_bytes == 0 {
        return Ok(());
    }
    if segment.paddr < MIN_LOAD_PADDR {
        return Err(ImageError::SegmentBelowLoadFloor {
            index,
            paddr: segment.paddr,
        });
    }
    let end = segment
        .paddr
        .checked_add(segment.mem_bytes)
        .ok_or(ImageError::SegmentAddressOverflow { index })?;
    if end > ram_bytes {
        return Err(ImageError::SegmentBeyondRam { index, end });
    }
    Ok(())
}

fn overlaps(a: &Segment, b: &Segment) -> bool {
    // Both are validated: the additions do not overflow.
    a.paddr < b.paddr + b.mem_bytes && b.paddr < a.paddr + a.mem_bytes
}

fn file_range(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    bytes.get(start..end)
}

/// Scans the note records in one PT_NOTE segment for the PVH entry note.
///
/// Record layout: `namesz: u32, descsz: u32, type: u32`, then the name and the descriptor,
/// each padded to 4 bytes. A truncated record ends the scan (the rest is ignored).
fn find_entry_note(data: &[u8]) -> Result<Option<u64>, ImageError> {
    let mut offset = 0usize;
    while let Some(header) = data.get(offset..offset.saturating_add(12)) {
        let name_len = read_u32(header, 0) as usize;
        let desc_len = read_u32(header, 4) as usize;
        let note_type = read_u32(header, 8);
        let Some(name_start) = offset.checked_add(12) else {
            break;
        };
        let Some(desc_start) = align4(name_len).and_then(|n| name_start.checked_add(n)) else {
            break;
        };
        let Some(next) = align4(desc_len).and_then(|d| desc_start.checked_add(d)) else {
            break;
        };
        let Some(name) = data.get(name_start..name_start.saturating_add(name_len)) else {
            break;
        };
        let Some(desc) = data.get(desc_start..desc_start.saturating_add(desc_len)) else {
            break;
        };
        let owner = match name.iter().position(|&b| b == 0) {
            Some(nul) => &name[..nul],
            None => name,
        };
        if owner == XEN_ELFNOTE_OWNER && note_type == XEN_ELFNOTE_PHYS32_ENTRY {
            return match *desc {
                [a, b, c, d] => Ok(Some(u64::from(u32::from_le_bytes([a, b, c, d])))),
                [a, b, c, d, e, f, g, h] => Ok(Some(u64::from_le_bytes([a, b, c, d, e, f, g, h]))),
                _ => Err(ImageError::BadEntryNoteSize(desc_len as u64)),
            };
        }
        offset = next;
    }
    Ok(None)
}

fn align4(n: usize) -> Option<usize> {
    n.checked_next_multiple_of(4)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
pub(crate) mod test_image;

#[cfg(test)]
mod tests;
