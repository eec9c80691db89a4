#!/bin/sh
# tools/src_hash.sh — a short hash of the sources a build is made from (every
# .c, .h, .cu and .cc under the source folders, and the Makefile), computed
# from the files themselves (no git: the GPU machine's copy of the tree has
# none). `make gpu-bundle` writes it into the bundle's BUILD; tools/gpu_check.sh
# compares it with the tree it runs in, so a stale bundle is refused before any
# device time is spent on it.
cd "$(dirname "$0")/.." || exit 2
find core io sched kernels tools tests -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cc' \) |
    LC_ALL=C sort | { cat; echo Makefile; } | xargs sha256sum | sha256sum | cut -c1-16
