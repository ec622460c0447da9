//! ZEO messages: `(msgid, flags, name, args)` as pickles, and server errors as
//! storage errors.
//!
//! # Model
//!
//! With the `Z5` protocol every frame is one protocol-3 pickle of the tuple
//! `(msgid, flags, name, args)` (ZEO's `marshal.py`), encoded and decoded
//! here with the crate's own [`crate::pickle`] codec, which never
//! executes anything it decodes. A call the client waits for has a positive
//! msgid and flags `False`; a one-way call has msgid 0 and flags `True`; the
//! heartbeat is `(-1, 0, '.reply', None)`, which the server ignores. The
//! server answers calls with `'.reply'` under the call's msgid; flags `2`
//! marks an exception, sent as `('module.Class', args-or-dict)`. The server's
//! own calls (`invalidateTransaction`, `info`) are one-way.
//!
//! [`server_error`] maps exceptions to [`Error`] variants: `POSKeyError` to
//! `NotFound`, `ConflictError`s to `Conflict` (oid and serials taken from the
//! exception's dict), `ReadOnlyError` to `ReadOnly`; anything else becomes a
//! `Protocol` error naming the Python class and its arguments.

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::pickle::{self, Dialect};
use crate::value::Value;

/// Flags value of an error reply.
pub const FLAG_EXCEPTION: i64 = 2;

/// A decoded message.
#[derive(Debug)]
pub struct Message {
    /// The call id (0 for one-way calls, -1 for heartbeats).
    pub msgid: i64,
    /// The flags (`True`/1 one-way call, 2 exception reply).
    pub flags: i64,
    /// The method name, or `.reply`.
    pub name: String,
    /// The arguments (a tuple) or the reply value.
    pub args: Value,
}

/// Encode a call: `one_way` gives msgid 0 / flags True, else `msgid` / False.
pub fn encode_call(msgid: i64, one_way: bool, name: &str, args: Vec<Value>) -> Result<Vec<u8>> {
    let msg = Value::Tuple(vec![
        Value::Int(if one_way { 0 } else { msgid }),
        Value::Bool(one_way),
        Value::Str(name.to_owned()),
        Value::Tuple(args),
    ]);
    pickle::encode(&msg, Dialect::Py3)
}

/// The heartbeat frame.
pub fn heartbeat() -> Result<Vec<u8>> {
    pickle::encode(
        &Value::Tuple(vec![
            Value::Int(-1),
            Value::Int(0),
            Value::Str(".reply".into()),
            Value::None,
        ]),
        Dialect::Py3,
    )
}

/// Decode one frame.
pub fn decode(frame: &[u8]) -> Result<Message> {
    let (v, _) = pickle::decode(frame)?;
    let bad = || Error::Protocol("ZEO: message is not (msgid, flags, name, args)".into());
    let Value::Tuple(mut items) = v else {
        return Err(bad());
    };
    if items.len() != 4 {
        return Err(bad());
    }
    let args = items.pop().ok_or_else(bad)?;
    let name = items[2].as_text().ok_or_else(bad)?.to_owned();
    let flags = match &items[1] {
        Value::None => 0,
        f => f.as_int().ok_or_else(bad)?,
    };
    Ok(Message {
        msgid: items[0].as_int().ok_or_else(bad)?,
        flags,
        name,
        args,
    })
}

/// An 8-byte id as a pickle value.
pub fn id_value(b: [u8; 8]) -> Value {
    Value::Bytes(b.to_vec())
}

/// An oid from a reply value.
pub fn oid_of(v: &Value) -> Option<Oid> {
    v.as_bytes().and_then(Oid::from_slice)
}

/// A tid from a reply value.
pub fn tid_of(v: &Value) -> Option<Tid> {
    v.as_bytes().and_then(Tid::from_slice)
}

/// A reply that does not have the shape the call promises.
pub fn bad_reply(call: &str, v: &Value) -> Error {
    let mut s = format!("{v:?}");
    s.truncate(200);
    Error::Protocol(format!("ZEO: unexpected reply to {call}: {s}"))
}

/// The error an exception reply stands for. `server` names the server and
/// storage for messages.
pub fn server_error(server: &str, args: &Value) -> Error {
    let (class, detail) = match args.as_seq() {
        Some([c, d]) => (c.as_text().unwrap_or("?"), d),
        _ => ("?", args),
    };
    let short = class.rsplit('.').next().unwrap_or(class);
    // Exception arguments: a tuple (exc.args) or a dict (exc.__dict__).
    let field = |k: &str| detail.dict_get(k);
    let first = detail.as_seq().and_then(|s| s.first());
    let text = || {
        field("message")
            .and_then(Value::as_text)
            .or_else(|| first.and_then(Value::as_text))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let mut s = format!("{detail:?}");
                s.truncate(300);
                s
            })
    };
    match short {
        "POSKeyError" => {
            let oid = first
                .or_else(|| field("oid"))
                .and_then(oid_of)
                .unwrap_or_default();
            Error::NotFound { oid, tid: None }
        }
        "ConflictError" | "ReadConflictError" | "BTreesConflictError" => {
            let oid = field("oid").and_then(oid_of).unwrap_or_default();
            let serials = field("serials").and_then(Value::as_seq);
            let s = |i: usize| {
                serials
                    .and_then(|s| s.get(i))
                    .and_then(tid_of)
                    .unwrap_or_default()
            };
            Error::Conflict {
                oid,
                loaded: s(1),
                committed: s(0),
                reason: Some(format!("ZEO server: {short}: {}", text())),
            }
        }
        "ReadOnlyError" => Error::ReadOnly {
            path: server.into(),
        },
        _ => Error::Protocol(format!("{server}: server error {class}: {}", text())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_round_trip_and_errors_map() {
        let f =
            encode_call(7, false, "loadBefore", vec![id_value([0; 8]), Value::None]).expect("enc");
        let m = decode(&f).expect("dec");
        assert_eq!((m.msgid, m.flags, m.name.as_str()), (7, 0, "loadBefore"));
        let m = decode(&heartbeat().expect("hb")).expect("dec");
        assert_eq!(m.msgid, -1);
        let e = server_error(
            "s",
            &Value::Tuple(vec![
                Value::Str("ZODB.POSException.POSKeyError".into()),
                Value::Tuple(vec![Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 5])]),
            ]),
        );
        assert!(matches!(e, Error::NotFound { oid: Oid(5), .. }), "{e}");
        let e = server_error(
            "s",
            &Value::Tuple(vec![
                Value::Str("ZODB.POSException.ConflictError".into()),
                Value::Dict(vec![
                    (
                        Value::Str("oid".into()),
                        Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 1]),
                    ),
                    (
                        Value::Str("serials".into()),
                        Value::Tuple(vec![
                            Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 3]),
                            Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 2]),
                        ]),
                    ),
                ]),
            ]),
        );
        assert!(
            matches!(
                e,
                Error::Conflict {
                    oid: Oid(1),
                    loaded: Tid(2),
                    committed: Tid(3),
                    ..
                }
            ),
            "{e}"
        );
    }
}
