//! Reading objects as of one snapshot, straight from a storage.
//!
//! # Model
//!
//! A snapshot is a tid `at`: the database as it was when the transaction
//! `at` committed. Reading object `oid` in it is `load_before(oid, at + 1)`
//! (the revision current just before the next possible tid), then decoding
//! the record into a typed object ([`PersistentClass::from_record`]). A
//! [`Snapshot`] is that recipe, in one place: connections use it to fill
//! their caches, BTree readers and the bigfile loaders (which run on their
//! own threads, without a connection) use it directly. It holds no cache and
//! no lock: a pair `(storage, at)` is all the state a consistent read needs.

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::persistent::PersistentClass;
use crate::storage::{LoadedRecord, Storage};

/// The database as of `at`, read through `storage`.
#[derive(Clone, Copy)]
pub struct Snapshot<'a> {
    /// The storage.
    pub storage: &'a dyn Storage,
    /// The snapshot: state as of this tid.
    pub at: Tid,
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("storage", &self.storage.name())
            .field("at", &self.at)
            .finish()
    }
}

impl<'a> Snapshot<'a> {
    /// The database as of `at`.
    pub fn new(storage: &'a dyn Storage, at: Tid) -> Self {
        Snapshot { storage, at }
    }

    /// The record of `oid` as of the snapshot, `None` if the object does not
    /// exist in it.
    pub fn try_record(&self, oid: Oid) -> Result<Option<LoadedRecord>> {
        self.storage.load_before(oid, self.at.successor())
    }

    /// The record of `oid` as of the snapshot ([`Error::NotFound`] if the
    /// object does not exist in it).
    pub fn record(&self, oid: Oid) -> Result<LoadedRecord> {
        self.try_record(oid)?.ok_or(Error::NotFound {
            oid,
            tid: Some(self.at),
        })
    }

    /// The object `oid` as of the snapshot, decoded as `T`, and the tid of
    /// the revision it was read from.
    pub fn load_with_serial<T: PersistentClass>(&self, oid: Oid) -> Result<(T, Tid)> {
        let rec = self.record(oid)?;
        Ok((T::from_record(oid, &rec.data)?, rec.serial))
    }

    /// The object `oid` as of the snapshot, decoded as `T`.
    pub fn load<T: PersistentClass>(&self, oid: Oid) -> Result<T> {
        Ok(self.load_with_serial(oid)?.0)
    }
}
