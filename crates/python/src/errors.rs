//! The exception hierarchy: every error the package raises is a subclass
//! of `wendelin_rs.Error` and carries the Rust error's message (which names
//! the file, offset, oid or array it concerns).
//!
//! The Rust front door has one error type with predicates
//! (`is_conflict`, `is_read_only`) and variants for the user's mistakes;
//! they map to the subclasses a Python caller catches: `ConflictError`
//! (retry the transaction), `ReadOnlyError` (a write through a snapshot),
//! `NotFoundError`, `ExistsError`, `DTypeError`, `ShapeError`, and
//! `ClosedError` for a closed database or connection. Anything else (I/O,
//! corruption, a bad URL) is a plain `Error`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    wendelin_rs,
    Error,
    PyException,
    "Base of every error wendelin_rs raises."
);
create_exception!(
    wendelin_rs,
    ConflictError,
    Error,
    "A write conflict: the transaction was aborted; retry it."
);
create_exception!(
    wendelin_rs,
    ReadOnlyError,
    Error,
    "A write through a read-only snapshot or database."
);
create_exception!(
    wendelin_rs,
    NotFoundError,
    Error,
    "No such name in the database root."
);
create_exception!(
    wendelin_rs,
    ExistsError,
    Error,
    "The name is taken in the database root."
);
create_exception!(
    wendelin_rs,
    DTypeError,
    Error,
    "An unsupported dtype, or not the array's."
);
create_exception!(
    wendelin_rs,
    ShapeError,
    Error,
    "A shape that does not fit (numpy's limits, append, the reservation)."
);
create_exception!(
    wendelin_rs,
    ClosedError,
    Error,
    "The database or connection is closed."
);

/// The Python exception of a Rust error.
pub fn to_py(e: wendelin::Error) -> PyErr {
    use wendelin::Error as E;
    let msg = e.to_string();
    if e.is_conflict() {
        return ConflictError::new_err(msg);
    }
    if e.is_read_only() {
        return ReadOnlyError::new_err(msg);
    }
    match e {
        E::NoSuchName { .. } => NotFoundError::new_err(msg),
        E::Exists { .. } => ExistsError::new_err(msg),
        E::DType { .. } | E::Array(wendelin::bigarray::Error::DType(_)) => DTypeError::new_err(msg),
        E::Array(wendelin::bigarray::Error::Shape { .. }) => ShapeError::new_err(msg),
        _ => Error::new_err(msg),
    }
}

/// Conversion of the layers' errors through the front door's error.
pub trait IntoPy<T> {
    /// The result with the error as a Python exception.
    fn py(self) -> PyResult<T>;
}

impl<T, E: Into<wendelin::Error>> IntoPy<T> for Result<T, E> {
    fn py(self) -> PyResult<T> {
        self.map_err(|e| to_py(e.into()))
    }
}

/// Register the exception classes in the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("ReadOnlyError", py.get_type::<ReadOnlyError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("ExistsError", py.get_type::<ExistsError>())?;
    m.add("DTypeError", py.get_type::<DTypeError>())?;
    m.add("ShapeError", py.get_type::<ShapeError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    Ok(())
}
