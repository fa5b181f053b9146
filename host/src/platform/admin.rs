//! The admin API of `trellis serve`: JSON over HTTP on a listener of its
//! own, every request with `Authorization: Bearer <token>`. Errors use the
//! same envelope as the host's public answers:
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /v1/tenants` | lists tenants and their apps |
//! | `POST /v1/tenants` `{"name", "limits"?}` | creates a tenant (`201`; `409` if it exists) |
//! | `PUT /v1/tenants/{t}/limits` | sets its limits (see [`TenantLimits`]); its apps are rebuilt |
//! | `POST /v1/tenants/{t}/suspend`, `/resume` | stops or restarts serving its apps |
//! | `DELETE /v1/tenants/{t}` | deletes it, its apps, schemas, roles and queues |
//! | `HEAD`, `PUT /v1/blobs/{sha256}` | asks for, uploads component bytes |
//! | `PUT /v1/tenants/{t}/apps/{a}` | deploys a whole app (see [`AppUpload`]) |
//! | `GET /v1/tenants/{t}/apps/{a}` | the app's active versions and revision |
//! | `GET /v1/tenants/{t}/apps/{a}/versions` | every version of every component |
//! | `PUT /v1/tenants/{t}/apps/{a}/components/{c}` `{"digest"}` | deploys one component |
//! | `POST /v1/tenants/{t}/apps/{a}/components/{c}/rollback` `{"version"?}` | makes an earlier version active |
//! | `POST /v1/tenants/{t}/tokens` | makes a token for the tenant (`201`, shown once; stored as its SHA-256) |
//! | `GET /v1/tenants/{t}/tokens`, `DELETE .../tokens/{id}` | lists (ids), revokes one |
//! | `GET /v1/status` | what this host serves |
//! | `GET /metrics` | Prometheus metrics of this host (see [`crate::metrics`]) |
//!
//! Two kinds of token: the operator's (`--admin-token`) may do everything; a
//! tenant's (made by the operator, revocable) may upload component bytes and
//! deploy, roll back and read its own tenant's apps, and gets `403` for the
//! rest. With `--admin-tls-cert` and `--admin-tls-key` the API speaks TLS.
//!
//! A deployment is validated before anything is stored: the manifest reads,
//! every component compiles and links against what the host provides, and
//! exports what its triggers call. The answer says why when it does not
//! (`422`), and nothing changed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;

use super::names::{self, AppKey};
use super::quota::TenantLimits;
use super::registry::{DeployError, Platform, check_asset_path};
use super::store::{AppRecord, Refusal};

/// Largest component upload.
pub const MAX_BLOB: usize = 64 << 20;
/// Largest JSON request (an app's manifest and assets).
const MAX_JSON: usize = 16 << 20;

/// `PUT /v1/tenants/{t}/apps/{a}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppUpload {
    /// The `spin.toml` text.
    pub manifest: String,
    /// The uploaded bytes of each component, by id: SHA-256, hex.
    pub components: BTreeMap<String, String>,
    /// Files the manifest refers to (migrations, mounted files), by path
    /// relative to the manifest, base64-encoded.
    #[serde(default)]
    pub assets: BTreeMap<String, String>,
    /// Values for the manifest's `[variables]`.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentUpload {
    digest: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rollback {
    version: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    #[serde(default)]
    limits: TenantLimits,
}

/// An admin answer that is not a success.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        let message = refusal.to_string();
        match refusal {
            Refusal::NoTenant(_)
            | Refusal::NoApp(_)
            | Refusal::NoComponent(..)
            | Refusal::NoVersion(..) => Failure::not_found(message),
            Refusal::TenantExists(_) => Failure::new(StatusCode::CONFLICT, "conflict", message),
            Refusal::Suspended(_) => Failure::new(StatusCode::CONFLICT, "suspended", message),
            Refusal::NoBlob(_) => Failure::invalid(message),
            // A host that cannot open what another sealed: its operator's
            // to fix, not the client's.
            Refusal::Variables(_) => {
                tracing::error!("admin: platform store: {message}");
                Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
            Refusal::Database(err) => {
                tracing::error!("admin: platform store: {err}");
                Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the platform database is unavailable",
                )
            }
        }
    }
}

impl From<DeployError> for Failure {
    fn from(err: DeployError) -> Self {
        match err {
            DeployError::Invalid(err) => Failure::invalid(format!("{err:#}")),
            DeployError::Refused(refusal) => refusal.into(),
        }
    }
}

type Answer = Result<(StatusCode, Value), Failure>;

/// Serves the admin API on `listener` until `shutdown` completes; over TLS
/// when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    platform: Arc<Platform>,
    token: Arc<str>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!("admin accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let platform = platform.clone();
        let token = token.clone();
        let service = service_fn(move |request| {
            let platform = platform.clone();
            let token = token.clone();
            async move { Ok::<_, Infallible>(handle(&platform, &token, request).await) }
        });
        let http = http.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let served = match acceptor {
                None => http.serve_connection(TokioIo::new(stream), service).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            http.serve_connection(TokioIo::new(stream), service).await
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, "admin TLS handshake failed: {err}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "admin TLS handshake: no answer");
                            return;
                        }
                    }
                }
            };
            if let Err(err) = served {
                tracing::debug!("admin connection ended: {err}");
            }
        });
    }
}

/// Who calls the admin API, by the bearer token they give.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Caller {
    /// `--admin-token`: everything.
    Operator,
    /// A token the operator made for this tenant: its own apps only.
    Tenant(String),
}

async fn caller<B>(
    platform: &Platform,
    token: &str,
    request: &Request<B>,
) -> Result<Caller, Failure> {
    let unauthorized = || {
        Failure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin token (Authorization: Bearer <token>)",
        )
    };
    let given = bearer(request).ok_or_else(unauthorized)?;
    if same_token(given, token) {
        return Ok(Caller::Operator);
    }
    match platform.store.tenant_of_token(given).await? {
        Some(tenant) => Ok(Caller::Tenant(tenant)),
        None => Err(unauthorized()),
    }
}

/// What a tenant's token may do: upload component bytes, and deploy, roll
/// back and read the apps of its own tenant. Everything else (tenants,
/// limits, tokens, other tenants, the host's status and metrics) is the
/// operator's.
fn permit(caller: &Caller, method: &str, segments: &[&str]) -> Result<(), Failure> {
    let Caller::Tenant(own) = caller else {
        return Ok(());
    };
    let allowed = match (method, segments) {
        ("HEAD" | "GET" | "PUT", ["v1", "blobs", _]) => true,
        (_, ["v1", "tenants", tenant, "apps", _, ..]) => tenant == own,
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Failure::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "a token of tenant `{own}` may deploy, roll back and read that tenant's apps only"
            ),
        ))
    }
}

async fn handle(
    platform: &Platform,
    token: &str,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let answer = match caller(platform, token, &request).await {
        Err(failure) => Err(failure),
        Ok(Caller::Operator)
            if request.method() == http::Method::GET && request.uri().path() == "/metrics" =>
        {
            return metrics(platform);
        }
        Ok(caller) => route(platform, &caller, request).await,
    };
    let (status, body) = match answer {
        Ok(ok) => ok,
        Err(failure) => (
            failure.status,
            json!({"error": {"code": failure.code, "message": failure.message}}),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// `GET /metrics`: the OpenMetrics text of this host.
fn metrics(platform: &Platform) -> Response<Full<Bytes>> {
    crate::metrics::response(&platform.runtime)
}

/// The bearer token of `request`, if it gives one.
fn bearer<B>(request: &Request<B>) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Compares two tokens in constant time (as digests, so lengths do not
/// show either).
fn same_token(given: &str, token: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(token.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn route(platform: &Platform, caller: &Caller, request: Request<Incoming>) -> Answer {
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = request.method().clone();
    permit(caller, method.as_str(), &segments)?;
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "tenants", tenant, "tokens"]) => {
            let (id, token) = platform.store.create_token(tenant).await?;
            tracing::info!(tenant = %tenant, id = %id, "tenant token created");
            Ok((
                StatusCode::CREATED,
                json!({"tenant": tenant, "id": id, "token": token}),
            ))
        }
        ("GET", ["v1", "tenants", tenant, "tokens"]) => {
            let tokens: Vec<Value> = platform
                .store
                .tokens(tenant)
                .await?
                .into_iter()
                .map(|(id, created_at)| json!({"id": id, "created_at": created_at}))
                .collect();
            Ok((StatusCode::OK, json!({"tenant": tenant, "tokens": tokens})))
        }
        ("DELETE", ["v1", "tenants", tenant, "tokens", id]) => {
            if !platform.store.revoke_token(tenant, id).await? {
                return Err(Failure::not_found(format!(
                    "tenant `{tenant}` has no token `{id}`"
                )));
            }
            tracing::info!(tenant = %tenant, id = %id, "tenant token revoked");
            Ok((
                StatusCode::OK,
                json!({"tenant": tenant, "id": id, "revoked": true}),
            ))
        }
        ("GET", ["v1", "status"]) => status(platform).await,
        ("GET", ["v1", "tenants"]) => Ok((
            StatusCode::OK,
            json!({"tenants": platform.store.tenants().await?}),
        )),
        ("POST", ["v1", "tenants"]) => {
            let new: NewTenant = read_json(request).await?;
            names::check("tenant", &new.name).map_err(|e| Failure::invalid(e.to_string()))?;
            new.limits.check().map_err(Failure::invalid)?;
            platform.store.create_tenant(&new.name, &new.limits).await?;
            tracing::info!(tenant = %new.name, "tenant created");
            Ok((
                StatusCode::CREATED,
                json!({"name": new.name, "suspended": false, "limits": new.limits}),
            ))
        }
        ("PUT", ["v1", "tenants", tenant, "limits"]) => {
            let limits: TenantLimits = read_json(request).await?;
            limits.check().map_err(Failure::invalid)?;
            platform.store.set_limits(tenant, &limits).await?;
            platform.reload_tenant(tenant).await;
            Ok((StatusCode::OK, json!({"name": tenant, "limits": limits})))
        }
        ("POST", ["v1", "tenants", tenant, action @ ("suspend" | "resume")]) => {
            let suspended = *action == "suspend";
            platform.store.set_suspended(tenant, suspended).await?;
            platform.reload_tenant(tenant).await;
            Ok((
                StatusCode::OK,
                json!({"name": tenant, "suspended": suspended}),
            ))
        }
        ("DELETE", ["v1", "tenants", tenant]) => {
            let apps = platform.store.delete_tenant(tenant).await?;
            platform.reload_tenant(tenant).await;
            let removed = super::cleanup::remove_tenant_resources(platform, tenant, &apps).await;
            tracing::info!(tenant = %tenant, "tenant deleted");
            Ok((
                StatusCode::OK,
                json!({"name": tenant, "deleted": true, "removed": removed}),
            ))
        }
        ("HEAD" | "GET", ["v1", "blobs", digest]) => {
            if platform.store.has_blob(digest).await? {
                Ok((StatusCode::OK, json!({"digest": digest})))
            } else {
                Err(Failure::not_found(format!(
                    "no component bytes with digest {digest}"
                )))
            }
        }
        ("PUT", ["v1", "blobs", digest]) => {
            let digest = (*digest).to_owned();
            put_blob(platform, &digest, request).await
        }
        ("PUT", ["v1", "tenants", tenant, "apps", app]) => {
            let key = app_key(tenant, app)?;
            let upload: AppUpload = read_json(request).await?;
            deploy_app(platform, key, upload).await
        }
        ("GET", ["v1", "tenants", tenant, "apps", app]) => {
            let key = AppKey::new(tenant, app);
            let record = stored_app(platform, &key).await?;
            Ok((StatusCode::OK, app_json(&record)))
        }
        ("GET", ["v1", "tenants", tenant, "apps", app, "versions"]) => {
            let key = AppKey::new(tenant, app);
            stored_app(platform, &key).await?;
            let versions = platform.store.versions(&key).await?;
            Ok((StatusCode::OK, json!({"versions": versions})))
        }
        (
            "PUT",
            [
                "v1",
                "tenants",
                tenant,
                "apps",
                app,
                "components",
                component,
            ],
        ) => {
            let key = AppKey::new(tenant, app);
            let component = (*component).to_owned();
            let upload: ComponentUpload = read_json(request).await?;
            let candidate = platform
                .store
                .app_with(&key, &component, &upload.digest)
                .await?;
            let applied = platform
                .deploy(&candidate, || {
                    platform
                        .store
                        .put_component(&key, &component, &upload.digest)
                })
                .await?;
            applied_json(platform, &key, applied).await
        }
        (
            "POST",
            [
                "v1",
                "tenants",
                tenant,
                "apps",
                app,
                "components",
                component,
                "rollback",
            ],
        ) => {
            let key = AppKey::new(tenant, app);
            let component = (*component).to_owned();
            let rollback: Rollback = read_json_or_empty(request).await?;
            let current = stored_app(platform, &key).await?;
            let active = current
                .components
                .get(&component)
                .ok_or_else(|| Refusal::NoComponent(key.clone(), component.clone()))?;
            let target = match rollback.version {
                Some(version) => version,
                None => previous_version(platform, &key, &component, active.version).await?,
            };
            let digest = platform.store.digest_of(&key, &component, target).await?;
            let candidate = platform.store.app_with(&key, &component, &digest).await?;
            let applied = platform
                .deploy(&candidate, || {
                    platform.store.rollback(&key, &component, target)
                })
                .await?;
            applied_json(platform, &key, applied).await
        }
        (_, ["v1", ..]) => Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(Failure::not_found(format!("no admin route {path}"))),
    }
}

/// The app as stored, or `404`.
async fn stored_app(platform: &Platform, key: &AppKey) -> Result<AppRecord, Failure> {
    Ok(platform
        .store
        .app(key)
        .await?
        .ok_or_else(|| Refusal::NoApp(key.clone()))?)
}

fn app_key(tenant: &str, app: &str) -> Result<AppKey, Failure> {
    names::check("tenant", tenant).map_err(|e| Failure::invalid(e.to_string()))?;
    names::check("app", app).map_err(|e| Failure::invalid(e.to_string()))?;
    Ok(AppKey::new(tenant, app))
}

async fn previous_version(
    platform: &Platform,
    key: &AppKey,
    component: &str,
    active: i32,
) -> Result<i32, Failure> {
    platform
        .store
        .versions(key)
        .await?
        .into_iter()
        .filter(|v| v.component == component && v.version < active)
        .map(|v| v.version)
        .max()
        .ok_or_else(|| {
            Failure::not_found(format!(
                "component `{component}` of `{key}` has no version before {active}"
            ))
        })
}

async fn deploy_app(platform: &Platform, key: AppKey, upload: AppUpload) -> Answer {
    for path in upload.assets.keys() {
        check_asset_path(path).map_err(Failure::invalid)?;
    }
    let mut components = BTreeMap::new();
    for (id, digest) in &upload.components {
        if !platform.store.has_blob(digest).await? {
            return Err(Failure::invalid(format!(
                "component `{id}`: no uploaded bytes with digest {digest}; upload them first (PUT /v1/blobs/{digest})"
            )));
        }
        components.insert(
            id.clone(),
            super::store::Active {
                version: 0,
                digest: digest.clone(),
            },
        );
    }
    let candidate = AppRecord {
        key: key.clone(),
        manifest: upload.manifest.clone(),
        assets: upload.assets.clone(),
        variables: upload.variables.clone(),
        revision: 0,
        components,
        suspended: false,
        limits: platform.store.limits_of(&key.tenant).await?,
    };
    let applied = platform
        .deploy(&candidate, || {
            platform.store.put_app(
                &key,
                &upload.manifest,
                &upload.assets,
                &upload.variables,
                &upload.components,
            )
        })
        .await?;
    applied_json(platform, &key, applied).await
}

async fn put_blob(platform: &Platform, digest: &str, request: Request<Incoming>) -> Answer {
    if digest.len() != 64
        || !digest
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(Failure::bad_request(
            "a blob is named by the SHA-256 of its bytes: 64 lower-case hex digits",
        ));
    }
    let bytes = Limited::new(request.into_body(), MAX_BLOB)
        .collect()
        .await
        .map_err(|err| {
            Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("component upload failed or is larger than {MAX_BLOB} bytes: {err}"),
            )
        })?
        .to_bytes();
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != digest {
        return Err(Failure::invalid(format!(
            "the bytes' SHA-256 is {actual}, not {digest}"
        )));
    }
    if wasmparser_like_header(&bytes).is_err() {
        return Err(Failure::invalid(
            "the bytes are not a WebAssembly component",
        ));
    }
    platform.store.put_blob(digest, &bytes).await?;
    Ok((
        StatusCode::CREATED,
        json!({"digest": digest, "size": bytes.len()}),
    ))
}

/// The component binary's preamble: `\0asm`, then a component's version and
/// layer (a core module has layer 0).
fn wasmparser_like_header(bytes: &[u8]) -> Result<(), ()> {
    match bytes.get(..8) {
        Some([0x00, 0x61, 0x73, 0x6d, _, _, 0x01, 0x00]) => Ok(()),
        _ => Err(()),
    }
}

async fn status(platform: &Platform) -> Answer {
    let apps: Vec<Value> = platform
        .status()
        .await
        .into_iter()
        .map(|(key, revision, serving)| {
            json!({"tenant": key.tenant, "app": key.app, "revision": revision, "serving": serving})
        })
        .collect();
    Ok((StatusCode::OK, json!({"apps": apps})))
}

fn app_json(record: &AppRecord) -> Value {
    json!({
        "tenant": record.key.tenant,
        "app": record.key.app,
        "revision": record.revision,
        "suspended": record.suspended,
        "components": record.components,
    })
}

async fn applied_json(
    platform: &Platform,
    key: &AppKey,
    applied: super::registry::Applied,
) -> Answer {
    let record = stored_app(platform, key).await?;
    let mut body = app_json(&record);
    body["applied"] = json!(applied);
    Ok((StatusCode::OK, body))
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, Failure> {
    let bytes = collect_json(request).await?;
    serde_json::from_slice(&bytes)
        .map_err(|err| Failure::bad_request(format!("request body: {err}")))
}

async fn read_json_or_empty<T: serde::de::DeserializeOwned + Default>(
    request: Request<Incoming>,
) -> Result<T, Failure> {
    let bytes = collect_json(request).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|err| Failure::bad_request(format!("request body: {err}")))
}

async fn collect_json(request: Request<Incoming>) -> Result<Bytes, Failure> {
    Ok(Limited::new(request.into_body(), MAX_JSON)
        .collect()
        .await
        .map_err(|err| {
            Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body failed or is larger than {MAX_JSON} bytes: {err}"),
            )
        })?
        .to_bytes())
}
