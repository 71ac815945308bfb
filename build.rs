//! The gateway binary's code layout: the functions a serving gateway runs (start-up, the proxy
//! path on both protocols, idle connections, the admin endpoints) are linked together at the
//! start of `.text`, in the order `link/kwikid-gateway.order` lists them (lld's
//! `--symbol-ordering-file`).
//!
//! Why: the kernel maps a binary's code into a process 64 KiB at a time around each page it
//! runs ("fault-around"), and those pages count in its RSS. Scattered through a 5.8 MiB `.text`,
//! the ~2 MiB that runs kept ~5.3 MiB of it resident; packed together, ~3.4 MiB
//! (README, Performance). Nothing but the layout changes.
//!
//! The list names functions by their mangled symbols, which depend on the compiler and the
//! dependency versions: after either changes, `bash benches/order.sh` writes it again. Names
//! the binary does not have are skipped, so a stale list only loses the saving. It is passed
//! only where the linker is known to be lld, which understands it: a release build for
//! `x86_64-unknown-linux-gnu` with rustc 1.90 or later (its default linker there), and no
//! linker chosen through `RUSTFLAGS`.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    let manifest = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = Path::new(&manifest).join("link/kwikid-gateway.order");
    println!("cargo:rerun-if-changed=link/kwikid-gateway.order");
    if links_with_lld() && env::var("PROFILE").as_deref() == Ok("release") && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=kwikid-gateway=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=kwikid-gateway=-Wl,--no-warn-symbol-ordering");
    }
}

/// rustc links `x86_64-unknown-linux-gnu` with its own lld from 1.90 on, unless the build
/// asks for another linker.
fn links_with_lld() -> bool {
    let target = env::var("TARGET").unwrap_or_default();
    let rustflags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    target == "x86_64-unknown-linux-gnu" && !rustflags.contains("link") && rustc_minor() >= Some(90)
}

/// The minor version of the rustc that builds the crate: `rustc 1.95.0 (…)` gives 95.
fn rustc_minor() -> Option<u32> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(rustc).arg("-V").output().ok()?;
    let version = String::from_utf8(out.stdout).ok()?;
    let mut parts = version.split_whitespace().nth(1)?.split('.');
    if parts.next()? != "1" {
        return None;
    }
    parts.next()?.parse().ok()
}
