//! `POST /roundtrip`: every WIT value through a Postgres column and back.
//!
//! In one transaction that is rolled back at the end (so nothing is left
//! behind, and no TEMPORARY privilege is needed: managed roles lack it), a
//! table gets one column per case; each case's value is inserted as a
//! parameter in its own row (under a savepoint, so one bad value does not
//! hide the others), then `SELECT *` reads everything back. A case is "ok"
//! when the value read equals the value expected (the value sent, except
//! where Postgres canonicalises it) and the column reports the expected
//! `db-data-type`.

use serde_json::{Map, Value};
use spin_sdk::pg4::{
    Connection, DbDataType, DbValue, Interval, ParameterValue as P, RangeBoundKind,
};

use RangeBoundKind::{Exclusive, Inclusive};

struct Case {
    name: &'static str,
    sql_type: &'static str,
    sent: P,
    expected: DbValue,
    data_type: DbDataType,
}

/// A case whose value should come back exactly as sent.
fn case(name: &'static str, sql_type: &'static str, sent: P, data_type: DbDataType) -> Case {
    let expected = mirror(&sent);
    Case {
        name,
        sql_type,
        sent,
        expected,
        data_type,
    }
}

impl Case {
    /// The value Postgres gives back instead (e.g. a canonical range).
    fn expect(mut self, expected: DbValue) -> Self {
        self.expected = expected;
        self
    }
}

// One line per case reads as a table; rustfmt would spread it over pages.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use DbDataType as T;
    let s = |v: &str| v.to_string();
    vec![
        case("boolean", "boolean", P::Boolean(true), T::Boolean),
        // Postgres' one-byte "char", not char(n).
        case("int8", "\"char\"", P::Int8(-42), T::Int8),
        case("int16", "int2", P::Int16(i16::MIN), T::Int16),
        case("int32", "int4", P::Int32(i32::MIN), T::Int32),
        case("int64", "int8", P::Int64(i64::MAX), T::Int64),
        case("floating32", "float4", P::Floating32(-12_345.679), T::Floating32),
        case("floating64", "float8", P::Floating64(1.234_567_890_123_456_7e-300), T::Floating64),
        case("str", "text", P::Str(s("héllo wörld — 日本語 🦀 'q' \"dq\" \\")), T::Str),
        // Not UTF-8: a host that goes through strings mangles it.
        case("binary", "bytea", P::Binary(vec![0, 0xff, 0xfe, 0x80, 0xc3, 0x28, b'a', 0]), T::Binary),
        case("date", "date", P::Date((2024, 2, 29)), T::Date),
        case("time", "time", P::Time((23, 59, 58, 123_456_000)), T::Time),
        case("datetime", "timestamp", P::Datetime((1999, 12, 31, 23, 59, 59, 999_999_000)), T::Datetime),
        // Unix seconds go in as timestamptz; Postgres has no type that reads
        // back as `timestamp`, so (as in Spin) it comes back as a UTC datetime.
        case("timestamp", "timestamptz", P::Timestamp(1_700_000_000), T::Datetime)
            .expect(DbValue::Datetime((2023, 11, 14, 22, 13, 20, 0))),
        case("uuid", "uuid", P::Uuid(s("7c9e6679-7425-40de-944b-e07fc1f90ae7")), T::Uuid),
        case("jsonb", "jsonb", P::Jsonb(br#"{"a": [1, 2.5, null, "\u00fc"], "b": {"c": true}}"#.to_vec()), T::Jsonb),
        case("decimal", "numeric", P::Decimal(s("-12345678901234567890123456789.123456789012345678901")), T::Decimal),
        case("range-int32", "int4range", P::RangeInt32((Some((-5, Inclusive)), Some((10, Exclusive)))), T::RangeInt32),
        case("range-int32 unbounded lower", "int4range", P::RangeInt32((None, Some((10, Exclusive)))), T::RangeInt32),
        case("range-int32 unbounded upper", "int4range", P::RangeInt32((Some((i32::MIN, Inclusive)), None)), T::RangeInt32),
        case("range-int32 unbounded", "int4range", P::RangeInt32((None, None)), T::RangeInt32),
        // Discrete ranges are stored canonically, as [lower, upper).
        case("range-int32 (exclusive, inclusive]", "int4range", P::RangeInt32((Some((-5, Exclusive)), Some((10, Inclusive)))), T::RangeInt32)
            .expect(DbValue::RangeInt32((Some((-4, Inclusive)), Some((11, Exclusive))))),
        case("range-int64", "int8range", P::RangeInt64((Some((-5_000_000_000, Inclusive)), Some((i64::MAX, Exclusive)))), T::RangeInt64),
        case("range-int64 unbounded lower", "int8range", P::RangeInt64((None, Some((7, Exclusive)))), T::RangeInt64),
        case("range-int64 unbounded upper", "int8range", P::RangeInt64((Some((7, Inclusive)), None)), T::RangeInt64),
        case("range-int64 (exclusive, inclusive]", "int8range", P::RangeInt64((Some((4_000_000_000, Exclusive)), Some((5_000_000_000, Inclusive)))), T::RangeInt64)
            .expect(DbValue::RangeInt64((Some((4_000_000_001, Inclusive)), Some((5_000_000_001, Exclusive))))),
        case("range-decimal", "numrange", P::RangeDecimal((Some((s("-1.5"), Exclusive)), Some((s("12345678901234567890.25"), Inclusive)))), T::RangeDecimal),
        case("range-decimal [lower, upper)", "numrange", P::RangeDecimal((Some((s("0.1"), Inclusive)), Some((s("0.2"), Exclusive)))), T::RangeDecimal),
        case("range-decimal unbounded lower", "numrange", P::RangeDecimal((None, Some((s("3.5"), Inclusive)))), T::RangeDecimal),
        case("range-decimal unbounded upper", "numrange", P::RangeDecimal((Some((s("-3.5"), Exclusive)), None)), T::RangeDecimal),
        case("array-int32", "int4[]", P::ArrayInt32(vec![Some(1), None, Some(i32::MIN)]), T::ArrayInt32),
        case("array-int64", "int8[]", P::ArrayInt64(vec![Some(i64::MIN), None, Some(7)]), T::ArrayInt64),
        case("array-decimal", "numeric[]", P::ArrayDecimal(vec![Some(s("1.5")), None, Some(s("-99999999999999999999.000001"))]), T::ArrayDecimal),
        case("array-str", "text[]", P::ArrayStr(vec![Some(s("a")), None, Some(s("ü 日本, {x}")), Some(s(""))]), T::ArrayStr),
        case("interval", "interval", P::Interval(Interval { micros: -1_500_000, days: -3, months: 14 }), T::Interval),
        case("db-null", "text", P::DbNull, T::Str),
    ]
}

/// Runs every case on `conn`; `{"<case>": "ok" | "<what went wrong>"}`.
pub fn run(conn: &Connection) -> Value {
    let cases = cases();
    let mut report = Map::new();
    let mut fail = |name: &str, why: String| report.insert(name.to_string(), Value::String(why));

    let columns: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| format!(", c{i} {}", c.sql_type))
        .collect();
    let setup = [
        "BEGIN".to_string(),
        format!(
            "CREATE TABLE dbtest_roundtrip (id int4 PRIMARY KEY{})",
            columns.concat()
        ),
    ];
    for statement in &setup {
        if let Err(err) = conn.execute(statement, &[]) {
            let why = format!("setup `{statement}` failed: {err:?}");
            cases.iter().for_each(|c| _ = fail(c.name, why.clone()));
            let _ = conn.execute("ROLLBACK", &[]);
            return Value::Object(report);
        }
    }

    for (i, case) in cases.iter().enumerate() {
        let _ = conn.execute("SAVEPOINT one_case", &[]);
        let insert = format!("INSERT INTO dbtest_roundtrip (id, c{i}) VALUES ({i}, $1)");
        match conn.execute(&insert, std::slice::from_ref(&case.sent)) {
            Ok(1) => {}
            Ok(n) => _ = fail(case.name, format!("insert: {n} rows affected, expected 1")),
            Err(err) => {
                fail(case.name, format!("insert {:?} failed: {err:?}", case.sent));
                let _ = conn.execute("ROLLBACK TO SAVEPOINT one_case", &[]);
            }
        }
    }

    let read = conn.query("SELECT * FROM dbtest_roundtrip ORDER BY id", &[]);
    let _ = conn.execute("ROLLBACK", &[]);
    let rows = match read {
        Ok(rows) => rows,
        Err(err) => {
            let why = format!("select failed: {err:?}");
            cases.iter().for_each(|c| _ = fail(c.name, why.clone()));
            return Value::Object(report);
        }
    };

    for (i, case) in cases.iter().enumerate() {
        if report.contains_key(case.name) {
            continue; // its insert already failed
        }
        let column = rows.columns.get(i + 1);
        let row = rows
            .rows
            .iter()
            .find(|r| matches!(r.first(), Some(DbValue::Int32(id)) if *id as usize == i));
        let verdict = match (column, row.and_then(|r| r.get(i + 1))) {
            (Some(col), _) if format!("{:?}", col.data_type) != format!("{:?}", case.data_type) => {
                format!(
                    "mismatch: column {} reported as {:?}, expected {:?}",
                    case.sql_type, col.data_type, case.data_type
                )
            }
            (Some(_), Some(got)) if same(&case.expected, got) => "ok".to_string(),
            (Some(_), Some(got)) => format!(
                "mismatch: sent {:?} got {} (expected {})",
                case.sent,
                show(got),
                show(&case.expected)
            ),
            _ => format!("mismatch: no column c{i} or no row {i} in the result"),
        };
        report.insert(case.name.to_string(), Value::String(verdict));
    }
    Value::Object(report)
}

/// Equal values; jsonb compares as JSON (Postgres normalises its text).
fn same(expected: &DbValue, got: &DbValue) -> bool {
    match (expected, got) {
        (DbValue::Jsonb(a), DbValue::Jsonb(b)) => {
            let parse = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).ok();
            parse(a).is_some() && parse(a) == parse(b)
        }
        _ => format!("{expected:?}") == format!("{got:?}"),
    }
}

fn show(value: &DbValue) -> String {
    match value {
        DbValue::Jsonb(bytes) => format!("Jsonb({})", String::from_utf8_lossy(bytes)),
        other => format!("{other:?}"),
    }
}

/// The db-value of the same variant as a parameter value.
fn mirror(value: &P) -> DbValue {
    match value.clone() {
        P::Boolean(v) => DbValue::Boolean(v),
        P::Int8(v) => DbValue::Int8(v),
        P::Int16(v) => DbValue::Int16(v),
        P::Int32(v) => DbValue::Int32(v),
        P::Int64(v) => DbValue::Int64(v),
        P::Floating32(v) => DbValue::Floating32(v),
        P::Floating64(v) => DbValue::Floating64(v),
        P::Str(v) => DbValue::Str(v),
        P::Binary(v) => DbValue::Binary(v),
        P::Date(v) => DbValue::Date(v),
        P::Time(v) => DbValue::Time(v),
        P::Datetime(v) => DbValue::Datetime(v),
        P::Timestamp(v) => DbValue::Timestamp(v),
        P::Uuid(v) => DbValue::Uuid(v),
        P::Jsonb(v) => DbValue::Jsonb(v),
        P::Decimal(v) => DbValue::Decimal(v),
        P::RangeInt32(v) => DbValue::RangeInt32(v),
        P::RangeInt64(v) => DbValue::RangeInt64(v),
        P::RangeDecimal(v) => DbValue::RangeDecimal(v),
        P::ArrayInt32(v) => DbValue::ArrayInt32(v),
        P::ArrayInt64(v) => DbValue::ArrayInt64(v),
        P::ArrayDecimal(v) => DbValue::ArrayDecimal(v),
        P::ArrayStr(v) => DbValue::ArrayStr(v),
        P::Interval(v) => DbValue::Interval(v),
        P::DbNull => DbValue::DbNull,
    }
}
