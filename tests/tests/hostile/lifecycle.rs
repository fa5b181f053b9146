//! A tenant's lifecycle leaves nothing behind: a refused deployment
//! provisions nothing, and a tenant deleted and created again under the
//! same name starts empty, whatever its apps once declared.

use trellis_tests::AppDir;
use trellis_tests::platform::Env;

/// Schemas, outbox schemas and roles named after `tenant` (roles are the
/// server's: only those made for this database, whose names end in a hash
/// of its name).
fn leftovers(db: &str, tenant: &str) -> String {
    trellis_tests::psql(
        db,
        &format!(
            "SELECT string_agg(name, ', ' ORDER BY name) FROM ( \
               SELECT nspname AS name FROM pg_namespace \
                WHERE nspname LIKE 't\\_{tenant}\\_%' OR nspname LIKE 'o\\_{tenant}\\_%' \
               UNION ALL \
               SELECT rolname FROM pg_roles WHERE {roles}) AS all_names",
            roles = super::roles_of_this_database(tenant)
        ),
    )
}

/// Two components with managed databases; the second's migration fails,
/// after the first component's database (and the second's schema and role)
/// were made.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_deployment_provisions_nothing() {
    let env = Env::new("hostile_refused");
    let host = env.host();
    let app = AppDir::new(
        r#"spin_manifest_version = 2
[application]
name = "probe"
[[trigger.http]]
route = "/a/..."
component = "a-good"
[[trigger.http]]
route = "/z/..."
component = "z-bad"
[component.a-good]
source = "{dbtest}"
[component.a-good.tool.trellis.databases.data]
outbox = true
[component.z-bad]
source = "{dbtest}"
[component.z-bad.tool.trellis.databases.more]
migrations = "migrations"
"#,
    );
    super::write_migration(&app, "0001_broken.sql", "CREATE TABLE (;");
    host.cli(&["tenant", "create", "evil"]);
    let err = host.deploy_fails("evil", &app);
    assert!(err.contains("0001_broken.sql"), "{err}");
    assert_eq!(leftovers(&env.db.name, "evil"), "", "left behind");

    // The same app, mended, deploys; a broken next version leaves the
    // running one's databases alone.
    super::write_migration(&app, "0001_broken.sql", "CREATE TABLE t (n int);");
    host.deploy("evil", &app);
    let running = leftovers(&env.db.name, "evil");
    assert!(running.contains("t_evil_probe_z_bad_more"), "{running}");
    super::write_migration(&app, "0002_broken.sql", "CREATE TABLE (;");
    host.deploy_fails("evil", &app);
    assert_eq!(leftovers(&env.db.name, "evil"), running);
}

/// A component's database outlives the manifest that declared it (a later
/// version drops the component); deleting the tenant removed only what its
/// last manifest named, so a new tenant of the same name found the old data.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_deleted_and_created_again_starts_empty() {
    let env = Env::new("hostile_rebirth");
    let host = env.host();
    let manifest = |vault: bool| {
        let mut text = String::from(
            "spin_manifest_version = 2\n[application]\nname = \"probe\"\n\
             [[trigger.http]]\nroute = \"/db/...\"\ncomponent = \"db\"\n",
        );
        if vault {
            text.push_str("[[trigger.http]]\nroute = \"/vault/...\"\ncomponent = \"vault\"\n");
        }
        text.push_str(
            "[component.db]\nsource = \"{dbtest}\"\n[component.db.tool.trellis.databases.scratch]\n",
        );
        if vault {
            text.push_str(
                "[component.vault]\nsource = \"{dbtest}\"\n[component.vault.tool.trellis.databases.vault]\n",
            );
        }
        AppDir::new(&text)
    };
    let v1 = manifest(true);
    host.cli(&["tenant", "create", "acme"]);
    host.deploy("acme", &v1);
    let vault = "postgres://trellis.internal/vault";
    let app = "probe.acme.localhost";
    let stored = super::guest_sql_at(
        &host,
        app,
        "/vault/sql",
        vault,
        &[
            "CREATE TABLE secrets (s text)",
            "INSERT INTO secrets VALUES ('the old tenant''s secret')",
        ],
    )
    .await;
    assert!(stored["results"][1].get("error").is_none(), "{stored}");

    // Version 2 has no vault; its database stays, as data should.
    let v2 = manifest(false);
    host.deploy("acme", &v2);
    host.cli(&["tenant", "delete", "acme", "--yes"]);
    assert_eq!(leftovers(&env.db.name, "acme"), "", "left behind");

    host.cli(&["tenant", "create", "acme"]);
    host.deploy("acme", &v1);
    let found =
        super::guest_sql_at(&host, app, "/vault/sql", vault, &["SELECT s FROM secrets"]).await;
    assert_eq!(found["results"][0]["error"]["code"], "42P01", "{found}");
}
