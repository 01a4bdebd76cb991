//! Links `blkback` as a freestanding PVH image with the runtime's link script (see
//! `driver-domains/runtime/link.ld`). The arguments apply to this binary only, so the
//! library's host tests link normally.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let script = manifest_dir
        .join("..")
        .join("driver-domains")
        .join("runtime")
        .join("link.ld");
    let script = script.canonicalize().unwrap_or(script);
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
    let script_arg = format!("-Wl,-T,{}", script.display());
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        script_arg.as_str(),
        "-Wl,--build-id=none",
        "-Wl,-z,max-page-size=4096",
    ] {
        println!("cargo:rustc-link-arg-bin=blkback={arg}");
    }
}
