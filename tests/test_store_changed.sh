#!/bin/sh
# tests/test_store_changed.sh — a model store changed while a command reads it. Every part of a command reads
# the file it opened: another store renamed over the path mid-run (what synth, quantize, prune, import and
# train --full do to an existing output with --force) is not seen, not even by a part that starts after the
# rename (eval --task scores its generative items with a runtime of its own, after the multiple-choice ones;
# it read the new store there, or aborted where its shapes differed); the results equal an undisturbed run's.
# Removing the path is harmless too. Under a streamed train, which reads every layer from the store each step,
# a truncation, or a rewrite in place (which the extents' checksums catch: it used to be called corruption,
# with the advice to re-create a store that is fine), is one line naming the store and exit 1.
. tests/lib.sh
setup storechg

"$T" synth --preset tiny --quant f32 -o "$dir/a.tier" >/dev/null || fail "synth a"
"$T" synth --preset tiny --quant f32 --seed 5 -o "$dir/b.tier" >/dev/null || fail "synth b" # a's shapes, other weights
"$T" synth --preset small --layers 2 --quant f32 -o "$dir/c.tier" >/dev/null || fail "synth c" # larger layers

# during NAME PATTERN CHANGE CMD...: runs CMD (stdout NAME.out, stderr NAME.err in $dir); once either shows a line
# matching PATTERN, evals CHANGE; rc: CMD's exit status. A run that ends before the line is too fast to disturb:
# said, not failed (changed=0).
during() {
    name=$1; pat=$2; change=$3; shift 3
    "$@" >"$dir/$name.out" 2>"$dir/$name.err" &
    pid=$!
    (sleep 120 && kill -KILL $pid) >/dev/null 2>&1 &
    watchdog=$!
    while kill -0 $pid 2>/dev/null && ! cat "$dir/$name.out" "$dir/$name.err" 2>/dev/null | grep -q "$pat"; do sleep 0.05; done
    changed=0
    if kill -0 $pid 2>/dev/null; then eval "$change"; changed=1; else echo "note: $name ended before '$pat'"; fi
    wait $pid; rc=$?
    kill $watchdog 2>/dev/null
}

# eval --task: 150 multiple-choice items (long enough for a progress line), then 6 generative ones
awk 'NF >= 10 && $0 ~ /^[a-zA-Z ,.]+$/ && n < 150 { n++
    printf "{\"context\": \"%s %s %s %s %s\", \"choices\": [\" %s\", \" %s\", \" %s\", \" %s\"], \"label\": %d}\n",
        $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, n % 4 }' tools/demo-data/nlp-corpus-slice.txt >"$dir/task.jsonl"
for i in 1 2 3 4 5 6; do printf '{"prompt": "Question %d: the last letter?\\nAnswer:", "answer": "z"}\n' $i; done >>"$dir/task.jsonl"
TASK="--task $dir/task.jsonl --seq 64 --micro-batch 4 --batch-tokens 256 --max-new-tokens 16"
expect_ok "eval --task, undisturbed" "$T" eval --model "$dir/a.tier" $TASK --samples "$dir/s0.jsonl"
# renamed over mid-run (a's shapes, then larger ones: that was an internal-error abort), or removed
for c in "same:cp $dir/b.tier $dir/m.tmp && mv $dir/m.tmp $dir/m.tier" \
         "other:cp $dir/c.tier $dir/m.tmp && mv $dir/m.tmp $dir/m.tier" "rm:rm $dir/m.tier"; do
    n=${c%%:*}
    cp "$dir/a.tier" "$dir/m.tier"
    rm -f "$dir/s.jsonl"
    during "eval-$n" "requests (" "${c#*:}" "$T" eval --model "$dir/m.tier" $TASK --samples "$dir/s.jsonl"
    [ $rc -eq 0 ] && ! grep -q -e "internal error" -e Sanitizer -e "runtime error" "$dir/eval-$n.err" ||
        { fail "eval --task, store changed ($n): exit $rc"; tail -3 "$dir/eval-$n.err"; continue; }
    cmp -s "$dir/s0.jsonl" "$dir/s.jsonl" ||
        fail "eval --task, store renamed over or removed ($n): the samples differ from the undisturbed run's"
done

# train, streamed (--hbm and --host too small to keep the layers: each step reads them from the store)
awk 'NR <= 3000' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" >/dev/null || fail "tokenize"
TRAIN="--data $dir/t.tok --rank 4 --seq 32 --micro-batch 2 --batch-tokens 128 --eval-every 0 --save-every 0 --hbm 9M --host 8M --steps 12"
expect_ok "train, streamed, undisturbed" "$T" train --model "$dir/a.tier" $TRAIN --out "$dir/r0"
grep -q "host cache no" "$dir/out" || fail "train: the plan keeps the layers in a host cache (this test wants them streamed)"
grep -o "loss [0-9.]*" "$dir/out" >"$dir/loss0"
for c in "same:cp $dir/b.tier $dir/m.tmp && mv $dir/m.tmp $dir/m.tier" "rm:rm $dir/m.tier"; do
    n=${c%%:*}
    cp "$dir/a.tier" "$dir/m.tier"
    during "train-$n" "^step  2/" "${c#*:}" "$T" train --model "$dir/m.tier" $TRAIN --out "$dir/r-$n"
    [ $rc -eq 0 ] || { fail "train, store changed ($n): exit $rc"; tail -3 "$dir/train-$n.err"; continue; }
    grep -o "loss [0-9.]*" "$dir/train-$n.out" | cmp -s - "$dir/loss0" ||
        fail "train, store renamed over or removed ($n): the losses differ from the undisturbed run's"
done
cp "$dir/a.tier" "$dir/m.tier"
during "train-cut" "^step  2/" "truncate -s 4000000 $dir/m.tier" "$T" train --model "$dir/m.tier" $TRAIN --out "$dir/r-cut"
[ $changed -eq 0 ] || { [ $rc -eq 1 ] && [ "$(grep -c . "$dir/train-cut.err")" -eq 1 ] && grep -q "m.tier.*truncated" "$dir/train-cut.err"; } ||
    { fail "train, store truncated: exit $rc"; cat "$dir/train-cut.err"; }
cp "$dir/a.tier" "$dir/m.tier"
during "train-inplace" "^step  2/" "dd if=$dir/b.tier of=$dir/m.tier bs=1M conv=notrunc 2>/dev/null" \
    "$T" train --model "$dir/m.tier" $TRAIN --out "$dir/r-inplace"
[ $changed -eq 0 ] || { [ $rc -eq 1 ] && [ "$(grep -c . "$dir/train-inplace.err")" -eq 1 ] &&
    grep -q "m.tier was modified while this run was reading it" "$dir/train-inplace.err"; } ||
    { fail "train, store rewritten in place: exit $rc"; cat "$dir/train-inplace.err"; }

# without /proc (a bare chroot) a streamed run reads its store through the path, while that is still its file
# (the file it opened is reopened through /proc/self/fd where /proc is there); root with mount namespaces only,
# and not a sanitizer build (its runtime reads its options and threads from /proc)
case "$T" in
*/asan/*) echo "note: a sanitizer build: the run without /proc is skipped" ;;
*)
    if unshare -m true 2>/dev/null; then
        cp "$dir/a.tier" "$dir/m.tier"
        unshare -m sh -c "mount -t tmpfs none /proc && \"\$0\" \"\$@\"" "$T" train --model "$dir/m.tier" $TRAIN \
            --out "$dir/r-noproc" >"$dir/noproc.out" 2>"$dir/noproc.err" ||
            { fail "train without /proc: exit $?"; cat "$dir/noproc.err"; }
        grep -o "loss [0-9.]*" "$dir/noproc.out" | cmp -s - "$dir/loss0" || fail "train without /proc: other losses"
    else
        echo "note: no mount namespace: the run without /proc is skipped"
    fi ;;
esac

finish test_store_changed
