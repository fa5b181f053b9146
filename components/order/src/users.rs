//! The user service, asked synchronously over HTTP: `GET {user_service}/users/{id}`,
//! where the `user_service` variable is e.g. `http://user.spin.internal`
//! (service chaining: the host calls the user component without a socket).

use shop_api::ApiError;
use spin_sdk::http::{Method, Request, Response, send};
use spin_sdk::variables;

/// What the user service said about a user id.
pub enum Lookup {
    /// `200`, with the user JSON as the user service wrote it.
    Found(Vec<u8>),
    /// `404`.
    Missing,
}

/// What the client is told when the user service cannot answer.
const UNAVAILABLE: ApiError = ApiError::Unavailable("user service");

/// Asks the user service for user `id`. Anything but `200` or `404`, and any
/// failure to get an answer, is `503`: the user service cannot answer now.
/// `traceparent` is passed on, so the call belongs to the client's trace.
pub async fn lookup(id: i64, traceparent: Option<&str>) -> Result<Lookup, ApiError> {
    let base = variables::get("user_service").map_err(|err| {
        // A deployment bug, not an outage.
        eprintln!("order: the `user_service` variable is not available: {err}");
        ApiError::Internal
    })?;
    let mut request = Request::builder();
    request
        .method(Method::Get)
        .uri(format!("{}/users/{id}", base.trim_end_matches('/')))
        .header("accept", "application/json");
    if let Some(traceparent) = traceparent {
        request.header("traceparent", traceparent);
    }
    let response: Response = send(request.build()).await.map_err(|err| {
        eprintln!("order: the user service did not answer: {err}");
        UNAVAILABLE
    })?;
    match *response.status() {
        200 => Ok(Lookup::Found(response.into_body())),
        404 => Ok(Lookup::Missing),
        status => {
            eprintln!("order: the user service answered {status} for user {id}");
            Err(UNAVAILABLE)
        }
    }
}
