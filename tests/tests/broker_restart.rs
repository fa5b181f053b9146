//! RabbitMQ restarted under a load of orders: `POST /orders` keeps answering
//! `201` while the broker is away (the outbox holds the events), and once it
//! is back every order settles by the payment rule with exactly one payment,
//! and the outbox drains.
//!
//! This stops the shared local RabbitMQ (`rabbitmqctl stop_app`), so it lives
//! in its own test binary: `cargo test` runs test binaries one after another,
//! so no other test of the same `cargo test` uses the broker meanwhile (a
//! runner that runs binaries in parallel, or a second `cargo test` on the
//! same machine, is not protected). [`Stopped`] starts the broker again
//! whatever happens to the test, and waits until it answers.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use trellis_tests::{Reply, Shop, psql};

/// The outbox of the order service's database (`t_shop_order_orders`): the
/// platform's schema beside it.
const OUTBOX: &str = "o_shop_order_orders";
const PAYMENTS: &str = "t_shop_payment_payments";
const PAYMENT_LIMIT: i64 = 100_000;

/// Orders sent in all, by [`CLIENTS`] clients.
const TOTAL: usize = 300;
const CLIENTS: usize = 20;
/// Orders sent once the broker is back.
const AFTER: usize = 40;
/// Each client's pause between two orders.
const PACE: Duration = Duration::from_millis(20);

/// How long the broker's node may take to stop or start its app.
const BROKER_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the load is when an order is sent.
const UP: u8 = 0;
const STOPPING: u8 = 1;
const DOWN: u8 = 2;
const STARTING: u8 = 3;
const BACK: u8 = 4;

fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Starts the broker's app (a no-op when it runs) and waits until it accepts
/// AMQP connections.
fn start_broker() -> Result<(), String> {
    rabbitmqctl(&["start_app"])?;
    let timeout = BROKER_TIMEOUT.as_secs().to_string();
    rabbitmqctl(&["await_startup", "--timeout", &timeout])?;
    let started = Instant::now();
    while started.elapsed() < BROKER_TIMEOUT {
        let addr = "127.0.0.1:5672".parse().expect("address");
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err("port 5672 does not accept connections".to_string())
}

/// The local RabbitMQ app, stopped while this lives (its Erlang node keeps
/// running); dropping it starts the app again and waits until it answers.
struct Stopped;

impl Stopped {
    fn new() -> Self {
        // Made first, so that even a failing stop ends in a start.
        let stopped = Self;
        rabbitmqctl(&["stop_app"]).expect("stop the broker");
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // Never panic here (a panic while unwinding aborts): retry, then give
        // up loudly.
        for _ in 0..3 {
            match start_broker() {
                Ok(()) => return,
                Err(err) => eprintln!("starting RabbitMQ again: {err}"),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        eprintln!("RabbitMQ did not come back: start it with `rabbitmqctl start_app`");
    }
}

#[derive(Debug)]
struct Placed {
    id: i64,
    amount: i64,
}

/// What one `POST /orders` got.
struct Outcome {
    phase: u8,
    result: Result<Placed, String>,
}

fn tail(logs: &str, n: usize) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_survive_a_broker_restart_under_load() {
    // A previous run killed while the broker was stopped left it so.
    start_broker().expect("RabbitMQ is not running");

    let shop = Shop::start("broker_restart");
    assert!(
        shop.broker.wait_for_consumers(
            &["payment.order-created", "order.payment-results"],
            Duration::from_secs(30)
        ),
        "the shop does not consume: {:?}\n{}",
        shop.broker.consumers(),
        shop.trellis.logs()
    );
    let mut users = Vec::new();
    for c in 0..CLIENTS {
        let reply = shop
            .post(
                "/users",
                &json!({"email": format!("restart{c}@example.com"), "name": "Buyer"}),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        users.push(reply.body["id"].as_i64().expect("user id"));
    }

    // Clients take order numbers below `allowed` (raised phase by phase),
    // until TOTAL were sent.
    let allowed = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let phase = Arc::new(AtomicU8::new(UP));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let url = shop.url("/orders");
    let clients: Vec<_> = users
        .iter()
        .map(|&user_id| {
            let (allowed, next, sent, phase, outcomes) = (
                allowed.clone(),
                next.clone(),
                sent.clone(),
                phase.clone(),
                outcomes.clone(),
            );
            let http = shop.http().clone();
            let url = url.clone();
            tokio::spawn(async move {
                loop {
                    let k = next.load(Ordering::SeqCst);
                    if k >= TOTAL {
                        return;
                    }
                    if k >= allowed.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    if next
                        .compare_exchange(k, k + 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_err()
                    {
                        continue;
                    }
                    let amount = [1_000, PAYMENT_LIMIT, PAYMENT_LIMIT + 1, 500_000][k % 4];
                    let body = json!({
                        "user_id": user_id,
                        "product_name": format!("restart item {k}"),
                        "amount": amount,
                    });
                    let at = phase.load(Ordering::SeqCst);
                    let result = match http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                    {
                        Ok(response) => {
                            let reply = Reply::read(response).await;
                            match reply.body["id"].as_i64() {
                                Some(id) if reply.status == 201 => Ok(Placed { id, amount }),
                                _ => Err(format!("{}: {}", reply.status, reply.text)),
                            }
                        }
                        Err(err) => Err(format!("request failed: {err}")),
                    };
                    // A phase that changed while the request ran counts too.
                    let phase = at.max(phase.load(Ordering::SeqCst));
                    outcomes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Outcome { phase, result });
                    sent.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(PACE).await;
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut timings = Vec::new();
    // Broker up.
    allowed.store(80, Ordering::SeqCst);
    wait_until(
        "60 orders with the broker up",
        Duration::from_secs(60),
        || sent.load(Ordering::SeqCst) >= 60,
    )
    .await;

    // Stopping, orders still coming in.
    phase.store(STOPPING, Ordering::SeqCst);
    allowed.store(140, Ordering::SeqCst);
    let stopping = Instant::now();
    let stopped = tokio::task::spawn_blocking(Stopped::new)
        .await
        .expect("stop the broker");
    timings.push(format!("stop_app {:?}", stopping.elapsed()));

    // Down: a hundred orders, and at least 3 s, with no broker.
    phase.store(DOWN, Ordering::SeqCst);
    let down = Instant::now();
    allowed.store(240, Ordering::SeqCst);
    wait_until(
        "orders sent with the broker down",
        Duration::from_secs(60),
        || sent.load(Ordering::SeqCst) >= 240,
    )
    .await;
    let ready = shop.get("/health/ready").await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;
    timings.push(format!("down {:?}", down.elapsed()));

    // Starting, orders still coming in; then the rest with the broker back.
    phase.store(STARTING, Ordering::SeqCst);
    allowed.store(TOTAL - AFTER, Ordering::SeqCst);
    let starting = Instant::now();
    tokio::task::spawn_blocking(move || drop(stopped))
        .await
        .expect("start the broker");
    timings.push(format!("start_app {:?}", starting.elapsed()));
    phase.store(BACK, Ordering::SeqCst);
    allowed.store(TOTAL, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client task");
    }
    let sending = started.elapsed();

    // Every POST was answered 201, during the outage too.
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()));
    assert_eq!(outcomes.len(), TOTAL);
    let mut per_phase: HashMap<u8, usize> = HashMap::new();
    for outcome in &outcomes {
        *per_phase.entry(outcome.phase).or_default() += 1;
    }
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.result
                .as_ref()
                .err()
                .map(|e| format!("phase {}: {e}", o.phase))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {TOTAL} POST /orders were not 201 (phases: 0 up, 1 stopping, 2 down, 3 starting, 4 back), e.g. {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        tail(&shop.trellis.logs(), 40)
    );
    assert!(
        per_phase.get(&DOWN).copied().unwrap_or(0) >= 50,
        "too few orders while the broker was down: {per_phase:?}"
    );
    assert!(
        per_phase.get(&BACK).copied().unwrap_or(0) >= AFTER,
        "too few orders after the broker came back: {per_phase:?}"
    );
    let placed: Vec<Placed> = outcomes.into_iter().filter_map(|o| o.result.ok()).collect();

    // Broker back: every order settles by the rule.
    let settle = Instant::now();
    let limit = Duration::from_secs(120);
    let statuses = loop {
        let mut statuses = HashMap::new();
        for user_id in &users {
            let reply = shop.get(&format!("/orders?user_id={user_id}")).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            for order in reply.body["items"].as_array().expect("items") {
                statuses.insert(
                    order["id"].as_i64().expect("id"),
                    order["status"].as_str().expect("status").to_string(),
                );
            }
        }
        let pending = placed
            .iter()
            .filter(|p| {
                !matches!(
                    statuses.get(&p.id).map(String::as_str),
                    Some("paid" | "cancelled")
                )
            })
            .count();
        if pending == 0 {
            break statuses;
        }
        assert!(
            settle.elapsed() < limit,
            "{pending} of {} orders not final {limit:?} after the broker came back; outbox: {}; queues: {:?}\n{}",
            placed.len(),
            psql(
                &shop.db.name,
                &format!("SELECT count(*) FROM {OUTBOX}._trellis_outbox")
            ),
            shop.broker.queues(),
            tail(&shop.trellis.logs(), 60)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let settling = settle.elapsed();
    for order in &placed {
        let expected = if order.amount <= PAYMENT_LIMIT {
            "paid"
        } else {
            "cancelled"
        };
        assert_eq!(statuses[&order.id], expected, "{order:?}");
    }

    // Exactly one payment per order, no other payment.
    let payments: HashMap<i64, (usize, String)> = psql(
        &shop.db.name,
        &format!(
            "SELECT order_id, count(*), string_agg(status, ',' ORDER BY id) \
             FROM {PAYMENTS}.payments GROUP BY order_id"
        ),
    )
    .lines()
    .map(|line| {
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 3, "{line}");
        (
            fields[0].parse().expect("order_id"),
            (fields[1].parse().expect("count"), fields[2].to_string()),
        )
    })
    .collect();
    for order in &placed {
        let expected = if order.amount <= PAYMENT_LIMIT {
            "succeeded"
        } else {
            "failed"
        };
        assert_eq!(
            payments.get(&order.id),
            Some(&(1, expected.to_string())),
            "payments of {order:?}"
        );
    }
    assert_eq!(payments.len(), placed.len(), "payments for unknown orders");

    // The outbox drains.
    let drain = Instant::now();
    loop {
        let rows = psql(
            &shop.db.name,
            &format!("SELECT count(*) FROM {OUTBOX}._trellis_outbox"),
        );
        if rows == "0" {
            break;
        }
        assert!(
            drain.elapsed() < Duration::from_secs(30),
            "{rows} outbox rows left\n{}",
            tail(&shop.trellis.logs(), 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // While it was down, readiness said so (api.md, Health); and says up now.
    assert_eq!(
        ready.status, 503,
        "/health/ready with the broker down: {}",
        ready.text
    );
    assert_eq!(
        ready.body["dependencies"]["broker"], "down",
        "{}",
        ready.text
    );
    let ready = shop.get("/health/ready").await;
    assert_eq!(
        ready.status, 200,
        "/health/ready with the broker back: {}",
        ready.text
    );

    eprintln!(
        "{TOTAL} orders sent in {sending:?} ({per_phase:?} by phase; {}), all final {settling:?} after the broker was back",
        timings.join(", ")
    );
}
