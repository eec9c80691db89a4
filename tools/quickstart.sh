#!/bin/sh
# tools/quickstart.sh TARGET... — the README's quick start on a fresh Debian machine, where even make and a
# C compiler may be missing (a minimal install or the debian:12 image has neither): installs them as root
# (otherwise prints the apt-get line and stops, as `make deps` does: both through tools/deps.sh), then runs
# `make TARGET...` (demo, test, deps, ...), which installs the project's libraries the same way before building.
set -e
cd "$(dirname "$0")/.."
sh tools/deps.sh -q quickstart make gcc libc6-dev
exec make "$@"
