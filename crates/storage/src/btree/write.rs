//! Changing a tree: insert with Python's splits, remove with its unlinking.
//!
//! # Model
//!
//! Changes go through a [`Connection`]: each touched node is marked modified
//! (stored at commit), new nodes are added (they get oids at once). A small
//! tree is one inline bucket in the root's record; its first split stores
//! two buckets. A bucket splits in half when longer than the family's
//! `max_leaf`, an interior node when longer than `max_internal`, the root
//! grows a level at twice that; a bucket emptied by removal is unlinked from
//! the chain and its parent. Keeping Python's thresholds and order of
//! operations keeps the shapes (and so the records) Python would write.

use super::family::{check_key, key_cmp};
use super::node::{Bucket, TreeNode, TreeState, child_index, ref_value, search};
use super::{BTree, first_bucket_of, last_bucket_of};
use crate::db::Connection;
use crate::error::{Error, Result};
use crate::ids::Oid;
use crate::value::Value;
use std::cmp::Ordering;

/// Result of inserting into a subtree: the node grew past its limit.
enum Grow {
    No,
    Split,
}

impl BTree {
    /// Insert or replace `key`; returns the previous value.
    pub fn insert(&self, conn: &Connection, key: Value, value: Value) -> Result<Option<Value>> {
        check_key(self.family, &key)?;
        let root = Self::node(conn, self.oid)?;
        match root.state {
            TreeState::Empty => {
                conn.get_mut::<TreeNode>(self.oid)?.state = TreeState::Inline(vec![(key, value)]);
                return Ok(None);
            }
            TreeState::Inline(mut items) => {
                let old = match search(&items, &key)? {
                    Ok(i) => Some(std::mem::replace(&mut items[i].1, value)),
                    Err(i) => {
                        items.insert(i, (key, value));
                        None
                    }
                };
                if items.len() > self.family.max_leaf {
                    // The first split stores the inline bucket as its own record.
                    let right_items = items.split_off(items.len() / 2);
                    let sep = right_items[0].0.clone();
                    let right = conn.add(Bucket {
                        family: self.family,
                        items: right_items,
                        next: None,
                    })?;
                    let next = Some(ref_value(
                        right,
                        self.family.module,
                        self.family.bucket,
                        conn.dialect(),
                    ));
                    let left = conn.add(Bucket {
                        family: self.family,
                        items,
                        next,
                    })?;
                    conn.get_mut::<TreeNode>(self.oid)?.state = TreeState::General {
                        children: vec![(left, true), (right, true)],
                        keys: vec![sep],
                        first: left,
                    };
                } else {
                    conn.get_mut::<TreeNode>(self.oid)?.state = TreeState::Inline(items);
                }
                return Ok(old);
            }
            TreeState::General { .. } => {}
        }
        let (old, _) = self.insert_node(conn, self.oid, key, value)?;
        // The root grows a level when it reaches twice the interior size.
        let root = Self::node(conn, self.oid)?;
        if root.len() >= 2 * self.family.max_internal {
            let TreeState::General {
                children,
                keys,
                first,
            } = root.state
            else {
                return Ok(old);
            };
            let child = conn.add(TreeNode {
                family: self.family,
                dialect: conn.dialect(),
                state: TreeState::General {
                    children,
                    keys,
                    first,
                },
            })?;
            conn.get_mut::<TreeNode>(self.oid)?.state = TreeState::General {
                children: vec![(child, false)],
                keys: vec![],
                first,
            };
            self.split_child(conn, self.oid, 0)?;
        }
        Ok(old)
    }

    /// Insert into the general node `oid`; reports whether it needs a split.
    fn insert_node(
        &self,
        conn: &Connection,
        oid: Oid,
        key: Value,
        value: Value,
    ) -> Result<(Option<Value>, Grow)> {
        let n = Self::node(conn, oid)?;
        let TreeState::General { children, keys, .. } = &n.state else {
            return Err(Error::BadState {
                oid,
                msg: "interior node is not in general form".into(),
            });
        };
        let i = child_index(keys, &key)?;
        let (c, is_bucket) = children[i];
        let (old, grow) = if is_bucket {
            let mut b = conn.get_mut::<Bucket>(c)?;
            let old = match search(&b.items, &key)? {
                Ok(j) => Some(std::mem::replace(&mut b.items[j].1, value)),
                Err(j) => {
                    b.items.insert(j, (key, value));
                    None
                }
            };
            let g = if b.items.len() > self.family.max_leaf {
                Grow::Split
            } else {
                Grow::No
            };
            (old, g)
        } else {
            self.insert_node(conn, c, key, value)?
        };
        if matches!(grow, Grow::Split) {
            self.split_child(conn, oid, i)?;
        }
        let n = Self::node(conn, oid)?;
        let g = if n.len() > self.family.max_internal && oid != self.oid {
            Grow::Split
        } else {
            Grow::No
        };
        Ok((old, g))
    }

    /// Split child `i` of node `parent` at half its length.
    fn split_child(&self, conn: &Connection, parent: Oid, i: usize) -> Result<()> {
        let f = self.family;
        let (c, is_bucket) = match &Self::node(conn, parent)?.state {
            TreeState::General { children, .. } => children[i],
            _ => {
                return Err(Error::BadState {
                    oid: parent,
                    msg: "split in a non-general node".into(),
                });
            }
        };
        let (sep, new) = if is_bucket {
            let mut b = conn.get_mut::<Bucket>(c)?;
            let half = b.items.len() / 2;
            let right_items = b.items.split_off(half);
            let sep = right_items[0].0.clone();
            let next = b.next.take();
            drop(b);
            let right = conn.add(Bucket {
                family: f,
                items: right_items,
                next,
            })?;
            conn.get_mut::<Bucket>(c)?.next =
                Some(ref_value(right, f.module, f.bucket, conn.dialect()));
            (sep, (right, true))
        } else {
            let mut t = conn.get_mut::<TreeNode>(c)?;
            let TreeState::General { children, keys, .. } = &mut t.state else {
                return Err(Error::BadState {
                    oid: c,
                    msg: "split of a non-general node".into(),
                });
            };
            let idx = children.len() / 2;
            let right_children = children.split_off(idx);
            let mut right_keys = keys.split_off(idx - 1);
            let sep = right_keys.remove(0);
            drop(t);
            let first = first_bucket_of(conn, right_children[0])?;
            let right = conn.add(TreeNode {
                family: f,
                dialect: conn.dialect(),
                state: TreeState::General {
                    children: right_children,
                    keys: right_keys,
                    first,
                },
            })?;
            (sep, (right, false))
        };
        let mut p = conn.get_mut::<TreeNode>(parent)?;
        if let TreeState::General { children, keys, .. } = &mut p.state {
            children.insert(i + 1, new);
            keys.insert(i, sep);
        }
        Ok(())
    }

    /// Remove `key`; returns its value if it was there.
    pub fn remove(&self, conn: &Connection, key: &Value) -> Result<Option<Value>> {
        let root = Self::node(conn, self.oid)?;
        match root.state {
            TreeState::Empty => Ok(None),
            TreeState::Inline(mut items) => match search(&items, key)? {
                Ok(i) => {
                    let (_, v) = items.remove(i);
                    conn.get_mut::<TreeNode>(self.oid)?.state = if items.is_empty() {
                        TreeState::Empty
                    } else {
                        TreeState::Inline(items)
                    };
                    Ok(Some(v))
                }
                Err(_) => Ok(None),
            },
            TreeState::General { .. } => {
                let (old, emptied) = self.remove_node(conn, self.oid, key, None)?;
                if emptied {
                    conn.get_mut::<TreeNode>(self.oid)?.state = TreeState::Empty;
                }
                Ok(old)
            }
        }
    }

    /// Remove from node `oid`. `prev_bucket` is the bucket left of this
    /// subtree (to relink when a bucket empties). Returns (old value, node emptied).
    fn remove_node(
        &self,
        conn: &Connection,
        oid: Oid,
        key: &Value,
        prev_bucket: Option<Oid>,
    ) -> Result<(Option<Value>, bool)> {
        let n = Self::node(conn, oid)?;
        let TreeState::General { children, keys, .. } = &n.state else {
            return Err(Error::BadState {
                oid,
                msg: "interior node is not in general form".into(),
            });
        };
        let i = child_index(keys, key)?;
        let (c, is_bucket) = children[i];
        let left = if i > 0 {
            Some(last_bucket_of(conn, children[i - 1])?)
        } else {
            prev_bucket
        };
        let (old, child_emptied, new_min) = if is_bucket {
            let b = conn.get::<Bucket>(c)?;
            let Ok(j) = search(&b.items, key)? else {
                return Ok((None, false));
            };
            drop(b);
            let mut b = conn.get_mut::<Bucket>(c)?;
            let (_, v) = b.items.remove(j);
            let emptied = b.items.is_empty();
            let new_min = b.items.first().map(|(k, _)| k.clone());
            let next = b.next.clone();
            drop(b);
            if emptied {
                // Unlink the emptied bucket from the chain.
                if let Some(l) = left {
                    conn.get_mut::<Bucket>(l)?.next = next;
                }
            }
            (Some(v), emptied, new_min)
        } else {
            let (old, e) = self.remove_node(conn, c, key, left)?;
            (old, e, None)
        };
        if old.is_none() {
            return Ok((None, false));
        }
        let mut t = conn.get_mut::<TreeNode>(oid)?;
        let TreeState::General { children, keys, .. } = &mut t.state else {
            return Ok((old, false));
        };
        if child_emptied {
            children.remove(i);
            if i > 0 {
                keys.remove(i - 1);
            } else if !keys.is_empty() {
                keys.remove(0);
            }
        } else if i > 0
            && let Some(m) = new_min
            && key_cmp(&keys[i - 1], key)? == Ordering::Equal
        {
            // A separator equal to the deleted key becomes the child's new min.
            keys[i - 1] = m;
        }
        if children.is_empty() {
            return Ok((old, true));
        }
        let c0 = children[0];
        drop(t);
        let f0 = first_bucket_of(conn, c0)?;
        let mut t = conn.get_mut::<TreeNode>(oid)?;
        if let TreeState::General { first, .. } = &mut t.state {
            *first = f0;
        }
        Ok((old, false))
    }
}
