//! Judges a scenario's run from its log lines and how QEMU ended.
//!
//! Rules, all of which must hold:
//! - exit = "poweroff": QEMU exited with status 1 (the microvisor's clean power-off).
//!   exit = "any": QEMU exited by itself, with any status. exit = "stopped": `stop_when` matched
//!   and the runner killed QEMU. Running into `timeout_secs` always fails.
//! - every `expect` regex matches some line;
//! - the `expect_in_order` regexes match lines in that order (each on a later line than the one
//!   before);
//! - no `forbid` regex (nor "PANIC") matches any line;
//! - for every `[[count]]`, at least one line matches, and the number its capture group holds is
//!   within `[min, max]` on the lines that `pick` selects.

use crate::qemu::{Exit, STATUS_POWEROFF, STATUS_REFUSED};
use crate::scenario::{CountRule, ExitRule, Pick, Scenario};
use crate::serial::Ending;

/// The outcome: passed when there are no failures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Each broken rule, in the order the rules are checked.
    pub failures: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// All failures on one line.
    #[cfg(test)]
    pub fn summary(&self) -> String {
        self.failures.join("; ")
    }
}

/// Judges `lines` (the whole log, in order) and `ending` against `scenario`.
pub fn judge(scenario: &Scenario, lines: &[&str], ending: Ending) -> Verdict {
    let mut failures = Vec::new();
    if let Some(failure) = judge_ending(scenario, ending) {
        failures.push(failure);
    }
    for pattern in &scenario.expect {
        if !lines.iter().any(|line| pattern.is_match(line)) {
            failures.push(format!("no line matched expect `{pattern}`"));
        }
    }
    if let Some(failure) = judge_order(scenario, lines) {
        failures.push(failure);
    }
    for pattern in &scenario.forbid {
        if let Some((index, line)) = lines
            .iter()
            .enumerate()
            .find(|(_, line)| pattern.is_match(line))
        {
            failures.push(format!(
                "forbidden `{pattern}` matched line {}: {line}",
                index + 1
            ));
        }
    }
    for rule in &scenario.counts {
        if let Some(failure) = judge_count(rule, lines) {
            failures.push(failure);
        }
    }
    Verdict { failures }
}

fn judge_ending(scenario: &Scenario, ending: Ending) -> Option<String> {
    let timeout_secs = scenario.timeout.as_secs();
    match (scenario.exit, ending) {
        (ExitRule::Poweroff, Ending::Exited(Exit::Code(STATUS_POWEROFF))) => None,
        (ExitRule::Poweroff, Ending::Exited(exit)) => Some(format!(
            "expected a clean power-off, but {}",
            exit.describe()
        )),
        (ExitRule::Any, Ending::Exited(_)) => None,
        (ExitRule::Refused, Ending::Exited(Exit::Code(STATUS_REFUSED))) => None,
        (ExitRule::Refused, Ending::Exited(exit)) => Some(format!(
            "expected the microvisor to refuse to start, but {}",
            exit.describe()
        )),
        (ExitRule::Stopped, Ending::Stopped) => None,
        (ExitRule::Stopped, Ending::Exited(exit)) => Some(format!(
            "QEMU ended before `stop_when` matched: {}",
            exit.describe()
        )),
        (ExitRule::Stopped, Ending::TimedOut) => Some(format!(
            "timed out after {timeout_secs} s before `stop_when` matched"
        )),
        (_, Ending::TimedOut) => Some(format!(
            "timed out after {timeout_secs} s without QEMU exiting"
        )),
        (_, Ending::Stopped) => {
            Some("the runner stopped QEMU although the scenario has no `stop_when`".into())
        }
    }
}

fn judge_order(scenario: &Scenario, lines: &[&str]) -> Option<String> {
    let mut next_line = 0;
    let mut previous: Option<(&regex::Regex, usize)> = None;
    for pattern in &scenario.expect_in_order {
        if let Some(offset) = lines[next_line..]
            .iter()
            .position(|line| pattern.is_match(line))
        {
            let index = next_line + offset;
            previous = Some((pattern, index));
            next_line = index + 1;
            continue;
        }
        let anywhere = lines.iter().any(|line| pattern.is_match(line));
        return match previous {
            Some((before, at)) if anywhere => Some(format!(
                "expect_in_order `{pattern}` matched only before `{before}` (line {})",
                at + 1
            )),
            // Already reported as a missing `expect`.
            _ if scenario
                .expect
                .iter()
                .any(|expected| expected.as_str() == pattern.as_str()) =>
            {
                None
            }
            _ => Some(format!("no line matched expect_in_order `{pattern}`")),
        };
    }
    None
}

fn judge_count(rule: &CountRule, lines: &[&str]) -> Option<String> {
    let pattern = &rule.regex;
    let mut values = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(captures) = pattern.captures(line) else {
            continue;
        };
        let text = captures.get(1).map_or("", |group| group.as_str());
        match text.parse::<i64>() {
            Ok(value) => values.push((index + 1, value)),
            Err(_) => {
                return Some(format!(
                    "count `{pattern}` captured `{text}` on line {}, which is not an integer",
                    index + 1
                ))
            }
        }
    }
    let in_range = |value: i64| (rule.min..=rule.max).contains(&value);
    let bounds = describe_bounds(rule);
    let out_of_range = |(line, value): (usize, i64)| {
        format!("count `{pattern}` is {value} on line {line}, want {bounds}")
    };
    match rule.pick {
        _ if values.is_empty() => Some(format!("no line matched count `{pattern}`")),
        Pick::Every => values
            .iter()
            .copied()
            .find(|&(_, value)| !in_range(value))
            .map(out_of_range),
        Pick::Any => (!values.iter().any(|&(_, value)| in_range(value))).then(|| {
            let seen: Vec<String> = values.iter().map(|(_, value)| value.to_string()).collect();
            format!(
                "count `{pattern}` is never {bounds} (values: {})",
                seen.join(", ")
            )
        }),
        Pick::First => values
            .first()
            .copied()
            .filter(|&(_, value)| !in_range(value))
            .map(out_of_range),
        Pick::Last => values
            .last()
            .copied()
            .filter(|&(_, value)| !in_range(value))
            .map(out_of_range),
    }
}

fn describe_bounds(rule: &CountRule) -> String {
    match (rule.min, rule.max) {
        (i64::MIN, max) => format!("at most {max}"),
        (min, i64::MAX) => format!("at least {min}"),
        (min, max) => format!("within [{min}, {max}]"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn scenario(text: &str) -> Scenario {
        Scenario::parse("demo", Path::new("/nowhere"), text).unwrap()
    }

    const POWEROFF: Ending = Ending::Exited(Exit::Code(1));

    const BOOT: &str = r#"
description = "boot"
timeout_secs = 60
exit = "poweroff"
expect = ['\[hello\] hello from domain \d+, vcpus=2', '\[microvisor\] all 3 domains running']
expect_in_order = ['all 3 domains running', 'all domains gone, powering off']
forbid = ['MEMORY CHANGED']
"#;

    const GOOD_BOOT_LOG: &[&str] = &[
        "[microvisor] ready",
        "[microvisor] all 3 domains running",
        "[hello] hello from domain 1, vcpus=2",
        "[microvisor] all domains gone, powering off",
    ];

    #[test]
    fn a_good_run_passes() {
        let verdict = judge(&scenario(BOOT), GOOD_BOOT_LOG, POWEROFF);
        assert!(verdict.passed(), "{}", verdict.summary());
    }

    #[test]
    fn wrong_exits_fail() {
        let boot = scenario(BOOT);
        for (ending, needle) in [
            (Ending::Exited(Exit::Code(3)), "panicked"),
            (Ending::Exited(Exit::Code(0)), "status 0"),
            (Ending::Exited(Exit::Code(7)), "status 7"),
            (Ending::Exited(Exit::Signal(9)), "signal 9"),
            (Ending::TimedOut, "timed out after 60 s"),
        ] {
            let verdict = judge(&boot, GOOD_BOOT_LOG, ending);
            assert_eq!(
                verdict.failures.len(),
                1,
                "{ending:?}: {}",
                verdict.summary()
            );
            assert!(
                verdict.summary().contains(needle),
                "{ending:?}: {}",
                verdict.summary()
            );
        }
    }

    #[test]
    fn exit_any_ignores_the_status_but_not_a_timeout() {
        let any =
            scenario("description = \"x\"\ntimeout_secs = 9\nexit = \"any\"\nexpect = ['ok']\n");
        for code in [0, 1, 3, 42] {
            assert!(judge(&any, &["ok"], Ending::Exited(Exit::Code(code))).passed());
        }
        assert!(judge(&any, &["ok"], Ending::TimedOut)
            .summary()
            .contains("timed out after 9 s"));
    }

    #[test]
    fn exit_stopped_needs_the_stop_line() {
        let stopped = scenario(
            "description = \"x\"\ntimeout_secs = 9\nexit = \"stopped\"\nstop_when = 'primes:'\nexpect = ['primes:']\n",
        );
        assert!(judge(&stopped, &["[worker] primes: 9592"], Ending::Stopped).passed());
        let early = judge(&stopped, &["[worker] primes: 9592"], POWEROFF);
        assert!(
            early.summary().contains("before `stop_when` matched"),
            "{}",
            early.summary()
        );
        let late = judge(&stopped, &[], Ending::TimedOut);
        assert!(
            late.summary().contains("timed out after 9 s before"),
            "{}",
            late.summary()
        );
        assert!(
            late.summary().contains("no line matched expect `primes:`"),
            "{}",
            late.summary()
        );
    }

    #[test]
    fn a_missing_line_fails() {
        let log = &GOOD_BOOT_LOG[..2];
        let verdict = judge(&scenario(BOOT), log, POWEROFF);
        assert_eq!(
            verdict.failures,
            [
                "no line matched expect `\\[hello\\] hello from domain \\d+, vcpus=2`",
                "no line matched expect_in_order `all domains gone, powering off`",
            ]
        );
    }

    #[test]
    fn lines_out_of_order_fail() {
        let log = [
            "[microvisor] all domains gone, powering off",
            "[microvisor] all 3 domains running",
            "[hello] hello from domain 1, vcpus=2",
        ];
        let verdict = judge(&scenario(BOOT), &log, POWEROFF);
        assert_eq!(verdict.failures.len(), 1, "{}", verdict.summary());
        assert!(
            verdict
                .summary()
                .contains("matched only before `all 3 domains running` (line 2)"),
            "{}",
            verdict.summary()
        );
    }

    #[test]
    fn a_missing_line_is_reported_once() {
        let both = scenario(
            "description = \"x\"\ntimeout_secs = 9\nexit = \"any\"\nexpect = ['b']\nexpect_in_order = ['a', 'b']\n",
        );
        assert_eq!(
            judge(&both, &["a"], POWEROFF).failures,
            ["no line matched expect `b`"]
        );
        assert_eq!(
            judge(&both, &["b", "a"], POWEROFF).failures,
            ["expect_in_order `b` matched only before `a` (line 2)"]
        );
    }

    #[test]
    fn in_order_needs_distinct_lines() {
        let same = scenario(
            "description = \"x\"\ntimeout_secs = 9\nexit = \"any\"\nexpect_in_order = ['a', 'b']\n",
        );
        assert!(!judge(&same, &["a b"], POWEROFF).passed());
        assert!(judge(&same, &["a b", "b"], POWEROFF).passed());
    }

    #[test]
    fn forbidden_lines_fail_and_panic_is_always_forbidden() {
        let mut log = GOOD_BOOT_LOG.to_vec();
        log.insert(3, "[victim] victim: MEMORY CHANGED at 0x1000");
        let verdict = judge(&scenario(BOOT), &log, POWEROFF);
        assert_eq!(verdict.failures, ["forbidden `MEMORY CHANGED` matched line 4: [victim] victim: MEMORY CHANGED at 0x1000"]);

        let mut log = GOOD_BOOT_LOG.to_vec();
        log.push("[microvisor] PANIC on cpu 1: page fault at 0x0");
        let verdict = judge(&scenario(BOOT), &log, Ending::Exited(Exit::Code(3)));
        assert_eq!(verdict.failures.len(), 2, "{}", verdict.summary());
        assert!(
            verdict.failures[1].contains("`PANIC` matched line 5"),
            "{}",
            verdict.summary()
        );
    }

    const FUZZ: &str = r#"
description = "fuzz"
timeout_secs = 60
exit = "poweroff"
[[count]]
regex = 'fuzz: 20000 calls: .* efault=(\d+)'
min = 1
max = 20000
"#;

    #[test]
    fn counts_are_checked() {
        let fuzz = scenario(FUZZ);
        let good = ["[fuzzer] fuzz: 20000 calls: ok=10 efault=12 enosys=5000"];
        assert!(judge(&fuzz, &good, POWEROFF).passed());
        let zero = ["[fuzzer] fuzz: 20000 calls: ok=10 efault=0 enosys=5000"];
        assert_eq!(
            judge(&fuzz, &zero, POWEROFF).failures,
            ["count `fuzz: 20000 calls: .* efault=(\\d+)` is 0 on line 1, want within [1, 20000]"]
        );
        assert_eq!(
            judge(&fuzz, &["[fuzzer] fuzz: done"], POWEROFF).failures,
            ["no line matched count `fuzz: 20000 calls: .* efault=(\\d+)`"]
        );
        let huge = ["[fuzzer] fuzz: 20000 calls: x efault=99999999999999999999999"];
        assert!(judge(&fuzz, &huge, POWEROFF)
            .summary()
            .contains("not an integer"));
    }

    #[test]
    fn pick_selects_the_lines_that_count() {
        let log = [
            "built: 100 frames, 0 reused",
            "built: 100 frames, 1500 reused",
        ];
        let with_pick = |pick: &str| {
            scenario(&format!(
                "description = \"x\"\ntimeout_secs = 9\nexit = \"any\"\n[[count]]\nregex = 'built: \\d+ frames, (\\d+) reused'\nmin = 1000\npick = \"{pick}\"\n"
            ))
        };
        let verdict = judge(&with_pick("every"), &log, POWEROFF);
        assert_eq!(
            verdict.failures,
            ["count `built: \\d+ frames, (\\d+) reused` is 0 on line 1, want at least 1000"]
        );
        assert!(judge(&with_pick("last"), &log, POWEROFF).passed());
        assert!(judge(&with_pick("any"), &log, POWEROFF).passed());
        assert!(!judge(&with_pick("first"), &log, POWEROFF).passed());
        let reversed = [log[1], log[0]];
        assert!(judge(&with_pick("first"), &reversed, POWEROFF).passed());
        assert!(!judge(&with_pick("last"), &reversed, POWEROFF).passed());
        let verdict = judge(&with_pick("any"), &[log[0], log[0]], POWEROFF);
        assert!(
            verdict
                .summary()
                .contains("is never at least 1000 (values: 0, 0)"),
            "{}",
            verdict.summary()
        );
    }
}
