//! RAM budget: a bound on the bytes of clean loaded blocks, shared by the
//! handles that use the process budget or owned by one handle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// A RAM budget: `limit` bytes of clean resident blocks, `used` bytes now.
#[derive(Debug)]
pub struct Budget {
    limit: AtomicU64,
    used: AtomicU64,
}

impl Budget {
    /// A new budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
        })
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Change the limit (takes effect at the next load).
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed)
    }

    /// Bytes of clean resident blocks accounted now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn over(&self) -> bool {
        self.used() > self.limit()
    }
}

static PROCESS: OnceLock<Arc<Budget>> = OnceLock::new();

/// The process-wide budget used by handles opened without their own.
/// Defaults to half of the physical RAM.
pub fn process_budget() -> Arc<Budget> {
    PROCESS
        .get_or_init(|| {
            let ram = nix::sys::sysinfo::sysinfo()
                .map(|i| i.ram_total())
                .unwrap_or(8 << 30);
            Budget::new(ram / 2)
        })
        .clone()
}

/// Set the limit of the process-wide budget in bytes.
pub fn set_process_budget(limit: u64) {
    process_budget().set_limit(limit)
}
