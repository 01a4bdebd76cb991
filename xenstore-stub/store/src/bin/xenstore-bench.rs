//! `xenstore-bench [ITERATIONS]`: xenstore operations per second for one client, as
//! WRITE+READ pairs on an unprivileged domain's own nodes:
//! - in-process: requests already encoded, straight into `Store::handle`;
//! - over a unix socket to the host server, one request at a time (round-trip bound);
//! - over the socket with 64 requests in flight (throughput bound).
//!
//! Build with `--release` for meaningful figures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use xenstore_store::host::{Client, Server};
use xenstore_store::wire::{self, MessageType};
use xenstore_store::{Outgoing, Quotas, Store};

const KEYS: usize = 100;

fn requests() -> Vec<Vec<u8>> {
    let mut list = Vec::new();
    for key in 0..KEYS {
        let path = format!("data/key{key}");
        list.push(wire::encode_write(1, 0, path.as_bytes(), b"some value"));
        list.push(wire::encode_request(
            MessageType::Read,
            2,
            0,
            &[path.as_bytes()],
        ));
    }
    list
}

fn report(what: &str, operations: usize, elapsed: Duration) {
    let rate = operations as f64 / elapsed.as_secs_f64();
    println!(
        "{what:<44} {operations:>9} ops in {:>8.3} s = {rate:>11.0} ops/s",
        elapsed.as_secs_f64()
    );
}

fn in_process(iterations: usize) {
    let mut store = Store::new(Quotas::default());
    store.introduce_domain(1, "bench").expect("introduce");
    let conn = store.add_connection(1, false);
    let requests = requests();
    let start = Instant::now();
    for index in 0..iterations * 2 {
        let out = store
            .handle(conn, &requests[index % requests.len()])
            .expect("handle");
        let Some(Outgoing::Message { bytes, .. }) = out.first() else {
            panic!("no reply")
        };
        assert_ne!(bytes[0], MessageType::Error as u8, "request failed");
    }
    report(
        "in-process Store::handle (WRITE+READ)",
        iterations * 2,
        start.elapsed(),
    );
}

fn over_socket(iterations: usize) {
    let path = std::env::temp_dir().join(format!("xenstore-bench-{}.sock", std::process::id()));
    let handle = Server::new(Quotas::default()).spawn(&path).expect("server");
    let mut client = Client::connect(handle.path()).expect("connect");
    let start = Instant::now();
    for index in 0..iterations {
        let path = format!("/bench/key{}", index % KEYS);
        client
            .write(&path, b"some value")
            .expect("io")
            .expect("write");
        client.read(&path).expect("io").expect("read");
    }
    report(
        "unix socket, one request at a time",
        iterations * 2,
        start.elapsed(),
    );

    const IN_FLIGHT: usize = 64;
    let requests: Vec<Vec<u8>> = (0..IN_FLIGHT)
        .map(|index| {
            let path = format!("/bench/key{}", index % KEYS);
            if index % 2 == 0 {
                wire::encode_write(index as u32, 0, path.as_bytes(), b"some value")
            } else {
                wire::encode_request(MessageType::Read, index as u32, 0, &[path.as_bytes()])
            }
        })
        .collect();
    let batch: Vec<u8> = requests.concat();
    let rounds = (iterations * 2).div_ceil(IN_FLIGHT);
    let start = Instant::now();
    for _ in 0..rounds {
        client.send_raw(&batch).expect("send");
        for _ in 0..IN_FLIGHT {
            let (header, _) = client.receive().expect("receive");
            assert_ne!(header.kind, MessageType::Error as u32, "request failed");
        }
    }
    report(
        "unix socket, 64 requests in flight",
        rounds * IN_FLIGHT,
        start.elapsed(),
    );
    let _ = std::fs::remove_file(PathBuf::from(&path));
}

fn main() {
    let iterations = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(200_000);
    in_process(iterations);
    over_socket(iterations / 4);
}
