#!/usr/bin/env bash
# Layer compression throughput: single-threaded gzip and zstd (what layers used before)
# against the block-parallel gzip and multi-threaded zstd of ocibuild_snapshot::compress,
# on a ~100 MB tar of mixed content (the start of a tar of /usr: binaries, libraries,
# text, already-compressed files).
#
#   benches/compress.sh [SIZE_BYTES]
#
# Prints MB/s of input, output size, ratio and peak RSS for each compressor.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-100000000}

work=$(mktemp -d /var/tmp/ocibuild-compress-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
# `head` closes the pipe early on purpose; tar's complaint about that is expected.
(tar -cf - -C / usr 2>/dev/null || true) | head -c "$size" >"$work/usr.tar"

cargo build --release -p ocibuild-snapshot --example compress >&2
# Read the tar once so every run finds it in the page cache.
cat "$work/usr.tar" >/dev/null
target/release/examples/compress "$work/usr.tar"
