"""The API surface of issue 14, as written there, and numpy behaviour of
the views."""
import numpy as np
import pytest

import wendelin_rs as wr


def test_the_issue_surface_as_written(tmp_path):
    db = wr.DB(str(tmp_path / "data.fs"), ram_budget="512MiB")
    conn = db.open()
    A = conn.create_array("A", (1000, 300), "f8", order="C")
    A[:] = np.arange(300000.).reshape(1000, 300)
    tid = conn.commit()
    assert isinstance(tid, str) and len(tid) == 16 and int(tid, 16) > 0
    A = conn.root["A"]
    assert "A" in conn.root and "B" not in conn.root
    assert list(conn.root.keys()) == ["A"]
    a = A[10:12]
    assert isinstance(a, np.ndarray) and a.shape == (2, 300)
    assert a[1, 5] == 11 * 300 + 5
    v = np.asarray(A)
    assert v.shape == (1000, 300) and v.sum() == np.arange(300000.).sum()
    assert np.shares_memory(a, v)  # both are the mapping
    assert A[3, 4] == 904.0
    assert np.array_equal(A[..., 1], np.arange(1000) * 300 + 1.0)
    assert np.array_equal(A[::100, 0], np.arange(0, 300000, 30000.0))
    assert A.shape == (1000, 300) and A.dtype == np.float64 and A.order == "C" and len(A) == 1000
    A.append(np.ones((5, 300)))
    assert A.shape == (1005, 300) and (A[1000:] == 1).all()
    A.resize((2000, 300))
    assert A.shape == (2000, 300) and (A[1005:] == 0).all()
    conn.abort()
    assert A.shape == (1000, 300)  # the resize and append are gone
    conn.sync()
    conn.close()
    conn = db.open()
    A = conn.root["A"]
    s = A.stats()
    assert s == {"count": 300000, "sum": np.arange(300000.).sum(), "mean": 149999.5,
                 "min": 0.0, "max": 299999.0}
    old = db.open(at=tid)
    B = old.root["A"]
    assert not np.asarray(B).flags.writeable and not B[0:2].flags.writeable
    with pytest.raises(wr.ReadOnlyError):
        B[0, 0] = 1
    with pytest.raises(wr.ReadOnlyError):
        B.resize((5, 300))
    with pytest.raises(wr.ReadOnlyError):
        B.append(np.ones((1, 300)))
    with pytest.raises(wr.ReadOnlyError):
        old.create_array("C", (3,), "f8")
    with db.transaction() as c:
        c.root["A"][0, 0] = 5
    conn.sync()
    assert A[0, 0] == 5 and B[0, 0] == 0
    assert issubclass(wr.ConflictError, wr.Error) and issubclass(wr.ReadOnlyError, wr.Error)
    conn.close()
    old.close()
    db.close()


def test_writes_through_any_view_are_committed(db):
    c = db.open()
    A = c.create_array("A", (100, 10), "i4")
    a = A[3:5]
    a[:] = 1
    v = np.asarray(A)
    v[90, :] = 7
    c.commit()
    c2 = db.open()
    B = c2.root["A"]
    assert (B[3:5] == 1).all() and (B[90] == 7).all() and B[:3].sum() == 0 and B[5:90].sum() == 0


@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8",
                                   "bool", "complex64", "complex128", np.float32, "<f8", "int64"])
def test_every_element_type_round_trips(db, dtype):
    c = db.open()
    A = c.create_array("A", (7, 5), dtype)
    want = (np.arange(35).reshape(7, 5) % 3).astype(dtype)
    A[:] = want
    c.commit()
    c2 = db.open()
    B = c2.root["A"]
    assert B.dtype == np.dtype(dtype)
    assert np.array_equal(np.asarray(B), want)
    if np.dtype(dtype).kind != "c":
        s = B.stats()
        assert s["count"] == 35 and s["sum"] == pytest.approx(float(want.astype("f8").sum()))


def test_fortran_order_views_and_append(db):
    c = db.open()
    A = c.create_array("F", (4, 3), "f8", order="F")
    want = np.arange(12.).reshape(4, 3)
    A[:] = want
    v = np.asarray(A)
    assert v.flags.f_contiguous and np.array_equal(v, want)
    A.append(np.full((4, 2), 9.0))  # along the last axis
    assert A.shape == (4, 5) and (A[:, 3:] == 9).all() and np.array_equal(A[:, :3], want)
    c.commit()
    assert np.array_equal(db.open().root["F"][:, :3], want)


def test_numpy_indexing_forms(db):
    c = db.open()
    A = c.create_array("A", (20, 6, 4), "f8")
    want = np.arange(480.).reshape(20, 6, 4)
    A[...] = want
    for idx in [3, (3, 4), (3, 4, 1), (-1,), slice(2, 9, 3), (Ellipsis, 2), (slice(None), 0, Ellipsis),
                (None, 1), [1, 5, 7], (np.array([1, 2]), 0), want[:, 0, 0] > 100]:
        got, exp = A[idx], want[idx]
        assert np.array_equal(got, exp), idx
        assert np.shape(got) == np.shape(exp), idx
    assert isinstance(A[1, 2, 3], np.floating)
    # assignment broadcasts
    A[:, 0] = np.arange(4.)
    assert (A[7, 0] == np.arange(4.)).all()
    A[2] = 1
    assert (A[2] == 1).all()
    with pytest.raises(IndexError):
        A[20]


def test_views_of_an_empty_and_a_zero_d_array(db):
    c = db.open()
    E = c.create_array("E", (0, 3), "f8")
    assert np.asarray(E).shape == (0, 3) and len(E) == 0
    E.append(np.ones((2, 3)))
    assert E.shape == (2, 3) and E.stats()["count"] == 6
    Z = c.create_array("Z", (), "i8")
    Z[()] = 42
    c.commit()
    assert db.open().root["Z"][()] == 42


def test_root_mapping(db):
    c = db.open()
    c.create_array("a", 3, "f8")
    c.create_array("b", (2, 2), "u1")
    assert sorted(c.root) == ["a", "b"] and len(c.root) == 2
    assert c.root.get("zz") is None
    del c.root["a"]
    assert "a" not in c.root
    with pytest.raises(wr.NotFoundError):
        c.root["a"]
    c.commit()
    assert list(db.open().root.keys()) == ["b"]


def test_stats_is_out_of_core_and_matches_numpy(db):
    c = db.open()
    A = c.create_array("A", (3000, 1000), "f4")  # 12 MB: several blocks
    rng = np.random.default_rng(1)
    want = rng.standard_normal((3000, 1000)).astype("f4")
    A[:] = want
    c.commit()
    s = db.open().root["A"].stats()
    assert s["count"] == want.size
    assert s["sum"] == pytest.approx(float(want.astype("f8").sum()), rel=1e-9, abs=1e-6)
    assert s["min"] == float(want.min()) and s["max"] == float(want.max())
