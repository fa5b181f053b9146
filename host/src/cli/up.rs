//! `trellis up`: load a manifest, compile (or load from cache) its
//! components, and serve until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::app::{App, Runtime};
use crate::capabilities::database::DatabaseConfig;
use crate::capabilities::outbound_http::resilience::CallPolicy;
use crate::config::{RuntimeConfig, default_cache_dir};

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub manifest: super::ManifestArg,
    /// Run `trellis build` first.
    #[arg(long, env = "TRELLIS_BUILD")]
    pub build: bool,
    /// Address to listen on; port 0 picks a free port (printed at start-up).
    #[arg(long, env = "TRELLIS_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Serve Prometheus metrics at `http://<addr>/metrics` (no token: bind
    /// it where only the scraper reaches); default: not served.
    #[arg(long, env = "TRELLIS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Host-wide defaults; a component's `[component.<id>.tool.trellis]` overrides them.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Linear memory limit per instance, in MiB.
    #[arg(long, env = "TRELLIS_MEMORY_LIMIT_MIB", default_value_t = 128)]
    pub memory_limit_mib: u64,
    /// Deadline per request (e.g. `30s`, `500ms`).
    #[arg(long, env = "TRELLIS_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Largest request body, in bytes.
    #[arg(long, env = "TRELLIS_MAX_REQUEST_BODY", default_value_t = 1 << 20)]
    pub max_request_body: u64,
    /// Instances alive at once, across all components (the pool size).
    #[arg(long, env = "TRELLIS_MAX_INSTANCES", default_value_t = 1000)]
    pub max_instances: u32,
    /// How long a request waits for a free instance before `503`.
    #[arg(long, env = "TRELLIS_QUEUE_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub queue_timeout: Duration,
    /// How long in-flight requests may finish after SIGINT/SIGTERM.
    #[arg(long, env = "TRELLIS_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Directory of the compiled-component cache.
    #[arg(long, env = "TRELLIS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every component at start-up, without the cache.
    #[arg(long, env = "TRELLIS_NO_CACHE")]
    pub no_cache: bool,
    /// Admin connection for managed databases (`postgres://trellis.internal/<name>`);
    /// the database is created if missing.
    #[arg(
        long,
        env = "TRELLIS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/trellis",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Secret from which managed roles' passwords derive (share it between
    /// replicas); default: derived from --database-url.
    #[arg(long, env = "TRELLIS_DATABASE_SECRET", hide_env_values = true)]
    pub database_secret: Option<String>,
    /// Deadline of one database statement.
    #[arg(long, env = "TRELLIS_STATEMENT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub statement_timeout: Duration,
    /// Most rows one query may return to a component.
    #[arg(long, env = "TRELLIS_MAX_ROWS", default_value_t = 10_000)]
    pub max_rows: usize,
    /// Most bytes of values one query may return to a component.
    #[arg(long, env = "TRELLIS_MAX_RESULT_BYTES", default_value_t = 16 << 20)]
    pub max_result_bytes: usize,
    /// Database connections open at once across all pools, idle ones
    /// included; at the cap the one idle longest is closed to make room.
    #[arg(long, env = "TRELLIS_MAX_DB_CONNECTIONS", default_value_t = 64)]
    pub max_db_connections: u32,
    /// Connections each pool (server, database, role) keeps open, idle included.
    #[arg(long, env = "TRELLIS_MAX_POOL_CONNECTIONS", default_value_t = 16)]
    pub max_pool_connections: u32,
    /// Connections one managed database's role may hold on the server, from
    /// every host together (its pools, migrations, cleanups).
    #[arg(long, env = "TRELLIS_ROLE_CONNECTION_LIMIT", default_value_t = 64)]
    pub role_connection_limit: u32,
    /// Temporary file space one session of a managed role may use (sorts and
    /// hashes spilled to disk), in KiB; -1 for no limit.
    #[arg(long, env = "TRELLIS_ROLE_TEMP_FILE_LIMIT_KB", default_value_t = 1 << 20, allow_hyphen_values = true)]
    pub role_temp_file_limit_kb: i64,
    /// Message broker for apps whose manifest sets no
    /// `[application.trigger.amqp] broker`.
    #[arg(
        long,
        env = "TRELLIS_AMQP_URL",
        default_value = crate::config::DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Deadline of one attempt of a component's call to another component
    /// or host (e.g. `2s`); default: the caller's own deadline.
    #[arg(long, env = "TRELLIS_CALL_TIMEOUT", value_parser = humantime::parse_duration)]
    pub call_timeout: Option<Duration>,
    /// Extra attempts of an idempotent call (GET, HEAD, OPTIONS, PUT,
    /// DELETE) after a failure, with exponential backoff and jitter.
    #[arg(long, env = "TRELLIS_CALL_RETRIES", default_value_t = 2)]
    pub call_retries: u32,
    /// Failures in a row that open a target's circuit (calls answered `503`
    /// at once); 0 turns breakers off.
    #[arg(long, env = "TRELLIS_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls before one probe goes through.
    #[arg(long, env = "TRELLIS_BREAKER_OPEN", default_value = "5s", value_parser = humantime::parse_duration)]
    pub breaker_open: Duration,
}

impl LimitArgs {
    pub fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            memory_limit_bytes: self.memory_limit_mib << 20,
            request_timeout: self.request_timeout,
            max_request_body_bytes: self.max_request_body,
            max_instances: self.max_instances,
            queue_timeout: self.queue_timeout,
            shutdown_timeout: self.shutdown_timeout,
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.clone().or_else(default_cache_dir)
            },
            database: DatabaseConfig {
                admin_url: self.database_url.clone(),
                role_secret: self.database_secret.clone(),
                statement_timeout: self.statement_timeout,
                max_rows: self.max_rows,
                max_result_bytes: self.max_result_bytes,
                max_connections: self.max_db_connections,
                max_pool_connections: self.max_pool_connections,
                role_connection_limit: self.role_connection_limit,
                role_temp_file_limit_kb: self.role_temp_file_limit_kb,
                ..DatabaseConfig::default()
            },
            amqp_url: self.amqp_url.clone(),
            calls: CallPolicy {
                timeout: self.call_timeout,
                retries: self.call_retries,
                breaker_failures: self.breaker_failures,
                breaker_open: self.breaker_open,
                ..CallPolicy::default()
            },
            ..RuntimeConfig::default()
        }
    }
}

impl UpArgs {
    pub async fn run(self) -> Result<()> {
        let manifest = self.manifest.load()?;
        if self.build {
            super::build::build(&manifest, &[]).await?;
        }
        let config = self.limits.runtime_config();
        let max_memory = manifest
            .components
            .values()
            .filter_map(|c| c.trellis.memory_limit_mib)
            .map(|mib| mib << 20)
            .fold(config.memory_limit_bytes, u64::max);
        let runtime = Runtime::new(config, max_memory)?;
        let app = App::load(runtime, &manifest, |name| std::env::var(name).ok())
            .await
            .with_context(|| format!("loading {}", manifest.path.display()))?;

        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("listening on {}", self.listen))?;
        let addr = listener.local_addr()?;
        // Before `Serving`, which scripts wait for.
        if let Some(metrics) = self.metrics_listen {
            let listener = tokio::net::TcpListener::bind(metrics)
                .await
                .with_context(|| format!("--metrics-listen {metrics}"))?;
            println!("Metrics http://{}/metrics", listener.local_addr()?);
            tokio::spawn(crate::metrics::serve(listener, app.runtime.clone()));
        }
        // Scripts and tests read this line to find the port.
        println!("Serving http://{addr}");
        println!("Available Routes:");
        for (route, component) in app.router.routes() {
            println!("  {component}: http://{addr}{route}");
        }
        // Consumers and outbox relays run for as long as the app is served;
        // on SIGINT/SIGTERM both HTTP and the consumers drain, each within
        // the shutdown timeout.
        let background = app.start_background();
        let limit = app.runtime.config.shutdown_timeout;
        let (signalled, mut stopping) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = signalled.send(true);
        });
        let mut http_stopping = stopping.clone();
        let http = crate::triggers::http::serve(listener, std::sync::Arc::new(app), async move {
            let _ = http_stopping.wait_for(|stop| *stop).await;
        });
        let consumers = async {
            let _ = stopping.wait_for(|stop| *stop).await;
            background.drain(limit).await;
        };
        let (served, ()) = tokio::join!(http, consumers);
        served
    }
}

/// Completes on SIGINT or SIGTERM.
pub(super) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
