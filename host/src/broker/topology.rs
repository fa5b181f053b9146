//! What the host declares on the broker, and the names it uses.
//!
//! For an app: its exchange, a durable topic exchange. For each
//! `[[trigger.amqp]]`:
//! - the queue: durable, quorum, bound to the exchange with the trigger's
//!   binding keys, dead-lettering to [`DEAD_LETTER_EXCHANGE`] with the queue's
//!   name as routing key;
//! - `<queue>.dead-letter`: where messages go after their last attempt or a
//!   `reject`, bound to [`DEAD_LETTER_EXCHANGE`];
//! - `<queue>.retry.<ms>ms`, one per retry delay: a message republished there
//!   waits out the queue's TTL and is dead-lettered back onto `<queue>`
//!   through the default exchange. One queue per delay, because a TTL only
//!   expires messages at the head of a queue.
//!
//! Every declaration is idempotent and repeated on each new connection. A
//! queue that already exists with other arguments is a precondition failure
//! (the broker closes the channel); the error says which queue.

use std::time::Duration;

use anyhow::{Context as _, Result};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

/// Receives every dead-lettered message of the vhost; each trigger's
/// dead-letter queue is bound to it with the queue's name.
pub const DEAD_LETTER_EXCHANGE: &str = "trellis.dead-letter";

/// Header carrying the delivery attempt a retried message is on.
pub const ATTEMPT_HEADER: &str = "x-trellis-attempt";

/// Redeliveries the broker allows before it dead-letters a message itself: a
/// backstop for a message that keeps killing the host before any disposition
/// is taken. Fixed, since queue arguments cannot change once declared.
const DELIVERY_LIMIT: i64 = 50;

/// The longest a retry waits, however many attempts came before.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// A consumer's queue and how failed messages are handled.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueSpec {
    pub queue: String,
    /// The exchange to bind to (the trigger's or the app's).
    pub exchange: String,
    pub binding_keys: Vec<String>,
    pub max_attempts: u32,
    pub retry_delay: Duration,
}

impl QueueSpec {
    /// The wait before attempt `attempt + 1`: the base delay doubled for each
    /// attempt already made, capped at an hour; whole milliseconds.
    pub fn retry_delay_after(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.retry_delay
            .saturating_mul(factor)
            .min(MAX_RETRY_DELAY)
            .max(Duration::from_millis(1))
    }

    /// Every distinct retry delay this queue can need.
    fn retry_delays(&self) -> Vec<Duration> {
        let mut delays: Vec<Duration> = (1..self.max_attempts)
            .map(|attempt| self.retry_delay_after(attempt))
            .collect();
        delays.dedup();
        delays
    }
}

impl QueueSpec {
    /// Every queue this spec declares: the queue, its dead-letter queue and
    /// its retry queues.
    pub fn queue_names(&self) -> Vec<String> {
        let mut names = vec![self.queue.clone(), dead_letter_queue(&self.queue)];
        names.extend(
            self.retry_delays()
                .into_iter()
                .map(|delay| retry_queue(&self.queue, delay)),
        );
        names
    }
}

pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dead-letter")
}

pub fn retry_queue(queue: &str, delay: Duration) -> String {
    format!("{queue}.retry.{}ms", delay.as_millis())
}

/// A durable topic exchange.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange `{exchange}` (durable, topic)"))
}

/// How long declaring one consumer's queues may take. A broker that stops
/// answering (out of file handles, say) must fail a deployment with a reason,
/// not hang it.
pub const DECLARE_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything `spec` consumes from and retries through.
pub async fn declare_queue(channel: &Channel, spec: &QueueSpec) -> Result<()> {
    match tokio::time::timeout(DECLARE_TIMEOUT, declare_queue_now(channel, spec)).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!(
            "the broker did not answer within {} s while declaring `{}` and its retry queues",
            DECLARE_TIMEOUT.as_secs(),
            spec.queue
        ),
    }
}

async fn declare_queue_now(channel: &Channel, spec: &QueueSpec) -> Result<()> {
    declare_exchange(channel, &spec.exchange).await?;
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .with_context(|| {
            format!("declaring exchange `{DEAD_LETTER_EXCHANGE}` (durable, direct)")
        })?;

    let dead = dead_letter_queue(&spec.queue);
    declare(channel, &dead, table([("x-queue-type", string("quorum"))])).await?;
    bind(channel, &dead, DEAD_LETTER_EXCHANGE, &spec.queue).await?;

    declare(
        channel,
        &spec.queue,
        table([
            ("x-queue-type", string("quorum")),
            ("x-dead-letter-exchange", string(DEAD_LETTER_EXCHANGE)),
            ("x-dead-letter-routing-key", string(&spec.queue)),
            ("x-delivery-limit", AMQPValue::LongLongInt(DELIVERY_LIMIT)),
        ]),
    )
    .await?;
    for key in &spec.binding_keys {
        bind(channel, &spec.queue, &spec.exchange, key).await?;
    }

    for delay in spec.retry_delays() {
        let millis = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        declare(
            channel,
            &retry_queue(&spec.queue, delay),
            table([
                ("x-message-ttl", AMQPValue::LongLongInt(millis)),
                ("x-dead-letter-exchange", string("")),
                ("x-dead-letter-routing-key", string(&spec.queue)),
            ]),
        )
        .await?;
    }
    Ok(())
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

async fn declare(channel: &Channel, queue: &str, arguments: FieldTable) -> Result<()> {
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
        .await
        .map(drop)
        .with_context(|| {
            format!(
                "declaring queue `{queue}` (if it exists with other settings, delete it or use another name)"
            )
        })
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding queue `{queue}` to `{exchange}` with `{key}`"))
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn table<const N: usize>(entries: [(&str, AMQPValue); N]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(ShortString::from(key), value);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_attempts: u32, delay_ms: u64) -> QueueSpec {
        QueueSpec {
            queue: "q".into(),
            exchange: "x".into(),
            binding_keys: vec![],
            max_attempts,
            retry_delay: Duration::from_millis(delay_ms),
        }
    }

    #[test]
    fn delays_double_per_attempt_and_are_capped() {
        let s = spec(5, 200);
        assert_eq!(s.retry_delay_after(1), Duration::from_millis(200));
        assert_eq!(s.retry_delay_after(2), Duration::from_millis(400));
        assert_eq!(s.retry_delay_after(4), Duration::from_millis(1600));
        assert_eq!(s.retry_delays().len(), 4);
        assert_eq!(spec(100, 1000).retry_delay_after(60), MAX_RETRY_DELAY);
        assert!(spec(1, 200).retry_delays().is_empty());
        assert_eq!(
            retry_queue("q", Duration::from_millis(400)),
            "q.retry.400ms"
        );
    }
}
