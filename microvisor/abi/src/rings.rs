//! Layouts of the fixed shared pages the builder gives each domain: the xenstore ring
//! (`io/xs_wire.h` `xenstore_domain_interface`) and the console ring (`io/console.h`
//! `xencons_interface`).

/// `struct xenstore_domain_interface`.
pub mod xenstore {
    pub const RING_SIZE: u32 = 1024;
    pub const REQ: usize = 0;
    pub const RSP: usize = 1024;
    pub const REQ_CONS: usize = 2048;
    pub const REQ_PROD: usize = 2052;
    pub const RSP_CONS: usize = 2056;
    pub const RSP_PROD: usize = 2060;
    pub const ERROR: usize = 2072;
    /// Largest payload of one message (`XENSTORE_PAYLOAD_MAX`).
    pub const PAYLOAD_MAX: u32 = 4096;
}

/// `struct xencons_interface`.
pub mod console {
    pub const IN: usize = 0;
    pub const IN_SIZE: u32 = 1024;
    pub const OUT: usize = 1024;
    pub const OUT_SIZE: u32 = 2048;
    pub const IN_CONS: usize = 3072;
    pub const IN_PROD: usize = 3076;
    pub const OUT_CONS: usize = 3080;
    pub const OUT_PROD: usize = 3084;
}
