//! `spin:postgres/postgres@4.0.0` end to end: the real `trellis` binary, the
//! `dbtest` guest and the real PostgreSQL at 127.0.0.1:5432 (user `postgres`,
//! trust auth; `psql` is used as an independent observer and for clean-up).
//!
//! Each test has its own physical database (`--database-url`) and its own
//! application name, so neither the schemas (`t_<app>_<component>_<name>`)
//! nor the cluster-wide roles that own them (the schema's name and a hash of
//! the database) of concurrent tests or of an earlier interrupted run ever
//! collide. Both are dropped at the end, best effort.
//!
//! Stopping Postgres is tested in `database_outage.rs`, a separate test binary
//! (cargo runs test binaries one after another, never two at once).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trellis_tests::{AppDir, Trellis, UpOptions, client, psql, psql_quiet};

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A physical database and an application name private to one test.
struct TestDb {
    name: String,
    app: String,
}

impl TestDb {
    fn new(test: &str) -> Self {
        let pid = std::process::id();
        let db = Self {
            name: format!("trellis_t_{test}_{pid}"),
            app: format!("{test}_{pid}"),
        };
        db.clean_up(); // a leftover of an earlier run with the same pid
        db
    }

    fn url(&self) -> String {
        format!("{SERVER}/{}", self.name)
    }

    /// The schema of `component`'s managed database `name`.
    fn schema(&self, component: &str, name: &str) -> String {
        format!("t_{}_{component}_{name}", self.app)
    }

    /// The role that owns `schema` (its name also depends on the database).
    fn owner(&self, schema: &str) -> String {
        let owner = self.psql(&format!(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = '{schema}'"
        ));
        assert!(!owner.is_empty(), "no schema {schema}");
        owner
    }

    /// `trellis up` on this database, with `args`.
    fn up(&self, app: &AppDir, args: &[&str]) -> Trellis {
        let url = self.url();
        let mut all = vec!["--database-url", url.as_str()];
        all.extend_from_slice(args);
        Trellis::up_with(
            &app.manifest(),
            UpOptions {
                args: all,
                ..UpOptions::default()
            },
        )
    }

    /// One value (first column of the first row) as `psql` sees it.
    fn psql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }

    fn clean_up(&self) {
        psql_quiet(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        );
        // Roles are cluster-wide: drop this test's after its database (their
        // names start with their schema's).
        psql_quiet(
            "postgres",
            &format!(
                "DO $$ DECLARE r text; BEGIN \
                   FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 't\\_{}\\_%' LOOP \
                     EXECUTE format('DROP ROLE %I', r); \
                   END LOOP; END $$",
                self.app
            ),
        );
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// A manifest: application `app` and `components`, each a `dbtest` routed at
/// `/<id>/...`, given as `(id, extra TOML under [component.<id>])`.
fn manifest(app: &str, components: &[(&str, &str)]) -> AppDir {
    let mut text = format!("spin_manifest_version = 2\n\n[application]\nname = \"{app}\"\n");
    for (id, extra) in components {
        text.push_str(&format!(
            "\n[[trigger.http]]\nroute = \"/{id}/...\"\ncomponent = \"{id}\"\n\n\
             [component.{id}]\nsource = \"{{dbtest}}\"\n{extra}\n"
        ));
    }
    AppDir::new(&text)
}

/// A component with a managed database `data`.
fn managed(id: &str) -> (&str, String) {
    (
        id,
        format!("[component.{id}.tool.trellis.databases.data]\n"),
    )
}

const DATA: &str = "postgres://trellis.internal/data";

fn query(sql: &str) -> Value {
    json!({ "op": "query", "sql": sql, "params": [] })
}

fn execute(sql: &str) -> Value {
    json!({ "op": "execute", "sql": sql, "params": [] })
}

fn execute_with(sql: &str, params: Value) -> Value {
    json!({ "op": "execute", "sql": sql, "params": params })
}

/// `POST /<component>/sql`: the status and the JSON answer.
async fn sql_status(
    trellis: &Trellis,
    component: &str,
    address: &str,
    steps: Vec<Value>,
    trap_after: bool,
) -> (u16, Value) {
    let body = json!({ "address": address, "steps": steps, "trap_after": trap_after });
    let response = client()
        .post(trellis.url(&format!("/{component}/sql")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Runs `steps` and returns each step's result (the request must succeed and
/// the connection open).
async fn sql(trellis: &Trellis, component: &str, address: &str, steps: Vec<Value>) -> Vec<Value> {
    let (status, body) = sql_status(trellis, component, address, steps, false).await;
    assert_eq!(status, 200, "{body}\n{}", trellis.logs());
    assert!(body.get("open_error").is_none(), "could not open: {body}");
    body["results"].as_array().expect("results").clone()
}

/// The rows of a query result.
fn rows(result: &Value) -> &Vec<Value> {
    result["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("not rows: {result}"))
}

/// The single value of a one-row, one-column result.
fn scalar(result: &Value) -> &Value {
    let rows = rows(result);
    assert_eq!(rows.len(), 1, "{result}");
    &rows[0][0]
}

/// The error of a result.
fn error(result: &Value) -> &Value {
    result
        .get("error")
        .unwrap_or_else(|| panic!("expected an error, got {result}"))
}

/// Asserts a result is a query-failed db-error with SQLSTATE `code`.
fn assert_sqlstate(result: &Value, code: &str) {
    let err = error(result);
    assert_eq!(err["kind"], "query-failed", "{result}");
    assert_eq!(err["code"], code, "{result}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_round_trips() {
    let db = TestDb::new("roundtrip");
    let (id, extra) = managed("a");
    let app = manifest(&db.app, &[(id, &extra)]);
    let trellis = db.up(&app, &[]);

    let response = client()
        .post(trellis.url(&format!("/a/roundtrip?address={DATA}")))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "{}", trellis.logs());
    let report: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert!(report.get("open_error").is_none(), "{report}");

    let types = [
        "boolean",
        "int8",
        "int16",
        "int32",
        "int64",
        "floating32",
        "floating64",
        "str",
        "binary",
        "date",
        "time",
        "datetime",
        "timestamp",
        "uuid",
        "jsonb",
        "decimal",
        "range-int32",
        "range-int64",
        "range-decimal",
        "array-int32",
        "array-int64",
        "array-decimal",
        "array-str",
        "interval",
        "db-null",
    ];
    for ty in types {
        assert!(report.get(ty).is_some(), "no case for {ty}: {report}");
    }
    let failures: Vec<String> = report
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, verdict)| *verdict != "ok")
        .map(|(case, verdict)| format!("{case}: {}", verdict.as_str().unwrap_or_default()))
        .collect();
    assert!(
        failures.is_empty(),
        "round trip failures:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_is_visible_and_rollback_is_not() {
    let db = TestDb::new("tx");
    let (id, extra) = managed("a");
    let app = manifest(&db.app, &[(id, &extra)]);
    let trellis = db.up(&app, &[]);
    let insert = |v: &str| execute_with("INSERT INTO items VALUES ($1)", json!([v]));
    let select = || query("SELECT v FROM items ORDER BY v");

    let results = sql(
        &trellis,
        "a",
        DATA,
        vec![execute("CREATE TABLE items (v text)")],
    )
    .await;
    assert!(results[0].get("count").is_some(), "{results:?}");

    let results = sql(
        &trellis,
        "a",
        DATA,
        vec![execute("BEGIN"), insert("committed"), execute("COMMIT")],
    )
    .await;
    assert_eq!(results[1]["count"], 1, "{results:?}");
    assert!(
        results.iter().all(|r| r.get("error").is_none()),
        "{results:?}"
    );
    let results = sql(&trellis, "a", DATA, vec![select()]).await;
    assert_eq!(rows(&results[0]), &vec![json!(["committed"])]);

    let results = sql(
        &trellis,
        "a",
        DATA,
        vec![
            execute("BEGIN"),
            insert("rolled back"),
            select(),
            execute("ROLLBACK"),
            select(),
        ],
    )
    .await;
    assert!(
        results.iter().all(|r| r.get("error").is_none()),
        "{results:?}"
    );
    assert_eq!(
        rows(&results[2]).len(),
        2,
        "inside the transaction: {results:?}"
    );
    assert_eq!(
        rows(&results[4]),
        &vec![json!(["committed"])],
        "after ROLLBACK"
    );
    let results = sql(&trellis, "a", DATA, vec![select()]).await;
    assert_eq!(
        rows(&results[0]),
        &vec![json!(["committed"])],
        "in a new request"
    );
    assert_eq!(
        db.psql(&format!(
            "SELECT string_agg(v, ',') FROM {}.items",
            db.schema("a", "data")
        )),
        "committed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_abandoned_by_a_trap_is_rolled_back() {
    let db = TestDb::new("abandon");
    let (id, extra) = managed("a");
    let app = manifest(&db.app, &[(id, &extra)]);
    let trellis = db.up(&app, &[]);
    let schema = db.schema("a", "data");
    let role = db.owner(&schema);

    sql(
        &trellis,
        "a",
        DATA,
        vec![execute("CREATE TABLE items (k text PRIMARY KEY)")],
    )
    .await;
    let (status, body) = sql_status(
        &trellis,
        "a",
        DATA,
        vec![execute("BEGIN"), execute("INSERT INTO items VALUES ('k')")],
        true,
    )
    .await;
    assert_eq!(status, 500, "the guest should have trapped: {body}");

    // The row's lock went with the transaction: were it still open on a pooled
    // connection, this insert of the same key would block until the statement
    // timeout; had it been committed, it would be a unique violation.
    let started = Instant::now();
    let results = sql(
        &trellis,
        "a",
        DATA,
        vec![
            execute("INSERT INTO items VALUES ('k')"),
            // Not inside a transaction: a lone SELECT is assigned no xid.
            query("SELECT pg_current_xact_id_if_assigned() IS NULL"),
        ],
    )
    .await;
    assert_eq!(results[0]["count"], 1, "{results:?}");
    assert_eq!(scalar(&results[1]), &json!(true), "{results:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the insert waited for a lock"
    );

    // An independent observer: the autocommitted row is there, and no
    // connection of the role is left idle in a transaction.
    assert_eq!(
        db.psql(&format!("SELECT count(*) FROM {schema}.items")),
        "1"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let idle_in_tx = db.psql(&format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE usename = '{role}' AND state LIKE 'idle in transaction%'"
        ));
        if idle_in_tx == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{idle_in_tx} connection(s) idle in transaction"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn query_failures_carry_their_sqlstate_and_detail() {
    let db = TestDb::new("errors");
    let (id, extra) = managed("a");
    let app = manifest(&db.app, &[(id, &extra)]);
    let trellis = db.up(&app, &[]);

    let results = sql(
        &trellis,
        "a",
        DATA,
        vec![
            execute("CREATE TABLE u (k text PRIMARY KEY)"),
            execute("INSERT INTO u VALUES ('x')"),
            execute("INSERT INTO u VALUES ('x')"),
            query("SELECT * FROM no_such_table"),
            query("SELEC 1"),
            // The connection is still usable after errors.
            query("SELECT count(*) FROM u"),
        ],
    )
    .await;
    assert_sqlstate(&results[2], "23505");
    let detail = error(&results[2])["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("(k)=(x)"), "detail: {}", results[2]);
    assert_sqlstate(&results[3], "42P01");
    assert!(
        error(&results[3])["message"]
            .as_str()
            .unwrap()
            .contains("no_such_table")
    );
    assert_sqlstate(&results[4], "42601");
    assert_eq!(scalar(&results[5]), &json!(1), "{results:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_over_the_timeout_fails_fast_and_the_next_works() {
    let db = TestDb::new("timeout");
    let (id, extra) = managed("a");
    let app = manifest(&db.app, &[(id, &extra)]);
    let trellis = db.up(&app, &["--statement-timeout", "300ms"]);

    let started = Instant::now();
    let results = sql(&trellis, "a", DATA, vec![query("SELECT pg_sleep(5)")]).await;
    let elapsed = started.elapsed();
    let err = error(&results[0]);
    let text = format!("{} {}", err["code"], err["message"]).to_lowercase();
    // The server's statement_timeout (57014) or the host's own deadline,
    // whichever fires first.
    assert!(
        ["timeout", "timed out", "57014"]
            .iter()
            .any(|t| text.contains(t)),
        "{err}"
    );
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");

    let results = sql(&trellis, "a", DATA, vec![query("SELECT 41 + 1")]).await;
    assert_eq!(scalar(&results[0]), &json!(42), "{results:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn real_addresses_need_allowed_outbound_hosts() {
    let db = TestDb::new("denied");
    let app = manifest(
        &db.app,
        &[
            ("a", ""),
            (
                "b",
                "allowed_outbound_hosts = [\"postgres://127.0.0.1:5432\"]",
            ),
        ],
    );
    let trellis = db.up(&app, &[]);
    let address = format!("{SERVER}/postgres");
    let steps = || vec![query("SELECT current_user")];

    let (status, body) = sql_status(&trellis, "a", &address, steps(), false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["open_error"]["kind"], "connection-failed", "{body}");
    let message = body["open_error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("allowed_outbound_hosts"), "{body}");

    let results = sql(&trellis, "b", &address, steps()).await;
    assert_eq!(scalar(&results[0]), &json!("postgres"));

    // Another host or port than the allowed one is still denied.
    for denied in [
        "postgres://postgres@localhost:5432/postgres",
        "postgres://postgres@127.0.0.1:5433/postgres",
    ] {
        let (_, body) = sql_status(&trellis, "b", denied, steps(), false).await;
        assert_eq!(
            body["open_error"]["kind"], "connection-failed",
            "{denied}: {body}"
        );
        let message = body["open_error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("allowed_outbound_hosts"),
            "{denied}: {body}"
        );
    }
    // A managed name the component did not declare.
    let (_, body) = sql_status(&trellis, "b", DATA, steps(), false).await;
    assert_eq!(body["open_error"]["kind"], "connection-failed", "{body}");
}

/// `?host=/path` makes the driver use a Unix socket instead of the URL's
/// host, which the allow-list checked: that must not reach the local server.
#[tokio::test(flavor = "multi_thread")]
async fn a_socket_in_the_query_string_does_not_bypass_the_allow_list() {
    let db = TestDb::new("socket");
    let app = manifest(
        &db.app,
        &[(
            "a",
            "allowed_outbound_hosts = [\"postgres://db.example.invalid:5432\"]",
        )],
    );
    let trellis = db.up(&app, &[]);
    let address = "postgres://postgres@db.example.invalid:5432/postgres?host=/var/run/postgresql";
    let (status, body) = sql_status(
        &trellis,
        "a",
        address,
        vec![query("SELECT current_user")],
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("open_error").is_some(),
        "connected through the local socket although only db.example.invalid is allowed: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn components_cannot_reach_each_others_databases() {
    let db = TestDb::new("iso");
    let (a, a_extra) = managed("a");
    let (b, b_extra) = managed("b");
    let app = manifest(&db.app, &[(a, &a_extra), (b, &b_extra)]);
    let trellis = db.up(&app, &[]);
    let (schema_a, schema_b) = (db.schema("a", "data"), db.schema("b", "data"));
    let (role_a, role_b) = (db.owner(&schema_a), db.owner(&schema_b));
    assert_ne!(role_a, role_b);

    let results = sql(
        &trellis,
        "a",
        DATA,
        vec![
            execute("CREATE TABLE secrets (v text)"),
            execute("INSERT INTO secrets VALUES ('a-secret')"),
            query("SELECT current_user, current_schema()"),
        ],
    )
    .await;
    assert_eq!(
        rows(&results[2])[0],
        json!([role_a, schema_a]),
        "{results:?}"
    );

    let results = sql(
        &trellis,
        "b",
        DATA,
        vec![
            query(&format!("SELECT * FROM {schema_a}.secrets")),
            execute(&format!("SET ROLE {role_a}")),
            query(&format!("SELECT set_config('role', '{role_a}', false)")),
            execute(&format!("SET SESSION AUTHORIZATION {role_a}")),
            execute(&format!("SET search_path TO {schema_a}")),
            query("SELECT * FROM secrets"),
            execute("CREATE TABLE public.intruder (i int)"),
            // b's own schema works, and is where its names go.
            execute("RESET search_path"),
            execute("CREATE TABLE mine (i int)"),
            query("SELECT current_user, current_schema()"),
        ],
    )
    .await;
    assert_sqlstate(&results[0], "42501");
    for (i, what) in [
        (1, "SET ROLE"),
        (2, "set_config('role')"),
        (3, "SET SESSION AUTHORIZATION"),
    ] {
        assert!(
            results[i].get("error").is_some(),
            "{what} succeeded: {}",
            results[i]
        );
    }
    assert!(
        results[5].get("error").is_some(),
        "read a's table via search_path: {}",
        results[5]
    );
    assert_sqlstate(&results[6], "42501");
    assert!(
        results[8].get("count").is_some(),
        "b cannot create in its own schema: {}",
        results[8]
    );
    assert_eq!(
        rows(&results[9])[0],
        json!([role_b, schema_b]),
        "{results:?}"
    );

    assert_eq!(
        db.psql(&format!("SELECT count(*) FROM {schema_a}.secrets")),
        "1"
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'intruder'"),
        "0"
    );
}

/// An app whose component `a` has the managed database `data` with two
/// migrations: 0001 creates `seeded`, 0002 inserts one row into it.
fn migrating_app(db: &TestDb) -> AppDir {
    let app = manifest(
        &db.app,
        &[(
            "a",
            "[component.a.tool.trellis.databases.data]\nmigrations = \"migrations\"\n",
        )],
    );
    let migrations = app.path().join("migrations");
    std::fs::create_dir_all(&migrations).expect("migrations dir");
    let write = |name: &str, sql: &str| std::fs::write(migrations.join(name), sql).unwrap();
    write(
        "0001_create.sql",
        "CREATE TABLE seeded (v text NOT NULL);\n",
    );
    write(
        "0002_seed.sql",
        "INSERT INTO seeded VALUES ('only once');\n",
    );
    app
}

/// Starts two hosts of `app` at the same time.
fn up_together(db: &TestDb, app: &AppDir) -> (Trellis, Trellis) {
    std::thread::scope(|s| {
        let first = s.spawn(|| db.up(app, &[]));
        let second = s.spawn(|| db.up(app, &[]));
        (
            first.join().expect("first host"),
            second.join().expect("second host"),
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_are_applied_once_by_hosts_starting_together() {
    let db = TestDb::new("mig");
    // The database exists: this test is about the migrations (creating the
    // database together is `hosts_starting_together_create_the_database_once`).
    psql("postgres", &format!("CREATE DATABASE \"{}\"", db.name));
    let app = migrating_app(&db);

    let (first, second) = up_together(&db, &app);
    for trellis in [&first, &second] {
        let results = sql(
            trellis,
            "a",
            DATA,
            vec![
                query("SELECT count(*) FROM seeded"),
                query("SELECT count(*) FROM _trellis_migrations"),
            ],
        )
        .await;
        assert_eq!(scalar(&results[0]), &json!(1), "{results:?}");
        assert_eq!(scalar(&results[1]), &json!(2), "{results:?}");
    }
    // One host applied both migrations, the other found them applied.
    let appliers = [&first, &second]
        .iter()
        .filter(|t| {
            t.wait_for_log(|l| l.contains("migrations up to date"))
                && t.logs().contains("applied=2")
        })
        .count();
    assert_eq!(
        appliers,
        1,
        "first:\n{}\nsecond:\n{}",
        first.logs(),
        second.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_starting_together_create_the_database_once() {
    let db = TestDb::new("create");
    let app = migrating_app(&db);

    let (first, second) = up_together(&db, &app);
    for trellis in [&first, &second] {
        let results = sql(
            trellis,
            "a",
            DATA,
            vec![query("SELECT count(*) FROM seeded")],
        )
        .await;
        assert_eq!(scalar(&results[0]), &json!(1), "{results:?}");
    }
}
