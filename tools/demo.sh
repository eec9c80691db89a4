#!/bin/sh
# tools/demo.sh — the quick-start job (`make demo`): LoRAM ("train small, infer
# large") end to end on a small model, with no download. The texts ship in
# tools/demo-data/: general English (nlp-corpus-slice.txt) and a different
# domain, UN documents (un-slice.txt).
#   1. tokenize both texts (byte level), each with a held-out split;
#   2. pre-train the built-in tiny LLaMA (4 layers, GQA) from random weights on
#      the general text (train --full);
#   3. prune it (LoRAM structured: 3 of 4 KV heads with their query groups and
#      3/4 of the MLP channels in layers 1..2);
#   4. align the pruned model: a little full-parameter training on general
#      text by distillation from the original (lm_head frozen) — the recipe
#      tools/loram_study.sh found to transfer best (README, "When does the
#      recovered adapter transfer?");
#   5. quantize it to NF4 (QLoRA's double quantization);
#   6. train LoRA on the pruned NF4 model for the UN domain;
#   7. recover the adapter to the original shapes;
#   8. for reference, train the same LoRA directly on the original model;
#   9. print the perplexities of every variant on held-out text of both domains.
# Everything stays in build/demo/, made afresh on every run (the commands
# refuse to replace their outputs otherwise). About 5-6 minutes on 2 cores.
set -e
T=./tiertrain
D=build/demo
rm -rf "$D"
mkdir -p "$D"
BATCH="--seq 128 --micro-batch 8 --batch-tokens 2048"

echo "== 1. tokenize: general text (pre-training, alignment) and UN documents (the target domain)"
$T tokenize --input tools/demo-data/nlp-corpus-slice.txt --val-frac 0.02 -o "$D/general.tok"
$T tokenize --input tools/demo-data/un-slice.txt --val-frac 0.05 -o "$D/un.tok"

echo
echo "== 2. pre-train the tiny model on general text (every weight; lm_head stays frozen)"
$T synth --preset tiny --quant f32 -o "$D/random.tier"
$T train --full --model "$D/random.tier" --data "$D/general.tok" --out "$D/original.tier" $BATCH \
    --steps 200 --lr 3e-3 --min-lr 1e-4 --warmup 10 --eval-every 50 --eval-tokens 16384

echo
echo "== 3. prune (LoRAM structured, ratio 0.75, magnitude importance)"
$T prune "$D/original.tier" --method stru --ratio 0.75 -o "$D/pruned.tier"

echo
echo "== 4. align the pruned model (distillation from the original on general text, lm_head frozen)"
$T train --full --model "$D/pruned.tier" --data "$D/general.tok" --out "$D/aligned.tier" $BATCH \
    --steps 40 --lr 1e-3 --min-lr 1e-4 --warmup 5 --eval-every 20 --eval-tokens 16384 --seed 2 \
    --teacher "$D/original.tier" --distill-weight 1

echo
echo "== 5. quantize the aligned pruned model to NF4"
$T quantize "$D/aligned.tier" --to nf4 -o "$D/aligned-nf4.tier"

LORA="--rank 16 --alpha 32 --lr 5e-3 --min-lr 5e-4 --steps 80 --eval-every 40 --eval-tokens 16384"
echo
echo "== 6. train LoRA on the pruned NF4 model for the UN domain"
rm -rf "$D/lora-pruned" "$D/lora-recovered" "$D/lora-original"
$T train --model "$D/aligned-nf4.tier" --data "$D/un.tok" --out "$D/lora-pruned" $BATCH $LORA

echo
echo "== 7. recover the adapter to the original model's shapes"
$T recover --adapter "$D/lora-pruned" --pruned "$D/aligned-nf4.tier" -o "$D/lora-recovered"

echo
echo "== 8. reference: the same LoRA trained directly on the original model"
$T train --model "$D/original.tier" --data "$D/un.tok" --out "$D/lora-original" $BATCH $LORA

echo
echo "== 9. perplexity on held-out text (lower is better)"
ppl() { # model [adapter] data -> perplexity
    if [ -n "$2" ]; then a="--adapter $2"; else a=""; fi
    $T eval --model "$1" $a --data "$3" --seq 128 --json 2>/dev/null |
        sed -n 's/.*"perplexity": *\([0-9.eE+-]*\).*/\1/p'
}
row() { # label model [adapter]
    g=$(ppl "$2" "$3" "$D/general.tok.val"); u=$(ppl "$2" "$3" "$D/un.tok.val")
    printf '| %-44s | %15.2f | %15.2f |\n' "$1" "$g" "$u"
}
echo "| model                                        | general text    | UN (target)     |"
echo "|----------------------------------------------|-----------------|-----------------|"
row "original (pre-trained, 3.03M)" "$D/original.tier"
row "original + recovered adapter (LoRAM)" "$D/original.tier" "$D/lora-recovered"
row "pruned 0.75, not aligned" "$D/pruned.tier"
row "pruned + aligned, NF4" "$D/aligned-nf4.tier"
row "pruned + aligned, NF4 + its adapter" "$D/aligned-nf4.tier" "$D/lora-pruned"
row "original + LoRA trained on it (reference)" "$D/original.tier" "$D/lora-original"

echo
echo "== 10. infer large: one UN prompt, original vs original + recovered adapter (sampled, seed 1)"
P="The Advisory Committee recommends that the General Assembly"
printf 'original:            %s' "$P"
$T generate --model "$D/original.tier" --prompt "$P" -n 100 --temperature 0.7 --top-p 0.9 --seed 1
printf 'original + adapter:  %s' "$P"
$T generate --model "$D/original.tier" --adapter "$D/lora-recovered" --prompt "$P" -n 100 --temperature 0.7 --top-p 0.9 --seed 1

echo
echo "== 11. a task from held-out UN text: which continuation is real (the other from held-out general text)?"
awk -f tools/demo-task.awk tools/demo-data/un-slice.txt tools/demo-data/nlp-corpus-slice.txt >"$D/un-task.jsonl"
task() { # label model [adapter]
    if [ -n "$3" ]; then a="--adapter $3"; else a=""; fi
    printf '%-44s ' "$1"
    $T eval --model "$2" $a --task "$D/un-task.jsonl" --seq 128 2>/dev/null
}
task "original" "$D/original.tier"
task "original + recovered adapter (LoRAM)" "$D/original.tier" "$D/lora-recovered"
task "original + LoRA trained on it (reference)" "$D/original.tier" "$D/lora-original"
