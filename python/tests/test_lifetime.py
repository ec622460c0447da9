"""Views outlive their objects: the array, its connection, the database.
Each case runs in a child process, so a crash fails the test instead of
killing the suite."""
from conftest import run_child

CASES = r'''
import gc, sys
import numpy as np, wendelin_rs as wr
path = sys.argv[1]
db = wr.DB(path, ram_budget="32MiB")
c = db.open()
A = c.create_array("A", (4000, 1000), "f8")   # 32 MB: 16 blocks
A[:] = 1.0
c.commit()

# a view that outlives its array object: blocks not yet loaded still load
c2 = db.open()
v = c2.root["A"][3000:]
w = np.asarray(c2.root["A"])
del c2
gc.collect()
assert v.sum() == 1000 * 1000 and w[0].sum() == 1000

# ... its connection's close and the database's close
c3 = db.open()
x = c3.root["A"][:]
y = x[::7]
c3.close()
db.close()
del c3, db
gc.collect()
assert x.sum() == 4_000_000 and y.shape == (572, 1000)
x[0, 0] = 2.0          # writable view of a closed connection: memory stays valid
assert x[0, 0] == 2.0

# the base object is the mapping
b = v
while isinstance(b, np.ndarray):
    b = b.base
assert type(b).__name__ == "_Mapping", type(b)
del v, w, x, y, b, A, c
gc.collect()

# the same database opened twice in one process
d1, d2 = wr.DB(path), wr.DB(path)
k1, k2 = d1.open(), d2.open()
k1.root["A"][0, 0] = 9.0
k1.commit()
k2.sync()
assert k2.root["A"][0, 0] == 9.0
print("OK")
'''


def test_views_survive_their_array_connection_and_database(path):
    assert "OK" in run_child(CASES, path)
