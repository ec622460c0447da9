//! Putting the packed file in place (ZODB: `Data.fs.pack` -> `Data.fs`, the
//! previous file kept as `Data.fs.old`).
//!
//! # Model
//!
//! ZODB renames `Data.fs` to `Data.fs.old` and then `Data.fs.pack` to
//! `Data.fs`; a crash between the two renames leaves no `Data.fs`. Here the
//! old file first gets its second name by a hard link, and the packed file
//! then replaces `Data.fs` by one `rename`, which is atomic: at every instant
//! `Data.fs` is either the complete old file or the complete, `fsync`ed
//! packed one, and `Data.fs.old` is the old file. Only where hard links are
//! not supported do we fall back to ZODB's two renames.
//!
//! Python's `Data.fs.index` (ZODB's saved index) describes offsets of the
//! old file; it is removed, and Python rebuilds it at its next open.
//! Processes that have the old file open keep reading it (it still exists
//! as `Data.fs.old`) until their next sync, which sees the new inode and
//! rescans.

use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// `<path><suffix>`.
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p, "remove", e)),
    }
}

/// Replace `path` by the complete, synced `<path>.pack`, keeping the
/// previous file as `<path>.old`.
pub(super) fn swap_in(path: &Path) -> Result<()> {
    let pack = sibling(path, ".pack");
    let old = sibling(path, ".old");
    remove_if_exists(&old)?;
    match std::fs::hard_link(path, &old) {
        Ok(()) => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "pack: no hard link for .old, renaming instead");
            std::fs::rename(path, &old).map_err(|e| Error::io(path, "rename to .old", e))?;
        }
    }
    std::fs::rename(&pack, path).map_err(|e| Error::io(&pack, "rename into place", e))?;
    remove_if_exists(&sibling(path, ".index"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    // Make the renames durable (best effort: some filesystems refuse
    // fsync on a directory).
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Remove a `<path>.pack` left by an unfinished pack.
pub(super) fn discard(path: &Path) -> Result<()> {
    remove_if_exists(&sibling(path, ".pack"))
}
