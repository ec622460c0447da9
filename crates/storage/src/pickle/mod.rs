//! Pickle codec for ZODB records (FORMATS.md §3): decode protocols 0-3 (py2
//! and py3 dialects) into [`Value`] trees without executing anything; encode
//! value trees into pickles Python ZODB loads.

use crate::error::Result;
use crate::value::Value;

/// Which Python the pickles are for. Follows the FileStorage magic:
/// `FS30` -> `Py3`, `FS21` -> `Py2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Python 3 ZODB (protocol 3, text as BINUNICODE, data as BINBYTES).
    Py3,
    /// Python 2 ZODB (protocol 2/3 with py2 str for text).
    Py2,
}

/// Decode one pickle starting at `data[0]`; returns the value and the number
/// of bytes consumed (up to and including STOP).
pub fn decode(data: &[u8]) -> Result<(Value, usize)> {
    let _ = data;
    todo!("pickle decoder")
}

/// Decode a ZODB record: (class metadata pickle, state pickle), sharing one memo.
pub fn decode_record(data: &[u8]) -> Result<(Value, Value)> {
    let _ = data;
    todo!("pickle decoder")
}

/// Encode one value as a pickle.
pub fn encode(value: &Value, dialect: Dialect) -> Result<Vec<u8>> {
    let _ = (value, dialect);
    todo!("pickle encoder")
}

/// Encode a ZODB record for an object of class `module.name` with `state`.
pub fn encode_record(module: &str, name: &str, state: &Value, dialect: Dialect) -> Result<Vec<u8>> {
    let _ = (module, name, state, dialect);
    todo!("pickle encoder")
}

/// The class path `module.name` of a record (from its class-metadata pickle,
/// any of the forms in FORMATS.md §3.2, with ZODB's module aliases applied).
pub fn record_class(data: &[u8]) -> Result<String> {
    let _ = data;
    todo!("pickle decoder")
}
