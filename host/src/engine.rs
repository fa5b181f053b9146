//! The wasmtime `Engine` shared by every component of the process, and the one
//! OS thread that ticks its epoch.
//!
//! Built once at start-up: pooling allocator sized from [`RuntimeConfig`],
//! epoch interruption for deadlines and fair yielding, async support for the
//! WASI host functions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context as _, Result};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::RuntimeConfig;

/// Core instances one component may contain. A component built by
/// `cargo --target wasm32-wasip2` has a handful (main module, shims, fix-ups).
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;

/// Bytes of each linear memory kept resident between instances and reset
/// with `memset` instead of `madvise`: a fresh instance per request then
/// reuses hot pages instead of faulting them in again. With `PAGEMAP_SCAN`
/// (Linux 6.7+) only the pages the last instance dirtied are reset, so this
/// can be generous; without it the whole amount is memset on every reuse.
const MEMORY_KEEP_RESIDENT_SCANNED: usize = 16 << 20;
const MEMORY_KEEP_RESIDENT_PLAIN: usize = 256 << 10;

/// Builds the engine. `max_memory_bytes` is the largest linear memory any
/// component may need (the pool reserves address space for it per slot).
pub fn build(config: &RuntimeConfig, max_memory_bytes: u64) -> Result<Engine> {
    let instances = config.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_tables_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_memory_size(usize::try_from(max_memory_bytes).context("memory limit too large")?)
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(if pagemap_scan_available() {
            MEMORY_KEEP_RESIDENT_SCANNED
        } else {
            MEMORY_KEEP_RESIDENT_PLAIN
        })
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10)
        // Reuse the most recently used slots first: their pages are warm.
        .max_unused_warm_slots(16);

    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // Guests get 30 s deadlines; a deep recursion should trap, not crash.
        .max_wasm_stack(1 << 20)
        .async_stack_size(2 << 20);
    Engine::new(&wasm)
        .map_err(anyhow::Error::from)
        .context("creating the wasmtime engine (pooling allocator)")
}

/// Whether the kernel offers `PAGEMAP_SCAN` (Linux 6.7 or later); wasmtime's
/// `Enabled::Auto` probes the same way, but does not tell us the answer.
fn pagemap_scan_available() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    kernel_at_least(&release, (6, 7))
}

fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// Advances the engine's epoch every `tick` on a dedicated OS thread, so a
/// guest stuck in a loop is interrupted even when every tokio worker is busy.
/// Stops when dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine, tick: std::time::Duration) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("trellis-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .context("spawning the epoch ticker thread")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_versions() {
        assert!(super::kernel_at_least("6.18.44-fc-v782", (6, 7)));
        assert!(super::kernel_at_least("6.7.0", (6, 7)));
        assert!(!super::kernel_at_least("6.1.0-18-amd64", (6, 7)));
        assert!(!super::kernel_at_least("5.15.0", (6, 7)));
        assert!(!super::kernel_at_least("", (6, 7)));
    }
}
