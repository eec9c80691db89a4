#!/bin/sh
# tools/galore_align.sh — the demo's alignment step (tools/demo.sh, step 4, by LM
# loss, as the demo did before it distilled) with AdamW and with GaLore, side
# by side in one run: general-text perplexity of
# the pruned model before alignment and after each, the share of AdamW's
# recovery GaLore reaches, and both optimizers' state as train --full
# reports it. Needs `make demo` first (build/demo/pruned.tier, general.tok).
#
#   sh tools/galore_align.sh [RANK] [GALORE_LR]     (defaults 32 and 1e-2)
set -e
cd "$(dirname "$0")/.."
T=${TIERTRAIN:-./tiertrain}
D=${DEMO_DIR:-build/demo}
R=${1:-32}
GLR=${2:-1e-2}
for f in "$D/pruned.tier" "$D/general.tok" "$D/general.tok.val"; do
    [ -f "$f" ] || { echo "galore_align: $f is missing; run make demo first" >&2; exit 1; }
done
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
BATCH="--seq 128 --micro-batch 8 --batch-tokens 2048"
ALIGN="--steps 40 --min-lr 1e-4 --warmup 5 --eval-every 40 --eval-tokens 16384 --seed 2"
ppl() { $T eval --model "$1" --data "$D/general.tok.val" --seq 128 --json 2>/dev/null | sed -n 's/.*"perplexity": *\([0-9.eE+-]*\).*/\1/p'; }

$T train --full --model "$D/pruned.tier" --data "$D/general.tok" --out "$W/adamw.tier" $BATCH $ALIGN --lr 1e-3 >"$W/adamw.log"
$T train --full --model "$D/pruned.tier" --data "$D/general.tok" --out "$W/galore.tier" $BATCH $ALIGN --lr "$GLR" \
    --optim galore --galore-rank "$R" --galore-update-every 10 >"$W/galore.log"
p0=$(ppl "$D/pruned.tier"); pa=$(ppl "$W/adamw.tier"); pg=$(ppl "$W/galore.tier")
awk -v a="$p0" -v b="$pa" -v c="$pg" -v r="$R" -v l="$GLR" 'BEGIN { printf "general-text perplexity: pruned, not aligned %.3f; aligned with AdamW (lr 1e-3) %.3f; with GaLore rank %s (lr %s) %.3f\n", a, b, r, l, c }'
awk -v a="$p0" -v b="$pa" -v c="$pg" 'BEGIN { printf "GaLore recovers %.0f%% of the gap AdamW recovers (%.3f of %.3f)\n", 100 * (a - c) / (a - b), a - c, a - b }'
grep "^optimizer:" "$W/adamw.log" | sed 's/^/AdamW  /'
grep "^optimizer:" "$W/galore.log" | sed 's/^/GaLore /'
