//! The messaging test guest: drives `trellis:messaging` for the end-to-end
//! tests. It exports both an HTTP handler and the messaging handler.
//!
//! - `POST .../publish/<routing-key>`: publishes the request body through
//!   `trellis:messaging/publisher`, with the request's `content-type`,
//!   `message-id` and `correlation-id` headers, and each `x-h-<name>` header
//!   as the application header `<name>`. `204` when the broker confirmed,
//!   else `{"error": "<variant>", "message"}` with 403 (`not-permitted`), 400
//!   (`invalid`) or 503 (`unavailable`, `rejected`).
//! - `GET .../deliveries`: every delivery the handler recorded, by id, as a
//!   JSON array of rows with all their columns.
//! - the messaging handler: see [`handler`].
//!
//! Paths are matched by their ending, so any route prefix works.

mod db;
mod handler;

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        path: "../../wit",
        world: "trellis:messaging/amqp-handler",
        runtime_path: "spin_sdk::wit_bindgen::rt",
    });
}

use serde_json::{Value, json};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

use crate::bindings::trellis::messaging::publisher::publish;
use crate::bindings::trellis::messaging::types::{Error, Message};
use crate::handler::Handler;

bindings::export!(Handler with_types_in bindings);

/// Request headers named `x-h-<name>` become application headers `<name>`.
const HEADER_PREFIX: &str = "x-h-";

#[http_component]
fn handle(req: Request) -> Response {
    let path = req.path().trim_end_matches('/');
    if let Some((_, key)) = path.split_once("/publish/") {
        return match req.method() {
            Method::Post => publish_body(&req, key),
            _ => json_response(405, &json!({ "error": "use POST" })),
        };
    }
    if path.ends_with("/deliveries") {
        return match (req.method(), db::all()) {
            (Method::Get, Ok(rows)) => json_response(200, &rows),
            (Method::Get, Err(err)) => json_response(500, &json!({ "error": err })),
            _ => json_response(405, &json!({ "error": "use GET" })),
        };
    }
    json_response(404, &json!({ "error": "mqtest: no such endpoint" }))
}

/// `POST /publish/<routing-key>`.
fn publish_body(req: &Request, routing_key: &str) -> Response {
    let header = |name: &str| {
        req.header(name)
            .and_then(|value| value.as_str())
            .map(str::to_owned)
    };
    let headers = req
        .headers()
        .filter_map(|(name, value)| {
            let name = name.to_ascii_lowercase();
            let name = name.strip_prefix(HEADER_PREFIX)?;
            Some((name.to_owned(), value.as_str()?.to_owned()))
        })
        .collect();
    let message = Message {
        routing_key: routing_key.to_owned(),
        body: req.body().to_vec(),
        content_type: header("content-type"),
        message_id: header("message-id"),
        correlation_id: header("correlation-id"),
        headers,
    };
    let (status, variant, text) = match publish(&message) {
        Ok(()) => return Response::new(204, ()),
        Err(Error::NotPermitted(text)) => (403, "not-permitted", text),
        Err(Error::Invalid(text)) => (400, "invalid", text),
        Err(Error::Unavailable(text)) => (503, "unavailable", text),
        Err(Error::Rejected(text)) => (503, "rejected", text),
    };
    json_response(status, &json!({ "error": variant, "message": text }))
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}
