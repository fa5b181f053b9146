//! The validated application model that the rest of the host consumes.
//! Paths are absolute; ids, routes, templates and limits have been checked.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A loaded and validated `spin.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppManifest {
    /// The manifest file (absolute).
    pub path: PathBuf,
    /// Its directory: the base for relative paths (absolute).
    pub dir: PathBuf,
    /// `[application]`.
    pub application: Application,
    /// `[variables]`, by name.
    pub variables: BTreeMap<String, Variable>,
    /// `[[trigger.http]]`, in manifest order.
    pub http_triggers: Vec<HttpTrigger>,
    /// `[[trigger.amqp]]`, in manifest order.
    pub amqp_triggers: Vec<AmqpTrigger>,
    /// `[component.<id>]`, by id.
    pub components: BTreeMap<String, Component>,
}

impl AppManifest {
    /// `(component id, route)` of every public HTTP route, in manifest order:
    /// what [`crate::routing::Router::build`] takes.
    pub fn http_routes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.http_triggers.iter().filter_map(|t| match &t.route {
            HttpRoute::Path(route) => Some((t.component.as_str(), route.as_str())),
            HttpRoute::Private => None,
        })
    }
}

/// `[application]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// `name = "shop"`.
    pub name: String,
    /// `version = "1.0.0"`.
    pub version: Option<String>,
    /// `description = "..."`.
    pub description: Option<String>,
    /// `authors = ["..."]`.
    pub authors: Vec<String>,
    /// `[application.trigger.http] base`, default `/`.
    pub http_base: String,
    /// `[application.trigger.amqp]`, if present.
    pub amqp_defaults: Option<AmqpDefaults>,
    /// `[application.tool.trellis]`.
    pub trellis: AppTrellis,
}

/// `[application.tool.trellis]`: policies the host applies at the edge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppTrellis {
    /// Credentials routes require; `None`: every route is public.
    pub auth: Option<AuthPolicy>,
    /// Cross-origin requests; `None`: the host adds no CORS headers.
    pub cors: Option<CorsPolicy>,
    /// Call settings by target (`<id>.spin.internal` or `host:port`,
    /// lower-case); what is `None` keeps the host's default.
    pub calls: BTreeMap<String, CallSettings>,
    /// The OpenAPI document the host serves, absolute.
    pub openapi: Option<PathBuf>,
}

/// `[application.tool.trellis.calls."<target>"]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallSettings {
    pub timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    pub breaker_failures: Option<u32>,
    pub breaker_open_ms: Option<u64>,
}

/// A credential scheme of `[application.tool.trellis.auth]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthScheme {
    /// `api_key`: a key in a header.
    ApiKey,
    /// `jwt`: `Authorization: Bearer <token>`.
    Jwt,
}

impl AuthScheme {
    /// The name used in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            AuthScheme::ApiKey => "api_key",
            AuthScheme::Jwt => "jwt",
        }
    }
}

/// `[application.tool.trellis.auth]`, checked: every scheme named in
/// `require` lists is configured, routes are well-formed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthPolicy {
    /// Schemes accepted where no route entry matches; empty: public.
    pub require: Vec<AuthScheme>,
    pub api_key: Option<ApiKeyScheme>,
    pub jwt: Option<JwtScheme>,
    /// In manifest order.
    pub routes: Vec<AuthRoute>,
}

/// `[application.tool.trellis.auth.api_key]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyScheme {
    /// Lower-case header name.
    pub header: String,
    /// A template over application variables (checked to be declared),
    /// expanding to `name:key` entries.
    pub keys: String,
    /// Requests per second per key (at least 1), if limited.
    pub rate_per_second: Option<u32>,
}

/// `[application.tool.trellis.auth.jwt]`; at least one of `secret`, `jwks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtScheme {
    /// HS256 secret template.
    pub secret: Option<String>,
    /// RS256 key set file, absolute.
    pub jwks: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
}

/// One `[[application.tool.trellis.auth.routes]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRoute {
    /// As written (without the base), checked like a trigger route.
    pub route: String,
    /// Upper-case method names; empty: all methods.
    pub methods: Vec<String>,
    /// Any one of these; empty: public.
    pub require: Vec<AuthScheme>,
}

/// `[application.tool.trellis.cors]`, checked so that no combination the
/// CORS rules forbid (credentials with `*`) gets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Origins (`scheme://host[:port]`), or `["*"]`.
    pub allowed_origins: Vec<String>,
    /// Upper-case methods, or `["*"]`.
    pub allowed_methods: Vec<String>,
    /// Lower-case header names, or `["*"]`.
    pub allowed_headers: Vec<String>,
    /// Lower-case header names, or `["*"]`.
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_secs: Option<u64>,
}

/// `[application.trigger.amqp]`: defaults for every `[[trigger.amqp]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmqpDefaults {
    /// Broker URL; may contain `{{ variable }}` templates (checked to refer to
    /// declared variables; expand with [`super::expand_template`]).
    pub broker: Option<String>,
    /// Default exchange.
    pub exchange: Option<String>,
    /// Default prefetch (at least 1).
    pub prefetch: Option<u16>,
    /// Default delivery attempts (at least 1).
    pub max_attempts: Option<u32>,
    /// Default redelivery delay.
    pub retry_delay_ms: Option<u64>,
}

/// One application variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variable {
    /// `description = "..."`.
    pub description: Option<String>,
    /// `default = "..."`; always `None` when `required`.
    pub default: Option<String>,
    /// A value must be supplied at run time.
    pub required: bool,
    /// Never log the value.
    pub secret: bool,
}

/// One `[[trigger.http]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTrigger {
    /// `id = "..."`.
    pub id: Option<String>,
    /// The handling component (known to exist in `components`).
    pub component: String,
    /// Where it is reachable.
    pub route: HttpRoute,
}

/// An HTTP trigger's route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpRoute {
    /// A pattern as written, e.g. `/users/:id` or `/static/...`
    /// (without the application base).
    Path(String),
    /// `{ private = true }`: reachable only by service chaining.
    Private,
}

/// One `[[trigger.amqp]]`, with app-wide defaults *not* merged in (the
/// consumer decides precedence, see [`Application::amqp_defaults`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpTrigger {
    /// `id = "..."`.
    pub id: Option<String>,
    /// The handling component (known to exist in `components`).
    pub component: String,
    /// The queue to consume (non-empty).
    pub queue: String,
    /// Exchange to bind the queue to.
    pub exchange: Option<String>,
    /// Routing keys for the binding (only with an exchange, here or app-wide).
    pub binding_keys: Vec<String>,
    /// Prefetch (at least 1).
    pub prefetch: Option<u16>,
    /// Delivery attempts (at least 1).
    pub max_attempts: Option<u32>,
    /// Redelivery delay.
    pub retry_delay_ms: Option<u64>,
}

/// `[component.<id>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// The id (the key in `[component.<id>]`).
    pub id: String,
    /// `description = "..."`.
    pub description: Option<String>,
    /// The Wasm file, absolute. Not checked to exist: it may not be built yet.
    pub source: PathBuf,
    /// Checked entries such as `https://*.example.com` or `postgres://{{ host }}:5432`.
    pub allowed_outbound_hosts: Vec<String>,
    /// Component variables: templates over application variables, whose
    /// references are known to be declared.
    pub variables: BTreeMap<String, String>,
    /// Environment variables.
    pub environment: BTreeMap<String, String>,
    /// Files to mount.
    pub files: Vec<FileMount>,
    /// `exclude_files` patterns, as written.
    pub exclude_files: Vec<String>,
    /// Build settings.
    pub build: Option<ComponentBuild>,
    /// `[component.<id>.tool.trellis]`.
    pub trellis: ComponentTrellis,
}

/// One `files` entry.
///
/// A plain string entry (`"static/**/*.css"`) gives `source = dir.join(entry)`
/// and `destination = "/" + entry`: the consumer expands glob patterns (see
/// [`FileMount::is_glob`]) and mounts each match at its path relative to the
/// manifest directory. A `{ source = "assets", destination = "/assets" }` entry
/// mounts the directory `source` at `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMount {
    /// Host path (absolute), possibly a glob pattern.
    pub source: PathBuf,
    /// Guest path, absolute (starts with `/`).
    pub destination: String,
}

impl FileMount {
    /// True when `source` holds glob metacharacters and needs expanding.
    pub fn is_glob(&self) -> bool {
        self.source.to_string_lossy().contains(['*', '?', '['])
    }
}

/// `[component.<id>.build]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentBuild {
    /// The command line, as written (run it with a shell).
    pub command: String,
    /// Directory to run it in (absolute); `None` means the manifest directory.
    pub workdir: Option<PathBuf>,
    /// Globs, relative to the work directory, that trigger a rebuild.
    pub watch: Vec<String>,
}

/// `[component.<id>.tool.trellis]`; `None` means "use the host default".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentTrellis {
    /// Maximum linear memory per instance, in MiB (1..=4096).
    pub memory_limit_mib: Option<u64>,
    /// Per-request deadline in milliseconds (at least 1).
    pub timeout_ms: Option<u64>,
    /// Largest accepted request body in bytes (at least 1).
    pub max_request_body_bytes: Option<u64>,
    /// Concurrent instances of this component (at least 1).
    pub max_concurrency: Option<usize>,
    /// Managed databases by name (`postgres://trellis.internal/<name>`).
    pub databases: BTreeMap<String, ManagedDatabase>,
    /// Routing-key patterns the component may publish (AMQP topic syntax,
    /// checked to be well-formed); empty: it may not publish.
    pub publish: Vec<String>,
}

/// A managed database a component declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedDatabase {
    /// Absolute path of the migrations directory, if any.
    pub migrations: Option<PathBuf>,
    /// The host keeps a transactional outbox table in it and relays its rows.
    pub outbox: bool,
}
