//! The HTTP path end to end: the real `trellis` binary on port 0 serving the
//! test guests, driven by a real HTTP client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_tests::{AppDir, Trellis, UpOptions, client};

/// The test app: `hello`, the `testbed` guest under a wildcard and a named
/// segment, a chaining target and a private (unrouted) component.
fn app(upstream_port: u16) -> AppDir {
    AppDir::new(&format!(
        r#"
spin_manifest_version = 2

[application]
name = "e2e"

[variables]
greeting = {{ default = "hello" }}

[[trigger.http]]
route = "/hello"
component = "hello"

[[trigger.http]]
route = "/tb/..."
component = "testbed"

[[trigger.http]]
route = "/named/:id/..."
component = "testbed"

[[trigger.http]]
route = "/callee/..."
component = "callee"

[[trigger.http]]
route = {{ private = true }}
component = "private"

[component.hello]
source = "{{hello}}"

[component.testbed]
source = "{{testbed}}"
allowed_outbound_hosts = ["http://callee.spin.internal", "http://private.spin.internal", "http://127.0.0.1:{upstream_port}"]
environment = {{ MODE = "test" }}

[component.testbed.variables]
message = "{{{{ greeting }}}} world"

[component.testbed.tool.trellis]
timeout_ms = 2000
memory_limit_mib = 64

[component.callee]
source = "{{testbed}}"

[component.private]
source = "{{hello}}"
"#
    ))
}

async fn json(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_end_to_end() {
    let app = app(9);
    let trellis = Trellis::up(&app.manifest());
    let response = client()
        .get(trellis.url("/hello"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    // A small body that completes at once goes out whole, with its length.
    assert_eq!(response.headers()["content-length"], "14");
    assert_eq!(response.text().await.expect("body"), "Hello, world!\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_through_whole() {
    let app = app(9);
    let trellis = Trellis::up(&app.manifest());
    let response = client()
        .get(trellis.url("/tb/big?bytes=5000000"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("body");
    assert_eq!(body.len(), 5_000_000);
    assert!(body.iter().all(|b| *b == b'x'));
}

#[tokio::test(flavor = "multi_thread")]
async fn spin_headers_are_set_and_cannot_be_forged() {
    let app = app(9);
    let trellis = Trellis::up(&app.manifest());
    let http = client();

    let response = http
        .get(trellis.url("/tb/echo?x=1"))
        .header("spin-path-match-id", "forged")
        .header("spin-path-info", "/forged")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    let headers = &body["headers"];
    assert_eq!(headers["spin-path-info"], "/echo");
    assert_eq!(headers["spin-matched-route"], "/tb/...");
    assert_eq!(headers["spin-raw-component-route"], "/tb/...");
    assert_eq!(headers["spin-component-route"], "/tb");
    assert_eq!(headers["spin-base-path"], "/");
    assert_eq!(
        headers["spin-full-url"],
        format!("http://{}/tb/echo?x=1", trellis.addr)
    );
    assert!(
        headers["spin-client-addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{body}"
    );
    assert!(
        headers.get("spin-path-match-id").is_none(),
        "forged header reached the guest: {body}"
    );

    let body = json(
        http.get(trellis.url("/named/42/echo"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(body["headers"]["spin-path-match-id"], "42", "{body}");
    assert_eq!(body["headers"]["spin-path-info"], "/echo", "{body}");
    assert_eq!(
        body["headers"]["spin-matched-route"], "/named/:id/...",
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unrouted_paths_are_404_and_health_is_served() {
    let app = app(9);
    let trellis = Trellis::up(&app.manifest());
    let http = client();

    let response = http
        .get(trellis.url("/nowhere"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_error(&json(response).await, "not_found");

    let response = http
        .get(trellis.url("/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await, serde_json::json!({"status": "ok"}));

    let response = http
        .get(trellis.url("/health/ready"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["status"], "ready");
    assert!(body["dependencies"].is_object(), "{body}");
}

#[tokio::test]
async fn guest_output_is_logged_line_by_line_with_its_labels_and_bounded() {
    let app = app(9);
    let trellis = Trellis::up(&app.manifest());
    let http = client();
    let print = |lines: usize| {
        http.get(trellis.url(&format!("/tb/print?lines={lines}")))
            .send()
    };

    assert_eq!(print(3).await.expect("request").status(), 200);
    let logged = |text: &str| {
        let text = text.to_owned();
        move |line: &str| line.contains(&text)
    };
    assert!(
        trellis.wait_for_log(logged("testbed line 3 to stdout")),
        "{}",
        trellis.logs()
    );
    let logs = trellis.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("testbed line 1 to stdout"))
        .expect("the first line");
    // In the run's span: its app and component; and which stream.
    assert!(line.contains("app=\"e2e\""), "{line}");
    assert!(line.contains("component=\"testbed\""), "{line}");
    assert!(line.contains("stream=\"stdout\""), "{line}");
    // A last line without a newline is logged when the stream closes.
    assert!(trellis.wait_for_log(logged("testbed to stderr, without a newline")));

    // Far over the rate: most lines are dropped, and the count is logged.
    assert_eq!(print(5000).await.expect("request").status(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(print(1).await.expect("request").status(), 200);
    assert!(
        trellis.wait_for_log(logged("lines of guest output dropped")),
        "{}",
        trellis.logs()
    );
    let printed = trellis
        .logs()
        .lines()
        .filter(|l| l.contains("to stdout"))
        .count();
    assert!(printed < 1300, "{printed} lines logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_is_500_and_the_next_request_is_served() {
    let app = app(9);
    let trellis = Trellis::up(&app.manifest());
    let http = client();

    let response = http
        .get(trellis.url("/tb/trap"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 500);
    let body = json(response).await;
    assert_error(&body, "internal");
    assert!(
        !body.to_string().contains("deliberate"),
        "internals leaked: {body}"
    );

    let response = http
        .get(trellis.url("/tb/echo"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert!(
        trellis.wait_for_log(|l| l.contains("trapped") && l.contains("testbed")),
        "the trap is not logged with the component id:\n{}",
        trellis.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_is_504_at_its_deadline_while_others_are_served() {
    let app = app(9);
    let trellis = Trellis::up(&app.manifest());
    let http = client();

    let started = Instant::now();
    let looping = tokio::spawn({
        let url = trellis.url("/tb/loop");
        let http = http.clone();
        async move { http.get(url).send().await.expect("request") }
    });
    // While the guest spins, other requests are answered.
    let mut served = 0;
    while !looping.is_finished() && served < 20 {
        let response = http
            .get(trellis.url("/hello"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = looping.await.expect("task");
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    assert_error(&json(response).await, "timeout");
    assert!(
        served >= 5,
        "only {served} requests were served during the loop"
    );
    // The testbed's deadline is 2 s; the answer must not wait for the 30 s default.
    assert!(elapsed < Duration::from_secs(10), "504 took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_hog_is_an_error_not_a_crash() {
    let app = app(9);
    let trellis = Trellis::up(&app.manifest());
    let http = client();

    let response = http
        .get(trellis.url("/tb/hog"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 500);
    assert_error(&json(response).await, "internal");
    let response = http
        .get(trellis.url("/tb/echo"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_over_the_limit_are_413_chunked_or_not() {
    let app = app(9);
    let trellis = Trellis::up(&app.manifest());
    let http = client();
    const LIMIT: usize = 1 << 20;

    let response = http
        .post(trellis.url("/tb/echo"))
        .body(vec![b'a'; LIMIT])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "exactly the limit is allowed");
    assert_eq!(json(response).await["body_len"], LIMIT);

    let response = http
        .post(trellis.url("/tb/echo"))
        .body(vec![b'a'; LIMIT + 1])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 413);
    assert_error(&json(response).await, "payload_too_large");

    // A component that never reads the body does not get to accept it either.
    let response = http
        .post(trellis.url("/hello"))
        .body(vec![b'a'; 2 * LIMIT])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 413);

    for (total, expected) in [(LIMIT, 200), (LIMIT + 1, 413), (3 * LIMIT, 413)] {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..total)
            .step_by(64 << 10)
            .map(|start| Ok(vec![b'c'; (64 << 10).min(total - start)]))
            .collect();
        let response = http
            .post(trellis.url("/tb/echo"))
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .expect("chunked request");
        assert_eq!(response.status(), expected, "chunked body of {total} bytes");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn components_call_each_other_in_process() {
    let app = app(9);
    let trellis = Trellis::up(&app.manifest());
    let http = client();

    let response = http
        .get(trellis.url("/tb/chain?to=callee&path=/echo%3Fq%3D1"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-chained-from"], "testbed");
    let body = json(response).await;
    assert_eq!(body["path"], "/echo?q=1", "{body}");
    assert_eq!(body["headers"]["spin-path-info"], "/echo", "{body}");

    // A private component is reachable by chaining only.
    let response = http
        .get(trellis.url("/tb/chain?to=private&path=/"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "Hello, world!\n");

    // `hello` is not in the testbed's allowed_outbound_hosts.
    let response = http
        .get(trellis.url("/tb/chain?to=hello&path=/"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 502);
    let body = json(response).await;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("denied")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_http_is_limited_to_allowed_hosts_and_reuses_connections() {
    let (port, connections) = upstream().await;
    let app = app(port);
    let trellis = Trellis::up(&app.manifest());
    let http = client();

    for _ in 0..3 {
        let url = format!("/tb/outbound?url=http://127.0.0.1:{port}/hi");
        let response = http.get(trellis.url(&url)).send().await.expect("request");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "upstream says hi");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "outbound connections were not reused"
    );

    let response = http
        .get(trellis.url("/tb/outbound?url=http://example.com/"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 502);
    let body = json(response).await;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("denied")),
        "{body}"
    );
    assert!(
        trellis.wait_for_log(|l| l.contains("denied") && l.contains("testbed")),
        "no log line for the denied request:\n{}",
        trellis.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_internal_host_is_refused() {
    let app = app(9);
    let trellis = Trellis::up(&app.manifest());
    let response = client()
        .get(trellis.url("/hello"))
        .header("host", "testbed.spin.internal")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    assert_error(&json(response).await, "bad_request");
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_and_environment_reach_the_guest() {
    let app = app(9);
    let trellis = Trellis::up(&app.manifest());
    let http = client();
    let response = http
        .get(trellis.url("/tb/var?name=message"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.text().await.expect("body"), "hello world");
    let response = http
        .get(trellis.url("/tb/var?name=undeclared"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    let response = http
        .get(trellis.url("/tb/env?name=MODE"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.text().await.expect("body"), "test");
    drop(trellis);

    let trellis = Trellis::up_with(
        &app.manifest(),
        UpOptions {
            env: vec![("SPIN_VARIABLE_GREETING", "howdy")],
            ..UpOptions::default()
        },
    );
    let response = http
        .get(trellis.url("/tb/var?name=message"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.text().await.expect("body"), "howdy world");
}

#[tokio::test(flavor = "multi_thread")]
async fn at_capacity_requests_wait_briefly_then_get_503() {
    let app = app(9);
    let trellis = Trellis::up_with(
        &app.manifest(),
        UpOptions {
            args: vec!["--max-instances", "1", "--queue-timeout", "200ms"],
            ..UpOptions::default()
        },
    );
    let http = client();
    let busy = tokio::spawn({
        let (http, url) = (http.clone(), trellis.url("/tb/sleep?ms=1500"));
        async move { http.get(url).send().await.expect("request").status() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = http
        .get(trellis.url("/hello"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_error(&json(response).await, "unavailable");
    assert_eq!(busy.await.expect("task"), 200);
    let response = http
        .get(trellis.url("/hello"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "capacity is given back");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_request_in_flight_finish() {
    let app = app(9);
    let mut trellis = Trellis::up(&app.manifest());
    let http = client();
    let in_flight = tokio::spawn({
        let (http, url) = (http.clone(), trellis.url("/tb/sleep?ms=1500"));
        async move {
            let response = http.get(url).send().await.expect("request");
            (response.status(), response.text().await.expect("body"))
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    trellis.signal(libc::SIGTERM);
    let (status, body) = in_flight.await.expect("task");
    assert_eq!(status, 200);
    assert_eq!(body, "slept 1500");
    let exit = trellis
        .wait_exit(Duration::from_secs(10))
        .expect("trellis exits after SIGTERM");
    assert!(exit.success(), "exit status {exit}");
    assert!(
        tokio::net::TcpStream::connect(trellis.addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_start_compiles_nothing() {
    let app = app(9);
    let cache = tempfile::tempdir().expect("cache dir");
    let options = || UpOptions {
        cache_dir: Some(cache.path()),
        ..UpOptions::default()
    };
    let first = Trellis::up_with(&app.manifest(), options());
    let http = client();
    assert_eq!(
        http.get(first.url("/hello"))
            .send()
            .await
            .expect("request")
            .status(),
        200
    );
    // Components load in id order; once the last one is ready, all are logged.
    assert!(first.wait_for_log(|l| l.contains("component=testbed") && l.contains("origin=")));
    let logs = first.logs();
    assert!(
        logs.contains("origin=compiled"),
        "first start should compile:\n{logs}"
    );
    drop(first);

    let second = Trellis::up_with(&app.manifest(), options());
    assert_eq!(
        http.get(second.url("/hello"))
            .send()
            .await
            .expect("request")
            .status(),
        200
    );
    assert!(
        // `shared`: the same bytes as a component loaded just before.
        second.wait_for_log(|l| l.contains("component=testbed")
            && (l.contains("origin=cache") || l.contains("origin=shared"))),
        "second start should use the cache:\n{}",
        second.logs()
    );
    let logs = second.logs();
    assert!(
        !logs.contains("origin=compiled"),
        "second start compiled something:\n{logs}"
    );
}

/// A local upstream server that counts the TCP connections it accepts.
async fn upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"upstream says hi")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, connections)
}

#[tokio::test]
async fn json_logs_carry_the_request_and_its_trace_id() {
    let app = app(9);
    let options = UpOptions {
        args: vec!["--log-format", "json"],
        ..UpOptions::default()
    };
    let trellis = Trellis::up_with(&app.manifest(), options);
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let response = client()
        .get(trellis.url("/tb/print?lines=1"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert!(trellis.wait_for_log(|l| l.contains("testbed line 1 to stdout")));
    let line = trellis
        .logs()
        .lines()
        .find(|l| l.contains("testbed line 1 to stdout"))
        .map(str::to_owned)
        .expect("the line");
    let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(event["fields"]["stream"], "stdout", "{line}");
    assert_eq!(event["span"]["component"], "testbed", "{line}");
    let request = &event["spans"][0];
    assert_eq!(request["name"], "request", "{line}");
    assert_eq!(request["trace_id"], trace_id, "{line}");
    assert_eq!(request["app"], "e2e", "{line}");
}
