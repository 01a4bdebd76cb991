//! Reading host-physical memory at boot (firmware tables, the Multiboot information), for
//! the parsers in [`crate::acpi`] and [`crate::multiboot`].
//!
//! The hardware crate implements [`PhysRead`] over its direct map; tests implement it over
//! byte vectors. Everything read through it is treated as untrusted input.

/// Read access to host-physical memory.
pub trait PhysRead {
    /// Reads `buf.len()` bytes at `pa`; false if any of them cannot be read.
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool;

    /// Reads a byte.
    fn read_u8(&self, pa: u64) -> Option<u8> {
        let mut b = [0u8; 1];
        self.read(pa, &mut b).then_some(b[0])
    }

    /// Reads a little-endian `u16`.
    fn read_u16(&self, pa: u64) -> Option<u16> {
        let mut b = [0u8; 2];
        self.read(pa, &mut b).then_some(u16::from_le_bytes(b))
    }

    /// Reads a little-endian `u32`.
    fn read_u32(&self, pa: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(pa, &mut b).then_some(u32::from_le_bytes(b))
    }

    /// Reads a little-endian `u64`.
    fn read_u64(&self, pa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(pa, &mut b).then_some(u64::from_le_bytes(b))
    }
}

/// Sparse fake physical memory for the tests: a few regions of bytes.
#[cfg(test)]
pub(crate) mod fake {
    use super::PhysRead;

    #[derive(Default)]
    pub struct FakePhys {
        pub regions: Vec<(u64, Vec<u8>)>,
    }

    impl FakePhys {
        /// Adds a zeroed region `[base, base + len)`.
        pub fn with_region(mut self, base: u64, len: usize) -> Self {
            self.regions.push((base, vec![0; len]));
            self
        }

        /// Writes `bytes` at `pa`, which must lie inside one region.
        pub fn put(&mut self, pa: u64, bytes: &[u8]) {
            for (base, data) in &mut self.regions {
                if pa >= *base && pa - *base + bytes.len() as u64 <= data.len() as u64 {
                    let at = (pa - *base) as usize;
                    data[at..at + bytes.len()].copy_from_slice(bytes);
                    return;
                }
            }
            panic!("fake memory has no region for {pa:#x}+{}", bytes.len());
        }
    }

    impl PhysRead for FakePhys {
        fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
            for (base, data) in &self.regions {
                let Some(offset) = pa.checked_sub(*base) else {
                    continue;
                };
                let Some(end) = offset.checked_add(buf.len() as u64) else {
                    continue;
                };
                if end <= data.len() as u64 {
                    buf.copy_from_slice(&data[offset as usize..end as usize]);
                    return true;
                }
            }
            false
        }
    }
}
