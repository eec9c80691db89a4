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
#include "io/atomicfile.h"
#include "core/exec.h"
#include "sched/plan.h"
#include "sched/stream.h"

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/model.h"
#include "io/ckpt.h"
#include "io/storeio.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The refusal of an NF4 store (tensor name) that both runs give. */
static int nf4_refused(const char *path, const char *name) {
    return TT_FAIL(-EINVAL, "%s has NF4 weights (%s); full training needs f32 or bf16 weights — train before "
                   "`tiertrain quantize`, or train LoRA adapters on the NF4 store", path, name);
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

int fulltrain_check_inputs(const tier_store *s, const char *teacher_path, int *teacher_tied) {
    const tt_config *c = tier_config(s);
    if (teacher_tied) *teacher_tied = 0;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        uint32_t dt = tier_tensor_at(s, i)->dtype;
        if (dt != TT_DTYPE_F32 && dt != TT_DTYPE_BF16) {
            tt_tensor_desc d;
            config_tensor(c, i, &d);
            return nf4_refused(tier_path(s), d.name);
        }
    }
    int tied = 0, rc = teacher_path ? teacher_check(teacher_path, tier_path(s), c, &tied) : 0;
    if (teacher_tied) *teacher_tied = tied;
    return rc;
}

/* The tensors full training leaves frozen: lm_head, and the embedding where lm_head is it. */
static int full_frozen(const tt_config *c, const tt_tensor_desc *d) {
    return d->role == TT_ROLE_LM_HEAD || (d->role == TT_ROLE_EMBED && c->tie_embeddings);
}

/* The resident run's workspaces: the model's (a tied lm_head, the model's or the teacher's, is the embedding, on
 * the host, whose chunks go through the staging buffer) and the teacher's (forward passes). */
static void full_ws_opts(const tt_config *c, const tt_full_opts *o, int teacher_tied, tt_ws_opts *wo, tt_ws_opts *two) {
    *wo = (tt_ws_opts){.B = o->micro_batch, .seq = o->seq, .with_ckpt = 1,
                       .head_streamed = c->tie_embeddings || teacher_tied, .with_distill = o->teacher_path != NULL};
    *two = (tt_ws_opts){.B = o->micro_batch, .seq = o->seq, .with_ckpt = 1};
}

/* fulltrain_resident_bytes for inputs fulltrain_check_inputs accepted (teacher_tied: its answer). */
static int resident_bytes(const tt_config *c, const tt_full_opts *o, int tied, uint64_t *bytes) {
    int rc;
    size_t n = 0, ws_bytes = 0;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        tt_tensor_desc d;
        config_tensor(c, i, &d);
        if (!full_frozen(c, &d)) n += d.rows * d.cols;
    }
    tt_ws_opts wo, two; /* the workspaces as state_load makes them */
    full_ws_opts(c, o, tied, &wo, &two);
    tt_lora_cfg lc = {1, 1.f, 0.f, 0, 0};
    tt_alloc meas = {measure_fn, &ws_bytes, 1};
    tt_ws *wm = NULL;
    if ((rc = ws_create(&wm, c, &lc, &wo, &meas))) return rc;
    ws_free(wm);
    if (o->teacher_path) { /* the teacher's weights (its file's size bounds them) and its workspace */
        store_reader tr;
        if ((rc = store_reader_open(&tr, o->teacher_path))) return rc;
        ws_bytes += tier_file_size(tr.s);
        if ((rc = ws_create(&wm, store_reader_config(&tr), &lc, &two, &meas)) == 0) ws_free(wm);
        store_reader_close(&tr);
        if (rc) return rc;
    }
    *bytes = state_bytes(c, n, o) + ws_bytes;
    return 0;
}

int fulltrain_resident_bytes(const tier_store *s, const tt_full_opts *o, uint64_t *bytes) {
    int tied = 0, rc = fulltrain_check_inputs(s, o->teacher_path, &tied);
    return rc ? rc : resident_bytes(tier_config(s), o, tied, bytes);
}

/* Loads the store into master weights and binds the model to them. */
static int state_load(full_state *st, const char *path, const tt_full_opts *o) {
    uint64_t hbm = o->hbm;
    memset(st, 0, sizeof *st);
    store_reader rd;
    int rc = store_reader_open(&rd, path);
    if (rc) return rc;
    st->cfg = *store_reader_config(&rd);
    const tt_config *c = &st->cfg;
    int tied = 0; /* first, so that NF4 weights or a mismatched teacher are refused before anything is allocated */
    if ((rc = fulltrain_check_inputs(rd.s, o->teacher_path, &tied))) goto out;
    tt_ws_opts wo, two;
    full_ws_opts(c, o, tied, &wo, &two);
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
        int frozen = full_frozen(c, &d);
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
        uint64_t arena;
        if ((rc = resident_bytes(c, o, tied, &arena))) goto out; /* the inputs checked above */
        if (!plan_dev_fits(arena, hbm, &need)) {
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
    if ((rc = ws_create(&st->ws, c, &lc, &wo, NULL))) goto out;
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

/* One tensor's step on its f32 master weights p (n values, device; g its
 * gradient): GaLore with g_st, else AdamW with the moments m, v; then the
 * sparsity mask (NULL: none). host: p, g, m, v are host memory, stepped by
 * the CPU reference (the streamed run's embedding). Resident and streamed
 * training step every tensor through here, so their updates are the same —
 * on CUDA too: the device's AdamW and the CPU's are one code
 * (kernels/adamw.h), so the host-stepped embedding has the device's bits. */
static void tensor_step(float *p, const tt_real *g, float *m, float *v, tt_galore *g_st, tt_galore_ws *gws,
                        const tt_real *mask, size_t n, float wd, const tt_full_opts *o, float lr, int step, int host) {
    void (*adamw)(size_t, tt_real *, const tt_real *, float *, float *, float, float, float, float, float, int) =
        host ? backend_cpu()->adamw : be_adamw;
#ifdef TT_F64
    /* the double build (gradient tests) keeps f32 master weights: step a widened copy */
    tt_real *pw = tt_xmalloc(n * sizeof *pw);
    float *pf = tt_xmalloc(n * sizeof *pf);
    if (host) memcpy(pf, p, n * 4);
    else be_to_host(pf, p, n * 4);
    for (size_t j = 0; j < n; j++) pw[j] = pf[j];
    if (g_st) galore_step(g_st, gws, pw, g, lr, o->b1, o->b2, o->eps, wd, step);
    else adamw(n, pw, g, m, v, lr, o->b1, o->b2, o->eps, wd, step);
    if (mask) be_mask_scale(n, pw, mask, 1, pw, BE_REAL);
    for (size_t j = 0; j < n; j++) pf[j] = (float)pw[j];
    if (host) memcpy(p, pf, n * 4);
    else be_to_device(p, pf, n * 4);
    free(pw); free(pf);
#else
    if (g_st) galore_step(g_st, gws, p, g, lr, o->b1, o->b2, o->eps, wd, step);
    else adamw(n, p, g, m, v, lr, o->b1, o->b2, o->eps, wd, step);
    if (mask) be_mask_scale(n, p, mask, 1, p, BE_REAL); /* pruned zeros stay zero */
#endif
}

/* AdamW on the master weights, tensor by tensor (weight decay on the
 * projections only, the usual exemption of norms and embeddings). */
static void optimizer_step(full_state *st, const tt_full_opts *o, float lr, int step) {
    tt_tensor_desc d;
    for (uint32_t i = 0; i < st->nt; i++) {
        if (st->off[i] == SIZE_MAX) continue;
        config_tensor(&st->cfg, i, &d);
        size_t at = st->off[i], mo = st->moff[i];
        tensor_step(st->P + at, st->G + at, mo == SIZE_MAX ? NULL : st->m + mo, mo == SIZE_MAX ? NULL : st->v + mo,
                    st->gal[i].m ? &st->gal[i] : NULL, &st->gws, st->mask[i], d.rows * d.cols,
                    d.role == TT_ROLE_LINEAR ? o->wd : 0.f, o, lr, step, 0);
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
    const tt_mix *mix;
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
    double loss = 0, wsum = model_target_weight(tgt, wt, (size_t)K * T); /* the mean over the targets */
    be_fill(st->G, st->n, 0);
    if (E) memset(st->gembed, 0, E * sizeof *st->gembed);
    for (int k = 0; k < K; k++) {
        if (st->teacher) { /* the teacher's hidden states for this micro-batch */
            tt_distill d = {st->teacher, model_forward(st->teacher, &st->tlora, st->tws, in + (size_t)k * T),
                            o->distill_weight, o->distill_temp};
            ws_set_distill(st->ws, &d);
        }
        loss += model_micro_step(st->model, &st->lora, st->ws, in + (size_t)k * T, tgt + (size_t)k * T,
                                 wt + (size_t)k * T, (tt_real)(wsum > 0 ? 1.0 / wsum : 0.0), 1, 0);
    }
    if (st->teacher) ws_set_distill(st->ws, NULL);
    loss /= wsum > 0 ? wsum : 1;
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

/* The shared loop's view of o (no dropout), which a checkpoint also records (ck_record). */
static void loop_opts(const tt_full_opts *o, tt_train_opts *lo) {
    memset(lo, 0, sizeof *lo);
    lo->seed = o->seed;
    lo->weights_fp = o->weights_fp;
    lo->steps = o->steps; lo->seq = o->seq; lo->micro_batch = o->micro_batch; lo->accum = o->accum;
    lo->warmup = o->warmup;
    lo->lr = o->lr; lo->min_lr = o->min_lr; lo->wd = o->wd; lo->b1 = o->b1; lo->b2 = o->b2; lo->eps = o->eps;
    lo->clip = o->clip;
    lo->eval_every = o->eval_every; lo->eval_tokens = o->eval_tokens;
    lo->json = o->json; lo->quiet = o->quiet;
    lo->hbm = o->hbm;
    lo->out_dir = o->ckpt_dir; /* the loop's messages name the checkpoint folder */
    lo->resume_more = " --force"; /* the --out store, written at a stop too, is replaced by the resumed run */
    lo->save_every = o->save_every;
    lo->stop_after = o->stop_after;
}

/* ---- checkpoints (both runs) ------------------------------------------------
 *
 * The layout (ckpt_state.full): params = every trainable tensor's f32
 * weights in config order, then each GaLore projector (prows x r, as f32)
 * in the same order; m and v = each trainable tensor's moments in config
 * order (AdamW's: n values; GaLore's: nmom), then zeros up to n_params. The
 * resident and the streamed run write the same file for the same state. */
typedef struct ck_ops {
    /* tensor i's weights (n), moments (AdamW: n each, GaLore: nmom each), projector (GaLore) to / from host;
     * get fills the outputs that are not NULL (the file is written one of them at a time) */
    void (*get)(void *ctx, uint32_t i, size_t n, float *w, float *m, float *v, float *proj);
    void (*set)(void *ctx, uint32_t i, size_t n, const float *w, const float *m, const float *v, const float *proj);
    const tt_galore *(*gal)(void *ctx, uint32_t i); /* GaLore's state of i, or NULL (AdamW) */
} ck_ops;

static int trainable(const tt_config *c, const tt_tensor_desc *d) {
    return d->role != TT_ROLE_LM_HEAD && !(d->role == TT_ROLE_EMBED && c->tie_embeddings);
}

/* Tensor i's values in the file: k[0] weights, k[1] moments (each of m and v), k[2] projector; 0 when it is not
 * trained (then k is untouched). */
static int ck_tensor(const tt_config *c, const ck_ops *ops, void *ctx, uint32_t i, size_t k[3]) {
    tt_tensor_desc d;
    config_tensor(c, i, &d);
    if (!trainable(c, &d)) return 0;
    const tt_galore *g = ops->gal(ctx, i);
    k[0] = d.rows * d.cols;
    k[1] = g ? g->nmom : k[0];
    k[2] = g ? (size_t)g->prows * g->r : 0;
    return 1;
}

/* Values in params and in m (each) for cfg's trainable tensors; *nw: the weights' (where the projectors start);
 * mx (may be NULL): the most one tensor has of each kind (ck_tensor's k, at least 1): the buffers the file
 * passes through. */
static void ck_sizes(const tt_config *c, const ck_ops *ops, void *ctx, uint64_t *np, uint64_t *nm, uint64_t *nw,
                     size_t mx[3]) {
    uint64_t sum[3] = {0, 0, 0};
    size_t most[3] = {1, 1, 1}, k[3];
    for (uint32_t i = 0; i < config_n_tensors(c); i++)
        if (ck_tensor(c, ops, ctx, i, k))
            for (int j = 0; j < 3; j++) {
                sum[j] += k[j];
                most[j] = k[j] > most[j] ? k[j] : most[j];
            }
    *np = sum[0] + sum[2];
    *nm = sum[1];
    *nw = sum[0];
    if (mx) memcpy(mx, most, sizeof most);
}

static void ck_record(ckpt_state *st, const tt_full_opts *o, const tt_config *c, const tt_mix *mix, uint64_t np,
                      int step, uint64_t seen) {
    tt_train_opts lo;
    loop_opts(o, &lo);
    train_ckpt_fill(st, &lo, c, NULL, np, mix, step, seen);
    st->optim = (uint32_t)o->optim;
    if (o->optim == FULL_OPTIM_GALORE) {
        st->galore_rank = (uint32_t)o->galore.rank;
        st->galore_every = (uint32_t)o->galore.update_every;
        st->galore_scale = o->galore.scale;
    }
}

/* Written in the file's order a tensor at a time, never gathered whole (12 bytes a parameter of host memory
 * otherwise, beside the host arena that already holds them): the weights, the GaLore projectors, m, v. */
static int ck_save(const tt_full_opts *o, const tt_config *c, const tt_mix *mix, const ck_ops *ops, void *ctx,
                   int step, uint64_t seen) {
    uint64_t np, nm, nw;
    size_t mx[3];
    ck_sizes(c, ops, ctx, &np, &nm, &nw, mx);
    if (mkdir(o->ckpt_dir, 0755) != 0 && errno != EEXIST)
        return TT_FAIL(-errno, "cannot create the checkpoint folder %s: %s", o->ckpt_dir, strerror(errno));
    const size_t big = mx[0] > mx[1] ? (mx[0] > mx[2] ? mx[0] : mx[2]) : (mx[1] > mx[2] ? mx[1] : mx[2]);
    float *buf = malloc(big * sizeof(float));
    if (!buf)
        return TT_FAIL(-ENOMEM, "out of memory writing the checkpoint to %s (one tensor's %zu values)", o->ckpt_dir,
                       big);
    be_synchronize(); /* every update and write-back of the step is done */
    ckpt_state st;
    ck_record(&st, o, c, mix, np, step, seen);
    ckpt_writer *wr;
    int rc = ckpt_writer_open(&wr, o->ckpt_dir, &st);
    /* pass 0: weights; 1: projectors; 2: m; 3: v (each then zeros up to n_params) */
    for (int pass = 0; pass < 4 && rc == 0; pass++) {
        uint64_t wrote = 0;
        size_t k[3];
        for (uint32_t i = 0; i < config_n_tensors(c) && rc == 0; i++) {
            if (!ck_tensor(c, ops, ctx, i, k)) continue;
            const size_t kp = k[pass == 0 ? 0 : pass == 1 ? 2 : 1]; /* this pass's values of the tensor */
            if (!kp) continue;
            ops->get(ctx, i, k[0], pass == 0 ? buf : NULL, pass == 2 ? buf : NULL, pass == 3 ? buf : NULL,
                     pass == 1 ? buf : NULL);
            rc = ckpt_writer_put(wr, buf, kp * sizeof(float));
            wrote += kp;
        }
        if (rc == 0 && pass >= 2) rc = ckpt_writer_zeros(wr, (np - wrote) * sizeof(float));
        TT_ASSERT(rc || pass != 1 || wrote == np - nw);
        TT_ASSERT(rc || pass < 2 || wrote == nm);
    }
    free(buf);
    return rc ? rc : ckpt_writer_close(wr);
}

/* Restores o->resume_dir into the run: *step and *seen where it stopped. Read a tensor at a time (its weights,
 * moments and projector at once: set takes them together), after the whole file's checksum. */
static int ck_load(const tt_full_opts *o, const tt_config *c, tt_mix *mix, const ck_ops *ops, void *ctx, int *step,
                   uint64_t *seen) {
    ckpt_state st, want;
    ckpt_reader *rd;
    int rc = ckpt_reader_open(&rd, o->resume_dir, &st);
    if (rc) return rc;
    uint64_t np, nm, pj;
    size_t mx[3];
    ck_sizes(c, ops, ctx, &np, &nm, &pj, mx);
    ck_record(&want, o, c, mix, np, 0, 0);
    rc = train_ckpt_match(o->resume_dir, &st, &want, mix);
    float *W = NULL, *M = NULL, *V = NULL, *PJ = NULL;
    if (rc == 0) {
        W = malloc(mx[0] * 4), M = malloc(mx[1] * 4), V = malloc(mx[1] * 4), PJ = malloc(mx[2] * 4);
        if (!W || !M || !V || !PJ)
            rc = TT_FAIL(-ENOMEM, "out of memory reading the checkpoint %s (%.1f MiB for one tensor's weights, "
                         "moments and projector)", o->resume_dir, (mx[0] + 2 * mx[1] + mx[2]) * 4 / 1048576.0);
    }
    uint64_t w = 0, mo = 0;
    size_t k[3];
    for (uint32_t i = 0; i < config_n_tensors(c) && rc == 0; i++) {
        if (!ck_tensor(c, ops, ctx, i, k)) continue;
        rc = ckpt_reader_get(rd, 0, w * 4, W, k[0] * 4);
        if (rc == 0) rc = ckpt_reader_get(rd, 1, mo * 4, M, k[1] * 4);
        if (rc == 0) rc = ckpt_reader_get(rd, 2, mo * 4, V, k[1] * 4);
        if (rc == 0 && k[2]) rc = ckpt_reader_get(rd, 0, pj * 4, PJ, k[2] * 4);
        if (rc == 0) ops->set(ctx, i, k[0], W, M, V, ops->gal(ctx, i) ? PJ : NULL);
        w += k[0];
        mo += k[1];
        pj += k[2];
    }
    if (rc == 0) {
        *step = (int)st.step;
        *seen = st.tokens_seen;
        train_ckpt_restore_mix(&st, mix);
    }
    free(W); free(M); free(V); free(PJ);
    ckpt_reader_close(rd);
    return rc;
}

/* A projector between f32 (the file) and tt_real (the state). */
static void proj_get(const tt_galore *g, float *out) {
    size_t k = (size_t)g->prows * g->r;
    tt_real *t = tt_xmalloc(k * sizeof *t);
    galore_get_projector(g, t);
    for (size_t j = 0; j < k; j++) out[j] = (float)t[j];
    free(t);
}
static void proj_set(tt_galore *g, const float *in) {
    size_t k = (size_t)g->prows * g->r;
    tt_real *t = tt_xmalloc(k * sizeof *t);
    for (size_t j = 0; j < k; j++) t[j] = in[j];
    galore_set_projector(g, t);
    free(t);
}

/* The resident run's side. */
static void res_get(void *ctx, uint32_t i, size_t n, float *w, float *m, float *v, float *proj) {
    full_state *st = ctx;
    if (w) be_to_host(w, st->P + st->off[i], n * 4);
    if (st->gal[i].m) {
        galore_get_moments(&st->gal[i], m, v);
        if (proj) proj_get(&st->gal[i], proj);
        return;
    }
    if (m) be_to_host(m, st->m + st->moff[i], n * 4);
    if (v) be_to_host(v, st->v + st->moff[i], n * 4);
}
static void res_set(void *ctx, uint32_t i, size_t n, const float *w, const float *m, const float *v,
                    const float *proj) {
    full_state *st = ctx;
    be_to_device(st->P + st->off[i], w, n * 4);
    if (i == st->embed_i && st->embed_host) memcpy(st->embed_host, w, n * 4); /* the copy it is gathered from */
    if (st->gal[i].m) {
        proj_set(&st->gal[i], proj);
        galore_set_moments(&st->gal[i], m, v);
        return;
    }
    be_to_device(st->m + st->moff[i], m, n * 4);
    be_to_device(st->v + st->moff[i], v, n * 4);
}
static const tt_galore *res_gal(void *ctx, uint32_t i) {
    full_state *st = ctx;
    return st->gal[i].m ? &st->gal[i] : NULL;
}
static const ck_ops res_ck = {res_get, res_set, res_gal};

/* Every source's tokens against c (the data checks both runs make). */
static int check_mix(const tt_mix *mix, const tt_config *c, int S) {
    int rc = 0;
    for (int i = 0; i < mix->n && rc == 0; i++) {
        char tw[1100], vw[1100], nb[32];
        const char *of = mix->n > 1 ? " of " : "", *name = mix->n > 1 ? train_mix_name(mix, i, nb, sizeof nb) : "";
        snprintf(tw, sizeof tw, "training data%s%s", of, name);
        snprintf(vw, sizeof vw, "validation data%s%s", of, name);
        if ((rc = check_tokens(&mix->train[i], c, tw, S)) == 0) rc = check_tokens(&mix->val[i], c, vw, 0);
    }
    return rc;
}

/* After the trained store's write (rc): "wrote OUT", or the failure with what stands and the way on (the last
 * step's checkpoint, when there are checkpoints: a resume at that step makes no step and writes the store). */
static int out_written(const tt_full_opts *o, const tt_train_result *res, int rc) {
    if (rc == 0 && !o->quiet && !o->json) printf("wrote %s\n", o->out_path);
    if (rc && o->ckpt_dir && res->steps_done > 0)
        rc = TT_FAIL(rc, "%s; the checkpoint of step %d in %s is whole: once the store can be written, run the same "
                     "command with --resume %s", tt_lasterr(), res->steps_done, o->ckpt_dir, o->ckpt_dir);
    return rc;
}

/* The trained store to --out: after the run (rc 0), or where only the last step's checkpoint failed
 * (res->failed_save == --steps: a disk filled during the run), all the same — the model trained to the end is not
 * thrown away for want of its checkpoint; the failure is still the run's outcome, said with what was written. */
static int write_out(const tt_full_opts *o, const tt_train_result *res, int rc, const tt_config *c,
                     const tier_write_opts *wopt, store_fill_fn fill, void *ctx) {
    if (rc == 0) return out_written(o, res, store_write(o->out_path, c, wopt, fill, ctx));
    if (res->failed_save != o->steps) return rc;
    char why[1024];
    snprintf(why, sizeof why, "%s", tt_lasterr());
    int wrc = store_write(o->out_path, c, wopt, fill, ctx);
    if (wrc) return TT_FAIL(rc, "%s; writing the trained store %s failed too: %s", why, o->out_path, tt_lasterr());
    if (!o->quiet && !o->json) printf("wrote %s\n", o->out_path);
    return TT_FAIL(rc, "%s; the model trained to step %d is in %s all the same", why, o->steps, o->out_path);
}

static int full_save(void *ctx, int step, uint64_t seen, int *said) {
    (void)said;
    full_ctx *fc = ctx;
    return ck_save(fc->o, &fc->st->cfg, fc->mix, &res_ck, fc->st, step, seen);
}

static void print_header(const tt_full_opts *o, const tt_config *c, size_t n, const char *where) {
    if (o->quiet || o->json) return;
    printf("full training of %s: %zu trainable parameters (lm_head%s frozen), %d steps of %lld tokens%s\n",
           o->model_path, n, c->tie_embeddings ? " and the tied embedding" : "", o->steps,
           (long long)o->accum * o->micro_batch * o->seq, where);
    uint64_t ob, ab, wb;
    fulltrain_optim_bytes(c, o, &ob, &ab, &wb);
    char x[32], y[32], z[32];
    if (o->optim == FULL_OPTIM_GALORE)
        printf("optimizer: GaLore rank %d (projector every %d steps, scale %g) on %d of %d projections, AdamW on "
               "the rest: state %s %s, %.1f%% of AdamW's %s (and a %s workspace)\n", o->galore.rank,
               o->galore.update_every, (double)o->galore.scale, galore_count(c, o), linear_count(c),
               tt_fmt_bytes(ob, x, sizeof x), o->stream ? "in the host arena" : "on the device",
               100.0 * (double)ob / (double)ab, tt_fmt_bytes(ab, y, sizeof y), tt_fmt_bytes(wb, z, sizeof z));
    else
        printf("optimizer: AdamW, state %s%s\n", tt_fmt_bytes(ab, y, sizeof y),
               o->stream ? " in the host arena (each layer's on the device for its step)" : " on the device");
    if (o->teacher_path)
        printf("distillation from %s: loss (1 - %g) cross-entropy + %g x %g^2 KL(teacher || model)\n",
               o->teacher_path, (double)o->distill_weight, (double)o->distill_weight, (double)o->distill_temp);
}

static int fullstream_run(const tt_full_opts *o, tt_mix *mix, tt_train_result *res);

/* 0 when --out's file system has room for the trained store (about --model's size: the same dtypes, a layer lz4
 * only where that is smaller) and --ckpt's for the run's checkpoints of np values (ck_sizes: the weights and GaLore's
 * projectors, then AdamW's m and v padded to as many), beside what each holds now: a checkpoint is written beside
 * the last one and replaces it by a rename, so a --ckpt with none yet needs room for two once the run (from step
 * start) saves more than once; both on one file system, the most they hold at once. Else -ENOSPC with the sentence:
 * before the first step, not after the last (a run whose store cannot be written has trained for nothing). */
static int full_room(const tt_full_opts *o, uint64_t np, int start) {
    struct stat sb;
    const uint64_t mib = (uint64_t)1 << 20, store = (stat(o->model_path, &sb) == 0 ? (uint64_t)sb.st_size : 0) + mib,
                   ck = o->ckpt_dir ? 3 * np * sizeof(float) + mib : 0;
    const int has = o->ckpt_dir && ckpt_exists(o->ckpt_dir),
              /* a save at a multiple of --save-every before the last step, and the last step's */
              twice = o->save_every > 0 && (start / o->save_every + 1) * o->save_every < o->steps;
    /* free bytes the checkpoints take at their most (a new one beside the last), and after the run */
    const uint64_t ck_peak = !has && twice ? 2 * ck : ck, ck_end = has ? 0 : ck;
    uint64_t oa, od, ca = 0, cd = 0;
    const int ot = atomic_fs_room(o->out_path, 0, &oa, &od) == 0,
              ct = o->ckpt_dir && atomic_fs_room(o->ckpt_dir, 1, &ca, &cd) == 0;
    const uint64_t both = ck_peak > ck_end + store ? ck_peak : ck_end + store;
    char a[32], b[32];
    if (ot && ct && od == cd && oa < both)
        return TT_FAIL(-ENOSPC, "--out %s and --ckpt %s are on one file system with %s free, but the trained store "
                       "and the run's checkpoints take %s; free some space or give one of them another place",
                       o->out_path, o->ckpt_dir, tt_fmt_bytes(oa, a, sizeof a), tt_fmt_bytes(both, b, sizeof b));
    if (ot && oa < store)
        return TT_FAIL(-ENOSPC, "--out %s has %s free, but the trained store takes %s; free some space or give "
                       "another --out", o->out_path, tt_fmt_bytes(oa, a, sizeof a), tt_fmt_bytes(store, b, sizeof b));
    if (ct && ca < ck_peak)
        return TT_FAIL(-ENOSPC, "--ckpt %s has %s free, but %s (the weights and the optimizer state) takes %s; free "
                       "some space or give another --ckpt", o->ckpt_dir, tt_fmt_bytes(ca, a, sizeof a),
                       ck_peak > ck ? "a checkpoint beside the last one" : "a checkpoint",
                       tt_fmt_bytes(ck_peak, b, sizeof b));
    return 0;
}

int fulltrain_run(const tt_full_opts *o, const tt_tokens *train, const tt_tokens *val, tt_train_result *res) {
    memset(res, 0, sizeof *res);
    res->first_val = res->last_val = res->first_loss = res->last_loss = NAN;
    int crc = store_check_output("--out", o->out_path, o->model_path);
    if (crc) return crc;
    tt_mix one, *mix = o->mix;
    if (!mix) {
        train_mix_single(&one, train, val);
        mix = &one;
    } else TT_ASSERT(!train && !val); /* the mixture's sources are the data */
    if (o->stream) return fullstream_run(o, mix, res);
    full_state st;
    int rc = state_load(&st, o->model_path, o);
    if (rc == -ENOMEM && o->hbm) {
        /* it does not fit resident: stream the layers (their master weights and moments in the host arena) */
        char hb[32];
        if (!o->quiet && !o->json)
            printf("full training: the resident run does not fit --hbm %s; streaming the layers (their f32 master "
                   "weights and optimizer state in the host arena)\n", tt_fmt_bytes(o->hbm, hb, sizeof hb));
        tt_full_opts so = *o;
        so.stream = 1; /* as if asked for: the header then says where the optimizer state lives */
        return fullstream_run(&so, mix, res);
    }
    if (rc) return rc;
    const tt_config *c = &st.cfg;
    if ((rc = check_mix(mix, c, o->seq))) {
        state_free(&st);
        return rc;
    }
    int start = 0;
    uint64_t seen = 0;
    if (o->resume_dir && (rc = ck_load(o, c, mix, &res_ck, &st, &start, &seen))) {
        state_free(&st);
        return rc;
    }
    uint64_t np, nm, nw;
    ck_sizes(c, &res_ck, &st, &np, &nm, &nw, NULL);
    if ((rc = full_room(o, np, start))) {
        state_free(&st);
        return rc;
    }
    print_header(o, c, st.n, "");
    if (o->resume_dir && !o->quiet && !o->json) printf("resumed from %s at step %d\n", o->resume_dir, start);
    tt_train_opts lo;
    loop_opts(o, &lo);
    full_ctx fc = {&st, o, mix};
    static const tt_loop_ops ops = {full_step, full_eval, full_save}, ops_nosave = {full_step, full_eval, NULL};
    rc = train_loop(&lo, o->ckpt_dir ? &ops : &ops_nosave, &fc, mix, start, seen, res);
    /* lz4 where it saves space: sparse layers shrink, dense ones stay raw; every weight was trained, so the store
     * is no longer its source model (no source record) */
    tier_write_opts wopt = {st.dtypes, st.has_map ? &st.map : NULL, 1, NULL};
    rc = write_out(o, res, rc, c, &wopt, fill_out, &st);
    state_free(&st);
    return rc;
}

/* ---- streamed full training ---------------------------------------------------
 *
 * The layers come through sched/stream.h's weight provider with
 * req.trainable: the host cache holds every layer's f32 master extent; a
 * layer is loaded into a device slot, trained there, and written back. The
 * step is exec.c's block schedule (forward over the layers for all K
 * micro-batches, the head, backward from the top), with weight gradients:
 * each layer's into one device buffer laid out like its master extent,
 * consumed by the layer's optimizer step right after its backward (its AdamW
 * moments or GaLore states come from the host arena and go back), then the
 * slot goes back to the cache. The final
 * norm is stepped after the head (on the device: it is small), the
 * embedding after layer 0 (on the host, where it is gathered: its master
 * weights, moments and gradient live in the host arena). The arithmetic is
 * the resident run's, tensor by tensor (tensor_step), so the trained model is
 * the same bit for bit (tests/test_fullstream.c). */

typedef struct fs_cfg {
    const tt_full_opts *o; /* valid while the run lasts */
} fs_cfg;

typedef struct fstream {
    const tt_full_opts *o;
    const tt_mix *mix;
    tt_plan plan;
    tt_stream *st;
    tt_model *m;
    tt_lora lora;                 /* empty: model_layer_* take a LoRA slot */
    tt_ws *ws;
    tt_config cfg;
    int L, K, T, H;
    uint32_t nt;
    tt_real *lg;                  /* device: one layer's weight gradients, laid out like its extent (values) */
    float *lm, *lv;               /* device: one layer's AdamW moments (of the tensors AdamW steps) */
    float *m_host, *v_host;       /* host arena: every layer's AdamW moments, layer after layer */
    uint64_t *moff;               /* [L + 1]: where layer l's moments start in m_host / v_host (values) */
    uint64_t *toff;               /* [nt]: tensor i's moments in m_host / v_host, or UINT64_MAX (GaLore's) */
    uint64_t *mvo;                /* [nt]: a layer tensor's values' offset in its layer's master extent */
    tt_galore *gal;               /* [nt]: GaLore's state of tensor i in the host arena (gal[i].m == 0: none) */
    tt_galore_ws gws;             /* device: GaLore's workspace */
    tt_real *gproj;               /* device: one matrix's GaLore state during its step */
    float *gmom;
    float *fn, *fn_m, *fn_v;      /* device: the final norm's master weights and moments */
    tt_real *fn_g;                /* device: its gradient */
    float *emb, *emb_m, *emb_v;   /* host arena: the embedding's master weights and moments (untied) */
    tt_real *emb_g;               /* host arena: its gradient */
    int32_t *tgt_host;            /* pinned: the step's targets and loss weights (the head uploads from here) */
    tt_real *wt_host;
    tt_wgrad wg;
    tt_exec *teacher;             /* distillation: the teacher on its own stream (frozen, no adapter) */
    tt_full_opts so;              /* o with the model's budgets (what the teacher's plan leaves): the plan's carve
                                   * reads it */
    void *thid;                   /* host arena: its last hidden states of the step's K micro-batches */
} fstream;

/* Values in layer l's extent (f32). */
/* Values in layer l's f32 master extent (sched/stream.h, stream_master_layout). */
static uint64_t layer_vals(const tier_store *s, int l) { return stream_master_layout(s, l, NULL) / 4; }

/* A tt_alloc that only measures (galore_init's layout before its state is
 * bound to the host arena). */
static void *fs_measure_fn(void *ctx, size_t bytes, const char *label) {
    (void)ctx; (void)bytes; (void)label;
    return (void *)(uintptr_t)16;
}

static int fs_carve(const tt_dev_user *u, const tier_store *s, const tt_plan *p, const tt_alloc *dev,
                    const tt_alloc *host, void *keep) {
    fs_cfg fc;
    memcpy(&fc, u->cfg, sizeof fc);
    const tt_full_opts *o = fc.o;
    fstream *f = keep;
    const tt_config *c = tier_config(s);
    int L = (int)c->n_layers, gm = 0, gn = 0;
    size_t H = c->hidden, T = (size_t)p->req.B * p->req.seq, kt = (size_t)p->req.K * T, gmax = 0;
    uint64_t mx = 0, amx = 0, tot = 0;
    int rc = 0;
    for (int l = 0; l < L; l++) { /* every layer's AdamW moments; GaLore's states in the host arena */
        const tier_extent *x = tier_extent_at(s, TT_EXTENT_LAYER(l));
        uint64_t n = layer_vals(s, l), a = 0;
        if (n > mx) mx = n;
        if (f) f->moff[l] = tot;
        for (uint32_t i = x->first_tensor; i < x->first_tensor + x->n_tensors; i++) {
            tt_tensor_desc d;
            config_tensor(c, i, &d);
            if (!galore_owns(o, &d)) {
                if (f) f->toff[i] = tot + a;
                a += d.rows * d.cols;
                continue;
            }
            if (f) f->toff[i] = UINT64_MAX;
            if ((int)d.rows > gm) gm = (int)d.rows;
            if ((int)d.cols > gn) gn = (int)d.cols;
            size_t sb = galore_state_bytes((int)d.rows, (int)d.cols, &o->galore);
            if (sb > gmax) gmax = sb;
            tt_galore g;
            tt_alloc meas = {fs_measure_fn, NULL, 1};
            if ((rc = galore_init(&g, (int)d.rows, (int)d.cols, &o->galore, i, &meas))) return rc;
            tt_real *pj = host->fn(host->ctx, (size_t)g.prows * g.r * sizeof(tt_real), "GaLore states");
            float *mm = host->fn(host->ctx, 2 * g.nmom * sizeof(float), "GaLore states");
            if (!pj || !mm) return TT_FAIL(-ENOMEM, "out of host memory for the GaLore states");
            if (f) {
                galore_bind(&g, pj, mm, mm + g.nmom);
                f->gal[i] = g;
            }
        }
        if (a > amx) amx = a;
        tot += a;
    }
    if (f) f->moff[L] = tot;
    tt_lora_cfg lc = {1, 1.f, 0.f, 0, 0};
    /* a teacher's lm_head chunks go through the staging buffer (its own plan keeps lm_head on the host) */
    tt_ws_opts wo = {.B = p->req.B, .seq = p->req.seq,
                     .head_streamed = !p->head_on_device || c->tie_embeddings || o->teacher_path, .host = host,
                     .with_distill = o->teacher_path != NULL};
    tt_ws *ws = NULL;
    rc = ws_create(&ws, c, &lc, &wo, dev);
    if (rc) return rc;
    if (f) f->ws = ws;
    else ws_free(ws);
    if (o->teacher_path) {
        void *th = host->fn(host->ctx, kt * H * sizeof(tt_real), "teacher's hidden states");
        if (!th) return TT_FAIL(-ENOMEM, "out of host memory for the teacher's hidden states");
        if (f) f->thid = th;
    }
    void *lg = dev->fn(dev->ctx, mx * sizeof(tt_real), "weight gradients (one layer)");
    void *lm = dev->fn(dev->ctx, (amx ? amx : 1) * 4, "AdamW moments (one layer)");
    void *lv = dev->fn(dev->ctx, (amx ? amx : 1) * 4, "AdamW moments (one layer)");
    void *fn = dev->fn(dev->ctx, H * 4 * 3, "final norm (weights, moments)");
    void *fg = dev->fn(dev->ctx, H * sizeof(tt_real), "final norm (weights, moments)");
    void *gs = gmax ? dev->fn(dev->ctx, gmax, "GaLore state (one matrix)") : NULL;
    if (gm && (rc = galore_ws_init(f ? &f->gws : &(tt_galore_ws){0}, gm, gn, &o->galore, dev))) return rc;
    void *mh = host->fn(host->ctx, (tot ? tot : 1) * 4, "AdamW moments (every layer)");
    void *vh = host->fn(host->ctx, (tot ? tot : 1) * 4, "AdamW moments (every layer)");
    size_t E = c->tie_embeddings ? 0 : (size_t)c->vocab * H; /* a tied embedding is frozen */
    void *em = E ? host->fn(host->ctx, E * 4 * 3, "embedding (f32 weights, moments)") : NULL;
    void *eg = E ? host->fn(host->ctx, E * sizeof(tt_real), "embedding gradient") : NULL;
    void *tg = host->fn(host->ctx, kt * sizeof(int32_t), "targets and loss weights");
    void *wt = host->fn(host->ctx, kt * sizeof(tt_real), "targets and loss weights");
    if (!lg || !lm || !lv || !fn || !fg || (gmax && !gs) || !mh || !vh || (E && (!em || !eg)) || !tg || !wt)
        return TT_FAIL(-ENOMEM, "out of memory carving full training's regions");
    if (f) {
        f->lg = lg; f->lm = lm; f->lv = lv;
        f->fn = fn; f->fn_m = f->fn + H; f->fn_v = f->fn + 2 * H; f->fn_g = fg;
        f->gproj = gs;
        f->m_host = mh; f->v_host = vh;
        f->emb = em; f->emb_m = em ? f->emb + E : NULL; f->emb_v = em ? f->emb + 2 * E : NULL; f->emb_g = eg;
        f->tgt_host = tg; f->wt_host = wt;
    }
    return 0;
}

static void fs_free(fstream *f) {
    if (!f) return;
    exec_free(f->teacher);
    stream_free(f->st); /* synchronises first */
    if (f->ws) ws_free(f->ws);
    lora_free(&f->lora);
    model_free(f->m);
    free(f->moff);
    free(f->toff);
    free(f->mvo);
    for (uint32_t i = 0; f->gal && i < f->nt; i++)
        if (f->gal[i].m) galore_free(&f->gal[i]); /* bound: leaves the arena's buffers alone */
    free(f->gal);
    if (f->gws.d0) galore_ws_free(&f->gws); /* the arena's device part stays; its host part was malloc'ed */
    free(f);
}

/* Where layer tensor i's values start in its layer's master extent, laid out once by fs_create (the layer
 * gradient buffer shares the layout). */
static uint64_t tensor_at(const fstream *f, uint32_t i) { return f->mvo[i]; }

/* Points the weight-gradient slots of layer l into the layer gradient buffer. */
static void fs_bind_wgrad(fstream *f, int l) {
    const tier_store *s = stream_store(f->st);
    const tier_extent *x = tier_extent_at(s, TT_EXTENT_LAYER(l));
    int nn = 0;
    for (uint32_t i = x->first_tensor; i < x->first_tensor + x->n_tensors; i++) {
        tt_tensor_desc d;
        config_tensor(&f->cfg, i, &d);
        if (d.role == TT_ROLE_LINEAR) f->wg.proj[l][d.proj] = f->lg + tensor_at(f, i);
        else f->wg.norm[l][nn++] = f->lg + tensor_at(f, i); /* input_layernorm first, as model_bind_layer */
    }
}

/* A distillation teacher's plan request on its own stream: forward passes of the student's micro-batches,
 * no adapter, f32 activations (the resident teacher's), lm_head on the host (the student's head reads its
 * chunks through its staging buffer). */
static void teacher_req(const tt_full_opts *o, tt_plan_req *req) {
    memset(req, 0, sizeof *req);
    req->B = o->micro_batch; req->seq = o->seq; req->K = o->accum;
    req->lm_head = PLAN_HEAD_HOST;
    tt_lora_cfg lc = {1, 1.f, 0.f, 0, 0};
    exec_user(&req->user, &lc, 0);
}

void fulltrain_plan_req(const tt_full_opts *o, tt_plan_req *req) {
    memset(req, 0, sizeof *req);
    req->hbm = o->hbm;
    req->host = o->host;
    req->B = o->micro_batch; req->seq = o->seq; req->K = o->accum;
    req->trainable = 1;
    fs_cfg fc = {o};
    _Static_assert(sizeof fc <= PLAN_USER_CFG, "fs_cfg must fit tt_dev_user.cfg");
    req->user.carve = fs_carve;
    memcpy(req->user.cfg, &fc, sizeof fc);
}

int fulltrain_plan(const tt_full_opts *o, tt_plan *p, uint64_t *min_dev, uint64_t *min_host) {
    tier_store *s = NULL;
    int rc = tier_open(&s, o->model_path);
    if (rc) return rc;
    tt_plan_req req;
    fulltrain_plan_req(o, &req);
    if (min_dev) plan_minimum(s, &req, min_dev, min_host);
    rc = p ? plan_make(s, &req, p) : 0;
    tier_close(s);
    return rc;
}

int fulltrain_plans(const tier_store *s, const tt_full_opts *o, const tt_plan_req *hints, tt_full_opts *so,
                    tt_plan *tp, tt_plan *p) {
    *so = *o;
    int rc = 0;
    uint64_t tdev = 0, thost = 0; /* the teacher's smallest device arena and host bytes */
    if (o->teacher_path) {
        tier_store *ts = NULL;
        if ((rc = tier_open(&ts, o->teacher_path)) == 0) {
            tt_plan_req tr;
            teacher_req(o, &tr);
            uint64_t total = 0;
            plan_minimum(ts, &tr, &tdev, &thost);
            plan_dev_fits(tdev, 0, &total);
            /* a budget short of the teacher alone: refused below with what both need (the teacher's figure alone
             * would be refused again), the model's share of the other budget taken as if the teacher fit */
            int dev_ok = !o->hbm || total < o->hbm, host_ok = !o->host || thost < o->host;
            if (o->hbm && dev_ok) { tr.hbm = total; so->hbm = o->hbm - tdev; }
            if (o->host && host_ok) { tr.host = thost; so->host = o->host - thost; }
            rc = dev_ok && host_ok ? plan_make(ts, &tr, tp) : -ENOSPC;
            tier_close(ts);
        }
    }
    tt_plan_req req; /* the model's, in what the teacher leaves */
    fulltrain_plan_req(so, &req);
    if (hints) {
        req.host_avail = hints->host_avail;
        /* with a --teacher the callers give an --hbm within what the GPU can give (train --full, plan --full): the
         * teacher's share and the model's are taken from it above */
        req.dev_avail = o->teacher_path ? 0 : hints->dev_avail;
        if (o->teacher_path && rc == 0 && req.host_avail) { /* the teacher's plan is held beside the model's */
            uint64_t t = plan_ram_bytes(tp);
            req.host_avail = t < req.host_avail ? req.host_avail - t : 1;
        }
        req.what_if = hints->what_if;
        req.io_gbps = hints->io_gbps;
        req.gflops = hints->gflops;
        req.lm_head = hints->lm_head;
    }
    if (rc == 0) rc = plan_make(s, &req, p);
    if (rc == -ENOMEM && hints && req.host_avail != hints->host_avail) {
        char tb[32];
        rc = TT_FAIL(rc, "%s (the memory available beside the teacher's plan, which takes %s)", tt_lasterr(),
                     tt_fmt_bytes(plan_ram_bytes(tp), tb, sizeof tb));
    }
    if (rc == -ENOSPC && o->teacher_path && (o->hbm || o->host)) { /* the budget given, both */
        uint64_t sdev = 0, shost = 0, need = 0;
        plan_minimum(s, &req, &sdev, &shost);
        plan_dev_fits(sdev + tdev, 0, &need); /* the model's smallest plan and the teacher's */
        char a[32], b[32];
        if (o->hbm && need > o->hbm)
            return TT_FAIL(-ENOSPC, "--hbm %s is too small for full training with a --teacher: the teacher's smallest "
                           "plan and the model's together need --hbm %s; raise --hbm or lower --micro-batch / --seq",
                           tt_fmt_bytes(o->hbm, a, sizeof a), tt_fmt_bytes_up(tt_align_up(need, 1 << 20), b, sizeof b));
        if (!o->host) return rc; /* the host memory available now, not a --host: the planner's own sentence */
        /* --host short: the model's least host memory under the device budget it has (no layer cached in host
         * memory), beside the teacher's smallest plan */
        tt_plan_req least = req;
        tt_plan lp;
        least.host = 0;
        least.no_host_cache = 1;
        uint64_t mhost = plan_make(s, &least, &lp) == 0 ? lp.host_bytes : shost;
        return TT_FAIL(-ENOSPC, "--host %s is too small for full training with a --teacher: the teacher's smallest "
                       "plan and the model's together need --host %s; raise --host (or --hbm, so fewer activations "
                       "spill)", tt_fmt_bytes(o->host, a, sizeof a),
                       tt_fmt_bytes_up(tt_align_up(thost + mhost, 1 << 20), b, sizeof b));
    }
    return rc;
}

void fulltrain_stream_bytes(const struct tier_store *s, const tt_full_opts *o, const tt_plan *p, uint64_t *master,
                            uint64_t *h2d, uint64_t *d2h) {
    const tt_config *c = tier_config(s);
    int L = (int)c->n_layers;
    uint64_t m = 0;
    for (int l = 0; l < L; l++) m += stream_master_layout(s, l, NULL);
    uint64_t ob, ab, wb;
    fulltrain_optim_bytes(c, o, &ob, &ab, &wb);
    int loads = p->slots >= L ? 0 : 2 * L - 2 * p->slots; /* predict()'s Belady count (sched/plan.c) */
    *master = m;
    /* every layer's state comes in for its step and goes back; every layer is written back */
    *h2d = (uint64_t)((double)loads * (double)m / L) + ob;
    *d2h = m + ob;
}

/* ms: o->model_path as the caller opened it (its stream reopens that file, whatever happens to the path). */
static int fs_create(fstream **out, const tt_full_opts *o, const tier_store *ms, const tt_config *c) {
    *out = NULL;
    fstream *f = tt_xcalloc(1, sizeof *f);
    f->o = o;
    f->cfg = *c;
    f->L = (int)c->n_layers;
    f->nt = config_n_tensors(c);
    f->moff = tt_xcalloc((size_t)f->L + 1, sizeof *f->moff);
    f->toff = tt_xcalloc(f->nt, sizeof *f->toff);
    f->mvo = tt_xcalloc(f->nt, sizeof *f->mvo);
    f->gal = tt_xcalloc(f->nt, sizeof *f->gal);
    f->so = *o; /* the student's budgets: what the teacher's smallest plan leaves */
    tt_plan tp;
    tt_plan_req hints = {0}; /* what plan --full gets from the same flags: train plans as plan does */
    hints.host_avail = o->host_avail;
    hints.dev_avail = o->dev_avail;
    hints.lm_head = o->lm_head;
    int rc = fulltrain_plans(ms, o, &hints, &f->so, &tp, &f->plan);
    if (rc == 0) rc = stream_create(&f->st, ms, &f->plan, f, NULL);
    if (rc == 0 && o->teacher_path) {
        tier_store *ts = NULL;
        if ((rc = tier_open(&ts, o->teacher_path)) == 0) rc = exec_create(&f->teacher, ts, &tp, 0, NULL);
        tier_close(ts);
    }
    if (rc) { fs_free(f); return rc; }
    tt_lora_cfg lc = {1, 1.f, 0.f, 0, 0};
    if ((rc = lora_init(&f->lora, c, &lc, 0))) { fs_free(f); return rc; }
    f->m = exec_stream_model(f->st);
    f->K = o->accum;
    f->T = o->micro_batch * o->seq;
    f->H = (int)c->hidden;
    const tier_store *s = stream_store(f->st);
    for (int l = 0; l < f->L; l++) { /* the layers' master layouts, once */
        const tier_extent *x = tier_extent_at(s, TT_EXTENT_LAYER(l));
        uint64_t offs[64];
        TT_ASSERT(x->n_tensors <= 64);
        stream_master_layout(s, l, offs);
        for (uint32_t j = 0; j < x->n_tensors; j++) f->mvo[x->first_tensor + j] = offs[j] / 4;
    }
    /* the final norm and the embedding: f32 master copies */
    uint32_t edt;
    const void *eblob = stream_embed(f->st, &edt);
    size_t E = (size_t)c->vocab * c->hidden;
    float *hn = tt_xmalloc(c->hidden * sizeof *hn);
    int fni = tier_find_tensor(s, "model.norm.weight");
    TT_ASSERT(fni >= 0);
    const void *hext = NULL, *hnorm = NULL;
    hext = stream_head(f->st, &hnorm);
    if (hnorm) be_to_host(hn, hnorm, c->hidden * 4);
    else be_to_host(hn, (const uint8_t *)hext + tier_tensor_at(s, (uint32_t)fni)->offset, c->hidden * 4);
    be_to_device(f->fn, hn, c->hidden * 4);
    free(hn);
    float *z = tt_xcalloc(2 * c->hidden, sizeof *z); /* its moments start at zero */
    be_to_device(f->fn_m, z, 2 * c->hidden * 4);
    free(z);
    model_bind_head_norm(f->m, f->fn);
    if (f->emb) {
        for (size_t i = 0; i < E; i++)
            f->emb[i] = edt == TT_DTYPE_F32 ? ((const float *)eblob)[i] : bf16_to_f32(((const uint16_t *)eblob)[i]);
        memset(f->emb_m, 0, 2 * E * sizeof *f->emb_m);
        model_bind_embed(f->m, f->emb, TT_DTYPE_F32);
        f->wg.embed = f->emb_g;
    }
    memset(f->m_host, 0, f->moff[f->L] * sizeof *f->m_host);
    memset(f->v_host, 0, f->moff[f->L] * sizeof *f->v_host);
    for (uint32_t i = 0; i < f->nt; i++) /* GaLore's moments start at zero (no projector yet) */
        if (f->gal[i].m) memset(f->gal[i].mom_m, 0, 2 * f->gal[i].nmom * sizeof(float));
    f->wg.final_norm = f->fn_g;
    model_set_wgrad(f->m, &f->wg);
    *out = f;
    return 0;
}

/* Layer l (access position pos) from the provider, bound to the model; *ext: its slot. */
static int fs_acquire(fstream *f, int l, int pos, const void **ext) {
    int rc = stream_acquire(f->st, l, pos, ext);
    if (rc) return rc;
    /* the slot holds the layer's f32 master extent */
    const tier_store *s = stream_store(f->st);
    const tier_extent *x = tier_extent_at(s, TT_EXTENT_LAYER(l));
    tt_layer_weights lw;
    memset(&lw, 0, sizeof lw);
    int nn = 0;
    for (uint32_t i = x->first_tensor; i < x->first_tensor + x->n_tensors; i++) {
        tt_tensor_desc d;
        config_tensor(&f->cfg, i, &d);
        const float *p = (const float *)*ext + tensor_at(f, i);
        if (d.role == TT_ROLE_LINEAR) {
            lw.proj[d.proj] = p;
            lw.dtype[d.proj] = TT_DTYPE_F32;
        } else lw.norm[nn++] = p; /* input_layernorm first */
    }
    model_bind_layer_weights(f->m, l, &lw);
    return 0;
}

/* AdamW on layer l in its slot (ext) with the gradients in lg, its moments
 * brought from the host arena and returned; then the slot goes back to the
 * host cache. */
static void fs_layer_step(fstream *f, int l, void *ext, float lr, int step) {
    const tier_store *s = stream_store(f->st);
    const tier_extent *x = tier_extent_at(s, TT_EXTENT_LAYER(l));
    uint64_t mo = f->moff[l], na = f->moff[l + 1] - mo;
    int galore_copies = 0;
    if (na) {
        be_copy_async(f->lm, f->m_host + mo, na * 4, BE_H2D, NULL);
        be_copy_async(f->lv, f->v_host + mo, na * 4, BE_H2D, NULL);
    }
    for (uint32_t i = x->first_tensor; i < x->first_tensor + x->n_tensors; i++) {
        tt_tensor_desc d;
        config_tensor(&f->cfg, i, &d);
        uint64_t a = tensor_at(f, i);
        float wd = d.role == TT_ROLE_LINEAR ? f->o->wd : 0.f;
        tt_galore *g = f->gal[i].m ? &f->gal[i] : NULL;
        if (!g) {
            uint64_t t = f->toff[i] - mo;
            tensor_step((float *)ext + a, f->lg + a, f->lm + t, f->lv + t, NULL, NULL, NULL, d.rows * d.cols, wd,
                        f->o, lr, step, 0);
            continue;
        }
        /* the matrix's GaLore state to the device for its step, and back */
        tt_real *hp = g->proj;
        float *hm = g->mom_m, *hv = g->mom_v;
        size_t pb = (size_t)g->prows * g->r * sizeof(tt_real), mb = g->nmom * sizeof(float);
        float *dm = (float *)((uint8_t *)f->gproj + pb);
        be_copy_async(f->gproj, hp, pb, BE_H2D, NULL);
        be_copy_async(dm, hm, 2 * mb, BE_H2D, NULL);
        galore_bind(g, f->gproj, dm, dm + g->nmom);
        tensor_step((float *)ext + a, f->lg + a, NULL, NULL, g, &f->gws, NULL, d.rows * d.cols, wd, f->o, lr, step, 0);
        /* the next matrix's copies into the same device buffers follow these on the compute queue */
        be_copy_async(hp, f->gproj, pb, BE_D2H, NULL);
        be_copy_async(hm, dm, 2 * mb, BE_D2H, NULL);
        galore_bind(g, hp, hm, hv);
        galore_copies = 1;
    }
    if (galore_copies) be_synchronize(); /* the host copies are whole before anything reads them (one wait a layer) */
    if (na) {
        be_copy_async(f->m_host + mo, f->lm, na * 4, BE_D2H, NULL);
        be_copy_async(f->v_host + mo, f->lv, na * 4, BE_D2H, NULL);
    }
    stream_writeback(f->st, l);
}

static void *fs_embed_in(fstream *f, const int32_t *tokens) {
    void *x = stream_buf_get(f->st);
    model_embed(f->m, f->ws, tokens, x);
    return x;
}

static int fs_failed(int rc) {
    be_synchronize();
    return rc;
}

/* One step (backward) or a forward pass scoring K micro-batches; hp: lr. */
static int fs_run(fstream *f, const int32_t *in, const int32_t *tgt, const tt_real *wt, int backward, float lr,
                  int step, double *loss_out, double *gnorm_out) {
    int L = f->L, K = f->K, T = f->T;
    /* the resident run's scaling: the mean over the step's targets */
    double wsum = model_target_weight(tgt, wt, (size_t)K * T);
    tt_real dscale = (tt_real)(wsum > 0 ? 1.0 / wsum : 0.0);
    double *acc = ws_acc(f->ws), zero[3] = {0, 0, 0}, got[3];
    be_to_device(acc, zero, sizeof zero);
    int kd = backward && f->teacher;
    if (kd) { /* the teacher's last hidden states of every micro-batch, on its own stream */
        int rc = exec_forward_hidden(f->teacher, in, f->thid);
        if (rc) return fs_failed(rc);
    }
    memcpy(f->tgt_host, tgt, (size_t)K * T * sizeof *tgt);
    memcpy(f->wt_host, wt, (size_t)K * T * sizeof *wt);
    stream_begin(f->st, backward);
    for (int l = 0; l < L; l++) {
        const void *ext;
        int rc = fs_acquire(f, l, l, &ext);
        if (rc) return fs_failed(rc);
        for (int k = 0; k < K; k++) {
            void *x = l == 0 ? fs_embed_in(f, in + (size_t)k * T) : stream_cell_get(f->st, l, k);
            void *y = stream_buf_get(f->st);
            model_layer_forward(f->m, &f->lora, f->ws, l, x, y, 0);
            if (l == 0) stream_buf_put(f->st, x);
            else stream_cell_done(f->st, l, k, !backward);
            stream_cell_put(f->st, l + 1, k, y);
        }
        stream_release(f->st, l, l + 1);
    }
    if (backward) be_fill(f->fn_g, (size_t)f->H, 0);
    for (int k = 0; k < K; k++) {
        void *x = stream_cell_get(f->st, L, k);
        void *dx = backward ? stream_buf_get(f->st) : NULL, *tx = NULL;
        if (kd) {
            size_t tb = (size_t)T * f->H * sizeof(tt_real);
            tx = stream_buf_get(f->st);
            be_copy_async(tx, (uint8_t *)f->thid + (size_t)k * tb, tb, BE_H2D, NULL);
            tt_distill d = {exec_model(f->teacher), tx, f->o->distill_weight, f->o->distill_temp};
            ws_set_distill(f->ws, &d);
        }
        model_head(f->m, f->ws, x, f->tgt_host + (size_t)k * T, f->wt_host + (size_t)k * T, dscale, dx, acc);
        if (kd) {
            ws_set_distill(f->ws, NULL);
            stream_buf_put(f->st, tx);
        }
        stream_cell_done(f->st, L, k, 1);
        if (backward) stream_cell_put(f->st, L, k, dx);
    }
    be_to_host(got, acc, sizeof got); /* the loss, before anything is updated */
    /* with distillation, the objective (model_micro_step's): (1 - alpha) CE + alpha tau^2 KL */
    *loss_out = kd ? (1 - (double)f->o->distill_weight) * got[0] + (double)f->o->distill_weight * got[2] : got[0];
    if (!backward || !isfinite(*loss_out)) { /* a non-finite loss: the loop refuses the step, nothing was updated */
        if (backward) { /* drop the gradients the head stored */
            for (int k = 0; k < K; k++) stream_cell_done(f->st, L, k, 1);
        }
        stream_end(f->st);
        return 0;
    }
    tensor_step(f->fn, f->fn_g, f->fn_m, f->fn_v, NULL, NULL, NULL, (size_t)f->H, 0.f, f->o, lr, step, 0);
    be_sumsq((size_t)f->H, f->fn_g, acc + 1);
    size_t E = f->emb ? (size_t)f->cfg.vocab * f->H : 0;
    if (E) memset(f->emb_g, 0, E * sizeof *f->emb_g);
    for (int l = L - 1; l >= 0; l--) {
        int pos = 2 * L - 1 - l;
        const void *ext;
        int rc = fs_acquire(f, l, pos, &ext);
        if (rc) return fs_failed(rc);
        uint64_t n = layer_vals(stream_store(f->st), l);
        fs_bind_wgrad(f, l);
        be_fill(f->lg, n, 0);
        for (int k = 0; k < K; k++) {
            void *x = l == 0 ? fs_embed_in(f, in + (size_t)k * T) : stream_cell_get(f->st, l, k);
            void *dy = stream_cell_get(f->st, l + 1, k);
            void *dx = stream_buf_get(f->st);
            model_layer_backward(f->m, &f->lora, f->ws, l, x, dy, dx, 0);
            stream_cell_done(f->st, l + 1, k, 1);
            if (l == 0) {
                if (E) model_embed_backward(f->m, f->ws, in + (size_t)k * T, dx);
                stream_buf_put(f->st, x);
                stream_buf_put(f->st, dx);
            } else stream_cell_put(f->st, l, k, dx);
        }
        be_sumsq(n, f->lg, acc + 1);
        fs_layer_step(f, l, (void *)ext, lr, step);
        stream_release(f->st, l, pos + 1);
    }
    be_to_host(got, acc, sizeof got);
    double g2 = got[1];
    if (E) { /* the embedding, on the host where it is gathered */
        for (size_t i = 0; i < E; i++) g2 += (double)f->emb_g[i] * f->emb_g[i];
        tensor_step(f->emb, f->emb_g, f->emb_m, f->emb_v, NULL, NULL, NULL, E, 0.f, f->o, lr, step, 1);
    }
    *gnorm_out = sqrt(g2);
    stream_end(f->st);
    return 0;
}

/* The streamed run's side of the checkpoints: layer tensors in the host cache and arena, the final norm on the
 * device, the embedding on the host; GaLore's states (host-bound) pass through the device scratch to be set. */
static void fs_get(void *ctx, uint32_t i, size_t n, float *w, float *m, float *v, float *proj) {
    fstream *f = ctx;
    tt_tensor_desc d;
    config_tensor(&f->cfg, i, &d);
    if (d.layer < 0) { /* the embedding (host) or the final norm (device) */
        int emb = d.role == TT_ROLE_EMBED;
        const float *src[3] = {emb ? f->emb : f->fn, emb ? f->emb_m : f->fn_m, emb ? f->emb_v : f->fn_v};
        float *dst[3] = {w, m, v};
        for (int j = 0; j < 3; j++)
            if (dst[j] && emb) memcpy(dst[j], src[j], n * 4);
            else if (dst[j]) be_to_host(dst[j], src[j], n * 4);
        return;
    }
    if (w) memcpy(w, (const float *)stream_layer_host(f->st, d.layer) + tensor_at(f, i), n * 4);
    const tt_galore *g = f->gal[i].m ? &f->gal[i] : NULL;
    if (!g) {
        if (m) memcpy(m, f->m_host + f->toff[i], n * 4);
        if (v) memcpy(v, f->v_host + f->toff[i], n * 4);
        return;
    }
    if (m) memcpy(m, g->mom_m, g->nmom * 4); /* host-bound between steps */
    if (v) memcpy(v, g->mom_v, g->nmom * 4);
    if (proj)
        for (size_t j = 0; j < (size_t)g->prows * g->r; j++) proj[j] = (float)g->proj[j];
}
static void fs_set(void *ctx, uint32_t i, size_t n, const float *w, const float *m, const float *v,
                   const float *proj) {
    fstream *f = ctx;
    tt_tensor_desc d;
    config_tensor(&f->cfg, i, &d);
    if (d.layer < 0) {
        if (d.role == TT_ROLE_EMBED) { memcpy(f->emb, w, n * 4); memcpy(f->emb_m, m, n * 4); memcpy(f->emb_v, v, n * 4); }
        else { be_to_device(f->fn, w, n * 4); be_to_device(f->fn_m, m, n * 4); be_to_device(f->fn_v, v, n * 4); }
        return;
    }
    /* before the first step: no slot holds the layer yet, its loads read the cache */
    memcpy((float *)stream_layer_host(f->st, d.layer) + tensor_at(f, i), w, n * 4);
    tt_galore *g = f->gal[i].m ? &f->gal[i] : NULL;
    if (!g) {
        memcpy(f->m_host + f->toff[i], m, n * 4);
        memcpy(f->v_host + f->toff[i], v, n * 4);
        return;
    }
    tt_real *hp = g->proj;
    float *hm = g->mom_m, *hv = g->mom_v;
    size_t pb = (size_t)g->prows * g->r * sizeof(tt_real);
    float *dm = (float *)((uint8_t *)f->gproj + pb);
    galore_bind(g, f->gproj, dm, dm + g->nmom);
    proj_set(g, proj);
    galore_set_moments(g, m, v);
    be_to_host(hp, f->gproj, pb);
    be_to_host(hm, dm, 2 * g->nmom * sizeof(float));
    galore_bind(g, hp, hm, hv);
}
static const tt_galore *fs_gal(void *ctx, uint32_t i) {
    fstream *f = ctx;
    return f->gal[i].m ? &f->gal[i] : NULL;
}
static const ck_ops fs_ck = {fs_get, fs_set, fs_gal};

static int fs_save(void *ctx, int step, uint64_t seen, int *said) {
    (void)said;
    fstream *f = ctx;
    return ck_save(f->o, &f->cfg, f->mix, &fs_ck, f, step, seen);
}

static int fs_step(void *ctx, const int32_t *in, const int32_t *tgt, const tt_real *wt, const int32_t *seg, double lr,
                   int step, uint64_t drop, double *loss_out, double *gnorm_out) {
    TT_ASSERT(seg == NULL);
    (void)drop;
    fstream *f = ctx;
    double loss = 0;
    int rc = fs_run(f, in, tgt, wt, 1, (float)lr, step, &loss, gnorm_out);
    double wsum = model_target_weight(tgt, wt, (size_t)f->K * f->T);
    *loss_out = loss / (wsum > 0 ? wsum : 1);
    return rc;
}

static int fs_eval_fn(void *ctx, const int32_t *in, const int32_t *tgt, const tt_real *wt, double *loss) {
    double g = 0;
    return fs_run(ctx, in, tgt, wt, 0, 0.f, 0, loss, &g);
}

static int fs_eval(void *ctx, const tt_tokens *val, int max_tokens, double *loss) {
    fstream *f = ctx;
    return train_eval_with(fs_eval_fn, f, f->o->micro_batch, f->o->seq, f->K, val, max_tokens, loss);
}

/* The trained store: layers from the host cache, the final norm and the
 * embedding from their master copies, lm_head (frozen) from the source. */
typedef struct fs_out {
    fstream *f;
    store_reader *rd;
} fs_out;

static int fs_fill_out(void *ctx, uint32_t i, const tt_tensor_desc *d, float *out) {
    fs_out *w = ctx;
    fstream *f = w->f;
    size_t n = d->rows * d->cols;
    if (d->layer >= 0) memcpy(out, (const float *)stream_layer_host(f->st, d->layer) + tensor_at(f, i), n * 4);
    else if (d->role == TT_ROLE_NORM) be_to_host(out, f->fn, n * 4);
    else if (d->role == TT_ROLE_EMBED && f->emb) memcpy(out, f->emb, n * 4);
    else return store_reader_tensor(w->rd, i, out); /* lm_head, a tied embedding: frozen */
    return 0;
}

static int fullstream_run(const tt_full_opts *o, tt_mix *mix, tt_train_result *res) {
    store_reader rd;
    int rc = store_reader_open(&rd, o->model_path);
    if (rc) return rc;
    tt_config c = *store_reader_config(&rd);
    uint32_t nt = config_n_tensors(&c);
    uint32_t *dtypes = tt_xcalloc(nt, sizeof *dtypes);
    for (uint32_t i = 0; i < nt; i++) dtypes[i] = store_reader_dtype(&rd, i);
    rc = fulltrain_check_inputs(rd.s, o->teacher_path, NULL); /* as plan --full refuses them */
    if (rc == 0 && !o->teacher_path) { /* the budgets first: they decide whether streaming is possible at all (with a
                                        * teacher, fs_create plans both and names the budget for the two) */
        tt_plan p;
        rc = fulltrain_plan(o, &p, NULL, NULL);
    }
    if (rc == 0 && o->clip > 0)
        rc = TT_FAIL(-EINVAL, "streamed full training steps each layer right after its backward, so it cannot clip by "
                     "the global gradient norm: pass --clip 0");
    if (rc == 0) rc = check_mix(mix, &c, o->seq);
    fstream *f = NULL;
    if (rc == 0) rc = fs_create(&f, o, rd.s, &c); /* the file rd reads: the output's frozen parts come from it */
    if (rc) {
        store_reader_close(&rd);
        free(dtypes);
        return rc;
    }
    size_t n = 0;
    for (uint32_t i = 0; i < nt; i++) {
        tt_tensor_desc d;
        config_tensor(&c, i, &d);
        if (d.role != TT_ROLE_LM_HEAD && !(d.role == TT_ROLE_EMBED && c.tie_embeddings)) n += d.rows * d.cols;
    }
    char where[160], a[32], b[32];
    snprintf(where, sizeof where, ", streamed (%d of %d layers on the device, %s device, %s host)", f->plan.slots, f->L,
             tt_fmt_bytes(f->plan.dev_bytes, a, sizeof a), tt_fmt_bytes(f->plan.host_bytes, b, sizeof b));
    f->mix = mix;
    int start = 0;
    uint64_t seen = 0;
    uint64_t np, nm, nw;
    ck_sizes(&c, &fs_ck, f, &np, &nm, &nw, NULL);
    if ((o->resume_dir && (rc = ck_load(o, &c, mix, &fs_ck, f, &start, &seen))) || (rc = full_room(o, np, start))) {
        fs_free(f);
        store_reader_close(&rd);
        free(dtypes);
        return rc;
    }
    print_header(o, &c, n, where);
    if (o->resume_dir && !o->quiet && !o->json) printf("resumed from %s at step %d\n", o->resume_dir, start);
    tt_train_opts lo;
    loop_opts(o, &lo);
    static const tt_loop_ops ops = {fs_step, fs_eval, fs_save}, ops_nosave = {fs_step, fs_eval, NULL};
    rc = train_loop(&lo, o->ckpt_dir ? &ops : &ops_nosave, f, mix, start, seen, res);
    be_synchronize(); /* the last write-backs */
    fs_out w = {f, &rd};
    tier_write_opts wopt = {dtypes, tier_prune(rd.s), 1, NULL};
    rc = write_out(o, res, rc, &c, &wopt, fs_fill_out, &w);
    fs_free(f);
    store_reader_close(&rd);
    free(dtypes);
    return rc;
}

/* ---- Taylor importance ------------------------------------------------------ */

/* The calibration windows: `samples` windows of seq + 1 tokens spread evenly
 * over tokens[0..n) (window s starts at s * ((n - 1) / samples); stride >=
 * seq because n - 1 >= samples * seq, so the last ends at most at n - 1), as
 * one batch of samples sequences. The copies are checked against the
 * vocabulary again: calib_check read the tokens before the model was loaded,
 * and a file rewritten since must not reach the embedding. */
static int calib_windows(const tt_config *c, const uint32_t *tokens, uint64_t n, int samples, int seq, int32_t *in,
                         int32_t *tgt, tt_real *wt) {
    uint64_t stride = (n - 1) / (uint64_t)samples;
    for (int w = 0; w < samples; w++)
        for (int t = 0; t < seq; t++) {
            uint64_t at = (uint64_t)w * stride + (uint64_t)t;
            uint32_t a = tokens[at], b = tokens[at + 1];
            if (a >= c->vocab || b >= c->vocab)
                return TT_FAIL(-EIO, "token %u at position %llu of the calibration data is outside the vocabulary "
                               "(%u), though every token was inside when it was opened: the file was rewritten "
                               "during the calibration; run prune again", a >= c->vocab ? a : b,
                               (unsigned long long)(a >= c->vocab ? at : at + 1), c->vocab);
            in[(size_t)w * seq + t] = (int32_t)a;
            tgt[(size_t)w * seq + t] = (int32_t)b;
            wt[(size_t)w * seq + t] = 1;
        }
    return 0;
}

/* The calibration data against the model: enough tokens for the windows, every one in the vocabulary. */
static int calib_check(const tt_config *c, const uint32_t *tokens, uint64_t n, int samples, int seq,
                       const char *store_path) {
    if (seq < 2 || samples < 1)
        return TT_FAIL(-EINVAL, "calibration needs windows of at least 2 tokens and at least 1 sample (got %d x %d)",
                       samples, seq);
    if (n < (uint64_t)samples * seq + 1)
        return TT_FAIL(-EINVAL, "the calibration data has %llu tokens; %d samples of %d tokens need at least %llu",
                       (unsigned long long)n, samples, seq, (unsigned long long)samples * seq + 1);
    for (uint64_t i = 0; i < n; i++)
        if (tokens[i] >= c->vocab)
            return TT_FAIL(-EINVAL, "token %u in the calibration data is outside the vocabulary of %s (%u)", tokens[i],
                           store_path, c->vocab);
    return 0;
}

int fulltrain_calib_grads(const char *store_path, const uint32_t *tokens, uint64_t n, int samples, int seq,
                          uint32_t layer_a, uint32_t layer_b, float **grads) {
    tt_model *m = NULL;
    int rc = model_load(&m, store_path);
    if (rc) return rc;
    const tt_config *c = model_config(m);
    uint32_t nt = config_n_tensors(c);
    for (uint32_t i = 0; i < nt; i++) grads[i] = NULL;
    if ((rc = calib_check(c, tokens, n, samples, seq, store_path))) {
        model_free(m);
        return rc;
    }
    tt_lora_cfg lc = {1, 1.f, 0.f, 0, 0};
    tt_lora lo;
    tt_ws *w = NULL;
    /* every window in one micro-batch, the MLP in one chunk: the streamed calibration's arithmetic
     * (fulltrain_calib_grads_stream), which hands each projection's gradient over as soon as it is complete;
     * tied: lm_head chunks come from the host */
    tt_ws_opts wo = {.B = samples, .seq = seq, .with_ckpt = 1, .head_streamed = c->tie_embeddings != 0,
                     .mlp_rows = samples * seq};
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
        size_t KT = (size_t)samples * seq;
        int32_t *in = tt_xmalloc(KT * sizeof *in), *tgt = tt_xmalloc(KT * sizeof *tgt);
        tt_real *wt = tt_xmalloc(KT * sizeof *wt);
        if (rc == 0) rc = calib_windows(c, tokens, n, samples, seq, in, tgt, wt);
        if (rc == 0) model_micro_step(m, &lo, w, in, tgt, wt, (tt_real)(1.0 / ((double)samples * seq)), 1, 0);
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

/* The streamed calibration's hook: each projection's gradient (in the pruned
 * range) from the device buffer into the temporary file, as soon as it is
 * complete. */
typedef struct calib_sink {
    const tt_config *c;
    uint32_t a, b;
    int fd;
    const uint64_t *foff;  /* [n_tensors]: file offset of tensor i's gradient */
    const uint32_t *tix;   /* [L * TT_PROJ_COUNT]: the tensor index of (layer, projection) */
    tt_real *stage;        /* host: the largest projection */
    float *out;
    const char *dir;
    int rc;
} calib_sink;

static void calib_hook(void *ctx, int l, int p, const tt_real *g) {
    calib_sink *k = ctx;
    if (k->rc || (uint32_t)l < k->a || (uint32_t)l >= k->b) return;
    uint32_t i = k->tix[(size_t)l * TT_PROJ_COUNT + (size_t)p];
    tt_tensor_desc d;
    config_tensor(k->c, i, &d);
    size_t n = d.rows * d.cols;
    be_to_host(k->stage, g, n * sizeof(tt_real)); /* waits for the gradient's product */
    for (size_t v = 0; v < n; v++) k->out[v] = (float)k->stage[v];
    const uint8_t *src = (const uint8_t *)k->out;
    for (size_t done = 0; done < n * 4;) {
        ssize_t w = pwrite(k->fd, src + done, n * 4 - done, (off_t)(k->foff[i] + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            k->rc = TT_FAIL(-e, "cannot write the calibration gradients (%s) into %s: %s; free space there (they "
                            "take 4 bytes per weight of the pruned layers)", d.name, k->dir, strerror(e));
            return;
        }
        done += (size_t)w;
    }
}

int fulltrain_calib_grads_stream(const char *store_path, const uint32_t *tokens, uint64_t n, int samples, int seq,
                                 uint32_t layer_a, uint32_t layer_b, uint64_t hbm, uint64_t host, const char *tmp_dir,
                                 float **grads, void **map, uint64_t *map_len) {
    *map = NULL;
    *map_len = 0;
    tier_store *s = NULL;
    int rc = tier_open(&s, store_path);
    if (rc) return rc;
    const tt_config *c = tier_config(s);
    uint32_t nt = config_n_tensors(c);
    for (uint32_t i = 0; i < nt; i++) grads[i] = NULL;
    rc = calib_check(c, tokens, n, samples, seq, store_path);
    /* the file: each projection of [a, b) at a page boundary */
    uint64_t *foff = tt_xcalloc(nt, sizeof *foff), total = 0, mx = 0;
    uint32_t *tix = tt_xcalloc((size_t)c->n_layers * TT_PROJ_COUNT, sizeof *tix);
    for (uint32_t i = 0; i < nt; i++) {
        tt_tensor_desc d;
        config_tensor(c, i, &d);
        if (d.role == TT_ROLE_LINEAR) tix[(size_t)d.layer * TT_PROJ_COUNT + (size_t)d.proj] = i;
        if (d.role != TT_ROLE_LINEAR || (uint32_t)d.layer < layer_a || (uint32_t)d.layer >= layer_b) continue;
        foff[i] = total;
        total += tt_align_up(d.rows * d.cols * 4, 4096);
        if (d.rows * d.cols > mx) mx = d.rows * d.cols;
    }
    char path[4200];
    int fd = -1;
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/.tiertrain-calib-XXXXXX", tmp_dir);
        fd = mkstemp(path);
        if (fd < 0) rc = TT_FAIL(-errno, "cannot create a temporary file for the calibration gradients in %s: %s",
                                 tmp_dir, strerror(errno));
        else {
            unlink(path); /* gone with the last reference: nothing to clean up */
            /* its blocks taken now, not found missing after the calibration's passes (a file system without
             * fallocate: its free space checked instead) */
            uint64_t avail = 0, dev;
            char need_s[32], have_s[32];
            int fe = fallocate(fd, 0, 0, (off_t)(total ? total : 1)) == 0 ? 0 : errno;
            /* not ENOSPC/EDQUOT: no fallocate there (EOPNOTSUPP, ENOSYS, EINVAL, a FUSE or network file system) */
            if (fe && fe != ENOSPC && fe != EDQUOT) {
                fe = atomic_fs_room(tmp_dir, 1, &avail, &dev) == 0 && avail < total ? ENOSPC : 0;
                if (!fe && ftruncate(fd, (off_t)(total ? total : 1)) != 0)
                    rc = TT_FAIL(-errno, "cannot size the calibration gradients' file (%llu bytes) in %s: %s",
                                 (unsigned long long)total, tmp_dir, strerror(errno));
            }
            if (fe == ENOSPC || fe == EDQUOT) {
                if (atomic_fs_room(tmp_dir, 1, &avail, &dev) != 0) avail = 0;
                rc = TT_FAIL(-fe, "the calibration gradients take %s in %s (4 bytes per weight of the pruned layers, "
                             "held while the output is written there too) but it has %s free; free space, or prune "
                             "fewer layers at a time (--layers)", tt_fmt_bytes(total, need_s, sizeof need_s), tmp_dir,
                             tt_fmt_bytes(avail, have_s, sizeof have_s));
            }
        }
    }
    tt_exec *e = NULL;
    if (rc == 0) {
        tt_plan_req req = {0};
        req.hbm = hbm;
        req.host = host;
        req.host_avail = tt_mem_available();
        req.B = samples; req.seq = seq; req.K = 1; /* one micro-batch: each projection's gradient complete at once */
        req.min_slots = 1;                        /* an unpruned 70B layer is 1.7 GB in bf16: let one slot do */
        tt_lora_cfg lc = {1, 1.f, 0.f, 0, 0}; /* no adapter: the weight gradients alone */
        exec_user(&req.user, &lc, 0);
        exec_user_set_wgrad(&req.user);
        tt_plan p;
        if ((rc = plan_make(s, &req, &p)) == -ENOSPC) { /* in prune's terms: its options are the calibration's */
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", tt_lasterr());
            char *cut = strstr(msg, "; raise");
            if (cut) *cut = 0;
            rc = TT_FAIL(-ENOSPC, "%s; raise --hbm / --host, or lower --calib-samples / --calib-seq (one batch of "
                         "%d windows of %d tokens)", msg, samples, seq);
        }
        if (rc == 0) rc = exec_create(&e, s, &p, 0, NULL);
    }
    if (rc == 0) {
        calib_sink k = {c, layer_a, layer_b, fd, foff, tix, tt_xmalloc(mx * sizeof(tt_real)), tt_xmalloc(mx * 4),
                        tmp_dir, 0};
        exec_set_wgrad_hook(e, calib_hook, &k);
        size_t KT = (size_t)samples * seq;
        int32_t *in = tt_xmalloc(KT * sizeof *in), *tgt = tt_xmalloc(KT * sizeof *tgt);
        tt_real *wt = tt_xmalloc(KT * sizeof *wt);
        double loss = 0, gnorm = 0;
        rc = calib_windows(c, tokens, n, samples, seq, in, tgt, wt);
        if (rc == 0) rc = exec_step(e, in, tgt, wt, 0.f, 1, 0.9f, 0.999f, 1e-8f, 0.f, 0.f, 0, &loss, &gnorm);
        if (rc == 0) rc = k.rc;
        free(in); free(tgt); free(wt); free(k.stage); free(k.out);
    }
    exec_free(e);
    if (rc == 0) {
        void *m = mmap(NULL, total ? total : 1, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) rc = TT_FAIL(-errno, "cannot map the calibration gradients (%llu bytes) from %s: %s",
                                          (unsigned long long)total, tmp_dir, strerror(errno));
        else {
            *map = m;
            *map_len = total ? total : 1;
            for (uint32_t i = 0; i < nt; i++) {
                tt_tensor_desc d;
                config_tensor(c, i, &d);
                if (d.role == TT_ROLE_LINEAR && (uint32_t)d.layer >= layer_a && (uint32_t)d.layer < layer_b)
                    grads[i] = (float *)((uint8_t *)m + foff[i]);
            }
        }
    }
    if (fd >= 0) close(fd);
    free(foff);
    free(tix);
    tier_close(s);
    return rc;
}
