/* tools/cmd_prune.c — `tiertrain prune` (structured, random, 2:4 or
 * unstructured pruning of a store) and `tiertrain quantize` (projections to
 * NF4): LoRAM's first two steps. core/prune.c does the work; this file checks
 * the flags and prints what was done. */
#include "core/base/common.h"
#include "core/base/config.h"
#include "core/base/dtype.h"
#include "core/prune.h"
#include "core/tokfile.h"
#include "io/tier.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Progress of core/prune.c's passes on stderr ("prune: scoring: ..."). */
typedef struct cmd_progress {
    const char *cmd;
    char what[64];
    tool_progress p;
} cmd_progress;

static void on_progress(void *ctx, const char *phase, uint64_t done, uint64_t total) {
    cmd_progress *c = ctx;
    if (total == 0) { /* nothing to count: say what runs, then how long it took */
        if (done == 0) {
            c->p.t0 = tt_now();
            printf("%s: %s: one forward and backward pass over the calibration windows...\n", c->cmd, phase);
        } else
            printf("%s: %s took %.1f s\n", c->cmd, phase, tt_now() - c->p.t0);
        fflush(stdout);
    } else if (done == 0) {
        snprintf(c->what, sizeof c->what, "%s: %s", c->cmd, phase);
        progress_start(&c->p, c->what, total);
    } else if (done >= total) {
        progress_end(&c->p, done);
    } else {
        progress_update(&c->p, done);
    }
}

/* "A:B" with A < B into a, b; -1 when malformed. */
static int parse_layers(const char *s, uint32_t *a, uint32_t *b) {
    char *end;
    errno = 0;
    unsigned long x = strtoul(s, &end, 10);
    if (errno || end == s || *end != ':' || s[0] == '-') return -1;
    const char *t = end + 1;
    unsigned long y = strtoul(t, &end, 10);
    if (errno || end == t || *end || t[0] == '-' || x >= y || y > TT_MAX_LAYERS) return -1;
    *a = (uint32_t)x;
    *b = (uint32_t)y;
    return 0;
}

/* Per-layer dims, consecutive layers with the same dims on one line. */
static void print_layers(const tt_config *c) {
    for (uint32_t l = 0; l < c->n_layers;) {
        uint32_t e = l + 1;
        while (e < c->n_layers && memcmp(&c->layers[e], &c->layers[l], sizeof c->layers[l]) == 0) e++;
        const tt_layer_dims *d = &c->layers[l];
        char range[32];
        if (e - l == 1) snprintf(range, sizeof range, "layer %u", l);
        else snprintf(range, sizeof range, "layers %u-%u", l, e - 1);
        printf("  %-14s %u heads, %u KV heads, ffn %u%s\n", range, d->n_heads, d->n_kv_heads, d->ffn,
               d->pruned ? " (pruned)" : "");
        l = e;
    }
}

static void print_written(const char *path) {
    struct stat sb;
    char sz[32];
    if (stat(path, &sb) == 0) printf("wrote %s (%s)\n", path, tt_fmt_bytes((uint64_t)sb.st_size, sz, sizeof sz));
}

/* The model's config (metadata only) for the flag checks and the summary;
 * 0, or 1 after printing the error. */
static int read_config(const char *cmd, const char *path, tt_config *cfg, uint64_t *size) {
    tier_store *s;
    if (tier_open(&s, path)) return tool_fail(cmd);
    *cfg = *tier_config(s);
    *size = tier_file_size(s);
    tier_close(s);
    return 0;
}

int cmd_prune(int argc, char **argv) {
    const char *out, *method_s, *ratio_s, *layers_s, *imp_s, *calib_path;
    long samples, seq;
    uint64_t seed, hbm, host;
    int force;
    cli_opt opts[] = {
        {"method", 'm', CLI_STR, &method_s, "stru", "M",
         "stru (LoRAM structured: KV heads with their query groups, MLP channels), rand (same structure, random "
         "choice), semi (2:4) or unst (unstructured)"},
        {"ratio", 'r', CLI_STR, &ratio_s, NULL, "R",
         "fraction to prune, in (0,1): of the KV heads (rounded down) and MLP channels (rounded up) for stru/rand, of "
         "each projection's weights for unst; semi: 0.5 or left out (required otherwise)"},
        {"layers", 0, CLI_STR, &layers_s, NULL, "A:B", "prune layers A..B-1 (default 4:L-2 for 16+ layers, 1:L-1 for 3 to 15, every layer (0:L) for 1 or 2)"},
        {"importance", 'i', CLI_STR, &imp_s, "magnitude", "I",
         "what ranks heads, channels and weights: magnitude (w^2) or taylor (|w * dL/dw| on --calib tokens)"},
        {"calib", 0, CLI_STR, &calib_path, NULL, "FILE", "calibration tokens for --importance taylor (tiertrain tokenize)"},
        {"calib-samples", 0, CLI_INT, &samples, "8", "N", "calibration windows, taken evenly from --calib"},
        {"calib-seq", 0, CLI_INT, &seq, "128", "N", "tokens per calibration window"},
        {"hbm", 0, CLI_SIZE, &hbm, "0", "SIZE", "with --importance taylor: stream the calibration's layers through a device budget of SIZE (the model is never resident; its gradients go to a temporary file beside -o); 0 with --host 0: the model resident"},
        {"host", 0, CLI_SIZE, &host, "0", "SIZE", "with --importance taylor: the streamed calibration's pinned host budget (0: what the machine has available)"},
        {"seed", 's', CLI_SEED, &seed, "1", "S", "random seed of --method rand"},
        {"output", 'o', CLI_STR, &out, NULL, "FILE", "pruned store to write (required)"},
        {"force", 0, CLI_FLAG, &force, NULL, NULL, "replace FILE if it exists"},
        {0},
    };
    cli_cmd cmd = {"prune", "FILE",
                   "Prunes a bf16/f32 model store: LoRAM structured pruning (kept indices stored as the pruning map), "
                   "random structured, 2:4 semi-structured or unstructured; quantize after pruning.",
                   opts, 1, 1, "tiertrain prune model.tier --method stru --ratio 0.5 -o pruned.tier"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    const char *in = pos[0];
    tt_prune_opts o = {0};
    o.method = prune_parse_method(method_s);
    o.importance = prune_parse_importance(imp_s);
    char *end = NULL;
    if (ratio_s) {
        errno = 0;
        o.ratio = strtod(ratio_s, &end);
    }
    const char *bad = NULL;
    char msg[160];
    if (!out) bad = "-o FILE is required (the pruned store to write)";
    else if (o.method < 0) {
        snprintf(msg, sizeof msg, "--method must be stru, rand, semi or unst, not '%s'", method_s);
        bad = msg;
    } else if (o.importance < 0) {
        snprintf(msg, sizeof msg, "--importance must be magnitude or taylor, not '%s'", imp_s);
        bad = msg;
    } else if (ratio_s && (errno || end == ratio_s || *end || !isfinite(o.ratio))) {
        snprintf(msg, sizeof msg, "--ratio expects a number in (0,1), not '%s'", ratio_s);
        bad = msg;
    } else if (!ratio_s && o.method != PRUNE_SEMI) {
        snprintf(msg, sizeof msg, "--ratio R is required with --method %s (the fraction to prune, in (0,1))", method_s);
        bad = msg;
    } else if (layers_s && parse_layers(layers_s, &o.layer_a, &o.layer_b)) {
        snprintf(msg, sizeof msg, "--layers expects A:B with A < B (layers A..B-1), not '%s'", layers_s);
        bad = msg;
    } else if (cli_given(&seed) && o.method != PRUNE_RAND) {
        bad = "--seed is only used with --method rand (the other methods choose by importance)";
    } else if (calib_path && o.importance != PRUNE_TAYLOR) {
        bad = "--calib is only used with --importance taylor";
    } else if (!calib_path && o.importance == PRUNE_TAYLOR) {
        bad = "--importance taylor needs calibration tokens: give --calib FILE (from tiertrain tokenize)";
    } else if (samples < 1 || samples > 65536) {
        snprintf(msg, sizeof msg, "--calib-samples must be 1..65536, not %ld", samples);
        bad = msg;
    } else if (seq < 2 || seq > (1 << 20)) {
        snprintf(msg, sizeof msg, "--calib-seq must be 2..1048576 (a window predicts each token from those before), "
                                  "not %ld", seq);
        bad = msg;
    }
    if (bad) {
        fprintf(stderr, "tiertrain prune: %s\n", bad);
        return 2;
    }
    if (o.method == PRUNE_SEMI && !ratio_s) o.ratio = 0.5;
    o.seed = seed;
    o.calib_samples = (int)samples;
    o.calib_seq = (int)seq;
    o.hbm = hbm;
    o.host = host;
    if (prune_check_flags(&o)) { /* a bad value is a usage error, refused before any output */
        tool_fail("prune");
        return 2;
    }
    const char *inputs[] = {in, calib_path ? calib_path : "", NULL};
    if (tool_check_out("prune", "-o", out, inputs, force)) return 2;

    tt_config *cfg = tt_xmalloc(sizeof *cfg);
    tt_prune_report *rep = tt_xmalloc(sizeof *rep);
    tokfile *tf = NULL;
    int exit_code = 1;
    uint64_t in_size;
    if (read_config("prune", in, cfg, &in_size)) goto done;
    if (calib_path) {
        if (tokfile_open(calib_path, &tf)) { tool_fail("prune"); goto done; }
        if (tokfile_vocab(tf) > cfg->vocab) {
            fprintf(stderr, "tiertrain prune: %s was tokenized for a vocabulary of %u but %s has %u tokens; tokenize "
                            "with the model's tokenizer\n", calib_path, tokfile_vocab(tf), in, cfg->vocab);
            goto done;
        }
        if (tokfile_count(tf) < (uint64_t)seq + 1) {
            fprintf(stderr, "tiertrain prune: --calib %s holds %llu tokens, fewer than one window of --calib-seq %ld "
                            "+ 1; give more text or a smaller --calib-seq\n", calib_path,
                    (unsigned long long)tokfile_count(tf), seq);
            goto done;
        }
        if (tokfile_count(tf) < (uint64_t)samples * (uint64_t)seq + 1) {
            fprintf(stderr, "tiertrain prune: --calib %s holds %llu tokens, fewer than --calib-samples %ld x "
                            "--calib-seq %ld + 1; give more text or fewer samples\n", calib_path,
                    (unsigned long long)tokfile_count(tf), samples, seq);
            goto done;
        }
        o.calib = tokfile_tokens(tf);
        o.n_calib = tokfile_count(tf);
    }
    char pc[32], pc2[32], sz[32];
    printf("prune: %s (%s, %u layers, %s parameters, %s) -> %s\n", in, cfg->name, cfg->n_layers,
           fmt_params(config_n_params(cfg), pc, sizeof pc), tt_fmt_bytes(in_size, sz, sizeof sz), out);
    printf("prune: method %s", method_s);
    if (o.method != PRUNE_RAND) printf(", importance %s", imp_s);
    else printf(", seed %llu", (unsigned long long)seed);
    printf(", ratio %g", o.ratio);
    if (o.importance == PRUNE_TAYLOR)
        printf(", calibration %d x %d tokens of %s", o.calib_samples, o.calib_seq, calib_path);
    printf("\n");
    fflush(stdout);
    cmd_progress prog = {"prune", "", {0}};
    o.progress = on_progress;
    o.progress_ctx = &prog;
    if (prune_store(in, out, &o, rep)) { tool_fail("prune"); goto done; }
    printf("layers %u:%u pruned; per-layer dims of %s:\n", rep->layer_a, rep->layer_b, out);
    print_layers(&rep->after);
    uint64_t pb = config_n_params(&rep->before), pa = config_n_params(&rep->after);
    printf("parameters: %s -> %s (%.1f%% kept)\n", fmt_params(pb, pc, sizeof pc), fmt_params(pa, pc2, sizeof pc2),
           100.0 * (double)pa / (double)pb);
    if (o.method == PRUNE_SEMI || o.method == PRUNE_UNST)
        printf("zeroed %llu of %llu projection weights in the pruned layers (%.2f%%)\n",
               (unsigned long long)rep->zeroed, (unsigned long long)rep->masked,
               rep->masked ? 100.0 * (double)rep->zeroed / (double)rep->masked : 0.0);
    print_written(out);
    exit_code = 0;
done:
    tokfile_close(tf);
    free(rep);
    free(cfg);
    return exit_code;
}

int cmd_quantize(int argc, char **argv) {
    const char *out, *to;
    int no_dq, force;
    cli_opt opts[] = {
        {"to", 0, CLI_STR, &to, "nf4", "Q", "what the projections become: nf4 (QLoRA's 4-bit NormalFloat; also spelled nf4-dq, as import's --dtype)"},
        {"no-double-quant", 0, CLI_FLAG, &no_dq, NULL, NULL, "nf4 without double quantization of the absmax values"},
        {"output", 'o', CLI_STR, &out, NULL, "FILE", "quantized store to write (required)"},
        {"force", 0, CLI_FLAG, &force, NULL, NULL, "replace FILE if it exists"},
        {0},
    };
    cli_cmd cmd = {"quantize", "FILE",
                   "Quantizes a store's linear projections to NF4 (double quantization by default, as QLoRA); the "
                   "embedding, lm_head and norms keep their dtype, the pruning map and per-layer dims are kept.",
                   opts, 1, 1, "tiertrain quantize pruned.tier --to nf4 -o pruned-nf4.tier"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    const char *in = pos[0];
    if (!out) {
        fprintf(stderr, "tiertrain quantize: -o FILE is required (the quantized store to write)\n");
        return 2;
    }
    if (strcmp(to, "nf4") != 0 && strcmp(to, "nf4-dq") != 0) {
        fprintf(stderr, "tiertrain quantize: --to must be nf4 (the only quantized format; also spelled nf4-dq), not "
                        "'%s'\n", to);
        return 2;
    }
    if (strcmp(to, "nf4-dq") == 0 && no_dq) {
        fprintf(stderr, "tiertrain quantize: --to nf4-dq is NF4 with double quantization; --no-double-quant asks for "
                        "the opposite: give --to nf4 with it\n");
        return 2;
    }
    const char *inputs[] = {in, NULL};
    if (tool_check_out("quantize", "-o", out, inputs, force)) return 2;
    tt_config *cfg = tt_xmalloc(sizeof *cfg);
    int exit_code = 1;
    uint64_t in_size;
    if (read_config("quantize", in, cfg, &in_size)) goto done;
    uint32_t lin = no_dq ? TT_DTYPE_NF4 : TT_DTYPE_NF4DQ;
    char pc[32], sz[32];
    printf("quantize: %s (%s, %u layers, %s parameters, %s) -> %s, projections %s\n", in, cfg->name, cfg->n_layers,
           fmt_params(config_n_params(cfg), pc, sizeof pc), tt_fmt_bytes(in_size, sz, sizeof sz), out,
           dtype_name(lin));
    fflush(stdout);
    cmd_progress prog = {"quantize", "", {0}};
    if (quantize_store(in, out, !no_dq, on_progress, &prog)) { tool_fail("quantize"); goto done; }
    print_written(out);
    exit_code = 0;
done:
    free(cfg);
    return exit_code;
}
