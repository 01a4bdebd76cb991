//! The one place the domain images' link arguments live. Each domain package's `build.rs`
//! calls [`link_domain_binary`] with its binary's name:
//!
//! ```ignore
//! fn main() {
//!     domain_link::link_domain_binary("hello");
//! }
//! ```
//!
//! The binary is linked freestanding (no start files, no libc, static, not position
//! independent) with the runtime's link script, `driver-domains/runtime/link.ld`, which puts
//! the image at the address the microvisor loads domains at and the PVH note where it looks.
//! The arguments apply to that binary only, so a package's library and its host tests link
//! normally.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// The runtime's link script.
pub fn link_script() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("runtime")
        .join("link.ld");
    script.canonicalize().unwrap_or(script)
}

/// Prints the `cargo:` lines that link binary `bin` of the calling package as a domain
/// image (see the crate documentation).
pub fn link_domain_binary(bin: &str) {
    let script = link_script();
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
        println!("cargo:rustc-link-arg-bin={bin}={arg}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_link_script_is_there() {
        assert!(super::link_script().is_file());
    }
}
