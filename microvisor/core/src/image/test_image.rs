//! A builder of small ELF64 images for the tests.

/// One note record: owner, type, descriptor.
pub struct Note {
    pub owner: &'static [u8],
    pub note_type: u32,
    pub desc: Vec<u8>,
}

/// One PT_LOAD segment: load address, file bytes, memory size.
pub struct Load {
    pub paddr: u64,
    pub data: Vec<u8>,
    pub mem_bytes: u64,
}

/// A minimal ELF64 x86-64 EXEC image with PT_LOADs and one PT_NOTE.
pub struct TestImage {
    pub machine: u16,
    pub elf_type: u16,
    pub loads: Vec<Load>,
    pub notes: Vec<Note>,
}

const EHDR: usize = 64;
const PHDR: usize = 56;

impl TestImage {
    /// A valid PVH image: one 8 KiB code segment at 16 MiB, the entry 0x850 into it.
    pub fn pvh(entry: u32) -> Self {
        TestImage {
            machine: 62,
            elf_type: 2,
            loads: vec![Load {
                paddr: 0x100_0000,
                data: vec![0x90; 0x2000],
                mem_bytes: 0x3000,
            }],
            notes: vec![
                Note {
                    owner: b"Xen",
                    note_type: 6,
                    desc: b"linux\0".to_vec(),
                },
                Note {
                    owner: b"Xen",
                    note_type: 18,
                    desc: u64::from(entry).to_le_bytes().to_vec(),
                },
            ],
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let nr_phdrs = self.loads.len() + usize::from(!self.notes.is_empty());
        let mut note_bytes = Vec::new();
        for note in &self.notes {
            let name_len = note.owner.len() + 1;
            note_bytes.extend_from_slice(&(name_len as u32).to_le_bytes());
            note_bytes.extend_from_slice(&(note.desc.len() as u32).to_le_bytes());
            note_bytes.extend_from_slice(&note.note_type.to_le_bytes());
            note_bytes.extend_from_slice(note.owner);
            note_bytes.push(0);
            pad4(&mut note_bytes);
            note_bytes.extend_from_slice(&note.desc);
            pad4(&mut note_bytes);
        }

        let mut out = vec![0u8; EHDR + PHDR * nr_phdrs];
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little-endian
        out[6] = 1; // EV_CURRENT
        put16(&mut out, 16, self.elf_type);
        put16(&mut out, 18, self.machine);
        put32(&mut out, 20, 1);
        put64(&mut out, 24, 0xffff_ffff_8100_0000); // e_entry: a virtual address, unused
        put64(&mut out, 32, EHDR as u64); // e_phoff
        put16(&mut out, 52, EHDR as u16);
        put16(&mut out, 54, PHDR as u16);
        put16(&mut out, 56, nr_phdrs as u16);
        put16(&mut out, 58, 64);

        let mut phdr_at = EHDR;
        for load in &self.loads {
            align_to(&mut out, 16);
            let offset = out.len() as u64;
            out.extend_from_slice(&load.data);
            write_phdr(
                &mut out,
                phdr_at,
                1,
                offset,
                load.paddr,
                load.data.len() as u64,
                load.mem_bytes,
            );
            phdr_at += PHDR;
        }
        if !self.notes.is_empty() {
            align_to(&mut out, 4);
            let offset = out.len() as u64;
            out.extend_from_slice(&note_bytes);
            let len = note_bytes.len() as u64;
            write_phdr(&mut out, phdr_at, 4, offset, 0, len, 0);
        }
        out
    }
}

fn write_phdr(
    out: &mut [u8],
    at: usize,
    p_type: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
) {
    put32(out, at, p_type);
    put32(out, at + 4, 5);
    put64(out, at + 8, offset);
    put64(out, at + 16, paddr.wrapping_add(0xffff_ffff_8000_0000)); // p_vaddr: deliberately different
    put64(out, at + 24, paddr);
    put64(out, at + 32, filesz);
    put64(out, at + 40, memsz);
    put64(out, at + 48, 4);
}

fn pad4(bytes: &mut Vec<u8>) {
    align_to(bytes, 4);
}

fn align_to(bytes: &mut Vec<u8>, align: usize) {
    while !bytes.len().is_multiple_of(align) {
        bytes.push(0);
    }
}

pub fn put16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
