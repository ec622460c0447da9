//! Tree nodes and buckets as persistent objects, and their states.
//!
//! # Model
//!
//! Every node of a tree is its own persistent object. A [`Bucket`] holds
//! sorted items and a reference to the next bucket in key order; its state is
//! `((k0, v0, k1, v1, ...),)` or `(items, next)`. A [`TreeNode`] (the root or
//! an interior node) is empty (`None`), a single bucket inlined into the
//! tree's own record (`((bucket_state,),)`, what a small tree is), or general:
//! `((child0, key1, child1, ...), firstbucket)`, children referenced with
//! their class so a reader knows buckets from subtrees without loading them.
//! These are exactly Python BTrees' `__getstate__` shapes, in both pickle
//! dialects.

use super::family::{Family, family_of, key_cmp};
use crate::error::{Error, Result};
use crate::ids::Oid;
use crate::persistent::{Persistent, PersistentClass};
use crate::pickle::Dialect;
use crate::value::Value;
use std::cmp::Ordering;

/// Binary search `items` (sorted by key) for `k`.
pub(super) fn search(
    items: &[(Value, Value)],
    k: &Value,
) -> Result<std::result::Result<usize, usize>> {
    let (mut lo, mut hi) = (0, items.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        match key_cmp(&items[mid].0, k)? {
            Ordering::Less => lo = mid + 1,
            Ordering::Greater => hi = mid,
            Ordering::Equal => return Ok(Ok(mid)),
        }
    }
    Ok(Err(lo))
}

pub(super) fn ref_value(oid: Oid, module: &str, name: &str, dialect: Dialect) -> Value {
    let o = oid.to_bytes().to_vec();
    Value::PersistentRef(Box::new(Value::Tuple(vec![
        match dialect {
            Dialect::Py3 => Value::Bytes(o),
            Dialect::Py2 => Value::Py2Str(o),
        },
        Value::global(module, name),
    ])))
}

pub(super) fn flat_items(oid: Oid, v: &Value) -> Result<Vec<(Value, Value)>> {
    let s = v.as_seq().ok_or_else(|| Error::BadState {
        oid,
        msg: "bucket items are not a tuple".into(),
    })?;
    if s.len() % 2 != 0 {
        return Err(Error::BadState {
            oid,
            msg: "bucket items have odd length".into(),
        });
    }
    Ok(s.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect())
}

pub(super) fn items_value(items: &[(Value, Value)]) -> Value {
    Value::Tuple(
        items
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
    )
}

/// Parse a bucket state: `((k0, v0, ...),)` or `((...), next)`; `None` = empty.
/// Items of a bucket and its `next` reference.
pub(super) type BucketParts = (Vec<(Value, Value)>, Option<Value>);

/// [`parse_bucket_state`] consuming the state: the items are moved out of
/// the decoded value, not copied (a 60-item bucket of references is a few
/// hundred allocations less per load).
pub(super) fn into_bucket_state(oid: Oid, state: Value) -> Result<BucketParts> {
    let bad = |msg: &str| Error::BadState {
        oid,
        msg: msg.into(),
    };
    let (items, next) = match state {
        Value::None => return Ok((Vec::new(), None)),
        Value::Tuple(t) if t.len() == 1 || t.len() == 2 => {
            let mut t = t.into_iter();
            (t.next(), t.next())
        }
        _ => return Err(bad("bucket state is not (items,) or (items, next)")),
    };
    let s = match items {
        Some(Value::Tuple(s) | Value::List(s)) => s,
        _ => return Err(bad("bucket items are not a tuple")),
    };
    if s.len() % 2 != 0 {
        return Err(bad("bucket items have odd length"));
    }
    let mut out = Vec::with_capacity(s.len() / 2);
    let mut it = s.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok((out, next))
}

pub(super) fn parse_bucket_state(oid: Oid, state: &Value) -> Result<BucketParts> {
    match state {
        Value::None => Ok((Vec::new(), None)),
        Value::Tuple(t) if t.len() == 1 => Ok((flat_items(oid, &t[0])?, None)),
        Value::Tuple(t) if t.len() == 2 => Ok((flat_items(oid, &t[0])?, Some(t[1].clone()))),
        _ => Err(Error::BadState {
            oid,
            msg: "bucket state is not (items,) or (items, next)".into(),
        }),
    }
}

pub(super) fn bucket_state(items: &[(Value, Value)], next: &Option<Value>) -> Value {
    match next {
        None => Value::Tuple(vec![items_value(items)]),
        Some(n) => Value::Tuple(vec![items_value(items), n.clone()]),
    }
}

/// A bucket: sorted items and the reference to the next bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub(super) family: &'static Family,
    /// Items sorted by key.
    pub items: Vec<(Value, Value)>,
    /// Reference to the next bucket in key order.
    pub next: Option<Value>,
}

impl Persistent for Bucket {
    fn class_path(&self) -> (&str, &str) {
        (self.family.module, self.family.bucket)
    }
    fn state(&self) -> Result<Value> {
        Ok(bucket_state(&self.items, &self.next))
    }
}

impl PersistentClass for Bucket {
    fn from_state(oid: Oid, module: &str, name: &str, state: Value) -> Result<Self> {
        match family_of(module, name) {
            Some((family, true)) => {
                let (items, next) = into_bucket_state(oid, state)?;
                Ok(Bucket {
                    family,
                    items,
                    next,
                })
            }
            _ => Err(Error::BadState {
                oid,
                msg: format!("{module}.{name} is not a supported BTree bucket class"),
            }),
        }
    }
}

/// The state of a tree node.
#[derive(Debug, Clone, PartialEq)]
pub enum TreeState {
    /// No items (`None`).
    Empty,
    /// One bucket without an oid, stored inside the tree's record.
    Inline(Vec<(Value, Value)>),
    /// Children (refs), separators (`keys[i]` is the smallest key allowed in
    /// `children[i + 1]`), and the first bucket of the subtree.
    General {
        /// Children: (oid, is a bucket).
        children: Vec<(Oid, bool)>,
        /// Separators, one fewer than children.
        keys: Vec<Value>,
        /// Leftmost bucket of the subtree.
        first: Oid,
    },
}

/// A tree node (the root or an interior node) of one family.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeNode {
    pub(super) family: &'static Family,
    pub(super) dialect: Dialect,
    /// Its state.
    pub state: TreeState,
}

impl TreeNode {
    /// Number of children (1 for an empty or inline node).
    pub(super) fn len(&self) -> usize {
        match &self.state {
            TreeState::General { children, .. } => children.len(),
            _ => 1,
        }
    }
}

impl Persistent for TreeNode {
    fn class_path(&self) -> (&str, &str) {
        (self.family.module, self.family.tree)
    }
    fn state(&self) -> Result<Value> {
        let f = self.family;
        Ok(match &self.state {
            TreeState::Empty => Value::None,
            TreeState::Inline(items) => {
                Value::Tuple(vec![Value::Tuple(vec![Value::Tuple(vec![items_value(
                    items,
                )])])])
            }
            TreeState::General {
                children,
                keys,
                first,
            } => {
                let mut v = Vec::with_capacity(children.len() * 2);
                for (i, (c, is_bucket)) in children.iter().enumerate() {
                    if i > 0 {
                        v.push(keys[i - 1].clone());
                    }
                    let cls = if *is_bucket { f.bucket } else { f.tree };
                    v.push(ref_value(*c, f.module, cls, self.dialect));
                }
                Value::Tuple(vec![
                    Value::Tuple(v),
                    ref_value(*first, f.module, f.bucket, self.dialect),
                ])
            }
        })
    }
}

impl PersistentClass for TreeNode {
    fn from_state(oid: Oid, module: &str, name: &str, state: Value) -> Result<Self> {
        let bad = |msg: &str| Error::BadState {
            oid,
            msg: msg.to_owned(),
        };
        let Some((family, false)) = family_of(module, name) else {
            return Err(bad("not a supported BTree class"));
        };
        let dialect = Dialect::Py3;
        let state = match state {
            Value::None => TreeState::Empty,
            Value::Tuple(t) if t.len() == 1 => {
                // ((bucket_state,),)
                let inner = t[0].as_seq().ok_or_else(|| bad("inline tree state"))?;
                let [bs] = inner else {
                    return Err(bad("inline tree must hold exactly one bucket"));
                };
                let (items, _) = parse_bucket_state(oid, bs)?;
                TreeState::Inline(items)
            }
            Value::Tuple(t) if t.len() == 2 => {
                let data = t[0]
                    .as_seq()
                    .ok_or_else(|| bad("tree data is not a tuple"))?;
                if data.len() % 2 != 1 {
                    return Err(bad("tree data must be child, key, child, ..."));
                }
                let mut children = Vec::new();
                let mut keys = Vec::new();
                for (i, v) in data.iter().enumerate() {
                    if i % 2 == 1 {
                        keys.push(v.clone());
                        continue;
                    }
                    let c = v
                        .ref_oid()
                        .ok_or_else(|| bad("tree child is not a reference"))?;
                    let is_bucket = match v.ref_class() {
                        Some(cls) => {
                            cls.ends_with(family.bucket)
                                || cls.ends_with(&format!("{}Py", family.bucket))
                        }
                        None => true,
                    };
                    children.push((c, is_bucket));
                }
                let first = t[1]
                    .ref_oid()
                    .ok_or_else(|| bad("firstbucket is not a reference"))?;
                TreeState::General {
                    children,
                    keys,
                    first,
                }
            }
            _ => {
                return Err(bad(
                    "tree state is not None, ((bucket,),) or (data, firstbucket)",
                ));
            }
        };
        Ok(TreeNode {
            family,
            dialect,
            state,
        })
    }
}

/// Index of the child whose key range holds `key`.
pub(super) fn child_index(keys: &[Value], key: &Value) -> Result<usize> {
    // number of separators <= key
    let (mut lo, mut hi) = (0, keys.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if key_cmp(&keys[mid], key)? != Ordering::Greater {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}
