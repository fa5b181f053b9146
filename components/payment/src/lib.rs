//! The payment service: `GET /payments/{id}` and `GET /payments?order_id=N`,
//! as specified by the Payments section of the shop API; and the handler of
//! `order.created`, which makes each order's one payment by the payment rule
//! and publishes `payment.succeeded` or `payment.failed`.
//!
//! Layout:
//! - `lib.rs` (here): the HTTP entry point and the dispatch, in the API's
//!   order of checks: route (404), method (405), ids and query (400), then
//!   the database.
//! - `db`: the statements, including the idempotent `record`.
//! - `respond`: the JSON shapes.
//! - `events`: the `trellis:messaging/handler` export for `order.created`,
//!   the payment rule, and the publishing of its outcome.
//!
//! Routing, the error envelope, the path-id and query rules and database
//! access are the `shop-api` crate's, shared with the other services.

mod db;
mod events;
mod respond;

use shop_api::ApiError;
use shop_api::params::{path_id, query_id};
use shop_api::request::path_and_query;
use shop_api::route::{Resource, resource};
use spin_sdk::http::{IncomingRequest, Method, Response};
use spin_sdk::http_component;

use crate::db::Payments;

/// Takes the raw `IncomingRequest`: no route here reads a body, which stays
/// unread (see `shop_api::request`). An error goes out as the API's envelope
/// (`ApiError` is an `IntoResponse`).
#[http_component]
fn handle(req: IncomingRequest) -> Result<Response, ApiError> {
    let (path, query) = path_and_query(&req);
    let Some(route) = resource(&path, "/payments") else {
        return Err(ApiError::NotFound("no such route".to_owned()));
    };
    match (route, req.method()) {
        (Resource::Collection, Method::Get) => list(&query),
        (Resource::Item(id), Method::Get) => get(id),
        (_, _) => Err(ApiError::MethodNotAllowed("GET")),
    }
}

/// `GET /payments/{id}`.
fn get(id: &str) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    match Payments::open()?.get(id)? {
        Some(payment) => Ok(respond::payment(&payment)),
        None => Err(ApiError::NotFound(format!("no payment with id {id}"))),
    }
}

/// `GET /payments?order_id=N`: empty for an order without a payment (yet).
fn list(query: &str) -> Result<Response, ApiError> {
    let order_id = query_id(query, "order_id")?;
    Ok(respond::items(&Payments::open()?.of_order(order_id)?))
}
