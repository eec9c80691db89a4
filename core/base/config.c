/* core/base/config.c — presets, LoRAM pruning shapes and the tensor table. */
#include "core/base/config.h"

#include "core/base/common.h"

#include <errno.h>
#include <math.h>
#include <ctype.h>
#include <string.h>

typedef struct preset {
    const char *name;
    uint32_t layers, hidden, ffn, heads, kv, vocab, max_pos, tie;
    float theta, eps;
    uint32_t llama3_rope, bos, eos;
} preset;

/* tiny/small: byte-level vocabulary (256 bytes + end-of-text), GQA like the
 * real models, for tests and CPU demos. small has 16 narrow layers (25M
 * parameters) so that streaming under a device budget a quarter of the
 * store's size (two layer slots = 1/8 of the layers) can be tried on a CPU. The others: DESIGN.md's reference
 * shapes with the published rope/eps settings. */
static const preset g_presets[] = {
    {"tiny", 4, 256, 688, 8, 4, 257, 2048, 0, 10000.f, 1e-5f, 0, 256, 256},
    {"small", 16, 384, 1024, 6, 2, 257, 4096, 0, 10000.f, 1e-5f, 0, 256, 256},
    {"llama2-7b", 32, 4096, 11008, 32, 32, 32000, 4096, 0, 10000.f, 1e-5f, 0, 1, 2},
    {"llama2-13b", 40, 5120, 13824, 40, 40, 32000, 4096, 0, 10000.f, 1e-5f, 0, 1, 2},
    {"llama2-70b", 80, 8192, 28672, 64, 8, 32000, 4096, 0, 10000.f, 1e-5f, 0, 1, 2},
    {"llama3.1-8b", 32, 4096, 14336, 32, 8, 128256, 131072, 0, 500000.f, 1e-5f, 1, 128000, 128001},
    {"llama3.1-70b", 80, 8192, 28672, 64, 8, 128256, 131072, 0, 500000.f, 1e-5f, 1, 128000, 128001},
};
#define N_PRESETS (sizeof g_presets / sizeof g_presets[0])

const char *config_preset_names(void) {
    return "tiny small llama2-7b llama2-13b llama2-70b llama3.1-8b llama3.1-70b";
}

int config_preset(const char *name, tt_config *cfg) {
    for (size_t i = 0; i < N_PRESETS; i++) {
        const preset *p = &g_presets[i];
        if (strcmp(p->name, name) != 0) continue;
        memset(cfg, 0, sizeof *cfg);
        snprintf(cfg->name, sizeof cfg->name, "%s", p->name);
        cfg->n_layers = p->layers;
        cfg->hidden = p->hidden;
        cfg->vocab = p->vocab;
        cfg->n_heads = p->heads;
        cfg->n_kv_heads = p->kv;
        cfg->head_dim = p->hidden / p->heads;
        cfg->ffn = p->ffn;
        cfg->max_pos = p->max_pos;
        cfg->tie_embeddings = p->tie;
        cfg->bos_id = p->bos;
        cfg->eos_id = p->eos;
        cfg->rms_eps = p->eps;
        cfg->rope_theta = p->theta;
        if (p->llama3_rope) {
            cfg->rope_type = TT_ROPE_LLAMA3;
            cfg->rope_factor = 8.f;
            cfg->rope_low_freq = 1.f;
            cfg->rope_high_freq = 4.f;
            cfg->rope_orig_max_pos = 8192;
        }
        for (uint32_t l = 0; l < cfg->n_layers; l++)
            cfg->layers[l] = (tt_layer_dims){p->heads, p->kv, p->ffn, 0};
        return 0;
    }
    return TT_FAIL(-EINVAL, "unknown preset '%s'; choose one of: %s", name, config_preset_names());
}

void config_default_prune_layers(const tt_config *cfg, uint32_t *a, uint32_t *b) {
    if (cfg->n_layers >= 16) { *a = 4; *b = cfg->n_layers - 2; }
    else { *a = cfg->n_layers > 2 ? 1 : 0; *b = cfg->n_layers > 2 ? cfg->n_layers - 1 : cfg->n_layers; }
}

/* n*r rounded down/up, with products that are integers up to floating-point
 * noise (e.g. 8*0.25) treated as exact. */
static uint64_t mul_floor(uint64_t n, double r) {
    double v = (double)n * r, k = nearbyint(v);
    return fabs(v - k) < 1e-7 ? (uint64_t)k : (uint64_t)floor(v);
}
static uint64_t mul_ceil(uint64_t n, double r) {
    double v = (double)n * r, k = nearbyint(v);
    return fabs(v - k) < 1e-7 ? (uint64_t)k : (uint64_t)ceil(v);
}

void config_pruned_dims(const tt_config *cfg, double r, tt_layer_dims *out) {
    uint32_t group = cfg->n_heads / cfg->n_kv_heads;
    uint32_t kv = cfg->n_kv_heads - (uint32_t)mul_floor(cfg->n_kv_heads, r);
    uint32_t ffn = cfg->ffn - (uint32_t)mul_ceil(cfg->ffn, r);
    *out = (tt_layer_dims){kv * group, kv, ffn, 1};
}

int config_prune(tt_config *cfg, double r, uint32_t a, uint32_t b) {
    if (!(r > 0.0 && r < 1.0))
        return TT_FAIL(-EINVAL, "--prune-ratio must be strictly between 0 and 1 (got %g)", r);
    if (a >= b || b > cfg->n_layers)
        return TT_FAIL(-EINVAL, "--prune-layers %u:%u is not a non-empty range within 0:%u", a, b, cfg->n_layers);
    tt_layer_dims d;
    config_pruned_dims(cfg, r, &d);
    if (d.n_kv_heads == 0 || d.ffn == 0)
        return TT_FAIL(-EINVAL, "--prune-ratio %g removes every KV head or MLP channel of %s; use a smaller ratio",
                       r, cfg->name);
    for (uint32_t l = a; l < b; l++) cfg->layers[l] = d;
    return 0;
}

int config_validate(const tt_config *c, const char *what) {
    if (c->n_layers == 0 || c->n_layers > TT_MAX_LAYERS)
        return TT_FAIL(-EINVAL, "%s: layer count %u is outside 1..%d", what, c->n_layers, TT_MAX_LAYERS);
    if (c->hidden == 0 || c->hidden > (1u << 20) || c->vocab == 0 || c->vocab > (1u << 24) ||
        c->ffn == 0 || c->ffn > (1u << 22) || c->head_dim == 0 || c->head_dim > 1024 || c->head_dim % 2)
        return TT_FAIL(-EINVAL, "%s: model dimensions out of range (hidden %u, ffn %u, vocab %u, head_dim %u)",
                       what, c->hidden, c->ffn, c->vocab, c->head_dim);
    if (c->n_heads == 0 || c->n_kv_heads == 0 || c->n_heads % c->n_kv_heads ||
        (uint64_t)c->n_heads * c->head_dim != c->hidden)
        return TT_FAIL(-EINVAL, "%s: %u heads / %u KV heads of size %u do not fit hidden size %u", what,
                       c->n_heads, c->n_kv_heads, c->head_dim, c->hidden);
    if (!(c->rms_eps > 0.f && c->rms_eps < 1.f) || !(c->rope_theta > 0.f && c->rope_theta < 1e30f) ||
        c->rope_type > TT_ROPE_LLAMA3)
        return TT_FAIL(-EINVAL, "%s: rms_eps %g, rope_theta %g or rope type %u is invalid (eps in (0, 1), theta a "
                       "finite positive number)", what, (double)c->rms_eps, (double)c->rope_theta, c->rope_type);
    if (c->rope_type == TT_ROPE_LLAMA3 &&
        !(c->rope_factor >= 1.f && c->rope_factor < 1e30f && c->rope_low_freq > 0.f &&
          c->rope_high_freq > c->rope_low_freq && c->rope_high_freq < 1e30f && c->rope_orig_max_pos > 0))
        return TT_FAIL(-EINVAL, "%s: invalid llama3 rope scaling (factor %g, low %g, high %g, original context %u)",
                       what, (double)c->rope_factor, (double)c->rope_low_freq, (double)c->rope_high_freq,
                       c->rope_orig_max_pos);
    if (c->max_pos == 0)
        return TT_FAIL(-EINVAL, "%s: its context length (max_position_embeddings) is 0", what);
    if (c->tie_embeddings > 1 || c->bos_id >= c->vocab || c->eos_id >= c->vocab)
        return TT_FAIL(-EINVAL, "%s: invalid tie flag or bos/eos token id", what);
    uint32_t group = c->n_heads / c->n_kv_heads;
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const tt_layer_dims *d = &c->layers[l];
        if (d->n_kv_heads == 0 || d->n_kv_heads > c->n_kv_heads || d->n_heads != d->n_kv_heads * group ||
            d->ffn == 0 || d->ffn > c->ffn || d->pruned > 1)
            return TT_FAIL(-EINVAL,
                           "%s: layer %u dimensions (%u heads, %u KV heads, ffn %u) are inconsistent with the "
                           "model (%u heads, %u KV heads, ffn %u)",
                           what, l, d->n_heads, d->n_kv_heads, d->ffn, c->n_heads, c->n_kv_heads, c->ffn);
        if (!d->pruned && (d->n_kv_heads != c->n_kv_heads || d->ffn != c->ffn))
            return TT_FAIL(-EINVAL, "%s: layer %u has pruned dimensions but is not marked pruned", what, l);
    }
    return 0;
}

/* ---- the tensor table ---------------------------------------------------- */

static const char *g_proj_names[TT_PROJ_COUNT] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
};

/* Tensors of one layer in store order: input norm, q, k, v, o, post-attention
 * norm, gate, up, down. */
#define LAYER_TENSORS 9u

uint32_t config_n_tensors(const tt_config *cfg) {
    return 1u + cfg->n_layers * LAYER_TENSORS + 1u + (cfg->tie_embeddings ? 0u : 1u);
}

static void proj_shape(const tt_config *c, uint32_t l, int p, uint64_t *rows, uint64_t *cols) {
    const tt_layer_dims *d = &c->layers[l];
    uint64_t h = c->hidden, q = (uint64_t)d->n_heads * c->head_dim, kv = (uint64_t)d->n_kv_heads * c->head_dim;
    switch (p) {
    case TT_PROJ_Q: *rows = q; *cols = h; break;
    case TT_PROJ_K: case TT_PROJ_V: *rows = kv; *cols = h; break;
    case TT_PROJ_O: *rows = h; *cols = q; break;
    case TT_PROJ_GATE: case TT_PROJ_UP: *rows = d->ffn; *cols = h; break;
    default: *rows = h; *cols = d->ffn; break;
    }
}

void config_tensor(const tt_config *c, uint32_t i, tt_tensor_desc *t) {
    TT_ASSERT(i < config_n_tensors(c));
    memset(t, 0, sizeof *t);
    t->layer = -1;
    t->proj = -1;
    if (i == 0) {
        snprintf(t->name, sizeof t->name, "model.embed_tokens.weight");
        t->role = TT_ROLE_EMBED; t->extent = TT_EXTENT_EMBED(c);
        t->ndim = 2; t->rows = c->vocab; t->cols = c->hidden;
        return;
    }
    i -= 1;
    if (i < c->n_layers * LAYER_TENSORS) {
        uint32_t l = i / LAYER_TENSORS, k = i % LAYER_TENSORS;
        t->layer = (int32_t)l;
        t->extent = TT_EXTENT_LAYER(l);
        if (k == 0 || k == 5) {
            snprintf(t->name, sizeof t->name, "model.layers.%u.%s.weight", l,
                     k == 0 ? "input_layernorm" : "post_attention_layernorm");
            t->role = TT_ROLE_NORM; t->ndim = 1; t->rows = c->hidden; t->cols = 1;
            return;
        }
        int p = k < 5 ? (int)k - 1 : (int)k - 2;
        snprintf(t->name, sizeof t->name, "model.layers.%u.%s.weight", l, g_proj_names[p]);
        t->role = TT_ROLE_LINEAR; t->proj = p; t->ndim = 2;
        proj_shape(c, l, p, &t->rows, &t->cols);
        return;
    }
    i -= c->n_layers * LAYER_TENSORS;
    t->extent = TT_EXTENT_HEAD(c);
    if (i == 0) {
        snprintf(t->name, sizeof t->name, "model.norm.weight");
        t->role = TT_ROLE_NORM; t->ndim = 1; t->rows = c->hidden; t->cols = 1;
    } else {
        snprintf(t->name, sizeof t->name, "lm_head.weight");
        t->role = TT_ROLE_LM_HEAD; t->ndim = 2; t->rows = c->vocab; t->cols = c->hidden;
    }
}

uint64_t config_n_params(const tt_config *c) {
    uint64_t n = 0;
    tt_tensor_desc t;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &t);
        n += t.rows * t.cols;
    }
    return n;
}

uint64_t config_n_linear_params(const tt_config *c) {
    uint64_t n = 0;
    tt_tensor_desc t;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &t);
        if (t.role == TT_ROLE_LINEAR) n += t.rows * t.cols;
    }
    return n;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

void config_clean_name(tt_config *cfg) {
    cfg->name[sizeof cfg->name - 1] = '\0';
    for (char *p = cfg->name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("._+-", *p)) *p = '_';
}

uint64_t config_fingerprint(const tt_config *c) {
    uint32_t f[] = {c->n_layers, c->hidden, c->vocab, c->head_dim, c->n_heads, c->n_kv_heads, c->ffn,
                    c->tie_embeddings, c->rope_type};
    uint64_t h = fnv(0xcbf29ce484222325ull, f, sizeof f);
    h = fnv(h, &c->rope_theta, sizeof c->rope_theta);
    h = fnv(h, &c->rms_eps, sizeof c->rms_eps);
    float rope[] = {c->rope_factor, c->rope_low_freq, c->rope_high_freq, (float)c->rope_orig_max_pos};
    h = fnv(h, rope, sizeof rope);
    return fnv(h, c->layers, sizeof c->layers[0] * c->n_layers);
}
