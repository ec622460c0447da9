//! Opening a database by URL: the one registry of storage schemes, and the
//! one place that puts the concrete parts together.
//!
//! # Model
//!
//! The object layer ([`crate::db`]) works over any `Arc<dyn Storage>` and any
//! [`ConflictResolver`]; it names no storage and no persistent class. This
//! module is the composition root that does:
//!
//! - [`open_storage`] maps a URL to a storage through [`SCHEMES`], a table of
//!   `(scheme, opener)`. A plain path (no `://`) is a FileStorage, as is
//!   `file://`; `zeo://` is a ZEO client ([`crate::zeo`]). Adding a storage is
//!   one new module with an opener and one entry in the table; nothing else changes. An unknown
//!   scheme is an error naming it and the known ones.
//! - [`DB::new`] gives a database the standard conflict resolution (Python
//!   BTrees' bucket merge, [`BTreeResolver`]); [`DB::open`] is
//!   `DB::new(open_storage(url)?)`.

use crate::btree::BTreeResolver;
use crate::db::DB;
use crate::error::{Error, Result};
use crate::filestorage::FileStorage;
use crate::storage::{ConflictResolver, Storage};
use crate::zeo::ZeoStorage;
use std::sync::Arc;

/// How to open a storage: read-only or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenMode {
    /// Open read-only: take no lock, write nothing.
    pub read_only: bool,
}

/// Opens the storage at the scheme-specific rest of a URL (what follows
/// `scheme://`).
pub type Opener = fn(rest: &str, mode: OpenMode) -> Result<Arc<dyn Storage>>;

/// The storage schemes: `(scheme, opener)`.
pub const SCHEMES: &[(&str, Opener)] = &[("file", open_file), ("zeo", open_zeo)];

fn open_zeo(rest: &str, mode: OpenMode) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(ZeoStorage::open_url(rest, mode.read_only)?))
}

fn open_file(path: &str, mode: OpenMode) -> Result<Arc<dyn Storage>> {
    Ok(if mode.read_only {
        Arc::new(FileStorage::open_read_only(path)?)
    } else {
        Arc::new(FileStorage::open(path)?)
    })
}

/// Open the storage named by `url_or_path`: `scheme://rest` through
/// [`SCHEMES`], or a plain path as a FileStorage (created if missing).
pub fn open_storage(url_or_path: &str) -> Result<Arc<dyn Storage>> {
    open_storage_with(url_or_path, OpenMode::default())
}

/// [`open_storage`] with an explicit [`OpenMode`].
pub fn open_storage_with(url_or_path: &str, mode: OpenMode) -> Result<Arc<dyn Storage>> {
    let Some((scheme, rest)) = url_or_path.split_once("://") else {
        return open_file(url_or_path, mode);
    };
    match SCHEMES.iter().find(|(s, _)| *s == scheme) {
        Some((_, open)) => open(rest, mode),
        None => {
            let known: Vec<String> = SCHEMES.iter().map(|(s, _)| format!("{s}://")).collect();
            Err(Error::Protocol(format!(
                "unsupported storage URL {url_or_path:?}: unknown scheme {scheme:?} (known: {}, or a plain path)",
                known.join(", ")
            )))
        }
    }
}

/// The conflict resolution every database gets from [`DB::new`].
pub fn standard_resolver() -> Arc<dyn ConflictResolver> {
    Arc::new(BTreeResolver)
}

impl DB {
    /// A database over `storage`, writing pickles in the storage's dialect,
    /// with the standard conflict resolution (BTree buckets).
    pub fn new(storage: Arc<dyn Storage>) -> DB {
        DB::with_resolver(storage, Some(standard_resolver()))
    }

    /// Open a database by URL: `file:///path/Data.fs` or a plain path (a
    /// FileStorage, created if missing); see [`SCHEMES`].
    pub fn open(url: &str) -> Result<DB> {
        Ok(DB::new(open_storage(url)?))
    }

    /// Open a database read-only (no lock, nothing written, no root created).
    pub fn open_read_only(url: &str) -> Result<DB> {
        Ok(DB::new(open_storage_with(
            url,
            OpenMode { read_only: true },
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_names_it_and_the_known_ones() {
        let e = open_storage("s3://bucket/db").err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("\"s3\""), "{e}");
        assert!(e.contains("zeo://"), "{e}");
        assert!(e.contains("file://"), "{e}");
    }

    #[test]
    fn plain_paths_and_file_urls_open_a_filestorage() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("Data.fs");
        let p = p.to_str().expect("utf8");
        let a = open_storage(p).expect("path");
        let last = a.last_tid();
        drop(a);
        let b = open_storage(&format!("file://{p}")).expect("url");
        assert_eq!(b.last_tid(), last);
        let db = DB::open_read_only(p).expect("ro");
        assert!(db.storage().is_read_only());
    }
}
