/* core/lora.c — LoRA parameter layout and PEFT-compatible initialisation. */
#include "core/lora.h"

#include "core/base/common.h"
#include "core/model.h"
#include "core/base/rng.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static const char *g_names[TT_PROJ_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"};

const char *lora_proj_name(int p) {
    TT_ASSERT(p >= 0 && p < TT_PROJ_COUNT);
    return g_names[p];
}

int lora_parse_targets(const char *s, unsigned *mask) {
    *mask = 0;
    if (strcmp(s, "all") == 0) { *mask = LORA_ALL_TARGETS; return 0; }
    const char *p = s;
    while (*p) {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int i = 0; i < TT_PROJ_COUNT; i++) {
            size_t short_len = strlen(g_names[i]) - 5; /* without "_proj" */
            if ((len == short_len || len == strlen(g_names[i])) && strncmp(p, g_names[i], len) == 0) found = i;
        }
        if (found < 0)
            return TT_FAIL(-EINVAL, "--targets: unknown projection '%.*s'; use q,k,v,o,gate,up,down or all", (int)len,
                           p);
        *mask |= 1u << found;
        p += len;
        if (*p == ',') p++;
    }
    if (!*mask) return TT_FAIL(-EINVAL, "--targets is empty; use q,k,v,o,gate,up,down or all");
    return 0;
}

void lora_targets_str(unsigned mask, char *buf, size_t cap) {
    buf[0] = '\0';
    size_t used = 0;
    for (int i = 0; i < TT_PROJ_COUNT; i++)
        if (mask & (1u << i)) used += (size_t)snprintf(buf + used, used < cap ? cap - used : 0, "%s%s",
                                                       used ? "," : "", g_names[i]);
}

int lora_init(tt_lora *lo, const tt_config *cfg, const tt_lora_cfg *lc, uint64_t seed) {
    return lora_init_in(lo, cfg, lc, seed, NULL, 0, NULL);
}

size_t lora_max_layer(const tt_lora *lo) {
    size_t m = 0;
    for (int l = 0; l < lo->n_layers; l++)
        if (lo->layer_off[l + 1] - lo->layer_off[l] > m) m = lo->layer_off[l + 1] - lo->layer_off[l];
    return m;
}

static void *lora_get(const struct tt_alloc *a, size_t bytes, const char *label) {
    return a ? a->fn(a->ctx, bytes, label) : be_alloc(bytes);
}

int lora_init_in(tt_lora *lo, const tt_config *cfg, const tt_lora_cfg *lc, uint64_t seed, const struct tt_alloc *alloc,
                 int layer_grads, const struct tt_alloc *host) {
    TT_ASSERT(!host || alloc);
    memset(lo, 0, sizeof *lo);
    TT_ASSERT(lc->rank > 0 && lc->dropout >= 0 && lc->dropout < 1); /* no targets: an empty adapter */
    lo->cfg = *lc;
    lo->n_layers = (int)cfg->n_layers;
    lo->scale = lora_scaling(lc->alpha, lc->rank, lc->rslora);
    size_t off = 0;
    tt_tensor_desc d;
    uint32_t nt = config_n_tensors(cfg);
    for (uint32_t l = 0; l < cfg->n_layers; l++) {
        lo->layer_off[l] = off;
        for (uint32_t i = 0; i < nt; i++) {
            config_tensor(cfg, i, &d);
            if (d.layer != (int32_t)l || d.role != TT_ROLE_LINEAR || !(lc->targets & (1u << d.proj))) continue;
            tt_lora_slot *s = &lo->slot[l][d.proj];
            s->in = (int)d.cols;
            s->out = (int)d.rows;
            s->a = off;
            off += (size_t)lc->rank * (size_t)s->in;
            s->b = off;
            off += (size_t)s->out * (size_t)lc->rank;
        }
    }
    lo->layer_off[cfg->n_layers] = off;
    lo->n = off;
    lo->grad_n = layer_grads || host ? lora_max_layer(lo) : off;
    size_t nb = off ? off : 1, gb = lo->grad_n ? lo->grad_n : 1; /* an empty adapter still gets valid pointers */
    size_t mb = host ? gb : nb;
    if (host) {
        for (int i = 0; i < 2; i++) {
            lo->layer_buf[i] = lora_get(alloc, gb * sizeof(tt_real), "LoRA parameters (two layers)");
            lo->layer_in[i] = -1;
        }
        lo->params_host = lora_get(host, nb * sizeof(tt_real), "LoRA parameters");
    } else {
        lo->params = lora_get(alloc, nb * sizeof(tt_real), "LoRA parameters");
    }
    const int frozen = layer_grads == LORA_FROZEN;
    if (!frozen) {
        lo->grads = lora_get(alloc, gb * sizeof(tt_real), "LoRA gradients");
        lo->m = lora_get(alloc, mb * sizeof(float), host ? "AdamW moments (one layer)" : "AdamW moments");
        lo->v = lora_get(alloc, mb * sizeof(float), host ? "AdamW moments (one layer)" : "AdamW moments");
    }
    if (host && !frozen) {
        lo->m_host = lora_get(host, nb * sizeof(float), "AdamW moments");
        lo->v_host = lora_get(host, nb * sizeof(float), "AdamW moments");
        if (!layer_grads) lo->grads_host = lora_get(host, nb * sizeof(tt_real), "LoRA gradients (until the step's end)");
    }
    if (!(lo->params || (lo->layer_buf[0] && lo->layer_buf[1] && lo->params_host)) ||
        (!frozen && (!lo->grads || !lo->m || !lo->v))) {
        if (!alloc) lora_free(lo);
        return TT_FAIL(-ENOMEM, "out of memory allocating %zu LoRA parameters", off);
    }
    if (alloc) lo->owned_by_arena = 1;
    if (alloc && alloc->measuring) return 0;
    /* A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform_ with a = sqrt(5)), B = 0. */
    tt_real *init = tt_xcalloc(off ? off : 1, sizeof *init);
    for (uint32_t l = 0; l < cfg->n_layers; l++)
        for (int p = 0; p < TT_PROJ_COUNT; p++) {
            const tt_lora_slot *s = &lo->slot[l][p];
            if (!s->in) continue;
            tt_rng r;
            rng_seed(&r, seed, 0x10ad0000u + l * 16u + (unsigned)p);
            double bound = 1.0 / sqrt((double)s->in);
            for (size_t j = 0; j < (size_t)lc->rank * (size_t)s->in; j++)
                init[s->a + j] = (tt_real)((2.0 * rng_uniform(&r) - 1.0) * bound);
        }
    if (lo->params_host) memcpy(lo->params_host, init, off * sizeof(tt_real));
    else be_to_device(lo->params, init, off * sizeof(tt_real));
    free(init);
    if (lo->m_host) {
        memset(lo->m_host, 0, off * sizeof(float));
        memset(lo->v_host, 0, off * sizeof(float));
    }
    return 0;
}

/* One piece of the adapter's state (bytes) to / from a host array: from its
 * pinned host copy when it lives there (written by copies on the compute
 * queue: wait for them first), else from the device. */
static void state_get(void *out, const void *host, const void *dev, size_t bytes) {
    if (host) {
        be_synchronize();
        memcpy(out, host, bytes);
    } else {
        be_to_host(out, dev, bytes);
    }
}
static void state_set(const void *in, void *host, void *dev, size_t bytes) {
    if (host) {
        be_synchronize();
        memcpy(host, in, bytes);
    } else {
        be_to_device(dev, in, bytes);
    }
}

void lora_params_get(const tt_lora *lo, tt_real *p) { state_get(p, lo->params_host, lo->params, lo->n * sizeof *p); }

void lora_params_set(tt_lora *lo, const tt_real *p) {
    state_set(p, lo->params_host, lo->params, lo->n * sizeof *p);
    lo->layer_in[0] = lo->layer_in[1] = -1; /* device copies of staged layers are stale */
}

tt_real *lora_layer_params(const tt_lora *lo, int l) {
    TT_ASSERT(l >= 0 && l < lo->n_layers);
    if (!lo->params_host) return lo->params + lo->layer_off[l];
    TT_ASSERT(lo->layer_in[l & 1] == l); /* staged */
    return lo->layer_buf[l & 1];
}

void lora_stage_layer(tt_lora *lo, int l) {
    if (!lo->params_host || lo->layer_in[l & 1] == l) return;
    size_t a = lo->layer_off[l], n = lo->layer_off[l + 1] - a;
    be_copy_async(lo->layer_buf[l & 1], lo->params_host + a, n * sizeof(tt_real), BE_H2D, NULL);
    lo->layer_in[l & 1] = l;
}

void lora_unstage_layer(tt_lora *lo, int l) {
    if (!lo->params_host) return;
    TT_ASSERT(lo->layer_in[l & 1] == l);
    size_t a = lo->layer_off[l], n = lo->layer_off[l + 1] - a;
    be_copy_async(lo->params_host + a, lo->layer_buf[l & 1], n * sizeof(tt_real), BE_D2H, NULL);
}

void lora_moments_get(const tt_lora *lo, float *m, float *v) {
    state_get(m, lo->m_host, lo->m, lo->n * sizeof *m);
    state_get(v, lo->v_host, lo->v, lo->n * sizeof *v);
}

void lora_moments_set(tt_lora *lo, const float *m, const float *v) {
    state_set(m, lo->m_host, lo->m, lo->n * sizeof *m);
    state_set(v, lo->v_host, lo->v, lo->n * sizeof *v);
}

void lora_free(tt_lora *lo) {
    if (lo->owned_by_arena) { /* the arena owns the buffers */
        lo->params = lo->grads = lo->grads_host = lo->params_host = lo->layer_buf[0] = lo->layer_buf[1] = NULL;
        lo->m = lo->v = lo->m_host = lo->v_host = NULL;
        return;
    }
    be_free(lo->params);
    be_free(lo->grads);
    be_free(lo->m);
    be_free(lo->v);
    lo->params = lo->grads = NULL;
    lo->m = lo->v = NULL;
}
