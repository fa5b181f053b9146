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
use crate::broker::topology::QueueSpec;
use crate::broker::{Broker, Brokers};
use crate::cache::{ComponentCache, Origin};
use crate::capabilities::database::{self, ComponentDatabases, Databases};
use crate::capabilities::messaging::ComponentMessaging;
use crate::capabilities::messaging::bindings::AmqpHandlerPre;
use crate::capabilities::outbound_http::{HttpClient, InternalDispatch};
use crate::capabilities::variables::{AppVariables, ComponentVariables};
use crate::config::RuntimeConfig;
use crate::engine::{self, EpochTicker};
use crate::manifest::{self, AppManifest};
use crate::outbox::Outbox;
use crate::routing::Router;
use crate::store::{self, RequestState};
use crate::triggers::amqp::AmqpConsumer;

/// `[[trigger.amqp]]` defaults when neither the trigger nor
/// `[application.trigger.amqp]` sets them.
const DEFAULT_PREFETCH: u16 = 16;
const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Process-wide machinery shared by every app the process runs.
pub struct Runtime {
    pub engine: Engine,
    pub config: RuntimeConfig,
    /// The largest linear memory the pool has room for.
    pub max_memory_bytes: u64,
    pub(crate) linker: Linker<RequestState>,
    cache: ComponentCache,
    /// Every component compiled so far, by the SHA-256 of its bytes: the
    /// same bytes deployed by many tenants (or again, on rollback) are
    /// compiled once and their code shared.
    compiled: std::sync::Mutex<HashMap<[u8; 32], Arc<Compiled>>>,
    /// One permit per live instance: the pooling allocator's capacity.
    pub(crate) slots: Arc<Semaphore>,
    /// Database pools shared by every app.
    pub databases: Arc<Databases>,
    /// Broker connections shared by every app, one per address.
    pub brokers: Brokers,
    /// The one listener that wakes every outbox relay.
    pub(crate) outbox_wakeups: Arc<crate::outbox::Wakeups>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where components' connections may go.
    pub egress: Arc<crate::egress::Egress>,
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
        let outbox_wakeups = crate::outbox::Wakeups::new(databases.admin.clone());
        let egress = Arc::new(crate::egress::Egress::of(&config, &databases.admin));
        Ok(Arc::new(Self {
            egress,
            outbox_wakeups,
            metrics: Arc::default(),
            databases,
            brokers: Brokers::default(),
            linker,
            cache: ComponentCache::new(config.cache_dir.clone()),
            compiled: std::sync::Mutex::default(),
            slots: Arc::new(Semaphore::new(config.max_instances as usize)),
            engine,
            config,
            max_memory_bytes,
            _ticker: ticker,
        }))
    }
}

/// Whose app an [`App`] is. `trellis up` runs one app that belongs to nobody;
/// `trellis serve` runs tenants' apps, and everything an app owns outside
/// the process (managed schemas and roles, exchanges, queues) is then named
/// after its tenant, so two tenants deploying the same manifest never share
/// any of it.
#[derive(Debug, Clone, Default)]
pub struct Owner {
    pub tenant: Option<String>,
    /// The tenant's limits on memory and deadlines (applied when the app is
    /// built) ...
    pub limits: crate::platform::quota::TenantLimits,
    /// ... and the state that enforces its concurrency and request rate,
    /// shared by all its apps.
    pub quota: Option<Arc<crate::platform::quota::Quota>>,
    /// Where what its apps own outside the process is recorded before it is
    /// made (`trellis serve`).
    pub ledger: Option<Arc<dyn crate::tenancy::Ledger>>,
}

impl Owner {
    pub fn tenant(name: &str) -> Self {
        Self {
            tenant: Some(name.to_owned()),
            ..Self::default()
        }
    }

    /// The schema (and role prefix) of a managed database.
    pub fn database_identifier(&self, app: &str, component: &str, name: &str) -> String {
        match &self.tenant {
            None => database::managed::identifier(app, component, name),
            Some(tenant) => database::managed::tenant_identifier(tenant, app, component, name),
        }
    }

    /// An exchange or queue name as the broker knows it: `<tenant>.<name>`.
    pub fn broker_name(&self, name: &str) -> String {
        match &self.tenant {
            None => name.to_owned(),
            Some(tenant) => format!("{tenant}.{name}"),
        }
    }
}

/// One component, ready to serve: compiled, linked, its settings resolved.
#[derive(Clone)]
pub struct AppComponent {
    pub id: Arc<str>,
    pub(crate) pre: Option<ProxyPre<RequestState>>,
    /// Its `trellis:messaging/handler` export, if it has one.
    pub(crate) handler: Option<AmqpHandlerPre<RequestState>>,
    pub(crate) messaging: Arc<ComponentMessaging>,
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
    /// Its tenant, app and id, as metrics label them.
    pub(crate) labels: crate::metrics::ComponentLabels,
    /// How much of its stdout and stderr reaches the log.
    pub(crate) output: Arc<crate::capabilities::guest_output::OutputBudget>,
}

/// A directory made visible to the guest, read-only.
#[derive(Clone)]
pub(crate) struct Mount {
    pub host_path: PathBuf,
    pub guest_path: String,
}

/// The host's call policy with the app's per-target settings applied.
fn call_policies(
    default: &crate::capabilities::outbound_http::resilience::CallPolicy,
    manifest: &AppManifest,
) -> crate::capabilities::outbound_http::resilience::Calls {
    let targets = manifest
        .application
        .trellis
        .calls
        .iter()
        .map(|(target, settings)| {
            let mut policy = *default;
            if let Some(ms) = settings.timeout_ms {
                policy.timeout = Some(Duration::from_millis(ms));
            }
            policy.retries = settings.retries.unwrap_or(policy.retries);
            policy.breaker_failures = settings.breaker_failures.unwrap_or(policy.breaker_failures);
            if let Some(ms) = settings.breaker_open_ms {
                policy.breaker_open = Duration::from_millis(ms);
            }
            (target.clone(), policy)
        })
        .collect();
    crate::capabilities::outbound_http::resilience::Calls::new(*default, targets)
}

/// A loaded application.
pub struct App {
    pub name: String,
    pub owner: Owner,
    pub runtime: Arc<Runtime>,
    pub router: Router,
    pub components: HashMap<String, Arc<AppComponent>>,
    pub(crate) http_client: HttpClient,
    /// Whether the host answers `/health` and `/health/ready` itself (the app
    /// does not route them, other than through a catch-all).
    pub serves_health: bool,
    /// Whether any component has a managed database (a readiness dependency).
    pub uses_database: bool,
    /// The app's broker, if it uses messaging at all (a readiness dependency).
    pub broker: Option<Arc<Broker>>,
    pub consumers: Vec<Arc<AmqpConsumer>>,
    pub outboxes: Vec<Arc<Outbox>>,
    /// Auth and CORS, as `[application.tool.trellis]` configures them.
    pub gateway: Arc<crate::gateway::Gateway>,
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
        Self::load_owned(runtime, manifest, Owner::default(), env).await
    }

    /// [`App::load`] for `owner`.
    pub async fn load_owned(
        runtime: Arc<Runtime>,
        manifest: &AppManifest,
        owner: Owner,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Arc<App>> {
        let variables = AppVariables::resolve(manifest, &env)?;
        // Everything that can be checked without touching a database or the
        // broker is checked first, so a bad app changes nothing.
        let mut prepared = HashMap::new();
        for component in manifest.components.values() {
            let linked = prepare(&runtime, component)
                .await
                .with_context(|| format!("component `{}`", component.id))?;
            prepared.insert(component.id.clone(), linked);
        }
        check_exports(manifest, &prepared)?;
        let gateway = Arc::new(crate::gateway::Gateway::load(manifest, &variables)?);
        if owner.tenant.is_some() {
            check_tenant_policy(&runtime, manifest, &variables)?;
        }

        let mut plans = HashMap::new();
        for component in manifest.components.values() {
            let plan = plan_component(&runtime, manifest, &owner, component, &variables)
                .with_context(|| format!("component `{}`", component.id))?;
            plans.insert(component.id.clone(), plan);
        }
        let router = Router::build(&manifest.application.http_base, manifest.http_routes())?;
        // Recorded before anything is made, so whatever this load leaves
        // behind, however it ends, can be found and removed.
        if let Some(ledger) = &owner.ledger {
            for resource in resources(manifest, &owner) {
                ledger
                    .record(&manifest.application.name, &resource)
                    .await
                    .context("recording what the app owns")?;
            }
        }
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
        let defaults = manifest
            .application
            .amqp_defaults
            .clone()
            .unwrap_or_default();
        let uses_messaging = !manifest.amqp_triggers.is_empty()
            || manifest.components.values().any(|c| {
                !c.trellis.publish.is_empty() || c.trellis.databases.values().any(|d| d.outbox)
            });
        let broker = if uses_messaging {
            let url = match &defaults.broker {
                Some(template) => manifest::expand_template(template, |name| {
                    variables.get(name).map(str::to_owned)
                })
                .map_err(|err| anyhow::anyhow!("[application.trigger.amqp] broker: {err}"))?,
                None => runtime.config.amqp_url.clone(),
            };
            Some(runtime.brokers.get(&url))
        } else {
            None
        };
        let (exchange, consumers) = amqp_plan(manifest, &owner);
        let mut components = HashMap::new();
        let mut outboxes = Vec::new();
        for component in manifest.components.values() {
            let messaging = Arc::new(ComponentMessaging {
                broker: broker.clone(),
                exchange: exchange.clone(),
                app: manifest.application.name.clone(),
                publish: component.trellis.publish.clone(),
                metrics: runtime.metrics.clone(),
                labels: crate::metrics::ComponentLabels {
                    tenant: owner.tenant.clone().unwrap_or_default(),
                    app: manifest.application.name.clone(),
                    component: component.id.clone(),
                },
            });
            let linked = prepared
                .remove(&component.id)
                .context("component prepared twice")?;
            let plan = plans
                .remove(&component.id)
                .context("component planned twice")?;
            let (loaded, outbox) = load_component(
                &runtime, manifest, &owner, component, linked, plan, messaging,
            )
            .await
            .with_context(|| format!("component `{}`", component.id))?;
            outboxes.extend(outbox.into_iter().map(Arc::new));
            components.insert(component.id.clone(), Arc::new(loaded));
        }
        if let Some(broker) = &broker {
            let specs: Vec<QueueSpec> = consumers.iter().map(|c| c.spec.clone()).collect();
            broker.declare(&specs).await;
        }

        let calls = call_policies(&runtime.config.calls, manifest).with_metrics(
            runtime.metrics.clone(),
            crate::metrics::ComponentLabels {
                tenant: owner.tenant.clone().unwrap_or_default(),
                app: manifest.application.name.clone(),
                component: String::new(),
            },
        );
        let http_client = HttpClient::new(calls, runtime.egress.clone())?;
        Ok(Arc::new_cyclic(|this| App {
            name: manifest.application.name.clone(),
            owner,
            runtime,
            router,
            components,
            http_client,
            serves_health,
            uses_database,
            broker,
            consumers,
            outboxes,
            gateway,
            dispatch: Arc::new(crate::triggers::http::Chaining(this.clone())),
        }))
    }

    /// This app with the code of some components replaced and everything
    /// else kept: settings, managed databases, routes, consumers, relays.
    /// What a deployment that changes only components' bytes needs: nothing
    /// is provisioned or declared again.
    pub fn with_code(self: &Arc<Self>, changed: HashMap<String, Linked>) -> Result<Arc<App>> {
        let mut components = self.components.clone();
        for (id, linked) in changed {
            let old = components
                .get(&id)
                .with_context(|| format!("the app has no component `{id}`"))?;
            let mut new = AppComponent::clone(old);
            new.pre = linked.pre;
            new.handler = linked.handler;
            components.insert(id, Arc::new(new));
        }
        Ok(Arc::new_cyclic(|this| App {
            name: self.name.clone(),
            owner: self.owner.clone(),
            runtime: self.runtime.clone(),
            router: self.router.clone(),
            components,
            http_client: self.http_client.clone(),
            serves_health: self.serves_health,
            uses_database: self.uses_database,
            broker: self.broker.clone(),
            consumers: self.consumers.clone(),
            outboxes: self.outboxes.clone(),
            gateway: self.gateway.clone(),
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

    /// Starts the app's AMQP consumers and outbox relays. They run until
    /// [`Background::drain`], or until the value is dropped.
    pub fn start_background(self: &Arc<Self>) -> Background {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let mut consumers = Vec::new();
        let mut relays = Vec::new();
        if let Some(broker) = &self.broker {
            for consumer in &self.consumers {
                consumers.push(tokio::spawn(crate::triggers::amqp::run(
                    self.clone(),
                    consumer.clone(),
                    broker.clone(),
                    stopping.clone(),
                )));
            }
            for outbox in &self.outboxes {
                relays.push(tokio::spawn(crate::outbox::run(
                    outbox.clone(),
                    broker.clone(),
                    self.runtime.outbox_wakeups.clone(),
                )));
            }
        }
        Background {
            stop,
            consumers,
            relays,
        }
    }

    /// The deadline of a request to `component` starting now.
    pub fn deadline(&self, component: &AppComponent) -> Instant {
        Instant::now() + component.timeout
    }
}

/// An app's background tasks: consumers and outbox relays. Aborted on drop;
/// [`Background::drain`] stops them gracefully.
pub struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
    relays: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    /// Tells every consumer to stop taking deliveries (it cancels its
    /// subscription, so the broker sends no more) and waits, at most `limit`,
    /// for the deliveries in hand to be handled and settled. Whatever is
    /// still unsettled then is redelivered by the broker once the connection
    /// closes. Relays stop at once: a batch cut short is published again.
    pub async fn drain(mut self, limit: Duration) {
        let _ = self.stop.send(true);
        let consumers = std::mem::take(&mut self.consumers);
        let pending = consumers.len();
        let mut all = futures::future::join_all(consumers);
        if tokio::time::timeout(limit, &mut all).await.is_err() {
            tracing::warn!(
                consumers = pending,
                "deliveries still in progress after {} s; the broker will redeliver them",
                limit.as_secs_f32()
            );
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in self.consumers.iter().chain(&self.relays) {
            task.abort();
        }
    }
}

/// The exchange an app publishes to and its consumers, with every name as
/// the broker knows it (prefixed with the tenant's, for a tenant's app).
pub fn amqp_plan(manifest: &AppManifest, owner: &Owner) -> (String, Vec<Arc<AmqpConsumer>>) {
    let defaults = manifest
        .application
        .amqp_defaults
        .clone()
        .unwrap_or_default();
    let exchange = owner.broker_name(
        defaults
            .exchange
            .as_deref()
            .unwrap_or(&manifest.application.name),
    );
    let consumers = manifest
        .amqp_triggers
        .iter()
        .map(|trigger| {
            Arc::new(AmqpConsumer {
                component: trigger.component.clone(),
                prefetch: trigger
                    .prefetch
                    .or(defaults.prefetch)
                    .unwrap_or(DEFAULT_PREFETCH),
                spec: QueueSpec {
                    queue: owner.broker_name(&trigger.queue),
                    exchange: trigger
                        .exchange
                        .as_deref()
                        .map_or_else(|| exchange.clone(), |e| owner.broker_name(e)),
                    binding_keys: trigger.binding_keys.clone(),
                    max_attempts: trigger
                        .max_attempts
                        .or(defaults.max_attempts)
                        .unwrap_or(DEFAULT_MAX_ATTEMPTS),
                    retry_delay: trigger
                        .retry_delay_ms
                        .or(defaults.retry_delay_ms)
                        .map_or(DEFAULT_RETRY_DELAY, Duration::from_millis),
                },
            })
        })
        .collect();
    (exchange, consumers)
}

/// A component's `allowed_outbound_hosts`, templates expanded.
fn allowed_hosts(
    component: &manifest::Component,
    variables: &AppVariables,
) -> Result<AllowedHosts> {
    let allowed = component
        .allowed_outbound_hosts
        .iter()
        .map(|entry| {
            manifest::expand_template(entry, |name| variables.get(name).map(str::to_owned))
                .map_err(|err| anyhow::anyhow!("allowed_outbound_hosts entry `{entry}`: {err}"))
        })
        .collect::<Result<Vec<_>>>()?;
    AllowedHosts::parse(&allowed)
}

/// What a tenant's app may not do, checked before anything is provisioned:
/// use a broker of its own choosing (the platform's broker, with the
/// tenant's prefix, is the only one), or reach the platform's own database
/// server other than through its managed databases (with the server's
/// credentials, or trust authentication, that would be every tenant's data).
fn check_tenant_policy(
    runtime: &Runtime,
    manifest: &AppManifest,
    variables: &AppVariables,
) -> Result<()> {
    if manifest
        .application
        .amqp_defaults
        .as_ref()
        .is_some_and(|d| d.broker.is_some())
    {
        bail!(
            "[application.trigger.amqp] broker: a tenant's app uses the platform's broker; remove `broker`"
        );
    }
    let admin = &runtime.databases.admin;
    let port = admin.get_port();
    let server = admin.get_host();
    // A socket path or a loopback name: the server answers on loopback.
    let mut names = vec![server.to_owned()];
    if server.starts_with('/') || ["localhost", "127.0.0.1", "::1"].contains(&server) {
        names.extend(["localhost", "127.0.0.1", "::1"].map(str::to_owned));
    }
    for component in manifest.components.values() {
        let allowed = allowed_hosts(component, variables)
            .with_context(|| format!("component `{}`", component.id))?;
        if let Some(name) = names
            .iter()
            .find(|name| allowed.allows("postgres", name, Some(port)))
        {
            bail!(
                "component `{}`: allowed_outbound_hosts lets it reach the platform's database server ({name}:{port}); a tenant's component uses managed databases (postgres://trellis.internal/<name>)",
                component.id
            );
        }
    }
    Ok(())
}

/// A component compiled and linked against the host's interfaces, with the
/// entry points it exports.
pub struct Linked {
    pre: Option<ProxyPre<RequestState>>,
    handler: Option<AmqpHandlerPre<RequestState>>,
}

/// Compiles `component` (or takes it from the cache) and links it: fails,
/// naming the import, when it needs an interface the host does not provide.
pub async fn prepare(runtime: &Arc<Runtime>, component: &manifest::Component) -> Result<Linked> {
    let source = component.source.clone();
    let wasm = tokio::fs::read(&source)
        .await
        .with_context(|| format!("reading {}", source.display()))?;
    let compiled = runtime
        .compile(wasm, &component.id)
        .await
        .with_context(|| format!("compiling {}", source.display()))?;
    link(runtime, &compiled)
}

impl Runtime {
    /// The compiled form of `wasm`: shared if these bytes were compiled
    /// before, else from the on-disk cache or compiled now, off the async
    /// threads.
    pub async fn compile(
        self: &Arc<Self>,
        wasm: Vec<u8>,
        label: &str,
    ) -> Result<wasmtime::component::Component> {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(&wasm).into();
        let started = Instant::now();
        // One compilation per digest, however many deployments ask at once:
        // the others wait for it.
        let cell = self.compiled_lock().entry(digest).or_default().clone();
        let mut origin = Origin::Shared;
        let compiled = cell
            .get_or_try_init(|| async {
                let engine = self.engine.clone();
                let cache = self.cache.clone();
                let (compiled, loaded) =
                    tokio::task::spawn_blocking(move || cache.load(&engine, &wasm))
                        .await
                        .context("compilation task failed")??;
                origin = loaded;
                anyhow::Ok(compiled)
            })
            .await?
            .clone();
        tracing::info!(
            component = %label,
            origin = %origin.as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "component ready"
        );
        Ok(compiled)
    }

    fn compiled_lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<Compiled>>> {
        // A panic while holding it cannot leave the map half-written.
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A component compiled once per process, or being compiled.
type Compiled = tokio::sync::OnceCell<wasmtime::component::Component>;

/// Links a compiled component: its imports must all be ones the host provides.
pub fn link(runtime: &Runtime, compiled: &wasmtime::component::Component) -> Result<Linked> {
    let instance_pre = runtime.linker.instantiate_pre(compiled).map_err(|err| {
        anyhow::anyhow!(
            "{err:#}; trellis provides WASI 0.2 (cli, clocks, random, filesystem, sockets, http), fermyon:spin/variables, spin:postgres/postgres@4.0.0 and trellis:messaging/publisher@0.1.0"
        )
    })?;
    Ok(Linked {
        pre: ProxyPre::new(instance_pre.clone()).ok(),
        handler: AmqpHandlerPre::new(instance_pre).ok(),
    })
}

/// Every component a trigger calls exports what that trigger calls.
pub fn check_exports(manifest: &AppManifest, linked: &HashMap<String, Linked>) -> Result<()> {
    for trigger in &manifest.amqp_triggers {
        if linked
            .get(&trigger.component)
            .is_some_and(|c| c.handler.is_none())
        {
            bail!(
                "component `{}` is the handler of the [[trigger.amqp]] for queue `{}` but does not export trellis:messaging/handler@0.1.0",
                trigger.component,
                trigger.queue
            );
        }
    }
    for trigger in &manifest.http_triggers {
        if linked
            .get(&trigger.component)
            .is_some_and(|c| c.pre.is_none())
        {
            bail!(
                "component `{}` is routed by an HTTP trigger but does not export wasi:http/incoming-handler@0.2",
                trigger.component
            );
        }
    }
    Ok(())
}

/// What a component needs that can be checked without touching a database
/// or the broker: worked out for every component before anything is
/// provisioned, so an app refused for a bad file or limit leaves nothing.
struct ComponentPlan {
    memory_limit: u64,
    allowed_hosts: Arc<AllowedHosts>,
    files: Vec<Mount>,
    /// Each managed database's migrations, read and checked.
    migrations: HashMap<String, Vec<database::managed::Migration>>,
    variables: ComponentVariables,
}

fn plan_component(
    runtime: &Runtime,
    manifest: &AppManifest,
    owner: &Owner,
    component: &manifest::Component,
    variables: &AppVariables,
) -> Result<ComponentPlan> {
    let config = &runtime.config;
    let settings = &component.trellis;
    let mut memory_limit = settings
        .memory_limit_mib
        .map_or(config.memory_limit_bytes, |mib| mib << 20);
    if let Some(mib) = owner.limits.memory_limit_mib {
        memory_limit = memory_limit.min(mib << 20);
    }
    let pool_max = runtime.max_memory_bytes;
    if memory_limit > pool_max {
        bail!(
            "memory_limit_mib = {} exceeds what this host allows ({} MiB)",
            memory_limit >> 20,
            pool_max >> 20
        );
    }
    let allowed_hosts = Arc::new(allowed_hosts(component, variables)?);
    let mut files = Vec::new();
    for mount in &component.files {
        let source = manifest::inside_app_dir(&manifest.dir, &mount.source, "files")?;
        if !source.is_dir() {
            bail!(
                "files: `{}` is not a directory (trellis mounts directories read-only)",
                mount.source.display()
            );
        }
        files.push(Mount {
            host_path: source,
            guest_path: mount.destination.clone(),
        });
    }
    let mut migrations = HashMap::new();
    for (name, db) in &settings.databases {
        if let Some(dir) = &db.migrations {
            let dir = manifest::inside_app_dir(&manifest.dir, dir, "migrations")?;
            migrations.insert(name.clone(), database::managed::read_migrations(&dir)?);
        }
    }
    Ok(ComponentPlan {
        memory_limit,
        allowed_hosts,
        files,
        migrations,
        variables: variables.component(component)?,
    })
}

/// Everything `manifest` would own outside the process as `owner`'s app:
/// what a ledger records before provisioning, and what cleanup removes.
pub fn resources(manifest: &AppManifest, owner: &Owner) -> Vec<crate::tenancy::Resource> {
    use crate::tenancy::Resource;
    let app = &manifest.application.name;
    let mut all = Vec::new();
    for component in manifest.components.values() {
        for name in component.trellis.databases.keys() {
            all.push(Resource::Schema {
                schema: owner.database_identifier(app, &component.id, name),
            });
        }
    }
    let (exchange, consumers) = amqp_plan(manifest, owner);
    let mut exchanges = vec![exchange];
    for consumer in consumers {
        exchanges.push(consumer.spec.exchange.clone());
        all.push(Resource::Queue {
            spec: consumer.spec.clone(),
        });
    }
    exchanges.sort();
    exchanges.dedup();
    all.extend(
        exchanges
            .into_iter()
            .map(|exchange| Resource::Exchange { exchange }),
    );
    all
}

async fn load_component(
    runtime: &Arc<Runtime>,
    manifest: &AppManifest,
    owner: &Owner,
    component: &manifest::Component,
    linked: Linked,
    plan: ComponentPlan,
    messaging: Arc<ComponentMessaging>,
) -> Result<(AppComponent, Vec<Outbox>)> {
    let config = &runtime.config;
    let settings = &component.trellis;
    let ComponentPlan {
        memory_limit,
        allowed_hosts,
        files,
        migrations,
        variables: component_variables,
    } = plan;
    let (managed, outbox_dbs) =
        provision_databases(runtime, manifest, owner, component, migrations).await?;
    let outboxes = outbox_dbs
        .into_iter()
        .map(|db| Outbox {
            component: component.id.clone(),
            schema: db.outbox_schema(),
            options: runtime.databases.admin.clone(),
            messaging: messaging.clone(),
            writer: db.role.clone(),
        })
        .collect();
    let databases = Arc::new(ComponentDatabases {
        databases: runtime.databases.clone(),
        managed,
        allowed: allowed_hosts.clone(),
        egress: runtime.egress.clone(),
        owner: format!(
            "{}/{}",
            owner.tenant.as_deref().unwrap_or_default(),
            manifest.application.name
        )
        .into(),
    });

    let loaded = AppComponent {
        output: Arc::default(),
        labels: crate::metrics::ComponentLabels {
            tenant: owner.tenant.clone().unwrap_or_default(),
            app: manifest.application.name.clone(),
            component: component.id.clone(),
        },
        id: component.id.as_str().into(),
        pre: linked.pre,
        handler: linked.handler,
        messaging,
        variables: component_variables,
        environment: component
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        files,
        allowed_hosts,
        databases,
        memory_limit: usize::try_from(memory_limit).context("memory limit too large")?,
        timeout: {
            let timeout = settings
                .timeout_ms
                .map_or(config.request_timeout, Duration::from_millis);
            owner
                .limits
                .timeout_ms
                .map_or(timeout, |ms| timeout.min(Duration::from_millis(ms)))
        },
        max_request_body: settings
            .max_request_body_bytes
            .unwrap_or(config.max_request_body_bytes),
        concurrency: settings
            .max_concurrency
            .map(|n| Arc::new(Semaphore::new(n))),
    };
    Ok((loaded, outboxes))
}

/// Provisions the component's managed databases, creates their outboxes and
/// applies their migrations. Returns the connect options by name, and the
/// databases that have an outbox.
async fn provision_databases(
    runtime: &Runtime,
    manifest: &AppManifest,
    owner: &Owner,
    component: &manifest::Component,
    mut migrations: HashMap<String, Vec<database::managed::Migration>>,
) -> Result<(
    HashMap<String, database::ManagedConnection>,
    Vec<database::managed::ManagedDatabase>,
)> {
    let databases = &runtime.databases;
    let mut managed = HashMap::new();
    let mut outboxes = Vec::new();
    for (name, settings) in &component.trellis.databases {
        let ident = owner.database_identifier(&manifest.application.name, &component.id, name);
        let db = database::managed::provision(
            &databases.admin,
            databases.role_secret(),
            &ident,
            database::managed::RoleLimits {
                statement_timeout_ms: databases.config.statement_timeout.as_millis(),
                connections: databases.config.role_connection_limit,
                temp_file_kb: databases.config.role_temp_file_limit_kb,
            },
        )
        .await
        .with_context(|| format!("provisioning managed database `{name}`"))?;
        if settings.outbox {
            crate::outbox::create(&databases.admin, &db)
                .await
                .with_context(|| format!("creating the outbox of managed database `{name}`"))?;
        }
        if let Some(migrations) = migrations.remove(name) {
            let applied = database::managed::migrate(&databases.admin, &db, &migrations)
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
        let plain = database::managed::plain_schema(&databases.admin, &db.schema)
            .await
            .with_context(|| format!("inspecting managed database `{name}`"))?;
        managed.insert(
            name.clone(),
            database::ManagedConnection {
                options: db.options.clone(),
                plain: Arc::new(std::sync::atomic::AtomicBool::new(plain)),
            },
        );
        if settings.outbox {
            outboxes.push(db);
        }
    }
    Ok((managed, outboxes))
}
