//! Trellis: a runtime for Spin-format apps of WASI HTTP components.
//!
//! Built once per process or per app:
//! - [`config`]: host-wide limits ([`config::RuntimeConfig`]).
//! - [`engine`]: the wasmtime engine (pooling allocator) and its epoch ticker.
//! - [`cache`]: compiled components on disk, keyed by content and engine.
//! - [`manifest`]: Spin manifest v2, parsed and validated with precise errors.
//! - [`routing`]: Spin's HTTP routing rules.
//! - [`app`]: the [`app::Runtime`] and a loaded [`app::App`] of pre-instantiated components.
//!
//! Built per request:
//! - [`store`]: the state of one instance's `Store`.
//!
//! Called by guests ([`capabilities`]): `variables`, `outbound_http`,
//! `database`, `messaging` (publish).
//! Calling into guests ([`triggers`]): `http`, `amqp`.
//!
//! Running beside them: [`broker`] (the supervised RabbitMQ connection) and
//! [`outbox`] (the transactional outbox relay).
//!
//! Guarding the platform from its tenants (`docs/security.md`): [`egress`]
//! (connections judged by resolved address), [`notifiers`] (who sent a
//! Postgres notification), [`tenancy`] (what a tenant's apps own outside the
//! process), [`tls`] (the admin API's).
//!
//! [`cli`] is the `trellis` command line.

pub mod allowed_hosts;
pub mod app;
pub mod broker;
pub mod cache;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod egress;
pub mod engine;
pub mod gateway;
pub mod manifest;
pub mod metrics;
pub mod notifiers;
pub mod outbox;
pub mod platform;
pub mod routing;
pub mod store;
pub mod telemetry;
pub mod tenancy;
pub mod tls;
pub mod triggers;
