/* tools/cmd_plan.c — `tiertrain plan`: the memory plan for a model, a batch
 * shape and the --hbm / --host budgets, the same plan `train` uses. */
#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/lora.h"
#include "core/exec.h"
#include "core/fulltrain.h"
#include "io/storeio.h"
#include "core/generate.h"
#include "kernels/backend.h"
#include "sched/plan.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tool_act_bf16(const char *cmd, const char *act_dtype, const char *device) {
    const char *ad = act_dtype ? act_dtype : "auto";
    if (strcmp(ad, "auto") == 0) return strcmp(device, "cuda") == 0; /* DESIGN.md: bf16 on a GPU */
    if (strcmp(ad, "f32") == 0 || strcmp(ad, "bf16") == 0) return strcmp(ad, "bf16") == 0;
    fprintf(stderr, "tiertrain %s: --act-dtype must be f32, bf16 or auto, not '%s'\n", cmd, ad);
    return -1;
}

int tool_plan_flags(const char *cmd, const tier_store *s, const tool_plan_args *a, tt_plan_req *req) {
    memset(req, 0, sizeof *req);
    if (!(a->dropout >= 0 && (float)a->dropout < 1.0f)) { /* as the float it is used as: 0.99999999999 is 1 */
        fprintf(stderr, "tiertrain %s: --dropout must be in [0, 1) (below 1 - 6e-8, a float's last step)\n", cmd);
        return 2;
    }
    /* train's ranges, the flag that is out of them named: a plan for a run train refuses would mislead */
    const char *bad = a->seq < 2 || a->seq > 1 << 20 ? "--seq must be 2..1048576"
                    : a->micro < 1 || a->micro > TOOL_MICRO_MAX ? "--micro-batch must be 1.." TOOL_MICRO_MAX_S
                    : a->rank < 1 || a->rank > 4096 ? "--rank must be 1..4096"
                    : a->batch_tokens < (uint64_t)(a->seq * a->micro) || a->batch_tokens % (uint64_t)(a->seq * a->micro)
                        ? "--batch-tokens must be a multiple of --seq x --micro-batch"
                        : NULL;
    if (bad) {
        fprintf(stderr, "tiertrain %s: %s\n", cmd, bad);
        return 2;
    }
    /* the products that size memory stay far inside int (a micro-batch's tokens, micro-batches per step) */
    if (a->seq * a->micro > (1L << 24) || a->batch_tokens / (uint64_t)(a->seq * a->micro) > (1u << 20)) {
        if (a->gen_flags) /* a generating command's prompts x prompt chunk */
            fprintf(stderr, "tiertrain %s: a pass over the prompts of a batch takes at most 16M prompt tokens: lower "
                            "%s\n", cmd, a->gen_flags);
        else
            fprintf(stderr, "tiertrain %s: --seq x --micro-batch must be at most 16M tokens and --batch-tokens / "
                            "(--seq x --micro-batch) at most 1048576 micro-batches\n", cmd);
        return 2;
    }
    req->hbm = a->hbm;
    req->host = a->host;
    req->host_avail = tt_mem_available();
    req->what_if = a->planning_only; /* plan: a --host beyond this machine's memory now is kept and noted */
    req->B = (int)a->micro;
    req->seq = (int)a->seq;
    req->gen_flags = a->gen_flags;
    req->K = (int)(a->batch_tokens / (uint64_t)(a->seq * a->micro));
    tt_lora_cfg lora = {(int)a->rank, (float)a->alpha, (float)a->dropout, 0, a->rslora};
    if (lora_parse_targets(a->targets, &lora.targets)) {
        fprintf(stderr, "tiertrain %s: %s\n", cmd, tt_lasterr());
        return 2;
    }
    exec_user(&req->user, &lora, a->clip > 0);
    if ((req->act_bf16 = tool_act_bf16(cmd, a->act_dtype, a->device)) < 0) return 2;
    req->lm_head = strcmp(a->lm_head, "auto") == 0 ? PLAN_HEAD_AUTO : strcmp(a->lm_head, "device") == 0 ? PLAN_HEAD_DEVICE
                 : strcmp(a->lm_head, "host") == 0 ? PLAN_HEAD_HOST : -1;
    if (req->lm_head < 0) {
        fprintf(stderr, "tiertrain %s: --lm-head must be auto, device or host, not '%s'\n", cmd, a->lm_head);
        return 2;
    }
    (void)s;
    const tt_backend *be = a->planning_only ? be_for_planning(a->device) : be_by_name(a->device);
    if (!be) {
        fprintf(stderr, "tiertrain %s: %s\n", cmd, tt_lasterr());
        return 2;
    }
    be_use(be);
    /* planning for a GPU this machine does not have: its memory says nothing of the run's host */
    if (strcmp(be->name, "cuda-estimate") == 0) req->host_avail = 0;
    req->dev_avail = be_dev_avail(); /* a GPU's free memory bounds a plan as the machine's does (0: the CPU's) */
    return 0;
}

/* The smallest plan at each of a few sequence lengths: what --hbm it needs
 * (the arena plus what the backend holds outside it) and its host memory. */
static void plan_sweep(const tier_store *s, const tt_plan_req *req, int as_json) {
    static const int seqs[] = {1024, 2048, 4096, 8192};
    const uint64_t tokens = (uint64_t)req->B * req->seq * req->K;
    char a[32], b[32];
    if (!as_json) {
        printf("smallest plans for %s (%s), micro-batch %d, %llu tokens per step, LoRA rank %d, device %s:\n",
               tier_path(s), tier_config(s)->name, req->B, (unsigned long long)tokens, exec_user_cfg(&req->user).lora.rank,
               be_current()->name);
        printf("  %6s  %13s  %14s  %14s\n", "seq", "micro-batches", "smallest --hbm", "host memory");
    } else {
        printf("{\"model\":\"%s\",\"micro_batch\":%d,\"device\":\"%s\",\"sweep\":[", tier_config(s)->name, req->B,
               be_current()->name);
    }
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        tt_plan_req r = *req;
        r.seq = seqs[i];
        uint64_t per = (uint64_t)r.B * (uint64_t)r.seq;
        r.K = (int)(tokens / per > 0 ? tokens / per : 1);
        uint64_t dev, host;
        plan_minimum(s, &r, &dev, &host);
        uint64_t hbm;
        plan_dev_fits(dev, 0, &hbm);
        hbm = tt_align_up(hbm, 1 << 20);
        if (as_json)
            printf("%s{\"seq\":%d,\"micro_batches\":%d,\"min_hbm\":%llu,\"host\":%llu}", i ? "," : "", r.seq, r.K,
                   (unsigned long long)hbm, (unsigned long long)host);
        else
            printf("  %6d  %13d  %14s  %14s\n", r.seq, r.K, tt_fmt_bytes_up(hbm, a, sizeof a), tt_fmt_bytes_up(host, b, sizeof b));
    }
    if (as_json) printf("]}\n");
}

/* plan --full: as train --full decides, the resident run where --hbm holds it (everything on the device, --host
 * unused), else — or with --stream — the streamed plan (core/fulltrain.c) and its host memory and traffic, which
 * train runs only with --clip 0; with a --teacher, distillation's: the teacher's smallest plan first, the model's
 * in what it leaves (as train). */
static int plan_full(const tier_store *s, const tt_plan_req *lreq, const char *optim, long grank, const char *teacher,
                     int stream, double clip, int as_json) {
    const tt_config *c = tier_config(s);
    if (strcmp(optim, "adamw") != 0 && strcmp(optim, "galore") != 0) {
        fprintf(stderr, "tiertrain plan: --optim must be adamw or galore\n");
        return 2;
    }
    if (grank < 1 || grank > 65536) {
        fprintf(stderr, "tiertrain plan: --galore-rank must be 1..65536\n");
        return 2;
    }
    tt_full_opts o = {0};
    int by_gpu;
    o.micro_batch = lreq->B; o.seq = lreq->seq; o.accum = lreq->K;
    o.hbm = tool_full_hbm("plan --full", lreq->hbm, lreq->dev_avail, lreq->what_if, !as_json, &by_gpu);
    o.host = lreq->host;
    o.optim = strcmp(optim, "galore") == 0 ? FULL_OPTIM_GALORE : FULL_OPTIM_ADAMW;
    o.galore = (tt_galore_cfg){(int)grank, 200, 0.25f, 0};
    o.teacher_path = teacher;
    tt_full_opts so;
    tt_plan p, tp;
    uint64_t rarena, rtotal, master, h2d, d2h, ob, ab, wb;
    if (fulltrain_resident_bytes(s, &o, &rarena)) return tool_fail("plan"); /* first, what train --full refuses */
    const int fits = plan_dev_fits(rarena, o.hbm, &rtotal);
    fulltrain_optim_bytes(c, &o, &ob, &ab, &wb);
    char x[32], y[32], z[32], w[32];
    if (fits && !stream) { /* train --full runs resident */
        if (as_json) {
            printf("{\"hbm\":%llu,\"full\":{\"mode\":\"resident\",\"optim\":\"%s\",\"dev_bytes\":%llu,"
                   "\"optimizer_bytes\":%llu,\"adamw_bytes\":%llu}}\n", (unsigned long long)o.hbm, optim,
                   (unsigned long long)rtotal, (unsigned long long)ob, (unsigned long long)ab);
            return 0;
        }
        char within[64] = "";
        if (o.hbm) snprintf(within, sizeof within, " of --hbm %s", tt_fmt_bytes(o.hbm, w, sizeof w));
        printf("full training of %s (%s), resident: %s on the device%s (f32 weights, their gradients, the optimizer "
               "state, lm_head and activations%s); --host is not used (--stream plans the streamed run)\n",
               tier_config(s)->name, o.optim ? "GaLore" : "AdamW", tt_fmt_bytes(rtotal, x, sizeof x), within,
               teacher ? ", and the --teacher's weights and activations" : "");
        printf("  optimizer state: %s, %.1f%% of AdamW's %s\n", tt_fmt_bytes(ob, y, sizeof y),
               100.0 * (double)ob / (double)ab, tt_fmt_bytes(ab, z, sizeof z));
        return 0;
    }
    if (fulltrain_plans(s, &o, lreq, &so, &tp, &p)) {
        if (by_gpu) tool_full_hbm_refused();
        return tool_fail("plan");
    }
    fulltrain_stream_bytes(s, &o, &p, &master, &h2d, &d2h);
    /* streamed, train --full refuses --clip above 0 (each layer steps right after its backward) */
    char why[160] = "--stream";
    if (!stream)
        snprintf(why, sizeof why, "the resident run needs --hbm %s", tt_fmt_bytes_up(tt_align_up(rtotal, 1 << 20), x,
                                                                                     sizeof x));
    if (as_json) { /* one object: the plan's fields (as plan --json prints them), then "teacher" and "full" */
        char *pj = NULL;
        size_t pn = 0;
        FILE *m = open_memstream(&pj, &pn);
        TT_ASSERT(m);
        plan_print_json(s, &p, m);
        fclose(m);
        TT_ASSERT(pn > 0 && pj[pn - 1] == '}');
        printf("%.*s", (int)(pn - 1), pj);
        free(pj);
        if (teacher) {
            char *tq = tool_json_quote(teacher);
            printf(",\"teacher\":{\"path\":%s,\"dev_bytes\":%llu,\"host_bytes\":%llu,\"slots\":%d,\"layers\":%d}",
                   tq, (unsigned long long)tp.dev_bytes, (unsigned long long)tp.host_bytes, tp.slots, tp.L);
            free(tq);
        }
        printf(",\"full\":{\"mode\":\"streamed\",\"optim\":\"%s\",\"resident_bytes\":%llu,\"needs_clip_0\":%s,"
               "\"master_bytes\":%llu,\"optimizer_bytes\":%llu,\"adamw_bytes\":%llu,"
               "\"host_bytes\":%llu,\"nvme_first_step\":%llu,\"nvme_per_step\":%llu,\"h2d_per_step\":%llu,"
               "\"d2h_per_step\":%llu}}\n", optim, (unsigned long long)rtotal, clip > 0 ? "true" : "false",
               (unsigned long long)master, (unsigned long long)ob,
               (unsigned long long)ab, (unsigned long long)p.host_bytes, (unsigned long long)p.io_bytes_first,
               (unsigned long long)p.io_bytes_step, (unsigned long long)h2d, (unsigned long long)d2h);
        return 0;
    }
    plan_print(s, &p, stdout);
    if (teacher)
        printf("distillation from %s: the teacher's plan, on its own stream, holds %d of %d layers on the device, "
               "%s of the device and %s of the host beside the model's above%s\n", teacher, tp.slots, tp.L,
               tt_fmt_bytes(tp.dev_bytes, x, sizeof x), tt_fmt_bytes(tp.host_bytes, y, sizeof y),
               o.hbm || o.host ? " (its smallest, taken out of --hbm / --host first)" : "");
    printf("full training (%s), streamed: each layer's f32 master weights and optimizer state in the host arena, "
           "its update right after its backward\n", o.optim ? "GaLore" : "AdamW");
    if (o.optim) printf("  GaLore rank %ld on the projections whose state it makes smaller, AdamW on the rest\n", grank);
    printf("  master weights (f32, host cache): %s; optimizer state (host arena): %s, %.1f%% of AdamW's %s\n",
           tt_fmt_bytes(master, x, sizeof x), tt_fmt_bytes(ob, y, sizeof y), 100.0 * (double)ob / (double)ab,
           tt_fmt_bytes(ab, z, sizeof z));
    printf("  host memory: %s pinned; NVMe: %s read once at the start, %s per step\n",
           tt_fmt_bytes(p.host_bytes, x, sizeof x), tt_fmt_bytes(p.io_bytes_first, y, sizeof y),
           tt_fmt_bytes(p.io_bytes_step, z, sizeof z));
    printf("  host<->device per step: %s to the device, %s back\n", tt_fmt_bytes(h2d, w, sizeof w),
           tt_fmt_bytes(d2h, x, sizeof x));
    if (clip > 0)
        printf("note: streamed (%s), train --full steps each layer right after its backward and cannot clip by the "
               "global gradient norm: run it with --clip 0\n", why);
    return 0;
}

/* --preset NAME [--prune-ratio R] [--quant Q]: the store synth would write, described without a file. */
static int describe_preset(const char *preset, double ratio, const char *quant, tier_store **s) {
    tt_config c;
    if (config_preset(preset, &c)) return tool_fail("plan");
    if (ratio > 0) {
        uint32_t a, b;
        config_default_prune_layers(&c, &a, &b);
        if (config_prune(&c, ratio, a, b)) return tool_fail("plan");
    } else if (ratio < 0 || ratio >= 1) {
        fprintf(stderr, "tiertrain plan: --prune-ratio must be in [0,1)\n");
        return 2;
    }
    uint32_t lin = strcmp(quant, "bf16") == 0 ? TT_DTYPE_BF16 : strcmp(quant, "f32") == 0 ? TT_DTYPE_F32
                 : strcmp(quant, "nf4") == 0 ? TT_DTYPE_NF4DQ : 0;
    if (!lin) {
        fprintf(stderr, "tiertrain plan: --quant must be nf4, bf16 or f32, not '%s'\n", quant);
        return 2;
    }
    uint32_t *dt = tt_xcalloc(config_n_tensors(&c), sizeof *dt);
    store_default_dtypes(&c, lin, lin == TT_DTYPE_F32 ? TT_DTYPE_F32 : TT_DTYPE_BF16, dt);
    char name[160];
    snprintf(name, sizeof name, "%s%s (%s, described: not on disk)", preset, ratio > 0 ? " pruned" : "", quant);
    int rc = tier_describe(s, &c, dt, name);
    free(dt);
    return rc ? tool_fail("plan") : 0;
}

/* The plan request for a: tool_plan_flags, the prediction's measurements and,
 * with --generate, generation's request (KV caches of context positions).
 * Returns 0, or 2 after printing a usage error. */
static int plan_request(const tier_store *s, const tool_plan_args *a, int generate, long context, double io_gbps,
                        double gflops, tt_plan_req *req) {
    int rc = tool_plan_flags("plan", s, a, req);
    if (rc) return rc;
    req->io_gbps = io_gbps;
    req->gflops = gflops;
    if (generate) {
        tt_lora_cfg lora = exec_user_cfg(&req->user).lora;
        lora.dropout = 0;
        gen_plan_req(req, s, &lora, req->B, req->seq, (int)context);
    }
    return 0;
}

/* Does a's request fit at rank? dev_only: judged as --hbm judges the smallest
 * plan (the device alone, whatever the host has); else plan_make's verdict
 * for a's command (a run plans a --host beyond the memory available now
 * within that memory, plan keeps it as given). */
static int fits_at(const tier_store *s, const tool_plan_args *a, long rank, int dev_only, int generate, long context,
                   double io_gbps, double gflops) {
    tool_plan_args b = *a;
    b.rank = rank;
    b.planning_only = 1; /* a what-if: no backend is started for it */
    tt_plan_req r;
    if (plan_request(s, &b, generate, context, io_gbps, gflops, &r)) return 0;
    r.what_if = a->planning_only;
    if (dev_only) {
        uint64_t dev, host, total;
        plan_minimum(s, &r, &dev, &host);
        return plan_dev_fits(dev, r.hbm, &total);
    }
    tt_plan p;
    return plan_make(s, &r, &p) == 0;
}

uint64_t tool_full_hbm(const char *who, uint64_t hbm, uint64_t dev_avail, int what_if, int say, int *by_gpu) {
    const uint64_t b = plan_hbm_bound(hbm, dev_avail, what_if);
    *by_gpu = b != hbm;
    char gb[32];
    if (*by_gpu && say)
        printf("%s: %s; planned within the %s the GPU can give this process now, as --hbm\n", who,
               hbm ? "--hbm is more than the GPU can give" : "no --hbm given", tt_fmt_bytes(b, gb, sizeof gb));
    return b;
}

void tool_full_hbm_refused(void) {
    tt_seterr("%s (that --hbm is what the GPU can give this process now: free GPU memory to raise it)", tt_lasterr());
}

void tool_plan_gpu_note(const char *cmd, const tt_plan *plan) {
    if (!plan->hbm_from_avail) return;
    char h[32], w[96];
    if (plan->slots < plan->L)
        snprintf(w, sizeof w, "%d of %d layer slots: the others stream from host memory", plan->slots, plan->L);
    else
        snprintf(w, sizeof w, "every layer on the device, some of the rest in host memory");
    fprintf(stderr, "tiertrain %s: note: planned within --hbm %s, the most the GPU can give this process now (%s)\n",
            cmd, tt_fmt_bytes(plan->req.hbm, h, sizeof h), w);
}

void tool_plan_rank_hint(const tier_store *s, const tool_plan_args *a, int generate, long context, double io_gbps,
                         double gflops) {
    if (a->rank <= 1) return;
    char saved[1024], x[32], y[32], budget[96];
    snprintf(saved, sizeof saved, "%s", tt_lasterr());
    /* a run's GPU binds it as an --hbm of what it can give now (plan_make), where no --hbm or a larger one is given:
     * the hint is in those terms (raising --hbm cannot help then) */
    tool_plan_args capped = *a;
    capped.hbm = plan_hbm_bound(a->hbm, a->planning_only ? 0 : be_dev_avail(), 0);
    const int from_gpu = capped.hbm != a->hbm;
    if (from_gpu) a = &capped;
    /* a --host beyond the memory available now binds a run as that memory does (plan_make) */
    uint64_t hcap = a->host, avail = a->host && !a->planning_only ? tt_mem_available() : 0;
    if (avail && hcap > avail) hcap = 0;
    /* which check refused: --hbm's (the smallest plan's device bytes), or the host's after it */
    int dev_only = a->hbm && !fits_at(s, a, a->rank, 1, generate, context, io_gbps, gflops);
    if (!fits_at(s, a, 1, dev_only, generate, context, io_gbps, gflops)) {
        tt_seterr("%s", saved);
        return;
    }
    long lo = 1, hi = a->rank; /* rank lo fits, rank hi does not */
    while (hi - lo > 1) {
        long mid = lo + (hi - lo) / 2;
        if (fits_at(s, a, mid, dev_only, generate, context, io_gbps, gflops)) lo = mid;
        else hi = mid;
    }
    /* the other way out: the budgets that hold --rank as given: --hbm for its smallest plan (when that refused),
     * and --host for the plan at that --hbm with no layer cached in host memory (when --host is given and short) */
    char raise[128] = "", hbm_s[48] = "", host_s[48] = "";
    tool_plan_args b = *a;
    b.planning_only = 1;
    tt_plan_req r;
    if ((dev_only || hcap) && plan_request(s, &b, generate, context, io_gbps, gflops, &r) == 0) {
        if (dev_only && !from_gpu) {
            uint64_t dev, host, total;
            plan_minimum(s, &r, &dev, &host);
            plan_dev_fits(dev, 0, &total);
            r.hbm = tt_align_up(total, 1 << 20);
            snprintf(hbm_s, sizeof hbm_s, "--hbm to %s", tt_fmt_bytes_up(r.hbm, x, sizeof x));
        }
        tt_plan p;
        r.host = 0;
        r.host_avail = 0; /* what --host would have to be, whatever this machine has now */
        r.no_host_cache = 1;
        if (hcap && plan_make(s, &r, &p) == 0 && p.host_bytes > hcap)
            snprintf(host_s, sizeof host_s, "--host to %s", tt_fmt_bytes_up(tt_align_up(p.host_bytes, 1 << 20), y, sizeof y));
        if (*hbm_s || *host_s)
            snprintf(raise, sizeof raise, ", or raise %s%s%s", hbm_s, *hbm_s && *host_s ? " and " : "", host_s);
    }
    if (from_gpu && (dev_only || !hcap))
        snprintf(budget, sizeof budget, "what the GPU can give now (--hbm %s)", tt_fmt_bytes(a->hbm, x, sizeof x));
    else if (dev_only || (a->hbm && !hcap))
        snprintf(budget, sizeof budget, "--hbm %s", tt_fmt_bytes(a->hbm, x, sizeof x));
    else if (a->hbm && hcap)
        snprintf(budget, sizeof budget, "%s %s and --host %s", from_gpu ? "what the GPU can give now, --hbm" : "--hbm",
                 tt_fmt_bytes(a->hbm, x, sizeof x), tt_fmt_bytes(hcap, y, sizeof y));
    else if (hcap)
        snprintf(budget, sizeof budget, "--host %s", tt_fmt_bytes(hcap, x, sizeof x));
    else
        snprintf(budget, sizeof budget, "the memory the machine has available now");
    tt_seterr("--rank %ld is too large for %s: the LoRA state at that rank (its adapters%s) does not fit %s, where "
              "rank 1 does; lower --rank to %ld or less%s", a->rank, tier_config(s)->name,
              generate ? "" : ", their gradients and optimizer moments", budget, lo, raise);
}

int cmd_plan(int argc, char **argv) {
    const char *model, *preset, *quant, *optim, *teacher;
    tool_plan_args a = {0};
    double io_gbps, gflops, prune_ratio;
    int as_json, sweep, generate, full, full_stream;
    long context, grank;
    cli_opt opts[] = {
        {"model", 'm', CLI_STR, &model, NULL, "FILE", "model store (.tier) (this or --preset)"},
        {"preset", 0, CLI_STR, &preset, NULL, "NAME", "instead of --model: the store `synth --preset NAME` would write, described without a file (tiny small llama2-7b llama2-13b llama2-70b llama3.1-8b llama3.1-70b)"},
        {"prune-ratio", 0, CLI_FLOAT, &prune_ratio, "0", "R", "with --preset: LoRAM structured pruning ratio (0: unpruned)"},
        {"quant", 0, CLI_STR, &quant, "nf4", "Q", "with --preset: the projections' dtype, nf4 (synth's default), bf16 or f32; with --full bf16 unless given (NF4 weights cannot be trained whole)"},
        {"full", 0, CLI_FLAG, &full, NULL, NULL, "plan full-parameter training (train --full) instead of LoRA: resident where --hbm holds every weight, gradient and optimizer state, else streamed (f32 master weights and optimizer state in the host arena; train needs --clip 0 then)"},
        {"stream", 0, CLI_FLAG, &full_stream, NULL, NULL, "with --full: plan the streamed run even where the resident one fits (train --full --stream)"},
        {"optim", 0, CLI_STR, &optim, "adamw", "NAME", "with --full: adamw or galore"},
        {"galore-rank", 0, CLI_INT, &grank, "128", "R", "with --full --optim galore: the projection rank"},
        {"teacher", 0, CLI_STR, &teacher, NULL, "FILE", "with --full: plan distillation from this store, as train --full --teacher (the teacher's smallest plan first, the model's in what it leaves of --hbm and --host)"},
        TOOL_PLAN_OPTS(a),
        {"io-gbps", 0, CLI_FLOAT, &io_gbps, "0", "X", "measured NVMe read GB/s for the step-time prediction (bench io)"},
        {"gflops", 0, CLI_FLOAT, &gflops, "0", "X", "measured compute GFLOP/s for the prediction (bench overlap)"},
        {"sweep", 0, CLI_FLAG, &sweep, NULL, NULL, "instead of one plan: the smallest --hbm (and the host memory it needs) at seq 1024, 2048, 4096 and 8192, with --micro-batch and --batch-tokens as given (at least one micro-batch per step)"},
        {"generate", 0, CLI_FLAG, &generate, NULL, NULL, "plan text generation (tiertrain generate) instead of training: --micro-batch prompts per batch, --seq prompt tokens per pass, KV caches of --context positions (--batch-tokens does not apply); --rank/--targets are the adapter's"},
        {"context", 0, CLI_INT, &context, "4096", "N", "with --generate: KV cache positions per prompt"},
        {"json", 0, CLI_FLAG, &as_json, NULL, NULL, "print one JSON object"},
        {0},
    };
    cli_cmd cmd = {"plan", NULL,
                   "Prints the memory plan (each region, bytes, tier), the slot count, prefetch depth, spill amount "
                   "and a predicted step time; refuses an impossible budget with the smallest that works.",
                   opts, 0, 0, "tiertrain plan --model small.tier --hbm 24M --host 1G --seq 128 --batch-tokens 4096 --micro-batch 1"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    if (!model == !preset) {
        fprintf(stderr, "tiertrain plan: give --model FILE or --preset NAME (one of them)\n");
        return 2;
    }
    if (full && (generate || sweep)) {
        fprintf(stderr, "tiertrain plan: --full goes with neither --generate nor --sweep\n");
        return 2;
    }
    if (teacher && !full) {
        fprintf(stderr, "tiertrain plan: --teacher plans full training's distillation: add --full\n");
        return 2;
    }
    if (full_stream && !full) {
        fprintf(stderr, "tiertrain plan: --stream plans full training's streamed run: add --full (LoRA plans always "
                        "stream)\n");
        return 2;
    }
    if (io_gbps < 0 || gflops < 0) { /* a rate is measured (bench io, bench overlap) or not given: 0 */
        fprintf(stderr, "tiertrain plan: %s must be a measured rate above 0 (or 0: none), not %g\n",
                io_gbps < 0 ? "--io-gbps" : "--gflops", io_gbps < 0 ? io_gbps : gflops);
        return 2;
    }
    if (model && (prune_ratio != 0 || cli_given(&quant))) { /* they describe the store --preset makes; --model's is
                                                             * on disk */
        fprintf(stderr, "tiertrain plan: %s goes with --preset; --model %s is planned as it is (prune or quantize it "
                        "first to plan that)\n", prune_ratio != 0 ? "--prune-ratio" : "--quant", model);
        return 2;
    }
    tier_store *s;
    if (preset) {
        if ((rc = describe_preset(preset, prune_ratio, full && !cli_given(&quant) ? "bf16" : quant, &s))) return rc;
    } else if (tier_open(&s, model)) return tool_fail("plan");
    if (generate && (sweep || context < 2 || context > 1 << 20)) {
        fprintf(stderr, "tiertrain plan: %s\n", sweep ? "--generate and --sweep do not go together"
                                                   : "--context must be 2..1048576");
        tier_close(s);
        return 2;
    }
    /* --batch-tokens is training's (a step of micro-batches): --generate plans passes of --micro-batch prompts of
     * --seq tokens, whatever it says */
    if (generate && a.seq > 0 && a.micro > 0) a.batch_tokens = (uint64_t)a.seq * (uint64_t)a.micro;
    tt_plan_req req;
    a.planning_only = 1;
    if (generate) a.gen_flags = "--micro-batch / --seq / --context"; /* what plan --generate sizes with */
    rc = plan_request(s, &a, generate, context, io_gbps, gflops, &req);
    if (rc) { tier_close(s); return rc; }
    if (full) {
        rc = plan_full(s, &req, optim, grank, teacher, full_stream, a.clip, as_json);
        tier_close(s);
        return rc;
    }
    if (sweep) {
        plan_sweep(s, &req, as_json);
        tier_close(s);
        return 0;
    }
    tt_plan p;
    if (plan_make(s, &req, &p)) {
        tool_plan_rank_hint(s, &a, generate, context, io_gbps, gflops);
        tier_close(s);
        return tool_fail("plan");
    }
    if (as_json) {
        plan_print_json(s, &p, stdout);
        fputc('\n', stdout);
    } else {
        plan_print(s, &p, stdout);
    }
    tier_close(s);
    return 0;
}
