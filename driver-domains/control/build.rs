//! Links `control` as a freestanding PVH image with the runtime's link script (see the
//! `domain-link` crate).

fn main() {
    domain_link::link_domain_binary("control");
}
