"""Bad input answers with a wendelin_rs.Error subclass carrying the Rust
message, never a crash."""
import numpy as np
import pytest

import wendelin_rs as wr


@pytest.mark.parametrize("dtype", ["f2", "S10", "object", "nonsense", ">f8", "U3", "M8[s]"])
def test_bad_dtype(db, dtype):
    c = db.open()
    with pytest.raises(wr.DTypeError):
        c.create_array("A", (3,), dtype)
    assert "A" not in c.root


def test_bad_shape_and_order(db):
    c = db.open()
    with pytest.raises(wr.ShapeError):
        c.create_array("A", (-1, 3), "f8")
    with pytest.raises(wr.ShapeError):
        c.create_array("A", ("x",), "f8")
    with pytest.raises(wr.Error):
        c.create_array("A", (3,), "f8", order="K")
    with pytest.raises(wr.Error):
        c.create_array("A", (2**62, 2**62), "f8")
    A = c.create_array("A", (3, 2), "f8")
    with pytest.raises(wr.ShapeError):
        A.append(np.ones((2, 3)))
    with pytest.raises(wr.ExistsError):
        c.create_array("A", (3,), "f8")


def test_bad_path(tmp_path):
    with pytest.raises(wr.Error) as e:
        wr.DB(str(tmp_path / "no" / "such" / "dir" / "data.fs"))
    assert "no/such/dir" in str(e.value)
    with pytest.raises(wr.Error):
        wr.DB("zzz://nowhere/x")
    with pytest.raises(wr.Error):
        wr.DB(str(tmp_path / "x.fs"), ram_budget="lots")
    with pytest.raises(wr.Error):
        wr.DB(str(tmp_path / "x.fs"), ram_budget="1KiB")


def test_garbage_file(tmp_path):
    p = tmp_path / "garbage.fs"
    p.write_bytes(b"this is not a FileStorage" + bytes(range(256)) * 10)
    with pytest.raises(wr.Error) as e:
        wr.DB(str(p))
    assert str(p) in str(e.value) or "garbage" in str(e.value)


def test_names_and_entries_that_are_not_arrays(db, tmp_path, path):
    c = db.open()
    with pytest.raises(wr.NotFoundError) as e:
        c.root["missing"]
    assert "missing" in str(e.value)
    with pytest.raises(wr.NotFoundError):
        del c.root["missing"]
    with pytest.raises(wr.Error):
        db.open(at="xyz")
    with pytest.raises(wr.Error):
        db.open(at=12)


def test_closed_objects(db):
    c = db.open()
    c.close()
    for op in (c.commit, c.abort, lambda: c.root["A"], lambda: c.create_array("A", 3, "f8")):
        with pytest.raises(wr.ClosedError):
            op()
    db.close()
    with pytest.raises(wr.ClosedError):
        db.open()
    assert db.closed


def test_a_damaged_block_raises_on_checked_reads(tmp_path):
    """A block that cannot be loaded: stats and element reads raise; only
    raw views would get SIGBUS (not exercised)."""
    from conftest import run_child
    code = r'''
import sys, numpy as np, wendelin_rs as wr
path = sys.argv[1]
db = wr.DB(path)
c = db.open()
A = c.create_array("A", (1 << 20,), "f8")   # 8 MiB: 4 blocks
A[:] = 1.5
c.commit(); c.close(); db.close()
# damage the data records: every byte 1.5 pattern of block data becomes garbage
raw = bytearray(open(path, "rb").read())
pat = np.full(4, 1.5).tobytes()
i = raw.find(pat)
while i >= 0:
    raw[i:i+32] = b"\xff" * 32
    j = raw.find(pat, i + 32)
    if j < 0 or j - i > 4096: break
    i = j
open(path, "wb").write(bytes(raw))
'''
    # FileStorage data records have checksums only in the index: corruption of
    # block bytes is data, not an error; truncation is an error.
    code += r'''
import os
size = os.path.getsize(path)
with open(path, "r+b") as f:
    f.truncate(size // 2)
try:
    db = wr.DB(path)
    A = db.open().root["A"]
    try:
        A.stats()
        print("no error")
    except wr.Error as e:
        print("raised", type(e).__name__)
except wr.Error as e:
    print("open raised", type(e).__name__)
'''
    out = run_child(code, str(tmp_path / "d.fs"))
    assert "raised" in out, out
