//! ZBigFile: a file of fixed-size blocks stored in the object database,
//! memory-mapped through virtmem and committed with ZODB transactions.
//!
//! # Model
//!
//! A ZBigFile (class `wendelin.bigfile.file_zodb.ZBigFile`, state
//! `(blksize, blktab)`) stores block `blk` as one ZODB object referenced from
//! `blktab`, an LOBTree `blk -> ZBlk`. A **ZBlk0** holds the block's bytes
//! with trailing zeros trimmed; a **ZBlk1** holds an IOBTree `offset -> ZData`
//! of 4 KiB chunks (all-zero chunks absent, each chunk trimmed). Missing
//! blocks read as zeros. The [`zblk`] module has the byte rules of both
//! formats and wendelin's `auto` choice; [`objects`] the persistent classes;
//! [`reader`] reads a file at a snapshot straight from the storage.
//!
//! A [`ZBigFileH`] maps the file with a virtmem [`virtmem::FileH`]: blocks
//! load on first touch, at the handle's connection snapshot, in virtmem's
//! handler threads, which read the storage directly (no lock shared with user
//! threads). The handle joins every transaction of its connection's
//! [`storage::TransactionManager`] as a data manager that commits before the
//! connection (an explicit [`storage::CommitPhase`]): in the commit phase it
//! writes the dirty blocks into ZBlk objects straight into the storage
//! transaction (in the handle's format; a block whose bytes did not change is
//! not written, a changed block always re-stores its ZBlk); once the
//! transaction is durable the blocks are marked stored (clean,
//! write-protected); an abort or a failed commit discards them.
//!
//! At each transaction boundary the connection moves to the newest snapshot
//! and reports the changed oids; the handle turns them into the exact set of
//! changed blocks (ZBlk/ZData rewritten, a hole that got data, a ZBlk
//! replaced or its format changed, a block deleted) and drops only those
//! from memory. The connection's own commit is not an invalidation, so a
//! handle keeps the pages it committed.
//!
//! ```no_run
//! use bigfile::{create_file, HandleOptions, ZBigFileH};
//! use storage::{DB, TransactionManager};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = DB::open("data.fs")?;
//! let tm = TransactionManager::new();
//! let conn = db.open_connection(&tm)?;
//! let file = create_file(&conn, 2 << 20)?;
//! tm.commit()?;
//! let fh = ZBigFileH::open(&conn, &tm, file, HandleOptions::from_env()?)?;
//! fh.write(5 << 20, b"hello")?;   // dirties block 2
//! tm.commit()?;                    // stored as a ZBlk, durable
//! assert_eq!(fh.read(5 << 20, 5)?, b"hello");
//! # Ok(()) }
//! ```

pub mod chunks;
mod chunks_split;
pub mod handle;
pub mod objects;
pub mod reader;
pub mod stored;
pub mod zblk;

pub use handle::{HandleOptions, ZBigFileH, views_held_by_this_thread};
pub use objects::{ZBigFile, ZBlk0, ZBlk1, ZData};
pub use reader::SnapshotFile;
pub use stored::{BlockTable, StoredBlock};
pub use zblk::{ZBlkFormat, ZBlkKind};

use storage::{Connection, Oid};

/// Errors of the bigfile layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the object database.
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// From the paging engine.
    #[error(transparent)]
    Virtmem(#[from] virtmem::Error),
    /// The object is not a ZBigFile.
    #[error("oid {oid} is a {class}, not a wendelin.bigfile.file_zodb.ZBigFile")]
    NotAFile {
        /// The object.
        oid: Oid,
        /// Its class.
        class: String,
    },
    /// A block's stored data is invalid.
    #[error("ZBigFile {file}: block {blk}: {msg}")]
    Block {
        /// The file.
        file: Oid,
        /// The block.
        blk: u64,
        /// What is wrong.
        msg: String,
    },
    /// Writing data read from the file failed.
    #[error("writing output: {0}")]
    Output(std::io::Error),
    /// A view, commit or boundary asked for while this thread holds a view
    /// of the same file (it would wait for itself forever).
    #[error("ZBigFile {file}: {what}: not allowed (it would wait for itself); end the view first")]
    Reentrant {
        /// The file.
        file: Oid,
        /// What was asked inside what.
        what: String,
    },
    /// Another thread kept the file busy for longer than the bounded wait.
    #[error("ZBigFile {file}: gave up after {waited:?} waiting for {what}")]
    Busy {
        /// The file.
        file: Oid,
        /// What was waited for.
        what: String,
        /// How long.
        waited: std::time::Duration,
    },
    /// A write through a handle of a read-only (historical) connection.
    #[error(
        "ZBigFile {file}: {what}: the handle is read-only (historical snapshot or read-only database)"
    )]
    ReadOnly {
        /// The file.
        file: Oid,
        /// What was attempted.
        what: String,
    },
    /// Misuse or a bad argument.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The error of a failed virtmem STORE: a block store error that the
    /// backend raised comes back as itself (a `ConflictError` stays one, a
    /// full disk says so first), anything else as the virtmem error.
    pub(crate) fn from_store(e: virtmem::Error) -> Error {
        match e {
            virtmem::Error::Store { blk, file, source } => match source.downcast::<Error>() {
                Ok(own) => *own,
                Err(source) => Error::Virtmem(virtmem::Error::Store { blk, file, source }),
            },
            other => Error::Virtmem(other),
        }
    }
}

/// Create a new, empty ZBigFile with block size `blksize` in `conn` (stored
/// at the next commit); returns its oid.
pub fn create_file(conn: &Connection, blksize: u64) -> Result<Oid, Error> {
    if blksize == 0 || !blksize.is_multiple_of(4096) || blksize > (1 << 30) {
        return Err(Error::Usage(format!(
            "blksize {blksize} must be a positive multiple of 4096, at most 1 GiB"
        )));
    }
    let blktab = storage::BTree::create(conn, &storage::btree::LO)?;
    Ok(conn.add(ZBigFile {
        blksize,
        blktab: blktab.oid,
    })?)
}
