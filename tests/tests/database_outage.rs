//! PostgreSQL stopped and started under a running `trellis`: requests fail
//! fast with `connection-failed`, `/health/ready` says the database is down,
//! and the same host recovers once the server is back.
//!
//! This stops the shared local cluster, so it lives in its own test binary:
//! `cargo test` runs test binaries one after another (never two at once), so
//! no other database test of the same `cargo test` is running meanwhile. A
//! runner that runs binaries in parallel (`cargo nextest`), or a second
//! `cargo test` on the same machine using the same server, is not protected.
//! [`Stopped`] starts the server again whatever happens to the test.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trellis_tests::{AppDir, Trellis, UpOptions, client};

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

fn psql(database: &str, sql: &str) -> std::io::Result<std::process::Output> {
    trellis_tests::psql_command(database, sql).output()
}

/// The local cluster (`/etc/postgresql/<version>/main`), stopped while this
/// lives; dropping it starts the server and waits until it answers.
struct Stopped {
    version: String,
}

impl Stopped {
    fn new() -> Self {
        let version = std::fs::read_dir("/etc/postgresql")
            .expect("/etc/postgresql: a Debian-style PostgreSQL install")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .next()
            .expect("a cluster version under /etc/postgresql");
        let stopped = Self { version };
        stopped.pg_ctlcluster("stop");
        stopped
    }

    fn pg_ctlcluster(&self, action: &str) {
        let status = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.version, "main", action])
            .status()
            .expect("run pg_ctlcluster");
        assert!(status.success(), "pg_ctlcluster {action} failed: {status}");
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // Never panic here (a panic while unwinding aborts): retry, then give up loudly.
        for _ in 0..3 {
            let _ = Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &self.version, "main", "start"])
                .status();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                if psql("postgres", "SELECT 1").is_ok_and(|o| o.status.success()) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        eprintln!(
            "PostgreSQL did not come back: start it with `pg_ctlcluster {} main start`",
            self.version
        );
    }
}

async fn select_one(trellis: &Trellis) -> Value {
    let body = json!({
        "address": "postgres://trellis.internal/data",
        "steps": [{ "op": "query", "sql": "SELECT 1 AS one", "params": [] }],
    });
    let response = client()
        .post(trellis.url("/a/sql"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "{}", trellis.logs());
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

async fn ready(trellis: &Trellis) -> (u16, Value) {
    let response = client()
        .get(trellis.url("/health/ready"))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_str(&response.text().await.unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_survives_the_database_stopping_and_starting() {
    let pid = std::process::id();
    let database = format!("trellis_t_outage_{pid}");
    let app_name = format!("outage_{pid}");
    let drop_all = || {
        let _ = psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
        );
        // The managed role: `t_<app>_a_data_<hash of the database>`.
        let _ = psql(
            "postgres",
            &format!(
                "DO $$ DECLARE r text; BEGIN \
                   FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 't\\_{app_name}\\_%' LOOP \
                     EXECUTE format('DROP ROLE %I', r); \
                   END LOOP; END $$"
            ),
        );
    };
    drop_all();

    let app = AppDir::new(&format!(
        r#"spin_manifest_version = 2

[application]
name = "{app_name}"

[[trigger.http]]
route = "/a/..."
component = "a"

[component.a]
source = "{{dbtest}}"

[component.a.tool.trellis.databases.data]
"#
    ));
    let url = format!("{SERVER}/{database}");
    let trellis = Trellis::up_with(
        &app.manifest(),
        UpOptions {
            args: vec!["--database-url", &url],
            ..UpOptions::default()
        },
    );

    assert_eq!(
        select_one(&trellis).await["results"][0]["rows"],
        json!([[1]])
    );
    assert_eq!(
        ready(&trellis).await,
        (
            200,
            json!({"status": "ready", "dependencies": {"database": "up"}})
        )
    );

    {
        let _stopped = Stopped::new();

        let started = Instant::now();
        let body = select_one(&trellis).await;
        let elapsed = started.elapsed();
        assert_eq!(body["open_error"]["kind"], "connection-failed", "{body}");
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

        let (status, body) = ready(&trellis).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["dependencies"]["database"], "down", "{body}");
    } // Postgres starts again here, and answers.

    // The same host, not restarted, serves again.
    let body = select_one(&trellis).await;
    assert_eq!(
        body["results"][0]["rows"],
        json!([[1]]),
        "{body}\n{}",
        trellis.logs()
    );
    assert_eq!(
        ready(&trellis).await,
        (
            200,
            json!({"status": "ready", "dependencies": {"database": "up"}})
        )
    );

    drop(trellis);
    drop_all();
}
