//! The xenstore wire protocol, client side (`XEN-ABI.md` §3.2): message headers, request
//! payloads, reassembling messages from the response byte stream, telling replies from watch
//! events and stale replies, errno names, permission strings.
//!
//! Every message is a 16-byte header of four little-endian `u32`s (`type`, `req_id`, `tx_id`,
//! `len`) and `len` payload bytes (at most [`PAYLOAD_MAX`]). Strings in payloads are
//! NUL-terminated, except the value of a `WRITE` and the reply to a `READ`. A failed request
//! is answered with type [`kind::ERROR`] and an errno name (`"ENOENT\0"`); a watch firing
//! arrives as [`kind::WATCH_EVENT`] with `req_id = 0` and payload `path\0token\0`, between
//! replies at any time.
//!
//! Pure code: [`crate::xenstore`] moves the bytes through the shared ring.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Size of `struct xsd_sockmsg`.
pub const HEADER_BYTES: usize = 16;
/// Largest payload of one message (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;

/// Message types (`xsd_sockmsg_type`) a client sends or receives.
pub mod kind {
    pub const DIRECTORY: u32 = 1;
    pub const READ: u32 = 2;
    pub const GET_PERMS: u32 = 3;
    pub const WATCH: u32 = 4;
    pub const UNWATCH: u32 = 5;
    pub const TRANSACTION_START: u32 = 6;
    pub const TRANSACTION_END: u32 = 7;
    pub const GET_DOMAIN_PATH: u32 = 10;
    pub const WRITE: u32 = 11;
    pub const MKDIR: u32 = 12;
    pub const RM: u32 = 13;
    pub const SET_PERMS: u32 = 14;
    pub const WATCH_EVENT: u32 = 15;
    pub const ERROR: u32 = 16;
}

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub len: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        for (i, v) in [self.kind, self.req_id, self.tx_id, self.len]
            .into_iter()
            .enumerate()
        {
            out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Self {
        let word = |i: usize| {
            u32::from_le_bytes([
                bytes[4 * i],
                bytes[4 * i + 1],
                bytes[4 * i + 2],
                bytes[4 * i + 3],
            ])
        };
        Self {
            kind: word(0),
            req_id: word(1),
            tx_id: word(2),
            len: word(3),
        }
    }
}

/// Why a xenstore operation failed: the errno names the server sends (Xen's list), plus three
/// that the client itself reports: [`Error::Enodev`] (no xenstore: `HVM_PARAM_STORE_PFN` is
/// 0), [`Error::Etimedout`] (no reply in time) and [`Error::Eproto`] (the server broke the
/// ring or wire protocol; the connection is unusable from then on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    Einval,
    Eacces,
    Eexist,
    Eisdir,
    Enoent,
    Enomem,
    Enospc,
    Eio,
    Enotempty,
    Enosys,
    Erofs,
    Ebusy,
    Eagain,
    Eisconn,
    E2big,
    Eperm,
    Enodev,
    Etimedout,
    Eproto,
}

const NAMES: [(Error, &str); 19] = [
    (Error::Einval, "EINVAL"),
    (Error::Eacces, "EACCES"),
    (Error::Eexist, "EEXIST"),
    (Error::Eisdir, "EISDIR"),
    (Error::Enoent, "ENOENT"),
    (Error::Enomem, "ENOMEM"),
    (Error::Enospc, "ENOSPC"),
    (Error::Eio, "EIO"),
    (Error::Enotempty, "ENOTEMPTY"),
    (Error::Enosys, "ENOSYS"),
    (Error::Erofs, "EROFS"),
    (Error::Ebusy, "EBUSY"),
    (Error::Eagain, "EAGAIN"),
    (Error::Eisconn, "EISCONN"),
    (Error::E2big, "E2BIG"),
    (Error::Eperm, "EPERM"),
    (Error::Enodev, "ENODEV"),
    (Error::Etimedout, "ETIMEDOUT"),
    (Error::Eproto, "EPROTO"),
];

impl Error {
    /// The errno name, e.g. `"ENOSPC"`.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(e, _)| *e == self)
            .map_or("EINVAL", |(_, n)| n)
    }

    /// The error an `ERROR` reply names (its payload, with or without the NUL); a name this
    /// client does not know is `EINVAL`, as Linux does.
    pub fn from_name(payload: &[u8]) -> Self {
        let name = payload.split(|&b| b == 0).next().unwrap_or(&[]);
        NAMES
            .iter()
            .find(|(_, n)| n.as_bytes() == name)
            .map_or(Error::Einval, |(e, _)| *e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A whole request message: header and payload. `E2BIG` if the payload is too long.
pub fn request(kind: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Result<Vec<u8>, Error> {
    if payload.len() > PAYLOAD_MAX {
        return Err(Error::E2big);
    }
    let header = Header {
        kind,
        req_id,
        tx_id,
        len: payload.len() as u32,
    };
    let mut message = Vec::with_capacity(HEADER_BYTES + payload.len());
    message.extend_from_slice(&header.encode());
    message.extend_from_slice(payload);
    Ok(message)
}

/// A payload of NUL-terminated strings.
pub fn strings(parts: &[&[u8]]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for part in parts {
        payload.extend_from_slice(part);
        payload.push(0);
    }
    payload
}

/// The payload of a `WRITE`: `path\0` then the value, not NUL-terminated.
pub fn write_payload(path: &str, value: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(path.len() + 1 + value.len());
    payload.extend_from_slice(path.as_bytes());
    payload.push(0);
    payload.extend_from_slice(value);
    payload
}

/// Checks a path before it is sent: not empty, no NUL, at most [`ABS_PATH_MAX`] bytes, and
/// only the characters xenstore allows (letters, digits, `-/_@`).
pub fn check_path(path: &str) -> Result<(), Error> {
    let ok = !path.is_empty()
        && path.len() <= ABS_PATH_MAX
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(Error::Einval)
    }
}

/// The NUL-terminated strings of a payload (a last string without its NUL counts too).
pub fn split_strings(payload: &[u8]) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = payload.split(|&b| b == 0).collect();
    if payload.last().is_none_or(|&b| b == 0) {
        // The empty piece after the final NUL (or the whole of an empty payload).
        parts.pop();
    }
    parts
}

/// An unsigned decimal number, as in a transaction id reply or a `domid` node (surrounding
/// NULs and whitespace ignored, no sign, no leading `+`).
pub fn parse_decimal(bytes: &[u8]) -> Option<u32> {
    let text = core::str::from_utf8(bytes).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c.is_ascii_whitespace());
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Reassembles messages from the response byte stream.
#[derive(Default)]
pub struct Assembler {
    buffer: Vec<u8>,
}

impl Assembler {
    pub const fn new() -> Self {
        Self { buffer: Vec::new() }
    }

    /// Appends bytes read from the ring.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received that do not yet form a whole message.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole message, `Ok(None)` if more bytes are needed, or `EPROTO` if the
    /// header announces a payload larger than [`PAYLOAD_MAX`].
    pub fn next_message(&mut self) -> Result<Option<(Header, Vec<u8>)>, Error> {
        let Some(head) = self.buffer.first_chunk::<HEADER_BYTES>() else {
            return Ok(None);
        };
        let header = Header::decode(head);
        let len = header.len as usize;
        if len > PAYLOAD_MAX {
            return Err(Error::Eproto);
        }
        if self.buffer.len() < HEADER_BYTES + len {
            return Ok(None);
        }
        let payload = self.buffer[HEADER_BYTES..HEADER_BYTES + len].to_vec();
        self.buffer.drain(..HEADER_BYTES + len);
        Ok(Some((header, payload)))
    }
}

/// A watch firing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The node that changed (the watched path itself for the initial event).
    pub path: String,
    /// The token given when the watch was registered.
    pub token: String,
}

/// What a received message is to a client waiting for the reply to `expecting`.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// The reply to the request with id `expecting`.
    Reply(Header, Vec<u8>),
    /// A watch event (queue it).
    Watch(WatchEvent),
    /// A reply to some other request (one that timed out), or a malformed watch event:
    /// dropped.
    Stale(Header),
}

/// Sorts a received message.
pub fn classify(header: Header, payload: Vec<u8>, expecting: Option<u32>) -> Incoming {
    if header.kind == kind::WATCH_EVENT {
        let parts = split_strings(&payload);
        return match (parts.first(), parts.get(1)) {
            (Some(path), Some(token)) => Incoming::Watch(WatchEvent {
                path: String::from_utf8_lossy(path).into_owned(),
                token: String::from_utf8_lossy(token).into_owned(),
            }),
            _ => Incoming::Stale(header),
        };
    }
    if Some(header.req_id) == expecting {
        Incoming::Reply(header, payload)
    } else {
        Incoming::Stale(header)
    }
}

/// The payload of a reply to a request of type `request_kind`: an `ERROR` reply is its
/// error, a reply of another type than the request's is `EPROTO`.
pub fn reply_payload(
    request_kind: u32,
    header: &Header,
    payload: Vec<u8>,
) -> Result<Vec<u8>, Error> {
    if header.kind == kind::ERROR {
        return Err(Error::from_name(&payload));
    }
    if header.kind != request_kind {
        return Err(Error::Eproto);
    }
    Ok(payload)
}

/// Checks an `"OK"` reply (NUL optional).
pub fn expect_ok(payload: &[u8]) -> Result<(), Error> {
    if payload == b"OK\0" || payload == b"OK" {
        Ok(())
    } else {
        Err(Error::Eproto)
    }
}

/// Access a permission entry gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    None,
    Read,
    Write,
    Both,
}

/// One entry of a node's permission list: `<letter><domid>`. The first entry of a list names
/// the owner, and its access is what every domain not listed gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub access: Access,
    pub domid: u16,
}

impl Perm {
    pub const fn new(access: Access, domid: u16) -> Self {
        Self { access, domid }
    }

    /// Parses `n5`, `r0`, `w12`, `b3`.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let (&letter, digits) = bytes.split_first()?;
        let access = match letter {
            b'n' => Access::None,
            b'r' => Access::Read,
            b'w' => Access::Write,
            b'b' => Access::Both,
            _ => return None,
        };
        let domid = u16::try_from(parse_decimal(digits)?).ok()?;
        Some(Self { access, domid })
    }

    /// The wire form, e.g. `"r5"`.
    pub fn encode(&self) -> String {
        let letter = match self.access {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        };
        alloc::format!("{letter}{}", self.domid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_little_endian() {
        let header = Header {
            kind: kind::WRITE,
            req_id: 0x0102_0304,
            tx_id: 7,
            len: 300,
        };
        let bytes = header.encode();
        assert_eq!(&bytes[0..4], &[11, 0, 0, 0]);
        assert_eq!(&bytes[4..8], &[4, 3, 2, 1]);
        assert_eq!(&bytes[12..16], &[44, 1, 0, 0]);
        assert_eq!(Header::decode(&bytes), header);
    }

    #[test]
    fn builds_requests() {
        let message = request(kind::READ, 5, 0, &strings(&[b"/local/domain/1/name"])).unwrap();
        assert_eq!(message.len(), 16 + 21);
        assert_eq!(Header::decode(message[..16].try_into().unwrap()).len, 21);
        assert_eq!(&message[16..], b"/local/domain/1/name\0");
        assert_eq!(write_payload("a/b", b"xyz"), b"a/b\0xyz");
        assert_eq!(strings(&[b"p", b"tok"]), b"p\0tok\0");
        assert_eq!(
            request(kind::WRITE, 1, 0, &[0; PAYLOAD_MAX]).unwrap().len(),
            16 + 4096
        );
        assert_eq!(
            request(kind::WRITE, 1, 0, &[0; PAYLOAD_MAX + 1]),
            Err(Error::E2big)
        );
    }

    #[test]
    fn checks_paths() {
        assert_eq!(check_path("/local/domain/3/device/ring/0/state"), Ok(()));
        assert_eq!(check_path("data/k1"), Ok(()));
        assert_eq!(check_path("@introduceDomain"), Ok(()));
        assert_eq!(check_path(""), Err(Error::Einval));
        assert_eq!(check_path("a b"), Err(Error::Einval));
        assert_eq!(check_path("a\0b"), Err(Error::Einval));
        assert_eq!(
            check_path(&"a".repeat(ABS_PATH_MAX + 1)),
            Err(Error::Einval)
        );
    }

    #[test]
    fn reassembles_messages_split_anywhere() {
        let mut stream = request(kind::READ, 1, 0, b"value").unwrap();
        stream.extend(request(kind::WATCH_EVENT, 0, 0, b"p\0t\0").unwrap());
        stream.extend(request(kind::WRITE, 2, 0, b"OK\0").unwrap());
        for split in 0..stream.len() {
            let mut assembler = Assembler::new();
            let mut got = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                assembler.push(chunk);
                while let Some(message) = assembler.next_message().unwrap() {
                    got.push(message);
                }
            }
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[0].1, b"value");
            assert_eq!(got[1].0.kind, kind::WATCH_EVENT);
            assert_eq!(got[2].0.req_id, 2);
            assert_eq!(assembler.buffered(), 0);
        }
    }

    #[test]
    fn rejects_oversized_payloads() {
        let mut assembler = Assembler::new();
        let header = Header {
            kind: kind::READ,
            req_id: 1,
            tx_id: 0,
            len: PAYLOAD_MAX as u32 + 1,
        };
        assembler.push(&header.encode());
        assert_eq!(assembler.next_message(), Err(Error::Eproto));
        let mut assembler = Assembler::new();
        assembler.push(&header.encode()[..15]);
        assert_eq!(assembler.next_message(), Ok(None));
    }

    fn header(kind: u32, req_id: u32) -> Header {
        Header {
            kind,
            req_id,
            tx_id: 0,
            len: 0,
        }
    }

    #[test]
    fn matches_replies_by_request_id() {
        let reply = classify(header(kind::READ, 9), b"v".to_vec(), Some(9));
        assert_eq!(reply, Incoming::Reply(header(kind::READ, 9), b"v".to_vec()));
        // A late reply to an earlier request is dropped.
        assert_eq!(
            classify(header(kind::READ, 8), b"v".to_vec(), Some(9)),
            Incoming::Stale(header(kind::READ, 8))
        );
        assert_eq!(
            classify(header(kind::READ, 8), Vec::new(), None),
            Incoming::Stale(header(kind::READ, 8))
        );
        // Watch events come whatever is expected, even with req_id equal to the awaited one.
        assert_eq!(
            classify(
                header(kind::WATCH_EVENT, 0),
                b"/a/b\0tok\0".to_vec(),
                Some(0)
            ),
            Incoming::Watch(WatchEvent {
                path: "/a/b".into(),
                token: "tok".into()
            })
        );
        assert_eq!(
            classify(header(kind::WATCH_EVENT, 0), b"/a/b\0".to_vec(), Some(3)),
            Incoming::Stale(header(kind::WATCH_EVENT, 0))
        );
    }

    #[test]
    fn interprets_replies() {
        assert_eq!(
            reply_payload(kind::READ, &header(kind::READ, 1), b"x".to_vec()),
            Ok(b"x".to_vec())
        );
        assert_eq!(
            reply_payload(kind::READ, &header(kind::ERROR, 1), b"ENOENT\0".to_vec()),
            Err(Error::Enoent)
        );
        assert_eq!(
            reply_payload(
                kind::WRITE,
                &header(kind::ERROR, 1),
                b"EWHATEVER\0".to_vec()
            ),
            Err(Error::Einval)
        );
        assert_eq!(
            reply_payload(kind::WRITE, &header(kind::READ, 1), b"OK\0".to_vec()),
            Err(Error::Eproto)
        );
        assert_eq!(expect_ok(b"OK\0"), Ok(()));
        assert_eq!(expect_ok(b"OK"), Ok(()));
        assert_eq!(expect_ok(b"NO\0"), Err(Error::Eproto));
    }

    #[test]
    fn errno_names_round_trip() {
        for (error, name) in NAMES {
            assert_eq!(error.name(), name);
            assert_eq!(Error::from_name(name.as_bytes()), error);
            let mut with_nul = name.as_bytes().to_vec();
            with_nul.push(0);
            assert_eq!(Error::from_name(&with_nul), error);
        }
        assert_eq!(Error::Enospc.to_string(), "ENOSPC");
    }

    #[test]
    fn splits_strings_and_numbers() {
        assert_eq!(split_strings(b""), Vec::<&[u8]>::new());
        assert_eq!(split_strings(b"a\0bc\0"), [&b"a"[..], b"bc"]);
        assert_eq!(split_strings(b"a\0bc"), [&b"a"[..], b"bc"]);
        assert_eq!(split_strings(b"\0"), [&b""[..]]);
        assert_eq!(parse_decimal(b"42\0"), Some(42));
        assert_eq!(parse_decimal(b"7"), Some(7));
        assert_eq!(parse_decimal(b" 3 "), Some(3));
        assert_eq!(parse_decimal(b"4294967295"), Some(u32::MAX));
        for bad in [&b""[..], b"-1", b"+1", b"0x10", b"4294967296", b"1a", b"\0"] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn permissions_parse_and_encode() {
        let perm = Perm::parse(b"r12").unwrap();
        assert_eq!(perm, Perm::new(Access::Read, 12));
        assert_eq!(perm.encode(), "r12");
        for (text, access) in [
            ("n0", Access::None),
            ("w3", Access::Write),
            ("b65535", Access::Both),
        ] {
            let perm = Perm::parse(text.as_bytes()).unwrap();
            assert_eq!(perm.access, access);
            assert_eq!(perm.encode(), text);
        }
        for bad in [&b""[..], b"x1", b"r", b"r-1", b"r65536", b"rr1"] {
            assert_eq!(Perm::parse(bad), None, "{bad:?}");
        }
    }
}
