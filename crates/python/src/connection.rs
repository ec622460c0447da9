//! `_DB` and `_Connection`: the database and its connections, each with
//! its own transaction (the Rust halves of `wendelin_rs.DB` and
//! `wendelin_rs.Connection`).
//!
//! Every call that may wait for the disk or for other threads (open,
//! commit, abort, sync, opening an array) releases the GIL. Closing drops
//! this object's reference only: arrays and numpy views hold their own
//! references to the storage, so their mappings stay valid after
//! `close()`, and the database is closed when the last of them goes.
//!
//! Handles opened on a writable connection load blocks by copying, never
//! by moving pages into place (virtmem's zero-copy): a page moved in is
//! writable for an instant before its write protection, and only Rust's
//! borrow rules (no mutable view during a load) make that safe. Numpy
//! views are writable at any time, so the binding turns moves off there;
//! read-only snapshots keep them. Instead, such handles map committed
//! blocks read-write and private (virtmem's `map_files_writable`): a write
//! through a numpy view copies the page, and the engine finds the copies
//! with a page-table scan, so reading costs no copy at all (measured on the
//! 2-core VM, `np.asarray(A).sum()` of 2 GiB: 0.20-0.25x a numpy.memmap
//! sum with copies, see the README for the figure with mapping).

use crate::array::{Array, Variant, with_type};
use crate::errors::{ClosedError, IntoPy};
use pyo3::prelude::*;
use std::sync::{Arc, RwLock};
use wendelin::bigarray::DType;
use wendelin::{Order, Tid};

/// A snapshot spec: a tid (16 hex digits) or an ISO-8601 time.
fn parse_at(s: &str) -> PyResult<Tid> {
    wendelin::storage::timespec::parse_tid_or_time(s).map_err(|e| {
        crate::errors::Error::new_err(format!(
            "at={s:?}: {e} (a tid of 16 hex digits or an ISO-8601 time)"
        ))
    })
}

/// One transaction of `DB.log()` (turned into a dict on the Python side).
#[derive(IntoPyObject)]
struct LogEntry {
    tid: String,
    time: String,
    user: String,
    description: String,
    size: u64,
    records: usize,
    root: Vec<(String, String)>,
}

/// An open database.
#[pyclass(frozen, module = "wendelin_rs._core", name = "_DB")]
pub struct Db {
    db: RwLock<Option<Arc<wendelin::Db>>>,
}

fn closed(what: &str) -> PyErr {
    ClosedError::new_err(format!("{what} is closed"))
}

impl Db {
    fn get(&self) -> PyResult<Arc<wendelin::Db>> {
        match self.db.read() {
            Ok(g) => g.clone().ok_or_else(|| closed("the database")),
            Err(_) => Err(closed("the database (poisoned)")),
        }
    }
}

fn parse_budget(spec: &Bound<'_, PyAny>) -> PyResult<u64> {
    if let Ok(n) = spec.extract::<u64>() {
        return Ok(n);
    }
    let s: String = spec.extract()?;
    wendelin::virtmem::budget::parse_size(&s).py()
}

#[pymethods]
impl Db {
    /// Open the database at `url` (a path or file:// URL; a new path
    /// creates it).
    #[new]
    #[pyo3(signature = (url, ram_budget=None, read_only=false))]
    fn new(
        py: Python<'_>,
        url: String,
        ram_budget: Option<Bound<'_, PyAny>>,
        read_only: bool,
    ) -> PyResult<Db> {
        let ram_budget = ram_budget.map(|b| parse_budget(&b)).transpose()?;
        let opts = wendelin::Options {
            ram_budget,
            read_only,
            format: None,
        };
        let db = py.detach(|| wendelin::open_with(&url, opts)).py()?;
        Ok(Db {
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    /// A connection at the newest snapshot with its own transaction, or a
    /// read-only one at `at` (a tid: 16 hex digits).
    #[pyo3(signature = (at=None))]
    fn open(&self, py: Python<'_>, at: Option<String>) -> PyResult<Connection> {
        let db = self.get()?;
        let at = at.map(|s| parse_at(&s)).transpose()?;
        let mut conn = py
            .detach(|| match at {
                Some(t) => db.open_at(t),
                None => db.open(),
            })
            .py()?;
        if !conn.is_read_only() {
            let o = &mut conn.handle_options_mut().virtmem;
            o.zero_copy = false;
            o.map_files_writable = true;
        }
        Ok(Connection {
            conn: RwLock::new(Some(Arc::new(conn))),
        })
    }

    /// Pack as of `before` (a tid or an ISO-8601 time; default: now):
    /// ZODB's pack. Returns a dict: packed, size_before, size_after.
    #[pyo3(signature = (before=None))]
    fn pack(&self, py: Python<'_>, before: Option<String>) -> PyResult<Vec<(String, u64)>> {
        let db = self.get()?;
        let at = match before {
            Some(s) => parse_at(&s)?,
            None => db.last_tid(),
        };
        let st = py.detach(|| db.pack(at)).py()?;
        Ok(vec![
            ("packed".into(), u64::from(st.packed)),
            ("size_before".into(), st.size_before),
            ("size_after".into(), st.size_after),
        ])
    }

    /// The transactions, newest first (at most `limit`): a list of dicts
    /// (tid, time, user, description, size, records, root changes).
    #[pyo3(signature = (limit=None))]
    fn log(&self, py: Python<'_>, limit: Option<usize>) -> PyResult<Vec<LogEntry>> {
        let db = self.get()?;
        let entries = py.detach(|| db.log(limit)).py()?;
        Ok(entries
            .into_iter()
            .map(|e| LogEntry {
                tid: e.tid,
                time: e.time,
                user: e.user,
                description: e.description,
                size: e.size,
                records: e.records,
                root: e
                    .root
                    .into_iter()
                    .map(|c| (c.name, c.change.to_owned()))
                    .collect(),
            })
            .collect())
    }

    /// The newest transaction's tid.
    fn last_tid(&self) -> PyResult<String> {
        Ok(self.get()?.last_tid().to_string())
    }

    /// The URL or path it was opened with.
    #[getter]
    fn url(&self) -> PyResult<String> {
        Ok(self.get()?.url().to_owned())
    }

    /// Drop this reference to the database (arrays and views keep theirs).
    fn close(&self) {
        if let Ok(mut g) = self.db.write() {
            g.take();
        }
    }

    /// Is it closed?
    #[getter]
    fn closed(&self) -> bool {
        self.db.read().map_or(true, |g| g.is_none())
    }
}

/// A connection with its own transaction.
#[pyclass(frozen, module = "wendelin_rs._core", name = "_Connection")]
pub struct Connection {
    conn: RwLock<Option<Arc<wendelin::Connection>>>,
}

impl Connection {
    fn get(&self) -> PyResult<Arc<wendelin::Connection>> {
        match self.conn.read() {
            Ok(g) => g.clone().ok_or_else(|| closed("the connection")),
            Err(_) => Err(closed("the connection (poisoned)")),
        }
    }
}

fn open_typed<T: Variant>(c: &wendelin::Connection, name: &str) -> Result<Array, wendelin::Error> {
    Ok(Array {
        inner: T::wrap(c.array::<T>(name)?),
    })
}

fn create_typed<T: Variant>(
    c: &wendelin::Connection,
    name: &str,
    shape: &[usize],
    order: Order,
) -> Result<Array, wendelin::Error> {
    Ok(Array {
        inner: T::wrap(c.create_array::<T>(name, shape, order)?),
    })
}

#[pymethods]
impl Connection {
    /// Create a zero-filled array `name` in the root (stored at commit).
    /// `dtype` is numpy's type string ("<f8", "|b1", ...), `order` "C" or "F".
    fn create_array(
        &self,
        py: Python<'_>,
        name: String,
        shape: Vec<usize>,
        dtype: String,
        order: String,
    ) -> PyResult<Array> {
        let c = self.get()?;
        let order = match order.as_str() {
            "C" => Order::C,
            "F" => Order::F,
            o => {
                return Err(crate::errors::Error::new_err(format!(
                    "order {o:?}: must be \"C\" or \"F\""
                )));
            }
        };
        let d =
            DType::parse(&dtype).map_err(|e| crate::errors::DTypeError::new_err(e.to_string()))?;
        with_type!(d, T => py.detach(|| create_typed::<T>(&c, &name, &shape, order)).py())
    }

    /// Open the array `name` of the root, whatever its dtype.
    fn array(&self, py: Python<'_>, name: String) -> PyResult<Array> {
        let c = self.get()?;
        // Open as bytes; the error of another dtype names the stored one.
        match py.detach(|| open_typed::<u8>(&c, &name)) {
            Ok(a) => Ok(a),
            Err(wendelin::Error::DType { stored, .. }) => {
                let d = DType::parse(&stored)
                    .map_err(|e| crate::errors::DTypeError::new_err(e.to_string()))?;
                with_type!(d, T => py.detach(|| open_typed::<T>(&c, &name)).py())
            }
            Err(e) => Err(crate::errors::to_py(e)),
        }
    }

    /// Does `array`'s handle still show the stored state (dtype, shape,
    /// order) at this connection's snapshot? After a boundary another
    /// transaction may have resized it, or an abort undone a resize: the
    /// caller then reopens it.
    fn is_current(&self, array: &Array) -> PyResult<bool> {
        let c = self.get()?;
        let (oid, state) = array.oid_state();
        Ok(wendelin::bigarray::open_untyped(c.inner(), oid).is_ok_and(|s| s == state))
    }

    /// Remove `name` from the root (in this transaction).
    fn remove(&self, name: &str) -> PyResult<()> {
        self.get()?.remove(name).py()
    }

    /// The names in the root.
    fn names(&self) -> PyResult<Vec<String>> {
        self.get()?.names().py()
    }

    /// Is `name` in the root?
    fn contains(&self, name: &str) -> PyResult<bool> {
        self.get()?.contains(name).py()
    }

    /// Describe the current transaction.
    fn note(&self, text: &str) -> PyResult<()> {
        self.get()?.note(text).py()
    }

    /// Commit (durable when it returns); the tid as 16 hex digits.
    fn commit(&self, py: Python<'_>) -> PyResult<String> {
        let c = self.get()?;
        Ok(py.detach(|| c.commit()).py()?.to_string())
    }

    /// Drop every uncommitted change; move to the newest snapshot.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.get()?;
        py.detach(|| c.try_abort()).py()
    }

    /// Move to the newest snapshot (a transaction boundary).
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.get()?;
        py.detach(|| c.sync()).py()
    }

    /// The snapshot's tid.
    #[getter]
    fn at(&self) -> PyResult<String> {
        Ok(self.get()?.at().to_string())
    }

    /// Is the connection read-only (a past snapshot or read-only database)?
    #[getter]
    fn read_only(&self) -> PyResult<bool> {
        Ok(self.get()?.is_read_only())
    }

    /// Abort and drop this reference (arrays and views keep theirs).
    fn close(&self, py: Python<'_>) {
        let c = self.conn.write().ok().and_then(|mut g| g.take());
        if let Some(c) = c {
            py.detach(|| c.abort());
        }
    }

    /// Is it closed?
    #[getter]
    fn closed(&self) -> bool {
        self.conn.read().map_or(true, |g| g.is_none())
    }
}
