//! Reassembles whole messages from a byte stream (a xenstore ring or a unix socket).
//!
//! The framer copies the bytes it is fed into its own buffer, so a transport reading from
//! memory another domain can write hands over each byte once and never looks at the
//! shared copy again. It takes at most the bytes that finish the current message, so a
//! transport that wants back-pressure can stop feeding after any message. A header whose
//! `len` exceeds [`PAYLOAD_MAX`] is a protocol error: the transport disconnects the client
//! (there is no way to resynchronise a byte stream after a bad length).

use alloc::vec::Vec;

use crate::wire::{Header, ProtocolError, HEADER_BYTES, PAYLOAD_MAX};

/// Accumulates stream bytes into messages.
#[derive(Debug, Default)]
pub struct Framer {
    /// Bytes of the message being assembled (header first).
    partial: Vec<u8>,
    /// The payload length from the header, once the header is complete and valid.
    payload_len: Option<usize>,
    /// Set after a protocol error: the stream is unusable from then on.
    failed: Option<ProtocolError>,
}

/// What one [`Framer::feed`] call did.
#[derive(Debug, PartialEq, Eq)]
pub struct Fed {
    /// How many bytes of the input were taken.
    pub consumed: usize,
    /// A complete message (header and payload), if the input finished one.
    pub message: Option<Vec<u8>>,
}

impl Framer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many more bytes finish the current header or message.
    pub fn bytes_needed(&self) -> usize {
        match self.payload_len {
            None => HEADER_BYTES - self.partial.len(),
            Some(len) => HEADER_BYTES + len - self.partial.len(),
        }
    }

    /// Whether part of a message has been received but not yet completed.
    pub fn is_mid_message(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Takes bytes from `input`, up to the end of the current message. Call again with the
    /// rest of the input until it is used up.
    pub fn feed(&mut self, input: &[u8]) -> Result<Fed, ProtocolError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let mut consumed = 0;
        if self.payload_len.is_none() {
            let take = self.bytes_needed().min(input.len());
            self.partial.extend_from_slice(&input[..take]);
            consumed += take;
            if self.partial.len() < HEADER_BYTES {
                return Ok(Fed {
                    consumed,
                    message: None,
                });
            }
            let header = Header::decode(&self.partial)?;
            if header.len as usize > PAYLOAD_MAX {
                let error = ProtocolError::Oversize { len: header.len };
                self.failed = Some(error);
                return Err(error);
            }
            self.payload_len = Some(header.len as usize);
        }
        let take = self.bytes_needed().min(input.len() - consumed);
        self.partial
            .extend_from_slice(&input[consumed..consumed + take]);
        consumed += take;
        if self.bytes_needed() > 0 {
            return Ok(Fed {
                consumed,
                message: None,
            });
        }
        self.payload_len = None;
        let message = core::mem::take(&mut self.partial);
        Ok(Fed {
            consumed,
            message: Some(message),
        })
    }

    /// Feeds all of `input`, calling `on_message` for each completed message. Stops at the
    /// first protocol error.
    pub fn feed_all(
        &mut self,
        mut input: &[u8],
        mut on_message: impl FnMut(Vec<u8>),
    ) -> Result<(), ProtocolError> {
        while !input.is_empty() {
            let fed = self.feed(input)?;
            input = &input[fed.consumed..];
            if let Some(message) = fed.message {
                on_message(message);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode_request, MessageType};

    #[test]
    fn messages_split_across_and_within_chunks() {
        let first = encode_request(MessageType::Read, 1, 0, &[b"/a/b"]);
        let second = encode_request(MessageType::Directory, 2, 0, &[b"/"]);
        let mut stream = first.clone();
        stream.extend_from_slice(&second);
        for chunk in 1..stream.len() {
            let mut framer = Framer::new();
            let mut seen = Vec::new();
            for piece in stream.chunks(chunk) {
                framer
                    .feed_all(piece, |message| seen.push(message))
                    .unwrap();
            }
            assert_eq!(seen, [first.clone(), second.clone()], "chunk size {chunk}");
            assert!(!framer.is_mid_message());
        }
    }

    #[test]
    fn stops_at_the_end_of_a_message() {
        let first = encode_request(MessageType::Read, 1, 0, &[b"/a"]);
        let mut stream = first.clone();
        stream.extend_from_slice(&[9, 9, 9]);
        let mut framer = Framer::new();
        let fed = framer.feed(&stream).unwrap();
        assert_eq!(fed.consumed, first.len());
        assert_eq!(fed.message, Some(first));
    }

    #[test]
    fn empty_payload_completes_with_the_header() {
        let message = crate::wire::encode_message(6, 3, 0, b"");
        let mut framer = Framer::new();
        assert_eq!(framer.feed(&message).unwrap().message, Some(message));
    }

    #[test]
    fn oversize_is_fatal() {
        let header = Header {
            kind: 2,
            req_id: 0,
            tx_id: 0,
            len: 4097,
        }
        .encode();
        let mut framer = Framer::new();
        assert_eq!(
            framer.feed(&header),
            Err(ProtocolError::Oversize { len: 4097 })
        );
        assert!(framer.feed(b"more").is_err());
        let max = Header {
            kind: 2,
            req_id: 0,
            tx_id: 0,
            len: 4096,
        }
        .encode();
        let mut framer = Framer::new();
        assert_eq!(framer.feed(&max).unwrap().message, None);
        assert_eq!(framer.bytes_needed(), 4096);
    }
}
