#!/bin/sh
# tests/test_mix_cli.sh — `train` on a data mixture (--data FILE:W given more
# than once, --mix static|dynamic, LoRAShear's knowledge recovery) end to end
# on two texts, general English (A) and UN documents (B):
#   - dynamic mixing in full training against a reference store (the tiny
#     model trained on A): every re-weighting in the JSON follows the rule
#     w_i = w0_i exp(gap_i / T) / Z, the weights move off the base weights, and
#     each step draws with the weights the last re-weighting left;
#   - one source with a weight == the plain --data run (LoRA: checkpoint and
#     adapter byte for byte), --data A:1 --data B:0 trains A's adapter;
#   - a dynamic LoRA mixture stopped and resumed == one run, byte for byte,
#     and a resume with other weights, one source, other validation tokens or
#     --eval-tokens is refused (one source, static: resumed, with a note);
#   - bad input (a missing or truncated source, a bad or all-zero weight,
#     --mix dynamic without --reference, a reference of another vocabulary, a
#     source without validation text, ...) is one line on stderr, a non-zero
#     exit, and writes nothing.
. tests/lib.sh
setup mix

"$T" synth --preset tiny --quant f32 -o "$dir/f32.tier" >/dev/null || fail "synth f32"
"$T" synth --preset tiny --prune-ratio 0.5 -o "$dir/m.tier" >/dev/null || fail "synth"
awk 'NR <= 1500' tools/demo-data/nlp-corpus-slice.txt >"$dir/a.txt"
awk 'NR <= 1500' tools/demo-data/un-slice.txt >"$dir/b.txt"
"$T" tokenize --input "$dir/a.txt" --val-frac 0.02 -o "$dir/A.tok" >/dev/null || fail "tokenize A"
"$T" tokenize --input "$dir/b.txt" --val-frac 0.02 -o "$dir/B.tok" >/dev/null || fail "tokenize B"
A=$dir/A.tok B=$dir/B.tok

# --help says --data repeats.
"$T" train --help >"$dir/out" || fail "train --help"
grep -q -e "--data FILE\[:W\] .*(repeatable, up to 16 times)" "$dir/out" || fail "--help: --data is not shown as repeatable"
grep -q -e "--mix MODE .*(default: static)" "$dir/out" || fail "--help lacks --mix"

# ---- dynamic mixing, full training -------------------------------------------------------------
# The reference: the tiny model trained on A alone (the "original model" whose losses the run recovers toward).
FULL="--full --seq 32 --micro-batch 4 --batch-tokens 128 --eval-tokens 512 --lr 3e-3 --warmup 2 --eval-every 0"
expect_ok "reference" "$T" train $FULL --model "$dir/f32.tier" --data "$A" --steps 12 --out "$dir/ref.tier"
expect_ok "dynamic full" "$T" train $FULL --model "$dir/f32.tier" --data "$A:0.5" --data "$B:0.5" --mix dynamic \
    --reference "$dir/ref.tier" --mix-every 2 --steps 6 --json --out "$dir/dyn.tier"
cp "$dir/out" "$dir/dyn.json"
grep -q '^{"step":0,.*"ref_losses":\[[0-9.]*,[0-9.]*\]' "$dir/dyn.json" || { fail "dynamic: no reference losses at step 0"; cat "$dir/dyn.json"; }
# each re-weighting (step 0 and every 2 steps): gaps g0, g1 -> weights w0, w1 with w0 = 1 / (1 + exp((g1 - g0) / 0.25))
sed -n 's/^{"step":\([0-9]*\),.*"mix_gap":\[\([^]]*\)\],"mix_next":\[\([^]]*\)\].*/\1 \2 \3/p' "$dir/dyn.json" |
    tr ',' ' ' >"$dir/rw"
[ "$(wc -l <"$dir/rw")" -eq 4 ] || { fail "dynamic: expected 4 re-weightings (before step 1, after 2, 4, 6)"; cat "$dir/dyn.json"; }
awk '{ want = 1 / (1 + exp(($3 - $2) / 0.25))
       if ($4 + $5 < 0.9999 || $4 + $5 > 1.0001) { print "step " $1 ": the weights add up to " $4 + $5; bad = 1 }
       if ($4 - want > 1e-4 || want - $4 > 1e-4) { print "step " $1 ": weight " $4 ", the rule gives " want; bad = 1 }
       if (($2 > $3) != ($4 > $5)) { print "step " $1 ": the weight did not go to the larger gap"; bad = 1 }
       if ($4 > 0.51 || $4 < 0.49) moved++ }
     END { if (!moved) { print "the weights never moved off 0.5 / 0.5"; bad = 1 }; exit bad }' "$dir/rw" ||
    { fail "dynamic: the re-weightings do not follow the rule"; cat "$dir/rw"; }
# each step draws with the weights the last re-weighting left
awk 'match($0, /"mix":\[[^]]*\]/) { m = substr($0, RSTART + 6, RLENGTH - 6) }
     /"step":[1-9]/ && m != next_m { print "step drew with " m ", the last re-weighting gave " next_m; bad = 1 }
     match($0, /"mix_next":\[[^]]*\]/) { next_m = substr($0, RSTART + 11, RLENGTH - 11) }
     END { exit bad }' "$dir/dyn.json" || fail "dynamic: a step did not draw with the re-weighted mixture"
echo "dynamic mixing (step gap_A gap_B -> w_A w_B):"; sed 's/^/  /' "$dir/rw"
expect_ok "verify the dynamic store" "$T" verify "$dir/dyn.tier"
# text output: a line per re-weighting
expect_ok "dynamic text" "$T" train $FULL --model "$dir/f32.tier" --data "$A" --data "$B" --mix dynamic \
    --reference "$dir/ref.tier" --mix-every 2 --steps 2 --out "$dir/dyn2.tier"
grep -q "^reference .*ref.tier: validation loss .*A.tok [0-9.]*, .*B.tok [0-9.]*" "$dir/out" || { fail "no reference line"; cat "$dir/out"; }
grep -q "^mix after step 2: .*A.tok 0\.[0-9]* (val [0-9.]*, reference [0-9.]*, gap [0-9.]*)" "$dir/out" ||
    { fail "no re-weighting line"; cat "$dir/out"; }

# ---- static mixing, LoRA ----------------------------------------------------------------------
LORA="--model $dir/m.tier --rank 4 --seq 32 --micro-batch 2 --batch-tokens 128 --eval-every 2 --eval-tokens 256 --lr 5e-3 --steps 4"
expect_ok "plain --data" "$T" train $LORA --data "$A" --out "$dir/plain"
expect_ok "one weighted source" "$T" train $LORA --data "$A:0.3" --out "$dir/one"
for f in checkpoint.bin adapter_model.safetensors; do
    cmp -s "$dir/plain/$f" "$dir/one/$f" || fail "--data A:0.3 alone wrote another $f than --data A"
done
expect_ok "A:1 B:0" "$T" train $LORA --data "$A:1" --data "$B:0" --json --out "$dir/a1b0"
cmp -s "$dir/plain/adapter_model.safetensors" "$dir/a1b0/adapter_model.safetensors" ||
    fail "--data A:1 --data B:0 trained another adapter than --data A"
grep -q '"step":4,.*"val_losses":\[[0-9.]*,[0-9.]*\]' "$dir/out" || { fail "A:1 B:0: no per-source val_losses"; cat "$dir/out"; }
expect_ok "static 3:1" "$T" train $LORA --data "$A:3" --data "$B" --json --out "$dir/s31"
grep -q '"step":1,.*"mix":\[0.75,0.25\]' "$dir/out" || { fail "static 3:1: weights not 0.75 / 0.25"; cat "$dir/out"; }
grep -q '"mix_next"' "$dir/out" && fail "static mixing re-weighted"
cmp -s "$dir/plain/adapter_model.safetensors" "$dir/s31/adapter_model.safetensors" && fail "a mixture trained A's adapter"

# ---- dynamic LoRA: resume == one run ----------------------------------------------------------
DYN="$LORA --eval-every 0 --steps 5 --save-every 0 --data $A:0.5 --data $B:0.5 --mix dynamic --reference $dir/ref.tier --mix-every 2"
expect_ok "dynamic LoRA" "$T" train $DYN --out "$dir/d1"
expect_ok "dynamic LoRA, stop at 2" "$T" train $DYN --stop-after 2 --out "$dir/d2"
expect_ok "dynamic LoRA, resume" "$T" train $DYN --out "$dir/d2" --resume "$dir/d2"
grep -q "^reference" "$dir/out" && fail "the resume scored the reference again (the checkpoint has its losses)"
grep -q "validated on other tokens" "$dir/err" && fail "a resume on the same validation tokens noted other ones"
for f in checkpoint.bin adapter_model.safetensors; do
    cmp -s "$dir/d1/$f" "$dir/d2/$f" || fail "dynamic LoRA: stopped at 2 and resumed, $f differs from one run"
done
expect_ok "dynamic LoRA, stop at 3" "$T" train $DYN --stop-after 3 --out "$dir/d3"
expect_ok "dynamic LoRA, resume at 3" "$T" train $DYN --out "$dir/d3" --resume "$dir/d3"
cmp -s "$dir/d1/checkpoint.bin" "$dir/d3/checkpoint.bin" || fail "dynamic LoRA: stopped at 3 and resumed, the checkpoint differs"
# an --hbm the model fits but the (f32, unpruned) reference does not: the refusal names the reference
expect_ok "plan at 5M" "$T" plan --model "$dir/m.tier" --rank 4 --seq 32 --micro-batch 2 --batch-tokens 128 --hbm 5M
expect_error "reference over --hbm" "--reference .*ref.tier: --hbm 5.00 MiB is too small .* needs --hbm [0-9.]* MiB" \
    "$T" train $DYN --hbm 5M --out "$dir/d5"
[ -e "$dir/d5/checkpoint.bin" ] && fail "a refused reference wrote a run"
cp "$dir/d2/checkpoint.bin" "$dir/ck.keep"
expect_error "resume, other weights" "other --data weights" \
    "$T" train $LORA --eval-every 0 --steps 5 --save-every 0 --data "$A:0.6" --data "$B:0.4" --mix dynamic \
    --reference "$dir/ref.tier" --mix-every 2 --out "$dir/d2" --resume "$dir/d2"
expect_error "resume, one source" "trained on 2 data sources, this run has 1" \
    "$T" train $LORA --eval-every 0 --steps 5 --save-every 0 --data "$A" --out "$dir/d2" --resume "$dir/d2"
# validation tokens: a dynamic mixture's weights follow their losses, so other ones (or another --eval-tokens)
# are refused; A2.tok is A.tok with B's validation file
cp "$A" "$dir/A2.tok"; cp "$B.val" "$dir/A2.tok.val"
expect_error "resume, other --eval-tokens" "validated on other tokens (256 tokens a score then, 128 now), and a dynamic mixture.*resume with --eval-tokens 256$" \
    "$T" train $DYN --eval-tokens 128 --out "$dir/d2" --resume "$dir/d2"
expect_error "resume, other validation tokens" "validated on other tokens ([0-9]* validation tokens then, [0-9]* now).*resume with the validation files it had" \
    "$T" train $LORA --eval-every 0 --steps 5 --save-every 0 --data "$dir/A2.tok:0.5" --data "$B:0.5" --mix dynamic \
    --reference "$dir/ref.tier" --mix-every 2 --out "$dir/d2" --resume "$dir/d2"
cmp -s "$dir/ck.keep" "$dir/d2/checkpoint.bin" || fail "a refused resume changed the checkpoint"
# one source, static: the training goes on as it was; a note says the validation losses are on other tokens
expect_ok "static, stop at 2" "$T" train $LORA --data "$A" --stop-after 2 --out "$dir/sv"
expect_ok "static, resume on other validation tokens" "$T" train $LORA --data "$dir/A2.tok" --out "$dir/sv" --resume "$dir/sv"
grep -q "^tiertrain train: note: the checkpoint in .*sv was validated on other tokens (.*): the validation losses from here on are not comparable" "$dir/err" ||
    { fail "resume on other validation tokens: no note"; cat "$dir/err"; }
cmp -s "$dir/plain/adapter_model.safetensors" "$dir/sv/adapter_model.safetensors" ||
    fail "resumed on other validation tokens, the adapter differs from one run's (the training is the same)"
# an --eval-tokens above every source's validation tokens scores them all, as any other such value: the same run
# (on the first 150 lines of each text: their validation files, 425 and 923 tokens, still more than the 256 a score
# takes by default, are scored whole at each re-weighting; A's and B's, 2232 and 7590, took 7 times as long)
awk 'NR <= 150' "$dir/a.txt" >"$dir/a150.txt"
awk 'NR <= 150' "$dir/b.txt" >"$dir/b150.txt"
"$T" tokenize --input "$dir/a150.txt" --val-frac 0.02 -o "$dir/A150.tok" >/dev/null || fail "tokenize A150"
"$T" tokenize --input "$dir/b150.txt" --val-frac 0.02 -o "$dir/B150.tok" >/dev/null || fail "tokenize B150"
DYN150="$LORA --eval-every 0 --steps 5 --save-every 0 --data $dir/A150.tok:0.5 --data $dir/B150.tok:0.5 --mix dynamic --reference $dir/ref.tier --mix-every 2"
expect_ok "dynamic LoRA, stop at 2, every validation token" "$T" train $DYN150 --eval-tokens 100000 --stop-after 2 --out "$dir/d4"
expect_ok "dynamic LoRA, resume, another --eval-tokens above them" "$T" train $DYN150 --eval-tokens 200000 --out "$dir/d4" \
    --resume "$dir/d4"

# ---- bad input: one line, non-zero, nothing written ------------------------------------------------
head -c 100 "$B" >"$dir/trunc.tok"
echo "a few words" >"$dir/few.txt"
"$T" tokenize --input "$dir/few.txt" --val-frac 0 -o "$dir/few.tok" >/dev/null 2>&1 || fail "tokenize a few words"
# a reference of another vocabulary (32 tokens): a one-layer micro model written by hand, imported
mkdir "$dir/hf32"
cat >"$dir/hf32/config.json" <<EOF
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
 "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": 32,
 "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": null,
 "tie_word_embeddings": false, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
EOF
off=0 h=""
t() { n=$(($2 * ${3:-1} * 4)); h="$h${h:+,}\"$1\":{\"dtype\":\"F32\",\"shape\":[$2${3:+,$3}],\"data_offsets\":[$off,$((off + n))]}"; off=$((off + n)); }
p=model.layers.0
t model.embed_tokens.weight 32 64; t lm_head.weight 32 64; t model.norm.weight 64
t $p.self_attn.q_proj.weight 64 64; t $p.self_attn.k_proj.weight 32 64; t $p.self_attn.v_proj.weight 32 64
t $p.self_attn.o_proj.weight 64 64; t $p.mlp.gate_proj.weight 96 64; t $p.mlp.up_proj.weight 96 64
t $p.mlp.down_proj.weight 64 96; t $p.input_layernorm.weight 64; t $p.post_attention_layernorm.weight 64
h="{$h}"
len=$(printf %s "$h" | wc -c)
printf "$(printf '\\%03o\\%03o\\000\\000\\000\\000\\000\\000' $((len % 256)) $((len / 256)))" >"$dir/hf32/model.safetensors"
printf %s "$h" >>"$dir/hf32/model.safetensors"
head -c "$off" /dev/zero >>"$dir/hf32/model.safetensors"
"$T" import "$dir/hf32" --dtype f32 -o "$dir/v32.tier" >/dev/null || fail "import the vocab-32 model"

MIX="--data $A --data $B"
bad() { # NAME PATTERN ARGS...: refused as LoRA and as --full training; neither the run's files nor the store written
    name=$1 pat=$2; shift 2
    expect_error "$name" "$pat" "$T" train $LORA "$@" --out "$dir/never"
    [ -e "$dir/never/checkpoint.bin" ] || [ -e "$dir/never/adapter_model.safetensors" ] && fail "$name: wrote a run"
    expect_error "$name (--full)" "$pat" "$T" train $FULL --model "$dir/f32.tier" --steps 2 "$@" --out "$dir/never.tier"
    [ -e "$dir/never.tier" ] && fail "$name (--full): wrote the store"
    rm -rf "$dir/never" "$dir/never.tier"
}
bad "missing source" "nope.tok" --data "$A" --data "$dir/nope.tok"
bad "truncated source" "trunc.tok" --data "$A" --data "$dir/trunc.tok"
bad "negative weight" "--data .*A.tok:-1: the weight after ':' must be a finite number >= 0" --data "$A:-1" --data "$B"
bad "text weight" "--data .*A.tok:x: the weight after ':' must be" --data "$A:x" --data "$B"
bad "nan weight" "the weight after ':' must be" --data "$A:nan" --data "$B"
bad "empty weight" "the weight after ':' must be" --data "$A:" --data "$B"
bad "all zero" "--data: every weight is 0" --data "$A:0" --data "$B:0"
bad "one file twice" "--data .*A.tok and --data .*A.tok are the same file; give each source once" --data "$A" --data "$B" --data "$dir/./A.tok:2"
bad "dynamic without --reference" "--mix dynamic needs --reference" $MIX --mix dynamic
bad "dynamic, one source" "--mix dynamic re-weights several sources" --data "$A" --mix dynamic --reference "$dir/ref.tier"
bad "reference without dynamic" "--reference goes with --mix dynamic" $MIX --reference "$dir/ref.tier"
bad "unknown --mix" "--mix must be static or dynamic" $MIX --mix sometimes
bad "--mix-every 0" "--mix-every must be" $MIX --mix dynamic --reference "$dir/ref.tier" --mix-every 0
bad "--mix-temp 0" "--mix-temp must be" $MIX --mix dynamic --reference "$dir/ref.tier" --mix-temp 0
bad "--mix-every, static" "--mix-every goes with --mix dynamic" $MIX --mix-every 5
bad "--mix-temp, one source" "--mix-temp goes with --mix dynamic" --data "$A" --mix-temp 0.5
bad "--val with a mixture" "--val names one validation file" $MIX --val "$A.val"
bad "missing reference" "no.tier" $MIX --mix dynamic --reference "$dir/no.tier"
bad "reference vocabulary" "--reference .*v32.tier has a vocabulary of 32 tokens but --model .* has 257" \
    $MIX --mix dynamic --reference "$dir/v32.tier"
bad "source without validation text" "few.tok has 0, fewer than one --seq 32 window" \
    --data "$A" --data "$dir/few.tok" --mix dynamic --reference "$dir/ref.tier"
set --
for i in $(seq 1 17); do set -- "$@" --data "$A"; done
bad "17 sources" "--data may be given at most 16 times" "$@"
# --out may not replace a source or the reference
expect_error "out = reference" "ref.tier is the input" "$T" train $FULL --model "$dir/f32.tier" $MIX --mix dynamic \
    --reference "$dir/ref.tier" --steps 2 --out "$dir/ref.tier" --force

finish test_mix_cli
