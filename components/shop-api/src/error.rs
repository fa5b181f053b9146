//! The API's error envelope `{"error": {"code", "message"}}`, always as
//! application/json, with the headers some statuses carry (`Allow`,
//! `Retry-After`). [`ApiError`] is a Spin `IntoResponse`, so a service's
//! `#[http_component]` returns `Result<Response, ApiError>` and each error
//! goes out as its envelope.

use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Response};

/// Every way a request can fail, one variant per row of the API's error table
/// that the services answer themselves.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiError {
    BadRequest(String),
    NotFound(String),
    /// Carries the `Allow` header's value.
    MethodNotAllowed(&'static str),
    Conflict(String),
    /// On Trellis the host answers the `413` itself; this only says that
    /// reading the body failed, so the service stops there.
    PayloadTooLarge,
    Invalid(String),
    /// An order names a user that does not exist.
    UnknownUser(String),
    /// A dependency cannot be reached; clients should retry shortly. Carries
    /// what is down, e.g. `"database"` or `"user service"`.
    Unavailable(&'static str),
    /// A bug, an unexpected database error, or nonsense from another
    /// service. The details went to the log; the client learns nothing.
    Internal,
}

/// How long clients are asked to wait before retrying a `503`, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Conflict(_) => 409,
            ApiError::PayloadTooLarge => 413,
            ApiError::Invalid(_) | ApiError::UnknownUser(_) => 422,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal => 500,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (code, message) = match self {
            ApiError::BadRequest(message) => ("bad_request", message),
            ApiError::NotFound(message) => ("not_found", message),
            ApiError::MethodNotAllowed(allow) => {
                let mut response = error(
                    status,
                    "method_not_allowed",
                    &format!("allowed methods: {allow}"),
                );
                response.set_header("allow", allow);
                return response;
            }
            ApiError::Conflict(message) => ("conflict", message),
            ApiError::PayloadTooLarge => (
                "payload_too_large",
                "the request body is over the limit".to_owned(),
            ),
            ApiError::Invalid(message) => ("invalid", message),
            ApiError::UnknownUser(message) => ("unknown_user", message),
            ApiError::Unavailable(what) => {
                let mut response =
                    error(status, "unavailable", &format!("the {what} is unavailable"));
                response.set_header("retry-after", RETRY_AFTER_SECONDS);
                return response;
            }
            ApiError::Internal => ("internal", "internal error".to_owned()),
        };
        error(status, code, &message)
    }
}

fn error(status: u16, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    )
}

/// `status` with `body` serialized, as application/json.
pub fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{body, header};

    #[test]
    fn errors_use_the_envelope() {
        let response = ApiError::MethodNotAllowed("GET, POST").into_response();
        assert_eq!(*response.status(), 405);
        assert_eq!(header(&response, "allow"), "GET, POST");
        assert_eq!(body(&response)["error"]["code"], "method_not_allowed");

        let response = ApiError::Unavailable("database").into_response();
        assert_eq!(*response.status(), 503);
        assert_eq!(header(&response, "retry-after"), "1");
        assert_eq!(header(&response, "content-type"), "application/json");
        assert_eq!(
            body(&response),
            json!({"error": {"code": "unavailable", "message": "the database is unavailable"}})
        );

        let response = ApiError::Invalid("name is required".into()).into_response();
        assert_eq!(*response.status(), 422);
        assert_eq!(
            body(&response),
            json!({"error": {"code": "invalid", "message": "name is required"}})
        );

        let response = ApiError::UnknownUser("no user 5".into()).into_response();
        assert_eq!(*response.status(), 422);
        assert_eq!(body(&response)["error"]["code"], "unknown_user");

        let response = ApiError::Internal.into_response();
        assert_eq!(*response.status(), 500);
        assert_eq!(body(&response)["error"]["code"], "internal");
    }
}
