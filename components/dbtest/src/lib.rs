//! The database test guest: drives `spin:postgres/postgres@4.0.0` (what
//! `spin_sdk::pg4` imports) for the end-to-end tests.
//!
//! - `POST /roundtrip?address=<addr>`: every WIT type through a table and
//!   back; answers `{"<case>": "ok" | "mismatch: ..."}` (see [`roundtrip`]).
//! - `POST /sql` with `{"address", "steps": [{"op", "sql", "params"}],
//!   "trap_after"}`: runs the steps in order on one connection and answers
//!   each step's rows, row count or error; `trap_after` panics afterwards,
//!   leaving whatever transaction is open for the host to roll back.
//!
//! Database errors are answers (200), not failures, so the tests can check
//! their kind, SQLSTATE and text.

mod roundtrip;

use serde_json::{Value, json};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;
use spin_sdk::pg4::{Connection, DbValue, ParameterValue, PgError, QueryError, RowSet};

#[http_component]
fn handle(req: Request) -> Response {
    // The path relative to the component's route (Spin's `spin-path-info`).
    let path = match req.header("spin-path-info").and_then(|v| v.as_str()) {
        Some(info) => info.split('?').next().unwrap_or_default().to_owned(),
        None => req.path().to_owned(),
    };
    match path.as_str() {
        "/roundtrip" => match query_param(req.query(), "address") {
            Some(address) => match Connection::open(&address) {
                Ok(conn) => json_response(200, roundtrip::run(&conn)),
                Err(err) => json_response(200, json!({ "open_error": error_json(&err) })),
            },
            None => json_response(400, json!({ "error": "missing `address`" })),
        },
        "/sql" => match serde_json::from_slice::<Value>(req.body()) {
            Ok(body) => sql(&body),
            Err(err) => json_response(400, json!({ "error": format!("body: {err}") })),
        },
        _ => json_response(404, json!({ "error": "dbtest: no such endpoint" })),
    }
}

/// Runs `body["steps"]` on one connection to `body["address"]`.
fn sql(body: &Value) -> Response {
    let address = body["address"].as_str().unwrap_or_default();
    let conn = match Connection::open(address) {
        Ok(conn) => conn,
        Err(err) => return json_response(200, json!({ "open_error": error_json(&err) })),
    };
    let steps = body["steps"].as_array().cloned().unwrap_or_default();
    let mut results = Vec::new();
    for step in &steps {
        let statement = step["sql"].as_str().unwrap_or_default();
        let params: Vec<ParameterValue> = step["params"]
            .as_array()
            .map(|ps| ps.iter().map(param).collect())
            .unwrap_or_default();
        let result = match step["op"].as_str() {
            Some("execute") => conn
                .execute(statement, &params)
                .map(|count| json!({ "count": count })),
            _ => conn
                .query(statement, &params)
                .map(|rows| rowset_json(&rows)),
        };
        results.push(result.unwrap_or_else(|err| json!({ "error": error_json(&err) })));
    }
    if body["trap_after"].as_bool() == Some(true) {
        // wasm32-wasip2 aborts on panic: the instance traps with `conn` (and
        // any transaction on it) still open.
        panic!("dbtest: deliberate trap after {} steps", steps.len());
    }
    json_response(200, json!({ "results": results }))
}

/// A JSON scalar as a parameter: string -> str, integer -> int64,
/// other number -> floating64, bool -> boolean, anything else -> db-null.
fn param(value: &Value) -> ParameterValue {
    match value {
        Value::String(s) => ParameterValue::Str(s.clone()),
        Value::Bool(b) => ParameterValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ParameterValue::Int64(i),
            None => ParameterValue::Floating64(n.as_f64().unwrap_or(f64::NAN)),
        },
        _ => ParameterValue::DbNull,
    }
}

fn rowset_json(rows: &RowSet) -> Value {
    json!({
        "columns": rows.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "rows": rows.rows.iter()
            .map(|row| row.iter().map(value_json).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
    })
}

/// Scalars as themselves; everything else as its Debug text.
fn value_json(value: &DbValue) -> Value {
    match value {
        DbValue::Boolean(b) => json!(b),
        DbValue::Int8(n) => json!(n),
        DbValue::Int16(n) => json!(n),
        DbValue::Int32(n) => json!(n),
        DbValue::Int64(n) => json!(n),
        DbValue::Floating32(f) => json!(f),
        DbValue::Floating64(f) => json!(f),
        DbValue::Str(s) | DbValue::Uuid(s) | DbValue::Decimal(s) => json!(s),
        DbValue::Jsonb(bytes) => {
            serde_json::from_slice(bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(bytes)))
        }
        DbValue::DbNull => Value::Null,
        other => json!(format!("{other:?}")),
    }
}

/// `{"kind", "code", "message", "detail"}`; `code` is the SQLSTATE of a
/// database error, else null.
fn error_json(err: &PgError) -> Value {
    let (kind, message) = match err {
        PgError::ConnectionFailed(m) => ("connection-failed", m),
        PgError::BadParameter(m) => ("bad-parameter", m),
        PgError::ValueConversionFailed(m) => ("value-conversion-failed", m),
        PgError::Other(m) => ("other", m),
        PgError::QueryFailed(QueryError::Text(m)) => ("query-failed", m),
        PgError::QueryFailed(QueryError::DbError(e)) => {
            return json!({
                "kind": "query-failed",
                "code": e.code,
                "message": e.message,
                "detail": e.detail,
                "severity": e.severity,
            });
        }
    };
    json!({ "kind": kind, "code": null, "message": message, "detail": null })
}

/// The value of the first `name=value` pair in a query string, `%XX`-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn json_response(status: u16, value: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(value.to_string())
        .build()
}
