//! `numeric` both ways, exactly: the WIT carries decimals as text.
//!
//! Parameters go through `BigDecimal` (sqlx encodes it), plus the special
//! values Postgres has and `BigDecimal` lacks, so that whatever a query
//! returns can be sent back. Results are decoded here from the binary format
//! rather than through `BigDecimal`, which loses the display scale (`1.50`
//! would come back as `1.5000`) and prints large values with exponents.

use std::str::FromStr;

use bigdecimal::BigDecimal;
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::{Postgres, Type};

use super::from_pg::Reader;

/// A `numeric`, with the special values Postgres has and `BigDecimal` lacks,
/// so that whatever a query returns can be sent back.
pub enum Numeric {
    Finite(BigDecimal),
    NaN,
    Infinity,
    NegInfinity,
}

impl Numeric {
    /// Accepts what Postgres's `numeric` input does, less its odd corners:
    /// surrounding spaces, an exponent, NaN and (±)Infinity/inf in any case.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let special = |names: &[&str]| names.iter().any(|n| t.eq_ignore_ascii_case(n));
        Ok(if special(&["nan"]) {
            Self::NaN
        } else if special(&["infinity", "+infinity", "inf", "+inf"]) {
            Self::Infinity
        } else if special(&["-infinity", "-inf"]) {
            Self::NegInfinity
        } else {
            Self::Finite(
                BigDecimal::from_str(t).map_err(|e| format!("invalid decimal {text:?}: {e}"))?,
            )
        })
    }
}

impl Type<Postgres> for Numeric {
    fn type_info() -> PgTypeInfo {
        <BigDecimal as Type<Postgres>>::type_info()
    }
}

impl PgHasArrayType for Numeric {
    fn array_type_info() -> PgTypeInfo {
        <BigDecimal as PgHasArrayType>::array_type_info()
    }
}

impl Encode<'_, Postgres> for Numeric {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        // Binary numeric header: ndigits, weight, sign, display scale. The
        // special values are a sign with no digits (Postgres's numeric.c).
        let sign: u16 = match self {
            Self::Finite(d) => return <BigDecimal as Encode<Postgres>>::encode_by_ref(d, buf),
            Self::NaN => 0xC000,
            Self::Infinity => 0xD000,
            Self::NegInfinity => 0xF000,
        };
        buf.extend_from_slice(&[0, 0, 0, 0]);
        buf.extend_from_slice(&sign.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        Ok(IsNull::No)
    }
}

/// Binary `numeric` -> its exact decimal text, as Postgres's `numeric_out`
/// writes it: base-10000 digits, weight (of the first digit), sign, scale.
pub fn to_text(bytes: &[u8]) -> Result<String, String> {
    let mut r = Reader(bytes);
    let (ndigits, weight, sign, dscale) = (r.i16()?, r.i16()?, r.i16()? as u16, r.i16()?);
    let mut out = match sign {
        0x0000 => String::new(),
        0x4000 => "-".to_owned(),
        0xC000 => return Ok("NaN".to_owned()),
        0xD000 => return Ok("Infinity".to_owned()),
        0xF000 => return Ok("-Infinity".to_owned()),
        _ => return Err(format!("bad numeric sign {sign:#x}")),
    };
    let digits = (0..ndigits.max(0))
        .map(|_| r.i16())
        .collect::<Result<Vec<i16>, String>>()?;
    let digit = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let weight = i32::from(weight);
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&digit(0).to_string());
        for i in 1..=weight {
            out.push_str(&format!("{:04}", digit(i)));
        }
    }
    let dscale = usize::try_from(dscale).unwrap_or(0);
    if dscale > 0 {
        let mut frac = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary form: ndigits, weight, sign, dscale, then base-10000 digits.
    fn binary(weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let ndigits = i16::try_from(digits.len()).unwrap();
        let mut out = [ndigits, weight, sign as i16, dscale]
            .map(i16::to_be_bytes)
            .concat();
        out.extend(digits.iter().flat_map(|d| d.to_be_bytes()));
        out
    }

    #[test]
    fn binary_numerics_read_as_postgres_prints_them() {
        let cases = [
            (binary(0, 0, 2, &[1, 5000]), "1.50"),
            (binary(-1, 0x4000, 6, &[1, 2300]), "-0.000123"),
            (binary(1, 0, 0, &[1]), "10000"),
            (binary(0, 0, 0, &[]), "0"),
            (binary(0, 0, 3, &[]), "0.000"),
            (binary(2, 0, 1, &[12, 3456, 7890, 1000]), "1234567890.1"),
            (binary(0, 0xC000, 0, &[]), "NaN"),
            (binary(0, 0xF000, 0, &[]), "-Infinity"),
        ];
        for (bytes, text) in cases {
            assert_eq!(to_text(&bytes).as_deref(), Ok(text));
        }
        assert!(to_text(&binary(0, 0x1234, 0, &[])).is_err());
        assert!(to_text(&[0, 2, 0, 0]).is_err(), "truncated");
    }

    #[test]
    fn parse_takes_what_postgres_takes() {
        for ok in ["1", " -1.50 ", "1e-3", "+7", "NaN", "infinity", "-Inf"] {
            assert!(Numeric::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1,5", "abc", "1.2.3", "--1"] {
            assert!(Numeric::parse(bad).is_err(), "{bad}");
        }
    }
}
