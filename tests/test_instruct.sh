#!/bin/sh
# tests/test_instruct.sh — instruction data end to end: `tokenize --format jsonl` on every record shape
# (version-2 token file: only the responses and their end-of-turn are targets), detokenize, a LoRA run
# whose validation loss on the responses falls, eval scoring the responses only; and malformed JSONL
# (bad JSON, missing fields, unknown roles, empty responses, a 17 MiB line) refused with the file, the
# line and the field, exit 1, nothing written. The chat templates themselves are checked against
# Hugging Face in tests/test_chat.c.
. tests/lib.sh
setup instruct

cat >"$dir/mix.jsonl" <<'JSON'
{"text": "Plain text trains on every token."}
{"instruction": "Say hi.", "input": "", "output": "Hi!"}
{"instruction": "Translate.", "input": "Bonjour", "output": "Hello"}
{"prompt": "2 + 2 =", "completion": " 4"}

{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Colour of the sky?"}, {"role": "assistant", "content": "Blue."}]}
{"conversations": [{"from": "human", "value": "Name a fruit."}, {"from": "gpt", "value": "Apple."}]}
JSON
expect_ok "tokenize jsonl" "$T" tokenize --format jsonl --template none -i "$dir/mix.jsonl" -o "$dir/mix.tok" --val-frac 0
grep -q "^examples: 6 (train 6, val 0)" "$dir/out" || { fail "six examples"; cat "$dir/out"; }
# targets: 33 text bytes + eot (34), "Hi!" + eot (4), "Hello" + eot (6), " 4" + eot (3), "Blue." + eot (6),
# "Apple." + eot (7): 60
grep -q "of them training targets" "$dir/out" && grep -q " 60 of them" "$dir/out" || { fail "target count"; cat "$dir/out"; }
[ "$(od -An -tu4 -j8 -N4 "$dir/mix.tok" | tr -d ' ')" = 2 ] || fail "a jsonl token file is not version 2"
expect_ok "detokenize jsonl" "$T" detokenize "$dir/mix.tok"
grep -q "^2 + 2 = 4<|endoftext|>\$" "$dir/out" && grep -q "^Name a fruit.Apple.<|endoftext|>\$" "$dir/out" ||
    { fail "detokenize examples"; cat "$dir/out"; }
expect_error "detokenize --eot on examples" "--eot applies to plain token files; .*mix.tok holds instruction examples" \
    "$T" detokenize "$dir/mix.tok" --eot
expect_ok "train on prompt" "$T" tokenize --format jsonl --template none --train-on-prompt -i "$dir/mix.jsonl" -o "$dir/all.tok" --val-frac 0
grep -q "train-on-prompt: all" "$dir/out" || fail "--train-on-prompt is not reported"

# bad input: one line naming the file, the line and the field; nothing written
bad() { # name pattern line
    printf '%s\n' '{"text": "fine"}' "$3" >"$dir/bad.jsonl"
    expect_error "$1" "$2" "$T" tokenize --format jsonl --template none -i "$dir/bad.jsonl" -o "$dir/bad.tok"
    [ -e "$dir/bad.tok" ] || [ -e "$dir/bad.tok.val" ] || [ -e "$dir/bad.tok.partial" ] && fail "$1 left a file"
}
bad "bad JSON" "bad.jsonl:2: not valid JSON" '{"prompt": "a", '
bad "missing output" "bad.jsonl:2: \"output\" is missing" '{"instruction": "a"}'
bad "unknown role" "bad.jsonl:2: messages\[1\].role is \"bot\"" '{"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}'
bad "empty response" "bad.jsonl:2: messages\[1\].content is an empty response" '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}'
bad "white-space response" "bad.jsonl:2: messages\[1\].content is an empty response" '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\u00a0\u3000\u000b"}]}'
bad "white-space completion" "bad.jsonl:2: \"completion\" is empty" '{"prompt": "q", "completion": "\u2003"}'
bad "NUL in a string" "bad.jsonl:2: a string holds .u0000 (a NUL character) near column" '{"prompt": "a\u0000b", "completion": "c"}'
bad "unknown shape" "bad.jsonl:2: the record has none of the fields" '{"question": "q", "answer": "a"}'
bad "ends with the user" "bad.jsonl:2: the messages end with a user message" '{"messages": [{"role": "user", "content": "q"}]}'
expect_error "llama3 on bytes" "needs the special token <|begin_of_text|>" \
    "$T" tokenize --format jsonl --template llama3 -i "$dir/mix.jsonl" -o "$dir/l3.tok"
[ -e "$dir/l3.tok" ] && fail "a refused template wrote its file"
head -c 17825792 /dev/zero | tr '\0' 'a' | awk '{ printf "{\"text\": \"%s\"}\n", $0 }' >"$dir/huge.jsonl"
expect_error "a 17 MiB line" "huge.jsonl:1: the line is 17825805 bytes long, more than the 16 MiB" \
    "$T" tokenize --format jsonl --template none -i "$dir/huge.jsonl" -o "$dir/huge.tok"
rm -f "$dir/huge.jsonl"
# a UTF-8 byte-order mark before the first record is skipped
printf '\357\273\277{"prompt": "a", "completion": "b"}\n' >"$dir/bom.jsonl"
expect_ok "byte-order mark" "$T" tokenize --format jsonl --template none -i "$dir/bom.jsonl" -o "$dir/bom.tok" --val-frac 0
grep -q "^examples: 1 " "$dir/out" || { fail "byte-order mark: one example"; cat "$dir/out"; }
expect_error "no template" "--template is required" "$T" tokenize --format jsonl -i "$dir/mix.jsonl" -o "$dir/x.tok"
expect_error "template without jsonl" "--template goes with --format jsonl" "$T" tokenize --template none -i "$dir/mix.jsonl" -o "$dir/x.tok"
expect_error "bad format" "--format must be text or jsonl" "$T" tokenize --format csv -i "$dir/mix.jsonl" -o "$dir/x.tok"

# a LoRA run on "continue this sentence" pairs from the shared text: the loss on the responses falls
awk '{ gsub(/"/, "\047"); gsub(/\t/, " ") } NR <= 600 && NF >= 8 && !/[\\[:cntrl:]]/ { n = int(NF / 2); p = ""; c = ""
     for (i = 1; i <= NF; i++) { if (i <= n) p = p (i > 1 ? " " : "") $i; else c = c " " $i }
     printf "{\"prompt\": \"Continue this sentence: %s\", \"completion\": \"%s\"}\n", p, c }' \
    tools/demo-data/nlp-corpus-slice.txt >"$dir/inst.jsonl"
expect_ok "tokenize pairs" "$T" tokenize --format jsonl --template none -i "$dir/inst.jsonl" -o "$dir/inst.tok" --val-frac 0.1
"$T" synth --preset tiny -o "$dir/tiny.tier" >/dev/null 2>&1 || fail "synth"
expect_ok "train on pairs" "$T" train --model "$dir/tiny.tier" --data "$dir/inst.tok" --out "$dir/run" --seq 128 \
    --micro-batch 4 --batch-tokens 512 --steps 12 --lr 2e-2 --min-lr 2e-3 --warmup 2 --eval-every 0 --eval-tokens 2048 --json
first=$(sed -n 's/.*"step":0,.*"val_loss":\([0-9.]*\).*/\1/p' "$dir/out")
last=$(grep '"val_loss"' "$dir/out" | tail -n 1 | sed -n 's/.*"val_loss":\([0-9.]*\).*/\1/p')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(a != "" && b != "" && b < a - 0.5) }' ||
    { fail "the validation loss on responses did not fall ($first -> $last)"; cat "$dir/out"; }
expect_ok "eval examples" "$T" eval --model "$dir/tiny.tier" --adapter "$dir/run" --data "$dir/inst.tok.val" --seq 128 \
    --micro-batch 4 --batch-tokens 512 --json
targets=$("$T" tokenize --format jsonl --template none -i "$dir/inst.jsonl" -o "$dir/inst2.tok" --val-frac 0.1 |
    sed -n 's/^tokens: .* val \([0-9]*\)), .*/\1/p')
grep -q '"tokens":[0-9]*' "$dir/out" || { fail "eval --json"; cat "$dir/out"; }
n_scored=$(sed -n 's/.*"tokens":\([0-9]*\).*/\1/p' "$dir/out")
[ -n "$n_scored" ] && [ "$n_scored" -lt "$targets" ] || fail "eval scored $n_scored tokens of $targets: the prompts count"

# what --seq cuts off is said; a validation split with nothing to score is said too (never "val nan")
for i in 1 2 3 4 5 6; do
    echo '{"prompt": "Q'$i'", "completion": "Answer number '$i'"}'
    echo '{"prompt": "A much longer question that goes on and on and on about item '$i'", "completion": "Yes"}'
done >"$dir/long.jsonl"
"$T" tokenize --format jsonl --template none -i "$dir/long.jsonl" -o "$dir/long.tok" --val-frac 0.5 >/dev/null ||
    fail "tokenize long.jsonl"
# long.tok.val: the six long prompts (62 bytes, then "Yes" and the end of text): --seq 64 cuts each one's last
expect_ok "eval cut examples" "$T" eval --model "$dir/tiny.tier" --data "$dir/long.tok.val" --seq 64 --micro-batch 1 \
    --batch-tokens 64
grep -q "note: 6 of 6 examples are longer than --seq + 1 = 65 tokens and are cut there: 6 of their response tokens are not scored" \
    "$dir/err" || { fail "eval does not report the cut examples"; cat "$dir/err"; }
expect_ok "train, nothing to validate" "$T" train --model "$dir/tiny.tier" --data "$dir/long.tok" --out "$dir/rv" --seq 32 \
    --micro-batch 1 --batch-tokens 32 --steps 2 --eval-every 1
grep -q "long.tok.val: none of its 6 validation examples has a response within its first --seq 32 + 1 tokens: no validation" \
    "$dir/err" || { fail "an unscorable validation split is not reported"; cat "$dir/err"; }
grep -q "nan" "$dir/out" && { fail "validation printed nan"; cat "$dir/out"; }
grep -q "no validation" "$dir/out" || { fail "the summary does not say there was no validation"; cat "$dir/out"; }
expect_error "--val with nothing to score" "--val $dir/long.tok.val: none of its 6 examples has a response" \
    "$T" train --model "$dir/tiny.tier" --data "$dir/long.tok" --val "$dir/long.tok.val" --out "$dir/rv2" --seq 32 \
    --micro-batch 1 --batch-tokens 32 --steps 2
# a step that draws only examples without a response within --seq has no target: its loss is "-" (not 0.0000),
# and the summary's train loss comes from the steps that had one
{
    echo '{"prompt": "Hi", "completion": " there."}'
    i=0
    while [ $i -lt 30 ]; do
        echo "{\"prompt\": \"$(printf '%0200d' $i)\", \"completion\": \" ok\"}"
        i=$((i + 1))
    done
} >"$dir/zt.jsonl"
"$T" tokenize --format jsonl --template none -i "$dir/zt.jsonl" -o "$dir/zt.tok" --val-frac 0 >/dev/null || fail "tokenize zt"
expect_ok "train, steps without a target" "$T" train --model "$dir/tiny.tier" --data "$dir/zt.tok" --out "$dir/zt" \
    --seq 32 --micro-batch 1 --batch-tokens 32 --steps 100 --eval-every 0
first=$(grep '^step' "$dir/out" | grep -v 'loss -' | head -1 | sed 's/.*loss \([0-9.]*\).*/\1/')
grep -q '^step .* loss -  ' "$dir/out" && [ -n "$first" ] && ! grep -q 'loss 0\.0000' "$dir/out" &&
    grep -q "^done: 100 steps, train loss $first -> " "$dir/out" || { fail "steps without a target"; cat "$dir/out"; }
head -c 32 "$dir/long.tok" >"$dir/empty.tok" # a version-2 header, its count (bytes 16-23) set to no token
printf '\000\000\000\000\000\000\000\000' | dd of="$dir/empty.tok" bs=1 seek=16 conv=notrunc 2>/dev/null
expect_error "eval on no example" "empty.tok holds no example; tokenize some records" \
    "$T" eval --model "$dir/tiny.tier" --data "$dir/empty.tok" --seq 16

# --force, and the disk fills while OUT.val is written: the earlier OUT and OUT.val stay as they were (where a
# tmpfs can be mounted: root with CAP_SYS_ADMIN)
mkdir "$dir/small"
if mount -t tmpfs -o size=84k tmpfs "$dir/small" 2>/dev/null; then
    for i in $(seq 1 300); do echo '{"prompt": "Tell me something about number '$i'", "completion": " It is a number, '$i'."}'; done >"$dir/m300.jsonl"
    echo OLD >"$dir/small/m.tok"
    echo OLDVAL >"$dir/small/m.tok.val"
    expect_error "disk full" "no space left on the device" "$T" tokenize --format jsonl --template none \
        -i "$dir/m300.jsonl" -o "$dir/small/m.tok" --val-frac 0.5 --force
    [ "$(cat "$dir/small/m.tok" 2>/dev/null)" = OLD ] && [ "$(cat "$dir/small/m.tok.val" 2>/dev/null)" = OLDVAL ] ||
        { fail "disk full: the earlier OUT / OUT.val were not kept"; ls -l "$dir/small"; }
    [ "$(ls "$dir/small" | wc -l)" = 2 ] || { fail "disk full: files left behind"; ls -l "$dir/small"; }
    umount "$dir/small"
else
    echo "note: no tmpfs could be mounted: the disk-full case is skipped"
fi

# full training averages over the same tokens as LoRA: the responses (LoRA's B starts at zero, so step 1 sees
# the same model and the same batch; --no-pack: full training's one example a sequence)
"$T" synth --preset tiny -q f32 -o "$dir/tinyf.tier" >/dev/null 2>&1 || fail "synth f32"
step1() { sed -n 's/.*"step":1,.*"loss":\([0-9.]*\).*/\1/p' "$dir/out"; }
expect_ok "lora step 1" "$T" train --model "$dir/tinyf.tier" --data "$dir/inst.tok" --out "$dir/rl" --seq 64 --micro-batch 2 \
    --batch-tokens 128 --steps 1 --no-pack --eval-every 0 --json
lora1=$(step1)
expect_ok "full step 1" "$T" train --full --model "$dir/tinyf.tier" --data "$dir/inst.tok" --out "$dir/rf.tier" --seq 64 \
    --micro-batch 2 --batch-tokens 128 --steps 1 --eval-every 0 --json
full1=$(step1)
[ -n "$lora1" ] && [ "$lora1" = "$full1" ] || fail "step 1's loss: LoRA $lora1, --full $full1 (not the mean over the responses)"

finish test_instruct
