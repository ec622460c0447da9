//! Persistent BTrees with Python BTrees' states, split thresholds and bucket
//! conflict resolution (FORMATS.md §5).
//!
//! # Model
//!
//! A tree is a [`TreeNode`] object (the root keeps its oid forever) whose
//! children are buckets ([`Bucket`]) or further tree nodes; buckets are linked
//! in key order by `next` references. Every node is its own persistent object,
//! loaded lazily through a [`Connection`]. [`BTree`] is a small handle (the
//! family and the root oid) whose operations take the connection: lookups
//! read nodes at the connection's snapshot, changes mark the touched nodes
//! modified and add new nodes, exactly as Python BTrees' C code shapes them,
//! so Python reads trees written here and the other way round.
//!
//! - `family`: module/class names, key kinds, node sizes;
//! - `node`: [`Bucket`] and [`TreeNode`] and their pickled states;
//! - this file: the [`BTree`] handle and lookups through a connection;
//! - `write`: insert and remove, with Python's splits;
//! - `read`: [`SnapshotReader`], lookups straight from a storage snapshot;
//! - `node_cache`: [`NodeCache`], decoded nodes kept for one snapshot;
//! - `int_refs`: int -> reference trees (chunk tables) read without value trees;
//! - `conflict`: [`BTreeResolver`], the three-way bucket merge.

mod conflict;
mod family;
mod int_refs;
mod node;
mod node_cache;
mod read;
mod write;

pub use conflict::{BTreeResolver, resolve_conflict};
pub use family::{Family, IO, KeyKind, LO, OO, family_of, key_cmp};
pub use int_refs::{IntRefBucket, parse_bucket};
pub use node::{Bucket, TreeNode, TreeState};
pub use node_cache::NodeCache;
pub use read::SnapshotReader;

use crate::db::Connection;
use crate::error::{Error, Result};
use crate::ids::Oid;
use crate::value::Value;
use node::{child_index, search};
use std::cmp::Ordering;

/// A handle on a persistent BTree: its family and root oid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BTree {
    /// The family.
    pub family: &'static Family,
    /// The root node's oid.
    pub oid: Oid,
}

impl BTree {
    /// Create a new, empty tree in `conn` (stored at the next commit).
    pub fn create(conn: &Connection, family: &'static Family) -> Result<BTree> {
        let oid = conn.add(TreeNode {
            family,
            dialect: conn.dialect(),
            state: TreeState::Empty,
        })?;
        Ok(BTree { family, oid })
    }

    /// A handle on the existing tree `oid` (its class decides the family).
    pub fn open(conn: &Connection, oid: Oid) -> Result<BTree> {
        let (m, n) = conn.class_of(oid)?;
        match family_of(&m, &n) {
            Some((family, false)) => Ok(BTree { family, oid }),
            _ => Err(Error::BadState {
                oid,
                msg: format!("{m}.{n} is not a supported BTree"),
            }),
        }
    }

    fn node(conn: &Connection, oid: Oid) -> Result<TreeNode> {
        Ok(conn.get::<TreeNode>(oid)?.clone())
    }

    /// The value under `key`.
    pub fn get(&self, conn: &Connection, key: &Value) -> Result<Option<Value>> {
        let mut oid = self.oid;
        loop {
            let n = Self::node(conn, oid)?;
            match &n.state {
                TreeState::Empty => return Ok(None),
                TreeState::Inline(items) => {
                    return Ok(search(items, key)?.ok().map(|i| items[i].1.clone()));
                }
                TreeState::General { children, keys, .. } => {
                    let i = child_index(keys, key)?;
                    let (c, is_bucket) = children[i];
                    if is_bucket {
                        let b = conn.get::<Bucket>(c)?;
                        return Ok(search(&b.items, key)?.ok().map(|i| b.items[i].1.clone()));
                    }
                    oid = c;
                }
            }
        }
    }

    /// All items with `lo <= key < hi` (unbounded ends as `None`), in key order.
    pub fn range(
        &self,
        conn: &Connection,
        lo: Option<&Value>,
        hi: Option<&Value>,
    ) -> Result<Vec<(Value, Value)>> {
        let mut out = Vec::new();
        let in_range = |k: &Value| -> Result<(bool, bool)> {
            let above_lo = match lo {
                Some(l) => key_cmp(k, l)? != Ordering::Less,
                None => true,
            };
            let below_hi = match hi {
                Some(h) => key_cmp(k, h)? == Ordering::Less,
                None => true,
            };
            Ok((above_lo, below_hi))
        };
        // Find the starting bucket.
        let mut oid = self.oid;
        let mut bucket = loop {
            let n = Self::node(conn, oid)?;
            match n.state {
                TreeState::Empty => return Ok(out),
                TreeState::Inline(items) => {
                    for (k, v) in items {
                        let (a, b) = in_range(&k)?;
                        if !b {
                            break;
                        }
                        if a {
                            out.push((k, v));
                        }
                    }
                    return Ok(out);
                }
                TreeState::General { children, keys, .. } => {
                    let i = match lo {
                        Some(l) => child_index(&keys, l)?,
                        None => 0,
                    };
                    let (c, is_bucket) = children[i];
                    if is_bucket {
                        break Some(c);
                    }
                    oid = c;
                }
            }
        };
        let mut guard = 0usize;
        while let Some(b) = bucket {
            guard += 1;
            if guard > 100_000_000 {
                return Err(Error::BadState {
                    oid: b,
                    msg: "bucket chain does not end".into(),
                });
            }
            let bk = conn.get::<Bucket>(b)?;
            for (k, v) in &bk.items {
                let (a, below) = in_range(k)?;
                if !below {
                    return Ok(out);
                }
                if a {
                    out.push((k.clone(), v.clone()));
                }
            }
            bucket = bk.next.as_ref().and_then(Value::ref_oid);
        }
        Ok(out)
    }

    /// All items in key order.
    pub fn items(&self, conn: &Connection) -> Result<Vec<(Value, Value)>> {
        self.range(conn, None, None)
    }

    /// Number of items (walks the buckets, like Python's `len`).
    pub fn len(&self, conn: &Connection) -> Result<usize> {
        Ok(self.items(conn)?.len())
    }

    /// True if the tree has no items.
    pub fn is_empty(&self, conn: &Connection) -> Result<bool> {
        Ok(self.min_key(conn)?.is_none())
    }

    /// Smallest key.
    pub fn min_key(&self, conn: &Connection) -> Result<Option<Value>> {
        match Self::node(conn, self.oid)?.state {
            TreeState::Empty => Ok(None),
            TreeState::Inline(items) => Ok(items.first().map(|(k, _)| k.clone())),
            TreeState::General { first, .. } => Ok(conn
                .get::<Bucket>(first)?
                .items
                .first()
                .map(|(k, _)| k.clone())),
        }
    }

    /// Largest key.
    pub fn max_key(&self, conn: &Connection) -> Result<Option<Value>> {
        let mut oid = self.oid;
        loop {
            match Self::node(conn, oid)?.state {
                TreeState::Empty => return Ok(None),
                TreeState::Inline(items) => return Ok(items.last().map(|(k, _)| k.clone())),
                TreeState::General { children, .. } => {
                    let (c, is_bucket) = children[children.len() - 1];
                    if is_bucket {
                        return Ok(conn.get::<Bucket>(c)?.items.last().map(|(k, _)| k.clone()));
                    }
                    oid = c;
                }
            }
        }
    }
}

/// The leftmost bucket under the child `(oid, is_bucket)`.
pub(super) fn first_bucket_of(conn: &Connection, (oid, is_bucket): (Oid, bool)) -> Result<Oid> {
    if is_bucket {
        return Ok(oid);
    }
    match BTree::node(conn, oid)?.state {
        TreeState::General { first, .. } => Ok(first),
        _ => Err(Error::BadState {
            oid,
            msg: "interior node without buckets".into(),
        }),
    }
}

/// The rightmost bucket under the child `(oid, is_bucket)`.
pub(super) fn last_bucket_of(
    conn: &Connection,
    (mut oid, mut is_bucket): (Oid, bool),
) -> Result<Oid> {
    while !is_bucket {
        match BTree::node(conn, oid)?.state {
            TreeState::General { children, .. } => (oid, is_bucket) = children[children.len() - 1],
            _ => {
                return Err(Error::BadState {
                    oid,
                    msg: "interior node without buckets".into(),
                });
            }
        }
    }
    Ok(oid)
}

#[cfg(test)]
mod tests;
