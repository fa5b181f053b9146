//! `spin:postgres/postgres@4.0.0` on PostgreSQL through sqlx.
//!
//! - [`Databases`] (process-wide): connection pools keyed by server, database
//!   and role, opened lazily, idle connections closed, and one cap on open
//!   connections across all pools, idle ones included (see [`pool`]).
//! - [`ComponentDatabases`] (per component, built at load): its managed
//!   databases (see [`managed`]) and its outbound allow-list.
//! - [`Connection`] (per guest resource): holds one pooled connection for its
//!   whole life, so `BEGIN`/`COMMIT` through `execute` are real transactions;
//!   a connection dropped inside a transaction is rolled back before it goes
//!   back to the pool.

pub mod bindings;
pub mod convert;
pub mod managed;
pub mod pool;
pub mod query;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use sqlx::Connection as _;
use sqlx::Executor as _;
use sqlx::postgres::PgConnectOptions;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::allowed_hosts::AllowedHosts;
use crate::egress::Egress;
use bindings::{Error, ParameterValue, RowSet};
use query::Limits;

/// Settings of the database capability.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Admin connection to the server and database that hold managed
    /// databases. Example: `postgres://postgres@127.0.0.1:5432/trellis`.
    pub admin_url: String,
    /// Secret from which managed roles' passwords are derived; replicas must
    /// share it. Defaults to the admin URL.
    pub role_secret: Option<String>,
    /// Per-statement deadline. Example: 5 s.
    pub statement_timeout: Duration,
    /// Most rows one query may return. Example: 10,000.
    pub max_rows: usize,
    /// Most bytes of values one query may return. Example: 16 MiB.
    pub max_result_bytes: usize,
    /// Connections open at once across all pools, idle ones included: what
    /// this host may take of the server's `max_connections`. At the cap, a
    /// pool that needs one more closes the connection idle longest anywhere.
    /// Example: 64.
    pub max_connections: u32,
    /// Connections one pool (one server, database and role) keeps open,
    /// idle ones included; idle ones close after 30 s. Example: 16.
    pub max_pool_connections: u32,
    /// How long `open` waits for a connection (a server that is down fails
    /// faster: connection refused). Example: 2 s.
    pub acquire_timeout: Duration,
    /// Connections a managed role may hold on the server (`CONNECTION
    /// LIMIT`), all hosts together. Example: 64.
    pub role_connection_limit: u32,
    /// Temporary file space per session of a managed role, in KiB
    /// (`temp_file_limit`, which only a superuser may change); -1: none.
    /// Example: 1 GiB.
    pub role_temp_file_limit_kb: i64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            admin_url: "postgres://postgres@127.0.0.1:5432/trellis".to_string(),
            role_secret: None,
            statement_timeout: Duration::from_secs(5),
            max_rows: 10_000,
            max_result_bytes: 16 << 20,
            max_connections: 64,
            max_pool_connections: 16,
            acquire_timeout: Duration::from_secs(2),
            role_connection_limit: 64,
            role_temp_file_limit_kb: 1 << 20,
        }
    }
}

/// Idle pooled connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a pool connects: one per server, database and role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    host: String,
    port: u16,
    database: String,
    user: String,
    /// For a server a component names itself: whose pool it is (its app)
    /// and a digest of the whole address, credentials included. A wrong
    /// password never gets a connection someone else authenticated, and no
    /// two apps share a connection's session.
    external: Option<(Arc<str>, [u8; 32])>,
}

impl PoolKey {
    fn of(options: &PgConnectOptions) -> Self {
        Self {
            host: options.get_host().to_string(),
            port: options.get_port(),
            database: options.get_database().unwrap_or_default().to_string(),
            user: options.get_username().to_string(),
            external: None,
        }
    }
}

/// Process-wide pools and connection cap.
pub struct Databases {
    pub config: DatabaseConfig,
    pub admin: PgConnectOptions,
    pools: pool::Pools<PoolKey>,
    limits: Limits,
}

impl Databases {
    pub fn new(config: DatabaseConfig) -> Result<Arc<Self>> {
        let admin: PgConnectOptions = config
            .admin_url
            .parse()
            .context("--database-url is not a valid postgres:// URL")?;
        let admin = without_loopback_tls(&config.admin_url, admin);
        let this = Arc::new(Self {
            admin,
            pools: pool::Pools::new(
                config.max_connections,
                config.max_pool_connections,
                IDLE_TIMEOUT,
            ),
            limits: Limits {
                max_rows: config.max_rows,
                max_bytes: config.max_result_bytes,
                // The server's own statement_timeout (same value) normally
                // fires first and leaves the connection usable; the host's
                // deadline is the backstop for a guest that SET it away.
                statement_timeout: config.statement_timeout + Duration::from_secs(1),
            },
            config,
        });
        Self::start_reaper(&this);
        Ok(this)
    }

    /// The secret managed roles' passwords derive from.
    pub fn role_secret(&self) -> &str {
        self.config
            .role_secret
            .as_deref()
            .unwrap_or(&self.config.admin_url)
    }

    /// The pool for `options`, created (without connecting) on first use.
    fn pool(&self, key: PoolKey, options: &PgConnectOptions) -> Arc<pool::Pool> {
        self.pools.pool(key, || {
            let timeout_ms = self.config.statement_timeout.as_millis().to_string();
            options
                .clone()
                .options([("statement_timeout", timeout_ms.as_str())])
        })
    }

    /// Connections open across all pools, idle ones included.
    pub fn open_connections(&self) -> usize {
        self.pools.open_count()
    }

    /// How the guests' connection pools are used, for metrics.
    pub fn pool_use(&self) -> crate::metrics::PoolUse {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        crate::metrics::PoolUse {
            open: count(self.pools.open_count()),
            idle: count(self.pools.idle_count()),
            max: count(self.pools.max_open()),
            pools: count(self.pools.pool_count()),
        }
    }

    /// Closes idle connections past their time, every few seconds, for as
    /// long as `this` lives (needs a Tokio runtime; without one, idle
    /// connections are still closed when their pool is next used).
    fn start_reaper(this: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(this);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(IDLE_TIMEOUT / 3);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                this.pools.reap();
            }
        });
    }

    /// Whether the server answers (for `/health/ready`).
    pub async fn ready(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(1);
        let check = async {
            let pool = self.pool(PoolKey::of(&self.admin), &self.admin);
            let mut conn = self.pools.acquire(&pool, deadline).await.ok()?;
            let ok = conn.execute("SELECT 1").await.is_ok();
            if ok {
                pool.release(conn);
            }
            Some(ok)
        };
        matches!(
            tokio::time::timeout_at(deadline.into(), check).await,
            Ok(Some(true))
        )
    }
}

/// How a component connects to one of its managed databases.
#[derive(Debug, Clone)]
pub struct ManagedConnection {
    pub options: PgConnectOptions,
    /// The schema holds nothing that could change a session's state behind
    /// a plain statement ([`managed::plain_schema`]); cleared for good when
    /// a guest runs DDL, which could add such a thing.
    pub plain: Arc<AtomicBool>,
}

/// What one component may open, resolved at load time.
pub struct ComponentDatabases {
    pub databases: Arc<Databases>,
    /// Managed database name -> how to connect as its role.
    pub managed: HashMap<String, ManagedConnection>,
    pub allowed: Arc<AllowedHosts>,
    /// Where its connections may go, by address.
    pub egress: Arc<Egress>,
    /// Whose pools its connections to other servers come from (its tenant
    /// and app).
    pub owner: Arc<str>,
}

/// Query parameters a component's address may carry. The others name files
/// of the host (`sslrootcert`, `sslcert`, `sslkey`: a client key would be
/// presented to the component's server) or another server (`host`,
/// `hostaddr`, Unix sockets) than the one the allow-list judged.
const ADDRESS_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "statement-cache-capacity",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Environment variables sqlx would read into a component's connection
/// options: the host's own client certificate and key, or its CA file.
const INHERITED_FILES: &[&str] = &["PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT"];

impl ComponentDatabases {
    /// Resolves a guest's address to its pool's key and connection options,
    /// or the error the guest sees.
    // The WIT's error type is large; this runs once per `open`, not per row.
    #[allow(clippy::result_large_err)]
    async fn resolve(&self, address: &str) -> Result<Resolved, Error> {
        if let Some(name) = managed::managed_name(address) {
            let managed = self.managed.get(name).cloned().ok_or_else(|| {
                Error::ConnectionFailed(format!(
                    "no managed database `{name}` is declared for this component \
                     ([component.<id>.tool.trellis.databases.{name}])"
                ))
            })?;
            return Ok((
                PoolKey::of(&managed.options),
                managed.options,
                Some(managed.plain),
            ));
        }
        let bad = || Error::BadParameter("the address is not a postgres:// URL".into());
        let url = url::Url::parse(address).map_err(|_| bad())?;
        let mut options: PgConnectOptions = address.parse().map_err(|_| bad())?;
        if let Some((key, _)) = url.query_pairs().find(|(key, _)| {
            !ADDRESS_PARAMETERS.contains(&key.as_ref()) && !key.starts_with("options[")
        }) {
            return Err(Error::ConnectionFailed(format!(
                "the database address may not set `{key}` (allowed: {})",
                ADDRESS_PARAMETERS.join(", ")
            )));
        }
        // A Unix socket (a `/path` host) would reach a local server whatever
        // host the URL names: the allow-list could not speak for it.
        if options.get_socket().is_some() {
            return Err(Error::ConnectionFailed(
                "Unix sockets are not allowed in a database address".into(),
            ));
        }
        let scheme = address.split_once("://").map_or("postgres", |(s, _)| s);
        let (host, port) = (options.get_host().to_owned(), options.get_port());
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if !self.allowed.allows(scheme, bare, Some(port)) {
            tracing::warn!(
                host,
                port,
                "database address denied: not in allowed_outbound_hosts"
            );
            return Err(Error::ConnectionFailed(format!(
                "address {scheme}://{host}:{port} is not allowed by allowed_outbound_hosts"
            )));
        }
        if self.egress.is_guarded() {
            if let Some(var) = INHERITED_FILES
                .iter()
                .find(|v| std::env::var_os(v).is_some())
            {
                tracing::error!(
                    "a component's database connection was refused: the host's environment sets {var}, which would apply to it; set it in --database-url instead"
                );
                return Err(Error::ConnectionFailed(
                    "the host cannot open connections to other servers (see its log)".into(),
                ));
            }
            // Never the host's PGPASSWORD for someone else's server.
            if url.password().is_none() && !url.query_pairs().any(|(k, _)| k == "password") {
                options = options.password("");
            }
            let addrs = self.egress.resolve(&host, port).await.map_err(|denied| {
                tracing::warn!(%denied, "database address denied");
                Error::ConnectionFailed(format!("address denied: {denied}"))
            })?;
            // Connect to the address that was checked, so that a second
            // lookup cannot lead elsewhere; only `verify-full` needs the
            // name, and its certificate check then stands for it.
            if !matches!(
                options.get_ssl_mode(),
                sqlx::postgres::PgSslMode::VerifyFull
            ) {
                options = options.host(&addrs[0].ip().to_string());
            }
        }
        let mut key = PoolKey::of(&options);
        use sha2::Digest as _;
        key.external = Some((
            self.owner.clone(),
            sha2::Sha256::digest(address.as_bytes()).into(),
        ));
        Ok((key, options, None))
    }
}

/// A pool's key, how to connect, and for a managed database whether its
/// schema is plain.
type Resolved = (PoolKey, PgConnectOptions, Option<Arc<AtomicBool>>);

/// The host side of a guest's `connection` resource.
pub struct Connection {
    conn: Option<pool::Pooled>,
    pool: Arc<pool::Pool>,
    limits: Limits,
    /// A statement ran: the session may hold state of the guest's.
    used: bool,
    /// A transaction may be open: a `BEGIN`/`START`, or a `COMMIT`,
    /// `ROLLBACK` (`END`, `ABORT`) `AND CHAIN`, came last. Only a statement
    /// of the guest's own can leave one open (a procedure's chained
    /// transaction ends with its `CALL`).
    transaction_open: bool,
    /// A `PREPARE` or `DEALLOCATE` ran: the guest's prepared statements go
    /// too, and with them the host's statement cache of the connection.
    prepared: bool,
    /// A statement said it changes the session (`SET`, `LISTEN`, ...).
    dirty: bool,
    /// A managed database whose schema is plain (see [`ManagedConnection`]):
    /// a session that only ran plain statements needs no reset.
    plain: Option<Arc<AtomicBool>>,
    /// A server the component named itself (advisory locks are its own).
    external: bool,
    /// A statement failed in a way that leaves the connection unusable (a
    /// FATAL error, a host-side timeout): it is closed, not returned.
    broken: bool,
}

/// Statements longer than this are cut in spans.
const MAX_TRACED_STATEMENT: usize = 2048;

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Connection {
    /// Runs one statement and keeps the connection's state. The connection
    /// is moved into the statement's future while it runs: a guest cut off
    /// mid-statement (at its deadline) drops it there, closed, rather than
    /// leaving a connection with a reply still to come for the next user.
    async fn run<T, F, Fut>(&mut self, statement: &str, run: F) -> Result<T, Error>
    where
        F: FnOnce(pool::Pooled, Limits) -> Fut,
        Fut: std::future::Future<Output = (pool::Pooled, Result<T, Error>)>,
    {
        let Some(mut conn) = self.conn.take() else {
            return Err(Error::ConnectionFailed("the connection is closed".into()));
        };
        // Until it answers: dropped before then, the server process goes too.
        conn.backend.busy = true;
        let keyword = first_keyword(statement);
        // A child of the guest's invoke span.
        let span = tracing::info_span!(
            "db",
            otel.name = %keyword.to_ascii_uppercase(),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = "postgresql",
            db.query.text = truncated(statement, MAX_TRACED_STATEMENT),
        );
        let running = run(conn, self.limits.clone());
        let (conn, result) = tracing::Instrument::instrument(running, span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "error");
        }
        let mut conn = conn;
        // Cut off by the host's deadline, the statement may still be
        // running on the server: the process is terminated when the
        // connection is dropped. Any other outcome left nothing running.
        conn.backend.busy = matches!(&result, Err(err) if query::is_timeout(err));
        if matches!(&result, Err(err) if query::must_discard_connection(err)) {
            self.broken = true;
        }
        self.conn = Some(conn);
        self.track(&keyword, statement);
        result
    }

    /// `keyword`: the statement's first, lower-case.
    fn track(&mut self, keyword: &str, statement: &str) {
        self.used = true;
        match keyword {
            "begin" | "start" => self.transaction_open = true,
            "commit" | "end" | "rollback" | "abort" => {
                let lower = statement.to_ascii_lowercase();
                self.transaction_open = lower.contains("chain") && !lower.contains("no chain");
            }
            _ => {}
        }
        if matches!(keyword, "prepare" | "deallocate" | "execute") {
            self.prepared = true;
        }
        if SESSION_KEYWORDS.contains(&keyword)
            || statement.to_ascii_lowercase().contains("set_config")
        {
            self.dirty = true;
        }
        // DDL may add what hides state behind plain statements from now on.
        if DDL_KEYWORDS.contains(&keyword) {
            self.dirty = true;
            if let Some(plain) = &self.plain {
                plain.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Whether the session needs [`SESSION_RESET`] before anyone else gets it.
    fn needs_reset(&self) -> bool {
        self.dirty
            || self.transaction_open
            || !self
                .plain
                .as_ref()
                .is_some_and(|plain| plain.load(Ordering::Relaxed))
    }
}

/// Statements that change their session by what they are.
const SESSION_KEYWORDS: &[&str] = &[
    "set",
    "reset",
    "listen",
    "unlisten",
    "prepare",
    "deallocate",
    "execute",
    "declare",
    "discard",
    "do",
    "call",
    "load",
    "lock",
    "close",
    "fetch",
    "move",
];
/// Statements that change what a schema holds.
const DDL_KEYWORDS: &[&str] = &[
    "create", "alter", "drop", "comment", "grant", "revoke", "security", "import", "refresh",
];

/// What a guest's session may have left on its connection, undone before
/// the connection serves anyone else, as poolers do (pgbouncer's
/// `server_reset_query`): `DISCARD ALL` minus `DEALLOCATE ALL` (the host's
/// own prepared statements stay; see [`Connection::prepared`]), after a
/// `ROLLBACK` when a transaction may be open. One round trip, after the
/// guest is done, off its request's path, but the connection waits for it:
/// measured, resetting every connection cost a third of `GET /users/{id}`
/// throughput. So it runs when statement text says the session changed, or
/// when it cannot tell: a server the component named itself, or a managed
/// schema that is not plain ([`managed::plain_schema`]), where a function,
/// trigger, view or default could run `set_config` or `LISTEN` behind a
/// plain `SELECT` or `INSERT`.
const SESSION_RESET: &str = "CLOSE ALL; RESET ROLE; RESET ALL; UNLISTEN *; \
                             DISCARD TEMP; DISCARD SEQUENCES";

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.broken {
            return; // dropped: closed
        }
        if !self.used || !self.needs_reset() {
            self.pool.release(conn); // back to the pool as it is
            return;
        }
        // Clean up before anyone else gets this connection (see
        // `SESSION_RESET`). If that fails, the connection is closed instead
        // of returned.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        let (prepared, external) = (self.prepared, self.external);
        // Only when one may be open: a ROLLBACK outside one is a warning
        // the server sends back (and the log would show) every time.
        let rollback = self.transaction_open;
        runtime.spawn(async move {
            let mut reset = if rollback {
                format!("ROLLBACK; {SESSION_RESET}")
            } else {
                SESSION_RESET.to_owned()
            };
            if external {
                // Managed roles cannot take advisory locks at all.
                reset.push_str("; SELECT pg_advisory_unlock_all()");
            }
            if prepared {
                reset.push_str("; DEALLOCATE ALL");
            }
            let done = sqlx::raw_sql(sqlx::AssertSqlSafe(reset))
                .execute(&mut *conn)
                .await
                .is_ok();
            // The server forgot every prepared statement: so must the cache.
            let cache = !prepared || conn.clear_cached_statements().await.is_ok();
            if done && cache {
                pool.release(conn);
            }
        });
    }
}

/// `sslmode=disable` for a server on this machine, unless the URL chose a
/// mode (in the URL, or `PGSSLMODE`). The default (`prefer`) negotiates TLS, which on loopback protects
/// nothing and made every new connection wait out two delayed ACKs (sqlx
/// does not set `TCP_NODELAY`, and the handshake is several small writes):
/// about 90 ms before a tenant's first query, or a woken outbox relay's.
fn without_loopback_tls(url: &str, options: PgConnectOptions) -> PgConnectOptions {
    let chose =
        url.to_ascii_lowercase().contains("sslmode=") || std::env::var_os("PGSSLMODE").is_some();
    let host = options.get_host();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if chose || !loopback {
        return options;
    }
    options.ssl_mode(sqlx::postgres::PgSslMode::Disable)
}

/// The first SQL keyword of a statement, lower-cased, skipping white space
/// and comments (a `/* x */ BEGIN` still opens a transaction).
fn first_keyword(statement: &str) -> String {
    let mut rest = statement;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    rest.chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The borrowed view the generated traits are implemented on.
pub struct DatabaseView<'a> {
    pub ctx: &'a Arc<ComponentDatabases>,
    pub table: &'a mut ResourceTable,
}

impl bindings::Host for DatabaseView<'_> {}

impl bindings::HostConnection for DatabaseView<'_> {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let (key, options, plain) = match self.ctx.resolve(&address).await {
            Ok(resolved) => resolved,
            Err(err) => return Ok(Err(err)),
        };
        let databases = &self.ctx.databases;
        let key_is_external = key.external.is_some();
        let pool = databases.pool(key, &options);
        let deadline = Instant::now() + databases.config.acquire_timeout;
        let conn = match databases.pools.acquire(&pool, deadline).await {
            Ok(conn) => conn,
            Err(err) => return Ok(Err(query::map_error(err))),
        };
        let connection = Connection {
            conn: Some(conn),
            pool,
            limits: databases.limits.clone(),
            used: false,
            transaction_open: false,
            prepared: false,
            dirty: false,
            plain,
            external: key_is_external,
            broken: false,
        };
        Ok(Ok(self.table.push(connection)?))
    }

    async fn query(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let connection = self.table.get_mut(&this)?;
        let sql = statement.as_str();
        Ok(connection
            .run(sql, |mut conn, limits| async move {
                let result = query::query(&mut conn, sql, params, &limits).await;
                (conn, result)
            })
            .await)
    }

    async fn execute(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let connection = self.table.get_mut(&this)?;
        let sql = statement.as_str();
        Ok(connection
            .run(sql, |mut conn, limits| async move {
                let result = query::execute(&mut conn, sql, params, &limits).await;
                (conn, result)
            })
            .await)
    }

    async fn drop(&mut self, this: Resource<Connection>) -> wasmtime::Result<()> {
        // Dropping the host value returns (or rolls back, or closes) it.
        self.table.delete(this)?;
        Ok(())
    }
}

struct Database;
impl HasData for Database {
    type Data<'a> = DatabaseView<'a>;
}

/// Adds `spin:postgres/postgres@4.0.0` to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> DatabaseView<'_>,
) -> Result<()> {
    Ok(bindings::add_to_linker::<T, Database>(linker, view)?)
}

#[cfg(test)]
mod resolve_tests {
    use super::*;

    fn component(owner: &str) -> ComponentDatabases {
        ComponentDatabases {
            databases: Databases::new(DatabaseConfig::default()).expect("databases"),
            managed: HashMap::new(),
            allowed: Arc::new(AllowedHosts::parse(&["postgres://db.example.com:5432"]).unwrap()),
            egress: Arc::new(Egress::open()),
            owner: owner.into(),
        }
    }

    #[tokio::test]
    async fn pools_are_keyed_by_app_and_whole_address() {
        let acme = component("acme/shop");
        let right = "postgres://app:right@db.example.com:5432/data";
        let wrong = "postgres://app:wrong@db.example.com:5432/data";
        let (a, ..) = acme.resolve(right).await.expect("allowed");
        let (b, ..) = acme.resolve(wrong).await.expect("allowed");
        assert_ne!(a, b, "a wrong password would share the right one's pool");
        let (again, ..) = acme.resolve(right).await.expect("allowed");
        assert_eq!(a, again);
        let (other, ..) = component("evil/probe")
            .resolve(right)
            .await
            .expect("allowed");
        assert_ne!(a, other, "two apps would share sessions");
    }

    #[tokio::test]
    async fn addresses_naming_host_files_or_other_hosts_are_refused() {
        let acme = component("acme/shop");
        for address in [
            "postgres://app@db.example.com/data?sslkey=/etc/trellis/admin.key",
            "postgres://app@db.example.com/data?ssl%6Bey=/etc/trellis/admin.key",
            "postgres://app@db.example.com/data?sslcert=/etc/ssl/client.pem",
            "postgres://app@db.example.com/data?sslrootcert=/etc/passwd",
            "postgres://app@db.example.com/data?ssl-root-cert=/etc/passwd",
            "postgres://app@db.example.com/data?host=/var/run/postgresql",
            "postgres://app@db.example.com/data?hostaddr=127.0.0.1",
        ] {
            let refused = acme.resolve(address).await;
            assert!(
                matches!(&refused, Err(Error::ConnectionFailed(m)) if m.contains("may not set")),
                "{address}: {:?}",
                refused.map(|(key, ..)| key)
            );
        }
        assert!(
            acme.resolve("postgres://app@db.example.com/data?sslmode=require&application_name=x")
                .await
                .is_ok()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{PgConnectOptions, first_keyword, without_loopback_tls};
    use sqlx::postgres::PgSslMode;

    fn ssl_mode(url: &str) -> PgSslMode {
        let options: PgConnectOptions = url.parse().expect("URL");
        without_loopback_tls(url, options).get_ssl_mode()
    }

    #[test]
    fn loopback_servers_are_reached_without_tls_unless_the_url_says() {
        assert!(matches!(
            ssl_mode("postgres://u@127.0.0.1:5432/d"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            ssl_mode("postgres://u@localhost/d"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            ssl_mode("postgres://u@[::1]:5432/d"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            ssl_mode("postgres://u@127.0.0.1/d?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            ssl_mode("postgres://u@db.internal/d"),
            PgSslMode::Prefer
        ));
    }

    #[test]
    fn first_keywords() {
        assert_eq!(first_keyword("BEGIN"), "begin");
        assert_eq!(first_keyword("  start transaction"), "start");
        assert_eq!(first_keyword("/* sneaky */ Begin;"), "begin");
        assert_eq!(first_keyword("-- comment\n  COMMIT"), "commit");
        assert_eq!(first_keyword("select 1"), "select");
        assert_eq!(first_keyword("/* unterminated"), "");
    }
}
