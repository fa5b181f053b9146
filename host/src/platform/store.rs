//! The platform's state in Postgres (schema `trellis_platform` of the admin
//! database): tenants, component bytes by digest, apps (manifest, assets,
//! variables) and numbered component versions with the one that is active.
//! Every host process sharing the database serves the same deployments: a
//! change commits with a `NOTIFY` on [`CHANNEL`] naming the app (or the
//! tenant), and each host reloads what it names.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, Row as _};

use super::names::AppKey;
use super::quota::TenantLimits;

/// The channel platform changes are announced on; the payload is
/// `<tenant>/<app>` for one app, `<tenant>` for all of a tenant's.
pub const CHANNEL: &str = "trellis_platform";

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS trellis_platform;
CREATE TABLE IF NOT EXISTS trellis_platform.tenants (
    name text PRIMARY KEY,
    suspended boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE trellis_platform.tenants ADD COLUMN IF NOT EXISTS limits jsonb NOT NULL DEFAULT '{}';
CREATE TABLE IF NOT EXISTS trellis_platform.blobs (
    digest text PRIMARY KEY,
    bytes bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS trellis_platform.apps (
    tenant text NOT NULL REFERENCES trellis_platform.tenants ON DELETE CASCADE,
    name text NOT NULL,
    manifest text NOT NULL,
    assets jsonb NOT NULL DEFAULT '{}',
    variables jsonb NOT NULL DEFAULT '{}',
    revision integer NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS trellis_platform.versions (
    tenant text NOT NULL,
    app text NOT NULL,
    component text NOT NULL,
    version integer NOT NULL,
    digest text NOT NULL REFERENCES trellis_platform.blobs,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, app, component, version),
    FOREIGN KEY (tenant, app) REFERENCES trellis_platform.apps ON DELETE CASCADE
);
-- Tenants' admin API tokens, by the SHA-256 of the token (never the token).
CREATE TABLE IF NOT EXISTS trellis_platform.tokens (
    id text PRIMARY KEY,
    tenant text NOT NULL REFERENCES trellis_platform.tenants ON DELETE CASCADE,
    digest text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- What tenants' apps own outside the store (schemas, queues, exchanges),
-- recorded before it is made; outlives the tenant's row until cleaned up.
CREATE TABLE IF NOT EXISTS trellis_platform.resources (
    tenant text NOT NULL,
    app text NOT NULL,
    kind text NOT NULL,
    name text NOT NULL,
    resource jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, app, kind, name)
);
CREATE TABLE IF NOT EXISTS trellis_platform.active (
    tenant text NOT NULL,
    app text NOT NULL,
    component text NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (tenant, app, component),
    FOREIGN KEY (tenant, app, component, version)
        REFERENCES trellis_platform.versions ON DELETE CASCADE
);
";

/// A tenant as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tenant {
    pub name: String,
    pub suspended: bool,
    pub limits: TenantLimits,
    pub apps: Vec<String>,
}

/// One app as stored: what a host needs to load it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub key: AppKey,
    /// `spin.toml` as uploaded; component sources are replaced by `components`.
    pub manifest: String,
    /// Files the manifest refers to (migrations, mounted files), by path
    /// relative to the manifest, base64-encoded.
    pub assets: BTreeMap<String, String>,
    /// Values of the manifest's `[variables]`.
    pub variables: BTreeMap<String, String>,
    /// Bumped by every change, so hosts can tell whether they are current.
    pub revision: i32,
    /// The active version of each component, with its digest.
    pub components: BTreeMap<String, Active>,
    pub suspended: bool,
    /// The tenant's limits, which the app is built with.
    pub limits: TenantLimits,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Active {
    pub version: i32,
    pub digest: String,
}

/// A version of a component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Version {
    pub component: String,
    pub version: i32,
    pub digest: String,
    pub active: bool,
    pub created_at: String,
}

/// What a write was refused for; the admin API maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no tenant `{0}`")]
    NoTenant(String),
    #[error("tenant `{0}` already exists")]
    TenantExists(String),
    #[error("tenant `{0}` is suspended")]
    Suspended(String),
    #[error("no app `{0}`")]
    NoApp(AppKey),
    #[error("app `{0}` has no component `{1}`")]
    NoComponent(AppKey, String),
    #[error("component `{1}` of `{0}` has no version {2}")]
    NoVersion(AppKey, String, i32),
    #[error("no uploaded component bytes with digest {0}; upload them first")]
    NoBlob(String),
    #[error("{0}")]
    Variables(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// How a token is stored: the hex SHA-256 of it (tokens are long and
/// random, so no salt or slow hash is needed to keep them from a reader of
/// the table).
fn token_digest(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// [`crate::tenancy::Ledger`] in `trellis_platform.resources`.
#[derive(Debug)]
struct StoreLedger {
    pool: PgPool,
    tenant: String,
}

impl crate::tenancy::Ledger for StoreLedger {
    fn record<'a>(
        &'a self,
        app: &'a str,
        resource: &'a crate::tenancy::Resource,
    ) -> crate::tenancy::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (kind, name) = resource.key();
            sqlx::query(
                "INSERT INTO trellis_platform.resources (tenant, app, kind, name, resource) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, app, kind, name) DO NOTHING",
            )
            .bind(&self.tenant)
            .bind(app)
            .bind(kind)
            .bind(name)
            .bind(serde_json::to_value(resource)?)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }
}

pub struct Store {
    pool: PgPool,
    options: PgConnectOptions,
    /// Seals apps' variables at rest; `None`: stored as a plain map.
    sealer: Option<super::sealed::Sealer>,
}

impl Store {
    /// Connects to the admin database and creates the platform's tables if
    /// they are missing (under an advisory lock: hosts may start together).
    pub async fn open(
        admin: &PgConnectOptions,
        sealer: Option<super::sealed::Sealer>,
    ) -> Result<Self> {
        let mut conn = PgConnection::connect_with(admin)
            .await
            .context("connecting to the platform database (--database-url)")?;
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('trellis:platform'))")
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut *tx)
            .await
            .context("creating the trellis_platform schema")?;
        tx.commit().await?;
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy_with(admin.clone());
        Ok(Self {
            pool,
            options: admin.clone(),
            sealer,
        })
    }

    /// Options for a connection of its own (the change listener).
    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    pub async fn create_tenant(&self, name: &str, limits: &TenantLimits) -> Result<(), Refusal> {
        let created = sqlx::query(
            "INSERT INTO trellis_platform.tenants (name, limits) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(sqlx::types::Json(limits))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if created == 0 {
            return Err(Refusal::TenantExists(name.to_owned()));
        }
        Ok(())
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, Refusal> {
        let rows = sqlx::query(
            "SELECT t.name, t.suspended,
                    coalesce(array_agg(a.name ORDER BY a.name) FILTER (WHERE a.name IS NOT NULL), '{}'),
                    t.limits
             FROM trellis_platform.tenants t
             LEFT JOIN trellis_platform.apps a ON a.tenant = t.name
             GROUP BY t.name, t.suspended, t.limits ORDER BY t.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| Tenant {
                name: row.get(0),
                suspended: row.get(1),
                apps: row.get(2),
                limits: row.get::<sqlx::types::Json<TenantLimits>, _>(3).0,
            })
            .collect())
    }

    /// A tenant's limits.
    pub async fn limits_of(&self, name: &str) -> Result<TenantLimits, Refusal> {
        let limits: Option<sqlx::types::Json<TenantLimits>> =
            sqlx::query_scalar("SELECT limits FROM trellis_platform.tenants WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        limits
            .map(|l| l.0)
            .ok_or_else(|| Refusal::NoTenant(name.to_owned()))
    }

    /// Sets a tenant's limits; its hosts rebuild its apps with them.
    pub async fn set_limits(&self, name: &str, limits: &TenantLimits) -> Result<(), Refusal> {
        let sql = "UPDATE trellis_platform.tenants SET limits = $2 WHERE name = $1";
        self.update_tenant(name, sql, sqlx::types::Json(limits))
            .await
    }

    /// Suspends or resumes a tenant; its hosts unload or reload its apps.
    pub async fn set_suspended(&self, name: &str, suspended: bool) -> Result<(), Refusal> {
        let sql = "UPDATE trellis_platform.tenants SET suspended = $2 WHERE name = $1";
        self.update_tenant(name, sql, suspended).await
    }

    /// Runs `sql` (`$1` the tenant's name, `$2` the value) and notifies the
    /// tenant's hosts; `NoTenant` if there is no such tenant.
    async fn update_tenant<'q, T>(
        &self,
        name: &'q str,
        sql: &'static str,
        value: T,
    ) -> Result<(), Refusal>
    where
        T: 'q + Send + sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(sql)
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Err(Refusal::NoTenant(name.to_owned()));
        }
        notify(&mut tx, name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a tenant and everything stored for it; returns its apps as
    /// they were, so the caller can drop what they own outside the store.
    pub async fn delete_tenant(&self, name: &str) -> Result<Vec<AppRecord>, Refusal> {
        let mut tx = self.pool.begin().await?;
        let exists =
            sqlx::query("SELECT 1 FROM trellis_platform.tenants WHERE name = $1 FOR UPDATE")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if !exists {
            return Err(Refusal::NoTenant(name.to_owned()));
        }
        let apps: Vec<String> =
            sqlx::query_scalar("SELECT name FROM trellis_platform.apps WHERE tenant = $1")
                .bind(name)
                .fetch_all(&mut *tx)
                .await?;
        let mut records = Vec::new();
        for app in apps {
            if let Some(record) =
                read_app(&mut tx, &AppKey::new(name, &app), self.sealer.as_ref()).await?
            {
                records.push(record);
            }
        }
        sqlx::query("DELETE FROM trellis_platform.tenants WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        notify(&mut tx, name).await?;
        tx.commit().await?;
        Ok(records)
    }

    /// A new admin API token for `tenant`: its id and the token itself,
    /// which is stored only as its SHA-256 and shown only now.
    pub async fn create_token(&self, tenant: &str) -> Result<(String, String), Refusal> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let token = format!("trellis_{id}_{secret}");
        let inserted = sqlx::query(
            "INSERT INTO trellis_platform.tokens (id, tenant, digest) \
             SELECT $1, name, $3 FROM trellis_platform.tenants WHERE name = $2",
        )
        .bind(&id)
        .bind(tenant)
        .bind(token_digest(&token))
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(Refusal::NoTenant(tenant.to_owned()));
        }
        Ok((id, token))
    }

    /// The ids and creation times of `tenant`'s tokens.
    pub async fn tokens(&self, tenant: &str) -> Result<Vec<(String, String)>, Refusal> {
        self.tenant_exists(tenant).await?;
        Ok(sqlx::query_as(
            "SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM trellis_platform.tokens WHERE tenant = $1 ORDER BY created_at, id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes one of `tenant`'s tokens; false if it had no such token.
    pub async fn revoke_token(&self, tenant: &str, id: &str) -> Result<bool, Refusal> {
        self.tenant_exists(tenant).await?;
        let deleted =
            sqlx::query("DELETE FROM trellis_platform.tokens WHERE tenant = $1 AND id = $2")
                .bind(tenant)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// The tenant whose token `token` is, if it is one.
    pub async fn tenant_of_token(&self, token: &str) -> Result<Option<String>, Refusal> {
        Ok(
            sqlx::query_scalar("SELECT tenant FROM trellis_platform.tokens WHERE digest = $1")
                .bind(token_digest(token))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn tenant_exists(&self, tenant: &str) -> Result<(), Refusal> {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM trellis_platform.tenants WHERE name = $1)",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        if exists {
            Ok(())
        } else {
            Err(Refusal::NoTenant(tenant.to_owned()))
        }
    }

    /// The ledger of `tenant`'s apps' resources, for loading them.
    pub fn ledger(&self, tenant: &str) -> std::sync::Arc<dyn crate::tenancy::Ledger> {
        std::sync::Arc::new(StoreLedger {
            pool: self.pool.clone(),
            tenant: tenant.to_owned(),
        })
    }

    /// The database's clock, to tell what is recorded from now on.
    pub async fn now(&self) -> Result<chrono::DateTime<chrono::Utc>, Refusal> {
        Ok(sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await?)
    }

    /// What `tenant`'s apps (or, with `app`, that one) were recorded to own
    /// (with `since`, recorded first at or after it).
    pub async fn resources(
        &self,
        tenant: &str,
        app: Option<&str>,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<(String, crate::tenancy::Resource)>, Refusal> {
        let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT app, resource FROM trellis_platform.resources \
             WHERE tenant = $1 AND ($2::text IS NULL OR app = $2) \
             AND ($3::timestamptz IS NULL OR recorded_at >= $3) ORDER BY app, kind, name",
        )
        .bind(tenant)
        .bind(app)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(app, json)| match serde_json::from_value(json) {
                Ok(resource) => Some((app, resource)),
                Err(err) => {
                    tracing::warn!(%tenant, %app, "unreadable resource record: {err}");
                    None
                }
            })
            .collect())
    }

    /// Forgets a resource once it is gone.
    pub async fn forget_resource(
        &self,
        tenant: &str,
        app: &str,
        resource: &crate::tenancy::Resource,
    ) -> Result<(), Refusal> {
        let (kind, name) = resource.key();
        sqlx::query(
            "DELETE FROM trellis_platform.resources \
             WHERE tenant = $1 AND app = $2 AND kind = $3 AND name = $4",
        )
        .bind(tenant)
        .bind(app)
        .bind(kind)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn has_blob(&self, digest: &str) -> Result<bool, Refusal> {
        Ok(
            sqlx::query("SELECT 1 FROM trellis_platform.blobs WHERE digest = $1")
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Stores component bytes under their digest (checked by the caller).
    pub async fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), Refusal> {
        sqlx::query(
            "INSERT INTO trellis_platform.blobs (digest, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(digest)
        .bind(bytes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn blob(&self, digest: &str) -> Result<Vec<u8>, Refusal> {
        sqlx::query_scalar("SELECT bytes FROM trellis_platform.blobs WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Refusal::NoBlob(digest.to_owned()))
    }

    /// Every stored app, tenant by tenant.
    pub async fn app_keys(&self) -> Result<Vec<AppKey>, Refusal> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT tenant, name FROM trellis_platform.apps ORDER BY tenant, name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|(t, a)| AppKey::new(t, a)).collect())
    }

    /// The apps of one tenant.
    pub async fn apps_of(&self, tenant: &str) -> Result<Vec<AppKey>, Refusal> {
        let apps: Vec<String> =
            sqlx::query_scalar("SELECT name FROM trellis_platform.apps WHERE tenant = $1")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?;
        Ok(apps.iter().map(|a| AppKey::new(tenant, a)).collect())
    }

    pub async fn app(&self, key: &AppKey) -> Result<Option<AppRecord>, Refusal> {
        let mut conn = self.pool.acquire().await?;
        read_app(&mut conn, key, self.sealer.as_ref()).await
    }

    /// Every version of every component of an app, newest first.
    pub async fn versions(&self, key: &AppKey) -> Result<Vec<Version>, Refusal> {
        let rows = sqlx::query(
            "SELECT v.component, v.version, v.digest, a.version IS NOT NULL,
                    to_char(v.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM trellis_platform.versions v
             LEFT JOIN trellis_platform.active a USING (tenant, app, component, version)
             WHERE v.tenant = $1 AND v.app = $2
             ORDER BY v.component, v.version DESC",
        )
        .bind(&key.tenant)
        .bind(&key.app)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| Version {
                component: row.get(0),
                version: row.get(1),
                digest: row.get(2),
                active: row.get(3),
                created_at: row.get(4),
            })
            .collect())
    }

    /// Stores an app as deployed: its manifest, assets and variables, and
    /// for each component a new version when its bytes changed (the active
    /// one stays otherwise). Components no longer in the app stop being
    /// active; their versions are kept. Returns the stored record.
    pub async fn put_app(
        &self,
        key: &AppKey,
        manifest: &str,
        assets: &BTreeMap<String, String>,
        variables: &BTreeMap<String, String>,
        components: &BTreeMap<String, String>,
    ) -> Result<AppRecord, Refusal> {
        let stored_variables = match &self.sealer {
            Some(sealer) => sealer
                .seal(&key.tenant, &key.app, variables)
                .map_err(|err| Refusal::Variables(format!("{err:#}")))?,
            None => serde_json::to_value(variables)
                .map_err(|err| Refusal::Variables(err.to_string()))?,
        };
        let mut tx = self.pool.begin().await?;
        lock_tenant(&mut tx, &key.tenant).await?;
        sqlx::query(
            "INSERT INTO trellis_platform.apps (tenant, name, manifest, assets, variables)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant, name) DO UPDATE SET manifest = $3, assets = $4, variables = $5,
                 revision = apps.revision + 1, updated_at = now()",
        )
        .bind(&key.tenant)
        .bind(&key.app)
        .bind(manifest)
        .bind(sqlx::types::Json(assets))
        .bind(sqlx::types::Json(stored_variables))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM trellis_platform.active
             WHERE tenant = $1 AND app = $2 AND NOT component = ANY($3)",
        )
        .bind(&key.tenant)
        .bind(&key.app)
        .bind(components.keys().cloned().collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        for (component, digest) in components {
            activate_digest(&mut tx, key, component, digest).await?;
        }
        let record = finish(&mut tx, key, self.sealer.as_ref()).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// A new version of one component from `digest` (unless it is the active
    /// one already), made active.
    pub async fn put_component(
        &self,
        key: &AppKey,
        component: &str,
        digest: &str,
    ) -> Result<AppRecord, Refusal> {
        let mut tx = self.pool.begin().await?;
        lock_app(&mut tx, key).await?;
        if !has_component(&mut tx, key, component).await? {
            return Err(Refusal::NoComponent(key.clone(), component.to_owned()));
        }
        activate_digest(&mut tx, key, component, digest).await?;
        bump(&mut tx, key).await?;
        let record = finish(&mut tx, key, self.sealer.as_ref()).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Makes a kept `version` of a component active again.
    pub async fn rollback(
        &self,
        key: &AppKey,
        component: &str,
        version: i32,
    ) -> Result<AppRecord, Refusal> {
        let mut tx = self.pool.begin().await?;
        lock_app(&mut tx, key).await?;
        if !has_component(&mut tx, key, component).await? {
            return Err(Refusal::NoComponent(key.clone(), component.to_owned()));
        }
        // The version's existence is the foreign key's to check.
        set_active(&mut tx, key, component, version)
            .await
            .map_err(|err| match err {
                Refusal::Database(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                    Refusal::NoVersion(key.clone(), component.to_owned(), version)
                }
                other => other,
            })?;
        bump(&mut tx, key).await?;
        let record = finish(&mut tx, key, self.sealer.as_ref()).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// The stored record `key` would have with `component` at `digest`,
    /// without storing anything: what a single-component deploy validates.
    pub async fn app_with(
        &self,
        key: &AppKey,
        component: &str,
        digest: &str,
    ) -> Result<AppRecord, Refusal> {
        let mut record = self
            .app(key)
            .await?
            .ok_or_else(|| Refusal::NoApp(key.clone()))?;
        let active = record
            .components
            .get_mut(component)
            .ok_or_else(|| Refusal::NoComponent(key.clone(), component.to_owned()))?;
        active.digest = digest.to_owned();
        Ok(record)
    }

    /// The version `version` of a component, as a record to validate.
    pub async fn digest_of(
        &self,
        key: &AppKey,
        component: &str,
        version: i32,
    ) -> Result<String, Refusal> {
        sqlx::query_scalar(
            "SELECT digest FROM trellis_platform.versions
             WHERE tenant = $1 AND app = $2 AND component = $3 AND version = $4",
        )
        .bind(&key.tenant)
        .bind(&key.app)
        .bind(component)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Refusal::NoVersion(key.clone(), component.to_owned(), version))
    }
}

/// The tenant row, locked against deletion and suspension while an app of
/// it is written; refused when missing or suspended.
async fn lock_tenant(conn: &mut PgConnection, tenant: &str) -> Result<(), Refusal> {
    let suspended: Option<bool> = sqlx::query_scalar(
        "SELECT suspended FROM trellis_platform.tenants WHERE name = $1 FOR SHARE",
    )
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?;
    match suspended {
        None => Err(Refusal::NoTenant(tenant.to_owned())),
        Some(true) => Err(Refusal::Suspended(tenant.to_owned())),
        Some(false) => Ok(()),
    }
}

/// The app row, locked so concurrent deploys of one app take turns.
async fn lock_app(conn: &mut PgConnection, key: &AppKey) -> Result<(), Refusal> {
    lock_tenant(conn, &key.tenant).await?;
    let found = sqlx::query(
        "SELECT 1 FROM trellis_platform.apps WHERE tenant = $1 AND name = $2 FOR UPDATE",
    )
    .bind(&key.tenant)
    .bind(&key.app)
    .fetch_optional(&mut *conn)
    .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(Refusal::NoApp(key.clone())),
    }
}

async fn has_component(
    conn: &mut PgConnection,
    key: &AppKey,
    component: &str,
) -> Result<bool, Refusal> {
    Ok(sqlx::query(
        "SELECT 1 FROM trellis_platform.active WHERE tenant = $1 AND app = $2 AND component = $3",
    )
    .bind(&key.tenant)
    .bind(&key.app)
    .bind(component)
    .fetch_optional(&mut *conn)
    .await?
    .is_some())
}

/// Makes `digest` the active bytes of `component`: a new version, unless
/// they are the active version's already.
async fn activate_digest(
    conn: &mut PgConnection,
    key: &AppKey,
    component: &str,
    digest: &str,
) -> Result<(), Refusal> {
    let current: Option<String> = sqlx::query_scalar(
        "SELECT v.digest FROM trellis_platform.active a
         JOIN trellis_platform.versions v USING (tenant, app, component, version)
         WHERE a.tenant = $1 AND a.app = $2 AND a.component = $3",
    )
    .bind(&key.tenant)
    .bind(&key.app)
    .bind(component)
    .fetch_optional(&mut *conn)
    .await?;
    if current.as_deref() == Some(digest) {
        return Ok(());
    }
    let version: i32 = sqlx::query_scalar(
        "INSERT INTO trellis_platform.versions (tenant, app, component, version, digest)
         SELECT $1, $2, $3, coalesce(max(version), 0) + 1, $4
         FROM trellis_platform.versions WHERE tenant = $1 AND app = $2 AND component = $3
         RETURNING version",
    )
    .bind(&key.tenant)
    .bind(&key.app)
    .bind(component)
    .bind(digest)
    .fetch_one(&mut *conn)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            Refusal::NoBlob(digest.to_owned())
        }
        _ => Refusal::Database(err),
    })?;
    set_active(conn, key, component, version).await
}

async fn set_active(
    conn: &mut PgConnection,
    key: &AppKey,
    component: &str,
    version: i32,
) -> Result<(), Refusal> {
    sqlx::query(
        "INSERT INTO trellis_platform.active (tenant, app, component, version)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant, app, component) DO UPDATE SET version = $4",
    )
    .bind(&key.tenant)
    .bind(&key.app)
    .bind(component)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn bump(conn: &mut PgConnection, key: &AppKey) -> Result<(), Refusal> {
    sqlx::query(
        "UPDATE trellis_platform.apps SET revision = revision + 1, updated_at = now()
         WHERE tenant = $1 AND name = $2",
    )
    .bind(&key.tenant)
    .bind(&key.app)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Announces the change to every host and reads back the stored record.
async fn finish(
    conn: &mut PgConnection,
    key: &AppKey,
    sealer: Option<&super::sealed::Sealer>,
) -> Result<AppRecord, Refusal> {
    notify(conn, &key.to_string()).await?;
    read_app(conn, key, sealer)
        .await?
        .ok_or_else(|| Refusal::NoApp(key.clone()))
}

async fn notify(conn: &mut PgConnection, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

async fn read_app(
    conn: &mut PgConnection,
    key: &AppKey,
    sealer: Option<&super::sealed::Sealer>,
) -> Result<Option<AppRecord>, Refusal> {
    type AppRow = (
        String,
        sqlx::types::Json<BTreeMap<String, String>>,
        sqlx::types::Json<serde_json::Value>,
        i32,
        bool,
        sqlx::types::Json<TenantLimits>,
    );
    let row: Option<AppRow> = sqlx::query_as(
        "SELECT a.manifest, a.assets, a.variables, a.revision, t.suspended, t.limits
         FROM trellis_platform.apps a JOIN trellis_platform.tenants t ON t.name = a.tenant
         WHERE a.tenant = $1 AND a.name = $2",
    )
    .bind(&key.tenant)
    .bind(&key.app)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((manifest, assets, variables, revision, suspended, limits)) = row else {
        return Ok(None);
    };
    let active: Vec<(String, i32, String)> = sqlx::query_as(
        "SELECT a.component, a.version, v.digest FROM trellis_platform.active a
         JOIN trellis_platform.versions v USING (tenant, app, component, version)
         WHERE a.tenant = $1 AND a.app = $2",
    )
    .bind(&key.tenant)
    .bind(&key.app)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(AppRecord {
        key: key.clone(),
        manifest,
        assets: assets.0,
        variables: super::sealed::read(sealer, &key.tenant, &key.app, variables.0)
            .map_err(|err| Refusal::Variables(format!("{err:#}")))?,
        revision,
        components: active
            .into_iter()
            .map(|(component, version, digest)| (component, Active { version, digest }))
            .collect(),
        suspended,
        limits: limits.0,
    }))
}
