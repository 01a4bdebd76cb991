//! Finding a domain's images (its kernel and its ramdisk) and checking that the kernel is a
//! PVH ELF image.
//!
//! An image path resolves relative to the directory of the domain file that names it; if it
//! is not there and is a bare file name (no `/`), each image directory is tried in order.
//!
//! A PVH image is an ELF64, little-endian, x86-64 executable (`ET_EXEC`) with a
//! `PT_NOTE` segment that holds a note of owner `"Xen"` and type 18
//! (`XEN_ELFNOTE_PHYS32_ENTRY`) whose descriptor is the 32-bit physical entry point (4 or 8
//! bytes, little-endian).

use std::path::{Path, PathBuf};

use elf::abi::{EM_X86_64, ET_EXEC, PT_NOTE};
use elf::endian::AnyEndian;
use elf::file::Class;
use elf::note::{Note, NoteIterator};
use elf::ElfBytes;
use microvisor_abi::pvh::{XEN_ELFNOTE_OWNER, XEN_ELFNOTE_PHYS32_ENTRY};

use crate::domain::{DomainConfig, ImageRef};
use crate::error::{ImageDefect, ManifestError, Problem};

/// Finds the file of an image (a kernel or a ramdisk) a domain file names; the error lists
/// every place looked.
pub(crate) fn resolve_image(
    image: &ImageRef,
    image_dirs: &[PathBuf],
) -> Result<PathBuf, ManifestError> {
    let directory = image.file.parent().unwrap_or(Path::new(""));
    let mut candidates = vec![directory.join(&image.path)];
    if let Some(name) = image.bare_name() {
        candidates.extend(image_dirs.iter().map(|dir| dir.join(name)));
    }
    if let Some(found) = candidates.iter().find(|path| path.is_file()) {
        return Ok(found.clone());
    }
    let looked = candidates
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let name = image.path.display().to_string();
    let problem = if image.key == "ramdisk" {
        Problem::RamdiskNotFound { name, looked }
    } else {
        Problem::KernelNotFound { name, looked }
    };
    Err(ManifestError::new(
        &image.file,
        Some(image.line),
        Some(image.key),
        problem,
    ))
}

/// Checks that `image` is a PVH image and returns its 32-bit physical entry point.
///
/// # Errors
///
/// What keeps it from being one: see [`ImageDefect`].
pub fn pvh_entry_point(image: &[u8]) -> Result<u64, ImageDefect> {
    let not_elf = |error: elf::ParseError| ImageDefect::NotElf {
        reason: error.to_string(),
    };
    let elf = ElfBytes::<AnyEndian>::minimal_parse(image).map_err(not_elf)?;
    let header = &elf.ehdr;
    if header.class != Class::ELF64 {
        return Err(ImageDefect::NotElf64);
    }
    let little_endian = header.endianness == AnyEndian::Little;
    if header.e_machine != EM_X86_64 || !little_endian {
        return Err(ImageDefect::NotX86_64 {
            machine: header.e_machine,
            little_endian,
        });
    }
    if header.e_type != ET_EXEC {
        return Err(ImageDefect::NotExecutable {
            e_type: header.e_type,
        });
    }
    let segments = elf.segments().ok_or(ImageDefect::NoPhys32Entry)?;
    for segment in segments.iter().filter(|segment| segment.p_type == PT_NOTE) {
        let data = elf.segment_data(&segment).map_err(not_elf)?;
        // Notes are padded to 4 bytes in practice, even in ELF64; 8 only when asked for.
        let align = if segment.p_align == 8 { 8 } else { 4 };
        for note in NoteIterator::new(AnyEndian::Little, Class::ELF64, align, data) {
            let Note::Unknown(note) = note else { continue };
            if note.name.as_bytes() != XEN_ELFNOTE_OWNER
                || note.n_type != u64::from(XEN_ELFNOTE_PHYS32_ENTRY)
            {
                continue;
            }
            return match *note.desc {
                [a, b, c, d] => Ok(u64::from(u32::from_le_bytes([a, b, c, d]))),
                [a, b, c, d, e, f, g, h] => Ok(u64::from_le_bytes([a, b, c, d, e, f, g, h])),
                _ => Err(ImageDefect::BadPhys32Entry {
                    length: note.desc.len(),
                }),
            };
        }
    }
    Err(ImageDefect::NoPhys32Entry)
}

/// Checks that the ramdisk at `path` (found for `image`) can be read.
pub(crate) fn check_ramdisk(image: &ImageRef, path: &Path) -> Result<(), ManifestError> {
    std::fs::File::open(path).map(drop).map_err(|error| {
        let problem = Problem::Read {
            path: path.to_owned(),
            error,
        };
        ManifestError::new(&image.file, Some(image.line), Some(image.key), problem)
    })
}

/// Reads the kernel at `path` (found for `config`) and checks that it is a PVH image.
pub(crate) fn check_kernel(config: &DomainConfig, path: &Path) -> Result<(), ManifestError> {
    let error = |problem| {
        ManifestError::new(
            &config.file,
            Some(config.kernel_line),
            Some("kernel"),
            problem,
        )
    };
    let image = std::fs::read(path).map_err(|error_| {
        error(Problem::Read {
            path: path.to_owned(),
            error: error_,
        })
    })?;
    pvh_entry_point(&image).map(drop).map_err(|defect| {
        error(Problem::NotPvhImage {
            path: path.to_owned(),
            defect,
        })
    })
}

/// Finds a domain's kernel and ramdisk (as [`crate::compile_system`] does for the domains of
/// a system): for `xl create`, which sends them to the control domain. The kernel is not
/// read here (`xl` also takes a bzImage); [`pvh_entry_point`] checks an ELF one.
///
/// # Errors
///
/// An image not found, with the domain file, line and key.
pub fn domain_images(
    config: &DomainConfig,
    image_dirs: &[PathBuf],
) -> Result<(PathBuf, Option<PathBuf>), ManifestError> {
    let mut kernel = None;
    let mut ramdisk = None;
    for image in config.images() {
        let path = resolve_image(&image, image_dirs)?;
        if image.key == "kernel" {
            kernel = Some(path);
        } else {
            ramdisk = Some(path);
        }
    }
    // `images()` always lists the kernel.
    Ok((kernel.unwrap_or_default(), ramdisk))
}
