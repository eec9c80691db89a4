/* tools/cmd_eval.c — `tiertrain eval`: a store, with an optional LoRA adapter,
 * scored under the same --hbm/--host budgets as training.
 *
 *   --data FILE   the perplexity of a token file, through the training
 *                 executor (--per-token OUT: each scored token's log-prob);
 *   --task FILE   lm-evaluation-harness style tasks, one JSON object a line:
 *                 multiple choice and generative exact match
 *                 (tools/cmd_eval_task.c).
 *
 * This file holds the options, the setup both share (tools/cmd_eval.h) and
 * --data. */
#include "tools/cmd_eval.h"

#include "core/base/common.h"
#include "core/exec.h"
#include "core/loram.h"
#include "core/tokfile.h"
#include "core/train.h"
#include "io/atomicfile.h"
#include "io/peft.h"
#include "sched/plan.h"
#include "tools/cli.h"
#include "tools/gen_common.h"
#include "tools/tools.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* train_eval counts tokens in an int, so a long file is evaluated in slices
 * of at most this many tokens (whole passes, so no slice is padded but the last). */
#define EVAL_SLICE_TOKENS (1u << 30)

/* ---- what --data and --task share (tools/cmd_eval.h) ------------------------- */

void eval_progress_show(eval_progress *p, uint64_t done, uint64_t total, const char *unit, double loss_sum) {
    double now = tt_now();
    int decile = (int)(10 * done / total);
    if (done == total || now - p->t0 < 1.0 || (p->tty ? now - p->last < 0.5 : decile <= p->decile)) return;
    char loss[64] = "";
    if (!isnan(loss_sum)) snprintf(loss, sizeof loss, ", loss so far %.4f", loss_sum / (double)done);
    fprintf(stderr, "%seval: %llu / %llu %s (%.0f%%)%s, ETA %.0fs%s", p->tty ? "\r" : "", (unsigned long long)done,
            (unsigned long long)total, unit, 100.0 * (double)done / (double)total, loss,
            (now - p->t0) * (double)(total - done) / (double)done, p->tty ? "   " : "\n");
    p->last = now;
    p->decile = decile;
    p->shown = 1;
}

void eval_progress_end(const eval_progress *p) {
    if (p->tty && p->shown) fputc('\n', stderr);
}

int eval_exec_open(const eval_setup *es, const tool_plan_args *pa, tt_plan *plan, tt_exec **ex) {
    tt_plan_req req;
    int rc = tool_plan_flags("eval", es->st, pa, &req);
    if (rc) return rc;
    exec_user(&req.user, &es->lora, exec_user_cfg(&req.user).defer_optimizer);
    if (plan_make(es->st, &req, plan) || exec_create(ex, es->st, plan, 1, NULL) ||
        (es->a && loram_load_lora(exec_lora(*ex), es->a)))
        return tool_fail("eval");
    tool_plan_gpu_note("eval", plan);
    return 0;
}

/* ---- --data: perplexity, and --per-token ------------------------------------ */

/* train_eval_with's evaluator: exec_eval, or with --per-token exec_eval_tokens
 * and a line per scored token. Rows come in the order train_eval_with fills
 * them: examples one per row from the first (padding rows only after the
 * last), windows of S + 1 tokens consecutive from base. */
typedef struct per_token_ctx {
    tt_exec *ex;
    FILE *f;              /* NULL: no --per-token */
    const char *path;     /* --per-token's FILE (f writes its OUT.partial) */
    const tt_tokens *tok; /* the whole file (examples are indexed in it) */
    uint64_t base;        /* windows: the file index of the slice's first token */
    uint64_t row;         /* rows filled so far (reset per slice) */
    int S;
    double *nll;          /* (K*B*S): the last pass's per-token NLLs */
} per_token_ctx;

static int per_token_eval(void *vc, const int32_t *in, const int32_t *tgt, const tt_real *wt, double *loss) {
    per_token_ctx *c = vc;
    if (!c->f) return exec_eval(c->ex, in, tgt, wt, loss);
    int rc = exec_eval_tokens(c->ex, in, tgt, wt, loss, c->nll);
    if (rc) return rc;
    const tt_plan *p = exec_plan(c->ex);
    size_t rows = (size_t)p->req.K * (size_t)p->req.B, S = (size_t)c->S;
    for (size_t r = 0; r < rows; r++, c->row++) {
        /* the file index of the row's first input token */
        uint64_t first = c->tok->flags ? (c->row < c->tok->n_ex ? c->tok->starts[c->row] : 0) : c->base + c->row * S;
        for (size_t t = 0; t < S; t++) {
            size_t i = r * S + t;
            if (tgt[i] < 0 || wt[i] == 0) continue;
            fprintf(c->f, "%llu\t%d\t%.17g\n", (unsigned long long)(first + t + 1), tgt[i], -c->nll[i]);
        }
    }
    /* a write that failed (a full disk) ends the evaluation now, not after the whole file was scored */
    if (ferror(c->f)) return atomic_write_fail(c->path, errno ? errno : EIO, "writing");
    return 0;
}

/* --data: the loss and perplexity of a token file. Returns the exit code. */
static int eval_data(const eval_setup *es, const char *data, uint64_t max_tokens, const char *per_token) {
    const tt_config *c = tier_config(es->st);
    const char *model = es->model, *adapter = es->adapter;
    const uint64_t S = (uint64_t)es->pa.seq;
    tokfile *tf = NULL;
    tt_tokens exs = {0}; /* a version-2 file's examples */
    tt_exec *ex = NULL;
    FILE *ptf = NULL;
    atomic_partial pt = {-1, NULL}; /* --per-token's OUT.partial; ptf writes through a dup of its fd */
    double *pt_nll = NULL;
    int exit_code = 1, rc, caught = 0; /* caught: SIGINT is tool_sigint_catch's (old_int holds the one before) */
    struct sigaction old_int;
    if (tokfile_open(data, &tf)) { tool_fail("eval"); goto done; }
    /* Windows of seq + 1 tokens, consecutive (each starts where the last one's
     * targets ended), as train_eval cuts them; examples (a version-2 file): each
     * its own row, scored on its response tokens only. */
    const uint64_t n = tokfile_count(tf);
    const uint32_t *tk = tokfile_tokens(tf);
    exs = (tt_tokens){.t = tk, .n = n, .flags = tokfile_flags(tf), .file = tf};
    train_index_examples(&exs);
    uint64_t windows = 0, count = 0;
    if (exs.flags) { /* the targets scored: each example's within its first S + 1 tokens, up to max_tokens */
        for (uint64_t i = 0; i < exs.n_ex && (!max_tokens || count < max_tokens); i++)
            count += train_example_targets(&exs, i, (int)S);
        if (exs.n_ex == 0) {
            fprintf(stderr, "tiertrain eval: %s holds no example; tokenize some records into it (tokenize --format "
                            "jsonl)\n", data);
            goto done;
        }
        if (count == 0) {
            fprintf(stderr, "tiertrain eval: %s holds no response token within --seq %llu + 1 tokens of an example's "
                            "start; raise --seq\n", data, (unsigned long long)S);
            goto done;
        }
        uint64_t cut, untrained, lost;
        train_example_stats(&exs, (int)S, &cut, &untrained, &lost);
        if (cut)
            fprintf(stderr, "tiertrain eval: note: %llu of %llu examples are longer than --seq + 1 = %llu tokens and are "
                            "cut there: %llu of their response tokens are not scored (raise --seq to score them)\n",
                    (unsigned long long)cut, (unsigned long long)exs.n_ex, (unsigned long long)S + 1,
                    (unsigned long long)lost);
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
            if (tk[i] >= c->vocab) {
                fprintf(stderr, "tiertrain eval: %s holds token %u at position %llu, outside the vocabulary of %s (%u "
                                "tokens); tokenize with the model's tokenizer\n",
                        data, tk[i], (unsigned long long)i, model, c->vocab);
                goto done;
            }
    tool_tokfile_vocab_note("eval", data, tokfile_vocab(tf), model, c->vocab); /* ids that fit, of another vocabulary */

    tt_plan plan;
    if ((rc = eval_exec_open(es, &es->pa, &plan, &ex))) { exit_code = rc; goto done; }
    if (per_token) { /* written beside it and renamed over it at the end: never seen half-written */
        if (atomic_partial_open(per_token, &pt)) { tool_fail("eval"); goto done; }
        int dfd = dup(pt.fd); /* fclose closes the dup: pt.fd keeps the lock until atomic_commit */
        if (dfd < 0 || !(ptf = fdopen(dfd, "wb"))) {
            fprintf(stderr, "tiertrain eval: cannot create --per-token %s: %s\n", per_token, strerror(errno));
            if (dfd >= 0) close(dfd);
            goto done;
        }
        pt_nll = tt_xmalloc((size_t)plan.req.K * plan.req.B * S * sizeof *pt_nll);
    }
    per_token_ctx ptc = {ex, ptf, per_token, &exs, 0, 0, (int)S, pt_nll};
    const int B = plan.req.B, K = plan.req.K;
    double sum = 0;
    if (exs.flags) { /* one pass of train_eval_with over the examples: the mean over their targets */
        double l;
        if (train_eval_with(per_token_eval, &ptc, B, (int)S, K, &exs, count > INT32_MAX ? INT32_MAX : (int)count, &l)) {
            tool_fail("eval");
            goto done;
        }
        sum = l * (double)count;
    }
    /* Slices of whole executor passes (so only the last is padded): about a
     * hundred of them, for the progress line, each under train_eval's int count. */
    const uint64_t pass = (uint64_t)K * (uint64_t)B;
    uint64_t per = windows / (pass * 100);
    if (per > EVAL_SLICE_TOKENS / (pass * S)) per = EVAL_SLICE_TOKENS / (pass * S);
    per = pass * (per ? per : 1);
    eval_progress prog = {tt_now(), 0, 0, isatty(2) && !exs.flags, 0};
    /* Ctrl-C during the slices: the first stops after the slice under way with the loss so far, a second one quits
     * at once (the partial outputs removed) */
    tool_sigint_catch(&old_int, "\ntiertrain eval: stopping after the slice under way, with the loss so far; Ctrl-C "
                                "again quits at once\n");
    caught = 1;
    for (uint64_t w0 = 0; w0 < windows; w0 += per) {
        uint64_t w = windows - w0 < per ? windows - w0 : per;
        /* exactly w windows: w * S + 1 tokens, at most w * S of them predicted */
        tt_tokens slice = {.t = tk + w0 * S, .n = w * S + 1, .file = tf};
        ptc.base = w0 * S;
        ptc.row = 0;
        double l;
        if (train_eval_with(per_token_eval, &ptc, B, (int)S, K, &slice, (int)(w * S), &l)) {
            eval_progress_end(&prog);
            tool_fail("eval");
            goto done;
        }
        sum += l * (double)(w * S);
        eval_progress_show(&prog, (w0 + w) * S, count, "tokens", sum);
        if (tool_interrupted && w0 + w < windows) {
            eval_progress_end(&prog);
            uint64_t done_t = (w0 + w) * S;
            fprintf(stderr, "tiertrain eval: interrupted after %llu of %llu tokens: loss so far %.4f (perplexity %.3f), "
                            "not the whole file's\n", (unsigned long long)done_t, (unsigned long long)count,
                    sum / (double)done_t, exp(sum / (double)done_t));
            exit_code = 130;
            goto done;
        }
    }
    eval_progress_end(&prog);
    double loss = sum / (double)count, ppl = exp(loss);
    if (!isfinite(loss)) {
        fprintf(stderr, "tiertrain eval: the loss of %s%s%s on %s is not finite: the model's weights hold inf/NaN "
                        "or its activations overflow; check the store with tiertrain verify\n",
                model, adapter ? " + " : "", adapter ? adapter : "", data);
        goto done;
    }
    /* --per-token's file finished before the figures are printed, which they are either way (the side file's
     * failure is said after them, and the exit is 1) */
    int pt_failed = 0;
    if (ptf) {
        int bad = fflush(ptf) != 0 || ferror(ptf);
        int err = errno;
        bad |= fclose(ptf) != 0;
        ptf = NULL;
        if (bad) atomic_write_fail(per_token, err ? err : EIO, "writing");
        pt_failed = bad || atomic_commit(&pt, per_token); /* fsyncs, renames, closes */
    }
    if (es->as_json) {
        json_t *o = json_pack("{s:f, s:f, s:I, s:o, s:o?}", "loss", loss, "perplexity", ppl, "tokens",
                              (json_int_t)count, "model", tool_json_path(model), "adapter",
                              adapter ? tool_json_path(adapter) : NULL);
        char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!txt) { /* JSON has no infinity */
            fprintf(stderr, "tiertrain eval: cannot print --json: the perplexity (exp %.4f) overflows; run without "
                            "--json\n", loss);
            goto done;
        }
        printf("%s\n", txt);
        free(txt);
    } else {
        printf("eval: loss %.4f nats/token, perplexity %.3f over %llu tokens\n", loss, ppl, (unsigned long long)count);
    }
    if (pt_failed) {
        fflush(stdout);
        tool_fail("eval");
        goto done;
    }
    exit_code = 0;
done:
    if (caught) tool_sigint_restore(&old_int);
    if (ptf) fclose(ptf);
    atomic_partial_drop(&pt); /* after a failure: removed, then closed */
    free(pt_nll);
    train_free_examples(&exs);
    exec_free(ex);
    tokfile_close(tf);
    return exit_code;
}

/* ---- the command ------------------------------------------------------------ */

int cmd_eval(int argc, char **argv) {
    const char *model, *adapter, *data, *per_token, *task, *samples, *tok_spec, *answer_re;
    cli_strs stop = {0};
    uint64_t max_tokens = 0; /* 0: all (CLI_SIZE options without a default keep their value) */
    long max_new = 256, gen_batch = 8, limit = 0;
    tool_plan_args pa = {0};
    int as_json, force, no_bos;
    cli_opt opts[] = {
        {"model", 'm', CLI_STR, &model, NULL, "FILE", "model store (.tier) (required)"},
        {"adapter", 'a', CLI_STR, &adapter, NULL, "DIR", "PEFT adapter with the store's shapes (default: none, the bare model)"},
        {"data", 'd', CLI_STR, &data, NULL, "FILE", "tokens from `tiertrain tokenize`: print their loss and perplexity"},
        {"max-tokens", 0, CLI_SIZE, &max_tokens, NULL, "N",
         "with --data: evaluate the first N predicted tokens, rounded up to whole --seq windows (default: all)"},
        {"per-token", 0, CLI_STR, &per_token, NULL, "FILE",
         "with --data: write one line per scored token, INDEX<TAB>TOKEN<TAB>LOGPROB (INDEX: its position in the token "
         "file, LOGPROB: natural log) (default: none)"},
        {"force", 'f', CLI_FLAG, &force, NULL, NULL, "overwrite --per-token or --samples"},
        {"task", 0, CLI_STR, &task, NULL, "FILE",
         "JSONL task instead of --data, one object a line: {\"context\", \"choices\", \"label\"} (multiple choice: acc, "
         "acc_norm) or {\"prompt\", \"answer\"} (exact match of a greedy completion)"},
        {"samples", 0, CLI_STR, &samples, NULL, "FILE",
         "with --task: write one JSON line per item (log-likelihoods and predictions, or the completion and the "
         "answer found in it) (default: none)"},
        {"tokenizer", 0, CLI_STR, &tok_spec, "bytes", "T", "with --task: bytes, or a Hugging Face tokenizer.json (or its folder)"},
        {"no-bos", 0, CLI_FLAG, &no_bos, NULL, NULL,
         "with --task: do not start requests with the tokenizer's <s> / <|begin_of_text|> (lm-eval-harness's "
         "default, add_bos_token=False)"},
        {"limit", 0, CLI_INT, &limit, "0", "N", "with --task: the first N items only (0: all)"},
        {"answer-regex", 0, CLI_STR, &answer_re, EVAL_ANSWER_RE, "RE",
         "with --task: POSIX extended regex; its last match in a completion (its first group, if any) is the answer"},
        {"max-new-tokens", 'n', CLI_INT, &max_new, "256", "N", "with --task: tokens to generate at most per prompt"},
        {"stop", 0, CLI_STRS, &stop, NULL, "STR", "with --task: end a completion where this text appears (default: none)"},
        {"batch", 0, CLI_INT, &gen_batch, "8", "N", "with --task: prompts generated together (each layer load serves them all)"},
        /* the budget and batch-shape flags of train, less the LoRA ones (the adapter fixes rank, alpha and targets) */
        {"hbm", 0, CLI_SIZE, &pa.hbm, "0", "SIZE", "device memory budget, e.g. 8G (0: unlimited, every layer resident)"},
        {"host", 0, CLI_SIZE, &pa.host, "0", "SIZE", "pinned host memory budget (0: what the machine has available now)"},
        {"seq", 0, CLI_INT, &pa.seq, "256", "N",
         "tokens per window: the data is cut into consecutive windows, each token predicted from its window's earlier "
         "ones; with --task, a choice's row (a longer request keeps its last N + 1 tokens)"},
        {"micro-batch", 0, CLI_INT, &pa.micro, "4", "N", "windows (rows) per micro-batch"},
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
                   "token file (--data), or its scores on a task (--task: acc, acc_norm, exact_match with standard "
                   "errors), streamed like training under the --hbm/--host budgets.",
                   opts, 0, 0, "tiertrain eval --model tiny.tier --adapter run1 --data corpus.tok.val --seq 128"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    const char *bad = !model ? "--model FILE is required" : !data && !task ? "--data FILE is required (or --task FILE)"
                    : data && task ? "give one of --data FILE and --task FILE, not both"
                    : per_token && !data ? "--per-token needs --data" : samples && !task ? "--samples needs --task"
                    : max_tokens && !data ? "--max-tokens applies to --data; use --limit with --task" : NULL;
    if (bad) {
        fprintf(stderr, "tiertrain eval: %s (see tiertrain eval --help)\n", bad);
        return 2;
    }
    if (pa.seq < 2 || pa.seq > 1 << 20) bad = "--seq must be 2..1048576";
    else if (pa.micro < 1 || pa.micro > TOOL_MICRO_MAX || (int64_t)pa.micro * pa.seq > (1 << 24))
        bad = "--micro-batch must be 1.." TOOL_MICRO_MAX_S ", with --seq x --micro-batch at most 16M tokens";
    else if (pa.batch_tokens > EVAL_SLICE_TOKENS) bad = "--batch-tokens must be at most 1G";
    else if (pa.batch_tokens < (uint64_t)(pa.seq * pa.micro) || pa.batch_tokens % (uint64_t)(pa.seq * pa.micro))
        bad = "--batch-tokens must be a multiple of --seq x --micro-batch (lower --seq or --micro-batch, or raise "
              "--batch-tokens)";
    else if (limit < 0) bad = "--limit must be at least 0";
    else if (max_new < 1 || max_new > 1 << 20) bad = "--max-new-tokens must be 1..1048576";
    else if (gen_batch < 1 || gen_batch > 4096) bad = "--batch must be 1..4096";
    if (bad) {
        fprintf(stderr, "tiertrain eval: %s\n", bad);
        return 2;
    }
    if (tool_stop_check("eval", &stop)) return 2;
    if (per_token) {
        const char *inputs[] = {model, adapter ? adapter : "", data, NULL};
        if (tool_check_out("eval", "--per-token", per_token, inputs, force)) return 2;
    }
    if (samples) {
        const char *inputs[] = {model, adapter ? adapter : "", task, NULL};
        if (tool_check_out("eval", "--samples", samples, inputs, force)) return 2;
    }
    regex_t re;
    if (task) {
        int e = regcomp(&re, answer_re, REG_EXTENDED);
        if (e) {
            char msg[256];
            regerror(e, &re, msg, sizeof msg);
            fprintf(stderr, "tiertrain eval: --answer-regex '%s' is not a POSIX extended regex: %s\n", answer_re, msg);
            return 2;
        }
    }
    /* placeholders for tool_plan_flags' LoRA fields; the LoRA is set below */
    pa.rank = 1;
    pa.alpha = 1;
    pa.targets = "all";
    pa.clip = 0; /* no optimizer: one layer's gradient buffer is enough */

    tier_store *st = NULL;
    peft_adapter a = {0};
    int exit_code = 1;
    if (tier_open(&st, model)) { tool_fail("eval"); goto done; }
    if (tool_adapter_open("eval", adapter, st, model, &a)) goto done;
    /* the runtime always carries a LoRA: without an adapter the bare model's (tool_lora_cfg; its B = 0 is PEFT's
     * initialisation, which exec_create applies) */
    const peft_adapter *ap = adapter ? &a : NULL;
    eval_setup es = {model, adapter, st, ap, tool_lora_cfg(ap), pa, as_json};
    if (data) exit_code = eval_data(&es, data, max_tokens, per_token);
    else {
        eval_task_opts to = {task, tok_spec, samples, &stop, &re, limit, max_new, gen_batch, no_bos};
        exit_code = eval_task(&es, &to);
    }
done:
    if (task) regfree(&re);
    peft_free(&a);
    tier_close(st);
    return exit_code;
}
