/* tools/cmd_info.c — `tiertrain info FILE`: what a store holds. */
#include "core/base/common.h"
#include "core/base/config.h"
#include "core/base/dtype.h"
#include "io/tier.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <jansson.h>
#include <string.h>

typedef struct summary {
    uint64_t p_total, p_layers, p_embed, p_head, p_norm;
    uint64_t b_layers, b_embed, b_head, b_max_layer;
    uint64_t predicted;
    uint32_t linear_dtype, n_pruned;
} summary;

static void summarize(const tier_store *s, summary *m) {
    const tt_config *cfg = tier_config(s);
    memset(m, 0, sizeof *m);
    uint32_t nt = tier_n_tensors(s);
    uint32_t *dtypes = tt_xcalloc(nt, sizeof *dtypes);
    tt_tensor_desc d;
    for (uint32_t i = 0; i < nt; i++) {
        const tier_tensor *t = tier_tensor_at(s, i);
        config_tensor(cfg, i, &d);
        dtypes[i] = t->dtype;
        uint64_t n = t->rows * t->cols;
        m->p_total += n;
        if (d.role == TT_ROLE_NORM) m->p_norm += n;
        else if (d.role == TT_ROLE_EMBED) m->p_embed += n;
        else if (d.role == TT_ROLE_LM_HEAD) m->p_head += n;
        else { m->p_layers += n; m->linear_dtype = t->dtype; }
    }
    for (uint32_t e = 0; e < tier_n_extents(s); e++) {
        uint64_t b = tier_extent_at(s, e)->stored;
        if (e == TT_EXTENT_EMBED(cfg)) m->b_embed += b;
        else if (e == TT_EXTENT_HEAD(cfg)) m->b_head += b;
        else {
            m->b_layers += b;
            if (b > m->b_max_layer) m->b_max_layer = b;
        }
    }
    for (uint32_t l = 0; l < cfg->n_layers; l++) m->n_pruned += cfg->layers[l].pruned;
    m->predicted = tier_predict_size(cfg, dtypes, tier_prune(s) != NULL, tier_source(s));
    free(dtypes);
}

static const char *codec_name(uint32_t codec) { return codec == TIER_CODEC_LZ4 ? "lz4" : "raw"; }

/* Strictly increasing indices a[0..n) as ranges ("0-5,9,12-14") into buf;
 * cut with ",... (N ranges)" when they do not fit in about width bytes
 * (info --json lists every index). */
static void fmt_ranges(const uint32_t *a, uint32_t n, char *buf, size_t cap, size_t width) {
    uint32_t runs = 0;
    for (uint32_t k = 0; k < n; k++) runs += k == 0 || a[k] != a[k - 1] + 1;
    size_t len = 0;
    buf[0] = 0;
    uint32_t shown = 0;
    for (uint32_t k = 0; k < n;) {
        uint32_t e = k;
        while (e + 1 < n && a[e + 1] == a[e] + 1) e++;
        char r[32];
        if (e > k) snprintf(r, sizeof r, "%s%u-%u", len ? "," : "", a[k], a[e]);
        else snprintf(r, sizeof r, "%s%u", len ? "," : "", a[k]);
        if (len + strlen(r) > width && shown + 1 < runs) {
            snprintf(buf + len, cap - len, ",... (%u ranges)", runs);
            return;
        }
        snprintf(buf + len, cap - len, "%s", r);
        len = strlen(buf);
        shown++;
        k = e + 1;
    }
}

static void print_text(const tier_store *s, const summary *m) {
    const tt_config *c = tier_config(s);
    char a[32], b[32], x[32];
    printf("store:       %s (%s, format v%u)\n", tier_path(s), tt_fmt_bytes(tier_file_size(s), a, sizeof a),
           TIER_VERSION);
    printf("model:       %s: %u layers, hidden %u, vocab %u, head_dim %u, %u heads / %u KV heads, ffn %u\n", c->name,
           c->n_layers, c->hidden, c->vocab, c->head_dim, c->n_heads, c->n_kv_heads, c->ffn);
    printf("             rope theta %g%s, rms eps %g, max positions %u, tied embeddings: %s\n", c->rope_theta,
           c->rope_type == TT_ROPE_LLAMA3 ? " (llama3 scaling)" : "", c->rms_eps, c->max_pos,
           c->tie_embeddings ? "yes" : "no");
    char pc[32];
    fmt_params(m->p_total, pc, sizeof pc);
    printf("parameters:  %s (%llu): layers %llu, embedding %llu, lm_head %llu, norms %llu\n",
           pc, (unsigned long long)m->p_total, (unsigned long long)m->p_layers,
           (unsigned long long)m->p_embed, (unsigned long long)m->p_head, (unsigned long long)m->p_norm);
    printf("weights:     projections %s, pruned layers %u of %u, pruning map: %s\n",
           dtype_name(m->linear_dtype) ? dtype_name(m->linear_dtype) : "-", m->n_pruned, c->n_layers,
           tier_prune(s) ? "yes" : "no");
    printf("source:      %s\n", tier_source(s) ? tier_source(s) /* checked plain (tier_source_check) */
                                                : "none recorded (adapters trained on it name no base model)");
    printf("layers:\n");
    for (uint32_t l = 0; l < c->n_layers;) {
        uint32_t r = l;
        const tt_layer_dims *d = &c->layers[l];
        const tier_extent *ext = tier_extent_at(s, TT_EXTENT_LAYER(l));
        while (r + 1 < c->n_layers && memcmp(&c->layers[r + 1], d, sizeof *d) == 0 &&
               tier_extent_at(s, TT_EXTENT_LAYER(r + 1))->stored == ext->stored &&
               tier_extent_at(s, TT_EXTENT_LAYER(r + 1))->codec == ext->codec)
            r++;
        char range[32];
        snprintf(range, sizeof range, r > l ? "%u-%u" : "%u", l, r);
        printf("  %-9s %3u heads %3u KV heads  ffn %6u  %-7s %s each", range, d->n_heads, d->n_kv_heads, d->ffn,
               d->pruned ? "pruned" : "full", tt_fmt_bytes(ext->stored, a, sizeof a));
        /* 2:4 and unstructured pruning leave the dims full and the weights sparse: lz4 stores those layers */
        if (ext->codec != TIER_CODEC_RAW)
            printf(", %s-compressed (%s raw)", codec_name(ext->codec), tt_fmt_bytes(ext->raw, b, sizeof b));
        printf("\n");
        l = r + 1;
    }
    const tier_prune_map *pm = tier_prune(s);
    if (pm) {
        printf("pruning map (the original indices each pruned layer keeps):\n");
        for (uint32_t l = 0; l < c->n_layers; l++) {
            const tt_layer_dims *d = &c->layers[l];
            if (!d->pruned || !pm->kv[l]) continue;
            char kv[256], ffn[160];
            fmt_ranges(pm->kv[l], d->n_kv_heads, kv, sizeof kv, 120);
            fmt_ranges(pm->ffn[l], d->ffn, ffn, sizeof ffn, 60);
            printf("  %-9u KV heads %u of %u: %s; MLP channels %u of %u: %s\n", l, d->n_kv_heads, c->n_kv_heads, kv,
                   d->ffn, c->ffn, ffn);
        }
    }
    printf("bytes per tier:\n");
    printf("  layers (streamed NVMe -> host -> GPU): %s, largest layer %s\n", tt_fmt_bytes(m->b_layers, a, sizeof a),
           tt_fmt_bytes(m->b_max_layer, b, sizeof b));
    printf("  embedding (rows gathered on the host): %s\n", tt_fmt_bytes(m->b_embed, a, sizeof a));
    printf("  head (final norm%s, GPU):   %s\n", c->tie_embeddings ? "         " : " + lm_head",
           tt_fmt_bytes(m->b_head, x, sizeof x));
    double diff = 100.0 * ((double)tier_file_size(s) - (double)m->predicted) / (double)m->predicted;
    uint32_t n_lz4 = 0;
    for (uint32_t e = 0; e < tier_n_extents(s); e++) n_lz4 += tier_extent_at(s, e)->codec == TIER_CODEC_LZ4;
    printf("file size:   %llu bytes; docs/FORMAT.md formula: %llu bytes (%+.3f%%)", (unsigned long long)tier_file_size(s),
           (unsigned long long)m->predicted, diff);
    if (n_lz4) printf("; the formula counts raw extents, and %u of %u are lz4-compressed", n_lz4, tier_n_extents(s));
    printf("\n");
}

static void print_json(const tier_store *s, const summary *m) {
    const tt_config *c = tier_config(s);
    json_t *layers = json_array();
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const tt_layer_dims *d = &c->layers[l];
        const tier_extent *x = tier_extent_at(s, TT_EXTENT_LAYER(l));
        json_t *lo = json_pack("{s:I,s:I,s:I,s:I,s:b,s:I,s:I,s:s,s:I}", "layer", (json_int_t)l, "n_heads",
                               (json_int_t)d->n_heads, "n_kv_heads", (json_int_t)d->n_kv_heads, "ffn",
                               (json_int_t)d->ffn, "pruned", (int)d->pruned, "offset", (json_int_t)x->offset, "bytes",
                               (json_int_t)x->stored, "codec", codec_name(x->codec), "raw_bytes", (json_int_t)x->raw);
        const tier_prune_map *pm = tier_prune(s);
        if (pm && pm->kv[l]) { /* the kept original indices, as config.json's "tiertrain" object lists them */
            json_t *kv = json_array(), *ffn = json_array();
            for (uint32_t k = 0; k < d->n_kv_heads; k++) json_array_append_new(kv, json_integer(pm->kv[l][k]));
            for (uint32_t k = 0; k < d->ffn; k++) json_array_append_new(ffn, json_integer(pm->ffn[l][k]));
            json_object_set_new(lo, "kept_kv_heads", kv);
            json_object_set_new(lo, "kept_ffn_channels", ffn);
        }
        json_array_append_new(layers, lo);
    }
    json_t *cfg = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:s,s:b}", "name", c->name, "n_layers",
                            (json_int_t)c->n_layers, "hidden", (json_int_t)c->hidden, "vocab", (json_int_t)c->vocab,
                            "head_dim", (json_int_t)c->head_dim, "n_heads", (json_int_t)c->n_heads, "n_kv_heads",
                            (json_int_t)c->n_kv_heads, "ffn", (json_int_t)c->ffn, "rope_theta", (double)c->rope_theta,
                            "rms_eps", (double)c->rms_eps, "rope_type",
                            c->rope_type == TT_ROPE_LLAMA3 ? "llama3" : "default", "tie_embeddings",
                            (int)c->tie_embeddings);
    const char *ld = dtype_name(m->linear_dtype);
    char path[4200]; /* the path as given, made valid UTF-8 for JSON */
    json_t *root = json_pack(
        "{s:s,s:o,s:I,s:I,s:I,s:o,s:{s:I,s:I,s:I,s:I,s:I},s:s,s:b,s:I,s:{s:I,s:I,s:I,s:I},s:o}", "file",
        tt_escape(tier_path(s), path, sizeof path), "source", tier_source(s) ? json_string(tier_source(s)) : json_null(),
        "format_version", (json_int_t)TIER_VERSION, "file_size", (json_int_t)tier_file_size(s), "predicted_size",
        (json_int_t)m->predicted, "config", cfg, "params", "total", (json_int_t)m->p_total, "layers",
        (json_int_t)m->p_layers, "embedding", (json_int_t)m->p_embed, "lm_head", (json_int_t)m->p_head, "norms",
        (json_int_t)m->p_norm, "projection_dtype", ld ? ld : "-", "prune_map", tier_prune(s) != NULL, "pruned_layers",
        (json_int_t)m->n_pruned, "bytes", "layers", (json_int_t)m->b_layers, "largest_layer",
        (json_int_t)m->b_max_layer, "embedding", (json_int_t)m->b_embed, "head", (json_int_t)m->b_head, "layers",
        layers);
    TT_ASSERT(root);
    char *txt = json_dumps(root, JSON_COMPACT);
    puts(txt);
    free(txt);
    json_decref(root);
}

int cmd_info(int argc, char **argv) {
    int as_json;
    cli_opt opts[] = {
        {"json", 0, CLI_FLAG, &as_json, NULL, NULL, "print one JSON object instead of text"},
        {0},
    };
    cli_cmd cmd = {"info", "FILE", "Shows a store's config, per-layer dimensions, parameter count and bytes per tier.",
                   opts, 1, 1, "tiertrain info model.tier"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    tier_store *s;
    if (tier_open(&s, pos[0])) return tool_fail("info");
    summary m;
    summarize(s, &m);
    if (as_json) print_json(s, &m);
    else print_text(s, &m);
    tier_close(s);
    return 0;
}
