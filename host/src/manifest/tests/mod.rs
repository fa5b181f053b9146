//! Manifest tests: `good` parses realistic manifests and checks the model,
//! `errors` checks that each kind of mistake is reported with file, line,
//! column and a message naming the field.

mod errors;
mod field_errors;
mod gateway;
mod good;

use std::path::Path;

use super::{AppManifest, ManifestError, parse};

/// Where parsed test manifests claim to live.
const FILE: &str = "/app/spin.toml";

/// The smallest valid manifest; tests append tables to it.
const HEADER: &str = "spin_manifest_version = 2\n[application]\nname = \"t\"\n";

fn parse_ok(text: &str) -> AppManifest {
    match parse(text, Path::new(FILE)) {
        Ok(manifest) => manifest,
        Err(e) => panic!("expected {text:?} to parse, got: {e}"),
    }
}

fn parse_err(text: &str) -> ManifestError {
    match parse(text, Path::new(FILE)) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts that `text` fails on the line containing `marker`, with a message
/// containing each of `needles`, and that Display is `file:line:col: message`.
#[track_caller]
fn assert_error(text: &str, marker: &str, needles: &[&str]) {
    let err = parse_err(text);
    let expected_line = text
        .lines()
        .position(|l| l.contains(marker))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("marker {marker:?} not in text"));
    let shown = err.to_string();
    assert_eq!(
        err.line,
        Some(expected_line),
        "wrong line in: {shown}\n---\n{text}"
    );
    let column = err
        .column
        .unwrap_or_else(|| panic!("no column in: {shown}"));
    assert!(
        shown.starts_with(&format!("{FILE}:{expected_line}:{column}: ")),
        "{shown}"
    );
    assert!(!shown.contains('\n'), "multi-line error: {shown:?}");
    for needle in needles {
        assert!(
            shown.contains(needle),
            "{shown:?} should contain {needle:?}"
        );
    }
}

/// `HEADER` plus one component `c` and an HTTP trigger for it, then `extra`.
fn with_component(component_extra: &str, extra: &str) -> String {
    format!(
        "{HEADER}\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n\n[component.c]\nsource = \"c.wasm\"\n{component_extra}\n{extra}"
    )
}
