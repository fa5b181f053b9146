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
//! | `trellis_db_connections_open`, `_idle`, `_max`; `trellis_db_pools` | guests' database connections (open counts idle ones), the cap, and the pools (one per server, database and role) |
//! | `trellis_calls_total{tenant,app,component,target,outcome}` | attempts of chained and outbound calls: `ok`, `failed`, `open` (refused by an open circuit) |
//! | `trellis_circuit_transitions_total{tenant,app,target,to}` | breakers opening (`open`) and closing (`closed`) |
//! | `trellis_outbox_backlog{tenant,app,component}` | outbox rows waiting (up to 10,000), as of the last sweep (30 s) or drain |
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
struct CallLabels {
    #[prometheus(flatten)]
    of: ComponentLabels,
    target: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CircuitLabels {
    tenant: String,
    app: String,
    target: String,
    to: &'static str,
}

/// How one attempt of a call ended.
#[derive(Debug, Clone, Copy)]
pub enum CallOutcome {
    Ok,
    Failed,
    /// Refused without trying: the target's circuit is open.
    Open,
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
    calls: Family<CallLabels, Counter>,
    circuits: Family<CircuitLabels, Counter>,
    outbox_backlog: Family<ComponentLabels, Gauge>,
    instances_in_use: Gauge,
    instances_max: Gauge,
    db_connections: Gauge,
    db_idle: Gauge,
    db_max: Gauge,
    db_pools: Gauge,
}

/// The guests' database pools at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolUse {
    /// Open connections, idle ones included.
    pub open: i64,
    pub idle: i64,
    /// The cap on open connections.
    pub max: i64,
    pub pools: i64,
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
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "trellis_calls",
            "Attempts of chained and outbound calls, by outcome",
            calls.clone(),
        );
        let circuits = Family::<CircuitLabels, Counter>::default();
        registry.register(
            "trellis_circuit_transitions",
            "Circuit breakers opening and closing, by target",
            circuits.clone(),
        );
        let outbox_backlog = Family::<ComponentLabels, Gauge>::default();
        registry.register(
            "trellis_outbox_backlog",
            "Outbox rows waiting to be published (counted up to 10,000), as of the last sweep or drain",
            outbox_backlog.clone(),
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
        let db_idle = Gauge::default();
        registry.register(
            "trellis_db_connections_idle",
            "Database connections open for guests and idle",
            db_idle.clone(),
        );
        let db_max = Gauge::default();
        registry.register(
            "trellis_db_connections_max",
            "The cap on database connections open for guests",
            db_max.clone(),
        );
        let db_pools = Gauge::default();
        registry.register(
            "trellis_db_pools",
            "Database pools (one per server, database and role)",
            db_pools.clone(),
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
            calls,
            circuits,
            outbox_backlog,
            instances_in_use,
            instances_max,
            db_connections,
            db_idle,
            db_max,
            db_pools,
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

    pub fn called(&self, labels: &ComponentLabels, target: &str, outcome: CallOutcome) {
        let outcome = match outcome {
            CallOutcome::Ok => "ok",
            CallOutcome::Failed => "failed",
            CallOutcome::Open => "open",
        };
        self.calls
            .get_or_create(&CallLabels {
                of: labels.clone(),
                target: target.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn outbox_backlog(&self, labels: &ComponentLabels, rows: i64) {
        self.outbox_backlog.get_or_create(labels).set(rows);
    }

    /// A breaker of `tenant`'s `app` for `target` opened (`open = true`) or closed.
    pub fn circuit(&self, tenant: &str, app: &str, target: &str, open: bool) {
        self.circuits
            .get_or_create(&CircuitLabels {
                tenant: tenant.to_owned(),
                app: app.to_owned(),
                target: target.to_owned(),
                to: if open { "open" } else { "closed" },
            })
            .inc();
    }

    /// The text exposition of every metric, gauges read now.
    pub fn encode(&self, instances_in_use: i64, instances_max: i64, db: PoolUse) -> String {
        self.instances_in_use.set(instances_in_use);
        self.instances_max.set(instances_max);
        self.db_connections.set(db.open);
        self.db_idle.set(db.idle);
        self.db_max.set(db.max);
        self.db_pools.set(db.pools);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// `GET /metrics` of `runtime`: the text exposition, gauges read now.
pub fn response(
    runtime: &crate::app::Runtime,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let max = i64::from(runtime.config.max_instances);
    let free = i64::try_from(runtime.slots.available_permits()).unwrap_or(max);
    let text = runtime
        .metrics
        .encode(max - free, max, runtime.databases.pool_use());
    let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(text)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}

/// Serves `GET /metrics` on `listener` (`trellis up --metrics-listen`):
/// no token, so bind it where only the scraper reaches.
pub async fn serve(
    listener: tokio::net::TcpListener,
    runtime: std::sync::Arc<crate::app::Runtime>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let mut response = response(&runtime);
                    if request.uri().path() != "/metrics" {
                        response = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"only /metrics is served here\n"),
                        ));
                        *response.status_mut() = http::StatusCode::NOT_FOUND;
                    }
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
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
        let db = PoolUse {
            open: 5,
            idle: 3,
            max: 64,
            pools: 2,
        };
        let text = metrics.encode(2, 100, db);
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
        assert!(text.contains("trellis_db_connections_idle 3"), "{text}");
        assert!(text.contains("trellis_db_connections_max 64"), "{text}");
        assert!(text.contains("trellis_db_pools 2"), "{text}");
    }
}
