//! The message broker (RabbitMQ over AMQP 0-9-1, with lapin): one connection
//! per broker address, kept up by a supervisor task.
//!
//! - [`Broker::start`] spawns the supervisor: it connects, opens a publishing
//!   channel in confirm mode and announces the [`Session`] on a watch channel;
//!   when the connection drops it withdraws the session and reconnects with
//!   exponential backoff (100 ms doubling to 5 s). Connecting and closing
//!   are bounded in time: a broker that is stopping or starting can take a
//!   socket and never answer on it.
//! - Consumers take their channels from further connections of the session,
//!   at most [`CHANNELS_PER_CONNECTION`] each, opened as needed: a process
//!   hosting thousands of tenants' consumers would otherwise run into the
//!   broker's `channel_max` (2,047 by default) on one connection. Consumers
//!   ([`crate::triggers::amqp`]) and the outbox relay ([`crate::outbox`]) wait
//!   on that channel and start over on every new session, so a broker restart
//!   costs them nothing but the time it was away.
//! - [`Broker::publish`] publishes persistently and returns only once the
//!   broker confirmed; without a session it fails at once, so a caller never
//!   hangs on a broker that is down.
//! - [`topology`] declares exchanges and queues.

pub mod topology;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event};
use tokio::sync::watch;

/// How long a publish waits for the broker's confirmation.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (TCP and the AMQP handshake) may take. A broker that
/// is stopping or starting can accept a socket and never answer on it, and
/// before the handshake ends no heartbeat watches the connection: unbounded,
/// one such attempt would stall reconnecting for good.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a channel, or closing a connection that is going away,
/// may take.
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Consumer channels one connection carries: a quarter of RabbitMQ's default
/// `channel_max`, so one connection's traffic stays one socket's worth and a
/// lost connection interrupts a bounded share of consumers.
pub const CHANNELS_PER_CONNECTION: usize = 512;

/// Why a publish failed; the guest-facing error of `trellis:messaging`
/// maps onto these.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Not connected, the connection dropped, or no confirmation in time:
    /// the message may or may not have been published.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker answered with a negative acknowledgement.
    #[error("broker refused the message")]
    Rejected,
}

/// A message on its way out. Headers are plain strings: all the guest API and
/// the outbox carry.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub message_id: String,
    pub correlation_id: Option<String>,
    pub headers: Vec<(String, String)>,
    /// `app-id`: the application that published.
    pub app_id: String,
}

impl Outgoing {
    /// Persistent, with `type` = routing key (the event type, as api.md asks)
    /// and the publish time.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in &self.headers {
            headers.insert(
                ShortString::from(name.as_str()),
                AMQPValue::LongString(value.as_str().into()),
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(self.message_id.as_str().into())
            .with_type(self.routing_key.as_str().into())
            .with_timestamp(now)
            .with_app_id(self.app_id.as_str().into())
            .with_headers(headers);
        if let Some(content_type) = &self.content_type {
            properties = properties.with_content_type(content_type.as_str().into());
        }
        if let Some(correlation_id) = &self.correlation_id {
            properties = properties.with_correlation_id(correlation_id.as_str().into());
        }
        properties
    }
}

/// One live connection and its publishing channel, and the connections
/// consumers' channels are spread over.
pub struct Session {
    pub connection: Connection,
    /// Increases with every connection the supervisor makes.
    pub generation: u64,
    publisher: tokio::sync::Mutex<Option<Channel>>,
    url: String,
    consumers: tokio::sync::Mutex<Vec<ConsumerConnection>>,
}

/// A connection for consumers, and how many channels are leased on it.
struct ConsumerConnection {
    connection: Arc<Connection>,
    leased: Arc<std::sync::atomic::AtomicUsize>,
}

/// A consumer's channel; the count of its connection's channels goes down
/// when the lease is dropped (close the channel first).
pub struct ChannelLease {
    pub channel: Channel,
    leased: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for ChannelLease {
    fn drop(&mut self) {
        self.leased
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Session {
    /// A channel for a consumer, on a consumer connection with room (one is
    /// opened when none has; a connection that died is dropped from the set,
    /// so its consumers find a live one when they start over).
    pub async fn consumer_channel(&self) -> anyhow::Result<ChannelLease> {
        use std::sync::atomic::Ordering;
        let mut consumers = self.consumers.lock().await;
        consumers.retain(|c| c.connection.status().connected());
        let index = match consumers
            .iter()
            .position(|c| c.leased.load(Ordering::Relaxed) < CHANNELS_PER_CONNECTION)
        {
            Some(index) => index,
            None => {
                let name = format!("trellis consumers {}", consumers.len() + 1);
                let connection = connect(&self.url, &name, CONNECT_TIMEOUT).await?;
                consumers.push(ConsumerConnection {
                    connection: Arc::new(connection),
                    leased: Arc::default(),
                });
                consumers.len() - 1
            }
        };
        let chosen = &consumers[index];
        let channel = bounded(
            CHANNEL_TIMEOUT,
            "opening a channel",
            chosen.connection.create_channel(),
        )
        .await?;
        chosen.leased.fetch_add(1, Ordering::Relaxed);
        Ok(ChannelLease {
            channel,
            leased: chosen.leased.clone(),
        })
    }

    /// The consumer connections open (for tests and metrics).
    pub async fn consumer_connections(&self) -> usize {
        self.consumers.lock().await.len()
    }

    /// Closes the session's connections (it is over), each within
    /// [`CHANNEL_TIMEOUT`]: one that died half-way may never answer.
    async fn close(&self) {
        let reason = "reconnecting";
        let _ = bounded(
            CHANNEL_TIMEOUT,
            reason,
            self.connection.close(200, reason.into()),
        )
        .await;
        let consumers = std::mem::take(&mut *self.consumers.lock().await);
        for consumer in consumers {
            let _ = bounded(
                CHANNEL_TIMEOUT,
                reason,
                consumer.connection.close(200, reason.into()),
            )
            .await;
        }
    }

    /// Publishes `message` on the session's confirm-mode channel and waits
    /// for the confirmation.
    pub async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let channel = bounded(
            CHANNEL_TIMEOUT,
            "opening the publishing channel",
            self.publisher(),
        )
        .await
        .map_err(|err| PublishError::Unavailable(format!("{err:#}")))?;
        Self::publish_on(&channel, exchange, routing_key, body, properties).await
    }

    /// The confirm-mode channel for publishing, reopened if the broker closed
    /// it (a channel-level error does not take the connection down).
    async fn publisher(&self) -> Result<Channel, lapin::Error> {
        let mut slot = self.publisher.lock().await;
        if let Some(channel) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let channel = self.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Publishes on `channel` and waits for the broker's confirmation.
    pub async fn publish_on(
        channel: &Channel,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .map_err(|err| PublishError::Unavailable(err.to_string()))?;
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Rejected),
            Ok(Err(err)) => Err(PublishError::Unavailable(err.to_string())),
            Err(_) => Err(PublishError::Unavailable(format!(
                "no confirmation within {} s",
                CONFIRM_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// A broker address and its supervised connection.
pub struct Broker {
    /// The address with any password masked, for logs and errors.
    pub display: String,
    session: watch::Receiver<Option<Arc<Session>>>,
    /// The queues of every consumer of every app on this broker: declared on
    /// each new connection *before* the session is announced, so nothing is
    /// published (by a relay or a guest) into an exchange whose queues do not
    /// exist yet — the broker would drop it as unroutable.
    topology: Arc<Mutex<Vec<topology::QueueSpec>>>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Broker {
    /// Starts connecting to `url` in the background; returns at once.
    pub fn start(url: &str) -> Arc<Self> {
        let shown = redact(url);
        let (tx, rx) = watch::channel(None);
        let topology = Arc::new(Mutex::new(Vec::new()));
        let supervisor = tokio::spawn(supervise(
            url.to_string(),
            shown.clone(),
            topology.clone(),
            tx,
        ));
        Arc::new(Self {
            display: shown,
            session: rx,
            topology,
            supervisor,
        })
    }

    /// Adds `specs` to what every new connection declares first, and declares
    /// them now if connected. A failure is logged: the consumer of the queue
    /// reports it again, and retries.
    pub async fn declare(&self, specs: &[topology::QueueSpec]) {
        {
            let mut known = self.topology.lock().unwrap_or_else(|e| e.into_inner());
            for spec in specs {
                known.retain(|k| k.queue != spec.queue);
                known.push(spec.clone());
            }
        }
        if let Some(session) = self.session() {
            declare_all(&session.connection, specs, &self.display).await;
        }
    }

    /// Deletes the queues of `specs` and the `exchanges` (an app that is
    /// gone for good), and stops declaring them on new connections. Returns
    /// what was deleted; what could not be (not connected) is logged.
    pub async fn delete(&self, specs: &[topology::QueueSpec], exchanges: &[String]) -> Vec<String> {
        {
            let mut known = self.topology.lock().unwrap_or_else(|e| e.into_inner());
            known.retain(|k| !specs.iter().any(|s| s.queue == k.queue));
        }
        let mut deleted = Vec::new();
        let Some(session) = self.session() else {
            tracing::warn!(broker = %self.display, "not connected: queues and exchanges left in place");
            return deleted;
        };
        let channel = match bounded(
            CHANNEL_TIMEOUT,
            "opening a channel",
            session.connection.create_channel(),
        )
        .await
        {
            Ok(channel) => channel,
            Err(err) => {
                tracing::warn!(broker = %self.display, "cannot delete queues: {err:#}");
                return deleted;
            }
        };
        for name in specs.iter().flat_map(topology::QueueSpec::queue_names) {
            match channel
                .queue_delete(
                    name.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await
            {
                Ok(_) => deleted.push(name),
                Err(err) => tracing::warn!(queue = %name, "cannot delete queue: {err}"),
            }
        }
        for exchange in exchanges {
            match channel
                .exchange_delete(
                    exchange.as_str().into(),
                    lapin::options::ExchangeDeleteOptions::default(),
                )
                .await
            {
                Ok(()) => deleted.push(exchange.clone()),
                Err(err) => tracing::warn!(%exchange, "cannot delete exchange: {err}"),
            }
        }
        let _ = bounded(
            CHANNEL_TIMEOUT,
            "closing",
            channel.close(200, "done".into()),
        )
        .await;
        deleted
    }

    /// The current session, if connected.
    pub fn session(&self) -> Option<Arc<Session>> {
        self.session
            .borrow()
            .clone()
            .filter(|s| s.connection.status().connected())
    }

    /// A receiver that sees every session change (for consumers and relays).
    pub fn sessions(&self) -> watch::Receiver<Option<Arc<Session>>> {
        self.session.clone()
    }

    pub fn is_connected(&self) -> bool {
        self.session().is_some()
    }

    /// Declares every known queue again on the current session: for a
    /// publisher that must not run ahead of the queues (the outbox relay,
    /// once per session), closing the window between a queue being added and
    /// a session being announced.
    pub async fn redeclare(&self) {
        let specs = self
            .topology
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(session) = self.session() {
            declare_all(&session.connection, &specs, &self.display).await;
        }
    }

    /// Publishes `message` persistently; returns once the broker confirmed.
    pub async fn publish(&self, message: &Outgoing) -> Result<(), PublishError> {
        let session = self.session().ok_or_else(|| {
            PublishError::Unavailable(format!("not connected to {}", self.display))
        })?;
        session
            .publish_confirmed(
                &message.exchange,
                &message.routing_key,
                &message.body,
                message.properties(),
            )
            .await
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

/// Brokers by address: every app of the process that names the same broker
/// shares its connection.
#[derive(Default)]
pub struct Brokers {
    by_url: Mutex<HashMap<String, Arc<Broker>>>,
}

impl Brokers {
    pub fn get(&self, url: &str) -> Arc<Broker> {
        let mut map = self.by_url.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(url.to_string())
            .or_insert_with(|| Broker::start(url))
            .clone()
    }
}

/// Declares `specs` on a channel of their own.
async fn declare_all(connection: &Connection, specs: &[topology::QueueSpec], shown: &str) {
    if specs.is_empty() {
        return;
    }
    let channel = match bounded(
        CHANNEL_TIMEOUT,
        "opening a channel",
        connection.create_channel(),
    )
    .await
    {
        Ok(channel) => channel,
        Err(err) => {
            tracing::warn!(broker = %shown, "cannot declare queues: {err:#}");
            return;
        }
    };
    for spec in specs {
        if let Err(err) = topology::declare_queue(&channel, spec).await {
            tracing::error!(broker = %shown, queue = %spec.queue, "{err:#}");
            return;
        }
    }
    let _ = bounded(
        CHANNEL_TIMEOUT,
        "closing",
        channel.close(200, "declared".into()),
    )
    .await;
}

async fn supervise(
    url: String,
    shown: String,
    topology: Arc<Mutex<Vec<topology::QueueSpec>>>,
    tx: watch::Sender<Option<Arc<Session>>>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut generation = 0;
    let mut failures = 0u32;
    loop {
        let connection = match connect(&url, "trellis", CONNECT_TIMEOUT).await {
            Ok(ok) => ok,
            Err(err) => {
                failures += 1;
                // The first failure and then every tenth: a broker that stays
                // down must not flood the log.
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(broker = %shown, attempts = failures, "cannot connect to the broker: {err:#}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        generation += 1;
        failures = 0;
        backoff = BACKOFF_MIN;
        tracing::info!(broker = %shown, generation, "connected to the broker");
        let session = Arc::new(Session {
            connection,
            generation,
            publisher: tokio::sync::Mutex::new(None),
            url: url.clone(),
            consumers: tokio::sync::Mutex::new(Vec::new()),
        });
        let mut events = session.connection.events_listener();
        let specs = topology.lock().unwrap_or_else(|e| e.into_inner()).clone();
        declare_all(&session.connection, &specs, &shown).await;
        tx.send_replace(Some(session.clone()));

        // Until the connection reports an error or stops being connected
        // (checked every second as well: not every way of dying is an event).
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let reason = loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Event::Error(err)) => break err.to_string(),
                    Some(Event::ConnectionBlocked(why)) => {
                        tracing::warn!(broker = %shown, "the broker blocked publishing: {why}");
                    }
                    Some(Event::ConnectionUnblocked) => {
                        tracing::info!(broker = %shown, "the broker unblocked publishing");
                    }
                    Some(_) => {}
                    None => break "connection closed".to_string(),
                },
                _ = tick.tick() => {
                    if !session.connection.status().connected() {
                        break "connection closed".to_string();
                    }
                }
            }
        };
        tx.send_replace(None);
        tracing::warn!(broker = %shown, "lost the broker connection ({reason}); reconnecting");
        // Closed aside: reconnecting waits for nothing the old session does.
        tokio::spawn(async move { session.close().await });
        tokio::time::sleep(BACKOFF_MIN).await;
    }
}

/// Connects to `url` (TCP and the AMQP handshake) within `limit`.
async fn connect(url: &str, name: &str, limit: Duration) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    bounded(limit, "connecting", Connection::connect(url, properties)).await
}

/// `operation` within `limit`; past it, an error naming `what`.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    operation: impl Future<Output = Result<T, lapin::Error>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, operation).await {
        Ok(result) => result.with_context(|| what.to_string()),
        Err(_) => anyhow::bail!("{what}: no answer within {limit:?}"),
    }
}

/// `amqp://user:secret@host/vhost` → `amqp://user:***@host/vhost`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    if path.is_empty() && !rest.contains('/') {
        format!("{scheme}://{authority}")
    } else {
        format!("{scheme}://{authority}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{connect, redact};

    /// A broker going down or coming up can take the socket and never
    /// answer: connecting gives up instead of waiting for ever.
    #[tokio::test]
    async fn connecting_to_a_silent_listener_gives_up() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        // Accepts, holds the socket open, says nothing.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let started = Instant::now();
        let err = connect(
            &format!("amqp://guest:guest@{address}/%2f"),
            "test",
            Duration::from_millis(300),
        )
        .await
        .expect_err("a silent listener cannot be connected to");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            err.to_string().contains("no answer within"),
            "unexpected error: {err:#}"
        );
        silent.abort();
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://localhost"), "amqp://localhost");
        assert_eq!(redact("amqp://u@h/v"), "amqp://u@h/v");
    }
}
