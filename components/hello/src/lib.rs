//! The benchmark guest: the smallest useful Spin HTTP component.
//!
//! It takes the request as the raw `IncomingRequest` rather than
//! `spin_sdk::http::Request` so the SDK does not read (and buffer) the request
//! body first: the benchmark measures the host, not body copying in the guest.

use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::http_component;

#[http_component]
fn hello(_req: IncomingRequest) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body("Hello, world!\n")
        .build()
}
