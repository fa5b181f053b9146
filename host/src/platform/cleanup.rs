//! What a tenant's apps own outside the store — the schemas and roles of
//! their managed databases, their queues and exchanges — removed when the
//! tenant is deleted, and after a refused deployment.
//!
//! The ledger (`trellis_platform.resources`, see [`crate::tenancy`]) says
//! what was ever made, recorded before it was made; the stored manifests say
//! what is in use. Apps deployed before the ledger existed are covered by
//! their manifests.

use std::path::Path;

use super::names::AppKey;
use super::registry::Platform;
use super::store::AppRecord;
use crate::app::Owner;
use crate::capabilities::database::managed;
use crate::manifest;
use crate::tenancy::Resource;

/// Drops everything `tenant`'s apps own; returns the names removed. A
/// failure is logged and the rest still goes: the tenant is gone from the
/// store, so nothing would retry (its ledger entries stay for a later
/// delete of a tenant of the same name to find).
pub async fn remove_tenant_resources(
    platform: &Platform,
    tenant: &str,
    apps: &[AppRecord],
) -> Vec<String> {
    let owner = Owner::tenant(tenant);
    let mut all: Vec<(String, Resource)> = match platform.store.resources(tenant, None, None).await
    {
        Ok(recorded) => recorded,
        Err(err) => {
            tracing::warn!(%tenant, "cannot read what the tenant's apps own: {err}");
            Vec::new()
        }
    };
    for record in apps {
        if let Some(manifest) = parse(record) {
            let app = record.key.app.clone();
            all.extend(
                crate::app::resources(&manifest, &owner)
                    .into_iter()
                    .map(|r| (app.clone(), r)),
            );
        }
    }
    remove(platform, tenant, all).await
}

/// After a refused deployment of `key` that began at `since` (the store's
/// clock): drops what the attempt recorded first that no stored app of the
/// tenant uses. What earlier deployments made stays, used or not.
pub async fn remove_unused(
    platform: &Platform,
    key: &AppKey,
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    let tenant = &key.tenant;
    let recorded = match platform
        .store
        .resources(tenant, Some(&key.app), Some(since))
        .await
    {
        Ok(recorded) => recorded,
        Err(err) => {
            tracing::warn!(app = %key, "cannot read what the app owns: {err}");
            return Vec::new();
        }
    };
    if recorded.is_empty() {
        return Vec::new();
    }
    // In use: by any stored app of the tenant (two apps may share an
    // exchange or a queue by name).
    let owner = Owner::tenant(tenant);
    let mut in_use = Vec::new();
    let keys = match platform.store.apps_of(tenant).await {
        Ok(keys) => keys,
        Err(err) => {
            tracing::warn!(app = %key, "cannot list the tenant's apps: {err}");
            return Vec::new();
        }
    };
    for other in keys {
        match platform.store.app(&other).await {
            Ok(Some(record)) => {
                if let Some(manifest) = parse(&record) {
                    in_use.extend(crate::app::resources(&manifest, &owner));
                }
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(app = %other, "cannot read the app: {err}; keeping what it may use");
                return Vec::new();
            }
        }
    }
    let unused: Vec<(String, Resource)> = recorded
        .into_iter()
        .filter(|(_, resource)| !in_use.iter().any(|used| used.key() == resource.key()))
        .collect();
    remove(platform, tenant, unused).await
}

fn parse(record: &AppRecord) -> Option<manifest::AppManifest> {
    // The path only names the manifest in messages; nothing is read.
    match manifest::parse(&record.manifest, Path::new("spin.toml")) {
        Ok(manifest) => Some(manifest),
        Err(err) => {
            tracing::warn!(app = %record.key, "cannot read the manifest to clean up: {err}");
            None
        }
    }
}

/// Removes `resources` (of `tenant`'s apps, named), forgetting each one that
/// went; the names removed.
async fn remove(
    platform: &Platform,
    tenant: &str,
    resources: Vec<(String, Resource)>,
) -> Vec<String> {
    let runtime = &platform.runtime;
    let admin = &runtime.databases.admin;
    let database = admin.get_database().unwrap_or("postgres").to_owned();
    let mut removed = Vec::new();
    let mut specs = Vec::new();
    let mut exchanges = Vec::new();
    let mut seen = Vec::new();
    let mut kept = Vec::new();
    for (_, resource) in &resources {
        if seen.contains(&resource.key()) {
            continue;
        }
        seen.push(resource.key());
        match resource {
            Resource::Schema { schema } => {
                let role = managed::role_name(schema, &database);
                match managed::drop_schema_and_role(admin, schema, &role).await {
                    Ok(()) => removed.extend([format!("schema {schema}"), format!("role {role}")]),
                    Err(err) => {
                        tracing::warn!(%schema, "cannot drop the schema and role: {err}");
                        kept.push(resource.key());
                    }
                }
            }
            Resource::Queue { spec } => specs.push(spec.clone()),
            Resource::Exchange { exchange } => exchanges.push(exchange.clone()),
        }
    }
    if !specs.is_empty() || !exchanges.is_empty() {
        let broker = runtime.brokers.get(&runtime.config.amqp_url);
        removed.extend(
            broker
                .delete(&specs, &exchanges)
                .await
                .into_iter()
                .map(|name| format!("broker {name}")),
        );
    }
    // Forgotten once the removal was tried: a broker that was away keeps its
    // queues until the operator removes them, and says so in the log. A
    // schema that could not be dropped stays recorded, to be tried again.
    for (app, resource) in &resources {
        if kept.contains(&resource.key()) {
            continue;
        }
        if let Err(err) = platform.store.forget_resource(tenant, app, resource).await {
            tracing::warn!(%tenant, %app, "cannot forget a removed resource: {err}");
        }
    }
    removed
}
