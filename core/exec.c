/* core/exec.c — the step loop (see exec.h): embedding, layer forward and
 * backward over the micro-batches, the head, AdamW and clipping, on top of
 * sched/stream.h's weight provider and activation store. Everything here is
 * issued on the backend's compute queue; the stream orders its own queues
 * against it with events. */
#include "core/exec.h"

#include "core/base/common.h"
#include "sched/stream.h"

#include <errno.h>
#include <math.h>
#include <string.h>

struct tt_exec {
    tt_plan plan;
    tt_exec_cfg cfg;
    tt_stream *st;
    tt_model *m;
    tt_lora lora;
    tt_ws *ws;
    int32_t *tgt_host;   /* pinned: the step's targets (K*T), uploaded from here by the head */
    tt_real *wt_host;    /* pinned: their loss weights */
    int32_t *seg_host;   /* pinned (K*T): packed-example starts, uploaded to seg_dev when segs is set */
    int32_t *seg_dev;    /* device (K*T) */
    const int32_t *segs; /* exec_set_segments: the caller's (K*T) array, or NULL */
    double *stats_host;  /* (T, 3): the head's statistics read back by exec_eval_tokens (malloc'ed at its first call) */
    tt_trace *trace;
    uint64_t seed;
    int L, K, T, H;
    tt_real *wg_buf;     /* cfg.wgrad: one layer's weight gradients (device) */
    tt_wgrad wg;
    void (*wg_fn)(void *ctx, int l, int p, const tt_real *g);
    void *wg_ctx;
};

/* ---- the device regions of the step loop: LoRA state and workspace ---------- */

/* tt_dev_user.carve: with keep == NULL (planning) everything is measured and dropped. */
static int carve_user(const tt_dev_user *u, const tier_store *s, const tt_plan *p, const tt_alloc *dev,
                      const tt_alloc *host, void *keep) {
    tt_exec_cfg c;
    memcpy(&c, u->cfg, sizeof c);
    tt_exec *e = keep;
    const tt_config *cfg = tier_config(s);
    tt_lora lo_measure, *lo = e ? &e->lora : &lo_measure;
    /* the LoRA parameters, AdamW moments (and a deferred step's gradients) wait in host memory: the device holds
     * the layers in use */
    int rc = lora_init_in(lo, cfg, &c.lora, e ? e->seed : 0, dev, !c.defer_optimizer, host);
    if (rc) return rc;
    /* a tied lm_head is the embedding, which stays on the host: its chunks always go through the staging
     * buffer (head_on_device then only means the final norm) */
    /* the workspace in the cells' type: layers read and write the cells themselves */
    tt_ws_opts wo = {.B = p->req.B, .seq = p->req.seq, .head_streamed = !p->head_on_device || cfg->tie_embeddings,
                     .host = host, .act_bf16 = p->req.act_bf16,
                     .mlp_rows = c.wgrad ? p->req.B * p->req.seq : 0, /* weight gradients: the MLP in one chunk */
                     /* LoRA on frozen (quantized) weights: without a decoded layer every MLP chunk dequantizes them
                      * again, 8 times a layer, and a chunk's products are fuller the bigger it is, so the backend's
                      * bigger chunks where it asks for them (generation's forward passes and full training keep 16M
                      * values: their workspace is better spent on KV caches and cells) */
                     .mlp_chunk_elems = be_mlp_chunk_elems(),
                     /* and its bigger dequantization blocks and vocabulary chunks: fewer, fuller products */
                     .wbuf_elems = be_wbuf_elems(), .xent_chunk_elems = be_xent_chunk_elems(),
                     /* the plan's optional region: each layer's frozen weights decoded once a pass, for all K
                      * micro-batches (frozen: not where weight gradients are taken) */
                     .decode_layer = p->user_opt && !c.wgrad && model_decode_wanted(s, p->req.act_bf16)};
    tt_ws *ws = NULL;
    rc = ws_create(&ws, cfg, &c.lora, &wo, dev);
    if (rc) return rc;
    if (e) e->ws = ws;
    else ws_free(ws);
    /* the step's targets and loss weights, copied here so that their uploads are asynchronous */
    size_t kt = (size_t)p->req.K * p->req.B * p->req.seq;
    void *tg = host->fn(host->ctx, kt * sizeof(int32_t), "targets and loss weights");
    void *wt = host->fn(host->ctx, kt * sizeof(tt_real), "targets and loss weights");
    void *sh = host->fn(host->ctx, kt * sizeof(int32_t), "packed-example starts");
    if (!tg || !wt || !sh) return TT_FAIL(-ENOMEM, "out of host memory for the step's targets");
    void *sd = dev->fn(dev->ctx, kt * sizeof(int32_t), "packed-example starts");
    if (!sd) return TT_FAIL(-ENOMEM, "out of device memory for the packed-example starts");
    if (e) { e->tgt_host = tg; e->wt_host = wt; e->seg_host = sh; e->seg_dev = sd; }
    if (c.wgrad) {
        uint64_t mx = 0;
        for (uint32_t i = 0; i < config_n_tensors(cfg); i++) {
            tt_tensor_desc d;
            config_tensor(cfg, i, &d);
            if (d.role == TT_ROLE_LINEAR && d.rows * d.cols > mx) mx = d.rows * d.cols;
        }
        void *g = dev->fn(dev->ctx, mx * sizeof(tt_real), "weight gradient (one projection)");
        if (!g) return TT_FAIL(-ENOMEM, "out of device memory for one projection's weight gradient");
        if (e) e->wg_buf = g;
    }
    return 0;
}

void exec_user(tt_dev_user *u, const tt_lora_cfg *lora, int defer_optimizer) {
    tt_exec_cfg c = {*lora, defer_optimizer, 0};
    _Static_assert(sizeof c <= PLAN_USER_CFG, "tt_exec_cfg must fit tt_dev_user.cfg");
    memset(u, 0, sizeof *u);
    u->carve = carve_user;
    memcpy(u->cfg, &c, sizeof c);
}

void exec_user_set_wgrad(tt_dev_user *u) {
    tt_exec_cfg c = exec_user_cfg(u);
    c.wgrad = 1;
    memcpy(u->cfg, &c, sizeof c);
}

/* tt_wgrad.done: hand the projection's gradient over, then clear the buffer for the next. */
static void wgrad_done(void *ctx, int l, int p) {
    tt_exec *e = ctx;
    e->wg_fn(e->wg_ctx, l, p, e->wg_buf);
    const tier_store *s = stream_store(e->st);
    const tier_extent *x = tier_extent_at(s, TT_EXTENT_LAYER(l));
    tt_tensor_desc d;
    for (uint32_t i = x->first_tensor; i < x->first_tensor + x->n_tensors; i++) { /* its size, among the layer's */
        config_tensor(tier_config(s), i, &d);
        if (d.role == TT_ROLE_LINEAR && (int)d.proj == p) {
            be_fill(e->wg_buf, d.rows * d.cols, 0);
            return;
        }
    }
    TT_ASSERT(0);
}

void exec_set_wgrad_hook(tt_exec *e, void (*fn)(void *ctx, int l, int p, const tt_real *g), void *ctx) {
    TT_ASSERT(e->wg_buf && e->K == 1);
    e->wg_fn = fn;
    e->wg_ctx = ctx;
    const tt_config *c = tier_config(stream_store(e->st));
    tt_tensor_desc d;
    size_t mx = 0;
    memset(&e->wg, 0, sizeof e->wg);
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &d);
        if (d.role != TT_ROLE_LINEAR) continue;
        e->wg.proj[d.layer][d.proj] = e->wg_buf; /* one buffer, one projection at a time */
        if (d.rows * d.cols > mx) mx = d.rows * d.cols;
    }
    e->wg.done = wgrad_done;
    e->wg.done_ctx = e;
    if (fn) be_fill(e->wg_buf, mx, 0);
    model_set_wgrad(e->m, fn ? &e->wg : NULL);
}

tt_exec_cfg exec_user_cfg(const tt_dev_user *u) {
    tt_exec_cfg c;
    memcpy(&c, u->cfg, sizeof c);
    return c;
}

/* ---- creation ------------------------------------------------------------------ */

void exec_free(tt_exec *e) {
    if (!e) return;
    stream_free(e->st); /* synchronises the backend first */
    trace_dev_flush(e->trace); /* the last spans (a deferred AdamW's): their work is done */
    if (e->ws) ws_free(e->ws);
    lora_free(&e->lora);
    model_free(e->m);
    free(e->stats_host);
    free(e);
}

int exec_create(tt_exec **out, const tier_store *store, const tt_plan *plan, uint64_t seed, tt_trace *trace) {
    *out = NULL;
    TT_ASSERT(plan->req.user.carve == carve_user);
    tt_exec *e = tt_xcalloc(1, sizeof *e);
    e->plan = *plan;
    e->cfg = exec_user_cfg(&plan->req.user);
    e->trace = trace;
    e->seed = seed;
    /* device-timed spans for a step's compute, copies and spills, with room for a step and a half in flight */
    if (trace) {
        size_t per_step = (size_t)plan->req.K * 8 * (plan->L + 1) + 8 * (size_t)plan->L + 64;
        trace_dev_enable(trace, per_step + per_step / 2 < 65536 ? per_step + per_step / 2 : 65536);
    }
    int rc = stream_create(&e->st, store, plan, e, trace);
    if (rc) { exec_free(e); return rc; }
    const tt_config *c = tier_config(stream_store(e->st));
    e->m = exec_stream_model(e->st);
    e->L = (int)c->n_layers;
    e->K = plan->req.K;
    e->T = plan->req.B * plan->req.seq;
    e->H = (int)c->hidden;
    *out = e;
    return 0;
}

tt_model *exec_stream_model(struct tt_stream *st) {
    const tier_store *s = stream_store(st);
    tt_model *m = model_shell(s);
    uint32_t edt;
    const void *emb = stream_embed(st, &edt);
    model_bind_embed(m, emb, edt);
    const void *norm_dev, *head = stream_head(st, &norm_dev);
    model_bind_head(m, s, head, norm_dev != NULL);
    if (norm_dev) model_bind_head_norm(m, norm_dev);
    return m;
}

tt_lora *exec_lora(tt_exec *e) { return &e->lora; }
const tt_model *exec_model(const tt_exec *e) { return e->m; }
const tt_plan *exec_plan(const tt_exec *e) { return &e->plan; }
uint64_t exec_dev_peak(const tt_exec *e) { return stream_dev_peak(e->st); }
uint64_t exec_host_peak(const tt_exec *e) { return stream_host_peak(e->st); }
uint64_t exec_io_bytes(const tt_exec *e) { return stream_io_bytes(e->st); }
void exec_inject_io_fault(tt_exec *e, uint64_t nth, int err) { stream_inject_io_fault(e->st, nth, err); }

/* ---- one step ------------------------------------------------------------------ */

/* Compute work is timed on the compute queue (sched/trace.h's spans: when it
 * ran, where the backend can tell; else when it was issued, which on the
 * CPU is when it ran). */
static tt_span span_begin(tt_exec *e) { return trace_span_begin(e->trace, NULL); }
static void span_end(tt_exec *e, tt_span s, int track, const char *name, int64_t arg) {
    trace_span_end(e->trace, s, NULL, track, name, arg);
}

/* Layer l from the weight provider, bound to the model. */
static int acquire(tt_exec *e, int l, int pos) {
    const void *ext;
    int rc = stream_acquire(e->st, l, pos, &ext);
    if (rc) return rc;
    model_bind_layer(e->m, stream_store(e->st), l, ext);
    model_decode_layer(e->m, e->ws, l); /* where the plan has room: once for the K micro-batches */
    lora_stage_layer(&e->lora, l); /* its LoRA parameters come along */
    return 0;
}

/* The embedding of micro-batch k, into a pool buffer. */
static void *embed_in(tt_exec *e, const int32_t *tokens) {
    void *x = stream_buf_get(e->st);
    model_embed(e->m, e->ws, tokens, x);
    return x;
}

/* AdamW on layer l's parameters with its gradients (on the device, lo->grads):
 * the layer's moments come from host memory and go back after (the step is
 * elementwise, so a layer at a time is the same step). All on the compute
 * queue: nothing waits. */
static void layer_adamw(tt_exec *e, int l, const float *hp, int step) {
    tt_lora *lo = &e->lora;
    size_t a = lo->layer_off[l], n = lo->layer_off[l + 1] - a;
    if (n == 0) return; /* no adapter on this layer (weight gradients alone) */
    tt_span t0 = span_begin(e);
    be_copy_async(lo->m, lo->m_host + a, n * sizeof(float), BE_H2D, NULL);
    be_copy_async(lo->v, lo->v_host + a, n * sizeof(float), BE_H2D, NULL);
    lora_stage_layer(lo, l); /* the deferred step's layers are not on the device yet */
    be_adamw(n, lora_layer_params(lo, l), lo->grads, lo->m, lo->v, hp[0], hp[1], hp[2], hp[3], hp[4], step);
    lora_unstage_layer(lo, l);
    be_copy_async(lo->m_host + a, lo->m, n * sizeof(float), BE_D2H, NULL);
    be_copy_async(lo->v_host + a, lo->v, n * sizeof(float), BE_D2H, NULL);
    span_end(e, t0, TRACE_OPT, "adamw", l);
}

/* A step that stops early (an IO error at a layer load): nothing queued may
 * still read the caller's arrays or the buffers once we return. */
static int step_failed(tt_exec *e, int rc) {
    be_synchronize();
    return rc;
}

/* The forward pass over the layers for the K micro-batches (after stream_begin): cell (L, k) holds each
 * micro-batch's last hidden states. backward: keep the checkpoints, with LoRA dropout from drop_seed. */
static int forward(tt_exec *e, const int32_t *inputs, int backward, uint64_t drop_seed) {
    int L = e->L, K = e->K, T = e->T;
    for (int l = 0; l < L; l++) {
        int rc = acquire(e, l, l);
        if (rc) return step_failed(e, rc);
        for (int k = 0; k < K; k++) {
            uint64_t ds = drop_seed ? drop_seed + (uint64_t)k : 0;
            void *x = l == 0 ? embed_in(e, inputs + (size_t)k * T) : stream_cell_get(e->st, l, k);
            void *y = stream_buf_get(e->st);
            tt_span t0 = span_begin(e);
            ws_set_seg(e->ws, e->segs ? e->seg_dev + (size_t)k * T : NULL);
            model_layer_forward(e->m, &e->lora, e->ws, l, x, y, backward ? ds : 0);
            span_end(e, t0, TRACE_COMPUTE, "forward", l);
            if (l == 0) stream_buf_put(e->st, x);
            else stream_cell_done(e->st, l, k, !backward); /* eval: the checkpoint is not needed again */
            stream_cell_put(e->st, l + 1, k, y);
        }
        stream_release(e->st, l, l + 1);
    }
    return 0;
}

/* nll (eval only; NULL: not wanted): each token's NLL (host, K*T), read back after each micro-batch's head. */
static int run(tt_exec *e, const int32_t *inputs, const int32_t *targets, const tt_real *weight, int backward,
               const float *hp, int step, uint64_t drop_seed, double *loss_sum, double *gnorm, double *nll) {
    int L = e->L, K = e->K, T = e->T;
    tt_lora *lo = &e->lora;
    double wsum = model_target_weight(targets, weight, (size_t)K * T);
    tt_real dscale = (tt_real)(wsum > 0 ? 1.0 / wsum : 0.0);
    double *acc = ws_acc(e->ws), zero[2] = {0, 0}, got[2];
    be_to_device(acc, zero, sizeof zero); /* also: the last step's uploads from tgt_host / wt_host are done */
    memcpy(e->tgt_host, targets, (size_t)K * T * sizeof *targets);
    memcpy(e->wt_host, weight, (size_t)K * T * sizeof *weight);
    targets = e->tgt_host;
    weight = e->wt_host;
    if (e->segs) { /* before any layer pass reads them */
        memcpy(e->seg_host, e->segs, (size_t)K * T * sizeof *e->segs);
        be_to_device(e->seg_dev, e->seg_host, (size_t)K * T * sizeof *e->seg_host);
    }
    stream_begin(e->st, backward);
    int frc = forward(e, inputs, backward, drop_seed);
    if (frc) return frc;
    /* head */
    for (int k = 0; k < K; k++) {
        void *x = stream_cell_get(e->st, L, k);
        void *dx = backward ? stream_buf_get(e->st) : NULL;
        tt_span t0 = span_begin(e);
        model_head(e->m, e->ws, x, targets + (size_t)k * T, weight + (size_t)k * T, dscale, dx, acc);
        span_end(e, t0, TRACE_COMPUTE, "head", L);
        if (nll) /* before the next micro-batch's head rewrites the statistics */
            model_head_nll(e->ws, targets + (size_t)k * T, weight + (size_t)k * T, e->stats_host, nll + (size_t)k * T);
        stream_cell_done(e->st, L, k, 1);
        if (backward) stream_cell_put(e->st, L, k, dx);
    }
    if (!backward) {
        be_to_host(got, acc, sizeof got); /* the one read-back */
        *loss_sum = got[0];
        trace_dev_flush(e->trace);
        stream_end(e->st);
        return 0;
    }
    /* backward */
    for (int l = L - 1; l >= 0; l--) {
        int pos = 2 * L - 1 - l;
        int rc = acquire(e, l, pos);
        if (rc) return step_failed(e, rc);
        lo->grad_off = lo->layer_off[l]; /* the device holds this layer's gradients */
        if (lo->grad_n) be_fill(lo->grads, lo->grad_n, 0);

        for (int k = 0; k < K; k++) {
            uint64_t ds = drop_seed ? drop_seed + (uint64_t)k : 0;
            void *x = l == 0 ? embed_in(e, inputs + (size_t)k * T) : stream_cell_get(e->st, l, k);
            void *dy = stream_cell_get(e->st, l + 1, k);
            void *dx = stream_buf_get(e->st);
            tt_span t0 = span_begin(e);
            ws_set_seg(e->ws, e->segs ? e->seg_dev + (size_t)k * T : NULL);
            model_layer_backward(e->m, lo, e->ws, l, x, dy, dx, ds);
            span_end(e, t0, TRACE_COMPUTE, "backward", l);
            stream_cell_done(e->st, l + 1, k, 1);
            if (l == 0) { stream_buf_put(e->st, x); stream_buf_put(e->st, dx); }
            else stream_cell_put(e->st, l, k, dx); /* replaces the checkpoint (its buffer is returned) */
        }
        size_t a = lo->layer_off[l], n = lo->layer_off[l + 1] - a;
        if (n) be_sumsq(n, lo->grads, acc + 1);
        if (e->cfg.defer_optimizer) /* parked until the norm is known */
            be_copy_async(lo->grads_host + a, lo->grads, n * sizeof(tt_real), BE_D2H, NULL);
        else
            layer_adamw(e, l, hp, step);
        stream_release(e->st, l, pos + 1);
    }
    be_to_host(got, acc, sizeof got); /* the one read-back of the step */
    *gnorm = got[1];
    double loss = got[0];
    if (e->cfg.defer_optimizer) {
        double g = sqrt(*gnorm);
        if (!isfinite(g)) {
            *gnorm = g;
            stream_end(e->st);
            return TT_FAIL(-EINVAL, "the gradient norm became %g at step %d; nothing was updated", g, step);
        }
        tt_real sc = (tt_real)(hp[5] > 0 && g > hp[5] ? hp[5] / (g + 1e-6) : 1);
        for (int l = 0; l < L; l++) {
            size_t a = lo->layer_off[l], n = lo->layer_off[l + 1] - a;
            lo->grad_off = a;
            be_copy_async(lo->grads, lo->grads_host + a, n * sizeof(tt_real), BE_H2D, NULL);
            if (sc != 1) be_scale(n, sc, lo->grads);
            layer_adamw(e, l, hp, step); /* traced per layer */
        }
    }
    *gnorm = sqrt(*gnorm);
    *loss_sum = loss / (wsum > 0 ? wsum : 1);
    trace_dev_flush(e->trace); /* after the read-back: the step's compute is done (a deferred AdamW: the next flush) */
    stream_end(e->st);
    return 0;
}

int exec_io_pass(tt_exec *e) { return stream_io_pass(e->st); }

void exec_set_segments(tt_exec *e, const int32_t *segs) { e->segs = segs; }

int exec_step(tt_exec *e, const int32_t *inputs, const int32_t *targets, const tt_real *weight, float lr, int step,
              float b1, float b2, float eps, float wd, float clip, uint64_t drop_seed, double *loss, double *gnorm) {
    TT_ASSERT(clip <= 0 || e->cfg.defer_optimizer);
    const float hp[6] = {lr, b1, b2, eps, wd, clip};
    *gnorm = 0;
    return run(e, inputs, targets, weight, 1, hp, step, drop_seed, loss, gnorm, NULL);
}

int exec_forward_hidden(tt_exec *e, const int32_t *inputs, void *out) {
    int L = e->L, K = e->K, T = e->T;
    size_t cb = (size_t)T * e->H * be_elem_size(ws_dtype(e->ws));
    stream_begin(e->st, 0); /* its reads: the layers' inputs, then each micro-batch's last (as the head's) */
    int rc = forward(e, inputs, 0, 0);
    if (rc) return rc;
    for (int k = 0; k < K; k++) {
        void *x = stream_cell_get(e->st, L, k);
        be_to_host((uint8_t *)out + (size_t)k * cb, x, cb); /* after the layers' work on it */
        stream_cell_done(e->st, L, k, 1);
    }
    stream_end(e->st);
    return 0;
}

int exec_eval(tt_exec *e, const int32_t *inputs, const int32_t *targets, const tt_real *weight, double *loss_sum) {
    double g = 0;
    return run(e, inputs, targets, weight, 0, NULL, 0, 0, loss_sum, &g, NULL);
}

int exec_eval_tokens(tt_exec *e, const int32_t *inputs, const int32_t *targets, const tt_real *weight,
                     double *loss_sum, double *nll) {
    TT_ASSERT(nll);
    if (!e->stats_host) e->stats_host = tt_xmalloc(3 * (size_t)e->T * sizeof *e->stats_host);
    double g = 0, l;
    int rc = run(e, inputs, targets, weight, 0, NULL, 0, 0, &l, &g, nll);
    if (loss_sum) *loss_sum = l;
    return rc;
}
