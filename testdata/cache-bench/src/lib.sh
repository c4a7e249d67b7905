log() { echo "app: $*"; }
port_of() { [ "${1:-}" = --port ] && echo "${2:-8080}" || echo 8080; }
