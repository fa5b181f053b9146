//! `trellis:messaging/publisher@0.1.0`: guests publish to their app's
//! exchange, with confirms.
//!
//! A component may publish only routing keys its manifest lists under
//! `[component.<id>.tool.trellis.messaging] publish` (topic patterns); the
//! exchange is always the app's, so a guest cannot reach another app's
//! traffic. The call returns once the broker confirmed (see
//! [`crate::broker::Broker::publish`]).

pub mod bindings;

use std::sync::Arc;

use anyhow::Result;
use wasmtime::component::{HasData, Linker};

use crate::broker::{Broker, Outgoing, PublishError};
use bindings::{Error, Message};

/// Largest body a guest may publish.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// AMQP short strings (routing keys, property values, header names) hold at
/// most this many bytes.
const MAX_SHORT: usize = 255;

/// What one component may do on the broker; built at load, shared by all its
/// instances.
pub struct ComponentMessaging {
    /// `None` when the app has no broker (it declares no messaging at all).
    pub broker: Option<Arc<Broker>>,
    pub exchange: String,
    pub app: String,
    /// Topic patterns of the keys it may publish.
    pub publish: Vec<String>,
    /// Where what it publishes is counted, and under which labels.
    pub metrics: Arc<crate::metrics::Metrics>,
    pub labels: crate::metrics::ComponentLabels,
}

impl ComponentMessaging {
    /// Checks `message` against the rules and this component's patterns and
    /// turns it into what the broker publishes.
    pub fn outgoing(&self, message: Message) -> Result<Outgoing, Error> {
        check_routing_key(&message.routing_key).map_err(Error::Invalid)?;
        if !self.may_publish(&message.routing_key) {
            return Err(Error::NotPermitted(format!(
                "routing key `{}` is not covered by this component's `publish` patterns ({})",
                message.routing_key,
                if self.publish.is_empty() {
                    "none declared".to_string()
                } else {
                    self.publish.join(", ")
                }
            )));
        }
        if message.body.len() > MAX_BODY_BYTES {
            return Err(Error::Invalid(format!(
                "body is {} bytes; at most {MAX_BODY_BYTES} are allowed",
                message.body.len()
            )));
        }
        for (field, value) in [
            ("content-type", &message.content_type),
            ("message-id", &message.message_id),
            ("correlation-id", &message.correlation_id),
        ] {
            if let Some(value) = value
                && (value.is_empty() || value.len() > MAX_SHORT)
            {
                return Err(Error::Invalid(format!(
                    "`{field}` must be 1..{MAX_SHORT} bytes"
                )));
            }
        }
        for (name, _) in &message.headers {
            if name.is_empty() || name.len() > MAX_SHORT {
                return Err(Error::Invalid(format!(
                    "header name `{name}` must be 1..{MAX_SHORT} bytes"
                )));
            }
            if name.to_ascii_lowercase().starts_with("x-") {
                return Err(Error::Invalid(format!(
                    "header `{name}`: names starting with `x-` are reserved for the broker and the host"
                )));
            }
        }
        Ok(Outgoing {
            exchange: self.exchange.clone(),
            routing_key: message.routing_key,
            body: message.body,
            content_type: message.content_type,
            message_id: message
                .message_id
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            correlation_id: message.correlation_id,
            headers: message.headers,
            app_id: self.app.clone(),
        })
    }

    pub fn may_publish(&self, routing_key: &str) -> bool {
        self.publish
            .iter()
            .any(|pattern| topic_matches(pattern, routing_key))
    }
}

/// The producer span of one message, a child of the current span.
pub(crate) fn publish_span(message: &Outgoing) -> tracing::Span {
    tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {}", message.routing_key),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.destination.name = message.exchange.as_str(),
        messaging.rabbitmq.destination.routing_key = message.routing_key.as_str(),
        messaging.message.id = message.message_id.as_str(),
    )
}

/// A routing key a guest may publish with: 1..255 bytes, no wildcards.
pub fn check_routing_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_SHORT {
        return Err(format!("routing key must be 1..{MAX_SHORT} bytes"));
    }
    if key.contains(['*', '#']) {
        return Err(format!(
            "routing key `{key}` contains `*` or `#`; those are for binding patterns"
        ));
    }
    Ok(())
}

/// AMQP topic matching: words are dot-separated, `*` matches exactly one word
/// and `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    // Which prefixes of the pattern match the words of the key read so far
    // (a set of states, as an NFA runs): each word of the key is looked at
    // once per pattern word, so the time is bounded by their product. The
    // backtracking this replaces took exponential time on `#.#.#...#.z`
    // against a long key, inside a host call no deadline could stop.
    let pattern: Vec<&str> = pattern.split('.').collect();
    let mut states = vec![false; pattern.len() + 1];
    states[0] = true;
    skip_hashes(&pattern, &mut states);
    for word in key.split('.') {
        let mut next = vec![false; pattern.len() + 1];
        for (i, &expected) in pattern.iter().enumerate() {
            if !states[i] {
                continue;
            }
            match expected {
                // `#` takes this word and may take more.
                "#" => next[i] = true,
                "*" => next[i + 1] = true,
                _ if expected == word => next[i + 1] = true,
                _ => {}
            }
        }
        skip_hashes(&pattern, &mut next);
        if !next.contains(&true) {
            return false;
        }
        states = next;
    }
    states[pattern.len()]
}

/// A `#` may also take no word at all: past each reachable `#`.
fn skip_hashes(pattern: &[&str], states: &mut [bool]) {
    for (i, word) in pattern.iter().enumerate() {
        if states[i] && *word == "#" {
            states[i + 1] = true;
        }
    }
}

pub struct MessagingView<'a> {
    pub ctx: &'a Arc<ComponentMessaging>,
}

impl bindings::trellis::messaging::types::Host for MessagingView<'_> {}

impl bindings::publisher::Host for MessagingView<'_> {
    async fn publish(&mut self, message: Message) -> wasmtime::Result<Result<(), Error>> {
        let mut outgoing = match self.ctx.outgoing(message) {
            Ok(outgoing) => outgoing,
            Err(err) => return Ok(Err(err)),
        };
        // A child of the guest's invoke span; consumers continue from it.
        let span = publish_span(&outgoing);
        crate::telemetry::inject_pairs(&span, &mut outgoing.headers);
        let Some(broker) = &self.ctx.broker else {
            return Ok(Err(Error::Unavailable(
                "this app has no message broker configured".to_string(),
            )));
        };
        let published = tracing::Instrument::instrument(broker.publish(&outgoing), span.clone());
        let published = published.await;
        if published.is_err() {
            span.record("otel.status_code", "error");
        }
        Ok(match published {
            Ok(()) => {
                let via = crate::metrics::Via::Guest;
                self.ctx.metrics.published(&self.ctx.labels, via, 1);
                Ok(())
            }
            Err(PublishError::Unavailable(why)) => Err(Error::Unavailable(why)),
            Err(PublishError::Rejected) => Err(Error::Rejected(
                "the broker refused the message (negative acknowledgement)".to_string(),
            )),
        })
    }
}

struct Messaging;

impl HasData for Messaging {
    type Data<'a> = MessagingView<'a>;
}

/// Adds `trellis:messaging/publisher@0.1.0` (and its types) to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> MessagingView<'_>,
) -> Result<()> {
    bindings::trellis::messaging::types::add_to_linker::<T, Messaging>(linker, view)?;
    bindings::publisher::add_to_linker::<T, Messaging>(linker, view)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("order.*", "order.created"));
        assert!(!topic_matches("order.*", "order.created.v2"));
        assert!(!topic_matches("order.*", "order"));
        assert!(topic_matches("order.#", "order"));
        assert!(topic_matches("order.#", "order.created.v2"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("*.created", "payment.created"));
        assert!(!topic_matches("payment.*", "order.created"));
        assert!(topic_matches("a.#.z", "a.z"));
        assert!(topic_matches("a.#.z", "a.b.c.z"));
        assert!(!topic_matches("a.#.z", "a.b.c"));
        assert!(topic_matches("#.#", "a"));
        assert!(topic_matches("#.a.#", "a"));
        assert!(topic_matches("*.#.*", "a.b"));
        assert!(!topic_matches("*.#.*", "a"));
        assert!(topic_matches("#", ""));
    }

    /// The pattern and key of the noisy-neighbour report: `#` thirty times
    /// then `z`, against forty words that never end in `z`. Backtracking
    /// took hours; this answers at once (or the test never finishes).
    #[test]
    fn pathological_patterns_take_linear_time() {
        let pattern = format!("{}.z", ["#"; 30].join("."));
        let key = ["a"; 40].join(".");
        assert!(!topic_matches(&pattern, &key));
        assert!(topic_matches(&pattern, &format!("{key}.z")));
    }

    fn messaging(publish: &[&str]) -> ComponentMessaging {
        ComponentMessaging {
            broker: None,
            exchange: "shop".into(),
            app: "shop".into(),
            publish: publish.iter().map(|p| p.to_string()).collect(),
            metrics: Arc::default(),
            labels: crate::metrics::ComponentLabels {
                tenant: String::new(),
                app: "shop".into(),
                component: "c".into(),
            },
        }
    }

    fn message(key: &str) -> Message {
        Message {
            routing_key: key.into(),
            body: b"{}".to_vec(),
            content_type: Some("application/json".into()),
            message_id: None,
            correlation_id: None,
            headers: vec![],
        }
    }

    #[test]
    fn publishing_is_checked() {
        let m = messaging(&["payment.*"]);
        let out = m.outgoing(message("payment.succeeded")).expect("allowed");
        assert_eq!(out.exchange, "shop");
        assert!(!out.message_id.is_empty(), "a message id is assigned");
        assert!(matches!(
            m.outgoing(message("order.created")),
            Err(Error::NotPermitted(_))
        ));
        assert!(matches!(m.outgoing(message("")), Err(Error::Invalid(_))));
        assert!(matches!(
            m.outgoing(message("payment.#")),
            Err(Error::Invalid(_))
        ));
        let mut reserved = message("payment.failed");
        reserved.headers.push(("X-Death".into(), "1".into()));
        assert!(matches!(m.outgoing(reserved), Err(Error::Invalid(_))));
        let mut big = message("payment.failed");
        big.body = vec![0; MAX_BODY_BYTES + 1];
        assert!(matches!(m.outgoing(big), Err(Error::Invalid(_))));
        assert!(matches!(
            messaging(&[]).outgoing(message("payment.succeeded")),
            Err(Error::NotPermitted(_))
        ));
    }
}
