//! Postgres results -> WIT `db-value`s, and column types -> `db-data-type`s.
//!
//! Values arrive in Postgres's binary format (sqlx asks for binary results in
//! the extended protocol, which every statement here goes through) and are
//! decoded here with checked reads rather than through sqlx's `Decode`:
//! several of those panic on values chrono cannot hold ('infinity' dates and
//! timestamps), drop `numeric`'s display scale, cannot tell an empty range
//! from an unbounded one, or refuse arrays not starting at 1.

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta, Timelike};
use sqlx::postgres::{PgColumn, PgRow, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::{Column as _, Row as _, TypeInfo as _, ValueRef as _};

use super::{RangeBoundKind, WitRange, numeric};
use crate::capabilities::database::bindings::{Column, DbDataType, DbValue, Error, Interval};

/// Built-in type OIDs (Postgres's `pg_type.dat`); they never change.
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const NAME_ARRAY: u32 = 1003;
    pub const INT4_ARRAY: u32 = 1007;
    pub const TEXT_ARRAY: u32 = 1009;
    pub const BPCHAR_ARRAY: u32 = 1014;
    pub const VARCHAR_ARRAY: u32 = 1015;
    pub const INT8_ARRAY: u32 = 1016;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC_ARRAY: u32 = 1231;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
    pub const INT4RANGE: u32 = 3904;
    pub const NUMRANGE: u32 = 3906;
    pub const INT8RANGE: u32 = 3926;
    /// Postgres's FirstNormalObjectId: OIDs below it are built in.
    pub const FIRST_USER: u32 = 16384;
}

fn oid_of(ty: &PgTypeInfo) -> u32 {
    ty.oid().map_or(0, |o| o.0)
}

/// The WIT type of a column of type `ty`.
pub fn data_type(ty: &PgTypeInfo) -> DbDataType {
    use DbDataType as T;
    match oid_of(ty) {
        oid::BOOL => T::Boolean,
        oid::CHAR => T::Int8,
        oid::INT2 => T::Int16,
        oid::INT4 => T::Int32,
        oid::INT8 => T::Int64,
        oid::FLOAT4 => T::Floating32,
        oid::FLOAT8 => T::Floating64,
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME => T::Str,
        oid::BYTEA => T::Binary,
        oid::DATE => T::Date,
        oid::TIME => T::Time,
        // Spin reports both as datetime; timestamptz values are given in UTC.
        oid::TIMESTAMP | oid::TIMESTAMPTZ => T::Datetime,
        oid::UUID => T::Uuid,
        oid::JSON | oid::JSONB => T::Jsonb,
        oid::NUMERIC => T::Decimal,
        oid::INT4RANGE => T::RangeInt32,
        oid::INT8RANGE => T::RangeInt64,
        oid::NUMRANGE => T::RangeDecimal,
        oid::INT4_ARRAY => T::ArrayInt32,
        oid::INT8_ARRAY => T::ArrayInt64,
        oid::NUMERIC_ARRAY => T::ArrayDecimal,
        oid::TEXT_ARRAY | oid::VARCHAR_ARRAY | oid::BPCHAR_ARRAY | oid::NAME_ARRAY => T::ArrayStr,
        oid::INTERVAL => T::Interval,
        _ => T::Other(type_name(ty)),
    }
}

/// Postgres's own name for the type (`timetz`, `_int4`, `my_enum`), as Spin
/// reports it; sqlx spells built-in types in upper case, arrays as `INT4[]`.
fn type_name(ty: &PgTypeInfo) -> String {
    let name = ty.name();
    if oid_of(ty) >= oid::FIRST_USER {
        return name.to_owned();
    }
    let name = name.trim_matches('"').to_ascii_lowercase();
    match name.strip_suffix("[]") {
        Some(element) => format!("_{}", element.trim_matches('"')),
        None => name,
    }
}

pub fn columns(columns: &[PgColumn]) -> Vec<Column> {
    columns
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            data_type: data_type(c.type_info()),
        })
        .collect()
}

/// Converts every value of `row`; a failure names the column.
pub fn row(row: &PgRow) -> Result<Vec<DbValue>, Error> {
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let converted = row
            .try_get_raw(index)
            .map_err(|e| e.to_string())
            .and_then(|raw| value(column.type_info(), raw));
        values.push(converted.map_err(|msg| {
            Error::ValueConversionFailed(format!(
                "column {} ({}, type {}): {msg}",
                index + 1,
                column.name(),
                type_name(column.type_info()),
            ))
        })?);
    }
    Ok(values)
}

fn value(ty: &PgTypeInfo, raw: PgValueRef<'_>) -> Result<DbValue, String> {
    if raw.is_null() {
        return Ok(DbValue::DbNull);
    }
    if raw.format() != PgValueFormat::Binary {
        return Err("expected a binary-format value".to_owned());
    }
    let bytes = raw.as_bytes().map_err(|e| e.to_string())?;
    let mut r = Reader(bytes);
    use DbValue as V;
    let value = match oid_of(ty) {
        oid::CHAR => V::Int8(i8::from_be_bytes([r.u8()?])),
        oid::BOOL => V::Boolean(r.u8()? != 0),
        oid::INT2 => V::Int16(i16::from_be_bytes(r.array()?)),
        oid::INT4 => V::Int32(r.i32()?),
        oid::INT8 => V::Int64(r.i64()?),
        oid::FLOAT4 => V::Floating32(f32::from_be_bytes(r.array()?)),
        oid::FLOAT8 => V::Floating64(f64::from_be_bytes(r.array()?)),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME => V::Str(text(bytes)?),
        oid::BYTEA => V::Binary(bytes.to_vec()),
        oid::DATE => {
            let d = date(r.i32()?)?;
            V::Date((d.year(), small(d.month()), small(d.day())))
        }
        oid::TIME => V::Time(time(r.i64()?)?),
        oid::TIMESTAMP | oid::TIMESTAMPTZ => V::Datetime(datetime(r.i64()?)?),
        oid::UUID => V::Uuid(uuid::Uuid::from_bytes(r.array()?).to_string()),
        oid::JSON => V::Jsonb(bytes.to_vec()),
        // Binary jsonb is a format version, 1, then the JSON text.
        oid::JSONB => match bytes.split_first() {
            Some((1, json)) => V::Jsonb(json.to_vec()),
            _ => return Err("unknown jsonb binary format".to_owned()),
        },
        oid::NUMERIC => V::Decimal(numeric::to_text(bytes)?),
        oid::INT4RANGE => V::RangeInt32(range(bytes, 0, |b| Reader(b).i32())?),
        oid::INT8RANGE => V::RangeInt64(range(bytes, 0, |b| Reader(b).i64())?),
        oid::NUMRANGE => V::RangeDecimal(range(bytes, "0".to_owned(), numeric::to_text)?),
        oid::INT4_ARRAY => V::ArrayInt32(array(bytes, |b| Reader(b).i32())?),
        oid::INT8_ARRAY => V::ArrayInt64(array(bytes, |b| Reader(b).i64())?),
        oid::NUMERIC_ARRAY => V::ArrayDecimal(array(bytes, numeric::to_text)?),
        oid::TEXT_ARRAY | oid::VARCHAR_ARRAY | oid::BPCHAR_ARRAY | oid::NAME_ARRAY => {
            V::ArrayStr(array(bytes, text)?)
        }
        oid::INTERVAL => V::Interval(Interval {
            micros: r.i64()?,
            days: r.i32()?,
            months: r.i32()?,
        }),
        // As Spin: the value in Postgres's binary format, for the guest to parse.
        _ => V::Unsupported(bytes.to_vec()),
    };
    Ok(value)
}

/// Checked big-endian reads: a short value is an error, never a panic.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "value truncated: {} bytes left, {n} needed",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }
    pub(super) fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    /// A length-prefixed field of an array or range; `None` is SQL NULL.
    fn field(&mut self) -> Result<Option<&'a [u8]>, String> {
        match usize::try_from(self.i32()?) {
            Ok(len) => self.take(len).map(Some),
            Err(_) => Ok(None),
        }
    }
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| format!("text is not UTF-8: {e}"))
}

/// For chrono's month, day, hour, minute and second, which all fit.
fn small(n: u32) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

fn postgres_epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .unwrap_or_default()
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
}

/// `date`: days since 2000-01-01; i32::MIN/MAX are -infinity/infinity.
fn date(days: i32) -> Result<NaiveDate, String> {
    postgres_epoch()
        .date()
        .checked_add_signed(TimeDelta::days(days.into()))
        .ok_or_else(|| out_of_range("date", days == i32::MAX || days == i32::MIN))
}

/// `time`: microseconds since midnight, up to and including 24:00:00.
fn time(micros: i64) -> Result<(u8, u8, u8, u32), String> {
    let secs = micros.div_euclid(1_000_000);
    let part = |n: i64| u8::try_from(n).map_err(|_| format!("time {micros}µs is out of range"));
    Ok((
        part(secs / 3600)?,
        part(secs / 60 % 60)?,
        part(secs % 60)?,
        u32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    ))
}

/// Year, month, day, hour, minute, second, nanosecond.
type WitDatetime = (i32, u8, u8, u8, u8, u8, u32);

/// `timestamp`/`timestamptz`: microseconds since 2000-01-01 00:00 (UTC for
/// timestamptz, whatever the session's TimeZone); i64::MIN/MAX are ±infinity.
fn datetime(micros: i64) -> Result<WitDatetime, String> {
    let t = postgres_epoch()
        .checked_add_signed(TimeDelta::microseconds(micros))
        .ok_or_else(|| out_of_range("timestamp", micros == i64::MAX || micros == i64::MIN))?;
    Ok((
        t.year(),
        small(t.month()),
        small(t.day()),
        small(t.hour()),
        small(t.minute()),
        small(t.second()),
        t.nanosecond(),
    ))
}

fn out_of_range(what: &str, infinite: bool) -> String {
    if infinite {
        format!("{what} 'infinity' or '-infinity' has no WIT representation")
    } else {
        format!("{what} is outside the range chrono supports (±262,000 years)")
    }
}

/// Range flags (Postgres's rangetypes.h).
const RANGE_EMPTY: u8 = 0x01;
const RANGE_LB_INC: u8 = 0x02;
const RANGE_UB_INC: u8 = 0x04;
const RANGE_LB_INF: u8 = 0x08;
const RANGE_UB_INF: u8 = 0x10;

/// An empty range comes back as `[zero, zero)`: Postgres turns that back into
/// 'empty', whereas Spin's `(none, none)` would read as "everything".
fn range<T: Clone>(
    bytes: &[u8],
    zero: T,
    element: impl Fn(&[u8]) -> Result<T, String>,
) -> Result<WitRange<T>, String> {
    let mut r = Reader(bytes);
    let flags = r.u8()?;
    if flags & RANGE_EMPTY != 0 {
        return Ok((
            Some((zero.clone(), RangeBoundKind::Inclusive)),
            Some((zero, RangeBoundKind::Exclusive)),
        ));
    }
    let mut bound = |infinite: u8, inclusive: u8| -> Result<_, String> {
        if flags & infinite != 0 {
            return Ok(None);
        }
        let value = element(r.field()?.ok_or("NULL range bound")?)?;
        let kind = if flags & inclusive != 0 {
            RangeBoundKind::Inclusive
        } else {
            RangeBoundKind::Exclusive
        };
        Ok(Some((value, kind)))
    };
    let lower = bound(RANGE_LB_INF, RANGE_LB_INC)?;
    Ok((lower, bound(RANGE_UB_INF, RANGE_UB_INC)?))
}

/// A one-dimensional array; its lower bound is dropped (a WIT list has none).
fn array<T>(
    bytes: &[u8],
    element: impl Fn(&[u8]) -> Result<T, String>,
) -> Result<Vec<Option<T>>, String> {
    let mut r = Reader(bytes);
    let (ndim, _has_nulls, _element_oid) = (r.i32()?, r.i32()?, r.i32()?);
    match ndim {
        0 => return Ok(Vec::new()),
        1 => {}
        n => {
            return Err(format!(
                "{n}-dimensional arrays are not supported, only one-dimensional ones"
            ));
        }
    }
    let (len, _lower_bound) = (r.i32()?, r.i32()?);
    let len = usize::try_from(len).map_err(|_| format!("bad array length {len}"))?;
    // Each element takes at least its 4-byte length: don't trust `len` further.
    let mut out = Vec::with_capacity(len.min(r.0.len() / 4));
    for _ in 0..len {
        out.push(r.field()?.map(&element).transpose()?);
    }
    Ok(out)
}
