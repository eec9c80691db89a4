/* kernels/cuda/cuda_gemm.cu — matrix products: cuBLASLt with fp32
 * accumulation (bf16 operands run on tensor cores), its algorithm chosen once
 * per shape, alignment and type combination by the heuristic and cached;
 * cublasGemmEx where cuBLASLt has no algorithm (or TT_CUDA_GEMM=cublas asks
 * for it). Both take the workspace allocated at start-up, so a product never
 * allocates. The row-major to column-major derivation is cuda_index.h's
 * tt_colmajor_of, tested on the CPU. */
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_impl.h"
#include "kernels/cuda/cuda_index.h"

extern "C" {
#include "core/base/common.h"
}

#include <cublasLt.h>
#include <cublas_v2.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* ---- cuBLAS, opened at start-up ----------------------------------------------------
 * cuBLAS and cuBLASLt are opened when the backend starts (cuda_blas_open), not
 * linked: cuBLASLt's 350,000 relocations made every start of tiertrain, the
 * CPU commands' too, take ~70 ms (~200 ms under ASan). The emulated GPU
 * (tests/cuda_emu) links its own functions instead. */
static struct {
    decltype(&cublasCreate_v2) create;
    decltype(&cublasSetStream_v2) setStream;
    decltype(&cublasSetWorkspace_v2) setWorkspace;
    cublasStatus_t (*gemmEx)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                             const void *, cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
                             cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t); /* C++ has two overloads */
    decltype(&cublasLtCreate) ltCreate;
    decltype(&cublasLtMatmulDescCreate) ltDescCreate;
    decltype(&cublasLtMatmulDescSetAttribute) ltDescSet;
    decltype(&cublasLtMatrixLayoutCreate) ltLayoutCreate;
    decltype(&cublasLtMatmulPreferenceCreate) ltPrefCreate;
    decltype(&cublasLtMatmulPreferenceSetAttribute) ltPrefSet;
    decltype(&cublasLtMatmulPreferenceDestroy) ltPrefDestroy;
    decltype(&cublasLtMatmulAlgoGetHeuristic) ltHeuristic;
    decltype(&cublasLtMatmul) ltMatmul;
} g_api;

#define TT_STR_(x) #x
#define TT_STR(x) TT_STR_(x)

int cuda_blas_open(const char *lt_name, const char *blas_name, char *why, size_t n) {
    if (g_api.ltMatmul) return 0;
    if (!lt_name) lt_name = "libcublasLt.so." TT_STR(CUBLAS_VER_MAJOR);
    if (!blas_name) blas_name = "libcublas.so." TT_STR(CUBLAS_VER_MAJOR);
#ifdef TT_CUDA_EMU_H
    (void)why, (void)n;
#define SYM(lib, lib_name, field, sym) g_api.field = &sym
#else
    void *lt = dlopen(lt_name, RTLD_NOW | RTLD_LOCAL), *blas = lt ? dlopen(blas_name, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!blas) {
        snprintf(why, n, "cannot load %s (%s); add the CUDA toolkit's lib64 folder to LD_LIBRARY_PATH or use "
                 "--device cpu", lt ? blas_name : lt_name, dlerror());
        return -1; /* cuBLASLt, where it loaded, stays: unloading it loses what its start-up allocated */
    }
    /* dlsym's void * to a function pointer: through memcpy, as C++ has no implicit conversion for it */
#define SYM(lib, lib_name, field, sym)                                                                        \
    do {                                                                                                      \
        void *p_ = dlsym(lib, #sym);                                                                          \
        if (!p_) {                                                                                            \
            snprintf(why, n, "%s has no %s (cuBLAS %d is needed)", lib_name, #sym, CUBLAS_VER_MAJOR);         \
            memset(&g_api, 0, sizeof g_api);                                                                  \
            return -1; /* the libraries stay loaded: closing a half-used cuBLAS is not worth it */            \
        }                                                                                                     \
        memcpy(&g_api.field, &p_, sizeof p_);                                                                 \
    } while (0)
#endif
    SYM(blas, blas_name, create, cublasCreate_v2);
    SYM(blas, blas_name, setStream, cublasSetStream_v2);
    SYM(blas, blas_name, setWorkspace, cublasSetWorkspace_v2);
    SYM(blas, blas_name, gemmEx, cublasGemmEx);
    SYM(lt, lt_name, ltCreate, cublasLtCreate);
    SYM(lt, lt_name, ltDescCreate, cublasLtMatmulDescCreate);
    SYM(lt, lt_name, ltDescSet, cublasLtMatmulDescSetAttribute);
    SYM(lt, lt_name, ltLayoutCreate, cublasLtMatrixLayoutCreate);
    SYM(lt, lt_name, ltPrefCreate, cublasLtMatmulPreferenceCreate);
    SYM(lt, lt_name, ltPrefSet, cublasLtMatmulPreferenceSetAttribute);
    SYM(lt, lt_name, ltPrefDestroy, cublasLtMatmulPreferenceDestroy);
    SYM(lt, lt_name, ltHeuristic, cublasLtMatmulAlgoGetHeuristic);
    SYM(lt, lt_name, ltMatmul, cublasLtMatmul); /* last: set means all are */
#undef SYM
    return 0;
}

static cublasHandle_t g_blas;
static cublasLtHandle_t g_lt;
static void *g_ws;
static size_t g_ws_bytes;
static bf16 *g_cvt; /* CUDA_CVT_ELEMS bf16: a mixed product's float operand */
static int g_use_lt = 1;

/* ---- the per-shape cache ---------------------------------------------------------- */

/* What the heuristic's answer depends on: the column-major problem, the
 * element types and each pointer's alignment (an algorithm chosen for
 * 256-byte aligned operands may not take a 4-byte aligned one). */
typedef struct lt_key {
    int m, n, k, lda, ldb, ldc;
    uint8_t transa, transb, at, bt, ct, ala, alb, alc;
} lt_key;

enum { LT_EMPTY = 0, LT_ALGO, LT_GEMMEX };
typedef struct lt_entry {
    lt_key key;
    int state; /* LT_ALGO: cuBLASLt with algo; LT_GEMMEX: cublasGemmEx */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    size_t ws;
} lt_entry;

/* Distinct products of a run: a few per layer kind and head chunk; a full
 * table sends new shapes to cublasGemmEx. */
#define LT_CACHE 1024
static lt_entry g_cache[LT_CACHE];
static size_t g_cached;
static pthread_mutex_t g_cache_mu = PTHREAD_MUTEX_INITIALIZER;

/* The largest power of two (up to 16) that divides the address. cuBLASLt's
 * algorithms ask at most 16 bytes of an operand; a key that told 256 from
 * 64-byte alignment could give a product of the same shape another algorithm
 * (other bits) by where its operand happens to lie — a streamed run's
 * buffers lie elsewhere than a resident run's. */
static uint8_t align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int s = 0;
    while (s < 4 && !(a & ((uintptr_t)1 << s))) s++;
    return (uint8_t)s; /* log2 of the alignment */
}

static size_t key_hash(const lt_key *k) {
    const unsigned char *b = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ b[i]) * 1099511628211ull;
    return (size_t)(h % LT_CACHE);
}

/* Asks the heuristic for the key's best algorithm (cuBLASLt: one result,
 * fitting the workspace and the operands' alignments). */
static void lt_plan(lt_entry *e) {
    const lt_key *k = &e->key;
    e->state = LT_GEMMEX;
    cublasLtMatmulPreference_t pref = NULL;
    if (g_api.ltDescCreate(&e->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return;
    cublasOperation_t ta = k->transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = k->transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    uint64_t wsb = g_ws_bytes;
    uint32_t al[3] = {1u << k->ala, 1u << k->alb, 1u << k->alc};
    int ok = g_api.ltDescSet(e->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) == 0 &&
             g_api.ltDescSet(e->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) == 0 &&
             /* stored shapes: op(first) is (m, k), op(second) (k, n) */
             g_api.ltLayoutCreate(&e->la, cuda_type(k->at), k->transa ? k->k : k->m, k->transa ? k->m : k->k,
                                        k->lda) == 0 &&
             g_api.ltLayoutCreate(&e->lb, cuda_type(k->bt), k->transb ? k->n : k->k, k->transb ? k->k : k->n,
                                        k->ldb) == 0 &&
             g_api.ltLayoutCreate(&e->lc, cuda_type(k->ct), k->m, k->n, k->ldc) == 0 &&
             g_api.ltPrefCreate(&pref) == 0 &&
             g_api.ltPrefSet(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb) == 0 &&
             g_api.ltPrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0],
                                                  sizeof al[0]) == 0 &&
             g_api.ltPrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1],
                                                  sizeof al[1]) == 0 &&
             g_api.ltPrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2],
                                                  sizeof al[2]) == 0 &&
             g_api.ltPrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2],
                                                  sizeof al[2]) == 0;
    cublasLtMatmulHeuristicResult_t r;
    int got = 0;
    if (ok && g_api.ltHeuristic(g_lt, e->desc, e->la, e->lb, e->lc, e->lc, pref, 1, &r, &got) == 0 &&
        got == 1 && r.state == CUBLAS_STATUS_SUCCESS && r.workspaceSize <= g_ws_bytes) {
        e->algo = r.algo;
        e->ws = r.workspaceSize;
        e->state = LT_ALGO;
    }
    if (pref) g_api.ltPrefDestroy(pref);
}

/* The key's entry, planned on first use; NULL when the table is full. */
static lt_entry *lt_lookup(const lt_key *k) {
    pthread_mutex_lock(&g_cache_mu);
    size_t i = key_hash(k);
    lt_entry *e = NULL;
    for (size_t probe = 0; probe < LT_CACHE; probe++, i = (i + 1) % LT_CACHE) {
        if (g_cache[i].state == LT_EMPTY) {
            if (g_cached * 4 >= LT_CACHE * 3) break; /* keep probes short: the rest go to cublasGemmEx */
            e = &g_cache[i];
            e->key = *k;
            lt_plan(e);
            g_cached++;
            break;
        }
        if (memcmp(&g_cache[i].key, k, sizeof *k) == 0) {
            e = &g_cache[i];
            break;
        }
    }
    pthread_mutex_unlock(&g_cache_mu);
    return e; /* planned; only its state may change later (LT_ALGO -> LT_GEMMEX, under the lock) */
}

static int lt_state(lt_entry *e) {
    pthread_mutex_lock(&g_cache_mu);
    int s = e->state;
    pthread_mutex_unlock(&g_cache_mu);
    return s;
}

/* ---- products ------------------------------------------------------------------- */

/* x (n floats) rounded into y (bf16): a mixed product's float operand. */
__global__ void k_round_bf16(size_t n, const float *x, bf16 *y) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}

/* rows x cols floats at x (row stride ld) rounded into y, compact (row stride cols). */
__global__ void k_round_bf16_2d(size_t rows, size_t cols, size_t ld, const float *x, bf16 *y) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < rows * cols) y[i] = __float2bfloat16_rn(x[i / cols * ld + i % cols]);
}

/* A mixed product whose float operand does not fit g_cvt (a LoRA factor of a high rank on a wide projection:
 * rank 586 x 14336 is past 8M values): in slices of that operand along its dimension that is not the sum's (op(A)'s
 * rows, op(B)'s columns), each rounded compactly into g_cvt and multiplied into its own slice of C (each of C's
 * values is the same whole sum over K as unsliced). On the compute stream: a slice's rounding waits for the last
 * slice's product. */
static void gemm_sliced(int ta, int tb, int M, int N, int K, tt_real alpha, const void *A, int at, int lda,
                        const void *B, int bt, int ldb, tt_real beta, void *C, int ct, int ldc) {
    const int a_real = at == BE_REAL;
    size_t per = CUDA_CVT_ELEMS / (size_t)K; /* slice rows (A) or columns (B) */
    TT_ASSERT(per >= 1);
    if (per >= 64) per = per / 64 * 64; /* whole 16-byte rows for every compact row stride but the last slice's */
    const float *src = (const float *)(a_real ? A : B);
    const size_t ld = (size_t)(a_real ? lda : ldb), all = (size_t)(a_real ? M : N), cb = ct == BE_BF16 ? 2 : 4;
    const int along_rows = a_real ? !ta : tb; /* the slice is whole stored rows (else a band of stored columns) */
    for (size_t s0 = 0; s0 < all; s0 += per) {
        const size_t sn = all - s0 < per ? all - s0 : per;
        const size_t rows = along_rows ? sn : (size_t)K, cols = along_rows ? (size_t)K : sn;
        k_round_bf16_2d<<<blocks_for(rows * cols, 256), 256, 0, g_compute>>>(rows, cols, ld,
                                                                            src + (along_rows ? s0 * ld : s0), g_cvt);
        LAUNCHED();
        if (a_real) /* op(A)'s rows s0.. -> C's rows */
            cu_gemm(ta, tb, (int)sn, N, K, alpha, g_cvt, BE_BF16, (int)cols, B, bt, ldb, beta,
                    (char *)C + s0 * (size_t)ldc * cb, ct, ldc);
        else /* op(B)'s columns s0.. -> C's columns */
            cu_gemm(ta, tb, M, (int)sn, K, alpha, A, at, lda, g_cvt, BE_BF16, (int)cols, beta, (char *)C + s0 * cb, ct,
                    ldc);
    }
}

/* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T. Both
 * libraries take A and B of one type: where they differ, the float one (a
 * LoRA factor) is rounded to bf16 into g_cvt first (backend.h's rule), in
 * slices where it is larger (gemm_sliced). Products accumulate in fp32
 * (CUBLAS_COMPUTE_32F; tensor cores for bf16). */
void cu_gemm(int ta, int tb, int M, int N, int K, tt_real alpha, const void *A, int at, int lda, const void *B, int bt,
             int ldb, tt_real beta, void *C, int ct, int ldc) {
    if (at != bt) {
        int a_real = at == BE_REAL;
        size_t rows = a_real ? (ta ? K : M) : (tb ? N : K), cols = a_real ? (ta ? M : K) : (tb ? K : N);
        size_t ld = a_real ? (size_t)lda : (size_t)ldb, span = (rows - 1) * ld + cols;
        if (span > CUDA_CVT_ELEMS) {
            gemm_sliced(ta, tb, M, N, K, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc);
            return;
        }
        k_round_bf16<<<blocks_for(span, 256), 256, 0, g_compute>>>(span, (const float *)(a_real ? A : B), g_cvt);
        LAUNCHED();
        if (a_real) { A = g_cvt; at = BE_BF16; }
        else { B = g_cvt; bt = BE_BF16; }
    }
    tt_colmajor_gemm g = tt_colmajor_of(ta, tb, M, N, K, lda, ldb, ldc); /* cuda_index.h: B first */
    lt_entry *e = NULL;
    if (g_use_lt) {
        lt_key k;
        memset(&k, 0, sizeof k); /* the padding too: keys are compared and hashed as bytes */
        k.m = g.m; k.n = g.n; k.k = g.k; k.lda = g.lda; k.ldb = g.ldb; k.ldc = g.ldc;
        k.transa = (uint8_t)g.transa; k.transb = (uint8_t)g.transb;
        k.at = (uint8_t)bt; k.bt = (uint8_t)at; k.ct = (uint8_t)ct; /* the first operand is B */
        k.ala = align_of(B); k.alb = align_of(A); k.alc = align_of(C);
        e = lt_lookup(&k);
    }
    if (e && lt_state(e) == LT_ALGO) {
        cublasStatus_t s = g_api.ltMatmul(g_lt, e->desc, &alpha, B, e->la, A, e->lb, &beta, C, e->lc, C, e->lc, &e->algo,
                                          g_ws, e->ws, g_compute);
        if (s == CUBLAS_STATUS_SUCCESS) return;
        /* the heuristic's algorithm refused the problem: this shape goes to cublasGemmEx from now on */
        fprintf(stderr, "tiertrain: cuBLASLt status %d on a %d x %d x %d product; using cuBLAS for it\n", (int)s, g.m,
                g.n, g.k);
        pthread_mutex_lock(&g_cache_mu);
        e->state = LT_GEMMEX;
        pthread_mutex_unlock(&g_cache_mu);
    }
    CUBLAS_CHECK(g_api.gemmEx(g_blas, g.transa ? CUBLAS_OP_T : CUBLAS_OP_N, g.transb ? CUBLAS_OP_T : CUBLAS_OP_N, g.m,
                              g.n, g.k, &alpha, B, cuda_type(bt), g.lda, A, cuda_type(at), g.ldb, &beta, C,
                              cuda_type(ct), g.ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

cudaError_t cuda_gemm_probe(void) {
    cudaFuncAttributes a;
    return cudaFuncGetAttributes(&a, (const void *)k_round_bf16);
}

int cuda_gemm_init(void *ws, size_t ws_bytes, bf16 *cvt) {
    g_ws = ws;
    g_ws_bytes = ws_bytes;
    g_cvt = cvt;
    cublasStatus_t st = g_api.create(&g_blas);
    if (st == CUBLAS_STATUS_SUCCESS) st = g_api.setStream(g_blas, g_compute);
    if (st == CUBLAS_STATUS_SUCCESS) /* shared: both run on the compute stream, in turn */
        st = g_api.setWorkspace(g_blas, ws, ws_bytes);
    if (st == CUBLAS_STATUS_SUCCESS) st = g_api.ltCreate(&g_lt);
    const char *v = getenv("TT_CUDA_GEMM");
    g_use_lt = !(v && strcmp(v, "cublas") == 0);
    return (int)st;
}
