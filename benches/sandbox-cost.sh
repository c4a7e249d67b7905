#!/usr/bin/env bash
# The cost of the RUN sandbox: times a build of 20 `RUN true` steps on the lab's busybox
# image with the release binary of BEFORE (a git revision, default the commit before the
# sandbox landed) and of the working tree, alternating, and prints the median build time
# and the median cost per RUN of each. The build context is made in a temp dir.
#
#   benches/sandbox-cost.sh [BEFORE_REV] [BUILDS]
set -euo pipefail
cd "$(dirname "$0")/.."
before_rev=${1:-1d79bda}
builds=${2:-11}

scripts/lab.sh up
eval "$(scripts/lab.sh env)"
reg="$OCIBUILD_TEST_REGISTRY"

cargo build --release --bin ocibuild >&2
before_tree=$(mktemp -d /var/tmp/ocibuild-before.XXXXXX)
ctx=$(mktemp -d)
trap 'git worktree remove --force "$before_tree" >/dev/null 2>&1 || rm -rf "$before_tree"; rm -rf "$ctx"' EXIT
git worktree add --detach "$before_tree" "$before_rev" >&2
(cd "$before_tree" && CARGO_TARGET_DIR="$PWD/../ocibuild-before-target" cargo build --release --bin ocibuild >&2)
before_bin="$before_tree/../ocibuild-before-target/release/ocibuild"

{
    echo "FROM $reg/busybox:latest"
    for i in $(seq 1 20); do echo "RUN true # $i"; done
} >"$ctx/Dockerfile"

# time_build BINARY -> milliseconds of one `build --no-push`
time_build() {
    local t0 t1
    t0=$(date +%s%N)
    "$1" build -v warn --context "$ctx" --dockerfile "$ctx/Dockerfile" --no-push >/dev/null
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }

time_build "$before_bin" >/dev/null # warm the page cache and the registry
before=() after=()
for _ in $(seq 1 "$builds"); do
    before+=("$(time_build "$before_bin")")
    after+=("$(time_build target/release/ocibuild)")
done
b=$(printf '%s\n' "${before[@]}" | median)
a=$(printf '%s\n' "${after[@]}" | median)
echo "20 RUN steps, median of $builds builds: before ($before_rev) $b ms, sandbox $a ms"
awk -v b="$b" -v a="$a" 'BEGIN { printf "per RUN: before %.1f ms, sandbox %.1f ms, cost %.1f ms\n", b / 20, a / 20, (a - b) / 20 }'
