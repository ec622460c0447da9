//! Persistent references inside a record: which other objects it keeps
//! alive.
//!
//! # Model
//!
//! A record (class pickle + state pickle) names other objects only through
//! persistent references (FORMATS.md §3.3). Their pid takes several forms:
//! a bare oid, `(oid, class)`, and the list forms `['w', (oid[, db])]`
//! (weak), `[oid]` (old weak form), `['m', (db, oid, class)]` and
//! `['n', (db, oid)]` (cross-database). Garbage collection (pack) follows
//! the *strong, local* ones only, exactly as ZODB's `referencesf` does: a
//! weak reference does not keep its target alive, and a cross-database
//! reference names an object of another database. [`record_refs`] reports
//! every reference with its kind, so tools can show all of them;
//! [`strong_refs`] is what pack follows.
//!
//! The decoder never runs code, so references are found wherever they sit
//! in the value tree: dict keys and values, REDUCE arguments, BUILD states
//! (BTree buckets, PersistentMapping data, ZBigFile block tables, ZBlk1
//! chunk tables, ZBigArray's file). Records whose state is one plain byte
//! string (ZBlk0 blocks, ZData chunks) hold no references and are
//! recognized without decoding their payload.

use crate::error::Result;
use crate::ids::Oid;
use crate::pickle::{self, Decoder};
use crate::value::Value;

/// What a persistent reference means to garbage collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// A bare oid or `(oid, class)`: keeps its target alive.
    Strong,
    /// `['w', ...]` or `[oid]`: does not keep its target alive.
    Weak,
    /// `['m', ...]` or `['n', ...]`: an object of another database.
    CrossDatabase,
}

/// One persistent reference found in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ref {
    /// The referenced oid.
    pub oid: Oid,
    /// Its kind.
    pub kind: RefKind,
}

/// Every persistent reference in a record, in pickle order (both pickles).
pub fn record_refs(data: &[u8]) -> Result<Vec<Ref>> {
    let mut out = Vec::new();
    if pickle::bytes_state(data).is_some() {
        // The class pickle may in principle hold a reference; the plain
        // byte-string state holds none.
        let (meta, _) = pickle::decode(data)?;
        collect(&meta, &mut out);
        return Ok(out);
    }
    let mut d = Decoder::new(data);
    let meta = d.load()?;
    collect(&meta, &mut out);
    let state = d.load_last()?;
    collect(&state, &mut out);
    Ok(out)
}

/// The oids a record keeps alive (ZODB's `referencesf`).
pub fn strong_refs(data: &[u8]) -> Result<Vec<Oid>> {
    Ok(record_refs(data)?
        .into_iter()
        .filter(|r| r.kind == RefKind::Strong)
        .map(|r| r.oid)
        .collect())
}

/// The kind of a persistent reference's pid, and its oid if it has one.
fn classify(v: &Value) -> Option<Ref> {
    let Value::PersistentRef(pid) = v else {
        return None;
    };
    let kind = match pid.as_ref() {
        Value::List(items) => match items.as_slice() {
            [kind, _] if kind.as_text() == Some("m") || kind.as_text() == Some("n") => {
                RefKind::CrossDatabase
            }
            _ => RefKind::Weak,
        },
        _ => RefKind::Strong,
    };
    let oid = v.ref_oid().or_else(|| match pid.as_ref() {
        // Python 3 reading a py2 pickle may see an all-ASCII oid as text.
        Value::Str(s) => Oid::from_slice(s.as_bytes()),
        Value::Tuple(items) => items
            .first()
            .and_then(Value::as_text)
            .and_then(|s| Oid::from_slice(s.as_bytes())),
        _ => None,
    })?;
    Some(Ref { oid, kind })
}

fn collect(v: &Value, out: &mut Vec<Ref>) {
    // An explicit stack: value trees can be deep (MAX_DEPTH), recursion
    // here would double the stack use of the decoder.
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        match v {
            Value::PersistentRef(pid) => {
                if let Some(r) = classify(v) {
                    out.push(r);
                }
                // A pid holds no further references in practice; look anyway.
                todo.push(pid);
            }
            Value::Tuple(items) | Value::List(items) => todo.extend(items.iter().rev()),
            Value::Dict(items) => {
                for (k, val) in items.iter().rev() {
                    todo.push(val);
                    todo.push(k);
                }
            }
            Value::Reduce { callable, args } => {
                todo.push(args);
                todo.push(callable);
            }
            Value::Build { obj, state } => {
                todo.push(state);
                todo.push(obj);
            }
            Value::NewObj { cls, args } => {
                todo.push(args);
                todo.push(cls);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pickle::{Dialect, encode_record};

    fn pref(pid: Value) -> Value {
        Value::PersistentRef(Box::new(pid))
    }

    #[test]
    fn every_reference_form_is_classified() {
        let o = |n: u64| Value::Bytes(Oid(n).to_bytes().to_vec());
        let state = Value::Dict(vec![
            (
                Value::Str("a".into()),
                Value::persistent_ref(Oid(1), "m", "C"),
            ),
            (Value::Str("b".into()), pref(o(2))),
            (
                Value::Str("c".into()),
                pref(Value::List(vec![
                    Value::Str("w".into()),
                    Value::Tuple(vec![o(3)]),
                ])),
            ),
            (Value::Str("d".into()), pref(Value::List(vec![o(4)]))),
            (
                Value::Str("e".into()),
                pref(Value::List(vec![
                    Value::Str("m".into()),
                    Value::Tuple(vec![Value::Str("db".into()), o(5), Value::global("m", "C")]),
                ])),
            ),
            (
                Value::Str("f".into()),
                Value::List(vec![pref(Value::List(vec![
                    Value::Str("n".into()),
                    Value::Tuple(vec![Value::Str("db".into()), o(6)]),
                ]))]),
            ),
            (
                pref(Value::Tuple(vec![o(7), Value::None])),
                Value::Tuple(vec![pref(o(8))]),
            ),
        ]);
        let rec = encode_record("m", "C", &state, Dialect::Py3).expect("encode");
        let refs = record_refs(&rec).expect("refs");
        let got: Vec<(u64, RefKind)> = refs.iter().map(|r| (r.oid.0, r.kind)).collect();
        assert_eq!(
            got,
            vec![
                (1, RefKind::Strong),
                (2, RefKind::Strong),
                (3, RefKind::Weak),
                (4, RefKind::Weak),
                (5, RefKind::CrossDatabase),
                (6, RefKind::CrossDatabase),
                (7, RefKind::Strong),
                (8, RefKind::Strong),
            ]
        );
        let strong: Vec<u64> = strong_refs(&rec)
            .expect("strong")
            .iter()
            .map(|o| o.0)
            .collect();
        assert_eq!(strong, vec![1, 2, 7, 8]);
    }

    #[test]
    fn byte_payloads_hold_no_references() {
        let rec = encode_record(
            "wendelin.bigfile.file_zodb",
            "ZBlk0",
            &Value::Bytes(vec![7u8; 100_000]),
            Dialect::Py3,
        )
        .expect("encode");
        assert!(strong_refs(&rec).expect("refs").is_empty());
    }
}
