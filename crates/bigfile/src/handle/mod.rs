//! `ZBigFileH`: a virtmem handle over a ZBigFile at its connection's
//! snapshot, joined to the connection's transactions.
//!
//! The handle owns one virtmem mapping of the whole file (see the virtmem
//! crate): blocks load on first touch from the snapshot the connection
//! shows, writes dirty them, and the handle's transaction stores them. The
//! pieces, one file each:
//!
//! - `options`: what a handle is opened with;
//! - `access`: shared read views, exclusive writes, misuse as errors;
//! - `backend`: the `virtmem::BigFile` that loads and stores blocks;
//! - `mapped`: committed ZBlk0 blocks offered to virtmem for mapping
//!   straight from the storage file (no copy);
//! - `deps`: which blocks depend on which objects (exact invalidation);
//! - `invalidate`: dropping exactly the blocks others changed;
//! - `writer`: the commit's STORE of one block into ZBlk objects;
//! - `txn`: the handle as a data manager in two-phase commit;
//! - `spill`: moving dirty blocks of huge transactions out of RAM;
//! - `siblings`: other handles of the same file in the same connection;
//! - `truncate`: dropping every block from some block on (shrinking);
//! - `stored`: what is stored for a block, lent in place for scans.

mod access;
mod backend;
mod compared;
mod deps;
mod invalidate;
mod mapped;
mod options;
mod siblings;
mod spill;
mod stored;
mod truncate;
mod txn;
mod writer;

pub use access::views_held_by_this_thread;
pub use options::HandleOptions;

use crate::Error;
use crate::reader::SnapshotFile;
use crate::zblk::ZBlkFormat;
use access::AccessLock;
use backend::Backend;
use deps::Deps;
use parking_lot::Mutex;
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
    fileh: AccessLock,
    /// Opened on a read-only connection: every write is refused at once.
    read_only: bool,
    me: Weak<Shared>,
    /// What the last tpc_finish stored, until the boundary completes it.
    pending: Mutex<Option<Vec<u64>>>,
    /// Dirty bytes above which blocks are spilled.
    spill_threshold: u64,
}

/// Exclusive access to the virtmem handle of a [`ZBigFileH`].
/// Dereferences to [`FileH`] (mutably: `view_mut`, writeout...); on drop it
/// spills dirty blocks past the threshold.
pub struct FileGuard<'a> {
    access: Option<access::Exclusive<'a>>,
    shared: &'a Arc<Shared>,
}

impl std::ops::Deref for FileGuard<'_> {
    type Target = FileH;
    fn deref(&self) -> &FileH {
        // Invariant: `access` is `Some` until drop.
        match &self.access {
            Some(a) => &a.guard,
            None => unreachable!("FileGuard used after drop"),
        }
    }
}

impl std::ops::DerefMut for FileGuard<'_> {
    fn deref_mut(&mut self) -> &mut FileH {
        match &mut self.access {
            Some(a) => &mut a.guard,
            None => unreachable!("FileGuard used after drop"),
        }
    }
}

impl Drop for FileGuard<'_> {
    fn drop(&mut self) {
        if let Some(mut a) = self.access.take() {
            let g = &mut *a.guard;
            // The cheap count: this runs after every write, and scanning
            // blocks mapped read-write each time would cost ~12 us a block.
            let dirty = g.dirty_count() as u64 * self.shared.backend.blksize as u64;
            if dirty > self.shared.spill_threshold
                && let Err(e) = self.shared.spill_locked(g)
            {
                tracing::error!(error = %e, "ZBigFileH: spilling dirty blocks failed; they stay in memory");
            }
        }
    }
}

/// Shared access to the virtmem handle of a [`ZBigFileH`]: read views
/// (`view`, `bytes`, `prefetch`). Any number of threads hold one at once.
pub struct FileReadGuard<'a> {
    access: access::Shared<'a>,
}

impl std::ops::Deref for FileReadGuard<'_> {
    type Target = FileH;
    fn deref(&self) -> &FileH {
        &self.access.guard
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
        Self::open_inner(conn, Some(tm), file, meta.blksize, false, opts)
    }

    /// Open a read-only handle on the ZBigFile `file` in a connection that
    /// takes part in no transaction (historical or read-only): no
    /// transaction manager is needed, and every write is refused at once.
    pub fn open_read_only(
        conn: &Connection,
        file: Oid,
        opts: HandleOptions,
    ) -> Result<ZBigFileH, Error> {
        let meta = SnapshotFile::open(conn.storage().as_ref(), conn.at(), file)?.meta;
        Self::open_inner(conn, None, file, meta.blksize, false, opts)
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
        Self::open_inner(conn, Some(tm), file, blksize, true, opts)
    }

    fn open_inner(
        conn: &Connection,
        tm: Option<&TransactionManager>,
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
            scratch: Mutex::new(Vec::new()),
            compared: Mutex::new(Default::default()),
            meta: Mutex::new(None),
            nodes: Mutex::new(None),
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
            tm: tm.map(TransactionManager::downgrade).unwrap_or_default(),
            format: opts.format,
            backend,
            fileh: AccessLock::new(fileh, file),
            read_only: tm.is_none(),
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
                let Ok(mut fh) = s.fileh.exclusive("dropping every block") else {
                    tracing::error!(
                        "ZBigFileH: blocks may be stale: a view is open in this thread"
                    );
                    return;
                };
                for blk in s
                    .backend
                    .deps
                    .lock()
                    .per_blk
                    .keys()
                    .copied()
                    .collect::<Vec<_>>()
                {
                    let _ = fh.guard.invalidate(blk);
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
        if let Some(tm) = tm {
            let sync: Arc<dyn Synchronizer> = shared.clone();
            tm.register_synchronizer(Arc::downgrade(&sync));
            shared.join_current();
        }
        Ok(ZBigFileH { shared })
    }

    /// Exclusive access to the virtmem handle, for writing (`view_mut`,
    /// `bytes_mut`). Holding it blocks other views, commit and abort of this
    /// handle; drop it first. When it is dropped with more dirty bytes than
    /// the spill threshold, the dirty blocks are spilled to a temporary file
    /// (see [`Self::spill`]). Errors: the handle is read-only, this thread
    /// already holds a view of it, or other threads' views did not end
    /// within the bounded wait.
    pub fn fileh(&self) -> Result<FileGuard<'_>, Error> {
        self.check_writable("a mutable view")?;
        Ok(FileGuard {
            access: Some(self.shared.fileh.exclusive("a mutable view")?),
            shared: &self.shared,
        })
    }

    /// Shared access to the virtmem handle, for reading (`view`, `bytes`,
    /// `prefetch`): any number of threads, and nested views in one thread.
    pub fn fileh_read(&self) -> Result<FileReadGuard<'_>, Error> {
        Ok(FileReadGuard {
            access: self.shared.fileh.shared("a view")?,
        })
    }

    /// The caller hands out pointers into the mapping that outlive the
    /// guards of [`Self::fileh_read`] (e.g. numpy arrays over it): blocks
    /// mapped straight from the storage file whose pages were dropped then
    /// stay mapped for the handle's life (a touch reads page cache the RAM
    /// budget does not see, as `numpy.memmap` does), since no moment
    /// without readers can be told to put them back.
    pub fn lend_raw_views(&self) {
        self.shared.fileh.lend_raw_views();
    }

    /// Is this handle read-only (opened on a historical or read-only
    /// connection)?
    pub fn is_read_only(&self) -> bool {
        self.shared.read_only
    }

    /// Refuse `what` on a read-only handle, at once.
    pub fn check_writable(&self, what: &str) -> Result<(), Error> {
        if self.shared.read_only {
            return Err(Error::ReadOnly {
                file: self.shared.backend.file,
                what: what.to_owned(),
            });
        }
        Ok(())
    }

    /// Move every dirty block to the transaction's temporary spill file: the
    /// blocks become clean in memory (so the RAM budget can drop them) and
    /// still belong to this transaction (they reload from the spill file and
    /// are stored at commit, dropped at abort). Done automatically when the
    /// dirty bytes pass the spill threshold.
    pub fn spill(&self) -> Result<(), Error> {
        let mut fh = self.shared.fileh.exclusive("spill")?;
        self.shared.spill_locked(&mut fh.guard)
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
        let fh = self.fileh_read()?;
        let bs = self.blksize() as u64;
        if len > 0 {
            fh.prefetch(offset / bs..(offset + len as u64).div_ceil(bs))?;
        }
        Ok(fh.bytes(offset..offset + len as u64)?.to_vec())
    }

    /// Write `data` at `offset` into the mapping (dirtying the blocks).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let mut fh = self.fileh()?;
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
        self.check_writable("resize")?;
        self.shared.discard_from(blk)
    }

    /// Counters of the virtmem handle (loads, faults, evictions...).
    pub fn stats(&self) -> Result<virtmem::Stats, Error> {
        Ok(self.fileh_read()?.stats())
    }

    /// Dirty blocks not yet committed.
    pub fn dirty_blocks(&self) -> Result<Vec<u64>, Error> {
        Ok(self.fileh_read()?.dirty_blocks())
    }
}
