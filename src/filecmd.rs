//! `wendelin file cat|info DB PATH`: a ZBigFile's bytes and layout.

use bigfile::ZBlkKind;
use bigfile::reader::SnapshotFile;
use serde::Serialize;
use std::io::Write;
use storage::{DB, Oid, Tid};

/// Resolve PATH: a root key, or `oid:0x...` / `oid:...` (hex).
pub fn resolve(db: &DB, at: Tid, path: &str) -> Result<Oid, String> {
    if let Some(h) = path.strip_prefix("oid:") {
        return Oid::from_hex(h).ok_or_else(|| format!("{path:?}: not a hex oid"));
    }
    let conn = db.open_historical(at).map_err(|e| e.to_string())?;
    let root = conn.root().map_err(|e| e.to_string())?;
    let v = root.get(path).ok_or_else(|| {
        format!(
            "no root key {path:?} (keys: {})",
            root.keys().collect::<Vec<_>>().join(", ")
        )
    })?;
    v.ref_oid()
        .ok_or_else(|| format!("root[{path:?}] is not a persistent object"))
}

/// Layout of a ZBigFile.
#[derive(Debug, Serialize)]
pub struct FileInfo {
    /// The file's oid.
    pub oid: String,
    /// Block size.
    pub blksize: u64,
    /// Size in bytes (`(last block + 1) * blksize`).
    pub size: u64,
    /// Blocks in the size range.
    pub blocks: u64,
    /// Blocks stored as ZBlk0.
    pub zblk0: u64,
    /// Blocks stored as ZBlk1.
    pub zblk1: u64,
    /// Blocks not stored (read as zeros).
    pub holes: u64,
}

/// `wendelin file info`.
pub fn info(db_path: &str, path: &str, at: Option<&str>) -> Result<FileInfo, String> {
    let db = DB::open_read_only(db_path).map_err(|e| e.to_string())?;
    let at = crate::arraycmd::snapshot_tid(&db, at)?;
    let oid = resolve(&db, at, path)?;
    let sf = SnapshotFile::open(db.storage().as_ref(), at, oid).map_err(|e| e.to_string())?;
    let size = sf.size().map_err(|e| e.to_string())?;
    let blocks = size / sf.meta.blksize;
    let (mut z0, mut z1) = (0, 0);
    let present = sf.blocks().map_err(|e| e.to_string())?;
    for (_, zoid) in &present {
        match sf.zblk_kind(*zoid).map_err(|e| e.to_string())? {
            ZBlkKind::ZBlk0 => z0 += 1,
            ZBlkKind::ZBlk1 => z1 += 1,
        }
    }
    Ok(FileInfo {
        oid: oid.to_string(),
        blksize: sf.meta.blksize,
        size,
        blocks,
        zblk0: z0,
        zblk1: z1,
        holes: blocks - present.len() as u64,
    })
}

/// `wendelin file cat`: stream the file's bytes to `out`.
pub fn cat(
    db_path: &str,
    path: &str,
    at: Option<&str>,
    out: &mut impl Write,
) -> Result<u64, String> {
    let db = DB::open_read_only(db_path).map_err(|e| e.to_string())?;
    let at = crate::arraycmd::snapshot_tid(&db, at)?;
    let oid = resolve(&db, at, path)?;
    let sf = SnapshotFile::open(db.storage().as_ref(), at, oid).map_err(|e| e.to_string())?;
    let size = sf.size().map_err(|e| e.to_string())?;
    sf.read_range(0..size, |chunk| out.write_all(chunk))
        .map_err(|e| e.to_string())?;
    Ok(size)
}
