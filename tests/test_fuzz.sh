#!/bin/sh
# tests/test_fuzz.sh — a short run of every libFuzzer target (tests/fuzz_*.c,
# built by `make fuzz` with ASan+UBSan) on its seed corpus tests/corpus/NAME:
# every seed is replayed, then up to 10,000 mutations (15 s a target at most). Any crash, sanitizer
# report, leak or hang fails the test. Long runs: `make fuzz-long`.
case ${TIERTRAIN:-} in
*asan*) ;;
*) echo "test_fuzz: runs with the ASan+UBSan pass only (the targets are ASan builds; make test runs it there)"; exit 0 ;;
esac
D=${FUZZ_DIR:-build/fuzz}
ls "$D"/fuzz_* >/dev/null 2>&1 || { echo "SKIP: no fuzz targets in $D (needs clang; run make fuzz)"; exit 77; }
export ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tt-fuzz.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0; n=0
for src in tests/fuzz_*.c; do
    t=$(basename "$src" .c); name=${t#fuzz_}
    n=$((n + 1))
    if [ ! -x "$D/$t" ]; then echo "FAIL: $D/$t is not built (make fuzz)"; fail=1; continue; fi
    if [ ! -d "tests/corpus/$name" ]; then echo "FAIL: $t has no seed corpus tests/corpus/$name"; fail=1; continue; fi
    mkdir -p "$tmp/$name"
    t0=$(date +%s)
    if "$D/$t" -runs=10000 -max_total_time=15 -timeout=10 -max_len=65536 -seed=1 \
        -artifact_prefix="$tmp/$name-" "$tmp/$name" "tests/corpus/$name" >"$tmp/$name.log" 2>&1; then
        echo "ok   $t ($(( $(date +%s) - t0 )) s, $(ls "tests/corpus/$name" | wc -l) seeds)"
    else
        echo "FAIL $t:"; tail -n 30 "$tmp/$name.log"; fail=1
    fi
done
[ $n -ge 9 ] || { echo "FAIL: only $n fuzz targets (expected the 9 parsers)"; fail=1; }
exit $fail
