//! The user table through `spin:postgres/postgres@4.0.0`, and how its errors
//! map onto the API. The schema is in `migrations/`, applied by the host
//! before the component serves; nothing here creates or alters tables.

use spin_sdk::pg4::{Connection, DbValue, ParameterValue, PgError, QueryError};
use spin_sdk::variables;

use crate::respond::ApiError;
use crate::validate::NewUser;

/// A stored user, as the API shows it.
#[derive(Debug, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    /// RFC 3339 in UTC with a `Z`, formatted by Postgres so no date library
    /// is needed in the guest.
    pub created_at: String,
}

/// The columns every query returns, in the order `user_from_row` reads them.
const COLUMNS: &str = r#"id, email, name,
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at"#;

/// SQLSTATE `unique_violation`: the only unique key besides the id is
/// `lower(email)`, so this is a duplicate e-mail.
const UNIQUE_VIOLATION: &str = "23505";

/// One connection, opened per request: an instance serves a single request,
/// and pooling is the host's business.
pub struct Db(Connection);

impl Db {
    /// Connects to `db_url`. On Trellis that is a managed database address
    /// (`postgres://trellis.internal/users`); the host holds the credentials.
    pub fn open() -> Result<Self, ApiError> {
        let url = variables::get("db_url").map_err(|err| {
            // A deployment bug, not an outage: retrying will not help.
            eprintln!("user: the `db_url` variable is not available: {err}");
            ApiError::Internal
        })?;
        Connection::open(&url).map(Db).map_err(|err| {
            eprintln!("user: cannot connect to the database: {err:?}");
            ApiError::Unavailable
        })
    }

    pub fn insert(&self, user: &NewUser) -> Result<User, ApiError> {
        let sql = format!("INSERT INTO users (email, name) VALUES ($1, $2) RETURNING {COLUMNS}");
        let params = [
            ParameterValue::Str(user.email.clone()),
            ParameterValue::Str(user.name.clone()),
        ];
        let rows = self.query(&sql, &params).map_err(|err| match err {
            DbFailure::UniqueViolation => {
                ApiError::Conflict(format!("a user with e-mail {:?} exists", user.email))
            }
            DbFailure::Api(err) => err,
        })?;
        rows.into_iter().next().ok_or_else(|| {
            eprintln!("user: INSERT ... RETURNING returned no row");
            ApiError::Internal
        })
    }

    pub fn get(&self, id: i64) -> Result<Option<User>, ApiError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
        let rows = self.query(&sql, &[ParameterValue::Int64(id)])?;
        Ok(rows.into_iter().next())
    }

    /// Up to `count` users with ids greater than `after`, by id.
    pub fn list(&self, after: i64, count: i64) -> Result<Vec<User>, ApiError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2");
        Ok(self.query(
            &sql,
            &[ParameterValue::Int64(after), ParameterValue::Int64(count)],
        )?)
    }

    fn query(&self, sql: &str, params: &[ParameterValue]) -> Result<Vec<User>, DbFailure> {
        let rows = self.0.query(sql, params).map_err(classify)?;
        rows.rows
            .iter()
            .map(|row| user_from_row(row))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                eprintln!("user: unexpected row shape: {:?}", rows.columns);
                DbFailure::Api(ApiError::Internal)
            })
    }
}

/// A query's failure: either what the API answers, or a unique violation,
/// which only the caller can word.
enum DbFailure {
    UniqueViolation,
    Api(ApiError),
}

impl From<DbFailure> for ApiError {
    fn from(failure: DbFailure) -> Self {
        match failure {
            // Only inserts can violate a unique key.
            DbFailure::UniqueViolation => ApiError::Internal,
            DbFailure::Api(err) => err,
        }
    }
}

/// Outages are `503` (retry later); a duplicate is the caller's to word; the
/// rest are bugs, logged in full and answered `500` without details.
fn classify(err: PgError) -> DbFailure {
    if let PgError::QueryFailed(QueryError::DbError(db)) = &err {
        if db.code == UNIQUE_VIOLATION {
            return DbFailure::UniqueViolation;
        }
        if is_outage(&db.code) {
            eprintln!("user: database unavailable: {}", db.as_text);
            return DbFailure::Api(ApiError::Unavailable);
        }
    }
    if let PgError::ConnectionFailed(message) = &err {
        eprintln!("user: database connection failed: {message}");
        return DbFailure::Api(ApiError::Unavailable);
    }
    eprintln!("user: database error: {err:?}");
    DbFailure::Api(ApiError::Internal)
}

/// SQLSTATEs that mean the server, not the query, is the problem: class 08
/// (connection exception), 53 (insufficient resources, e.g. too many
/// connections) and 57P01..57P03 (shutting down, cannot connect now).
fn is_outage(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// A row of `COLUMNS`; `None` if the types are not what the query promises.
fn user_from_row(row: &[DbValue]) -> Option<User> {
    match row {
        [
            DbValue::Int64(id),
            DbValue::Str(email),
            DbValue::Str(name),
            DbValue::Str(created_at),
        ] => Some(User {
            id: *id,
            email: email.clone(),
            name: name.clone(),
            created_at: created_at.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_only_in_the_promised_shape() {
        let row = [
            DbValue::Int64(3),
            DbValue::Str("a@b".into()),
            DbValue::Str("A".into()),
            DbValue::Str("2025-01-02T03:04:05.000000Z".into()),
        ];
        assert_eq!(user_from_row(&row).map(|u| u.id), Some(3));
        assert_eq!(user_from_row(&row[..3]), None);
        let mut wrong = row.clone();
        wrong[0] = DbValue::Int32(3);
        assert_eq!(user_from_row(&wrong), None);
    }

    #[test]
    fn outages_are_told_from_bugs() {
        for code in ["08006", "53300", "57P01", "57P03"] {
            assert!(is_outage(code), "{code}");
        }
        for code in ["23505", "42P01", "22021", "57014"] {
            assert!(!is_outage(code), "{code}");
        }
    }
}
