//! What the shop's HTTP services (user, order, payment) share, so each states
//! the rules of `api.md` once:
//!
//! - [`error`]: [`ApiError`], one variant per row of the API's error table,
//!   and the envelope `{"error": {"code", "message"}}` it answers with (it is
//!   a Spin `IntoResponse`, so an entry point returns `Result<_, ApiError>`).
//! - [`request`]: the request line split into path and query, headers, and
//!   the body read as JSON (the `413` and `400` of the order of checks).
//! - [`route`]: what a path names, a collection or one of its items (the
//!   `404`s).
//! - [`params`]: path ids and integer query parameters (the `400`s).
//! - [`fields`]: text and integer fields of a JSON body (the `422`s).
//! - [`db`]: the managed database behind `db_url`, transactions, and how
//!   database failures map onto the API (`503` or `500`).
//! - `testing` (tests only, the `testing` feature): reading a `Response`'s
//!   JSON body and headers in the services' unit tests.
//!
//! Everything but `db` and `request` is pure and unit-tested natively.

pub mod db;
pub mod error;
pub mod fields;
pub mod params;
pub mod request;
pub mod route;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{ApiError, json_response};

/// SQL for a `timestamptz` column as RFC 3339 in UTC with a `Z` and
/// microseconds, e.g. `2025-01-02T03:04:05.000006Z`. Formatted by Postgres, so
/// no date library is needed in a guest. Expands to a string literal, so it
/// can build `const` column lists with `concat!`.
#[macro_export]
macro_rules! rfc3339_utc {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            r#" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#
        )
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_sql() {
        const COLUMNS: &str = concat!("id, ", rfc3339_utc!("at"), " AS at");
        assert_eq!(
            COLUMNS,
            r#"id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at"#
        );
    }
}
