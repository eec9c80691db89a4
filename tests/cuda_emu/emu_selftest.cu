/* tests/cuda_emu/emu_selftest.cu — kernels that make the mistakes the emulated
 * GPU must stop at, the way a GPU would (tests/cuda_emu/cuda_emu.cc, "what a
 * kernel touches"), and one that makes none. Built only for the emulator
 * (Makefile: $(EMU)/tests/emu_selftest); tests/test_cuda_emu.sh runs each case:
 *
 *   emu_selftest ok           aligned vector loads and stores, shared memory: prints "ok", exits 0
 *   emu_selftest misaligned   a 16-byte load at a 4-byte aligned address
 *   emu_selftest past-end     a load one element past a cudaMalloc'd array
 *   emu_selftest smem         a store past the block's dynamic shared memory
 *   emu_selftest host         a load from pageable host memory through a pointer held in device memory
 *   emu_selftest bf16x2       a 4-byte (bf16 pair) store at a 2-byte aligned address
 *   emu_selftest arena-ok     the ok kernel on blocks of a device arena (sched/arena.c): prints "ok"
 *   emu_selftest arena-read   a load one element past an arena block (inside the arena: no GPU fault there)
 *   emu_selftest arena-copy   a cudaMemcpyAsync one element longer than its arena block
 *   emu_selftest arena-stale  a load from a block released with its arena mark
 *
 * Each bad case must abort with a message naming its kernel and the GPU's
 * error (an illegal or a misaligned address). */
extern "C" {
#include "sched/arena.h"
}

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N = 256 };

/* y = 2x, four floats a thread through float4; bf16 pairs; a tile through shared memory. */
__global__ void k_ok(const float *x, float *y, __nv_bfloat162 *h) {
    extern __shared__ float tile[];
    int i = threadIdx.x;
    float4 v = ((const float4 *)x)[i];
    tile[4 * i] = v.x;
    tile[4 * i + 1] = v.y;
    tile[4 * i + 2] = v.z;
    tile[4 * i + 3] = v.w;
    __syncthreads();
    int j = (int)blockDim.x - 1 - i; /* another thread's values */
    float4 w = make_float4(2 * tile[4 * j], 2 * tile[4 * j + 1], 2 * tile[4 * j + 2], 2 * tile[4 * j + 3]);
    ((float4 *)y)[j] = w;
    h[i] = __floats2bfloat162_rn(v.x, v.y);
}

__global__ void k_misaligned(const float *x, float *y) {
    float4 v = *(const float4 *)(x + 1 + 4 * threadIdx.x);
    y[threadIdx.x] = v.x + v.y + v.z + v.w;
}

__global__ void k_past_end(const float *x, float *y, int n) {
    y[threadIdx.x] = x[threadIdx.x] + x[n]; /* x[n]: one past the end */
}

__global__ void k_smem(float *y, int n) {
    extern __shared__ float s[]; /* n floats */
    s[threadIdx.x + 1] = 1.0f;    /* the last thread writes s[n] */
    __syncthreads();
    if (threadIdx.x < (unsigned)n - 1) y[threadIdx.x] = s[threadIdx.x + 1];
}

__global__ void k_host(float *const *holder, float *y) { y[threadIdx.x] = (*holder)[threadIdx.x]; }

/* a bf16 pair as one 32-bit word, as the backend stores pairs */
__global__ void k_bf16x2(__nv_bfloat16 *h) { *(unsigned *)(h + 1 + 2 * threadIdx.x) = 0x3f803f80u; }

static void check(cudaError_t e, const char *what) {
    if (e != cudaSuccess) {
        fprintf(stderr, "emu_selftest: %s: %s\n", what, cudaGetErrorString(e));
        exit(1);
    }
}

static void copy(void *d, const void *s, size_t n, cudaMemcpyKind k) {
    check(cudaMemcpyAsync(d, s, n, k, 0), "copy");
    check(cudaStreamSynchronize(0), "copy");
}

int main(int argc, char **argv) {
    const char *c = argc == 2 ? argv[1] : "";
    float *x, *y, *host = (float *)malloc(N * sizeof(float)), **holder;
    __nv_bfloat16 *h;
    check(cudaMalloc((void **)&x, N * sizeof(float)), "cudaMalloc");
    check(cudaMalloc((void **)&y, N * sizeof(float)), "cudaMalloc");
    check(cudaMalloc((void **)&h, N * sizeof(__nv_bfloat16)), "cudaMalloc");
    check(cudaMalloc((void **)&holder, sizeof(float *)), "cudaMalloc");
    if (!strncmp(c, "arena-", 6)) { /* x, y and h as blocks of an arena over one allocation, as the runtime has them */
        void *base;
        check(cudaMalloc(&base, 1 << 16), "cudaMalloc");
        tt_arena *a = arena_wrap("device", base, 1 << 16);
        float *ax = (float *)arena_alloc(a, N * sizeof(float), "x"); /* N floats: the next block starts right after */
        size_t m = arena_mark(a);
        float *ay = (float *)arena_alloc(a, N * sizeof(float), "y");
        __nv_bfloat16 *ah = (__nv_bfloat16 *)arena_alloc(a, N * sizeof(__nv_bfloat16), "h");
        float xs[N + 1];
        for (int i = 0; i <= N; i++) xs[i] = (float)i;
        if (!strcmp(c, "arena-copy")) copy(ay, xs, sizeof xs, cudaMemcpyHostToDevice); /* N + 1 floats */
        copy(ax, xs, N * sizeof(float), cudaMemcpyHostToDevice);
        if (!strcmp(c, "arena-ok")) k_ok<<<1, N / 4, N * sizeof(float)>>>(ax, ay, (__nv_bfloat162 *)ah);
        else if (!strcmp(c, "arena-read")) k_past_end<<<1, 32>>>(ax, ay, N);
        else if (!strcmp(c, "arena-stale")) {
            arena_release(a, m); /* y and h are gone */
            k_past_end<<<1, 32>>>(ay, ax, 0);
        } else {
            fprintf(stderr, "emu_selftest: unknown case %s\n", c);
            return 2;
        }
        check(cudaGetLastError(), "launch");
        check(cudaDeviceSynchronize(), "synchronize");
        arena_free(a);
        printf("ok\n");
        return 0;
    }
    float xs[N];
    for (int i = 0; i < N; i++) xs[i] = host[i] = (float)i;
    copy(x, xs, sizeof xs, cudaMemcpyHostToDevice);
    copy(holder, &host, sizeof host, cudaMemcpyHostToDevice);
    if (!strcmp(c, "ok")) {
        k_ok<<<1, N / 4, N * sizeof(float)>>>(x, y, (__nv_bfloat162 *)h);
        float ys[N];
        copy(ys, y, sizeof ys, cudaMemcpyDeviceToHost);
        for (int i = 0; i < N; i++)
            if (ys[i] != 2.0f * (float)i) {
                fprintf(stderr, "emu_selftest: y[%d] = %g, want %g\n", i, ys[i], 2.0 * i);
                return 1;
            }
    } else if (!strcmp(c, "misaligned")) k_misaligned<<<1, 32>>>(x, y);
    else if (!strcmp(c, "past-end")) k_past_end<<<1, 32>>>(x, y, N);
    else if (!strcmp(c, "smem")) k_smem<<<1, 32, 32 * sizeof(float)>>>(y, 32);
    else if (!strcmp(c, "host")) k_host<<<1, 32>>>(holder, y);
    else if (!strcmp(c, "bf16x2")) k_bf16x2<<<1, 32>>>(h);
    else {
        fprintf(stderr, "usage: emu_selftest ok|misaligned|past-end|smem|host|bf16x2|arena-ok|arena-read|arena-copy|"
                        "arena-stale\n");
        return 2;
    }
    check(cudaGetLastError(), "launch");
    check(cudaDeviceSynchronize(), "synchronize");
    printf("ok\n");
    free(host);
    return 0;
}
