#!/usr/bin/env bash
# Times ocibuild and buildah building the same Dockerfile against the same lab registry, in
# one run, and pushes both results so they can be compared.
#
#   benches/side-by-side.sh [CONTEXT_DIR] [RUNS]
#
# CONTEXT_DIR defaults to testdata/demo; its Dockerfile may use ARG BASE_REGISTRY, which is
# set to the lab registry. buildah runs as the peer is configured for this project:
# --isolation chroot --storage-driver vfs --format docker --layers.
set -euo pipefail
cd "$(dirname "$0")/.."
context=${1:-testdata/demo}
runs=${2:-3}

scripts/lab.sh up
eval "$(scripts/lab.sh env)"
reg="$OCIBUILD_TEST_REGISTRY"
cargo build --release --bin ocibuild >&2
storage=$(mktemp -d /var/tmp/ocibuild-bench-buildah.XXXXXX)
trap 'buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs rm --all >/dev/null 2>&1 || true; rm -rf "$storage"' EXIT

ms() { echo $(( ($2 - $1) / 1000000 )); }

for run in $(seq 1 "$runs"); do
    t0=$(date +%s%N)
    target/release/ocibuild build -v warn --context "$context" --dockerfile "$context/Dockerfile" \
        --build-arg "BASE_REGISTRY=$reg" --destination "$reg/bench-ocibuild:latest" --insecure
    t1=$(date +%s%N)
    buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs bud \
        --quiet --isolation chroot --format docker --layers --tls-verify=false \
        --build-arg "BASE_REGISTRY=$reg" -f "$context/Dockerfile" -t "$reg/bench-buildah:latest" \
        "$context" >/dev/null
    buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs push \
        --quiet --tls-verify=false "$reg/bench-buildah:latest" >/dev/null
    t2=$(date +%s%N)
    echo "run $run: ocibuild $(ms "$t0" "$t1") ms, buildah $(ms "$t1" "$t2") ms (build + push, $context)"
    # Later runs of buildah reuse its layer cache (--layers); ocibuild has no cache yet, so
    # only run 1 compares cold builds.
done
