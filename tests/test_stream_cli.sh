#!/bin/sh
# tests/test_stream_cli.sh — layer streaming through the commands, on the tiny
# preset with f32 weights (layers of 2.9 MB, so the smallest --hbm, rounded up
# to a MiB by the planner's message, still streams): `plan` refuses a too-small
# --hbm in one line naming the smallest and prints the memory table / JSON;
# `train` at that smallest budget streams, shows io / compute / overlap per
# step, writes a trace, and gives a byte-identical adapter to resident
# training; `bench overlap` ends with a JSON line; bad budget flags are usage
# errors; with no thread to be had (ulimit -u), eval and verify fail in one line.
. tests/lib.sh
setup stream

"$T" synth --preset tiny --quant f32 -o "$dir/m.tier" >/dev/null || fail "synth"
awk 'NR <= 400' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" >/dev/null || fail "tokenize"
SHAPE="--seq 16 --micro-batch 1 --batch-tokens 64"

# "... needs --hbm 9.00 MiB; ..." in $dir/err -> 9.00MiB (a size the flags accept)
needed_hbm() { sed -n 's/.*needs --hbm \([0-9.]*\) \([KMGT]iB\).*/\1\2/p' "$dir/err"; }

# plan: a too-small budget is one line naming the smallest; unlimited prints the table; --json one line.
expect_error "plan: --hbm too small" "needs --hbm [0-9.]* MiB" "$T" plan --model "$dir/m.tier" $SHAPE --hbm 1M
bench_hbm=$(needed_hbm)
[ -n "$bench_hbm" ] || fail "plan: no smallest budget in: $(cat "$dir/err")"
expect_ok "plan: unlimited" "$T" plan --model "$dir/m.tier" $SHAPE --hbm 0
grep -q "layer slots 4 of 4" "$dir/out" && grep -q "^ *total " "$dir/out" ||
    { fail "plan: no memory table with layer slots and total"; cat "$dir/out"; }
expect_ok "plan --json" "$T" plan --model "$dir/m.tier" $SHAPE --json
[ "$(wc -l <"$dir/out")" -eq 1 ] && grep -q '^{.*"slots":4,.*}$' "$dir/out" ||
    { fail "plan --json: expected one JSON line with \"slots\""; cat "$dir/out"; }
expect_ok "plan: the smallest budget" "$T" plan --model "$dir/m.tier" $SHAPE --hbm "$bench_hbm"
grep -q "layer slots [23] of 4" "$dir/out" || { fail "plan --hbm $bench_hbm does not stream"; cat "$dir/out"; }
# the predicted step needs both rates where layers are read every step (no host cache at the smallest --host):
# one alone gives no time, not the other side's 0 s
expect_error "plan: --host too small" "it needs --host [0-9.]* MiB" "$T" plan --model "$dir/m.tier" $SHAPE --hbm "$bench_hbm" --host 1K
small_host=$(sed -n 's/.*it needs --host \([0-9.]*\) \([KMGT]iB\).*/\1\2/p' "$dir/err")
BUDGETS="--hbm $bench_hbm --host $small_host"
expect_ok "plan: --io-gbps and --gflops" "$T" plan --model "$dir/m.tier" $SHAPE $BUDGETS --io-gbps 2 --gflops 50
grep -q "^NVMe reads: .* in the first step, [1-9][0-9.]* MiB per step after" "$dir/out" &&
    grep -q "^predicted step: [0-9.]* s (IO [0-9.]* s at 2.00 GB/s, compute [0-9.]* s at 50.0 GFLOP/s" "$dir/out" ||
    { fail "plan: no NVMe reads per step or no predicted step"; cat "$dir/out"; }
# a negative rate is no measurement: refused, naming the flag (it was taken as "not given")
expect_error "plan: --io-gbps -1" "--io-gbps must be a measured rate" "$T" plan --model "$dir/m.tier" $SHAPE --io-gbps -1
expect_error "plan: --gflops -5" "--gflops must be a measured rate" "$T" plan --model "$dir/m.tier" $SHAPE --gflops -5
for rate in "--io-gbps 2" "--gflops 50"; do
    expect_ok "plan: $rate alone" "$T" plan --model "$dir/m.tier" $SHAPE $BUDGETS $rate
    grep -q "^predicted step: give --io-gbps and --gflops" "$dir/out" || { fail "plan: a step time from $rate alone"; cat "$dir/out"; }
done

# plan --device cuda works on any machine: without a usable GPU with the
# documented estimate of what CUDA holds outside the arena, which the
# smallest --hbm includes (the CPU's does not).
expect_ok "plan --device cuda" "$T" plan --model "$dir/m.tier" $SHAPE --device cuda --hbm 0
grep -q "^outside the arena: " "$dir/out" && grep -q "^  attention scratch " "$dir/out" && grep -q "^device total: " "$dir/out" ||
    { fail "plan --device cuda: no outside-the-arena line"; cat "$dir/out"; }
expect_error "plan --device cuda: smallest" "needs --hbm [0-9.]* MiB" "$T" plan --model "$dir/m.tier" $SHAPE --device cuda --hbm 1M
cuda_hbm=$(needed_hbm)
awk -v c="${cuda_hbm%MiB}" -v h="${bench_hbm%MiB}" 'BEGIN { exit !(c >= h + 512) }' ||
    fail "plan --device cuda: smallest --hbm $cuda_hbm does not add CUDA's context to the CPU's $bench_hbm"
# --preset describes the store synth writes: the same plan (JSON) as for the file, but for its name
expect_ok "plan --preset" "$T" plan --preset tiny --quant f32 $SHAPE --hbm "$bench_hbm" --json
sed 's/"model":"[^"]*"//; s/"store":"[^"]*"//' "$dir/out" >"$dir/p1"
expect_ok "plan --model (the same)" "$T" plan --model "$dir/m.tier" $SHAPE --hbm "$bench_hbm" --json
sed 's/"model":"[^"]*"//; s/"store":"[^"]*"//' "$dir/out" >"$dir/p2"
cmp -s "$dir/p1" "$dir/p2" || { fail "plan --preset tiny differs from the synth store's plan"; diff "$dir/p1" "$dir/p2"; }
# plan --full: LoRAM's pruned 70B (bf16) with GaLore fits 20 GB of GPU memory, streamed; it states the host memory
# and the NVMe traffic; a budget below its smallest plan is refused naming it
F70="--full --optim galore --preset llama3.1-70b --prune-ratio 0.85 --quant bf16 --device cuda --seq 4096 --micro-batch 1 --batch-tokens 16384"
expect_ok "plan --full 70B" "$T" plan $F70 --hbm 20G
grep -q "^device total: .* of --hbm 20.00 GiB" "$dir/out" && grep -q "^  host memory: .* pinned; NVMe: .* read once at the start, 0 B per step" "$dir/out" &&
    grep -q "GaLore rank 128" "$dir/out" || { fail "plan --full 70B: no budget, host memory or NVMe lines"; cat "$dir/out"; }
expect_error "plan --full 70B, 8G" "needs --hbm" "$T" plan $F70 --hbm 8G
# plan --full --json is one JSON object, as plan --json: the plan's fields, then "teacher" and "full" (the
# teacher's path quoted)
ln -s m.tier "$dir/te\"acher.tier"
expect_ok "plan --full --teacher --json" "$T" plan --full --stream --model "$dir/m.tier" --teacher "$dir/te\"acher.tier" $SHAPE --json
[ "$(wc -l <"$dir/out")" -eq 1 ] &&
    grep -q '^{"hbm":.*,"teacher":{"path":".*te\\"acher\.tier",.*,"full":{"mode":"streamed","optim":"adamw",.*}}$' "$dir/out" ||
    { fail "plan --full --teacher --json: expected one JSON object with \"teacher\" and \"full\""; cat "$dir/out"; }
if command -v python3 >/dev/null; then # not among the project's Debian packages: checked where it is installed
    python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); assert j["teacher"]["path"].endswith("te\"acher.tier") and j["full"]["master_bytes"] > 0' \
        "$dir/out" || fail "plan --full --teacher --json: not valid JSON"
fi
expect_error "plan: --model and --preset" "give --model FILE or --preset NAME" "$T" plan --model "$dir/m.tier" --preset tiny
# a LoRA state that does not fit (rank 1 would): the refusal names --rank and the largest that fits, not the
# batch shape; when the rank is not the cause the message stays the batch shape's
expect_error "plan: --rank too large for --host" "--rank 4096 is too large for tiny: .* does not fit --host 100.00 MiB.* lower --rank to [0-9]* or less" \
    "$T" plan --preset tiny --rank 4096 --host 100M
r=$(sed -n 's/.*lower --rank to \([0-9]*\) or less.*/\1/p' "$dir/err")
expect_ok "plan: the largest rank that fits" "$T" plan --preset tiny --rank "$r" --host 100M
expect_error "plan: one more does not fit" "--rank $((r + 1)) is too large" "$T" plan --preset tiny --rank $((r + 1)) --host 100M
# ... and the budget that holds the rank as given, which is enough
h=$(sed -n 's/.*or raise --host to \([0-9.]*\) \([KMGT]\)iB$/\1\2/p' "$dir/err")
[ -n "$h" ] || { fail "plan: --rank too large for --host: no --host named"; cat "$dir/err"; }
expect_ok "plan: the --host named for the rank" "$T" plan --preset tiny --rank $((r + 1)) --host "$h"
# train's refusal of the same request says the same, before any step (and creates no --out)
expect_error "train: --rank too large for --host" "--rank 4096 is too large for tiny: .* lower --rank to [0-9]* or less" \
    "$T" train --model "$dir/m.tier" --data "$dir/t.tok" --rank 4096 --host 100M --steps 1 --out "$dir/rank-out"
[ -e "$dir/rank-out" ] && fail "a refused train created its --out"
# distillation: the teacher's plan is held beside the model's, so the model's gets what it leaves of the memory
expect_error "plan --full --teacher: the memory beside the teacher" \
    "(the memory available beside the teacher's plan, which takes [0-9.]* MiB)$" \
    env TT_TEST_MEM_AVAILABLE=60000000 "$T" plan --model "$dir/m.tier" --full --stream --teacher "$dir/m.tier" \
    --seq 16 --batch-tokens 64
# --host given but more than the machine has available now (TT_TEST_MEM_AVAILABLE stands in for MemAvailable): a
# run plans within that memory, as with no --host (a cap; the arena is populated at start); plan keeps the budgets as
# given and notes it. At 30 MiB rank 64 does not fit (~37 MiB at the least) and rank 1 does: the refusal names
# --rank, and the rank it names runs.
expect_ok "plan: --host beyond the memory available is noted" env TT_TEST_MEM_AVAILABLE=1048576 "$T" plan \
    --model "$dir/m.tier" $SHAPE --host 1G --rank 64
grep -q "^  note: it takes [0-9.]* MiB of host memory (with the CPU backend's device arena), more than the 1.00 MiB this machine has available now (MemAvailable): a run here plans within that$" "$dir/out" ||
    { fail "plan: no note of the memory available"; cat "$dir/out"; }
expect_ok "plan --json: exceeds_available" env TT_TEST_MEM_AVAILABLE=1048576 "$T" plan --model "$dir/m.tier" $SHAPE \
    --host 1G --json
grep -q '"exceeds_available":true,' "$dir/out" || { fail "plan --json: exceeds_available not true"; cat "$dir/out"; }
expect_error "train: --host beyond the memory available, --rank too large" "^tiertrain train: --rank 64 is too large for tiny: .* does not fit the memory the machine has available now, where rank 1 does; lower --rank to [0-9]* or less$" \
    env TT_TEST_MEM_AVAILABLE=31457280 "$T" train --model "$dir/m.tier" --data "$dir/t.tok" $SHAPE --host 1G --rank 64 \
    --steps 1 --out "$dir/avail-out"
[ -e "$dir/avail-out" ] && fail "a refused train created its --out"
r=$(sed -n 's/.*lower --rank to \([0-9]*\) or less$/\1/p' "$dir/err")
expect_ok "train: --host beyond the memory available, the rank named ($r)" env TT_TEST_MEM_AVAILABLE=31457280 "$T" train \
    --model "$dir/m.tier" --data "$dir/t.tok" $SHAPE --host 1G --rank "$r" --steps 1 --out "$dir/avail-out"
expect_ok "plan: within the memory available, no note" "$T" plan --model "$dir/m.tier" $SHAPE --host 1G
grep -q "note: it takes" "$dir/out" && fail "plan: a note of the memory available where it fits"
expect_error "plan: --rank too large for --hbm" "--rank 4096 is too large for llama3.1-70b: .* does not fit --hbm 8.00 GiB.* or raise --hbm to [0-9.]* GiB and --host to [0-9.]* GiB$" \
    "$T" plan --preset llama3.1-70b --rank 4096 --hbm 8G --host 100G
hb=$(sed -n 's/.*or raise --hbm to \([0-9.]*\) GiB and .*/\1G/p' "$dir/err")
hh=$(sed -n 's/.* and --host to \([0-9.]*\) GiB$/\1G/p' "$dir/err")
expect_ok "plan: the --hbm and --host named for the rank" "$T" plan --preset llama3.1-70b --rank 4096 --hbm "$hb" --host "$hh"
# train's ranges, the flag named
expect_error "plan: --rank past train's range" "^tiertrain plan: --rank must be 1..4096$" "$T" plan --preset tiny --rank 4097
expect_error "plan: --micro-batch past train's range" "^tiertrain plan: --micro-batch must be 1..65535$" \
    "$T" plan --preset tiny --micro-batch 65536 --seq 2 --batch-tokens 131072
# a smallest --hbm in GiB is named rounded up, so that figure is enough (rounded to the nearest it was 4.6 MiB short
# at seq 4096)
expect_error "plan: --hbm too small for 70b at seq 4096" "needs --hbm [0-9.]* GiB" "$T" plan --preset llama3.1-70b \
    --seq 4096 --micro-batch 1 --batch-tokens 4096 --hbm 1M --host 1T
hb=$(sed -n 's/.*needs --hbm \([0-9.]*\) GiB.*/\1G/p' "$dir/err")
expect_ok "plan: the --hbm named ($hb)" "$T" plan --preset llama3.1-70b --seq 4096 --micro-batch 1 --batch-tokens 4096 \
    --hbm "$hb" --host 1T
expect_error "plan: --hbm too small, whatever the rank" "raise --hbm or lower --micro-batch / --seq" \
    "$T" plan --preset llama3.1-70b --hbm 1G --host 1T
# both budgets too small: one refusal names both, and what it names is enough
expect_error "plan: --hbm and --host too small" "needs --hbm [0-9.]* MiB and --host [0-9.]* MiB; raise both" \
    "$T" plan --preset tiny --hbm 1M --host 1M
hb=$(sed -n 's/.*needs --hbm \([0-9.]*\) MiB and.*/\1M/p' "$dir/err")
hh=$(sed -n 's/.* and --host \([0-9.]*\) MiB;.*/\1M/p' "$dir/err")
expect_ok "plan: the --hbm and --host named" "$T" plan --preset tiny --hbm "$hb" --host "$hh"
# on the CPU backend, whose "device" is host memory too, --hbm is a cap: one larger than the machine's memory plans
# what no --hbm plans (it was refused, blaming the memory the unlimited plan had found enough)
P70C="--preset llama3.1-70b --seq 256 --micro-batch 1 --batch-tokens 256"
if "$T" plan $P70C >/dev/null 2>&1; then
    # (the available memory is read by each run: where the cap run fails, the unlimited one again, at once, must too)
    if ! "$T" plan $P70C --hbm 1T >"$dir/out" 2>"$dir/err" && "$T" plan $P70C >/dev/null 2>&1; then
        fail "plan: --hbm past the machine's memory refused on the CPU backend where no --hbm plans"; cat "$dir/err"
    fi
else
    echo "note: this machine's available memory does not hold the 70B's smallest CPU plan: the --hbm cap case is skipped"
fi
# --prune-ratio and --quant describe the store --preset makes: with --model they are refused, not ignored
expect_error "plan --model --prune-ratio" "--prune-ratio goes with --preset" "$T" plan --model "$dir/m.tier" --prune-ratio 0.5
expect_error "plan --model --quant" "--quant goes with --preset" "$T" plan --model "$dir/m.tier" --quant f32
# --sweep: the smallest --hbm at four sequence lengths, growing with seq
# --dropout: its mask buffers are in the plan (as train reserves them); out of range is refused
expect_ok "plan --dropout" "$T" plan --model "$dir/m.tier" $SHAPE --hbm 0 --dropout 0.1
grep -q "LoRA dropout" "$dir/out" || { fail "plan --dropout 0.1: no LoRA dropout row"; cat "$dir/out"; }
expect_error "plan: bad --dropout" "--dropout must be in \[0, 1)" "$T" plan --model "$dir/m.tier" $SHAPE --dropout 1.5
expect_ok "plan --sweep" "$T" plan --model "$dir/m.tier" --micro-batch 1 --batch-tokens 8192 --sweep --device cuda
[ "$(grep -c '^ *[0-9]\{4\} ' "$dir/out")" -eq 4 ] || { fail "plan --sweep: expected 4 rows"; cat "$dir/out"; }
expect_ok "plan --sweep --json" "$T" plan --model "$dir/m.tier" --micro-batch 1 --batch-tokens 8192 --sweep --json
grep -q '^{.*"sweep":\[{"seq":1024,.*{"seq":8192,"micro_batches":1,"min_hbm":[0-9]*,"host":[0-9]*}\]}$' "$dir/out" ||
    { fail "plan --sweep --json"; cat "$dir/out"; }

# train at the smallest budget train accepts (found from its own refusal): streams, traces, overlap per step.
FLAGS="--model $dir/m.tier --data $dir/t.tok $SHAPE --rank 4 --steps 2 --eval-every 0 --eval-tokens 64 --lr 5e-3 --seed 3"
expect_error "train: --hbm too small" "needs --hbm" "$T" train $FLAGS --hbm 64K --out "$dir/none"
hbm=$(needed_hbm)
[ -n "$hbm" ] || fail "train: no smallest budget in: $(cat "$dir/err")"
expect_ok "train streamed" "$T" train $FLAGS --hbm "$hbm" --trace "$dir/trace.json" --out "$dir/stream"
grep -q "^plan: [23] of 4 layer slots" "$dir/out" || { fail "train --hbm $hbm did not stream"; cat "$dir/out"; }
for s in 1 2; do
    grep -q "^step $s/2 .* io  *[0-9]*%  compute  *[0-9]*%  overlap [0-9.]*" "$dir/out" ||
        { fail "step $s: no io / compute / overlap in the progress line"; cat "$dir/out"; }
done
[ -s "$dir/trace.json" ] && [ "$(head -c 1 "$dir/trace.json")" = "{" ] && grep -q '"traceEvents"' "$dir/trace.json" ||
    fail "train --trace: no trace file (or not JSON)"
[ -e "$dir/trace.json.partial" ] && fail "train --trace left a .partial file"
expect_ok "train streamed --json" "$T" train $FLAGS --hbm "$hbm" --trace "$dir/trace2.json" --json --out "$dir/streamj"
[ "$(grep -c '^{"step":[12],.*"overlap_eff":[0-9.]*' "$dir/out")" -eq 2 ] ||
    { fail "--json: expected 2 step lines with overlap_eff"; cat "$dir/out"; }

# Resident training with the same flags and seed: the same adapter, byte for byte.
expect_ok "train resident" "$T" train $FLAGS --out "$dir/res"
grep -q "^plan: 4 of 4 layer slots" "$dir/out" || { fail "train without --hbm is not resident"; cat "$dir/out"; }
cmp -s "$dir/stream/adapter_model.safetensors" "$dir/res/adapter_model.safetensors" ||
    fail "streamed and resident training gave different adapters"
cmp -s "$dir/streamj/adapter_model.safetensors" "$dir/res/adapter_model.safetensors" ||
    fail "streamed (--json) and resident training gave different adapters"

# 64 micro-batches with part of the activations on the device: the unspill prefetch stays a couple of reads ahead
# (it ran on into the backward pass's reads and held the buffers the forward pass's device cells were to take: the
# first step waited forever, SIGTERM or not). A run that does not end within 2 minutes is killed: a failure, never
# a hung test. The same adapter as resident training.
MANY="--model $dir/m.tier --data $dir/t.tok --seq 16 --micro-batch 1 --batch-tokens 1024 --rank 4 --steps 1 --eval-every 0 --eval-tokens 64"
expect_ok "train, 64 micro-batches, resident" "$T" train $MANY --out "$dir/many-res"
for hb in 9M 12M; do
    expect_ok "train, 64 micro-batches, --hbm $hb" timeout -s KILL 120 "$T" train $MANY --hbm $hb --out "$dir/many-$hb"
    grep -q "^plan: .*, activations [1-9][0-9]* on device / [1-9][0-9]* spilled" "$dir/out" ||
        { fail "train, 64 micro-batches, --hbm $hb: not some activations on the device and some spilled"; cat "$dir/out"; }
    cmp -s "$dir/many-$hb/adapter_model.safetensors" "$dir/many-res/adapter_model.safetensors" ||
        fail "train, 64 micro-batches, --hbm $hb: another adapter than the resident run's"
done

# The pread threads that read where io_uring is refused (TT_IO_ENGINE=threads): the same adapter again.
expect_ok "train streamed, IO threads" env TT_IO_ENGINE=threads "$T" train $FLAGS --hbm "$hbm" --out "$dir/streamt"
grep -q "^plan: [23] of 4 layer slots" "$dir/out" || { fail "TT_IO_ENGINE=threads: did not stream"; cat "$dir/out"; }
grep -q "io_uring is not available" "$dir/err" && fail "TT_IO_ENGINE=threads printed the fallback note"
cmp -s "$dir/streamt/adapter_model.safetensors" "$dir/res/adapter_model.safetensors" ||
    fail "streamed training read by the IO threads gave another adapter"
# A user without CAP_IPC_LOCK under a small `ulimit -l` (io_uring counts its registered buffers against it):
# the run goes on without registered buffers, says so once, and trains the same adapter.
if [ "$(id -u)" -ne 0 ]; then drop=env
elif command -v setpriv >/dev/null; then drop="setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock"
else drop=""; fi
if [ -n "$drop" ]; then
    expect_ok "train streamed, ulimit -l 64" $drop sh -c 'ulimit -l 64 && exec "$@"' sh "$T" train $FLAGS --hbm "$hbm" \
        --out "$dir/streaml"
    if grep -q "io_uring is not available here" "$dir/err"; then # io_uring refused here (or, before Linux 5.12,
        # its rings over the limit): the pread threads read, and need no registration
        [ "$(grep -c 'reading with [0-9]* pread threads' "$dir/err")" -eq 1 ] ||
            { fail "ulimit -l 64: expected one line saying the threads read"; cat "$dir/err"; }
    else
        [ "$(grep -c 'out of locked memory.*reading without registered buffers' "$dir/err")" -eq 1 ] ||
            { fail "ulimit -l 64: expected one line saying the buffers go unregistered"; cat "$dir/err"; }
    fi
    cmp -s "$dir/streaml/adapter_model.safetensors" "$dir/res/adapter_model.safetensors" ||
        fail "streamed training without registered buffers gave another adapter"
else
    echo "note: root without setpriv: the ulimit -l case is skipped"
fi
# No thread to be had (ulimit -u reached; root is exempt from it, so as the user nobody, with one OpenBLAS thread):
# the streaming threads that cannot start are one line, not a run waiting for them forever (nor, for verify's
# reading thread, an assertion)
if [ "$(id -u)" -ne 0 ]; then as_user=env
elif command -v setpriv >/dev/null; then as_user="setpriv --reuid=65534 --regid=65534 --clear-groups --"
else as_user=""; fi
if [ -n "$as_user" ] && command -v prlimit >/dev/null; then
    chmod 755 "$dir"
    cp "$T" "$dir/tiertrain-copy" && chmod 755 "$dir/tiertrain-copy"
    # detect_leaks=0: LeakSanitizer's own thread cannot start either
    # (io_uring's threads, then the runtime's; with the pread engine, where io_uring is refused, its threads first)
    for engine in auto threads; do
        expect_error "eval with no thread to start ($engine)" "cannot start .*thread.* .*m.tier.*ulimit -u" \
            timeout 20 $as_user env TT_IO_ENGINE=$engine OPENBLAS_NUM_THREADS=1 ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" \
            prlimit --nproc=1 "$dir/tiertrain-copy" eval --model "$dir/m.tier" --data "$dir/t.tok" $SHAPE --max-tokens 64
    done
    expect_error "verify with no thread to start" "cannot start the thread that reads .*m.tier.*ulimit -u" \
        timeout 20 $as_user env OPENBLAS_NUM_THREADS=1 ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" \
        prlimit --nproc=1 "$dir/tiertrain-copy" verify "$dir/m.tier"
    rm -f "$dir/tiertrain-copy"
else
    echo "note: root without setpriv, or no prlimit: the ulimit -u case is skipped"
fi
expect_error "train: bad TT_IO_ENGINE" "TT_IO_ENGINE=fast is not an IO engine" env TT_IO_ENGINE=fast "$T" train $FLAGS \
    --hbm "$hbm" --out "$dir/badengine"
[ -e "$dir/badengine" ] && fail "a run refused for TT_IO_ENGINE created its --out"

# bench overlap at the smallest budget of its shape (plan's defaults: rank 8, clip 1), on a copy whose name
# holds '"', '\' and a byte that is not UTF-8: the JSON line quotes it (tt_escape's \xff).
q="$dir/q\"x\\y$(printf '\377').tier"
cp "$dir/m.tier" "$q"
expect_ok "bench overlap" "$T" bench overlap --model "$q" --hbm "$bench_hbm" $SHAPE --steps 1 --json
tail -n 1 "$dir/out" | grep -q '^{.*"overlap_eff":[0-9.]*.*}$' ||
    { fail "bench overlap: last line is not a JSON object with overlap_eff"; cat "$dir/out"; }
tail -n 1 "$dir/out" | grep -qF '{"model":"'"$dir"'/q\"x\\y\\xff.tier",' ||
    { fail "bench overlap --json: the model's path is not quoted"; tail -n 1 "$dir/out"; }
# a bad flag: the message says only what is wrong
expect_error "bench overlap --threads -1" "--threads must be 0..1024" "$T" bench overlap --model "$dir/m.tier" $SHAPE --threads -1
expect_error "bench overlap --steps 0" "^tiertrain bench overlap: --steps must be at least 1\$" \
    "$T" bench overlap --model "$dir/m.tier" $SHAPE --steps 0
expect_error "bench overlap without --model" "^tiertrain bench overlap: --model FILE is required" "$T" bench overlap $SHAPE

# Bad budget flags: usage errors (exit 2), one line naming the flag.
expect_error "plan --lm-head" "--lm-head must be auto, device or host" "$T" plan --model "$dir/m.tier" --lm-head sideways
[ "$rc" -eq 2 ] || fail "plan --lm-head sideways: exit $rc, expected 2"
expect_error "train --lm-head" "--lm-head" "$T" train $FLAGS --lm-head sideways --out "$dir/bad"
[ "$rc" -eq 2 ] || fail "train --lm-head sideways: exit $rc, expected 2"
expect_error "plan --hbm 12Q" "--hbm expects a size" "$T" plan --model "$dir/m.tier" --hbm 12Q
[ "$rc" -eq 2 ] || fail "plan --hbm 12Q: exit $rc, expected 2"
expect_error "train --hbm 12Q" "--hbm expects a size.*12Q" "$T" train $FLAGS --hbm 12Q --out "$dir/bad"
[ "$rc" -eq 2 ] || fail "train --hbm 12Q: exit $rc, expected 2"
[ -e "$dir/bad" ] && fail "a refused train run created its --out"

finish test_stream_cli
