/* tests/test_peft.c — PEFT LoRA adapter directories (io/peft.h).
 *
 * 1. Writes an adapter (2 layers, rank 4, targets q_proj, v_proj, down_proj,
 *    random A/B including -0, subnormals and infinities) and checks the
 *    files without peft_read: every tensor name spelled out here as PEFT
 *    saves it, shapes lora_A (r, in) / lora_B (out, r), dtype F32, values bit
 *    for bit (through the safetensors reader), "format": "pt" metadata, and
 *    every adapter_config.json field PEFT writes, with jansson.
 * 2. Reads it back with peft_read (n_layers given and inferred): same
 *    options, dimensions, values bit for bit; no ".partial" left behind.
 * 3. The BF16 option: tensors stored as BF16 (round to nearest even), read
 *    back as their f32 values.
 * 4. Errors, each -errno with a message naming the file: missing directory,
 *    missing config, invalid JSON, peft_type "IA3", r disagreeing with the
 *    tensors, a tensor with the wrong shape, a missing lora_B, a tensor for
 *    a projection not in target_modules, a foreign tensor name, a layer
 *    beyond the model, a layer missing; writer: a file as directory, an
 *    inconsistent adapter.
 */
#include "core/base/common.h"
#include "core/base/dtype.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <sys/stat.h>

#define L 2
#define R 4
static const unsigned k_mask = (1u << PEFT_PROJ_Q) | (1u << PEFT_PROJ_V) | (1u << PEFT_PROJ_DOWN);
/* in / out features of each projection (hidden 32, kv 16, ffn 48) */
static const uint32_t k_in[PEFT_N_PROJ] = {32, 32, 32, 32, 32, 32, 48};
static const uint32_t k_out[PEFT_N_PROJ] = {32, 16, 16, 32, 48, 48, 32};
/* PEFT's names, spelled out independently of io/peft.c */
static const char *const k_module[PEFT_N_PROJ] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

static char g_tmp[512];

static uint32_t g_rng = 2463534242u;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 17; g_rng ^= g_rng << 5;
    return g_rng;
}

static float rnd_float(uint64_t j) {
    uint32_t u;
    switch (j % 97) {
    case 3: u = 0x80000000u; break;               /* -0 */
    case 5: u = 0x00000001u + (rnd() & 0xff); break; /* subnormal */
    case 7: u = 0x7f800000u; break;               /* +inf */
    default: {
        float f = (float)((int32_t)rnd()) / 2147483648.0f;
        return f * 0.1f;
    }
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* A fresh adapter with owned arrays (free with free_adapter). */
static void make_adapter(peft_adapter *a, int bf16) {
    memset(a, 0, sizeof *a);
    a->n_layers = L;
    a->rank = R;
    a->alpha = 8.0f;
    a->dropout = 0.05f;
    a->target_mask = k_mask;
    a->base_model = "meta-llama/Llama-3.2-1B";
    a->bf16 = bf16;
    a->lora = calloc(L * PEFT_N_PROJ, sizeof *a->lora);
    for (uint32_t l = 0; l < L; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++) {
            if (!((k_mask >> p) & 1)) continue;
            peft_lora *x = peft_at(a, l, p);
            x->in = k_in[p];
            x->out = k_out[p];
            x->A = malloc(sizeof(float) * R * x->in);
            x->B = malloc(sizeof(float) * R * x->out);
            for (uint64_t j = 0; j < (uint64_t)R * x->in; j++) x->A[j] = rnd_float(j);
            for (uint64_t j = 0; j < (uint64_t)R * x->out; j++) x->B[j] = rnd_float(j + 1);
        }
}

static void free_adapter(peft_adapter *a) {
    for (uint32_t l = 0; l < a->n_layers; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++) {
            free(peft_at(a, l, p)->A);
            free(peft_at(a, l, p)->B);
        }
    free(a->lora);
}

static void name_of(char *buf, size_t cap, uint32_t l, int p, char ab) {
    snprintf(buf, cap, "base_model.model.model.layers.%u.%s.lora_%c.weight", l, k_module[p], ab);
}

static void path_of(char *buf, size_t cap, const char *dir, const char *file) {
    snprintf(buf, cap, "%s/%s", dir, file);
}

/* Is the whole directory free of ".partial" files? */
static int no_partials(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int ok = 1;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".partial")) ok = 0;
    closedir(d);
    return ok;
}

/* ---- 1: the files, checked without peft_read ------------------------------ */

static void check_tensors(const char *dir, const peft_adapter *a) {
    char path[700];
    path_of(path, sizeof path, dir, "adapter_model.safetensors");
    st_file *st = NULL;
    int rc = st_open(path, &st);
    CHECK_MSG(rc == 0, "st_open: %s", tt_lasterr());
    if (rc) return;
    CHECK_EQ_INT(st_count(st), L * 3 * 2);
    CHECK(st_metadata(st, "format") && strcmp(st_metadata(st, "format"), "pt") == 0);
    char lora[64];
    snprintf(lora, sizeof lora, "lora_alpha=%g use_rslora=%s", (double)a->alpha, a->rslora ? "true" : "false");
    CHECK_MSG(st_metadata(st, "tiertrain_lora") && strcmp(st_metadata(st, "tiertrain_lora"), lora) == 0,
              "tiertrain_lora is \"%s\", not \"%s\"", st_metadata(st, "tiertrain_lora") ? st_metadata(st, "tiertrain_lora") : "absent", lora);
    for (uint32_t l = 0; l < L; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++)
            for (int ab = 0; ab < 2; ab++) {
                char name[128];
                name_of(name, sizeof name, l, p, ab ? 'B' : 'A');
                int i = st_find(st, name);
                if (!((k_mask >> p) & 1)) {
                    CHECK_MSG(i < 0, "%s present but not a target", name);
                    continue;
                }
                CHECK_MSG(i >= 0, "%s missing", name);
                if (i < 0) continue;
                const st_tensor *t = st_tensor_at(st, (uint32_t)i);
                uint64_t rows = ab ? k_out[p] : R, cols = ab ? R : k_in[p];
                CHECK_EQ_INT(t->ndim, 2);
                CHECK_MSG(t->shape[0] == rows && t->shape[1] == cols, "%s: shape (%llu, %llu), want (%llu, %llu)", name,
                          (unsigned long long)t->shape[0], (unsigned long long)t->shape[1], (unsigned long long)rows,
                          (unsigned long long)cols);
                const peft_lora *x = peft_at(a, l, p);
                const float *want = ab ? x->B : x->A;
                uint8_t *got = malloc(t->nbytes);
                CHECK(st_read(st, (uint32_t)i, got) == 0);
                if (a->bf16) {
                    CHECK_EQ_INT(t->dtype, ST_DTYPE_BF16);
                    int same = t->nbytes == rows * cols * 2;
                    for (uint64_t j = 0; same && j < rows * cols; j++) {
                        uint16_t h;
                        memcpy(&h, got + 2 * j, 2);
                        same = h == f32_to_bf16(want[j]);
                    }
                    CHECK_MSG(same, "%s: bf16 values differ", name);
                } else {
                    CHECK_EQ_INT(t->dtype, ST_DTYPE_F32);
                    CHECK_MSG(t->nbytes == rows * cols * 4 && memcmp(got, want, t->nbytes) == 0,
                              "%s: values differ", name);
                }
                free(got);
            }
    st_close(st);
}

static void check_config(const char *dir) {
    char path[700];
    path_of(path, sizeof path, dir, "adapter_config.json");
    json_error_t err;
    json_t *c = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    CHECK_MSG(c != NULL, "%s: %s", path, err.text);
    if (!c) return;
#define STR_IS(k, v) CHECK_MSG(json_is_string(json_object_get(c, k)) && \
                               strcmp(json_string_value(json_object_get(c, k)), v) == 0, "field %s", k)
#define IS(k, pred) CHECK_MSG(pred(json_object_get(c, k)), "field %s", k)
    STR_IS("peft_type", "LORA");
    STR_IS("task_type", "CAUSAL_LM");
    STR_IS("bias", "none");
    STR_IS("base_model_name_or_path", "meta-llama/Llama-3.2-1B");
    CHECK(json_is_integer(json_object_get(c, "r")) && json_integer_value(json_object_get(c, "r")) == R);
    CHECK(json_is_integer(json_object_get(c, "lora_alpha")) &&
          json_integer_value(json_object_get(c, "lora_alpha")) == 8);
    CHECK(json_is_real(json_object_get(c, "lora_dropout")) &&
          json_real_value(json_object_get(c, "lora_dropout")) == 0.05);
    IS("fan_in_fan_out", json_is_false);
    IS("inference_mode", json_is_true);
    IS("init_lora_weights", json_is_true);
    IS("use_rslora", json_is_false);
    IS("use_dora", json_is_false);
    IS("modules_to_save", json_is_null);
    IS("layers_to_transform", json_is_null);
    IS("layers_pattern", json_is_null);
    IS("revision", json_is_null);
    IS("rank_pattern", json_is_object);
    IS("alpha_pattern", json_is_object);
    CHECK(json_object_size(json_object_get(c, "rank_pattern")) == 0);
    CHECK(json_object_size(json_object_get(c, "alpha_pattern")) == 0);
    const json_t *tm = json_object_get(c, "target_modules");
    CHECK(json_is_array(tm) && json_array_size(tm) == 3);
    int seen = 0;
    for (size_t i = 0; i < json_array_size(tm); i++) {
        const char *s = json_string_value(json_array_get(tm, i));
        if (s && strcmp(s, "q_proj") == 0) seen |= 1;
        if (s && strcmp(s, "v_proj") == 0) seen |= 2;
        if (s && strcmp(s, "down_proj") == 0) seen |= 4;
    }
    CHECK_EQ_INT(seen, 7);
    CHECK_EQ_INT(json_object_size(c), 19);
#undef STR_IS
#undef IS
    json_decref(c);
    /* As PEFT writes it: json.dump(indent=2, sort_keys=True), shortest floats. */
    FILE *f = fopen(path, "r");
    char text[4096] = {0};
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    CHECK(n > 0 && strstr(text, "\n  \"alpha_pattern\": {},\n  \"base_model_name_or_path\"") != NULL);
    CHECK(strstr(text, "\"lora_dropout\": 0.05,") != NULL);
}

static void check_read(const char *dir, const peft_adapter *a, uint32_t n_layers) {
    peft_adapter b;
    int rc = peft_read(dir, n_layers, &b);
    CHECK_MSG(rc == 0, "peft_read: %s", tt_lasterr());
    if (rc) return;
    CHECK_EQ_INT(b.n_layers, L);
    CHECK_EQ_INT(b.rank, R);
    CHECK(b.alpha == a->alpha && b.dropout == a->dropout);
    CHECK_EQ_INT(b.target_mask, k_mask);
    CHECK_EQ_INT(b.bf16, a->bf16);
    CHECK_EQ_INT(b.rslora, a->rslora);
    CHECK(b.base_model && strcmp(b.base_model, a->base_model) == 0);
    CHECK(b.base_fp == a->base_fp);
    for (uint32_t l = 0; l < L; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++) {
            const peft_lora *x = peft_at(a, l, p), *y = peft_at(&b, l, p);
            CHECK_EQ_INT(y->in, x->in);
            CHECK_EQ_INT(y->out, x->out);
            if (!x->in) {
                CHECK(y->A == NULL && y->B == NULL);
                continue;
            }
            int same = 1;
            for (uint64_t j = 0; j < (uint64_t)R * x->in; j++) {
                float w = a->bf16 ? bf16_to_f32(f32_to_bf16(x->A[j])) : x->A[j];
                same &= memcmp(&w, &y->A[j], 4) == 0;
            }
            for (uint64_t j = 0; j < (uint64_t)R * x->out; j++) {
                float w = a->bf16 ? bf16_to_f32(f32_to_bf16(x->B[j])) : x->B[j];
                same &= memcmp(&w, &y->B[j], 4) == 0;
            }
            CHECK_MSG(same, "layer %u %s: values differ after peft_read", l, k_module[p]);
        }
    peft_free(&b);
    CHECK(b.lora == NULL && b.n_layers == 0);
}

/* ---- 4: errors ---------------------------------------------------------------- */

/* Writes a fresh copy of the good adapter to DIR/name and returns the path. */
static void fresh(char *dir, size_t cap, const char *name, const peft_adapter *a) {
    snprintf(dir, cap, "%s/%s", g_tmp, name);
    int rc = peft_write(dir, a);
    TT_ASSERT(rc == 0);
}

/* Replaces the adapter's tensors with the good set, edited by the caller:
 * skip (l, p, ab) or give it a wrong first dimension, or add a tensor. */
typedef struct edit {
    int skip_l, skip_p, skip_ab;
    int bad_l, bad_p, bad_ab;
    const char *extra;
} edit;

/* meta: the tiertrain_lora metadata to write, or NULL (none, as PEFT writes it) */
static void rewrite_tensors_as(const char *dir, const peft_adapter *a, edit ed, const char *meta) {
    st_entry e[64];
    char names[64][128];
    uint64_t shapes[64][2];
    uint32_t n = 0;
    static float pad[64 * 64];
    for (uint32_t l = 0; l < L; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++)
            for (int ab = 0; ab < 2; ab++) {
                const peft_lora *x = peft_at(a, l, p);
                if (!x->in || ((int)l == ed.skip_l && p == ed.skip_p && ab == ed.skip_ab)) continue;
                name_of(names[n], sizeof names[n], l, p, ab ? 'B' : 'A');
                shapes[n][0] = ab ? x->out : R;
                shapes[n][1] = ab ? R : x->in;
                if ((int)l == ed.bad_l && p == ed.bad_p && ab == ed.bad_ab) shapes[n][ab] = R - 1;
                e[n] = (st_entry){names[n], ST_DTYPE_F32, 2, shapes[n], pad};
                n++;
            }
    if (ed.extra) {
        snprintf(names[n], sizeof names[n], "%s", ed.extra);
        shapes[n][0] = R;
        shapes[n][1] = 32;
        e[n] = (st_entry){names[n], ST_DTYPE_F32, 2, shapes[n], pad};
        n++;
    }
    char path[700];
    path_of(path, sizeof path, dir, "adapter_model.safetensors");
    const char *kv[] = {"tiertrain_lora", meta, NULL};
    int rc = st_write(path, n, e, meta ? kv : NULL);
    TT_ASSERT(rc == 0);
}
static void rewrite_tensors(const char *dir, const peft_adapter *a, edit ed) { rewrite_tensors_as(dir, a, ed, NULL); }
static void rewrite_tensors_meta(const char *dir, const peft_adapter *a, const char *meta) {
    rewrite_tensors_as(dir, a, (edit){-1, -1, -1, -1, -1, -1, NULL}, meta);
}

static void set_config(const char *dir, const char *key, json_t *value) {
    char path[700];
    path_of(path, sizeof path, dir, "adapter_config.json");
    json_error_t err;
    json_t *c = json_load_file(path, 0, &err);
    TT_ASSERT(c);
    json_object_set_new(c, key, value);
    TT_ASSERT(json_dump_file(c, path, JSON_INDENT(2)) == 0);
    json_decref(c);
}

/* Expects peft_read(dir, n_layers) to fail with rc and a message holding
 * both words (NULL: not checked). */
static void expect_fail(const char *what, const char *dir, uint32_t n_layers, int rc_want, const char *w1,
                        const char *w2) {
    peft_adapter b;
    memset(&b, 0x5a, sizeof b);
    int rc = peft_read(dir, n_layers, &b);
    CHECK_MSG(rc == rc_want, "%s: expected %d, got %d (%s)", what, rc_want, rc, tt_lasterr());
    CHECK_MSG(!w1 || strstr(tt_lasterr(), w1), "%s: message lacks \"%s\": %s", what, w1, tt_lasterr());
    CHECK_MSG(!w2 || strstr(tt_lasterr(), w2), "%s: message lacks \"%s\": %s", what, w2, tt_lasterr());
    CHECK_MSG(b.lora == NULL && b.base_model == NULL, "%s: output not cleared", what);
    if (getenv("TT_VERBOSE")) fprintf(stderr, "%-22s %s\n", what, tt_lasterr());
    if (rc == 0) peft_free(&b);
}

static void test_errors(const peft_adapter *a) {
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/nowhere", g_tmp);
    expect_fail("missing dir", dir, 0, -ENOENT, dir, NULL);

    snprintf(dir, sizeof dir, "%s/empty", g_tmp);
    mkdir(dir, 0755);
    expect_fail("missing config", dir, 0, -ENOENT, "adapter_config.json", NULL);

    fresh(dir, sizeof dir, "no-tensors", a);
    path_of(path, sizeof path, dir, "adapter_model.safetensors");
    unlink(path);
    expect_fail("missing tensors", dir, 0, -ENOENT, path, NULL);

    fresh(dir, sizeof dir, "bad-json", a);
    path_of(path, sizeof path, dir, "adapter_config.json");
    FILE *f = fopen(path, "w");
    fputs("{\"peft_type\": \"LORA\", ", f);
    fclose(f);
    expect_fail("bad json", dir, 0, -EINVAL, path, "JSON");

    fresh(dir, sizeof dir, "ia3", a);
    set_config(dir, "peft_type", json_string("IA3"));
    expect_fail("peft_type IA3", dir, 0, -EINVAL, "adapter_config.json", "IA3");

    fresh(dir, sizeof dir, "rank-mismatch", a);
    set_config(dir, "r", json_integer(8));
    expect_fail("r mismatch", dir, 0, -EINVAL, "adapter_model.safetensors", "r = 8");

    fresh(dir, sizeof dir, "dropout-5", a);
    set_config(dir, "lora_dropout", json_integer(5));
    expect_fail("lora_dropout 5", dir, 0, -EINVAL, "adapter_config.json", "lora_dropout");

    fresh(dir, sizeof dir, "rslora-string", a);
    set_config(dir, "use_rslora", json_string("yes"));
    expect_fail("use_rslora \"yes\"", dir, 0, -EINVAL, "adapter_config.json", "use_rslora");

    fresh(dir, sizeof dir, "dora", a);
    set_config(dir, "use_dora", json_true());
    expect_fail("use_dora", dir, 0, -EINVAL, "adapter_config.json", "use_dora");

    /* a config from another save (new tensors beside the old config, after a crash between the two renames; or
     * an edited config): lora_alpha or use_rslora differ from the tensors' tiertrain_lora */
    fresh(dir, sizeof dir, "stale-alpha", a);
    set_config(dir, "lora_alpha", json_integer(16));
    expect_fail("stale lora_alpha", dir, 0, -EINVAL, "says lora_alpha 16, use_rslora false, but",
                "was saved with lora_alpha 8, use_rslora false: the two files come from different saves");
    fresh(dir, sizeof dir, "stale-rslora", a);
    set_config(dir, "use_rslora", json_true());
    expect_fail("stale use_rslora", dir, 0, -EINVAL, "adapter_config.json says lora_alpha 8, use_rslora true",
                "saved with lora_alpha 8, use_rslora false");
    /* without tiertrain_lora (PEFT's own adapters, tiertrain's before it): the config alone decides */
    fresh(dir, sizeof dir, "no-lora-meta", a);
    rewrite_tensors(dir, a, (edit){-1, -1, -1, -1, -1, -1, NULL});
    set_config(dir, "lora_alpha", json_integer(16));
    {
        peft_adapter b;
        CHECK_MSG(peft_read(dir, 0, &b) == 0 && b.alpha == 16.0f, "no tiertrain_lora: %s", tt_lasterr());
        peft_free(&b);
    }
    static const char *const bad_meta[] = {"lora_alpha=8 use_rslora=maybe", "lora_alpha=8", "alpha=8 use_rslora=false",
                                           "lora_alpha=8 use_rslora=false trailing"};
    for (size_t i = 0; i < sizeof bad_meta / sizeof *bad_meta; i++) {
        fresh(dir, sizeof dir, "bad-lora-meta", a);
        rewrite_tensors_meta(dir, a, bad_meta[i]);
        expect_fail("malformed tiertrain_lora", dir, 0, -EINVAL, "metadata tiertrain_lora is", "the file is corrupt");
    }

    fresh(dir, sizeof dir, "wrong-shape-A", a);
    rewrite_tensors(dir, a, (edit){-1, -1, -1, 1, PEFT_PROJ_V, 0, NULL});
    expect_fail("wrong shape lora_A", dir, 0, -EINVAL, "layers.1.self_attn.v_proj.lora_A.weight", "(3, 32)");

    fresh(dir, sizeof dir, "wrong-shape-B", a);
    rewrite_tensors(dir, a, (edit){-1, -1, -1, 0, PEFT_PROJ_DOWN, 1, NULL});
    expect_fail("wrong shape lora_B", dir, 0, -EINVAL, "layers.0.mlp.down_proj.lora_B.weight", "(32, 3)");

    fresh(dir, sizeof dir, "missing-B", a);
    rewrite_tensors(dir, a, (edit){1, PEFT_PROJ_Q, 1, -1, -1, -1, NULL});
    expect_fail("missing lora_B", dir, 0, -EINVAL, "adapter_model.safetensors", "no lora_B");

    fresh(dir, sizeof dir, "not-target", a);
    rewrite_tensors(dir, a,
                    (edit){-1, -1, -1, -1, -1, -1, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"});
    expect_fail("not a target", dir, 0, -EINVAL, "k_proj", "target_modules");

    fresh(dir, sizeof dir, "foreign", a);
    rewrite_tensors(dir, a, (edit){-1, -1, -1, -1, -1, -1, "base_model.model.lm_head.lora_A.weight"});
    expect_fail("foreign tensor", dir, 0, -EINVAL, "lm_head", "adapter_model.safetensors");

    fresh(dir, sizeof dir, "layer-beyond", a);
    expect_fail("layer beyond model", dir, 1, -EINVAL, "layer 1", "1 layers");
    expect_fail("layer missing", dir, 3, -EINVAL, "layer 2", "q_proj");

    /* Writer errors. */
    snprintf(path, sizeof path, "%s/a-file", g_tmp);
    f = fopen(path, "w");
    fclose(f);
    CHECK(peft_write(path, a) == -ENOTDIR && strstr(tt_lasterr(), path));
    peft_adapter bad = *a;
    peft_lora saved = *peft_at(a, 1, PEFT_PROJ_V);
    peft_at(a, 1, PEFT_PROJ_V)->B = NULL;
    snprintf(dir, sizeof dir, "%s/never", g_tmp);
    CHECK(peft_write(dir, &bad) == -EINVAL && strstr(tt_lasterr(), dir) && strstr(tt_lasterr(), "v_proj"));
    *peft_at(a, 1, PEFT_PROJ_V) = saved;
    struct stat sb;
    CHECK(stat(dir, &sb) != 0); /* nothing created for an invalid adapter */
}

int main(void) {
    char *tmp = fixture_tmpdir();
    snprintf(g_tmp, sizeof g_tmp, "%s", tmp);
    char dir[600];

    peft_adapter a;
    make_adapter(&a, 0);
    snprintf(dir, sizeof dir, "%s/adapter", g_tmp);
    int rc = peft_write(dir, &a);
    CHECK_MSG(rc == 0, "peft_write: %s", tt_lasterr());
    CHECK(no_partials(dir));
    check_tensors(dir, &a);
    check_config(dir);
    check_read(dir, &a, L);
    check_read(dir, &a, 0);
    /* Overwriting an existing adapter directory works (atomic replace). */
    CHECK(peft_write(dir, &a) == 0 && no_partials(dir));
    check_read(dir, &a, L);

    peft_adapter h;
    make_adapter(&h, 1);
    h.base_fp = 0x8badf00ddeadbeefull; /* the store identity round-trips through the safetensors metadata */
    snprintf(dir, sizeof dir, "%s/adapter-bf16", g_tmp);
    rc = peft_write(dir, &h);
    CHECK_MSG(rc == 0, "peft_write bf16: %s", tt_lasterr());
    check_tensors(dir, &h);
    check_read(dir, &h, 0);

    /* rank-stabilised LoRA: written as PEFT writes it ("use_rslora": true), read back */
    h.rslora = 1;
    snprintf(dir, sizeof dir, "%s/adapter-rslora", g_tmp);
    CHECK_MSG(peft_write(dir, &h) == 0, "peft_write rslora: %s", tt_lasterr());
    check_read(dir, &h, 0);
    {
        char path[700];
        path_of(path, sizeof path, dir, "adapter_config.json");
        json_t *root = json_load_file(path, 0, NULL);
        CHECK(root && json_is_true(json_object_get(root, "use_rslora")));
        json_decref(root);
    }
    h.rslora = 0;

    /* an alpha that is not integral: the metadata's (the shortest digits that read back as the float) and the
     * config's read back as the same float */
    h.alpha = 0.1f;
    snprintf(dir, sizeof dir, "%s/adapter-alpha", g_tmp);
    CHECK_MSG(peft_write(dir, &h) == 0, "peft_write alpha 0.1: %s", tt_lasterr());
    check_tensors(dir, &h);
    check_read(dir, &h, 0);

    test_errors(&a);
    free_adapter(&a);
    free_adapter(&h);

    fixture_rm_rf(tmp);
    free(tmp);
    TEST_END();
}
