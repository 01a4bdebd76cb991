//! A small line buffer for console output: text collects until a newline (sent with the
//! newline) or until the buffer is full (sent as it is), so each console write carries at
//! most one line.

/// Collects bytes and hands out complete lines (or full buffers) to `sink`.
pub struct LineBuffer<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for LineBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineBuffer<N> {
    pub const fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    /// Appends `text`, calling `sink` with each completed line and each full buffer.
    pub fn push(&mut self, text: &[u8], sink: &mut impl FnMut(&[u8])) {
        for &byte in text {
            self.bytes[self.len] = byte;
            self.len += 1;
            if byte == b'\n' || self.len == N {
                self.flush(sink);
            }
        }
    }

    /// Hands out whatever is buffered, if anything.
    pub fn flush(&mut self, sink: &mut impl FnMut(&[u8])) {
        if self.len > 0 {
            sink(&self.bytes[..self.len]);
            self.len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(pieces: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut sink = |b: &[u8]| out.push(String::from_utf8(b.to_vec()).unwrap());
        let mut buf = LineBuffer::<8>::new();
        for p in pieces {
            buf.push(p.as_bytes(), &mut sink);
        }
        buf.flush(&mut sink);
        out
    }

    #[test]
    fn sends_one_write_per_line() {
        assert_eq!(collect(&["ab", "c\nde", "\n"]), ["abc\n", "de\n"]);
        assert_eq!(collect(&["x"]), ["x"]);
        assert_eq!(collect(&[]), Vec::<String>::new());
        assert_eq!(collect(&["\n\n"]), ["\n", "\n"]);
    }

    #[test]
    fn splits_lines_longer_than_the_buffer() {
        assert_eq!(collect(&["0123456789\n"]), ["01234567", "89\n"]);
        assert_eq!(collect(&["0123456\n"]), ["0123456\n"]);
        assert_eq!(collect(&["01234567\n"]), ["01234567", "\n"]);
    }
}
