#!/usr/bin/env bash
# Runs the whole test suite on a Debian 12 machine: installs and starts the test lab (apt
# packages, the CNCF distribution registries, base-image fixtures made without ocibuild),
# then checks formatting and lints and runs every test against the lab.
#
# Every phase runs even when an earlier one failed (`cargo test --no-fail-fast`, and the
# phases themselves), so one failure never hides the others; the script exits non-zero
# when any phase failed and lists them. Each phase prints a header and its wall time.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install Rust (https://rustup.rs) first" >&2
    exit 1
fi

failed=()
suite_start=$SECONDS
# Test output is also kept here so that the names of failed tests can be repeated at the end,
# where a CI log's tail shows them.
test_log=$(mktemp -t ocibuild-test-log.XXXXXX)
trap 'rm -f "$test_log"' EXIT

# logged COMMAND...: runs COMMAND, its output also appended to $test_log.
logged() {
    "$@" 2>&1 | tee -a "$test_log"
}

# phase NAME COMMAND...: runs COMMAND under a header, prints its wall time, records failure.
phase() {
    local name="$1" start=$SECONDS status
    shift
    printf '\n=== %s ===\n' "$name"
    "$@"
    status=$?
    printf '=== %s: %s in %ss ===\n' "$name" "$([ "$status" = 0 ] && echo ok || echo "FAILED ($status)")" \
        "$((SECONDS - start))"
    [ "$status" = 0 ] || failed+=("$name")
    return 0
}

phase lab scripts/lab.sh up
if [ "${#failed[@]}" -ne 0 ]; then
    echo "the test lab could not be set up: no test can run" >&2
    exit 1
fi
eval "$(scripts/lab.sh env)"

phase fmt cargo fmt --all -- --check
phase clippy cargo clippy --workspace --all-targets -- -D warnings
# Every crate packages for crates.io (metadata, versioned path dependencies, files). The
# packages are not compiled again (--no-verify): the same sources are built and tested below.
phase publish cargo publish --workspace --dry-run --no-verify --allow-dirty
# Everything but the side-by-side suite, then the suite with its per-case report and the
# `conformance: N cases, N identical, N differ` summary visible in the log. Tests that need
# the lab are marked `#[ignore = "needs the lab: ..."]` so that a plain `cargo test` without
# the lab lists them as ignored; here the lab is up and `--include-ignored` runs them too.
phase tests logged cargo test --workspace --no-fail-fast -- --include-ignored --skip conformance_suite_matches_buildah
# The embedding example: a FROM scratch build through the library API, no registry needed.
# Without `-p`, features resolve as for the whole workspace, so nothing is compiled again.
phase example cargo run --example embed
# The parser, word expansion and .dockerignore matcher under cargo-fuzz, 20 s per target.
phase fuzz scripts/fuzz.sh 20
phase conformance logged cargo test -p ocibuild-cli --no-fail-fast --test e2e conformance_suite_matches_buildah -- --include-ignored --nocapture
# The cases about owners, modes and stages again, ocibuild built as a normal user with
# subordinate ids (a rootless build, docs/rootless.md): the same images as buildah's.
rootless_cases=add-local-dir-and-chown,add-plain-file,copy-chmod,copy-chown-names,copy-chown-numeric
rootless_cases+=,copy-from-stage-hardlinks,copy-from-stage-keeps-owner,from-layered-base
rootless_cases+=,multistage-copy-from-index,multistage-copy-from-name,multistage-from-previous-stage
rootless_cases+=,run-special-modes,user-name,user-name-group,user-then-copy-owned-by-root,user-uid-gid
rootless_cases+=,user-uid-without-passwd-entry,workdir-created-owned-by-user,workdir-existing-keeps-owner
phase "conformance (rootless)" logged env OCIBUILD_CONFORMANCE_AS_USER="$OCIBUILD_TEST_ROOTLESS_USER" \
    OCIBUILD_CONFORMANCE_CASES="$rootless_cases" \
    cargo test -p ocibuild-cli --no-fail-fast --test e2e conformance_suite_matches_buildah -- --include-ignored --nocapture

printf '\n=== all phases: %ss ===\n' "$((SECONDS - suite_start))"
if [ "${#failed[@]}" -ne 0 ]; then
    # The failed tests by name, with the first lines of each one's panic message.
    grep -E '^test .* FAILED$' "$test_log" >&2
    grep -E -A4 '^---- .* stdout ----$' "$test_log" | cut -c1-300 | head -80 >&2
    echo "FAILED phases: ${failed[*]}" >&2
    exit 1
fi
echo "all phases passed"
