#!/bin/bash
# tools/gpu_rehearse.sh — tools/gpu_check.sh end to end on the emulated GPU, before a bundle is carried to the
# rare GPU machine:
#
#   bash tools/gpu_rehearse.sh [OUTDIR]      (default build/gpu-rehearsal; GPU_REHEARSE_PYTHON: a python3 with
#                                             torch, transformers and peft for the peer and hf checks;
#                                             GPU_REHEARSE_CALLS=1-quick,4-p70: only those calls)
#
# It builds the emulated binaries (build/emu/tiertrain and tests/test_cuda_ops: the CUDA sources on the CPU,
# tests/cuda_emu/), packs them as a bundle whose BUILD names this tree's sources (so gpu_check takes it), puts
# fakes first on PATH (nvidia-smi naming one GPU with 0 MiB used; compute-sanitizer running the program under
# the emulator's racecheck, TT_EMU_RACECHECK=1; python3 the interpreter above), shrinks every check with
# gpu_check's knobs (the tiny preset, a few steps, small kernels, the smallest --hbm the planner names) and
# runs the calls the GPU machine runs (gpu_check.sh's header: QUICK=1; train8b,peer,hf; ops-mc,...,prof; p70;
# u70), then one under a small budget where a check is skipped (SKIP) and one cut (CUT), then ops and kernels
# with cuDNN missing and with cuDNN refusing a shape (the emulated cuDNN's TT_EMU_CUDNN). Each call's
# gpu_check.log and summary.txt land in OUTDIR/N-NAME/; the tables are printed last. Exit status: the number
# of failed checks plus the calls whose table is not as expected (a row with a "?", a budget call without its
# CUT and SKIP rows); 2 where it could not start.
#
# What it proves: every flag gpu_check passes exists in the current binary, every figure it parses from the
# binary's output is found (a '?' in a row fails the call), its logs, tables, exit statuses and budget logic
# work, the peer's and hf's Python scripts run to their end (torch on the CPU, tiertrain on the emulated GPU).
# It cannot show: speed (the figures are the emulator's: the speed bars are off, GPU_CHECK_BARS=0), a real
# GPU's memory peaks (the fake nvidia-smi reports 0 MiB), the real shapes (8B, 70B, ops --real), real cuDNN
# (a stand-in), compute-sanitizer (racecheck stands in for memcheck), ncu (absent: prof says so) and
# bitsandbytes (QLoRA).
# About 5 minutes on 2 cores (hf, train8b and stream the longest).
set -u
cd "$(dirname "$0")/.."
OUTD=${1:-build/gpu-rehearsal}
PY=${GPU_REHEARSE_PYTHON:-$(command -v python3)}
t0=$(date +%s)
make -s -j2 build/emu/tiertrain build/emu/tests/test_cuda_ops >/dev/null || { echo "gpu_rehearse: the emulated build failed"; exit 2; }
E=build/emu/tiertrain
R=$(mktemp -d /tmp/gpu-rehearse.XXXXXX)
trap 'rm -rf "$R"' EXIT
rm -rf "$OUTD"/[0-9]-* # an earlier rehearsal's calls, nothing else of OUTDIR
mkdir -p "$OUTD" "$R/bin" "$R/b/gpu"

# ---- the bundle: the emulated binaries, with this tree's sources hash ------------------
cp "$E" build/emu/tests/test_cuda_ops "$R/b/gpu/"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
echo "built $(date -u '+%Y-%m-%d %H:%M UTC') from commit $commit for the emulated GPU (tools/gpu_rehearse.sh)," \
    "sources $(sh tools/src_hash.sh)" >"$R/b/gpu/BUILD"
tar -C "$R/b" -cJf "$R/bundle.tar.xz" gpu || exit 2

# ---- the fakes ---------------------------------------------------------------------
cat >"$R/bin/nvidia-smi" <<'EOF'
#!/bin/sh
# one emulated GPU, 0 MiB used (gpu_check's peaks read 0)
case "$*" in
*-L*) echo "GPU 0: Emulated GPU (tools/gpu_rehearse.sh) (UUID: GPU-00000000-0000-0000-0000-000000000000)" ;;
*memory.used*) echo 0 ;;
*noheader*) echo "Emulated GPU, emulated" ;;
*) printf 'name, memory.total [MiB], driver_version, clocks.max.sm [MHz]\nEmulated GPU, 143771 MiB, emulated, 1980 MHz\n' ;;
esac
EOF
cat >"$R/bin/compute-sanitizer" <<'EOF'
#!/bin/sh
# the program under the emulated GPU's racecheck (its every load and store is checked anyway), in
# compute-sanitizer's words
ec=1
while [ $# -gt 0 ]; do
    case $1 in
    --error-exitcode) ec=$2; shift 2 ;;
    --tool | --print-limit) shift 2 ;;
    --*) shift ;;
    *) break ;;
    esac
done
echo "========= COMPUTE-SANITIZER (fake: the emulated GPU's racecheck, TT_EMU_RACECHECK=1)"
TT_EMU_RACECHECK=1 "$@"
rc=$?
[ $rc = 0 ] && { echo "========= ERROR SUMMARY: 0 errors"; exit 0; }
echo "========= Program hit an error (exit $rc)"
echo "========= ERROR SUMMARY: 1 error"
exit "$ec"
EOF
chmod +x "$R/bin/nvidia-smi" "$R/bin/compute-sanitizer"
# a wrapper, not a link: a virtual environment's interpreter finds its packages from the path it was run by
[ -n "$PY" ] && printf '#!/bin/sh\nexec "%s" "$@"\n' "$PY" >"$R/bin/python3" && chmod +x "$R/bin/python3"
export PATH=$R/bin:$PATH
PEERHF=1
python3 -c 'import torch, transformers, peft' 2>/dev/null ||
    { PEERHF=; echo "gpu_rehearse: ${PY:-no python3} lacks torch, transformers or peft: peer and hf left out (GPU_REHEARSE_PYTHON)"; }

# ---- the sizes: the tiny preset, at the smallest --hbm / --host its plans name -----------------------
# need WHAT MODEL FLAGS...: the planner's "needs --WHAT N XiB" for a budget of 1M, in MiB rounded up ("NM")
need() {
    local what=$1 m=$2
    shift 2
    "$E" plan --model "$m" "$@" 2>&1 | sed -n "s/.*needs --$what \\([0-9.]*\\) \\([KMG]\\)iB.*/\\1 \\2/p" |
        awk '{ m = $2 == "G" ? 1024 : $2 == "K" ? 1 / 1024 : 1; v = $1 * m; printf "%dM", v == int(v) ? v : int(v) + 1 }'
}
"$E" synth --preset tiny --quant nf4 -o "$R/tiny.tier" >/dev/null &&
    "$E" synth --preset tiny --prune-ratio 0.85 --quant nf4 -o "$R/ptiny.tier" >/dev/null || exit 2
L="--device cuda --rank 16 --alpha 32"
T8=$(need hbm "$R/tiny.tier" $L --seq 32 --micro-batch 4 --batch-tokens 256 --hbm 1M)
T8b=$(need hbm "$R/tiny.tier" $L --seq 64 --micro-batch 2 --batch-tokens 256 --hbm 1M)
[ "${T8b%M}" -gt "${T8%M}" ] && T8=$T8b
G70="$L --seq 64 --micro-batch 1 --batch-tokens 128"
PH=$(need hbm "$R/ptiny.tier" $G70 --hbm 1M)
UH=$(need hbm "$R/tiny.tier" $G70 --hbm 1M)
UHOST=$(need host "$R/tiny.tier" $G70 --hbm "$UH" --host 1M)
for v in T8 PH UH UHOST; do
    [ -n "${!v}" ] || { echo "gpu_rehearse: no 'needs --hbm/--host' figure from tiertrain plan ($v)"; exit 2; }
done
export GPU_CHECK_BUNDLE=$R/bundle.tar.xz GPU_CHECK_WORK=$R/work GPU_CHECK_ATTN_FILE=$R/attn
export GPU_CHECK_BUDGET=100000 GPU_CHECK_SLOW=10 GPU_CHECK_BARS=0
export OPS_REAL= KERN_FLAGS="--m 64 --n 128 --k 64 --iters 1 --copy-mb 1 --attn-seq 128 --heads 2 --kv-heads 1 --head-dim 64"
export SMALL_PRESET=tiny SMALL_STEPS=4 SMALL_HBM_MARGIN=1 SMALL_TRAINF="--eval-tokens 64" \
    SMALL_PLANF="--seq 32 --micro-batch 2 --batch-tokens 64 --rank 16 --alpha 32 --dropout 0.05 --act-dtype f32"
export GEN_BENCH="--batch 1,2 --rounds 1 --prompt-tokens 8 --new-tokens 8"
export OV8_PRESET=tiny OV8_FLAGS="--hbm $UH --seq 64 --micro-batch 1 --batch-tokens 128"
export PEER_FLAGS="--preset small --layers 2 --seq 32,64 --batch-tokens 128 --micro-tokens 64 --rank 16 --alpha 32 --steps 1" \
    TORCH_DEVICE=cpu HF_FLAGS="--steps 6"
export T8_PRESET=tiny T8_SEQS="32 64" T8_TOKENS=256 T8_MICRO=128 T8_HBM=$T8
export G70_PRESET=tiny G70_SEQ=64 G70_TOKENS=128 G70_BUDGETS="8G $((${PH%M} + 1))M $PH" G70_PHOST=64M \
    G70_UHBM=$UH G70_UHOST=$UHOST G70_CHOST=64M G70_GEMM="--m 64 --n 64 --k 64 --iters 1"
echo "gpu_rehearse: the emulated bundle ($(cat "$R/b/gpu/BUILD")); train8b --hbm $T8, p70 $G70_BUDGETS, u70 --hbm $UH --host $UHOST / 64M"

# ---- the calls -----------------------------------------------------------------------
BAD=0
call() { # NAME CHECKS [VAR=VALUE...]: one gpu_check call into OUTDIR/NAME
    local name=$1 checks=$2 rc
    shift 2
    case ",${GPU_REHEARSE_CALLS:-$name}," in *",$name,"*) ;; *) return 0 ;; esac
    echo "gpu_rehearse: call $name: ${*:+$* }bash tools/gpu_check.sh $OUTD/$name $checks ($(($(date +%s) - t0))s in)"
    env "$@" bash tools/gpu_check.sh "$OUTD/$name" "$checks" >"$OUTD/$name.out" 2>&1
    rc=$?
    BAD=$((BAD + rc))
    [ -s "$OUTD/$name/summary.txt" ] || { echo "gpu_rehearse: call $name wrote no summary (exit $rc)"; tail -5 "$OUTD/$name.out"; BAD=$((BAD + 1)); }
    grep -q '?' "$OUTD/$name/summary.txt" 2>/dev/null &&
        { echo "gpu_rehearse: call $name: a figure not found ('?') in its table"; BAD=$((BAD + 1)); }
}
call 1-quick all QUICK=1
if [ -n "$PEERHF" ]; then call 2-speed train8b,peer,hf; else call 2-speed train8b; fi
call 3-rest ops-mc,train-mc,gen,overlap8b,prof
call 4-p70 p70
call 5-u70 u70
# the budget: stream (limit 90 s, first) would be cut below 60% (54 s) by the under 53 s left (SKIP); kernels
# (limit 60 s) runs while gpu_check's set-up leaves it 36 s or more (17 s of margin), is cut to what is left and at
# its real shape cannot end in that time (CUT)
call 6-budget kernels,stream GPU_CHECK_BUDGET=53 GPU_CHECK_SLOW=1 KERN_FLAGS=
if [ -d "$OUTD/6-budget" ] && ! { grep -q '^kernels *CUT ' "$OUTD/6-budget/summary.txt" &&
    grep -q '^stream *SKIP ' "$OUTD/6-budget/summary.txt"; }; then
    echo "gpu_rehearse: the budget call's table is not kernels CUT, stream SKIP"
    BAD=$((BAD + 1))
fi
# cuDNN's other answers (the emulated cuDNN's TT_EMU_CUDNN), without call 1's choice of attention: missing (ops
# says so, kernels finds it did not run and keeps the kernels), and refusing one sequence length (ops names it)
call 7-cudnn-missing ops,kernels TT_EMU_CUDNN=missing GPU_CHECK_ATTN_FILE="$R/attn.7"
call 8-cudnn-refused ops TT_EMU_CUDNN=refuse:200 GPU_CHECK_ATTN_FILE="$R/attn.8"

for d in "$OUTD"/[0-9]-*/; do # this rehearsal's calls (OUTDIR may hold other things)
    echo ""
    echo "== $(basename "$d") ($(sed -n 's/^==== summary (\(.*\)) ====$/\1/p' "$d/gpu_check.log"))"
    cat "$d/summary.txt"
done
echo ""
echo "gpu_rehearse: $(($(date +%s) - t0))s; $([ $BAD = 0 ] && echo "every check as expected" || echo "$BAD failed or unexpected"); logs in $OUTD/*/gpu_check.log"
exit "$BAD"
