/* tools/cmd_plan.c — `tiertrain plan`: the memory plan for a model, a batch
 * shape and the --hbm / --host budgets, the same plan `train` uses. */
#include "core/base/common.h"
#include "core/lora.h"
#include "core/exec.h"
#include "core/generate.h"
#include "kernels/backend.h"
#include "sched/plan.h"
#include "tools/cli.h"
#include "tools/tools.h"

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
    if (a->seq < 2 || a->micro < 1 || a->rank < 1 || a->batch_tokens < (uint64_t)(a->seq * a->micro) ||
        a->batch_tokens % (uint64_t)(a->seq * a->micro)) {
        fprintf(stderr, "tiertrain %s: --seq >= 2, --micro-batch >= 1, --rank >= 1, and --batch-tokens a multiple of "
                        "--seq x --micro-batch\n", cmd);
        return 2;
    }
    /* the products that size memory stay far inside int (a micro-batch's tokens, micro-batches per step) */
    if (a->seq * a->micro > (1L << 24) || a->batch_tokens / (uint64_t)(a->seq * a->micro) > (1u << 20)) {
        fprintf(stderr, "tiertrain %s: --seq x --micro-batch must be at most 16M tokens and --batch-tokens / (--seq x "
                        "--micro-batch) at most 1048576 micro-batches\n", cmd);
        return 2;
    }
    req->hbm = a->hbm;
    req->host = a->host;
    req->host_avail = a->host ? 0 : tt_mem_available();
    req->B = (int)a->micro;
    req->seq = (int)a->seq;
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
            printf("  %6d  %13d  %14s  %14s\n", r.seq, r.K, tt_fmt_bytes(hbm, a, sizeof a), tt_fmt_bytes(host, b, sizeof b));
    }
    if (as_json) printf("]}\n");
}

int cmd_plan(int argc, char **argv) {
    const char *model;
    tool_plan_args a = {0};
    double io_gbps, gflops;
    int as_json, sweep, generate;
    long context;
    cli_opt opts[] = {
        {"model", 'm', CLI_STR, &model, NULL, "FILE", "model store (.tier) (required)"},
        TOOL_PLAN_OPTS(a),
        {"io-gbps", 0, CLI_FLOAT, &io_gbps, "0", "X", "measured NVMe read GB/s for the step-time prediction (bench io)"},
        {"gflops", 0, CLI_FLOAT, &gflops, "0", "X", "measured compute GFLOP/s for the prediction (bench overlap)"},
        {"sweep", 0, CLI_FLAG, &sweep, NULL, NULL, "instead of one plan: the smallest --hbm (and the host memory it needs) at seq 1024, 2048, 4096 and 8192, with --micro-batch and --batch-tokens as given (at least one micro-batch per step)"},
        {"generate", 0, CLI_FLAG, &generate, NULL, NULL, "plan text generation (tiertrain generate) instead of training: --micro-batch prompts per batch, --seq prompt tokens per pass, KV caches of --context positions; --rank/--targets are the adapter's"},
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
    if (!model) {
        fprintf(stderr, "tiertrain plan: --model FILE is required\n");
        return 2;
    }
    tier_store *s;
    if (tier_open(&s, model)) return tool_fail("plan");
    tt_plan_req req;
    a.planning_only = 1;
    rc = tool_plan_flags("plan", s, &a, &req);
    if (rc) { tier_close(s); return rc; }
    req.io_gbps = io_gbps;
    req.gflops = gflops;
    if (generate) {
        if (sweep || context < 2 || context > 1 << 20) {
            fprintf(stderr, "tiertrain plan: %s\n", sweep ? "--generate and --sweep do not go together"
                                                       : "--context must be 2..1048576");
            tier_close(s);
            return 2;
        }
        tt_lora_cfg lora = exec_user_cfg(&req.user).lora;
        lora.dropout = 0;
        gen_plan_req(&req, s, &lora, req.B, req.seq, (int)context);
    }
    if (sweep) {
        plan_sweep(s, &req, as_json);
        tier_close(s);
        return 0;
    }
    tt_plan p;
    if (plan_make(s, &req, &p)) {
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
