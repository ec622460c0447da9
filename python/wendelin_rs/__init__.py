"""wendelin_rs: numpy arrays over wendelin's out-of-core engine.

The Python half of the package: the numpy and ZODB feel over the Rust
classes of ``wendelin_rs._core``.

    import numpy as np, wendelin_rs as wr
    db = wr.DB("data.fs", ram_budget="512MiB")
    conn = db.open()
    A = conn.create_array("A", (1000, 300), "f8")
    A[:] = np.arange(300000.).reshape(1000, 300)
    tid = conn.commit()

Model (wendelin.core's): an array's elements live in a memory mapping;
blocks load on first touch and are evicted within the RAM budget. Every
numpy view (``A[10:12]``, ``np.asarray(A)``) is that mapping, no copy:
writes through any view dirty blocks, ``commit`` stores them, ``abort``
drops them, and at every transaction boundary the blocks other
transactions changed are invalidated so the next touch reads the new data.
A view's ``base`` keeps the mapping alive, so views outlive their array
objects, ``conn.close()`` and ``db.close()`` safely.

Reads for the caller that copy (``A[3, 4]``, ``A.stats()``) check the
blocks first and raise ``wr.Error`` for a block that cannot be loaded; a
raw view touching such a block gets SIGBUS, as in wendelin.core.
"""

from contextlib import contextmanager
import operator

import numpy as np

from . import _core
from ._core import (
    Error,
    ConflictError,
    ReadOnlyError,
    NotFoundError,
    ExistsError,
    DTypeError,
    ShapeError,
    ClosedError,
)

__all__ = [
    "DB", "Connection", "Root", "BigArray",
    "Error", "ConflictError", "ReadOnlyError", "NotFoundError",
    "ExistsError", "DTypeError", "ShapeError", "ClosedError",
]


def _dtype_str(dtype):
    """numpy's type string of a dtype given any way numpy accepts."""
    try:
        return np.dtype(dtype).str
    except TypeError as e:
        raise DTypeError(f"dtype {dtype!r}: {e}") from None


def _shape(shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        out = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise ShapeError(f"shape {shape!r}: not a tuple of integers") from None
    if any(d < 0 for d in out):
        raise ShapeError(f"shape {shape!r}: negative dimension")
    return out


class DB:
    """A database opened by path or URL (``file://``; a new path creates one).

    ``ram_budget``: bytes or a size string ("512MiB") for clean loaded
    blocks, process-wide; default ``$WENDELIN_RAM_BUDGET``, else half of RAM.
    """

    def __init__(self, url, ram_budget=None, read_only=False):
        self._db = _core._DB(str(url), ram_budget, read_only)

    def open(self, at=None):
        """A connection at the newest snapshot, or a read-only one at tid ``at``."""
        if at is not None and not isinstance(at, str):
            raise Error(f"at={at!r}: a tid is a string of 16 hex digits")
        return Connection(self._db.open(at))

    @contextmanager
    def transaction(self):
        """``with db.transaction() as conn:`` commits on success, aborts on
        an exception; the connection is closed either way."""
        conn = self.open()
        try:
            yield conn
        except BaseException:
            conn.abort()
            raise
        else:
            conn.commit()
        finally:
            conn.close()

    def pack(self, before=None):
        """Pack as of `before` (a tid or an ISO-8601 time; default: now),
        with ZODB's semantics; the previous file is kept as NAME.old.
        Returns a dict: packed, size_before, size_after."""
        d = dict(self._db.pack(before))
        d["packed"] = bool(d["packed"])
        return d

    def log(self, limit=None):
        """The transactions, newest first: a list of dicts with tid, time,
        user, description, size, records and root (a list of (name,
        change) pairs: added, removed, replaced, modified)."""
        return [dict(e) for e in self._db.log(limit)]

    def last_tid(self):
        """The newest transaction's tid (16 hex digits)."""
        return self._db.last_tid()

    @property
    def url(self):
        return self._db.url

    def close(self):
        """Close (views and arrays keep their mappings valid)."""
        self._db.close()

    @property
    def closed(self):
        return self._db.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else repr(self.url)
        return f"<wendelin_rs.DB {state}>"


class Connection:
    """A snapshot of the database with its own transaction."""

    def __init__(self, core):
        self._c = core
        self._arrays = {}
        # bumped at every boundary that may change what arrays show
        self._gen = 0
        self.root = Root(self)

    def create_array(self, name, shape, dtype="f8", order="C"):
        """A zero-filled array ``root[name]`` (stored at commit; O(1))."""
        if order not in ("C", "F"):
            raise Error(f"order {order!r}: must be 'C' or 'F'")
        core = self._c.create_array(str(name), list(_shape(shape)), _dtype_str(dtype), order)
        a = BigArray(core, self, name)
        self._arrays[name] = a
        return a

    def _array(self, name):
        a = self._arrays.get(name)
        if a is None:
            a = self._arrays[name] = BigArray(self._c.array(str(name)), self, name)
        return a

    def commit(self):
        """Commit; durable when it returns. Returns the tid (16 hex digits)."""
        try:
            return self._c.commit()
        except ConflictError:
            self._gen += 1  # the transaction was aborted
            raise

    def abort(self):
        """Drop every uncommitted change; move to the newest snapshot."""
        self._gen += 1
        self._c.abort()

    def sync(self):
        """Move to the newest snapshot (nothing may be uncommitted)."""
        self._gen += 1
        self._c.sync()

    def note(self, text):
        """Describe the current transaction."""
        self._c.note(text)

    def close(self):
        """Abort and close (views keep their mappings valid)."""
        self._c.close()
        self._arrays.clear()

    @property
    def at(self):
        """The snapshot's tid."""
        return self._c.at

    @property
    def read_only(self):
        return self._c.read_only

    @property
    def closed(self):
        return self._c.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self.closed:
            return "<wendelin_rs.Connection closed>"
        ro = " read-only" if self.read_only else ""
        return f"<wendelin_rs.Connection at {self.at}{ro}>"


class Root:
    """The database root as a mapping of names to arrays."""

    def __init__(self, conn):
        self._conn = conn

    def __getitem__(self, name):
        return self._conn._array(name)

    def __contains__(self, name):
        return self._conn._c.contains(str(name))

    def __delitem__(self, name):
        self._conn._c.remove(str(name))
        self._conn._arrays.pop(name, None)

    def keys(self):
        return self._conn._c.names()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.keys())

    def items(self):
        return [(k, self[k]) for k in self.keys()]

    def get(self, name, default=None):
        return self[name] if name in self else default

    def __repr__(self):
        return f"<wendelin_rs.Root {self.keys()!r}>"


def _byte_bounds(a):
    """(low, high) addresses of the memory of ndarray ``a``."""
    low = high = a.__array_interface__["data"][0]
    if a.size == 0:
        return low, low
    for n, s in zip(a.shape, a.strides):
        if s < 0:
            low += (n - 1) * s
        else:
            high += (n - 1) * s
    return low, high + a.itemsize


class BigArray:
    """A persistent array: numpy indexing gives views of its memory mapping.

    ``A[10:12]`` and ``np.asarray(A)`` are ndarrays over the mapping (no
    copy); ``A[3, 4]`` is a checked read; ``A[...] = v`` assigns with
    numpy broadcasting. Arrays of past snapshots are read-only.
    """

    def __init__(self, core, conn=None, name=None):
        self._core = core
        self._conn = conn
        self._name = name
        self._gen = conn._gen if conn is not None else 0

    @property
    def _a(self):
        """The Rust array, reopened after a boundary changed its metadata
        (another transaction resized it, an abort undid a resize)."""
        conn = self._conn
        if conn is not None and self._gen != conn._gen and not conn.closed:
            if not conn._c.is_current(self._core):
                self._core = conn._c.array(str(self._name))
            self._gen = conn._gen
        return self._core

    # -- metadata --
    @property
    def shape(self):
        return tuple(self._a.shape)

    @property
    def dtype(self):
        return np.dtype(self._a.dtype)

    @property
    def order(self):
        return self._a.order

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    @property
    def read_only(self):
        return self._a.read_only

    def __len__(self):
        s = self.shape
        if not s:
            raise TypeError("len() of a 0-d array")
        return s[0]

    def __repr__(self):
        ro = " read-only" if self.read_only else ""
        return f"<wendelin_rs.BigArray shape={self.shape} dtype={self.dtype} order={self.order}{ro}>"

    # -- views --
    def view(self, writable=None):
        """The whole array as one ndarray over the mapping (no copy).
        Writable unless the array is read-only (or ``writable=False``)."""
        w = not self.read_only if writable is None else bool(writable)
        if w:
            self._a.check_writable("a writable view")
        return np.asarray(self._a.mapping(w))

    def __array__(self, dtype=None, copy=None):
        if copy:
            raise ValueError("np.array(A, copy=True) of a BigArray: use np.array(A[...]) or A.view().copy()")
        v = self.view()
        if dtype is not None and np.dtype(dtype) != v.dtype:
            return v.astype(dtype)
        return v

    def _check(self, v):
        """Load the blocks under ndarray ``v`` (a view of the mapping) now,
        raising the load error instead of SIGBUS."""
        base = self._a.mapping(False).__array_interface__["data"][0]
        low, high = _byte_bounds(v)
        if high > low:
            isz = v.itemsize
            self._a.check_readable((low - base) // isz, -(-(high - base) // isz))

    def __getitem__(self, index):
        full = self.view()
        if not isinstance(index, tuple):
            index = (index,)
        try:
            has_ellipsis = any(i is Ellipsis for i in index)
            sub = full[index] if has_ellipsis else full[index + (Ellipsis,)]
        except (IndexError, TypeError):
            sub = None
        if sub is None or not isinstance(sub, np.ndarray) or not np.may_share_memory(sub, full):
            # advanced indexing (a copy): check what it reads, then index
            self._check(full)
            return full[index]
        if sub.ndim == 0:
            self._check(sub)
            return sub[()]
        return sub

    def __setitem__(self, index, value):
        self._a.check_writable("A[...] = value")
        v = self.view(writable=True)
        v[index] = value
        del v
        self._a.after_write()

    # -- shape changes --
    def resize(self, shape):
        """Change the shape in O(1) (growing reads zeros; shrinking drops data)."""
        self._a.resize(list(_shape(shape)))

    def append(self, values):
        """Append ``values`` along the major axis (0 for C order, the last
        for F order); the other dimensions must match."""
        self._a.check_writable("append")
        values = np.asarray(values)
        shape = self.shape
        ax = self._a.major_axis
        if values.ndim != len(shape) or any(
            values.shape[i] != shape[i] for i in range(len(shape)) if i != ax
        ):
            raise ShapeError(f"cannot append shape {values.shape} to {shape} along axis {ax}")
        old = shape[ax]
        grown = list(shape)
        grown[ax] += values.shape[ax]
        self.resize(grown)
        idx = [slice(None)] * len(shape)
        idx[ax] = slice(old, None)
        self[tuple(idx)] = values

    # -- out of core --
    def stats(self):
        """dict(count, sum, mean, min, max): parallel, out of core, checked,
        with the GIL released."""
        return self._a.stats()

    def check_readable(self):
        """Load every block now, raising the error of one that cannot be loaded."""
        self._a.check_readable(0, self.size)

    @property
    def oid(self):
        return self._a.oid
