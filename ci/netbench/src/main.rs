//! `netbench serve [interface]`: the guest half of `cargo xtask bench --only net` (see the
//! library's documentation for the protocol). Built as a static Linux program and put into
//! the benchmark's initramfs; it serves until the host says `quit`, counting what the
//! interface (default `eth0`) does.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("serve") || args.len() > 3 {
        eprintln!("usage: netbench serve [interface]");
        return ExitCode::from(2);
    }
    let iface = args.get(2).map_or("eth0", String::as_str);
    match netbench::guest::serve(iface) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("netbench: serve FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
