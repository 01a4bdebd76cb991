//! Compiling whole systems: module numbering, defaults, the blob, and the example manifests
//! shipped in `manifests/`.

mod common;

use std::path::Path;

use common::{domain_cfg, ElfImage, Scratch};
use heapless::String as HString;
use manifests::compile_system;
use microvisor_abi::manifest::{
    DomainSpec, DomainType, LifecycleAction, SystemManifest, MANIFEST_VERSION,
};

fn spec(name: &str, image_module: u16, memory_mib: u32, vcpus: u32, cmdline: &str) -> DomainSpec {
    DomainSpec {
        name: HString::try_from(name).expect("short name"),
        kind: DomainType::Pvh,
        image_module,
        memory_mib,
        vcpus,
        cmdline: HString::try_from(cmdline).expect("short cmdline"),
        on_poweroff: LifecycleAction::Destroy,
        on_reboot: LifecycleAction::Restart,
        on_crash: LifecycleAction::Destroy,
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

#[test]
fn the_default_system_compiles_with_a_hello_image() {
    let scratch = Scratch::new();
    scratch.write("hello", ElfImage::pvh(0x10_0000).bytes());
    let system = crate_dir().join("default/system.cfg");
    let compiled = compile_system(&system, &[scratch.dir.path().to_path_buf()]).expect("compiles");

    assert_eq!(compiled.images, vec![scratch.path("hello")]);
    let expected = [
        spec("hello", 1, 16, 2, "mode=hello"),
        spec("primes", 1, 16, 1, "mode=primes limit=200000"),
        spec("ticker", 1, 8, 1, "mode=ticker count=5 interval_ms=100"),
    ];
    assert_eq!(compiled.manifest.version, MANIFEST_VERSION);
    assert_eq!(compiled.manifest.domains.as_slice(), &expected);
    let decoded: SystemManifest = postcard::from_bytes(&compiled.blob).expect("blob decodes");
    assert_eq!(decoded, compiled.manifest);
}

#[test]
fn the_default_system_needs_its_image() {
    let message = common::compile_error(&crate_dir().join("default/system.cfg"), &[]);
    assert!(message.contains("hello.cfg:"), "{message}");
    assert!(
        message.contains(": key `kernel`: kernel image \"hello\" not found"),
        "{message}"
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
