#!/bin/sh
# tests/test_layering.sh — the folders include each other only as DESIGN.md
# draws it (tools -> core -> sched -> io, core -> kernels, sched -> kernels,
# everything -> core/base): a plain scan of the #include "..." lines.
#   core/base/  includes core/base/ only (the ground: it stands on nothing)
#   io/         core/base/, io/
#   kernels/    core/base/, kernels/
#   sched/      core/base/, io/, kernels/, sched/
#   core/       anything but tools/ and kernels/cuda/ (no CUDA headers above kernels/)
# KNOWN lists crossings still to be removed (none now: the step loop moved to
# core/exec.c); a crossing not in it fails, and so does an entry that no
# longer occurs (take it out: the list only shrinks).
. tests/lib.sh

KNOWN=""

allowed() { # folder-of-file included-header -> 0 when the arrow exists
    case "$1" in
    core/base) case "$2" in core/base/*) return 0 ;; esac ;;
    io) case "$2" in core/base/* | io/*) return 0 ;; esac ;;
    kernels | kernels/cpu | kernels/cpu-async | kernels/cuda) case "$2" in core/base/* | kernels/*) return 0 ;; esac ;;
    sched) case "$2" in core/base/* | io/* | kernels/* | sched/*) return 0 ;; esac ;;
    core) case "$2" in tools/* | kernels/cuda/*) return 1 ;; *) return 0 ;; esac ;;
    *) return 0 ;;
    esac
    return 1
}

found=""
for f in $(ls core/base/*.[ch] core/*.[ch] io/*.[ch] sched/*.[ch] kernels/*.[ch] kernels/cpu/*.[ch] kernels/cpu-async/*.[ch] kernels/cuda/*.[ch] \
           kernels/cuda/*.cu 2>/dev/null); do
    d=$(dirname "$f")
    for h in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
        allowed "$d" "$h" && continue
        found="$found$f:$h
"
        echo "$KNOWN" | grep -qx "$f:$h" || fail "$f includes $h: $d/ may not include ${h%%/*}/ (DESIGN.md's arrows)"
    done
done
for k in $KNOWN; do
    printf '%s' "$found" | grep -qx "$k" || fail "$k no longer occurs: take it out of KNOWN in tests/test_layering.sh"
done
# the check itself: a forged crossing is caught
allowed io core/lora.h && fail "the checker lets io/ include core/lora.h"
allowed kernels sched/plan.h && fail "the checker lets kernels/ include sched/"
allowed core kernels/cuda/cuda_backend.h && fail "the checker lets core/ include kernels/cuda/"
allowed core/base core/model.h && fail "the checker lets core/base/ include core/"
finish test_layering
