//! The server end of a domain's xenstore ring page (`struct xenstore_domain_interface`,
//! `io/xs_wire.h`; offsets in `microvisor_abi::rings::xenstore`):
//!
//! | offset | size | field | written by |
//! |---|---|---|---|
//! | 0 | 1024 | `req[]`: requests, domain → server | domain |
//! | 1024 | 1024 | `rsp[]`: replies and watch events, server → domain | server |
//! | 2048 | 4 | `req_cons` | server |
//! | 2052 | 4 | `req_prod` | domain |
//! | 2056 | 4 | `rsp_cons` | domain |
//! | 2060 | 4 | `rsp_prod` | server |
//!
//! The server consumes `req[]` and produces `rsp[]` ([`crate::stream_ring`] does the index
//! arithmetic and the checks). A peer index more than 1024 bytes from ours is a protocol
//! error ([`StreamError`]): the server disconnects the domain. The feature, connection and
//! error words are left as the builder made them (zero: connected, no features), which is
//! what Linux's xenbus expects.

use microvisor_abi::rings::xenstore::{
    REQ, REQ_CONS, REQ_PROD, RING_SIZE, RSP, RSP_CONS, RSP_PROD,
};
use xen_ring::SharedPage;

use crate::stream_ring::{StreamConsumer, StreamError, StreamLayout, StreamProducer};

/// `req[]`, consumed by the server.
pub const REQUESTS: StreamLayout = StreamLayout {
    data_offset: REQ,
    size_bytes: RING_SIZE,
    cons_offset: REQ_CONS,
    prod_offset: REQ_PROD,
};

/// `rsp[]`, produced by the server.
pub const RESPONSES: StreamLayout = StreamLayout {
    data_offset: RSP,
    size_bytes: RING_SIZE,
    cons_offset: RSP_CONS,
    prod_offset: RSP_PROD,
};

/// The server's two ends of one domain's xenstore ring.
#[derive(Debug)]
pub struct ServerRing {
    /// Reads `req[]`.
    pub requests: StreamConsumer,
    /// Writes `rsp[]`.
    pub responses: StreamProducer,
}

impl ServerRing {
    /// Takes over the server ends of the ring in `page`, continuing from the indices it
    /// holds; fails if they are already inconsistent.
    pub fn attach(page: &impl SharedPage) -> Result<Self, StreamError> {
        Ok(Self {
            requests: StreamConsumer::attach(page, REQUESTS)?,
            responses: StreamProducer::attach(page, RESPONSES)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_ring::LocalPage;

    #[test]
    fn layouts_match_the_abi_and_fit_a_page() {
        assert!(REQUESTS.fits(4096) && RESPONSES.fits(4096));
        assert_eq!((REQUESTS.data_offset, RESPONSES.data_offset), (0, 1024));
        assert_eq!((REQUESTS.cons_offset, REQUESTS.prod_offset), (2048, 2052));
        assert_eq!((RESPONSES.cons_offset, RESPONSES.prod_offset), (2056, 2060));
    }

    #[test]
    fn requests_in_replies_out() {
        let page = LocalPage::new();
        let mut ring = ServerRing::attach(&page).unwrap();
        // The domain writes a request the way a client does.
        page.write_bytes(REQ, b"request");
        page.store_u32(REQ_PROD, 7);
        let mut buffer = [0u8; 1024];
        assert_eq!(ring.requests.read(&page, &mut buffer).unwrap(), 7);
        assert_eq!(&buffer[..7], b"request");
        assert_eq!(page.load_u32(REQ_CONS), 7);
        assert_eq!(ring.responses.write(&page, b"reply").unwrap(), 5);
        let mut reply = [0u8; 5];
        page.read_bytes(RSP, &mut reply);
        assert_eq!(&reply, b"reply");
        assert_eq!(page.load_u32(RSP_PROD), 5);
    }

    #[test]
    fn a_bad_request_index_is_reported() {
        let page = LocalPage::new();
        let mut ring = ServerRing::attach(&page).unwrap();
        page.store_u32(REQ_PROD, 1025);
        let mut buffer = [0u8; 16];
        assert!(matches!(
            ring.requests.read(&page, &mut buffer),
            Err(StreamError::IndicesOutOfRange {
                prod: 1025,
                cons: 0,
                size_bytes: 1024
            })
        ));
        page.store_u32(REQ_PROD, 0);
        page.store_u32(RSP_PROD, 2000);
        assert!(ServerRing::attach(&page).is_err());
    }
}
