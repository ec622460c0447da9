//! Pickle codec for ZODB records (FORMATS.md §3): decode protocols 0-3 (py2
//! and py3 dialects) into [`Value`] trees without executing anything; encode
//! value trees into pickles Python ZODB loads.
//!
//! A record is two pickles written by one pickler: the class metadata, then
//! the object state. They share one memo, so [`decode_record`] runs both
//! through one [`Decoder`].
//!
//! ```
//! use storage::pickle::{self, Dialect};
//! use storage::Value;
//! let state = Value::Dict(vec![(Value::Str("data".into()), Value::Dict(vec![]))]);
//! let rec = pickle::encode_record("persistent.mapping", "PersistentMapping", &state, Dialect::Py3)?;
//! assert_eq!(pickle::record_class(&rec)?, "persistent.mapping.PersistentMapping");
//! let (_meta, back) = pickle::decode_record(&rec)?;
//! assert_eq!(back, state);
//! # Ok::<(), storage::Error>(())
//! ```

mod bytes_state;
mod decode;
mod encode;
pub(crate) mod opcodes;
mod padding;

pub use bytes_state::{
    BYTES_STATE_HEAD, BytesStateLayout, BytesStateReader, bytes_state, bytes_state_layout,
    is_bytes_state_tail,
};
pub use decode::{Decoder, MAX_DEPTH};
pub use padding::{MAX_PADDING, padding_to_align, push_padding};

use crate::error::{Error, Result};
use crate::value::Value;

/// Which Python the pickles are for. Follows the FileStorage magic:
/// `FS30` -> `Py3`, `FS21` -> `Py2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Python 3 ZODB (protocol 3, text as BINUNICODE, data as BINBYTES).
    Py3,
    /// Python 2 ZODB (protocol 2, py2 str for bytes, BINUNICODE for text):
    /// readable by every Python-2 ZODB, including cPickle-based ones.
    Py2,
}

/// Decode one pickle starting at `data[0]`; returns the value and the number
/// of bytes consumed (up to and including STOP).
pub fn decode(data: &[u8]) -> Result<(Value, usize)> {
    let mut d = Decoder::new(data);
    let v = d.load_last()?;
    Ok((v, d.position()))
}

/// Decode a ZODB record: (class metadata pickle, state pickle), sharing one memo.
pub fn decode_record(data: &[u8]) -> Result<(Value, Value)> {
    check_plain(data)?;
    let mut d = Decoder::new(data);
    let meta = d.load()?;
    let state = d.load_last()?;
    if d.position() != data.len() {
        return Err(Error::Pickle {
            offset: d.position(),
            msg: format!(
                "{} trailing bytes after the state pickle",
                data.len() - d.position()
            ),
        });
    }
    Ok((meta, state))
}

fn check_plain(data: &[u8]) -> Result<()> {
    match data.first() {
        Some(0x80 | b'c' | b'(') => Ok(()),
        Some(b) => Err(Error::Pickle {
            offset: 0,
            msg: format!(
                "record does not start with a pickle (first byte 0x{b:02x}): wrapped (e.g. zlibstorage) or not a ZODB record"
            ),
        }),
        None => Err(Error::Pickle {
            offset: 0,
            msg: "empty record".into(),
        }),
    }
}

/// Encode one value as a pickle.
pub fn encode(value: &Value, dialect: Dialect) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode::encode_into(&mut out, value, dialect)?;
    Ok(out)
}

/// Encode a ZODB record for an object of class `module.name` with `state`
/// (class metadata form 1 of FORMATS.md §3.2: a bare GLOBAL).
pub fn encode_record(module: &str, name: &str, state: &Value, dialect: Dialect) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + module.len() + name.len());
    encode::encode_into(&mut out, &Value::global(module, name), dialect)?;
    encode::encode_into(&mut out, state, dialect)?;
    Ok(out)
}

/// The record of class `module.name` whose state is a byte string of
/// `len` bytes, as the parts around that payload: `(head, tail)`, the head
/// being the class pickle and the state pickle up to the payload. `head`,
/// the payload, `tail` written one after the other are exactly the bytes of
/// [`encode_record`] with `Value::Bytes(payload)`: the streaming form for
/// large block payloads, which are then never copied into a pickle.
pub fn encode_bytes_record_parts(
    module: &str,
    name: &str,
    len: usize,
    dialect: Dialect,
) -> Result<(Vec<u8>, &'static [u8])> {
    Ok((
        encode_bytes_record_head(module, name, len, 0, dialect)?,
        b".",
    ))
}

/// The head of [`encode_bytes_record_parts`] with exactly `pad` bytes of
/// no-op padding between the state's `PROTO` and the payload's opcode
/// (FORMATS.md §3.5): `pad` bytes longer, and the record reads as the
/// same value. `pad == 1` is impossible (an error): see [`padding_to_align`].
pub fn encode_bytes_record_head(
    module: &str,
    name: &str,
    len: usize,
    pad: usize,
    dialect: Dialect,
) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(64 + module.len() + name.len() + pad);
    encode::encode_into(&mut head, &Value::global(module, name), dialect)?;
    encode::encode_bytes_head(&mut head, len, pad, dialect)?;
    Ok(head)
}

/// The class of a record as `(module, name)`, from a decoded class-metadata
/// value in any of the forms of FORMATS.md §3.2, with ZODB's module aliases
/// applied. `None` if the value has none of those forms.
pub fn class_of_meta(meta: &Value) -> Option<(String, String)> {
    let (module, name) = match meta {
        Value::Global { module, name } => (module.as_str(), name.as_str()),
        Value::Tuple(items) if items.len() == 2 => match &items[0] {
            Value::Global { module, name } => (module.as_str(), name.as_str()),
            Value::Tuple(mn) if mn.len() == 2 => (mn[0].as_text()?, mn[1].as_text()?),
            _ => return None,
        },
        _ => return None,
    };
    Some((module_alias(module).to_owned(), name.to_owned()))
}

/// ZODB's module aliases for renamed modules.
fn module_alias(module: &str) -> &str {
    match module {
        "ZODB.PersistentMapping" => "persistent.mapping",
        "ZODB.PersistentList" => "persistent.list",
        "ZODB.TimeStamp" => "persistent.TimeStamp",
        m => m,
    }
}

/// The class path `module.name` of a record (from its class-metadata pickle,
/// any of the forms in FORMATS.md §3.2, with ZODB's module aliases applied).
pub fn record_class(data: &[u8]) -> Result<String> {
    check_plain(data)?;
    let (meta, _) = decode(data)?;
    class_of_meta(&meta)
        .map(|(m, n)| format!("{m}.{n}"))
        .ok_or_else(|| Error::Pickle {
            offset: 0,
            msg: "class metadata is neither a global nor (class, args)".into(),
        })
}

#[cfg(test)]
mod tests;
