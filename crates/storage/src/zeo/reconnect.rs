//! Getting (back) on speaking terms with the server: register, then catch up.
//!
//! # Model
//!
//! Every connection, the first and each one after a loss, is opened the same
//! way: connect and handshake ([`Conn::open`]), then `register(storage,
//! read_only)`, which answers the server's last tid. The first time, that tid
//! is where the client's knowledge starts (the invalidation log's horizon).
//! After a loss the client knew everything up to its own last tid `L`:
//!
//! - server last == `L`: nothing happened meanwhile;
//! - server last > `L`: `getInvalidations(L)` returns `(tid, oids)` changed
//!   since `L` (from the server's invalidation queue, which a restarted
//!   FileStorage server refills from the file); those oids are dropped from
//!   the cache and recorded as changed at `tid`. If the server answers `None`
//!   (its queue does not reach back to `L`) the whole cache is dropped and the
//!   invalidation log's history ends at the server's last tid: connections
//!   still at older snapshots then get a clear error at their next boundary
//!   instead of missing invalidations;
//! - server last < `L`: this is not the database the client was talking to
//!   (restored from a backup?): an error.
//!
//! Reconnection happens lazily, on the next call after a loss, under the
//! storage's connection lock, so one thread reconnects and the others wait.
//! A commit never reconnects: its connection's loss fails it (see
//! [`super::commit`]).

use super::client::{ClientState, Conn};
use super::message::{bad_reply, oid_of, tid_of};
use super::url::ZeoOptions;
use crate::error::{Error, Result};
use crate::ids::Tid;
use crate::value::Value;
use std::sync::Arc;

/// Connect and register; catch up if `known` (the last tid of a previous
/// connection) is given.
pub fn connect(
    opts: &ZeoOptions,
    state: &Arc<ClientState>,
    known: Option<Tid>,
) -> Result<Arc<Conn>> {
    let conn = Conn::open(opts, Arc::clone(state))?;
    let r = register(opts, state, &conn, known);
    if r.is_err() {
        conn.close();
    }
    r.map(|()| conn)
}

fn register(
    opts: &ZeoOptions,
    state: &Arc<ClientState>,
    conn: &Conn,
    known: Option<Tid>,
) -> Result<()> {
    let reply = conn
        .call_with(
            "register",
            vec![
                Value::Str(opts.storage.clone()),
                Value::Bool(opts.read_only),
            ],
            super::client::Hook::None,
            Some(opts.connect_timeout),
        )
        .map_err(|e| match e {
            Error::ReadOnly { .. } => Error::Protocol(format!(
                "{}: the server's storage is read-only; open it read-only (?read_only=true)",
                state.server
            )),
            Error::Protocol(m) if m.contains("unknown storage") => Error::Protocol(format!(
                "{}: the server has no storage named {:?} (choose one with ?storage=NAME)",
                state.server, opts.storage
            )),
            e => e,
        })?;
    let server_last = tid_of(&reply).ok_or_else(|| bad_reply("register", &reply))?;
    let Some(known) = known else {
        state.log.lock().lose_history(server_last);
        let mut last = state.last_tid.lock();
        *last = (*last).max(server_last);
        return Ok(());
    };
    if server_last == known {
        return Ok(());
    }
    if server_last < known {
        return Err(Error::Protocol(format!(
            "{}: the server's last transaction {server_last} is older than {known}, which this client already saw: not the same database",
            state.server
        )));
    }
    let inv = conn.call(
        "getInvalidations",
        vec![Value::Bytes(known.to_bytes().to_vec())],
    )?;
    match inv.as_seq() {
        Some([tid, oids]) => {
            let tid = tid_of(tid).ok_or_else(|| bad_reply("getInvalidations", &inv))?;
            let oids: Vec<_> = oids
                .as_seq()
                .ok_or_else(|| bad_reply("getInvalidations", &inv))?
                .iter()
                .filter_map(oid_of)
                .collect();
            state.cache.lock().forget(&oids);
            state.log.lock().record(tid, &oids);
            let mut last = state.last_tid.lock();
            *last = (*last).max(tid).max(server_last);
            tracing::info!(server = %state.server, n = oids.len(), "reconnected; caught up with invalidations");
        }
        _ if inv == Value::None => {
            state.cache.lock().clear();
            state.log.lock().lose_history(server_last);
            *state.last_tid.lock() = server_last;
            tracing::warn!(server = %state.server, "reconnected; the server could not replay invalidations: cache dropped");
        }
        _ => return Err(bad_reply("getInvalidations", &inv)),
    }
    Ok(())
}
