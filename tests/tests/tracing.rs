//! Traces end to end: the shop exports spans over OTLP/HTTP (JSON) to a
//! receiver in this test, and one order — `POST /orders` with a client's
//! `traceparent` through payment to `paid` — is one trace whose spans are
//! correctly parented across HTTP, the outbox, the broker and back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trellis_tests::{AppDir, Shop, TestBroker, TestDatabase, Trellis, UpOptions, client};

/// One exported span, as the test needs it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i64,
    attributes: HashMap<String, String>,
}

const SERVER: i64 = 2;
const CLIENT: i64 = 3;
const PRODUCER: i64 = 4;
const CONSUMER: i64 = 5;

/// An OTLP/HTTP receiver (`POST /v1/traces`, JSON) keeping every span.
async fn receiver() -> (u16, Arc<Mutex<Vec<Span>>>) {
    let (port, spans, _) = receiver_with(None).await;
    (port, spans)
}

/// [`receiver`], behind TLS when `tls` is given; also counts the TLS
/// handshakes that failed.
async fn receiver_with(
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (u16, Arc<Mutex<Vec<Span>>>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let (kept, refusals) = (spans.clone(), refused.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (kept, refusals, tls) = (kept.clone(), refusals.clone(), tls.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let kept = kept.clone();
                        async move {
                            use http_body_util::BodyExt as _;
                            let path = request.uri().path().to_owned();
                            let body = request.into_body().collect().await?.to_bytes();
                            if path == "/v1/traces"
                                && let Ok(export) = serde_json::from_slice::<Value>(&body)
                            {
                                kept.lock().expect("spans").extend(spans_of(&export));
                            }
                            Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"{}"),
                            )))
                        }
                    },
                );
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    }
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        }
                        Err(_) => {
                            refusals.fetch_add(1, Ordering::SeqCst);
                        }
                    },
                }
            });
        }
    });
    (port, spans, refused)
}

fn spans_of(export: &Value) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
                let attributes = span["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|kv| {
                        let value = &kv["value"];
                        let value = value["stringValue"]
                            .as_str()
                            .map(str::to_owned)
                            .or_else(|| value["intValue"].as_str().map(str::to_owned))
                            .or_else(|| value["intValue"].as_i64().map(|n| n.to_string()))?;
                        Some((kv["key"].as_str()?.to_owned(), value))
                    })
                    .collect();
                spans.push(Span {
                    trace_id: text("traceId").to_ascii_lowercase(),
                    span_id: text("spanId").to_ascii_lowercase(),
                    parent: text("parentSpanId").to_ascii_lowercase(),
                    name: text("name"),
                    kind: span["kind"].as_i64().unwrap_or_default(),
                    attributes,
                });
            }
        }
    }
    spans
}

/// The trace so far.
fn trace(spans: &Mutex<Vec<Span>>, trace_id: &str) -> Vec<Span> {
    let spans = spans.lock().expect("spans");
    spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect()
}

/// The one span named `name` whose parent is `parent`, waiting for it.
async fn child(
    spans: &Mutex<Vec<Span>>,
    trace_id: &str,
    parent: &Span,
    name: impl Fn(&str) -> bool,
) -> Span {
    let started = Instant::now();
    loop {
        let found: Vec<Span> = trace(spans, trace_id)
            .into_iter()
            .filter(|s| s.parent == parent.span_id && name(&s.name))
            .collect();
        if let [span] = found.as_slice() {
            return span.clone();
        }
        assert!(
            found.len() < 2,
            "two matching children of {parent:?}: {found:#?}"
        );
        if started.elapsed() > Duration::from_secs(20) {
            let names: Vec<(String, String, String)> = trace(spans, trace_id)
                .into_iter()
                .map(|s| (s.name, s.span_id, s.parent))
                .collect();
            panic!(
                "no such child of {} ({}); the trace: {names:#?}",
                parent.name, parent.span_id
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn one_order_is_one_trace_from_post_to_paid() {
    let (port, spans) = receiver().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let shop = Shop::start_in_env(
        TestDatabase::new("tracing"),
        TestBroker::new("tracing"),
        &["--otlp-endpoint", &endpoint, "--otlp-protocol", "http/json"],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let user = shop
        .post(
            "/users",
            &json!({"email": "trace@example.com", "name": "Ada"}),
        )
        .await;
    assert_eq!(user.status, 201, "{}", user.text);
    let user_id = user.body["id"].as_i64().expect("user id");

    // The client's own span: the request continues its trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let response = shop
        .http()
        .post(shop.url("/orders"))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .body(json!({"user_id": user_id, "product_name": "Book", "amount": 1500}).to_string())
        .send()
        .await
        .expect("POST /orders");
    let order = trellis_tests::Reply::read(response).await;
    assert_eq!(order.status, 201, "{}", order.text);
    let order_id = order.body["id"].as_i64().expect("order id");

    let started = Instant::now();
    loop {
        let order = shop.get(&format!("/orders/{order_id}")).await;
        if order.body["status"] == "paid" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            order.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let root = Span {
        trace_id: trace_id.into(),
        span_id: client_span.into(),
        parent: String::new(),
        name: "the client".into(),
        kind: CLIENT,
        attributes: HashMap::new(),
    };
    let spans = &spans;
    let request = child(spans, trace_id, &root, |n| n == "POST /orders").await;
    assert_eq!(request.kind, SERVER);
    assert_eq!(request.attributes["http.response.status_code"], "201");
    assert_eq!(request.attributes["component"], "order");
    let order_run = child(spans, trace_id, &request, |n| n == "invoke order").await;
    assert_eq!(order_run.attributes["app"], "shop");

    // The chained user lookup, and the user service's query under it.
    let lookup = child(spans, trace_id, &order_run, |n| {
        n == "GET user.spin.internal"
    })
    .await;
    assert_eq!(lookup.kind, CLIENT);
    let user_run = child(spans, trace_id, &lookup, |n| n == "invoke user").await;
    let select = child(spans, trace_id, &user_run, |n| n == "SELECT").await;
    assert_eq!(select.attributes["db.system.name"], "postgresql");

    // The order's writes (one statement: the order and its outbox row), and
    // the event the outbox relays after commit.
    let writes: Vec<Span> = trace(spans, trace_id)
        .into_iter()
        .filter(|s| s.parent == order_run.span_id && s.attributes.contains_key("db.query.text"))
        .collect();
    assert!(
        writes
            .iter()
            .any(|s| s.attributes["db.query.text"].contains("_trellis_outbox")),
        "{writes:#?}"
    );
    let created = child(spans, trace_id, &order_run, |n| {
        n == "publish order.created"
    })
    .await;
    assert_eq!(created.kind, PRODUCER);

    // Payment consumes it, pays, and publishes the outcome.
    let delivery = child(spans, trace_id, &created, |n| n.starts_with("process ")).await;
    assert_eq!(delivery.kind, CONSUMER);
    assert_eq!(delivery.attributes["component"], "payment");
    let payment_run = child(spans, trace_id, &delivery, |n| n == "invoke payment").await;
    child(spans, trace_id, &payment_run, |n| n == "INSERT").await;
    let paid = child(spans, trace_id, &payment_run, |n| {
        n == "publish payment.succeeded"
    })
    .await;

    // The order service follows: the order's status update is in the trace.
    let followed = child(spans, trace_id, &paid, |n| n.starts_with("process ")).await;
    assert_eq!(followed.attributes["component"], "order");
    let order_update = child(spans, trace_id, &followed, |n| n == "invoke order").await;
    let statements: Vec<String> = trace(spans, trace_id)
        .into_iter()
        .filter(|s| s.parent == order_update.span_id)
        .filter_map(|s| s.attributes.get("db.query.text").cloned())
        .collect();
    assert!(
        statements.iter().any(|q| q.contains("UPDATE orders")),
        "{statements:#?}"
    );
}

/// TLS for the receiver, with the certificate the CA signed.
fn acceptor(dir: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server certificate");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The hello guest alone, exporting to `endpoint` with `extra` arguments,
/// once it has served one `GET /hello` (so there is a span to export).
async fn hello_exporting_to(endpoint: &str, extra: &[&str]) -> (AppDir, Trellis) {
    let app = AppDir::new(
        r#"
spin_manifest_version = 2
[application]
name = "tls"
[[trigger.http]]
route = "/hello"
component = "hello"
[component.hello]
source = "{hello}"
"#,
    );
    let mut args = vec!["--otlp-endpoint", endpoint, "--otlp-protocol", "http/json"];
    args.extend_from_slice(extra);
    let trellis = Trellis::up_with(
        &app.manifest(),
        UpOptions {
            args,
            env: vec![("OTEL_BSP_SCHEDULE_DELAY", "100")],
            ..UpOptions::default()
        },
    );
    let reply = client()
        .get(trellis.url("/hello"))
        .send()
        .await
        .expect("GET /hello");
    assert_eq!(reply.status(), 200);
    (app, trellis)
}

#[tokio::test]
async fn spans_reach_an_https_collector_whose_ca_is_given_and_no_other() {
    let certificates = trellis_tests::certificates();
    let (port, spans, refused) = receiver_with(Some(acceptor(certificates.path()))).await;
    let endpoint = format!("https://127.0.0.1:{port}");
    let ca = certificates.path().join("ca.pem");

    // Trusting the CA: the request's span arrives, over TLS.
    let (_app, trusting) =
        hello_exporting_to(&endpoint, &["--otlp-ca-file", ca.to_str().expect("path")]).await;
    let started = Instant::now();
    loop {
        let arrived = spans.lock().expect("spans").iter().any(|s| {
            s.kind == SERVER && s.attributes.get("url.path").map(String::as_str) == Some("/hello")
        });
        if arrived {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no span over TLS within 10 s (handshakes refused: {}):\n{}",
            refused.load(Ordering::SeqCst),
            trusting.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused.load(Ordering::SeqCst), 0, "a handshake failed");
    drop(trusting);

    // Not trusting it (the system's roots only): the exporter refuses the
    // receiver's certificate, and sends it nothing.
    let before = spans.lock().expect("spans").len();
    let (_app, distrusting) = hello_exporting_to(&endpoint, &[]).await;
    let started = Instant::now();
    while refused.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the exporter did not try to connect within 10 s:\n{}",
            distrusting.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        spans.lock().expect("spans").len(),
        before,
        "spans sent to an untrusted collector"
    );
    // And says so, rather than dropping them without a word (after its
    // retries; waited for without blocking the receiver's runtime).
    let started = Instant::now();
    while !distrusting.logs().contains("exporting spans failed") {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no export failure logged within 15 s:\n{}",
            distrusting.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
