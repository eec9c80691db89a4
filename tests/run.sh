#!/bin/sh
# tests/run.sh — runs every test program twice (release build, then ASan+UBSan
# build) and every shell test against both binaries; prints one line per test
# as it ends and a final "N passed, N failed, N skipped" line (the failures'
# output last). Exit status 1 if any failed.
#   usage: tests/run.sh REL_DIR ASAN_DIR test_a test_b ... -- tests/test_x.sh ...
# With TSAN_DIR and TSAN_TESTS set, those test programs also run from the
# ThreadSanitizer build (OpenBLAS on one thread: its own threads are not
# instrumented).
# TT_TEST_JOBS tests run at once (default: the number of CPUs), taken from
# one list in order: test_cuda_emu, then the sanitizer builds' (the slow ones). Every test
# makes its own temporary folder; none times itself. With more than one at
# once, OpenBLAS runs on one thread unless OPENBLAS_NUM_THREADS says
# otherwise (its threads spin while they wait, and two tests' threads on the
# same cores would starve each other).
if [ "$1" = "--job" ]; then # internal: one test of the list; $2 its line, $3 the list
    line=$(sed -n "${2}p" "$3")
    name=${line%%	*}
    cmd=${line#*	}
    log=$(dirname "$3")
    out="$log/$(printf '%s' "$name" | tr ' /[]' '____').log"
    t0=$(date +%s)
    eval "$cmd" >"$out" 2>&1
    rc=$?
    dt=$(($(date +%s) - t0))
    case $rc in
    0) printf 'PASS  %-40s %3ss\n' "$name" "$dt"; echo pass >"$out.rc" ;;
    77) printf 'SKIP  %-40s %s\n' "$name" "$(grep -m1 SKIP "$out")"; echo skip >"$out.rc" ;;
    *) printf 'FAIL  %-40s (exit %s)\n' "$name" "$rc"; echo fail >"$out.rc" ;;
    esac
    exit 0
fi

rel=$1; asan=$2; shift 2
progs=""; scripts=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do progs="$progs $1"; shift; done
[ "$1" = "--" ] && shift
scripts="$*"
log=$(mktemp -d "${TMPDIR:-/tmp}/tt-test-log.XXXXXX")
trap 'rm -rf "$log"' EXIT
trap 'exit 130' INT TERM
# protect_shadow_gap=0: the CUDA driver maps memory where ASan keeps its shadow gap
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:protect_shadow_gap=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export TSAN_DIR TSAN_TESTS # for the shell tests that use the ThreadSanitizer build
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:${LSAN_OPTIONS:-}"
jobs=${TT_TEST_JOBS:-$(nproc 2>/dev/null || echo 1)}
case $jobs in '' | *[!0-9]* | 0) echo "tests/run.sh: TT_TEST_JOBS must be a positive number, not '$jobs'" >&2; exit 2 ;; esac
[ "$jobs" -gt 1 ] && export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"

# The list: one line per test, its name, a tab, the command.
list="$log/list"
: >"$list"
add() { printf '%s\t%s\n' "$1" "$2" >>"$list"; }
# the longest test first (test_cuda_emu: a third of the total on 2 CPUs), so that it never runs alone at the end
first=test_cuda_emu
for s in $scripts; do [ "$(basename "$s" .sh)" = $first ] && add $first "TIERTRAIN='$rel/tiertrain' sh '$s'"; done
for s in $scripts; do add "$(basename "$s" .sh) [asan]" "TIERTRAIN='$asan/tiertrain' sh '$s'"; done
for t in ${TSAN_TESTS:-}; do
    add "$t [tsan]" "OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS='halt_on_error=1:exitcode=66:${TSAN_OPTIONS:-}' '$TSAN_DIR/tests/$t'"
done
for t in $progs; do add "$t [asan]" "'$asan/tests/$t'"; done
for s in $scripts; do [ "$(basename "$s" .sh)" = $first ] || add "$(basename "$s" .sh)" "TIERTRAIN='$rel/tiertrain' sh '$s'"; done
for t in $progs; do add "$t" "'$rel/tests/$t'"; done

n=$(wc -l <"$list")
seq 1 "$n" | xargs -P "$jobs" -I{} sh "$0" --job {} "$list"

pass=0; fail=0; skip=0; failed=""
i=0
while IFS='	' read -r name cmd; do
    out="$log/$(printf '%s' "$name" | tr ' /[]' '____').log"
    case $(cat "$out.rc" 2>/dev/null) in
    pass) pass=$((pass + 1)) ;;
    skip) skip=$((skip + 1)) ;;
    *) fail=$((fail + 1)); failed="$failed $name"
        echo "---- $name: the end of its output"
        tail -n 40 "$out" 2>/dev/null | sed 's/^/      | /' ;;
    esac
done <"$list"
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
