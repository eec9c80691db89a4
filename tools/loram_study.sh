#!/bin/sh
# tools/loram_study.sh — when does LoRAM's recovered adapter transfer?
#
# For each model size, seed, pruning ratio, alignment recipe and target domain:
# pre-train the model on general text (train --full from random weights),
# prune it (LoRAM structured, magnitude), align the pruned model (none, LM loss
# for N steps, or distillation from the original for N steps), quantize it to
# NF4, train LoRA on it for the domain, recover the adapter, and compare on
# held-out text of the domain with LoRA trained directly on the original:
#
#   share = (L_orig - L_recovered) / (L_orig - L_direct)
#
# where L is the domain's held-out loss (log perplexity) of the original model
# alone, with the recovered adapter, and with the direct adapter: 1 means the
# recovered adapter gives all of direct LoRA's gain, 0 none, < 0 harm. The
# general-text loss change of the recovered adapter is recorded beside it.
# Recipes are the demo's (tools/demo.sh): --seq 128, 2048 tokens a step,
# pre-training 200 steps, LoRA rank 16 for 80 steps.
#
# Every stage's output is kept under DIR (default build/study) and skipped
# when present, so the study resumes where it stopped; results go to
# DIR/results.tsv, one line per (size, seed, ratio, alignment, domain).
#
#   sh tools/loram_study.sh run      run (or resume) the grid below
#   sh tools/loram_study.sh table    mean and spread over seeds (markdown)
#
# The grid comes from the environment (defaults in brackets):
#   SIZES   model presets                              [tiny]
#   SEEDS   seeds (weights, data order, adapters)      [1 2 3]
#   RATIOS  pruning ratios                             [0.5 0.75]
#   ALIGN   alignments: none, lm:N (N steps of LM loss), kd:N (N steps of
#           distillation from the original, --distill-weight 1)  [none lm:40 lm:160]
#   DOMAINS target domains: un (UN documents), film (film reviews), news  [un film]
#   CORPUS  the shared corpus      [../shared/data/nlp-corpus.txt]
# Domains are cut from the corpus after its first 14554 lines (the general
# text, tools/demo-data/nlp-corpus-slice.txt, is those lines), by vocabulary:
# the first 2500 matching lines each, none in two domains.
set -e
cd "$(dirname "$0")/.."
T=${TIERTRAIN:-./tiertrain}
DIR=${DIR:-build/study}
SIZES=${SIZES:-tiny}
SEEDS=${SEEDS:-1 2 3}
RATIOS=${RATIOS:-0.5 0.75}
ALIGN=${ALIGN:-none lm:40 lm:160}
DOMAINS=${DOMAINS:-un film}
CORPUS=${CORPUS:-../shared/data/nlp-corpus.txt}
BATCH="--seq 128 --micro-batch 8 --batch-tokens 2048"
LORA="--rank 16 --alpha 32 --lr 5e-3 --min-lr 5e-4 --steps 80 --eval-every 0 --eval-tokens 2048"
GENERAL=tools/demo-data/nlp-corpus-slice.txt
UN_RE='United Nations|General Assembly|Secretary-General|Committee|Council|resolution|Member States|delegation|Commission|Convention|programme|implementation|Governments'
FILM_RE='\b([Ff]ilms?|[Mm]ovies?|actors?|actress(es)?|director|cinema|screenplay|scenes?)\b'
NEWS_RE='\b(police|minister|officials|reported|spokesman|percent|election)\b'

log() { echo "[$(date +%H:%M:%S)] $*"; }
# quiet: a stage's output goes to its log; on failure the log's tail is shown
q() { # log-file command...
    lf=$1; shift
    if ! "$@" >"$lf" 2>&1; then tail -5 "$lf" >&2; echo "loram_study: failed: $*" >&2; exit 1; fi
}
loss() { # model adapter-or-"" data -> held-out loss (log perplexity), cached next to the model
    key=$(echo "$1 $2 $3" | cksum | cut -d' ' -f1)
    c="$DIR/cache/$key"
    if [ ! -f "$c" ]; then
        a=""; [ -n "$2" ] && a="--adapter $2"
        $T eval --model "$1" $a --data "$3" --seq 128 --json 2>/dev/null |
            sed -n 's/.*"perplexity": *\([0-9.eE+-]*\).*/\1/p' | awk '{ printf "%.6f\n", log($1) }' >"$c.tmp"
        [ -s "$c.tmp" ] || { echo "loram_study: eval of $1 ${2:+with $2 }on $3 failed" >&2; exit 1; }
        mv "$c.tmp" "$c"
    fi
    cat "$c"
}

data() { # the general text and the domains, tokenized (byte level) with held-out splits
    mkdir -p "$DIR/data" "$DIR/cache"
    [ -f "$DIR/data/general.tok" ] || q "$DIR/data/general.log" $T tokenize --input "$GENERAL" --val-frac 0.02 -o "$DIR/data/general.tok"
    for dom in $DOMAINS; do
        [ -f "$DIR/data/$dom.tok" ] && continue
        [ -f "$CORPUS" ] || { echo "loram_study: $CORPUS is missing; set CORPUS to the shared nlp-corpus.txt" >&2; exit 1; }
        rest="$DIR/data/rest.txt"
        tail -n +14555 "$CORPUS" >"$rest"
        case $dom in # each domain excludes the ones before it in this order: un, film, news
        un) grep -E "$UN_RE" "$rest" ;;
        film) grep -vE "$UN_RE" "$rest" | grep -E "$FILM_RE" ;;
        news) grep -vE "$UN_RE" "$rest" | grep -vE "$FILM_RE" | grep -E "$NEWS_RE" ;;
        *) echo "loram_study: unknown domain '$dom' (un, film, news)" >&2; exit 1 ;;
        esac | head -n 2500 >"$DIR/data/$dom.txt"
        q "$DIR/data/$dom.log" $T tokenize --input "$DIR/data/$dom.txt" --val-frac 0.05 -o "$DIR/data/$dom.tok"
    done
}

run() {
    data
    R="$DIR/results.tsv"
    [ -f "$R" ] || printf 'size\tseed\tratio\talign\tdomain\tL_orig\tL_direct\tL_recovered\tshare\tG_orig\tG_recovered\tG_delta\tL_pruned_own\n' >"$R"
    for size in $SIZES; do
    for seed in $SEEDS; do
        M="$DIR/$size-s$seed"
        mkdir -p "$M"
        if [ ! -f "$M/original.tier" ]; then
            log "$size seed $seed: pre-train"
            [ -f "$M/random.tier" ] || q "$M/synth.log" $T synth --preset "$size" --quant f32 --seed "$seed" -o "$M/random.tier"
            q "$M/pretrain.log" $T train --full --model "$M/random.tier" --data "$DIR/data/general.tok" --out "$M/original.tier" \
                $BATCH --steps 200 --lr 3e-3 --min-lr 1e-4 --warmup 10 --eval-every 0 --eval-tokens 2048 --seed "$seed"
            rm -f "$M/random.tier"
        fi
        for dom in $DOMAINS; do
            if [ ! -f "$M/direct-$dom/adapter_model.safetensors" ]; then
                log "$size seed $seed: direct LoRA for $dom"
                rm -rf "$M/direct-$dom"
                q "$M/direct-$dom.log" $T train --model "$M/original.tier" --data "$DIR/data/$dom.tok" --out "$M/direct-$dom" \
                    $BATCH $LORA --seed "$seed"
            fi
        done
        for ratio in $RATIOS; do
            P="$M/r$ratio"
            mkdir -p "$P"
            [ -f "$P/pruned.tier" ] || q "$P/prune.log" $T prune "$M/original.tier" --method stru --ratio "$ratio" -o "$P/pruned.tier"
            for al in $ALIGN; do
                A="$P/$(echo "$al" | tr ':' '-')"
                mkdir -p "$A"
                if [ ! -f "$A/nf4.tier" ]; then
                    log "$size seed $seed ratio $ratio: align $al"
                    case $al in
                    none) src="$P/pruned.tier" ;;
                    lm:*|kd:*)
                        n=${al#*:}
                        kd=""; [ "${al%%:*}" = kd ] && kd="--teacher $M/original.tier --distill-weight 1"
                        rm -f "$A/aligned.tier"
                        q "$A/align.log" $T train --full --model "$P/pruned.tier" --data "$DIR/data/general.tok" --out "$A/aligned.tier" \
                            $BATCH --steps "$n" --lr 1e-3 --min-lr 1e-4 --warmup 5 --eval-every 0 --eval-tokens 2048 --seed "$seed" $kd
                        src="$A/aligned.tier" ;;
                    *) echo "loram_study: ALIGN entry '$al' is not none, lm:N or kd:N" >&2; exit 1 ;;
                    esac
                    q "$A/quantize.log" $T quantize "$src" --to nf4 -o "$A/nf4.tier.tmp" --force
                    mv "$A/nf4.tier.tmp" "$A/nf4.tier"
                fi
                for dom in $DOMAINS; do
                    key="$size	$seed	$ratio	$al	$dom	"
                    grep -qF "$key" "$R" && continue
                    if [ ! -f "$A/recovered-$dom/adapter_model.safetensors" ]; then
                        log "$size seed $seed ratio $ratio $al: LoRA for $dom on the pruned model, recover"
                        rm -rf "$A/lora-$dom" "$A/recovered-$dom"
                        q "$A/lora-$dom.log" $T train --model "$A/nf4.tier" --data "$DIR/data/$dom.tok" --out "$A/lora-$dom" \
                            $BATCH $LORA --seed "$seed"
                        q "$A/recover-$dom.log" $T recover --adapter "$A/lora-$dom" --pruned "$A/nf4.tier" -o "$A/recovered-$dom"
                    fi
                    lo=$(loss "$M/original.tier" "" "$DIR/data/$dom.tok.val")
                    ld=$(loss "$M/original.tier" "$M/direct-$dom" "$DIR/data/$dom.tok.val")
                    lr=$(loss "$M/original.tier" "$A/recovered-$dom" "$DIR/data/$dom.tok.val")
                    lp=$(loss "$A/nf4.tier" "$A/lora-$dom" "$DIR/data/$dom.tok.val")
                    go=$(loss "$M/original.tier" "" "$DIR/data/general.tok.val")
                    gr=$(loss "$M/original.tier" "$A/recovered-$dom" "$DIR/data/general.tok.val")
                    awk -v k="$key" -v lo="$lo" -v ld="$ld" -v lr="$lr" -v go="$go" -v gr="$gr" -v lp="$lp" \
                        'BEGIN { printf "%s%.4f\t%.4f\t%.4f\t%.3f\t%.4f\t%.4f\t%+.4f\t%.4f\n", k, lo, ld, lr, (lo - lr) / (lo - ld), go, gr, gr - go, lp }' >>"$R"
                    log "$(tail -1 "$R")"
                done
            done
        done
    done
    done
}

table() { # mean and sample standard deviation over seeds (and n) per size, ratio, alignment, domain
    R="$DIR/results.tsv"
    [ -f "$R" ] || { echo "loram_study: no results yet in $R; run \`sh tools/loram_study.sh run\` first" >&2; exit 1; }
    echo "| size | ratio | alignment | domain | seeds | share of direct-LoRA gain | general-text loss change |"
    echo "|---|---|---|---|---|---|---|"
    awk -F '\t' 'NR > 1 {
        k = $1 "|" $3 "|" $4 "|" $5
        if (!(k in n)) order[++K] = k
        n[k]++; s[k] += $9; ss[k] += $9 * $9; g[k] += $12; gg[k] += $12 * $12
    }
    function sd(sum, sq, m) { return m > 1 ? sqrt((sq - sum * sum / m) / (m - 1)) : 0 }
    END {
        for (i = 1; i <= K; i++) {
            k = order[i]; split(k, f, "|"); m = n[k]
            # sort key: size, ratio, alignment (none, lm by steps, kd by steps), domain
            split(f[3], a, ":"); ar = f[3] == "none" ? 0 : (a[1] == "lm" ? 1 : 2) * 100000 + a[2]
            printf "%s\t%s\t%08d\t%s\t| %s | %s | %s | %s | %d | %.2f ± %.2f | %+.3f ± %.3f |\n", f[1], f[2], ar,
                f[4], f[1], f[2], f[3], f[4], m, s[k] / m, sd(s[k], ss[k], m), g[k] / m, sd(g[k], gg[k], m)
        }
    }' "$R" | sort -t "$(printf '\t')" -k1,1r -k2,2 -k3,3 -k4,4r | cut -f5
}

case ${1:-} in
run) run ;;
table) table ;;
*) echo "usage: sh tools/loram_study.sh run|table   (grid from SIZES SEEDS RATIOS ALIGN DOMAINS; see the script's header)" >&2; exit 2 ;;
esac
