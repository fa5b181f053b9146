//! Calls between components and to outbound hosts, end to end: circuit
//! breakers per target and retries of idempotent calls, on the real
//! `trellis up` with the testbed guest as caller and callee.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use trellis_tests::{AppDir, Reply, Trellis, UpOptions, client};

fn app(upstream_port: u16) -> AppDir {
    AppDir::new(&format!(
        r#"
spin_manifest_version = 2

[application]
name = "calls"

[[trigger.http]]
route = "/tb/..."
component = "caller"

[[trigger.http]]
route = "/callee/..."
component = "callee"

[component.caller]
source = "{{testbed}}"
allowed_outbound_hosts = ["http://callee.spin.internal", "http://127.0.0.1:{upstream_port}"]

[component.callee]
source = "{{testbed}}"
"#
    ))
}

fn start(app: &AppDir, args: &[&'static str]) -> Trellis {
    let options = UpOptions {
        args: args.to_vec(),
        ..UpOptions::default()
    };
    Trellis::up_with(&app.manifest(), options)
}

async fn get(trellis: &Trellis, path: &str) -> Reply {
    let response = client().get(trellis.url(path)).send().await.expect("GET");
    Reply::read(response).await
}

#[tokio::test]
async fn a_failing_callee_opens_its_circuit_and_a_probe_closes_it() {
    let app = app(9);
    let trellis = start(
        &app,
        &[
            "--breaker-failures",
            "3",
            "--breaker-open",
            "1s",
            "--call-retries",
            "0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let echo = "/tb/chain?to=callee&path=/echo";
    assert_eq!(get(&trellis, echo).await.status, 200);

    // The callee traps three times in a row: the caller sees each 500.
    for _ in 0..3 {
        get(&trellis, "/tb/chain?to=callee&path=/trap")
            .await
            .assert_error(500, "internal");
    }
    assert!(
        trellis.wait_for_log(|l| l.contains("circuit opened")),
        "{}",
        trellis.logs()
    );

    // Open: a call that would succeed is answered 503 without reaching it.
    let refused = get(&trellis, echo).await;
    let message = refused.assert_error(503, "unavailable");
    assert!(message.contains("callee.spin.internal"), "{message}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Only calls are paused: the callee still serves its own route.
    assert_eq!(get(&trellis, "/callee/echo").await.status, 200);

    // After the open period one probe goes through and closes the circuit.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let probe = get(&trellis, echo).await;
    assert_eq!(probe.status, 200, "{}", probe.text);
    assert!(
        trellis.wait_for_log(|l| l.contains("circuit closed")),
        "{}",
        trellis.logs()
    );
    assert_eq!(get(&trellis, echo).await.status, 200);

    // The metrics listener counts each attempt and each change of state.
    let text = trellis.metrics_text().await;
    let labels = r#"tenant="",app="calls",component="caller",target="callee.spin.internal""#;
    for (outcome, count) in [("ok", 3), ("failed", 3), ("open", 1)] {
        let line = format!("trellis_calls_total{{{labels},outcome=\"{outcome}\"}} {count}");
        assert!(text.contains(&line), "no `{line}` in:\n{text}");
    }
    for to in ["open", "closed"] {
        let line = format!(
            "trellis_circuit_transitions_total{{tenant=\"\",app=\"calls\",target=\"callee.spin.internal\",to=\"{to}\"}} 1"
        );
        assert!(text.contains(&line), "no `{line}` in:\n{text}");
    }
}

#[tokio::test]
async fn a_failed_probe_opens_the_circuit_again() {
    let app = app(9);
    let trellis = start(
        &app,
        &[
            "--breaker-failures",
            "2",
            "--breaker-open",
            "500ms",
            "--call-retries",
            "0",
        ],
    );
    let trap = "/tb/chain?to=callee&path=/trap";
    for _ in 0..2 {
        get(&trellis, trap).await.assert_error(500, "internal");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The probe fails: open again, for the whole period.
    get(&trellis, trap).await.assert_error(500, "internal");
    get(&trellis, "/tb/chain?to=callee&path=/echo")
        .await
        .assert_error(503, "unavailable");
}

/// A local upstream that answers `503` to its first `failures` requests,
/// then `200`; counts requests.
async fn flaky_upstream(failures: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let (status, body) = if n < failures {
                            (503, r#"{"error":"warming up"}"#)
                        } else {
                            (200, r#"{"ok":true}"#)
                        };
                        let mut response = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(body.as_bytes()),
                        ));
                        *response.status_mut() =
                            hyper::StatusCode::from_u16(status).expect("status");
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, requests)
}

#[tokio::test]
async fn idempotent_outbound_calls_are_retried_within_their_bound() {
    // Two failures, two retries: the guest sees the third answer.
    let (port, requests) = flaky_upstream(2).await;
    let app = app(port);
    let trellis = start(&app, &["--call-retries", "2"]);
    let path = format!("/tb/outbound?url=http://127.0.0.1:{port}/x");
    let reply = get(&trellis, &path).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    drop(trellis);

    // Three failures, two retries: the guest sees the last 503.
    let (port, requests) = flaky_upstream(3).await;
    let app = self::app(port);
    let trellis = start(&app, &["--call-retries", "2"]);
    let path = format!("/tb/outbound?url=http://127.0.0.1:{port}/x");
    let reply = get(&trellis, &path).await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}
