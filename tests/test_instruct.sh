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
bad "unknown shape" "bad.jsonl:2: the record has none of the fields" '{"question": "q", "answer": "a"}'
bad "ends with the user" "bad.jsonl:2: the messages end with a user message" '{"messages": [{"role": "user", "content": "q"}]}'
expect_error "llama3 on bytes" "needs the special token <|begin_of_text|>" \
    "$T" tokenize --format jsonl --template llama3 -i "$dir/mix.jsonl" -o "$dir/l3.tok"
[ -e "$dir/l3.tok" ] && fail "a refused template wrote its file"
head -c 17825792 /dev/zero | tr '\0' 'a' | awk '{ printf "{\"text\": \"%s\"}\n", $0 }' >"$dir/huge.jsonl"
expect_error "a 17 MiB line" "huge.jsonl:1: the line is 17825805 bytes long, more than the 16 MiB" \
    "$T" tokenize --format jsonl --template none -i "$dir/huge.jsonl" -o "$dir/huge.tok"
rm -f "$dir/huge.jsonl"
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

finish test_instruct
