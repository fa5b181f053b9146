//! The transactional outbox: events written in the same Postgres transaction
//! as the data they announce, and relayed to the broker by the host.
//!
//! A managed database declared with `outbox = true` gets a table
//! `_trellis_outbox` in a schema of the platform's beside its own (see
//! [`create`]: the tenant may write rows, never change the table, because
//! the host reads it as its admin); the component inserts a row in the
//! transaction that changes its data, so the event exists exactly when the
//! change does. The relay ([`run`]), on an admin connection, locks a batch
//! of rows (`FOR UPDATE SKIP LOCKED`, so replicas sharing the
//! database split the work), publishes them with confirms and deletes them in
//! the same transaction. One `LISTEN` connection per host ([`Wakeups`])
//! wakes the relays of the schema a notification names, and a relay holds a
//! connection of its own only while rows keep coming ([`IDLE_CONNECTION`]):
//! a thousand quiet outboxes cost one connection, not two thousand. A crash between commit
//! and publish leaves the rows in place; the relay drains them when it
//! starts. A row is never deleted before the broker confirmed it, so delivery
//! is at least once; consumers deduplicate on `message_id`, which the row
//! keeps across attempts.
//!
//! ## Waking the relay: `NOTIFY` only when it sleeps
//!
//! A transaction that sends `NOTIFY` takes a cluster-wide lock at commit and
//! holds it until its commit record is flushed, so notifying transactions
//! commit one at a time, across every database of the server (measured:
//! 600 against 2,300 outbox inserts a second). So a statement trigger
//! notifies only when no relay of the table is awake, with two advisory locks
//! keyed by the table's oid:
//!
//! - *awake* ([`AWAKE_LOCK`]): a relay holds it, exclusively, while it drains;
//!   the trigger tests it (taking and at once dropping a shared lock) and
//!   notifies only when it is free.
//! - *barrier* ([`BARRIER_LOCK`]): the trigger takes it, shared, *before*
//!   that test, and holds it until its transaction ends. A relay that lets go
//!   of *awake* must then take the barrier exclusively (without waiting) before
//!   it may sleep: success means every transaction that found it awake has
//!   ended, so one more drain covers their rows. Failure means some are still
//!   open: it drains again after [`COALESCE`] and retries, which under load is
//!   batching, and stops as soon as writes pause.
//!
//! A transaction that tests *awake* after the relay let go of it finds it
//! free and notifies; one that tested it earlier holds the barrier, which the
//! relay waits out. Either way its rows are drained without the sweep.
//!
//! ## The sweep: one host-wide backstop
//!
//! Every [`SWEEP_INTERVAL`], when a relay starts, and when the listener
//! (re)connects, [`Wakeups`] looks into the outboxes of its relays on one
//! short-lived admin connection (`SELECT EXISTS`, one per schema) and wakes
//! only those that hold rows. That covers a relay that died while awake (its
//! replicas learn of the rows it silenced only then), rows left by a crash,
//! and notifications lost with the listener. Relays never poll: before the
//! sweep was shared, each relay connected every 30 s and kept the connection
//! for seconds, and a thousand tenants' relays held more connections than
//! the server allows.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use anyhow::{Context as _, Result};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

use crate::broker::{Broker, Outgoing, PublishError};
use crate::capabilities::database::managed::{self, ManagedDatabase};
use crate::capabilities::messaging::{ComponentMessaging, check_routing_key};

/// The channel the outbox trigger notifies; the payload is the schema.
const CHANNEL: &str = "trellis_outbox";
/// Sweeps count an outbox's waiting rows up to this many.
const BACKLOG_COUNT_LIMIT: i64 = 10_000;

/// Rows published per transaction.
const BATCH: i64 = 256;
/// How long a notified relay waits for more commits before it drains.
const COALESCE: Duration = Duration::from_millis(10);
/// The relay's restart delay after a failure: first, and at most.
const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(5);
/// A sweep even without notifications, as a backstop.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// How long a relay keeps its connection after the last row it relayed.
const IDLE_CONNECTION: Duration = Duration::from_secs(5);
/// `application_name` of the relays' and the listener's connections, so an
/// operator (or a test) can tell them apart in `pg_stat_activity`.
pub const RELAY_APPLICATION: &str = "trellis outbox relay";
pub const LISTENER_APPLICATION: &str = "trellis outbox listener";
pub const SWEEP_APPLICATION: &str = "trellis outbox sweep";
/// First keys of the two advisory locks (the second key is the table's oid)
/// that tell writers whether a relay is awake; see the module's notes.
/// ("trlA", "trlB": unlike the single-key locks of migrations.)
pub const AWAKE_LOCK: i32 = 0x7472_6c41;
pub const BARRIER_LOCK: i32 = 0x7472_6c42;

/// Creates the outbox table and its notify trigger in `db`'s outbox schema,
/// as the admin (`admin`), and grants the component's role what it needs of
/// them; then moves the rows of an outbox an earlier version kept in the
/// component's own schema, as the role. Idempotent; serialised with
/// migrations by the same advisory lock.
///
/// The table is the platform's, not the tenant's: the sweep reads it with
/// the admin connection, and an object the tenant owned could run the
/// tenant's code there (a view calling its function, an index expression,
/// a rule). In a schema of the admin's, the role can insert, read, update
/// and delete rows, and nothing else: not drop, alter, replace, index,
/// trigger or police the table.
pub async fn create(admin: &PgConnectOptions, db: &ManagedDatabase) -> Result<()> {
    let schema = managed::quote_ident(&db.outbox_schema());
    let role = managed::quote_ident(&db.role);
    let ddl = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
         GRANT USAGE ON SCHEMA {schema} TO {role};
         CREATE TABLE IF NOT EXISTS {schema}._trellis_outbox (
             id bigserial PRIMARY KEY,
             routing_key text NOT NULL,
             body bytea NOT NULL,
             content_type text,
             message_id text NOT NULL DEFAULT gen_random_uuid()::text,
             correlation_id text,
             headers jsonb NOT NULL DEFAULT '{{}}'::jsonb,
             created_at timestamptz NOT NULL DEFAULT now(),
             -- Set by the relay when a row can never be published (a routing
             -- key the component may not use); such rows are kept, skipped.
             error text
         );
         REVOKE ALL ON {schema}._trellis_outbox FROM PUBLIC;
         GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}._trellis_outbox TO {role};
         GRANT USAGE, SELECT ON SEQUENCE {schema}._trellis_outbox_id_seq TO {role};
         -- Runs as its owner, the admin: tenants' roles may not take advisory
         -- locks themselves (a tenant could then hold another's barrier). It
         -- reads nothing of the writer's, and its search_path is fixed.
         CREATE OR REPLACE FUNCTION {schema}._trellis_outbox_notify() RETURNS trigger
             LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
             BEGIN
                 -- Until this transaction ends: a relay going to sleep waits it out.
                 PERFORM pg_advisory_xact_lock_shared({BARRIER_LOCK}, TG_RELID::int);
                 -- Free: no relay is draining this table, so wake one at commit.
                 IF pg_try_advisory_lock_shared({AWAKE_LOCK}, TG_RELID::int) THEN
                     PERFORM pg_advisory_unlock_shared({AWAKE_LOCK}, TG_RELID::int);
                     PERFORM pg_notify('trellis_outbox', TG_TABLE_SCHEMA);
                 END IF;
                 RETURN NULL;
             END $$;
         REVOKE ALL ON FUNCTION {schema}._trellis_outbox_notify() FROM PUBLIC;
         CREATE OR REPLACE TRIGGER _trellis_outbox_notify
             AFTER INSERT ON {schema}._trellis_outbox
             FOR EACH STATEMENT EXECUTE FUNCTION {schema}._trellis_outbox_notify();",
    );
    let mut conn = admin
        .connect()
        .await
        .context("connecting as admin to create the outbox")?;
    let mut tx = conn.begin().await?;
    managed::lock_schema(&mut tx, &db.schema).await?;
    // Only constants and quoted identifiers are formatted in.
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&mut *tx)
        .await
        .context("creating _trellis_outbox")?;
    tx.commit().await?;
    let _ = conn.close().await;
    move_legacy_rows(admin, db).await
}

/// Earlier versions kept `_trellis_outbox` in the component's own schema:
/// its rows move to the platform's table and it goes, as the role (it is
/// the role's to read and drop, whatever it has become).
async fn move_legacy_rows(admin: &PgConnectOptions, db: &ManagedDatabase) -> Result<()> {
    let own = format!("{}._trellis_outbox", managed::quote_ident(&db.schema));
    let lock = managed::SchemaLock::take(admin, &db.schema).await?;
    let moved = move_legacy_rows_locked(db, &own).await;
    lock.release().await;
    moved
}

async fn move_legacy_rows_locked(db: &ManagedDatabase, own: &str) -> Result<()> {
    let mut conn = db.connect("move the outbox").await?;
    let legacy: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = '_trellis_outbox' AND c.relkind = 'r')",
    )
    .bind(&db.schema)
    .fetch_one(&mut conn)
    .await?;
    if legacy {
        let outbox = managed::quote_ident(&db.outbox_schema());
        let mut tx = conn.begin().await?;
        let moved = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {outbox}._trellis_outbox \
                 (routing_key, body, content_type, message_id, correlation_id, headers, created_at, error) \
             SELECT routing_key, body, content_type, message_id, correlation_id, headers, created_at, error \
             FROM {own} ORDER BY id;
             DROP TABLE {own};
             DROP FUNCTION IF EXISTS {}._trellis_outbox_notify();",
            managed::quote_ident(&db.schema)
        )))
        .execute(&mut *tx)
        .await
        .context("moving the rows of the component's own _trellis_outbox")?;
        tx.commit().await?;
        tracing::info!(schema = %db.schema, rows = moved.rows_affected(), "moved the outbox into the platform's schema");
    }
    let _ = conn.close().await;
    Ok(())
}

/// One outbox to relay.
pub struct Outbox {
    pub component: String,
    /// The outbox's schema (the platform's, beside the component's own).
    pub schema: String,
    /// The admin connection to the database: the table is the platform's
    /// (nothing in it runs a tenant's code), and the relay takes the
    /// advisory locks tenants' roles may not.
    pub options: PgConnectOptions,
    /// Where rows go, and which routing keys the component may use.
    pub messaging: Arc<ComponentMessaging>,
    /// The component's role: the only one (besides the admin) whose
    /// notifications wake this relay.
    pub writer: String,
}

impl Outbox {
    /// The table, qualified and quoted.
    fn table(&self) -> String {
        format!("{}._trellis_outbox", managed::quote_ident(&self.schema))
    }
}

/// Relays `outbox` for as long as the app runs.
pub async fn run(outbox: Arc<Outbox>, broker: Arc<Broker>, wakeups: Arc<Wakeups>) {
    // Subscribed (and the shared listener listening) before the first
    // drain: a commit after this is either drained or notified. Subscribing
    // also has the outbox swept, which wakes this relay if rows are waiting.
    let wake = wakeups
        .subscribe(&outbox.schema, &outbox.writer, &outbox.messaging)
        .await;
    // While the database is away the relay retries ever less often (1 s
    // doubling to 5 s), so an outage does not flood the log, and resumes
    // within seconds of the database coming back.
    let mut backoff = RESTART_MIN;
    loop {
        let started = tokio::time::Instant::now();
        if let Err(err) = relay(&outbox, &broker, &wake).await {
            if started.elapsed() > RESTART_MAX * 2 {
                backoff = RESTART_MIN;
            }
            tracing::warn!(
                component = %outbox.component,
                schema = %outbox.schema,
                "outbox relay: {err:#}; restarting in {} s",
                backoff.as_secs()
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RESTART_MAX);
            // Rows may be waiting: look again at once.
            wake.notify_one();
        }
    }
}

async fn relay(outbox: &Outbox, broker: &Broker, wake: &Notify) -> Result<()> {
    let mut declared_on = None;
    loop {
        // Asleep, holding no connection, until a commit or the sweep.
        wake.notified().await;
        // Under load commits come in streams: let a few more land so one
        // batch carries them.
        tokio::time::sleep(COALESCE).await;
        let conn = outbox
            .options
            .clone()
            .application_name(RELAY_APPLICATION)
            .options([("search_path", "pg_catalog")])
            .connect()
            .await
            .context("connecting to the outbox's database")?;
        let mut relay = Relay {
            outbox,
            broker,
            table: 0,
            conn,
            declared_on,
        };
        relay.table = sqlx::query_scalar(
            "SELECT c.oid::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = '_trellis_outbox'",
        )
        .bind(&outbox.schema)
        .fetch_one(&mut relay.conn)
        .await
        .context("finding _trellis_outbox")?;
        // The connection stays for as long as rows keep coming.
        let mut last_rows = None;
        loop {
            // Awake: writers stay quiet while this relay drains. Another
            // relay may hold the lock; this one drains all the same.
            let awake = relay.try_lock(AWAKE_LOCK).await?;
            if relay.drain_all().await? > 0 {
                last_rows = Some(tokio::time::Instant::now());
            }
            if awake {
                relay.unlock(AWAKE_LOCK).await?;
            }
            if !relay.try_lock(BARRIER_LOCK).await? {
                // Writers that found this relay awake have not finished:
                // their rows are not visible yet, and they will not notify.
                tokio::time::sleep(COALESCE).await;
                continue;
            }
            relay.unlock(BARRIER_LOCK).await?;
            // Everyone who found the relay awake has committed or gone.
            if relay.drain_all().await? > 0 {
                last_rows = Some(tokio::time::Instant::now());
                continue;
            }
            // Woken for nothing (another replica was faster): let go now.
            let Some(last_rows) = last_rows else { break };
            // Otherwise keep the connection a while for the next commit. A
            // notification that came while draining may be for a commit the
            // drain did not see: it stays stored in `wake`, and at worst a
            // wake-up finds nothing.
            tokio::select! {
                () = wake.notified() => tokio::time::sleep(COALESCE).await,
                () = tokio::time::sleep_until(last_rows + IDLE_CONNECTION) => break,
            }
        }
        declared_on = relay.declared_on;
    }
}

/// One `LISTEN` connection for every outbox in a database: each notification
/// names a schema, and wakes that schema's relays.
pub struct Wakeups {
    options: PgConnectOptions,
    relays: std::sync::Mutex<HashMap<String, Vec<Weak<Notify>>>>,
    listening: watch::Sender<bool>,
    listener: OnceLock<tokio::task::JoinHandle<()>>,
    /// Outboxes to sweep before the next interval: new relays' schemas, or
    /// all of them after the listener reconnected.
    to_sweep: std::sync::Mutex<ToSweep>,
    sweep_now: Notify,
    sweeper: OnceLock<tokio::task::JoinHandle<()>>,
    /// Where each schema's backlog is reported, as sweeps count it.
    backlogs: std::sync::Mutex<HashMap<String, Arc<ComponentMessaging>>>,
    /// Each schema's writer role (see [`crate::notifiers`]): a notification
    /// naming the schema from anyone else is forged, and wakes nobody.
    writers: std::sync::Mutex<HashMap<String, String>>,
}

#[derive(Default)]
struct ToSweep {
    all: bool,
    schemas: std::collections::HashSet<String>,
}

impl Wakeups {
    /// Listens as `options` (the admin connection: `LISTEN` needs no
    /// privilege) once the first relay subscribes.
    pub fn new(options: PgConnectOptions) -> Arc<Self> {
        Arc::new(Self {
            options,
            relays: std::sync::Mutex::default(),
            listening: watch::channel(false).0,
            listener: OnceLock::new(),
            to_sweep: std::sync::Mutex::default(),
            sweep_now: Notify::new(),
            sweeper: OnceLock::new(),
            backlogs: std::sync::Mutex::default(),
            writers: std::sync::Mutex::default(),
        })
    }

    /// A relay of `schema` subscribes; returns once the listener listens.
    /// A notification for the schema stores a wake-up in the returned
    /// `Notify` even while its relay is busy.
    pub async fn subscribe(
        self: &Arc<Self>,
        schema: &str,
        writer: &str,
        messaging: &Arc<ComponentMessaging>,
    ) -> Arc<Notify> {
        let wake = Arc::new(Notify::new());
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(schema.to_owned(), writer.to_owned());
        self.backlogs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(schema.to_owned(), messaging.clone());
        self.relays_lock()
            .entry(schema.to_owned())
            .or_default()
            .push(Arc::downgrade(&wake));
        self.listener
            .get_or_init(|| tokio::spawn(self.clone().listen_forever()));
        self.sweeper
            .get_or_init(|| tokio::spawn(self.clone().sweep_forever()));
        let mut listening = self.listening.subscribe();
        let _ = listening.wait_for(|up| *up).await;
        self.request_sweep(Some(schema));
        wake
    }

    /// Has `schema`'s outbox (or, with `None`, every outbox) swept soon.
    fn request_sweep(&self, schema: Option<&str>) {
        {
            let mut to_sweep = self.to_sweep.lock().unwrap_or_else(|e| e.into_inner());
            match schema {
                Some(schema) => {
                    to_sweep.schemas.insert(schema.to_owned());
                }
                None => to_sweep.all = true,
            }
        }
        self.sweep_now.notify_one();
    }

    /// Sweeps what was asked for, and everything every [`SWEEP_INTERVAL`].
    async fn sweep_forever(self: Arc<Self>) {
        loop {
            if tokio::time::timeout(SWEEP_INTERVAL, self.sweep_now.notified())
                .await
                .is_err()
            {
                self.to_sweep.lock().unwrap_or_else(|e| e.into_inner()).all = true;
            }
            let asked =
                std::mem::take(&mut *self.to_sweep.lock().unwrap_or_else(|e| e.into_inner()));
            let schemas: Vec<String> = if asked.all {
                self.relays_lock().keys().cloned().collect()
            } else {
                asked.schemas.into_iter().collect()
            };
            if schemas.is_empty() {
                continue;
            }
            if let Err(err) = self.sweep(&schemas).await {
                // Tried again at the next interval (or request).
                tracing::warn!("outbox sweep: {err:#}");
            }
        }
    }

    /// Wakes the relays of those of `schemas` whose outbox holds rows to
    /// publish. An outbox the admin connection cannot read (no privilege, a
    /// table not there yet) wakes its relays too: they look for themselves.
    async fn sweep(&self, schemas: &[String]) -> Result<()> {
        let mut conn = self
            .options
            .clone()
            .application_name(SWEEP_APPLICATION)
            // Only the catalog's functions and operators, whatever anyone created.
            .options([("search_path", "pg_catalog")])
            .connect()
            .await
            .context("connecting to sweep the outboxes")?;
        for schema in schemas {
            // The platform's own table (see `create`): nothing in it is the tenant's.
            let quoted = managed::quote_ident(schema);
            // Counted up to a bound, so a huge backlog costs no more to sweep.
            let sql = format!(
                "SELECT pg_catalog.count(*) FROM (SELECT 1 FROM {quoted}._trellis_outbox \
                 WHERE error IS NULL LIMIT {BACKLOG_COUNT_LIMIT}) AS pending"
            );
            // The schema is quoted as an identifier.
            match sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut conn)
                .await
            {
                Ok(pending) => {
                    self.report_backlog(schema, pending);
                    if pending > 0 {
                        self.wake(schema);
                    }
                }
                Err(sqlx::Error::Database(err)) => {
                    tracing::debug!(%schema, "cannot sweep the outbox ({err}); waking its relays");
                    self.wake(schema);
                }
                Err(err) => return Err(err).context("sweeping the outboxes"),
            }
        }
        let _ = conn.close().await;
        Ok(())
    }

    fn report_backlog(&self, schema: &str, pending: i64) {
        let backlogs = self.backlogs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(messaging) = backlogs.get(schema) {
            messaging.metrics.outbox_backlog(&messaging.labels, pending);
        }
    }

    async fn listen_forever(self: Arc<Self>) {
        let mut backoff = RESTART_MIN;
        loop {
            match self.listen().await {
                Ok(()) => backoff = RESTART_MIN,
                Err(err) => {
                    tracing::warn!(
                        "outbox listener: {err:#}; retrying in {} s",
                        backoff.as_secs()
                    );
                }
            }
            self.listening.send_replace(false);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RESTART_MAX);
        }
    }

    async fn listen(&self) -> Result<()> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(self.options.clone().application_name(LISTENER_APPLICATION));
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        self.listening.send_replace(true);
        // Whatever was committed while nobody listened.
        self.request_sweep(None);
        let mut notifiers = crate::notifiers::Notifiers::default();
        let admin = self.options.get_username().to_owned();
        loop {
            match listener.try_recv().await? {
                Some(notification) => {
                    let schema = notification.payload();
                    let writer = self
                        .writers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(schema)
                        .cloned();
                    let Some(writer) = writer else { continue };
                    let pid = notification.process_id();
                    match notifiers.role_of(&mut listener, pid).await {
                        Some(role) if role != writer && role != admin => {
                            tracing::debug!(%schema, %role, pid, "forged outbox notification ignored");
                        }
                        _ => self.wake(schema),
                    }
                }
                // Reconnected: notifications may have been lost meanwhile.
                None => self.request_sweep(None),
            }
        }
    }

    fn wake(&self, schema: &str) {
        let mut relays = self.relays_lock();
        if let Some(waiting) = relays.get_mut(schema) {
            waiting.retain(|relay| match relay.upgrade() {
                Some(wake) => {
                    wake.notify_one();
                    true
                }
                None => false,
            });
        }
    }

    fn relays_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Weak<Notify>>>> {
        self.relays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get() {
            task.abort();
        }
        if let Some(task) = self.sweeper.get() {
            task.abort();
        }
    }
}

/// A relay's connection and what it knows of its table and broker session.
struct Relay<'a> {
    outbox: &'a Outbox,
    broker: &'a Broker,
    /// `_trellis_outbox`'s oid as an `int`, the advisory locks' second key.
    table: i32,
    conn: PgConnection,
    /// The broker session the topology was last declared on.
    declared_on: Option<u64>,
}

impl Relay<'_> {
    /// Takes one of the table's advisory locks (session-level, exclusive)
    /// if it is free.
    async fn try_lock(&mut self, key: i32) -> Result<bool> {
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(key)
            .bind(self.table)
            .fetch_one(&mut self.conn)
            .await
            .context("taking an outbox advisory lock")
    }

    async fn unlock(&mut self, key: i32) -> Result<()> {
        sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(key)
            .bind(self.table)
            .execute(&mut self.conn)
            .await
            .context("releasing an outbox advisory lock")?;
        Ok(())
    }

    /// Publishes everything committed so far; how many rows went out.
    async fn drain_all(&mut self) -> Result<usize> {
        let mut published = 0;
        loop {
            let generation = self.broker.session().map(|s| s.generation);
            if generation.is_some() && generation != self.declared_on {
                self.broker.redeclare().await;
                self.declared_on = generation;
            }
            match drain(&mut self.conn, self.outbox, self.broker).await? {
                Drained::More(n) => published += n,
                Drained::Empty(n) => {
                    let messaging = &self.outbox.messaging;
                    messaging.metrics.outbox_backlog(&messaging.labels, 0);
                    return Ok(published + n);
                }
                Drained::BrokerDown => {
                    let pending = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                        "SELECT count(*) FROM (SELECT 1 FROM {} \
                         WHERE error IS NULL LIMIT {BACKLOG_COUNT_LIMIT}) AS pending",
                        self.outbox.table()
                    )))
                    .fetch_one(&mut self.conn)
                    .await?;
                    let messaging = &self.outbox.messaging;
                    messaging.metrics.outbox_backlog(&messaging.labels, pending);
                    // Rows stay; publish again once connected, and not in a
                    // tight loop while the broker refuses or flaps.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = self.broker.sessions().wait_for(Option::is_some).await;
                }
            }
        }
    }
}

enum Drained {
    /// A full batch (this many rows) went out; there may be more.
    More(usize),
    /// The last rows went out (this many, maybe none).
    Empty(usize),
    BrokerDown,
}

type Row = (
    i64,
    String,
    Vec<u8>,
    Option<String>,
    String,
    Option<String>,
    sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
);

/// Publishes one batch and deletes what the broker confirmed, in one
/// transaction.
async fn drain(conn: &mut PgConnection, outbox: &Outbox, broker: &Broker) -> Result<Drained> {
    let table = outbox.table();
    let mut tx = conn.begin().await?;
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, routing_key, body, content_type, message_id, correlation_id, headers
         FROM {table} WHERE error IS NULL
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
    )))
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await
    .context("reading the outbox")?;
    if rows.is_empty() {
        // Ended now: a dropped transaction would stay open (`idle in
        // transaction`) until the connection's next use.
        tx.commit().await?;
        return Ok(Drained::Empty(0));
    }
    let full = rows.len() as i64 == BATCH;

    let mut refused = Vec::new();
    let mut messages = Vec::with_capacity(rows.len());
    for (id, routing_key, body, content_type, message_id, correlation_id, headers) in rows {
        let permitted = check_routing_key(&routing_key).and_then(|()| {
            if outbox.messaging.may_publish(&routing_key) {
                Ok(())
            } else {
                Err(format!(
                    "routing key `{routing_key}` is not covered by the component's `publish` patterns"
                ))
            }
        });
        if let Err(why) = permitted {
            tracing::error!(component = %outbox.component, id, %routing_key, "outbox row cannot be published: {why}");
            refused.push((id, why));
            continue;
        }
        let headers = headers
            .0
            .into_iter()
            .map(|(name, value)| match value {
                serde_json::Value::String(s) => (name, s),
                other => (name, other.to_string()),
            })
            .collect();
        messages.push((
            id,
            Outgoing {
                exchange: outbox.messaging.exchange.clone(),
                routing_key,
                body,
                content_type,
                message_id,
                correlation_id,
                headers,
                app_id: outbox.messaging.app.clone(),
            },
        ));
    }

    // Each message continues the trace of the request that wrote it.
    let spans: Vec<tracing::Span> = messages
        .iter_mut()
        .map(|(_, message)| {
            let span = crate::capabilities::messaging::publish_span(message);
            crate::telemetry::continue_from_pairs(&span, &message.headers);
            crate::telemetry::inject_pairs(&span, &mut message.headers);
            span
        })
        .collect();
    // Publish the batch pipelined on the one confirm channel.
    let results =
        futures::future::join_all(messages.iter().zip(&spans).map(|((_, message), span)| {
            tracing::Instrument::instrument(broker.publish(message), span.clone())
        }))
        .await;
    let mut sent = Vec::with_capacity(messages.len());
    let mut down = false;
    let mut rejected = false;
    for ((id, message), result) in messages.iter().zip(results) {
        match result {
            Ok(()) => sent.push(*id),
            Err(PublishError::Unavailable(why)) => {
                down = true;
                tracing::debug!(id, message_id = %message.message_id, "outbox publish failed: {why}");
            }
            Err(PublishError::Rejected) => {
                rejected = true;
                tracing::warn!(id, message_id = %message.message_id, "the broker refused an outbox message; will retry");
            }
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE id = ANY($1)"
    )))
    .bind(&sent)
    .execute(&mut *tx)
    .await?;
    for (id, why) in &refused {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET error = $2 WHERE id = $1"
        )))
        .bind(id)
        .bind(why)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await.context("committing the outbox batch")?;
    if !sent.is_empty() {
        tracing::debug!(component = %outbox.component, published = sent.len(), "outbox relayed");
        let messaging = &outbox.messaging;
        let via = crate::metrics::Via::Outbox;
        messaging
            .metrics
            .published(&messaging.labels, via, sent.len() as u64);
    }
    Ok(if down || rejected {
        Drained::BrokerDown
    } else if full || sent.len() < messages.len() {
        Drained::More(sent.len())
    } else {
        Drained::Empty(sent.len())
    })
}
