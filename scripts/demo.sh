#!/usr/bin/env bash
# The README demo: starts the test lab (registry on 127.0.0.1 with a busybox base image),
# builds ocibuild, builds testdata/demo and pushes it to the lab registry, then reads the
# result back with skopeo.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/lab.sh up
eval "$(scripts/lab.sh env)"
reg="$OCIBUILD_TEST_REGISTRY"

cargo build --release --bin ocibuild
start=$(date +%s%N)
target/release/ocibuild build \
    --context testdata/demo --dockerfile testdata/demo/Dockerfile \
    --build-arg "BASE_REGISTRY=$reg" \
    --destination "$reg/demo:1" --insecure
end=$(date +%s%N)
echo "demo build took $(( (end - start) / 1000000 )) ms" >&2

skopeo inspect --tls-verify=false "docker://$reg/demo:1"
echo "pushed $reg/demo:1; try: skopeo inspect --tls-verify=false --config docker://$reg/demo:1" >&2
