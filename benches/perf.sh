#!/usr/bin/env bash
# The performance benchmark of the performance issue: ocibuild with each snapshotter, buildah
# with --storage-driver overlay and vfs, in one run, on the same lab registry.
#
#   benches/perf.sh [RUNS] [SCENARIO...]   (default 3 runs of every scenario; prints
#                                          medians, ratios and every run's time)
#
# Scenarios (each pushes its result to the lab registry):
#   debian-cold    Debian minbase base, RUN dd 100 MB, RUN touch, COPY 2000 files,
#                  RUN rm -rf /usr/share/doc; nothing local (fresh layer store / storage).
#   debian-warm    the same build with the base already local, no layer cache.
#   many-files     a base of 100 000 small files, RUN touch, RUN echo, COPY one file;
#                  base local. The per-step time of the one-file RUNs is printed too.
#   one-changed    the Debian build with the layer cache on and one COPY source changed.
#   all-cached     the Debian build with the layer cache on and nothing changed.
# Columns: ocibuild (overlay), ocibuild (walk), buildah overlay, buildah vfs. Peak RSS of
# ocibuild is measured with /usr/bin/time. buildah runs as the project's peer:
# --isolation chroot --format docker --layers (cold runs use fresh storage; "no layer cache"
# runs use --no-cache). kaniko is not installable here; the issue's kaniko numbers were
# measured on another machine and are not reproduced by this script.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
shift || true
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(debian-cold debian-warm many-files one-changed all-cached)

scripts/lab.sh up >&2
eval "$(scripts/lab.sh env)"
reg="$OCIBUILD_TEST_REGISTRY"
cargo build --release --bin ocibuild >&2
bin=$PWD/target/release/ocibuild
work=$(mktemp -d /var/tmp/ocibuild-perf.XXXXXX)
cleanup() {
    for driver in overlay vfs; do
        buildah --root "$work/buildah-$driver/root" --runroot "$work/buildah-$driver/run" \
            --storage-driver "$driver" rm --all >/dev/null 2>&1 || true
        buildah --root "$work/buildah-$driver/root" --runroot "$work/buildah-$driver/run" \
            --storage-driver "$driver" rmi --all --force >/dev/null 2>&1 || true
    done
    umount -R "$work"/buildah-*/root/overlay 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

log() { echo "perf: $*" >&2; }

# --- fixtures and contexts --------------------------------------------------------------

# A base of 100 000 small files (busybox + 100 dirs x 1000 files), made with umoci and pushed
# with skopeo once per lab.
many_files_base() {
    local ref="$reg/perf/many-files:latest"
    if skopeo inspect --tls-verify=false --raw "docker://$ref" >/dev/null 2>&1; then
        echo "$ref"; return
    fi
    log "making the 100k-file base image (once per lab)"
    local dir="$work/many" layout="$work/many/layout" bundle="$work/many/bundle"
    mkdir -p "$dir"
    umoci init --layout "$layout" >&2
    umoci new --image "$layout:latest" >&2
    umoci unpack --image "$layout:latest" "$bundle" >&2
    mkdir -p "$bundle/rootfs/bin"
    cp /bin/busybox "$bundle/rootfs/bin/busybox"
    ln -s busybox "$bundle/rootfs/bin/sh"
    for d in $(seq -w 0 99); do
        mkdir -p "$bundle/rootfs/data/$d"
        (cd "$bundle/rootfs/data/$d" && seq -w 0 999 | xargs -n 200 touch && \
            for f in 000 500 999; do echo "$d/$f" > "$f"; done)
    done
    umoci repack --image "$layout:latest" "$bundle" >&2
    umoci config --image "$layout:latest" --os linux --architecture amd64 >&2
    skopeo copy --quiet --dest-tls-verify=false "oci:$layout:latest" "docker://$ref" >&2
    echo "$ref"
}

make_contexts() {
    local debian="$work/ctx/debian" many="$work/ctx/many"
    mkdir -p "$debian/files" "$many"
    cat > "$debian/Dockerfile" <<'EOF'
ARG BASE
FROM ${BASE}
RUN dd if=/dev/urandom of=/big bs=1M count=100 status=none
RUN touch /touched
COPY files/ /files/
RUN rm -rf /usr/share/doc
EOF
    for i in $(seq -w 0 1999); do echo "file $i" > "$debian/files/$i.txt"; done
    cat > "$many/Dockerfile" <<'EOF'
ARG BASE
FROM ${BASE}
RUN touch /one
RUN echo two > /two
COPY one /one-file
EOF
    echo one > "$many/one"
}

# --- runners ----------------------------------------------------------------------------

# ocibuild_run SNAPSHOTTER CONTEXT BASE STORE [extra flags...]: one timed build + push;
# prints "<seconds> <peak RSS KiB>" and keeps its log in $work/last-ocibuild.log.
ocibuild_run() {
    local snap=$1 ctx=$2 base=$3 store=$4; shift 4
    /usr/bin/time -f "%e %M" -o "$work/time" "$bin" build -v info --context "$ctx" \
        --dockerfile "$ctx/Dockerfile" --build-arg "BASE=$base" --snapshotter "$snap" \
        --layer-store "$store" --destination "$reg/perf/ocibuild-$snap:latest" "$@" \
        > "$work/last-ocibuild.log" 2>&1 || { cat "$work/last-ocibuild.log" >&2; exit 1; }
    cat "$work/time"
}

# buildah_run DRIVER CONTEXT BASE [extra bud flags...]: one timed build + push; prints seconds.
buildah_run() {
    local driver=$1 ctx=$2 base=$3; shift 3
    local b=(buildah --root "$work/buildah-$driver/root" --runroot "$work/buildah-$driver/run"
        --storage-driver "$driver")
    local t0 t1
    t0=$(date +%s%N)
    "${b[@]}" bud --quiet --isolation chroot --format docker --layers --tls-verify=false \
        --build-arg "BASE=$base" -f "$ctx/Dockerfile" -t "$reg/perf/buildah-$driver:latest" \
        "$@" "$ctx" >/dev/null
    "${b[@]}" push --quiet --tls-verify=false "$reg/perf/buildah-$driver:latest" >/dev/null
    t1=$(date +%s%N)
    echo "$(( (t1 - t0) / 1000000 ))" | awk '{ printf "%.2f\n", $1 / 1000 }'
}

buildah_reset() {
    local driver=$1
    buildah --root "$work/buildah-$driver/root" --runroot "$work/buildah-$driver/run" \
        --storage-driver "$driver" rmi --all --force >/dev/null 2>&1 || true
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# --- scenarios --------------------------------------------------------------------------

declare -A result rss
record() { result["$1/$2"]+="$3 "; [ -n "${4:-}" ] && rss["$1/$2"]+="$4 "; return 0; }

scenario_debian_cold() {
    local ctx="$work/ctx/debian" base="$reg/debian:bookworm"
    for _ in $(seq 1 "$runs"); do
        for snap in overlay walk; do
            rm -rf "$work/store-$snap"
            read -r s k < <(ocibuild_run "$snap" "$ctx" "$base" "$work/store-$snap")
            record debian-cold "ocibuild-$snap" "$s" "$k"
        done
        for driver in overlay vfs; do
            buildah_reset "$driver"
            record debian-cold "buildah-$driver" "$(buildah_run "$driver" "$ctx" "$base")"
        done
    done
}

scenario_debian_warm() {
    local ctx="$work/ctx/debian" base="$reg/debian:bookworm"
    if [ ! -d "$work/store-overlay" ]; then   # run alone: get the base local first
        for snap in overlay walk; do
            ocibuild_run "$snap" "$ctx" "$base" "$work/store-$snap" >/dev/null
        done
        for driver in overlay vfs; do buildah_run "$driver" "$ctx" "$base" >/dev/null; done
    fi
    for _ in $(seq 1 "$runs"); do
        for snap in overlay walk; do
            read -r s k < <(ocibuild_run "$snap" "$ctx" "$base" "$work/store-$snap")
            record debian-warm "ocibuild-$snap" "$s" "$k"
        done
        for driver in overlay vfs; do
            record debian-warm "buildah-$driver" "$(buildah_run "$driver" "$ctx" "$base" --no-cache)"
        done
    done
}

scenario_many_files() {
    local ctx="$work/ctx/many" base
    base=$(many_files_base)
    for snap in overlay walk; do   # warm the stores
        ocibuild_run "$snap" "$ctx" "$base" "$work/store-$snap" >/dev/null
    done
    for driver in overlay vfs; do buildah_run "$driver" "$ctx" "$base" >/dev/null; done
    for _ in $(seq 1 "$runs"); do
        for snap in overlay walk; do
            read -r s k < <(ocibuild_run "$snap" "$ctx" "$base" "$work/store-$snap")
            record many-files "ocibuild-$snap" "$s" "$k"
            log "many-files ocibuild-$snap step times: $(grep -oE -- '-> [^,]*, [0-9.]+s$' \
                "$work/last-ocibuild.log" | grep -oE '[0-9.]+s$' | tr '\n' ' ')"
        done
        for driver in overlay vfs; do
            record many-files "buildah-$driver" "$(buildah_run "$driver" "$ctx" "$base" --no-cache)"
        done
    done
}

# Layer cache on: one warm-up build, then RUNS builds each with one COPY source changed
# (one-changed) or nothing changed (all-cached).
scenario_cached() {
    local name=$1 change=$2 ctx="$work/ctx/debian" base="$reg/debian:bookworm"
    for snap in overlay walk; do
        ocibuild_run "$snap" "$ctx" "$base" "$work/store-$snap" \
            --cache --cache-dir "$work/cache-$snap" >/dev/null
    done
    for driver in overlay vfs; do buildah_run "$driver" "$ctx" "$base" >/dev/null; done
    for i in $(seq 1 "$runs"); do
        [ "$change" = yes ] && echo "changed $i $RANDOM" > "$ctx/files/0000.txt"
        for snap in overlay walk; do
            read -r s k < <(ocibuild_run "$snap" "$ctx" "$base" "$work/store-$snap" \
                --cache --cache-dir "$work/cache-$snap")
            record "$name" "ocibuild-$snap" "$s" "$k"
        done
        for driver in overlay vfs; do
            record "$name" "buildah-$driver" "$(buildah_run "$driver" "$ctx" "$base")"
        done
    done
}

make_contexts
for sc in "${scenarios[@]}"; do
    case $sc in
        debian-cold) scenario_debian_cold ;;
        debian-warm) scenario_debian_warm ;;
        many-files) scenario_many_files ;;
        one-changed) scenario_cached one-changed yes ;;
        all-cached) scenario_cached all-cached no ;;
        *) echo "perf.sh: unknown scenario $sc" >&2; exit 2 ;;
    esac
done

tools="ocibuild-overlay ocibuild-walk buildah-overlay buildah-vfs"
printf '\nmedians of %s runs (seconds; build + push)\n' "$runs"
printf '%-12s %17s %14s %16s %12s %22s %22s\n' scenario $tools "ocibuild/buildah-ovl" \
    "peak RSS overlay/walk"
for sc in "${scenarios[@]}"; do
    row=()
    for t in $tools; do row+=("$(tr ' ' '\n' <<<"${result[$sc/$t]}" | grep . | median)"); done
    ratio=$(awk -v a="${row[0]}" -v b="${row[2]}" 'BEGIN { printf "%.2f", a / b }')
    peak() { tr ' ' '\n' <<<"${rss[$sc/ocibuild-$1]}" | grep . | sort -n | tail -1; }
    printf '%-12s %17s %14s %16s %12s %22s %12s MB\n' "$sc" "${row[@]}" "$ratio" \
        "$(( $(peak overlay) / 1024 ))/$(( $(peak walk) / 1024 ))"
done
printf '\nevery run (seconds, in order)\n'
for sc in "${scenarios[@]}"; do
    for t in $tools; do printf '%-12s %-17s %s\n' "$sc" "$t" "${result[$sc/$t]}"; done
done
