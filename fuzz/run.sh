#!/usr/bin/env bash
# Build the fuzz targets with libFuzzer coverage instrumentation on stable
# Rust (what `cargo fuzz run -s none` does) and run each for $1 seconds.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-60}
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-../target-fuzz}
# --target keeps RUSTFLAGS away from build scripts (as cargo-fuzz does)
cargo build --release --bins --target x86_64-unknown-linux-gnu
BIN="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
mkdir -p corpus/filestorage_read corpus/pickle_decode corpus/cli_read corpus/npy_header
cp ../testdata/formats/*.fs corpus/filestorage_read/
cp ../testdata/formats/zbigarray*.fs corpus/cli_read/
printf "\x93NUMPY\x01\x00\x46\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }          \n" > corpus/npy_header/a.npy
for f in ../testdata/formats/*.fs; do tail -c +53 "$f" | head -c 300 > "corpus/pickle_decode/$(basename "$f").pkl"; done
"$BIN/filestorage_read" corpus/filestorage_read -max_total_time="$SECS" -max_len=8192
"$BIN/pickle_decode" corpus/pickle_decode -max_total_time="$SECS"
"$BIN/npy_header" corpus/npy_header -max_total_time="$SECS"
"$BIN/cli_read" corpus/cli_read -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=4096
