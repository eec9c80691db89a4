/* tests/corpus_gen.c — writes the seed corpora of the fuzz targets that take
 * tiertrain's own formats (`make corpus`, then commit tests/corpus/):
 *
 *   tests/corpus/lz4page    lz4 page extents (mode byte 0) and raw data for
 *                           the round trip (mode byte 1) — tests/fuzz_lz4page.c
 *   tests/corpus/tokfile    token files: empty, small, one at the id limit
 *   tests/corpus/ckpt       checkpoints of f32 and f64 runs, bf16 activations, a data mixture, full training
 *   tests/corpus/config     config.json of every preset, of a pruned model
 *                           (the "tiertrain" record with kept indices) and
 *                           hand-written variants (rope_scaling, quantization)
 *   tests/corpus/adapter    the two files of a PEFT adapter, each behind the
 *                           mode byte of tests/fuzz_adapter.c
 *   tests/corpus/tier       ok-lz4.tier, ok-lz4-source.tier (stores with lz4
 *                           extents, one with a source record; the other
 *                           tier seeds come from tests/test_tier_corpus.c)
 *
 * The tokenizer seeds (tests/corpus/tokenizer) are trimmed copies of real
 * tokenizer.json files, described in tests/corpus/README.md. */
#include "core/base/config.h"
#include "core/tokfile.h"
#include "io/ckpt.h"
#include "io/hfmodel.h"
#include "io/lz4page.h"
#include "io/peft.h"
#include "tests/fixtures.h"
#include "tests/ref_adapter.h"

static const char *g_out;

static void put(const char *sub, const char *name, const void *mode, const void *b, uint64_t n) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", g_out, sub);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", g_out, sub, name);
    FILE *f = fopen(path, "wb");
    TT_ASSERT(f);
    if (mode) TT_ASSERT(fwrite(mode, 1, 1, f) == 1);
    TT_ASSERT(n == 0 || fwrite(b, 1, n, f) == n);
    TT_ASSERT(fclose(f) == 0);
}

/* Moves tmp/name into the corpus as sub/seed (with an optional mode byte). */
static void take(const char *tmp, const char *name, const char *sub, const char *seed, const uint8_t *mode) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    uint64_t n;
    uint8_t *b = fixture_slurp(path, &n);
    TT_ASSERT(b);
    put(sub, seed, mode, b, n);
    free(b);
    unlink(path);
}

static void lz4_seeds(void) {
    static const uint64_t lens[] = {0, 1, 100, LZ4PAGE_SIZE, LZ4PAGE_SIZE + 7, 3 * LZ4PAGE_SIZE / 2};
    for (size_t k = 0; k < sizeof lens / sizeof *lens; k++) {
        uint64_t n = lens[k];
        uint8_t *raw = malloc(n + 1);
        for (uint64_t j = 0; j < n; j++) raw[j] = fixture_byte((uint32_t)k, j, k % 2 ? 70 : 20);
        uint64_t cap = lz4page_bound(n), stored;
        uint8_t *st = malloc(cap);
        TT_ASSERT(lz4page_compress(raw, n, st, cap, &stored) == 0);
        char name[64];
        uint8_t mode = 0;
        snprintf(name, sizeof name, "ok-extent-%llu", (unsigned long long)n);
        put("lz4page", name, &mode, st, stored);
        if (n <= 4096) {
            mode = 1;
            snprintf(name, sizeof name, "ok-raw-%llu", (unsigned long long)n);
            put("lz4page", name, &mode, raw, n);
        }
        free(st);
        free(raw);
    }
}

static void tokfile_seeds(const char *tmp) {
    static const struct { uint32_t vocab, eot, n; } f[] = {{32, 2, 0}, {32000, 2, 40}, {128256, 128001, 9}, {1, 0, 3}};
    for (size_t k = 0; k < sizeof f / sizeof *f; k++) {
        char path[700], name[64];
        snprintf(path, sizeof path, "%s/t.tok", tmp);
        tokfile_writer *w;
        TT_ASSERT(tokfile_write_open(path, f[k].vocab, f[k].eot, &w) == 0);
        for (uint32_t i = 0; i < f[k].n; i++) {
            uint32_t t = i % 5 == 4 ? f[k].eot : (i * 2654435761u) % f[k].vocab;
            TT_ASSERT(tokfile_append(w, &t, 1) == 0);
        }
        TT_ASSERT(tokfile_write_finish(w) == 0);
        snprintf(name, sizeof name, "ok-vocab%u-n%u.tok", f[k].vocab, f[k].n);
        take(tmp, "t.tok", "tokfile", name, NULL);
    }
}

static void ckpt_seeds(const char *tmp) {
    /* k 3: a dynamic two-source data mixture (the longer run record); k 4: full training with GaLore (the
     * longest record: train --full --ckpt) */
    for (int k = 0; k < 5; k++) {
        ckpt_state st = {.step = (uint64_t)k * 3, .seed = 1234, .model_fp = 0xfeedull, .n_params = 6u + (uint64_t)k * 5,
                         .real_bytes = k == 1 ? 8 : 4, .rank = 4, .targets = 0x7f, .alpha = 8, .dropout = 0.05f,
                         .steps = 10, .seq = 64, .micro_batch = 2, .accum = 2, .warmup = 2, .lr = 1e-3f,
                         .min_lr = 1e-4f, .wd = 0.01f, .b1 = 0.9f, .b2 = 0.999f, .eps = 1e-8f, .clip = 1,
                         .tokens_seen = 768, .data_tokens = 5000, .data_hash = 0xabcdefull, .threads = 2,
                         .act_bf16 = k == 2};
        if (k == 3) {
            st.mix_n = 2; st.mix_mode = 1; st.mix_every = 5; st.mix_tau = 0.25f;
            st.mix_base[0] = 0.3; st.mix_base[1] = 0.7; st.mix_w[0] = 0.4; st.mix_w[1] = 0.6;
            st.mix_ref[0] = 2.5; st.mix_ref[1] = 2.25; st.mix_tokens[0] = 3000; st.mix_tokens[1] = 2000;
            st.mix_hash[0] = 0x1234ull; st.mix_hash[1] = 0x5678ull;
        }
        if (k == 4) {
            st.full = 1; st.rank = 0; st.targets = 0; st.alpha = 0; st.dropout = 0;
            st.optim = 1; st.galore_rank = 2; st.galore_every = 3; st.galore_scale = 0.25f;
        }
        uint64_t n = st.n_params;
        uint8_t *p = calloc(n, st.real_bytes);
        float *m = calloc(n, 4), *v = calloc(n, 4);
        for (uint64_t i = 0; i < n; i++) m[i] = (float)i * 0.25f, v[i] = (float)i * 0.5f, p[i] = (uint8_t)i;
        TT_ASSERT(ckpt_write(tmp, &st, p, m, v) == 0);
        char name[64];
        snprintf(name, sizeof name, "ok-%s.bin",
                 k == 0 ? "f32" : k == 1 ? "f64" : k == 2 ? "bf16-acts" : k == 3 ? "mix" : "full-galore");
        take(tmp, CKPT_FILE, "ckpt", name, NULL);
        free(p); free(m); free(v);
    }
}

static const char *HAND_CONFIGS[][2] = {
    {"ok-llama3-rope-scaling.json",
     "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,"
     "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"num_hidden_layers\":2,\"vocab_size\":32,"
     "\"max_position_embeddings\":131072,\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,\"hidden_act\":\"silu\","
     "\"bos_token_id\":1,\"eos_token_id\":[2,3],\"tie_word_embeddings\":false,\"attention_bias\":false,"
     "\"mlp_bias\":false,\"torch_dtype\":\"bfloat16\",\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,"
     "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"}}"},
    {"ok-head-dim-tied.json",
     "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
     "\"head_dim\":16,\"num_hidden_layers\":1,\"vocab_size\":32,\"rms_norm_eps\":1e-6,\"tie_word_embeddings\":true,"
     "\"rope_scaling\":null,\"quantization_config\":null}"},
    {"bad-quantized.json",
     "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
     "\"num_hidden_layers\":1,\"vocab_size\":32,\"quantization_config\":{\"quant_method\":\"bitsandbytes\"}}"},
    {"bad-rope-linear.json",
     "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
     "\"num_hidden_layers\":1,\"vocab_size\":32,\"rope_scaling\":{\"type\":\"linear\",\"factor\":1e39}}"},
};

static void config_seeds(const char *tmp) {
    const char *names[] = {"llama2-7b", "llama2-70b", "llama3.1-8b", "llama3.1-70b"};
    tt_config c;
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        TT_ASSERT(config_preset(names[k], &c) == 0);
        TT_ASSERT(hf_config_write(tmp, &c, NULL, k % 2 ? TT_DTYPE_F32 : TT_DTYPE_BF16) == 0);
        char seed[64];
        snprintf(seed, sizeof seed, "ok-%s.json", names[k]);
        take(tmp, HF_CONFIG_FILE, "config", seed, NULL);
    }
    /* pruned: layer 1 keeps KV head 1 and every other ffn channel */
    fixture_micro_config(&c);
    TT_ASSERT(config_prune(&c, 0.5, 1, 2) == 0);
    static uint32_t kv[1] = {1}, ffn[48];
    for (uint32_t i = 0; i < c.layers[1].ffn && i < 48; i++) ffn[i] = 2 * i;
    tier_prune_map map = {{0}, {0}};
    map.kv[1] = kv;
    map.ffn[1] = ffn;
    TT_ASSERT(hf_config_write(tmp, &c, &map, TT_DTYPE_BF16) == 0);
    take(tmp, HF_CONFIG_FILE, "config", "ok-pruned-map.json", NULL);
    TT_ASSERT(hf_config_write(tmp, &c, NULL, TT_DTYPE_BF16) == 0);
    take(tmp, HF_CONFIG_FILE, "config", "ok-pruned-no-map.json", NULL);
    for (size_t k = 0; k < sizeof HAND_CONFIGS / sizeof *HAND_CONFIGS; k++)
        put("config", HAND_CONFIGS[k][0], NULL, HAND_CONFIGS[k][1], strlen(HAND_CONFIGS[k][1]));
}

/* The adapter of tests/fuzz_adapter.c (2 layers, rank 2, q/v of 16x16) and a
 * bf16 one with every projection; each file behind its mode byte. */
static void adapter_seeds(const char *tmp) {
    for (int k = 0; k < 2; k++) {
        peft_adapter a;
        peft_lora lora[REF_LAYERS * PEFT_N_PROJ];
        ref_adapter(&a, lora, k ? 0x7fu : REF_QV, k, k ? NULL : "meta-llama/Llama-2-7b-hf",
                    k ? 0 : 0x1234abcd5678ef90ull);
        TT_ASSERT(peft_write(tmp, &a) == 0);
        uint8_t cfg = 1, ten = 0;
        take(tmp, PEFT_CONFIG, "adapter", k ? "ok-config-all-bf16" : "ok-config-qv", &cfg);
        take(tmp, PEFT_TENSORS, "adapter", k ? "ok-tensors-all-bf16" : "ok-tensors-qv", &ten);
    }
}

static void tier_lz4_seed(const char *tmp) {
    tt_config c;
    fixture_micro_config(&c);
    c.hidden = 32; c.vocab = 16; c.head_dim = 16; c.n_heads = 2; c.n_kv_heads = 1; c.ffn = 32;
    for (uint32_t l = 0; l < c.n_layers; l++) c.layers[l] = (tt_layer_dims){2, 1, 32, 0};
    char path[700];
    snprintf(path, sizeof path, "%s/s.tier", tmp);
    uint32_t *dt = fixture_dtypes(&c, TT_DTYPE_NF4DQ);
    TT_ASSERT(fixture_write_store(path, &c, dt, NULL, 1, 60) == 0);
    take(tmp, "s.tier", "tier", "ok-lz4.tier", NULL);
    /* with a source record (import's --base-model) */
    tier_write_opts o = {dt, NULL, 1, "meta-llama/Llama-3.1-8B"};
    TT_ASSERT(fixture_write_store_opts(path, &c, &o, 60) == 0);
    free(dt);
    take(tmp, "s.tier", "tier", "ok-lz4-source.tier", NULL);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: corpus_gen OUT_DIR (normally tests/corpus)\n");
        return 2;
    }
    g_out = argv[1];
    char *tmp = fixture_tmpdir();
    lz4_seeds();
    tokfile_seeds(tmp);
    ckpt_seeds(tmp);
    config_seeds(tmp);
    adapter_seeds(tmp);
    tier_lz4_seed(tmp);
    fixture_rm_rf(tmp);
    free(tmp);
    printf("corpus_gen: seeds written under %s\n", g_out);
    return 0;
}
