#!/bin/sh
# tests/test_cli.sh — the tiertrain commands on good and bad input: every bad
# input gives exactly one line on stderr that names the file, a non-zero exit,
# and no crash (no signal, no sanitizer report). Run by tests/run.sh with
# $TIERTRAIN set to the binary under test.
. tests/lib.sh
setup cli

# cuBLAS is opened when the CUDA backend starts, not linked: loading cuBLASLt made every start take ~70 ms
# (kernels/cuda/cuda_gemm.cu, cuda_blas_open; tests/test_cuda_blas.c checks the loader)
if command -v ldd >/dev/null 2>&1 && ldd "$T" | grep -q cublas; then
    fail "tiertrain links cuBLAS: $(ldd "$T" | grep cublas | tr -s ' \t' ' ')"
fi

# A good store, and its layer-0 extent offset from info --json.
expect_ok synth "$T" synth --preset tiny --quant nf4 --seed 3 -o "$dir/good.tier"
expect_ok info "$T" info "$dir/good.tier"
grep -q "tiny: 4 layers" "$dir/out" || fail "info output lacks the model line"
expect_ok info-json "$T" info --json "$dir/good.tier"
grep -q '"projection_dtype":"nf4-dq"' "$dir/out" || fail "info --json lacks projection_dtype"
off=$(sed -n 's/.*"layers":\[{"layer":0,[^}]*"offset":\([0-9]*\).*/\1/p' "$dir/out")
[ -n "$off" ] || fail "info --json has no layer offset"
expect_ok verify "$T" verify "$dir/good.tier"
grep -q "all 6 extents OK" "$dir/out" || fail "verify output"
expect_ok bench "$T" bench io --json "$dir/good.tier"
tail -n 1 "$dir/out" | grep -q '^{.*"gbps":' || fail "bench io --json: last line is not the JSON object"
# io_uring and the pread threads side by side (only the threads where io_uring is refused)
if tail -n 1 "$dir/out" | grep -q '"engine":"io_uring"'; then
    grep -q '^io_uring / threads: [0-9.]*x$' "$dir/out" || { fail "bench io: no io_uring / threads ratio"; cat "$dir/out"; }
    tail -n 1 "$dir/out" | grep -q '"threads_gbps":[0-9]' && ! tail -n 1 "$dir/out" | grep -q '"threads_gbps":0\.0,' ||
        fail "bench io --json: no threads_gbps"
else
    tail -n 1 "$dir/out" | grep -q '"engine":"threads (' || fail "bench io --json: no engine"
fi
expect_ok "bench io, threads" env TT_IO_ENGINE=threads "$T" bench io --json "$dir/good.tier"
tail -n 1 "$dir/out" | grep -q '^{"file":[^,]*,"engine":"threads ([0-9]*)",.*"gbps":[0-9]' &&
    ! tail -n 1 "$dir/out" | grep -q '"gbps":0\.0,' ||
    { fail "TT_IO_ENGINE=threads bench io: the threads did not read"; cat "$dir/out"; }

# A pruned store keeps its pruning map and LoRAM shapes (tiny: layers 1..2).
expect_ok synth-pruned "$T" synth --preset tiny --prune-ratio 0.5 -o "$dir/pruned.tier"
expect_ok info-pruned "$T" info "$dir/pruned.tier"
grep -q "pruning map: yes" "$dir/out" || fail "pruned store has no pruning map"
grep -q "1-2 .* 4 heads .* 2 KV heads .*ffn    344" "$dir/out" || { fail "pruned dims"; cat "$dir/out"; }
expect_ok verify-pruned "$T" verify "$dir/pruned.tier"

# synth's threads do not change a byte; --layers keeps the shapes and the
# seeded values of the first N layers (tiny: 4 layers, 1-2 pruned by default
# on 3 layers: layer 1 only).
expect_ok synth-threads1 "$T" synth --preset tiny --quant bf16 --prune-ratio 0.5 --threads 1 -o "$dir/t1.tier"
expect_ok synth-threads3 "$T" synth --preset tiny --quant bf16 --prune-ratio 0.5 --threads 3 -o "$dir/t3.tier"
cmp -s "$dir/t1.tier" "$dir/t3.tier" || fail "synth --threads 1 and --threads 3 wrote different stores"
# --no-double-quant means nothing without NF4 projections: refused, as import refuses it
expect_error synth-no-dq-bf16 "--no-double-quant goes with --quant nf4 only" "$T" synth --preset tiny --quant bf16 \
    --no-double-quant -o "$dir/nodq.tier"
[ -e "$dir/nodq.tier" ] && fail "a refused synth wrote nodq.tier"
# tensors over --buffer-limit are written chunk by chunk by the writer: the same bytes (bf16 and NF4)
expect_ok synth-streamed "$T" synth --preset tiny --quant bf16 --prune-ratio 0.5 --threads 3 --buffer-limit 64K -o "$dir/t4.tier"
cmp -s "$dir/t1.tier" "$dir/t4.tier" || fail "synth --buffer-limit 64K wrote another store"
expect_ok synth-nf4-a "$T" synth --preset tiny --threads 2 -o "$dir/n1.tier"
expect_ok synth-nf4-b "$T" synth --preset tiny --threads 2 --buffer-limit 1K -o "$dir/n2.tier"
cmp -s "$dir/n1.tier" "$dir/n2.tier" || fail "synth nf4 --buffer-limit 1K wrote another store"
rm -f "$dir/t4.tier" "$dir/n1.tier" "$dir/n2.tier"
expect_ok synth-layers "$T" synth --preset tiny --layers 3 --prune-ratio 0.5 -o "$dir/l3.tier"
expect_ok info-layers "$T" info "$dir/l3.tier"
grep -q "tiny-3l: 3 layers" "$dir/out" || { fail "synth --layers 3: model line"; cat "$dir/out"; }
grep -q "^  1 .* 2 KV heads .*ffn    344  pruned" "$dir/out" || { fail "synth --layers 3: layer 1 not pruned"; cat "$dir/out"; }
expect_ok verify-layers "$T" verify "$dir/l3.tier"
expect_error "layers too many" "--layers 9 is more than tiny has (4)" "$T" synth --preset tiny --layers 9 -o "$dir/x.tier"
expect_error "threads negative" "--threads must be 0..1024" "$T" synth --preset tiny --threads -1 -o "$dir/x.tier"
rm -f "$dir/t1.tier" "$dir/t3.tier" "$dir/l3.tier"

# Bad stores.
size=$(stat -c %s "$dir/good.tier")
head -c $((size - 8192)) "$dir/good.tier" >"$dir/truncated.tier"
cp "$dir/good.tier" "$dir/header.tier"
printf '\377\377\377\377' | dd of="$dir/header.tier" bs=1 seek=40 conv=notrunc 2>/dev/null
cp "$dir/good.tier" "$dir/flipped.tier"
b=$(od -An -tu1 -j $((off + 1000)) -N1 "$dir/good.tier" | tr -d ' ')
printf "$(printf '\\%03o' $(( (b + 1) % 256 )))" | dd of="$dir/flipped.tier" bs=1 seek=$((off + 1000)) conv=notrunc 2>/dev/null
cmp -s "$dir/good.tier" "$dir/flipped.tier" && fail "byte flip did not change the file"
mkdir "$dir/adir"

for cmd in info verify "bench io"; do
    expect_error "$cmd truncated" "truncated.tier is truncated" "$T" $cmd "$dir/truncated.tier"
    expect_error "$cmd header" "header.tier: the store header is corrupt" "$T" $cmd "$dir/header.tier"
    expect_error "$cmd missing" "nope.tier does not exist" "$T" $cmd "$dir/nope.tier"
    expect_error "$cmd directory" "adir is a directory" "$T" $cmd "$dir/adir"
done
expect_error "verify flipped" "flipped.tier.*1 of 6 extents are corrupt" "$T" verify "$dir/flipped.tier"
expect_error "bench io --verify flipped" "flipped.tier: 1 layer extents failed" "$T" bench io --verify "$dir/flipped.tier"

# Usage errors: exit 2 with one line; --help lists every flag with defaults.
expect_error "unknown flag" "unknown option '--bogus'" "$T" info --bogus "$dir/good.tier"
# a near miss is named: a prefix either way (the commands spell --out and --output), or two edits; nothing else
expect_error "unknown flag, a prefix" "unknown option '--out' (did you mean --output? see tiertrain synth --help)" \
    "$T" synth --preset tiny --out "$dir/x.tier"
expect_error "unknown flag, the longer" "unknown option '--output=x' (did you mean --out? see tiertrain train" \
    "$T" train --output=x
expect_error "unknown flag, two edits" "unknown option '--micro-batches' (did you mean --micro-batch? see" \
    "$T" train --micro-batches 2
expect_error "unknown flag, far" "unknown option '--lora-rank' (see tiertrain train --help)" "$T" train --lora-rank 4
# An argument the parser shows back comes out escaped: a file named "-ESC[2J<newline>.tier" is an unknown
# option on one line, no escape sequence reaching the terminal; so is a bad value, an extra argument, a command.
esc=$(printf '\033[2J')
expect_error "unknown flag, escaped" "unknown option '-m\\\\x1b\[2J\\\\x0a\.tier'" "$T" info "-m$esc
.tier"
expect_error "bad number, escaped" "not '1\\\\x1b\[2J'" "$T" plan --preset tiny --seq "1$esc"
expect_error "extra argument, escaped" "unexpected argument 'b\\\\x1b\[2J'" "$T" info "$dir/good.tier" "b$esc"
expect_error "unknown command, escaped" "unknown command 'x\\\\x1b\[2J'" "$T" "x$esc"
expect_error "bad preset" "unknown preset 'gpt5'" "$T" synth --preset gpt5 -o "$dir/x.tier"
expect_error "bad ratio" "prune-ratio must be strictly between 0 and 1" "$T" synth --prune-ratio 1.5 -o "$dir/x.tier"
expect_error "bad size" "expects a size" "$T" bench io --chunk 12Q "$dir/good.tier"
expect_error "no output" "-o FILE is required" "$T" synth
expect_error "output is a dir" "adir is a directory" "$T" synth --preset tiny -o "$dir/adir"
[ ! -e "$dir/x.tier" ] || fail "a failed synth left x.tier behind"
ls "$dir" | grep -q partial && fail "a .partial file was left behind"
"$T" synth --help >"$dir/out" || fail "synth --help exit"
for f in preset layers prune-ratio prune-layers quant no-double-quant lz4 embed-std seed threads buffer-limit output help; do
    grep -q -e "--$f" "$dir/out" || fail "synth --help lacks --$f"
done
grep -q "(default: nf4)" "$dir/out" || fail "synth --help lacks defaults"
# `help COMMAND [SUB]` is COMMAND [SUB] --help
"$T" help synth >"$dir/out2" && cmp -s "$dir/out" "$dir/out2" || fail "help synth is not synth --help"
"$T" bench io --help >"$dir/out" && "$T" help bench io >"$dir/out2" && cmp -s "$dir/out" "$dir/out2" ||
    fail "help bench io is not bench io --help"

# bench kernels: the harness on the CPU backend (the CUDA figures need a GPU)
expect_ok bench-kernels "$T" bench kernels --device cpu --m 64 --n 128 --k 128 --iters 1 --copy-mb 8 --attn-seq 96 --heads 4 --kv-heads 2 --head-dim 32 --json
tail -n 1 "$dir/out" | grep -q '^{"device":"cpu".*"attention fwd (causal)":[0-9.]*,"attention bwd (causal)":[0-9.]*,.*"h2d, registered arena":[0-9.]*,"h2d, pageable malloc":[0-9.]*,"dequant_gemm_ratio":' ||
    { fail "bench kernels --json"; cat "$dir/out"; }
grep -q "attention: seq 96, 4 query / 2 KV heads, head_dim 32" "$dir/out" || fail "bench kernels: the attention shape line"
tail -n 1 "$dir/out" | grep -q '"lora x A^T (rank 16)":[0-9.]*,"lora dz^T x (rank 16)":[0-9.]*' ||
    { fail "bench kernels --json: no rank-16 LoRA products"; tail -n 1 "$dir/out"; }
tail -n 1 "$dir/out" | grep -q '"LoRA dropout":[0-9.]*' || { fail "bench kernels --json: no LoRA dropout"; tail -n 1 "$dir/out"; }
# narrow products (--n below the rank, below --k): every row within its buffers (ASan build), no LoRA rows
expect_ok bench-kernels-narrow "$T" bench kernels --device cpu --m 64 --n 8 --k 64 --iters 1 --copy-mb 0 --attn-seq 0 --json
tail -n 1 "$dir/out" | grep -q '"rmsnorm fwd":[0-9.]*' && ! tail -n 1 "$dir/out" | grep -q lora ||
    { fail "bench kernels --n 8"; tail -n 1 "$dir/out"; }
expect_error "bench kernels bad heads" "--kv-heads" "$T" bench kernels --device cpu --heads 16 --kv-heads 3
expect_error "bench kernels bad attn-seq" "--attn-seq" "$T" bench kernels --device cpu --attn-seq lots
expect_error "bench kernels bad copy" "--copy-mb" "$T" bench kernels --device cpu --copy-mb -1
expect_error "bench kernels bad k" "multiple of 64" "$T" bench kernels --device cpu --k 100

# standard streams: output that cannot be written fails the command (a full disk under `> results`); a closed
# stdout is refused before any work; chat with stdin closed says so (its descriptor is never another file's)
if [ -w /dev/full ]; then
    "$T" info "$dir/good.tier" >/dev/full 2>"$dir/err"
    rc=$?
    [ $rc -ne 0 ] && grep -q "tiertrain info: .*standard output.*incomplete" "$dir/err" ||
        { fail "stdout on a full disk: exit $rc"; cat "$dir/err"; }
    "$T" --help >/dev/full 2>"$dir/err"
    rc=$?
    [ $rc -ne 0 ] && grep -q "tiertrain --help: .*standard output.*incomplete" "$dir/err" ||
        { fail "--help on a full disk: exit $rc"; cat "$dir/err"; }
fi
"$T" info "$dir/good.tier" >&- 2>"$dir/err"
rc=$?
[ $rc = 2 ] && grep -q "standard output is closed" "$dir/err" || { fail "closed stdout: exit $rc"; cat "$dir/err"; }
"$T" chat --model "$dir/good.tier" -n 2 <&- >"$dir/out" 2>"$dir/err"
rc=$?
[ $rc = 2 ] && grep -q "tiertrain chat: standard input is closed" "$dir/err" ||
    { fail "chat with stdin closed: exit $rc"; cat "$dir/err"; }

finish test_cli
