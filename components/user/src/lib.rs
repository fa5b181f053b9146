//! The user service: `POST /users`, `GET /users/{id}` and `GET /users` (keyset
//! pages) over Postgres, as specified by the Users section of the shop API.
//!
//! Layout:
//! - `lib.rs` (here): the entry point and the dispatch, which fixes the API's
//!   order of checks: route (404), method (405), body size (413, the host's),
//!   JSON syntax (400), fields (422), then the database.
//! - `route`: which resource a path names, and parsing of path ids and query
//!   parameters (the 400s).
//! - `validate`: the rules for a new user's fields (the 422s).
//! - `db`: the three queries, and how database errors map onto the API.
//! - `respond`: the JSON shapes and the error envelope.

mod db;
mod respond;
mod route;
mod validate;

use serde_json::Value;
use spin_sdk::http::{IncomingRequest, Method, Response};
use spin_sdk::http_component;

use crate::db::Db;
use crate::respond::ApiError;
use crate::route::Route;

/// The most users one page may hold, and the page size when none is asked for.
const MAX_LIMIT: i64 = 100;
const DEFAULT_LIMIT: i64 = 50;

/// Takes the raw `IncomingRequest` rather than the SDK's buffered `Request`:
/// the body must stay unread until the route and the method are known to be
/// right, so a `404`/`405` is answered without touching it (the host answers
/// `413` for an oversized body only once a component tried to read it).
#[http_component]
async fn handle(req: IncomingRequest) -> Response {
    match dispatch(req).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn dispatch(req: IncomingRequest) -> Result<Response, ApiError> {
    let path_and_query = req.path_with_query().unwrap_or_else(|| "/".to_owned());
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query.as_str(), ""));

    let Some(route) = route::parse(path) else {
        return Err(ApiError::NotFound("no such route".to_owned()));
    };
    match (route, req.method()) {
        (Route::Users, Method::Get) => list(query),
        (Route::Users, Method::Post) => create(req).await,
        (Route::User(id), Method::Get) => get(id),
        (Route::Users, _) => Err(ApiError::MethodNotAllowed("GET, POST")),
        (Route::User(_), _) => Err(ApiError::MethodNotAllowed("GET")),
    }
}

/// `POST /users`.
async fn create(req: IncomingRequest) -> Result<Response, ApiError> {
    // On Trellis a failed read means the body went over the limit; the host
    // replaces whatever we answer with its own 413 then. Any other failure
    // (the client went away) has no one left to read the answer.
    let body = req
        .into_body()
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    // The body is JSON whatever its content-type says.
    let json: Value = serde_json::from_slice(&body)
        .map_err(|err| ApiError::BadRequest(format!("the body is not valid JSON: {err}")))?;
    let new_user = validate::new_user(&json).map_err(ApiError::Invalid)?;

    let user = Db::open()?.insert(&new_user)?;
    Ok(respond::created(&user))
}

/// `GET /users/{id}`.
fn get(id: &str) -> Result<Response, ApiError> {
    let id = route::path_id(id)?;
    match Db::open()?.get(id)? {
        Some(user) => Ok(respond::user(&user)),
        None => Err(ApiError::NotFound(format!("no user with id {id}"))),
    }
}

/// `GET /users?limit=N&after=ID`: keyset pagination on the id. One row more
/// than the page is fetched only to learn whether another page follows, so
/// `next` is null exactly when nothing does.
fn list(query: &str) -> Result<Response, ApiError> {
    let limit = route::query_int(query, "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let after = route::query_int(query, "after", 0, i64::MAX)?.unwrap_or(0);

    let mut users = Db::open()?.list(after, limit + 1)?;
    let next = if users.len() as i64 > limit {
        users.truncate(limit as usize);
        users.last().map(|user| user.id)
    } else {
        None
    };
    Ok(respond::page(&users, next))
}
