//! `ZBigFileH`: a virtmem handle over a ZBigFile at its connection's
//! snapshot, joined to the connection's transactions.
//!
//! The handle owns one virtmem mapping of the whole file (see the virtmem
//! crate): blocks load on first touch from the snapshot the connection
//! shows, writes dirty them, and the handle's transaction stores them. The
//! pieces, one file each:
//!
//! - `options`: what a handle is opened with;
//! - `backend`: the `virtmem::BigFile` that loads and stores blocks;
//! - `deps`: which blocks depend on which objects (exact invalidation);
//! - `invalidate`: dropping exactly the blocks others changed;
//! - `writer`: the commit's STORE of one block into ZBlk objects;
//! - `txn`: the handle as a data manager in two-phase commit;
//! - `spill`: moving dirty blocks of huge transactions out of RAM;
//! - `siblings`: other handles of the same file in the same connection;
//! - `truncate`: dropping every block from some block on (shrinking).

mod backend;
mod deps;
mod invalidate;
mod options;
mod siblings;
mod spill;
mod truncate;
mod txn;
mod writer;

pub use options::HandleOptions;

use crate::Error;
use crate::reader::SnapshotFile;
use crate::zblk::ZBlkFormat;
use backend::Backend;
use deps::Deps;
use parking_lot::{Mutex, MutexGuard};
use siblings::registry;
use spill::Spill;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use storage::{Connection, Oid, Synchronizer, Tid, TransactionManager};
use virtmem::FileH;

/// The state a handle's clones, its subscription and its transaction share.
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
            spill: Mutex::new(Spill::default()),
            new_file: AtomicBool::new(new_file),
            new_holes: Mutex::new(BTreeSet::new()),
            cut: Mutex::new(None),
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

    /// Drop every block from `blk` on, in the current transaction: their
    /// `blktab` entries, their pages (clean, dirty or spilled) in this and
    /// the other handles of the file in this connection. They read as zeros
    /// from now on and nothing past the cut is stored at commit
    /// (wendelin.core's ZBigFile discard; what shrinking an array uses).
    pub fn discard_from(&self, blk: u64) -> Result<(), Error> {
        self.shared.discard_from(blk)
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
