#!/bin/sh
# tests/run.sh — runs every test program twice (release build, then ASan+UBSan
# build) and every shell test against both binaries; prints one line per test
# and a final "N passed, N failed, N skipped" line. Exit status 1 if any failed.
#   usage: tests/run.sh REL_DIR ASAN_DIR test_a test_b ... -- tests/test_x.sh ...
# With TSAN_DIR and TSAN_TESTS set, those test programs also run from the
# ThreadSanitizer build (OpenBLAS on one thread: its own threads are not
# instrumented).
rel=$1; asan=$2; shift 2
progs=""; scripts=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do progs="$progs $1"; shift; done
[ "$1" = "--" ] && shift
scripts="$*"
pass=0; fail=0; skip=0; failed=""
log=$(mktemp -d "${TMPDIR:-/tmp}/tt-test-log.XXXXXX")
# protect_shadow_gap=0: the CUDA driver maps memory where ASan keeps its shadow gap
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:protect_shadow_gap=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export TSAN_DIR TSAN_TESTS # for the shell tests that use the ThreadSanitizer build
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:${LSAN_OPTIONS:-}"

run_one() { # name, command...
    name=$1; shift
    out="$log/$(echo "$name" | tr ' /[]' '____').log"
    t0=$(date +%s)
    "$@" >"$out" 2>&1
    rc=$?
    dt=$(( $(date +%s) - t0 ))
    case $rc in
    0)  pass=$((pass + 1)); printf 'PASS  %-40s %3ss\n' "$name" "$dt" ;;
    77) skip=$((skip + 1)); printf 'SKIP  %-40s %s\n' "$name" "$(grep -m1 SKIP "$out")" ;;
    *)  fail=$((fail + 1)); failed="$failed $name"; printf 'FAIL  %-40s (exit %s)\n' "$name" "$rc"
        sed 's/^/      | /' "$out" | tail -n 40 ;;
    esac
}

for variant in rel asan; do
    dir=$rel; [ $variant = asan ] && dir=$asan
    tag=""; [ $variant = asan ] && tag=" [asan]"
    for t in $progs; do run_one "$t$tag" "$dir/tests/$t"; done
    for s in $scripts; do TIERTRAIN="$dir/tiertrain" run_one "$(basename "$s" .sh)$tag" sh "$s"; done
done
for t in ${TSAN_TESTS:-}; do
    OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1:exitcode=66:${TSAN_OPTIONS:-}" \
        run_one "$t [tsan]" "$TSAN_DIR/tests/$t"
done
rm -rf "$log"
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
