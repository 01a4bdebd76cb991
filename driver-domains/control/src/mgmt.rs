//! The management channel between the host's `xl` and the control domain: framed, checked
//! messages over a byte stream (a virtio console port the control domain owns, a unix
//! socket on the host).
//!
//! A frame is [`MAGIC`] (4 bytes), the payload's length (u32, little-endian, at most
//! [`MAX_PAYLOAD`]), the payload (a `postcard` encoding of a [`Request`] or a [`Response`])
//! and the CRC-32 (IEEE) of the payload (u32, little-endian). [`Deframer`] takes the stream
//! a piece at a time and gives back whole frames; bytes that are not a frame (noise, a
//! truncated or corrupted frame, a length over the limit) are skipped up to the next
//! [`MAGIC`] and reported once per run as a [`FrameError`], so one garbled message costs one
//! error answer and the channel keeps working.
//!
//! Every request gets exactly one response, in order.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// The first bytes of every frame: "XLm" and the protocol version.
pub const MAGIC: [u8; 4] = *b"XLm1";
/// The largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// The most image bytes one [`Request::CreateData`] carries.
pub const DATA_CHUNK: usize = 192 * 1024;
const HEADER: usize = 8;
const TRAILER: usize = 4;

/// What `xl` asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `xl list`, `xl top`, `xl vcpu-list`, `xl uptime`.
    List,
    /// `xl info`.
    Info,
    Pause(String),
    Unpause(String),
    /// `xl destroy`: at once, no guest shutdown.
    Destroy(String),
    /// `xl shutdown` / `xl reboot`: asks the guest through xenstore's `control/shutdown`.
    Shutdown {
        domain: String,
        reboot: bool,
    },
    /// `xl create`, first message: the domain, and how many image bytes follow.
    CreateBegin(CreatePlan),
    /// The next piece of the images: the kernel's bytes, then the ramdisk's.
    CreateData {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// All bytes sent: build and start it.
    CreateEnd,
    /// Drop a create under way (`xl` was interrupted).
    CreateAbort,
    /// `xl dmesg`: the microvisor's recent log.
    Dmesg,
    /// `xl vcpu-list`: every vCPU of every domain.
    VcpuList,
    /// `xl crash`: the domain crashes now, as if it had faulted (fault injection).
    Crash(String),
}

/// A domain to create, from its `xl.cfg` (checked by the `manifests` crate on the host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePlan {
    pub name: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub cmdline: String,
    pub kernel_bytes: u64,
    pub ramdisk_bytes: Option<u64>,
    pub on_poweroff: Action,
    pub on_reboot: Action,
    pub on_crash: Action,
    /// Its disks and network interfaces in the device table's encoding,
    /// `vbds=<table> vifs=<table>` (checked on the host against the running system's
    /// manifest; empty for none). The control domain hands them to the xenstore domain.
    pub devices: String,
}

/// What the control domain does when a domain it created shuts down for a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Destroy,
    Restart,
    Preserve,
}

/// The control domain's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Domains(Vec<DomainRow>),
    Info(HostInfo),
    /// Done; the text says what was done.
    Done(String),
    /// `CreateEnd` succeeded.
    Created {
        domid: u16,
    },
    /// Refused; the text says why and what to fix.
    Error(String),
    /// The microvisor's recent log.
    Dmesg(String),
    Vcpus(Vec<VcpuRow>),
}

/// One vCPU, as `xl vcpu-list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuRow {
    pub name: String,
    pub domid: u16,
    pub vcpu: u32,
    /// The CPU it runs on, if it runs.
    pub cpu: Option<u16>,
    /// xl's state: `r` running, `b` blocked, `-` runnable (waiting for a CPU), `p` down
    /// (not started) or paused.
    pub state: String,
    pub cpu_ns: u64,
}

/// One domain, as `xl list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRow {
    pub domid: u16,
    pub name: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// xl's six state letters, e.g. `r-----`.
    pub state: String,
    pub cpu_ns: u64,
    pub vm_exits: u64,
    pub hypercalls: u64,
    /// Created by `xl create` (not the boot manifest).
    pub created: bool,
}

/// The machine, as `xl info` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub cpus: u32,
    pub total_mib: u64,
    pub free_mib: u64,
    pub uptime_ns: u64,
    pub max_domains: u32,
    pub vm_exits: u64,
    pub hypercalls: u64,
    /// Frames the channel refused so far (garbled or oversized).
    pub bad_frames: u64,
}

/// xl's state letters for a domain: running, paused, shut down (poweroff or reboot),
/// crashed, dying.
pub fn state_letters(state: u8, reason: u8) -> &'static str {
    use microvisor_abi::domctl::*;
    match (state, reason) {
        (DOMCTL_STATE_PAUSED, _) => "--p---",
        (DOMCTL_STATE_DYING, _) => "-----d",
        (DOMCTL_STATE_SHUTDOWN, DOMCTL_REASON_CRASH) => "----c-",
        (DOMCTL_STATE_SHUTDOWN, _) => "---s--",
        _ => "r-----",
    }
}

/// Why bytes on the channel were not a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Bytes before a [`MAGIC`] that belong to no frame.
    Noise { bytes: usize },
    /// A length over [`MAX_PAYLOAD`].
    TooLong { bytes: u32 },
    /// The payload's CRC does not match.
    BadChecksum,
    /// The payload is not a message of the protocol.
    BadMessage,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Noise { bytes } => write!(f, "{bytes} bytes that are not a frame"),
            Self::TooLong { bytes } => {
                write!(f, "a frame of {bytes} bytes (at most {MAX_PAYLOAD})")
            }
            Self::BadChecksum => write!(f, "a frame whose checksum does not match"),
            Self::BadMessage => write!(f, "a frame that holds no message of the protocol"),
        }
    }
}

/// Encodes `message` as one frame.
pub fn frame<T: Serialize>(message: &T) -> Vec<u8> {
    let payload = postcard::to_allocvec(message).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + payload.len() + TRAILER);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out
}

/// Decodes a frame's payload as a message.
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    postcard::from_bytes(payload).map_err(|_| FrameError::BadMessage)
}

/// Cuts a byte stream into frames.
#[derive(Default)]
pub struct Deframer {
    buf: Vec<u8>,
}

impl Deframer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Gives up a partial frame (its sender went quiet): returns how many bytes were dropped.
    /// A garbled length can make the deframer wait for bytes that never come; the reader
    /// calls this when the stream has been quiet for a while with bytes pending.
    pub fn discard(&mut self) -> usize {
        let n = self.buf.len();
        self.buf.clear();
        n
    }

    /// The next whole frame's payload, an error for bytes skipped, or `None` when more bytes
    /// are needed.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        let start = find(&self.buf, &MAGIC);
        match start {
            Some(0) => {}
            Some(n) => {
                self.buf.drain(..n);
                return Some(Err(FrameError::Noise { bytes: n }));
            }
            None => {
                // Keep a tail that may be the beginning of a magic.
                let keep = (1..MAGIC.len())
                    .rev()
                    .find(|&k| self.buf.len() >= k && self.buf.ends_with(&MAGIC[..k]))
                    .unwrap_or(0);
                let noise = self.buf.len() - keep;
                if noise == 0 {
                    return None;
                }
                self.buf.drain(..noise);
                return Some(Err(FrameError::Noise { bytes: noise }));
            }
        }
        if self.buf.len() < HEADER {
            return None;
        }
        let len = u32::from_le_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
        if len as usize > MAX_PAYLOAD {
            // Skip this magic; the next frame starts at a later one.
            self.buf.drain(..MAGIC.len());
            return Some(Err(FrameError::TooLong { bytes: len }));
        }
        let total = HEADER + len as usize + TRAILER;
        if self.buf.len() < total {
            return None;
        }
        let payload = &self.buf[HEADER..HEADER + len as usize];
        let crc = &self.buf[HEADER + len as usize..total];
        let ok = crc32fast::hash(payload).to_le_bytes() == crc;
        if !ok {
            self.buf.drain(..MAGIC.len());
            return Some(Err(FrameError::BadChecksum));
        }
        let payload = payload.to_vec();
        self.buf.drain(..total);
        Some(Ok(payload))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use proptest::prelude::*;

    fn all(d: &mut Deframer) -> Vec<Result<Vec<u8>, FrameError>> {
        core::iter::from_fn(|| d.next_frame()).collect()
    }

    #[test]
    fn a_frame_round_trips_whole_or_byte_by_byte() {
        let request = Request::Shutdown {
            domain: "linux".to_string(),
            reboot: true,
        };
        let bytes = frame(&request);
        let mut d = Deframer::new();
        d.push(&bytes);
        let got = d.next_frame().unwrap().unwrap();
        assert_eq!(decode::<Request>(&got).unwrap(), request);
        let mut d = Deframer::new();
        let mut frames = vec![];
        for b in &bytes {
            d.push(&[*b]);
            frames.extend(all(&mut d));
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(
            decode::<Request>(frames[0].as_ref().unwrap()).unwrap(),
            request
        );
    }

    #[test]
    fn garbage_is_reported_and_the_next_frame_still_arrives() {
        let mut d = Deframer::new();
        d.push(b"hello there");
        let mut corrupt = frame(&Request::List);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        d.push(&corrupt);
        d.push(&frame(&Request::Info));
        let out = all(&mut d);
        assert_eq!(out[0], Err(FrameError::Noise { bytes: 11 }));
        assert!(out.contains(&Err(FrameError::BadChecksum)));
        let good: Vec<_> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(good.len(), 1);
        assert_eq!(decode::<Request>(good[0]).unwrap(), Request::Info);
    }

    #[test]
    fn an_oversized_length_is_refused_without_waiting_for_it() {
        let mut d = Deframer::new();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        d.push(&bytes);
        d.push(&frame(&Request::List));
        let out = all(&mut d);
        assert_eq!(out[0], Err(FrameError::TooLong { bytes: u32::MAX }));
        assert!(out.iter().any(|r| r
            .as_ref()
            .is_ok_and(|p| decode::<Request>(p) == Ok(Request::List))));
    }

    #[test]
    fn a_valid_frame_of_no_message_is_a_bad_message() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&[200, 200, 200]);
        bytes.extend_from_slice(&crc32fast::hash(&[200, 200, 200]).to_le_bytes());
        let mut d = Deframer::new();
        d.push(&bytes);
        let payload = d.next_frame().unwrap().unwrap();
        assert_eq!(decode::<Request>(&payload), Err(FrameError::BadMessage));
    }

    proptest! {
        /// Whatever comes on the channel, the deframer never panics and holds at most one
        /// frame's worth of bytes; once the partial frame is given up (the control domain
        /// does so after 5 quiet seconds), the next good frame arrives.
        #[test]
        fn any_noise_then_a_frame(noise in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut d = Deframer::new();
            d.push(&noise);
            let _ = all(&mut d);
            prop_assert!(d.pending() <= HEADER + MAX_PAYLOAD + TRAILER);
            d.discard();
            d.push(&frame(&Request::List));
            let got = all(&mut d);
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(decode::<Request>(got[0].as_ref().unwrap()), Ok(Request::List));
        }

        /// Noise that holds no magic never delays the frame after it.
        #[test]
        fn magic_free_noise_costs_nothing(noise in proptest::collection::vec(0u8..0x58, 0..600)) {
            let mut d = Deframer::new();
            d.push(&noise);
            d.push(&frame(&Request::Info));
            let got = all(&mut d);
            let good: Vec<_> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
            prop_assert_eq!(good.len(), 1);
        }
    }
}
