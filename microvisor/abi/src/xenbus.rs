//! `enum xenbus_state` (`io/xenbus.h`): the value of a split device end's `state` node in
//! xenstore, shared by the runtime's xenbus helpers and the back-ends.

use core::fmt;

/// `enum xenbus_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum XenbusState {
    /// Also what a missing or unreadable `state` node reads as.
    Unknown = 0,
    Initialising = 1,
    /// The back-end's features are published.
    InitWait = 2,
    /// The front-end's rings are published.
    Initialised = 3,
    Connected = 4,
    Closing = 5,
    Closed = 6,
    Reconfiguring = 7,
    Reconfigured = 8,
}

impl XenbusState {
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Unknown,
            1 => Self::Initialising,
            2 => Self::InitWait,
            3 => Self::Initialised,
            4 => Self::Connected,
            5 => Self::Closing,
            6 => Self::Closed,
            7 => Self::Reconfiguring,
            8 => Self::Reconfigured,
            _ => return None,
        })
    }

    /// The state a `state` node's value names: a decimal number, surrounding NULs and
    /// whitespace ignored; `None` for anything else.
    pub fn from_decimal(value: &[u8]) -> Option<Self> {
        let text = core::str::from_utf8(value).ok()?;
        let text = text.trim_matches(|c: char| c == '\0' || c.is_ascii_whitespace());
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Self::from_u32(text.parse().ok()?)
    }

    /// As [`XenbusState::from_decimal`], with anything else read as `Unknown`.
    pub fn parse(value: &[u8]) -> Self {
        Self::from_decimal(value).unwrap_or(Self::Unknown)
    }

    /// The value written to a `state` node.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// Whether the end is going away (`Closing` or `Closed`).
    pub fn is_closing(self) -> bool {
        matches!(self, Self::Closing | Self::Closed)
    }
}

impl fmt::Display for XenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Unknown => "Unknown",
            Self::Initialising => "Initialising",
            Self::InitWait => "InitWait",
            Self::Initialised => "Initialised",
            Self::Connected => "Connected",
            Self::Closing => "Closing",
            Self::Closed => "Closed",
            Self::Reconfiguring => "Reconfiguring",
            Self::Reconfigured => "Reconfigured",
        };
        write!(f, "{name} ({})", *self as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_and_round_trip() {
        assert_eq!(
            XenbusState::from_decimal(b"4"),
            Some(XenbusState::Connected)
        );
        assert_eq!(
            XenbusState::from_decimal(b" 6\n\0"),
            Some(XenbusState::Closed)
        );
        assert_eq!(XenbusState::from_decimal(b"9"), None);
        assert_eq!(XenbusState::from_decimal(b"-1"), None);
        assert_eq!(XenbusState::from_decimal(b""), None);
        assert_eq!(XenbusState::parse(b"x"), XenbusState::Unknown);
        for value in 0..9 {
            assert_eq!(XenbusState::from_u32(value).unwrap().as_u32(), value);
        }
        assert!(XenbusState::Closing.is_closing() && !XenbusState::Connected.is_closing());
    }
}
