//! `query`/`execute` against a real Postgres (127.0.0.1:5432, user postgres),
//! in TEMP tables and rolled-back transactions only.

use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection};

use super::*;
use crate::capabilities::database::bindings::{DbDataType, ParameterValue as P};

const URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

async fn connect() -> PgConnection {
    PgConnection::connect(URL)
        .await
        .expect("local Postgres on 127.0.0.1:5432")
}

fn limits() -> Limits {
    Limits {
        max_rows: 10,
        max_bytes: 10_000,
        statement_timeout: Duration::from_secs(10),
    }
}

fn dbg<D: std::fmt::Debug>(value: D) -> String {
    format!("{value:?}")
}

async fn one_int(conn: &mut PgConnection, sql: &str, params: Vec<ParameterValue>) -> String {
    let rows = query(conn, sql, params, &limits()).await.expect(sql);
    dbg(&rows.rows[0][0])
}

#[tokio::test]
async fn execute_counts_rows() {
    let mut conn = connect().await;
    let l = limits();
    let create = "CREATE TEMP TABLE counted (id int PRIMARY KEY, name text)";
    assert_eq!(execute(&mut conn, create, vec![], &l).await.unwrap(), 0);
    let insert = "INSERT INTO pg_temp.counted VALUES ($1, $2), ($3, $4), ($5, NULL)";
    let params = vec![
        P::Int32(1),
        P::Str("a".into()),
        P::Int32(2),
        P::DbNull,
        P::Int32(3),
    ];
    assert_eq!(execute(&mut conn, insert, params, &l).await.unwrap(), 3);
    let update = "UPDATE pg_temp.counted SET name = $1";
    assert_eq!(
        execute(&mut conn, update, vec![P::Str("b".into())], &l)
            .await
            .unwrap(),
        3
    );
    let delete = "DELETE FROM pg_temp.counted WHERE id > $1";
    assert_eq!(
        execute(&mut conn, delete, vec![P::Int64(1)], &l)
            .await
            .unwrap(),
        2
    );
    // A SELECT through execute reports the rows it returned.
    let select = "SELECT * FROM generate_series(1, 4)";
    assert_eq!(execute(&mut conn, select, vec![], &l).await.unwrap(), 4);
}

#[tokio::test]
async fn columns_come_back_without_rows() {
    let mut conn = connect().await;
    let sql = "SELECT 1::int4 AS a, 'x'::text AS b, now() AS c, $1::int8 AS d WHERE false";
    // Twice: the first prepares the statement, the second finds it cached.
    for _ in 0..2 {
        let rows = query(&mut conn, sql, vec![P::Int64(5)], &limits())
            .await
            .unwrap();
        assert!(rows.rows.is_empty());
        let columns: Vec<_> = rows
            .columns
            .iter()
            .map(|c| (c.name.as_str(), dbg(&c.data_type)))
            .collect();
        assert_eq!(
            columns,
            [
                ("a", dbg(DbDataType::Int32)),
                ("b", dbg(DbDataType::Str)),
                ("c", dbg(DbDataType::Datetime)),
                ("d", dbg(DbDataType::Int64)),
            ]
        );
    }
    // A statement that returns nothing at all has no columns.
    let rows = query(
        &mut conn,
        "CREATE TEMP TABLE nothing (x int)",
        vec![],
        &limits(),
    )
    .await
    .unwrap();
    assert!(rows.columns.is_empty() && rows.rows.is_empty());
}

#[tokio::test]
async fn the_parameter_suffix_survives_comments_and_semicolons() {
    let mut conn = connect().await;
    let one = dbg(DbValue::Int32(1));
    assert_eq!(
        one_int(
            &mut conn,
            "SELECT $1::int4 -- trailing comment",
            vec![P::Int32(1)]
        )
        .await,
        one
    );
    assert_eq!(
        one_int(&mut conn, "SELECT $1::int4;", vec![P::Int32(1)]).await,
        one
    );
    assert_eq!(
        one_int(&mut conn, "SELECT $1::int4 /* block */", vec![P::Int32(1)]).await,
        one
    );
}

fn db_error(result: Result<impl std::fmt::Debug, Error>) -> DbError {
    match result {
        Err(Error::QueryFailed(QueryError::DbError(e))) => e,
        other => panic!("expected a database error, got {other:?}"),
    }
}

fn extra<'a>(e: &'a DbError, key: &str) -> Option<&'a str> {
    e.extras
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn server_errors_carry_sqlstate_detail_and_extras() {
    let mut conn = connect().await;
    let l = limits();
    execute(
        &mut conn,
        "CREATE TEMP TABLE uniq (id int CONSTRAINT uniq_id PRIMARY KEY)",
        vec![],
        &l,
    )
    .await
    .unwrap();
    let insert = "INSERT INTO pg_temp.uniq VALUES ($1)";
    execute(&mut conn, insert, vec![P::Int32(1)], &l)
        .await
        .unwrap();
    let e = db_error(execute(&mut conn, insert, vec![P::Int32(1)], &l).await);
    assert_eq!((e.code.as_str(), e.severity.as_str()), ("23505", "ERROR"));
    assert_eq!(
        e.message,
        "duplicate key value violates unique constraint \"uniq_id\""
    );
    assert_eq!(e.detail.as_deref(), Some("Key (id)=(1) already exists."));
    assert_eq!(extra(&e, "constraint"), Some("uniq_id"));
    assert_eq!(extra(&e, "table"), Some("uniq"));
    assert!(extra(&e, "schema").is_some_and(|s| s.starts_with("pg_temp")));
    assert!(
        e.as_text.starts_with("ERROR: duplicate key")
            && e.as_text.contains("(SQLSTATE 23505)\nDETAIL: Key")
    );

    // The position counts in the guest's text, the suffix coming after it.
    let sql = "SELECT $1::int4 FROM trellis_no_such_table";
    let e = db_error(query(&mut conn, sql, vec![P::Int32(1)], &l).await);
    assert_eq!(e.code, "42P01");
    assert_eq!(extra(&e, "position"), Some("22"));
    assert!(!must_discard_connection(&Error::QueryFailed(
        QueryError::DbError(e)
    )));
    // And the connection carries on.
    assert_eq!(
        one_int(&mut conn, "SELECT 7", vec![]).await,
        dbg(DbValue::Int32(7))
    );
}

#[tokio::test]
async fn results_over_the_row_or_byte_cap_fail_and_the_connection_carries_on() {
    let mut conn = connect().await;
    let l = limits();
    let rows = query(
        &mut conn,
        "SELECT g FROM generate_series(1, 10) g",
        vec![],
        &l,
    )
    .await
    .unwrap();
    assert_eq!(rows.rows.len(), 10);

    // Inside a transaction, which must survive the error.
    execute(&mut conn, "BEGIN", vec![], &l).await.unwrap();
    execute(&mut conn, "CREATE TEMP TABLE in_tx (x int)", vec![], &l)
        .await
        .unwrap();
    let err = query(
        &mut conn,
        "SELECT g FROM generate_series(1, 100000) g",
        vec![],
        &l,
    )
    .await
    .unwrap_err();
    assert_eq!(
        dbg(&err),
        dbg(Error::Other(
            "result too large: more than 10 rows; add a LIMIT".into()
        ))
    );
    assert!(!must_discard_connection(&err));
    let err = query(
        &mut conn,
        "SELECT repeat('x', 1000) FROM generate_series(1, 10)",
        vec![],
        &l,
    )
    .await
    .unwrap_err();
    assert_eq!(
        dbg(&err),
        dbg(Error::Other(
            "result too large: more than 10000 bytes; add a LIMIT".into()
        ))
    );
    assert_eq!(
        one_int(&mut conn, "SELECT count(*)::int4 FROM in_tx", vec![]).await,
        dbg(DbValue::Int32(0))
    );
    execute(&mut conn, "ROLLBACK", vec![], &l).await.unwrap();
    let gone = query(
        &mut conn,
        "SELECT to_regclass('pg_temp.in_tx') IS NULL",
        vec![],
        &l,
    )
    .await
    .unwrap();
    assert_eq!(dbg(&gone.rows[0][0]), dbg(DbValue::Boolean(true)));
}

#[tokio::test]
async fn statements_time_out_on_the_host() {
    let short = Limits {
        statement_timeout: Duration::from_millis(200),
        ..limits()
    };
    for op in ["query", "execute"] {
        let mut conn = connect().await;
        // The server's own deadline, set as the pool does, only cleans up:
        // the sleeper outlives a closed socket until it ends.
        execute(&mut conn, "SET statement_timeout = '2s'", vec![], &limits())
            .await
            .unwrap();
        let started = Instant::now();
        let sleep = "SELECT pg_sleep(10)";
        let err = match op {
            "query" => query(&mut conn, sleep, vec![], &short).await.map(drop),
            _ => execute(&mut conn, sleep, vec![], &short).await.map(drop),
        };
        let err = err.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{op}: {:?}",
            started.elapsed()
        );
        assert_eq!(
            dbg(&err),
            dbg(Error::Other("statement timed out after 200ms".into()))
        );
        assert!(is_timeout(&err) && must_discard_connection(&err), "{op}");
    }
}

#[tokio::test]
async fn a_timeout_while_discarding_a_too_large_result_says_so() {
    let mut conn = connect().await;
    execute(&mut conn, "SET statement_timeout = '3s'", vec![], &limits())
        .await
        .unwrap();
    let l = Limits {
        max_bytes: 1 << 20,
        statement_timeout: Duration::from_millis(500),
        ..limits()
    };
    // Rows too big for Postgres's 8 KiB send buffer go out as they are made
    // (but for the tail of the latest, hence 12 quick rows for a cap of 10);
    // then each takes a second: the cap is hit, then the deadline.
    let sql = "SELECT repeat('x', 10000), pg_sleep(CASE WHEN g > 12 THEN 1 ELSE 0 END)::text \
               FROM generate_series(1, 20) g";
    let err = query(&mut conn, sql, vec![], &l).await.unwrap_err();
    let expected = "statement timed out after 500ms while discarding the rest of the result \
                    (result too large: more than 10 rows; add a LIMIT)";
    assert_eq!(dbg(&err), dbg(Error::Other(expected.into())));
    assert!(must_discard_connection(&err));
}

#[test]
fn non_server_errors_map_by_kind() {
    let io = sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset",
    ));
    assert!(matches!(map_error(io), Error::ConnectionFailed(_)));
    assert!(matches!(
        map_error(sqlx::Error::PoolTimedOut),
        Error::ConnectionFailed(_)
    ));
    assert!(matches!(
        map_error(sqlx::Error::Decode("bad".into())),
        Error::ValueConversionFailed(_)
    ));
    assert!(matches!(
        map_error(sqlx::Error::RowNotFound),
        Error::Other(_)
    ));
    let config = sqlx::Error::Configuration("cannot reach postgres://app:s3cret@db:5432/x".into());
    match map_error(config) {
        Error::ConnectionFailed(msg) => {
            assert!(!msg.contains("s3cret") && msg.contains("postgres://***@db:5432/x"))
        }
        other => panic!("{other:?}"),
    }
    assert!(must_discard_connection(&Error::ConnectionFailed(
        "x".into()
    )));
    assert!(!must_discard_connection(&Error::Other("boom".into())));
}

#[test]
fn redact_masks_credentials_only() {
    assert_eq!(
        redact("a postgres://u:p@h:1/d?x=1 b"),
        "a postgres://***@h:1/d?x=1 b"
    );
    assert_eq!(
        redact("postgresql://h/d and https://x"),
        "postgresql://h/d and https://x"
    );
    assert_eq!(
        redact("host=h password=hunter2 user=u"),
        "host=h password=*** user=u"
    );
}

#[test]
fn keyed_statements_name_their_parameter_kinds() {
    assert_eq!(&*keyed("SELECT 1", ""), "SELECT 1");
    assert_eq!(
        &*keyed("SELECT $1 -- c", "int32"),
        "SELECT $1 -- c\n/* params: int32 */"
    );
}
