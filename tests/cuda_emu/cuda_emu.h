/* tests/cuda_emu/cuda_emu.h — the CUDA backend's .cu files compiled by the
 * host C++ compiler and run on the CPU (the "emulated GPU"): force-included
 * (-include) before each file that tests/cuda_emu/rewrite.pl made from a .cu
 * file of kernels/cuda (launches `k<<<g, b, s, q>>>(...)` become
 * `tt_emu_launch(k, "k", g, b, s, q)(...)`, dynamic shared memory a pointer from
 * tt_emu_dyn_smem()). What it gives the kernels:
 *  - every thread of a block is a fiber on one host thread; a
 *    block's fibers run in turn up to __syncthreads or a warp-wide operation
 *    (the warp's lanes meet there); blocks run one after the other;
 *  - __shared__ is `static` (one block at a time: the block's fibers share it);
 *  - the runtime (tests/cuda_emu/cuda_emu.cc): device memory is host memory,
 *    every stream runs each operation when it is issued (a valid order of the
 *    asynchronous one: events are then always complete), or with
 *    TT_EMU_DEFER=lazy|eager-copies|random:SEED each stream keeps a queue of
 *    its operations, run only when a synchronisation forces them or the
 *    policy chooses (cuda_emu.cc, "deferred execution": the orders a GPU's
 *    streams may take, for races between them); launches are checked
 *    as the GPU checks them (block size, grid size, shared memory above the
 *    kernel's allowance) and fail through cudaGetLastError; a kernel handed a
 *    pointer to host memory that is not pinned, a product's operand outside
 *    device memory, or a copy whose kind does not match where its pointers
 *    lie stops the run (on a GPU: an illegal address); cuBLAS and cuBLASLt
 *    products follow the libraries' documented column-major semantics
 *    (OpenBLAS computes them), refusing layouts they would refuse;
 *  - every load and store a kernel makes is checked as the GPU checks it
 *    (cuda_emu.cc, "what a kernel touches"): inside device memory, pinned host
 *    memory, shared memory or a stack, and a vector access aligned to its
 *    size; else the run stops naming the kernel, the thread and the address.
 *  - with TT_EMU_RACECHECK=1, an access that a GPU would race with another
 *    (threads of a block with no barrier between them, two blocks of a
 *    launch) stops the run, naming both threads (cuda_emu.cc, "racecheck");
 *  - with TT_EMU_STATS=1, each kernel's mma, ldmatrix (shared-memory bytes an
 *    mma, bank-conflict wavefronts) and cp.async bytes at exit (cuda_emu.cc).
 * It checks what the kernels compute and how the backend drives them, not
 * timing, the memory model inside a kernel beyond racecheck's rules or the
 * hardware's rounding of special functions (expf is the host's). */
#ifndef TT_CUDA_EMU_H
#define TT_CUDA_EMU_H

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <type_traits>

#undef __shared__
#define __shared__ static
/* Every call inside a kernel inlined where its body is at hand: the header's
 * host versions of intrinsics (__float2bfloat16_rn) stay calls otherwise, and
 * a store of a call's struct result straight to memory (p[i] =
 * __float2bfloat16_rn(x)) is one that ThreadSanitizer's instrumentation does
 * not report ("what a kernel touches" must see every store; the header-call
 * check in tests/test_cuda_rules.sh keeps it so). */
#undef __global__
#define __global__ __attribute__((flatten))
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

/* The running fiber's coordinates. */
typedef struct tt_emu_coords {
    uint3 t, b;
    dim3 bd, gd;
} tt_emu_coords;
const tt_emu_coords *tt_emu_self(void);
/* By value, from the emulator's (uninstrumented) code: a kernel's reads of
 * its coordinates are not memory accesses of the kernel's to check. */
uint3 tt_emu_tid(void);
uint3 tt_emu_bid(void);
dim3 tt_emu_bdim(void);
dim3 tt_emu_gdim(void);
#define threadIdx (tt_emu_tid())
#define blockIdx (tt_emu_bid())
#define blockDim (tt_emu_bdim())
#define gridDim (tt_emu_gdim())

void __syncthreads(void);
float __shfl_xor_sync(unsigned mask, float v, int lane_mask, int width = 32);
double __shfl_xor_sync(unsigned mask, double v, int lane_mask, int width = 32);
void *tt_emu_dyn_smem(void);

#define __expf(x) expf(x) /* glibc declares __expf but does not export it */
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The runtime's C++ forms that nvcc alone declares. */
template <typename... P> cudaError_t cudaFuncSetAttribute(void (*f)(P...), cudaFuncAttribute a, int v) {
    return cudaFuncSetAttribute((const void *)f, a, v);
}

/* Runs body(ctx) as every thread of every block of the launch (or records the
 * launch error the GPU would give); fn is the kernel (its shared-memory
 * allowance: cudaFuncSetAttribute), name its name for messages. The launch
 * runs when its stream reaches it (at once, but with TT_EMU_DEFER:
 * cuda_emu.cc, "deferred execution"); drop(ctx) after it ran, or at once
 * with a launch error. */
void tt_emu_run(const void *fn, const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t q,
                void (*body)(void *), void *ctx, void (*drop)(void *));
#define TT_EMU_KNAME(k) #k

/* A kernel's pointer argument i must point into device memory (cudaMalloc's)
 * or host memory pinned for the device; anything else stops the run, naming
 * the argument (on a GPU: an illegal address, found only when it runs). */
void tt_emu_check_ptr(const char *name, int i, const void *p);
template <typename A> void tt_emu_check_arg(const char *name, int i, A a) {
    if constexpr (std::is_pointer<A>::value) tt_emu_check_ptr(name, i, (const void *)a);
}

template <typename... P> struct tt_emu_launcher {
    void (*f)(P...);
    const char *name;
    dim3 g, b;
    size_t smem;
    cudaStream_t q;
    template <typename... A> void operator()(A... a) {
        int i = 0;
        (tt_emu_check_arg(name, i++, a), ...);
        /* the arguments copied at the launch, as a GPU takes them (the launch may run later: TT_EMU_DEFER); each
         * thread gets its own copies of them; reading them here is the emulator's access, not the kernel's
         * (cuda_emu.cc, "what a kernel touches"): the copies are on the heap, so the trampoline is not
         * instrumented either (the compiler may move the closure's loads into it) */
        auto *call = new auto([f = f, a...]() __attribute__((no_sanitize_thread)) { f(a...); });
        typedef std::remove_pointer_t<decltype(call)> C;
        tt_emu_run((const void *)f, name, g, b, smem, q, [](void *c) __attribute__((no_sanitize_thread)) {
            (*(C *)c)();
        }, call, [](void *c) { delete (C *)c; });
    }
};
template <typename... P>
tt_emu_launcher<P...> tt_emu_launch(void (*f)(P...), const char *name, dim3 g, dim3 b, size_t smem = 0,
                                    cudaStream_t q = 0) {
    return tt_emu_launcher<P...>{f, name, g, b, smem, q};
}

#endif
