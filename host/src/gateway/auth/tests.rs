use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::capabilities::variables::AppVariables;

const SECRET: &str = "0123456789abcdef0123456789abcdef-hs256";
const KEYS: &str = "alice:alice-key-0123456789, bob:bob-key-0123456789abc";

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/gateway/testdata")
}

/// An app whose policy is written in `auth` (the body of
/// `[application.tool.trellis.auth]` and what follows it).
fn load(auth: &str) -> Result<Auth> {
    let text = format!(
        r#"
spin_manifest_version = 2
[application]
name = "auth-test"
[application.tool.trellis.auth]
{auth}
[variables]
api_keys = {{ default = "", secret = true }}
jwt_secret = {{ default = "", secret = true }}
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
"#
    );
    let manifest = manifest::parse(&text, &testdata().join("spin.toml"))?;
    let variables = AppVariables::resolve(&manifest, |name| match name {
        "SPIN_VARIABLE_API_KEYS" => Some(KEYS.to_owned()),
        "SPIN_VARIABLE_JWT_SECRET" => Some(SECRET.to_owned()),
        _ => None,
    })?;
    let policy = manifest
        .application
        .trellis
        .auth
        .as_ref()
        .context("no auth policy")?;
    Auth::load(
        policy,
        &manifest.application.http_base,
        &variables,
        &manifest.dir,
    )
}

const BOTH: &str = r#"
require = ["api_key", "jwt"]
[application.tool.trellis.auth.api_key]
keys = "{{ api_keys }}"
[application.tool.trellis.auth.jwt]
secret = "{{ jwt_secret }}"
jwks = "jwks.json"
"#;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::try_from(*name).unwrap(),
            HeaderValue::try_from(*value).unwrap(),
        );
    }
    map
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn rs256(claims: serde_json::Value, key_file: &str, kid: Option<&str>) -> String {
    let der = std::fs::read(testdata().join(key_file)).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(&der)).unwrap()
}

fn bearer(token: &str) -> HeaderMap {
    headers(&[("authorization", &format!("Bearer {token}"))])
}

fn check(auth: &Auth, headers: &HeaderMap) -> Result<Option<Verified>, Refused> {
    auth.check(&Method::GET, "/x", headers)
}

fn subject(outcome: Result<Option<Verified>, Refused>) -> String {
    outcome.unwrap().unwrap().subject.to_string()
}

fn refusal(outcome: Result<Option<Verified>, Refused>) -> String {
    match outcome.unwrap_err() {
        Refused::Unauthorized { message, .. } => message,
        other => panic!("{other:?}"),
    }
}

#[test]
fn api_keys_name_their_subject() {
    let auth = load(BOTH).unwrap();
    let ok = check(&auth, &headers(&[("x-api-key", "bob-key-0123456789abc")])).unwrap();
    assert_eq!(
        ok,
        Some(Verified {
            scheme: AuthScheme::ApiKey,
            subject: Arc::from("bob"),
        })
    );
    let wrong = refusal(check(
        &auth,
        &headers(&[("x-api-key", "bob-key-0123456789abd")]),
    ));
    assert_eq!(wrong, "the API key in `x-api-key` is not valid");
}

#[test]
fn a_request_without_credentials_is_told_what_to_send() {
    let auth = load(BOTH).unwrap();
    let refused = check(&auth, &HeaderMap::new()).unwrap_err();
    assert_eq!(
        refused,
        Refused::Unauthorized {
            message: "this route requires a credential: send an API key in `x-api-key` or a bearer token in `Authorization`".into(),
            challenge: Some("Bearer"),
        }
    );
}

#[test]
fn hs256_tokens_are_verified() {
    let auth = load(BOTH).unwrap();
    let good = hs256(json!({"sub": "carol", "exp": now() + 60}), SECRET);
    let verified = check(&auth, &bearer(&good)).unwrap().unwrap();
    assert_eq!(verified.scheme, AuthScheme::Jwt);
    assert_eq!(&*verified.subject, "carol");

    let expired = hs256(json!({"sub": "carol", "exp": now() - 120}), SECRET);
    assert_eq!(
        refusal(check(&auth, &bearer(&expired))),
        "the bearer token has expired"
    );
    let forged = hs256(
        json!({"sub": "carol", "exp": now() + 60}),
        "another-secret-of-enough-length-000",
    );
    assert_eq!(
        refusal(check(&auth, &bearer(&forged))),
        "the bearer token's signature is not valid"
    );
    let no_exp = hs256(json!({"sub": "carol"}), SECRET);
    assert_eq!(
        refusal(check(&auth, &bearer(&no_exp))),
        "the bearer token has no `exp` claim"
    );
    let no_sub = hs256(json!({"exp": now() + 60}), SECRET);
    assert_eq!(
        refusal(check(&auth, &bearer(&no_sub))),
        "the bearer token has no `sub` claim"
    );
    let not_yet = hs256(
        json!({"sub": "carol", "exp": now() + 600, "nbf": now() + 300}),
        SECRET,
    );
    assert_eq!(
        refusal(check(&auth, &bearer(&not_yet))),
        "the bearer token is not valid yet"
    );
    assert_eq!(
        refusal(check(&auth, &bearer("not.a.jwt"))),
        "the bearer token is not a well-formed JWT"
    );
}

#[test]
fn unsigned_tokens_are_refused() {
    let auth = load(BOTH).unwrap();
    // {"alg":"none"} with a valid payload and no signature.
    let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64_url(format!(r#"{{"sub":"mallory","exp":{}}}"#, now() + 60).as_bytes());
    let outcome = check(&auth, &bearer(&format!("{header}.{payload}.")));
    assert!(outcome.is_err(), "{outcome:?}");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn rs256_tokens_are_verified_against_the_key_set() {
    let auth = load(BOTH).unwrap();
    let claims = json!({"sub": "dave", "exp": now() + 60});
    let good = rs256(claims.clone(), "rs256-private.der", Some("test-1"));
    assert_eq!(subject(check(&auth, &bearer(&good))), "dave");
    // One key in the set: a token without `kid` may use it.
    let no_kid = rs256(claims.clone(), "rs256-private.der", None);
    assert_eq!(subject(check(&auth, &bearer(&no_kid))), "dave");

    let stranger = rs256(claims.clone(), "rs256-stranger.der", Some("test-1"));
    assert_eq!(
        refusal(check(&auth, &bearer(&stranger))),
        "the bearer token's signature is not valid"
    );
    let unknown_kid = rs256(claims, "rs256-private.der", Some("test-2"));
    assert_eq!(
        refusal(check(&auth, &bearer(&unknown_kid))),
        "the bearer token's key (`kid`) is not in the key set"
    );
}

#[test]
fn an_algorithm_without_keys_is_refused() {
    let auth = load(
        r#"
require = ["jwt"]
[application.tool.trellis.auth.jwt]
secret = "{{ jwt_secret }}"
"#,
    )
    .unwrap();
    let token = rs256(
        json!({"sub": "dave", "exp": now() + 60}),
        "rs256-private.der",
        Some("test-1"),
    );
    assert_eq!(
        refusal(check(&auth, &bearer(&token))),
        "the bearer token is signed with RS256, which this app does not accept"
    );
}

#[test]
fn issuer_and_audience_are_checked_when_set() {
    let auth = load(
        r#"
require = ["jwt"]
[application.tool.trellis.auth.jwt]
secret = "{{ jwt_secret }}"
issuer = "https://id.example.com"
audience = "shop"
"#,
    )
    .unwrap();
    let exp = now() + 60;
    let good = json!({"sub": "e", "exp": exp, "iss": "https://id.example.com", "aud": "shop"});
    assert_eq!(subject(check(&auth, &bearer(&hs256(good, SECRET)))), "e");
    let other_iss = json!({"sub": "e", "exp": exp, "iss": "https://evil.example", "aud": "shop"});
    assert_eq!(
        refusal(check(&auth, &bearer(&hs256(other_iss, SECRET)))),
        "the bearer token's issuer is not accepted"
    );
    let other_aud =
        json!({"sub": "e", "exp": exp, "iss": "https://id.example.com", "aud": "admin"});
    assert_eq!(
        refusal(check(&auth, &bearer(&hs256(other_aud, SECRET)))),
        "the bearer token's audience is not accepted"
    );
    let no_aud = json!({"sub": "e", "exp": exp, "iss": "https://id.example.com"});
    assert_eq!(
        refusal(check(&auth, &bearer(&hs256(no_aud, SECRET)))),
        "the bearer token has no `aud` claim"
    );
}

#[test]
fn the_most_specific_route_with_an_entry_for_the_method_decides() {
    let auth = load(
        r#"
require = ["jwt"]
[application.tool.trellis.auth.api_key]
keys = "{{ api_keys }}"
[application.tool.trellis.auth.jwt]
secret = "{{ jwt_secret }}"
[[application.tool.trellis.auth.routes]]
route = "/health/..."
require = []
[[application.tool.trellis.auth.routes]]
route = "/users/..."
methods = ["GET"]
require = []
[[application.tool.trellis.auth.routes]]
route = "/users/:id"
methods = ["delete"]
require = ["api_key"]
"#,
    )
    .unwrap();
    let required = |method: Method, path: &str| auth.required(&method, path).to_vec();
    assert_eq!(required(Method::GET, "/health/ready"), []);
    assert_eq!(required(Method::GET, "/users/7"), []);
    assert_eq!(required(Method::DELETE, "/users/7"), [AuthScheme::ApiKey]);
    // `/users/:id` has no POST entry, `/users/...` neither: the default.
    assert_eq!(required(Method::POST, "/users/7"), [AuthScheme::Jwt]);
    assert_eq!(required(Method::GET, "/orders"), [AuthScheme::Jwt]);
    assert_eq!(required(Method::GET, "/users"), []);
    assert_eq!(
        auth.check(&Method::GET, "/users/7", &HeaderMap::new()),
        Ok(None)
    );
}

#[test]
fn unusable_keys_and_secrets_fail_the_load_by_name() {
    let short_key = load(
        r#"
[application.tool.trellis.auth.api_key]
keys = "carol:short"
"#,
    );
    let message = format!("{:#}", short_key.err().unwrap());
    assert!(
        message.contains("the key of `carol` is shorter than 16 characters"),
        "{message}"
    );
    assert!(!message.contains("short\""), "the key leaked: {message}");

    let not_pairs = load(
        r#"
[application.tool.trellis.auth.api_key]
keys = "alice:alice-key-0123456789 just-a-key-0123456789"
"#,
    );
    let message = format!("{:#}", not_pairs.err().unwrap());
    assert!(message.contains("entry 2 is not `name:key`"), "{message}");

    let weak = load(
        r#"
[application.tool.trellis.auth.jwt]
secret = "too-short"
"#,
    );
    let message = format!("{:#}", weak.err().unwrap());
    assert!(message.contains("shorter than 32 bytes"), "{message}");

    let missing_jwks = load(
        r#"
[application.tool.trellis.auth.jwt]
jwks = "no-such-file.json"
"#,
    );
    let message = format!("{:#}", missing_jwks.err().unwrap());
    assert!(message.contains("no-such-file.json"), "{message}");
}

#[test]
fn a_key_over_its_rate_is_told_when_to_retry_and_others_are_not_affected() {
    let auth = load(
        r#"
require = ["api_key"]
[application.tool.trellis.auth.api_key]
keys = "{{ api_keys }}"
rate_per_second = 2
"#,
    )
    .unwrap();
    let alice = headers(&[("x-api-key", "alice-key-0123456789")]);
    assert_eq!(subject(check(&auth, &alice)), "alice");
    assert_eq!(subject(check(&auth, &alice)), "alice");
    match check(&auth, &alice) {
        Err(Refused::OverRate {
            subject,
            retry_after,
        }) => {
            assert_eq!(&*subject, "alice");
            assert!(
                retry_after <= std::time::Duration::from_secs(1),
                "{retry_after:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let bob = headers(&[("x-api-key", "bob-key-0123456789abc")]);
    assert_eq!(subject(check(&auth, &bob)), "bob");
}
