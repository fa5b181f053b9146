//! Harness for the end-to-end tests: the guest components built by
//! `build.rs`, throw-away app directories with their own `spin.toml`, and the
//! real `trellis` binary started on port 0.

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
        let cache = match options.cache_dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("cache dir")),
        };
        let cache_dir = options
            .cache_dir
            .map(Path::to_path_buf)
            .or_else(|| cache.as_ref().map(|c| c.path().to_path_buf()))
            .expect("cache dir");
        let mut command = Command::new(trellis_bin());
        command
            .arg("up")
            .arg("-f")
            .arg(manifest)
            .args(["--listen", "127.0.0.1:0"])
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
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(addr) = line.strip_prefix("Serving http://") {
                    sent = tx.send(addr.trim().to_string()).is_ok();
                }
            }
        });

        let started = Instant::now();
        let addr = loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
                break addr;
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
            logs,
            _cache: cache,
        })
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
        let name = format!("trellis_t_{label}_{}_{n}_{nanos}", std::process::id());
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
    let mut command = Command::new("psql");
    command
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-XtAqc",
            sql,
        ])
        .stdin(Stdio::null());
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
