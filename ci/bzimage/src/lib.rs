//! Takes the kernel's ELF image (`vmlinux`) out of a bzImage (`/boot/vmlinuz-*`), so that it
//! can be booted as a PVH image.
//!
//! A bzImage is the real-mode setup code, then the protected-mode part. The setup header
//! says where the compressed kernel is: `setup_sects` (the byte at 0x1f1; 0 means 4) is the
//! number of 512-byte setup sectors after the boot sector, so the protected-mode part starts
//! at `(setup_sects + 1) * 512`; `payload_offset` (u32 at 0x248) and `payload_length` (u32 at
//! 0x24c, boot protocol 2.08 and later) place the payload within that part. The payload is the
//! stripped vmlinux ELF (followed by its relocations), compressed with the method the kernel
//! was configured with (`CONFIG_KERNEL_*`), which its first bytes tell.

use std::fmt;
use std::io::Read;

use anyhow::{bail, Context, Result};

/// Where the boot protocol's setup header is signed (`HdrS`).
const HEADER_MAGIC_AT: usize = 0x202;
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
const PROTOCOL_VERSION_AT: usize = 0x206;
/// The first boot protocol with `payload_offset` and `payload_length`.
const FIRST_PROTOCOL_WITH_PAYLOAD: u16 = 0x0208;
const SETUP_SECTS_AT: usize = 0x1f1;
const PAYLOAD_OFFSET_AT: usize = 0x248;
const PAYLOAD_LENGTH_AT: usize = 0x24c;
const SECTOR: usize = 512;

/// The magic of the LZ4 "legacy" frame the kernel is compressed into (`lz4 -l`).
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// The most one block of a legacy LZ4 frame decompresses to.
pub const LZ4_LEGACY_BLOCK_MAX: usize = 8 << 20;
/// No vmlinux is larger; more output means the payload is not what it seems.
pub const MAX_VMLINUX_BYTES: u64 = 1 << 30;

/// How a bzImage's payload is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Lzma,
    Zstd,
    Lz4,
}

impl fmt::Display for Compression {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        })
    }
}

/// The kernel's ELF image taken out of a bzImage.
#[derive(Debug)]
pub struct Vmlinux {
    pub elf: Vec<u8>,
    pub compression: Compression,
    /// The 32-bit PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`).
    pub pvh_entry: u64,
}

/// Whether `bytes` start like a bzImage (the boot protocol's `HdrS` signature in place).
pub fn is_bzimage(bytes: &[u8]) -> bool {
    bytes.get(HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4) == Some(&HEADER_MAGIC[..])
}

/// Decompresses the payload of `bzimage` and checks that it is a PVH ELF image.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vmlinux> {
    let payload = payload(bzimage)?;
    let compression = detect(payload)?;
    let elf = decompress(payload, compression)
        .with_context(|| format!("the {compression}-compressed payload does not decompress"))?;
    if !elf.starts_with(b"\x7fELF") {
        bail!(
            "the {compression}-compressed payload decompressed to {} bytes that are not an ELF \
             file (they start with {:02x?})",
            elf.len(),
            &elf[..elf.len().min(4)]
        );
    }
    let pvh_entry = manifests::pvh_entry_point(&elf).map_err(|defect| {
        anyhow::anyhow!(
            "the kernel's vmlinux is not a PVH image: {defect} (the kernel must be built with \
             CONFIG_XEN_PVH=y)"
        )
    })?;
    Ok(Vmlinux {
        elf,
        compression,
        pvh_entry,
    })
}

/// The compressed payload of a bzImage, found through its setup header.
pub fn payload(bzimage: &[u8]) -> Result<&[u8]> {
    let length = bzimage.len();
    if length < PAYLOAD_LENGTH_AT + 4 {
        bail!("the file is {length} bytes, too short to be a bzImage (its setup header ends at 0x250)");
    }
    if &bzimage[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4] != HEADER_MAGIC {
        let hint = if bzimage.starts_with(b"\x7fELF") {
            " (it is an ELF file: a vmlinux already?)"
        } else {
            ""
        };
        bail!("no bzImage setup header: the signature \"HdrS\" is not at 0x202{hint}");
    }
    let version = u16::from_le_bytes([
        bzimage[PROTOCOL_VERSION_AT],
        bzimage[PROTOCOL_VERSION_AT + 1],
    ]);
    if version < FIRST_PROTOCOL_WITH_PAYLOAD {
        bail!(
            "boot protocol {}.{:02} is older than 2.08, which has no payload_offset and \
             payload_length to find the compressed kernel by",
            version >> 8,
            version & 0xff
        );
    }
    let setup_sects = match bzimage[SETUP_SECTS_AT] {
        0 => 4,
        sectors => usize::from(sectors),
    };
    let protected_mode = (setup_sects + 1) * SECTOR;
    let offset = read_u32(bzimage, PAYLOAD_OFFSET_AT) as usize;
    let payload_length = read_u32(bzimage, PAYLOAD_LENGTH_AT) as usize;
    let start = protected_mode + offset;
    let end = start.checked_add(payload_length);
    match end {
        Some(end) if end <= length && payload_length > 0 => Ok(&bzimage[start..end]),
        _ => bail!(
            "the payload ({payload_length} bytes at {start:#x}: setup_sects {setup_sects}, \
             payload_offset {offset:#x}) is empty or runs past the end of the file \
             ({length} bytes): is the file cut short?"
        ),
    }
}

/// The compression of a payload, by its first bytes.
pub fn detect(payload: &[u8]) -> Result<Compression> {
    const KNOWN: &[(&[u8], Option<Compression>, &str)] = &[
        (&[0x1f, 0x8b], Some(Compression::Gzip), "gzip"),
        (
            &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
            Some(Compression::Xz),
            "xz",
        ),
        (&[0x28, 0xb5, 0x2f, 0xfd], Some(Compression::Zstd), "zstd"),
        (&[0x02, 0x21, 0x4c, 0x18], Some(Compression::Lz4), "lz4"),
        (&[0x5d, 0x00, 0x00], Some(Compression::Lzma), "lzma"),
        (b"BZh", None, "bzip2 (CONFIG_KERNEL_BZIP2)"),
        (&[0x89, b'L', b'Z', b'O'], None, "lzo (CONFIG_KERNEL_LZO)"),
    ];
    for &(magic, compression, name) in KNOWN {
        if payload.starts_with(magic) {
            return compression.with_context(|| {
                format!(
                    "the kernel is compressed with {name}, which this tool does not decompress \
                     (it reads gzip, xz, lzma, zstd and lz4)"
                )
            });
        }
    }
    bail!(
        "the payload starts with {:02x?}, the magic of no compression a kernel uses",
        &payload[..payload.len().min(6)]
    )
}

/// Decompresses a payload. The kernel's build appends the decompressed size (u32,
/// little-endian) after the compressed stream; each decoder stops at the end of its stream.
pub fn decompress(payload: &[u8], compression: Compression) -> Result<Vec<u8>> {
    let output = match compression {
        Compression::Gzip => read_all(flate2::read::GzDecoder::new(payload))?,
        Compression::Xz => read_all(lzma_rust2::XzReader::new(payload, false))?,
        Compression::Lzma => read_all(
            lzma_rust2::LzmaReader::new_mem_limit(payload, u32::MAX, None)
                .context("bad lzma header")?,
        )?,
        Compression::Zstd => read_all(
            ruzstd::decoding::StreamingDecoder::new(payload)
                .map_err(|error| anyhow::anyhow!("bad zstd frame header: {error}"))?,
        )?,
        Compression::Lz4 => lz4_legacy(payload)?,
    };
    if output.is_empty() {
        bail!("it decompressed to nothing");
    }
    Ok(output)
}

fn read_all(reader: impl Read) -> Result<Vec<u8>> {
    let mut output = Vec::new();
    reader
        .take(MAX_VMLINUX_BYTES + 1)
        .read_to_end(&mut output)?;
    if output.len() as u64 > MAX_VMLINUX_BYTES {
        bail!("it decompresses to more than {MAX_VMLINUX_BYTES} bytes");
    }
    Ok(output)
}

/// The LZ4 legacy frame: the magic, then blocks, each a u32 (little-endian) compressed
/// length and an LZ4 block that decompresses to at most 8 MiB. The frame has no end marker:
/// it ends where the data does, or at the decompressed size the kernel's build appends.
fn lz4_legacy(data: &[u8]) -> Result<Vec<u8>> {
    if read_u32(data, 0) != LZ4_LEGACY_MAGIC {
        bail!("not an LZ4 legacy frame");
    }
    let mut output: Vec<u8> = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK_MAX];
    let mut at = 4;
    while data.len() - at >= 4 {
        let length = read_u32(data, at) as usize;
        if length == LZ4_LEGACY_MAGIC as usize {
            // Frames may be concatenated.
            at += 4;
            continue;
        }
        let remaining = data.len() - at - 4;
        if !output.is_empty() && (length == output.len() || remaining < length) {
            // The appended size, or bytes that cannot be a block: the frame is over.
            break;
        }
        if length == 0 || remaining < length {
            bail!(
                "the LZ4 block at offset {at} claims {length} bytes, {remaining} are left: \
                 the payload is cut short or corrupt"
            );
        }
        let input = &data[at + 4..at + 4 + length];
        let size = lz4_flex::block::decompress_into(input, &mut block).map_err(|error| {
            anyhow::anyhow!("the LZ4 block at offset {at} ({length} bytes) is corrupt: {error}")
        })?;
        output.extend_from_slice(&block[..size]);
        if output.len() as u64 > MAX_VMLINUX_BYTES {
            bail!("it decompresses to more than {MAX_VMLINUX_BYTES} bytes");
        }
        at += 4 + length;
    }
    if output.is_empty() {
        bail!("the LZ4 frame holds no block");
    }
    Ok(output)
}

/// The little-endian u32 at `at`, or 0 past the end (callers check lengths first).
fn read_u32(data: &[u8], at: usize) -> u32 {
    data.get(at..at + 4).map_or(0, |bytes| {
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    })
}

#[cfg(test)]
pub mod tests {
    use std::io::Write;

    use super::*;

    /// A bzImage around `payload`: `setup_sects` setup sectors (0 stands for 4), the payload
    /// `offset` bytes into the protected-mode part, then `tail` more bytes.
    pub fn bzimage(setup_sects: u8, offset: u32, payload: &[u8], tail: usize) -> Vec<u8> {
        let sectors = if setup_sects == 0 {
            4
        } else {
            usize::from(setup_sects)
        };
        let start = (sectors + 1) * SECTOR + offset as usize;
        let mut image = vec![0u8; start];
        image[SETUP_SECTS_AT] = setup_sects;
        image[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(HEADER_MAGIC);
        image[PROTOCOL_VERSION_AT..PROTOCOL_VERSION_AT + 2]
            .copy_from_slice(&0x020fu16.to_le_bytes());
        image[PAYLOAD_OFFSET_AT..PAYLOAD_OFFSET_AT + 4].copy_from_slice(&offset.to_le_bytes());
        let length = u32::try_from(payload.len()).unwrap();
        image[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4].copy_from_slice(&length.to_le_bytes());
        image.extend_from_slice(payload);
        image.extend(std::iter::repeat_n(0xcc, tail));
        image
    }

    /// What the kernel's build appends to the compressed stream: the decompressed size.
    fn with_size(mut compressed: Vec<u8>, original: &[u8]) -> Vec<u8> {
        compressed.extend_from_slice(&u32::try_from(original.len()).unwrap().to_le_bytes());
        compressed
    }

    /// Test data that compresses a little but not to nothing.
    fn sample(length: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..length)
            .map(|index| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                if index % 3 == 0 {
                    (state & 0x0f) as u8
                } else {
                    (index / 64) as u8
                }
            })
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// xz as the kernel's build makes it: the x86 branch filter before LZMA2, CRC32 check.
    fn xz(data: &[u8]) -> Vec<u8> {
        let mut options = lzma_rust2::XzOptions::with_preset(6);
        options.set_check_sum_type(lzma_rust2::CheckType::Crc32);
        options.prepend_pre_filter(lzma_rust2::FilterType::BcjX86, 0);
        let mut writer = lzma_rust2::XzWriter::new(Vec::new(), options).unwrap();
        writer.write_all(data).unwrap();
        writer.finish().unwrap()
    }

    fn lzma(data: &[u8]) -> Vec<u8> {
        let options = lzma_rust2::LzmaOptions::with_preset(6);
        let mut writer =
            lzma_rust2::LzmaWriter::new_use_header(Vec::new(), &options, None).unwrap();
        writer.write_all(data).unwrap();
        writer.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    /// An LZ4 legacy frame as `lz4 -l` writes it: 8 MiB blocks.
    pub fn lz4(data: &[u8]) -> Vec<u8> {
        let mut frame = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(LZ4_LEGACY_BLOCK_MAX) {
            let block = lz4_flex::block::compress(chunk);
            frame.extend_from_slice(&u32::try_from(block.len()).unwrap().to_le_bytes());
            frame.extend_from_slice(&block);
        }
        frame
    }

    #[test]
    fn the_payload_is_found_through_the_setup_header() {
        for (setup_sects, offset) in [(0u8, 0u32), (4, 0x3b0), (27, 0x2c3), (63, 1)] {
            let image = bzimage(setup_sects, offset, b"PAYLOAD!", 100);
            assert_eq!(
                payload(&image).unwrap(),
                b"PAYLOAD!",
                "setup_sects {setup_sects}"
            );
        }
        // setup_sects 0 means 4: the payload is where 4 sectors would put it.
        assert_eq!(bzimage(0, 0, b"x", 0).len(), bzimage(4, 0, b"x", 0).len());
    }

    #[test]
    fn every_supported_compression_round_trips() {
        let original = sample(300_000);
        let cases: [(Compression, Vec<u8>); 5] = [
            (Compression::Gzip, gzip(&original)),
            (Compression::Xz, with_size(xz(&original), &original)),
            (Compression::Lzma, with_size(lzma(&original), &original)),
            (Compression::Zstd, with_size(zstd(&original), &original)),
            (Compression::Lz4, with_size(lz4(&original), &original)),
        ];
        for (compression, compressed) in cases {
            let image = bzimage(27, 0x3b0, &compressed, 4096);
            let found = payload(&image).unwrap();
            assert_eq!(detect(found).unwrap(), compression);
            let output = decompress(found, compression).unwrap();
            assert!(
                output == original,
                "{compression}: {} bytes out",
                output.len()
            );
        }
    }

    #[test]
    fn lz4_frames_of_several_blocks_end_at_the_appended_size() {
        let original = sample(LZ4_LEGACY_BLOCK_MAX * 2 + 12_345);
        let frame = lz4(&original);
        // Without the size, with it, and with the size and padding after it.
        let mut padded = with_size(frame.clone(), &original);
        padded.extend_from_slice(&[0; 8]);
        for data in [frame.clone(), with_size(frame.clone(), &original), padded] {
            assert!(decompress(&data, Compression::Lz4).unwrap() == original);
        }
        // Two frames one after the other are one stream.
        let mut twice = frame.clone();
        twice.extend_from_slice(&frame);
        assert_eq!(
            decompress(&twice, Compression::Lz4).unwrap().len(),
            original.len() * 2
        );
    }

    #[test]
    fn unsupported_and_unknown_compressions_are_named() {
        for (magic, needle) in [
            (&b"BZh91AY&SY"[..], "bzip2"),
            (&[0x89, b'L', b'Z', b'O', 0, 0x0d][..], "lzo"),
        ] {
            let error = detect(magic).unwrap_err().to_string();
            assert!(
                error.contains(needle) && error.contains("does not decompress"),
                "{error}"
            );
        }
        let error = detect(b"\x00\x01\x02\x03").unwrap_err().to_string();
        assert!(error.contains("[00, 01, 02, 03]"), "{error}");
        assert!(detect(b"").is_err());
    }

    #[test]
    fn cut_or_garbage_input_is_an_error_not_a_panic() {
        let original = sample(100_000);
        let compressed = [
            gzip(&original),
            xz(&original),
            lzma(&original),
            zstd(&original),
            lz4(&original),
        ];
        for data in &compressed {
            let compression = detect(data).unwrap();
            for cut in [data.len() / 2, 8, 4, 2] {
                let result = decompress(&data[..cut], compression);
                assert!(
                    result.is_err() || result.unwrap() != original,
                    "{compression} cut at {cut}"
                );
            }
            // The magic, then garbage.
            let mut garbage = data[..6].to_vec();
            garbage.extend(sample(5000).iter().map(|b| b ^ 0x5a));
            let _ = decompress(&garbage, compression);
        }
        // An LZ4 block whose length runs past the end, and one that is corrupt.
        let mut frame = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        frame.extend_from_slice(&1000u32.to_le_bytes());
        frame.extend_from_slice(&[0; 10]);
        let error = format!("{:#}", decompress(&frame, Compression::Lz4).unwrap_err());
        assert!(error.contains("cut short or corrupt"), "{error}");
        let mut frame = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        frame.extend_from_slice(&4u32.to_le_bytes());
        frame.extend_from_slice(&[0xff; 4]);
        let error = format!("{:#}", decompress(&frame, Compression::Lz4).unwrap_err());
        assert!(error.contains("is corrupt"), "{error}");

        // Setup headers that lie or are missing.
        let image = bzimage(27, 0, &lz4(&original), 0);
        for cut in [0, 0x100, 0x24f, image.len() - 1] {
            let error = format!("{:#}", extract_vmlinux(&image[..cut]).unwrap_err());
            assert!(
                error.contains("too short") || error.contains("cut short"),
                "{cut}: {error}"
            );
        }
        let mut not_signed = image.clone();
        not_signed[HEADER_MAGIC_AT] = b'X';
        assert!(payload(&not_signed)
            .unwrap_err()
            .to_string()
            .contains("HdrS"));
        let mut old = image.clone();
        old[PROTOCOL_VERSION_AT..PROTOCOL_VERSION_AT + 2].copy_from_slice(&0x0206u16.to_le_bytes());
        assert!(payload(&old)
            .unwrap_err()
            .to_string()
            .contains("2.06 is older than 2.08"));
        let mut huge = image.clone();
        huge[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[PAYLOAD_OFFSET_AT..PAYLOAD_OFFSET_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(payload(&huge)
            .unwrap_err()
            .to_string()
            .contains("runs past the end"));
    }

    /// A minimal ELF64 x86-64 executable whose one PT_NOTE segment holds `notes` (owner,
    /// type, descriptor).
    pub fn elf_with_notes(notes: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut data = Vec::new();
        for (owner, kind, desc) in notes {
            let owner = [owner.as_bytes(), &[0]].concat();
            for word in [owner.len() as u32, desc.len() as u32, *kind] {
                data.extend_from_slice(&word.to_le_bytes());
            }
            data.extend_from_slice(&owner);
            data.resize(data.len().next_multiple_of(4), 0);
            data.extend_from_slice(desc);
            data.resize(data.len().next_multiple_of(4), 0);
        }
        let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf.extend_from_slice(&1u32.to_le_bytes());
        for word in [0x100_0000u64, 64, 0] {
            elf.extend_from_slice(&word.to_le_bytes()); // entry, phoff, shoff
        }
        elf.extend_from_slice(&0u32.to_le_bytes()); // flags
        for half in [64u16, 56, 1, 64, 0, 0] {
            elf.extend_from_slice(&half.to_le_bytes());
        }
        elf.extend_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        elf.extend_from_slice(&4u32.to_le_bytes()); // PF_R
        for word in [120u64, 0, 0, data.len() as u64, data.len() as u64, 4] {
            elf.extend_from_slice(&word.to_le_bytes());
        }
        elf.extend_from_slice(&data);
        elf
    }

    #[test]
    fn a_pvh_vmlinux_comes_out_whole() {
        let mut elf = elf_with_notes(&[("Xen", 18, &0x0100_0abc_u32.to_le_bytes())]);
        // The relocations the kernel's build appends after the ELF file.
        elf.extend_from_slice(&[0x42; 64]);
        let image = bzimage(30, 0x40c, &with_size(lz4(&elf), &elf), 512);
        let vmlinux = extract_vmlinux(&image).unwrap();
        assert_eq!(vmlinux.elf, elf);
        assert_eq!(vmlinux.compression, Compression::Lz4);
        assert_eq!(vmlinux.pvh_entry, 0x0100_0abc);
    }

    #[test]
    fn a_kernel_without_pvh_or_not_elf_is_refused() {
        let elf = elf_with_notes(&[("Xen", 6, b"linux\0\0\0")]);
        let image = bzimage(30, 0, &gzip(&elf), 0);
        let error = extract_vmlinux(&image).unwrap_err().to_string();
        assert!(
            error.contains("not a PVH image: no XEN_ELFNOTE_PHYS32_ENTRY note")
                && error.contains("CONFIG_XEN_PVH"),
            "{error}"
        );
        let image = bzimage(30, 0, &zstd(b"MZ not an elf file"), 0);
        let error = extract_vmlinux(&image).unwrap_err().to_string();
        assert!(
            error.contains("zstd-compressed payload decompressed to 18 bytes that are not an ELF"),
            "{error}"
        );
    }
}
