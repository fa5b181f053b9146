//! `trellis serve` for the end-to-end tests: a platform (its own database,
//! vhost and compilation cache) and hosts on it, driven through the CLI and
//! the admin API as an operator would.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{AppDir, Reply, TestBroker, TestDatabase, Trellis, UpOptions, client, run_trellis};

pub const TOKEN: &str = "platform-test-token-0123456789";
/// A bound on how long something the host does at once may take on a busy
/// test machine.
pub const SETTLE: Duration = Duration::from_secs(30);

/// One platform: its database, its vhost and a compilation cache its hosts
/// share. Hosts are started with [`Env::host`]. Field order is drop order.
pub struct Env {
    pub db: TestDatabase,
    pub broker: TestBroker,
    pub cache: tempfile::TempDir,
}

impl Env {
    pub fn new(label: &str) -> Self {
        Self {
            db: TestDatabase::new(label),
            broker: TestBroker::new(label),
            cache: tempfile::tempdir().expect("cache dir"),
        }
    }

    /// A `trellis serve` on this platform, with a state directory of its own.
    pub fn host(&self) -> Host {
        self.host_with(&[])
    }

    /// [`Env::host`] with more `trellis serve` arguments.
    pub fn host_with(&self, extra: &[&str]) -> Host {
        self.host_with_env(extra, &[])
    }

    /// [`Env::host_with`] with environment variables for the host.
    pub fn host_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Host {
        let state = tempfile::tempdir().expect("state dir");
        let state_dir = state.path().display().to_string();
        let mut args = vec![
            "--admin-token",
            TOKEN,
            "--database-url",
            &self.db.url,
            "--amqp-url",
            &self.broker.url,
            "--max-pool-connections",
            "2",
            "--state-dir",
            &state_dir,
        ];
        args.extend_from_slice(extra);
        let trellis = Trellis::serve(UpOptions {
            args,
            env: env.to_vec(),
            cache_dir: Some(self.cache.path()),
        });
        Host {
            trellis,
            _state: state,
            http: client(),
        }
    }
}

pub struct Host {
    pub trellis: Trellis,
    _state: tempfile::TempDir,
    http: reqwest::Client,
}

impl Host {
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.trellis.admin.expect("admin address"))
    }

    /// Runs a `trellis` admin command against this host; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let admin_url = self.admin_url();
        let mut all = args.to_vec();
        all.extend(["--admin-url", &admin_url, "--admin-token", TOKEN]);
        let (status, stdout, stderr) = run_trellis(&all, Path::new("."));
        assert!(
            status.success(),
            "trellis {args:?} failed:\n{stdout}\n{stderr}\nhost logs:\n{}",
            self.trellis.logs()
        );
        stdout
    }

    /// `trellis deploy` of the app in `app` to `tenant`; its stdout.
    pub fn deploy(&self, tenant: &str, app: &AppDir) -> String {
        let manifest = app.manifest().display().to_string();
        self.cli(&deploy_args(tenant, &manifest))
    }

    /// The same deployment, which must fail; its error output.
    pub fn deploy_fails(&self, tenant: &str, app: &AppDir) -> String {
        let manifest = app.manifest().display().to_string();
        self.cli_fails(&deploy_args(tenant, &manifest))
    }

    /// `trellis deploy --component` of one component's Wasm; its stdout.
    pub fn deploy_component(&self, tenant: &str, app: &str, component: &str, wasm: &str) -> String {
        self.cli(&[
            "deploy",
            "--tenant",
            tenant,
            "--app",
            app,
            "--component",
            component,
            wasm,
        ])
    }

    /// Like [`Host::cli`], for a command that must fail; its stderr.
    pub fn cli_fails(&self, args: &[&str]) -> String {
        let admin_url = self.admin_url();
        let mut all = args.to_vec();
        all.extend(["--admin-url", &admin_url, "--admin-token", TOKEN]);
        let (status, stdout, stderr) = run_trellis(&all, Path::new("."));
        assert!(!status.success(), "trellis {args:?} succeeded:\n{stdout}");
        stderr
    }

    /// A request to app `app` of `tenant`, by host name.
    pub async fn request(
        &self,
        method: reqwest::Method,
        host: &str,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.trellis.addr))
            .header("host", host);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        request.send().await.expect("request")
    }

    pub async fn get(&self, host: &str, path: &str) -> Reply {
        Reply::read(self.request(reqwest::Method::GET, host, path, None).await).await
    }

    pub async fn post(&self, host: &str, path: &str, body: &Value) -> Reply {
        Reply::read(
            self.request(reqwest::Method::POST, host, path, Some(body))
                .await,
        )
        .await
    }

    /// `GET` on the admin API with `token`; status and body.
    /// `GET /metrics` with the token: the OpenMetrics text.
    pub async fn metrics(&self) -> String {
        let response = self
            .http
            .get(format!("{}/metrics", self.admin_url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        response.text().await.expect("body")
    }

    pub async fn admin_get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.admin_url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("admin request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// `deploy --tenant <tenant> -f <manifest>`.
pub fn deploy_args<'a>(tenant: &'a str, manifest: &'a str) -> [&'a str; 5] {
    ["deploy", "--tenant", tenant, "-f", manifest]
}

pub async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < SETTLE, "{what}: not within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

impl Host {
    /// Uploads component bytes to the admin API as any client could;
    /// returns their SHA-256 (hex), the digest deployments name them by.
    pub async fn upload_blob(&self, bytes: Vec<u8>) -> String {
        use sha2::Digest as _;
        let digest = hex_digest(&sha2::Sha256::digest(&bytes));
        let response = self
            .http
            .put(format!("{}/v1/blobs/{digest}", self.admin_url()))
            .bearer_auth(TOKEN)
            .body(bytes)
            .send()
            .await
            .expect("PUT blob");
        assert!(
            response.status().is_success(),
            "blob upload: {}",
            response.status()
        );
        digest
    }

    /// A raw `PUT` of JSON on the admin API with the operator's token, not
    /// through the CLI (which checks some things itself): status and body.
    pub async fn admin_put(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .put(format!("{}{path}", self.admin_url()))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("admin PUT");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
