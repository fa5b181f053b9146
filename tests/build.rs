//! Builds the guest components (wasm32-wasip2, release) so `cargo test` always
//! runs the end-to-end tests against guests built from the current sources.
//!
//! The guests are workspace members but not default members, so a nested cargo
//! builds them, in a separate target dir: the outer cargo holds the lock on the
//! normal one. For each guest this emits `TRELLIS_GUEST_<NAME>` (the absolute
//! path of its .wasm, NAME upper-cased with `-` -> `_`) and `TRELLIS_GUEST_DIR`,
//! read by the tests with `env!`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest packages, all built by one nested cargo invocation.
const GUESTS: &[&str] = &[
    "hello", "testbed", "user", "dbtest", "order", "payment", "mqtest", "stranger",
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();

    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("components").display()
    );
    // Dependency bumps reach the guests through the lock file.
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let target_dir = guest_target_dir(&workspace);
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(&workspace)
        .args(["build", "--release", "--target", TARGET])
        .args(GUESTS.iter().flat_map(|g| ["-p", g]))
        .arg("--target-dir")
        .arg(&target_dir);
    clean_env(&mut cmd);

    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("may not be installed")
            || stderr.contains("can't find crate for `core`")
            || stderr.contains("can't find crate for `std`")
        {
            format!(
                "\n\nThe {TARGET} target seems to be missing; run: rustup target add {TARGET}\n"
            )
        } else {
            String::new()
        };
        panic!(
            "building the guest components failed ({}):\n{cmd:?}\n\n{stderr}{hint}",
            output.status
        );
    }

    let wasm_dir = target_dir.join(TARGET).join("release");
    for guest in GUESTS {
        // cargo names a cdylib after the crate name, i.e. with `-` -> `_`.
        let wasm = wasm_dir.join(format!("{}.wasm", guest.replace('-', "_")));
        assert!(
            wasm.is_file(),
            "the guest build did not produce {}",
            wasm.display()
        );
        let var = guest.to_uppercase().replace('-', "_");
        println!("cargo:rustc-env=TRELLIS_GUEST_{var}={}", wasm.display());
    }
    println!("cargo:rustc-env=TRELLIS_GUEST_DIR={}", wasm_dir.display());
}

/// `<workspace>/target/guests`, or `$CARGO_TARGET_DIR/guests` when that is set.
fn guest_target_dir(workspace: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        // A relative CARGO_TARGET_DIR is relative to where cargo was started,
        // which a build script cannot know; the workspace root is the usual case.
        Some(dir) => workspace.join(dir).join("guests"),
        None => workspace.join("target").join("guests"),
    }
}

/// Keeps the settings cargo hands to this build script (flags, wrappers, profile,
/// target, features...) from leaking into the wasm build, like wasmtime's
/// `crates/test-programs/artifacts/build.rs` does (it removes
/// CARGO_ENCODED_RUSTFLAGS and resets RUSTFLAGS; we go further).
fn clean_env(cmd: &mut Command) {
    // How to fetch crates and which toolchain to use stay, as does the jobserver
    // (CARGO_MAKEFLAGS), so the nested build shares the outer build's job slots.
    const KEEP: &[&str] = &[
        "CARGO_HOME",
        "CARGO_MAKEFLAGS",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
    ];
    // Set by cargo for build scripts, or host compiler settings.
    const DROP: &[&str] = &[
        "RUSTC",
        "RUSTDOC",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "TARGET",
        "HOST",
        "OUT_DIR",
        "OPT_LEVEL",
        "PROFILE",
        "DEBUG",
        "NUM_JOBS",
    ];
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let cargo_or_rustc = key.starts_with("CARGO_") || key.starts_with("RUSTC_");
        if (cargo_or_rustc && !KEEP.iter().any(|k| key.starts_with(k))) || DROP.contains(&key) {
            cmd.env_remove(key);
        }
    }
}
