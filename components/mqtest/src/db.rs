//! The `deliveries` table (see `migrations/`) on the managed database behind
//! the `db_url` variable.

use serde_json::{Map, Value};
use spin_sdk::pg4::{Connection, DbValue, ParameterValue};
use spin_sdk::variables;

use crate::bindings::trellis::messaging::types::Delivery;

fn open() -> Result<Connection, String> {
    let url = variables::get("db_url").map_err(|err| format!("db_url: {err}"))?;
    Connection::open(&url).map_err(|err| format!("connect: {err:?}"))
}

/// Writes one row for `delivery`.
pub fn record(delivery: &Delivery) -> Result<(), String> {
    let message = &delivery.message;
    let text = |value: &Option<String>| match value {
        Some(value) => ParameterValue::Str(value.clone()),
        None => ParameterValue::DbNull,
    };
    // Postgres text cannot hold U+0000.
    let body = String::from_utf8_lossy(&message.body).replace('\0', "\u{fffd}");
    let headers: Map<String, Value> = message
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    open()?
        .execute(
            "INSERT INTO deliveries (message_id, routing_key, queue, attempt, redelivered,
                 body, content_type, correlation_id, headers)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                text(&message.message_id),
                ParameterValue::Str(message.routing_key.clone()),
                ParameterValue::Str(delivery.queue.clone()),
                ParameterValue::Int32(i32::try_from(delivery.attempt).unwrap_or(i32::MAX)),
                ParameterValue::Boolean(delivery.redelivered),
                ParameterValue::Str(body),
                text(&message.content_type),
                text(&message.correlation_id),
                ParameterValue::Jsonb(Value::Object(headers).to_string().into_bytes()),
            ],
        )
        .map(|_| ())
        .map_err(|err| format!("insert: {err:?}"))
}

/// Every row, by id, as JSON objects of all the columns (`headers` as an
/// object, `at` as RFC 3339 UTC).
pub fn all() -> Result<Value, String> {
    let rows = open()?
        .query(
            r#"SELECT id, message_id, routing_key, queue, attempt, redelivered, body,
                   content_type, correlation_id, headers,
                   to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at
               FROM deliveries ORDER BY id"#,
            &[],
        )
        .map_err(|err| format!("select: {err:?}"))?;
    let rows = rows
        .rows
        .iter()
        .map(|row| {
            let object: Map<String, Value> = rows
                .columns
                .iter()
                .zip(row)
                .map(|(column, value)| (column.name.clone(), json(value)))
                .collect();
            Value::Object(object)
        })
        .collect();
    Ok(Value::Array(rows))
}

/// The JSON for one of the column types above.
fn json(value: &DbValue) -> Value {
    match value {
        DbValue::Int64(n) => Value::from(*n),
        DbValue::Int32(n) => Value::from(*n),
        DbValue::Boolean(b) => Value::Bool(*b),
        DbValue::Str(s) => Value::String(s.clone()),
        DbValue::Jsonb(bytes) => serde_json::from_slice(bytes).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}
