#!/bin/sh
# tests/test_prune_cli.sh — `tiertrain prune` and `tiertrain quantize` end to
# end on the tiny preset (4 layers, 8 heads / 4 KV heads, ffn 688): structured
# (stru, rand), 2:4 and unstructured pruning, then NF4; the results pass
# `verify`, `info` shows the pruned dims and map, and LoRA training runs on the
# pruned NF4 store. Bad input is one line on stderr, a non-zero exit and no
# output file. (tests/test_prune.c checks the numbers.)
. tests/lib.sh
setup prune

"$T" synth --preset tiny --quant f32 -o "$dir/f32.tier" >/dev/null || fail "synth f32"
"$T" synth --preset tiny --quant bf16 -o "$dir/bf16.tier" >/dev/null || fail "synth bf16"
size() { stat -c %s "$1"; }

# --help lists every flag with its default.
expect_ok "prune --help" "$T" prune --help
for f in --method --ratio --layers --importance --calib --calib-samples --calib-seq --seed --output \
         "default: stru" "default: magnitude" "default: 8" "default: 128"; do
    grep -q -e "$f" "$dir/out" || fail "prune --help lacks '$f'"
done
expect_ok "quantize --help" "$T" quantize --help
for f in --to --no-double-quant --output "default: nf4"; do
    grep -q -e "$f" "$dir/out" || fail "quantize --help lacks '$f'"
done

# Structured (LoRAM): layers 1..2 keep 2 of 4 KV heads (4 query heads) and 344 of 688 channels.
expect_ok "prune stru" "$T" prune "$dir/f32.tier" --method stru --ratio 0.5 -o "$dir/s.tier"
grep -q "parameters: 3.03M -> 2.31M" "$dir/out" || { fail "stru: parameter summary"; cat "$dir/out"; }
grep -q "layers 1-2 *4 heads, 2 KV heads, ffn 344 (pruned)" "$dir/out" || { fail "stru: per-layer dims"; cat "$dir/out"; }
expect_ok "verify stru" "$T" verify "$dir/s.tier"
expect_ok "info stru" "$T" info --json "$dir/s.tier"
for f in '"prune_map":true' '"pruned_layers":2' '"projection_dtype":"f32"' '"total":2308864'; do
    grep -q "$f" "$dir/out" || fail "info of the stru store lacks $f"
done
# info shows the map: each pruned layer's kept KV heads and MLP channels (ranges), every index in --json
expect_ok "info stru, text" "$T" info "$dir/s.tier"
grep -q "^pruning map (the original indices each pruned layer keeps):" "$dir/out" || { fail "info: no pruning map"; cat "$dir/out"; }
[ "$(grep -c "^  [12] *KV heads 2 of 4: [0-9,-]*; MLP channels 344 of 688: [0-9,-]" "$dir/out")" -eq 2 ] ||
    { fail "info: no kept indices for layers 1 and 2"; cat "$dir/out"; }
"$T" info --json "$dir/s.tier" | grep -q '"layer":1,[^}]*"kept_kv_heads":\[[0-9],[0-9]\],"kept_ffn_channels":\[[0-9,]*\]' ||
    fail "info --json: no kept indices"
expect_ok "prune --layers" "$T" prune "$dir/f32.tier" --ratio 0.25 --layers 0:4 -o "$dir/s04.tier"
# kv' = 4 - floor(4 x 0.25) = 3 (6 query heads), ffn' = 688 - ceil(688 x 0.25) = 516
grep -q "layers 0-3 *6 heads, 3 KV heads, ffn 516 (pruned)" "$dir/out" || { fail "--layers 0:4 dims"; cat "$dir/out"; }
# kv' = 4 - floor(1.2) = 3, ffn' = 688 - ceil(206.4) = 481
expect_ok "prune --ratio 0.3" "$T" prune "$dir/f32.tier" --ratio 0.3 -o "$dir/s03.tier"
grep -q "layers 1-2 *6 heads, 3 KV heads, ffn 481 (pruned)" "$dir/out" || { fail "ratio 0.3 dims"; cat "$dir/out"; }
expect_ok "prune bf16" "$T" prune "$dir/bf16.tier" --ratio 0.5 -o "$dir/sb.tier"
"$T" info --json "$dir/sb.tier" | grep -q '"projection_dtype":"bf16"' || fail "bf16 input gave another dtype"

# rand: the same structure, a function of --seed.
expect_ok "prune rand" "$T" prune "$dir/f32.tier" --method rand --ratio 0.5 --seed 3 -o "$dir/r3.tier"
grep -q "layers 1-2 *4 heads, 2 KV heads, ffn 344 (pruned)" "$dir/out" || fail "rand: per-layer dims"
expect_ok "prune rand again" "$T" prune "$dir/f32.tier" --method rand --ratio 0.5 --seed 3 -o "$dir/r3b.tier"
expect_ok "prune rand seed 4" "$T" prune "$dir/f32.tier" --method rand --ratio 0.5 --seed 4 -o "$dir/r4.tier"
expect_error "--seed without rand" "--seed is only used with --method rand" "$T" prune "$dir/f32.tier" --method stru \
    --ratio 0.5 --seed 4 -o "$dir/s4.tier"
cmp -s "$dir/r3.tier" "$dir/r3b.tier" || fail "rand: the same seed gave another store"
cmp -s "$dir/r3.tier" "$dir/r4.tier" && fail "rand: seeds 3 and 4 gave the same store"
cmp -s "$dir/r3.tier" "$dir/s.tier" && fail "rand chose what magnitude chose"

# 2:4 and unstructured: shapes unchanged, layer extents lz4-compressed (smaller file).
expect_ok "prune semi" "$T" prune "$dir/f32.tier" --method semi -o "$dir/semi.tier"
grep -q "zeroed 724992 of 1449984 projection weights .*(50.00%)" "$dir/out" || { fail "semi: summary"; cat "$dir/out"; }
expect_ok "verify semi" "$T" verify "$dir/semi.tier"
[ "$(size "$dir/semi.tier")" -lt "$(size "$dir/f32.tier")" ] || fail "semi: layers were not lz4-compressed"
expect_ok "prune semi --ratio 0.5" "$T" prune "$dir/f32.tier" --method semi --ratio 0.5 -o "$dir/semi2.tier"
cmp -s "$dir/semi.tier" "$dir/semi2.tier" || fail "semi: --ratio 0.5 changed the result"
expect_ok "prune unst" "$T" prune "$dir/f32.tier" --method unst --ratio 0.7 -o "$dir/unst.tier"
grep -q "(70.00%)" "$dir/out" || { fail "unst: summary"; cat "$dir/out"; }
expect_ok "verify unst" "$T" verify "$dir/unst.tier"
[ "$(size "$dir/unst.tier")" -lt "$(size "$dir/semi.tier")" ] || fail "unst 0.7: not smaller than 2:4"
# info says which layers are lz4-compressed (their dims stay full), and why the file is below the formula
expect_ok "info unst" "$T" info "$dir/unst.tier"
[ "$(grep -c "full .* each, lz4-compressed (2.77 MiB raw)" "$dir/out")" -eq 2 ] || { fail "info unst: no lz4 layers"; cat "$dir/out"; }
grep -q "the formula counts raw extents, and 2 of 6 are lz4-compressed" "$dir/out" || fail "info unst: size line"
"$T" info --json "$dir/unst.tier" | grep -q '"layer":1,[^}]*"codec":"lz4","raw_bytes":[0-9]' || fail "info --json: no codec"
"$T" info --json "$dir/f32.tier" | grep -q '"layer":1,[^}]*"codec":"raw"' || fail "info --json: no raw codec"
# under 3 layers, the default range is every layer (1:L-1 would be empty), as --help says
"$T" synth --preset tiny --quant f32 --layers 2 -o "$dir/two.tier" >/dev/null || fail "synth 2 layers"
expect_ok "prune 2 layers" "$T" prune "$dir/two.tier" --ratio 0.5 -o "$dir/two-p.tier"
grep -q "^layers 0:2 pruned" "$dir/out" || { fail "2 layers: not every layer pruned"; cat "$dir/out"; }
"$T" prune --help | grep -q "every layer (0:L) for 1 or 2" || fail "prune --help: the default for 1 or 2 layers"
"$T" synth --help | grep -q "every layer (0:L) for 1 or 2" || fail "synth --help: the default for 1 or 2 layers"
expect_ok "semi after stru" "$T" prune "$dir/s.tier" --method semi -o "$dir/ss.tier"
"$T" info --json "$dir/ss.tier" | grep -q '"prune_map":true' || fail "semi after stru lost the pruning map"

# Quantize: projections NF4 (double quant by default), the map kept; the pruned NF4 store trains.
expect_ok "quantize" "$T" quantize "$dir/s.tier" --to nf4 -o "$dir/q.tier"
expect_ok "verify quantized" "$T" verify "$dir/q.tier"
expect_ok "info quantized" "$T" info --json "$dir/q.tier"
for f in '"prune_map":true' '"pruned_layers":2' '"projection_dtype":"nf4-dq"' '"total":2308864'; do
    grep -q "$f" "$dir/out" || fail "info of the quantized store lacks $f"
done
expect_ok "quantize --no-double-quant" "$T" quantize "$dir/s.tier" --no-double-quant -o "$dir/q4.tier"
"$T" info --json "$dir/q4.tier" | grep -q '"projection_dtype":"nf4"' || fail "--no-double-quant: not plain nf4"
expect_ok "quantize unst" "$T" quantize "$dir/unst.tier" -o "$dir/qu.tier"
expect_ok "verify quantized unst" "$T" verify "$dir/qu.tier"
awk 'NR <= 400' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" >/dev/null || fail "tokenize"
expect_ok "train on pruned nf4" "$T" train --model "$dir/q.tier" --data "$dir/t.tok" --out "$dir/run" --rank 4 \
    --seq 32 --micro-batch 2 --batch-tokens 64 --steps 2 --eval-every 0 --save-every 0

# Taylor importance (calibration gradients from core/fulltrain.c).
expect_ok "prune taylor" "$T" prune "$dir/f32.tier" --ratio 0.5 --importance taylor --calib "$dir/t.tok" \
    --calib-samples 2 --calib-seq 32 -o "$dir/taylor.tier"
grep -q "importance taylor, ratio 0.5, calibration 2 x 32 tokens" "$dir/out" || { fail "taylor: summary"; cat "$dir/out"; }
# the calibration is one opaque pass (minutes at 70B widths on a CPU): said when it starts and how long it took
grep -q "^prune: Taylor calibration: one forward and backward pass" "$dir/out" &&
    grep -q "^prune: Taylor calibration took [0-9.]* s\$" "$dir/out" || { fail "taylor: calibration progress"; cat "$dir/out"; }
expect_ok "verify taylor" "$T" verify "$dir/taylor.tier"
cmp -s "$dir/taylor.tier" "$dir/s.tier" && echo "note: taylor and magnitude chose the same groups"
# More windows than tokens per window, the calibration data near the minimum (300 x 2 + 1 = 601 of 1016
# tokens; the bytes tokenizer: 1015 bytes + end-of-text): every window lies inside the data.
head -c 1015 "$dir/text.txt" >"$dir/c1015.txt"
"$T" tokenize --input "$dir/c1015.txt" --doc-sep none --val-frac 0 -o "$dir/c1016.tok" >/dev/null || fail "tokenize 1016"
[ "$(size "$dir/c1016.tok")" -eq $((32 + 4 * 1016)) ] || fail "c1016.tok does not hold 1016 tokens"
expect_ok "taylor 300 x 2" "$T" prune "$dir/f32.tier" --method unst --ratio 0.5 --importance taylor \
    --calib "$dir/c1016.tok" --calib-samples 300 --calib-seq 2 -o "$dir/taylor-300.tier"
expect_ok "verify taylor 300 x 2" "$T" verify "$dir/taylor-300.tier"
expect_ok "taylor 507 x 2" "$T" prune "$dir/f32.tier" --ratio 0.5 --importance taylor \
    --calib "$dir/c1016.tok" --calib-samples 507 --calib-seq 2 -o "$dir/taylor-507.tier"
# streamed calibration (--hbm) beside -o on a small disk (where a tmpfs can be mounted: root): the gradients' room
# is taken before the calibration, or its lack said with both sizes; nothing left behind
mkdir "$dir/small"
if mount -t tmpfs -o size=1m tmpfs "$dir/small" 2>/dev/null; then
    expect_error "taylor --hbm: no room for the gradients" "the calibration gradients take .* in .*small .* but it has .* free" \
        "$T" prune "$dir/f32.tier" --ratio 0.5 --importance taylor --calib "$dir/t.tok" --calib-samples 2 \
        --calib-seq 32 --hbm 64M -o "$dir/small/p.tier"
    grep -q "Taylor calibration took" "$dir/out" && fail "taylor --hbm: calibrated before finding no room"
    [ -z "$(ls -A "$dir/small")" ] || { fail "taylor --hbm on a small disk: files left"; ls -la "$dir/small"; }
    umount "$dir/small"
else
    echo "note: no tmpfs could be mounted: the small-disk calibration case is skipped"
fi

# Bad input: one line naming the file or option, no output left behind.
x="$dir/x.tier"
expect_error "nf4 input" "quantize after pruning" "$T" prune "$dir/q.tier" --ratio 0.5 -o "$x"
expect_error "already pruned" "already structurally pruned" "$T" prune "$dir/s.tier" --ratio 0.5 -o "$x"
expect_error "rand on pruned" "already structurally pruned" "$T" prune "$dir/s.tier" --method rand --ratio 0.5 -o "$x"
expect_error "ratio 1" "--ratio must be strictly between 0 and 1" "$T" prune "$dir/f32.tier" --ratio 1 -o "$x"
expect_error "ratio 0" "--ratio must be strictly between 0 and 1" "$T" prune "$dir/f32.tier" --ratio 0 -o "$x"
expect_error "ratio text" "--ratio expects a number" "$T" prune "$dir/f32.tier" --ratio half -o "$x"
expect_error "ratio nan" "--ratio expects a number" "$T" prune "$dir/f32.tier" --ratio nan -o "$x"
expect_error "no ratio" "--ratio R is required" "$T" prune "$dir/f32.tier" -o "$x"
expect_error "semi ratio" "--ratio must be 0.5" "$T" prune "$dir/f32.tier" --method semi --ratio 0.3 -o "$x"
expect_error "ratio too big" "would remove all 688 MLP channels" "$T" prune "$dir/f32.tier" --ratio 0.9999 -o "$x"
expect_error "layers reversed" "--layers expects A:B" "$T" prune "$dir/f32.tier" --ratio 0.5 --layers 3:1 -o "$x"
expect_error "layers text" "--layers expects A:B" "$T" prune "$dir/f32.tier" --ratio 0.5 --layers all -o "$x"
expect_error "layers past" "--layers 2:9 is not a non-empty range within 0:4" \
    "$T" prune "$dir/f32.tier" --ratio 0.5 --layers 2:9 -o "$x"
expect_error "method" "--method must be stru, rand, semi or unst" "$T" prune "$dir/f32.tier" --method foo --ratio 0.5 -o "$x"
expect_error "importance" "--importance must be magnitude or taylor" \
    "$T" prune "$dir/f32.tier" --importance l1 --ratio 0.5 -o "$x"
expect_error "taylor without calib" "--calib FILE" "$T" prune "$dir/f32.tier" --importance taylor --ratio 0.5 -o "$x"
expect_error "calib without taylor" "--calib is only used" "$T" prune "$dir/f32.tier" --calib "$dir/t.tok" --ratio 0.5 -o "$x"
expect_error "hbm without taylor" "--hbm is only used with --importance taylor" \
    "$T" prune "$dir/f32.tier" --ratio 0.5 --hbm 1G -o "$x"
expect_error "host without taylor" "--host is only used with --importance taylor" \
    "$T" prune "$dir/f32.tier" --ratio 0.5 --host 1G -o "$x"
# a bad flag value is a usage error (exit 2), refused before anything is printed
for r in 0 1 nan "0.3 --method semi" "0.5 --hbm 1G"; do
    "$T" prune "$dir/f32.tier" --ratio $r -o "$x" >"$dir/out" 2>"$dir/err"; rc=$?
    [ $rc -eq 2 ] || { fail "--ratio $r: exit $rc, not 2"; cat "$dir/err"; }
    [ -s "$dir/out" ] && { fail "--ratio $r: printed on stdout before the error"; cat "$dir/out"; }
done
expect_error "rand with taylor" "--importance does not apply" \
    "$T" prune "$dir/f32.tier" --method rand --importance taylor --calib "$dir/t.tok" --ratio 0.5 -o "$x"
expect_error "calib samples" "--calib-samples must be" "$T" prune "$dir/f32.tier" --calib-samples 0 --ratio 0.5 -o "$x"
expect_error "calib seq 1" "--calib-seq must be 2..1048576" \
    "$T" prune "$dir/f32.tier" --importance taylor --calib "$dir/t.tok" --calib-seq 1 --ratio 0.5 -o "$x"
expect_error "calib seq 0" "--calib-seq must be 2..1048576" "$T" prune "$dir/f32.tier" --calib-seq 0 --ratio 0.5 -o "$x"
expect_error "calib too few samples' tokens" "fewer than --calib-samples 508 x --calib-seq 2 + 1" \
    "$T" prune "$dir/f32.tier" --importance taylor --calib "$dir/c1016.tok" --calib-samples 508 --calib-seq 2 \
    --ratio 0.5 -o "$x"
expect_error "calib missing" "nope.tok" \
    "$T" prune "$dir/f32.tier" --importance taylor --calib "$dir/nope.tok" --ratio 0.5 -o "$x"
expect_error "calib too short" "fewer than one window" \
    "$T" prune "$dir/f32.tier" --importance taylor --calib "$dir/t.tok" --calib-seq 1000000 --ratio 0.5 -o "$x"
"$T" tokenize --input "$dir/text.txt" --tokenizer tests/fixtures/tokenizer-mini.json -o "$dir/big.tok" >/dev/null 2>&1 ||
    fail "tokenize with the fixture tokenizer"
expect_error "calib vocab" "big.tok was tokenized for a vocabulary" \
    "$T" prune "$dir/f32.tier" --importance taylor --calib "$dir/big.tok" --ratio 0.5 -o "$x"
expect_error "missing input" "nope.tier does not exist" "$T" prune "$dir/nope.tier" --ratio 0.5 -o "$x"
expect_error "no -o" "-o FILE is required" "$T" prune "$dir/f32.tier" --ratio 0.5
expect_error "onto the input" "-o $dir/f32.tier is the input $dir/f32.tier; write the result to a new file" \
    "$T" prune "$dir/f32.tier" --ratio 0.5 -o "$dir/f32.tier"
expect_error "onto the input by another path" "is the input" "$T" prune "$dir/f32.tier" --ratio 0.5 -o "$dir/./f32.tier"
expect_error "no such folder" "the folder $dir/nodir does not exist" "$T" prune "$dir/f32.tier" --ratio 0.5 \
    -o "$dir/nodir/x.tier"
# the output is checked before the calibration and scoring (a test binary under ASan takes seconds for those)
start=$(date +%s)
expect_error "no such folder, taylor" "the folder $dir/nodir does not exist" \
    "$T" prune "$dir/f32.tier" --ratio 0.5 --importance taylor --calib "$dir/t.tok" --calib-samples 8 --calib-seq 128 \
    -o "$dir/nodir/x.tier"
grep -q -e scoring -e calibrat "$dir/err" && fail "no such folder, taylor: work was done before the check"
[ $(( $(date +%s) - start )) -le 5 ] || fail "no such folder, taylor: not refused before the work"
expect_error "-o a directory" "-o $dir is a directory" "$T" prune "$dir/f32.tier" --ratio 0.5 -o "$dir"
expect_error "-o a directory, taylor" "is a directory" \
    "$T" prune "$dir/f32.tier" --ratio 0.5 --importance taylor --calib "$dir/t.tok" -o "$dir/"
expect_error "unknown flag" "unknown option '--bogus'" "$T" prune "$dir/f32.tier" --bogus -o "$x"
# a corrupt layer (bytes in layer 0, read while the output is being written)
cp "$dir/f32.tier" "$dir/bad.tier"
printf 'garbage!' | dd of="$dir/bad.tier" bs=1 seek=1000000 conv=notrunc 2>/dev/null
expect_error "corrupt input" "bad.tier" "$T" prune "$dir/bad.tier" --ratio 0.5 -o "$x"
expect_error "corrupt input, quantize" "bad.tier" "$T" quantize "$dir/bad.tier" -o "$x"
cp "$dir/s.tier" "$dir/keep.tier"
expect_error "corrupt input over a file" "bad.tier" "$T" prune "$dir/bad.tier" --method unst --ratio 0.5 -o "$dir/keep.tier" --force
cmp -s "$dir/s.tier" "$dir/keep.tier" || fail "a failed prune changed the existing output file"
expect_error "quantize nf4" "already NF4-quantized" "$T" quantize "$dir/q.tier" -o "$x"
expect_error "quantize --to" "--to must be nf4" "$T" quantize "$dir/s.tier" --to int8 -o "$x"
expect_error "quantize no -o" "-o FILE is required" "$T" quantize "$dir/s.tier"
expect_error "quantize onto the input" "-o $dir/s.tier is the input $dir/s.tier; write the result to a new file" \
    "$T" quantize "$dir/s.tier" -o "$dir/s.tier"
expect_error "quantize no such folder" "the folder $dir/nodir does not exist" "$T" quantize "$dir/s.tier" \
    -o "$dir/nodir/q.tier"
expect_error "quantize -o a directory" "is a directory" "$T" quantize "$dir/s.tier" -o "$dir"
ls "$dir" | grep -q -e '^x\.tier' && fail "a failed command left $(ls "$dir" | grep -e '^x\.tier')"
"$T" verify "$dir/f32.tier" >/dev/null 2>&1 || fail "a refused command damaged its input"
"$T" verify "$dir/s.tier" >/dev/null 2>&1 || fail "a refused quantize damaged its input"

finish test_prune_cli
