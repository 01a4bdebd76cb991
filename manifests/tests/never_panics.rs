//! Property tests: no input makes the readers panic, and the line an error names exists.
//! (The fuzz target in `fuzz/` explores the same property further.)

mod common;

use std::path::Path;

use common::ElfImage;
use manifests::{parse_domain_config, parse_system_config, pvh_entry_point};
use proptest::prelude::*;

const GOOD_DOMAIN: &str =
    "name = \"hello\" # c\ntype = 'pvh'\nkernel = \"hello\"\nmemory = 0x10;\n\
                           vcpus = 2\ncmdline = \"mode=hello \\\"q\\\"\"\non_crash = \"preserve\"\n\
                           ioports = [ \"3f8-3ff\", '0x80' ]\n\
                           pci = [ \"0000:00:03.0\", '03:00.1' ]\n\
                           disk = [ '0000:00:03.0@64M+128M,raw,xvda,rw', \"vdev=xvdb, access=ro, backend=blk, target=03:00.1\" ]\n";
const GOOD_SYSTEM: &str =
    "domains = [\n  \"a.cfg\", # one\n  'b.cfg',\n]\nconsole_domain = 'a'\nxenstore_domain = \"b\"\ndisk_backend = 'a'\n";

/// Text made of the pieces the grammar cares about, so that inputs get past the first token.
fn config_like_text() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "name",
        "type",
        "kernel",
        "memory",
        "vcpus",
        "cmdline",
        "extra",
        "on_crash",
        "domains",
        "disk",
        "ioports",
        "pci",
        "xenstore_domain",
        "console_domain",
        "x",
        " ",
        "\t",
        "\n",
        "\r\n",
        "=",
        ";",
        "#",
        ",",
        "[",
        "]",
        "\"",
        "'",
        "\\",
        "0x",
        "0",
        "16",
        "99999999999999999999",
        "\"pvh\"",
        "\"hello\"",
        "'destroy'",
        "\"3f8-3ff\"",
        "'0x80'",
        "-",
        "\"0000:00:03.0\"",
        "'03:00.*'",
        "disk_backend",
        "'0000:00:03.0,raw,xvda,rw'",
        "\"vdev=xvdb,target=00:03.0@1G+1G\"",
        ":",
        ".",
        "@",
        "*",
        "+",
        "1f",
        "é",
        "\u{feff}",
    ]);
    prop::collection::vec(piece, 0..64).prop_map(|pieces| pieces.concat())
}

/// A valid text with a few bytes replaced, inserted or removed.
fn mutated(text: &'static str) -> impl Strategy<Value = String> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6);
    edits.prop_map(move |edits| {
        let mut bytes = text.as_bytes().to_vec();
        for (at, byte, kind) in edits {
            let index = at.index(bytes.len() + 1);
            match kind {
                0 if index < bytes.len() => bytes[index] = byte,
                1 => bytes.insert(index, byte),
                _ if index < bytes.len() => {
                    bytes.remove(index);
                }
                _ => {}
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// One disk specification made of the pieces its syntax cares about.
fn disk_spec_like_text() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "0000:00:03.0",
        "03:00.1",
        "ffff:ff:1f.7",
        "00:20.0",
        "00:03.*",
        "/dev/sda",
        "phy:",
        "@",
        "+",
        "0",
        "1",
        "512",
        "1000",
        "64M",
        "1T",
        "16777216T",
        "99999999999999999999",
        "k",
        "G",
        ",",
        ", ",
        "=",
        "target=",
        "vdev=",
        "access=",
        "format=",
        "devtype=",
        "backend=",
        "backendtype=",
        "script=",
        "raw",
        "qcow2",
        "xvd",
        "xvda",
        "xvdbgqcv",
        "xvdbgqcw",
        "sda",
        "a",
        "z",
        "51712",
        "4294967296",
        "r",
        "ro",
        "w",
        "rw",
        "disk",
        "cdrom",
        "discard",
        "phy",
        "blk",
        "é",
        " ",
    ]);
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

/// Reads `text` both ways; any error must point at a line of the text (or at none).
fn check(text: &str) {
    let lines = text.split('\n').count();
    let path = Path::new("p.cfg");
    if let Err(error) = parse_domain_config(path, text) {
        assert!(
            error
                .location
                .line
                .is_none_or(|line| (1..=lines).contains(&line)),
            "{error}"
        );
        assert!(error.to_string().starts_with("p.cfg"));
    }
    if let Err(error) = parse_system_config(path, text) {
        assert!(
            error
                .location
                .line
                .is_none_or(|line| (1..=lines).contains(&line)),
            "{error}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_string(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn config_like_strings(text in config_like_text()) {
        check(&text);
    }

    #[test]
    fn mutated_domain_files(text in mutated(GOOD_DOMAIN)) {
        check(&text);
    }

    /// A domain file whose `disk` list holds disk-like specifications: they are read or
    /// refused on their own line (6, 7 or 8), with the key `disk`, never with a panic.
    #[test]
    fn disk_specifications(specs in prop::collection::vec(disk_spec_like_text(), 1..4)) {
        let items: Vec<String> = specs.iter().map(|spec| format!("  {spec:?},")).collect();
        let text = format!(
            "name = 'd'\ntype = 'pvh'\nkernel = 'k'\nmemory = 16\ndisk = [\n{}\n]\n",
            items.join("\n")
        );
        check(&text);
        match parse_domain_config(Path::new("p.cfg"), &text) {
            Ok(config) => {
                prop_assert_eq!(config.disks.len(), specs.len());
                for (index, disk) in config.disks.iter().enumerate() {
                    prop_assert_eq!(disk.line, 6 + index);
                    let (start, sectors) = disk.sectors();
                    prop_assert!(start.checked_add(sectors).is_some());
                    prop_assert_eq!(disk.slice.is_some(), sectors > 0);
                }
            }
            Err(error) => {
                let line = error.location.line.expect("a line");
                prop_assert!((6..6 + specs.len()).contains(&line), "{}", error);
                prop_assert_eq!(error.location.key.as_deref(), Some("disk"));
            }
        }
    }

    #[test]
    fn mutated_system_files(text in mutated(GOOD_SYSTEM)) {
        check(&text);
    }

    #[test]
    fn any_bytes_as_an_image(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = pvh_entry_point(&bytes);
    }

    #[test]
    fn mutated_images(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut image = ElfImage::pvh(0x10_0000).bytes();
        for (at, byte) in edits {
            let index = at.index(image.len());
            image[index] = byte;
        }
        let _ = pvh_entry_point(&image);
    }
}

#[test]
fn the_good_texts_are_good() {
    parse_domain_config(Path::new("p.cfg"), GOOD_DOMAIN).expect("valid domain");
    let system = parse_system_config(Path::new("p.cfg"), GOOD_SYSTEM).expect("valid system");
    assert_eq!(system.domains.len(), 2);
    assert!(system.console_domain.is_some() && system.xenstore_domain.is_some());
}
