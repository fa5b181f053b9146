//! Outgoing HTTP from guests (`wasi:http/outgoing-handler`).
//!
//! Every request is checked against the component's `allowed_outbound_hosts`;
//! a refused one fails with `HttpRequestDenied`, which the guest can handle,
//! and a log line. `http://<component>.spin.internal` never touches a socket:
//! it is handed to the app's in-process dispatcher. Everything else goes
//! through one pooled client per app, so repeated calls reuse connections.
//! Both kinds of call get the app's timeouts, retries and circuit breakers
//! ([`resilience`]).

pub mod resilience;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::allowed_hosts::AllowedHosts;
use crate::egress::Egress;

/// The host name suffix of in-process service chaining.
pub const CHAINING_SUFFIX: &str = ".spin.internal";

/// Whether `host` (without port) names a component of this app.
pub fn chaining_target(host: &str) -> Option<&str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let len = host.len().checked_sub(CHAINING_SUFFIX.len())?;
    let (name, suffix) = host.split_at_checked(len)?;
    (suffix.eq_ignore_ascii_case(CHAINING_SUFFIX) && !name.is_empty()).then_some(name)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

/// Runs a request against another component of the same app, in process.
/// Implemented by the HTTP trigger, which owns the components.
pub trait InternalDispatch: Send + Sync {
    /// Calls `component` with `request`; the answer must arrive before `deadline`.
    fn dispatch(
        &self,
        component: &str,
        request: http::Request<WasiBody>,
        deadline: Instant,
    ) -> BoxFuture<Result<http::Response<WasiBody>, HttpError>>;
}

type Connector = hyper_rustls::HttpsConnector<CheckedConnector>;

/// Pooled client for real outbound hosts and the call policies and
/// breakers of every target, shared by all requests of an app.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<Connector, WasiBody>,
    calls: Arc<resilience::Calls>,
}

/// Opens TCP connections only to addresses the egress policy allows: the
/// name is resolved and checked here, and the connection made to the
/// checked address (TLS still verifies the name, which the HTTPS layer
/// above took from the request).
#[derive(Clone)]
pub struct CheckedConnector {
    inner: HttpConnector,
    egress: Arc<Egress>,
}

impl tower::Service<http::Uri> for CheckedConnector {
    type Response = <HttpConnector as tower::Service<http::Uri>>::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut inner = self.inner.clone();
        let egress = self.egress.clone();
        Box::pin(async move {
            if !egress.is_guarded() {
                return inner.call(uri).await.map_err(Into::into);
            }
            let host = uri.host().ok_or("the URI has no host")?.to_owned();
            let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let addrs = egress.resolve(&host, port).await?;
            let pinned = http::Uri::builder()
                .scheme(uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP))
                .authority(addrs[0].to_string())
                .path_and_query("/")
                .build()?;
            inner.call(pinned).await.map_err(Into::into)
        })
    }
}

impl HttpClient {
    pub fn new(calls: resilience::Calls, egress: Arc<Egress>) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        // The HTTPS layer hands `https://` URIs down too.
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(CheckedConnector {
                inner: http,
                egress,
            });
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            client,
            calls: Arc::new(calls),
        })
    }
}

/// The per-request hooks: which component is calling, what it may reach,
/// and until when.
pub struct OutboundHttp {
    pub component: Arc<str>,
    pub allowed: Arc<AllowedHosts>,
    pub client: HttpClient,
    pub dispatch: Arc<dyn InternalDispatch>,
    pub deadline: Instant,
}

impl OutboundHttp {
    fn check(&self, request: &http::Request<WasiBody>) -> Result<Option<String>, HttpError> {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("http");
        let host = uri.host().ok_or(HttpError::HttpRequestUriInvalid)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !self.allowed.allows(scheme, host, uri.port_u16()) {
            tracing::warn!(
                component = %self.component,
                destination = %format_args!("{scheme}://{}", uri.authority().map(|a| a.as_str()).unwrap_or(host)),
                "outbound request denied: not in allowed_outbound_hosts"
            );
            return Err(HttpError::HttpRequestDenied);
        }
        Ok(chaining_target(host).map(str::to_owned))
    }
}

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let target = match self.check(&request) {
            Ok(target) => target,
            Err(err) => return Box::new(async move { Err(err) }),
        };
        let first_byte = options
            .and_then(|o| o.first_byte_timeout)
            .map(|t| Instant::now() + t);
        // Nothing a guest starts may outlive the guest's own deadline.
        let deadline = first_byte.map_or(self.deadline, |t| t.min(self.deadline));
        let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
            Box::new(async { Ok(()) });

        let key = resilience::target_key(request.uri(), target.as_deref());
        // A child of the guest's invoke span (the current one here); the
        // callee continues from it.
        let span = tracing::info_span!(
            "call",
            otel.name = %format_args!("{} {key}", request.method()),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = %request.method(),
            server.address = key.as_str(),
            http.response.status_code = tracing::field::Empty,
        );
        crate::telemetry::inject_headers(&span, request.headers_mut());
        let calls = self.client.calls.clone();
        let client = self.client.client.clone();
        let dispatch = self.dispatch.clone();
        let caller = self.component.clone();
        let call_span = span.clone();
        let call = async move {
            let send = move |request: http::Request<WasiBody>,
                             deadline: Instant|
                  -> BoxFuture<Result<http::Response<WasiBody>, HttpError>> {
                match &target {
                    Some(component) => dispatch.dispatch(component, request, deadline),
                    None => Box::pin(send_outbound(client.clone(), request, deadline)),
                }
            };
            let response = calls.call(&caller, &key, request, deadline, &send).await;
            match &response {
                Ok(response) => {
                    let status = response.status();
                    call_span.record("http.response.status_code", status.as_u16());
                    if status.is_server_error() {
                        call_span.record("otel.status_code", "error");
                    }
                }
                Err(_) => {
                    call_span.record("otel.status_code", "error");
                }
            }
            Ok((response?, done))
        };
        Box::new(tracing::Instrument::instrument(call, span))
    }
}

async fn send_outbound(
    client: Client<Connector, WasiBody>,
    request: http::Request<WasiBody>,
    deadline: Instant,
) -> Result<http::Response<WasiBody>, HttpError> {
    let response = tokio::time::timeout_at(deadline.into(), client.request(request))
        .await
        .map_err(|_| HttpError::HttpResponseTimeout)?
        .map_err(client_error)?;
    Ok(response.map(|body| body.map_err(HttpError::from).boxed_unsync()))
}

fn client_error(err: hyper_util::client::legacy::Error) -> HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    while let Some(cause) = source {
        if let Some(denied) = cause.downcast_ref::<crate::egress::Denied>() {
            tracing::warn!(%denied, "outbound request denied");
            return HttpError::HttpRequestDenied;
        }
        source = cause.source();
    }
    if err.is_connect() {
        tracing::debug!("outbound connect error: {err:?}");
        return HttpError::ConnectionRefused;
    }
    tracing::debug!("outbound request error: {err:?}");
    HttpError::HttpProtocolError
}

/// A body for responses the host makes itself.
pub fn full_body(bytes: impl Into<Bytes>) -> WasiBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaining_hosts() {
        assert_eq!(chaining_target("user.spin.internal"), Some("user"));
        assert_eq!(chaining_target("user.SPIN.internal."), Some("user"));
        assert_eq!(chaining_target(".spin.internal"), None);
        assert_eq!(chaining_target("spin.internal"), None);
        assert_eq!(chaining_target("example.com"), None);
    }
}
