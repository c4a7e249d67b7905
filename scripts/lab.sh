#!/usr/bin/env bash
# ocibuild test lab: local CNCF distribution registries plus base-image fixtures.
#
#   scripts/lab.sh up     install tools, start registries, push fixtures (idempotent)
#   scripts/lab.sh env    print `export ...` lines; runs `up` first when needed
#                         usage: eval "$(scripts/lab.sh env)"
#   scripts/lab.sh down   stop all registries and emulators (data is kept in the state dir)
#
# State lives in ${OCIBUILD_LAB_DIR:-/tmp/ocibuild-lab}. Progress goes to stderr;
# stdout is reserved for `env`.
#
# Users (rootless tests): ocibuild-rootless with subordinate ids (65536) in /etc/subuid
# and /etc/subgid, ocibuild-nosubid without (OCIBUILD_TEST_ROOTLESS_USER / _NOSUBID_USER).
#
# Registries:
#   plain  127.0.0.1:<port>   anonymous, delete enabled, fixtures busybox:latest and
#                             busybox-multi:latest (OCI index: linux/amd64 + fake linux/arm64),
#                             busybox-docker:latest (the same image with Docker schema 2 types),
#                             layered:latest (busybox + hard links, setuid, owners, whiteouts),
#                             debian:bookworm (a debootstrap --variant=minbase root, one layer)
#   auth   127.0.0.1:<port2>  htpasswd basic auth, user ocitest / ocitest-pw
#   tls    127.0.0.1:<port3>  https with a certificate of the lab CA (certs/ca.pem), anonymous
#   mtls   127.0.0.1:<port4>  https that requires a client certificate signed by the lab CA
#                             (certs/client.pem + certs/client-key.pem)
#
# The lab CA, the server certificate (SAN IP:127.0.0.1, DNS:localhost) and the client
# certificate are made with openssl in $LAB_DIR/certs once and reused afterwards.
#
# S3 (build contexts from s3://): moto_server (PyPI moto[server], in a venv under the state
# dir) on http://127.0.0.1:<port5> with IAM authentication on, so signatures are checked;
# one IAM user with an access key allowed everything (OCIBUILD_TEST_S3_* in the env file)
# and one role it may assume, also with a web identity token (OCIBUILD_TEST_S3_ROLE_ARN).
#
# Azure Blob Storage (build contexts from https://ACCOUNT.blob.core.windows.net/...): azurite
# (npm azurite, installed under the state dir; nodejs and npm from apt when missing), blob
# service only, on http://127.0.0.1:<port6>; its account is the well-known devstoreaccount1
# (OCIBUILD_TEST_AZURITE is the blob endpoint http://127.0.0.1:<port6>/devstoreaccount1).
#
# Google Cloud Storage (build contexts from gs://): gcp-storage-emulator (PyPI, in the same
# venv as moto), in memory, on http://127.0.0.1:<port7> (OCIBUILD_TEST_GCS, the value for
# STORAGE_EMULATOR_HOST).
set -euo pipefail

LAB_DIR="${OCIBUILD_LAB_DIR:-/tmp/ocibuild-lab}"
AUTH_USER=ocitest
AUTH_PASSWORD=ocitest-pw
PACKAGES=(docker-registry skopeo umoci busybox-static debootstrap jq apache2-utils buildah curl openssl git python3-venv file ca-certificates gcc libc6-dev golang-go uidmap)
ENV_FILE="$LAB_DIR/env"
ROOTLESS_USER=ocibuild-rootless
ROOTLESS_RANGE=300000-365535
NOSUBID_USER=ocibuild-nosubid
CERTS="$LAB_DIR/certs"

log() { printf 'lab: %s\n' "$*" >&2; }
die() {
  printf 'lab: error: %s\n' "$*" >&2
  exit 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    if ! dpkg -s "$p" >/dev/null 2>&1; then
      missing+=("$p")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "packages present: ${PACKAGES[*]}"
    return
  fi
  log "installing missing packages: ${missing[*]}"
  as_root apt-get update >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
}

# port_in_use PORT -> 0 when something listens on 127.0.0.1:PORT
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port START [EXCLUDE] -> first free port >= START (and != EXCLUDE)
free_port() {
  local p="$1" exclude="${2:-}"
  while [ "$p" -lt 65000 ]; do
    if [ "$p" != "$exclude" ] && ! port_in_use "$p"; then
      echo "$p"
      return 0
    fi
    p=$((p + 1))
  done
  die "no free port found from $1 upward"
}

# http_status URL [CURL_ARGS...] -> prints HTTP status code ("000" when unreachable)
http_status() {
  local url="$1"
  shift
  curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null || true
}

# registry_status NAME ADDR -> HTTP status of NAME's /v2/ (https with the lab CA and,
# for mtls, the client certificate for the TLS registries)
registry_status() {
  case "$1" in
  tls) http_status "https://$2/v2/" --cacert "$CERTS/ca.pem" ;;
  mtls) http_status "https://$2/v2/" --cacert "$CERTS/ca.pem" \
    --cert "$CERTS/client.pem" --key "$CERTS/client-key.pem" ;;
  *) http_status "http://$2/v2/" ;;
  esac
}

# cert_valid FILE -> 0 when FILE is a certificate valid for at least another 30 days
cert_valid() {
  [ -s "$1" ] && openssl x509 -in "$1" -noout -checkend 2592000 >/dev/null 2>&1
}

# make_certs: lab CA, server certificate (127.0.0.1 / localhost) and client certificate,
# all signed by the CA; kept when present and valid.
make_certs() {
  local f ok=1
  for f in ca.pem ca-key.pem server.pem server-key.pem client.pem client-key.pem; do
    [ -s "$CERTS/$f" ] || ok=0
  done
  if [ "$ok" = 1 ] && cert_valid "$CERTS/ca.pem" && cert_valid "$CERTS/server.pem" &&
    cert_valid "$CERTS/client.pem" &&
    openssl verify -CAfile "$CERTS/ca.pem" "$CERTS/server.pem" "$CERTS/client.pem" >/dev/null 2>&1; then
    log "TLS certificates present in $CERTS"
    return 0
  fi
  log "making lab CA, server and client certificates in $CERTS"
  local tmp="$CERTS.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca-key.pem"
  openssl req -x509 -new -sha256 -days 3650 -key "$tmp/ca-key.pem" \
    -subj "/CN=ocibuild lab CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$tmp/ca.pem"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$tmp/server.ext"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=clientAuth" >"$tmp/client.ext"
  for f in server client; do
    openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/$f-key.pem.ec"
    # PKCS#8 keys: accepted by curl, Go and rustls alike.
    openssl pkcs8 -topk8 -nocrypt -in "$tmp/$f-key.pem.ec" -out "$tmp/$f-key.pem"
    rm -f "$tmp/$f-key.pem.ec"
    openssl req -new -sha256 -key "$tmp/$f-key.pem" -subj "/CN=ocibuild lab $f" -out "$tmp/$f.csr"
    openssl x509 -req -sha256 -days 3650 -in "$tmp/$f.csr" -CA "$tmp/ca.pem" \
      -CAkey "$tmp/ca-key.pem" -set_serial "0x$(openssl rand -hex 16)" \
      -extfile "$tmp/$f.ext" -out "$tmp/$f.pem" 2>/dev/null
    rm -f "$tmp/$f.csr" "$tmp/$f.ext"
  done
  chmod 0644 "$tmp"/*.pem
  rm -rf "$CERTS"
  mv "$tmp" "$CERTS"
}

# registry_alive NAME -> 0 when the pid in NAME.pid is alive and /v2/ answers
registry_alive() {
  local name="$1" dir="$LAB_DIR/$1" pid addr code
  [ -f "$dir/pid" ] && [ -f "$dir/addr" ] || return 1
  pid="$(cat "$dir/pid")"
  addr="$(cat "$dir/addr")"
  kill -0 "$pid" 2>/dev/null || return 1
  code="$(registry_status "$name" "$addr")"
  [ "$code" = 200 ] || [ "$code" = 401 ] || {
    log "$name registry (pid $pid) does not answer on $addr (status $code)"
    return 1
  }
}

stop_registry() {
  local name="$1" dir="$LAB_DIR/$1" pid i
  [ -f "$dir/pid" ] || return 0
  pid="$(cat "$dir/pid")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name registry (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$dir/pid"
}

# start_registry NAME START_PORT EXCLUDE_PORT AUTH(0|1) [TLS(none|tls|mtls)]
start_registry() {
  local name="$1" start="$2" exclude="$3" auth="$4" tls="${5:-none}"
  local dir="$LAB_DIR/$name" port addr i code
  if registry_alive "$name"; then
    log "$name registry already running on $(cat "$dir/addr") (pid $(cat "$dir/pid"))"
    return 0
  fi
  stop_registry "$name"
  mkdir -p "$dir/data"
  port="$(free_port "$start" "$exclude")"
  addr="127.0.0.1:$port"
  {
    echo "version: 0.1"
    echo "log:"
    echo "  level: warn"
    echo "  accesslog:"
    echo "    disabled: true"
    echo "storage:"
    echo "  filesystem:"
    echo "    rootdirectory: $dir/data"
    echo "  delete:"
    echo "    enabled: true"
    echo "  cache:"
    echo "    blobdescriptor: inmemory"
    echo "http:"
    echo "  addr: $addr"
    if [ "$tls" != none ]; then
      echo "  tls:"
      echo "    certificate: $CERTS/server.pem"
      echo "    key: $CERTS/server-key.pem"
      if [ "$tls" = mtls ]; then
        echo "    clientcas:"
        echo "      - $CERTS/ca.pem"
      fi
    fi
    if [ "$auth" = 1 ]; then
      echo "auth:"
      echo "  htpasswd:"
      echo "    realm: ocibuild-lab"
      echo "    path: $dir/htpasswd"
    fi
  } >"$dir/config.yml"
  if [ "$auth" = 1 ]; then
    htpasswd -Bbn "$AUTH_USER" "$AUTH_PASSWORD" >"$dir/htpasswd"
  fi
  log "starting $name registry on $addr (log: $dir/registry.log)"
  # setsid detaches the registry from our process group; the inner shell records
  # its own pid and then execs the registry, so the pid file is exact.
  setsid -f sh -c 'echo $$ >"$1"; exec docker-registry serve "$2"' sh \
    "$dir/pid" "$dir/config.yml" >>"$dir/registry.log" 2>&1 </dev/null 9>&-
  echo "$addr" >"$dir/addr"
  for i in $(seq 1 100); do
    code="$(registry_status "$name" "$addr")"
    if [ "$code" = 200 ] || [ "$code" = 401 ]; then
      log "$name registry ready on $addr (pid $(cat "$dir/pid"))"
      return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$dir/registry.log" >&2 || true
  die "$name registry did not answer on $addr/v2/ within 10s (see $dir/registry.log)"
}

# Builds the busybox fixture as an OCI layout with umoci only (no ocibuild code).
build_busybox_layout() {
  local work="$1" layout="$1/oci" bundle="$1/bundle" rootfs a
  rm -rf "$work"
  mkdir -p "$work"
  umoci init --layout "$layout"
  umoci new --image "$layout:latest"
  umoci unpack --image "$layout:latest" "$bundle" >&2
  rootfs="$bundle/rootfs"
  mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/root" "$rootfs/tmp" "$rootfs/var" "$rootfs/usr/bin"
  chmod 1777 "$rootfs/tmp"
  chmod 0700 "$rootfs/root"
  local bb
  bb="$(command -v busybox || true)"
  [ -x /bin/busybox ] && bb=/bin/busybox
  [ -n "$bb" ] || die "busybox binary not found (package busybox-static)"
  install -m 0755 "$bb" "$rootfs/bin/busybox"
  for a in $("$bb" --list); do
    case "$a" in
    busybox | */*) continue ;;
    esac
    [ -e "$rootfs/bin/$a" ] || ln -s busybox "$rootfs/bin/$a"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
    'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$rootfs/etc/group"
  chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
  umoci repack --image "$layout:latest" "$bundle"
  umoci config --image "$layout:latest" --os linux --architecture amd64 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.cmd sh
  umoci gc --layout "$layout"
}

# Adds tag "layered" to the layout: busybox plus a layer with a hard link, a setuid file
# owned by 1234:2345, a symlink and an old mtime, plus a layer that deletes a directory
# and a file (umoci writes the whiteouts), so unpacking can be tested on a foreign image.
add_layered_image() {
  local layout="$1" bundle="$2/layered-bundle" r
  rm -rf "$bundle"
  umoci unpack --image "$layout:latest" "$bundle" >&2
  r="$bundle/rootfs"
  mkdir -p "$r/data/dir" "$r/data/keep"
  echo a >"$r/data/a"
  ln "$r/data/a" "$r/data/b"
  echo x >"$r/data/dir/x"
  echo y >"$r/data/keep/y"
  echo z >"$r/data/keep/z"
  chown 1234:2345 "$r/data/a"
  chmod 4750 "$r/data/a"
  ln -s ../data/a "$r/data/link"
  touch -d @1000000000 "$r/data/keep/z"
  umoci repack --image "$layout:layered" "$bundle"
  rm -rf "$bundle"
  umoci unpack --image "$layout:layered" "$bundle" >&2
  rm -rf "$r/data/dir"
  rm "$r/data/keep/y"
  umoci repack --image "$layout:layered" "$bundle"
}

# Adds tag "multi" to the layout: an OCI index with the amd64 image and a fake
# linux/arm64 entry (same layers, config with architecture arm64).
add_multi_index() {
  local layout="$1" blobs="$1/blobs/sha256"
  local man_digest man_size man cfg_digest cfg arm_cfg arm_cfg_digest arm_cfg_size
  local arm_man arm_man_digest arm_man_size index index_digest index_size
  man_digest="$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="latest") | .digest' "$layout/index.json")"
  [ -n "$man_digest" ] || die "tag latest missing from $layout/index.json"
  man="$blobs/${man_digest#sha256:}"
  man_size="$(stat -c %s "$man")"
  cfg_digest="$(jq -r .config.digest "$man")"
  cfg="$blobs/${cfg_digest#sha256:}"

  arm_cfg="$(mktemp)"
  jq -c '.architecture = "arm64" | .variant = "v8"' "$cfg" >"$arm_cfg"
  arm_cfg_digest="sha256:$(sha256sum "$arm_cfg" | cut -d' ' -f1)"
  arm_cfg_size="$(stat -c %s "$arm_cfg")"
  mv "$arm_cfg" "$blobs/${arm_cfg_digest#sha256:}"

  arm_man="$(mktemp)"
  jq -c --arg d "$arm_cfg_digest" --argjson s "$arm_cfg_size" \
    '.config.digest = $d | .config.size = $s' "$man" >"$arm_man"
  arm_man_digest="sha256:$(sha256sum "$arm_man" | cut -d' ' -f1)"
  arm_man_size="$(stat -c %s "$arm_man")"
  mv "$arm_man" "$blobs/${arm_man_digest#sha256:}"

  index="$(mktemp)"
  jq -cn --arg d1 "$man_digest" --argjson s1 "$man_size" \
    --arg d2 "$arm_man_digest" --argjson s2 "$arm_man_size" '{
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [
        {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d1, size: $s1,
         platform: {architecture: "amd64", os: "linux"}},
        {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d2, size: $s2,
         platform: {architecture: "arm64", os: "linux", variant: "v8"}}
      ]}' >"$index"
  index_digest="sha256:$(sha256sum "$index" | cut -d' ' -f1)"
  index_size="$(stat -c %s "$index")"
  mv "$index" "$blobs/${index_digest#sha256:}"
  chmod 0644 "$blobs/${arm_cfg_digest#sha256:}" "$blobs/${arm_man_digest#sha256:}" "$blobs/${index_digest#sha256:}"

  jq --arg d "$index_digest" --argjson s "$index_size" \
    '.manifests += [{mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s,
      annotations: {"org.opencontainers.image.ref.name": "multi"}}]' \
    "$layout/index.json" >"$layout/index.json.new"
  mv "$layout/index.json.new" "$layout/index.json"
}

push_fixtures() {
  local addr="$1" work="$LAB_DIR/fixture"
  if skopeo inspect --tls-verify=false --raw "docker://$addr/busybox:latest" >/dev/null 2>&1 &&
    skopeo inspect --tls-verify=false --raw "docker://$addr/busybox-multi:latest" >/dev/null 2>&1 &&
    skopeo inspect --tls-verify=false --raw "docker://$addr/busybox-docker:latest" >/dev/null 2>&1 &&
    skopeo inspect --tls-verify=false --raw "docker://$addr/layered:latest" >/dev/null 2>&1; then
    log "fixtures busybox, busybox-multi, busybox-docker and layered already in $addr"
    return 0
  fi
  log "building busybox fixture in $work"
  build_busybox_layout "$work" >&2
  add_multi_index "$work/oci" >&2
  add_layered_image "$work/oci" "$work" >&2
  log "pushing $addr/busybox:latest"
  skopeo copy --quiet --dest-tls-verify=false --preserve-digests \
    "oci:$work/oci:latest" "docker://$addr/busybox:latest" >&2
  log "pushing $addr/busybox-multi:latest"
  skopeo copy --quiet --all --dest-tls-verify=false --preserve-digests \
    "oci:$work/oci:multi" "docker://$addr/busybox-multi:latest" >&2
  log "pushing $addr/layered:latest"
  skopeo copy --quiet --dest-tls-verify=false --preserve-digests \
    "oci:$work/oci:layered" "docker://$addr/layered:latest" >&2
  log "pushing $addr/busybox-docker:latest (Docker schema 2 media types)"
  skopeo copy --quiet --format v2s2 --dest-tls-verify=false \
    "oci:$work/oci:latest" "docker://$addr/busybox-docker:latest" >&2
}

# Pushes debian:bookworm: a `debootstrap --variant=minbase` root assembled into one layer
# with umoci, and downloads the `hello` package to debian/hello.deb (for dpkg tests). The
# root is made once and kept in the state dir.
push_debian_fixture() {
  local addr="$1" dir="$LAB_DIR/debian"
  mkdir -p "$dir"
  if [ ! -s "$dir/hello.deb" ]; then
    log "downloading the hello package to $dir/hello.deb"
    (cd "$dir" && apt-get download hello >&2 && mv hello_*.deb hello.deb.tmp && mv hello.deb.tmp hello.deb)
  fi
  if skopeo inspect --tls-verify=false --raw "docker://$addr/debian:bookworm" >/dev/null 2>&1; then
    log "fixture debian:bookworm already in $addr"
    return 0
  fi
  if [ ! -f "$dir/rootfs.done" ]; then
    log "debootstrap --variant=minbase bookworm into $dir/rootfs (a few minutes)"
    rm -rf "$dir/rootfs"
    as_root debootstrap --variant=minbase bookworm "$dir/rootfs" http://deb.debian.org/debian >&2
    touch "$dir/rootfs.done"
  fi
  local layout="$dir/oci" bundle="$dir/bundle"
  rm -rf "$layout" "$bundle"
  umoci init --layout "$layout"
  umoci new --image "$layout:bookworm"
  umoci unpack --image "$layout:bookworm" "$bundle" >&2
  cp -a "$dir/rootfs/." "$bundle/rootfs/"
  umoci repack --image "$layout:bookworm" "$bundle"
  umoci config --image "$layout:bookworm" --os linux --architecture amd64 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.cmd bash
  umoci gc --layout "$layout"
  rm -rf "$bundle"
  log "pushing $addr/debian:bookworm"
  skopeo copy --quiet --dest-tls-verify=false --preserve-digests \
    "oci:$layout:bookworm" "docker://$addr/debian:bookworm" >&2
}

S3_VENV="$LAB_DIR/s3-venv"

# Installs moto[server] (an S3-compatible server that checks SigV4 signatures) in a venv.
install_s3_server() {
  if [ -x "$S3_VENV/bin/moto_server" ] && "$S3_VENV/bin/python" -c 'import boto3, moto' 2>/dev/null; then
    log "moto[server] present in $S3_VENV"
    return 0
  fi
  local py=/usr/bin/python3
  [ -x "$py" ] || py="$(command -v python3)" || die "python3 not found"
  log "installing moto[server] into $S3_VENV"
  rm -rf "$S3_VENV"
  "$py" -m venv "$S3_VENV" >&2
  "$S3_VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' >&2
}

# s3_alive -> 0 when moto_server runs and its access key was created
s3_alive() {
  service_alive s3 && [ -s "$LAB_DIR/s3/keys" ]
}

# stop_service NAME LABEL -> stops the process in $LAB_DIR/NAME/pid (TERM, then KILL after 5s)
stop_service() {
  local dir="$LAB_DIR/$1" pid i
  [ -f "$dir/pid" ] || return 0
  pid="$(cat "$dir/pid")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $2 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
}

# service_alive NAME -> 0 when the process in $LAB_DIR/NAME/pid lives and listens on its port
service_alive() {
  local dir="$LAB_DIR/$1"
  [ -f "$dir/pid" ] && [ -f "$dir/port" ] || return 1
  kill -0 "$(cat "$dir/pid")" 2>/dev/null && port_in_use "$(cat "$dir/port")"
}

# start_service NAME LABEL START_PORT COMMAND... -> runs COMMAND detached, with every
# argument @PORT@ replaced by a free port >= START_PORT, and waits until it listens there
# (up to 30s). The port goes to $LAB_DIR/NAME/port, the pid to .../pid, output to .../NAME.log.
start_service() {
  local name="$1" label="$2" start="$3" dir="$LAB_DIR/$1" port arg i
  shift 3
  mkdir -p "$dir"
  port="$(free_port "$start")"
  local cmd=()
  for arg in "$@"; do
    cmd+=("${arg//@PORT@/$port}")
  done
  log "starting $label on 127.0.0.1:$port (log: $dir/$name.log)"
  setsid -f sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$dir/pid" "${cmd[@]}" \
    >>"$dir/$name.log" 2>&1 </dev/null 9>&-
  echo "$port" >"$dir/port"
  for i in $(seq 1 300); do
    port_in_use "$port" && return 0
    sleep 0.1
  done
  tail -n 20 "$dir/$name.log" >&2 || true
  die "$label did not listen on 127.0.0.1:$port within 30s (see $dir/$name.log)"
}

stop_s3_server() {
  stop_service s3 "S3 server"
  rm -f "$LAB_DIR/s3/keys"
}

# Starts moto_server with IAM auth after 3 anonymous calls, which create the test user,
# its policy and its access key (saved in s3/keys: key id, then secret).
start_s3_server() {
  local dir="$LAB_DIR/s3" port
  if s3_alive; then
    log "S3 server already running on 127.0.0.1:$(cat "$dir/port") (pid $(cat "$dir/pid"))"
    return 0
  fi
  stop_s3_server
  start_service s3 "S3 server (moto)" 5300 \
    env INITIAL_NO_AUTH_ACTION_COUNT=3 "$S3_VENV/bin/moto_server" -H 127.0.0.1 -p @PORT@
  port="$(cat "$dir/port")"
  "$S3_VENV/bin/python" - "http://127.0.0.1:$port" "$dir/keys" <<'PY' >&2 || die "creating the S3 test user failed (see $dir/s3.log)"
import json, sys, boto3
endpoint, keys = sys.argv[1], sys.argv[2]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="ocitest")
iam.put_user_policy(UserName="ocitest", PolicyName="all", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="ocitest")["AccessKey"]
with open(keys + ".tmp", "w") as f:
    f.write(key["AccessKeyId"] + "\n" + key["SecretAccessKey"] + "\n")
PY
  mv "$dir/keys.tmp" "$dir/keys"
  rm -f "$dir/role"
  log "S3 server ready on http://127.0.0.1:$port (pid $(cat "$dir/pid"))"
}

# Creates (once per server) the role ocitest-web, allowed everything, that web identity
# tokens are exchanged for; its ARN goes to s3/role.
ensure_s3_role() {
  local dir="$LAB_DIR/s3"
  [ -s "$dir/role" ] && return 0
  log "creating the S3 test role ocitest-web"
  "$S3_VENV/bin/python" - "http://127.0.0.1:$(cat "$dir/port")" "$dir/keys" "$dir/role" <<'PY' >&2 || die "creating the S3 test role failed (see $dir/s3.log)"
import json, sys, boto3
endpoint, keys, role = sys.argv[1:4]
key_id, secret = open(keys).read().split()
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id=key_id, aws_secret_access_key=secret)
try:
    arn = iam.get_role(RoleName="ocitest-web")["Role"]["Arn"]
except iam.exceptions.NoSuchEntityException:
    arn = iam.create_role(RoleName="ocitest-web", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Federated": "ocibuild-lab"},
                       "Action": "sts:AssumeRoleWithWebIdentity"}]}))["Role"]["Arn"]
iam.put_role_policy(RoleName="ocitest-web", PolicyName="all", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
with open(role + ".tmp", "w") as f:
    f.write(arn + "\n")
PY
  mv "$dir/role.tmp" "$dir/role"
}

# Installs nodejs and npm from apt when npm is missing (azurite is an npm package).
install_node() {
  if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
    log "node and npm present"
    return 0
  fi
  log "installing nodejs and npm"
  as_root apt-get update >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm >&2
}

AZURITE_PKG="$LAB_DIR/azurite-pkg"
AZURITE_BIN="$AZURITE_PKG/node_modules/.bin/azurite-blob"

# Installs azurite (npm) under the state dir.
install_azurite() {
  if [ -x "$AZURITE_BIN" ]; then
    log "azurite present in $AZURITE_PKG"
    return 0
  fi
  log "installing azurite into $AZURITE_PKG"
  mkdir -p "$AZURITE_PKG"
  npm install --prefix "$AZURITE_PKG" --no-audit --no-fund --loglevel=error azurite >&2
  [ -x "$AZURITE_BIN" ] || die "npm install azurite did not provide $AZURITE_BIN"
}

# Starts azurite's blob service (account devstoreaccount1, its well-known key).
start_azurite() {
  local dir="$LAB_DIR/azurite"
  if service_alive azurite; then
    log "azurite already running on 127.0.0.1:$(cat "$dir/port") (pid $(cat "$dir/pid"))"
    return 0
  fi
  stop_service azurite azurite
  mkdir -p "$dir/data"
  start_service azurite "azurite (Azure Blob Storage)" 5400 "$AZURITE_BIN" \
    --blobHost 127.0.0.1 --blobPort @PORT@ --location "$dir/data" --silent \
    --skipApiVersionCheck --disableProductStyleUrl
}

# Installs gcp-storage-emulator (PyPI) into the venv of moto.
install_gcs_emulator() {
  if [ -x "$S3_VENV/bin/gcp-storage-emulator" ]; then
    log "gcp-storage-emulator present in $S3_VENV"
    return 0
  fi
  log "installing gcp-storage-emulator into $S3_VENV"
  "$S3_VENV/bin/pip" install --quiet --disable-pip-version-check gcp-storage-emulator >&2
}

# Starts gcp-storage-emulator, keeping objects in memory.
start_gcs_emulator() {
  local dir="$LAB_DIR/gcs"
  if service_alive gcs; then
    log "GCS emulator already running on 127.0.0.1:$(cat "$dir/port") (pid $(cat "$dir/pid"))"
    return 0
  fi
  stop_service gcs "GCS emulator"
  start_service gcs "GCS emulator (gcp-storage-emulator)" 5450 \
    "$S3_VENV/bin/gcp-storage-emulator" start --host 127.0.0.1 --port @PORT@ --in-memory --quiet
}

write_env() {
  local tmp="$ENV_FILE.tmp"
  {
    echo "export OCIBUILD_TEST_REGISTRY=$(cat "$LAB_DIR/plain/addr")"
    echo "export OCIBUILD_TEST_AUTH_REGISTRY=$(cat "$LAB_DIR/auth/addr")"
    echo "export OCIBUILD_TEST_AUTH_USER=$AUTH_USER"
    echo "export OCIBUILD_TEST_ROOTLESS_USER=$ROOTLESS_USER"
    echo "export OCIBUILD_TEST_NOSUBID_USER=$NOSUBID_USER"
    echo "export OCIBUILD_TEST_AUTH_PASSWORD=$AUTH_PASSWORD"
    echo "export OCIBUILD_TEST_TLS_REGISTRY=$(cat "$LAB_DIR/tls/addr")"
    echo "export OCIBUILD_TEST_MTLS_REGISTRY=$(cat "$LAB_DIR/mtls/addr")"
    echo "export OCIBUILD_TEST_TLS_CA=$CERTS/ca.pem"
    echo "export OCIBUILD_TEST_TLS_CLIENT_CERT=$CERTS/client.pem"
    echo "export OCIBUILD_TEST_TLS_CLIENT_KEY=$CERTS/client-key.pem"
    echo "export OCIBUILD_TEST_S3_ENDPOINT=http://127.0.0.1:$(cat "$LAB_DIR/s3/port")"
    echo "export OCIBUILD_TEST_S3_ACCESS_KEY=$(sed -n 1p "$LAB_DIR/s3/keys")"
    echo "export OCIBUILD_TEST_S3_SECRET_KEY=$(sed -n 2p "$LAB_DIR/s3/keys")"
    echo "export OCIBUILD_TEST_S3_ROLE_ARN=$(cat "$LAB_DIR/s3/role")"
    echo "export OCIBUILD_TEST_AZURITE=http://127.0.0.1:$(cat "$LAB_DIR/azurite/port")/devstoreaccount1"
    echo "export OCIBUILD_TEST_GCS=http://127.0.0.1:$(cat "$LAB_DIR/gcs/port")"
    echo "export OCIBUILD_TEST_HELLO_DEB=$LAB_DIR/debian/hello.deb"
    echo "export OCIBUILD_LAB_DIR=$LAB_DIR"
    # Builds of the tests keep their extracted layers here, not in /var/lib/ocibuild.
    echo "export OCIBUILD_LAYER_STORE=$LAB_DIR/layer-store"
  } >"$tmp"
  mv "$tmp" "$ENV_FILE"
}

# Users for the rootless tests (idempotent): $ROOTLESS_USER with subordinate uid and gid
# ranges in /etc/subuid and /etc/subgid, $NOSUBID_USER without any. No home directories:
# the tests give them one in a temporary directory.
ensure_rootless_users() {
  local u
  local u range
  for u in "$ROOTLESS_USER" "$NOSUBID_USER"; do
    if ! id -u "$u" >/dev/null 2>&1; then
      log "adding user $u"
      # No automatic subordinate ranges (useradd adds some from login.defs).
      as_root useradd --no-create-home --shell /bin/sh -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$u"
    fi
  done
  if ! grep -q "^$ROOTLESS_USER:" /etc/subuid 2>/dev/null ||
    ! grep -q "^$ROOTLESS_USER:" /etc/subgid 2>/dev/null; then
    log "giving $ROOTLESS_USER subordinate ids $ROOTLESS_RANGE"
    as_root usermod --add-subuids "$ROOTLESS_RANGE" --add-subgids "$ROOTLESS_RANGE" "$ROOTLESS_USER"
  fi
  for range in $(awk -F: -v u="$NOSUBID_USER" '$1 == u { print $2 "-" $2 + $3 - 1 }' /etc/subuid 2>/dev/null); do
    log "removing subordinate uids $range of $NOSUBID_USER"
    as_root usermod --del-subuids "$range" "$NOSUBID_USER"
  done
  for range in $(awk -F: -v u="$NOSUBID_USER" '$1 == u { print $2 "-" $2 + $3 - 1 }' /etc/subgid 2>/dev/null); do
    log "removing subordinate gids $range of $NOSUBID_USER"
    as_root usermod --del-subgids "$range" "$NOSUBID_USER"
  done
}

cmd_up() {
  mkdir -p "$LAB_DIR/plain" "$LAB_DIR/auth" "$LAB_DIR/tls" "$LAB_DIR/mtls"
  exec 9>"$LAB_DIR/lock"
  flock 9 2>/dev/null || true
  install_packages
  ensure_rootless_users
  start_registry plain 5100 "" 0
  local plain_port
  plain_port="$(cut -d: -f2 "$LAB_DIR/plain/addr")"
  start_registry auth $((plain_port + 1)) "$plain_port" 1
  make_certs
  local auth_port tls_port
  auth_port="$(cut -d: -f2 "$LAB_DIR/auth/addr")"
  start_registry tls $((auth_port + 1)) "$plain_port" 0 tls
  tls_port="$(cut -d: -f2 "$LAB_DIR/tls/addr")"
  start_registry mtls $((tls_port + 1)) "$auth_port" 0 mtls
  push_fixtures "$(cat "$LAB_DIR/plain/addr")"
  push_debian_fixture "$(cat "$LAB_DIR/plain/addr")"
  install_s3_server
  start_s3_server
  ensure_s3_role
  install_node
  install_azurite
  start_azurite
  install_gcs_emulator
  start_gcs_emulator
  write_env
  log "ready; run: eval \"\$(scripts/lab.sh env)\""
}

cmd_env() {
  if ! registry_alive plain || ! registry_alive auth || ! registry_alive tls ||
    ! registry_alive mtls || ! s3_alive || ! service_alive azurite || ! service_alive gcs ||
    [ ! -f "$ENV_FILE" ] || ! grep -q MTLS "$ENV_FILE" || ! grep -q S3_ROLE_ARN "$ENV_FILE" ||
    ! grep -q OCIBUILD_TEST_GCS "$ENV_FILE" || ! grep -q HELLO_DEB "$ENV_FILE" ||
    ! grep -q ROOTLESS_USER "$ENV_FILE" || ! id -u "$ROOTLESS_USER" >/dev/null 2>&1; then
    cmd_up
  fi
  cat "$ENV_FILE"
}

cmd_down() {
  stop_registry plain
  stop_registry auth
  stop_registry tls
  stop_registry mtls
  stop_s3_server
  stop_service azurite azurite
  stop_service gcs "GCS emulator"
  rm -f "$ENV_FILE"
  log "lab stopped (data kept in $LAB_DIR)"
}

case "${1:-}" in
up) cmd_up ;;
env) cmd_env ;;
down) cmd_down ;;
*)
  echo "usage: $0 up|env|down" >&2
  exit 2
  ;;
esac
