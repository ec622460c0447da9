#!/usr/bin/env bash
# Builds the real Nexedi wendelin.core 0.13 (PyPI, 2019; classic SIGSEGV
# virtual memory, no wcfs) in a venv, so the interop tests run against the
# real thing and not only against the stand-ins of crates/testsupport/py.
#
# Where: $WENDELIN_CORE_VENV, else .wendelin-core/ at the workspace root
# (the tests look there, or at $WENDELIN_CORE_PYTHON). Idempotent: a venv
# that already imports wendelin.core 0.13 is kept. About 25 s from scratch.
# Needs PyPI, gcc and a CPython 3.7 (pyenv's 3.7.16 on these machines).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${WENDELIN_CORE_VENV:-$PWD/.wendelin-core}
export WENDELIN_CORE_VIRTMEM=rw:uvmm # 0.13 is uvmm-only
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
    'import wendelin.bigarray.array_zodb, numpy, ZODB, pkg_resources as p; assert p.get_distribution("wendelin.core").version == "0.13"' 2>/dev/null; then
    echo "wendelin.core 0.13 ready: $VENV/bin/python"
    exit 0
fi
# 0.13's C extension pokes PyThreadState->frame / exc_type: it does not compile on
# Python >= 3.11, so use pyenv's CPython 3.7 (0.13 declares 2.7/3.6/3.7).
PY37=${PY37:-$(pyenv root 2>/dev/null || echo /root/.pyenv)/versions/3.7.16/bin/python}
"$PY37" -c 'import sys; assert sys.version_info[:2] == (3, 7)'
command -v gcc >/dev/null || { apt-get update && apt-get install -y gcc make; }
# Fresh venv; venv's setuptools 47 still ships pkg_resources, which setup.py imports
# (with pip's default build isolation the newest setuptools lacks it -> build fails).
rm -rf "$VENV"
"$PY37" -m venv "$VENV"
"$VENV/bin/pip" install -q wheel==0.42.0
# wendelin.core + its deps, pinned to the set that passed the upstream tests.
# ZODB3 3.11 is the metapackage 0.13 requires; it pulls in ZODB/ZEO/BTrees/...
# zope.interface builds from sdist (gcc); the rest are cp37 manylinux wheels.
"$VENV/bin/pip" install -q --no-build-isolation \
  wendelin.core==0.13 ZODB3==3.11.0 ZODB==6.0.1 ZEO==6.0.0 BTrees==5.2 persistent==5.2 \
  transaction==4.0 zodbpickle==3.3 zope.interface==6.4.post2 ZConfig==4.1 \
  zc.lockfile==3.0.post1 zdaemon==5.1 numpy==1.21.6 six==1.17.0 psutil==7.2.2 \
  cffi==1.15.1 pycparser==2.21
# Smoke test: ZBigArray (1000,300) f8 = arange, commit, reopen in a new process.
T=$(mktemp -d /tmp/wendelin-core-smoke.XXXX)
"$VENV/bin/python" - "$T/db.fs" <<'PY'
import sys, numpy as np, transaction; from ZODB import DB; from ZODB.FileStorage import FileStorage
from wendelin.bigarray.array_zodb import ZBigArray
db = DB(FileStorage(sys.argv[1])); c = db.open(); c.root()['A'] = A = ZBigArray((1000, 300), np.float64)
transaction.commit(); A[:] = np.arange(300000.).reshape(1000, 300); transaction.commit(); c.close(); db.close()
PY
"$VENV/bin/python" - "$T/db.fs" <<'PY'
import sys; from ZODB import DB; from ZODB.FileStorage import FileStorage
db = DB(FileStorage(sys.argv[1], read_only=True)); A = db.open().root()['A']; s = float(A[:].sum())
assert A.shape == (1000, 300) and s == 44999850000.0, s
PY
rm -rf "$T"
echo "wendelin.core 0.13 ready: $VENV/bin/python"
