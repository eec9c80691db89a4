#!/bin/sh
# tests/test_ulimit_v.sh — under an address-space limit (ulimit -v) a command ends, and in one line. OpenBLAS
# retries forever where it cannot have its working buffer (128 MiB of address space a thread), so tiertrain
# makes it take that before the command's own memory (tools/main.c tool_blas_ready) and says when it cannot;
# a thread without room for its stack names ulimit -v. Every limit from where the binary loads to where a small
# train fits, in 16 MiB steps: each run ends within a minute, with its adapter or with one line on stderr.
# Skipped where no limit lets the binary load (an ASan build reserves terabytes of address space).
. tests/lib.sh
setup ulimit_v
# two BLAS threads wherever it runs (tests/run.sh sets one when tests run side by side): the library's own thread
# and the calling one's buffers, and --threads 3 adds one more
export OPENBLAS_NUM_THREADS=2

"$T" synth --preset tiny --prune-ratio 0.5 -o "$dir/m.tier" >/dev/null || fail "synth"
awk 'NR <= 300' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" >/dev/null || fail "tokenize"

# limited KIB CMD...: CMD under ulimit -v KIB, its stdout and stderr in $dir/out and $dir/err; sets rc
limited() {
    kib=$1; shift
    timeout 60 sh -c 'ulimit -v "$0" && exec "$@"' "$kib" "$@" >"$dir/out" 2>"$dir/err"
    rc=$?
}
# the smallest limit (KiB, to 4 MiB) at which the binary loads and runs its first line (the argument check of
# `info` with no store given): between lo, where it does not, and hi, where it does
lo=65536 hi=16777216
limited $hi "$T" info
if grep -q "tiertrain info: " "$dir/err"; then
    while [ $((hi - lo)) -gt 4096 ]; do
        mid=$(((lo + hi) / 2))
        limited $mid "$T" info
        if grep -q "tiertrain info: " "$dir/err"; then hi=$mid; else lo=$mid; fi
    done
    echo "note: the binary loads under ulimit -v $hi KiB"
    blas=0 refused=0 trained=0 k=$hi
    while [ $k -le $((hi + 1024 * 1024)) ]; do
        for threads in 0 3; do
            at="ulimit -v $k, --threads $threads"
            rm -rf "$dir/run"
            limited $k "$T" train --model "$dir/m.tier" --data "$dir/t.tok" --rank 4 --seq 32 --micro-batch 2 \
                --batch-tokens 128 --steps 2 --eval-tokens 64 --threads $threads --out "$dir/run"
            lines=$(grep -c . "$dir/err")
            if [ $rc -eq 124 ] || [ $rc -ge 128 ]; then
                fail "$at: train did not end by itself (exit $rc)"; cat "$dir/err"
            elif [ $rc -eq 0 ]; then
                [ -s "$dir/run/adapter_model.safetensors" ] || fail "$at: exit 0 without an adapter"
                trained=$((trained + 1))
            elif [ "$lines" -ne 1 ]; then
                fail "$at: exit $rc with $lines lines on stderr, expected one"; cat "$dir/err"
            else
                grep -q "ulimit -v" "$dir/err" || { fail "$at: the line does not name the limit"; cat "$dir/err"; }
                [ -e "$dir/run" ] && { fail "$at: a failed run left its --out folder"; ls -la "$dir/run"; }
                refused=$((refused + 1))
                grep -q "the BLAS library's working buffers" "$dir/err" && blas=$((blas + 1))
            fi
        done
        [ $trained -ge 4 ] && break # both fit from here on
        k=$((k + 16 * 1024))
    done
    echo "note: from $hi KiB in 16 MiB steps: $refused refused in one line ($blas for the BLAS buffers), then trained"
    [ $blas -ge 1 ] || fail "no limit was refused for the BLAS library's buffers"
    # with one BLAS thread already, the refusal does not advise fewer (its one way on: raise the limit)
    OPENBLAS_NUM_THREADS=1 limited $hi "$T" train --model "$dir/m.tier" --data "$dir/t.tok" --steps 1 --out "$dir/run1"
    if grep -q "the BLAS library's working buffers" "$dir/err"; then
        grep -q "for 1 thread); raise it$" "$dir/err" || { fail "one BLAS thread: the refusal advises fewer"; cat "$dir/err"; }
    fi
    [ $trained -ge 1 ] || fail "no limit up to $k KiB trained"
else
    echo "SKIP: the binary does not load under ulimit -v $hi KiB (a sanitizer build); nothing to check"
    exit 77
fi
finish test_ulimit_v
