//! Who sent a Postgres notification. `NOTIFY` takes no privilege: any role
//! connected to a database may send anything on any channel, so a tenant's
//! SQL can forge the host's own notifications (the platform's change feed,
//! the outbox's wake-ups) or flood them. A listener asks, for each
//! notification, which login role its sending process belongs to
//! (`pg_stat_activity`, by the process id the notification carries), and
//! acts only on those from the role that may send it. A role is cached per
//! process for a second, so a flood from one process costs one lookup a
//! second, not one per message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;

/// How long a process's role is trusted without asking again (process ids
/// are reused only after the process ended).
const CACHE_FOR: Duration = Duration::from_secs(1);
/// At most this many processes remembered; the cache starts over past it.
const CACHE_MAX: usize = 10_000;

/// The roles of notifying processes, as one listener has looked them up.
#[derive(Default)]
pub struct Notifiers {
    roles: HashMap<u32, (Option<String>, Instant)>,
}

impl Notifiers {
    /// The login role of process `pid`, asked on `listener`'s connection;
    /// `None` if the process is gone (or the lookup failed).
    pub async fn role_of(&mut self, listener: &mut PgListener, pid: u32) -> Option<String> {
        let now = Instant::now();
        if let Some((role, at)) = self.roles.get(&pid)
            && now.duration_since(*at) < CACHE_FOR
        {
            return role.clone();
        }
        let role: Option<String> = match i32::try_from(pid) {
            Ok(pid) => sqlx::query_scalar(
                "SELECT usename::text FROM pg_catalog.pg_stat_activity WHERE pid = $1",
            )
            .bind(pid)
            .fetch_optional(&mut *listener)
            .await
            .ok()
            .flatten(),
            Err(_) => None,
        };
        if self.roles.len() >= CACHE_MAX {
            self.roles.clear();
        }
        self.roles.insert(pid, (role.clone(), now));
        role
    }
}
