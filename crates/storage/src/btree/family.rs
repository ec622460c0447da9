//! BTree families: which Python BTrees module, which key type, which node
//! sizes.
//!
//! # Model
//!
//! Python BTrees come in families named by key and value types (`LO`: int64
//! keys, object values; `IO`: int32 keys; `OO`: object keys). A family fixes
//! the module and class names written into records, the valid keys, how keys
//! compare, and the sizes at which buckets and interior nodes split: the
//! numbers of Python's C code, so trees written here have Python's shape.
//! The pure Python `...Py` class names map to the same family.

use crate::error::{Error, Result};
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

pub(super) fn check_key(f: &Family, k: &Value) -> Result<()> {
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
