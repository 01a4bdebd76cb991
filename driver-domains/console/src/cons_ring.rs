//! The backend end of a domain's console ring page (`struct xencons_interface`,
//! `io/console.h`; offsets in `microvisor_abi::rings::console`):
//!
//! | offset | size | field | written by |
//! |---|---|---|---|
//! | 0 | 1024 | `in[]`: keyboard input, backend → domain | backend |
//! | 1024 | 2048 | `out[]`: console output, domain → backend | domain |
//! | 3072 | 4 | `in_cons` | domain |
//! | 3076 | 4 | `in_prod` | backend |
//! | 3080 | 4 | `out_cons` | backend |
//! | 3084 | 4 | `out_prod` | domain |
//!
//! The backend consumes `out[]` and produces `in[]` ([`crate::stream_ring`] does the index
//! arithmetic and the checks). A peer index more than a ring's size from ours is a
//! protocol error ([`StreamError`]): the backend disconnects the domain.

use microvisor_abi::rings::console::{
    IN, IN_CONS, IN_PROD, IN_SIZE, OUT, OUT_CONS, OUT_PROD, OUT_SIZE,
};
use xen_ring::SharedPage;

use crate::stream_ring::{StreamConsumer, StreamError, StreamLayout, StreamProducer};

/// `out[]`, consumed by the backend.
pub const OUTPUT: StreamLayout = StreamLayout {
    data_offset: OUT,
    size_bytes: OUT_SIZE,
    cons_offset: OUT_CONS,
    prod_offset: OUT_PROD,
};

/// `in[]`, produced by the backend.
pub const INPUT: StreamLayout = StreamLayout {
    data_offset: IN,
    size_bytes: IN_SIZE,
    cons_offset: IN_CONS,
    prod_offset: IN_PROD,
};

/// The backend's two ends of one domain's console ring.
#[derive(Debug)]
pub struct BackendRing {
    /// Reads `out[]`.
    pub output: StreamConsumer,
    /// Writes `in[]`.
    pub input: StreamProducer,
}

impl BackendRing {
    /// Takes over the backend ends of the ring in `page`, continuing from the indices it
    /// holds; fails if they are already inconsistent.
    pub fn attach(page: &impl SharedPage) -> Result<Self, StreamError> {
        Ok(Self {
            output: StreamConsumer::attach(page, OUTPUT)?,
            input: StreamProducer::attach(page, INPUT)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_ring::LocalPage;

    #[test]
    fn layouts_match_the_abi_and_fit_a_page() {
        assert!(OUTPUT.fits(4096) && INPUT.fits(4096));
        assert_eq!(
            (
                INPUT.data_offset,
                INPUT.size_bytes,
                INPUT.cons_offset,
                INPUT.prod_offset
            ),
            (0, 1024, 3072, 3076)
        );
        assert_eq!(
            (
                OUTPUT.data_offset,
                OUTPUT.size_bytes,
                OUTPUT.cons_offset,
                OUTPUT.prod_offset
            ),
            (1024, 2048, 3080, 3084)
        );
    }

    #[test]
    fn output_in_input_out() {
        let page = LocalPage::new();
        let mut ring = BackendRing::attach(&page).unwrap();
        // Two bytes across the end of out[], indices as a restarted backend finds them.
        page.write_bytes(OUT + 2047, b"a");
        page.write_bytes(OUT, b"b");
        page.store_u32(OUT_CONS, 2047);
        page.store_u32(OUT_PROD, 2049);
        ring = BackendRing {
            output: StreamConsumer::attach(&page, OUTPUT).unwrap(),
            ..ring
        };
        let mut out = [0u8; 8];
        assert_eq!(ring.output.read(&page, &mut out).unwrap(), 2);
        assert_eq!(&out[..2], b"ab");
        assert_eq!(ring.input.write(&page, b"key").unwrap(), 3);
        assert_eq!(page.load_u32(IN_PROD), 3);
    }

    #[test]
    fn a_bad_output_index_is_reported() {
        let page = LocalPage::new();
        let mut ring = BackendRing::attach(&page).unwrap();
        page.store_u32(OUT_PROD, 2049);
        let mut out = [0u8; 8];
        assert!(ring.output.read(&page, &mut out).is_err());
        page.store_u32(OUT_PROD, 0);
        page.store_u32(IN_CONS, 1);
        assert!(ring.input.write(&page, b"x").is_err());
    }
}
