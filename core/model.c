/* core/model.c — LLaMA + LoRA forward/backward with per-layer activation
 * checkpointing, on the backend interface. */
#include "core/model.h"
#include "io/storeio.h"
#include "io/uring.h"

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/base/rng.h"
#include "io/tier.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define XENT_CHUNK_ELEMS (4u << 20) /* logits per cross-entropy chunk: the micro-batch's rows x a vocab chunk */
/* The MLP runs in token chunks of at most MLP_CHUNK_ELEMS / ffn rows (or
 * tt_ws_opts.mlp_chunk_elems: LoRA training on CUDA), as even as they go, so
 * its (rows, ffn) intermediates do not grow with seq (64 MiB of f32 each at
 * most; an 8192-token micro-batch at ffn 14336 goes as 8 x 1024 tokens). */
#define MLP_CHUNK_ELEMS (16u << 20)
/* The dequantization scratch: a projection is dequantized in blocks of output
 * rows (a multiple of 64, so an NF4 block never straddles two) of at most
 * WBUF_ELEMS values, 64 MiB of f32; lm_head chunks use it too. */
#define WBUF_ELEMS (16u << 20)
/* LoRA dropout's buffers (masked input, masked gradient): the LoRA path
 * runs a chunk of rows at a time so that each holds at most this many values
 * (16 MiB of f32), whatever seq x hidden is. */
#define DROP_CHUNK_ELEMS (4u << 20)

struct tt_model {
    tt_config cfg;
    void *extent_buf[TT_MAX_LAYERS + 2];   /* model_load only: device copies of the extents */
    void *embed_owned;                      /* model_load only: host copy of the embedding blob */
    tt_layer_weights lw[TT_MAX_LAYERS];
    tt_head_weights head;
    const void *embed;                      /* host (vocab, hidden) blob */
    uint32_t embed_dtype;
    tt_wgrad *wg;                           /* NULL: no weight gradients */
};

/* Activation buffers are void *: of the workspace's type dt (BE_REAL or
 * BE_BF16, --act-dtype), indexed through be_at / AT. Statistics (rstd, lse),
 * norm weights, rope tables and loss weights are tt_real whatever dt. */
struct tt_ws {
    int B, S, T, H, r;
    int dt;               /* the element type of the activation buffers */
    int mlp_rows;         /* tokens per MLP chunk (g, u, mm and their gradients hold that many rows) */
    size_t max_in, wbuf_elems, QD, KVD;
    size_t FP;            /* the row stride of the MLP's (rows, ffn) buffers: be_row_pad(the largest ffn) */
    void *xn, *q, *k, *v, *att, *h, *hn, *g, *u, *mm;
    tt_real *rstd1, *lse, *rstd2;
    void *z[TT_PROJ_COUNT];
    void *wbuf, *xd, *tmp, *dz;
    /* decode_layer: one layer's frozen projections in the workspace's type (model_decode_layer); dec_lw binds
     * them, for layer dec_l of dec_m decoded from dec_src's weights (dec_m NULL: none yet) */
    void *dec;
    tt_layer_weights dec_lw, dec_src;
    const tt_model *dec_m;
    int dec_l;
    void *attn_scratch;   /* the attention ops' scratch (be_attn_scratch_bytes; NULL when 0) */
    size_t attn_scratch_n; /* its bytes: the most any layer's heads take */
    void *dxn, *dq, *dk, *dv, *datt, *dh, *dhn, *dg, *du, *dm;
    tt_real *norm;        /* (3, H): the norms of the current layer / the head, dequantized */
    void *ck;             /* with_ckpt: L+1 layer inputs, (T, H) each */
    void *dx0, *dx1;      /* with_ckpt: (T, H) ping-pong gradients */
    void *xf, *logits, *dxf; /* xf, dxf: aliases of xn, dxn; logits (T, vocab_chunk): of g when it fits */
    double *xstats;       /* (T, 3): the head's online log-sum-exp per row (backend.h's xent_stats) */
    tt_real *rstdf;
    void *lm_stage;       /* head_streamed: one vocab chunk of the lm_head blob */
    int vocab_chunk;      /* lm_head rows (vocabulary columns) per head chunk */
    tt_real *cos_t, *sin_t;
    const int32_t *seg;   /* device (T) or NULL: the current micro-batch's packed-example starts (ws_set_seg) */
    int32_t *tgt_d;       /* device (T): the head's targets, uploaded per micro-batch */
    tt_real *wt_d;        /* device (T): their loss weights */
    double *acc;          /* device: [0] loss sum, [1] sum of squared gradients, [2] distillation's KL sum */
    /* distillation (with_distill): the teacher's normalised hidden states and logits chunk, its final norm,
     * the KL statistics; kd: the current setting (ws_set_distill), or NULL */
    void *txf, *tlogits;
    tt_real *tnorm;
    double *kstats;
    tt_distill kd_set;
    const tt_distill *kd;
    void *host_x[2];      /* host (T, H) each (type dt): the embedding gather, two in turn */
    tt_event *host_x_ev[2]; /* recorded after each one's upload: it is rewritten only after that */
    int host_x_next, host_x_owned;
    size_t drop_elems;    /* the dropout buffers: DROP_CHUNK_ELEMS, at least one row of the widest input */
    /* generation (gen_cap > 0): see model.h */
    int gen_cap, gen_on, T_max, S_max;
    size_t gen_half;               /* head_dim / 2 */
    int32_t *gen_pos_d, *gen_pos;  /* device / host (B): this pass's first positions */
    tt_real *gen_cos, *gen_sin;    /* device (T, hd/2): this pass's rows' rope tables */
    tt_real *gen_tab;              /* host (2, gen_cap, hd/2): cos then sin of every position */
    tt_real *gen_stage;            /* host (T, hd/2): a pass's table before its upload */
    void *gen_k, *gen_v;           /* the cache of the next layer forward */
    int L, owned;         /* owned: buffers from be_alloc (freed with the workspace) */
};

/* ---- binding and loading ---------------------------------------------------- */

const tt_config *model_config(const tt_model *m) { return &m->cfg; }
const tt_layer_weights *model_layer(const tt_model *m, int l) { return &m->lw[l]; }

tt_model *model_shell(const tier_store *s) {
    tt_model *m = tt_xcalloc(1, sizeof *m);
    m->cfg = *tier_config(s);
    return m;
}

void model_bind_layer(tt_model *m, const tier_store *s, int l, const void *ext) {
    const tier_extent *x = tier_extent_at(s, TT_EXTENT_LAYER(l));
    tt_layer_weights *lw = &m->lw[l];
    int nn = 0;
    for (uint32_t i = x->first_tensor; i < x->first_tensor + x->n_tensors; i++) {
        const tier_tensor *t = tier_tensor_at(s, i);
        tt_tensor_desc d;
        config_tensor(&m->cfg, i, &d);
        const uint8_t *p = (const uint8_t *)ext + t->offset;
        if (d.role == TT_ROLE_LINEAR) {
            lw->proj[d.proj] = p;
            lw->dtype[d.proj] = t->dtype;
        } else {
            TT_ASSERT(d.role == TT_ROLE_NORM && nn < 2);
            lw->norm[nn++] = p; /* input_layernorm comes first in the table */
        }
    }
}

void model_bind_head(tt_model *m, const tier_store *s, const void *ext, int lm_on_host) {
    const tier_extent *x = tier_extent_at(s, TT_EXTENT_HEAD(&m->cfg));
    const tier_tensor *norm = tier_tensor_at(s, x->first_tensor);
    m->head.norm = (const uint8_t *)ext + norm->offset;
    if (m->cfg.tie_embeddings) {
        m->head.lm = m->embed;
        m->head.lm_dtype = m->embed_dtype;
        m->head.lm_on_host = 1;
    } else {
        const tier_tensor *lm = tier_tensor_at(s, x->first_tensor + 1);
        m->head.lm = (const uint8_t *)ext + lm->offset;
        m->head.lm_dtype = lm->dtype;
        m->head.lm_on_host = lm_on_host;
    }
}

void model_bind_head_norm(tt_model *m, const void *norm_dev) { m->head.norm = norm_dev; }

void model_bind_layer_weights(tt_model *m, int l, const tt_layer_weights *lw) { m->lw[l] = *lw; }
void model_bind_head_weights(tt_model *m, const tt_head_weights *h) { m->head = *h; }
void model_set_wgrad(tt_model *m, tt_wgrad *g) { m->wg = g; }

void model_bind_embed(tt_model *m, const void *blob, uint32_t dtype) {
    m->embed = blob;
    m->embed_dtype = dtype;
}

void model_free(tt_model *m) {
    if (!m) return;
    for (size_t i = 0; i < TT_MAX_LAYERS + 2; i++) be_free(m->extent_buf[i]);
    free(m->embed_owned);
    free(m);
}

int model_load(tt_model **out, const char *path) {
    *out = NULL;
    tier_store *s;
    int rc = tier_open(&s, path);
    if (rc) return rc;
    struct uring_reader *ur = NULL;
    if ((rc = store_file_open(&ur, s))) {
        tier_close(s);
        return rc;
    }
    tt_model *m = model_shell(s);
    const tt_config *c = &m->cfg;
    for (uint32_t e = 0; e < tier_n_extents(s) && rc == 0; e++) {
        uint8_t *raw = NULL;
        rc = store_read_extent(s, ur, e, &raw);
        if (rc) break;
        const tier_extent *x = tier_extent_at(s, e);
        if (e == TT_EXTENT_EMBED(c)) { /* the embedding stays on the host */
            const tier_tensor *t = tier_tensor_at(s, x->first_tensor);
            m->embed_owned = raw;
            model_bind_embed(m, raw + t->offset, t->dtype);
            continue;
        }
        void *dev = be_alloc(x->raw ? x->raw : 1);
        if (!dev) {
            free(raw);
            rc = TT_FAIL(-ENOMEM, "out of device memory loading %s", path);
            break;
        }
        be_to_device(dev, raw, x->raw);
        free(raw);
        m->extent_buf[e] = dev;
        if (e == TT_EXTENT_HEAD(c)) model_bind_head(m, s, dev, 0);
        else model_bind_layer(m, s, (int)e - 1, dev);
    }
    uring_reader_close(ur);
    tier_close(s);
    if (rc) {
        model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* ---- rope ------------------------------------------------------------------- */

void model_rope_tables(const tt_config *c, int seq, double *cos_t, double *sin_t) {
    /* In float32, step for step as transformers computes them (inv_freq, the
     * llama3 scaling, positions * inv_freq); only cos/sin of the float angle
     * are taken in double. Doing it all in double drifts from HF by ~1e-3 at
     * 8K positions. */
    int half = (int)c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)c->head_dim;
        float freq = 1.0f / powf(c->rope_theta, expo);
        if (c->rope_type == TT_ROPE_LLAMA3) {
            /* transformers' _compute_llama3_parameters */
            float lo_wl = (float)c->rope_orig_max_pos / c->rope_low_freq;
            float hi_wl = (float)c->rope_orig_max_pos / c->rope_high_freq;
            float wl = 2.0f * (float)M_PI / freq;
            if (wl > lo_wl) freq = freq / c->rope_factor;
            else if (!(wl < hi_wl)) {
                float smooth = ((float)c->rope_orig_max_pos / wl - c->rope_low_freq) /
                               (c->rope_high_freq - c->rope_low_freq);
                freq = (1.0f - smooth) * (freq / c->rope_factor) + smooth * freq;
            }
        }
        for (int t = 0; t < seq; t++) {
            float ang = (float)t * freq;
            cos_t[(size_t)t * half + i] = cos((double)ang);
            sin_t[(size_t)t * half + i] = sin((double)ang);
        }
    }
}

/* Projection p of layer l: its input and output widths. */
static void proj_dims(const tt_config *c, int l, int p, int *in, int *out) {
    const tt_layer_dims *d = &c->layers[l];
    int h = (int)c->hidden, q = (int)(d->n_heads * c->head_dim), kv = (int)(d->n_kv_heads * c->head_dim);
    switch (p) {
    case TT_PROJ_Q: *in = h; *out = q; break;
    case TT_PROJ_K: case TT_PROJ_V: *in = h; *out = kv; break;
    case TT_PROJ_O: *in = q; *out = h; break;
    case TT_PROJ_GATE: case TT_PROJ_UP: *in = h; *out = (int)d->ffn; break;
    default: *in = (int)d->ffn; *out = h; break;
    }
}

/* ---- a layer decoded once a pass (tt_ws_opts.decode_layer) --------------------- */

/* The store type of the workspace's activation type dt, or 0 where no store type is it (a double build's). */
static uint32_t dec_dtype(int dt) {
    if (dt == BE_BF16) return TT_DTYPE_BF16;
    return sizeof(tt_real) == 4 ? TT_DTYPE_F32 : 0;
}

/* Whether projection p of layer l, stored as dtype, is decoded into the buffer for activations of type dt: where
 * its products would convert it (a weight already of the activations' type is multiplied where it lies) and its
 * rows need no padding (a padded product would copy the decoded block again each time). */
static int dec_proj(const tt_config *c, int l, int p, uint32_t dtype, int dt) {
    int in, out;
    proj_dims(c, l, p, &in, &out);
    return dec_dtype(dt) && dtype != dec_dtype(dt) && be_row_pad((size_t)in) == (size_t)in;
}

/* Values of layer l's projections before projection `upto` in the buffer (each starts at a multiple of 128
 * values: 256 bytes in bf16). */
static size_t dec_layer_elems(const tt_config *c, int l, int upto) {
    size_t n = 0;
    for (int p = 0; p < upto; p++) {
        int in, out;
        proj_dims(c, l, p, &in, &out);
        n += tt_align_up((size_t)out * in, 128);
    }
    return n;
}

int model_decode_wanted(const tier_store *s, int act_bf16) {
    if (!be_decode_layers()) return 0;
    const tt_config *c = tier_config(s);
    int dt = act_bf16 ? BE_BF16 : BE_REAL;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        tt_tensor_desc d;
        config_tensor(c, i, &d);
        if (d.role == TT_ROLE_LINEAR && dec_proj(c, (int)d.layer, (int)d.proj, tier_tensor_at(s, i)->dtype, dt))
            return 1;
    }
    return 0;
}

/* Whether the buffer holds layer l of m decoded from the weights bound now. */
static int dec_holds(const tt_model *m, const tt_ws *w, int l) {
    const tt_layer_weights *lw = &m->lw[l];
    return w->dec_m == m && w->dec_l == l && !memcmp(w->dec_src.proj, lw->proj, sizeof lw->proj) &&
           !memcmp(w->dec_src.dtype, lw->dtype, sizeof lw->dtype);
}

void model_decode_layer(const tt_model *m, tt_ws *w, int l) {
    if (!w->dec || dec_holds(m, w, l)) return; /* (the backward's first layer is the forward's last) */
    const tt_layer_weights *lw = &m->lw[l];
    w->dec_lw = *lw;
    for (int p = 0; p < TT_PROJ_COUNT; p++) {
        if (!dec_proj(&m->cfg, l, p, lw->dtype[p], w->dt)) continue;
        int in, out;
        proj_dims(&m->cfg, l, p, &in, &out);
        void *d = be_at(w->dec, dec_layer_elems(&m->cfg, l, p), w->dt);
        be_dequant(lw->dtype[p], lw->proj[p], (size_t)out * in, d, w->dt);
        w->dec_lw.proj[p] = d;
        w->dec_lw.dtype[p] = dec_dtype(w->dt);
    }
    w->dec_src = *lw;
    w->dec_m = m;
    w->dec_l = l;
}

/* Layer l's weights for its products: the decoded ones where the workspace holds them. */
static const tt_layer_weights *layer_w(const tt_model *m, const tt_ws *w, int l) {
    return dec_holds(m, w, l) ? &w->dec_lw : &m->lw[l];
}

/* ---- workspace -------------------------------------------------------------- */

void ws_free(tt_ws *w) {
    if (!w) return;
    if (w->owned) {
        void *bufs[] = {w->xn, w->rstd1, w->q, w->k, w->v, w->att, w->lse, w->h, w->hn, w->rstd2,
                        w->g, w->wbuf, w->xd, w->tmp, w->dz,
                        w->dk, w->dv, w->dhn, w->dm, w->norm, w->ck,
                        w->dx0, w->dx1, w->rstdf, w->cos_t, w->sin_t, w->wt_d, w->attn_scratch, w->xstats,
                        w->txf, w->tlogits, w->tnorm, w->kstats, w->dec};
        /* aliases: xf, dxf, dxn, u, mm, dg, du always; logits, dh and lm_stage of the MLP block, dq and datt of
         * hn and dhn when they fit */
        if (w->logits != w->g) be_free(w->logits);
        if (w->dh != w->g) be_free(w->dh);
        if (w->dq != w->hn) { be_free(w->dq); be_free(w->datt); }
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be_free(bufs[i]);
        for (int p = 0; p < TT_PROJ_COUNT; p++) be_free(w->z[p]);
        if (w->lm_stage != w->u) be_free(w->lm_stage);
        be_free(w->tgt_d);
        be_free(w->acc);
        be_free(w->gen_pos_d); be_free(w->gen_cos); be_free(w->gen_sin);
    }
    free(w->gen_tab); free(w->gen_stage); free(w->gen_pos);
    for (int i = 0; i < 2; i++) {
        if (w->host_x_ev[i]) be_event_sync(w->host_x_ev[i]);
        be_event_free(w->host_x_ev[i]);
        if (w->host_x_owned) free(w->host_x[i]);
    }
    free(w);
}

static void *ws_get(const tt_alloc *a, size_t bytes, const char *label) {
    return a ? a->fn(a->ctx, bytes, label) : be_alloc(bytes);
}

int ws_create(tt_ws **out, const tt_config *c, const tt_lora_cfg *lc, const tt_ws_opts *o, const tt_alloc *alloc) {
    *out = NULL;
    tt_ws *w = tt_xcalloc(1, sizeof *w);
    int B = o->B, seq = o->seq;
    size_t T = (size_t)B * seq, H = c->hidden;
    w->B = B; w->S = seq; w->T = (int)T; w->H = (int)H; w->r = lc->rank; w->L = (int)c->n_layers;
    w->dt = o->act_bf16 ? BE_BF16 : BE_REAL;
    w->owned = alloc == NULL;
    w->FP = be_row_pad(c->ffn); /* a pruned ffn (4300) gets 16-byte rows in bf16 */
    w->QD = (size_t)c->n_heads * c->head_dim;
    w->KVD = (size_t)c->n_kv_heads * c->head_dim;
    w->max_in = H > w->FP ? H : w->FP;
    if (w->QD > w->max_in) w->max_in = w->QD;
    /* the dequantization scratch holds the largest projection: hidden x ffn or hidden x (heads * head_dim),
     * rows padded (backend.h's linear), and serves lm_head vocab chunks too */
    w->wbuf_elems = be_row_pad(H) * (w->FP > w->QD ? w->FP : w->QD);
    size_t wcap = o->wbuf_elems ? o->wbuf_elems : WBUF_ELEMS;
    if (w->wbuf_elems > wcap) w->wbuf_elems = wcap;
    if (w->wbuf_elems < 64 * w->max_in) w->wbuf_elems = 64 * w->max_in; /* at least 64 rows of any projection */
    size_t mce = o->mlp_chunk_elems ? o->mlp_chunk_elems : MLP_CHUNK_ELEMS;
    /* even chunks (each dequantizes the MLP's weights again), a multiple of 64 rows where they fit (a product's
     * rows fill its tiles) */
    size_t mr = o->mlp_rows > 0 ? (size_t)o->mlp_rows : (size_t)tt_even_chunk(T, mce / (w->FP ? w->FP : 1), 64);
    w->mlp_rows = (int)(mr < 1 ? 1 : mr > T ? T : mr);
    /* the head's chunk of the vocabulary: its lm_head rows fit the scratch, its logits for all T rows
     * XENT_CHUNK_ELEMS (or the backend's bigger caps; a streamed lm_head's chunk, staged in f32 at most, then
     * no bigger than the MLP block it borrows, or than the default caps give: a tight --hbm streams the head) */
    size_t vc = w->wbuf_elems / be_row_pad(H), xce = o->xent_chunk_elems ? o->xent_chunk_elems : XENT_CHUNK_ELEMS;
    if (vc * T > xce) vc = xce / T > 0 ? xce / T : 1;
    if (o->head_streamed && xce > XENT_CHUNK_ELEMS) {
        size_t fit = 2 * (size_t)w->mlp_rows * w->FP * be_elem_size(w->dt) / (H * 4);
        size_t dflt = WBUF_ELEMS / be_row_pad(H) < XENT_CHUNK_ELEMS / T ? WBUF_ELEMS / be_row_pad(H)
                                                                          : XENT_CHUNK_ELEMS / T;
        if (fit < dflt) fit = dflt;
        if (vc > fit) vc = fit > 0 ? fit : 1;
    }
    if (vc >= 8) vc = vc / 8 * 8; /* the logits' row stride: 16-byte rows in bf16 */
    if (vc > c->vocab) vc = c->vocab;
    w->vocab_chunk = (int)vc;
    size_t attn_in = H > w->QD ? H : w->QD;
    w->drop_elems = T * attn_in > (size_t)w->mlp_rows * w->FP ? T * attn_in : (size_t)w->mlp_rows * w->FP;
    size_t dcap = o->drop_elems ? o->drop_elems : DROP_CHUNK_ELEMS;
    if (w->drop_elems > dcap) w->drop_elems = dcap; /* the LoRA path goes by row chunks */
    if (w->drop_elems < w->max_in) w->drop_elems = w->max_in;
    size_t r = (size_t)lc->rank, e = sizeof(tt_real), ae = be_elem_size(w->dt);
    int ok = 1;
    /* A: tt_real values; AA: activation values (type dt) */
#define A(ptr, n, label) ok &= ((ptr) = ws_get(alloc, (n) * e, label)) != NULL
#define AA(ptr, n, label) ok &= ((ptr) = ws_get(alloc, (n) * ae, label)) != NULL
    AA(w->xn, T * H, "activations"); A(w->rstd1, T, "activations"); AA(w->q, T * w->QD, "activations");
    AA(w->k, T * w->KVD, "activations"); AA(w->v, T * w->KVD, "activations"); AA(w->att, T * w->QD, "activations");
    A(w->lse, T * c->n_heads, "activations"); AA(w->h, T * H, "activations"); AA(w->hn, T * H, "activations");
    size_t MF = (size_t)w->mlp_rows * w->FP;
    A(w->rstd2, T, "activations");
    AA(w->g, 3 * MF, "activations"); /* g, u and mm in one block (dh may reuse it) */
    w->u = be_at(w->g, MF, w->dt);
    w->mm = be_at(w->u, MF, w->dt);
    for (int p = 0; p < TT_PROJ_COUNT; p++) AA(w->z[p], T * r, "activations");
    /* The backward reuses what is dead by then (layer_bwd's order): hn after the MLP holds dq; h after the
     * post-attention norm's backward holds dxn; dhn after that same backward holds datt; the MLP block (g, u,
     * mm) after the MLP holds dh. */
    w->dxn = w->h;
    const int grads = o->gen_cap <= 0; /* generation: forward passes only, no gradient buffers */
    if (grads) {
        AA(w->dk, T * w->KVD, "activation gradients"); AA(w->dv, T * w->KVD, "activation gradients");
        if (3 * MF >= T * H) w->dh = w->g; /* the MLP block is dead once dh is written (after the MLP's backward) */
        else AA(w->dh, T * H, "activation gradients");
        AA(w->dhn, T * H, "activation gradients");
        if (w->QD <= H) { w->dq = w->hn; w->datt = w->dhn; }
        else { AA(w->dq, T * w->QD, "activation gradients"); AA(w->datt, T * w->QD, "activation gradients"); }
        AA(w->dm, MF, "activation gradients");
        AA(w->dz, T * r, "activation gradients");
    } else {
        w->dh = w->g; /* never used; ws_free's alias tests then leave them alone */
        w->dq = w->hn;
    }
    w->dg = w->g; /* swiglu_bwd works in place: the gate/up gradients replace g and u */
    w->du = w->u;
    AA(w->wbuf, w->wbuf_elems, "dequantization scratch");
    if (o->decode_layer) {
        size_t mx = 0;
        for (uint32_t l = 0; l < c->n_layers; l++)
            if (dec_layer_elems(c, (int)l, TT_PROJ_COUNT) > mx) mx = dec_layer_elems(c, (int)l, TT_PROJ_COUNT);
        AA(w->dec, mx, w->dt == BE_BF16 ? "decoded layer (bf16)" : "decoded layer (f32)");
    }
    /* the most any layer takes: a pruned layer's fewer KV heads can take more (the CUDA backend's dk/dv pass
     * then splits its groups over more blocks, with their sums in the scratch) */
    size_t asb = 0;
    for (uint32_t l = 0; grads && l < c->n_layers; l++) {
        size_t b = be_attn_scratch_bytes(B, seq, (int)c->layers[l].n_heads, (int)c->layers[l].n_kv_heads,
                                         (int)c->head_dim, w->dt);
        if (b > asb) asb = b;
    }
    w->attn_scratch_n = asb;
    if (asb) ok &= (w->attn_scratch = ws_get(alloc, asb, "attention scratch")) != NULL;
    if (lc->dropout > 0) { /* masked inputs and gradients, only when there is dropout */
        AA(w->xd, w->drop_elems, "LoRA dropout");
        AA(w->tmp, w->drop_elems, "LoRA dropout");
    }
    A(w->norm, 3 * H, "norms");
    if (o->with_ckpt) {
        AA(w->ck, (size_t)(c->n_layers + 1) * T * H, "layer checkpoints");
        AA(w->dx0, T * H, "layer checkpoints"); AA(w->dx1, T * H, "layer checkpoints");
    }
    /* The head runs when no layer does: its (T, H) buffers are the layer's xn and dxn, its logits the MLP
     * chunk's g when that is large enough. */
    w->xf = w->xn;
    w->dxf = w->dxn;
    A(w->rstdf, T, "head");
    if (T * w->vocab_chunk <= MF) w->logits = w->g;
    else AA(w->logits, T * w->vocab_chunk, "head");
    ok &= (w->xstats = ws_get(alloc, 3 * T * sizeof(double), "head")) != NULL;
    A(w->cos_t, (size_t)seq * c->head_dim / 2, "rope tables"); A(w->sin_t, (size_t)seq * c->head_dim / 2, "rope tables");
    A(w->wt_d, T, "head");
    if (o->with_distill) { /* the teacher's side of the head (model_head with ws_set_distill) */
        AA(w->txf, T * H, "distillation"); AA(w->tlogits, T * w->vocab_chunk, "distillation");
        A(w->tnorm, H, "distillation");
        ok &= (w->kstats = ws_get(alloc, 5 * T * sizeof(double), "distillation")) != NULL;
    }
    if (o->gen_cap > 0) {
        A(w->gen_cos, T * c->head_dim / 2, "rope tables"); A(w->gen_sin, T * c->head_dim / 2, "rope tables");
        ok &= (w->gen_pos_d = ws_get(alloc, (size_t)B * sizeof(int32_t), "rope tables")) != NULL;
    }
#undef A
#undef AA
    ok &= (w->tgt_d = ws_get(alloc, T * sizeof(int32_t), "head")) != NULL;
    ok &= (w->acc = ws_get(alloc, 3 * sizeof(double), "loss and gradient norm")) != NULL;
    if (o->head_streamed) { /* the head's lm_head chunk: u and mm (the MLP block is free during the head) */
        size_t lb = (size_t)w->vocab_chunk * H * 4;
        if (lb <= 2 * MF * ae) w->lm_stage = w->u;
        else ok &= (w->lm_stage = ws_get(alloc, lb, "lm_head chunk")) != NULL;
    }
    for (int i = 0; o->host && i < 2; i++) /* pinned (the host arena): the uploads are asynchronous */
        ok &= (w->host_x[i] = o->host->fn(o->host->ctx, T * H * ae, "embedding gather")) != NULL;
    if (alloc && alloc->measuring) { /* planning: sizes only */
        *out = w;
        return 0;
    }
    w->host_x_owned = !o->host;
    for (int i = 0; i < 2; i++) {
        if (!o->host) ok &= (w->host_x[i] = malloc(T * H * ae)) != NULL;
        w->host_x_ev[i] = be_event_new();
    }
    if (!ok) {
        ws_free(w);
        return TT_FAIL(-ENOMEM, "out of memory for the activations of %d x %d tokens", B, seq);
    }
    w->T_max = w->T;
    w->S_max = w->S;
    if (o->gen_cap > 0) { /* every position's rope values, as model_rope_tables gives them, rounded to tt_real */
        size_t half = c->head_dim / 2, nt = (size_t)o->gen_cap * half;
        double *cd = tt_xmalloc(nt * sizeof *cd), *sd = tt_xmalloc(nt * sizeof *sd);
        model_rope_tables(c, o->gen_cap, cd, sd);
        w->gen_cap = o->gen_cap;
        w->gen_half = half;
        w->gen_tab = tt_xmalloc(2 * nt * sizeof *w->gen_tab);
        for (size_t i = 0; i < nt; i++) { w->gen_tab[i] = (tt_real)cd[i]; w->gen_tab[nt + i] = (tt_real)sd[i]; }
        w->gen_stage = tt_xmalloc(T * half * sizeof *w->gen_stage);
        w->gen_pos = tt_xcalloc((size_t)B, sizeof *w->gen_pos);
        free(cd);
        free(sd);
    }
    size_t half = c->head_dim / 2, nt = (size_t)seq * half;
    double *cd = tt_xmalloc(nt * sizeof *cd), *sd = tt_xmalloc(nt * sizeof *sd);
    model_rope_tables(c, seq, cd, sd);
    tt_real *tmp = tt_xmalloc(nt * sizeof *tmp);
    for (size_t i = 0; i < nt; i++) tmp[i] = (tt_real)cd[i];
    be_to_device(w->cos_t, tmp, nt * e);
    for (size_t i = 0; i < nt; i++) tmp[i] = (tt_real)sd[i];
    be_to_device(w->sin_t, tmp, nt * e);
    free(tmp); free(cd); free(sd);
    *out = w;
    return 0;
}

/* ---- projections with LoRA -------------------------------------------------- */

typedef struct pass {
    tt_model *m;
    tt_lora *lo;
    tt_ws *w;
    uint64_t drop_seed;
} pass;

/* Activation pointer p advanced by n values of the workspace's type. */
#define AT(w, p, n) be_at((p), (size_t)(n), (w)->dt)

/* The dropout mask's stream for row t of (l, p): each row's mask comes from
 * its own stream of drop_seed (layer, projection, row), so it is identical on
 * recomputation and whatever the chunking, and a chunk draws only its rows; a
 * padded row's extra columns draw after its real ones, which keep their
 * values (be_dropout). Kept values are scaled by 1 / (1 - p). */
static uint64_t drop_stream(int l, int p, int t) { return ((uint64_t)l * 16u + (uint64_t)p) << 32 | (uint64_t)t; }
static tt_real drop_scale(float p) { return (tt_real)(1.0 / (1.0 - p)); }

/* The LoRA input for (l, p) on rows [t0, t0 + rows) (x points at row t0, row
 * stride ldx): x itself, or x with its dropout mask applied (row stride ldx
 * too). */
static const void *lora_input(pass *ps, int l, int p, const void *x, int ldx, int t0, int rows) {
    tt_ws *w = ps->w;
    float pdrop = ps->lo->cfg.dropout;
    if (!ps->drop_seed || pdrop <= 0.f) return x;
    size_t n = (size_t)rows * ldx;
    TT_ASSERT(n <= w->drop_elems);
    be_dropout(rows, ldx, ps->drop_seed, drop_stream(l, p, t0), pdrop, drop_scale(pdrop), x, w->xd, 0, w->dt);
    return w->xd;
}

/* Layer l's LoRA values at offset off (of the whole adapter), on the device. */
static const tt_real *lora_at(const tt_lora *lo, int l, size_t off) {
    return lora_layer_params(lo, l) + (off - lo->layer_off[l]);
}

/* Rows per dropout chunk for an input of row stride ldx: with dropout, the
 * LoRA path's masked inputs exist a chunk of rows at a time (the buffers
 * hold drop_elems values); without, one chunk. */
static int drop_chunk(const pass *ps, int ldx, int rows) {
    if (!ps->drop_seed || ps->lo->cfg.dropout <= 0.f) return rows;
    size_t c = ps->w->drop_elems / (size_t)ldx;
    return c >= (size_t)rows ? rows : (int)c;
}

/* z rows [t0, t0 + rows) of (l, p): drop(x) A^T, x at row t0 (row stride ldx). */
static void lora_z(pass *ps, int l, int p, const void *x, int ldx, int in, int t0, int rows) {
    tt_ws *w = ps->w;
    const tt_lora_slot *s = &ps->lo->slot[l][p];
    int r = w->r, dc = drop_chunk(ps, ldx, rows), dt = w->dt;
    for (int c0 = 0; c0 < rows; c0 += dc) {
        int cr = rows - c0 < dc ? rows - c0 : dc;
        const void *xin = lora_input(ps, l, p, AT(w, x, (size_t)c0 * ldx), ldx, t0 + c0, cr);
        be_gemm_t(0, 1, cr, r, in, 1, xin, dt, ldx, lora_at(ps->lo, l, s->a), BE_REAL, in, 0,
                  AT(w, w->z[p], (size_t)(t0 + c0) * r), dt, r);
    }
}

/* Output rows of W (out, in) per dequantized block: as many as the scratch
 * holds, a multiple of 64 (whole NF4 blocks whatever in is). */
static int wblock_rows(const tt_ws *w, int in, int out) {
    size_t r = w->wbuf_elems / be_row_pad((size_t)in); /* a backend may pad the block's rows */
    if (r >= (size_t)out) return out; /* the whole matrix */
    r = r / 64 * 64;
    TT_ASSERT(r >= 64);
    return (int)r;
}

/* The LoRA path's term of a projection's output is written first and the
 * frozen product adds into it (proj_fwd; its dropout is inside z): the big
 * product reads the destination in its epilogue, where it costs nothing
 * against its arithmetic, instead of the rank-r product's reading and
 * writing the whole output again. The input gradient's term likewise
 * (proj_bwd) where there is no dropout; with dropout the masked term comes
 * last, as its chunks go: lora_first says which. */
static int lora_first(const pass *ps, const tt_lora_slot *s) {
    return s->in && !(ps->drop_seed && ps->lo->cfg.dropout > 0.f);
}

/* y (rows, out) = x W^T + s * (drop(x) A^T) B^T on rows [t0, t0 + rows) of
 * the micro-batch (x and y point at row t0, row strides ldx and ldy); keeps
 * z = drop(x) A^T. W is dequantized a block of its rows (y's columns) at a
 * time. */
static void proj_fwd(pass *ps, int l, int p, const void *x, int ldx, void *y, int ldy, int t0, int rows) {
    tt_ws *w = ps->w;
    const tt_layer_weights *lw = layer_w(ps->m, w, l);
    int in, out, dt = w->dt;
    proj_dims(&ps->m->cfg, l, p, &in, &out);
    const tt_lora_slot *s = &ps->lo->slot[l][p];
    if (s->in) { /* y = s z B^T (lora_first: the dropout's masked input is z's alone) */
        TT_ASSERT(s->in == in && s->out == out && w->r == ps->lo->cfg.rank);
        int r = w->r;
        lora_z(ps, l, p, x, ldx, in, t0, rows);
        be_gemm_t(0, 1, rows, out, r, (tt_real)ps->lo->scale, AT(w, w->z[p], (size_t)t0 * r), dt, r,
                  lora_at(ps->lo, l, s->b), BE_REAL, r, 0, y, dt, ldy);
    }
    int wb = wblock_rows(w, in, out);
    for (int o0 = 0; o0 < out; o0 += wb) { /* y (+)= x W^T, block by block */
        int n = out - o0 < wb ? out - o0 : wb;
        be_linear_w(0, rows, in, n, x, ldx, lw->dtype[p], lw->proj[p], (size_t)out, (size_t)o0, w->wbuf,
                    s->in ? 1 : 0, AT(w, y, o0), ldy, dt);
    }
}

/* The LoRA path of proj_bwd: its gradients accumulated, and dx (+)= its
 * term (accumulate: added to dx, else written). */
static void proj_bwd_lora(pass *ps, int l, int p, const void *x, int ldx, const void *dy, int ldy, void *dx,
                          int accumulate, int t0, int rows, int in, int out) {
    tt_ws *w = ps->w;
    const tt_lora_slot *s = &ps->lo->slot[l][p];
    int r = w->r, T = rows, dt = w->dt;
    tt_real sc = (tt_real)ps->lo->scale;
    const tt_real *A = lora_at(ps->lo, l, s->a), *Bm = lora_at(ps->lo, l, s->b);
    TT_ASSERT(s->a >= ps->lo->grad_off && s->b + (size_t)out * r <= ps->lo->grad_off + ps->lo->grad_n);
    tt_real *dA = ps->lo->grads + (s->a - ps->lo->grad_off), *dB = ps->lo->grads + (s->b - ps->lo->grad_off);
    be_gemm_t(1, 0, out, r, T, sc, dy, dt, ldy, AT(w, w->z[p], (size_t)t0 * r), dt, r, 1, dB, BE_REAL,
              r);                                                          /* dB += s dy^T z */
    be_gemm_t(0, 0, T, r, out, sc, dy, dt, ldy, Bm, BE_REAL, r, 0, w->dz, dt, r); /* dz = s dy B */
    int dc = drop_chunk(ps, ldx, rows);
    for (int c0 = 0; c0 < rows; c0 += dc) { /* the masked input again, a chunk of rows at a time */
        int cr = rows - c0 < dc ? rows - c0 : dc;
        const void *xc = AT(w, x, (size_t)c0 * ldx), *dzc = AT(w, w->dz, (size_t)c0 * r);
        void *dxc = AT(w, dx, (size_t)c0 * ldx);
        const void *xin = lora_input(ps, l, p, xc, ldx, t0 + c0, cr);
        be_gemm_t(1, 0, r, in, cr, 1, dzc, dt, r, xin, dt, ldx, 1, dA, BE_REAL, in); /* dA += dz^T drop(x) */
        if (xin == xc) {
            be_gemm_t(0, 0, cr, in, r, 1, dzc, dt, r, A, BE_REAL, in, accumulate ? 1 : 0, dxc, dt,
                      ldx); /* dx (+)= dz A */
        } else { /* whole padded rows: a pad column's value is never read */
            TT_ASSERT(accumulate); /* after the frozen product (lora_first) */
            be_gemm_t(0, 0, cr, in, r, 1, dzc, dt, r, A, BE_REAL, in, 0, w->tmp, dt, ldx);
            be_dropout(cr, ldx, ps->drop_seed, drop_stream(l, p, t0 + c0), ps->lo->cfg.dropout,
                       drop_scale(ps->lo->cfg.dropout), w->tmp, dxc, 1, dt); /* dx += drop(tmp): lora_input's mask */
        }
    }
}

/* dx (+)= dy W + LoRA path on rows [t0, t0 + rows) (x, dy, dx point at row
 * t0; x and dx have row stride ldx, dy ldy); LoRA gradients accumulated. x
 * is the forward input. */
static void proj_bwd(pass *ps, int l, int p, const void *x, int ldx, const void *dy, int ldy, void *dx, int accumulate,
                     int t0, int rows) {
    tt_ws *w = ps->w;
    const tt_layer_weights *lw = layer_w(ps->m, w, l);
    int in, out, dt = w->dt;
    proj_dims(&ps->m->cfg, l, p, &in, &out);
    const tt_lora_slot *s = &ps->lo->slot[l][p];
    const int first = lora_first(ps, s);
    if (first) proj_bwd_lora(ps, l, p, x, ldx, dy, ldy, dx, accumulate, t0, rows, in, out);
    int wb = wblock_rows(w, in, out);
    for (int o0 = 0; o0 < out; o0 += wb) { /* dx (+)= dy[:, block] W[block, :], block by block */
        int n = out - o0 < wb ? out - o0 : wb;
        be_linear_w(1, rows, in, n, AT(w, dy, o0), ldy, lw->dtype[p], lw->proj[p], (size_t)out, (size_t)o0, w->wbuf,
                    accumulate || o0 || first ? 1 : 0, dx, ldx, dt);
    }
    if (ps->m->wg && ps->m->wg->proj[l][p]) { /* dW += dy^T x (the undropped input: dropout is LoRA's only) */
        be_gemm_t(1, 0, out, in, rows, 1, dy, dt, ldy, x, dt, ldx, 1, ps->m->wg->proj[l][p], BE_REAL, in);
        if (ps->m->wg->done) ps->m->wg->done(ps->m->wg->done_ctx, l, p);
    }
    if (s->in && !first) proj_bwd_lora(ps, l, p, x, ldx, dy, ldy, dx, 1, t0, rows, in, out);
}

/* ---- one layer -------------------------------------------------------------- */

/* The attention half of the layer: norms dequantized, n1, q/k/v, rope,
 * attention, h = x + o(att), hn = rmsnorm(h) (all in the workspace). */
static void attn_half_fwd(pass *ps, int l, const void *x) {
    tt_ws *w = ps->w;
    const tt_config *c = &ps->m->cfg;
    const tt_layer_weights *lw = &ps->m->lw[l];
    const tt_layer_dims *d = &c->layers[l];
    int T = w->T, H = w->H, hd = (int)c->head_dim, nh = (int)d->n_heads, nkv = (int)d->n_kv_heads, dt = w->dt;
    be_dequant(TT_DTYPE_F32, lw->norm[0], (size_t)H, w->norm, BE_REAL);
    be_dequant(TT_DTYPE_F32, lw->norm[1], (size_t)H, w->norm + H, BE_REAL);
    be_rmsnorm_fwd(T, H, x, w->norm, (tt_real)c->rms_eps, w->xn, w->rstd1, dt);
    int qd = nh * hd, kvd = nkv * hd;
    proj_fwd(ps, l, TT_PROJ_Q, w->xn, H, w->q, qd, 0, T);
    proj_fwd(ps, l, TT_PROJ_K, w->xn, H, w->k, kvd, 0, T);
    proj_fwd(ps, l, TT_PROJ_V, w->xn, H, w->v, kvd, 0, T);
    if (w->gen_on) { /* rows at their absolute positions; keys and values into the cache, then attention over it */
        be_rope(T, T, nh, hd, w->gen_cos, w->gen_sin, w->q, 0, NULL, dt);
        be_rope(T, T, nkv, hd, w->gen_cos, w->gen_sin, w->k, 0, NULL, dt);
        size_t rows = (size_t)w->S * kvd * be_elem_size(dt);
        for (int b = 0; b < w->B; b++) {
            size_t at = ((size_t)b * w->gen_cap + (size_t)w->gen_pos[b]) * kvd;
            be_copy(AT(w, w->gen_k, at), AT(w, w->k, (size_t)b * w->S * kvd), rows);
            be_copy(AT(w, w->gen_v, at), AT(w, w->v, (size_t)b * w->S * kvd), rows);
        }
        be_attn_kv(w->B, w->S, w->gen_cap, nh, nkv, hd, w->q, w->gen_k, w->gen_v, w->gen_pos_d, w->att, dt);
    } else {
        be_rope(T, w->S, nh, hd, w->cos_t, w->sin_t, w->q, 0, w->seg, dt);
        be_rope(T, w->S, nkv, hd, w->cos_t, w->sin_t, w->k, 0, w->seg, dt);
        TT_ASSERT(be_attn_scratch_bytes(w->B, w->S, nh, nkv, hd, dt) <= w->attn_scratch_n);
        be_attn_fwd(w->B, w->S, nh, nkv, hd, w->q, w->k, w->v, w->att, w->lse, w->seg, w->attn_scratch, dt);
    }
    proj_fwd(ps, l, TT_PROJ_O, w->att, qd, w->h, H, 0, T);
    be_axpy((size_t)T * H, 1, x, w->h, dt); /* h = x + o */
    be_rmsnorm_fwd(T, H, w->h, w->norm + H, (tt_real)c->rms_eps, w->hn, w->rstd2, dt);
}

/* The MLP's first half on rows [t0, t0 + rows): g, u and mm = silu(g) * u
 * (chunk buffers, row stride FP; swiglu runs over whole padded rows, whose
 * pad columns no product reads). */
static void mlp_up(pass *ps, int l, int t0, int rows) {
    tt_ws *w = ps->w;
    int H = w->H, FP = (int)w->FP;
    const void *hn = AT(w, w->hn, (size_t)t0 * H);
    proj_fwd(ps, l, TT_PROJ_GATE, hn, H, w->g, FP, t0, rows);
    proj_fwd(ps, l, TT_PROJ_UP, hn, H, w->u, FP, t0, rows);
    be_swiglu_fwd((size_t)rows * FP, w->g, w->u, w->mm, w->dt);
}

static void layer_fwd(pass *ps, int l, const void *x, void *y) {
    tt_ws *w = ps->w;
    int T = w->T, H = w->H;
    attn_half_fwd(ps, l, x);
    /* MLP: y = h + down(swiglu(gate(hn), up(hn))), a token chunk at a time */
    for (int t0 = 0; t0 < T; t0 += w->mlp_rows) {
        int rows = T - t0 < w->mlp_rows ? T - t0 : w->mlp_rows;
        mlp_up(ps, l, t0, rows);
        proj_fwd(ps, l, TT_PROJ_DOWN, w->mm, (int)w->FP, AT(w, y, (size_t)t0 * H), H, t0, rows);
    }
    be_axpy((size_t)T * H, 1, w->h, y, w->dt); /* y = h + down */
}

/* Recomputes the layer from x (intermediates in the workspace), then
 * backpropagates dy into dx (overwritten). The MLP is recomputed chunk by
 * chunk inside its backward, and only as far as the backward needs: g, u,
 * mm and down's LoRA z, not down's output. */
static void layer_bwd(pass *ps, int l, const void *x, const void *dy, void *dx) {
    tt_ws *w = ps->w;
    const tt_config *c = &ps->m->cfg;
    const tt_layer_dims *d = &c->layers[l];
    int T = w->T, H = w->H, hd = (int)c->head_dim, nh = (int)d->n_heads, nkv = (int)d->n_kv_heads, dt = w->dt;
    int FP = (int)w->FP, qd = nh * hd, kvd = nkv * hd;
    size_t TH = (size_t)T * H;
    TT_ASSERT(!ps->m->wg || !ps->m->wg->done || w->mlp_rows >= T); /* each gradient complete at its done() */
    attn_half_fwd(ps, l, x); /* recompute */
    /* MLP: y = h + down(swiglu(gate(hn), up(hn))) */
    for (int t0 = 0; t0 < T; t0 += w->mlp_rows) {
        int rows = T - t0 < w->mlp_rows ? T - t0 : w->mlp_rows;
        size_t o = (size_t)t0 * H;
        mlp_up(ps, l, t0, rows);
        if (ps->lo->slot[l][TT_PROJ_DOWN].in) lora_z(ps, l, TT_PROJ_DOWN, w->mm, FP, (int)d->ffn, t0, rows);
        proj_bwd(ps, l, TT_PROJ_DOWN, w->mm, FP, AT(w, dy, o), H, w->dm, 0, t0, rows);
        be_swiglu_bwd((size_t)rows * FP, w->g, w->u, w->dm, w->dg, w->du, dt);
        proj_bwd(ps, l, TT_PROJ_GATE, AT(w, w->hn, o), H, w->dg, FP, AT(w, w->dhn, o), 0, t0, rows);
        proj_bwd(ps, l, TT_PROJ_UP, AT(w, w->hn, o), H, w->du, FP, AT(w, w->dhn, o), 1, t0, rows);
    }
    be_copy(w->dh, dy, TH * be_elem_size(dt));
    be_rmsnorm_bwd(T, H, w->h, w->norm + H, w->rstd2, w->dhn, w->dh, 1, dt);
    const tt_wgrad *wg = ps->m->wg;
    if (wg && wg->norm[l][1]) be_rmsnorm_bwd_w(T, H, w->h, w->rstd2, w->dhn, wg->norm[l][1], dt);
    /* attention: h = x + o(attn(rope(q), rope(k), v)) */
    proj_bwd(ps, l, TT_PROJ_O, w->att, qd, w->dh, H, w->datt, 0, 0, T);
    TT_ASSERT(be_attn_scratch_bytes(w->B, w->S, nh, nkv, hd, dt) <= w->attn_scratch_n);
    be_attn_bwd(w->B, w->S, nh, nkv, hd, w->q, w->k, w->v, w->att, w->lse, w->datt, w->dq, w->dk, w->dv, w->seg,
                w->attn_scratch, dt);
    be_rope(T, w->S, nh, hd, w->cos_t, w->sin_t, w->dq, 1, w->seg, dt);
    be_rope(T, w->S, nkv, hd, w->cos_t, w->sin_t, w->dk, 1, w->seg, dt);
    proj_bwd(ps, l, TT_PROJ_Q, w->xn, H, w->dq, qd, w->dxn, 0, 0, T);
    proj_bwd(ps, l, TT_PROJ_K, w->xn, H, w->dk, kvd, w->dxn, 1, 0, T);
    proj_bwd(ps, l, TT_PROJ_V, w->xn, H, w->dv, kvd, w->dxn, 1, 0, T);
    be_copy(dx, w->dh, TH * be_elem_size(dt));
    be_rmsnorm_bwd(T, H, x, w->norm, w->rstd1, w->dxn, dx, 1, dt);
    if (wg && wg->norm[l][0]) be_rmsnorm_bwd_w(T, H, x, w->rstd1, w->dxn, wg->norm[l][0], dt);
}

static uint64_t layer_seed(uint64_t drop_seed, int l) {
    return drop_seed ? drop_seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(l + 1)) : 0;
}

void model_layer_forward(tt_model *m, tt_lora *lo, tt_ws *w, int l, const void *x, void *y, uint64_t drop_seed) {
    pass ps = {m, lo, w, layer_seed(drop_seed, l)};
    layer_fwd(&ps, l, x, y);
}

void model_layer_backward(tt_model *m, tt_lora *lo, tt_ws *w, int l, const void *x, const void *dy, void *dx,
                          uint64_t drop_seed) {
    pass ps = {m, lo, w, layer_seed(drop_seed, l)};
    layer_bwd(&ps, l, x, dy, dx);
}

/* ---- embedding and head ----------------------------------------------------- */

void model_embed(const tt_model *m, tt_ws *w, const int32_t *tokens, void *x) {
    int T = w->T, H = w->H, V = (int)m->cfg.vocab, hb = w->host_x_next, dt = w->dt;
    w->host_x_next ^= 1;
    be_event_sync(w->host_x_ev[hb]); /* its previous upload has left it */
    for (int t = 0; t < T; t++) {
        TT_ASSERT(tokens[t] >= 0 && tokens[t] < V);
        size_t row = (size_t)tokens[t] * H, o = (size_t)t * H;
        if (dt == BE_BF16 && m->embed_dtype == TT_DTYPE_BF16) { /* as stored */
            memcpy((uint16_t *)w->host_x[hb] + o, (const uint16_t *)m->embed + row, (size_t)H * 2);
            continue;
        }
        for (int i = 0; i < H; i++) {
            float f = m->embed_dtype == TT_DTYPE_F32 ? ((const float *)m->embed)[row + i]
                                                     : bf16_to_f32(((const uint16_t *)m->embed)[row + i]);
            if (dt == BE_BF16) ((uint16_t *)w->host_x[hb])[o + i] = f32_to_bf16(f);
            else ((tt_real *)w->host_x[hb])[o + i] = (tt_real)f;
        }
    }
    be_copy_async(x, w->host_x[hb], (size_t)T * H * be_elem_size(dt), BE_H2D, NULL);
    be_event_record(w->host_x_ev[hb], NULL);
}

void model_embed_backward(const tt_model *m, tt_ws *w, const int32_t *tokens, const void *dx) {
    int T = w->T, H = w->H, dt = w->dt;
    be_to_host(w->host_x[0], dx, (size_t)T * H * be_elem_size(dt)); /* after every upload from it */
    for (int t = 0; t < T; t++) {
        tt_real *g = m->wg->embed + (size_t)tokens[t] * H;
        size_t o = (size_t)t * H;
        for (int i = 0; i < H; i++)
            g[i] += dt == BE_BF16 ? (tt_real)bf16_to_f32(((const uint16_t *)w->host_x[0])[o + i])
                                  : ((const tt_real *)w->host_x[0])[o + i];
    }
}

/* Rows [v0, v0+n) of lm_head as a stored block on the device: rows [*o0,
 * *o0 + n) of a (*total, H) blob — the lm_head itself, or its chunk copied
 * to the workspace's staging buffer when it lives on the host. */
static const void *lm_chunk(tt_model *m, tt_ws *w, int v0, int n, size_t *total, size_t *o0) {
    const tt_head_weights *h = &m->head;
    size_t esz = h->lm_dtype == TT_DTYPE_F32 ? 4 : 2, H = (size_t)w->H;
    if (!h->lm_on_host) {
        *total = m->cfg.vocab;
        *o0 = (size_t)v0;
        return h->lm;
    }
    TT_ASSERT(w->lm_stage); /* src: the host arena, never rewritten */
    be_copy_async(w->lm_stage, (const uint8_t *)h->lm + (size_t)v0 * H * esz, (size_t)n * H * esz, BE_H2D, NULL);
    *total = (size_t)n;
    *o0 = 0;
    return w->lm_stage;
}

/* The head in two passes over the vocabulary, a chunk of lm_head rows at a
 * time for all T rows (each chunk staged and dequantized once per pass):
 * the first merges every chunk's logits into each row's online log-sum-exp
 * (xstats) and adds the loss; the second recomputes each chunk's logits,
 * turns them into dlogits and adds dlogits Wc into dxf. */
void model_head(tt_model *m, tt_ws *w, const void *xL, const int32_t *targets, const tt_real *weight, tt_real dscale,
                void *dx, double *loss) {
    const tt_config *c = &m->cfg;
    int T = w->T, H = w->H, V = (int)c->vocab, VC = w->vocab_chunk, dt = w->dt;
    be_copy_async(w->tgt_d, targets, (size_t)T * sizeof *targets, BE_H2D, NULL);
    be_copy_async(w->wt_d, weight, (size_t)T * sizeof *weight, BE_H2D, NULL);
    tt_real *nf = w->norm + 2 * (size_t)H;
    /* distillation: the teacher's logits chunk beside the student's (training passes only) */
    const tt_distill *kd = dx ? w->kd : NULL;
    const tt_model *tm = kd ? kd->teacher : NULL;
    if (kd) { /* the teacher's final norm first: rstdf is the student's again below */
        be_dequant(TT_DTYPE_F32, tm->head.norm, (size_t)H, w->tnorm, BE_REAL);
        be_rmsnorm_fwd(T, H, kd->xL, w->tnorm, (tt_real)tm->cfg.rms_eps, w->txf, w->rstdf, dt);
    }
    be_dequant(TT_DTYPE_F32, m->head.norm, (size_t)H, nf, BE_REAL);
    be_rmsnorm_fwd(T, H, xL, nf, (tt_real)c->rms_eps, w->xf, w->rstdf, dt);
    for (int grad = 0; grad < (dx ? 2 : 1); grad++) { /* 0: statistics and loss, 1: the gradient */
        for (int v0 = 0; v0 < V; v0 += VC) {
            int n = V - v0 < VC ? V - v0 : VC;
            size_t tot, o0;
            if (kd) { /* staged before the student's chunk, which the gradient pass uses last */
                const void *tb = lm_chunk((tt_model *)tm, w, v0, n, &tot, &o0);
                be_linear_w(0, T, H, n, w->txf, H, tm->head.lm_dtype, tb, tot, o0, w->wbuf, 0, w->tlogits, VC, dt);
            }
            const void *blk = lm_chunk(m, w, v0, n, &tot, &o0);
            /* the logits' row stride is the chunk's (a multiple of 8), the last chunk's too */
            be_linear_w(0, T, H, n, w->xf, H, m->head.lm_dtype, blk, tot, o0, w->wbuf, 0, w->logits, VC, dt);
            if (!grad) {
                be_xent_stats(T, n, VC, v0, w->logits, w->tgt_d, w->xstats, dt);
                if (kd) be_kd_stats(T, n, VC, v0, w->logits, w->tlogits, (tt_real)kd->temp, w->kstats, dt);
                continue;
            }
            if (kd)
                be_kd_grad(T, n, VC, v0, w->logits, w->tlogits, w->tgt_d, w->wt_d, dscale, (tt_real)kd->weight,
                           (tt_real)kd->temp, w->xstats, w->kstats, dt);
            else be_xent_grad(T, n, VC, v0, w->logits, w->tgt_d, w->wt_d, dscale, w->xstats, dt);
            be_linear_w(1, T, H, n, w->logits, VC, m->head.lm_dtype, blk, tot, o0, w->wbuf, v0 ? 1 : 0, w->dxf, H, dt);
        }
        for (int r0 = 0; !grad && r0 < T; r0 += XENT_MAX_ROWS) {
            int R = T - r0 < XENT_MAX_ROWS ? T - r0 : XENT_MAX_ROWS;
            be_xent_loss(R, w->xstats + 3 * (size_t)r0, w->tgt_d + r0, w->wt_d + r0, loss);
            if (kd) be_kd_loss(R, w->kstats + 5 * (size_t)r0, w->tgt_d + r0, w->wt_d + r0, (tt_real)kd->temp, w->acc + 2);
        }
    }
    if (!dx) return;
    be_rmsnorm_bwd(T, H, xL, nf, w->rstdf, w->dxf, dx, 0, dt);
    if (m->wg && m->wg->final_norm) be_rmsnorm_bwd_w(T, H, xL, w->rstdf, w->dxf, m->wg->final_norm, dt);
}

void model_head_nll(const tt_ws *w, const int32_t *targets, const tt_real *weight, double *stats, double *nll) {
    int T = w->T;
    be_to_host(stats, w->xstats, 3 * (size_t)T * sizeof *stats); /* after the head's ops: they wrote them */
    for (int r = 0; r < T; r++) {
        const double *st = stats + 3 * (size_t)r;
        /* xent_loss's arithmetic, less the weight */
        nll[r] = targets[r] < 0 || weight[r] == 0 ? NAN : st[0] + log(st[1]) - st[2];
    }
}

double *ws_acc(tt_ws *w) { return w->acc; }

void ws_set_distill(tt_ws *w, const tt_distill *d) {
    if (!d) {
        w->kd = NULL;
        return;
    }
    TT_ASSERT(w->txf && d->teacher && d->xL && d->temp > 0 && d->weight >= 0 && d->weight <= 1);
    TT_ASSERT(d->teacher->cfg.hidden == (uint32_t)w->H && d->teacher->cfg.vocab > 0);
    w->kd_set = *d;
    w->kd = &w->kd_set;
}

/* The embedding and every layer into the checkpoints (LoRA dropout from drop_seed); the last hidden states. */
static void *forward_ck(tt_model *m, tt_lora *lo, tt_ws *w, const int32_t *inputs, uint64_t drop_seed) {
    int L = (int)m->cfg.n_layers;
    size_t TH = (size_t)w->T * w->H;
    TT_ASSERT(w->ck);
    model_embed(m, w, inputs, w->ck);
    for (int l = 0; l < L; l++)
        model_layer_forward(m, lo, w, l, AT(w, w->ck, l * TH), AT(w, w->ck, (l + 1) * TH), drop_seed);
    return AT(w, w->ck, L * TH);
}

const void *model_forward(tt_model *m, tt_lora *lo, tt_ws *w, const int32_t *inputs) {
    return forward_ck(m, lo, w, inputs, 0);
}
void ws_set_seg(tt_ws *w, const int32_t *seg) { w->seg = seg; }

int ws_dtype(const tt_ws *w) { return w->dt; }

/* ---- generation ------------------------------------------------------------- */

void ws_gen_begin(tt_ws *w, int n, const int32_t *pos) {
    TT_ASSERT(w->gen_cap > 0 && n >= 1 && n <= w->S_max && !w->seg);
    w->gen_on = 1;
    w->S = n;
    w->T = w->B * n;
    size_t hh = w->gen_half, nt = (size_t)w->gen_cap * hh;
    for (int b = 0; b < w->B; b++) {
        TT_ASSERT(pos[b] >= 0 && pos[b] + n <= w->gen_cap);
        w->gen_pos[b] = pos[b];
    }
    be_to_device(w->gen_pos_d, w->gen_pos, (size_t)w->B * sizeof *w->gen_pos);
    for (int tab = 0; tab < 2; tab++) { /* row b*n + i: position pos[b] + i */
        for (int b = 0; b < w->B; b++)
            for (int i = 0; i < n; i++)
                memcpy(w->gen_stage + ((size_t)b * n + i) * hh, w->gen_tab + tab * nt + (size_t)(pos[b] + i) * hh,
                       hh * sizeof *w->gen_stage);
        be_to_device(tab ? w->gen_sin : w->gen_cos, w->gen_stage, (size_t)w->T * hh * sizeof *w->gen_stage);
    }
}

void ws_gen_layer(tt_ws *w, void *k, void *v) {
    TT_ASSERT(w->gen_on && k && v);
    w->gen_k = k;
    w->gen_v = v;
}

void ws_gen_end(tt_ws *w) {
    w->gen_on = 0;
    w->S = w->S_max;
    w->T = w->T_max;
    w->gen_k = w->gen_v = NULL;
}

void model_logits(tt_model *m, tt_ws *w, const void *xL, int R, float *out) {
    const tt_config *c = &m->cfg;
    int H = w->H, V = (int)c->vocab, VC = w->vocab_chunk, dt = w->dt;
    TT_ASSERT(R >= 1 && R <= w->T_max);
    tt_real *nf = w->norm + 2 * (size_t)H;
    be_dequant(TT_DTYPE_F32, m->head.norm, (size_t)H, nf, BE_REAL);
    be_rmsnorm_fwd(R, H, xL, nf, (tt_real)c->rms_eps, w->xf, w->rstdf, dt);
    size_t es = be_elem_size(dt);
    unsigned char *chunk = tt_xmalloc((size_t)R * VC * es);
    for (int v0 = 0; v0 < V; v0 += VC) {
        int n = V - v0 < VC ? V - v0 : VC;
        size_t tot, o0;
        const void *blk = lm_chunk(m, w, v0, n, &tot, &o0);
        be_linear_w(0, R, H, n, w->xf, H, m->head.lm_dtype, blk, tot, o0, w->wbuf, 0, w->logits, VC, dt);
        be_to_host(chunk, w->logits, (size_t)R * VC * es);
        for (int r = 0; r < R; r++)
            for (int j = 0; j < n; j++) {
                size_t i = (size_t)r * VC + j;
                out[(size_t)r * V + v0 + j] = dt == BE_BF16 ? bf16_to_f32(((const uint16_t *)chunk)[i])
                                                            : (float)((const tt_real *)chunk)[i];
            }
    }
    free(chunk);
}

/* ---- whole model, micro-batch at a time (the reference path) --------------- */

double model_target_weight(const int32_t *targets, const tt_real *weight, size_t n) {
    double wsum = 0;
    for (size_t i = 0; i < n; i++) wsum += targets[i] >= 0 ? weight[i] : 0;
    return wsum;
}

double model_micro_step(tt_model *m, tt_lora *lo, tt_ws *w, const int32_t *inputs, const int32_t *targets,
                        const tt_real *weight, tt_real dscale, int backward, uint64_t drop_seed) {
    int L = (int)m->cfg.n_layers;
    size_t TH = (size_t)w->T * w->H;
    void *xL = forward_ck(m, lo, w, inputs, drop_seed);
    void *dx = w->dx0, *dprev = w->dx1;
    double acc[3] = {0, 0, 0}, loss;
    be_to_device(w->acc, acc, sizeof acc);
    model_head(m, w, xL, targets, weight, dscale, backward ? dx : NULL, w->acc);
    be_to_host(acc, w->acc, sizeof acc); /* the one read-back */
    /* with distillation, the objective: (1 - alpha) CE + alpha tau^2 KL */
    loss = backward && w->kd ? (1 - (double)w->kd->weight) * acc[0] + (double)w->kd->weight * acc[2] : acc[0];
    if (!backward) return loss;
    for (int l = L - 1; l >= 0; l--) {
        model_layer_backward(m, lo, w, l, AT(w, w->ck, l * TH), dx, dprev, drop_seed);
        void *t = dx; dx = dprev; dprev = t;
    }
    if (m->wg && m->wg->embed) model_embed_backward(m, w, inputs, dx);
    return loss;
}
