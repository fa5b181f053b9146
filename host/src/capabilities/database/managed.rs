//! Managed databases: `postgres://trellis.internal/<name>`.
//!
//! A component declares `[component.<id>.tool.trellis.databases.<name>]`; at
//! load time the host creates, in the physical database named by
//! `--database-url`, a schema and a login role of the same name that owns
//! only that schema, then applies the component's migrations as that role.
//! The guest opens the logical address and is connected as the role: it never
//! sees credentials, and Postgres itself keeps it out of every other schema
//! (`SET ROLE`, `set_config('role', ...)` and qualified names all fail for
//! want of membership or privileges).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, Executor as _, PgConnection};

/// The host name of managed-database addresses.
pub const MANAGED_HOST: &str = "trellis.internal";

/// If `address` names a managed database, its name.
pub fn managed_name(address: &str) -> Option<&str> {
    let rest = address
        .strip_prefix("postgres://")
        .or_else(|| address.strip_prefix("postgresql://"))?;
    let (host, path) = rest.split_once('/')?;
    if !host.eq_ignore_ascii_case(MANAGED_HOST) {
        return None;
    }
    let name = path.split(['?', '#']).next().unwrap_or("");
    (!name.is_empty()).then_some(name)
}

/// Schema and role name for `app`/`component`/`name`: lower-case letters,
/// digits and `_`, at most 63 bytes (Postgres' identifier limit). Long names
/// keep a readable prefix and gain a hash so they stay unique.
pub fn identifier(app: &str, component: &str, name: &str) -> String {
    let raw = format!("t_{app}_{component}_{name}");
    let clean = clean_identifier(&raw);
    if clean.len() <= 63 {
        return clean;
    }
    let hash = hex::encode(&Sha256::digest(raw.as_bytes())[..6]);
    format!("{}_{hash}", &clean[..50])
}

/// The schema of a tenant's managed database (`trellis serve`): the names,
/// cleaned and cut to 50 characters, then a hash of the exact names. Always
/// hashed, because cleaning is lossy (`my-app` and `my_app` clean alike) and
/// two tenants must never land in one schema.
pub fn tenant_identifier(tenant: &str, app: &str, component: &str, name: &str) -> String {
    let clean = clean_identifier(&format!("t_{tenant}_{app}_{component}_{name}"));
    let exact = format!("{tenant}\0{app}\0{component}\0{name}");
    let hash = hex::encode(&Sha256::digest(exact.as_bytes())[..5]);
    format!("{}_{hash}", &clean[..clean.len().min(50)])
}

/// Lower-case ASCII letters and digits kept, anything else `_`.
fn clean_identifier(raw: &str) -> String {
    raw.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '_',
        })
        .collect()
}

/// The password of a managed role, derived from a host secret so that every
/// replica sharing the same secret (by default, the admin URL) computes the
/// same one without storing it anywhere.
pub fn role_password(secret: &str, role: &str) -> String {
    hex::encode(Sha256::digest(
        format!("trellis-role-v1\0{secret}\0{role}").as_bytes(),
    ))
}

/// A provisioned managed database.
#[derive(Debug, Clone)]
pub struct ManagedDatabase {
    /// The schema (`t_<app>_<component>_<name>`).
    pub schema: String,
    /// The login role that owns it. Roles are cluster-wide, so the name also
    /// carries a hash of the physical database: two deployments on one
    /// server never share a role.
    pub role: String,
    /// How to connect as the role.
    pub options: PgConnectOptions,
}

impl ManagedDatabase {
    /// The schema of its outbox, the platform's (see [`outbox_schema`]).
    pub fn outbox_schema(&self) -> String {
        outbox_schema(&self.schema)
    }

    /// A connection of its own as the role, for changes to the schema;
    /// `purpose` completes "connecting as `<role>` to ...".
    pub async fn connect(&self, purpose: &str) -> Result<PgConnection> {
        PgConnection::connect_with(&self.options)
            .await
            .with_context(|| format!("connecting as `{}` to {purpose}", self.role))
    }
}

/// The schema that holds `_trellis_outbox` for the managed database in
/// `schema`: owned by the admin, so the tenant cannot replace what the host
/// reads (`t_...` becomes `o_...`, the same length).
pub fn outbox_schema(schema: &str) -> String {
    format!("o_{}", schema.strip_prefix("t_").unwrap_or(schema))
}

/// The advisory lock key of the schema `$1`'s changes.
const SCHEMA_LOCK_KEY: &str = "hashtext('trellis:migrate:' || $1)";

/// Holds the schema's change lock until the end of the transaction on
/// `conn` (an admin connection): migrations and the outbox's creation never
/// run at once, across hosts too. Tenants cannot take advisory locks (see
/// [`ADVISORY_LOCK_FUNCTIONS`]), so they cannot hold this one to stall a
/// deployment.
pub async fn lock_schema(conn: &mut PgConnection, schema: &str) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})"
    )))
    .bind(schema)
    .execute(conn)
    .await?;
    Ok(())
}

/// The schema's change lock, held by an admin connection of its own while
/// the role's connection changes the schema.
/// (A session lock: it goes with the connection, whatever happens to the
/// host.)
pub struct SchemaLock {
    conn: PgConnection,
}

impl SchemaLock {
    pub async fn take(admin: &PgConnectOptions, schema: &str) -> Result<Self> {
        let mut conn = PgConnection::connect_with(admin)
            .await
            .context("connecting as admin to lock the schema")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})"
        )))
        .bind(schema)
        .execute(&mut conn)
        .await
        .context("locking the schema")?;
        Ok(Self { conn })
    }

    /// Closing the connection lets go of the lock.
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}

/// Every advisory lock function. Advisory locks have one key space per
/// database, shared by everyone connected to it: a tenant holding a key
/// would stall whoever wants it next (the host's provisioning, another
/// tenant's migrations, every outbox's writers). Tenants' roles may not
/// call them; the host's own locks are taken by the admin, and by the
/// outbox's trigger as its owner.
pub const ADVISORY_LOCK_FUNCTIONS: &[&str] = &[
    "pg_advisory_lock(bigint)",
    "pg_advisory_lock(integer, integer)",
    "pg_advisory_lock_shared(bigint)",
    "pg_advisory_lock_shared(integer, integer)",
    "pg_advisory_unlock(bigint)",
    "pg_advisory_unlock(integer, integer)",
    "pg_advisory_unlock_shared(bigint)",
    "pg_advisory_unlock_shared(integer, integer)",
    "pg_advisory_unlock_all()",
    "pg_advisory_xact_lock(bigint)",
    "pg_advisory_xact_lock(integer, integer)",
    "pg_advisory_xact_lock_shared(bigint)",
    "pg_advisory_xact_lock_shared(integer, integer)",
    "pg_try_advisory_lock(bigint)",
    "pg_try_advisory_lock(integer, integer)",
    "pg_try_advisory_lock_shared(bigint)",
    "pg_try_advisory_lock_shared(integer, integer)",
    "pg_try_advisory_xact_lock(bigint)",
    "pg_try_advisory_xact_lock(integer, integer)",
    "pg_try_advisory_xact_lock_shared(bigint)",
    "pg_try_advisory_xact_lock_shared(integer, integer)",
];

/// The role for `schema` in `database`.
pub fn role_name(schema: &str, database: &str) -> String {
    let hash = hex::encode(&Sha256::digest(database.as_bytes())[..4]);
    let prefix = &schema[..schema.len().min(54)];
    format!("{prefix}_{hash}")
}

/// Creates (idempotently) the schema and its role and returns how to connect
/// as the role. Serialised per database by an advisory lock, and retried when
/// hosts on other databases of the same server touch the same role at once.
/// What a managed role may use of the server, set on the role itself.
#[derive(Debug, Clone, Copy)]
pub struct RoleLimits {
    /// Its default `statement_timeout` (connections also set it at start).
    pub statement_timeout_ms: u128,
    /// `CONNECTION LIMIT`.
    pub connections: u32,
    /// `temp_file_limit` in KiB, -1 for none.
    pub temp_file_kb: i64,
}

pub async fn provision(
    admin: &PgConnectOptions,
    secret: &str,
    schema: &str,
    limits: RoleLimits,
) -> Result<ManagedDatabase> {
    let mut conn = PgConnection::connect_with(admin)
        .await
        .context("connecting to the database server as admin")?;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await?;
    let role = role_name(schema, &database);
    let password = role_password(secret, &role);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match provision_once(&mut conn, &database, schema, &role, &password, limits).await {
            Ok(()) => break,
            // Concurrent DDL on the same role from another database:
            // "tuple concurrently updated" (XX000), duplicate role (42710/23505).
            Err(sqlx::Error::Database(err))
                if attempt < 5
                    && matches!(
                        err.code().as_deref(),
                        Some("XX000" | "42710" | "23505" | "40001")
                    ) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
            }
            Err(err) => return Err(err).with_context(|| format!("provisioning `{schema}`")),
        }
    }
    let _ = conn.close().await;
    Ok(ManagedDatabase {
        schema: schema.to_string(),
        options: admin.clone().username(&role).password(&password),
        role,
    })
}

async fn provision_once(
    conn: &mut PgConnection,
    database: &str,
    schema: &str,
    role: &str,
    password: &str,
    limits: RoleLimits,
) -> sqlx::Result<()> {
    let mut tx = conn.begin().await?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('trellis:provision'))")
        .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *tx)
            .await?;
    let (role_q, schema_q, db_q) = (
        quote_ident(role),
        quote_ident(schema),
        quote_ident(database),
    );
    if !exists {
        run(&mut tx, format!("CREATE ROLE {role_q}")).await?;
    }
    // Everything below is re-asserted on every start, so a tampered role is
    // put back in its box.
    let statements = [
        format!(
            "ALTER ROLE {role_q} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT \
             NOREPLICATION NOBYPASSRLS PASSWORD {}",
            quote_literal(password)
        ),
        format!("CREATE SCHEMA IF NOT EXISTS {schema_q} AUTHORIZATION {role_q}"),
        format!("ALTER SCHEMA {schema_q} OWNER TO {role_q}"),
        // Its own schema first; then its outbox's, so `_trellis_outbox`
        // names the platform's table.
        format!(
            "ALTER ROLE {role_q} IN DATABASE {db_q} SET search_path = {schema_q}, {}",
            quote_ident(&outbox_schema(schema))
        ),
        format!(
            "ALTER ROLE {role_q} SET statement_timeout = {}",
            limits.statement_timeout_ms
        ),
        // Bounds what one tenant takes of the server's connections and disk;
        // `temp_file_limit` is the superuser's to change, not the role's.
        format!(
            "ALTER ROLE {role_q} CONNECTION LIMIT {}",
            i32::try_from(limits.connections).unwrap_or(i32::MAX)
        ),
        format!(
            "ALTER ROLE {role_q} SET temp_file_limit = {}",
            limits.temp_file_kb.max(-1)
        ),
        // Nobody but owners may use or create in `public`, or make temp tables.
        "REVOKE ALL ON SCHEMA public FROM PUBLIC".to_string(),
        format!("REVOKE CREATE, TEMPORARY ON DATABASE {db_q} FROM PUBLIC"),
        format!("GRANT CONNECT ON DATABASE {db_q} TO {role_q}"),
    ];
    for statement in statements {
        run(&mut tx, statement).await?;
    }
    for function in ADVISORY_LOCK_FUNCTIONS {
        run(
            &mut tx,
            format!("REVOKE EXECUTE ON FUNCTION pg_catalog.{function} FROM PUBLIC"),
        )
        .await?;
        run(
            &mut tx,
            format!("GRANT EXECUTE ON FUNCTION pg_catalog.{function} TO CURRENT_USER"),
        )
        .await?;
    }
    tx.commit().await
}

/// Whether the schema holds nothing through which a plain statement could
/// change its session's state unseen: no functions or procedures (a
/// `SELECT f()`, a trigger, a view, an operator would run them), no views,
/// rules or policies, and no `set_config` in a default, a constraint or an
/// index. Then a guest's connection needs a reset only after statements
/// that say so themselves (`SET`, `LISTEN`, ...). Read from the catalog as
/// the admin: deparsing runs nothing of the tenant's.
pub async fn plain_schema(admin: &PgConnectOptions, schema: &str) -> Result<bool> {
    let mut conn = PgConnection::connect_with(admin)
        .await
        .context("connecting as admin to inspect the schema")?;
    let hides: bool = sqlx::query_scalar(
        "WITH ns AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)
         SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE pronamespace IN (SELECT oid FROM ns))
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_class
                        WHERE relnamespace IN (SELECT oid FROM ns) AND relkind IN ('v', 'm'))
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
                        WHERE c.relnamespace IN (SELECT oid FROM ns) AND NOT t.tgisinternal)
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
                        WHERE c.relnamespace IN (SELECT oid FROM ns) AND r.rulename <> '_RETURN')
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
                        WHERE c.relnamespace IN (SELECT oid FROM ns))
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_class c ON c.oid = d.adrelid
                        WHERE c.relnamespace IN (SELECT oid FROM ns)
                          AND pg_catalog.pg_get_expr(d.adbin, d.adrelid) ILIKE '%set_config%')
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                        WHERE k.connamespace IN (SELECT oid FROM ns)
                          AND pg_catalog.pg_get_constraintdef(k.oid) ILIKE '%set_config%')
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
                        WHERE c.relnamespace IN (SELECT oid FROM ns)
                          AND pg_catalog.pg_get_indexdef(i.indexrelid) ILIKE '%set_config%')",
    )
    .bind(schema)
    .fetch_one(&mut conn)
    .await
    .context("inspecting the schema")?;
    let _ = conn.close().await;
    Ok(!hides)
}

/// Drops a managed database: its schema, its outbox's schema and its role
/// (with the privileges it holds elsewhere, e.g. `CONNECT`). Nothing of the
/// tenant's runs: `DROP` fires no trigger a tenant can create.
pub async fn drop_schema_and_role(
    admin: &PgConnectOptions,
    schema: &str,
    role: &str,
) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect_with(admin).await?;
    let sql = format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE;
         DROP SCHEMA IF EXISTS {outbox} CASCADE;
         DO $$ BEGIN
             IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN
                 EXECUTE 'DROP OWNED BY ' || quote_ident({name});
                 EXECUTE 'DROP ROLE ' || quote_ident({name});
             END IF;
         END $$;",
        schema = quote_ident(schema),
        outbox = quote_ident(&outbox_schema(schema)),
        name = quote_literal(role)
    );
    let result = run(&mut conn, sql).await;
    let _ = conn.close().await;
    result
}

/// Creates the physical database `admin` names if it does not exist yet
/// (connecting to the server's `postgres` database to do so).
pub async fn ensure_database(admin: &PgConnectOptions) -> Result<()> {
    let Some(name) = admin.get_database().map(str::to_owned) else {
        return Ok(());
    };
    match PgConnection::connect_with(admin).await {
        Ok(conn) => {
            let _ = conn.close().await;
            return Ok(());
        }
        // 3D000: invalid_catalog_name, i.e. the database does not exist.
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("3D000") => {}
        Err(err) => {
            return Err(err).context("connecting to the database server as admin");
        }
    }
    let mut conn = PgConnection::connect_with(&admin.clone().database("postgres"))
        .await
        .context("connecting to the `postgres` database to create the app's database")?;
    let created = run(&mut conn, format!("CREATE DATABASE {}", quote_ident(&name))).await;
    match created {
        Ok(_) => tracing::info!(database = %name, "created database"),
        // Another host created it meanwhile: 42P04 (duplicate_database), or
        // 23505 when both inserted into pg_database at the same moment.
        Err(sqlx::Error::Database(err))
            if matches!(err.code().as_deref(), Some("42P04" | "23505")) => {}
        Err(err) => return Err(err).with_context(|| format!("creating database `{name}`")),
    }
    let _ = conn.close().await;
    Ok(())
}

/// One migration file: `<version>_<description>.sql`.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub sql: String,
    pub checksum: String,
}

/// Most migration files one database may have, and the largest one.
const MAX_MIGRATIONS: usize = 10_000;
const MAX_MIGRATION_BYTES: u64 = 8 << 20;

/// Reads `dir`'s `*.sql` files, ordered by version.
pub fn read_migrations(dir: &Path) -> Result<Vec<Migration>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading migrations directory {}", dir.display()))?;
    let mut migrations = Vec::new();
    for entry in entries {
        let path: PathBuf = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("sql") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
        let Ok(version) = digits.parse::<i64>() else {
            bail!(
                "migration {}: the file name must start with a version number, e.g. 0001_create_users.sql",
                path.display()
            );
        };
        if migrations.len() >= MAX_MIGRATIONS {
            bail!("{}: more than {MAX_MIGRATIONS} migrations", dir.display());
        }
        // Not followed out of the directory: a link is no migration.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!("migration {} is a symbolic link", path.display());
        }
        let sql = String::from_utf8(crate::manifest::read_bounded(
            &path,
            "migration",
            MAX_MIGRATION_BYTES,
        )?)
        .with_context(|| format!("migration {} is not UTF-8", path.display()))?;
        let checksum = hex::encode(Sha256::digest(sql.as_bytes()));
        migrations.push(Migration {
            version,
            name,
            sql,
            checksum,
        });
    }
    migrations.sort_by_key(|m| m.version);
    if let Some(pair) = migrations.windows(2).find(|w| w[0].version == w[1].version) {
        bail!(
            "migrations {} and {} share version {}",
            pair[0].name,
            pair[1].name,
            pair[0].version
        );
    }
    Ok(migrations)
}

/// Applies the pending `migrations` as the managed role, all in one
/// transaction, under the schema's lock (held by an admin connection): two
/// hosts starting together apply each migration once. Returns how many were applied now. A migration that
/// changed after it was applied is an error, not silently skipped.
pub async fn migrate(
    admin: &PgConnectOptions,
    db: &ManagedDatabase,
    migrations: &[Migration],
) -> Result<usize> {
    let lock = SchemaLock::take(admin, &db.schema).await?;
    let applied = migrate_locked(db, migrations).await;
    lock.release().await;
    applied
}

async fn migrate_locked(db: &ManagedDatabase, migrations: &[Migration]) -> Result<usize> {
    let mut conn = db.connect("migrate").await?;
    let mut tx = conn.begin().await?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS _trellis_migrations (
             version bigint PRIMARY KEY,
             name text NOT NULL,
             checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT version, name, checksum FROM _trellis_migrations")
            .fetch_all(&mut *tx)
            .await?;
    let mut count = 0;
    for migration in migrations {
        if let Some((_, name, checksum)) = applied.iter().find(|(v, _, _)| *v == migration.version)
        {
            if *checksum != migration.checksum {
                bail!(
                    "migration {} was changed after it was applied (as {name}); add a new migration instead",
                    migration.name
                );
            }
            continue;
        }
        run(&mut tx, migration.sql.clone())
            .await
            .with_context(|| format!("applying migration {}", migration.name))?;
        sqlx::query(
            "INSERT INTO _trellis_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(&migration.name)
        .bind(&migration.checksum)
        .execute(&mut *tx)
        .await?;
        count += 1;
    }
    tx.commit().await?;
    let _ = conn.close().await;
    Ok(count)
}

/// Runs SQL the host composed itself (identifiers quoted by [`quote_ident`],
/// values by [`quote_literal`]); DDL takes no bind parameters.
async fn run(conn: &mut PgConnection, sql: String) -> sqlx::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_addresses() {
        assert_eq!(
            managed_name("postgres://trellis.internal/users"),
            Some("users")
        );
        assert_eq!(
            managed_name("postgresql://TRELLIS.internal/users?x=1"),
            Some("users")
        );
        assert_eq!(managed_name("postgres://trellis.internal/"), None);
        assert_eq!(managed_name("postgres://db.example.com/users"), None);
        assert_eq!(managed_name("mysql://trellis.internal/users"), None);
    }

    #[test]
    fn identifiers_are_safe_and_bounded() {
        assert_eq!(identifier("shop", "user", "users"), "t_shop_user_users");
        assert_eq!(
            identifier("My-App", "order", "o\"; drop"),
            "t_my_app_order_o___drop"
        );
        let long = identifier(&"a".repeat(60), "component", "name");
        assert!(long.len() <= 63, "{long}");
        assert_ne!(long, identifier(&"a".repeat(61), "component", "name"));
    }

    #[test]
    fn tenant_identifiers_never_collide_on_spelling() {
        let a = tenant_identifier("acme", "my-app", "order", "orders");
        assert!(a.starts_with("t_acme_my_app_order_orders_"), "{a}");
        assert_ne!(a, tenant_identifier("acme", "my_app", "order", "orders"));
        assert_ne!(a, tenant_identifier("acme-my", "app", "order", "orders"));
        let long = tenant_identifier(&"t".repeat(40), &"a".repeat(40), "component", "name");
        assert!(long.len() <= 61, "{long}");
        // Room for the role's suffix within Postgres's 63 bytes.
        assert!(role_name(&long, "trellis").len() <= 63);
    }

    #[test]
    fn roles_are_per_database_and_bounded() {
        let a = role_name("t_shop_user_users", "trellis");
        assert!(a.starts_with("t_shop_user_users_"), "{a}");
        assert_ne!(a, role_name("t_shop_user_users", "other"));
        assert!(role_name(&"x".repeat(63), "db").len() <= 63);
    }

    #[test]
    fn passwords_depend_on_secret_and_role() {
        let a = role_password("s1", "r1");
        assert_eq!(a, role_password("s1", "r1"));
        assert_ne!(a, role_password("s2", "r1"));
        assert_ne!(a, role_password("s1", "r2"));
    }
}
