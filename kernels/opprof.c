/* kernels/opprof.c — the op profile (see kernels/opprof.h).
 *
 * The pool: up to POOL pairs of timing events, each free, open (its op was
 * issued between prof_begin and prof_end) or ended (waiting to be read, in
 * the ended queue in the order the ops were issued). A flush reads ended
 * pairs from the queue's head as long as their end mark has been reached
 * (the compute queue runs its ops in order: one not reached means none after
 * it is), and frees them. A full pool waits for the oldest op only. The pool
 * belongs to the backend that made its events: be_use calls prof_switch
 * first, which reads and frees it. */
#include "kernels/opprof.h"

#include "core/base/common.h"
#include "kernels/backend.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define POOL 16384

enum { PAIR_FREE, PAIR_OPEN, PAIR_ENDED };

typedef struct pair {
    tt_event *a, *b;
    int state, kind, window;
    double flops, bytes;
} pair;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int g_on = -1;
static pair *g_pool;        /* POOL pairs, or NULL: not made yet, or the backend has no timers */
static int g_no_timers;     /* this backend runs ops at the call: the host's clock */
static long g_free[POOL];
static long g_n_free;
static long g_ended[POOL]; /* ring: the ended pairs, oldest first */
static long g_end_head, g_n_ended;
static prof_stat g_tally[2][PK_N];
static int g_window_step;
static int g_opened, g_paused; /* new ops count in the window while it is opened and not paused */
/* the window's wall time: g_active_s over the spans before pauses, then from g_active_t0 to the last read-back */
static double g_last_read, g_active_t0, g_active_s;
static int g_any_pause;
static int g_report_armed;

static const char *const g_names[PK_N] = {
    [PK_LINEAR] = "linear (dequantize + product)",
    [PK_GEMM] = "product",
    [PK_GEMM_RANK] = "product, a dimension <= 64",
    [PK_ATTN_FWD] = "attention forward",
    [PK_ATTN_BWD] = "attention backward",
    [PK_ATTN_KV] = "attention over the KV cache",
    [PK_DEQUANT] = "dequantize",
    [PK_RMS_FWD] = "rmsnorm forward",
    [PK_RMS_BWD] = "rmsnorm backward",
    [PK_RMS_BWD_W] = "rmsnorm weight gradient",
    [PK_ROPE] = "rope",
    [PK_SWIGLU_FWD] = "swiglu forward",
    [PK_SWIGLU_BWD] = "swiglu backward",
    [PK_XENT] = "cross-entropy",
    [PK_KD] = "distillation loss",
    [PK_AXPY] = "axpy (residual adds)",
    [PK_SCALE] = "scale",
    [PK_MASK_SCALE] = "mask apply (pruned weights)",
    [PK_DROPOUT] = "LoRA dropout",
    [PK_SUMSQ] = "sum of squares",
    [PK_ADAMW] = "adamw",
    [PK_COPY] = "device copy",
    [PK_FILL] = "fill",
};

const char *prof_kind_name(int kind) {
    TT_ASSERT(kind >= 0 && kind < PK_N);
    return g_names[kind];
}

static void report_at_exit(void);

int prof_enabled(void) {
    int on = atomic_load_explicit(&g_on, memory_order_relaxed);
    if (on >= 0) return on;
    const char *v = getenv("TT_PROFILE_OPS");
    on = v && *v && strcmp(v, "0") != 0;
    int expect = -1;
    if (atomic_compare_exchange_strong(&g_on, &expect, on) && on) {
        pthread_mutex_lock(&g_mu);
        if (!g_report_armed) {
            g_report_armed = 1;
            atexit(report_at_exit);
        }
        pthread_mutex_unlock(&g_mu);
    }
    return atomic_load(&g_on);
}

static void tally(int kind, int window, double sec, double flops, double bytes) {
    for (int w = 0; w <= window; w++) {
        prof_stat *s = &g_tally[w][kind];
        s->calls++;
        s->seconds += sec;
        s->flops += flops;
        s->bytes += bytes;
    }
}

/* Reads the ended pairs whose ops are done, oldest first, and frees them;
 * wait_oldest: waits for the oldest op first (a full pool). g_mu held. */
static void flush_locked(int wait_oldest) {
    if (!g_pool || !g_n_ended) return;
    if (wait_oldest) be_event_sync(g_pool[g_ended[g_end_head]].b);
    int any = 0;
    while (g_n_ended) {
        long i = g_ended[g_end_head];
        pair *p = &g_pool[i];
        if (!be_event_query(p->b)) break;
        double s = be_timer_elapsed(p->a, p->b);
        tally(p->kind, p->window, s > 0 ? s : 0, p->flops, p->bytes);
        p->state = PAIR_FREE;
        g_free[g_n_free++] = i;
        g_end_head = (g_end_head + 1) % POOL;
        g_n_ended--;
        any = 1;
    }
    if (any) g_last_read = tt_now();
}

/* Waits for every op timed and reads them all; g_mu held. */
static void drain_locked(void) {
    if (!g_pool || !g_n_ended) return;
    be_event_sync(g_pool[g_ended[(g_end_head + g_n_ended - 1) % POOL]].b);
    flush_locked(0);
}

/* The window's wall time to the last read-back, pauses left out; g_mu held. */
static double window_wall_locked(void) {
    return g_active_s + (!g_paused && g_last_read > g_active_t0 ? g_last_read - g_active_t0 : 0);
}

/* Makes the pool for the current backend, or notes that it has no timers; g_mu held. */
static void pool_make(void) {
    tt_event *t = be_timer_new();
    if (!t) {
        g_no_timers = 1;
        return;
    }
    g_pool = tt_xcalloc(POOL, sizeof *g_pool);
    for (long i = 0; i < POOL; i++) {
        g_pool[i].a = i ? be_timer_new() : t;
        g_pool[i].b = be_timer_new();
        g_free[i] = POOL - 1 - i;
    }
    g_n_free = POOL;
}

prof_tok prof_begin(void) {
    prof_tok t = {-1, 0};
    pthread_mutex_lock(&g_mu);
    if (!g_pool && !g_no_timers) pool_make();
    if (g_pool) {
        if (!g_n_free) flush_locked(1); /* waits for the oldest op */
        TT_ASSERT(g_n_free > 0);       /* every pair open at once: ops nested POOL deep, never */
        t.slot = g_free[--g_n_free];
        g_pool[t.slot].state = PAIR_OPEN;
        be_event_record(g_pool[t.slot].a, NULL);
    }
    pthread_mutex_unlock(&g_mu);
    if (t.slot < 0) t.t0 = tt_now();
    return t;
}

void prof_end(prof_tok t, int kind, double flops, double bytes) {
    TT_ASSERT(kind >= 0 && kind < PK_N);
    double t1 = t.slot < 0 ? tt_now() : 0;
    pthread_mutex_lock(&g_mu);
    if (t.slot < 0) {
        tally(kind, g_opened && !g_paused, t1 - t.t0, flops, bytes);
        g_last_read = t1;
    } else {
        pair *p = &g_pool[t.slot];
        TT_ASSERT(p->state == PAIR_OPEN);
        be_event_record(p->b, NULL);
        p->kind = kind;
        p->window = g_opened && !g_paused;
        p->flops = flops;
        p->bytes = bytes;
        p->state = PAIR_ENDED;
        g_ended[(g_end_head + g_n_ended++) % POOL] = t.slot;
    }
    pthread_mutex_unlock(&g_mu);
}

void prof_flush(void) {
    if (!prof_enabled()) return;
    pthread_mutex_lock(&g_mu);
    flush_locked(0);
    pthread_mutex_unlock(&g_mu);
}

void prof_window(int step) {
    if (!prof_enabled()) return;
    pthread_mutex_lock(&g_mu);
    flush_locked(0);
    g_opened = 1;
    g_paused = 0;
    g_window_step = step;
    g_active_t0 = g_last_read = tt_now();
    g_active_s = 0;
    g_any_pause = 0;
    memset(g_tally[1], 0, sizeof g_tally[1]);
    pthread_mutex_unlock(&g_mu);
}

void prof_pause(int paused) {
    if (!prof_enabled()) return;
    pthread_mutex_lock(&g_mu);
    if (g_opened && paused != g_paused) {
        flush_locked(0); /* what ran before belongs where it was issued */
        if (paused) {
            g_active_s += g_last_read > g_active_t0 ? g_last_read - g_active_t0 : 0;
            g_any_pause = 1;
        } else {
            g_active_t0 = tt_now();
        }
        g_paused = paused;
    }
    pthread_mutex_unlock(&g_mu);
}

/* be_use's hook: the pool's events belong to the backend in use until now. */
void prof_switch(void) {
    if (atomic_load_explicit(&g_on, memory_order_relaxed) != 1) return;
    pthread_mutex_lock(&g_mu);
    drain_locked();
    if (g_pool) {
        for (long i = 0; i < POOL; i++) {
            TT_ASSERT(g_pool[i].state == PAIR_FREE); /* no op is open across a switch */
            be_event_free(g_pool[i].a);
            be_event_free(g_pool[i].b);
        }
        free(g_pool);
        g_pool = NULL;
    }
    g_no_timers = 0;
    pthread_mutex_unlock(&g_mu);
}

double prof_window_seconds(void) {
    pthread_mutex_lock(&g_mu);
    double wall = g_opened ? window_wall_locked() : 0;
    pthread_mutex_unlock(&g_mu);
    return wall;
}

void prof_get(int kind, int window, prof_stat *out) {
    TT_ASSERT(kind >= 0 && kind < PK_N && (window == 0 || window == 1) && out);
    pthread_mutex_lock(&g_mu);
    *out = g_tally[window][kind];
    pthread_mutex_unlock(&g_mu);
}

/* The kind's rate: TFLOP/s (GFLOP/s where slower) for the ops that count FLOPs, GB/s for the rest and for the
 * rank-sized products, which move their operands' bytes in far more time than their FLOPs take. */
static void rate(int kind, const prof_stat *s, char *b, size_t n) {
    if (s->seconds <= 0) snprintf(b, n, "-");
    else if (kind == PK_GEMM_RANK && s->bytes > 0) snprintf(b, n, "%.1f GB/s", s->bytes / s->seconds / 1e9);
    else if (s->flops > 0 && s->flops / s->seconds >= 1e12) snprintf(b, n, "%.1f TFLOP/s", s->flops / s->seconds / 1e12);
    else if (s->flops > 0) snprintf(b, n, "%.1f GFLOP/s", s->flops / s->seconds / 1e9);
    else if (s->bytes > 0) snprintf(b, n, "%.1f GB/s", s->bytes / s->seconds / 1e9);
    else snprintf(b, n, "-");
}

void prof_report(FILE *f, const char *backend) {
    pthread_mutex_lock(&g_mu);
    uint64_t in_window = 0;
    for (int k = 0; k < PK_N; k++) in_window += g_tally[1][k].calls;
    int w = g_opened && in_window; /* a run of one step has only its warm-up: show everything */
    const prof_stat *t = g_tally[w];
    double wall = window_wall_locked();
    int order[PK_N], n = 0;
    double total = 0;
    uint64_t calls = 0;
    for (int k = 0; k < PK_N; k++)
        if (t[k].calls) {
            order[n++] = k;
            total += t[k].seconds;
            calls += t[k].calls;
        }
    for (int i = 1; i < n; i++) /* by time, longest first */
        for (int j = i; j > 0 && t[order[j]].seconds > t[order[j - 1]].seconds; j--) {
            int x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    long open = 0;
    for (long i = 0; g_pool && i < POOL; i++) open += g_pool[i].state != PAIR_FREE;
    if (w)
        fprintf(f, "op profile (TT_PROFILE_OPS, %s backend), from step %d on (%.3f s of wall time to the last read-back%s; "
                "what came before is the warm-up, counted apart):\n", backend, g_window_step, wall,
                g_any_pause ? ", validation set apart" : "");
    else
        fprintf(f, "op profile (TT_PROFILE_OPS, %s backend), every op (%s):\n", backend,
                g_opened ? "nothing ran after the warm-up: it is included" : "no warm-up was set apart");
    fprintf(f, "  %-32s %9s %12s %7s %11s %16s\n", "op", "calls", "total ms", "share", "mean us", "rate");
    for (int i = 0; i < n; i++) {
        const prof_stat *s = &t[order[i]];
        char r[32];
        rate(order[i], s, r, sizeof r);
        fprintf(f, "  %-32s %9llu %12.3f %6.1f%% %11.1f %16s\n", g_names[order[i]], (unsigned long long)s->calls,
                s->seconds * 1e3, total > 0 ? 100 * s->seconds / total : 0, s->seconds / (double)s->calls * 1e6, r);
    }
    fprintf(f, "  %-32s %9llu %12.3f %6.1f%%", "all ops", (unsigned long long)calls, total * 1e3, 100.0);
    if (w && wall > 0) fprintf(f, "   (%.1f%% of the window's wall time)", 100 * total / wall);
    fprintf(f, "\n");
    if (w) {
        double ws = 0;
        uint64_t wc = 0;
        for (int k = 0; k < PK_N; k++) {
            ws += g_tally[0][k].seconds - g_tally[1][k].seconds;
            wc += g_tally[0][k].calls - g_tally[1][k].calls;
        }
        fprintf(f, "  warm-up%s: %llu ops, %.3f ms\n", g_any_pause ? " and validation" : "",
                (unsigned long long)wc, ws * 1e3);
    }
    if (open) fprintf(f, "  %ld ops issued after the last read-back are not in the table\n", open);
    pthread_mutex_unlock(&g_mu);
}

static void report_at_exit(void) {
    if (atomic_load(&g_on) != 1) return;
    fflush(stdout); /* the run's own last lines first */
    prof_report(stderr, be_current()->name);
}
