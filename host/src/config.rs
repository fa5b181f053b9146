//! Host-wide runtime settings: the limits every component gets unless its
//! `[component.<id>.tool.trellis]` table says otherwise.
//!
//! The CLI fills this from flags (each flag can also come from a `TRELLIS_*`
//! environment variable); tests build it directly.

use std::path::PathBuf;
use std::time::Duration;

use crate::capabilities::database::DatabaseConfig;
use crate::capabilities::outbound_http::resilience::CallPolicy;

/// Limits and knobs of one `trellis` process.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Largest linear memory one instance may grow to, unless the component sets
    /// `memory_limit_mib`. Example: 128 MiB.
    pub memory_limit_bytes: u64,
    /// Deadline for one request, from the moment it is dispatched until the
    /// component has finished writing its response. Example: 30 s.
    pub request_timeout: Duration,
    /// Largest request body accepted, chunked or not; exactly this many bytes
    /// is still allowed. Example: 1 MiB.
    pub max_request_body_bytes: u64,
    /// How many component instances may be live at once across the whole
    /// process (inbound requests plus in-process chained calls). This is also
    /// the size of the pooling allocator, so instantiation never fails for
    /// lack of a slot. Example: 1000.
    pub max_instances: u32,
    /// How long a request waits for a free instance slot before it is answered
    /// `503` with `Retry-After`. Example: 1 s.
    pub queue_timeout: Duration,
    /// How long in-flight requests may run after SIGINT/SIGTERM before the
    /// process exits anyway. Example: 10 s.
    pub shutdown_timeout: Duration,
    /// Where compiled components are kept between runs; `None` disables the
    /// cache. Example: `~/.cache/trellis`.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch ticker advances; the granularity of deadlines and
    /// of the yields that keep a busy guest from starving others.
    pub epoch_tick: Duration,
    /// The database capability: managed databases, pools, statement limits.
    pub database: DatabaseConfig,
    /// The message broker of apps whose manifest names none
    /// (`[application.trigger.amqp] broker`).
    pub amqp_url: String,
    /// Timeouts, retries and breakers of components' calls, unless an app's
    /// `[application.tool.trellis.calls."<target>"]` says otherwise.
    pub calls: CallPolicy,
    /// Where components' connections may go, by address (see [`crate::egress`]).
    pub egress: EgressConfig,
}

/// The egress policy's settings.
#[derive(Debug, Clone, Default)]
pub struct EgressConfig {
    /// Check every address a component connects to (`trellis serve`).
    pub guarded: bool,
    /// Networks tenants may reach although they are special (loopback, say).
    pub allow: Vec<ipnet::IpNet>,
    /// Networks tenants may never reach.
    pub deny: Vec<ipnet::IpNet>,
}

/// The local RabbitMQ with its default account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 128 << 20,
            request_timeout: Duration::from_secs(30),
            max_request_body_bytes: 1 << 20,
            max_instances: 1000,
            queue_timeout: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(10),
            cache_dir: default_cache_dir(),
            // How long a guest runs before it yields to other tasks (and its
            // deadline and CPU budget are checked): short, so a busy guest
            // delays others by at most about this much.
            epoch_tick: Duration::from_millis(1),
            database: DatabaseConfig::default(),
            amqp_url: DEFAULT_AMQP_URL.to_string(),
            calls: CallPolicy::default(),
            egress: EgressConfig::default(),
        }
    }
}

/// `$XDG_CACHE_HOME/trellis`, else `$HOME/.cache/trellis`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("trellis"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".cache").join("trellis"))
}
