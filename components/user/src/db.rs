//! The user table. The schema is in `migrations/`, applied by the host before
//! the component serves; connecting and how database errors map onto the API
//! are `shop_api::db`'s.

use shop_api::ApiError;
use shop_api::db::{Db, DbError};
use spin_sdk::pg4::{DbValue, ParameterValue};

use crate::validate::NewUser;

/// A stored user, as the API shows it.
#[derive(Debug, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    /// RFC 3339 in UTC with a `Z`.
    pub created_at: String,
}

/// The columns every query returns, in the order `user_from_row` reads them.
const COLUMNS: &str = concat!(
    "id, email, name, ",
    shop_api::rfc3339_utc!("created_at"),
    " AS created_at"
);

/// The user service's database.
pub struct Users(Db);

impl Users {
    pub fn open() -> Result<Self, ApiError> {
        Ok(Users(Db::open("user")?))
    }

    pub fn insert(&self, user: &NewUser) -> Result<User, ApiError> {
        let sql = format!("INSERT INTO users (email, name) VALUES ($1, $2) RETURNING {COLUMNS}");
        let params = [
            ParameterValue::Str(user.email.clone()),
            ParameterValue::Str(user.name.clone()),
        ];
        self.0
            .insert_returning(&sql, &params, user_from_row)
            .map_err(|err| match err {
                // The only unique key besides the id is `lower(email)`.
                DbError::UniqueViolation => {
                    ApiError::Conflict(format!("a user with e-mail {:?} exists", user.email))
                }
                err => err.into(),
            })
    }

    pub fn get(&self, id: i64) -> Result<Option<User>, ApiError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
        let rows = self
            .0
            .query_as(&sql, &[ParameterValue::Int64(id)], user_from_row)?;
        Ok(rows.into_iter().next())
    }

    /// Up to `count` users with ids greater than `after`, by id.
    pub fn list(&self, after: i64, count: i64) -> Result<Vec<User>, ApiError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2");
        let params = [ParameterValue::Int64(after), ParameterValue::Int64(count)];
        Ok(self.0.query_as(&sql, &params, user_from_row)?)
    }
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
    fn columns_format_created_at_in_utc() {
        assert!(COLUMNS.starts_with("id, email, name, to_char(created_at AT TIME ZONE 'UTC'"));
        assert!(COLUMNS.ends_with(r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at"#));
    }
}
