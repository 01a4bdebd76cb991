//! Keyboard input from the UART, like `xl console`: the backend starts in command mode,
//! where typed bytes form a command line; `attach <name>` + Enter sends every later byte
//! to that domain's console, until Ctrl-] (0x1d) comes back to command mode.
//!
//! | mode | byte | effect |
//! |---|---|---|
//! | command | printable | appended to the command line (at most [`COMMAND_MAX`] bytes; more is an error at Enter) |
//! | command | backspace (0x08, 0x7f) | removes the last byte of the command line |
//! | command | Enter (`\r` or `\n`) | runs the command line: `attach <name>`, `list`, `help`; an empty line does nothing |
//! | command | anything else | ignored |
//! | attached | Ctrl-] (0x1d) | back to command mode: `[console] detached` |
//! | attached | any other | delivered to the attached domain's `in[]` ring |
//!
//! Nothing typed in command mode is echoed (the backend shows only domains' lines and its
//! own `[console] ...` answers). The state machine knows domains only through a lookup the
//! caller passes in, so it is tested on the host.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Longest command line kept.
pub const COMMAND_MAX: usize = 64;

/// The byte that leaves an attached console (Ctrl-]).
pub const DETACH: u8 = 0x1d;

/// What one input byte does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Put `byte` into domain `domid`'s `in[]` ring.
    Deliver {
        /// The attached domain.
        domid: u16,
        /// The byte.
        byte: u8,
    },
    /// Print this line (without its end) on the UART.
    Say(String),
}

/// Where input goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Typed bytes form commands.
    Command,
    /// Typed bytes go to this domain.
    Attached {
        /// Its id.
        domid: u16,
        /// Its name, for messages.
        name: String,
    },
}

/// The input state machine.
#[derive(Debug)]
pub struct Input {
    mode: Mode,
    line: Vec<u8>,
    /// The command line grew past [`COMMAND_MAX`]: refused at Enter.
    overlong: bool,
}

impl Default for Input {
    fn default() -> Self {
        Self::new()
    }
}

impl Input {
    /// In command mode with an empty line.
    pub fn new() -> Self {
        Self {
            mode: Mode::Command,
            line: Vec::new(),
            overlong: false,
        }
    }

    /// The current mode.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Handles one byte from the UART. `lookup` finds a served domain by name; `names`
    /// lists the served domains (for `list`).
    pub fn feed(
        &mut self,
        byte: u8,
        lookup: impl Fn(&str) -> Option<u16>,
        names: impl Fn() -> Vec<String>,
    ) -> Option<Effect> {
        if let Mode::Attached { domid, .. } = self.mode {
            if byte == DETACH {
                self.mode = Mode::Command;
                return Some(Effect::Say(String::from("[console] detached")));
            }
            return Some(Effect::Deliver { domid, byte });
        }
        match byte {
            b'\r' | b'\n' => self.run(lookup, names),
            0x08 | 0x7f => {
                self.line.pop();
                None
            }
            0x20..=0x7e => {
                if self.line.len() < COMMAND_MAX {
                    self.line.push(byte);
                } else {
                    self.overlong = true;
                }
                None
            }
            _ => None,
        }
    }

    /// Leaves attached mode if `domid` is the attached domain (it went away).
    pub fn forget(&mut self, domid: u16) -> Option<Effect> {
        match &self.mode {
            Mode::Attached {
                domid: attached,
                name,
            } if *attached == domid => {
                let line = format!("[console] {name} went away; detached");
                self.mode = Mode::Command;
                Some(Effect::Say(line))
            }
            _ => None,
        }
    }

    fn run(
        &mut self,
        lookup: impl Fn(&str) -> Option<u16>,
        names: impl Fn() -> Vec<String>,
    ) -> Option<Effect> {
        let line = core::mem::take(&mut self.line);
        if core::mem::take(&mut self.overlong) {
            return Some(Effect::Say(format!(
                "[console] command too long (at most {COMMAND_MAX} bytes)"
            )));
        }
        // Only printable ASCII was kept, so this cannot fail.
        let text = core::str::from_utf8(&line).unwrap_or("");
        let mut words = text.split_ascii_whitespace();
        let reply = match (words.next(), words.next(), words.next()) {
            (None, _, _) => return None,
            (Some("attach"), Some(name), None) => match lookup(name) {
                Some(domid) => {
                    self.mode = Mode::Attached {
                        domid,
                        name: String::from(name),
                    };
                    format!("[console] attached to {name}; Ctrl-] to leave")
                }
                None => format!("[console] no domain named {name}"),
            },
            (Some("list"), None, _) => format!("[console] domains: {}", names().join(" ")),
            (Some("help"), None, _) => String::from(
                "[console] commands: attach <name>, list, help; Ctrl-] leaves a console",
            ),
            _ => format!("[console] unknown command: {text} (try help)"),
        };
        Some(Effect::Say(reply))
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

    fn names() -> Vec<String> {
        vec![String::from("guest"), String::from("other")]
    }

    fn type_in(input: &mut Input, bytes: &[u8]) -> Vec<Effect> {
        bytes
            .iter()
            .filter_map(|&byte| input.feed(byte, lookup, names))
            .collect()
    }

    fn say(text: &str) -> Effect {
        Effect::Say(String::from(text))
    }

    #[test]
    fn attach_deliver_detach() {
        let mut input = Input::new();
        assert_eq!(
            type_in(&mut input, b"attach guest\r"),
            [say("[console] attached to guest; Ctrl-] to leave")]
        );
        assert_eq!(
            type_in(&mut input, b"ls\r"),
            [
                Effect::Deliver {
                    domid: 3,
                    byte: b'l'
                },
                Effect::Deliver {
                    domid: 3,
                    byte: b's'
                },
                Effect::Deliver {
                    domid: 3,
                    byte: b'\r'
                },
            ]
        );
        // Control bytes other than Ctrl-] pass through to the domain.
        assert_eq!(
            type_in(&mut input, &[0x03]),
            [Effect::Deliver {
                domid: 3,
                byte: 0x03
            }]
        );
        assert_eq!(type_in(&mut input, &[DETACH]), [say("[console] detached")]);
        assert_eq!(*input.mode(), Mode::Command);
        // Back in command mode: typing is not delivered.
        assert_eq!(type_in(&mut input, b"ls"), []);
    }

    #[test]
    fn command_mode_shows_nothing_until_enter() {
        let mut input = Input::new();
        assert_eq!(type_in(&mut input, b"attach oth"), []);
        assert_eq!(
            type_in(&mut input, b"er\n"),
            [say("[console] attached to other; Ctrl-] to leave")]
        );
    }

    #[test]
    fn crlf_and_empty_lines_do_nothing_extra() {
        let mut input = Input::new();
        assert_eq!(type_in(&mut input, b"\r\n\r\n  \r"), []);
        assert_eq!(
            type_in(&mut input, b"list\r\n"),
            [say("[console] domains: guest other")]
        );
    }

    #[test]
    fn backspace_edits_the_line() {
        let mut input = Input::new();
        assert_eq!(
            type_in(&mut input, b"attach guesx\x7fT\x08t\r"),
            [say("[console] attached to guest; Ctrl-] to leave")]
        );
    }

    #[test]
    fn mistakes_are_answered() {
        let mut input = Input::new();
        assert_eq!(
            type_in(&mut input, b"attach nobody\r"),
            [say("[console] no domain named nobody")]
        );
        assert_eq!(
            type_in(&mut input, b"attach\r"),
            [say("[console] unknown command: attach (try help)")]
        );
        assert_eq!(
            type_in(&mut input, b"frobnicate\r"),
            [say("[console] unknown command: frobnicate (try help)")]
        );
        assert_eq!(*input.mode(), Mode::Command);
        let long = [b'a'; COMMAND_MAX + 10];
        assert_eq!(type_in(&mut input, &long), []);
        assert_eq!(
            type_in(&mut input, b"\r"),
            [say("[console] command too long (at most 64 bytes)")]
        );
        // The next line starts clean.
        assert_eq!(type_in(&mut input, b"attach guest\r").len(), 1);
        assert!(matches!(input.mode(), Mode::Attached { domid: 3, .. }));
    }

    #[test]
    fn non_printable_bytes_are_ignored_in_command_mode() {
        let mut input = Input::new();
        assert_eq!(type_in(&mut input, b"att\x1b\x1dach\xffguest"), []);
        assert_eq!(
            type_in(&mut input, b"\r"),
            [say("[console] unknown command: attachguest (try help)")]
        );
    }

    #[test]
    fn a_vanished_domain_detaches_only_if_attached() {
        let mut input = Input::new();
        assert_eq!(input.forget(3), None);
        type_in(&mut input, b"attach guest\r");
        assert_eq!(input.forget(4), None);
        assert_eq!(
            input.forget(3),
            Some(say("[console] guest went away; detached"))
        );
        assert_eq!(*input.mode(), Mode::Command);
    }
}
