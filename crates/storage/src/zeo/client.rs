//! One connection to a ZEO server: calls matched to replies by msgid,
//! one-way calls, the server's pushed calls, and the heartbeat.
//!
//! # Model
//!
//! A [`Conn`] owns a socket. Callers on any thread write whole frames under
//! a writer lock and wait, bounded by the reply timeout, on a channel
//! registered under their msgid. One reader thread per connection reads
//! frames in arrival order and:
//!
//! - hands each `.reply` to its waiter (errors flagged by the server become
//!   [`Error`]s), after applying the call's [`Hook`]: a `loadBefore` reply
//!   is put in the cache, a `tpc_finish` reply records the client's own
//!   commit (the server does not echo it back) as an invalidation;
//! - applies `invalidateTransaction(tid, oids)` to the cache and the
//!   invalidation log;
//! - when the socket has been idle for the heartbeat interval, sends ZEO's
//!   keep-alive.
//!
//! Doing cache updates on the reader thread, in stream order, is what keeps
//! the cache consistent without locks spanning round trips (see
//! [`super::cache`]). When the socket fails, the reader marks the connection
//! dead and drops every waiter's channel, so every pending call fails at once
//! with "connection lost" instead of waiting out its timeout.

use super::cache::Cache;
use super::invalidations::InvalidationLog;
use super::message::{self, FLAG_EXCEPTION, oid_of, tid_of};
use super::url::ZeoOptions;
use super::wire::{self, FrameReader, Read1, Stream, net_err};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::value::Value;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Client state that outlives connections: cache, invalidations, last tid.
pub struct ClientState {
    /// The revision cache.
    pub cache: Mutex<Cache>,
    /// Pushed and own invalidations.
    pub log: Mutex<InvalidationLog>,
    /// The newest tid this client knows of.
    pub last_tid: Mutex<Tid>,
    /// `zeo://address/storage`, for messages.
    pub server: String,
}

impl ClientState {
    /// Apply "`oids` changed at `tid`".
    pub fn invalidated(&self, tid: Tid, oids: &[Oid]) {
        self.cache.lock().invalidate(tid, oids);
        self.log.lock().record(tid, oids);
        let mut last = self.last_tid.lock();
        *last = (*last).max(tid);
    }
}

/// Work the reader thread does with a reply before handing it over.
pub enum Hook {
    /// Nothing.
    None,
    /// A `loadBefore(oid, ..)` reply: cache it.
    Load(Oid),
    /// A `tpc_finish` reply: the tid at which these oids changed.
    Committed(Vec<Oid>),
}

struct Pending {
    tx: mpsc::SyncSender<Result<Value>>,
    hook: Hook,
}

/// A live connection.
pub struct Conn {
    state: Arc<ClientState>,
    writer: Mutex<Stream>,
    pending: Mutex<HashMap<i64, Pending>>,
    next_id: AtomicI64,
    dead: Mutex<Option<String>>,
    timeout: Duration,
    addr: super::url::Address,
}

impl Conn {
    /// Connect, handshake and start the reader thread. All within the
    /// options' connect timeout.
    pub fn open(opts: &ZeoOptions, state: Arc<ClientState>) -> Result<Arc<Conn>> {
        let deadline = Instant::now() + opts.connect_timeout;
        let addr = &opts.address;
        let mut stream = Stream::connect(addr, opts.connect_timeout)?;
        let mut reader = FrameReader::default();
        wire::handshake(&mut stream, &mut reader, addr, deadline)?;
        let rstream = stream
            .try_clone()
            .map_err(|e| net_err(addr, "clone socket", e))?;
        rstream
            .set_read_timeout(Some(opts.heartbeat))
            .and_then(|()| stream.set_write_timeout(Some(opts.timeout)))
            .map_err(|e| net_err(addr, "set timeout", e))?;
        let conn = Arc::new(Conn {
            state,
            writer: Mutex::new(stream),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicI64::new(1),
            dead: Mutex::new(None),
            timeout: opts.timeout,
            addr: addr.clone(),
        });
        let c = Arc::clone(&conn);
        std::thread::Builder::new()
            .name("zeo-reader".into())
            .spawn(move || c.read_loop(rstream, reader))
            .map_err(|e| net_err(addr, "spawn reader thread", e))?;
        Ok(conn)
    }

    /// True until the socket failed or [`Conn::close`] was called.
    pub fn is_alive(&self) -> bool {
        self.dead.lock().is_none()
    }

    /// Close the socket; pending and later calls fail.
    pub fn close(&self) {
        self.die("closed by the client".into());
        self.writer.lock().shutdown();
    }

    fn lost(&self, op: &'static str) -> Error {
        let why = self
            .dead
            .lock()
            .clone()
            .unwrap_or_else(|| "connection lost".into());
        net_err(
            &self.addr,
            op,
            io::Error::new(io::ErrorKind::ConnectionAborted, why),
        )
    }

    fn die(&self, why: String) {
        {
            let mut d = self.dead.lock();
            if d.is_none() {
                tracing::debug!(server = %self.state.server, reason = %why, "ZEO connection down");
                *d = Some(why);
            }
        }
        self.pending.lock().clear();
    }

    fn send(&self, op: &'static str, frame: &[u8]) -> Result<()> {
        if !self.is_alive() {
            return Err(self.lost(op));
        }
        let mut w = self.writer.lock();
        wire::write_frame(&mut *w, frame).map_err(|e| {
            drop(w);
            self.die(format!("write failed: {e}"));
            self.lost(op)
        })
    }

    /// Call `name` and wait (bounded by `timeout`, or the reply timeout) for its reply.
    pub fn call_with(
        &self,
        name: &'static str,
        args: Vec<Value>,
        hook: Hook,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = message::encode_call(id, false, name, args)?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.pending.lock().insert(id, Pending { tx, hook });
        if let Err(e) = self.send(name, &frame) {
            self.pending.lock().remove(&id);
            return Err(e);
        }
        let t = timeout.unwrap_or(self.timeout);
        match rx.recv_timeout(t) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.pending.lock().remove(&id);
                Err(net_err(
                    &self.addr,
                    name,
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no reply within {:.1}s", t.as_secs_f64()),
                    ),
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.lost(name)),
        }
    }

    /// [`Conn::call_with`] with no hook and the reply timeout.
    pub fn call(&self, name: &'static str, args: Vec<Value>) -> Result<Value> {
        self.call_with(name, args, Hook::None, None)
    }

    /// A one-way call (no reply; errors surface at the next call, e.g. vote).
    pub fn one_way(&self, name: &'static str, args: Vec<Value>) -> Result<()> {
        let frame = message::encode_call(0, true, name, args)?;
        self.send(name, &frame)
    }

    fn read_loop(self: Arc<Self>, mut stream: Stream, mut reader: FrameReader) {
        let hb = match message::heartbeat() {
            Ok(hb) => hb,
            Err(e) => return self.die(format!("heartbeat: {e}")),
        };
        loop {
            if !self.is_alive() {
                return;
            }
            match reader.read(&mut stream) {
                Ok(Read1::Idle) => {
                    if self.send("heartbeat", &hb).is_err() {
                        return;
                    }
                }
                Ok(Read1::Frame(f)) => {
                    if let Err(e) = self.dispatch(&f) {
                        return self.die(format!("bad message from the server: {e}"));
                    }
                }
                Err(e) => return self.die(e.to_string()),
            }
        }
    }

    fn dispatch(&self, frame: &[u8]) -> Result<()> {
        let m = message::decode(frame)?;
        match m.name.as_str() {
            ".reply" => {
                let Some(p) = self.pending.lock().remove(&m.msgid) else {
                    return Ok(()); // the caller gave up waiting
                };
                let r = if m.flags == FLAG_EXCEPTION {
                    Err(message::server_error(&self.state.server, &m.args))
                } else {
                    self.apply(p.hook, &m.args);
                    Ok(m.args)
                };
                let _ = p.tx.try_send(r);
            }
            "invalidateTransaction" => {
                let args = m.args.as_seq().unwrap_or_default();
                let (Some(tid), Some(oids)) = (
                    args.first().and_then(tid_of),
                    args.get(1).and_then(Value::as_seq),
                ) else {
                    return Err(message::bad_reply("invalidateTransaction", &m.args));
                };
                let oids: Vec<Oid> = oids.iter().filter_map(oid_of).collect();
                self.state.invalidated(tid, &oids);
            }
            _ => {} // info(...) and future notifications: nothing to do
        }
        Ok(())
    }

    fn apply(&self, hook: Hook, reply: &Value) {
        match hook {
            Hook::None => {}
            Hook::Load(oid) => {
                if let Some([data, start, end]) = reply.as_seq()
                    && let (Some(data), Some(start)) = (data.as_bytes(), tid_of(start))
                {
                    self.state
                        .cache
                        .lock()
                        .insert(oid, start, tid_of(end), data.to_vec());
                }
            }
            Hook::Committed(oids) => {
                if let Some(tid) = tid_of(reply) {
                    self.state.invalidated(tid, &oids);
                }
            }
        }
    }
}
