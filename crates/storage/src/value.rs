//! The value tree that ZODB pickles decode to and encode from.
//!
//! Decoding never runs code: globals stay names (`Value::Global`), calls stay
//! data (`Value::Reduce`, `Value::Build`, `Value::NewObj`).

use crate::ids::Oid;

/// A decoded pickle value.
///
/// Python-2 byte strings (`STRING`/`BINSTRING`/`SHORT_BINSTRING`) are kept apart
/// as [`Value::Py2Str`]: they are text in one place (dict keys) and data in
/// another (ZBlk0 payload), see FORMATS.md §3.5. Use [`Value::as_bytes`] and
/// [`Value::as_text`] to read them without caring which form was stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int that fits in i64.
    Int(i64),
    /// An int that does not fit in i64: little-endian two's complement bytes
    /// (the `LONG1`/`LONG4` payload), minimal length.
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// Python 3 `bytes` (`BINBYTES`/`SHORT_BINBYTES`; py2 zodbpickle `binary`).
    Bytes(Vec<u8>),
    /// A Python 2 `str`: bytes that may be text or data depending on context.
    Py2Str(Vec<u8>),
    /// Unicode text.
    Str(String),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, in pickle order (keys may repeat only if the pickle repeats them).
    Dict(Vec<(Value, Value)>),
    /// A global (`module.name`), e.g. a class.
    Global {
        /// Module path, e.g. `BTrees.LOBTree`.
        module: String,
        /// Name inside the module, e.g. `LOBTree`.
        name: String,
    },
    /// A persistent reference: the pid as pickled (see FORMATS.md §3.3).
    /// Use [`Value::ref_oid`] / [`Value::persistent_ref`] to read / build one.
    PersistentRef(Box<Value>),
    /// `callable(*args)` (REDUCE), not executed.
    Reduce {
        /// The callable (usually a `Global`).
        callable: Box<Value>,
        /// The argument tuple.
        args: Box<Value>,
    },
    /// `obj.__setstate__(state)` (BUILD), not executed.
    Build {
        /// The object being built.
        obj: Box<Value>,
        /// Its state.
        state: Box<Value>,
    },
    /// `cls.__new__(cls, *args)` (NEWOBJ / OBJ / INST), not executed.
    NewObj {
        /// The class.
        cls: Box<Value>,
        /// The argument tuple.
        args: Box<Value>,
    },
}

impl Value {
    /// Bytes of a `Bytes` or `Py2Str`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) | Value::Py2Str(b) => Some(b),
            _ => None,
        }
    }

    /// Text of a `Str`, or of a `Py2Str` that is valid UTF-8 (py2 text is ASCII by convention).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Py2Str(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The i64 of an `Int` (or of a `Bool`, as Python does).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// Items of a `Tuple` or `List`.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// Look up a text key in a `Dict` (keys compared with [`Value::as_text`]).
    pub fn dict_get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .rev() // a repeated key: the last one wins, as in Python
                .find(|(k, _)| k.as_text() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// `(module, name)` of a `Global`.
    pub fn as_global(&self) -> Option<(&str, &str)> {
        match self {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    /// Build a global.
    pub fn global(module: &str, name: &str) -> Value {
        Value::Global {
            module: module.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Build the default ZODB persistent reference `(oid, klass)` to `module.name`.
    pub fn persistent_ref(oid: Oid, module: &str, name: &str) -> Value {
        Value::PersistentRef(Box::new(Value::Tuple(vec![
            Value::Bytes(oid.to_bytes().to_vec()),
            Value::global(module, name),
        ])))
    }

    /// The oid of a persistent reference, whatever its form: `(oid, klass)`,
    /// `(oid, (module, name))`, bare `oid`, `['w', (oid[, db])]`, `[oid]`,
    /// `['m', (db, oid, klass)]`, `['n', (db, oid)]`.
    pub fn ref_oid(&self) -> Option<Oid> {
        let Value::PersistentRef(pid) = self else {
            return None;
        };
        fn oid_of(v: &Value) -> Option<Oid> {
            v.as_bytes().and_then(Oid::from_slice)
        }
        match pid.as_ref() {
            Value::Tuple(items) => items.first().and_then(oid_of),
            Value::List(items) => match items.as_slice() {
                [single] => oid_of(single),
                [kind, args] => {
                    let args = args.as_seq()?;
                    match kind.as_text()? {
                        "w" => args.first().and_then(oid_of),
                        "m" | "n" => args.get(1).and_then(oid_of),
                        _ => None,
                    }
                }
                _ => None,
            },
            other => oid_of(other),
        }
    }

    /// The class path `module.name` carried by a persistent reference, if any.
    pub fn ref_class(&self) -> Option<String> {
        let Value::PersistentRef(pid) = self else {
            return None;
        };
        fn class_of(v: &Value) -> Option<String> {
            match v {
                Value::Global { module, name } => Some(format!("{module}.{name}")),
                Value::Tuple(mn) if mn.len() == 2 => {
                    Some(format!("{}.{}", mn[0].as_text()?, mn[1].as_text()?))
                }
                _ => None,
            }
        }
        match pid.as_ref() {
            Value::Tuple(items) if items.len() == 2 => class_of(&items[1]),
            Value::List(items) if items.len() == 2 && items[0].as_text() == Some("m") => {
                items[1].as_seq().and_then(|a| a.get(2)).and_then(class_of)
            }
            _ => None,
        }
    }
}
