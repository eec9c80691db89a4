#!/bin/sh
# tests/test_chat_cli.sh — `tiertrain chat` end to end on the tiny preset (a
# byte-level model: --tokenizer bytes, template none). Piped lines are turns:
# each gets an answer (--stats counts them) of at most --max-new-tokens; a
# greedy session is deterministic and a sampled one replays from --seed; the
# first answer is exactly `generate`'s for the same text (the system message
# first, as the none template renders it); blank lines are not sent. A small
# --context drops the oldest turns, said once, the system message kept: each
# answer is then `generate`'s for the system message and its line alone. A
# message the context cannot hold is not sent and the session goes on. An
# adapter changes the answers. Ctrl-C ends the answer being written (its
# text stays) and the session goes on; at the prompt it ends the session;
# exit 0. Bad input (unknown template, a tokenizer whose vocabulary does not
# match, a tokenizer without a template, a template whose tokens the
# tokenizer lacks, a missing model, a context the model cannot hold) is one
# line on stderr and a non-zero exit.
. tests/lib.sh
setup chat

"$T" synth --preset tiny --quant f32 -o "$dir/m.tier" >/dev/null 2>&1 || fail "synth"
M="-m $dir/m.tier --tokenizer bytes --template none"

# the number of "chat: answer N:" lines in $dir/err
answers() { grep -c "^chat: answer [0-9]*: " "$dir/err"; }
# for the runs outside expect_ok: no sanitizer report in FILE
clean() { grep -q -e Sanitizer -e 'runtime error' "$1" && { fail "$2: sanitizer report"; cat "$1"; }; }

expect_ok "help" "$T" chat --help
grep -q -- "--temperature T .*(default: 0.7)" "$dir/out" && grep -q -- "--context N" "$dir/out" ||
    { fail "help lists the defaults"; cat "$dir/out"; }

# three turns, greedy: three answers of at most 6 tokens each, the same twice
printf 'Hello\nHow are you?\nBye\n' >"$dir/three.txt"
expect_ok "three turns" sh -c "\"$T\" chat $M --temperature 0 -n 6 --context 256 --stats <\"$dir/three.txt\""
cp "$dir/out" "$dir/three.out"
[ "$(answers)" -eq 3 ] || { fail "three turns: $(answers) answers"; cat "$dir/err"; }
awk '/^chat: answer/ { for (i = 1; i <= NF; i++) if ($i == "new,") n = $(i - 1); if (n + 0 > 6) bad = 1 }
     END { exit bad }' "$dir/err" || { fail "--max-new-tokens 6 exceeded"; cat "$dir/err"; }
grep -q "6 new, ended by --max-new-tokens" "$dir/err" || { fail "no answer reached --max-new-tokens"; cat "$dir/err"; }
[ "$(grep -c . "$dir/err")" -eq 3 ] || { fail "three turns: more than the stats on stderr"; cat "$dir/err"; }
expect_ok "three turns again" sh -c "\"$T\" chat $M --temperature 0 -n 6 --context 256 --stats <\"$dir/three.txt\""
cmp -s "$dir/out" "$dir/three.out" || fail "two greedy sessions differ"

# the first answer is generate's for the same text
expect_ok "generate Hello" "$T" generate -m "$dir/m.tier" --prompt Hello -n 6 --context 256 --temperature 0
head -c "$(wc -c <"$dir/out")" "$dir/three.out" | cmp -s - "$dir/out" || fail "chat's first answer differs from generate's"
# with a system message: the none template puts it first
printf 'Hello\n' | "$T" chat $M --temperature 0 -n 8 --context 256 --system "Be brief. " >"$dir/sys.out" 2>"$dir/err" ||
    fail "system message: exit $?"
clean "$dir/err" "system message"
expect_ok "generate system+Hello" "$T" generate -m "$dir/m.tier" --prompt "Be brief. Hello" -n 8 --context 256 --temperature 0
cmp -s "$dir/sys.out" "$dir/out" || fail "chat with --system differs from generate on the system message + the line"

# blank lines are not sent
printf 'Hello\n\n   \nBye\n' | "$T" chat $M --temperature 0 -n 4 --stats >/dev/null 2>"$dir/err" || fail "blank lines: exit $?"
clean "$dir/err" "blank lines"
[ "$(answers)" -eq 2 ] || { fail "blank lines: $(answers) answers, expected 2"; cat "$dir/err"; }

# sampling replays from --seed (the defaults: temperature 0.7, top-k 40, top-p 0.9)
printf 'Hello\nAgain\n' >"$dir/two.txt"
"$T" chat $M -n 24 <"$dir/two.txt" >"$dir/s1.out" 2>"$dir/err" || fail "sampled: exit $?"
"$T" chat $M -n 24 <"$dir/two.txt" >"$dir/s2.out" 2>"$dir/err" || fail "sampled again: exit $?"
"$T" chat $M -n 24 --seed 2 <"$dir/two.txt" >"$dir/s3.out" 2>"$dir/err" || fail "sampled, seed 2: exit $?"
clean "$dir/err" "sampled"
cmp -s "$dir/s1.out" "$dir/s2.out" || fail "the same --seed gives different answers"
cmp -s "$dir/s1.out" "$dir/s3.out" && fail "--seed 2 gives seed 1's answers"

# a small context: the oldest turns go (said once), the system message stays; each answer is then generate's
# for the system message and its line alone
printf 'first line, twenty b\nsecond line, twenty!\nthird line, twenty c\n' >"$dir/trim.txt"
expect_ok "trimming" sh -c "\"$T\" chat $M --temperature 0 -n 24 --context 64 --system 'Sys. ' --stats <\"$dir/trim.txt\""
cp "$dir/out" "$dir/trim.out"
[ "$(answers)" -eq 3 ] || { fail "trimming: $(answers) answers"; cat "$dir/err"; }
[ "$(grep -c "no longer fits --context 64" "$dir/err")" -eq 1 ] || { fail "trimming: not said exactly once"; cat "$dir/err"; }
grep -q "the system message stays" "$dir/err" || { fail "trimming: the note does not mention the system message"; cat "$dir/err"; }
[ "$(grep -c "prompt 25 tokens" "$dir/err")" -eq 3 ] ||
    { fail "trimming: each prompt should be the system message + one line (25 tokens)"; cat "$dir/err"; }
: >"$dir/gen.out"
while read -r l; do
    "$T" generate -m "$dir/m.tier" --prompt "Sys. $l" -n 24 --context 64 --temperature 0 >>"$dir/gen.out" 2>/dev/null ||
        fail "generate '$l'"
done <"$dir/trim.txt"
cmp -s "$dir/trim.out" "$dir/gen.out" || fail "after trimming, the answers differ from generate's for the system message + each line"
# a message the context cannot hold is not sent; the session and its history go on
printf 'Hello\n%s\nBye\n' "$(printf '%0130d' 0)" |
    "$T" chat $M --temperature 0 -n 24 --context 128 --stats >/dev/null 2>"$dir/err" || fail "long message: exit $?"
clean "$dir/err" "long message"
grep -q "this message takes 130 tokens, which the context of 128 positions cannot hold" "$dir/err" &&
    [ "$(answers)" -eq 2 ] || { fail "long message: not refused, or no answer after it"; cat "$dir/err"; }
[ "$(sed -n 's/^chat: answer 2: prompt \([0-9]*\) tokens.*/\1/p' "$dir/err")" -ge 9 ] ||
    { fail "long message: the history before it was lost"; cat "$dir/err"; }
# a system message that leaves no room for any message is refused at the start, before a line is read
printf 'Hello\n' >"$dir/one.txt"
expect_error "system message too long" \
    "the system message (--system) takes [0-9]* tokens in the template, which leaves no room for a message in a context of 20 positions; shorten it or raise --context" \
    sh -c "\"$T\" chat $M -n 8 --context 20 --system 'Be brief and kind, always.' <\"$dir/one.txt\""

# an adapter changes the answers
awk 'NR <= 2000' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" >/dev/null || fail "tokenize"
"$T" train --model "$dir/m.tier" --data "$dir/t.tok" --rank 4 --alpha 8 --seq 32 --micro-batch 2 --batch-tokens 128 \
    --steps 3 --lr 5e-2 --eval-tokens 64 --out "$dir/run" >/dev/null 2>&1 || fail "train"
expect_ok "adapter" sh -c "\"$T\" chat $M --adapter \"$dir/run\" --temperature 0 -n 6 --context 256 <\"$dir/three.txt\""
cmp -s "$dir/out" "$dir/three.out" && fail "the adapter does not change the answers"

# Ctrl-C during an answer ends it (its text stays) and the session goes on: a second Ctrl-C ends the second
# answer, then the end of input ends the session, exit 0
wait_for() { # file pattern: up to 20 s
    k=0
    while ! grep -q "$2" "$1" 2>/dev/null && [ $k -lt 200 ]; do sleep 0.1; k=$((k + 1)); done
}
printf 'Hello\nBye\n' | "$T" chat $M --temperature 0 -n 2000 --stats >"$dir/int.out" 2>"$dir/int.err" &
pid=$!
k=0
while [ ! -s "$dir/int.out" ] && [ $k -lt 200 ]; do sleep 0.1; k=$((k + 1)); done
kill -INT $pid
wait_for "$dir/int.err" "^chat: answer 1:"
sleep 0.2
kill -INT $pid
wait $pid
rc=$?
[ "$rc" -eq 0 ] || fail "Ctrl-C during answers: exit $rc, expected 0"
clean "$dir/int.err" "Ctrl-C during answers"
[ "$(grep -c "ended by Ctrl-C" "$dir/int.err")" -eq 2 ] || { fail "Ctrl-C: two interrupted answers expected"; cat "$dir/int.err"; }
[ "$(grep -c . "$dir/int.out")" -ge 2 ] || fail "Ctrl-C: the partial answers were not printed"
# Ctrl-C at the prompt (waiting for input that has not come) ends the session at once: exit 0
mkfifo "$dir/in"
"$T" chat $M --temperature 0 -n 4 --stats <"$dir/in" >"$dir/int.out" 2>"$dir/int.err" &
pid=$!
exec 3>"$dir/in"
printf 'Hello\n' >&3
wait_for "$dir/int.err" "^chat: answer 1:"
sleep 0.2
kill -INT $pid
k=0
while kill -0 $pid 2>/dev/null && [ $k -lt 100 ]; do sleep 0.1; k=$((k + 1)); done
kill -0 $pid 2>/dev/null && fail "Ctrl-C at the prompt did not end the session"
exec 3>&-
wait $pid
rc=$?
[ "$rc" -eq 0 ] || fail "Ctrl-C at the prompt: exit $rc, expected 0"
clean "$dir/int.err" "Ctrl-C at the prompt"

# bad input: one line on stderr, non-zero exit
expect_error "unknown template" "--template must be llama3, llama2, chatml or none" \
    "$T" chat -m "$dir/m.tier" --template mistral
expect_error "alpaca is no chat" "--template must be llama3, llama2, chatml or none" \
    "$T" chat -m "$dir/m.tier" --template alpaca
expect_error "template tokens missing" "needs the special token <|begin_of_text|>" \
    "$T" chat -m "$dir/m.tier" --tokenizer bytes --template llama3 </dev/null
expect_error "missing model" "$dir/none.tier" "$T" chat -m "$dir/none.tier" </dev/null
expect_error "no model" "--model FILE is required" "$T" chat
expect_error "context past max_pos" "--context 4096 is more than the 2048 positions" \
    "$T" chat $M --context 4096 </dev/null
expect_error "no room for a message" "--max-new-tokens 64 leaves no room" "$T" chat $M --context 64 -n 64 </dev/null
if [ -d ../shared/data/tokenizers/llama2 ]; then
    expect_error "tokenizer of another model" "has 32000 tokens but .* vocabulary of 257" \
        "$T" chat -m "$dir/m.tier" --tokenizer ../shared/data/tokenizers/llama2/tokenizer.json --template llama2 </dev/null
    expect_error "tokenizer without a template" "--template is required: .*llama2/tokenizer_config.json names no chat template" \
        "$T" chat -m "$dir/m.tier" --tokenizer ../shared/data/tokenizers/llama2 </dev/null
else
    echo "note: ../shared is absent: the real-tokenizer checks are skipped"
fi

finish test_chat_cli
