//! The integers in a request's path and query: the path-id rule
//! `^[1-9][0-9]*$` within a signed 64-bit integer, which integer query
//! parameters follow too. Every failure is a `400 bad_request`.

use crate::ApiError;

/// A path id: `^[1-9][0-9]*$` within a signed 64-bit integer, else `400`.
pub fn path_id(text: &str) -> Result<i64, ApiError> {
    positive_int(text)
        .ok_or_else(|| ApiError::BadRequest(format!("the id must be a positive integer: {text:?}")))
}

/// The integer query parameter `name` within `min..=max`, `None` when absent.
/// It follows the path-id rule (no sign, no leading zeros, fits i64), except
/// that a lone `0` is a number too: `after=0` means "from the start".
pub fn query_int(query: &str, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    let Some(text) = query_param(query, name) else {
        return Ok(None);
    };
    let value = if text == "0" {
        Some(0)
    } else {
        positive_int(&text)
    };
    match value {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::BadRequest(format!(
            "`{name}` must be an integer from {min} to {max}"
        ))),
    }
}

/// A required query parameter that names a resource by id (`?user_id=7`):
/// present and following the path-id rule, else `400`.
pub fn query_id(query: &str, name: &str) -> Result<i64, ApiError> {
    query_int(query, name, 1, i64::MAX)?
        .ok_or_else(|| ApiError::BadRequest(format!("the query parameter `{name}` is required")))
}

/// `^[1-9][0-9]*$` parsed as i64; `None` if it does not match or overflows.
fn positive_int(text: &str) -> Option<i64> {
    let mut bytes = text.bytes();
    let first_ok = bytes.next().is_some_and(|b| matches!(b, b'1'..=b'9'));
    // `parse` alone would accept a leading `+`, hence the digit check.
    if !first_ok || !bytes.all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The value of the first `name=value` pair in a query string, decoded. A
/// parameter without `=` has the empty value (which no integer rule accepts).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space and `%XX` a
/// byte. A malformed escape is kept as it is; it can only fail the integer
/// rules afterwards, which is the `400` it deserves.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_follow_the_rule() {
        assert_eq!(path_id("1").ok(), Some(1));
        assert_eq!(path_id("9223372036854775807").ok(), Some(i64::MAX));
        for bad in [
            "0",
            "01",
            "-1",
            "+1",
            "abc",
            "1.0",
            "",
            " 1",
            "9223372036854775808",
        ] {
            assert!(path_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn query_integers() {
        let limit = |q| query_int(q, "limit", 1, 100).ok();
        assert_eq!(limit(""), Some(None));
        assert_eq!(limit("x=1"), Some(None));
        assert_eq!(limit("limit=1"), Some(Some(1)));
        assert_eq!(limit("limit=100"), Some(Some(100)));
        assert_eq!(limit("a=b&limit=%35"), Some(Some(5)));
        assert_eq!(limit("limit=3&limit=x"), Some(Some(3)));
        for bad in [
            "limit=0",
            "limit=101",
            "limit=",
            "limit",
            "limit=05",
            "limit=-1",
            "limit=1.5",
        ] {
            assert_eq!(limit(bad), None, "{bad}");
        }
        let after = |q| query_int(q, "after", 0, i64::MAX).ok();
        assert_eq!(after("after=0"), Some(Some(0)));
        assert_eq!(after("after=9223372036854775807"), Some(Some(i64::MAX)));
        for bad in [
            "after=00",
            "after=-1",
            "after=9223372036854775808",
            "after=x",
            "after=+3",
        ] {
            assert_eq!(after(bad), None, "{bad}");
        }
    }

    #[test]
    fn required_query_ids() {
        let id = |q| query_id(q, "user_id").ok();
        assert_eq!(id("user_id=7"), Some(7));
        assert_eq!(id("x=1&user_id=9223372036854775807&y"), Some(i64::MAX));
        for bad in [
            "",
            "user_id",
            "user_id=",
            "user_id=0",
            "user_id=07",
            "user_id=-7",
            "user_id=9223372036854775808",
            "userid=7",
        ] {
            assert_eq!(id(bad), None, "{bad}");
        }
    }
}
