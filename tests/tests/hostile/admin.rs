//! Attacks on the admin API: a tenant's token used beyond its tenant's
//! apps, and the API heard in the clear.

use std::path::Path;

use serde_json::{Value, json};
use trellis_tests::platform::{Env, TOKEN};
use trellis_tests::{AppDir, run_trellis};

/// One `hello` component answering every path of app `name`.
fn hello_app(name: &str) -> AppDir {
    AppDir::new(&format!(
        "spin_manifest_version = 2\n[application]\nname = \"{name}\"\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"web\"\n\
         [component.web]\nsource = \"{{hello}}\"\n"
    ))
}

/// A raw admin API call with `token`: status and body.
async fn call(
    admin: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = trellis_tests::client()
        .request(method, format!("{admin}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A tenant's team deploys with a token of its tenant's; with it, it can
/// do nothing to the platform or to another tenant, and a revoked one
/// opens nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_token_reaches_only_its_own_apps() {
    let env = Env::new("hostile_admin_tokens");
    let host = env.host();
    host.cli(&["tenant", "create", "acme"]);
    host.cli(&["tenant", "create", "evil"]);
    host.deploy("acme", &hello_app("site"));
    let created = host.cli(&["tenant", "token", "create", "evil"]);
    let token = created.trim().to_owned();
    assert!(token.starts_with("trellis_"), "{created}");
    let admin = format!("http://{}", host.trellis.admin.expect("admin address"));

    // Its own tenant's apps: deployed with the normal CLI, read back.
    let own = hello_app("mine");
    let manifest = own.manifest().display().to_string();
    let (status, stdout, stderr) = run_trellis(
        &[
            "deploy",
            "--tenant",
            "evil",
            "-f",
            &manifest,
            "--admin-url",
            &admin,
            "--admin-token",
            &token,
        ],
        Path::new("."),
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    let (status, body) = call(
        &admin,
        reqwest::Method::GET,
        "/v1/tenants/evil/apps/mine",
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Everything else is the operator's.
    use reqwest::Method as M;
    let attempts: Vec<(M, &str, Option<Value>)> = vec![
        (M::GET, "/v1/tenants", None),
        (M::POST, "/v1/tenants", Some(json!({"name": "mallory"}))),
        (
            M::PUT,
            "/v1/tenants/evil/limits",
            Some(json!({"max_concurrency": 100000})),
        ),
        (M::POST, "/v1/tenants/evil/tokens", None),
        (M::POST, "/v1/tenants/acme/suspend", None),
        (M::DELETE, "/v1/tenants/acme", None),
        (M::GET, "/v1/tenants/acme/apps/site", None),
        (M::GET, "/v1/tenants/acme/apps/site/versions", None),
        (
            M::PUT,
            "/v1/tenants/acme/apps/site",
            Some(json!({"manifest": "spin_manifest_version = 2", "components": {}})),
        ),
        (M::GET, "/v1/status", None),
        (M::GET, "/metrics", None),
    ];
    for (method, path, body) in attempts {
        let (status, answer) = call(&admin, method.clone(), path, &token, body).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
    }
    // acme's app is as it was.
    let site = host
        .request(reqwest::Method::GET, "site.acme.localhost", "/", None)
        .await;
    assert_eq!(site.status(), 200);

    // The store keeps only a digest of the token.
    let secret = token.rsplit('_').next().unwrap_or_default();
    let stored = trellis_tests::psql(
        &env.db.name,
        &format!("SELECT count(*) FROM trellis_platform.tokens t WHERE t::text LIKE '%{secret}%'"),
    );
    assert_eq!(stored, "0");

    // Revoked, it opens nothing.
    let listed = host.cli(&["tenant", "token", "list", "evil"]);
    let id = listed
        .split_whitespace()
        .next()
        .expect("a token id")
        .to_owned();
    host.cli(&["tenant", "token", "revoke", "evil", &id]);
    let (status, _) = call(
        &admin,
        reqwest::Method::GET,
        "/v1/tenants/evil/apps/mine",
        &token,
        None,
    )
    .await;
    assert_eq!(status, 401);
    // And the operator's token still does everything.
    let (status, _) = call(&admin, reqwest::Method::GET, "/v1/tenants", TOKEN, None).await;
    assert_eq!(status, 200);
}

/// With a certificate and key the admin API speaks only TLS; the CLI
/// reaches it at an https:// URL, trusting the operator's CA.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_speaks_tls() {
    let certificates = trellis_tests::certificates();
    let dir = certificates.path();
    let (cert, key, ca) = (
        dir.join("server.pem").display().to_string(),
        dir.join("server.key").display().to_string(),
        dir.join("ca.pem").display().to_string(),
    );
    let env = Env::new("hostile_admin_tls");
    let host = env.host_with(&["--admin-tls-cert", &cert, "--admin-tls-key", &key]);
    let addr = host.trellis.admin.expect("admin address");
    let https = format!("https://{addr}");
    let (status, stdout, stderr) = run_trellis(
        &[
            "tenant",
            "create",
            "acme",
            "--admin-url",
            &https,
            "--admin-token",
            TOKEN,
            "--admin-ca-file",
            &ca,
        ],
        Path::new("."),
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    // Without the CA, the CLI does not trust it; in the clear, nothing answers.
    let (status, _, stderr) = run_trellis(
        &[
            "tenant",
            "list",
            "--admin-url",
            &https,
            "--admin-token",
            TOKEN,
        ],
        Path::new("."),
    );
    assert!(!status.success());
    assert!(
        stderr.to_ascii_lowercase().contains("certificate"),
        "{stderr}"
    );
    let plain = trellis_tests::client()
        .get(format!("http://{addr}/v1/tenants"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(
        plain.is_err(),
        "the admin API answered in the clear: {plain:?}"
    );
}
