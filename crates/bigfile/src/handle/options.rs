//! Options of a handle: the block format it writes, the virtmem options of
//! its mapping, and the dirty-bytes threshold past which a transaction's
//! dirty blocks are spilled to a temporary file.

use crate::Error;
use crate::zblk::ZBlkFormat;

/// Options of a [`ZBigFileH`](super::ZBigFileH).
#[derive(Debug, Clone, Default)]
pub struct HandleOptions {
    /// Format for blocks written through this handle (default: from
    /// `$WENDELIN_CORE_ZBLK_FMT`, else ZBlk0).
    pub format: ZBlkFormat,
    /// Options of the underlying virtmem handle.
    pub virtmem: virtmem::Options,
    /// Dirty bytes above which dirty blocks are spilled to a temporary file
    /// (and become evictable) instead of staying in RAM until commit.
    /// `None`: the handle's RAM budget.
    pub spill_threshold: Option<u64>,
}

impl HandleOptions {
    /// Defaults, with the format taken from the environment as wendelin.core does.
    pub fn from_env() -> Result<HandleOptions, Error> {
        Ok(HandleOptions {
            format: ZBlkFormat::from_env().map_err(|e| Error::Usage(e.to_string()))?,
            virtmem: virtmem::Options::default(),
            spill_threshold: None,
        })
    }
}
