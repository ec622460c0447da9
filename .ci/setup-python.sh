#!/usr/bin/env bash
# Creates .venv with the Python packages the tests use (Python ZODB,
# BTrees, numpy, pytest, maturin, ZEO for runzeo) so tests can prove Python reads what we
# write and vice versa, then builds the wendelin_rs package (crates/python,
# pyproject.toml) and installs it into .venv.
# Idempotent: re-running with the venv present only checks the imports and
# rebuilds the package (cargo rebuilds only what changed).
# Run it under the build lock where several builds share a machine
# (flock /tmp/cargo.lock bash .ci/setup-python.sh): it runs cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import ZODB, BTrees, numpy, persistent, transaction, pytest, maturin, ZEO' 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet 'ZODB>=5.8' 'BTrees>=4.11' 'numpy>=1.24' pytest 'maturin>=1.5,<2' 'ZEO>=5.4'
fi
.venv/bin/python -c 'import ZODB, BTrees, numpy; print("python interop venv:", ZODB.__name__, numpy.__version__)'

# the package: a release wheel built from this checkout, installed over any older one
rm -rf target/wheels
PYO3_PYTHON="$PWD/.venv/bin/python" .venv/bin/maturin build --release --quiet \
    --interpreter .venv/bin/python --out target/wheels
.venv/bin/python -m pip install --quiet --force-reinstall --no-deps target/wheels/wendelin_rs-*.whl
.venv/bin/python -c 'import wendelin_rs; print("wendelin_rs installed:", wendelin_rs.__file__)'
