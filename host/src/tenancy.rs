//! What a tenant's apps own outside the process, and the ledger that
//! remembers it: everything is recorded *before* it is created, so a
//! refused deployment, a crash halfway through one, or a component dropped
//! from a later manifest leaves nothing that deleting the tenant (or a
//! refused deployment's cleanup) would not find.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::broker::topology::QueueSpec;

/// One thing an app of a tenant owns outside the process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// A managed database: its schema, the outbox schema beside it and its
    /// role (see `capabilities::database::managed`).
    Schema { schema: String },
    /// A consumer's queue, with its retry and dead-letter queues.
    Queue { spec: QueueSpec },
    /// An exchange the app's consumers or publishers use.
    Exchange { exchange: String },
}

impl Resource {
    /// The ledger's key of the resource within its app: kind and name.
    pub fn key(&self) -> (&'static str, &str) {
        match self {
            Self::Schema { schema } => ("schema", schema),
            Self::Queue { spec } => ("queue", &spec.queue),
            Self::Exchange { exchange } => ("exchange", exchange),
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where an app's resources are recorded before they are created
/// (`trellis serve` keeps it in the platform's store).
pub trait Ledger: Send + Sync + std::fmt::Debug {
    /// Records that app `app` of the ledger's tenant owns `resource`.
    fn record<'a>(
        &'a self,
        app: &'a str,
        resource: &'a Resource,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}
