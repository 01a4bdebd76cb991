//! `cargo xtask run` on a system with an invalid domain file: it must name the file, the line
//! and the key, exit with status 2, and never start QEMU.
//!
//! A fake `qemu-system-x86_64` first on PATH records any start, so the test proves QEMU was not
//! started (and needs no real QEMU). `--no-build` keeps the test from building the images.

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;

#[test]
fn unknown_key_is_reported_with_file_line_and_key_and_qemu_is_not_started() {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-manifest");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let marker = scratch.join("qemu-started");
    let fake_qemu = scratch.join("qemu-system-x86_64");
    std::fs::write(
        &fake_qemu,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
    )
    .unwrap();
    let status = Command::new("chmod")
        .arg("755")
        .arg(&fake_qemu)
        .status()
        .unwrap();
    assert!(status.success());

    let mut search_path = vec![scratch.clone()];
    search_path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let system = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-manifest/system.cfg");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["run", "--no-build"])
        .arg(&system)
        .env("PATH", std::env::join_paths(search_path).unwrap())
        .env("CARGO", env!("CARGO"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert_eq!(
        output.status.code(),
        Some(2),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("bad.cfg:5:"),
        "the message must name file and line:\n{stderr}"
    );
    assert!(
        stderr.contains("`colour`"),
        "the message must name the key:\n{stderr}"
    );
    assert!(stderr.contains("invalid system manifest"), "{stderr}");
    assert!(
        !marker.exists(),
        "QEMU was started although the manifest is invalid"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
