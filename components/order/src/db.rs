//! The order service's statements. The schema is in `migrations/`; the
//! `_trellis_outbox` table is the host's (`outbox = true`), which relays each
//! row to the broker once the transaction that wrote it has committed.

use shop_api::ApiError;
use shop_api::db::{Db, DbError};
use spin_sdk::pg4::{DbValue, ParameterValue};

use crate::idempotency::Stored;
use crate::validate::NewOrder;

/// A stored order, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub product_name: String,
    pub amount: i64,
    pub status: String,
    /// RFC 3339 in UTC with a `Z`.
    pub created_at: String,
}

/// The columns every order query returns, in the order `order_from_row`
/// reads them.
const COLUMNS: &str = concat!(
    "id, user_id, product_name, amount, status, ",
    shop_api::rfc3339_utc!("created_at"),
    " AS created_at"
);

/// The order and its `order.created` event in one statement, so one cannot
/// exist without the other. The event's message id is the outbox's default (a
/// UUID stored with the row, so every relay attempt reuses it); `$4` is the
/// event's headers (`{"traceparent": ...}` or `{}`).
const CREATE: &str = concat!(
    "WITH created AS (
        INSERT INTO orders (user_id, product_name, amount)
        VALUES ($1, $2, $3)
        RETURNING id, user_id, product_name, amount, status, created_at
    ), event AS (
        INSERT INTO _trellis_outbox (routing_key, body, content_type, correlation_id, headers)
        SELECT 'order.created',
               convert_to(json_build_object('order_id', id, 'user_id', user_id,
                   'product_name', product_name, 'amount', amount)::text, 'UTF8'),
               'application/json',
               id::text,
               $4::jsonb
        FROM created
    )
    SELECT id, user_id, product_name, amount, status, ",
    shop_api::rfc3339_utc!("created_at"),
    " AS created_at FROM created"
);

/// Records a payment event's message id and applies it in one statement: an
/// id seen before (a redelivery) changes nothing, and neither does an event
/// for an order that is no longer pending (`paid` and `cancelled` are final).
const APPLY_PAYMENT: &str = "WITH first AS (
        INSERT INTO processed_messages (message_id, routing_key) VALUES ($1, $2)
        ON CONFLICT (message_id) DO NOTHING
        RETURNING message_id
    )
    UPDATE orders SET status = $3
    WHERE id = $4 AND status = 'pending' AND EXISTS (SELECT 1 FROM first)
    RETURNING id";

/// What `create_once` did.
pub enum Once {
    /// This request created the order; the answer is stored with its key.
    Created(Stored),
    /// A request with the same key committed first (this one waited for it).
    Existing(Stored),
}

/// The order service's database.
pub struct Orders(Db);

impl Orders {
    pub fn open() -> Result<Self, DbError> {
        Db::open("order").map(Orders)
    }

    pub fn get(&self, id: i64) -> Result<Option<Order>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM orders WHERE id = $1");
        let rows = self
            .0
            .query_as(&sql, &[ParameterValue::Int64(id)], order_from_row)?;
        Ok(rows.into_iter().next())
    }

    /// Every order of a user, by id.
    pub fn of_user(&self, user_id: i64) -> Result<Vec<Order>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM orders WHERE user_id = $1 ORDER BY id");
        self.0
            .query_as(&sql, &[ParameterValue::Int64(user_id)], order_from_row)
    }

    /// Creates the order with its `order.created` event.
    pub fn create(&self, order: &NewOrder, traceparent: Option<&str>) -> Result<Order, DbError> {
        create(&self.0, order, traceparent)
    }

    /// The first answer stored for an idempotency key, if any.
    pub fn stored(&self, key: &str) -> Result<Option<Stored>, ApiError> {
        stored(&self.0, key)
    }

    /// Creates the order once per key. In one transaction: claim the key
    /// (`ON CONFLICT DO NOTHING` waits for a concurrent claimer of the same
    /// key to commit or roll back), create the order and its event, store
    /// the answer `render` makes of it. If another request holds the key,
    /// its stored answer instead. Any failure rolls everything back, so the
    /// key can be retried: only a `201` is remembered.
    pub fn create_once(
        &self,
        key: &str,
        request_hash: &str,
        order: &NewOrder,
        traceparent: Option<&str>,
        render: impl FnOnce(&Order) -> (String, String),
    ) -> Result<Once, ApiError> {
        self.0.transaction(|db| {
            let claimed = db.query(
                "INSERT INTO idempotency_keys (key, request_hash) VALUES ($1, $2)
                 ON CONFLICT (key) DO NOTHING RETURNING key",
                &[
                    ParameterValue::Str(key.to_owned()),
                    ParameterValue::Str(request_hash.to_owned()),
                ],
            )?;
            if claimed.rows.is_empty() {
                // READ COMMITTED: this statement sees the row that won.
                return stored(db, key)?.map(Once::Existing).ok_or_else(|| {
                    eprintln!("order: key conflict without a stored row");
                    ApiError::Internal
                });
            }
            let created = create(db, order, traceparent)?;
            let (body, location) = render(&created);
            db.execute(
                "UPDATE idempotency_keys SET order_id = $2, response_body = $3, location = $4
                 WHERE key = $1",
                &[
                    ParameterValue::Str(key.to_owned()),
                    ParameterValue::Int64(created.id),
                    ParameterValue::Str(body.clone()),
                    ParameterValue::Str(location.clone()),
                ],
            )?;
            Ok(Once::Created(Stored {
                request_hash: request_hash.to_owned(),
                body,
                location,
            }))
        })
    }

    /// Applies a payment event once per message id; `true` if the order
    /// changed (it was pending).
    pub fn apply_payment(
        &self,
        message_id: &str,
        routing_key: &str,
        order_id: i64,
        status: &str,
    ) -> Result<bool, DbError> {
        let rows = self.0.query(
            APPLY_PAYMENT,
            &[
                ParameterValue::Str(message_id.to_owned()),
                ParameterValue::Str(routing_key.to_owned()),
                ParameterValue::Str(status.to_owned()),
                ParameterValue::Int64(order_id),
            ],
        )?;
        Ok(!rows.rows.is_empty())
    }
}

fn create(db: &Db, order: &NewOrder, traceparent: Option<&str>) -> Result<Order, DbError> {
    let headers = match traceparent {
        Some(traceparent) => serde_json::json!({ "traceparent": traceparent }),
        None => serde_json::json!({}),
    };
    let params = [
        ParameterValue::Int64(order.user_id),
        ParameterValue::Str(order.product_name.clone()),
        ParameterValue::Int64(order.amount),
        ParameterValue::Jsonb(headers.to_string().into_bytes()),
    ];
    db.insert_returning(CREATE, &params, order_from_row)
}

fn stored(db: &Db, key: &str) -> Result<Option<Stored>, ApiError> {
    let rows = db.query_as(
        "SELECT request_hash, response_body, location FROM idempotency_keys WHERE key = $1",
        &[ParameterValue::Str(key.to_owned())],
        |row| match row {
            // A committed row always has its answer (see the migration).
            [
                DbValue::Str(request_hash),
                DbValue::Str(body),
                DbValue::Str(location),
            ] => Some(Stored {
                request_hash: request_hash.clone(),
                body: body.clone(),
                location: location.clone(),
            }),
            _ => None,
        },
    )?;
    Ok(rows.into_iter().next())
}

/// A row of `COLUMNS`; `None` if the types are not what the query promises.
fn order_from_row(row: &[DbValue]) -> Option<Order> {
    match row {
        [
            DbValue::Int64(id),
            DbValue::Int64(user_id),
            DbValue::Str(product_name),
            DbValue::Int64(amount),
            DbValue::Str(status),
            DbValue::Str(created_at),
        ] => Some(Order {
            id: *id,
            user_id: *user_id,
            product_name: product_name.clone(),
            amount: *amount,
            status: status.clone(),
            created_at: created_at.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_only_in_the_promised_shape() {
        let row = [
            DbValue::Int64(3),
            DbValue::Int64(1),
            DbValue::Str("Tea".into()),
            DbValue::Int64(250),
            DbValue::Str("pending".into()),
            DbValue::Str("2025-01-02T03:04:05.000000Z".into()),
        ];
        assert_eq!(order_from_row(&row).map(|o| o.id), Some(3));
        assert_eq!(order_from_row(&row[..5]), None);
        let mut wrong = row.clone();
        wrong[3] = DbValue::Int32(250);
        assert_eq!(order_from_row(&wrong), None);
    }

    #[test]
    fn the_create_statement_returns_the_columns() {
        assert!(CREATE.contains("INSERT INTO _trellis_outbox"));
        assert!(CREATE.ends_with(r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at FROM created"#));
    }
}
