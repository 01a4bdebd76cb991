//! The attach line: a raw console on the second UART (COM2), for the host's `xl console`.
//!
//! COM1 carries the labelled log of every domain (see [`crate::lines`]); COM2 carries one
//! domain's console as a raw byte stream, both ways, as Xen's `xl console` gives it: escape
//! sequences, Ctrl-C, tabs and partial lines pass unchanged, so a shell's line editing and
//! full-screen programs work. The protocol on COM2:
//!
//! | from | bytes | meaning |
//! |---|---|---|
//! | client | `attach <name>\n` | attach to that domain (only while not attached; `\r` is ignored) |
//! | backend | `ok <name>\n` | attached: from now on the domain's output bytes, exactly as it wrote them |
//! | backend | `error: <reason>\n` | not attached (no such domain, an unknown or overlong request) |
//! | client | any byte but Ctrl-] | while attached: delivered to the domain's console input |
//! | client | Ctrl-] (0x1d) | while attached: detach (nothing is answered); otherwise: forget a partial request |
//! | backend | `\r\n[domain <name> is gone]\r\n` | the attached domain went away: detached |
//!
//! A client starts with Ctrl-] before its `attach`, so that a client that died while
//! attached (and never sent its Ctrl-]) leaves nothing behind. One client at a time: the
//! UART has one line, and QEMU's socket takes one connection at a time.
//!
//! Output waits in a queue of at most [`OUTPUT_MAX`] bytes while the UART cannot take it
//! (a client that does not read); what does not fit is dropped and counted, never waited
//! for, so a slow client stalls neither the backend nor any domain. The state machine
//! knows domains only through a lookup the caller passes in, so it is tested on the host.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Longest request line kept.
pub const REQUEST_MAX: usize = 80;

/// Most output bytes queued for the client; more are dropped (and counted).
pub const OUTPUT_MAX: usize = 16 * 1024;

/// The byte that detaches (Ctrl-], as in `xl console`).
pub const DETACH: u8 = 0x1d;

/// What a piece of client input or a departure did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Put these bytes into the domain's console input.
    Deliver {
        /// The attached domain.
        domid: u16,
        /// The bytes, as the client sent them.
        bytes: Vec<u8>,
    },
    /// A client attached to this domain.
    Attached {
        /// Its id.
        domid: u16,
        /// Its name.
        name: String,
    },
    /// The session with this domain ended: the client detached (`gone` false) or the
    /// domain went away (`gone` true).
    Ended {
        /// Its id.
        domid: u16,
        /// Its name.
        name: String,
        /// The domain went away.
        gone: bool,
    },
}

/// The attach line's state: the session, the request being read, the output queue.
#[derive(Debug, Default)]
pub struct AttachLine {
    /// The attached domain (id, name), if any.
    session: Option<(u16, String)>,
    request: Vec<u8>,
    /// The request grew past [`REQUEST_MAX`]: refused at its end.
    overlong: bool,
    out: VecDeque<u8>,
    /// Output bytes dropped for want of room, in all.
    dropped: u64,
    /// Of those, not yet reported.
    unreported: u64,
}

impl AttachLine {
    /// Not attached, nothing queued.
    pub fn new() -> Self {
        Self::default()
    }

    /// The attached domain, if any.
    pub fn attached(&self) -> Option<u16> {
        self.session.as_ref().map(|(domid, _)| *domid)
    }

    /// Bytes waiting for the UART.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Output bytes dropped so far because the client did not take them.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Output bytes dropped since the last call (for a report line), if any.
    pub fn take_unreported_drops(&mut self) -> Option<u64> {
        (self.unreported > 0).then(|| core::mem::take(&mut self.unreported))
    }

    /// Handles bytes the client sent. `lookup` finds a served domain by name.
    pub fn feed(&mut self, bytes: &[u8], lookup: impl Fn(&str) -> Option<u16>) -> Vec<Event> {
        let mut events = Vec::new();
        let mut run: Vec<u8> = Vec::new();
        for &byte in bytes {
            if let Some((domid, _)) = &self.session {
                let domid = *domid;
                if byte != DETACH {
                    run.push(byte);
                    continue;
                }
                if !run.is_empty() {
                    events.push(Event::Deliver {
                        domid,
                        bytes: core::mem::take(&mut run),
                    });
                }
                let (domid, name) = self.session.take().expect("attached");
                // The client left: what it did not read is of no use to the next one.
                self.out.clear();
                events.push(Event::Ended {
                    domid,
                    name,
                    gone: false,
                });
                continue;
            }
            match byte {
                b'\n' => {
                    if let Some(event) = self.request_done(&lookup) {
                        events.push(event);
                    }
                }
                DETACH => {
                    self.request.clear();
                    self.overlong = false;
                }
                0x20..=0x7e => {
                    if self.request.len() < REQUEST_MAX {
                        self.request.push(byte);
                    } else {
                        self.overlong = true;
                    }
                }
                // `\r` and other control bytes are not part of a request.
                _ => {}
            }
        }
        if let (false, Some(domid)) = (run.is_empty(), self.attached()) {
            events.push(Event::Deliver { domid, bytes: run });
        }
        events
    }

    fn request_done(&mut self, lookup: &impl Fn(&str) -> Option<u16>) -> Option<Event> {
        let line = core::mem::take(&mut self.request);
        if core::mem::take(&mut self.overlong) {
            self.reply(&format!(
                "error: request too long (at most {REQUEST_MAX} bytes)\n"
            ));
            return None;
        }
        // Only printable ASCII was kept.
        let text = core::str::from_utf8(&line).unwrap_or("");
        let mut words = text.split_ascii_whitespace();
        match (words.next(), words.next(), words.next()) {
            (None, _, _) => None,
            (Some("attach"), Some(name), None) => match lookup(name) {
                Some(domid) => {
                    self.reply(&format!("ok {name}\n"));
                    self.session = Some((domid, String::from(name)));
                    Some(Event::Attached {
                        domid,
                        name: String::from(name),
                    })
                }
                None => {
                    self.reply(&format!("error: no domain named {name}\n"));
                    None
                }
            },
            _ => {
                self.reply(&format!(
                    "error: unknown request `{text}` (send `attach NAME`)\n"
                ));
                None
            }
        }
    }

    /// Queues output of domain `domid` (ignored unless it is the attached one).
    pub fn output(&mut self, domid: u16, bytes: &[u8]) {
        if self.attached() != Some(domid) {
            return;
        }
        let room = OUTPUT_MAX.saturating_sub(self.out.len());
        let taken = bytes.len().min(room);
        self.out.extend(&bytes[..taken]);
        self.count_drops(bytes.len() - taken);
    }

    /// Domain `domid` went away: if it is the attached one, the client is told and the
    /// session ends.
    pub fn gone(&mut self, domid: u16) -> Option<Event> {
        if self.attached() != Some(domid) {
            return None;
        }
        let (domid, name) = self.session.take()?;
        self.reply(&format!("\r\n[domain {name} is gone]\r\n"));
        Some(Event::Ended {
            domid,
            name,
            gone: true,
        })
    }

    /// Moves queued output to the UART: `write` takes what it can without waiting and says
    /// how much.
    pub fn flush(&mut self, mut write: impl FnMut(&[u8]) -> usize) {
        loop {
            let (first, _) = self.out.as_slices();
            if first.is_empty() {
                return;
            }
            let count = write(first).min(first.len());
            if count == 0 {
                return;
            }
            self.out.drain(..count);
        }
    }

    /// Queues one of the backend's own lines; it always fits (the oldest output makes room).
    fn reply(&mut self, text: &str) {
        let excess = (self.out.len() + text.len()).saturating_sub(OUTPUT_MAX);
        self.out.drain(..excess.min(self.out.len()));
        self.count_drops(excess);
        self.out.extend(text.as_bytes());
    }

    fn count_drops(&mut self, count: usize) {
        self.dropped += count as u64;
        self.unreported += count as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn lookup(name: &str) -> Option<u16> {
        match name {
            "guest" => Some(3),
            "other" => Some(4),
            _ => None,
        }
    }

    /// Everything queued for the UART, taken.
    fn sent(line: &mut AttachLine) -> Vec<u8> {
        let mut out = Vec::new();
        line.flush(|bytes| {
            out.extend_from_slice(bytes);
            bytes.len()
        });
        out
    }

    fn attached(domid: u16, name: &str) -> Event {
        Event::Attached {
            domid,
            name: String::from(name),
        }
    }

    #[test]
    fn attach_is_answered_and_bytes_pass_raw_both_ways() {
        let mut line = AttachLine::new();
        assert_eq!(line.feed(b"attach guest\n", lookup), [attached(3, "guest")]);
        assert_eq!(sent(&mut line), b"ok guest\n");
        assert_eq!(line.attached(), Some(3));
        // Control bytes, escape sequences, `\r` and bytes that are not ASCII pass as they are.
        let typed = b"ls\t\x03\x1b[A\r\xff";
        assert_eq!(
            line.feed(typed, lookup),
            [Event::Deliver {
                domid: 3,
                bytes: typed.to_vec()
            }]
        );
        line.output(3, b"guest# \x1b[6n\tpartial");
        // Another domain's output is not this session's.
        line.output(4, b"noise");
        assert_eq!(sent(&mut line), b"guest# \x1b[6n\tpartial");
    }

    #[test]
    fn bytes_after_the_request_in_the_same_piece_are_delivered() {
        let mut line = AttachLine::new();
        assert_eq!(
            line.feed(b"\x1dattach guest\r\nuname\r", lookup),
            [
                attached(3, "guest"),
                Event::Deliver {
                    domid: 3,
                    bytes: b"uname\r".to_vec()
                }
            ]
        );
    }

    #[test]
    fn ctrl_bracket_detaches_and_a_new_attach_works() {
        let mut line = AttachLine::new();
        line.feed(b"attach guest\n", lookup);
        line.output(3, b"unread");
        assert_eq!(
            line.feed(b"ab\x1dattach other\n", lookup),
            [
                Event::Deliver {
                    domid: 3,
                    bytes: b"ab".to_vec()
                },
                Event::Ended {
                    domid: 3,
                    name: String::from("guest"),
                    gone: false
                },
                attached(4, "other"),
            ]
        );
        // The old session's unread output went with it.
        assert_eq!(sent(&mut line), b"ok other\n");
        // Ctrl-] while not attached only forgets a partial request.
        line.feed(b"\x1d", lookup);
        assert_eq!(
            line.feed(b"attac\x1dattach guest\n", lookup),
            [attached(3, "guest")]
        );
    }

    #[test]
    fn errors_are_answered_and_leave_it_detached() {
        let mut line = AttachLine::new();
        assert_eq!(line.feed(b"attach nobody\n", lookup), []);
        assert_eq!(sent(&mut line), b"error: no domain named nobody\n");
        assert_eq!(line.feed(b"attach\nhello there\n\n\r\n", lookup), []);
        assert_eq!(
            sent(&mut line),
            b"error: unknown request `attach` (send `attach NAME`)\n\
              error: unknown request `hello there` (send `attach NAME`)\n"
                .to_vec()
        );
        let long = vec![b'a'; REQUEST_MAX + 5];
        assert_eq!(line.feed(&long, lookup), []);
        assert_eq!(line.feed(b"\n", lookup), []);
        assert_eq!(
            sent(&mut line),
            b"error: request too long (at most 80 bytes)\n"
        );
        assert_eq!(line.attached(), None);
        // Not attached: no output is queued, typed bytes go nowhere.
        line.output(3, b"x");
        assert_eq!(line.queued(), 0);
        assert_eq!(line.feed(b"attach guest\n", lookup), [attached(3, "guest")]);
    }

    #[test]
    fn a_departed_domain_ends_the_session_with_a_last_line() {
        let mut line = AttachLine::new();
        assert_eq!(line.gone(3), None);
        line.feed(b"attach guest\n", lookup);
        sent(&mut line);
        assert_eq!(line.gone(4), None);
        assert_eq!(
            line.gone(3),
            Some(Event::Ended {
                domid: 3,
                name: String::from("guest"),
                gone: true
            })
        );
        assert_eq!(sent(&mut line), b"\r\n[domain guest is gone]\r\n");
        // Detached: input is a request again.
        assert_eq!(line.feed(b"x\n", lookup), []);
    }

    #[test]
    fn a_client_that_does_not_read_loses_output_never_blocks() {
        let mut line = AttachLine::new();
        line.feed(b"attach guest\n", lookup);
        // The UART takes nothing (the client's socket is full).
        line.flush(|_| 0);
        let chunk = vec![b'x'; 1000];
        for _ in 0..20 {
            line.output(3, &chunk);
        }
        assert_eq!(line.queued(), OUTPUT_MAX);
        let expected = 20 * 1000 + "ok guest\n".len() as u64 - OUTPUT_MAX as u64;
        assert_eq!(line.dropped(), expected);
        assert_eq!(line.take_unreported_drops(), Some(expected));
        assert_eq!(line.take_unreported_drops(), None);
        // A slow UART takes a few bytes at a time; the rest stays in order.
        let mut out = Vec::new();
        line.flush(|bytes| {
            let count = bytes.len().min(7);
            out.extend_from_slice(&bytes[..count]);
            if out.len() >= 21 {
                0
            } else {
                count
            }
        });
        assert_eq!(out.len(), 21);
        // The departure line always gets in, in place of the oldest output.
        line.gone(3);
        let rest = sent(&mut line);
        assert!(rest.len() <= OUTPUT_MAX);
        assert!(rest.ends_with(b"\r\n[domain guest is gone]\r\n"));
    }
}
