/* tools/cmd_synth.c — `tiertrain synth`: writes a random-weight model store at
 * real shapes, optionally with LoRAM's structured pruning shapes and NF4
 * quantization. Tensors are generated, quantized and written chunk by chunk,
 * so memory use stays small whatever the model size. */
#include "core/base/common.h"
#include "core/base/config.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
#include "core/base/rng.h"
#include "io/storeio.h"
#include "io/tier.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (1u << 20) /* values generated per step; a multiple of NF4_BLOCK */
#define INIT_STD 0.02f   /* HF LlamaConfig.initializer_range, for the projections */

/* ---- generation: whole tensors on worker threads, written in order ----------
 * Each tensor's values come from its own RNG stream (seeded by the tensor's
 * name) in CHUNK steps, so the bytes do not depend on the thread count: the
 * store is identical for every --threads. Workers fill whole-tensor buffers
 * (the stored bytes, NF4 blob layout included) at most `window` tensors and
 * `cap` bytes ahead of the writer, which writes them in order on the main
 * thread. */
typedef struct synth_job {
    const tt_config *cfg;
    const uint32_t *dtypes;
    const uint64_t *bytes; /* each tensor's stored size */
    uint64_t seed;
    float embed_std;
    uint32_t nt, window;
    uint64_t cap;          /* bytes of buffers in flight */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t next_gen, next_write;
    uint64_t inflight;
    uint8_t **buf;         /* [nt]; set when the tensor is ready */
    int failed;            /* 1 + the tensor whose buffer could not be allocated */
} synth_job;

static void fill_nf4(uint8_t *blob, const tt_tensor_desc *d, int dq, tt_rng *rng, float *vals) {
    uint64_t n = d->rows * d->cols;
    nf4_layout lay;
    nf4_layout_of(n, dq, &lay);
    float *absmax = tt_xmalloc(lay.nblocks * sizeof *absmax);
    uint64_t codes = 0;
    for (uint64_t s = 0; s < n; s += CHUNK) {
        uint64_t k = n - s < CHUNK ? n - s : CHUNK;
        rng_fill_normalish(rng, vals, k, INIT_STD);
        nf4_quantize_blocks(vals, k, blob + s / 2, absmax + s / NF4_BLOCK);
        codes += (k + 1) / 2;
    }
    memset(blob + codes, 0, lay.absmax_off - codes);
    if (!dq) {
        memcpy(blob + lay.absmax_off, absmax, lay.nblocks * 4);
        memset(blob + lay.absmax_off + lay.nblocks * 4, 0, lay.total - lay.absmax_off - lay.nblocks * 4);
    } else {
        float offset, *absmax2 = tt_xmalloc(lay.nblocks2 * sizeof *absmax2);
        nf4_double_quant(absmax, lay.nblocks, blob + lay.absmax_off, absmax2, &offset);
        memset(blob + lay.absmax_off + lay.nblocks, 0, lay.absmax2_off - lay.absmax_off - lay.nblocks);
        memcpy(blob + lay.absmax2_off, absmax2, lay.nblocks2 * 4);
        memset(blob + lay.absmax2_off + lay.nblocks2 * 4, 0, lay.offset_off - lay.absmax2_off - lay.nblocks2 * 4);
        memcpy(blob + lay.offset_off, &offset, 4);
        memset(blob + lay.offset_off + 4, 0, lay.total - lay.offset_off - 4);
        free(absmax2);
    }
    free(absmax);
}

/* Tensor i's stored bytes into out (job->bytes[i] of them). */
static void fill_tensor(const synth_job *j, uint32_t i, uint8_t *out, float *vals) {
    tt_tensor_desc d;
    config_tensor(j->cfg, i, &d);
    uint32_t dtype = j->dtypes[i];
    tt_rng rng;
    rng_seed(&rng, j->seed, rng_hash_str(d.name));
    if (dtype == TT_DTYPE_NF4 || dtype == TT_DTYPE_NF4DQ) {
        fill_nf4(out, &d, dtype == TT_DTYPE_NF4DQ, &rng, vals);
        return;
    }
    uint64_t n = d.rows * d.cols;
    for (uint64_t s = 0; s < n; s += CHUNK) {
        uint64_t k = n - s < CHUNK ? n - s : CHUNK;
        if (d.role == TT_ROLE_NORM)
            for (uint64_t x = 0; x < k; x++) vals[x] = 1.0f; /* HF initialises RMSNorm weights to 1 */
        else
            rng_fill_normalish(&rng, vals, k, d.role == TT_ROLE_LINEAR ? INIT_STD : j->embed_std);
        if (dtype == TT_DTYPE_BF16) {
            uint16_t *o = (uint16_t *)out + s;
            for (uint64_t x = 0; x < k; x++) o[x] = f32_to_bf16(vals[x]);
        } else {
            memcpy((float *)out + s, vals, k * sizeof(float));
        }
    }
}

static void *synth_worker(void *arg) {
    synth_job *j = arg;
    float *vals = tt_xmalloc(CHUNK * sizeof(float));
    pthread_mutex_lock(&j->mu);
    for (;;) {
        /* the next tensor, once it is within the window and the byte cap (always when it is the writer's next) */
        while (!j->failed && j->next_gen < j->nt &&
               (j->next_gen >= j->next_write + j->window ||
                (j->next_gen > j->next_write && j->inflight + j->bytes[j->next_gen] > j->cap)))
            pthread_cond_wait(&j->cv, &j->mu);
        if (j->failed || j->next_gen >= j->nt) break;
        uint32_t i = j->next_gen++;
        j->inflight += j->bytes[i];
        pthread_mutex_unlock(&j->mu);
        uint8_t *b = malloc(j->bytes[i] ? j->bytes[i] : 1);
        if (b) fill_tensor(j, i, b, vals);
        pthread_mutex_lock(&j->mu);
        if (!b && !j->failed) j->failed = 1 + (int)i;
        j->buf[i] = b;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    free(vals);
    return NULL;
}

/* Generates and writes every tensor with `threads` workers. 0 or -errno. */
static int synth_write(tier_writer *w, synth_job *j, int threads, tool_progress *prog) {
    pthread_t *th = tt_xcalloc((size_t)threads, sizeof *th);
    int started = 0, rc = 0;
    for (; started < threads; started++)
        if (pthread_create(&th[started], NULL, synth_worker, j)) break;
    if (!started) {
        free(th);
        return TT_FAIL(-EAGAIN, "cannot start a worker thread");
    }
    uint64_t done = 0;
    for (uint32_t i = 0; i < j->nt && rc == 0; i++) {
        pthread_mutex_lock(&j->mu);
        while (!j->buf[i] && !j->failed) pthread_cond_wait(&j->cv, &j->mu);
        uint8_t *b = j->buf[i];
        pthread_mutex_unlock(&j->mu);
        if (!b) {
            tt_tensor_desc d;
            config_tensor(j->cfg, (uint32_t)(j->failed - 1), &d);
            char sz[32];
            rc = TT_FAIL(-ENOMEM, "out of memory for %s (%s); use fewer --threads", d.name,
                         tt_fmt_bytes(j->bytes[j->failed - 1], sz, sizeof sz));
            break;
        }
        for (uint64_t o = 0; o < j->bytes[i] && rc == 0; o += 16u << 20) {
            uint64_t k = j->bytes[i] - o < (16u << 20) ? j->bytes[i] - o : (16u << 20);
            rc = tier_writer_write(w, i, b + o, k);
            progress_update(prog, done + o + k);
        }
        done += j->bytes[i];
        pthread_mutex_lock(&j->mu);
        free(b);
        j->buf[i] = NULL;
        j->inflight -= j->bytes[i];
        j->next_write = i + 1;
        if (rc && !j->failed) j->failed = 1 + (int)i; /* stop the workers */
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
    }
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    for (uint32_t i = 0; i < j->nt; i++) free(j->buf[i]);
    free(th);
    return rc;
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
    long seed, n_layers, threads;
    int no_dq, lz4;
    cli_opt opts[] = {
        {"preset", 'p', CLI_STR, &preset, "tiny", "NAME", "model shape: tiny small llama2-7b llama2-13b llama2-70b llama3.1-8b llama3.1-70b"},
        {"prune-ratio", 0, CLI_FLOAT, &ratio, "0", "R", "LoRAM structured pruning ratio in (0,1); 0 = unpruned"},
        {"layers", 0, CLI_INT, &n_layers, "0", "N", "keep only the first N layers (real shapes, reduced depth: benchmark stores in seconds); 0 = all"},
        {"prune-layers", 0, CLI_STR, &layers_s, NULL, "A:B", "pruned layers [A,B) (default 4:L-2 for 16+ layers, else 1:L-1)"},
        {"quant", 'q', CLI_STR, &quant, "nf4", "Q", "projection weights: nf4 (QLoRA), bf16 or f32; embeddings/lm_head stay bf16 (f32 with f32)"},
        {"no-double-quant", 0, CLI_FLAG, &no_dq, NULL, NULL, "nf4 without double quantization of the absmax values"},
        {"lz4", 0, CLI_FLAG, &lz4, NULL, NULL, "lz4-compress extents when that saves at least 1/8"},
        {"embed-std", 0, CLI_FLOAT, &embed_std, "0", "S", "std of the random embedding and lm_head (0: 1/sqrt(hidden), so logits start at unit scale)"},
        {"seed", 's', CLI_INT, &seed, "1", "S", "random seed (weights and pruning map)"},
        {"threads", 0, CLI_INT, &threads, "0", "N", "generating threads (0: every core); the store is the same for any N"},
        {"output", 'o', CLI_STR, &out, NULL, "FILE", "store to write (required)"},
        {0},
    };
    cli_cmd cmd = {"synth", NULL, "Writes a random-weight model store at real shapes.", opts, 0, 0,
                   "tiertrain synth --preset llama3.1-70b --prune-ratio 0.85 --quant nf4 -o pruned70b.tier\n"
                   "  tiertrain synth --preset llama3.1-70b --layers 8 --prune-ratio 0.85 -o p70b-8l.tier   "
                   "# 2 full + 6 pruned layers"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    if (!out) {
        fprintf(stderr, "tiertrain synth: -o FILE is required (the store to write)\n");
        return 2;
    }
    if (!(embed_std >= 0) || !isfinite((float)embed_std)) {
        fprintf(stderr, "tiertrain synth: --embed-std must be a finite number >= 0\n");
        return 2;
    }
    if (threads < 0 || threads > 1024 || n_layers < 0 || n_layers > TT_MAX_LAYERS) {
        fprintf(stderr, "tiertrain synth: --threads must be 0..1024 and --layers 0..%d\n", TT_MAX_LAYERS);
        return 2;
    }
    tt_config *cfg = tt_xcalloc(1, sizeof *cfg);
    tier_prune_map *map = NULL;
    uint32_t *dtypes = NULL;
    tier_writer *w = NULL;
    tool_progress prog;
    synth_job job;
    uint64_t *bytes = NULL;
    memset(&job, 0, sizeof job);
    int exit_code = 1;
    if (config_preset(preset, cfg)) { tool_fail("synth"); goto done; }
    if (n_layers > (long)cfg->n_layers) {
        fprintf(stderr, "tiertrain synth: --layers %ld is more than %s has (%u)\n", n_layers, preset, cfg->n_layers);
        exit_code = 2;
        goto done;
    }
    if (n_layers > 0 && n_layers < (long)cfg->n_layers) { /* the same shapes, fewer of them */
        cfg->n_layers = (uint32_t)n_layers;
        snprintf(cfg->name, sizeof cfg->name, "%s-%ldl", preset, n_layers);
    }
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
    store_default_dtypes(cfg, lin, lin, dtypes);
    tier_write_opts wo = {dtypes, map, lz4};
    uint64_t total = tier_predict_size(cfg, dtypes, map != NULL);
    char sz[32], pc[32];
    if (tier_writer_open(&w, out, cfg, &wo)) { tool_fail("synth"); goto done; }
    printf("synth: %s%s, %s parameters, %s projections, writing %s (%s)\n", cfg->name,
           ratio != 0.0 ? " (pruned)" : "", fmt_params(config_n_params(cfg), pc, sizeof pc), dtype_name(lin), out,
           tt_fmt_bytes(total, sz, sizeof sz));
    fflush(stdout);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int nth = threads > 0 ? (int)threads : cores > 0 ? (int)(cores < 64 ? cores : 64) : 1;
    if ((uint32_t)nth > nt) nth = (int)nt;
    long avail = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t cap = avail > 0 && page > 0 ? (uint64_t)avail * (uint64_t)page / 4 : 0;
    job.cfg = cfg;
    job.dtypes = dtypes;
    job.seed = (uint64_t)seed;
    job.embed_std = embed_std > 0 ? (float)embed_std : 1.0f / sqrtf((float)cfg->hidden);
    job.nt = nt;
    job.window = (uint32_t)nth + 2;
    job.cap = cap > (1ull << 30) ? cap : (1ull << 30);
    job.buf = tt_xcalloc(nt, sizeof *job.buf);
    bytes = tt_xcalloc(nt, sizeof *bytes);
    for (uint32_t i = 0; i < nt; i++) bytes[i] = tier_writer_tensor_bytes(w, i);
    job.bytes = bytes;
    pthread_mutex_init(&job.mu, NULL);
    pthread_cond_init(&job.cv, NULL);
    progress_start(&prog, "synth", total);
    rc = synth_write(w, &job, nth, &prog);
    pthread_mutex_destroy(&job.mu);
    pthread_cond_destroy(&job.cv);
    if (rc) {
        tier_writer_abort(w);
        tool_fail("synth");
        goto done;
    }
    if (tier_writer_finish(w)) { tool_fail("synth"); goto done; }
    progress_end(&prog, total);
    exit_code = 0;
done:
    if (map) store_prune_map_clear(map);
    free(map);
    free(dtypes);
    free(bytes);
    free(job.buf);
    free(cfg);
    return exit_code;
}
