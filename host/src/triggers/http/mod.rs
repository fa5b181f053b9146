//! The HTTP trigger: routes requests to components with Spin's semantics and
//! headers, answers health checks, enforces body limits, and dispatches
//! in-process calls between components (`http://<id>.spin.internal`).

pub mod body;
pub mod errors;
mod invoke;
mod server;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

pub(crate) use invoke::invoke_span;
pub use server::serve;

use crate::app::App;
use crate::capabilities::outbound_http::{InternalDispatch, chaining_target};
use crate::gateway::auth::Refused;
use crate::routing::RouteMatch;
use body::LimitedBody;
use errors::{HostError, json_response};

/// Which app serves a request: the one app of `trellis up`, or the one its
/// host name names under `trellis serve`.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, host: Option<&str>) -> Result<Arc<App>, HostError>;
    /// How long in-flight requests may finish after shutdown begins.
    fn shutdown_timeout(&self) -> std::time::Duration;
}

impl Resolve for Arc<App> {
    fn resolve(&self, _host: Option<&str>) -> Result<Arc<App>, HostError> {
        Ok(self.clone())
    }

    fn shutdown_timeout(&self) -> std::time::Duration {
        self.runtime.config.shutdown_timeout
    }
}

/// Resolves the app for a request, then handles it.
pub async fn dispatch<B>(
    apps: &dyn Resolve,
    client: SocketAddr,
    request: Request<B>,
) -> Response<WasiBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<HttpError>,
{
    let app = match apps.resolve(request_host(&request)) {
        Ok(app) => app,
        Err(err) => return err.into_response(),
    };
    if let Some(quota) = &app.owner.quota
        && let Err(refused) = quota.admit_request()
    {
        quota.hold_refusal(None).await;
        return HostError::over_quota(refused).into_response();
    }
    handle(app, client, request).await
}

/// Handles one inbound request from `client`, in a server span that
/// continues the client's trace.
pub async fn handle<B>(app: Arc<App>, client: SocketAddr, request: Request<B>) -> Response<WasiBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<HttpError>,
{
    use tracing::Instrument as _;
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "request",
        otel.name = %request.method(),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %request.method(),
        url.path = request.uri().path(),
        http.route = Empty,
        http.response.status_code = Empty,
        tenant = app.owner.tenant.as_deref().unwrap_or(""),
        app = app.name.as_str(),
        component = Empty,
        trace_id = Empty,
    );
    crate::telemetry::continue_from_headers(&span, request.headers());
    let response = edge(app, client, request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    response
}

/// CORS around the answer, when the app has it.
async fn edge<B>(app: Arc<App>, client: SocketAddr, request: Request<B>) -> Response<WasiBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<HttpError>,
{
    let gateway = app.gateway.clone();
    let Some(cors) = &gateway.cors else {
        return answer(app, client, request).await;
    };
    use tower::{Layer as _, ServiceExt as _};
    let inner = tower::service_fn(move |request: Request<B>| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(app, client, request).await) }
    });
    match cors.layer(inner).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

async fn answer<B>(app: Arc<App>, client: SocketAddr, request: Request<B>) -> Response<WasiBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<HttpError>,
{
    match route_inbound(&app, client, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn route_inbound<B>(
    app: &Arc<App>,
    client: SocketAddr,
    request: Request<B>,
) -> Result<Response<WasiBody>, HostError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<HttpError>,
{
    let host = request_host(&request).unwrap_or("localhost").to_owned();
    if chaining_target(host_without_port(&host)).is_some() {
        return Err(HostError::BadRequest(format!(
            "host `{host}` is reserved for calls between components"
        )));
    }
    let path = request.uri().path();
    if app.serves_health
        && let Some(response) = health(app, path, request.method()).await
    {
        return response;
    }
    if let Some(document) = &app.gateway.openapi
        && is_path(path, OPENAPI_PATH)
        && app
            .router
            .route(path)
            .is_none_or(|m| m.raw_route() == "/...")
    {
        return openapi(document, request.method());
    }
    let Some(route) = app.router.route(path) else {
        return Err(HostError::NotFound(format!("no route for {path}")));
    };
    let component = app
        .component(route.component_id())
        .ok_or(HostError::Internal)?
        .clone();
    let span = tracing::Span::current();
    let name = format!("{} {}", request.method(), route.based_route());
    crate::telemetry::rename(&span, name);
    span.record("http.route", route.based_route());
    span.record("component", &*component.id);
    let started = Instant::now();
    let verified = match &app.gateway.auth {
        Some(auth) => match auth.check(request.method(), path, request.headers()) {
            Ok(verified) => verified,
            Err(refused) => {
                let err = match refused {
                    Refused::Unauthorized { message, challenge } => {
                        HostError::Unauthorized(message, challenge)
                    }
                    Refused::OverRate {
                        subject,
                        retry_after,
                    } => HostError::TooManyRequests(
                        format!("over the request rate of API key `{subject}`; retry later"),
                        errors::retry_after_secs(retry_after),
                    ),
                };
                let status = err.status().as_u16();
                let metrics = &app.runtime.metrics;
                metrics.request(&component.labels, status, started.elapsed());
                return Err(err);
            }
        },
        None => None,
    };

    let full_url = format!(
        "http://{host}{}",
        request.uri().path_and_query().map_or("/", |pq| pq.as_str())
    );
    let (mut parts, incoming) = request.into_parts();
    set_spin_headers(
        &mut parts.headers,
        &RouteHeaders::from(&route),
        &full_url,
        Some(client),
    );
    if let Some(verified) = verified {
        set_subject_headers(&mut parts.headers, &verified);
    }
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (body, exceeded) = LimitedBody::new(incoming, component.max_request_body, declared);
    let request = Request::from_parts(parts, body.boxed_unsync());

    let deadline = app.deadline(&component);
    let response = invoke::invoke(app, &component, request, deadline).await;
    let answer = settle(response, &component, exceeded.load(Ordering::Relaxed)).await;
    let status = match &answer {
        Ok(response) => response.status(),
        Err(err) => err.status(),
    };
    app.runtime
        .metrics
        .request(&component.labels, status.as_u16(), started.elapsed());
    answer
}

/// The component's answer as the client gets it: `413` if the request body
/// was too large, unless the answer did not depend on it.
async fn settle(
    response: Result<Response<WasiBody>, HostError>,
    component: &crate::app::AppComponent,
    body_too_large: bool,
) -> Result<Response<WasiBody>, HostError> {
    if body_too_large {
        // Only answers that come before the body in the API's order of checks
        // (401, 404, 405) stand; anything else was made without (or from a
        // failed read of) the body.
        let keep = matches!(&response, Ok(r) if matches!(r.status().as_u16(), 401 | 404 | 405));
        if !keep {
            return Err(HostError::PayloadTooLarge(component.max_request_body));
        }
    }
    match body::settle(response?).await {
        Ok(response) => Ok(response),
        Err(err) => {
            tracing::error!(component = %component.id, error = %err, "response body failed");
            Err(HostError::Internal)
        }
    }
}

/// Where the host serves an app's OpenAPI document.
const OPENAPI_PATH: &str = "/openapi.json";

/// `path` is `expected`, with or without one trailing slash.
fn is_path(path: &str, expected: &str) -> bool {
    path == expected || path.strip_suffix('/') == Some(expected)
}

/// `GET /openapi.json`.
fn openapi(document: &bytes::Bytes, method: &Method) -> Result<Response<WasiBody>, HostError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(HostError::MethodNotAllowed("GET, HEAD"));
    }
    let mut response = Response::new(crate::capabilities::outbound_http::full_body(
        document.clone(),
    ));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `GET /health` and `GET /health/ready`, unless the app routes them.
async fn health(
    app: &App,
    path: &str,
    method: &Method,
) -> Option<Result<Response<WasiBody>, HostError>> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    if path != "/health" && path != "/health/ready" {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        return Some(Err(HostError::MethodNotAllowed("GET, HEAD")));
    }
    if path == "/health" {
        let body = serde_json::json!({"status": "ok"});
        return Some(Ok(json_response(StatusCode::OK, &body)));
    }
    let mut dependencies = serde_json::Map::new();
    if app.uses_database {
        let up = app.runtime.databases.ready().await;
        dependencies.insert("database".into(), if up { "up" } else { "down" }.into());
    }
    if let Some(broker) = &app.broker {
        let up = broker.is_connected();
        dependencies.insert("broker".into(), if up { "up" } else { "down" }.into());
    }
    let ready = dependencies.values().all(|state| state == "up");
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "dependencies": dependencies,
    });
    if ready {
        return Some(Ok(json_response(StatusCode::OK, &body)));
    }
    let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    Some(Ok(response))
}

fn request_host<B>(request: &Request<B>) -> Option<&str> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers().get(http::header::HOST)?.to_str().ok())
}

fn host_without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(']') => {
            name
        }
        _ => host,
    }
}

/// The route facts Spin passes to a component in headers.
struct RouteHeaders<'a> {
    path_info: String,
    matched: &'a str,
    raw: &'a str,
    component_route: String,
    named: Vec<(String, String)>,
}

impl<'a> From<&'a RouteMatch<'a>> for RouteHeaders<'a> {
    fn from(route: &'a RouteMatch<'a>) -> Self {
        Self {
            path_info: route.path_info(),
            matched: route.based_route(),
            raw: route.raw_route(),
            component_route: route.component_route(),
            named: route.named(),
        }
    }
}

impl RouteHeaders<'static> {
    /// A chained call: as in Spin, the callee sees the whole path as the
    /// wildcard part of a catch-all route.
    fn chained(path: &str) -> Self {
        Self {
            path_info: path.to_owned(),
            matched: "/...",
            raw: "/...",
            component_route: String::new(),
            named: Vec::new(),
        }
    }
}

/// Sets Spin's request headers; inbound `spin-*` and `trellis-*` headers
/// (what the host sets) are dropped first so a client cannot forge them.
fn set_spin_headers(
    headers: &mut HeaderMap,
    route: &RouteHeaders<'_>,
    full_url: &str,
    client: Option<SocketAddr>,
) {
    let reserved = |name: &HeaderName| is_reserved_header(name.as_str());
    if headers.keys().any(reserved) {
        let forged: Vec<HeaderName> = headers.keys().filter(|n| reserved(n)).cloned().collect();
        for name in forged {
            headers.remove(name);
        }
    }
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    };
    set(HeaderName::from_static("spin-full-url"), full_url);
    set(HeaderName::from_static("spin-path-info"), &route.path_info);
    set(HeaderName::from_static("spin-matched-route"), route.matched);
    set(HeaderName::from_static("spin-base-path"), "/");
    set(
        HeaderName::from_static("spin-raw-component-route"),
        route.raw,
    );
    set(
        HeaderName::from_static("spin-component-route"),
        &route.component_route,
    );
    if let Some(client) = client {
        set(
            HeaderName::from_static("spin-client-addr"),
            &client.to_string(),
        );
    }
    for (name, value) in &route.named {
        if let Ok(name) =
            HeaderName::try_from(format!("spin-path-match-{}", name.to_ascii_lowercase()))
        {
            set(name, value);
        }
    }
}

/// Headers only the host sets on what it passes to components (`spin-*`,
/// `trellis-*`); inbound copies are dropped.
pub fn is_reserved_header(name: &str) -> bool {
    name.starts_with("spin-") || name.starts_with("trellis-")
}

/// Tells the component who the gateway verified the caller to be.
fn set_subject_headers(headers: &mut HeaderMap, verified: &crate::gateway::auth::Verified) {
    use crate::gateway::auth::{SCHEME_HEADER, SUBJECT_HEADER};
    if let Ok(subject) = HeaderValue::try_from(&*verified.subject) {
        headers.insert(HeaderName::from_static(SUBJECT_HEADER), subject);
        headers.insert(
            HeaderName::from_static(SCHEME_HEADER),
            HeaderValue::from_static(verified.scheme.name()),
        );
    }
}

/// In-process service chaining, handed to guests' outbound HTTP.
pub(crate) struct Chaining(pub(crate) Weak<App>);

impl InternalDispatch for Chaining {
    fn dispatch(
        &self,
        component: &str,
        mut request: Request<WasiBody>,
        deadline: Instant,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Response<WasiBody>, HttpError>> + Send>> {
        let app = self.0.upgrade();
        let component = component.to_owned();
        Box::pin(async move {
            let app = app.ok_or(HttpError::DestinationUnavailable)?;
            let Some(callee) = app.component(&component).cloned() else {
                return Err(HttpError::DestinationNotFound);
            };
            let route = RouteHeaders::chained(request.uri().path());
            let full_url = request.uri().to_string();
            set_spin_headers(request.headers_mut(), &route, &full_url, None);
            let deadline = deadline.min(app.deadline(&callee));
            Ok(invoke::invoke(&app, &callee, request, deadline)
                .await
                .unwrap_or_else(HostError::into_response))
        })
    }
}
