//! What deleting a tenant removes outside the store: the schemas and roles
//! of its managed databases, and its queues and exchanges.

use std::path::Path;

use sqlx::{Connection as _, PgConnection};

use super::registry::Platform;
use super::store::AppRecord;
use crate::app::{Owner, amqp_plan};
use crate::capabilities::database::managed;
use crate::manifest;

/// Drops what `apps` of `tenant` owned; returns the names removed. A failure
/// is logged and the rest still goes: the tenant is gone from the store, so
/// nothing would retry.
pub async fn remove_tenant_resources(
    platform: &Platform,
    tenant: &str,
    apps: &[AppRecord],
) -> Vec<String> {
    let owner = Owner::tenant(tenant);
    let runtime = &platform.runtime;
    let admin = &runtime.databases.admin;
    let database = admin.get_database().unwrap_or("postgres").to_owned();
    let mut removed = Vec::new();
    for record in apps {
        // The path only names the manifest in messages; nothing is read.
        let manifest = match manifest::parse(&record.manifest, Path::new("spin.toml")) {
            Ok(manifest) => manifest,
            Err(err) => {
                tracing::warn!(app = %record.key, "cannot read the manifest to clean up: {err}");
                continue;
            }
        };
        for component in manifest.components.values() {
            for name in component.trellis.databases.keys() {
                let schema = owner.database_identifier(&record.key.app, &component.id, name);
                let role = managed::role_name(&schema, &database);
                match drop_schema_and_role(admin, &schema, &role).await {
                    Ok(()) => removed.extend([format!("schema {schema}"), format!("role {role}")]),
                    Err(err) => tracing::warn!(%schema, "cannot drop the schema and role: {err}"),
                }
            }
        }
        let (exchange, consumers) = amqp_plan(&manifest, &owner);
        let specs: Vec<_> = consumers.iter().map(|c| c.spec.clone()).collect();
        let mut exchanges = vec![exchange];
        exchanges.extend(specs.iter().map(|s| s.exchange.clone()));
        exchanges.sort();
        exchanges.dedup();
        let broker = runtime.brokers.get(&runtime.config.amqp_url);
        if broker.is_connected() || !specs.is_empty() {
            removed.extend(
                broker
                    .delete(&specs, &exchanges)
                    .await
                    .into_iter()
                    .map(|name| format!("broker {name}")),
            );
        }
    }
    removed
}

async fn drop_schema_and_role(
    admin: &sqlx::postgres::PgConnectOptions,
    schema: &str,
    role: &str,
) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect_with(admin).await?;
    let quote = |ident: &str| format!("\"{}\"", ident.replace('"', "\"\""));
    let literal = |text: &str| format!("'{}'", text.replace('\'', "''"));
    // Identifiers come from `tenant_identifier`, but are quoted all the same.
    // The role holds privileges on the database (CONNECT) as well as its
    // schema: DROP OWNED BY revokes those before the role can go.
    let sql = format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE;
         DROP SCHEMA IF EXISTS {outbox} CASCADE;
         DO $$ BEGIN
             IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN
                 EXECUTE 'DROP OWNED BY ' || quote_ident({name});
                 EXECUTE 'DROP ROLE ' || quote_ident({name});
             END IF;
         END $$;",
        schema = quote(schema),
        outbox = quote(&managed::outbox_schema(schema)),
        name = literal(role)
    );
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    result.map(|_| ())
}
