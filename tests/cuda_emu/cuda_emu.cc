/* tests/cuda_emu/cuda_emu.cc — the emulated GPU's runtime (cuda_emu.h says
 * what it is for): fibers for a block's threads, the CUDA runtime calls the
 * backend makes, and cuBLAS / cuBLASLt products. Programming errors
 * in how the backend uses the API (an unknown stream, a launch the GPU would
 * refuse, a product layout cuBLAS would refuse) are reported the way the real
 * libraries report them, so the backend's own checks fire. Streams run each
 * operation when it is issued, or with TT_EMU_DEFER queue them and run them
 * in the orders a GPU's streams may take ("deferred execution"), so that an
 * ordering missing between two streams, or between a stream and the host,
 * changes the numbers here as it would on a GPU. */
#include "tests/cuda_emu/cuda_emu.h"
#include "kernels/cuda/cuda_fa2.h"
#include "tests/cuda_emu/fiber.h"

#include <cublasLt.h>
#include <cblas.h>
#include <cublas_v2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

extern "C" {
#include "sched/arena.h"
}

/* ---- fibers ------------------------------------------------------------------
 * A block's threads are fibers (tests/cuda_emu/fiber.h): a step launches
 * millions of threads, and they switch at every barrier and warp operation. */
enum { EMU_MAX_THREADS = TT_FIB_MAX, EMU_STACK = 256 << 10 };

static pthread_mutex_t g_kernel_mu = PTHREAD_MUTEX_INITIALIZER; /* one kernel at a time: __shared__ is static */
static tt_fib_sched g_fs; /* who and name set at each launch */
static tt_emu_coords g_coord[EMU_MAX_THREADS]; /* each thread's threadIdx, blockIdx, blockDim, gridDim */
static void (*g_body)(void *);
static unsigned char *g_dyn; /* the block's dynamic shared memory */
static size_t g_dyn_n;
static const char *g_kernel; /* for messages */
static int g_waited;         /* a fiber of this launch waited */
static int g_direct;         /* this launch runs its threads as plain calls (see emu_func) */
static unsigned g_blk;       /* the running block: linear index + 1 (racecheck) */
/* Warp exchanges: a buffer per parity of the warp's meeting count (g_fs.warp_meet), so a lane
 * that runs ahead to the next exchange does not overwrite what a slower lane
 * still reads. */
static double g_xf[2][EMU_MAX_THREADS]; /* a shuffle's values (float or double), by warp meeting parity */
static uint32_t g_xa[2][EMU_MAX_THREADS][4], g_xb[2][EMU_MAX_THREADS][2];

const tt_emu_coords *tt_emu_self(void) {
    if (!g_fs.cur) {
        fprintf(stderr, "cuda_emu: threadIdx/blockIdx read outside a kernel\n");
        abort();
    }
    return &g_coord[g_fs.cur->tid];
}
uint3 tt_emu_tid(void) { return tt_emu_self()->t; }
uint3 tt_emu_bid(void) { return tt_emu_self()->b; }
dim3 tt_emu_bdim(void) { return tt_emu_self()->bd; }
dim3 tt_emu_gdim(void) { return tt_emu_self()->gd; }
void *tt_emu_dyn_smem(void) { return g_dyn; }

/* The running thread waits at a barrier (TT_FIB_BLOCK_WAIT) or warp operation (TT_FIB_WARP_WAIT). */
static void fiber_wait(int s) {
    if (g_direct) {
        fprintf(stderr, "cuda_emu: %s waited at a barrier or warp operation in this launch but in none on its first: "
                        "the emulator ran it without fibers\n", g_kernel);
        abort();
    }
    g_waited = 1;
    tt_fib_wait(&g_fs, s);
}

void __syncthreads(void) { fiber_wait(TT_FIB_BLOCK_WAIT); }

static int warp_lanes(int w) { return tt_fib_warp_lanes(&g_fs, w); }

static double shfl_xor(unsigned mask, double v, int lane_mask, int width) {
    int tid = g_fs.cur->tid, w = tid >> 5, p = g_fs.warp_meet[w] & 1, src = (tid & ~31) | ((tid & 31) ^ lane_mask);
    if (mask != 0xffffffffu || width != 32 || lane_mask < 0 || lane_mask > 31 || (src & 31) >= warp_lanes(w)) {
        fprintf(stderr, "cuda_emu: %s: __shfl_xor_sync(0x%x, v, %d, %d) from lane %d of a %d-lane warp\n", g_kernel,
                mask, lane_mask, width, tid & 31, warp_lanes(w));
        abort();
    }
    g_xf[p][tid] = v;
    fiber_wait(TT_FIB_WARP_WAIT);
    return g_xf[p][src];
}
float __shfl_xor_sync(unsigned mask, float v, int lane_mask, int width) { return (float)shfl_xor(mask, v, lane_mask, width); }
double __shfl_xor_sync(unsigned mask, double v, int lane_mask, int width) { return shfl_xor(mask, v, lane_mask, width); }

/* ---- racecheck (TT_EMU_RACECHECK=1) -------------------------------------------------
 * The emulator runs a block's threads in turn and blocks one after the other,
 * so an access that a GPU would race with another (threads of a block with
 * no barrier between them, or two blocks of a launch) gives the order-free
 * answer here by luck. With TT_EMU_RACECHECK=1 each byte a kernel touches
 * keeps its last write and up to two reads (block, thread, barrier epoch,
 * warp meeting), and an access that conflicts with one of them stops the run,
 * as compute-sanitizer --tool racecheck would report it, naming both threads:
 *  - two accesses conflict when one is a write and they are by different
 *    threads with nothing ordering them: in shared memory (the block's
 *    dynamic shared memory, __shared__ data), by threads of the block between
 *    the same two barriers — lanes of one warp are ordered by a warp-wide
 *    operation between them (a shuffle, ldmatrix, mma), which is more lenient
 *    than the PTX memory model, where only __syncwarp orders them;
 *  - in device (or pinned host) memory, the same, and any two blocks of the
 *    launch (they run at once on a GPU, in no order; the kernels use no
 *    atomics);
 *  - cp.async writes its destination from its issue to the wait that covers
 *    it: a write at its issue, and at the wait one checked against every
 *    access since the issue (barriers between or not); ldmatrix reads each
 *    lane's row as that lane's read when it joins the warp's meeting, before
 *    it: stricter than the shuffles' rule (a neighbour's write to the row
 *    needs a barrier before the ldmatrix), as the hardware has it.
 * A read of dynamic shared memory that no thread of the block wrote stops it
 * too (on a GPU, whatever the memory held; the emulator's NaN fill shows it
 * only where the value reaches a result). Launches are ordered by their
 * stream (this emulator runs them in issue order), so records start afresh
 * at each launch. It costs 24 bytes per byte touched in a launch, so it is
 * for small shapes. */
static int g_race;          /* TT_EMU_RACECHECK=1 */
static unsigned g_launch;   /* launches so far: a shadow page from an earlier one is stale */
__attribute__((constructor)) static void race_init(void) {
    const char *v = getenv("TT_EMU_RACECHECK");
    g_race = v && *v && strcmp(v, "0") != 0;
}
/* One access, packed: block + 1 (0: no access), thread, epoch, its warp's meeting count. */
enum { RC_BLK_BITS = 20, RC_TID_BITS = 10, RC_EP_BITS = 14, RC_MEET_BITS = 20 };
typedef uint64_t rc_acc;
static rc_acc rc_pack(unsigned blk, unsigned tid, unsigned ep, unsigned meet) {
    return (uint64_t)blk | (uint64_t)tid << RC_BLK_BITS | (uint64_t)ep << (RC_BLK_BITS + RC_TID_BITS) |
           (uint64_t)meet << (RC_BLK_BITS + RC_TID_BITS + RC_EP_BITS);
}
static unsigned rc_blk(rc_acc a) { return (unsigned)(a & ((1u << RC_BLK_BITS) - 1)); }
static unsigned rc_tid(rc_acc a) { return (unsigned)(a >> RC_BLK_BITS & ((1u << RC_TID_BITS) - 1)); }
static unsigned rc_ep(rc_acc a) { return (unsigned)(a >> (RC_BLK_BITS + RC_TID_BITS) & ((1u << RC_EP_BITS) - 1)); }
static unsigned rc_meet(rc_acc a) { return (unsigned)(a >> (RC_BLK_BITS + RC_TID_BITS + RC_EP_BITS)); }
/* The access's warp, told apart from other blocks' warps. */
static unsigned rc_unit(rc_acc a) { return rc_blk(a) << 5 | rc_tid(a) >> 5; }

enum { RC_PAGE = 4096 };
/* a byte's records side by side: an access reads and writes one run of them, not three arrays' */
typedef struct { rc_acc w, r0, r1; } rc_rec;
typedef struct { unsigned launch; rc_rec rec[RC_PAGE]; } rc_page;
static std::map<uintptr_t, rc_page *> g_rc_pages; /* by address / RC_PAGE; used under g_kernel_mu */
/* In front of the map, the pages used last, direct-mapped by key: a kernel reads and writes a few buffers
 * in turn, and a tree walk for each of their bytes took most of racecheck's time. */
enum { RC_CACHE = 256 };
static struct { uintptr_t key1; rc_page *p; } g_rc_cache[RC_CACHE]; /* key1: the key + 1 (0: empty) */

static void rc_forget(void) {
    for (auto &kv : g_rc_pages) free(kv.second);
    g_rc_pages.clear();
    memset(g_rc_cache, 0, sizeof g_rc_cache);
}

static rc_page *rc_page_of(uintptr_t key) {
    auto *c = &g_rc_cache[key % RC_CACHE];
    if (c->key1 != key + 1) {
        rc_page *&p = g_rc_pages[key];
        if (!p) {
            if (!(p = (rc_page *)malloc(sizeof *p))) {
                fprintf(stderr, "cuda_emu: racecheck: out of memory for its records (run it at smaller shapes)\n");
                abort();
            }
            p->launch = 0; /* stale: launches count from 1 */
        }
        c->key1 = key + 1;
        c->p = p;
    }
    rc_page *p = c->p;
    if (p->launch != g_launch) {
        memset(p, 0, sizeof *p);
        p->launch = g_launch;
    }
    return p;
}

/* Whether earlier access p (by the running block) happens before the running thread's access now. */
static int rc_ordered(rc_acc p, unsigned tid, unsigned ep, unsigned meet) {
    return rc_tid(p) == tid || rc_ep(p) < ep || ((rc_tid(p) >> 5) == (tid >> 5) && rc_meet(p) < meet);
}

static void rc_thread(char *b, size_t bn, unsigned blk, unsigned tid) {
    dim3 bd = g_coord[0].bd, gd = g_coord[0].gd;
    unsigned k = blk - 1;
    snprintf(b, bn, "thread (%u,%u,%u) of block (%u,%u,%u)", tid % bd.x, tid / bd.x % bd.y, tid / (bd.x * bd.y),
             k % gd.x, k / gd.x % gd.y, k / (gd.x * gd.y));
}

/* landing: the access is a cp.async copy landing at its wait, checked from its issue on */
[[noreturn]] static void rc_report(uintptr_t a, size_t n, int store, int smem, rc_acc other, int other_store,
                                   int landing) {
    char me[96], them[96];
    rc_thread(me, sizeof me, g_blk, (unsigned)g_fs.cur->tid);
    rc_thread(them, sizeof them, rc_blk(other), rc_tid(other));
    const char *kind = store && other_store ? "write-after-write" : store ? "write-after-read" : "read-after-write";
    const char *order = rc_blk(other) != g_blk ? "another block of the launch, which runs in no order with this one"
                        : landing             ? "between the copy's issue and this wait, barriers or not"
                                              : "no barrier between them";
    fprintf(stderr, "cuda_emu: racecheck: %s: a %s hazard: %s %s %zu bytes at %p (%s), which %s %s (%s)\n",
            g_kernel, kind, me, landing ? "lands a cp.async copy of" : store ? "writes" : "reads", n, (void *)a,
            smem ? "shared memory" : "device memory", them, other_store ? "wrote" : "read", order);
    abort();
}

[[noreturn]] static void rc_uninit(uintptr_t a, size_t n) {
    char me[96];
    rc_thread(me, sizeof me, g_blk, (unsigned)g_fs.cur->tid);
    fprintf(stderr, "cuda_emu: racecheck: %s: an uninitialized read: %s reads %zu bytes at %p (dynamic shared "
                    "memory) that no thread of its block wrote: on a GPU, whatever the memory held\n", g_kernel, me, n,
            (void *)a);
    abort();
}

/* The running thread's access of n bytes at a (smem: 0 device memory; 1 static data, the __shared__ arrays
 * or only-read __constant__ tables; 2 the block's dynamic shared memory, where a read of a byte no thread of
 * the block wrote is reported too; in shared memory, records from other blocks are stale), checked against
 * the records as if made at epoch ep0 and warp meeting meet0 (now, but for a cp.async landing: its issue),
 * recorded as made now. Of the reads since the last write, two are kept: a
 * read that happens before a new one is superseded by it (a write unordered with the old one is unordered
 * with the new one too); of reads that are all unordered, two from different warps (or blocks) where there
 * are such, since any later write then conflicts with at least one of the two whenever it conflicts with
 * any read of the set. */
static void race_check(uintptr_t a, size_t n, int store, int smem, unsigned ep0, unsigned meet0) {
    unsigned tid = (unsigned)g_fs.cur->tid, ep = g_fs.epoch, meet = g_fs.warp_meet[tid >> 5];
    if (ep >> RC_EP_BITS || meet >> RC_MEET_BITS) {
        fprintf(stderr, "cuda_emu: racecheck: %s: a block with %u barriers or %u warp meetings (run it at smaller "
                        "shapes)\n", g_kernel, 1u << RC_EP_BITS, 1u << RC_MEET_BITS);
        abort();
    }
    rc_acc me = rc_pack(g_blk, tid, ep, meet);
    int landing = ep0 != ep || meet0 != meet;
    /* byte by byte, but a run of bytes with the same records (mostly the whole access) decided once */
    for (uintptr_t x = a, end = a + n; x < end;) {
        rc_page *pg = rc_page_of(x / RC_PAGE);
        size_t i = x % RC_PAGE, m = end - x < RC_PAGE - i ? end - x : RC_PAGE - i, k = 1;
        rc_rec *e = pg->rec + i;
        rc_acc w = e->w, r0 = e->r0, r1 = e->r1;
        while (k < m && e[k].w == w && e[k].r0 == r0 && e[k].r1 == r1) k++;
        x += k;
        if (smem) { /* another block's shared memory: gone */
            if (w && rc_blk(w) != g_blk) w = 0;
            if (r0 && rc_blk(r0) != g_blk) r0 = 0;
            if (r1 && rc_blk(r1) != g_blk) r1 = 0;
        }
#define RC_CONFLICT(p) ((p) && (rc_blk(p) != g_blk || !rc_ordered((p), tid, ep0, meet0)))
        if (RC_CONFLICT(w)) rc_report(a, n, store, smem, w, 1, landing);
        if (store) {
            if (RC_CONFLICT(r0)) rc_report(a, n, store, smem, r0, 0, landing);
            if (RC_CONFLICT(r1)) rc_report(a, n, store, smem, r1, 0, landing);
            w = me;
            r0 = r1 = 0; /* both happen before this write */
        } else {
            if (smem == 2 && !w) rc_uninit(a, n);
            if (r0 && !RC_CONFLICT(r0)) r0 = 0; /* superseded */
            if (r1 && !RC_CONFLICT(r1)) r1 = 0;
            if (!r0) r0 = me;
            else if (!r1) r1 = me;
            else if (rc_unit(r0) == rc_unit(r1)) r1 = me; /* r0 and this one: two warps, where there are two */
            /* else r0 and r1 are of two warps already: a write that conflicts with this read conflicts with one
             * of them */
        }
#undef RC_CONFLICT
        for (size_t j = 0; j < k; j++) e[j] = (rc_rec){w, r0, r1};
    }
}
static void race_access(uintptr_t a, size_t n, int store, int smem) {
    race_check(a, n, store, smem, g_fs.epoch, g_fs.warp_meet[g_fs.cur->tid >> 5]);
}

/* cuda_fa2.h's warp-wide operations (its w is NULL on a GPU, and here). */
void tt_emu_sync(tt_warp_emu *) { __syncthreads(); }
float tt_emu_shfl_xor(tt_warp_emu *, int, float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }

/* ---- TT_EMU_STATS=1: what the tensor-core kernels ask of shared memory -----------------
 * Per kernel, printed at exit: its launches, the warps' mma.m16n8k16 and ldmatrix .x4, the shared-memory
 * bytes those ldmatrix read an mma (the ratio that bounds a kernel by the SM's 128 bytes a clock rather than
 * its tensor cores), and their wavefronts against the conflict-free four an .x4 takes: each of its four
 * 8 x 16-byte phases needs as many wavefronts as the most of its rows that fall in one 16-byte column of
 * the 128-byte bank window ((address / 16) mod 8). Counts, not times: the same on every machine. Kept in
 * each kernel's emu_func (below). */
static int g_stats;
typedef struct { const char *name; uint64_t launches, mma, ldsm, wavefronts, cp_bytes; } emu_stat;
static emu_stat *g_stat; /* the running kernel's, with TT_EMU_STATS (g_kernel_mu) */
static void stats_print(void);
__attribute__((constructor)) static void stats_init(void) {
    const char *v = getenv("TT_EMU_STATS");
    g_stats = v && *v && strcmp(v, "0") != 0;
    if (g_stats) atexit(stats_print);
}
/* An ldmatrix .x4 of the warp whose 32 row addresses are rows[0..31]. */
static void stats_ldsm(const uint16_t *const *rows) {
    g_stat->ldsm++;
    for (int ph = 0; ph < 4; ph++) {
        int n[8] = {0}, most = 0;
        for (int r = 0; r < 8; r++) {
            int c = (int)(((uintptr_t)rows[8 * ph + r] >> 4) & 7);
            if (++n[c] > most) most = n[c];
        }
        g_stat->wavefronts += (uint64_t)most;
    }
}

/* mma.m16n8k16 (bf16 in, fp32 accumulate): each lane deposits its fragments,
 * the warp meets, the first lane back computes the warp's 16 x 8 product from
 * the operands the fragment layout (cuda_fa2.h's, checked against the PTX ISA
 * by tests/test_cuda_fa2.c) puts together, and each lane adds its four
 * elements of it to its accumulators. */
static float g_ab[EMU_MAX_THREADS / 32][16][8];
static unsigned g_ab_meet[EMU_MAX_THREADS / 32]; /* the meeting g_ab was computed for */
void tt_emu_mma(tt_warp_emu *, int tid, float d[4], const uint32_t a[4], const uint32_t b[2]) {
    int w = tid >> 5, p = g_fs.warp_meet[w] & 1, base = tid & ~31, lane = tid & 31;
    if (warp_lanes(w) != 32) {
        fprintf(stderr, "cuda_emu: %s: mma in a warp of %d lanes\n", g_kernel, warp_lanes(w));
        abort();
    }
    memcpy(g_xa[p][tid], a, sizeof g_xa[p][tid]);
    memcpy(g_xb[p][tid], b, sizeof g_xb[p][tid]);
    fiber_wait(TT_FIB_WARP_WAIT);
    if (g_ab_meet[w] != g_fs.warp_meet[w]) { /* the next meeting cannot open before every lane has read this one */
        if (g_stat) g_stat->mma++;
        float A[16][16], B[16][8];
        tt_fa2_warp_operands(g_xa[p][base], g_xb[p][base], A, B);
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 8; j++) {
                float s = 0;
                for (int k = 0; k < 16; k++) s += A[i][k] * B[k][j];
                g_ab[w][i][j] = s;
            }
        g_ab_meet[w] = g_fs.warp_meet[w];
    }
    for (int i = 0; i < 4; i++) d[i] += g_ab[w][tt_fa2_c_row(lane, i)][tt_fa2_c_col(lane, i)];
}

/* ldmatrix: each lane's row address, per parity of the warp's meeting count. */
static const uint16_t *g_lrows[2][EMU_MAX_THREADS];
static tt_cp_emu g_cp[EMU_MAX_THREADS]; /* each thread's cp.async copies in flight (reset per block) */
/* racecheck: where each of them was issued (epoch, warp meeting), in g_cp's order */
static struct { unsigned ep, meet; } g_cp_at[EMU_MAX_THREADS][TT_CP_EMU_MAX];

/* p .. p + n inside the block's dynamic shared memory, 16-byte aligned (what
 * ldmatrix and cp.async need); else the run stops, naming what. */
static void check_smem16(const void *p, size_t n, const char *what) {
    uintptr_t a = (uintptr_t)p, lo = (uintptr_t)g_dyn;
    if (!g_dyn || a < lo || a + n > lo + g_dyn_n || (a & 15)) {
        fprintf(stderr, "cuda_emu: %s: %s %p is not 16-byte aligned in the block's %zu bytes of dynamic shared "
                        "memory\n", g_kernel, what, p, g_dyn_n);
        abort();
    }
}

void tt_emu_ldsm(tt_warp_emu *, int tid, uint32_t r[4], const uint16_t *row, int trans) {
    int w = tid >> 5, p = g_fs.warp_meet[w] & 1;
    if (warp_lanes(w) != 32) {
        fprintf(stderr, "cuda_emu: %s: ldmatrix in a warp of %d lanes\n", g_kernel, warp_lanes(w));
        abort();
    }
    check_smem16(row, 16, "an ldmatrix row");
    if (g_race) race_access((uintptr_t)row, 16, 0, 2);
    g_lrows[p][tid] = row;
    fiber_wait(TT_FIB_WARP_WAIT);
    if (g_stat && (tid & 31) == 0) stats_ldsm(g_lrows[p] + tid);
    tt_fa2_ldsm_gather(g_lrows[p] + (tid & ~31), tid & 31, trans, r);
}

/* Runs one block's threads to the end as fibers (tt_fib_run). */
static void emu_body(void *ctx, int tid) {
    (void)tid;
    g_body(ctx);
}
static void run_block(void *ctx) {
    memset(g_ab_meet, 0xff, sizeof g_ab_meet);
    tt_fib_run(&g_fs, g_fs.n, EMU_STACK, emu_body, ctx);
}

/* ---- kernels ------------------------------------------------------------------ */

static __thread cudaError_t t_sticky; /* a launch error, for cudaGetLastError on the launching thread */
static __thread int t_kernel;      /* a kernel's threads run on this thread now ("what a kernel touches") */
static unsigned g_mem_gen = 1;     /* bumped when a range goes or changes: the threads' cached regions expire */
static void mem_changed(void) { __atomic_fetch_add(&g_mem_gen, 1, __ATOMIC_RELAXED); }
static __thread uintptr_t t_stack_lo, t_stack_len;
static uintptr_t g_fib_len; /* the fiber stacks' bytes, once mapped */

/* This thread's stack (a kernel's locals, where its threads run as plain calls). */
static void note_stack(void) {
    pthread_attr_t at;
    void *lo;
    size_t len;
    if (t_stack_len || pthread_getattr_np(pthread_self(), &at) != 0) return;
    if (pthread_attr_getstack(&at, &lo, &len) == 0) t_stack_lo = (uintptr_t)lo, t_stack_len = len;
    pthread_attr_destroy(&at);
}


/* Per kernel: the dynamic shared memory it may take (cudaFuncSetAttribute),
 * and whether a launch of it ever waited at a barrier or a warp operation.
 * A kernel that did not, on its first launch, runs its threads as plain calls
 * from then on (no fibers: most kernels are element-wise); one that waits
 * later after all stops the run with a message. */
enum { EMU_MAX_FUNCS = 256 };
enum { FN_UNSEEN = 0, FN_DIRECT, FN_FIBERS };
typedef struct emu_func { const void *fn; int max_dyn, mode; emu_stat st; } emu_func;
static emu_func g_funcs[EMU_MAX_FUNCS];
static int g_nfuncs;
static pthread_mutex_t g_rt_mu = PTHREAD_MUTEX_INITIALIZER;
enum { SMEM_DEFAULT = 48 << 10 };
/* The GPU's shared memory: a block's opt-in limit and an SM's, an H100/H200's (227 and 228 KiB), or with
 * TT_EMU_GPU=a100 an A100's (163 and 164 KiB), for the choices the backend makes from them. */
static int g_smem_optin = 227 << 10, g_smem_sm = 228 << 10;
/* and its compute capability: 9.0, 8.0 for an A100, 7.5 with TT_EMU_GPU=t4 (a Turing GPU the backend refuses) */
static int g_cc_major = 9, g_cc_minor = 0;
__attribute__((constructor)) static void gpu_init(void) {
    const char *g = getenv("TT_EMU_GPU");
    if (g && strcmp(g, "a100") == 0) g_smem_optin = 163 << 10, g_smem_sm = 164 << 10, g_cc_major = 8;
    if (g && strcmp(g, "t4") == 0) g_smem_optin = 64 << 10, g_smem_sm = 64 << 10, g_cc_major = 7, g_cc_minor = 5;
}

/* Faults, for the backend's handling of them (TT_EMU_FAULT):
 *   busy      creating the context (cudaFree(0)) fails as on a GPU another process holds in exclusive mode;
 *   launch:N  from the N-th kernel launch issued on, the device has failed (an uncorrectable ECC error): that
 *             launch and every later launch, copy, memset, event and synchronising call report it, as a real
 *             context's sticky error does;
 *   count     at exit, "cuda_emu: N kernel launches" (for choosing N). */
static int g_fault_busy, g_fault_count;
static unsigned long long g_fault_at; /* 0: none */
static std::atomic<unsigned long long> g_issued;
static std::atomic<int> g_fault;     /* the sticky error, once the device has failed */
static void fault_report(void) {
    fprintf(stderr, "cuda_emu: %llu kernel launches\n", (unsigned long long)g_issued.load());
}
__attribute__((constructor)) static void fault_init(void) {
    const char *f = getenv("TT_EMU_FAULT");
    if (!f || !*f) return;
    if (strcmp(f, "busy") == 0) g_fault_busy = 1;
    else if (strcmp(f, "count") == 0) g_fault_count = 1, atexit(fault_report);
    else if (strncmp(f, "launch:", 7) == 0 && (g_fault_at = strtoull(f + 7, NULL, 10)) > 0) {
    } else {
        fprintf(stderr, "cuda_emu: TT_EMU_FAULT must be busy, count or launch:N, not '%s'\n", f);
        abort();
    }
}
/* The device's sticky error, or cudaSuccess: each call below that a failed device refuses returns it first. */
static cudaError_t faulted(void) { return (cudaError_t)g_fault.load(); }
#define FAULTED()                                                                                                    \
    do {                                                                                                             \
        if (cudaError_t f_ = faulted()) return f_;                                                                   \
    } while (0)

static emu_func *func_of(const void *fn) {
    pthread_mutex_lock(&g_rt_mu);
    int i = 0;
    while (i < g_nfuncs && g_funcs[i].fn != fn) i++;
    if (i == g_nfuncs) {
        if (g_nfuncs == EMU_MAX_FUNCS) {
            fprintf(stderr, "cuda_emu: more than %d kernels\n", EMU_MAX_FUNCS);
            abort();
        }
        g_funcs[g_nfuncs++] = (emu_func){fn, SMEM_DEFAULT, FN_UNSEEN, emu_stat{}};
    }
    pthread_mutex_unlock(&g_rt_mu);
    return &g_funcs[i];
}

static void stats_print(void) {
    for (int i = 0; i < g_nfuncs; i++) {
        const emu_stat *t = &g_funcs[i].st;
        if (!t->mma && !t->ldsm && !t->cp_bytes) continue;
        fprintf(stderr, "cuda_emu: stats: %s: %llu launches; %llu mma, %llu ldmatrix.x4 (%.1f bytes of shared memory "
                        "an mma; %.2f x the conflict-free wavefronts), %llu bytes by cp.async\n",
                t->name, (unsigned long long)t->launches, (unsigned long long)t->mma, (unsigned long long)t->ldsm,
                t->mma ? 512.0 * t->ldsm / t->mma : 0.0, t->ldsm ? t->wavefronts / (4.0 * t->ldsm) : 0.0,
                (unsigned long long)t->cp_bytes);
    }
}

static int known_stream(cudaStream_t q);
static void launch_exec(emu_func *fi, const char *name, dim3 grid, dim3 block, size_t smem, void (*body)(void *),
                        void *ctx);
enum { OP_LAUNCH, OP_COPY, OP_MEMSET, OP_PRODUCT, OP_CALL };
static int defer_work(cudaStream_t q, int kind, const char *what, std::function<void()> run);

void tt_emu_run(const void *fn, const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t q,
                void (*body)(void *), void *ctx, void (*drop)(void *)) {
    size_t nt = (size_t)block.x * block.y * block.z;
    cudaError_t e = cudaSuccess;
    const unsigned long long nth = ++g_issued;
    if (g_fault_at && nth >= g_fault_at) g_fault = (int)cudaErrorECCUncorrectable;
    if (faulted()) e = faulted();
    else if (!known_stream(q)) e = cudaErrorInvalidResourceHandle;
    else if (nt == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 || block.z > 64 ||
             nt > EMU_MAX_THREADS || block.x > 1024 || block.y > 1024)
        e = cudaErrorInvalidConfiguration;
    emu_func *fi = func_of(fn);
    if (e == cudaSuccess && smem > (size_t)fi->max_dyn) e = cudaErrorInvalidValue;
    if (e != cudaSuccess) {
        t_sticky = e;
        drop(ctx);
        return;
    }
    if (defer_work(q, OP_LAUNCH, name, [=] {
            launch_exec(fi, name, grid, block, smem, body, ctx);
            drop(ctx);
        }))
        return;
    launch_exec(fi, name, grid, block, smem, body, ctx);
    drop(ctx);
}

/* The launch's threads, run now. */
static void launch_exec(emu_func *fi, const char *name, dim3 grid, dim3 block, size_t smem, void (*body)(void *),
                        void *ctx) {
    size_t nt = (size_t)block.x * block.y * block.z;
    pthread_mutex_lock(&g_kernel_mu);
    g_fs.who = "cuda_emu";
    g_fs.name = name;
    if (!g_fs.stacks) { /* mapped before the first block: the kernels' locals on them pass the access check */
        tt_fib_map(&g_fs, EMU_STACK);
        g_fib_len = (uintptr_t)TT_FIB_MAX * EMU_STACK;
    }
    static unsigned char *dyn;
    static size_t dyn_cap;
    if (smem > dyn_cap) {
        free(dyn);
        dyn = (unsigned char *)aligned_alloc(256, (smem + 255) / 256 * 256);
        dyn_cap = smem;
    }
    g_dyn = smem ? dyn : NULL;
    g_dyn_n = smem;
    mem_changed(); /* the shared memory's range */
    g_body = body;
    g_kernel = name;
    g_fs.n = (int)nt; /* the block's threads (the warps' lanes), also where they run as plain calls */
    g_stat = g_stats ? &fi->st : NULL;
    if (g_stat) g_stat->name = name, g_stat->launches++;
    g_direct = fi->mode == FN_DIRECT;
    g_waited = 0;
    g_launch++;
    if (g_rc_pages.size() > 2048) rc_forget(); /* 8 MiB touched since: their records go */
    if (g_race && (size_t)grid.x * grid.y * grid.z >= (1u << RC_BLK_BITS) - 1) {
        fprintf(stderr, "cuda_emu: racecheck: %s: a grid of more than %u blocks (run it at smaller shapes)\n", name,
                (1u << RC_BLK_BITS) - 2);
        abort();
    }
    note_stack();
    t_kernel = 1;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                if (smem) memset(dyn, 0xff, smem); /* shared memory starts as garbage (NaN), not as zeros */
                for (int i = 0; i < g_fs.n; i++) {
                    tt_emu_coords *c = &g_coord[i];
                    c->t = make_uint3(i % block.x, i / block.x % block.y, i / (block.x * block.y));
                    c->b = make_uint3(bx, by, bz);
                    c->bd = block;
                    c->gd = grid;
                }
                for (int i = 0; i < g_fs.n; i++) g_cp[i].n = g_cp[i].committed = 0; /* op[] is written before read */
                g_fs.epoch = 0;
                g_blk = bx + grid.x * (by + grid.y * bz) + 1;
                if (g_direct)
                    for (int i = 0; i < g_fs.n; i++) {
                        g_fs.cur = &g_fs.fib[i];
                        g_fs.cur->tid = i;
                        body(ctx);
                    }
                else run_block(ctx);
                g_fs.cur = NULL;
                for (int i = 0; i < g_fs.n; i++)
                    if (g_cp[i].n) {
                        fprintf(stderr, "cuda_emu: %s: thread %d ended with %d cp.async copies never waited for\n",
                                g_kernel, i, g_cp[i].n);
                        abort();
                    }
            }
    t_kernel = 0;
    if (fi->mode == FN_UNSEEN) fi->mode = g_waited ? FN_FIBERS : FN_DIRECT;
    pthread_mutex_unlock(&g_kernel_mu);
}

/* ---- the runtime ---------------------------------------------------------------- */

/* Streams: handle i + 1 is g_streams[i] (the legacy stream is 0); events
 * below. */
enum { EMU_MAX_STREAMS = 256 };
static int g_streams[EMU_MAX_STREAMS]; /* 1: live */
static int known_stream(cudaStream_t q) {
    if (!q) return 1;
    intptr_t i = (intptr_t)q - 1;
    pthread_mutex_lock(&g_rt_mu);
    int ok = i >= 0 && i < EMU_MAX_STREAMS && g_streams[i];
    pthread_mutex_unlock(&g_rt_mu);
    return ok;
}
static cudaError_t check_stream(cudaStream_t q) { return known_stream(q) ? cudaSuccess : cudaErrorInvalidResourceHandle; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- deferred execution (TT_EMU_DEFER) ----------------------------------------------
 * Without it every stream runs each operation when it is issued: a valid
 * order of the asynchronous one, but the only one, so an ordering that the
 * backend or the runtime forgot between two streams (a missing
 * cudaStreamWaitEvent, an event recorded on the wrong stream, a pinned
 * buffer the host refills before the copy that reads it ran, the host
 * reading a copy's result before waiting for it) gave the right numbers here
 * and wrong ones on a GPU. With TT_EMU_DEFER each stream (the legacy one
 * too) keeps a FIFO of its operations: launches (their arguments copied at
 * the launch), cudaMemcpyAsync and cudaMemsetAsync (a copy reads its source
 * when it runs, not when issued), cuBLAS / cuBLASLt products (alpha and beta
 * read at the call: host pointer mode), the cuDNN stand-in's computation
 * (emu_cudnn.cc), event records and waits. They run only when
 *  - the host waits: cudaStreamSynchronize (that stream's operations),
 *    cudaEventSynchronize (up to the event's last record),
 *    cudaDeviceSynchronize, cudaFree and cudaFreeHost (they synchronise the
 *    device), cudaStreamDestroy (the stream's), cudaMemcpyToSymbol and
 *    host-to-host copies (the legacy stream's, the stream's: synchronous);
 *    an operation that waits for a record first runs, on whichever stream
 *    that is, what the record follows; all from the waiting thread;
 *  - or the policy chooses, at each API call and between two operations a
 *    host wait runs:
 *      lazy          never: every operation as late as the host's waits allow;
 *      eager-copies  a stream that never had a kernel, product or cuDNN call
 *                    (the copy streams) runs each operation as soon as its
 *                    waits allow, the others stay lazy: a copy that overwrites
 *                    what a pending kernel still reads lands first;
 *      random:SEED   each call, a random subset of the streams whose next
 *                    operation may run, a few rounds (the host threads'
 *                    interleaving varies too: a seed picks a family of orders).
 * cudaStreamWaitEvent waits for the event's record issued last before the
 * call (none: no wait, as CUDA has it); cudaEventQuery says
 * cudaErrorNotReady while the record is pending (after 64 queries of one
 * record in a row it runs it: a host that polls is waiting, and a GPU gets
 * there); cudaEventElapsedTime says it too. Streams made with
 * cudaStreamNonBlocking (all the backend's) are ordered with no other; the
 * legacy stream and blocking streams are ordered with each other as CUDA
 * orders them (an implicit record and wait). A wait's record was issued
 * before the wait, so a host wait always finishes; were it ever not to (a
 * cycle of waits, a record on no stream: an emulator bug) the run stops with
 * a message, never hangs. The operations run one at a time under g_q_mu;
 * copies' and products' spans are checked at issue, kernels' accesses when
 * they run. */
enum { DEFER_OFF, DEFER_LAZY, DEFER_EAGER, DEFER_RANDOM };
static int g_defer;
static uint64_t g_rng;
static pthread_mutex_t g_q_mu = PTHREAD_MUTEX_INITIALIZER; /* the queues, every event's record; before g_kernel_mu */
/* What the mode did, said at exit: the operations queued, the most pending at once, the waits that ran
 * another stream's operations first (g_q_mu). */
static unsigned long long g_n_ops, g_n_pending, g_max_pending, g_n_cross;
static void defer_report(void) {
    fprintf(stderr, "cuda_emu: TT_EMU_DEFER=%s: %llu operations queued, at most %llu pending at once, %llu waits ran "
                    "another stream's operations first\n", getenv("TT_EMU_DEFER"), g_n_ops, g_max_pending, g_n_cross);
}
__attribute__((constructor)) static void defer_init(void) {
    const char *v = getenv("TT_EMU_DEFER");
    if (!v || !*v || !strcmp(v, "0") || !strcmp(v, "off")) return;
    if (!strcmp(v, "lazy")) g_defer = DEFER_LAZY;
    else if (!strcmp(v, "eager-copies")) g_defer = DEFER_EAGER;
    else if (!strncmp(v, "random:", 7) && v[7]) {
        char *end;
        g_rng = strtoull(v + 7, &end, 10);
        if (*end) g_rng = 0, v = "?";
        g_rng = g_rng * 0x9e3779b97f4a7c15ull + 1; /* never 0: xorshift's fixed point */
        g_defer = *v == '?' ? DEFER_OFF : DEFER_RANDOM;
    }
    if (g_defer == DEFER_OFF) {
        fprintf(stderr, "cuda_emu: TT_EMU_DEFER=%s: not lazy, eager-copies, random:SEED (a number) or off\n",
                getenv("TT_EMU_DEFER"));
        exit(2);
    }
    atexit(defer_report);
}
static uint64_t rng_next(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

/* One record of an event: done when its stream ran it. Waits and the
 * event hold it, so an event destroyed or recorded again meanwhile changes
 * nothing for them. */
typedef struct emu_rec {
    int stream, done, driving, polls;
    double t; /* seconds, when it ran */
} emu_rec;
typedef std::shared_ptr<emu_rec> rec_ptr;
enum { OP_RECORD = OP_CALL + 1, OP_WAIT };
typedef struct emu_op {
    int kind; /* OP_* */
    const char *what;
    std::function<void()> run; /* the work (not OP_RECORD, OP_WAIT) */
    rec_ptr rec;               /* the record it makes or waits for */
} emu_op;
typedef struct emu_queue {
    std::deque<emu_op> ops;
    int computes, blocking; /* had a kernel, product or cuDNN call; ordered with the legacy stream */
} emu_queue;
static emu_queue g_q[EMU_MAX_STREAMS + 1]; /* by handle: 0 the legacy stream */

typedef struct emu_event {
    int timing;
    rec_ptr cur; /* the last record issued (g_q_mu); NULL: never recorded */
} emu_event;

static int q_of(cudaStream_t q) { return (int)(intptr_t)q; }
static int runnable(const emu_op &o) { return o.kind != OP_WAIT || o.rec->done; }

/* Runs stream s's next operation, whose wait (if it is one) is over. */
static void run_head(int s) {
    emu_op o = std::move(g_q[s].ops.front());
    g_q[s].ops.pop_front();
    g_n_pending--;
    if (o.kind == OP_RECORD) {
        o.rec->t = now_s();
        o.rec->done = 1;
    } else if (o.kind != OP_WAIT) o.run();
}

/* What the policy runs of its own accord (never a wait's record: only operations that may run). */
static void policy_step(void) {
    if (g_defer == DEFER_EAGER)
        for (int more = 1; more;) {
            more = 0;
            for (int s = 0; s <= EMU_MAX_STREAMS; s++)
                while (!g_q[s].computes && !g_q[s].ops.empty() && runnable(g_q[s].ops.front())) run_head(s), more = 1;
        }
    else if (g_defer == DEFER_RANDOM)
        for (int r = (int)(rng_next() % 3); r > 0; r--)
            for (int s = 0; s <= EMU_MAX_STREAMS; s++)
                if (!g_q[s].ops.empty() && runnable(g_q[s].ops.front()) && (rng_next() >> 32 & 1)) run_head(s);
}

static void drive_rec(const rec_ptr &r);
/* Stream s's next operation run, or (a wait) what it waits for. */
static void step_stream(int s) {
    if (runnable(g_q[s].ops.front())) run_head(s);
    else {
        rec_ptr w = g_q[s].ops.front().rec;
        g_n_cross++;
        drive_rec(w);
    }
}
/* Runs what record r follows, and r. */
static void drive_rec(const rec_ptr &r) {
    if (r->done) return;
    if (r->driving) {
        fprintf(stderr, "cuda_emu: TT_EMU_DEFER: a cycle of stream waits through a record on stream %d: the host's "
                        "wait could never finish (an emulator bug: a wait's record is issued before it)\n", r->stream);
        abort();
    }
    r->driving = 1;
    while (!r->done) {
        if (g_q[r->stream].ops.empty()) {
            fprintf(stderr, "cuda_emu: TT_EMU_DEFER: an event record pending on stream %d, which has no operations "
                            "left: the host's wait could never finish (an emulator bug)\n", r->stream);
            abort();
        }
        step_stream(r->stream);
        policy_step();
    }
    r->driving = 0;
}
/* Runs every operation stream s has. */
static void drive_stream(int s) {
    while (!g_q[s].ops.empty()) {
        step_stream(s);
        policy_step();
    }
}
static void drive_all(void) {
    for (int s = 0; s <= EMU_MAX_STREAMS; s++) drive_stream(s);
}
/* The host waits for stream s, or the whole device (s < 0). */
static void defer_sync(int s) {
    if (!g_defer) return;
    pthread_mutex_lock(&g_q_mu);
    if (s < 0) drive_all();
    else drive_stream(s);
    pthread_mutex_unlock(&g_q_mu);
}

/* Appends o to stream s (g_q_mu), after the implicit waits that order the legacy stream and blocking streams. */
static void enqueue(int s, emu_op o) {
    auto order = [](int before, int after) {
        if (g_q[before].ops.empty()) return; /* all it had ran */
        rec_ptr r = std::make_shared<emu_rec>();
        r->stream = before;
        g_q[before].ops.push_back(emu_op{OP_RECORD, "an implicit record", {}, r});
        g_q[after].ops.push_back(emu_op{OP_WAIT, "an implicit wait", {}, r});
        g_n_pending += 2;
    };
    if (s == 0)
        for (int b = 1; b <= EMU_MAX_STREAMS; b++)
            if (g_q[b].blocking) order(b, 0);
    if (s > 0 && g_q[s].blocking) order(0, s);
    g_q[s].ops.push_back(std::move(o));
    g_n_ops++;
    if (++g_n_pending > g_max_pending) g_max_pending = g_n_pending;
}

/* Deferred: run appended to stream q's queue (1); else 0, and the caller runs it now. */
static int defer_work(cudaStream_t q, int kind, const char *what, std::function<void()> run) {
    if (!g_defer) return 0;
    pthread_mutex_lock(&g_q_mu);
    int s = q_of(q);
    if (kind != OP_COPY && kind != OP_MEMSET) g_q[s].computes = 1;
    enqueue(s, emu_op{kind, what, std::move(run), nullptr});
    policy_step();
    pthread_mutex_unlock(&g_q_mu);
    return 1;
}

/* emu_cudnn.cc's computation on the handle's stream. */
void tt_emu_stream_call(cudaStream_t q, const char *what, std::function<void()> fn) {
    if (!defer_work(q, OP_CALL, what, fn)) fn();
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = t_sticky;
    t_sticky = cudaSuccess;
    return e;
}
const char *cudaGetErrorName(cudaError_t e) {
    static char b[32];
    snprintf(b, sizeof b, "cudaError %d", (int)e);
    return e == cudaSuccess                   ? "cudaSuccess"
           : e == cudaErrorDevicesUnavailable ? "cudaErrorDevicesUnavailable"
           : e == cudaErrorECCUncorrectable   ? "cudaErrorECCUncorrectable"
                                              : b;
}
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument (emulated GPU)";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument (emulated GPU)";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle (emulated GPU)";
    case cudaErrorMemoryAllocation: return "out of memory (emulated GPU)";
    case cudaErrorDevicesUnavailable: return "CUDA-capable device(s) is/are busy or unavailable (emulated GPU)";
    case cudaErrorECCUncorrectable: return "uncorrectable ECC error encountered (emulated GPU)";
    default: return "error (emulated GPU)";
    }
}
cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaDeviceGetPCIBusId(char *, int, int) { return cudaErrorNotSupported; }
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d) {
    if (d != 0) return cudaErrorInvalidDevice;
    if (a == cudaDevAttrMaxSharedMemoryPerBlockOptin) *v = g_smem_optin;
    else if (a == cudaDevAttrComputeCapabilityMajor) *v = g_cc_major;
    else if (a == cudaDevAttrComputeCapabilityMinor) *v = g_cc_minor;
    else return cudaErrorInvalidValue;
    return cudaSuccess;
}
/* Blocks of a kernel an SM holds at once: 2048 threads and g_smem_sm bytes of shared memory an SM, 1 KiB of it
 * reserved a block; a launch above the kernel's shared-memory allowance, none. Registers are not known here
 * (ptxas's report has them: tests/test_cuda_rules.sh) and taken to fit. */
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *n, const void *fn, int threads, size_t smem,
                                                                   unsigned) {
    if (!n || threads < 1 || threads > 1024) return cudaErrorInvalidValue;
    size_t by_threads = 2048 / (size_t)threads, by_smem = (size_t)g_smem_sm / (smem + 1024);
    *n = smem > (size_t)func_of(fn)->max_dyn ? 0 : (int)(by_threads < by_smem ? by_threads : by_smem);
    return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, const void *fn, int threads, size_t smem) {
    return cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(n, fn, threads, smem, 0);
}
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, const void *fn) {
    if (!attr || !fn) return cudaErrorInvalidDeviceFunction;
    memset(attr, 0, sizeof *attr);
    attr->maxThreadsPerBlock = 1024;
    attr->maxDynamicSharedSizeBytes = func_of(fn)->max_dyn;
    return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void *fn, cudaFuncAttribute a, int v) {
    if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || v < 0 || v > g_smem_optin) return cudaErrorInvalidValue;
    func_of(fn)->max_dyn = v;
    return cudaSuccess;
}

/* Device memory: host memory, 256-byte aligned as cudaMalloc's, with garbage
 * (0xff: NaN) in it; a budget as big as an H200's, or TT_EMU_MEM bytes (a number with K, M or G after it: a
 * smaller GPU, or one another process holds most of). */
static size_t EMU_TOTAL = (size_t)140 << 30;
__attribute__((constructor)) static void mem_init(void) {
    const char *m = getenv("TT_EMU_MEM");
    if (!m || !*m) return;
    char *end;
    double v = strtod(m, &end);
    const size_t mul = *end == 'K' ? (size_t)1 << 10 : *end == 'M' ? (size_t)1 << 20 : *end == 'G' ? (size_t)1 << 30 : 1;
    if (v <= 0 || (mul > 1 ? end[1] : end[0]) != '\0') {
        fprintf(stderr, "cuda_emu: TT_EMU_MEM must be a size such as 512M, not '%s'\n", m);
        abort();
    }
    EMU_TOTAL = (size_t)(v * (double)mul);
}
static size_t g_used;
typedef struct { void *p; size_t n, req; } emu_alloc; /* n: rounded as cudaMalloc rounds; req: as asked */
static emu_alloc *g_allocs;
static size_t g_nallocs, g_cap_allocs;

cudaError_t cudaMalloc(void **p, size_t n) {
    FAULTED();
    size_t sz = (n + 255) / 256 * 256;
    pthread_mutex_lock(&g_rt_mu);
    if (n && g_used + sz > EMU_TOTAL) {
        pthread_mutex_unlock(&g_rt_mu);
        return cudaErrorMemoryAllocation;
    }
    void *m = n ? aligned_alloc(256, sz) : NULL;
    if (n && !m) {
        pthread_mutex_unlock(&g_rt_mu);
        return cudaErrorMemoryAllocation;
    }
    if (m) {
        memset(m, 0xff, sz);
        if (g_nallocs == g_cap_allocs) {
            g_cap_allocs = g_cap_allocs ? 2 * g_cap_allocs : 64;
            g_allocs = (emu_alloc *)realloc(g_allocs, g_cap_allocs * sizeof *g_allocs);
            if (!g_allocs) abort();
        }
        g_allocs[g_nallocs++] = (emu_alloc){m, sz, n};
        g_used += sz;
    }
    pthread_mutex_unlock(&g_rt_mu);
    *p = m;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (!p) return g_fault_busy ? cudaErrorDevicesUnavailable : cudaSuccess; /* cudaFree(0): the context */
    FAULTED();
    defer_sync(-1);             /* cudaFree synchronises the device */
    pthread_mutex_lock(&g_rt_mu);
    for (size_t i = 0; i < g_nallocs; i++)
        if (g_allocs[i].p == p) {
            g_used -= g_allocs[i].n;
            g_allocs[i] = g_allocs[--g_nallocs];
            pthread_mutex_unlock(&g_rt_mu);
            mem_changed();
            free(p);
            return cudaSuccess;
        }
    pthread_mutex_unlock(&g_rt_mu);
    return cudaErrorInvalidValue;
}
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total) {
    pthread_mutex_lock(&g_rt_mu);
    *free_b = EMU_TOTAL - g_used;
    *total = EMU_TOTAL;
    pthread_mutex_unlock(&g_rt_mu);
    return cudaSuccess;
}
/* Pinned host memory (cudaMallocHost, cudaHostRegister): mapped for the
 * device, as on a system with unified addressing. */
static emu_alloc *g_pinned;
static size_t g_npinned, g_cap_pinned;
static void pinned_add(void *p, size_t n) {
    pthread_mutex_lock(&g_rt_mu);
    if (g_npinned == g_cap_pinned) {
        g_cap_pinned = g_cap_pinned ? 2 * g_cap_pinned : 16;
        g_pinned = (emu_alloc *)realloc(g_pinned, g_cap_pinned * sizeof *g_pinned);
        if (!g_pinned) abort();
    }
    g_pinned[g_npinned++] = (emu_alloc){p, n, n};
    pthread_mutex_unlock(&g_rt_mu);
}
static int pinned_remove(void *p) {
    pthread_mutex_lock(&g_rt_mu);
    for (size_t i = 0; i < g_npinned; i++)
        if (g_pinned[i].p == p) {
            g_pinned[i] = g_pinned[--g_npinned];
            pthread_mutex_unlock(&g_rt_mu);
            mem_changed();
            return 1;
        }
    pthread_mutex_unlock(&g_rt_mu);
    return 0;
}
cudaError_t cudaMallocHost(void **p, size_t n) {
    *p = malloc(n ? n : 1);
    if (!*p) return cudaErrorMemoryAllocation;
    pinned_add(*p, n);
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p) {
    defer_sync(-1); /* as cudaFree */
    if (!pinned_remove(p)) return cudaErrorInvalidValue;
    free(p);
    return cudaSuccess;
}
cudaError_t cudaHostRegister(void *p, size_t n, unsigned) {
    if (!p || !n) return cudaErrorInvalidValue;
    pinned_add(p, n);
    return cudaSuccess;
}
cudaError_t cudaHostUnregister(void *p) { return pinned_remove(p) ? cudaSuccess : cudaErrorHostMemoryNotRegistered; }

/* ---- what a kernel touches ---------------------------------------------------------
 * The kernels' sources are compiled with ThreadSanitizer's instrumentation
 * (Makefile: EMU_KFLAGS): each load and store the compiler emits calls
 * __tsan_{read,write}<size> with its address (nothing else of ThreadSanitizer:
 * these functions are the whole of its runtime here). It, not
 * AddressSanitizer's, because ASan leaves out the store of a read-modify-write
 * (`s[i] += x`: the load's check covers the address), and racecheck needs
 * every write. While
 * a kernel runs on this thread (t_kernel), an access must lie in device memory
 * (a cudaMalloc'd range as asked for, not as rounded), pinned host memory, the
 * block's dynamic shared memory, the program's static data (__shared__ and
 * __constant__ arrays are statics here) or a stack (the kernel's locals); and
 * one of 2, 4, 8 or 16 bytes anywhere but a stack must be aligned to its size.
 * A GPU stops at either, with an illegal or a misaligned address; x86 reads
 * on, which is why these are checked here and not left to the GPU machine. */
enum { R_NONE, R_DEV, R_PIN, R_SMEM, R_STATIC, R_STACK, R_GAP };
static const char *const region_name[] = {"no memory a kernel may touch", "device memory", "pinned host memory",
                                          "dynamic shared memory", "static data (__shared__, __constant__)",
                                          "a stack", "an arena, outside its live blocks"};
typedef struct { uintptr_t lo, len; int kind; unsigned gen; } emu_region;
static __thread emu_region t_seen[4];
static __thread emu_region t_last; /* the one seen last (checked inline) */
static __thread unsigned t_next;
extern "C" char __executable_start, _end; /* the linker's: the program's image, static data included */

static int in_range(uintptr_t a, size_t n, uintptr_t lo, uintptr_t len) { return a - lo < len && n <= len - (a - lo); }

/* The runtime's arenas (sched/arena.h's hook): each wrapped region, and the
 * live blocks carved from them, so that an access inside an arena must lie in
 * one block — a kernel or copy running past its buffer into the next one is
 * stopped, where the GPU would corrupt the neighbour without a fault. */
typedef struct { size_t n; std::string label, arena; } emu_block;
static std::map<uintptr_t, emu_block> g_arenas, g_blocks; /* by start; g_rt_mu */

/* The element of m whose range holds a, or m.end(). */
static std::map<uintptr_t, emu_block>::const_iterator holder(const std::map<uintptr_t, emu_block> &m, uintptr_t a) {
    auto it = m.upper_bound(a);
    if (it == m.begin()) return m.end();
    --it;
    return a - it->first < it->second.n ? it : m.end();
}

/* 4096 bytes unused after every arena block: a kernel or copy running a little past its buffer lands in no
 * block. A whole O_DIRECT block (io/uring.h), as the pinned arena keeps its staging buffers aligned for
 * io_uring by the sizes of what comes before them. */
extern "C" size_t tt_arena_redzone(void) { return 4096; }

extern "C" void tt_arena_hook(const char *arena, int op, void *p, size_t n, const char *label) {
    uintptr_t a = (uintptr_t)p;
    pthread_mutex_lock(&g_rt_mu);
    if (op == ARENA_HOOK_WRAP) g_arenas[a] = emu_block{n, "", arena};
    else if (op == ARENA_HOOK_ALLOC) g_blocks[a] = emu_block{n, label ? label : "?", arena};
    else if (op == ARENA_HOOK_RELEASE || op == ARENA_HOOK_FREE) {
        g_blocks.erase(g_blocks.lower_bound(a), g_blocks.lower_bound(a + n));
        if (op == ARENA_HOOK_FREE) g_arenas.erase(a);
    }
    pthread_mutex_unlock(&g_rt_mu);
    mem_changed();
}

/* The region that holds [a, a + n) other than a stack or static data (R_NONE:
 * none does; R_GAP: an arena does, but none of its live blocks). */
static emu_region classify(uintptr_t a, size_t n) {
    emu_region r = {0, 0, R_NONE, 0};
    if (g_dyn && in_range(a, n, (uintptr_t)g_dyn, g_dyn_n)) return (emu_region){(uintptr_t)g_dyn, g_dyn_n, R_SMEM, 0};
    pthread_mutex_lock(&g_rt_mu);
    for (size_t i = 0; i < g_nallocs && r.kind == R_NONE; i++)
        if (in_range(a, n, (uintptr_t)g_allocs[i].p, g_allocs[i].req))
            r = (emu_region){(uintptr_t)g_allocs[i].p, g_allocs[i].req, R_DEV, 0};
    for (size_t i = 0; i < g_npinned && r.kind == R_NONE; i++)
        if (in_range(a, n, (uintptr_t)g_pinned[i].p, g_pinned[i].req))
            r = (emu_region){(uintptr_t)g_pinned[i].p, g_pinned[i].req, R_PIN, 0};
    if (r.kind != R_NONE && holder(g_arenas, a) != g_arenas.end()) { /* in an arena: in one of its blocks */
        auto b = holder(g_blocks, a);
        if (b != g_blocks.end() && in_range(a, n, b->first, b->second.n)) r.lo = b->first, r.len = b->second.n;
        else r.kind = R_GAP;
    }
    pthread_mutex_unlock(&g_rt_mu);
    return r;
}

/* "K bytes into the N-byte WHAT" or "K bytes past the end of the N-byte WHAT". */
static void place(char *b, size_t bn, uintptr_t a, uintptr_t lo, size_t n, const char *what) {
    if (a - lo < n) snprintf(b, bn, "%zu bytes into the %zu-byte %s", (size_t)(a - lo), n, what);
    else snprintf(b, bn, "%zu bytes past the end of the %zu-byte %s", (size_t)(a - lo - n), n, what);
}

/* Where a stray address lies, for the message: past (or before) which
 * allocation, arena block or shared memory, by how much. */
static void describe_stray(uintptr_t a, char *b, size_t bn) {
    snprintf(b, bn, "in no device allocation, pinned range or shared memory");
    uintptr_t best = UINTPTR_MAX;
    pthread_mutex_lock(&g_rt_mu);
    auto ar = holder(g_arenas, a);
    if (ar != g_arenas.end()) { /* inside an arena: which block it runs past (or the arena's start) */
        auto it = g_blocks.upper_bound(a);
        if (it != g_blocks.begin() && (--it)->first >= ar->first) {
            char w[120];
            snprintf(w, sizeof w, "block \"%s\" at %p of arena \"%s\"", it->second.label.c_str(), (void *)it->first,
                     ar->second.arena.c_str());
            place(b, bn, a, it->first, it->second.n, w);
        } else snprintf(b, bn, "in arena \"%s\" before its first live block", ar->second.arena.c_str());
        pthread_mutex_unlock(&g_rt_mu);
        return;
    }
    for (size_t i = 0; i < g_nallocs + g_npinned; i++) {
        const emu_alloc *m = i < g_nallocs ? &g_allocs[i] : &g_pinned[i - g_nallocs];
        uintptr_t lo = (uintptr_t)m->p;
        if (a >= lo && a - lo < best) {
            best = a - lo;
            char w[64];
            snprintf(w, sizeof w, "%s at %p", i < g_nallocs ? "cudaMalloc" : "pinned range", m->p);
            place(b, bn, a, lo, m->req, w);
        }
    }
    pthread_mutex_unlock(&g_rt_mu);
    if (g_dyn && a >= (uintptr_t)g_dyn && a - (uintptr_t)g_dyn < best)
        place(b, bn, a, (uintptr_t)g_dyn, g_dyn_n, "dynamic shared memory of the block");
}

[[noreturn]] static void access_fault(uintptr_t a, size_t n, const char *what, int kind) {
    char where_b[200];
    int stray = kind == R_NONE || kind == R_GAP;
    if (stray) describe_stray(a, where_b, sizeof where_b);
    else snprintf(where_b, sizeof where_b, "%s", region_name[kind]);
    const tt_emu_coords *c = g_fs.cur ? &g_coord[g_fs.cur->tid] : NULL;
    fprintf(stderr, "cuda_emu: %s: %s %zu-byte %s at %p (%s), thread (%u,%u,%u) of block (%u,%u,%u): on a GPU, %s\n",
            g_kernel ? g_kernel : "a kernel", stray ? "a" : "a misaligned", n, what, (void *)a, where_b,
            c ? c->t.x : 0, c ? c->t.y : 0, c ? c->t.z : 0, c ? c->b.x : 0, c ? c->b.y : 0, c ? c->b.z : 0,
            kind == R_NONE ? "an illegal address" : kind == R_GAP ? "another buffer's data overwritten or read" :
                                                                    "a misaligned address");
    abort();
}

static int misaligned(uintptr_t a, size_t n) { return n <= 16 && !(n & (n - 1)) && (a & (n - 1)); }

/* An access that is not to a stack or static data: the regions this thread
 * saw last, else where it lies looked up. */
__attribute__((noinline)) static void access_elsewhere(uintptr_t a, size_t n, const char *what, int store) {
    unsigned gen = __atomic_load_n(&g_mem_gen, __ATOMIC_RELAXED);
    const emu_region *r = NULL;
    for (int i = 0; i < 4 && !r; i++)
        if (t_seen[i].gen == gen && in_range(a, n, t_seen[i].lo, t_seen[i].len)) r = &t_seen[i];
    if (!r) {
        emu_region c = classify(a, n);
        if (c.kind == R_NONE || c.kind == R_GAP) access_fault(a, n, what, c.kind);
        c.gen = gen;
        emu_region *slot = &t_seen[t_next++ & 3];
        *slot = c;
        r = slot;
    }
    t_last = *r;
    if (misaligned(a, n)) access_fault(a, n, what, r->kind);
    if (g_race) race_access(a, n, store, r->kind == R_SMEM ? 2 : 0);
}

/* One access of n bytes at a by the running kernel (what: "load", "store", ...):
 * the stacks and static data first (most of a kernel's accesses that are not
 * to its arrays: arguments, locals, __shared__), inline. A kernel writes no
 * static data but its __shared__ arrays, so racecheck takes static data as
 * shared memory (reads of __constant__ tables never conflict). */
__attribute__((always_inline)) static inline void emu_access(uintptr_t a, size_t n, const char *what, int store) {
    if (in_range(a, n, t_stack_lo, t_stack_len) || in_range(a, n, (uintptr_t)g_fs.stacks, g_fib_len)) return;
    if (in_range(a, n, (uintptr_t)&__executable_start, (uintptr_t)&_end - (uintptr_t)&__executable_start)) {
        if (misaligned(a, n)) access_fault(a, n, what, R_STATIC);
        if (g_race) race_access(a, n, store, 1);
        return;
    }
    if (in_range(a, n, t_last.lo, t_last.len) && t_last.gen == __atomic_load_n(&g_mem_gen, __ATOMIC_RELAXED)) {
        if (misaligned(a, n)) access_fault(a, n, what, t_last.kind);
        if (g_race) race_access(a, n, store, t_last.kind == R_SMEM ? 2 : 0);
        return;
    }
    access_elsewhere(a, n, what, store);
}

extern "C" {
#define EMU_ACCESS_HOOKS(n)                                                                                            \
    void __tsan_read##n(void *p) {                                                                                     \
        if (t_kernel) emu_access((uintptr_t)p, n, "load", 0);                                                          \
    }                                                                                                                  \
    void __tsan_write##n(void *p) {                                                                                    \
        if (t_kernel) emu_access((uintptr_t)p, n, "store", 1);                                                         \
    }                                                                                                                  \
    void __tsan_unaligned_read##n(void *p) {                                                                           \
        if (t_kernel) emu_access((uintptr_t)p, n, "load", 0);                                                          \
    }                                                                                                                  \
    void __tsan_unaligned_write##n(void *p) {                                                                          \
        if (t_kernel) emu_access((uintptr_t)p, n, "store", 1);                                                         \
    }
EMU_ACCESS_HOOKS(1)
EMU_ACCESS_HOOKS(2)
EMU_ACCESS_HOOKS(4)
EMU_ACCESS_HOOKS(8)
EMU_ACCESS_HOOKS(16)
void __tsan_read_range(void *p, size_t n) {
    if (t_kernel && n) emu_access((uintptr_t)p, n, "load", 0);
}
void __tsan_write_range(void *p, size_t n) {
    if (t_kernel && n) emu_access((uintptr_t)p, n, "store", 1);
}
/* the rest of the instrumentation's calls: nothing to do */
void __tsan_init(void) {}
void __tsan_func_entry(void *) {}
void __tsan_func_exit(void) {}
}

/* 'd': p lies in a device allocation (its end included: an empty range's
 * pointer), 'h': in pinned host memory, 0: neither. */
static int where(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int r = 0;
    pthread_mutex_lock(&g_rt_mu);
    for (size_t i = 0; i < g_nallocs && !r; i++)
        if (a >= (uintptr_t)g_allocs[i].p && a <= (uintptr_t)g_allocs[i].p + g_allocs[i].n) r = 'd';
    for (size_t i = 0; i < g_npinned && !r; i++)
        if (a >= (uintptr_t)g_pinned[i].p && a <= (uintptr_t)g_pinned[i].p + g_pinned[i].n) r = 'h';
    pthread_mutex_unlock(&g_rt_mu);
    return r;
}
void tt_emu_check_ptr(const char *name, int i, const void *p) {
    if (!p || where(p)) return;
    fprintf(stderr, "cuda_emu: %s: argument %d (%p) is host memory the device cannot read (neither "
                    "cudaMalloc'd nor pinned)\n", name, i, p);
    abort();
}
/* A host-issued operation's range [p, p + n) of device or pinned memory (a
 * copy's side, a product's operand): inside one allocation, and inside one
 * live block where that is an arena; else the run stops, naming the
 * operation and the block it runs out of. Pageable host memory is left
 * alone. */
static void check_span(const void *p, size_t n, const char *op) {
    if (!n || !where(p)) return;
    uintptr_t a = (uintptr_t)p;
    emu_region r = classify(a, n);
    if (r.kind != R_NONE && r.kind != R_GAP) return;
    char b[200];
    pthread_mutex_lock(&g_rt_mu);
    auto bl = holder(g_blocks, a);
    int in_block = bl != g_blocks.end();
    if (in_block)
        snprintf(b, sizeof b, "it starts %zu bytes into the %zu-byte block \"%s\" of arena \"%s\" and ends %zu bytes "
                 "past it", (size_t)(a - bl->first), bl->second.n, bl->second.label.c_str(), bl->second.arena.c_str(),
                 (size_t)(a + n - bl->first - bl->second.n));
    pthread_mutex_unlock(&g_rt_mu);
    if (!in_block) describe_stray(a, b, sizeof b);
    fprintf(stderr, "cuda_emu: %s: %zu bytes at %p run outside their buffer (%s): on a GPU, %s\n", op, n, p, b,
            r.kind == R_GAP ? "another buffer's data overwritten or read" : "an illegal address");
    abort();
}
static size_t elem_bytes(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }
/* A column-major matrix's extent in bytes: its first element to its last. */
static size_t mat_bytes(int rows, int cols, int ld, cudaDataType t) {
    return rows && cols ? ((size_t)ld * (cols - 1) + rows) * elem_bytes(t) : 0;
}

/* cp.async (cuda_fa2.h): into the block's shared memory from device memory
 * (or pinned host memory), each copy done when a wait covers it. */
void tt_emu_cp16(tt_warp_emu *, int tid, void *dst, const void *src, int valid) {
    check_smem16(dst, 16, "a cp.async destination");
    if (valid) emu_access((uintptr_t)src, 16, "cp.async load", 0); /* the source's bytes and alignment */
    if (g_race) { /* the copy may land from now on: a write now, and again at its wait */
        race_access((uintptr_t)dst, 16, 1, 2);
        if (g_cp[tid].n < TT_CP_EMU_MAX) {
            g_cp_at[tid][g_cp[tid].n].ep = g_fs.epoch;
            g_cp_at[tid][g_cp[tid].n].meet = g_fs.warp_meet[tid >> 5];
        }
    }
    if (g_stat) g_stat->cp_bytes += 16;
    if (tt_cp_emu_issue(&g_cp[tid], dst, src, valid)) {
        fprintf(stderr, "cuda_emu: %s: thread %d has more than %d cp.async copies in flight\n", g_kernel, tid,
                (int)TT_CP_EMU_MAX);
        abort();
    }
}
void tt_emu_cp_commit(tt_warp_emu *, int tid) { tt_cp_emu_commit(&g_cp[tid]); }
void tt_emu_cp_wait(tt_warp_emu *, int tid, int pending) {
    const tt_cp_emu *c = &g_cp[tid];
    if (g_race) { /* the copies this wait completes land now: checked as writes from their issue on (an access by
                   * another thread since, a barrier between or not, conflicts), recorded as writes now; the
                   * issue points of the copies still in flight move down as tt_cp_emu_wait moves the copies */
        int k = 0;
        for (int i = 0; i < c->n; i++) {
            if (tt_cp_emu_lands(c, i, pending))
                race_check((uintptr_t)c->op[i].dst, 16, 1, 2, g_cp_at[tid][i].ep, g_cp_at[tid][i].meet);
            else g_cp_at[tid][k++] = g_cp_at[tid][i];
        }
    }
    tt_cp_emu_wait(&g_cp[tid], pending);
}

/* A copy's pointers as its kind says (host memory may be pageable). */
static cudaError_t check_copy(void *d, const void *s, cudaMemcpyKind k) {
    int wd = where(d), ws = where(s);
    int ok = k == cudaMemcpyDefault || (k == cudaMemcpyHostToDevice && wd == 'd' && ws != 'd') ||
             (k == cudaMemcpyDeviceToHost && ws == 'd' && wd != 'd') ||
             (k == cudaMemcpyDeviceToDevice && wd == 'd' && ws == 'd') || (k == cudaMemcpyHostToHost && !wd && !ws);
    if (ok) return cudaSuccess;
    fprintf(stderr, "cuda_emu: cudaMemcpyAsync kind %d from %s to %s memory\n", (int)k,
            ws == 'd' ? "device" : ws == 'h' ? "pinned host" : "host", wd == 'd' ? "device" : wd == 'h' ? "pinned host" : "host");
    return cudaErrorInvalidValue;
}

cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t q) {
    FAULTED();
    if (check_stream(q) != cudaSuccess) return cudaErrorInvalidResourceHandle;
    if (!n) return cudaSuccess;
    cudaError_t e = check_copy(d, s, k);
    if (e != cudaSuccess) return e;
    check_span(s, n, "cudaMemcpyAsync's source");
    check_span(d, n, "cudaMemcpyAsync's destination");
    if (where(d) != 'd' && where(s) != 'd') defer_sync(q_of(q)); /* host to host: synchronous, in the stream's order */
    else if (defer_work(q, OP_COPY, "cudaMemcpyAsync", [=] { memmove(d, s, n); })) return cudaSuccess;
    memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t q) {
    FAULTED();
    if (check_stream(q) != cudaSuccess) return cudaErrorInvalidResourceHandle;
    if (n && where(d) != 'd') return cudaErrorInvalidValue;
    check_span(d, n, "cudaMemsetAsync");
    if (defer_work(q, OP_MEMSET, "cudaMemsetAsync", [=] { memset(d, v, n); })) return cudaSuccess;
    memset(d, v, n);
    return cudaSuccess;
}
/* Synchronous, on the legacy stream: after its operations. */
cudaError_t cudaMemcpyToSymbol(const void *sym, const void *s, size_t n, size_t off, cudaMemcpyKind) {
    defer_sync(0);
    memcpy((char *)sym + off, s, n);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *q, unsigned flags) {
    pthread_mutex_lock(&g_rt_mu);
    int i = 0;
    while (i < EMU_MAX_STREAMS && g_streams[i]) i++;
    if (i == EMU_MAX_STREAMS) {
        pthread_mutex_unlock(&g_rt_mu);
        return cudaErrorMemoryAllocation;
    }
    g_streams[i] = 1;
    pthread_mutex_unlock(&g_rt_mu);
    pthread_mutex_lock(&g_q_mu);
    g_q[i + 1].computes = 0;
    g_q[i + 1].blocking = !(flags & cudaStreamNonBlocking);
    pthread_mutex_unlock(&g_q_mu);
    *q = (cudaStream_t)(intptr_t)(i + 1);
    return cudaSuccess;
}
/* Its pending operations still run (CUDA: the stream's resources go once they did): here, now. */
cudaError_t cudaStreamDestroy(cudaStream_t q) {
    if (!q || check_stream(q) != cudaSuccess) return cudaErrorInvalidResourceHandle;
    defer_sync(q_of(q));
    pthread_mutex_lock(&g_q_mu);
    g_q[q_of(q)].blocking = 0;
    pthread_mutex_unlock(&g_q_mu);
    pthread_mutex_lock(&g_rt_mu);
    g_streams[(intptr_t)q - 1] = 0;
    pthread_mutex_unlock(&g_rt_mu);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t q) {
    FAULTED();
    if (check_stream(q) != cudaSuccess) return cudaErrorInvalidResourceHandle;
    defer_sync(q_of(q));
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    FAULTED();
    defer_sync(-1);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    emu_event *ev = new (std::nothrow) emu_event{!(flags & cudaEventDisableTiming), nullptr};
    if (!ev) return cudaErrorMemoryAllocation;
    *e = (cudaEvent_t)ev;
    return cudaSuccess;
}
/* A pending record still runs (it holds its emu_rec, not the event). */
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    pthread_mutex_lock(&g_q_mu);
    delete (emu_event *)e;
    pthread_mutex_unlock(&g_q_mu);
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t q) {
    FAULTED();
    if (!e) return cudaErrorInvalidResourceHandle;
    if (check_stream(q) != cudaSuccess) return cudaErrorInvalidResourceHandle;
    rec_ptr r = std::make_shared<emu_rec>();
    r->stream = q_of(q);
    pthread_mutex_lock(&g_q_mu);
    ((emu_event *)e)->cur = r;
    if (!g_defer) r->t = now_s(), r->done = 1;
    else {
        enqueue(r->stream, emu_op{OP_RECORD, "cudaEventRecord", {}, r});
        policy_step();
    }
    pthread_mutex_unlock(&g_q_mu);
    return cudaSuccess;
}
/* Waits for the event's last record issued before this call; an event never recorded: no wait. */
cudaError_t cudaStreamWaitEvent(cudaStream_t q, cudaEvent_t e, unsigned) {
    FAULTED();
    if (!e) return cudaErrorInvalidResourceHandle;
    if (check_stream(q) != cudaSuccess) return cudaErrorInvalidResourceHandle;
    pthread_mutex_lock(&g_q_mu);
    rec_ptr r = ((emu_event *)e)->cur;
    if (r && !r->done) {
        enqueue(q_of(q), emu_op{OP_WAIT, "cudaStreamWaitEvent", {}, r});
        policy_step();
    }
    pthread_mutex_unlock(&g_q_mu);
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    FAULTED();
    if (!e) return cudaErrorInvalidResourceHandle;
    pthread_mutex_lock(&g_q_mu);
    rec_ptr r = ((emu_event *)e)->cur;
    if (r) drive_rec(r);
    pthread_mutex_unlock(&g_q_mu);
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
    FAULTED();
    if (!e) return cudaErrorInvalidResourceHandle;
    pthread_mutex_lock(&g_q_mu);
    rec_ptr r = ((emu_event *)e)->cur;
    if (r && !r->done) {
        policy_step();
        if (!r->done && ++r->polls >= 64) drive_rec(r);
    }
    cudaError_t res = !r || r->done ? cudaSuccess : cudaErrorNotReady;
    pthread_mutex_unlock(&g_q_mu);
    return res;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    emu_event *x = (emu_event *)a, *y = (emu_event *)b;
    if (!x || !y || !x->timing || !y->timing) return cudaErrorInvalidResourceHandle;
    pthread_mutex_lock(&g_q_mu);
    const emu_rec *ra = x->cur.get(), *rb = y->cur.get();
    cudaError_t res = !ra || !rb ? cudaErrorInvalidResourceHandle /* never recorded */
                      : !ra->done || !rb->done ? cudaErrorNotReady
                                               : cudaSuccess;
    if (res == cudaSuccess) *ms = (float)((rb->t - ra->t) * 1e3);
    pthread_mutex_unlock(&g_q_mu);
    return res;
}

/* ---- cuBLAS and cuBLASLt --------------------------------------------------------
 * D = alpha op(A) op(B) + beta C, column-major: the product in fp32 (as the
 * libraries accumulate) by OpenBLAS on fp32 copies of the operands, then
 * alpha, beta and the output's rounding here; C is not read where beta is 0.
 * The type combinations are the ones the backend asks for with
 * CUBLAS_COMPUTE_32F: A and B both fp32 or both bf16, C fp32 or bf16. */

struct cublasContext { cudaStream_t q; };
struct cublasLtContext { int unused; };

static float ld_elem(const void *p, cudaDataType t, size_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}
static void st_elem(void *p, cudaDataType t, size_t i, float v) {
    if (t == CUDA_R_32F) ((float *)p)[i] = v;
    else ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
}
static int supported(cudaDataType at, cudaDataType bt, cudaDataType ct) {
    int ab = (at == CUDA_R_32F && bt == CUDA_R_32F) || (at == CUDA_R_16BF && bt == CUDA_R_16BF);
    return ab && (ct == CUDA_R_32F || ct == CUDA_R_16BF) && !(at == CUDA_R_32F && ct == CUDA_R_16BF);
}

/* Scratch that only grows (the products run under g_kernel_mu): a fresh
 * allocation per product would be mapped and faulted in each time. */
static float *scratch(int which, size_t n) {
    static float *buf[3];
    static size_t cap[3];
    if (n > cap[which]) {
        free(buf[which]);
        buf[which] = (float *)malloc(n * sizeof(float));
        if (!buf[which]) abort();
        cap[which] = n;
    }
    return buf[which];
}

/* A stored matrix (rows x cols, column stride ld) as fp32: itself, or a copy
 * in scratch `which`. */
static const float *as_f32(const void *p, cudaDataType t, int rows, int cols, int ld, int which) {
    if (t == CUDA_R_32F) return (const float *)p;
    size_t n = (size_t)ld * (cols - 1) + rows;
    float *f = scratch(which, n);
    for (size_t i = 0; i < n; i++) f[i] = ld_elem(p, t, i);
    return f;
}

/* op(A) is m x k: A is stored (ta ? k x m : m x k) column-major with lda. The operands where a product
 * may read and write them (at its issue). */
static void gemm_check(int ta, int tb, int m, int n, int k, const void *A, cudaDataType at, int lda, const void *B,
                       cudaDataType bt, int ldb, void *C, cudaDataType ct, int ldc) {
    if (m == 0 || n == 0) return;
    if (where(A) != 'd' || where(B) != 'd' || where(C) != 'd') {
        fprintf(stderr, "cuda_emu: a %d x %d x %d product's operand is not device memory (A %p, B %p, C %p)\n", m, n, k,
                A, B, C);
        abort();
    }
    if (k) {
        check_span(A, mat_bytes(ta ? k : m, ta ? m : k, lda, at), "a product's A");
        check_span(B, mat_bytes(tb ? n : k, tb ? k : n, ldb, bt), "a product's B");
    }
    check_span(C, mat_bytes(m, n, ldc, ct), "a product's C");
}
/* The product, run now (g_kernel_mu held). */
static void gemm_run(int ta, int tb, int m, int n, int k, float alpha, const void *A, cudaDataType at, int lda,
                     const void *B, cudaDataType bt, int ldb, float beta, void *C, cudaDataType ct, int ldc) {
    if (m == 0 || n == 0) return;
    float *prod = scratch(0, (size_t)m * n);
    if (k == 0) memset(prod, 0, (size_t)m * n * sizeof *prod);
    else {
        const float *fa = as_f32(A, at, ta ? k : m, ta ? m : k, lda, 1);
        const float *fb = as_f32(B, bt, tb ? n : k, tb ? k : n, ldb, 2);
        cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, fa,
                    lda, fb, ldb, 0.0f, prod, m);
    }
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            size_t ci = (size_t)j * ldc + i;
            float v = alpha * prod[(size_t)j * m + i];
            if (beta != 0) v += beta * ld_elem(C, ct, ci);
            st_elem(C, ct, ci, v);
        }
}

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    openblas_set_num_threads(1); /* products run one at a time on the launching thread; idle workers would spin */
    *h = (cublasHandle_t)calloc(1, sizeof(struct cublasContext));
    return *h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t q) {
    if (!h || !known_stream(q)) return CUBLAS_STATUS_INVALID_VALUE;
    h->q = q;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *ws, size_t n) {
    return h && (ws || !n) && !((uintptr_t)ws & 255) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                            int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t comp,
                            cublasGemmAlgo_t) {
    int tA = ta != CUBLAS_OP_N, tB = tb != CUBLAS_OP_N;
    if (!h || m < 0 || n < 0 || k < 0 || lda < (tA ? k : m) || lda < 1 || ldb < (tB ? n : k) || ldb < 1 ||
        ldc < m || ldc < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (comp != CUBLAS_COMPUTE_32F || !supported(at, bt, ct)) return CUBLAS_STATUS_NOT_SUPPORTED;
    gemm_check(tA, tB, m, n, k, A, at, lda, B, bt, ldb, C, ct, ldc);
    float al = *(const float *)alpha, be = *(const float *)beta; /* host pointer mode: read at the call */
    auto run = [=] {
        pthread_mutex_lock(&g_kernel_mu);
        gemm_run(tA, tB, m, n, k, al, A, at, lda, B, bt, ldb, be, C, ct, ldc);
        pthread_mutex_unlock(&g_kernel_mu);
    };
    if (!defer_work(h->q, OP_PRODUCT, "cublasGemmEx", run)) run();
    return CUBLAS_STATUS_SUCCESS;
}

/* The opaque descriptors hold these (their data arrays are larger). */
typedef struct { int comp, scale, ta, tb; } lt_desc;
typedef struct { int type; uint64_t rows, cols; int64_t ld; } lt_layout;

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = (cublasLtHandle_t)calloc(1, sizeof(struct cublasLtContext));
    return *h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t comp, cudaDataType_t scale) {
    static_assert(sizeof(lt_desc) <= sizeof(cublasLtMatmulDescOpaque_t), "lt_desc");
    *d = (cublasLtMatmulDesc_t)calloc(1, sizeof(cublasLtMatmulDescOpaque_t));
    if (!*d) return CUBLAS_STATUS_ALLOC_FAILED;
    lt_desc *x = (lt_desc *)*d;
    x->comp = comp;
    x->scale = scale;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *v,
                                              size_t n) {
    lt_desc *x = (lt_desc *)d;
    if (n != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
    if (a == CUBLASLT_MATMUL_DESC_TRANSA) x->ta = *(const cublasOperation_t *)v != CUBLAS_OP_N;
    else if (a == CUBLASLT_MATMUL_DESC_TRANSB) x->tb = *(const cublasOperation_t *)v != CUBLAS_OP_N;
    else return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
    static_assert(sizeof(lt_layout) <= sizeof(cublasLtMatrixLayoutOpaque_t), "lt_layout");
    if (ld < (int64_t)rows || ld < 1) return CUBLAS_STATUS_INVALID_VALUE; /* column-major: ld >= rows */
    *l = (cublasLtMatrixLayout_t)calloc(1, sizeof(cublasLtMatrixLayoutOpaque_t));
    if (!*l) return CUBLAS_STATUS_ALLOC_FAILED;
    *(lt_layout *)*l = (lt_layout){(int)type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = (cublasLtMatmulPreference_t)calloc(1, sizeof(cublasLtMatmulPreferenceOpaque_t));
    return *p ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t,
                                                    const void *v, size_t n) {
    return p && v && n ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    free(p);
    return CUBLAS_STATUS_SUCCESS;
}

/* The problem the descriptors describe, checked as cuBLASLt checks it:
 * op(A) m x k, op(B) k x n, C and D m x n. */
static cublasStatus_t lt_problem(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                                 cublasLtMatrixLayout_t lc, cublasLtMatrixLayout_t ld, int *m, int *n, int *k) {
    const lt_desc *x = (const lt_desc *)d;
    const lt_layout *A = (const lt_layout *)la, *B = (const lt_layout *)lb, *C = (const lt_layout *)lc,
                    *D = (const lt_layout *)ld;
    if (!x || !A || !B || !C || !D) return CUBLAS_STATUS_INVALID_VALUE;
    uint64_t am = x->ta ? A->cols : A->rows, ak = x->ta ? A->rows : A->cols;
    uint64_t bk = x->tb ? B->cols : B->rows, bn = x->tb ? B->rows : B->cols;
    if (ak != bk || C->rows != am || C->cols != bn || D->rows != am || D->cols != bn || C->type != D->type)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (x->comp != CUBLAS_COMPUTE_32F || x->scale != CUDA_R_32F ||
        !supported((cudaDataType)A->type, (cudaDataType)B->type, (cudaDataType)C->type))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    *m = (int)am;
    *n = (int)bn;
    *k = (int)ak;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t la,
                                              cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc,
                                              cublasLtMatrixLayout_t ld, cublasLtMatmulPreference_t p, int want,
                                              cublasLtMatmulHeuristicResult_t *r, int *got) {
    int m, n, k;
    if (!h || !p || want < 1) return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t s = lt_problem(d, la, lb, lc, ld, &m, &n, &k);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    memset(r, 0, sizeof *r);
    r->state = CUBLAS_STATUS_SUCCESS;
    r->workspaceSize = 0;
    r->wavesCount = 1.0f;
    *got = 1;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t la, const void *B, cublasLtMatrixLayout_t lb, const void *beta,
                              const void *C, cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *, void *, size_t, cudaStream_t q) {
    int m, n, k;
    if (!h || !known_stream(q)) return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t s = lt_problem(d, la, lb, lc, ld, &m, &n, &k);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (C != D || ((const lt_layout *)lc)->ld != ((const lt_layout *)ld)->ld) return CUBLAS_STATUS_NOT_SUPPORTED;
    const lt_desc *x = (const lt_desc *)d;
    const lt_layout *lA = (const lt_layout *)la, *lB = (const lt_layout *)lb, *lC = (const lt_layout *)lc;
    int ta = x->ta, tb = x->tb, lda = (int)lA->ld, ldb = (int)lB->ld, ldc = (int)lC->ld;
    cudaDataType at = (cudaDataType)lA->type, bt = (cudaDataType)lB->type, ct = (cudaDataType)lC->type;
    gemm_check(ta, tb, m, n, k, A, at, lda, B, bt, ldb, D, ct, ldc);
    float al = *(const float *)alpha, be = *(const float *)beta; /* the descriptors and scalars: read at the call */
    auto run = [=] {
        pthread_mutex_lock(&g_kernel_mu);
        gemm_run(ta, tb, m, n, k, al, A, at, lda, B, bt, ldb, be, D, ct, ldc);
        pthread_mutex_unlock(&g_kernel_mu);
    };
    if (!defer_work(q, OP_PRODUCT, "cublasLtMatmul", run)) run();
    return CUBLAS_STATUS_SUCCESS;
}
