//! Conversions between the WIT's values and Postgres (sqlx).
//!
//! | WIT | to Postgres (parameter) | from Postgres (result) |
//! |---|---|---|
//! | boolean | bool | bool |
//! | int8 | "char" | "char" |
//! | int16 / int32 / int64 | int2 / int4 / int8 | the same |
//! | floating32 / floating64 | float4 / float8 | the same |
//! | str | text | text, varchar, bpchar, name |
//! | binary | bytea | bytea |
//! | date, time | date, time | the same |
//! | datetime | timestamp (naive, taken as UTC) | timestamp, and timestamptz in UTC |
//! | timestamp (unix seconds) | timestamptz | - (read back as datetime) |
//! | uuid | uuid | uuid |
//! | jsonb | jsonb | json and jsonb, the JSON text as sent |
//! | decimal | numeric, exact, NaN and ±Infinity | numeric, exact |
//! | range-int32/int64/decimal | int4range / int8range / numrange | the same |
//! | array-int32/int64/decimal | int4[] / int8[] / numeric[] | the same |
//! | array-str | text[] | text[], varchar[], bpchar[], name[] |
//! | interval | interval | interval |
//! | db-null | NULL of a type Postgres infers | any NULL |
//! | unsupported / other(name) | - | any other type: binary value, type name |
//!
//! Where Postgres keeps less than the WIT carries, values are truncated the
//! way Postgres itself would (nanoseconds to microseconds). Departures from
//! Spin, each where Spin loses information: numerics are exact at any size
//! (Spin's `rust_decimal` stops at 28 digits), an empty range reads as
//! `[0, 0)` (Spin's `(none, none)` means unbounded), arrays may start at any
//! index, and json columns read as jsonb does (Spin gives them `unsupported`).

// The WIT's `error` is what every operation returns; boxing it here would
// only mean unboxing it again for the bindings.
#![allow(clippy::result_large_err)]

mod from_pg;
mod numeric;
mod to_pg;

pub use from_pg::{columns, data_type, row};
pub use to_pg::{EncodedParams, encode_params};

use super::bindings::RangeBoundKind;

/// A WIT range: optional lower and upper bounds, each with its kind.
type WitRange<T> = (Option<(T, RangeBoundKind)>, Option<(T, RangeBoundKind)>);

#[cfg(test)]
mod tests;
