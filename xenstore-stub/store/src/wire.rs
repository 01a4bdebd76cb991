//! Xen's xenstore wire format (`xs_wire.h`): message header, message types, error names,
//! limits, and helpers to build and take apart messages.
//!
//! Every message is a 16-byte header of four little-endian `u32`s followed by `len` bytes
//! of payload:
//!
//! | offset | field    | meaning                                                  |
//! |--------|----------|----------------------------------------------------------|
//! | 0      | `type`   | a [`MessageType`]                                        |
//! | 4      | `req_id` | chosen by the client, echoed in the reply                |
//! | 8      | `tx_id`  | transaction id, 0 outside a transaction; echoed          |
//! | 12     | `len`    | payload bytes, at most [`PAYLOAD_MAX`]                   |
//!
//! Payloads are NUL-terminated strings, except the value of a `WRITE` (the rest of the
//! payload after the path's NUL) and the reply to a `READ` (the raw value). A failed request
//! is answered with type [`MessageType::Error`] and the errno *name* plus NUL
//! (`"ENOENT\0"`). Watch events are type [`MessageType::WatchEvent`], `req_id = tx_id = 0`,
//! payload `path\0token\0`. The full table is in `docs/XEN-ABI.md` §3.2 of the project docs.

use alloc::vec::Vec;

/// Size of the message header in bytes.
pub const HEADER_BYTES: usize = 16;
/// Largest payload either side may send (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Largest whole message: header plus the largest payload.
pub const MESSAGE_MAX: usize = HEADER_BYTES + PAYLOAD_MAX;
/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// Longest relative path (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = 2048;

/// The message types of `xs_wire.h` with their numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum MessageType {
    /// `XS_CONTROL` (formerly `XS_DEBUG`).
    Control = 0,
    /// `XS_DIRECTORY`: the names of a node's children.
    Directory = 1,
    /// `XS_READ`: a node's value.
    Read = 2,
    /// `XS_GET_PERMS`: a node's permission list.
    GetPerms = 3,
    /// `XS_WATCH`: register a watch.
    Watch = 4,
    /// `XS_UNWATCH`: remove a watch.
    Unwatch = 5,
    /// `XS_TRANSACTION_START`.
    TransactionStart = 6,
    /// `XS_TRANSACTION_END`.
    TransactionEnd = 7,
    /// `XS_INTRODUCE`: the toolstack tells the store about a domain's ring.
    Introduce = 8,
    /// `XS_RELEASE`: the toolstack tells the store a domain is gone.
    Release = 9,
    /// `XS_GET_DOMAIN_PATH`: `/local/domain/<id>`.
    GetDomainPath = 10,
    /// `XS_WRITE`: set a node's value, creating it and missing parents.
    Write = 11,
    /// `XS_MKDIR`: create a node with an empty value.
    Mkdir = 12,
    /// `XS_RM`: remove a node and its subtree.
    Rm = 13,
    /// `XS_SET_PERMS`: replace a node's permission list.
    SetPerms = 14,
    /// `XS_WATCH_EVENT`: server to client only.
    WatchEvent = 15,
    /// `XS_ERROR`: server to client only.
    Error = 16,
    /// `XS_IS_DOMAIN_INTRODUCED`: `"T"` or `"F"`.
    IsDomainIntroduced = 17,
    /// `XS_RESUME` (not supported here).
    Resume = 18,
    /// `XS_SET_TARGET` (not supported here).
    SetTarget = 19,
    /// `XS_RESET_WATCHES`: drop all of the connection's watches and transactions.
    ResetWatches = 21,
    /// `XS_DIRECTORY_PART`: a directory listing in pieces, for lists over [`PAYLOAD_MAX`].
    DirectoryPart = 22,
}

impl MessageType {
    /// The type with number `value`, if it is one of ours (20, `XS_RESTRICT`, was removed
    /// from the protocol; 23 and up are optional extensions we do not implement).
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Control,
            1 => Self::Directory,
            2 => Self::Read,
            3 => Self::GetPerms,
            4 => Self::Watch,
            5 => Self::Unwatch,
            6 => Self::TransactionStart,
            7 => Self::TransactionEnd,
            8 => Self::Introduce,
            9 => Self::Release,
            10 => Self::GetDomainPath,
            11 => Self::Write,
            12 => Self::Mkdir,
            13 => Self::Rm,
            14 => Self::SetPerms,
            15 => Self::WatchEvent,
            16 => Self::Error,
            17 => Self::IsDomainIntroduced,
            18 => Self::Resume,
            19 => Self::SetTarget,
            21 => Self::ResetWatches,
            22 => Self::DirectoryPart,
            _ => return None,
        })
    }
}

/// An error a request can fail with, sent as its errno name. The names are the ones Xen's
/// `xs_wire.h` lists (Linux maps a name it does not know to `EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsError {
    /// Malformed request: bad path, missing NUL, bad number, wrong argument count.
    Einval,
    /// The caller's permissions do not allow the operation.
    Eacces,
    /// A watch with this path and token already exists.
    Eexist,
    /// The node, transaction, watch or domain does not exist.
    Enoent,
    /// Out of memory.
    Enomem,
    /// A quota was hit: nodes, value size, transactions, permissions per node, nodes
    /// touched by one transaction (Xen's xenstored uses this name for these).
    Enospc,
    /// Internal inconsistency.
    Eio,
    /// Not used by this server; kept because it is part of the protocol's list.
    Enotempty,
    /// The message type is not supported.
    Enosys,
    /// Not used by this server; kept because it is part of the protocol's list.
    Erofs,
    /// `TRANSACTION_START` sent inside a transaction.
    Ebusy,
    /// The transaction conflicted with another change; the client retries it.
    Eagain,
    /// Not used by this server; kept because it is part of the protocol's list.
    Eisconn,
    /// The watch quota was hit, or a reply would exceed [`PAYLOAD_MAX`].
    E2big,
    /// An unprivileged caller tried to change a node's owner.
    Eperm,
}

impl XsError {
    /// The errno name sent on the wire (without the NUL).
    pub fn name(self) -> &'static str {
        match self {
            Self::Einval => "EINVAL",
            Self::Eacces => "EACCES",
            Self::Eexist => "EEXIST",
            Self::Enoent => "ENOENT",
            Self::Enomem => "ENOMEM",
            Self::Enospc => "ENOSPC",
            Self::Eio => "EIO",
            Self::Enotempty => "ENOTEMPTY",
            Self::Enosys => "ENOSYS",
            Self::Erofs => "EROFS",
            Self::Ebusy => "EBUSY",
            Self::Eagain => "EAGAIN",
            Self::Eisconn => "EISCONN",
            Self::E2big => "E2BIG",
            Self::Eperm => "EPERM",
        }
    }
}

impl core::fmt::Display for XsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A byte stream or message that breaks the framing itself. There is no reply to it: the
/// transport disconnects the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// Fewer than [`HEADER_BYTES`] bytes.
    ShortHeader,
    /// The header's `len` exceeds [`PAYLOAD_MAX`].
    Oversize {
        /// The `len` the header claimed.
        len: u32,
    },
    /// The header's `len` does not match the bytes that follow it.
    LengthMismatch {
        /// The `len` the header claimed.
        len: u32,
        /// The payload bytes actually present.
        actual: usize,
    },
    /// The connection is not (or no longer) known to the store.
    UnknownConnection,
}

impl core::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::ShortHeader => write!(f, "message shorter than the {HEADER_BYTES}-byte header"),
            Self::Oversize { len } => {
                write!(
                    f,
                    "payload length {len} exceeds the maximum of {PAYLOAD_MAX}"
                )
            }
            Self::LengthMismatch { len, actual } => {
                write!(f, "header says {len} payload bytes, message has {actual}")
            }
            Self::UnknownConnection => write!(f, "unknown connection"),
        }
    }
}

/// A decoded message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Raw message type (see [`MessageType::from_u32`]).
    pub kind: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 outside a transaction.
    pub tx_id: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl Header {
    /// Decodes the first [`HEADER_BYTES`] bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let word = |index: usize| -> Result<u32, ProtocolError> {
            let start = index * 4;
            let field = bytes
                .get(start..start + 4)
                .ok_or(ProtocolError::ShortHeader)?;
            let mut raw = [0u8; 4];
            raw.copy_from_slice(field);
            Ok(u32::from_le_bytes(raw))
        };
        Ok(Self {
            kind: word(0)?,
            req_id: word(1)?,
            tx_id: word(2)?,
            len: word(3)?,
        })
    }

    /// The header as wire bytes.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        for (index, value) in [self.kind, self.req_id, self.tx_id, self.len]
            .into_iter()
            .enumerate()
        {
            bytes[index * 4..index * 4 + 4].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }
}

/// Splits a whole message into its header and payload, checking the length field.
pub fn split_message(message: &[u8]) -> Result<(Header, &[u8]), ProtocolError> {
    let header = Header::decode(message)?;
    if header.len as usize > PAYLOAD_MAX {
        return Err(ProtocolError::Oversize { len: header.len });
    }
    let payload = &message[HEADER_BYTES..];
    if payload.len() != header.len as usize {
        return Err(ProtocolError::LengthMismatch {
            len: header.len,
            actual: payload.len(),
        });
    }
    Ok((header, payload))
}

/// Builds one message. The payload must not exceed [`PAYLOAD_MAX`]; a longer one is cut
/// there (the store never builds one: it answers `E2BIG` instead).
pub fn encode_message(kind: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(PAYLOAD_MAX)];
    // The cast cannot truncate: the payload is at most PAYLOAD_MAX bytes.
    let header = Header {
        kind,
        req_id,
        tx_id,
        len: payload.len() as u32,
    };
    let mut message = Vec::with_capacity(HEADER_BYTES + payload.len());
    message.extend_from_slice(&header.encode());
    message.extend_from_slice(payload);
    message
}

/// Builds a request whose payload is `args`, each followed by a NUL (the common form:
/// `path\0`, `path\0token\0`, `domid\0gfn\0evtchn\0`).
pub fn encode_request(kind: MessageType, req_id: u32, tx_id: u32, args: &[&[u8]]) -> Vec<u8> {
    let mut payload = Vec::new();
    for arg in args {
        payload.extend_from_slice(arg);
        payload.push(0);
    }
    encode_message(kind as u32, req_id, tx_id, &payload)
}

/// Builds a `WRITE` request: `path\0value`, the value without a NUL.
pub fn encode_write(req_id: u32, tx_id: u32, path: &[u8], value: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(path.len() + 1 + value.len());
    payload.extend_from_slice(path);
    payload.push(0);
    payload.extend_from_slice(value);
    encode_message(MessageType::Write as u32, req_id, tx_id, &payload)
}

/// Splits a payload of NUL-terminated strings. `None` if the payload does not end with a
/// NUL (a string without its terminator), which requests treat as `EINVAL`.
pub fn split_strings(payload: &[u8]) -> Option<Vec<&[u8]>> {
    let body = payload.strip_suffix(&[0])?;
    Some(body.split(|&byte| byte == 0).collect())
}

/// Parses a decimal number without sign, spaces or leading `+`; `None` on overflow.
pub fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &byte in text {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
    }
    Some(value)
}

/// Appends the decimal form of `value`.
pub fn push_decimal(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let mut rest = value;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (rest % 10) as u8;
        count += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend(digits[..count].iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = Header {
            kind: 11,
            req_id: 7,
            tx_id: 3,
            len: 42,
        };
        let bytes = header.encode();
        assert_eq!(&bytes[..4], &11u32.to_le_bytes());
        assert_eq!(&bytes[12..], &42u32.to_le_bytes());
        assert_eq!(Header::decode(&bytes), Ok(header));
    }

    #[test]
    fn split_message_checks_lengths() {
        let message = encode_request(MessageType::Read, 1, 0, &[b"/a"]);
        let (header, payload) = split_message(&message).unwrap();
        assert_eq!(header.len, 3);
        assert_eq!(payload, b"/a\0");
        assert_eq!(
            split_message(&message[..10]),
            Err(ProtocolError::ShortHeader)
        );
        assert_eq!(
            split_message(&message[..17]),
            Err(ProtocolError::LengthMismatch { len: 3, actual: 1 })
        );
        let mut big = Header {
            kind: 2,
            req_id: 0,
            tx_id: 0,
            len: 4097,
        }
        .encode()
        .to_vec();
        big.resize(16 + 4097, 0);
        assert_eq!(
            split_message(&big),
            Err(ProtocolError::Oversize { len: 4097 })
        );
    }

    #[test]
    fn strings_need_their_terminator() {
        assert_eq!(
            split_strings(b"a\0bc\0"),
            Some(alloc::vec![&b"a"[..], &b"bc"[..]])
        );
        assert_eq!(split_strings(b"\0"), Some(alloc::vec![&b""[..]]));
        assert_eq!(split_strings(b"abc"), None);
        assert_eq!(split_strings(b""), None);
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"1 "), None);
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        out.push(b' ');
        push_decimal(&mut out, 1234567890);
        assert_eq!(out, b"0 1234567890");
    }

    #[test]
    fn every_type_number_round_trips() {
        for value in 0..=30u32 {
            if let Some(kind) = MessageType::from_u32(value) {
                assert_eq!(kind as u32, value);
            }
        }
        assert_eq!(MessageType::from_u32(20), None);
        assert_eq!(MessageType::from_u32(0xffff), None);
    }
}
