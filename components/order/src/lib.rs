//! The order service: `POST /orders` (idempotent, with its `order.created`
//! event through the outbox), `GET /orders/{id}`, `GET /orders?user_id=N` and
//! `GET /users/{id}/orders`, as specified by the Orders section of the shop
//! API; and the handler of `payment.succeeded`/`payment.failed`, which moves
//! an order to `paid`/`cancelled`.
//!
//! Layout:
//! - `lib.rs` (here): the HTTP entry point and the dispatch, which fixes the
//!   API's order of checks: route (404), method (405), body size (413, the
//!   host's), JSON syntax and headers (400), fields (422 invalid), the user
//!   (422 unknown_user), then the database.
//! - `route`: which resource a path names.
//! - `validate`: the rules for a new order's fields and its `Idempotency-Key`.
//! - `idempotency`: how repeats are recognised and answered.
//! - `users`: the user service, asked over HTTP.
//! - `db`: the statements, including the outbox and the idempotent consumer.
//! - `respond`: the JSON shapes.
//! - `events`: the `trellis:messaging/handler` export for payment events.
//!
//! The error envelope, the path-id and query rules, the field rules and
//! database access are the `shop-api` crate's, shared with the other services.

mod db;
mod events;
mod idempotency;
mod respond;
mod route;
mod users;
mod validate;

use shop_api::ApiError;
use shop_api::params::{path_id, query_id};
use shop_api::request::{header, header_values, path_and_query, read_json};
use spin_sdk::http::{IncomingRequest, Method, Response};
use spin_sdk::http_component;

use crate::db::{Once, Orders};
use crate::route::Route;
use crate::users::Lookup;

/// Takes the raw `IncomingRequest`, so the body stays unread until the route
/// and the method are known to be right (see `shop_api::request`). An error
/// goes out as the API's envelope (`ApiError` is an `IntoResponse`).
#[http_component]
async fn handle(req: IncomingRequest) -> Result<Response, ApiError> {
    let (path, query) = path_and_query(&req);
    let Some(route) = route::parse(&path) else {
        return Err(ApiError::NotFound("no such route".to_owned()));
    };
    match (route, req.method()) {
        (Route::Orders, Method::Get) => list(&query),
        (Route::Orders, Method::Post) => create(req).await,
        (Route::Order(id), Method::Get) => get(id),
        (Route::UserOrders(id), Method::Get) => {
            let traceparent = header(&req, "traceparent");
            user_orders(id, traceparent.as_deref()).await
        }
        (Route::Orders, _) => Err(ApiError::MethodNotAllowed("GET, POST")),
        (Route::Order(_) | Route::UserOrders(_), _) => Err(ApiError::MethodNotAllowed("GET")),
    }
}

/// `POST /orders`. With an `Idempotency-Key`, a stored answer is looked up
/// before the user service is asked, so a replay needs no user check.
async fn create(req: IncomingRequest) -> Result<Response, ApiError> {
    let key = header_values(&req, "idempotency-key");
    let traceparent = header(&req, "traceparent");
    // The body is read first: its size (413) is checked before headers (400).
    let json = read_json(req).await?;
    let key = validate::idempotency_key(key).map_err(ApiError::BadRequest)?;
    let order = validate::new_order(&json).map_err(ApiError::Invalid)?;
    let key = key.map(|key| (key, idempotency::request_hash(&json)));

    if let Some((key, hash)) = &key {
        // The connection is let go before the user service is asked: holding
        // it across that call could starve the user service of connections.
        if let Some(stored) = Orders::open()?.stored(key)? {
            return replayed(stored, hash);
        }
    }

    match users::lookup(order.user_id, traceparent.as_deref()).await? {
        Lookup::Found(_) => {}
        Lookup::Missing => {
            return Err(ApiError::UnknownUser(format!(
                "no user with id {}",
                order.user_id
            )));
        }
    }

    let orders = Orders::open()?;
    let Some((key, hash)) = key else {
        let (body, location) =
            respond::created_parts(&orders.create(&order, traceparent.as_deref())?);
        return Ok(respond::created(body, location));
    };
    match orders.create_once(
        &key,
        &hash,
        &order,
        traceparent.as_deref(),
        respond::created_parts,
    )? {
        Once::Created(stored) => Ok(respond::created(stored.body, stored.location)),
        // A concurrent repeat won the key; this one waited for it.
        Once::Existing(stored) => replayed(stored, &hash),
    }
}

/// The stored `201` for a repeat with the same body, else `409`.
fn replayed(stored: idempotency::Stored, hash: &str) -> Result<Response, ApiError> {
    let stored = idempotency::replay(stored, hash)?;
    Ok(respond::created(stored.body, stored.location))
}

/// `GET /orders/{id}`.
fn get(id: &str) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    match Orders::open()?.get(id)? {
        Some(order) => Ok(respond::order(&order)),
        None => Err(ApiError::NotFound(format!("no order with id {id}"))),
    }
}

/// `GET /orders?user_id=N`: empty for an unknown user, whom it does not ask
/// the user service about.
fn list(query: &str) -> Result<Response, ApiError> {
    let user_id = query_id(query, "user_id")?;
    Ok(respond::items(&Orders::open()?.of_user(user_id)?))
}

/// `GET /users/{id}/orders`: the user from the user service, as it wrote it,
/// and the user's orders; `404` when the user service has no such user.
async fn user_orders(id: &str, traceparent: Option<&str>) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let user = match users::lookup(id, traceparent).await? {
        Lookup::Found(body) => serde_json::from_slice(&body).map_err(|err| {
            eprintln!("order: the user service answered 200 with non-JSON: {err}");
            ApiError::Internal
        })?,
        Lookup::Missing => return Err(ApiError::NotFound(format!("no user with id {id}"))),
    };
    let orders = Orders::open()?.of_user(id)?;
    Ok(respond::user_orders(user, &orders))
}
