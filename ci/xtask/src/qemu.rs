//! The QEMU machine the microvisor runs on: finding (or installing) `qemu-system-x86_64` and
//! building its command line.
//!
//! The machine is a q35 PC with TCG emulating AMD SVM with nested paging, an Intel IOMMU, the
//! debug console on the first serial port (stdio: QEMU's stdout is the serial output, its stdin
//! the serial input) and `isa-debug-exit` at port 0xf4, through
//! which the microvisor ends the run: `outb(0xf4, v)` makes QEMU exit with `(v << 1) | 1`.
//! The microvisor writes 0 on power-off (status 1) and 1 on a panic (status 3).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The emulator binary.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// Debian's package that provides it.
pub const QEMU_PACKAGE: &str = "qemu-system-x86";

/// QEMU's exit status after the microvisor powered off (`outb(0xf4, 0)`).
pub const STATUS_POWEROFF: i32 = 1;
/// QEMU's exit status after a microvisor panic (`outb(0xf4, 1)`).
pub const STATUS_PANIC: i32 = 3;
/// QEMU's exit status after the microvisor refused to start (`outb(0xf4, 2)`), e.g. no SVM.
pub const STATUS_REFUSED: i32 = 5;
/// The CPU model every boot uses unless a scenario asks for another.
pub const DEFAULT_CPU_MODEL: &str = "qemu64,+svm,+npt,+vgif";

/// Returns the path of `qemu-system-x86_64`, installing Debian's package first if it is not on
/// `PATH`.
pub fn ensure_installed() -> Result<PathBuf> {
    let search_path = std::env::var_os("PATH").unwrap_or_default();
    ensure_installed_in(&search_path, effective_uid())
}

/// [`ensure_installed`] with the directories to search (as in `PATH`) and the effective user
/// id given.
fn ensure_installed_in(search_path: &OsStr, uid: Option<u32>) -> Result<PathBuf> {
    if let Some(path) = find_in(search_path, QEMU_BINARY) {
        return Ok(path);
    }
    eprintln!(
        "xtask: {QEMU_BINARY} is not on PATH; installing Debian's {QEMU_PACKAGE} \
         (apt-get update, then apt-get install -y --no-install-recommends {QEMU_PACKAGE})"
    );
    let Some(apt_get) = find_in(search_path, "apt-get") else {
        bail!(
            "{QEMU_BINARY} is not on PATH and there is no apt-get to install it: install QEMU's \
             x86_64 system emulator with your package manager (Debian and Ubuntu: {QEMU_PACKAGE}) \
             and make sure {QEMU_BINARY} is on PATH"
        );
    };
    if uid.is_some_and(|uid| uid != 0) {
        bail!(
            "{QEMU_BINARY} is not on PATH and installing it needs root: run \
             `sudo apt-get install -y {QEMU_PACKAGE}`, then try again"
        );
    }
    for args in [
        &["update"][..],
        &["install", "-y", "--no-install-recommends", QEMU_PACKAGE][..],
    ] {
        let shown = format!("apt-get {}", args.join(" "));
        let status = Command::new(&apt_get)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("could not start `{shown}`"))?;
        if !status.success() {
            bail!(
                "`{shown}` failed ({status}) while installing QEMU: fix what apt-get reported \
                 above, or install {QEMU_PACKAGE} yourself"
            );
        }
    }
    find_in(search_path, QEMU_BINARY).with_context(|| {
        format!(
            "apt-get installed {QEMU_PACKAGE} but {QEMU_BINARY} is still not on PATH: add the \
             directory that holds it (normally /usr/bin) to PATH"
        )
    })
}

/// The first executable file called `name` in the directories of `search_path` (as in `PATH`).
pub(crate) fn find_in(search_path: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(search_path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The effective user id, from `/proc/self/status` (`None` where that cannot be read).
pub(crate) fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// What to boot and on how big a machine.
#[derive(Clone, Debug)]
pub struct Machine {
    pub qemu: PathBuf,
    /// The microvisor's Multiboot image (`-kernel`).
    pub kernel: PathBuf,
    /// Boot modules in order (`-initrd`): the manifest blob, then the domain images.
    pub modules: Vec<PathBuf>,
    /// The microvisor's command line (`-append`), if any.
    pub cmdline: Option<String>,
    pub cpus: u32,
    pub memory_mib: u32,
    /// QEMU's `-cpu` model; [`DEFAULT_CPU_MODEL`] if `None`.
    pub cpu_model: Option<String>,
    /// More arguments (devices), after the standard ones.
    pub extra_args: Vec<OsString>,
    /// The IOMMU device (`-device ...`); `intel-iommu` if `None`.
    pub iommu: Option<String>,
    /// Run the emulated CPUs on one host thread each (`-accel tcg,thread=multi`) instead of
    /// all on one (the standard). With one thread per CPU, about half of the 2-vCPU Linux
    /// boots end in a silent host reset: the first instruction after a #VMEXIT faults
    /// "not present" although the microvisor's page tables are intact (see ci/README.md);
    /// `cargo xtask soak --mttcg` reproduces it.
    pub multi_threaded_tcg: bool,
}

impl Machine {
    /// The arguments after `qemu-system-x86_64`.
    pub fn args(&self) -> Result<Vec<OsString>> {
        let mut args = machine_args(
            self.multi_threaded_tcg,
            self.cpu_model.as_deref(),
            self.cpus,
            self.memory_mib,
        );
        // The IOMMU comes before any PCI device that should sit behind it.
        args.push("-device".into());
        args.push(
            self.iommu
                .as_deref()
                .unwrap_or("intel-iommu,intremap=on")
                .into(),
        );
        args.extend(os_strings(HEADLESS));
        args.extend(os_strings(&[
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]));
        args.extend(os_strings(SERIAL_ON_STDIO));
        args.extend(self.extra_args.iter().cloned());
        args.push("-kernel".into());
        args.push(self.kernel.clone().into_os_string());
        if !self.modules.is_empty() {
            args.push("-initrd".into());
            args.push(initrd_list(&self.modules)?);
        }
        if let Some(cmdline) = self
            .cmdline
            .as_deref()
            .filter(|cmdline| !cmdline.is_empty())
        {
            args.push("-append".into());
            args.push(cmdline.into());
        }
        Ok(args)
    }

    /// The QEMU process to spawn.
    pub fn command(&self) -> Result<Command> {
        let mut command = Command::new(&self.qemu);
        command.args(self.args()?);
        Ok(command)
    }
}

/// No display, no reboot (a reset ends QEMU), no network.
const HEADLESS: &[&str] = &["-display", "none", "-no-reboot", "-nic", "none"];
/// The first serial port on QEMU's stdin and stdout, and no monitor.
const SERIAL_ON_STDIO: &[&str] = &["-serial", "stdio", "-monitor", "none"];

fn os_strings<'a>(args: &'a [&'a str]) -> impl Iterator<Item = OsString> + 'a {
    args.iter().map(OsString::from)
}

/// The start of every command line: the accelerator, the q35 machine, the CPU model and the
/// machine's size.
fn machine_args(
    multi_threaded_tcg: bool,
    cpu_model: Option<&str>,
    cpus: u32,
    memory_mib: u32,
) -> Vec<OsString> {
    let accel = if multi_threaded_tcg {
        "tcg,thread=multi"
    } else {
        "tcg,thread=single"
    };
    let mut args: Vec<OsString> =
        os_strings(&["-accel", accel, "-machine", "q35", "-cpu"]).collect();
    args.push(cpu_model.unwrap_or(DEFAULT_CPU_MODEL).into());
    args.push("-smp".into());
    args.push(cpus.to_string().into());
    args.push("-m".into());
    args.push(format!("{memory_mib}M").into());
    args
}

/// A Linux kernel booted by QEMU itself through its PVH loader (`-kernel` with an ELF
/// vmlinux that has a PVH entry note), with no microvisor underneath: the baseline of the
/// Linux boot benchmark. The machine is [`Machine`]'s but for the devices that only the
/// microvisor uses: no IOMMU and no debug-exit port (the guest's ACPI power-off ends QEMU,
/// with status 0).
#[derive(Clone, Debug)]
pub struct DirectLinux {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The kernel's command line (`-append`).
    pub cmdline: String,
    pub cpus: u32,
    pub memory_mib: u32,
    /// As [`Machine::multi_threaded_tcg`].
    pub multi_threaded_tcg: bool,
    /// More QEMU arguments (devices), at the end.
    pub extra_args: Vec<OsString>,
}

impl DirectLinux {
    /// The arguments after `qemu-system-x86_64`.
    pub fn args(&self) -> Vec<OsString> {
        let mut args = machine_args(self.multi_threaded_tcg, None, self.cpus, self.memory_mib);
        args.extend(os_strings(HEADLESS));
        args.extend(os_strings(SERIAL_ON_STDIO));
        args.push("-kernel".into());
        args.push(self.kernel.clone().into_os_string());
        args.push("-initrd".into());
        args.push(self.initrd.clone().into_os_string());
        args.push("-append".into());
        args.push(self.cmdline.clone().into());
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The QEMU process to spawn.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.qemu);
        command.args(self.args());
        command
    }
}

/// Joins the module paths for `-initrd "a,b,c"`. QEMU splits that list at commas and ends each
/// file name at the first blank (what follows is the module's string), so paths holding either
/// cannot be passed.
pub fn initrd_list(modules: &[PathBuf]) -> Result<OsString> {
    let mut list = String::new();
    for module in modules {
        let Some(text) = module.to_str() else {
            bail!("boot module path {} is not valid UTF-8", module.display());
        };
        if text.contains(',') || text.contains(char::is_whitespace) {
            bail!(
                "boot module path `{text}` contains a comma or a blank, which QEMU's -initrd list \
                 cannot carry: move the workspace or set CARGO_TARGET_DIR to a path without them"
            );
        }
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(text);
    }
    Ok(list.into())
}

/// How a QEMU process ended, by its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// QEMU exited with this status.
    Code(i32),
    /// QEMU was killed by this signal (when we did not kill it ourselves).
    Signal(i32),
}

impl Exit {
    pub fn from_status(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Signal(0),
        }
    }

    /// What the exit means, for messages.
    pub fn describe(self) -> String {
        match self {
            Exit::Code(STATUS_POWEROFF) => "the microvisor powered off (QEMU status 1)".into(),
            Exit::Code(STATUS_PANIC) => "the microvisor panicked (QEMU status 3)".into(),
            Exit::Code(0) => "QEMU exited with status 0: the machine reset or QEMU quit without \
                              the microvisor powering off (a triple fault with -no-reboot ends this way)"
                .into(),
            Exit::Code(code) => format!(
                "QEMU exited with status {code}, which is neither a power-off (1) nor a microvisor panic (3)"
            ),
            Exit::Signal(signal) => format!("QEMU was killed by signal {signal}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            qemu: PathBuf::from("qemu-system-x86_64"),
            kernel: PathBuf::from("/t/release/microvisor"),
            modules: vec![
                PathBuf::from("/t/xtask/default/manifest.bin"),
                PathBuf::from("/t/release/hello"),
            ],
            cmdline: None,
            cpus: 2,
            memory_mib: 512,
            cpu_model: None,
            extra_args: Vec::new(),
            iommu: None,
            multi_threaded_tcg: false,
        }
    }

    fn joined(args: &[OsString]) -> String {
        args.iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn command_line_is_the_documented_machine() {
        let args = machine().args().unwrap();
        assert_eq!(
            joined(&args),
            "-accel tcg,thread=single -machine q35 -cpu qemu64,+svm,+npt,+vgif -smp 2 -m 512M -device intel-iommu,intremap=on -display none \
             -no-reboot -nic none -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -serial stdio -monitor none -kernel /t/release/microvisor \
             -initrd /t/xtask/default/manifest.bin,/t/release/hello"
        );
    }

    #[test]
    fn direct_linux_is_the_same_machine_without_the_microvisor_devices() {
        let direct = DirectLinux {
            qemu: PathBuf::from("qemu-system-x86_64"),
            kernel: PathBuf::from("/t/linux/debian-vmlinux"),
            initrd: PathBuf::from("/t/linux/debian-initramfs"),
            cmdline: "console=ttyS0 guest.poweroff=1".into(),
            cpus: 2,
            memory_mib: 1024,
            multi_threaded_tcg: false,
            extra_args: Vec::new(),
        };
        let args = direct.args();
        assert_eq!(
            joined(&args),
            "-accel tcg,thread=single -machine q35 -cpu qemu64,+svm,+npt,+vgif -smp 2 -m 1024M -display none \
             -no-reboot -nic none -serial stdio -monitor none -kernel /t/linux/debian-vmlinux \
             -initrd /t/linux/debian-initramfs -append console=ttyS0 guest.poweroff=1"
        );
        let multi = DirectLinux {
            multi_threaded_tcg: true,
            ..direct
        };
        assert!(joined(&multi.args()).starts_with("-accel tcg,thread=multi "));
    }

    #[test]
    fn multi_threaded_tcg_is_asked_for() {
        let mut machine = machine();
        machine.multi_threaded_tcg = true;
        assert!(
            joined(&machine.args().unwrap()).starts_with("-accel tcg,thread=multi -machine q35 ")
        );
    }

    #[test]
    fn cmdline_and_sizes_are_passed() {
        let mut machine = machine();
        machine.cmdline = Some("log=debug".into());
        machine.cpus = 4;
        machine.memory_mib = 1024;
        let args = joined(&machine.args().unwrap());
        assert!(args.contains("-smp 4 -m 1024M"), "{args}");
        assert!(args.ends_with("-append log=debug"), "{args}");
        machine.cmdline = Some(String::new());
        assert!(!joined(&machine.args().unwrap()).contains("-append"));
    }

    #[test]
    fn module_paths_with_commas_or_blanks_are_refused() {
        for bad in ["/a,b/hello", "/a b/hello", "/a\tb/hello"] {
            let error = initrd_list(&[PathBuf::from(bad)]).unwrap_err().to_string();
            assert!(error.contains("CARGO_TARGET_DIR"), "{error}");
        }
        assert_eq!(
            initrd_list(&[PathBuf::from("/a/b")]).unwrap(),
            OsString::from("/a/b")
        );
    }

    #[test]
    fn exit_statuses_are_named() {
        assert!(Exit::Code(1).describe().contains("powered off"));
        assert!(Exit::Code(3).describe().contains("panicked"));
        assert!(Exit::Code(0).describe().contains("status 0"));
        assert!(Exit::Code(5).describe().contains("status 5"));
        assert!(Exit::Signal(9).describe().contains("signal 9"));
    }

    /// Writes an executable script from a child shell, so that no file descriptor for it is
    /// ever open in this (multi-threaded) process when another test forks: executing it could
    /// otherwise fail with "text file busy".
    pub(crate) fn write_script(path: &Path, body: &str) {
        let status = Command::new("/bin/sh")
            .args(["-c", "printf '%s\\n' \"$1\" > \"$0\" && chmod 755 \"$0\""])
            .arg(path)
            .arg(format!("#!/bin/sh\n{body}"))
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub(crate) fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-qemu-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A fake apt-get that logs its arguments and DEBIAN_FRONTEND, and on `install` puts a
    /// fake QEMU next to itself, unless `fail_on` names the subcommand that fails.
    fn fake_apt_get(dir: &Path, fail_on: &str) {
        let log = dir.join("apt.log");
        write_script(
            &dir.join("apt-get"),
            &format!(
                "echo \"$DEBIAN_FRONTEND $*\" >> '{log}'\n\
                 [ \"$1\" = '{fail_on}' ] && exit 100\n\
                 [ \"$1\" = install ] && printf '#!/bin/sh\\n' > '{dir}/{QEMU_BINARY}' && chmod 755 '{dir}/{QEMU_BINARY}'\n\
                 exit 0",
                log = log.display(),
                dir = dir.display()
            ),
        );
    }

    fn apt_log(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("apt.log")).unwrap_or_default()
    }

    #[test]
    fn qemu_on_path_is_used_as_it_is() {
        let dir = scratch("present");
        write_script(&dir.join(QEMU_BINARY), "exit 0");
        fake_apt_get(&dir, "none");
        let found = ensure_installed_in(dir.as_os_str(), Some(1000)).unwrap();
        assert_eq!(found, dir.join(QEMU_BINARY));
        assert_eq!(apt_log(&dir), "", "apt-get must not run");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_qemu_is_installed_with_apt_get() {
        let dir = scratch("install");
        fake_apt_get(&dir, "none");
        let found = ensure_installed_in(dir.as_os_str(), Some(0)).unwrap();
        assert_eq!(found, dir.join(QEMU_BINARY));
        assert_eq!(
            apt_log(&dir),
            "noninteractive update\nnoninteractive install -y --no-install-recommends qemu-system-x86\n"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn install_failures_say_what_to_do() {
        let dir = scratch("update-fails");
        fake_apt_get(&dir, "update");
        let error = format!(
            "{:#}",
            ensure_installed_in(dir.as_os_str(), Some(0)).unwrap_err()
        );
        assert!(error.contains("`apt-get update` failed"), "{error}");
        assert_eq!(
            apt_log(&dir),
            "noninteractive update\n",
            "install must not run after update failed"
        );

        let dir = scratch("install-fails");
        fake_apt_get(&dir, "install");
        let error = format!(
            "{:#}",
            ensure_installed_in(dir.as_os_str(), Some(0)).unwrap_err()
        );
        assert!(
            error.contains("`apt-get install -y --no-install-recommends qemu-system-x86` failed"),
            "{error}"
        );

        let dir = scratch("not-root");
        fake_apt_get(&dir, "none");
        let error = format!(
            "{:#}",
            ensure_installed_in(dir.as_os_str(), Some(1000)).unwrap_err()
        );
        assert!(
            error.contains("needs root")
                && error.contains("sudo apt-get install -y qemu-system-x86"),
            "{error}"
        );
        assert_eq!(apt_log(&dir), "");

        let dir = scratch("no-apt");
        let error = format!(
            "{:#}",
            ensure_installed_in(dir.as_os_str(), Some(0)).unwrap_err()
        );
        assert!(error.contains("no apt-get"), "{error}");

        let dir = scratch("installs-nothing");
        write_script(&dir.join("apt-get"), "exit 0");
        let error = format!(
            "{:#}",
            ensure_installed_in(dir.as_os_str(), Some(0)).unwrap_err()
        );
        assert!(error.contains("still not on PATH"), "{error}");
        for name in [
            "update-fails",
            "install-fails",
            "not-root",
            "no-apt",
            "installs-nothing",
        ] {
            let _ = std::fs::remove_dir_all(scratch(name));
        }
    }

    #[test]
    fn finds_executables_on_path() {
        let search_path = std::env::var_os("PATH").unwrap_or_default();
        assert!(find_in(&search_path, "sh").is_some());
        assert!(find_in(&search_path, "surely-no-such-program-here").is_none());
        assert!(find_in(OsStr::new(""), "sh").is_none());
    }
}
