//! The user service: `POST /users`, `GET /users/{id}` and `GET /users` (keyset
//! pages) over Postgres, as specified by the Users section of the shop API.
//!
//! Layout:
//! - `lib.rs` (here): the entry point and the dispatch, which fixes the API's
//!   order of checks: route (404), method (405), body size (413, the host's),
//!   JSON syntax (400), fields (422), then the database.
//! - `validate`: the rules for a new user's fields (the 422s).
//! - `db`: the three queries.
//! - `respond`: the JSON shapes.
//!
//! Routing, the error envelope, the path-id and query rules, the field rules
//! and how database errors map onto the API are the `shop-api` crate's,
//! shared with the order and payment services.

mod db;
mod respond;
mod validate;

use shop_api::ApiError;
use shop_api::params::{path_id, query_int};
use shop_api::request::{path_and_query, read_json};
use shop_api::route::{Resource, resource};
use spin_sdk::http::{IncomingRequest, Method, Response};
use spin_sdk::http_component;

use crate::db::Users;

/// The most users one page may hold, and the page size when none is asked for.
const MAX_LIMIT: i64 = 100;
const DEFAULT_LIMIT: i64 = 50;

/// Takes the raw `IncomingRequest`, so the body stays unread until the route
/// and the method are known to be right (see `shop_api::request`). An error
/// goes out as the API's envelope (`ApiError` is an `IntoResponse`).
#[http_component]
async fn handle(req: IncomingRequest) -> Result<Response, ApiError> {
    let (path, query) = path_and_query(&req);
    // `GET /users/{id}/orders` is the order service's, routed to it by a
    // more specific route, so it never arrives here (and would be a 404).
    let Some(route) = resource(&path, "/users") else {
        return Err(ApiError::NotFound("no such route".to_owned()));
    };
    match (route, req.method()) {
        (Resource::Collection, Method::Get) => list(&query),
        (Resource::Collection, Method::Post) => create(req).await,
        (Resource::Item(id), Method::Get) => get(id),
        (Resource::Collection, _) => Err(ApiError::MethodNotAllowed("GET, POST")),
        (Resource::Item(_), _) => Err(ApiError::MethodNotAllowed("GET")),
    }
}

/// `POST /users`.
async fn create(req: IncomingRequest) -> Result<Response, ApiError> {
    let json = read_json(req).await?;
    let new_user = validate::new_user(&json).map_err(ApiError::Invalid)?;

    let user = Users::open()?.insert(&new_user)?;
    Ok(respond::created(&user))
}

/// `GET /users/{id}`.
fn get(id: &str) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    match Users::open()?.get(id)? {
        Some(user) => Ok(respond::user(&user)),
        None => Err(ApiError::NotFound(format!("no user with id {id}"))),
    }
}

/// `GET /users?limit=N&after=ID`: keyset pagination on the id. One row more
/// than the page is fetched only to learn whether another page follows, so
/// `next` is null exactly when nothing does.
fn list(query: &str) -> Result<Response, ApiError> {
    let limit = query_int(query, "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let after = query_int(query, "after", 0, i64::MAX)?.unwrap_or(0);

    let mut users = Users::open()?.list(after, limit + 1)?;
    let next = if users.len() as i64 > limit {
        users.truncate(limit as usize);
        users.last().map(|user| user.id)
    } else {
        None
    };
    Ok(respond::page(&users, next))
}
