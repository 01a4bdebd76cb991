//! A blocking xenstore client over a unix socket, for tests, benchmarks and host tools.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::wire::{self, Header, MessageType, HEADER_BYTES};
use crate::Framer;

/// A watch event: the reported path and the watch's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The path, as the server reported it.
    pub path: String,
    /// The token given to `WATCH`.
    pub token: Vec<u8>,
}

/// A connection to a xenstore socket.
pub struct Client {
    stream: UnixStream,
    framer: Framer,
    pending: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    last_req_id: u32,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> io::Result<Self> {
        Ok(Self {
            stream: UnixStream::connect(path)?,
            framer: Framer::new(),
            pending: VecDeque::new(),
            events: VecDeque::new(),
            last_req_id: 0,
        })
    }

    /// Sends raw bytes (one or more messages, or deliberately broken ones).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Receives the next whole message, whatever it is.
    pub fn receive(&mut self) -> io::Result<(Header, Vec<u8>)> {
        let mut buffer = [0u8; 8192];
        while self.pending.is_empty() {
            let count = self.stream.read(&mut buffer)?;
            if count == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed",
                ));
            }
            let pending = &mut self.pending;
            self.framer
                .feed_all(&buffer[..count], |message| pending.push_back(message))
                .map_err(|error| invalid(&error.to_string()))?;
        }
        let message = self
            .pending
            .pop_front()
            .ok_or_else(|| invalid("no message"))?;
        let header = Header::decode(&message).map_err(|error| invalid(&error.to_string()))?;
        Ok((header, message[HEADER_BYTES..].to_vec()))
    }

    /// Sends a request and waits for its reply, keeping watch events that arrive first.
    /// The outer error is I/O; the inner one the error name the server answered with.
    pub fn request(
        &mut self,
        kind: MessageType,
        tx_id: u32,
        payload: &[u8],
    ) -> io::Result<Result<Vec<u8>, String>> {
        self.last_req_id = self.last_req_id.wrapping_add(1);
        let req_id = self.last_req_id;
        self.send_raw(&wire::encode_message(kind as u32, req_id, tx_id, payload))?;
        loop {
            let (header, payload) = self.receive()?;
            if header.kind == MessageType::WatchEvent as u32 {
                self.events.push_back(parse_event(&payload)?);
                continue;
            }
            if header.req_id != req_id {
                return Err(invalid("reply with an unexpected req_id"));
            }
            if header.kind == MessageType::Error as u32 {
                let name = payload.strip_suffix(&[0]).unwrap_or(&payload);
                return Ok(Err(String::from_utf8_lossy(name).into_owned()));
            }
            if header.kind != kind as u32 {
                return Err(invalid("reply of another type"));
            }
            return Ok(Ok(payload));
        }
    }

    /// `WRITE`.
    pub fn write(&mut self, path: &str, value: &[u8]) -> io::Result<Result<(), String>> {
        let mut payload = path.as_bytes().to_vec();
        payload.push(0);
        payload.extend_from_slice(value);
        Ok(self.request(MessageType::Write, 0, &payload)?.map(drop))
    }

    /// `READ`.
    pub fn read(&mut self, path: &str) -> io::Result<Result<Vec<u8>, String>> {
        self.request(MessageType::Read, 0, &nul_terminated(&[path.as_bytes()]))
    }

    /// `WATCH`.
    pub fn watch(&mut self, path: &str, token: &str) -> io::Result<Result<(), String>> {
        let payload = nul_terminated(&[path.as_bytes(), token.as_bytes()]);
        Ok(self.request(MessageType::Watch, 0, &payload)?.map(drop))
    }

    /// The next watch event, waiting for one if none has arrived yet.
    pub fn next_event(&mut self) -> io::Result<Event> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            let (header, payload) = self.receive()?;
            if header.kind != MessageType::WatchEvent as u32 {
                return Err(invalid("unexpected reply while waiting for an event"));
            }
            self.events.push_back(parse_event(&payload)?);
        }
    }

    /// The underlying socket (to set timeouts).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }
}

/// `args`, each followed by a NUL.
pub fn nul_terminated(args: &[&[u8]]) -> Vec<u8> {
    let mut payload = Vec::new();
    for arg in args {
        payload.extend_from_slice(arg);
        payload.push(0);
    }
    payload
}

fn parse_event(payload: &[u8]) -> io::Result<Event> {
    let strings = wire::split_strings(payload).ok_or_else(|| invalid("bad event"))?;
    let [path, token] = strings[..] else {
        return Err(invalid("bad event"));
    };
    Ok(Event {
        path: String::from_utf8_lossy(path).into_owned(),
        token: token.to_vec(),
    })
}
