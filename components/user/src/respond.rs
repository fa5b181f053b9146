//! What goes back on the wire: the user JSON, pages, and the API's error
//! envelope `{"error": {"code", "message"}}`, always as application/json.

use serde_json::{Value, json};
use spin_sdk::http::Response;

use crate::db::User;

/// Every way a request can fail, one variant per row of the API's error table
/// that this service answers.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    NotFound(String),
    /// Carries the `Allow` header's value.
    MethodNotAllowed(&'static str),
    Conflict(String),
    PayloadTooLarge,
    Invalid(String),
    /// The database cannot be reached; clients should retry shortly.
    Unavailable,
    /// A bug or an unexpected database error. The details went to the log;
    /// the client learns nothing of them.
    Internal,
}

impl ApiError {
    pub fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::BadRequest(message) => (400, "bad_request", message),
            ApiError::NotFound(message) => (404, "not_found", message),
            ApiError::MethodNotAllowed(allow) => {
                let message = format!("allowed methods: {allow}");
                let mut response = error(405, "method_not_allowed", &message);
                response.set_header("allow", allow);
                return response;
            }
            ApiError::Conflict(message) => (409, "conflict", message),
            ApiError::PayloadTooLarge => (
                413,
                "payload_too_large",
                "the request body is over the limit".to_owned(),
            ),
            ApiError::Invalid(message) => (422, "invalid", message),
            ApiError::Unavailable => {
                let mut response = error(503, "unavailable", "the database is unavailable");
                response.set_header("retry-after", "1");
                return response;
            }
            ApiError::Internal => (500, "internal", "internal error".to_owned()),
        };
        error(status, code, &message)
    }
}

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

fn error(status: u16, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    )
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: &Response) -> Value {
        serde_json::from_slice(response.body()).unwrap()
    }

    fn header<'a>(response: &'a Response, name: &str) -> &'a str {
        response.header(name).and_then(|v| v.as_str()).unwrap()
    }

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

    #[test]
    fn errors_use_the_envelope() {
        let response = ApiError::MethodNotAllowed("GET, POST").into_response();
        assert_eq!(*response.status(), 405);
        assert_eq!(header(&response, "allow"), "GET, POST");
        assert_eq!(body(&response)["error"]["code"], "method_not_allowed");

        let response = ApiError::Unavailable.into_response();
        assert_eq!(*response.status(), 503);
        assert_eq!(header(&response, "retry-after"), "1");
        assert_eq!(header(&response, "content-type"), "application/json");

        let response = ApiError::Invalid("name is required".into()).into_response();
        assert_eq!(*response.status(), 422);
        assert_eq!(
            body(&response),
            json!({"error": {"code": "invalid", "message": "name is required"}})
        );
    }
}
