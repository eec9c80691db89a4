/* tests/test_opprof.c — the op profile (TT_PROFILE_OPS, kernels/opprof.h):
 * 1. ops of known shapes: each kind's calls, FLOPs and bytes, everything and
 *    the window opened later (and paused), on the CPU backend (the host's
 *    clock);
 * 2. training steps of the `small` preset (`tiny` under TSan) through the executor, on the CPU
 *    and on cpu-async (timing events): two identical steps after the window
 *    opens count exactly twice one step of every kind (an evaluation between
 *    them, paused, not at all), the same counts on both backends, the ops'
 *    times within the window's wall time, and the frozen products' FLOPs equal what the model's
 *    shapes say a LoRA step does (forward, the recomputation without the down
 *    projection, the input gradients; the head's two logits passes and its
 *    input gradient);
 * 3. more ops than the event pool holds, with no read-back between them;
 * 4. the report: the window's rows, in the order of their time. */
#include "core/base/common.h"
#include "core/exec.h"
#include "kernels/backend.h"
#include "kernels/opprof.h"
#include "sched/plan.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <string.h>

#include "tests/stream_run.h"

static uint64_t calls_of(int kind, int window) {
    prof_stat s;
    prof_get(kind, window, &s);
    return s.calls;
}

static void known_ops(void) {
    const int M = 100, N = 80, K = 70, R = 16, n = 1000;
    double es = (double)be_elem_size(BE_REAL);
    tt_real *a = be_alloc((size_t)M * K * sizeof(tt_real)), *b = be_alloc((size_t)K * N * sizeof(tt_real));
    tt_real *c = be_alloc((size_t)M * N * sizeof(tt_real)), *x = be_alloc(n * sizeof(tt_real));
    tt_real *y = be_alloc(n * sizeof(tt_real));
    prof_stat before[PK_N];
    for (int k = 0; k < PK_N; k++) prof_get(k, 0, &before[k]);
    be_gemm(0, 0, M, N, K, 1, a, K, b, N, 0, c, N);
    be_gemm(0, 0, M, N, K, 1, a, K, b, N, 1, c, N);
    be_gemm(0, 0, M, R, K, 1, a, K, b, N, 0, c, N); /* N = 16: rank-sized */
    for (int i = 0; i < 3; i++) be_axpy(n, 1, x, y, BE_REAL);
    prof_stat s;
    prof_get(PK_GEMM, 0, &s);
    CHECK_EQ_INT(s.calls - before[PK_GEMM].calls, 2);
    CHECK_NEAR(s.flops - before[PK_GEMM].flops, 2 * 2.0 * M * N * K, 0);
    /* A and B read, C written (and read once, where beta is not 0) */
    CHECK_NEAR(s.bytes - before[PK_GEMM].bytes, es * (2.0 * (M * K + K * N) + 3.0 * M * N), 0);
    CHECK(s.seconds > before[PK_GEMM].seconds);
    prof_get(PK_GEMM_RANK, 0, &s);
    CHECK_EQ_INT(s.calls - before[PK_GEMM_RANK].calls, 1);
    CHECK_NEAR(s.flops - before[PK_GEMM_RANK].flops, 2.0 * M * R * K, 0);
    prof_get(PK_AXPY, 0, &s);
    CHECK_EQ_INT(s.calls - before[PK_AXPY].calls, 3);
    CHECK_NEAR(s.bytes - before[PK_AXPY].bytes, 3 * 3 * es * n, 0);
    /* the window counts from its opening only; paused (validation), ops count in everything only */
    prof_window(2);
    be_gemm(0, 0, M, N, K, 1, a, K, b, N, 0, c, N);
    CHECK_EQ_INT(calls_of(PK_GEMM, 1), 1);
    CHECK_EQ_INT(calls_of(PK_GEMM, 0) - before[PK_GEMM].calls, 3);
    CHECK_EQ_INT(calls_of(PK_AXPY, 1), 0);
    prof_pause(1);
    be_gemm(0, 0, M, N, K, 1, a, K, b, N, 0, c, N);
    prof_pause(0);
    be_gemm(0, 0, M, N, K, 1, a, K, b, N, 0, c, N);
    CHECK_EQ_INT(calls_of(PK_GEMM, 1), 2);
    CHECK_EQ_INT(calls_of(PK_GEMM, 0) - before[PK_GEMM].calls, 5);
    be_free(a); be_free(b); be_free(c); be_free(x); be_free(y);
}

/* One op of kind `kind` by `call`: one call more, with exactly these FLOPs and bytes. */
#define ONE(kind, fl, by, call)                                                                                        \
    do {                                                                                                               \
        prof_stat b_, a_;                                                                                              \
        prof_get((kind), 0, &b_);                                                                                      \
        call;                                                                                                          \
        prof_get((kind), 0, &a_);                                                                                      \
        CHECK_MSG(a_.calls - b_.calls == 1 && a_.flops - b_.flops == (double)(fl) &&                                  \
                      a_.bytes - b_.bytes == (double)(by),                                                             \
                  "%s: %llu calls, %.17g FLOPs, %.17g bytes; want 1, %.17g, %.17g", prof_kind_name(kind),             \
                  (unsigned long long)(a_.calls - b_.calls), a_.flops - b_.flops, a_.bytes - b_.bytes, (double)(fl),   \
                  (double)(by));                                                                                       \
    } while (0)

/* Every other kind once, each its own kind with its FLOPs or bytes (f32 activations on the CPU backend). */
static void each_kind(void) {
    const int T = 8, C = 64, nh = 2, nkv = 1, hd = 16, n = 512;
    const double e = (double)sizeof(tt_real);
    size_t big = 4096;
    tt_real *x = be_alloc(big * sizeof(tt_real)), *y = be_alloc(big * sizeof(tt_real));
    tt_real *z = be_alloc(big * sizeof(tt_real)), *u = be_alloc(big * sizeof(tt_real));
    tt_real *v = be_alloc(big * sizeof(tt_real)), *w = be_alloc(big * sizeof(tt_real));
    float *m1 = be_alloc(big * sizeof(float)), *m2 = be_alloc(big * sizeof(float));
    be_fill(x, big, 0.5f);
    be_fill(w, big, 1.f);
    ONE(PK_FILL, 0, e * n, be_fill(y, n, 0.25f));
    ONE(PK_COPY, 0, 2.0 * n * e, be_copy(z, y, n * sizeof(tt_real)));
    ONE(PK_SCALE, 0, 2 * e * n, be_scale(n, 2, z));
    ONE(PK_SUMSQ, 0, e * n, be_sumsq(n, z, (double *)u));
    ONE(PK_MASK_SCALE, 0, 3 * e * n, be_mask_scale(n, x, w, 1, z, BE_REAL));
    ONE(PK_DROPOUT, 0, 2 * e * T * C, be_dropout(T, C, 1, 2, 0.1f, 2, x, z, 0, BE_REAL));
    ONE(PK_DROPOUT, 0, 3 * e * T * C, be_dropout(T, C, 1, 2, 0.1f, 2, x, z, 1, BE_REAL));
    ONE(PK_DEQUANT, 0, (4 + e) * n, be_dequant_range(TT_DTYPE_F32, x, big, 0, n, z, BE_REAL));
    ONE(PK_LINEAR, 2.0 * T * 16 * C, (4 + 2 * e) * 16 * C + e * T * (C + 16),
        be_linear_w(0, T, C, 16, x, C, TT_DTYPE_F32, w, 32, 0, v, 0, y, 16, BE_REAL));
    ONE(PK_LINEAR, 2.0 * T * 16 * C, (4 + 2 * e) * 16 * C + e * T * (16 + 2 * C), /* dgrad, accumulating */
        be_linear_w(1, T, C, 16, x, 16, TT_DTYPE_F32, w, 32, 16, v, 1, y, C, BE_REAL));
    ONE(PK_RMS_FWD, 0, 2 * e * T * C, be_rmsnorm_fwd(T, C, x, w, 1e-5f, y, u, BE_REAL));
    ONE(PK_RMS_BWD, 0, 3 * e * T * C, be_rmsnorm_bwd(T, C, x, w, u, y, z, 0, BE_REAL));
    ONE(PK_RMS_BWD, 0, 4 * e * T * C, be_rmsnorm_bwd(T, C, x, w, u, y, z, 1, BE_REAL));
    ONE(PK_RMS_BWD_W, 0, 2 * e * T * C, be_rmsnorm_bwd_w(T, C, x, u, y, v, BE_REAL));
    ONE(PK_ROPE, 0, 2 * e * T * nh * hd, be_rope(T, T, nh, hd, w, x, y, 0, NULL, BE_REAL));
    ONE(PK_SWIGLU_FWD, 0, 3 * e * n, be_swiglu_fwd(n, x, w, y, BE_REAL));
    ONE(PK_SWIGLU_BWD, 0, 5 * e * n, be_swiglu_bwd(n, x, w, y, z, v, BE_REAL));
    ONE(PK_ADAMW, 0, (3 * e + 16) * n, be_adamw(n, y, x, m1, m2, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.f, 1));
    /* causal attention: the forward's two products over the lower triangle; the backward 2.5 of them */
    void *sc = be_alloc(be_attn_scratch_bytes(1, T, nh, nkv, hd, BE_REAL) + 1);
    double af = 2.0 * T * T * hd * nh;
    ONE(PK_ATTN_FWD, af, 0, be_attn_fwd(1, T, nh, nkv, hd, x, y, z, u, v, NULL, sc, BE_REAL));
    ONE(PK_ATTN_BWD, 2.5 * af, 0, be_attn_bwd(1, T, nh, nkv, hd, x, y, z, u, v, w, m1, m2, x + 1024, NULL, sc, BE_REAL));
    be_free(sc);
    be_free(x); be_free(y); be_free(z); be_free(u); be_free(v); be_free(w); be_free(m1); be_free(m2);
}

/* The FLOPs one step's products of frozen weights must count (see the header). */
static double step_linear_flops(const tt_config *c, int K, int T) {
    double f = 0;
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const tt_layer_dims *d = &c->layers[l];
        double H = c->hidden, q = (double)d->n_heads * c->head_dim, kv = (double)d->n_kv_heads * c->head_dim;
        double F = d->ffn;
        double attn = H * q + 2 * H * kv + q * H, up = 2 * H * F, down = F * H;
        f += 3 * (attn + up) + 2 * down;
    }
    f += 3.0 * c->vocab * c->hidden; /* the head: logits for the statistics, again for the gradient, and dgrad */
    return 2.0 * K * T * f;
}

/* Steps 1 (warm-up), 2 and 3 of the executor, an evaluation between 2 and 3 with the window paused; the
 * window's tallies after 2 and after 3, and its wall time. */
static void three_steps(const char *store, const tt_plan_req *req, prof_stat w2[PK_N], prof_stat w3[PK_N],
                        double *wall, int *decoded, const char *what) {
    run_ctx c;
    int rc = run_open(&c, store, req, NULL, what);
    CHECK_MSG(rc == 0, "%s: %s", what, tt_lasterr());
    *wall = 0;
    if (rc) return;
    *decoded = exec_plan(c.e)->user_opt;
    tt_exec *e = c.e;
    int32_t *in = c.in, *tg = c.tg;
    tt_real *w = c.w;
    double g, l;
    make_batch(tier_config(c.s)->vocab, c.K, c.T, 1, in, tg, w);
    for (int st = 1; st <= 3 && !rc; st++) {
        if (st == 2) prof_window(2);
        rc = exec_step(e, in, tg, w, 2e-3f, st, 0.9f, 0.999f, 1e-8f, 0.01f, 0.f, 0, &l, &g);
        CHECK_MSG(rc == 0, "%s, step %d: %s", what, st, tt_lasterr());
        for (int k = 0; k < PK_N; k++) prof_get(k, 1, st == 2 ? &w2[k] : &w3[k]);
        if (st == 2 && !rc) { /* validation's ops are set apart */
            prof_pause(1);
            rc = exec_eval(e, in, tg, w, &l);
            prof_pause(0);
        }
    }
    *wall = prof_window_seconds();
    run_close(&c);
}

static void steps(const char *store, const tt_config *c) {
    tt_plan_req req = {0};
    req.B = 2; req.seq = 16; req.K = 2;
    exec_user(&req.user, &(tt_lora_cfg){4, 8.f, 0.f, LORA_ALL_TARGETS, 0}, 0);
    prof_stat w2[2][PK_N], w3[2][PK_N];
    double wall[2];
    int dec[2] = {0, 0};
    const tt_backend *cpu = be_current(), *async = be_by_name("cpu-async");
    TT_ASSERT(async);
    three_steps(store, &req, w2[0], w3[0], &wall[0], &dec[0], "cpu");
    cpu_async_configure(3, 20);
    be_use(async);
    three_steps(store, &req, w2[1], w3[1], &wall[1], &dec[1], "cpu-async");
    /* cpu-async decodes each layer once a pass (backend.h's decode_layers), cpu every product's block inside its
     * linear op: their dequantizations differ in number, and cpu-async's per step with what ran before (the
     * layer the buffer holds; the evaluation between steps 2 and 3 leaves another there) */
    CHECK_MSG(!dec[0] && dec[1], "decoded layers: cpu %d, cpu-async %d (want 0 and 1)", dec[0], dec[1]);
    be_use(cpu);
    double want = step_linear_flops(c, req.K, req.B * req.seq);
    for (int b = 0; b < 2; b++) {
        const char *bn = b ? "cpu-async" : "cpu";
        for (int k = 0; k < PK_N; k++) {
            if (k == PK_DEQUANT && dec[b]) continue;
            CHECK_MSG(w3[b][k].calls == 2 * w2[b][k].calls && w3[b][k].flops == 2 * w2[b][k].flops &&
                          w3[b][k].bytes == 2 * w2[b][k].bytes,
                      "%s, %s: step 2 counted %llu calls, steps 2 and 3 %llu", bn, prof_kind_name(k),
                      (unsigned long long)w2[b][k].calls, (unsigned long long)w3[b][k].calls);
            CHECK_MSG(w3[b][k].calls == w3[0][k].calls, "%s: %llu calls on cpu-async, %llu on cpu", prof_kind_name(k),
                      (unsigned long long)w3[b][k].calls, (unsigned long long)w3[0][k].calls);
        }
        CHECK_MSG(w2[b][PK_LINEAR].flops == want, "%s: the frozen products counted %.17g FLOPs in a step, the shapes "
                  "say %.17g", bn, w2[b][PK_LINEAR].flops, want);
        /* one compute queue: the ops' times cannot add up to more than the window's wall time */
        double sum = 0;
        for (int k = 0; k < PK_N; k++) sum += w3[b][k].seconds;
        CHECK_MSG(sum > 0 && sum <= wall[b] * 1.001 + 1e-4, "%s: the ops' times add up to %.6f s in a window of %.6f s",
                  bn, sum, wall[b]);
        int kinds[] = {PK_LINEAR, PK_GEMM_RANK, PK_ATTN_FWD, PK_ATTN_BWD, PK_RMS_FWD, PK_SWIGLU_BWD, PK_XENT, PK_ADAMW};
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
            CHECK_MSG(w3[b][kinds[i]].calls > 0 && w3[b][kinds[i]].seconds > 0, "%s: no time for %s", bn,
                      prof_kind_name(kinds[i]));
    }
}

/* More ops than the pool has pairs, with no read-back between them: the pool reads its oldest first. */
static void overflow(void) {
    const tt_backend *cpu = be_current();
    be_use(be_by_name("cpu-async"));
    cpu_async_configure(4, 0);
    const size_t n = 64;
    tt_real *x = be_alloc(n * sizeof(tt_real)), *y = be_alloc(n * sizeof(tt_real)), h[64];
    prof_stat a, b;
    prof_get(PK_AXPY, 0, &a);
    for (int i = 0; i < 40000; i++) be_axpy(n, 1, x, y, BE_REAL);
    be_to_host(h, y, sizeof h);
    prof_get(PK_AXPY, 0, &b);
    CHECK_EQ_INT(b.calls - a.calls, 40000);
    be_free(x);
    be_free(y);
    be_use(cpu);
}

static void report(void) {
    FILE *f = tmpfile();
    TT_ASSERT(f);
    prof_report(f, "cpu");
    rewind(f);
    char line[256], all[8192] = "";
    while (fgets(line, sizeof line, f) && strlen(all) + strlen(line) < sizeof all) strcat(all, line);
    fclose(f);
    CHECK_MSG(strstr(all, "from step 2 on") && strstr(all, "validation set apart") && strstr(all, "warm-up and validation:"),
              "report: %s", all);
    /* the rows by time: each total no larger than the one above it */
    const char *p = strstr(all, "rate\n");
    double prev = 1e300;
    int rows = 0;
    for (p = p ? strchr(p, '\n') + 1 : NULL; p && *p && strncmp(p, "  all ops", 9); p = strchr(p, '\n') + 1) {
        double ms = -1;
        const char *q = p + 2 + 32;
        unsigned long long calls;
        CHECK_MSG(sscanf(q, "%llu %lf", &calls, &ms) == 2 && ms <= prev, "report row: %.80s", p);
        prev = ms;
        rows++;
    }
    CHECK_MSG(rows >= 8, "report has %d rows: %s", rows, all);
    prof_stat s;
    prof_get(PK_LINEAR, 1, &s);
    char want[80];
    snprintf(want, sizeof want, "linear (dequantize + product)    %9llu", (unsigned long long)s.calls);
    CHECK_MSG(strstr(all, want), "report lacks '%s': %s", want, all);
}

int main(void) {
    setenv("TT_PROFILE_OPS", "1", 1);
    CHECK(prof_enabled());
    known_ops();
    each_kind();
    char *dir = fixture_tmpdir();
    /* the ThreadSanitizer build (make test runs one, many times slower) takes the tiny preset: the same steps and
     * counts, smaller products */
#if defined(__SANITIZE_THREAD__)
    const char *preset = "tiny";
#else
    const char *preset = "small";
#endif
    char store[600];
    snprintf(store, sizeof store, "%s/%s.tier", dir, preset);
    tt_config c;
    TT_ASSERT(config_preset(preset, &c) == 0);
    CHECK(fixture_write_model(store, &c, TT_DTYPE_NF4DQ, 0.02f, 1) == 0);
    steps(store, &c);
    overflow();
    report();
    fixture_rm_rf(dir);
    free(dir);
    TEST_END();
}
