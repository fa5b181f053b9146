//! Responses the host answers itself, in the shop's error envelope:
//! `{"error": {"code": "...", "message": "..."}}`.

use http::{HeaderValue, Response, StatusCode, header};
use wasmtime_wasi_http::WasiBody;

use crate::capabilities::outbound_http::full_body;

/// Seconds a client should wait before retrying a `503`.
const RETRY_AFTER_SECS: &str = "1";

/// Whole seconds to put in `Retry-After` for `wait`: rounded up, at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// An error the host answers on a component's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    BadRequest(String),
    /// No acceptable credential; the message says what is wrong, the
    /// challenge goes in `WWW-Authenticate`.
    Unauthorized(String, Option<&'static str>),
    NotFound(String),
    /// The route exists, but not for this method; carries the `Allow` value.
    MethodNotAllowed(&'static str),
    PayloadTooLarge(u64),
    Internal,
    Unavailable(String),
    Timeout,
    /// Over the tenant's limits; retry after this many seconds.
    TooManyRequests(String, u64),
}

impl HostError {
    /// The answer to a request over its tenant's limits.
    pub fn over_quota(refused: crate::platform::quota::Refused) -> Self {
        use crate::platform::quota::Refused;
        match refused {
            Refused::Rate(wait) => HostError::TooManyRequests(
                "over the tenant's request rate; retry later".to_owned(),
                retry_after_secs(wait),
            ),
            Refused::Concurrency => HostError::TooManyRequests(
                "the tenant has as many requests running as it may; retry later".to_owned(),
                1,
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            HostError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HostError::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            HostError::NotFound(_) => StatusCode::NOT_FOUND,
            HostError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HostError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HostError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            HostError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HostError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            HostError::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            HostError::BadRequest(_) => "bad_request",
            HostError::Unauthorized(..) => "unauthorized",
            HostError::NotFound(_) => "not_found",
            HostError::MethodNotAllowed(_) => "method_not_allowed",
            HostError::PayloadTooLarge(_) => "payload_too_large",
            HostError::Internal => "internal",
            HostError::Unavailable(_) => "unavailable",
            HostError::Timeout => "timeout",
            HostError::TooManyRequests(..) => "rate_limited",
        }
    }

    fn message(&self) -> String {
        match self {
            HostError::BadRequest(msg)
            | HostError::NotFound(msg)
            | HostError::Unavailable(msg)
            | HostError::TooManyRequests(msg, _)
            | HostError::Unauthorized(msg, _) => msg.clone(),
            HostError::MethodNotAllowed(allow) => format!("this route allows only {allow}"),
            HostError::PayloadTooLarge(limit) => {
                format!("request body is larger than the limit of {limit} bytes")
            }
            // No internals leak: the log has the component and the trap.
            HostError::Internal => "internal error".to_string(),
            HostError::Timeout => "the component did not answer within its deadline".to_string(),
        }
    }

    pub fn into_response(self) -> Response<WasiBody> {
        let body = serde_json::json!({"error": {"code": self.code(), "message": self.message()}});
        let mut response = Response::new(full_body(body.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if matches!(self, HostError::Unavailable(_)) {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if let HostError::MethodNotAllowed(allow) = self {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let HostError::Unauthorized(_, Some(challenge)) = self {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let HostError::TooManyRequests(_, secs) = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

/// A JSON response with any status (health endpoints).
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<WasiBody> {
    let mut response = Response::new(full_body(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
