//! Compiling whole systems: module numbering, defaults, the blob, and the example manifests
//! shipped in `manifests/`.

mod common;

use std::path::Path;

use common::{domain_cfg, ElfImage, Scratch};
use heapless::String as HString;
use manifests::{compile_system, referenced_images, ImageRef, MAX_DISKS};
use microvisor_abi::manifest::{
    DomainSpec, DomainType, IoPortRange, LifecycleAction, PciAddress, SystemManifest,
    MANIFEST_VERSION, MAX_CMDLINE_BYTES, MAX_IOPORT_RANGES, MAX_PCI_FUNCTIONS,
};
use service_common::devices::{decode_vbds, encode_vbds, VbdSpec};

fn spec(name: &str, image_module: u16, memory_mib: u32, vcpus: u32, cmdline: &str) -> DomainSpec {
    DomainSpec {
        name: HString::try_from(name).expect("short name"),
        kind: DomainType::Pvh,
        image_module,
        ramdisk_module: None,
        memory_mib,
        vcpus,
        cmdline: HString::try_from(cmdline).expect("short cmdline"),
        on_poweroff: LifecycleAction::Destroy,
        on_reboot: LifecycleAction::Restart,
        on_crash: LifecycleAction::Destroy,
        ioports: heapless::Vec::new(),
        pci: heapless::Vec::new(),
    }
}

#[test]
fn domains_sharing_an_image_share_a_module() {
    let scratch = Scratch::new();
    scratch.write("images/shared", ElfImage::pvh(0x10_0000).bytes());
    scratch.write("conf/own", ElfImage::pvh(0x20_0000).bytes());
    scratch.write(
        "conf/system.cfg",
        "# three domains\ndomains = [\n  \"one.cfg\",\n  \"two.cfg\",\n  'three.cfg',  # own image\n]\n",
    );
    // `one` takes every default; `two` names the same image through a relative path.
    scratch.write("conf/one.cfg", domain_cfg("one", "shared"));
    scratch.write(
        "conf/two.cfg",
        "name = 'two'\ntype = 'pvh'\nkernel = '../images/shared'\nmemory = 0x40\nvcpus = 8\n\
         extra = \"console=hvc0 quiet\"\non_poweroff = \"preserve\"\non_reboot = \"destroy\"\n\
         on_crash = \"restart\";\n",
    );
    scratch.write("conf/three.cfg", domain_cfg("three", "own"));

    let compiled = compile_system(&scratch.path("conf/system.cfg"), &[scratch.path("images")])
        .expect("compiles");

    assert_eq!(
        compiled.images,
        vec![scratch.path("images/shared"), scratch.path("conf/own")]
    );
    let two = DomainSpec {
        on_poweroff: LifecycleAction::Preserve,
        on_reboot: LifecycleAction::Destroy,
        on_crash: LifecycleAction::Restart,
        ..spec("two", 1, 64, 8, "console=hvc0 quiet")
    };
    let expected = SystemManifest {
        version: MANIFEST_VERSION,
        domains: heapless::Vec::from_slice(&[
            spec("one", 1, 16, 1, ""),
            two,
            spec("three", 2, 16, 1, ""),
        ])
        .expect("three fit"),
        xenstore_domain: None,
        console_domain: None,
        disk_backend: None,
        net_backend: None,
        control_domain: None,
    };
    assert_eq!(compiled.manifest, expected);

    let decoded: SystemManifest = postcard::from_bytes(&compiled.blob).expect("blob decodes");
    assert_eq!(decoded, expected);
    assert_eq!(
        compiled.blob,
        postcard::to_allocvec(&expected).expect("encodes")
    );
}

#[test]
fn the_first_image_directory_that_has_the_kernel_wins_and_the_domain_directory_comes_first() {
    let scratch = Scratch::new();
    scratch.write("a/k", ElfImage::pvh(0x10_0000).bytes());
    scratch.write("b/k", ElfImage::pvh(0x10_0000).bytes());
    scratch.write("b/j", ElfImage::pvh(0x10_0000).bytes());
    scratch.write("conf/j", ElfImage::pvh(0x10_0000).bytes());
    scratch.write("conf/system.cfg", "domains = [ 'k.cfg', 'j.cfg' ]");
    scratch.write("conf/k.cfg", domain_cfg("k", "k"));
    scratch.write("conf/j.cfg", domain_cfg("j", "j"));
    let dirs = [
        scratch.path("missing"),
        scratch.path("a"),
        scratch.path("b"),
    ];
    let compiled = compile_system(&scratch.path("conf/system.cfg"), &dirs).expect("compiles");
    assert_eq!(
        compiled.images,
        vec![scratch.path("a/k"), scratch.path("conf/j")]
    );
    let modules: Vec<u16> = compiled
        .manifest
        .domains
        .iter()
        .map(|d| d.image_module)
        .collect();
    assert_eq!(modules, vec![1, 2]);
}

/// The crate directory: the example manifests are under it.
fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The images `cargo xtask` makes: its own domains' and the Linux guest's, as stand-ins.
fn standard_images() -> Scratch {
    let scratch = Scratch::new();
    for image in [
        "hello",
        "xenstore-stub",
        "console",
        "blkback",
        "netback",
        "control",
        "debian-vmlinux",
    ] {
        scratch.write(image, ElfImage::pvh(0x10_0000).bytes());
    }
    scratch.write("debian-initramfs", b"070701 an initramfs");
    scratch
}

#[test]
fn the_default_system_compiles_with_its_images() {
    let scratch = standard_images();
    let system = crate_dir().join("default/system.cfg");
    let compiled = compile_system(&system, &[scratch.dir.path().to_path_buf()]).expect("compiles");

    let names: Vec<&str> = compiled
        .manifest
        .domains
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(names[..2], ["xenstore", "console"]);
    let linux = compiled
        .manifest
        .domains
        .iter()
        .find(|domain| domain.name == "linux")
        .expect("a linux domain");
    let module = |index: u16| compiled.images[usize::from(index) - 1].clone();
    assert_eq!(module(linux.image_module), scratch.path("debian-vmlinux"));
    assert_eq!(
        linux.ramdisk_module.map(module),
        Some(scratch.path("debian-initramfs"))
    );
    // Each image once, numbered in the order the domains name them.
    assert_eq!(compiled.images.len(), 7);
    assert_eq!(
        compiled
            .manifest
            .domains
            .iter()
            .map(|d| d.image_module)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(linux.ramdisk_module, Some(7));
    // The console domain's COM1 and COM2 (its attach line for `xl console`).
    assert_eq!(compiled.manifest.domains[1].ioports.len(), 2);
    assert_eq!(compiled.manifest.version, MANIFEST_VERSION);
    assert_eq!(compiled.manifest.xenstore_domain, Some(0));
    assert_eq!(compiled.manifest.console_domain, Some(1));
    assert_eq!(compiled.manifest.disk_backend, Some(2));
    assert_eq!(compiled.manifest.net_backend, Some(3));
    assert_eq!(names[2], "blkback");
    let decoded: SystemManifest = postcard::from_bytes(&compiled.blob).expect("blob decodes");
    assert_eq!(decoded, compiled.manifest);
}

#[test]
fn the_demo_system_compiles_with_its_images() {
    let scratch = standard_images();
    let system = crate_dir().join("demo/system.cfg");
    let compiled = compile_system(&system, &[scratch.dir.path().to_path_buf()]).expect("compiles");

    assert_eq!(
        compiled.images,
        vec![
            scratch.path("xenstore-stub"),
            scratch.path("console"),
            scratch.path("hello")
        ]
    );
    let names: Vec<&str> = compiled
        .manifest
        .domains
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "xenstore",
            "console",
            "hello",
            "primes",
            "ticker",
            "ring-back",
            "ring-front"
        ]
    );
    let hello = &compiled.manifest.domains[2];
    assert_eq!(hello, &spec("hello", 3, 16, 2, "mode=hello"));
    assert!(compiled
        .manifest
        .domains
        .iter()
        .all(|d| d.ramdisk_module.is_none()));
}

#[test]
fn the_default_system_needs_its_image() {
    let message = common::compile_error(&crate_dir().join("default/system.cfg"), &[]);
    assert!(message.contains("xenstore.cfg:"), "{message}");
    assert!(
        message.contains(": key `kernel`: kernel image \"xenstore-stub\" not found"),
        "{message}"
    );
}

#[test]
fn the_default_system_names_the_linux_images() {
    let images = referenced_images(&crate_dir().join("default/system.cfg")).expect("reads");
    let named: Vec<(&str, Option<&str>)> = images
        .iter()
        .map(|image| (image.key, image.bare_name()))
        .collect();
    assert!(
        named.contains(&("kernel", Some("debian-vmlinux"))),
        "{named:?}"
    );
    assert!(
        named.contains(&("ramdisk", Some("debian-initramfs"))),
        "{named:?}"
    );
}

#[test]
fn ramdisks_are_modules_of_their_own_shared_like_kernels() {
    let scratch = Scratch::new();
    scratch.write("images/vmlinux", ElfImage::pvh(0x100_0000).bytes());
    scratch.write("images/initrd", b"an initramfs");
    scratch.write("conf/small.cpio", b"another");
    scratch.write("conf/k", ElfImage::pvh(0x10_0000).bytes());
    scratch.write(
        "conf/system.cfg",
        "domains = [ 'a.cfg', 'b.cfg', 'c.cfg', 'd.cfg' ]\n",
    );
    // `a` and `b` share both images (`b` through a relative path); `c` has no ramdisk;
    // `d` has its own ramdisk, next to its file.
    scratch.write(
        "conf/a.cfg",
        format!(
            "{}ramdisk = 'initrd'\nroot = '/dev/xvda1'\n",
            domain_cfg("a", "vmlinux")
        ),
    );
    scratch.write(
        "conf/b.cfg",
        format!(
            "{}ramdisk = \"../images/initrd\"\nroot = '/dev/ram0 ro'\nextra = 'console=hvc0'\n",
            domain_cfg("b", "vmlinux")
        ),
    );
    scratch.write("conf/c.cfg", domain_cfg("c", "k"));
    scratch.write(
        "conf/d.cfg",
        format!("{}ramdisk = 'small.cpio'\n", domain_cfg("d", "k")),
    );
    let compiled = compile_system(&scratch.path("conf/system.cfg"), &[scratch.path("images")])
        .expect("compiles");
    assert_eq!(
        compiled.images,
        vec![
            scratch.path("images/vmlinux"),
            scratch.path("images/initrd"),
            scratch.path("conf/k"),
            scratch.path("conf/small.cpio"),
        ]
    );
    let modules: Vec<(u16, Option<u16>)> = compiled
        .manifest
        .domains
        .iter()
        .map(|d| (d.image_module, d.ramdisk_module))
        .collect();
    assert_eq!(
        modules,
        [(1, Some(2)), (1, Some(2)), (3, None), (3, Some(4))]
    );
    let cmdlines: Vec<&str> = compiled
        .manifest
        .domains
        .iter()
        .map(|d| d.cmdline.as_str())
        .collect();
    assert_eq!(
        cmdlines,
        ["root=/dev/xvda1", "root=/dev/ram0 ro console=hvc0", "", ""]
    );
    let decoded: SystemManifest = postcard::from_bytes(&compiled.blob).expect("blob decodes");
    assert_eq!(decoded, compiled.manifest);

    let images = referenced_images(&scratch.path("conf/system.cfg")).expect("reads");
    let listed: Vec<(&str, &str, usize)> = images
        .iter()
        .map(|image| (image.key, image.path.to_str().expect("utf-8"), image.line))
        .collect();
    assert_eq!(
        listed,
        [
            ("kernel", "vmlinux", 3),
            ("ramdisk", "initrd", 5),
            ("kernel", "vmlinux", 3),
            ("ramdisk", "../images/initrd", 5),
            ("kernel", "k", 3),
            ("kernel", "k", 3),
            ("ramdisk", "small.cpio", 5),
        ]
    );
    assert_eq!(images[3].bare_name(), None);
    assert_eq!(
        images[0],
        ImageRef {
            file: scratch.path("conf/system.cfg").with_file_name("a.cfg"),
            key: "kernel",
            path: "vmlinux".into(),
            line: 3
        }
    );
}

#[test]
fn a_file_that_is_a_ramdisk_of_one_domain_is_still_checked_as_the_kernel_of_another() {
    let scratch = Scratch::new();
    scratch.write("k", ElfImage::pvh(0x10_0000).bytes());
    scratch.write("blob", b"not an elf");
    scratch.write("system.cfg", "domains = [ 'a.cfg', 'b.cfg' ]\n");
    scratch.write(
        "a.cfg",
        format!("{}ramdisk = 'blob'\n", domain_cfg("a", "k")),
    );
    scratch.write("b.cfg", domain_cfg("b", "blob"));
    let message = common::compile_error(&scratch.path("system.cfg"), &[]);
    assert!(
        message.starts_with(&format!(
            "{}:3: key `kernel`: {} is not a PVH image: not an ELF file",
            scratch.path("b.cfg").display(),
            scratch.path("blob").display()
        )),
        "{message}"
    );
}

#[test]
fn referenced_images_reports_the_errors_of_the_files() {
    let scratch = Scratch::new();
    scratch.write("system.cfg", "domains = [ 'a.cfg' ]\n");
    scratch.write("a.cfg", "name = 'a'\n");
    let error = referenced_images(&scratch.path("system.cfg"))
        .unwrap_err()
        .to_string();
    assert!(error.ends_with("a.cfg: key `type`: required key is missing (xl's default is \"pv\", which is not supported: write type = \"pvh\")"), "{error}");
    // No image is looked for.
    scratch.write("a.cfg", domain_cfg("a", "nowhere"));
    assert_eq!(
        referenced_images(&scratch.path("system.cfg"))
            .expect("reads")
            .len(),
        1
    );
}

#[test]
fn the_empty_system_has_no_domains_and_no_images() {
    let compiled = compile_system(&crate_dir().join("empty/system.cfg"), &[]).expect("compiles");
    assert!(compiled.manifest.domains.is_empty());
    assert!(compiled.images.is_empty());
    assert_eq!(compiled.manifest.version, MANIFEST_VERSION);
    let decoded: SystemManifest = postcard::from_bytes(&compiled.blob).expect("blob decodes");
    assert_eq!(decoded, compiled.manifest);
}

#[test]
fn sixteen_domains_fit() {
    let scratch = Scratch::new();
    scratch.write("k", ElfImage::pvh(0x10_0000).bytes());
    let mut list = String::from("domains = [\n");
    for index in 0..16 {
        scratch.write(
            &format!("d{index}.cfg"),
            domain_cfg(&format!("d{index}"), "k"),
        );
        list.push_str(&format!("  \"d{index}.cfg\",\n"));
    }
    list.push_str("]\n");
    scratch.write("system.cfg", list);
    let compiled = compile_system(&scratch.path("system.cfg"), &[]).expect("compiles");
    assert_eq!(compiled.manifest.domains.len(), 16);
    assert!(compiled
        .manifest
        .domains
        .iter()
        .all(|domain| domain.image_module == 1));
    assert_eq!(compiled.images, vec![scratch.path("k")]);
}

fn ports(ranges: &[(u16, u16)]) -> heapless::Vec<IoPortRange, MAX_IOPORT_RANGES> {
    ranges
        .iter()
        .map(|&(first, last)| IoPortRange { first, last })
        .collect()
}

#[test]
fn service_domains_compile_to_their_indices_and_io_ports_to_ranges() {
    let scratch = Scratch::new();
    scratch.write("k", ElfImage::pvh(0x10_0000).bytes());
    scratch.write(
        "system.cfg",
        "domains = [ 'guest.cfg', 'store.cfg', 'console.cfg' ]\n\
         xenstore_domain = \"store\"\nconsole_domain = 'console'\n",
    );
    scratch.write("guest.cfg", domain_cfg("guest", "k"));
    scratch.write("store.cfg", domain_cfg("store", "k"));
    scratch.write(
        "console.cfg",
        format!(
            "{}ioports = [\n  \"3f8-3ff\",  # COM1\n  '0x2f8-0x2FF',\n  \"80\",\n]\n",
            domain_cfg("console", "k")
        ),
    );
    let compiled = compile_system(&scratch.path("system.cfg"), &[]).expect("compiles");

    let console = DomainSpec {
        ioports: ports(&[(0x3f8, 0x3ff), (0x2f8, 0x2ff), (0x80, 0x80)]),
        ..spec("console", 1, 16, 1, "")
    };
    let expected = SystemManifest {
        version: MANIFEST_VERSION,
        domains: heapless::Vec::from_slice(&[
            spec("guest", 1, 16, 1, ""),
            spec("store", 1, 16, 1, ""),
            console,
        ])
        .expect("three fit"),
        xenstore_domain: Some(1),
        console_domain: Some(2),
        disk_backend: None,
        net_backend: None,
        control_domain: None,
    };
    assert_eq!(compiled.manifest, expected);
    let decoded: SystemManifest = postcard::from_bytes(&compiled.blob).expect("blob decodes");
    assert_eq!(decoded, expected);
}

#[test]
fn one_domain_may_serve_both_and_other_domains_may_have_other_ports() {
    let scratch = Scratch::new();
    scratch.write("k", ElfImage::pvh(0x10_0000).bytes());
    scratch.write(
        "system.cfg",
        "domains = [ 'io.cfg', 'guest.cfg' ]\nconsole_domain = 'io'\nxenstore_domain = 'io'\n",
    );
    scratch.write(
        "io.cfg",
        format!("{}ioports = [ '3f8-3ff' ]\n", domain_cfg("io", "k")),
    );
    // Adjacent to the console's ports, not overlapping them.
    scratch.write(
        "guest.cfg",
        format!(
            "{}ioports = [ '3f0-3f7', '400' ]\n",
            domain_cfg("guest", "k")
        ),
    );
    let compiled = compile_system(&scratch.path("system.cfg"), &[]).expect("compiles");
    assert_eq!(compiled.manifest.xenstore_domain, Some(0));
    assert_eq!(compiled.manifest.console_domain, Some(0));
    assert_eq!(
        compiled.manifest.domains[0].ioports,
        ports(&[(0x3f8, 0x3ff)])
    );
    assert_eq!(
        compiled.manifest.domains[1].ioports,
        ports(&[(0x3f0, 0x3f7), (0x400, 0x400)])
    );
    let decoded: SystemManifest = postcard::from_bytes(&compiled.blob).expect("blob decodes");
    assert_eq!(decoded, compiled.manifest);
}

#[test]
fn a_service_domain_needs_a_listed_domain() {
    let scratch = Scratch::new();
    scratch.write("system.cfg", "domains = []\nxenstore_domain = 'store'\n");
    let message = common::compile_error(&scratch.path("system.cfg"), &[]);
    let expected = format!(
        "{}:2: key `xenstore_domain`: no domain listed in `domains` is named \"store\" \
         (the domains are: none)",
        scratch.path("system.cfg").display()
    );
    assert_eq!(message, expected);
}

fn functions(addresses: &[(u16, u8, u8, u8)]) -> heapless::Vec<PciAddress, MAX_PCI_FUNCTIONS> {
    addresses
        .iter()
        .map(|&(segment, bus, device, function)| PciAddress {
            segment,
            bus,
            device,
            function,
        })
        .collect()
}

#[test]
fn pci_functions_compile_to_addresses_and_survive_the_blob() {
    let scratch = Scratch::new();
    scratch.write("k", ElfImage::pvh(0x10_0000).bytes());
    scratch.write(
        "system.cfg",
        "domains = [ 'net.cfg', 'guest.cfg', 'disk.cfg' ]\n",
    );
    scratch.write(
        "net.cfg",
        format!(
            "{}pci = [\n  \"0000:03:00.0\",  # the card\n  '03:00.1',\n]\n",
            domain_cfg("net", "k")
        ),
    );
    scratch.write("guest.cfg", domain_cfg("guest", "k"));
    // Other functions of the same device, and the same address in another segment, are
    // other functions.
    scratch.write(
        "disk.cfg",
        format!(
            "{}pci = [ '03:00.2', '0001:03:00.0', 'ff:1f.7' ]\n",
            domain_cfg("disk", "k")
        ),
    );
    let compiled = compile_system(&scratch.path("system.cfg"), &[]).expect("compiles");

    let expected = SystemManifest {
        version: MANIFEST_VERSION,
        domains: heapless::Vec::from_slice(&[
            DomainSpec {
                pci: functions(&[(0, 3, 0, 0), (0, 3, 0, 1)]),
                ..spec("net", 1, 16, 1, "")
            },
            spec("guest", 1, 16, 1, ""),
            DomainSpec {
                pci: functions(&[(0, 3, 0, 2), (1, 3, 0, 0), (0, 0xff, 0x1f, 7)]),
                ..spec("disk", 1, 16, 1, "")
            },
        ])
        .expect("three fit"),
        xenstore_domain: None,
        console_domain: None,
        disk_backend: None,
        net_backend: None,
        control_domain: None,
    };
    assert_eq!(compiled.manifest, expected);
    let decoded: SystemManifest = postcard::from_bytes(&compiled.blob).expect("blob decodes");
    assert_eq!(decoded, expected);
    assert_eq!(
        compiled.blob,
        postcard::to_allocvec(&expected).expect("encodes")
    );
}

#[test]
fn a_domain_may_have_the_most_pci_functions_and_ports_too() {
    let scratch = Scratch::new();
    scratch.write("k", ElfImage::pvh(0x10_0000).bytes());
    scratch.write("system.cfg", "domains = [ 'd.cfg' ]\n");
    let items: Vec<String> = (0..MAX_PCI_FUNCTIONS)
        .map(|function| format!("'0000:00:03.{function}'"))
        .collect();
    scratch.write(
        "d.cfg",
        format!(
            "{}ioports = [ '3f8-3ff' ]\npci = [ {} ]\n",
            domain_cfg("d", "k"),
            items.join(", ")
        ),
    );
    let compiled = compile_system(&scratch.path("system.cfg"), &[]).expect("compiles");
    let domain = &compiled.manifest.domains[0];
    assert_eq!(domain.pci.len(), MAX_PCI_FUNCTIONS);
    assert!(domain
        .pci
        .iter()
        .enumerate()
        .all(|(index, address)| usize::from(address.function) == index
            && (address.segment, address.bus, address.device) == (0, 0, 3)));
    assert_eq!(domain.ioports, ports(&[(0x3f8, 0x3ff)]));
    let decoded: SystemManifest = postcard::from_bytes(&compiled.blob).expect("blob decodes");
    assert_eq!(decoded, compiled.manifest);
}

/// The xenstore domain's command line in a compiled system.
fn xenstore_cmdline(compiled: &manifests::CompiledSystem) -> String {
    let index = compiled
        .manifest
        .xenstore_domain
        .expect("a xenstore domain");
    compiled.manifest.domains[usize::from(index)]
        .cmdline
        .to_string()
}

fn vbd(
    frontend: &str,
    vdev: u32,
    backend: &str,
    writable: bool,
    device: &str,
    start: u64,
    sectors: u64,
) -> VbdSpec {
    VbdSpec {
        frontend: frontend.into(),
        vdev,
        backend: backend.into(),
        writable,
        device: device.into(),
        start,
        sectors,
    }
}

#[test]
fn disks_go_to_the_xenstore_domain_as_a_device_table() {
    let scratch = Scratch::new();
    scratch.write("k", ElfImage::pvh(0x10_0000).bytes());
    scratch.write(
        "system.cfg",
        "domains = [ 'store.cfg', 'web.cfg', 'blk.cfg', 'db.cfg', 'nvme.cfg' ]\n\
         xenstore_domain = 'store'\ndisk_backend = 'blk'\n",
    );
    scratch.write(
        "store.cfg",
        format!("{}cmdline = 'loglevel=1'\n", domain_cfg("store", "k")),
    );
    scratch.write(
        "blk.cfg",
        format!(
            "{}pci = [ '00:03.0', '0000:00:04.0' ]\n",
            domain_cfg("blk", "k")
        ),
    );
    scratch.write(
        "nvme.cfg",
        format!("{}pci = [ '0001:02:00.0' ]\n", domain_cfg("nvme", "k")),
    );
    // Positional, key and mixed forms; the default backend and a named one.
    scratch.write(
        "web.cfg",
        format!(
            "{}disk = [\n  '0000:00:03.0@64M+128M,raw,xvda,rw',\n  \"vdev=xvdb, access=ro, target=00:04.0\",\n  'format=raw,1:2:0.0,xvdq,backend=nvme',\n]\n",
            domain_cfg("web", "k")
        ),
    );
    // The same read-only disk as `web`, and the slice after `web`'s.
    scratch.write(
        "db.cfg",
        format!(
            "{}disk = [ '00:04.0,,51712,r', '00:03.0@192M+1G,,xvdaa' ]\n",
            domain_cfg("db", "k")
        ),
    );
    let compiled = compile_system(&scratch.path("system.cfg"), &[]).expect("compiles");

    let table = "web/51712/blk/w/0000:00:03.0/131072/262144;\
                 web/51728/blk/r/0000:00:04.0/0/0;\
                 web/268439552/nvme/w/0001:02:00.0/0/0;\
                 db/51712/blk/r/0000:00:04.0/0/0;\
                 db/268442112/blk/w/0000:00:03.0/393216/2097152";
    assert_eq!(
        xenstore_cmdline(&compiled),
        format!("loglevel=1 vbds={table}")
    );
    let (_, encoded) = xenstore_cmdline(&compiled)
        .split_once(" vbds=")
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .expect("vbds=");
    assert_eq!(
        decode_vbds(&encoded).expect("decodes"),
        [
            vbd("web", 51712, "blk", true, "0000:00:03.0", 131072, 262144),
            vbd("web", 51728, "blk", false, "0000:00:04.0", 0, 0),
            vbd(
                "web",
                (1 << 28) | (16 << 8),
                "nvme",
                true,
                "0001:02:00.0",
                0,
                0
            ),
            vbd("db", 51712, "blk", false, "0000:00:04.0", 0, 0),
            vbd(
                "db",
                (1 << 28) | (26 << 8),
                "blk",
                true,
                "0000:00:03.0",
                393216,
                2097152
            ),
        ]
    );
    assert_eq!(
        encode_vbds(&decode_vbds(&encoded).expect("decodes")),
        encoded
    );

    // Nothing else changes: the manifest has no disks, and the other domains are as they
    // would be without them.
    assert_eq!(compiled.manifest.version, MANIFEST_VERSION);
    let names: Vec<&str> = compiled
        .manifest
        .domains
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(names, ["store", "web", "blk", "db", "nvme"]);
    assert_eq!(compiled.manifest.domains[1], spec("web", 1, 16, 1, ""));
    assert_eq!(compiled.manifest.domains[3], spec("db", 1, 16, 1, ""));
    assert_eq!(
        compiled.manifest.domains[2].pci,
        functions(&[(0, 0, 3, 0), (0, 0, 4, 0)])
    );
    let decoded: SystemManifest = postcard::from_bytes(&compiled.blob).expect("blob decodes");
    assert_eq!(decoded, compiled.manifest);
}

/// A system of a xenstore domain `store` with `store_cmdline`, a backend `blk` with the
/// disk controllers 00:03.0 and 00:04.0, and the domains `others` (name, extra lines).
fn disk_system(store_cmdline: &str, system_extra: &str, others: &[(&str, &str)]) -> Scratch {
    let scratch = Scratch::new();
    scratch.write("k", ElfImage::pvh(0x10_0000).bytes());
    let mut list = vec!["'store.cfg'".to_owned(), "'blk.cfg'".to_owned()];
    list.extend(others.iter().map(|(name, _)| format!("'{name}.cfg'")));
    scratch.write(
        "system.cfg",
        format!(
            "domains = [ {} ]\nxenstore_domain = 'store'\n{system_extra}",
            list.join(", ")
        ),
    );
    let cmdline = if store_cmdline.is_empty() {
        String::new()
    } else {
        format!("cmdline = '{store_cmdline}'\n")
    };
    scratch.write(
        "store.cfg",
        format!("{}{cmdline}", domain_cfg("store", "k")),
    );
    scratch.write(
        "blk.cfg",
        format!("{}pci = [ '00:03.0', '00:04.0' ]\n", domain_cfg("blk", "k")),
    );
    for (name, extra) in others {
        scratch.write(
            &format!("{name}.cfg"),
            format!("{}{extra}", domain_cfg(name, "k")),
        );
    }
    scratch
}

#[test]
fn an_empty_command_line_gets_the_table_alone_and_no_disks_change_nothing() {
    let with_disk = disk_system(
        "",
        "",
        &[("g", "disk = [ 'vdev=xvda,backend=blk,target=00:03.0' ]\n")],
    );
    let compiled = compile_system(&with_disk.path("system.cfg"), &[]).expect("compiles");
    assert_eq!(
        xenstore_cmdline(&compiled),
        "vbds=g/51712/blk/w/0000:00:03.0/0/0"
    );

    // A `disk_backend` and no disks: the command line is left as it is, empty or not.
    for cmdline in ["", "loglevel=1"] {
        let without = disk_system(cmdline, "disk_backend = 'blk'\n", &[("g", "")]);
        let compiled = compile_system(&without.path("system.cfg"), &[]).expect("compiles");
        assert_eq!(xenstore_cmdline(&compiled), cmdline);
        assert_eq!(
            compiled.manifest.domains[0],
            spec("store", 1, 16, 1, cmdline)
        );
    }
    // `disk = []` is no disks either, even without a xenstore domain.
    let scratch = Scratch::new();
    scratch.write("k", ElfImage::pvh(0x10_0000).bytes());
    scratch.write("system.cfg", "domains = [ 'g.cfg' ]\n");
    scratch.write("g.cfg", format!("{}disk = []\n", domain_cfg("g", "k")));
    compile_system(&scratch.path("system.cfg"), &[]).expect("compiles");
}

#[test]
fn read_only_disks_may_be_shared_and_slices_may_touch() {
    let scratch = disk_system(
        "",
        "disk_backend = 'blk'\n",
        &[
            (
                "a",
                "disk = [ '00:04.0,,xvda,ro', '00:03.0@0+1G,,xvdb,rw' ]\n",
            ),
            (
                "b",
                "disk = [ '00:04.0,,xvda,r', '00:03.0@1G+1G,,xvdb,w', '00:03.0@1G+512,,xvdc,r' ]\n",
            ),
        ],
    );
    let message = common::compile_error(&scratch.path("system.cfg"), &[]);
    // The last read-only slice lies in `b`'s own writable one: refused, in `b`.
    assert_eq!(
        message,
        format!(
            "{}:5: key `disk`: \"00:03.0@1G+512,,xvdc,r\": overlaps \"00:03.0@1G+1G,,xvdb,w\" of domain \"b\" ({}:5) on 0000:00:03.0 of backend \"blk\", and one of them is writable; give each writable disk a slice of its own",
            scratch.path("b.cfg").display(),
            scratch.path("b.cfg").display()
        )
    );
    scratch.write(
        "b.cfg",
        format!(
            "{}disk = [ '00:04.0,,xvda,r', '00:03.0@1G+1G,,xvdb,w' ]\n",
            domain_cfg("b", "k")
        ),
    );
    let compiled = compile_system(&scratch.path("system.cfg"), &[]).expect("compiles");
    assert_eq!(
        xenstore_cmdline(&compiled),
        "vbds=a/51712/blk/r/0000:00:04.0/0/0;a/51728/blk/w/0000:00:03.0/0/2097152;\
         b/51712/blk/r/0000:00:04.0/0/0;b/51728/blk/w/0000:00:03.0/2097152/2097152"
    );
}

#[test]
fn a_whole_disk_overlaps_every_slice_of_it_even_read_only() {
    let scratch = disk_system(
        "",
        "disk_backend = 'blk'\n",
        &[
            ("a", "disk = [ '00:03.0@4T+1M,,xvda,ro' ]\n"),
            ("b", "disk = [ 'vdev=xvda, target=0000:00:03.0' ]\n"),
        ],
    );
    let message = common::compile_error(&scratch.path("system.cfg"), &[]);
    assert_eq!(
        message,
        format!(
            "{}:5: key `disk`: \"vdev=xvda, target=0000:00:03.0\": overlaps \"00:03.0@4T+1M,,xvda,ro\" of domain \"a\" ({}:5) on 0000:00:03.0 of backend \"blk\", and one of them is writable; give each writable disk a slice of its own",
            scratch.path("b.cfg").display(),
            scratch.path("a.cfg").display()
        )
    );
}

#[test]
fn the_disk_backend_may_not_serve_itself() {
    // `blk` has a disk of its own and no `backend=`: the default backend is itself.
    let scratch = disk_system("", "disk_backend = 'blk'\n", &[]);
    scratch.write(
        "blk.cfg",
        format!(
            "{}pci = [ '00:03.0', '00:04.0' ]\ndisk = [ '00:03.0,,xvda' ]\n",
            domain_cfg("blk", "k")
        ),
    );
    let message = common::compile_error(&scratch.path("system.cfg"), &[]);
    assert_eq!(
        message,
        format!(
            "{}:6: key `disk`: \"00:03.0,,xvda\": backend \"blk\" (`disk_backend`, {}:3) is this domain itself; a disk is served by another domain, the driver domain that has its PCI function",
            scratch.path("blk.cfg").display(),
            scratch.path("system.cfg").display()
        )
    );
}

#[test]
fn a_backend_without_pci_functions_says_so() {
    let scratch = disk_system(
        "",
        "",
        &[
            ("bare", ""),
            ("g", "disk = [ '00:03.0,,xvda,backend=bare' ]\n"),
        ],
    );
    let message = common::compile_error(&scratch.path("system.cfg"), &[]);
    assert_eq!(
        message,
        format!(
            "{}:5: key `disk`: \"00:03.0,,xvda,backend=bare\": target 0000:00:03.0 is not a PCI function of backend \"bare\": its `pci` in {} is []",
            scratch.path("g.cfg").display(),
            scratch.path("bare.cfg").display()
        )
    );
}

#[test]
fn the_device_table_may_fill_the_command_line_exactly() {
    // " vbds=" and "g/51712/blk/w/0000:00:03.0/0/0" are 6 and 30 bytes.
    let disk = [("g", "disk = [ '00:03.0,,xvda' ]\n")];
    let fits = "x".repeat(MAX_CMDLINE_BYTES - 1 - 36);
    let scratch = disk_system(&fits, "disk_backend = 'blk'\n", &disk);
    let compiled = compile_system(&scratch.path("system.cfg"), &[]).expect("compiles");
    assert_eq!(xenstore_cmdline(&compiled).len(), MAX_CMDLINE_BYTES - 1);
    assert!(xenstore_cmdline(&compiled).ends_with("x vbds=g/51712/blk/w/0000:00:03.0/0/0"));

    let scratch = disk_system(&format!("{fits}x"), "disk_backend = 'blk'\n", &disk);
    let message = common::compile_error(&scratch.path("system.cfg"), &[]);
    assert_eq!(
        message,
        format!(
            "{}:5: key `disk`: \"00:03.0,,xvda\": its entry makes the command line of the xenstore domain \"store\" ({}) 512 bytes long, at most 511 are allowed: the xenstore domain gets the system's disks as `vbds=` on its command line",
            scratch.path("g.cfg").display(),
            scratch.path("store.cfg").display()
        )
    );
}

#[test]
fn the_first_disk_that_does_not_fit_is_named() {
    // Eight disks of 30 or 31 bytes fit beside 200 bytes; the eighth of a second domain does
    // not.
    let disks = |name: &str| {
        let items: Vec<String> = (0..8)
            .map(|disk| format!("'00:04.0,,xvd{},ro'", char::from(b'a' + disk)))
            .collect();
        (
            name.to_owned(),
            format!("disk = [\n{}\n]\n", items.join(",\n")),
        )
    };
    let (a, a_disks) = disks("a");
    let (b, b_disks) = disks("b");
    let scratch = disk_system(
        &"x".repeat(200),
        "disk_backend = 'blk'\n",
        &[(&a, &a_disks), (&b, &b_disks)],
    );
    let message = common::compile_error(&scratch.path("system.cfg"), &[]);
    // 200 + 6, then "a/51712/blk/r/0000:00:04.0/0/0" and 7 more of 31 bytes with their `;`:
    // 206 + 30 + 9 * 31 = 515 with `b`'s second disk, on line 7 of b.cfg.
    assert_eq!(
        message,
        format!(
            "{}:7: key `disk`: \"00:04.0,,xvdb,ro\": its entry makes the command line of the xenstore domain \"store\" ({}) 515 bytes long, at most 511 are allowed: the xenstore domain gets the system's disks as `vbds=` on its command line",
            scratch.path("b.cfg").display(),
            scratch.path("store.cfg").display()
        )
    );
}

#[test]
fn a_domain_may_have_the_most_disks() {
    let items: Vec<String> = (0..MAX_DISKS)
        .map(|disk| format!("'00:03.0@{disk}G+1G,,xvd{}'", char::from(b'a' + disk as u8)))
        .collect();
    let scratch = disk_system(
        "",
        "disk_backend = 'blk'\n",
        &[("g", &format!("disk = [ {} ]\n", items.join(", ")))],
    );
    let compiled = compile_system(&scratch.path("system.cfg"), &[]).expect("compiles");
    let cmdline = xenstore_cmdline(&compiled);
    let table = decode_vbds(cmdline.strip_prefix("vbds=").expect("vbds=")).expect("decodes");
    assert_eq!(table.len(), MAX_DISKS);
    assert!(table
        .iter()
        .enumerate()
        .all(|(disk, vbd)| vbd.vdev == 51712 + 16 * disk as u32
            && vbd.start == 2097152 * disk as u64
            && vbd.sectors == 2097152));
}

#[test]
fn vifs_follow_the_disks_on_the_xenstore_command_line_with_their_macs() {
    let system = disk_system(
        "loglevel=1",
        "net_backend = 'blk'\n",
        &[
            (
                "g",
                "disk = [ 'vdev=xvda,backend=blk,target=00:03.0' ]\nvif = [ 'mac=00:16:3E:00:00:15', 'bridge=dmz' ]\n",
            ),
            ("h", "vif = [ '' ]\n"),
        ],
    );
    let compiled = compile_system(&system.path("system.cfg"), &[]).expect("compiles");
    let g1 = service_common::mac::Mac::for_domain("g", 1);
    let h0 = service_common::mac::Mac::for_domain("h", 0);
    assert_eq!(
        xenstore_cmdline(&compiled),
        format!(
            "loglevel=1 vbds=g/51712/blk/w/0000:00:03.0/0/0 vifs=g/0/blk/00:16:3e:00:00:15/xenbr0;g/1/blk/{g1}/dmz;h/0/blk/{h0}/xenbr0"
        )
    );
}

/// `xl create`'s disks and vifs: checked against the running system, the new domain's own
/// entries returned; a domain of a boot domain's name replaces it.
#[test]
fn created_domains_devices_are_checked_against_the_system() {
    let system = crate_dir().join("default/system.cfg");
    let file = std::path::PathBuf::from("created.cfg");
    let config = |name: &str, disk: &str| {
        let text = format!(
            "name = \"{name}\"\ntype = \"pvh\"\nkernel = \"k\"\nmemory = 64\ndisk = [ '{disk}' ]\nvif = [ 'mac=00:16:3e:00:00:99' ]\n"
        );
        manifests::parse_domain_config(&file, &text).expect("a valid domain file")
    };
    // In place of the boot domain `linux`, whose xvda is the whole disk.
    let table = manifests::created_devices(
        &system,
        config("linux", "vdev=xvda, access=rw, target=0000:00:03.0@0+16M"),
    )
    .expect("fits");
    assert_eq!(
        table,
        "vbds=linux/51712/blkback/w/0000:00:03.0/0/32768 vifs=linux/0/netback/00:16:3e:00:00:99/xenbr0"
    );
    // Beside it, a writable slice overlaps its whole-disk xvda: refused on the disk's line.
    let error = manifests::created_devices(
        &system,
        config("other", "vdev=xvda, access=rw, target=0000:00:03.0@0+16M"),
    )
    .expect_err("overlaps linux's xvda");
    let text = error.to_string();
    assert!(text.starts_with("created.cfg:5: key `disk`"), "{text}");
}
