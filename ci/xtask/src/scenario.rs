//! QEMU test scenarios: one directory each under `ci/scenarios/`, holding a system manifest
//! (`system.cfg` and its domain files) and `scenario.toml`, which says how to judge the run.
//!
//! ```toml
//! description = "one line: what this proves"
//! timeout_secs = 120          # hard limit on the run
//! exit = "poweroff"           # "poweroff" | "any" | "stopped"
//! stop_when = "regex"         # only with exit = "stopped": kill QEMU once a line matches
//! expect = ["regex", ...]     # each must match some line
//! expect_in_order = ["regex", ...]  # must match lines in this order
//! forbid = ["regex", ...]     # none may match any line ("PANIC" is always forbidden)
//! [[count]]                   # one capture group, parsed as an integer within [min, max]
//! regex = "..."
//! min = 1
//! max = 100
//! pick = "every"              # which matching lines must be in range: every | any | first | last
//! qemu_memory_mib = 2048      # the QEMU machine's memory (default 512)
//! [disk]                      # a virtio-blk disk at PCI 00:03.0 (see `Disk`)
//! size_mib = 64
//! [net]                       # a virtio-net NIC at PCI 00:04.0 on QEMU's user network
//! exchange_port = 7           # the guest's echo server (TCP), reached by a forwarded host port
//! exchange_after = 'regex'    # once a line matches, the runner exchanges with it:
//! exchange_mib = 16           # this much each way, checked; adds an `xtask: tcp exchange` line
//! [[send]]                    # type into the serial console, in order:
//! after = 'guest: shell ready'  # once the serial output since the previous send's match
//!                             # matches this (across lines; a prompt needs no newline),
//! text = "uname -r\n"         # write this (TOML escapes: \n, \t, \u001d for Ctrl-])
//! ```
//!
//! Regexes use the `regex` crate's syntax and are not anchored: they match anywhere in a line
//! (`send.after`: anywhere in the output). Write them as TOML literal strings ('...') so
//! backslashes need no escaping; write `text` as a basic string ("...") for its escapes. A
//! send whose `after` never matches fails the scenario. `timeout_secs` may be as long as a
//! slow boot needs (a Linux guest under nested TCG: minutes).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::Deserialize;

use crate::serial::SendText;

/// The file in each scenario directory that says how to judge it.
pub const SCENARIO_FILE: &str = "scenario.toml";
/// The system manifest each scenario boots.
pub const SYSTEM_FILE: &str = "system.cfg";
/// Forbidden in every scenario: the microvisor's panic epitaph.
pub const ALWAYS_FORBIDDEN: &str = "PANIC";

/// How QEMU must end for the scenario to pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitRule {
    /// QEMU exits with status 1: the microvisor powered off cleanly.
    Poweroff,
    /// QEMU exits by itself; its status does not matter.
    Any,
    /// The system never ends by itself: the runner kills QEMU once `stop_when` matched.
    Stopped,
    /// QEMU exits with status 5: the microvisor refused to start (e.g. no SVM).
    Refused,
}

/// Which of the lines a `[[count]]` regex matches must hold a value within bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pick {
    /// Every matching line.
    #[default]
    Every,
    /// At least one matching line.
    Any,
    /// The first matching line.
    First,
    /// The last matching line.
    Last,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioToml {
    description: String,
    timeout_secs: u64,
    exit: ExitRule,
    stop_when: Option<String>,
    /// QEMU's `-cpu` model for this scenario (default: the standard SVM-capable one).
    qemu_cpu: Option<String>,
    /// A virtio-blk disk for a driver domain (PCI 00:03.0, behind the IOMMU).
    disk: Option<DiskToml>,
    /// The IOMMU device for this scenario (default `intel-iommu`; `amd-iommu` for AMD-Vi).
    qemu_iommu: Option<String>,
    /// A virtio-net NIC for a driver domain (PCI 00:04.0, behind the IOMMU).
    net: Option<NetToml>,
    #[serde(default)]
    expect: Vec<String>,
    #[serde(default)]
    expect_in_order: Vec<String>,
    #[serde(default)]
    forbid: Vec<String>,
    #[serde(default)]
    count: Vec<CountToml>,
    /// The QEMU machine's memory, in MiB (default: the runner's standard size).
    qemu_memory_mib: Option<u32>,
    #[serde(default)]
    send: Vec<SendToml>,
    /// Commands run on the host against the control domain's management channel.
    xl: Option<XlToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct XlToml {
    after: String,
    steps: Vec<String>,
}

/// Steps run on the host, in order, once a line matches `after` (the system must have a
/// control domain): `xl ARGS` runs the workspace's `xl` with the scenario's management
/// socket (in the scenario's directory, so a `create` names its files relative to it);
/// `wait REGEX` waits (up to 300 s) for a log line that matches, among those that arrived
/// after the previous step began; `seen REGEX` is the same over the whole log so far;
/// `console NAME TEXT` runs `xl console NAME` typing TEXT (and Enter) into it, then ending
/// its input (`xl console` then detaches after a few quiet seconds); `sleep SECS`;
/// `crash-loop NAME COUNT MIN_SECS MAX_SECS REGEX` does COUNT times: a random pause between
/// MIN_SECS and MAX_SECS, `xl crash NAME`, then `wait REGEX`; `garble`
/// sends noise, a corrupted frame and an oversized length on the
/// channel, then a `list`, and reports what came back. Each step's output is added to the
/// log: `xl$ ARGS`, each line of output as `xl: <line>`, then `xl: exit <status>`.
#[derive(Clone, Debug)]
pub struct XlSteps {
    pub after: Regex,
    pub steps: Vec<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendToml {
    after: String,
    text: String,
}

fn parse_net(net: NetToml) -> Result<Net> {
    let exchange = match (net.exchange_port, net.exchange_after, net.exchange_mib) {
        (None, None, None) => None,
        (Some(port), Some(after), Some(mib)) => {
            if port == 0 || mib == 0 {
                bail!("`net.exchange_port` and `net.exchange_mib` must be at least 1");
            }
            Some(NetExchange {
                port,
                after: compile("net.exchange_after", &after)?,
                bytes: mib << 20,
            })
        }
        _ => bail!(
            "`net.exchange_port`, `net.exchange_after` and `net.exchange_mib` go together: give all three or none"
        ),
    };
    Ok(Net { exchange })
}

/// The memory a scenario may give its QEMU machine, in MiB.
pub const QEMU_MEMORY_MIB_RANGE: std::ops::RangeInclusive<u32> = 64..=16384;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountToml {
    regex: String,
    min: Option<i64>,
    max: Option<i64>,
    #[serde(default)]
    pick: Pick,
}

/// A number a log line must report, within bounds.
#[derive(Clone, Debug)]
pub struct CountRule {
    /// Has exactly one capture group: the number.
    pub regex: Regex,
    pub min: i64,
    pub max: i64,
    pub pick: Pick,
}

/// A validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub dir: PathBuf,
    pub description: String,
    pub timeout: Duration,
    pub exit: ExitRule,
    pub stop_when: Option<Regex>,
    pub expect: Vec<Regex>,
    pub expect_in_order: Vec<Regex>,
    /// Includes [`ALWAYS_FORBIDDEN`].
    pub forbid: Vec<Regex>,
    pub counts: Vec<CountRule>,
    pub qemu_cpu: Option<String>,
    pub disk: Option<Disk>,
    pub net: Option<Net>,
    pub qemu_iommu: Option<String>,
    /// The QEMU machine's memory, if not the standard size.
    pub qemu_memory_mib: Option<u32>,
    /// What to type into the serial console, and when.
    pub sends: Vec<SendText>,
    /// Host commands against the control domain, and when.
    pub xl: Option<XlSteps>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetToml {
    exchange_port: Option<u16>,
    exchange_after: Option<String>,
    exchange_mib: Option<u64>,
}

/// A NIC the runner attaches as `virtio-net-pci,disable-legacy=on,iommu_platform=on` at
/// 00:04.0 on QEMU's user network, and the TCP exchange to run with the guest through it.
#[derive(Clone, Debug)]
pub struct Net {
    pub exchange: Option<NetExchange>,
}

/// A TCP exchange with the guest's echo server on `port` (see `crate::exchange`).
#[derive(Clone, Debug)]
pub struct NetExchange {
    pub port: u16,
    pub after: Regex,
    pub bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskToml {
    size_mib: u32,
    #[serde(default)]
    checks: Vec<[u64; 2]>,
    #[serde(default)]
    contains: Vec<String>,
}

/// A raw disk image the runner creates (zero-filled) and attaches as
/// `virtio-blk-pci,disable-legacy=on,iommu_platform=on` at 00:03.0; after QEMU exits, each
/// listed sector must hold the test pattern `pattern ^ (sector & 0xff) ^ (i & 0xff)`, and
/// each `contains` text must appear somewhere in the image (a file a guest wrote through
/// its file system).
#[derive(Clone, Debug)]
pub struct Disk {
    pub size_mib: u32,
    /// (sector, pattern byte)
    pub checks: Vec<(u64, u8)>,
    pub contains: Vec<String>,
}

impl Scenario {
    /// The system manifest this scenario boots.
    pub fn system_file(&self) -> PathBuf {
        self.dir.join(SYSTEM_FILE)
    }

    /// Reads and validates `<dir>/scenario.toml`; the scenario is named after `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let file = dir.join(SCENARIO_FILE);
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "could not read {}: every scenario directory needs one",
                file.display()
            )
        })?;
        let name = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .with_context(|| format!("{} has no directory name", dir.display()))?;
        let scenario =
            Self::parse(&name, dir, &text).with_context(|| format!("in {}", file.display()))?;
        if !scenario.system_file().is_file() {
            bail!(
                "scenario {name}: {} is missing",
                scenario.system_file().display()
            );
        }
        Ok(scenario)
    }

    /// Parses and validates the text of a `scenario.toml`.
    pub fn parse(name: &str, dir: &Path, text: &str) -> Result<Self> {
        let raw: ScenarioToml = toml::from_str(text)?;
        if raw.description.trim().is_empty() {
            bail!("`description` is empty: say in one line what the scenario proves");
        }
        if raw.timeout_secs == 0 {
            bail!("`timeout_secs` must be at least 1");
        }
        let stop_when = raw
            .stop_when
            .as_deref()
            .map(|text| compile("stop_when", text))
            .transpose()?;
        match (raw.exit, &stop_when) {
            (ExitRule::Stopped, None) => {
                bail!("exit = \"stopped\" needs `stop_when`: the line after which the runner kills QEMU")
            }
            (ExitRule::Poweroff | ExitRule::Any | ExitRule::Refused, Some(_)) => bail!(
                "`stop_when` only goes with exit = \"stopped\" (the runner would kill QEMU before it exits)"
            ),
            _ => {}
        }
        let expect = compile_all("expect", &raw.expect)?;
        let expect_in_order = compile_all("expect_in_order", &raw.expect_in_order)?;
        let mut forbid = compile_all("forbid", &raw.forbid)?;
        if !raw.forbid.iter().any(|pattern| pattern == ALWAYS_FORBIDDEN) {
            forbid.push(compile("forbid", ALWAYS_FORBIDDEN)?);
        }
        if expect.is_empty() && expect_in_order.is_empty() && raw.count.is_empty() {
            bail!("the scenario checks no output: give at least one `expect`, `expect_in_order` or `[[count]]`");
        }
        let counts = raw
            .count
            .iter()
            .enumerate()
            .map(|(index, count)| {
                let what = format!("count[{index}].regex");
                let regex = compile(&what, &count.regex)?;
                if regex.captures_len() != 2 {
                    bail!(
                        "`{what}` = '{}' must have exactly one capture group (the number), it has {}",
                        count.regex,
                        regex.captures_len() - 1
                    );
                }
                let (min, max) = (count.min.unwrap_or(i64::MIN), count.max.unwrap_or(i64::MAX));
                if count.min.is_none() && count.max.is_none() {
                    bail!("count[{index}] needs `min`, `max` or both");
                }
                if min > max {
                    bail!("count[{index}]: min {min} is above max {max}");
                }
                Ok(CountRule { regex, min, max, pick: count.pick })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(mib) = raw.qemu_memory_mib {
            if !QEMU_MEMORY_MIB_RANGE.contains(&mib) {
                bail!(
                    "`qemu_memory_mib` = {mib} is out of range: {} to {} MiB",
                    QEMU_MEMORY_MIB_RANGE.start(),
                    QEMU_MEMORY_MIB_RANGE.end()
                );
            }
        }
        let sends = raw
            .send
            .iter()
            .enumerate()
            .map(|(index, send)| {
                let after = regex::bytes::Regex::new(&send.after).with_context(|| {
                    format!(
                        "`send[{index}].after` = '{}' is not a valid regex",
                        send.after
                    )
                })?;
                if send.after.is_empty() {
                    bail!("`send[{index}].after` is empty: give the output to wait for");
                }
                if send.text.is_empty() {
                    bail!("`send[{index}].text` is empty: give the text to type");
                }
                Ok(SendText {
                    after,
                    text: send.text.clone().into_bytes(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let net = raw.net.map(parse_net).transpose()?;
        let xl = raw
            .xl
            .map(|xl| -> Result<XlSteps> {
                let steps: Vec<Vec<String>> = xl
                    .steps
                    .iter()
                    .map(|step| step.split_whitespace().map(str::to_string).collect())
                    .collect();
                for (index, step) in steps.iter().enumerate() {
                    match step.first().map(String::as_str) {
                        Some("xl") if step.len() > 1 => {}
                        Some("garble") if step.len() == 1 => {}
                        Some("sleep") if step.len() == 2 && step[1].parse::<f64>().is_ok() => {}
                        Some("console") if step.len() > 2 => {}
                        Some("crash-loop")
                            if step.len() > 5
                                && step[2].parse::<u32>().is_ok()
                                && step[3].parse::<f64>().is_ok()
                                && step[4].parse::<f64>().is_ok() =>
                        {
                            compile(&format!("xl.steps[{index}]"), &step[5..].join(" "))?;
                        }
                        Some("wait" | "seen") if step.len() > 1 => {
                            let pattern = step[1..].join(" ");
                            compile(&format!("xl.steps[{index}]"), &pattern)?;
                        }
                        _ => bail!(
                            "`xl.steps[{index}]` = {:?}: a step is `xl ARGS`, `console NAME TEXT`, `wait REGEX`, `seen REGEX`, `sleep SECS`, `crash-loop NAME COUNT MIN_SECS MAX_SECS REGEX` or `garble`",
                            xl.steps[index]
                        ),
                    }
                }
                Ok(XlSteps {
                    after: compile("xl.after", &xl.after)?,
                    steps,
                })
            })
            .transpose()?;
        Ok(Self {
            xl,
            name: name.to_string(),
            dir: dir.to_path_buf(),
            net,
            description: raw.description,
            timeout: Duration::from_secs(raw.timeout_secs),
            exit: raw.exit,
            stop_when,
            expect,
            expect_in_order,
            forbid,
            counts,
            qemu_cpu: raw.qemu_cpu,
            qemu_iommu: raw.qemu_iommu,
            qemu_memory_mib: raw.qemu_memory_mib,
            sends,
            disk: raw
                .disk
                .map(|d| -> Result<Disk> {
                    if d.size_mib == 0 {
                        bail!("`disk.size_mib` must be at least 1");
                    }
                    let checks = d
                        .checks
                        .iter()
                        .map(|[sector, pattern]| {
                            if *pattern > 0xff || *sector >= u64::from(d.size_mib) * 2048 {
                                bail!("`disk.checks` entry [{sector}, {pattern}] is outside the disk or not a byte pattern");
                            }
                            Ok((*sector, *pattern as u8))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    if d.contains.iter().any(String::is_empty) {
                        bail!("`disk.contains` entries must not be empty");
                    }
                    Ok(Disk { size_mib: d.size_mib, checks, contains: d.contains })
                })
                .transpose()?,
        })
    }
}

fn compile(what: &str, pattern: &str) -> Result<Regex> {
    Regex::new(pattern).with_context(|| format!("`{what}` = '{pattern}' is not a valid regex"))
}

fn compile_all(what: &str, patterns: &[String]) -> Result<Vec<Regex>> {
    patterns
        .iter()
        .enumerate()
        .map(|(index, pattern)| compile(&format!("{what}[{index}]"), pattern))
        .collect()
}

/// Every scenario under `dir`, sorted by name. A subdirectory without a valid `scenario.toml`
/// is an error, so a broken scenario is never skipped silently.
pub fn load_all(dir: &Path) -> Result<Vec<Scenario>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("could not list {}", dir.display()))?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    dirs.iter().map(|dir| Scenario::load(dir)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario> {
        Scenario::parse("demo", Path::new("/nowhere/demo"), text)
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    const FULL: &str = r#"
description = "boots"
timeout_secs = 30
exit = "stopped"
stop_when = '\[worker\] done'
expect = ['\[a\] hello \d+']
expect_in_order = ['one', 'two']
forbid = ['MEMORY CHANGED']
[[count]]
regex = 'efault=(\d+)'
min = 1
max = 100
[[count]]
regex = 'reused (\d+)'
min = 1000
pick = "last"
"#;

    #[test]
    fn parses_every_field() {
        let scenario = parse(FULL).unwrap();
        assert_eq!(scenario.name, "demo");
        assert_eq!(scenario.description, "boots");
        assert_eq!(scenario.timeout, Duration::from_secs(30));
        assert_eq!(scenario.exit, ExitRule::Stopped);
        assert!(scenario
            .stop_when
            .as_ref()
            .unwrap()
            .is_match("[worker] done"));
        assert!(scenario.expect[0].is_match("[a] hello 42"));
        assert_eq!(scenario.expect_in_order.len(), 2);
        let forbidden: Vec<&str> = scenario.forbid.iter().map(Regex::as_str).collect();
        assert_eq!(forbidden, ["MEMORY CHANGED", "PANIC"]);
        assert_eq!(scenario.counts.len(), 2);
        assert_eq!((scenario.counts[0].min, scenario.counts[0].max), (1, 100));
        assert_eq!(scenario.counts[0].pick, Pick::Every);
        assert_eq!(
            (scenario.counts[1].min, scenario.counts[1].max),
            (1000, i64::MAX)
        );
        assert_eq!(scenario.counts[1].pick, Pick::Last);
        assert_eq!(
            scenario.system_file(),
            Path::new("/nowhere/demo/system.cfg")
        );
    }

    #[test]
    fn minimal_scenario_forbids_panic() {
        let scenario =
            parse("description = \"x\"\ntimeout_secs = 5\nexit = \"poweroff\"\nexpect = ['ok']\n")
                .unwrap();
        assert_eq!(scenario.exit, ExitRule::Poweroff);
        assert!(scenario.stop_when.is_none());
        assert_eq!(scenario.forbid.len(), 1);
        assert!(scenario.forbid[0].is_match("[microvisor] PANIC on cpu 0"));
    }

    #[test]
    fn rejects_bad_files_with_a_useful_message() {
        let base = "description = \"x\"\ntimeout_secs = 5\n";
        let cases = [
            (
                format!("{base}exit = \"poweroff\"\nexpect = ['a']\ncolour = 1\n"),
                "colour",
            ),
            (
                format!("{base}exit = \"sometimes\"\nexpect = ['a']\n"),
                "sometimes",
            ),
            (format!("{base}expect = ['a']\n"), "exit"),
            (
                format!("{base}exit = \"stopped\"\nexpect = ['a']\n"),
                "needs `stop_when`",
            ),
            (
                format!("{base}exit = \"any\"\nstop_when = 'a'\nexpect = ['a']\n"),
                "only goes with",
            ),
            (
                format!("{base}exit = \"any\"\nexpect = ['a', '(unclosed']\n"),
                "expect[1]",
            ),
            (
                format!("{base}exit = \"any\"\nforbid = ['[']\nexpect = ['a']\n"),
                "forbid[0]",
            ),
            (format!("{base}exit = \"any\"\n"), "checks no output"),
            (
                format!("{base}exit = \"any\"\n[[count]]\nregex = 'n=\\d+'\nmin = 1\n"),
                "exactly one capture group",
            ),
            (
                format!("{base}exit = \"any\"\n[[count]]\nregex = '(a)(b)'\nmin = 1\n"),
                "it has 2",
            ),
            (
                format!("{base}exit = \"any\"\n[[count]]\nregex = '(\\d+)'\n"),
                "needs `min`",
            ),
            (
                format!("{base}exit = \"any\"\n[[count]]\nregex = '(\\d+)'\nmin = 5\nmax = 4\n"),
                "above max",
            ),
            (
                format!("{base}exit = \"any\"\n[[count]]\nregex = '(\\d+)'\nmin = 5\nlimit = 4\n"),
                "limit",
            ),
            (
                format!(
                    "{base}exit = \"any\"\n[[count]]\nregex = '(\\d+)'\nmin = 5\npick = \"most\"\n"
                ),
                "most",
            ),
            (
                "description = \"\"\ntimeout_secs = 5\nexit = \"any\"\nexpect = ['a']\n"
                    .to_string(),
                "description",
            ),
            (
                "description = \"x\"\ntimeout_secs = 0\nexit = \"any\"\nexpect = ['a']\n"
                    .to_string(),
                "timeout_secs",
            ),
        ];
        for (text, needle) in cases {
            let message = error(&text);
            assert!(
                message.contains(needle),
                "message {message:?} should mention {needle:?} for:\n{text}"
            );
        }
    }

    #[test]
    fn sends_and_memory_are_read() {
        let scenario = parse(
            "description = \"x\"\ntimeout_secs = 900\nexit = \"poweroff\"\nexpect = ['ok']\n\
             qemu_memory_mib = 2048\n\
             [[send]]\nafter = 'guest: shell ready'\ntext = \"uname -r\\n\"\n\
             [[send]]\nafter = 'guest# $'\ntext = \"attach\\u001d\\tx\"\n",
        )
        .unwrap();
        assert_eq!(scenario.timeout, Duration::from_secs(900));
        assert_eq!(scenario.qemu_memory_mib, Some(2048));
        assert_eq!(scenario.sends.len(), 2);
        assert!(scenario.sends[0]
            .after
            .is_match(b"[linux] guest: shell ready"));
        assert_eq!(scenario.sends[0].text, b"uname -r\n");
        assert_eq!(scenario.sends[1].text, b"attach\x1d\tx");
        let plain =
            parse("description = \"x\"\ntimeout_secs = 5\nexit = \"any\"\nexpect = ['a']\n")
                .unwrap();
        assert!(plain.sends.is_empty());
        assert_eq!(plain.qemu_memory_mib, None);
    }

    #[test]
    fn bad_sends_and_memory_say_what_is_wrong() {
        let base = "description = \"x\"\ntimeout_secs = 5\nexit = \"any\"\nexpect = ['a']\n";
        let cases = [
            (
                "[[send]]\nafter = '('\ntext = \"x\"\n",
                "`send[0].after` = '(' is not a valid regex",
            ),
            (
                "[[send]]\nafter = 'a'\ntext = \"x\"\n[[send]]\nafter = 'b'\ntext = \"\"\n",
                "`send[1].text` is empty",
            ),
            (
                "[[send]]\nafter = ''\ntext = \"x\"\n",
                "`send[0].after` is empty",
            ),
            ("[[send]]\ntext = \"x\"\n", "missing field `after`"),
            ("[[send]]\nafter = 'a'\n", "missing field `text`"),
            (
                "[[send]]\nafter = 'a'\ntext = \"x\"\ndelay = 3\n",
                "unknown field `delay`",
            ),
            ("[[send]]\nafter = 'a'\ntext = 5\n", "invalid type"),
            ("send = 'x'\n", "invalid type"),
            (
                "qemu_memory_mib = 32\n",
                "`qemu_memory_mib` = 32 is out of range: 64 to 16384 MiB",
            ),
            ("qemu_memory_mib = 99999\n", "out of range"),
            ("qemu_memory_mib = -1\n", "qemu_memory_mib"),
        ];
        for (tail, needle) in cases {
            let text = format!("{base}{tail}");
            let message = error(&text);
            assert!(
                message.contains(needle),
                "message {message:?} should mention {needle:?} for:\n{text}"
            );
        }
    }

    #[test]
    fn toml_errors_name_the_line() {
        let message = error(
            "description = \"x\"\ntimeout_secs = 5\nexit = \"any\"\nexpect = ['a']\nbogus = 3\n",
        );
        assert!(message.contains("line 5"), "{message}");
    }

    /// The checked-in scenarios are valid and complete.
    #[test]
    fn repository_scenarios_are_valid() {
        let dir = crate::workspace::workspace_root()
            .join("ci")
            .join("scenarios");
        let scenarios = load_all(&dir).unwrap();
        let names: Vec<&str> = scenarios
            .iter()
            .map(|scenario| scenario.name.as_str())
            .collect();
        for expected in [
            "boot-demo",
            "hypercall-fuzz",
            "isolation-npt",
            "lifecycle",
            "preemption",
            "scrub",
        ] {
            assert!(
                names.contains(&expected),
                "scenario {expected} is missing from {names:?}"
            );
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
}
