//! Persistent BTrees with Python BTrees' states, split thresholds and bucket
//! conflict resolution (FORMATS.md §5).
//!
//! A tree is a [`TreeNode`] object (the root keeps its oid forever) whose
//! children are buckets ([`Bucket`]) or further tree nodes; buckets are linked
//! in key order by `next` references. Every node is its own persistent object,
//! loaded lazily through a [`Connection`]. [`BTree`] is a small handle (the
//! family and the root oid) whose operations take the connection: lookups read nodes at the
//! connection's snapshot, changes mark the touched nodes modified and add new
//! nodes, exactly as Python BTrees' C code shapes them, so Python reads trees
//! written here and the other way round.

use crate::db::{Connection, Persistent, PersistentClass};
use crate::error::{Error, Result};
use crate::ids::Oid;
use crate::pickle::{self, Dialect};
use crate::value::Value;
use std::cmp::Ordering;

/// Key type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// 32-bit signed integers (IO).
    I32,
    /// 64-bit signed integers (LO).
    I64,
    /// Python objects (OO): str, bytes or int, one kind per tree.
    Object,
}

/// A BTree family: module, class names, key kind, node sizes.
#[derive(Debug, PartialEq, Eq)]
pub struct Family {
    /// Module, e.g. `BTrees.LOBTree`.
    pub module: &'static str,
    /// Tree class, e.g. `LOBTree`.
    pub tree: &'static str,
    /// Bucket class, e.g. `LOBucket`.
    pub bucket: &'static str,
    /// Key type.
    pub key: KeyKind,
    /// A bucket splits when longer than this.
    pub max_leaf: usize,
    /// An interior node splits when longer than this.
    pub max_internal: usize,
}

/// int64 keys, object values.
pub static LO: Family = Family {
    module: "BTrees.LOBTree",
    tree: "LOBTree",
    bucket: "LOBucket",
    key: KeyKind::I64,
    max_leaf: 60,
    max_internal: 500,
};
/// int32 keys, object values.
pub static IO: Family = Family {
    module: "BTrees.IOBTree",
    tree: "IOBTree",
    bucket: "IOBucket",
    key: KeyKind::I32,
    max_leaf: 60,
    max_internal: 500,
};
/// object keys, object values.
pub static OO: Family = Family {
    module: "BTrees.OOBTree",
    tree: "OOBTree",
    bucket: "OOBucket",
    key: KeyKind::Object,
    max_leaf: 30,
    max_internal: 250,
};

const FAMILIES: [&Family; 3] = [&LO, &IO, &OO];

/// The family and whether the class is a bucket, for a class path (the pure
/// Python `...Py` class names map to the same family).
pub fn family_of(module: &str, name: &str) -> Option<(&'static Family, bool)> {
    let name = name.strip_suffix("Py").unwrap_or(name);
    FAMILIES.iter().find(|f| f.module == module).and_then(|f| {
        if name == f.tree {
            Some((*f, false))
        } else if name == f.bucket {
            Some((*f, true))
        } else {
            None
        }
    })
}

/// Compare two keys of one tree (ints numerically, str by code point,
/// bytes bytewise; other mixes are an error as in Python 3).
pub fn key_cmp(a: &Value, b: &Value) -> Result<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        (Value::Bytes(x), Value::Bytes(y)) | (Value::Py2Str(x), Value::Py2Str(y)) => Ok(x.cmp(y)),
        (Value::Str(x), Value::Py2Str(y)) => Ok(x.as_bytes().cmp(y.as_slice())),
        (Value::Py2Str(x), Value::Str(y)) => Ok(x.as_slice().cmp(y.as_bytes())),
        (Value::Float(x), Value::Float(y)) => x
            .partial_cmp(y)
            .ok_or_else(|| Error::Protocol("NaN is not a valid BTree key".into())),
        _ => Err(Error::Protocol(format!(
            "BTree keys {a:?} and {b:?} are not comparable"
        ))),
    }
}

fn check_key(f: &Family, k: &Value) -> Result<()> {
    let ok = match (f.key, k) {
        (KeyKind::I32, Value::Int(i)) => i32::try_from(*i).is_ok(),
        (KeyKind::I64, Value::Int(_)) => true,
        (
            KeyKind::Object,
            Value::Int(_) | Value::Str(_) | Value::Bytes(_) | Value::Py2Str(_) | Value::Float(_),
        ) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "{k:?} is not a valid key for {}",
            f.tree
        )))
    }
}

/// Binary search `items` (sorted by key) for `k`.
fn search(items: &[(Value, Value)], k: &Value) -> Result<std::result::Result<usize, usize>> {
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

fn ref_value(oid: Oid, module: &str, name: &str, dialect: Dialect) -> Value {
    let o = oid.to_bytes().to_vec();
    Value::PersistentRef(Box::new(Value::Tuple(vec![
        match dialect {
            Dialect::Py3 => Value::Bytes(o),
            Dialect::Py2 => Value::Py2Str(o),
        },
        Value::global(module, name),
    ])))
}

fn flat_items(oid: Oid, v: &Value) -> Result<Vec<(Value, Value)>> {
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

fn items_value(items: &[(Value, Value)]) -> Value {
    Value::Tuple(
        items
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
    )
}

/// Parse a bucket state: `((k0, v0, ...),)` or `((...), next)`; `None` = empty.
/// Items of a bucket and its `next` reference.
type BucketParts = (Vec<(Value, Value)>, Option<Value>);

fn parse_bucket_state(oid: Oid, state: &Value) -> Result<BucketParts> {
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

fn bucket_state(items: &[(Value, Value)], next: &Option<Value>) -> Value {
    match next {
        None => Value::Tuple(vec![items_value(items)]),
        Some(n) => Value::Tuple(vec![items_value(items), n.clone()]),
    }
}

/// A bucket: sorted items and the reference to the next bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    family: &'static Family,
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
                let (items, next) = parse_bucket_state(oid, &state)?;
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
    family: &'static Family,
    dialect: Dialect,
    /// Its state.
    pub state: TreeState,
}

impl TreeNode {
    fn len(&self) -> usize {
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

/// A handle on a persistent BTree: its family and root oid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BTree {
    /// The family.
    pub family: &'static Family,
    /// The root node's oid.
    pub oid: Oid,
}

/// Result of inserting into a subtree: the node grew past its limit.
enum Grow {
    No,
    Split,
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

/// Read-only access to a tree at a snapshot straight from the storage,
/// without a connection (for loaders running on other threads). Every node
/// visited is reported to `visit` (so callers can track what a result
/// depended on).
pub struct SnapshotReader<'a> {
    /// The storage.
    pub storage: &'a dyn crate::storage::Storage,
    /// The snapshot: state as of this tid.
    pub at: crate::ids::Tid,
}

impl SnapshotReader<'_> {
    fn load<T: PersistentClass>(&self, oid: Oid) -> Result<T> {
        let rec = self
            .storage
            .load_before(oid, crate::ids::Tid(self.at.0.saturating_add(1)))?
            .ok_or(Error::NotFound {
                oid,
                tid: Some(self.at),
            })?;
        let (meta, state) = pickle::decode_record(&rec.data)?;
        let (m, n) = pickle::class_of_meta(&meta).ok_or_else(|| Error::BadState {
            oid,
            msg: "record has no recognizable class".into(),
        })?;
        T::from_state(oid, &m, &n, state)
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

    /// All items of the tree rooted at `root`, in key order.
    pub fn items(&self, root: Oid, visit: &mut dyn FnMut(Oid)) -> Result<Vec<(Value, Value)>> {
        visit(root);
        let n: TreeNode = self.load(root)?;
        let first = match n.state {
            TreeState::Empty => return Ok(Vec::new()),
            TreeState::Inline(items) => return Ok(items),
            TreeState::General { first, .. } => first,
        };
        // interior nodes are visited too, so changes to them are seen
        let mut stack = vec![root];
        while let Some(o) = stack.pop() {
            let t: TreeNode = self.load(o)?;
            if let TreeState::General { children, .. } = t.state {
                for (c, is_bucket) in children {
                    if !is_bucket {
                        visit(c);
                        stack.push(c);
                    }
                }
            }
        }
        let mut out = Vec::new();
        let mut b = Some(first);
        let mut guard = 0u64;
        while let Some(o) = b {
            guard += 1;
            if guard > 1 << 32 {
                return Err(Error::BadState {
                    oid: o,
                    msg: "bucket chain does not end".into(),
                });
            }
            visit(o);
            let bk: Bucket = self.load(o)?;
            out.extend(bk.items);
            b = bk.next.as_ref().and_then(Value::ref_oid);
        }
        Ok(out)
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

/// Index of the child whose key range holds `key`.
fn child_index(keys: &[Value], key: &Value) -> Result<usize> {
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

fn first_bucket_of(conn: &Connection, (oid, is_bucket): (Oid, bool)) -> Result<Oid> {
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

fn last_bucket_of(conn: &Connection, (mut oid, mut is_bucket): (Oid, bool)) -> Result<Oid> {
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

// ---------------------------------------------------------------------------
// Conflict resolution (runs inside the storage's store, on record bytes).

fn same_value(a: &Value, b: &Value) -> bool {
    match (a.ref_oid(), b.ref_oid()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn conflict(reason: u32) -> String {
    let what = match reason {
        0 => "bucket split / next changed",
        1 => "both changed the same key",
        2 | 3 => "one side deleted a key the other changed",
        4 | 6 => "both inserted the same key",
        5 | 9 => "both deleted the same key",
        7 | 8 => "delete vs change at the end",
        10 => "merged bucket would be empty",
        11 => "tree is not a single inline bucket",
        12 => "one side emptied the bucket",
        13 => "the first key of the bucket was deleted",
        _ => "conflict",
    };
    format!("BTreesConflictError reason {reason}: {what}")
}

/// Three-way merge of bucket items (Python BTrees' `bucket_merge`).
fn merge_items(
    old: &[(Value, Value)],
    com: &[(Value, Value)],
    new: &[(Value, Value)],
) -> std::result::Result<Vec<(Value, Value)>, String> {
    let cmp = |a: &Value, b: &Value| key_cmp(a, b).map_err(|e| e.to_string());
    if !old.is_empty() && (com.is_empty() || new.is_empty()) {
        return Err(conflict(12));
    }
    if let Some((k0, _)) = old.first() {
        let has = |s: &[(Value, Value)]| {
            s.iter()
                .any(|(k, _)| cmp(k, k0).ok() == Some(Ordering::Equal))
        };
        if !has(com) || !has(new) {
            return Err(conflict(13));
        }
    }
    let (mut i1, mut i2, mut i3) = (0, 0, 0);
    let mut out = Vec::new();
    while i1 < old.len() && i2 < com.len() && i3 < new.len() {
        let (k1, v1) = &old[i1];
        let (k2, v2) = &com[i2];
        let (k3, v3) = &new[i3];
        let c12 = cmp(k1, k2)?;
        let c13 = cmp(k1, k3)?;
        if c12 == Ordering::Equal && c13 == Ordering::Equal {
            if same_value(v2, v1) {
                out.push((k3.clone(), v3.clone()));
            } else if same_value(v3, v1) {
                out.push((k2.clone(), v2.clone()));
            } else {
                return Err(conflict(1));
            }
            i1 += 1;
            i2 += 1;
            i3 += 1;
        } else if c12 == Ordering::Equal {
            if c13 == Ordering::Greater {
                out.push((k3.clone(), v3.clone())); // inserted by new
                i3 += 1;
            } else if same_value(v1, v2) {
                i1 += 1; // deleted by new, unchanged by committed
                i2 += 1;
            } else {
                return Err(conflict(2));
            }
        } else if c13 == Ordering::Equal {
            if c12 == Ordering::Greater {
                out.push((k2.clone(), v2.clone())); // inserted by committed
                i2 += 1;
            } else if same_value(v1, v3) {
                i1 += 1; // deleted by committed, unchanged by new
                i3 += 1;
            } else {
                return Err(conflict(3));
            }
        } else {
            let c23 = cmp(k2, k3)?;
            if c23 == Ordering::Equal {
                return Err(conflict(4));
            }
            if c12 == Ordering::Less && c13 == Ordering::Less {
                return Err(conflict(5)); // deleted by both
            }
            if c23 == Ordering::Less {
                out.push((k2.clone(), v2.clone()));
                i2 += 1;
            } else {
                out.push((k3.clone(), v3.clone()));
                i3 += 1;
            }
        }
    }
    while i2 < com.len() && i3 < new.len() {
        match cmp(&com[i2].0, &new[i3].0)? {
            Ordering::Less => {
                out.push(com[i2].clone());
                i2 += 1;
            }
            Ordering::Greater => {
                out.push(new[i3].clone());
                i3 += 1;
            }
            Ordering::Equal => return Err(conflict(6)),
        }
    }
    while i1 < old.len() && i3 < new.len() {
        match cmp(&old[i1].0, &new[i3].0)? {
            Ordering::Equal if same_value(&old[i1].1, &new[i3].1) => {
                i1 += 1;
                i3 += 1;
            }
            Ordering::Greater => {
                out.push(new[i3].clone());
                i3 += 1;
            }
            _ => return Err(conflict(7)),
        }
    }
    while i1 < old.len() && i2 < com.len() {
        match cmp(&old[i1].0, &com[i2].0)? {
            Ordering::Equal if same_value(&old[i1].1, &com[i2].1) => {
                i1 += 1;
                i2 += 1;
            }
            Ordering::Greater => {
                out.push(com[i2].clone());
                i2 += 1;
            }
            _ => return Err(conflict(8)),
        }
    }
    if i1 < old.len() {
        return Err(conflict(9));
    }
    out.extend_from_slice(&com[i2..]);
    out.extend_from_slice(&new[i3..]);
    if out.is_empty() {
        return Err(conflict(10));
    }
    Ok(out)
}

fn next_oid(n: &Option<Value>) -> Option<Option<Oid>> {
    match n {
        None => Some(None),
        Some(v) => v.ref_oid().map(Some),
    }
}

/// Resolve a write conflict on `oid` given the three record versions, for
/// the classes that can (BTree buckets, single-bucket trees, `BTrees.Length`).
/// Other classes conflict.
pub fn resolve_conflict(
    oid: Oid,
    old: &[u8],
    committed: &[u8],
    new: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    let dec = |d: &[u8]| pickle::decode_record(d).map_err(|e| e.to_string());
    let (meta, s_new) = dec(new)?;
    let (_, s_old) = dec(old)?;
    let (_, s_com) = dec(committed)?;
    let (m, n) = pickle::class_of_meta(&meta).ok_or("unknown class")?;
    let dialect = if new.starts_with(&[0x80, 3]) {
        Dialect::Py3
    } else {
        Dialect::Py2
    };
    let encode =
        |state: &Value| pickle::encode_record(&m, &n, state, dialect).map_err(|e| e.to_string());
    if (m.as_str(), n.as_str()) == ("BTrees.Length", "Length") {
        let (Some(a), Some(b), Some(c)) = (s_old.as_int(), s_com.as_int(), s_new.as_int()) else {
            return Err("Length state is not an int".into());
        };
        return encode(&Value::Int(b.wrapping_add(c).wrapping_sub(a)));
    }
    let Some((_, is_bucket)) = family_of(&m, &n) else {
        return Err(format!("{m}.{n} has no conflict resolution"));
    };
    let bucket = |s: &Value| parse_bucket_state(oid, s).map_err(|e| e.to_string());
    if is_bucket {
        let (o, on) = bucket(&s_old)?;
        let (c, cn) = bucket(&s_com)?;
        let (w, wn) = bucket(&s_new)?;
        if next_oid(&on) != next_oid(&cn) || next_oid(&on) != next_oid(&wn) {
            return Err(conflict(0));
        }
        let merged = merge_items(&o, &c, &w)?;
        return encode(&bucket_state(&merged, &on));
    }
    // A tree resolves only as a single inline bucket.
    let inline = |s: &Value| -> std::result::Result<Vec<(Value, Value)>, String> {
        match s {
            Value::None => Ok(Vec::new()),
            Value::Tuple(t) if t.len() == 1 => {
                let inner = t[0].as_seq().ok_or("bad inline tree")?;
                let [bs] = inner else {
                    return Err(conflict(11));
                };
                Ok(bucket(bs)?.0)
            }
            _ => Err(conflict(11)),
        }
    };
    let merged = merge_items(&inline(&s_old)?, &inline(&s_com)?, &inline(&s_new)?)?;
    encode(&Value::Tuple(vec![Value::Tuple(vec![Value::Tuple(vec![
        items_value(&merged),
    ])])]))
}

#[cfg(test)]
mod tests;
