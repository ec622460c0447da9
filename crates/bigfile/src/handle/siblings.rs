//! The process-wide registry of handles per (connection, file).
//!
//! A connection's own commit is not an invalidation for it, so after one
//! handle commits, the other handles of the same file in the same connection
//! must drop the blocks it wrote. The own commit's oids could tell them
//! which blocks changed, but not which of two handles that both wrote one
//! block in the transaction was stored last; dropping every other copy is
//! always right.

use super::Shared;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use storage::Oid;

/// Handles per (connection, file) in this process: after one commits, the
/// others of the same connection drop the blocks it wrote (the connection's
/// own commit is not an invalidation for it). The own commit's oids could
/// tell them too, but not which of two handles that both wrote one block in
/// the transaction was stored last; dropping every other copy is always right.
pub(super) type Registry = Mutex<HashMap<(usize, Oid), Vec<Weak<Shared>>>>;
static HANDLES: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();

pub(super) fn registry() -> &'static Registry {
    HANDLES.get_or_init(Default::default)
}

impl Shared {
    /// Other handles of the same file in the same connection.
    pub(super) fn siblings(&self) -> Vec<Arc<Shared>> {
        let reg = registry().lock();
        reg.get(&(self.conn.id(), self.backend.file))
            .map(|v| {
                v.iter()
                    .filter_map(Weak::upgrade)
                    .filter(|s| !std::ptr::eq(s.as_ref(), self))
                    .collect()
            })
            .unwrap_or_default()
    }
}
