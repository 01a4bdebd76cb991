//! Console output as lines: one [`LineAssembler`] per domain collects the bytes it drains
//! from the domain's `out[]` ring and hands out whole lines, which the backend prints on the
//! UART as `[<domain name>] <line>` ([`format_line`]).
//!
//! Rules (the same as the microvisor's own `console_io` output):
//!
//! - `\n` ends a line; `\r` is dropped (Linux's tty sends `\r\n`);
//! - a byte that is not printable ASCII (or tab) is shown as `?`, so a domain cannot drive
//!   the terminal with escape sequences;
//! - a partial line is flushed as it is once it holds [`PARTIAL_LINE_MAX`] bytes and more
//!   arrive, so a domain that never sends `\n` cannot make the backend buffer without end.

use alloc::vec::Vec;

/// The longest partial line kept before it is flushed without its end.
pub const PARTIAL_LINE_MAX: usize = 200;

/// What a console byte is shown as.
pub fn shown_as(byte: u8) -> u8 {
    if byte == b'\t' || (0x20..0x7f).contains(&byte) {
        byte
    } else {
        b'?'
    }
}

/// Collects one domain's output into lines.
#[derive(Debug, Default)]
pub struct LineAssembler {
    partial: Vec<u8>,
}

impl LineAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds output bytes; calls `emit` with each line completed (without its end, already
    /// made printable) and with each partial line that reached the limit.
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        for &byte in bytes {
            match byte {
                b'\n' => {
                    emit(&self.partial);
                    self.partial.clear();
                }
                b'\r' => {}
                _ => {
                    if self.partial.len() >= PARTIAL_LINE_MAX {
                        emit(&self.partial);
                        self.partial.clear();
                    }
                    self.partial.push(shown_as(byte));
                }
            }
        }
    }

    /// Hands out the partial line, if there is one (for a domain that goes away, or an
    /// attached domain's prompt).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }

    /// Whether part of a line is waiting for its end.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }
}

/// Appends `[<name>] <line>\r\n` (the UART wants `\r\n`) to `out`. `line` is expected to be
/// made printable already; `name` is shown through [`shown_as`] as well.
pub fn format_line(name: &str, line: &[u8], out: &mut Vec<u8>) {
    out.push(b'[');
    out.extend(name.bytes().map(shown_as));
    out.extend_from_slice(b"] ");
    out.extend(line.iter().copied().map(shown_as));
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    fn lines(pieces: &[&[u8]]) -> (Vec<String>, LineAssembler) {
        let mut assembler = LineAssembler::new();
        let mut out = Vec::new();
        for piece in pieces {
            assembler.push(piece, |line| {
                out.push(String::from_utf8(line.to_vec()).unwrap())
            });
        }
        (out, assembler)
    }

    #[test]
    fn lines_split_at_newlines_across_pieces() {
        let (out, assembler) = lines(&[b"hel", b"lo\r\nwor", b"ld\n\nrest"]);
        assert_eq!(out, ["hello", "world", ""]);
        assert!(assembler.has_partial());
    }

    #[test]
    fn odd_bytes_become_question_marks() {
        let (out, _) = lines(&[b"\x1b[31mred\x07\tok\xff\n"]);
        assert_eq!(out, ["?[31mred?\tok?"]);
    }

    #[test]
    fn long_partial_lines_are_flushed_at_the_limit() {
        let long = [b'x'; 2 * PARTIAL_LINE_MAX + 10];
        let (out, mut assembler) = lines(&[&long]);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|line| line.len() == PARTIAL_LINE_MAX));
        let mut rest = Vec::new();
        assembler.flush(|line| rest.push(line.len()));
        assert_eq!(rest, [10]);
        assert!(!assembler.has_partial());
    }

    #[test]
    fn a_line_of_exactly_the_limit_stays_whole() {
        let mut exact = alloc::vec![b'y'; PARTIAL_LINE_MAX];
        exact.push(b'\n');
        let (out, assembler) = lines(&[&exact]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), PARTIAL_LINE_MAX);
        assert!(!assembler.has_partial());
    }

    #[test]
    fn formatted_lines_carry_the_name_and_crlf() {
        let mut out = Vec::new();
        format_line("guest", b"hi", &mut out);
        assert_eq!(out, b"[guest] hi\r\n");
    }
}
