//! A domain's `vif` list: the network interfaces the guest sees, each a xen-netfront device
//! that the network backend of a driver domain bridges to its NIC and its other vifs.
//!
//! Each item is an interface specification in the syntax of xl's network configuration:
//! `key=value` parameters separated by commas, in any order, each given once; blanks around
//! them are ignored; an empty item is an interface with every default.
//!
//! ```text
//! mac=00:16:3e:01:02:03, bridge=xenbr0, backend=netback
//! bridge=dmz
//! ''
//! ```
//!
//! | parameter | value | default |
//! |---|---|---|
//! | `mac` | six hex bytes separated by `:`, unicast (bit 0 of the first byte clear), not all zero | Xen's `00:16:3e` prefix and three bytes derived from the domain's name and the interface's index, the same in every build and boot |
//! | `bridge` | 1 to 15 of `A-Z a-z 0-9 _ . -` | `xenbr0` |
//! | `backend` | the name of the driver domain that bridges it | the system's `net_backend` |
//! | `type` | `vif` (`ioemu` is refused: a PVH guest has no emulated NIC) | `vif` |
//!
//! The interface's handle (its number in the guest, `vif-<handle>`, eth<handle> for
//! Linux when it has no other NIC) is its index in the list. Checked here, for one file: each
//! specification, at most [`MAX_VIFS`] interfaces. Backends, addresses used twice in the
//! system and the xenstore domain's command line are checked when the system is compiled
//! (see `vifs`).

use std::path::Path;

use service_common::devices::is_bridge_name;
use service_common::mac::Mac;

use crate::disk::is_domain_name;
use crate::error::{ManifestError, Problem, VifDefect};
use crate::syntax::{ListItem, Setting};

/// The most network interfaces one domain may have.
pub const MAX_VIFS: usize = 8;
/// The bridge of a vif that names none (xl's default too).
pub const DEFAULT_BRIDGE: &str = "xenbr0";
/// xl vif parameters that are not supported here.
const UNSUPPORTED_KEYS: &[&str] = &[
    "ip",
    "script",
    "vifname",
    "rate",
    "gatewaydev",
    "gatewayname",
    "forwarddev",
    "accel",
    "devid",
    "mtu",
    "trusted",
    "untrusted",
    "model",
    "powerup",
    "backend_domid",
];
const BLANKS: [char; 2] = [' ', '\t'];

/// One item of `vif`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VifEntry {
    /// Its index in the list: the handle the guest sees.
    pub handle: u32,
    /// `mac=`; `None` for the stable default (see [`VifEntry::mac`]).
    pub given_mac: Option<Mac>,
    pub bridge: String,
    /// `backend=`; `None` for the system's `net_backend`.
    pub backend: Option<String>,
    /// The specification as written and its line, for messages.
    pub text: String,
    pub line: usize,
}

impl VifEntry {
    /// The interface's address: `mac=`, or the stable one for `domain`'s interface.
    pub fn mac(&self, domain: &str) -> Mac {
        self.given_mac
            .unwrap_or_else(|| Mac::for_domain(domain, self.handle))
    }

    /// An error about this interface, in the domain file `file`.
    pub(crate) fn error(&self, file: &Path, defect: VifDefect) -> ManifestError {
        vif_error(file, self.line, &self.text, defect)
    }
}

fn vif_error(file: &Path, line: usize, text: &str, defect: VifDefect) -> ManifestError {
    let problem = Problem::Vif {
        spec: format!("{text:?}"),
        defect: Box::new(defect),
    };
    ManifestError::new(file, Some(line), Some("vif"), problem)
}

/// `vif`: a list of interface specifications, at most [`MAX_VIFS`].
pub(crate) fn vifs(file: &Path, setting: &Setting) -> Result<Vec<VifEntry>, ManifestError> {
    let items = setting.list(
        file,
        "a list of network interface specifications, such as [ \"mac=00:16:3e:01:02:03,bridge=xenbr0\" ]",
    )?;
    if items.len() > MAX_VIFS {
        let problem = Problem::TooManyVifs {
            count: items.len(),
            max: MAX_VIFS,
        };
        return Err(setting.error(file, problem));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            vif(index as u32, item).map_err(|defect| vif_error(file, item.line, &item.text, defect))
        })
        .collect()
}

fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// One interface specification.
fn vif(handle: u32, item: &ListItem) -> Result<VifEntry, VifDefect> {
    let (mut mac, mut bridge, mut backend, mut kind) = (None, None, None, None);
    for part in item.text.split(',') {
        let part = part.trim_matches(BLANKS);
        if part.is_empty() {
            continue;
        }
        let Some((key, value)) = part.split_once('=') else {
            return Err(VifDefect::NotKeyValue {
                found: quoted(part),
            });
        };
        let (key, value) = (key.trim_matches(BLANKS), value.trim_matches(BLANKS));
        let (parameter, slot) = match key {
            "mac" => ("mac", &mut mac),
            "bridge" => ("bridge", &mut bridge),
            "backend" => ("backend", &mut backend),
            "type" => ("type", &mut kind),
            _ if UNSUPPORTED_KEYS.contains(&key) => {
                return Err(VifDefect::UnsupportedParameter {
                    parameter: format!("{key}="),
                })
            }
            _ => {
                return Err(VifDefect::UnknownParameter {
                    key: key.to_owned(),
                })
            }
        };
        if slot.is_some() {
            return Err(VifDefect::ParameterTwice { parameter });
        }
        *slot = Some(value);
    }
    match kind {
        None | Some("vif" | "") => {}
        Some("ioemu") => return Err(VifDefect::Ioemu),
        Some(other) => {
            return Err(VifDefect::BadType {
                found: quoted(other),
            })
        }
    }
    let given_mac = match mac.filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => {
            let found = quoted(text);
            let parsed = Mac::parse(text).ok_or(VifDefect::BadMac {
                found: found.clone(),
            })?;
            if parsed.is_group() {
                return Err(VifDefect::GroupMac { found });
            }
            if parsed.0 == [0; 6] {
                return Err(VifDefect::ZeroMac { found });
            }
            Some(parsed)
        }
    };
    let bridge = match bridge.filter(|text| !text.is_empty()) {
        None => DEFAULT_BRIDGE.to_owned(),
        Some(name) if is_bridge_name(name) => name.to_owned(),
        Some(other) => {
            return Err(VifDefect::BadBridge {
                found: quoted(other),
            })
        }
    };
    let backend = match backend.filter(|text| !text.is_empty()) {
        None => None,
        Some(name) if is_domain_name(name) => Some(name.to_owned()),
        Some(other) => {
            return Err(VifDefect::BadBackendName {
                found: quoted(other),
            })
        }
    };
    Ok(VifEntry {
        handle,
        given_mac,
        bridge,
        backend,
        text: item.text.clone(),
        line: item.line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(text: &str) -> ListItem {
        ListItem {
            text: text.into(),
            line: 7,
        }
    }

    fn refused(text: &str) -> String {
        let error = vif(0, &item(text)).unwrap_err();
        vif_error(Path::new("linux.cfg"), 7, text, error).to_string()
    }

    #[test]
    fn every_parameter_is_read_and_the_defaults_fill_in() {
        let entry = vif(
            2,
            &item(" mac=00:16:3E:0a:0b:0c , bridge=dmz,backend=net.1, type=vif"),
        )
        .unwrap();
        assert_eq!(
            entry.given_mac,
            Some(Mac([0, 0x16, 0x3e, 0x0a, 0x0b, 0x0c]))
        );
        assert_eq!(
            (entry.bridge.as_str(), entry.backend.as_deref()),
            ("dmz", Some("net.1"))
        );
        assert_eq!(entry.handle, 2);
        let entry = vif(1, &item("")).unwrap();
        assert_eq!(
            (
                entry.given_mac,
                entry.bridge.as_str(),
                entry.backend.as_deref()
            ),
            (None, "xenbr0", None)
        );
        // The default address is stable and Xen's.
        assert_eq!(entry.mac("linux"), Mac::for_domain("linux", 1));
        assert_eq!(&entry.mac("linux").0[..3], &[0x00, 0x16, 0x3e]);
        assert_ne!(entry.mac("linux"), entry.mac("other"));
    }

    #[test]
    fn each_defect_is_an_error_on_the_line_and_key() {
        let message = refused("mac=01:00:5e:00:00:01");
        assert!(message.starts_with("linux.cfg:7: key `vif`: \"mac=01:00:5e:00:00:01\": mac \"01:00:5e:00:00:01\" is a group"), "{message}");
        assert!(refused("mac=00:16:3e:00:00").contains("is not six hex bytes"));
        assert!(refused("mac=00:00:00:00:00:00").contains("all zeroes"));
        assert!(refused("bridge=a-very-long-bridge-name").contains("not a bridge name"));
        assert!(refused("backend=net back").contains("not a domain name"));
        assert!(refused("type=ioemu").contains("no emulated NIC"));
        assert!(refused("type=tap").contains("type \"tap\" is not known"));
        assert!(refused("ip=10.0.0.2").contains("`ip=` is an xl vif parameter not supported here"));
        assert!(refused("colour=blue").contains("unknown parameter `colour=`"));
        assert!(refused("bridge=a,bridge=b").contains("`bridge=` is given twice"));
        assert!(refused("xenbr0").contains("is not a parameter"));
    }
}
