#!/bin/sh
# tests/test_trace_cli.sh — `tiertrain trace`, the SVG timeline of a --trace
# file: on a hand-written trace, the busy shares (unions of overlapping
# events), the overlap efficiency and the bars drawn are the known ones; on a
# real streamed run's trace (3 steps, which it marks), the whole trace and
# one step are drawn (every drawn event a bar with its title, the six tracks
# labelled, well-formed XML where python3 can check); bad input is one line
# and writes nothing.
. tests/lib.sh
setup trace

# A trace with known figures over 0..300 us: io busy [0, 150] (two overlapping reads), compute [100, 300],
# one event entirely outside a --from/--to window of 120..200 us.
cat >"$dir/k.json" <<'EOF'
{"traceEvents":[
{"name":"thread_name","ph":"M","pid":1,"tid":1,"args":{"name":"io"}},
{"name":"thread_sort_index","ph":"M","pid":1,"tid":1,"args":{"sort_index":0}},
{"name":"thread_name","ph":"M","pid":1,"tid":4,"args":{"name":"compute"}},
{"name":"thread_sort_index","ph":"M","pid":1,"tid":4,"args":{"sort_index":3}},
{"name":"read","cat":"io","ph":"X","ts":0,"dur":100,"pid":1,"tid":1,"args":{"layer":0}},
{"name":"read","cat":"io","ph":"X","ts":50,"dur":100,"pid":1,"tid":1,"args":{"layer":1}},
{"name":"forward","cat":"compute","ph":"X","ts":100,"dur":200,"pid":1,"tid":4,"args":{"layer":0}},
{"name":"step","ph":"i","s":"g","ts":0,"pid":1,"tid":0,"args":{"step":1}},
{"name":"step","ph":"i","s":"g","ts":100,"pid":1,"tid":0,"args":{"step":2}}
]}
EOF
expect_ok "known trace" "$T" trace "$dir/k.json"
grep -q "k.svg: 3 events on 2 tracks, 0 .. 300 us; IO side busy 50.0%, compute side 66.7%, overlap efficiency 0.667" \
    "$dir/out" || { fail "known trace: wrong figures"; cat "$dir/out"; }
[ -f "$dir/k.svg" ] || fail "known trace: no k.svg next to k.json"
[ "$(grep -c '<title>' "$dir/k.svg")" -eq 3 ] || fail "known trace: expected 3 bars"
grep -q '<title>read layer 1: at 50 us, 100 us</title>' "$dir/k.svg" || fail "known trace: a bar's title"
# step 1 is 0..100 us: io busy the whole window, compute not at all
expect_ok "known trace, step 1" "$T" trace "$dir/k.json" --step 1 -o "$dir/k1.svg"
grep -q "2 events on 2 tracks, 0 .. 100 us; IO side busy 100.0%, compute side 0.0%, overlap efficiency 1.000" \
    "$dir/out" || { fail "step 1: wrong figures"; cat "$dir/out"; }
expect_ok "known trace, a window" "$T" trace "$dir/k.json" --from 0.12 --to 0.2 -o "$dir/kw.svg"
grep -q "2 events on 2 tracks, 120 us .. 200 us; IO side busy 37.5%, compute side 100.0%" "$dir/out" ||
    { fail "window: wrong figures"; cat "$dir/out"; }

# A real trace: 3 streamed steps on cpu-async (the copies and the compute on queues of their own).
"$T" synth --preset tiny --quant f32 -o "$dir/m.tier" >/dev/null || fail "synth"
awk 'NR <= 400' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" --val-frac 0 >/dev/null || fail "tokenize"
expect_ok "train --trace" "$T" train --model "$dir/m.tier" --data "$dir/t.tok" --out "$dir/run" --hbm 10M \
    --seq 16 --micro-batch 1 --batch-tokens 64 --steps 3 --eval-every 0 --device cpu-async --trace "$dir/run.json"
[ "$(grep -c '"name":"step","ph":"i"' "$dir/run.json")" -eq 3 ] || fail "the trace does not mark 3 steps"
# the trace cannot be written (a full disk): one line and a non-zero exit, though the adapter stands (where a tmpfs
# can be mounted: root with CAP_SYS_ADMIN)
mkdir "$dir/small"
if mount -t tmpfs -o size=16k tmpfs "$dir/small" 2>/dev/null; then
    expect_error "trace on a full disk" "writing the trace file .*small/t.json failed: No space left" "$T" train \
        --model "$dir/m.tier" --data "$dir/t.tok" --out "$dir/run-full" --seq 16 --micro-batch 1 --batch-tokens 64 \
        --steps 3 --eval-every 0 --trace "$dir/small/t.json"
    [ -s "$dir/run-full/adapter_model.safetensors" ] || fail "trace on a full disk: the adapter is missing"
    [ -z "$(ls "$dir/small")" ] || { fail "trace on a full disk: files left behind"; ls -l "$dir/small"; }
    # bench overlap (a 7 KiB trace on 4 KiB): its figures are printed all the same, the trace's failure after them
    umount "$dir/small"
    mount -t tmpfs -o size=4k tmpfs "$dir/small" || fail "a second tmpfs"
    expect_error "bench overlap --trace on a full disk" "writing the trace file .*small/o.json failed: No space left" \
        "$T" bench overlap --model "$dir/m.tier" --seq 16 --micro-batch 1 --batch-tokens 32 --steps 1 \
        --trace "$dir/small/o.json"
    grep -q "^overlap efficiency = " "$dir/out" || { fail "bench overlap --trace on a full disk: no figures"; cat "$dir/out"; }
    [ -z "$(ls "$dir/small")" ] || { fail "bench overlap --trace on a full disk: files left behind"; ls -l "$dir/small"; }
    umount "$dir/small"
else
    echo "note: no tmpfs could be mounted: the disk-full case is skipped"
fi
# two runs with one --trace: the second is refused before it trains (the first holds the file from its start),
# not at its end with its run done
"$T" train --model "$dir/m.tier" --data "$dir/t.tok" --out "$dir/ta" --seq 16 --micro-batch 1 --batch-tokens 64 \
    --steps 100000 --eval-every 0 --save-every 0 --trace "$dir/both.json" >"$dir/ta.out" 2>&1 &
pa=$!
i=0
while [ $i -lt 600 ] && ! grep -q '^step' "$dir/ta.out"; do sleep 0.05; i=$((i + 1)); done
expect_error "a --trace another run writes" "another process is writing .*both.json" "$T" train --model "$dir/m.tier" \
    --data "$dir/t.tok" --out "$dir/tb" --seq 16 --micro-batch 1 --batch-tokens 64 --steps 2 --trace "$dir/both.json"
[ -e "$dir/tb" ] && fail "the refused second run left its --out folder"
kill -INT $pa
wait $pa
[ -s "$dir/both.json" ] || fail "the first run's trace is missing after the second was refused"
expect_ok "trace, whole" "$T" trace "$dir/run.json"
all=$(sed -n 's/.*: \([0-9]*\) events on 6 tracks.*/\1/p' "$dir/out")
[ -n "$all" ] && [ "$(grep -c '<title>' "$dir/run.svg")" -eq "$all" ] ||
    { fail "whole trace: bars and the count printed differ"; cat "$dir/out"; }
for t in io copy decompress compute spill optimizer; do
    grep -q "<text x=\"10\" y=\"[0-9.]*\">$t</text>" "$dir/run.svg" || fail "whole trace: no row for $t"
done
expect_ok "trace, step 2" "$T" trace "$dir/run.json" --step 2 -o "$dir/s2.svg"
two=$(sed -n 's/.*: \([0-9]*\) events on 6 tracks.*/\1/p' "$dir/out")
[ -n "$two" ] && [ "$two" -gt 0 ] && [ "$two" -lt "$all" ] || fail "step 2: $two events of $all"
grep -q '>step 2</text>' "$dir/s2.svg" && grep -q 'step 2, ' "$dir/s2.svg" || fail "step 2: no step mark or title"
if command -v python3 >/dev/null; then
    python3 -c 'import sys, xml.etree.ElementTree as E; [E.parse(f) for f in sys.argv[1:]]' "$dir/run.svg" \
        "$dir/s2.svg" "$dir/k.svg" 2>"$dir/err" || { fail "not well-formed XML"; cat "$dir/err"; }
fi

# Bad input: one line, nothing written.
expect_error "step past the last" "marks 3 steps; --step must be 1..3" "$T" trace "$dir/run.json" --step 4 -o "$dir/x.svg"
printf 'not json' >"$dir/bad.json"
expect_error "not JSON" "bad.json is not a trace" "$T" trace "$dir/bad.json" -o "$dir/x.svg"
printf '{"a":1}' >"$dir/nt.json"
expect_error "no traceEvents" "no traceEvents array" "$T" trace "$dir/nt.json" -o "$dir/x.svg"
expect_error "missing file" "absent.json does not exist; give a trace written with --trace" "$T" trace "$dir/absent.json" -o "$dir/x.svg"
mkdir -p "$dir/tdir"
expect_error "a folder" "tdir is a directory; give a trace" "$T" trace "$dir/tdir" -o "$dir/x.svg"
expect_error "a window with nothing" "no event between" "$T" trace "$dir/k.json" --from 5 -o "$dir/x.svg"
expect_error "output over the input" "-o $dir/k.json is the input" "$T" trace "$dir/k.json" -o "$dir/k.json" --force
# an existing output (here a store) is kept without --force, replaced with it
cp "$dir/m.tier" "$dir/keep.tier"
expect_error "existing output" "-o $dir/keep.tier exists; pass --force" "$T" trace "$dir/k.json" -o "$dir/keep.tier"
cmp -s "$dir/m.tier" "$dir/keep.tier" || fail "trace replaced an existing file without --force"
expect_error "existing default output" "k.svg exists; pass --force" "$T" trace "$dir/k.json"
expect_ok "--force" "$T" trace "$dir/k.json" -o "$dir/keep.tier" --force
grep -q '<svg' "$dir/keep.tier" || fail "--force did not replace the file"
printf '{"traceEvents":[]}' >"$dir/empty.json"
expect_error "no events" "empty.json holds no event to draw" "$T" trace "$dir/empty.json" -o "$dir/x.svg"
# times far beyond a real trace's (a tick step below the doubles' spacing there) and non-finite ends: drawn or
# refused at once, never a hang
printf '%s' '{"traceEvents":[{"name":"read","ph":"X","ts":0,"dur":1,"pid":1,"tid":1},{"name":"read","ph":"X","ts":100000000000000000,"dur":64,"pid":1,"tid":1},{"name":"step","ph":"i","s":"g","ts":100000000000000000,"pid":1,"tid":0,"args":{"step":1}},{"name":"step","ph":"i","s":"g","ts":100000000000000032,"pid":1,"tid":0,"args":{"step":2}},{"name":"read","ph":"X","ts":1e308,"dur":1e308,"pid":1,"tid":1}]}' >"$dir/far.json"
timeout 60 "$T" trace "$dir/far.json" --step 1 -o "$dir/far.svg" >"$dir/out" 2>&1
rc=$?
[ $rc = 0 ] || { fail "far times: exit $rc"; cat "$dir/out"; }
# (a number, not a path: the title names "$dir/far.json", whose random part may spell either)
if grep -qE '["= ,(:]-?(inf|nan)' "$dir/far.svg"; then
    fail "far times: inf or nan in the SVG"; grep -E '["= ,(:]-?(inf|nan)' "$dir/far.svg" | head -3
fi
expect_error "step with a window" "--step is not combined" "$T" trace "$dir/k.json" --step 1 --from 0
expect_error "to before from" "--to must be after --from" "$T" trace "$dir/k.json" --from 0.2 --to 0.1
[ -e "$dir/x.svg" ] && fail "a refused run wrote its SVG"
ls "$dir"/*.partial >/dev/null 2>&1 && fail "a partial file was left"
finish test_trace_cli
