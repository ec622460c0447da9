//! Benchmarks of the storage crate (filled by the storage work).

use crate::common::{Config, Report};

/// Run this group.
pub fn run(_cfg: &Config, _report: &mut Report) -> Result<(), String> {
    Ok(())
}
