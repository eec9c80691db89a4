#!/bin/sh
# tests/test_hf_cli.sh — `tiertrain import` and `tiertrain export` end to end:
# store -> HF directory -> store -> HF directory gives byte-identical
# model.safetensors and config.json (bf16, f32, a pruned store with its map,
# tied embeddings), NF4 import, and bad input: a missing or wrong directory,
# unsupported config.json values, tensors of the wrong dtype or shape or
# missing, safetensors files whose header lies (offsets past the end,
# overlapping tensors, an unknown dtype), bad flags, an export into a folder
# that holds a checkpoint without --force, an import -o onto the source's own
# files. Each refusal is exactly one line on stderr naming the file, and
# leaves no file behind (and the files it refused to replace unchanged).
. tests/lib.sh
setup hf

# ---- round trips ---------------------------------------------------------------
roundtrip() { # name, synth flags, import flags, export flags
    n=$1
    "$T" synth --preset tiny $2 -o "$dir/$n.tier" >/dev/null || { fail "$n: synth"; return; }
    expect_ok "$n: export" "$T" export "$dir/$n.tier" -o "$dir/$n-A" $4
    expect_ok "$n: import" "$T" import "$dir/$n-A" -o "$dir/$n-b.tier" $3
    expect_ok "$n: verify" "$T" verify "$dir/$n-b.tier"
    expect_ok "$n: re-export" "$T" export "$dir/$n-b.tier" -o "$dir/$n-B" $4
    cmp -s "$dir/$n-A/model.safetensors" "$dir/$n-B/model.safetensors" || fail "$n: re-exported model.safetensors differs"
    cmp -s "$dir/$n-A/config.json" "$dir/$n-B/config.json" || fail "$n: re-exported config.json differs"
}
roundtrip bf16 "--quant bf16" "" ""
grep -q '"torch_dtype": "bfloat16"' "$dir/bf16-A/config.json" || fail "bf16: torch_dtype"
grep -q '"architectures"' "$dir/bf16-A/config.json" || fail "bf16: no architectures"
grep -q '"num_key_value_heads": 4' "$dir/bf16-A/config.json" || fail "bf16: num_key_value_heads"
grep -q tiertrain "$dir/bf16-A/config.json" && fail "bf16: an unpruned model has a tiertrain object"
# the store's data extents are those synth wrote (the metadata differs: the informational name, and the source
# record import adds), from the data offset (header bytes 32..39) on
data_off=$(od -An -tu8 -j32 -N8 "$dir/bf16-b.tier" | tr -d ' ')
[ "$(wc -c <"$dir/bf16.tier")" -eq "$(wc -c <"$dir/bf16-b.tier")" ] || fail "bf16: store sizes differ"
[ "$data_off" -eq "$(od -An -tu8 -j32 -N8 "$dir/bf16.tier" | tr -d ' ')" ] || fail "bf16: data offsets differ"
[ "$(cmp -l "$dir/bf16.tier" "$dir/bf16-b.tier" | awk -v o="$data_off" '$1 > o' | wc -l)" -eq 0 ] ||
    fail "bf16: the imported store's data differs from the original's"

roundtrip f32 "--quant f32" "--dtype f32" "--dtype f32"
grep -q '"torch_dtype": "float32"' "$dir/f32-A/config.json" || fail "f32: torch_dtype"

roundtrip pruned "--quant bf16 --prune-ratio 0.5" "" ""
grep -q '"kept_ffn_channels"' "$dir/pruned-A/config.json" || fail "pruned: no kept indices in config.json"
grep -q '"intermediate_size": 688' "$dir/pruned-A/config.json" || fail "pruned: the standard fields are not the original dims"
"$T" info "$dir/pruned-b.tier" >"$dir/info" 2>&1 || fail "pruned: info"
grep -q "pruned layers 2 of 4, pruning map: yes" "$dir/info" || { fail "pruned: map lost"; cat "$dir/info"; }
"$T" info "$dir/pruned.tier" | grep -A30 "pruning map" | grep -v "^store\|^source" >"$dir/m1"
"$T" info "$dir/pruned-b.tier" | grep -A30 "pruning map" | grep -v "^store\|^source" >"$dir/m2"
cmp -s "$dir/m1" "$dir/m2" || fail "pruned: info differs after the round trip"

# NF4: projections NF4 with double quantization by default, plain with --no-double-quant
expect_ok "nf4 import" "$T" import "$dir/bf16-A" --dtype nf4 -o "$dir/nf4.tier"
"$T" info "$dir/nf4.tier" | grep -q "projections nf4-dq" || fail "--dtype nf4 is not nf4-dq"
expect_ok "nf4 plain import" "$T" import "$dir/bf16-A" --dtype nf4 --no-double-quant -o "$dir/nf4p.tier"
"$T" info "$dir/nf4p.tier" | grep -q "projections nf4," || fail "--no-double-quant is not plain nf4"
expect_ok "nf4 export" "$T" export "$dir/nf4.tier" -o "$dir/nf4-A"

# a NaN in a weight is a damaged checkpoint, whatever the store's dtype: the refusal names the file the NaN is
# in (the checkpoint's model.safetensors), the tensor and where, not the store being written, and leaves none
# (quantize's refusal of a NaN store: tests/test_prune.c)
cp -r "$dir/bf16-A" "$dir/nan"
hl=$(od -An -tu8 -N8 "$dir/nan/model.safetensors" | tr -d ' ')
qo=$(dd if="$dir/nan/model.safetensors" bs=1 skip=8 count="$hl" 2>/dev/null |
    grep -o '"model.layers.1.self_attn.q_proj.weight":{[^}]*}' | sed 's/.*"data_offsets":\[\([0-9]*\),.*/\1/')
printf '\300\177' | dd of="$dir/nan/model.safetensors" bs=1 seek=$((8 + hl + qo + 6)) conv=notrunc 2>/dev/null
for dt in nf4 bf16 f32; do
    expect_error "$dt import of a NaN" "nan/model.safetensors: tensor model.layers.1.self_attn.q_proj.weight holds NaN at row 0, column 3; the checkpoint is damaged" \
        "$T" import "$dir/nan" --dtype $dt -o "$dir/nan-$dt.tier"
    [ -e "$dir/nan-$dt.tier" ] && fail "a refused $dt import of a NaN left its output"
done

# tied embeddings: a stray lm_head.weight is ignored with a note, and export writes none
cp -r "$dir/bf16-A" "$dir/tied"
sed 's/"tie_word_embeddings": false/"tie_word_embeddings": true/' "$dir/bf16-A/config.json" >"$dir/tied/config.json"
"$T" import "$dir/tied" -o "$dir/tied.tier" >/dev/null 2>"$dir/err" || { fail "tied: import"; cat "$dir/err"; }
grep -q "note: ignored 1 tensor .*lm_head.weight" "$dir/err" || { fail "tied: no note about lm_head"; cat "$dir/err"; }
expect_ok "tied: export" "$T" export "$dir/tied.tier" -o "$dir/tied-B"
grep -q '"tie_word_embeddings": true' "$dir/tied-B/config.json" || fail "tied: tie_word_embeddings"
head -c 4096 "$dir/tied-B/model.safetensors" | grep -q lm_head && fail "tied: export wrote lm_head.weight"
# a tied model trains and evaluates (its lm_head chunks stream from the host embedding), resident and streamed
awk 'NR <= 400' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" >/dev/null 2>&1 || fail "tokenize"
TR="--model $dir/tied.tier --data $dir/t.tok --seq 32 --micro-batch 2 --batch-tokens 64 --steps 2 --eval-every 0 --eval-tokens 64"
expect_ok "tied: train LoRA" "$T" train $TR --out "$dir/tied-run"
expect_ok "tied: train LoRA streamed" "$T" train $TR --hbm 64M --lm-head host --out "$dir/tied-run2"
expect_ok "tied: eval" "$T" eval --model "$dir/tied.tier" --adapter "$dir/tied-run" --data "$dir/t.tok.val" --seq 32
"$T" import "$dir/tied" --dtype f32 -o "$dir/tied32.tier" >/dev/null 2>&1 || fail "tied: f32 import"
expect_ok "tied: train --full" "$T" train --full $TR --model "$dir/tied32.tier" --out "$dir/tied-full.tier"

# finite weights too large for the arithmetic (bf16's largest, in the whole of layer 0's q_proj) overflow the
# attention scores to NaN: the validation before training says the model computes non-finite values, and nothing
# is trained or written
cp -r "$dir/bf16-A" "$dir/huge"
hl=$(od -An -tu8 -N8 "$dir/huge/model.safetensors" | tr -d ' ')
q0=$(dd if="$dir/huge/model.safetensors" bs=1 skip=8 count="$hl" 2>/dev/null |
    grep -o '"model.layers.0.self_attn.q_proj.weight":{[^}]*}' | sed 's/.*"data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/')
set -- $q0
awk -v n=$((($2 - $1) / 2)) 'BEGIN { for (i = 0; i < n; i++) printf "\177\177" }' |
    dd of="$dir/huge/model.safetensors" bs=1 seek=$((8 + hl + $1)) conv=notrunc 2>/dev/null
expect_ok "import of huge finite weights" "$T" import "$dir/huge" -o "$dir/huge.tier"
expect_error "train on a model that computes NaN" \
    "the validation loss before training is \(NaN\|infinite\): the model computes non-finite values on this data" \
    "$T" train $TR --model "$dir/huge.tier" --out "$dir/huge-run"
[ -e "$dir/huge-run" ] && fail "a model that computes NaN left its --out folder"

# export into a folder that already holds a checkpoint: refused without
# --force (files unchanged); --force replaces the two files atomically and
# leaves the others (a tokenizer) alone
cp "$dir/bf16-B/model.safetensors" "$dir/keep-w"; cp "$dir/bf16-B/config.json" "$dir/keep-c"
: >"$dir/bf16-B/tokenizer.json"
expect_error "re-export without --force" "bf16-B already holds a checkpoint .*pass --force" \
    "$T" export "$dir/f32.tier" -o "$dir/bf16-B"
cmp -s "$dir/keep-w" "$dir/bf16-B/model.safetensors" || fail "a refused re-export changed model.safetensors"
cmp -s "$dir/keep-c" "$dir/bf16-B/config.json" || fail "a refused re-export changed config.json"
rm "$dir/bf16-B/model.safetensors"
expect_error "re-export over config.json alone" "bf16-B already holds a checkpoint (config.json)" \
    "$T" export "$dir/f32.tier" -o "$dir/bf16-B"
[ -e "$dir/bf16-B/model.safetensors" ] && fail "a refused re-export wrote model.safetensors"
expect_ok "re-export --force" "$T" export "$dir/f32.tier" -o "$dir/bf16-B" --dtype f32 --force
cmp -s "$dir/f32-A/model.safetensors" "$dir/bf16-B/model.safetensors" || fail "--force did not replace model.safetensors"
cmp -s "$dir/f32-A/config.json" "$dir/bf16-B/config.json" || fail "--force did not replace config.json"
[ -e "$dir/bf16-B/tokenizer.json" ] || fail "--force removed tokenizer.json"
expect_ok "re-export --force again" "$T" export "$dir/bf16-b.tier" -o "$dir/bf16-B" --force
cmp -s "$dir/bf16-A/model.safetensors" "$dir/bf16-B/model.safetensors" || fail "export --force over an existing directory"
ls "$dir"/*/*.partial "$dir"/*.partial >/dev/null 2>&1 && fail "a .partial file was left"

# import -o onto one of the source's own files: refused before anything is written
cp "$dir/bf16-A/model.safetensors" "$dir/keep-w"
expect_error "import onto its model.safetensors" "bf16-A/model.safetensors is the input" \
    "$T" import "$dir/bf16-A" -o "$dir/bf16-A/model.safetensors"
cmp -s "$dir/keep-w" "$dir/bf16-A/model.safetensors" || fail "import -o onto model.safetensors changed it"
expect_error "import onto its config.json" "is the input .*bf16-A/config.json" \
    "$T" import "$dir/bf16-A/" -o "$dir/bf16-A/config.json"
mkdir "$dir/sh"; cp "$dir/bf16-A/config.json" "$dir/sh/"
cp "$dir/bf16-A/model.safetensors" "$dir/sh/model-00001-of-00001.safetensors"
printf '{"weight_map": {' >"$dir/sh/model.safetensors.index.json"
# every tensor name of the safetensors header (its length: the first 8 bytes, little-endian)
hlen=$(od -An -tu4 -N4 "$dir/sh/model-00001-of-00001.safetensors" | tr -d ' ')
tail -c +9 "$dir/sh/model-00001-of-00001.safetensors" | head -c "$hlen" | grep -a -E -o '"(model\.|lm_head)[a-z0-9_.]*"' |
    sed 's/$/: "model-00001-of-00001.safetensors",/' | tr -d '\n' | sed 's/,$//' >>"$dir/sh/model.safetensors.index.json"
printf '}}' >>"$dir/sh/model.safetensors.index.json"
expect_ok "sharded import" "$T" import "$dir/sh" -o "$dir/sh.tier"
cp "$dir/sh/model-00001-of-00001.safetensors" "$dir/keep-w"
ln -s model-00001-of-00001.safetensors "$dir/sh/alias.safetensors"
expect_error "import onto a shard" "is the input .*sh/model-00001-of-00001.safetensors" \
    "$T" import "$dir/sh" -o "$dir/sh/model-00001-of-00001.safetensors"
expect_error "import onto a shard by another name" "alias.safetensors is the input" \
    "$T" import "$dir/sh" -o "$dir/sh/alias.safetensors"
cmp -s "$dir/keep-w" "$dir/sh/model-00001-of-00001.safetensors" || fail "import -o onto a shard changed it"
[ -e "$dir/sh/model-00001-of-00001.safetensors.partial" ] && fail "import -o onto a shard left a partial file"
expect_error "import into a missing folder" "the folder .*no/such does not exist" \
    "$T" import "$dir/sh" -o "$dir/no/such/x.tier"

# --help lists every flag with its default
"$T" import --help >"$dir/out" || fail "import --help"
for f in "--output FILE" "--dtype T.*(default: bf16)" "--no-double-quant"; do
    grep -q -e "$f" "$dir/out" || fail "import --help lacks $f"
done
"$T" export --help >"$dir/out" || fail "export --help"
for f in "--output DIR" "--dtype T.*(default: bf16)" "--force"; do
    grep -q -e "$f" "$dir/out" || fail "export --help lacks $f"
done

# ---- bad input ---------------------------------------------------------------------
# A micro model written by hand: hidden 64, 4 heads / 2 KV heads, ffn 96, 2 layers, vocab 32.
micro_config() { # dir [model_type] [rope_scaling]
    mkdir -p "$1"
    cat >"$1/config.json" <<EOF
{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "${2:-llama}",
  "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
  "num_hidden_layers": 2, "vocab_size": 32, "max_position_embeddings": 128, "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0, "rope_scaling": ${3:-null}, "tie_word_embeddings": false, "hidden_act": "silu",
  "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"
}
EOF
}
# mkst FILE HEADER_JSON DATA_BYTES: a safetensors file whose data are DATA_BYTES zero bytes.
mkst() {
    len=$(printf %s "$2" | wc -c)
    printf "$(printf '\\%03o\\%03o\\000\\000\\000\\000\\000\\000' $((len % 256)) $((len / 256)))" >"$1"
    printf %s "$2" >>"$1"
    head -c "$3" /dev/zero >>"$1"
}
emb() { # dtype shape bytes: a model.safetensors with only the embedding
    printf '{"model.embed_tokens.weight":{"dtype":"%s","shape":%s,"data_offsets":[0,%s]}}' "$1" "$2" "$3"
}
out="$dir/x.tier"
noleft() { # name: no output and no partial file after a refusal
    [ -e "$out" ] || [ -e "$out.partial" ] && fail "$1: left a file behind"
    rm -f "$out" "$out.partial"
}

expect_error "missing dir" "nope does not exist" "$T" import "$dir/nope" -o "$out"; noleft "missing dir"
expect_error "dir is a file" "bf16.tier is a file" "$T" import "$dir/bf16.tier" -o "$out"; noleft "dir is a file"
mkdir "$dir/noconf"
expect_error "no config.json" "noconf/config.json does not exist" "$T" import "$dir/noconf" -o "$out"
micro_config "$dir/noweights"
expect_error "no safetensors" "noweights has neither model.safetensors" "$T" import "$dir/noweights" -o "$out"

micro_config "$dir/mistral" mistral
expect_error "mistral" 'mistral/config.json: "model_type" is "mistral"' "$T" import "$dir/mistral" -o "$out"
micro_config "$dir/yarn" llama '{"rope_type": "yarn", "factor": 4.0}'
expect_error "rope yarn" 'yarn/config.json: "rope_scaling.rope_type" is "yarn"' "$T" import "$dir/yarn" -o "$out"
micro_config "$dir/badjson"; printf '{"model_type": ' >"$dir/badjson/config.json"
expect_error "bad json" "badjson/config.json is not valid JSON" "$T" import "$dir/badjson" -o "$out"
noleft "config"

micro_config "$dir/i8"; mkst "$dir/i8/model.safetensors" "$(emb I8 '[32,64]' 2048)" 2048
expect_error "I8 tensor" 'i8/model.safetensors: tensor "model.embed_tokens.weight" has dtype I8' "$T" import "$dir/i8" -o "$out"
micro_config "$dir/f64"; mkst "$dir/f64/model.safetensors" "$(emb F64 '[32,64]' 16384)" 16384
expect_error "F64 tensor" 'f64/model.safetensors: tensor "model.embed_tokens.weight" has dtype F64' "$T" import "$dir/f64" -o "$out"
micro_config "$dir/shape"; mkst "$dir/shape/model.safetensors" "$(emb F32 '[31,64]' 7936)" 7936
expect_error "wrong shape" 'shape/model.safetensors: tensor "model.embed_tokens.weight" has shape \[31, 64\] but config.json needs \[32, 64\]' \
    "$T" import "$dir/shape" -o "$out"
micro_config "$dir/missing"; mkst "$dir/missing/model.safetensors" "$(emb BF16 '[32,64]' 4096)" 4096
expect_error "missing tensor" 'missing/model.safetensors has no tensor "model.layers.0.input_layernorm.weight"' \
    "$T" import "$dir/missing" -o "$out"
noleft "tensors"

# headers that lie (the malformed-file corpus of the safetensors reader)
for f in offsets-past-end overlap unknown-dtype; do
    micro_config "$dir/lie-$f"
    cp "tests/corpus/safetensors/bad-$f.safetensors" "$dir/lie-$f/model.safetensors"
    expect_error "header: $f" "lie-$f/model.safetensors" "$T" import "$dir/lie-$f" -o "$out"
done
micro_config "$dir/trunc"; head -c 100000 "$dir/bf16-A/model.safetensors" >"$dir/trunc/model.safetensors"
expect_error "truncated" "trunc/model.safetensors" "$T" import "$dir/trunc" -o "$out"
# an index naming a shard that is not there
micro_config "$dir/shards"
printf '{"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}' \
    >"$dir/shards/model.safetensors.index.json"
expect_error "missing shard" "shards/model-00001-of-00002.safetensors does not exist" "$T" import "$dir/shards" -o "$out"
noleft "headers"

# flags
expect_error "no -o" "-o FILE is required" "$T" import "$dir/bf16-A"
expect_error "bad dtype" "--dtype must be bf16, f32, nf4 or nf4-dq, not 'int8'" "$T" import "$dir/bf16-A" --dtype int8 -o "$out"
expect_error "no-dq with bf16" "--no-double-quant goes with --dtype nf4 only" "$T" import "$dir/bf16-A" --no-double-quant -o "$out"
expect_error "export dtype" "--dtype must be bf16 or f32, not 'nf4'" "$T" export "$dir/bf16.tier" --dtype nf4 -o "$dir/E"
expect_error "export no -o" "-o DIR is required" "$T" export "$dir/bf16.tier"
noleft "flags"

# export refusals
expect_error "export missing store" "none.tier does not exist" "$T" export "$dir/none.tier" -o "$dir/E"
: >"$dir/afile"
expect_error "export onto a file" "afile is a file" "$T" export "$dir/bf16.tier" -o "$dir/afile"
expect_error "export no parent" "cannot create .*no/such: its parent directory does not exist" \
    "$T" export "$dir/bf16.tier" -o "$dir/no/such"
mkdir "$dir/sharded"; : >"$dir/sharded/model.safetensors.index.json"
expect_error "export over shards" "sharded already holds a sharded checkpoint" "$T" export "$dir/bf16.tier" -o "$dir/sharded"
[ -e "$dir/E" ] && fail "a failed export left its directory"
# an export into a new directory ended by SIGTERM removes that directory, as a failure does (the store:
# enough tensors that the signal, sent once model.safetensors.partial exists, lands before the end)
"$T" synth --preset small -o "$dir/small.tier" >/dev/null || fail "synth small"
for sig in TERM HUP; do
    "$T" export "$dir/small.tier" -o "$dir/sig-$sig" >/dev/null 2>&1 &
    pid=$!
    while [ ! -e "$dir/sig-$sig/model.safetensors.partial" ] && kill -0 $pid 2>/dev/null; do :; done
    kill -"$sig" $pid 2>/dev/null
    wait $pid
    rc=$?
    if [ $rc -gt 128 ]; then
        [ -e "$dir/sig-$sig" ] && { fail "SIG$sig during export left its new directory"; ls -la "$dir/sig-$sig"; }
    else
        echo "note: export finished (exit $rc) before SIG$sig reached it; not judged"
    fi
done
[ -e "$dir/sharded/model.safetensors" ] && fail "a refused export wrote model.safetensors"

# ---- base_model_name_or_path -----------------------------------------------------
# import records where the model came from (--base-model, or the directory's absolute path); prune and
# quantize carry it; an adapter trained on the unpruned store names it, one trained on a structurally
# pruned store names none (its shapes are not the source's), and recover names it again for the original
# shapes; --base-model overrides; a name with control characters is refused before any work.
SRC=meta-llama/Llama-3.1-8B
expect_ok "import --base-model" "$T" import "$dir/f32-A" --dtype f32 --base-model "$SRC" -o "$dir/src.tier"
"$T" info "$dir/src.tier" | grep -q "^source: *$SRC\$" || fail "info does not show the --base-model source"
"$T" info --json "$dir/src.tier" | grep -q "\"source\":\"$SRC\"" || fail "info --json lacks the source"
"$T" info "$dir/f32-b.tier" | grep -q "^source: *$(cd "$dir/f32-A" && pwd -P)\$" ||
    { fail "import without --base-model does not record the absolute directory"; "$T" info "$dir/f32-b.tier"; }
"$T" info "$dir/f32.tier" | grep -q "^source: *none recorded" || fail "a synth store claims a source"
expect_ok "prune keeps the source" "$T" prune "$dir/src.tier" --ratio 0.5 -o "$dir/src-p.tier"
expect_ok "quantize keeps the source" "$T" quantize "$dir/src-p.tier" -o "$dir/src-pq.tier"
"$T" info "$dir/src-pq.tier" | grep -q "^source: *$SRC\$" || fail "prune + quantize lost the source"
TRS="--data $dir/t.tok --seq 32 --micro-batch 2 --batch-tokens 64 --steps 1 --eval-every 0 --eval-tokens 64"
expect_ok "train on the imported store" "$T" train --model "$dir/src.tier" $TRS --out "$dir/src-run"
grep -q "\"base_model_name_or_path\": \"$SRC\"" "$dir/src-run/adapter_config.json" ||
    { fail "the adapter does not name the imported model"; grep base_model "$dir/src-run/adapter_config.json"; }
expect_ok "train on the pruned store" "$T" train --model "$dir/src-pq.tier" $TRS --out "$dir/src-prun"
grep -q '"base_model_name_or_path": null' "$dir/src-prun/adapter_config.json" ||
    fail "an adapter of a pruned store names a model of other shapes"
expect_ok "recover names the source" "$T" recover --adapter "$dir/src-prun" --pruned "$dir/src-pq.tier" -o "$dir/src-rec"
grep -q "\"base_model_name_or_path\": \"$SRC\"" "$dir/src-rec/adapter_config.json" || fail "recover lost the source"
expect_ok "train --base-model" "$T" train --model "$dir/src-pq.tier" $TRS --base-model my/pruned-8b --out "$dir/src-run2"
grep -q '"base_model_name_or_path": "my/pruned-8b"' "$dir/src-run2/adapter_config.json" || fail "train --base-model"
expect_error "import --base-model with an escape" "control characters" \
    "$T" import "$dir/f32-A" --base-model "$(printf 'x\033]0;y')" -o "$dir/esc.tier"
[ -e "$dir/esc.tier" ] && fail "a refused --base-model wrote a store"
expect_error "recover --base-model empty" "--base-model must be 1..1024 bytes" \
    "$T" recover --adapter "$dir/src-prun" --pruned "$dir/src-pq.tier" --base-model "" -o "$dir/src-rec2"
# a pruned store's export carries the original's name in config.json's "tiertrain" object, and import
# records that, not the pruned directory (whose shapes transformers cannot load as the original): recover
# on the imported store names the original again. A pruned directory naming none records no source.
expect_ok "export a pruned store with a source" "$T" export "$dir/src-pq.tier" -o "$dir/src-pq-A"
grep -q "^    \"source\": \"$SRC\",\$" "$dir/src-pq-A/config.json" || fail "a pruned export lost the source"
expect_ok "import a pruned export" "$T" import "$dir/src-pq-A" -o "$dir/src-pq-b.tier"
"$T" info "$dir/src-pq-b.tier" | grep -q "^source: *$SRC\$" ||
    { fail "import of a pruned export records the wrong source"; "$T" info "$dir/src-pq-b.tier" | grep source; }
expect_ok "recover on the imported pruned store" \
    "$T" recover --adapter "$dir/src-prun" --pruned "$dir/src-pq-b.tier" -o "$dir/src-rec3"
grep -q "\"base_model_name_or_path\": \"$SRC\"" "$dir/src-rec3/adapter_config.json" ||
    { fail "recover after the round trip names the wrong model"; grep base_model "$dir/src-rec3/adapter_config.json"; }
expect_ok "import a pruned export without a source" "$T" import "$dir/pruned-A" -o "$dir/pruned-c.tier"
grep -q "names no original" "$dir/err" || fail "import of a pruned directory naming no original says nothing"
"$T" info "$dir/pruned-c.tier" | grep -q "^source: *none recorded" ||
    fail "import of a pruned directory records the directory as the source"
cp -r "$dir/src-pq-A" "$dir/badsrc"
sed 's/^    "source": .*/    "source": "",/' "$dir/src-pq-A/config.json" >"$dir/badsrc/config.json"
expect_error "import with an empty tiertrain.source" 'config.json: "tiertrain.source" must be 1..1024 bytes' \
    "$T" import "$dir/badsrc" -o "$dir/badsrc.tier"
# the default --base-model (the directory's absolute path) that cannot be a source record: the message
# says so, and not that a --base-model the user never gave is wrong
mkdir "$dir/t	ab" && cp "$dir/bf16-A/"* "$dir/t	ab/"
expect_error "import from a directory with a tab" "default --base-model.*pass --base-model" \
    "$T" import "$dir/t	ab" -o "$dir/tab.tier"
long=$dir/$(printf '%0200d/%0200d/%0200d/%0200d/%0200d/%0200d' 1 2 3 4 5 6)
mkdir -p "$long" && cp "$dir/bf16-A/"* "$long/"
expect_error "import from a path over 1024 bytes" "default --base-model.*over 1024 bytes.*pass --base-model" \
    "$T" import "$long" -o "$dir/long.tier"
[ -e "$dir/tab.tier" ] || [ -e "$dir/long.tier" ] && fail "a refused default --base-model wrote a store"
expect_ok "import from a long path with --base-model" "$T" import "$long" --base-model x/y -o "$dir/long.tier"

finish test_hf_cli
