//! `[application.tool.trellis]`: auth and CORS policies, read and refused.

use super::*;
use crate::manifest::{AuthScheme, CorsPolicy};

const VARS: &str = "[variables]\napi_keys = { default = \"\", secret = true }\n";

fn auth(body: &str) -> String {
    format!("{HEADER}[application.tool.trellis.auth]\n{body}\n{VARS}")
}

const API_KEY: &str = "[application.tool.trellis.auth.api_key]\nkeys = \"{{ api_keys }}\"\n";

#[test]
fn an_auth_policy_is_read_with_its_defaults() {
    let text = auth(&format!(
        "require = [\"api_key\"]\n{API_KEY}[application.tool.trellis.auth.jwt]\njwks = \"keys/jwks.json\"\n\
         [[application.tool.trellis.auth.routes]]\nroute = \"/orders/...\"\nmethods = [\"post\"]\nrequire = [\"jwt\", \"api_key\"]\n"
    ));
    let manifest = parse_ok(&text);
    let policy = manifest.application.trellis.auth.unwrap();
    assert_eq!(policy.require, [AuthScheme::ApiKey]);
    let api_key = policy.api_key.unwrap();
    assert_eq!(api_key.header, "x-api-key");
    assert_eq!(api_key.keys, "{{ api_keys }}");
    let jwt = policy.jwt.unwrap();
    assert_eq!(jwt.jwks.as_deref(), Some(Path::new("/app/keys/jwks.json")));
    assert_eq!(jwt.secret, None);
    assert_eq!(jwt.leeway_secs, 30);
    let [route] = policy.routes.as_slice() else {
        panic!("{:?}", policy.routes)
    };
    assert_eq!(route.methods, ["POST"]);
    assert_eq!(route.require, [AuthScheme::Jwt, AuthScheme::ApiKey]);
}

#[test]
fn auth_mistakes_are_named() {
    assert_error(
        &auth("require = []"),
        "[application.tool.trellis.auth]",
        &["configures no scheme"],
    );
    assert_error(
        &auth(&format!("require = [\"jwt\"]\n{API_KEY}")),
        "require = [\"jwt\"]",
        &["`require` names \"jwt\", but [application.tool.trellis.auth.jwt] is not configured"],
    );
    assert_error(
        &auth(&format!("require = [\"basic\"]\n{API_KEY}")),
        "require = [\"basic\"]",
        &["unknown auth scheme \"basic\""],
    );
    assert_error(
        &auth("[application.tool.trellis.auth.api_key]\nkeys = \"{{ keys }}\"\n"),
        "keys = ",
        &["`keys` refers to undeclared application variable `keys`"],
    );
    assert_error(
        &auth(
            "[application.tool.trellis.auth.api_key]\nheader = \"trellis-key\"\nkeys = \"{{ api_keys }}\"\n",
        ),
        "header = ",
        &["\"trellis-key\" is set by the host"],
    );
    assert_error(
        &auth("[application.tool.trellis.auth.jwt]\nissuer = \"me\"\n"),
        "[application.tool.trellis.auth.jwt]",
        &["needs `secret` (HS256) or `jwks` (RS256)"],
    );
    assert_error(
        &auth("[application.tool.trellis.auth.jwt]\njwks = \"\"\n"),
        "jwks = ",
        &["`jwks` is empty"],
    );
    let route = |r: &str| {
        auth(&format!(
            "{API_KEY}[[application.tool.trellis.auth.routes]]\n{r}\nrequire = []\n"
        ))
    };
    assert_error(
        &route("route = \"orders\""),
        "route = ",
        &["must start with `/`"],
    );
    assert_error(
        &route("route = \"/orders\"\nmethods = [\"GE T\"]"),
        "methods = ",
        &["\"GE T\" is not an HTTP method"],
    );
    assert_error(
        &route("route = \"/orders\"\nmethods = []"),
        "methods = ",
        &["`methods` is empty"],
    );
    let twice = auth(&format!(
        "{API_KEY}[[application.tool.trellis.auth.routes]]\nroute = \"/users/:id\"\nrequire = []\n\
         [[application.tool.trellis.auth.routes]]\nroute = \"/users/:user\"\nrequire = [\"api_key\"]\n"
    ));
    assert_error(
        &twice,
        "route = \"/users/:user\"",
        &["two [[application.tool.trellis.auth.routes]] entries for *"],
    );
    assert_error(
        &auth(&format!("{API_KEY}colour = \"blue\"\n")),
        "colour",
        &["unknown field `colour`"],
    );
}

fn cors(body: &str) -> String {
    format!("{HEADER}[application.tool.trellis.cors]\n{body}\n")
}

#[test]
fn a_cors_policy_is_read_with_its_defaults() {
    let manifest = parse_ok(&cors(
        "allowed_origins = [\"https://shop.example.com\", \"http://localhost:5173\"]\n\
         allowed_headers = [\"Content-Type\", \"authorization\"]\nallow_credentials = true\nmax_age_secs = 600",
    ));
    assert_eq!(
        manifest.application.trellis.cors,
        Some(CorsPolicy {
            allowed_origins: vec![
                "https://shop.example.com".into(),
                "http://localhost:5173".into()
            ],
            allowed_methods: vec!["GET".into(), "HEAD".into(), "POST".into()],
            allowed_headers: vec!["content-type".into(), "authorization".into()],
            expose_headers: vec![],
            allow_credentials: true,
            max_age_secs: Some(600),
        })
    );
    // What the manifest accepts, tower-http takes (it panics on a policy
    // browsers would refuse, when the layer wraps a service).
    let policy = manifest.application.trellis.cors.unwrap();
    let layer = crate::gateway::cors::layer(&policy).unwrap();
    let _service = tower::Layer::layer(&layer, tower::service_fn(|()| async { Ok::<(), ()>(()) }));
}

#[test]
fn cors_mistakes_are_named() {
    assert_error(
        &cors("allowed_origins = []"),
        "allowed_origins",
        &["`allowed_origins` is empty"],
    );
    for origin in [
        "shop.example.com",
        "https://shop.example.com/",
        "https://shop.example.com/app",
        "https://user@shop.example.com",
    ] {
        assert_error(
            &cors(&format!("allowed_origins = [\"{origin}\"]")),
            "allowed_origins",
            &["is not an origin; write scheme://host[:port]"],
        );
    }
    assert_error(
        &cors("allowed_origins = [\"*\"]\nallow_credentials = true"),
        "[application.tool.trellis.cors]",
        &["`allow_credentials = true` cannot be combined with `allowed_origins = [\"*\"]`"],
    );
    assert_error(
        &cors(
            "allowed_origins = [\"https://a.example\"]\nallowed_headers = [\"*\"]\nallow_credentials = true",
        ),
        "[application.tool.trellis.cors]",
        &["cannot be combined with `allowed_headers = [\"*\"]`"],
    );
    assert_error(
        &cors("allowed_origins = [\"https://a.example\"]\nallowed_methods = [\"GET\", \"*\"]"),
        "allowed_methods",
        &["`allowed_methods`: `*` must be the only entry"],
    );
    assert_error(
        &cors("allowed_origins = [\"https://a.example\"]\nexpose_headers = [\"bad header\"]"),
        "expose_headers",
        &["\"bad header\" is not valid here"],
    );
}

fn calls(table: &str) -> String {
    format!("{HEADER}{table}\n")
}

#[test]
fn call_settings_are_read_by_target() {
    let manifest = parse_ok(&calls(
        "[application.tool.trellis.calls.\"User.spin.internal\"]\ntimeout_ms = 2000\nbreaker_failures = 0\n\
         [application.tool.trellis.calls.\"api.example.com:443\"]\nretries = 0\nbreaker_open_ms = 10000\n",
    ));
    let settings = &manifest.application.trellis.calls;
    let user = settings["user.spin.internal"];
    assert_eq!(user.timeout_ms, Some(2000));
    assert_eq!(user.breaker_failures, Some(0));
    assert_eq!(user.retries, None);
    let api = settings["api.example.com:443"];
    assert_eq!(api.retries, Some(0));
    assert_eq!(api.breaker_open_ms, Some(10000));
}

#[test]
fn call_setting_mistakes_are_named() {
    for target in [
        "api.example.com",
        "https://api.example.com:443",
        ".spin.internal",
        "*.example.com:443",
    ] {
        assert_error(
            &calls(&format!(
                "[application.tool.trellis.calls.\"{target}\"]\nretries = 1"
            )),
            "[application.tool.trellis.calls",
            &["is neither a component (`<id>.spin.internal`) nor `host:port`"],
        );
    }
    assert_error(
        &calls("[application.tool.trellis.calls.\"a.spin.internal\"]\nretries = 11"),
        "retries",
        &["`retries` must be between 0 and 10, found 11"],
    );
    assert_error(
        &calls("[application.tool.trellis.calls.\"a.spin.internal\"]\ntimeout_ms = 0"),
        "timeout_ms",
        &["`timeout_ms` must be at least 1, found 0"],
    );
}
