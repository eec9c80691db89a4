#!/bin/sh
# tests/test_gpu_bundle.sh — the binary `make gpu-bundle` packs for the GPU
# machine (build/gpu/, which .ci/run builds first) loads only the libraries on
# that machine's allow-list (tools/bundle_libs.sh), and runs here: --help,
# and one CPU training step on a tiny model. Skipped when the bundle was not
# built (no nvcc, or `make test` alone).
. tests/lib.sh
B=build/gpu/tiertrain
if [ ! -x "$B" ]; then echo "SKIP: $B not built (make gpu-bundle; .ci/run does)"; exit 77; fi
setup gpu_bundle
sh tools/bundle_libs.sh "$B" >"$dir/libs" || { fail "allow-list:"; cat "$dir/libs"; }
[ -x build/gpu/test_cuda_ops ] && { sh tools/bundle_libs.sh build/gpu/test_cuda_ops >"$dir/libs" || { fail "allow-list:"; cat "$dir/libs"; }; }
expect_ok "bundle --help" "$B" --help
grep -q "train" "$dir/out" || fail "bundle --help does not list train"
expect_ok "bundle synth" "$B" synth --preset tiny -o "$dir/t.tier"
printf 'the quick brown fox jumps over the lazy dog. %.0s' $(seq 1 200) >"$dir/t.txt"
expect_ok "bundle tokenize" "$B" tokenize --input "$dir/t.txt" -o "$dir/t.tok"
expect_ok "bundle train (1 CPU step)" "$B" train --model "$dir/t.tier" --data "$dir/t.tok" --out "$dir/run" --steps 1 \
    --seq 32 --micro-batch 2 --batch-tokens 64 --eval-every 0 --device cpu
[ -s "$dir/run/adapter_model.safetensors" ] || fail "bundle train wrote no adapter"
finish test_gpu_bundle
