//! The manifest exactly as written: serde types mirroring Spin manifest v2.
//!
//! Every table denies unknown fields, so a typo is an error with a position.
//! Fields whose value takes several shapes (`source`, `route`, `files` entries,
//! ...) are kept as spanned `toml::Value`s and interpreted by the validator,
//! which gives clearer messages than an untagged enum's "did not match any
//! variant" and keeps the position. Fields Spin has but Trellis does not support
//! are declared too, so they are rejected by name only when actually used.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::{Spanned, Value};

use super::tables::{ToolTable, TriggerTable};

/// A whole `spin.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    /// Checked before this struct is read (see `version`); only recognised here.
    ///
    /// Example: `spin_manifest_version = 2`
    #[serde(rename = "spin_manifest_version")]
    pub _version: IgnoredAny,
    /// Application metadata and app-wide settings.
    ///
    /// Example: `[application]` with `name = "shop"`
    pub application: RawApplication,
    /// Application variables, set from the environment or their defaults.
    ///
    /// Example: `[variables]` with `api_key = { required = true, secret = true }`
    #[serde(default)]
    pub variables: BTreeMap<Spanned<String>, Spanned<RawVariable>>,
    /// Triggers by type.
    ///
    /// Example: `[[trigger.http]]` with `route = "/..."` and `component = "web"`
    #[serde(default)]
    pub trigger: TriggerTable<Vec<Spanned<RawHttpTrigger>>, Vec<Spanned<RawAmqpTrigger>>>,
    /// Components by id.
    ///
    /// Example: `[component.web]` with `source = "web.wasm"`
    #[serde(default)]
    pub component: BTreeMap<Spanned<String>, Spanned<RawComponent>>,
}

/// `[application]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApplication {
    /// The application name.
    ///
    /// Example: `name = "shop"`
    pub name: String,
    /// The application version, conventionally semver.
    ///
    /// Example: `version = "1.2.0"`
    #[serde(default)]
    pub version: Option<String>,
    /// A human-readable description.
    ///
    /// Example: `description = "The shop front end"`
    #[serde(default)]
    pub description: Option<String>,
    /// The authors.
    ///
    /// Example: `authors = ["Ada <ada@example.com>"]`
    #[serde(default)]
    pub authors: Vec<String>,
    /// Spin deployment-environment compatibility targets; used by Spin's build
    /// tooling only, so Trellis accepts and ignores them.
    ///
    /// Example: `targets = ["spin-up:3.2"]`
    #[serde(default, rename = "targets")]
    pub _targets: Option<IgnoredAny>,
    /// App-wide trigger settings.
    ///
    /// Example: `[application.trigger.http]` with `base = "/shop"`
    #[serde(default)]
    pub trigger: TriggerTable<RawAppHttp, RawAmqpDefaults>,
    /// Tool settings; only `[application.tool.trellis]` is read.
    ///
    /// Example: `[application.tool.trellis]`
    #[serde(default)]
    pub tool: ToolTable<RawAppTrellis>,
}

/// `[application.trigger.http]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAppHttp {
    /// Path prefix for every HTTP route.
    ///
    /// Example: `base = "/shop"`
    #[serde(default)]
    pub base: Option<Spanned<String>>,
}

/// `[application.trigger.amqp]`: defaults for every `[[trigger.amqp]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAmqpDefaults {
    /// Broker URL; may use application variables.
    ///
    /// Example: `broker = "amqp://{{ amqp_user }}:{{ amqp_password }}@localhost:5672/%2f"`
    #[serde(default)]
    pub broker: Option<Spanned<String>>,
    /// Default exchange to bind queues to.
    ///
    /// Example: `exchange = "orders"`
    #[serde(default)]
    pub exchange: Option<String>,
    /// Default number of unacknowledged deliveries per consumer.
    ///
    /// Example: `prefetch = 16`
    #[serde(default)]
    pub prefetch: Option<Spanned<u16>>,
    /// Default number of deliveries before a message is given up on.
    ///
    /// Example: `max_attempts = 5`
    #[serde(default)]
    pub max_attempts: Option<Spanned<u32>>,
    /// Default delay before a failed message is redelivered.
    ///
    /// Example: `retry_delay_ms = 1000`
    #[serde(default)]
    pub retry_delay_ms: Option<u64>,
}

/// `[application.tool.trellis]`: app-wide policies the host applies at the
/// edge, before a component runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAppTrellis {
    /// Credentials the app's routes require.
    ///
    /// Example: `[application.tool.trellis.auth]` `require = ["api_key"]`
    #[serde(default)]
    pub auth: Option<Spanned<RawAuth>>,
    /// Cross-origin requests from browsers.
    ///
    /// Example: `[application.tool.trellis.cors]` `allowed_origins = ["https://shop.example.com"]`
    #[serde(default)]
    pub cors: Option<Spanned<RawCors>>,
    /// Timeouts, retries and circuit breakers of calls to one target (a
    /// component, `<id>.spin.internal`, or an outbound `host:port`),
    /// overriding the host's defaults.
    ///
    /// Example: `[application.tool.trellis.calls."user.spin.internal"]` `timeout_ms = 2000`
    #[serde(default)]
    pub calls: std::collections::BTreeMap<Spanned<String>, RawCallPolicy>,
    /// An OpenAPI document (JSON, relative to the manifest) the host serves
    /// at `GET /openapi.json`, unless the app routes that path itself.
    ///
    /// Example: `openapi = "openapi.json"`
    #[serde(default)]
    pub openapi: Option<Spanned<String>>,
}

/// `[application.tool.trellis.calls."<target>"]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCallPolicy {
    /// Deadline of one attempt, in milliseconds (at least 1).
    ///
    /// Example: `timeout_ms = 2000`
    #[serde(default)]
    pub timeout_ms: Option<Spanned<u64>>,
    /// Extra attempts of idempotent calls after a failure (0..=10).
    ///
    /// Example: `retries = 2`
    #[serde(default)]
    pub retries: Option<Spanned<u32>>,
    /// Failures in a row that open the circuit; 0 turns the breaker off.
    ///
    /// Example: `breaker_failures = 5`
    #[serde(default)]
    pub breaker_failures: Option<u32>,
    /// How long an open circuit refuses calls before a probe, in
    /// milliseconds (at least 1).
    ///
    /// Example: `breaker_open_ms = 5000`
    #[serde(default)]
    pub breaker_open_ms: Option<Spanned<u64>>,
}

/// `[application.tool.trellis.auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    /// Schemes a route without a matching `[[...auth.routes]]` entry
    /// requires, any one of them; empty (the default): such routes are public.
    ///
    /// Example: `require = ["api_key", "jwt"]`
    #[serde(default)]
    pub require: Option<Spanned<Vec<Spanned<String>>>>,
    /// API keys, sent in a header.
    ///
    /// Example: `[application.tool.trellis.auth.api_key]` `keys = "{{ api_keys }}"`
    #[serde(default)]
    pub api_key: Option<Spanned<RawApiKey>>,
    /// JSON Web Tokens, sent as `Authorization: Bearer <token>`.
    ///
    /// Example: `[application.tool.trellis.auth.jwt]` `secret = "{{ jwt_secret }}"`
    #[serde(default)]
    pub jwt: Option<Spanned<RawJwt>>,
    /// Per-route requirements; the most specific matching route wins, as in
    /// HTTP routing.
    ///
    /// Example: `[[application.tool.trellis.auth.routes]]` `route = "/orders/..."` `methods = ["POST"]` `require = ["jwt"]`
    #[serde(default)]
    pub routes: Vec<Spanned<RawAuthRoute>>,
}

/// `[application.tool.trellis.auth.api_key]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiKey {
    /// The request header carrying the key (default `x-api-key`).
    ///
    /// Example: `header = "x-api-key"`
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    /// The accepted keys, as `name:key` entries separated by commas or
    /// whitespace; the name is the subject passed to the component. Usually
    /// a template over a secret variable.
    ///
    /// Example: `keys = "{{ api_keys }}"`
    pub keys: Spanned<String>,
    /// Requests per second each key may make (bursts of as many); over it,
    /// `429` with `Retry-After`. Default: no limit beyond the tenant's.
    ///
    /// Example: `rate_per_second = 50`
    #[serde(default)]
    pub rate_per_second: Option<Spanned<u32>>,
}

/// `[application.tool.trellis.auth.jwt]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwt {
    /// Shared secret for HS256 tokens; usually a template over a secret variable.
    ///
    /// Example: `secret = "{{ jwt_secret }}"`
    #[serde(default)]
    pub secret: Option<Spanned<String>>,
    /// A JWKS file (relative to the manifest) of RSA keys for RS256 tokens.
    ///
    /// Example: `jwks = "keys/jwks.json"`
    #[serde(default)]
    pub jwks: Option<Spanned<String>>,
    /// Required `iss` claim, if set.
    ///
    /// Example: `issuer = "https://id.example.com"`
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` claim, if set.
    ///
    /// Example: `audience = "shop"`
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 30).
    ///
    /// Example: `leeway_secs = 30`
    #[serde(default)]
    pub leeway_secs: Option<Spanned<u64>>,
}

/// One `[[application.tool.trellis.auth.routes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthRoute {
    /// A route in `[[trigger.http]]` syntax (relative to the app's base).
    ///
    /// Example: `route = "/orders/..."`
    pub route: Spanned<String>,
    /// Methods this entry applies to (default: all).
    ///
    /// Example: `methods = ["POST", "DELETE"]`
    #[serde(default)]
    pub methods: Option<Spanned<Vec<String>>>,
    /// Schemes accepted, any one of them; `[]` makes the route public.
    ///
    /// Example: `require = ["api_key", "jwt"]`
    pub require: Spanned<Vec<Spanned<String>>>,
}

/// `[application.tool.trellis.cors]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCors {
    /// Origins allowed to call the app, e.g. `https://shop.example.com`, or `["*"]`.
    ///
    /// Example: `allowed_origins = ["https://shop.example.com"]`
    pub allowed_origins: Spanned<Vec<String>>,
    /// Methods allowed (default `GET, HEAD, POST`), or `["*"]`.
    ///
    /// Example: `allowed_methods = ["GET", "POST", "DELETE"]`
    #[serde(default)]
    pub allowed_methods: Option<Spanned<Vec<String>>>,
    /// Request headers allowed beyond the CORS-safelisted ones, or `["*"]`.
    ///
    /// Example: `allowed_headers = ["content-type", "authorization"]`
    #[serde(default)]
    pub allowed_headers: Option<Spanned<Vec<String>>>,
    /// Response headers scripts may read beyond the safelisted ones.
    ///
    /// Example: `expose_headers = ["location"]`
    #[serde(default)]
    pub expose_headers: Option<Spanned<Vec<String>>>,
    /// Whether cookies and `Authorization` may be sent (no `*` allowed then).
    ///
    /// Example: `allow_credentials = true`
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer, in seconds.
    ///
    /// Example: `max_age_secs = 600`
    #[serde(default)]
    pub max_age_secs: Option<u64>,
}

/// One entry of `[variables]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVariable {
    /// What the variable is for.
    ///
    /// Example: `description = "Key for the payments API"`
    #[serde(default)]
    pub description: Option<String>,
    /// Value used when none is supplied at run time.
    ///
    /// Example: `default = "https://api.example.com"`
    #[serde(default)]
    pub default: Option<String>,
    /// A value must be supplied at run time (no `default` allowed).
    ///
    /// Example: `required = true`
    #[serde(default)]
    pub required: bool,
    /// The value is sensitive and must not be logged.
    ///
    /// Example: `secret = true`
    #[serde(default)]
    pub secret: bool,
}

/// One `[[trigger.http]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpTrigger {
    /// Optional trigger id, unique in the app.
    ///
    /// Example: `id = "shop-front"`
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    /// The id of the component that handles the route (inline tables are
    /// Spin syntax that Trellis rejects).
    ///
    /// Example: `component = "web"`
    #[serde(default)]
    pub component: Option<Spanned<Value>>,
    /// Reserved by Spin for multi-component triggers; rejected if used.
    ///
    /// Example: `components = { middleware = ["auth"] }`
    #[serde(default)]
    pub components: Option<Spanned<Value>>,
    /// A path pattern, or `{ private = true }` for a component reachable only
    /// by service chaining.
    ///
    /// Example: `route = "/users/:id"`, `route = "/static/..."`, `route = { private = true }`
    pub route: Spanned<Value>,
    /// Spin's executor selection; `{ type = "spin" }` (the default) only.
    ///
    /// Example: `executor = { type = "spin" }`
    #[serde(default)]
    pub executor: Option<Spanned<Value>>,
    /// Spin's host-served static response; rejected if used.
    ///
    /// Example: `static_response = { status_code = 404 }`
    #[serde(default)]
    pub static_response: Option<Spanned<Value>>,
}

/// One `[[trigger.amqp]]`: consume a queue, one component call per message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAmqpTrigger {
    /// Optional trigger id, unique in the app.
    ///
    /// Example: `id = "order-worker"`
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    /// The id of the component that handles each message.
    ///
    /// Example: `component = "fulfil"`
    pub component: Spanned<String>,
    /// The queue to consume.
    ///
    /// Example: `queue = "orders.created"`
    pub queue: Spanned<String>,
    /// Exchange to bind the queue to (overrides the app default).
    ///
    /// Example: `exchange = "orders"`
    #[serde(default)]
    pub exchange: Option<String>,
    /// Routing keys to bind the queue with.
    ///
    /// Example: `binding_keys = ["order.created", "order.updated"]`
    #[serde(default)]
    pub binding_keys: Option<Spanned<Vec<String>>>,
    /// Unacknowledged deliveries in flight (overrides the app default).
    ///
    /// Example: `prefetch = 8`
    #[serde(default)]
    pub prefetch: Option<Spanned<u16>>,
    /// Deliveries before a message is given up on (overrides the app default).
    ///
    /// Example: `max_attempts = 3`
    #[serde(default)]
    pub max_attempts: Option<Spanned<u32>>,
    /// Delay before redelivering a failed message (overrides the app default).
    ///
    /// Example: `retry_delay_ms = 500`
    #[serde(default)]
    pub retry_delay_ms: Option<u64>,
}

/// `[component.<id>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComponent {
    /// Path of the Wasm component, relative to the manifest (URL and registry
    /// sources are Spin syntax that Trellis rejects).
    ///
    /// Example: `source = "target/wasm32-wasip2/release/web.wasm"`
    pub source: Spanned<Value>,
    /// A human-readable description.
    ///
    /// Example: `description = "Serves the shop pages"`
    #[serde(default)]
    pub description: Option<String>,
    /// Component variables; values may refer to application variables.
    ///
    /// Example: `variables = { api_url = "https://{{ api_host }}/v1" }`
    #[serde(default)]
    pub variables: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Environment variables for the component.
    ///
    /// Example: `environment = { RUST_LOG = "info" }`
    #[serde(default)]
    pub environment: BTreeMap<Spanned<String>, String>,
    /// Files to mount: glob patterns (mounted at the same relative path) or
    /// `{ source, destination }` directory placements.
    ///
    /// Example: `files = ["static/**/*", { source = "assets", destination = "/assets" }]`
    #[serde(default)]
    pub files: Vec<Spanned<Value>>,
    /// Patterns excluded from `files`.
    ///
    /// Example: `exclude_files = ["static/**/*.map"]`
    #[serde(default)]
    pub exclude_files: Vec<Spanned<String>>,
    /// Network destinations the component may reach.
    ///
    /// Example: `allowed_outbound_hosts = ["https://api.example.com", "postgres://{{ db_host }}:5432"]`
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<Spanned<String>>,
    /// Spin's deprecated predecessor of `allowed_outbound_hosts`; rejected if used.
    ///
    /// Example: `allowed_http_hosts = ["example.com"]`
    #[serde(default)]
    pub allowed_http_hosts: Option<Spanned<Value>>,
    /// Spin key-value stores; rejected if used.
    ///
    /// Example: `key_value_stores = ["default"]`
    #[serde(default)]
    pub key_value_stores: Option<Spanned<Value>>,
    /// Spin SQLite databases; rejected if used.
    ///
    /// Example: `sqlite_databases = ["default"]`
    #[serde(default)]
    pub sqlite_databases: Option<Spanned<Value>>,
    /// Spin serverless AI models; rejected if used.
    ///
    /// Example: `ai_models = ["llama2-chat"]`
    #[serde(default)]
    pub ai_models: Option<Spanned<Value>>,
    /// Spin component dependencies; rejected if used.
    ///
    /// Example: `dependencies = { "wasi:http/handler" = { path = "mw.wasm" } }`
    #[serde(default)]
    pub dependencies: Option<Spanned<Value>>,
    /// Spin dependency permissions; only `false` is accepted.
    ///
    /// Example: `dependencies_inherit_configuration = false`
    #[serde(default)]
    pub dependencies_inherit_configuration: Option<Spanned<bool>>,
    /// Spin run profiles; rejected if used.
    ///
    /// Example: `[component.web.profile.debug]` with `source = "debug.wasm"`
    #[serde(default)]
    pub profile: Option<Spanned<Value>>,
    /// How to build the component (`spin build` style).
    ///
    /// Example: `[component.web.build]` with `command = "cargo build --release"`
    #[serde(default)]
    pub build: Option<RawBuild>,
    /// Tool settings; only `[component.<id>.tool.trellis]` is read.
    ///
    /// Example: `[component.web.tool.trellis]` with `timeout_ms = 5000`
    #[serde(default)]
    pub tool: ToolTable<RawComponentTrellis>,
}

/// A `files` entry in table form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlacement {
    /// Host directory, relative to the manifest.
    ///
    /// Example: `source = "assets"`
    pub source: String,
    /// Absolute guest path where it appears.
    ///
    /// Example: `destination = "/assets"`
    pub destination: String,
}

/// `[component.<id>.build]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuild {
    /// The build command (a one-element list is accepted too).
    ///
    /// Example: `command = "cargo build --target wasm32-wasip2 --release"`
    pub command: Spanned<Value>,
    /// Directory to run it in, relative to the manifest.
    ///
    /// Example: `workdir = "components/web"`
    #[serde(default)]
    pub workdir: Option<String>,
    /// Globs (relative to `workdir`) whose changes trigger a rebuild.
    ///
    /// Example: `watch = ["src/**/*.rs", "Cargo.toml"]`
    #[serde(default)]
    pub watch: Vec<String>,
}

/// `[component.<id>.tool.trellis]`: per-component limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComponentTrellis {
    /// Maximum linear memory per instance, in MiB (1..=4096).
    ///
    /// Example: `memory_limit_mib = 128`
    #[serde(default)]
    pub memory_limit_mib: Option<Spanned<u64>>,
    /// Deadline for handling one request, in milliseconds (at least 1).
    ///
    /// Example: `timeout_ms = 30000`
    #[serde(default)]
    pub timeout_ms: Option<Spanned<u64>>,
    /// Largest accepted request body, in bytes (at least 1).
    ///
    /// Example: `max_request_body_bytes = 1048576`
    #[serde(default)]
    pub max_request_body_bytes: Option<Spanned<u64>>,
    /// Concurrent instances of this component (at least 1).
    ///
    /// Example: `max_concurrency = 64`
    #[serde(default)]
    pub max_concurrency: Option<Spanned<usize>>,
    /// Managed databases, by name: the component opens
    /// `postgres://trellis.internal/<name>`.
    ///
    /// Example: `[component.user.tool.trellis.databases.users]`
    /// `migrations = "components/user/migrations"`
    #[serde(default)]
    pub databases: std::collections::BTreeMap<Spanned<String>, RawManagedDatabase>,
    /// What the component may do on the message broker.
    ///
    /// Example: `[component.payment.tool.trellis.messaging]` `publish = ["payment.*"]`
    #[serde(default)]
    pub messaging: Option<RawMessaging>,
}

/// `[component.<id>.tool.trellis.messaging]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMessaging {
    /// Routing keys the component may publish (directly or through an
    /// outbox), as AMQP topic patterns: `*` is one word, `#` zero or more.
    ///
    /// Example: `publish = ["order.*"]`
    #[serde(default)]
    pub publish: Option<Spanned<Vec<String>>>,
}

/// `[component.<id>.tool.trellis.databases.<name>]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManagedDatabase {
    /// Directory of versioned SQL files (`0001_create_users.sql`, ...),
    /// relative to the manifest, applied in order before the component serves.
    ///
    /// Example: `migrations = "components/user/migrations"`
    #[serde(default)]
    pub migrations: Option<Spanned<String>>,
    /// Create the `_trellis_outbox` table in this database and relay the rows
    /// the component inserts there to the broker (transactional outbox).
    ///
    /// Example: `outbox = true`
    #[serde(default)]
    pub outbox: bool,
}
