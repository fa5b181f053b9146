//! `Idempotency-Key` on `POST /orders`: a repeat with the same key and the
//! same body (equal as JSON values) answers the first `201` again, byte for
//! byte; the same key with another body is `409 conflict`.
//!
//! Bodies are compared by the SHA-256 of a canonical serialization: object
//! keys sorted, no whitespace, strings and numbers as `serde_json` writes them
//! after parsing (so `{"a":1, "b":"\u0041"}` equals `{"b":"A","a":1}`).
//!
//! How concurrent repeats create one order is `db::Orders::create_once`'s.

use serde_json::Value;
use sha2::{Digest, Sha256};
use shop_api::ApiError;

/// The first `201` given for a key, as stored with it.
#[derive(Debug, PartialEq, Eq)]
pub struct Stored {
    pub request_hash: String,
    /// The body exactly as it was sent.
    pub body: String,
    pub location: String,
}

/// What a repeat of a stored key gets: the stored answer, or `409`.
pub fn replay(stored: Stored, request_hash: &str) -> Result<Stored, ApiError> {
    if stored.request_hash == request_hash {
        Ok(stored)
    } else {
        Err(ApiError::Conflict(
            "this Idempotency-Key was used with another body".to_owned(),
        ))
    }
}

/// The hex SHA-256 of `body`'s canonical serialization.
pub fn request_hash(body: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(body, &mut canonical);
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Sorts object keys itself rather than relying on `serde_json`'s map being
/// a `BTreeMap`: a dependency enabling `preserve_order` would change that.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(fields) => {
            let mut fields: Vec<_> = fields.iter().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (name, value)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(name.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(text: &str) -> String {
        request_hash(&serde_json::from_str(text).unwrap())
    }

    #[test]
    fn equal_json_values_hash_alike() {
        let a = hash(r#"{"user_id": 1, "product_name": "Tea", "amount": 5}"#);
        assert_eq!(a.len(), 64);
        assert_eq!(
            a,
            hash(r#"{ "amount":5,"product_name":"T\u0065a",  "user_id" :1 }"#)
        );
        assert_eq!(
            hash(r#"{"x": {"b": [1, {"d": 1, "c": 2}], "a": null}}"#),
            hash(r#"{"x":{"a":null,"b":[1,{"c":2,"d":1}]}}"#)
        );
    }

    #[test]
    fn different_values_hash_differently() {
        let a = hash(r#"{"user_id": 1, "product_name": "Tea", "amount": 5}"#);
        for other in [
            r#"{"user_id": 1, "product_name": "Tea", "amount": 6}"#,
            r#"{"user_id": 1, "product_name": "Tea ", "amount": 5}"#,
            r#"{"user_id": 1, "product_name": "Tea", "amount": 5, "x": null}"#,
            r#"{"user_id": "1", "product_name": "Tea", "amount": 5}"#,
            r#"[1, "Tea", 5]"#,
        ] {
            assert_ne!(a, hash(other), "{other}");
        }
        assert_ne!(hash("[1, 2]"), hash("[2, 1]"));
        // Keys and values cannot be confused by their punctuation.
        assert_ne!(hash(r#"{"a,b": 1}"#), hash(r#"{"a": 1, "b": 1}"#));
    }

    #[test]
    fn replays_only_the_same_body() {
        let stored = || Stored {
            request_hash: "h".into(),
            body: "{}".into(),
            location: "/orders/1".into(),
        };
        assert_eq!(replay(stored(), "h"), Ok(stored()));
        assert!(matches!(replay(stored(), "g"), Err(ApiError::Conflict(_))));
    }
}
