//! The handler of the payment events (`[[trigger.amqp]]` with binding keys
//! `payment.succeeded` and `payment.failed`): the `trellis:messaging/handler`
//! export, beside the HTTP export of `lib.rs`.
//!
//! `payment.succeeded` moves a pending order to `paid`, `payment.failed` to
//! `cancelled`. Delivery is at least once, so the message id is recorded in
//! the same statement as the change (`db::APPLY_PAYMENT`): a redelivery, or
//! a late event for an order that is no longer pending, changes nothing.

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        path: "../../wit",
        world: "trellis:messaging/amqp-handler",
        runtime_path: "spin_sdk::wit_bindgen::rt",
    });
}

use serde_json::Value;
use shop_api::fields::{integer, object};

use self::bindings::exports::trellis::messaging::handler::Guest;
use self::bindings::trellis::messaging::types::{Delivery, Disposition};
use crate::db::Orders;

struct Handler;

bindings::export!(Handler with_types_in self::bindings);

impl Guest for Handler {
    fn handle(delivery: Delivery) -> Disposition {
        let message = &delivery.message;
        let Some(message_id) = message.message_id.as_deref() else {
            eprintln!("order: a delivery without a message id");
            return Disposition::Reject;
        };
        let event = match parse(&message.routing_key, &message.body) {
            Ok(event) => event,
            Err(why) => {
                eprintln!("order: rejecting message {message_id}: {why}");
                return Disposition::Reject;
            }
        };
        // A database that is down (or any other database failure) may pass:
        // the broker redelivers later, and the message id keeps it idempotent.
        let applied = Orders::open().and_then(|orders| {
            orders.apply_payment(
                message_id,
                &message.routing_key,
                event.order_id,
                event.status,
            )
        });
        match applied {
            Ok(true) => Disposition::Ack,
            Ok(false) => {
                eprintln!(
                    "order: {} for order {} changed nothing (a duplicate, a late event or an unknown order)",
                    message.routing_key, event.order_id
                );
                Disposition::Ack
            }
            Err(_) => Disposition::Retry,
        }
    }
}

/// A payment event, reduced to what the order service does with it.
#[derive(Debug, PartialEq, Eq)]
struct PaymentEvent {
    order_id: i64,
    /// The order's new status.
    status: &'static str,
}

/// The event a message carries; the error says why it can never be handled.
/// The body is `{"payment_id", "order_id", "amount"[, "reason"]}`.
fn parse(routing_key: &str, body: &[u8]) -> Result<PaymentEvent, String> {
    let status = match routing_key {
        "payment.succeeded" => "paid",
        "payment.failed" => "cancelled",
        other => return Err(format!("unknown routing key {other:?}")),
    };
    let body: Value =
        serde_json::from_slice(body).map_err(|err| format!("the body is not JSON: {err}"))?;
    let fields = object(&body)?;
    integer(fields.get("payment_id"), "payment_id", (1, i64::MAX))?;
    let order_id = integer(fields.get("order_id"), "order_id", (1, i64::MAX))?;
    integer(fields.get("amount"), "amount", (1, i64::MAX))?;
    Ok(PaymentEvent { order_id, status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_events_parse() {
        let body = br#"{"payment_id": 4, "order_id": 7, "amount": 250}"#;
        assert_eq!(
            parse("payment.succeeded", body),
            Ok(PaymentEvent {
                order_id: 7,
                status: "paid"
            })
        );
        let failed =
            br#"{"payment_id": 4, "order_id": 7, "amount": 250000, "reason": "limit_exceeded"}"#;
        assert_eq!(
            parse("payment.failed", failed),
            Ok(PaymentEvent {
                order_id: 7,
                status: "cancelled"
            })
        );
    }

    #[test]
    fn malformed_events_are_errors() {
        let good = br#"{"payment_id": 4, "order_id": 7, "amount": 250}"#;
        assert!(parse("payment.refunded", good).is_err());
        assert!(parse("order.created", good).is_err());
        for bad in [
            &b"not json"[..],
            b"[]",
            br#"{"order_id": 7, "amount": 250}"#,
            br#"{"payment_id": 4, "amount": 250}"#,
            br#"{"payment_id": 4, "order_id": "7", "amount": 250}"#,
            br#"{"payment_id": 4, "order_id": 0, "amount": 250}"#,
            br#"{"payment_id": 4, "order_id": 7, "amount": 2.5}"#,
        ] {
            assert!(
                parse("payment.succeeded", bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
