//! Xenbus: the device handshake over xenstore (`XEN-ABI.md` §3.4).
//!
//! Each end of a split device has a directory (front-end: `/local/domain/<f>/device/<type>/<id>`,
//! back-end: `/local/domain/<b>/backend/<type>/<f>/<id>`) whose `state` node holds a
//! [`XenbusState`] as a decimal string. An end changes its own state with a transaction that
//! reads `state` and then writes it ([`switch_state`]), and follows the other end's with a
//! watch ([`wait_for_state`]).
//!
//! Peers are found by name: the xenstore domain writes `/local/names/<name>` = domid for every
//! domain it introduces ([`lookup_domid`] waits for it with a watch).

pub use microvisor_abi::xenbus::XenbusState;

#[cfg(not(test))]
pub use self::client::*;

#[cfg(not(test))]
mod client {
    use alloc::format;
    use alloc::string::String;
    use core::sync::atomic::{AtomicU32, Ordering};

    use super::XenbusState;
    use crate::xenstore::{Client, Error, Tx};

    /// `<dir>/state`.
    pub fn state_path(dir: &str) -> String {
        format!("{dir}/state")
    }

    /// The state in `<dir>/state`. A node that is missing, unreadable or holds garbage reads
    /// as `Unknown` (as Linux does); only a broken connection is an error.
    pub fn read_state(xs: &mut Client, tx: Tx, dir: &str) -> Result<XenbusState, Error> {
        match xs.read(tx, &state_path(dir)) {
            Ok(value) => Ok(XenbusState::parse(&value)),
            Err(e @ (Error::Etimedout | Error::Eproto | Error::Enodev)) => Err(e),
            Err(_) => Ok(XenbusState::Unknown),
        }
    }

    /// Sets `<dir>/state` to `state` in a transaction that reads the node first (like
    /// Linux's `xenbus_switch_state`); the node must exist (`ENOENT` otherwise).
    pub fn switch_state(xs: &mut Client, dir: &str, state: XenbusState) -> Result<(), Error> {
        let path = state_path(dir);
        let value = format!("{}", state.as_u32());
        xs.transaction(|xs, tx| {
            xs.read(tx, &path)?;
            xs.write_str(tx, &path, &value)
        })
    }

    static TOKENS: AtomicU32 = AtomicU32::new(0);

    /// A watch token no other caller of this module uses.
    pub fn unique_token(prefix: &str) -> String {
        format!("{prefix}-{}", TOKENS.fetch_add(1, Ordering::Relaxed))
    }

    /// Waits until `<dir>/state` satisfies `pred` or until `deadline` (system time in ns;
    /// `None`: for ever), with a watch on the node; returns the state seen (`ETIMEDOUT` at
    /// the deadline).
    pub fn wait_for_state(
        xs: &mut Client,
        dir: &str,
        pred: impl Fn(XenbusState) -> bool,
        deadline: Option<u64>,
    ) -> Result<XenbusState, Error> {
        let path = state_path(dir);
        let token = unique_token("xenbus-state");
        xs.watch(&path, &token)?;
        let result = loop {
            match read_state(xs, Tx::NONE, dir) {
                Ok(state) if pred(state) => break Ok(state),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            if let Err(e) = xs.wait_watch(&token, deadline) {
                break Err(e);
            }
        };
        let _ = xs.unwatch(&path, &token);
        result
    }

    /// `/local/names/<name>`.
    pub fn name_path(name: &str) -> String {
        format!("/local/names/{name}")
    }

    /// The domid of the domain called `name`, from `/local/names/<name>`, waiting (with a
    /// watch) until it appears or until `deadline` (`None`: for ever).
    pub fn lookup_domid(xs: &mut Client, name: &str, deadline: Option<u64>) -> Result<u16, Error> {
        let path = name_path(name);
        let token = unique_token("name");
        xs.watch(&path, &token)?;
        let result = loop {
            match xs.read_u32(Tx::NONE, &path) {
                Ok(id) => break u16::try_from(id).map_err(|_| Error::Einval),
                Err(Error::Enoent | Error::Eacces | Error::Einval) => {}
                Err(e) => break Err(e),
            }
            if let Err(e) = xs.wait_watch(&token, deadline) {
                break Err(e);
            }
        };
        let _ = xs.unwatch(&path, &token);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_have_xens_numbers() {
        assert_eq!(XenbusState::Initialising.as_u32(), 1);
        assert_eq!(XenbusState::InitWait.as_u32(), 2);
        assert_eq!(XenbusState::Initialised.as_u32(), 3);
        assert_eq!(XenbusState::Connected.as_u32(), 4);
        assert_eq!(XenbusState::Closing.as_u32(), 5);
        assert_eq!(XenbusState::Closed.as_u32(), 6);
        assert_eq!(XenbusState::Reconfigured.as_u32(), 8);
        for n in 0..=8 {
            assert_eq!(XenbusState::from_u32(n).unwrap().as_u32(), n);
        }
        assert_eq!(XenbusState::from_u32(9), None);
    }

    #[test]
    fn parses_state_nodes() {
        assert_eq!(XenbusState::parse(b"4"), XenbusState::Connected);
        assert_eq!(XenbusState::parse(b"6\0"), XenbusState::Closed);
        assert_eq!(XenbusState::parse(b""), XenbusState::Unknown);
        assert_eq!(XenbusState::parse(b"9"), XenbusState::Unknown);
        assert_eq!(XenbusState::parse(b"x"), XenbusState::Unknown);
        assert_eq!(XenbusState::parse(b"-1"), XenbusState::Unknown);
        assert!(XenbusState::Closing.is_closing());
        assert!(!XenbusState::Connected.is_closing());
        assert_eq!(XenbusState::InitWait.to_string(), "InitWait (2)");
    }
}
