//! The connection pool behind guests' `connection` resources: one per server,
//! database and role.
//!
//! Why not sqlx's `PgPool`: it pings every connection when it comes back
//! (to catch one left mid-statement by a cancelled future), a round trip
//! per guest `open` that was a sixth of the database's work under the order
//! pipeline. Here the resource itself knows whether its connection is clean
//! (`super::Connection` tracks transactions, session state and abandoned
//! statements, and rolls back or resets before release), so a connection
//! returns to the pool without a round trip and is pinged only when it sat
//! idle.
//!
//! - At most `max` connections are open per pool, idle ones included.
//! - The most recently used idle connection is handed out first, so under
//!   light load a few stay warm and the rest age out: connections idle
//!   longer than `idle_timeout` are closed (on the next acquire or release,
//!   and by [`Pool::reap`], which the owner calls periodically).
//! - A waiter is woken by a connection coming back as well as by a slot
//!   freeing up, and gives up at its deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// A pooled connection idle at least this long is pinged before reuse: a
/// restarted server leaves dead connections behind. (Under load they come
/// back within milliseconds; one in use when the server went away fails its
/// next statement with a FATAL error and is discarded.)
const PING_IF_IDLE_FOR: Duration = Duration::from_millis(100);

pub struct Pool {
    options: PgConnectOptions,
    /// One permit per open connection, idle or in use.
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    returned: Notify,
    idle_timeout: Duration,
}

struct Idle {
    conn: PgConnection,
    since: Instant,
    slot: OwnedSemaphorePermit,
}

/// A connection taken from a [`Pool`]; give it back with [`Pooled::release`]
/// (dropping it closes it instead).
pub struct Pooled {
    conn: PgConnection,
    slot: OwnedSemaphorePermit,
}

impl std::ops::Deref for Pooled {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Pool {
    pub fn new(options: PgConnectOptions, max: u32, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            options,
            slots: Arc::new(Semaphore::new(max.max(1) as usize)),
            idle: Mutex::new(Vec::new()),
            returned: Notify::new(),
            idle_timeout,
        })
    }

    /// A connection: an idle one if there is one, else a new one if the pool
    /// has room, else the first to come back or free up before `deadline`.
    pub async fn acquire(&self, deadline: Instant) -> Result<Pooled, sqlx::Error> {
        loop {
            if let Some(conn) = self.take_idle().await {
                return Ok(conn);
            }
            let returned = self.returned.notified();
            tokio::pin!(returned);
            // Registered before looking again, so a return in between is not missed.
            returned.as_mut().enable();
            if let Some(conn) = self.take_idle().await {
                return Ok(conn);
            }
            let slot = tokio::select! {
                slot = self.slots.clone().acquire_owned() => slot.map_err(|_| sqlx::Error::PoolClosed)?,
                () = &mut returned => continue,
                () = tokio::time::sleep_until(deadline.into()) => return Err(sqlx::Error::PoolTimedOut),
            };
            let connect = self.options.connect();
            return match tokio::time::timeout_at(deadline.into(), connect).await {
                Ok(Ok(conn)) => Ok(Pooled { conn, slot }),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(sqlx::Error::PoolTimedOut),
            };
        }
    }

    /// The most recently returned live idle connection, closing stale ones.
    async fn take_idle(&self) -> Option<Pooled> {
        loop {
            let idle = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.pop()?
            };
            let idle_for = idle.since.elapsed();
            if idle_for >= self.idle_timeout {
                drop(idle); // closes it, frees its slot
                continue;
            }
            let mut conn = idle.conn;
            if idle_for >= PING_IF_IDLE_FOR && conn.ping().await.is_err() {
                continue;
            }
            return Some(Pooled {
                conn,
                slot: idle.slot,
            });
        }
    }

    /// Puts a clean connection back for the next acquire.
    pub fn release(&self, conn: Pooled) {
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(Idle {
                conn: conn.conn,
                since: Instant::now(),
                slot: conn.slot,
            });
        }
        self.returned.notify_one();
    }

    /// Closes connections idle longer than the idle timeout.
    pub fn reap(&self) {
        let stale: Vec<Idle> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let timeout = self.idle_timeout;
            let (stale, fresh) = idle
                .drain(..)
                .partition(|i: &Idle| i.since.elapsed() >= timeout);
            *idle = fresh;
            stale
        };
        drop(stale);
    }

    /// Idle connections (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The local Postgres (trust auth), as in the other database tests.
    fn options() -> PgConnectOptions {
        "postgres://postgres@127.0.0.1:5432/postgres"
            .parse()
            .expect("URL")
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    async fn backend_pid(conn: &mut Pooled) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut **conn)
            .await
            .expect("query")
    }

    #[tokio::test]
    async fn connections_are_reused_bounded_and_aged_out() {
        let pool = Pool::new(options(), 2, Duration::from_millis(400));

        // Released and taken again: the same server session, no new connection.
        let mut first = pool.acquire(soon()).await.expect("connect");
        let pid = backend_pid(&mut first).await;
        pool.release(first);
        let mut again = pool.acquire(soon()).await.expect("reuse");
        assert_eq!(backend_pid(&mut again).await, pid);

        // Two at most: a third waits, and gets the one released.
        let second = pool.acquire(soon()).await.expect("second");
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move {
                let mut conn = pool.acquire(soon()).await.expect("woken by a release");
                backend_pid(&mut conn).await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "a third connection was opened");
        pool.release(again);
        assert_eq!(waiter.await.expect("waiter"), pid);

        // Full (`second` held, the waiter's connection closed on drop freed
        // its slot, so take it): a deadline, not a hang.
        let third = pool.acquire(soon()).await.expect("the freed slot");
        let full = pool
            .acquire(Instant::now() + Duration::from_millis(100))
            .await;
        assert!(
            matches!(full, Err(sqlx::Error::PoolTimedOut)),
            "{:?}",
            full.err()
        );

        // Idle past the timeout: closed.
        pool.release(second);
        pool.release(third);
        assert_eq!(pool.idle_count(), 2);
        tokio::time::sleep(Duration::from_millis(450)).await;
        pool.reap();
        assert_eq!(pool.idle_count(), 0);
    }
}
