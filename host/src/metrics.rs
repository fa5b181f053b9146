//! Prometheus metrics of one process (`GET /metrics` on the admin listener,
//! text exposition format), labelled by tenant, app and component (`tenant`
//! is empty under `trellis up`).
//!
//! | metric | what |
//! |---|---|
//! | `trellis_http_requests_total{tenant,app,component,status}` | requests a component answered (or the host for it) |
//! | `trellis_http_request_duration_seconds{tenant,app,component}` | until the response head |
//! | `trellis_instantiation_duration_seconds{tenant,app,component}` | instantiating from the pre-instance |
//! | `trellis_guest_failures_total{tenant,app,component,kind}` | `trap`, `deadline` |
//! | `trellis_amqp_deliveries_total{tenant,app,component,queue,outcome}` | `ack`, `retry`, `reject`, `dead_letter`, `requeue` |
//! | `trellis_amqp_redeliveries_total{tenant,app,component,queue}` | deliveries the broker marked redelivered |
//! | `trellis_messages_published_total{tenant,app,component,via}` | confirmed publishes: `guest` (the publisher import), `outbox` (relayed rows) |
//! | `trellis_instances_in_use`, `trellis_instances_max` | the instance pool |
//! | `trellis_db_connections_open` | guests' database connections, idle ones included |
//!
//! Counters are counted where things happen; gauges are read at scrape time.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Whose component something happened in.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    pub tenant: String,
    pub app: String,
    pub component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    #[prometheus(flatten)]
    of: ComponentLabels,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    #[prometheus(flatten)]
    of: ComponentLabels,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    #[prometheus(flatten)]
    of: ComponentLabels,
    queue: String,
    outcome: &'static str,
}

/// A guest that did not finish its work.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    Trap,
    Deadline,
}

/// How a message went out.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    Guest,
    Outbox,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    #[prometheus(flatten)]
    of: ComponentLabels,
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViaLabels {
    #[prometheus(flatten)]
    of: ComponentLabels,
    via: &'static str,
}

/// How a delivery was settled.
#[derive(Debug, Clone, Copy)]
pub enum Settled {
    Ack,
    Retry,
    Reject,
    DeadLetter,
    Requeue,
}

type Latency = Family<ComponentLabels, Histogram, fn() -> Histogram>;

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    request_seconds: Latency,
    instantiation_seconds: Latency,
    failures: Family<KindLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    redeliveries: Family<QueueLabels, Counter>,
    published: Family<ViaLabels, Counter>,
    instances_in_use: Gauge,
    instances_max: Gauge,
    db_connections: Gauge,
}

/// 100 µs to about 6.5 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<StatusLabels, Counter>::default();
        registry.register(
            "trellis_http_requests",
            "HTTP requests routed to a component, by response status",
            requests.clone(),
        );
        let request_seconds: Latency = Family::new_with_constructor(latency);
        registry.register(
            "trellis_http_request_duration_seconds",
            "Time from routing a request to its response head",
            request_seconds.clone(),
        );
        let instantiation_seconds: Latency = Family::new_with_constructor(latency);
        registry.register(
            "trellis_instantiation_duration_seconds",
            "Time to instantiate a component from its pre-instance",
            instantiation_seconds.clone(),
        );
        let failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "trellis_guest_failures",
            "Guest invocations that trapped or ran out of time",
            failures.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "trellis_amqp_deliveries",
            "Broker deliveries handled, by how they were settled",
            deliveries.clone(),
        );
        let redeliveries = Family::<QueueLabels, Counter>::default();
        registry.register(
            "trellis_amqp_redeliveries",
            "Deliveries the broker marked as redelivered",
            redeliveries.clone(),
        );
        let published = Family::<ViaLabels, Counter>::default();
        registry.register(
            "trellis_messages_published",
            "Messages the broker confirmed, by who published them",
            published.clone(),
        );
        let instances_in_use = Gauge::default();
        registry.register(
            "trellis_instances_in_use",
            "Component instances alive now",
            instances_in_use.clone(),
        );
        let instances_max = Gauge::default();
        registry.register(
            "trellis_instances_max",
            "Component instances the pool has room for",
            instances_max.clone(),
        );
        let db_connections = Gauge::default();
        registry.register(
            "trellis_db_connections_open",
            "Database connections open for guests, idle ones included",
            db_connections.clone(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            instantiation_seconds,
            failures,
            deliveries,
            redeliveries,
            published,
            instances_in_use,
            instances_max,
            db_connections,
        }
    }

    pub fn request(&self, labels: &ComponentLabels, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&StatusLabels {
                of: labels.clone(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn instantiated(&self, labels: &ComponentLabels, elapsed: Duration) {
        self.instantiation_seconds
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn failed(&self, labels: &ComponentLabels, failure: Failure) {
        let kind = match failure {
            Failure::Trap => "trap",
            Failure::Deadline => "deadline",
        };
        self.failures
            .get_or_create(&KindLabels {
                of: labels.clone(),
                kind,
            })
            .inc();
    }

    pub fn delivered(&self, labels: &ComponentLabels, queue: &str, settled: Settled) {
        let outcome = match settled {
            Settled::Ack => "ack",
            Settled::Retry => "retry",
            Settled::Reject => "reject",
            Settled::DeadLetter => "dead_letter",
            Settled::Requeue => "requeue",
        };
        self.deliveries
            .get_or_create(&DeliveryLabels {
                of: labels.clone(),
                queue: queue.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn redelivered(&self, labels: &ComponentLabels, queue: &str) {
        self.redeliveries
            .get_or_create(&QueueLabels {
                of: labels.clone(),
                queue: queue.to_owned(),
            })
            .inc();
    }

    pub fn published(&self, labels: &ComponentLabels, via: Via, messages: u64) {
        let via = match via {
            Via::Guest => "guest",
            Via::Outbox => "outbox",
        };
        self.published
            .get_or_create(&ViaLabels {
                of: labels.clone(),
                via,
            })
            .inc_by(messages);
    }

    /// The text exposition of every metric, gauges read now.
    pub fn encode(&self, instances_in_use: i64, instances_max: i64, db_connections: i64) -> String {
        self.instances_in_use.set(instances_in_use);
        self.instances_max.set(instances_max);
        self.db_connections.set(db_connections);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exposed_with_their_labels() {
        let metrics = Metrics::new();
        let labels = ComponentLabels {
            tenant: "acme".into(),
            app: "shop".into(),
            component: "user".into(),
        };
        metrics.request(&labels, 201, Duration::from_millis(3));
        metrics.request(&labels, 201, Duration::from_millis(4));
        metrics.failed(&labels, Failure::Deadline);
        metrics.delivered(&labels, "acme.q", Settled::DeadLetter);
        let text = metrics.encode(2, 100, 5);
        assert!(text.contains(
            r#"trellis_http_requests_total{tenant="acme",app="shop",component="user",status="201"} 2"#
        ), "{text}");
        assert!(text.contains(
            r#"trellis_http_request_duration_seconds_count{tenant="acme",app="shop",component="user"} 2"#
        ), "{text}");
        assert!(text.contains(r#"kind="deadline"} 1"#), "{text}");
        assert!(
            text.contains(r#"queue="acme.q",outcome="dead_letter"} 1"#),
            "{text}"
        );
        assert!(text.contains("trellis_instances_in_use 2"), "{text}");
        assert!(text.contains("trellis_db_connections_open 5"), "{text}");
    }
}
