#!/usr/bin/env bash
# Times the layer cache on testdata/cache-bench against the lab registry:
#   (a) cold build, empty --cache-dir
#   (b) fully cached rebuild (nothing changed)
#   (c) rebuild after changing the content of one small source file (src/main.sh)
# each RUNS times (default 3), and prints the medians, the ratios cold/cached and
# cold/one-changed, and the CACHE hit/miss counts ocibuild reported.
#
#   benches/cache-bench.sh [RUNS]
#
# Self-contained: starts the lab, builds ocibuild in release mode, and generates the
# assets (4 x 1 MiB of deterministic pseudo-random bytes plus a text file) into a temporary
# copy of the context.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}

scripts/lab.sh up >&2
eval "$(scripts/lab.sh env)"
reg="$OCIBUILD_TEST_REGISTRY"
cargo build --release --bin ocibuild >&2
bin=target/release/ocibuild

work=$(mktemp -d /var/tmp/ocibuild-cache-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
ctx="$work/ctx"
cp -r testdata/cache-bench "$ctx"
mkdir -p "$ctx/assets"
for i in 1 2 3 4; do
    # AES-CTR of zeros under a fixed key: the same bytes on every run and machine.
    head -c 1048576 /dev/zero |
        openssl enc -aes-128-ctr -nosalt -K "0000000000000000000000000000000$i" \
            -iv 00000000000000000000000000000000 >"$ctx/assets/blob$i.bin"
done
seq 1 100000 | sed 's/^/asset line /' >"$ctx/assets/index.txt"
repo="$reg/cache-bench-$$"

now() { date +%s%N; }
# build NAME CACHE_DIR: one timed build; appends "ms hits misses" to $work/NAME.
build() {
    local name=$1 cache=$2 t0 t1 log="$work/$1.log"
    t0=$(now)
    "$bin" build --context "$ctx" --dockerfile "$ctx/Dockerfile" \
        --build-arg "BASE_REGISTRY=$reg" --destination "$repo:$name" \
        --cache --cache-dir "$cache" >"$log" 2>&1 || {
        cat "$log" >&2
        exit 1
    }
    t1=$(now)
    local counts
    counts=$(sed -n 's/^cache: \([0-9]*\) hits, \([0-9]*\) misses$/\1 \2/p' "$log")
    echo "$(((t1 - t0) / 1000000)) $counts" >>"$work/$name"
    printf '%-8s %6d ms   cache: %s hits, %s misses\n' "$name" $(((t1 - t0) / 1000000)) $counts >&2
}
median() { cut -d' ' -f1 "$work/$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
counts() { sort -u <(cut -d' ' -f2- "$work/$1") | sed 's/^\([0-9]*\) \([0-9]*\)$/\1 hits, \2 misses/' | paste -sd';'; }

for r in $(seq 1 "$runs"); do
    build cold "$work/cache-cold-$r"
done
cache="$work/cache"
build warmup "$cache"
for r in $(seq 1 "$runs"); do
    build cached "$cache"
done
for r in $(seq 1 "$runs"); do
    echo "# change $r" >>"$ctx/src/main.sh"
    build changed "$cache"
done

cold=$(median cold) cached=$(median cached) changed=$(median changed)
echo
echo "ocibuild layer cache, testdata/cache-bench, median of $runs runs ($(nproc) cores)"
printf '  (a) cold, empty cache dir   %6d ms   CACHE %s\n' "$cold" "$(counts cold)"
printf '  (b) fully cached rebuild    %6d ms   CACHE %s\n' "$cached" "$(counts cached)"
printf '  (c) one source file changed %6d ms   CACHE %s\n' "$changed" "$(counts changed)"
awk -v a="$cold" -v b="$cached" -v c="$changed" 'BEGIN {
    printf "  cold/cached      %.1fx\n  cold/one-changed %.1fx\n", a / (b > 0 ? b : 1), a / (c > 0 ? c : 1) }'
