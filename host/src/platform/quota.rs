//! A tenant's limits, and the shared state that enforces the ones counted at
//! request time: instances alive at once and requests per second.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, Quota as Rate, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of one tenant; unset ones are the host's (`trellis serve` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Linear memory of one instance, MiB: a component asking for more gets this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mib: Option<u64>,
    /// Deadline of one request or delivery, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Instances alive at once across the tenant's apps (HTTP requests,
    /// chained calls and message deliveries included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Public requests per second across the tenant's apps (bursts up to
    /// the same number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u32>,
    /// CPU time its guests may run per second, in thousandths of a core,
    /// across all its instances: a guest over it is paused at its next
    /// epoch tick until the budget refills (like a cgroup's `cpu.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millicores: Option<u32>,
}

impl TenantLimits {
    /// A one-line complaint about a value that makes no sense, if any.
    pub fn check(&self) -> Result<(), String> {
        let zero = |name: &str| Err(format!("limits.{name} must be at least 1"));
        match self {
            Self {
                memory_limit_mib: Some(0),
                ..
            } => zero("memory_limit_mib"),
            Self {
                timeout_ms: Some(0),
                ..
            } => zero("timeout_ms"),
            Self {
                max_concurrency: Some(0),
                ..
            } => zero("max_concurrency"),
            Self {
                requests_per_second: Some(0),
                ..
            } => zero("requests_per_second"),
            _ => Ok(()),
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Over the request rate; try again after this long.
    Rate(Duration),
    /// As many instances as allowed are running.
    Concurrency,
}

/// Refusals of one tenant answered at once, per second (and in a burst).
/// A client that honours `Retry-After` never gets more; one that retries at
/// once, on many connections, would otherwise make answering its `429`s
/// most of the host's work, at its neighbours' expense.
const PROMPT_REFUSALS_PER_SECOND: NonZeroU32 = NonZeroU32::new(100).unwrap();

/// How long a refusal beyond those is held before it is answered: the
/// `Retry-After` it carries, so a client retrying at once on a connection
/// gets one refusal per second there, not thousands.
pub const REFUSAL_HOLD: Duration = Duration::from_secs(1);

/// What growing linear memory by a MiB is charged to a tenant's CPU budget.
/// Faulting the pages in, zeroing them and resetting them when the instance
/// goes is the kernel's work, which epoch ticks never see; measured at about
/// 0.3 ms per MiB on the benchmark machine (`bench/tenants.sh`, hogging),
/// charged with some margin.
const GROWTH_COST_PER_MIB: Duration = Duration::from_micros(500);

/// What enforces a tenant's limits at request time; one per tenant, shared
/// by all its apps.
pub struct Quota {
    instances: Option<Arc<Semaphore>>,
    rate: Option<DefaultDirectRateLimiter>,
    /// One cell per epoch tick of guest execution.
    cpu: Option<DefaultDirectRateLimiter>,
    /// The epoch tick: what one cell of `cpu` is worth.
    tick: Duration,
    /// One cell per refusal answered at once.
    prompt_refusals: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quota")
            .field(
                "instances",
                &self.instances.as_ref().map(|s| s.available_permits()),
            )
            .field("rate", &self.rate.is_some())
            .field("cpu", &self.cpu.is_some())
            .finish()
    }
}

impl Quota {
    /// `tick`: the engine's epoch tick, the unit CPU time is counted in.
    pub fn new(limits: &TenantLimits, tick: Duration) -> Self {
        let tick_us = tick.as_micros().max(1);
        Self {
            cpu: limits.cpu_millicores.and_then(|millicores| {
                // Ticks per second the budget allows, and a burst of a tenth
                // of a second's worth.
                let per_second = (u128::from(millicores) * 1000 / tick_us).max(1);
                let per_second = NonZeroU32::new(u32::try_from(per_second).unwrap_or(u32::MAX))?;
                let burst = NonZeroU32::new((per_second.get() / 10).max(1))?;
                Some(RateLimiter::direct(
                    Rate::per_second(per_second).allow_burst(burst),
                ))
            }),
            instances: limits
                .max_concurrency
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            rate: limits
                .requests_per_second
                .and_then(NonZeroU32::new)
                .map(|n| RateLimiter::direct(Rate::per_second(n))),
            tick,
            prompt_refusals: RateLimiter::direct(Rate::per_second(PROMPT_REFUSALS_PER_SECOND)),
        }
    }

    /// Call before answering a refusal: returns at once while the tenant's
    /// refusals are few, after [`REFUSAL_HOLD`] (not past `deadline`) once
    /// its clients flood.
    pub async fn hold_refusal(&self, deadline: Option<Instant>) {
        let mut hold = self.refusal_hold();
        if let Some(deadline) = deadline {
            hold = hold.min(deadline.saturating_duration_since(Instant::now()));
        }
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
    }

    /// How long to hold the next refusal.
    fn refusal_hold(&self) -> Duration {
        match self.prompt_refusals.check() {
            Ok(()) => Duration::ZERO,
            Err(_) => REFUSAL_HOLD,
        }
    }

    /// Takes one request from the rate allowance.
    pub fn admit_request(&self) -> Result<(), Refused> {
        match &self.rate {
            Some(rate) => rate
                .check()
                .map_err(|not_until| Refused::Rate(not_until.wait_time_from(rate.clock().now()))),
            None => Ok(()),
        }
    }

    /// Accounts one epoch tick of a guest's execution: `None` to go on, or
    /// how long to pause it for the budget to refill.
    pub fn cpu_tick(&self) -> Option<Duration> {
        let cpu = self.cpu.as_ref()?;
        cpu.check()
            .err()
            .map(|not_until| not_until.wait_time_from(cpu.clock().now()))
    }

    /// Waits out `pause` (from [`Quota::cpu_tick`]) and then until the
    /// budget pays for one more tick, but not past `deadline`. Paying before
    /// the guest runs again matters: several of a tenant's guests wake from
    /// the same pause, and each would otherwise run a tick unpaid.
    pub async fn wait_for_tick(&self, mut pause: Duration, deadline: Instant) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(pause.min(left)).await;
            if left <= pause {
                // Out of time: its next epoch tick interrupts the guest.
                return;
            }
            match self.cpu_tick() {
                None => return,
                Some(next) => pause = next,
            }
        }
    }

    /// Charges growing a guest's memory by `bytes` to the CPU budget, waiting
    /// (not past `deadline`) while the budget cannot pay.
    pub async fn pay_for_growth(&self, bytes: usize, deadline: Instant) {
        if self.cpu.is_none() {
            return;
        }
        for _ in 0..self.growth_ticks(bytes) {
            if let Some(pause) = self.cpu_tick() {
                self.wait_for_tick(pause, deadline).await;
            }
            if Instant::now() >= deadline {
                return;
            }
        }
    }

    /// Ticks that growing memory by `bytes` costs, rounded up.
    fn growth_ticks(&self, bytes: usize) -> u64 {
        let cost_ns = ((bytes as u128) * GROWTH_COST_PER_MIB.as_nanos()).div_ceil(1 << 20);
        let tick_ns = self.tick.as_nanos().max(1);
        u64::try_from(cost_ns.div_ceil(tick_ns)).unwrap_or(u64::MAX)
    }

    /// A permit for one instance, held while it lives.
    pub fn instance(&self) -> Result<Option<OwnedSemaphorePermit>, Refused> {
        match &self.instances {
            Some(instances) => instances
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| Refused::Concurrency),
            None => Ok(None),
        }
    }

    /// A permit for one instance, waited for: deliveries queue for one
    /// rather than being refused (the consumer's prefetch bounds how many
    /// wait).
    pub async fn wait_for_instance(&self) -> Option<OwnedSemaphorePermit> {
        self.instances.clone()?.acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant's quota at 1 ms epoch ticks.
    fn limited(limits: TenantLimits) -> Quota {
        Quota::new(&limits, Duration::from_millis(1))
    }

    #[test]
    fn the_rate_allows_a_burst_then_says_how_long_to_wait() {
        let quota = limited(TenantLimits {
            requests_per_second: Some(3),
            ..TenantLimits::default()
        });
        for _ in 0..3 {
            assert_eq!(quota.admit_request(), Ok(()));
        }
        match quota.admit_request() {
            Err(Refused::Rate(wait)) => assert!(wait <= Duration::from_millis(334), "{wait:?}"),
            other => panic!("fourth request: {other:?}"),
        }
    }

    #[test]
    fn refusals_are_answered_at_once_until_a_client_floods() {
        let quota = limited(TenantLimits::default());
        for _ in 0..PROMPT_REFUSALS_PER_SECOND.get() {
            assert_eq!(quota.refusal_hold(), Duration::ZERO);
        }
        assert_eq!(quota.refusal_hold(), REFUSAL_HOLD);
    }

    #[test]
    fn memory_growth_is_charged_by_the_mib_in_ticks() {
        let quota = limited(TenantLimits::default());
        assert_eq!(quota.growth_ticks(0), 0);
        assert_eq!(quota.growth_ticks(1), 1);
        assert_eq!(quota.growth_ticks(8 << 20), 4);
        let fine = Quota::new(&TenantLimits::default(), Duration::from_micros(100));
        assert_eq!(fine.growth_ticks(8 << 20), 40);
    }

    #[tokio::test]
    async fn growth_waits_for_the_budget_but_not_past_the_deadline() {
        // 100 millicores at 1 ms ticks: 100 ticks a second, bursts of 10.
        let quota = limited(TenantLimits {
            cpu_millicores: Some(100),
            ..TenantLimits::default()
        });
        let far = Instant::now() + Duration::from_secs(60);
        // 20 MiB is 10 ticks: the burst pays for it, then 10 more ticks
        // take about 100 ms to come.
        quota.pay_for_growth(20 << 20, far).await;
        let start = Instant::now();
        quota.pay_for_growth(20 << 20, far).await;
        assert!(
            start.elapsed() >= Duration::from_millis(80),
            "{:?}",
            start.elapsed()
        );
        // 400 MiB would take 2 s; a deadline 50 ms away ends the wait.
        let start = Instant::now();
        quota
            .pay_for_growth(400 << 20, start + Duration::from_millis(50))
            .await;
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn a_delivery_waits_for_an_instance_the_tenant_has_free() {
        let quota = limited(TenantLimits {
            max_concurrency: Some(1),
            ..TenantLimits::default()
        });
        let held = quota.instance().expect("first").expect("counted");
        let mut waiting = std::pin::pin!(quota.wait_for_instance());
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "a permit while all are held"
        );
        drop(held);
        assert!(waiting.await.is_some());
        assert!(
            limited(TenantLimits::default())
                .wait_for_instance()
                .await
                .is_none(),
            "no limit, nothing counted"
        );
    }

    #[test]
    fn instances_are_counted_while_held() {
        let quota = limited(TenantLimits {
            max_concurrency: Some(1),
            ..TenantLimits::default()
        });
        let held = quota.instance().expect("first");
        assert!(held.is_some());
        assert_eq!(quota.instance().err(), Some(Refused::Concurrency));
        drop(held);
        assert!(quota.instance().expect("after release").is_some());
    }

    #[test]
    fn the_cpu_budget_pauses_a_guest_once_spent() {
        // 100 millicores at 1 ms ticks: 100 ticks a second, bursts of 10.
        let quota = limited(TenantLimits {
            cpu_millicores: Some(100),
            ..TenantLimits::default()
        });
        for _ in 0..10 {
            assert_eq!(quota.cpu_tick(), None);
        }
        let pause = quota.cpu_tick().expect("a pause once the burst is spent");
        assert!(pause <= Duration::from_millis(10), "{pause:?}");
    }

    #[test]
    fn zero_is_refused_by_name() {
        let limits = TenantLimits {
            max_concurrency: Some(0),
            ..TenantLimits::default()
        };
        assert_eq!(
            limits.check(),
            Err("limits.max_concurrency must be at least 1".to_owned())
        );
    }
}
