//! The commands that drive a `trellis serve` through its admin API: tenants,
//! deploy (a whole app, or one component), versions, rollback, status.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Where the admin API is and the token it wants.
#[derive(Debug, Args)]
pub struct AdminConnection {
    /// The admin API of a `trellis serve`.
    #[arg(
        long,
        env = "TRELLIS_ADMIN_URL",
        default_value = "http://127.0.0.1:3001"
    )]
    pub admin_url: String,
    /// Its bearer token: the operator's, or a tenant's (`trellis tenant
    /// token create`), which may deploy and read only that tenant's apps.
    #[arg(long, env = "TRELLIS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// A CA certificate (PEM) to trust for an https:// admin URL, besides
    /// the public roots.
    #[arg(long, env = "TRELLIS_ADMIN_CA_FILE")]
    pub admin_ca_file: Option<std::path::PathBuf>,
}

/// A tenant's limits; unset ones are the host's.
#[derive(Debug, Args)]
pub struct LimitFlags {
    /// Linear memory of one instance, MiB.
    #[arg(long)]
    pub memory_limit_mib: Option<u64>,
    /// Deadline of one request, ms.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Instances alive at once across the tenant's apps (then 429).
    #[arg(long)]
    pub max_concurrency: Option<u32>,
    /// Public requests per second across the tenant's apps (then 429).
    #[arg(long)]
    pub requests_per_second: Option<u32>,
    /// CPU its guests may use, in thousandths of a core (then they pause).
    #[arg(long)]
    pub cpu_millicores: Option<u32>,
}

impl LimitFlags {
    fn json(&self) -> Value {
        let mut limits = serde_json::Map::new();
        let mut set = |name: &str, value: Option<u64>| {
            if let Some(value) = value {
                limits.insert(name.to_owned(), json!(value));
            }
        };
        set("memory_limit_mib", self.memory_limit_mib);
        set("timeout_ms", self.timeout_ms);
        set("max_concurrency", self.max_concurrency.map(u64::from));
        set(
            "requests_per_second",
            self.requests_per_second.map(u64::from),
        );
        set("cpu_millicores", self.cpu_millicores.map(u64::from));
        Value::Object(limits)
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        name: String,
        #[command(flatten)]
        limits: LimitFlags,
        #[command(flatten)]
        admin: AdminConnection,
    },
    /// Set a tenant's limits (replacing all of them); its apps are rebuilt.
    Limits {
        name: String,
        #[command(flatten)]
        limits: LimitFlags,
        #[command(flatten)]
        admin: AdminConnection,
    },
    /// List tenants and their apps.
    List {
        #[command(flatten)]
        admin: AdminConnection,
    },
    /// Stop serving a tenant's apps (they answer 503) until resumed.
    Suspend {
        name: String,
        #[command(flatten)]
        admin: AdminConnection,
    },
    /// Serve a suspended tenant's apps again.
    Resume {
        name: String,
        #[command(flatten)]
        admin: AdminConnection,
    },
    /// Tokens a tenant's team deploys with: they may deploy, roll back and
    /// read that tenant's apps, nothing else.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Delete a tenant: its apps, their data (schemas and roles) and queues.
    Delete {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        admin: AdminConnection,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token for a tenant; it is printed once (the host keeps only
    /// its SHA-256).
    Create {
        tenant: String,
        #[command(flatten)]
        admin: AdminConnection,
    },
    /// List a tenant's tokens (their ids).
    List {
        tenant: String,
        #[command(flatten)]
        admin: AdminConnection,
    },
    /// Revoke one of a tenant's tokens, by id.
    Revoke {
        tenant: String,
        id: String,
        #[command(flatten)]
        admin: AdminConnection,
    },
}

impl TokenCommand {
    async fn run(self) -> Result<()> {
        match self {
            TokenCommand::Create { tenant, admin } => {
                let made = Api::new(&admin)?
                    .call(Method::POST, &format!("/v1/tenants/{tenant}/tokens"), None)
                    .await?;
                eprintln!(
                    "token {} of tenant {tenant} (shown once; give it as --admin-token):",
                    made["id"].as_str().unwrap_or("?")
                );
                println!("{}", made["token"].as_str().unwrap_or_default());
            }
            TokenCommand::List { tenant, admin } => {
                let listed = Api::new(&admin)?
                    .call(Method::GET, &format!("/v1/tenants/{tenant}/tokens"), None)
                    .await?;
                for token in listed["tokens"].as_array().into_iter().flatten() {
                    println!(
                        "{}  created {}",
                        token["id"].as_str().unwrap_or("?"),
                        token["created_at"].as_str().unwrap_or("?")
                    );
                }
            }
            TokenCommand::Revoke { tenant, id, admin } => {
                Api::new(&admin)?
                    .call(
                        Method::DELETE,
                        &format!("/v1/tenants/{tenant}/tokens/{id}"),
                        None,
                    )
                    .await?;
                println!("token {id} of tenant {tenant} revoked");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The tenant to deploy to.
    #[arg(long, env = "TRELLIS_TENANT")]
    pub tenant: String,
    #[command(flatten)]
    pub manifest: super::ManifestArg,
    /// The app; default: the manifest's `[application] name`.
    #[arg(long)]
    pub app: Option<String>,
    /// Deploy only this component, from this Wasm file.
    #[arg(long, num_args = 2, value_names = ["ID", "WASM"])]
    pub component: Option<Vec<String>>,
    /// A value for one of the manifest's `[variables]` (repeatable).
    #[arg(long = "variable", value_name = "NAME=VALUE")]
    pub variables: Vec<String>,
    #[command(flatten)]
    pub admin: AdminConnection,
}

#[derive(Debug, Args)]
pub struct AppArgs {
    #[arg(long, env = "TRELLIS_TENANT")]
    pub tenant: String,
    #[arg(long)]
    pub app: String,
    #[command(flatten)]
    pub admin: AdminConnection,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[arg(long, env = "TRELLIS_TENANT")]
    pub tenant: String,
    #[arg(long)]
    pub app: String,
    #[arg(long)]
    pub component: String,
    /// The version to make active; default: the one before the active one.
    #[arg(long = "to")]
    pub version: Option<i32>,
    #[command(flatten)]
    pub admin: AdminConnection,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// With --app: that app's active versions; else what the host serves.
    #[arg(long, env = "TRELLIS_TENANT", requires = "app")]
    pub tenant: Option<String>,
    #[arg(long, requires = "tenant")]
    pub app: Option<String>,
    #[command(flatten)]
    pub admin: AdminConnection,
}

impl TenantCommand {
    pub async fn run(self) -> Result<()> {
        match self {
            TenantCommand::Create {
                name,
                limits,
                admin,
            } => {
                let api = Api::new(&admin)?;
                api.call(
                    Method::POST,
                    "/v1/tenants",
                    Some(json!({"name": name, "limits": limits.json()})),
                )
                .await?;
                println!("tenant {name} created");
            }
            TenantCommand::Limits {
                name,
                limits,
                admin,
            } => {
                let set = Api::new(&admin)?
                    .call(
                        Method::PUT,
                        &format!("/v1/tenants/{name}/limits"),
                        Some(limits.json()),
                    )
                    .await?;
                println!("tenant {name} limits: {}", set["limits"]);
            }
            TenantCommand::List { admin } => {
                let listed = Api::new(&admin)?
                    .call(Method::GET, "/v1/tenants", None)
                    .await?;
                for tenant in listed["tenants"].as_array().into_iter().flatten() {
                    let apps: Vec<&str> = tenant["apps"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    println!(
                        "{}{}  apps: {}",
                        tenant["name"].as_str().unwrap_or("?"),
                        if tenant["suspended"] == json!(true) {
                            " (suspended)"
                        } else {
                            ""
                        },
                        if apps.is_empty() {
                            "-".to_owned()
                        } else {
                            apps.join(", ")
                        }
                    );
                }
            }
            TenantCommand::Suspend { name, admin } => {
                Api::new(&admin)?
                    .call(Method::POST, &format!("/v1/tenants/{name}/suspend"), None)
                    .await?;
                println!("tenant {name} suspended");
            }
            TenantCommand::Resume { name, admin } => {
                Api::new(&admin)?
                    .call(Method::POST, &format!("/v1/tenants/{name}/resume"), None)
                    .await?;
                println!("tenant {name} resumed");
            }
            TenantCommand::Token(command) => command.run().await?,
            TenantCommand::Delete { name, yes, admin } => {
                if !yes {
                    confirm_delete(&name)?;
                }
                let deleted = Api::new(&admin)?
                    .call(Method::DELETE, &format!("/v1/tenants/{name}"), None)
                    .await?;
                for removed in deleted["removed"].as_array().into_iter().flatten() {
                    println!("  removed {}", removed.as_str().unwrap_or("?"));
                }
                println!("tenant {name} deleted");
            }
        }
        Ok(())
    }
}

/// Asks on the terminal; without one, refuses (use `--yes`).
fn confirm_delete(name: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "deleting tenant `{name}` removes its apps, data and queues: pass --yes to confirm (no terminal to ask on)"
        );
    }
    eprint!("Delete tenant `{name}` with its apps, data and queues? Type its name to confirm: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != name {
        bail!("not confirmed; nothing deleted");
    }
    Ok(())
}

impl DeployArgs {
    pub async fn run(self) -> Result<()> {
        let api = Api::new(&self.admin)?;
        let variables = parse_variables(&self.variables)?;
        if let Some(component) = &self.component {
            let [id, wasm] = component.as_slice() else {
                bail!("--component takes an id and a Wasm file");
            };
            let app = match &self.app {
                Some(app) => app.clone(),
                None => self.manifest.load()?.application.name,
            };
            if !variables.is_empty() {
                bail!("--variable applies to a whole-app deploy, not to --component");
            }
            let digest = upload(&api, id, Path::new(wasm)).await?;
            eprintln!("deploying component {id} of {}/{app}...", self.tenant);
            let started = Instant::now();
            let deployed = api
                .call(
                    Method::PUT,
                    &format!("/v1/tenants/{}/apps/{app}/components/{id}", self.tenant),
                    Some(json!({"digest": digest})),
                )
                .await?;
            print_deployed(&deployed, started);
            return Ok(());
        }

        let manifest = self.manifest.load()?;
        let app = self
            .app
            .clone()
            .unwrap_or(manifest.application.name.clone());
        let mut components = BTreeMap::new();
        for component in manifest.components.values() {
            let digest = upload(&api, &component.id, &component.source).await?;
            components.insert(component.id.clone(), digest);
        }
        let assets = collect_assets(&manifest)?;
        let text = std::fs::read_to_string(&manifest.path)
            .with_context(|| format!("reading {}", manifest.path.display()))?;
        eprintln!(
            "deploying {}/{app} ({} components, {} files): compiling and checking...",
            self.tenant,
            components.len(),
            assets.len()
        );
        let started = Instant::now();
        let deployed = api
            .call(
                Method::PUT,
                &format!("/v1/tenants/{}/apps/{app}", self.tenant),
                Some(json!({
                    "manifest": text,
                    "components": components,
                    "assets": assets,
                    "variables": variables,
                })),
            )
            .await?;
        print_deployed(&deployed, started);
        Ok(())
    }
}

impl AppArgs {
    pub async fn run(self) -> Result<()> {
        let listed = Api::new(&self.admin)?
            .call(
                Method::GET,
                &format!("/v1/tenants/{}/apps/{}/versions", self.tenant, self.app),
                None,
            )
            .await?;
        println!(
            "{:<16} {:>7}  {:<20}  digest",
            "component", "version", "created"
        );
        for v in listed["versions"].as_array().into_iter().flatten() {
            println!(
                "{:<16} {:>7}  {:<20}  {}{}",
                v["component"].as_str().unwrap_or("?"),
                v["version"],
                v["created_at"].as_str().unwrap_or(""),
                &v["digest"].as_str().unwrap_or("")
                    [..12.min(v["digest"].as_str().unwrap_or("").len())],
                if v["active"] == json!(true) {
                    "  (active)"
                } else {
                    ""
                }
            );
        }
        Ok(())
    }
}

impl RollbackArgs {
    pub async fn run(self) -> Result<()> {
        let started = Instant::now();
        let body = match self.version {
            Some(version) => json!({"version": version}),
            None => json!({}),
        };
        let deployed = Api::new(&self.admin)?
            .call(
                Method::POST,
                &format!(
                    "/v1/tenants/{}/apps/{}/components/{}/rollback",
                    self.tenant, self.app, self.component
                ),
                Some(body),
            )
            .await?;
        print_deployed(&deployed, started);
        Ok(())
    }
}

impl StatusArgs {
    pub async fn run(self) -> Result<()> {
        let api = Api::new(&self.admin)?;
        if let (Some(tenant), Some(app)) = (&self.tenant, &self.app) {
            let status = api
                .call(
                    Method::GET,
                    &format!("/v1/tenants/{tenant}/apps/{app}"),
                    None,
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            let status = api.call(Method::GET, "/v1/status", None).await?;
            for app in status["apps"].as_array().into_iter().flatten() {
                println!(
                    "{}/{}  revision {}  {}",
                    app["tenant"].as_str().unwrap_or("?"),
                    app["app"].as_str().unwrap_or("?"),
                    app["revision"],
                    if app["serving"] == json!(true) {
                        "serving"
                    } else {
                        "not serving"
                    }
                );
            }
        }
        Ok(())
    }
}

fn print_deployed(deployed: &Value, started: Instant) {
    println!(
        "{}/{} revision {} live ({} ms on the host, {} ms in all)",
        deployed["tenant"].as_str().unwrap_or("?"),
        deployed["app"].as_str().unwrap_or("?"),
        deployed["revision"],
        deployed["applied"]["elapsed_ms"],
        started.elapsed().as_millis()
    );
    if let Some(components) = deployed["components"].as_object() {
        for (id, active) in components {
            println!("  {id}: version {}", active["version"]);
        }
    }
}

fn parse_variables(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--variable `{pair}`: expected NAME=VALUE"))
        })
        .collect()
}

/// Uploads a component's bytes unless the platform has them; their digest.
async fn upload(api: &Api, id: &str, path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "component `{id}`: reading {} (build it first: `trellis build`)",
            path.display()
        )
    })?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if api.exists(&format!("/v1/blobs/{digest}")).await? {
        eprintln!("{id}: {} already uploaded", &digest[..12]);
        return Ok(digest);
    }
    eprint!(
        "{id}: uploading {:.1} MiB... ",
        bytes.len() as f64 / (1 << 20) as f64
    );
    let started = Instant::now();
    api.send(
        Method::PUT,
        &format!("/v1/blobs/{digest}"),
        Bytes::from(bytes),
        "application/wasm",
    )
    .await
    .with_context(|| format!("uploading component `{id}`"))?;
    eprintln!("done in {} ms", started.elapsed().as_millis());
    Ok(digest)
}

/// The files an app's manifest refers to (migrations, mounted directories,
/// the JWKS file, the OpenAPI document), by path relative to the manifest, base64-encoded.
fn collect_assets(manifest: &crate::manifest::AppManifest) -> Result<BTreeMap<String, String>> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let auth = manifest.application.trellis.auth.as_ref();
    dirs.extend(auth.and_then(|a| a.jwt.as_ref()?.jwks.clone()));
    dirs.extend(manifest.application.trellis.openapi.clone());
    for component in manifest.components.values() {
        dirs.extend(
            component
                .trellis
                .databases
                .values()
                .filter_map(|d| d.migrations.clone()),
        );
        dirs.extend(component.files.iter().map(|f| f.source.clone()));
    }
    let mut assets = BTreeMap::new();
    for dir in dirs {
        let relative = dir.strip_prefix(&manifest.dir).map_err(|_| {
            anyhow::anyhow!(
                "{} is outside the app directory {}: a deployed app can only use files under it",
                dir.display(),
                manifest.dir.display()
            )
        })?;
        add_dir(&dir, relative, &mut assets)?;
    }
    Ok(assets)
}

fn add_dir(dir: &Path, relative: &Path, assets: &mut BTreeMap<String, String>) -> Result<()> {
    if dir.is_file() {
        let bytes = std::fs::read(dir).with_context(|| format!("reading {}", dir.display()))?;
        assets.insert(
            relative.to_string_lossy().into_owned(),
            base64::engine::general_purpose::STANDARD.encode(bytes),
        );
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        add_dir(&entry.path(), &relative.join(entry.file_name()), assets)?;
    }
    Ok(())
}

/// A client of the admin API.
struct Api {
    base: String,
    token: String,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Api {
    fn new(admin: &AdminConnection) -> Result<Self> {
        if !admin.admin_url.starts_with("http://") && !admin.admin_url.starts_with("https://") {
            bail!(
                "--admin-url must be an http:// or https:// URL, not `{}`",
                admin.admin_url
            );
        }
        let tls = crate::tls::client_config(admin.admin_ca_file.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            base: admin.admin_url.trim_end_matches('/').to_owned(),
            token: admin.admin_token.clone(),
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        self.send(method, path, body, "application/json").await
    }

    async fn exists(&self, path: &str) -> Result<bool> {
        let (status, _) = self
            .raw(Method::HEAD, path, Bytes::new(), "application/json")
            .await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            StatusCode::UNAUTHORIZED => bail!("the admin API refused the token (401)"),
            StatusCode::FORBIDDEN => bail!("the token may not do this (403): {path}"),
            other => bail!("HEAD {path}: {other}"),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<Value> {
        let (status, bytes) = self.raw(method.clone(), path, body, content_type).await?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            bail!("{method} {path}: {status}: {message}");
        }
        Ok(value)
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<(StatusCode, Bytes)> {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .context("building the request")?;
        let response = self.http.request(request).await.map_err(|err| {
            // The cause says what went wrong (refused, TLS, unknown CA).
            let mut cause = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(inner) = source {
                cause = format!("{cause}: {inner}");
                source = inner.source();
            }
            anyhow::anyhow!("cannot reach the admin API at {}: {cause}", self.base)
        })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .context("reading the admin API's answer")?
            .to_bytes();
        Ok((status, bytes))
    }
}
