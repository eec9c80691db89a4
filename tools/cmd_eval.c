/* tools/cmd_eval.c — `tiertrain eval`: the perplexity of a store, with an
 * optional LoRA adapter, on a token file, streamed through the same executor
 * (and so under the same --hbm/--host budgets) as training. */
#include "core/base/common.h"
#include "core/loram.h"
#include "core/tokfile.h"
#include "core/train.h"
#include "io/peft.h"
#include "core/exec.h"
#include "sched/plan.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* train_eval counts tokens in an int, so a long file is evaluated in slices
 * of at most this many tokens (whole passes, so no slice is padded but the last). */
#define EVAL_SLICE_TOKENS (1u << 30)

/* A progress line on stderr for evaluations that take over a second:
 * rewritten in place on a terminal, one line per 10% otherwise. */
typedef struct eval_progress {
    double t0, last;
    int decile, tty, shown;
} eval_progress;

static void eval_progress_show(eval_progress *p, uint64_t done, uint64_t total, double loss_sum) {
    double now = tt_now();
    int decile = (int)(10 * done / total);
    if (done == total || now - p->t0 < 1.0 || (p->tty ? now - p->last < 0.5 : decile <= p->decile)) return;
    fprintf(stderr, "%seval: %llu / %llu tokens (%.0f%%), loss so far %.4f, ETA %.0fs%s", p->tty ? "\r" : "",
            (unsigned long long)done, (unsigned long long)total, 100.0 * (double)done / (double)total,
            loss_sum / (double)done, (now - p->t0) * (double)(total - done) / (double)done, p->tty ? "   " : "\n");
    p->last = now;
    p->decile = decile;
    p->shown = 1;
}

/* Ends a progress line left open on a terminal. */
static void eval_progress_end(const eval_progress *p) {
    if (p->tty && p->shown) fputc('\n', stderr);
}

int cmd_eval(int argc, char **argv) {
    const char *model, *adapter, *data;
    uint64_t max_tokens = 0; /* 0: all (CLI_SIZE options without a default keep their value) */
    tool_plan_args pa = {0};
    int as_json;
    cli_opt opts[] = {
        {"model", 'm', CLI_STR, &model, NULL, "FILE", "model store (.tier) (required)"},
        {"adapter", 'a', CLI_STR, &adapter, NULL, "DIR", "PEFT adapter with the store's shapes (default: none, the bare model)"},
        {"data", 'd', CLI_STR, &data, NULL, "FILE", "tokens from `tiertrain tokenize` (required)"},
        {"max-tokens", 0, CLI_SIZE, &max_tokens, NULL, "N",
         "evaluate the first N predicted tokens, rounded up to whole --seq windows (default: all)"},
        /* the budget and batch-shape flags of train, less the LoRA ones (the adapter fixes rank, alpha and targets) */
        {"hbm", 0, CLI_SIZE, &pa.hbm, "0", "SIZE", "device memory budget, e.g. 8G (0: unlimited, every layer resident)"},
        {"host", 0, CLI_SIZE, &pa.host, "0", "SIZE", "pinned host memory budget (0: unlimited)"},
        {"seq", 0, CLI_INT, &pa.seq, "256", "N",
         "tokens per window: the data is cut into consecutive windows, each token predicted from its window's earlier ones"},
        {"micro-batch", 0, CLI_INT, &pa.micro, "4", "N", "windows per micro-batch"},
        {"batch-tokens", 0, CLI_SIZE, &pa.batch_tokens, "4096", "N",
         "tokens per pass over the layers (a multiple of seq * micro-batch); each layer load serves them all"},
        {"lm-head", 0, CLI_STR, &pa.lm_head, "auto", "WHERE", "lm_head on the device, streamed from the host, or auto"},
        {"device", 0, CLI_STR, &pa.device, "cpu", "NAME", "compute backend: cpu, cpu-async (asynchronous queues, for testing) or cuda"},
        {"act-dtype", 0, CLI_STR, &pa.act_dtype, "auto", "T", "activations and the workspace: f32, bf16 or auto (as train's)"},
        {"json", 0, CLI_FLAG, &as_json, NULL, NULL, "print one JSON object instead of text"},
        {0},
    };
    cli_cmd cmd = {"eval", NULL,
                   "Prints the mean loss (nats/token) and perplexity of a store, with an optional LoRA adapter, on a "
                   "token file, streamed like training under the --hbm/--host budgets.",
                   opts, 0, 0, "tiertrain eval --model tiny.tier --adapter run1 --data corpus.tok.val --seq 128"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    const char *missing = !model ? "--model FILE" : !data ? "--data FILE" : NULL;
    if (missing) {
        fprintf(stderr, "tiertrain eval: %s is required (see tiertrain eval --help)\n", missing);
        return 2;
    }
    const char *bad = NULL;
    if (pa.seq < 2 || pa.seq > 1 << 20) bad = "--seq must be 2..1048576";
    else if (pa.micro < 1 || pa.micro > 65536 || (int64_t)pa.micro * pa.seq > (1 << 24))
        bad = "--micro-batch must be at least 1, with --seq x --micro-batch at most 16M tokens";
    else if (pa.batch_tokens > EVAL_SLICE_TOKENS) bad = "--batch-tokens must be at most 1G";
    else if (pa.batch_tokens < (uint64_t)(pa.seq * pa.micro) || pa.batch_tokens % (uint64_t)(pa.seq * pa.micro))
        bad = "--batch-tokens must be a multiple of --seq x --micro-batch (lower --seq or --micro-batch, or raise "
              "--batch-tokens)";
    if (bad) {
        fprintf(stderr, "tiertrain eval: %s\n", bad);
        return 2;
    }
    /* placeholders for tool_plan_flags' LoRA fields; the LoRA is set below */
    pa.rank = 1;
    pa.alpha = 1;
    pa.targets = "all";
    pa.clip = 0; /* no optimizer: one layer's gradient buffer is enough */

    tokfile *tf = NULL;
    tt_tokens exs = {0}; /* a version-2 file's examples */
    tier_store *st = NULL;
    peft_adapter a = {0};
    tt_exec *ex = NULL;
    int exit_code = 1;
    if (tokfile_open(data, &tf)) { tool_fail("eval"); goto done; }
    if (tier_open(&st, model)) { tool_fail("eval"); goto done; }
    const tt_config *c = tier_config(st);
    if (adapter && (peft_read(adapter, 0, &a) || loram_check_adapter(&a, adapter, c, model) ||
                    loram_check_base(&a, adapter, c, tier_prune(st), model))) {
        tool_fail("eval");
        goto done;
    }
    tt_plan_req req;
    if ((rc = tool_plan_flags("eval", st, &pa, &req))) { exit_code = rc; goto done; }
    /* The executor always carries a LoRA. Without an adapter it is rank 1 on
     * q_proj with B = 0 (PEFT's initialisation, which exec_create applies):
     * its term is exactly zero, so this is the bare model at the least cost. */
    tt_lora_cfg lora = adapter ? (tt_lora_cfg){(int)a.rank, a.alpha, 0.f, a.target_mask, a.rslora}
                               : (tt_lora_cfg){1, 1.f, 0.f, 1u << TT_PROJ_Q, 0};
    exec_user(&req.user, &lora, exec_user_cfg(&req.user).defer_optimizer);

    /* Windows of seq + 1 tokens, consecutive (each starts where the last one's
     * targets ended), as train_eval cuts them; examples (a version-2 file): each
     * its own row, scored on its response tokens only. */
    const uint64_t S = (uint64_t)pa.seq, n = tokfile_count(tf);
    const uint32_t *tok = tokfile_tokens(tf);
    exs = (tt_tokens){.t = tok, .n = n, .flags = tokfile_flags(tf)};
    train_index_examples(&exs);
    uint64_t windows = 0, count = 0;
    if (exs.flags) { /* the targets scored: each example's within its first S + 1 tokens, up to max_tokens */
        for (uint64_t i = 0; i < exs.n_ex && (!max_tokens || count < max_tokens); i++)
            count += train_example_targets(&exs, i, (int)S);
        if (count == 0) {
            fprintf(stderr, "tiertrain eval: %s holds no response token within --seq %llu + 1 tokens of an example's "
                            "start; raise --seq\n", data, (unsigned long long)S);
            goto done;
        }
    } else if (n < S + 1) {
        fprintf(stderr, "tiertrain eval: %s holds %llu tokens but one window needs --seq + 1 = %llu; lower --seq\n",
                data, (unsigned long long)n, (unsigned long long)(S + 1));
        goto done;
    }
    if (!exs.flags) {
        windows = (n - 1) / S;
        if (max_tokens && tt_div_up(max_tokens, S) < windows) windows = tt_div_up(max_tokens, S);
        count = windows * S;
    }
    if (tokfile_vocab(tf) > c->vocab) /* the ids the model will see must index its embedding */
        for (uint64_t i = 0; i < (exs.flags ? n : windows * S + 1); i++)
            if (tok[i] >= c->vocab) {
                fprintf(stderr, "tiertrain eval: %s holds token %u at position %llu, outside the vocabulary of %s (%u "
                                "tokens); tokenize with the model's tokenizer\n",
                        data, tok[i], (unsigned long long)i, model, c->vocab);
                goto done;
            }

    tt_plan plan;
    if (plan_make(st, &req, &plan)) { tool_fail("eval"); goto done; }
    if (exec_create(&ex, model, &plan, 1, NULL)) { tool_fail("eval"); goto done; }
    if (adapter && loram_load_lora(exec_lora(ex), &a)) { tool_fail("eval"); goto done; }
    /* Slices of whole executor passes (so only the last is padded): about a
     * hundred of them, for the progress line, each under train_eval's int count. */
    double sum = 0;
    if (exs.flags) { /* one pass of train_eval over the examples: the mean over their targets */
        double l;
        if (train_eval(ex, &exs, count > INT32_MAX ? INT32_MAX : (int)count, &l)) { tool_fail("eval"); goto done; }
        sum = l * (double)count;
    }
    const uint64_t pass = (uint64_t)plan.req.K * (uint64_t)plan.req.B;
    uint64_t per = windows / (pass * 100);
    if (per > EVAL_SLICE_TOKENS / (pass * S)) per = EVAL_SLICE_TOKENS / (pass * S);
    per = pass * (per ? per : 1);
    eval_progress prog = {tt_now(), 0, 0, isatty(2) && !exs.flags, 0};
    for (uint64_t w0 = 0; w0 < windows; w0 += per) {
        uint64_t w = windows - w0 < per ? windows - w0 : per;
        /* exactly w windows: w * S + 1 tokens, at most w * S of them predicted */
        tt_tokens slice = {.t = tok + w0 * S, .n = w * S + 1};
        double l;
        if (train_eval(ex, &slice, (int)(w * S), &l)) { eval_progress_end(&prog); tool_fail("eval"); goto done; }
        sum += l * (double)(w * S);
        eval_progress_show(&prog, (w0 + w) * S, count, sum);
    }
    eval_progress_end(&prog);
    double loss = sum / (double)count, ppl = exp(loss);
    if (!isfinite(loss)) {
        fprintf(stderr, "tiertrain eval: the loss of %s%s%s on %s is not finite: the model's weights hold inf/NaN "
                        "or its activations overflow; check the store with tiertrain verify\n",
                model, adapter ? " + " : "", adapter ? adapter : "", data);
        goto done;
    }
    if (as_json) {
        json_t *o = json_pack("{s:f, s:f, s:I, s:s, s:s?}", "loss", loss, "perplexity", ppl, "tokens",
                              (json_int_t)count, "model", model, "adapter", adapter);
        char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!txt) { /* JSON has no infinity, and its strings must be UTF-8 */
            fprintf(stderr, "tiertrain eval: cannot print --json: the perplexity (exp %.4f) overflows or a path is not "
                            "valid UTF-8; run without --json\n", loss);
            goto done;
        }
        printf("%s\n", txt);
        free(txt);
    } else {
        printf("eval: loss %.4f nats/token, perplexity %.3f over %llu tokens\n", loss, ppl, (unsigned long long)count);
    }
    exit_code = 0;
done:
    train_free_examples(&exs);
    exec_free(ex);
    peft_free(&a);
    tier_close(st);
    tokfile_close(tf);
    return exit_code;
}
