//! What goes back on the wire: the user JSON and pages, as application/json.
//! (The error envelope is `shop_api::ApiError`'s.)

use serde_json::{Value, json};
use shop_api::json_response;
use spin_sdk::http::Response;

use crate::db::User;

/// `201` with the new user and where it lives.
pub fn created(user: &User) -> Response {
    let mut response = json_response(201, &user_json(user));
    response.set_header("location", format!("/users/{}", user.id));
    response
}

pub fn user(user: &User) -> Response {
    json_response(200, &user_json(user))
}

/// One page of users; `next` is the `after` of the following page, if any.
pub fn page(users: &[User], next: Option<i64>) -> Response {
    let items: Vec<Value> = users.iter().map(user_json).collect();
    json_response(200, &json!({ "items": items, "next": next }))
}

fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "created_at": user.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_api::testing::{body, header};

    fn ann() -> User {
        User {
            id: 7,
            email: "ann@example.com".into(),
            name: "Ann".into(),
            created_at: "2025-01-02T03:04:05.000006Z".into(),
        }
    }

    #[test]
    fn created_has_location_and_the_user() {
        let response = created(&ann());
        assert_eq!(*response.status(), 201);
        assert_eq!(header(&response, "location"), "/users/7");
        assert_eq!(header(&response, "content-type"), "application/json");
        assert_eq!(
            body(&response),
            json!({"id": 7, "email": "ann@example.com", "name": "Ann",
                   "created_at": "2025-01-02T03:04:05.000006Z"})
        );
    }

    #[test]
    fn pages_have_items_and_next() {
        assert_eq!(body(&page(&[], None)), json!({"items": [], "next": null}));
        let page = body(&page(&[ann()], Some(7)));
        assert_eq!(page["next"], 7);
        assert_eq!(page["items"][0]["id"], 7);
    }
}
