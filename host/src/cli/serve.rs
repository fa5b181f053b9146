//! `trellis serve`: platform mode. Serves every tenant's apps by host name,
//! with the admin API on a listener of its own; state in Postgres.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::up::LimitArgs;
use crate::app::Runtime;
use crate::capabilities::database::managed;
use crate::platform::{Platform, admin, store::Store};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Public address: each app answers at `<app>.<tenant>.<base domain>`.
    #[arg(long, env = "TRELLIS_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Address of the admin API.
    #[arg(long, env = "TRELLIS_ADMIN_LISTEN", default_value = "127.0.0.1:3001")]
    pub admin_listen: SocketAddr,
    /// Bearer token the admin API requires (at least 16 characters).
    #[arg(long, env = "TRELLIS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// Key that apps' variables (secrets among them) are sealed with in the
    /// database (AES-256-GCM); every replica needs the same. Default:
    /// `--database-secret`; with neither, they are stored unencrypted.
    #[arg(long, env = "TRELLIS_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,
    /// The domain under which apps get their host names.
    #[arg(long, env = "TRELLIS_BASE_DOMAIN", default_value = "localhost")]
    pub base_domain: String,
    /// Where deployed apps' files are unpacked; default: under the cache
    /// directory.
    #[arg(long, env = "TRELLIS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// A network tenants' components may reach although it is loopback,
    /// link-local or otherwise this host's (CIDR, e.g. 127.0.0.1/32;
    /// repeatable). The platform's own servers and listeners stay denied.
    #[arg(long, env = "TRELLIS_TENANT_ALLOW_NET", value_delimiter = ',')]
    pub tenant_allow_net: Vec<ipnet::IpNet>,
    /// A network tenants' components may never reach (CIDR, repeatable),
    /// e.g. the platform's private networks.
    #[arg(long, env = "TRELLIS_TENANT_DENY_NET", value_delimiter = ',')]
    pub tenant_deny_net: Vec<ipnet::IpNet>,
    /// The admin API's certificate chain (PEM): with --admin-tls-key, the
    /// API speaks only TLS.
    #[arg(long, env = "TRELLIS_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    pub admin_tls_cert: Option<PathBuf>,
    /// The private key of --admin-tls-cert (PEM).
    #[arg(long, env = "TRELLIS_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    pub admin_tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl ServeArgs {
    pub async fn run(self) -> Result<()> {
        if self.admin_token.len() < 16 {
            bail!("--admin-token must have at least 16 characters");
        }
        let tls = match (&self.admin_tls_cert, &self.admin_tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            _ => None,
        };
        let mut config = self.limits.runtime_config();
        config.egress = crate::config::EgressConfig {
            guarded: true,
            allow: self.tenant_allow_net.clone(),
            deny: self.tenant_deny_net.clone(),
        };
        let state_dir = match (&self.state_dir, &config.cache_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(cache)) => cache.join("platform"),
            (None, None) => std::env::temp_dir().join(format!("trellis-{}", std::process::id())),
        };
        let max_memory = config.memory_limit_bytes;
        let runtime = Runtime::new(config, max_memory)?;
        managed::ensure_database(&runtime.databases.admin)
            .await
            .context("preparing the platform database (--database-url)")?;
        let sealer = match self
            .secrets_key
            .as_deref()
            .or(self.limits.database_secret.as_deref())
        {
            Some(secret) => Some(crate::platform::sealed::Sealer::new(secret)?),
            None => {
                tracing::warn!(
                    "apps' variables (secrets among them) are stored unencrypted: set --secrets-key"
                );
                None
            }
        };
        let store = Store::open(&runtime.databases.admin, sealer).await?;
        let limit = runtime.config.shutdown_timeout;
        let egress = runtime.egress.clone();
        let platform = Platform::start(runtime, store, self.base_domain.clone(), state_dir).await?;

        let public = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("listening on {}", self.listen))?;
        let admin_listener = tokio::net::TcpListener::bind(self.admin_listen)
            .await
            .with_context(|| format!("listening on {} (--admin-listen)", self.admin_listen))?;
        egress.deny_platform(public.local_addr()?, "this host's public listener");
        egress.deny_platform(admin_listener.local_addr()?, "this host's admin API");
        // Scripts and tests read these lines to find the ports.
        println!(
            "Serving http://{} (apps at http://<app>.<tenant>.{})",
            public.local_addr()?,
            self.base_domain
        );
        println!(
            "Admin API {}://{}",
            if tls.is_some() { "https" } else { "http" },
            admin_listener.local_addr()?
        );

        let (signalled, stopping) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            super::up::shutdown_signal().await;
            let _ = signalled.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let admin = admin::serve(
            admin_listener,
            platform.clone(),
            Arc::from(self.admin_token.as_str()),
            tls,
            stopped(stopping.clone()),
        );
        let http =
            crate::triggers::http::serve(public, platform.clone(), stopped(stopping.clone()));
        let consumers = async {
            stopped(stopping.clone()).await;
            platform.shutdown(limit).await;
        };
        let (served, (), ()) = tokio::join!(http, admin, consumers);
        served
    }
}
