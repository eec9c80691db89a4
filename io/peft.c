/* io/peft.c — PEFT LoRA adapter directories (adapter_model.safetensors +
 * adapter_config.json): writer and validating reader. io/peft.h has the
 * layout; the tensors go through io/safetensors.h, the config through
 * jansson. */
#include "io/peft.h"
#include "io/atomicfile.h"

#include "core/base/common.h"
#include "core/base/config.h"
#include "core/base/dtype.h"
#include "io/safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <jansson.h>
#include <float.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NAME_PREFIX "base_model.model.model.layers."
#define MAX_RANK 65536u

/* peft_proj and core/base/config.h's TT_PROJ_* index the same projections. */
_Static_assert(PEFT_PROJ_Q == (int)TT_PROJ_Q && PEFT_PROJ_GATE == (int)TT_PROJ_GATE &&
                   PEFT_PROJ_DOWN == (int)TT_PROJ_DOWN && PEFT_N_PROJ == (int)TT_PROJ_COUNT,
               "peft_proj must follow TT_PROJ_* order");

static const char *const g_proj[PEFT_N_PROJ] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                "gate_proj", "up_proj", "down_proj"};

#define PEFT_META_BASE "tiertrain_base"
/* "lora_alpha=A use_rslora=true|false": the config's two numbers that no tensor shape checks, so that a config from
 * another save (a crash between the two renames, an edited file) is refused, not used with these tensors */
#define PEFT_META_LORA "tiertrain_lora"

const char *peft_proj_name(int p) { return p >= 0 && p < PEFT_N_PROJ ? g_proj[p] : NULL; }

/* "self_attn" or "mlp": the module that holds projection p. */
static const char *proj_parent(int p) { return p <= PEFT_PROJ_O ? "self_attn" : "mlp"; }

static void tensor_name(char *buf, size_t cap, uint32_t l, int p, char ab) {
    snprintf(buf, cap, NAME_PREFIX "%u.%s.%s.lora_%c.weight", l, proj_parent(p), g_proj[p], ab);
}

static char *join(const char *dir, const char *file) {
    size_t n = strlen(dir) + strlen(file) + 2;
    char *s = tt_xmalloc(n);
    snprintf(s, n, "%s/%s", dir, file);
    return s;
}

/* ---- writer --------------------------------------------------------------- */



/* A JSON number for a float, printed with the fewest digits that read back
 * as the same float (0.05f -> 0.05, as Python writes it); integral values
 * become JSON integers (PEFT's lora_alpha is an int by default). */
/* The shortest %g of f that reads back as f (9 digits always do), into buf. */
static const char *shortest_g(float f, char *buf, size_t cap) {
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, cap, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return buf;
}

static json_t *json_float(float f, int int_if_integral) {
    if (int_if_integral && f == floorf(f) && fabsf(f) < 2147483648.0f) return json_integer((json_int_t)f);
    char buf[32];
    return json_real(strtod(shortest_g(f, buf, sizeof buf), NULL));
}

static int check_adapter(const char *dir, const peft_adapter *a) {
    if (a->n_layers < 1 || a->n_layers > TT_MAX_LAYERS)
        return TT_FAIL(-EINVAL, "cannot write the adapter %s: n_layers %u is outside 1..%d", dir, a->n_layers,
                       TT_MAX_LAYERS);
    if (a->rank < 1 || a->rank > MAX_RANK)
        return TT_FAIL(-EINVAL, "cannot write the adapter %s: rank %u is outside 1..%u", dir, a->rank, MAX_RANK);
    if (!a->target_mask || a->target_mask >> PEFT_N_PROJ)
        return TT_FAIL(-EINVAL, "cannot write the adapter %s: target mask 0x%x names no projection or an unknown one",
                       dir, a->target_mask);
    if (!isfinite(a->alpha) || !(a->dropout >= 0.0f && a->dropout < 1.0f))
        return TT_FAIL(-EINVAL, "cannot write the adapter %s: lora_alpha must be finite and lora_dropout in [0, 1)",
                       dir);
    for (uint32_t l = 0; l < a->n_layers; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++) {
            const peft_lora *x = peft_at(a, l, p);
            int want = (a->target_mask >> p) & 1;
            if (want && (!x->in || !x->out || !x->A || !x->B))
                return TT_FAIL(-EINVAL, "cannot write the adapter %s: layer %u %s is a target but has no A/B or a zero "
                               "dimension", dir, l, g_proj[p]);
            if (!want && (x->in || x->out))
                return TT_FAIL(-EINVAL, "cannot write the adapter %s: layer %u %s has weights but is not in the target "
                               "mask", dir, l, g_proj[p]);
        }
    return 0;
}

static char *config_json(const peft_adapter *a) {
    json_t *targets = json_array();
    for (int p = 0; p < PEFT_N_PROJ; p++)
        if ((a->target_mask >> p) & 1) json_array_append_new(targets, json_string(g_proj[p]));
    json_t *base = a->base_model ? json_string(a->base_model) : json_null();
    if (!base) base = json_null(); /* not UTF-8: written as null rather than failing the checkpoint */
    json_t *root = json_pack("{s:s, s:s, s:I, s:o, s:o, s:o, s:s, s:b, s:b, s:b, s:o, s:n, s:n, s:n, s:{}, s:{},"
                             " s:b, s:b, s:n}",
                             "peft_type", "LORA", "task_type", "CAUSAL_LM", "r", (json_int_t)a->rank,
                             "lora_alpha", json_float(a->alpha, 1), "lora_dropout", json_float(a->dropout, 0),
                             "target_modules", targets, "bias", "none", "fan_in_fan_out", 0, "inference_mode", 1,
                             "init_lora_weights", 1, "base_model_name_or_path", base, "modules_to_save",
                             "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern", "use_rslora", a->rslora != 0,
                             "use_dora", 0, "revision");
    TT_ASSERT(root);
    /* As Python's json.dump(indent=2, sort_keys=True) in PEFT's save_pretrained. */
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    json_decref(root);
    TT_ASSERT(s);
    return s;
}

int peft_write(const char *dir, const peft_adapter *a) {
    int rc = check_adapter(dir, a);
    if (rc) return rc;
    int made = mkdir(dir, 0755) == 0; /* removed again when the write fails */
    if (!made) {
        int e = errno;
        struct stat sb;
        if (e != EEXIST) {
            if (e == ENOENT)
                return TT_FAIL(-ENOENT, "cannot create the adapter directory %s: its parent does not exist", dir);
            return TT_FAIL(-e, "cannot create the adapter directory %s: %s", dir, strerror(e));
        }
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return TT_FAIL(-ENOTDIR, "%s exists and is not a directory; give a directory for the adapter", dir);
    }
    /* Two entries per adapted projection; names and shapes in one block. */
    uint32_t n = 0;
    uint64_t n_vals = 0;
    for (uint32_t l = 0; l < a->n_layers; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++) {
            const peft_lora *x = peft_at(a, l, p);
            if (!x->in) continue;
            n += 2;
            n_vals += (uint64_t)a->rank * ((uint64_t)x->in + x->out);
        }
    enum { NAME_CAP = 96 };
    st_entry *e = tt_xcalloc(n, sizeof *e);
    char *names = tt_xcalloc(n, NAME_CAP);
    uint64_t *shapes = tt_xcalloc(2ull * n, sizeof *shapes);
    uint16_t *half = NULL;
    if (a->bf16) {
        half = malloc(n_vals ? n_vals * sizeof *half : 1);
        if (!half) {
            free(e); free(names); free(shapes);
            return TT_FAIL(-ENOMEM, "cannot write the adapter %s: out of memory converting it to bf16", dir);
        }
    }
    uint32_t k = 0;
    uint64_t h = 0;
    for (uint32_t l = 0; l < a->n_layers; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++) {
            const peft_lora *x = peft_at(a, l, p);
            if (!x->in) continue;
            for (int ab = 0; ab < 2; ab++, k++) {
                const float *src = ab ? x->B : x->A;
                uint64_t rows = ab ? x->out : a->rank, cols = ab ? a->rank : x->in;
                tensor_name(names + (size_t)k * NAME_CAP, NAME_CAP, l, p, ab ? 'B' : 'A');
                shapes[2 * k] = rows;
                shapes[2 * k + 1] = cols;
                e[k] = (st_entry){names + (size_t)k * NAME_CAP, a->bf16 ? ST_DTYPE_BF16 : ST_DTYPE_F32, 2,
                                  &shapes[2 * k], src};
                if (a->bf16) {
                    for (uint64_t i = 0; i < rows * cols; i++) half[h + i] = f32_to_bf16(src[i]);
                    e[k].data = half + h;
                    h += rows * cols;
                }
            }
        }
    char *tpath = join(dir, PEFT_TENSORS), *cpath = join(dir, PEFT_CONFIG);
    char fp[24];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)a->base_fp);
    char lora[64], al[32];
    snprintf(lora, sizeof lora, "lora_alpha=%s use_rslora=%s", shortest_g(a->alpha, al, sizeof al),
             a->rslora ? "true" : "false");
    const char *meta[] = {"format", "pt", PEFT_META_LORA, lora, a->base_fp ? PEFT_META_BASE : NULL, fp, NULL};
    /* adapter_config.json is complete on disk before adapter_model.safetensors appears, and renamed right after
     * it (as hf_export): a failure leaves neither new file, not new tensors beside an old or missing config; a crash
     * between the two renames leaves new tensors beside the old config, which the reader refuses (PEFT_META_LORA) */
    char *cfg = config_json(a);
    atomic_partial cpart;
    rc = atomic_write_partial(cpath, cfg, strlen(cfg), &cpart);
    free(cfg);
    if (rc == 0) {
        rc = st_write(tpath, n, e, meta);
        if (rc) atomic_partial_drop(&cpart);
        else rc = atomic_commit(&cpart, cpath);
    }
    if (rc && made) { /* nothing of this failed adapter is left: a folder it made holds only its files */
        unlink(tpath);
        rmdir(dir);
    }
    free(half);
    free(e);
    free(names);
    free(shapes);
    free(tpath);
    free(cpath);
    return rc;
}

/* ---- reader --------------------------------------------------------------- */

/* The adapter options tiertrain accepts from adapter_config.json. */
static int parse_config(const char *path, peft_adapter *out) {
    json_error_t jerr;
    if (tt_not_regular(path)) return TT_FAIL(-EINVAL, "%s is not a regular file; re-save the adapter", path);
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return TT_FAIL(-EINVAL, "%s is not valid JSON (%s, line %d column %d); re-save the adapter", path, jerr.text,
                       jerr.line, jerr.column);
    int rc = 0;
    const json_t *v;
#define BAD(...) do { rc = TT_FAIL(-EINVAL, __VA_ARGS__); goto out; } while (0)
    if (!json_is_object(root)) BAD("%s is not a JSON object; it is not a PEFT adapter config", path);
    v = json_object_get(root, "peft_type");
    if (!json_is_string(v)) BAD("%s has no \"peft_type\"; it is not a PEFT adapter config", path);
    if (strcmp(json_string_value(v), "LORA") != 0)
        BAD("%s: peft_type is \"%.32s\"; tiertrain reads LoRA adapters only (peft_type \"LORA\")", path,
            json_string_value(v));
    v = json_object_get(root, "task_type");
    if (v && !json_is_null(v) && !(json_is_string(v) && strcmp(json_string_value(v), "CAUSAL_LM") == 0))
        BAD("%s: task_type is not \"CAUSAL_LM\"; tiertrain reads causal-LM adapters of LLaMA models only", path);
    v = json_object_get(root, "r");
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (json_int_t)MAX_RANK)
        BAD("%s: \"r\" must be an integer in 1..%u", path, MAX_RANK);
    out->rank = (uint32_t)json_integer_value(v);
    v = json_object_get(root, "lora_alpha");
    if (!json_is_number(v) || !isfinite(json_number_value(v))) BAD("%s: \"lora_alpha\" must be a number", path);
    if (fabs(json_number_value(v)) > FLT_MAX) /* the scale is a float: 1e39 would be infinite */
        BAD("%s: \"lora_alpha\" is %g, beyond a float's range (magnitude at most 3.4e38); give a smaller alpha", path,
            json_number_value(v));
    out->alpha = (float)json_number_value(v);
    v = json_object_get(root, "lora_dropout");
    if (v && !(json_is_number(v) && json_number_value(v) >= 0 && (float)json_number_value(v) < 1.0f))
        BAD("%s: \"lora_dropout\" must be a number in [0, 1)", path);
    out->dropout = v ? (float)json_number_value(v) : 0.0f;
    v = json_object_get(root, "target_modules");
    if (!json_is_array(v) || json_array_size(v) == 0)
        BAD("%s: \"target_modules\" must be a list of projection names (\"q_proj\", ..., \"down_proj\")", path);
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *m = json_array_get(v, i);
        int p = -1;
        for (int q = 0; q < PEFT_N_PROJ && json_is_string(m); q++)
            if (strcmp(json_string_value(m), g_proj[q]) == 0) p = q;
        if (p < 0)
            BAD("%s: target_modules entry %zu is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                "down_proj; tiertrain adapts only those", path, i);
        out->target_mask |= 1u << p;
    }
    v = json_object_get(root, "bias");
    if (v && !(json_is_string(v) && strcmp(json_string_value(v), "none") == 0))
        BAD("%s: bias is not \"none\"; tiertrain does not support trained biases", path);
    v = json_object_get(root, "use_rslora");
    if (v && !json_is_null(v) && !json_is_boolean(v)) BAD("%s: \"use_rslora\" must be true or false", path);
    out->rslora = json_is_true(v);
    static const char *const must_be_false[] = {"fan_in_fan_out", "use_dora"};
    for (size_t i = 0; i < sizeof must_be_false / sizeof *must_be_false; i++) {
        v = json_object_get(root, must_be_false[i]);
        if (v && !json_is_null(v) && !json_is_false(v))
            BAD("%s: \"%s\" is set; tiertrain does not support that LoRA variant", path, must_be_false[i]);
    }
    static const char *const must_be_empty[] = {"modules_to_save", "layers_to_transform", "rank_pattern",
                                                "alpha_pattern"};
    for (size_t i = 0; i < sizeof must_be_empty / sizeof *must_be_empty; i++) {
        v = json_object_get(root, must_be_empty[i]);
        if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0) &&
            !(json_is_object(v) && json_object_size(v) == 0))
            BAD("%s: \"%s\" is set; tiertrain supports only one rank and alpha for every projection of every layer",
                path, must_be_empty[i]);
    }
    v = json_object_get(root, "base_model_name_or_path");
    if (json_is_string(v)) {
        out->base_model = strdup(json_string_value(v));
        TT_ASSERT(out->base_model);
    }
#undef BAD
out:
    json_decref(root);
    return rc;
}

/* Parses a PEFT tensor name: layer, projection, 0 for lora_A / 1 for lora_B.
 * Returns 0 for anything that is not exactly such a name. */
static int parse_name(const char *s, uint32_t *layer, int *proj, int *ab) {
    size_t pl = strlen(NAME_PREFIX);
    if (strncmp(s, NAME_PREFIX, pl) != 0) return 0;
    s += pl;
    uint32_t l = 0;
    int nd = 0;
    while (*s >= '0' && *s <= '9' && nd < 6) { l = l * 10 + (uint32_t)(*s++ - '0'); nd++; }
    if (nd == 0 || *s != '.' || (nd > 1 && s[-nd] == '0')) return 0;
    s++;
    for (int p = 0; p < PEFT_N_PROJ; p++) {
        char tail[64];
        for (int k = 0; k < 2; k++) {
            snprintf(tail, sizeof tail, "%s.%s.lora_%c.weight", proj_parent(p), g_proj[p], k ? 'B' : 'A');
            if (strcmp(s, tail) == 0) {
                *layer = l;
                *proj = p;
                *ab = k;
                return 1;
            }
        }
    }
    return 0;
}

void peft_free(peft_adapter *a) {
    if (!a) return;
    free(a->lora);
    free(a->mem_);
    free((char *)a->base_model);
    memset(a, 0, sizeof *a);
}

/* Reads tensor i (F32, BF16 or F16, count values) into dst as f32. */
static int read_f32(st_file *st, uint32_t i, float *dst, uint64_t count, void *scratch) {
    const st_tensor *t = st_tensor_at(st, i);
    if (t->dtype == ST_DTYPE_F32) return st_read(st, i, dst);
    int rc = st_read(st, i, scratch);
    if (rc) return rc;
    const uint16_t *hv = scratch;
    for (uint64_t j = 0; j < count; j++) dst[j] = t->dtype == ST_DTYPE_BF16 ? bf16_to_f32(hv[j]) : f16_to_f32(hv[j]);
    return 0;
}

int peft_read(const char *dir, uint32_t n_layers, peft_adapter *out) {
    memset(out, 0, sizeof *out);
    TT_ASSERT(n_layers <= TT_MAX_LAYERS);
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        int e = errno;
        if (e == ENOENT) return TT_FAIL(-ENOENT, "the adapter directory %s does not exist; check the path", dir);
        return TT_FAIL(-e, "cannot open the adapter directory %s: %s", dir, strerror(e));
    }
    if (!S_ISDIR(sb.st_mode))
        return TT_FAIL(-ENOTDIR, "%s is not a directory; give the PEFT adapter directory (with %s and %s)", dir,
                       PEFT_CONFIG, PEFT_TENSORS);
    char *cpath = join(dir, PEFT_CONFIG), *tpath = join(dir, PEFT_TENSORS);
    st_file *st = NULL;
    int32_t *idx = NULL; /* [TT_MAX_LAYERS][PEFT_N_PROJ][2] tensor index, -1 = absent */
    void *scratch = NULL;
    int rc = 0;
#define BAD(...) do { rc = TT_FAIL(-EINVAL, __VA_ARGS__); goto out; } while (0)
    if (stat(cpath, &sb) != 0) {
        rc = TT_FAIL(-ENOENT, "%s does not exist; %s is not a PEFT adapter directory", cpath, dir);
        goto out;
    }
    rc = parse_config(cpath, out);
    if (rc) goto out;
    if (stat(tpath, &sb) != 0) {
        rc = TT_FAIL(-ENOENT, "%s does not exist; tiertrain reads adapters saved as safetensors (PEFT's default; an "
                     "adapter_model.bin must be converted)", tpath);
        goto out;
    }
    rc = st_open(tpath, &st);
    if (rc) goto out;
    const char *fp = st_metadata(st, PEFT_META_BASE);
    if (fp) {
        char *end;
        errno = 0;
        out->base_fp = strtoull(fp, &end, 16);
        if (errno || *end || end == fp || out->base_fp == 0)
            BAD("%s: metadata %s is \"%.40s\", not a 16-digit hex fingerprint; the file is corrupt", tpath,
                PEFT_META_BASE, fp);
    }
    const char *lm = st_metadata(st, PEFT_META_LORA);
    if (lm) {
        float alpha;
        char rs[8];
        int end = 0;
        if (sscanf(lm, "lora_alpha=%f use_rslora=%7[a-z]%n", &alpha, rs, &end) != 2 || lm[end] ||
            (strcmp(rs, "true") != 0 && strcmp(rs, "false") != 0))
            BAD("%s: metadata %s is \"%.60s\", not \"lora_alpha=A use_rslora=true|false\"; the file is corrupt", tpath,
                PEFT_META_LORA, lm);
        int rslora = strcmp(rs, "true") == 0;
        char a1[32], a2[32];
        if (alpha != out->alpha || rslora != out->rslora)
            BAD("%s says lora_alpha %s, use_rslora %s, but %s was saved with lora_alpha %s, use_rslora %s: the two "
                "files come from different saves (an interrupted save, or an edited config); save the adapter again, "
                "or set those two back in %s", cpath, shortest_g(out->alpha, a1, sizeof a1),
                out->rslora ? "true" : "false", tpath, shortest_g(alpha, a2, sizeof a2), rs, cpath);
    }

    uint32_t limit = n_layers ? n_layers : TT_MAX_LAYERS, max_layer = 0;
    idx = tt_xmalloc((size_t)TT_MAX_LAYERS * PEFT_N_PROJ * 2 * sizeof *idx);
    memset(idx, 0xff, (size_t)TT_MAX_LAYERS * PEFT_N_PROJ * 2 * sizeof *idx);
    uint64_t max_bytes = 0;
    for (uint32_t i = 0; i < st_count(st); i++) {
        const st_tensor *t = st_tensor_at(st, i);
        uint32_t l;
        int p, ab;
        if (!parse_name(t->name, &l, &p, &ab))
            BAD("%s: tensor \"%s\" is not a lora_A/lora_B weight of a LLaMA attention or MLP projection; tiertrain "
                "cannot load it", tpath, t->name);
        if (l >= limit && n_layers)
            BAD("%s: tensor \"%s\" is for layer %u but the model has %u layers; the adapter belongs to another model",
                tpath, t->name, l, limit);
        if (l >= limit)
            BAD("%s: tensor \"%s\" is for layer %u, beyond the %u layers tiertrain supports", tpath, t->name, l, limit);
        if (!((out->target_mask >> p) & 1))
            BAD("%s: tensor \"%s\" adapts %s, which target_modules in %s does not list; the two files disagree", tpath,
                t->name, g_proj[p], cpath);
        if (t->dtype != ST_DTYPE_F32 && t->dtype != ST_DTYPE_BF16 && t->dtype != ST_DTYPE_F16)
            BAD("%s: tensor \"%s\" is %s; tiertrain reads F32, BF16 or F16 adapters", tpath, t->name,
                st_dtype_name(t->dtype));
        uint64_t r = out->rank;
        int shape_ok = t->ndim == 2 && (ab ? t->shape[1] == r : t->shape[0] == r) && t->shape[0] > 0 &&
                       t->shape[1] > 0 && t->shape[0] <= UINT32_MAX && t->shape[1] <= UINT32_MAX;
        if (!shape_ok) {
            char shp[96] = "(";
            for (uint32_t d = 0; d < t->ndim; d++)
                snprintf(shp + strlen(shp), sizeof shp - strlen(shp), "%s%llu", d ? ", " : "",
                         (unsigned long long)t->shape[d]);
            strncat(shp, ")", sizeof shp - strlen(shp) - 1);
            BAD("%s: tensor \"%s\" has shape %s but r = %llu in %s needs %s; the two files disagree or the adapter is "
                "corrupt",
                tpath, t->name, shp, (unsigned long long)r, cpath, ab ? "(out_features, r)" : "(r, in_features)");
        }
        idx[((size_t)l * PEFT_N_PROJ + (size_t)p) * 2 + (size_t)ab] = (int32_t)i;
        if (l > max_layer) max_layer = l;
        if (t->nbytes > max_bytes) max_bytes = t->nbytes;
        if (t->dtype != ST_DTYPE_BF16) out->bf16 = -1; /* not all BF16 */
    }
    if (st_count(st) == 0) BAD("%s holds no LoRA tensors; the adapter is empty", tpath);
    out->bf16 = out->bf16 == 0;
    out->n_layers = n_layers ? n_layers : max_layer + 1;

    /* Pairs complete, every target in every layer, A and B agree; then size the block. */
    uint64_t n_vals = 0;
    for (uint32_t l = 0; l < out->n_layers; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++) {
            if (!((out->target_mask >> p) & 1)) continue;
            int32_t ia = idx[((size_t)l * PEFT_N_PROJ + (size_t)p) * 2],
                    ib = idx[((size_t)l * PEFT_N_PROJ + (size_t)p) * 2 + 1];
            if (ia < 0 && ib < 0)
                BAD("%s: layer %u has no %s tensors, but target_modules in %s lists %s; the adapter was trained for "
                    "another model or is incomplete", tpath, l, g_proj[p], cpath, g_proj[p]);
            if (ia < 0 || ib < 0)
                BAD("%s: layer %u %s has lora_%c but no lora_%c; the adapter is incomplete", tpath, l, g_proj[p],
                    ia < 0 ? 'B' : 'A', ia < 0 ? 'A' : 'B');
            n_vals += (uint64_t)out->rank *
                      (st_tensor_at(st, (uint32_t)ia)->shape[1] + st_tensor_at(st, (uint32_t)ib)->shape[0]);
        }
    out->lora = tt_xcalloc((size_t)out->n_layers * PEFT_N_PROJ, sizeof *out->lora);
    if (n_vals > SIZE_MAX / sizeof(float) || !(out->mem_ = malloc(n_vals * sizeof(float))) ||
        !(scratch = malloc(max_bytes ? max_bytes : 1))) {
        rc = TT_FAIL(-ENOMEM, "%s: out of memory loading %llu adapter values", tpath, (unsigned long long)n_vals);
        goto out;
    }
    float *mem = out->mem_;
    for (uint32_t l = 0; l < out->n_layers && rc == 0; l++)
        for (int p = 0; p < PEFT_N_PROJ && rc == 0; p++) {
            if (!((out->target_mask >> p) & 1)) continue;
            uint32_t ia = (uint32_t)idx[((size_t)l * PEFT_N_PROJ + (size_t)p) * 2];
            uint32_t ib = (uint32_t)idx[((size_t)l * PEFT_N_PROJ + (size_t)p) * 2 + 1];
            peft_lora *x = peft_at(out, l, p);
            x->in = (uint32_t)st_tensor_at(st, ia)->shape[1];
            x->out = (uint32_t)st_tensor_at(st, ib)->shape[0];
            x->A = mem;
            mem += (uint64_t)out->rank * x->in;
            x->B = mem;
            mem += (uint64_t)out->rank * x->out;
            rc = read_f32(st, ia, x->A, (uint64_t)out->rank * x->in, scratch);
            if (rc == 0) rc = read_f32(st, ib, x->B, (uint64_t)out->rank * x->out, scratch);
        }
#undef BAD
out:
    free(scratch);
    free(idx);
    st_close(st);
    free(cpath);
    free(tpath);
    if (rc) peft_free(out);
    return rc;
}
