//! The `trellis` command line: start-up errors are one clear line, and
//! `trellis build` reports each component.

use trellis_tests::{AppDir, Trellis, UpOptions, run_trellis};

fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error:` line in:\n{stderr}"))
}

#[test]
fn a_bad_manifest_is_one_line_naming_file_line_and_field() {
    let app = AppDir::new(
        r#"spin_manifest_version = 2

[application]
name = "bad"

[component.hello]
source = "{hello}"
memory = 12
"#,
    );
    let (status, _, stderr) = run_trellis(
        &["up", "-f", "spin.toml", "--listen", "127.0.0.1:0"],
        app.path(),
    );
    assert!(!status.success());
    let line = error_line(&stderr);
    assert!(line.contains("spin.toml:8"), "no file:line in `{line}`");
    assert!(
        line.contains("memory"),
        "the field is not named in `{line}`"
    );
}

#[test]
fn an_unknown_trigger_type_names_the_supported_ones() {
    let app = AppDir::new(
        "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.redis]]\ncomponent = \"hello\"\n[component.hello]\nsource = \"{hello}\"\n",
    );
    let (status, _, stderr) = run_trellis(
        &["up", "-f", "spin.toml", "--listen", "127.0.0.1:0"],
        app.path(),
    );
    assert!(!status.success());
    let line = error_line(&stderr);
    assert!(line.contains("redis") && line.contains("http"), "`{line}`");
}

#[test]
fn a_missing_required_variable_stops_start_up_by_name() {
    let app = AppDir::new(
        r#"spin_manifest_version = 2
[application]
name = "vars"
[variables]
api_token = { required = true, secret = true }
[[trigger.http]]
route = "/..."
component = "hello"
[component.hello]
source = "{hello}"
[component.hello.variables]
token = "{{ api_token }}"
"#,
    );
    let err = match Trellis::try_up(&app.manifest(), UpOptions::default()) {
        Ok(_) => panic!("started without a required variable"),
        Err(output) => output,
    };
    assert!(
        err.contains("api_token"),
        "the variable is not named:\n{err}"
    );
    assert!(
        err.contains("SPIN_VARIABLE_API_TOKEN"),
        "no hint how to set it:\n{err}"
    );

    // With the value, it starts, and the secret never appears in the output.
    let trellis = Trellis::up_with(
        &app.manifest(),
        UpOptions {
            env: vec![("SPIN_VARIABLE_API_TOKEN", "s3cr3t-value")],
            ..UpOptions::default()
        },
    );
    assert!(!trellis.logs().contains("s3cr3t-value"));
}

#[test]
fn a_missing_source_names_the_component_and_file() {
    let app = AppDir::new(
        "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"gone\"\n[component.gone]\nsource = \"missing.wasm\"\n",
    );
    let (status, _, stderr) = run_trellis(
        &["up", "-f", "spin.toml", "--listen", "127.0.0.1:0"],
        app.path(),
    );
    assert!(!status.success());
    let line = error_line(&stderr);
    assert!(
        line.contains("gone") && line.contains("missing.wasm"),
        "`{line}`"
    );
}

#[test]
fn build_runs_each_command_and_shows_the_output_of_a_failure() {
    let app = AppDir::new(
        r#"spin_manifest_version = 2
[application]
name = "builds"
[[trigger.http]]
route = "/a"
component = "good"
[[trigger.http]]
route = "/b"
component = "broken"
[component.good]
source = "{hello}"
[component.good.build]
command = "echo compiling good"
[component.broken]
source = "{hello}"
[component.broken.build]
command = "echo 'error[E0425]: cannot find value' >&2; exit 3"
"#,
    );
    let (status, stdout, stderr) = run_trellis(&["build"], app.path());
    assert!(!status.success());
    assert!(stdout.contains("Building component good"), "{stdout}");
    assert!(stdout.contains("Finished building good"), "{stdout}");
    assert!(
        stderr.contains("error[E0425]"),
        "the failing build's output is not shown:\n{stderr}"
    );
    assert!(error_line(&stderr).contains("broken"), "{stderr}");

    let (status, stdout, _) = run_trellis(&["build", "--component", "good"], app.path());
    assert!(status.success(), "{stdout}");
    assert!(!stdout.contains("broken"), "{stdout}");
}

#[test]
fn an_otlp_endpoint_or_ca_file_the_exporter_cannot_use_is_refused_at_start() {
    let app = AppDir::new("spin_manifest_version = 2\n[application]\nname = \"x\"\n");
    let up = |extra: &[&str]| {
        let mut args = vec!["up", "-f", "spin.toml", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let (status, _, stderr) = run_trellis(&args, app.path());
        assert!(!status.success(), "{extra:?} accepted");
        error_line(&stderr).to_string()
    };

    let line = up(&["--otlp-endpoint", "grpc://collector.example.com:4317"]);
    assert!(line.contains("--otlp-endpoint"), "{line}");
    assert!(line.contains("not an http:// or https:// URL"), "{line}");

    let https = ["--otlp-endpoint", "https://collector.example.com:4318"];
    let line = up(&[&https[..], &["--otlp-ca-file", "missing-ca.pem"]].concat());
    assert!(line.contains("--otlp-ca-file missing-ca.pem"), "{line}");
    assert!(line.contains("cannot read it"), "{line}");

    std::fs::write(app.path().join("not-pem.pem"), "no certificate here").expect("write");
    let line = up(&[&https[..], &["--otlp-ca-file", "not-pem.pem"]].concat());
    assert!(line.contains("--otlp-ca-file not-pem.pem"), "{line}");
}
