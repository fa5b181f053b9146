//! The handler of `order.created` (`[[trigger.amqp]]` with binding key
//! `order.created`): the `trellis:messaging/handler` export, beside the HTTP
//! export of `lib.rs`.
//!
//! Exactly one payment per order, by the payment rule (`amount <= 100000`
//! succeeds, a larger one fails with `limit_exceeded`), then its outcome is
//! published as `payment.succeeded` or `payment.failed`. Delivery is at
//! least once, so a redelivery finds the payment made the first time
//! (`db::Payments::record`) and publishes the same event again, with the same
//! message id, which the order service deduplicates on. The message is acked
//! only once the broker has confirmed the outcome: a failed publish is a
//! `retry`, whose redelivery publishes again.

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        path: "../../wit",
        world: "trellis:messaging/amqp-handler",
        runtime_path: "spin_sdk::wit_bindgen::rt",
    });
}

use serde_json::{Value, json};
use shop_api::fields::{integer, object};

use self::bindings::exports::trellis::messaging::handler::Guest;
use self::bindings::trellis::messaging::publisher::publish;
use self::bindings::trellis::messaging::types::{Delivery, Disposition, Message};
use crate::db::{NewPayment, Payment, Payments};

/// The largest amount that is paid; a larger one fails.
const LIMIT: i64 = 100_000;
/// An order's amount, as the order service allows it.
const AMOUNT: (i64, i64) = (1, 100_000_000);

struct Handler;

bindings::export!(Handler with_types_in self::bindings);

impl Guest for Handler {
    fn handle(delivery: Delivery) -> Disposition {
        let message = &delivery.message;
        let id = message.message_id.as_deref().unwrap_or("(none)");
        let payment = match parse(&message.routing_key, &message.body) {
            Ok(payment) => payment,
            Err(why) => {
                eprintln!("payment: rejecting message {id}: {why}");
                return Disposition::Reject;
            }
        };
        // A database that is down (or any other database failure) may pass:
        // the broker redelivers later.
        let Ok(payment) = Payments::open().and_then(|payments| payments.record(&payment)) else {
            return Disposition::Retry;
        };
        let outcome = outcome(&payment, header(&message.headers, "traceparent"));
        match publish(&outcome) {
            Ok(()) => Disposition::Ack,
            Err(err) => {
                eprintln!(
                    "payment: publishing {} for order {} failed: {err:?}",
                    outcome.routing_key, payment.order_id
                );
                Disposition::Retry
            }
        }
    }
}

/// The payment an `order.created` event asks for, by the payment rule; the
/// error says why the message can never be handled. The body is
/// `{"order_id", "user_id", "product_name", "amount"}`, of which only the
/// order and the amount matter here.
fn parse(routing_key: &str, body: &[u8]) -> Result<NewPayment, String> {
    if routing_key != "order.created" {
        return Err(format!("unknown routing key {routing_key:?}"));
    }
    let body: Value =
        serde_json::from_slice(body).map_err(|err| format!("the body is not JSON: {err}"))?;
    let fields = object(&body)?;
    let order_id = integer(fields.get("order_id"), "order_id", (1, i64::MAX))?;
    let amount = integer(fields.get("amount"), "amount", AMOUNT)?;
    let (status, reason) = if amount <= LIMIT {
        ("succeeded", None)
    } else {
        ("failed", Some("limit_exceeded"))
    };
    Ok(NewPayment {
        order_id,
        amount,
        status,
        reason,
    })
}

/// The event that tells a payment's outcome. Everything in it comes from the
/// stored payment, so every delivery of the same `order.created` publishes
/// the same message, with the same id.
fn outcome(payment: &Payment, traceparent: Option<&str>) -> Message {
    let (routing_key, body) = if payment.status == "succeeded" {
        (
            "payment.succeeded",
            json!({"payment_id": payment.id, "order_id": payment.order_id, "amount": payment.amount}),
        )
    } else {
        (
            "payment.failed",
            json!({"payment_id": payment.id, "order_id": payment.order_id,
                   "amount": payment.amount, "reason": payment.reason}),
        )
    };
    Message {
        routing_key: routing_key.to_owned(),
        body: body.to_string().into_bytes(),
        content_type: Some("application/json".to_owned()),
        // The order id too, so ids stay unique should the payments table
        // ever start over while the order service remembers old ids.
        message_id: Some(format!("payment-{}-order-{}", payment.id, payment.order_id)),
        correlation_id: Some(payment.order_id.to_string()),
        headers: traceparent
            .map(|value| vec![("traceparent".to_owned(), value.to_owned())])
            .unwrap_or_default(),
    }
}

/// An application header's value (names compared without regard to case).
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(amount: Value) -> Vec<u8> {
        json!({"order_id": 7, "user_id": 3, "product_name": "Tea", "amount": amount})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn the_payment_rule() {
        let paid = parse("order.created", &created(json!(LIMIT))).unwrap();
        assert_eq!(
            paid,
            NewPayment {
                order_id: 7,
                amount: LIMIT,
                status: "succeeded",
                reason: None
            }
        );
        let failed = parse("order.created", &created(json!(LIMIT + 1))).unwrap();
        assert_eq!(
            (failed.status, failed.reason),
            ("failed", Some("limit_exceeded"))
        );
        assert_eq!(
            parse("order.created", &created(json!(1))).unwrap().status,
            "succeeded"
        );
    }

    #[test]
    fn malformed_events_are_errors() {
        assert!(parse("order.updated", &created(json!(5))).is_err());
        assert!(parse("order.created", b"nope").is_err());
        assert!(parse("order.created", b"[]").is_err());
        assert!(parse("order.created", br#"{"amount": 5}"#).is_err());
        for bad in [
            json!(0),
            json!(5.5),
            json!("5"),
            json!(null),
            json!(100_000_001),
        ] {
            assert!(
                parse("order.created", &created(bad.clone())).is_err(),
                "{bad}"
            );
        }
    }

    fn payment(status: &str, reason: Option<&str>) -> Payment {
        Payment {
            id: 2,
            order_id: 7,
            amount: 250,
            status: status.into(),
            reason: reason.map(str::to_owned),
            created_at: "2025-01-02T03:04:05.000000Z".into(),
        }
    }

    fn body(message: &Message) -> Value {
        serde_json::from_slice(&message.body).unwrap()
    }

    #[test]
    fn outcomes_are_the_same_message_every_time() {
        let succeeded = outcome(&payment("succeeded", None), Some("00-abc-def-01"));
        assert_eq!(succeeded.routing_key, "payment.succeeded");
        assert_eq!(
            body(&succeeded),
            json!({"payment_id": 2, "order_id": 7, "amount": 250})
        );
        assert_eq!(succeeded.content_type.as_deref(), Some("application/json"));
        assert_eq!(succeeded.correlation_id.as_deref(), Some("7"));
        assert_eq!(
            succeeded.headers,
            vec![("traceparent".to_owned(), "00-abc-def-01".to_owned())]
        );
        let again = outcome(&payment("succeeded", None), None);
        assert_eq!(again.message_id, succeeded.message_id);
        assert!(again.headers.is_empty());

        let failed = outcome(&payment("failed", Some("limit_exceeded")), None);
        assert_eq!(failed.routing_key, "payment.failed");
        assert_eq!(
            body(&failed),
            json!({"payment_id": 2, "order_id": 7, "amount": 250, "reason": "limit_exceeded"})
        );
    }

    #[test]
    fn headers_are_found_by_name() {
        let headers = vec![("TraceParent".to_owned(), "x".to_owned())];
        assert_eq!(header(&headers, "traceparent"), Some("x"));
        assert_eq!(header(&headers, "tracestate"), None);
    }
}
