#!/bin/sh
# tests/test_eval_task.sh — `tiertrain eval --task` (lm-evaluation-harness style tasks) and `eval --per-token`
# on the tiny preset (random weights). Multiple choice: 20 items cut from the demo corpus; their requests
# (context + choice) are also laid out one per --seq window of a token file, and the log-likelihoods, the
# predictions, acc and acc_norm (with lm-eval's standard errors) recomputed with awk from `eval --per-token`
# equal what `eval --task` reports (--samples); the same results under the smallest --hbm and on
# cpu-async; --per-token's log-probs sum to eval's loss. Generative exact match: the output shape, batches
# == smaller batches, an answer the model cannot know scores 0, and one found by --answer-regex in the
# completion scores 1 (case ignored). Bad task lines (bad JSON, missing fields, a label out of range,
# empty or non-string choices) are one line naming the file, the line and the field, exit 1, nothing
# written.
. tests/lib.sh
setup evaltask

"$T" synth --preset tiny --quant f32 -o "$dir/m.tier" >/dev/null 2>&1 || fail "synth"
S=128
SHAPE="--seq $S --micro-batch 4 --batch-tokens 1024"

# --help lists the task flags with their defaults.
expect_ok "eval --help" "$T" eval --help
for f in "--task FILE" "--per-token FILE" "--samples FILE" "--tokenizer T .*(default: bytes)" \
    "--max-new-tokens N .*(default: 256)" "--batch N .*(default: 8)" "--limit N .*(default: 0)" \
    "--answer-regex RE .*(default: (-?\[0-9\]\[0-9,.\]\*))" "--stop STR" "--no-bos"; do
    grep -q -e "$f" "$dir/out" || fail "eval --help lacks '$f'"
done

# 20 multiple-choice items from the corpus. Item i: context = a line's first 6 words, the right choice its
# next 3 words, the three others words 7..9 of the next lines; label i % 4. Odd items end the context with
# the space, even ones start each choice with it (lm-eval moves a context's trailing space to the
# continuation, so both score " w7 w8 w9"; acc_norm divides by the choice as written). Also written:
# req.tsv (item choice label context-length-without-the-space request-length choice-length) and text.txt,
# every request at the start of its own window of S bytes (padded with spaces), for --per-token.
awk -v N=20 -v S=$S -v tsv="$dir/req.tsv" -v txt="$dir/text.txt" '
BEGIN { n = 0 }
$0 ~ /^[ -~]+$/ && $0 !~ /["\\]/ && NF >= 12 && length($0) < 110 && n < N {
    c[n] = $1; for (k = 2; k <= 6; k++) c[n] = c[n] " " $k
    a[n] = $7 " " $8 " " $9
    n++
}
END {
    for (i = 0; i < n; i++) {
        lab = i % 4; sp = i % 2
        ctx = c[i] (sp ? " " : "")
        line = "{\"context\": \"" ctx "\", \"choices\": ["
        for (j = 0; j < 4; j++) {
            o = j == lab ? i : (i + 1 + (j < lab ? j : j - 1)) % n
            ch = (sp ? "" : " ") a[o]
            line = line (j ? ", " : "") "\"" ch "\""
            print i, j, lab, length(c[i]), length(ctx ch), length(ch) > tsv
            if (length(ctx ch) > S) { print "a request is longer than " S " bytes" > "/dev/stderr"; exit 1 }
            printf "%-" S "s", ctx ch > txt
        }
        print line "], \"label\": " lab "}"
    }
    print "" > txt
}' tools/demo-data/nlp-corpus-slice.txt >"$dir/mc.jsonl"
[ "$(wc -l <"$dir/mc.jsonl")" -eq 20 ] && [ "$(wc -l <"$dir/req.tsv")" -eq 80 ] || fail "the task generator"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" --val-frac 0 >/dev/null 2>&1 || fail "tokenize"

expect_ok "task" "$T" eval --model "$dir/m.tier" --task "$dir/mc.jsonl" $SHAPE --samples "$dir/s.jsonl"
cp "$dir/out" "$dir/task.txt"
grep -q '^acc [01]\.[0-9]\{4\} ± 0\.[0-9]\{4\} (n=20), acc_norm [01]\.[0-9]\{4\} ± 0\.[0-9]\{4\} (n=20)$' "$dir/task.txt" ||
    { fail "task: text output"; cat "$dir/task.txt"; }
[ "$(wc -l <"$dir/task.txt")" -eq 1 ] || fail "task: one line expected (multiple choice only)"
[ "$(wc -l <"$dir/s.jsonl")" -eq 20 ] || fail "--samples: 20 lines expected"
expect_ok "per-token" "$T" eval --model "$dir/m.tier" --data "$dir/t.tok" $SHAPE --per-token "$dir/pt.tsv" --json
cp "$dir/out" "$dir/pt.json"
[ "$(wc -l <"$dir/pt.tsv")" -eq $((80 * S)) ] || fail "--per-token: $((80 * S)) lines expected"
# their files on a full disk (where a tmpfs can be mounted: root): --samples's scores printed all the same, then
# its failure; --per-token stops at its first failed write; nothing left behind either way
mkdir "$dir/small"
if mount -t tmpfs -o size=4k tmpfs "$dir/small" 2>/dev/null; then
    dd if=/dev/zero of="$dir/small/fill" bs=4k count=1 2>/dev/null # (3.7 KiB of samples would fit)
    # (not expect_error: a loaded machine adds progress lines to stderr)
    "$T" eval --model "$dir/m.tier" --task "$dir/mc.jsonl" $SHAPE --samples "$dir/small/s.jsonl" >"$dir/out" 2>"$dir/err"
    rc=$?
    [ $rc -eq 1 ] && grep -q "^tiertrain eval: writing .*small/s.jsonl failed: no space left" "$dir/err" ||
        { fail "--samples on a full disk: exit $rc, or not said"; cat "$dir/err"; }
    cmp -s "$dir/out" "$dir/task.txt" || { fail "--samples on a full disk: not the scores"; cat "$dir/out"; }
    "$T" eval --model "$dir/m.tier" --data "$dir/t.tok" $SHAPE --per-token "$dir/small/pt.tsv" >"$dir/out" 2>"$dir/err"
    rc=$?
    [ $rc -eq 1 ] && grep -q "^tiertrain eval: writing .*small/pt.tsv failed: no space left" "$dir/err" ||
        { fail "--per-token on a full disk: exit $rc, or not said"; cat "$dir/err"; }
    rm -f "$dir/small/fill"
    [ -z "$(ls -A "$dir/small")" ] || { fail "eval's files on a full disk: files left behind"; ls -la "$dir/small"; }
    umount "$dir/small"
else
    echo "note: no tmpfs could be mounted: the disk-full cases are skipped"
fi

# The recomputation: each request's log-likelihood from its window's log-probs (targets at offsets
# context-length .. request-length - 1), predictions by the first largest log-likelihood and
# log-likelihood per character, acc / acc_norm and sqrt(p (1 - p) / (n - 1)); then the same from
# --samples and the text output, compared.
awk -v S=$S -v samples="$dir/s.jsonl" -v text="$dir/task.txt" '
FILENAME == ARGV[1] { it[NR - 1] = $1; ch[NR - 1] = $2; lab[$1] = $3; c0[NR - 1] = $4; c1[NR - 1] = $5; len[NR - 1] = $6
                      nreq = NR; next }
{ w = int(($1 - 1) / S); r = $1 - w * S; if (r >= c0[w] && r < c1[w]) ll[w] += $3 }
END {
    bad = 0; maxrel = 0
    for (q = 0; q < nreq; q++) {
        i = it[q]; j = ch[q]
        if (j == 0 || ll[q] > best[i]) { best[i] = ll[q]; pred[i] = j }
        if (j == 0 || ll[q] / len[q] > bestn[i]) { bestn[i] = ll[q] / len[q]; predn[i] = j }
        L[i, j] = ll[q]
    }
    n = 0
    while ((getline line < samples) > 0) {
        match(line, /"loglikelihoods":\[[^]]*\]/); m = split(substr(line, RSTART + 18, RLENGTH - 19), v, ",")
        match(line, /"pred":[0-9]+/); p = substr(line, RSTART + 7, RLENGTH - 7) + 0
        match(line, /"pred_norm":[0-9]+/); pn = substr(line, RSTART + 12, RLENGTH - 12) + 0
        if (m != 4) { print "item " n ": " m " log-likelihoods"; bad = 1 }
        for (j = 0; j < m; j++) {
            d = v[j + 1] - L[n, j]; if (d < 0) d = -d
            rel = d / (L[n, j] < 0 ? -L[n, j] : L[n, j]); if (rel > maxrel) maxrel = rel
            if (!(rel <= 1e-6)) { print "item " n " choice " j ": eval --task " v[j + 1] ", per-token " L[n, j]; bad = 1 }
        }
        if (p != pred[n] || pn != predn[n]) { print "item " n ": predictions " p "/" pn ", recomputed " pred[n] "/" predn[n]; bad = 1 }
        acc += pred[n] == lab[n]; accn += predn[n] == lab[n]
        n++
    }
    if (n != 20) { print n " items in --samples"; bad = 1 }
    pa = acc / n; pn = accn / n
    want = sprintf("acc %.4f ± %.4f (n=%d), acc_norm %.4f ± %.4f (n=%d)", pa, sqrt(pa * (1 - pa) / (n - 1)), n, pn,
                   sqrt(pn * (1 - pn) / (n - 1)), n)
    getline got < text
    if (got != want) { print "eval --task: " got; print "recomputed:  " want; bad = 1 }
    printf "per-token recomputation: %d requests, log-likelihoods within %.2e relative, %s\n", nreq, maxrel, want
    exit bad
}' "$dir/req.tsv" "$dir/pt.tsv" >"$dir/cmp" || { fail "eval --task differs from the per-token recomputation"; }
cat "$dir/cmp"

# --per-token's log-probs sum to -loss x tokens
loss=$(sed -n 's/.*"loss":\([-0-9.e+]*\).*/\1/p' "$dir/pt.json")
toks=$(sed -n 's/.*"tokens":\([0-9]*\).*/\1/p' "$dir/pt.json")
awk -v l="$loss" -v n="$toks" '{ s += $3 } END { d = -s / n - l; exit !(NR == n && l != "" && d < 1e-9 * l && d > -1e-9 * l) }' \
    "$dir/pt.tsv" || fail "--per-token does not sum to the loss $loss over $toks tokens"
expect_error "per-token exists" "exists" "$T" eval --model "$dir/m.tier" --data "$dir/t.tok" $SHAPE --per-token "$dir/pt.tsv"

# The same results streamed under the smallest --hbm, and on cpu-async.
min=$("$T" eval --model "$dir/m.tier" --task "$dir/mc.jsonl" $SHAPE --hbm 1 2>&1 | sed -n 's/.*needs --hbm \([0-9.]*\) MiB.*/\1/p')
[ -n "$min" ] || fail "no smallest --hbm in the refusal"
expect_ok "task, smallest hbm" "$T" eval --model "$dir/m.tier" --task "$dir/mc.jsonl" $SHAPE --hbm "${min}M" \
    --samples "$dir/s-min.jsonl"
cmp -s "$dir/s.jsonl" "$dir/s-min.jsonl" || fail "--hbm ${min}M: samples differ from resident"
expect_ok "task, cpu-async" "$T" eval --model "$dir/m.tier" --task "$dir/mc.jsonl" $SHAPE --device cpu-async \
    --samples "$dir/s-async.jsonl"
cmp -s "$dir/s.jsonl" "$dir/s-async.jsonl" || fail "cpu-async: samples differ from cpu"

# A request longer than --seq + 1 loses the start of its context, said once.
expect_ok "task, short seq" "$T" eval --model "$dir/m.tier" --task "$dir/mc.jsonl" --seq 24 --micro-batch 4 --batch-tokens 96
[ "$(err_lines "$dir/err")" -eq 1 ] && grep -q "note: [0-9]* of 80 choices are longer than --seq + 1 = 25 tokens" "$dir/err" ||
    { fail "short seq: one note expected"; cat "$dir/err"; }

# The project's fixtures: multiple choice, generative, and both in one file (--json).
expect_ok "mc-demo" "$T" eval --model "$dir/m.tier" --task tests/fixtures/tasks/mc-demo.jsonl --seq 128 --micro-batch 4 \
    --batch-tokens 512
grep -q '^acc .* (n=20), acc_norm .* (n=20)$' "$dir/out" || { fail "mc-demo output"; cat "$dir/out"; }
GEN="--max-new-tokens 24"
# a budget too small for the generation: the refusal names eval's flags that shrink it (it named generate's terms)
expect_error "gsm-style, --hbm too small" "needs --hbm .* lower --batch / --max-new-tokens$" "$T" eval --model "$dir/m.tier" \
    --task tests/fixtures/tasks/gsm-style.jsonl $GEN --batch 2 --hbm 1
expect_ok "gsm-style" "$T" eval --model "$dir/m.tier" --task tests/fixtures/tasks/gsm-style.jsonl $GEN --batch 2 \
    --samples "$dir/g2.jsonl"
# the model cannot know the answers: exact match 0 (its standard error 0 too), n counts every prompt
[ "$(cat "$dir/out")" = "exact_match 0.0000 ± 0.0000 (n=5)" ] || { fail "gsm-style output"; cat "$dir/out"; }
[ "$(grep -c '"kind":"exact_match",.*"exact_match":0}$' "$dir/g2.jsonl")" -eq 5 ] || { fail "gsm-style samples"; cat "$dir/g2.jsonl"; }
# whatever was extracted is a normalised number (no commas, no trailing period) or nothing
sed 's/.*"extracted":"\([^"]*\)".*/\1/' "$dir/g2.jsonl" | grep -v -x -e '' -e '-\{0,1\}[0-9]\([0-9.]*[0-9]\)\{0,1\}' &&
    { fail "an extracted answer is not a normalised number"; cat "$dir/g2.jsonl"; }
expect_ok "gsm-style, one batch" "$T" eval --model "$dir/m.tier" --task tests/fixtures/tasks/gsm-style.jsonl $GEN --batch 5 \
    --samples "$dir/g5.jsonl"
cmp -s "$dir/g2.jsonl" "$dir/g5.jsonl" || fail "batches of 2 differ from one batch of 5"
cat tests/fixtures/tasks/mc-demo.jsonl tests/fixtures/tasks/gsm-style.jsonl >"$dir/mixed.jsonl"
expect_ok "mixed --json" "$T" eval --model "$dir/m.tier" --task "$dir/mixed.jsonl" --seq 128 --micro-batch 4 \
    --batch-tokens 512 $GEN --json
cp "$dir/out" "$dir/mixed.json"
[ "$(wc -l <"$dir/mixed.json")" -eq 1 ] || fail "--json: one line expected"
# the JSON is read with jq or python3 where one is installed (neither is among the project's Debian packages)
if command -v jq >/dev/null; then
    jq -e '.n == 25 and .n_multiple_choice == 20 and .n_exact_match == 5 and (.acc | type) == "number" and
        (.acc_stderr | type) == "number" and (.acc_norm | type) == "number" and (.acc_norm_stderr | type) == "number" and
        .exact_match == 0 and .exact_match_stderr == 0 and (.task | endswith("mixed.jsonl"))' "$dir/mixed.json" >/dev/null ||
        { fail "--json fields"; cat "$dir/mixed.json"; }
elif command -v python3 >/dev/null; then
    python3 - "$dir/mixed.json" <<'EOF' || { fail "--json fields"; cat "$dir/mixed.json"; }
import json, sys
j = json.loads(open(sys.argv[1]).read())
assert j["n"] == 25 and j["n_multiple_choice"] == 20 and j["n_exact_match"] == 5, j
assert all(isinstance(j[k], float) for k in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr")), j
assert j["exact_match"] == 0 and j["exact_match_stderr"] == 0 and j["task"].endswith("mixed.jsonl"), j
EOF
else
    grep -q '^{"task":.*"n":25,.*"acc":.*"acc_stderr":.*"acc_norm":.*"acc_norm_stderr":.*"exact_match":0' "$dir/mixed.json" ||
        { fail "--json fields"; cat "$dir/mixed.json"; }
fi
expect_ok "mc --json" "$T" eval --model "$dir/m.tier" --task tests/fixtures/tasks/mc-demo.jsonl --seq 128 --micro-batch 4 \
    --batch-tokens 512 --json
grep -q '"exact_match' "$dir/out" && fail "--json: exact_match fields without generative items"
# --json after a whole evaluation: paths that are not UTF-8 (or hold '"', '\') come out escaped as every --json
# shows them (tt_escape's \xff), never a refusal that loses the result.
q="$dir/q\"x\\y$(printf '\377')"
cp "$dir/m.tier" "$q.tier" && head -n 2 tests/fixtures/tasks/mc-demo.jsonl >"$q.jsonl" && cp "$dir/t.tok" "$q.tok" ||
    fail "copies under a non-UTF-8 name"
expect_ok "--task --json, non-UTF-8 paths" "$T" eval --model "$q.tier" --task "$q.jsonl" --seq 128 --micro-batch 4 \
    --batch-tokens 512 --json
grep -q '^{"task":".*q\\"x\\\\y\\\\xff\.jsonl".*"model":".*q\\"x\\\\y\\\\xff\.tier","adapter":null}$' "$dir/out" ||
    { fail "--task --json: the paths escaped"; cat "$dir/out"; }
expect_ok "--data --json, non-UTF-8 path" "$T" eval --model "$q.tier" --data "$q.tok" $SHAPE --max-tokens $S --json
grep -q '^{"loss":.*"model":".*q\\"x\\\\y\\\\xff\.tier","adapter":null}$' "$dir/out" ||
    { fail "--data --json: the path escaped"; cat "$dir/out"; }

# --answer-regex: the last lower-case letter of a completion. Asked for that letter (in upper case: case is
# ignored), the item scores 1; asked for another one, 0.
P='{"prompt": "Question: what is the last letter?\nAnswer:", "answer": '
printf '%s"?"}\n' "$P" >"$dir/one.jsonl"
expect_ok "regex" "$T" eval --model "$dir/m.tier" --task "$dir/one.jsonl" $GEN --answer-regex '([a-z])' --samples "$dir/one-s.jsonl"
x=$(sed -n 's/.*"extracted":"\([a-z]\)".*/\1/p' "$dir/one-s.jsonl")
if [ -z "$x" ]; then
    fail "no lower-case letter in the completion: choose another prompt"; cat "$dir/one-s.jsonl"
else
    X=$(echo "$x" | tr a-z A-Z); y=$(echo "$x" | tr a-y b-z); [ "$x" = z ] && y=a
    printf '%s"%s"}\n%s"%s"}\n' "$P" "$X" "$P" "$y" >"$dir/two.jsonl"
    expect_ok "regex match" "$T" eval --model "$dir/m.tier" --task "$dir/two.jsonl" $GEN --answer-regex '([a-z])'
    [ "$(cat "$dir/out")" = "exact_match 0.5000 ± 0.5000 (n=2)" ] || { fail "regex: expected 1 of 2"; cat "$dir/out"; }
fi
# --stop cuts the completion before the stop string
expect_ok "stop" "$T" eval --model "$dir/m.tier" --task "$dir/one.jsonl" $GEN --stop "$x" --samples "$dir/stop.jsonl"
grep -q "\"completion\":\"[^\"]*$x" "$dir/stop.jsonl" && { fail "--stop '$x' is in the completion"; cat "$dir/stop.jsonl"; }

# Bad task lines: one line naming the file, the line and the field; exit 1; --samples not written.
bad() { # name pattern line
    printf '%s\n\n%s\n' '{"context": "a", "choices": [" b", " c"], "label": 1}' "$3" >"$dir/bad.jsonl"
    expect_error "$1" "$2" "$T" eval --model "$dir/m.tier" --task "$dir/bad.jsonl" --samples "$dir/bad-s.jsonl"
    [ -e "$dir/bad-s.jsonl" ] || [ -e "$dir/bad-s.jsonl.partial" ] && fail "$1 left a file"
}
bad "bad JSON" "bad.jsonl:3: not valid JSON" '{"context": "a", "choices": ['
bad "not an object" "bad.jsonl:3: the line is not a JSON object" '[1, 2]'
bad "missing label" "bad.jsonl:3: \"label\" is missing" '{"context": "a", "choices": [" b"]}'
bad "label out of range" "bad.jsonl:3: \"label\" 2 is out of range for 2 choices (0..1)" \
    '{"context": "a", "choices": [" b", " c"], "label": 2}'
bad "negative label" "bad.jsonl:3: \"label\" -1 is out of range" '{"context": "a", "choices": [" b"], "label": -1}'
bad "label not an integer" "bad.jsonl:3: \"label\" is not an integer" '{"context": "a", "choices": [" b"], "label": "0"}'
bad "empty choices" "bad.jsonl:3: \"choices\" is empty" '{"context": "a", "choices": [], "label": 0}'
bad "non-string choice" "bad.jsonl:3: \"choices\"\[1\] is not a string" '{"context": "a", "choices": [" b", 7], "label": 0}'
bad "empty choice" "bad.jsonl:3: \"choices\"\[0\] is empty" '{"context": "a", "choices": [""], "label": 0}'
bad "missing context" "bad.jsonl:3: \"context\" is missing" '{"choices": [" b"], "label": 0}'
bad "missing answer" "bad.jsonl:3: \"answer\" is missing" '{"prompt": "2 + 2 ="}'
bad "unknown kind" "bad.jsonl:3: neither a \"choices\" field" '{"text": "a"}'
printf '%s\n' '{"context": "a", "choices": [" a choice longer than the window"], "label": 0}' >"$dir/long.jsonl"
expect_error "choice longer than seq" "long.jsonl:1: \"choices\"\[0\] is 32 tokens, more than --seq 8" \
    "$T" eval --model "$dir/m.tier" --task "$dir/long.jsonl" --seq 8 --micro-batch 1 --batch-tokens 8
: >"$dir/empty.jsonl"
expect_error "empty task" "holds no task line" "$T" eval --model "$dir/m.tier" --task "$dir/empty.jsonl"
expect_error "missing task" "cannot open --task" "$T" eval --model "$dir/m.tier" --task "$dir/nothere.jsonl"
# usage errors: exit 2
for args in "--task $dir/mc.jsonl --data $dir/t.tok" "--task $dir/mc.jsonl --per-token $dir/x.tsv" \
    "--data $dir/t.tok --samples $dir/x.jsonl" "--task $dir/mc.jsonl --answer-regex (" "--task $dir/mc.jsonl --batch 0"; do
    "$T" eval --model "$dir/m.tier" $args >/dev/null 2>"$dir/err"; rc=$?
    [ $rc -eq 2 ] && [ "$(grep -c . "$dir/err")" -eq 1 ] || { fail "usage error '$args': exit $rc"; cat "$dir/err"; }
done

# Ctrl-C during a long --data eval: it stops after the slice under way, says how far it got and the loss so far,
# exits 130 and leaves no --per-token file. The signal goes once eval's handler is in place (SigCgt: a background
# job of a script starts with SIGINT ignored, so an earlier one would be lost).
"$T" tokenize --input tools/demo-data/nlp-corpus-slice.txt -o "$dir/big.tok" --val-frac 0 >/dev/null 2>&1 || fail "tokenize big"
"$T" eval --model "$dir/m.tier" --data "$dir/big.tok" --seq 64 --per-token "$dir/big.tsv" >"$dir/out" 2>"$dir/err" &
pid=$!
caught() { # 1 when process $1 catches SIGINT (bit 1 of SigCgt, the mask's last hex digit)
    c=$(sed -n 's/^SigCgt:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null)
    [ -n "$c" ] && [ $((0x${c#"${c%?}"} & 2)) -ne 0 ]
}
i=0
while [ $i -lt 600 ] && ! caught $pid; do sleep 0.05; i=$((i + 1)); done
caught $pid || fail "eval never caught SIGINT (${i} waits)"
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 130 ] && grep -q "^tiertrain eval: interrupted after [0-9]* of [0-9]* tokens: loss so far [0-9.]* (perplexity [0-9.]*), not the whole file's$" "$dir/err" ||
    { fail "eval interrupted: exit $rc, or no word of how far it got"; cat "$dir/err"; }
[ -e "$dir/big.tsv" ] && fail "an interrupted eval left its --per-token file"
ls "$dir" | grep -q "big.tsv.*partial" && fail "an interrupted eval left a partial --per-token file"
# Ctrl-C twice: the second quits at once, the partial file removed (also where SIGINT was ignored before, as in a
# script's background job: this one)
"$T" eval --model "$dir/m.tier" --data "$dir/big.tok" --seq 64 --per-token "$dir/big.tsv" >"$dir/out" 2>"$dir/err" &
pid=$!
i=0
while [ $i -lt 600 ] && ! caught $pid; do sleep 0.05; i=$((i + 1)); done
kill -INT $pid
i=0
while [ $i -lt 600 ] && ! grep -q "Ctrl-C again quits at once" "$dir/err"; do sleep 0.05; i=$((i + 1)); done
kill -INT $pid 2>/dev/null
wait $pid
rc=$?
[ $rc -eq 130 ] || { fail "eval after two Ctrl-C: exit $rc"; cat "$dir/err"; }
[ -e "$dir/big.tsv" ] && fail "an eval ended by a second Ctrl-C left its --per-token file"
ls "$dir" | grep -q "big.tsv.*partial" && fail "an eval ended by a second Ctrl-C left a partial --per-token file"

finish test_eval_task
