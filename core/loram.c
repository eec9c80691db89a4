/* core/loram.c — see loram.h. */
#include "core/loram.h"

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "io/storeio.h"
#include "io/uring.h"

#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

/* The adapter's projection index is the store's: both follow HF's q,k,v,o,gate,up,down order. */
_Static_assert((int)PEFT_N_PROJ == (int)TT_PROJ_COUNT && (int)PEFT_PROJ_Q == (int)TT_PROJ_Q &&
                   (int)PEFT_PROJ_O == (int)TT_PROJ_O && (int)PEFT_PROJ_DOWN == (int)TT_PROJ_DOWN,
               "peft_proj and tt_proj must agree");

typedef struct proj_shape {
    uint64_t out, in;
} proj_shape;

/* (out, in) of every projection of cfg, entry l * TT_PROJ_COUNT + p, taken
 * from config_tensor so that there is one table of shapes. Caller frees. */
static proj_shape *proj_shapes(const tt_config *cfg) {
    proj_shape *s = tt_xcalloc((size_t)cfg->n_layers * TT_PROJ_COUNT, sizeof *s);
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(cfg); i++) {
        config_tensor(cfg, i, &d);
        if (d.role == TT_ROLE_LINEAR) s[(size_t)d.layer * TT_PROJ_COUNT + (size_t)d.proj] = (proj_shape){d.rows, d.cols};
    }
    return s;
}

static int targeted(const peft_adapter *a, int p) { return (a->target_mask >> p) & 1u; }

void loram_original_config(const tt_config *pruned, tt_config *orig) {
    *orig = *pruned;
    for (uint32_t l = 0; l < orig->n_layers; l++)
        orig->layers[l] = (tt_layer_dims){pruned->n_heads, pruned->n_kv_heads, pruned->ffn, 0};
}

/* Index of the first non-finite value of x[0..n), or n. */
static uint64_t first_nonfinite(const float *x, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return n;
}

int loram_check_base(const peft_adapter *a, const char *dir, const tt_config *cfg, const tier_prune_map *map,
                     const char *model) {
    if (!a->base_fp || a->base_fp == tier_base_fingerprint(cfg, map)) return 0;
    return TT_FAIL(-EINVAL, "adapter %s was trained on a store with other shapes or another pruning map than %s "
                   "(other kept heads or channels); use it with the store it was trained on%s", dir, model,
                   map ? "" : ", or recover it first if that store was pruned");
}

int loram_check_adapter(const peft_adapter *a, const char *dir, const tt_config *cfg, const char *model) {
    if (a->n_layers != cfg->n_layers)
        return TT_FAIL(-EINVAL, "adapter %s was trained for another model: it has %u layers but %s has %u", dir,
                       a->n_layers, model, cfg->n_layers);
    tt_config *orig = tt_xmalloc(sizeof *orig);
    loram_original_config(cfg, orig);
    proj_shape *have = proj_shapes(cfg), *full = proj_shapes(orig);
    int any_pruned = 0, rc = 0;
    for (uint32_t l = 0; l < cfg->n_layers; l++) any_pruned |= cfg->layers[l].pruned != 0;
    for (uint32_t l = 0; l < cfg->n_layers && rc == 0; l++)
        for (int p = 0; p < TT_PROJ_COUNT && rc == 0; p++) {
            if (!targeted(a, p)) continue;
            const peft_lora *x = peft_at(a, l, p);
            proj_shape want = have[(size_t)l * TT_PROJ_COUNT + (size_t)p];
            proj_shape o = full[(size_t)l * TT_PROJ_COUNT + (size_t)p];
            if (x->out != want.out || x->in != want.in) {
                /* the two mistakes a LoRAM user makes: the pruned adapter on the original
                 * store (it needs recovery), the recovered one on the pruned store */
                const char *hint = "";
                if (cfg->layers[l].pruned && x->out == o.out && x->in == o.in)
                    hint = "; the adapter has the unpruned model's shapes (already recovered?): use it with the "
                           "original store";
                else if (!any_pruned && x->out <= want.out && x->in <= want.in)
                    hint = "; an adapter trained on a pruned store must go through `tiertrain recover` first";
                rc = TT_FAIL(-EINVAL,
                             "adapter %s was trained for another model: layer %u %s is %u x %u (out x in) in the adapter "
                             "but %llu x %llu in %s%s",
                             dir, l, lora_proj_name(p), x->out, x->in, (unsigned long long)want.out,
                             (unsigned long long)want.in, model, hint);
                break;
            }
            uint64_t na = (uint64_t)a->rank * x->in, nb = (uint64_t)x->out * a->rank;
            uint64_t ia = first_nonfinite(x->A, na), ib = first_nonfinite(x->B, nb);
            if (ia < na || ib < nb)
                rc = TT_FAIL(-EINVAL, "adapter %s: layer %u %s lora_%c holds a non-finite value (element %llu); the "
                             "adapter is corrupt or its training diverged", dir, l, lora_proj_name(p), ia < na ? 'A' : 'B',
                             (unsigned long long)(ia < na ? ia : ib));
        }
    free(have);
    free(full);
    free(orig);
    return rc;
}

/* The original index of pruned index i along the dimension that structured
 * pruning cut in projection p of pruned layer l: output rows of q/k/v/gate/up,
 * input columns of o/down. GQA groups are kept whole (query head h uses KV
 * head h / g, as transformers' repeat_kv does), so pruned query head h is
 * member h % g of kept KV head h / g, and maps to original head kv*g + h % g. */
static uint32_t orig_index(const tt_config *cfg, const tier_prune_map *map, uint32_t l, int p, uint32_t i) {
    uint32_t hd = cfg->head_dim, g = cfg->n_heads / cfg->n_kv_heads;
    switch (p) {
    case TT_PROJ_Q:
    case TT_PROJ_O: {
        uint32_t h = i / hd;
        return (map->kv[l][h / g] * g + h % g) * hd + i % hd;
    }
    case TT_PROJ_K:
    case TT_PROJ_V: return map->kv[l][i / hd] * hd + i % hd;
    default: return map->ffn[l][i]; /* gate, up (rows), down (columns) */
    }
}

int loram_recover(const peft_adapter *a, const tt_config *cfg, const tier_prune_map *map, peft_adapter *out) {
    memset(out, 0, sizeof *out);
    TT_ASSERT(a->n_layers == cfg->n_layers);
    tt_config *orig = tt_xmalloc(sizeof *orig);
    loram_original_config(cfg, orig);
    proj_shape *have = proj_shapes(cfg), *full = proj_shapes(orig);
    out->base_fp = tier_base_fingerprint(orig, NULL);
    free(orig);
    uint64_t r = a->rank, n = 0;
    for (uint32_t l = 0; l < cfg->n_layers; l++)
        for (int p = 0; p < TT_PROJ_COUNT; p++)
            if (targeted(a, p)) {
                const proj_shape *f = &full[l * TT_PROJ_COUNT + (uint32_t)p];
                n += r * (f->in + f->out);
            }
    out->n_layers = a->n_layers;
    out->rank = a->rank;
    out->alpha = a->alpha;
    out->rslora = a->rslora;
    out->dropout = a->dropout;
    out->target_mask = a->target_mask;
    out->bf16 = a->bf16;
    out->lora = tt_xcalloc((size_t)a->n_layers * PEFT_N_PROJ, sizeof *out->lora);
    /* zeroed: whatever the scatter does not write is a pruned row or column */
    out->mem_ = calloc(n ? n : 1, sizeof(float));
    if (!out->mem_) {
        free(have);
        free(full);
        loram_free(out);
        return TT_FAIL(-ENOMEM, "out of memory recovering the adapter (%llu values)", (unsigned long long)n);
    }
    float *mem = out->mem_;
    for (uint32_t l = 0; l < cfg->n_layers; l++)
        for (int p = 0; p < TT_PROJ_COUNT; p++) {
            if (!targeted(a, p)) continue;
            const peft_lora *src = peft_at(a, l, p);
            peft_lora *dst = peft_at(out, l, p);
            proj_shape h = have[l * TT_PROJ_COUNT + (uint32_t)p], f = full[l * TT_PROJ_COUNT + (uint32_t)p];
            TT_ASSERT(src->out == h.out && src->in == h.in); /* loram_check_adapter */
            dst->out = (uint32_t)f.out;
            dst->in = (uint32_t)f.in;
            dst->A = mem;
            mem += r * f.in;
            dst->B = mem;
            mem += f.out * r;
            if (!cfg->layers[l].pruned) {
                TT_ASSERT(h.out == f.out && h.in == f.in);
                memcpy(dst->A, src->A, r * f.in * sizeof(float));
                memcpy(dst->B, src->B, f.out * r * sizeof(float));
                continue;
            }
            TT_ASSERT(map && map->kv[l] && map->ffn[l]); /* tier_open checks a pruned layer has its map */
            if (p == TT_PROJ_O || p == TT_PROJ_DOWN) {
                /* the input dimension was pruned: A's columns go to the kept inputs; B (hidden, r) as it is */
                for (uint64_t k = 0; k < r; k++)
                    for (uint32_t i = 0; i < src->in; i++)
                        dst->A[k * f.in + orig_index(cfg, map, l, p, i)] = src->A[k * src->in + i];
                memcpy(dst->B, src->B, f.out * r * sizeof(float));
            } else {
                /* the output dimension was pruned: B's rows go to the kept outputs; A (r, hidden) as it is */
                memcpy(dst->A, src->A, r * f.in * sizeof(float));
                for (uint32_t i = 0; i < src->out; i++)
                    memcpy(dst->B + (uint64_t)orig_index(cfg, map, l, p, i) * r, src->B + (uint64_t)i * r,
                           r * sizeof(float));
            }
        }
    free(have);
    free(full);
    return 0;
}

void loram_free(peft_adapter *a) {
    if (!a) return;
    free(a->lora);
    free(a->mem_);
    memset(a, 0, sizeof *a);
}

/* Is tensor d a projection the adapter changes? Its LoRA entry, or NULL. */
static const peft_lora *adapted(const peft_adapter *a, const tt_tensor_desc *d) {
    if (d->role != TT_ROLE_LINEAR || !targeted(a, d->proj)) return NULL;
    return peft_at(a, (uint32_t)d->layer, d->proj);
}

int loram_merge(const char *model, const peft_adapter *a, const char *adapter_dir, const char *out_path,
                loram_progress_fn progress, void *progress_ctx) {
    tier_store *s = NULL;
    tier_writer *w = NULL;
    uint32_t *dtypes = NULL;
    float *vals = NULL;   /* (out, in) f32: the projection being merged */
    uint8_t *blob = NULL; /* that projection encoded in its stored dtype */
    uint8_t *raw = NULL;  /* one decoded extent of the source store */
    struct uring_reader *ur = NULL;
    int rc = store_check_output("-o", out_path, model);
    if (rc == 0) rc = tier_open(&s, model);
    if (rc) return rc;
    const tt_config *cfg = tier_config(s);
    tt_tensor_desc d;
    rc = loram_check_adapter(a, adapter_dir, cfg, model);
    if (rc == 0) rc = loram_check_base(a, adapter_dir, cfg, tier_prune(s), model);
    if (rc) goto out;
    if ((rc = store_file_open(&ur, s))) goto out;
    uint32_t nt = tier_n_tensors(s);
    dtypes = tt_xcalloc(nt, sizeof *dtypes);
    uint64_t maxn = 0, maxbytes = 0, total = 0, done = 0;
    int lz4 = 0;
    for (uint32_t i = 0; i < nt; i++) {
        dtypes[i] = tier_tensor_at(s, i)->dtype;
        config_tensor(cfg, i, &d);
        if (!adapted(a, &d)) continue;
        if (d.rows * d.cols > maxn) maxn = d.rows * d.cols;
        if (tier_tensor_at(s, i)->nbytes > maxbytes) maxbytes = tier_tensor_at(s, i)->nbytes;
    }
    for (uint32_t e = 0; e < tier_n_extents(s); e++) {
        total += tier_extent_at(s, e)->stored;
        lz4 |= tier_extent_at(s, e)->codec == TIER_CODEC_LZ4;
    }
    vals = malloc(maxn * sizeof *vals + 1);
    blob = malloc(maxbytes + 1);
    if (!vals || !blob) {
        rc = TT_FAIL(-ENOMEM, "out of memory merging into %s (%llu values per projection)", out_path,
                     (unsigned long long)maxn);
        goto out;
    }
    /* lz4 is re-decided per extent by the writer, as when the source was written; the merged weights are not
     * the source model's any more (no source record: an adapter trained on them does not belong to it) */
    tier_write_opts wo = {dtypes, tier_prune(s), lz4, NULL};
    rc = tier_writer_open(&w, out_path, cfg, &wo);
    uint32_t next = 0;
    for (uint32_t e = 0; e < tier_n_extents(s) && rc == 0; e++) {
        const tier_extent *x = tier_extent_at(s, e);
        rc = store_read_extent(s, ur, e, &raw);
        for (uint32_t i = x->first_tensor; i < x->first_tensor + x->n_tensors && rc == 0; i++) {
            TT_ASSERT(i == next++); /* extents hold the tensors in table order, as the writer wants them */
            const tier_tensor *t = tier_tensor_at(s, i);
            config_tensor(cfg, i, &d);
            const peft_lora *lo = adapted(a, &d);
            const void *src = raw + t->offset;
            if (lo) {
                uint64_t n = d.rows * d.cols;
                dtype_decode_f32(t->dtype, src, n, 0, n, vals);
                /* W (out, in) += s B (out, r) A (r, in) (s = alpha / r, or alpha / sqrt(r) with rslora), in f32 as the model
                 * computes its LoRA term */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)lo->out, (int)lo->in, (int)a->rank,
                            lora_scaling(a->alpha, (int)a->rank, a->rslora), lo->B, (int)a->rank, lo->A, (int)lo->in, 1.0f, vals,
                            (int)lo->in);
                uint64_t bad = first_nonfinite(vals, n);
                if (bad < n) {
                    rc = TT_FAIL(-EINVAL, "merging %s into %s: %s becomes non-finite at element %llu; the adapter's "
                                 "values are too large for this model", adapter_dir, model, d.name,
                                 (unsigned long long)bad);
                    break;
                }
                tensor_encode(t->dtype, vals, n, blob);
                src = blob;
            }
            TT_ASSERT(tier_writer_tensor_bytes(w, i) == t->nbytes);
            rc = tier_writer_write(w, i, src, t->nbytes);
        }
        free(raw);
        raw = NULL;
        done += x->stored;
        if (rc == 0 && progress) progress(progress_ctx, done, total);
    }
    if (rc == 0) {
        TT_ASSERT(next == nt);
        rc = tier_writer_finish(w); /* frees w, also on error */
        w = NULL;
    }
out:
    tier_writer_abort(w);
    uring_reader_close(ur);
    free(dtypes);
    free(vals);
    free(blob);
    tier_close(s);
    return rc;
}

int loram_load_lora(tt_lora *lo, const peft_adapter *a) {
    TT_ASSERT(lo->n_layers == (int)a->n_layers && lo->cfg.rank == (int)a->rank && lo->cfg.targets == a->target_mask &&
              lo->cfg.alpha == a->alpha && lo->cfg.rslora == a->rslora);
    tt_real *host = calloc(lo->n ? lo->n : 1, sizeof *host); /* (lo->n) lo's parameter layout, on the host */
    if (!host) return TT_FAIL(-ENOMEM, "out of memory loading %zu adapter values", lo->n);
    size_t r = a->rank;
    for (int l = 0; l < lo->n_layers; l++)
        for (int p = 0; p < TT_PROJ_COUNT; p++) {
            const tt_lora_slot *s = &lo->slot[l][p];
            if (!s->in) continue;
            const peft_lora *x = peft_at(a, (uint32_t)l, p);
            TT_ASSERT((uint32_t)s->in == x->in && (uint32_t)s->out == x->out); /* loram_check_adapter */
            for (size_t j = 0; j < r * (size_t)s->in; j++) host[s->a + j] = (tt_real)x->A[j];
            for (size_t j = 0; j < (size_t)s->out * r; j++) host[s->b + j] = (tt_real)x->B[j];
        }
    lora_params_set(lo, host);
    free(host);
    return 0;
}
