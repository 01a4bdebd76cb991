//! Helpers shared by the integration tests: tiny ELF images written byte by byte (no binary
//! is committed), and a scratch directory of configuration files.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

pub const EM_X86_64: u16 = 62;
pub const EM_386: u16 = 3;
pub const ET_EXEC: u16 = 2;
pub const ET_DYN: u16 = 3;
pub const PT_NOTE: u32 = 4;
pub const PT_LOAD: u32 = 1;

/// One ELF note: owner, type, descriptor.
pub struct Note {
    pub owner: &'static str,
    pub kind: u32,
    pub desc: Vec<u8>,
}

/// The PVH entry note, with a 4-byte entry point.
pub fn phys32_entry_note(entry: u32) -> Note {
    Note {
        owner: "Xen",
        kind: 18,
        desc: entry.to_le_bytes().to_vec(),
    }
}

/// An ELF64 little-endian file: the header, one program header of type `segment_type`
/// whose data is `notes`, and nothing else.
pub struct ElfImage {
    pub machine: u16,
    pub e_type: u16,
    pub segment_type: u32,
    pub notes: Vec<Note>,
}

impl ElfImage {
    /// A minimal PVH image entered at `entry`.
    pub fn pvh(entry: u32) -> Self {
        ElfImage {
            machine: EM_X86_64,
            e_type: ET_EXEC,
            segment_type: PT_NOTE,
            notes: vec![phys32_entry_note(entry)],
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        const EHDR_SIZE: u16 = 64;
        const PHDR_SIZE: u16 = 56;
        let mut notes = Vec::new();
        for note in &self.notes {
            let mut owner = note.owner.as_bytes().to_vec();
            owner.push(0);
            push32(&mut notes, owner.len() as u32);
            push32(&mut notes, note.desc.len() as u32);
            push32(&mut notes, note.kind);
            notes.extend_from_slice(&owner);
            pad4(&mut notes);
            notes.extend_from_slice(&note.desc);
            pad4(&mut notes);
        }
        let notes_offset = u64::from(EHDR_SIZE + PHDR_SIZE);

        let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        elf.resize(16, 0);
        push16(&mut elf, self.e_type);
        push16(&mut elf, self.machine);
        push32(&mut elf, 1); // e_version
        push64(&mut elf, 0x10_0000); // e_entry
        push64(&mut elf, u64::from(EHDR_SIZE)); // e_phoff
        push64(&mut elf, 0); // e_shoff: no sections
        push32(&mut elf, 0); // e_flags
        push16(&mut elf, EHDR_SIZE);
        push16(&mut elf, PHDR_SIZE);
        push16(&mut elf, 1); // e_phnum
        push16(&mut elf, 64); // e_shentsize
        push16(&mut elf, 0); // e_shnum
        push16(&mut elf, 0); // e_shstrndx
        assert_eq!(elf.len(), usize::from(EHDR_SIZE));

        push32(&mut elf, self.segment_type);
        push32(&mut elf, 4); // p_flags: R
        push64(&mut elf, notes_offset); // p_offset
        push64(&mut elf, 0); // p_vaddr
        push64(&mut elf, 0); // p_paddr
        push64(&mut elf, notes.len() as u64); // p_filesz
        push64(&mut elf, notes.len() as u64); // p_memsz
        push64(&mut elf, 4); // p_align
        assert_eq!(elf.len() as u64, notes_offset);

        elf.extend_from_slice(&notes);
        elf
    }
}

fn push16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn push32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn push64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

/// A scratch directory for configuration files and images, removed when dropped.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes `contents` to `relative` (creating directories) and returns the full path.
    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        fs::write(&path, contents).expect("write");
        path
    }
}

/// A valid domain file named `name` that boots `kernel`.
pub fn domain_cfg(name: &str, kernel: &str) -> String {
    format!("name = \"{name}\"\ntype = \"pvh\"\nkernel = \"{kernel}\"\nmemory = 16\n")
}

/// The compile error for `system`, as text.
pub fn compile_error(system: &Path, image_dirs: &[PathBuf]) -> String {
    match manifests::compile_system(system, image_dirs) {
        Ok(compiled) => panic!(
            "{} compiled, expected an error: {compiled:?}",
            system.display()
        ),
        Err(error) => error.to_string(),
    }
}
