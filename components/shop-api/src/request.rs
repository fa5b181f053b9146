//! Reading an `IncomingRequest`. The services take the raw request rather than
//! the SDK's buffered `Request`: the body must stay unread until the route and
//! the method are known to be right, so a `404`/`405` is answered without
//! touching it (the host answers `413` for an oversized body only once a
//! component tried to read it).

use serde_json::Value;
use spin_sdk::http::IncomingRequest;

use crate::ApiError;

/// The request's path and query (the query without its `?`, `""` if none).
pub fn path_and_query(req: &IncomingRequest) -> (String, String) {
    let path_and_query = req.path_with_query().unwrap_or_else(|| "/".to_owned());
    match path_and_query.split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (path_and_query, String::new()),
    }
}

/// Every value of the header `name` (case-insensitive), in order.
pub fn header_values(req: &IncomingRequest, name: &str) -> Vec<Vec<u8>> {
    req.headers().get(name)
}

/// The first value of the header `name`, if there is one and it is UTF-8.
pub fn header(req: &IncomingRequest, name: &str) -> Option<String> {
    header_values(req, name)
        .into_iter()
        .next()
        .and_then(|value| String::from_utf8(value).ok())
}

/// Reads the whole body and parses it as JSON, whatever its content-type
/// says: `400` if it is not JSON.
pub async fn read_json(req: IncomingRequest) -> Result<Value, ApiError> {
    // On Trellis a failed read means the body went over the limit; the host
    // replaces whatever we answer with its own 413 then. Any other failure
    // (the client went away) has no one left to read the answer.
    let body = req
        .into_body()
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    serde_json::from_slice(&body)
        .map_err(|err| ApiError::BadRequest(format!("the body is not valid JSON: {err}")))
}
