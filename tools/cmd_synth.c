/* tools/cmd_synth.c — `tiertrain synth`: writes a random-weight model store at
 * real shapes, optionally with LoRAM's structured pruning shapes and NF4
 * quantization. Tensors are generated, quantized and written chunk by chunk,
 * so memory use stays small whatever the model size. */
#include "core/common.h"
#include "core/config.h"
#include "core/dtype.h"
#include "core/nf4.h"
#include "core/rng.h"
#include "core/storeio.h"
#include "io/tier.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK (1u << 20) /* values generated per step; a multiple of NF4_BLOCK */
#define INIT_STD 0.02f   /* HF LlamaConfig.initializer_range, for the projections */

static const uint8_t g_zeros[64];

static int write_zeros(tier_writer *w, uint32_t i, uint64_t n) {
    while (n) {
        uint64_t k = n < sizeof g_zeros ? n : sizeof g_zeros;
        int rc = tier_writer_write(w, i, g_zeros, k);
        if (rc) return rc;
        n -= k;
    }
    return 0;
}

typedef struct synth_ctx {
    tier_writer *w;
    uint64_t seed;
    float *vals;       /* CHUNK values */
    uint8_t *out;      /* CHUNK * 4 bytes */
    tool_progress prog;
    uint64_t done;
    float embed_std;   /* embedding and lm_head */
} synth_ctx;

static int synth_nf4(synth_ctx *c, uint32_t i, const tt_tensor_desc *d, int dq, tt_rng *rng) {
    uint64_t n = d->rows * d->cols;
    nf4_layout lay;
    nf4_layout_of(n, dq, &lay);
    float *absmax = malloc(lay.nblocks * sizeof *absmax);
    uint8_t *qabs = dq ? malloc(lay.nblocks) : NULL;
    float *absmax2 = dq ? malloc(lay.nblocks2 * sizeof *absmax2) : NULL;
    if (!absmax || (dq && (!qabs || !absmax2))) {
        free(absmax); free(qabs); free(absmax2);
        return TT_FAIL(-ENOMEM, "out of memory quantizing %s", d->name);
    }
    int rc = 0;
    uint64_t written = 0;
    for (uint64_t s = 0; s < n && rc == 0; s += CHUNK) {
        uint64_t k = n - s < CHUNK ? n - s : CHUNK;
        rng_fill_normalish(rng, c->vals, k, INIT_STD);
        nf4_quantize_blocks(c->vals, k, c->out, absmax + s / NF4_BLOCK);
        rc = tier_writer_write(c->w, i, c->out, (k + 1) / 2);
        written += (k + 1) / 2;
        progress_update(&c->prog, c->done + written);
    }
    if (rc == 0) rc = write_zeros(c->w, i, lay.absmax_off - written);
    if (rc == 0 && !dq) {
        rc = tier_writer_write(c->w, i, absmax, lay.nblocks * 4);
        if (rc == 0) rc = write_zeros(c->w, i, lay.total - lay.absmax_off - lay.nblocks * 4);
    } else if (rc == 0) {
        float offset;
        nf4_double_quant(absmax, lay.nblocks, qabs, absmax2, &offset);
        rc = tier_writer_write(c->w, i, qabs, lay.nblocks);
        if (rc == 0) rc = write_zeros(c->w, i, lay.absmax2_off - lay.absmax_off - lay.nblocks);
        if (rc == 0) rc = tier_writer_write(c->w, i, absmax2, lay.nblocks2 * 4);
        if (rc == 0) rc = write_zeros(c->w, i, lay.offset_off - lay.absmax2_off - lay.nblocks2 * 4);
        if (rc == 0) rc = tier_writer_write(c->w, i, &offset, 4);
        if (rc == 0) rc = write_zeros(c->w, i, lay.total - lay.offset_off - 4);
    }
    free(absmax); free(qabs); free(absmax2);
    return rc;
}

static int synth_tensor(synth_ctx *c, uint32_t i, const tt_tensor_desc *d, uint32_t dtype) {
    tt_rng rng;
    rng_seed(&rng, c->seed, rng_hash_str(d->name));
    if (dtype == TT_DTYPE_NF4 || dtype == TT_DTYPE_NF4DQ) return synth_nf4(c, i, d, dtype == TT_DTYPE_NF4DQ, &rng);
    uint64_t n = d->rows * d->cols, esz = dtype == TT_DTYPE_F32 ? 4 : 2;
    for (uint64_t s = 0; s < n; s += CHUNK) {
        uint64_t k = n - s < CHUNK ? n - s : CHUNK;
        if (d->role == TT_ROLE_NORM)
            for (uint64_t j = 0; j < k; j++) c->vals[j] = 1.0f; /* HF initialises RMSNorm weights to 1 */
        else
            rng_fill_normalish(&rng, c->vals, k, d->role == TT_ROLE_LINEAR ? INIT_STD : c->embed_std);
        const void *src = c->vals;
        if (dtype == TT_DTYPE_BF16) {
            uint16_t *o = (uint16_t *)c->out;
            for (uint64_t j = 0; j < k; j++) o[j] = f32_to_bf16(c->vals[j]);
            src = o;
        }
        int rc = tier_writer_write(c->w, i, src, k * esz);
        if (rc) return rc;
        progress_update(&c->prog, c->done + (s + k) * esz);
    }
    return 0;
}


static int parse_range(const char *s, uint32_t *a, uint32_t *b) {
    char *end;
    errno = 0;
    unsigned long x = strtoul(s, &end, 10);
    if (errno || end == s || *end != ':') return -1;
    const char *t = end + 1;
    unsigned long y = strtoul(t, &end, 10);
    if (errno || end == t || *end) return -1;
    if (x > TT_MAX_LAYERS || y > TT_MAX_LAYERS) return -1;
    *a = (uint32_t)x; *b = (uint32_t)y;
    return 0;
}

int cmd_synth(int argc, char **argv) {
    const char *preset, *out, *quant, *layers_s;
    double ratio, embed_std;
    long seed;
    int no_dq, lz4;
    cli_opt opts[] = {
        {"preset", 'p', CLI_STR, &preset, "tiny", "NAME", "model shape: tiny small llama2-7b llama2-13b llama2-70b llama3.1-8b llama3.1-70b"},
        {"prune-ratio", 0, CLI_FLOAT, &ratio, "0", "R", "LoRAM structured pruning ratio in (0,1); 0 = unpruned"},
        {"prune-layers", 0, CLI_STR, &layers_s, NULL, "A:B", "pruned layers [A,B) (default 4:L-2 for 16+ layers, else 1:L-1)"},
        {"quant", 'q', CLI_STR, &quant, "nf4", "Q", "projection weights: nf4 (QLoRA), bf16 or f32; embeddings/lm_head stay bf16 (f32 with f32)"},
        {"no-double-quant", 0, CLI_FLAG, &no_dq, NULL, NULL, "nf4 without double quantization of the absmax values"},
        {"lz4", 0, CLI_FLAG, &lz4, NULL, NULL, "lz4-compress extents when that saves at least 1/8"},
        {"embed-std", 0, CLI_FLOAT, &embed_std, "0", "S", "std of the random embedding and lm_head (0: 1/sqrt(hidden), so logits start at unit scale)"},
        {"seed", 's', CLI_INT, &seed, "1", "S", "random seed (weights and pruning map)"},
        {"output", 'o', CLI_STR, &out, NULL, "FILE", "store to write (required)"},
        {0},
    };
    cli_cmd cmd = {"synth", NULL, "Writes a random-weight model store at real shapes.", opts, 0, 0,
                   "tiertrain synth --preset llama3.1-70b --prune-ratio 0.85 --quant nf4 -o pruned70b.tier"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    if (!out) {
        fprintf(stderr, "tiertrain synth: -o FILE is required (the store to write)\n");
        return 2;
    }
    if (embed_std < 0) {
        fprintf(stderr, "tiertrain synth: --embed-std cannot be negative\n");
        return 2;
    }
    tt_config *cfg = tt_xcalloc(1, sizeof *cfg);
    tier_prune_map *map = NULL;
    uint32_t *dtypes = NULL;
    synth_ctx c = {0};
    int exit_code = 1;
    if (config_preset(preset, cfg)) { tool_fail("synth"); goto done; }
    uint32_t lin;
    if (strcmp(quant, "nf4") == 0) lin = no_dq ? TT_DTYPE_NF4 : TT_DTYPE_NF4DQ;
    else if (strcmp(quant, "bf16") == 0) lin = TT_DTYPE_BF16;
    else if (strcmp(quant, "f32") == 0) lin = TT_DTYPE_F32;
    else {
        fprintf(stderr, "tiertrain synth: --quant must be nf4, bf16 or f32, not '%s'\n", quant);
        exit_code = 2;
        goto done;
    }
    if (ratio != 0.0) {
        uint32_t a, b;
        config_default_prune_layers(cfg, &a, &b);
        if (layers_s && parse_range(layers_s, &a, &b)) {
            fprintf(stderr, "tiertrain synth: --prune-layers expects A:B (layers A..B-1), not '%s'\n", layers_s);
            exit_code = 2;
            goto done;
        }
        if (config_prune(cfg, ratio, a, b)) { tool_fail("synth"); exit_code = 2; goto done; }
        map = tt_xcalloc(1, sizeof *map);
        tt_rng r;
        rng_seed(&r, (uint64_t)seed, rng_hash_str("prune-map"));
        for (uint32_t l = a; l < b; l++) {
            map->kv[l] = tt_xmalloc(cfg->layers[l].n_kv_heads * sizeof(uint32_t));
            map->ffn[l] = tt_xmalloc(cfg->layers[l].ffn * sizeof(uint32_t));
            rng_subset(&r, cfg->n_kv_heads, cfg->layers[l].n_kv_heads, map->kv[l]);
            rng_subset(&r, cfg->ffn, cfg->layers[l].ffn, map->ffn[l]);
        }
    } else if (layers_s) {
        fprintf(stderr, "tiertrain synth: --prune-layers needs --prune-ratio\n");
        exit_code = 2;
        goto done;
    }
    uint32_t nt = config_n_tensors(cfg);
    dtypes = tt_xcalloc(nt, sizeof *dtypes);
    tt_tensor_desc d;
    store_default_dtypes(cfg, lin, lin, dtypes);
    tier_write_opts wo = {dtypes, map, lz4};
    uint64_t total = tier_predict_size(cfg, dtypes, map != NULL);
    char sz[32], pc[32];
    if (tier_writer_open(&c.w, out, cfg, &wo)) { tool_fail("synth"); goto done; }
    printf("synth: %s%s, %s parameters, %s projections, writing %s (%s)\n", cfg->name,
           ratio != 0.0 ? " (pruned)" : "", fmt_params(config_n_params(cfg), pc, sizeof pc), dtype_name(lin), out,
           tt_fmt_bytes(total, sz, sizeof sz));
    fflush(stdout);
    c.seed = (uint64_t)seed;
    c.embed_std = embed_std > 0 ? (float)embed_std : 1.0f / sqrtf((float)cfg->hidden);
    c.vals = tt_xmalloc(CHUNK * sizeof(float));
    c.out = tt_xmalloc(CHUNK * sizeof(float));
    progress_start(&c.prog, "synth", total);
    for (uint32_t i = 0; i < nt; i++) {
        config_tensor(cfg, i, &d);
        if (synth_tensor(&c, i, &d, dtypes[i])) {
            tier_writer_abort(c.w);
            tool_fail("synth");
            goto done;
        }
        c.done += tier_writer_tensor_bytes(c.w, i);
    }
    if (tier_writer_finish(c.w)) { tool_fail("synth"); goto done; }
    progress_end(&c.prog, total);
    exit_code = 0;
done:
    if (map) store_prune_map_clear(map);
    free(map);
    free(dtypes);
    free(c.vals);
    free(c.out);
    free(cfg);
    return exit_code;
}
