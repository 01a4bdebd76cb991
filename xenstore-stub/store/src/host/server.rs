//! The unix-socket server: one reader and one writer thread per client, the store behind
//! a mutex.
//!
//! The reader frames requests and hands each to the store; everything the store returns
//! goes into the receiving client's bounded [`OutputQueue`] while the store lock is held,
//! so events reach every client in the order the store produced them. The writer drains
//! the queue to the socket. A reader waits while its own queue could not take a reply
//! (back-pressure on a client that does not read), and a client whose queue overflows
//! with watch events is disconnected.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

use crate::{ConnId, Framer, Outgoing, OutputQueue, Quotas, Store};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

const END_OF_STREAM: &str = "end of stream";

struct ClientOut {
    queue: OutputQueue,
    closed: bool,
}

/// One client's output side, shared by its reader, its writer and whoever delivers to it.
struct ClientSink {
    out: Mutex<ClientOut>,
    changed: Condvar,
    stream: UnixStream,
}

impl ClientSink {
    fn push(&self, message: &[u8]) -> Result<(), crate::QueueFull> {
        let mut out = lock(&self.out);
        if out.closed {
            return Ok(());
        }
        out.queue.push(message)?;
        self.changed.notify_all();
        Ok(())
    }

    fn close(&self) {
        lock(&self.out).closed = true;
        self.changed.notify_all();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Waits until a reply is sure to fit; false once the client is closed.
    fn wait_ready(&self) -> bool {
        let mut out = lock(&self.out);
        while !out.closed && !out.queue.ready_for_request() {
            out = self
                .changed
                .wait(out)
                .unwrap_or_else(PoisonError::into_inner);
        }
        !out.closed
    }
}

struct State {
    store: Store,
    clients: BTreeMap<ConnId, Arc<ClientSink>>,
}

impl State {
    fn drop_client(&mut self, conn: ConnId, why: &str) {
        if let Some(sink) = self.clients.remove(&conn) {
            if why != END_OF_STREAM {
                eprintln!("xenstored-host: {conn}: disconnected: {why}");
            }
            sink.close();
        }
        self.store.remove_connection(conn);
    }

    fn deliver(&mut self, outgoing: Vec<Outgoing>) {
        let mut dropped = Vec::new();
        for item in outgoing {
            match item {
                Outgoing::Message { conn, bytes } => {
                    if let Some(sink) = self.clients.get(&conn) {
                        if sink.push(&bytes).is_err() {
                            dropped.push((conn, "output queue full (client does not read)"));
                        }
                    }
                }
                Outgoing::Close { conn } => dropped.push((conn, "its domain was released")),
                Outgoing::Introduce { domid, gfn, evtchn } => eprintln!(
                    "xenstored-host: domain {domid} introduced (gfn {gfn:#x}, port {evtchn}); \
                     no rings on the host, nothing to map"
                ),
            }
        }
        for (conn, why) in dropped {
            self.drop_client(conn, why);
        }
    }
}

/// The server: a store shared by the client threads.
#[derive(Clone)]
pub struct Server {
    state: Arc<Mutex<State>>,
}

impl Server {
    /// A server around an empty store with these quotas.
    pub fn new(quotas: Quotas) -> Self {
        Self::with_store(Store::new(quotas))
    }

    /// A server around an existing store.
    pub fn with_store(store: Store) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                store,
                clients: BTreeMap::new(),
            })),
        }
    }

    /// Runs `f` on the store (for setting up or inspecting it). Watch events it returns
    /// are delivered.
    pub fn access<R>(&self, f: impl FnOnce(&mut Store) -> (R, Vec<Outgoing>)) -> R {
        let mut state = lock(&self.state);
        let (result, outgoing) = f(&mut state.store);
        state.deliver(outgoing);
        result
    }

    /// Binds a listening socket at `path`, replacing a stale socket file left there.
    pub fn bind(path: &Path) -> io::Result<UnixListener> {
        if let Ok(metadata) = std::fs::symlink_metadata(path) {
            if !metadata.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a server is already listening on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        UnixListener::bind(path)
    }

    /// Accepts clients forever, each served by its own threads.
    pub fn serve(&self, listener: UnixListener) -> io::Result<()> {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    if let Err(error) = self.add_client(stream) {
                        eprintln!("xenstored-host: cannot serve a client: {error}");
                    }
                }
                Err(error) => eprintln!("xenstored-host: accept failed: {error}"),
            }
        }
        Ok(())
    }

    /// Binds `path` and serves it from a background thread.
    pub fn spawn(self, path: &Path) -> io::Result<ServerHandle> {
        let listener = Self::bind(path)?;
        let server = self.clone();
        thread::Builder::new()
            .name("xenstored-accept".into())
            .spawn(move || server.serve(listener))?;
        Ok(ServerHandle {
            server: self,
            path: path.to_path_buf(),
        })
    }

    fn add_client(&self, stream: UnixStream) -> io::Result<()> {
        let writer_stream = stream.try_clone()?;
        let sink_stream = stream.try_clone()?;
        let limit = lock(&self.state).store.quotas().max_output_bytes;
        let sink = Arc::new(ClientSink {
            out: Mutex::new(ClientOut {
                queue: OutputQueue::new(limit),
                closed: false,
            }),
            changed: Condvar::new(),
            stream: sink_stream,
        });
        let conn = {
            let mut state = lock(&self.state);
            let conn = state.store.add_connection(0, true);
            state.clients.insert(conn, sink.clone());
            conn
        };
        let writer_sink = sink.clone();
        thread::Builder::new()
            .name(format!("xenstored-{conn}-out"))
            .spawn(move || write_loop(&writer_sink, writer_stream))?;
        let state = self.state.clone();
        thread::Builder::new()
            .name(format!("xenstored-{conn}-in"))
            .spawn(move || {
                let why = read_loop(&state, conn, &sink, stream);
                lock(&state).drop_client(conn, &why);
            })?;
        Ok(())
    }
}

/// Serves requests from one client until it goes away; returns why it stopped.
fn read_loop(
    state: &Mutex<State>,
    conn: ConnId,
    sink: &ClientSink,
    mut stream: UnixStream,
) -> String {
    let mut framer = Framer::new();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let count = match stream.read(&mut buffer) {
            Ok(0) => return END_OF_STREAM.into(),
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return format!("read failed: {error}"),
        };
        let mut input = &buffer[..count];
        while !input.is_empty() {
            let fed = match framer.feed(input) {
                Ok(fed) => fed,
                Err(error) => return format!("protocol error: {error}"),
            };
            input = &input[fed.consumed..];
            let Some(message) = fed.message else { continue };
            if !sink.wait_ready() {
                return "closed".into();
            }
            let mut state = lock(state);
            match state.store.handle(conn, &message) {
                Ok(outgoing) => state.deliver(outgoing),
                Err(error) => return format!("protocol error: {error}"),
            }
        }
    }
}

fn write_loop(sink: &ClientSink, mut stream: UnixStream) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let count = {
            let mut out = lock(&sink.out);
            while out.queue.is_empty() && !out.closed {
                out = sink
                    .changed
                    .wait(out)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if out.closed {
                return;
            }
            out.queue.pop_into(&mut buffer)
        };
        sink.changed.notify_all();
        if stream.write_all(&buffer[..count]).is_err() {
            sink.close();
            return;
        }
    }
}

/// A server running in the background (see [`Server::spawn`]); it lives as long as the
/// process.
pub struct ServerHandle {
    server: Server,
    path: PathBuf,
}

impl ServerHandle {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The server, for [`Server::access`].
    pub fn server(&self) -> &Server {
        &self.server
    }
}
