use std::path::{Path, PathBuf};

use super::super::{
    AmqpDefaults, AmqpTrigger, ComponentBuild, ComponentTrellis, FileMount, HttpRoute, Variable,
    load,
};
use super::*;
use crate::routing::Router;

const FULL: &str = include_str!("../../../tests/manifest_fixtures/full/spin.toml");
const HTTP_RUST: &str = include_str!("../../../tests/manifest_fixtures/http-rust/spin.toml");

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn full_manifest_application_and_variables() {
    let m = parse_ok(FULL);
    assert_eq!(m.path, PathBuf::from("/app/spin.toml"));
    assert_eq!(m.dir, PathBuf::from("/app"));
    let app = &m.application;
    assert_eq!(app.name, "shop");
    assert_eq!(app.version.as_deref(), Some("1.4.0"));
    assert_eq!(
        app.description.as_deref(),
        Some("Shop front, API and order worker")
    );
    assert_eq!(
        app.authors,
        strings(&["Ada <ada@example.com>", "Grace <grace@example.com>"])
    );
    assert_eq!(app.http_base, "/shop");
    assert_eq!(
        app.amqp_defaults,
        Some(AmqpDefaults {
            broker: Some("amqp://{{ amqp_user }}:{{ amqp_password }}@localhost:5672/%2f".into()),
            exchange: Some("orders".into()),
            prefetch: Some(16),
            max_attempts: Some(5),
            retry_delay_ms: Some(1000),
        })
    );
    assert_eq!(
        m.variables.keys().collect::<Vec<_>>(),
        ["amqp_password", "amqp_user", "api_host", "db_host"]
    );
    assert_eq!(
        m.variables["amqp_password"],
        Variable {
            description: Some("Broker password".into()),
            default: None,
            required: true,
            secret: true
        }
    );
    assert_eq!(
        m.variables["api_host"].default.as_deref(),
        Some("api.example.com")
    );
    assert!(!m.variables["api_host"].required && !m.variables["api_host"].secret);
}

#[test]
fn full_manifest_triggers() {
    let m = parse_ok(FULL);
    let http: Vec<_> = m
        .http_triggers
        .iter()
        .map(|t| (t.id.as_deref(), t.component.as_str(), t.route.clone()))
        .collect();
    let path = |p: &str| HttpRoute::Path(p.into());
    assert_eq!(
        http,
        [
            (Some("front"), "front", path("/...")),
            (None, "api", path("/api/users/:id")),
            (None, "api", path("/api/users/:id/orders/...")),
            (None, "static-files", path("/static/...")),
            (None, "pricing_service", HttpRoute::Private),
        ]
    );
    assert_eq!(
        m.amqp_triggers,
        [
            AmqpTrigger {
                id: Some("order-worker".into()),
                component: "fulfil".into(),
                queue: "orders.created".into(),
                exchange: None,
                binding_keys: strings(&["order.created", "order.updated"]),
                prefetch: Some(4),
                max_attempts: None,
                retry_delay_ms: None,
            },
            AmqpTrigger {
                id: None,
                component: "fulfil".into(),
                queue: "orders.retry".into(),
                exchange: Some("retries".into()),
                binding_keys: vec![],
                prefetch: None,
                max_attempts: Some(2),
                retry_delay_ms: Some(250),
            },
        ]
    );
}

#[test]
fn full_manifest_components() {
    let m = parse_ok(FULL);
    assert_eq!(
        m.components.keys().collect::<Vec<_>>(),
        ["api", "front", "fulfil", "pricing_service", "static-files"]
    );
    let front = &m.components["front"];
    assert_eq!(front.id, "front");
    assert_eq!(front.description.as_deref(), Some("Server-rendered pages"));
    assert_eq!(
        front.source,
        PathBuf::from("/app/front/target/wasm32-wasip2/release/front.wasm")
    );
    assert_eq!(
        front.allowed_outbound_hosts,
        strings(&[
            "http://self",
            "https://{{ api_host }}",
            "https://*.cdn.example.com:443"
        ])
    );
    assert_eq!(front.variables["api_url"], "https://{{ api_host }}/v1");
    assert_eq!(front.variables["greeting"], "hello");
    assert_eq!(front.environment["RUST_LOG"], "info");
    assert_eq!(
        front.build,
        Some(ComponentBuild {
            command: "cargo build --target wasm32-wasip2 --release".into(),
            workdir: Some(PathBuf::from("/app/front")),
            watch: strings(&["src/**/*.rs", "Cargo.toml"]),
        })
    );
    assert_eq!(
        front.trellis,
        ComponentTrellis {
            memory_limit_mib: Some(128),
            timeout_ms: Some(30000),
            max_request_body_bytes: Some(1048576),
            max_concurrency: Some(64),
            databases: std::collections::BTreeMap::from([(
                "sessions".to_string(),
                crate::manifest::ManagedDatabase {
                    migrations: Some(m.dir.join("migrations/front")),
                    outbox: false,
                },
            )]),
            publish: Vec::new(),
        }
    );
    let files = &m.components["static-files"];
    assert_eq!(
        files.files,
        [
            FileMount {
                source: PathBuf::from("/app/static/**/*"),
                destination: "/static/**/*".into()
            },
            FileMount {
                source: PathBuf::from("/app/assets"),
                destination: "/assets".into()
            },
        ]
    );
    assert!(files.files[0].is_glob() && !files.files[1].is_glob());
    assert_eq!(files.exclude_files, strings(&["static/**/*.map"]));
    assert_eq!(files.trellis, ComponentTrellis::default());
    assert_eq!(
        m.components["pricing_service"].source,
        PathBuf::from("/opt/wasm/pricing.wasm")
    );
    assert!(m.components["api"].build.is_none());
}

#[test]
fn full_manifest_routes_feed_the_router() {
    let m = parse_ok(FULL);
    let router = Router::build(&m.application.http_base, m.http_routes()).unwrap();
    let routes: Vec<_> = router.routes().collect();
    assert_eq!(
        routes,
        [
            ("/shop/...", "front"),
            ("/shop/api/users/:id", "api"),
            ("/shop/api/users/:id/orders/...", "api"),
            ("/shop/static/...", "static-files"),
        ]
    );
    let m = router.route("/shop/api/users/7/orders/9").unwrap();
    assert_eq!((m.component_id(), m.path_info()), ("api", "/9".to_string()));
}

#[test]
fn spin_http_rust_template_parses() {
    let m = parse_ok(HTTP_RUST);
    assert_eq!(m.application.name, "hello-rust");
    assert_eq!(m.application.version.as_deref(), Some("0.1.0"));
    assert_eq!(m.application.description.as_deref(), Some(""));
    assert_eq!(m.application.http_base, "/");
    assert_eq!(m.http_triggers.len(), 1);
    assert_eq!(m.http_triggers[0].route, HttpRoute::Path("/...".into()));
    let c = &m.components["hello-rust"];
    assert_eq!(
        c.source,
        PathBuf::from("/app/target/wasm32-wasip2/release/hello_rust.wasm")
    );
    assert!(c.allowed_outbound_hosts.is_empty());
    let build = c.build.as_ref().unwrap();
    assert_eq!(
        build.command,
        "cargo build --target wasm32-wasip2 --release"
    );
    assert_eq!(build.workdir, None);
    assert_eq!(build.watch, strings(&["src/**/*.rs", "Cargo.toml"]));
}

#[test]
fn load_reads_the_file_and_resolves_against_its_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifest_fixtures/http-rust");
    let m = load(&dir.join("spin.toml")).unwrap();
    assert_eq!(m.dir, dir);
    assert_eq!(
        m.components["hello-rust"].source,
        dir.join("target/wasm32-wasip2/release/hello_rust.wasm")
    );

    let missing = dir.join("nope.toml");
    let err = load(&missing).unwrap_err();
    assert_eq!((err.line, err.column), (None, None));
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}: cannot read manifest", missing.display())),
        "{shown}"
    );
}

#[test]
fn minimal_manifest_gets_defaults() {
    let m = parse_ok(HEADER);
    assert_eq!(m.application.http_base, "/");
    assert_eq!(m.application.amqp_defaults, None);
    assert!(m.application.version.is_none() && m.application.authors.is_empty());
    assert!(m.variables.is_empty() && m.components.is_empty());
    assert!(m.http_triggers.is_empty() && m.amqp_triggers.is_empty());
}

#[test]
fn spin_features_are_accepted_when_unused() {
    let m = parse_ok(&with_component(
        "key_value_stores = []\nsqlite_databases = []\nai_models = []\ndependencies = {}\n\
         dependencies_inherit_configuration = false\nallowed_http_hosts = []\n\
         [component.c.tool.spin-test]\nsource = \"x\"\n",
        "[application.tool.other]\nx = 1\n",
    ));
    assert_eq!(m.components["c"].trellis, ComponentTrellis::default());
    // The string spelling of the version is accepted too, as are both executor names.
    let text = HEADER.replace("= 2", "= \"2\"")
        + "[[trigger.http]]\nroute = \"/\"\ncomponent = \"c\"\nexecutor = { type = \"http\" }\n[component.c]\nsource = \"c.wasm\"\n";
    assert_eq!(parse_ok(&text).http_triggers.len(), 1);
}

#[test]
fn build_command_may_be_a_one_element_list() {
    let m = parse_ok(&with_component(
        "[component.c.build]\ncommand = [\"make\"]\n",
        "",
    ));
    assert_eq!(
        m.components["c"].build.as_ref().map(|b| b.command.as_str()),
        Some("make")
    );
}
