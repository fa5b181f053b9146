//! Running one request through one component: a fresh Store, an instance
//! from the pre-instantiated component, a deadline, and the mapping of every
//! way it can go wrong onto an HTTP answer.

use std::sync::Arc;
use std::time::Instant;

use http::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;
use wasmtime::Trap;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiBody, WasiHttpView as _};

use super::errors::HostError;
use crate::app::{App, AppComponent};
use crate::metrics::Failure;

/// How the guest's task ended.
enum Outcome {
    Finished,
    Trapped,
    TimedOut,
}

/// Calls `component` with `request` and returns its response head; the body
/// keeps streaming from the guest's task, which holds the instance slot until
/// it is done.
pub(crate) async fn invoke(
    app: &Arc<App>,
    component: &Arc<AppComponent>,
    request: http::Request<WasiBody>,
    deadline: Instant,
) -> Result<Response<WasiBody>, HostError> {
    let Some(pre) = component.pre.clone() else {
        tracing::error!(component = %component.id, "component has no HTTP handler");
        return Err(HostError::Internal);
    };
    let runtime = &app.runtime;
    // A tenant at its concurrency limit is told so (429) rather than queued:
    // waiting would only hold its clients' connections longer.
    let tenant_permit = match &app.owner.quota {
        Some(quota) => match quota.instance() {
            Ok(permit) => permit,
            Err(refused) => {
                quota.hold_refusal(Some(deadline)).await;
                return Err(HostError::over_quota(refused));
            }
        },
        None => None,
    };
    // Wait for capacity, but not forever: a bounded queue, then 503.
    let queue_deadline = deadline.min(Instant::now() + runtime.config.queue_timeout);
    let component_permit = match &component.concurrency {
        Some(limit) => Some(acquire(limit, queue_deadline, &component.id).await?),
        None => None,
    };
    let slot = acquire(&runtime.slots, queue_deadline, &component.id).await?;

    let span = invoke_span(app, component, &tracing::Span::current());
    let mut request = request;
    crate::telemetry::inject_headers(&span, request.headers_mut());
    let mut store = crate::store::new_store(app, component, deadline);

    let (sender, receiver) = tokio::sync::oneshot::channel();
    let (incoming, outparam) = {
        let mut http = store.data_mut().http();
        let incoming = http
            .new_incoming_request(Scheme::Http, request)
            .map_err(|err| HostError::BadRequest(format!("{err:#}")))?;
        let outparam = http
            .new_response_outparam(sender)
            .map_err(|_| HostError::Internal)?;
        (incoming, outparam)
    };

    let id = component.id.clone();
    let metrics = runtime.metrics.clone();
    let labels = component.labels.clone();
    let task = tokio::spawn(
        async move {
            let _held = (slot, component_permit, tenant_permit);
            let run = async {
                let started = Instant::now();
                let proxy = pre.instantiate_async(&mut store).await?;
                metrics.instantiated(&labels, started.elapsed());
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
            };
            match tokio::time::timeout_at(deadline.into(), run).await {
                Ok(Ok(())) => Outcome::Finished,
                Ok(Err(err)) if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                    tracing::warn!(component = %id, "request interrupted at its deadline");
                    metrics.failed(&labels, Failure::Deadline);
                    Outcome::TimedOut
                }
                Ok(Err(err)) => {
                    tracing::error!(component = %id, error = ?err, "component trapped");
                    metrics.failed(&labels, Failure::Trap);
                    Outcome::Trapped
                }
                Err(_) => {
                    tracing::warn!(component = %id, "request timed out waiting on I/O");
                    metrics.failed(&labels, Failure::Deadline);
                    Outcome::TimedOut
                }
            }
        }
        .instrument(span),
    );

    match tokio::time::timeout_at(deadline.into(), receiver).await {
        Ok(Ok(Ok(response))) => Ok(response),
        Ok(Ok(Err(code))) => {
            tracing::error!(component = %component.id, "component answered with an error: {code:?}");
            Err(HostError::Internal)
        }
        // The guest dropped the outparam without answering: its task says why.
        Ok(Err(_)) => match task.await {
            Ok(Outcome::TimedOut) => Err(HostError::Timeout),
            Ok(Outcome::Trapped) => Err(HostError::Internal),
            Ok(Outcome::Finished) => {
                tracing::error!(component = %component.id, "component returned without setting a response");
                Err(HostError::Internal)
            }
            Err(err) => {
                tracing::error!(component = %component.id, "component task failed: {err}");
                Err(HostError::Internal)
            }
        },
        Err(_) => {
            task.abort();
            tracing::warn!(component = %component.id, "no response within the deadline");
            Err(HostError::Timeout)
        }
    }
}

/// The span of one run of a component, a child of `parent` (the request,
/// the delivery or the call that caused it).
pub(crate) fn invoke_span(
    app: &App,
    component: &AppComponent,
    parent: &tracing::Span,
) -> tracing::Span {
    tracing::info_span!(
        parent: parent,
        "invoke",
        otel.name = %format_args!("invoke {}", component.id),
        tenant = app.owner.tenant.as_deref().unwrap_or(""),
        app = app.name.as_str(),
        component = &*component.id,
    )
}

async fn acquire(
    semaphore: &Arc<Semaphore>,
    until: Instant,
    component: &str,
) -> Result<OwnedSemaphorePermit, HostError> {
    // Fast path without arming a timer: a free slot is the common case.
    if let Ok(permit) = semaphore.clone().try_acquire_owned() {
        return Ok(permit);
    }
    match tokio::time::timeout_at(until.into(), semaphore.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => {
            tracing::warn!(component, "at capacity: no free instance slot");
            Err(HostError::Unavailable(
                "the server is at capacity; retry later".to_string(),
            ))
        }
    }
}
