/* core/prune.c — see prune.h. */
#include "core/prune.h"

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/fulltrain.h"
#include "core/base/rng.h"
#include "io/storeio.h"
#include "io/tier.h"

#include <errno.h>
#include <libgen.h>
#include <sys/mman.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int prune_parse_method(const char *s) {
    static const char *const names[] = {"stru", "rand", "semi", "unst"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

int prune_parse_importance(const char *s) {
    if (strcmp(s, "magnitude") == 0) return PRUNE_MAGNITUDE;
    if (strcmp(s, "taylor") == 0) return PRUNE_TAYLOR;
    return -1;
}

/* ---- shared helpers ----------------------------------------------------------- */

/* Progress of one pass, in bytes of the input store. */
typedef struct progress {
    prune_progress_fn fn;
    void *ctx;
    const char *phase;
    uint64_t done, total;
} progress;

static void prog_start(progress *p, const char *phase, uint64_t total) {
    p->phase = phase;
    p->done = 0;
    p->total = total;
    if (p->fn) p->fn(p->ctx, phase, 0, total);
}

static void prog_add(progress *p, uint64_t n) {
    p->done += n;
    if (p->fn && p->done < p->total) p->fn(p->ctx, p->phase, p->done, p->total);
}

static void prog_end(progress *p) {
    if (p->fn && p->total) p->fn(p->ctx, p->phase, p->total, p->total);
}


/* Quantization is the last step of LoRAM's pipeline: pruning (and ranking
 * weights by importance) must see the unquantized values. */
static int refuse_nf4(const store_reader *r, const char *path, const char *what) {
    for (uint32_t i = 0; i < tier_n_tensors(r->s); i++)
        if (dtype_is_nf4(store_reader_dtype(r, i)))
            return TT_FAIL(-EINVAL, "%s is already NF4-quantized (tensor %s); %s", path, tier_tensor_at(r->s, i)->name,
                           what);
    return 0;
}

/* Importance ranks values: a NaN or infinity would make the ranking meaningless. */
static int check_finite(const char *path, const char *tensor, const float *x, uint64_t n, const char *what) {
    for (uint64_t j = 0; j < n; j++)
        if (!isfinite(x[j]))
            return TT_FAIL(-EINVAL, "%s: %s of tensor %s has a non-finite value at index %llu; cannot rank by importance",
                           path, what, tensor, (unsigned long long)j);
    return 0;
}

/* The elementwise saliency of weight j: magnitude w^2, taylor |w * dL/dw|
 * (g = NULL for magnitude). */
static inline double saliency(const float *w, const float *g, uint64_t j) {
    return g ? fabs((double)w[j] * (double)g[j]) : (double)w[j] * (double)w[j];
}

static int in_range(const tt_tensor_desc *d, uint32_t a, uint32_t b) {
    return d->role == TT_ROLE_LINEAR && d->layer >= 0 && (uint32_t)d->layer >= a && (uint32_t)d->layer < b;
}

/* ---- structured: group scores and selection ---------------------------------- */

/* Adds the saliency of every weight of projection d (w, gradients g or NULL)
 * to the score of its coupled group: kv[j] for KV head j (with its query group
 * and o_proj columns), ffn[c] for MLP channel c. Rows are summed first, and
 * o/down columns into colsum (d->cols doubles), so the inner loops are plain
 * streams over memory and the group of a row or column is found once. */
static void add_group_scores(const tt_config *c, const tt_tensor_desc *d, const float *w, const float *g,
                             double *colsum, double *kv, double *ffn) {
    uint64_t hd = c->head_dim, grp = c->n_heads / c->n_kv_heads, cols = d->cols;
    int by_col = d->proj == TT_PROJ_O || d->proj == TT_PROJ_DOWN; /* input columns are heads / channels */
    if (by_col) memset(colsum, 0, cols * sizeof *colsum);
    for (uint64_t r = 0; r < d->rows; r++) {
        const float *wr = w + r * cols, *gr = g ? g + r * cols : NULL;
        if (by_col) {
            if (gr) for (uint64_t j = 0; j < cols; j++) colsum[j] += fabs((double)wr[j] * (double)gr[j]);
            else for (uint64_t j = 0; j < cols; j++) colsum[j] += (double)wr[j] * (double)wr[j];
            continue;
        }
        double s = 0;
        if (gr) for (uint64_t j = 0; j < cols; j++) s += fabs((double)wr[j] * (double)gr[j]);
        else for (uint64_t j = 0; j < cols; j++) s += (double)wr[j] * (double)wr[j];
        if (d->proj == TT_PROJ_Q) kv[r / hd / grp] += s;  /* row r belongs to query head r / hd */
        else if (d->proj == TT_PROJ_K || d->proj == TT_PROJ_V) kv[r / hd] += s;
        else ffn[r] += s;                                  /* gate, up: row r is channel r */
    }
    if (d->proj == TT_PROJ_O)
        for (uint64_t j = 0; j < cols; j++) kv[j / hd / grp] += colsum[j];
    else if (d->proj == TT_PROJ_DOWN)
        for (uint64_t j = 0; j < cols; j++) ffn[j] += colsum[j];
}

typedef struct scored {
    double s;
    uint32_t i;
} scored;

/* Best first; equal scores: lower index first (a deterministic tie-break). */
static int by_score(const void *pa, const void *pb) {
    const scored *a = pa, *b = pb;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

/* Writes the indices i < n with mark[i] set to out, ascending. */
static void emit_marked(const uint8_t *mark, uint32_t n, uint32_t *out) {
    for (uint32_t i = 0, m = 0; i < n; i++)
        if (mark[i]) out[m++] = i;
}

/* The k of n groups with the highest score, ascending, into kept. */
static void keep_best(const double *score, uint32_t n, uint32_t k, uint32_t *kept) {
    scored *v = tt_xmalloc((size_t)n * sizeof *v);
    for (uint32_t i = 0; i < n; i++) v[i] = (scored){score[i], i};
    qsort(v, n, sizeof *v, by_score);
    uint8_t *mark = tt_xcalloc(n, 1);
    for (uint32_t i = 0; i < k; i++) mark[v[i].i] = 1;
    emit_marked(mark, n, kept);
    free(mark);
    free(v);
}


/* Original row (or column) indices of the heads kept: for each kept KV head
 * kv[k], its `group` query heads kv[k]*group .. +group-1 (group = 1 for k_proj
 * and v_proj), head_dim rows each. */
static void head_indices(const uint32_t *kv, uint32_t nkv, uint32_t group, uint32_t hd, uint32_t *out) {
    uint64_t m = 0;
    for (uint32_t k = 0; k < nkv; k++)
        for (uint32_t j = 0; j < group; j++)
            for (uint32_t t = 0; t < hd; t++) out[m++] = (kv[k] * group + j) * hd + t;
}


typedef struct stru_ctx {
    store_reader *r;
    const tt_config *src, *dst; /* the input model and the pruned one */
    const tier_prune_map *map;
    uint32_t a, b;
    float *buf;                 /* one input projection of the pruned layers */
    uint32_t *idx;              /* kept rows or columns of one projection */
    progress *prog;
} stru_ctx;

/* Tensor i of the pruned store: tensor i of the input restricted to the rows
 * (q, k, v, gate, up) or columns (o, down) of the kept groups; tensors outside
 * the pruned layers as they are. */
static int fill_stru(void *vc, uint32_t i, const tt_tensor_desc *d, float *out) {
    stru_ctx *c = vc;
    tt_tensor_desc s;
    config_tensor(c->src, i, &s);
    int pruned = in_range(&s, c->a, c->b);
    int rc = store_reader_tensor(c->r, i, pruned ? c->buf : out); /* unpruned tensors: same shape */
    if (rc) return rc;
    prog_add(c->prog, tier_tensor_at(c->r->s, i)->nbytes);
    if (!pruned) return 0;
    uint32_t l = (uint32_t)s.layer, hd = c->src->head_dim, grp = c->src->n_heads / c->src->n_kv_heads;
    uint32_t nkv = c->dst->layers[l].n_kv_heads;
    const uint32_t *idx = c->idx;
    uint64_t n; /* kept rows (or columns) */
    switch (s.proj) {
    case TT_PROJ_Q:
    case TT_PROJ_O:
        head_indices(c->map->kv[l], nkv, grp, hd, c->idx);
        n = (uint64_t)nkv * grp * hd;
        break;
    case TT_PROJ_K:
    case TT_PROJ_V:
        head_indices(c->map->kv[l], nkv, 1, hd, c->idx);
        n = (uint64_t)nkv * hd;
        break;
    default: /* gate, up, down: MLP channels */
        idx = c->map->ffn[l];
        n = c->dst->layers[l].ffn;
    }
    if (s.proj == TT_PROJ_O || s.proj == TT_PROJ_DOWN) {
        TT_ASSERT(d->rows == s.rows && d->cols == n);
        for (uint64_t r = 0; r < s.rows; r++)
            for (uint64_t k = 0; k < n; k++) out[r * n + k] = c->buf[r * s.cols + idx[k]];
    } else {
        TT_ASSERT(d->rows == n && d->cols == s.cols);
        for (uint64_t k = 0; k < n; k++) memcpy(out + k * s.cols, c->buf + idx[k] * s.cols, s.cols * sizeof *out);
    }
    return 0;
}

/* Bytes of the input's tensors: all of them, or (only_pruned) those of the
 * projections in layers [a, b). */
static uint64_t input_bytes(const store_reader *r, uint32_t a, uint32_t b, int only_pruned) {
    const tt_config *c = store_reader_config(r);
    tt_tensor_desc d;
    uint64_t n = 0;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &d);
        if (!only_pruned || in_range(&d, a, b)) n += tier_tensor_at(r->s, i)->nbytes;
    }
    return n;
}

/* Largest rows * cols of the projections in layers [a, b). */
static uint64_t max_pruned_tensor(const tt_config *c, uint32_t a, uint32_t b) {
    tt_tensor_desc d;
    uint64_t m = 0;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &d);
        if (in_range(&d, a, b) && d.rows * d.cols > m) m = d.rows * d.cols;
    }
    return m;
}

/* Chooses the kept groups of layers [a, b) into map: at random (rand), or the
 * best-scoring ones, scores summed over one pass through the projections. */
static int choose_groups(store_reader *r, const char *in, const tt_prune_opts *o, const tt_config *dst, uint32_t a,
                         uint32_t b, float **grads, float *buf, progress *prog, tier_prune_map *map) {
    const tt_config *src = store_reader_config(r);
    uint32_t nkv = src->n_kv_heads, nffn = src->ffn;
    if (o->method == PRUNE_RAND) {
        tt_rng rng;
        rng_seed(&rng, o->seed, rng_hash_str("prune-rand"));
        for (uint32_t l = a; l < b; l++) {
            rng_subset(&rng, nkv, dst->layers[l].n_kv_heads, map->kv[l]);
            rng_subset(&rng, nffn, dst->layers[l].ffn, map->ffn[l]);
        }
        return 0;
    }
    uint64_t nl = b - a, maxcols = src->hidden > nffn ? src->hidden : nffn;
    double *kv_s = calloc(nl * nkv, sizeof *kv_s), *ffn_s = calloc(nl * nffn, sizeof *ffn_s);
    double *colsum = malloc(maxcols * sizeof *colsum);
    int rc = 0;
    if (!kv_s || !ffn_s || !colsum) rc = TT_FAIL(-ENOMEM, "out of memory for the group scores of %s", in);
    prog_start(prog, "scoring", input_bytes(r, a, b, 1));
    tt_tensor_desc d;
    for (uint32_t i = 0; rc == 0 && i < config_n_tensors(src); i++) {
        config_tensor(src, i, &d);
        if (!in_range(&d, a, b)) continue;
        /* in_range: fulltrain_calib_grads gave this projection its gradient (only [a, b) have one) */
        const float *g = grads ? grads[i] : NULL;
        TT_ASSERT(!grads || g);
        rc = store_reader_tensor(r, i, buf);
        if (rc == 0) rc = check_finite(in, d.name, buf, d.rows * d.cols, "a weight");
        if (rc == 0 && g) rc = check_finite(in, d.name, g, d.rows * d.cols, "the calibration gradient");
        if (rc) break;
        uint32_t l = (uint32_t)d.layer;
        add_group_scores(src, &d, buf, g, colsum, kv_s + (l - a) * nkv, ffn_s + (l - a) * nffn);
        prog_add(prog, tier_tensor_at(r->s, i)->nbytes);
    }
    if (rc == 0) {
        prog_end(prog);
        for (uint32_t l = a; l < b; l++) {
            keep_best(kv_s + (l - a) * nkv, nkv, dst->layers[l].n_kv_heads, map->kv[l]);
            keep_best(ffn_s + (l - a) * nffn, nffn, dst->layers[l].ffn, map->ffn[l]);
        }
    }
    free(kv_s);
    free(ffn_s);
    free(colsum);
    return rc;
}

static int prune_structured(store_reader *r, const char *in, const char *out, const tt_prune_opts *o, uint32_t a,
                            uint32_t b, const uint32_t *dtypes, float **grads, progress *prog, tt_config *dst) {
    const tt_config *src = store_reader_config(r);
    tt_layer_dims nd;
    config_pruned_dims(src, o->ratio, &nd);
    if (nd.ffn == 0) /* (kv' = nkv - floor(nkv r) is at least 1 for r < 1) */
        return TT_FAIL(-EINVAL, "--ratio %g would remove all %u MLP channels of %s; use a smaller ratio", o->ratio,
                       src->ffn, in);
    *dst = *src;
    int rc = config_prune(dst, o->ratio, a, b);
    TT_ASSERT(rc == 0); /* ratio and range were checked by prune_store */
    /* one projection of the pruned layers at a time (the other tensors are
     * read straight into store_write's buffer) */
    float *buf = malloc(max_pruned_tensor(src, a, b) * sizeof *buf);
    uint32_t *idx = malloc((src->n_heads * src->head_dim > src->ffn ? src->n_heads * src->head_dim : src->ffn) *
                           sizeof *idx);
    tier_prune_map *map = tt_xcalloc(1, sizeof *map);
    for (uint32_t l = a; l < b; l++) {
        map->kv[l] = tt_xmalloc(dst->layers[l].n_kv_heads * sizeof(uint32_t));
        map->ffn[l] = tt_xmalloc(dst->layers[l].ffn * sizeof(uint32_t));
    }
    if (!buf || !idx) rc = TT_FAIL(-ENOMEM, "out of memory pruning %s", in);
    if (rc == 0) rc = choose_groups(r, in, o, dst, a, b, grads, buf, prog, map);
    if (rc == 0) {
        stru_ctx c = {r, src, dst, map, a, b, buf, idx, prog};
        tier_write_opts wo = {dtypes, map, 0, tier_source(r->s)}; /* a pruned copy of the same source */
        prog_start(prog, "writing", input_bytes(r, a, b, 0));
        rc = store_write(out, dst, &wo, fill_stru, &c);
        if (rc == 0) prog_end(prog);
    }
    store_prune_map_clear(map);
    free(map);
    free(idx);
    free(buf);
    return rc;
}

/* ---- semi-structured (2:4) and unstructured masks ---------------------------- */

/* 2:4 along the input dimension of a (rows, cols) matrix: in each group of 4
 * consecutive weights of a row the 2 of highest saliency stay (equal
 * saliency: the lower index stays), the others become 0; a final group of
 * t < 4 keeps min(t, 2). Returns the number of weights set to zero. */
static uint64_t mask_2of4(float *w, const float *g, uint64_t rows, uint64_t cols) {
    uint64_t zeroed = 0;
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c0 = 0; c0 < cols; c0 += 4) {
            uint64_t base = r * cols + c0, t = cols - c0 < 4 ? cols - c0 : 4, keep = t < 2 ? t : 2;
            double s[4];
            for (uint64_t e = 0; e < t; e++) s[e] = saliency(w, g, base + e);
            for (uint64_t e = 0; e < t; e++) {
                uint64_t better = 0; /* weights of the group that rank before e */
                for (uint64_t x = 0; x < t; x++) better += s[x] > s[e] || (s[x] == s[e] && x < e);
                if (better >= keep) {
                    w[base + e] = 0.0f;
                    zeroed++;
                }
            }
        }
    return zeroed;
}

/* An f32 key ordered like the saliency, for the unstructured threshold (f32
 * halves the scratch memory of the largest projections): |w| (orders exactly
 * as w^2 does, without its underflow) or |w * g| rounded to f32 (saliencies
 * within one f32 rounding of each other count as equal). */
static inline float sal_key(const float *w, const float *g, uint64_t j) {
    return g ? (float)fabs((double)w[j] * (double)g[j]) : fabsf(w[j]);
}

static inline void swapf(float *a, float *b) { float t = *a; *a = *b; *b = t; }

/* The k-th smallest (0-based) of v[0..n) into *kth, reordering v; returns how
 * many values are strictly smaller. Quickselect with a three-way partition
 * (runs of equal values, common in bf16 or already sparse weights, cost one
 * pass) and a median-of-three pivot. Invariant: every value left of lo is
 * smaller than every value in [lo, hi), which are smaller than those right of hi. */
static uint64_t kth_smallest(float *v, uint64_t n, uint64_t k, float *kth) {
    uint64_t lo = 0, hi = n;
    while (hi - lo > 1) {
        float x = v[lo], y = v[lo + (hi - lo) / 2], z = v[hi - 1];
        float p = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        uint64_t lt = lo, i = lo, gt = hi; /* [lo,lt) < p, [lt,i) == p, [gt,hi) > p */
        while (i < gt) {
            if (v[i] < p) swapf(&v[lt++], &v[i++]);
            else if (v[i] > p) swapf(&v[i], &v[--gt]);
            else i++;
        }
        if (k < lt) hi = lt;
        else if (k >= gt) lo = gt;
        else {
            *kth = p;
            return lt;
        }
    }
    *kth = v[lo];
    return lo;
}

/* Sets the round(ratio * n) weights of lowest saliency to zero (equal
 * saliency at the threshold: lower indices first); tmp holds n floats.
 * Returns the number set to zero. */
static uint64_t mask_unst(float *w, const float *g, uint64_t n, double ratio, float *tmp) {
    uint64_t k = (uint64_t)floor(ratio * (double)n + 0.5);
    if (k == 0) return 0;
    for (uint64_t j = 0; j < n; j++) tmp[j] = sal_key(w, g, j);
    float thr;
    uint64_t ties = k - kth_smallest(tmp, n, k - 1, &thr); /* values equal to thr that go */
    for (uint64_t j = 0; j < n; j++) {
        float s = sal_key(w, g, j);
        if (s < thr) w[j] = 0.0f;
        else if (s == thr && ties) {
            w[j] = 0.0f;
            ties--;
        }
    }
    return k;
}

typedef struct mask_ctx {
    store_reader *r;
    const char *path;
    int method;
    double ratio;
    uint32_t a, b;
    float **grads;     /* taylor, else NULL */
    float *tmp;        /* unst: one tensor of keys */
    progress *prog;
    uint64_t masked, zeroed;
} mask_ctx;

static int fill_mask(void *vc, uint32_t i, const tt_tensor_desc *d, float *out) {
    mask_ctx *c = vc;
    int rc = store_reader_tensor(c->r, i, out);
    if (rc) return rc;
    prog_add(c->prog, tier_tensor_at(c->r->s, i)->nbytes);
    if (!in_range(d, c->a, c->b)) return 0; /* grads[i] is NULL outside [a, b): never read there */
    uint64_t n = d->rows * d->cols;
    const float *g = c->grads ? c->grads[i] : NULL;
    TT_ASSERT(!c->grads || g);
    rc = check_finite(c->path, d->name, out, n, "a weight");
    if (rc == 0 && g) rc = check_finite(c->path, d->name, g, n, "the calibration gradient");
    if (rc) return rc;
    c->masked += n;
    c->zeroed += c->method == PRUNE_SEMI ? mask_2of4(out, g, d->rows, d->cols) : mask_unst(out, g, n, c->ratio, c->tmp);
    return 0;
}

static int prune_masked(store_reader *r, const char *in, const char *out, const tt_prune_opts *o, uint32_t a,
                        uint32_t b, const uint32_t *dtypes, float **grads, progress *prog, tt_prune_report *rep) {
    const tt_config *cfg = store_reader_config(r);
    mask_ctx c = {r, in, o->method, o->ratio, a, b, grads, NULL, prog, 0, 0};
    if (o->method == PRUNE_UNST && !(c.tmp = malloc(max_pruned_tensor(cfg, a, b) * sizeof *c.tmp)))
        return TT_FAIL(-ENOMEM, "out of memory pruning %s", in);
    /* zeros compress: layer extents are stored lz4 where that saves 1/8 */
    tier_write_opts wo = {dtypes, tier_prune(r->s), 1, tier_source(r->s)};
    prog_start(prog, "writing", input_bytes(r, a, b, 0));
    int rc = store_write(out, cfg, &wo, fill_mask, &c);
    if (rc == 0) prog_end(prog);
    free(c.tmp);
    rep->masked = c.masked;
    rep->zeroed = c.zeroed;
    return rc;
}

/* ---- the entry points ---------------------------------------------------------- */

static int is_structurally_pruned(const store_reader *r) {
    const tt_config *c = store_reader_config(r);
    if (tier_prune(r->s)) return 1;
    for (uint32_t l = 0; l < c->n_layers; l++)
        if (c->layers[l].pruned) return 1;
    return 0;
}

int prune_check_flags(const tt_prune_opts *o) {
    TT_ASSERT(o->method >= PRUNE_STRU && o->method <= PRUNE_UNST);
    TT_ASSERT(o->importance == PRUNE_MAGNITUDE || o->importance == PRUNE_TAYLOR);
    if (o->method == PRUNE_SEMI) {
        if (o->ratio != 0.5)
            return TT_FAIL(-EINVAL, "--ratio must be 0.5 (or left out) with --method semi: 2:4 pruning zeroes 2 of "
                                    "every 4 weights");
    } else if (!(o->ratio > 0.0 && o->ratio < 1.0)) {
        return TT_FAIL(-EINVAL, "--ratio must be strictly between 0 and 1 (got %g)", o->ratio);
    }
    if (o->layer_b != 0 && o->layer_a >= o->layer_b)
        return TT_FAIL(-EINVAL, "--layers %u:%u is an empty range; give A:B with A < B (layers A..B-1)", o->layer_a,
                       o->layer_b);
    if (o->method == PRUNE_RAND && o->importance != PRUNE_MAGNITUDE)
        return TT_FAIL(-EINVAL, "--importance does not apply to --method rand, which chooses heads and channels at "
                                "random (--seed)");
    if ((o->hbm || o->host) && o->importance != PRUNE_TAYLOR)
        return TT_FAIL(-EINVAL, "%s is only used with --importance taylor (it budgets the calibration)",
                       o->hbm ? "--hbm" : "--host");
    if (o->importance == PRUNE_TAYLOR && o->calib_samples < 1)
        return TT_FAIL(-EINVAL, "--calib-samples must be at least 1 (got %d)", o->calib_samples);
    if (o->importance == PRUNE_TAYLOR && (o->calib_seq < 2 || o->calib_seq > (1 << 20)))
        return TT_FAIL(-EINVAL, "--calib-seq must be 2..1048576 (got %d): each window predicts its tokens from the "
                                "ones before", o->calib_seq);
    return 0;
}

/* Checks of the options that need no file: the flags', and taylor's tokens. */
static int check_opts(const tt_prune_opts *o) {
    int rc = prune_check_flags(o);
    if (rc == 0 && o->importance == PRUNE_TAYLOR && (!o->calib || o->n_calib == 0))
        rc = TT_FAIL(-EINVAL, "--importance taylor needs calibration tokens: give --calib FILE (from tiertrain tokenize)");
    return rc;
}

int prune_store(const char *in, const char *out, const tt_prune_opts *o, tt_prune_report *rep) {
    /* before any long work (calibration, scoring): the new store is renamed over out at the end */
    int rc = store_check_output("-o", out, in);
    if (rc == 0) rc = check_opts(o);
    if (rc) return rc;
    store_reader r;
    rc = store_reader_open(&r, in);
    if (rc) return rc;
    const tt_config *src = store_reader_config(&r);
    uint32_t nt = config_n_tensors(src), a = o->layer_a, b = o->layer_b;
    uint32_t *dtypes = NULL;
    float **grads = NULL;
    void *gmap = NULL; /* streamed calibration: the gradients' mapping */
    uint64_t gmap_len = 0;
    tt_prune_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    rep->before = *src;
    rep->after = *src;
    progress prog = {o->progress, o->progress_ctx, NULL, 0, 0};
    int structured = o->method == PRUNE_STRU || o->method == PRUNE_RAND;
    if (b == 0) config_default_prune_layers(src, &a, &b);
    rc = refuse_nf4(&r, in, "prune the bf16/f32 model and quantize after pruning (tiertrain quantize)");
    if (rc == 0 && structured && is_structurally_pruned(&r))
        rc = TT_FAIL(-EINVAL, "%s is already structurally pruned; structured pruning starts from the original "
                              "model (2:4 or unstructured pruning may follow it)", in);
    if (rc == 0 && (a >= b || b > src->n_layers))
        rc = TT_FAIL(-EINVAL, "--layers %u:%u is not a non-empty range within 0:%u (%s has %u layers)", a, b,
                     src->n_layers, in, src->n_layers);
    if (rc) goto done;
    rep->layer_a = a;
    rep->layer_b = b;
    dtypes = tt_xmalloc(nt * sizeof *dtypes);
    for (uint32_t i = 0; i < nt; i++) dtypes[i] = store_reader_dtype(&r, i);
    if (o->importance == PRUNE_TAYLOR) {
        grads = tt_xcalloc(nt, sizeof *grads);
        if (prog.fn) prog.fn(prog.ctx, "Taylor calibration", 0, 0);
        if (o->hbm || o->host) { /* streamed: the gradients in a temporary file beside out, mapped */
            char *od = strdup(out);
            TT_ASSERT(od);
            rc = fulltrain_calib_grads_stream(in, o->calib, o->n_calib, o->calib_samples, o->calib_seq, a, b, o->hbm,
                                              o->host, dirname(od), grads, &gmap, &gmap_len);
            free(od);
        } else rc = fulltrain_calib_grads(in, o->calib, o->n_calib, o->calib_samples, o->calib_seq, a, b, grads);
        if (rc) goto done;
        if (prog.fn) prog.fn(prog.ctx, "Taylor calibration", 1, 0);
    }
    if (structured) rc = prune_structured(&r, in, out, o, a, b, dtypes, grads, &prog, &rep->after);
    else rc = prune_masked(&r, in, out, o, a, b, dtypes, grads, &prog, rep);
    if ((rc == -ENOSPC || rc == -EDQUOT) && gmap) { /* the disk's free space was what the held gradients left */
        char g[32];
        rc = TT_FAIL(rc, "%s (the calibration gradients beside it, %s, are held until it is written: free that much "
                     "more)", tt_lasterr(), tt_fmt_bytes(gmap_len, g, sizeof g));
    }
done:
    if (gmap) munmap(gmap, gmap_len);
    else if (grads)
        for (uint32_t i = 0; i < nt; i++) free(grads[i]);
    free(grads);
    free(dtypes);
    store_reader_close(&r);
    return rc;
}

/* ---- quantize -------------------------------------------------------------------- */

typedef struct copy_ctx {
    store_reader *r;
    progress *prog;
    const uint32_t *dtypes; /* each tensor's dtype in the output */
} copy_ctx;

static int fill_copy(void *vc, uint32_t i, const tt_tensor_desc *d, float *out) {
    copy_ctx *c = vc;
    int rc = store_reader_tensor(c->r, i, out);
    if (rc == 0 && dtype_is_nf4(c->dtypes[i])) /* a NaN is the input's: name it, not the output */
        rc = store_check_quantizable(tier_path(c->r->s), d->name, out, d->rows * d->cols, d->cols);
    if (rc == 0) prog_add(c->prog, tier_tensor_at(c->r->s, i)->nbytes);
    return rc;
}

int quantize_store(const char *in, const char *out, int double_quant, prune_progress_fn progress_fn, void *progress_ctx) {
    int rc = store_check_output("-o", out, in);
    if (rc) return rc;
    store_reader r;
    rc = store_reader_open(&r, in);
    if (rc) return rc;
    rc = refuse_nf4(&r, in, "quantize the bf16/f32 store it was made from");
    if (rc == 0) {
        const tt_config *cfg = store_reader_config(&r);
        uint32_t nt = config_n_tensors(cfg);
        uint32_t *dtypes = tt_xmalloc(nt * sizeof *dtypes);
        tt_tensor_desc d;
        for (uint32_t i = 0; i < nt; i++) {
            config_tensor(cfg, i, &d);
            /* QLoRA quantizes the projections only; embeddings, lm_head and norms keep their precision */
            dtypes[i] = d.role == TT_ROLE_LINEAR ? (double_quant ? TT_DTYPE_NF4DQ : TT_DTYPE_NF4)
                                                 : store_reader_dtype(&r, i);
        }
        progress prog = {progress_fn, progress_ctx, NULL, 0, 0};
        copy_ctx c = {&r, &prog, dtypes};
        /* the pruning map and per-layer dims travel with cfg; lz4 keeps sparse (2:4,
         * unstructured) layers compressed, dense ones never save 1/8 and stay raw */
        tier_write_opts wo = {dtypes, tier_prune(r.s), 1, tier_source(r.s)};
        prog_start(&prog, "quantizing", input_bytes(&r, 0, 0, 0));
        rc = store_write(out, cfg, &wo, fill_copy, &c);
        if (rc == 0) prog_end(&prog);
        free(dtypes);
    }
    store_reader_close(&r);
    return rc;
}
