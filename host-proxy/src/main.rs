//! `nacre-host-proxy`: the parent-instance side (SPEC §8).
//!
//! Not built yet: this binary exists so the workspace has every process of
//! SPEC §1, and says so plainly when run.

fn main() {
    eprintln!(
        "nacre-host-proxy: not yet implemented (inbound forwarding and the egress CONNECT proxy arrive in a later release)"
    );
    std::process::exit(2);
}
