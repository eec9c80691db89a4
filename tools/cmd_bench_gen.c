/* tools/cmd_bench_gen.c — `tiertrain bench generate`: generation throughput
 * (prompt and decoding tokens/s) at several batch sizes, resident and
 * streamed under a device budget, measured side by side: the two runs
 * alternate round by round so that drift on a shared machine hits both. */
#include "core/base/common.h"
#include "core/base/rng.h"
#include "core/generate.h"
#include "sched/plan.h"
#include "tools/cli.h"
#include "tools/gen_common.h"
#include "tools/tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BATCHES 8

typedef struct timing {
    double t_first; /* when the first token of the run came (the prompt pass done) */
    uint32_t *tok;  /* [prompt][new] */
    int *count, n_new;
} timing;

static int on_token(void *vc, int i, uint32_t token, const float *logits) {
    (void)logits;
    timing *t = vc;
    if (t->t_first == 0) t->t_first = tt_now();
    t->tok[(size_t)i * t->n_new + t->count[i]++] = token;
    return 0;
}

/* One timed run: B prompts of P tokens, n_new greedy tokens each (no end of
 * sequence). Adds the prompt and decoding seconds; tokens into tok. */
static int timed_run(tt_gen *g, int B, uint32_t *const *pp, int P, int n_new, uint32_t *tok, double *t_prompt,
                     double *t_decode) {
    const uint32_t *prompts[4096];
    int lens[4096], count[4096] = {0};
    for (int i = 0; i < B; i++) { prompts[i] = pp[i]; lens[i] = P; }
    gen_params gp = {.max_new = n_new, .top_p = 1};
    timing t = {0, tok, count, n_new};
    double t0 = tt_now();
    int rc = gen_run(g, B, prompts, lens, &gp, NULL, on_token, &t, NULL);
    double t1 = tt_now();
    *t_prompt += t.t_first - t0;
    *t_decode += t1 - t.t_first;
    return rc;
}

int bench_generate(int argc, char **argv) {
    const char *model, *batches, *device, *act_dtype;
    long prompt_tokens, new_tokens, rounds, chunk;
    uint64_t hbm, host;
    int as_json;
    cli_opt opts[] = {
        {"model", 'm', CLI_STR, &model, NULL, "FILE", "model store (.tier) (required)"},
        {"batch", 0, CLI_STR, &batches, "1,32", "LIST", "batch sizes (prompts generated together), comma-separated"},
        {"prompt-tokens", 0, CLI_INT, &prompt_tokens, "32", "N", "tokens per prompt (random ids)"},
        {"new-tokens", 0, CLI_INT, &new_tokens, "32", "N", "tokens generated per prompt"},
        {"prefill-chunk", 0, CLI_INT, &chunk, "8", "N", "prompt tokens per sequence per pass, 2..65536 (smaller: a smaller workspace)"},
        {"hbm", 0, CLI_SIZE, &hbm, "0", "SIZE", "the streamed run's device budget (0: a quarter of the store's layer bytes plus what the backend holds outside its arena, or the smallest plan if that is more)"},
        {"host", 0, CLI_SIZE, &host, "0", "SIZE", "pinned host memory budget (0: what the machine has available now)"},
        {"rounds", 0, CLI_INT, &rounds, "2", "N", "timed runs of each (after one untimed run each)"},
        {"device", 0, CLI_STR, &device, "cpu", "NAME", "compute backend: cpu, cpu-async or cuda"},
        {"act-dtype", 0, CLI_STR, &act_dtype, "auto", "T", "activations and the KV cache: f32, bf16 or auto"},
        {"json", 0, CLI_FLAG, &as_json, NULL, NULL, "also print one JSON object"},
        {0},
    };
    cli_cmd cmd = {"bench generate", NULL,
                   "Generation throughput (prompt and decoding tokens/s) at each batch size, resident and streamed "
                   "under a device budget, side by side.",
                   opts, 0, 0, "tiertrain bench generate --model small.tier --batch 1,32"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    int bs[MAX_BATCHES], nb = 0;
    for (const char *p = batches; p && *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        /* a ninth size is refused, not dropped */
        if (end == p || v < 1 || v > 4096 || (*end && *end != ',') || nb == MAX_BATCHES) { nb = -1; break; }
        bs[nb++] = (int)v;
        p = *end ? end + 1 : end;
    }
    const char *bad = !model ? "--model FILE is required" : nb <= 0 ? "--batch must list 1 to 8 sizes of 1..4096, e.g. 1,32"
                    : prompt_tokens < 1 || prompt_tokens > 65536 ? "--prompt-tokens must be 1..65536"
                    : new_tokens < 2 || new_tokens > 65536 ? "--new-tokens must be 2..65536"
                    : rounds < 1 || rounds > 1000 ? "--rounds must be 1..1000"
                    : chunk < 2 || chunk > 65536 ? "--prefill-chunk must be 2..65536" : NULL;
    if (bad) {
        fprintf(stderr, "tiertrain bench generate: %s (see tiertrain bench generate --help)\n", bad);
        return 2;
    }
    tier_store *s;
    if (tier_open(&s, model)) return tool_fail("bench generate");
    const tt_config *c = tier_config(s);
    int exit_code = 1, P = (int)prompt_tokens, N = (int)new_tokens, cap = P + N;
    if ((rc = tool_context_check("bench generate", "--prompt-tokens + --new-tokens", cap, s, model))) {
        tier_close(s);
        return rc;
    }
    uint64_t layers = 0;
    for (uint32_t l = 0; l < c->n_layers; l++) layers += tier_extent_at(s, TT_EXTENT_LAYER(l))->raw;
    tool_plan_args pa = {.hbm = 0, .host = host, .seq = P < chunk ? (P < 2 ? 2 : P) : chunk, .micro = 1, .rank = 1, .alpha = 1,
                         .targets = "q", .lm_head = "auto", .device = device, .act_dtype = act_dtype,
                         .gen_flags = "--batch / --prefill-chunk / --prompt-tokens / --new-tokens"};
    pa.batch_tokens = (uint64_t)pa.seq;
    tt_plan_req base;
    if ((rc = tool_plan_flags("bench generate", s, &pa, &base))) { tier_close(s); return rc; }
    /* --host given: split between the two runs below, each planned within its share as given (the memory available
     * now bounds a single plan's host memory, not two held at once) */
    if (host) base.host_avail = 0;
    const tt_lora_cfg lora = {1, 1.f, 0.f, 1u << TT_PROJ_Q, 0}; /* the bare model (B = 0) */
    double res[MAX_BATCHES][2][2] = {{{0}}}; /* [batch][resident, streamed][prompt, decode] seconds */
    uint64_t io[MAX_BATCHES] = {0}, budget[MAX_BATCHES] = {0};
    int kv_dev[MAX_BATCHES] = {0}, slots[MAX_BATCHES] = {0}, same[MAX_BATCHES] = {0};
    char lb[32], hb[32];
    printf("bench generate: %s (%s), %u layers, %s of layers; prompts of %d tokens, %d new tokens each, device %s\n",
           model, c->name, c->n_layers, tt_fmt_bytes(layers, lb, sizeof lb), P, N, be_current()->name);
    fflush(stdout);
    /* Every batch's two plans before any timing, the largest batch first: a budget too small for them is refused
     * before minutes of work, naming what the largest needs; at each batch the streamed plan first (its --hbm
     * refusal is the one that counts). */
    tt_plan pr[MAX_BATCHES], ps[MAX_BATCHES];
    int order[MAX_BATCHES];
    for (int i = 0; i < nb; i++) {
        int j = i;
        for (; j > 0 && bs[order[j - 1]] < bs[i]; j--) order[j] = order[j - 1];
        order[j] = i;
    }
    for (int k = 0; k < nb; k++) {
        int bi = order[k];
        tt_plan_req rr = base, sr;
        gen_plan_req(&rr, s, &lora, bs[bi], pa.seq, cap);
        rr.hbm = 0;
        sr = rr;
        rr.dev_avail = 0; /* resident, or the comparison means nothing: a GPU too small for it refuses the arena */
        uint64_t dmin, hmin, quarter;
        plan_minimum(s, &sr, &dmin, &hmin);
        /* as --hbm values: the arena plus what the backend holds outside it (CUDA's context and workspaces) */
        plan_dev_fits(dmin, 0, &dmin);
        plan_dev_fits(layers / 4, 0, &quarter);
        sr.hbm = hbm ? hbm : quarter > dmin ? quarter : dmin;
        if (host) {
            /* both runs are held at once (their rounds alternate): under --host the streamed one is planned in what
             * the resident one leaves, and refused with what the two need together */
            tt_plan_req r0 = rr, s0 = sr;
            r0.host = s0.host = 0; /* host memory unlimited: the resident run's need, the streamed run's least */
            s0.no_host_cache = 1;
            tt_plan a, b;
            if (plan_make(s, &r0, &a) || plan_make(s, &s0, &b)) {
                tool_fail("bench generate");
                goto out;
            }
            if (a.host_bytes + b.host_bytes > host) {
                char h[32], x[32], y[32], need[32];
                fprintf(stderr, "tiertrain bench generate: --host %s is too small for batch %d's resident and streamed "
                                "runs, which are held at once (their rounds alternate): they need %s and %s of host "
                                "memory, --host %s together; raise --host (or --hbm, so more KV caches stay on the "
                                "device) or lower %s\n", tt_fmt_bytes(host, h, sizeof h), bs[bi],
                        tt_fmt_bytes(a.host_bytes, x, sizeof x), tt_fmt_bytes(b.host_bytes, y, sizeof y),
                        tt_fmt_bytes_up(tt_align_up(a.host_bytes + b.host_bytes, 1 << 20), need, sizeof need),
                        pa.gen_flags);
                goto out;
            }
            sr.host = host - a.host_bytes;
        }
        /* the two are held at once: the streamed run gets what the GPU can give beside the resident one */
        const int rres = plan_make(s, &rr, &pr[bi]);
        if (rres == 0 && sr.dev_avail)
            sr.dev_avail = sr.dev_avail > pr[bi].dev_bytes ? sr.dev_avail - pr[bi].dev_bytes : 1;
        if (plan_make(s, &sr, &ps[bi]) || (rres && plan_make(s, &rr, &pr[bi]))) { /* the streamed plan's refusal first */
            tool_fail("bench generate");
            goto out;
        }
        budget[bi] = ps[bi].req.hbm; /* within what the GPU gives, where that binds */
        kv_dev[bi] = ps[bi].user_dev;
        slots[bi] = ps[bi].slots;
    }
    for (int bi = 0; bi < nb; bi++) {
        int B = bs[bi];
        tt_gen *gr = NULL, *gs = NULL;
        if (gen_create(&gr, s, &pr[bi]) || gen_create(&gs, s, &ps[bi])) {
            gen_free(gr);
            tool_fail("bench generate");
            goto out;
        }
        uint32_t **pp = tt_xcalloc((size_t)B, sizeof *pp);
        tt_rng r;
        rng_seed(&r, 2024, (uint64_t)B);
        for (int i = 0; i < B; i++) {
            pp[i] = tt_xmalloc((size_t)P * sizeof **pp);
            for (int j = 0; j < P; j++) pp[i][j] = (uint32_t)rng_below(&r, c->vocab);
        }
        uint32_t *tr = tt_xmalloc((size_t)B * N * sizeof *tr), *ts = tt_xmalloc((size_t)B * N * sizeof *ts);
        double dummy[2] = {0, 0};
        /* one untimed run of each (first touches, the host layer cache filled), then alternating rounds */
        rc = timed_run(gr, B, pp, P, N, tr, &dummy[0], &dummy[1]) || timed_run(gs, B, pp, P, N, ts, &dummy[0], &dummy[1]);
        uint64_t io0 = gen_io_bytes(gs);
        for (long k = 0; k < rounds && !rc; k++) {
            rc = timed_run(gs, B, pp, P, N, ts, &res[bi][1][0], &res[bi][1][1]);
            if (!rc) rc = timed_run(gr, B, pp, P, N, tr, &res[bi][0][0], &res[bi][0][1]);
        }
        io[bi] = gen_io_bytes(gs) - io0;
        same[bi] = memcmp(tr, ts, (size_t)B * N * sizeof *tr) == 0;
        for (int i = 0; i < B; i++) free(pp[i]);
        free(pp); free(tr); free(ts);
        gen_free(gr);
        gen_free(gs);
        if (rc) { tool_fail("bench generate"); goto out; }
        fprintf(stderr, "bench generate: batch %d done\n", B);
    }
    char what[MAX_BATCHES][96];
    int ww = 42; /* the run column: as wide as its widest entry */
    for (int bi = 0; bi < nb; bi++) {
        int k = snprintf(what[bi], sizeof what[bi], "streamed, --hbm %s (%d slots, KV %d/%u)",
                         tt_fmt_bytes(budget[bi], hb, sizeof hb), slots[bi], kv_dev[bi], c->n_layers);
        if (k > ww) ww = k;
    }
    printf("  %5s  %-*s %13s %13s %12s\n", "batch", ww, "run", "prompt tok/s", "decode tok/s", "NVMe read");
    for (int bi = 0; bi < nb; bi++) {
        double pt = (double)rounds * bs[bi] * P, dt = (double)rounds * bs[bi] * (N - 1);
        printf("  %5d  %-*s %13.1f %13.1f %12s\n", bs[bi], ww, "resident", pt / res[bi][0][0], dt / res[bi][0][1], "-");
        printf("  %5d  %-*s %13.1f %13.1f %12s%s\n", bs[bi], ww, what[bi], pt / res[bi][1][0], dt / res[bi][1][1],
               tt_fmt_bytes(io[bi], lb, sizeof lb), same[bi] ? "" : "  (tokens differ from the resident run!)");
    }
    for (int bi = 0; bi < nb; bi++)
        printf("  batch %d: decoding streamed / resident throughput %.3f; decode tok/s batch %d / batch %d: %.2f\n",
               bs[bi], res[bi][0][1] / res[bi][1][1], bs[bi], bs[0], (double)bs[bi] * res[0][0][1] / (bs[0] * res[bi][0][1]));
    if (as_json) {
        char *mq = tool_json_quote(model);
        printf("{\"model\":%s,\"device\":\"%s\",\"prompt_tokens\":%d,\"new_tokens\":%d,\"rounds\":%ld,\"runs\":[",
               mq, be_current()->name, P, N, rounds);
        free(mq);
        for (int bi = 0; bi < nb; bi++) {
            double pt = (double)rounds * bs[bi] * P, dt = (double)rounds * bs[bi] * (N - 1);
            printf("%s{\"batch\":%d,\"hbm\":%llu,\"resident_prompt_tps\":%.3f,\"resident_decode_tps\":%.3f,"
                   "\"streamed_prompt_tps\":%.3f,\"streamed_decode_tps\":%.3f,\"io_bytes\":%llu,\"same_tokens\":%s}",
                   bi ? "," : "", bs[bi], (unsigned long long)budget[bi], pt / res[bi][0][0], dt / res[bi][0][1],
                   pt / res[bi][1][0], dt / res[bi][1][1], (unsigned long long)io[bi], same[bi] ? "true" : "false");
        }
        printf("]}\n");
    }
    exit_code = 0;
    for (int bi = 0; bi < nb; bi++) if (!same[bi]) exit_code = 1;
out:
    tier_close(s);
    return exit_code;
}
