#!/bin/sh
# tools/demo.sh — the quick-start job (`make demo`): writes the built-in tiny
# model as an NF4 store, shows what it holds, verifies every checksum and
# reads its layers the way the trainer streams them. Everything stays in
# build/demo/. (The LoRAM training demo replaces this once training lands.)
set -e
T=./tiertrain
D=build/demo
mkdir -p "$D"
echo "== synth: the tiny preset, LoRAM-pruned at ratio 0.5 (layers 1..2), NF4 with double quant"
$T synth --preset tiny --prune-ratio 0.5 --quant nf4 -o "$D/tiny-pruned.tier"
echo
echo "== info"
$T info "$D/tiny-pruned.tier"
echo
echo "== verify"
$T verify "$D/tiny-pruned.tier"
echo
echo "== bench io (tiny, so the figures say little; see 'make bench')"
$T bench io "$D/tiny-pruned.tier"
