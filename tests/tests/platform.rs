//! `trellis serve` end to end: tenants and deployments through the admin API
//! and the CLI, apps routed by host name, hot swap of one component under
//! load, rollback, and hosts sharing their deployments through Postgres.
//! Each test has its own platform database and RabbitMQ vhost.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use trellis_tests::platform::{Env, Host, TOKEN, wait_for};
use trellis_tests::{AppDir, Reply, guest, run_trellis, shop_app};

/// An app with one component, `web`, answering every path: `hello` says
/// "Hello, world!", `testbed` echoes at `/echo`.
fn greeter(source: &str) -> AppDir {
    AppDir::new(&format!(
        r#"spin_manifest_version = 2
[application]
name = "greeter"
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "{{{source}}}"
"#
    ))
}

/// `wasm` with a custom section appended: other bytes (a new version) that
/// behave the same.
fn variant(wasm: &Path, tag: &str, dir: &Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(wasm).expect("read wasm");
    let name = b"trellis-test";
    let payload = tag.as_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128 && name.len() < 128);
    bytes.extend([0u8, size as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let path = dir.join(format!("variant-{tag}.wasm"));
    std::fs::write(&path, bytes).expect("write variant");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_wants_the_token() {
    let env = Env::new("pf_token");
    let host = env.host();
    let (status, body) = host.admin_get("/v1/tenants", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let (status, _) = host
        .admin_get("/v1/tenants", Some("wrong-token-0123456789"))
        .await;
    assert_eq!(status, 401);
    let (status, body) = host.admin_get("/v1/tenants", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"tenants": []}));
    let stderr = {
        let admin_url = host.admin_url();
        let (status, _, stderr) = run_trellis(
            &[
                "tenant",
                "list",
                "--admin-url",
                &admin_url,
                "--admin-token",
                "nope-0123456789abcdef",
            ],
            Path::new("."),
        );
        assert!(!status.success());
        stderr
    };
    assert!(stderr.contains("401"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_tenants_run_the_shop_and_each_sees_only_its_own_data() {
    let env = Env::new("pf_tenants");
    let host = env.host();
    let app = shop_app();
    let manifest = app.manifest().display().to_string();
    for tenant in ["acme", "globex"] {
        host.cli(&["tenant", "create", tenant]);
        let out = host.cli(&["deploy", "--tenant", tenant, "-f", &manifest]);
        assert!(out.contains("revision 1 live"), "{out}");
    }
    let listed = host.cli(&["tenant", "list"]);
    assert!(
        listed.contains("acme  apps: shop") && listed.contains("globex  apps: shop"),
        "{listed}"
    );

    let (acme, globex) = ("shop.acme.localhost", "shop.globex.localhost");
    let a = host
        .post(
            acme,
            "/users",
            &json!({"email": "ann@acme.test", "name": "Ann"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let g = host
        .post(
            globex,
            "/users",
            &json!({"email": "gus@globex.test", "name": "Gus"}),
        )
        .await;
    assert_eq!(g.status, 201, "{}", g.text);
    // Separate databases: both are user 1, each only in its own tenant.
    assert_eq!(a.body["id"], 1);
    assert_eq!(g.body["id"], 1);
    let users = host.get(acme, "/users").await;
    let emails: Vec<&str> = users.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["email"].as_str())
        .collect();
    assert_eq!(emails, ["ann@acme.test"], "{}", users.text);

    // The saga runs on each tenant's own queues.
    let order = host
        .post(
            acme,
            "/orders",
            &json!({"user_id": 1, "product_name": "anvil", "amount": 1500}),
        )
        .await;
    assert_eq!(order.status, 201, "{}", order.text);
    let id = order.body["id"].as_i64().expect("order id");
    wait_for("acme's order paid", async || {
        host.get(acme, &format!("/orders/{id}")).await.body["status"] == "paid"
    })
    .await;
    host.get(globex, &format!("/orders/{id}"))
        .await
        .assert_error(404, "not_found");
    let queues: Vec<String> = env.broker.queues().into_iter().map(|(q, _)| q).collect();
    for queue in ["acme.payment.order-created", "globex.payment.order-created"] {
        assert!(
            queues.iter().any(|q| q == queue),
            "{queue} missing: {queues:?}"
        );
    }
    // The saga's messages, counted as acme's alone: the order event went
    // out through the outbox, the payment's outcome through the publisher.
    // (The payment's ack may land just after the order is paid.)
    let expected = [
        r#"trellis_messages_published_total{tenant="acme",app="shop",component="order",via="outbox"} 1"#,
        r#"trellis_messages_published_total{tenant="acme",app="shop",component="payment",via="guest"} 1"#,
        r#"trellis_amqp_deliveries_total{tenant="acme",app="shop",component="payment",queue="acme.payment.order-created",outcome="ack"} 1"#,
    ];
    wait_for("the saga's metrics", async || {
        let metrics = host.metrics().await;
        expected
            .iter()
            .all(|line| metrics.lines().any(|l| l == *line))
    })
    .await;
    let metrics = host.metrics().await;
    assert!(
        !metrics.contains(r#"trellis_messages_published_total{tenant="globex""#),
        "{metrics}"
    );

    // Only the app's own host name reaches it.
    for other in [
        "shop.nobody.localhost",
        "localhost",
        "acme.localhost",
        "shop.acme.example.com",
    ] {
        host.get(other, "/users")
            .await
            .assert_error(404, "not_found");
    }

    // Suspended: 503 until resumed.
    host.cli(&["tenant", "suspend", "globex"]);
    host.get(globex, "/users")
        .await
        .assert_error(503, "unavailable");
    host.cli(&["tenant", "resume", "globex"]);
    assert_eq!(host.get(globex, "/users/1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn deploying_one_component_under_load_fails_no_request() {
    let env = Env::new("pf_swap");
    let host = Arc::new(env.host());
    let app = shop_app();
    host.cli(&["tenant", "create", "acme"]);
    host.deploy("acme", &app);
    let shop = "shop.acme.localhost";
    let user = host
        .post(
            shop,
            "/users",
            &json!({"email": "load@acme.test", "name": "Load"}),
        )
        .await;
    assert_eq!(user.status, 201, "{}", user.text);
    let first = host
        .post(
            shop,
            "/orders",
            &json!({"user_id": 1, "product_name": "seed", "amount": 100}),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.text);

    // 50 clients for 10 s: reads of an order, and every tenth request a new
    // order (which chains to the user service and starts the saga).
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for c in 0..50 {
        let (host, stop, done, failed, failures) = (
            host.clone(),
            stop.clone(),
            done.clone(),
            failed.clone(),
            failures.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let response = if (n + c).is_multiple_of(10) {
                    let body = json!({"user_id": 1, "product_name": "load", "amount": 100});
                    host.request(reqwest::Method::POST, shop, "/orders", Some(&body))
                        .await
                } else {
                    host.request(reqwest::Method::GET, shop, "/orders/1", None)
                        .await
                };
                let status = response.status();
                if status.is_success() {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let text = response.text().await.unwrap_or_default();
                    failures
                        .lock()
                        .expect("failures")
                        .push(format!("{status} {text}"));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let work = tempfile::tempdir().expect("work dir");
    let order_v2 = variant(&guest("order"), "v2", work.path());
    let out = host.deploy_component("acme", "shop", "order", &order_v2.display().to_string());
    assert!(out.contains("order: version 2"), "{out}");
    tokio::time::sleep(Duration::from_secs(7)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed: {:?}\n{}",
        done + failed,
        &failures.lock().expect("failures")[..failed.min(5)],
        host.trellis.logs()
    );
    assert!(done > 100, "only {done} requests in 10 s");

    // The new version is the one serving.
    let (status, app) = host
        .admin_get("/v1/tenants/acme/apps/shop", Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{app}");
    assert_eq!(app["components"]["order"]["version"], 2, "{app}");
    assert_eq!(app["components"]["user"]["version"], 1, "{app}");
    let (_, status) = host.admin_get("/v1/status", Some(TOKEN)).await;
    assert_eq!(status["apps"][0]["revision"], app["revision"], "{status}");
    // Orders taken across the swap all reach a final state: the consumers
    // switched over without losing a message.
    let schema = trellis_tests::psql(
        &env.db.name,
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_acme\\_shop\\_order\\_orders\\_%'",
    );
    assert!(!schema.is_empty(), "no order schema");
    let pending = format!("SELECT count(*) FROM {schema}.orders WHERE status = 'pending'");
    wait_for("every order final", async || {
        trellis_tests::psql(&env.db.name, &pending) == "0"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_version_takes_over_and_rollback_brings_the_old_back() {
    let env = Env::new("pf_rollback");
    let host = env.host();
    host.cli(&["tenant", "create", "acme"]);
    let v1 = greeter("hello");
    host.deploy("acme", &v1);
    let site = "greeter.acme.localhost";
    let say = async || {
        let response = host
            .request(reqwest::Method::GET, site, "/echo", None)
            .await;
        assert_eq!(response.status(), 200);
        response.text().await.expect("body")
    };
    assert_eq!(say().await, "Hello, world!\n");

    let testbed = guest("testbed").display().to_string();
    host.deploy_component("acme", "greeter", "web", &testbed);
    // The deploy answered once the new version was routed: no waiting.
    assert_ne!(say().await, "Hello, world!\n");

    let versions = host.cli(&["versions", "--tenant", "acme", "--app", "greeter"]);
    assert!(versions.contains("(active)"), "{versions}");
    let out = host.cli(&[
        "rollback",
        "--tenant",
        "acme",
        "--app",
        "greeter",
        "--component",
        "web",
    ]);
    assert!(out.contains("web: version 1"), "{out}");
    assert_eq!(say().await, "Hello, world!\n");
    // Forward again to a kept version, by number.
    host.cli(&[
        "rollback",
        "--tenant",
        "acme",
        "--app",
        "greeter",
        "--component",
        "web",
        "--to",
        "2",
    ]);
    assert_ne!(say().await, "Hello, world!\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_share_deployments_and_a_restarted_host_restores_them() {
    let env = Env::new("pf_share");
    let first = env.host();
    let second = env.host();
    first.cli(&["tenant", "create", "acme"]);
    let v1 = greeter("hello");
    first.deploy("acme", &v1);
    let site = "greeter.acme.localhost";
    let body = async |host: &Host| {
        let response = host
            .request(reqwest::Method::GET, site, "/echo", None)
            .await;
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    };
    // The other host learns of the deployment from the store's notification.
    let took = wait_for("second host serves the app", async || {
        body(&second).await == (200, "Hello, world!\n".to_owned())
    })
    .await;
    eprintln!("deployment reached the second host after {took:?}");

    let testbed = guest("testbed").display().to_string();
    first.deploy_component("acme", "greeter", "web", &testbed);
    let took = wait_for("second host serves version 2", async || {
        let (status, text) = body(&second).await;
        status == 200 && text != "Hello, world!\n"
    })
    .await;
    eprintln!("a component deploy reached the second host after {took:?}");

    // A host started now, and one restarted, serve what is deployed.
    drop(first);
    let restarted = env.host();
    let (status, text) = body(&restarted).await;
    assert_eq!(status, 200, "{text}\n{}", restarted.trellis.logs());
    assert_ne!(text, "Hello, world!\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_uploads_are_refused_and_change_nothing() {
    let env = Env::new("pf_invalid");
    let host = env.host();
    host.cli(&["tenant", "create", "acme"]);
    let good = greeter("hello");
    host.deploy("acme", &good);
    let site = "greeter.acme.localhost";

    // Not a component.
    let work = tempfile::tempdir().expect("work dir");
    let junk = work.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0").expect("write");
    let err = host.cli_fails(&[
        "deploy",
        "--tenant",
        "acme",
        "--app",
        "greeter",
        "--component",
        "web",
        &junk.display().to_string(),
    ]);
    assert!(err.contains("not a WebAssembly component"), "{err}");

    // A trigger calls what the component does not export.
    let no_handler = AppDir::new(
        r#"spin_manifest_version = 2
[application]
name = "greeter"
[[trigger.http]]
route = "/..."
component = "web"
[[trigger.amqp]]
component = "web"
queue = "greetings"
[component.web]
source = "{hello}"
"#,
    );
    let err = host.deploy_fails("acme", &no_handler);
    assert!(
        err.contains("does not export trellis:messaging/handler"),
        "{err}"
    );

    // A component importing what no host provides: refused at link time,
    // naming the import.
    let stranger = trellis_tests::guest("stranger");
    let err = host.cli_fails(&[
        "deploy",
        "--tenant",
        "acme",
        "--app",
        "greeter",
        "--component",
        "web",
        &stranger.display().to_string(),
    ]);
    assert!(err.contains("acme:stranger/fortune"), "{err}");

    // A manifest error names the field.
    let bad_manifest = AppDir::new(
        r#"spin_manifest_version = 2
[application]
name = "greeter"
[[trigger.http]]
route = "/..."
component = "web"
colour = "blue"
[component.web]
source = "{hello}"
"#,
    );
    let err = host.deploy_fails("acme", &bad_manifest);
    assert!(err.contains("colour"), "{err}");

    // An unknown tenant.
    let err = host.deploy_fails("nobody", &good);
    assert!(err.contains("no tenant `nobody`"), "{err}");

    // Nothing changed: one version, revision 1, still serving.
    let (_, app) = host
        .admin_get("/v1/tenants/acme/apps/greeter", Some(TOKEN))
        .await;
    assert_eq!(app["revision"], 1, "{app}");
    assert_eq!(app["components"]["web"]["version"], 1, "{app}");
    let versions = host.cli(&["versions", "--tenant", "acme", "--app", "greeter"]);
    assert_eq!(versions.lines().count(), 2, "{versions}");
    let response = host.request(reqwest::Method::GET, site, "/", None).await;
    assert_eq!(response.text().await.expect("body"), "Hello, world!\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_tenant_removes_its_routes_data_and_queues() {
    let env = Env::new("pf_delete");
    let host = env.host();
    let app = shop_app();
    // A tenant name no other test uses: roles are cluster-wide.
    host.cli(&["tenant", "create", "doomed"]);
    host.deploy("doomed", &app);
    let shop = "shop.doomed.localhost";
    assert_eq!(
        host.post(
            shop,
            "/users",
            &json!({"email": "a@doomed.test", "name": "A"})
        )
        .await
        .status,
        201
    );
    let schemas = || {
        trellis_tests::psql(
            &env.db.name,
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_doomed\\_%'",
        )
    };
    assert_eq!(schemas(), "3");
    let roles = trellis_tests::psql(
        &env.db.name,
        "SELECT DISTINCT r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner \
         WHERE n.nspname LIKE 't\\_doomed\\_%'",
    );
    let roles: Vec<&str> = roles.lines().collect();
    assert_eq!(roles.len(), 3, "{roles:?}");

    // Without --yes and without a terminal, nothing happens.
    let err = host.cli_fails(&["tenant", "delete", "doomed"]);
    assert!(err.contains("--yes"), "{err}");
    host.cli(&["tenant", "delete", "doomed", "--yes"]);
    host.get(shop, "/users")
        .await
        .assert_error(404, "not_found");
    assert_eq!(schemas(), "0", "{}", host.trellis.logs());
    for role in roles {
        let left = trellis_tests::psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"),
        );
        assert_eq!(left, "0", "role {role} is left");
    }
    let left: Vec<String> = env
        .broker
        .queues()
        .into_iter()
        .map(|(q, _)| q)
        .filter(|q| q.starts_with("doomed."))
        .collect();
    assert!(left.is_empty(), "queues left: {left:?}");
}

/// Tenant `evil`'s probe: `dbtest` (at `/db/...`) with a managed database,
/// and `mqtest` (at `/mq/publish/<key>`, `/mq/deliveries`) consuming
/// everything on an exchange it names after acme's.
fn probe_app() -> AppDir {
    let app = AppDir::new(&format!(
        r##"spin_manifest_version = 2
[application]
name = "probe"
[application.trigger.amqp]
exchange = "acme.shop"

[[trigger.http]]
route = "/db/..."
component = "db"
[[trigger.http]]
route = "/mq/..."
component = "mq"
[[trigger.amqp]]
component = "mq"
queue = "spy"
binding_keys = ["#"]

[component.db]
source = "{{dbtest}}"
[component.db.tool.trellis.databases.data]

[component.mq]
source = "{mqtest}"
[component.mq.variables]
db_url = "postgres://trellis.internal/mq"
[component.mq.tool.trellis.databases.mq]
migrations = "migrations"
[component.mq.tool.trellis.messaging]
publish = ["order.*"]
"##,
        mqtest = guest("mqtest").display()
    ));
    let from = trellis_tests::workspace_root().join("components/mqtest/migrations");
    let to = app.path().join("migrations");
    std::fs::create_dir_all(&to).expect("migrations dir");
    for entry in std::fs::read_dir(from).expect("read migrations") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
    app
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_reach_another_tenants_data_or_messages() {
    let env = Env::new("pf_isolation");
    let host = env.host();
    let shop = shop_app();
    let probe = probe_app();
    for (tenant, app) in [("acme", &shop), ("evil", &probe)] {
        host.cli(&["tenant", "create", tenant]);
        host.deploy(tenant, app);
    }
    let (acme, evil) = ("shop.acme.localhost", "probe.evil.localhost");
    let user = host
        .post(
            acme,
            "/users",
            &json!({"email": "ann@acme.test", "name": "Ann"}),
        )
        .await;
    assert_eq!(user.status, 201, "{}", user.text);

    // Crafted SQL from evil's component, against acme's schema and role.
    let find = |like: &str, what: &str| {
        trellis_tests::psql(
            &env.db.name,
            &format!(
                "SELECT {what} FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname LIKE '{like}'"
            ),
        )
    };
    let users_schema = find("t\\_acme\\_shop\\_user\\_users\\_%", "n.nspname");
    let users_role = find("t\\_acme\\_shop\\_user\\_users\\_%", "r.rolname");
    assert!(!users_schema.is_empty() && !users_role.is_empty());
    let steps = json!({
        "address": "postgres://trellis.internal/data",
        "steps": [
            {"op": "query", "sql": format!("SELECT * FROM {users_schema}.users"), "params": []},
            {"op": "execute", "sql": format!("SET ROLE {users_role}"), "params": []},
            {"op": "query", "sql": format!("SELECT set_config('role', '{users_role}', false)"), "params": []},
            {"op": "query", "sql": "SELECT current_user::text", "params": []},
        ],
        "trap_after": false,
    });
    let answer = host.post(evil, "/db/sql", &steps).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let results = answer.body["results"].as_array().expect("results");
    assert_eq!(results[0]["error"]["code"], "42501", "{}", answer.text);
    assert!(
        results[1].get("error").is_some(),
        "SET ROLE worked: {}",
        answer.text
    );
    assert!(
        results[2].get("error").is_some(),
        "set_config(role) worked: {}",
        answer.text
    );
    let me = results[3]["rows"][0][0].as_str().unwrap_or_default();
    assert!(me.starts_with("t_evil_probe_db_data_"), "{}", answer.text);

    // Messages: acme's saga runs; evil's queue, bound to everything on the
    // exchange evil named `acme.shop`, hears none of it.
    let order = host
        .post(
            acme,
            "/orders",
            &json!({"user_id": 1, "product_name": "anvil", "amount": 1500}),
        )
        .await;
    assert_eq!(order.status, 201, "{}", order.text);
    wait_for("acme's order paid", async || {
        host.get(acme, "/orders/1").await.body["status"] == "paid"
    })
    .await;
    // What evil publishes reaches its own queue, and not acme's payments.
    let forged = json!({"order_id": 999, "user_id": 1, "product_name": "free", "amount": 1});
    let response = host
        .request(
            reqwest::Method::POST,
            evil,
            "/mq/publish/order.created",
            Some(&forged),
        )
        .await;
    assert_eq!(
        response.status(),
        204,
        "{}",
        response.text().await.unwrap_or_default()
    );
    wait_for("evil's own delivery", async || {
        let deliveries = host.get(evil, "/mq/deliveries").await;
        deliveries.body.as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    let deliveries = host.get(evil, "/mq/deliveries").await;
    let keys: Vec<&str> = deliveries
        .body
        .as_array()
        .expect("deliveries")
        .iter()
        .filter_map(|d| d["routing_key"].as_str())
        .collect();
    assert_eq!(
        keys,
        ["order.created"],
        "evil heard acme: {}",
        deliveries.text
    );
    assert_eq!(
        deliveries.body[0]["body"]
            .as_str()
            .map(|b| b.contains("999")),
        Some(true),
        "{}",
        deliveries.text
    );
    let payments = find("t\\_acme\\_shop\\_payment\\_payments\\_%", "n.nspname");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        trellis_tests::psql(
            &env.db.name,
            &format!("SELECT count(*) FROM {payments}.payments WHERE order_id = 999")
        ),
        "0"
    );

    // Deploys that would step outside are refused, naming why.
    let direct = AppDir::new(
        r#"spin_manifest_version = 2
[application]
name = "direct"
[[trigger.http]]
route = "/..."
component = "db"
[component.db]
source = "{dbtest}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
"#,
    );
    let err = host.deploy_fails("evil", &direct);
    assert!(err.contains("platform's database server"), "{err}");
    let own_broker = AppDir::new(
        r#"spin_manifest_version = 2
[application]
name = "broker"
[application.trigger.amqp]
broker = "amqp://guest:guest@127.0.0.1:5672/%2f"
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "{hello}"
"#,
    );
    let err = host.deploy_fails("evil", &own_broker);
    assert!(err.contains("platform's broker"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_over_its_limits_gets_429_and_its_neighbour_does_not() {
    let env = Env::new("pf_limits");
    let host = env.host();
    host.cli(&["tenant", "create", "tiny", "--requests-per-second", "5"]);
    host.cli(&["tenant", "create", "roomy"]);
    let app = greeter("testbed");
    for tenant in ["tiny", "roomy"] {
        host.deploy(tenant, &app);
    }
    let (tiny, roomy) = ("greeter.tiny.localhost", "greeter.roomy.localhost");

    // Requests per second: a burst of 5, then 429 with Retry-After.
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..20 {
        let response = host
            .request(reqwest::Method::GET, tiny, "/echo", None)
            .await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 && refused.is_none() {
            refused = Some(Reply::read(response).await);
        }
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert!((5..=7).contains(&ok), "{statuses:?}");
    assert_eq!(
        ok + statuses.iter().filter(|&&s| s == 429).count(),
        20,
        "{statuses:?}"
    );
    let refused = refused.expect("a 429");
    refused.assert_error(429, "rate_limited");
    let retry: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    for _ in 0..20 {
        let response = host
            .request(reqwest::Method::GET, roomy, "/echo", None)
            .await;
        assert_eq!(response.status(), 200, "the neighbour was limited");
    }

    // Concurrency and deadline (set together; the rate limit goes).
    host.cli(&[
        "tenant",
        "limits",
        "tiny",
        "--max-concurrency",
        "2",
        "--timeout-ms",
        "1000",
    ]);
    let sleeps = (0..6).map(|_| host.request(reqwest::Method::GET, tiny, "/sleep?ms=600", None));
    let statuses: Vec<u16> = futures::future::join_all(sleeps)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert!((1..=2).contains(&ok) && ok + limited == 6, "{statuses:?}");
    let late = host
        .request(reqwest::Method::GET, tiny, "/sleep?ms=1500", None)
        .await;
    assert_eq!(late.status(), 504, "the tenant's deadline");
    let fine = host
        .request(reqwest::Method::GET, roomy, "/sleep?ms=1500", None)
        .await;
    assert_eq!(fine.status(), 200, "the neighbour's deadline is the host's");
}

/// A tenant's clients that retry at once, many at a time, get their `429`s
/// late: past the first hundred refusals in a second, each is held for its
/// `Retry-After` (1 s) before it is answered, so answering them cannot crowd
/// out the neighbours. A few refusals are still answered at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_tenants_refusals_are_held_for_their_retry_after() {
    let env = Env::new("pf_flood");
    let host = env.host();
    host.cli(&["tenant", "create", "flood", "--requests-per-second", "1"]);
    host.cli(&["tenant", "create", "calm"]);
    let app = greeter("testbed");
    for tenant in ["flood", "calm"] {
        host.deploy(tenant, &app);
    }
    let timed = (0..400).map(|_| async {
        let start = std::time::Instant::now();
        let response = host
            .request(
                reqwest::Method::GET,
                "greeter.flood.localhost",
                "/echo",
                None,
            )
            .await;
        (response.status().as_u16(), start.elapsed())
    });
    let (results, calm) = tokio::join!(futures::future::join_all(timed), async {
        // Asked while the flood is held: the neighbour is answered.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        host.request(
            reqwest::Method::GET,
            "greeter.calm.localhost",
            "/echo",
            None,
        )
        .await
        .status()
    });
    assert_eq!(calm, 200, "the neighbour");
    let refused: Vec<_> = results
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert!(refused.len() >= 390, "{results:?}");
    let held = refused
        .iter()
        .filter(|(_, took)| *took >= std::time::Duration::from_millis(900))
        .count();
    let prompt = refused
        .iter()
        .filter(|(_, took)| *took < std::time::Duration::from_millis(900))
        .count();
    assert!(held >= 100, "{held} held of {} refusals", refused.len());
    assert!(
        prompt >= 50,
        "{prompt} answered at once of {}",
        refused.len()
    );
}

/// `GET /metrics` on the admin listener counts what the tenants' components
/// did, labelled by tenant, app and component, and needs the token.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_each_tenants_requests() {
    let env = Env::new("pf_metrics");
    let host = env.host();
    host.cli(&["tenant", "create", "acme"]);
    host.cli(&["tenant", "create", "zenith"]);
    let app = greeter("hello");
    host.deploy("acme", &app);
    host.deploy("zenith", &app);
    for _ in 0..3 {
        let response = host
            .request(reqwest::Method::GET, "greeter.acme.localhost", "/", None)
            .await;
        assert_eq!(response.status(), 200);
    }
    let response = host
        .request(reqwest::Method::GET, "greeter.zenith.localhost", "/", None)
        .await;
    assert_eq!(response.status(), 200);

    let (status, _) = host.admin_get("/metrics", None).await;
    assert_eq!(status, 401);
    let text = host.metrics().await;
    for line in [
        r#"trellis_http_requests_total{tenant="acme",app="greeter",component="web",status="200"} 3"#,
        r#"trellis_http_requests_total{tenant="zenith",app="greeter",component="web",status="200"} 1"#,
        r#"trellis_instantiation_duration_seconds_count{tenant="acme",app="greeter",component="web"} 3"#,
        r#"trellis_http_request_duration_seconds_count{tenant="zenith",app="greeter",component="web"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("trellis_instances_max ")),
        "{text}"
    );
}

/// Variables (secrets among them) are sealed in the platform database: the
/// row holds no value, a host with the key serves them, after a restart too,
/// and a host with another key refuses the app, saying why.
#[tokio::test]
async fn variables_are_sealed_at_rest_and_open_only_with_their_key() {
    const KEY: &[&str] = &["--secrets-key", "the-platform-secrets-key"];
    let env = Env::new("pf_sealed");
    let host = env.host_with(KEY);
    host.cli(&["tenant", "create", "acme"]);
    let app = AppDir::new(
        r#"spin_manifest_version = 2
[application]
name = "vault"
[variables]
token = { required = true, secret = true }
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "{testbed}"
[component.web.variables]
message = "token {{ token }}"
"#,
    );
    let manifest = app.manifest().display().to_string();
    host.cli(&[
        "deploy",
        "--tenant",
        "acme",
        "-f",
        &manifest,
        "--variable",
        "token=s3cret-never-stored",
    ]);
    let message = async |host: &Host| {
        let response = host
            .request(
                reqwest::Method::GET,
                "vault.acme.localhost",
                "/var?name=message",
                None,
            )
            .await;
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    };
    assert_eq!(
        message(&host).await,
        (200, "token s3cret-never-stored".to_owned())
    );

    let stored = trellis_tests::psql(
        &env.db.name,
        "SELECT variables::text FROM trellis_platform.apps WHERE name = 'vault'",
    );
    assert!(stored.contains("\"sealed\""), "{stored}");
    assert!(
        !stored.contains("s3cret"),
        "the value is stored in clear: {stored}"
    );
    drop(host);

    let stranger = env.host_with(&["--secrets-key", "another-key-entirely-0000"]);
    assert!(
        stranger
            .trellis
            .wait_for_log(|l| l.contains("do not open with this --secrets-key")),
        "{}",
        stranger.trellis.logs()
    );
    assert_eq!(message(&stranger).await.0, 404);
    drop(stranger);

    let again = env.host_with(KEY);
    assert_eq!(
        message(&again).await,
        (200, "token s3cret-never-stored".to_owned())
    );
}
