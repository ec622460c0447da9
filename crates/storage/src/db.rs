//! The object layer: [`DB`], [`Connection`] snapshots, typed persistent objects.
//!
//! A [`Connection`] sees the database as of one snapshot (`at`, a tid): every
//! load goes through `load_before(oid, at + 1)`, whatever other connections or
//! processes commit meanwhile. Objects loaded through it are cached per
//! connection with the serial they were loaded at. At every transaction
//! boundary of its [`TransactionManager`] (commit, abort) and at an explicit
//! [`Connection::sync`], the connection moves to the newest snapshot, drops
//! the objects that changed since its old one from its cache and hands the
//! exact set of changed oids to its invalidation subscribers.
//!
//! Objects are Rust values implementing [`Persistent`] (state <-> pickle value
//! tree, a ZODB class name). [`Connection::get_mut`] marks an object modified
//! and joins the connection to the current transaction; [`Connection::add`]
//! gives a new object its oid at once (as ZODB's `Connection.add` does). The
//! references returned by `get`/`get_mut` hold the connection's lock: copy out
//! what you need and drop them before calling the connection again.
//!
//! A [`DB`] is given its storage (`Arc<dyn Storage>`) and its conflict
//! resolution ([`ConflictResolver`]); this module names neither a storage
//! nor a persistent class, so storages and classes (BTrees) plug in without
//! touching it. [`crate::open`] builds the usual database ([`DB::new`],
//! [`DB::open`]). Objects are read through [`Snapshot`], the one recipe for
//! "record at a tid -> typed object".

pub use crate::persistent::{GenericObject, Persistent, PersistentClass, PersistentMapping};

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::pickle::{self, Dialect};
use crate::snapshot::Snapshot;
use crate::storage::{AlignedRecord, ConflictResolver, Storage, StorageTxn, TxnMeta};
use crate::transaction::{CommitPhase, DataManager, SortKey, Synchronizer, TransactionManager};
use crate::value::Value;
use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};
use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Byte payloads at least this long (ZBlk0 blocks; not 4 KiB ZData
/// chunks, which padding would double) are stored page-aligned by
/// [`Connection::store_bytes_now`].
pub const ALIGNED_PAYLOAD_MIN: usize = 256 << 10;

/// Oids whose state changed between two snapshots of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// The old snapshot.
    pub from: Tid,
    /// The new snapshot.
    pub to: Tid,
    /// Changed oids (ascending), excluding the connection's own commit.
    pub oids: Vec<Oid>,
    /// The tid of this connection's own commit inside `(from, to]`, if the
    /// move follows one (its changes are not in `oids`).
    pub own: Option<Tid>,
}

/// A database: a storage plus defaults for its connections.
#[derive(Clone)]
pub struct DB {
    storage: Arc<dyn Storage>,
    dialect: Dialect,
    cache_size: usize,
    /// Merges concurrent changes at commit; `None`: every concurrent change
    /// of an object is a conflict.
    resolver: Option<Arc<dyn ConflictResolver>>,
}

impl DB {
    /// A database over `storage` with the given conflict resolution, writing
    /// pickles in the storage's dialect. [`DB::new`] (in [`crate::open`])
    /// is this with the standard resolvers.
    pub fn with_resolver(
        storage: Arc<dyn Storage>,
        resolver: Option<Arc<dyn ConflictResolver>>,
    ) -> DB {
        DB {
            dialect: storage.dialect(),
            storage,
            cache_size: 10_000,
            resolver,
        }
    }

    /// The same database writing pickles in `dialect` (for storages that
    /// cannot tell their dialect).
    pub fn with_dialect(mut self, dialect: Dialect) -> DB {
        self.dialect = dialect;
        self
    }

    /// Objects each connection keeps cached (unmodified ones beyond it are dropped).
    pub fn set_cache_size(&mut self, n: usize) {
        self.cache_size = n.max(1);
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// A connection bound to `tm`, at the newest snapshot. It joins `tm`'s
    /// transactions when objects are modified and moves to the newest
    /// snapshot at each of `tm`'s transaction boundaries.
    pub fn open_connection(&self, tm: &TransactionManager) -> Result<Connection> {
        let at = self.storage.sync()?;
        let conn = Connection::new(self, at, Some(tm.clone()));
        let s: Arc<dyn Synchronizer> = conn.shared.clone();
        tm.register_synchronizer(Arc::downgrade(&s));
        Ok(conn)
    }

    /// A read-only connection at the past snapshot `at` (time travel).
    pub fn open_historical(&self, at: Tid) -> Result<Connection> {
        Ok(Connection::new(self, at, None))
    }
}

struct Entry {
    obj: Box<dyn Persistent>,
    serial: Tid,
    used: u64,
}

struct ConnState {
    at: Tid,
    cache: HashMap<Oid, Entry>,
    tick: u64,
    modified: BTreeSet<Oid>,
    added: BTreeSet<Oid>,
    txn: Option<Box<dyn StorageTxn>>,
    /// Metadata of the transaction in two-phase commit; the storage
    /// transaction starts on the first store (no empty records).
    pending: Option<TxnMeta>,
    /// Objects the changes depend on without being stored: (oid, serial).
    read_current: Vec<(Oid, Tid)>,
    stored: Vec<Oid>,
    resolved: Vec<Oid>,
    /// (tid, oids) of this connection's last commit, not yet synced past.
    own_commit: Option<Tid>,
    /// The connection wrote its modified objects in the current commit
    /// (data managers of an earlier [`CommitPhase`] must be done by then).
    objects_written: bool,
}

/// An invalidation subscriber.
type Subscriber = Arc<dyn Fn(&Invalidation) + Send + Sync>;

struct Shared {
    storage: Arc<dyn Storage>,
    dialect: Dialect,
    cache_size: usize,
    resolver: Option<Arc<dyn ConflictResolver>>,
    /// Weak: the manager's current transaction holds this connection.
    tm: Option<crate::transaction::WeakTransactionManager>,
    state: Mutex<ConnState>,
    subscribers: Mutex<Vec<Subscriber>>,
}

/// A connection: a snapshot view of the database with an object cache.
/// Clones are handles to the same connection.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("at", &self.at())
            .finish()
    }
}

impl Connection {
    fn new(db: &DB, at: Tid, tm: Option<TransactionManager>) -> Connection {
        let tm = tm.map(|t| t.downgrade());
        let shared = Arc::new(Shared {
            storage: db.storage.clone(),
            dialect: db.dialect,
            cache_size: db.cache_size,
            resolver: db.resolver.clone(),
            tm,
            state: Mutex::new(ConnState {
                at,
                cache: HashMap::new(),
                tick: 0,
                modified: BTreeSet::new(),
                added: BTreeSet::new(),
                txn: None,
                pending: None,
                read_current: Vec::new(),
                stored: Vec::new(),
                resolved: Vec::new(),
                own_commit: None,
                objects_written: false,
            }),
            subscribers: Mutex::new(Vec::new()),
        });
        Connection { shared }
    }

    /// The tid of this connection's last commit, until the connection moves
    /// past it (for data managers that must know what they just committed).
    pub fn last_commit(&self) -> Option<Tid> {
        self.shared.state.lock().own_commit
    }

    /// Has this connection already written its modified objects in the
    /// commit under way? Data managers that store through it check this
    /// (they must commit in an earlier [`CommitPhase`]).
    pub fn objects_written(&self) -> bool {
        self.shared.state.lock().objects_written
    }

    /// An identifier of this connection, equal for all its clones.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// The snapshot this connection sees (a tid).
    pub fn at(&self) -> Tid {
        self.shared.state.lock().at
    }

    /// True for a historical (read-only, time-travel) connection.
    pub fn is_historical(&self) -> bool {
        self.shared.tm.is_none()
    }

    /// The storage under this connection.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.shared.storage
    }

    /// The pickle dialect records are written in.
    pub fn dialect(&self) -> Dialect {
        self.shared.dialect
    }

    /// Call `f` with the changed oids at every snapshot move.
    pub fn subscribe(&self, f: impl Fn(&Invalidation) + Send + Sync + 'static) {
        self.shared.subscribers.lock().push(Arc::new(f));
    }

    /// Number of objects in the cache.
    pub fn cache_len(&self) -> usize {
        self.shared.state.lock().cache.len()
    }

    /// The record of `oid` as of this connection's snapshot (`None`: the
    /// object does not exist in it). Does not touch the cache.
    pub fn load_record(&self, oid: Oid) -> Result<Option<(Vec<u8>, Tid)>> {
        Ok(self
            .snapshot(self.at())
            .try_record(oid)?
            .map(|r| (r.data, r.serial)))
    }

    /// The class path `module.name` of `oid` (cached object or record).
    pub fn class_of(&self, oid: Oid) -> Result<(String, String)> {
        {
            let st = self.shared.state.lock();
            if let Some(e) = st.cache.get(&oid) {
                let (m, n) = e.obj.class_path();
                return Ok((m.to_owned(), n.to_owned()));
            }
        }
        let obj: GenericObject = self.snapshot(self.at()).load(oid)?;
        Ok((obj.module, obj.name))
    }

    /// A persistent reference to `oid` (`(oid, class)` form) for use in states.
    pub fn ref_to(&self, oid: Oid) -> Result<Value> {
        let (m, n) = self.class_of(oid)?;
        let oidv = match self.shared.dialect {
            Dialect::Py3 => Value::Bytes(oid.to_bytes().to_vec()),
            Dialect::Py2 => Value::Py2Str(oid.to_bytes().to_vec()),
        };
        Ok(Value::PersistentRef(Box::new(Value::Tuple(vec![
            oidv,
            Value::global(&m, &n),
        ]))))
    }

    /// The database as of `at`, read through this connection's storage.
    fn snapshot(&self, at: Tid) -> Snapshot<'_> {
        Snapshot::new(self.shared.storage.as_ref(), at)
    }

    fn ensure_loaded<T: PersistentClass>(&self, st: &mut ConnState, oid: Oid) -> Result<()> {
        st.tick += 1;
        let tick = st.tick;
        if let Some(e) = st.cache.get_mut(&oid) {
            e.used = tick;
            if (e.obj.as_ref() as &dyn Any).is::<T>() {
                return Ok(());
            }
            return Err(Error::BadState {
                oid,
                msg: format!(
                    "cached as {}.{}, requested as another Rust type",
                    e.obj.class_path().0,
                    e.obj.class_path().1
                ),
            });
        }
        let (obj, serial) = self.snapshot(st.at).load_with_serial::<T>(oid)?;
        st.cache.insert(
            oid,
            Entry {
                obj: Box::new(obj),
                serial,
                used: tick,
            },
        );
        self.shared.shrink(st);
        Ok(())
    }
}

impl Shared {
    /// Drop least recently used unmodified objects beyond the cache size.
    fn shrink(&self, st: &mut ConnState) {
        let limit = self.cache_size;
        if st.cache.len() <= limit + limit / 8 {
            return;
        }
        let mut clean: Vec<(u64, Oid)> = st
            .cache
            .iter()
            .filter(|(o, _)| !st.modified.contains(o) && !st.added.contains(o))
            .map(|(o, e)| (e.used, *o))
            .collect();
        clean.sort_unstable();
        let excess = st.cache.len().saturating_sub(limit);
        // never drop the object just loaded (highest tick)
        for (_, o) in clean.into_iter().take(excess) {
            if st.cache.get(&o).is_some_and(|e| e.used != st.tick) {
                st.cache.remove(&o);
            }
        }
    }
}

impl Connection {
    /// The object `oid` as type `T`, loaded from this connection's snapshot
    /// on first use. Holds the connection lock until dropped.
    pub fn get<T: PersistentClass>(&self, oid: Oid) -> Result<MappedMutexGuard<'_, T>> {
        let mut st = self.shared.state.lock();
        self.ensure_loaded::<T>(&mut st, oid)?;
        MutexGuard::try_map(st, |st| {
            st.cache
                .get_mut(&oid)
                .and_then(|e| (e.obj.as_mut() as &mut dyn Any).downcast_mut::<T>())
        })
        .map_err(|_| Error::BadState {
            oid,
            msg: "object vanished from the cache".into(),
        })
    }

    /// Like [`Connection::get`], and marks the object modified: it is stored
    /// at the next commit of the transaction this connection joins now.
    pub fn get_mut<T: PersistentClass>(&self, oid: Oid) -> Result<MappedMutexGuard<'_, T>> {
        self.join()?;
        let mut st = self.shared.state.lock();
        self.ensure_loaded::<T>(&mut st, oid)?;
        if !st.added.contains(&oid) {
            st.modified.insert(oid);
        }
        MutexGuard::try_map(st, |st| {
            st.cache
                .get_mut(&oid)
                .and_then(|e| (e.obj.as_mut() as &mut dyn Any).downcast_mut::<T>())
        })
        .map_err(|_| Error::BadState {
            oid,
            msg: "object vanished from the cache".into(),
        })
    }

    /// The root mapping (oid 0).
    pub fn root(&self) -> Result<MappedMutexGuard<'_, PersistentMapping>> {
        self.get(Oid::ROOT)
    }

    /// The root mapping, marked modified.
    pub fn root_mut(&self) -> Result<MappedMutexGuard<'_, PersistentMapping>> {
        self.get_mut(Oid::ROOT)
    }

    /// Add a new object: it gets a fresh oid now and is stored at commit.
    pub fn add<T: Persistent>(&self, obj: T) -> Result<Oid> {
        self.join()?;
        let oid = self.shared.storage.new_oid()?;
        let mut st = self.shared.state.lock();
        st.tick += 1;
        let used = st.tick;
        st.cache.insert(
            oid,
            Entry {
                obj: Box::new(obj),
                serial: Tid::ZERO,
                used,
            },
        );
        st.added.insert(oid);
        Ok(oid)
    }

    /// Make the current transaction conflict at commit unless `oid` is still
    /// at revision `serial` (ZODB's `readCurrent`): for changes based on an
    /// object that is not itself stored.
    pub fn read_current(&self, oid: Oid, serial: Tid) -> Result<()> {
        self.join()?;
        self.shared.state.lock().read_current.push((oid, serial));
        Ok(())
    }

    /// Join the current transaction of this connection's manager now (data
    /// managers that store objects during the commit phase need that).
    pub fn join_transaction(&self) -> Result<()> {
        self.join()
    }

    /// During the commit phase of two-phase commit: store `obj` as the new
    /// revision of `oid` (based on `serial`, `Tid::ZERO` for a new object)
    /// straight into the storage transaction, bypassing the cache, so that
    /// large objects never accumulate in memory. A cached copy is dropped.
    pub fn store_now<T: Persistent>(&self, oid: Oid, serial: Tid, obj: &T) -> Result<()> {
        let (m, n) = obj.class_path();
        let data = pickle::encode_record(m, n, &obj.state()?, self.shared.dialect)?;
        self.store_parts_now(oid, serial, &[&data])
    }

    /// [`store_now`](Connection::store_now) of an object of class
    /// `module.name` whose state is the byte string `payload`, streamed: the
    /// payload goes to the storage as it is, never copied into a pickle.
    /// A payload of [`ALIGNED_PAYLOAD_MIN`] bytes or more (a ZBlk0 block)
    /// is stored with [`StorageTxn::store_aligned`]: FileStorage places it
    /// at a page boundary of its file, for readers that map it in place.
    pub fn store_bytes_now(
        &self,
        oid: Oid,
        serial: Tid,
        module: &str,
        name: &str,
        payload: &[u8],
    ) -> Result<()> {
        let dialect = self.shared.dialect;
        let tail: &[u8] = b".";
        if payload.len() < ALIGNED_PAYLOAD_MIN {
            let (head, tail) =
                pickle::encode_bytes_record_parts(module, name, payload.len(), dialect)?;
            return self.store_parts_now(oid, serial, &[&head, payload, tail]);
        }
        let head = |pad: usize| {
            pickle::encode_bytes_record_head(module, name, payload.len(), pad, dialect)
        };
        let rec = AlignedRecord {
            head: &head,
            payload,
            tail,
        };
        self.store_with_txn(oid, |txn| txn.store_aligned(oid, serial, rec))
    }

    fn store_parts_now(&self, oid: Oid, serial: Tid, parts: &[&[u8]]) -> Result<()> {
        self.store_with_txn(oid, |txn| txn.store_parts(oid, serial, parts))
    }

    /// Store `oid` during the commit phase through `store` on the storage
    /// transaction; a cached copy is dropped.
    fn store_with_txn(
        &self,
        oid: Oid,
        store: impl FnOnce(&mut dyn StorageTxn) -> Result<()>,
    ) -> Result<()> {
        let mut st = self.shared.state.lock();
        let st = &mut *st;
        self.shared.ensure_txn(st)?;
        let txn = st
            .txn
            .as_mut()
            .ok_or_else(|| Error::Protocol("store outside two-phase commit".into()))?;
        store(&mut **txn)?;
        if !st.modified.contains(&oid) && !st.added.contains(&oid) {
            st.cache.remove(&oid);
        }
        Ok(())
    }

    /// Oids modified or added in the current transaction.
    pub fn changed(&self) -> Vec<Oid> {
        let st = self.shared.state.lock();
        st.modified.union(&st.added).copied().collect()
    }

    fn join(&self) -> Result<()> {
        let Some(tm) = &self.shared.tm else {
            return Err(Error::Protocol(
                "historical connections are read-only".into(),
            ));
        };
        let Some(tm) = tm.upgrade() else {
            return Err(Error::Protocol(
                "the connection's transaction manager was dropped".into(),
            ));
        };
        if self.shared.storage.is_read_only() {
            return Err(Error::ReadOnly {
                path: self.shared.storage.name().into(),
            });
        }
        let dm: Arc<dyn DataManager> = self.shared.clone();
        tm.join(dm);
        Ok(())
    }

    /// Move to the newest snapshot now (outside a transaction boundary).
    /// Fails if this connection has uncommitted changes.
    pub fn sync(&self) -> Result<()> {
        if self.is_historical() {
            return Ok(());
        }
        if !self.changed().is_empty() {
            return Err(Error::Protocol(
                "sync with uncommitted changes: commit or abort first".into(),
            ));
        }
        self.shared.move_to_newest()
    }
}

impl Shared {
    /// Move the snapshot to the storage's newest tid; deliver invalidations.
    fn move_to_newest(&self) -> Result<()> {
        let new_at = self.storage.sync()?;
        let inv = {
            let mut st = self.state.lock();
            let old = st.at;
            if new_at <= old {
                st.own_commit = None;
                return Ok(());
            }
            let mut oids: BTreeSet<Oid> = BTreeSet::new();
            let own_commit = st.own_commit.take();
            let mut own_in_range = None;
            match own_commit {
                // Our own commit's objects are current in the cache.
                Some(own) if own > old && own <= new_at => {
                    own_in_range = Some(own);
                    oids.extend(self.storage.changed_oids(old, Tid(own.0 - 1))?);
                    oids.extend(self.storage.changed_oids(own, new_at)?);
                }
                _ => oids.extend(self.storage.changed_oids(old, new_at)?),
            }
            for o in &oids {
                st.cache.remove(o);
            }
            st.at = new_at;
            Invalidation {
                from: old,
                to: new_at,
                oids: oids.into_iter().collect(),
                own: own_in_range,
            }
        };
        let subs: Vec<_> = self.subscribers.lock().clone();
        for s in subs {
            s(&inv);
        }
        Ok(())
    }

    /// Drop uncommitted changes: modified objects reload from the snapshot.
    fn discard(&self) {
        let mut st = self.state.lock();
        st.objects_written = false;
        let changed: Vec<Oid> = st.modified.iter().chain(st.added.iter()).copied().collect();
        for o in changed {
            st.cache.remove(&o);
        }
        st.modified.clear();
        st.added.clear();
        st.stored.clear();
        st.resolved.clear();
        st.read_current.clear();
        st.pending = None;
        if let Some(t) = st.txn.take() {
            t.abort();
        }
    }
}

impl Shared {
    /// Start the storage transaction if two-phase commit began and it is not
    /// started yet.
    fn ensure_txn(&self, st: &mut ConnState) -> Result<()> {
        if st.txn.is_some() {
            return Ok(());
        }
        let meta = st
            .pending
            .clone()
            .ok_or_else(|| Error::Protocol("store outside two-phase commit".into()))?;
        st.txn = Some(self.storage.tpc_begin(meta, self.resolver.clone())?);
        Ok(())
    }
}

impl Synchronizer for Shared {
    fn after_completion(&self, _committed: bool) {
        if let Err(e) = self.move_to_newest() {
            tracing::error!(error = %e, "connection could not move to the newest snapshot");
        }
    }
}

impl DataManager for Shared {
    fn sort_key(&self) -> SortKey {
        SortKey {
            phase: CommitPhase::Connection,
            id: format!("{}:{:p}", self.storage.name(), self as *const _),
        }
    }

    fn committed_tid(&self) -> Option<Tid> {
        self.state.lock().own_commit
    }

    fn abort(&self, _txn: &TxnMeta) -> Result<()> {
        self.discard();
        Ok(())
    }

    fn tpc_begin(&self, txn: &TxnMeta) -> Result<()> {
        let mut st = self.state.lock();
        st.pending = Some(txn.clone());
        st.objects_written = false;
        Ok(())
    }

    fn commit(&self, _txn: &TxnMeta) -> Result<()> {
        let mut st = self.state.lock();
        let st = &mut *st;
        st.objects_written = true;
        let oids: Vec<Oid> = st.modified.union(&st.added).copied().collect();
        if oids.is_empty() && st.read_current.is_empty() && st.txn.is_none() {
            return Ok(()); // nothing to write: no storage transaction at all
        }
        self.ensure_txn(st)?;
        let mut txn = st
            .txn
            .take()
            .ok_or_else(|| Error::Protocol("commit without tpc_begin".into()))?;
        let read_current = std::mem::take(&mut st.read_current);
        let r = (|| -> Result<()> {
            for (oid, serial) in read_current {
                if !oids.contains(&oid) {
                    txn.check_current(oid, serial)?;
                }
            }
            for oid in oids {
                let Some(e) = st.cache.get(&oid) else {
                    return Err(Error::Protocol(format!(
                        "oid {oid}: modified object missing from the cache"
                    )));
                };
                let (m, n) = e.obj.class_path();
                let state = e.obj.state()?;
                let data = pickle::encode_record(m, n, &state, self.dialect)?;
                txn.store(oid, e.serial, data)?;
                st.stored.push(oid);
            }
            Ok(())
        })();
        st.txn = Some(txn);
        r
    }

    fn tpc_vote(&self, _txn: &TxnMeta) -> Result<()> {
        let mut st = self.state.lock();
        let resolved = match st.txn.as_mut() {
            Some(t) => t.vote()?,
            None => Vec::new(), // nothing was stored
        };
        st.resolved = resolved;
        Ok(())
    }

    fn tpc_finish(&self, _txn: &TxnMeta) -> Result<()> {
        let mut st = self.state.lock();
        st.pending = None;
        st.objects_written = false;
        let Some(t) = st.txn.take() else {
            // Nothing was stored: no transaction record.
            st.modified.clear();
            st.added.clear();
            return Ok(());
        };
        let tid = t.finish()?;
        let stored = std::mem::take(&mut st.stored);
        for o in &stored {
            if let Some(e) = st.cache.get_mut(o) {
                e.serial = tid;
            }
        }
        // Conflict-resolved objects hold merged data in the storage: reload.
        let resolved = std::mem::take(&mut st.resolved);
        for o in resolved {
            st.cache.remove(&o);
        }
        st.modified.clear();
        st.added.clear();
        st.own_commit = Some(tid);
        self.shrink(&mut st);
        Ok(())
    }

    fn tpc_abort(&self, _txn: &TxnMeta) {
        self.discard();
    }
}

#[cfg(test)]
mod tests;
