//! The ZEO client storage: a database served by a ZEO server (`runzeo`),
//! shared by many processes on many machines, Python ZODB clients included.
//!
//! # Model
//!
//! [`ZeoStorage`] implements [`Storage`] over ZEO protocol 5 with pickle
//! messages (`Z5`), so every layer above (DB/Connection, bigfile, bigarray,
//! the CLI) works against a ZEO server exactly as against a FileStorage.
//! The parts, one file each:
//!
//! - [`url`]: `zeo://HOST:PORT` / `zeo:///socket` and query options;
//! - [`wire`]: sockets, sized frames, the `Z5`/`M5` handshake;
//! - [`message`]: `(msgid, flags, name, args)` pickles, server exceptions
//!   as storage errors;
//! - [`client`]: a connection with its reader thread (replies, pushed
//!   invalidations, heartbeat);
//! - [`cache`]: the bounded revision cache;
//! - [`invalidations`]: the log that answers `changed_oids`;
//! - [`commit`]: two-phase commit as a [`StorageTxn`];
//! - [`reconnect`]: register and catch up after a loss.
//!
//! Invalidations take the same path as with a FileStorage: the object layer
//! calls [`Storage::sync`] at a transaction boundary, then
//! [`Storage::changed_oids`] for the range it moves over. Here `sync` is a
//! `ping` round trip — the server answers in order, so every invalidation it
//! pushed before the ping has been applied when the reply arrives — and
//! returns the last tid seen; `changed_oids` answers from the recorded
//! `invalidateTransaction`s and the client's own commits. Connections then
//! invalidate exactly those objects, and bigfile exactly those blocks.
//!
//! Loads go through the cache, then `loadBefore(oid, before)` -> `(data,
//! start, end)` or `None`. New oids come from the server in batches
//! (`new_oids`). Every wait is bounded (connect, handshake, each reply), a
//! lost connection is re-established on the next call (not inside a
//! commit), and server errors map to [`Error`] variants.

pub mod cache;
pub mod client;
pub mod commit;
pub mod invalidations;
pub mod message;
pub mod reconnect;
pub mod url;
pub mod wire;

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::storage::{
    ConflictResolver, DataRecord, LoadedRecord, Storage, StorageTxn, TxnInfo, TxnMeta,
};
use crate::value::Value;
use client::{ClientState, Conn, Hook};
use message::{bad_reply, oid_of, tid_of};
use parking_lot::Mutex;
use std::sync::Arc;
pub use url::{Address, ZeoOptions};

/// A storage on a ZEO server.
pub struct ZeoStorage {
    opts: ZeoOptions,
    state: Arc<ClientState>,
    conn: Mutex<Option<Arc<Conn>>>,
    oids: Mutex<Vec<Oid>>,
}

fn b(x: [u8; 8]) -> Value {
    Value::Bytes(x.to_vec())
}

impl ZeoStorage {
    /// Connect to the server named by `zeo://` `rest` (see [`url`]).
    pub fn open_url(rest: &str, read_only: bool) -> Result<ZeoStorage> {
        let mut opts = ZeoOptions::parse(rest)?;
        opts.read_only |= read_only;
        ZeoStorage::open(opts)
    }

    /// Connect and register.
    pub fn open(opts: ZeoOptions) -> Result<ZeoStorage> {
        let server = format!("{}/{}", opts.address, opts.storage);
        let state = Arc::new(ClientState {
            cache: Mutex::new(cache::Cache::new(opts.cache_size)),
            log: Mutex::new(invalidations::InvalidationLog::new(Tid::ZERO)),
            last_tid: Mutex::new(Tid::ZERO),
            server,
        });
        let conn = reconnect::connect(&opts, &state, None)?;
        let zs = ZeoStorage {
            opts,
            state,
            conn: Mutex::new(Some(conn)),
            oids: Mutex::new(Vec::new()),
        };
        if !zs.opts.read_only && zs.load_before(Oid::ROOT, Tid::MAX)?.is_none() {
            zs.create_root()?;
        }
        Ok(zs)
    }

    /// A new database gets its root (an empty PersistentMapping) from the
    /// first writer that opens it, as Python's `DB` does; a concurrent
    /// creator winning is fine.
    fn create_root(&self) -> Result<()> {
        let state = Value::Dict(vec![(Value::Str("data".into()), Value::Dict(Vec::new()))]);
        let data = crate::pickle::encode_record(
            "persistent.mapping",
            "PersistentMapping",
            &state,
            crate::pickle::Dialect::Py3,
        )?;
        let meta = TxnMeta {
            description: b"initial database creation".to_vec(),
            ..TxnMeta::default()
        };
        let mut txn = self.tpc_begin(meta, None)?;
        txn.store(Oid::ROOT, Tid::ZERO, data)?;
        match txn.vote() {
            Err(e) if e.is_conflict() => {
                txn.abort();
                Ok(())
            }
            Err(e) => {
                txn.abort();
                Err(e)
            }
            Ok(_) => txn.finish().map(drop),
        }
    }

    /// The live connection, reconnecting if the last one was lost.
    fn conn(&self) -> Result<Arc<Conn>> {
        let mut g = self.conn.lock();
        if let Some(c) = g.as_ref()
            && c.is_alive()
        {
            return Ok(Arc::clone(c));
        }
        let known = *self.state.last_tid.lock();
        let c = reconnect::connect(&self.opts, &self.state, Some(known))?;
        *g = Some(Arc::clone(&c));
        Ok(c)
    }

    /// Cache hits and misses so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.state.cache.lock().stats
    }

    /// The server's `get_info()` (a dict: length, size, name, ...).
    pub fn server_info(&self) -> Result<Value> {
        self.conn()?.call("get_info", vec![])
    }

    /// Close the connection (a later call reconnects).
    pub fn close(&self) {
        if let Some(c) = self.conn.lock().take() {
            c.close();
        }
    }
}

impl Drop for ZeoStorage {
    fn drop(&mut self) {
        self.close();
    }
}

impl Storage for ZeoStorage {
    fn name(&self) -> String {
        self.state.server.clone()
    }

    fn is_read_only(&self) -> bool {
        self.opts.read_only
    }

    fn last_tid(&self) -> Tid {
        *self.state.last_tid.lock()
    }

    fn sync(&self) -> Result<Tid> {
        self.conn()?.call("ping", vec![])?;
        Ok(*self.state.last_tid.lock())
    }

    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRecord>> {
        if let Some(r) = self.state.cache.lock().lookup(oid, before) {
            return Ok(Some(r));
        }
        let r = self.conn()?.call_with(
            "loadBefore",
            vec![b(oid.to_bytes()), b(before.to_bytes())],
            Hook::Load(oid),
            None,
        );
        let r = match r {
            Err(Error::NotFound { .. }) => return Ok(None),
            r => r?,
        };
        match r.as_seq() {
            None if r == Value::None => Ok(None),
            Some([data, start, end]) => Ok(Some(LoadedRecord {
                data: data
                    .as_bytes()
                    .ok_or_else(|| bad_reply("loadBefore", &r))?
                    .to_vec(),
                serial: tid_of(start).ok_or_else(|| bad_reply("loadBefore", &r))?,
                next_serial: tid_of(end),
            })),
            _ => Err(bad_reply("loadBefore", &r)),
        }
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        let r = self
            .conn()?
            .call("loadSerial", vec![b(oid.to_bytes()), b(serial.to_bytes())])
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::NotFound {
                    oid,
                    tid: Some(serial),
                },
                e => e,
            })?;
        r.as_bytes()
            .map(<[u8]>::to_vec)
            .ok_or_else(|| bad_reply("loadSerial", &r))
    }

    fn new_oid(&self) -> Result<Oid> {
        let mut oids = self.oids.lock();
        if oids.is_empty() {
            let r = self.conn()?.call("new_oids", vec![])?;
            let got: Vec<Oid> = r
                .as_seq()
                .ok_or_else(|| bad_reply("new_oids", &r))?
                .iter()
                .filter_map(oid_of)
                .rev()
                .collect();
            if got.is_empty() {
                return Err(bad_reply("new_oids", &r));
            }
            *oids = got;
        }
        oids.pop()
            .ok_or_else(|| Error::Protocol("new_oids: empty batch".into()))
    }

    fn tpc_begin(
        &self,
        meta: TxnMeta,
        resolver: Option<Arc<dyn ConflictResolver>>,
    ) -> Result<Box<dyn StorageTxn>> {
        if self.opts.read_only {
            return Err(Error::ReadOnly {
                path: self.state.server.clone().into(),
            });
        }
        let conn = self.conn()?;
        Ok(Box::new(commit::begin(
            conn,
            Arc::clone(&self.state),
            meta,
            resolver,
        )?))
    }

    fn changed_oids(&self, after: Tid, upto: Tid) -> Result<Vec<Oid>> {
        self.state
            .log
            .lock()
            .changed(&self.state.server, after, upto)
    }

    fn iter_txns(
        &self,
        start: Tid,
        stop: Tid,
    ) -> Result<Box<dyn Iterator<Item = Result<TxnInfo>> + '_>> {
        let conn = self.conn()?;
        // The server's iterator stop is inclusive; ours is exclusive.
        let last = Tid(stop.0.saturating_sub(1));
        let iid = conn.call(
            "iterator_start",
            vec![b(start.to_bytes()), b(last.to_bytes())],
        )?;
        Ok(Box::new(TxnIter {
            conn,
            iid,
            done: false,
        }))
    }
}

/// Transactions through the server's `iterator_*` calls.
struct TxnIter {
    conn: Arc<Conn>,
    iid: Value,
    done: bool,
}

impl TxnIter {
    fn next_txn(&mut self) -> Result<Option<TxnInfo>> {
        let t = self.conn.call("iterator_next", vec![self.iid.clone()])?;
        if t == Value::None {
            return Ok(None);
        }
        let bad = || bad_reply("iterator_next", &t);
        let [tid, status, user, desc, ext] = t.as_seq().ok_or_else(bad)? else {
            return Err(bad());
        };
        let tid = tid_of(tid).ok_or_else(bad)?;
        let text = |v: &Value| {
            v.as_bytes()
                .map(<[u8]>::to_vec)
                .or_else(|| v.as_text().map(|s| s.as_bytes().to_vec()))
                .unwrap_or_default()
        };
        let status = text(status).first().copied().unwrap_or(b' ');
        let rid = self.conn.call(
            "iterator_record_start",
            vec![self.iid.clone(), b(tid.to_bytes())],
        )?;
        let mut records = Vec::new();
        loop {
            let r = self.conn.call("iterator_record_next", vec![rid.clone()])?;
            if r == Value::None {
                break;
            }
            let oid = r
                .as_seq()
                .and_then(|s| s.first())
                .and_then(oid_of)
                .ok_or_else(|| bad_reply("iterator_record_next", &r))?;
            let data = r.as_seq().and_then(|s| s.get(2)).and_then(Value::as_bytes);
            records.push(DataRecord {
                oid,
                data: data.map(<[u8]>::to_vec),
            });
        }
        Ok(Some(TxnInfo {
            tid,
            status,
            meta: TxnMeta {
                user: text(user),
                description: text(desc),
                extension: text(ext),
            },
            records,
        }))
    }
}

impl Iterator for TxnIter {
    type Item = Result<TxnInfo>;
    fn next(&mut self) -> Option<Result<TxnInfo>> {
        if self.done {
            return None;
        }
        match self.next_txn() {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
