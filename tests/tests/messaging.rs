//! `trellis:messaging` end to end: the test guest `mqtest` publishes through
//! `POST /publish/<routing-key>` and records every delivery its handler gets
//! (`GET /deliveries`), under a real `trellis up` on its own Postgres database
//! and its own RabbitMQ vhost. The tests check what the design promises: the
//! message as delivered, each disposition (`ack`, `retry`, `reject`, a trap),
//! dead-lettering after `max_attempts`, publish permissions, start-up
//! refusals, `prefetch` bounding how many deliveries run at once, and SIGTERM
//! letting the deliveries in hand finish, and the outbox relay (rows committed
//! to `_trellis_outbox` are published; a routing key the component may not
//! publish is kept and marked).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trellis_tests::{
    AppDir, TestBroker, TestDatabase, Trellis, UpOptions, client, guest, psql, psql_session,
    workspace_root,
};

/// The trigger's queue and where its messages end up.
const QUEUE: &str = "mq.work";
const DEAD_LETTER: &str = "mq.work.dead-letter";
/// `[application.trigger.amqp] max_attempts` of the manifest.
const MAX_ATTEMPTS: usize = 3;
/// `[application.trigger.amqp] retry_delay_ms` of the manifest.
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// The schema of the guest's managed database `mq` (app `mq`, component
/// `mqtest`): `t_<app>_<component>_<name>`.
const SCHEMA: &str = "t_mq_mqtest_mq";
/// Its outbox's schema: the platform's, beside it.
const OUTBOX: &str = "o_mq_mqtest_mq";
/// A bound on how long something the host does at once may take on a busy
/// test machine.
const SETTLE: Duration = Duration::from_secs(20);

/// The mqtest app; `trigger_extra` is appended to its `[[trigger.amqp]]`.
fn manifest(trigger_extra: &str) -> String {
    format!(
        r#"spin_manifest_version = 2

[application]
name = "mq"

[application.trigger.amqp]
exchange = "mq"
max_attempts = {MAX_ATTEMPTS}
retry_delay_ms = {retry}

[[trigger.http]]
route = "/publish/..."
component = "mqtest"

[[trigger.http]]
route = "/deliveries"
component = "mqtest"

[[trigger.amqp]]
component = "mqtest"
queue = "{QUEUE}"
binding_keys = ["work.#"]
{trigger_extra}

[component.mqtest]
source = {source:?}
allowed_outbound_hosts = []
[component.mqtest.variables]
db_url = "postgres://trellis.internal/mq"
[component.mqtest.tool.trellis.databases.mq]
migrations = "migrations"
outbox = true
[component.mqtest.tool.trellis.messaging]
publish = ["work.*"]
"#,
        retry = RETRY_DELAY.as_millis(),
        source = guest("mqtest").display().to_string(),
    )
}

/// The mqtest app's directory: its manifest and its migrations beside it.
fn app_dir(trigger_extra: &str) -> AppDir {
    let app = AppDir::new(&manifest(trigger_extra));
    let from = workspace_root().join("components/mqtest/migrations");
    let to = app.path().join("migrations");
    std::fs::create_dir_all(&to).expect("migrations dir");
    for entry in std::fs::read_dir(from).expect("components/mqtest/migrations") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy migration");
    }
    app
}

/// A compilation cache shared by the hosts of these tests, and kept between
/// runs: compiling the guest again for every test would be most of its time.
/// (Entries are keyed by the component's bytes and written atomically.)
fn cache_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("messaging-cache");
    std::fs::create_dir_all(&dir).expect("cache dir");
    dir
}

/// The mqtest app running on a database and a vhost of its own. Field order
/// is drop order: the host stops before its database and vhost go.
struct Mq {
    trellis: Trellis,
    db: TestDatabase,
    broker: TestBroker,
    _app: AppDir,
    http: reqwest::Client,
}

impl Mq {
    /// Starts the app and waits until its handler consumes `mq.work`.
    fn start(label: &str, trigger_extra: &str) -> Self {
        let db = TestDatabase::new(label);
        let broker = TestBroker::new(label);
        let app = app_dir(trigger_extra);
        let trellis = Trellis::up_with(
            &app.manifest(),
            UpOptions {
                args: vec!["--database-url", &db.url, "--amqp-url", &broker.url],
                cache_dir: Some(&cache_dir()),
                ..UpOptions::default()
            },
        );
        // A message published before the queue is bound is dropped: wait for
        // the consumer, which the host starts after declaring and binding.
        assert!(
            broker.wait_for_consumers(&[QUEUE], SETTLE),
            "no consumer on {QUEUE} within {SETTLE:?}; queues: {:?}\n{}",
            broker.queues(),
            trellis.logs()
        );
        Self {
            trellis,
            db,
            broker,
            _app: app,
            http: client(),
        }
    }

    /// `POST /publish/<key>` with `body` and request headers; (status, body).
    async fn publish(&self, key: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut request = self
            .http
            .post(self.trellis.url(&format!("/publish/{key}")))
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("POST /publish");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// Publishes a JSON body as `application/json`; asserts 204.
    async fn publish_json(&self, key: &str, body: &Value) {
        let (status, text) = self
            .publish(
                key,
                &body.to_string(),
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(
            status,
            204,
            "publish {key} {body}: {text}\n{}",
            self.trellis.logs()
        );
    }

    /// Every row the handler wrote, in order.
    async fn deliveries(&self) -> Vec<Value> {
        let response = self
            .http
            .get(self.trellis.url("/deliveries"))
            .send()
            .await
            .expect("GET /deliveries");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(status, 200, "GET /deliveries: {text}");
        match serde_json::from_str(&text) {
            Ok(Value::Array(rows)) => rows,
            _ => panic!("GET /deliveries is not a JSON array: {text}"),
        }
    }

    /// Waits until there are at least `n` rows; the rows.
    async fn wait_rows(&self, n: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let rows = self.deliveries().await;
            if rows.len() >= n {
                return rows;
            }
            assert!(
                started.elapsed() < SETTLE,
                "{} deliveries after {SETTLE:?}, expected {n}: {rows:#?}\nqueues: {:?}\n{}",
                rows.len(),
                self.broker.queues(),
                self.trellis.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `queue` holds `n` messages (ready or unacknowledged).
    async fn wait_queue(&self, queue: &str, n: u64) {
        let started = Instant::now();
        loop {
            if self.broker.messages(queue) == n {
                return;
            }
            assert!(
                started.elapsed() < SETTLE,
                "{queue} does not hold {n} messages after {SETTLE:?}: {:?}\n{}",
                self.broker.queues(),
                self.trellis.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A delivered header's value: `headers` is a JSON object of names to
/// values, or a list of `[name, value]` pairs.
fn header<'a>(row: &'a Value, name: &str) -> Option<&'a str> {
    match &row["headers"] {
        Value::Object(map) => map.get(name).and_then(Value::as_str),
        Value::Array(pairs) => pairs
            .iter()
            .find(|p| p[0].as_str() == Some(name))
            .and_then(|p| p[1].as_str()),
        _ => None,
    }
}

/// The delivered body as JSON (stored as text, or as JSON already).
fn body(row: &Value) -> Value {
    match &row["body"] {
        Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| json!(text)),
        other => other.clone(),
    }
}

fn attempts(rows: &[Value]) -> Vec<u64> {
    rows.iter()
        .map(|r| r["attempt"].as_u64().unwrap_or(0))
        .collect()
}

/// The row's message id; the same on every row of `rows`.
fn same_message_id(rows: &[Value]) -> String {
    let id = rows[0]["message_id"]
        .as_str()
        .expect("message_id")
        .to_string();
    assert!(!id.is_empty());
    for row in rows {
        assert_eq!(
            row["message_id"],
            json!(id),
            "redelivered with another id: {rows:#?}"
        );
    }
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_published_message_is_delivered_whole_and_acked() {
    let mq = Mq::start("mq_ack", "");
    let sent = json!({"hello": "world", "n": 1});
    let (status, text) = mq
        .publish(
            "work.created",
            &sent.to_string(),
            &[
                ("content-type", "application/json"),
                ("message-id", "msg-ack-1"),
                ("correlation-id", "corr-42"),
                ("x-h-tenant", "acme"),
            ],
        )
        .await;
    assert_eq!(status, 204, "{text}\n{}", mq.trellis.logs());

    let rows = mq.wait_rows(1).await;
    let row = &rows[0];
    assert_eq!(row["message_id"], "msg-ack-1", "{row:#}");
    assert_eq!(row["routing_key"], "work.created", "{row:#}");
    assert_eq!(row["queue"], QUEUE, "{row:#}");
    assert_eq!(row["attempt"], 1, "{row:#}");
    assert_eq!(row["redelivered"], false, "{row:#}");
    assert_eq!(row["content_type"], "application/json", "{row:#}");
    assert_eq!(row["correlation_id"], "corr-42", "{row:#}");
    assert_eq!(header(row, "tenant"), Some("acme"), "{row:#}");
    assert_eq!(body(row), sent, "{row:#}");

    // Acknowledged: nothing left in the queue, nothing dead-lettered, and no
    // second delivery.
    mq.wait_queue(QUEUE, 0).await;
    tokio::time::sleep(RETRY_DELAY * 4).await;
    assert_eq!(mq.deliveries().await.len(), 1);
    assert_eq!(mq.broker.messages(DEAD_LETTER), 0);
}

/// Consumers' channels live on connections of their own (many tenants'
/// consumers would exceed one connection's `channel_max`). Losing one of
/// those, while the main connection stays up, must not leave its consumers
/// waiting for a reconnection that never comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_whose_own_connection_drops_starts_over_on_a_new_one() {
    let mq = Mq::start("mq_consumer_conn", "");
    let connections = mq.broker.connections();
    let names: Vec<&str> = connections.iter().map(|(_, n)| n.as_str()).collect();
    assert!(names.contains(&"trellis"), "{connections:?}");
    assert!(names.contains(&"trellis consumers 1"), "{connections:?}");
    let main_pid = &connections
        .iter()
        .find(|(_, n)| n == "trellis")
        .expect("main")
        .0;

    assert_eq!(
        mq.broker.close_connections_named("trellis consumers"),
        1,
        "{connections:?}\n{}",
        mq.trellis.logs()
    );
    // Gone, then back on a new consumer connection, with the main one
    // untouched.
    let started = Instant::now();
    while mq.broker.consumers().contains(&QUEUE.to_string()) {
        assert!(started.elapsed() < SETTLE, "the consumer never went away");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        mq.broker.wait_for_consumers(&[QUEUE], SETTLE),
        "the consumer did not come back\n{}",
        mq.trellis.logs()
    );
    let after = mq.broker.connections();
    assert!(
        after
            .iter()
            .any(|(pid, n)| n == "trellis" && pid == main_pid),
        "{after:?}"
    );
    assert!(
        after
            .iter()
            .any(|(_, n)| n.starts_with("trellis consumers")),
        "{after:?}"
    );

    mq.publish_json("work.created", &json!({"n": 1})).await;
    let rows = mq.wait_rows(1).await;
    assert_eq!(body(&rows[0]), json!({"n": 1}));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_relays_committed_rows_and_keeps_forbidden_ones() {
    let mq = Mq::start("mq_outbox", "");
    // Committed straight into the component's outbox, as its own
    // transaction would: one row it may publish, one it may not.
    psql(
        &mq.db.name,
        &format!(
            "INSERT INTO {OUTBOX}._trellis_outbox \
               (routing_key, body, content_type, message_id, correlation_id, headers) VALUES \
             ('work.outboxed', convert_to('{{\"n\": 1}}', 'UTF8'), 'application/json', \
              'outbox-1', 'corr-7', '{{\"traceparent\": \"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"}}'), \
             ('other.forbidden', convert_to('x', 'UTF8'), NULL, 'outbox-2', NULL, '{{}}')"
        ),
    );

    let rows = mq.wait_rows(1).await;
    let row = &rows[0];
    assert_eq!(row["routing_key"], "work.outboxed", "{row:#}");
    assert_eq!(row["message_id"], "outbox-1", "{row:#}");
    assert_eq!(row["correlation_id"], "corr-7", "{row:#}");
    assert_eq!(row["content_type"], "application/json", "{row:#}");
    assert_eq!(
        header(row, "traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        "{row:#}"
    );
    assert_eq!(body(row), json!({"n": 1}), "{row:#}");

    // The published row is gone; the forbidden one stays, marked, unsent.
    let started = Instant::now();
    let left = loop {
        let left = psql(
            &mq.db.name,
            &format!(
                "SELECT routing_key || ' ' || coalesce(error, '-') FROM {OUTBOX}._trellis_outbox"
            ),
        );
        if left.starts_with("other.forbidden ") && !left.ends_with(" -") {
            break left;
        }
        assert!(
            started.elapsed() < SETTLE,
            "outbox still holds: {left}\n{}",
            mq.trellis.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        left.contains("not covered by the component's `publish` patterns"),
        "{left}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mq.deliveries().await.len(), 1);
}

/// A transaction held open in a `psql` process, fed statements on stdin.
struct OpenTransaction {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl OpenTransaction {
    fn begin(database: &str) -> Self {
        let mut child = psql_session(database)
            .args(["-v", "ON_ERROR_STOP=1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn psql");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut tx = Self {
            child,
            stdin,
            stdout,
        };
        tx.run("BEGIN");
        tx
    }

    /// Runs `sql` and waits until psql has done it.
    fn run(&mut self, sql: &str) {
        use std::io::{BufRead as _, Write as _};
        writeln!(self.stdin, "{sql};\n\\echo __done__").expect("write to psql");
        self.stdin.flush().expect("flush psql");
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.stdout.read_line(&mut line).expect("read psql");
            assert!(read > 0, "psql ended during `{sql}`");
            if line.trim() == "__done__" {
                return;
            }
        }
    }

    fn commit(mut self) {
        self.run("COMMIT");
        drop(self.stdin);
        assert!(self.child.wait().expect("psql").success());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_committed_while_the_relay_drains_goes_out_without_the_sweep() {
    // Writers notify only while no relay is awake. A row whose trigger ran
    // while the relay drained was not notified: the relay must not go to
    // sleep (until its 30 s sweep) before that row's transaction has ended.
    const BACKLOG: usize = 5000;
    // `AWAKE_LOCK` of host/src/outbox.rs, the relay's advisory lock.
    const AWAKE_LOCK: u32 = 0x7472_6c41;
    let mq = Mq::start("mq_outbox_race", "");
    let db = &mq.db.name;
    let count = |sql: &str| -> usize { psql(db, sql).parse().expect("a count") };
    let relay_awake = format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
           AND mode = 'ExclusiveLock' AND classid = {AWAKE_LOCK} AND objsubid = 2 \
           AND objid = '{OUTBOX}._trellis_outbox'::regclass::oid"
    );
    let left = format!("SELECT count(*) FROM {OUTBOX}._trellis_outbox");

    // A backlog keeps the relay draining for a while.
    psql(
        db,
        &format!(
            "INSERT INTO {OUTBOX}._trellis_outbox (routing_key, body) \
             SELECT 'work.backlog', convert_to(n::text, 'UTF8') FROM generate_series(1, {BACKLOG}) n"
        ),
    );
    let started = Instant::now();
    while count(&relay_awake) == 0 {
        assert!(
            started.elapsed() < SETTLE,
            "the relay never took its lock\n{}",
            mq.trellis.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A row written while the relay drains, in a transaction left open.
    let mut late = OpenTransaction::begin(db);
    late.run(&format!(
        "INSERT INTO {OUTBOX}._trellis_outbox (routing_key, body, message_id) \
         VALUES ('work.late', convert_to('late', 'UTF8'), 'late-1')"
    ));
    // The relay was awake throughout: it still is, with backlog left.
    assert!(
        count(&relay_awake) == 1 && count(&left) > 1,
        "the relay finished the backlog before the row went in; raise BACKLOG"
    );
    // The relay gets through the backlog and would go to sleep.
    let started = Instant::now();
    while count(&left) > 0 {
        assert!(
            started.elapsed() < SETTLE * 3,
            "backlog not relayed: {} rows left\n{}",
            count(&left),
            mq.trellis.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    late.commit();
    let committed = Instant::now();
    // Well inside the 30 s sweep.
    while count(&left) > 0 {
        assert!(
            committed.elapsed() < Duration::from_secs(10),
            "the row committed last was not relayed within 10 s\n{}",
            mq.trellis.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_relay_holds_no_connection_and_a_commit_wakes_it() {
    let mq = Mq::start("mq_outbox_idle", "");
    let db = &mq.db.name;
    // `RELAY_APPLICATION` and `LISTENER_APPLICATION` of host/src/outbox.rs.
    let connections = |application: &str| -> usize {
        psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND application_name = '{application}'"
            ),
        )
        .parse()
        .expect("a count")
    };
    let insert = |id: &str| {
        psql(
            db,
            &format!(
                "INSERT INTO {OUTBOX}._trellis_outbox (routing_key, body, message_id) \
                 VALUES ('work.idle', convert_to('{id}', 'UTF8'), '{id}')"
            ),
        );
    };
    insert("idle-1");
    mq.wait_rows(1).await;
    // Five seconds after its last row the relay lets its connection go;
    // the one listener stays.
    let started = Instant::now();
    while connections("trellis outbox relay") > 0 {
        assert!(
            started.elapsed() < SETTLE,
            "the idle relay kept its connection\n{}",
            mq.trellis.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(connections("trellis outbox listener"), 1);
    // A commit wakes it through the shared listener, well before the sweep.
    let committed = Instant::now();
    insert("idle-2");
    let rows = mq.wait_rows(2).await;
    assert!(
        committed.elapsed() < Duration::from_secs(10),
        "woken after {:?}",
        committed.elapsed()
    );
    assert_eq!(rows[1]["message_id"], "idle-2", "{rows:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_without_id_gets_one() {
    let mq = Mq::start("mq_noid", "");
    mq.publish_json("work.plain", &json!({"k": 1})).await;
    let rows = mq.wait_rows(1).await;
    let id = rows[0]["message_id"].as_str().unwrap_or("");
    assert!(
        !id.is_empty(),
        "no message id on the delivery: {:#}",
        rows[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_deliveries_in_hand_finish() {
    let mut mq = Mq::start("mq_drain", "");
    mq.publish_json("work.slow", &json!({"sleep_ms": 1500}))
        .await;
    // The row is written as the handler starts: it is now mid-delivery.
    mq.wait_rows(1).await;

    mq.trellis.signal(libc::SIGTERM);
    let status = mq
        .trellis
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("still running 20 s after SIGTERM\n{}", mq.trellis.logs()));
    assert!(status.success(), "{status}\n{}", mq.trellis.logs());
    assert!(
        mq.trellis.logs().contains("consumer drained and stopped"),
        "{}",
        mq.trellis.logs()
    );
    // Acked before the host went: nothing is left for the broker to
    // redeliver (an unsettled delivery would be back in the queue).
    assert_eq!(mq.broker.messages(QUEUE), 0, "{:?}", mq.broker.queues());
    assert_eq!(
        psql(
            &mq.db.name,
            &format!("SELECT count(*) FROM {SCHEMA}.deliveries")
        ),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_then_ack_redelivers_exactly_once() {
    let mq = Mq::start("mq_retry", "");
    mq.publish_json("work.retry", &json!({"fail": 1})).await;

    let rows = mq.wait_rows(2).await;
    same_message_id(&rows);
    assert_eq!(attempts(&rows), [1, 2], "{rows:#?}");

    // Acked on attempt 2: a second past the retry delay, still two.
    tokio::time::sleep(RETRY_DELAY * 2 + Duration::from_secs(1)).await;
    let rows = mq.deliveries().await;
    assert_eq!(rows.len(), 2, "redelivered after ack: {rows:#?}");
    mq.wait_queue(QUEUE, 0).await;
    assert_eq!(
        mq.broker.messages(DEAD_LETTER),
        0,
        "{:?}",
        mq.broker.queues()
    );
    let retrying: u64 = mq
        .broker
        .queues()
        .iter()
        .filter(|(name, _)| name.starts_with("mq.work.retry."))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(retrying, 0, "{:?}", mq.broker.queues());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_message_is_dead_lettered_after_max_attempts() {
    let mq = Mq::start("mq_poison", "");
    mq.publish_json("work.poison", &json!({"fail": 100})).await;

    let rows = mq.wait_rows(MAX_ATTEMPTS).await;
    same_message_id(&rows);
    assert_eq!(attempts(&rows), [1, 2, 3], "{rows:#?}");
    mq.wait_queue(DEAD_LETTER, 1).await;

    // Given up on: not delivered again (the last retry delay was 200 ms).
    tokio::time::sleep(RETRY_DELAY * 8 + Duration::from_secs(1)).await;
    let rows = mq.deliveries().await;
    assert_eq!(rows.len(), MAX_ATTEMPTS, "delivered again: {rows:#?}");
    assert_eq!(
        mq.broker.messages(DEAD_LETTER),
        1,
        "{:?}",
        mq.broker.queues()
    );
    assert_eq!(mq.broker.messages(QUEUE), 0, "{:?}", mq.broker.queues());
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_dead_letters_at_once() {
    let mq = Mq::start("mq_reject", "");
    mq.publish_json("work.bad", &json!({"reject": true})).await;

    let rows = mq.wait_rows(1).await;
    assert_eq!(rows[0]["attempt"], 1, "{rows:#?}");
    mq.wait_queue(DEAD_LETTER, 1).await;
    tokio::time::sleep(RETRY_DELAY * 4 + Duration::from_secs(1)).await;
    let rows = mq.deliveries().await;
    assert_eq!(
        rows.len(),
        1,
        "a rejected message was delivered again: {rows:#?}"
    );
    assert_eq!(mq.broker.messages(QUEUE), 0, "{:?}", mq.broker.queues());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_counts_as_retry() {
    let mq = Mq::start("mq_trap", "");
    mq.publish_json("work.trap", &json!({"trap": true, "trap_times": 1}))
        .await;

    let rows = mq.wait_rows(2).await;
    same_message_id(&rows);
    assert_eq!(attempts(&rows), [1, 2], "{rows:#?}");
    tokio::time::sleep(RETRY_DELAY * 2 + Duration::from_secs(1)).await;
    let rows = mq.deliveries().await;
    assert_eq!(rows.len(), 2, "not acked on attempt 2: {rows:#?}");
    mq.wait_queue(QUEUE, 0).await;
    assert_eq!(
        mq.broker.messages(DEAD_LETTER),
        0,
        "{:?}",
        mq.broker.queues()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_outside_the_patterns_or_with_a_wildcard_is_refused() {
    let mq = Mq::start("mq_perm", "");

    let (status, text) = mq.publish("other.x", "{}", &[]).await;
    assert_eq!(status, 403, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["error"], "not-permitted", "{text}");

    let (status, text) = mq.publish("work.*", "{}", &[]).await;
    assert_eq!(status, 400, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["error"], "invalid", "{text}");

    // Neither reached the queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(mq.deliveries().await.is_empty());
}

/// The `error: ` line of a failed start.
fn error_line(output: &str) -> &str {
    output
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error:` line in:\n{output}"))
}

#[test]
fn an_unknown_field_in_an_amqp_trigger_is_refused_by_name() {
    let broker = TestBroker::new("mq_unknown_field");
    let app = AppDir::new(&format!(
        r#"spin_manifest_version = 2

[application]
name = "mq"

[[trigger.amqp]]
component = "mqtest"
queue = "mq.work"
exchange = "mq"
binding_keys = ["work.#"]
max_retries = 3

[component.mqtest]
source = {source:?}
"#,
        source = guest("mqtest").display().to_string(),
    ));
    let output = match Trellis::try_up(
        &app.manifest(),
        UpOptions {
            args: vec!["--amqp-url", &broker.url],
            ..UpOptions::default()
        },
    ) {
        Ok(trellis) => panic!("started with an unknown field:\n{}", trellis.logs()),
        Err(output) => output,
    };
    let line = error_line(&output);
    assert!(
        line.contains("max_retries"),
        "the field is not named: `{line}`"
    );
    assert!(line.contains("spin.toml:11"), "no file:line in `{line}`");
    assert!(!output.contains("panicked"), "{output}");
}

#[test]
fn a_handler_component_must_export_the_handler() {
    let broker = TestBroker::new("mq_no_handler");
    let app = AppDir::new(
        r#"spin_manifest_version = 2

[application]
name = "mq"

[application.trigger.amqp]
exchange = "mq"

[[trigger.http]]
route = "/..."
component = "web"

[[trigger.amqp]]
component = "greeter"
queue = "mq.greet"
binding_keys = ["greet.#"]

[component.web]
source = "{hello}"

[component.greeter]
source = "{hello}"
"#,
    );
    let output = match Trellis::try_up(
        &app.manifest(),
        UpOptions {
            args: vec!["--amqp-url", &broker.url],
            ..UpOptions::default()
        },
    ) {
        Ok(trellis) => panic!(
            "started with a [[trigger.amqp]] component that exports no handler:\n{}",
            trellis.logs()
        ),
        Err(output) => output,
    };
    let line = error_line(&output);
    assert!(
        line.contains("greeter"),
        "the component is not named: `{line}`"
    );
    assert!(!output.contains("panicked"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_bounds_how_many_deliveries_run_at_once() {
    const PREFETCH: usize = 2;
    const MESSAGES: usize = 6;
    const SLEEP: Duration = Duration::from_millis(300);
    let mq = Mq::start("mq_prefetch", &format!("prefetch = {PREFETCH}"));

    let body = json!({"sleep_ms": SLEEP.as_millis() as u64});
    futures::future::join_all((0..MESSAGES).map(|_| mq.publish_json("work.slow", &body))).await;
    mq.wait_rows(MESSAGES).await;
    mq.wait_queue(QUEUE, 0).await;

    // Each row is written when its handler starts, which then sleeps: a
    // handler runs over [at, at + SLEEP) at least. The broker hands out a
    // delivery only when fewer than PREFETCH are unacknowledged, so a later
    // start is always after an earlier handler's end: no more than PREFETCH
    // of these intervals may overlap. (A few ms are taken off for clock
    // granularity.)
    let starts: Vec<f64> = psql(
        &mq.db.name,
        &format!("SELECT extract(epoch FROM at)::float8 FROM {SCHEMA}.deliveries ORDER BY at"),
    )
    .lines()
    .map(|l| l.trim().parse().expect("epoch seconds"))
    .collect();
    assert_eq!(starts.len(), MESSAGES);
    let length = SLEEP.as_secs_f64() - 0.005;
    let most = starts
        .iter()
        .map(|&t| starts.iter().filter(|&&s| s <= t && t < s + length).count())
        .max()
        .unwrap_or(0);
    assert!(
        most <= PREFETCH,
        "{most} handlers ran at once with prefetch {PREFETCH}; starts: {starts:?}"
    );
    // And the prefetch is used: deliveries do run side by side.
    assert_eq!(
        most, PREFETCH,
        "never {PREFETCH} handlers at once with prefetch {PREFETCH}; starts: {starts:?}"
    );
}
