//! Link the microvisor as a freestanding Multiboot1 image with its own linker script.
//! The flags touch only this binary, so host builds and tests of the other crates are unaffected.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,max-page-size=4096",
        "-Wl,--gc-sections",
    ] {
        println!("cargo:rustc-link-arg-bin=microvisor={arg}");
    }
    println!("cargo:rustc-link-arg-bin=microvisor=-Wl,-T,{dir}/link.ld");
    println!("cargo:rerun-if-changed=link.ld");
}
