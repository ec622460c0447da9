"""Pack, log and time travel from Python, and the package over a real ZEO
server (zeo://), beside a Python ZODB ClientStorage client."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import wendelin_rs as wr


def test_pack_log_and_time_travel(tmp_path):
    path = str(tmp_path / "h.fs")
    db = wr.DB(path, ram_budget="64MiB")
    conn = db.open()
    A = conn.create_array("A", (4, 1000), "f8")
    tids = []
    for k in range(1, 4):
        A[:] = k
        conn.note(f"fill {k}")
        tids.append(conn.commit())
    log = db.log(limit=2)
    assert [e["tid"] for e in log] == [tids[2], tids[1]]
    assert log[0]["description"] == "fill 3"
    for k, t in enumerate(tids, 1):
        old = db.open(at=t)
        assert float(np.asarray(old.root["A"]).sum()) == 4000.0 * k
    # an ISO-8601 time far ahead is the newest snapshot
    assert float(np.asarray(db.open(at="2999-01-01T00:00:00").root["A"]).sum()) == 12000.0
    before = os.path.getsize(path)
    st = db.pack(before=tids[2])
    assert st["packed"] and st["size_after"] < before == st["size_before"]
    assert os.path.exists(path + ".old")
    with pytest.raises(wr.Error, match="packed"):
        db.open(at=tids[0])
    assert float(np.asarray(db.open(at=tids[2]).root["A"]).sum()) == 12000.0
    A[0, 0] = 5
    conn.commit()
    db.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def zeo_url(tmp_path):
    runzeo = Path(sys.executable).parent / "runzeo"
    if not runzeo.exists():
        pytest.fail("runzeo missing from the venv: run .ci/setup-python.sh (installs ZEO)")
    port = _free_port()
    p = subprocess.Popen([str(runzeo), "-a", f"127.0.0.1:{port}", "-f", str(tmp_path / "zeo.fs")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "runzeo did not start"
                time.sleep(0.1)
        yield f"zeo://127.0.0.1:{port}", port
    finally:
        p.kill()
        p.wait()


def test_arrays_over_zeo_beside_a_python_client(zeo_url):
    url, port = zeo_url
    db = wr.DB(url, ram_budget="64MiB")
    c1, c2 = db.open(), db.open()
    A = c1.create_array("A", (100, 300), "f8")
    A[:] = np.arange(30000.).reshape(100, 300)
    c1.commit()
    c2.sync()
    assert float(c2.root["A"][7, 5]) == 7 * 300 + 5
    # A Python ZODB ClientStorage client on the same server sees the commit
    # (the raw state: the array object and its file are there).
    code = f"""
import ZEO, transaction
db = ZEO.DB(('127.0.0.1', {port}))
root = db.open().root()
a = root['A']
print(type(a).__module__, sorted(root.keys()))
root['marker'] = 42
transaction.commit()
db.close()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'A'" in out.stdout
    # ... and its commit reaches us at the next boundary.
    c1.sync()
    assert "marker" in c1.root
    c1.close(); c2.close(); db.close()
