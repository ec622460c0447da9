//! Bucket conflict resolution: Python BTrees' `_p_resolveConflict`.
//!
//! # Model
//!
//! Two transactions that change different keys of one bucket both store the
//! bucket; the second store sees a moved serial. Like Python BTrees, the
//! storage then hands the three record versions (the one both started from,
//! the committed one, the new one) to a resolver, which merges the item
//! changes three-way when they touch different keys and refuses otherwise
//! (with Python's `BTreesConflictError` reason numbers). The merge is the C
//! `bucket_merge` step for step, down to its value comparisons: a comparison
//! Python cannot make (two different persistent references, `int < str`)
//! fails Python's merge, so it conflicts here as well; the
//! `btree_conflicts_vs_python` test holds the two to the same outcomes. Single-bucket
//! (inline) trees and `BTrees.Length` counters resolve too; splits never
//! do. It runs inside the storage's `store`, on record bytes, with no
//! connection: [`BTreeResolver`] is the [`ConflictResolver`] the object layer
//! is given (see [`crate::open`]); the database layer itself knows nothing of
//! BTrees.

use super::family::{family_of, key_cmp};
use super::node::{bucket_state, items_value, parse_bucket_state};
use crate::ids::Oid;
use crate::pickle::{self, Dialect};
use crate::storage::ConflictResolver;
use crate::value::Value;
use std::cmp::Ordering;

/// Resolves conflicts of BTree buckets, single-bucket trees and
/// `BTrees.Length` (see [`resolve_conflict`]); other classes conflict.
#[derive(Debug, Clone, Copy, Default)]
pub struct BTreeResolver;

impl ConflictResolver for BTreeResolver {
    fn resolve(
        &self,
        oid: Oid,
        old: &[u8],
        committed: &[u8],
        new: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        resolve_conflict(oid, old, committed, new)
    }
}

/// Python's `TEST_VALUE` for object values: `<` then `==`, where a
/// comparison Python cannot make (`int < str`, `None < None`, two different
/// persistent references, a reference and a plain value) raises, and a
/// raising comparison makes the C merge fail: a conflict here too.
fn same_value(a: &Value, b: &Value) -> std::result::Result<bool, String> {
    let refused = || {
        Err(format!(
            "conflict: values {a:?} and {b:?} do not compare in Python"
        ))
    };
    match (a, b) {
        (Value::PersistentRef(_), Value::PersistentRef(_)) => match (a.ref_oid(), b.ref_oid()) {
            (Some(x), Some(y)) if x == y => Ok(true),
            _ => refused(),
        },
        (Value::Int(x), Value::Int(y)) => Ok(x == y),
        (Value::Bool(x), Value::Bool(y)) => Ok(x == y),
        (Value::Int(x), Value::Bool(y)) | (Value::Bool(y), Value::Int(x)) => {
            Ok(*x == i64::from(*y))
        }
        (Value::Float(x), Value::Float(y)) => Ok(x == y),
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => Ok(*x as f64 == *y),
        (Value::BigInt(x), Value::BigInt(y)) => Ok(x == y),
        (Value::BigInt(_), Value::Int(_)) | (Value::Int(_), Value::BigInt(_)) => Ok(false),
        (Value::Str(x), Value::Str(y)) => Ok(x == y),
        (Value::Bytes(x), Value::Bytes(y)) | (Value::Py2Str(x), Value::Py2Str(y)) => Ok(x == y),
        (Value::Tuple(x), Value::Tuple(y)) | (Value::List(x), Value::List(y)) => {
            // lexicographic: equal prefixes, then the first difference must
            // compare
            for (p, q) in x.iter().zip(y) {
                if !same_value(p, q)? {
                    return Ok(false);
                }
            }
            Ok(x.len() == y.len())
        }
        _ => refused(),
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

/// Three-way merge of bucket items: Python BTrees' C `bucket_merge`, step
/// for step (the same comparisons in the same order, the same reason
/// numbers), so the same triples merge, to the same items.
fn merge_items(
    old: &[(Value, Value)],
    com: &[(Value, Value)],
    new: &[(Value, Value)],
) -> std::result::Result<Vec<(Value, Value)>, String> {
    let cmp = |a: &Value, b: &Value| key_cmp(a, b).map_err(|e| e.to_string());
    // Either "after" bucket empty: its writer unlinked it from the tree.
    if com.is_empty() || new.is_empty() {
        return Err(conflict(12));
    }
    let (mut i1, mut i2, mut i3) = (0, 0, 0);
    let mut out = Vec::new();
    while i1 < old.len() && i2 < com.len() && i3 < new.len() {
        let (k1, v1) = &old[i1];
        let (k2, v2) = &com[i2];
        let (k3, v3) = &new[i3];
        let c12 = cmp(k1, k2)?;
        let c13 = cmp(k1, k3)?;
        if c12 == Ordering::Equal {
            if c13 == Ordering::Equal {
                if same_value(v1, v2)? {
                    out.push((k3.clone(), v3.clone()));
                } else if same_value(v1, v3)? {
                    out.push((k2.clone(), v2.clone()));
                } else {
                    return Err(conflict(1));
                }
                i1 += 1;
                i2 += 1;
                i3 += 1;
            } else if c13 == Ordering::Greater {
                out.push((k3.clone(), v3.clone())); // inserted by new
                i3 += 1;
            } else if same_value(v1, v2)? {
                // deleted by new, unchanged by committed: not while new is
                // at its first item (the parent's separator may change)
                if i3 == 0 {
                    return Err(conflict(13));
                }
                i1 += 1;
                i2 += 1;
            } else {
                return Err(conflict(2));
            }
        } else if c13 == Ordering::Equal {
            if c12 == Ordering::Greater {
                out.push((k2.clone(), v2.clone())); // inserted by committed
                i2 += 1;
            } else if same_value(v1, v3)? {
                if i2 == 0 {
                    return Err(conflict(13));
                }
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
            if c12 == Ordering::Greater {
                if c23 == Ordering::Greater {
                    out.push((k3.clone(), v3.clone()));
                    i3 += 1;
                } else {
                    out.push((k2.clone(), v2.clone()));
                    i2 += 1;
                }
            } else if c13 == Ordering::Greater {
                out.push((k3.clone(), v3.clone()));
                i3 += 1;
            } else {
                return Err(conflict(5)); // deleted by both
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
    // the rest of old deleted by new
    while i1 < old.len() && i2 < com.len() {
        match cmp(&old[i1].0, &com[i2].0)? {
            Ordering::Greater => {
                out.push(com[i2].clone());
                i2 += 1;
            }
            Ordering::Equal if same_value(&old[i1].1, &com[i2].1)? => {
                i1 += 1;
                i2 += 1;
            }
            _ => return Err(conflict(7)),
        }
    }
    // the rest of old deleted by committed
    while i1 < old.len() && i3 < new.len() {
        match cmp(&old[i1].0, &new[i3].0)? {
            Ordering::Greater => {
                out.push(new[i3].clone());
                i3 += 1;
            }
            Ordering::Equal if same_value(&old[i1].1, &new[i3].1)? => {
                i1 += 1;
                i3 += 1;
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
