//! Rules for the fields of a JSON body. Each failure is the message of a
//! `422 invalid`, and names the field (or `body`), which it starts with.

use serde_json::{Map, Value};

/// The body's fields; anything but a JSON object is invalid.
pub fn object(body: &Value) -> Result<&Map<String, Value>, String> {
    match body {
        Value::Object(fields) => Ok(fields),
        _ => Err("body must be a JSON object".to_owned()),
    }
}

/// A required text field, trimmed, without U+0000 (Postgres `text` cannot hold
/// it, and it is never meant), within `min..=max` characters (Unicode scalar
/// values, not bytes). Only a JSON string is text: `5` is not, nor is `null`.
pub fn text<'a>(
    value: Option<&'a Value>,
    field: &str,
    (min, max): (usize, usize),
) -> Result<&'a str, String> {
    let value = match value {
        None => return Err(format!("{field} is required")),
        Some(Value::String(value)) => value.trim(),
        Some(_) => return Err(format!("{field} must be a string")),
    };
    if value.contains('\0') {
        return Err(format!("{field} must not contain U+0000"));
    }
    let len = value.chars().count();
    if !(min..=max).contains(&len) {
        return Err(format!(
            "{field} must be {min} to {max} characters long (it is {len} after trimming)"
        ));
    }
    Ok(value)
}

/// A required integer field within `min..=max`. Only a JSON number written
/// without a fraction or exponent is an integer: `5.0`, `5e0` and `"5"` are not.
pub fn integer(value: Option<&Value>, field: &str, (min, max): (i64, i64)) -> Result<i64, String> {
    let number = match value {
        None => return Err(format!("{field} is required")),
        Some(Value::Number(number)) if number.is_i64() || number.is_u64() => number,
        Some(_) => return Err(format!("{field} must be an integer")),
    };
    // A u64 beyond i64 is an integer too, just out of every range we allow.
    match number.as_i64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{field} must be an integer from {min} to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn starts_with<T: std::fmt::Debug>(result: Result<T, String>, field: &str) {
        match result {
            Err(message) => assert!(message.starts_with(field), "{message}"),
            Ok(value) => panic!("{field}: {value:?} was accepted"),
        }
    }

    #[test]
    fn bodies_are_objects() {
        assert!(object(&json!({})).is_ok());
        for body in [json!([]), json!("x"), json!(1), json!(null), json!(true)] {
            starts_with(object(&body), "body");
        }
    }

    #[test]
    fn text_is_trimmed_and_counted_in_scalar_values() {
        let name = json!("  Ann \n");
        assert_eq!(text(Some(&name), "name", (1, 200)), Ok("Ann"));
        let long = json!("é".repeat(200));
        assert!(text(Some(&long), "name", (1, 200)).is_ok());
        let too_long = json!("é".repeat(201));
        starts_with(text(Some(&too_long), "name", (1, 200)), "name");
        starts_with(text(Some(&json!("  ")), "name", (1, 200)), "name");
        starts_with(text(Some(&json!("a\u{0}b")), "name", (1, 200)), "name");
        starts_with(text(None, "name", (1, 200)), "name");
        for bad in [json!(5), json!(null), json!(["x"]), json!({"x": 1})] {
            starts_with(text(Some(&bad), "name", (1, 200)), "name");
        }
    }

    #[test]
    fn integers_are_integers_in_range() {
        let range = (1, 100);
        assert_eq!(integer(Some(&json!(1)), "amount", range), Ok(1));
        assert_eq!(integer(Some(&json!(100)), "amount", range), Ok(100));
        let huge: Value = serde_json::from_str("18446744073709551615").unwrap();
        let bad = [
            json!(0),
            json!(101),
            json!(-1),
            json!(5.0),
            json!(1.5),
            json!("5"),
            json!(null),
            json!(true),
            json!([5]),
            serde_json::from_str("5e0").unwrap(),
            serde_json::from_str("5.0").unwrap(),
            huge,
        ];
        for value in bad {
            starts_with(integer(Some(&value), "amount", range), "amount");
        }
        starts_with(integer(None, "amount", range), "amount");
        assert_eq!(
            integer(Some(&json!(i64::MAX)), "id", (1, i64::MAX)),
            Ok(i64::MAX)
        );
    }
}
