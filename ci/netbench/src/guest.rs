//! The guest half: the servers `netbench serve` runs inside the Linux guest (the protocol is
//! in the crate's documentation).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::stream::{self, Datagram, Receiver};
use crate::{GuestCounts, CHUNK, END_REPEATS, TCP_PORT, UDP_PORT};

/// Serves on [`TCP_PORT`] and [`UDP_PORT`] until the host says `quit` (then the process
/// exits), counting what interface `iface` does.
pub fn serve(iface: &str) -> io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", TCP_PORT))?;
    let udp = UdpSocket::bind(("0.0.0.0", UDP_PORT))?;
    serve_on(listener, udp, iface, || std::process::exit(0))
}

/// As [`serve`], on sockets already bound; `quit` calls `on_quit` once it is answered.
pub fn serve_on(
    listener: TcpListener,
    udp: UdpSocket,
    iface: &str,
    on_quit: fn(),
) -> io::Result<()> {
    // The counts must be readable before the host is told to start.
    read_counts(iface)?;
    let udp_port = udp.local_addr()?.port();
    std::thread::spawn(move || {
        if let Err(e) = serve_udp(&udp) {
            println!("netbench: udp FAILED: {e}");
        }
    });
    println!(
        "netbench: ready on tcp {} and udp {}, counting {iface}",
        listener.local_addr()?.port(),
        udp_port
    );
    for connection in listener.incoming() {
        let connection = connection?;
        let iface = iface.to_string();
        std::thread::spawn(move || {
            if let Err(e) = serve_tcp(connection, &iface, on_quit) {
                println!("netbench: tcp connection FAILED: {e}");
            }
        });
    }
    Ok(())
}

/// The interface's counts now.
pub fn read_counts(iface: &str) -> io::Result<GuestCounts> {
    let net_dev = std::fs::read_to_string("/proc/net/dev")?;
    let interrupts = std::fs::read_to_string("/proc/interrupts")?;
    GuestCounts::parse(iface, &net_dev, &interrupts).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("/proc/net/dev has no interface {iface}"),
        )
    })
}

fn serve_tcp(connection: TcpStream, iface: &str, on_quit: fn()) -> io::Result<()> {
    let mut reader = BufReader::new(connection.try_clone()?);
    let mut writer = connection;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("control"), None) => {
            writer.write_all(b"ok netbench\n")?;
            control(reader, writer, iface, on_quit)
        }
        (Some("sink"), None) => {
            let mut count = reader.buffer().len() as u64;
            reader.consume(reader.buffer().len());
            let mut stream = reader.into_inner();
            let mut buffer = vec![0u8; CHUNK];
            loop {
                match stream.read(&mut buffer)? {
                    0 => break,
                    read => count += read as u64,
                }
            }
            writer.write_all(format!("{count}\n").as_bytes())?;
            writer.shutdown(Shutdown::Both)
        }
        (Some("source"), Some(ms)) => {
            let ms: u64 = ms
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad duration"))?;
            let deadline = Instant::now() + Duration::from_millis(ms);
            let buffer = vec![0x5au8; CHUNK];
            while Instant::now() < deadline {
                writer.write_all(&buffer)?;
            }
            writer.shutdown(Shutdown::Both)
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown command {:?}", line.trim()),
        )),
    }
}

fn control(
    mut reader: impl BufRead,
    mut writer: TcpStream,
    iface: &str,
    on_quit: fn(),
) -> io::Result<()> {
    let mut before = read_counts(iface)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("begin"), Some(test)) => {
                before = read_counts(iface)?;
                println!("netbench: {test} start");
                writer.write_all(b"ok\n")?;
            }
            (Some("end"), Some(test)) => {
                let counts = read_counts(iface)?.since(&before);
                println!("netbench: {test} end: {counts}");
                writer.write_all(format!("{counts}\n").as_bytes())?;
            }
            (Some("quit"), None) => {
                writer.write_all(b"bye\n")?;
                println!("netbench: done");
                on_quit();
                return Ok(());
            }
            _ => writer.write_all(b"what?\n")?,
        }
    }
}

fn serve_udp(socket: &UdpSocket) -> io::Result<()> {
    let mut receiver = Receiver::default();
    let mut buffer = [0u8; 2048];
    loop {
        socket.set_read_timeout(None)?;
        let (len, from) = socket.recv_from(&mut buffer)?;
        match Datagram::decode(&buffer[..len]) {
            Some(Datagram::Data(_)) => {
                if let Some(ack) = receiver.take() {
                    socket.send_to(&ack.encode(), from)?;
                }
            }
            Some(Datagram::Reset) => {
                receiver = Receiver::default();
                socket.send_to(&Datagram::ResetDone.encode(), from)?;
            }
            Some(Datagram::Query) => {
                socket.send_to(&Datagram::Count(receiver.count).encode(), from)?;
            }
            Some(Datagram::Flood(ms)) => {
                let sent = stream::send(socket, from, Duration::from_millis(ms.into()))?;
                for _ in 0..END_REPEATS {
                    socket.send_to(&Datagram::End(sent.sent).encode(), from)?;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Client;

    /// Both halves over loopback: every test of the benchmark, counted on `lo`.
    #[test]
    fn the_host_half_drives_the_guest_half() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tcp_at, udp_at) = (listener.local_addr().unwrap(), udp.local_addr().unwrap());
        std::thread::spawn(move || serve_on(listener, udp, "lo", || {}));
        let mut client = Client::connect(tcp_at, udp_at).unwrap();
        let time = Duration::from_millis(300);

        client.begin("tcp-host-to-guest").unwrap();
        let to = client.tcp_to_guest(time).unwrap();
        let counts = client.end("tcp-host-to-guest").unwrap();
        assert!(to.bytes > 0 && to.elapsed >= time, "{to:?}");
        assert!(counts.rx_bytes >= to.bytes, "{counts:?} {to:?}");

        let from = client.tcp_from_guest(time).unwrap();
        assert!(from.bytes > 0 && from.mb_per_s() > 0.0, "{from:?}");

        let to = client.udp_to_guest(time).unwrap();
        assert!(
            to.sent > 0 && to.received <= to.sent && to.counted <= to.received,
            "{to:?}"
        );
        assert!(to.per_second() > 0.0);

        let from = client.udp_from_guest(time).unwrap();
        assert!(from.received > 0 && from.received <= from.sent, "{from:?}");
        client.quit().unwrap();
    }
}
