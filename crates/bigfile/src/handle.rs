//! `ZBigFileH`: a virtmem handle over a ZBigFile at its connection's
//! snapshot, joined to the connection's transactions.

use crate::Error;
use crate::objects::{MODULE, ZBlk0, ZBlk1, ZBlkRecord, ZData};
use crate::reader::{BlockDeps, SnapshotFile};
use crate::zblk::{CHUNK_SIZE, ZBlkFormat, ZBlkKind, choose_auto, chunk_delta, trim_zeros};
use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use storage::btree::{self, BTree};
use storage::{
    Connection, DataManager, Invalidation, Oid, Storage, Synchronizer, Tid, TransactionManager,
    TxnMeta, Value,
};
use virtmem::{BoxError, FileH, Loaded, Writeout};

/// Options of a [`ZBigFileH`].
#[derive(Debug, Clone)]
pub struct HandleOptions {
    /// Format for blocks written through this handle (default: from
    /// `$WENDELIN_CORE_ZBLK_FMT`, else ZBlk0).
    pub format: ZBlkFormat,
    /// Options of the underlying virtmem handle.
    pub virtmem: virtmem::Options,
    /// Dirty bytes above which dirty blocks are spilled to a temporary file
    /// (and become evictable) instead of staying in RAM until commit.
    /// `None`: the handle's RAM budget.
    pub spill_threshold: Option<u64>,
}

impl HandleOptions {
    /// Defaults, with the format taken from the environment as wendelin.core does.
    pub fn from_env() -> Result<HandleOptions, Error> {
        Ok(HandleOptions {
            format: ZBlkFormat::from_env().map_err(|e| Error::Usage(e.to_string()))?,
            virtmem: virtmem::Options::default(),
            spill_threshold: None,
        })
    }
}

/// Which blocks depend on which objects (for exact invalidation).
#[derive(Default)]
struct Deps {
    /// blktab node -> blocks whose lookup went through it.
    path: HashMap<Oid, BTreeSet<u64>>,
    /// ZBlk / chunk table / ZData -> blocks whose content it is.
    direct: HashMap<Oid, BTreeSet<u64>>,
    /// What each loaded block depended on.
    per_blk: HashMap<u64, BlockDeps>,
}

impl Deps {
    fn record(&mut self, blk: u64, d: BlockDeps) {
        self.forget(blk);
        for o in &d.path {
            self.path.entry(*o).or_default().insert(blk);
        }
        for o in &d.direct {
            self.direct.entry(*o).or_default().insert(blk);
        }
        self.per_blk.insert(blk, d);
    }

    fn forget(&mut self, blk: u64) {
        if let Some(d) = self.per_blk.remove(&blk) {
            for (map, oids) in [(&mut self.path, &d.path), (&mut self.direct, &d.direct)] {
                for o in oids {
                    if let Some(s) = map.get_mut(o) {
                        s.remove(&blk);
                        if s.is_empty() {
                            map.remove(o);
                        }
                    }
                }
            }
        }
    }
}

/// Dirty blocks moved out of RAM during a transaction: block `blk` lives
/// at offset `blk * blksize` of an unnamed sparse temporary file.
#[derive(Default)]
struct Spill {
    file: Option<std::fs::File>,
    blocks: BTreeSet<u64>,
    /// True while a spill pass stores blocks (store_block goes to the file).
    active: bool,
}

/// The virtmem side: loads blocks of the file at the snapshot `at` straight
/// from the storage; stores go through the connection during commit.
struct Backend {
    storage: Arc<dyn Storage>,
    file: Oid,
    blksize: usize,
    at: AtomicU64,
    deps: Mutex<Deps>,
    writer: Mutex<Option<Writer>>,
    /// The file object's state and the snapshot it was read at.
    meta: Mutex<Option<(Tid, crate::objects::ZBigFile)>>,
    /// Blocks of the current transaction spilled to a temporary file.
    spill: Mutex<Spill>,
    /// The file object was created in this transaction and is not in the
    /// storage yet: every block is a hole.
    new_file: std::sync::atomic::AtomicBool,
    /// Blocks served as holes while the file was new (no deps recorded).
    new_holes: Mutex<BTreeSet<u64>>,
    /// A conflict hit while storing a block (virtmem carries store errors
    /// as opaque values; the commit reports this one as a ConflictError).
    conflict: Mutex<Option<storage::Error>>,
}

impl virtmem::BigFile for Backend {
    fn block_size(&self) -> usize {
        self.blksize
    }

    fn load_block(&self, blk: u64, buf: &mut [u8]) -> Result<Loaded, BoxError> {
        {
            let sp = self.spill.lock();
            if sp.blocks.contains(&blk)
                && let Some(f) = &sp.file
            {
                use std::os::unix::fs::FileExt;
                f.read_exact_at(buf, blk * self.blksize as u64)?;
                return Ok(Loaded::Data);
            }
        }
        if self.new_file.load(Ordering::Acquire) {
            self.new_holes.lock().insert(blk);
            return Ok(Loaded::Hole);
        }
        let at = Tid(self.at.load(Ordering::Acquire));
        let cached = self.meta.lock().clone().filter(|(t, _)| *t == at);
        let sf = match cached {
            Some((_, m)) => SnapshotFile::with_meta(self.storage.as_ref(), at, self.file, m),
            None => {
                let sf = SnapshotFile::open(self.storage.as_ref(), at, self.file)?;
                *self.meta.lock() = Some((at, sf.meta.clone()));
                sf
            }
        };
        let (hole, mut deps) = sf.read_block(blk, buf)?;
        deps.path.push(self.file);
        self.deps.lock().record(blk, deps);
        Ok(if hole { Loaded::Hole } else { Loaded::Data })
    }

    fn store_block(&self, blk: u64, data: &[u8]) -> Result<(), BoxError> {
        {
            let mut sp = self.spill.lock();
            if sp.active {
                use std::os::unix::fs::FileExt;
                if sp.file.is_none() {
                    sp.file = Some(tempfile::tempfile()?);
                }
                if let Some(f) = &sp.file {
                    f.write_all_at(data, blk * self.blksize as u64)?;
                }
                sp.blocks.insert(blk);
                return Ok(());
            }
        }
        let mut w = self.writer.lock();
        let w = w
            .as_mut()
            .ok_or_else(|| Error::Usage("blocks are stored only during commit".into()))?;
        match w.store(self, blk, data, None) {
            Ok(()) => Ok(()),
            Err(Error::Storage(e)) if e.is_conflict() => {
                let msg = e.to_string();
                *self.conflict.lock() = Some(e);
                Err(msg.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn name(&self) -> String {
        format!("ZBigFile {} in {}", self.file, self.storage.name())
    }
}

/// Handles per (connection, file) in this process: after one commits, the
/// others of the same connection drop the blocks it wrote (the connection's
/// own commit is not an invalidation for it). The own commit's oids could
/// tell them too, but not which of two handles that both wrote one block in
/// the transaction was stored last; dropping every other copy is always right.
type Registry = Mutex<HashMap<(usize, Oid), Vec<Weak<Shared>>>>;
static HANDLES: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();

fn registry() -> &'static Registry {
    HANDLES.get_or_init(Default::default)
}

/// State of one commit's STORE pass.
struct Writer {
    conn: Connection,
    format: ZBlkFormat,
    /// Blocks whose content was written.
    blocks: Vec<u64>,
    /// The previous block stored in this pass: (blk, kind, data) for the
    /// `auto` rule that migrates it to ZBlk0 when an append starts a new block.
    prev: Option<(u64, ZBlkKind, Vec<u8>)>,
}

impl Writer {
    /// A new object stored straight into the storage transaction.
    fn new_object<T: storage::Persistent>(&mut self, b: &Backend, obj: &T) -> Result<Oid, Error> {
        let oid = b.storage.new_oid()?;
        self.conn.store_now(oid, Tid::ZERO, obj)?;
        Ok(oid)
    }

    fn store(
        &mut self,
        b: &Backend,
        blk: u64,
        data: &[u8],
        force: Option<ZBlkKind>,
    ) -> Result<(), Error> {
        let at = self.conn.at();
        // The file's state from the connection (a file created in this
        // transaction is only there); blocks from the snapshot.
        let is_new = b.new_file.load(Ordering::Acquire);
        let meta = self.conn.get::<crate::objects::ZBigFile>(b.file)?.clone();
        let sf = SnapshotFile::with_meta(b.storage.as_ref(), at, b.file, meta);
        let mut path = Vec::new();
        let old_ref = if is_new {
            None
        } else {
            sf.zblk_ref(blk, &mut path)?
        };
        let mut old = vec![0u8; b.blksize];
        // What the block is stored as now (ZBlk oid, kind, revision): from
        // the same read, so the ZBlk record is not loaded a second time.
        let mut stored = None;
        if old_ref.is_some() {
            stored = sf.read_block(blk, &mut old)?.1.zblk;
        }
        let new_t = trim_zeros(data);
        let old_t = trim_zeros(&old);
        if force.is_none() && new_t == old_t && (old_ref.is_some() || new_t.is_empty()) {
            return Ok(()); // unchanged: nothing is written
        }
        let kind = match (force, self.format) {
            (Some(k), _) => k,
            (None, ZBlkFormat::ZBlk0) => ZBlkKind::ZBlk0,
            (None, ZBlkFormat::ZBlk1) => ZBlkKind::ZBlk1,
            (None, ZBlkFormat::Auto) => {
                let last = if is_new {
                    None
                } else {
                    sf.last_block()?.and_then(|l| i64::try_from(l).ok())
                };
                let blk_i = i64::try_from(blk)
                    .map_err(|_| Error::Usage("block number too large".into()))?;
                let choice = choose_auto(blk_i, last, old_t, new_t, b.blksize);
                if choice.migrate_previous
                    && let Some((pblk, pkind, pdata)) = self.prev.take()
                    && pblk + 1 == blk
                    && pkind != ZBlkKind::ZBlk0
                {
                    self.store(b, pblk, &pdata, Some(ZBlkKind::ZBlk0))?;
                }
                choice.kind
            }
        };
        // The old ZBlk as a record: ZBlk0 bytes are the old block's (trimmed)
        // bytes; only a ZBlk1's small record is loaded, for its chunk table.
        let old_rec = match stored {
            Some((o, ZBlkKind::ZBlk0, serial)) => {
                Some((o, (ZBlkRecord::ZBlk0(old_t.to_vec()), serial)))
            }
            Some((o, ZBlkKind::ZBlk1, _)) => Some((o, sf.zblk(o)?)),
            None => None,
        };
        let blktab = BTree {
            family: &btree::LO,
            oid: sf.meta.blktab,
        };
        let key = Value::Int(blk as i64);
        match (kind, old_rec) {
            (ZBlkKind::ZBlk0, Some((zoid, (ZBlkRecord::ZBlk0(_), serial)))) => {
                let z = ZBlk0 {
                    data: new_t.to_vec(),
                };
                self.conn.store_now(zoid, serial, &z)?;
            }
            (ZBlkKind::ZBlk1, Some((zoid, (ZBlkRecord::ZBlk1(chunktab), serial)))) => {
                let stored = sf.chunks(blk, chunktab)?;
                let old_map: BTreeMap<usize, Vec<u8>> = stored
                    .iter()
                    .filter_map(|(off, _, d)| usize::try_from(*off).ok().map(|o| (o, d.clone())))
                    .collect();
                let oids: HashMap<i64, Oid> = stored.iter().map(|(off, o, _)| (*off, *o)).collect();
                let delta = chunk_delta(&old_map, data);
                let tab = BTree {
                    family: &btree::IO,
                    oid: chunktab,
                };
                if delta.clear {
                    for off in oids.keys() {
                        tab.remove(&self.conn, &Value::Int(*off))?;
                    }
                }
                for off in &delta.delete {
                    tab.remove(&self.conn, &Value::Int(*off as i64))?;
                }
                for (off, bytes) in &delta.set {
                    let off_i = *off as i64;
                    let zdata = ZData {
                        data: bytes.to_vec(),
                    };
                    match oids.get(&off_i).filter(|_| !delta.clear) {
                        Some(zd) => {
                            let serial = b
                                .storage
                                .load_before(*zd, Tid(at.0.saturating_add(1)))?
                                .map_or(Tid::ZERO, |r| r.serial);
                            self.conn.store_now(*zd, serial, &zdata)?;
                        }
                        None => {
                            let zd = self.new_object(b, &zdata)?;
                            let r = Value::persistent_ref(zd, MODULE, "ZData");
                            tab.insert(&self.conn, Value::Int(off_i), r)?;
                        }
                    }
                }
                // The ZBlk1 record is always re-stored so that peers see its
                // oid in the invalidations.
                self.conn.store_now(zoid, serial, &ZBlk1 { chunktab })?;
            }
            (kind, old_rec) => {
                // A hole, or a block changing format: a new ZBlk object.
                // The replaced ZBlk is re-stored unchanged, so that a
                // concurrent in-place change of it (by a writer that still
                // sees it in blktab) conflicts instead of being lost.
                match old_rec {
                    Some((old_oid, (ZBlkRecord::ZBlk0(bytes), serial))) => {
                        self.conn
                            .store_now(old_oid, serial, &ZBlk0 { data: bytes })?;
                    }
                    Some((old_oid, (ZBlkRecord::ZBlk1(chunktab), serial))) => {
                        self.conn.store_now(old_oid, serial, &ZBlk1 { chunktab })?;
                    }
                    None => {}
                }
                let (zoid, name) = match kind {
                    ZBlkKind::ZBlk0 => {
                        let z = ZBlk0 {
                            data: new_t.to_vec(),
                        };
                        (self.new_object(b, &z)?, "ZBlk0")
                    }
                    ZBlkKind::ZBlk1 => {
                        let tab = BTree::create(&self.conn, &btree::IO)?;
                        for (off, bytes) in crate::zblk::split_chunks(data, CHUNK_SIZE) {
                            let zd = self.new_object(
                                b,
                                &ZData {
                                    data: bytes.to_vec(),
                                },
                            )?;
                            let r = Value::persistent_ref(zd, MODULE, "ZData");
                            tab.insert(&self.conn, Value::Int(off as i64), r)?;
                        }
                        (self.new_object(b, &ZBlk1 { chunktab: tab.oid })?, "ZBlk1")
                    }
                };
                blktab.insert(&self.conn, key, Value::persistent_ref(zoid, MODULE, name))?;
            }
        }
        self.blocks.push(blk);
        if force.is_none() && self.format == ZBlkFormat::Auto {
            self.prev = Some((blk, kind, data.to_vec()));
        }
        Ok(())
    }
}

struct Shared {
    conn: Connection,
    /// Weak: the manager's current transaction holds this handle.
    tm: storage::WeakTransactionManager,
    format: ZBlkFormat,
    backend: Arc<Backend>,
    fileh: Mutex<FileH>,
    me: Weak<Shared>,
    /// What the last tpc_finish stored, until the boundary completes it.
    pending: Mutex<Option<Vec<u64>>>,
    /// Dirty bytes above which blocks are spilled.
    spill_threshold: u64,
}

/// The virtmem handle of a [`ZBigFileH`], locked. Dereferences to
/// [`FileH`]; on drop it spills dirty blocks past the threshold.
pub struct FileGuard<'a> {
    guard: Option<MutexGuard<'a, FileH>>,
    shared: &'a Arc<Shared>,
}

impl std::ops::Deref for FileGuard<'_> {
    type Target = FileH;
    fn deref(&self) -> &FileH {
        // Invariant: `guard` is `Some` until drop.
        self.guard
            .as_deref()
            .unwrap_or_else(|| unreachable!("FileGuard used after drop"))
    }
}

impl std::ops::DerefMut for FileGuard<'_> {
    fn deref_mut(&mut self) -> &mut FileH {
        self.guard
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("FileGuard used after drop"))
    }
}

impl Drop for FileGuard<'_> {
    fn drop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            let dirty = g.dirty_blocks().len() as u64 * self.shared.backend.blksize as u64;
            if dirty > self.shared.spill_threshold
                && let Err(e) = self.shared.spill_locked(&mut g)
            {
                tracing::error!(error = %e, "ZBigFileH: spilling dirty blocks failed; they stay in memory");
            }
        }
    }
}

/// A handle on a ZBigFile through a connection: memory-mapped blocks at the
/// connection's snapshot, changes committed with the connection's
/// transactions. See the crate docs for the model.
#[derive(Clone)]
pub struct ZBigFileH {
    shared: Arc<Shared>,
}

impl ZBigFileH {
    /// Open a handle on the ZBigFile `file` in `conn` (whose transactions
    /// `tm` drives).
    pub fn open(
        conn: &Connection,
        tm: &TransactionManager,
        file: Oid,
        opts: HandleOptions,
    ) -> Result<ZBigFileH, Error> {
        let meta = SnapshotFile::open(conn.storage().as_ref(), conn.at(), file)?.meta;
        Self::open_inner(conn, tm, file, meta.blksize, false, opts)
    }

    /// Open a handle on a file created (with [`crate::create_file`]) in the
    /// current, not yet committed transaction of `conn`.
    pub fn open_new(
        conn: &Connection,
        tm: &TransactionManager,
        file: Oid,
        blksize: u64,
        opts: HandleOptions,
    ) -> Result<ZBigFileH, Error> {
        Self::open_inner(conn, tm, file, blksize, true, opts)
    }

    fn open_inner(
        conn: &Connection,
        tm: &TransactionManager,
        file: Oid,
        blksize: u64,
        new_file: bool,
        opts: HandleOptions,
    ) -> Result<ZBigFileH, Error> {
        let storage = conn.storage().clone();
        let at = conn.at();
        let blksize = usize::try_from(blksize)
            .ok()
            .filter(|b| *b > 0 && b % 4096 == 0)
            .ok_or_else(|| Error::Usage(format!("bad blksize {blksize}")))?;
        let backend = Arc::new(Backend {
            storage,
            file,
            blksize,
            at: AtomicU64::new(at.0),
            deps: Mutex::new(Deps::default()),
            writer: Mutex::new(None),
            meta: Mutex::new(None),
            conflict: Mutex::new(None),
            spill: Mutex::new(Spill::default()),
            new_file: std::sync::atomic::AtomicBool::new(new_file),
            new_holes: Mutex::new(BTreeSet::new()),
        });
        let fileh = FileH::open(backend.clone(), opts.virtmem)?;
        let spill_threshold = opts
            .spill_threshold
            .unwrap_or_else(|| fileh.budget().limit())
            .max(blksize as u64);
        let shared = Arc::new_cyclic(|me| Shared {
            conn: conn.clone(),
            tm: tm.downgrade(),
            format: opts.format,
            backend,
            fileh: Mutex::new(fileh),
            me: me.clone(),
            pending: Mutex::new(None),
            spill_threshold,
        });
        let weak = Arc::downgrade(&shared);
        conn.subscribe(move |inv| {
            if let Some(s) = weak.upgrade()
                && let Err(e) = s.invalidate(inv)
            {
                tracing::error!(error = %e, "ZBigFileH: invalidation failed; dropping every block");
                let mut fh = s.fileh.lock();
                for blk in s
                    .backend
                    .deps
                    .lock()
                    .per_blk
                    .keys()
                    .copied()
                    .collect::<Vec<_>>()
                {
                    let _ = fh.invalidate(blk);
                }
            }
        });
        {
            let mut reg = registry().lock();
            reg.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
            reg.entry((conn.id(), file))
                .or_default()
                .push(Arc::downgrade(&shared));
        }
        let sync: Arc<dyn Synchronizer> = shared.clone();
        tm.register_synchronizer(Arc::downgrade(&sync));
        shared.join_current();
        Ok(ZBigFileH { shared })
    }

    /// The virtmem handle: take views of the file through it. Holding the
    /// guard blocks commit/abort of this handle's transaction; drop it first.
    /// When it is dropped with more dirty bytes than the spill threshold,
    /// the dirty blocks are spilled to a temporary file (see [`Self::spill`]).
    pub fn fileh(&self) -> FileGuard<'_> {
        FileGuard {
            guard: Some(self.shared.fileh.lock()),
            shared: &self.shared,
        }
    }

    /// Move every dirty block to the transaction's temporary spill file: the
    /// blocks become clean in memory (so the RAM budget can drop them) and
    /// still belong to this transaction (they reload from the spill file and
    /// are stored at commit, dropped at abort). Done automatically when the
    /// dirty bytes pass the spill threshold.
    pub fn spill(&self) -> Result<(), Error> {
        let mut fh = self.shared.fileh.lock();
        self.shared.spill_locked(&mut fh)
    }

    /// Blocks spilled to the temporary file in the current transaction.
    pub fn spilled_blocks(&self) -> Vec<u64> {
        self.shared
            .backend
            .spill
            .lock()
            .blocks
            .iter()
            .copied()
            .collect()
    }

    /// Block size.
    pub fn blksize(&self) -> usize {
        self.shared.backend.blksize
    }

    /// The file's oid.
    pub fn oid(&self) -> Oid {
        self.shared.backend.file
    }

    /// The snapshot the handle shows.
    pub fn at(&self) -> Tid {
        Tid(self.shared.backend.at.load(Ordering::Acquire))
    }

    /// File size at the handle's snapshot (`(last block + 1) * blksize`).
    pub fn size(&self) -> Result<u64, Error> {
        let b = &self.shared.backend;
        SnapshotFile::open(b.storage.as_ref(), self.at(), b.file)?.size()
    }

    /// Copy `len` bytes at `offset` out of the mapping (loads as needed;
    /// load errors come back as values).
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
        let fh = self.fileh();
        let bs = self.blksize() as u64;
        if len > 0 {
            fh.prefetch(offset / bs..(offset + len as u64).div_ceil(bs))?;
        }
        Ok(fh.bytes(offset..offset + len as u64)?.to_vec())
    }

    /// Write `data` at `offset` into the mapping (dirtying the blocks).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let mut fh = self.fileh();
        let bs = self.blksize() as u64;
        if !data.is_empty() {
            fh.prefetch(offset / bs..(offset + data.len() as u64).div_ceil(bs))?;
        }
        fh.bytes_mut(offset..offset + data.len() as u64)?
            .copy_from_slice(data);
        Ok(())
    }

    /// Counters of the virtmem handle (loads, faults, evictions...).
    pub fn stats(&self) -> virtmem::Stats {
        self.fileh().stats()
    }

    /// Dirty blocks not yet committed.
    pub fn dirty_blocks(&self) -> Vec<u64> {
        self.fileh().dirty_blocks()
    }
}

impl Shared {
    fn join_current(&self) {
        let Some(me) = self.me.upgrade() else { return };
        let Some(tm) = self.tm.upgrade() else { return };
        let dm: Arc<dyn DataManager> = me.clone();
        tm.join(dm);
        // The connection takes part in every transaction too: this handle
        // stores ZBlk objects through it during the commit phase.
        if let Err(e) = self.conn.join_transaction() {
            tracing::debug!(error = %e, "ZBigFileH: connection cannot join (read-only?)");
        }
    }

    fn spill_locked(&self, fh: &mut FileH) -> Result<(), Error> {
        if fh.dirty_blocks().is_empty() {
            return Ok(());
        }
        self.backend.spill.lock().active = true;
        let r = fh.writeout(Writeout::STORE);
        self.backend.spill.lock().active = false;
        r?;
        fh.writeout(Writeout::MARKSTORED)?;
        tracing::debug!(
            blocks = self.backend.spill.lock().blocks.len(),
            "ZBigFileH: spilled dirty blocks"
        );
        Ok(())
    }

    /// Forget the spill file; its blocks are dropped from memory (they held
    /// this transaction's changes).
    fn drop_spill(&self, fh: &mut FileH) -> Result<(), Error> {
        let blocks: Vec<u64> = {
            let mut sp = self.backend.spill.lock();
            sp.file = None;
            std::mem::take(&mut sp.blocks).into_iter().collect()
        };
        for blk in blocks {
            fh.invalidate(blk)?;
        }
        Ok(())
    }

    /// STORE: write every spilled and dirty block into ZBlk objects.
    fn store_dirty(&self) -> Result<(), Error> {
        let mut fh = self.fileh.lock();
        let dirty = fh.dirty_blocks();
        let spilled: Vec<u64> = {
            let sp = self.backend.spill.lock();
            sp.blocks
                .iter()
                .copied()
                .filter(|b| !dirty.contains(b))
                .collect()
        };
        if dirty.is_empty() && spilled.is_empty() {
            return Ok(());
        }
        *self.backend.writer.lock() = Some(Writer {
            conn: self.conn.clone(),
            format: self.format,
            blocks: Vec::new(),
            prev: None,
        });
        // Spilled blocks first (one block of memory at a time), then the dirty ones.
        let mut buf = vec![0u8; self.backend.blksize];
        for blk in spilled {
            use std::os::unix::fs::FileExt;
            let r = {
                let sp = self.backend.spill.lock();
                match &sp.file {
                    Some(f) => f
                        .read_exact_at(&mut buf, blk * self.backend.blksize as u64)
                        .map_err(|e| Error::Usage(format!("reading the spill file: {e}"))),
                    None => Err(Error::Usage("spill file missing".into())),
                }
            };
            let r = r.and_then(|()| {
                let mut w = self.backend.writer.lock();
                match w.as_mut() {
                    Some(w) => w.store(&self.backend, blk, &buf, None),
                    None => Err(Error::Usage("no writer".into())),
                }
            });
            if let Err(e) = r {
                *self.backend.writer.lock() = None;
                return Err(e);
            }
        }
        let r = fh.writeout(Writeout::STORE);
        if let Err(e) = r {
            *self.backend.writer.lock() = None;
            if let Some(c) = self.backend.conflict.lock().take() {
                return Err(Error::Storage(c));
            }
            return Err(Error::from(e));
        }
        Ok(())
    }

    /// After our commit is durable: mark the dirty blocks stored, record
    /// that the stored blocks now depend on the objects just committed (as
    /// of `own`, so later changes by others invalidate them), and drop them
    /// from the other handles of this file in this connection.
    fn complete(&self, blocks: Vec<u64>, own: Option<Tid>) -> Result<(), Error> {
        if own.is_some() && self.backend.new_file.swap(false, Ordering::AcqRel) {
            // The file is in the database now. Holes served while it was new
            // carry no dependencies: drop those we did not just store.
            let holes = std::mem::take(&mut *self.backend.new_holes.lock());
            let mut fh = self.fileh.lock();
            for blk in holes.into_iter().filter(|b| !blocks.contains(b)) {
                fh.invalidate(blk)?;
            }
        }
        if let Some(tid) = own.filter(|_| !blocks.is_empty()) {
            let b = &self.backend;
            let sf = SnapshotFile::open(b.storage.as_ref(), tid, b.file)?;
            let mut deps = b.deps.lock();
            for blk in &blocks {
                let mut d = sf.block_deps(*blk)?;
                d.path.push(b.file);
                deps.record(*blk, d);
            }
        }
        {
            let mut fh = self.fileh.lock();
            fh.writeout(Writeout::MARKSTORED)?;
            // The blocks just stored are clean now: keep the handle within
            // its RAM budget by dropping the oldest of them if needed (they
            // reload from the database when touched again).
            let bs = self.backend.blksize as u64;
            let limit = fh.budget().limit();
            let mut resident = fh.resident_blocks() as u64 * bs;
            if resident > limit {
                let mut deps = self.backend.deps.lock();
                for blk in &blocks {
                    if resident <= limit {
                        break;
                    }
                    fh.invalidate(*blk)?;
                    deps.forget(*blk);
                    resident = resident.saturating_sub(bs);
                }
            }
            // Spilled blocks are committed: their pages (if resident) hold
            // the committed data, and evicted ones reload from the database.
            let mut sp = self.backend.spill.lock();
            sp.file = None;
            sp.blocks.clear();
        }
        if !blocks.is_empty() {
            for sib in self.siblings() {
                let mut fh = sib.fileh.lock();
                let mut deps = sib.backend.deps.lock();
                for blk in &blocks {
                    fh.invalidate(*blk)?;
                    deps.forget(*blk);
                }
            }
        }
        Ok(())
    }

    fn invalidate(&self, inv: &Invalidation) -> Result<(), Error> {
        if inv.own.is_some()
            && let Some(p) = self.pending.lock().take()
        {
            self.complete(p, inv.own)?;
        }
        let b = &self.backend;
        let old_at = Tid(b.at.swap(inv.to.0, Ordering::AcqRel));
        let (mut blocks, candidates) = {
            let deps = b.deps.lock();
            let mut blocks = BTreeSet::new();
            let mut cand = BTreeSet::new();
            for o in &inv.oids {
                if let Some(s) = deps.direct.get(o) {
                    blocks.extend(s.iter().copied());
                }
                if let Some(s) = deps.path.get(o) {
                    cand.extend(s.iter().copied());
                }
            }
            (blocks, cand)
        };
        let candidates: Vec<u64> = candidates.difference(&blocks).copied().collect();
        if !candidates.is_empty() {
            let old = SnapshotFile::open(b.storage.as_ref(), old_at, b.file)?;
            let new = SnapshotFile::open(b.storage.as_ref(), inv.to, b.file)?;
            if old.meta.blksize != new.meta.blksize {
                return Err(Error::Usage(format!("file {} changed its blksize", b.file)));
            }
            for blk in candidates {
                let mut p = Vec::new();
                if old.zblk_ref(blk, &mut p)? != new.zblk_ref(blk, &mut p)? {
                    blocks.insert(blk);
                }
            }
        }
        if blocks.is_empty() {
            return Ok(());
        }
        let mut fh = self.fileh.lock();
        for blk in &blocks {
            fh.invalidate(*blk)?;
        }
        let mut deps = b.deps.lock();
        for blk in blocks {
            deps.forget(blk);
        }
        Ok(())
    }

    fn finish_writer(&self) -> Vec<u64> {
        self.backend
            .writer
            .lock()
            .take()
            .map(|w| w.blocks)
            .unwrap_or_default()
    }

    /// Other handles of the same file in the same connection.
    fn siblings(&self) -> Vec<Arc<Shared>> {
        let reg = registry().lock();
        reg.get(&(self.conn.id(), self.backend.file))
            .map(|v| {
                v.iter()
                    .filter_map(Weak::upgrade)
                    .filter(|s| !std::ptr::eq(s.as_ref(), self))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl DataManager for Shared {
    fn sort_key(&self) -> String {
        // before "connection:...": blocks are stored before the connection
        // stores its modified objects (blktab nodes) and votes
        format!("bigfileh:{}:{:p}", self.backend.file, self as *const _)
    }

    fn abort(&self, _txn: &TxnMeta) -> storage::Result<()> {
        self.finish_writer();
        let mut fh = self.fileh.lock();
        fh.discard()
            .map_err(|e| storage::Error::Protocol(format!("ZBigFileH discard: {e}")))?;
        self.drop_spill(&mut fh)
            .map_err(|e| storage::Error::Protocol(format!("ZBigFileH discard spill: {e}")))
    }

    fn tpc_begin(&self, _txn: &TxnMeta) -> storage::Result<()> {
        Ok(())
    }

    /// STORE: every dirty block is written into ZBlk objects now, in the
    /// commit phase (this data manager sorts before its connection, whose
    /// storage transaction receives the records directly: large blocks never
    /// pile up in the object cache).
    fn commit(&self, _txn: &TxnMeta) -> storage::Result<()> {
        self.store_dirty().map_err(|e| match e {
            Error::Storage(s) => s,
            other => storage::Error::Protocol(format!("ZBigFileH: storing dirty blocks: {other}")),
        })
    }

    fn tpc_vote(&self, _txn: &TxnMeta) -> storage::Result<()> {
        Ok(())
    }

    /// The connection finishes after this data manager (it sorts later), so
    /// marking the blocks stored waits for the transaction boundary: see
    /// `Shared::complete`.
    fn tpc_finish(&self, _txn: &TxnMeta) -> storage::Result<()> {
        *self.pending.lock() = Some(self.finish_writer());
        Ok(())
    }

    fn tpc_abort(&self, txn: &TxnMeta) {
        if let Err(e) = DataManager::abort(self, txn) {
            tracing::error!(error = %e, "ZBigFileH: discard after a failed commit");
        }
    }
}

impl Synchronizer for Shared {
    fn after_completion(&self, committed: bool) {
        if let Some(p) = self.pending.lock().take() {
            let r = if committed {
                self.complete(p, None)
            } else {
                let mut fh = self.fileh.lock();
                fh.discard()
                    .map_err(Error::from)
                    .and_then(|()| self.drop_spill(&mut fh))
            };
            if let Err(e) = r {
                tracing::error!(error = %e, "ZBigFileH: completing the transaction");
            }
        }
        self.join_current();
    }
}
