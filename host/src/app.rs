//! What is built once: the process-wide [`Runtime`] (engine, linker, cache,
//! instance slots) and, per loaded manifest, an [`App`] of pre-instantiated
//! components and its router. Requests only read these.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::allowed_hosts::AllowedHosts;
use crate::cache::ComponentCache;
use crate::capabilities::database::{self, ComponentDatabases, Databases};
use crate::capabilities::outbound_http::{HttpClient, InternalDispatch};
use crate::capabilities::variables::{AppVariables, ComponentVariables};
use crate::config::RuntimeConfig;
use crate::engine::{self, EpochTicker};
use crate::manifest::{self, AppManifest};
use crate::routing::Router;
use crate::store::{self, RequestState};

/// Process-wide machinery shared by every app the process runs.
pub struct Runtime {
    pub engine: Engine,
    pub config: RuntimeConfig,
    /// The largest linear memory the pool has room for.
    pub max_memory_bytes: u64,
    pub(crate) linker: Linker<RequestState>,
    cache: ComponentCache,
    /// One permit per live instance: the pooling allocator's capacity.
    pub(crate) slots: Arc<Semaphore>,
    /// Database pools shared by every app.
    pub databases: Arc<Databases>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// `max_memory_bytes`: the largest memory limit any component will have.
    pub fn new(config: RuntimeConfig, max_memory_bytes: u64) -> Result<Arc<Self>> {
        let max_memory_bytes = max_memory_bytes.max(config.memory_limit_bytes);
        let engine = engine::build(&config, max_memory_bytes)?;
        let linker = store::linker(&engine)?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)?;
        let databases = Databases::new(config.database.clone())?;
        Ok(Arc::new(Self {
            databases,
            linker,
            cache: ComponentCache::new(config.cache_dir.clone()),
            slots: Arc::new(Semaphore::new(config.max_instances as usize)),
            engine,
            config,
            max_memory_bytes,
            _ticker: ticker,
        }))
    }
}

/// One component, ready to serve: compiled, linked, its settings resolved.
pub struct AppComponent {
    pub id: Arc<str>,
    pub(crate) pre: Option<ProxyPre<RequestState>>,
    pub(crate) variables: ComponentVariables,
    pub(crate) environment: Vec<(String, String)>,
    pub(crate) files: Vec<Mount>,
    pub(crate) allowed_hosts: Arc<AllowedHosts>,
    pub(crate) databases: Arc<ComponentDatabases>,
    pub(crate) memory_limit: usize,
    pub timeout: Duration,
    pub max_request_body: u64,
    /// Per-component cap on concurrent instances, if the manifest sets one.
    pub(crate) concurrency: Option<Arc<Semaphore>>,
}

/// A directory made visible to the guest, read-only.
pub(crate) struct Mount {
    pub host_path: PathBuf,
    pub guest_path: String,
}

/// A loaded application.
pub struct App {
    pub name: String,
    pub runtime: Arc<Runtime>,
    pub router: Router,
    pub components: HashMap<String, Arc<AppComponent>>,
    pub(crate) http_client: HttpClient,
    /// Whether the host answers `/health` and `/health/ready` itself (the app
    /// does not route them, other than through a catch-all).
    pub serves_health: bool,
    /// Whether any component has a managed database (a readiness dependency).
    pub uses_database: bool,
    /// Service chaining back into this app; built once, cloned per request.
    dispatch: Arc<dyn InternalDispatch>,
}

impl App {
    /// Compiles (or loads from the cache) and pre-instantiates every
    /// component. `env` supplies `SPIN_VARIABLE_*` values.
    pub async fn load(
        runtime: Arc<Runtime>,
        manifest: &AppManifest,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Arc<App>> {
        let variables = AppVariables::resolve(manifest, &env)?;
        let router = Router::build(&manifest.application.http_base, manifest.http_routes())?;
        let serves_health = ["/health", "/health/ready"]
            .iter()
            .all(|path| router.route(path).is_none_or(|m| m.raw_route() == "/..."));

        let uses_database = manifest
            .components
            .values()
            .any(|c| !c.trellis.databases.is_empty());
        if uses_database {
            database::managed::ensure_database(&runtime.databases.admin)
                .await
                .context("preparing the database for managed databases (--database-url)")?;
        }
        let mut components = HashMap::new();
        for component in manifest.components.values() {
            let loaded = load_component(&runtime, manifest, component, &variables)
                .await
                .with_context(|| format!("component `{}`", component.id))?;
            components.insert(component.id.clone(), Arc::new(loaded));
        }
        for trigger in &manifest.http_triggers {
            if components
                .get(&trigger.component)
                .is_some_and(|c| c.pre.is_none())
            {
                bail!(
                    "component `{}` is routed by an HTTP trigger but does not export wasi:http/incoming-handler@0.2",
                    trigger.component
                );
            }
        }

        let http_client = HttpClient::new()?;
        Ok(Arc::new_cyclic(|this| App {
            name: manifest.application.name.clone(),
            runtime,
            router,
            components,
            http_client,
            serves_health,
            uses_database,
            dispatch: Arc::new(crate::triggers::http::Chaining(this.clone())),
        }))
    }

    /// The in-process dispatcher handed to guests' outbound HTTP. Weak, so a
    /// request still running after the app was replaced does not keep it alive.
    pub(crate) fn dispatcher(&self) -> Arc<dyn InternalDispatch> {
        self.dispatch.clone()
    }

    pub fn component(&self, id: &str) -> Option<&Arc<AppComponent>> {
        self.components.get(id)
    }

    /// The deadline of a request to `component` starting now.
    pub fn deadline(&self, component: &AppComponent) -> Instant {
        Instant::now() + component.timeout
    }
}

async fn load_component(
    runtime: &Arc<Runtime>,
    manifest: &AppManifest,
    component: &manifest::Component,
    variables: &AppVariables,
) -> Result<AppComponent> {
    let config = &runtime.config;
    let settings = &component.trellis;
    let memory_limit = settings
        .memory_limit_mib
        .map_or(config.memory_limit_bytes, |mib| mib << 20);
    let pool_max = runtime.max_memory_bytes;
    if memory_limit > pool_max {
        bail!(
            "memory_limit_mib = {} exceeds what this host allows ({} MiB)",
            memory_limit >> 20,
            pool_max >> 20
        );
    }

    let allowed = component
        .allowed_outbound_hosts
        .iter()
        .map(|entry| {
            manifest::expand_template(entry, |name| variables.get(name).map(str::to_owned))
                .map_err(|err| anyhow::anyhow!("allowed_outbound_hosts entry `{entry}`: {err}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let allowed_hosts = Arc::new(AllowedHosts::parse(&allowed)?);
    let databases = Arc::new(ComponentDatabases {
        databases: runtime.databases.clone(),
        managed: provision_databases(runtime, manifest, component).await?,
        allowed: allowed_hosts.clone(),
    });

    let mut files = Vec::new();
    for mount in &component.files {
        if !mount.source.is_dir() {
            bail!(
                "files: `{}` is not a directory (trellis mounts directories read-only)",
                mount.source.display()
            );
        }
        files.push(Mount {
            host_path: mount.source.clone(),
            guest_path: mount.destination.clone(),
        });
    }

    let source = component.source.clone();
    let wasm = tokio::fs::read(&source)
        .await
        .with_context(|| format!("reading {}", source.display()))?;
    let started = Instant::now();
    let engine = runtime.engine.clone();
    let cache = runtime.cache.clone();
    let (compiled, origin) = tokio::task::spawn_blocking(move || cache.load(&engine, &wasm))
        .await
        .context("compilation task failed")?
        .with_context(|| format!("compiling {}", source.display()))?;
    tracing::info!(
        component = %component.id,
        origin = %origin.as_str(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "component ready"
    );

    let instance_pre = runtime.linker.instantiate_pre(&compiled).map_err(|err| {
        anyhow::anyhow!(
            "{err:#}; trellis provides WASI 0.2 (cli, clocks, random, filesystem, sockets, http) and fermyon:spin/variables"
        )
    })?;
    let pre = ProxyPre::new(instance_pre).ok();

    Ok(AppComponent {
        id: component.id.as_str().into(),
        pre,
        variables: variables.component(component)?,
        environment: component
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        files,
        allowed_hosts,
        databases,
        memory_limit: usize::try_from(memory_limit).context("memory limit too large")?,
        timeout: settings
            .timeout_ms
            .map_or(config.request_timeout, Duration::from_millis),
        max_request_body: settings
            .max_request_body_bytes
            .unwrap_or(config.max_request_body_bytes),
        concurrency: settings
            .max_concurrency
            .map(|n| Arc::new(Semaphore::new(n))),
    })
}

/// Provisions the component's managed databases and applies their migrations.
async fn provision_databases(
    runtime: &Runtime,
    manifest: &AppManifest,
    component: &manifest::Component,
) -> Result<HashMap<String, sqlx::postgres::PgConnectOptions>> {
    let databases = &runtime.databases;
    let mut managed = HashMap::new();
    for (name, settings) in &component.trellis.databases {
        let ident = database::managed::identifier(&manifest.application.name, &component.id, name);
        let db = database::managed::provision(
            &databases.admin,
            databases.role_secret(),
            &ident,
            databases.config.statement_timeout.as_millis(),
        )
        .await
        .with_context(|| format!("provisioning managed database `{name}`"))?;
        if let Some(dir) = &settings.migrations {
            let migrations = database::managed::read_migrations(dir)?;
            let applied = database::managed::migrate(&db, &migrations)
                .await
                .with_context(|| format!("migrating managed database `{name}`"))?;
            tracing::info!(
                component = %component.id,
                database = %name,
                schema = %ident,
                applied,
                total = migrations.len(),
                "migrations up to date"
            );
        }
        managed.insert(name.clone(), db.options);
    }
    Ok(managed)
}
