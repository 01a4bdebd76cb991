//! Runs QEMU and captures its output line by line, each line stamped with the time since
//! QEMU was spawned. Optionally echoes the lines as they arrive, stops QEMU once a line matches
//! a pattern, and kills it when a time limit runs out.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
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

/// How to watch a run.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    /// Kill QEMU after this long.
    pub timeout: Option<Duration>,
    /// Kill QEMU once a line matches this.
    pub stop_when: Option<Regex>,
    /// Print each line to the terminal as it arrives (stdout lines to stdout, stderr to stderr).
    pub echo: bool,
}

/// How long to keep collecting output after QEMU was killed.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Spawns `command` (stdin closed, stdout and stderr captured) and watches it to the end.
pub fn run(mut command: Command, watch: &Watch) -> Result<Capture> {
    command
        .stdin(Stdio::null())
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
    drop(sender);

    let deadline = watch.timeout.map(|timeout| start + timeout);
    let mut lines = Vec::new();
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
            Ok(line) => {
                let stop = watch
                    .stop_when
                    .as_ref()
                    .is_some_and(|pattern| pattern.is_match(&line.text));
                echo(watch, &line);
                lines.push(line);
                if stop {
                    ending = Some(Ending::Stopped);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => ending = Some(Ending::TimedOut),
            // Both streams are closed: QEMU has exited (or is about to).
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }

    let ending = match ending {
        Some(killed) => {
            // Ignore the error: QEMU may have exited just now by itself.
            let _ = child.kill();
            child
                .wait()
                .context("could not wait for QEMU after killing it")?;
            let elapsed = start.elapsed();
            let drain_until = Instant::now() + DRAIN_LIMIT;
            while let Ok(line) =
                receiver.recv_timeout(drain_until.saturating_duration_since(Instant::now()))
            {
                echo(watch, &line);
                lines.push(line);
            }
            return Ok(Capture {
                lines,
                ending: killed,
                elapsed,
            });
        }
        None => Ending::Exited(Exit::from_status(
            child.wait().context("could not wait for QEMU")?,
        )),
    };
    let elapsed = start.elapsed();
    for reader in readers {
        let _ = reader.join();
    }
    Ok(Capture {
        lines,
        ending,
        elapsed,
    })
}

fn echo(watch: &Watch, line: &Line) {
    if watch.echo {
        match line.stream {
            Stream::Stdout => println!("{}", line.text),
            Stream::Stderr => eprintln!("{}", line.text),
        }
    }
}

fn spawn_reader(
    stream: impl Read + Send + 'static,
    which: Stream,
    start: Instant,
    sender: mpsc::Sender<Line>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match reader.read_until(b'\n', &mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let at = start.elapsed();
                    let text = String::from_utf8_lossy(&buffer)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if sender
                        .send(Line {
                            at,
                            stream: which,
                            text,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
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
            echo: false,
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

    #[test]
    fn reports_a_signal() {
        let capture = run(shell("kill -9 $$"), &Watch::default()).unwrap();
        assert_eq!(capture.ending, Ending::Exited(Exit::Signal(9)));
    }
}
