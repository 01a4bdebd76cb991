//! Runs QEMU and captures its output line by line, each line stamped with the time since
//! QEMU was spawned. Optionally echoes the output as it arrives, types text into the serial
//! console (QEMU's stdin, with `-serial stdio`) when the output so far matches a pattern,
//! forwards this process's stdin to it, starts a task on the host (a TCP exchange with the
//! guest, a benchmark's client) once a line matches, stops QEMU once a line matches a
//! pattern, and kills it when a time limit runs out.

use std::io::{Read, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use regex::Regex;

use crate::qemu::Exit;

/// Which of QEMU's output streams a line came from. The serial console is stdout; QEMU's own
/// complaints are on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Time since QEMU was spawned.
    pub at: Duration,
    pub stream: Stream,
    /// The text without its line ending.
    pub text: String,
}

/// Why the capture ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// QEMU exited by itself.
    Exited(Exit),
    /// The time limit ran out and QEMU was killed.
    TimedOut,
    /// A line matched the stop pattern and QEMU was killed.
    Stopped,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct Capture {
    pub lines: Vec<Line>,
    pub ending: Ending,
    /// From the spawn to the end (exit or kill).
    pub elapsed: Duration,
    /// How many of [`Watch::sends`] were typed (the rest never saw their pattern).
    pub sent: usize,
}

impl Capture {
    /// The first line matching `pattern`.
    pub fn first_match(&self, pattern: &Regex) -> Option<&Line> {
        self.lines.iter().find(|line| pattern.is_match(&line.text))
    }

    /// The whole log as text, one line each.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            text.push_str(&line.text);
            text.push('\n');
        }
        text
    }
}

/// Text to type into the serial console once the output matches a pattern.
#[derive(Clone, Debug)]
pub struct SendText {
    /// Matched against the serial output (QEMU's stdout, as bytes, across lines) after the
    /// point where the previous send's pattern matched.
    pub after: regex::bytes::Regex,
    pub text: Vec<u8>,
}

/// How to watch a run.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    /// Kill QEMU after this long.
    pub timeout: Option<Duration>,
    /// Kill QEMU once a line matches this.
    pub stop_when: Option<Regex>,
    /// Print the output to the terminal as it arrives (stdout to stdout, stderr to stderr).
    pub echo: bool,
    /// Typed in order, each once its pattern matched.
    pub sends: Vec<SendText>,
    /// Pass what this process reads on its stdin to the serial console.
    pub forward_stdin: bool,
    /// A TCP exchange with the guest, started once a line matches (its result line is
    /// added to the log).
    pub exchange: Option<ExchangeWhen>,
    /// A host-side task (a benchmark's client), started once a line matches.
    pub task: Option<HostTask>,
    /// A unix socket where one client at a time (`xl console`) shares the serial line:
    /// what it sends is typed, and it gets a copy of the serial output. When it leaves,
    /// Ctrl-] is typed (the console domain gives the keyboard back).
    pub console_socket: Option<std::path::PathBuf>,
}

/// The client of [`Watch::console_socket`], if one is connected.
type ConsoleClient = std::sync::Arc<std::sync::Mutex<Option<std::os::unix::net::UnixStream>>>;

/// Serves [`Watch::console_socket`]: one client at a time, its bytes typed, and Ctrl-] typed
/// when it goes.
fn spawn_console_server(
    path: &std::path::Path,
    typer: mpsc::Sender<Vec<u8>>,
    client: ConsoleClient,
) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("could not listen on {}", path.display()))?;
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(copy) = stream.try_clone() else {
                continue;
            };
            *client.lock().unwrap_or_else(|e| e.into_inner()) = Some(copy);
            let mut buffer = [0u8; 4096];
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(length) => {
                        if typer.send(buffer[..length].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
            *client.lock().unwrap_or_else(|e| e.into_inner()) = None;
            let _ = typer.send(vec![0x1d]);
        }
    });
    Ok(())
}

/// What [`HostTask::run`] is given to add lines to the log.
pub type Emit<'a> = &'a mut dyn FnMut(String);

/// A task run on a thread of its own once a line matches; each line it emits is added to
/// the log (as a line of stderr, at the time it is emitted). The run does not wait for it:
/// it ends when QEMU does.
#[derive(Clone)]
pub struct HostTask {
    pub after: Regex,
    pub run: std::sync::Arc<dyn Fn(Emit) + Send + Sync>,
    /// If given, every line of the log is also appended here as it is finished, for a task
    /// that waits for a line.
    pub seen: Option<SeenLines>,
}

/// The log's lines so far, shared with a [`HostTask`].
pub type SeenLines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

impl std::fmt::Debug for HostTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostTask")
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

/// When and where to run a [`crate::exchange`].
#[derive(Clone, Debug)]
pub struct ExchangeWhen {
    /// Started once a line matches this.
    pub after: Regex,
    /// The host port (on 127.0.0.1) QEMU forwards to the guest's echo server.
    pub port: u16,
    pub bytes: u64,
}

/// How long to keep collecting output after QEMU was killed.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// What the reader threads report: bytes of one stream, and when they arrived. Empty bytes:
/// the stream closed (QEMU exited). The exchange's result line comes as a chunk of stderr.
struct Chunk {
    at: Duration,
    stream: Stream,
    bytes: Vec<u8>,
}

/// Splits each stream's bytes into lines, types the sends as their patterns match, and
/// echoes.
struct Collector<'w> {
    watch: &'w Watch,
    lines: Vec<Line>,
    /// Each stream's unfinished last line.
    partial: [Vec<u8>; 2],
    /// The serial output after the last send's match, while sends remain.
    unmatched: Vec<u8>,
    sent: usize,
    typer: Option<mpsc::Sender<Vec<u8>>>,
    /// Set when a line matched `stop_when`.
    stop: bool,
    /// Where the exchange reports, until it is started.
    exchange: Option<(mpsc::Sender<Chunk>, Instant)>,
    /// Where the host task reports, until it is started.
    task: Option<(mpsc::Sender<Chunk>, Instant)>,
    /// Gets a copy of the serial output.
    console: ConsoleClient,
}

impl<'w> Collector<'w> {
    fn new(
        watch: &'w Watch,
        typer: Option<mpsc::Sender<Vec<u8>>>,
        exchange: Option<(mpsc::Sender<Chunk>, Instant)>,
        task: Option<(mpsc::Sender<Chunk>, Instant)>,
    ) -> Self {
        Collector {
            watch,
            lines: Vec::new(),
            partial: [Vec::new(), Vec::new()],
            unmatched: Vec::new(),
            sent: 0,
            typer,
            stop: false,
            exchange,
            task,
            console: ConsoleClient::default(),
        }
    }

    fn take(&mut self, chunk: Chunk) {
        if self.watch.echo {
            echo(chunk.stream, &chunk.bytes);
        }
        if chunk.stream == Stream::Stdout {
            let mut client = self.console.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(stream) = client.as_mut() {
                if stream.write_all(&chunk.bytes).is_err() {
                    *client = None;
                }
            }
        }
        // Sends follow the serial line (stdout) and xtask's own lines such as the exchange's
        // result (which come as stderr chunks of their own).
        let ours = chunk.stream == Stream::Stderr && chunk.bytes.starts_with(b"xtask: ");
        if (chunk.stream == Stream::Stdout || ours) && self.sent < self.watch.sends.len() {
            self.unmatched.extend_from_slice(&chunk.bytes);
            self.type_matched_sends();
        }
        let index = chunk.stream as usize;
        let mut rest = chunk.bytes.as_slice();
        while let Some(end) = rest.iter().position(|&byte| byte == b'\n') {
            self.partial[index].extend_from_slice(&rest[..end]);
            self.finish_line(chunk.stream, chunk.at);
            rest = &rest[end + 1..];
        }
        self.partial[index].extend_from_slice(rest);
    }

    fn type_matched_sends(&mut self) {
        while let Some(send) = self.watch.sends.get(self.sent) {
            let Some(found) = send.after.find(&self.unmatched) else {
                return;
            };
            self.unmatched.drain(..found.end());
            if let Some(typer) = &self.typer {
                // The typist only goes away once QEMU's stdin is closed: nothing to type into.
                let _ = typer.send(send.text.clone());
            }
            self.sent += 1;
        }
    }

    fn finish_line(&mut self, stream: Stream, at: Duration) {
        let bytes = std::mem::take(&mut self.partial[stream as usize]);
        let text = String::from_utf8_lossy(&bytes)
            .trim_end_matches('\r')
            .to_string();
        if let Some(seen) = self.watch.task.as_ref().and_then(|t| t.seen.as_ref()) {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(text.clone());
        }
        if self
            .watch
            .stop_when
            .as_ref()
            .is_some_and(|pattern| pattern.is_match(&text))
        {
            self.stop = true;
        }
        if let Some(when) = &self.watch.exchange {
            if self.exchange.is_some() && when.after.is_match(&text) {
                let (sender, start) = self.exchange.take().expect("checked above");
                let (port, bytes) = (when.port, when.bytes);
                thread::spawn(move || {
                    let mut line = crate::exchange::run(port, bytes);
                    line.push('\n');
                    let _ = sender.send(Chunk {
                        at: start.elapsed(),
                        stream: Stream::Stderr,
                        bytes: line.into_bytes(),
                    });
                });
            }
        }
        if let Some(task) = &self.watch.task {
            if self.task.is_some() && task.after.is_match(&text) {
                let (sender, start) = self.task.take().expect("checked above");
                let run = task.run.clone();
                thread::spawn(move || {
                    let mut emit = |mut line: String| {
                        line.push('\n');
                        let _ = sender.send(Chunk {
                            at: start.elapsed(),
                            stream: Stream::Stderr,
                            bytes: line.into_bytes(),
                        });
                    };
                    run(&mut emit);
                });
            }
        }
        self.lines.push(Line { at, stream, text });
    }

    /// The lines, with each stream's unfinished last line.
    fn finish(mut self, at: Duration) -> (Vec<Line>, usize) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if !self.partial[stream as usize].is_empty() {
                self.finish_line(stream, at);
            }
        }
        (self.lines, self.sent)
    }
}

/// Spawns `command` (stdout and stderr captured; stdin closed unless there is something to
/// type into it) and watches it to the end.
pub fn run(mut command: Command, watch: &Watch) -> Result<Capture> {
    let types = !watch.sends.is_empty() || watch.forward_stdin || watch.console_socket.is_some();
    command
        .stdin(if types { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start {:?}", command.get_program()))?;
    let (sender, receiver) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(spawn_reader(stdout, Stream::Stdout, start, sender.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(spawn_reader(stderr, Stream::Stderr, start, sender.clone()));
    }
    let streams = readers.len();
    let exchange = watch.exchange.as_ref().map(|_| (sender.clone(), start));
    let task = watch.task.as_ref().map(|_| (sender.clone(), start));
    drop(sender);
    let typer = child.stdin.take().map(spawn_typist);
    if watch.forward_stdin {
        if let Some(typer) = &typer {
            spawn_stdin_forwarder(typer.clone());
        }
    }
    let console = ConsoleClient::default();
    if let (Some(path), Some(typer)) = (&watch.console_socket, &typer) {
        spawn_console_server(path, typer.clone(), console.clone())?;
    }
    let mut collector = Collector::new(watch, typer, exchange, task);
    collector.console = console;
    let mut closed = 0;

    let deadline = watch.timeout.map(|timeout| start + timeout);
    let mut ending = None;
    while ending.is_none() {
        let received = match deadline {
            Some(deadline) => {
                receiver.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            }
            None => receiver
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(chunk) if chunk.bytes.is_empty() => {
                closed += 1;
                if closed == streams {
                    // QEMU has exited (or is about to); a running exchange is not waited for.
                    break;
                }
            }
            Ok(chunk) => {
                collector.take(chunk);
                if collector.stop {
                    ending = Some(Ending::Stopped);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => ending = Some(Ending::TimedOut),
            // Both streams are closed: QEMU has exited (or is about to).
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }

    if let Some(killed) = ending {
        // Ignore the error: QEMU may have exited just now by itself.
        let _ = child.kill();
        child
            .wait()
            .context("could not wait for QEMU after killing it")?;
        let elapsed = start.elapsed();
        let drain_until = Instant::now() + DRAIN_LIMIT;
        while let Ok(chunk) =
            receiver.recv_timeout(drain_until.saturating_duration_since(Instant::now()))
        {
            if chunk.bytes.is_empty() {
                closed += 1;
                if closed == streams {
                    break;
                }
                continue;
            }
            collector.take(chunk);
        }
        let (lines, sent) = collector.finish(start.elapsed());
        return Ok(Capture {
            lines,
            ending: killed,
            elapsed,
            sent,
        });
    }
    let ending = Ending::Exited(Exit::from_status(
        child.wait().context("could not wait for QEMU")?,
    ));
    let elapsed = start.elapsed();
    for reader in readers {
        let _ = reader.join();
    }
    let (lines, sent) = collector.finish(elapsed);
    Ok(Capture {
        lines,
        ending,
        elapsed,
        sent,
    })
}

fn echo(stream: Stream, bytes: &[u8]) {
    // A terminal that went away is no reason to stop the run.
    let _ = match stream {
        Stream::Stdout => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(bytes).and_then(|()| stdout.flush())
        }
        Stream::Stderr => std::io::stderr().lock().write_all(bytes),
    };
}

fn spawn_reader(
    mut stream: impl Read + Send + 'static,
    which: Stream,
    start: Instant,
    sender: mpsc::Sender<Chunk>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        let closed = |sender: &mpsc::Sender<Chunk>| {
            let _ = sender.send(Chunk {
                at: start.elapsed(),
                stream: which,
                bytes: Vec::new(),
            });
        };
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => return closed(&sender),
                Ok(length) => {
                    let chunk = Chunk {
                        at: start.elapsed(),
                        stream: which,
                        bytes: buffer[..length].to_vec(),
                    };
                    if sender.send(chunk).is_err() {
                        return;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return closed(&sender),
            }
        }
    })
}

/// Writes what it is sent to QEMU's stdin, in order, until every sender is gone or QEMU
/// stops reading.
fn spawn_typist(mut stdin: ChildStdin) -> mpsc::Sender<Vec<u8>> {
    let (sender, receiver) = mpsc::channel::<Vec<u8>>();
    thread::spawn(move || {
        for text in receiver {
            if stdin.write_all(&text).and_then(|()| stdin.flush()).is_err() {
                return;
            }
        }
    });
    sender
}

/// Passes this process's stdin on, as it arrives, until it ends.
fn spawn_stdin_forwarder(typer: mpsc::Sender<Vec<u8>>) {
    thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buffer = [0u8; 4096];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => return,
                Ok(length) => {
                    if typer.send(buffer[..length].to_vec()).is_err() {
                        return;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn captures_lines_in_order_with_exit_status() {
        let capture = run(
            shell("echo one; printf 'two\\r\\n'; echo oops >&2; printf three; exit 3"),
            &Watch::default(),
        )
        .unwrap();
        assert_eq!(capture.ending, Ending::Exited(Exit::Code(3)));
        let stdout: Vec<&str> = capture
            .lines
            .iter()
            .filter(|line| line.stream == Stream::Stdout)
            .map(|line| line.text.as_str())
            .collect();
        assert_eq!(stdout, ["one", "two", "three"]);
        assert!(capture
            .lines
            .iter()
            .any(|line| line.stream == Stream::Stderr && line.text == "oops"));
        assert!(capture
            .lines
            .windows(2)
            .all(|pair| pair[0].at <= pair[1].at));
    }

    #[test]
    fn kills_on_timeout() {
        let watch = Watch {
            timeout: Some(Duration::from_millis(300)),
            ..Watch::default()
        };
        let capture = run(shell("echo started; exec sleep 30"), &watch).unwrap();
        assert_eq!(capture.ending, Ending::TimedOut);
        assert!(capture.elapsed < Duration::from_secs(10));
        assert_eq!(capture.lines[0].text, "started");
    }

    #[test]
    fn stops_when_a_line_matches() {
        let watch = Watch {
            timeout: Some(Duration::from_secs(20)),
            stop_when: Some(Regex::new(r"^ready \d+$").unwrap()),
            ..Watch::default()
        };
        let capture = run(shell("echo booting; echo 'ready 7'; exec sleep 30"), &watch).unwrap();
        assert_eq!(capture.ending, Ending::Stopped);
        assert!(capture.elapsed < Duration::from_secs(10));
        assert_eq!(
            capture
                .first_match(&Regex::new("ready").unwrap())
                .unwrap()
                .text,
            "ready 7"
        );
        assert_eq!(capture.text(), "booting\nready 7\n");
    }

    fn send(after: &str, text: &str) -> SendText {
        SendText {
            after: regex::bytes::Regex::new(after).unwrap(),
            text: text.as_bytes().to_vec(),
        }
    }

    /// A shell that prints a prompt without a newline, then echoes each line it reads until
    /// it reads `quit`.
    const PROMPTER: &str =
        "printf 'booting\\nlogin: '; while read -r line; do echo \"got $line\"; \
                            [ \"$line\" = quit ] && exit 7; printf 'next> '; done; echo eof";

    #[test]
    fn sends_are_typed_in_order_each_after_its_own_match() {
        let watch = Watch {
            timeout: Some(Duration::from_secs(20)),
            sends: vec![
                send("login: $", "root\n"),
                // Matches only output after "login: ": the prompt that follows `got root`.
                send(r"got root\r?\nnext> ", "one\n"),
                send("next> ", "quit\n"),
            ],
            ..Watch::default()
        };
        let capture = run(shell(PROMPTER), &watch).unwrap();
        assert_eq!(
            capture.ending,
            Ending::Exited(Exit::Code(7)),
            "{}",
            capture.text()
        );
        assert_eq!(capture.sent, 3);
        assert_eq!(
            capture.text(),
            "booting\nlogin: got root\nnext> got one\nnext> got quit\n"
        );
    }

    #[test]
    fn a_send_that_never_matches_types_nothing_more() {
        // After `a` the shell waits for more, and nothing more comes: it is killed at the
        // time limit.
        let watch = Watch {
            timeout: Some(Duration::from_millis(1500)),
            sends: vec![
                send("login: ", "a\n"),
                send("never", "quit\n"),
                send("next> ", "quit\n"),
            ],
            ..Watch::default()
        };
        let capture = run(shell(PROMPTER), &watch).unwrap();
        assert_eq!(capture.ending, Ending::TimedOut);
        assert_eq!(capture.sent, 1);
        assert!(
            capture.text().ends_with("got a\nnext> \n"),
            "{:?}",
            capture.text()
        );
    }

    #[test]
    fn without_sends_stdin_is_closed() {
        let capture = run(shell(PROMPTER), &Watch::default()).unwrap();
        assert_eq!(capture.ending, Ending::Exited(Exit::Code(0)));
        assert_eq!(capture.sent, 0);
        assert_eq!(capture.text(), "booting\nlogin: eof\n");
    }

    #[test]
    fn reports_a_signal() {
        let capture = run(shell("kill -9 $$"), &Watch::default()).unwrap();
        assert_eq!(capture.ending, Ending::Exited(Exit::Signal(9)));
    }
}
