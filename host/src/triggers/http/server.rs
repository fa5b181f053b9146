//! The listener loop: accept, serve HTTP/1.1 connections, and on shutdown stop
//! accepting and let in-flight requests finish within a bound.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::Resolve;

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `apps` on `listener` until `shutdown` completes, then drains
/// in-flight requests for at most the configured shutdown timeout.
pub async fn serve(
    listener: TcpListener,
    apps: Arc<dyn Resolve>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    tokio::pin!(shutdown);

    loop {
        let (stream, client) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let apps = apps.clone();
        let service = service_fn(move |request| {
            let apps = apps.clone();
            async move { Ok::<_, Infallible>(super::dispatch(&*apps, client, request).await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%client, "connection ended: {err}");
            }
        });
    }

    drop(listener);
    let limit = apps.shutdown_timeout();
    tracing::info!("shutting down: waiting up to {limit:?} for in-flight requests");
    match tokio::time::timeout(limit, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("shutdown timeout reached; dropping remaining connections"),
    }
    Ok(())
}
