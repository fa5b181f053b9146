//! The end-to-end test guest: one component with many behaviours, so the tests
//! can exercise the host (headers, traps, timeouts, memory limits, outbound
//! policy, variables, shutdown) without a guest per scenario.
//!
//! The behaviour is picked by the path *relative to the component's route*
//! (Spin's `spin-path-info` header), so the testbed works wherever an app
//! mounts it, e.g. `/tb/...` -> `/tb/echo`, `/tb/sleep?ms=50`.

use std::time::Duration;

use serde_json::{Value, json};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(req: Request) -> Response {
    let path = route_path(&req);
    let query = req.query().to_owned();
    let param = |name: &str| query_param(&query, name);

    match path.as_str() {
        "/echo" => echo(&req),
        // A panic aborts (wasm32-wasip2 is panic=abort), so the instance traps
        // instead of answering: that is what the host's trap handling must see.
        "/trap" => panic!("testbed: deliberate trap"),
        "/loop" => spin_forever(),
        "/hog" => hog(),
        "/sleep" => match param("ms").and_then(|ms| ms.parse::<u64>().ok()) {
            Some(ms) => {
                // Blocks the whole guest; fine, an instance serves one request.
                std::thread::sleep(Duration::from_millis(ms));
                text(200, format!("slept {ms}"))
            }
            None => bad_request("`ms` must be a number of milliseconds"),
        },
        "/chain" => match param("to") {
            Some(to) => {
                let path = param("path").unwrap_or_else(|| "/".to_owned());
                match get(&format!("http://{to}.spin.internal{path}")).await {
                    Ok(mut resp) => {
                        resp.set_header("x-chained-from", "testbed");
                        resp
                    }
                    Err(err) => json_response(502, json!({ "error": err })),
                }
            }
            None => bad_request("missing `to` (the callee's component id)"),
        },
        "/outbound" => match param("url") {
            Some(url) => get(&url)
                .await
                .unwrap_or_else(|err| json_response(502, json!({ "error": err }))),
            None => bad_request("missing `url`"),
        },
        // What a guest can read of the files mounted into it (and nothing
        // else, if the host does its job): the hostile-tenant tests' probe.
        "/file" => match param("path") {
            Some(path) => match std::fs::read(&path) {
                Ok(bytes) => text(200, String::from_utf8_lossy(&bytes).into_owned()),
                Err(err) => json_response(404, json!({ "error": format!("{path}: {err}") })),
            },
            None => bad_request("missing `path`"),
        },
        // A raw TCP connection through wasi:sockets, as a guest that wants
        // past the host's capabilities would try.
        "/tcp" => match param("addr") {
            Some(addr) => match std::net::TcpStream::connect(addr.as_str()) {
                Ok(_) => text(200, format!("connected to {addr}")),
                Err(err) => json_response(403, json!({ "error": format!("{addr}: {err}") })),
            },
            None => bad_request("missing `addr`"),
        },
        "/var" => match param("name") {
            Some(name) => match spin_sdk::variables::get(&name) {
                Ok(value) => text(200, value),
                Err(err) => json_response(404, json!({ "error": err.to_string() })),
            },
            None => bad_request("missing `name`"),
        },
        "/env" => match param("name") {
            Some(name) => match std::env::var(&name) {
                Ok(value) => text(200, value),
                Err(err) => json_response(404, json!({ "error": format!("{name}: {err}") })),
            },
            None => bad_request("missing `name`"),
        },
        "/print" => match param("lines").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => {
                for i in 1..=n {
                    println!("testbed line {i} to stdout");
                }
                eprint!("testbed to stderr, without a newline");
                text(200, format!("printed {n} lines"))
            }
            None => bad_request("`lines` must be a number of lines"),
        },
        "/big" => match param("bytes").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => text(200, "x".repeat(n)),
            None => bad_request("`bytes` must be a byte count"),
        },
        _ => json_response(
            404,
            json!({ "error": { "code": "not_found", "message": "testbed: no such behaviour" } }),
        ),
    }
}

/// The path relative to the component's route. The host sets `spin-path-info`
/// (Spin semantics: the part of the path matched by the route's `...`); without
/// it, fall back to the full URI path.
fn route_path(req: &Request) -> String {
    match req.header("spin-path-info").and_then(|v| v.as_str()) {
        // Path info carries no query, but be lenient if a host adds one.
        Some(info) => info.split('?').next().unwrap_or_default().to_owned(),
        None => req.path().to_owned(),
    }
}

/// Everything the tests want to know about the request as the guest saw it,
/// notably the spin-* headers the host adds.
fn echo(req: &Request) -> Response {
    let body = req.body();
    let parsed = serde_json::from_slice::<Value>(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    // The SDK already lower-cases header names; repeated headers keep the last value.
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .map(|(name, value)| {
            (
                name.to_owned(),
                Value::String(value.clone().into_utf8_lossy()),
            )
        })
        .collect();
    json_response(
        200,
        json!({
            "method": req.method().to_string(),
            "path": req.path_and_query().unwrap_or(req.uri()),
            "body": parsed,
            "body_len": body.len(),
            "headers": headers,
        }),
    )
}

/// Burns CPU forever, for the host's execution timeout (epoch interruption).
/// `black_box` keeps the optimiser from proving the loop useless and removing it.
fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Grows linear memory until the host's memory limit refuses; the failed
/// allocation aborts, so this never answers. The chunks are filled with
/// non-zero bytes so the pages are really touched, not just reserved.
fn hog() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xa5; 8 << 20]);
        std::hint::black_box(&hoard);
    }
}

/// An outbound GET. Errors (including the host refusing a host that is not in
/// `allowed_outbound_hosts`) come back as text so the guest can still answer.
async fn get(url: &str) -> Result<Response, String> {
    let resp: Response = spin_sdk::http::send(Request::get(url))
        .await
        .map_err(|err| err.to_string())?;
    // Relay status, body, content type and when to retry; other upstream
    // headers are not ours to forward.
    let mut relayed = Response::new(*resp.status(), resp.body().to_vec());
    for name in ["content-type", "retry-after"] {
        if let Some(value) = resp.header(name) {
            relayed.set_header(name, value.clone().into_utf8_lossy());
        }
    }
    Ok(relayed)
}

/// The value of the first `name=value` pair in a query string, decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space and `%XX` a
/// byte. A malformed escape is kept literally rather than rejected.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        match (bytes[i], escaped) {
            (b'%', Some(hex)) => {
                let hex = std::str::from_utf8(hex).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(status: u16, body: impl Into<String>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.into())
        .build()
}

fn json_response(status: u16, value: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(value.to_string())
        .build()
}

fn bad_request(message: &str) -> Response {
    json_response(400, json!({ "error": message }))
}
