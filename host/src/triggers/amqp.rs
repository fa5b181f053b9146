//! `[[trigger.amqp]]`: consume a queue, one fresh instance per delivery.
//!
//! Each consumer is a task that waits for a broker session, declares its
//! queue (see [`crate::broker::topology`]), sets the prefetch — which is also
//! how many deliveries it handles at once — and hands every delivery to the
//! component's `trellis:messaging/handler.handle`. The message is
//! acknowledged only after the handler said `ack`. `retry` (or a trap, or a
//! missed deadline) republishes it, confirmed, to the delay queue for its
//! attempt and then acknowledges the original; after `max_attempts`, or on
//! `reject`, the message is rejected without requeueing and the broker
//! dead-letters it. When the connection drops, unacknowledged deliveries go
//! back to the queue and the consumer starts over on the next session.

use std::sync::Arc;
use tracing::Instrument as _;

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use lapin::BasicProperties;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio::task::JoinSet;
use wasmtime::Trap;

use crate::app::{App, AppComponent};
use crate::broker::topology::{self, ATTEMPT_HEADER, QueueSpec};
use crate::broker::{Broker, Session};
use crate::capabilities::messaging::bindings::{Delivery, Disposition, Message};
use crate::metrics::Settled;

/// Headers that keep a retried message's original address (the retry hop
/// goes through the default exchange).
const EXCHANGE_HEADER: &str = "x-trellis-exchange";
const ROUTING_KEY_HEADER: &str = "x-trellis-routing-key";

/// One `[[trigger.amqp]]`, resolved.
#[derive(Debug, Clone)]
pub struct AmqpConsumer {
    pub component: String,
    pub spec: QueueSpec,
    pub prefetch: u16,
}

/// Consumes across reconnections until `stopping` turns true; then drains
/// (see [`consume`]) and returns.
pub async fn run(
    app: Arc<App>,
    consumer: Arc<AmqpConsumer>,
    broker: Arc<Broker>,
    mut stopping: watch::Receiver<bool>,
) {
    let queue = consumer.spec.queue.clone();
    let mut sessions = broker.sessions();
    let mut last = 0;
    loop {
        let session = tokio::select! {
            session = sessions.wait_for(|s| s.as_ref().is_some_and(|s| s.generation != last)) => match session {
                Ok(session) => session.clone(),
                Err(_) => return,
            },
            () = stopped(&mut stopping) => return,
        };
        let Some(session) = session else { continue };
        last = session.generation;
        let outcome = consume(&app, &consumer, &session, &mut stopping).await;
        if *stopping.borrow() {
            if let Err(err) = outcome {
                tracing::error!(%queue, "consumer failed while stopping: {err:#}");
            }
            tracing::info!(%queue, "consumer drained and stopped");
            return;
        }
        let pause = match outcome {
            Ok(()) => {
                tracing::info!(%queue, "consumer stopped; starting over");
                std::time::Duration::from_secs(1)
            }
            Err(err) => {
                tracing::error!(%queue, "consumer failed: {err:#}");
                std::time::Duration::from_secs(5)
            }
        };
        if session.connection.status().connected() {
            // The session lives on, so not a broker outage: the consumer's
            // own connection or channel went, or its queue was declared with
            // other settings. Start over on this session after a pause.
            tokio::select! {
                () = tokio::time::sleep(pause) => last = 0,
                () = stopped(&mut stopping) => return,
            }
        }
    }
}

/// One subscription on one connection, until the connection goes or
/// `stopping` turns true. To stop, it cancels the subscription (the broker
/// sends no more), then waits for the deliveries in hand to be settled.
async fn consume(
    app: &Arc<App>,
    consumer: &Arc<AmqpConsumer>,
    session: &Arc<Session>,
    stopping: &mut watch::Receiver<bool>,
) -> Result<()> {
    let spec = &consumer.spec;
    let lease = session.consumer_channel().await?;
    let channel = &lease.channel;
    topology::declare_queue(channel, spec).await?;
    channel
        .basic_qos(consumer.prefetch, BasicQosOptions::default())
        .await
        .context("setting the prefetch")?;
    let tag = format!("trellis.{}.{}", app.name, consumer.component);
    let mut deliveries = channel
        .basic_consume(
            spec.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming `{}`", spec.queue))?;
    tracing::info!(queue = %spec.queue, component = %consumer.component, prefetch = consumer.prefetch, "consuming");
    let mut in_hand = JoinSet::new();
    loop {
        tokio::select! {
            delivery = deliveries.next() => match delivery {
                Some(delivery) => {
                    let delivery = delivery.context("delivery stream")?;
                    in_hand.spawn(handle(
                        app.clone(),
                        consumer.clone(),
                        session.clone(),
                        delivery,
                    ));
                }
                None => break,
            },
            Some(_) = in_hand.join_next(), if !in_hand.is_empty() => {}
            () = stopped(stopping) => {
                if let Err(err) = channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await
                {
                    tracing::warn!(queue = %spec.queue, "cannot cancel the subscription: {err}");
                }
                tracing::info!(queue = %spec.queue, in_hand = in_hand.len(), "draining");
                break;
            }
        }
    }
    // Handled to the end whether the connection is gone or we are stopping:
    // a delivery that can no longer be settled is redelivered.
    while in_hand.join_next().await.is_some() {}
    Ok(())
}

/// Completes once `stopping` is true (or its sender is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

async fn handle(
    app: Arc<App>,
    consumer: Arc<AmqpConsumer>,
    session: Arc<Session>,
    delivery: AmqpDelivery,
) {
    let spec = &consumer.spec;
    let mut incoming = to_guest(&delivery, &spec.queue);
    let attempt = incoming.attempt;
    let message_id = incoming.message.message_id.clone().unwrap_or_default();
    let component = app.component(&consumer.component).cloned();
    // A consumer span continuing the publisher's trace.
    let span = tracing::info_span!(
        "deliver",
        otel.name = %format_args!("process {}", spec.queue),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.destination.name = spec.queue.as_str(),
        messaging.message.id = message_id.as_str(),
        messaging.rabbitmq.destination.routing_key = incoming.message.routing_key.as_str(),
        tenant = app.owner.tenant.as_deref().unwrap_or(""),
        app = app.name.as_str(),
        component = consumer.component.as_str(),
        trace_id = tracing::field::Empty,
    );
    crate::telemetry::continue_from_pairs(&span, &incoming.message.headers);
    if delivery.redelivered
        && let Some(component) = &component
    {
        let metrics = &app.runtime.metrics;
        metrics.redelivered(&component.labels, &spec.queue);
    }
    let disposition = match &component {
        Some(component) => {
            let invoke = crate::triggers::http::invoke_span(&app, component, &span);
            crate::telemetry::inject_pairs(&invoke, &mut incoming.message.headers);
            call(&app, component, &incoming).instrument(invoke).await
        }
        None => Disposition::Retry,
    };
    if !matches!(disposition, Disposition::Ack) {
        span.record("otel.status_code", "error");
    }
    let (outcome, settled) = match disposition {
        Disposition::Ack => (
            delivery.acker.ack(BasicAckOptions::default()).await,
            Settled::Ack,
        ),
        Disposition::Reject => {
            tracing::warn!(queue = %spec.queue, %message_id, attempt, "handler rejected the message; dead-lettering it");
            let rejected = delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
            (rejected, Settled::Reject)
        }
        Disposition::Retry if attempt >= spec.max_attempts => {
            tracing::warn!(queue = %spec.queue, %message_id, attempt, "no attempts left; dead-lettering the message");
            let rejected = delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
            (rejected, Settled::DeadLetter)
        }
        Disposition::Retry => {
            let delay = spec.retry_delay_after(attempt);
            let retry_queue = topology::retry_queue(&spec.queue, delay);
            let properties = retry_properties(&delivery, attempt + 1);
            // On the session's confirm-mode channel: confirmed before the
            // original is acknowledged.
            match session
                .publish_confirmed("", &retry_queue, &delivery.data, properties)
                .await
            {
                Ok(()) => {
                    tracing::info!(queue = %spec.queue, %message_id, attempt, delay_ms = delay.as_millis() as u64, "retrying later");
                    (
                        delivery.acker.ack(BasicAckOptions::default()).await,
                        Settled::Retry,
                    )
                }
                Err(err) => {
                    // Not parked for later: put it back as it is.
                    tracing::warn!(queue = %spec.queue, %message_id, "cannot schedule the retry ({err}); requeueing");
                    let nacked = delivery
                        .acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await;
                    (nacked, Settled::Requeue)
                }
            }
        }
    };
    match outcome {
        Ok(_) => {
            if let Some(component) = &component {
                app.runtime
                    .metrics
                    .delivered(&component.labels, &spec.queue, settled);
            }
        }
        // The channel is gone: the broker redelivers the message.
        Err(err) => {
            tracing::warn!(queue = %spec.queue, %message_id, "cannot settle the delivery ({err}); it will be redelivered");
        }
    }
}

/// Runs the handler in a fresh instance. A trap or a missed deadline is a
/// `retry`: the message may well be fine and the fault passing.
async fn call(app: &Arc<App>, component: &Arc<AppComponent>, delivery: &Delivery) -> Disposition {
    let Some(pre) = component.handler.clone() else {
        tracing::error!(component = %component.id, "component exports no trellis:messaging/handler");
        return Disposition::Retry;
    };
    let runtime = &app.runtime;
    // Deliveries wait for capacity as long as it takes: the prefetch already
    // bounds how many are waiting. The tenant's instances count them too.
    let tenant_permit = match &app.owner.quota {
        Some(quota) => quota.wait_for_instance().await,
        None => None,
    };
    let component_permit = match &component.concurrency {
        Some(limit) => limit.clone().acquire_owned().await.ok(),
        None => None,
    };
    let Ok(_slot) = runtime.slots.clone().acquire_owned().await else {
        return Disposition::Retry;
    };
    let _held = (tenant_permit, component_permit);
    let deadline = app.deadline(component);
    let mut store = crate::store::new_store(app, component, deadline);
    let run = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance
            .trellis_messaging_handler()
            .call_handle(&mut store, delivery)
            .await
    };
    match tokio::time::timeout_at(deadline.into(), run).await {
        Ok(Ok(disposition)) => disposition,
        Ok(Err(err)) if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
            tracing::warn!(component = %component.id, "handler interrupted at its deadline; will retry");
            Disposition::Retry
        }
        Ok(Err(err)) => {
            tracing::error!(component = %component.id, error = ?err, "handler trapped; will retry");
            Disposition::Retry
        }
        Err(_) => {
            tracing::warn!(component = %component.id, "handler timed out waiting on I/O; will retry");
            Disposition::Retry
        }
    }
}

/// What the guest sees: the original exchange and routing key (also after a
/// retry hop), string headers without the broker's and host's `x-` ones, and
/// always a message id — for a message published without one, a digest of
/// its routing key and body, so that it too is stable across redeliveries.
fn to_guest(delivery: &AmqpDelivery, queue: &str) -> Delivery {
    let properties = &delivery.properties;
    let headers = properties.headers().as_ref();
    let header = |name: &str| {
        headers
            .and_then(|h| h.inner().get(name))
            .and_then(as_string)
    };
    let exchange = header(EXCHANGE_HEADER).unwrap_or_else(|| delivery.exchange.to_string());
    let routing_key =
        header(ROUTING_KEY_HEADER).unwrap_or_else(|| delivery.routing_key.to_string());
    let message_id = properties
        .message_id()
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| {
            let mut digest = Sha256::new();
            digest.update(routing_key.as_bytes());
            digest.update([0]);
            digest.update(&delivery.data);
            format!("sha256:{}", hex::encode(digest.finalize()))
        });
    let guest_headers = headers
        .map(|h| {
            h.inner()
                .iter()
                .filter(|(name, _)| !name.as_str().to_ascii_lowercase().starts_with("x-"))
                .filter_map(|(name, value)| Some((name.to_string(), as_string(value)?)))
                .collect()
        })
        .unwrap_or_default();
    Delivery {
        message: Message {
            routing_key,
            body: delivery.data.clone(),
            content_type: properties.content_type().as_ref().map(ToString::to_string),
            message_id: Some(message_id),
            correlation_id: properties
                .correlation_id()
                .as_ref()
                .map(ToString::to_string),
            headers: guest_headers,
        },
        exchange,
        queue: queue.to_string(),
        attempt: attempt_of(delivery),
        redelivered: delivery.redelivered,
    }
}

/// The attempt this delivery is: the host's count of retries so far, plus the
/// broker's count of redeliveries (a host that died mid-delivery, a requeue).
fn attempt_of(delivery: &AmqpDelivery) -> u32 {
    let headers = delivery.properties.headers().as_ref();
    let number = |name: &str| headers.and_then(|h| h.inner().get(name)).and_then(as_u32);
    let base = number(ATTEMPT_HEADER).unwrap_or(1).max(1);
    base.saturating_add(number("x-delivery-count").unwrap_or(0))
}

/// The delivery's properties for its next attempt, with its original address.
fn retry_properties(delivery: &AmqpDelivery, next_attempt: u32) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(existing) = delivery.properties.headers() {
        for (name, value) in existing.inner() {
            // x-death and x-delivery-count belong to the previous hop.
            let lower = name.as_str().to_ascii_lowercase();
            if lower == "x-death"
                || lower.starts_with("x-delivery")
                || lower.starts_with("x-first-death")
                || lower.starts_with("x-last-death")
            {
                continue;
            }
            headers.insert(name.clone(), value.clone());
        }
    }
    if !headers.contains_key(EXCHANGE_HEADER) {
        headers.insert(
            EXCHANGE_HEADER.into(),
            AMQPValue::LongString(LongString::from(delivery.exchange.as_str())),
        );
        headers.insert(
            ROUTING_KEY_HEADER.into(),
            AMQPValue::LongString(LongString::from(delivery.routing_key.as_str())),
        );
    }
    headers.insert(
        ShortString::from(ATTEMPT_HEADER),
        AMQPValue::LongLongInt(i64::from(next_attempt)),
    );
    delivery
        .properties
        .clone()
        .with_delivery_mode(2)
        .with_headers(headers)
}

fn as_string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        other => as_i64(other).map(|n| n.to_string()),
    }
}

fn as_u32(value: &AMQPValue) -> Option<u32> {
    as_i64(value).and_then(|n| u32::try_from(n).ok())
}

fn as_i64(value: &AMQPValue) -> Option<i64> {
    Some(match value {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    })
}
