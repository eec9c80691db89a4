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
 *   emu_selftest deadlock     thread 0 at a shuffle while the rest of the block waits at __syncthreads
 *   emu_selftest lane-ended   a shuffle that one lane of the warp never reaches (it returned)
 *   emu_selftest arena-ok     the ok kernel on blocks of a device arena (sched/arena.c): prints "ok"
 *   emu_selftest arena-read   a load one element past an arena block (inside the arena: no GPU fault there)
 *   emu_selftest arena-copy   a cudaMemcpyAsync one element longer than its arena block
 *   emu_selftest arena-stale  a load from a block released with its arena mark
 * With TT_EMU_RACECHECK=1 (cuda_emu.cc, "racecheck"):
 *   emu_selftest race-ok      shared memory ordered by barriers, cp.async waits and a warp's meetings, input read
 *                             by every block, ldmatrix after a barrier: prints "ok"
 *   emu_selftest race-raw     a thread reads what another wrote to shared memory, no barrier between
 *   emu_selftest race-war     a thread overwrites its shared slot that a neighbour reads, no barrier between
 *   emu_selftest race-rmw     a tree sum in a __shared__ array without the barrier in its loop (`s[t] += s[t + w]`)
 *   emu_selftest race-static  a thread overwrites its __shared__ slot that a neighbour reads, no barrier between
 *   emu_selftest race-uninit  a thread reads dynamic shared memory that no thread of its block wrote
 *   emu_selftest race-blocks  two blocks write one element of device memory
 *   emu_selftest race-cp      a cp.async refills a tile another thread reads before the barrier
 *   emu_selftest race-cpwait  a thread reads a neighbour's cp.async destination between two barriers, before
 *                             the neighbour's wait: the copy may still be landing
 *   emu_selftest race-reads   a write unordered with one warp's reads of a word after another warp read it twice
 *   emu_selftest race-ldsm    ldmatrix reads a row its lane's neighbour wrote without a barrier (ldmatrix
 *                             reads before the warp's meeting: stricter than a shuffle)
 * With TT_EMU_DEFER (cuda_emu.cc, "deferred execution"): two rounds of a load on a copy stream into one
 * device buffer from one pinned staging buffer, a kernel on a compute stream reading it and a copy of its
 * result back to pinned memory, ordered by events:
 *   emu_selftest defer-ok     every ordering kept (and a wait on an event never recorded): prints "ok"
 *   emu_selftest defer-raw    the second kernel does not wait for its load (lazy: it reads the first load's data)
 *   emu_selftest defer-war    the second load does not wait for the first kernel (eager-copies: it overwrites the
 *                             buffer that kernel still has to read)
 *   emu_selftest defer-host   the host refills the staging buffer without waiting for the first load (lazy: the
 *                             load copies the second round's data)
 *   emu_selftest defer-read   the host reads the results without waiting for them (lazy: nothing ran yet)
 *
 * Each bad case must abort with a message naming its kernel and the GPU's
 * error (an illegal or a misaligned address), or racecheck's hazard; a bad
 * defer- case prints the wrong value it read and exits 1 (its policy sees it;
 * without TT_EMU_DEFER the emulator's order hides it). */
extern "C" {
#include "sched/arena.h"
}

#include "kernels/cuda/cuda_fa2.h"

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

/* ---- racecheck's cases (64 threads a block, 2 blocks where it says) ---- */

/* Race-free: every block reads all of x; each thread stages its 16 bytes of x by cp.async and reads its
 * neighbour's after the wait and a barrier; writes its own slot and reads its warp neighbour's after a
 * shuffle (the warp's meeting); ldmatrix after a barrier; each block writes its own part of y. */
__global__ void k_race_free(const uint16_t *x, float *y) {
    extern __shared__ __align__(16) unsigned char sm[];
    uint16_t *tile = (uint16_t *)sm;         /* 64 x 8 bf16 */
    float *slot = (float *)(sm + 64 * 16);   /* 64 floats */
    int t = threadIdx.x, b = blockIdx.x, n = blockDim.x;
    float all = 0;
    for (int i = 0; i < 8 * n; i++) all += (float)x[i];
    tt_fa2_cp16(NULL, t, tile + 8 * t, x + 8 * t, 1);
    tt_fa2_cp_commit(NULL, t);
    tt_fa2_cp_wait(NULL, t, 0);
    __syncthreads();
    float nb = (float)tile[8 * ((t + 1) % n)];
    slot[t] = nb;
    float sh = tt_fa2_shfl_xor(NULL, t, nb, 1);
    float pair = slot[t ^ 1];
    uint32_t r[4];
    if (t < 32) tt_fa2_ldsm(NULL, t, r, tile + 8 * t, 0);
    else tt_fa2_ldsm(NULL, t, r, tile + 8 * (t - 32), 0);
    __syncthreads();
    slot[t] = 0; /* after the barrier: every read of the slots is over */
    y[b * n + t] = all + nb + sh + pair + (float)(r[0] & 0xffff);
}
__global__ void k_race_raw(float *y) {
    extern __shared__ float s[];
    if (threadIdx.x == 0) s[0] = 1.0f;
    if (threadIdx.x == 1) y[0] = s[0];
}
__global__ void k_race_war(float *y) {
    extern __shared__ float s[];
    int t = threadIdx.x;
    s[t] = (float)t;
    __syncthreads();
    float v = s[(t + 1) % blockDim.x];
    s[t] = 2 * v; /* the previous thread read s[t] after the same barrier */
    y[t] = v;
}
/* a tree sum without the barrier in its loop: the race is in the stores of `s[t] += ...` */
__global__ void k_race_rmw(float *y) {
    __shared__ double s[64];
    int t = threadIdx.x;
    s[t] = t;
    __syncthreads();
    for (int w = 32; w > 0; w >>= 1)
        if (t < w) s[t] += s[t + w];
    __syncthreads();
    y[t] = (float)s[0];
}
__global__ void k_race_static(float *y) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = (float)t;
    y[t] = s[(t + 1) % 64]; /* no barrier */
}
/* half the threads write their slot, every thread reads its own after a barrier */
__global__ void k_race_uninit(float *y) {
    extern __shared__ float s[];
    int t = threadIdx.x;
    if (t < 32) s[t] = (float)t;
    __syncthreads();
    y[t] = s[t];
}
__global__ void k_race_blocks(float *y) {
    if (threadIdx.x == 0) y[0] = (float)blockIdx.x;
}
/* Each thread copies its 16 bytes by cp.async and reads the previous thread's (thread 0 its own): right after
 * its own wait, with no barrier (race-cp); or between two barriers, before its wait (race-cpwait: the copy
 * read may still be landing). */
__global__ void k_race_cp(const uint16_t *x, float *y, int landing) {
    extern __shared__ __align__(16) unsigned char sm[];
    uint16_t *tile = (uint16_t *)sm;
    int t = threadIdx.x, nb = 8 * (t ? t - 1 : 0);
    tt_fa2_cp16(NULL, t, tile + 8 * t, x + 8 * t, 1);
    tt_fa2_cp_commit(NULL, t);
    float v;
    if (landing) {
        __syncthreads();
        v = (float)tile[nb];
        __syncthreads();
        tt_fa2_cp_wait(NULL, t, 0);
    } else {
        tt_fa2_cp_wait(NULL, t, 0);
        v = (float)tile[nb];
    }
    y[t] = v;
}
/* every thread reads s[0]; warp 0 reads it again after a shuffle; after another, thread 1 writes it: warp 1's
 * reads are unordered with the write (racecheck keeps reads of two warps, not the last two reads) */
__global__ void k_race_reads(float *y) {
    __shared__ float s[1];
    int t = threadIdx.x;
    if (t == 0) s[0] = 1.0f;
    __syncthreads();
    float v = s[0];
    v = tt_fa2_shfl_xor(NULL, t, v, 1);
    if (t < 32) v += s[0];
    v = tt_fa2_shfl_xor(NULL, t, v, 1);
    if (t == 1) s[0] = v;
    y[t] = v;
}
__global__ void k_race_ldsm(float *y) {
    extern __shared__ __align__(16) unsigned char sm[];
    uint16_t *tile = (uint16_t *)sm;
    int t = threadIdx.x;
    for (int i = 0; i < 8; i++) tile[8 * t + i] = (uint16_t)(t + i);
    uint32_t r[4];
    tt_fa2_ldsm(NULL, t, r, tile + 8 * (t ? t - 1 : 0), 0); /* lane t - 1's row (lane 0 its own), no barrier */
    y[t] = (float)r[0];
}

/* y = 2x (N threads) */
__global__ void k_deadlock(float *y) {
    float v = 1.0f;
    if (threadIdx.x == 0) v = __shfl_xor_sync(0xffffffffu, v, 1, 32);
    __syncthreads();
    y[threadIdx.x] = v;
}
__global__ void k_lane_ended(float *y) {
    if (threadIdx.x == 3) return;
    y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 1, 32);
}

__global__ void k_twice(const float *x, float *y) { y[threadIdx.x] = 2 * x[threadIdx.x]; }

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

/* The defer- cases (the header says which ordering each one drops); 0 when the results are right. */
static int defer_case(const char *c) {
    int raw = !strcmp(c, "defer-raw"), war = !strcmp(c, "defer-war"), host = !strcmp(c, "defer-host"),
        read = !strcmp(c, "defer-read");
    if (!raw && !war && !host && !read && strcmp(c, "defer-ok") != 0) {
        fprintf(stderr, "emu_selftest: unknown case %s\n", c);
        return 2;
    }
    float *stage, *out, *x, *y; /* stage: N pinned; out: 2N pinned; x: N (the "slot"); y: 2N */
    check(cudaMallocHost((void **)&stage, N * sizeof(float)), "cudaMallocHost");
    check(cudaMallocHost((void **)&out, 2 * N * sizeof(float)), "cudaMallocHost");
    check(cudaMalloc((void **)&x, N * sizeof(float)), "cudaMalloc");
    check(cudaMalloc((void **)&y, 2 * N * sizeof(float)), "cudaMalloc");
    memset(out, 0, 2 * N * sizeof(float));
    cudaStream_t cp, comp;
    check(cudaStreamCreateWithFlags(&cp, cudaStreamNonBlocking), "stream");
    check(cudaStreamCreateWithFlags(&comp, cudaStreamNonBlocking), "stream");
    cudaEvent_t loaded[2], done, fin, never;
    for (int r = 0; r < 2; r++) check(cudaEventCreateWithFlags(&loaded[r], cudaEventDisableTiming), "event");
    check(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "event");
    check(cudaEventCreateWithFlags(&fin, cudaEventDisableTiming), "event");
    check(cudaEventCreateWithFlags(&never, cudaEventDisableTiming), "event");
    for (int r = 0; r < 2; r++) {
        if (r == 1 && !host) check(cudaEventSynchronize(loaded[0]), "the first load"); /* its source is read */
        for (int i = 0; i < N; i++) stage[i] = (float)(1000 * r + i);
        if (r == 1 && !war) check(cudaStreamWaitEvent(cp, done, 0), "wait"); /* the first kernel read x */
        check(cudaMemcpyAsync(x, stage, N * sizeof(float), cudaMemcpyHostToDevice, cp), "load");
        check(cudaEventRecord(loaded[r], cp), "record");
        if (!(r == 1 && raw)) check(cudaStreamWaitEvent(comp, loaded[r], 0), "wait");
        check(cudaStreamWaitEvent(comp, never, 0), "a wait on an event never recorded: none");
        k_twice<<<1, N, 0, comp>>>(x, y + r * N);
        check(cudaGetLastError(), "launch");
        if (r == 0) check(cudaEventRecord(done, comp), "record");
        check(cudaMemcpyAsync(out + r * N, y + r * N, N * sizeof(float), cudaMemcpyDeviceToHost, comp), "read-back");
    }
    check(cudaEventRecord(fin, comp), "record");
    if (!read) check(cudaEventSynchronize(fin), "the read-back");
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < N; i++)
            if (out[r * N + i] != 2.0f * (float)(1000 * r + i)) {
                fprintf(stderr, "emu_selftest: %s: round %d, y[%d] = %g, want %g (an ordering between streams, or "
                                "between a stream and the host, is missing)\n", c, r, i, out[r * N + i],
                        2.0 * (1000 * r + i));
                return 1;
            }
    check(cudaDeviceSynchronize(), "synchronize");
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv) {
    const char *c = argc == 2 ? argv[1] : "";
    if (!strncmp(c, "defer-", 6)) return defer_case(c);
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
    else if (!strcmp(c, "deadlock")) k_deadlock<<<1, 64>>>(y);
    else if (!strcmp(c, "lane-ended")) k_lane_ended<<<1, 32>>>(y);
    else if (!strcmp(c, "race-ok")) {
        k_race_free<<<2, 64, 64 * 16 + 64 * sizeof(float)>>>((const uint16_t *)x, y);
        k_ok<<<1, N / 4, N * sizeof(float)>>>(x, y, (__nv_bfloat162 *)h);
    } else if (!strcmp(c, "race-raw")) k_race_raw<<<1, 64, 64 * sizeof(float)>>>(y);
    else if (!strcmp(c, "race-war")) k_race_war<<<1, 64, 64 * sizeof(float)>>>(y);
    else if (!strcmp(c, "race-rmw")) k_race_rmw<<<1, 64>>>(y);
    else if (!strcmp(c, "race-static")) k_race_static<<<1, 64>>>(y);
    else if (!strcmp(c, "race-uninit")) k_race_uninit<<<1, 64, 64 * sizeof(float)>>>(y);
    else if (!strcmp(c, "race-blocks")) k_race_blocks<<<2, 64>>>(y);
    else if (!strcmp(c, "race-cp")) k_race_cp<<<1, 64, 64 * 16>>>((const uint16_t *)x, y, 0);
    else if (!strcmp(c, "race-cpwait")) k_race_cp<<<1, 64, 64 * 16>>>((const uint16_t *)x, y, 1);
    else if (!strcmp(c, "race-reads")) k_race_reads<<<1, 64>>>(y);
    else if (!strcmp(c, "race-ldsm")) k_race_ldsm<<<1, 32, 32 * 16>>>(y);
    else {
        fprintf(stderr, "usage: emu_selftest ok|misaligned|past-end|smem|host|bf16x2|deadlock|lane-ended|arena-ok|arena-read|arena-copy|"
                        "arena-stale|race-ok|race-raw|race-war|race-rmw|race-static|race-uninit|race-blocks|race-cp|race-cpwait|race-reads|race-ldsm|"
                        "defer-ok|defer-raw|defer-war|defer-host|defer-read\n");
        return 2;
    }
    check(cudaGetLastError(), "launch");
    check(cudaDeviceSynchronize(), "synchronize");
    printf("ok\n");
    free(host);
    return 0;
}
