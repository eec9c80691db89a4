#!/bin/sh
# tests/test_format_doc.sh — docs/FORMAT.md against the files tiertrain writes:
# tools/format_check.py, a reader written from the document alone, checks every
# field, checksum and encoding of stores (nf4, nf4 without double quant, bf16,
# f32, lz4 extents, a pruning map, a source record), token files (versions 1
# and 2), checkpoints (LoRA and full training), PEFT adapters and exported HF
# directories, and cross-checks them (export's floats = the reader's own
# decoding of the store, the checkpoint's fingerprints and data hash = its own
# hashes, LoRA parameters = the adapter's). Then corrupted copies must be
# refused. Needs python3 (not one of the project's Debian packages): without
# it, SKIP (exit 77). Run by tests/run.sh from the repository root with
# $TIERTRAIN set to the binary under test.
. tests/lib.sh
command -v python3 >/dev/null 2>&1 || { echo "SKIP: python3 not found (tools/format_check.py needs it)"; exit 77; }
# the reader checks the bytes the release build writes; the ASan build's writers of every one of these files run in
# test_outputs, test_train_cli, test_instruct, test_hf_cli and test_loram_cli (tests/run.sh runs both builds)
case "$T" in */asan/*) echo "SKIP: the release build's files are the ones checked (the writers run under ASan elsewhere)"; exit 77 ;; esac
setup format_doc
CHECK="python3 tools/format_check.py"
SLICE=tools/demo-data/nlp-corpus-slice.txt
# check NAME ARGS... : the reader accepts every file named
check() {
    name=$1; shift
    $CHECK "$@" >"$dir/out" 2>"$dir/err" || { fail "$name: $(cat "$dir/err")"; return; }
}
# refuse NAME PATTERN ARGS... : the reader refuses, exit 1, naming PATTERN
refuse() {
    name=$1; pat=$2; shift 2
    $CHECK "$@" >"$dir/out" 2>"$dir/err"; rc=$?
    [ $rc -eq 1 ] || { fail "$name: the reader exited $rc on a corrupt file"; return; }
    grep -q -e "$pat" "$dir/err" || fail "$name: the reader's message lacks '$pat': $(cat "$dir/err")"
}
q() { "$@" >/dev/null 2>"$dir/err" || { fail "$*: exit $?"; cat "$dir/err"; }; }

# stores
q "$T" synth --preset tiny -o "$dir/nf4.tier"
q "$T" synth --preset tiny --no-double-quant -o "$dir/nf4plain.tier"
q "$T" synth --preset tiny --quant bf16 -o "$dir/bf16.tier"
q "$T" synth --preset tiny --quant f32 -o "$dir/f32.tier"
q "$T" synth --preset tiny --lz4 -o "$dir/lz4.tier"
q "$T" synth --preset tiny --prune-ratio 0.5 -o "$dir/p50.tier"
q "$T" prune "$dir/bf16.tier" --method semi -o "$dir/semi.tier"   # 2:4 zeros: lz4 extents
q "$T" prune "$dir/bf16.tier" --method unst --ratio 0.7 -o "$dir/unst.tier"
q "$T" quantize "$dir/unst.tier" -o "$dir/unst-nf4.tier"          # NF4-dq in lz4 extents
for s in nf4 nf4plain bf16 f32 lz4 p50 semi unst-nf4; do
    check "store $s" "$dir/$s.tier"
    case $s in semi|unst-nf4) grep -q ", 2 lz4 extents" "$dir/out" || fail "$s.tier: no lz4 extents: $(cat "$dir/out")";; esac
done

# export: BF16 (rounded) and F32 (exact) against the reader's own decoding, pruned too; import
# with a source record
q "$T" export "$dir/nf4.tier" -o "$dir/hf-nf4"
check "export nf4" --export-of "$dir/nf4.tier" "$dir/hf-nf4"
for s in nf4 p50; do
    q "$T" export "$dir/$s.tier" --dtype f32 -o "$dir/hf32-$s"
    check "export f32 $s" --export-of "$dir/$s.tier" "$dir/hf32-$s"
    grep -q "39 equal to the store's decoded values" "$dir/out" || fail "export f32 $s: $(cat "$dir/out")"
done
q "$T" import "$dir/hf-nf4" --base-model my-org/tiny-llama -o "$dir/named.tier"
check "source record" "$dir/named.tier"
grep -q "source 'my-org/tiny-llama'" "$dir/out" || fail "named.tier: no source record read: $(cat "$dir/out")"

# token files: version 1 (text) and version 2 (JSONL, README "Instruction data")
q "$T" tokenize --input "$SLICE" --val-frac 0.05 -o "$dir/slice.tok"
head -400 "$SLICE" | awk '{ gsub(/"/, "\047"); gsub(/\t/, " ") } NF >= 8 && !/[\\[:cntrl:]]/ { n = int(NF / 2); p = ""; c = ""
     for (i = 1; i <= NF; i++) { if (i <= n) p = p (i > 1 ? " " : "") $i; else c = c " " $i }
     printf "{\"prompt\": \"Continue this sentence: %s\", \"completion\": \"%s\"}\n", p, c }' >"$dir/pairs.jsonl"
q "$T" tokenize --format jsonl --template none -i "$dir/pairs.jsonl" --val-frac 0.05 -o "$dir/pairs.tok"
check "token files" "$dir/slice.tok" "$dir/slice.tok.val" "$dir/pairs.tok" "$dir/pairs.tok.val"
grep -q "pairs.tok: token file v2, .* examples, [1-9][0-9]* target tokens" "$dir/out" || fail "pairs.tok: $(cat "$dir/out")"
# detokenize writes one line per document: as many as the reader counts end-of-text ids
docs=$(sed -n 's/.*slice.tok.val: token file v1, .* \([0-9]*\) documents$/\1/p' "$dir/out")
[ "$("$T" detokenize "$dir/slice.tok.val" | wc -l)" = "$docs" ] || fail "detokenize's documents != the reader's $docs"

# checkpoints and adapters: LoRA on NF4, on a pruned store with version-2 data; full training
# (--eval-tokens 128: the scores before and after the step, of the default 16384 tokens, took most of each run; the
# checkpoint records the validation file's tokens and hash whatever a score takes)
TR="--steps 1 --seq 64 --micro-batch 2 --batch-tokens 128 --eval-every 0 --eval-tokens 128"
q "$T" train --model "$dir/nf4.tier" --data "$dir/slice.tok" --out "$dir/run1" --rank 4 $TR
check "LoRA checkpoint" --store "$dir/nf4.tier" --data "$dir/slice.tok" --val "$dir/slice.tok.val" "$dir/run1/checkpoint.bin" "$dir/run1"
grep -q "model fingerprint matches the store; weights_fp matches the store; data hash matches the token file; validation hash matches the validation file; LoRA parameters equal the adapter's tensors" \
    "$dir/out" || fail "run1 cross-checks: $(cat "$dir/out")"
q "$T" train --model "$dir/p50.tier" --data "$dir/pairs.tok" --out "$dir/run2" --rank 2 --targets q_proj,down_proj $TR
check "pruned LoRA checkpoint" --store "$dir/p50.tier" --data "$dir/pairs.tok" --val "$dir/pairs.tok.val" "$dir/run2/checkpoint.bin" "$dir/run2"
refuse "adapter of another store" "tiertrain_base .*, the store's is" --store "$dir/p50.tier" "$dir/run1"
q "$T" train --full --model "$dir/f32.tier" --data "$dir/slice.tok" --out "$dir/trained.tier" --ckpt "$dir/full" $TR
check "full checkpoint" --store "$dir/f32.tier" --params-of "$dir/trained.tier" "$dir/full/checkpoint.bin"
grep -q "full training, AdamW.*weights_fp matches the store; parameters equal the trained store's weights" "$dir/out" ||
    fail "full checkpoint cross-checks: $(cat "$dir/out")"

# The reader can fail: one flipped byte in a layer extent, in the metadata, in a token, in a
# checkpoint's payload; a truncated token file. tiertrain verify refuses the same store.
# poke FILE OFFSET : xor the byte at OFFSET with 0x01
poke() { python3 -c "import sys; f = open(sys.argv[1], 'r+b'); f.seek(int(sys.argv[2])); b = f.read(1)[0]
f.seek(int(sys.argv[2])); f.write(bytes([b ^ 1]))" "$1" "$2"; }
cp "$dir/nf4.tier" "$dir/bad.tier"
off=$("$T" info --json "$dir/bad.tier" | sed 's/.*"layer":1,[^}]*"offset":\([0-9]*\).*/\1/')
poke "$dir/bad.tier" $((off + 1000))
refuse "flipped extent byte" "extent 2: checksum is not XXH3-64" "$dir/bad.tier"
"$T" verify "$dir/bad.tier" >/dev/null 2>&1 && fail "tiertrain verify accepts the store the reader refuses"
cp "$dir/nf4.tier" "$dir/bad2.tier"; poke "$dir/bad2.tier" 200
refuse "flipped metadata byte" "meta_checksum" "$dir/bad2.tier"
cp "$dir/slice.tok.val" "$dir/bad.tok"; poke "$dir/bad.tok" 34
refuse "token past vocab_size" "not below vocab_size" "$dir/bad.tok"
head -c 100 "$dir/slice.tok.val" >"$dir/short.tok"
refuse "truncated token file" "needs" "$dir/short.tok"
cp "$dir/run1/checkpoint.bin" "$dir/bad.bin"; poke "$dir/bad.bin" 5000
refuse "flipped checkpoint byte" "payload checksum" "$dir/bad.bin"

finish format_doc
