"""Interop with Python ZODB and the wendelin classes (the stand-ins of
crates/testsupport/py): an array written here reads there, and the other
way round."""
import numpy as np

import wendelin_rs as wr
from conftest import run_child

PY_READ = r'''
import sys
import numpy as np
from ZODB.FileStorage import FileStorage
from ZODB import DB
from wendelin.bigarray.array_zodb import to_numpy
st = FileStorage(sys.argv[1], read_only=True)
root = DB(st).open().root()
x = to_numpy(root["x"]); y = to_numpy(root["y"])
assert x.shape == (600, 500) and x.dtype == np.float64
assert np.array_equal(x, np.arange(300000.).reshape(600, 500) * 0.5)
assert np.array_equal(y, (np.arange(77 * 3) - 100).reshape(77, 3, order="F").astype("<i8")), y
print("OK", type(root["x"]).__module__)
'''

PY_WRITE = r'''
import sys
import numpy as np
from BTrees.IOBTree import IOBTree
from ZODB.FileStorage import FileStorage
from ZODB import DB
import transaction
from wendelin.bigfile.file_zodb import ZBigFile, ZBlk0, ZBlk1, ZData
from wendelin.bigarray.array_zodb import ZBigArray
CHUNK = 4096
def zblk(data, fmt):
    """One block as wendelin.core stores it: ZBlk0 whole, ZBlk1 in chunks
    (zero chunks left out)."""
    if fmt == 0:
        z = ZBlk0(); z.blkdata = data.rstrip(b"\0")
        return z
    z = ZBlk1(); z.chunktab = IOBTree()
    for off in range(0, len(data), CHUNK):
        part = data[off:off + CHUNK]
        if part.strip(b"\0"):
            d = ZData(); d.data = part; z.chunktab[off] = d
    return z
db = DB(FileStorage(sys.argv[1]))
root = db.open().root()
for name, arr, order, fmt in [
        ("x", np.arange(600000, dtype="<f8").reshape(1200, 500) * 0.5, "C", 0),
        ("y", (np.arange(77 * 3, dtype="<i4") - 100).reshape(77, 3), "F", 1)]:
    bs = 2 << 20
    f = ZBigFile(bs)
    raw = arr.tobytes(order=order)
    for blk in range(-(-len(raw) // bs)):
        f.blktab[blk] = zblk(raw[blk * bs:(blk + 1) * bs], fmt)
    a = ZBigArray()
    strides = np.asarray(arr, order=order).strides
    a.state = ({"_dtype": arr.dtype, "_shape": arr.shape, "_order": order, "_stridev": strides},
               {"zfile": f})
    root[name] = a
transaction.commit()
db.close()
print("OK")
'''


def test_written_here_reads_in_python_zodb(path):
    db = wr.DB(path)
    with db.transaction() as c:
        c.create_array("x", (600, 500), "f8")[:] = np.arange(300000.).reshape(600, 500) * 0.5
        y = c.create_array("y", (77, 3), "<i8", order="F")
        y[:] = (np.arange(77 * 3) - 100).reshape(77, 3, order="F")
    db.close()
    out = run_child(PY_READ, path, standins=True)
    assert "OK wendelin.bigarray.array_zodb" in out, out


def test_written_by_python_zodb_reads_and_writes_here(path):
    run_child(PY_WRITE, path, standins=True)
    db = wr.DB(path)
    c = db.open()
    x, y = c.root["x"], c.root["y"]
    want = np.arange(600000.).reshape(1200, 500) * 0.5
    assert x.dtype == np.float64 and x.shape == (1200, 500)
    assert np.array_equal(np.asarray(x), want)
    assert x.stats()["sum"] == want.sum()
    assert y.order == "F" and y.dtype == np.int32
    assert np.array_equal(y[:], (np.arange(77 * 3) - 100).reshape(77, 3))
    # and change it here: Python reads the change
    x[0, :] = -1
    c.commit()
    db.close()
    code = PY_READ.split("x = to_numpy")[0] + 'x = to_numpy(root["x"]); assert (x[0] == -1).all() and x[1, 0] == 250; print("OK")'
    assert "OK" in run_child(code, path, standins=True)
