//! For the services' unit tests: what a `Response` says, read the way the
//! tests compare it. These panic on a body that is not JSON or a header that
//! is missing, so they exist only in test builds: here under `cfg(test)`,
//! in a service through its dev-dependency on this crate with the `testing`
//! feature. A guest never contains them.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure here is the calling test's failure"
)]

use serde_json::Value;
use spin_sdk::http::Response;

/// The response's body, parsed as JSON.
pub fn body(response: &Response) -> Value {
    serde_json::from_slice(response.body()).unwrap()
}

/// The value of the header `name`, which must be there and be text.
pub fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response.header(name).and_then(|v| v.as_str()).unwrap()
}
