//! The binary's own help and version. (Being an integration test of this
//! package, it also makes `cargo test` build `target/<profile>/trellis`, which
//! the end-to-end tests in `tests/` run.)

#![allow(clippy::expect_used)]

use std::process::Command;

fn trellis(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .output()
        .expect("run trellis");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn help_lists_the_commands() {
    let (ok, text) = trellis(&["--help"]);
    assert!(ok, "{text}");
    assert!(text.contains("up") && text.contains("build"), "{text}");
}

#[test]
fn every_up_flag_names_its_environment_variable() {
    let (ok, text) = trellis(&["up", "--help"]);
    assert!(ok, "{text}");
    for var in [
        "TRELLIS_MANIFEST",
        "TRELLIS_LISTEN",
        "TRELLIS_REQUEST_TIMEOUT",
        "TRELLIS_MAX_INSTANCES",
    ] {
        assert!(text.contains(var), "`{var}` missing from:\n{text}");
    }
}

#[test]
fn version_is_printed() {
    let (ok, text) = trellis(&["--version"]);
    assert!(ok, "{text}");
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
}

#[test]
fn a_bad_flag_value_is_one_clear_error() {
    let (ok, text) = trellis(&["up", "--request-timeout", "soon"]);
    assert!(!ok);
    assert!(text.contains("--request-timeout"), "{text}");
}
