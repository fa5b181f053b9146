//! WIT `parameter-value`s -> Postgres bind parameters.
//!
//! sqlx sends every parameter in binary with a type declared in the Parse
//! message, so each WIT variant maps to exactly one Postgres type (the one
//! Spin's `ToSql` choices accept). `db-null` is the exception: it is declared
//! as OID 0, "unspecified", so Postgres infers its type from the context, as it
//! would for a NULL literal.

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::types::{Oid, PgInterval, PgRange};
use sqlx::postgres::{PgArgumentBuffer, PgArguments, PgTypeInfo};
use sqlx::{Arguments, Postgres, Type};
use std::ops::Bound;

use super::numeric::Numeric;
use super::{RangeBoundKind, WitRange};
use crate::capabilities::database::bindings::{Error, ParameterValue};

/// Encoded parameters, ready to bind.
pub struct EncodedParams {
    pub arguments: PgArguments,
    /// The declared type of each parameter, for `prepare_with`.
    pub types: Vec<PgTypeInfo>,
    /// The WIT kinds of the parameters, comma-separated: they determine
    /// `types`, so statements are cached per (text, signature); see query.rs.
    pub signature: String,
}

/// Encodes `params`; a value Postgres could not take is `Error::BadParameter`
/// naming it as the statement does (`$1` is the first).
pub fn encode_params(params: Vec<ParameterValue>) -> Result<EncodedParams, Error> {
    let mut encoded = EncodedParams {
        arguments: PgArguments::default(),
        types: Vec::with_capacity(params.len()),
        signature: String::new(),
    };
    for (index, param) in params.into_iter().enumerate() {
        let kind = kind(&param);
        let bad =
            |msg: String| Error::BadParameter(format!("parameter ${} ({kind}): {msg}", index + 1));
        let value = to_pg(param).map_err(bad)?;
        let ty = value.produces().unwrap_or_else(PgParam::type_info);
        encoded
            .arguments
            .add(value)
            .map_err(|e| bad(e.to_string()))?;
        encoded.types.push(ty);
        if index > 0 {
            encoded.signature.push(',');
        }
        encoded.signature.push_str(kind);
    }
    Ok(encoded)
}

/// The WIT name of a parameter's variant, for messages and the signature.
fn kind(param: &ParameterValue) -> &'static str {
    use ParameterValue as P;
    match param {
        P::Boolean(_) => "boolean",
        P::Int8(_) => "int8",
        P::Int16(_) => "int16",
        P::Int32(_) => "int32",
        P::Int64(_) => "int64",
        P::Floating32(_) => "floating32",
        P::Floating64(_) => "floating64",
        P::Str(_) => "str",
        P::Binary(_) => "binary",
        P::Date(_) => "date",
        P::Time(_) => "time",
        P::Datetime(_) => "datetime",
        P::Timestamp(_) => "timestamp",
        P::Uuid(_) => "uuid",
        P::Jsonb(_) => "jsonb",
        P::Decimal(_) => "decimal",
        P::RangeInt32(_) => "range-int32",
        P::RangeInt64(_) => "range-int64",
        P::RangeDecimal(_) => "range-decimal",
        P::ArrayInt32(_) => "array-int32",
        P::ArrayInt64(_) => "array-int64",
        P::ArrayDecimal(_) => "array-decimal",
        P::ArrayStr(_) => "array-str",
        P::Interval(_) => "interval",
        P::DbNull => "db-null",
    }
}

/// A parameter as the Rust value whose sqlx encoding Postgres expects.
enum PgParam {
    Bool(bool),
    /// Postgres's one-byte `"char"`, the only 1-byte integer it has (as in Spin).
    Char(i8),
    Int2(i16),
    Int4(i32),
    Int8(i64),
    Float4(f32),
    Float8(f64),
    Text(String),
    Bytea(Vec<u8>),
    Date(NaiveDate),
    /// Microseconds since midnight: chrono cannot hold Postgres's `24:00:00`.
    Time(i64),
    Timestamp(NaiveDateTime),
    Timestamptz(DateTime<Utc>),
    Uuid(uuid::Uuid),
    /// Validated JSON text.
    Jsonb(Vec<u8>),
    Numeric(Numeric),
    Int4Range(PgRange<i32>),
    Int8Range(PgRange<i64>),
    NumRange(PgRange<BigDecimal>),
    Int4Array(Vec<Option<i32>>),
    Int8Array(Vec<Option<i64>>),
    NumericArray(Vec<Option<Numeric>>),
    TextArray(Vec<Option<String>>),
    Interval(PgInterval),
    Null,
}

fn to_pg(param: ParameterValue) -> Result<PgParam, String> {
    use ParameterValue as P;
    Ok(match param {
        P::Boolean(v) => PgParam::Bool(v),
        P::Int8(v) => PgParam::Char(v),
        P::Int16(v) => PgParam::Int2(v),
        P::Int32(v) => PgParam::Int4(v),
        P::Int64(v) => PgParam::Int8(v),
        P::Floating32(v) => PgParam::Float4(v),
        P::Floating64(v) => PgParam::Float8(v),
        P::Str(v) => PgParam::Text(v),
        P::Binary(v) => PgParam::Bytea(v),
        P::Date((y, m, d)) => PgParam::Date(date(y, m, d)?),
        P::Time((h, m, s, ns)) => PgParam::Time(time_micros(h, m, s, ns)?),
        P::Datetime((y, mo, d, h, mi, s, ns)) => {
            // Postgres keeps microseconds: truncate here rather than let the
            // encoder round towards 2000-01-01 (up before it, down after).
            let time = NaiveTime::from_hms_micro_opt(h.into(), mi.into(), s.into(), ns / 1000)
                .filter(|_| ns < 1_000_000_000)
                .ok_or_else(|| format!("invalid time {h:02}:{mi:02}:{s:02}.{ns:09}"))?;
            PgParam::Timestamp(date(y, mo, d)?.and_time(time))
        }
        P::Timestamp(secs) => PgParam::Timestamptz(
            DateTime::from_timestamp(secs, 0)
                .ok_or_else(|| format!("{secs} seconds from 1970 is out of range"))?,
        ),
        P::Uuid(v) => PgParam::Uuid(uuid::Uuid::parse_str(&v).map_err(|e| format!("{v:?}: {e}"))?),
        P::Jsonb(v) => {
            let text = std::str::from_utf8(&v).map_err(|e| format!("JSON is not UTF-8: {e}"))?;
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| format!("invalid JSON: {e}"))?;
            PgParam::Jsonb(v)
        }
        P::Decimal(v) => PgParam::Numeric(Numeric::parse(&v)?),
        P::RangeInt32((lo, hi)) => PgParam::Int4Range(range((lo, hi), Ok)?),
        P::RangeInt64((lo, hi)) => PgParam::Int8Range(range((lo, hi), Ok)?),
        P::RangeDecimal((lo, hi)) => {
            PgParam::NumRange(range((lo, hi), |s: String| match Numeric::parse(&s)? {
                Numeric::Finite(d) => Ok(d),
                _ => Err(format!(
                    "range bound {s:?} must be finite; omit it for unbounded"
                )),
            })?)
        }
        P::ArrayInt32(v) => PgParam::Int4Array(v),
        P::ArrayInt64(v) => PgParam::Int8Array(v),
        P::ArrayDecimal(v) => PgParam::NumericArray(
            v.into_iter()
                .map(|e| e.map(|s| Numeric::parse(&s)).transpose())
                .collect::<Result<_, _>>()?,
        ),
        P::ArrayStr(v) => PgParam::TextArray(v),
        P::Interval(i) => PgParam::Interval(PgInterval {
            months: i.months,
            days: i.days,
            microseconds: i.micros,
        }),
        P::DbNull => PgParam::Null,
    })
}

fn date(y: i32, m: u8, d: u8) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(y, m.into(), d.into())
        .ok_or_else(|| format!("invalid date {y:04}-{m:02}-{d:02}"))
}

fn time_micros(h: u8, m: u8, s: u8, ns: u32) -> Result<i64, String> {
    // Postgres accepts 24:00:00 as the end of the day; nothing past it.
    let valid =
        (h < 24 && m < 60 && s < 60 && ns < 1_000_000_000) || (h, m, s, ns) == (24, 0, 0, 0);
    if !valid {
        return Err(format!("invalid time {h:02}:{m:02}:{s:02}.{ns:09}"));
    }
    Ok(((i64::from(h) * 60 + i64::from(m)) * 60 + i64::from(s)) * 1_000_000 + i64::from(ns / 1000))
}

fn range<W, T>(
    (lo, hi): WitRange<W>,
    value: impl Fn(W) -> Result<T, String>,
) -> Result<PgRange<T>, String> {
    let bound = |b: Option<(W, RangeBoundKind)>| -> Result<Bound<T>, String> {
        Ok(match b {
            None => Bound::Unbounded,
            Some((v, RangeBoundKind::Inclusive)) => Bound::Included(value(v)?),
            Some((v, RangeBoundKind::Exclusive)) => Bound::Excluded(value(v)?),
        })
    };
    Ok(PgRange {
        start: bound(lo)?,
        end: bound(hi)?,
    })
}

impl Type<Postgres> for PgParam {
    /// Only consulted when `produces` says nothing, which it never does.
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(0))
    }
}

/// A match on a parameter: every variant forwarded to the Rust value it
/// wraps, except the `special` ones (`Time`, `Jsonb` and `Null`, which have no
/// sqlx type of their own).
macro_rules! by_variant {
    ($param:expr, $v:ident => $forward:expr; $($special:pat => $handling:expr),+ $(,)?) => {
        match $param {
            $($special => $handling,)+
            PgParam::Bool($v) => $forward,
            PgParam::Char($v) => $forward,
            PgParam::Int2($v) => $forward,
            PgParam::Int4($v) => $forward,
            PgParam::Int8($v) => $forward,
            PgParam::Float4($v) => $forward,
            PgParam::Float8($v) => $forward,
            PgParam::Text($v) => $forward,
            PgParam::Bytea($v) => $forward,
            PgParam::Date($v) => $forward,
            PgParam::Timestamp($v) => $forward,
            PgParam::Timestamptz($v) => $forward,
            PgParam::Uuid($v) => $forward,
            PgParam::Numeric($v) => $forward,
            PgParam::Int4Range($v) => $forward,
            PgParam::Int8Range($v) => $forward,
            PgParam::NumRange($v) => $forward,
            PgParam::Int4Array($v) => $forward,
            PgParam::Int8Array($v) => $forward,
            PgParam::NumericArray($v) => $forward,
            PgParam::TextArray($v) => $forward,
            PgParam::Interval($v) => $forward,
        }
    };
}

fn type_of<T: Type<Postgres>>(_: &T) -> PgTypeInfo {
    T::type_info()
}

impl Encode<'_, Postgres> for PgParam {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        by_variant!(self, v => v.encode_by_ref(buf);
            Self::Time(micros) => micros.encode_by_ref(buf),
            // Binary jsonb is a format version (1) followed by the JSON text.
            Self::Jsonb(json) => {
                buf.push(1);
                buf.extend_from_slice(json);
                Ok(IsNull::No)
            },
            Self::Null => Ok(IsNull::Yes),
        )
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(by_variant!(self, v => type_of(v);
            Self::Time(_) => <NaiveTime as Type<Postgres>>::type_info(),
            Self::Jsonb(_) => <sqlx::types::JsonValue as Type<Postgres>>::type_info(),
            Self::Null => PgTypeInfo::with_oid(Oid(0)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeBoundKind::Inclusive;

    #[test]
    fn bad_parameters_are_named_by_position() {
        let s = |text: &str| text.to_owned();
        let bad = [
            (
                ParameterValue::Date((2024, 13, 1)),
                "date): invalid date 2024-13-01",
            ),
            (ParameterValue::Date((2023, 2, 29)), "invalid date"),
            (ParameterValue::Time((24, 0, 0, 1)), "time): invalid time"),
            (ParameterValue::Time((12, 60, 0, 0)), "invalid time"),
            (
                ParameterValue::Datetime((2024, 1, 1, 1, 0, 0, 1_000_000_000)),
                "datetime): invalid time",
            ),
            (
                ParameterValue::Datetime((2024, 0, 1, 12, 0, 0, 0)),
                "invalid date",
            ),
            (ParameterValue::Timestamp(i64::MAX), "timestamp): "),
            (
                ParameterValue::Uuid(s("not-a-uuid")),
                "uuid): \"not-a-uuid\"",
            ),
            (
                ParameterValue::Jsonb(b"{\"a\":".to_vec()),
                "jsonb): invalid JSON",
            ),
            (ParameterValue::Jsonb(vec![b'"', 0xff, b'"']), "not UTF-8"),
            (
                ParameterValue::Decimal(s("12abc")),
                "decimal): invalid decimal \"12abc\"",
            ),
            // Parses, but is beyond what numeric can hold: sqlx refuses it.
            (ParameterValue::Decimal(s("1e200000")), "decimal): "),
            (
                ParameterValue::RangeDecimal((Some((s("x"), Inclusive)), None)),
                "range-decimal): invalid",
            ),
            (
                ParameterValue::RangeDecimal((None, Some((s("inf"), Inclusive)))),
                "must be finite",
            ),
            (
                ParameterValue::ArrayDecimal(vec![Some(s("1")), None, Some(s("z"))]),
                "array-decimal): invalid",
            ),
        ];
        for (param, needle) in bad {
            let case = format!("{param:?}");
            match encode_params(vec![ParameterValue::DbNull, param]) {
                Err(Error::BadParameter(msg)) => {
                    assert!(msg.starts_with("parameter $2 ("), "{case}: {msg}");
                    assert!(msg.contains(needle), "{case}: {msg}");
                }
                Err(other) => panic!("{case}: {other:?}"),
                Ok(_) => panic!("{case}: accepted"),
            }
        }
    }

    #[test]
    fn the_signature_names_each_kind() {
        let params = vec![
            ParameterValue::Int32(1),
            ParameterValue::DbNull,
            ParameterValue::Str(String::new()),
        ];
        let encoded = encode_params(params).map_err(|e| format!("{e:?}"));
        assert_eq!(
            encoded.map(|e| (e.signature, e.types.len())),
            Ok(("int32,db-null,str".to_owned(), 3))
        );
    }
}
