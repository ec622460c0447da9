"""Python bench: np.asarray(A).sum() over a 2 GiB f8 array through
wendelin_rs vs numpy.memmap(...).sum() over the same values in an .npy,
each in a fresh process with the page cache warm (every figure is the
best of a few runs of a fresh process): a writable connection with the
--budget and with the default budget (half of RAM; a writable connection
maps at most half its budget, the rest is copied), and a read-only
snapshot. Real wendelin.core `A[:].sum()`
when WENDELIN_CORE_PYTHON names a Python with it installed (see
../shared/tools/build-wendelin-core-peer.sh); skipped otherwise.

Write + commit: a new 2 GiB f8 array written from numpy values in slices
of 256 MiB (`A[lo:hi] = chunk`), one commit per slice, into a fresh
database, timed from the first slice to the last commit; ours vs real
wendelin.core (`ZBigArray`, `transaction.commit()`, with
WENDELIN_CORE_VIRTMEM=rw:uvmm), each the best of a few fresh processes.

    .venv/bin/python benches/python_bench.py [--gib 2] [--dir /tmp/wr-bench] [--budget 512MiB]
"""
import argparse
import json
import os
import subprocess
import sys
import time

GEN = r'''
import sys, numpy as np, wendelin_rs as wr
d, n, budget = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = n // 1024
db = wr.DB(d + "/data.fs", ram_budget=budget)
c = db.open()
A = c.create_array("A", (rows, 1024), "f8")
c.commit()
step = max(1, (256 << 20) // 8192)
mm = np.lib.format.open_memmap(d + "/data.npy", mode="w+", dtype="f8", shape=(rows, 1024))
for lo in range(0, rows, step):
    hi = min(rows, lo + step)
    chunk = np.arange(lo * 1024, hi * 1024, dtype="f8").reshape(-1, 1024) * 0.5
    A[lo:hi] = chunk
    mm[lo:hi] = chunk
    c.commit()
mm.flush()
del mm
print("generated")
'''

WR = r'''
import sys, time, numpy as np, wendelin_rs as wr
path, budget = sys.argv[1] + "/data.fs", sys.argv[2]
db = wr.DB(path) if budget == "default" else wr.DB(path, ram_budget=budget)
c = db.open(at=db.last_tid()) if sys.argv[3] == "snapshot" else db.open()
A = c.root["A"]
t = time.perf_counter(); s = np.asarray(A).sum(); dt = time.perf_counter() - t
print(dt, s)
'''

MM = r'''
import sys, time, numpy as np
a = np.load(sys.argv[1] + "/data.npy", mmap_mode="r")
t = time.perf_counter(); s = a.sum(); dt = time.perf_counter() - t
print(dt, s)
'''

WC = r'''
import sys, time
from ZODB.FileStorage import FileStorage
from ZODB import DB
st = FileStorage(sys.argv[1] + "/data.fs", read_only=True)
root = DB(st).open().root()
A = root["A"]
t = time.perf_counter(); s = A[:].sum(); dt = time.perf_counter() - t
print(dt, s)
'''

# Write + commit (the same slices and values on both sides).
WRITE_SLICE = 256 << 20

WR_WRITE = r'''
import sys, time, numpy as np, wendelin_rs as wr
path, n, budget, slice_bytes = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rows, step = n // 1024, max(1, int(sys.argv[4]) // 8192)
chunk = np.arange(step * 1024, dtype="f8").reshape(step, 1024) * 0.5
db = wr.DB(path, ram_budget=budget)
c = db.open()
A = c.create_array("A", (rows, 1024), "f8")
c.commit()
t = time.perf_counter()
for lo in range(0, rows, step):
    hi = min(rows, lo + step)
    A[lo:hi] = chunk[: hi - lo]
    c.commit()
dt = time.perf_counter() - t
print(dt, float(A[rows - 1, 1023]))
'''

WC_WRITE = r'''
import sys, time, numpy as np, transaction
from ZODB.FileStorage import FileStorage
from ZODB import DB
from wendelin.bigarray.array_zodb import ZBigArray
path, n, slice_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows, step = n // 1024, max(1, slice_bytes // 8192)
chunk = np.arange(step * 1024, dtype="f8").reshape(step, 1024) * 0.5
root = DB(FileStorage(path)).open().root()
root["A"] = A = ZBigArray((rows, 1024), "f8")
transaction.commit()
t = time.perf_counter()
for lo in range(0, rows, step):
    hi = min(rows, lo + step)
    A[lo:hi] = chunk[: hi - lo]
    transaction.commit()
dt = time.perf_counter() - t
print(dt, float(A[rows - 1, 1023]))
'''


def fresh_db(path):
    for ext in ("", ".index", ".lock", ".tmp"):
        if os.path.exists(path + ext):
            os.remove(path + ext)
    return path


def best_write(py, code, path, *args, reps=3, env=None):
    """Best time of `reps` fresh processes, each writing a fresh database."""
    runs = []
    for _ in range(reps):
        fresh_db(path)
        runs.append(run(py, code, path, *args, env=env))
    fresh_db(path)
    return min(r[0] for r in runs), runs[0][1]


def run(py, code, *args, env=None):
    out = subprocess.run(
        [py, "-c", code, *map(str, args)], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stdout}\n{out.stderr}")
    dt, s = out.stdout.split()[-2:]
    return float(dt), float(s)


def best(py, code, *args, reps=3):
    runs = [run(py, code, *args) for _ in range(reps)]
    return min(r[0] for r in runs), runs[0][1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--dir", default="/tmp/wr-python-bench")
    ap.add_argument("--budget", default="512MiB")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    n = int(a.gib * (1 << 30)) // 8 // 1024 * 1024
    nbytes = n * 8
    if not os.path.exists(a.dir + "/data.npy") or os.path.getsize(a.dir + "/data.npy") < nbytes:
        for f in ("data.fs", "data.fs.index", "data.fs.lock", "data.fs.tmp", "data.npy"):
            if os.path.exists(os.path.join(a.dir, f)):
                os.remove(os.path.join(a.dir, f))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", GEN, a.dir, str(n), a.budget], check=True)
        print(f"generated {nbytes / 2**30:.2f} GiB in {time.perf_counter() - t:.1f}s")
    want = 0.5 * n * (n - 1) / 2
    # warm the page cache for both files
    for f in ("data.fs", "data.npy"):
        with open(os.path.join(a.dir, f), "rb") as fh:
            while fh.read(64 << 20):
                pass
    res = {}
    res["memmap"] = best(sys.executable, MM, a.dir, reps=a.reps)
    res["wendelin_rs"] = best(sys.executable, WR, a.dir, a.budget, "conn", reps=a.reps)
    res["wendelin_rs_snapshot"] = best(sys.executable, WR, a.dir, a.budget, "snapshot", reps=a.reps)
    # A writable connection maps at most half its budget read-write (the
    # rest is copied): also with the default budget (half of RAM).
    res["wendelin_rs_default_budget"] = best(sys.executable, WR, a.dir, "default", "conn", reps=a.reps)
    wc = os.environ.get("WENDELIN_CORE_PYTHON")
    if wc:
        res["wendelin.core"] = best(wc, WC, a.dir, reps=a.reps)
    gib = nbytes / 2**30
    for k, (dt, s) in res.items():
        ok = "ok" if s == want else f"WRONG sum {s} != {want}"
        print(f"{k:26s} {dt:7.3f}s  {gib / dt:6.2f} GiB/s  {ok}")
    base = res["memmap"][0]
    for k in res:
        if k != "memmap":
            print(f"ratio {k} / memmap (throughput): {base / res[k][0]:.2f}x")
    # Write + commit, ours vs real wendelin.core.
    step_rows = max(1, WRITE_SLICE // 8192)
    last = 0.5 * ((n // 1024 - 1) % step_rows * 1024 + 1023)
    wres = {}
    wres["write wendelin_rs"] = best_write(
        sys.executable, WR_WRITE, a.dir + "/write-rs.fs", n, a.budget, WRITE_SLICE, reps=a.reps
    )
    if wc:
        env = dict(os.environ, WENDELIN_CORE_VIRTMEM="rw:uvmm")
        wres["write wendelin.core"] = best_write(
            wc, WC_WRITE, a.dir + "/write-wc.fs", n, WRITE_SLICE, reps=a.reps, env=env
        )
    for k, (dt, s) in wres.items():
        ok = "ok" if s == last else f"WRONG last value {s} != {last}"
        print(f"{k:22s} {dt:7.3f}s  {gib / dt:6.2f} GiB/s  {ok}  (+commit, {WRITE_SLICE >> 20} MiB per txn)")
    if "write wendelin.core" in wres:
        r = wres["write wendelin.core"][0] / wres["write wendelin_rs"][0]
        print(f"ratio write+commit wendelin_rs / wendelin.core (throughput): {r:.2f}x")
    res.update(wres)
    print(json.dumps({k: v[0] for k, v in res.items()}))


if __name__ == "__main__":
    main()
