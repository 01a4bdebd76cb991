//! Reading a domain's command line: whitespace-separated words, each `key=value` or a bare
//! `key` (a flag). When a key appears more than once, the last occurrence wins.
//!
//! Numbers are decimal (`4096`) or hexadecimal with a `0x` prefix (`0x1000`); `_` may
//! separate digits (`1_000_000`).

use core::fmt;

/// The value of `key`: `Some("v")` for `key=v`, `Some("")` for a bare `key`, `None` if absent.
pub fn get<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    let mut found = None;
    for word in cmdline.split_ascii_whitespace() {
        match word.split_once('=') {
            Some((k, v)) if k == key => found = Some(v),
            None if word == key => found = Some(""),
            _ => {}
        }
    }
    found
}

/// Whether `key` is present as a bare word or with a true value (`1`, `true`, `yes`, `on`).
pub fn flag(cmdline: &str, key: &str) -> bool {
    matches!(get(cmdline, key), Some("" | "1" | "true" | "yes" | "on"))
}

/// Parses an unsigned number: decimal, or hexadecimal after `0x`/`0X`; `_` between digits.
pub fn parse_u64(text: &str) -> Option<u64> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') {
        return None;
    }
    let mut value: u64 = 0;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let digit = c.to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
    }
    Some(value)
}

/// A key whose value is not a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadNumber<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

impl fmt::Display for BadNumber<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command line: {}={:?} is not a number",
            self.key, self.value
        )
    }
}

/// The number under `key`, or `default` when the key is absent.
pub fn get_u64<'a>(cmdline: &'a str, key: &'a str, default: u64) -> Result<u64, BadNumber<'a>> {
    match get(cmdline, key) {
        None => Ok(default),
        Some(value) => parse_u64(value).ok_or(BadNumber { key, value }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_and_flags() {
        let line = "mode=primes limit=1000  verbose seed=0x10";
        assert_eq!(get(line, "mode"), Some("primes"));
        assert_eq!(get(line, "limit"), Some("1000"));
        assert_eq!(get(line, "verbose"), Some(""));
        assert_eq!(get(line, "missing"), None);
        assert_eq!(get(line, "lim"), None);
        assert_eq!(get(line, "limit=1000"), None);
        assert!(flag(line, "verbose"));
        assert!(!flag(line, "mode"));
        assert!(!flag(line, "missing"));
    }

    #[test]
    fn last_occurrence_wins_and_empty_values_are_kept() {
        assert_eq!(get("a=1 a=2", "a"), Some("2"));
        assert_eq!(get("a= b", "a"), Some(""));
        assert_eq!(get("k=v=w", "k"), Some("v=w"));
        assert_eq!(get("", "a"), None);
        assert_eq!(get("\tmode=x\n", "mode"), Some("x"));
    }

    #[test]
    fn parses_numbers() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("4096"), Some(4096));
        assert_eq!(parse_u64("0x1000"), Some(0x1000));
        assert_eq!(parse_u64("0XfF"), Some(255));
        assert_eq!(parse_u64("1_000_000"), Some(1_000_000));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64("18446744073709551616"), None);
        assert_eq!(parse_u64("0x1_0000_0000_0000_0000"), None);
        for bad in ["", "0x", "-1", "12a", "_1", "1_", "0x_1", " 1", "1.5"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn get_u64_uses_default_and_reports_bad_values() {
        assert_eq!(get_u64("n=5", "n", 7), Ok(5));
        assert_eq!(get_u64("", "n", 7), Ok(7));
        assert_eq!(
            get_u64("n=x", "n", 7),
            Err(BadNumber {
                key: "n",
                value: "x"
            })
        );
        assert_eq!(
            get_u64("n", "n", 7),
            Err(BadNumber {
                key: "n",
                value: ""
            })
        );
    }
}
