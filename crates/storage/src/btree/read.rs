//! Reading a tree at a snapshot straight from the storage.
//!
//! # Model
//!
//! Loaders that run on their own threads (the bigfile fault handlers) read
//! trees without a connection and its cache: every node is loaded through a
//! [`Snapshot`], so a lookup sees exactly the tree as of the snapshot tid,
//! whatever commits meanwhile. Each node visited is reported to a `visit`
//! callback, so callers can track what a result depended on (a change to
//! any of those oids may change the result). Depth and bucket chains are
//! bounded, so a corrupt (cyclic) tree is an error, not a hang.

use super::node::{Bucket, TreeNode, TreeState, child_index, search};
use super::node_cache::NodeCache;
use crate::error::{Error, Result};
use crate::ids::Oid;
use crate::persistent::PersistentClass;
use crate::snapshot::Snapshot;
use crate::value::Value;

/// Read-only access to trees at one snapshot, without a connection.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotReader<'a> {
    /// The snapshot the trees are read at.
    pub snapshot: Snapshot<'a>,
}

impl<'a> SnapshotReader<'a> {
    /// A reader of trees in `snapshot`.
    pub fn new(snapshot: Snapshot<'a>) -> Self {
        SnapshotReader { snapshot }
    }

    fn load<T: crate::persistent::PersistentClass>(&self, oid: Oid) -> Result<T> {
        self.snapshot.load(oid)
    }

    /// The value under `key` in the tree rooted at `root`.
    pub fn get(&self, root: Oid, key: &Value, visit: &mut dyn FnMut(Oid)) -> Result<Option<Value>> {
        let mut oid = root;
        for _ in 0..64 {
            visit(oid);
            let n: TreeNode = self.load(oid)?;
            match n.state {
                TreeState::Empty => return Ok(None),
                TreeState::Inline(items) => {
                    return Ok(search(&items, key)?.ok().map(|i| items[i].1.clone()));
                }
                TreeState::General { children, keys, .. } => {
                    let (c, is_bucket) = children[child_index(&keys, key)?];
                    if is_bucket {
                        visit(c);
                        let b: Bucket = self.load(c)?;
                        return Ok(search(&b.items, key)?.ok().map(|i| b.items[i].1.clone()));
                    }
                    oid = c;
                }
            }
        }
        Err(Error::BadState {
            oid: root,
            msg: "tree deeper than 64 levels (cycle?)".into(),
        })
    }

    /// [`Self::get`], its nodes taken from `cache` (decoded once per
    /// snapshot, see [`NodeCache`]) when the cache is of this reader's
    /// snapshot; the same nodes are visited.
    pub fn get_cached(
        &self,
        root: Oid,
        key: &Value,
        visit: &mut dyn FnMut(Oid),
        cache: &NodeCache,
    ) -> Result<Option<Value>> {
        if cache.at() != self.snapshot.at {
            return self.get(root, key, visit);
        }
        let mut oid = root;
        for _ in 0..64 {
            visit(oid);
            let n = cache.tree(&self.snapshot, oid)?;
            match &n.state {
                TreeState::Empty => return Ok(None),
                TreeState::Inline(items) => {
                    return Ok(search(items, key)?.ok().map(|i| items[i].1.clone()));
                }
                TreeState::General { children, keys, .. } => {
                    let (c, is_bucket) = children[child_index(keys, key)?];
                    if is_bucket {
                        visit(c);
                        let b = cache.bucket(&self.snapshot, c)?;
                        return Ok(search(&b.items, key)?.ok().map(|i| b.items[i].1.clone()));
                    }
                    oid = c;
                }
            }
        }
        Err(Error::BadState {
            oid: root,
            msg: "tree deeper than 64 levels (cycle?)".into(),
        })
    }

    /// All items of the tree rooted at `root`, in key order.
    pub fn items(&self, root: Oid, visit: &mut dyn FnMut(Oid)) -> Result<Vec<(Value, Value)>> {
        self.walk(root, visit, Ok, |o, data| {
            let bk = Bucket::from_record(o, data)?;
            let next = bk.next.as_ref().and_then(Value::ref_oid);
            Ok((bk.items, next))
        })
    }

    /// The largest key of the tree rooted at `root`.
    pub fn max_key(&self, root: Oid) -> Result<Option<Value>> {
        let mut oid = root;
        for _ in 0..64 {
            let n: TreeNode = self.load(oid)?;
            match n.state {
                TreeState::Empty => return Ok(None),
                TreeState::Inline(items) => return Ok(items.last().map(|(k, _)| k.clone())),
                TreeState::General { children, .. } => {
                    let (c, is_bucket) = children[children.len() - 1];
                    if is_bucket {
                        let b: Bucket = self.load(c)?;
                        return Ok(b.items.last().map(|(k, _)| k.clone()));
                    }
                    oid = c;
                }
            }
        }
        Err(Error::BadState {
            oid: root,
            msg: "tree deeper than 64 levels (cycle?)".into(),
        })
    }
}
