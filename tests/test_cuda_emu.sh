#!/bin/sh
# tests/test_cuda_emu.sh — the CUDA backend run on the CPU through the
# emulated GPU (tests/cuda_emu/cuda_emu.h: the .cu sources compiled by the
# host compiler, every kernel thread a fiber, cuBLAS/cuBLASLt as loops), so
# its kernels and the way the runtime drives them are checked without a GPU:
#   checks     every kernel's loads and stores are checked as the GPU checks them
#              (in device memory, shared memory or a stack; vector accesses aligned),
#              and held, like copies and products, to their block where the memory
#              is one of the runtime's arenas: tests/cuda_emu/emu_selftest's bad
#              kernels and copies are each stopped, with the culprit and the block
#              named, and its good ones are not
#   ops        tests/test_cuda_ops (small shapes), through cuBLASLt and cublasGemmEx, and its
#              attention cases on each other attention path (and the tensor-core forward with
#              16 rows a warp as well as 32), under racecheck
#   stats      the tensor-core attention's ldmatrix conflict-free, the 32-row forward's shared memory
#              an mma (TT_EMU_STATS=1); the forward's block shape on an emulated H200 and A100
#   lora       2 LoRA steps (dropout 0.1, in every LoRA run here) on CUDA against the CPU (loss per step), f32 and bf16
#              under racecheck (every kernel a step launches); a pruned
#              model's eval whose pruned layers need the most attention scratch
#   small GPU  no --hbm on an emulated GPU smaller than the resident plan (TT_EMU_MEM): plan and train plan
#              within what it can give, and say so; plan keeps an --hbm beyond it with a note; one too small for
#              the smallest plan: one sentence
#   faults     a GPU that fails mid-run (an uncorrectable ECC error from a chosen kernel launch on): one sentence
#              naming the checkpoint that stands, and the run resumed from it == uninterrupted, bit for bit; a
#              GPU another process holds and a pre-Ampere one: one sentence each at start-up
#   stream     streamed at the smallest --hbm (f32: 2 layer slots, every activation
#              spilled; bf16 at its own) == resident: the adapter bit for bit (the resident
#              runs decode each layer once a pass, the smallest plans every product's block)
#   full       full training (AdamW, GaLore) streamed == resident, bit for bit; resident
#              AdamW under racecheck
#   generate   greedy completions on CUDA (under racecheck) == the CPU's; streamed == resident;
#              bench generate at its default streamed budget
#   defer      the streams' orders (TT_EMU_DEFER: each stream's operations queued, run as late as
#              the host's waits allow, the copy streams' as early as their waits allow, or a random
#              subset at each call): emu_selftest's load / kernel / read-back pipeline with one event
#              wait or host wait dropped is caught by the policy that exposes it; streamed LoRA (f32,
#              bf16), full training and generation == resident under lazy, eager-copies and two
#              seeds; the runtime's slot wait dropped (TT_TEST_DROP_WAIT=slot) is caught
# What it cannot see: timing, the hardware's rounding, and of the streams' races
# only those that the orders tried expose (the other stages run every stream's
# operation when it is issued; defer tries a few orders of a few runs, and
# checks values, not a happens-before relation: a race whose two orders give
# the same bytes passes) — the GPU machine's tools/gpu_check.sh checks those. Runs
# from the release build only (the emulated binaries are not sanitizer builds);
# skips without them.
. tests/lib.sh
case "$T" in
*/asan/*) echo "SKIP: the emulated GPU runs from the release build only"; exit 77 ;;
esac
EMU=${TT_EMU_DIR:-$(dirname "$(dirname "$T")")/emu}
if [ ! -x "$EMU/tiertrain" ] || [ ! -x "$EMU/tests/test_cuda_ops" ] || [ ! -x "$EMU/tests/emu_selftest" ]; then
    echo "SKIP: no emulated-GPU build in $EMU (the Makefile builds it where nvcc and the CUDA headers are)"
    exit 77
fi
E=$EMU/tiertrain
setup cuda_emu

# ---- checks --------------------------------------------------------------------
expect_ok "emu_selftest ok" "$EMU/tests/emu_selftest" ok
expect_ok "emu_selftest arena-ok" "$EMU/tests/emu_selftest" arena-ok
for c in "misaligned:k_misaligned: a misaligned 16-byte load .*(device memory).*a misaligned address" \
         "past-end:k_past_end: a 4-byte load .*(0 bytes past the end of the 1024-byte cudaMalloc .*an illegal address" \
         "smem:k_smem: a 4-byte store .*(0 bytes past the end of the 128-byte dynamic shared memory of the block), thread (31,0,0).*an illegal address" \
         "host:k_host: a 4-byte load .*(in no device allocation.*an illegal address" \
         "bf16x2:k_bf16x2: a misaligned 4-byte store .*(device memory).*a misaligned address" \
         "deadlock:k_deadlock: deadlock: 63 threads wait at __syncthreads, 64 live, the rest at warp operations" \
         "lane-ended:k_lane_ended: a warp-wide operation with 1 of its lanes ended" \
         "arena-read:k_past_end: a 4-byte load .*(0 bytes past the end of the 1024-byte block \"x\" at .* of arena \"device\").*another buffer's data" \
         "arena-copy:cudaMemcpyAsync's destination: 1028 bytes .*(it starts 0 bytes into the 1024-byte block \"y\" of arena \"device\" and ends 4 bytes past it)" \
         "arena-stale:k_past_end: a 4-byte load .*(4096 bytes past the end of the 1024-byte block \"x\".*another buffer's data"; do
    "$EMU/tests/emu_selftest" "${c%%:*}" >"$dir/out" 2>"$dir/err" && fail "emu_selftest ${c%%:*}: not stopped"
    grep -q "cuda_emu: ${c#*:}" "$dir/err" || fail "emu_selftest ${c%%:*}: not the expected message: $(cat "$dir/err")"
done
# racecheck: each race stopped with its hazard and both threads; the race-free kernels pass
expect_ok "emu_selftest race-ok" env TT_EMU_RACECHECK=1 "$EMU/tests/emu_selftest" race-ok
grep -qx ok "$dir/out" || fail "emu_selftest race-ok: did not print ok"
for c in "raw:k_race_raw: a read-after-write hazard: thread (1,0,0) of block (0,0,0) reads 4 bytes .*(shared memory), which thread (0,0,0) of block (0,0,0) wrote (no barrier between them)" \
         "war:k_race_war: a write-after-read hazard: thread (1,0,0) of block (0,0,0) writes 4 bytes .*(shared memory), which thread (0,0,0) of block (0,0,0) read (no barrier" \
         "rmw:k_race_rmw: a write-after-read hazard: thread (1,0,0) of block (0,0,0) writes 8 bytes .*(shared memory), which thread (0,0,0) of block (0,0,0) read (no barrier" \
         "static:k_race_static: a write-after-read hazard: thread (1,0,0) .*(shared memory), which thread (0,0,0)" \
         "blocks:k_race_blocks: a write-after-write hazard: thread (0,0,0) of block (1,0,0) writes 4 bytes .*(device memory), which thread (0,0,0) of block (0,0,0) wrote (another block of the launch" \
         "uninit:k_race_uninit: an uninitialized read: thread (32,0,0) of block (0,0,0) reads 4 bytes .*(dynamic shared memory) that no thread of its block wrote" \
         "cp:k_race_cp: a read-after-write hazard: thread (1,0,0) of block (0,0,0) reads 2 bytes .*(shared memory), which thread (0,0,0) of block (0,0,0) wrote (no barrier" \
         "cpwait:k_race_cp: a write-after-read hazard: thread (0,0,0) of block (0,0,0) lands a cp.async copy of 16 bytes .*(shared memory), which thread (1,0,0) of block (0,0,0) read (between the copy's issue and this wait" \
         "reads:k_race_reads: a write-after-read hazard: thread (1,0,0) of block (0,0,0) writes 4 bytes .*(shared memory), which thread (32,0,0) of block (0,0,0) read (no barrier" \
         "ldsm:k_race_ldsm: a read-after-write hazard: thread (1,0,0) of block (0,0,0) reads 16 bytes .*(shared memory), which thread (0,0,0) of block (0,0,0) wrote (no barrier"; do
    TT_EMU_RACECHECK=1 "$EMU/tests/emu_selftest" "race-${c%%:*}" >"$dir/out" 2>"$dir/err" &&
        fail "emu_selftest race-${c%%:*}: not stopped"
    grep -q "cuda_emu: racecheck: ${c#*:}" "$dir/err" ||
        fail "emu_selftest race-${c%%:*}: not the expected message: $(cat "$dir/err")"
    # without racecheck the same kernel runs to its end: the emulator's order hides the race
    env -u TT_EMU_RACECHECK "$EMU/tests/emu_selftest" "race-${c%%:*}" >"$dir/out" 2>"$dir/err" ||
        fail "emu_selftest race-${c%%:*} without racecheck: $(cat "$dir/err")"
done

# ---- ops ---------------------------------------------------------------------
# under racecheck, but for cublasGemmEx's products (the same kernels as the default's) and TT_CUDA_ATTN=flash (its
# fp32-tile kernels with bf16 activations: the fp32 activations' kernels, which the default's run checked, at another
# type); the other attention paths on the attention cases only (attn_kv compares its forward with the path's attn_fwd)
export TT_EMU_RACECHECK=1
for v in "" "TT_CUDA_GEMM=cublas TT_EMU_RACECHECK=0"; do
    expect_ok "test_cuda_ops ${v:-(default)}" env $v "$EMU/tests/test_cuda_ops"
    n=$(grep -c 'relative error' "$dir/err")
    [ "$n" -ge 60 ] || fail "test_cuda_ops ${v:-(default)}: $n comparisons (expected the whole table)"
done
for v in TT_CUDA_FA2_FWD=16 "TT_CUDA_ATTN=flash TT_EMU_RACECHECK=0" TT_CUDA_ATTN=cublas; do
    expect_ok "test_cuda_ops $v" env $v "$EMU/tests/test_cuda_ops" --only attention,attn_kv
    n=$(grep -c 'relative error' "$dir/err")
    [ "$n" -ge 25 ] || fail "test_cuda_ops $v: $n comparisons (expected the attention cases)"
done

# what the tensor-core attention asks of shared memory (TT_EMU_STATS: counts, not times): every ldmatrix
# conflict-free (the padded row stride), and the 32-row forward reading at most 170 bytes an mma (160: each K
# and V fragment feeds two m-tiles), under 0.7 x the 16-row forward's (256)
env -u TT_EMU_RACECHECK TT_EMU_STATS=1 "$EMU/tests/test_cuda_ops" --only attention >"$dir/out" 2>"$dir/st32" &&
    env -u TT_EMU_RACECHECK TT_EMU_STATS=1 TT_CUDA_FA2_FWD=16 "$EMU/tests/test_cuda_ops" --only attention \
        >"$dir/out" 2>"$dir/st16" || fail "test_cuda_ops TT_EMU_STATS=1: $(tail -3 "$dir/st32" "$dir/st16")"
bpm() { sed -n "s/^cuda_emu: stats: $1: .*(\([0-9.]*\) bytes of shared memory an mma.*/\1/p" "$2"; }
b32=$(bpm k_fa2_fwd2 "$dir/st32")
b16=$(bpm k_fa2_fwd "$dir/st16")
[ -n "$b32" ] && [ -n "$b16" ] && awk -v a="$b32" -v b="$b16" 'BEGIN { exit !(a <= 170 && a < 0.7 * b) }' ||
    fail "shared memory an mma: the 32-row forward ${b32:-?} bytes, the 16-row ${b16:-?} (want <= 170 and < 0.7 x)"
n=$(grep -c '^cuda_emu: stats: k_fa2_' "$dir/st32")
[ "$n" -ge 3 ] && ! grep '^cuda_emu: stats: k_fa2_' "$dir/st32" "$dir/st16" | grep -qv '1\.00 x the conflict-free' ||
    fail "ldmatrix bank conflicts (or no stats): $(grep 'stats: k_fa2_' "$dir/st32" "$dir/st16")"

# the forward's block shape as the GPU allows: 32 rows a warp where an SM holds two such blocks (an H100/H200,
# the emulator's default), 16 on an A100 (164 KiB of shared memory an SM: one)
for g in h200:32 a100:16; do
    expect_ok "bench kernels on an emulated ${g%%:*}" env TT_EMU_GPU=${g%%:*} "$E" bench kernels --device cuda --m 64 \
        --n 64 --k 64 --attn-seq 128 --copy-mb 0 --iters 1
    grep -q "causal: tensor-core flash kernels (cuda_fa2.h; forward ${g#*:} rows a warp)" "$dir/out" ||
        fail "an emulated ${g%%:*}: not the ${g#*:}-row forward: $(grep 'attention:' "$dir/out")"
done

# cuDNN's attention (TT_CUDA_ATTN=cudnn) on the emulated GPU: tests/cuda_emu/emu_cudnn.cc stands in for cuDNN
# (the CPU reference, every buffer a real engine writes checked against the scratch): the plans made, the
# log-sum-exp moved to and from cuDNN's layout, packed examples on the kernels; a missing library and a refused
# shape take the kernels, said once (without racecheck: the kernels' own run above had it)
expect_ok "test_cuda_ops TT_CUDA_ATTN=cudnn" env TT_CUDA_ATTN=cudnn "$EMU/tests/test_cuda_ops" --only attention
grep -q 'cuDNN 91900 attention forward plan, B 2 seq 40' "$dir/err" &&
    grep -q 'cuDNN 91900 attention backward plan, B 2 seq 40' "$dir/err" || fail "TT_CUDA_ATTN=cudnn: no plan lines"
[ "$(grep -c 'relative error' "$dir/err")" -ge 20 ] || fail "TT_CUDA_ATTN=cudnn: the attention cases did not run"
expect_ok "test_cuda_ops cuDNN missing" env TT_EMU_RACECHECK=0 TT_CUDA_ATTN=cudnn TT_EMU_CUDNN=missing "$EMU/tests/test_cuda_ops" \
    --only attention
[ "$(grep -c 'TT_CUDA_ATTN=cudnn: cannot load libcudnn.so.9.*; attention takes the tensor-core kernels instead' "$dir/err")" = 1 ] ||
    fail "TT_CUDA_ATTN=cudnn without cuDNN: not one line saying so: $(head -3 "$dir/err")"
expect_ok "test_cuda_ops cuDNN refuses" env TT_EMU_RACECHECK=0 TT_CUDA_ATTN=cudnn TT_EMU_CUDNN=refuse:40 "$EMU/tests/test_cuda_ops" \
    --only attention
[ "$(grep -c 'no engine .*; the forward at B 2 seq 40 heads 4/2 head_dim 16 takes the tensor-core kernels' "$dir/err")" = 1 ] &&
    [ "$(grep -c 'the backward at B 2 seq 40' "$dir/err")" = 1 ] ||
    fail "TT_CUDA_ATTN=cudnn, a refused shape: not one line per direction: $(head -3 "$dir/err")"

unset TT_EMU_RACECHECK

# ---- training ------------------------------------------------------------------
expect_ok synth "$E" synth --preset tiny --quant nf4 -o "$dir/m.tier"
expect_ok synth-f32 "$E" synth --preset tiny --quant f32 -o "$dir/mf.tier"
head -c 400000 tools/demo-data/nlp-corpus-slice.txt >"$dir/c.txt"
expect_ok tokenize "$E" tokenize --input "$dir/c.txt" -o "$dir/c.tok"
PL="--seq 64 --micro-batch 2 --batch-tokens 256"
TR="$PL --lr 1e-3 --warmup 1 --eval-every 0 --eval-tokens 128 --save-every 0 --json --steps 2 --data $dir/c.tok"
# the smallest --hbm (MiB) a refusal of --hbm 1M names, from the planner or generate
needs() { sed -n 's/.*needs --hbm \([0-9]*\)\.[0-9]* MiB.*/\1/p'; }
min_hbm() { "$E" plan "$@" --device cuda --hbm 1M 2>&1 | needs; }
losses() { grep -o '"loss":[0-9.eE+-]*' "$1" | cut -d: -f2; }

LORA="--model $dir/m.tier --rank 8 --dropout 0.1 --alpha 16"
expect_ok lora-cpu "$E" train $TR $LORA --act-dtype f32 --device cpu --out "$dir/lc"
cp "$dir/out" "$dir/lc.json"
expect_ok lora-cuda env TT_EMU_RACECHECK=1 "$E" train $TR $LORA --act-dtype f32 --device cuda --out "$dir/lg"
cp "$dir/out" "$dir/lg.json"
losses "$dir/lc.json" >"$dir/l1"
losses "$dir/lg.json" >"$dir/l2"
d=$(paste -d' ' "$dir/l1" "$dir/l2" |
    awk '{ x = $1 - $2; if (x < 0) x = -x; if (x > m) m = x; n++ } END { if (n != 2) print "steps " n; else if (m > 1e-4) print "diff " m }')
[ -z "$d" ] || fail "LoRA on CUDA vs the CPU, loss per step: $d (tolerance 1e-4)"

# A LoRAM-pruned model whose pruned layers' attention takes more scratch than the unpruned layers' (fewer KV heads:
# 128 x 64-token sequences give the unpruned layers 512 dk/dv blocks, the pruned ones 256, split in 2 parts
# with their sums in the scratch): the workspace holds the most any layer takes (sized by the unpruned shape,
# the pruned layers overran it; the model now asserts each layer's need). bf16 on CUDA vs f32 on the CPU.
expect_ok synth-pruned "$E" synth --preset tiny --prune-ratio 0.5 --quant nf4 -o "$dir/pr.tier"
EV="--model $dir/pr.tier --data $dir/c.tok --seq 64 --micro-batch 128 --batch-tokens 8192 --max-tokens 8192 --json"
expect_ok eval-pruned-cpu "$E" eval $EV --device cpu
lc=$(grep -o '"loss":[0-9.]*' "$dir/out" | cut -d: -f2)
expect_ok eval-pruned-cuda "$E" eval $EV --device cuda
lg=$(grep -o '"loss":[0-9.]*' "$dir/out" | cut -d: -f2)
awk -v a="$lc" -v b="$lg" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && b > 0 && d < 1e-2) }' ||
    fail "pruned model, eval loss: CPU $lc, CUDA $lg (tolerance 1e-2, bf16 vs f32)"

h=$(min_hbm --model "$dir/m.tier" $PL --rank 8 --dropout 0.1 --act-dtype f32)
[ -n "$h" ] || fail "plan did not name the smallest --hbm"
expect_ok plan-min "$E" plan --model "$dir/m.tier" $PL --rank 8 --dropout 0.1 --act-dtype f32 --device cuda --hbm "${h}M"
# (the refusal names its figure rounded up to a MiB: one of the 8 activations may fit in what that adds)
grep -q 'layer slots 2 of 4' "$dir/out" && grep -q 'spilled [78]' "$dir/out" ||
    fail "--hbm ${h}M does not give 2 layer slots and (nearly) every activation spilled"
# the resident run decodes each layer's NF4 weights once a pass (kernels/backend.h's decode_layers), the smallest
# plan every product's block: the comparison below is of the two ways too
! grep -q 'decoded once a pass' "$dir/out" || fail "--hbm ${h}M: a decoded layer in the smallest plan"
expect_ok plan-resident "$E" plan --model "$dir/m.tier" $PL --rank 8 --dropout 0.1 --act-dtype f32 --device cuda
grep -q "frozen weights: each layer's decoded once a pass over it, for all 2 micro-batches" "$dir/out" ||
    fail "the resident plan decodes no layer once a pass: $(grep -A1 'layer slots' "$dir/out")"
expect_ok lora-cuda-streamed env TT_EMU_FAULT=count "$E" train $TR $LORA --act-dtype f32 --device cuda --hbm "${h}M" \
    --out "$dir/ls"
cmp -s "$dir/lg/adapter_model.safetensors" "$dir/ls/adapter_model.safetensors" ||
    fail "LoRA streamed at --hbm ${h}M differs from resident (f32 activations)"
launches=$(sed -n 's/^cuda_emu: \([0-9]*\) kernel launches$/\1/p' "$dir/err") # for the GPU fault below

# A GPU smaller than the resident plan (TT_EMU_MEM: the emulated GPU's memory), no --hbm: the plan is made within
# what the GPU can give (its free memory after start-up, less the 192 MiB the backend keeps for kernels loaded
# later and to spare), as --hbm; the run reserves its arena there. Start-up takes 50857984 bytes (cuBLAS's 32 MiB
# workspace, the 16 MiB mixed-product buffer, the norm and loss sums); the memory given: halfway between the
# smallest plan's arena and the resident one's.
dev_bytes() { sed -n 's/.*"dev_bytes":\([0-9]*\).*/\1/p' "$dir/out"; }
expect_ok plan-resident-json "$E" plan --model "$dir/m.tier" $PL --rank 8 --dropout 0.1 --act-dtype f32 --device cuda --json
res_dev=$(dev_bytes)
expect_ok plan-min-json "$E" plan --model "$dir/m.tier" $PL --rank 8 --dropout 0.1 --act-dtype f32 --device cuda --hbm "${h}M" --json
min_dev=$(dev_bytes)
gpu=$((50857984 + 201326592 + (min_dev + res_dev) / 2))
expect_ok plan-small-gpu env TT_EMU_MEM=$gpu "$E" plan --model "$dir/m.tier" $PL --rank 8 --dropout 0.1 --act-dtype f32 --device cuda --json
d=$(dev_bytes)
[ -n "$d" ] && [ "$d" -lt "$res_dev" ] && [ "$d" -le $(((min_dev + res_dev) / 2)) ] ||
    fail "a GPU of $gpu bytes, no --hbm: the plan's arena ${d:-?} is not within the GPU's free memory (resident $res_dev, smallest $min_dev)"
expect_ok plan-small-gpu-text env TT_EMU_MEM=$gpu "$E" plan --model "$dir/m.tier" $PL --rank 8 --dropout 0.1 --act-dtype f32 --device cuda
grep -q 'budgets: --hbm [0-9.]* [KMG]iB (the most the GPU can give now)' "$dir/out" ||
    fail "a GPU smaller than the plan: the budgets line does not say so: $(grep budgets "$dir/out")"
expect_ok plan-small-gpu-what-if env TT_EMU_MEM=$gpu "$E" plan --model "$dir/m.tier" $PL --rank 8 --dropout 0.1 --act-dtype f32 \
    --device cuda --hbm 100G
grep -q 'budgets: --hbm 100[.0-9]* GiB,' "$dir/out" && grep -q 'note: it takes --hbm .*, more than the .* the GPU can give now: a run here plans within that' "$dir/out" ||
    fail "plan --hbm 100G on a smaller GPU: not kept with a note: $(grep -A1 budgets "$dir/out")"
expect_ok lora-small-gpu env TT_EMU_MEM=$gpu "$E" train $TR $LORA --steps 1 --act-dtype f32 --device cuda --out "$dir/sg"
grep -q '"hbm_from_gpu":true' "$dir/out" && [ "$(sed -n 's/.*"dev_planned":\([0-9]*\).*/\1/p' "$dir/out")" = "$d" ] ||
    fail "train on a GPU smaller than the resident plan: not the plan within the GPU: $(tail -1 "$dir/out")"
# eval, which prints no plan: a note when its plan was made within the GPU (an arena of 3.5 MiB: 2 of the 4
# layer slots), and the loss the resident eval scores
EVS="--model $dir/m.tier --data $dir/c.tok --seq 64 --micro-batch 2 --batch-tokens 128 --max-tokens 256 --device cuda"
expect_ok eval-resident "$E" eval $EVS
l_res=$(sed -n 's/^eval: loss \([0-9.]*\) .*/\1/p' "$dir/out")
expect_ok eval-small-gpu env TT_EMU_MEM=$((50857984 + 201326592 + 3670016)) "$E" eval $EVS
grep -q '^tiertrain eval: note: planned within --hbm .*, the most the GPU can give this process now (2 of 4 layer slots' "$dir/err" &&
    [ -n "$l_res" ] && grep -q "^eval: loss $l_res " "$dir/out" ||
    fail "eval on a small GPU: no note, or not the resident loss ${l_res:-?}: $(cat "$dir/err" "$dir/out")"
# full training on an emulated GPU whose arena holds the streamed run (21.5 MiB) and not the resident one: streamed
# within what the GPU can give, said in words
expect_ok full-small-gpu env TT_EMU_MEM=$((50857984 + 201326592 + 25165824)) "$E" train $PL --lr 1e-3 --warmup 1 \
    --eval-every 0 --eval-tokens 64 --steps 1 --data "$dir/c.tok" --model "$dir/mf.tier" --full --clip 0 \
    --act-dtype f32 --device cuda --out "$dir/fsg.tier"
grep -q '^train --full: no --hbm given; planned within the .* the GPU can give this process now, as --hbm$' "$dir/out" &&
    grep -q '^full training: the resident run does not fit --hbm .*; streaming the layers' "$dir/out" ||
    fail "full training on a GPU smaller than its resident run: not streamed within the GPU: $(head -3 "$dir/out")"
expect_error plan-gpu-full "^tiertrain plan: the GPU can give this process .* now (its free memory, as an --hbm: .*), but even the smallest plan needs --hbm .*: free GPU memory .* or lower --seq / --micro-batch\$" \
    env TT_EMU_MEM=200M "$E" plan --model "$dir/m.tier" $PL --rank 8 --dropout 0.1 --act-dtype f32 --device cuda

# A GPU that fails mid-run (TT_EMU_FAULT=launch:N: from the N-th kernel launch on, every call reports an
# uncorrectable ECC error, the context's sticky error): one sentence naming the error and the checkpoint that
# stands, exit 1, no core; resumed from that checkpoint the run ends with the uninterrupted run's adapter, bit for
# bit. The fault comes 60% of the way through the launches of lora-cuda-streamed above (its first validation, 2 steps,
# the last validation): inside step 2, after step 1's checkpoint. The copy threads of the streamed run meet the
# error as the compute thread does; whichever speaks, one sentence.
n=$launches
if [ -z "$n" ]; then fail "TT_EMU_FAULT=count printed no launch count"; else
    expect_error gpu-fault-mid-run "^tiertrain: CUDA reported cudaErrorECCUncorrectable (.*); the run cannot go on; the last checkpoint in $dir/lf (step 1) is intact: continue with --resume $dir/lf\$" \
        env TT_EMU_FAULT=launch:$((n * 6 / 10)) "$E" train $TR $LORA --act-dtype f32 --device cuda --hbm "${h}M" \
        --save-every 1 --out "$dir/lf"
    expect_ok gpu-fault-resumed "$E" train $TR $LORA --act-dtype f32 --device cuda --hbm "${h}M" --save-every 1 \
        --out "$dir/lf" --resume "$dir/lf"
    cmp -s "$dir/ls/adapter_model.safetensors" "$dir/lf/adapter_model.safetensors" ||
        fail "the run resumed after the GPU fault: its adapter is not the uninterrupted run's"
fi
# and a GPU that cannot start: one another process holds, one older than the kernels' Ampere
expect_error gpu-busy "^tiertrain train: the GPU cannot be used: CUDA reported cudaErrorDevicesUnavailable (.*) creating its context: another process may hold the GPU .*; use --device cpu\$" \
    env TT_EMU_FAULT=busy "$E" train $TR $LORA --device cuda --out "$dir/busy"
expect_error gpu-turing "^tiertrain train: the GPU's compute capability is 7.5; tiertrain's CUDA kernels need 8.0 or newer .*: use --device cpu\$" \
    env TT_EMU_GPU=t4 "$E" train $TR $LORA --device cuda --out "$dir/turing"
[ ! -e "$dir/busy" ] && [ ! -e "$dir/turing" ] || fail "a GPU that cannot start: the run left its --out folder"
expect_ok lora-bf16 env TT_EMU_RACECHECK=1 "$E" train $TR $LORA --act-dtype bf16 --steps 2 --device cuda --out "$dir/bg"
cp "$dir/out" "$dir/bg.json"
# bf16 at its own smallest --hbm (at f32's, every layer and activation fits: nothing streamed)
hb=$(min_hbm --model "$dir/m.tier" $PL --rank 8 --dropout 0.1 --act-dtype bf16)
[ -n "$hb" ] || fail "plan did not name the smallest --hbm (bf16)"
expect_ok plan-min-bf16 "$E" plan --model "$dir/m.tier" $PL --rank 8 --dropout 0.1 --act-dtype bf16 --device cuda --hbm "${hb}M"
grep -q 'layer slots [23] of 4' "$dir/out" && grep -q 'spilled [1-8]' "$dir/out" ||
    fail "--hbm ${hb}M (bf16) does not stream the layers and spill activations: $(grep 'layer slots' "$dir/out")"
expect_ok lora-bf16-streamed "$E" train $TR $LORA --act-dtype bf16 --steps 2 --device cuda --hbm "${hb}M" --out "$dir/bs"
cmp -s "$dir/bg/adapter_model.safetensors" "$dir/bs/adapter_model.safetensors" ||
    fail "LoRA streamed at --hbm ${hb}M differs from resident (bf16 activations: tensor-core attention)"
# the op profile (TT_PROFILE_OPS): CUDA events around every op, read back at the step's read-back; the same adapter
expect_ok lora-bf16-profiled env TT_PROFILE_OPS=1 "$E" train $TR $LORA --act-dtype bf16 --steps 2 --device cuda \
    --hbm "${hb}M" --out "$dir/bp"
grep -q '^op profile (TT_PROFILE_OPS, cuda backend), from step 2 on' "$dir/err" &&
    grep -q '^  linear (dequantize + product) *[1-9][0-9]* ' "$dir/err" &&
    grep -q '^  attention backward *[1-9]' "$dir/err" || { fail "TT_PROFILE_OPS: no op profile of the CUDA run"; cat "$dir/err"; }
cmp -s "$dir/bg/adapter_model.safetensors" "$dir/bp/adapter_model.safetensors" ||
    fail "LoRA trained under TT_PROFILE_OPS differs"
# the same through (the stand-in for) cuDNN: planned with cuDNN's scratch, streamed at that smallest --hbm; bit for
# bit against resident here (the stand-in is deterministic, cuDNN's backward is not), the losses near the kernels'
hc=$(env TT_CUDA_ATTN=cudnn "$E" plan --model "$dir/m.tier" $PL --rank 8 --dropout 0.1 --act-dtype bf16 --device cuda --hbm 1M 2>&1 | needs)
[ -n "$hc" ] || fail "plan with TT_CUDA_ATTN=cudnn did not name the smallest --hbm"
expect_ok lora-cudnn env TT_CUDA_ATTN=cudnn "$E" train $TR $LORA --act-dtype bf16 --steps 2 --device cuda --out "$dir/cg"
grep -q 'attention backward plan' "$dir/err" || fail "train with TT_CUDA_ATTN=cudnn: cuDNN's attention did not run"
cp "$dir/out" "$dir/cg.json"
expect_ok lora-cudnn-streamed env TT_CUDA_ATTN=cudnn "$E" train $TR $LORA --act-dtype bf16 --steps 2 --device cuda \
    --hbm "${hc}M" --out "$dir/cs"
cmp -s "$dir/cg/adapter_model.safetensors" "$dir/cs/adapter_model.safetensors" ||
    fail "LoRA through cuDNN streamed at --hbm ${hc}M differs from resident"
losses "$dir/cg.json" >"$dir/l3"
losses "$dir/bg.json" >"$dir/l4"
d=$(paste -d' ' "$dir/l3" "$dir/l4" |
    awk '{ x = $1 - $2; if (x < 0) x = -x; if (x > m) m = x; n++ } END { if (n != 2) print "steps " n; else if (m > 2e-2) print "diff " m }')
[ -z "$d" ] || fail "LoRA through cuDNN vs the kernels, loss per step: $d (tolerance 2e-2, bf16)"

FULL="--model $dir/mf.tier --full --clip 0 --act-dtype f32"
hf=$(min_hbm --model "$dir/mf.tier" $PL --full)
for o in "adamw" "galore --galore-rank 16 --galore-update-every 2"; do
    n=${o%% *}
    # AdamW under racecheck (GaLore adds products, no kernel of its own)
    race=$([ "$n" = adamw ] && echo 1 || echo 0)
    expect_ok "full-$n" env TT_EMU_RACECHECK=$race "$E" train $TR $FULL --optim $o --device cuda --out "$dir/f-$n"
    expect_ok "full-$n-streamed" "$E" train $TR $FULL --optim $o --device cuda --hbm "${hf}M" --out "$dir/fs-$n"
    cmp -s "$dir/f-$n" "$dir/fs-$n" || fail "full training ($n) streamed at --hbm ${hf}M differs from resident"
done

# ---- generation ------------------------------------------------------------------
for i in 1 2 3 4; do
    echo "{\"prompt\": \"$(sed -n "$((i * 37))p" tools/demo-data/nlp-corpus-slice.txt | cut -c1-40 | tr -d '"\\')\"}"
done >"$dir/p.jsonl"
G="--model $dir/m.tier --prompts $dir/p.jsonl -n 12 --batch 4 --act-dtype f32"
expect_ok gen-cpu "$E" generate $G --device cpu -o "$dir/gc.jsonl"
expect_ok gen-cuda env TT_EMU_RACECHECK=1 "$E" generate $G --device cuda -o "$dir/gg.jsonl"
gh=$("$E" generate $G --device cuda --hbm 1M 2>&1 | needs)
expect_ok gen-cuda-streamed "$E" generate $G --device cuda --hbm "${gh}M" -o "$dir/gs.jsonl"
strip() { sed 's/"seconds":[^,]*,//' "$1"; }
[ "$(strip "$dir/gc.jsonl")" = "$(strip "$dir/gg.jsonl")" ] || fail "greedy completions on CUDA differ from the CPU's"
[ "$(strip "$dir/gg.jsonl")" = "$(strip "$dir/gs.jsonl")" ] || fail "generate streamed at --hbm ${gh}M differs from resident"
[ "$(grep -c '"completion"' "$dir/gg.jsonl")" = 4 ] || fail "generate wrote $(grep -c '"completion"' "$dir/gg.jsonl") completions, not 4"
# bench generate's default streamed budget counts what CUDA holds outside the arena (it was the arena alone)
expect_ok bench-generate "$E" bench generate --model "$dir/m.tier" --device cuda --batch 1 --rounds 1 --prompt-tokens 8 \
    --new-tokens 4
grep -q 'streamed / resident' "$dir/out" || fail "bench generate --device cuda printed no streamed / resident ratio"

# ---- deferred streams ----------------------------------------------------------------
# TT_EMU_DEFER (tests/cuda_emu/cuda_emu.cc, "deferred execution"): each stream's operations queued, run as late as
# the host's waits allow (lazy), the copy streams' as soon as their waits allow (eager-copies), or a random subset
# at each call (random:SEED). The selftest's pipeline with one ordering dropped is caught by the policy that
# exposes it, and passes without TT_EMU_DEFER (the issue order hides it)
for p in lazy eager-copies random:1 random:2; do
    expect_ok "emu_selftest defer-ok TT_EMU_DEFER=$p" env TT_EMU_DEFER=$p "$EMU/tests/emu_selftest" defer-ok
    grep -qx ok "$dir/out" || fail "emu_selftest defer-ok TT_EMU_DEFER=$p: did not print ok"
done
for c in raw:lazy war:eager-copies host:lazy read:lazy; do
    k=defer-${c%%:*}
    TT_EMU_DEFER=${c#*:} "$EMU/tests/emu_selftest" $k >"$dir/out" 2>"$dir/err" && fail "emu_selftest $k: not caught"
    grep -q "^emu_selftest: $k: round [01], y\[[0-9]*\] = .*, want .*an ordering between streams" "$dir/err" ||
        fail "emu_selftest $k: not the expected message: $(cat "$dir/err")"
    env -u TT_EMU_DEFER "$EMU/tests/emu_selftest" $k >"$dir/out" 2>"$dir/err" ||
        fail "emu_selftest $k without TT_EMU_DEFER: $(cat "$dir/err")"
done
# the streamed runs above under each policy, each against its resident run: LoRA at the smallest --hbm (f32: every
# activation spilled; bf16), full training (AdamW, GaLore), generation; a few per policy, for time
dq() { # NAME POLICY CMD...: runs CMD under the policy; its queues must have held work
    n=$1 p=$2
    shift 2
    expect_ok "$n TT_EMU_DEFER=$p" env TT_EMU_DEFER=$p "$@"
    grep -q "^cuda_emu: TT_EMU_DEFER=$p: [1-9][0-9]* operations queued, at most [1-9][0-9]* pending" "$dir/err" ||
        fail "$n TT_EMU_DEFER=$p: no operation was deferred: $(tail -2 "$dir/err")"
}
for p in lazy eager-copies random:1 random:2; do
    case $p in
    lazy) runs="ls gen adamw" ;;
    eager-copies) runs="ls gen" ;;
    random:1) runs="ls galore" ;;
    random:2) runs="bs gen" ;;
    esac
    for r in $runs; do
        case $r in
        ls) dq lora-streamed $p "$E" train $TR $LORA --act-dtype f32 --device cuda --hbm "${h}M" --out "$dir/dls-$p"
            cmp -s "$dir/lg/adapter_model.safetensors" "$dir/dls-$p/adapter_model.safetensors" ||
                fail "TT_EMU_DEFER=$p: LoRA streamed at --hbm ${h}M differs from resident (f32 activations)" ;;
        bs) dq lora-bf16-streamed $p "$E" train $TR $LORA --act-dtype bf16 --steps 2 --device cuda --hbm "${hb}M" \
                --out "$dir/dbs-$p"
            cmp -s "$dir/bg/adapter_model.safetensors" "$dir/dbs-$p/adapter_model.safetensors" ||
                fail "TT_EMU_DEFER=$p: LoRA streamed at --hbm ${hb}M differs from resident (bf16 activations)" ;;
        adamw | galore)
            o=$([ $r = adamw ] && echo adamw || echo "galore --galore-rank 16 --galore-update-every 2")
            dq full-$r-streamed $p "$E" train $TR $FULL --optim $o --device cuda --hbm "${hf}M" --out "$dir/dfs-$r-$p"
            cmp -s "$dir/f-$r" "$dir/dfs-$r-$p" || fail "TT_EMU_DEFER=$p: full training ($r) streamed differs from resident" ;;
        gen) dq gen-streamed $p "$E" generate $G --device cuda --hbm "${gh}M" -o "$dir/dgs-$p.jsonl"
            [ "$(strip "$dir/gg.jsonl")" = "$(strip "$dir/dgs-$p.jsonl")" ] ||
                fail "TT_EMU_DEFER=$p: generate streamed at --hbm ${gh}M differs from resident" ;;
        esac
    done
done
# and the runtime's own slot wait dropped (TT_TEST_DROP_WAIT=slot: a layer load no longer waits for the compute
# stream to be done with the slot): the eager copies land while the kernels still read the slot, and the first
# step's loss is not the resident run's (without TT_EMU_DEFER it was)
step1() { grep -o '"step":1,.*"loss":[0-9.]*' "$1" | sed 's/.*"loss"://'; }
dq lora-dropped-wait eager-copies env TT_TEST_DROP_WAIT=slot "$E" train $TR $LORA --steps 1 --act-dtype f32 \
    --device cuda --hbm "${h}M" --out "$dir/ddw"
a=$(step1 "$dir/out")
b=$(step1 "$dir/lg.json")
[ -n "$a" ] && [ -n "$b" ] && [ "$a" != "$b" ] ||
    fail "TT_TEST_DROP_WAIT=slot under TT_EMU_DEFER=eager-copies: step 1's loss ${a:-?} is the resident run's ${b:-?}"

finish test_cuda_emu
