//! A scenario's `[xl]` steps: the host's `xl` run against the control domain of the booted
//! system, each line of its output added to the scenario's log (see
//! [`crate::scenario::XlSteps`]).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use control::mgmt::{self, Deframer, Request, Response};

use crate::serial::Emit;

/// The scenario's sockets (the management channel and the console domain's attach line on
/// COM2, for `xl console`) and the system file it booted (for `xl create`'s disks and vifs).
#[derive(Clone, Copy)]
pub struct Sockets<'a> {
    pub mgmt: &'a Path,
    pub attach: &'a Path,
    pub system: &'a Path,
}

/// How long a `wait` step waits at most.
const WAIT_LIMIT: Duration = Duration::from_secs(300);

/// Runs the steps in order; `xl` is the binary, `dir` the scenario's directory (where `xl`
/// runs), `seen` the log's lines so far (for `wait`).
pub fn run(
    steps: &[Vec<String>],
    xl: &Path,
    sockets: Sockets,
    dir: &Path,
    seen: &crate::serial::SeenLines,
    emit: Emit,
) {
    // `wait` looks only at lines that arrived after the previous step began (and after the
    // line the previous `wait` matched).
    let mut from = 0;
    run_steps(steps, xl, sockets, dir, seen, emit, &mut from);
    emit("xl: steps done".to_string());
}

fn run_steps(
    steps: &[Vec<String>],
    xl: &Path,
    sockets: Sockets,
    dir: &Path,
    seen: &crate::serial::SeenLines,
    emit: Emit,
    from: &mut usize,
) {
    for step in steps {
        if step[0] != "wait" && step[0] != "seen" {
            *from = (*from).max(seen.lock().unwrap_or_else(|e| e.into_inner()).len());
        }
        match step[0].as_str() {
            // `seen REGEX`: like `wait`, but any line of the log so far counts too.
            "wait" | "seen" => {
                if step[0] == "seen" {
                    *from = 0;
                }
                let pattern = step[1..].join(" ");
                let Ok(re) = regex::Regex::new(&pattern) else {
                    emit(format!("xl: wait: `{pattern}` is not a regex"));
                    continue;
                };
                let started = Instant::now();
                loop {
                    let found = {
                        let lines = seen.lock().unwrap_or_else(|e| e.into_inner());
                        let hit = lines[(*from).min(lines.len())..]
                            .iter()
                            .position(|l| re.is_match(l));
                        hit.map(|i| *from + i + 1)
                    };
                    if let Some(next) = found {
                        *from = next;
                        break;
                    }
                    if started.elapsed() > WAIT_LIMIT {
                        emit(format!(
                            "xl: wait: no line matched `{pattern}` in {} s",
                            WAIT_LIMIT.as_secs()
                        ));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            "sleep" => {
                let secs: f64 = step[1].parse().unwrap_or(0.0);
                std::thread::sleep(Duration::from_secs_f64(secs));
            }
            "garble" => garble(sockets.mgmt, emit),
            // `crash-loop NAME COUNT MIN_S MAX_S REGEX...`: COUNT times, a random pause
            // between MIN_S and MAX_S seconds, `xl crash NAME`, then wait for REGEX (the
            // restarted instance at work) before the next.
            "crash-loop" => {
                let count: u32 = step[2].parse().unwrap_or(0);
                let low: f64 = step[3].parse().unwrap_or(1.0);
                let high: f64 = step[4].parse().unwrap_or(low).max(low);
                let mut state = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1;
                emit(format!(
                    "xl: crash-loop: {count} crashes of {}, seed {state:#x}",
                    step[1]
                ));
                let mut expanded = Vec::new();
                for _ in 0..count {
                    // xorshift64: a pause anywhere in [low, high].
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let pause = low + (high - low) * (state % 10_000) as f64 / 10_000.0;
                    expanded.push(vec!["sleep".to_string(), format!("{pause:.3}")]);
                    expanded.push(vec!["xl".to_string(), "crash".to_string(), step[1].clone()]);
                    let mut wait = vec!["wait".to_string()];
                    wait.extend(step[5..].iter().cloned());
                    expanded.push(wait);
                }
                run_steps(&expanded, xl, sockets, dir, seen, emit, from);
            }
            // `console NAME TEXT...`: `xl console NAME` typing TEXT and a newline.
            "console" => {
                let input = format!("{}\n", step[2..].join(" "));
                run_xl(
                    &["console".into(), step[1].clone()],
                    Some(&input),
                    xl,
                    sockets,
                    dir,
                    emit,
                )
            }
            _ => run_xl(&step[1..], None, xl, sockets, dir, emit),
        }
    }
}

fn run_xl(
    args: &[String],
    input: Option<&str>,
    xl: &Path,
    sockets: Sockets,
    dir: &Path,
    emit: Emit,
) {
    emit(format!("xl$ {}", args.join(" ")));
    let started = Instant::now();
    match output(xl, sockets, dir, args, input) {
        Ok((status, lines)) => {
            for line in lines {
                emit(format!("xl: {line}"));
            }
            emit(format!(
                "xl: exit {status} after {:.2} s",
                started.elapsed().as_secs_f64()
            ));
        }
        Err(e) => emit(format!("xl: cannot run {}: {e}", xl.display())),
    }
}

/// Runs `xl ARGS` in `dir` with the scenario's sockets, typing `input`: its exit status and
/// its output lines (stdout, then stderr).
pub fn output(
    xl: &Path,
    sockets: Sockets,
    dir: &Path,
    args: &[String],
    input: Option<&str>,
) -> std::io::Result<(i32, Vec<String>)> {
    let mut child = std::process::Command::new(xl)
        .arg("--socket")
        .arg(sockets.mgmt)
        .arg("--attach-socket")
        .arg(sockets.attach)
        .arg("--system")
        .arg(sockets.system)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        if let Some(input) = input {
            stdin.write_all(input.as_bytes())?;
        }
    }
    let output = child.wait_with_output()?;
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&output.stderr).lines())
        .map(str::to_string)
        .collect();
    Ok((output.status.code().unwrap_or(-1), lines))
}

/// Sends what no `xl` sends: noise, a frame whose checksum is wrong, a length over the
/// limit, a stalled frame the control domain gives up after 5 quiet seconds, then a good `list`; reports the answers.
fn garble(socket: &Path, emit: Emit) {
    let result = (|| -> std::io::Result<String> {
        let mut stream = UnixStream::connect(socket)?;
        let mut bad = mgmt::frame(&Request::List);
        let last = bad.len() - 1;
        bad[last] ^= 0x5a;
        stream.write_all(b"\x00\x01 not a frame \xff\xfe")?;
        stream.write_all(&bad)?;
        let mut huge = mgmt::MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        stream.write_all(&huge)?;
        // A frame that claims a valid length and never completes: dropped after 5 quiet
        // seconds (control's QUIET_NS).
        let mut stalled = mgmt::MAGIC.to_vec();
        stalled.extend_from_slice(&1000u32.to_le_bytes());
        stalled.extend_from_slice(b"only a few bytes");
        stream.write_all(&stalled)?;
        std::thread::sleep(Duration::from_millis(6500));
        stream.write_all(&mgmt::frame(&Request::List))?;
        let mut deframer = Deframer::new();
        let mut errors = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 65536];
        loop {
            while let Some(frame) = deframer.next_frame() {
                let Ok(payload) = frame else { continue };
                match mgmt::decode::<Response>(&payload) {
                    Ok(Response::Error(why)) => errors.push(why),
                    Ok(Response::Domains(rows)) => {
                        return Ok(format!(
                            "{} refusals ({}), then list answered with {} domains",
                            errors.len(),
                            errors.join("; "),
                            rows.len()
                        ))
                    }
                    Ok(other) => errors.push(format!("unexpected {other:?}")),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(format!(
                    "no answer to list after {} refusals ({})",
                    errors.len(),
                    errors.join("; ")
                ));
            }
            stream.set_read_timeout(Some(left))?;
            match stream.read(&mut buf) {
                Ok(0) => return Ok("the channel closed".into()),
                Ok(n) => deframer.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(e),
            }
        }
    })();
    match result {
        Ok(line) => emit(format!("xl: garble: {line}")),
        Err(e) => emit(format!("xl: garble: {e}")),
    }
}

/// The `xl` binary `cargo xtask build` makes.
pub fn binary(release_dir: &Path) -> PathBuf {
    release_dir.join("xl")
}
