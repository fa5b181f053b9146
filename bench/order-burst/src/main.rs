//! `order-burst BASE_URL [ORDERS] [CLIENTS]`: creates a user, sends ORDERS
//! `POST /orders` from CLIENTS concurrent clients (amounts on both sides of
//! the payment limit), then polls `GET /orders?user_id=` until every order is
//! `paid` or `cancelled`. Prints the accept rate, latency percentiles and the
//! time from the last `201` until the last order was final.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .context("usage: order-burst BASE_URL [ORDERS] [CLIENTS]")?;
    let orders: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let clients: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;

    let email = format!("burst-{}@example.com", std::process::id());
    let user: Value = http
        .post(format!("{base}/users"))
        .json(&json!({"email": email, "name": "Burst"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let user_id = user["id"].as_i64().context("user id")?;

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, base, next) = (http.clone(), base.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= orders {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                // Every tenth order is over the limit, so it is cancelled.
                let amount = if i % 10 == 0 {
                    150_000
                } else {
                    1_000 + i as i64
                };
                let sent = Instant::now();
                let response = http
                    .post(format!("{base}/orders"))
                    .json(&json!({"user_id": user_id, "product_name": "burst", "amount": amount}))
                    .send()
                    .await?;
                if response.status() != 201 {
                    bail!("POST /orders answered {}", response.status());
                }
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(orders);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let accepted_in = started.elapsed();
    let last_created = Instant::now();

    let final_after = loop {
        let list: Value = http
            .get(format!("{base}/orders?user_id={user_id}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let items = list["items"].as_array().context("items")?;
        let pending = items.iter().filter(|o| o["status"] == "pending").count();
        if items.len() == orders && pending == 0 {
            break last_created.elapsed();
        }
        if last_created.elapsed() > Duration::from_secs(120) {
            bail!(
                "{pending} of {} orders still pending after 120 s",
                items.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "orders={orders} clients={clients} accepted_per_s={:.0} p50_ms={:.2} p99_ms={:.2} final_after_last_201_ms={}",
        orders as f64 / accepted_in.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        final_after.as_millis()
    );
    Ok(())
}
