//! The payment table. The schema is in `migrations/`, applied by the host
//! before the component serves; connecting and how database errors map onto
//! the API are `shop_api::db`'s.

use shop_api::db::{Db, DbError};
use spin_sdk::pg4::{DbValue, ParameterValue};

/// A stored payment, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: i64,
    pub order_id: i64,
    pub amount: i64,
    /// `succeeded` or `failed`.
    pub status: String,
    /// Why it failed; `None` when it succeeded.
    pub reason: Option<String>,
    /// RFC 3339 in UTC with a `Z`.
    pub created_at: String,
}

/// A payment as the payment rule decided it, not yet stored.
#[derive(Debug, PartialEq, Eq)]
pub struct NewPayment {
    pub order_id: i64,
    pub amount: i64,
    pub status: &'static str,
    pub reason: Option<&'static str>,
}

/// The columns every query returns, in the order `payment_from_row` reads
/// them.
const COLUMNS: &str = concat!(
    "id, order_id, amount, status, reason, ",
    shop_api::rfc3339_utc!("created_at"),
    " AS created_at"
);

/// The payment service's database.
pub struct Payments(Db);

impl Payments {
    pub fn open() -> Result<Self, DbError> {
        Db::open("payment").map(Payments)
    }

    pub fn get(&self, id: i64) -> Result<Option<Payment>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM payments WHERE id = $1");
        let rows = self
            .0
            .query_as(&sql, &[ParameterValue::Int64(id)], payment_from_row)?;
        Ok(rows.into_iter().next())
    }

    /// The payments of an order (at most one), by id.
    pub fn of_order(&self, order_id: i64) -> Result<Vec<Payment>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM payments WHERE order_id = $1 ORDER BY id");
        self.0
            .query_as(&sql, &[ParameterValue::Int64(order_id)], payment_from_row)
    }

    /// Stores `payment` unless its order has one already; either way, the
    /// order's one payment. Two statements, not one: a statement's snapshot
    /// would not see a payment that a concurrent delivery of the same event
    /// committed while this `INSERT` waited for it, whereas a second
    /// statement does (READ COMMITTED).
    pub fn record(&self, payment: &NewPayment) -> Result<Payment, DbError> {
        let insert = format!(
            "INSERT INTO payments (order_id, amount, status, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT (order_id) DO NOTHING RETURNING {COLUMNS}"
        );
        let params = [
            ParameterValue::Int64(payment.order_id),
            ParameterValue::Int64(payment.amount),
            ParameterValue::Str(payment.status.to_owned()),
            match payment.reason {
                Some(reason) => ParameterValue::Str(reason.to_owned()),
                None => ParameterValue::DbNull,
            },
        ];
        if let Some(new) = self.0.query_as(&insert, &params, payment_from_row)?.pop() {
            return Ok(new);
        }
        self.of_order(payment.order_id)?.pop().ok_or_else(|| {
            eprintln!(
                "payment: order {} conflicts but has no payment",
                payment.order_id
            );
            DbError::Failed
        })
    }
}

/// A row of `COLUMNS`; `None` if the types are not what the query promises.
fn payment_from_row(row: &[DbValue]) -> Option<Payment> {
    let [
        DbValue::Int64(id),
        DbValue::Int64(order_id),
        DbValue::Int64(amount),
        DbValue::Str(status),
        reason,
        DbValue::Str(created_at),
    ] = row
    else {
        return None;
    };
    let reason = match reason {
        DbValue::Str(reason) => Some(reason.clone()),
        DbValue::DbNull => None,
        _ => return None,
    };
    Some(Payment {
        id: *id,
        order_id: *order_id,
        amount: *amount,
        status: status.clone(),
        reason,
        created_at: created_at.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(reason: DbValue) -> Vec<DbValue> {
        vec![
            DbValue::Int64(2),
            DbValue::Int64(7),
            DbValue::Int64(250_000),
            DbValue::Str("failed".into()),
            reason,
            DbValue::Str("2025-01-02T03:04:05.000000Z".into()),
        ]
    }

    #[test]
    fn rows_decode_only_in_the_promised_shape() {
        let failed = payment_from_row(&row(DbValue::Str("limit_exceeded".into()))).unwrap();
        assert_eq!(failed.reason.as_deref(), Some("limit_exceeded"));
        assert_eq!(
            payment_from_row(&row(DbValue::DbNull)).unwrap().reason,
            None
        );
        assert_eq!(payment_from_row(&row(DbValue::Int64(1))), None);
        assert_eq!(payment_from_row(&row(DbValue::DbNull)[..5]), None);
    }
}
