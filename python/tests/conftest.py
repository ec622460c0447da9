"""Fixtures of the wendelin_rs test suite: a fresh database per test, and
running Python code in a child process (for crash isolation, peak memory,
and Python ZODB with the wendelin stand-in classes)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "crates" / "testsupport" / "py"


@pytest.fixture
def path(tmp_path):
    """A path for a new database."""
    return str(tmp_path / "data.fs")


@pytest.fixture
def db(path):
    import wendelin_rs as wr
    d = wr.DB(path, ram_budget="64MiB")
    yield d
    d.close()


def run_child(code, *args, env=None, cwd=None, standins=False, timeout=600):
    """Run `code` in a fresh interpreter; returns stdout; fails the test
    with stdout and stderr when the child fails (a crash included)."""
    e = dict(os.environ)
    if standins:
        e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STANDINS), e.get("PYTHONPATH")]))
    if env:
        e.update(env)
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, env=e, cwd=cwd, timeout=timeout)
    assert p.returncode == 0, f"child exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p.stdout
