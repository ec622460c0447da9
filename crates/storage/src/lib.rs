//! ZODB-compatible object database: the bottom layer of wendelin.
//!
//! (Top-level model documentation: see the sections below; kept up to date by
//! each module's owner.)

pub mod btree;
pub mod db;
pub mod error;
pub mod filestorage;
pub mod ids;
pub mod pickle;
pub mod storage;
pub mod transaction;
pub mod value;

pub use btree::BTree;
pub use db::{
    Connection, DB, GenericObject, Invalidation, Persistent, PersistentClass, PersistentMapping,
};
pub use error::{Error, Result};
pub use filestorage::FileStorage;
pub use ids::{Oid, Tid, TidTime};
pub use storage::{
    ConflictResolver, DataRecord, LoadedRecord, RangeLoad, Storage, StorageTxn, TxnInfo, TxnMeta,
};
pub use transaction::{DataManager, Synchronizer, TransactionManager, WeakTransactionManager};
pub use value::Value;
