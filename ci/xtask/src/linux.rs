//! The Linux guest's images: Debian's cloud kernel, taken out of its package as an ELF
//! `vmlinux` that boots as a PVH image, and an initramfs built around Debian's
//! `busybox-static` and the kernel's own Xen front-end modules.
//!
//! They are made once and kept in `<target>/linux/` as `debian-vmlinux` and
//! `debian-initramfs`, the names a domain file gives as `kernel` and `ramdisk`. A stamp file
//! beside them records the kernel version and the version of the recipe ([`RECIPE_VERSION`]);
//! while all three are there, [`ensure`] does nothing, and touches no network.
//!
//! Otherwise the packages are fetched with Debian's package client and nothing else:
//! `apt-cache depends linux-image-cloud-amd64` names the current kernel package
//! (`linux-image-<version>-cloud-amd64`); `apt-get download` fetches its `-unsigned` variant
//! (the same kernel without the Secure Boot signature) when the archive has one, and
//! `busybox-static`, into a scratch directory; `dpkg-deb -x` unpacks them. The package lists
//! are updated (`apt-get update`) only when they do not know the packages.

pub mod cpio;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::qemu::{effective_uid, find_in};
use crate::workspace::Workspace;

/// The kernel image's name, for `kernel = "debian-vmlinux"`.
pub const VMLINUX: &str = "debian-vmlinux";
/// Debian's bzImage as the package ships it (`/boot/vmlinuz-*`), for `xl create`, which
/// takes a bzImage as it is (the boot manifests take the ELF, `debian-vmlinux`).
pub const VMLINUZ: &str = "debian-vmlinuz";
/// The initramfs's name, for `ramdisk = "debian-initramfs"`.
pub const INITRAMFS: &str = "debian-initramfs";
/// The image names this module provides.
pub const IMAGE_NAMES: [&str; 2] = [VMLINUX, INITRAMFS];

/// Bumped whenever what goes into the images changes (the init script, the files, the
/// modules), so that images made by an older recipe are made again.
pub const RECIPE_VERSION: u32 = 10;
/// The stamp file, in the images' directory.
const STAMP: &str = "debian.stamp";

/// Debian's metapackage that depends on the current cloud kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// Debian's statically linked busybox: the initramfs's every command.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The kernel modules the initramfs carries, under `lib/modules/<version>/`, without the
/// `.ko` and any compression suffix. Modules they depend on come along.
/// The virtio ones serve the benchmarks' baselines, the same guest booted by QEMU directly on
/// a `virtio-blk-pci` disk or a `virtio-net-pci` NIC; under the microvisor they find no
/// device and stay idle.
const MODULES: &[&str] = &[
    "kernel/drivers/block/xen-blkfront",
    "kernel/drivers/net/xen-netfront",
    "kernel/drivers/virtio/virtio_pci",
    "kernel/drivers/block/virtio_blk",
    "kernel/drivers/net/virtio_net",
];
/// The busybox applets `/init` runs, linked in `/bin` in the archive itself; `/init` links
/// all the others with `busybox --install -s` for the shell.
const APPLETS: &[&str] = &[
    "sh", "mount", "mkdir", "cat", "echo", "uname", "grep", "insmod", "poweroff", "reboot",
    "setsid", "cttyhack", "ls", "ps", "dmesg", "sleep", "ifconfig", "ip", "mdev",
];
/// Kernel options the guest cannot do without, and why.
const REQUIRED_CONFIG: &[(&str, &str)] = &[
    (
        "CONFIG_XEN_PVH",
        "the PVH entry point the microvisor starts the kernel at",
    ),
    ("CONFIG_BLK_DEV_INITRD", "booting from the initramfs"),
    ("CONFIG_DEVTMPFS", "/dev, which /init mounts"),
    (
        "CONFIG_HVC_XEN",
        "the console on the Xen console ring (hvc0)",
    ),
];

/// The `/init` of the initramfs; `@MODULES@` becomes the modules in load order.
const INIT_SCRIPT: &str = r#"#!/bin/sh
# The first process of the Linux guest, written by `cargo xtask` (ci/xtask/src/linux.rs)
# when it builds this initramfs. Every command is an applet of busybox.
export PATH=/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Links to every other applet, for the interactive shell.
busybox --install -s /bin

cpus=$(grep -c '^processor' /proc/cpuinfo)
hypervisor=none
if [ -r /sys/hypervisor/type ]; then
    hypervisor=$(cat /sys/hypervisor/type)
fi
echo "guest: userspace up: $(uname -r), $cpus cpus online, hypervisor $hypervisor"

# Options of this script on the kernel command line, matched as whole words.
cmdline=" $(cat /proc/cmdline) "
has_option() {
    case "$cmdline" in
    *" $1 "*) return 0 ;;
    esac
    return 1
}

if ! has_option guest.modules=0; then
    for module in @MODULES@; do
        # The module's options from the kernel command line (`xen_blkfront.max_queues=2`),
        # as modprobe would pass them; busybox's insmod does not look there itself.
        prefix="$(echo "$module" | tr - _)."
        options=""
        for word in $cmdline; do
            case "$word" in
            "$prefix"*) options="$options ${word#"$prefix"}" ;;
            esac
        done
        if insmod "/lib/modules/$(uname -r)/$module.ko" $options; then
            echo "guest: loaded $module"
        else
            echo "guest: failed to load $module"
        fi
    done
    # Each virtual block device the toolstack gave this guest, once its backend connected
    # (xen-blkfront then creates the disk): its name, size and mode.
    for vbd in /sys/bus/xen/devices/vbd-*; do
        [ -e "$vbd" ] || continue
        tries=0
        while [ -z "$(ls "$vbd/block" 2>/dev/null)" ] && [ $tries -lt 100 ]; do
            usleep 100000
            tries=$((tries + 1))
        done
        disk=$(ls "$vbd/block" 2>/dev/null)
        if [ -z "$disk" ]; then
            echo "guest: ${vbd##*/} did not connect in 10 s"
            continue
        fi
        mode=read-write
        [ "$(cat /sys/block/$disk/ro)" = 1 ] && mode=read-only
        echo "guest: disk $disk: $(cat /sys/block/$disk/size) sectors, $mode"
    done
    # Each network interface the toolstack gave this guest (xen-netfront's eth0, ...).
    for vif in /sys/bus/xen/devices/vif-*; do
        [ -e "$vif" ] || continue
        dev=$(ls "$vif/net" 2>/dev/null)
        if [ -z "$dev" ]; then
            echo "guest: ${vif##*/} has no network interface"
            continue
        fi
        echo "guest: network $dev: mac $(cat /sys/class/net/$dev/address)"
    done
fi

# `guest.ip=<address>/<prefix>[,<gateway>]`: eth0 up with that address (and a default route).
for word in $cmdline; do
    case "$word" in
    guest.ip=*)
        spec="${word#guest.ip=}"
        address="${spec%%,*}"
        gateway=""
        [ "$address" != "$spec" ] && gateway="${spec#*,}"
        if ip link set eth0 up && ip addr add "$address" dev eth0; then
            [ -n "$gateway" ] && ip route add default via "$gateway"
            echo "guest: eth0 up: $address${gateway:+, gateway $gateway}"
        else
            echo "guest: eth0 could not be given $address"
        fi
        ;;
    esac
done

# `guest.serve=1`: a web page on port 80 and an echo server on port 7, for the host to reach.
if has_option guest.serve=1; then
    mkdir -p /srv/www
    echo "hello from $(uname -n), Linux $(uname -r), over xen-netfront" > /srv/www/index.html
    httpd -p 80 -h /srv/www
    nc -ll -p 7 -e cat &
    echo "guest: serving http on port 80 and echo on port 7"
fi

# `guest.run=<file>`: a script (added to the initramfs, as the benchmarks do) to run before
# the shell or the power-off.
for word in $cmdline; do
    case "$word" in
    guest.run=*)
        script="${word#guest.run=}"
        echo "guest: running $script"
        sh "$script"
        echo "guest: $script exited with status $?"
        ;;
    esac
done

if has_option guest.poweroff=1; then
    echo "guest: powering off"
    poweroff -f
    echo "guest: poweroff -f failed"
fi

echo "guest: shell ready"
export PS1='guest# '
cd /root
# A session of its own with the console as its controlling terminal, for job control.
exec setsid cttyhack sh
"#;

/// `/sbin/poweroff`, the kernel's `poweroff_cmd`.
const POWEROFF_SCRIPT: &str = "#!/bin/busybox sh\necho \"guest: powering off (asked by the toolstack)\" > /dev/console\n/bin/busybox sync\nexec /bin/busybox poweroff -f\n";

/// `/bin/blkstream`: a verified write stream for the restart scenarios.
/// `blkstream write DEV` writes 1 MiB chunks over the first 32 MiB of DEV, pass after pass,
/// each synced (fsync) before the next, until `/tmp/stop` exists; every 4 KiB block carries
/// its pass, chunk and block number. It prints `writer: started`, then `writer: stopped at
/// pass P chunk C, longest 1 MiB write N ms` (or `writer: chunk C failed` for a write that
/// failed). `blkstream verify DEV` drops the page cache and compares every chunk the writer
/// acknowledged with what its last pass wrote: `verify: N chunks checked, B bad`.
const BLKSTREAM_SCRIPT: &str = r#"#!/bin/sh
chunks=32
filler=$(printf '%04096d' 0)
gen() {
    awk -v p="$1" -v c="$2" -v f="$filler" 'BEGIN { for (b = 0; b < 256; b++) printf "%s\n", substr(sprintf("pass %06d chunk %04d block %03d ", p, c, b) f, 1, 4095) }'
}
centis() { t=$(cut -d' ' -f1 /proc/uptime); echo "${t%.*}${t#*.}"; }
case "$1" in
write)
    echo "writer: started"
    p=0; longest=0
    while :; do
        c=0
        while [ "$c" -lt "$chunks" ]; do
            if [ -e /tmp/stop ]; then
                echo "$p $c" > /tmp/blkstream.last
                echo "writer: stopped at pass $p chunk $c, longest 1 MiB write ${longest}0 ms"
                exit 0
            fi
            t0=$(centis)
            gen "$p" "$c" | dd of="$2" bs=4096 seek=$((c * 256)) count=256 conv=notrunc,fsync 2>/dev/null || echo "writer: chunk $c failed"
            d=$(( $(centis) - t0 ))
            [ "$d" -gt "$longest" ] && longest=$d
            c=$((c + 1))
        done
        p=$((p + 1))
    done ;;
verify)
    read p c < /tmp/blkstream.last
    echo 3 > /proc/sys/vm/drop_caches
    n=0; bad=0; k=0
    while [ "$k" -lt "$chunks" ]; do
        q=$p
        [ "$k" -ge "$c" ] && q=$((p - 1))
        if [ "$q" -ge 0 ]; then
            n=$((n + 1))
            want=$(gen "$q" "$k" | md5sum)
            got=$(dd if="$2" bs=4096 skip=$((k * 256)) count=256 2>/dev/null | md5sum)
            [ "$want" = "$got" ] || { bad=$((bad + 1)); echo "verify: chunk $k of pass $q differs"; }
        fi
        k=$((k + 1))
    done
    echo "verify: $n chunks checked, $bad bad" ;;
*)
    echo "usage: blkstream write|verify DEVICE" >&2
    exit 2 ;;
esac
"#;

/// The images, ready to be named by a domain file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxImages {
    /// The directory holding both: an image directory for the manifest compiler.
    pub dir: PathBuf,
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
    /// The kernel's version, as `uname -r` prints it (`6.1.0-57-cloud-amd64`).
    pub version: String,
}

impl LinuxImages {
    fn in_dir(dir: &Path, version: String) -> Self {
        LinuxImages {
            dir: dir.to_path_buf(),
            vmlinux: dir.join(VMLINUX),
            initramfs: dir.join(INITRAMFS),
            version,
        }
    }
}

/// The images in `<target>/linux`, made first if they are missing or were made by another
/// recipe.
pub fn ensure(workspace: &Workspace) -> Result<LinuxImages> {
    let dir = workspace.linux_dir();
    match cached(&dir) {
        Some(images) => Ok(images),
        None => fetch(&dir),
    }
}

/// The images in `dir` if the stamp says this recipe made them and both are there.
fn cached(dir: &Path) -> Option<LinuxImages> {
    let stamp = std::fs::read_to_string(dir.join(STAMP)).ok()?;
    let field = |name: &str| {
        stamp.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().to_string())
        })
    };
    let recipe: u32 = field("recipe")?.parse().ok()?;
    let version = field("kernel").filter(|version| !version.is_empty())?;
    let images = LinuxImages::in_dir(dir, version);
    (recipe == RECIPE_VERSION && images.vmlinux.is_file() && images.initramfs.is_file())
        .then_some(images)
}

fn stamp_text(version: &str, package: &str) -> String {
    format!(
        "# What {VMLINUX} and {INITRAMFS} were made from; delete this file to make them again.\n\
         kernel {version}\npackage {package}\nrecipe {RECIPE_VERSION}\n"
    )
}

/// Fetches the packages and makes both images in `dir`, whatever is there already.
pub fn fetch(dir: &Path) -> Result<LinuxImages> {
    let scratch = dir.join("fetch");
    remove_dir(&scratch)?;
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("could not create {}", scratch.display()))?;
    let search_path = std::env::var_os("PATH").unwrap_or_default();
    let mut apt = Apt::find(&search_path, effective_uid())?;
    let (version, package) = download(&mut apt, &scratch)?;

    let kernel_tree = scratch.join("kernel");
    let busybox_tree = scratch.join("busybox");
    apt.unpack(&find_deb(&scratch, &package)?, &kernel_tree)?;
    apt.unpack(&find_deb(&scratch, BUSYBOX_PACKAGE)?, &busybox_tree)?;

    let config = kernel_tree.join(format!("boot/config-{version}"));
    check_config(&config, &read_text(&config)?)?;
    let vmlinuz = kernel_tree.join(format!("boot/vmlinuz-{version}"));
    let bzimage_bytes = read(&vmlinuz)?;
    let vmlinux = bzimage::extract_vmlinux(&bzimage_bytes).with_context(|| {
        format!(
            "could not take the vmlinux out of {} (package {package})",
            vmlinuz.display()
        )
    })?;
    let busybox = read_busybox(&busybox_tree)?;
    let modules = collect_modules(&kernel_tree.join("lib/modules").join(&version), MODULES)?;
    let initramfs = build_initramfs(&version, &busybox, &modules)?;

    let images = LinuxImages::in_dir(dir, version.clone());
    write_file(&images.vmlinux, &vmlinux.elf)?;
    write_file(&dir.join(VMLINUZ), &bzimage_bytes)?;
    write_file(&images.initramfs, &initramfs)?;
    write_file(&dir.join(STAMP), stamp_text(&version, &package).as_bytes())?;
    remove_dir(&scratch)?;
    let module_names: Vec<&str> = modules.iter().map(|module| module.name.as_str()).collect();
    eprintln!(
        "xtask: Linux {version}: {VMLINUX} is {} (a {}-compressed bzImage's payload, PVH entry {:#x}); \
         {INITRAMFS} is {} (busybox, {})",
        size(vmlinux.elf.len()),
        vmlinux.compression,
        vmlinux.pvh_entry,
        size(initramfs.len()),
        module_names.join(", ")
    );
    Ok(images)
}

/// Resolves the kernel package and downloads it with busybox into `scratch`; updates the
/// package lists and tries again once if that fails with lists never updated here.
/// Returns the kernel version and the kernel package downloaded.
fn download(apt: &mut Apt, scratch: &Path) -> Result<(String, String)> {
    loop {
        match try_download(apt, scratch) {
            Err(error) if !apt.updated => {
                eprintln!("xtask: {error:#}; updating the package lists and trying again");
                apt.update()?;
            }
            result => return result,
        }
    }
}

fn try_download(apt: &Apt, scratch: &Path) -> Result<(String, String)> {
    let kernel = apt.kernel_package()?;
    let version = kernel_version(&kernel)?;
    let unsigned = format!("{kernel}-unsigned");
    let package = if apt.has_package(&unsigned)? {
        unsigned
    } else {
        kernel
    };
    eprintln!(
        "xtask: fetching Debian's Linux {version} ({package}) and {BUSYBOX_PACKAGE} with \
         apt-get download, for {VMLINUX} and {INITRAMFS}"
    );
    apt.download(&[&package, BUSYBOX_PACKAGE], scratch)?;
    Ok((version, package))
}

/// The version (`uname -r`) in a kernel package's name: `linux-image-<version>`.
fn kernel_version(package: &str) -> Result<String> {
    match package.strip_prefix("linux-image-") {
        Some(version) if !version.is_empty() => Ok(version.to_string()),
        _ => bail!("{package} is not named linux-image-<version>"),
    }
}

/// Debian's package tools, found on `PATH`.
struct Apt {
    apt_get: PathBuf,
    apt_cache: PathBuf,
    dpkg_deb: PathBuf,
    root: bool,
    /// Whether `apt-get update` ran (it runs at most once).
    updated: bool,
}

impl Apt {
    fn find(search_path: &OsStr, uid: Option<u32>) -> Result<Self> {
        let tools =
            ["apt-get", "apt-cache", "dpkg-deb"].map(|name| (name, find_in(search_path, name)));
        let missing: Vec<&str> = tools
            .iter()
            .filter(|(_, path)| path.is_none())
            .map(|(name, _)| *name)
            .collect();
        let [(_, Some(apt_get)), (_, Some(apt_cache)), (_, Some(dpkg_deb))] = tools else {
            bail!(
                "the Linux guest's images ({VMLINUX}, {INITRAMFS}) are made from Debian's packages \
                 {KERNEL_METAPACKAGE} and {BUSYBOX_PACKAGE}, fetched with Debian's package tools, \
                 and {} not on PATH: run this on Debian or Ubuntu, where apt and dpkg are installed, \
                 or put apt-get, apt-cache and dpkg-deb on PATH",
                match missing.as_slice() {
                    [one] => format!("{one} is"),
                    many => format!("{} are", many.join(", ")),
                }
            );
        };
        Ok(Apt {
            apt_get,
            apt_cache,
            dpkg_deb,
            root: uid == Some(0),
            updated: false,
        })
    }

    /// A command with apt's messages in English, so that they can be read.
    fn command(program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        command
    }

    /// Runs `command`, its output to our stderr; `shown` names it in messages.
    fn run_visibly(mut command: Command, shown: &str) -> Result<()> {
        let status = command
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .with_context(|| format!("could not start `{shown}`"))?;
        if !status.success() {
            bail!("`{shown}` failed ({status})");
        }
        Ok(())
    }

    /// Runs `command` and returns what it printed.
    fn output(mut command: Command, shown: &str) -> Result<String> {
        let output = command
            .output()
            .with_context(|| format!("could not start `{shown}`"))?;
        if !output.status.success() {
            bail!(
                "`{shown}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn update(&mut self) -> Result<()> {
        self.updated = true;
        if !self.root {
            bail!(
                "the package lists need updating to fetch {KERNEL_METAPACKAGE}, which needs root: \
                 run `sudo apt-get update`, then try again"
            );
        }
        eprintln!("xtask: apt-get update");
        let mut command = Self::command(&self.apt_get);
        command.arg("update");
        Self::run_visibly(command, "apt-get update").context(
            "updating Debian's package lists failed: fix what apt-get reported above, then try again",
        )
    }

    /// The package the kernel metapackage depends on.
    fn kernel_package(&self) -> Result<String> {
        let mut command = Self::command(&self.apt_cache);
        command.args(["depends", KERNEL_METAPACKAGE]);
        let shown = format!("apt-cache depends {KERNEL_METAPACKAGE}");
        let listing = Self::output(command, &shown)?;
        kernel_dependency(&listing).with_context(|| {
            format!(
                "`{shown}` names no linux-image-<version>-cloud-amd64 package:\n{}",
                listing.trim()
            )
        })
    }

    /// Whether the package lists know `package`.
    fn has_package(&self, package: &str) -> Result<bool> {
        let output = Self::command(&self.apt_cache)
            .args(["show", "--no-all-versions", package])
            .stderr(Stdio::null())
            .output()
            .context("could not start `apt-cache show`")?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(output.status.success()
            && text
                .lines()
                .any(|line| line == format!("Package: {package}")))
    }

    fn download(&self, packages: &[&str], dir: &Path) -> Result<()> {
        let shown = format!("apt-get download {}", packages.join(" "));
        let mut command = Self::command(&self.apt_get);
        command.arg("download").args(packages).current_dir(dir);
        Self::run_visibly(command, &shown)
    }

    fn unpack(&self, deb: &Path, into: &Path) -> Result<()> {
        let mut command = Self::command(&self.dpkg_deb);
        command.arg("-x").arg(deb).arg(into);
        let shown = format!("dpkg-deb -x {} {}", deb.display(), into.display());
        Self::output(command, &shown).map(drop)
    }
}

/// The kernel package in `apt-cache depends linux-image-cloud-amd64` output: the first
/// dependency named `linux-image-<version>-cloud-amd64`.
fn kernel_dependency(listing: &str) -> Option<String> {
    listing.lines().find_map(|line| {
        let line = line.trim().trim_start_matches('|');
        let name = line.strip_prefix("Depends:")?.trim();
        let version = name
            .strip_prefix("linux-image-")?
            .strip_suffix("-cloud-amd64")?;
        let plausible = version.starts_with(|c: char| c.is_ascii_digit())
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
        plausible.then(|| name.to_string())
    })
}

/// The `.deb` that `apt-get download` wrote for `package` (`<package>_<version>_<arch>.deb`).
fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))?;
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(dir.join(&*name));
        }
    }
    bail!(
        "apt-get download succeeded but left no {prefix}*.deb in {}",
        dir.display()
    )
}

/// Checks that the kernel was built with what the guest needs.
fn check_config(path: &Path, config: &str) -> Result<()> {
    let set: HashSet<&str> = config
        .lines()
        .filter_map(|line| line.strip_suffix("=y"))
        .collect();
    for (option, why) in REQUIRED_CONFIG {
        if !set.contains(option) {
            bail!(
                "{}: the kernel is built without {option}=y, which the guest needs for {why}",
                path.display()
            );
        }
    }
    Ok(())
}

/// busybox, from the unpacked `busybox-static` package.
fn read_busybox(tree: &Path) -> Result<Vec<u8>> {
    let candidates = [tree.join("bin/busybox"), tree.join("usr/bin/busybox")];
    let Some(path) = candidates.iter().find(|path| path.is_file()) else {
        bail!("the {BUSYBOX_PACKAGE} package holds neither bin/busybox nor usr/bin/busybox");
    };
    let busybox = read(path)?;
    if !busybox.starts_with(b"\x7fELF") {
        bail!("{} is not an ELF executable", path.display());
    }
    Ok(busybox)
}

/// A kernel module for the initramfs, decompressed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Module {
    /// The file name without `.ko` (`xen-blkfront`).
    name: String,
    data: Vec<u8>,
}

/// The suffixes a module file may have, and how each is decompressed.
const MODULE_SUFFIXES: &[&str] = &[".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// The modules `wanted` (paths under `modules_dir` without suffix) and the modules they
/// depend on, decompressed, in an order that loads each after its dependencies.
fn collect_modules(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<Module>> {
    let mut index: Option<BTreeMap<String, PathBuf>> = None;
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for relative in wanted {
        let path = MODULE_SUFFIXES
            .iter()
            .map(|suffix| modules_dir.join(format!("{relative}{suffix}")))
            .find(|path| path.is_file())
            .with_context(|| {
                format!(
                    "the kernel package has no module {relative}.ko (nor .ko.xz, .ko.zst, .ko.gz) \
                     under {}",
                    modules_dir.display()
                )
            })?;
        add_module(modules_dir, &path, &mut index, &mut seen, &mut order, 0)?;
    }
    Ok(order)
}

/// Adds the module at `path` after the modules it depends on (found by name in the tree).
fn add_module(
    modules_dir: &Path,
    path: &Path,
    index: &mut Option<BTreeMap<String, PathBuf>>,
    seen: &mut HashSet<String>,
    order: &mut Vec<Module>,
    depth: usize,
) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = MODULE_SUFFIXES
        .iter()
        .rev()
        .find_map(|suffix| file_name.strip_suffix(suffix))
        .unwrap_or(&file_name)
        .to_string();
    if !seen.insert(module_key(&name)) {
        return Ok(());
    }
    if depth > 16 {
        bail!("module dependencies nest deeper than 16 at {name}");
    }
    let data = decompress_module(path)?;
    for dependency in module_dependencies(&data) {
        if seen.contains(&module_key(&dependency)) {
            continue;
        }
        if index.is_none() {
            *index = Some(index_modules(modules_dir)?);
        }
        let dependency_path = index
            .as_ref()
            .and_then(|index| index.get(&module_key(&dependency)))
            .cloned()
            .with_context(|| {
                format!(
                    "module {name} depends on {dependency}, which the kernel package does not have"
                )
            })?;
        add_module(modules_dir, &dependency_path, index, seen, order, depth + 1)?;
    }
    order.push(Module { name, data });
    Ok(())
}

/// Module names are the same with `-` or `_`.
fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

/// Every module file under `dir`, by [`module_key`] of its name.
fn index_modules(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut index = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("could not list {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push(path);
                continue;
            }
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = MODULE_SUFFIXES
                .iter()
                .rev()
                .find_map(|suffix| file_name.strip_suffix(suffix))
            {
                index.insert(module_key(name), path);
            }
        }
    }
    Ok(index)
}

/// The module at `path`, decompressed by its suffix (busybox's insmod takes plain `.ko`).
fn decompress_module(path: &Path) -> Result<Vec<u8>> {
    let data = read(path)?;
    let name = path.to_string_lossy();
    let mut output = Vec::new();
    let result = if name.ends_with(".ko.xz") {
        lzma_rust2::XzReader::new(data.as_slice(), true)
            .read_to_end(&mut output)
            .map(drop)
    } else if name.ends_with(".ko.zst") {
        ruzstd::decoding::StreamingDecoder::new(data.as_slice())
            .map_err(|error| std::io::Error::other(error.to_string()))
            .and_then(|mut decoder| decoder.read_to_end(&mut output))
            .map(drop)
    } else if name.ends_with(".ko.gz") {
        flate2::read::GzDecoder::new(data.as_slice())
            .read_to_end(&mut output)
            .map(drop)
    } else {
        output = data;
        Ok(())
    };
    result.with_context(|| format!("could not decompress {}", path.display()))?;
    if !output.starts_with(b"\x7fELF") {
        bail!("{} is not a kernel module (an ELF object)", path.display());
    }
    Ok(output)
}

/// The modules named by the `depends=` entry of a module's `.modinfo`.
fn module_dependencies(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(start) = module.windows(KEY.len()).position(|window| window == KEY) else {
        return Vec::new();
    };
    let value = &module[start + KEY.len()..];
    let end = value
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// The initramfs: an uncompressed `newc` cpio archive (the kernel takes it as it is).
fn build_initramfs(version: &str, busybox: &[u8], modules: &[Module]) -> Result<Vec<u8>> {
    let mut archive = cpio::Archive::new();
    for dir in ["bin", "dev", "etc", "lib", "lib/modules", "proc", "sys"] {
        archive.directory(dir, 0o755)?;
    }
    archive.directory("root", 0o700)?;
    archive.directory("tmp", 0o1777)?;
    archive.char_device("dev/console", 0o600, 5, 1)?;
    archive.char_device("dev/null", 0o666, 1, 3)?;
    archive.file("bin/busybox", 0o755, busybox)?;
    for applet in APPLETS {
        archive.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    let modules_dir = format!("lib/modules/{version}");
    archive.directory(&modules_dir, 0o755)?;
    for module in modules {
        archive.file(
            &format!("{modules_dir}/{}.ko", module.name),
            0o644,
            &module.data,
        )?;
    }
    archive.file("init", 0o755, init_script(modules).as_bytes())?;
    // What the kernel runs when the toolstack asks for a power-off (Xen's
    // `control/shutdown` = "poweroff", from `xl shutdown`): with no init daemon to signal,
    // sync and power off.
    archive.directory("sbin", 0o755)?;
    archive.file("sbin/poweroff", 0o755, POWEROFF_SCRIPT.as_bytes())?;
    archive.file("bin/blkstream", 0o755, BLKSTREAM_SCRIPT.as_bytes())?;
    Ok(archive.finish())
}

fn init_script(modules: &[Module]) -> String {
    let names: Vec<&str> = modules.iter().map(|module| module.name.as_str()).collect();
    INIT_SCRIPT.replace("@MODULES@", &names.join(" "))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("could not read {}", path.display()))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))
}

/// Writes `path` whole or not at all (through a temporary file beside it).
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, data)
        .with_context(|| format!("could not write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| {
        format!(
            "could not rename {} to {}",
            partial.display(),
            path.display()
        )
    })
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("could not remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn size(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::qemu::tests::{scratch, write_script};

    #[test]
    fn the_kernel_package_is_read_from_apt_cache_depends() {
        let listing = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n";
        assert_eq!(
            kernel_dependency(listing).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        let alternatives = "linux-image-cloud-amd64\n |Depends: <linux-image-x>\n  \
                            PreDepends: dpkg\n |Depends: linux-image-6.12.9+deb13-cloud-amd64\n";
        assert_eq!(
            kernel_dependency(alternatives).as_deref(),
            Some("linux-image-6.12.9+deb13-cloud-amd64")
        );
        for nothing in [
            "",
            "linux-image-cloud-amd64\n",
            "  Depends: linux-image-cloud-amd64\n",
            "  Depends: linux-image-6.1 x-cloud-amd64",
        ] {
            assert_eq!(kernel_dependency(nothing), None, "{nothing:?}");
        }
        assert_eq!(
            kernel_version("linux-image-6.1.0-57-cloud-amd64").unwrap(),
            "6.1.0-57-cloud-amd64"
        );
        assert!(kernel_version("linux-headers-6.1").is_err());
    }

    #[test]
    fn missing_package_tools_say_what_to_do() {
        let dir = scratch("linux-no-apt");
        write_script(&dir.join("apt-get"), "exit 0");
        let error = Apt::find(dir.as_os_str(), Some(0))
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("apt-cache, dpkg-deb are not on PATH")
                && error.contains("Debian or Ubuntu"),
            "{error}"
        );
        write_script(&dir.join("apt-cache"), "exit 0");
        let error = Apt::find(dir.as_os_str(), Some(0))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("dpkg-deb is not on PATH"), "{error}");
        write_script(&dir.join("dpkg-deb"), "exit 0");
        assert!(Apt::find(dir.as_os_str(), Some(0)).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Fake package tools that log their calls; `apt-cache depends` knows the kernel only
    /// after `apt-get update`, and `apt-get update` fails if `update_fails`.
    fn fake_apt(name: &str, update_fails: bool) -> (PathBuf, Apt) {
        let dir = scratch(name);
        let log = dir.join("log");
        let known = dir.join("updated");
        write_script(
            &dir.join("apt-cache"),
            &format!(
                "echo \"apt-cache $* LC_ALL=$LC_ALL\" >> '{log}'\n\
                 [ -e '{known}' ] || {{ echo 'E: No packages found' >&2; exit 100; }}\n\
                 [ \"$1\" = depends ] && printf 'linux-image-cloud-amd64\\n  Depends: linux-image-9.9.9-1-cloud-amd64\\n'\n\
                 [ \"$1\" = show ] && [ \"$3\" = linux-image-9.9.9-1-cloud-amd64-unsigned ] && echo \"Package: $3\"\n\
                 exit 0",
                log = log.display(),
                known = known.display()
            ),
        );
        write_script(
            &dir.join("apt-get"),
            &format!(
                "echo \"apt-get $*\" >> '{log}'\n\
                 [ \"$1\" = update ] && {{ [ {fails} = 1 ] && exit 100; touch '{known}'; }}\n\
                 [ \"$1\" = download ] && {{ shift; for p; do : > \"${{p}}_1.0_amd64.deb\"; done; }}\n\
                 exit 0",
                log = log.display(),
                known = known.display(),
                fails = u8::from(update_fails)
            ),
        );
        write_script(&dir.join("dpkg-deb"), "exit 0");
        let apt = Apt::find(dir.as_os_str(), Some(0)).unwrap();
        (dir, apt)
    }

    #[test]
    fn the_lists_are_updated_once_when_they_do_not_know_the_kernel() {
        let (dir, mut apt) = fake_apt("linux-apt-update", false);
        let downloads = dir.join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let (version, package) = download(&mut apt, &downloads).unwrap();
        assert_eq!(version, "9.9.9-1-cloud-amd64");
        assert_eq!(package, "linux-image-9.9.9-1-cloud-amd64-unsigned");
        assert!(find_deb(&downloads, &package).is_ok());
        assert!(find_deb(&downloads, BUSYBOX_PACKAGE).is_ok());
        assert!(find_deb(&downloads, "linux-image-9.9.9-1-cloud-amd64").is_err());
        let log = std::fs::read_to_string(dir.join("log")).unwrap();
        assert_eq!(
            log,
            "apt-cache depends linux-image-cloud-amd64 LC_ALL=C\n\
             apt-get update\n\
             apt-cache depends linux-image-cloud-amd64 LC_ALL=C\n\
             apt-cache show --no-all-versions linux-image-9.9.9-1-cloud-amd64-unsigned LC_ALL=C\n\
             apt-get download linux-image-9.9.9-1-cloud-amd64-unsigned busybox-static\n"
        );
        // Known now: no update the second time.
        let mut apt = Apt::find(dir.as_os_str(), Some(0)).unwrap();
        download(&mut apt, &downloads).unwrap();
        let log = std::fs::read_to_string(dir.join("log")).unwrap();
        assert_eq!(log.matches("apt-get update").count(), 1, "{log}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn apt_failures_say_what_to_do() {
        let (dir, mut apt) = fake_apt("linux-apt-update-fails", true);
        let error = format!("{:#}", download(&mut apt, &dir).unwrap_err());
        assert!(
            error.contains("`apt-get update` failed")
                && error.contains("fix what apt-get reported"),
            "{error}"
        );

        let mut apt = Apt::find(dir.as_os_str(), Some(1000)).unwrap();
        let error = format!("{:#}", download(&mut apt, &dir).unwrap_err());
        assert!(error.contains("sudo apt-get update"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn images_are_cached_by_the_stamp() {
        let dir = scratch("linux-cache");
        assert_eq!(cached(&dir), None);
        std::fs::write(dir.join(VMLINUX), b"elf").unwrap();
        std::fs::write(dir.join(INITRAMFS), b"cpio").unwrap();
        assert_eq!(cached(&dir), None, "no stamp");
        std::fs::write(
            dir.join(STAMP),
            stamp_text("6.1.0-57-cloud-amd64", "linux-image-x"),
        )
        .unwrap();
        let images = cached(&dir).unwrap();
        assert_eq!(images.version, "6.1.0-57-cloud-amd64");
        assert_eq!(
            (images.vmlinux, images.initramfs),
            (dir.join(VMLINUX), dir.join(INITRAMFS))
        );
        std::fs::write(
            dir.join(STAMP),
            stamp_text("6.1", "x").replace(&format!("recipe {RECIPE_VERSION}"), "recipe 0"),
        )
        .unwrap();
        assert_eq!(cached(&dir), None, "another recipe");
        std::fs::write(dir.join(STAMP), stamp_text("6.1", "x")).unwrap();
        std::fs::remove_file(dir.join(INITRAMFS)).unwrap();
        assert_eq!(cached(&dir), None, "an image is missing");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_config_must_have_what_the_guest_needs() {
        let good = "CONFIG_XEN_PVH=y\n# CONFIG_KERNEL_GZIP is not set\nCONFIG_KERNEL_LZ4=y\n\
                    CONFIG_BLK_DEV_INITRD=y\nCONFIG_DEVTMPFS=y\nCONFIG_HVC_XEN=y\n";
        check_config(Path::new("config"), good).unwrap();
        let error = check_config(
            Path::new("boot/config-x"),
            &good.replace("CONFIG_XEN_PVH=y", "# CONFIG_XEN_PVH is not set"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("boot/config-x: the kernel is built without CONFIG_XEN_PVH=y"),
            "{error}"
        );
    }

    /// A module file: an ELF header's magic and a `.modinfo`-like string table.
    fn module_bytes(name: &str, depends: &str) -> Vec<u8> {
        format!("\x7fELF\x02\x01\x01\0license=GPL\0depends={depends}\0name={name}\0").into_bytes()
    }

    #[test]
    fn modules_come_decompressed_after_their_dependencies() {
        let dir = scratch("linux-modules");
        let blk = module_bytes("xen_blkfront", "xen_ring,crc-x");
        let mut encoder =
            lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
        encoder.write_all(&blk).unwrap();
        let block = dir.join("kernel/drivers/block");
        std::fs::create_dir_all(&block).unwrap();
        std::fs::write(block.join("xen-blkfront.ko.xz"), encoder.finish().unwrap()).unwrap();
        let net = dir.join("kernel/drivers/net");
        std::fs::create_dir_all(&net).unwrap();
        let netfront = module_bytes("xen_netfront", "xen_ring");
        let zstd = ruzstd::encoding::compress_to_vec(
            netfront.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        std::fs::write(net.join("xen-netfront.ko.zst"), zstd).unwrap();
        let lib = dir.join("kernel/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("xen_ring.ko"), module_bytes("xen_ring", "")).unwrap();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&module_bytes("crc_x", "")).unwrap();
        std::fs::write(lib.join("crc-x.ko.gz"), gzip.finish().unwrap()).unwrap();

        let modules = collect_modules(&dir, &MODULES[..2]).unwrap();
        let names: Vec<&str> = modules.iter().map(|module| module.name.as_str()).collect();
        assert_eq!(names, ["xen_ring", "crc-x", "xen-blkfront", "xen-netfront"]);
        assert_eq!(modules[2].data, blk);
        assert_eq!(modules[3].data, netfront);
        assert_eq!(module_dependencies(&modules[2].data), ["xen_ring", "crc-x"]);

        std::fs::remove_file(lib.join("xen_ring.ko")).unwrap();
        let error = format!("{:#}", collect_modules(&dir, &MODULES[..2]).unwrap_err());
        assert!(
            error.contains(
                "xen-blkfront depends on xen_ring, which the kernel package does not have"
            ),
            "{error}"
        );
        let error = format!(
            "{:#}",
            collect_modules(&dir, &["kernel/fs/nothing"]).unwrap_err()
        );
        assert!(error.contains("no module kernel/fs/nothing.ko"), "{error}");
        std::fs::write(block.join("xen-blkfront.ko.xz"), b"not xz").unwrap();
        let error = format!("{:#}", collect_modules(&dir, &MODULES[..2]).unwrap_err());
        assert!(
            error.contains("could not decompress") && error.contains("xen-blkfront.ko.xz"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_initramfs_holds_busybox_the_modules_and_init() {
        let modules = vec![
            Module {
                name: "xen-blkfront".into(),
                data: module_bytes("xen_blkfront", ""),
            },
            Module {
                name: "xen-netfront".into(),
                data: module_bytes("xen_netfront", ""),
            },
        ];
        let archive =
            build_initramfs("6.1.0-57-cloud-amd64", b"\x7fELF busybox", &modules).unwrap();
        let entries = cpio::tests::parse(&archive);
        let find = |name: &str| {
            entries
                .iter()
                .find(|entry| entry.name == name)
                .unwrap_or_else(|| panic!("{name} is not in the archive"))
        };
        for dir in [
            "bin",
            "dev",
            "etc",
            "proc",
            "sys",
            "tmp",
            "root",
            "lib/modules/6.1.0-57-cloud-amd64",
        ] {
            assert_eq!(find(dir).mode & 0o170_000, cpio::S_IFDIR, "{dir}");
        }
        assert_eq!(find("tmp").mode, cpio::S_IFDIR | 0o1777);
        assert_eq!(
            (find("dev/console").mode, find("dev/console").rdev),
            (cpio::S_IFCHR | 0o600, (5, 1))
        );
        assert_eq!(
            (find("dev/null").mode, find("dev/null").rdev),
            (cpio::S_IFCHR | 0o666, (1, 3))
        );
        assert_eq!(find("bin/busybox").data, b"\x7fELF busybox");
        for applet in APPLETS {
            let link = find(&format!("bin/{applet}"));
            assert_eq!(
                (link.mode, link.data.as_slice()),
                (cpio::S_IFLNK | 0o777, &b"busybox"[..])
            );
        }
        assert_eq!(
            find("lib/modules/6.1.0-57-cloud-amd64/xen-netfront.ko").data,
            modules[1].data
        );
        let init = find("init");
        assert_eq!(init.mode, cpio::S_IFREG | 0o755);
        let script = String::from_utf8(init.data.clone()).unwrap();
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(
            script.contains("for module in xen-blkfront xen-netfront; do"),
            "{script}"
        );
        assert!(!script.contains('@'));
        // Each directory comes before what is in it.
        let position = |name: &str| entries.iter().position(|entry| entry.name == name).unwrap();
        assert!(position("lib/modules") < position("lib/modules/6.1.0-57-cloud-amd64"));
        assert!(
            position("lib/modules/6.1.0-57-cloud-amd64")
                < position("lib/modules/6.1.0-57-cloud-amd64/xen-blkfront.ko")
        );
        assert!(position("bin") < position("bin/busybox"));
    }

    /// The init script is valid shell, and behaves as documented when run by a host shell
    /// against fake `/proc` answers: each command it runs is a shell function here.
    #[test]
    fn the_init_script_prints_what_the_scenarios_look_for() {
        let modules = vec![Module {
            name: "xen-blkfront".into(),
            data: Vec::new(),
        }];
        let script = init_script(&modules);
        let status = Command::new("sh")
            .args(["-n", "-c", &script])
            .status()
            .unwrap();
        assert!(status.success(), "sh -n rejects the init script");
        let run = |cmdline: &str| {
            let stubs = format!(
                "mount() {{ :; }}\nbusybox() {{ :; }}\nuname() {{ echo 6.1.0-test; }}\n\
                 insmod() {{ echo \"insmod $*\"; }}\npoweroff() {{ echo \"poweroff $1\"; }}\n\
                 setsid() {{ echo \"setsid $*\"; }}\ncd() {{ :; }}\n\
                 grep() {{ echo 2; }}\ncat() {{ case \"$1\" in /proc/cmdline) echo '{cmdline}';; *) echo xen;; esac; }}\n"
            );
            // `exec` would replace the test's shell: make it a function too.
            let body = script
                .replace("exec setsid", "setsid")
                .replacen("#!/bin/sh\n", "", 1);
            let output = Command::new("sh")
                .arg("-c")
                .arg(format!("{stubs}{body}"))
                .output()
                .unwrap();
            String::from_utf8(output.stdout).unwrap()
        };
        let plain = run("console=hvc0");
        assert!(
            plain.starts_with("guest: userspace up: 6.1.0-test, 2 cpus online, hypervisor"),
            "{plain}"
        );
        assert!(
            plain.ends_with("guest: shell ready\nsetsid cttyhack sh\n"),
            "{plain}"
        );
        assert!(plain.contains("guest: loaded xen-blkfront\n"), "{plain}");
        // A module's options on the kernel command line reach its insmod, and only its.
        let options = run("console=hvc0 xen_blkfront.max_queues=2 xen_netfront.x=1");
        assert!(
            options.contains("insmod /lib/modules/6.1.0-test/xen-blkfront.ko max_queues=2\n"),
            "{options}"
        );
        assert!(!run("console=hvc0 guest.modules=0").contains("insmod"));
        let both = run("console=hvc0 guest.poweroff=1");
        assert!(
            both.contains(
                "insmod /lib/modules/6.1.0-test/xen-blkfront.ko\nguest: loaded xen-blkfront\n"
            ) && both.contains("guest: powering off\npoweroff -f\n"),
            "{both}"
        );
        let script = run("console=hvc0 guest.run=/bench.sh guest.poweroff=1");
        assert!(
            script.contains("guest: running /bench.sh\nguest: /bench.sh exited with status")
                && script.contains("status 2\nguest: powering off\npoweroff -f\n"),
            "{script}"
        );
        // A word that only contains the option is not the option.
        assert!(!run("xguest.poweroff=1").contains("powering off"));
    }
}
