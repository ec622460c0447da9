//! Opening a database: [`open`], [`open_with`] and [`Options`], and the
//! [`Db`] that hands out connections.

use super::{Connection, Error};
use bigfile::ZBlkFormat;
use storage::Tid;

/// How to open a database. `Options::default()` reads everything that is
/// not given from the environment.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// RAM budget in bytes for clean loaded blocks, process-wide. `None`:
    /// `$WENDELIN_RAM_BUDGET`, else half of physical RAM.
    pub ram_budget: Option<u64>,
    /// Open read-only: every connection is read-only and nothing is
    /// written to the files (not even the lock).
    pub read_only: bool,
    /// Format of blocks written (`None`: `$WENDELIN_CORE_ZBLK_FMT`, else
    /// ZBlk0).
    pub format: Option<ZBlkFormat>,
}

/// A database: a storage opened by URL (a path or `file:///path`; other
/// schemes as the storage registry knows them) that connections open on.
pub struct Db {
    db: storage::DB,
    url: String,
    read_only: bool,
    handle: bigfile::HandleOptions,
}

/// Open the database at `url` (a FileStorage path or `file://` URL; a new
/// path creates a database) with [`Options::default`].
pub fn open(url: &str) -> Result<Db, Error> {
    open_with(url, Options::default())
}

/// Open the database at `url` with `opts`.
pub fn open_with(url: &str, opts: Options) -> Result<Db, Error> {
    let budget = match opts.ram_budget {
        Some(b) if b < virtmem::budget::MIN_BUDGET => {
            return Err(Error::Engine(virtmem::Error::BadSize {
                spec: b.to_string(),
                msg: "a RAM budget must be at least 8MiB".into(),
            }));
        }
        Some(b) => b,
        None => virtmem::budget::default_budget()?,
    };
    virtmem::set_process_budget(budget);
    let format = match opts.format {
        Some(f) => f,
        None => ZBlkFormat::from_env().map_err(|e| bigfile::Error::Usage(e.to_string()))?,
    };
    let db = if opts.read_only {
        storage::DB::open_read_only(url)?
    } else {
        storage::DB::open(url)?
    };
    Ok(Db {
        db,
        url: url.to_owned(),
        read_only: opts.read_only,
        handle: bigfile::HandleOptions {
            format,
            ..bigfile::HandleOptions::default()
        },
    })
}

impl Db {
    /// A connection at the newest snapshot, with its own transaction (or a
    /// read-only one at the newest snapshot for a read-only database).
    pub fn open(&self) -> Result<Connection, Error> {
        if self.read_only {
            return self.open_at(self.last_tid());
        }
        let tm = storage::TransactionManager::new();
        let conn = self.db.open_connection(&tm)?;
        Ok(Connection::new(
            conn,
            Some(tm),
            self.url.clone(),
            self.handle.clone(),
        ))
    }

    /// A read-only connection at the snapshot `at` (the database as of the
    /// transaction `at`): arrays open with nothing else, and any write
    /// fails at once.
    pub fn open_at(&self, at: Tid) -> Result<Connection, Error> {
        let horizon = self.db.storage().pack_horizon()?;
        if at < horizon {
            return Err(Error::BeforePack {
                db: self.url.clone(),
                at,
                horizon,
            });
        }
        let conn = self.db.open_historical(at)?;
        Ok(Connection::new(
            conn,
            None,
            self.url.clone(),
            self.handle.clone(),
        ))
    }

    /// The newest transaction's tid.
    pub fn last_tid(&self) -> Tid {
        self.db.storage().last_tid()
    }

    /// The URL or path it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The transactions, newest first (at most `limit`), with what each did
    /// to the root's entries (a FileStorage database).
    pub fn log(&self, limit: Option<usize>) -> Result<Vec<super::history::LogEntry>, Error> {
        let path = self.url.strip_prefix("file://").unwrap_or(&self.url);
        let fs = storage::FileStorage::open_read_only(std::path::Path::new(path))?;
        super::history::log_of(&fs, limit).map_err(|msg| Error::History {
            db: self.url.clone(),
            msg,
        })
    }

    /// Pack the database as of `at` (ZODB's pack: every revision current at
    /// `at` and reachable from the root then, and everything after, stays;
    /// the rest is dropped; the previous file is kept as `NAME.old`).
    /// Connections opened at a tid before `at` afterwards get an error.
    pub fn pack(&self, at: Tid) -> Result<storage::PackStats, Error> {
        if self.read_only {
            return Err(Error::ReadOnly {
                what: "pack".into(),
                at: self.last_tid(),
            });
        }
        Ok(self.db.storage().pack(at, &mut |_, _| {})?)
    }

    /// The object database underneath (for the per-crate API).
    pub fn inner(&self) -> &storage::DB {
        &self.db
    }
}
