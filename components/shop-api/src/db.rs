//! A service's database through `spin:postgres/postgres@4.0.0`, and how its
//! failures map onto the API. Schemas live in each service's `migrations/`,
//! applied by the host before the component serves; nothing here creates or
//! alters tables.

use spin_sdk::pg4::{Connection, DbValue, ParameterValue, PgError, QueryError, RowSet};
use spin_sdk::variables;

use crate::ApiError;

/// SQLSTATE `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

/// A failed statement, classified; the details went to the log already.
#[derive(Debug, PartialEq, Eq)]
pub enum DbError {
    /// The server, not the statement, is the problem (down, restarting, out
    /// of connections): worth retrying shortly.
    Unavailable,
    /// A unique key was violated, which only the caller can word.
    UniqueViolation,
    /// Anything else: a bug in a statement or a deployment.
    Failed,
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable => ApiError::Unavailable("database"),
            // A caller that expects a unique violation handles it before.
            DbError::UniqueViolation | DbError::Failed => ApiError::Internal,
        }
    }
}

/// One connection, opened per request or delivery: an instance serves a
/// single one, and pooling is the host's business. The connection is one
/// session, so `BEGIN`/`COMMIT` through it are real transactions.
pub struct Db {
    conn: Connection,
    /// Prefixes log lines, e.g. `order`.
    service: &'static str,
}

impl Db {
    /// Connects to the `db_url` variable. On Trellis that is a managed
    /// database address (`postgres://trellis.internal/<name>`); the host
    /// holds the credentials.
    pub fn open(service: &'static str) -> Result<Self, DbError> {
        let url = variables::get("db_url").map_err(|err| {
            // A deployment bug, not an outage: retrying will not help.
            eprintln!("{service}: the `db_url` variable is not available: {err}");
            DbError::Failed
        })?;
        match Connection::open(&url) {
            Ok(conn) => Ok(Db { conn, service }),
            Err(err) => {
                eprintln!("{service}: cannot connect to the database: {err:?}");
                Err(DbError::Unavailable)
            }
        }
    }

    pub fn query(&self, sql: &str, params: &[ParameterValue]) -> Result<RowSet, DbError> {
        self.conn
            .query(sql, params)
            .map_err(|err| classify(self.service, err))
    }

    /// Runs `sql` and decodes each row with `decode`, which returns `None`
    /// when a row is not in the shape the statement promises (a bug).
    pub fn query_as<T>(
        &self,
        sql: &str,
        params: &[ParameterValue],
        decode: impl Fn(&[DbValue]) -> Option<T>,
    ) -> Result<Vec<T>, DbError> {
        let rows = self.query(sql, params)?;
        rows.rows
            .iter()
            .map(|row| decode(row))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                eprintln!("{}: unexpected row shape: {:?}", self.service, rows.columns);
                DbError::Failed
            })
    }

    /// Runs an `INSERT ... RETURNING` of one row and decodes that row. A
    /// statement that returned none broke its promise: logged, `Failed`.
    pub fn insert_returning<T>(
        &self,
        sql: &str,
        params: &[ParameterValue],
        decode: impl Fn(&[DbValue]) -> Option<T>,
    ) -> Result<T, DbError> {
        let rows = self.query_as(sql, params, decode)?;
        rows.into_iter().next().ok_or_else(|| {
            eprintln!("{}: INSERT ... RETURNING returned no row", self.service);
            DbError::Failed
        })
    }

    pub fn execute(&self, sql: &str, params: &[ParameterValue]) -> Result<u64, DbError> {
        self.conn
            .execute(sql, params)
            .map_err(|err| classify(self.service, err))
    }

    /// Runs `work` in a transaction: committed if it returns `Ok`, rolled
    /// back if it returns `Err`. (Should the guest trap meanwhile, the host
    /// rolls back the open transaction when it takes the connection back.)
    pub fn transaction<T, E: From<DbError>>(
        &self,
        work: impl FnOnce(&Self) -> Result<T, E>,
    ) -> Result<T, E> {
        self.execute("BEGIN", &[])?;
        match work(self) {
            Ok(value) => {
                self.execute("COMMIT", &[])?;
                Ok(value)
            }
            Err(err) => {
                // Best effort: a connection that failed cannot roll back, and
                // the host rolls back what a dropped connection left open.
                if self.execute("ROLLBACK", &[]).is_err() {
                    eprintln!("{}: ROLLBACK failed", self.service);
                }
                Err(err)
            }
        }
    }
}

/// Outages are worth a retry; a duplicate is the caller's to word; the rest
/// are bugs, logged in full (the client learns nothing of them).
fn classify(service: &str, err: PgError) -> DbError {
    if let PgError::QueryFailed(QueryError::DbError(db)) = &err {
        if db.code == UNIQUE_VIOLATION {
            return DbError::UniqueViolation;
        }
        if is_outage(&db.code) {
            eprintln!("{service}: database unavailable: {}", db.as_text);
            return DbError::Unavailable;
        }
    }
    if let PgError::ConnectionFailed(message) = &err {
        eprintln!("{service}: database connection failed: {message}");
        return DbError::Unavailable;
    }
    eprintln!("{service}: database error: {err:?}");
    DbError::Failed
}

/// SQLSTATEs that mean the server, not the query, is the problem: class 08
/// (connection exception), 53 (insufficient resources, e.g. too many
/// connections) and 57P01..57P03 (shutting down, cannot connect now).
fn is_outage(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_told_from_bugs() {
        for code in ["08006", "53300", "57P01", "57P03"] {
            assert!(is_outage(code), "{code}");
        }
        for code in ["23505", "42P01", "22021", "57014"] {
            assert!(!is_outage(code), "{code}");
        }
    }

    #[test]
    fn failures_map_onto_the_api() {
        assert_eq!(
            ApiError::from(DbError::Unavailable),
            ApiError::Unavailable("database")
        );
        assert_eq!(ApiError::from(DbError::Failed), ApiError::Internal);
        assert_eq!(ApiError::from(DbError::UniqueViolation), ApiError::Internal);
    }
}
