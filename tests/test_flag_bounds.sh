#!/bin/sh
# tests/test_flag_bounds.sh — every numeric flag of every command at its
# boundary values (0, -1, 2^31, 2^32, 2^63, 1e39, nan, inf, 1e-45, and
# 0.99999999999, which is 1 as a float): each run
# either works (exit 0, or still running after its time: a huge but valid
# count) or is refused with one line on stderr that names the flag — never a
# signal, a sanitizer report, or a message about something else.
. tests/lib.sh
case "$T" in
*asan*) ;;
*) echo "test_flag_bounds: runs with the ASan+UBSan build only (make test runs it there)"; exit 0 ;;
esac
setup bounds

"$T" synth --preset tiny -o "$dir/m.tier" >/dev/null 2>&1 || fail "synth"
"$T" synth --preset tiny --quant f32 -o "$dir/f32.tier" >/dev/null 2>&1 || fail "synth f32"
awk 'NR <= 400' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" >/dev/null 2>&1 || fail "tokenize"
# eval reads all of its data at --max-tokens 0 (and at 2^31...): a short file keeps those runs short under ASan
awk 'NR <= 12' "$dir/text.txt" >"$dir/short.txt"
"$T" tokenize --input "$dir/short.txt" -o "$dir/short.tok" >/dev/null 2>&1 || fail "tokenize short"

VALUES="0 -1 2147483648 4294967296 9223372036854775808 1e39 nan inf 1e-45 0.99999999999"
runs=0

# one I ARGS...: runs the command into $dir/out.I, $dir/err.I, its exit code in $dir/rc.I
one() {
    i=$1; shift
    timeout 20 "$T" "$@" >"$dir/out.$i" 2>"$dir/err.$i"
    echo $? >"$dir/rc.$i"
}

# judge WHAT I: a run that works, or is refused in one line naming the flag
judge() {
    what=$1; flag=$2; i=$3; rc=$(cat "$dir/rc.$i"); err="$dir/err.$i"
    [ "$rc" -eq 124 ] && return # still working: accepted
    if [ "$rc" -ge 128 ]; then fail "$what: killed by a signal (exit $rc)"; head -3 "$err"; return; fi
    if grep -q -e Sanitizer -e 'runtime error' "$err"; then fail "$what: sanitizer report"; head -5 "$err"; return; fi
    [ "$rc" -eq 0 ] && return
    lines=$(grep -c . "$err")
    if [ "$lines" -ne 1 ]; then fail "$what: $lines lines on stderr, expected one"; head -3 "$err"; return; fi
    grep -q -e "--$flag" "$err" || { fail "$what: the message does not name --$flag"; cat "$err"; }
}

# bounds NAME "BASE ARGS" FLAG...: each flag at each value after the base arguments, two runs at a time
# (a run that writes takes its own output: OUT is replaced by OUT.1 / OUT.2 in BASE)
bounds() {
    name=$1; base=$2; shift 2
    for flag in "$@"; do
        set -- $VALUES
        while [ $# -gt 0 ]; do
            a=$1; shift
            # shellcheck disable=SC2086
            one 1 $(echo "$base" | sed 's/@/1/g') "--$flag" "$a" &
            if [ $# -gt 0 ]; then
                b=$1; shift
                # shellcheck disable=SC2086
                one 2 $(echo "$base" | sed 's/@/2/g') "--$flag" "$b" &
            else
                b=
            fi
            wait
            runs=$((runs + 1)); judge "$name --$flag $a" "$flag" 1
            [ -n "$b" ] && { runs=$((runs + 1)); judge "$name --$flag $b" "$flag" 2; }
        done
    done
}

PLAN="--model $dir/m.tier"
BATCH="--seq 16 --micro-batch 1 --batch-tokens 16"
bounds plan "plan $PLAN" seq micro-batch rank alpha dropout clip batch-tokens hbm host io-gbps gflops
bounds train "train --model $dir/m.tier --data $dir/t.tok --out $dir/run@ $BATCH --steps 2 --stop-after 1 --eval-every 0 --eval-tokens 32 --save-every 0 --force" \
    steps warmup eval-every eval-tokens save-every stop-after threads seed lr min-lr wd rank alpha dropout clip seq micro-batch batch-tokens hbm host
bounds synth "synth --preset tiny -o $dir/s@.tier --force" prune-ratio layers embed-std seed threads buffer-limit
bounds eval "eval --model $dir/m.tier --data $dir/short.tok --seq 16 --batch-tokens 64 --max-tokens 64" seq micro-batch max-tokens batch-tokens hbm host
bounds "bench kernels" "bench kernels --device cpu --m 64 --n 64 --k 64 --iters 1 --copy-mb 1 --attn-seq 16 --heads 2 --kv-heads 1 --head-dim 8" \
    m n k iters copy-mb attn-seq heads kv-heads head-dim
bounds "bench overlap" "bench overlap --model $dir/m.tier $BATCH --steps 1" steps threads seq rank alpha
bounds prune "prune $dir/f32.tier --method unst --ratio 0.5 -o $dir/p@.tier --force" calib-samples calib-seq
bounds "prune --method rand" "prune $dir/f32.tier --method rand --ratio 0.5 -o $dir/p@.tier --force" seed
bounds "prune --ratio" "prune $dir/f32.tier --method unst -o $dir/p@.tier --force" ratio
bounds tokenize "tokenize -i $dir/text.txt -o $dir/x@.tok --force" val-frac
bounds verify "verify $dir/m.tier" qd chunk
bounds "bench io" "bench io $dir/m.tier --no-buffered" qd chunk slots
bounds generate "generate --model $dir/m.tier --prompt hi -n 4" max-new-tokens temperature top-k top-p batch context \
    prefill-chunk hbm
bounds "eval --task" "eval --model $dir/m.tier --task tests/fixtures/tasks/gsm-style.jsonl --max-new-tokens 4 --seq 16 --batch-tokens 64" \
    max-new-tokens batch
bounds "bench generate" "bench generate --model $dir/m.tier --batch 1 --prompt-tokens 4 --new-tokens 2 --rounds 1" \
    prompt-tokens new-tokens rounds prefill-chunk hbm
bounds "plan --generate" "plan $PLAN --generate" context
"$T" tokenize --input tools/demo-data/un-slice.txt -o "$dir/u.tok" >/dev/null 2>&1 || fail "tokenize un"
bounds "train --mix dynamic" "train --model $dir/m.tier --data $dir/t.tok --data $dir/u.tok --mix dynamic --reference $dir/f32.tier --out $dir/mix@ $BATCH --steps 2 --eval-every 0 --eval-tokens 32 --save-every 0 --force" \
    mix-every mix-temp
# rank 8, not the default 128 (the last --galore-rank given counts): the projector's first computation is
# seconds of host algebra under ASan at 128, and each accepted value runs it
bounds "train --optim galore" "train --full --model $dir/f32.tier --data $dir/t.tok --out $dir/g@.tier $BATCH --steps 1 --eval-every 0 --eval-tokens 32 --optim galore --galore-rank 8 --force" \
    galore-rank galore-update-every galore-scale
printf '%s\n' '{"traceEvents":[{"name":"read","ph":"X","ts":0,"dur":100,"pid":1,"tid":1},' \
    '{"name":"step","ph":"i","s":"g","ts":0,"pid":1,"tid":0,"args":{"step":1}}]}' >"$dir/k.json"
bounds trace "trace $dir/k.json -o $dir/tr@.svg --force" step from to width
echo "test_flag_bounds: $runs runs"
finish test_flag_bounds
