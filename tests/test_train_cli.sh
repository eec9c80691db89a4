#!/bin/sh
# tests/test_train_cli.sh — `tiertrain train` end to end on a tiny pruned NF4
# store: a short run writes a checkpoint and a PEFT adapter; SIGINT stops a
# run cleanly with a checkpoint, and --resume continues it; bad input (missing
# or corrupt token file, missing or corrupt checkpoint, wrong flags) is one
# line on stderr and a non-zero exit, and leaves the last checkpoint intact.
. tests/lib.sh
setup train

"$T" synth --preset tiny --prune-ratio 0.5 -o "$dir/m.tier" >/dev/null || fail "synth"
awk 'NR <= 3000' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" >/dev/null || fail "tokenize"
FLAGS="--model $dir/m.tier --data $dir/t.tok --rank 4 --seq 32 --micro-batch 2 --batch-tokens 128 --eval-every 2 --eval-tokens 256 --lr 5e-3"

# A short run: checkpoint + adapter, loss lines, JSON lines.
"$T" train $FLAGS --steps 4 --out "$dir/run" >"$dir/out" 2>"$dir/err" || { fail "train"; cat "$dir/err"; }
for f in checkpoint.bin adapter_model.safetensors adapter_config.json; do
    [ -s "$dir/run/$f" ] || fail "train did not write $f"
done
grep -q "^step 4/4 .*val" "$dir/out" || { fail "no final step line with validation"; cat "$dir/out"; }
grep -q '"peft_type": "LORA"' "$dir/run/adapter_config.json" || fail "adapter_config.json lacks peft_type"
"$T" train $FLAGS --steps 2 --json --out "$dir/runj" >"$dir/out" 2>&1 || fail "train --json"
[ "$(grep -c '^{"step":' "$dir/out")" -eq 3 ] || { fail "--json: expected 3 JSON lines (step 0..2)"; cat "$dir/out"; }

# SIGINT: a long run stopped after its first steps writes a checkpoint and exits 0; resume continues.
"$T" train $FLAGS --steps 100000 --save-every 0 --eval-every 0 --out "$dir/sig" >"$dir/sig.out" 2>&1 &
pid=$!
for i in $(seq 1 100); do grep -q "^step *3/" "$dir/sig.out" && break; sleep 0.1; done
kill -INT $pid
wait $pid; rc=$?
[ $rc -eq 0 ] || fail "SIGINT: exit $rc"
grep -q "interrupted at step" "$dir/sig.out" || { fail "SIGINT: no message"; cat "$dir/sig.out"; }
[ -s "$dir/sig/checkpoint.bin" ] || fail "SIGINT: no checkpoint"
n=$(sed -n 's/^interrupted at step \([0-9]*\).*/\1/p' "$dir/sig.out")
"$T" train $FLAGS --steps $((n + 2)) --save-every 0 --eval-every 0 --out "$dir/sig" --resume "$dir/sig" >"$dir/out" 2>&1
# (a different --steps is refused: the schedule depends on it)
grep -q "other training options" "$dir/out" || { fail "resume with other --steps was not refused"; cat "$dir/out"; }

# Bad input.
cp "$dir/run/checkpoint.bin" "$dir/ck.keep"
expect_error "missing tokens" "nope.tok" "$T" train $FLAGS --data "$dir/nope.tok" --steps 2 --out "$dir/run"
head -c 100 "$dir/t.tok" >"$dir/trunc.tok"
expect_error "truncated tokens" "trunc.tok" "$T" train $FLAGS --data "$dir/trunc.tok" --steps 2 --out "$dir/run"
expect_error "missing checkpoint" "nowhere" "$T" train $FLAGS --steps 4 --out "$dir/run" --resume "$dir/nowhere"
mkdir "$dir/empty"
expect_error "empty checkpoint dir" "checkpoint.bin" "$T" train $FLAGS --steps 4 --out "$dir/run" --resume "$dir/empty"
mkdir "$dir/bad"; cp "$dir/run/checkpoint.bin" "$dir/bad/"
printf 'garbage' | dd of="$dir/bad/checkpoint.bin" bs=1 seek=200 conv=notrunc 2>/dev/null
expect_error "corrupt checkpoint" "corrupt" "$T" train $FLAGS --steps 4 --out "$dir/run" --resume "$dir/bad"
expect_error "missing model" "no.tier does not exist" "$T" train $FLAGS --model "$dir/no.tier" --steps 2 --out "$dir/run"
expect_error "no --out" "--out DIR is required" "$T" train --model "$dir/m.tier" --data "$dir/t.tok"
expect_error "bad batch" "multiple of --seq" "$T" train $FLAGS --batch-tokens 100 --steps 2 --out "$dir/run"
expect_error "bad target" "unknown projection 'qq'" "$T" train $FLAGS --targets q,qq --steps 2 --out "$dir/run"
# a validation file tokenized for a bigger vocabulary than the model's
"$T" tokenize --input "$dir/text.txt" --tokenizer tests/fixtures/tokenizer-mini.json -o "$dir/big.tok" >/dev/null 2>&1 ||
    fail "tokenize with the fixture tokenizer"
expect_error "val vocab" "big.tok.val was tokenized for a vocabulary" "$T" train $FLAGS --val "$dir/big.tok.val" --steps 2 --out "$dir/run"
: >"$dir/afile"
expect_error "out is a file" "afile" "$T" train $FLAGS --steps 2 --out "$dir/afile"
expect_error "nan alpha" "--alpha must be" "$T" train $FLAGS --alpha nan --steps 2 --out "$dir/run"
cmp -s "$dir/ck.keep" "$dir/run/checkpoint.bin" || fail "a failed run changed the last checkpoint"

finish test_train_cli
