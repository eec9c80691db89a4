#!/bin/sh
# tools/deps.sh [-q] LABEL PKG... — the Debian packages PKG... that are missing installed: as root with apt-get,
# otherwise the apt-get line to run printed and exit 1. `make deps` (the project's packages) and
# tools/quickstart.sh (make and gcc, before there is a make) both use it. LABEL starts each line printed; -q: no
# line when nothing is missing.
quiet=0
[ "$1" = -q ] && { quiet=1; shift; }
label=$1
shift
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -z "$missing" ]; then
    [ $quiet = 1 ] || echo "$label: all Debian packages present"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "$label: missing Debian packages; run as root:"
    echo "  apt-get update && apt-get install -y$missing"
    exit 1
fi
echo "$label: installing$missing"
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
