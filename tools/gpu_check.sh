#!/bin/bash
# tools/gpu_check.sh — every check the GPU machine runs, in one command.
#
#   make gpu-bundle                 (here: static binaries -> build/gpu-bundle.tar.xz)
#   sh tools/peer_libs.sh           (here, optional: bitsandbytes for the QLoRA peer -> build/pylib)
#   run's carry: ["build/gpu-bundle.tar.xz", "build/pylib"]
#   bash tools/gpu_check.sh [OUTDIR] [CHECKS]   (there, from the repository root)
#
# OUTDIR (default $OUT, else build/gpu-check) receives gpu_check.log (every
# command and its output) and summary.txt (the table printed last). CHECKS is
# a comma list of the names below (default: all). A check that fails does not
# stop the others; each runs under its own time limit, cut to what is left of
# the whole run's budget (GPU_CHECK_BUDGET seconds, default 470: the run stays
# under 8 minutes; a check with under 20 s left is skipped). QUICK=1 runs the
# first five (env, ops, cpu-cuda, stream, kernels) only. Without a GPU (no
# nvidia-smi GPU) it runs what the CPU can — env, and ops as the op table on
# cpu-async — and lists the GPU checks it skipped. Exit status: the number of
# failed checks (0: all passed).
#
#   env        GPU, driver, CUDA, the binary's shared libraries
#   ops        tests/test_cuda_ops --real: every CUDA op against the CPU reference, small and real shapes
#              (tensor-core flash attention for bf16; then at small shapes the fp32-tile flash kernels,
#              TT_CUDA_ATTN=flash, the cuBLAS attention, TT_CUDA_ATTN=cublas, and cublasGemmEx products,
#              TT_CUDA_GEMM=cublas; the attention cases, real shapes too, with the tensor-core forward's 16 rows a warp,
#              TT_CUDA_FA2_FWD=16, and through cuDNN, TT_CUDA_ATTN=cudnn, where it loads)
#   ops-mc     the same under compute-sanitizer --tool memcheck
#   cpu-cuda   20 training steps of the `small` preset on the CPU and on CUDA (LoRA dropout 0.05: the same masks on
#              both): loss per step
#   stream     20 CUDA steps streamed at the smallest --hbm (spilling) vs resident: LoRA bit for bit (and 5 with
#              --act-dtype bf16 at its own smallest, and the bf16 run again with TT_CUDA_FA2_FWD=16: the same bits);
#              5 steps of full training (f32 store) the same; the streamed run's GPU peak within --hbm; each
#              budget's plan streams (fewer layer slots than layers)
#   train-mc   2 streamed CUDA steps under compute-sanitizer memcheck
#   kernels    tiertrain bench kernels --device cuda (8192 x 28672 x 8192), bf16 and fp32 activations; passes at
#              dequant+GEMM >= 0.7 x GEMM, attention fwd >= 300 / bwd >= 200 TFLOP/s (the kernels', or cuDNN's
#              with TT_CUDA_ATTN=cudnn: then train with it), arena copies >= 0.9 x pinned; the 16-row forward's
#              attention figures beside them (TT_CUDA_FA2_FWD=16)
#   prof       Nsight Compute (ncu, where the machine has it) on the tensor-core attention and dequantization
#              kernels at bench kernels' shapes: prof.txt (and prof.ncu-rep) in OUTDIR, for tuning them
#   gen        generate on the small model: CUDA (f32 activations) vs the CPU, greedy; streamed at the smallest
#              --hbm vs resident (the same JSON lines); bench generate --device cuda at batch 1 and 32
#   overlap8b  llama3.1-8b NF4: bench overlap --device cuda --hbm 8G (streamed vs resident); its trace and
#              the streamed step drawn (overlap8b.trace.json, overlap8b.svg: tiertrain trace)
#   peer       transformers + PEFT LoRA on llama3.1-8b (tools/peer_peft.py), seq 2048 and 4096; then QLoRA (NF4 through
#              bitsandbytes) where build/pylib was carried along (tools/peer_libs.sh)
#   hf         transformers/PEFT load what tiertrain writes, same losses (tools/hf_crosscheck.py)
#   train8b    llama3.1-8b NF4, 32K tokens a step (micro-batches of 8192), rank 16 on all seven projections, seq
#              2048 and 4096, resident and under --hbm 8G: tokens/s, MFU over the bf16 GEMM rate measured in the
#              same call, overlap, the GPU's peaks; passes at MFU >= 40% resident, 8G >= 0.9 x resident with
#              overlap >= 0.95, peak within 8G (issue 12's third must-show; the peer's shapes); then one resident
#              run under TT_PROFILE_OPS=1: the time of every op kind of a step (train8b.opprof.txt in OUTDIR)
# A GPU session has 15 minutes of device time, the machine's start included, and the machine goes back after
# 30 s idle: calls 1 and 2 fit, back to back (call 2 typed before call 1 returns); 3 is the next session's:
#   1. GPU_CHECK_BUDGET=300 QUICK=1 bash tools/gpu_check.sh $OUT                (run's timeout_s 330; ~3 min)
#   2. GPU_CHECK_BUDGET=B bash tools/gpu_check.sh $OUT train8b,peer,hf         (speed beside the peer, one call)
#      B = call 1's lease.budget_left_s - 45, at most 560; run's timeout_s B + 25; then give_back. Where call 1
#      found cuDNN's attention within tolerance and faster than the kernels, call 2 trains with it by itself
#      (kernels leaves TT_CUDA_ATTN=cudnn in /tmp/tiertrain-gpu-attn; an explicit TT_CUDA_ATTN wins)
#   3. bash tools/gpu_check.sh $OUT ops-mc,train-mc,gen,overlap8b,prof      (the sanitizer, then the rest)
# Each check's output goes to gpu_check.log as it runs, so a call cut short keeps what the running check said.
# A check whose limit the budget would cut below 60% is skipped (SKIP, not FAIL); one cut less that runs out of
# time is CUT, not FAIL. The bundle must have been built from this tree (its BUILD names tools/src_hash.sh's
# hash of the sources): a stale one is refused before anything runs (GPU_CHECK_ANY_BUNDLE=1 runs it anyway).
# Only when named (each takes most of a call: GPU_CHECK_BUDGET=590 and one of them per call):
#   p70        llama3.1-70b pruned 0.85 NF4, all 80 layers, seq 4096, 32K tokens a step, rank 16 on all seven
#              projections, under --hbm 20G, 8G and 4G: tokens/s, MFU, overlap, the GPU's peak, the host arena;
#              8G's trace and its second step drawn (p70-8g.trace.json, p70-8g-step2.svg)
#   u70        the unpruned llama3.1-70b NF4 under --hbm 20G, layers cached in host memory and then read from the
#              disk every step (--host 33G: no layer cache), beside bench io on the same file
# Knobs for a rehearsal on the emulated GPU (tools/gpu_rehearse.sh sets them; unset, every check runs as above):
# GPU_CHECK_SLOW (each check's limit x N), GPU_CHECK_BARS=0 (the speed bars of kernels and train8b at 0: their
# figures reported, not judged), GPU_CHECK_ATTN_FILE (instead of /tmp/tiertrain-gpu-attn), OPS_REAL (ops' --real),
# SMALL_PRESET, SMALL_PLANF, SMALL_TRAINF, SMALL_STEPS, SMALL_HBM_MARGIN (the small runs of cpu-cuda, stream,
# train-mc, gen), GEN_BENCH (gen's bench generate flags), KERN_FLAGS (bench kernels' shapes, before each call's own),
# OV8_PRESET, OV8_FLAGS (overlap8b), PEER_FLAGS, TORCH_DEVICE (peer's and hf's torch device), HF_FLAGS (more
# hf_crosscheck.py flags), T8_* (train8b), G70_* (p70, u70).
set -u
cd "$(dirname "$0")/.."
OUTD=${1:-${OUT:-build/gpu-check}}
ONLY=${2:-all}
[ "${QUICK:-0}" = 1 ] && [ "$ONLY" = all ] && ONLY=env,ops,cpu-cuda,stream,kernels
BUDGET=${GPU_CHECK_BUDGET:-470}
START=$(date +%s)
HAVE_GPU=
nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && HAVE_GPU=1
CPU_CHECKS=" env ops " # what runs without a GPU
SKIPPED=""
mkdir -p "$OUTD"
LOG=$OUTD/gpu_check.log
SUM=$OUTD/summary.txt
: >"$LOG"
: >"$SUM"
W=${GPU_CHECK_WORK:-/tmp/tiertrain-gpu-check}
rm -rf "$W"
mkdir -p "$W"
FAILED=0

log() { echo "$*" | tee -a "$LOG"; }
row() { printf '%-10s %-5s %6s  %s\n' "$1" "$2" "$3" "$4" | tee -a "$SUM" >>"$LOG"; }
want() { [ "$ONLY" = all ] || case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# run NAME LIMIT_S FUNCTION: the function prints its findings; its last line
# "RESULT <PASS|FAIL|INFO> <figure>" goes to the table.
run() {
    local name=$1 limit=$2 fn=$3 t0 rc res
    want "$name" || return 0
    if ! declare -F "$fn" >/dev/null; then
        row "$name" FAIL 0s "script bug: no function $fn"
        FAILED=$((FAILED + 1))
        return 0
    fi
    if [ -z "$HAVE_GPU" ] && [ "${CPU_CHECKS#* $name }" = "$CPU_CHECKS" ]; then
        row "$name" SKIP 0s "no GPU here"
        SKIPPED="$SKIPPED $name"
        return 0
    fi
    limit=$((limit * ${GPU_CHECK_SLOW:-1}))
    local left=$((BUDGET - ($(date +%s) - START))) cut=
    if [ "$left" -lt 20 ] || [ "$((left * 10))" -lt "$((limit * 6))" ]; then
        row "$name" SKIP 0s "needs up to ${limit}s, ${left}s left of the budget (${BUDGET}s)"
        SKIPPED="$SKIPPED $name"
        return 0
    fi
    [ "$left" -lt "$limit" ] && limit=$left cut=1
    log ""
    log "==== $name (limit ${limit}s) ================================================"
    t0=$(date +%s.%N)
    export CHECK_DEADLINE=$(($(date +%s) + limit)) # the check may leave out its optional part when short of time
    # live into the log (a call cut short keeps what the running check said), and apart for its result line
    timeout --kill-after=10 "$limit" bash -c "$fn" 2>&1 | tee "$W/$name.out" >>"$LOG"
    rc=${PIPESTATUS[0]}
    local dt
    dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
    res=$(grep '^RESULT ' "$W/$name.out" | tail -1)
    if { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && [ -n "$cut" ]; then
        row "$name" CUT "${dt}s" "ran out of the ${limit}s the budget left it (see gpu_check.log)"
    elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        row "$name" FAIL "${dt}s" "timed out after ${limit}s"
        FAILED=$((FAILED + 1))
    elif [ -z "$res" ]; then
        row "$name" FAIL "${dt}s" "exit $rc, no result line (see gpu_check.log)"
        FAILED=$((FAILED + 1))
    else
        set -- $res
        local verdict=$2
        shift 2
        [ "$rc" != 0 ] && [ "$verdict" != FAIL ] && verdict=FAIL
        row "$name" "$verdict" "${dt}s" "$*"
        [ "$verdict" = FAIL ] && FAILED=$((FAILED + 1))
    fi
    tail -3 "$W/$name.out" | sed 's/^/    /'
}

# ---- the binaries --------------------------------------------------------------
BUNDLE=${GPU_CHECK_BUNDLE:-build/gpu-bundle.tar.xz}
if [ ! -f "$BUNDLE" ]; then
    echo "gpu_check: $BUNDLE is missing; run 'make gpu-bundle' first (on the build machine)" >&2
    exit 2
fi
tar -C "$W" -xJf "$BUNDLE"
built=$(sed -n 's/.*, sources \([0-9a-f]*\).*/\1/p' "$W/gpu/BUILD" 2>/dev/null)
here=$(sh tools/src_hash.sh)
if [ "$built" != "$here" ] && [ "${GPU_CHECK_ANY_BUNDLE:-0}" != 1 ]; then
    log "gpu_check: $BUNDLE was built from other sources (${built:-no hash in its BUILD}) than this" \
        "tree ($here): run 'make gpu-bundle' here and carry it again (GPU_CHECK_ANY_BUNDLE=1 runs it anyway)"
    exit 2
fi
T=$W/gpu/tiertrain
OPS=$W/gpu/test_cuda_ops
# The libraries opened at run time: cuBLAS (cuBLASLt and cuBLAS, side by side; opened when the CUDA backend
# starts), cuDNN (TT_CUDA_ATTN=cudnn's attention) and the NVRTC it compiles its fused kernels with: where the
# loader does not know them, the CUDA toolkit's or PyTorch's (pip) copies.
# One walk of /usr and /opt for all (slow under gVisor, with PyTorch's packages there), kept for env's report.
LIBS_FOUND=$W/libs.found RUNTIME_LIBS="libcublasLt.so.13 libcudnn.so.9 libnvrtc.so.13"
find /usr /opt \( -name libcublasLt.so.13 -o -name libcudnn.so.9 -o -name libnvrtc.so.13 \) 2>/dev/null >"$LIBS_FOUND"
for lib in $RUNTIME_LIBS; do
    ldconfig -p 2>/dev/null | grep -q "$lib" && continue
    f=$(ls "/usr/local/cuda/lib64/$lib" 2>/dev/null || grep "/$lib\$" "$LIBS_FOUND" | head -1)
    [ -n "$f" ] && export LD_LIBRARY_PATH=$(dirname "$f")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
done
# call 1's kernels check leaves its choice of attention here for the next call (outside W, which each call empties)
ATTN_CHOICE=${GPU_CHECK_ATTN_FILE:-/tmp/tiertrain-gpu-attn}
if [ -z "${TT_CUDA_ATTN:-}" ] && [ -s "$ATTN_CHOICE" ]; then
    export TT_CUDA_ATTN=$(cat "$ATTN_CHOICE")
    log "gpu_check: TT_CUDA_ATTN=$TT_CUDA_ATTN, as an earlier call's kernels check chose (cuDNN's attention within tolerance and faster)"
fi
export T OPS W HAVE_GPU OUTD ATTN_CHOICE LIBS_FOUND RUNTIME_LIBS
# the rehearsal's knobs (see the header); unset, the GPU machine's run
OPS_REAL=${OPS_REAL---real}
KERN_FLAGS=${KERN_FLAGS:-}
GEN_BENCH=${GEN_BENCH:---batch 1,32 --rounds 2}
OV8_PRESET=${OV8_PRESET:-llama3.1-8b}
OV8_FLAGS=${OV8_FLAGS:---hbm 8G --seq 2048 --micro-batch 1 --batch-tokens 4096}
PEER_FLAGS=${PEER_FLAGS:---preset llama3.1-8b --seq 2048,4096 --batch-tokens 32768 --micro-tokens 8192 --rank 16 --alpha 32 --steps 2}
TORCH_DEVICE=${TORCH_DEVICE:-}
HF_FLAGS=${HF_FLAGS:-}
GPU_CHECK_BARS=${GPU_CHECK_BARS:-1}
export OPS_REAL KERN_FLAGS GEN_BENCH OV8_PRESET OV8_FLAGS PEER_FLAGS TORCH_DEVICE HF_FLAGS GPU_CHECK_BARS
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 # no network there: never wait on the hub

CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer \
    /usr/local/cuda*/compute-sanitizer/compute-sanitizer /opt/nvidia/*/compute-sanitizer 2>/dev/null | head -1)
export CS=${CS:-compute-sanitizer}

# ---- the checks ----------------------------------------------------------------
# Runs "$@" while nvidia-smi samples the whole GPU's used memory every 100 ms;
# prints the peak over the idle baseline read just before (the machine runs
# nothing else), as "peak GPU memory used ...: N MiB".
gpumem_peak() {
    local f=$W/mem.$BASHPID p rc base
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$f" 2>/dev/null &
    p=$!
    "$@"
    rc=$?
    kill $p 2>/dev/null
    wait $p 2>/dev/null
    echo "peak GPU memory used (nvidia-smi, 100 ms samples, over the idle ${base} MiB): $(sort -n "$f" | tail -1 | awk -v b="$base" '{ print $1 - b }') MiB"
    return $rc
}
# within_budget FILE BUDGET_MIB: the last peak line of FILE is at most the budget
within_budget() {
    local peak
    peak=$(grep -o 'peak GPU memory used[^:]*: [0-9]* MiB' "$1" | tail -1 | grep -o '[0-9]* MiB$' | cut -d' ' -f1)
    [ -n "$peak" ] && [ "$peak" -le "$2" ]
}

c_env() {
    if [ -z "$HAVE_GPU" ]; then
        ldd "$T"; nproc; free -g | head -2
        echo "RESULT INFO no GPU (nvidia-smi lists none): the GPU checks are skipped"
        return 0
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    nvcc --version 2>/dev/null | tail -2
    ldd "$T"
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    for lib in $RUNTIME_LIBS; do
        echo "$lib: $(grep "/$lib\$" "$LIBS_FOUND" | head -3 | tr '\n' ' ')"
    done
    nproc
    free -g | head -2
    df -h "$W" /tmp 2>/dev/null
    echo "kernel: $(uname -r) (4.4.0: gVisor, where compute-sanitizer and ncu cannot attach)"
    if ldd "$T" | grep -q 'not found'; then echo "RESULT FAIL missing shared libraries"; return 1; fi
    # the read engine that streams layers here: io_uring, or the pread threads where it is refused
    local eng="?"
    if "$T" synth --preset tiny -o "$W/probe.tier" --force >/dev/null 2>&1; then
        eng=$("$T" bench io "$W/probe.tier" --json --no-buffered --no-threads 2>"$W/probe.err" | tail -1 |
            sed -n 's/.*"engine":"\([^"]*\)".*"direct":\(true\|false\).*/\1, O_DIRECT \2/p')
        cat "$W/probe.err"
    fi
    echo "RESULT INFO $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); kernel $(uname -r); read engine ${eng:-?}"
}

c_ops() {
    if [ -z "$HAVE_GPU" ]; then # the table itself, on the CPU (cpu-async standing in for the GPU)
        "$OPS" --device cpu-async
        local rc=$?
        [ $rc = 0 ] && echo "RESULT PASS no GPU: the op table against cpu-async (fp32 and bf16)" ||
            echo "RESULT FAIL test_cuda_ops --device cpu-async exit $rc"
        return
    fi
    "$OPS" $OPS_REAL
    local rc=$?
    # the other attention paths at small shapes: the fp32-tile flash kernels for bf16 too, and the head-chunked
    # cuBLAS fallback; and every product through cublasGemmEx instead of cuBLASLt
    TT_CUDA_ATTN=flash "$OPS" || rc=$((rc + 10))
    TT_CUDA_ATTN=cublas "$OPS" || rc=$((rc + 100))
    TT_CUDA_GEMM=cublas "$OPS" || rc=$((rc + 1000))
    # the tensor-core forward with 16 query rows a warp (the default takes 32), real shapes included
    TT_CUDA_FA2_FWD=16 "$OPS" $OPS_REAL --only attention || rc=$((rc + 100000))
    # cuDNN's fused attention (TT_CUDA_ATTN=cudnn), small and real shapes: wrong results fail the check; cuDNN
    # missing or refusing (the kernels then run, and are what the rows above checked) is reported
    local cudnn
    TT_CUDA_ATTN=cudnn "$OPS" $OPS_REAL --only attention 2>&1 | tee "$W/ops.cudnn"
    if [ "${PIPESTATUS[0]}" != 0 ]; then
        rc=$((rc + 10000))
        cudnn="cuDNN attention FAILED"
    elif grep -q 'attention takes the tensor-core kernels instead' "$W/ops.cudnn"; then
        cudnn="cuDNN attention not run: $(grep -o 'TT_CUDA_ATTN=cudnn: .*' "$W/ops.cudnn" | head -1 | cut -c1-160)"
    elif grep -q 'takes the tensor-core kernels' "$W/ops.cudnn"; then
        cudnn="cuDNN attention within tolerance where it planned; refused: $(sed -n 's/.*TT_CUDA_ATTN=cudnn: \(.*takes the tensor-core kernels\)/\1/p' "$W/ops.cudnn" | head -1 | cut -c1-200)"
    elif grep -q 'attention backward plan' "$W/ops.cudnn"; then
        cudnn="cuDNN attention within tolerance too"
        : >"$W/cudnn.ok" # the kernels check may choose it
    else
        cudnn="cuDNN attention: no plan line (?)"
    fi
    [ $rc = 0 ] && echo "RESULT PASS every op within its tolerance (tensor-core, fp32-tile and cuBLAS attention; cuBLASLt and cuBLAS products); $cudnn" ||
        echo "RESULT FAIL test_cuda_ops exit $rc (+10: TT_CUDA_ATTN=flash, +100: TT_CUDA_ATTN=cublas, +1000: TT_CUDA_GEMM=cublas, +10000: TT_CUDA_ATTN=cudnn, +100000: TT_CUDA_FA2_FWD=16); $cudnn"
}

# cs_result RC LOG WHAT: the result line of a compute-sanitizer run. A sanitizer that cannot attach to this
# GPU (gVisor's runtime: "Device not supported", then error 999) is no finding about the code: INFO, not FAIL.
cs_result() {
    if [ "$1" != 0 ] && grep -q 'Device not supported' "$2" &&
        ! grep -q '^========= \(Invalid\|Program hit\|Uninitialized\|Race\)' "$2"; then
        echo "RESULT INFO compute-sanitizer cannot run on this machine (Device not supported, exit $1); kernel $(uname -r):" \
            "not a finding about the code"
    elif [ "$1" = 0 ]; then
        echo "RESULT PASS memcheck clean$3"
    else
        echo "RESULT FAIL exit $1$3"
    fi
}

c_ops_mc() {
    "$CS" --tool memcheck --error-exitcode 9 --print-limit 20 "$OPS" 2>&1 | tee "$W/ops_mc.cs.log"
    cs_result "${PIPESTATUS[0]}" "$W/ops_mc.cs.log" ""
}

# the small model and byte tokens (shared by the training checks)
prep_small() {
    [ -f "$W/small.tier" ] && return 0
    "$T" synth --preset "$SMALL_PRESET" --quant nf4 -o "$W/small.tier" >/dev/null &&
        "$T" tokenize --input tools/demo-data/nlp-corpus-slice.txt -o "$W/c.tok" >/dev/null
}
# plan flags (plan, train) and train-only flags of the small runs
# (f32 activations: these runs are compared with the CPU's; the bf16 ones say so last, where the last flag wins)
PLANF=${SMALL_PLANF:-"--seq 256 --micro-batch 4 --batch-tokens 2048 --rank 16 --alpha 32 --dropout 0.05 --act-dtype f32"}
SMALL="$PLANF --lr 1e-3 --warmup 2 --eval-every 0 --save-every 0 --json${SMALL_TRAINF:+ $SMALL_TRAINF}"
SMALL_PRESET=${SMALL_PRESET:-small}
SMALL_STEPS=${SMALL_STEPS:-20} # cpu-cuda's and stream's runs
export PLANF SMALL SMALL_PRESET SMALL_STEPS
# the smallest --hbm the planner accepts for the small model on CUDA (2 slots, every activation spilled), +2%
# (SMALL_HBM_MARGIN=1.02: what the process holds outside the arena, measured again at the run, may differ; 1: the
# figure itself, in whole MiB)
SMALL_HBM_MARGIN=${SMALL_HBM_MARGIN:-1.02}
export SMALL_HBM_MARGIN
min_hbm() { # [MODEL [PLAN FLAGS...]]: the small model with $PLANF by default
    local m=${1:-$W/small.tier}
    [ $# -gt 0 ] && shift
    "$T" plan --model "$m" --device cuda --hbm 1M $PLANF "$@" 2>&1 |
        sed -n 's/.*needs --hbm \([0-9.]*\) \([KMG]\)iB.*/\1 \2/p' |
        awk -v f="$SMALL_HBM_MARGIN" '{ m = $2 == "G" ? 1024 : $2 == "K" ? 1 / 1024 : 1; v = $1 * m * f
                                         if (f > 1) printf "%.0fM", v + 1; else printf "%dM", v == int(v) ? v : int(v) + 1 }'
}
# streams MODEL HBM [PLAN FLAGS...]: the plan at that --hbm keeps fewer layer slots than layers (else a streamed
# run compared with a resident one proves nothing)
streams() {
    local m=$1 h=$2
    shift 2
    "$T" plan --model "$m" --device cuda --hbm "$h" $PLANF "$@" >"$W/streams.plan" 2>&1 &&
        grep -q '^  layer slots [0-9]* of [0-9]*' "$W/streams.plan" && ! grep -q 'all resident' "$W/streams.plan"
}
losses() { grep -o '"loss":[0-9.eE+-]*' "$1" | cut -d: -f2; }

c_cpu_cuda() {
    prep_small || { echo "RESULT FAIL could not make the small model"; return 1; }
    "$T" train --model "$W/small.tier" --data "$W/c.tok" --out "$W/cpu20" --steps "$SMALL_STEPS" --device cpu $SMALL >"$W/cpu20.json" || {
        echo "RESULT FAIL cpu run"; return 1; }
    "$T" train --model "$W/small.tier" --data "$W/c.tok" --out "$W/res20" --steps "$SMALL_STEPS" --device cuda $SMALL >"$W/res20.json" || {
        echo "RESULT FAIL cuda run"; return 1; }
    paste <(losses "$W/cpu20.json") <(losses "$W/res20.json") |
        awk -v n="$SMALL_STEPS" '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d; printf "step %2d  cpu %.6f  cuda %.6f  |diff| %.2e\n", NR, $1, $2, d }
             END { if (NR != n) { print "RESULT FAIL " NR " steps compared"; exit 1 }
                   printf "RESULT %s max |loss diff| over %d steps %.2e\n", (m < 2e-3 ? "PASS" : "FAIL"), n, m }'
    grep -o '"tokens_per_s":[0-9.]*' "$W/res20.json" | tail -1
}

c_stream() {
    # bit for bit needs an attention that is: cuDNN's backward adds into dQ from many blocks at once
    [ "${TT_CUDA_ATTN:-}" = cudnn ] && { echo "stream: TT_CUDA_ATTN=cudnn set; this check runs the kernels"; unset TT_CUDA_ATTN; }
    prep_small || { echo "RESULT FAIL could not make the small model"; return 1; }
    local h
    h=$(min_hbm)
    [ -n "$h" ] || { echo "RESULT FAIL could not find the smallest --hbm"; return 1; }
    "$T" plan --model "$W/small.tier" --device cuda --hbm "$h" $PLANF | head -4
    streams "$W/small.tier" "$h" || { echo "RESULT FAIL --hbm $h keeps every layer resident: nothing streams (SMALL_HBM_MARGIN)"; return 1; }
    [ -d "$W/res20" ] || "$T" train --model "$W/small.tier" --data "$W/c.tok" --out "$W/res20" --steps "$SMALL_STEPS" --device cuda $SMALL >"$W/res20.json"
    gpumem_peak "$T" train --model "$W/small.tier" --data "$W/c.tok" --out "$W/str20" --steps "$SMALL_STEPS" --device cuda --hbm "$h" $SMALL >"$W/str20.json" || {
        echo "RESULT FAIL streamed run"; return 1; }
    grep -v 'peak GPU memory' "$W/str20.json" | tail -1
    grep 'peak GPU memory' "$W/str20.json"
    local same=identical fits=yes
    cmp "$W/res20/adapter_model.safetensors" "$W/str20/adapter_model.safetensors" || same=different
    # the same with bf16 activations (the bf16 kernels and products), 5 steps each, at bf16's own smallest --hbm (at
    # f32's, its smaller cells keep most layers and every activation on the device)
    local hb
    hb=$(min_hbm "$W/small.tier" --act-dtype bf16)
    if [ -z "$hb" ]; then same="$same (bf16: no smallest --hbm found)"
    elif ! streams "$W/small.tier" "$hb" --act-dtype bf16; then same="$same (bf16: every layer resident at --hbm $hb)"; fi
    echo "bf16 at --hbm $hb: $(grep -o 'layer slots [0-9]* of [0-9]*.*spilled [0-9]*' "$W/streams.plan")"
    "$T" train --model "$W/small.tier" --data "$W/c.tok" --out "$W/bres" --steps 5 --device cuda $SMALL --act-dtype bf16 >/dev/null &&
        "$T" train --model "$W/small.tier" --data "$W/c.tok" --out "$W/bstr" --steps 5 --device cuda --hbm "$hb" $SMALL --act-dtype bf16 >/dev/null &&
        cmp "$W/bres/adapter_model.safetensors" "$W/bstr/adapter_model.safetensors" || same="$same (bf16 cells: different)"
    # the attention forward with 16 query rows a warp instead of 32: the same products in the same order, the same bits
    TT_CUDA_FA2_FWD=16 "$T" train --model "$W/small.tier" --data "$W/c.tok" --out "$W/bres16" --steps 5 --device cuda $SMALL \
        --act-dtype bf16 >/dev/null && cmp "$W/bres/adapter_model.safetensors" "$W/bres16/adapter_model.safetensors" ||
        same="$same (bf16, forward 16 vs 32 rows a warp: different)"
    within_budget "$W/str20.json" "${h%M}" || fits=no
    # full training (AdamW; the streamed run steps the embedding on the host, kernels/adamw.h): the store bit for bit
    local full=identical hf
    "$T" synth --preset "$SMALL_PRESET" --quant f32 -o "$W/smallf.tier" >/dev/null || full="not run (synth failed)"
    hf=$(min_hbm "$W/smallf.tier" --full)
    [ "$full" = identical ] && ! streams "$W/smallf.tier" "$hf" --full && full="not streamed (every layer resident at --hbm ${hf:-?})"
    # (the small runs' flags without LoRA's --rank, --alpha, --dropout and --targets, which train refuses with --full)
    local F="--model $W/smallf.tier --data $W/c.tok --steps 5 --device cuda --full --clip 0 $(echo " $SMALL" |
        sed -E 's/ (--(rank|alpha|dropout|targets)[= ]|-[rt] )[^ ]+//g')"
    if [ "$full" = identical ]; then
        echo "full training at --hbm $hf: $(grep -o 'layer slots [0-9]* of [0-9]*' "$W/streams.plan")"
        "$T" train $F --out "$W/fres" >/dev/null && "$T" train $F --hbm "$hf" --out "$W/fstr" >/dev/null &&
            cmp "$W/fres" "$W/fstr" || full="different (streamed at --hbm $hf)"
    fi
    echo "full training streamed vs resident: $full"
    if [ "$same" = identical ] && [ "$fits" = yes ] && [ "$full" = identical ]; then
        echo "RESULT PASS LoRA and full training bit-identical, streamed at --hbm $h (bf16 $hb) / $hf vs resident; GPU peak within --hbm"
    else
        echo "RESULT FAIL LoRA $same (streamed at --hbm $h vs resident); full training $full; GPU peak within --hbm: $fits"
    fi
}

c_train_mc() {
    prep_small || { echo "RESULT FAIL could not make the small model"; return 1; }
    local h
    h=$(min_hbm)
    "$CS" --tool memcheck --error-exitcode 9 --print-limit 20 \
        "$T" train --model "$W/small.tier" --data "$W/c.tok" --out "$W/mc2" --steps 2 --device cuda --hbm "$h" $SMALL \
        2>&1 | tee "$W/train_mc.cs.log"
    cs_result "${PIPESTATUS[0]}" "$W/train_mc.cs.log" " on 2 streamed steps (--hbm $h)"
}

# Issue 12's second must-show, side by side in one run: dequant+GEMM >= 0.7 x plain bf16 GEMM, causal attention
# (seq 4096, head_dim 128, GQA 16/2) forward >= 300 and backward >= 200 TFLOP/s, arena copies >= 0.9 x pinned
c_kernels() {
    set -o pipefail
    # bf16 activations (tensor cores; what training runs with on cuda), then fp32 GEMMs for comparison
    "$T" bench kernels --device cuda $KERN_FLAGS --json | tee "$W/kernels.bf16" || { echo "RESULT FAIL exit $?"; return 1; }
    "$T" bench kernels --device cuda $KERN_FLAGS --act-dtype f32 --copy-mb 0 --iters 5 || { echo "RESULT FAIL f32 exit $?"; return 1; }
    # the other attention path (fp32-tile flash kernels) at the same shape, for comparison (small GEMM: not timed here)
    echo "-- TT_CUDA_ATTN=flash (attention only)"
    TT_CUDA_ATTN=flash "$T" bench kernels --device cuda $KERN_FLAGS --m 256 --n 256 --k 256 --copy-mb 0 --iters 5 | grep attention
    # the tensor-core forward with 16 query rows a warp (the default: 32), for comparison
    echo "-- TT_CUDA_FA2_FWD=16 (attention only)"
    TT_CUDA_FA2_FWD=16 "$T" bench kernels --device cuda $KERN_FLAGS --m 256 --n 256 --k 256 --copy-mb 0 --iters 5 | grep attention
    # cuDNN's fused attention at the same shape (TT_CUDA_ATTN=cudnn); its figures count where it ran
    echo "-- TT_CUDA_ATTN=cudnn (attention only)"
    TT_CUDA_ATTN=cudnn "$T" bench kernels --device cuda $KERN_FLAGS --m 256 --n 256 --k 256 --copy-mb 0 --iters 5 --json \
        2>"$W/kernels.cudnn.err" | tee "$W/kernels.cudnn" | grep attention
    cat "$W/kernels.cudnn.err"
    local v
    v=$(python3 -c 'import json, os, sys
def last(p):
    try: return json.loads(open(p).read().strip().splitlines()[-1])
    except Exception: return {}
j = last(sys.argv[1]); d = last(sys.argv[2])
if not d.get("attention_path", "").startswith("cuDNN"): d = {}  # refused or missing: the kernels ran
g = j.get("gemm bf16 (cuBLAS/BLAS)", 0); r = j.get("dequant_gemm_ratio", 0)
f = j.get("attention fwd (causal)", 0); b = j.get("attention bwd (causal)", 0)
df = d.get("attention fwd (causal)", 0); db = d.get("attention bwd (causal)", 0)
c = j.get("registered_over_pinned", 0)
rb, fb, bb, cb = (0.7, 300, 200, 0.9) if os.environ.get("GPU_CHECK_BARS") != "0" else (0, 0, 0, 0)
att = (f >= fb and b >= bb) or (df >= fb and db >= bb)
ok = r >= rb and att and c >= cb
cd = "cuDNN fwd %.0f, bwd %.0f" % (df, db) if d else "cuDNN did not run"
print("%s gemm bf16 %.0f TFLOP/s; dequant+gemm/gemm %.2f (>= %g); attention fwd %.0f (>= %g), bwd %.0f (>= %g) TFLOP/s (%s); arena/pinned h2d %.2f (>= %g)" % ("PASS" if ok else "FAIL", g, r, rb, f, fb, b, bb, cd, c, cb))
# cuDNN for training where it ran and a step of attention (the backward ~2.5 x the forward) takes less time
faster = d and df > 0 and db > 0 and (f <= 0 or b <= 0 or 1 / df + 2.5 / db < 1 / f + 2.5 / b)
open(sys.argv[3], "w").write("cudnn" if faster else "")' "$W/kernels.bf16" "$W/kernels.cudnn" "$W/attn.choice") ||
        { echo "RESULT FAIL could not read bench kernels' JSON line"; return 1; }
    # the choice for later calls: cuDNN where ops found it within tolerance (this call's ops, or an earlier one's)
    if [ -s "$W/attn.choice" ] && { [ -f "$W/cudnn.ok" ] || [ "${TT_CUDA_ATTN:-}" = cudnn ]; }; then
        cp "$W/attn.choice" "$ATTN_CHOICE"
        echo "attention for the next calls' training: TT_CUDA_ATTN=cudnn (faster here, within tolerance in ops)"
    elif [ -z "${TT_CUDA_ATTN:-}" ]; then
        rm -f "$ATTN_CHOICE"
        echo "attention for the next calls' training: the tensor-core kernels"
    fi
    echo "RESULT $v"
}

c_prof() {
    local NCU
    NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    [ -n "$NCU" ] || { echo "RESULT INFO no ncu on this machine: nothing profiled"; return 0; }
    "$NCU" --kernel-name 'regex:k_fa2_|k_nf4_vec' --launch-count 6 --set detailed -f -o "$OUTD/prof" \
        "$T" bench kernels --device cuda --m 1024 --n 1024 --k 1024 --copy-mb 0 --iters 1 2>&1 | tee "$W/ncu.log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" != 0 ] && grep -q 'LibraryNotLoaded\|Device not supported\|ERR_NVGPUCTRPERM' "$W/ncu.log"; then
        echo "RESULT INFO ncu cannot profile on this machine (exit $rc; kernel $(uname -r)): not a finding about the code"
        return 0
    fi
    [ "$rc" = 0 ] || { echo "RESULT FAIL ncu exit $rc"; return 1; }
    "$NCU" --import "$OUTD/prof.ncu-rep" --page details >"$OUTD/prof.txt" || { echo "RESULT FAIL ncu --import"; return 1; }
    grep -E '^  k_|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per Thread' \
        "$OUTD/prof.txt" | head -60
    echo "RESULT INFO $(grep -c '^  k_' "$OUTD/prof.txt") kernel launches profiled: prof.txt, prof.ncu-rep"
}

c_overlap8b() {
    set -o pipefail
    "$T" synth --preset "$OV8_PRESET" --quant nf4 --force -o "$W/l8b.tier" | tail -1 || { echo "RESULT FAIL synth"; return 1; }
    gpumem_peak "$T" bench overlap --model "$W/l8b.tier" --device cuda $OV8_FLAGS \
        --rank 16 --alpha 32 --steps 1 --json --trace "$OUTD/overlap8b.trace.json" --force | tee "$W/overlap8b.bench"
    local rc=$?
    rm -f "$W/l8b.tier"
    # the streamed step's timeline as a picture (docs/: the trace of one step, IO and compute on their tracks)
    [ $rc = 0 ] && "$T" trace "$OUTD/overlap8b.trace.json" --step 1 -o "$OUTD/overlap8b.svg"
    [ $rc = 0 ] && echo "RESULT INFO $(grep -o 'streamed: .*tokens/s' "$W/overlap8b.bench" | tr -s ' ')" ||
        echo "RESULT FAIL exit $rc"
}

# Issue 12's third must-show: llama3.1-8b NF4, rank 16 on all seven projections, T8_TOKENS (32K) tokens a step
# in micro-batches of T8_MICRO (8192) tokens, at each of T8_SEQS (2048 4096): resident, then under --hbm 8G
# (T8_HBM). Passes when every resident run's MFU is at least 40%, every budgeted run reaches 0.9 x its resident
# tokens/s with an overlap efficiency of at least 0.95, and the GPU's peak stays within the budget. T8_* shrink it
# for a rehearsal on the emulated GPU.
T8_PRESET=${T8_PRESET:-llama3.1-8b}
T8_SEQS=${T8_SEQS:-2048 4096}
T8_TOKENS=${T8_TOKENS:-32768}
T8_MICRO=${T8_MICRO:-8192}
T8_HBM=${T8_HBM:-8G}
export T8_PRESET T8_SEQS T8_TOKENS T8_MICRO T8_HBM
c_train8b() {
    set -o pipefail
    prep_small || { echo "RESULT FAIL could not make the token file"; return 1; }
    gemm_rate || { GEMM_PEAK=989; echo "bench kernels could not measure the bf16 GEMM rate: MFU over the H200's dense bf16 peak as specified, $GEMM_PEAK TFLOP/s"; }
    "$T" synth --preset "$T8_PRESET" --quant nf4 --force -o "$W/l8b.tier" | tail -1 || { echo "RESULT FAIL synth"; return 1; }
    "$T" info "$W/l8b.tier" --json >"$W/info8b.json" || { echo "RESULT FAIL info"; return 1; }
    : >"$W/runs.lines"
    : >"$W/runs.tsv"
    local seq shape bad=0 mib
    mib=$(echo "$T8_HBM" | awk '{ n = $1 + 0; print /G/ ? n * 1024 : n }')
    for seq in $T8_SEQS; do
        shape="--device cuda --seq $seq --micro-batch $((T8_MICRO / seq)) --batch-tokens $T8_TOKENS --rank 16 --alpha 32"
        "$T" plan --model "$W/l8b.tier" $shape --hbm "$T8_HBM" | head -4 # (the 4th line: whether each layer is decoded once a pass)
        run_measured "8b-s$seq-resident" "$W/l8b.tier" "$W/info8b.json" "$seq" "$shape" "" || bad=1
        run_measured "8b-s$seq-$T8_HBM" "$W/l8b.tier" "$W/info8b.json" "$seq" "$shape" "--hbm $T8_HBM" || bad=1
        within_budget "$W/8b-s$seq-$T8_HBM.log" "$mib" || { echo "8b-s$seq-$T8_HBM: the GPU's peak is above the budget"; bad=1; }
    done
    # where a resident step's time goes, op by op, at the last shape and one micro-batch a step (TT_PROFILE_OPS:
    # CUDA events around every op; step 2, step 1 being the warm-up); informative, it decides nothing, and is left
    # out when under 45 s of the check's limit remain: OUTDIR/train8b.opprof.txt
    if [ $(($(date +%s) + 45)) -le "${CHECK_DEADLINE:-0}" ]; then
        echo "+ TT_PROFILE_OPS=1 tiertrain train ... $shape --batch-tokens $T8_MICRO --steps 2 --warmup 1"
        TT_PROFILE_OPS=1 "$T" train --model "$W/l8b.tier" --data "$W/c.tok" --out "$W/8b-prof" $shape \
            --batch-tokens "$T8_MICRO" --steps 2 --warmup 1 --eval-every 0 --eval-tokens 1 --save-every 0 --force \
            >"$W/8b-prof.log" 2>&1 || echo "8b-prof: exit $?"
        awk '/^op profile/ { p = 1 } p && !/^op profile/ && !/^  / { p = 0 } p' "$W/8b-prof.log" | tee "$OUTD/train8b.opprof.txt"
    else
        echo "8b-prof: left out, under 45 s of the check's limit remain"
    fi
    rm -f "$W/l8b.tier"
    cp "$W/runs.lines" "$OUTD/train8b.lines" 2>/dev/null
    # runs.tsv: name tokens/s MFU(%) overlap, a resident run's line first, its budgeted run's next
    local verdict
    local mb=40 rb=0.9 ob=0.95 # the bars: MFU (%), budgeted / resident tokens/s, overlap
    [ "$GPU_CHECK_BARS" = 0 ] && mb=0 rb=0 ob=0
    verdict=$(awk -v bad=$bad -v mb=$mb -v rb=$rb -v ob=$ob '
        $1 ~ /-resident$/ { r = $2; m = $3; if (m + 0 < mb) { bad = 1; why = why " " $1 " MFU " m "% < " mb "%;" }; next }
        { if (r == "" || $2 + 0 < rb * r) { bad = 1; why = why sprintf(" %s %.2f x resident < %g;", $1, r ? $2 / r : 0, rb) }
          if ($4 + 0 < ob) { bad = 1; why = why " " $1 " overlap " $4 " < " ob ";" }
          ratio = ratio sprintf(" %s %.2f x resident;", $1, r ? $2 / r : 0) }
        END { printf "%s%s", bad ? "FAIL" : "PASS", bad ? why : ratio }' "$W/runs.tsv")
    echo "RESULT $verdict ${TT_CUDA_ATTN:+(TT_CUDA_ATTN=$TT_CUDA_ATTN) }$(paste -sd';' "$W/runs.lines" | sed 's/;/; /g')"
}

c_gen() {
    prep_small || { echo "RESULT FAIL could not make the small model"; return 1; }
    local i h same=identical
    for i in 1 2 3 4 5 6 7 8; do echo "{\"prompt\": \"$(sed -n "$((i * 37))p" tools/demo-data/nlp-corpus-slice.txt | awk '{ for (i = 1; i <= 8 && i <= NF; i++) printf "%s%s", (i > 1 ? " " : ""), $i }' | tr -d '\"\\\\')\"}"; done >"$W/p.jsonl"
    G="--prompts $W/p.jsonl -n 32 --batch 8 --act-dtype f32"
    "$T" generate --model "$W/small.tier" $G --device cpu -o "$W/gcpu.jsonl" || { echo "RESULT FAIL cpu run"; return 1; }
    "$T" generate --model "$W/small.tier" $G --device cuda -o "$W/gres.jsonl" || { echo "RESULT FAIL cuda run"; return 1; }
    h=$("$T" generate --model "$W/small.tier" $G --device cuda --hbm 1M 2>&1 | sed -n 's/.*needs --hbm \([0-9.]*\) \([KMG]\)iB.*/\1 \2/p' |
        awk '{ m = $2 == "G" ? 1024 : $2 == "K" ? 1 / 1024 : 1; printf "%.2f", int($1 * m * 100 + 0.999) / 100 }')
    [ -n "$h" ] || { echo "RESULT FAIL no smallest --hbm"; return 1; }
    gpumem_peak "$T" generate --model "$W/small.tier" $G --device cuda --hbm "${h}M" -o "$W/gstr.jsonl" || {
        echo "RESULT FAIL streamed run"; return 1; }
    [ "$(sed 's/"seconds":[^,]*,//' "$W/gres.jsonl")" = "$(sed 's/"seconds":[^,]*,//' "$W/gstr.jsonl")" ] || same=different
    local agree
    agree=$(paste -d'\n' <(sed 's/"seconds":[^,]*,//' "$W/gcpu.jsonl") <(sed 's/"seconds":[^,]*,//' "$W/gres.jsonl") |
        awk 'NR % 2 { a = $0; next } { n++; if (a == $0) k++ } END { printf "%d of %d", k, n }')
    "$T" bench generate --model "$W/small.tier" --device cuda $GEN_BENCH || { echo "RESULT FAIL bench exit $?"; return 1; }
    if [ "$same" = identical ]; then
        echo "RESULT PASS streamed at --hbm ${h}M == resident; CUDA == CPU completions: $agree"
    else
        echo "RESULT FAIL streamed at --hbm ${h}M differs from resident; CUDA == CPU completions: $agree"
    fi
}

# transformers + PEFT against tiertrain on an odd-shaped model (tools/hf_crosscheck.py)
# (a check reads what its commands printed from its own copy: the check's output file, hf.out, is written by run's
# tee, which may not have read the last lines yet)
c_hf() {
    PYTHONUNBUFFERED=1 python3 tools/hf_crosscheck.py --tiertrain "$T" --device cuda ${TORCH_DEVICE:+--torch-device "$TORCH_DEVICE"} \
        $HF_FLAGS 2>&1 | tee "$W/hf.py.out"
    local rc=${PIPESTATUS[0]}
    [ $rc = 0 ] && echo "RESULT PASS $(tail -1 "$W/hf.py.out")" || echo "RESULT FAIL exit $rc"
}

# transformers + PEFT at train8b's shapes (tools/peer_peft.py), and the same as QLoRA (NF4 through bitsandbytes)
# where tools/peer_libs.sh's build/pylib was carried along
c_peer() {
    local P="tools/peer_peft.py $PEER_FLAGS${TORCH_DEVICE:+ --device $TORCH_DEVICE}" rc rc4=skipped
    PYTHONUNBUFFERED=1 gpumem_peak python3 $P 2>&1 | tee "$W/peer.py.out"
    rc=${PIPESTATUS[0]}
    if [ -d build/pylib/bitsandbytes ]; then
        PYTHONPATH=$PWD/build/pylib${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 gpumem_peak python3 $P --quant nf4 2>&1 |
            tee -a "$W/peer.py.out"
        rc4=${PIPESTATUS[0]}
    else
        echo "no build/pylib/bitsandbytes (tools/peer_libs.sh, carried along): the QLoRA peer is skipped"
    fi
    local figs
    figs=$(grep -o '^peer[a-z ]* seq [0-9]*: .* tokens/s' "$W/peer.py.out" | sed 's/:.*, \([0-9]* tokens\/s\)/: \1/' |
        paste -sd';' | sed 's/;/; /g')
    if [ $rc = 0 ] && { [ "$rc4" = 0 ] || [ "$rc4" = skipped ]; }; then echo "RESULT INFO $figs (QLoRA: ${rc4/0/run})"
    else echo "RESULT FAIL exit $rc, QLoRA $rc4; $figs"; fi
}

# ---- the 70B headline (issue 13): only when named, e.g. `GPU_CHECK_BUDGET=590 bash tools/gpu_check.sh $OUT p70`
# and, in a second call, `... u70`. G70_* shrink them for a rehearsal (the emulated GPU: G70_PRESET=tiny ...).
G70_PRESET=${G70_PRESET:-llama3.1-70b}
G70_SEQ=${G70_SEQ:-4096}
G70_TOKENS=${G70_TOKENS:-32768}
G70_BUDGETS=${G70_BUDGETS:-20G 8G 4G}
G70_PHOST=${G70_PHOST:-100G} # the pruned runs' host budget (their plans take 41-57 GiB; MemAvailable may start low)
G70_UHBM=${G70_UHBM:-20G}
G70_UHOST=${G70_UHOST:-33G}  # unpruned 70B, seq 4096, 32K tokens: staging, embedding, spills: 32.8 GiB, no layer cache
G70_CHOST=${G70_CHOST:-80G}  # ... and every layer cached (65.3 GiB; given: MemAvailable may start low there)
G70_GEMM=${G70_GEMM:-} # bench kernels' shape flags for the rate (default: its 8192 x 28672 x 8192)
export G70_PRESET G70_SEQ G70_TOKENS G70_BUDGETS G70_PHOST G70_UHBM G70_UHOST G70_CHOST G70_GEMM
# MFU of a run: (6 x the parameters that multiply (layers and lm_head) + causal attention, 6 x heads x head_dim x
# seq a layer) FLOPs per token x tokens/s over the bf16 GEMM rate bench kernels measured (TFLOP/s)
mfu() { # INFO_JSON SEQ TOKENS_PER_S PEAK_TFLOPS
    python3 -c 'import json, sys
i = json.load(open(sys.argv[1])); seq, tps, peak = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
p = i["params"]["layers"] + i["params"]["lm_head"]
att = sum(6 * l["n_heads"] * i["config"]["head_dim"] * seq for l in i["layers"])
print("%.1f%%" % (100 * (6 * p + att) * tps / (peak * 1e12)))' "$@"
}
# one measured training run: NAME MODEL INFO_JSON SEQ SHAPE_FLAGS BUDGET_FLAGS [TRACE_FILE] -> NAME's line (in
# $W/runs.lines): the second step's tokens/s, MFU over $GEMM_PEAK, overlap, the GPU's peaks, the host arena's peak
# (train's summary) and the bytes a step reads from the disk (the plan's); and "NAME tokens/s MFU overlap" in runs.tsv
run_measured() {
    local name=$1 model=$2 info=$3 seq=$4 shape=$5 budget=$6 trace=${7:-}
    echo "+ tiertrain train --model $(basename "$model") --data c.tok $shape $budget --steps 2 --warmup 1 --eval-every 0 --eval-tokens 1 --save-every 0 --json${trace:+ --trace $(basename "$trace")}"
    gpumem_peak "$T" train --model "$model" --data "$W/c.tok" --out "$W/$name" $shape $budget --steps 2 --warmup 1 \
        --eval-every 0 --eval-tokens 1 --save-every 0 --json --force ${trace:+--trace "$trace"} >"$W/$name.log" 2>&1
    local rc=$? last tps ov held host peak io m
    cat "$W/$name.log"
    [ $rc = 0 ] || { echo "$name: exit $rc"; return 1; }
    last=$(grep '"step":2,' "$W/$name.log" | tail -1)
    tps=$(echo "$last" | grep -o '"tokens_per_s":[0-9.]*' | cut -d: -f2)
    ov=$(echo "$last" | grep -o '"overlap_eff":[0-9.]*' | cut -d: -f2)
    held=$(grep -o '"gpu_bytes_in_use":[0-9]*' "$W/$name.log" | head -1 | cut -d: -f2)
    "$T" plan --model "$model" $shape $budget --json >"$W/$name.plan"
    host=$(grep -o '"host_arena_peak":[0-9]*' "$W/$name.log" | tail -1 | cut -d: -f2)
    io=$(grep -o '"io_bytes_step":[0-9]*' "$W/$name.plan" | cut -d: -f2)
    peak=$(grep -o 'peak GPU memory used[^:]*: [0-9]* MiB' "$W/$name.log" | tail -1 | grep -o '[0-9]* MiB$')
    m=$(mfu "$info" "$seq" "$tps" "$GEMM_PEAK")
    echo "$name ${tps:-0} ${m%\%} ${ov:-0}" >>"$W/runs.tsv"
    echo "$name: $tps tokens/s, MFU $m, overlap $ov, held $((${held:-0} >> 20)) MiB (NVML), peak $peak, host arena $((${host:-0} >> 20)) MiB, read a step $(awk -v b="${io:-0}" 'BEGIN { printf "%.1f", b / 1048576 }') MiB (plan)" |
        tee -a "$W/runs.lines"
}
# one run of the 70B checks: NAME MODEL BUDGET_FLAGS [TRACE_FILE]
run70() {
    run_measured "$1" "$2" "$W/info70.json" "$G70_SEQ" \
        "--device cuda --seq $G70_SEQ --micro-batch 1 --batch-tokens $G70_TOKENS --rank 16 --alpha 32" "$3" "${4:-}"
}
# the bf16 GEMM rate (TFLOP/s) bench kernels measures in this call: MFU's denominator -> GEMM_PEAK
gemm_rate() {
    "$T" bench kernels --device cuda --attn-seq 0 --iters 5 --copy-mb 0 $G70_GEMM --json >"$W/peak.json" || return 1
    GEMM_PEAK=$(tail -1 "$W/peak.json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["gemm bf16 (cuBLAS/BLAS)"])')
    echo "bf16 GEMM rate for MFU: $GEMM_PEAK TFLOP/s"
}
g70_prep() { # the token file and the bf16 GEMM rate (MFU's denominator)
    prep_small && gemm_rate || return 1
    : >"$W/runs.lines"
    : >"$W/runs.tsv"
}

# llama3.1-70b pruned 0.85, NF4, every layer: under each of G70_BUDGETS; 8G's trace and its second step drawn
c_p70() {
    set -o pipefail
    g70_prep || { echo "RESULT FAIL could not measure the GEMM rate or make the token file"; return 1; }
    "$T" synth --preset "$G70_PRESET" --prune-ratio 0.85 --quant nf4 --force -o "$W/p70.tier" | tail -1 ||
        { echo "RESULT FAIL synth"; return 1; }
    "$T" info "$W/p70.tier" --json >"$W/info70.json" || { echo "RESULT FAIL info"; return 1; }
    local h bad=0 trace_flag
    for h in $G70_BUDGETS; do
        trace_flag=
        [ "$h" = 8G ] && trace_flag=$OUTD/p70-8g.trace.json
        run70 "p70-$h" "$W/p70.tier" "--hbm $h --host $G70_PHOST" $trace_flag || bad=1
        within_budget "$W/p70-$h.log" "$(echo "$h" | awk '{ n = $1 + 0; print /G/ ? n * 1024 : n }')" ||
            { echo "p70-$h: the GPU's peak is above the budget"; bad=1; }
    done
    [ -f "$OUTD/p70-8g.trace.json" ] && "$T" trace "$OUTD/p70-8g.trace.json" --step 2 -o "$OUTD/p70-8g-step2.svg"
    [ -f "$OUTD/p70-8g.trace.json" ] && xz -T0 -f "$OUTD/p70-8g.trace.json" # ~1M events: too big to come back whole
    rm -f "$W/p70.tier"
    cp "$W/runs.lines" "$OUTD/p70.lines" 2>/dev/null
    echo "RESULT $([ $bad = 0 ] && echo INFO || echo FAIL) ${TT_CUDA_ATTN:+(TT_CUDA_ATTN=$TT_CUDA_ATTN) }$(paste -sd';' "$W/runs.lines" | sed 's/;/; /g')"
}

# the unpruned llama3.1-70b in NF4 under G70_UHBM: layers cached in host memory (--host G70_CHOST), then read
# from the disk every step (--host G70_UHOST: the plan keeps no layer cache), beside bench io on the same file
c_u70() {
    set -o pipefail
    g70_prep || { echo "RESULT FAIL could not measure the GEMM rate or make the token file"; return 1; }
    "$T" synth --preset "$G70_PRESET" --quant nf4 --force -o "$W/u70.tier" | tail -1 || { echo "RESULT FAIL synth"; return 1; }
    "$T" info "$W/u70.tier" --json >"$W/info70.json" || { echo "RESULT FAIL info"; return 1; }
    local bad=0 io
    "$T" bench io "$W/u70.tier" | tee "$W/u70-io.log" || bad=1
    io=$(grep -o '[0-9.]* GB/s' "$W/u70-io.log" | head -1)
    run70 u70-cached "$W/u70.tier" "--hbm $G70_UHBM --host $G70_CHOST" || bad=1
    run70 u70-disk "$W/u70.tier" "--hbm $G70_UHBM --host $G70_UHOST" || bad=1
    rm -f "$W/u70.tier"
    cp "$W/runs.lines" "$OUTD/u70.lines" 2>/dev/null
    echo "RESULT $([ $bad = 0 ] && echo INFO || echo FAIL) ${TT_CUDA_ATTN:+(TT_CUDA_ATTN=$TT_CUDA_ATTN) }bench io ${io:-?}; $(paste -sd';' "$W/runs.lines" | sed 's/;/; /g')"
}

export -f gpumem_peak within_budget cs_result prep_small min_hbm streams losses c_env c_ops c_ops_mc c_cpu_cuda c_stream c_train_mc c_kernels c_gen c_overlap8b c_peer c_train8b c_hf \
    mfu run_measured run70 gemm_rate g70_prep c_p70 c_u70 c_prof

log "gpu_check: $(date -u '+%Y-%m-%d %H:%M UTC'), bundle $(cat "$W/gpu/BUILD" 2>/dev/null || echo 'without BUILD'), work dir $W"
log "gpu_check: invoked as: ${QUICK:+QUICK=$QUICK }GPU_CHECK_BUDGET=$BUDGET${TT_CUDA_ATTN:+ TT_CUDA_ATTN=$TT_CUDA_ATTN} bash tools/gpu_check.sh $*"
run env 30 c_env
run ops 90 c_ops
run cpu-cuda 120 c_cpu_cuda
run stream 90 c_stream
run kernels 60 c_kernels
run train8b 300 c_train8b
run peer 300 c_peer
run hf 120 c_hf
run ops-mc 120 c_ops_mc
run train-mc 150 c_train_mc
run gen 90 c_gen
run overlap8b 150 c_overlap8b
run prof 120 c_prof
# only when named (each fills most of a call)
[ "$ONLY" != all ] && run p70 560 c_p70
[ "$ONLY" != all ] && run u70 560 c_u70

log ""
log "==== summary ($FAILED failed, $(( $(date +%s) - START ))s) ===="
cat "$SUM"
[ -n "$SKIPPED" ] && log "skipped:$SKIPPED"
exit "$FAILED"
