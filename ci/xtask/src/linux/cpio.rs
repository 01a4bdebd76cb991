//! A writer of cpio archives in the "new ASCII" (`newc`) format, the one the kernel unpacks
//! an initramfs from.
//!
//! Each entry is a 110-byte header (the magic `070701` and thirteen fields of eight hex
//! digits: inode, mode, uid, gid, link count, mtime, file size, device major and minor, the
//! special file's major and minor, name size with its NUL, checksum), the name and its NUL
//! padded to a multiple of 4 bytes counted from the start of the header, then the data padded
//! to a multiple of 4. The archive ends with an entry named `TRAILER!!!`.
//!
//! Everything is owned by root with mtime 0, so the same inputs give the same bytes.

use anyhow::{bail, Result};

/// The magic of a `newc` header (no checksum).
pub const MAGIC: &[u8; 6] = b"070701";
/// The name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";
/// The size of a header, before the name.
pub const HEADER_LEN: usize = 110;

pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_IFCHR: u32 = 0o020_000;

/// An archive being written, in memory.
#[derive(Debug, Default)]
pub struct Archive {
    data: Vec<u8>,
    last_inode: u32,
}

/// The fields of one header that differ between entries.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    body: &'a [u8],
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory with permissions `perms` (such as `0o755`).
    pub fn directory(&mut self, name: &str, perms: u32) -> Result<()> {
        self.entry(Header {
            name,
            mode: S_IFDIR | perms,
            nlink: 2,
            rdev: (0, 0),
            body: &[],
        })
    }

    /// A regular file with permissions `perms` holding `data`.
    pub fn file(&mut self, name: &str, perms: u32, data: &[u8]) -> Result<()> {
        self.entry(Header {
            name,
            mode: S_IFREG | perms,
            nlink: 1,
            rdev: (0, 0),
            body: data,
        })
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<()> {
        let body = target.as_bytes();
        self.entry(Header {
            name,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            rdev: (0, 0),
            body,
        })
    }

    /// A character device node `major:minor` with permissions `perms`.
    pub fn char_device(&mut self, name: &str, perms: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(Header {
            name,
            mode: S_IFCHR | perms,
            nlink: 1,
            rdev: (major, minor),
            body: &[],
        })
    }

    /// Ends the archive with its trailer and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.write_header(
            0,
            &Header {
                name: TRAILER,
                mode: 0,
                nlink: 1,
                rdev: (0, 0),
                body: &[],
            },
        );
        self.data
    }

    fn entry(&mut self, header: Header<'_>) -> Result<()> {
        let name = header.name.trim_start_matches('/');
        if name.is_empty() || name.contains('\0') || name == TRAILER {
            bail!(
                "cpio entry name {:?} is empty, holds a NUL or is the trailer's",
                header.name
            );
        }
        if u32::try_from(header.body.len()).is_err() {
            bail!(
                "cpio entry {name} is {} bytes, more than newc can record",
                header.body.len()
            );
        }
        self.last_inode += 1;
        let inode = self.last_inode;
        self.write_header(inode, &Header { name, ..header });
        Ok(())
    }

    fn write_header(&mut self, inode: u32, header: &Header<'_>) {
        let name_size = header.name.len() + 1;
        let fields = [
            inode,
            header.mode,
            0, // uid
            0, // gid
            header.nlink,
            0, // mtime
            // Both lengths were checked by `entry` (the trailer's are constant).
            u32::try_from(header.body.len()).unwrap_or(u32::MAX),
            0, // devmajor
            0, // devminor
            header.rdev.0,
            header.rdev.1,
            u32::try_from(name_size).unwrap_or(u32::MAX),
            0, // check
        ];
        let start = self.data.len();
        self.data.extend_from_slice(MAGIC);
        for field in fields {
            self.data
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        debug_assert_eq!(self.data.len() - start, HEADER_LEN);
        self.data.extend_from_slice(header.name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(header.body);
        self.pad();
    }

    fn pad(&mut self) {
        let padded = self.data.len().next_multiple_of(4);
        self.data.resize(padded, 0);
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// One entry read back from an archive.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Entry {
        pub name: String,
        pub inode: u32,
        pub mode: u32,
        pub nlink: u32,
        pub rdev: (u32, u32),
        pub data: Vec<u8>,
    }

    /// Reads a `newc` archive, checking the magic, the alignment and that the trailer ends it.
    pub fn parse(archive: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(at % 4, 0, "entry at {at} is not 4-byte aligned");
            let header = &archive[at..at + HEADER_LEN];
            assert_eq!(&header[..6], MAGIC, "magic at {at}");
            let field = |index: usize| {
                let text = std::str::from_utf8(&header[6 + 8 * index..14 + 8 * index]).unwrap();
                assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
                u32::from_str_radix(text, 16).unwrap()
            };
            let (size, name_size) = (field(6) as usize, field(11) as usize);
            assert_eq!((field(2), field(3), field(5), field(12)), (0, 0, 0, 0));
            let name_start = at + HEADER_LEN;
            let name = &archive[name_start..name_start + name_size];
            assert_eq!(name.last(), Some(&0), "name is NUL-terminated");
            let name = String::from_utf8(name[..name_size - 1].to_vec()).unwrap();
            let data_start = (name_start + name_size).next_multiple_of(4);
            assert!(archive[name_start + name_size..data_start]
                .iter()
                .all(|&b| b == 0));
            let data = archive[data_start..data_start + size].to_vec();
            at = (data_start + size).next_multiple_of(4);
            assert!(archive[data_start + size..at].iter().all(|&b| b == 0));
            if name == TRAILER {
                assert_eq!(at, archive.len(), "nothing follows the trailer");
                return entries;
            }
            entries.push(Entry {
                name,
                inode: field(0),
                mode: field(1),
                nlink: field(4),
                rdev: (field(9), field(10)),
                data,
            });
        }
    }

    #[test]
    fn an_archive_reads_back_entry_by_entry() {
        let mut archive = Archive::new();
        archive.directory("/bin", 0o755).unwrap();
        archive
            .file("bin/busybox", 0o755, b"\x7fELF and the rest")
            .unwrap();
        archive.symlink("bin/sh", "busybox").unwrap();
        archive.char_device("dev/console", 0o600, 5, 1).unwrap();
        // Names and data of every length modulo 4, to exercise the padding.
        for length in 0..8 {
            archive
                .file(&"n".repeat(length + 1), 0o644, &vec![0xa5; length])
                .unwrap();
        }
        let bytes = archive.finish();
        assert_eq!(bytes.len() % 4, 0);
        let entries = parse(&bytes);
        assert_eq!(entries.len(), 12);
        assert_eq!(
            entries[0],
            Entry {
                name: "bin".into(),
                inode: 1,
                mode: 0o040_755,
                nlink: 2,
                rdev: (0, 0),
                data: vec![]
            }
        );
        assert_eq!(entries[1].name, "bin/busybox");
        assert_eq!(entries[1].mode, S_IFREG | 0o755);
        assert_eq!(entries[1].data, b"\x7fELF and the rest");
        assert_eq!(entries[2].mode, S_IFLNK | 0o777);
        assert_eq!(entries[2].data, b"busybox");
        assert_eq!(
            (entries[3].mode, entries[3].rdev),
            (S_IFCHR | 0o600, (5, 1))
        );
        for (length, entry) in entries[4..].iter().enumerate() {
            assert_eq!(entry.name.len(), length + 1);
            assert_eq!(entry.data, vec![0xa5; length]);
        }
        let inodes: Vec<u32> = entries.iter().map(|entry| entry.inode).collect();
        assert_eq!(inodes, (1..=12).collect::<Vec<_>>());
    }

    #[test]
    fn the_header_is_the_documented_layout() {
        let mut archive = Archive::new();
        archive.file("ab", 0o644, b"xyz").unwrap();
        let bytes = archive.finish();
        let header = std::str::from_utf8(&bytes[..HEADER_LEN]).unwrap();
        assert_eq!(
            header,
            "070701\
             00000001000081a4000000000000000000000001000000000000000300000000\
             00000000000000000000000000000003\
             00000000"
        );
        // Header and "ab\0" are 113 bytes, padded to 116; the data to 120.
        assert_eq!(&bytes[110..120], b"ab\0\0\0\0xyz\0");
        assert!(bytes[120..].starts_with(b"070701"));
        assert!(bytes.ends_with(b"TRAILER!!!\0\0\0\0"));
    }

    #[test]
    fn an_empty_archive_is_a_trailer() {
        let bytes = Archive::new().finish();
        assert!(parse(&bytes).is_empty());
        assert_eq!(bytes.len(), 124);
    }

    #[test]
    fn bad_names_are_refused() {
        let mut archive = Archive::new();
        for name in ["", "/", "a\0b", TRAILER] {
            let error = archive.file(name, 0o644, b"").unwrap_err().to_string();
            assert!(error.contains("cpio entry name"), "{error}");
        }
    }
}
