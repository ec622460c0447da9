"""Threads: the GIL is released for commit, stats and loads; a thread
faulting while holding the GIL does not deadlock; other Python threads run."""
import threading
import time

import numpy as np

import wendelin_rs as wr


def test_threads_read_and_write_at_once(db):
    c = db.open()
    A = c.create_array("A", (4000, 1000), "f8")  # 32 MB
    A[:] = 1.0
    c.commit()
    errors, sums = [], []

    def reader():
        try:
            cc = db.open()
            for _ in range(3):
                sums.append(float(np.asarray(cc.root["A"]).sum()))
                cc.sync()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def writer(lo):
        try:
            for _ in range(3):
                with db.transaction() as cc:
                    cc.root["A"][lo:lo + 100] = 1.0  # same values: sums stay exact
        except wr.ConflictError:
            pass
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=reader) for _ in range(3)]
    ts += [threading.Thread(target=writer, args=(lo,)) for lo in (0, 2000)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not any(t.is_alive() for t in ts), "deadlock"
    assert not errors, errors
    assert sums and all(s == 4e6 for s in sums)


def test_other_python_threads_run_during_stats_and_faults(db):
    c = db.open()
    A = c.create_array("A", (8000, 1000), "f8")  # 64 MB, budget 64 MiB
    A[:] = 2.0
    c.commit()
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        c2 = db.open()
        B = c2.root["A"]
        s = B.stats()  # GIL released
        total = np.asarray(B).sum()  # faults while holding the GIL (numpy releases it too)
    finally:
        stop.set()
        t.join(10)
    assert s["sum"] == 16e6 and total == 16e6
    assert len(ticks) > 5


def test_commit_releases_the_gil(db):
    c = db.open()
    A = c.create_array("A", (8000, 1000), "f8")
    A[:] = 3.0
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(1)
            time.sleep(0.0005)

    t = threading.Thread(target=ticker)
    t.start()
    n0 = len(ticks)
    c.commit()
    n1 = len(ticks)
    done.set()
    t.join(10)
    assert n1 > n0  # the ticker ran while commit stored 64 MB
