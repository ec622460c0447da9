//! `wendelin_rs._core`: the Python binding of the engine (PyO3), the Rust
//! half of the `wendelin_rs` package.
//!
//! The package's Python half (`python/wendelin_rs/__init__.py`) gives the
//! numpy and ZODB feel: `DB`, `Connection`, `conn.root`, `BigArray` with
//! numpy indexing and assignment, `db.transaction()`. It stands on four
//! classes from here, each a thin wrapper of the Rust front door:
//!
//! - `connection`: `_DB` (open by URL, connections, time travel) and
//!   `_Connection` (arrays by name, commit, abort, sync), GIL released
//!   for everything that waits;
//! - `array`: `_Array` (any element type behind one class: shape, dtype,
//!   resize, checked loads, parallel stats) and `_Mapping`, the numpy
//!   array interface of the memory mapping that every view hangs on;
//! - `errors`: the exception hierarchy under `wendelin_rs.Error`.
//!
//! Views are raw mappings as in wendelin.core: no copy, blocks load on
//! first touch, writes dirty blocks, transaction boundaries invalidate.
//! The lifetime argument (why no view can read unmapped memory) is in
//! `array`.

mod array;
mod connection;
mod errors;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<connection::Db>()?;
    m.add_class::<connection::Connection>()?;
    m.add_class::<array::Array>()?;
    m.add_class::<array::Mapping>()?;
    Ok(())
}
