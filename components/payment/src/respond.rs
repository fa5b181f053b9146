//! What goes back on the wire: the payment JSON and lists, as
//! application/json. (The error envelope is `shop_api::ApiError`'s.)

use serde_json::{Value, json};
use shop_api::json_response;
use spin_sdk::http::Response;

use crate::db::Payment;

pub fn payment(payment: &Payment) -> Response {
    json_response(200, &payment_json(payment))
}

/// `{"items": [payment...]}`.
pub fn items(payments: &[Payment]) -> Response {
    let items: Vec<Value> = payments.iter().map(payment_json).collect();
    json_response(200, &json!({ "items": items }))
}

fn payment_json(payment: &Payment) -> Value {
    json!({
        "id": payment.id,
        "order_id": payment.order_id,
        "amount": payment.amount,
        "status": payment.status,
        "reason": payment.reason,
        "created_at": payment.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_api::testing::body;

    #[test]
    fn payments_show_every_field_and_a_null_reason() {
        let paid = Payment {
            id: 2,
            order_id: 7,
            amount: 250,
            status: "succeeded".into(),
            reason: None,
            created_at: "2025-01-02T03:04:05.000006Z".into(),
        };
        assert_eq!(
            body(&payment(&paid)),
            json!({"id": 2, "order_id": 7, "amount": 250, "status": "succeeded",
                   "reason": null, "created_at": "2025-01-02T03:04:05.000006Z"})
        );
        let failed = Payment {
            status: "failed".into(),
            reason: Some("limit_exceeded".into()),
            ..paid
        };
        let list = body(&items(&[failed]));
        assert_eq!(list["items"][0]["reason"], "limit_exceeded");
        assert_eq!(body(&items(&[])), json!({"items": []}));
    }
}
