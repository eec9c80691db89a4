/* io/hfmodel.c — Hugging Face LLaMA checkpoint directories (io/hfmodel.h):
 * the config.json reader and writer (jansson), the shard map of a directory,
 * and import / export streamed through io/storeio.h on one side and the
 * safetensors reader / streaming writer on the other. */
#include "io/hfmodel.h"
#include "io/atomicfile.h"

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "io/storeio.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TIERTRAIN_KEY "tiertrain"
#define TIERTRAIN_FORMAT 1 /* version of the "tiertrain" object of config.json */

/* LlamaConfig's defaults for fields a config.json may leave out. */
#define DEF_RMS_EPS 1e-6
#define DEF_ROPE_THETA 10000.0
#define DEF_MAX_POS 2048
#define DEF_BOS 1
#define DEF_EOS 2

static char *join(const char *dir, const char *file) {
    size_t n = strlen(dir) + strlen(file) + 2, d = strlen(dir);
    while (d > 1 && dir[d - 1] == '/') d--; /* "dir/" names dir/file, not dir//file */
    char *s = tt_xmalloc(n);
    snprintf(s, n, "%.*s/%s", (int)d, dir, file);
    return s;
}

static int path_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* 0 when dir is an existing directory, else -errno with a message. */
static int check_dir(const char *dir) {
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        int e = errno;
        if (e == ENOENT)
            return TT_FAIL(-ENOENT,
                           "%s does not exist; give a Hugging Face checkpoint directory (config.json and "
                           "model.safetensors)",
                           dir);
        return TT_FAIL(-e, "cannot read %s: %s", dir, strerror(e));
    }
    if (!S_ISDIR(sb.st_mode))
        return TT_FAIL(-ENOTDIR, "%s is a file, not a checkpoint directory; give the directory that holds config.json",
                       dir);
    return 0;
}

/* v as compact JSON for a message ("missing" for NULL), cut to fit buf. */
static const char *json_text(const json_t *v, char *buf, size_t cap) {
    if (!v) {
        snprintf(buf, cap, "missing");
        return buf;
    }
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    snprintf(buf, cap, "%s", s ? s : "?");
    if (s && strlen(s) >= cap && cap > 4) memcpy(buf + cap - 4, "...", 4);
    free(s);
    return buf;
}

static void shape_text(uint32_t ndim, const uint64_t *shape, char *buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < ndim && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%llu", d ? ", " : "", (unsigned long long)shape[d]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* The n raw values of dtype at the start of x's bytes, widened to f32 in
 * place. Going from the last value down never overwrites a value not yet
 * read (value j's f32 lands at bytes 4j.., past the 2-byte values < j), and
 * the loads go through a byte pointer, which may alias the floats. */
static void widen_in_place(st_dtype dtype, float *x, uint64_t n) {
    const uint8_t *raw = (const uint8_t *)x;
    if (dtype == ST_DTYPE_F32) return;
    for (uint64_t j = n; j-- > 0;) {
        uint16_t h;
        memcpy(&h, raw + 2 * j, 2);
        x[j] = dtype == ST_DTYPE_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
}

/* ---- a growable text buffer --------------------------------------------------- */

typedef struct strbuf {
    char *s;
    size_t len, cap;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    TT_ASSERT(k >= 0);
    if (b->len + (size_t)k + 1 > b->cap) {
        b->cap = (b->len + (size_t)k + 1) * 2;
        b->s = realloc(b->s, b->cap);
        TT_ASSERT(b->s);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)k;
}

/* ---- config.json: reading --------------------------------------------------- */

/* Field accessors. prefix + key name the field in messages ("rope_scaling." +
 * "factor"); an absent or null optional field gives the default. */
static int get_int(const char *path, const json_t *obj, const char *prefix, const char *key, int required,
                   long long def, long long lo, long long hi, long long *out) {
    const json_t *v = json_object_get(obj, key);
    char t[64];
    if (!v || json_is_null(v)) {
        if (required)
            return TT_FAIL(-EINVAL, "%s: \"%s%s\" is missing; a LLaMA config.json gives it", path, prefix, key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return TT_FAIL(-EINVAL, "%s: \"%s%s\" is %s, not an integer from %lld to %lld", path, prefix, key,
                       json_text(v, t, sizeof t), lo, hi);
    *out = (long long)json_integer_value(v);
    return 0;
}

static int get_num(const char *path, const json_t *obj, const char *prefix, const char *key, int required,
                   double def, double *out) {
    const json_t *v = json_object_get(obj, key);
    char t[64];
    if (!v || json_is_null(v)) {
        if (required)
            return TT_FAIL(-EINVAL, "%s: \"%s%s\" is missing; a LLaMA config.json gives it", path, prefix, key);
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return TT_FAIL(-EINVAL, "%s: \"%s%s\" is %s, not a number", path, prefix, key, json_text(v, t, sizeof t));
    *out = json_number_value(v);
    return 0;
}

static int get_bool(const char *path, const json_t *obj, const char *prefix, const char *key, int def, int *out) {
    const json_t *v = json_object_get(obj, key);
    char t[64];
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return TT_FAIL(-EINVAL, "%s: \"%s%s\" is %s, not true or false", path, prefix, key, json_text(v, t, sizeof t));
    *out = json_is_true(v);
    return 0;
}

/* bos_token_id / eos_token_id: an integer, a list (tiertrain keeps one id:
 * the first) or null (kept as 0). */
static int get_token(const char *path, const json_t *root, const char *key, uint32_t def, uint32_t vocab,
                     uint32_t *out) {
    const json_t *v = json_object_get(root, key);
    char t[64];
    if (!v) {
        *out = def < vocab ? def : 0;
        return 0;
    }
    if (json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0)) {
        *out = 0;
        return 0;
    }
    const json_t *id = json_is_array(v) ? json_array_get(v, 0) : v;
    if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (json_int_t)vocab)
        return TT_FAIL(-EINVAL, "%s: \"%s\" is %s, not a token id below vocab_size %u (an integer, a list or null)",
                       path, key, json_text(v, t, sizeof t), vocab);
    *out = (uint32_t)json_integer_value(id);
    return 0;
}

/* Refuses anything that is not a plain LLaMA: another architecture, another
 * activation, bias terms, a quantized checkpoint. */
static int check_llama(const char *path, const json_t *root) {
    char t[64];
    const json_t *mt = json_object_get(root, "model_type"), *arch = json_object_get(root, "architectures");
    int arch_llama = 0;
    for (size_t i = 0; json_is_array(arch) && i < json_array_size(arch); i++) {
        const json_t *a = json_array_get(arch, i);
        if (json_is_string(a) && strcmp(json_string_value(a), "LlamaForCausalLM") == 0) arch_llama = 1;
    }
    if (mt && !json_is_null(mt)) {
        if (!json_is_string(mt) || strcmp(json_string_value(mt), "llama") != 0)
            return TT_FAIL(-EINVAL,
                           "%s: \"model_type\" is %s, which tiertrain does not support; it imports LLaMA checkpoints "
                           "(model_type \"llama\", LlamaForCausalLM)",
                           path, json_text(mt, t, sizeof t));
    } else if (!arch_llama) {
        return TT_FAIL(-EINVAL,
                       "%s: \"model_type\" is missing and \"architectures\" is %s; tiertrain imports LLaMA checkpoints "
                       "(model_type \"llama\", LlamaForCausalLM)",
                       path, json_text(arch, t, sizeof t));
    }
    const json_t *act = json_object_get(root, "hidden_act");
    if (act && !json_is_null(act) && (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0))
        return TT_FAIL(-EINVAL, "%s: \"hidden_act\" is %s; tiertrain's LLaMA supports only \"silu\" (SwiGLU)", path,
                       json_text(act, t, sizeof t));
    static const char *const biases[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        int b;
        int rc = get_bool(path, root, "", biases[i], 0, &b);
        if (rc) return rc;
        if (b)
            return TT_FAIL(-EINVAL, "%s: \"%s\" is true; tiertrain's LLaMA has no bias terms", path, biases[i]);
    }
    const json_t *q = json_object_get(root, "quantization_config");
    if (q && !json_is_null(q)) {
        const json_t *m = json_is_object(q) ? json_object_get(q, "quant_method") : NULL;
        return TT_FAIL(-EINVAL,
                       "%s: \"quantization_config\" is present (quant_method %s); tiertrain imports unquantized "
                       "checkpoints (F32, BF16 or F16 tensors)",
                       path, json_text(m, t, sizeof t));
    }
    return 0;
}

/* RoPE scaling from "rope_scaling" (transformers 4) or "rope_parameters"
 * (transformers 5, which moves rope_theta inside it too; key names the one
 * read, for messages). Only "llama3" scaling and none are supported. */
static int read_rope_scaling(const char *path, const json_t *rs, const char *key, tt_config *cfg) {
    char t[64], pre[40];
    snprintf(pre, sizeof pre, "%s.", key);
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs))
        return TT_FAIL(-EINVAL, "%s: \"%s\" is %s, not null or an object", path, key, json_text(rs, t, sizeof t));
    /* transformers reads "rope_type", and "type" from older files */
    const json_t *ty = json_object_get(rs, "rope_type");
    if (!ty) ty = json_object_get(rs, "type");
    if (!json_is_string(ty))
        return TT_FAIL(-EINVAL, "%s: \"%s.rope_type\" is %s; tiertrain supports \"default\" or \"llama3\"", path, key,
                       json_text(ty, t, sizeof t));
    if (strcmp(json_string_value(ty), "default") == 0) return 0; /* transformers' name for unscaled rope */
    if (strcmp(json_string_value(ty), "llama3") != 0)
        return TT_FAIL(-EINVAL,
                       "%s: \"%s.rope_type\" is %s, which tiertrain does not support; it supports no "
                       "scaling (null or \"default\") and \"llama3\"",
                       path, key, json_text(ty, t, sizeof t));
    double factor, low, high;
    long long orig;
    int rc = get_num(path, rs, pre, "factor", 1, 0, &factor);
    if (rc == 0) rc = get_num(path, rs, pre, "low_freq_factor", 1, 0, &low);
    if (rc == 0) rc = get_num(path, rs, pre, "high_freq_factor", 1, 0, &high);
    if (rc == 0) rc = get_int(path, rs, pre, "original_max_position_embeddings", 1, 0, 1, UINT32_MAX, &orig);
    if (rc) return rc;
    if (!(factor >= 1.0 && factor < 1e30 && low > 0.0 && high > low && high < 1e30))
        return TT_FAIL(-EINVAL,
                       "%s: \"%s\" has factor %g, low_freq_factor %g and high_freq_factor %g; llama3 scaling "
                       "needs finite factor >= 1 and 0 < low_freq_factor < high_freq_factor",
                       path, key, factor, low, high);
    cfg->rope_type = TT_ROPE_LLAMA3;
    cfg->rope_factor = (float)factor;
    cfg->rope_low_freq = (float)low;
    cfg->rope_high_freq = (float)high;
    cfg->rope_orig_max_pos = (uint32_t)orig;
    return 0;
}

/* One kept-index list of the "tiertrain" object into *out (malloc'ed; NULL
 * when absent): count strictly increasing indices below limit. */
static int get_indices(const char *path, const json_t *lo, uint32_t l, const char *key, uint32_t count,
                       uint32_t limit, uint32_t **out) {
    char t[64];
    const json_t *v = json_object_get(lo, key);
    *out = NULL;
    if (!v) return 0;
    if (!json_is_array(v) || json_array_size(v) != count)
        return TT_FAIL(-EINVAL, "%s: \"" TIERTRAIN_KEY ".layers[%u].%s\" is %s, not a list of %u indices", path, l, key,
                       json_text(v, t, sizeof t), count);
    uint32_t *a = tt_xmalloc((size_t)count * sizeof *a);
    for (uint32_t k = 0; k < count; k++) {
        const json_t *x = json_array_get(v, k);
        if (!json_is_integer(x) || json_integer_value(x) < (k ? (json_int_t)a[k - 1] + 1 : 0) ||
            json_integer_value(x) >= (json_int_t)limit) {
            free(a);
            return TT_FAIL(-EINVAL,
                           "%s: \"" TIERTRAIN_KEY ".layers[%u].%s\" entry %u is %s; the list must hold strictly "
                           "increasing indices below %u",
                           path, l, key, k, json_text(x, t, sizeof t), limit);
        }
        a[k] = (uint32_t)json_integer_value(x);
    }
    *out = a;
    return 0;
}

/* The "tiertrain" object: per-layer dimensions of a pruned model, its
 * pruning map and the original model's name (*source, pointing into tt;
 * NULL when absent). */
static int read_tiertrain(const char *path, const json_t *tt, tt_config *cfg, tier_prune_map *map, int *has_map,
                          const char **source) {
    char t[64];
    if (!json_is_object(tt))
        return TT_FAIL(-EINVAL, "%s: \"" TIERTRAIN_KEY "\" is %s, not an object", path, json_text(tt, t, sizeof t));
    long long fmt;
    int rc = get_int(path, tt, TIERTRAIN_KEY ".", "format_version", 1, 0, 1, INT32_MAX, &fmt);
    if (rc) return rc;
    if (fmt != TIERTRAIN_FORMAT)
        return TT_FAIL(-EINVAL,
                       "%s: \"" TIERTRAIN_KEY ".format_version\" is %lld; this tiertrain reads version %d (upgrade "
                       "tiertrain)",
                       path, fmt, TIERTRAIN_FORMAT);
    const json_t *src = json_object_get(tt, "source");
    if (src) {
        char what[64 + 4096];
        snprintf(what, sizeof what, "%s: \"" TIERTRAIN_KEY ".source\"", path);
        if (!json_is_string(src))
            return TT_FAIL(-EINVAL, "%s is %s, not a string (the original model's name)", what,
                           json_text(src, t, sizeof t));
        if (strlen(json_string_value(src)) != json_string_length(src))
            return TT_FAIL(-EINVAL, "%s holds a NUL character; give a plain name or path", what);
        rc = tier_source_check(json_string_value(src), what);
        if (rc) return rc;
        *source = json_string_value(src);
    }
    const json_t *layers = json_object_get(tt, "layers");
    if (!json_is_array(layers) || json_array_size(layers) != cfg->n_layers)
        return TT_FAIL(-EINVAL, "%s: \"" TIERTRAIN_KEY ".layers\" is %s, not a list of %u layers (num_hidden_layers)",
                       path, json_text(layers, t, sizeof t), cfg->n_layers);
    uint32_t n_pruned = 0, n_mapped = 0;
    for (uint32_t l = 0; l < cfg->n_layers; l++) {
        const json_t *lo = json_array_get(layers, l);
        char prefix[64];
        snprintf(prefix, sizeof prefix, TIERTRAIN_KEY ".layers[%u].", l);
        if (!json_is_object(lo))
            return TT_FAIL(-EINVAL, "%s: \"" TIERTRAIN_KEY ".layers[%u]\" is %s, not an object", path, l,
                           json_text(lo, t, sizeof t));
        int pruned;
        long long heads, kv, ffn;
        rc = get_bool(path, lo, prefix, "pruned", 0, &pruned);
        if (rc == 0) rc = get_int(path, lo, prefix, "num_attention_heads", 1, 0, 1, cfg->n_heads, &heads);
        if (rc == 0) rc = get_int(path, lo, prefix, "num_key_value_heads", 1, 0, 1, cfg->n_kv_heads, &kv);
        if (rc == 0) rc = get_int(path, lo, prefix, "intermediate_size", 1, 0, 1, cfg->ffn, &ffn);
        if (rc) return rc;
        cfg->layers[l] = (tt_layer_dims){(uint32_t)heads, (uint32_t)kv, (uint32_t)ffn, (uint32_t)pruned};
        rc = get_indices(path, lo, l, "kept_kv_heads", (uint32_t)kv, cfg->n_kv_heads, &map->kv[l]);
        if (rc == 0) rc = get_indices(path, lo, l, "kept_ffn_channels", (uint32_t)ffn, cfg->ffn, &map->ffn[l]);
        if (rc) return rc;
        if ((map->kv[l] != NULL) != (map->ffn[l] != NULL) || (map->kv[l] && !pruned))
            return TT_FAIL(-EINVAL,
                           "%s: \"" TIERTRAIN_KEY ".layers[%u]\" must give both kept_kv_heads and kept_ffn_channels, "
                           "and only when pruned is true",
                           path, l);
        n_pruned += (uint32_t)pruned;
        n_mapped += map->kv[l] != NULL;
    }
    if (n_mapped && n_mapped != n_pruned)
        return TT_FAIL(-EINVAL,
                       "%s: \"" TIERTRAIN_KEY ".layers\" gives kept indices for %u of its %u pruned layers; give them "
                       "for every pruned layer or for none",
                       path, n_mapped, n_pruned);
    *has_map = n_mapped > 0;
    return 0;
}

static int config_from_json(const char *path, const json_t *root, tt_config *cfg, tier_prune_map *map,
                            int *has_map, const char **source) {
    char t[64];
    if (!json_is_object(root)) return TT_FAIL(-EINVAL, "%s is not a JSON object; it is not a model config", path);
    int rc = check_llama(path, root);
    if (rc) return rc;
    long long hidden, ffn, heads, kv, layers, vocab, head_dim, max_pos;
    double eps, theta;
    int tie;
    rc = get_int(path, root, "", "hidden_size", 1, 0, 1, 1 << 20, &hidden);
    if (rc == 0) rc = get_int(path, root, "", "intermediate_size", 1, 0, 1, 1 << 22, &ffn);
    if (rc == 0) rc = get_int(path, root, "", "num_attention_heads", 1, 0, 1, hidden, &heads);
    if (rc == 0) rc = get_int(path, root, "", "num_key_value_heads", 0, heads, 1, heads, &kv);
    if (rc == 0) rc = get_int(path, root, "", "num_hidden_layers", 1, 0, 1, TT_MAX_LAYERS, &layers);
    if (rc == 0) rc = get_int(path, root, "", "vocab_size", 1, 0, 1, 1 << 24, &vocab);
    if (rc == 0) rc = get_int(path, root, "", "head_dim", 0, hidden / heads, 1, 1024, &head_dim);
    if (rc == 0) rc = get_int(path, root, "", "max_position_embeddings", 0, DEF_MAX_POS, 1, UINT32_MAX, &max_pos);
    if (rc == 0) rc = get_num(path, root, "", "rms_norm_eps", 0, DEF_RMS_EPS, &eps);
    if (rc == 0) rc = get_num(path, root, "", "rope_theta", 0, DEF_ROPE_THETA, &theta);
    /* transformers 5 writes "rope_parameters" {rope_type, rope_theta, scaling
     * fields} instead of "rope_theta" + "rope_scaling" */
    const json_t *rp = json_object_get(root, "rope_parameters");
    const char *rope_key = rp && !json_is_null(rp) ? "rope_parameters" : "rope_scaling";
    if (rc == 0 && rp && !json_is_null(rp)) {
        const json_t *top = json_object_get(root, "rope_theta");
        double t5;
        if (!json_is_object(rp))
            return TT_FAIL(-EINVAL, "%s: \"rope_parameters\" is %s, not null or an object", path,
                           json_text(rp, t, sizeof t));
        rc = get_num(path, rp, "rope_parameters.", "rope_theta", 0, theta, &t5);
        if (rc == 0 && top && !json_is_null(top) && json_object_get(rp, "rope_theta") && t5 != theta)
            return TT_FAIL(-EINVAL, "%s: \"rope_theta\" %g and \"rope_parameters.rope_theta\" %g disagree", path,
                           theta, t5);
        theta = t5;
    }
    if (rc == 0) rc = get_bool(path, root, "", "tie_word_embeddings", 0, &tie);
    if (rc) return rc;
    if (heads % kv)
        return TT_FAIL(-EINVAL, "%s: \"num_key_value_heads\" %lld does not divide \"num_attention_heads\" %lld", path,
                       kv, heads);
    if (heads * head_dim != hidden || head_dim % 2)
        return TT_FAIL(-EINVAL,
                       "%s: \"num_attention_heads\" %lld x \"head_dim\" %lld does not equal \"hidden_size\" %lld (or "
                       "head_dim is odd); tiertrain's LLaMA needs heads x head_dim = hidden_size",
                       path, heads, head_dim, hidden);
    if (!(eps > 0.0 && eps < 1.0))
        return TT_FAIL(-EINVAL, "%s: \"rms_norm_eps\" is %s, not a number in (0, 1)", path,
                       json_text(json_object_get(root, "rms_norm_eps"), t, sizeof t));
    if (!(theta > 0.0 && theta < 1e30))
        return TT_FAIL(-EINVAL, "%s: \"rope_theta\" is %g, not a positive number below 1e30", path, theta);

    memset(cfg, 0, sizeof *cfg);
    cfg->n_layers = (uint32_t)layers;
    cfg->hidden = (uint32_t)hidden;
    cfg->vocab = (uint32_t)vocab;
    cfg->head_dim = (uint32_t)head_dim;
    cfg->n_heads = (uint32_t)heads;
    cfg->n_kv_heads = (uint32_t)kv;
    cfg->ffn = (uint32_t)ffn;
    cfg->max_pos = (uint32_t)max_pos;
    cfg->tie_embeddings = (uint32_t)tie;
    cfg->rms_eps = (float)eps;
    cfg->rope_theta = (float)theta;
    rc = get_token(path, root, "bos_token_id", DEF_BOS, cfg->vocab, &cfg->bos_id);
    if (rc == 0) rc = get_token(path, root, "eos_token_id", DEF_EOS, cfg->vocab, &cfg->eos_id);
    if (rc == 0) rc = read_rope_scaling(path, json_object_get(root, rope_key), rope_key, cfg);
    if (rc) return rc;
    for (uint32_t l = 0; l < cfg->n_layers; l++)
        cfg->layers[l] = (tt_layer_dims){cfg->n_heads, cfg->n_kv_heads, cfg->ffn, 0};
    const json_t *tt = json_object_get(root, TIERTRAIN_KEY);
    if (tt) rc = read_tiertrain(path, tt, cfg, map, has_map, source);
    if (rc == 0) rc = config_validate(cfg, path);
    return rc;
}

/* hf_config_read, plus the "tiertrain" object's source (malloc'ed into
 * *source; NULL when the file names none). */
static int config_read(const char *dir, tt_config *cfg, tier_prune_map *map, int *has_map, char **source) {
    memset(map, 0, sizeof *map);
    *has_map = 0;
    *source = NULL;
    int rc = check_dir(dir);
    if (rc) return rc;
    char *path = join(dir, HF_CONFIG_FILE);
    json_error_t jerr;
    if (tt_not_regular(path)) {
        rc = TT_FAIL(-EINVAL, "%s is not a regular file", path);
        free(path);
        return rc;
    }
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (!path_exists(path))
            rc = TT_FAIL(-ENOENT,
                         "%s does not exist; a Hugging Face checkpoint directory has config.json next to its "
                         "safetensors files",
                         path);
        else
            rc = TT_FAIL(-EINVAL, "%s is not valid JSON (%s, line %d column %d)", path, jerr.text, jerr.line,
                         jerr.column);
        free(path);
        return rc;
    }
    const char *src = NULL;
    rc = config_from_json(path, root, cfg, map, has_map, &src);
    if (rc == 0 && src) {
        *source = strdup(src);
        TT_ASSERT(*source);
    }
    json_decref(root);
    free(path);
    if (rc) {
        store_prune_map_clear(map);
        *has_map = 0;
        return rc;
    }
    /* The name is informational: the directory's base name, without trailing slashes. */
    char *copy = strdup(dir);
    TT_ASSERT(copy);
    for (size_t n = strlen(copy); n > 1 && copy[n - 1] == '/'; n--) copy[n - 1] = 0;
    snprintf(cfg->name, sizeof cfg->name, "%s", basename(copy));
    config_clean_name(cfg);
    free(copy);
    return 0;
}

int hf_config_read(const char *dir, tt_config *cfg, tier_prune_map *map, int *has_map) {
    char *source;
    int rc = config_read(dir, cfg, map, has_map, &source);
    free(source);
    return rc;
}

/* ---- config.json: writing --------------------------------------------------- */

/* A JSON number for a float with the fewest digits that read back as the same
 * float (1e-5f -> 1e-05, as Python writes it). */
static json_t *json_float(float f) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static json_t *json_indices(const uint32_t *a, uint32_t n) {
    json_t *arr = json_array();
    for (uint32_t k = 0; k < n; k++) json_array_append_new(arr, json_integer(a[k]));
    return arr;
}

/* The text of config.json (malloc'ed). The standard fields come with sorted
 * keys and two-space indent, as transformers writes them; the "tiertrain"
 * object goes last with one layer per line, since its index lists can hold
 * thousands of numbers. source: the store's source record, NULL: none. */
static char *config_text(const tt_config *c, const tier_prune_map *map, const char *source, uint32_t dtype) {
    json_t *root = json_object();
    json_object_set_new(root, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(root, "model_type", json_string("llama"));
    json_object_set_new(root, "torch_dtype", json_string(dtype == TT_DTYPE_F32 ? "float32" : "bfloat16"));
    json_object_set_new(root, "hidden_act", json_string("silu"));
    json_object_set_new(root, "attention_bias", json_false());
    json_object_set_new(root, "mlp_bias", json_false());
    json_object_set_new(root, "hidden_size", json_integer(c->hidden));
    json_object_set_new(root, "intermediate_size", json_integer(c->ffn));
    json_object_set_new(root, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(root, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(root, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(root, "head_dim", json_integer(c->head_dim));
    json_object_set_new(root, "vocab_size", json_integer(c->vocab));
    json_object_set_new(root, "max_position_embeddings", json_integer(c->max_pos));
    json_object_set_new(root, "rms_norm_eps", json_float(c->rms_eps));
    json_object_set_new(root, "rope_theta", json_float(c->rope_theta));
    json_object_set_new(root, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    json_object_set_new(root, "bos_token_id", json_integer(c->bos_id));
    json_object_set_new(root, "eos_token_id", json_integer(c->eos_id));
    if (c->rope_type == TT_ROPE_LLAMA3)
        json_object_set_new(root, "rope_scaling",
                            json_pack("{s:s, s:o, s:o, s:o, s:I}", "rope_type", "llama3", "factor",
                                      json_float(c->rope_factor), "low_freq_factor", json_float(c->rope_low_freq),
                                      "high_freq_factor", json_float(c->rope_high_freq),
                                      "original_max_position_embeddings", (json_int_t)c->rope_orig_max_pos));
    else
        json_object_set_new(root, "rope_scaling", json_null());
    char *std = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    json_decref(root);
    TT_ASSERT(std);

    int any_pruned = 0;
    for (uint32_t l = 0; l < c->n_layers; l++) any_pruned |= c->layers[l].pruned != 0;
    strbuf b = {0};
    if (!any_pruned) {
        sb_printf(&b, "%s\n", std);
        free(std);
        return b.s;
    }
    size_t n = strlen(std);
    TT_ASSERT(n >= 2 && std[n - 1] == '}' && std[n - 2] == '\n');
    std[n - 2] = 0; /* reopen the object: drop "\n}" */
    sb_printf(&b,
              "%s,\n  \"" TIERTRAIN_KEY "\": {\n    \"format_version\": %d,\n"
              "    \"note\": \"per-layer dimensions of a structurally pruned model (the fields above are the original "
              "model's) and the kept KV-head and MLP-channel indices; transformers cannot load per-layer dimensions, "
              "tiertrain import can\",\n",
              std, TIERTRAIN_FORMAT);
    free(std);
    if (source) { /* the original's name: import records it, not this directory, whose shapes are pruned */
        json_t *js = json_string(source);
        char *q = json_dumps(js, JSON_ENCODE_ANY);
        json_decref(js);
        TT_ASSERT(q);
        sb_printf(&b, "    \"source\": %s,\n", q);
        free(q);
    }
    sb_printf(&b, "    \"layers\": [\n");
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const tt_layer_dims *d = &c->layers[l];
        json_t *lo = json_object();
        json_object_set_new(lo, "pruned", json_boolean(d->pruned));
        json_object_set_new(lo, "num_attention_heads", json_integer(d->n_heads));
        json_object_set_new(lo, "num_key_value_heads", json_integer(d->n_kv_heads));
        json_object_set_new(lo, "intermediate_size", json_integer(d->ffn));
        if (map && d->pruned) {
            json_object_set_new(lo, "kept_kv_heads", json_indices(map->kv[l], d->n_kv_heads));
            json_object_set_new(lo, "kept_ffn_channels", json_indices(map->ffn[l], d->ffn));
        }
        char *s = json_dumps(lo, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(lo);
        TT_ASSERT(s);
        sb_printf(&b, "      %s%s\n", s, l + 1 < c->n_layers ? "," : "");
        free(s);
    }
    sb_printf(&b, "    ]\n  }\n}\n");
    return b.s;
}




int hf_config_write(const char *dir, const tt_config *cfg, const tier_prune_map *map, uint32_t dtype) {
    TT_ASSERT(dtype == TT_DTYPE_BF16 || dtype == TT_DTYPE_F32);
    char *path = join(dir, HF_CONFIG_FILE), *text = config_text(cfg, map, NULL, dtype);
    int rc = atomic_write_file(path, text, strlen(text));
    free(text);
    free(path);
    return rc;
}

/* ---- the safetensors files of a checkpoint ---------------------------------- */

struct hf_weights {
    char *source;      /* model.safetensors or the index: what messages name */
    uint32_t n;        /* files */
    st_file **files;   /* [n] */
    char **names;      /* [n] base names (index mode) */
    uint8_t **used;    /* [n][st_count]: returned by hf_weights_find */
    json_t *weight_map; /* tensor name -> shard file; NULL for a single file */
};

void hf_weights_close(hf_weights *w) {
    if (!w) return;
    for (uint32_t i = 0; i < w->n; i++) {
        st_close(w->files[i]);
        free(w->used[i]);
        if (w->names) free(w->names[i]);
    }
    free(w->files);
    free(w->used);
    free(w->names);
    json_decref(w->weight_map);
    free(w->source);
    free(w);
}

uint32_t hf_weights_n_files(const hf_weights *w) { return w->n; }

const st_file *hf_weights_file(const hf_weights *w, uint32_t i) {
    TT_ASSERT(i < w->n);
    return w->files[i];
}

/* Appends an opened file to w. */
static void add_file(hf_weights *w, st_file *f, const char *name) {
    w->files = realloc(w->files, (w->n + 1) * sizeof *w->files);
    w->used = realloc(w->used, (w->n + 1) * sizeof *w->used);
    TT_ASSERT(w->files && w->used);
    if (name) {
        w->names = realloc(w->names, (w->n + 1) * sizeof *w->names);
        TT_ASSERT(w->names);
        w->names[w->n] = strdup(name);
        TT_ASSERT(w->names[w->n]);
    }
    w->files[w->n] = f;
    w->used[w->n] = tt_xcalloc(st_count(f), 1);
    w->n++;
}

static int shard_of(const hf_weights *w, const char *name) {
    for (uint32_t i = 0; i < w->n; i++)
        if (strcmp(w->names[i], name) == 0) return (int)i;
    return -1;
}

/* Loads the index, opens every shard it names and checks that each listed
 * tensor is where the index says. */
static int open_index(hf_weights *w, const char *dir) {
    json_error_t jerr;
    if (tt_not_regular(w->source)) return TT_FAIL(-EINVAL, "%s is not a regular file", w->source);
    json_t *root = json_load_file(w->source, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return TT_FAIL(-EINVAL, "%s is not valid JSON (%s, line %d column %d)", w->source, jerr.text, jerr.line,
                       jerr.column);
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        json_decref(root);
        return TT_FAIL(-EINVAL, "%s has no \"weight_map\" object naming the shard of each tensor", w->source);
    }
    w->weight_map = json_incref(wm);
    json_decref(root);
    const char *key;
    json_t *v;
    char t[64];
    json_object_foreach(w->weight_map, key, v) {
        const char *f = json_is_string(v) ? json_string_value(v) : NULL;
        /* shards live in the checkpoint directory: a path could read any file */
        if (!f || !*f || strchr(f, '/') || strcmp(f, ".") == 0 || strcmp(f, "..") == 0)
            return TT_FAIL(-EINVAL, "%s: \"weight_map\" gives %s for tensor \"%s\", not a file name in %s", w->source,
                           json_text(v, t, sizeof t), key, dir);
        if (shard_of(w, f) >= 0) continue;
        char *path = join(dir, f);
        st_file *st;
        int rc = st_open(path, &st);
        free(path);
        if (rc) return rc;
        add_file(w, st, f);
    }
    json_object_foreach(w->weight_map, key, v) {
        const st_file *st = w->files[shard_of(w, json_string_value(v))];
        if (st_find(st, key) < 0)
            return TT_FAIL(-EINVAL, "%s: \"weight_map\" puts tensor \"%s\" in %s, which does not hold it; the index "
                           "and its shards disagree", w->source, key, st_path(st));
    }
    return 0;
}

int hf_weights_open(const char *dir, hf_weights **out) {
    *out = NULL;
    int rc = check_dir(dir);
    if (rc) return rc;
    hf_weights *w = tt_xcalloc(1, sizeof *w);
    w->source = join(dir, HF_WEIGHTS_FILE);
    if (path_exists(w->source)) {
        st_file *st;
        rc = st_open(w->source, &st);
        if (rc == 0) add_file(w, st, NULL);
    } else {
        free(w->source);
        w->source = join(dir, HF_INDEX_FILE);
        if (path_exists(w->source)) {
            rc = open_index(w, dir);
        } else {
            char *bin = join(dir, "pytorch_model.bin"), *bin_index = join(dir, "pytorch_model.bin.index.json");
            int has_bin = path_exists(bin) || path_exists(bin_index);
            free(bin);
            free(bin_index);
            rc = TT_FAIL(-ENOENT, "%s has neither " HF_WEIGHTS_FILE " nor " HF_INDEX_FILE "; tiertrain imports "
                         "safetensors checkpoints%s", dir,
                         has_bin ? " (this one is in PyTorch .bin format: convert it to safetensors first)" : "");
        }
    }
    if (rc) {
        hf_weights_close(w);
        return rc;
    }
    *out = w;
    return 0;
}

const st_file *hf_weights_find(hf_weights *w, const char *name, uint32_t *idx) {
    uint32_t fi = 0;
    if (w->weight_map) {
        /* follow the index, as transformers does: a tensor it does not list is absent */
        const json_t *v = json_object_get(w->weight_map, name);
        if (!v) return NULL;
        fi = (uint32_t)shard_of(w, json_string_value(v)); /* open_index checked both */
    }
    int k = st_find(w->files[fi], name);
    if (k < 0) return NULL;
    w->used[fi][k] = 1;
    *idx = (uint32_t)k;
    return w->files[fi];
}

uint32_t hf_weights_unused(const hf_weights *w, const char **example) {
    uint32_t n = 0;
    *example = NULL;
    for (uint32_t i = 0; i < w->n; i++)
        for (uint32_t k = 0; k < st_count(w->files[i]); k++)
            if (!w->used[i][k]) {
                if (!n) *example = st_tensor_at(w->files[i], k)->name;
                n++;
            }
    return n;
}

/* ---- import ------------------------------------------------------------------- */

typedef struct import_ctx {
    const st_file **file; /* [n_tensors] the file holding each tensor of the model */
    uint32_t *idx;        /* [n_tensors] its index there */
    hf_progress_fn progress;
    void *progress_ctx;
    uint64_t done, total; /* tensor bytes read / to read */
    const uint32_t *dtypes; /* [n_tensors] what each becomes in the store */
} import_ctx;

static int import_fill(void *vctx, uint32_t i, const tt_tensor_desc *d, float *out) {
    import_ctx *c = vctx;
    const st_tensor *t = st_tensor_at(c->file[i], c->idx[i]);
    /* the raw bytes (at most 4 per value) go straight into out, then widen there */
    int rc = st_read(c->file[i], c->idx[i], out);
    if (rc) return rc;
    widen_in_place(t->dtype, out, d->rows * d->cols);
    /* whatever it becomes: a model with a NaN or an infinity computes NaN; a checkpoint with one is damaged (an
     * f16 overflow when it was saved, a bad shard), and the file is named here, before anything trains on it */
    rc = store_check_finite(st_path(c->file[i]), d->name, out, d->rows * d->cols, d->cols,
                            "the checkpoint is damaged (a model with it computes NaN); import takes finite weights "
                            "only");
    if (rc) return rc;
    c->done += t->nbytes;
    if (c->progress) c->progress(c->progress_ctx, c->done, c->total);
    return 0;
}

/* Finds every tensor of cfg in w and checks its dtype and shape. */
static int import_check(hf_weights *w, const tt_config *cfg, import_ctx *c) {
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(cfg); i++) {
        config_tensor(cfg, i, &d);
        c->file[i] = hf_weights_find(w, d.name, &c->idx[i]);
        if (!c->file[i])
            return TT_FAIL(-ENOENT,
                           "%s has no tensor \"%s\", which the model of config.json needs; the checkpoint is "
                           "incomplete or does not match its config.json",
                           w->source, d.name);
        const st_tensor *t = st_tensor_at(c->file[i], c->idx[i]);
        if (t->dtype != ST_DTYPE_F32 && t->dtype != ST_DTYPE_BF16 && t->dtype != ST_DTYPE_F16)
            return TT_FAIL(-EINVAL, "%s: tensor \"%s\" has dtype %s; tiertrain imports F32, BF16 and F16 tensors",
                           st_path(c->file[i]), d.name, st_dtype_name(t->dtype));
        uint64_t want[2] = {d.rows, d.cols};
        if (t->ndim != d.ndim || t->shape[0] != d.rows || (d.ndim == 2 && t->shape[1] != d.cols)) {
            char got_s[160], want_s[64];
            shape_text(t->ndim, t->shape, got_s, sizeof got_s);
            shape_text(d.ndim, want, want_s, sizeof want_s);
            return TT_FAIL(-EINVAL,
                           "%s: tensor \"%s\" has shape %s but config.json needs %s; the checkpoint does not match "
                           "its config.json",
                           st_path(c->file[i]), d.name, got_s, want_s);
        }
        c->total += t->nbytes;
    }
    return 0;
}

/* One store_check_output for the file `file` of dir when it exists. */
static int check_against(const char *dir, const char *file, const char *out, int *checked) {
    char *p = join(dir, file);
    int rc = 0;
    if (path_exists(p)) {
        rc = store_check_output("-o", out, p);
        (*checked)++;
    }
    free(p);
    return rc;
}

/* Before anything is read: out must be writable and none of the checkpoint's
 * own files (config.json, model.safetensors, the index, each shard the index
 * names), by path or inode, else the store would replace one of them. An
 * index that does not parse names no shard here (reading it reports it). */
static int import_check_output(const char *dir, const char *out) {
    int checked = 0;
    int rc = check_against(dir, HF_CONFIG_FILE, out, &checked);
    if (rc == 0) rc = check_against(dir, HF_WEIGHTS_FILE, out, &checked);
    if (rc == 0) rc = check_against(dir, HF_INDEX_FILE, out, &checked);
    char *index = join(dir, HF_INDEX_FILE);
    json_t *root = rc == 0 && path_exists(index) && !tt_not_regular(index) ? json_load_file(index, 0, NULL) : NULL;
    free(index);
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (json_is_object(wm)) {
        json_t *seen = json_object();
        const char *key;
        json_t *v;
        json_object_foreach(wm, key, v) {
            const char *f = json_is_string(v) ? json_string_value(v) : NULL;
            if (!f || !*f || strchr(f, '/') || json_object_get(seen, f)) continue;
            json_object_set_new(seen, f, json_true());
            rc = check_against(dir, f, out, &checked);
            if (rc) break;
        }
        json_decref(seen);
    }
    json_decref(root);
    if (rc == 0 && checked == 0) rc = store_check_output("-o", out, NULL);
    return rc;
}

/* The default source record of an import without --base-model (o->source
 * NULL, o->source_default 1) into *abs (malloc'ed; NULL when there is none):
 * the name config.json's "tiertrain" object recorded (recorded, used as it
 * is) wins; a structurally pruned checkpoint without one gets none, since its
 * shapes are not a model an adapter's base_model_name_or_path can name; any
 * other, dir's absolute path. Returns 0, or -EINVAL when that path cannot be
 * a source record (too long, control characters). */
static int import_source(const char *dir, const tt_config *cfg, const hf_import_opts *o, const char *recorded,
                         char **abs) {
    *abs = NULL;
    if (o->source || !o->source_default || recorded) return 0;
    for (uint32_t l = 0; l < cfg->n_layers; l++)
        if (cfg->layers[l].pruned) return 0;
    *abs = realpath(dir, NULL); /* dir exists (config_read checked it): this fails only on a race */
    if (!*abs) *abs = strdup(dir);
    TT_ASSERT(*abs);
    if (tier_source_check(*abs, "the path")) {
        size_t n = strlen(*abs);
        free(*abs);
        *abs = NULL;
        /* the directory last: a message cut to fit ends in the path, not before the advice */
        return TT_FAIL(-EINVAL,
                       "the default --base-model, the checkpoint directory's absolute path, %s, which the model's "
                       "source record cannot hold; pass --base-model NAME (the directory: %s)",
                       n > TIER_SOURCE_MAX ? "is over 1024 bytes long" : "holds control characters or malformed UTF-8", dir);
    }
    return 0;
}

int hf_import(const char *dir, const char *out, const hf_import_opts *o, hf_import_stats *stats) {
    int rc = check_dir(dir);
    if (rc == 0) rc = import_check_output(dir, out);
    if (rc) return rc;
    tt_config *cfg = tt_xcalloc(1, sizeof *cfg);
    tier_prune_map map;
    int has_map;
    char *recorded, *abs = NULL;
    rc = config_read(dir, cfg, &map, &has_map, &recorded);
    if (rc == 0) rc = import_source(dir, cfg, o, recorded, &abs);
    if (rc) {
        if (has_map) store_prune_map_clear(&map);
        free(recorded);
        free(cfg);
        return rc;
    }
    const char *source = o->source ? o->source : recorded ? recorded : abs;
    hf_weights *w = NULL;
    uint32_t nt = config_n_tensors(cfg);
    import_ctx c = {.progress = o->progress, .progress_ctx = o->progress_ctx};
    c.file = tt_xcalloc(nt, sizeof *c.file);
    c.idx = tt_xcalloc(nt, sizeof *c.idx);
    uint32_t *dtypes = tt_xcalloc(nt, sizeof *dtypes);
    store_default_dtypes(cfg, o->linear, o->linear, dtypes);
    c.dtypes = dtypes;
    tier_write_opts wo = {dtypes, has_map ? &map : NULL, 0, source};
    rc = hf_weights_open(dir, &w);
    if (rc == 0) rc = import_check(w, cfg, &c);
    if (rc == 0) rc = store_write(out, cfg, &wo, import_fill, &c);
    if (rc == 0 && stats) {
        memset(stats, 0, sizeof *stats);
        stats->n_files = hf_weights_n_files(w);
        stats->bytes = c.done;
        const char *ex;
        stats->n_unused = hf_weights_unused(w, &ex);
        if (ex) snprintf(stats->unused_example, sizeof stats->unused_example, "%s", ex);
        stats->no_source = o->source_default && !source;
    }
    if (has_map) store_prune_map_clear(&map);
    free(recorded);
    free(abs);
    hf_weights_close(w);
    free(c.file);
    free(c.idx);
    free(dtypes);
    free(cfg);
    return rc;
}

/* ---- export ------------------------------------------------------------------- */

/* Without force, dir's two files, absent now, may not be replaced by this export once another process has written
 * them meanwhile (tt_partial_new_only: that export's files stay, this one is refused at its write); with force,
 * an earlier export's marks that no write spent are dropped. */
static void mark_new_only(const char *dir, int force) {
    const char *names[] = {HF_WEIGHTS_FILE, HF_CONFIG_FILE};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *p = join(dir, names[i]);
        if (force) tt_partial_new_only_clear(p);
        else tt_partial_new_only(p);
        free(p);
    }
}

/* Makes dir a directory to export into: *created = 1 when this call made it.
 * An existing checkpoint there is replaced only with force. */
static int prepare_dir(const char *dir, int force, int *created) {
    struct stat sb;
    *created = 0;
    if (stat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode))
            return TT_FAIL(-ENOTDIR, "%s is a file; give a directory for the checkpoint (it is created when missing)",
                           dir);
        char *index = join(dir, HF_INDEX_FILE);
        int sharded = path_exists(index);
        free(index);
        if (sharded)
            return TT_FAIL(-EEXIST,
                           "%s already holds a sharded checkpoint (" HF_INDEX_FILE "); export into a new or empty "
                           "directory",
                           dir);
        char *weights = join(dir, HF_WEIGHTS_FILE), *config = join(dir, HF_CONFIG_FILE);
        int has_w = path_exists(weights), has_c = path_exists(config);
        free(weights);
        free(config);
        if ((has_w || has_c) && !force)
            return TT_FAIL(-EEXIST,
                           "%s already holds a checkpoint (%s); pass --force to replace its " HF_WEIGHTS_FILE
                           " and " HF_CONFIG_FILE " (other files there stay as they are), or export into a new "
                           "directory",
                           dir, has_w && has_c ? HF_WEIGHTS_FILE " and " HF_CONFIG_FILE
                                               : has_w ? HF_WEIGHTS_FILE : HF_CONFIG_FILE);
        mark_new_only(dir, force);
        return 0;
    }
    if (errno != ENOENT) return TT_FAIL(-errno, "cannot use %s: %s", dir, strerror(errno));
    if (mkdir(dir, 0755) != 0) {
        int e = errno;
        if (e == ENOENT) return TT_FAIL(-ENOENT, "cannot create %s: its parent directory does not exist", dir);
        return TT_FAIL(-e, "cannot create %s: %s", dir, strerror(e));
    }
    *created = 1;
    tt_partial_note_dir(dir); /* a signal removes it too (while empty), as a failure does below */
    mark_new_only(dir, force);
    return 0;
}

int hf_export(const char *store_path, const char *dir, uint32_t dtype, int force, hf_progress_fn progress,
              void *progress_ctx) {
    TT_ASSERT(dtype == TT_DTYPE_BF16 || dtype == TT_DTYPE_F32);
    store_reader r;
    int rc = store_reader_open(&r, store_path);
    if (rc) return rc;
    const tt_config *cfg = store_reader_config(&r);
    int created = 0;
    rc = prepare_dir(dir, force, &created);
    if (rc) {
        store_reader_close(&r);
        return rc;
    }
    uint32_t nt = config_n_tensors(cfg);
    st_entry *entries = tt_xcalloc(nt, sizeof *entries);
    uint64_t(*shapes)[2] = tt_xcalloc(nt, sizeof *shapes);
    tt_tensor_desc *desc = tt_xcalloc(nt, sizeof *desc);
    st_dtype sdt = dtype == TT_DTYPE_F32 ? ST_DTYPE_F32 : ST_DTYPE_BF16;
    uint64_t esz = st_dtype_size(sdt), total = 0;
    for (uint32_t i = 0; i < nt; i++) {
        config_tensor(cfg, i, &desc[i]);
        shapes[i][0] = desc[i].rows;
        shapes[i][1] = desc[i].cols;
        entries[i] = (st_entry){desc[i].name, sdt, desc[i].ndim, shapes[i], NULL};
        total += desc[i].rows * desc[i].cols * esz;
    }
    char *weights = join(dir, HF_WEIGHTS_FILE), *config = join(dir, HF_CONFIG_FILE);
    atomic_partial cpart;
    char *text = config_text(cfg, tier_prune(r.s), tier_source(r.s), dtype);
    st_writer *sw = NULL;
    uint64_t maxn = store_max_tensor(cfg), done = 0;
    float *buf = malloc(maxn * sizeof *buf); /* (rows, cols) f32 of one tensor, then its encoding in place */
    if (!buf) rc = TT_FAIL(-ENOMEM, "out of memory: exporting %s needs %llu MB for its largest tensor", store_path,
                           (unsigned long long)(maxn * sizeof *buf >> 20));
    static const char *const meta[] = {"format", "pt", NULL}; /* transformers refuses files without it */
    if (rc == 0) rc = st_writer_open(&sw, weights, nt, entries, meta);
    for (uint32_t i = 0; i < nt && rc == 0; i++) {
        uint64_t n = desc[i].rows * desc[i].cols;
        rc = store_reader_tensor(&r, i, buf);
        if (rc) break;
        if (sdt == ST_DTYPE_BF16) {
            /* in place, front to back: value j's 2 bytes land at 2j, over floats already read */
            uint8_t *b = (uint8_t *)buf;
            for (uint64_t j = 0; j < n; j++) {
                uint16_t h = f32_to_bf16(buf[j]);
                memcpy(b + 2 * j, &h, 2);
            }
        }
        rc = st_writer_write(sw, buf, n * esz);
        done += n * esz;
        if (rc == 0 && progress) progress(progress_ctx, done, total);
    }
    /* config.json is complete on disk before model.safetensors appears, and
     * renamed right after it: a failure leaves neither new file */
    if (rc == 0) rc = atomic_write_partial(config, text, strlen(text), &cpart);
    if (rc == 0) {
        rc = st_writer_finish(sw);
        sw = NULL;
        if (rc) atomic_partial_drop(&cpart);
        else rc = atomic_commit(&cpart, config);
    }
    st_writer_abort(sw);
    if (rc && created) rmdir(dir); /* only when empty, which it is after a failure */
    free(buf);
    free(text);
    free(weights);
    free(config);
    free(desc);
    free(shapes);
    free(entries);
    store_reader_close(&r);
    return rc;
}
