//! Typed errors of the storage crate. Every variant carries the context needed
//! to act on it (file, byte offset, oid, tid).

use crate::ids::{Oid, Tid};
use std::path::PathBuf;

/// Result alias for the storage crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An OS-level I/O error on a file.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done ("read", "open", "fsync", ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a FileStorage or is damaged at `offset`.
    #[error("{path}: at byte {offset}: {msg}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        msg: String,
    },
    /// A pickle could not be decoded or encoded.
    #[error("pickle: at byte {offset}: {msg}")]
    Pickle {
        /// Byte offset in the pickle data.
        offset: usize,
        /// What is wrong.
        msg: String,
    },
    /// A record's value tree does not have the shape its class requires.
    #[error("oid {oid}: {msg}")]
    BadState {
        /// The object.
        oid: Oid,
        /// What is wrong.
        msg: String,
    },
    /// The object does not exist (as of the requested revision).
    #[error("oid {oid}: object not found{}", .tid.map(|t| format!(" before tid {t}")).unwrap_or_default())]
    NotFound {
        /// The object.
        oid: Oid,
        /// The snapshot bound, if any.
        tid: Option<Tid>,
    },
    /// A write conflict: the object was committed at `committed` after it was read at `loaded`.
    #[error("conflict on oid {oid}: loaded at serial {loaded}, committed serial is {committed}{}", .reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Conflict {
        /// The object.
        oid: Oid,
        /// The serial the writer based its change on.
        loaded: Tid,
        /// The serial committed meanwhile.
        committed: Tid,
        /// Why resolution failed, if it was tried.
        reason: Option<String>,
    },
    /// A write was attempted on a read-only storage.
    #[error("{path}: storage is opened read-only")]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// Another writer holds the commit lock and the caller asked not to wait.
    #[error("{path}: locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The storage was used against its protocol (e.g. store outside a transaction).
    #[error("{0}")]
    Protocol(String),
}

impl Error {
    /// Build an [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            op,
            source,
        }
    }

    /// True for [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}
