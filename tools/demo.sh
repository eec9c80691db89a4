#!/bin/sh
# tools/demo.sh — the quick-start job (`make demo`), on the built-in tiny model
# and the text slice shipped in tools/demo-data/ (no download):
#   1. synth: a random tiny LLaMA (GQA, 4 layers), LoRAM-pruned (layers 1..2)
#      and NF4-quantized with double quantization;
#   2. info + verify: what the store holds, every checksum;
#   3. tokenize the text (byte level) with a held-out split;
#   4. train LoRA on the pruned NF4 model for 80 steps and show the
#      validation loss fall; the adapter is written in PEFT's format;
#   5. bench io: read the layers the way the trainer streams them.
# Everything stays in build/demo/. About a minute on 2 cores.
set -e
T=./tiertrain
D=build/demo
mkdir -p "$D"
echo "== 1. synth: tiny preset, LoRAM-pruned at ratio 0.5, NF4 with double quantization"
$T synth --preset tiny --prune-ratio 0.5 --quant nf4 -o "$D/tiny-pruned.tier"
echo
echo "== 2. info and verify"
$T info "$D/tiny-pruned.tier"
$T verify "$D/tiny-pruned.tier"
echo
echo "== 3. tokenize (bytes)"
$T tokenize --input tools/demo-data/nlp-corpus-slice.txt --val-frac 0.02 -o "$D/slice.tok"
echo
echo "== 4. train LoRA (r=16) on the pruned NF4 model"
rm -rf "$D/run"
$T train --model "$D/tiny-pruned.tier" --data "$D/slice.tok" --out "$D/run" --rank 16 --alpha 32 \
    --lr 1e-2 --min-lr 1e-3 --steps 80 --batch-tokens 2048 --eval-every 20 --eval-tokens 8192
ls -l "$D/run"
echo
echo "== 5. bench io (tiny, so the figures say little; see 'make bench')"
$T bench io "$D/tiny-pruned.tier"
