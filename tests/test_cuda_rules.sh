#!/bin/sh
# tests/test_cuda_rules.sh — what the CUDA backend may call where (issue 11's
# rule, checked here because no GPU is at hand to catch it): after start-up
# nothing allocates, frees, copies synchronously or synchronises the device.
# Each such call in kernels/cuda/*.cu must sit in a function allowed to make
# it: start-up (backend_cuda), the arenas (cu_alloc / cu_free, reserved once),
# pinned host memory, the one read-back per step (cu_to_host / cu_to_device:
# an async copy, then the compute stream alone), queue teardown, and
# be_synchronize (teardown and a failed step). Every kernel launch names the
# compute stream (never the legacy default stream). ptxas reports no spills;
# the emulated GPU's kernels call no CUDA header function.
. tests/lib.sh
setup cuda_rules

# check FILE: prints each violation, exit 1 if any
check() {
    awk -v F="$1" '
    # a definition starts at column 0: the function is the name before its first "("
    /^[A-Za-z_]/ && /\(/ { t = $0; sub(/\(.*/, "", t); n = split(t, w, /[ \t*&]+/); fn = w[n] }
    {
        line = $0
        gsub(/\/\*[^*]*\*\//, "", line); sub(/\/\/.*/, "", line)
        if (line ~ /cudaMalloc\(|cudaMallocHost\(|cudaFree\(|cudaFreeHost\(|cudaMemcpy\(|cudaMemset\(|cudaMemcpyToSymbol\(|cudaDeviceSynchronize\(|cudaStreamSynchronize\(/) {
            ok = fn == "backend_cuda" \
              || (fn == "cu_alloc" && line ~ /cudaMalloc\(|cudaStreamSynchronize\(/) \
              || (fn == "cu_free" && line ~ /cudaFree\(/) \
              || (fn == "cu_host_alloc_pinned" && line ~ /cudaMallocHost\(/) \
              || (fn == "cu_host_free_pinned" && line ~ /cudaFreeHost\(/) \
              || ((fn == "cu_to_host" || fn == "cu_to_device" || fn == "cu_queue_free") && line ~ /cudaStreamSynchronize\(/) \
              || (fn == "cu_synchronize" && line ~ /cudaDeviceSynchronize\(/)
            if (!ok) { printf "%s:%d: in %s: %s\n", F, NR, fn, $0; bad++ }
        }
        if (line ~ /<<</ && line !~ /, *g_compute *>>>/) { printf "%s:%d: a launch off the compute stream: %s\n", F, NR, $0; bad++ }
    }
    END { exit bad ? 1 : 0 }' "$1"
}

for f in kernels/cuda/*.cu; do
    check "$f" >"$dir/bad" || { fail "$f: calls that allocate or synchronise after start-up:"; cat "$dir/bad"; }
done
# the check finds what it must: a cudaMalloc planted in an op, and a launch on the default stream
sed 's/^\(static void cu_axpy(.*{\)$/\1 void *p_; cudaMalloc(\&p_, 1);/' kernels/cuda/cuda_backend.cu >"$dir/p1.cu"
cmp -s "$dir/p1.cu" kernels/cuda/cuda_backend.cu && fail "could not plant a call (cu_axpy's definition changed?)"
check "$dir/p1.cu" >/dev/null && fail "a cudaMalloc in cu_axpy went unnoticed"
sed 's/k_scale<<<blocks_for(n, 256), 256, 0, g_compute>>>/k_scale<<<blocks_for(n, 256), 256>>>/' kernels/cuda/cuda_backend.cu >"$dir/p2.cu"
cmp -s "$dir/p2.cu" kernels/cuda/cuda_backend.cu && fail "could not plant a default-stream launch (k_scale's launch changed?)"
check "$dir/p2.cu" >/dev/null && fail "a launch on the default stream went unnoticed"
# ptxas's report of the build (the Makefile keeps it beside each CUDA object): no kernel spills registers
# to local memory or keeps a stack frame (issue 11: none in the GEMM-side, attention and head kernels)
spills() { # REPORT: prints each kernel that spills or has a stack frame, exit 1 if any
    awk '/Function properties for/ { fn = $NF } /bytes stack frame/ && !/^ *0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads/ { print fn ": " $0; bad++ } END { exit bad ? 1 : 0 }' "$1"
}
reports=$(ls build/cuda/kernels/cuda/*.o.ptxas 2>/dev/null)
if [ -n "$reports" ]; then
    n=0
    for r in $reports; do
        spills "$r" >"$dir/sp" || { fail "$r: kernels that spill:"; cat "$dir/sp"; }
        n=$((n + $(grep -c 'bytes stack frame' "$r")))
    done
    [ "$n" -ge 40 ] || fail "ptxas reports only $n kernels: is -Xptxas -v still in the CUDA rule?"
    echo "ptxas: $n kernels, none spills"
    printf '%s\n' "ptxas info    : Function properties for k_x" "    8 bytes stack frame, 8 bytes spill stores, 16 bytes spill loads" >"$dir/fake"
    spills "$dir/fake" >/dev/null && fail "a spilling kernel went unnoticed"
else
    echo "no ptxas report (built without nvcc): the spill check is skipped"
fi
# The emulated GPU's kernel objects (tests/cuda_emu/cuda_emu.h): no call left to a CUDA header's host version
# of an intrinsic (static, named __...: _ZL<n>__...). Its struct result stored straight to memory (p[i] =
# __float2bfloat16_rn(x)) is a store the access hooks never see; kernels are flattened so that none stays.
header_calls() { # DISASSEMBLY: prints each such call, exit 1 if any
    grep -E 'call .*<_ZL[0-9]+__' "$1" && return 1
    return 0
}
objs=$(ls build/emu/cuda_backend.o build/emu/cuda_gemm.o build/emu/tests/emu_selftest.o 2>/dev/null)
if [ -n "$objs" ] && command -v objdump >/dev/null; then
    for o in $objs; do
        objdump -d --no-show-raw-insn "$o" >"$dir/dis"
        header_calls "$dir/dis" >"$dir/hc" || { fail "$o: kernels call a CUDA header's host function:"; cat "$dir/hc"; }
    done
    echo "   1969c:	call   0 <_ZL19__float2bfloat16_rnf>" >"$dir/fake"
    header_calls "$dir/fake" >/dev/null && fail "a call to __float2bfloat16_rn went unnoticed"
    echo "emulated GPU: no kernel calls a CUDA header's host function"
else
    echo "no emulated-GPU objects (or no objdump): the header-call check is skipped"
fi
finish test_cuda_rules
