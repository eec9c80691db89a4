#!/bin/sh
# tests/test_generate_cli.sh — `tiertrain generate`, `plan --generate` and
# `bench generate` end to end on the tiny preset: a prompt's streamed text
# equals its --json completion; a prompts file in batches equals each prompt
# alone; the smallest --hbm the planner accepts gives the resident run's
# text; sampling is reproducible from --seed; --stop cuts the completion;
# an adapter changes the output and one for another model is refused. Bad
# input (a prompt longer than the context, a tokenizer whose vocabulary does
# not match, a malformed prompts line, an unknown flag value) is one line on
# stderr and a non-zero exit; Ctrl-C keeps what was generated (exit 130).
. tests/lib.sh
setup generate

"$T" synth --preset tiny --quant f32 -o "$dir/m.tier" >/dev/null 2>&1 || fail "synth"
"$T" synth --preset tiny --quant f32 --prune-ratio 0.5 -o "$dir/pruned.tier" >/dev/null 2>&1 || fail "synth pruned"
awk 'NR <= 2000' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" >/dev/null || fail "tokenize"
TRAIN="--data $dir/t.tok --rank 4 --alpha 8 --seq 32 --micro-batch 2 --batch-tokens 128 --steps 3 --lr 5e-2 --eval-tokens 64"
"$T" train --model "$dir/m.tier" $TRAIN --out "$dir/run" >/dev/null 2>&1 || fail "train"
"$T" train --model "$dir/pruned.tier" $TRAIN --out "$dir/run-pruned" >/dev/null 2>&1 || fail "train on the pruned store"

expect_ok "generate --help" "$T" generate --help
for f in "--max-new-tokens N .*(default: 128)" "--temperature T .*(default: 0)" "--top-p P .*(default: 1)" \
    "--batch N .*(default: 8)" "--hbm SIZE .*(default: 0)" "--stop STR" "--prompts FILE"; do
    grep -q -e "$f" "$dir/out" || fail "generate --help lacks '$f'"
done

# One prompt: the streamed text is the --json completion.
expect_ok "stream" "$T" generate -m "$dir/m.tier" --prompt "The committee" -n 24
cp "$dir/out" "$dir/streamed"
expect_ok "json" "$T" generate -m "$dir/m.tier" --prompt "The committee" -n 24 --json
grep -q '"tokens":24,.*"stop":"length"' "$dir/out" || fail "--json: not 24 tokens stopped by length"
sed 's/"seconds":[^,]*,//' "$dir/out" >"$dir/json1"
# the JSON is read with python3 where it is installed (not among the project's Debian packages)
if command -v python3 >/dev/null; then
    python3 - "$dir/streamed" "$dir/out" <<'EOF' || fail "streamed text differs from the --json completion"
import json, sys
s = open(sys.argv[1], encoding="utf-8").read()
j = json.loads(open(sys.argv[2]).read())
assert s == j["completion"] + "\n", (s, j)
EOF
fi
# -o: --prompt's JSON line goes to the file, with or without --json, and nothing streams.
for j in "" --json; do
    expect_ok "prompt -o $j" "$T" generate -m "$dir/m.tier" --prompt "The committee" -n 24 $j -o "$dir/one$j.jsonl" -f
    [ -s "$dir/out" ] && fail "prompt -o $j: text on standard output"
    sed 's/"seconds":[^,]*,//' "$dir/one$j.jsonl" | cmp -s - "$dir/json1" || fail "prompt -o $j: the file is not the --json line"
done

# A prompts file (lengths differ) in batches of 3 == each prompt alone; the smallest --hbm == resident.
printf '%s\n' '{"prompt":"The General Assembly"}' '{"prompt":"Human rights"}' '{"prompt":"x"}' \
    '{"prompt":"In the year"}' '{"prompt":"A long time ago, in a galaxy far away, there was"}' >"$dir/p.jsonl"
expect_ok "batch" "$T" generate -m "$dir/m.tier" --adapter "$dir/run" --prompts "$dir/p.jsonl" -n 16 --batch 3 \
    -o "$dir/batch.jsonl"
[ "$(wc -l <"$dir/batch.jsonl")" -eq 5 ] || fail "batch: expected 5 lines"
i=0
while IFS= read -r line; do
    i=$((i + 1))
    printf '%s\n' "$line" >"$dir/one.jsonl"
    "$T" generate -m "$dir/m.tier" --adapter "$dir/run" --prompts "$dir/one.jsonl" -n 16 >"$dir/one.out" 2>/dev/null ||
        fail "prompt $i alone"
    a=$(sed -n "${i}p" "$dir/batch.jsonl" | sed 's/"seconds":[^,]*,//')
    b=$(sed 's/"seconds":[^,]*,//' "$dir/one.out")
    [ "$a" = "$b" ] || fail "prompt $i alone differs from the batch: $b vs $a"
done <"$dir/p.jsonl"
min=$("$T" generate -m "$dir/m.tier" --adapter "$dir/run" --prompts "$dir/p.jsonl" -n 16 --batch 3 --hbm 1 2>&1 |
    sed -n 's/.*needs --hbm \([0-9.]*\) MiB.*/\1/p')
[ -n "$min" ] || fail "no smallest --hbm in the refusal"
expect_ok "smallest hbm" "$T" generate -m "$dir/m.tier" --adapter "$dir/run" --prompts "$dir/p.jsonl" -n 16 --batch 3 \
    --hbm "${min}M" -o "$dir/streamed.jsonl"
[ "$(sed 's/"seconds":[^,]*,//' "$dir/streamed.jsonl")" = "$(sed 's/"seconds":[^,]*,//' "$dir/batch.jsonl")" ] ||
    fail "streamed at --hbm ${min}M differs from resident"
# the adapter changes the output (its B is not zero after training)
expect_ok "bare" "$T" generate -m "$dir/m.tier" --prompts "$dir/p.jsonl" -n 16 -o "$dir/bare.jsonl"
cmp -s "$dir/bare.jsonl" "$dir/batch.jsonl" && fail "the adapter did not change any completion"

# Sampling: the same --seed gives the same text, another seed another one.
expect_ok "sample 1" "$T" generate -m "$dir/m.tier" --prompts "$dir/p.jsonl" -n 24 --temperature 1 --top-k 50 --seed 7
sed 's/"seconds":[^,]*,//' "$dir/out" >"$dir/s1"
expect_ok "sample 2" "$T" generate -m "$dir/m.tier" --prompts "$dir/p.jsonl" -n 24 --temperature 1 --top-k 50 --seed 7
sed 's/"seconds":[^,]*,//' "$dir/out" | cmp -s - "$dir/s1" || fail "sampling with one seed is not reproducible"
expect_ok "sample 3" "$T" generate -m "$dir/m.tier" --prompts "$dir/p.jsonl" -n 24 --temperature 1 --top-k 50 --seed 8
sed 's/"seconds":[^,]*,//' "$dir/out" | cmp -s - "$dir/s1" && fail "another seed gave the same samples"
# A tiny temperature is greedy, with top-k and top-p too (a float logit / 1e-40 overflowed: NaN weights).
for x in "" "--top-k 5" "--top-p 0.5"; do
    expect_ok "temperature 1e-40 $x" "$T" generate -m "$dir/m.tier" --prompt "The committee" -n 24 --temperature 1e-40 $x --json
    sed 's/"seconds":[^,]*,//' "$dir/out" | cmp -s - "$dir/json1" || fail "--temperature 1e-40 $x is not greedy"
done

# --stop: the completion ends where the stop string first appears (3 bytes of the greedy text itself).
full=$(cat "$dir/streamed")
stop=$(dd if="$dir/streamed" bs=1 skip=4 count=3 2>/dev/null)
if [ "$(printf '%s' "$stop" | wc -c)" -eq 3 ] && ! printf '%s' "$stop" | od -An -c | grep -q '\\n\|\\0'; then
    expect_ok "stop" "$T" generate -m "$dir/m.tier" --prompt "The committee" -n 24 --stop "$stop"
    LC_ALL=C
    [ "$(cat "$dir/out")" = "${full%%"$stop"*}" ] || fail "--stop: got '$(cat "$dir/out")', expected '${full%%"$stop"*}'"
    unset LC_ALL
    expect_ok "stop json" "$T" generate -m "$dir/m.tier" --prompt "The committee" -n 24 --stop "$stop" --json
    grep -q '"stop":"stop"' "$dir/out" || fail "--stop: the JSON does not say it stopped at the string"
    # --stop repeated: the completion ends at whichever appears first (a later one given first)
    later=$(dd if="$dir/streamed" bs=1 skip=14 count=3 2>/dev/null)
    expect_ok "two stops" "$T" generate -m "$dir/m.tier" --prompt "The committee" -n 24 --stop "$later" --stop "$stop"
    LC_ALL=C
    [ "$(cat "$dir/out")" = "${full%%"$stop"*}" ] || fail "two --stop: got '$(cat "$dir/out")'"
    unset LC_ALL
    expect_error "empty stop" "--stop must not be empty" "$T" generate -m "$dir/m.tier" --prompt hi --stop x --stop ""
else
    fail "--stop: bytes 5-7 of the greedy text hold a newline or NUL; pick another offset"
fi

# plan --generate: the memory table with KV caches, and the refusal naming the smallest --hbm.
expect_ok "plan --generate" "$T" plan -m "$dir/m.tier" --generate --micro-batch 4 --seq 16 --context 128 --hbm 10M
grep -q "KV caches on the device for" "$dir/out" || fail "plan --generate: no KV cache line"
grep -q "KV cache (host)\|KV cache " "$dir/out" || fail "plan --generate: no KV cache region"
# a pass of prompts x prompt chunk over 16M tokens: refused, naming plan --generate's flags
expect_error "plan --generate: prompts x chunk over 16M" \
    "^tiertrain plan: a pass over the prompts of a batch takes at most 16M prompt tokens: lower --micro-batch / --seq / --context$" \
    "$T" plan -m "$dir/m.tier" --generate --micro-batch 4096 --seq 8192
# --batch-tokens is training's: --generate takes any (it was refused unless a multiple of --seq x --micro-batch)
expect_ok "plan --generate --batch-tokens" "$T" plan -m "$dir/m.tier" --generate --micro-batch 3 --seq 16 --batch-tokens 64 \
    --context 128 --hbm 10M
expect_error "plan --generate too small" "--hbm .* too small to generate.*needs --hbm" \
    "$T" plan -m "$dir/m.tier" --generate --micro-batch 4 --seq 16 --context 128 --hbm 1M
# the memory refusals name the command's own flags, --context among them (not train's --seq / --micro-batch / ...)
grep -q "lower --micro-batch / --seq / --context$" "$dir/err" || fail "plan --generate --hbm: $(cat "$dir/err")"
expect_error "plan --generate --host too small" "raise --host .*KV caches.* lower --micro-batch / --seq / --context$" \
    "$T" plan -m "$dir/m.tier" --generate --micro-batch 4 --seq 16 --context 128 --host 1M
expect_error "generate --hbm too small" "needs --hbm .* lower --batch / --prefill-chunk / --context$" \
    "$T" generate -m "$dir/m.tier" --prompt hi -n 4 --context 2048 --hbm 1M
expect_error "generate --host too small" "raise --host .*KV caches.* lower --batch / --prefill-chunk / --context$" \
    "$T" generate -m "$dir/m.tier" --prompt hi -n 4 --context 2048 --host 1M

# bench generate: both runs, the same tokens.
expect_ok "bench generate" "$T" bench generate --model "$dir/m.tier" --batch 1,4 --prompt-tokens 8 --new-tokens 6 --rounds 1
grep -q "decoding streamed / resident" "$dir/out" || fail "bench generate: no ratio line"
grep -q "differ" "$dir/out" && fail "bench generate: streamed tokens differ from resident"
# a ninth --batch size is refused, not dropped
expect_error "bench generate: 9 sizes" "--batch must list 1 to 8 sizes" "$T" bench generate --model "$dir/m.tier" \
    --batch 1,2,1,2,1,2,1,2,3 --prompt-tokens 8 --new-tokens 6 --rounds 1
# every batch's plans come before any timing: a --host too small is refused up front (no "batch 1 done" line
# first), naming what the largest batch's resident and streamed runs need together (both are held at once; it named
# the streamed run's need alone, which was not enough), and that figure is enough
BG="bench generate --model $dir/m.tier --batch 1,32 --prompt-tokens 8 --new-tokens 6 --rounds 1"
expect_error "bench generate: --host too small" "batch 32's resident and streamed runs.* --host [0-9.]* MiB together" \
    "$T" $BG --host 1K
need=$(sed -n 's/.*, --host \([0-9.]*\) \([KMGT]iB\) together.*/\1\2/p' "$dir/err")
expect_ok "bench generate at the --host it named ($need)" "$T" $BG --host "$need"
# --json quotes the model's path: '"', '\' and a byte that is not UTF-8 (tt_escape's \xff)
q="$dir/q\"x\\y$(printf '\377').tier"
cp "$dir/m.tier" "$q"
expect_ok "bench generate --json" "$T" bench generate --model "$q" --batch 1 --prompt-tokens 8 --new-tokens 6 --rounds 1 --json
tail -n 1 "$dir/out" | grep -qF '{"model":"'"$dir"'/q\"x\\y\\xff.tier",' ||
    { fail "bench generate --json: the model's path is not quoted"; tail -n 1 "$dir/out"; }

# Bad input: one line each, non-zero exit, no output file.
expect_error "prompt longer than the context" "--prompt has [0-9]* tokens.*context of 4" \
    "$T" generate -m "$dir/m.tier" --prompt "a prompt of many bytes" --context 4
if [ -f ../shared/data/tokenizers/llama2/tokenizer.json ]; then # the real LLaMA-2 tokenizer, beside the checkout
    expect_error "tokenizer vocabulary" "has 32000 tokens but .* vocabulary of 257" \
        "$T" generate -m "$dir/m.tier" --prompt hi --tokenizer ../shared/data/tokenizers/llama2/tokenizer.json
fi
printf '%s\n' '{"prompt":"a"}' '{"prompt": 3}' >"$dir/bad.jsonl"
expect_error "malformed prompts line" "bad.jsonl:2: \"prompt\" is not a string" \
    "$T" generate -m "$dir/m.tier" --prompts "$dir/bad.jsonl" -o "$dir/never.jsonl"
[ -e "$dir/never.jsonl" ] && fail "a failed run left its output"
printf '%s\n' '{"prompt":"a"' >"$dir/bad2.jsonl"
expect_error "bad JSON" "bad2.jsonl:1:" "$T" generate -m "$dir/m.tier" --prompts "$dir/bad2.jsonl"
# a prompt of a file is named by its line, blank lines counted (its index would not find it)
printf '{"prompt": "a"}\n\n\n{"prompt": "b"}\n\n{"prompt": ""}\n' >"$dir/pl.jsonl"
expect_error "empty prompt: FILE:LINE" "pl.jsonl:6: the prompt is empty" \
    "$T" generate -m "$dir/m.tier" --prompts "$dir/pl.jsonl" -n 2
printf '{"prompt": "a"}\n\n{"prompt": "a prompt of many bytes"}\n' >"$dir/pl2.jsonl"
expect_error "long prompt: FILE:LINE" "pl2.jsonl:3: the prompt has [0-9]* tokens.*context of 6" \
    "$T" generate -m "$dir/m.tier" --prompts "$dir/pl2.jsonl" -n 2 --context 6
expect_error "adapter for another model" "run-pruned" \
    "$T" generate -m "$dir/m.tier" --adapter "$dir/run-pruned" --prompt hi
expect_error "no prompt" "give one of --prompt" "$T" generate -m "$dir/m.tier"
# positions past the model's max_pos (2048 for tiny) are refused, as chat refuses them
expect_error "--context past max_pos" "--context 2049 is more than the 2048 positions" \
    "$T" generate -m "$dir/m.tier" --prompt hi -n 4 --context 2049
expect_error "bench generate past max_pos" "--prompt-tokens + --new-tokens 3032 is more than the 2048 positions" \
    "$T" bench generate --model "$dir/m.tier" --batch 1 --prompt-tokens 3000 --new-tokens 32 --rounds 1
expect_error "bad top-p" "--top-p must be in" "$T" generate -m "$dir/m.tier" --prompt hi --top-p 0
expect_error "missing model" "$dir/none.tier" "$T" generate -m "$dir/none.tier" --prompt hi

# -o on a disk that fills: the first failed write ends the run (not after every prompt), nothing left behind (where a
# tmpfs can be mounted: root)
mkdir "$dir/small"
if mount -t tmpfs -o size=8k tmpfs "$dir/small" 2>/dev/null; then
    for i in $(seq 1 200); do echo "{\"prompt\": \"The committee $i\"}"; done >"$dir/many.jsonl"
    "$T" generate -m "$dir/m.tier" --prompts "$dir/many.jsonl" -n 32 --batch 4 -o "$dir/small/c.jsonl" \
        >"$dir/out" 2>"$dir/err"
    rc=$?
    [ $rc -eq 1 ] && grep -q "^tiertrain generate: writing .*small/c.jsonl failed: no space left on the device" \
        "$dir/err" || { fail "-o on a full disk: exit $rc, or not said"; cat "$dir/err"; }
    grep -q "generate: 200 / 200 prompts" "$dir/err" && fail "-o on a full disk: every prompt was generated first"
    [ -z "$(ls -A "$dir/small")" ] || { fail "-o on a full disk: files left behind"; ls -la "$dir/small"; }
    umount "$dir/small"
else
    echo "note: no tmpfs could be mounted: the disk-full case is skipped"
fi

# Ctrl-C: what was generated so far is printed, exit 130.
"$T" generate -m "$dir/m.tier" --prompt "The" -n 200000 --context 2048 >"$dir/int.out" 2>"$dir/int.err" &
pid=$!
wait_caught $pid INT || fail "generate never caught SIGINT"
sleep 1 # some tokens first
kill -INT $pid
wait $pid
rc=$?
[ "$rc" -eq 130 ] || fail "Ctrl-C: exit $rc, expected 130"
[ -s "$dir/int.out" ] || fail "Ctrl-C: nothing printed"
grep -q "interrupted" "$dir/int.err" || fail "Ctrl-C: no note on stderr"

# bench generate's table: the run column is as wide as its widest entry (a budget of four digits of MiB overflowed it)
expect_ok "bench generate, a wide budget" "$T" bench generate --model "$dir/m.tier" --batch 1 --hbm 1000M --rounds 1 \
    --prompt-tokens 4 --new-tokens 2
grep -A2 '^  batch  run' "$dir/out" | awk '{ print length($0) }' | uniq | wc -l | grep -qx 1 ||
    { fail "bench generate: the table's rows are not aligned"; cat "$dir/out"; }

finish test_generate_cli
