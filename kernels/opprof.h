/* kernels/opprof.h — the op profile (TT_PROFILE_OPS=1): the time of every
 * backend op, summed by kind, printed on stderr when the process ends.
 *
 * The be_* wrappers (kernels/backend.c) bracket each op with a pair of the
 * backend's timing events on the compute queue (CUDA events; cpu-async's
 * events note when their mark is reached), or with the host's clock where
 * the backend runs ops at the call (the CPU backend). Event pairs wait in a
 * pool and are read back at the next synchronous read-back (be_to_host, where
 * the compute queue's work is done); a full pool waits for its oldest op.
 * Each op also counts its FLOPs (products, attention: causal FLOPs as `bench
 * kernels` counts them) or the bytes it must move, for a rate per kind (the
 * KV-cache attention's bytes count the whole cache: an upper bound).
 *
 * Two tallies: everything, and a window that a caller opens after its
 * warm-up (train: after step 1, when every kernel is loaded and every plan
 * and workspace made) and may pause (train: around validation), which the
 * report shows by itself. Thread-safe. */
#ifndef TT_OPPROF_H
#define TT_OPPROF_H

#include <stdint.h>
#include <stdio.h>

enum {
    PK_LINEAR,      /* a frozen weight's block dequantized and its product (be_linear_w) */
    PK_GEMM,        /* a product of activations or trainable weights, every dimension > 64 */
    PK_GEMM_RANK,   /* a product with a dimension <= 64: LoRA's rank-sized ones */
    PK_ATTN_FWD,
    PK_ATTN_BWD,
    PK_ATTN_KV,     /* generation's attention over the KV cache */
    PK_DEQUANT,
    PK_RMS_FWD,
    PK_RMS_BWD,
    PK_RMS_BWD_W,
    PK_ROPE,
    PK_SWIGLU_FWD,
    PK_SWIGLU_BWD,
    PK_XENT,        /* cross-entropy's statistics, loss and gradient */
    PK_KD,          /* distillation's */
    PK_AXPY,
    PK_SCALE,
    PK_MASK_SCALE,
    PK_DROPOUT,
    PK_SUMSQ,
    PK_ADAMW,
    PK_COPY,
    PK_FILL,
    PK_N
};

/* 1 when TT_PROFILE_OPS is set to something other than 0 (read once). */
int prof_enabled(void);

typedef struct prof_tok {
    long slot; /* the pool's pair, or -1: the host's clock */
    double t0;
} prof_tok;
prof_tok prof_begin(void);
void prof_end(prof_tok t, int kind, double flops, double bytes);

/* Reads back every pair whose op is done (all of them after a synchronous
 * read-back). */
void prof_flush(void);

/* be_use's hook, before another backend takes over: reads the pool and frees
 * its events (they belong to the backend in use until now). */
void prof_switch(void);

/* Opens the window: what was timed so far is the warm-up (before `step`). */
void prof_window(int step);

/* Sets the window's ops apart while paused (train: validation), and its wall
 * time too. */
void prof_pause(int paused);

/* The window's wall time so far: from its opening to the last read-back,
 * pauses left out (0 before it opens). */
double prof_window_seconds(void);

/* The tally of one kind: everything (window 0) or the window (1). */
typedef struct prof_stat {
    uint64_t calls;
    double seconds, flops, bytes;
} prof_stat;
void prof_get(int kind, int window, prof_stat *out);
const char *prof_kind_name(int kind);

/* The table: kinds by time, with calls, share, mean and rate; the window's
 * when one was opened, then the warm-up's totals. */
void prof_report(FILE *f, const char *backend);

#endif
