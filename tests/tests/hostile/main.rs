//! The attack suite: each test is a hostile tenant of `trellis serve` trying
//! one way out of its box, written as the attacker would write it (a guest,
//! a manifest, a raw admin API call), and asserting that it gets nothing.
//! `docs/security.md` lists every attack with its test; a new defence comes
//! with a new test here.
//!
//! Every test runs its own platform (database, vhost, hosts) on the shared
//! Postgres and RabbitMQ, like `tests/platform.rs`.

mod admin;
mod database;
mod files;
mod lifecycle;
mod network;

use serde_json::{Value, json};
use trellis_tests::AppDir;
use trellis_tests::platform::Host;

/// This machine's own name, which resolves to one of its addresses (a
/// loopback one on many machines): a spelling of "here" that no list of
/// names knows.
pub fn own_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned()
}

/// A `WHERE` condition on `pg_roles` for the roles of `tenant`'s managed
/// databases in the current database. Roles are the server's, shared by
/// every test's database; theirs end in a hash of the database's name.
pub fn roles_of_this_database(tenant: &str) -> String {
    format!(
        "rolname LIKE 't\\_{tenant}\\_%' \
         AND rolname LIKE '%\\_' || substr(encode(sha256(current_database()::bytea), 'hex'), 1, 8)"
    )
}

/// Runs SQL steps through tenant `tenant`'s `dbtest` component (routed at
/// `/db/...` of app `app`) on a connection to `address`; the guest's answer.
pub async fn guest_sql(host: &Host, app_host: &str, address: &str, steps: &[&str]) -> Value {
    guest_sql_at(host, app_host, "/db/sql", address, steps).await
}

/// [`guest_sql`] through a `dbtest` routed elsewhere (`path`: its `/sql`).
pub async fn guest_sql_at(
    host: &Host,
    app_host: &str,
    path: &str,
    address: &str,
    steps: &[&str],
) -> Value {
    let steps: Vec<Value> = steps
        .iter()
        .map(|sql| json!({"op": "query", "sql": sql, "params": []}))
        .collect();
    let answer = host
        .post(
            app_host,
            path,
            &json!({"address": address, "steps": steps, "trap_after": false}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body
}

/// `GET path` of `app_host` as a client would send it: status and text.
pub async fn get_text(host: &Host, app_host: &str, path: &str) -> (u16, String) {
    let response = host
        .request(reqwest::Method::GET, app_host, path, None)
        .await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// An app of one `testbed` component, `web`, at `/...`, with `extra` added
/// to its `[component.web]` table.
pub fn testbed_app(extra: &str) -> AppDir {
    AppDir::new(&format!(
        "spin_manifest_version = 2\n[application]\nname = \"probe\"\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"web\"\n\
         [component.web]\nsource = \"{{testbed}}\"\n{extra}\n"
    ))
}

/// The shop of tenant `acme` (deployed) takes its first order, and the
/// payment pipeline (outbox, relay, broker, consumers) pays it.
pub async fn acme_takes_an_order(host: &Host) {
    let shop = "shop.acme.localhost";
    let user = host
        .post(
            shop,
            "/users",
            &json!({"email": "ann@acme.test", "name": "Ann"}),
        )
        .await;
    assert_eq!(user.status, 201, "{}", user.text);
    let order = host
        .post(
            shop,
            "/orders",
            &json!({"user_id": 1, "product_name": "anvil", "amount": 1500}),
        )
        .await;
    assert_eq!(order.status, 201, "{}", order.text);
    trellis_tests::platform::wait_for("acme's order paid", async || {
        host.get(shop, "/orders/1").await.body["status"] == "paid"
    })
    .await;
}

/// Writes migration `file` (`<version>_<name>.sql`) into the app's
/// `migrations` directory, as its manifest names it.
pub fn write_migration(app: &AppDir, file: &str, sql: &str) {
    let migrations = app.path().join("migrations");
    std::fs::create_dir_all(&migrations).expect("migrations dir");
    std::fs::write(migrations.join(file), sql).expect("write migration");
}

/// An app of one `dbtest` component at `/db/...`, with `component_extra`
/// added to its `[component.db]` table and `tables` after it.
pub fn dbtest_app(name: &str, component_extra: &str, tables: &str) -> AppDir {
    AppDir::new(&format!(
        r#"spin_manifest_version = 2
[application]
name = "{name}"
[[trigger.http]]
route = "/db/..."
component = "db"
[component.db]
source = "{{dbtest}}"
{component_extra}
{tables}
"#
    ))
}
