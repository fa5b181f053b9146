//! Edge policies end to end: `[application.tool.trellis]` auth (API keys,
//! HS256 and RS256 JWTs) and CORS, on the real `trellis up` serving the
//! testbed guest, which echoes the headers it was given.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use trellis_tests::{AppDir, Reply, Trellis, UpOptions, client, workspace_root};

const API_KEYS: &str = "alice:alice-key-0123456789,bob:bob-key-0123456789abc";
const JWT_SECRET: &str = "a-shared-secret-of-32-bytes-or-more!";
const ORIGIN: &str = "https://shop.example.com";

const MANIFEST: &str = r#"
spin_manifest_version = 2

[application]
name = "gateway"

[variables]
api_keys = { required = true, secret = true }
jwt_secret = { required = true, secret = true }

[application.tool.trellis.auth]
require = ["api_key", "jwt"]

[application.tool.trellis.auth.api_key]
keys = "{{ api_keys }}"
rate_per_second = 20

[application.tool.trellis.auth.jwt]
secret = "{{ jwt_secret }}"
jwks = "jwks.json"

[[application.tool.trellis.auth.routes]]
route = "/open/..."
methods = ["GET"]
require = []

[application.tool.trellis.cors]
allowed_origins = ["https://shop.example.com"]
allowed_methods = ["GET", "POST"]
allowed_headers = ["content-type", "authorization", "x-api-key"]
expose_headers = ["location"]
max_age_secs = 600

[[trigger.http]]
route = "/..."
component = "testbed"

[[trigger.http]]
route = "/open/..."
component = "open"

[component.testbed]
source = "{testbed}"

[component.open]
source = "{testbed}"
"#;

fn testdata(file: &str) -> PathBuf {
    workspace_root()
        .join("host/src/gateway/testdata")
        .join(file)
}

fn start() -> (AppDir, Trellis) {
    let app = AppDir::new(MANIFEST);
    std::fs::copy(testdata("jwks.json"), app.path().join("jwks.json")).expect("copy jwks");
    let options = UpOptions {
        env: vec![
            ("SPIN_VARIABLE_API_KEYS", API_KEYS),
            ("SPIN_VARIABLE_JWT_SECRET", JWT_SECRET),
        ],
        ..UpOptions::default()
    };
    let trellis = Trellis::up_with(&app.manifest(), options);
    (app, trellis)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn hs256(claims: Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
}

fn rs256(claims: Value, key_file: &str) -> String {
    let der = std::fs::read(testdata(key_file)).expect("read key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-1".into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(&der)).expect("sign")
}

async fn get(trellis: &Trellis, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = client().get(trellis.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::read(request.send().await.expect("request")).await
}

/// The headers the component was given, from the testbed's echo.
fn seen(reply: &Reply, name: &str) -> Option<String> {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["headers"][name].as_str().map(str::to_owned)
}

#[tokio::test]
async fn api_keys_and_tokens_are_checked_before_the_component_runs() {
    let (_app, trellis) = start();

    let missing = get(&trellis, "/echo", &[]).await;
    let message = missing.assert_error(401, "unauthorized");
    assert!(message.contains("x-api-key"), "{message}");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));

    let alice = get(&trellis, "/echo", &[("x-api-key", "alice-key-0123456789")]).await;
    assert_eq!(seen(&alice, "trellis-subject").as_deref(), Some("alice"));
    assert_eq!(
        seen(&alice, "trellis-auth-scheme").as_deref(),
        Some("api_key")
    );

    let wrong = get(&trellis, "/echo", &[("x-api-key", "alice-key-0123456780")]).await;
    wrong.assert_error(401, "unauthorized");

    // A client cannot name its own subject, with or without a credential.
    let forged = [
        ("x-api-key", "bob-key-0123456789abc"),
        ("trellis-subject", "alice"),
    ];
    let bob = get(&trellis, "/echo", &forged).await;
    assert_eq!(seen(&bob, "trellis-subject").as_deref(), Some("bob"));
    let open = get(&trellis, "/open/echo", &[("trellis-subject", "alice")]).await;
    assert_eq!(seen(&open, "trellis-subject"), None);
    assert_eq!(seen(&open, "trellis-auth-scheme"), None);

    let good = hs256(json!({"sub": "carol", "exp": now() + 300}), JWT_SECRET);
    let bearer = format!("Bearer {good}");
    let carol = get(&trellis, "/echo", &[("authorization", &bearer)]).await;
    assert_eq!(seen(&carol, "trellis-subject").as_deref(), Some("carol"));
    assert_eq!(seen(&carol, "trellis-auth-scheme").as_deref(), Some("jwt"));

    let rsa = rs256(
        json!({"sub": "dave", "exp": now() + 300}),
        "rs256-private.der",
    );
    let dave = get(
        &trellis,
        "/echo",
        &[("authorization", &format!("Bearer {rsa}"))],
    )
    .await;
    assert_eq!(seen(&dave, "trellis-subject").as_deref(), Some("dave"));

    for (token, why) in [
        (
            hs256(json!({"sub": "carol", "exp": now() - 300}), JWT_SECRET),
            "expired",
        ),
        (
            hs256(
                json!({"sub": "carol", "exp": now() + 300}),
                "another-secret-of-32-bytes-or-more!!",
            ),
            "signature",
        ),
        (
            rs256(
                json!({"sub": "dave", "exp": now() + 300}),
                "rs256-stranger.der",
            ),
            "signature",
        ),
    ] {
        let refused = get(
            &trellis,
            "/echo",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        let message = refused.assert_error(401, "unauthorized");
        assert!(message.contains(why), "{message}");
    }

    // Public only for GET; the host's health checks never need credentials.
    let post = client()
        .post(trellis.url("/open/echo"))
        .body("{}")
        .send()
        .await
        .expect("request");
    Reply::read(post).await.assert_error(401, "unauthorized");
    assert_eq!(get(&trellis, "/health", &[]).await.status, 200);
}

#[tokio::test]
async fn the_host_answers_cors_preflights_and_marks_answers() {
    let (_app, trellis) = start();

    let preflight = client()
        .request(reqwest::Method::OPTIONS, trellis.url("/echo"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, x-api-key")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let header = |name: &str| {
        preflight
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    let methods = header("access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");
    let headers = header("access-control-allow-headers").unwrap_or_default();
    assert!(headers.contains("x-api-key"), "{headers}");
    assert_eq!(header("access-control-max-age").as_deref(), Some("600"));

    let stranger = client()
        .request(reqwest::Method::OPTIONS, trellis.url("/echo"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert_eq!(stranger.headers().get("access-control-allow-origin"), None);

    // Real requests carry the headers, the host's own 401 included, so a
    // page can read why it was refused.
    let from_page = [("origin", ORIGIN), ("x-api-key", "alice-key-0123456789")];
    let ok = get(&trellis, "/echo", &from_page).await;
    assert_eq!(ok.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(ok.header("access-control-expose-headers"), Some("location"));
    let refused = get(&trellis, "/echo", &[("origin", ORIGIN)]).await;
    refused.assert_error(401, "unauthorized");
    assert_eq!(refused.header("access-control-allow-origin"), Some(ORIGIN));
}

#[tokio::test]
async fn a_key_over_its_rate_is_429_and_other_keys_are_served() {
    let (_app, trellis) = start();
    let bob = [("x-api-key", "bob-key-0123456789abc")];
    let mut limited = None;
    for _ in 0..60 {
        let reply = get(&trellis, "/echo", &bob).await;
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let limited = limited.expect("60 requests at once stay under 20 a second");
    let message = limited.assert_error(429, "rate_limited");
    assert!(message.contains("`bob`"), "{message}");
    assert_eq!(limited.header("retry-after"), Some("1"));
    // Alice's key has its own budget.
    let alice = get(&trellis, "/echo", &[("x-api-key", "alice-key-0123456789")]).await;
    assert_eq!(seen(&alice, "trellis-subject").as_deref(), Some("alice"));
}
