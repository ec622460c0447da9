#!/usr/bin/env bash
# Creates .venv with the Python packages the interop tests use (Python ZODB,
# BTrees, numpy, ZEO: runzeo for the ZEO tests) so tests can prove Python reads what we write and vice versa.
# Idempotent: re-running with the venv present only checks the imports.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import ZODB, BTrees, numpy, persistent, transaction, ZEO' 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet 'ZODB>=5.8' 'BTrees>=4.11' 'numpy>=1.24' 'ZEO>=5.4'
fi
.venv/bin/python -c 'import ZODB, BTrees, numpy; print("python interop venv:", ZODB.__name__, numpy.__version__)'
