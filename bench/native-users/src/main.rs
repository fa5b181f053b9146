//! The native baseline of `bench/users.sh`: the user service's `GET /users/{id}`
//! written directly against sqlx, the same query, the same JSON.
//!
//! Usage: native-users <listen addr> <postgres url> <schema>

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const QUERY: &str = "SELECT id, email, name, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
     FROM users WHERE id = $1";

async fn user(State(pool): State<Arc<PgPool>>, Path(id): Path<i64>) -> Response {
    let row: Result<Option<(i64, String, String, String)>, _> =
        sqlx::query_as(QUERY).bind(id).fetch_optional(&*pool).await;
    match row {
        Ok(Some((id, email, name, created_at))) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"id": id, "email": email, "name": name, "created_at": created_at})
                .to_string(),
        )
            .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(url), Some(schema)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: native-users <listen addr> <postgres url> <schema>");
    };
    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(32)
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await?;
    let app = axum::Router::new()
        .route("/users/{id}", get(user))
        .with_state(Arc::new(pool));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("Serving http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
