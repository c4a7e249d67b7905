#!/bin/sh
# The "build" step: assembles bin/app from the sources and records a manifest.
set -eu
mkdir -p /opt/app/bin
{
  echo '#!/bin/sh'
  cat /opt/app/src/lib.sh /opt/app/src/main.sh
} > /opt/app/bin/app
chmod 755 /opt/app/bin/app
find /opt/app/src -type f | sort | xargs sha256sum > /opt/app/MANIFEST
wc -c /opt/app/bin/app
