//! The `Storage` trait: what the object layer needs from a storage backend.
//!
//! A storage holds committed object revisions (`oid`, `tid`) -> record bytes
//! (two pickles, FORMATS.md §3). Reads are MVCC: `load_before(oid, before)`
//! returns the revision current just before `before`, so a reader pinned at
//! snapshot `at` calls `load_before(oid, at + 1)` and never sees later commits.
//! Writes go through two-phase commit on a [`StorageTxn`] obtained from
//! [`Storage::tpc_begin`]; commits are serialized by the storage.

use crate::error::Result;
use crate::ids::{Oid, Tid};
use crate::pickle::Dialect;

/// Metadata stored with a transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnMeta {
    /// User name (UTF-8 by convention), at most 65535 bytes.
    pub user: Vec<u8>,
    /// Description (UTF-8 by convention), at most 65535 bytes.
    pub description: Vec<u8>,
    /// Extension: empty, or a pickled dict, at most 65535 bytes.
    pub extension: Vec<u8>,
}

/// One revision of an object, as returned by [`Storage::load_before`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedRecord {
    /// The record bytes (class pickle + state pickle).
    pub data: Vec<u8>,
    /// The tid that wrote this revision.
    pub serial: Tid,
    /// The tid of the next revision, if there is one (`None` = current).
    pub next_serial: Option<Tid>,
}

/// The result of [`Storage::load_before_range`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeLoad {
    /// The revision's tid.
    pub serial: Tid,
    /// Length of the whole record data.
    pub total_len: u64,
    /// Bytes copied into the buffer.
    pub copied: usize,
}

/// A data record as seen when iterating transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRecord {
    /// The object.
    pub oid: Oid,
    /// The record bytes after following backpointers; `None` = the object
    /// does not exist as of this revision (deleted / creation undone).
    pub data: Option<Vec<u8>>,
}

/// A committed transaction with its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnInfo {
    /// Transaction id.
    pub tid: Tid,
    /// Status byte (`b' '` committed, `b'p'` packed).
    pub status: u8,
    /// Metadata.
    pub meta: TxnMeta,
    /// Data records in file order.
    pub records: Vec<DataRecord>,
}

/// Merges concurrent changes of one object (ZODB `_p_resolveConflict`).
pub trait ConflictResolver: Send + Sync {
    /// Given the record the writer started from (`old`), the record committed
    /// meanwhile (`committed`) and the writer's record (`new`), return merged
    /// record bytes, or `Err(reason)` if the changes cannot be merged.
    fn resolve(
        &self,
        oid: Oid,
        old: &[u8],
        committed: &[u8],
        new: &[u8],
    ) -> std::result::Result<Vec<u8>, String>;
}

/// A transactional object store. `Send + Sync`: one storage serves many
/// connections and loader threads at once.
pub trait Storage: Send + Sync {
    /// Human-readable name (e.g. the file path).
    fn name(&self) -> String;

    /// True if opened read-only (tpc_begin fails).
    fn is_read_only(&self) -> bool;

    /// The pickle dialect of the records this storage holds, which new
    /// records must use too (a FileStorage tells by its magic).
    fn dialect(&self) -> Dialect {
        Dialect::Py3
    }

    /// The last committed tid this handle knows of (`Tid::ZERO` if empty).
    fn last_tid(&self) -> Tid;

    /// Pick up transactions committed by other processes since the last sync
    /// and return the new last tid.
    fn sync(&self) -> Result<Tid>;

    /// The revision of `oid` current just before `before` (MVCC). `Ok(None)`
    /// if the object did not exist then (or was deleted at that revision).
    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRecord>>;

    /// [`load_before`](Storage::load_before) of many objects at once, in
    /// the order of `oids` (`None` for an object that did not exist then).
    /// For readers of many small records (a ZBlk1 block's 512 chunks):
    /// FileStorage reads records that lie close together in the file with a
    /// few large reads instead of one or two per record. This default loads
    /// them one by one (ZEO and other storages).
    fn load_many_before(&self, oids: &[Oid], before: Tid) -> Result<Vec<Option<LoadedRecord>>> {
        oids.iter().map(|&o| self.load_before(o, before)).collect()
    }

    /// The latest revision of `oid`.
    fn load(&self, oid: Oid) -> Result<LoadedRecord> {
        self.load_before(oid, Tid::MAX)?
            .ok_or(crate::Error::NotFound { oid, tid: None })
    }

    /// The record bytes of `oid` written exactly at `serial`.
    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>>;

    /// The data of the revision of `oid` current before `before`, lent in
    /// place from the storage's file mapping (see [`crate::mapped`]).
    /// `Ok(None)`: the storage cannot lend it (no local file, or the
    /// object did not exist then): read it with the other loads.
    fn map_before(&self, oid: Oid, before: Tid) -> Result<Option<crate::MappedRecord>> {
        let _ = (oid, before);
        Ok(None)
    }

    /// [`map_before`](Storage::map_before) of many objects at once, in the
    /// order of `oids`: for readers of many small records (a ZBlk1 block's
    /// 512 chunks), without a copy, syscall or allocation per record.
    /// `None` where the storage cannot lend a record (no local file, or the
    /// object did not exist then): read those with the other loads. This
    /// default lends nothing.
    fn map_many_before(
        &self,
        oids: &[Oid],
        before: Tid,
    ) -> Result<Vec<Option<crate::MappedRecord>>> {
        let _ = before;
        Ok(vec![None; oids.len()])
    }

    /// Read the latest revisions before `before` of `oids` in one pass,
    /// each record's data split as `shape` predicts: the payload of record
    /// `k` lands at the start of `bodies[k]`, its head and tail bytes in the
    /// result (see [`crate::split`]). A record the storage could not read so
    /// is `None` in the result, and `bodies[k]` may then hold other bytes:
    /// load it the ordinary way. `Ok(None)`: this storage has no split
    /// reads (the default; ZEO).
    fn read_split_before(
        &self,
        oids: &[Oid],
        bodies: &mut [&mut [u8]],
        shape: crate::SplitShape,
        before: Tid,
    ) -> Result<Option<crate::SplitRecords>> {
        let _ = (oids, bodies, shape, before);
        Ok(None)
    }

    /// Like [`Storage::load_before`], but copy only the record bytes
    /// `[offset, offset + buf.len())` (fewer at the end of the record) into
    /// `buf`, without materializing the whole record: for reading large
    /// payloads straight into their destination. `Ok(None)` if the object
    /// did not exist then.
    fn load_before_range(
        &self,
        oid: Oid,
        before: Tid,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<Option<RangeLoad>> {
        let Some(r) = self.load_before(oid, before)? else {
            return Ok(None);
        };
        let total = r.data.len() as u64;
        let start = offset.min(total) as usize;
        let n = buf.len().min(r.data.len() - start);
        buf[..n].copy_from_slice(&r.data[start..start + n]);
        Ok(Some(RangeLoad {
            serial: r.serial,
            total_len: total,
            copied: n,
        }))
    }

    /// Allocate a new, never used oid.
    fn new_oid(&self) -> Result<Oid>;

    /// Start a commit: takes the commit lock (blocking until other committers
    /// finish) and chooses the transaction's tid. Dropping the returned
    /// transaction without `finish` aborts it. The transaction owns what it
    /// needs of the storage (it is `'static`), so data managers can keep it
    /// between the phases of two-phase commit.
    fn tpc_begin(
        &self,
        meta: TxnMeta,
        resolver: Option<std::sync::Arc<dyn ConflictResolver>>,
    ) -> Result<Box<dyn StorageTxn>>;

    /// Oids changed by transactions with `after < tid <= upto`, without
    /// duplicates, in ascending order.
    fn changed_oids(&self, after: Tid, upto: Tid) -> Result<Vec<Oid>>;

    /// Pack as of `at` (ZODB's pack: history before `at` that is not
    /// reachable from the root at `at` is dropped); `progress(done, total)`
    /// in bytes. Storages that cannot pack say so.
    fn pack(&self, at: Tid, progress: &mut dyn FnMut(u64, u64)) -> Result<crate::PackStats> {
        let _ = (at, progress);
        Err(crate::Error::Protocol(format!(
            "{}: this storage cannot pack",
            self.name()
        )))
    }

    /// The oldest snapshot that is complete: snapshots before it lost
    /// revisions to a pack (`Tid::ZERO` when nothing was ever packed).
    fn pack_horizon(&self) -> Result<Tid> {
        Ok(Tid::ZERO)
    }

    /// Committed transactions with `start <= tid < stop`, oldest first.
    fn iter_txns(
        &self,
        start: Tid,
        stop: Tid,
    ) -> Result<Box<dyn Iterator<Item = Result<TxnInfo>> + '_>>;
}

/// A record stored with [`StorageTxn::store_aligned`]: `head(pad)`,
/// `payload`, `tail` one after the other, where `head(pad)` is `head(0)`
/// with exactly `pad` bytes of no-op padding (see
/// `pickle::encode_bytes_record_head`): every `pad` but 1 reads as the same
/// record.
#[derive(Clone, Copy)]
pub struct AlignedRecord<'a> {
    /// The record up to the payload, padded by the argument.
    pub head: &'a dyn Fn(usize) -> Result<Vec<u8>>,
    /// The payload.
    pub payload: &'a [u8],
    /// The record after the payload.
    pub tail: &'a [u8],
}

/// The file offset alignment of payloads stored with
/// [`StorageTxn::store_aligned`]: a page, so that the payload can be mapped
/// from the file (`mmap` maps whole pages).
pub const PAYLOAD_ALIGN: u64 = 4096;

/// A transaction in two-phase commit on one storage.
pub trait StorageTxn: Send {
    /// The tid this transaction will commit as.
    fn tid(&self) -> Tid;

    /// Store a new revision of `oid` based on `serial` (`Tid::ZERO` for a new
    /// object). Fails with [`crate::Error::Conflict`] if the committed serial
    /// moved past `serial` and the resolver (if any) cannot merge.
    fn store(&mut self, oid: Oid, serial: Tid, data: Vec<u8>) -> Result<()>;

    /// [`store`](StorageTxn::store) of the record whose bytes are `parts`
    /// one after the other, for writers that stream a large payload
    /// between a small head and tail instead of copying it into one buffer.
    /// Storages that write records in place (FileStorage) send the parts
    /// as they are; this default joins them.
    fn store_parts(&mut self, oid: Oid, serial: Tid, parts: &[&[u8]]) -> Result<()> {
        self.store(oid, serial, parts.concat())
    }

    /// [`store_parts`](StorageTxn::store_parts) of a record with a large
    /// byte payload that readers may map from the storage file in place
    /// (see [`AlignedRecord`]): a storage that writes records at known file
    /// offsets (FileStorage) pads the head so that the payload starts at a
    /// multiple of [`PAYLOAD_ALIGN`] in its file. This default (ZEO, other
    /// storages) stores it unpadded.
    fn store_aligned(&mut self, oid: Oid, serial: Tid, rec: AlignedRecord<'_>) -> Result<()> {
        self.store_parts(oid, serial, &[&(rec.head)(0)?, rec.payload, rec.tail])
    }

    /// Fail with [`crate::Error::Conflict`] unless `oid`'s committed revision
    /// is still `serial` (ZODB's `checkCurrentSerialInTransaction`): for
    /// objects a change was based on without being stored.
    fn check_current(&mut self, oid: Oid, serial: Tid) -> Result<()>;

    /// Write everything durably enough to be sure `finish` can succeed.
    /// Returns the oids whose stored data was replaced by a conflict
    /// resolution (their in-memory copies must be invalidated).
    fn vote(&mut self) -> Result<Vec<Oid>>;

    /// Make the transaction committed and durable (fsync) and visible.
    fn finish(self: Box<Self>) -> Result<Tid>;

    /// Undo everything stored; release the commit lock.
    fn abort(self: Box<Self>);
}
