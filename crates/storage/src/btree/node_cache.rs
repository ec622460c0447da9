//! Decoded tree nodes kept for one snapshot.
//!
//! # Model
//!
//! [`SnapshotReader::get`](super::SnapshotReader::get) loads and decodes
//! every node on the path to a key, each time: a ZBigFile's block lookup
//! decodes the blktab root (hundreds of children and separators once the
//! file is large) and a bucket of up to 60 blocks, all of it allocated
//! value by value, to use one reference. A scan looks its blocks up one
//! after another, so it decoded the same root thousands of times and each
//! bucket 60 times: measured on the 2-core VM, Python's
//! `np.asarray(A).sum()` over a 28 GiB array spent a quarter of its
//! handler threads' CPU in pickle decoding, `malloc` and `free`.
//!
//! A [`NodeCache`] holds decoded nodes for one snapshot tid: nodes as of a
//! snapshot never change, so a node read once is the node. It is bounded
//! ([`MAX_NODES`]: when full it is emptied, a scan's working set being the
//! path to its current bucket), shared by the threads that look up in the
//! same snapshot (a lock held only to find or insert an `Arc`), and used
//! only by readers of its own snapshot: a reader of another tid reads the
//! ordinary way.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::node::{Bucket, TreeNode};
use crate::error::Result;
use crate::ids::{Oid, Tid};
use crate::snapshot::Snapshot;

/// Nodes kept at most: the path to a bucket plus a few hundred buckets of
/// 60 items (a few MiB decoded), far more than a scan's path.
pub const MAX_NODES: usize = 512;

/// Decoded tree nodes of one snapshot (see the module docs).
pub struct NodeCache {
    at: Tid,
    trees: Mutex<HashMap<Oid, Arc<TreeNode>>>,
    buckets: Mutex<HashMap<Oid, Arc<Bucket>>>,
}

impl std::fmt::Debug for NodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCache")
            .field("at", &self.at)
            .field("trees", &self.trees.lock().len())
            .field("buckets", &self.buckets.lock().len())
            .finish()
    }
}

impl NodeCache {
    /// An empty cache for snapshot `at`.
    pub fn new(at: Tid) -> Self {
        NodeCache {
            at,
            trees: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The snapshot its nodes are of.
    pub fn at(&self) -> Tid {
        self.at
    }

    /// Decoded nodes held now (trees and buckets).
    pub fn len(&self) -> usize {
        self.trees.lock().len() + self.buckets.lock().len()
    }

    /// Whether it holds no node.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tree node `oid` as of `snap` (whose tid is the cache's).
    pub(super) fn tree(&self, snap: &Snapshot<'_>, oid: Oid) -> Result<Arc<TreeNode>> {
        debug_assert_eq!(snap.at, self.at);
        get_or_load(&self.trees, snap, oid)
    }

    /// Bucket `oid` as of `snap` (whose tid is the cache's).
    pub(super) fn bucket(&self, snap: &Snapshot<'_>, oid: Oid) -> Result<Arc<Bucket>> {
        debug_assert_eq!(snap.at, self.at);
        get_or_load(&self.buckets, snap, oid)
    }
}

fn get_or_load<T: crate::persistent::PersistentClass>(
    map: &Mutex<HashMap<Oid, Arc<T>>>,
    snap: &Snapshot<'_>,
    oid: Oid,
) -> Result<Arc<T>> {
    if let Some(n) = map.lock().get(&oid) {
        return Ok(n.clone());
    }
    // Loaded without the lock: two threads may both decode a node once.
    let n: Arc<T> = Arc::new(snap.load(oid)?);
    let mut m = map.lock();
    if m.len() >= MAX_NODES {
        m.clear();
    }
    m.insert(oid, n.clone());
    Ok(n)
}
