//! The rules for a new order: its fields (each failure a `422 invalid` whose
//! message names the field, checked in the API's order `user_id`,
//! `product_name`, `amount`) and its `Idempotency-Key` header (a `400`).

use serde_json::Value;
use shop_api::fields::{integer, object, text};

/// An order as a client asked to create it: trimmed and within the rules.
#[derive(Debug, PartialEq, Eq)]
pub struct NewOrder {
    pub user_id: i64,
    pub product_name: String,
    pub amount: i64,
}

const USER_ID: (i64, i64) = (1, i64::MAX);
/// In Unicode scalar values, after trimming.
const PRODUCT_NAME_LEN: (usize, usize) = (1, 200);
/// In minor units (cents).
const AMOUNT: (i64, i64) = (1, 100_000_000);
/// In Unicode scalar values.
const KEY_LEN: (usize, usize) = (1, 255);

/// Validates a parsed JSON body; other fields are ignored. The error is the
/// message for the `422`.
pub fn new_order(body: &Value) -> Result<NewOrder, String> {
    let fields = object(body)?;
    let user_id = integer(fields.get("user_id"), "user_id", USER_ID)?;
    let product_name = text(fields.get("product_name"), "product_name", PRODUCT_NAME_LEN)?;
    let amount = integer(fields.get("amount"), "amount", AMOUNT)?;
    Ok(NewOrder {
        user_id,
        product_name: product_name.to_owned(),
        amount,
    })
}

/// The `Idempotency-Key` from the header's values: none, or exactly one of
/// 1..255 characters. The error is the message for the `400`.
pub fn idempotency_key(values: Vec<Vec<u8>>) -> Result<Option<String>, String> {
    let value = match <[Vec<u8>; 1]>::try_from(values) {
        Ok([value]) => value,
        Err(values) if values.is_empty() => return Ok(None),
        Err(_) => return Err("only one Idempotency-Key header may be sent".to_owned()),
    };
    let key = String::from_utf8(value)
        .map_err(|_| "the Idempotency-Key header must be UTF-8 text".to_owned())?;
    let (min, max) = KEY_LEN;
    let len = key.chars().count();
    if !(min..=max).contains(&len) {
        return Err(format!(
            "the Idempotency-Key header must be {min} to {max} characters long (it is {len})"
        ));
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fails_on(body: Value, field: &str) {
        match new_order(&body) {
            Err(message) => assert!(message.starts_with(field), "{body}: {message}"),
            Ok(order) => panic!("{body} was accepted: {order:?}"),
        }
    }

    fn good() -> Value {
        json!({"user_id": 1, "product_name": "Tea", "amount": 250})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut body = good();
        body[field] = value;
        body
    }

    #[test]
    fn accepts_and_trims() {
        let body = json!({"user_id": 7, "product_name": " \tGreen tea\n", "amount": 1, "x": [1]});
        assert_eq!(
            new_order(&body),
            Ok(NewOrder {
                user_id: 7,
                product_name: "Green tea".into(),
                amount: 1
            })
        );
        assert!(new_order(&with("amount", json!(100_000_000))).is_ok());
        assert!(new_order(&with("user_id", json!(i64::MAX))).is_ok());
        assert!(new_order(&with("product_name", json!("é".repeat(200)))).is_ok());
    }

    #[test]
    fn fields_break_rules() {
        for body in [json!([]), json!("x"), json!(null)] {
            fails_on(body, "body");
        }
        fails_on(json!({"product_name": "Tea", "amount": 1}), "user_id");
        fails_on(json!({"user_id": 1, "amount": 1}), "product_name");
        fails_on(json!({"user_id": 1, "product_name": "Tea"}), "amount");
        // user_id is checked first when everything is wrong.
        fails_on(json!({}), "user_id");
        for bad in [json!(0), json!(-1), json!(5.0), json!("5"), json!(null)] {
            fails_on(with("user_id", bad), "user_id");
        }
        for bad in [
            json!(0),
            json!(100_000_001),
            json!(5.0),
            json!("5"),
            json!(1.5),
        ] {
            fails_on(with("amount", bad), "amount");
        }
        let five_point_oh: Value =
            serde_json::from_str(r#"{"user_id": 1, "product_name": "T", "amount": 5.0}"#).unwrap();
        fails_on(five_point_oh, "amount");
        for bad in [
            json!(""),
            json!("   "),
            json!(5),
            json!("é".repeat(201)),
            json!("a\u{0}b"),
        ] {
            fails_on(with("product_name", bad), "product_name");
        }
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(idempotency_key(vec![]), Ok(None));
        assert_eq!(idempotency_key(vec![b"k".to_vec()]), Ok(Some("k".into())));
        let longest = "é".repeat(255).into_bytes();
        assert!(idempotency_key(vec![longest]).is_ok());
        for bad in [
            vec![vec![]],
            vec!["é".repeat(256).into_bytes()],
            vec![vec![0xff]],
            vec![b"a".to_vec(), b"b".to_vec()],
        ] {
            assert!(idempotency_key(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
