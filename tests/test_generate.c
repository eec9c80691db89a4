/* tests/test_generate.c — generation with a KV cache (core/generate.h):
 *   - KV-cached greedy decoding == recomputing the whole sequence at every
 *     step: the same tokens, logits within 1e-5 (f32: the largest difference
 *     over the step's largest |logit|; the double build, test_generate_f64:
 *     within 1e-5 absolutely), with a LoRA adapter
 *     whose B is not zero, on `tiny` and on a GQA model that went through
 *     Hugging Face export + import;
 *   - streamed under the smallest --hbm the planner accepts (every KV cache in
 *     the host arena, two layer slots; also on cpu-async's delayed queues)
 *     and under a middle budget == resident, bit for bit (tokens and
 *     logits), with the planned peaks measured;
 *   - a batch of 8 prompts of different lengths (prompt chunks shorter than
 *     the longest prompt) == each prompt alone, greedy and sampled;
 *   - the sampler: top-k 1, a tiny top-p and a tiny temperature (1e-40, whose
 *     scaled logits overflow a float) are greedy; temperature 1 draws with the
 *     softmax's frequencies.
 */
#include "core/base/common.h"
#include "core/base/rng.h"
#include "core/generate.h"
#include "core/model.h"
#include "io/hfmodel.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <math.h>

#define MAXP 24   /* longest prompt */
#define NEW 10    /* tokens generated per prompt */
#define NPROMPT 8

static const tt_lora_cfg g_lc = {.rank = 4, .alpha = 8.f, .targets = 0x7f};

/* The LoRA parameters both paths use: random A and B (B not zero, so the
 * adapter changes the output). */
static tt_real *lora_values(const tt_config *c, size_t *n) {
    tt_lora lo;
    TT_ASSERT(lora_init(&lo, c, &g_lc, 3) == 0);
    *n = lo.n;
    tt_real *p = malloc(lo.n * sizeof *p);
    tt_rng r;
    rng_seed(&r, 9, 0);
    for (size_t i = 0; i < lo.n; i++) p[i] = (tt_real)(0.05 * rng_normal(&r));
    lora_free(&lo);
    return p;
}

static void make_prompt(uint32_t vocab, int i, int len, uint32_t *out) {
    tt_rng r;
    rng_seed(&r, 1234, (uint64_t)i);
    for (int j = 0; j < len; j++) out[j] = (uint32_t)rng_below(&r, vocab);
}

/* ---- generation through the engine ------------------------------------------ */

typedef struct gen_out {
    int V, n;
    uint32_t tok[NPROMPT][NEW];
    int count[NPROMPT];
    float *logits; /* [prompt][step][V] */
} gen_out;

static int on_token(void *ctx, int i, uint32_t token, const float *logits) {
    gen_out *o = ctx;
    int t = o->count[i]++;
    TT_ASSERT(t < NEW);
    o->tok[i][t] = token;
    memcpy(o->logits + ((size_t)i * NEW + t) * o->V, logits, (size_t)o->V * sizeof *logits);
    return 0;
}

/* Generates for prompts [first, first + n) in one batch of B under budget
 * hbm (0: resident; 1: the smallest plan). Returns the plan used in *used. */
static void generate(const char *store, int B, int chunk, int first, int n, uint64_t hbm, const gen_params *gp,
                     gen_out *o, tt_plan *used) {
    tier_store *s;
    TT_ASSERT(tier_open(&s, store) == 0);
    const tt_config *c = tier_config(s);
    tt_plan_req req = {0};
    gen_plan_req(&req, s, &g_lc, B, chunk, MAXP + NEW);
    if (hbm == 1) {
        uint64_t dev, host;
        plan_minimum(s, &req, &dev, &host);
        req.hbm = dev;
        req.host = host;
    } else {
        req.hbm = hbm;
    }
    tt_plan p;
    int rc = plan_make(s, &req, &p);
    CHECK_MSG(rc == 0, "plan: %s", tt_lasterr());
    tt_gen *g;
    CHECK_MSG(gen_create(&g, s, &p) == 0, "%s", tt_lasterr());
    size_t nl;
    tt_real *lv = lora_values(c, &nl);
    lora_params_set(gen_lora(g), lv);
    free(lv);
    o->V = (int)c->vocab;
    o->n = n;
    memset(o->count, 0, sizeof o->count);
    o->logits = calloc((size_t)n * NEW * o->V, sizeof *o->logits);
    uint32_t prompts[NPROMPT][MAXP];
    const uint32_t *pp[NPROMPT];
    int lens[NPROMPT];
    uint64_t streams[NPROMPT];
    for (int i = 0; i < n; i++) {
        lens[i] = MAXP - 3 * ((first + i) % NPROMPT); /* 24, 21, ..., 3 */
        make_prompt(c->vocab, first + i, lens[i], prompts[i]);
        pp[i] = prompts[i];
        streams[i] = (uint64_t)(first + i);
    }
    int why[NPROMPT];
    CHECK_MSG(gen_run(g, n, pp, lens, gp, streams, on_token, o, why) == 0, "%s", tt_lasterr());
    for (int i = 0; i < n; i++) CHECK_MSG(o->count[i] == NEW && why[i] == GEN_LENGTH, "prompt %d: %d tokens", i, o->count[i]);
    CHECK_MSG(gen_dev_peak(g) == p.dev_bytes && gen_host_peak(g) == p.host_bytes,
              "peaks %llu / %llu, planned %llu / %llu", (unsigned long long)gen_dev_peak(g),
              (unsigned long long)gen_host_peak(g), (unsigned long long)p.dev_bytes, (unsigned long long)p.host_bytes);
    if (hbm) CHECK(gen_dev_peak(g) <= req.hbm);
    *used = p;
    gen_free(g);
    tier_close(s);
}

/* ---- the reference: the whole sequence recomputed at every step --------------- */

/* For prompt i: recomputes the logits of every step from prompt + the tokens
 * generated so far (o's, greedy) through the training forward (attn_fwd), and
 * compares them and the greedy choice with o's. Returns the max |diff|. */
static double g_worst_abs; /* check_recompute's largest absolute logit difference */

static double check_recompute(const char *store, const gen_out *o, int i) {
    tt_model *m;
    CHECK_MSG(model_load(&m, store) == 0, "%s", tt_lasterr());
    const tt_config *c = model_config(m);
    tt_lora lo;
    TT_ASSERT(lora_init(&lo, c, &g_lc, 3) == 0);
    size_t nl;
    tt_real *lv = lora_values(c, &nl);
    lora_params_set(&lo, lv);
    free(lv);
    int len = MAXP - 3 * (i % NPROMPT), H = (int)c->hidden, V = (int)c->vocab;
    int32_t seq[MAXP + NEW];
    uint32_t pr[MAXP];
    make_prompt(c->vocab, i, len, pr);
    for (int j = 0; j < len; j++) seq[j] = (int32_t)pr[j];
    float *lg = malloc((size_t)V * sizeof *lg);
    double worst = 0;
    for (int t = 0; t < NEW; t++) {
        int T = len + t;
        tt_ws_opts wo = {.B = 1, .seq = T};
        tt_ws *w;
        TT_ASSERT(ws_create(&w, c, &g_lc, &wo, NULL) == 0);
        void *x = be_alloc((size_t)T * H * sizeof(tt_real)), *y = be_alloc((size_t)T * H * sizeof(tt_real));
        model_embed(m, w, seq, x);
        for (int l = 0; l < (int)c->n_layers; l++) {
            model_layer_forward(m, &lo, w, l, x, y, 0);
            void *tmp = x; x = y; y = tmp;
        }
        model_logits(m, w, (tt_real *)x + (size_t)(T - 1) * H, 1, lg);
        const float *got = o->logits + ((size_t)i * NEW + t) * V;
        uint32_t best = 0;
        double scale = 0, d = 0;
        for (int v = 0; v < V; v++) scale = fmax(scale, fabs(lg[v]));
        for (int v = 0; v < V; v++) {
            d = fmax(d, fabs((double)lg[v] - got[v]));
            if (lg[v] > lg[best]) best = (uint32_t)v;
        }
        worst = fmax(worst, d / scale);
        g_worst_abs = fmax(g_worst_abs, d);
        CHECK_MSG(best == o->tok[i][t], "prompt %d step %d: recomputed argmax %u, cached %u", i, t, best, o->tok[i][t]);
        seq[T] = (int32_t)o->tok[i][t];
        be_free(x);
        be_free(y);
        ws_free(w);
    }
    free(lg);
    lora_free(&lo);
    model_free(m);
    return worst;
}

static void same(const gen_out *a, const gen_out *b, int off, const char *what, int bitwise, double tol) {
    double worst = 0;
    for (int i = 0; i < b->n; i++)
        for (int t = 0; t < NEW; t++) {
            CHECK_MSG(a->tok[off + i][t] == b->tok[i][t], "%s: prompt %d step %d: %u vs %u", what, off + i, t,
                      a->tok[off + i][t], b->tok[i][t]);
            const float *x = a->logits + ((size_t)(off + i) * NEW + t) * a->V, *y = b->logits + ((size_t)i * NEW + t) * b->V;
            if (bitwise) CHECK_MSG(memcmp(x, y, (size_t)a->V * sizeof *x) == 0, "%s: prompt %d step %d logits differ", what, off + i, t);
            double scale = 0, d = 0;
            for (int v = 0; v < a->V; v++) scale = fmax(scale, fabs(x[v]));
            for (int v = 0; v < a->V; v++) d = fmax(d, fabs((double)x[v] - y[v]));
            worst = fmax(worst, d / scale);
        g_worst_abs = fmax(g_worst_abs, d);
        }
    CHECK_MSG(worst <= tol, "%s: logits differ by %.3g", what, worst);
    fprintf(stderr, "%-44s same tokens, logits max |diff| / max |logit| %.3g\n", what, worst);
}

static void run_model(const char *store, const char *name) {
    gen_params greedy = {.max_new = NEW, .top_p = 1};
    gen_out res, str, mid;
    tt_plan pr, ps, pm;
    /* a batch of all 8, resident; prompt chunks of 7 positions (the longest prompt takes 4) */
    generate(store, NPROMPT, 7, 0, NPROMPT, 0, &greedy, &res, &pr);
    double worst = 0;
    g_worst_abs = 0;
    for (int i = 0; i < NPROMPT; i += 3) worst = fmax(worst, check_recompute(store, &res, i));
    CHECK_MSG(worst <= 1e-5, "%s: KV-cached logits differ from the recomputed ones by %.3g", name, worst);
#ifdef TT_F64
    /* in double the two paths round differently only below float's resolution: the logits (floats) agree
     * absolutely */
    CHECK_MSG(g_worst_abs <= 1e-5, "%s: KV-cached logits differ from the recomputed ones by %.3g", name, g_worst_abs);
#endif
    fprintf(stderr, "%s: KV cache vs recomputation: same greedy tokens, logits max |diff| / max |logit| %.3g "
            "(absolute %.3g)\n", name, worst, g_worst_abs);
    /* the smallest plan: two slots, every KV cache on the host */
    generate(store, NPROMPT, 7, 0, NPROMPT, 1, &greedy, &str, &ps);
    CHECK_MSG(ps.user_dev == 0 && ps.slots == 2, "smallest plan: %d KV caches on the device, %d slots", ps.user_dev, ps.slots);
    same(&res, &str, 0, "streamed, smallest --hbm vs resident", 1, 0);
    /* the same on asynchronous queues with random delays (copies, KV uploads and write-backs, events) */
    gen_out asy;
    be_use(backend_cpu_async());
    cpu_async_configure(11, 300);
    generate(store, NPROMPT, 7, 0, NPROMPT, 1, &greedy, &asy, &ps);
    be_use(backend_cpu());
    same(&res, &asy, 0, "cpu-async, smallest --hbm vs resident cpu", 1, 0);
    free(asy.logits);
    /* a budget between: some caches on the device */
    generate(store, NPROMPT, 7, 0, NPROMPT, (pr.dev_bytes + ps.dev_bytes) / 2, &greedy, &mid, &pm);
    fprintf(stderr, "middle budget: %d of %d KV caches on the device, %d slots\n", pm.user_dev, pm.L, pm.slots);
    same(&res, &mid, 0, "streamed, middle --hbm vs resident", 1, 0);
    /* each prompt alone == in the batch */
    for (int i = 0; i < NPROMPT; i++) {
        gen_out one;
        tt_plan p1;
        generate(store, 1, 7, i, 1, 0, &greedy, &one, &p1);
        char what[64];
        snprintf(what, sizeof what, "prompt %d alone vs in the batch of 8", i);
        same(&res, &one, i, what, 0, 1e-5);
        free(one.logits);
    }
    /* sampled: the same per-prompt streams give the same draws, batched or alone */
    gen_params samp = {.max_new = NEW, .temperature = 0.9f, .top_k = 20, .top_p = 0.9f, .seed = 42};
    gen_out sb;
    generate(store, NPROMPT, 7, 0, NPROMPT, 0, &samp, &sb, &pr);
    int differs = 0;
    for (int i = 0; i < NPROMPT; i += 2) {
        gen_out one;
        tt_plan p1;
        generate(store, 1, 7, i, 1, 0, &samp, &one, &p1);
        same(&sb, &one, i, "sampled: alone vs in the batch", 0, 1e-5);
        free(one.logits);
    }
    for (int i = 0; i < NPROMPT; i++) differs |= memcmp(sb.tok[i], res.tok[i], sizeof sb.tok[i]) != 0;
    CHECK_MSG(differs, "sampling gave the greedy tokens for every prompt");
    free(res.logits); free(str.logits); free(mid.logits); free(sb.logits);
}

static void test_sampler(void) {
    enum { V = 6 };
    const float lg[V] = {0.5f, 2.0f, -1.0f, 1.5f, 2.0f, 0.0f};
    tt_rng r;
    rng_seed(&r, 5, 0);
    gen_params g = {.top_p = 1};
    CHECK_EQ_INT(gen_sample(lg, V, &g, &r), 1); /* the first largest */
    gen_params k1 = {.temperature = 1, .top_k = 1, .top_p = 1}, p0 = {.temperature = 1, .top_p = 1e-6f};
    for (int i = 0; i < 50; i++) {
        CHECK_EQ_INT(gen_sample(lg, V, &k1, &r), 1);
        CHECK_EQ_INT(gen_sample(lg, V, &p0, &r), 1);
    }
    gen_params t1 = {.temperature = 1, .top_p = 1};
    int count[V] = {0}, N = 40000;
    for (int i = 0; i < N; i++) count[gen_sample(lg, V, &t1, &r)]++;
    double z = 0;
    for (int v = 0; v < V; v++) z += exp(lg[v]);
    for (int v = 0; v < V; v++) {
        double p = exp(lg[v]) / z, sd = sqrt(N * p * (1 - p));
        CHECK_MSG(fabs(count[v] - N * p) < 4 * sd, "token %d drawn %d times, expected %.0f", v, count[v], N * p);
    }
    /* top-k 2 at temperature 1: only the two largest (ids 1 and 4, equal) */
    gen_params k2 = {.temperature = 1, .top_k = 2, .top_p = 1};
    int c1 = 0;
    for (int i = 0; i < 2000; i++) {
        uint32_t t = gen_sample(lg, V, &k2, &r);
        CHECK(t == 1 || t == 4);
        c1 += t == 1;
    }
    CHECK_MSG(c1 > 900 && c1 < 1100, "top-k 2 drew id 1 %d times of 2000", c1);
    /* a tiny temperature is greedy, with top-k and top-p too: a float logit / 1e-40 overflows, and inf - inf
     * made every weight NaN (the draw fell to the last candidate) */
    const float big[V] = {30.f, 31.f, -5.f, 31.5f, 12.f, 31.49f};
    const float temps[] = {1e-40f, 1e-30f, 1e-6f}, tops[] = {1, 0.5f};
    for (int t = 0; t < 3; t++)
        for (int k = 0; k < 3; k++)
            for (int q = 0; q < 2; q++) {
                gen_params tiny = {.temperature = temps[t], .top_k = 2 * k, .top_p = tops[q]};
                for (int i = 0; i < 20; i++)
                    CHECK_MSG(gen_sample(big, V, &tiny, &r) == 3, "temperature %g, top-k %d, top-p %g: not greedy",
                              (double)temps[t], 2 * k, (double)tops[q]);
            }
}

int main(void) {
    test_sampler();
    char *dir = fixture_tmpdir(), path[600], hf[600], imported[600];
    /* tiny (8 heads, 4 KV heads), f32 projections for the 1e-5 comparison */
    tt_config c;
    TT_ASSERT(config_preset("tiny", &c) == 0);
    snprintf(path, sizeof path, "%s/tiny.tier", dir);
    CHECK(fixture_write_model(path, &c, TT_DTYPE_F32, 0.05f, 7) == 0);
    run_model(path, "tiny");
    /* a GQA model (8 heads on 2 KV heads, llama3 rope) exported to Hugging Face and imported back */
    tt_config q;
    fixture_micro_config(&q);
    q.n_layers = 3; q.n_heads = 8; q.n_kv_heads = 2; q.head_dim = 16; q.hidden = 128; q.vocab = 300;
    q.rope_type = TT_ROPE_LLAMA3; q.rope_factor = 8; q.rope_low_freq = 1; q.rope_high_freq = 4;
    q.rope_orig_max_pos = 64; q.rope_theta = 500000.f;
    for (uint32_t l = 0; l < q.n_layers; l++) q.layers[l] = (tt_layer_dims){8, 2, 96, 0};
    snprintf(path, sizeof path, "%s/gqa.tier", dir);
    snprintf(hf, sizeof hf, "%s/gqa-hf", dir);
    snprintf(imported, sizeof imported, "%s/gqa-imported.tier", dir);
    CHECK(fixture_write_model(path, &q, TT_DTYPE_F32, 0.08f, 8) == 0);
    CHECK_MSG(hf_export(path, hf, TT_DTYPE_F32, 0, NULL, NULL) == 0, "%s", tt_lasterr());
    hf_import_opts io = {.linear = TT_DTYPE_F32};
    CHECK_MSG(hf_import(hf, imported, &io, NULL) == 0, "%s", tt_lasterr());
    run_model(imported, "imported GQA (8 heads / 2 KV)");
    fixture_rm_rf(dir);
    free(dir);
    TEST_END();
}
