//! The windowed stream of small UDP datagrams: the datagrams, the sending end and the
//! receiving end's count (see the protocol in the crate's documentation).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::{ACK_EVERY, DATAGRAM_BYTES, LOSS_WAIT, WINDOW};

/// One datagram of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram {
    /// `D`: data, with its sequence number.
    Data(u64),
    /// `A`: the receiver's count of data datagrams.
    Ack(u64),
    /// `R`: reset your count.
    Reset,
    /// `r`: the count is reset.
    ResetDone,
    /// `Q`: how many data datagrams did you receive?
    Query,
    /// `C`: that many.
    Count(u64),
    /// `F`: stream to me for this many milliseconds.
    Flood(u32),
    /// `E`: the stream is over; this many were sent.
    End(u64),
}

impl Datagram {
    /// The datagram's bytes (a data datagram is [`DATAGRAM_BYTES`] long).
    pub fn encode(self) -> Vec<u8> {
        let (tag, number): (u8, Option<u64>) = match self {
            Datagram::Data(seq) => (b'D', Some(seq)),
            Datagram::Ack(count) => (b'A', Some(count)),
            Datagram::Reset => (b'R', None),
            Datagram::ResetDone => (b'r', None),
            Datagram::Query => (b'Q', None),
            Datagram::Count(count) => (b'C', Some(count)),
            Datagram::Flood(ms) => {
                let mut bytes = vec![b'F'];
                bytes.extend_from_slice(&ms.to_le_bytes());
                return bytes;
            }
            Datagram::End(sent) => (b'E', Some(sent)),
        };
        let mut bytes = vec![tag];
        if let Some(number) = number {
            bytes.extend_from_slice(&number.to_le_bytes());
        }
        if tag == b'D' {
            bytes.resize(DATAGRAM_BYTES, 0);
        }
        bytes
    }

    /// Reads a datagram; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&tag, rest) = bytes.split_first()?;
        let number = || {
            rest.get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        Some(match tag {
            b'D' if bytes.len() == DATAGRAM_BYTES => Datagram::Data(number()?),
            b'A' => Datagram::Ack(number()?),
            b'R' => Datagram::Reset,
            b'r' => Datagram::ResetDone,
            b'Q' => Datagram::Query,
            b'C' => Datagram::Count(number()?),
            b'F' => Datagram::Flood(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?)),
            b'E' => Datagram::End(number()?),
            _ => return None,
        })
    }
}

/// What a sending end did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub sent: u64,
    /// The receiver's count in its last acknowledgement.
    pub acknowledged: u64,
    /// From the first datagram to that acknowledgement.
    pub elapsed: Duration,
    /// Times the window stayed full for [`LOSS_WAIT`] and its datagrams were written off.
    pub stalls: u64,
}

/// Sends data datagrams from `socket` to `peer` for `duration`, at most [`WINDOW`] of them
/// unacknowledged, reading `peer`'s acknowledgements whenever the window is full. Leaves
/// the socket with a read timeout of [`LOSS_WAIT`].
pub fn send(socket: &UdpSocket, peer: SocketAddr, duration: Duration) -> io::Result<Sent> {
    socket.set_read_timeout(Some(LOSS_WAIT))?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut outcome = Sent::default();
    // Datagrams written off as lost, which the window does not wait for.
    let mut written_off = 0u64;
    let mut answer = [0u8; 64];
    loop {
        let in_flight = outcome
            .sent
            .saturating_sub(outcome.acknowledged + written_off);
        if in_flight < WINDOW {
            // The clock is read once per acknowledgement's worth of datagrams.
            if outcome.sent % ACK_EVERY == 0 && Instant::now() >= deadline {
                break;
            }
            match socket.send_to(&Datagram::Data(outcome.sent).encode(), peer) {
                Ok(_) => outcome.sent += 1,
                // A full queue on the way out: the datagram was not sent.
                Err(e) if e.raw_os_error() == Some(105) => std::thread::yield_now(),
                Err(e) => return Err(e),
            }
            continue;
        }
        if Instant::now() >= deadline {
            break;
        }
        match socket.recv_from(&mut answer) {
            Ok((len, from)) if from == peer => {
                if let Some(Datagram::Ack(count)) = Datagram::decode(&answer[..len]) {
                    if count > outcome.acknowledged {
                        outcome.acknowledged = count;
                        outcome.elapsed = start.elapsed();
                    }
                }
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                written_off = outcome.sent.saturating_sub(outcome.acknowledged);
                outcome.stalls += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(outcome)
}

/// The receiving end's count of data datagrams.
#[derive(Clone, Copy, Debug, Default)]
pub struct Receiver {
    pub count: u64,
    pub last: Option<Instant>,
}

impl Receiver {
    /// Counts a data datagram; returns the acknowledgement to send, if one is due.
    pub fn take(&mut self) -> Option<Datagram> {
        self.count += 1;
        self.last = Some(Instant::now());
        self.count
            .is_multiple_of(ACK_EVERY)
            .then_some(Datagram::Ack(self.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_round_trip() {
        for datagram in [
            Datagram::Data(7),
            Datagram::Ack(1 << 40),
            Datagram::Reset,
            Datagram::ResetDone,
            Datagram::Query,
            Datagram::Count(3),
            Datagram::Flood(5000),
            Datagram::End(99),
        ] {
            assert_eq!(Datagram::decode(&datagram.encode()), Some(datagram));
        }
        assert_eq!(Datagram::Data(1).encode().len(), DATAGRAM_BYTES);
        assert_eq!(Datagram::decode(b"D short"), None);
        assert_eq!(Datagram::decode(b"x"), None);
        assert_eq!(Datagram::decode(b""), None);
    }

    /// A receiver on loopback that drops every `drop_every`-th datagram: the stream goes on
    /// (the window is written off after [`LOSS_WAIT`]) and the counts add up.
    fn stream_through(drop_every: Option<u64>) -> (Sent, u64) {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            receiver
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut count = Receiver::default();
            let mut seen = 0u64;
            let mut buffer = [0u8; 128];
            while let Ok((len, from)) = receiver.recv_from(&mut buffer) {
                if let Some(Datagram::Data(_)) = Datagram::decode(&buffer[..len]) {
                    seen += 1;
                    if drop_every.is_some_and(|every| seen.is_multiple_of(every)) {
                        continue;
                    }
                    if let Some(ack) = count.take() {
                        receiver.send_to(&ack.encode(), from).unwrap();
                    }
                }
            }
            count.count
        });
        let sent = send(&sender, to, Duration::from_millis(300)).unwrap();
        (sent, thread.join().unwrap())
    }

    #[test]
    fn a_stream_is_counted_at_both_ends() {
        let (sent, received) = stream_through(None);
        assert!(sent.sent > WINDOW, "{sent:?}");
        assert_eq!(received, sent.sent);
        assert!(sent.acknowledged <= received && sent.acknowledged + WINDOW >= received);
        assert!(sent.elapsed > Duration::ZERO);
    }

    #[test]
    fn losses_do_not_stop_a_stream() {
        let (sent, received) = stream_through(Some(100));
        assert!(sent.sent > 2 * WINDOW, "{sent:?}");
        assert!(received < sent.sent);
    }
}
