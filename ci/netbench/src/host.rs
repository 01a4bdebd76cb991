//! The host half: the client `cargo xtask bench` runs against the guest's servers, through
//! the ports QEMU forwards (the protocol is in the crate's documentation). Every time is
//! taken on the host's clock.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::stream::{self, Datagram, Receiver};
use crate::{GuestCounts, CHUNK, DATAGRAM_BYTES, IO_TIMEOUT};

/// How long connecting may keep failing (the guest's server may start a moment later, and
/// QEMU's user network accepts a connection before the guest has refused it).
const CONNECT_FOR: Duration = Duration::from_secs(30);
/// How often a UDP request is sent again before the guest is taken as gone.
const REQUEST_TRIES: usize = 10;
/// How long the end of the guest's stream is waited for after its last datagram.
const STREAM_SILENCE: Duration = Duration::from_secs(2);

/// A bulk TCP transfer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transfer {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Transfer {
    /// Megabytes (10^6 bytes) a second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A stream of small datagrams.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Datagrams {
    pub sent: u64,
    pub received: u64,
    /// Counted in the rate: the receiver's count at the end of `elapsed`.
    pub counted: u64,
    pub elapsed: Duration,
    /// Times the sender's window stalled for [`crate::LOSS_WAIT`] (lost datagrams).
    pub stalls: u64,
}

impl Datagrams {
    /// Datagrams received a second.
    pub fn per_second(&self) -> f64 {
        self.counted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A connection to the guest's netbench.
pub struct Client {
    tcp: SocketAddr,
    udp: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Opens the control connection to the guest's `tcp` port (retrying for a while), and
    /// will reach its UDP server at `udp`.
    pub fn connect(tcp: SocketAddr, udp: SocketAddr) -> io::Result<Self> {
        let start = Instant::now();
        loop {
            match Self::try_connect(tcp, udp) {
                Ok(client) => return Ok(client),
                Err(e) if start.elapsed() > CONNECT_FOR => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "no netbench at {tcp} after {} s: {e}",
                            CONNECT_FOR.as_secs()
                        ),
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn try_connect(tcp: SocketAddr, udp: SocketAddr) -> io::Result<Self> {
        let stream = open(tcp)?;
        let mut client = Client {
            tcp,
            udp,
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        client
            .writer
            .set_read_timeout(Some(Duration::from_secs(5)))?;
        let answer = client.ask("control")?;
        client.writer.set_read_timeout(Some(IO_TIMEOUT))?;
        if answer != "ok netbench" {
            return Err(io::Error::other(format!("the guest answered {answer:?}")));
        }
        Ok(client)
    }

    /// Sends a command line on the control connection and reads the answer line.
    fn ask(&mut self, command: &str) -> io::Result<String> {
        self.writer.write_all(format!("{command}\n").as_bytes())?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the guest closed the control connection after `{command}`"),
            ));
        }
        Ok(line.trim().to_string())
    }

    /// The guest notes its counts and prints `netbench: <test> start`.
    pub fn begin(&mut self, test: &str) -> io::Result<()> {
        match self.ask(&format!("begin {test}"))?.as_str() {
            "ok" => Ok(()),
            other => Err(io::Error::other(format!("`begin` answered {other:?}"))),
        }
    }

    /// What the guest's interface did since [`Client::begin`].
    pub fn end(&mut self, test: &str) -> io::Result<GuestCounts> {
        let answer = self.ask(&format!("end {test}"))?;
        GuestCounts::from_line(&answer)
            .ok_or_else(|| io::Error::other(format!("`end` answered {answer:?}")))
    }

    /// The guest's netbench exits.
    pub fn quit(mut self) -> io::Result<()> {
        match self.ask("quit")?.as_str() {
            "bye" => Ok(()),
            other => Err(io::Error::other(format!("`quit` answered {other:?}"))),
        }
    }

    /// Writes to the guest's sink for `duration`, then waits for its count of what arrived
    /// (which must be everything): the time runs to that answer.
    pub fn tcp_to_guest(&self, duration: Duration) -> io::Result<Transfer> {
        let mut stream = open(self.tcp)?;
        stream.write_all(b"sink\n")?;
        let block = vec![0xa5u8; CHUNK];
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < duration {
            stream.write_all(&block)?;
            sent += CHUNK as u64;
        }
        stream.shutdown(Shutdown::Write)?;
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer)?;
        let elapsed = start.elapsed();
        let bytes: u64 = answer
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("the sink answered {answer:?}")))?;
        if bytes != sent {
            return Err(io::Error::other(format!(
                "the guest received {bytes} of the {sent} bytes sent"
            )));
        }
        Ok(Transfer { bytes, elapsed })
    }

    /// Reads what the guest's source writes for `duration`, to its end.
    pub fn tcp_from_guest(&self, duration: Duration) -> io::Result<Transfer> {
        let mut stream = open(self.tcp)?;
        stream.write_all(format!("source {}\n", duration.as_millis()).as_bytes())?;
        let start = Instant::now();
        let mut buffer = vec![0u8; CHUNK];
        let mut bytes = 0u64;
        loop {
            match stream.read(&mut buffer)? {
                0 => break,
                read => bytes += read as u64,
            }
        }
        Ok(Transfer {
            bytes,
            elapsed: start.elapsed(),
        })
    }

    /// Streams data datagrams to the guest for `duration`; the rate counts what the guest
    /// acknowledged, up to its last acknowledgement.
    pub fn udp_to_guest(&self, duration: Duration) -> io::Result<Datagrams> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        self.request(&socket, Datagram::Reset, |answer| {
            (answer == Datagram::ResetDone).then_some(())
        })?;
        let sent = stream::send(&socket, self.udp, duration)?;
        let received = self.request(&socket, Datagram::Query, |answer| match answer {
            Datagram::Count(count) => Some(count),
            _ => None,
        })?;
        Ok(Datagrams {
            sent: sent.sent,
            received,
            counted: sent.acknowledged,
            elapsed: sent.elapsed,
            stalls: sent.stalls,
        })
    }

    /// Has the guest stream data datagrams to the host for `duration`, acknowledging them;
    /// the rate counts what arrived, from the request to the last datagram.
    pub fn udp_from_guest(&self, duration: Duration) -> io::Result<Datagrams> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(STREAM_SILENCE))?;
        let ms = u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
        let start = Instant::now();
        socket.send_to(&Datagram::Flood(ms).encode(), self.udp)?;
        let mut receiver = Receiver::default();
        let mut buffer = [0u8; 2 * DATAGRAM_BYTES];
        let sent = loop {
            let (len, from) = match socket.recv_from(&mut buffer) {
                Ok(received) => received,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if receiver.count == 0 {
                        return Err(io::Error::other(format!(
                            "the guest sent nothing in {} s",
                            STREAM_SILENCE.as_secs()
                        )));
                    }
                    break None;
                }
                Err(e) => return Err(e),
            };
            if from != self.udp {
                continue;
            }
            match Datagram::decode(&buffer[..len]) {
                Some(Datagram::Data(_)) => {
                    if let Some(ack) = receiver.take() {
                        socket.send_to(&ack.encode(), self.udp)?;
                    }
                }
                Some(Datagram::End(sent)) => break Some(sent),
                _ => {}
            }
        };
        let elapsed = receiver.last.map_or(Duration::ZERO, |last| last - start);
        Ok(Datagrams {
            sent: sent.unwrap_or(receiver.count),
            received: receiver.count,
            counted: receiver.count,
            elapsed,
            stalls: 0,
        })
    }

    /// Sends `request` to the guest's UDP server until an answer that `wanted` accepts.
    fn request<T>(
        &self,
        socket: &UdpSocket,
        request: Datagram,
        wanted: impl Fn(Datagram) -> Option<T>,
    ) -> io::Result<T> {
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buffer = [0u8; 2 * DATAGRAM_BYTES];
        for _ in 0..REQUEST_TRIES {
            socket.send_to(&request.encode(), self.udp)?;
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                match socket.recv_from(&mut buffer) {
                    Ok((len, from)) if from == self.udp => {
                        if let Some(found) = Datagram::decode(&buffer[..len]).and_then(&wanted) {
                            return Ok(found);
                        }
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the guest's UDP server did not answer {request:?}"),
        ))
    }
}

/// A TCP connection to `to` with [`IO_TIMEOUT`] on reads and writes.
fn open(to: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
