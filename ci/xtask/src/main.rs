//! `cargo xtask`: the project's host tool. Builds the bare-metal images, packs a system's boot
//! modules (the compiled manifest and the domain images), boots it in QEMU, runs the QEMU test
//! scenarios under `ci/scenarios/` and the benchmarks.

#![forbid(unsafe_code)]

mod commands;
mod exchange;
mod images;
mod judge;
mod linux;
mod qemu;
mod scenario;
mod serial;
mod system;
mod workspace;
mod xl_steps;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::system::ManifestRejected;
use crate::workspace::Workspace;

/// Exit status when the system manifest is invalid.
const EXIT_BAD_MANIFEST: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    about = "Build, boot and test the microvisor in QEMU"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Build the bare-metal images (cargo build --release -p microvisor -p hello)
    Build,
    /// Build, then boot a system in QEMU with its serial console on the terminal
    Run(commands::run::RunArgs),
    /// Run the host unit tests, then every QEMU scenario under ci/scenarios
    Test(commands::test::TestArgs),
    /// Measure boot times, the hypercall round trip and the Linux boot against QEMU's own
    Bench(commands::bench::BenchArgs),
    /// Run QEMU scenarios many times, counting passes, failures and machine resets
    Soak(commands::soak::SoakArgs),
    /// Fetch Debian's cloud kernel and build the Linux guest's initramfs (target/linux)
    Linux(commands::linux::LinuxArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.task) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<ManifestRejected>().is_some() {
                ExitCode::from(EXIT_BAD_MANIFEST)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn dispatch(task: Task) -> Result<ExitCode> {
    let workspace = Workspace::locate()?;
    match task {
        Task::Build => commands::build::build(&workspace).map(|()| ExitCode::SUCCESS),
        Task::Run(args) => commands::run::run(&workspace, args),
        Task::Test(args) => commands::test::test(&workspace, args),
        Task::Bench(args) => commands::bench::bench(&workspace, args),
        Task::Soak(args) => commands::soak::soak(&workspace, args),
        Task::Linux(args) => commands::linux::linux(&workspace, args).map(|()| ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults() {
        let cli = Cli::try_parse_from(["xtask", "run"]).unwrap();
        let Task::Run(args) = cli.task else {
            panic!("not run")
        };
        assert_eq!((args.smp, args.memory, args.timeout), (2, 1024, None));
        assert!(args.system_file.is_none());
        let cli = Cli::try_parse_from([
            "xtask",
            "run",
            "x/system.cfg",
            "--timeout",
            "5",
            "--smp",
            "4",
            "--memory",
            "1024",
        ])
        .unwrap();
        let Task::Run(args) = cli.task else {
            panic!("not run")
        };
        assert_eq!((args.smp, args.memory, args.timeout), (4, 1024, Some(5)));
        assert!(Cli::try_parse_from(["xtask", "run", "--smp", "0"]).is_err());
    }

    #[test]
    fn linux_options() {
        let cli = Cli::try_parse_from(["xtask", "linux"]).unwrap();
        let Task::Linux(args) = cli.task else {
            panic!("not linux")
        };
        assert!(!args.refresh);
        let cli = Cli::try_parse_from(["xtask", "linux", "--refresh"]).unwrap();
        assert!(matches!(cli.task, Task::Linux(args) if args.refresh));
    }

    #[test]
    fn test_options() {
        let cli = Cli::try_parse_from(["xtask", "test", "--scenario", "scrub", "--no-host-tests"])
            .unwrap();
        let Task::Test(args) = cli.task else {
            panic!("not test")
        };
        assert_eq!(args.scenario, ["scrub"]);
        assert!(args.no_host_tests);
    }

    #[test]
    fn soak_options() {
        let cli = Cli::try_parse_from(["xtask", "soak"]).unwrap();
        let Task::Soak(args) = cli.task else {
            panic!("not soak")
        };
        assert_eq!(args.runs, 200);
        assert!(args.scenario.is_empty() && !args.mttcg);
        let cli = Cli::try_parse_from([
            "xtask",
            "soak",
            "--runs",
            "10",
            "--scenario",
            "linux-shell",
            "--scenario",
            "scrub",
            "--mttcg",
        ])
        .unwrap();
        let Task::Soak(args) = cli.task else {
            panic!("not soak")
        };
        assert_eq!(args.runs, 10);
        assert_eq!(args.scenario, ["linux-shell", "scrub"]);
        assert!(args.mttcg);
        assert!(Cli::try_parse_from(["xtask", "soak", "--runs", "0"]).is_err());
    }

    #[test]
    fn bench_options() {
        let cli = Cli::try_parse_from(["xtask", "bench"]).unwrap();
        let Task::Bench(args) = cli.task else {
            panic!("not bench")
        };
        assert_eq!(args.runs, 3);
        assert!(args.only.is_empty());
        let cli =
            Cli::try_parse_from(["xtask", "bench", "--only", "linux", "--runs", "5"]).unwrap();
        let Task::Bench(args) = cli.task else {
            panic!("not bench")
        };
        assert_eq!(
            (args.runs, args.only.as_slice()),
            (5, &[commands::bench::Part::Linux][..])
        );
        assert!(Cli::try_parse_from(["xtask", "bench", "--only", "everything"]).is_err());
    }
}
