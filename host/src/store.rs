//! What one `Store` holds: the state of a single request's instance.
//!
//! A fresh `RequestState` is made for every request and dropped with it, so
//! nothing a guest does survives into the next request. Everything here is
//! either cheap (`Arc` clones of load-time data) or unavoidable per instance
//! (the resource table, the WASI context).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{
    ResourceLimiter as _, ResourceLimiterAsync, Store, StoreLimits, StoreLimitsBuilder,
    UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::app::{App, AppComponent};
use crate::capabilities::database::{self, ComponentDatabases, DatabaseView};
use crate::capabilities::guest_output::GuestOutput;
use crate::capabilities::messaging::{self, ComponentMessaging, MessagingView};
use crate::capabilities::outbound_http::OutboundHttp;
use crate::capabilities::variables::{self, ComponentVariables, VariablesView};
use crate::platform::quota::Quota;

pub struct RequestState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: OutboundHttp,
    variables: ComponentVariables,
    database: Arc<ComponentDatabases>,
    messaging: Arc<ComponentMessaging>,
    pub(crate) limits: Limits,
}

/// An instance's resource limits: its memory limit, and, for a tenant with
/// a CPU budget, memory growth paid from that budget.
pub(crate) struct Limits {
    memory: StoreLimits,
    quota: Option<Arc<Quota>>,
    deadline: Instant,
}

#[async_trait::async_trait]
impl ResourceLimiterAsync for Limits {
    async fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if !self.memory.memory_growing(current, desired, maximum)? {
            return Ok(false);
        }
        if let Some(quota) = &self.quota {
            quota
                .pay_for_growth(desired.saturating_sub(current), self.deadline)
                .await;
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory.memory_grow_failed(error)
    }

    async fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.memory.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.memory.instances()
    }

    fn tables(&self) -> usize {
        self.memory.tables()
    }

    fn memories(&self) -> usize {
        self.memory.memories()
    }
}

/// A fresh `Store` for one call into `component`: its memory limit applied,
/// and a guest that runs on past `deadline` interrupted. Every epoch tick a
/// running guest yields to the executor, so one busy guest cannot starve the
/// others on its worker thread.
pub fn new_store(
    app: &Arc<App>,
    component: &AppComponent,
    deadline: Instant,
) -> Store<RequestState> {
    let mut store = Store::new(
        &app.runtime.engine,
        RequestState::new(app, component, deadline),
    );
    store.limiter_async(|state| &mut state.limits);
    let quota = app.owner.quota.clone();
    store.epoch_deadline_callback(move |_| {
        let now = Instant::now();
        if now >= deadline {
            return Ok(UpdateDeadline::Interrupt);
        }
        // A tenant over its CPU budget pauses here until the budget pays
        // for its next tick (never past its deadline).
        if let Some(quota) = &quota
            && let Some(pause) = quota.cpu_tick()
        {
            let quota = quota.clone();
            return Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move { quota.wait_for_tick(pause, deadline).await }),
            ));
        }
        // Tokio's own yield: wasmtime's runtime-agnostic one wakes the task
        // from inside its poll, which puts it in the worker's LIFO slot, so
        // a spinning guest would run on, slice after slice, ahead of every
        // task queued behind it on that worker.
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    store.set_epoch_deadline(1);
    store
}

impl RequestState {
    pub fn new(app: &Arc<App>, component: &AppComponent, deadline: Instant) -> Self {
        let mut wasi = WasiCtx::builder();
        // Guest output goes to the host's log, line by line, bounded.
        wasi.stdout(GuestOutput::stdout(component.output.clone()))
            .stderr(GuestOutput::stderr(component.output.clone()))
            .envs(&component.environment);
        for mount in &component.files {
            // The directory was checked at load time; a failure now (deleted
            // since) leaves the guest without that mount, which it will notice.
            if let Err(err) = wasi.preopened_dir(
                &mount.host_path,
                &mount.guest_path,
                wasmtime_wasi::FsPerms::ReadOnly,
            ) {
                tracing::warn!(component = %component.id, "cannot mount {}: {err:#}", mount.host_path.display());
            }
        }
        Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            outbound: OutboundHttp {
                component: component.id.clone(),
                allowed: component.allowed_hosts.clone(),
                client: app.http_client.clone(),
                dispatch: app.dispatcher(),
                deadline,
            },
            variables: component.variables.clone(),
            database: component.databases.clone(),
            messaging: component.messaging.clone(),
            limits: Limits {
                memory: StoreLimitsBuilder::new()
                    .memory_size(component.memory_limit)
                    .trap_on_grow_failure(false)
                    .build(),
                quota: app.owner.quota.clone(),
                deadline,
            },
        }
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// The linker every component of an engine shares: WASI P2, WASI HTTP and the
/// Spin interfaces Trellis provides.
pub fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<RequestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    variables::add_to_linker(&mut linker, |state: &mut RequestState| {
        VariablesView(&state.variables)
    })?;
    database::add_to_linker(&mut linker, |state: &mut RequestState| DatabaseView {
        ctx: &state.database,
        table: &mut state.table,
    })?;
    messaging::add_to_linker(&mut linker, |state: &mut RequestState| MessagingView {
        ctx: &state.messaging,
    })?;
    Ok(linker)
}
