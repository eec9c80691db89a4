/* core/fulltrain.c — see fulltrain.h.
 *
 * Every trainable tensor (projections, norms, the final norm, and the
 * embedding unless it is tied to the frozen lm_head) lives in one device
 * buffer of f32 master weights, laid out in config_tensor order; the model is
 * bound straight to it (f32 "blobs"), so forward and backward read the
 * weights being trained. Gradients come from model_set_wgrad; the embedding's
 * are scattered on the host (it is gathered there) and copied in before the
 * optimizer. lm_head stays frozen, as in LoRAM's alignment step. */
#include "core/fulltrain.h"
#include "sched/plan.h"

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/model.h"
#include "io/storeio.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct full_state {
    tt_config cfg;
    uint32_t nt;                 /* tensors */
    uint32_t *dtypes;            /* of the source store (the output keeps them) */
    tier_prune_map map;          /* copy of the source's map (arrays owned) */
    int has_map;
    size_t *off;                 /* [nt]: offset of tensor i in P, or SIZE_MAX when frozen */
    size_t n;                    /* trainable parameters */
    float *P, *m, *v;            /* device: master weights, AdamW moments (of the tensors AdamW steps, moff) */
    size_t *moff;                /* [nt]: offset of tensor i in m and v, or SIZE_MAX (frozen, or GaLore's) */
    size_t nm;                   /* AdamW-stepped parameters */
    tt_galore *gal;              /* [nt]: GaLore's state of a projection (gal[i].m == 0: none) */
    tt_galore_ws gws;            /* its shared workspace */
    int galore;                  /* GaLore on the projections */
    tt_real *G;                  /* device: gradients */
    uint64_t mask_bytes;         /* device bytes of the masks */
    tt_real **mask;              /* [nt]: device 0/1 mask of a sparse (2:4 / unstructured) projection, or NULL */
    tt_real *gembed;             /* host: the embedding's gradient (NULL when frozen) */
    float *embed_host;           /* host mirror of the embedding (gathered there) */
    float *embed_frozen;         /* host: the embedding when it is frozen (tied) */
    float *lm;                   /* device: frozen lm_head, f32 */
    uint32_t embed_i, lm_i;      /* tensor indices */
    tt_model *model;
    tt_lora lora;                /* no targets: model_micro_step's LoRA slot, empty */
    tt_ws *ws;
    tt_wgrad *wg;
    tt_model *teacher;           /* distillation: the teacher, resident and frozen, its (empty) LoRA slot and its
                                  * workspace */
    tt_lora tlora;
    tt_ws *tws;
} full_state;


static void state_free(full_state *st) {
    ws_free(st->tws);
    if (st->teacher) lora_free(&st->tlora);
    model_free(st->teacher);
    ws_free(st->ws);
    lora_free(&st->lora);
    model_free(st->model);
    be_free(st->P); be_free(st->m); be_free(st->v); be_free(st->G); be_free(st->lm);
    free(st->gembed); free(st->embed_host); free(st->embed_frozen);
    for (uint32_t i = 0; st->mask && i < st->nt; i++) be_free(st->mask[i]);
    free(st->mask);
    for (uint32_t i = 0; st->gal && i < st->nt; i++)
        if (st->gal[i].m) galore_free(&st->gal[i]);
    if (st->galore) galore_ws_free(&st->gws);
    free(st->gal); free(st->moff);
    free(st->off); free(st->dtypes); free(st->wg);
    store_prune_map_clear(&st->map);
}

/* Whether tensor d (trainable) is stepped by GaLore: the 2-D projections
 * whose GaLore state is smaller than AdamW's moments (a pruned layer's
 * narrow matrix, at a rank near its smaller side, stays on AdamW: exact, and
 * no bigger). */
static int galore_owns(const tt_full_opts *o, const tt_tensor_desc *d) {
    return o->optim == FULL_OPTIM_GALORE && d->role == TT_ROLE_LINEAR &&
           galore_state_bytes((int)d->rows, (int)d->cols, &o->galore) < 8 * d->rows * d->cols;
}

/* The projections of c, and those GaLore steps. */
static int linear_count(const tt_config *c) {
    tt_tensor_desc d;
    int k = 0;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &d);
        k += d.role == TT_ROLE_LINEAR;
    }
    return k;
}
static int galore_count(const tt_config *c, const tt_full_opts *o) {
    tt_tensor_desc d;
    int k = 0;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &d);
        k += galore_owns(o, &d);
    }
    return k;
}

void fulltrain_optim_bytes(const tt_config *c, const tt_full_opts *o, uint64_t *bytes, uint64_t *adamw_bytes,
                           uint64_t *ws_bytes) {
    tt_tensor_desc d;
    uint64_t b = 0, a = 0;
    int mm = 0, mn = 0, any = 0;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &d);
        if (d.role == TT_ROLE_LM_HEAD || (d.role == TT_ROLE_EMBED && c->tie_embeddings)) continue; /* frozen */
        uint64_t n = d.rows * d.cols;
        a += 8 * n;
        if (!galore_owns(o, &d)) { b += 8 * n; continue; }
        b += galore_state_bytes((int)d.rows, (int)d.cols, &o->galore);
        if ((int)d.rows > mm) mm = (int)d.rows;
        if ((int)d.cols > mn) mn = (int)d.cols;
        any = 1;
    }
    size_t host;
    *ws_bytes = any ? galore_ws_bytes(mm, mn, &o->galore, &host) : 0;
    *bytes = b;
    *adamw_bytes = a;
}

/* Device bytes full training of cfg needs besides the workspace: weights,
 * gradients, the optimizer's state, the frozen lm_head. */
static uint64_t state_bytes(const tt_config *c, size_t n, const tt_full_opts *o) {
    uint64_t opt, adamw, ws;
    fulltrain_optim_bytes(c, o, &opt, &adamw, &ws);
    return (uint64_t)n * (4 + sizeof(tt_real)) + opt + ws + (uint64_t)c->vocab * c->hidden * 4;
}

/* A projection that 2:4 or unstructured pruning left sparse (at least
 * SPARSE_MIN of its weights exactly zero) keeps its zeros through training:
 * they are re-applied after every optimizer step (LoRAM's semi/unst variants
 * align the sparse model, not a densified one). Dense weights are never
 * exactly zero that often, so a trained dense model is not affected. */
#define SPARSE_MIN 0.01
static int sparse_mask(full_state *st, uint32_t i, const float *w, size_t n, const char *path) {
    size_t zeros = 0;
    for (size_t j = 0; j < n; j++) zeros += w[j] == 0.0f;
    if ((double)zeros < SPARSE_MIN * (double)n) return 0;
    tt_real *h = malloc(n * sizeof *h);
    st->mask[i] = be_alloc(n * sizeof(tt_real));
    if (!h || !st->mask[i]) {
        free(h);
        return TT_FAIL(-ENOMEM, "out of memory for the sparsity mask of %s", path);
    }
    for (size_t j = 0; j < n; j++) h[j] = w[j] != 0.0f;
    be_to_device(st->mask[i], h, n * sizeof *h);
    st->mask_bytes += n * sizeof *h;
    free(h);
    return 0;
}

/* A tt_alloc that only adds up sizes (the workspace's bytes, for --hbm). */
static void *measure_fn(void *ctx, size_t bytes, const char *label) {
    (void)label;
    *(size_t *)ctx += bytes;
    return (void *)(uintptr_t)16; /* a placeholder, never dereferenced */
}

/* A distillation teacher for the student config c (path: the student's
 * store): same hidden size and vocabulary. *tied: its lm_head is the
 * embedding (on the host: its chunks go through the staging buffer). */
static int teacher_check(const char *tpath, const char *path, const tt_config *c, int *tied) {
    tier_store *ts = NULL;
    int rc = tier_open(&ts, tpath);
    if (rc) return rc;
    const tt_config *tc = tier_config(ts);
    if (tc->hidden != c->hidden || tc->vocab != c->vocab)
        rc = TT_FAIL(-EINVAL, "--teacher %s has hidden size %u and vocabulary %u, %s has %u and %u; distill from the "
                     "model %s was pruned from (LoRAM's pruning keeps both)", tpath, tc->hidden, tc->vocab, path,
                     c->hidden, c->vocab, path);
    *tied = tc->tie_embeddings != 0;
    tier_close(ts);
    return rc;
}

/* Loads the store into master weights and binds the model to them. */
static int state_load(full_state *st, const char *path, const tt_ws_opts *wo_in, const tt_full_opts *o) {
    uint64_t hbm = o->hbm;
    memset(st, 0, sizeof *st);
    store_reader rd;
    int rc = store_reader_open(&rd, path);
    if (rc) return rc;
    st->cfg = *store_reader_config(&rd);
    const tt_config *c = &st->cfg;
    /* a tied lm_head is the embedding, which lives on the host: its chunks go through the staging buffer */
    tt_ws_opts wo_v = *wo_in;
    wo_v.head_streamed = c->tie_embeddings != 0;
    wo_v.with_distill = o->teacher_path != NULL;
    const tt_ws_opts *wo = &wo_v;
    tt_ws_opts two = {.B = wo_in->B, .seq = wo_in->seq, .with_ckpt = 1}; /* the teacher's: forward passes */
    if (o->teacher_path) { /* first, so that a mismatched teacher is refused before anything is allocated */
        int tied = 0;
        if ((rc = teacher_check(o->teacher_path, path, c, &tied))) goto out;
        if (tied) wo_v.head_streamed = 1;
    }
    st->nt = config_n_tensors(c);
    st->dtypes = tt_xcalloc(st->nt, sizeof *st->dtypes);
    st->mask = tt_xcalloc(st->nt, sizeof *st->mask);
    st->off = tt_xcalloc(st->nt, sizeof *st->off);
    st->moff = tt_xcalloc(st->nt, sizeof *st->moff);
    st->gal = tt_xcalloc(st->nt, sizeof *st->gal);
    const tier_prune_map *pm = tier_prune(rd.s);
    if (pm) {
        st->has_map = 1;
        for (uint32_t l = 0; l < c->n_layers; l++) {
            if (!pm->kv[l]) continue;
            size_t kb = c->layers[l].n_kv_heads * sizeof(uint32_t), fb = c->layers[l].ffn * sizeof(uint32_t);
            st->map.kv[l] = memcpy(tt_xmalloc(kb), pm->kv[l], kb);
            st->map.ffn[l] = memcpy(tt_xmalloc(fb), pm->ffn[l], fb);
        }
    }
    tt_tensor_desc d;
    for (uint32_t i = 0; i < st->nt; i++) {
        config_tensor(c, i, &d);
        st->dtypes[i] = store_reader_dtype(&rd, i);
        if (st->dtypes[i] == TT_DTYPE_NF4 || st->dtypes[i] == TT_DTYPE_NF4DQ) {
            rc = TT_FAIL(-EINVAL, "%s has NF4 weights (%s); full training needs f32 or bf16 weights — train "
                         "before `tiertrain quantize`, or train LoRA adapters on the NF4 store", path, d.name);
            goto out;
        }
        int frozen = d.role == TT_ROLE_LM_HEAD || (d.role == TT_ROLE_EMBED && c->tie_embeddings);
        st->off[i] = frozen ? SIZE_MAX : st->n;
        if (!frozen) st->n += d.rows * d.cols;
        st->moff[i] = frozen || galore_owns(o, &d) ? SIZE_MAX : st->nm;
        if (st->moff[i] != SIZE_MAX) st->nm += d.rows * d.cols;
        if (d.role == TT_ROLE_EMBED) st->embed_i = i;
        if (d.role == TT_ROLE_LM_HEAD) st->lm_i = i;
    }
    tt_lora_cfg lc = {1, 1.f, 0.f, 0, 0};
    uint64_t need = 0; /* device bytes, checked against --hbm */
    if (hbm) {
        size_t ws_bytes = 0;
        tt_alloc meas = {measure_fn, &ws_bytes, 1};
        tt_ws *wm = NULL;
        if ((rc = ws_create(&wm, c, &lc, wo, &meas))) goto out;
        ws_free(wm);
        if (o->teacher_path) { /* the teacher's weights (its file's size bounds them) and its workspace */
            store_reader tr;
            if ((rc = store_reader_open(&tr, o->teacher_path))) goto out;
            ws_bytes += tier_file_size(tr.s);
            if ((rc = ws_create(&wm, store_reader_config(&tr), &lc, &two, &meas)) == 0) ws_free(wm);
            store_reader_close(&tr);
            if (rc) goto out;
        }
        if (!plan_dev_fits(state_bytes(c, st->n, o) + ws_bytes, hbm, &need)) {
            char a[32], b[32];
            rc = TT_FAIL(-ENOMEM, "--hbm %s is below what full training of %s needs (%s: f32 weights, gradients "
                         "and %s state of %zu parameters, lm_head and activations%s); raise --hbm or lower "
                         "--seq / --micro-batch%s",
                         tt_fmt_bytes(hbm, a, sizeof a), path, tt_fmt_bytes(need, b, sizeof b),
                         o->optim == FULL_OPTIM_GALORE ? "GaLore" : "AdamW", st->n,
                         o->teacher_path ? ", and the --teacher's weights and activations" : "",
                         o->optim == FULL_OPTIM_GALORE ? " / --galore-rank" : "");
            goto out;
        }
    }
    st->P = be_alloc(st->n * 4);
    st->m = be_alloc((st->nm ? st->nm : 1) * 4);
    st->v = be_alloc((st->nm ? st->nm : 1) * 4);
    st->G = be_alloc(st->n * sizeof(tt_real));
    st->lm = c->tie_embeddings ? NULL : be_alloc((size_t)c->vocab * c->hidden * 4);
    if (!st->P || !st->m || !st->v || !st->G || (!c->tie_embeddings && !st->lm)) {
        rc = TT_FAIL(-ENOMEM, "out of device memory for full training of %s (%zu parameters)", path, st->n);
        goto out;
    }
    float *buf = tt_xmalloc(store_max_tensor(c) * sizeof *buf);
    for (uint32_t i = 0; i < st->nt && rc == 0; i++) {
        config_tensor(c, i, &d);
        size_t n = d.rows * d.cols;
        if ((rc = store_reader_tensor(&rd, i, buf))) break;
        if (st->off[i] != SIZE_MAX) be_to_device(st->P + st->off[i], buf, n * 4);
        if (d.role == TT_ROLE_LINEAR && (rc = sparse_mask(st, i, buf, n, path))) break;
        if (d.role == TT_ROLE_LM_HEAD) be_to_device(st->lm, buf, n * 4);
        if (d.role == TT_ROLE_EMBED) {
            float *h = memcpy(tt_xmalloc(n * 4), buf, n * 4);
            if (c->tie_embeddings) st->embed_frozen = h;
            else st->embed_host = h;
        }
    }
    free(buf);
    if (rc) goto out;
    if (o->optim == FULL_OPTIM_GALORE) { /* a state per projection, one workspace for the largest */
        int mm = 0, mn = 0;
        for (uint32_t i = 0; i < st->nt && rc == 0; i++) {
            config_tensor(c, i, &d);
            if (st->off[i] == SIZE_MAX || !galore_owns(o, &d)) continue;
            rc = galore_init(&st->gal[i], (int)d.rows, (int)d.cols, &o->galore, i, NULL);
            if ((int)d.rows > mm) mm = (int)d.rows;
            if ((int)d.cols > mn) mn = (int)d.cols;
        }
        if (rc == 0 && mm && (rc = galore_ws_init(&st->gws, mm, mn, &o->galore, NULL)) == 0) st->galore = 1;
        if (rc) goto out;
    }
    if (hbm && need + st->mask_bytes > hbm) { /* the masks are known only once the weights are read */
        char a[32], b[32];
        rc = TT_FAIL(-ENOMEM, "--hbm %s is below what full training of %s needs (%s, with the masks that keep its "
                     "2:4 / unstructured zeros); raise --hbm or lower --seq / --micro-batch",
                     tt_fmt_bytes(hbm, a, sizeof a), path, tt_fmt_bytes(need + st->mask_bytes, b, sizeof b));
        goto out;
    }
    if ((rc = lora_init(&st->lora, c, &lc, 0))) goto out;
    if ((rc = ws_create(&st->ws, c, &lc, wo, NULL))) goto out;
    if (o->teacher_path) {
        if ((rc = model_load(&st->teacher, o->teacher_path))) goto out;
        if ((rc = lora_init(&st->tlora, model_config(st->teacher), &lc, 0))) goto out;
        if ((rc = ws_create(&st->tws, model_config(st->teacher), &lc, &two, NULL))) goto out;
    }
    st->model = model_shell(rd.s);
    st->wg = tt_xcalloc(1, sizeof *st->wg);
    for (uint32_t i = 0; i < st->nt; i++) {
        config_tensor(c, i, &d);
        if (d.layer < 0 || st->off[i] == SIZE_MAX) continue;
        tt_layer_weights lw = *model_layer(st->model, d.layer);
        if (d.role == TT_ROLE_LINEAR) {
            lw.proj[d.proj] = st->P + st->off[i];
            lw.dtype[d.proj] = TT_DTYPE_F32;
            st->wg->proj[d.layer][d.proj] = st->G + st->off[i];
        } else { /* input_layernorm comes before post_attention_layernorm in the table */
            int k = lw.norm[0] ? 1 : 0;
            lw.norm[k] = st->P + st->off[i];
            st->wg->norm[d.layer][k] = st->G + st->off[i];
        }
        model_bind_layer_weights(st->model, d.layer, &lw);
    }
    for (uint32_t i = 0; i < st->nt; i++) {
        config_tensor(c, i, &d);
        if (d.role == TT_ROLE_NORM && d.layer < 0) {
            tt_head_weights h = {st->P + st->off[i], c->tie_embeddings ? (void *)st->embed_frozen : (void *)st->lm,
                                 TT_DTYPE_F32, c->tie_embeddings};
            model_bind_head_weights(st->model, &h);
            st->wg->final_norm = st->G + st->off[i];
        }
    }
    model_bind_embed(st->model, c->tie_embeddings ? st->embed_frozen : st->embed_host, TT_DTYPE_F32);
    if (!c->tie_embeddings) {
        st->gembed = tt_xcalloc((size_t)c->vocab * c->hidden, sizeof(tt_real));
        st->wg->embed = st->gembed;
    }
    model_set_wgrad(st->model, st->wg);
out:
    store_reader_close(&rd);
    if (rc) state_free(st);
    return rc;
}

/* AdamW on the master weights, tensor by tensor (weight decay on the
 * projections only, the usual exemption of norms and embeddings). */
static void optimizer_step(full_state *st, const tt_full_opts *o, float lr, int step) {
    tt_tensor_desc d;
    for (uint32_t i = 0; i < st->nt; i++) {
        if (st->off[i] == SIZE_MAX) continue;
        config_tensor(&st->cfg, i, &d);
        size_t n = d.rows * d.cols, at = st->off[i], mo = st->moff[i];
        float wd = d.role == TT_ROLE_LINEAR ? o->wd : 0.f;
        tt_galore *g = st->gal[i].m ? &st->gal[i] : NULL;
#ifdef TT_F64
        /* the double build (gradient tests) keeps f32 master weights: step a widened copy */
        tt_real *p = tt_xmalloc(n * sizeof *p);
        float *pf = tt_xmalloc(n * sizeof *pf);
        be_to_host(pf, st->P + at, n * 4);
        for (size_t j = 0; j < n; j++) p[j] = pf[j];
        if (g) galore_step(g, &st->gws, p, st->G + at, lr, o->b1, o->b2, o->eps, wd, step);
        else be_adamw(n, p, st->G + at, st->m + mo, st->v + mo, lr, o->b1, o->b2, o->eps, wd, step);
        if (st->mask[i]) be_mask_scale(n, p, st->mask[i], 1, p, BE_REAL);
        for (size_t j = 0; j < n; j++) pf[j] = (float)p[j];
        be_to_device(st->P + at, pf, n * 4);
        free(p); free(pf);
#else
        if (g) galore_step(g, &st->gws, st->P + at, st->G + at, lr, o->b1, o->b2, o->eps, wd, step);
        else be_adamw(n, st->P + at, st->G + at, st->m + mo, st->v + mo, lr, o->b1, o->b2, o->eps, wd, step);
        if (st->mask[i]) be_mask_scale(n, st->P + at, st->mask[i], 1, st->P + at, BE_REAL); /* pruned zeros stay zero */
#endif
    }
    if (st->embed_host) /* refresh the host copy the embedding is gathered from */
        be_to_host(st->embed_host, st->P + st->off[st->embed_i], (size_t)st->cfg.vocab * st->cfg.hidden * 4);
}

static int eval_model(void *ctx, const int32_t *in, const int32_t *tgt, const tt_real *wt, double *loss) {
    full_state *st = ctx;
    model_set_wgrad(st->model, NULL);
    *loss = model_micro_step(st->model, &st->lora, st->ws, in, tgt, wt, 1, 0, 0);
    model_set_wgrad(st->model, st->wg);
    return 0;
}

/* Full training's side of the shared loop (core/train.c, train_loop). */
typedef struct full_ctx {
    full_state *st;
    const tt_full_opts *o;
} full_ctx;

/* K micro-batches of weight gradients, the global norm (summed on the device),
 * clipping, AdamW. */
static int full_step(void *ctx, const int32_t *in, const int32_t *tgt, const tt_real *wt, const int32_t *seg,
                     double lr, int step, uint64_t drop, double *loss_out, double *gnorm_out) {
    TT_ASSERT(seg == NULL); /* full training puts one example in each sequence (train_loop: o->pack 0) */
    full_ctx *fc = ctx;
    full_state *st = fc->st;
    const tt_full_opts *o = fc->o;
    const tt_config *c = &st->cfg;
    int K = o->accum, T = o->micro_batch * o->seq;
    size_t E = st->gembed ? (size_t)c->vocab * c->hidden : 0;
    (void)drop;
    double loss = 0;
    be_fill(st->G, st->n, 0);
    if (E) memset(st->gembed, 0, E * sizeof *st->gembed);
    for (int k = 0; k < K; k++) {
        if (st->teacher) { /* the teacher's hidden states for this micro-batch */
            tt_distill d = {st->teacher, model_forward(st->teacher, &st->tlora, st->tws, in + (size_t)k * T),
                            o->distill_weight, o->distill_temp};
            ws_set_distill(st->ws, &d);
        }
        loss += model_micro_step(st->model, &st->lora, st->ws, in + (size_t)k * T, tgt + (size_t)k * T,
                                 wt + (size_t)k * T, (tt_real)(1.0 / ((double)K * T)), 1, 0);
    }
    if (st->teacher) ws_set_distill(st->ws, NULL);
    loss /= (double)K * T;
    if (E) be_to_device(st->G + st->off[st->embed_i], st->gembed, E * sizeof(tt_real));
    double g2 = 0, *acc = ws_acc(st->ws) + 1; /* the gradient norm, summed on the device */
    be_to_device(acc, &g2, sizeof g2);
    be_sumsq(st->n, st->G, acc);
    be_to_host(&g2, acc, sizeof g2);
    double gnorm = sqrt(g2);
    *loss_out = loss;
    *gnorm_out = gnorm;
    if (!isfinite(loss) || !isfinite(gnorm)) return 0; /* the loop refuses it, with nothing updated */
    if (o->clip > 0 && gnorm > o->clip) be_scale(st->n, (tt_real)(o->clip / gnorm), st->G);
    optimizer_step(st, o, (float)lr, step);
    return 0;
}

static int full_eval(void *ctx, const tt_tokens *val, int max_tokens, double *loss) {
    full_ctx *fc = ctx;
    return train_eval_with(eval_model, fc->st, fc->o->micro_batch, fc->o->seq, 1, val, max_tokens, loss);
}

static int fill_out(void *ctx, uint32_t i, const tt_tensor_desc *d, float *out) {
    full_state *st = ctx;
    size_t n = d->rows * d->cols;
    if (st->off[i] != SIZE_MAX) be_to_host(out, st->P + st->off[i], n * 4);
    else if (d->role == TT_ROLE_LM_HEAD) be_to_host(out, st->lm, n * 4);
    else memcpy(out, st->embed_frozen, n * 4); /* the tied, frozen embedding */
    return 0;
}

/* what: "training data", or "training data of FILE" (a mixture's source). */
static int check_tokens(const tt_tokens *t, const tt_config *c, const char *what, int seq) {
    if (seq > 0 && !t->flags && t->n < (uint64_t)seq + 1)
        return TT_FAIL(-EINVAL, "the %s has %llu tokens, fewer than --seq %d + 1; use more data or a shorter --seq",
                       what, (unsigned long long)t->n, seq);
    for (uint64_t i = 0; i < t->n; i++)
        if (t->t[i] >= c->vocab)
            return TT_FAIL(-EINVAL, "token %u in the %s is outside the model's vocabulary of %u; tokenize with the "
                           "model's tokenizer", t->t[i], what, c->vocab);
    return 0;
}

int fulltrain_run(const tt_full_opts *o, const tt_tokens *train, const tt_tokens *val, tt_train_result *res) {
    memset(res, 0, sizeof *res);
    res->first_val = res->last_val = NAN;
    int crc = store_check_output("--out", o->out_path, o->model_path);
    if (crc) return crc;
    int B = o->micro_batch, S = o->seq, K = o->accum, T = B * S;
    tt_ws_opts wo = {.B = B, .seq = S, .with_ckpt = 1};
    full_state st;
    int rc = state_load(&st, o->model_path, &wo, o);
    if (rc) return rc;
    const tt_config *c = &st.cfg;
    tt_mix one, *mix = o->mix;
    if (!mix) {
        train_mix_single(&one, train, val);
        mix = &one;
    } else TT_ASSERT(!train && !val); /* the mixture's sources are the data */
    for (int i = 0; i < mix->n && rc == 0; i++) {
        char tw[1100], vw[1100], nb[32];
        const char *of = mix->n > 1 ? " of " : "", *name = mix->n > 1 ? train_mix_name(mix, i, nb, sizeof nb) : "";
        snprintf(tw, sizeof tw, "training data%s%s", of, name);
        snprintf(vw, sizeof vw, "validation data%s%s", of, name);
        if ((rc = check_tokens(&mix->train[i], c, tw, S)) == 0) rc = check_tokens(&mix->val[i], c, vw, 0);
    }
    if (rc) {
        state_free(&st);
        return rc;
    }
    if (!o->quiet && !o->json) {
        printf("full training of %s: %zu trainable parameters (lm_head%s frozen), %d steps of %lld tokens\n",
               o->model_path, st.n, c->tie_embeddings ? " and the tied embedding" : "", o->steps, (long long)K * T);
        uint64_t ob, ab, wb;
        fulltrain_optim_bytes(c, o, &ob, &ab, &wb);
        char x[32], y[32], z[32];
        if (o->optim == FULL_OPTIM_GALORE)
            printf("optimizer: GaLore rank %d (projector every %d steps, scale %g) on %d of %d projections, AdamW on "
                   "the rest: state %s on the device, %.1f%% of AdamW's %s (and a %s workspace)\n", o->galore.rank,
                   o->galore.update_every, (double)o->galore.scale, galore_count(c, o), linear_count(c),
                   tt_fmt_bytes(ob, x, sizeof x), 100.0 * (double)ob / (double)ab, tt_fmt_bytes(ab, y, sizeof y),
                   tt_fmt_bytes(wb, z, sizeof z));
        else
            printf("optimizer: AdamW, state %s on the device\n", tt_fmt_bytes(ab, y, sizeof y));
        if (o->teacher_path)
            printf("distillation from %s: loss (1 - %g) cross-entropy + %g x %g^2 KL(teacher || model)\n",
                   o->teacher_path, (double)o->distill_weight, (double)o->distill_weight, (double)o->distill_temp);
    }
    tt_train_opts lo = {0}; /* the shared loop's view of these options: no checkpoints, no dropout */
    lo.seed = o->seed;
    lo.steps = o->steps; lo.seq = S; lo.micro_batch = B; lo.accum = K; lo.warmup = o->warmup;
    lo.lr = o->lr; lo.min_lr = o->min_lr; lo.wd = o->wd; lo.b1 = o->b1; lo.b2 = o->b2; lo.eps = o->eps; lo.clip = o->clip;
    lo.eval_every = o->eval_every; lo.eval_tokens = o->eval_tokens;
    lo.json = o->json; lo.quiet = o->quiet;
    lo.hbm = o->hbm;
    full_ctx fc = {&st, o};
    static const tt_loop_ops ops = {full_step, full_eval, NULL};
    rc = train_loop(&lo, &ops, &fc, mix, 0, 0, res);
    if (rc == 0) {
        /* lz4 where it saves space: sparse layers shrink, dense ones stay raw; every weight was trained, so the
         * store is no longer its source model (no source record) */
        tier_write_opts wopt = {st.dtypes, st.has_map ? &st.map : NULL, 1, NULL};
        rc = store_write(o->out_path, c, &wopt, fill_out, &st);
        if (rc == 0 && !o->quiet && !o->json) printf("wrote %s\n", o->out_path);
    }
    state_free(&st);
    return rc;
}

/* ---- Taylor importance ------------------------------------------------------ */

int fulltrain_calib_grads(const char *store_path, const uint32_t *tokens, uint64_t n, int samples, int seq,
                          uint32_t layer_a, uint32_t layer_b, float **grads) {
    if (seq < 2 || samples < 1)
        return TT_FAIL(-EINVAL, "calibration needs windows of at least 2 tokens and at least 1 sample (got %d x %d)",
                       samples, seq);
    tt_model *m = NULL;
    int rc = model_load(&m, store_path);
    if (rc) return rc;
    const tt_config *c = model_config(m);
    uint32_t nt = config_n_tensors(c);
    for (uint32_t i = 0; i < nt; i++) grads[i] = NULL;
    if (n < (uint64_t)samples * seq + 1) {
        model_free(m);
        return TT_FAIL(-EINVAL, "the calibration data has %llu tokens; %d samples of %d tokens need at least %llu",
                       (unsigned long long)n, samples, seq, (unsigned long long)samples * seq + 1);
    }
    for (uint64_t i = 0; i < n; i++)
        if (tokens[i] >= c->vocab) {
            model_free(m);
            return TT_FAIL(-EINVAL, "token %u in the calibration data is outside the vocabulary of %s (%u)",
                           tokens[i], store_path, c->vocab);
        }
    tt_lora_cfg lc = {1, 1.f, 0.f, 0, 0};
    tt_lora lo;
    tt_ws *w = NULL;
    /* tied: lm_head chunks come from the host */
    tt_ws_opts wo = {.B = 1, .seq = seq, .with_ckpt = 1, .head_streamed = c->tie_embeddings != 0};
    tt_wgrad *wg = tt_xcalloc(1, sizeof *wg);
    tt_tensor_desc d;
    if ((rc = lora_init(&lo, c, &lc, 0)) == 0 && (rc = ws_create(&w, c, &lc, &wo, NULL)) == 0) {
        for (uint32_t i = 0; i < nt && rc == 0; i++) {
            config_tensor(c, i, &d);
            if (d.role != TT_ROLE_LINEAR || (uint32_t)d.layer < layer_a || (uint32_t)d.layer >= layer_b) continue;
            if (!(wg->proj[d.layer][d.proj] = be_alloc(d.rows * d.cols * sizeof(tt_real))))
                rc = TT_FAIL(-ENOMEM, "out of memory for the calibration gradients of %s (layers %u..%u)", store_path,
                             layer_a, layer_b - 1);
        }
        model_set_wgrad(m, wg);
        int32_t *in = tt_xmalloc((size_t)seq * sizeof *in), *tgt = tt_xmalloc((size_t)seq * sizeof *tgt);
        tt_real *wt = tt_xmalloc((size_t)seq * sizeof *wt);
        /* windows spread evenly: stride >= seq because n - 1 >= samples * seq, so the last window,
         * starting at (samples - 1) * stride, ends at most at samples * stride <= n - 1 */
        uint64_t stride = (n - 1) / (uint64_t)samples;
        for (int s = 0; s < samples && rc == 0; s++) {
            uint64_t at = (uint64_t)s * stride;
            for (int t = 0; t < seq; t++) {
                in[t] = (int32_t)tokens[at + t];
                tgt[t] = (int32_t)tokens[at + t + 1];
                wt[t] = 1;
            }
            model_micro_step(m, &lo, w, in, tgt, wt, (tt_real)(1.0 / ((double)samples * seq)), 1, 0);
        }
        free(in); free(tgt); free(wt);
        /* hand out f32 copies one projection at a time, freeing each device gradient as it goes */
        for (uint32_t i = 0; i < nt && rc == 0; i++) {
            config_tensor(c, i, &d);
            if (d.role != TT_ROLE_LINEAR || !wg->proj[d.layer][d.proj]) continue;
            size_t k = d.rows * d.cols;
            tt_real *h = malloc(k * sizeof *h);
            grads[i] = malloc(k * sizeof(float));
            if (!h || !grads[i]) {
                free(h);
                rc = TT_FAIL(-ENOMEM, "out of memory for the calibration gradients of %s", store_path);
                break;
            }
            be_to_host(h, wg->proj[d.layer][d.proj], k * sizeof *h);
            for (size_t j = 0; j < k; j++) grads[i][j] = (float)h[j];
            free(h);
            be_free(wg->proj[d.layer][d.proj]);
            wg->proj[d.layer][d.proj] = NULL;
        }
    }
    for (uint32_t l = 0; l < c->n_layers; l++)
        for (int p = 0; p < TT_PROJ_COUNT; p++) be_free(wg->proj[l][p]);
    if (rc)
        for (uint32_t i = 0; i < nt; i++) { free(grads[i]); grads[i] = NULL; }
    free(wg);
    ws_free(w);
    lora_free(&lo);
    model_free(m);
    return rc;
}
