//! The plan of a PVH domain's boot memory, the one piece of domain building that both
//! builders use: the microvisor's, for the boot manifest's domains, and the control
//! domain's, for the domains `xl create` makes. Given the ELF image, the RAM size, the vCPU
//! count, the command line and the initramfs size, it says where each piece goes and
//! prepares the two pages the builder writes as they are:
//!
//! | guest-physical | what |
//! |---|---|
//! | `p_paddr` of each PT_LOAD | the image's segments (the rest of each up to `p_memsz` is zero RAM) |
//! | the next 2 MiB boundary after the image, at least 16 MiB | the initramfs, module 0 |
//! | [`START_INFO_GPA`] | `hvm_start_info`, the memory map, the module list, the command line |
//! | [`ACPI_GPA`] | RSDP, XSDT, FADT, MADT, DSDT (one page, ACPI NVS in the memory map) |
//! | [`SPECIAL_PAGES_GPA`] | the xenstore and console rings (reserved in the memory map) |

use microvisor_abi::domctl::{
    ACPI_GPA, MIN_RAMDISK_GPA, RAMDISK_ALIGN, SPECIAL_PAGES_BYTES, SPECIAL_PAGES_GPA,
    START_INFO_GPA,
};

use crate::image::{parse_pvh_image, ImageError, PvhImage};
use crate::start_info::{write_start_info, BootLayout, MemoryRange, StartInfoError};

/// Where everything goes, and the two prepared pages.
pub struct PvhBoot {
    pub image: PvhImage,
    /// Guest-physical address of the initramfs, if there is one.
    pub ramdisk_gpa: Option<u64>,
    /// The page to place at [`ACPI_GPA`].
    pub acpi_page: [u8; 4096],
    /// The page to place at [`START_INFO_GPA`].
    pub start_info_page: [u8; 4096],
    /// `%ebx` at the entry: the address of `hvm_start_info`.
    pub start_info_gpa: u64,
}

/// Why a domain cannot be laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvhBootError {
    Image(ImageError),
    /// The initramfs does not fit the RAM above the image.
    RamdiskTooBig {
        bytes: u64,
        room: u64,
    },
    /// RAM reaches the ACPI page.
    TooMuchRam,
    /// The ACPI tables do not fit one page (too many vCPUs).
    Acpi,
    StartInfo(StartInfoError),
}

impl core::fmt::Display for PvhBootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Image(e) => write!(f, "bad image: {e:?}"),
            Self::RamdiskTooBig { bytes, room } => write!(
                f,
                "the ramdisk ({bytes} bytes) does not fit the {room} bytes of RAM above the kernel: give the domain more memory"
            ),
            Self::TooMuchRam => write!(
                f,
                "memory reaches the ACPI area at {ACPI_GPA:#x}: at most {} MiB",
                ACPI_GPA >> 20
            ),
            Self::Acpi => write!(f, "its ACPI tables do not fit one page (too many vCPUs)"),
            Self::StartInfo(e) => write!(f, "the start-info page: {e}"),
        }
    }
}

/// Lays out a PVH domain of `ram_bytes` of RAM and `vcpus` vCPUs booting `image_bytes`
/// (an ELF with a PVH entry note) with `cmdline` and an initramfs of `ramdisk_bytes`.
pub fn plan(
    image_bytes: &[u8],
    ram_bytes: u64,
    vcpus: u32,
    cmdline: &[u8],
    ramdisk_bytes: Option<u64>,
) -> Result<PvhBoot, PvhBootError> {
    if ram_bytes > ACPI_GPA {
        return Err(PvhBootError::TooMuchRam);
    }
    let image = parse_pvh_image(image_bytes, ram_bytes).map_err(PvhBootError::Image)?;
    let image_end = image
        .segments
        .iter()
        .map(|s| s.paddr + s.mem_bytes)
        .max()
        .unwrap_or(MIN_RAMDISK_GPA);
    let ramdisk = match ramdisk_bytes {
        None => None,
        Some(bytes) => {
            // Right above the image, 2 MiB aligned, as a boot loader would put it.
            let gpa = image_end
                .max(MIN_RAMDISK_GPA)
                .next_multiple_of(RAMDISK_ALIGN);
            if gpa.saturating_add(bytes) > ram_bytes {
                return Err(PvhBootError::RamdiskTooBig {
                    bytes,
                    room: ram_bytes.saturating_sub(gpa),
                });
            }
            Some((gpa, bytes))
        }
    };
    let mut acpi_page = [0u8; 4096];
    let rsdp_gpa = crate::guest_acpi::build_guest_acpi(&mut acpi_page, ACPI_GPA, vcpus)
        .map_err(|_| PvhBootError::Acpi)?;
    let extra_ranges = [
        MemoryRange {
            addr: ACPI_GPA,
            size: 4096,
            kind: microvisor_abi::pvh::MEMMAP_TYPE_ACPI_NVS,
        },
        MemoryRange {
            addr: SPECIAL_PAGES_GPA,
            size: SPECIAL_PAGES_BYTES,
            kind: microvisor_abi::pvh::MEMMAP_TYPE_RESERVED,
        },
    ];
    let layout = BootLayout {
        ram_bytes,
        cmdline,
        ramdisk,
        rsdp_gpa,
        extra_ranges: &extra_ranges,
    };
    let mut start_info_page = [0u8; 4096];
    let start_info_gpa = write_start_info(&mut start_info_page, START_INFO_GPA, &layout)
        .map_err(PvhBootError::StartInfo)?;
    Ok(PvhBoot {
        image,
        ramdisk_gpa: ramdisk.map(|(gpa, _)| gpa),
        acpi_page,
        start_info_page,
        start_info_gpa,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_image::TestImage;

    const RAM: u64 = 64 << 20;

    #[test]
    fn places_the_ramdisk_above_the_image_and_fills_both_pages() {
        let image = TestImage::pvh(0x100_0850).build();
        let boot = plan(&image, RAM, 2, b"console=hvc0", Some(3 << 20)).unwrap();
        assert_eq!(boot.image.entry, 0x100_0850);
        // The image is 16 MiB + 0x3000: the initramfs starts at the next 2 MiB boundary.
        assert_eq!(boot.ramdisk_gpa, Some(MIN_RAMDISK_GPA + RAMDISK_ALIGN));
        assert_eq!(&boot.acpi_page[..8], b"RSD PTR ");
        assert!(boot.start_info_gpa >= START_INFO_GPA);
        assert!(boot.start_info_gpa < START_INFO_GPA + 4096);
        let text = &boot.start_info_page[..];
        assert!(text.windows(12).any(|w| w == b"console=hvc0"));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let image = TestImage::pvh(0x100_0850).build();
        assert!(matches!(
            plan(&image, RAM, 1, b"", Some(RAM)),
            Err(PvhBootError::RamdiskTooBig { .. })
        ));
        assert_eq!(
            plan(&image, ACPI_GPA + 4096, 1, b"", None).err(),
            Some(PvhBootError::TooMuchRam)
        );
        assert!(matches!(
            plan(b"not an elf", RAM, 1, b"", None),
            Err(PvhBootError::Image(_))
        ));
        assert!(matches!(
            plan(&image, RAM, 1, b"a\0b", None),
            Err(PvhBootError::StartInfo(_))
        ));
    }
}
