//! FileStorage: ZODB's `Data.fs` format, read and written byte for byte
//! (FORMATS.md §2).
//!
//! # Model
//!
//! The file is append-only: magic, then transaction records. On open the file
//! is scanned once to build the index `oid -> offset of its latest record`;
//! the scan reads only headers and jumps over record data by its length, so
//! opening a file of large records costs a few small reads per record. A torn
//! tail (a transaction that was being written when a process died: status
//! `'c'`, or shorter than its length field) ends the data; a writable open
//! truncates it (saving the cut bytes to `<name>.trN` like ZODB) when no other
//! process is committing.
//!
//! Reads are `pread`s at offsets from the index, so any number of threads
//! read at once. MVCC (`load_before`) walks the `prev` chain of an object.
//!
//! # Commits
//!
//! Commits are serialized, inside the process by a slot and across processes
//! by an exclusive BSD `flock` on `<name>.lock` (what Python's `zc.lockfile`
//! takes), held from `tpc_begin` to `finish`/`abort`. After taking the lock
//! the storage first picks up transactions other processes appended. Then:
//!
//! 1. `tpc_begin` writes the transaction header at the end of the file with
//!    status `'c'` and a length that cannot be complete, so a crash from here
//!    on leaves a tail every reader (and Python) ignores.
//! 2. `store` checks the serial (conflict / resolution) and writes each record
//!    directly after the header: no temporary file, no copy.
//! 3. `vote` writes the real length, the trailer, and flushes.
//! 4. `finish` flips the status byte to `' '` and `fdatasync`s; only then is the
//!    transaction published in the index and `finish` returns.
//! 5. `abort` truncates the file back to where the transaction started.
//!
//! Other processes see new transactions at their next [`Storage::sync`]
//! (the object layer calls it at every transaction boundary), and learn
//! which oids changed from [`Storage::changed_oids`].
//!
//! Python ZODB holds the lock for as long as it has the file open for
//! writing; while it does, commits here wait (up to the lock timeout) and fail
//! with [`Error::Locked`]. Readers never lock.

mod format;

pub use format::{
    DATA_HDR_LEN, DataHeader, MAGIC_FS21, MAGIC_FS30, STATUS_CHECKPOINT, STATUS_COMMITTED,
    STATUS_PACKED, STATUS_UNDONE, TXN_HDR_LEN, TxnHeader,
};

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::pickle::{self, Dialect};
use crate::storage::{
    ConflictResolver, DataRecord, LoadedRecord, Storage, StorageTxn, TxnInfo, TxnMeta,
};
use crate::value::Value;
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
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

/// What the scan found after the last complete transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// The file ends exactly after the last transaction.
    Clean,
    /// Fewer than 23 bytes of a header (a crash while writing it).
    PartialHeader,
    /// A transaction in progress or torn: status `'c'` or shorter than its length.
    Incomplete,
}

#[derive(Debug, Clone, Default)]
struct Index {
    /// oid -> offset of its latest data record.
    oids: HashMap<Oid, u64>,
    /// Committed, indexed transactions in file order.
    txns: Vec<(Tid, u64)>,
    /// Append position: end of the last complete transaction.
    end: u64,
    last_tid: Tid,
    /// Largest tid seen anywhere, including a dropped torn tail.
    max_tid_seen: Tid,
    max_oid: Option<Oid>,
    tail: Option<(u64, Tail)>,
}

/// A transaction as stored: header, metadata, record headers (no data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTxn {
    /// The transaction header.
    pub header: TxnHeader,
    /// User, description, extension.
    pub meta: TxnMeta,
    /// Its data records in file order.
    pub records: Vec<RawRecord>,
}

/// A data record header as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The record header.
    pub header: DataHeader,
    /// For a record without data (`plen == 0`): its backpointer (0 = the
    /// object does not exist as of this revision).
    pub backpointer: Option<u64>,
}

/// Scan statistics of the last open/sync, for tools and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanInfo {
    /// Append position (end of the last complete transaction).
    pub end: u64,
    /// Number of indexed transactions.
    pub transactions: usize,
    /// Number of objects in the index.
    pub objects: usize,
    /// What follows the last complete transaction.
    pub tail: Tail,
}

/// The shared state of a [`FileStorage`]: its methods are reached through
/// the handle (`Deref`).
pub struct FileStorageInner {
    path: PathBuf,
    lock_path: PathBuf,
    read_only: bool,
    magic: [u8; 4],
    lock_timeout: Duration,
    file: RwLock<Arc<File>>,
    index: RwLock<Index>,
    /// Highest oid handed out by `new_oid` in this process.
    oid_alloc: Mutex<u64>,
    commit_busy: Mutex<bool>,
    commit_cv: Condvar,
}

/// A ZODB FileStorage (`Data.fs`). See the module docs for the model.
/// Clones are handles to the same open file and index; transactions in
/// two-phase commit hold one, so they are `'static`.
#[derive(Clone)]
pub struct FileStorage {
    inner: Arc<FileStorageInner>,
}

impl std::ops::Deref for FileStorage {
    type Target = FileStorageInner;
    fn deref(&self) -> &FileStorageInner {
        &self.inner
    }
}

/// Window reader used by scans: serves small header reads from a buffer so
/// that dense small records cost one `pread` per window, sparse large ones
/// one small `pread` per record.
struct Window<'f> {
    file: &'f File,
    path: &'f Path,
    size: u64,
    buf: Vec<u8>,
    start: u64,
}

const WINDOW: usize = 16 * 1024;

impl<'f> Window<'f> {
    fn new(file: &'f File, path: &'f Path, size: u64) -> Self {
        Window {
            file,
            path,
            size,
            buf: Vec::with_capacity(WINDOW),
            start: 0,
        }
    }

    /// `n <= WINDOW` bytes at `pos`; fewer only at end of file.
    fn get(&mut self, pos: u64, n: usize) -> Result<&[u8]> {
        let in_window = pos >= self.start && pos + n as u64 <= self.start + self.buf.len() as u64;
        if !in_window {
            let want = WINDOW.min(self.size.saturating_sub(pos) as usize);
            self.buf.resize(want, 0);
            // The file may shrink while we scan (another process aborting
            // its commit truncates it): a short read ends the window.
            let mut got = 0;
            while got < want {
                match self.file.read_at(&mut self.buf[got..], pos + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(self.path, "read", e)),
                }
            }
            self.buf.truncate(got);
            self.start = pos;
        }
        let off = (pos - self.start) as usize;
        let end = (off + n).min(self.buf.len());
        Ok(&self.buf[off..end])
    }

    fn get_arr<const N: usize>(&mut self, pos: u64) -> Result<Option<[u8; N]>> {
        let s = self.get(pos, N)?;
        if s.len() < N {
            return Ok(None);
        }
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(Some(a))
    }
}

fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], pos: u64) -> Result<()> {
    file.read_exact_at(buf, pos)
        .map_err(|e| Error::io(path, "read", e))
}

fn corrupt(path: &Path, offset: u64, msg: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        offset,
        msg: msg.into(),
    }
}

/// Scan transactions from `pos` to the end of the file, adding them to `idx`.
/// Returns the tail state.
fn scan(file: &File, path: &Path, mut pos: u64, idx: &mut Index) -> Result<Tail> {
    let size = file
        .metadata()
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    let mut w = Window::new(file, path, size);
    let mut tindex: Vec<(Oid, u64)> = Vec::new();
    let tail = 'txns: loop {
        if pos >= size {
            break Tail::Clean;
        }
        let Some(hb) = w.get_arr::<23>(pos)? else {
            break Tail::PartialHeader;
        };
        let h = TxnHeader::parse(pos, &hb);
        if h.tid <= idx.last_tid && idx.last_tid != Tid::ZERO {
            tracing::warn!(path = %path.display(), pos, tid = %h.tid, last = %idx.last_tid, "time-stamp reduction");
        }
        if h.status == STATUS_CHECKPOINT || h.tlen > size - pos || size - pos - h.tlen < 8 {
            idx.max_tid_seen = idx.max_tid_seen.max(h.tid);
            break Tail::Incomplete;
        }
        if h.tlen < h.header_len() {
            return Err(corrupt(
                path,
                pos,
                format!(
                    "invalid transaction header: length {} shorter than its header ({})",
                    h.tlen,
                    h.header_len()
                ),
            ));
        }
        let end = pos + h.tlen;
        if h.status != STATUS_UNDONE {
            if h.status != STATUS_COMMITTED && h.status != STATUS_PACKED {
                tracing::warn!(path = %path.display(), pos, status = h.status, "invalid transaction status");
            }
            tindex.clear();
            let mut p = pos + h.header_len();
            while p < end {
                let db = w.get_arr::<42>(p)?;
                let Some(db) = db.filter(|_| p + DATA_HDR_LEN <= end) else {
                    if db.is_none() && shrunk(file, path, end)? {
                        break 'txns Tail::Incomplete;
                    }
                    return Err(corrupt(
                        path,
                        p,
                        "data record header crosses the transaction end",
                    ));
                };
                let d = DataHeader::parse(p, &db);
                check_data_header(path, &d, pos, end)?;
                if d.plen == 0 {
                    let back =
                        u64::from_be_bytes(w.get_arr::<8>(p + DATA_HDR_LEN)?.unwrap_or_default());
                    if back >= p {
                        return Err(corrupt(
                            path,
                            p,
                            format!("backpointer {back} does not point backwards"),
                        ));
                    }
                }
                tindex.push((d.oid, p));
                p += d.record_len();
            }
            if p != end {
                return Err(corrupt(
                    path,
                    pos,
                    "data records do not fill the transaction",
                ));
            }
        }
        let trailer = w.get_arr::<8>(end)?.map(u64::from_be_bytes);
        if trailer.is_none() && shrunk(file, path, end)? {
            break 'txns Tail::Incomplete;
        }
        if trailer != Some(h.tlen) {
            return Err(corrupt(
                path,
                end,
                format!(
                    "redundant transaction length {trailer:?} does not match {} (transaction at {pos})",
                    h.tlen
                ),
            ));
        }
        if h.status != STATUS_UNDONE {
            for &(oid, p) in &tindex {
                idx.oids.insert(oid, p);
                idx.max_oid = Some(idx.max_oid.map_or(oid, |m| m.max(oid)));
            }
            idx.txns.push((h.tid, pos));
        }
        idx.last_tid = h.tid;
        idx.max_tid_seen = idx.max_tid_seen.max(h.tid);
        pos = h.next_pos();
        idx.end = pos;
    };
    idx.tail = if tail == Tail::Clean {
        None
    } else {
        Some((pos, tail))
    };
    Ok(tail)
}

/// True if the file is now shorter than `need` (it was truncated while we
/// scanned it: the transaction there is being aborted, not corrupt).
fn shrunk(file: &File, path: &Path, need: u64) -> Result<bool> {
    let now = file
        .metadata()
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    Ok(now < need.saturating_add(8))
}

fn check_data_header(path: &Path, d: &DataHeader, tpos: u64, tend: u64) -> Result<()> {
    if d.tloc != tpos {
        return Err(corrupt(
            path,
            d.pos,
            format!("record tloc {} is not its transaction {tpos}", d.tloc),
        ));
    }
    if d.vlen != 0 {
        return Err(corrupt(
            path,
            d.pos,
            "record has a version (unsupported since ZODB 3.9)",
        ));
    }
    if d.prev >= d.pos {
        return Err(corrupt(
            path,
            d.pos,
            format!(
                "previous-record pointer {} does not point backwards",
                d.prev
            ),
        ));
    }
    if d.plen > tend.saturating_sub(d.pos + DATA_HDR_LEN) || d.pos + d.record_len() > tend {
        return Err(corrupt(
            path,
            d.pos,
            format!("data length {} crosses the transaction end {tend}", d.plen),
        ));
    }
    Ok(())
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
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
        let mut lock_name = path.as_os_str().to_owned();
        lock_name.push(".lock");
        let lock_path = PathBuf::from(lock_name);
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
        let inner = FileStorageInner {
            path,
            lock_path,
            read_only: opts.read_only,
            magic,
            lock_timeout: opts.lock_timeout,
            file: RwLock::new(Arc::new(file)),
            index: RwLock::new(Index {
                end: 4,
                ..Index::default()
            }),
            oid_alloc: Mutex::new(0),
            commit_busy: Mutex::new(false),
            commit_cv: Condvar::new(),
        };
        let fs = FileStorage {
            inner: Arc::new(inner),
        };
        {
            let file = fs.file.read().clone();
            let mut idx = fs.index.write();
            scan(&file, &fs.path, 4, &mut idx)?;
        }
        if !fs.read_only {
            // Repair a torn tail if no other process is committing right now.
            if fs.index.read().tail.is_some()
                && let Some(lock) = fs.try_lock_file()?
            {
                fs.sync()?;
                fs.repair_tail()?;
                drop(lock);
            }
            if !fs.index.read().oids.contains_key(&Oid::ROOT) {
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
        if self.index.read().oids.contains_key(&Oid::ROOT) {
            txn.abort();
            return Ok(());
        }
        txn.store(Oid::ROOT, Tid::ZERO, data)?;
        txn.vote()?;
        txn.finish()?;
        Ok(())
    }
}

impl FileStorageInner {
    /// The file's magic (`FS30` or `FS21`).
    pub fn magic(&self) -> [u8; 4] {
        self.magic
    }

    /// The pickle dialect records in this file use.
    pub fn dialect(&self) -> Dialect {
        if self.magic == *MAGIC_FS21 {
            Dialect::Py2
        } else {
            Dialect::Py3
        }
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Statistics of the current index.
    pub fn scan_info(&self) -> ScanInfo {
        let idx = self.index.read();
        ScanInfo {
            end: idx.end,
            transactions: idx.txns.len(),
            objects: idx.oids.len(),
            tail: idx.tail.map_or(Tail::Clean, |t| t.1),
        }
    }

    fn current_file(&self) -> Arc<File> {
        self.file.read().clone()
    }

    /// Take the inter-process commit lock without waiting.
    fn try_lock_file(&self) -> Result<Option<nix::fcntl::Flock<File>>> {
        use nix::fcntl::{Flock, FlockArg};
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock_path)
            .map_err(|e| Error::io(&self.lock_path, "open", e))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => {
                // zc.lockfile writes " <pid>\n" after locking.
                let line = format!(" {}\n", std::process::id());
                let _ = l.set_len(0);
                let _ = l.write_all_at(line.as_bytes(), 0);
                Ok(Some(l))
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(Error::io(&self.lock_path, "flock", e.into())),
        }
    }

    /// Take the commit lock, waiting up to the lock timeout.
    ///
    /// When the lock is busy, a helper thread waits in a blocking `flock`, so
    /// the kernel wakes us as soon as the holder releases it (polling would
    /// let a process that commits in a tight loop starve the others). If the
    /// timeout passes first, the helper releases the lock as soon as it gets it.
    fn lock_file(&self) -> Result<nix::fcntl::Flock<File>> {
        use nix::fcntl::{Flock, FlockArg};
        if let Some(l) = self.try_lock_file()? {
            return Ok(l);
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock_path)
            .map_err(|e| Error::io(&self.lock_path, "open", e))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("fs-lock-wait".into())
            .spawn(move || {
                let r = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e);
                // If the receiver gave up, the lock is dropped (released) here.
                let _ = tx.send(r);
            })
            .map_err(|e| Error::io(&self.lock_path, "spawn lock waiter", e))?;
        match rx.recv_timeout(self.lock_timeout) {
            Ok(Ok(l)) => {
                let line = format!(" {}\n", std::process::id());
                let _ = l.set_len(0);
                let _ = l.write_all_at(line.as_bytes(), 0);
                Ok(l)
            }
            Ok(Err(e)) => Err(Error::io(&self.lock_path, "flock", e.into())),
            Err(_) => Err(Error::Locked {
                path: self.lock_path.clone(),
            }),
        }
    }

    /// With the commit lock held: cut a torn tail off the file, saving it to
    /// `<name>.trN` as ZODB does (not for a partial header).
    fn repair_tail(&self) -> Result<()> {
        let Some((pos, tail)) = self.index.read().tail else {
            return Ok(());
        };
        let file = self.current_file();
        let size = file
            .metadata()
            .map_err(|e| Error::io(&self.path, "stat", e))?
            .len();
        if tail == Tail::Incomplete && size > pos {
            let mut n = 0;
            let tr = loop {
                let mut name = self.path.as_os_str().to_owned();
                name.push(format!(".tr{n}"));
                let p = PathBuf::from(name);
                if !p.exists() {
                    break p;
                }
                n += 1;
            };
            let mut out = File::create(&tr).map_err(|e| Error::io(&tr, "create", e))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut at = pos;
            while at < size {
                let k = buf.len().min((size - at) as usize);
                read_exact_at(&file, &self.path, &mut buf[..k], at)?;
                out.write_all(&buf[..k])
                    .map_err(|e| Error::io(&tr, "write", e))?;
                at += k as u64;
            }
            tracing::warn!(path = %self.path.display(), pos, saved = %tr.display(), "truncated an incomplete transaction at the end of the file");
        }
        file.set_len(pos)
            .map_err(|e| Error::io(&self.path, "truncate", e))?;
        file.sync_all()
            .map_err(|e| Error::io(&self.path, "fsync", e))?;
        let mut idx = self.index.write();
        idx.tail = None;
        idx.end = pos;
        Ok(())
    }

    /// Read and check the data record header at `pos`, which must belong to `oid`.
    fn read_data_header(&self, file: &File, pos: u64, oid: Oid, end: u64) -> Result<DataHeader> {
        if pos < 4 || pos.saturating_add(DATA_HDR_LEN) > end {
            return Err(corrupt(
                &self.path,
                pos,
                format!("oid {oid}: record offset out of range"),
            ));
        }
        let mut b = [0u8; 42];
        read_exact_at(file, &self.path, &mut b, pos)?;
        let h = DataHeader::parse(pos, &b);
        if h.oid != oid {
            return Err(corrupt(
                &self.path,
                pos,
                format!("expected a record of oid {oid}, found oid {}", h.oid),
            ));
        }
        if h.pos.saturating_add(h.record_len()) > end || h.prev >= pos {
            return Err(corrupt(
                &self.path,
                pos,
                format!("oid {oid}: bad record lengths"),
            ));
        }
        Ok(h)
    }

    /// The data of the record `h`, following backpointers. `None` = the
    /// object does not exist at that revision (`plen == 0`, `back == 0`).
    fn record_data(&self, file: &File, h: &DataHeader, end: u64) -> Result<Option<Vec<u8>>> {
        let Some(d) = self.data_holder(file, h, end)? else {
            return Ok(None);
        };
        let mut data = vec![0u8; d.plen as usize];
        read_exact_at(file, &self.path, &mut data, d.pos + DATA_HDR_LEN)?;
        Ok(Some(data))
    }

    /// The record that holds the data of revision `h`: `h` itself, or the
    /// end of its backpointer chain. `None` = the object does not exist at
    /// that revision (`plen == 0`, `back == 0`).
    fn data_holder(&self, file: &File, h: &DataHeader, end: u64) -> Result<Option<DataHeader>> {
        let mut h = h.clone();
        while h.plen == 0 {
            let mut b = [0u8; 8];
            read_exact_at(file, &self.path, &mut b, h.pos + DATA_HDR_LEN)?;
            let back = u64::from_be_bytes(b);
            if back == 0 {
                return Ok(None);
            }
            if back >= h.pos {
                return Err(corrupt(
                    &self.path,
                    h.pos,
                    format!("oid {}: backpointer {back} does not point backwards", h.oid),
                ));
            }
            h = self.read_data_header(file, back, h.oid, end)?;
        }
        Ok(Some(h))
    }

    /// Offset of `oid`'s latest record and the end of indexed data.
    fn locate(&self, oid: Oid) -> Option<(u64, u64)> {
        let idx = self.index.read();
        idx.oids.get(&oid).map(|&p| (p, idx.end))
    }

    /// The revision of `oid` current just before `before` (walking the
    /// `prev` chain) and the tid of the revision after it, if any.
    fn revision_before(
        &self,
        file: &File,
        oid: Oid,
        before: Tid,
    ) -> Result<Option<(DataHeader, Option<Tid>, u64)>> {
        let Some((mut pos, end)) = self.locate(oid) else {
            return Ok(None);
        };
        let mut next = None;
        loop {
            let h = self.read_data_header(file, pos, oid, end)?;
            if h.tid < before {
                return Ok(Some((h, next, end)));
            }
            next = Some(h.tid);
            if h.prev == 0 {
                return Ok(None);
            }
            pos = h.prev;
        }
    }

    /// Every committed transaction's header, metadata and record headers,
    /// without record data (for dump tools), oldest first.
    pub fn raw_transactions(&self) -> impl Iterator<Item = Result<RawTxn>> + '_ {
        let (txns, end) = {
            let idx = self.index.read();
            (idx.txns.clone(), idx.end)
        };
        let file = self.current_file();
        txns.into_iter()
            .map(move |(_, pos)| self.read_txn_headers(&file, pos, end))
    }

    /// Read one transaction's header, metadata and record headers (with the
    /// backpointer of data-less records).
    fn read_txn_headers(&self, file: &File, pos: u64, end: u64) -> Result<RawTxn> {
        let mut hb = [0u8; 23];
        read_exact_at(file, &self.path, &mut hb, pos)?;
        let h = TxnHeader::parse(pos, &hb);
        if h.next_pos() > end || h.tlen < h.header_len() {
            return Err(corrupt(&self.path, pos, "transaction header out of range"));
        }
        let mut meta = vec![0u8; (h.header_len() - TXN_HDR_LEN) as usize];
        read_exact_at(file, &self.path, &mut meta, pos + TXN_HDR_LEN)?;
        let (u, rest) = meta.split_at(usize::from(h.ulen));
        let (d, e) = rest.split_at(usize::from(h.dlen));
        let meta = TxnMeta {
            user: u.to_vec(),
            description: d.to_vec(),
            extension: e.to_vec(),
        };
        let mut records = Vec::new();
        let tend = pos + h.tlen;
        let mut p = pos + h.header_len();
        while p < tend {
            if p + DATA_HDR_LEN > tend {
                return Err(corrupt(
                    &self.path,
                    p,
                    "data record header crosses the transaction end",
                ));
            }
            let mut b = [0u8; 42];
            read_exact_at(file, &self.path, &mut b, p)?;
            let d = DataHeader::parse(p, &b);
            check_data_header(&self.path, &d, pos, tend)?;
            let backpointer = if d.plen == 0 {
                let mut bb = [0u8; 8];
                read_exact_at(file, &self.path, &mut bb, p + DATA_HDR_LEN)?;
                Some(u64::from_be_bytes(bb))
            } else {
                None
            };
            p += d.record_len();
            records.push(RawRecord {
                header: d,
                backpointer,
            });
        }
        Ok(RawTxn {
            header: h,
            meta,
            records,
        })
    }

    /// Record data of a record header from [`FileStorageInner::raw_transactions`],
    /// following backpointers.
    pub fn raw_record_data(&self, h: &DataHeader) -> Result<Option<Vec<u8>>> {
        let end = self.index.read().end;
        self.record_data(&self.current_file(), h, end)
    }

    /// Scan what other processes appended since the last sync (the caller
    /// holds no index lock). Detects a file replaced by a pack (new inode) or
    /// truncated below our end, and then rebuilds the index from scratch.
    fn sync_inner(&self) -> Result<Tid> {
        let meta = std::fs::metadata(&self.path).map_err(|e| Error::io(&self.path, "stat", e))?;
        let cur = self.current_file();
        let cur_meta = cur
            .metadata()
            .map_err(|e| Error::io(&self.path, "stat", e))?;
        let mut idx = self.index.write();
        if file_id(&meta) != file_id(&cur_meta) || cur_meta.len() < idx.end {
            tracing::info!(path = %self.path.display(), "file replaced or truncated (pack?): rebuilding the index");
            let f = if self.read_only {
                File::open(&self.path)
            } else {
                OpenOptions::new().read(true).write(true).open(&self.path)
            }
            .map_err(|e| Error::io(&self.path, "open", e))?;
            let mut fresh = Index {
                end: 4,
                max_tid_seen: idx.max_tid_seen,
                ..Index::default()
            };
            scan(&f, &self.path, 4, &mut fresh)?;
            *idx = fresh;
            *self.file.write() = Arc::new(f);
            return Ok(idx.last_tid);
        }
        if cur_meta.len() > idx.end {
            let from = idx.end;
            scan(&cur, &self.path, from, &mut idx)?;
        } else {
            idx.tail = None;
        }
        Ok(idx.last_tid)
    }

    fn acquire_commit_slot(&self) {
        let mut busy = self.commit_busy.lock();
        while *busy {
            self.commit_cv.wait(&mut busy);
        }
        *busy = true;
    }

    fn release_commit_slot(&self) {
        *self.commit_busy.lock() = false;
        self.commit_cv.notify_one();
    }

    /// The tid of the record currently indexed for `oid`, if any.
    fn committed_serial(&self, file: &File, oid: Oid) -> Result<Option<(Tid, u64)>> {
        let Some((pos, end)) = self.locate(oid) else {
            return Ok(None);
        };
        let h = self.read_data_header(file, pos, oid, end)?;
        Ok(Some((h.tid, pos)))
    }
}

impl Storage for FileStorage {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn last_tid(&self) -> Tid {
        self.index.read().last_tid
    }

    fn sync(&self) -> Result<Tid> {
        self.sync_inner()
    }

    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRecord>> {
        let file = self.current_file();
        let Some((h, next, end)) = self.revision_before(&file, oid, before)? else {
            return Ok(None);
        };
        Ok(self.record_data(&file, &h, end)?.map(|data| LoadedRecord {
            data,
            serial: h.tid,
            next_serial: next,
        }))
    }

    fn load_before_range(
        &self,
        oid: Oid,
        before: Tid,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<Option<crate::storage::RangeLoad>> {
        let file = self.current_file();
        let Some((h, _, end)) = self.revision_before(&file, oid, before)? else {
            return Ok(None);
        };
        let Some(d) = self.data_holder(&file, &h, end)? else {
            return Ok(None);
        };
        let start = offset.min(d.plen);
        let n = (buf.len() as u64).min(d.plen - start) as usize;
        read_exact_at(
            &file,
            &self.path,
            &mut buf[..n],
            d.pos + DATA_HDR_LEN + start,
        )?;
        Ok(Some(crate::storage::RangeLoad {
            serial: h.tid,
            total_len: d.plen,
            copied: n,
        }))
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        let not_found = Error::NotFound {
            oid,
            tid: Some(serial),
        };
        let Some((mut pos, end)) = self.locate(oid) else {
            return Err(not_found);
        };
        let file = self.current_file();
        loop {
            let h = self.read_data_header(&file, pos, oid, end)?;
            if h.tid == serial {
                return self.record_data(&file, &h, end)?.ok_or(not_found);
            }
            if h.tid < serial || h.prev == 0 {
                return Err(not_found);
            }
            pos = h.prev;
        }
    }

    fn new_oid(&self) -> Result<Oid> {
        let max = self.index.read().max_oid.map_or(0, |o| o.0);
        let mut a = self.oid_alloc.lock();
        let next = (*a).max(max) + 1;
        *a = next;
        Ok(Oid(next))
    }

    fn tpc_begin(
        &self,
        meta: TxnMeta,
        resolver: Option<Arc<dyn ConflictResolver>>,
    ) -> Result<Box<dyn StorageTxn>> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        for (what, f) in [
            ("user", &meta.user),
            ("description", &meta.description),
            ("extension", &meta.extension),
        ] {
            if f.len() > usize::from(u16::MAX) {
                return Err(Error::Protocol(format!(
                    "transaction {what} longer than 65535 bytes"
                )));
            }
        }
        self.acquire_commit_slot();
        let mut slot = CommitSlot(Some(&self.inner));
        let lock = self.lock_file()?;
        self.sync_inner()?;
        self.repair_tail()?;
        let (txn_pos, last) = {
            let idx = self.index.read();
            (idx.end, idx.max_tid_seen.max(idx.last_tid))
        };
        let tid = Tid::now_after(last);
        let header = TxnHeader {
            pos: txn_pos,
            tid,
            tlen: u64::MAX >> 1, // provisional: can never be complete
            status: STATUS_CHECKPOINT,
            ulen: meta.user.len() as u16,
            dlen: meta.description.len() as u16,
            elen: meta.extension.len() as u16,
        };
        let mut hdr = header.to_bytes().to_vec();
        hdr.extend_from_slice(&meta.user);
        hdr.extend_from_slice(&meta.description);
        hdr.extend_from_slice(&meta.extension);
        let file = self.current_file();
        if let Err(e) = file.write_all_at(&hdr, txn_pos) {
            let _ = file.set_len(txn_pos);
            return Err(Error::io(&self.path, "write", e));
        }
        slot.0 = None;
        Ok(Box::new(FsTxn {
            fs: self.clone(),
            file,
            _lock: lock,
            header,
            write_pos: txn_pos + hdr.len() as u64,
            records: Vec::new(),
            resolver,
            resolved: Vec::new(),
            voted: false,
            done: false,
        }))
    }

    fn changed_oids(&self, after: Tid, upto: Tid) -> Result<Vec<Oid>> {
        let (txns, end) = {
            let idx = self.index.read();
            let from = idx.txns.partition_point(|&(t, _)| t <= after);
            let to = idx.txns.partition_point(|&(t, _)| t <= upto);
            (idx.txns[from..to.max(from)].to_vec(), idx.end)
        };
        let file = self.current_file();
        let mut out = BTreeSet::new();
        for (_, pos) in txns {
            let t = self.read_txn_headers(&file, pos, end)?;
            out.extend(t.records.iter().map(|r| r.header.oid));
        }
        Ok(out.into_iter().collect())
    }

    fn iter_txns(
        &self,
        start: Tid,
        stop: Tid,
    ) -> Result<Box<dyn Iterator<Item = Result<TxnInfo>> + '_>> {
        let (txns, end) = {
            let idx = self.index.read();
            let from = idx.txns.partition_point(|&(t, _)| t < start);
            let to = idx.txns.partition_point(|&(t, _)| t < stop);
            (idx.txns[from..to.max(from)].to_vec(), idx.end)
        };
        let file = self.current_file();
        Ok(Box::new(txns.into_iter().map(move |(_, pos)| {
            let t = self.read_txn_headers(&file, pos, end)?;
            let records = t
                .records
                .iter()
                .map(|r| {
                    Ok(DataRecord {
                        oid: r.header.oid,
                        data: self.record_data(&file, &r.header, end)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(TxnInfo {
                tid: t.header.tid,
                status: t.header.status,
                meta: t.meta,
                records,
            })
        })))
    }
}

/// Releases the in-process commit slot if `tpc_begin` fails half-way.
struct CommitSlot<'a>(Option<&'a FileStorageInner>);

impl Drop for CommitSlot<'_> {
    fn drop(&mut self) {
        if let Some(fs) = self.0 {
            fs.release_commit_slot();
        }
    }
}

/// A FileStorage transaction in two-phase commit.
struct FsTxn {
    fs: FileStorage,
    file: Arc<File>,
    _lock: nix::fcntl::Flock<File>,
    header: TxnHeader,
    write_pos: u64,
    /// (oid, record offset) in write order.
    records: Vec<(Oid, u64)>,
    resolver: Option<Arc<dyn ConflictResolver>>,
    resolved: Vec<Oid>,
    voted: bool,
    done: bool,
}

impl FsTxn {
    fn write(&self, bytes: &[u8], pos: u64) -> Result<()> {
        self.file
            .write_all_at(bytes, pos)
            .map_err(|e| Error::io(&self.fs.path, "write", e))
    }

    fn rollback(&mut self) {
        if let Err(e) = self.file.set_len(self.header.pos) {
            tracing::error!(path = %self.fs.path.display(), error = %e, "could not truncate an aborted transaction; it stays as an ignored tail");
        }
    }
}

impl StorageTxn for FsTxn {
    fn tid(&self) -> Tid {
        self.header.tid
    }

    fn store(&mut self, oid: Oid, serial: Tid, mut data: Vec<u8>) -> Result<()> {
        if self.voted {
            return Err(Error::Protocol("store after vote".into()));
        }
        if data.is_empty() {
            return Err(Error::Protocol(format!("oid {oid}: empty record data")));
        }
        let committed = self.fs.committed_serial(&self.file, oid)?;
        let prev = committed.map_or(0, |c| c.1);
        if let Some((ctid, _)) = committed
            && ctid != serial
        {
            let conflict = |reason: Option<String>| Error::Conflict {
                oid,
                loaded: serial,
                committed: ctid,
                reason,
            };
            let Some(resolver) = self.resolver.clone() else {
                return Err(conflict(None));
            };
            if serial == Tid::ZERO {
                return Err(conflict(Some("object created concurrently".into())));
            }
            let old = self.fs.load_serial(oid, serial)?;
            let cur = self.fs.load_serial(oid, ctid)?;
            data = resolver
                .resolve(oid, &old, &cur, &data)
                .map_err(|r| conflict(Some(r)))?;
            self.resolved.push(oid);
        } else if committed.is_none() && serial != Tid::ZERO {
            return Err(Error::Conflict {
                oid,
                loaded: serial,
                committed: Tid::ZERO,
                reason: Some("object does not exist in the database".into()),
            });
        }
        let h = DataHeader {
            pos: self.write_pos,
            oid,
            tid: self.header.tid,
            prev,
            tloc: self.header.pos,
            vlen: 0,
            plen: data.len() as u64,
        };
        // Header and data go out as two writes: no copy of large records.
        self.write(&h.to_bytes(), self.write_pos)?;
        self.write(&data, self.write_pos + DATA_HDR_LEN)?;
        self.records.push((oid, self.write_pos));
        self.write_pos += DATA_HDR_LEN + data.len() as u64;
        Ok(())
    }

    fn check_current(&mut self, oid: Oid, serial: Tid) -> Result<()> {
        // The commit lock is held: nothing can commit before our finish.
        let committed = self
            .fs
            .committed_serial(&self.file, oid)?
            .map_or(Tid::ZERO, |c| c.0);
        if committed != serial {
            return Err(Error::Conflict {
                oid,
                loaded: serial,
                committed,
                reason: Some("read-current object changed".into()),
            });
        }
        Ok(())
    }

    fn vote(&mut self) -> Result<Vec<Oid>> {
        if self.voted {
            return Ok(self.resolved.clone());
        }
        self.header.tlen = self.write_pos - self.header.pos;
        let r = self
            .write(&self.header.to_bytes(), self.header.pos)
            .and_then(|()| self.write(&self.header.tlen.to_be_bytes(), self.write_pos));
        if let Err(e) = r {
            self.rollback();
            return Err(e);
        }
        self.voted = true;
        Ok(self.resolved.clone())
    }

    fn finish(mut self: Box<Self>) -> Result<Tid> {
        if !self.voted {
            self.vote()?;
        }
        let r = self
            .write(&[STATUS_COMMITTED], self.header.pos + 16)
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(|e| Error::io(&self.fs.path, "fsync", e))
            });
        if let Err(e) = r {
            // Not durable: take it back so the file ends at the last good txn.
            self.rollback();
            return Err(e);
        }
        {
            let mut idx = self.fs.index.write();
            for &(oid, pos) in &self.records {
                idx.oids.insert(oid, pos);
                idx.max_oid = Some(idx.max_oid.map_or(oid, |m| m.max(oid)));
            }
            idx.txns.push((self.header.tid, self.header.pos));
            idx.end = self.header.next_pos();
            idx.last_tid = self.header.tid;
            idx.max_tid_seen = idx.max_tid_seen.max(self.header.tid);
        }
        self.done = true;
        Ok(self.header.tid)
    }

    fn abort(mut self: Box<Self>) {
        self.rollback();
        self.done = true;
    }
}

impl Drop for FsTxn {
    fn drop(&mut self) {
        if !self.done {
            self.rollback();
        }
        self.fs.release_commit_slot();
    }
}

#[cfg(test)]
mod tests;
