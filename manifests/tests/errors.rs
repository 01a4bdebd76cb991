//! One invalid file per error message (in `tests/bad/`), each with the exact message it must
//! produce; then the kernel errors, on images written into a scratch directory.
//!
//! The tests run from the crate directory (cargo's rule), so the paths in the messages are
//! relative to it.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::{compile_error, domain_cfg, phys32_entry_note, ElfImage, Note, Scratch};
use manifests::{parse_domain_config, pvh_entry_point, ImageDefect};

/// How a bad file is read.
#[derive(Clone, Copy)]
enum Reader {
    /// `parse_domain_config` on the file's text.
    Domain,
    /// `compile_system` on the file, with an image directory that does not exist.
    System,
}
use Reader::{Domain, System};

/// File in `tests/bad/`, how to read it, and the whole message.
#[rustfmt::skip]
const BAD_FILES: &[(&str, Reader, &str)] = &[
    // Syntax.
    ("syntax-expected-key.cfg", Domain, "tests/bad/syntax-expected-key.cfg:3: expected a key name, found `=`"),
    ("syntax-no-equals.cfg", Domain, "tests/bad/syntax-no-equals.cfg:5: key `memory`: expected `=` after the key, found `16`"),
    ("syntax-missing-value.cfg", Domain, "tests/bad/syntax-missing-value.cfg:5: key `memory`: missing value after `=`"),
    ("syntax-bare-word.cfg", Domain, "tests/bad/syntax-bare-word.cfg:5: key `memory`: expected a value (a quoted string, an integer or a list), found `lots`"),
    ("syntax-unterminated-string.cfg", Domain, "tests/bad/syntax-unterminated-string.cfg:4: key `kernel`: unterminated string: the closing \" must be on the same line"),
    ("syntax-unknown-escape.cfg", Domain, "tests/bad/syntax-unknown-escape.cfg:6: key `cmdline`: unknown escape `\\t` in a string (the escapes are \\\\, \\\" and \\')"),
    ("syntax-bad-integer.cfg", Domain, "tests/bad/syntax-bad-integer.cfg:5: key `memory`: `16M` is not an integer (write decimal digits, or 0x and hex digits)"),
    ("syntax-trailing-text.cfg", Domain, "tests/bad/syntax-trailing-text.cfg:5: key `memory`: unexpected `vcpus` after the value (one setting per line)"),
    ("syntax-unclosed-list.cfg", System, "tests/bad/syntax-unclosed-list.cfg:2: key `domains`: the list opened on line 2 is never closed with `]`"),
    ("syntax-list-item.cfg", System, "tests/bad/syntax-list-item.cfg:4: key `domains`: list items must be quoted strings, found `b.cfg`"),
    ("syntax-list-separator.cfg", System, "tests/bad/syntax-list-separator.cfg:4: key `domains`: expected `,` or `]` after a list item, found `\"b.cfg\"`"),
    // Keys.
    ("duplicate-key.cfg", Domain, "tests/bad/duplicate-key.cfg:6: key `memory`: set twice: first on line 5, again on line 6"),
    ("unknown-key.cfg", Domain, "tests/bad/unknown-key.cfg:6: unknown key `memroy` (keys allowed here: name, type, kernel, ramdisk, memory, vcpus, root, cmdline, extra, on_poweroff, on_reboot, on_crash, ioports, pci, disk, vif)"),
    ("unsupported-key.cfg", Domain, "tests/bad/unsupported-key.cfg:6: key `vtpm` is not supported yet"),
    ("missing-name.cfg", Domain, "tests/bad/missing-name.cfg: key `name`: required key is missing"),
    ("missing-type.cfg", Domain, "tests/bad/missing-type.cfg: key `type`: required key is missing (xl's default is \"pv\", which is not supported: write type = \"pvh\")"),
    ("missing-kernel.cfg", Domain, "tests/bad/missing-kernel.cfg: key `kernel`: required key is missing"),
    ("missing-memory.cfg", Domain, "tests/bad/missing-memory.cfg: key `memory`: required key is missing"),
    // Values.
    ("name-not-string.cfg", Domain, "tests/bad/name-not-string.cfg:2: key `name`: expected a name of 1 to 31 characters from A-Z a-z 0-9 _ . -, found 7"),
    ("name-bad-character.cfg", Domain, "tests/bad/name-bad-character.cfg:2: key `name`: expected a name of 1 to 31 characters from A-Z a-z 0-9 _ . -, found \"my guest\""),
    ("name-too-long.cfg", Domain, "tests/bad/name-too-long.cfg:2: key `name`: expected a name of 1 to 31 characters from A-Z a-z 0-9 _ . -, found \"a-domain-name-of-32-characters-x\""),
    ("name-reserved.cfg", Domain, "tests/bad/name-reserved.cfg:2: key `name`: \"microvisor\" is reserved for the microvisor itself"),
    ("type-hvm.cfg", Domain, "tests/bad/type-hvm.cfg:3: key `type`: \"hvm\" is not supported yet, use \"pvh\""),
    ("type-unknown.cfg", Domain, "tests/bad/type-unknown.cfg:3: key `type`: expected \"pvh\", found \"PVH\""),
    ("kernel-empty.cfg", Domain, "tests/bad/kernel-empty.cfg:4: key `kernel`: expected a path to a PVH kernel image, found \"\""),
    ("kernel-not-string.cfg", Domain, "tests/bad/kernel-not-string.cfg:4: key `kernel`: expected a path to a PVH kernel image, found a list"),
    ("ramdisk-empty.cfg", Domain, "tests/bad/ramdisk-empty.cfg:5: key `ramdisk`: expected a path to an initramfs image, found \"\""),
    ("ramdisk-not-string.cfg", Domain, "tests/bad/ramdisk-not-string.cfg:5: key `ramdisk`: expected a path to an initramfs image, found a list"),
    ("memory-string.cfg", Domain, "tests/bad/memory-string.cfg:5: key `memory`: expected an integer number of MiB, found \"lots\""),
    ("memory-too-small.cfg", Domain, "tests/bad/memory-too-small.cfg:5: key `memory`: 2 is out of range: allowed are 4 to 2048 MiB"),
    ("memory-too-large.cfg", Domain, "tests/bad/memory-too-large.cfg:5: key `memory`: 4096 is out of range: allowed are 4 to 2048 MiB"),
    ("vcpus-zero.cfg", Domain, "tests/bad/vcpus-zero.cfg:6: key `vcpus`: 0 is out of range: allowed are 1 to 8"),
    ("vcpus-too-many.cfg", Domain, "tests/bad/vcpus-too-many.cfg:6: key `vcpus`: 9 is out of range: allowed are 1 to 8"),
    ("cmdline-and-extra.cfg", Domain, "tests/bad/cmdline-and-extra.cfg:7: key `extra`: both `cmdline` (line 6) and `extra` set the kernel command line; keep one"),
    ("cmdline-not-string.cfg", Domain, "tests/bad/cmdline-not-string.cfg:6: key `cmdline`: expected a quoted kernel command line, found a list"),
    ("cmdline-too-long.cfg", Domain, "tests/bad/cmdline-too-long.cfg:6: key `cmdline`: is 512 bytes long, at most 511 are allowed"),
    ("cmdline-control-character.cfg", Domain, "tests/bad/cmdline-control-character.cfg:6: key `extra`: must not contain control characters (found '\\t')"),
    ("root-empty.cfg", Domain, "tests/bad/root-empty.cfg:6: key `root`: expected a root device, such as \"/dev/xvda1\", found \"\""),
    ("root-not-string.cfg", Domain, "tests/bad/root-not-string.cfg:6: key `root`: expected a root device, such as \"/dev/xvda1\", found 1"),
    ("root-control-character.cfg", Domain, "tests/bad/root-control-character.cfg:6: key `root`: must not contain control characters (found '\\t')"),
    ("root-too-long.cfg", Domain, "tests/bad/root-too-long.cfg:6: key `root`: is 512 bytes long, at most 511 are allowed"),
    ("root-cmdline-too-long.cfg", Domain, "tests/bad/root-cmdline-too-long.cfg:7: key `root`: `root=` and `extra` (line 6) make a kernel command line of 516 bytes, at most 511 are allowed"),
    ("on-crash-coredump.cfg", Domain, "tests/bad/on-crash-coredump.cfg:6: key `on_crash`: \"coredump-destroy\" is not supported yet, use \"destroy\", \"restart\" or \"preserve\""),
    ("on-reboot-unknown.cfg", Domain, "tests/bad/on-reboot-unknown.cfg:6: key `on_reboot`: expected \"destroy\", \"restart\" or \"preserve\", found \"reboot\""),
    ("on-poweroff-integer.cfg", Domain, "tests/bad/on-poweroff-integer.cfg:6: key `on_poweroff`: expected \"destroy\", \"restart\" or \"preserve\", found 1"),
    ("ioports-not-list.cfg", Domain, "tests/bad/ioports-not-list.cfg:6: key `ioports`: expected a list of I/O port ranges in hex, such as [ \"3f8-3ff\" ], found \"3f8-3ff\""),
    ("ioports-bad-range.cfg", Domain, "tests/bad/ioports-bad-range.cfg:8: key `ioports`: expected an I/O port or range of ports in hex, such as \"3f8-3ff\" or \"80\", found \"com1\""),
    ("ioports-out-of-range.cfg", Domain, "tests/bad/ioports-out-of-range.cfg:6: key `ioports`: \"10007\" is out of range: I/O ports are 0 to ffff (hex)"),
    ("ioports-backwards.cfg", Domain, "tests/bad/ioports-backwards.cfg:6: key `ioports`: \"3ff-3f8\" is backwards: its first port is above its last"),
    ("ioports-overlap.cfg", Domain, "tests/bad/ioports-overlap.cfg:9: key `ioports`: \"3fc\" overlaps \"3f8-3ff\" (line 7); list each port once"),
    ("ioports-too-many.cfg", Domain, "tests/bad/ioports-too-many.cfg:6: key `ioports`: lists 9 I/O port ranges, at most 8 are allowed"),
    ("pci-not-list.cfg", Domain, "tests/bad/pci-not-list.cfg:6: key `pci`: expected a list of PCI functions [DDDD:]BB:DD.F in hex, such as [ \"0000:00:03.0\" ], found \"0000:00:03.0\""),
    ("pci-bad-function.cfg", Domain, "tests/bad/pci-bad-function.cfg:8: key `pci`: expected a PCI function [DDDD:]BB:DD.F in hex, such as \"0000:00:03.0\" or \"03:00.1\", found \"eth0\""),
    ("pci-device-out-of-range.cfg", Domain, "tests/bad/pci-device-out-of-range.cfg:6: key `pci`: \"00:20.0\": device 20 is out of range: PCI devices are 00 to 1f (hex)"),
    ("pci-function-out-of-range.cfg", Domain, "tests/bad/pci-function-out-of-range.cfg:6: key `pci`: \"00:03.8\": function 8 is out of range: PCI functions are 0 to 7 (hex)"),
    ("pci-all-functions.cfg", Domain, "tests/bad/pci-all-functions.cfg:6: key `pci`: \"03:00.*\": all the functions of a device at once (`.*`) are not supported yet; list each function, such as \"03:00.0\""),
    ("pci-virtual-slot.cfg", Domain, "tests/bad/pci-virtual-slot.cfg:6: key `pci`: \"03:00.0@4\": a virtual slot (`@4`) is not supported yet; the domain sees the function at its own address"),
    ("pci-options.cfg", Domain, "tests/bad/pci-options.cfg:6: key `pci`: \"0000:00:03.0,permissive=1\": per-device options are not supported yet; write the function alone, without `,permissive=1`"),
    ("pci-duplicate.cfg", Domain, "tests/bad/pci-duplicate.cfg:9: key `pci`: \"0000:00:03.0\" is the same function as \"00:03.0\" (line 7); list each function once"),
    ("pci-too-many.cfg", Domain, "tests/bad/pci-too-many.cfg:6: key `pci`: lists 9 PCI functions, at most 8 are allowed"),
    // Disks.
    ("disk-backendtype-qdisk.cfg", Domain, "tests/bad/disk-backendtype-qdisk.cfg:6: key `disk`: \"0000:00:03.0,raw,xvda,backendtype=qdisk\": backendtype \"qdisk\" is not supported: disks are served by a block backend in a driver domain (backendtype phy)"),
    ("disk-bad-access.cfg", Domain, "tests/bad/disk-bad-access.cfg:6: key `disk`: \"0000:00:03.0,raw,xvda,readonly\": access \"readonly\" is not r or ro (read-only), w or rw (writable)"),
    ("disk-bad-backend-name.cfg", Domain, "tests/bad/disk-bad-backend-name.cfg:6: key `disk`: \"0000:00:03.0,raw,xvda,backend=blk/back\": backend \"blk/back\" is not a domain name (1 to 31 of A-Z a-z 0-9 _ . -)"),
    ("disk-bad-devtype.cfg", Domain, "tests/bad/disk-bad-devtype.cfg:6: key `disk`: \"devtype=floppy,target=0000:00:03.0\": devtype \"floppy\" is not known; the device type is disk"),
    ("disk-bad-slice.cfg", Domain, "tests/bad/disk-bad-slice.cfg:6: key `disk`: \"0000:00:03.0@64M,raw,xvda\": slice \"64M\" is not START+SIZE, such as \"64M+128M\""),
    ("disk-bad-target.cfg", Domain, "tests/bad/disk-bad-target.cfg:6: key `disk`: \"eth0,raw,xvda\": target \"eth0\" is not a PCI function [DDDD:]BB:DD.F in hex, with or without a slice @START+SIZE, such as \"0000:00:03.0\" or \"0000:00:03.0@64M+128M\""),
    ("disk-bad-vdev.cfg", Domain, "tests/bad/disk-bad-vdev.cfg:6: key `disk`: \"0000:00:03.0,raw,vda\": vdev \"vda\" is not a virtual disk: write xvd and letters (xvda, xvdb, ..., xvdz, xvdaa, ...) or the device number in decimal"),
    ("disk-cdrom.cfg", Domain, "tests/bad/disk-cdrom.cfg:6: key `disk`: \"0000:00:03.0,,xvdc,ro,devtype=cdrom\": CD-ROM drives are not supported; a disk is devtype=disk"),
    ("disk-format-qcow2.cfg", Domain, "tests/bad/disk-format-qcow2.cfg:6: key `disk`: \"0000:00:03.0,qcow2,xvda\": format \"qcow2\" is not supported: the backend serves raw disks only (format raw)"),
    ("disk-legacy-syntax.cfg", Domain, "tests/bad/disk-legacy-syntax.cfg:6: key `disk`: \"phy:/dev/vg/guest,xvda,w\": `phy:` before the target is xl's deprecated syntax, which is not supported: write <target>,<format>,<vdev>,<access> or key=value parameters, such as \"0000:00:03.0,raw,xvda,rw\""),
    ("disk-missing-target.cfg", Domain, "tests/bad/disk-missing-target.cfg:6: key `disk`: \"vdev=xvda,access=rw\": no target: give the backend's PCI function that holds the disk, such as `0000:00:03.0,raw,xvda,rw` or `target=0000:00:03.0`"),
    ("disk-missing-vdev.cfg", Domain, "tests/bad/disk-missing-vdev.cfg:6: key `disk`: \"0000:00:03.0\": no vdev: give the name the guest sees the disk by, such as `xvda`"),
    ("disk-not-list.cfg", Domain, "tests/bad/disk-not-list.cfg:6: key `disk`: expected a list of disk specifications, such as [ \"0000:00:03.0,raw,xvda,rw\" ], found \"0000:00:03.0,raw,xvda,rw\""),
    ("disk-parameter-twice.cfg", Domain, "tests/bad/disk-parameter-twice.cfg:6: key `disk`: \"0000:00:03.0,raw,xvda,rw,vdev=xvdb\": gives `vdev` twice (each parameter once, by position or by key)"),
    ("disk-slice-bad-size.cfg", Domain, "tests/bad/disk-slice-bad-size.cfg:6: key `disk`: \"0000:00:03.0@64MB+1G,raw,xvda\": slice start \"64MB\" is not a byte count: decimal digits, then K, M, G or T for KiB, MiB, GiB or TiB if you like"),
    ("disk-slice-empty.cfg", Domain, "tests/bad/disk-slice-empty.cfg:6: key `disk`: \"0000:00:03.0@1M+0,raw,xvda\": slice size \"0\" is 0; a slice holds at least one sector (512 bytes)"),
    ("disk-slice-not-sector-multiple.cfg", Domain, "tests/bad/disk-slice-not-sector-multiple.cfg:6: key `disk`: \"0000:00:03.0@1000+1M,raw,xvda\": slice start \"1000\" is 1000 bytes, not a multiple of the 512-byte sector"),
    ("disk-slice-too-large.cfg", Domain, "tests/bad/disk-slice-too-large.cfg:6: key `disk`: \"0000:00:03.0@16777215T+1T,raw,xvda\": slice \"16777215T+1T\" ends past the 16 EiB that a 64-bit byte count reaches"),
    ("disk-target-out-of-range.cfg", Domain, "tests/bad/disk-target-out-of-range.cfg:6: key `disk`: \"0000:00:20.0,raw,xvda\": target \"0000:00:20.0\": device 20 is out of range: PCI devices are 00 to 1f (hex)"),
    ("disk-target-path.cfg", Domain, "tests/bad/disk-target-path.cfg:6: key `disk`: \"/dev/vg/guest,raw,xvda,rw\": target \"/dev/vg/guest\" is a path, but a disk here is on a PCI function of its backend: write the function, as in the backend's `pci`, such as \"0000:00:03.0\", and @START+SIZE for a slice of it"),
    ("disk-too-many-positional.cfg", Domain, "tests/bad/disk-too-many-positional.cfg:6: key `disk`: \"0000:00:03.0,raw,xvda,rw,ro\": \"ro\" is a positional parameter, but target, format, vdev and access (the positional parameters) are all given already"),
    ("disk-too-many.cfg", Domain, "tests/bad/disk-too-many.cfg:6: key `disk`: lists 9 disks, at most 8 are allowed"),
    ("disk-unknown-parameter.cfg", Domain, "tests/bad/disk-unknown-parameter.cfg:6: key `disk`: \"0000:00:03.0,raw,xvda,mode=rw\": unknown parameter `mode=` (parameters allowed: target, vdev, access, format, devtype, backend, backendtype)"),
    ("disk-unsupported-parameter.cfg", Domain, "tests/bad/disk-unsupported-parameter.cfg:6: key `disk`: \"0000:00:03.0,raw,xvda,rw,script=block-iscsi\": `script=` is not supported yet"),
    ("disk-vdev-out-of-range.cfg", Domain, "tests/bad/disk-vdev-out-of-range.cfg:6: key `disk`: \"0000:00:03.0,raw,4294967296\": vdev \"4294967296\" is out of range: the disks are xvda to xvdbgqcv (1048576 of them), the device numbers 0 to 4294967295"),
    ("disk-vdev-partition.cfg", Domain, "tests/bad/disk-vdev-partition.cfg:6: key `disk`: \"0000:00:03.0,raw,xvda1\": vdev \"xvda1\" is a partition; give whole disks only, such as \"xvda\" (the guest partitions it, or give it a slice of the backend's disk as a disk of its own)"),
    ("disk-vdev-sd.cfg", Domain, "tests/bad/disk-vdev-sd.cfg:6: key `disk`: \"0000:00:03.0,raw,sda\": vdev \"sda\": use xvd names (\"xvda\"): a Linux PVH guest sees its disks as /dev/xvd*"),
    ("disk-vdev-twice.cfg", Domain, "tests/bad/disk-vdev-twice.cfg:9: key `disk`: \"0000:00:03.0@2G+1G,raw,51712\": vdev \"51712\" is already the vdev of \"0000:00:03.0@0+1G,raw,xvda\" (line 7); give each disk its own"),
    ("vif-group-mac.cfg", Domain, "tests/bad/vif-group-mac.cfg:6: key `vif`: \"mac=01:00:5e:00:00:01\": mac \"01:00:5e:00:00:01\" is a group (multicast) address; a network interface needs a unicast one (bit 0 of the first byte clear)"),
    ("vif-bad-mac.cfg", Domain, "tests/bad/vif-bad-mac.cfg:6: key `vif`: \"mac=00:16:3e:00:00\": mac \"00:16:3e:00:00\" is not six hex bytes separated by colons, such as \"00:16:3e:01:02:03\""),
    ("vif-ioemu.cfg", Domain, "tests/bad/vif-ioemu.cfg:6: key `vif`: \"type=ioemu, bridge=xenbr0\": type ioemu is not supported: a PVH guest has no emulated NIC; its interfaces are xen-netfront vifs (type=vif)"),
    ("vif-unsupported-parameter.cfg", Domain, "tests/bad/vif-unsupported-parameter.cfg:6: key `vif`: \"bridge=xenbr0, ip=10.0.0.2\": `ip=` is an xl vif parameter not supported here (parameters allowed: mac, bridge, backend, type)"),
    ("vif-unknown-parameter.cfg", Domain, "tests/bad/vif-unknown-parameter.cfg:6: key `vif`: \"brigde=xenbr0\": unknown parameter `brigde=` (parameters allowed: mac, bridge, backend, type)"),
    ("vif-bad-bridge.cfg", Domain, "tests/bad/vif-bad-bridge.cfg:6: key `vif`: \"bridge=the-bridge-of-the-dmz\": bridge \"the-bridge-of-the-dmz\" is not a bridge name: 1 to 15 of A-Z a-z 0-9 _ . -"),
    ("vif-too-many.cfg", Domain, "tests/bad/vif-too-many.cfg:6: key `vif`: lists 9 network interfaces, at most 8 are allowed"),
    ("system-vif-no-backend.cfg", System, "tests/bad/support/vif-guest.cfg:6: key `vif`: \"mac=00:16:3e:00:00:01\": no backend: give the interface backend=<driver domain>, or set `net_backend` in the system file tests/bad/system-vif-no-backend.cfg"),
    ("system-vif-same-mac.cfg", System, "tests/bad/support/vif-guest-same-mac.cfg:6: key `vif`: \"mac=00:16:3e:00:00:01\": mac 00:16:3e:00:00:01 is already the address of vif 0 of domain \"guest\" (tests/bad/support/vif-guest.cfg:6); give each interface its own"),
    ("system-vif-needs-xenstore.cfg", System, "tests/bad/system-vif-needs-xenstore.cfg: key `xenstore_domain`: required when a domain has network interfaces (tests/bad/support/vif-guest.cfg:6 gives one): the xenstore domain tells the backends which vifs to serve"),
    ("system-vif-unknown-backend.cfg", System, "tests/bad/system-vif-unknown-backend.cfg:7: key `net_backend`: no domain listed in `domains` is named \"netback\" (the domains are: store, guest)"),
    // System files.
    ("system-missing-domains.cfg", System, "tests/bad/system-missing-domains.cfg: key `domains`: required key is missing (write domains = [] for a system of no domains)"),
    ("system-unknown-key.cfg", System, "tests/bad/system-unknown-key.cfg:2: unknown key `domain` (keys allowed here: domains, xenstore_domain, console_domain, disk_backend, net_backend, control_domain)"),
    ("system-domains-not-list.cfg", System, "tests/bad/system-domains-not-list.cfg:2: key `domains`: expected a list of domain files, found \"support/good.cfg\""),
    ("system-empty-entry.cfg", System, "tests/bad/system-empty-entry.cfg:4: key `domains`: expected a domain file, found \"\""),
    ("system-too-many-domains.cfg", System, "tests/bad/system-too-many-domains.cfg:2: key `domains`: lists 17 domains, at most 16 are allowed"),
    ("system-ioports-taken.cfg", System, "tests/bad/support/uart-too.cfg:8: key `ioports`: \"0x3fd\" overlaps \"3f8-3ff\" given to domain \"uart\" (tests/bad/support/uart.cfg:6); an I/O port belongs to one domain only"),
    ("system-pci-taken.cfg", System, "tests/bad/support/nic-too.cfg:8: key `pci`: \"03:00.0\" is already given to domain \"nic\" as \"0000:03:00.0\" (tests/bad/support/nic.cfg:6); a PCI function belongs to one domain only"),
    ("system-unknown-console-domain.cfg", System, "tests/bad/system-unknown-console-domain.cfg:3: key `console_domain`: no domain listed in `domains` is named \"console\" (the domains are: good)"),
    ("system-unknown-control-domain.cfg", System, "tests/bad/system-unknown-control-domain.cfg:3: key `control_domain`: no domain listed in `domains` is named \"control\" (the domains are: good)"),
    ("system-unknown-xenstore-domain.cfg", System, "tests/bad/system-unknown-xenstore-domain.cfg:3: key `xenstore_domain`: no domain listed in `domains` is named \"good.cfg\" (the domains are: good)"),
    ("system-console-domain-not-string.cfg", System, "tests/bad/system-console-domain-not-string.cfg:3: key `console_domain`: expected the name of a domain listed in `domains`, found 0"),
    ("system-disk-cmdline-full.cfg", System, "tests/bad/support/disk-guest.cfg:6: key `disk`: \"0000:00:03.0,raw,xvda,rw\": its entry makes the command line of the xenstore domain \"store\" (tests/bad/support/store-long-cmdline.cfg) 524 bytes long, at most 511 are allowed: the xenstore domain gets the system's disks as `vbds=` on its command line"),
    ("system-disk-needs-xenstore.cfg", System, "tests/bad/system-disk-needs-xenstore.cfg: key `xenstore_domain`: required when a domain has disks (tests/bad/support/disk-guest.cfg:6 gives one): the xenstore domain tells the backends which disks to serve"),
    ("system-disk-no-backend.cfg", System, "tests/bad/support/disk-guest.cfg:6: key `disk`: \"0000:00:03.0,raw,xvda,rw\": no backend: give the disk backend=<driver domain>, or set `disk_backend` in the system file tests/bad/system-disk-no-backend.cfg"),
    ("system-disk-not-in-backend.cfg", System, "tests/bad/support/disk-guest-far.cfg:6: key `disk`: \"0000:00:07.0,raw,xvda,rw\": target 0000:00:07.0 is not a PCI function of backend \"blkback\" (`disk_backend`, tests/bad/system-disk-not-in-backend.cfg:8): its `pci` in tests/bad/support/blkback.cfg is [ \"0000:00:03.0\", \"0000:00:04.0\" ]"),
    ("system-disk-overlap.cfg", System, "tests/bad/support/disk-guest-slice.cfg:8: key `disk`: \"0000:00:03.0@1G+1G,raw,xvdb,ro\": overlaps \"0000:00:03.0,raw,xvda,rw\" of domain \"guest\" (tests/bad/support/disk-guest.cfg:6) on 0000:00:03.0 of backend \"blkback\", and one of them is writable; give each writable disk a slice of its own"),
    ("system-disk-own-backend.cfg", System, "tests/bad/support/disk-self.cfg:7: key `disk`: \"vdev=xvda, backend=self, target=0000:00:05.0@0+1G\": backend \"self\" is this domain itself; a disk is served by another domain, the driver domain that has its PCI function"),
    ("system-disk-unknown-backend.cfg", System, "tests/bad/support/disk-guest-blk.cfg:6: key `disk`: \"0000:00:03.0,raw,xvda,rw,backend=blk\": backend \"blk\" is not a domain of the system (the domains are: store, blkback, guest-blk)"),
    ("system-unknown-disk-backend.cfg", System, "tests/bad/system-unknown-disk-backend.cfg:7: key `disk_backend`: no domain listed in `domains` is named \"blkbak\" (the domains are: store, blkback)"),
    // The operating system's wording of the I/O error follows this prefix.
    ("system-missing-domain-file.cfg", System, "tests/bad/system-missing-domain-file.cfg:4: key `domains`: cannot read tests/bad/support/no-such-file.cfg: "),
    ("system-duplicate-name.cfg", System, "tests/bad/support/same-name.cfg:3: key `name`: domain name \"good\" is already used by tests/bad/support/good.cfg:2"),
    ("system-bad-domain.cfg", System, "tests/bad/memory-string.cfg:5: key `memory`: expected an integer number of MiB, found \"lots\""),
    ("system-kernel-not-found.cfg", System, "tests/bad/support/no-such-kernel.cfg:4: key `kernel`: kernel image \"no-such-image\" not found; looked for tests/bad/support/no-such-image, tests/no-such-images/no-such-image"),
];

fn message_for(file: &str, reader: Reader) -> String {
    let path = Path::new("tests/bad").join(file);
    let result = match reader {
        Domain => {
            let text = fs::read_to_string(&path).expect("bad file exists");
            parse_domain_config(&path, &text).map(drop)
        }
        System => {
            manifests::compile_system(&path, &[PathBuf::from("tests/no-such-images")]).map(drop)
        }
    };
    match result {
        Ok(()) => panic!("{} was accepted", path.display()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn every_bad_file_gives_its_message() {
    let mut failures = Vec::new();
    for &(file, reader, expected) in BAD_FILES {
        let message = message_for(file, reader);
        let matches = if expected.ends_with(": ") {
            message.starts_with(expected)
        } else {
            message == expected
        };
        if !matches {
            failures.push(format!(
                "{file}\n  expected: {expected}\n  got:      {message}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "wrong messages:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_bad_file_is_in_the_table() {
    let on_disk: BTreeSet<String> = fs::read_dir("tests/bad")
        .expect("tests/bad")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let in_table: BTreeSet<String> = BAD_FILES
        .iter()
        .map(|(file, _, _)| file.to_string())
        .collect();
    assert_eq!(
        on_disk, in_table,
        "tests/bad and BAD_FILES must list the same files"
    );
}

#[test]
fn the_support_files_are_valid_on_their_own() {
    let listed = [
        "good.cfg",
        "same-name.cfg",
        "no-such-kernel.cfg",
        "uart.cfg",
        "uart-too.cfg",
        "nic.cfg",
        "nic-too.cfg",
        "store.cfg",
        "store-long-cmdline.cfg",
        "blkback.cfg",
        "disk-guest.cfg",
        "disk-guest-slice.cfg",
        "disk-guest-blk.cfg",
        "disk-guest-far.cfg",
        "disk-self.cfg",
        "netback.cfg",
        "vif-guest.cfg",
        "vif-guest-same-mac.cfg",
    ];
    let on_disk: BTreeSet<String> = fs::read_dir("tests/bad/support")
        .expect("tests/bad/support")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let in_list: BTreeSet<String> = listed.iter().map(|file| file.to_string()).collect();
    assert_eq!(on_disk, in_list, "every support file is checked here");
    for file in listed {
        let path = Path::new("tests/bad/support").join(file);
        let text = fs::read_to_string(&path).expect("support file");
        if let Err(error) = parse_domain_config(&path, &text) {
            panic!("{error}");
        }
    }
}

/// A system of one domain, `d.cfg` (kernel on line 3), whose kernel `k` has `image` as bytes.
fn system_with_kernel(image: &[u8]) -> (Scratch, String) {
    let scratch = Scratch::new();
    scratch.write("system.cfg", "domains = [ \"d.cfg\" ]\n");
    scratch.write("d.cfg", domain_cfg("d", "k"));
    scratch.write("k", image);
    let message = compile_error(&scratch.path("system.cfg"), &[]);
    (scratch, message)
}

#[test]
fn a_kernel_without_the_pvh_note_is_rejected() {
    let mut image = ElfImage::pvh(0x10_0000);
    image.notes = vec![Note {
        owner: "Xen",
        kind: 6,
        desc: b"linux\0\0\0".to_vec(),
    }];
    let (scratch, message) = system_with_kernel(&image.bytes());
    let expected = format!(
        "{}:3: key `kernel`: {} is not a PVH image: no XEN_ELFNOTE_PHYS32_ENTRY note",
        scratch.path("d.cfg").display(),
        scratch.path("k").display(),
    );
    assert_eq!(message, expected);
}

#[test]
fn a_kernel_that_is_not_elf_is_rejected() {
    let (scratch, message) = system_with_kernel(b"#!/bin/sh\necho not a kernel\n");
    let prefix = format!(
        "{}:3: key `kernel`: {} is not a PVH image: not an ELF file (",
        scratch.path("d.cfg").display(),
        scratch.path("k").display(),
    );
    assert!(message.starts_with(&prefix), "{message}");
}

#[test]
fn an_image_directory_is_searched_only_for_bare_names() {
    let scratch = Scratch::new();
    scratch.write("images/k", ElfImage::pvh(0x10_0000).bytes());
    scratch.write("system.cfg", "domains = [ \"d.cfg\" ]\n");
    scratch.write("d.cfg", domain_cfg("d", "sub/k"));
    let message = compile_error(&scratch.path("system.cfg"), &[scratch.path("images")]);
    let expected = format!(
        "{}:3: key `kernel`: kernel image \"sub/k\" not found; looked for {}",
        scratch.path("d.cfg").display(),
        scratch.path("sub/k").display(),
    );
    assert_eq!(message, expected);
}

#[test]
fn a_missing_ramdisk_lists_every_place_looked() {
    let scratch = Scratch::new();
    scratch.write("k", ElfImage::pvh(0x10_0000).bytes());
    scratch.write("system.cfg", "domains = [ \"d.cfg\" ]\n");
    scratch.write(
        "d.cfg",
        format!("{}ramdisk = \"initrd\"\n", domain_cfg("d", "k")),
    );
    let dirs = [scratch.path("images")];
    let message = compile_error(&scratch.path("system.cfg"), &dirs);
    let expected = format!(
        "{}:5: key `ramdisk`: ramdisk image \"initrd\" not found; looked for {}, {}",
        scratch.path("d.cfg").display(),
        scratch.path("initrd").display(),
        scratch.path("images/initrd").display(),
    );
    assert_eq!(message, expected);

    // A path with a directory is looked for next to the domain file only.
    scratch.write(
        "d.cfg",
        format!("{}ramdisk = \"boot/initrd\"\n", domain_cfg("d", "k")),
    );
    scratch.write("images/boot/initrd", b"cpio");
    let message = compile_error(&scratch.path("system.cfg"), &dirs);
    let expected = format!(
        "{}:5: key `ramdisk`: ramdisk image \"boot/initrd\" not found; looked for {}",
        scratch.path("d.cfg").display(),
        scratch.path("boot/initrd").display(),
    );
    assert_eq!(message, expected);
}

#[test]
fn a_missing_kernel_lists_every_place_looked() {
    let scratch = Scratch::new();
    scratch.write("system.cfg", "domains = [ \"d.cfg\" ]\n");
    scratch.write("d.cfg", domain_cfg("d", "k"));
    // A directory named like the kernel is not the kernel.
    fs::create_dir_all(scratch.path("one/k")).expect("mkdir");
    let dirs = [scratch.path("one"), scratch.path("two")];
    let message = compile_error(&scratch.path("system.cfg"), &dirs);
    let expected = format!(
        "{}:3: key `kernel`: kernel image \"k\" not found; looked for {}, {}, {}",
        scratch.path("d.cfg").display(),
        scratch.path("k").display(),
        scratch.path("one/k").display(),
        scratch.path("two/k").display(),
    );
    assert_eq!(message, expected);
}

#[test]
fn image_defects_are_told_apart() {
    let defect = |image: ElfImage| pvh_entry_point(&image.bytes());

    assert_eq!(defect(ElfImage::pvh(0x20_0000)), Ok(0x20_0000));

    let eight_bytes = Note {
        owner: "Xen",
        kind: 18,
        desc: 0x30_0000u64.to_le_bytes().to_vec(),
    };
    assert_eq!(
        defect(ElfImage {
            notes: vec![eight_bytes],
            ..ElfImage::pvh(0)
        }),
        Ok(0x30_0000)
    );

    let other_notes_first = vec![
        Note {
            owner: "GNU",
            kind: 3,
            desc: vec![0xab; 20],
        },
        Note {
            owner: "Xen",
            kind: 6,
            desc: b"linux\0".to_vec(),
        },
        phys32_entry_note(0x40_0000),
    ];
    assert_eq!(
        defect(ElfImage {
            notes: other_notes_first,
            ..ElfImage::pvh(0)
        }),
        Ok(0x40_0000)
    );

    let wrong_owner = Note {
        owner: "Xem",
        kind: 18,
        desc: vec![0; 4],
    };
    assert_eq!(
        defect(ElfImage {
            notes: vec![wrong_owner],
            ..ElfImage::pvh(0)
        }),
        Err(ImageDefect::NoPhys32Entry)
    );

    let not_in_a_note_segment = ElfImage {
        segment_type: common::PT_LOAD,
        ..ElfImage::pvh(0x10_0000)
    };
    assert_eq!(
        defect(not_in_a_note_segment),
        Err(ImageDefect::NoPhys32Entry)
    );

    let short = Note {
        owner: "Xen",
        kind: 18,
        desc: vec![0; 2],
    };
    assert_eq!(
        defect(ElfImage {
            notes: vec![short],
            ..ElfImage::pvh(0)
        }),
        Err(ImageDefect::BadPhys32Entry { length: 2 })
    );

    assert_eq!(
        defect(ElfImage {
            machine: common::EM_386,
            ..ElfImage::pvh(0)
        }),
        Err(ImageDefect::NotX86_64 {
            machine: common::EM_386,
            little_endian: true
        })
    );
    assert_eq!(
        defect(ElfImage {
            e_type: common::ET_DYN,
            ..ElfImage::pvh(0)
        }),
        Err(ImageDefect::NotExecutable {
            e_type: common::ET_DYN
        })
    );
}

#[test]
fn a_32_bit_elf_is_rejected() {
    // An ELF32 header (52 bytes) for i386, with no program headers.
    let mut elf32 = vec![0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for half in [2u16, 3] {
        elf32.extend_from_slice(&half.to_le_bytes()); // e_type, e_machine
    }
    for word in [1u32, 0x10_0000, 0, 0, 0] {
        elf32.extend_from_slice(&word.to_le_bytes()); // version, entry, phoff, shoff, flags
    }
    for half in [52u16, 32, 0, 40, 0, 0] {
        elf32.extend_from_slice(&half.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    assert_eq!(elf32.len(), 52);
    assert_eq!(pvh_entry_point(&elf32), Err(ImageDefect::NotElf64));
}

#[test]
fn truncated_images_are_not_elf() {
    let image = ElfImage::pvh(0x10_0000).bytes();
    for length in [0, 3, 16, 63] {
        assert!(
            matches!(
                pvh_entry_point(&image[..length]),
                Err(ImageDefect::NotElf { .. })
            ),
            "length {length}"
        );
    }
    // Header intact, note segment cut short: the segment lies past the end of the file.
    assert!(matches!(
        pvh_entry_point(&image[..image.len() - 4]),
        Err(ImageDefect::NotElf { .. })
    ));
}
