//! Harness for the end-to-end tests: the guest components built by
//! `build.rs`, throw-away app directories with their own `spin.toml`, and the
//! real `trellis` binary started on port 0.

pub mod platform;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of a guest component built by `build.rs` (`hello`, `testbed`, ...).
pub fn guest(name: &str) -> PathBuf {
    let path =
        Path::new(env!("TRELLIS_GUEST_DIR")).join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.exists(),
        "guest {name} was not built: {}",
        path.display()
    );
    path
}

/// The `trellis` binary of this build (`cargo test` builds it beside the tests).
pub fn trellis_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/trellis
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("trellis");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test` from the workspace root",
        bin.display()
    );
    bin
}

/// A temporary app directory holding a manifest.
pub struct AppDir {
    pub dir: tempfile::TempDir,
}

impl AppDir {
    /// Writes `spin.toml` with `manifest`; `{hello}`-style placeholders are
    /// replaced by the paths of the built guests.
    pub fn new(manifest: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut text = manifest.to_string();
        for name in ["hello", "testbed", "user", "dbtest"] {
            text = text.replace(&format!("{{{name}}}"), &guest(name).display().to_string());
        }
        std::fs::write(dir.path().join("spin.toml"), text).expect("write manifest");
        Self { dir }
    }

    pub fn manifest(&self) -> PathBuf {
        self.dir.path().join("spin.toml")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A running `trellis up`. Killed on drop.
pub struct Trellis {
    child: Child,
    pub addr: SocketAddr,
    /// The admin API's address, under `trellis serve`.
    pub admin: Option<SocketAddr>,
    /// The metrics listener's address, under `trellis up --metrics-listen`.
    pub metrics: Option<SocketAddr>,
    logs: Arc<Mutex<String>>,
    _cache: Option<tempfile::TempDir>,
}

/// How `trellis up` is started.
#[derive(Default)]
pub struct UpOptions<'a> {
    pub args: Vec<&'a str>,
    pub env: Vec<(&'a str, &'a str)>,
    /// Use this cache directory instead of a fresh one.
    pub cache_dir: Option<&'a Path>,
}

impl Trellis {
    /// Starts `trellis up -f <manifest> --listen 127.0.0.1:0` and waits until it serves.
    pub fn up(manifest: &Path) -> Self {
        Self::up_with(manifest, UpOptions::default())
    }

    pub fn up_with(manifest: &Path, options: UpOptions<'_>) -> Self {
        match Self::try_up(manifest, options) {
            Ok(trellis) => trellis,
            Err(output) => panic!("trellis did not start:\n{output}"),
        }
    }

    /// Like [`Trellis::up_with`], but returns what the process printed if it
    /// exits before serving.
    pub fn try_up(manifest: &Path, options: UpOptions<'_>) -> Result<Self, String> {
        let mut args: Vec<std::ffi::OsString> = vec!["up".into(), "-f".into(), manifest.into()];
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        Self::spawn(args, options)
    }

    /// Starts `trellis serve` on free ports for both listeners, with
    /// `options.args` added (its `--admin-token`, database, broker...), and
    /// waits until it serves.
    pub fn serve(options: UpOptions<'_>) -> Self {
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ]
        .map(std::ffi::OsString::from)
        .to_vec();
        match Self::spawn(args, options) {
            Ok(trellis) => trellis,
            Err(output) => panic!("trellis serve did not start:\n{output}"),
        }
    }

    fn spawn(args: Vec<std::ffi::OsString>, options: UpOptions<'_>) -> Result<Self, String> {
        let cache = match options.cache_dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("cache dir")),
        };
        let cache_dir = options
            .cache_dir
            .map(Path::to_path_buf)
            .or_else(|| cache.as_ref().map(|c| c.path().to_path_buf()))
            .expect("cache dir");
        let serving_admin = args.first().is_some_and(|a| a == "serve");
        let mut command = Command::new(trellis_bin());
        command
            .args(&args)
            .arg("--cache-dir")
            .arg(&cache_dir)
            .args(&options.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn trellis");

        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut logs = sink.lock().unwrap_or_else(|e| e.into_inner());
                logs.push_str(&line);
                logs.push('\n');
            }
        });

        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end: the host must never write into a closed pipe.
            let mut public = None;
            let mut metrics = None;
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sent {
                    continue;
                }
                if let Some(addr) = line.strip_prefix("Metrics http://") {
                    metrics = addr.strip_suffix("/metrics").map(str::to_owned);
                } else if public.is_none()
                    && let Some(addr) = line.strip_prefix("Serving http://")
                {
                    let addr = addr.split_whitespace().next().unwrap_or("").to_string();
                    if serving_admin {
                        public = Some(addr);
                    } else {
                        sent = tx.send((addr, None, metrics.clone())).is_ok();
                    }
                } else if let (Some(addr), Some(admin)) = (
                    &public,
                    line.strip_prefix("Admin API http://")
                        .or_else(|| line.strip_prefix("Admin API https://")),
                ) {
                    sent = tx
                        .send((addr.clone(), Some(admin.trim().to_string()), None))
                        .is_ok();
                }
            }
        });

        let started = Instant::now();
        let (addr, admin, metrics) = loop {
            if let Ok(addrs) = rx.recv_timeout(Duration::from_millis(50)) {
                break addrs;
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                let logs = logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
                return Err(format!("exited with {status}\n{logs}"));
            }
            if started.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                let logs = logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
                return Err(format!("no `Serving` line within 120 s\n{logs}"));
            }
        };
        Ok(Self {
            child,
            addr: addr.parse().expect("listen address"),
            admin: admin.map(|a| a.parse().expect("admin address")),
            metrics: metrics.map(|a| a.parse().expect("metrics address")),
            logs,
            _cache: cache,
        })
    }

    /// The text of `GET /metrics` on the `--metrics-listen` listener.
    pub async fn metrics_text(&self) -> String {
        let addr = self.metrics.expect("started with --metrics-listen");
        client()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the process wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits up to 5 s for a log line satisfying `matches` (log lines reach
    /// the harness through a pipe, a little after the event).
    pub fn wait_for_log(&self, matches: impl Fn(&str) -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if self.logs().lines().any(&matches) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends a signal (`libc::SIGTERM`, ...).
    pub fn signal(&self, signal: i32) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) with a pid we spawned and still own.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Trellis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that keeps no connection pool between tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// Runs `trellis` with `args` to completion and returns (status, stdout, stderr).
pub fn run_trellis(args: &[&str], dir: &Path) -> (ExitStatus, String, String) {
    let output = Command::new(trellis_bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run trellis");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A physical database of its own for one test, on the local Postgres, with
/// the managed roles `trellis` creates in it. Dropped, roles included, when
/// the value is dropped, so re-runs start clean.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub fn new(label: &str) -> Self {
        let name = unique_name("trellis_t", label);
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        Self {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // The roles that own schemas here were made for this database only
        // (their names carry a hash of it).
        let roles = psql_quiet(
            &self.name,
            "SELECT DISTINCT r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner \
             WHERE n.nspname LIKE 't\\_%'",
        );
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        for role in roles.lines().map(str::trim).filter(|r| !r.is_empty()) {
            psql("postgres", &format!("DROP ROLE IF EXISTS \"{role}\""));
        }
    }
}

/// `psql` as the `postgres` superuser on the local server, running `sql` in
/// `database` (tuples only, unaligned, quiet, no psqlrc).
pub fn psql_command(database: &str, sql: &str) -> Command {
    let mut command = psql_session(database);
    command.args(["-c", sql]).stdin(Stdio::null());
    command
}

/// `psql` as [`psql_command`] has it, reading statements from its stdin.
pub fn psql_session(database: &str) -> Command {
    let mut command = Command::new("psql");
    command.args(["-h", "127.0.0.1", "-U", "postgres", "-d", database, "-XtAq"]);
    command
}

/// Runs `sql` in `database`; its output, trimmed. Panics on failure.
pub fn psql(database: &str, sql: &str) -> String {
    let output = psql_command(database, sql).output().expect("run psql");
    assert!(
        output.status.success(),
        "psql `{sql}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Runs `sql`, ignoring failure (clean-up); its output.
pub fn psql_quiet(database: &str, sql: &str) -> String {
    psql_command(database, sql)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `<prefix>_<label>_<pid>_<n>_<nanos>`: unique per test and per run, and a
/// valid SQL identifier and vhost name (lower-case ASCII, digits, `_`).
pub fn unique_name(prefix: &str, label: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    format!("{prefix}_{label}_{}_{n}_{nanos}", std::process::id())
}

/// A RabbitMQ virtual host of its own for one test, on the local broker
/// (guest/guest): its exchanges and queues cannot meet another test's.
/// Deleted, with everything in it, when the value is dropped.
pub struct TestBroker {
    pub vhost: String,
    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>`, for `trellis up --amqp-url`.
    pub url: String,
}

impl TestBroker {
    pub fn new(label: &str) -> Self {
        let vhost = unique_name("trellis_t", label);
        rabbitmqctl(&["add_vhost", &vhost]);
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        Self {
            url: format!("amqp://guest:guest@127.0.0.1:5672/{vhost}"),
            vhost,
        }
    }

    /// `(name, messages)` of every queue in the vhost, sorted by name.
    pub fn queues(&self) -> Vec<(String, u64)> {
        let out = rabbitmqctl(&[
            "list_queues",
            "-q",
            "--no-table-headers",
            "-p",
            &self.vhost,
            "name",
            "messages",
        ]);
        let mut queues: Vec<(String, u64)> = out
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let name = fields.next()?.to_string();
                let messages = fields.next()?.parse().ok()?;
                Some((name, messages))
            })
            .collect();
        queues.sort();
        queues
    }

    /// Messages ready in `queue` (0 when it does not exist).
    pub fn messages(&self, queue: &str) -> u64 {
        self.queues()
            .into_iter()
            .find(|(name, _)| name == queue)
            .map_or(0, |(_, n)| n)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.vhost])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `rabbitmqctl args`; its stdout. Panics on failure.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// ===========================================================================
// Messaging test helpers (tests/tests/messaging.rs, saga.rs, broker_restart.rs)
//
// What the broker shows about a test's vhost beyond `TestBroker::queues`: its
// consumers, and waiting for them (a message published before its queue is
// declared and bound matches nothing and is dropped, as AMQP does).
// ===========================================================================

impl TestBroker {
    /// Names of the queues of the vhost that have at least one consumer,
    /// sorted, without repeats.
    pub fn consumers(&self) -> Vec<String> {
        let out = rabbitmqctl(&[
            "list_consumers",
            "-q",
            "--no-table-headers",
            "-p",
            &self.vhost,
            "queue_name",
        ]);
        let mut queues: Vec<String> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        queues.sort();
        queues.dedup();
        queues
    }

    /// The vhost's client connections: (pid, connection name).
    pub fn connections(&self) -> Vec<(String, String)> {
        let out = rabbitmqctl(&[
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "vhost",
            "client_properties",
        ]);
        // (`list_connections` lists every vhost's, whatever `-p` says.)
        out.lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, '\t');
                let (pid, vhost, properties) = (fields.next()?, fields.next()?, fields.next()?);
                if vhost != self.vhost {
                    return None;
                }
                // `...{"connection_name",longstr,"trellis"}...` (Erlang terms).
                let after = properties.split_once("connection_name")?.1;
                let name = after.split('"').nth(2)?;
                Some((pid.trim().to_string(), name.to_string()))
            })
            .collect()
    }

    /// Closes the vhost's connections whose name starts with `prefix`; how
    /// many it closed.
    pub fn close_connections_named(&self, prefix: &str) -> usize {
        let chosen: Vec<String> = self
            .connections()
            .into_iter()
            .filter(|(_, name)| name.starts_with(prefix))
            .map(|(pid, _)| pid)
            .collect();
        for pid in &chosen {
            rabbitmqctl(&["close_connection", pid, "closed by a trellis test"]);
        }
        chosen.len()
    }

    /// Waits up to `limit` until every queue in `queues` has a consumer;
    /// whether they all do.
    pub fn wait_for_consumers(&self, queues: &[&str], limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            let consumed = self.consumers();
            if queues.iter().all(|q| consumed.iter().any(|c| c == q)) {
                return true;
            }
            if started.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

// ===========================================================================
// The whole shop (shared by tests/tests/orders.rs and tests/tests/messaging.rs)
//
// `shop_manifest()` turns the root `spin.toml` into a manifest that runs the
// guests built by `build.rs`; `Shop` runs it with `trellis up` over a fresh
// database and a fresh RabbitMQ vhost; `Reply` is a response read whole.
// ===========================================================================

/// The workspace root (the directory of the root `spin.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The root `spin.toml` (the shop), rewritten to run from any directory on the
/// guests built by `build.rs`:
///
/// - `source = "target/wasm32-wasip2/release/<x>.wasm"` becomes the absolute
///   path of [`guest`]`("<x>")` (panics if that guest was not built);
/// - `migrations` and `openapi` stay relative: a manifest names only files
///   inside its directory, and [`shop_app`] copies them there;
/// - `[component.<id>.build]` tables are dropped (nothing is built here).
///
/// Everything else (routes, triggers, variables, tool tables) is kept as it is,
/// so the tests follow the real manifest. Write it with [`AppDir::new`].
pub fn shop_manifest() -> String {
    shop_manifest_text()
}

/// The shop as an app directory, to run with `trellis up` or deploy with
/// `trellis deploy`: its `spin.toml` as [`shop_manifest`] has it, with the
/// migrations and the OpenAPI document copied in, as a team's app directory
/// would hold them.
pub fn shop_app() -> AppDir {
    let app = AppDir::new(&shop_manifest_text());
    let root = workspace_root();
    for component in ["user", "order", "payment"] {
        let from = root.join("components").join(component).join("migrations");
        let to = app
            .path()
            .join("components")
            .join(component)
            .join("migrations");
        std::fs::create_dir_all(&to).expect("create migrations dir");
        for entry in std::fs::read_dir(&from).expect("read migrations") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy migration");
        }
    }
    std::fs::copy(root.join("openapi.json"), app.path().join("openapi.json"))
        .expect("copy openapi.json");
    app
}

fn shop_manifest_text() -> String {
    let root = workspace_root();
    let path = root.join("spin.toml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = String::with_capacity(text.len() + 1024);
    let mut in_build_table = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            // `[component.<id>.build]` (not an array of tables `[[...]]`).
            in_build_table = !trimmed.starts_with("[[")
                && trimmed.starts_with("[component.")
                && trimmed
                    .trim_end_matches(|c: char| c != ']')
                    .ends_with(".build]");
        }
        if in_build_table {
            continue;
        }
        if let Some(value) = toml_string_value(trimmed, "source")
            && let Some(name) = value
                .strip_prefix("target/wasm32-wasip2/release/")
                .and_then(|v| v.strip_suffix(".wasm"))
        {
            out.push_str(&format!("source = {}\n", toml_quote(&guest(name))));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The string of a one-line `key = "value"` (no escapes in value), else `None`.
fn toml_string_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line
        .strip_prefix(key)?
        .trim_start()
        .strip_prefix('=')?
        .trim();
    let value = rest.strip_prefix('"')?;
    let end = value.find('"')?;
    let (value, after) = value.split_at(end);
    let after = after[1..].trim();
    (!value.contains('\\') && (after.is_empty() || after.starts_with('#'))).then_some(value)
}

/// `path` as a TOML basic string.
fn toml_quote(path: &Path) -> String {
    let text = path.display().to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The shop (root `spin.toml`, see [`shop_manifest`]) run by `trellis up` on
/// port 0 with `--database-url` its own [`TestDatabase`] and `--amqp-url` its
/// own [`TestBroker`] vhost. Field order is drop order: the host stops first,
/// then the database and the vhost are dropped, then the app directory.
pub struct Shop {
    pub trellis: Trellis,
    pub db: TestDatabase,
    pub broker: TestBroker,
    app: AppDir,
    http: reqwest::Client,
}

impl Shop {
    /// A fresh database and vhost named after `label`, and the shop over them.
    pub fn start(label: &str) -> Self {
        Self::start_with(label, &[])
    }

    /// Like [`Shop::start`], with more `trellis up` arguments (not
    /// `--database-url` nor `--amqp-url`, which are given already).
    pub fn start_with(label: &str, extra_args: &[&str]) -> Self {
        Self::start_in(TestDatabase::new(label), TestBroker::new(label), extra_args)
    }

    /// The shop over a database and a vhost the caller prepared (e.g. a vhost
    /// whose access was revoked with [`TestBroker::revoke_access`], to start
    /// with the broker unreachable).
    pub fn start_in(db: TestDatabase, broker: TestBroker, extra_args: &[&str]) -> Self {
        Self::start_in_env(db, broker, extra_args, &[])
    }

    /// [`Shop::start_in`] with environment variables for `trellis up`.
    pub fn start_in_env(
        db: TestDatabase,
        broker: TestBroker,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let app = shop_app();
        let mut args = vec![
            "--database-url",
            db.url.as_str(),
            "--amqp-url",
            broker.url.as_str(),
            // Tests run several shops at once against one Postgres (100
            // connections): keep each pool small.
            "--max-pool-connections",
            "4",
        ];
        args.extend_from_slice(extra_args);
        let trellis = Trellis::up_with(
            &app.manifest(),
            UpOptions {
                args,
                env: env.to_vec(),
                ..UpOptions::default()
            },
        );
        Self {
            trellis,
            db,
            broker,
            app,
            http: client(),
        }
    }

    /// The directory holding the shop's `spin.toml`.
    pub fn app_dir(&self) -> &Path {
        self.app.path()
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        self.trellis.url(path)
    }

    /// The shop's HTTP client (see [`client`]).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET path`, read whole.
    pub async fn get(&self, path: &str) -> Reply {
        Reply::read(self.http.get(self.url(path)).send().await.expect("GET")).await
    }

    /// `POST path` with `body` as JSON, read whole.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Reply {
        let response = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST");
        Reply::read(response).await
    }
}

impl TestBroker {
    /// Takes away guest's permissions on the vhost: connections to it are
    /// refused (the broker is "down" for that vhost) until
    /// [`TestBroker::restore_access`]. Open connections are not closed; see
    /// [`TestBroker::close_connections`].
    pub fn revoke_access(&self) {
        rabbitmqctl(&["clear_permissions", "-p", &self.vhost, "guest"]);
    }

    /// Gives guest its full permissions on the vhost back.
    pub fn restore_access(&self) {
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &self.vhost,
            "guest",
            ".*",
            ".*",
            ".*",
        ]);
    }

    /// Closes every client connection to the vhost (as a broker restart would).
    pub fn close_connections(&self) {
        rabbitmqctl(&[
            "close_all_connections",
            "-p",
            &self.vhost,
            "--limit",
            "100000",
            "closed by a trellis test",
        ]);
    }
}

/// A response, read whole; its body must be JSON (everything in api.md is).
pub struct Reply {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    /// The body exactly as received.
    pub text: String,
    /// The body parsed.
    pub body: serde_json::Value,
}

impl Reply {
    /// Reads `response` whole; panics if its body is not JSON.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or_else(|err| {
            panic!("{status} with a body that is not JSON ({err}): {text:?}")
        });
        Self {
            status,
            headers,
            text,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the error envelope of api.md with `status` and `code` (and a
    /// JSON content type); returns the message.
    pub fn assert_error(&self, status: u16, code: &str) -> &str {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.body["error"]["code"], code, "{}", self.text);
        assert_eq!(
            self.body.as_object().map(|o| o.len()),
            Some(1),
            "{}",
            self.text
        );
        self.body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {}", self.text))
    }

    /// Asserts `422 invalid` with a message naming `field`.
    pub fn assert_invalid(&self, field: &str) {
        let message = self.assert_error(422, "invalid");
        assert!(
            message.contains(field),
            "the message does not name `{field}`: {message}"
        );
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (api.md's
/// times); `None` for anything else (an offset other than `Z`, a missing
/// part, a lowercase `t`).
pub fn rfc3339_utc_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if punctuation.iter().any(|&(i, c)| b.get(i) != Some(&c)) {
        return None;
    }
    let rest = b.get(19..)?;
    let fraction = match rest {
        [b'.', digits @ .., b'Z'] => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
        [b'Z'] => true,
        _ => false,
    };
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let valid = fraction
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    valid.then_some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Asserts `created_at` is RFC 3339 UTC with a `Z` and within 5 minutes of
/// now (the server and the tests share a clock: a time that is not UTC would
/// be hours off).
pub fn assert_recent_utc(created_at: &str) {
    let created = rfc3339_utc_seconds(created_at)
        .unwrap_or_else(|| panic!("not RFC 3339 UTC with a Z: {created_at:?}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    assert!(
        (created - now).abs() < 300,
        "{created_at} is not now ({now} s since the epoch)"
    );
}

/// A private CA and a certificate it signed for 127.0.0.1, made with the
/// openssl CLI: `ca.pem`, `server.pem` and `server.key` in the directory.
pub fn certificates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        dir.path().join("server.ext"),
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n\
         extendedKeyUsage = serverAuth\n",
    )
    .expect("write the extensions");
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=trellis test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    ];
    for args in steps {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    dir
}
