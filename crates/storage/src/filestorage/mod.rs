//! FileStorage: ZODB's `Data.fs` format, read and written byte for byte
//! (FORMATS.md §2).
//!
//! # Model
//!
//! The file is append-only: magic, then transaction records, each a header,
//! metadata, data records (header + the object's record bytes) and a
//! redundant length. Everything about it is in one of these files:
//!
//! - `format`: the byte layouts of headers (pure functions over slices);
//! - `index`: the header-only scan that builds `oid -> latest record` on
//!   open and extends it at every sync; `index_prefetch` warms the headers
//!   of large transactions ahead of it from many threads (cold opens);
//! - `read`: lookups, the MVCC walk down an object's `prev` chain,
//!   backpointers; reads are `pread`s, any number of threads at once;
//! - `load_many`: many small records at once, with a few large `pread`s;
//! - `mapped`: the read-only mapping of the file, from which records are lent
//!   (the crate's only `unsafe`), and `map_many`: many records lent at once;
//! - `read_split`: many small records read with one `preadv` per run, each
//!   payload straight into the caller's memory (`crate::split`);
//! - `lock`: the commit lock (an in-process slot plus the `<name>.lock`
//!   `flock` Python's `zc.lockfile` takes);
//! - `commit`: the two-phase-commit writer, appending in place;
//! - `pack`: dropping unreachable history into `<name>.pack`, swapped in
//!   atomically (`<name>.old` keeps the previous file);
//! - `oids`: new oids, reserved in batches under the lock so that they are
//!   unique across processes;
//! - `damage`: telling a damaged transaction in the middle of the file
//!   from a torn tail (committed transactions follow it);
//! - `salvage`: copying the intact transactions of a damaged file into a
//!   new one (`wendelin fsrecover`);
//! - `recovery`: the torn tail a dead committer leaves, cut off (and saved
//!   to `<name>.trN`) by the next writer.
//!
//! This file holds the [`FileStorage`] handle, opening, and its [`Storage`]
//! implementation, which only delegates. Several processes share one file:
//! commits serialize on the lock, and each process sees the others'
//! transactions at its next [`Storage::sync`] (the object layer calls it at
//! every transaction boundary).

mod commit;
mod damage;
mod early_flush;
mod format;
mod index;
mod index_prefetch;
mod load_many;
mod lock;
mod map_many;
#[allow(unsafe_code)] // the file mapping: see its docs
mod mapped;
mod oids;
mod pack;
mod read;
mod read_split;
mod recovery;
mod salvage;

pub use format::{
    DATA_HDR_LEN, DataHeader, MAGIC_FS21, MAGIC_FS30, STATUS_CHECKPOINT, STATUS_COMMITTED,
    STATUS_PACKED, STATUS_UNDONE, TXN_HDR_LEN, TxnHeader,
};
pub use index::{ScanInfo, Tail};
pub use pack::PackStats;
pub use read::{RawRecord, RawTxn};
pub use salvage::{Salvaged, Skipped, salvage};

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::pickle::{self, Dialect};
use crate::storage::{
    ConflictResolver, LoadedRecord, RangeLoad, Storage, StorageTxn, TxnInfo, TxnMeta,
};
use crate::value::Value;
use index::{Index, scan};
use lock::CommitLock;
use parking_lot::{Mutex, RwLock};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How to open a FileStorage.
#[derive(Debug, Clone)]
pub struct Options {
    /// Open read-only: no lock, no writes, no tail repair.
    pub read_only: bool,
    /// Create the file if it does not exist.
    pub create: bool,
    /// Magic for a new file: [`MAGIC_FS30`] (Python 3, default) or [`MAGIC_FS21`] (Python 2).
    pub magic: [u8; 4],
    /// How long `tpc_begin` waits for another process's commit lock.
    pub lock_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            read_only: false,
            create: true,
            magic: *MAGIC_FS30,
            lock_timeout: Duration::from_secs(60),
        }
    }
}

/// The state of an open FileStorage, shared by its handles and by the
/// transactions in two-phase commit. Its methods live with their concept
/// (`index`, `read`, `commit`, `recovery`).
struct Shared {
    path: PathBuf,
    read_only: bool,
    magic: [u8; 4],
    file: RwLock<Arc<File>>,
    index: RwLock<Index>,
    /// This process's reserved oids (see `oids`).
    oids: Mutex<oids::OidReserve>,
    lock: CommitLock,
    /// The read-only mapping records are lent from (see `mapped`).
    mapping: mapped::Mapping,
}

/// A ZODB FileStorage (`Data.fs`). See the module docs for the model.
/// Clones are handles to the same open file and index; transactions in
/// two-phase commit hold the shared state, so they are `'static`.
#[derive(Clone)]
pub struct FileStorage {
    inner: Arc<Shared>,
}

/// A [`Error::Corrupt`] at `offset` of `path`.
fn corrupt(path: &Path, offset: u64, msg: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        offset,
        msg: msg.into(),
    }
}

impl FileStorage {
    /// Open (or create, with the default options) a FileStorage at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<FileStorage> {
        Self::open_with(path, Options::default())
    }

    /// Open read-only (no lock taken, nothing written).
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<FileStorage> {
        Self::open_with(
            path,
            Options {
                read_only: true,
                create: false,
                ..Options::default()
            },
        )
    }

    /// Open with explicit [`Options`].
    pub fn open_with(path: impl AsRef<Path>, opts: Options) -> Result<FileStorage> {
        let path = path.as_ref().to_owned();
        if opts.magic != *MAGIC_FS30 && opts.magic != *MAGIC_FS21 {
            return Err(Error::Protocol(format!(
                "unsupported magic {:?}",
                opts.magic
            )));
        }
        let file = if opts.read_only {
            File::open(&path).map_err(|e| Error::io(&path, "open", e))?
        } else {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(opts.create)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, "open", e))?;
            if f.metadata().map_err(|e| Error::io(&path, "stat", e))?.len() == 0 {
                f.write_all_at(&opts.magic, 0)
                    .map_err(|e| Error::io(&path, "write", e))?;
                f.sync_all().map_err(|e| Error::io(&path, "fsync", e))?;
            }
            f
        };
        let mut magic = [0u8; 4];
        file.read_exact_at(&mut magic, 0).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                corrupt(&path, 0, "file too short for a FileStorage magic")
            } else {
                Error::io(&path, "read", e)
            }
        })?;
        if magic != *MAGIC_FS30 && magic != *MAGIC_FS21 {
            return Err(corrupt(
                &path,
                0,
                format!(
                    "not a FileStorage: magic {:?} is neither FS30 nor FS21",
                    String::from_utf8_lossy(&magic)
                ),
            ));
        }
        let inner = Shared {
            lock: CommitLock::new(&path, opts.lock_timeout),
            mapping: mapped::Mapping::default(),
            path,
            read_only: opts.read_only,
            magic,
            file: RwLock::new(Arc::new(file)),
            index: RwLock::new(Index::empty()),
            oids: Mutex::new(oids::OidReserve::default()),
        };
        {
            let file = inner.current_file();
            let mut idx = inner.index.write();
            scan(&file, &inner.path, 4, &mut idx)?;
        }
        let fs = FileStorage {
            inner: Arc::new(inner),
        };
        if !fs.inner.read_only {
            fs.inner.repair_at_open()?;
            if !fs.inner.index.read().oids.contains_key(&Oid::ROOT) {
                fs.create_root()?;
            }
        }
        Ok(fs)
    }

    fn create_root(&self) -> Result<()> {
        let state = Value::Dict(vec![(Value::Str("data".into()), Value::Dict(Vec::new()))]);
        let state = match self.dialect() {
            Dialect::Py3 => state,
            Dialect::Py2 => Value::Dict(vec![(
                Value::Py2Str(b"data".to_vec()),
                Value::Dict(Vec::new()),
            )]),
        };
        let data = pickle::encode_record(
            "persistent.mapping",
            "PersistentMapping",
            &state,
            self.dialect(),
        )?;
        let meta = TxnMeta {
            description: b"initial database creation".to_vec(),
            ..TxnMeta::default()
        };
        let mut txn = self.tpc_begin(meta, None)?;
        // Another process may have created it between our scan and the lock.
        if self.inner.index.read().oids.contains_key(&Oid::ROOT) {
            txn.abort();
            return Ok(());
        }
        txn.store(Oid::ROOT, Tid::ZERO, data)?;
        txn.vote()?;
        txn.finish()?;
        Ok(())
    }

    /// The file's magic (`FS30` or `FS21`).
    pub fn magic(&self) -> [u8; 4] {
        self.inner.magic
    }

    /// The pickle dialect records in this file use.
    pub fn dialect(&self) -> Dialect {
        if self.inner.magic == *MAGIC_FS21 {
            Dialect::Py2
        } else {
            Dialect::Py3
        }
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Statistics of the current index.
    pub fn scan_info(&self) -> ScanInfo {
        self.inner.index.read().info()
    }

    /// Every committed transaction's header, metadata and record headers,
    /// without record data (for dump tools), oldest first.
    pub fn raw_transactions(&self) -> impl Iterator<Item = Result<RawTxn>> + '_ {
        self.inner.raw_transactions()
    }

    /// Record data of a record header from [`FileStorage::raw_transactions`],
    /// following backpointers.
    pub fn raw_record_data(&self, h: &DataHeader) -> Result<Option<Vec<u8>>> {
        self.inner.raw_record_data(h)
    }
}

impl Storage for FileStorage {
    fn name(&self) -> String {
        self.inner.path.display().to_string()
    }

    fn pack(&self, at: Tid, progress: &mut dyn FnMut(u64, u64)) -> Result<crate::PackStats> {
        FileStorage::pack(self, at, progress)
    }

    /// A pack keeps the revisions current at its pack time in transactions
    /// marked `'p'`; every snapshot from the newest of them on is complete
    /// (a revision current then and replaced before the pack time would
    /// have left a newer `'p'` transaction), and older ones are not.
    fn pack_horizon(&self) -> Result<Tid> {
        // Kept by the index scan: walking the file for it read every data
        // header again (on a cold 28 GiB database, 14 600 disk reads for
        // each `open_at`).
        Ok(self.inner.index.read().pack_horizon)
    }

    fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    fn dialect(&self) -> Dialect {
        FileStorage::dialect(self)
    }

    fn last_tid(&self) -> Tid {
        self.inner.index.read().last_tid
    }

    fn sync(&self) -> Result<Tid> {
        self.inner.sync()
    }

    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRecord>> {
        self.inner.load_before(oid, before)
    }

    fn load_before_range(
        &self,
        oid: Oid,
        before: Tid,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<Option<RangeLoad>> {
        self.inner.load_before_range(oid, before, offset, buf)
    }

    fn map_before(&self, oid: Oid, before: Tid) -> Result<Option<crate::MappedRecord>> {
        self.inner.map_before(oid, before)
    }

    fn load_many_before(&self, oids: &[Oid], before: Tid) -> Result<Vec<Option<LoadedRecord>>> {
        self.inner.load_many_before(oids, before)
    }

    fn map_many_before(
        &self,
        oids: &[Oid],
        before: Tid,
    ) -> Result<Vec<Option<crate::MappedRecord>>> {
        self.inner.map_many_before(oids, before)
    }

    fn read_split_before(
        &self,
        oids: &[Oid],
        bodies: &mut [&mut [u8]],
        shape: crate::SplitShape,
        before: Tid,
    ) -> Result<Option<crate::SplitRecords>> {
        self.inner
            .read_split_before(oids, bodies, shape, before)
            .map(Some)
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        self.inner.load_serial(oid, serial)
    }

    fn new_oid(&self) -> Result<Oid> {
        self.inner.new_oid()
    }

    fn tpc_begin(
        &self,
        meta: TxnMeta,
        resolver: Option<Arc<dyn ConflictResolver>>,
    ) -> Result<Box<dyn StorageTxn>> {
        self.inner.tpc_begin(meta, resolver)
    }

    fn changed_oids(&self, after: Tid, upto: Tid) -> Result<Vec<Oid>> {
        self.inner.changed_oids(after, upto)
    }

    fn iter_txns(
        &self,
        start: Tid,
        stop: Tid,
    ) -> Result<Box<dyn Iterator<Item = Result<TxnInfo>> + '_>> {
        self.inner.iter_txns(start, stop)
    }
}

#[cfg(test)]
mod tests;
