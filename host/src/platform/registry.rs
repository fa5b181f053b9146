//! What one host serves in platform mode: every stored app, loaded, routed
//! by host name, and kept in step with the store.
//!
//! An app is swapped whole: a deployment builds a new [`App`] (compiling
//! only bytes never seen before, and reusing the managed schemas and roles),
//! then replaces the routed one in a single write. Requests already running
//! hold the old `Arc<App>` and finish on it; the next request gets the new
//! one. The new app's consumers start before the old app's drain, so a queue
//! never goes without a consumer and a delivery is settled by exactly one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component as PathPart, Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use sqlx::postgres::{PgListener, PgPoolOptions};

use super::names::{AppKey, app_of_host};
use super::quota::{Quota, TenantLimits};
use super::store::{AppRecord, CHANNEL, Store};
use crate::app::{App, Background, Owner, Runtime};
use crate::manifest::{self, AppManifest};
use crate::triggers::http::errors::HostError;

/// How long the change listener waits before reconnecting, at most.
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(5);

/// What a host name routes to.
#[derive(Clone)]
enum Route {
    Serving(Arc<App>),
    Suspended,
}

/// Most distinct changes waiting to apply; more turn into one resync.
const MAX_PENDING_CHANGES: usize = 1024;

/// Changes announced and not yet applied: apps (`tenant/app`) or tenants.
#[derive(Default)]
struct PendingChanges {
    payloads: std::collections::BTreeSet<String>,
    overflowed: bool,
}

impl PendingChanges {
    fn add(&mut self, payload: &str) {
        if self.overflowed || self.payloads.contains(payload) {
            return;
        }
        if self.payloads.len() >= MAX_PENDING_CHANGES {
            self.payloads.clear();
            self.overflowed = true;
            return;
        }
        self.payloads.insert(payload.to_owned());
    }
}

/// An app this host runs: what it was built from and its background tasks.
struct Running {
    /// What the app was built from.
    record: AppRecord,
    app: Arc<App>,
    background: Option<Background>,
}

pub struct Platform {
    pub runtime: Arc<Runtime>,
    pub store: Store,
    base_domain: String,
    state_dir: PathBuf,
    /// Read by every request; written only to swap an app in or out.
    routes: RwLock<HashMap<AppKey, Route>>,
    /// One lock per app, so changes to one app apply in turn while other
    /// apps change in parallel.
    locks: std::sync::Mutex<HashMap<AppKey, Arc<tokio::sync::Mutex<Option<Running>>>>>,
    /// Each tenant's quota, shared by its apps, kept while its limits stay.
    quotas: std::sync::Mutex<HashMap<String, (TenantLimits, Arc<Quota>)>>,
}

/// What a deployment or a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub revision: i32,
    /// From the start of the build to the new app being routed.
    pub elapsed_ms: u64,
}

impl Platform {
    /// Loads every stored app and starts following the store's changes.
    pub async fn start(
        runtime: Arc<Runtime>,
        store: Store,
        base_domain: String,
        state_dir: PathBuf,
    ) -> Result<Arc<Self>> {
        let platform = Arc::new(Self {
            runtime,
            store,
            base_domain,
            state_dir,
            routes: RwLock::default(),
            locks: std::sync::Mutex::default(),
            quotas: std::sync::Mutex::default(),
        });
        // Listening first: a change committed while the apps load is applied
        // after them rather than missed.
        let listener = platform.listen().await?;
        platform.resync().await;
        tokio::spawn(platform.clone().follow(listener));
        Ok(platform)
    }

    /// The app a request's `Host` names.
    pub fn resolve(&self, host: Option<&str>) -> Result<Arc<App>, HostError> {
        let unknown = || {
            HostError::NotFound(format!(
                "no app is served at {}",
                host.unwrap_or("this host")
            ))
        };
        let key = host
            .and_then(|host| app_of_host(host, &self.base_domain))
            .ok_or_else(unknown)?;
        match self.routes_read().get(&key) {
            Some(Route::Serving(app)) => Ok(app.clone()),
            Some(Route::Suspended) => Err(HostError::Unavailable(format!(
                "tenant `{}` is suspended",
                key.tenant
            ))),
            None => Err(unknown()),
        }
    }

    /// The apps this host serves and their revisions.
    pub async fn status(&self) -> Vec<(AppKey, Option<i32>, bool)> {
        let locks: Vec<_> = self
            .locks_guard()
            .iter()
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect();
        let mut out = Vec::new();
        for (key, lock) in locks {
            let running = lock.lock().await;
            if let Some(running) = running.as_ref() {
                let serving = matches!(self.routes_read().get(&key), Some(Route::Serving(_)));
                out.push((key, Some(running.record.revision), serving));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Validates `candidate` by building it, then lets `commit` store it and
    /// serves what was stored. A candidate that does not build changes
    /// nothing and the error says why. `commit` runs with the app's lock
    /// held, so deployments of one app apply in the order they commit.
    pub async fn deploy<F, Fut>(
        &self,
        candidate: &AppRecord,
        commit: F,
    ) -> Result<Applied, DeployError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<AppRecord, super::store::Refusal>>,
    {
        let started = Instant::now();
        let lock = self.lock_of(&candidate.key);
        let mut running = lock.lock().await;
        // What this attempt records from now on is its own to undo.
        let since = self
            .store
            .now()
            .await
            .map_err(|err| DeployError::Invalid(err.into()))?;
        let app = match self.rebuild(running.as_ref(), candidate).await {
            Ok(app) => app,
            Err(err) => {
                // A refused deployment leaves nothing it made.
                super::cleanup::remove_unused(self, &candidate.key, since).await;
                return Err(DeployError::Invalid(err));
            }
        };
        let stored = match commit().await {
            Ok(stored) => stored,
            Err(refusal) => {
                // Built, never started: its consumers and relays start when
                // it is swapped in.
                drop(app);
                super::cleanup::remove_unused(self, &candidate.key, since).await;
                return Err(DeployError::Refused(refusal));
            }
        };
        self.swap_in(&stored.key, &mut running, &stored, app);
        Ok(Applied {
            revision: stored.revision,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Brings `key` in step with the store: loads it, swaps in a newer
    /// revision, routes a suspended tenant's app to `503`, or unloads an app
    /// that is gone.
    pub async fn reload(&self, key: &AppKey) {
        // A name neither this host nor the store knows leaves no trace.
        if !self.locks_guard().contains_key(key) && matches!(self.store.app(key).await, Ok(None)) {
            return;
        }
        let lock = self.lock_of(key);
        let mut running = lock.lock().await;
        let record = match self.store.app(key).await {
            Ok(record) => record,
            Err(err) => {
                tracing::error!(app = %key, "cannot read the app from the store: {err}");
                return;
            }
        };
        match record {
            None => {
                self.routes_write().remove(key);
                if let Some(old) = running.take() {
                    tracing::info!(app = %key, "app removed");
                    self.retire(old);
                }
            }
            Some(record) if record.suspended => {
                self.routes_write().insert(key.clone(), Route::Suspended);
                if let Some(old) = running.take() {
                    tracing::info!(app = %key, "tenant suspended; app unloaded");
                    self.retire(old);
                }
            }
            Some(record) => {
                if running.as_ref().is_some_and(|r| {
                    r.record.revision == record.revision && r.record.limits == record.limits
                }) {
                    return;
                }
                match self.rebuild(running.as_ref(), &record).await {
                    Ok(app) => self.swap_in(key, &mut running, &record, app),
                    Err(err) => tracing::error!(
                        app = %key,
                        revision = record.revision,
                        "cannot load the app; the previous revision stays: {err:#}"
                    ),
                }
            }
        }
    }

    /// Reloads every app the store has or this host runs.
    pub async fn resync(&self) {
        let mut keys: Vec<AppKey> = self.locks_guard().keys().cloned().collect();
        match self.store.app_keys().await {
            Ok(stored) => keys.extend(stored),
            Err(err) => tracing::error!("cannot list the stored apps: {err}"),
        }
        keys.sort();
        keys.dedup();
        for key in keys {
            self.reload(&key).await;
        }
    }

    /// Reloads the apps of one tenant (suspended, resumed or deleted).
    pub async fn reload_tenant(&self, tenant: &str) {
        let mut keys: Vec<AppKey> = self
            .locks_guard()
            .keys()
            .filter(|k| k.tenant == tenant)
            .cloned()
            .collect();
        if let Ok(stored) = self.store.apps_of(tenant).await {
            keys.extend(stored);
        }
        keys.sort();
        keys.dedup();
        for key in keys {
            self.reload(&key).await;
        }
    }

    /// Stops every app's consumers, letting deliveries in hand finish
    /// within `limit`.
    pub async fn shutdown(&self, limit: Duration) {
        let locks: Vec<_> = self.locks_guard().values().cloned().collect();
        let mut drains = Vec::new();
        for lock in locks {
            if let Some(running) = lock.lock().await.take()
                && let Some(background) = running.background
            {
                drains.push(background.drain(limit));
            }
        }
        futures::future::join_all(drains).await;
    }

    /// The app `record` describes. When only components' bytes differ from
    /// the running app's record, the running app is reused with their new
    /// code: no schema, role, migration or queue is touched, so an
    /// already-compiled version takes effect in milliseconds.
    async fn rebuild(&self, running: Option<&Running>, record: &AppRecord) -> Result<Arc<App>> {
        let Some(running) = running.filter(|r| same_but_code(&r.record, record)) else {
            return self.build(record).await;
        };
        let manifest = self.materialize(record).await?;
        let mut changed = HashMap::new();
        for (id, active) in &record.components {
            if running.record.components.get(id).map(|a| &a.digest) == Some(&active.digest) {
                continue;
            }
            let component = manifest
                .components
                .get(id)
                .with_context(|| format!("component `{id}` is not in the manifest"))?;
            let linked = crate::app::prepare(&self.runtime, component)
                .await
                .with_context(|| format!("component `{id}`"))?;
            changed.insert(id.clone(), linked);
        }
        crate::app::check_exports(&manifest, &changed)?;
        running.app.with_code(changed)
    }

    /// Builds the app `record` describes, for its tenant.
    pub async fn build(&self, record: &AppRecord) -> Result<Arc<App>> {
        let manifest = self.materialize(record).await?;
        let variables = record.variables.clone();
        let owner = Owner {
            limits: record.limits.clone(),
            quota: Some(self.quota_of(&record.key.tenant, &record.limits)),
            ledger: Some(self.store.ledger(&record.key.tenant)),
            ..Owner::tenant(&record.key.tenant)
        };
        App::load_owned(self.runtime.clone(), &manifest, owner, move |env| {
            let name = env.strip_prefix("SPIN_VARIABLE_")?.to_ascii_lowercase();
            variables.get(&name).cloned()
        })
        .await
    }

    /// The tenant's quota: the one its apps share, or a new one if its
    /// limits changed (requests running keep the old until they end).
    fn quota_of(&self, tenant: &str, limits: &TenantLimits) -> Arc<Quota> {
        let mut quotas = self
            .quotas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match quotas.get(tenant) {
            Some((known, quota)) if known == limits => quota.clone(),
            _ => {
                let quota = Arc::new(Quota::new(limits, self.runtime.config.epoch_tick));
                quotas.insert(tenant.to_owned(), (limits.clone(), quota.clone()));
                quota
            }
        }
    }

    fn swap_in(
        &self,
        key: &AppKey,
        running: &mut Option<Running>,
        record: &AppRecord,
        app: Arc<App>,
    ) {
        let revision = record.revision;
        // Consumers of the new app start before the old app's stop: a queue
        // is never without one, and each delivery is settled by one app.
        let background = app.start_background();
        self.routes_write()
            .insert(key.clone(), Route::Serving(app.clone()));
        let previous = running.replace(Running {
            record: record.clone(),
            app,
            background: Some(background),
        });
        tracing::info!(app = %key, revision, "app serving");
        if let Some(old) = previous {
            self.retire(old);
        }
    }

    /// Lets an app that was swapped out finish its deliveries in hand.
    fn retire(&self, old: Running) {
        if let Some(background) = old.background {
            let limit = self.runtime.config.shutdown_timeout;
            tokio::spawn(background.drain(limit));
        }
    }

    /// Writes the record's manifest and assets to a directory of their own
    /// and its components' bytes to files named by digest, and reads the
    /// manifest from there with each component's source pointing at its
    /// bytes.
    async fn materialize(&self, record: &AppRecord) -> Result<AppManifest> {
        let mut hasher = Sha256::new();
        hasher.update(record.manifest.as_bytes());
        for (path, content) in &record.assets {
            hasher.update([0]);
            hasher.update(path.as_bytes());
            hasher.update([0]);
            hasher.update(content.as_bytes());
        }
        let digest = hex::encode(&hasher.finalize()[..12]);
        let dir = self
            .state_dir
            .join("apps")
            .join(&record.key.tenant)
            .join(&record.key.app)
            .join(digest);
        let manifest_path = dir.join("spin.toml");
        if !manifest_path.exists() {
            write_app_dir(&dir, &record.manifest, &record.assets)
                .with_context(|| format!("writing {}", dir.display()))?;
        }
        let mut manifest = manifest::parse(&record.manifest, &manifest_path)
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        if manifest.application.name != record.key.app {
            bail!(
                "the manifest's [application] name is `{}`, but the app is `{}`",
                manifest.application.name,
                record.key.app
            );
        }
        for id in record.components.keys() {
            if !manifest.components.contains_key(id) {
                bail!("component `{id}` is not in the manifest");
            }
        }
        for component in manifest.components.values_mut() {
            let Some(active) = record.components.get(&component.id) else {
                bail!("no bytes were uploaded for component `{}`", component.id);
            };
            component.source = self.blob_file(&active.digest).await?;
        }
        Ok(manifest)
    }

    /// The file holding the component bytes with `digest`, fetched from the
    /// store the first time.
    async fn blob_file(&self, digest: &str) -> Result<PathBuf> {
        let path = self.state_dir.join("blobs").join(format!("{digest}.wasm"));
        if path.exists() {
            return Ok(path);
        }
        let bytes = self.store.blob(digest).await?;
        let dir = self.state_dir.join("blobs");
        let tmp = dir.join(format!(".{digest}.{}.tmp", rand_suffix()));
        tokio::task::spawn_blocking(move || -> Result<PathBuf> {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path)?;
            Ok(path)
        })
        .await
        .context("writing component bytes")?
        .context("writing component bytes")
    }

    async fn listen(&self) -> Result<PgListener> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(self.store.options().clone());
        let mut listener = PgListener::connect_with(&pool)
            .await
            .context("listening for platform changes")?;
        listener.listen(CHANNEL).await?;
        Ok(listener)
    }

    /// Applies every change announced on the store's channel; after a lost
    /// connection, reconnects and resynchronises everything.
    ///
    /// Anyone connected to the database can `NOTIFY` on the channel (a
    /// tenant's SQL too), so a notification counts only from the admin's
    /// role (see [`crate::notifiers`]), and changes are coalesced: one
    /// reload per app however often it is named, at most
    /// [`MAX_PENDING_CHANGES`] apps waiting (past that, one resync).
    async fn follow(self: Arc<Self>, mut listener: PgListener) {
        let mut retry = Duration::from_millis(100);
        let mut notifiers = crate::notifiers::Notifiers::default();
        let admin = self.store.options().get_username().to_owned();
        let pending = Arc::new(std::sync::Mutex::new(PendingChanges::default()));
        let wake = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(self.clone().apply_changes(pending.clone(), wake.clone()));
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    retry = Duration::from_millis(100);
                    let pid = notification.process_id();
                    if let Some(role) = notifiers.role_of(&mut listener, pid).await
                        && role != admin
                    {
                        tracing::debug!(%role, pid, "forged platform notification ignored");
                        continue;
                    }
                    pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .add(notification.payload());
                    wake.notify_one();
                }
                // The connection was lost and re-established: anything may
                // have changed meanwhile.
                Ok(None) => {
                    tracing::warn!("platform change listener reconnected; resynchronising");
                    self.resync().await;
                }
                Err(err) => {
                    tracing::warn!("platform change listener: {err}; retrying in {retry:?}");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(LISTEN_RETRY_MAX);
                    if let Ok(fresh) = self.listen().await {
                        listener = fresh;
                        self.resync().await;
                    }
                }
            }
        }
    }

    /// Applies the changes [`Platform::follow`] collects, a batch at a time
    /// (the apps of a batch in parallel).
    async fn apply_changes(
        self: Arc<Self>,
        pending: Arc<std::sync::Mutex<PendingChanges>>,
        wake: Arc<tokio::sync::Notify>,
    ) {
        loop {
            wake.notified().await;
            let batch = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
            if batch.overflowed {
                tracing::warn!("platform changes came faster than they apply; resynchronising");
                self.resync().await;
                continue;
            }
            futures::future::join_all(batch.payloads.iter().map(|payload| {
                let this = self.clone();
                async move {
                    match AppKey::parse(payload) {
                        Some(key) => this.reload(&key).await,
                        None => this.reload_tenant(payload).await,
                    }
                }
            }))
            .await;
        }
    }

    fn lock_of(&self, key: &AppKey) -> Arc<tokio::sync::Mutex<Option<Running>>> {
        self.locks_guard().entry(key.clone()).or_default().clone()
    }

    fn locks_guard(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<AppKey, Arc<tokio::sync::Mutex<Option<Running>>>>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn routes_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<AppKey, Route>> {
        self.routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn routes_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<AppKey, Route>> {
        self.routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether two records of an app differ in nothing but components' bytes.
fn same_but_code(a: &AppRecord, b: &AppRecord) -> bool {
    a.key == b.key
        && a.manifest == b.manifest
        && a.assets == b.assets
        && a.variables == b.variables
        && a.limits == b.limits
        && a.components.keys().eq(b.components.keys())
}

/// Why a deployment did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The app does not build: manifest, compilation, imports, exports,
    /// databases or migrations. Nothing was stored.
    #[error("{0:#}")]
    Invalid(anyhow::Error),
    #[error(transparent)]
    Refused(super::store::Refusal),
}

/// Checks an asset path: relative, plain components only.
pub fn check_asset_path(path: &str) -> Result<(), String> {
    let parts: Vec<_> = Path::new(path).components().collect();
    if parts.is_empty() || !parts.iter().all(|p| matches!(p, PathPart::Normal(_))) {
        return Err(format!(
            "asset path `{path}` must be relative, without `..` or a root"
        ));
    }
    Ok(())
}

/// Writes the manifest and its assets into `dir`, via a temporary directory
/// renamed into place, so a reader sees all of it or none.
fn write_app_dir(dir: &Path, manifest: &str, assets: &BTreeMap<String, String>) -> Result<()> {
    let parent = dir.parent().context("app directory has no parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".tmp-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&tmp)?;
    std::fs::write(tmp.join("spin.toml"), manifest)?;
    for (path, content) in assets {
        check_asset_path(path).map_err(anyhow::Error::msg)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(content)
            .with_context(|| format!("asset `{path}` is not base64"))?;
        let target = tmp.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(target, bytes)?;
    }
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // Another load wrote the same content first.
        Err(_) if dir.join("spin.toml").exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl crate::triggers::http::Resolve for Platform {
    fn resolve(&self, host: Option<&str>) -> Result<Arc<App>, HostError> {
        Platform::resolve(self, host)
    }

    fn shutdown_timeout(&self) -> Duration {
        self.runtime.config.shutdown_timeout
    }
}
