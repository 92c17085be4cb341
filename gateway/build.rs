//! Lays out the release binary's hot code together.
//!
//! A gateway's start and its ingest run a few MB of code spread over ~27 MB
//! of text, in the order the compiler emitted it. The kernel maps the
//! binary's pages around each first touch, so nearly all of that text ends
//! up resident. `link/hot-functions.txt` lists the functions a drain runs
//! (made by `scripts/hot-functions`); the linker puts them first, and the
//! pages a gateway touches shrink by about half (docs/benchmarks.md,
//! "Hot code first").
//!
//! Only where the linker is known to take the list: release builds for
//! x86_64 Linux with the toolchain's own `rust-lld`, the default from Rust
//! 1.90. A name the build does not have (another toolchain, other
//! dependency versions or features) is skipped: the layout then falls back
//! to the compiler's order for that function, never a failed build.

use std::env;
use std::path::Path;
use std::process::Command;

const LIST: &str = "link/hot-functions.txt";

fn main() {
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-env-changed=RPM_GATEWAY_CODE_LAYOUT");
    let list = Path::new(&env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default()).join(LIST);
    if env::var("PROFILE").as_deref() != Ok("release")
        || env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var("RPM_GATEWAY_CODE_LAYOUT").as_deref() == Ok("off")
        || !list.exists()
        || !default_linker_is_rust_lld()
    {
        return;
    }
    // -Xlinker passes each argument as is (a path may hold a comma).
    for arg in [
        format!("--symbol-ordering-file={}", list.display()),
        "--no-warn-symbol-ordering".to_owned(),
    ] {
        println!("cargo:rustc-link-arg-bins=-Xlinker");
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}

/// True when rustc links with its bundled `rust-lld` and nothing in the
/// build's flags chooses another linker.
fn default_linker_is_rust_lld() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if [
        "fuse-ld",
        "linker-features",
        "link-self-contained",
        "linker=",
    ]
    .iter()
    .any(|f| flags.contains(f))
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
        || env::var_os("RUSTC_LINKER").is_some()
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = |args: &[&str]| {
        Command::new(&rustc)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let minor = output(&["-vV"]).and_then(|v| {
        let release = v.lines().find_map(|l| l.strip_prefix("release: "))?;
        release.split('.').nth(1)?.parse::<u32>().ok()
    });
    let sysroot = output(&["--print", "sysroot"]);
    match (minor, sysroot) {
        (Some(minor), Some(sysroot)) => {
            minor >= 90
                && Path::new(sysroot.trim())
                    .join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld")
                    .exists()
        }
        _ => false,
    }
}
