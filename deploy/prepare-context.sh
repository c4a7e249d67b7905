#!/usr/bin/env bash
# Assembles the build context of the executor images (deploy/Dockerfile and
# deploy/Dockerfile.debug):
#
#   DIR/executor                 the static ocibuild binary
#   DIR/links/warmer             a symlink to `executor`: becomes /kaniko/warmer (kaniko's
#                                warmer; the binary acts as the warmer under that name)
#   DIR/ca-certificates.crt      the host's Debian CA bundle (package ca-certificates)
#   DIR/.docker/                 empty; becomes /kaniko/.docker
#
# usage: deploy/prepare-context.sh [BINARY [DIR]]
#   BINARY  a statically linked ocibuild (default: built by scripts/build-static.sh)
#   DIR     the context directory, emptied first (default: target/executor-context)
# Prints DIR on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

die() {
  printf 'prepare-context: error: %s\n' "$*" >&2
  exit 1
}

BIN="${1:-}"
DIR="${2:-$PWD/target/executor-context}"
if [ -z "$BIN" ]; then
  BIN="$(scripts/build-static.sh)"
fi
[ -x "$BIN" ] || die "$BIN is not an executable"
case "$(file -b "$BIN")" in
*"statically linked"* | *"static-pie linked"*) ;;
*) die "$BIN is not statically linked (build it with scripts/build-static.sh): $(file -b "$BIN")" ;;
esac
[ -s "$CA_BUNDLE" ] || die "$CA_BUNDLE is missing: apt-get install ca-certificates"
grep -q -- '-----BEGIN CERTIFICATE-----' "$CA_BUNDLE" || die "$CA_BUNDLE holds no PEM certificate"

rm -rf "$DIR"
mkdir -p "$DIR/.docker"
install -m 0755 "$BIN" "$DIR/executor"
mkdir -p "$DIR/links"
ln -s executor "$DIR/links/warmer"
install -m 0644 "$CA_BUNDLE" "$DIR/ca-certificates.crt"
printf 'prepare-context: %s: executor (%s bytes), links/warmer -> executor, ca-certificates.crt (%s certificates), .docker/\n' \
  "$DIR" "$(stat -c %s "$DIR/executor")" "$(grep -c -- '-----BEGIN CERTIFICATE-----' "$DIR/ca-certificates.crt")" >&2
echo "$DIR"
