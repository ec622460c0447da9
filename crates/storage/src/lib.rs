//! ZODB-compatible object database: the bottom layer of wendelin.
//!
//! # Model
//!
//! Objects are identified by 8-byte oids; every commit gets a strictly
//! increasing 8-byte tid (ZODB's `TimeStamp` of the commit time). A
//! [`Storage`] keeps every revision `(oid, tid) -> record`, where a record is
//! ZODB's two pickles (class metadata, state) — decoded into [`Value`] trees by
//! [`pickle`] without executing anything. Reads are MVCC: a reader pinned at
//! snapshot `at` calls `load_before(oid, at + 1)` and never sees later
//! commits. Writes go through two-phase commit on a [`StorageTxn`] (store each
//! object with the serial it was based on; a moved serial is a
//! [`Error::Conflict`] unless a [`ConflictResolver`] merges it).
//! [`FileStorage`] is the embedded storage: ZODB's `Data.fs` format, byte for
//! byte, shared by several processes through a commit lock.
//!
//! On top, the object layer ([`db`], [`transaction`], [`btree`]): a [`DB`]
//! opens [`Connection`]s, each a snapshot with a cache of typed persistent
//! objects ([`Persistent`]); a [`TransactionManager`] drives two-phase commit
//! over every [`DataManager`] that joined (connections, file handles of the
//! bigfile crate, user code). At each transaction boundary a connection moves
//! to the newest snapshot and reports the exact set of changed oids to its
//! subscribers ([`Invalidation`]). Persistent BTrees ([`BTree`]) have
//! Python's node sizes, states and bucket conflict resolution, so Python
//! reads what is written here and the other way round.
//!
//! # Layout, and why
//!
//! Dependencies point one way: bytes ([`pickle`], [`value`], [`ids`]) <-
//! the storage seam ([`storage`]: the [`Storage`] and [`ConflictResolver`]
//! traits) <- implementations ([`filestorage`]) and readers ([`persistent`]
//! typed objects, [`snapshot`] reads at a tid) <- the object layer ([`db`],
//! [`transaction`]) <- classes built on it ([`btree`]). The object layer
//! names no storage and no class: a [`DB`] is built over an
//! `Arc<dyn Storage>` and a resolver. [`open`] is the one place that knows
//! the concrete parts (URL schemes -> storages, the standard BTree
//! resolver), so a new storage is one module plus one entry there. One
//! recipe reads an object at a snapshot ([`Snapshot`]), and pickle opcodes
//! are spelled only in [`pickle`]. The crate's only `unsafe` code is
//! FileStorage's read-only file mapping (`filestorage/mapped.rs`), from
//! which [`mapped`] records are lent in place; its docs say why it is sound.
//! [`split`] reads lay many small records' payloads straight into the
//! caller's memory (one `preadv` per run of records).
//!
//! ```
//! use storage::{DB, TransactionManager, Value};
//! # fn main() -> Result<(), storage::Error> {
//! # let dir = std::env::temp_dir().join(format!("storage-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).ok();
//! let db = DB::open(dir.join("Data.fs").to_str().unwrap_or("Data.fs"))?;
//! let tm = TransactionManager::new();
//! let conn = db.open_connection(&tm)?;
//! conn.root_mut()?.insert("answer", Value::Int(42));
//! tm.commit()?;
//! assert_eq!(conn.root()?.get("answer"), Some(&Value::Int(42)));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```

#![deny(unsafe_code)] // allowed in one place: filestorage/mapped.rs

pub mod btree;
pub mod db;
pub mod error;
pub mod filestorage;
pub mod ids;
pub mod mapped;
pub mod open;
pub mod persistent;
pub mod pickle;
pub mod refs;
pub mod snapshot;
pub mod split;
pub mod storage;
pub mod timespec;
pub mod transaction;
pub mod value;
pub mod zeo;

pub use btree::BTree;
pub use db::{
    ALIGNED_PAYLOAD_MIN, Connection, DB, GenericObject, Invalidation, Persistent, PersistentClass,
    PersistentMapping,
};
pub use error::{Error, Result};
pub use filestorage::{FileStorage, PackStats};
pub use ids::{Oid, Tid, TidTime};
pub use mapped::MappedRecord;
pub use open::{open_storage, open_storage_with};
pub use snapshot::Snapshot;
pub use split::{SplitGot, SplitRecords, SplitShape};
pub use storage::{
    AlignedRecord, ConflictResolver, DataRecord, LoadedRecord, PAYLOAD_ALIGN, RangeLoad, Storage,
    StorageTxn, TxnInfo, TxnMeta,
};
pub use transaction::{
    CommitPhase, DataManager, SortKey, Synchronizer, TransactionManager, WeakTransactionManager,
};
pub use value::Value;
pub use zeo::ZeoStorage;
