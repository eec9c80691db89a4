#!/bin/sh
# tests/test_loram_cli.sh — `tiertrain recover`, `merge` and `eval` end to
# end on the tiny preset: an adapter trained on a pruned store is recovered
# to the original shapes; merged into the original store it gives the loss
# of original + adapter; merging keeps the dtype (NF4 too) and the pruning
# map; eval's text and JSON output. Bad input (an adapter for another model,
# a store pruned differently, a store without a pruning map, a missing or
# truncated adapter, tokens outside the vocabulary, ...) is one line on
# stderr and a non-zero exit, and leaves no output behind.
. tests/lib.sh
setup loram

"$T" synth --preset tiny --quant f32 -o "$dir/orig.tier" >/dev/null 2>&1 || fail "synth original"
"$T" synth --preset tiny --quant f32 --prune-ratio 0.5 -o "$dir/pruned.tier" >/dev/null 2>&1 || fail "synth pruned"
# pruned like pruned.tier in layer 2 only: layer 1 keeps the original shapes
"$T" synth --preset tiny --quant f32 --prune-ratio 0.5 --prune-layers 2:3 -o "$dir/pruned2.tier" >/dev/null 2>&1 ||
    fail "synth pruned2"
"$T" synth --preset tiny -o "$dir/orig-nf4.tier" >/dev/null 2>&1 || fail "synth nf4"
awk 'NR <= 2000' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" >/dev/null || fail "tokenize"
TRAIN="--data $dir/t.tok --rank 4 --alpha 8 --seq 32 --micro-batch 2 --batch-tokens 128 --steps 2 --lr 5e-2 --eval-tokens 64"
"$T" train --model "$dir/pruned.tier" $TRAIN --out "$dir/run" >/dev/null 2>&1 || fail "train on the pruned store"
"$T" train --model "$dir/orig.tier" $TRAIN --out "$dir/run-orig" >/dev/null 2>&1 || fail "train on the original store"
EVAL="--data $dir/t.tok --seq 32 --micro-batch 2 --batch-tokens 128 --max-tokens 1024"

# --help lists every flag with its default.
expect_ok "recover --help" "$T" recover --help
for f in --adapter --pruned --output; do grep -q -e "$f" "$dir/out" || fail "recover --help lacks $f"; done
expect_ok "merge --help" "$T" merge --help
grep -q "re-quantized" "$dir/out" || fail "merge --help does not say NF4 is re-quantized"
expect_ok "eval --help" "$T" eval --help
for f in "--max-tokens N .*(default: all)" "--hbm SIZE .*(default: 0)" "--seq N .*(default: 256)" "--json"; do
    grep -q -e "$f" "$dir/out" || fail "eval --help lacks '$f'"
done

# recover: the pruned adapter to the original shapes.
expect_ok "recover" "$T" recover --adapter "$dir/run" --pruned "$dir/pruned.tier" -o "$dir/rec"
grep -q "2 of 4 layers scattered to the original shapes" "$dir/out" || { fail "recover output"; cat "$dir/out"; }
for f in adapter_model.safetensors adapter_config.json; do [ -s "$dir/rec/$f" ] || fail "recover did not write $f"; done
grep -q '"r": 4' "$dir/rec/adapter_config.json" && grep -q '"lora_alpha": 8' "$dir/rec/adapter_config.json" ||
    { fail "recovered adapter lost r/alpha"; cat "$dir/rec/adapter_config.json"; }

# merge: the recovered adapter into the original store; its loss is that of original + adapter.
expect_ok "merge" "$T" merge --model "$dir/orig.tier" --adapter "$dir/rec" -o "$dir/merged.tier"
expect_ok "verify merged" "$T" verify "$dir/merged.tier"
expect_ok "eval original + adapter" "$T" eval --model "$dir/orig.tier" --adapter "$dir/rec" $EVAL --json
cp "$dir/out" "$dir/with.json"
expect_ok "eval merged" "$T" eval --model "$dir/merged.tier" $EVAL --json
cp "$dir/out" "$dir/merged.json"
expect_ok "eval bare" "$T" eval --model "$dir/orig.tier" $EVAL --json
cp "$dir/out" "$dir/bare.json"
loss() { sed -n 's/.*"loss":\([-0-9.e+]*\).*/\1/p' "$1"; }
lw=$(loss "$dir/with.json"); lm=$(loss "$dir/merged.json"); lb=$(loss "$dir/bare.json")
# f32 stores: the two differ only by f32 rounding (test_loram.c bounds it); 1e-4 nats is ~100x that
awk -v a="$lw" -v b="$lm" 'BEGIN { d = a - b; exit !(a != "" && d < 1e-4 && d > -1e-4) }' ||
    fail "merged loss $lm differs from original + adapter $lw"
awk -v a="$lw" -v b="$lb" 'BEGIN { d = a - b; exit !(a != "" && (d > 1e-3 || d < -1e-3)) }' ||
    fail "the adapter does not change the loss ($lw vs bare $lb)"

# --rslora (PEFT's use_rslora, scaling alpha/sqrt(r)): trained, recovered and merged with that scaling —
# merged gives the loss of original + adapter, which differs from reading the adapter as plain LoRA.
"$T" train --model "$dir/pruned.tier" $TRAIN --rslora --out "$dir/run-rs" >"$dir/out" 2>&1 || fail "train --rslora"
grep -q "alpha=8 (rslora" "$dir/out" || { fail "train --rslora does not say so"; cat "$dir/out"; }
expect_ok "recover rslora" "$T" recover --adapter "$dir/run-rs" --pruned "$dir/pruned.tier" -o "$dir/rec-rs"
grep -q '"use_rslora": true' "$dir/rec-rs/adapter_config.json" || fail "recovered adapter lost use_rslora"
# a rewrite that fails writing adapter_config.json (here: its .partial name taken by a folder) keeps the earlier
# adapter whole: not the new tensors beside the old config, which would read as an rslora adapter scaled as plain
cp "$dir/rec/adapter_model.safetensors" "$dir/rec-tensors.keep"
mkdir "$dir/rec/adapter_config.json.partial"
expect_error "recover: config not writable" "adapter_config.json" \
    "$T" recover --adapter "$dir/run-rs" --pruned "$dir/pruned.tier" -o "$dir/rec" --force
rmdir "$dir/rec/adapter_config.json.partial"
cmp -s "$dir/rec-tensors.keep" "$dir/rec/adapter_model.safetensors" ||
    fail "a failed recover --force replaced the tensors and kept the old adapter_config.json"
# the disk full at once: the folder recover made is removed, not left empty (where a tmpfs can be mounted: root)
mkdir "$dir/small"
if mount -t tmpfs -o size=4k tmpfs "$dir/small" 2>/dev/null; then
    expect_error "recover: disk full" "no space left on the device" \
        "$T" recover --adapter "$dir/run" --pruned "$dir/pruned.tier" -o "$dir/small/rec"
    [ -e "$dir/small/rec" ] && { fail "recover: a failed write left its folder"; ls -lR "$dir/small"; }
    umount "$dir/small"
else
    echo "note: no tmpfs could be mounted: the disk-full case is skipped"
fi
expect_ok "merge rslora" "$T" merge --model "$dir/orig.tier" --adapter "$dir/rec-rs" -o "$dir/merged-rs.tier"
expect_ok "eval original + rslora adapter" "$T" eval --model "$dir/orig.tier" --adapter "$dir/rec-rs" $EVAL --json
lrw=$(loss "$dir/out")
expect_ok "eval merged rslora" "$T" eval --model "$dir/merged-rs.tier" $EVAL --json
lrm=$(loss "$dir/out")
sed 's/"use_rslora": true/"use_rslora": false/' "$dir/rec-rs/adapter_config.json" >"$dir/cfg.tmp" &&
    mv "$dir/cfg.tmp" "$dir/rec-rs/adapter_config.json"
# the config no longer matches what the tensors were saved with (their metadata's tiertrain_lora): refused
expect_error "eval rslora adapter, config edited" \
    "rec-rs/adapter_config.json says lora_alpha 8, use_rslora false, but .*rec-rs/adapter_model.safetensors was saved with lora_alpha 8, use_rslora true: the two files come from different saves" \
    "$T" eval --model "$dir/orig.tier" --adapter "$dir/rec-rs" $EVAL --json
# as from a tool that does not record them (the key renamed, same length): the config's use_rslora is used
perl -0777 -pi -e 's/"tiertrain_lora"/"tiertrain_Xora"/' "$dir/rec-rs/adapter_model.safetensors"
expect_ok "eval rslora adapter read as plain" "$T" eval --model "$dir/orig.tier" --adapter "$dir/rec-rs" $EVAL --json
lrp=$(loss "$dir/out")
awk -v a="$lrw" -v b="$lrm" -v p="$lrp" 'BEGIN { d = a - b; e = a - p; exit !(a != "" && d < 1e-4 && d > -1e-4 && (e > 1e-4 || e < -1e-4)) }' ||
    fail "rslora: merged $lrm, original + adapter $lrw, as plain LoRA $lrp"
grep -q '"tokens":1024,"model":".*orig.tier","adapter":".*rec"}' "$dir/with.json" || { fail "eval --json fields"; cat "$dir/with.json"; }
grep -q '"adapter":null}' "$dir/bare.json" || { fail "eval --json without adapter"; cat "$dir/bare.json"; }
expect_ok "eval text" "$T" eval --model "$dir/pruned.tier" --adapter "$dir/run" $EVAL --max-tokens 100
grep -q '^eval: loss [0-9.]* nats/token, perplexity [0-9.]* over 128 tokens$' "$dir/out" || { fail "eval text line"; cat "$dir/out"; }

# merge keeps the dtype (NF4 re-quantized) and the pruning map.
expect_ok "merge nf4" "$T" merge --model "$dir/orig-nf4.tier" --adapter "$dir/rec" -o "$dir/merged-nf4.tier"
expect_ok "info merged nf4" "$T" info "$dir/merged-nf4.tier"
grep -q "projections nf4" "$dir/out" || { fail "merged NF4 store is not NF4"; cat "$dir/out"; }
expect_ok "merge pruned" "$T" merge --model "$dir/pruned.tier" --adapter "$dir/run" -o "$dir/merged-pruned.tier"
expect_ok "info merged pruned" "$T" info "$dir/merged-pruned.tier"
grep -q "pruning map: yes" "$dir/out" || { fail "merged pruned store lost its pruning map"; cat "$dir/out"; }

# Bad input: one line naming the problem, nothing written.
expect_error "recover: adapter for another model" "run-orig was trained for another model: layer 1 q_proj is 256 x 256 (out x in) in the adapter but 128 x 256" \
    "$T" recover --adapter "$dir/run-orig" --pruned "$dir/pruned.tier" -o "$dir/x"
expect_error "recover: store pruned otherwise" "run was trained for another model: layer 1 q_proj is 128 x 256 .* 256 x 256 in .*pruned2.tier" \
    "$T" recover --adapter "$dir/run" --pruned "$dir/pruned2.tier" -o "$dir/x"
# same shapes, other kept heads/channels (another --seed picks another map): the adapter's recorded base refuses it
"$T" synth --preset tiny --quant f32 --prune-ratio 0.5 --seed 9 -o "$dir/pruned-seed9.tier" >/dev/null 2>&1 || fail "synth seed 9"
expect_error "recover: same shapes, another map" "run was trained on a store with other shapes or another pruning map than .*pruned-seed9.tier" \
    "$T" recover --adapter "$dir/run" --pruned "$dir/pruned-seed9.tier" -o "$dir/x"
expect_error "eval: same shapes, another map" "another pruning map" \
    "$T" eval --model "$dir/pruned-seed9.tier" --adapter "$dir/run" $EVAL
expect_error "merge: same shapes, another map" "another pruning map" \
    "$T" merge --model "$dir/pruned-seed9.tier" --adapter "$dir/run" -o "$dir/y.tier"
[ -e "$dir/y.tier" ] && fail "merge with another map left y.tier"
expect_error "recover: already recovered" "already recovered" \
    "$T" recover --adapter "$dir/rec" --pruned "$dir/pruned.tier" -o "$dir/x"
expect_error "recover: no pruning map" "orig.tier has no pruning map.*needs no recovery" \
    "$T" recover --adapter "$dir/run" --pruned "$dir/orig.tier" -o "$dir/x"
expect_error "recover: missing adapter" "adapter directory .*nowhere does not exist" \
    "$T" recover --adapter "$dir/nowhere" --pruned "$dir/pruned.tier" -o "$dir/x"
expect_error "recover: missing store" "nope.tier does not exist" \
    "$T" recover --adapter "$dir/run" --pruned "$dir/nope.tier" -o "$dir/x"
mkdir "$dir/trunc"
cp "$dir/run/adapter_config.json" "$dir/trunc/"
head -c 3000 "$dir/run/adapter_model.safetensors" >"$dir/trunc/adapter_model.safetensors"
expect_error "recover: truncated adapter" "trunc/adapter_model.safetensors.*truncated" \
    "$T" recover --adapter "$dir/trunc" --pruned "$dir/pruned.tier" -o "$dir/x"
# a lora_alpha beyond a float (its scale would be infinite): the input adapter_config.json is named
mkdir "$dir/huge"
cp "$dir/run/adapter_model.safetensors" "$dir/huge/"
sed 's/"lora_alpha": [0-9.e+-]*/"lora_alpha": 1e39/' "$dir/run/adapter_config.json" >"$dir/huge/adapter_config.json"
expect_error "recover: lora_alpha 1e39" "huge/adapter_config.json: \"lora_alpha\" is 1e+39, beyond a float's range" \
    "$T" recover --adapter "$dir/huge" --pruned "$dir/pruned.tier" -o "$dir/x"
expect_error "merge: lora_alpha 1e39" "huge/adapter_config.json: \"lora_alpha\" is 1e+39" \
    "$T" merge --model "$dir/pruned.tier" --adapter "$dir/huge" -o "$dir/y.tier"
expect_error "recover: in place" "is the --adapter directory" \
    "$T" recover --adapter "$dir/run" --pruned "$dir/pruned.tier" -o "$dir/run/"
: >"$dir/afile"
expect_error "recover: output is a file" "afile is a file, not a directory" \
    "$T" recover --adapter "$dir/run" --pruned "$dir/pruned.tier" -o "$dir/afile"
expect_error "recover: no -o" "-o DIR is required" "$T" recover --adapter "$dir/run" --pruned "$dir/pruned.tier"
[ -e "$dir/x" ] && fail "a refused recover left $dir/x"

expect_error "merge: pruned adapter into the original" \
    "run was trained for another model: layer 1 q_proj is 128 x 256 .*tiertrain recover" \
    "$T" merge --model "$dir/orig.tier" --adapter "$dir/run" -o "$dir/y.tier"
expect_error "merge: truncated adapter" "truncated" "$T" merge --model "$dir/orig.tier" --adapter "$dir/trunc" -o "$dir/y.tier"
expect_error "merge: missing model" "nope.tier does not exist" \
    "$T" merge --model "$dir/nope.tier" --adapter "$dir/rec" -o "$dir/y.tier"
cp "$dir/orig.tier" "$dir/orig.keep"
expect_error "merge: output is the model" "-o .*orig.tier is the input" \
    "$T" merge --model "$dir/orig.tier" --adapter "$dir/rec" -o "$dir/orig.tier"
cmp -s "$dir/orig.tier" "$dir/orig.keep" || fail "a refused merge changed the model"
expect_error "eval: window larger than the batch" "--batch-tokens must be a multiple of --seq x --micro-batch" \
    "$T" eval --model "$dir/orig.tier" --data "$dir/t.tok.val" --seq 100000
expect_error "merge: output folder missing" "nodir/y.tier" \
    "$T" merge --model "$dir/orig.tier" --adapter "$dir/rec" -o "$dir/nodir/y.tier"
ls "$dir" | grep -q -e '^y.tier' && fail "a refused merge left $(ls "$dir" | grep '^y.tier')"

expect_error "eval: adapter for another model" "run was trained for another model: layer 1 q_proj" \
    "$T" eval --model "$dir/orig.tier" --adapter "$dir/run" $EVAL
"$T" tokenize --input "$dir/text.txt" --tokenizer tests/fixtures/tokenizer-mini.json -o "$dir/big.tok" >/dev/null 2>&1 ||
    fail "tokenize with the fixture tokenizer"
expect_error "eval: tokens outside the vocabulary" "big.tok holds token [0-9]* at position [0-9]*, outside the vocabulary" \
    "$T" eval --model "$dir/orig.tier" $EVAL --data "$dir/big.tok"
printf 'hi\n' >"$dir/short.txt"
"$T" tokenize --input "$dir/short.txt" --val-frac 0 -o "$dir/short.tok" >/dev/null 2>&1 || fail "tokenize short"
expect_error "eval: too few tokens" "short.tok holds 3 tokens but one window needs --seq + 1 = 33" \
    "$T" eval --model "$dir/orig.tier" $EVAL --data "$dir/short.tok"
expect_error "eval: missing data" "none.tok" "$T" eval --model "$dir/orig.tier" $EVAL --data "$dir/none.tok"
expect_error "eval: bad --seq" "--seq must be" "$T" eval --model "$dir/orig.tier" $EVAL --seq 1
expect_error "eval: bad --batch-tokens" "multiple of --seq" "$T" eval --model "$dir/orig.tier" $EVAL --batch-tokens 100
expect_error "eval: no --data" "--data FILE is required" "$T" eval --model "$dir/orig.tier"

finish test_loram_cli
