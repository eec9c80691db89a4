/* tests/test_hf.c — Hugging Face checkpoint directories (io/hfmodel.h) and
 * the streaming safetensors writer (st_writer in io/safetensors.h).
 *
 * Source checkpoints are written here from random bit patterns (every finite
 * value: subnormals, -0, extremes) with a config.json built independently of
 * the library's writer, then imported and exported again:
 *  1. BF16 source in one model.safetensors (llama3 rope, eos list, a stray
 *     rotary_emb.inv_freq): the store holds exactly the values (dtypes as
 *     QLoRA: bf16 projections/embeddings, f32 norms), and the exported file
 *     has every tensor bit for bit, the config every field.
 *  2. F32 source, --dtype f32 both ways: bit for bit.
 *  3. A sharded source (model.safetensors.index.json over 2 shards).
 *  4. Tied embeddings: no lm_head in the store or the export (a stray
 *     lm_head.weight in the source is ignored).
 *  5. F16 source: values equal an independent binary16 decode.
 *  6. A pruned store (store_write + pruning map): export writes the original
 *     dims plus the "tiertrain" object, and import gives back the same dims,
 *     map and tensors.
 *  7. config.json: unsupported values are refused naming the field; the
 *     accepted variants (no model_type, null/list token ids, default rope).
 *  8. Refusals leave no file: missing tensor, wrong shape, export onto a
 *     file, into a sharded directory, a missing parent, a full disk, into a
 *     folder holding a checkpoint without force; import -o onto the source's
 *     own config.json, index or shard (by path or hard link).
 *  9. The streaming writer: caller order, pieces of any size, a cut write.
 */
#include "core/base/common.h"
#include "core/base/config.h"
#include "core/base/dtype.h"
#include "core/base/rng.h"
#include "io/storeio.h"
#include "io/hfmodel.h"
#include "io/safetensors.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <sys/resource.h>

static char *g_tmp;

#define INV_FREQ "model.layers.0.self_attn.rotary_emb.inv_freq"

/* ---- helpers ---------------------------------------------------------------- */

static void path_in(char *buf, size_t cap, const char *dir, const char *file) { snprintf(buf, cap, "%s/%s", dir, file); }

static uint32_t st_size(st_dtype dt) { return dt == ST_DTYPE_F32 ? 4 : 2; }

/* Raw bytes of n values of dt for tensor `name` (deterministic from seed):
 * any bit pattern but Inf/NaN (whose exponent bits are all ones), or with
 * `normal` (BF16 / F32 only) values of N(0, 0.02) like real weights. */
static uint8_t *raw_tensor(st_dtype dt, const char *name, uint64_t n, uint64_t seed, int normal) {
    tt_rng r;
    rng_seed(&r, seed, rng_hash_str(name));
    uint8_t *b = malloc(n * st_size(dt) + 1);
    TT_ASSERT(!normal || dt != ST_DTYPE_F16);
    for (uint64_t j = 0; j < n; j++) {
        uint64_t x = rng_next(&r);
        if (normal) {
            float f = (float)(0.02 * rng_normal(&r));
            uint16_t h = f32_to_bf16(f);
            memcpy(b + st_size(dt) * j, dt == ST_DTYPE_F32 ? (void *)&f : (void *)&h, st_size(dt));
        } else if (dt == ST_DTYPE_F32) {
            uint32_t u = (uint32_t)x;
            if ((u & 0x7f800000u) == 0x7f800000u) u ^= 0x40000000u;
            memcpy(b + 4 * j, &u, 4);
        } else {
            uint16_t h = (uint16_t)x, expmask = dt == ST_DTYPE_BF16 ? 0x7f80 : 0x7c00;
            if ((h & expmask) == expmask) h ^= 0x4000;
            memcpy(b + 2 * j, &h, 2);
        }
    }
    return b;
}

/* binary16 -> f32 written from the definition (not the library's bit tricks). */
static float f16_ref(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return (float)((h >> 15) ? -v : v);
}

/* Value j of a raw tensor as f32. */
static float raw_value(st_dtype dt, const uint8_t *b, uint64_t j) {
    if (dt == ST_DTYPE_F32) {
        float f;
        memcpy(&f, b + 4 * j, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, b + 2 * j, 2);
    return dt == ST_DTYPE_BF16 ? bf16_to_f32(h) : f16_ref(h);
}

static int same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0; }

/* A config.json object for c, written the way transformers writes one
 * (independent of hf_config_write), with a few fields tiertrain ignores. */
static json_t *config_json(const tt_config *c) {
    json_t *o = json_pack("{s:[s], s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:b, s:I, s:[I,I], s:s, s:s,"
                          " s:f, s:b, s:s, s:b, s:b, s:f, s:I}",
                          "architectures", "LlamaForCausalLM", "model_type", "llama", "hidden_size",
                          (json_int_t)c->hidden, "intermediate_size", (json_int_t)c->ffn, "num_attention_heads",
                          (json_int_t)c->n_heads, "num_key_value_heads", (json_int_t)c->n_kv_heads,
                          "num_hidden_layers", (json_int_t)c->n_layers, "vocab_size", (json_int_t)c->vocab,
                          "max_position_embeddings", (json_int_t)c->max_pos, "rms_norm_eps", (double)c->rms_eps,
                          "rope_theta", (double)c->rope_theta, "tie_word_embeddings", (int)c->tie_embeddings,
                          "bos_token_id", (json_int_t)c->bos_id, "eos_token_id", (json_int_t)c->eos_id,
                          (json_int_t)c->bos_id, "hidden_act", "silu", "torch_dtype", "bfloat16", "initializer_range",
                          0.02, "use_cache", 1, "transformers_version", "4.45.0", "attention_bias", 0, "mlp_bias", 0,
                          "attention_dropout", 0.0, "pretraining_tp", (json_int_t)1);
    TT_ASSERT(o);
    if (c->rope_type == TT_ROPE_LLAMA3)
        json_object_set_new(o, "rope_scaling",
                            json_pack("{s:f, s:f, s:f, s:I, s:s}", "factor", (double)c->rope_factor, "low_freq_factor",
                                      (double)c->rope_low_freq, "high_freq_factor", (double)c->rope_high_freq,
                                      "original_max_position_embeddings", (json_int_t)c->rope_orig_max_pos,
                                      "rope_type", "llama3"));
    else
        json_object_set_new(o, "rope_scaling", json_null());
    return o;
}

static void dump_json(const char *path, const json_t *o) {
    TT_ASSERT(json_dump_file(o, path, JSON_INDENT(2)) == 0);
}

static void write_config(const char *dir, const json_t *o) {
    char p[700];
    path_in(p, sizeof p, dir, "config.json");
    dump_json(p, o);
}

/* Source options: which dtype, shards, and which stray tensors to add. */
typedef struct src_opts {
    st_dtype dt;
    int shards;          /* 1: model.safetensors; 2: an index and two shards */
    int inv_freq;        /* add model.layers.0.self_attn.rotary_emb.inv_freq */
    int stray_lm_head;   /* add lm_head.weight although the model is tied */
    const char *skip;    /* leave out this tensor */
    const char *bad_shape; /* give this matrix one column too many */
    int normal;          /* raw_tensor's normal values instead of random bits */
} src_opts;

/* Writes a checkpoint directory for c (tensor bytes from raw_tensor(seed)). */
static void write_source(const char *dir, const tt_config *c, const src_opts *so, uint64_t seed) {
    mkdir(dir, 0755);
    json_t *cj = config_json(c);
    write_config(dir, cj);
    json_decref(cj);
    uint32_t nt = config_n_tensors(c), n = 0;
    st_entry *e = calloc(nt + 2, sizeof *e);
    uint64_t (*shape)[2] = calloc(nt + 2, sizeof *shape);
    tt_tensor_desc d;
    for (uint32_t i = 0; i < nt; i++) {
        config_tensor(c, i, &d);
        if (so->skip && strcmp(so->skip, d.name) == 0) continue;
        shape[n][0] = d.rows;
        shape[n][1] = d.cols + (so->bad_shape && strcmp(so->bad_shape, d.name) == 0);
        e[n] = (st_entry){strdup(d.name), so->dt, d.ndim, shape[n], NULL};
        n++;
    }
    if (so->inv_freq) {
        shape[n][0] = c->head_dim / 2;
        e[n] = (st_entry){strdup(INV_FREQ), ST_DTYPE_F32, 1, shape[n], NULL};
        n++;
    }
    if (so->stray_lm_head) {
        shape[n][0] = c->vocab;
        shape[n][1] = c->hidden;
        e[n] = (st_entry){strdup("lm_head.weight"), so->dt, 2, shape[n], NULL};
        n++;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t cnt = e[i].shape[0] * (e[i].ndim == 2 ? e[i].shape[1] : 1);
        e[i].data = raw_tensor(e[i].dtype, e[i].name, cnt, seed, so->normal);
    }
    char p[700];
    if (so->shards == 1) {
        path_in(p, sizeof p, dir, HF_WEIGHTS_FILE);
        CHECK_MSG(st_write(p, n, e, (const char *[]){"format", "pt", NULL}) == 0, "%s", tt_lasterr());
    } else {
        /* the first half of the tensors in shard 1, the rest in shard 2 */
        static const char *const shard[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
        uint32_t half = n / 2;
        json_t *wm = json_object();
        for (uint32_t i = 0; i < n; i++) json_object_set_new(wm, e[i].name, json_string(shard[i >= half]));
        path_in(p, sizeof p, dir, shard[0]);
        CHECK(st_write(p, half, e, NULL) == 0);
        path_in(p, sizeof p, dir, shard[1]);
        CHECK(st_write(p, n - half, e + half, NULL) == 0);
        json_t *idx = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)0, "weight_map", wm);
        path_in(p, sizeof p, dir, HF_INDEX_FILE);
        dump_json(p, idx);
        json_decref(idx);
    }
    for (uint32_t i = 0; i < n; i++) {
        free((char *)e[i].name);
        free((void *)e[i].data);
    }
    free(e);
    free(shape);
}

/* The store at path holds every tensor of c with the source values exactly
 * (widened to f32; bf16-rounded where the store is bf16 and the source is not)
 * and the QLoRA dtypes for projection dtype lin. */
static void check_store(const char *path, const tt_config *c, st_dtype dt, uint64_t seed, uint32_t lin) {
    store_reader r;
    CHECK_MSG(store_reader_open(&r, path) == 0, "%s", tt_lasterr());
    if (!r.s) return;
    uint32_t nt = config_n_tensors(c);
    CHECK_EQ_INT(config_n_tensors(store_reader_config(&r)), nt);
    uint32_t *want = calloc(nt, sizeof *want);
    store_default_dtypes(c, lin, lin, want);
    float *v = malloc(store_max_tensor(c) * sizeof *v);
    tt_tensor_desc d;
    for (uint32_t i = 0; i < nt; i++) {
        config_tensor(c, i, &d);
        CHECK_EQ_INT(store_reader_dtype(&r, i), want[i]);
        CHECK(store_reader_tensor(&r, i, v) == 0);
        uint64_t n = d.rows * d.cols, bad = 0;
        uint8_t *raw = raw_tensor(dt, d.name, n, seed, 0);
        for (uint64_t j = 0; j < n; j++) {
            float x = raw_value(dt, raw, j);
            if (want[i] == TT_DTYPE_BF16) x = bf16_to_f32(f32_to_bf16(x));
            bad += !same_bits(x, v[j]);
        }
        CHECK_MSG(bad == 0, "%s: %llu values differ from the source", d.name, (unsigned long long)bad);
        free(raw);
    }
    free(v);
    free(want);
    store_reader_close(&r);
}

/* The exported dir's model.safetensors holds exactly the tensors of c, in
 * dtype xdt; with xdt == dt their bytes equal the source's, else (F16 source)
 * they hold the independently decoded values (bf16-rounded for BF16). */
static void check_export(const char *xdir, const tt_config *c, st_dtype dt, st_dtype xdt, uint64_t seed) {
    char p[700];
    path_in(p, sizeof p, xdir, HF_WEIGHTS_FILE);
    st_file *st;
    CHECK_MSG(st_open(p, &st) == 0, "%s", tt_lasterr());
    if (!st) return;
    CHECK_EQ_INT(st_count(st), config_n_tensors(c));
    CHECK(st_metadata(st, "format") && strcmp(st_metadata(st, "format"), "pt") == 0);
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &d);
        int k = st_find(st, d.name);
        CHECK_MSG(k >= 0, "export lacks %s", d.name);
        if (k < 0) continue;
        const st_tensor *t = st_tensor_at(st, (uint32_t)k);
        uint64_t n = d.rows * d.cols;
        CHECK(t->dtype == xdt && t->ndim == d.ndim && t->shape[0] == d.rows && (d.ndim == 1 || t->shape[1] == d.cols));
        if (t->nbytes != n * st_size(xdt)) continue;
        uint8_t *got = malloc(t->nbytes + 1), *src = raw_tensor(dt, d.name, n, seed, 0);
        CHECK(st_read(st, (uint32_t)k, got) == 0);
        if (dt == xdt) {
            CHECK_MSG(memcmp(got, src, t->nbytes) == 0, "%s: exported bytes differ from the source", d.name);
        } else {
            uint64_t bad = 0;
            for (uint64_t j = 0; j < n; j++) {
                float x = raw_value(dt, src, j);
                if (xdt == ST_DTYPE_BF16) x = bf16_to_f32(f32_to_bf16(x));
                bad += !same_bits(x, raw_value(xdt, got, j));
            }
            CHECK_MSG(bad == 0, "%s: %llu exported values differ", d.name, (unsigned long long)bad);
        }
        free(got);
        free(src);
    }
    st_close(st);
}

/* The exported config.json, read here with jansson, states c (original
 * dims) in the fields transformers reads. */
static void check_config_json(const char *xdir, const tt_config *c, const char *torch_dtype) {
    char p[700];
    path_in(p, sizeof p, xdir, "config.json");
    json_error_t err;
    json_t *o = json_load_file(p, JSON_REJECT_DUPLICATES, &err);
    CHECK_MSG(o != NULL, "%s: %s", p, err.text);
    if (!o) return;
    const json_t *a = json_object_get(o, "architectures");
    CHECK(json_is_array(a) && json_array_size(a) == 1 &&
          strcmp(json_string_value(json_array_get(a, 0)), "LlamaForCausalLM") == 0);
    CHECK(strcmp(json_string_value(json_object_get(o, "model_type")), "llama") == 0);
    CHECK(strcmp(json_string_value(json_object_get(o, "torch_dtype")), torch_dtype) == 0);
    CHECK(strcmp(json_string_value(json_object_get(o, "hidden_act")), "silu") == 0);
    static const char *const keys[] = {"hidden_size", "intermediate_size", "num_attention_heads",
                                       "num_key_value_heads", "num_hidden_layers", "vocab_size", "head_dim",
                                       "max_position_embeddings", "bos_token_id", "eos_token_id"};
    const uint32_t vals[] = {c->hidden, c->ffn, c->n_heads, c->n_kv_heads, c->n_layers, c->vocab, c->head_dim,
                             c->max_pos, c->bos_id, c->eos_id};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        CHECK_MSG(json_integer_value(json_object_get(o, keys[i])) == (json_int_t)vals[i], "%s", keys[i]);
    CHECK((float)json_number_value(json_object_get(o, "rms_norm_eps")) == c->rms_eps);
    CHECK((float)json_number_value(json_object_get(o, "rope_theta")) == c->rope_theta);
    CHECK(json_is_boolean(json_object_get(o, "tie_word_embeddings")) &&
          json_is_true(json_object_get(o, "tie_word_embeddings")) == (int)c->tie_embeddings);
    const json_t *rs = json_object_get(o, "rope_scaling");
    if (c->rope_type == TT_ROPE_LLAMA3) {
        CHECK(json_is_object(rs) && strcmp(json_string_value(json_object_get(rs, "rope_type")), "llama3") == 0);
        CHECK((float)json_number_value(json_object_get(rs, "factor")) == c->rope_factor);
        CHECK((float)json_number_value(json_object_get(rs, "low_freq_factor")) == c->rope_low_freq);
        CHECK((float)json_number_value(json_object_get(rs, "high_freq_factor")) == c->rope_high_freq);
        CHECK(json_integer_value(json_object_get(rs, "original_max_position_embeddings")) == c->rope_orig_max_pos);
    } else {
        CHECK(json_is_null(rs));
    }
    json_decref(o);
}

/* Two configs equal in everything but the informational name. */
static int same_config(const tt_config *a, const tt_config *b) {
    tt_config x = *a, y = *b;
    memset(x.name, 0, sizeof x.name);
    memset(y.name, 0, sizeof y.name);
    return memcmp(&x, &y, sizeof x) == 0;
}

/* Source -> import (lin) -> export (xdt) -> checks of the store, the
 * exported tensors and the config (field by field and read back). */
static void round_trip(const char *name, const tt_config *c, const src_opts *so, uint32_t lin, st_dtype xdt,
                       uint32_t expect_unused) {
    char src[600], store[600], xdir[600];
    snprintf(src, sizeof src, "%s/%s-src", g_tmp, name);
    snprintf(store, sizeof store, "%s/%s.tier", g_tmp, name);
    snprintf(xdir, sizeof xdir, "%s/%s-out", g_tmp, name);
    uint64_t seed = rng_hash_str(name);
    write_source(src, c, so, seed);
    hf_import_opts o = {lin, NULL, NULL, NULL, 0};
    hf_import_stats stats;
    int rc = hf_import(src, store, &o, &stats);
    CHECK_MSG(rc == 0, "%s: import: %s", name, tt_lasterr());
    if (rc) return;
    CHECK_EQ_INT(stats.n_files, (uint32_t)so->shards);
    CHECK_EQ_INT(stats.n_unused, expect_unused);
    if (so->inv_freq) CHECK(strcmp(stats.unused_example, INV_FREQ) == 0);
    check_store(store, c, so->dt, seed, lin);
    rc = hf_export(store, xdir, xdt == ST_DTYPE_F32 ? TT_DTYPE_F32 : TT_DTYPE_BF16, 0, NULL, NULL);
    CHECK_MSG(rc == 0, "%s: export: %s", name, tt_lasterr());
    if (rc) return;
    check_export(xdir, c, so->dt, xdt, seed);
    check_config_json(xdir, c, xdt == ST_DTYPE_F32 ? "float32" : "bfloat16");
    tt_config *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    tier_prune_map m;
    int has_map;
    CHECK(hf_config_read(src, a, &m, &has_map) == 0 && !has_map);
    CHECK(hf_config_read(xdir, b, &m, &has_map) == 0 && !has_map);
    CHECK_MSG(same_config(a, c) && same_config(b, c), "%s: config fields differ after the round trip", name);
    free(a);
    free(b);
}

/* ---- 1-5: round trips ----------------------------------------------------------- */

static void test_round_trips(void) {
    tt_config *c = calloc(1, sizeof *c);
    fixture_micro_config(c);
    c->rope_type = TT_ROPE_LLAMA3;
    c->rope_factor = 8.f;
    c->rope_low_freq = 1.f;
    c->rope_high_freq = 4.f;
    c->rope_orig_max_pos = 64;
    c->rope_theta = 500000.f;
    round_trip("bf16", c, &(src_opts){.dt = ST_DTYPE_BF16, .shards = 1, .inv_freq = 1}, TT_DTYPE_BF16, ST_DTYPE_BF16, 1);

    fixture_micro_config(c);
    round_trip("f32", c, &(src_opts){.dt = ST_DTYPE_F32, .shards = 1}, TT_DTYPE_F32, ST_DTYPE_F32, 0);
    round_trip("sharded", c, &(src_opts){.dt = ST_DTYPE_BF16, .shards = 2, .inv_freq = 1}, TT_DTYPE_BF16, ST_DTYPE_BF16, 1);
    round_trip("f16-f32", c, &(src_opts){.dt = ST_DTYPE_F16, .shards = 1}, TT_DTYPE_F32, ST_DTYPE_F32, 0);
    round_trip("f16-bf16", c, &(src_opts){.dt = ST_DTYPE_F16, .shards = 2}, TT_DTYPE_BF16, ST_DTYPE_BF16, 0);

    c->tie_embeddings = 1;
    round_trip("tied", c, &(src_opts){.dt = ST_DTYPE_BF16, .shards = 1, .stray_lm_head = 1}, TT_DTYPE_BF16, ST_DTYPE_BF16, 1);

    /* NF4: the store has NF4-dq projections close to the source (NF4 has 16
     * levels per block of 64, at most 0.14 x absmax apart from a value, plus
     * the double-quantized absmax's error). */
    fixture_micro_config(c);
    char src[600], store[600];
    snprintf(src, sizeof src, "%s/normal-src", g_tmp);
    snprintf(store, sizeof store, "%s/nf4.tier", g_tmp);
    write_source(src, c, &(src_opts){.dt = ST_DTYPE_BF16, .shards = 1, .normal = 1}, 5);
    hf_import_opts o = {TT_DTYPE_NF4DQ, NULL, NULL, NULL, 0};
    CHECK_MSG(hf_import(src, store, &o, NULL) == 0, "nf4: %s", tt_lasterr());
    store_reader r;
    if (store_reader_open(&r, store) == 0) {
        tt_tensor_desc d;
        config_tensor(c, 2, &d); /* layer 0 q_proj */
        CHECK_EQ_INT(store_reader_dtype(&r, 2), TT_DTYPE_NF4DQ);
        CHECK_EQ_INT(store_reader_dtype(&r, 0), TT_DTYPE_BF16);
        CHECK_EQ_INT(store_reader_dtype(&r, 1), TT_DTYPE_F32);
        uint64_t n = d.rows * d.cols, bad = 0;
        float *v = malloc(n * sizeof *v);
        CHECK(store_reader_tensor(&r, 2, v) == 0);
        uint8_t *raw = raw_tensor(ST_DTYPE_BF16, d.name, n, 5, 1);
        for (uint64_t j = 0; j < n; j++) {
            float absmax = 0, x = raw_value(ST_DTYPE_BF16, raw, j);
            for (uint64_t k = j / 64 * 64; k < j / 64 * 64 + 64; k++)
                absmax = fmaxf(absmax, fabsf(raw_value(ST_DTYPE_BF16, raw, k)));
            bad += !(fabsf(v[j] - x) <= 0.16f * absmax);
        }
        CHECK_MSG(bad == 0, "nf4: %llu values too far from the source", (unsigned long long)bad);
        free(raw);
        free(v);
        store_reader_close(&r);
    }
    free(c);
}

/* ---- 6: pruned stores ------------------------------------------------------------- */

typedef struct fill_ctx {
    uint64_t seed;
} fill_ctx;

static int fill_random(void *ctx, uint32_t i, const tt_tensor_desc *d, float *out) {
    tt_rng r;
    rng_seed(&r, ((fill_ctx *)ctx)->seed, i);
    for (uint64_t j = 0; j < d->rows * d->cols; j++) out[j] = (float)rng_normal(&r);
    return 0;
}

static void test_pruned(void) {
    tt_config *c = calloc(1, sizeof *c), *b = calloc(1, sizeof *b);
    fixture_micro_config(c);
    c->n_layers = 3;
    c->layers[2] = c->layers[0];
    CHECK(config_prune(c, 0.5, 1, 2) == 0); /* layer 1: 1 KV head (2 query heads), ffn 48 */
    tier_prune_map map = {0};
    map.kv[1] = malloc(sizeof(uint32_t));
    map.kv[1][0] = 1;
    map.ffn[1] = malloc(48 * sizeof(uint32_t));
    for (uint32_t k = 0; k < 48; k++) map.ffn[1][k] = 2 * k + (k % 3 == 0);
    uint32_t *dt = fixture_dtypes(c, TT_DTYPE_BF16);
    char store[600], xdir[600], xdir32[600], back[600];
    snprintf(store, sizeof store, "%s/pruned.tier", g_tmp);
    snprintf(xdir, sizeof xdir, "%s/pruned-hf", g_tmp);
    snprintf(xdir32, sizeof xdir32, "%s/pruned-hf32", g_tmp);
    snprintf(back, sizeof back, "%s/pruned-back.tier", g_tmp);
    fill_ctx fc = {7};
    tier_write_opts wo = {dt, &map, 0, NULL};
    CHECK_MSG(store_write(store, c, &wo, fill_random, &fc) == 0, "%s", tt_lasterr());

    /* bf16 export: the pruned shapes in the file, the original dims in the standard fields */
    CHECK_MSG(hf_export(store, xdir, TT_DTYPE_BF16, 0, NULL, NULL) == 0, "%s", tt_lasterr());
    check_config_json(xdir, c, "bfloat16");
    char p[700];
    path_in(p, sizeof p, xdir, HF_WEIGHTS_FILE);
    st_file *st;
    if (st_open(p, &st) == 0) {
        int k = st_find(st, "model.layers.1.self_attn.q_proj.weight");
        CHECK(k >= 0 && st_tensor_at(st, (uint32_t)k)->shape[0] == 32 && st_tensor_at(st, (uint32_t)k)->shape[1] == 64);
        k = st_find(st, "model.layers.1.mlp.down_proj.weight");
        CHECK(k >= 0 && st_tensor_at(st, (uint32_t)k)->shape[0] == 64 && st_tensor_at(st, (uint32_t)k)->shape[1] == 48);
        st_close(st);
    }
    path_in(p, sizeof p, xdir, "config.json");
    json_t *o = json_load_file(p, 0, NULL);
    const json_t *tt = json_object_get(o, "tiertrain");
    CHECK(json_is_object(tt));
    const json_t *l1 = json_array_get(json_object_get(tt, "layers"), 1);
    CHECK(json_is_true(json_object_get(l1, "pruned")) &&
          json_integer_value(json_object_get(l1, "num_key_value_heads")) == 1 &&
          json_integer_value(json_object_get(l1, "intermediate_size")) == 48 &&
          json_array_size(json_object_get(l1, "kept_ffn_channels")) == 48 &&
          json_integer_value(json_array_get(json_object_get(l1, "kept_kv_heads"), 0)) == 1);
    json_decref(o);

    /* f32 export, import: the same config, map and every value bit for bit */
    CHECK_MSG(hf_export(store, xdir32, TT_DTYPE_F32, 0, NULL, NULL) == 0, "%s", tt_lasterr());
    hf_import_opts io = {TT_DTYPE_BF16, NULL, NULL, NULL, 0};
    CHECK_MSG(hf_import(xdir32, back, &io, NULL) == 0, "%s", tt_lasterr());
    tier_prune_map m2;
    int has_map;
    CHECK(hf_config_read(xdir32, b, &m2, &has_map) == 0 && has_map);
    CHECK(same_config(b, c));
    if (has_map) store_prune_map_clear(&m2);
    store_reader r1, r2;
    if (store_reader_open(&r1, store) == 0 && store_reader_open(&r2, back) == 0) {
        CHECK(same_config(store_reader_config(&r1), store_reader_config(&r2)));
        const tier_prune_map *pm = tier_prune(r2.s);
        CHECK(pm != NULL);
        if (pm) {
            CHECK(pm->kv[0] == NULL && pm->kv[2] == NULL && pm->kv[1] && pm->kv[1][0] == 1);
            CHECK(pm->ffn[1] && memcmp(pm->ffn[1], map.ffn[1], 48 * sizeof(uint32_t)) == 0);
        }
        uint64_t maxn = store_max_tensor(c);
        float *x = malloc(maxn * 4), *y = malloc(maxn * 4);
        tt_tensor_desc d;
        for (uint32_t i = 0; i < config_n_tensors(c); i++) {
            config_tensor(c, i, &d);
            CHECK_EQ_INT(store_reader_dtype(&r2, i), dt[i]);
            CHECK(store_reader_tensor(&r1, i, x) == 0 && store_reader_tensor(&r2, i, y) == 0);
            CHECK_MSG(memcmp(x, y, d.rows * d.cols * 4) == 0, "%s differs after the round trip", d.name);
        }
        free(x);
        free(y);
        store_reader_close(&r2);
    }
    store_reader_close(&r1);
    store_prune_map_clear(&map);
    free(dt);
    free(b);
    free(c);
}

/* ---- 7: config.json ------------------------------------------------------------------ */

/* Mutation: set key to the JSON text value (NULL: delete key). */
typedef struct cfg_case {
    const char *key, *value, *expect;
} cfg_case;

static void test_config(void) {
    tt_config *c = calloc(1, sizeof *c), *got = calloc(1, sizeof *got);
    fixture_micro_config(c);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/cfg", g_tmp);
    mkdir(dir, 0755);
    static const cfg_case bad[] = {
        {"model_type", "\"mistral\"", "model_type"},
        {"hidden_act", "\"gelu\"", "hidden_act"},
        {"attention_bias", "true", "attention_bias"},
        {"mlp_bias", "true", "mlp_bias"},
        {"rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0}", "\"yarn\""},
        {"rope_scaling", "{\"type\": \"dynamic\", \"factor\": 2.0}", "\"dynamic\""},
        {"rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}", "rope_scaling.low_freq_factor"},
        {"rope_scaling", "[1]", "rope_scaling"},
        /* transformers 5 */
        {"rope_parameters", "{\"rope_type\": \"yarn\", \"rope_theta\": 1e4, \"factor\": 4.0}", "rope_parameters.rope_type"},
        {"rope_parameters", "{\"rope_type\": \"llama3\", \"rope_theta\": 1e4, \"factor\": 8.0}",
         "rope_parameters.low_freq_factor"},
        {"rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 123.0}", "disagree"},
        {"rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": \"x\"}", "rope_parameters.rope_theta"},
        {"rope_parameters", "7", "rope_parameters"},
        {"num_key_value_heads", "3", "num_key_value_heads"},
        {"head_dim", "8", "head_dim"},
        {"quantization_config", "{\"quant_method\": \"gptq\"}", "gptq"},
        {"hidden_size", "\"abc\"", "hidden_size"},
        {"vocab_size", NULL, "vocab_size"},
        {"num_hidden_layers", "0", "num_hidden_layers"},
        {"bos_token_id", "99", "bos_token_id"},
        {"eos_token_id", "[\"x\"]", "eos_token_id"},
        {"rms_norm_eps", "0", "rms_norm_eps"},
        {"tie_word_embeddings", "1", "tie_word_embeddings"},
        {"tiertrain", "{\"format_version\": 2}", "format_version"},
        {"tiertrain", "{\"format_version\": 1, \"layers\": []}", "tiertrain.layers"},
        {"tiertrain", "{\"format_version\": 1, \"layers\": [{\"pruned\": true, \"num_attention_heads\": 2, "
                      "\"num_key_value_heads\": 1, \"intermediate_size\": 48, \"kept_kv_heads\": [1], "
                      "\"kept_ffn_channels\": [0]}, {}]}", "kept_ffn_channels"},
        {"tiertrain", "{\"format_version\": 1, \"layers\": [{\"pruned\": true, \"num_attention_heads\": 2, "
                      "\"num_key_value_heads\": 1, \"intermediate_size\": 2, \"kept_kv_heads\": [5], "
                      "\"kept_ffn_channels\": [3, 1]}, {}]}", "kept_kv_heads"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *o = config_json(c);
        if (bad[i].value) {
            json_t *v = json_loads(bad[i].value, JSON_DECODE_ANY, NULL);
            TT_ASSERT(v); /* the table's JSON must parse */
            json_object_set_new(o, bad[i].key, v);
        } else {
            json_object_del(o, bad[i].key);
        }
        write_config(dir, o);
        json_decref(o);
        tier_prune_map m;
        int has_map;
        int rc = hf_config_read(dir, got, &m, &has_map);
        CHECK_MSG(rc < 0 && strstr(tt_lasterr(), "config.json") && strstr(tt_lasterr(), bad[i].expect) && !has_map,
                  "%s = %s: rc %d, message \"%s\"", bad[i].key, bad[i].value ? bad[i].value : "(deleted)", rc,
                  tt_lasterr());
    }

    /* accepted variants */
    json_t *o = config_json(c);
    json_object_del(o, "model_type");          /* architectures alone identifies LLaMA */
    json_object_del(o, "num_key_value_heads"); /* defaults to num_attention_heads */
    json_object_set_new(o, "bos_token_id", json_null());
    json_object_set_new(o, "eos_token_id", json_pack("[I,I]", (json_int_t)2, (json_int_t)5));
    json_object_set_new(o, "rope_scaling", json_pack("{s:s}", "type", "default"));
    json_object_set_new(o, "rope_theta", json_integer(500000));
    write_config(dir, o);
    json_decref(o);
    tier_prune_map m;
    int has_map;
    CHECK_MSG(hf_config_read(dir, got, &m, &has_map) == 0, "%s", tt_lasterr());
    CHECK(got->n_kv_heads == c->n_heads && got->layers[1].n_kv_heads == c->n_heads && got->bos_id == 0 &&
          got->eos_id == 2 && got->rope_type == TT_ROPE_DEFAULT && got->rope_theta == 500000.f &&
          got->head_dim == 16 && strcmp(got->name, "cfg") == 0);

    /* transformers 5: rope_theta and llama3 scaling inside "rope_parameters"
     * (no top-level rope_theta); it wins over a stale "rope_scaling" */
    o = config_json(c);
    json_object_del(o, "rope_theta");
    json_object_set_new(o, "rope_scaling", json_null());
    json_object_set_new(o, "rope_parameters",
                        json_pack("{s:s, s:f, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "rope_theta", 250000.0,
                                  "factor", 8.0, "low_freq_factor", 1.0, "high_freq_factor", 4.0,
                                  "original_max_position_embeddings", 8192));
    write_config(dir, o);
    json_decref(o);
    CHECK_MSG(hf_config_read(dir, got, &m, &has_map) == 0, "%s", tt_lasterr());
    CHECK(got->rope_type == TT_ROPE_LLAMA3 && got->rope_theta == 250000.f && got->rope_factor == 8.f &&
          got->rope_low_freq == 1.f && got->rope_high_freq == 4.f && got->rope_orig_max_pos == 8192);
    /* ... and "default" there means no scaling, with its theta */
    o = config_json(c);
    json_object_del(o, "rope_theta");
    json_object_set_new(o, "rope_parameters", json_pack("{s:s, s:f}", "rope_type", "default", "rope_theta", 1e6));
    write_config(dir, o);
    json_decref(o);
    CHECK_MSG(hf_config_read(dir, got, &m, &has_map) == 0, "%s", tt_lasterr());
    CHECK(got->rope_type == TT_ROPE_DEFAULT && got->rope_theta == 1e6f);

    /* no directory, no config.json */
    char none[600];
    snprintf(none, sizeof none, "%s/none", g_tmp);
    CHECK(hf_config_read(none, got, &m, &has_map) == -ENOENT && strstr(tt_lasterr(), none));
    mkdir(none, 0755);
    CHECK(hf_config_read(none, got, &m, &has_map) == -ENOENT && strstr(tt_lasterr(), "config.json"));
    free(got);
    free(c);
}

/* ---- 8: refusals leave nothing behind ----------------------------------------------- */

static int dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 1; /* gone counts as empty */
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n == 0;
}

/* 1 when files a and b exist and hold the same bytes. */
static int same_bytes(const char *a, const char *b) {
    uint64_t na = 0, nb = 0;
    uint8_t *x = fixture_slurp(a, &na), *y = fixture_slurp(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static void test_refusals(void) {
    tt_config *c = calloc(1, sizeof *c);
    fixture_micro_config(c);
    char src[600], out[600], partial[620];
    snprintf(out, sizeof out, "%s/refused.tier", g_tmp);
    snprintf(partial, sizeof partial, "%s.partial", out);
    hf_import_opts o = {TT_DTYPE_BF16, NULL, NULL, NULL, 0};

    snprintf(src, sizeof src, "%s/missing-src", g_tmp);
    write_source(src, c, &(src_opts){.dt = ST_DTYPE_BF16, .shards = 2, .skip = "model.layers.1.mlp.up_proj.weight"}, 3);
    CHECK(hf_import(src, out, &o, NULL) == -ENOENT && strstr(tt_lasterr(), "model.layers.1.mlp.up_proj.weight") &&
          strstr(tt_lasterr(), HF_INDEX_FILE));
    CHECK(!fixture_exists(out) && !fixture_exists(partial));

    snprintf(src, sizeof src, "%s/shape-src", g_tmp);
    write_source(src, c, &(src_opts){.dt = ST_DTYPE_BF16, .shards = 1, .bad_shape = "model.layers.0.self_attn.k_proj.weight"}, 3);
    CHECK_MSG(hf_import(src, out, &o, NULL) == -EINVAL && strstr(tt_lasterr(), "k_proj") &&
                  strstr(tt_lasterr(), "[32, 65]") && strstr(tt_lasterr(), "[32, 64]") &&
                  strstr(tt_lasterr(), HF_WEIGHTS_FILE),
              "%s", tt_lasterr());
    CHECK(!fixture_exists(out) && !fixture_exists(partial));

    /* a weight map naming a path outside the directory */
    snprintf(src, sizeof src, "%s/escape-src", g_tmp);
    write_source(src, c, &(src_opts){.dt = ST_DTYPE_BF16, .shards = 2}, 3);
    char p[700];
    path_in(p, sizeof p, src, HF_INDEX_FILE);
    const char *escape = "{\"weight_map\": {\"model.norm.weight\": \"../x.safetensors\"}}";
    fixture_spit(p, escape, strlen(escape));
    CHECK(hf_import(src, out, &o, NULL) == -EINVAL && strstr(tt_lasterr(), "../x.safetensors"));

    /* export refusals */
    char store[600], file[600], xdir[600];
    snprintf(store, sizeof store, "%s/r.tier", g_tmp);
    uint32_t *dt = fixture_dtypes(c, TT_DTYPE_F32);
    CHECK(store_write(store, c, &(tier_write_opts){dt, NULL, 0, NULL}, fill_random, &(fill_ctx){1}) == 0);
    free(dt);
    snprintf(file, sizeof file, "%s/a-file", g_tmp);
    fixture_spit(file, "x", 1);
    CHECK(hf_export(store, file, TT_DTYPE_BF16, 0, NULL, NULL) == -ENOTDIR && strstr(tt_lasterr(), file));
    snprintf(xdir, sizeof xdir, "%s/no/such/parent", g_tmp);
    CHECK(hf_export(store, xdir, TT_DTYPE_BF16, 0, NULL, NULL) == -ENOENT && strstr(tt_lasterr(), xdir));
    snprintf(xdir, sizeof xdir, "%s/sharded-src", g_tmp);
    write_source(xdir, c, &(src_opts){.dt = ST_DTYPE_BF16, .shards = 2}, 3);
    CHECK(hf_export(store, xdir, TT_DTYPE_BF16, 0, NULL, NULL) == -EEXIST && strstr(tt_lasterr(), HF_INDEX_FILE));
    path_in(p, sizeof p, xdir, HF_WEIGHTS_FILE);
    CHECK(!fixture_exists(p));

    /* a full disk (RLIMIT_FSIZE): no file, and the directory made for it is gone */
    snprintf(xdir, sizeof xdir, "%s/full", g_tmp);
    struct rlimit saved, lim;
    getrlimit(RLIMIT_FSIZE, &saved);
    lim = saved;
    lim.rlim_cur = 8192;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        int rc = hf_export(store, xdir, TT_DTYPE_F32, 0, NULL, NULL);
        setrlimit(RLIMIT_FSIZE, &saved);
        CHECK_MSG(rc == -EFBIG && strstr(tt_lasterr(), HF_WEIGHTS_FILE), "rc %d: %s", rc, tt_lasterr());
        CHECK(!fixture_exists(xdir));
        /* an existing directory keeps its old files and gets no partial one */
        CHECK(hf_export(store, xdir, TT_DTYPE_BF16, 0, NULL, NULL) == 0);
        path_in(p, sizeof p, xdir, HF_WEIGHTS_FILE);
        char old_copy[700];
        snprintf(old_copy, sizeof old_copy, "%s/full-old.safetensors", g_tmp);
        uint64_t n;
        uint8_t *old = fixture_slurp(p, &n);
        fixture_spit(old_copy, old, n);
        free(old);
        setrlimit(RLIMIT_FSIZE, &lim);
        rc = hf_export(store, xdir, TT_DTYPE_F32, 1, NULL, NULL); /* force: replace the older export */
        setrlimit(RLIMIT_FSIZE, &saved);
        CHECK(rc == -EFBIG);
        CHECK(fixture_same_file(p, old_copy));
        char part[720];
        snprintf(part, sizeof part, "%s.partial", p);
        CHECK(!fixture_exists(part));
        path_in(part, sizeof part, xdir, "config.json.partial");
        CHECK(!fixture_exists(part));
    } else {
        fprintf(stderr, "note: setrlimit(RLIMIT_FSIZE) refused; full-disk cases not run\n");
    }
    signal(SIGXFSZ, prev);

    /* a folder that already holds a checkpoint: refused without force, its
     * files unchanged; with force model.safetensors and config.json are
     * replaced and the other files stay */
    snprintf(xdir, sizeof xdir, "%s/again", g_tmp);
    CHECK_MSG(hf_export(store, xdir, TT_DTYPE_BF16, 0, NULL, NULL) == 0, "%s", tt_lasterr());
    char w_copy[700], c_copy[700], conf[700], tok[700];
    path_in(p, sizeof p, xdir, HF_WEIGHTS_FILE);
    path_in(conf, sizeof conf, xdir, HF_CONFIG_FILE);
    path_in(tok, sizeof tok, xdir, "tokenizer.json");
    fixture_spit(tok, "{}", 2);
    snprintf(w_copy, sizeof w_copy, "%s/again-w", g_tmp);
    snprintf(c_copy, sizeof c_copy, "%s/again-c", g_tmp);
    uint64_t n;
    uint8_t *b = fixture_slurp(p, &n);
    fixture_spit(w_copy, b, n);
    free(b);
    b = fixture_slurp(conf, &n);
    fixture_spit(c_copy, b, n);
    free(b);
    int rc = hf_export(store, xdir, TT_DTYPE_F32, 0, NULL, NULL);
    CHECK_MSG(rc == -EEXIST && strstr(tt_lasterr(), xdir) && strstr(tt_lasterr(), "--force"), "rc %d: %s", rc,
              tt_lasterr());
    CHECK(same_bytes(p, w_copy) && same_bytes(conf, c_copy));
    unlink(p); /* config.json alone is a checkpoint too */
    CHECK(hf_export(store, xdir, TT_DTYPE_F32, 0, NULL, NULL) == -EEXIST && strstr(tt_lasterr(), HF_CONFIG_FILE));
    CHECK(!fixture_exists(p) && same_bytes(conf, c_copy));
    CHECK_MSG(hf_export(store, xdir, TT_DTYPE_F32, 1, NULL, NULL) == 0, "%s", tt_lasterr());
    CHECK(fixture_exists(p) && !same_bytes(conf, c_copy) && fixture_exists(tok));
    path_in(p, sizeof p, xdir, HF_INDEX_FILE); /* force does not replace a sharded checkpoint */
    fixture_spit(p, "{}", 2);
    CHECK(hf_export(store, xdir, TT_DTYPE_F32, 1, NULL, NULL) == -EEXIST && strstr(tt_lasterr(), HF_INDEX_FILE));
    unlink(p);

    /* import -o onto one of the source's own files: refused before anything is written */
    snprintf(src, sizeof src, "%s/own-src", g_tmp);
    write_source(src, c, &(src_opts){.dt = ST_DTYPE_BF16, .shards = 2}, 3);
    static const char *const own[] = {HF_CONFIG_FILE, HF_INDEX_FILE, "model-00001-of-00002.safetensors",
                                      "model-00002-of-00002.safetensors"};
    for (int k = 0; k < 4; k++) {
        char target[700], copy[700];
        path_in(target, sizeof target, src, own[k]);
        snprintf(copy, sizeof copy, "%s/own-copy", g_tmp);
        b = fixture_slurp(target, &n);
        CHECK_MSG(b != NULL, "no %s in the sharded source", own[k]);
        if (!b) continue;
        fixture_spit(copy, b, n);
        free(b);
        rc = hf_import(src, target, &o, NULL);
        CHECK_MSG(rc == -EINVAL && strstr(tt_lasterr(), target), "-o %s: rc %d: %s", own[k], rc, tt_lasterr());
        CHECK(same_bytes(target, copy));
        char tpart[720];
        snprintf(tpart, sizeof tpart, "%s.partial", target);
        CHECK(!fixture_exists(tpart));
    }
    snprintf(src, sizeof src, "%s/own-single", g_tmp);
    write_source(src, c, &(src_opts){.dt = ST_DTYPE_BF16, .shards = 1}, 3);
    char own_w[700], own_copy[700];
    path_in(own_w, sizeof own_w, src, HF_WEIGHTS_FILE);
    snprintf(own_copy, sizeof own_copy, "%s/own-copy", g_tmp);
    b = fixture_slurp(own_w, &n);
    fixture_spit(own_copy, b, n);
    free(b);
    CHECK(hf_import(src, own_w, &o, NULL) == -EINVAL && strstr(tt_lasterr(), own_w));
    CHECK(same_bytes(own_w, own_copy));
    /* the same file by another path (a hard link) */
    char link_path[700], target[700];
    path_in(target, sizeof target, src, "model-00002-of-00002.safetensors");
    snprintf(link_path, sizeof link_path, "%s/own-link.safetensors", g_tmp);
    if (link(target, link_path) == 0) {
        CHECK(hf_import(src, link_path, &o, NULL) == -EINVAL && strstr(tt_lasterr(), target));
    }
    /* a missing output folder is found before the model is read */
    snprintf(out, sizeof out, "%s/no/such/out.tier", g_tmp);
    CHECK(hf_import(src, out, &o, NULL) == -ENOENT && strstr(tt_lasterr(), "no/such"));
    snprintf(out, sizeof out, "%s/refused.tier", g_tmp);

    snprintf(xdir, sizeof xdir, "%s/empty-after", g_tmp);
    mkdir(xdir, 0755);
    CHECK(hf_export(file, xdir, TT_DTYPE_BF16, 0, NULL, NULL) < 0 && strstr(tt_lasterr(), file)); /* not a store */
    CHECK(dir_is_empty(xdir));
    free(c);
}

/* ---- 9: the streaming writer ---------------------------------------------------------- */

static void test_stream_writer(void) {
    char path[600], partial[620];
    snprintf(path, sizeof path, "%s/stream.safetensors", g_tmp);
    snprintf(partial, sizeof partial, "%s.partial", path);
    uint64_t s3[1] = {3}, s22[2] = {2, 2}, s0[1] = {0};
    /* deliberately not the reference order */
    st_entry e[4] = {{"z", ST_DTYPE_F32, 1, s3, NULL}, {"a", ST_DTYPE_BF16, 2, s22, NULL},
                     {"m", ST_DTYPE_U8, 1, s0, NULL}, {"b", ST_DTYPE_I64, 0, NULL, NULL}};
    uint8_t data[12 + 8 + 8];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 37 + 1);
    st_writer *w;
    CHECK(st_writer_open(&w, path, 4, e, (const char *[]){"format", "pt", NULL}) == 0);
    CHECK(fixture_exists(partial) && !fixture_exists(path));
    /* pieces that straddle tensor boundaries */
    CHECK(st_writer_write(w, data, 5) == 0);
    CHECK(st_writer_write(w, data + 5, 10) == 0);
    CHECK(st_writer_write(w, data + 15, 0) == 0);
    CHECK(st_writer_write(w, data + 15, sizeof data - 15) == 0);
    CHECK(st_writer_finish(w) == 0);
    CHECK(!fixture_exists(partial));
    st_file *st;
    CHECK_MSG(st_open(path, &st) == 0, "%s", tt_lasterr());
    if (st) {
        static const char *const order[4] = {"z", "a", "m", "b"};
        uint64_t off = 0;
        for (uint32_t i = 0; i < 4 && i < st_count(st); i++) {
            const st_tensor *t = st_tensor_at(st, i);
            CHECK_MSG(strcmp(t->name, order[i]) == 0, "tensor %u is %s", i, t->name);
            uint8_t got[16];
            CHECK(st_read(st, i, got) == 0 && memcmp(got, data + off, t->nbytes) == 0);
            off += t->nbytes;
        }
        CHECK(st_count(st) == 4 && off == sizeof data);
        st_close(st);
    }
    /* the header lists the tensors in the caller's order too */
    uint64_t len;
    uint8_t *b = fixture_slurp(path, &len);
    TT_ASSERT(b);
    b[len] = 0; /* the spare byte: strstr stops at the end */
    const char *h = (const char *)b + 8;
    CHECK(strstr(h, "\"z\"") < strstr(h, "\"a\"") && strstr(h, "\"a\"") < strstr(h, "\"m\"") &&
          strstr(h, "\"m\"") < strstr(h, "\"b\""));
    free(b);

    /* errors of open: as st_write's */
    st_entry dup[2] = {{"x", ST_DTYPE_F32, 1, s3, NULL}, {"x", ST_DTYPE_F32, 1, s3, NULL}};
    CHECK(st_writer_open(&w, path, 2, dup, NULL) == -EINVAL && w == NULL && strstr(tt_lasterr(), "\"x\""));
    CHECK(st_writer_open(&w, g_tmp, 1, dup, NULL) == -EISDIR && w == NULL);
    /* abort: no file */
    char other[600];
    snprintf(other, sizeof other, "%s/aborted.safetensors", g_tmp);
    CHECK(st_writer_open(&w, other, 1, dup, NULL) == 0);
    CHECK(st_writer_write(w, data, 4) == 0);
    st_writer_abort(w);
    snprintf(partial, sizeof partial, "%s.partial", other);
    CHECK(!fixture_exists(other) && !fixture_exists(partial));

    /* a cut write: -EFBIG, then abort leaves the older file as it was */
    uint64_t big_shape[1] = {1 << 16};
    st_entry be[1] = {{"big", ST_DTYPE_F32, 1, big_shape, NULL}};
    float *big = calloc(1 << 16, sizeof *big);
    uint64_t old_len;
    uint8_t *old = fixture_slurp(path, &old_len);
    struct rlimit saved, lim;
    getrlimit(RLIMIT_FSIZE, &saved);
    lim = saved;
    lim.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        int rc = st_writer_open(&w, path, 1, be, NULL);
        if (rc == 0) rc = st_writer_write(w, big, sizeof(float) << 16);
        setrlimit(RLIMIT_FSIZE, &saved);
        CHECK_MSG(rc == -EFBIG && strstr(tt_lasterr(), path), "cut write: rc %d (%s)", rc, tt_lasterr());
        st_writer_abort(w);
        snprintf(partial, sizeof partial, "%s.partial", path);
        CHECK(!fixture_exists(partial));
        uint64_t now_len;
        uint8_t *now = fixture_slurp(path, &now_len);
        CHECK(now && now_len == old_len && memcmp(now, old, old_len) == 0);
        free(now);
    } else {
        fprintf(stderr, "note: setrlimit(RLIMIT_FSIZE) refused; cut-write case not run\n");
    }
    signal(SIGXFSZ, prev);
    free(old);
    free(big);
}

int main(void) {
    g_tmp = fixture_tmpdir();
    test_stream_writer();
    test_round_trips();
    test_pruned();
    test_config();
    test_refusals();
    fixture_rm_rf(g_tmp);
    free(g_tmp);
    TEST_END();
}
