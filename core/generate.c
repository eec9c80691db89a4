/* core/generate.c — generation over the streaming runtime (generate.h): the
 * prompt pass in chunks, then one pass per decoding step, each walking the
 * layers forward once for the whole batch; sampling on the host. */
#include "core/generate.h"

#include "core/base/common.h"
#include "core/base/rng.h"
#include "core/exec.h"
#include "core/model.h"
#include "sched/stream.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct gen_cfg {
    tt_lora_cfg lora;
    int cap;
} gen_cfg;

struct tt_gen {
    tt_plan plan;
    gen_cfg cfg;
    tt_stream *st;
    tt_model *m;
    tt_lora lora;
    tt_ws *ws;
    void *kv[TT_MAX_LAYERS][2]; /* each layer's keys and values: device (l < user_dev) or pinned host */
    void *kv_stage[2];          /* device: a host layer's cache for its pass (NULL when every cache is on the device) */
    void *last;                 /* device (B, hidden): each sequence's row the next logits come from */
    float *logits;              /* pinned host (B, vocab) */
    int32_t *tokens;            /* host (B * chunk): a pass's input tokens */
    int L, B, chunk, cap, H, V;
    size_t es;                  /* bytes per activation value */
};

/* ---- the device regions: LoRA, workspace, KV caches ----------------------------- */

static size_t kv_bytes(const tt_config *c, int l, int B, int cap, size_t es) {
    return (size_t)B * cap * c->layers[l].n_kv_heads * c->head_dim * es;
}

static int carve_gen(const tt_dev_user *u, const tier_store *s, const tt_plan *p, const tt_alloc *dev,
                     const tt_alloc *host, void *keep) {
    gen_cfg gc;
    memcpy(&gc, u->cfg, sizeof gc);
    tt_gen *g = keep;
    const tt_config *c = tier_config(s);
    int B = p->req.B, L = (int)c->n_layers;
    size_t es = be_elem_size(p->req.act_bf16 ? BE_BF16 : BE_REAL);
    tt_lora lo_measure, *lo = g ? &g->lora : &lo_measure;
    /* as training's: the parameters wait in host memory, the device holds the layers in use; no gradients */
    int rc = lora_init_in(lo, c, &gc.lora, 0, dev, LORA_FROZEN, host);
    if (rc) return rc;
    tt_ws_opts wo = {.B = B, .seq = p->req.seq, .head_streamed = !p->head_on_device || c->tie_embeddings,
                     .host = host, .act_bf16 = p->req.act_bf16, .gen_cap = gc.cap};
    tt_ws *ws = NULL;
    if ((rc = ws_create(&ws, c, &gc.lora, &wo, dev))) return rc;
    if (g) g->ws = ws;
    else ws_free(ws);
    size_t stage = 0;
    for (int l = 0; l < L; l++) {
        size_t b = kv_bytes(c, l, B, gc.cap, es);
        const tt_alloc *a = l < p->user_dev ? dev : host;
        for (int i = 0; i < 2; i++) {
            void *x = a->fn(a->ctx, b, l < p->user_dev ? "KV cache" : "KV cache (host)");
            if (!x) return TT_FAIL(-ENOMEM, "out of memory for the KV cache");
            if (g) g->kv[l][i] = x;
        }
        if (l >= p->user_dev && b > stage) stage = b;
    }
    for (int i = 0; stage && i < 2; i++) {
        void *x = dev->fn(dev->ctx, stage, "KV cache staging");
        if (!x) return TT_FAIL(-ENOMEM, "out of device memory for the KV cache staging");
        if (g) g->kv_stage[i] = x;
    }
    void *last = dev->fn(dev->ctx, (size_t)B * c->hidden * es, "head input rows");
    void *lg = host->fn(host->ctx, (size_t)B * c->vocab * sizeof(float), "logits");
    if (!last || !lg) return TT_FAIL(-ENOMEM, "out of memory for the logits");
    if (g) { g->last = last; g->logits = lg; }
    return 0;
}

void gen_plan_req(tt_plan_req *req, const tier_store *s, const tt_lora_cfg *lora, int B, int chunk, int cap) {
    gen_cfg gc = {*lora, cap};
    _Static_assert(sizeof gc <= PLAN_USER_CFG, "gen_cfg must fit tt_dev_user.cfg");
    memset(&req->user, 0, sizeof req->user);
    req->user.carve = carve_gen;
    memcpy(req->user.cfg, &gc, sizeof gc);
    req->B = B;
    req->seq = chunk;
    req->K = 1;
    req->forward_only = 1;
    req->user_units = (int)tier_config(s)->n_layers; /* one KV cache per layer */
}

/* ---- creation -------------------------------------------------------------------- */

void gen_free(tt_gen *g) {
    if (!g) return;
    stream_free(g->st); /* synchronises the backend first */
    if (g->ws) ws_free(g->ws);
    lora_free(&g->lora);
    model_free(g->m);
    free(g->tokens);
    free(g);
}

int gen_create(tt_gen **out, const tier_store *store, const tt_plan *plan) {
    *out = NULL;
    TT_ASSERT(plan->req.user.carve == carve_gen && plan->req.forward_only && plan->req.K == 1);
    tt_gen *g = tt_xcalloc(1, sizeof *g);
    g->plan = *plan;
    memcpy(&g->cfg, plan->req.user.cfg, sizeof g->cfg);
    int rc = stream_create(&g->st, store, plan, g, NULL);
    if (rc) { gen_free(g); return rc; }
    const tt_config *c = tier_config(stream_store(g->st));
    g->m = exec_stream_model(g->st);
    g->L = (int)c->n_layers;
    g->B = plan->req.B;
    g->chunk = plan->req.seq;
    g->cap = g->cfg.cap;
    g->H = (int)c->hidden;
    g->V = (int)c->vocab;
    g->es = be_elem_size(plan->req.act_bf16 ? BE_BF16 : BE_REAL);
    g->tokens = tt_xmalloc((size_t)g->B * g->chunk * sizeof *g->tokens);
    *out = g;
    return 0;
}

tt_lora *gen_lora(tt_gen *g) { return &g->lora; }
const tt_plan *gen_plan(const tt_gen *g) { return &g->plan; }
int gen_cap(const tt_gen *g) { return g->cap; }
uint64_t gen_dev_peak(const tt_gen *g) { return stream_dev_peak(g->st); }
uint64_t gen_host_peak(const tt_gen *g) { return stream_host_peak(g->st); }
uint64_t gen_io_bytes(const tt_gen *g) { return stream_io_bytes(g->st); }

/* ---- one pass over the layers ------------------------------------------------------ */

/* n rows per sequence (g->tokens, (B, n)) at positions pos: the embedding and
 * every layer, each with its KV cache; returns the last layer's output
 * (a pool buffer, (B*n, hidden)) in *y. */
static int pass(tt_gen *g, int n, const int32_t *pos, void **y) {
    const tt_config *c = model_config(g->m);
    ws_gen_begin(g->ws, n, pos);
    void *x = stream_buf_get(g->st);
    model_embed(g->m, g->ws, g->tokens, x);
    for (int l = 0; l < g->L; l++) {
        const void *ext;
        int rc = stream_acquire(g->st, l, l, &ext);
        if (rc) {
            be_synchronize();
            stream_buf_put(g->st, x);
            ws_gen_end(g->ws);
            return rc;
        }
        model_bind_layer(g->m, stream_store(g->st), l, ext);
        lora_stage_layer(&g->lora, l);
        size_t row = (size_t)c->layers[l].n_kv_heads * c->head_dim * g->es, seq = (size_t)g->cap * row;
        int on_dev = l < g->plan.user_dev;
        void *kv[2] = {g->kv[l][0], g->kv[l][1]};
        if (!on_dev) /* the rows before this pass's: the pass writes its own */
            for (int i = 0; i < 2; i++) {
                kv[i] = g->kv_stage[i];
                for (int b = 0; b < g->B; b++)
                    if (pos[b] > 0)
                        be_copy_async((char *)kv[i] + b * seq, (const char *)g->kv[l][i] + b * seq,
                                      (size_t)pos[b] * row, BE_H2D, NULL);
            }
        ws_gen_layer(g->ws, kv[0], kv[1]);
        void *out = stream_buf_get(g->st);
        model_layer_forward(g->m, &g->lora, g->ws, l, x, out, 0);
        stream_buf_put(g->st, x);
        x = out;
        if (!on_dev) /* the new rows back to the host */
            for (int i = 0; i < 2; i++)
                for (int b = 0; b < g->B; b++) {
                    size_t at = b * seq + (size_t)pos[b] * row;
                    be_copy_async((char *)g->kv[l][i] + at, (const char *)kv[i] + at, (size_t)n * row, BE_D2H, NULL);
                }
        stream_release(g->st, l, l + 1);
    }
    ws_gen_end(g->ws);
    *y = x;
    return 0;
}

/* ---- sampling ------------------------------------------------------------------------ */

typedef struct cand {
    float p;
    uint32_t id;
} cand;

static int cand_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

uint32_t gen_sample(const float *logits, int V, const gen_params *p, tt_rng *r) {
    uint32_t best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = (uint32_t)v;
    if (p->temperature <= 0) return best;
    /* as Hugging Face's samplers: logits / temperature, then top-k, then top-p over the softmax. The gap to
     * the largest logit is scaled, in double: a float logit / a tiny temperature (1e-40) overflows to inf,
     * inf - inf is NaN and every weight with it; the gap is <= 0, its exp at most 1, and 0 (not NaN) where
     * the quotient is far below exp's range or undefined (an -inf logit), so a tiny temperature is greedy */
    cand *c = tt_xmalloc((size_t)V * sizeof *c);
    double sum = 0;
    for (int v = 0; v < V; v++) {
        double z = ((double)logits[v] - logits[best]) / p->temperature, e = z > -745 ? exp(z) : 0;
        c[v] = (cand){(float)e, (uint32_t)v};
        sum += e;
    }
    qsort(c, (size_t)V, sizeof *c, cand_desc);
    int n = p->top_k > 0 && p->top_k < V ? p->top_k : V;
    if (n < V) { /* renormalise over the k kept */
        sum = 0;
        for (int i = 0; i < n; i++) sum += c[i].p;
    }
    if (p->top_p > 0 && p->top_p < 1) { /* the smallest prefix whose mass reaches top_p (at least one) */
        double cum = 0;
        int keep = 0;
        while (keep < n && (keep == 0 || cum < p->top_p * sum)) cum += c[keep++].p;
        n = keep;
        sum = cum;
    }
    double u = rng_uniform(r) * sum, acc = 0;
    uint32_t id = c[n - 1].id;
    for (int i = 0; i < n; i++) {
        acc += c[i].p;
        if (u < acc) { id = c[i].id; break; }
    }
    free(c);
    return id;
}

/* ---- the run ------------------------------------------------------------------------- */

/* Row b of y ((B*n, hidden), row b*n + i) into row b of g->last. */
static void take_row(tt_gen *g, const void *y, int n, int b, int i) {
    size_t h = (size_t)g->H * g->es;
    be_copy((char *)g->last + b * h, (const char *)y + ((size_t)b * n + i) * h, h);
}

int gen_run(tt_gen *g, int n, const uint32_t *const *prompts, const int *lens, const gen_params *p,
            const uint64_t *streams, gen_token_fn fn, void *ctx, int *why) {
    int B = g->B, C = g->chunk, pmax = 1, rc = 0;
    TT_ASSERT(n >= 1 && n <= B);
    for (int i = 0; i < n; i++) {
        TT_ASSERT(lens[i] >= 1 && lens[i] < g->cap);
        if (lens[i] > pmax) pmax = lens[i];
    }
    int32_t *pos = tt_xcalloc((size_t)B, sizeof *pos), *len = tt_xcalloc((size_t)B, sizeof *len);
    int *state = tt_xcalloc((size_t)B, sizeof *state); /* 0 running, else GEN_* */
    tt_rng *rng = tt_xcalloc((size_t)B, sizeof *rng);
    for (int b = 0; b < B; b++) {
        len[b] = b < n ? lens[b] : 1; /* the unused rows of a last, partial batch run a one-token prompt */
        state[b] = b < n ? 0 : GEN_CALLER;
        rng_seed(&rng[b], p->seed, streams && b < n ? streams[b] : (uint64_t)b);
    }
    /* the prompts, a chunk of positions at a time; each sequence's last prompt row gives its first logits */
    for (int c0 = 0; c0 < pmax; c0 += C) {
        int m = pmax - c0 < C ? pmax - c0 : C;
        for (int b = 0; b < B; b++) {
            pos[b] = c0;
            for (int i = 0; i < m; i++) /* past a prompt's end: padding, overwritten by its generated tokens */
                g->tokens[(size_t)b * m + i] = b < n && c0 + i < len[b] ? (int32_t)prompts[b][c0 + i] : 0;
        }
        void *y;
        if ((rc = pass(g, m, pos, &y))) goto out;
        for (int b = 0; b < B; b++)
            if (len[b] - 1 >= c0 && len[b] - 1 < c0 + m) take_row(g, y, m, b, len[b] - 1 - c0);
        stream_buf_put(g->st, y);
    }
    for (int t = 0;; t++) {
        model_logits(g->m, g->ws, g->last, B, g->logits);
        int running = 0;
        for (int b = 0; b < n; b++) {
            if (state[b]) continue;
            const float *lg = g->logits + (size_t)b * g->V;
            uint32_t tok = gen_sample(lg, g->V, p, &rng[b]);
            int r = fn(ctx, b, tok, lg);
            if (r < 0) goto out; /* interrupted: what was generated stands */
            g->tokens[b] = (int32_t)tok;
            int eos = 0;
            for (int e = 0; e < p->n_eos; e++) eos |= p->eos[e] == tok;
            state[b] = r > 0 ? GEN_CALLER : eos ? GEN_EOS : t + 1 >= p->max_new ? GEN_LENGTH
                     : len[b] + t + 1 >= g->cap ? GEN_CONTEXT : 0;
            running += !state[b];
        }
        if (!running) break;
        for (int b = 0; b < B; b++) { /* a finished row keeps running at a valid position; its result is unused */
            if (state[b]) g->tokens[b] = 0;
            pos[b] = len[b] + t < g->cap ? len[b] + t : g->cap - 1;
        }
        void *y;
        if ((rc = pass(g, 1, pos, &y))) goto out;
        be_copy(g->last, y, (size_t)B * g->H * g->es);
        stream_buf_put(g->st, y);
    }
out:
    for (int b = 0; why && b < n; b++) why[b] = state[b];
    free(pos); free(len); free(state); free(rng);
    return rc;
}
