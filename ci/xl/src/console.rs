//! `xl console NAME`: a domain's console as a raw byte stream both ways, as Xen's `xl
//! console` gives it, through the console domain's attach line (the machine's COM2, a unix
//! socket `cargo xtask run` opens).
//!
//! The protocol (`driver-domains/console/src/attach.rs`): we send Ctrl-] (which ends a
//! session an earlier client left behind) and `attach NAME\n`; the console domain answers
//! `ok NAME\n` or `error: <reason>\n`; from then on the domain's output bytes come as the
//! domain wrote them, and our bytes go to its input, until we send Ctrl-] or the domain
//! goes away (`\r\n[domain NAME is gone]\r\n`).
//!
//! On a terminal, stdin is put in raw mode (`cfmakeraw`, as Xen's xl does) so that every key,
//! Ctrl-C and escape sequences included, goes to the domain; Ctrl-] (0x1d) leaves. The
//! terminal is put back however the session ends: Ctrl-], the domain gone, an error, a
//! panic, or SIGINT, SIGTERM, SIGHUP or SIGQUIT. When stdin is not a terminal (a script, a
//! test), bytes are copied as they are; the session ends at Ctrl-] in the input, or once
//! the input has ended and the output has been quiet for [`QUIET_AFTER_EOF`].

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The byte that leaves (Ctrl-]).
pub const DETACH: u8 = 0x1d;

/// How long the console domain has to answer `attach`.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// With stdin at its end, the session ends once the output has been quiet this long.
pub const QUIET_AFTER_EOF: Duration = Duration::from_secs(2);

/// The longest answer line looked at; more bytes without one is not our console domain.
const ANSWER_MAX: usize = 4096;

/// What the console domain answered to `attach`.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Attached; the bytes after the answer are the domain's first output.
    Ok { rest: Vec<u8> },
    /// Refused, with the console domain's reason.
    Error(String),
}

/// Looks for the answer to `attach NAME` in what arrived so far: `None` until a line
/// `ok NAME` or `error: ...` is complete. Bytes before it (a few left in the UART from an
/// earlier session) are skipped.
pub fn parse_answer(received: &[u8], name: &str) -> Option<Answer> {
    let ok = format!("ok {name}");
    let mut start = 0;
    while let Some(end) = received[start..].iter().position(|&b| b == b'\n') {
        let line = &received[start..start + end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        if text.ends_with(&ok) {
            return Some(Answer::Ok {
                rest: received[start + end + 1..].to_vec(),
            });
        }
        if let Some(at) = text.find("error: ") {
            return Some(Answer::Error(text[at + "error: ".len()..].to_string()));
        }
        start += end + 1;
    }
    None
}

/// Watches the output for the console domain's last line of a session.
struct GoneWatch {
    marker: Vec<u8>,
    tail: Vec<u8>,
}

impl GoneWatch {
    fn new(name: &str) -> Self {
        Self {
            marker: format!("\r\n[domain {name} is gone]\r\n").into_bytes(),
            tail: Vec::new(),
        }
    }

    /// Adds output; true once the marker has gone by.
    fn push(&mut self, bytes: &[u8]) -> bool {
        self.tail.extend_from_slice(bytes);
        let found = self
            .tail
            .windows(self.marker.len())
            .any(|window| window == self.marker.as_slice());
        let keep = self.marker.len().saturating_sub(1);
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
        found
    }
}

/// Puts the terminal back as it was when dropped.
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    /// Raw mode on stdin's terminal.
    fn enter() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)
            .context("putting the terminal in raw mode")?;
        Ok(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// What the session's threads report.
enum Event {
    Input(Vec<u8>),
    InputEnded,
    /// The console domain's last line of the session went by.
    Gone,
    /// The socket closed (QEMU exited) or failed.
    Closed(String),
    Signal(i32),
}

/// Connects to the attach line at `socket`, attaches to `name` and runs the session.
pub fn run(socket: &Path, name: &str) -> Result<()> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "nothing is listening on {}: start the system with `cargo xtask run` (it gives the \
             console domain's attach line, COM2, that socket), or give --attach-socket",
            socket.display()
        )
    })?;
    stream
        .write_all(format!("{}attach {name}\n", DETACH as char).as_bytes())
        .with_context(|| format!("cannot write to {}", socket.display()))?;
    let rest = match await_answer(&mut stream, socket, name)? {
        Answer::Ok { rest } => rest,
        Answer::Error(why) => bail!("the console domain refused `attach {name}`: {why}"),
    };
    let terminal = rustix::termios::isatty(std::io::stdin());
    let (events, inbox) = mpsc::channel();
    // Before raw mode: a signal from here on restores the terminal through the main loop.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGQUIT,
    ])
    .context("setting up signal handling")?;
    let to_main = events.clone();
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let _ = to_main.send(Event::Signal(signal));
        }
    });
    let raw = if terminal {
        eprintln!("[xl: attached to {name}; Ctrl-] leaves]");
        Some(RawTerminal::enter()?)
    } else {
        None
    };
    let last_output = std::sync::Arc::new(std::sync::Mutex::new(Instant::now()));
    spawn_output(&stream, name, rest, events.clone(), last_output.clone())?;
    spawn_input(events);
    let mut input_ended: Option<Instant> = None;
    let mut detach = true;
    let outcome: Result<Option<i32>> = loop {
        match inbox.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Input(bytes)) => {
                let (send, leave) = match bytes.iter().position(|&b| b == DETACH) {
                    Some(at) => (&bytes[..at], true),
                    None => (&bytes[..], false),
                };
                if let Err(e) = stream.write_all(send) {
                    detach = false;
                    break Err(e).context("writing to the attach line");
                }
                if leave {
                    break Ok(None);
                }
            }
            Ok(Event::InputEnded) => input_ended = input_ended.or(Some(Instant::now())),
            Ok(Event::Gone) => {
                detach = false;
                break Ok(None);
            }
            Ok(Event::Closed(why)) => {
                detach = false;
                break Err(anyhow::anyhow!(
                    "the attach line {} closed ({why}): did the system stop?",
                    socket.display()
                ));
            }
            Ok(Event::Signal(signal)) => break Ok(Some(signal)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(None),
        }
        if let Some(ended) = input_ended {
            let last = *last_output.lock().unwrap_or_else(|e| e.into_inner());
            if ended.max(last).elapsed() >= QUIET_AFTER_EOF {
                break Ok(None);
            }
        }
    };
    if detach {
        // The console domain stops sending us this domain's output.
        let _ = stream.write_all(&[DETACH]);
    }
    drop(raw);
    if terminal {
        eprintln!();
    }
    match outcome? {
        Some(signal) => std::process::exit(128 + signal),
        None => Ok(()),
    }
}

/// Reads until the answer to `attach` is complete.
fn await_answer(stream: &mut UnixStream, socket: &Path, name: &str) -> Result<Answer> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(answer) = parse_answer(&received, name) {
            stream.set_read_timeout(None)?;
            return Ok(answer);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || received.len() > ANSWER_MAX {
            bail!(
                "the console domain did not answer `attach {name}` on {} within {} s: another \
                 `xl console` may be attached (one at a time), or the console domain has no \
                 attach line (its domain file needs `cmdline = \"attach=com2\"` and \
                 `ioports = [ \"3f8-3ff\", \"2f8-2ff\" ]`)",
                socket.display(),
                ANSWER_TIMEOUT.as_secs()
            );
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => bail!("the attach line {} closed", socket.display()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("reading the attach line"),
        }
    }
}

/// Copies the attach line to stdout as it arrives, noting when, and reports the end of the
/// session.
fn spawn_output(
    stream: &UnixStream,
    name: &str,
    first: Vec<u8>,
    events: mpsc::Sender<Event>,
    last_output: std::sync::Arc<std::sync::Mutex<Instant>>,
) -> Result<()> {
    let mut reader = stream.try_clone()?;
    let mut gone = GoneWatch::new(name);
    std::thread::spawn(move || {
        let mut chunk = first;
        let mut buf = [0u8; 4096];
        loop {
            if !chunk.is_empty() {
                *last_output.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(&chunk).and_then(|()| stdout.flush());
                if gone.push(&chunk) {
                    let _ = events.send(Event::Gone);
                    return;
                }
            }
            match reader.read(&mut buf) {
                Ok(0) => {
                    let _ = events.send(Event::Closed("end of stream".into()));
                    return;
                }
                Ok(n) => chunk = buf[..n].to_vec(),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => chunk.clear(),
                Err(e) => {
                    let _ = events.send(Event::Closed(e.to_string()));
                    return;
                }
            }
        }
    });
    Ok(())
}

/// Reads stdin (a byte at a time as the terminal gives them in raw mode) and reports it.
fn spawn_input(events: mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = events.send(Event::InputEnded);
                    return;
                }
                Ok(n) => {
                    if events.send(Event::Input(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_found_after_stale_bytes() {
        assert_eq!(parse_answer(b"", "linux"), None);
        assert_eq!(parse_answer(b"ok lin", "linux"), None);
        assert_eq!(
            parse_answer(b"ok linux\nguest# ", "linux"),
            Some(Answer::Ok {
                rest: b"guest# ".to_vec()
            })
        );
        // A few bytes of an earlier session, then the answer.
        assert_eq!(
            parse_answer(b"\x1b[0mold\r\nstaleok linux\r\n", "linux"),
            Some(Answer::Ok { rest: Vec::new() })
        );
        // Another domain's name is not our answer.
        assert_eq!(parse_answer(b"ok linux2\n", "linux"), None);
    }

    #[test]
    fn a_refusal_carries_its_reason() {
        assert_eq!(
            parse_answer(b"error: no domain named ghost\n", "ghost"),
            Some(Answer::Error("no domain named ghost".into()))
        );
        assert_eq!(parse_answer(b"error: no dom", "ghost"), None);
    }

    #[test]
    fn the_last_line_is_seen_across_reads() {
        let mut watch = GoneWatch::new("linux");
        assert!(!watch.push(b"reboot: Power down\r\n[domain li"));
        assert!(watch.push(b"nux is gone]\r\n"));
        let mut watch = GoneWatch::new("linux");
        assert!(!watch.push(b"[domain linux is gone]\r\n"));
        for byte in b"\r\n[domain linux is gone]\r\n" {
            if watch.push(&[*byte]) {
                return;
            }
        }
        panic!("not seen byte by byte");
    }
}
