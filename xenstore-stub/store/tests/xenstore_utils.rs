//! The host server against Xen's own client tools (Debian's `xenstore-utils`): they must
//! read, write, list, remove, change permissions and watch through our server exactly as
//! they do with Xen's xenstored.
//!
//! The tools are found through `XENSTORE_UTILS_DIR`, the root they were unpacked into
//! (`$XENSTORE_UTILS_DIR/usr/bin/xenstore-read`, libraries in
//! `$XENSTORE_UTILS_DIR/usr/lib/x86_64-linux-gnu`). `fetch-xenstore-utils.sh DIR` in this
//! crate downloads and unpacks them. Without the variable these tests fail.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use xenstore_store::host::{nul_terminated, Client};
use xenstore_store::wire::MessageType;

fn tools_root() -> PathBuf {
    let Some(root) = std::env::var_os("XENSTORE_UTILS_DIR") else {
        panic!(
            "XENSTORE_UTILS_DIR is not set. These tests run Xen's xenstore client tools \
             (Debian package xenstore-utils) against the host server. Get them with \
             `xenstore-stub/store/fetch-xenstore-utils.sh DIR` and run the tests with \
             XENSTORE_UTILS_DIR=DIR (`cargo xtask test` does both)."
        )
    };
    let root = PathBuf::from(root);
    assert!(
        root.join("usr/bin/xenstore-read").exists(),
        "XENSTORE_UTILS_DIR={} has no usr/bin/xenstore-read; unpack the tools with \
         xenstore-stub/store/fetch-xenstore-utils.sh",
        root.display()
    );
    root
}

/// `xenstored-host` on a socket in a temporary directory, killed when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    tools: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(extra: &[&str]) -> Self {
        let tools = tools_root();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("socket");
        let child = Command::new(env!("CARGO_BIN_EXE_xenstored-host"))
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .spawn()
            .expect("start xenstored-host");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "xenstored-host did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            socket,
            tools,
            _dir: dir,
        }
    }

    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.tools.join("usr/bin").join(tool));
        command.env("XENSTORED_PATH", &self.socket).env(
            "LD_LIBRARY_PATH",
            self.tools.join("usr/lib/x86_64-linux-gnu"),
        );
        command
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        self.command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("run {tool}: {error}"))
    }

    /// Runs a tool that must succeed; returns its standard output.
    fn ok(&self, tool: &str, args: &[&str]) -> String {
        let output = self.run(tool, args);
        assert!(
            output.status.success(),
            "{tool} {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn client(&self) -> Client {
        Client::connect(Path::new(&self.socket)).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn write_read_exists_list() {
    let daemon = Daemon::start(&[]);
    daemon.ok("xenstore-write", &["/vm/a", "hello", "/vm/b/c", "world"]);
    assert_eq!(
        daemon.ok("xenstore-read", &["/vm/a", "/vm/b/c"]),
        "hello\nworld\n"
    );
    assert_eq!(daemon.ok("xenstore-read", &["/vm/b"]), "\n");
    assert!(daemon.run("xenstore-exists", &["/vm/a"]).status.success());
    assert!(!daemon
        .run("xenstore-exists", &["/vm/none"])
        .status
        .success());
    assert_eq!(daemon.ok("xenstore-list", &["/vm"]), "a\nb\n");
    let missing = daemon.run("xenstore-read", &["/vm/none"]);
    assert!(!missing.status.success());
    // Our own client sees what the tools wrote.
    assert_eq!(daemon.client().read("/vm/b/c").unwrap().unwrap(), b"world");
}

#[test]
fn ls_shows_the_tree_and_permissions() {
    let daemon = Daemon::start(&["--domain", "3:guest"]);
    daemon.ok("xenstore-write", &["/vm/a", "hello", "/vm/b/c", "world"]);
    assert_eq!(
        daemon.ok("xenstore-ls", &["/vm"]),
        "a = \"hello\"\nb = \"\"\n c = \"world\"\n"
    );
    assert_eq!(
        daemon.ok("xenstore-ls", &["/local/domain/3"]),
        "domid = \"3\"\nname = \"guest\"\n"
    );
    let with_perms = daemon.ok("xenstore-ls", &["-p", "/local/domain/3"]);
    let lines: Vec<&str> = with_perms.lines().collect();
    assert_eq!(lines.len(), 2, "{with_perms}");
    assert!(
        lines[0].starts_with("domid = \"3\"") && lines[0].ends_with("(n3)"),
        "{with_perms}"
    );
    assert!(
        lines[1].starts_with("name = \"guest\"") && lines[1].ends_with("(n3)"),
        "{with_perms}"
    );
    let root = daemon.ok("xenstore-ls", &["/"]);
    assert!(
        root.contains("local = \"\"\n domain = \"\"\n  3 = \"\"\n"),
        "{root}"
    );
}

#[test]
fn rm_removes_subtrees() {
    let daemon = Daemon::start(&[]);
    daemon.ok(
        "xenstore-write",
        &["/vm/a", "1", "/vm/b/c", "2", "/vm/b/d", "3"],
    );
    daemon.ok("xenstore-rm", &["/vm/b"]);
    assert_eq!(daemon.ok("xenstore-list", &["/vm"]), "a\n");
    assert!(!daemon.run("xenstore-exists", &["/vm/b/c"]).status.success());
    // Removing something absent under an existing parent is fine.
    daemon.ok("xenstore-rm", &["/vm/b"]);
}

#[test]
fn chmod_sets_permissions() {
    let daemon = Daemon::start(&[]);
    daemon.ok("xenstore-write", &["/vm/a", "hello"]);
    daemon.ok("xenstore-chmod", &["/vm/a", "n5", "r6", "b7"]);
    let perms = daemon
        .client()
        .request(MessageType::GetPerms, 0, &nul_terminated(&[b"/vm/a"]));
    assert_eq!(perms.unwrap().unwrap(), b"n5\0r6\0b7\0");
    let listing = daemon.ok("xenstore-ls", &["-p", "/vm"]);
    assert!(listing.trim_end().ends_with("(n5,r6,b7)"), "{listing}");
    // Recursive chmod reaches the children.
    daemon.ok("xenstore-write", &["/vm/b/c", "x"]);
    daemon.ok("xenstore-chmod", &["-r", "/vm/b", "r0"]);
    let perms = daemon
        .client()
        .request(MessageType::GetPerms, 0, &nul_terminated(&[b"/vm/b/c"]));
    assert_eq!(perms.unwrap().unwrap(), b"r0\0");
}

#[test]
fn watch_prints_events() {
    let daemon = Daemon::start(&[]);
    let mut watch = daemon
        .command("xenstore-watch")
        .arg("/w")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start xenstore-watch");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let timeout = Duration::from_secs(10);
    // The initial event of a new watch.
    assert_eq!(lines.recv_timeout(timeout).expect("initial event"), "/w");
    daemon.ok("xenstore-write", &["/w/x", "1"]);
    assert_eq!(
        lines.recv_timeout(timeout).expect("event for the write"),
        "/w/x"
    );
    daemon.ok("xenstore-rm", &["/w"]);
    assert_eq!(
        lines.recv_timeout(timeout).expect("event for the removal"),
        "/w"
    );
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn list_of_a_huge_directory_uses_directory_part() {
    let daemon = Daemon::start(&[]);
    let mut client = daemon.client();
    let mut expected = String::new();
    for index in 0..500 {
        let name = format!("a-rather-long-child-name-{index:04}");
        client.write(&format!("/big/{name}"), b"").unwrap().unwrap();
        expected.push_str(&name);
        expected.push('\n');
    }
    // Too big for one DIRECTORY reply: the tool must fall back to DIRECTORY_PART.
    let one_shot = client.request(MessageType::Directory, 0, &nul_terminated(&[b"/big"]));
    assert_eq!(one_shot.unwrap().unwrap_err(), "E2BIG");
    assert_eq!(daemon.ok("xenstore-list", &["/big"]), expected);
}
