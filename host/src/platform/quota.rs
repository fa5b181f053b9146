//! A tenant's limits, and the shared state that enforces the ones counted at
//! request time: instances alive at once and requests per second.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
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
    /// chained calls included).
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

/// What enforces a tenant's limits at request time; one per tenant, shared
/// by all its apps.
pub struct Quota {
    instances: Option<Arc<Semaphore>>,
    rate: Option<DefaultDirectRateLimiter>,
    /// One cell per epoch tick of guest execution.
    cpu: Option<DefaultDirectRateLimiter>,
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
        }
    }

    /// Takes one request from the rate allowance.
    pub fn admit_request(&self) -> Result<(), Refused> {
        match &self.rate {
            Some(rate) => rate.check().map_err(|not_until| {
                Refused::Rate(not_until.wait_time_from(DefaultClock::default().now()))
            }),
            None => Ok(()),
        }
    }

    /// Accounts one epoch tick of a guest's execution: `None` to go on, or
    /// how long to pause it for the budget to refill.
    pub fn cpu_tick(&self) -> Option<Duration> {
        let cpu = self.cpu.as_ref()?;
        cpu.check()
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_allows_a_burst_then_says_how_long_to_wait() {
        let quota = Quota::new(
            &TenantLimits {
                requests_per_second: Some(3),
                ..TenantLimits::default()
            },
            Duration::from_millis(1),
        );
        for _ in 0..3 {
            assert_eq!(quota.admit_request(), Ok(()));
        }
        match quota.admit_request() {
            Err(Refused::Rate(wait)) => assert!(wait <= Duration::from_millis(334), "{wait:?}"),
            other => panic!("fourth request: {other:?}"),
        }
    }

    #[test]
    fn instances_are_counted_while_held() {
        let quota = Quota::new(
            &TenantLimits {
                max_concurrency: Some(1),
                ..TenantLimits::default()
            },
            Duration::from_millis(1),
        );
        let held = quota.instance().expect("first");
        assert!(held.is_some());
        assert_eq!(quota.instance().err(), Some(Refused::Concurrency));
        drop(held);
        assert!(quota.instance().expect("after release").is_some());
    }

    #[test]
    fn the_cpu_budget_pauses_a_guest_once_spent() {
        // 100 millicores at 1 ms ticks: 100 ticks a second, bursts of 10.
        let quota = Quota::new(
            &TenantLimits {
                cpu_millicores: Some(100),
                ..TenantLimits::default()
            },
            Duration::from_millis(1),
        );
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
