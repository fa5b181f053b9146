//! Attacks on the host's files: a manifest naming paths outside its app
//! directory, sent to the admin API directly (the CLI checks some paths
//! itself, and an attacker does not use it), or a symlink leading out.

use serde_json::json;
use trellis_tests::platform::Env;
use trellis_tests::{Trellis, UpOptions, guest};

/// `[component.web]` of the probe app, a `testbed` at `/...`; `extra` is
/// added to the component's table, `tables` after it.
fn manifest(extra: &str, tables: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "probe"
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "web.wasm"
{extra}
{tables}
"#
    )
}

/// The issue's third attack: `files = [{ source = "/", destination = "/h" }]`
/// uploaded straight to the admin API was accepted, and the component read
/// the host's `/etc/passwd` and `/proc/self/environ` (the admin token, the
/// secrets key, the database URL). Every path field, both `files` forms.
#[tokio::test(flavor = "multi_thread")]
async fn paths_out_of_the_app_directory_are_refused_by_the_server() {
    let env = Env::new("hostile_files");
    let host = env.host();
    host.cli(&["tenant", "create", "evil"]);
    let wasm = std::fs::read(guest("testbed")).expect("testbed wasm");
    let digest = host.upload_blob(wasm).await;
    let attacks = [
        (
            r#"files = [{ source = "/", destination = "/h" }]"#,
            "",
            "files",
        ),
        (
            r#"files = [{ source = "../../../..", destination = "/h" }]"#,
            "",
            "files",
        ),
        (
            r#"files = [{ source = "assets/../..", destination = "/h" }]"#,
            "",
            "files",
        ),
        (r#"files = ["/etc/passwd"]"#, "", "files"),
        (r#"files = ["../../etc/*"]"#, "", "files"),
        (r#"exclude_files = ["/etc/*"]"#, "", "exclude_files"),
        (
            "",
            "[component.web.tool.trellis.databases.data]\nmigrations = \"/etc\"",
            "migrations",
        ),
        (
            "",
            "[component.web.tool.trellis.databases.data]\nmigrations = \"../../../../etc\"",
            "migrations",
        ),
        (
            "",
            "[application.tool.trellis]\nopenapi = \"/etc/passwd\"",
            "openapi",
        ),
        (
            "",
            "[application.tool.trellis.auth]\nrequire = [\"jwt\"]\n[application.tool.trellis.auth.jwt]\njwks = \"../../../../etc/passwd\"",
            "jwks",
        ),
    ];
    for (extra, tables, field) in attacks {
        // The tables go after the component's, so `[application.tool...]`
        // must come first in TOML: put application tables before components.
        let text = if tables.starts_with("[application") {
            manifest(extra, "").replacen(
                "[[trigger.http]]",
                &format!("{tables}\n[[trigger.http]]"),
                1,
            )
        } else {
            manifest(extra, tables)
        };
        let (status, body) = host
            .admin_put(
                "/v1/tenants/evil/apps/probe",
                &json!({"manifest": text, "components": {"web": digest}}),
            )
            .await;
        assert_eq!(status, 422, "{field}: accepted: {body}\n{text}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{field}: {message}");
    }
    // Nothing was stored: the tenant has no app.
    let (status, body) = host
        .admin_get(
            "/v1/tenants/evil/apps/probe",
            Some(trellis_tests::platform::TOKEN),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // What a tenant may mount, it reads; nothing beside it.
    let app = super::testbed_app(r#"files = [{ source = "assets", destination = "/assets" }]"#);
    std::fs::create_dir_all(app.path().join("assets")).expect("assets");
    std::fs::write(app.path().join("assets/hello.txt"), "hello from the app").expect("asset");
    host.deploy("evil", &app);
    let read = async |path: &str| {
        super::get_text(&host, "probe.evil.localhost", &format!("/file?path={path}")).await
    };
    let own = read("/assets/hello.txt").await;
    assert_eq!(own, (200, "hello from the app".to_owned()));
    for path in [
        "/etc/passwd",
        "/proc/self/environ",
        "/assets/../../etc/passwd",
        "/assets/../spin.toml",
    ] {
        let (status, text) = read(path).await;
        assert_eq!(status, 404, "{path}: {text}");
    }
}

/// A symlink inside the app directory that leads out of it is refused when
/// the app loads, in `trellis up` as in `serve`.
#[test]
fn a_symlink_out_of_the_app_directory_is_refused() {
    let app = super::testbed_app(r#"files = [{ source = "assets", destination = "/h" }]"#);
    std::os::unix::fs::symlink("/", app.path().join("assets")).expect("symlink");
    let Err(output) = Trellis::try_up(&app.manifest(), UpOptions::default()) else {
        panic!("trellis up served an app mounting /");
    };
    assert!(
        output.contains("leads outside the app directory"),
        "{output}"
    );
}
