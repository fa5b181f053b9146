//! The `trellis:messaging/handler` export: records each delivery, then does
//! what the body asks, so the tests can drive every disposition:
//!
//! - `{"sleep_ms": N}`: sleeps N ms first (then goes on with the rest);
//! - `{"fail": N}`: `retry` while `attempt <= N`, then `ack`;
//! - `{"reject": true}`: `reject`;
//! - `{"trap": true}`: traps (the host counts it as `retry`) while
//!   `attempt <= trap_times` (default: always);
//! - anything else, including a body that is not JSON: `ack`.

use std::time::Duration;

use serde_json::Value;

use crate::bindings::exports::trellis::messaging::handler::Guest;
use crate::bindings::trellis::messaging::types::{Delivery, Disposition};
use crate::db;

pub struct Handler;

impl Guest for Handler {
    fn handle(delivery: Delivery) -> Disposition {
        // Written first: a row's `at` is when the call started.
        if let Err(err) = db::record(&delivery) {
            eprintln!("mqtest: cannot record the delivery: {err}");
            return Disposition::Retry;
        }
        let body: Value = serde_json::from_slice(&delivery.message.body).unwrap_or(Value::Null);
        let attempt = u64::from(delivery.attempt);
        let number = |name: &str| body.get(name).and_then(Value::as_u64);
        let flag = |name: &str| body.get(name) == Some(&Value::Bool(true));

        if let Some(ms) = number("sleep_ms") {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if let Some(failures) = number("fail") {
            return if attempt <= failures {
                Disposition::Retry
            } else {
                Disposition::Ack
            };
        }
        if flag("reject") {
            return Disposition::Reject;
        }
        if flag("trap") && attempt <= number("trap_times").unwrap_or(u64::MAX) {
            trap(attempt);
        }
        Disposition::Ack
    }
}

#[expect(clippy::panic, reason = "the tests ask for a trap")]
fn trap(attempt: u64) -> ! {
    panic!("mqtest: trapping on attempt {attempt}, as asked");
}
