//! Two-phase commit over ZEO.
//!
//! # Model
//!
//! The server buffers a transaction until the vote: `tpc_begin(id, user,
//! description, extension, None, ' ')` opens it under a client-chosen id,
//! `storea(oid, serial, data, id)` and `checkCurrentSerialInTransaction(oid,
//! serial, id)` are one-way calls that only append to the server's log, and
//! `vote(id)` takes the server's commit lock, replays the log into the
//! storage and answers:
//!
//! - an exception: the transaction failed there and was aborted (a
//!   `ConflictError` the server could not resolve becomes
//!   [`Error::Conflict`]);
//! - a list of oids: conflicts the server resolved itself (Python BTrees
//!   are installed with ZEO, so bucket conflicts resolve there) — returned
//!   from [`StorageTxn::vote`] like locally resolved ones, so the caller
//!   reloads those objects;
//! - a list of dicts `{oid, serials: (committed, read), data}`: conflicts
//!   left to the client (servers run with client-side conflict resolution).
//!   They are merged with the transaction's [`ConflictResolver`] — the same
//!   BTree bucket merge as locally — re-stored against the committed serial,
//!   and the vote repeated.
//!
//! `tpc_finish(id)` answers the tid the server chose (so [`StorageTxn::tid`]
//! is not known before then); the reply is applied as an invalidation of the
//! stored oids on the reader thread. The transaction keeps the connection it
//! began on: if that connection is lost before `tpc_finish` was sent, the
//! server aborts its side and the commit fails with an error saying nothing
//! was committed; a loss after `tpc_finish` was sent leaves the outcome
//! unknown, which the error says too.

use super::client::{ClientState, Conn, Hook};
use super::message::{bad_reply, oid_of, tid_of};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::storage::{ConflictResolver, StorageTxn, TxnMeta};
use crate::value::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Most vote rounds when conflicts are resolved client-side (ZEO's bound).
const MAX_VOTES: usize = 9;

static NEXT_ID: AtomicI64 = AtomicI64::new(1);

/// A transaction in two-phase commit on a ZEO server.
pub struct ZeoTxn {
    conn: Arc<Conn>,
    state: Arc<ClientState>,
    id: i64,
    stored: Vec<Oid>,
    resolver: Option<Arc<dyn ConflictResolver>>,
    resolved: Vec<Oid>,
    voted: bool,
    done: bool,
}

fn b(x: [u8; 8]) -> Value {
    Value::Bytes(x.to_vec())
}

/// An I/O error with `note` appended to its message (other errors as they are).
fn annotate(e: Error, note: &str) -> Error {
    match e {
        Error::Io { path, op, source } => Error::Io {
            path,
            op,
            source: std::io::Error::new(source.kind(), format!("{source} ({note})")),
        },
        e => e,
    }
}

/// Begin a transaction on `conn`.
pub fn begin(
    conn: Arc<Conn>,
    state: Arc<ClientState>,
    meta: TxnMeta,
    resolver: Option<Arc<dyn ConflictResolver>>,
) -> Result<ZeoTxn> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) + i64::from(std::process::id()) * (1 << 32);
    conn.call(
        "tpc_begin",
        vec![
            Value::Int(id),
            Value::Bytes(meta.user),
            Value::Bytes(meta.description),
            Value::Bytes(meta.extension),
            Value::None,
            Value::Str(" ".into()),
        ],
    )?;
    Ok(ZeoTxn {
        conn,
        state,
        id,
        stored: Vec::new(),
        resolver,
        resolved: Vec::new(),
        voted: false,
        done: false,
    })
}

impl ZeoTxn {
    /// Errors of a lost connection say what became of the transaction.
    fn during(&self, phase: &str, e: Error) -> Error {
        annotate(
            e,
            &format!("during {phase}; the transaction was not committed"),
        )
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        let r = self
            .conn
            .call("loadSerial", vec![b(oid.to_bytes()), b(serial.to_bytes())])?;
        r.as_bytes()
            .map(<[u8]>::to_vec)
            .ok_or_else(|| bad_reply("loadSerial", &r))
    }

    /// Resolve one conflict the server left to the client and re-store.
    fn resolve(&mut self, c: &Value) -> Result<()> {
        let bad = || bad_reply("vote", c);
        let oid = c.dict_get("oid").and_then(oid_of).ok_or_else(bad)?;
        let serials = c
            .dict_get("serials")
            .and_then(Value::as_seq)
            .ok_or_else(bad)?;
        let (committed, read) = match serials {
            [c, r] => (tid_of(c).ok_or_else(bad)?, tid_of(r).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        let data = c
            .dict_get("data")
            .and_then(Value::as_bytes)
            .ok_or_else(bad)?;
        let conflict = |reason: Option<String>| Error::Conflict {
            oid,
            loaded: read,
            committed,
            reason,
        };
        let Some(resolver) = self.resolver.clone() else {
            return Err(conflict(None));
        };
        if read == Tid::ZERO {
            return Err(conflict(Some("object created concurrently".into())));
        }
        let old = self.load_serial(oid, read)?;
        let cur = self.load_serial(oid, committed)?;
        let merged = resolver
            .resolve(oid, &old, &cur, data)
            .map_err(|r| conflict(Some(r)))?;
        self.conn.one_way(
            "storea",
            vec![
                b(oid.to_bytes()),
                b(committed.to_bytes()),
                Value::Bytes(merged),
                Value::Int(self.id),
            ],
        )?;
        self.resolved.push(oid);
        Ok(())
    }

    fn vote_rounds(&mut self) -> Result<()> {
        for _ in 0..MAX_VOTES {
            let r = self.conn.call("vote", vec![Value::Int(self.id)])?;
            let items = match &r {
                Value::None => return Ok(()),
                v => v.as_seq().ok_or_else(|| bad_reply("vote", v))?.to_vec(),
            };
            let mut again = false;
            for it in &items {
                if let Some(oid) = oid_of(it) {
                    self.resolved.push(oid);
                } else {
                    self.resolve(it)?;
                    again = true;
                }
            }
            if !again {
                return Ok(());
            }
        }
        Err(Error::Protocol(format!(
            "{}: conflicts still unresolved after {MAX_VOTES} votes",
            self.state.server
        )))
    }
}

impl StorageTxn for ZeoTxn {
    /// Over ZEO the server chooses the tid in `tpc_finish`; before that this
    /// is `Tid::ZERO`.
    fn tid(&self) -> Tid {
        Tid::ZERO
    }

    fn store(&mut self, oid: Oid, serial: Tid, data: Vec<u8>) -> Result<()> {
        if self.voted {
            return Err(Error::Protocol("store after vote".into()));
        }
        if data.is_empty() {
            return Err(Error::Protocol(format!("oid {oid}: empty record data")));
        }
        self.conn
            .one_way(
                "storea",
                vec![
                    b(oid.to_bytes()),
                    b(serial.to_bytes()),
                    Value::Bytes(data),
                    Value::Int(self.id),
                ],
            )
            .map_err(|e| self.during("store", e))?;
        self.stored.push(oid);
        Ok(())
    }

    fn check_current(&mut self, oid: Oid, serial: Tid) -> Result<()> {
        self.conn
            .one_way(
                "checkCurrentSerialInTransaction",
                vec![b(oid.to_bytes()), b(serial.to_bytes()), Value::Int(self.id)],
            )
            .map_err(|e| self.during("store", e))
    }

    fn vote(&mut self) -> Result<Vec<Oid>> {
        if !self.voted {
            if let Err(e) = self.vote_rounds() {
                if let Error::Conflict { oid, .. } = &e {
                    // Our cached copy may be stale (as ClientStorage does).
                    self.state.cache.lock().forget(&[*oid]);
                }
                return Err(self.during("vote", e));
            }
            self.voted = true;
        }
        Ok(self.resolved.clone())
    }

    fn finish(mut self: Box<Self>) -> Result<Tid> {
        if !self.voted {
            self.vote()?;
        }
        self.done = true;
        let stored = std::mem::take(&mut self.stored);
        let r = self
            .conn
            .call_with(
                "tpc_finish",
                vec![Value::Int(self.id)],
                Hook::Committed(stored),
                None,
            )
            .map_err(|e| {
                annotate(
                    e,
                    "after tpc_finish was sent: whether the transaction committed is unknown",
                )
            })?;
        tid_of(&r).ok_or_else(|| bad_reply("tpc_finish", &r))
    }

    fn abort(mut self: Box<Self>) {
        self.done = true;
        if self.conn.is_alive()
            && let Err(e) = self.conn.call("tpc_abort", vec![Value::Int(self.id)])
        {
            tracing::debug!(server = %self.state.server, error = %e, "tpc_abort");
        }
    }
}

impl Drop for ZeoTxn {
    fn drop(&mut self) {
        if !self.done && self.conn.is_alive() {
            let _ = self.conn.one_way("tpc_abort", vec![Value::Int(self.id)]);
        }
    }
}
