//! The rules for a new user's fields, each failure a `422 invalid` whose
//! message names the field (or `body`). Checked in the order of the fields in
//! the API (`email`, then `name`); the first broken rule is reported.

use serde_json::Value;
use shop_api::fields::{object, text};

/// A user as a client asked to create it: trimmed and within the rules.
#[derive(Debug, PartialEq, Eq)]
pub struct NewUser {
    pub email: String,
    pub name: String,
}

/// Lengths are in Unicode scalar values (Rust `char`s), not bytes; see
/// `shop_api::fields::text`.
const EMAIL_LEN: (usize, usize) = (3, 254);
const NAME_LEN: (usize, usize) = (1, 200);

/// Validates a parsed JSON body; fields other than `email` and `name` are
/// ignored. The error is the message for the `422`.
pub fn new_user(body: &Value) -> Result<NewUser, String> {
    let fields = object(body)?;
    let email = text(fields.get("email"), "email", EMAIL_LEN)?;
    email_shape(email)?;
    let name = text(fields.get("name"), "name", NAME_LEN)?;
    Ok(NewUser {
        email: email.to_owned(),
        name: name.to_owned(),
    })
}

/// No whitespace anywhere, and exactly one `@` with text on both sides. That
/// is all the API promises; deliverability is not the service's to judge.
fn email_shape(email: &str) -> Result<(), String> {
    if email.chars().any(char::is_whitespace) {
        return Err("email must not contain whitespace".to_owned());
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(())
        }
        _ => Err("email must contain exactly one @ with text on both sides".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(body: Value) -> Result<NewUser, String> {
        new_user(&body)
    }

    fn fails_on(body: Value, field: &str) {
        match check(body.clone()) {
            Err(message) => assert!(message.starts_with(field), "{body}: {message}"),
            Ok(user) => panic!("{body} was accepted: {user:?}"),
        }
    }

    #[test]
    fn accepts_and_trims() {
        let user = check(json!({"email": "  a@b \n", "name": "\t Ann ", "extra": [1]})).unwrap();
        assert_eq!(
            user,
            NewUser {
                email: "a@b".into(),
                name: "Ann".into()
            }
        );
        assert!(check(json!({"email": "x@y", "name": "5"})).is_ok());
    }

    #[test]
    fn body_must_be_an_object() {
        for body in [json!([]), json!("x"), json!(1), json!(null), json!(true)] {
            fails_on(body, "body");
        }
    }

    #[test]
    fn fields_are_required_strings() {
        fails_on(json!({"name": "Ann"}), "email");
        fails_on(json!({"email": "a@b"}), "name");
        fails_on(json!({"email": 5, "name": "Ann"}), "email");
        fails_on(json!({"email": null, "name": "Ann"}), "email");
        fails_on(json!({"email": "a@b", "name": 5}), "name");
        fails_on(json!({"email": "a@b", "name": ["Ann"]}), "name");
        // email is checked first when both are wrong.
        fails_on(json!({}), "email");
    }

    #[test]
    fn lengths_count_scalar_values_after_trimming() {
        let name = |n: usize| "é".repeat(n);
        assert!(check(json!({"email": "a@b", "name": name(200)})).is_ok());
        fails_on(json!({"email": "a@b", "name": name(201)}), "name");
        fails_on(json!({"email": "a@b", "name": "   "}), "name");
        let email = |n: usize| format!("a@{}", "é".repeat(n - 2));
        assert!(check(json!({"email": email(254), "name": "A"})).is_ok());
        fails_on(json!({"email": email(255), "name": "A"}), "email");
        fails_on(json!({"email": " a@ ", "name": "A"}), "email");
    }

    #[test]
    fn email_shape_rules() {
        for bad in [
            "ab",
            "abc",
            "@bc",
            "ab@",
            "a@b@c",
            "a b@c",
            "a@b\tc",
            "a@b\u{a0}c",
        ] {
            fails_on(json!({"email": bad, "name": "A"}), "email");
        }
    }

    #[test]
    fn nul_is_invalid() {
        fails_on(json!({"email": "a\u{0}@b", "name": "A"}), "email");
        fails_on(json!({"email": "a@b", "name": "A\u{0}"}), "name");
    }
}
