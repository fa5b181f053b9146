//! What a request names: the resource behind its path, and the integers in its
//! path and query. Everything here is pure, so it is unit-tested natively.

use crate::respond::ApiError;

/// The resources the user service owns. `GET /users/{id}/orders` is the order
/// service's, routed to it by a more specific route, so it never arrives here.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/users`
    Users,
    /// `/users/{id}`, with the id segment still unparsed: a malformed id is a
    /// `400`, which the API checks only after the method (`405`).
    User(&'a str),
}

/// The route a path (without its query) names, or `None` for a `404`.
/// One trailing slash is ignored, so `/users/` is `/users` and `/users/7/` is
/// `/users/7`; an empty id segment (`/users//`) names nothing.
pub fn parse(path: &str) -> Option<Route<'_>> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let rest = path.strip_prefix("/users")?;
    if rest.is_empty() {
        return Some(Route::Users);
    }
    let id = rest.strip_prefix('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(Route::User(id))
}

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
fn query_param(query: &str, name: &str) -> Option<String> {
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
    fn routes_ignore_one_trailing_slash() {
        assert_eq!(parse("/users"), Some(Route::Users));
        assert_eq!(parse("/users/"), Some(Route::Users));
        assert_eq!(parse("/users/7"), Some(Route::User("7")));
        assert_eq!(parse("/users/7/"), Some(Route::User("7")));
        assert_eq!(parse("/users/abc"), Some(Route::User("abc")));
        for path in [
            "/",
            "/usersx",
            "/users//",
            "/users/7//",
            "/users/7/orders",
            "/user",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }

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
}
