#!/usr/bin/env bash
# Builds a statically linked `ocibuild` for the executor images (deploy/Dockerfile*).
#
#   scripts/build-static.sh        prints the path of the static binary on stdout
#
# OCIBUILD_STATIC_PROFILE=dev builds the unoptimised binary (what the test suite uses, to
# stay fast); the default is the release profile, for the published images.
#
# Only the gnu toolchain is needed: glibc is linked statically with +crt-static. Host
# names are resolved by reqwest's pure-Rust resolver (hickory-dns, reading /etc/resolv.conf
# and /etc/hosts), never by glibc's getaddrinfo, which cannot load NSS modules in a static
# binary. The build goes to its own target directory (target/static by default, or
# $OCIBUILD_STATIC_TARGET_DIR) so that it does not invalidate the normal build.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
TARGET_DIR="${OCIBUILD_STATIC_TARGET_DIR:-$PWD/target/static}"
PROFILE="${OCIBUILD_STATIC_PROFILE:-release}"
case "$PROFILE" in
dev) PROFILE_DIR=debug ;;
*) PROFILE_DIR="$PROFILE" ;;
esac

log() { printf 'build-static: %s\n' "$*" >&2; }
die() {
  printf 'build-static: error: %s\n' "$*" >&2
  exit 1
}

command -v cargo >/dev/null 2>&1 || die "cargo is not installed"
command -v file >/dev/null 2>&1 || die "file is not installed (apt-get install file)"

log "cargo build --profile $PROFILE --target $TARGET --bin ocibuild (CARGO_TARGET_DIR=$TARGET_DIR)"
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
  CARGO_TARGET_DIR="$TARGET_DIR" \
  cargo build --profile "$PROFILE" --locked --target "$TARGET" --bin ocibuild >&2

BIN="$TARGET_DIR/$TARGET/$PROFILE_DIR/ocibuild"
[ -x "$BIN" ] || die "$BIN was not built"

desc="$(file -b "$BIN")"
log "file: $desc"
case "$desc" in
*"statically linked"* | *"static-pie linked"*) ;;
*) die "$BIN is not statically linked: $desc" ;;
esac
# ldd exits non-zero for a static binary and says so; any "=>" line is a shared library.
ldd_out="$(ldd "$BIN" 2>&1 || true)"
if printf '%s\n' "$ldd_out" | grep -q '=>'; then
  die "$BIN needs shared libraries: $ldd_out"
fi
log "ldd: $(printf '%s' "$ldd_out" | head -n 1 | sed 's/^[[:space:]]*//')"
"$BIN" --version >/dev/null || die "$BIN does not run"
echo "$BIN"
