//! The operations behind a guest's `connection.query` and `.execute`.
//!
//! Statements are prepared (sqlx caches them per connection, keyed by their
//! text) and parameters are bound in binary with the types their WIT variants
//! map to. sqlx keys its cache by the text alone, so the same text bound with
//! other parameter types would reuse the first types and Postgres would
//! misread the bytes (an int8 read as a float8, say). The text is therefore
//! suffixed with a comment naming the parameters' WIT kinds: each
//! (text, kinds) pair is its own prepared statement. Postgres reports error
//! positions in the text as sent, which the suffix, coming last, leaves alone.
//!
//! After an error for which [`must_discard_connection`] is true (a timeout, a
//! broken connection), the connection must be closed, never reused: a timeout
//! drops sqlx's future mid-flight, which leaves the protocol state unknown
//! and, worse, the statement still running on the server until its own
//! `statement_timeout`.

// The WIT's `error` is what every operation returns; boxing it here would
// only mean unboxing it again for the bindings.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt as _;
use sqlx::postgres::{PgConnection, PgDatabaseError, PgErrorPosition, PgSeverity};
use sqlx::{AssertSqlSafe, Executor as _, SqlSafeStr as _, Statement as _};

use super::bindings::{DbError, DbValue, Error, ParameterValue, QueryError, RowSet};
use super::convert::{self, EncodedParams};

/// What one statement may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most rows a query may return.
    pub max_rows: usize,
    /// Most bytes of values a query may return (see [`value_size`]).
    pub max_bytes: usize,
    /// Deadline for the whole operation, enforced here whatever the guest
    /// `SET`s on the server. Zero means none.
    pub statement_timeout: Duration,
}

/// Starts every timeout message; [`is_timeout`] looks for it.
const TIMED_OUT: &str = "statement timed out after ";

/// Runs a statement and returns its rows, with the columns (also when there
/// are no rows).
///
/// A result over `limits` is `Error::Other("result too large: more than N
/// rows; add a LIMIT")` (or "... N bytes ..."): `other` because nothing failed
/// in the database and the statement was not at fault as such, where Spin
/// uses `query-failed(text)`. The rest of the result is read and discarded
/// within the timeout, so the connection stays usable (and any transaction
/// open) after that error.
pub async fn query(
    conn: &mut PgConnection,
    statement: &str,
    params: Vec<ParameterValue>,
    limits: &Limits,
) -> Result<RowSet, Error> {
    let params = convert::encode_params(params)?;
    let sql = keyed(statement, &params.signature);
    // Outlives a timeout, to say what the statement was doing when it hit it.
    let mut failure = None;
    let fetch = fetch(conn, sql, params, limits, &mut failure);
    match within(limits.statement_timeout, fetch).await {
        Some(result) => result,
        None => Err(timed_out(limits.statement_timeout, failure.as_ref())),
    }
}

/// Runs a statement and returns how many rows it affected (or returned).
pub async fn execute(
    conn: &mut PgConnection,
    statement: &str,
    params: Vec<ParameterValue>,
    limits: &Limits,
) -> Result<u64, Error> {
    let EncodedParams {
        arguments,
        signature,
        ..
    } = convert::encode_params(params)?;
    let sql = AssertSqlSafe(keyed(statement, &signature));
    let run = async {
        let done = sqlx::query_with(sql, arguments).execute(&mut *conn).await;
        done.map(|d| d.rows_affected()).map_err(map_error)
    };
    within(limits.statement_timeout, run)
        .await
        .unwrap_or_else(|| Err(timed_out(limits.statement_timeout, None)))
}

/// The statement text under which it is prepared and cached: see the module
/// documentation. A statement without parameters needs no suffix.
fn keyed(statement: &str, signature: &str) -> Arc<str> {
    if signature.is_empty() {
        return statement.into();
    }
    // On a line of its own, so that a trailing `--` comment cannot swallow it.
    format!("{statement}\n/* params: {signature} */").into()
}

async fn fetch(
    conn: &mut PgConnection,
    sql: Arc<str>,
    params: EncodedParams,
    limits: &Limits,
    failure: &mut Option<Error>,
) -> Result<RowSet, Error> {
    let mut columns = None;
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut stream =
        sqlx::query_with(AssertSqlSafe(sql.clone()), params.arguments).fetch(&mut *conn);
    // After a failure, keep reading to the end of the result: dropping the
    // stream would leave the rest for the next statement to wade through. An
    // error from the server meanwhile wins: it says the transaction (if any)
    // is now aborted.
    while let Some(row) = stream.try_next().await.map_err(map_error)? {
        if failure.is_some() {
            continue;
        }
        if columns.is_none() {
            columns = Some(convert::columns(sqlx::Row::columns(&row)));
        }
        if rows.len() >= limits.max_rows {
            *failure = Some(too_large(limits.max_rows, "rows"));
            continue;
        }
        match convert::row(&row) {
            Ok(values) => {
                bytes += values.iter().map(value_size).sum::<usize>();
                if bytes > limits.max_bytes {
                    *failure = Some(too_large(limits.max_bytes, "bytes"));
                    continue;
                }
                rows.push(values);
            }
            Err(err) => *failure = Some(err),
        }
    }
    drop(stream);
    if let Some(err) = failure.take() {
        return Err(err);
    }
    let columns = match columns {
        Some(columns) => columns,
        // No rows to read them from: the statement's description has them,
        // and as the statement was just run it is a cache hit, not a round trip.
        None => {
            let sql = AssertSqlSafe(sql).into_sql_str();
            let statement = conn
                .prepare_with(sql, &params.types)
                .await
                .map_err(map_error)?;
            convert::columns(statement.columns())
        }
    };
    Ok(RowSet { columns, rows })
}

fn too_large(limit: usize, what: &str) -> Error {
    Error::Other(format!(
        "result too large: more than {limit} {what}; add a LIMIT"
    ))
}

/// What a value costs against `max_bytes`: its payload plus the fixed size
/// of a `DbValue`, so that many tiny values also add up.
pub fn value_size(value: &DbValue) -> usize {
    fn opt(s: &Option<String>) -> usize {
        s.as_ref().map_or(0, String::len)
    }
    let payload = match value {
        DbValue::Str(s) | DbValue::Uuid(s) | DbValue::Decimal(s) => s.len(),
        DbValue::Binary(b) | DbValue::Jsonb(b) | DbValue::Unsupported(b) => b.len(),
        DbValue::RangeDecimal((lo, hi)) => {
            lo.as_ref().map_or(0, |b| b.0.len()) + hi.as_ref().map_or(0, |b| b.0.len())
        }
        DbValue::ArrayInt32(v) => v.len() * size_of::<Option<i32>>(),
        DbValue::ArrayInt64(v) => v.len() * size_of::<Option<i64>>(),
        DbValue::ArrayDecimal(v) | DbValue::ArrayStr(v) => {
            v.iter().map(|s| size_of::<Option<String>>() + opt(s)).sum()
        }
        _ => 0,
    };
    size_of::<DbValue>() + payload
}

/// Runs `op` within `limit` (none if zero); `None` if it ran out of time.
async fn within<T>(
    limit: Duration,
    op: impl Future<Output = Result<T, Error>>,
) -> Option<Result<T, Error>> {
    if limit.is_zero() {
        return Some(op.await);
    }
    tokio::time::timeout(limit, op).await.ok()
}

fn timed_out(limit: Duration, failure: Option<&Error>) -> Error {
    let limit = humantime::format_duration(limit);
    Error::Other(match failure {
        Some(Error::Other(why)) => {
            format!("{TIMED_OUT}{limit} while discarding the rest of the result ({why})")
        }
        _ => format!("{TIMED_OUT}{limit}"),
    })
}

/// Whether `err` is the host-side statement timeout.
pub fn is_timeout(err: &Error) -> bool {
    matches!(err, Error::Other(msg) if msg.starts_with(TIMED_OUT))
}

/// Whether the connection must be closed, not reused, after `err`: a
/// timeout, a connection that broke, or a FATAL error from the server.
pub fn must_discard_connection(err: &Error) -> bool {
    match err {
        Error::ConnectionFailed(_) => true,
        Error::QueryFailed(QueryError::DbError(db)) => {
            matches!(db.severity.as_str(), "FATAL" | "PANIC")
        }
        other => is_timeout(other),
    }
}

/// Maps a sqlx error to the WIT's: the server's own errors with all their
/// fields, a broken or unreachable connection (I/O, TLS, protocol, pool,
/// configuration) as `connection-failed`, decoding as `value-conversion-failed`.
/// Messages not from the server have any URL credentials masked.
pub fn map_error(err: sqlx::Error) -> Error {
    use sqlx::Error as E;
    let text = || redact(&err.to_string());
    match &err {
        E::Database(db) => match db.try_downcast_ref::<PgDatabaseError>() {
            Some(pg) => Error::QueryFailed(QueryError::DbError(db_error(pg))),
            None => Error::QueryFailed(QueryError::Text(db.to_string())),
        },
        E::Io(_) | E::Tls(_) | E::Protocol(_) | E::Configuration(_) => {
            Error::ConnectionFailed(text())
        }
        E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => Error::ConnectionFailed(text()),
        E::ColumnDecode { .. } | E::Decode(_) => Error::ValueConversionFailed(text()),
        E::Encode(_) => Error::BadParameter(text()),
        _ => Error::Other(text()),
    }
}

fn db_error(pg: &PgDatabaseError) -> DbError {
    let severity = match pg.severity() {
        PgSeverity::Panic => "PANIC",
        PgSeverity::Fatal => "FATAL",
        PgSeverity::Error => "ERROR",
        PgSeverity::Warning => "WARNING",
        PgSeverity::Notice => "NOTICE",
        PgSeverity::Debug => "DEBUG",
        PgSeverity::Info => "INFO",
        PgSeverity::Log => "LOG",
    };
    // Keys as Spin names them, so guests can move between hosts.
    let mut extras: Vec<(String, String)> = [
        ("column", pg.column()),
        ("constraint", pg.constraint()),
        ("routine", pg.routine()),
        ("hint", pg.hint()),
        ("table", pg.table()),
        ("datatype", pg.data_type()),
        ("schema", pg.schema()),
        ("file", pg.file()),
        ("where_", pg.r#where()),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
    .collect();
    if let Some(line) = pg.line() {
        extras.push(("line".to_owned(), line.to_string()));
    }
    match pg.position() {
        Some(PgErrorPosition::Original(p)) => extras.push(("position".to_owned(), p.to_string())),
        Some(PgErrorPosition::Internal { position, query }) => {
            extras.push(("internal_position".to_owned(), position.to_string()));
            extras.push(("internal_query".to_owned(), query.to_owned()));
        }
        None => {}
    }
    let mut as_text = format!("{severity}: {} (SQLSTATE {})", pg.message(), pg.code());
    for (label, field) in [("DETAIL", pg.detail()), ("HINT", pg.hint())] {
        if let Some(field) = field {
            as_text.push_str(&format!("\n{label}: {field}"));
        }
    }
    DbError {
        as_text,
        severity: severity.to_owned(),
        code: pg.code().to_owned(),
        message: pg.message().to_owned(),
        detail: pg.detail().map(str::to_owned),
        extras,
    }
}

/// Masks credentials in `scheme://user:password@host` and `password=...`, in
/// case a driver message quotes a connection string.
fn redact(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || "/?#\"'`".contains(c))
            .unwrap_or(tail.len());
        let (authority, after) = tail.split_at(end);
        match authority.rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = after;
    }
    out.push_str(rest);
    match out.find("password=") {
        Some(start) => {
            let value = start + "password=".len();
            let end = out[value..]
                .find(|c: char| c.is_whitespace() || c == '&')
                .map_or(out.len(), |e| value + e);
            out.replace_range(value..end, "***");
            out
        }
        None => out,
    }
}

#[cfg(test)]
mod tests;
