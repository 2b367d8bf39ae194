//! Link options of the `dirty_flow_exporter` binary that cut its resident memory (see
//! `bench/baseline_rss.sh`); the library, tests and examples link as before.
//!
//! - `-z pack-relative-relocs` (DT_RELR): the PIE's ~20,000 relative relocations packed into a few
//!   KiB instead of 500 KiB of `.rela.dyn` that the dynamic loader reads at every start
//!   (-0.7 MiB). The binary then needs glibc 2.36 or later (Debian 12) to start.
//! - `--symbol-ordering-file=link/symbol-order.txt` (ld.lld only): the ~1,300 functions a start
//!   and a scrape run, placed first and together. The kernel maps code 64 KiB around each page
//!   first touched ("fault-around"), so scattered hot functions kept 3.5 MiB of the 5 MiB of code
//!   resident; together they keep ~1.5 MiB. A name that no longer exists is skipped, so a stale
//!   file only costs memory; `bench/symbol_order/symbol_order.sh` writes a fresh one.
//!
//! Only on x86_64-unknown-linux-gnu, where Rust 1.90 and later link with rust-lld by default;
//! `DIRTY_FLOW_PLAIN_LINK=1` turns both off.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=DIRTY_FLOW_PLAIN_LINK");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || std::env::var_os("DIRTY_FLOW_PLAIN_LINK").is_some()
    {
        return;
    }
    let arg = |a: &str| println!("cargo:rustc-link-arg-bin=dirty_flow_exporter={a}");
    arg("-Wl,-z,pack-relative-relocs");
    // A linker of one's own (or rustc before 1.90) may be GNU ld, which has no symbol ordering.
    let own_linker = std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
        || std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("linker"));
    if !own_linker && rustc_minor().is_some_and(|m| m >= 90) {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        arg(&format!(
            "-Wl,--symbol-ordering-file={dir}/link/symbol-order.txt"
        ));
        arg("-Wl,--no-warn-symbol-ordering");
    }
}

/// The minor version of the rustc cargo runs (`rustc 1.95.0 (...)` gives 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}
