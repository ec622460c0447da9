//! Array commands of the `wendelin` tool: ls, create, import, export, stat.
//!
//! Commands that write a database leave nothing behind when they fail: a
//! database file they created at a new path is removed again
//! ([`NewDbGuard`]), an export writes a temporary file beside its target
//! and renames it at the end, and an output path that is one of the files
//! the command reads is refused before anything is opened for writing.

mod npy;
mod pyrepr;
use npy::npy_header;
pub use npy::{Npy, read_npy_header};
pub use pyrepr::py_repr;

use bigarray::{ArrayState, DType, Order, ZBigArray};
use bigfile::{HandleOptions, ZBlkFormat};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{Read, Write};
use std::path::Path;
use storage::{Connection, DB, Oid, TransactionManager, Value};

type R<T> = Result<T, String>;

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

/// Parse a size like `512MiB`, `4GiB`, `1000000`, `2G`.
pub fn parse_size(s: &str) -> R<u64> {
    virtmem::budget::parse_size(s).map_err(e)
}

/// The RAM budget: `--ram-budget`, else `$WENDELIN_RAM_BUDGET`, else half of
/// physical RAM (virtmem's default, computed in one place). Applied
/// process-wide.
pub fn apply_ram_budget(flag: Option<&str>) -> R<u64> {
    let limit = match flag {
        Some(spec) => virtmem::budget::parse_budget(spec),
        None => virtmem::budget::default_budget(),
    }
    .map_err(e)?;
    virtmem::set_process_budget(limit);
    Ok(limit)
}

fn opts() -> HandleOptions {
    HandleOptions {
        format: ZBlkFormat::from_env().unwrap_or_default(),
        virtmem: virtmem::Options::default(),
        spill_threshold: None,
    }
}

/// A progress bar on stderr when it is a terminal (hidden otherwise).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_owned());
    pb
}

fn root_ref(c: &Connection, name: &str) -> R<Oid> {
    let root = c.root().map_err(e)?;
    let v = root
        .get(name)
        .ok_or_else(|| format!("no array {name:?} in the database"))?;
    v.ref_oid()
        .ok_or_else(|| format!("root[{name:?}] is not a persistent object"))
}

/// One line of `ls`.
#[derive(Debug, serde::Serialize)]
pub struct Entry {
    /// Root key.
    pub name: String,
    /// Class `module.name`, or the Python type for plain values.
    pub class: String,
    /// For arrays: shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<usize>>,
    /// For arrays: dtype string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// For arrays: `C` or `F`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// For arrays: bytes of stored block records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Why the entry could not be read (the others are still listed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The snapshot a read-only command works on: `--at TID|ISO-8601-TIME`
/// (the database as of that transaction or instant), else the newest.
/// A snapshot older than what a pack kept complete is refused.
pub fn snapshot_tid(db: &DB, at: Option<&str>) -> R<storage::Tid> {
    let Some(spec) = at else {
        return Ok(db.storage().last_tid());
    };
    let tid =
        storage::timespec::parse_tid_or_time(spec).map_err(|x| format!("--at {spec}: {x}"))?;
    let horizon = db.storage().pack_horizon().map_err(e)?;
    if tid < horizon {
        return Err(format!(
            "--at {spec}: the database was packed: snapshots before {horizon} ({}) are incomplete",
            horizon.time_string()
        ));
    }
    Ok(tid)
}

/// `wendelin ls DB [--at T]`.
pub fn ls(db_path: &str, at: Option<&str>) -> R<Vec<Entry>> {
    let db = DB::open_read_only(db_path).map_err(e)?;
    let c = db.open_historical(snapshot_tid(&db, at)?).map_err(e)?;
    let items: Vec<(String, Value)> = {
        let root = c.root().map_err(e)?;
        root.data
            .iter()
            .map(|(k, v)| (k.as_text().unwrap_or("?").to_owned(), v.clone()))
            .collect()
    };
    let mut out = Vec::new();
    for (name, v) in items {
        let mut en = Entry {
            name,
            class: String::new(),
            shape: None,
            dtype: None,
            order: None,
            disk_bytes: None,
            error: None,
        };
        match v.ref_oid() {
            Some(oid) => {
                if let Err(x) = describe(&c, oid, &mut en) {
                    en.error = Some(x);
                }
            }
            None => en.class = py_repr(&v, 40),
        }
        out.push(en);
    }
    Ok(out)
}

/// Class, and for arrays shape, dtype, order and size on disk, of the
/// object `oid` (an unreadable entry fills what it can).
fn describe(c: &Connection, oid: Oid, en: &mut Entry) -> R<()> {
    let (m, n) = c.class_of(oid).map_err(e)?;
    en.class = format!("{m}.{n}");
    if en.class == "wendelin.bigarray.array_zodb.ZBigArray" {
        let st = bigarray::open_untyped(c, oid).map_err(e)?;
        en.shape = Some(st.shape.clone());
        en.dtype = Some(st.dtype.str());
        en.order = Some(if st.order == Order::C { "C" } else { "F" }.into());
        en.disk_bytes = Some(disk_bytes(c, &st)?);
    }
    Ok(())
}

/// Bytes of the array's stored block records (ZBlk0, or ZBlk1 + its
/// ZData), from record lengths only: no block data is read.
fn disk_bytes(c: &Connection, st: &ArrayState) -> R<u64> {
    let sf = bigfile::SnapshotFile::open(c.storage().as_ref(), c.at(), st.zfile).map_err(e)?;
    let at = c.at().successor();
    let len = |oid: Oid, head: &mut [u8]| -> R<(u64, usize)> {
        let r = c.storage().load_before_range(oid, at, 0, head).map_err(e)?;
        Ok(r.map_or((0, 0), |r| (r.total_len, r.copied)))
    };
    let mut total = 0u64;
    let mut head = [0u8; 256];
    for (blk, zoid) in sf.blocks().map_err(e)? {
        let (n, got) = len(zoid, &mut head)?;
        total += n;
        let class = storage::pickle::record_class(&head[..got]).map_err(e)?;
        if class == "wendelin.bigfile.file_zodb.ZBlk1"
            && let (bigfile::objects::ZBlkRecord::ZBlk1(tab), _) = sf.zblk(zoid).map_err(e)?
        {
            for (_, o) in sf.chunk_refs(blk, tab, &mut Vec::new()).map_err(e)? {
                total += len(o, &mut [])?.0;
            }
        }
    }
    Ok(total)
}

/// Dispatch `$body` with `$T` bound to the real element type of `$dtype`.
macro_rules! with_real {
    ($dtype:expr, $T:ident => $body:expr) => {{
        let d: &DType = &$dtype;
        if !d.is_native() {
            return Err(format!("dtype {} is big-endian: convert it first", d.str()));
        }
        match (d.kind, d.size) {
            ('f', 8) => {
                type $T = f64;
                $body
            }
            ('f', 4) => {
                type $T = f32;
                $body
            }
            ('i', 8) => {
                type $T = i64;
                $body
            }
            ('i', 4) => {
                type $T = i32;
                $body
            }
            ('i', 2) => {
                type $T = i16;
                $body
            }
            ('i', 1) => {
                type $T = i8;
                $body
            }
            ('u', 8) => {
                type $T = u64;
                $body
            }
            ('u', 4) => {
                type $T = u32;
                $body
            }
            ('u', 2) => {
                type $T = u16;
                $body
            }
            ('u', 1) => {
                type $T = u8;
                $body
            }
            ('b', 1) => {
                type $T = bigarray::B1;
                $body
            }
            _ => Err(format!(
                "dtype {} is not supported by this command",
                d.str()
            )),
        }
    }};
}

/// Like `with_real!`, and complex types too.
macro_rules! with_type {
    ($dtype:expr, $T:ident => $body:expr) => {{
        let d: &DType = &$dtype;
        match (d.kind, d.size) {
            ('c', 8) if d.is_native() => { type $T = num_complex::Complex<f32>; $body }
            ('c', 16) if d.is_native() => { type $T = num_complex::Complex<f64>; $body }
            _ => with_real!($dtype, $T => $body),
        }
    }};
}

fn parse_shape(s: &str) -> R<Vec<usize>> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad shape {s:?}"))
        })
        .collect()
}

/// Removes a database file (and its side files) that the command created
/// at a path where none existed, unless [`NewDbGuard::keep`] is called.
pub struct NewDbGuard {
    created: Option<std::path::PathBuf>,
}

impl NewDbGuard {
    /// Note whether `db` (a path or file:// URL) exists before opening it.
    pub fn before_open(db: &str) -> NewDbGuard {
        let p = std::path::PathBuf::from(db.strip_prefix("file://").unwrap_or(db));
        NewDbGuard {
            created: (std::fs::symlink_metadata(&p).is_err()).then_some(p),
        }
    }

    /// The command succeeded: keep the new database.
    pub fn keep(mut self) {
        self.created = None;
    }
}

impl Drop for NewDbGuard {
    fn drop(&mut self) {
        if let Some(p) = self.created.take() {
            for suffix in ["", ".lock", ".oids"] {
                let mut name = p.as_os_str().to_owned();
                name.push(suffix);
                let _ = std::fs::remove_file(std::path::PathBuf::from(name));
            }
        }
    }
}

fn check_new(c: &Connection, name: &str, replace: bool) -> R<()> {
    if c.root().map_err(e)?.get(name).is_some() && !replace {
        return Err(format!("{name:?} exists in the database (use --replace)"));
    }
    Ok(())
}

/// `wendelin create DB NAME --shape ... --dtype ... [--order F]`.
pub fn create(
    db_path: &str,
    name: &str,
    shape: &str,
    dtype: &str,
    order: &str,
    replace: bool,
) -> R<()> {
    let shape = parse_shape(shape)?;
    let dt = DType::parse(dtype).map_err(e)?;
    let order = match order {
        "C" | "c" => Order::C,
        "F" | "f" => Order::F,
        o => return Err(format!("order must be C or F, not {o:?}")),
    };
    bigarray::check_shape(&shape, dt.size).map_err(e)?;
    let guard = NewDbGuard::before_open(db_path);
    let db = DB::open(db_path).map_err(e)?;
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).map_err(e)?;
    check_new(&c, name, replace)?;
    let oid = with_type!(dt, T => {
        ZBigArray::<T>::create(&c, &tm, &shape, order, opts()).map(|a| a.oid()).map_err(e)
    })?;
    link(
        &c,
        &tm,
        name,
        oid,
        replace,
        &format!("wendelin create {name}"),
    )?;
    guard.keep();
    Ok(())
}

/// Link `oid` under root[`name`] and commit. A conflict on the root (another
/// process linked another name meanwhile) is retried while `name` is still
/// free (or `replace`); the error of the commit is shown with what happened
/// first.
fn link(
    c: &Connection,
    tm: &TransactionManager,
    name: &str,
    oid: Oid,
    replace: bool,
    note: &str,
) -> R<()> {
    let mut tries = 0;
    loop {
        check_new(c, name, replace)?;
        let r = c.ref_to(oid).map_err(e)?;
        c.root_mut().map_err(e)?.insert(name, r);
        tm.note(note);
        match tm.commit() {
            Ok(()) => return Ok(()),
            Err(storage::Error::Conflict { oid: o, .. }) if o == Oid::ROOT && tries < 20 => {
                tries += 1;
                tracing::info!(
                    name,
                    tries,
                    "root changed by another process: linking again"
                );
            }
            Err(x) => return Err(format!("committing {note:?}: {}", first_cause(&x))),
        }
    }
}

/// An error and its sources, outermost first, without repeats.
pub fn first_cause(x: &(dyn std::error::Error + 'static)) -> String {
    let mut s = x.to_string();
    let mut src = x.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// Bytes per import transaction: half the RAM budget, whole 2 MiB blocks,
/// at most 256 MiB (a streaming writer gains nothing from bigger
/// transactions, and its peak RSS is about one transaction's worth).
fn import_txn_bytes(budget: u64) -> u64 {
    const BLK: u64 = 2 << 20;
    (budget / 2).clamp(BLK, 256 << 20) / BLK * BLK
}

/// `wendelin import DB NAME FILE.npy [--replace]`: atomic under NAME even
/// when bigger than RAM (data goes in bounded transactions into an array not
/// yet reachable; the last transaction links it under NAME).
pub fn import(db_path: &str, name: &str, npy: &Path, replace: bool, budget: u64) -> R<u64> {
    let mut f = std::fs::File::open(npy).map_err(|x| format!("{}: {x}", npy.display()))?;
    let h = read_npy_header(&mut f).map_err(|x| format!("{}: {x}", npy.display()))?;
    let dt = DType::parse(&h.descr).map_err(|x| format!("{}: {x}", npy.display()))?;
    let nbytes = h
        .shape
        .iter()
        .try_fold(dt.size as u64, |a, &x| a.checked_mul(x as u64))
        .ok_or_else(|| format!("{}: shape {:?} overflows", npy.display(), h.shape))?;
    let flen = f.metadata().map_err(e)?.len();
    let need = h
        .data_offset
        .checked_add(nbytes)
        .ok_or_else(|| format!("{}: data size {nbytes} overflows", npy.display()))?;
    bigarray::check_shape(&h.shape, dt.size).map_err(|x| format!("{}: {x}", npy.display()))?;
    if flen < need {
        return Err(format!(
            "{}: truncated: {} data bytes, the header says {nbytes}",
            npy.display(),
            flen.saturating_sub(h.data_offset)
        ));
    }
    let guard = NewDbGuard::before_open(db_path);
    let db = DB::open(db_path).map_err(e)?;
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).map_err(e)?;
    check_new(&c, name, replace)?;
    let order = if h.fortran { Order::F } else { Order::C };
    let txn_bytes = import_txn_bytes(budget);
    let pb = progress(nbytes, &format!("import {name}"));
    let oid = with_type!(dt, T => {
        (|| -> R<Oid> {
            let a = ZBigArray::<T>::create(&c, &tm, &h.shape, order, opts()).map_err(e)?;
            let bs = a.file().blksize() as u64;
            let mut done = 0u64;
            // The blocks the last transaction stored: never touched again,
            // their pages go to this transaction's blocks.
            let mut stored: Vec<u64> = Vec::new();
            while done < nbytes {
                let end = (done + txn_bytes).min(nbytes);
                {
                    // Straight from the file into the array's pages: no
                    // intermediate buffer; the blocks get the pages of those
                    // just stored (no fresh pages for the kernel to zero,
                    // see virtmem's `bytes_overwrite`).
                    let mut fh = a.file().fileh().map_err(e)?;
                    let mut view = fh.bytes_overwrite(done..end, &stored).map_err(e)?;
                    let mut pos = 0usize;
                    while pos < view.len() {
                        let n = (4usize << 20).min(view.len() - pos);
                        // The kernel cannot take our page faults (read()
                        // would fail with EFAULT): fault the pages in, for
                        // writing, from user space first.
                        view[pos..pos + n].iter_mut().step_by(4096).for_each(|b| *b = 0);
                        f.read_exact(&mut view[pos..pos + n])
                            .map_err(|x| format!("{}: {x}", npy.display()))?;
                        pos += n;
                        pb.inc(n as u64);
                    }
                }
                let note = format!("wendelin import {name}: {end}/{nbytes} bytes");
                tm.note(&note);
                tm.commit().map_err(|x| format!("committing {note:?}: {}", first_cause(&x)))?;
                // A streaming writer never touches these blocks again: the
                // committed (now clean) blocks give their pages to the next
                // transaction's blocks, and those left over are dropped, so
                // the bytes are not kept twice (here and in the page cache).
                a.file().fileh_read().map_err(e)?.drop_behind(&stored);
                stored = (done / bs..end.div_ceil(bs)).collect();
                done = end;
            }
            a.file().fileh_read().map_err(e)?.drop_behind(&stored);
            Ok(a.oid())
        })()
    })?;
    link(
        &c,
        &tm,
        name,
        oid,
        replace,
        &format!("wendelin import {name}: link"),
    )?;
    guard.keep();
    pb.finish_and_clear();
    Ok(nbytes)
}

/// `wendelin export DB NAME FILE.npy [--slice A:B]` (major-axis slice),
/// streamed from the stored blocks.
pub fn export(
    db_path: &str,
    name: &str,
    out: &Path,
    slice: Option<&str>,
    at: Option<&str>,
) -> R<u64> {
    refuse_output_onto_input(out, db_path)?;
    let db = DB::open_read_only(db_path).map_err(e)?;
    let c = db.open_historical(snapshot_tid(&db, at)?).map_err(e)?;
    let oid = root_ref(&c, name)?;
    let st = bigarray::open_untyped(&c, oid).map_err(e)?;
    let n = st.shape.len();
    let axis = if st.order == Order::C {
        0
    } else {
        n.saturating_sub(1)
    };
    let mut shape = st.shape.clone();
    let (start, stop) = match slice {
        None => (0, shape.get(axis).copied().unwrap_or(1)),
        Some(s) => {
            let (a, b) = s
                .split_once(':')
                .ok_or_else(|| format!("--slice {s:?}: use START:STOP"))?;
            let len = shape.get(axis).copied().unwrap_or(1);
            let a: usize = if a.is_empty() {
                0
            } else {
                a.parse().map_err(|_| format!("bad --slice {s:?}"))?
            };
            let b: usize = if b.is_empty() {
                len
            } else {
                b.parse().map_err(|_| format!("bad --slice {s:?}"))?
            };
            if a > b || b > len {
                return Err(format!("--slice {s:?} is outside 0:{len}"));
            }
            (a, b)
        }
    };
    let per_major: u64 = st.nbytes() / (shape.get(axis).copied().unwrap_or(1).max(1) as u64);
    if let Some(x) = shape.get_mut(axis) {
        *x = stop - start;
    }
    let (from, to) = (start as u64 * per_major, stop as u64 * per_major);
    let sf = bigfile::SnapshotFile::open(c.storage().as_ref(), c.at(), st.zfile).map_err(e)?;
    let tmp = TmpOut::beside(out)?;
    let mut w = std::io::BufWriter::with_capacity(4 << 20, &tmp.file);
    let werr = |x: std::io::Error| format!("{}: writing: {x}", tmp.path.display());
    w.write_all(&npy_header(&st.dtype.str(), st.order == Order::F, &shape))
        .map_err(werr)?;
    let pb = progress(to - from, &format!("export {name}"));
    sf.read_range(from..to, |chunk| {
        w.write_all(chunk)?;
        pb.inc(chunk.len() as u64);
        Ok(())
    })
    .map_err(|x| format!("export {name}: {}", first_cause(&x)))?;
    w.flush().map_err(werr)?;
    drop(w);
    tmp.persist(out)?;
    pb.finish_and_clear();
    Ok(to - from)
}

/// A temporary output file beside its target, removed unless persisted.
struct TmpOut {
    path: std::path::PathBuf,
    file: std::fs::File,
    kept: bool,
}

impl TmpOut {
    /// `.<name>.<pid>.<n>.tmp` in the target's directory, created exclusively.
    fn beside(out: &Path) -> R<TmpOut> {
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let base = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        for n in 0..100 {
            let path = dir.join(format!(".{base}.{}.{n}.tmp", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TmpOut {
                        path,
                        file,
                        kept: false,
                    });
                }
                Err(x) if x.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(x) => return Err(format!("{}: {x}", path.display())),
            }
        }
        Err(format!("{}: no free temporary name", dir.display()))
    }

    /// Flush to disk and rename onto `out`.
    fn persist(mut self, out: &Path) -> R<()> {
        self.file
            .sync_all()
            .map_err(|x| format!("{}: fsync: {x}", self.path.display()))?;
        std::fs::rename(&self.path, out).map_err(|x| format!("{}: {x}", out.display()))?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for TmpOut {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Refuse to write `out` when it is the database (or one of its side files):
/// compared by device and inode, so links and other spellings are caught.
pub fn refuse_output_onto_input(out: &Path, db_path: &str) -> R<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(o) = std::fs::metadata(out) else {
        return Ok(());
    };
    let db = db_path.strip_prefix("file://").unwrap_or(db_path);
    for suffix in ["", ".lock", ".oids", ".index"] {
        let p = format!("{db}{suffix}");
        if let Ok(m) = std::fs::metadata(&p)
            && (m.dev(), m.ino()) == (o.dev(), o.ino())
        {
            return Err(format!(
                "{}: refusing to write onto {p}, which this command reads",
                out.display()
            ));
        }
    }
    Ok(())
}

/// `wendelin stat DB NAME`: count, sum, mean, min, max out of core.
pub fn stat(db_path: &str, name: &str, at: Option<&str>) -> R<bigarray::Stats> {
    let db = DB::open_read_only(db_path).map_err(e)?;
    let c = db.open_historical(snapshot_tid(&db, at)?).map_err(e)?;
    let oid = root_ref(&c, name)?;
    let st = bigarray::open_untyped(&c, oid).map_err(e)?;
    if !st.dtype.is_native() {
        // big-endian: streamed from the stored blocks, converted per chunk
        return bigarray::stats_converted(&c, oid).map_err(|x| format!("stat {name}: {x}"));
    }
    let pb = progress(st.nbytes(), &format!("stat {name}"));
    let r = with_real!(st.dtype, T => {
        let a = ZBigArray::<T>::open_read_only(&c, oid, opts()).map_err(e)?;
        a.stats_with_progress(&|n| pb.set_position(n))
            .map_err(|x| format!("stat {name}: {x}"))
    })?;
    pb.finish_and_clear();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("12XB").is_err());
    }

    #[test]
    fn npy_headers_round_trip() {
        for (d, f, s) in [
            ("<f8", false, vec![3usize, 4]),
            ("|u1", true, vec![7]),
            ("<i4", false, vec![]),
        ] {
            let h = npy_header(d, f, &s);
            assert_eq!(h.len() % 64, 0);
            let got = read_npy_header(&mut h.as_slice()).expect("parse");
            assert_eq!(
                (
                    got.descr.as_str(),
                    got.fortran,
                    got.shape.clone(),
                    got.data_offset
                ),
                (d, f, s, h.len() as u64)
            );
        }
        assert!(read_npy_header(&mut &b"nonsense!!!!"[..]).is_err());
    }
}
