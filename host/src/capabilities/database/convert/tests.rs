//! Round trips of every WIT type through a real Postgres (127.0.0.1:5432,
//! user postgres). Everything lives in TEMP tables, gone with the session.

use std::time::Duration;

use sqlx::{Connection as _, PgConnection};

use crate::capabilities::database::bindings::{
    DbDataType as T, DbValue as V, Error, Interval, ParameterValue as P, RangeBoundKind,
    RangeBoundKind::*,
};
use crate::capabilities::database::query::{self, Limits};

const URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

async fn connect() -> PgConnection {
    PgConnection::connect(URL)
        .await
        .expect("local Postgres on 127.0.0.1:5432")
}

fn limits() -> Limits {
    Limits {
        max_rows: 1000,
        max_bytes: 1 << 20,
        statement_timeout: Duration::from_secs(10),
    }
}

/// The bindings derive no `PartialEq`; their `Debug` output is exact enough.
fn dbg<D: std::fmt::Debug>(value: D) -> String {
    format!("{value:?}")
}

fn s(text: &str) -> String {
    text.to_owned()
}

fn inc<B>(bound: B) -> Option<(B, RangeBoundKind)> {
    Some((bound, Inclusive))
}

fn exc<B>(bound: B) -> Option<(B, RangeBoundKind)> {
    Some((bound, Exclusive))
}

/// One case: column type, parameter, the value read back, its WIT type.
type Case = (&'static str, P, V, T);

/// A case that reads back as written (the WIT variants share their names).
macro_rules! same {
    ($sql:literal, $variant:ident($($value:tt)*), $ty:ident) => {
        ($sql, P::$variant($($value)*), V::$variant($($value)*), T::$ty)
    };
}

fn cases() -> Vec<Case> {
    let json = br#"{"b":[1,2.5,null],  "a":"\u00fc"}"#.to_vec();
    let normal = r#"{"a": "ü", "b": [1, 2.5, null]}"#.as_bytes().to_vec();
    let big = "123456789012345678901234567890.123456789";
    let text = "héllo — 世界 🎉 'quoted' \"double\"";
    let empty = (inc(0), exc(0));
    let interval = |micros, days, months| Interval {
        micros,
        days,
        months,
    };
    let (neg, pos) = (
        interval(-1_500_000, -3, -14),
        interval(86_399_999_999, 400, 1),
    );
    vec![
        same!("bool", Boolean(true), Boolean),
        same!("\"char\"", Int8(-100), Int8),
        same!("int2", Int16(i16::MIN), Int16),
        same!("int4", Int32(i32::MAX), Int32),
        same!("int8", Int64(i64::MIN), Int64),
        // Parameters are cast on assignment as SQL literals would be.
        ("int8", P::Int32(-7), V::Int64(-7), T::Int64),
        same!("float4", Floating32(-1.5e-7), Floating32),
        same!("float8", Floating64(std::f64::consts::PI), Floating64),
        same!("text", Str(s(text)), Str),
        same!("varchar(60)", Str(s(text)), Str),
        ("char(5)", P::Str(s("ab")), V::Str(s("ab   ")), T::Str),
        same!("bytea", Binary(vec![]), Binary),
        same!("bytea", Binary(vec![0, 255, 10]), Binary),
        same!("date", Date((1969, 7, 20)), Date),
        // Year 0 is 1 BC, as in chrono and Postgres's binary format.
        same!("date", Date((-43, 3, 15)), Date),
        same!("time", Time((23, 59, 59, 999_999_000)), Time),
        same!("time", Time((24, 0, 0, 0)), Time),
        // Postgres keeps microseconds.
        (
            "time",
            P::Time((1, 2, 3, 456_789_999)),
            V::Time((1, 2, 3, 456_789_000)),
            T::Time,
        ),
        same!(
            "timestamp",
            Datetime((1901, 12, 13, 20, 45, 52, 123_456_000)),
            Datetime
        ),
        (
            "timestamp",
            P::Datetime((1969, 1, 1, 0, 0, 0, 999)),
            V::Datetime((1969, 1, 1, 0, 0, 0, 0)),
            T::Datetime,
        ),
        (
            "timestamptz",
            P::Timestamp(-1_000_000_000),
            V::Datetime((1938, 4, 24, 22, 13, 20, 0)),
            T::Datetime,
        ),
        same!(
            "timestamptz",
            Datetime((2024, 2, 29, 12, 0, 0, 0)),
            Datetime
        ),
        (
            "uuid",
            P::Uuid(s("67E55044-10B1-426F-9247-BB680E5FE0C8")),
            V::Uuid(s("67e55044-10b1-426f-9247-bb680e5fe0c8")),
            T::Uuid,
        ),
        (
            "jsonb",
            P::Jsonb(json.clone()),
            V::Jsonb(normal.clone()),
            T::Jsonb,
        ),
        // json keeps its text, but the parameter is jsonb, cast to json.
        ("json", P::Jsonb(json), V::Jsonb(normal), T::Jsonb),
        same!("numeric", Decimal(s(big)), Decimal),
        same!(
            "numeric",
            Decimal(s("-0.000000000000000000001000")),
            Decimal
        ),
        same!("numeric", Decimal(s("10000")), Decimal),
        same!("numeric", Decimal(s("NaN")), Decimal),
        (
            "numeric",
            P::Decimal(s(" 1e5 ")),
            V::Decimal(s("100000")),
            T::Decimal,
        ),
        (
            "numeric",
            P::Decimal(s("-inf")),
            V::Decimal(s("-Infinity")),
            T::Decimal,
        ),
        (
            "numeric(10,2)",
            P::Decimal(s("3.14159")),
            V::Decimal(s("3.14")),
            T::Decimal,
        ),
        same!("int4range", RangeInt32((inc(1), exc(10))), RangeInt32),
        same!("int4range", RangeInt32((None, exc(5))), RangeInt32),
        same!("int4range", RangeInt32((inc(-3), None)), RangeInt32),
        same!("int4range", RangeInt32((None, None)), RangeInt32),
        same!("int4range", RangeInt32(empty), RangeInt32),
        // Postgres makes discrete ranges [a, b), and equal bounds empty.
        (
            "int4range",
            P::RangeInt32((exc(1), inc(10))),
            V::RangeInt32((inc(2), exc(11))),
            T::RangeInt32,
        ),
        (
            "int4range",
            P::RangeInt32((inc(5), exc(5))),
            V::RangeInt32(empty),
            T::RangeInt32,
        ),
        same!(
            "int8range",
            RangeInt64((inc(i64::MIN), exc(i64::MAX))),
            RangeInt64
        ),
        same!("int8range", RangeInt64((None, None)), RangeInt64),
        same!(
            "numrange",
            RangeDecimal((exc(s("1.50")), inc(s(big)))),
            RangeDecimal
        ),
        (
            "numrange",
            P::RangeDecimal((None, exc(s("-1e3")))),
            V::RangeDecimal((None, exc(s("-1000")))),
            T::RangeDecimal,
        ),
        (
            "numrange",
            P::RangeDecimal((exc(s("1")), exc(s("1")))),
            V::RangeDecimal((inc(s("0")), exc(s("0")))),
            T::RangeDecimal,
        ),
        same!(
            "int4[]",
            ArrayInt32(vec![Some(1), None, Some(-3)]),
            ArrayInt32
        ),
        same!("int4[]", ArrayInt32(vec![]), ArrayInt32),
        same!("int8[]", ArrayInt64(vec![None, Some(i64::MAX)]), ArrayInt64),
        same!(
            "numeric[]",
            ArrayDecimal(vec![
                Some(s("1.10")),
                None,
                Some(s("NaN")),
                Some(format!("-{big}"))
            ]),
            ArrayDecimal
        ),
        (
            "numeric[]",
            P::ArrayDecimal(vec![Some(s("inf"))]),
            V::ArrayDecimal(vec![Some(s("Infinity"))]),
            T::ArrayDecimal,
        ),
        same!(
            "text[]",
            ArrayStr(vec![Some(s(text)), None, Some(s("a,{}\\"))]),
            ArrayStr
        ),
        same!("varchar[]", ArrayStr(vec![Some(s("x")), None]), ArrayStr),
        same!("interval", Interval(neg), Interval),
        same!("interval", Interval(pos), Interval),
    ]
}

#[tokio::test]
async fn every_type_round_trips_with_nulls() {
    let mut conn = connect().await;
    let l = limits();
    for (n, (sql_type, param, expected, ty)) in cases().into_iter().enumerate() {
        let case = format!("case {n}: {sql_type} {param:?}");
        // A table per case: one name with changing types would trip the
        // statement cache ("cached plan must not change result type").
        let table = format!("pg_temp.rt_{n}");
        query::execute(
            &mut conn,
            &format!("CREATE TEMP TABLE rt_{n} (i int, v {sql_type})"),
            vec![],
            &l,
        )
        .await
        .expect(&case);
        let insert = format!("INSERT INTO {table} (i, v) VALUES ($1, $2), ($3, $4)");
        let params = vec![P::Int32(1), param, P::Int32(2), P::DbNull];
        assert_eq!(
            query::execute(&mut conn, &insert, params, &l)
                .await
                .expect(&case),
            2,
            "{case}"
        );
        let select = format!("SELECT v FROM {table} ORDER BY i");
        let rows = query::query(&mut conn, &select, vec![], &l)
            .await
            .expect(&case);
        assert_eq!(rows.columns.len(), 1, "{case}");
        assert_eq!(rows.columns[0].name, "v", "{case}");
        assert_eq!(dbg(&rows.columns[0].data_type), dbg(&ty), "{case}");
        assert_eq!(rows.rows.len(), 2, "{case}");
        assert_eq!(dbg(&rows.rows[0][0]), dbg(&expected), "{case}");
        assert_eq!(dbg(&rows.rows[1][0]), dbg(V::DbNull), "{case}");
    }
}

#[tokio::test]
async fn other_types_come_back_raw_with_their_names() {
    let mut conn = connect().await;
    let sql =
        "SELECT '1.2.3.4'::inet AS a, '10:00+02'::timetz AS b, ARRAY[true] AS c, NULL::inet AS d";
    let rows = query::query(&mut conn, sql, vec![], &limits())
        .await
        .unwrap();
    let types: Vec<_> = rows.columns.iter().map(|c| dbg(&c.data_type)).collect();
    let other = |name: &str| dbg(T::Other(s(name)));
    assert_eq!(
        types,
        [
            other("inet"),
            other("timetz"),
            other("_bool"),
            other("inet")
        ]
    );
    // inet's binary format: family (AF_INET), bits, is_cidr, length, address.
    assert_eq!(
        dbg(&rows.rows[0][0]),
        dbg(V::Unsupported(vec![2, 32, 0, 4, 1, 2, 3, 4]))
    );
    assert_eq!(dbg(&rows.rows[0][3]), dbg(V::DbNull));
}

#[tokio::test]
async fn unrepresentable_values_fail_by_column_and_leave_the_connection_usable() {
    let mut conn = connect().await;
    let l = limits();
    for (sql, needle) in [
        (
            "SELECT 1 AS a, 'infinity'::timestamptz AS t",
            "column 2 (t, type timestamptz): timestamp 'infinity'",
        ),
        (
            "SELECT '-infinity'::date AS d",
            "date 'infinity' or '-infinity'",
        ),
        (
            "SELECT ARRAY[[1,2],[3,4]] AS m",
            "2-dimensional arrays are not supported",
        ),
    ] {
        match query::query(&mut conn, sql, vec![], &l).await {
            Err(Error::ValueConversionFailed(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    // The lower bound of an array is not part of a WIT list.
    let rows = query::query(&mut conn, "SELECT '[0:2]={1,2,3}'::int4[]", vec![], &l)
        .await
        .unwrap();
    assert_eq!(
        dbg(&rows.rows[0][0]),
        dbg(V::ArrayInt32(vec![Some(1), Some(2), Some(3)]))
    );
}

#[tokio::test]
async fn one_statement_text_binds_parameters_of_any_kind() {
    let mut conn = connect().await;
    let sql = "SELECT pg_typeof($1)::text AS t, $1 IS NULL AS n";
    for (param, name) in [
        (P::Int32(1), "integer"),
        (P::Int64(1), "bigint"),
        (P::Floating64(1.0), "double precision"),
        (P::Str(s("1")), "text"),
        (P::Int8(1), "\"char\""),
        (P::Jsonb(b"1".to_vec()), "jsonb"),
        (P::Int32(1), "integer"),
    ] {
        let rows = query::query(&mut conn, sql, vec![param], &limits())
            .await
            .unwrap();
        assert_eq!(dbg(&rows.rows[0][0]), dbg(V::Str(s(name))));
    }
    // An untyped NULL takes the type its context gives it.
    let rows = query::query(
        &mut conn,
        "SELECT $1::int4 AS x",
        vec![P::DbNull],
        &limits(),
    )
    .await
    .unwrap();
    assert_eq!(dbg(&rows.columns[0].data_type), dbg(T::Int32));
    assert_eq!(dbg(&rows.rows[0][0]), dbg(V::DbNull));
}
