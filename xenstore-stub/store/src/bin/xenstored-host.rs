//! `xenstored-host --socket PATH`: serves the store on a unix socket with Xen's plain
//! `xs_wire` framing. Every client is privileged (it acts as the toolstack), as on Xen's
//! own xenstored socket, so Xen's client tools work against it:
//!
//! ```sh
//! XENSTORED_PATH=PATH xenstore-write /vm/name guest
//! ```
//!
//! `--domain ID:NAME` (repeatable) creates `/local/domain/ID` for a domain first.

use std::path::PathBuf;
use std::process::ExitCode;

use xenstore_store::host::Server;
use xenstore_store::{DomId, Quotas};

const USAGE: &str = "usage: xenstored-host --socket PATH [--domain ID:NAME]...";

fn parse_args() -> Result<(PathBuf, Vec<(DomId, String)>), String> {
    let mut socket = None;
    let mut domains = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--socket" => socket = Some(PathBuf::from(args.next().ok_or("--socket needs a path")?)),
            "--domain" => {
                let spec = args.next().ok_or("--domain needs ID:NAME")?;
                let (id, name) = spec.split_once(':').ok_or("--domain needs ID:NAME")?;
                let id = id
                    .parse()
                    .map_err(|_| format!("--domain {spec}: bad domain id"))?;
                domains.push((id, name.to_string()));
            }
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok((socket.ok_or(USAGE)?, domains))
}

fn main() -> ExitCode {
    let (socket, domains) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let server = Server::new(Quotas::default());
    for (domid, name) in domains {
        let result = server.access(|store| match store.introduce_domain(domid, &name) {
            Ok(outgoing) => (Ok(()), outgoing),
            Err(error) => (Err(error), Vec::new()),
        });
        if let Err(error) = result {
            eprintln!("xenstored-host: cannot create domain {domid}: {error}");
            return ExitCode::FAILURE;
        }
    }
    let listener = match Server::bind(&socket) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "xenstored-host: cannot listen on {}: {error}",
                socket.display()
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!("xenstored-host: serving {}", socket.display());
    match server.serve(listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xenstored-host: {error}");
            ExitCode::FAILURE
        }
    }
}
