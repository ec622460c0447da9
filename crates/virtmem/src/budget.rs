//! RAM budget: a bound on the bytes of clean loaded blocks, shared by the
//! handles that use the process budget or owned by one handle.
//!
//! One place decides the process budget's default: `$WENDELIN_RAM_BUDGET`
//! (a size such as `512MiB`) when set, else half of physical RAM. Every
//! user of the engine gets it, the library as well as the command line (a
//! library user who never heard of the setting used to get half of RAM
//! whatever the environment said: a 3 GiB scan peaked at 3.1 GiB RSS).
//! Programs that take the budget from elsewhere (a flag, an option) set it
//! with [`set_process_budget`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The least free room below which scans drop what they leave behind (see
/// [`Budget::nearly_full`]): the blocks a few scanning threads have in
/// flight and the pages they recycle. With a budget under 64 MiB scans
/// always drop behind them.
pub const SCAN_MARGIN: u64 = 64 << 20;

/// A RAM budget: `limit` bytes of clean resident blocks, `used` bytes now.
#[derive(Debug)]
pub struct Budget {
    limit: AtomicU64,
    used: AtomicU64,
    /// Of `used`, bytes that cannot be evicted until a transaction boundary
    /// (blocks mapped read-write, see `fileh/mapped_rw.rs`): at most half
    /// the limit, so that evictable blocks keep room.
    pinned: AtomicU64,
}

impl Budget {
    /// A new budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            pinned: AtomicU64::new(0),
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

    /// Less than an eighth of the budget (and at least [`SCAN_MARGIN`]) is
    /// free: scans then drop the
    /// blocks they leave behind (see `FileH::scan_done` and read-ahead
    /// streams) instead of keeping them for a next pass. Until then a scan
    /// uses free room only (it never makes the budget evict anyone's
    /// blocks), and a scanned array that fits stays resident: later passes
    /// run at memory speed, at the price of fresh (kernel-zeroed) pages in
    /// the first. The eighth left is room for the pages a dropping scan
    /// recycles and its read-ahead.
    pub fn nearly_full(&self) -> bool {
        let margin = (self.limit() / 8).max(SCAN_MARGIN);
        self.used().saturating_add(margin) > self.limit()
    }

    pub(crate) fn add(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Reserve `n` bytes of the pinned half of the budget: false if that
    /// would pin more than half the limit. The caller adds the bytes to
    /// `used` too, and unpins them when the block goes.
    pub(crate) fn try_pin(&self, n: u64) -> bool {
        let half = self.limit() / 2;
        self.pinned
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                p.checked_add(n).filter(|&q| q <= half)
            })
            .is_ok()
    }

    /// Whether [`Self::try_pin`] of `n` bytes would succeed now.
    pub(crate) fn can_pin(&self, n: u64) -> bool {
        self.pinned
            .load(Ordering::Relaxed)
            .checked_add(n)
            .is_some_and(|q| q <= self.limit() / 2)
    }

    pub(crate) fn unpin(&self, n: u64) {
        self.pinned.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn over(&self) -> bool {
        self.used() > self.limit()
    }
}

static PROCESS: OnceLock<Arc<Budget>> = OnceLock::new();

/// The environment variable that sets the default process budget.
pub const BUDGET_ENV: &str = "WENDELIN_RAM_BUDGET";

/// The smallest budget accepted (a few blocks).
pub const MIN_BUDGET: u64 = 8 << 20;

/// Parse a size such as `512MiB`, `4GiB`, `1.5G`, `1000000` (bytes; K, M,
/// G, T with or without `iB`/`B`, powers of 1024).
pub fn parse_size(spec: &str) -> Result<u64, crate::Error> {
    let bad = |msg: &str| crate::Error::BadSize {
        spec: spec.to_owned(),
        msg: msg.to_owned(),
    };
    let t = spec.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad("not a number"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad("unknown unit (use B, KiB, MiB, GiB, TiB)")),
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad("out of range"));
    }
    Ok(bytes as u64)
}

/// Parse a RAM budget (a size of at least [`MIN_BUDGET`]).
pub fn parse_budget(spec: &str) -> Result<u64, crate::Error> {
    let b = parse_size(spec)?;
    if b < MIN_BUDGET {
        return Err(crate::Error::BadSize {
            spec: spec.to_owned(),
            msg: "a RAM budget must be at least 8MiB".into(),
        });
    }
    Ok(b)
}

/// The default process budget: `$WENDELIN_RAM_BUDGET` if set, else half
/// of physical RAM. An unparsable variable is an error.
pub fn default_budget() -> Result<u64, crate::Error> {
    match std::env::var(BUDGET_ENV) {
        Ok(spec) => parse_budget(&spec),
        Err(_) => Ok(half_of_ram()),
    }
}

fn half_of_ram() -> u64 {
    nix::sys::sysinfo::sysinfo()
        .map(|i| i.ram_total())
        .unwrap_or(8 << 30)
        / 2
}

/// The process-wide budget used by handles opened without their own. Its
/// limit starts at [`default_budget`] (half of RAM, with a warning, when
/// the variable cannot be parsed).
pub fn process_budget() -> Arc<Budget> {
    PROCESS
        .get_or_init(|| {
            let limit = default_budget().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring {BUDGET_ENV}: using half of RAM");
                half_of_ram()
            });
            Budget::new(limit)
        })
        .clone()
}

/// Set the limit of the process-wide budget in bytes.
pub fn set_process_budget(limit: u64) {
    process_budget().set_limit(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512MiB").ok(), Some(512 << 20));
        assert_eq!(parse_size("4GiB").ok(), Some(4 << 30));
        assert_eq!(parse_size("1.5G").ok(), Some(3 << 29));
        assert_eq!(parse_size("1000").ok(), Some(1000));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("1e30T").is_err());
        assert!(parse_budget("1MiB").is_err());
    }
}
