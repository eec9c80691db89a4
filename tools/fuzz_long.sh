#!/bin/sh
# tools/fuzz_long.sh — `make fuzz-long`: runs each libFuzzer target for a
# given time on its seed corpus, one after the other, and ends with a table
# (target, seconds, executions, corpus entries found, coverage, result).
#   usage: tools/fuzz_long.sh FUZZ_DIR SECONDS fuzz_tier fuzz_ckpt ...
# Target fuzz_X is seeded from tests/corpus/X; what it finds goes to
# FUZZ_DIR/long/X/ (a fresh folder each run), its log to FUZZ_DIR/long/X.log
# and a crashing input to FUZZ_DIR/long/X-crash-*. Exit status 1 if any
# target crashed, leaked, hung (-timeout=10 s per input) or ran past 2 GB.
dir=$1; secs=$2; shift 2
case $secs in ''|*[!0-9]*) echo "fuzz_long: FUZZ_TIME must be a whole number of seconds, not '$secs'" >&2; exit 2 ;; esac
out=$dir/long
mkdir -p "$out" || exit 2
export ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
table=""; bad=0
for t in "$@"; do
    name=${t#fuzz_}
    seeds=tests/corpus/$name
    [ -d "$seeds" ] || { echo "fuzz_long: no seed corpus $seeds for $t" >&2; exit 2; }
    rm -rf "${out:?}/$name"; mkdir -p "$out/$name"
    echo "fuzz_long: $t for ${secs}s (log $out/$name.log)"
    t0=$(date +%s)
    "$dir/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$out/$name-" "$out/$name" "$seeds" >"$out/$name.log" 2>&1
    rc=$?
    dt=$(( $(date +%s) - t0 ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$name.log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$out/$name.log" | tail -n 1 | cut -d' ' -f2)
    found=$(ls "$out/$name" | wc -l)
    res=ok; [ $rc -ne 0 ] && { res="FAILED (exit $rc; see the log)"; bad=1; }
    table="$table$(printf '%-18s %6s %12s %8s %6s  %s' "$t" "$dt" "${execs:-?}" "$found" "${cov:-?}" "$res")
"
done
printf '%-18s %6s %12s %8s %6s  %s\n' target seconds executions corpus cov result
printf '%s' "$table"
exit $bad
