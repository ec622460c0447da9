//! The error of the front-door API: every lower layer's error, plus the
//! mistakes a user can make at this level, each naming what it concerns
//! (the array's name, the database, the tid).

use storage::{Oid, Tid};

/// Errors of [`crate::open`], [`crate::Db`] and [`crate::Connection`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the object database (I/O, corruption, conflicts...).
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// From the file layer.
    #[error(transparent)]
    File(#[from] bigfile::Error),
    /// From the array layer.
    #[error(transparent)]
    Array(#[from] bigarray::Error),
    /// From the paging engine (e.g. a bad RAM budget).
    #[error(transparent)]
    Engine(#[from] virtmem::Error),
    /// No root entry of that name.
    #[error("{db}: no entry {name:?} in the database root")]
    NoSuchName {
        /// The database.
        db: String,
        /// The name asked for.
        name: String,
    },
    /// The name is taken.
    #[error("{db}: {name:?} exists in the database root (remove it first)")]
    Exists {
        /// The database.
        db: String,
        /// The name.
        name: String,
    },
    /// The entry is not a ZBigArray.
    #[error("{db}: root[{name:?}] is a {class}, not a wendelin.bigarray.array_zodb.ZBigArray")]
    NotAnArray {
        /// The database.
        db: String,
        /// The name.
        name: String,
        /// What it is.
        class: String,
    },
    /// The array's dtype is not the element type asked for.
    #[error("array {name:?} ({oid}) has dtype {stored}; it was opened as {requested}")]
    DType {
        /// The name.
        name: String,
        /// The array object.
        oid: Oid,
        /// The stored dtype.
        stored: String,
        /// The dtype of the requested element type.
        requested: String,
    },
    /// A change through a read-only connection.
    #[error("{what}: the connection is read-only (a snapshot at {at} or a read-only database)")]
    ReadOnly {
        /// What was attempted.
        what: String,
        /// The snapshot.
        at: Tid,
    },
    /// A snapshot older than what a pack kept complete.
    #[error("{db}: the database was packed: snapshots before {horizon} ({}) are incomplete; {at} ({}) is older", horizon.time_string(), at.time_string())]
    BeforePack {
        /// The database.
        db: String,
        /// The snapshot asked for.
        at: Tid,
        /// The oldest complete snapshot.
        horizon: Tid,
    },
    /// Reading the history failed.
    #[error("{db}: reading the history: {msg}")]
    History {
        /// The database.
        db: String,
        /// What went wrong.
        msg: String,
    },
    /// A transaction boundary asked for inside a view.
    #[error("{what} inside a view: end the view (return from with_view/with_view_mut) first")]
    InsideView {
        /// What was asked.
        what: String,
    },
}

impl Error {
    /// Is this a write conflict (the transaction was aborted; retry it)?
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Storage(e) => e.is_conflict(),
            Error::File(bigfile::Error::Storage(e)) => e.is_conflict(),
            Error::Array(bigarray::Error::Storage(e)) => e.is_conflict(),
            Error::Array(bigarray::Error::Bigfile(bigfile::Error::Storage(e))) => e.is_conflict(),
            _ => false,
        }
    }

    /// Is this a refusal of a write through a read-only snapshot?
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Error::ReadOnly { .. }
                | Error::File(bigfile::Error::ReadOnly { .. })
                | Error::Array(bigarray::Error::Bigfile(bigfile::Error::ReadOnly { .. }))
        )
    }
}
