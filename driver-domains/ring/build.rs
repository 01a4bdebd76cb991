//! Declares the `loom` cfg so `#[cfg(loom)]` passes the `unexpected_cfgs` lint.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
