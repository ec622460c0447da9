//! Pure-Python stand-ins of wendelin.core's persistent classes, as modules
//! to put on `PYTHONPATH` (see [`crate::python::run_python_with`]): the same
//! module and class names and the same states as wendelin.core, with helpers
//! that turn a file or array into bytes or numpy.

/// `wendelin/bigfile/file_zodb.py`: ZBigFile, ZBlk0/ZBlk, ZBlk1, ZData and
/// `file_bytes(zfile, n)`.
pub const FILE_ZODB: (&str, &str) = (
    "wendelin/bigfile/file_zodb.py",
    include_str!("../py/wendelin/bigfile/file_zodb.py"),
);

/// `wendelin/bigarray/array_zodb.py`: ZBigArray and `to_numpy(array)`.
pub const ARRAY_ZODB: (&str, &str) = (
    "wendelin/bigarray/array_zodb.py",
    include_str!("../py/wendelin/bigarray/array_zodb.py"),
);
