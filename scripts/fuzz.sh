#!/usr/bin/env bash
# Fuzzes the Dockerfile parser, word expansion and the .dockerignore matcher with
# cargo-fuzz (libFuzzer), each target for SECONDS seconds (default 20), starting from a
# seed corpus made of the Dockerfiles and .dockerignore files under testdata/.
#
#   scripts/fuzz.sh [SECONDS]
#
# Installs cargo-fuzz when it is missing. Only a stable toolchain is needed: cargo-fuzz
# passes -Z flags, which RUSTC_BOOTSTRAP=1 lets stable rustc accept. Without the
# AddressSanitizer runtime the targets are built with --sanitizer none (Rust code is
# memory-safe; the fuzzing still finds panics, stack overflows, hangs and blow-ups).
# Fails when any target finds a crash, a timeout (-timeout=5) or an input needing more
# than 2 GiB (-rss_limit_mb=2048); the input is left in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
targets=(dockerfile expand dockerignore)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

# seed_corpus: fuzz/corpus/<target>/ from testdata (files named by content hash, so
# re-running adds nothing twice and keeps what earlier runs found).
seed_corpus() {
    local dir=fuzz/corpus
    mkdir -p "$dir/dockerfile" "$dir/expand" "$dir/dockerignore"
    local f name
    while IFS= read -r -d '' f; do
        name=$(sha1sum "$f" | cut -c1-40)
        cp "$f" "$dir/dockerfile/$name"
        # expand: each line with a `$`, after a first byte choosing the escape (0: `\`).
        { grep -m 50 -F '$' "$f" || true; } | while IFS= read -r line; do
            printf '\0%s' "$line" >"$dir/expand/$(printf '%s' "$line" | sha1sum | cut -c1-40)"
        done
    done < <(find testdata -type f -name '*Dockerfile*' ! -name '*.dockerignore' -print0)
    while IFS= read -r -d '' f; do
        name=$(sha1sum "$f" | cut -c1-40)
        # dockerignore: the rules, a NUL, then paths to match.
        { cat "$f"; printf '\0a/b/c\nnode_modules/x\n.git/HEAD\nsrc/main.rs\n'; } \
            >"$dir/dockerignore/$name"
    done < <(find testdata -type f -name '*.dockerignore' -print0)
}

# sanitizer: address when its runtime links, else none.
sanitizer() {
    if (cd fuzz && cargo fuzz build -O dockerignore >/dev/null 2>&1); then
        echo address
    else
        echo none
    fi
}

seed_corpus
san=$(sanitizer)
echo "fuzzing ${targets[*]} for ${seconds}s each (sanitizer: $san)"
failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/artifacts/$target"
    echo "=== fuzz $target ==="
    if ! (cd fuzz && cargo fuzz run -O --sanitizer "$san" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1); then
        failed+=("$target")
    fi
done
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzzing found problems in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzzing found nothing"
