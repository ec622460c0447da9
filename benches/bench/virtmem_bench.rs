//! Benchmarks of the virtmem crate (filled by the virtmem work).

use crate::common::{Config, Report};

/// Run this group.
pub fn run(_cfg: &Config, _report: &mut Report) -> Result<(), String> {
    Ok(())
}
