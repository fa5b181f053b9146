//! The connection pools behind guests' `connection` resources: one per
//! server, database and role, under one cap on open connections.
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
//! - [`Pools`] caps the connections open across every pool, idle ones
//!   included: that is what the server's `max_connections` counts. With
//!   thousands of tenants' roles each keeping a warm connection, the cap is
//!   reached by idle connections long before busy ones, so a pool that needs
//!   a new connection at the cap closes the one idle longest, in any pool.
//!   Only when every open connection is in use does it wait.
//! - At most `max` connections are open per pool, idle ones included.
//! - The most recently used idle connection is handed out first, so under
//!   light load a few stay warm and the rest age out: connections idle
//!   longer than `idle_timeout` are closed (on the next acquire or release,
//!   and by [`Pools::reap`], which the owner calls periodically; it also
//!   forgets pools left with no connection).
//! - A waiter is woken by a connection coming back as well as by a slot
//!   freeing up, and gives up at its deadline.

use std::collections::HashMap;
use std::hash::Hash;
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

/// Every pool of a process, keyed by `K`, and the cap on their connections.
pub struct Pools<K> {
    /// One permit per open connection in any pool, idle or in use.
    open: Arc<Semaphore>,
    max_open: usize,
    pools: Mutex<HashMap<K, Arc<Pool>>>,
    /// Signalled whenever a connection goes idle anywhere: a waiter at the
    /// cap can then close it to make room.
    returned: Arc<Notify>,
    max_per_pool: u32,
    idle_timeout: Duration,
}

/// The connections of one server, database and role.
pub struct Pool {
    options: Arc<PgConnectOptions>,
    /// One permit per open connection of this pool, idle or in use.
    slots: Arc<Semaphore>,
    /// Oldest first: handed out from the back, evicted from the front.
    idle: Mutex<Vec<Idle>>,
    returned: Notify,
    any_returned: Arc<Notify>,
    idle_timeout: Duration,
}

struct Idle {
    conn: PgConnection,
    since: Instant,
    slot: OwnedSemaphorePermit,
    open: OwnedSemaphorePermit,
    backend: Backend,
}

/// A connection taken from a [`Pool`]; give it back with [`Pool::release`]
/// (dropping it closes it instead).
pub struct Pooled {
    conn: PgConnection,
    slot: OwnedSemaphorePermit,
    open: OwnedSemaphorePermit,
    /// Its server process, to stop when a statement is abandoned.
    pub backend: Backend,
}

/// The server process behind a connection. Dropped while [`Backend::busy`]
/// (a statement was cut off: the host's deadline passed, or the guest was
/// stopped mid-statement), it has the server terminate that process:
/// closing the socket alone leaves a statement running until it next writes
/// to the client, and a guest that lifted its `statement_timeout` (`SET`,
/// `set_config` in a `DO` block) would keep the server busy for as long as
/// it asked.
pub struct Backend {
    pid: i32,
    options: Arc<PgConnectOptions>,
    pub busy: bool,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if !self.busy {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (pid, options) = (self.pid, self.options.clone());
        // As the same role: a role may end its own processes, and no other's.
        runtime.spawn(async move {
            let terminate = async {
                let mut conn = options.connect().await?;
                sqlx::query("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            };
            match tokio::time::timeout(Duration::from_secs(10), terminate).await {
                Ok(Ok(())) => {
                    tracing::debug!(pid, "terminated an abandoned statement's server process")
                }
                Ok(Err(err)) => tracing::warn!(
                    pid,
                    "cannot terminate an abandoned statement's server process: {err}"
                ),
                Err(_) => tracing::warn!(
                    pid,
                    "cannot terminate an abandoned statement's server process: no answer"
                ),
            }
        });
    }
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

impl<K: Eq + Hash + Clone> Pools<K> {
    /// At most `max_open` connections across all pools, `max_per_pool` in
    /// any one; idle connections close after `idle_timeout`.
    pub fn new(max_open: u32, max_per_pool: u32, idle_timeout: Duration) -> Self {
        let max_open = max_open.max(1) as usize;
        Self {
            open: Arc::new(Semaphore::new(max_open)),
            max_open,
            pools: Mutex::new(HashMap::new()),
            returned: Arc::new(Notify::new()),
            max_per_pool: max_per_pool.max(1),
            idle_timeout,
        }
    }

    /// The pool for `key`, created (without connecting) on first use;
    /// `options` is only read then.
    pub fn pool(&self, key: K, options: impl FnOnce() -> PgConnectOptions) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Pool {
                    options: Arc::new(options()),
                    slots: Arc::new(Semaphore::new(self.max_per_pool as usize)),
                    idle: Mutex::new(Vec::new()),
                    returned: Notify::new(),
                    any_returned: self.returned.clone(),
                    idle_timeout: self.idle_timeout,
                })
            })
            .clone()
    }

    /// A connection of `pool`: an idle one if there is one, else a new one
    /// if both the pool and the cap have room (closing the longest-idle
    /// connection elsewhere to make it), else the first to come back or free
    /// up before `deadline`.
    pub async fn acquire(&self, pool: &Pool, deadline: Instant) -> Result<Pooled, sqlx::Error> {
        loop {
            if let Some(conn) = pool.take_idle().await {
                return Ok(conn);
            }
            let returned = pool.returned.notified();
            tokio::pin!(returned);
            // Registered before looking again, so a return in between is not missed.
            returned.as_mut().enable();
            if let Some(conn) = pool.take_idle().await {
                return Ok(conn);
            }
            let slot = tokio::select! {
                slot = pool.slots.clone().acquire_owned() => slot.map_err(|_| sqlx::Error::PoolClosed)?,
                () = &mut returned => continue,
                () = tokio::time::sleep_until(deadline.into()) => return Err(sqlx::Error::PoolTimedOut),
            };
            let open = tokio::select! {
                open = self.room(deadline) => open?,
                // One of ours came back while we waited for room: take it.
                () = &mut returned => continue,
            };
            let connect = async {
                let mut conn = pool.options.connect().await?;
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut conn)
                    .await?;
                Ok::<_, sqlx::Error>((conn, pid))
            };
            return match tokio::time::timeout_at(deadline.into(), connect).await {
                Ok(Ok((conn, pid))) => Ok(Pooled {
                    conn,
                    slot,
                    open,
                    backend: Backend {
                        pid,
                        options: pool.options.clone(),
                        busy: false,
                    },
                }),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(sqlx::Error::PoolTimedOut),
            };
        }
    }

    /// A permit for one more open connection: free, or made by closing the
    /// longest-idle connection of any pool, or the first to come free.
    async fn room(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, sqlx::Error> {
        loop {
            if let Ok(open) = self.open.clone().try_acquire_owned() {
                return Ok(open);
            }
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if self.close_longest_idle() {
                continue;
            }
            tokio::select! {
                open = self.open.clone().acquire_owned() => return open.map_err(|_| sqlx::Error::PoolClosed),
                () = &mut returned => {}
                () = tokio::time::sleep_until(deadline.into()) => return Err(sqlx::Error::PoolTimedOut),
            }
        }
    }

    /// Closes the connection idle longest across all pools; false if none is.
    fn close_longest_idle(&self) -> bool {
        let pools: Vec<Arc<Pool>> = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let oldest = pools
            .iter()
            .filter_map(|pool| Some((pool.oldest_idle_since()?, pool)))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, pool)) => pool.close_oldest_idle(),
            None => false,
        }
    }

    /// Closes connections idle longer than the idle timeout, and forgets
    /// pools with no connection open (a deleted tenant's, say).
    pub fn reap(&self) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|_, pool| {
            pool.reap();
            // Only this map holds it, and it has no connection: nobody can be
            // acquiring from it, so it can go (it is made again on demand).
            Arc::strong_count(pool) > 1
                || pool.slots.available_permits() < self.max_per_pool as usize
        });
    }

    /// Connections open across all pools, idle ones included.
    pub fn open_count(&self) -> usize {
        self.max_open - self.open.available_permits()
    }

    /// Pools known (for tests and metrics).
    /// Idle connections across all pools.
    pub fn idle_count(&self) -> usize {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.values().map(|pool| pool.idle_count()).sum()
    }

    /// The cap on open connections.
    pub fn max_open(&self) -> usize {
        self.max_open
    }

    pub fn pool_count(&self) -> usize {
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Pool {
    /// The most recently returned live idle connection, closing stale ones.
    async fn take_idle(&self) -> Option<Pooled> {
        loop {
            let idle = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.pop()?
            };
            let idle_for = idle.since.elapsed();
            if idle_for >= self.idle_timeout {
                drop(idle); // closes it, frees its slot and its room under the cap
                continue;
            }
            let mut conn = idle.conn;
            if idle_for >= PING_IF_IDLE_FOR && conn.ping().await.is_err() {
                continue;
            }
            return Some(Pooled {
                conn,
                slot: idle.slot,
                open: idle.open,
                backend: idle.backend,
            });
        }
    }

    /// Puts a clean connection back for the next acquire.
    pub fn release(&self, mut conn: Pooled) {
        conn.backend.busy = false;
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(Idle {
                conn: conn.conn,
                since: Instant::now(),
                slot: conn.slot,
                open: conn.open,
                backend: conn.backend,
            });
        }
        self.returned.notify_one();
        self.any_returned.notify_waiters();
    }

    fn oldest_idle_since(&self) -> Option<Instant> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.first().map(|i| i.since)
    }

    fn close_oldest_idle(&self) -> bool {
        let oldest = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.is_empty() {
                return false;
            }
            idle.remove(0)
        };
        drop(oldest); // closed outside the lock
        true
    }

    /// Closes connections idle longer than the idle timeout.
    fn reap(&self) {
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
        let pools = Pools::new(10, 2, Duration::from_millis(400));
        let pool = pools.pool("a", options);

        // Released and taken again: the same server session, no new connection.
        let mut first = pools.acquire(&pool, soon()).await.expect("connect");
        let pid = backend_pid(&mut first).await;
        pool.release(first);
        let mut again = pools.acquire(&pool, soon()).await.expect("reuse");
        assert_eq!(backend_pid(&mut again).await, pid);

        // Two at most: a third waits, and gets the one released.
        let second = pools.acquire(&pool, soon()).await.expect("second");
        let pools = Arc::new(pools);
        let waiter = tokio::spawn({
            let (pools, pool) = (pools.clone(), pool.clone());
            async move {
                let mut conn = pools
                    .acquire(&pool, soon())
                    .await
                    .expect("woken by a release");
                backend_pid(&mut conn).await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "a third connection was opened");
        pool.release(again);
        assert_eq!(waiter.await.expect("waiter"), pid);

        // Full (`second` held, the waiter's connection closed on drop freed
        // its slot, so take it): a deadline, not a hang.
        let third = pools.acquire(&pool, soon()).await.expect("the freed slot");
        let full = pools
            .acquire(&pool, Instant::now() + Duration::from_millis(100))
            .await;
        assert!(
            matches!(full, Err(sqlx::Error::PoolTimedOut)),
            "{:?}",
            full.err()
        );

        // Idle past the timeout: closed, and the empty pool forgotten.
        pool.release(second);
        pool.release(third);
        assert_eq!(pool.idle_count(), 2);
        assert_eq!(pools.open_count(), 2);
        tokio::time::sleep(Duration::from_millis(450)).await;
        drop(pool);
        pools.reap();
        assert_eq!(pools.open_count(), 0);
        assert_eq!(pools.pool_count(), 0);
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_anywhere_makes_room() {
        let pools = Arc::new(Pools::new(2, 4, Duration::from_secs(30)));
        let (a, b, c) = (
            pools.pool("a", options),
            pools.pool("b", options),
            pools.pool("c", options),
        );

        // Two idle connections of `a` fill the cap.
        let mut older = pools.acquire(&a, soon()).await.expect("a1");
        let older_pid = backend_pid(&mut older).await;
        let mut newer = pools.acquire(&a, soon()).await.expect("a2");
        let newer_pid = backend_pid(&mut newer).await;
        a.release(older);
        tokio::time::sleep(Duration::from_millis(10)).await;
        a.release(newer);
        assert_eq!(pools.open_count(), 2);

        // `b` needs one: the one idle longest goes, the warmer one stays.
        let mut in_b = pools.acquire(&b, soon()).await.expect("b makes room");
        let b_pid = backend_pid(&mut in_b).await;
        assert!(b_pid != older_pid && b_pid != newer_pid);
        assert_eq!(a.idle_count(), 1);
        assert_eq!(pools.open_count(), 2);
        let mut kept = pools.acquire(&a, soon()).await.expect("a again");
        assert_eq!(backend_pid(&mut kept).await, newer_pid);

        // Both in use: `c` waits rather than exceed the cap, and is served
        // as soon as one comes back anywhere.
        let waiter = tokio::spawn({
            let (pools, c) = (pools.clone(), c.clone());
            async move {
                let mut conn = pools
                    .acquire(&c, soon())
                    .await
                    .expect("room after a release");
                (backend_pid(&mut conn).await, conn)
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiter.is_finished(),
            "opened a third connection over the cap"
        );
        assert_eq!(pools.open_count(), 2);
        b.release(in_b);
        let (c_pid, in_c) = waiter.await.expect("waiter");
        assert_ne!(c_pid, b_pid, "c got b's connection, not one of its own");
        assert_eq!(b.idle_count(), 0, "b's idle connection was closed for c");

        // Nothing idle and the cap in use: a deadline, not a hang.
        let full = pools
            .acquire(&b, Instant::now() + Duration::from_millis(100))
            .await;
        assert!(
            matches!(full, Err(sqlx::Error::PoolTimedOut)),
            "{:?}",
            full.err()
        );
        assert_eq!(pools.open_count(), 2);
        drop((kept, in_c));
        assert_eq!(pools.open_count(), 0);
    }
}
