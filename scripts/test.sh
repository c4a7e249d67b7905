#!/usr/bin/env bash
# Runs the whole test suite on a Debian 12 machine: installs and starts the test lab (apt
# packages, the CNCF distribution registries, base-image fixtures made without ocibuild),
# then checks formatting and lints and runs every test against the lab.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
scripts/lab.sh up
eval "$(scripts/lab.sh env)"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Everything but the side-by-side suite, then the suite with its per-case report and the
# `conformance: N cases, N identical, N differ` summary visible in the log.
cargo test --workspace 2>&1 -- --skip conformance_suite_matches_buildah
cargo test -p ocibuild-cli --test conformance 2>&1 -- --nocapture
