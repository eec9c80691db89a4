#!/bin/sh
# tests/test_tokenize.sh — `tiertrain tokenize` on small texts it writes: the
# document splitting, the validation split, the counts printed, the token
# file bytes, the Hugging Face fixture tokenizer; and bad input (missing or
# empty input, bad tokenizer, bad flags, unwritable output) giving a non-zero
# exit, exactly one line on stderr and no output file. Run by tests/run.sh
# from the repository root with $TIERTRAIN set to the binary under test.
. tests/lib.sh
setup tokenize
FIX=tests/fixtures/tokenizer-mini.json
# expect_line NAME TEXT : the last command's stdout has the exact line TEXT
expect_line() {
    grep -qxF "$2" "$dir/out" || { fail "$1: output lacks '$2'"; cat "$dir/out"; }
}
# tokens FILE : the tokens after the 32-byte header, space-separated
tokens() { od -An -tu4 -v -j32 "$1" | tr -s ' \n' '  ' | sed 's/^ //; s/ $//'; }
# u32s FILE OFFSET BYTES : u32 words of a byte range, space-separated
u32s() { od -An -tu4 -v -j"$2" -N"$3" "$1" | tr -s ' \n' '  ' | sed 's/^ //; s/ $//'; }
size() { stat -c %s "$1"; }

# Line documents: blank and whitespace-only lines are skipped, "\r\n" endings
# dropped. Five documents, 20 text bytes: "a b c" "hello" "x" "the end" "zz".
printf 'a b c\n\nhello\n   \nx\r\nthe end\nzz' >"$dir/lines.txt"
# --val-frac 0.2: document i goes to val when floor((i+1)/5) > floor(i/5): i = 4 ("zz")
expect_ok lines "$T" tokenize --input "$dir/lines.txt" --val-frac 0.2 -o "$dir/lines.tok"
expect_line lines "documents: 5 (train 4, val 1)"
expect_line lines "tokens: 25 (train 22, val 3), each document followed by end-of-text"
expect_line lines "bytes/token: 1.000 (20 text bytes in 20 tokens, end-of-text not counted)"
[ "$(size "$dir/lines.tok")" = $((32 + 4 * 22)) ] || fail "lines.tok size $(size "$dir/lines.tok")"
[ "$(size "$dir/lines.tok.val")" = $((32 + 4 * 3)) ] || fail "lines.tok.val size"
[ "$(head -c 8 "$dir/lines.tok")" = TTTOKENS ] || fail "lines.tok magic"
# header: version 1, dtype 1, count 22 (u64), vocab 257, eot 256
[ "$(u32s "$dir/lines.tok" 8 24)" = "1 1 22 0 257 256" ] || fail "lines.tok header: $(u32s "$dir/lines.tok" 8 24)"
[ "$(tokens "$dir/lines.tok.val")" = "122 122 256" ] || fail "lines.tok.val tokens: $(tokens "$dir/lines.tok.val")"
[ "$(tokens "$dir/lines.tok" | cut -d' ' -f1-7)" = "97 32 98 32 99 256 104" ] || fail "lines.tok tokens"
ls "$dir" | grep -q partial && fail "a .partial file was left behind"

# The default --val-frac 0.01 takes every 100th document: with 5 the val file is
# empty, and a warning (one line) says so.
"$T" tokenize --input "$dir/lines.txt" -o "$dir/d.tok" >"$dir/out" 2>"$dir/err" || fail "default val-frac: exit $?"
expect_line default "documents: 5 (train 5, val 0)"
grep -q "warning: .*d.tok.val is empty" "$dir/err" || fail "no warning for an empty val file"
[ "$(size "$dir/d.tok.val")" = 32 ] || fail "d.tok.val is not an empty token file"
# 250 documents at 0.01: documents 99 and 199 go to val
i=0; while [ $i -lt 250 ]; do echo "doc $i"; i=$((i + 1)); done >"$dir/many.txt"
expect_ok many "$T" tokenize -i "$dir/many.txt" -o "$dir/many.tok"
expect_line many "documents: 250 (train 248, val 2)"
[ "$(tokens "$dir/many.tok.val")" = "100 111 99 32 57 57 256 100 111 99 32 49 57 57 256" ] ||
    fail "many.tok.val holds the wrong documents: $(tokens "$dir/many.tok.val")"
# --val-frac 0 writes no .val file
expect_ok noval "$T" tokenize -i "$dir/lines.txt" --val-frac 0 -o "$dir/noval.tok"
expect_line noval "documents: 5 (train 5, val 0)"
[ -e "$dir/noval.tok.val" ] && fail "--val-frac 0 wrote a .val file"

# Paragraph documents: "p1 l1\np1 l2" (11 bytes) and "p2" (2 bytes).
printf '\np1 l1\np1 l2\n\n \n\np2\n\n' >"$dir/para.txt"
expect_ok blank "$T" tokenize -i "$dir/para.txt" --doc-sep blank --val-frac 0 -o "$dir/para.tok"
expect_line blank "documents: 2 (train 2, val 0)"
expect_line blank "tokens: 15 (train 15, val 0), each document followed by end-of-text"
[ "$(tokens "$dir/para.tok" | cut -d' ' -f5-9)" = "49 10 112 49 32" ] || fail "blank keeps inner newlines"
# The whole file as one document, byte for byte: 21 bytes + end-of-text.
expect_ok none "$T" tokenize -i "$dir/para.txt" --doc-sep none --val-frac 0 -o "$dir/none.tok"
expect_line none "documents: 1 (train 1, val 0)"
expect_line none "tokens: 22 (train 22, val 0), each document followed by end-of-text"

# The fixture tokenizer.json (LLaMA-3 pre-tokenizer; ids in tests/test_tokenizer.c):
# "Hello world" -> 296 301, " the cat" -> 258 265, end-of-text <|end_of_text|> = 345.
printf 'Hello world\n the cat\n' >"$dir/hf.txt"
expect_ok hf "$T" tokenize -i "$dir/hf.txt" -t "$FIX" --val-frac 0 -o "$dir/hf.tok"
expect_line hf "documents: 2 (train 2, val 0)"
expect_line hf "tokens: 6 (train 6, val 0), each document followed by end-of-text"
[ "$(tokens "$dir/hf.tok")" = "296 301 345 258 265 345" ] || fail "hf tokens: $(tokens "$dir/hf.tok")"
[ "$(u32s "$dir/hf.tok" 24 8)" = "346 345" ] || fail "hf vocab/eot: $(u32s "$dir/hf.tok" 24 8)"
# added-token strings are plain text unless --special
printf 'a<|end_of_text|>b\n' >"$dir/special.txt"
expect_ok special "$T" tokenize -i "$dir/special.txt" -t "$FIX" --special --val-frac 0 -o "$dir/sp.tok"
[ "$(tokens "$dir/sp.tok")" = "97 345 98 345" ] || fail "--special tokens: $(tokens "$dir/sp.tok")"
expect_ok nospecial "$T" tokenize -i "$dir/special.txt" -t "$FIX" --val-frac 0 -o "$dir/nsp.tok"
expect_line nospecial "tokens: 17 (train 17, val 0), each document followed by end-of-text"

# Bad input: one line on stderr, non-zero exit, nothing written.
mkdir "$dir/adir"
: >"$dir/empty.txt"
printf '\n  \n\n' >"$dir/blank.txt"
printf '{}' >"$dir/bad.json"
expect_error "missing input" "nope.txt does not exist" "$T" tokenize -i "$dir/nope.txt" -o "$dir/x.tok"
expect_error "input is a dir" "adir is a directory" "$T" tokenize -i "$dir/adir" -o "$dir/x.tok"
expect_error "missing tokenizer" "nope.json does not exist" "$T" tokenize -i "$dir/lines.txt" -t "$dir/nope.json" -o "$dir/x.tok"
expect_error "bad tokenizer" "bad.json: \"model\" is missing" "$T" tokenize -i "$dir/lines.txt" -t "$dir/bad.json" -o "$dir/x.tok"
expect_error "tokenizer dir" "adir is a directory without a tokenizer.json" "$T" tokenize -i "$dir/lines.txt" -t "$dir/adir" -o "$dir/x.tok"
# not text: tiertrain's own files and compressed ones are named, never tokenized as bytes; nothing is written
"$T" synth --preset tiny -o "$dir/m.tier" >/dev/null 2>&1 || fail "synth"
expect_error "input is a store" "m.tier is a tiertrain model store, not text; give a text file with --input" \
    "$T" tokenize -i "$dir/m.tier" -o "$dir/x.tok"
gzip -c "$dir/lines.txt" >"$dir/lines.txt.gz"
expect_error "input is gzip" "lines.txt.gz is gzip-compressed; decompress it first (zcat .*lines.txt.gz > FILE)" \
    "$T" tokenize -i "$dir/lines.txt.gz" -o "$dir/x.tok"
[ -e "$dir/x.tok" ] && fail "a refused input left x.tok"
printf 'BZh is how this line starts\n' >"$dir/bzh.txt" # text that starts as bzip2's magic does, not compressed
expect_ok "text starting with BZh" "$T" tokenize -i "$dir/bzh.txt" --val-frac 0 -o "$dir/bzh.tok"
printf 'BZh91AY&SY\n' >"$dir/bz.bin"
expect_error "bzip2 input" "bz.bin is bzip2-compressed; decompress it first (bzcat" "$T" tokenize -i "$dir/bz.bin" -o "$dir/x.tok"
mkdir -p "$dir/tk"
printf '{"model_max_length": 1000000000000000019884624838656}\n' >"$dir/tk/tokenizer_config.json"
expect_error "tokenizer_config.json for tokenizer.json" \
    "tokenizer_config.json holds the tokenizer's settings, not the tokenizer; give the tokenizer.json beside it, or its folder" \
    "$T" tokenize -i "$dir/lines.txt" -t "$dir/tk/tokenizer_config.json" -o "$dir/x.tok"
expect_error "empty input" "empty.txt holds no documents" "$T" tokenize -i "$dir/empty.txt" -o "$dir/x.tok"
expect_error "blank input" "blank.txt holds no documents" "$T" tokenize -i "$dir/blank.txt" -o "$dir/x.tok"
expect_error "output dir missing" "x.tok: the folder .*no does not exist" "$T" tokenize -i "$dir/lines.txt" -o "$dir/no/x.tok"
expect_error "output is a dir" "adir is a directory" "$T" tokenize -i "$dir/lines.txt" -o "$dir/adir"
expect_error "output is the input" "lines.txt is the input .*lines.txt" "$T" tokenize -i "$dir/lines.txt" -o "$dir/lines.txt"
expect_error "unknown flag" "unknown option '--bogus'" "$T" tokenize --bogus -i "$dir/lines.txt" -o "$dir/x.tok"
expect_error "bad doc-sep" "doc-sep must be line, blank or none, not 'para'" "$T" tokenize -i "$dir/lines.txt" --doc-sep para -o "$dir/x.tok"
expect_error "bad val-frac" "val-frac must be 0, or at least 0.000001 and below 1, not 1.5" "$T" tokenize -i "$dir/lines.txt" --val-frac 1.5 -o "$dir/x.tok"
expect_error "negative val-frac" "val-frac must be 0, or at least" "$T" tokenize -i "$dir/lines.txt" --val-frac -0.1 -o "$dir/x.tok"
expect_error "val-frac not a number" "val-frac expects a number" "$T" tokenize -i "$dir/lines.txt" --val-frac abc -o "$dir/x.tok"
expect_error "no output" "-o OUT is required" "$T" tokenize -i "$dir/lines.txt"
expect_error "no input" "--input FILE is required" "$T" tokenize -o "$dir/x.tok"
[ -e "$dir/x.tok" ] || [ -e "$dir/x.tok.val" ] && fail "a failed tokenize left x.tok behind"
ls "$dir" | grep -q partial && fail "a .partial file was left behind"
[ "$(cat "$dir/lines.txt" | wc -c)" -eq 30 ] || fail "the input was modified"

# --help lists every flag with its default.
"$T" tokenize --help >"$dir/out" || fail "tokenize --help exit"
for f in input tokenizer doc-sep val-frac special output help; do
    grep -q -e "--$f" "$dir/out" || fail "tokenize --help lacks --$f"
done
grep -q "(default: bytes)" "$dir/out" || fail "--help lacks the tokenizer default"
grep -q "(default: line)" "$dir/out" || fail "--help lacks the doc-sep default"
grep -q "(default: 0.01)" "$dir/out" || fail "--help lacks the val-frac default"

# ---- detokenize: the token file back to its documents, one per line ---------------------------
printf 'Hello world, caf\303\251!\n\n  two  spaces and a tab\there\nlast line\n' >"$dir/dt.txt"
for tk in bytes "$FIX"; do
    "$T" tokenize -i "$dir/dt.txt" -t "$tk" --val-frac 0 -o "$dir/dt.tok" --force >/dev/null || fail "tokenize for detokenize"
    expect_ok "detokenize ($tk)" "$T" detokenize "$dir/dt.tok" -t "$tk"
    grep -v '^$' "$dir/dt.txt" | cmp -s - "$dir/out" || { fail "detokenize ($tk) does not give the documents back"; cat "$dir/out"; }
done
expect_ok "detokenize -o" "$T" detokenize "$dir/dt.tok" -t "$FIX" -o "$dir/back.txt"
Tabs=$(cd "$(dirname "$T")" && pwd)/$(basename "$T") FIXabs=$(pwd)/$FIX
cd "$dir" || fail "cd $dir"
expect_ok "detokenize -o -" "$Tabs" detokenize "$dir/dt.tok" -t "$FIXabs" -o -
cd "$OLDPWD" || fail "cd back"
[ ! -e "$dir/-" ] && cmp -s "$dir/out" "$dir/back.txt" || fail "detokenize -o - did not write standard output"
grep -v '^$' "$dir/dt.txt" | cmp -s - "$dir/back.txt" || fail "detokenize -o wrote other text"
expect_ok "detokenize --eot" "$T" detokenize "$dir/dt.tok" -t "$FIX" --eot
grep -q "last line<|end_of_text|>" "$dir/out" || { fail "--eot does not write the end-of-text text"; cat "$dir/out"; }
expect_ok "detokenize --ids" "$T" detokenize --ids 72,105,33 -t bytes
[ "$(cat "$dir/out")" = "Hi!" ] || fail "detokenize --ids 72,105,33 is not Hi!"
expect_error "detokenize with another tokenizer" "was made by a tokenizer with vocab .* give the tokenizer it was made with" \
    "$T" detokenize "$dir/dt.tok" -t bytes
expect_error "detokenize --ids --eot" "--eot applies to a token file" "$T" detokenize --ids 1,2 --eot
expect_error "detokenize -o over a file" "exists; pass --force" "$T" detokenize "$dir/dt.tok" -t "$FIX" -o "$dir/back.txt"
expect_error "detokenize -o onto its input" "is the input" "$T" detokenize "$dir/dt.tok" -t "$FIX" -o "$dir/dt.tok" --force
expect_error "detokenize bad --ids" "--ids must be comma-separated token ids" "$T" detokenize --ids 1,x,3
expect_error "detokenize --ids past the vocab" "token id 999 (at position 1) has no token" "$T" detokenize --ids 1,999 -t bytes
expect_error "detokenize FILE and --ids" "give a token FILE or --ids LIST" "$T" detokenize "$dir/dt.tok" --ids 1
expect_error "detokenize nothing" "give a token FILE or --ids LIST" "$T" detokenize
expect_error "detokenize a missing file" "nope.tok does not exist" "$T" detokenize "$dir/nope.tok"
ls "$dir" | grep -q partial && fail "detokenize left a .partial file"

finish test_tokenize
