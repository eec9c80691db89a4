#!/bin/sh
# tools/quickstart.sh TARGET... — the README's quick start on a fresh Debian machine, where even make and a
# C compiler may be missing (a minimal install or the debian:12 image has neither): installs them as root
# (otherwise prints the apt-get line and stops, as `make deps` does), then runs `make TARGET...` (demo, test,
# deps, ...), which installs the project's libraries the same way before building.
set -e
cd "$(dirname "$0")/.."
missing=""
for p in make gcc libc6-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "quickstart: missing Debian packages; run as root:"
        echo "  apt-get update && apt-get install -y$missing"
        exit 1
    fi
    echo "quickstart: installing$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
exec make "$@"
