/* tools/cmd_train.c — `tiertrain train`: LoRA training of a store on a token
 * file, with checkpoints, resume and PEFT export (core/train.c does the work). */
#include "core/base/common.h"
#include "core/fulltrain.h"
#include "core/lora.h"
#include "core/model.h"
#include "core/tokfile.h"
#include "core/train.h"
#include "core/exec.h"
#include "sched/plan.h"
#include "sched/trace.h"
#include "tools/cli.h"
#include "io/ckpt.h"
#include "io/peft.h"
#include "tools/tools.h"

#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *hbm_str(uint64_t b) {
    static char buf[32];
    return b ? tt_fmt_bytes(b, buf, sizeof buf) : "unlimited";
}

/* train --full: every weight, resident (core/fulltrain.c). */
static int run_full(const tt_train_opts *t, const tool_plan_args *pa, const tt_tokens *train, const tt_tokens *val,
                    int val_given, int optim, const tt_galore_cfg *gc) {
    tt_full_opts o = {0};
    o.optim = optim;
    o.galore = *gc;
    o.galore.seed = t->seed;
    o.model_path = t->model_path;
    o.out_path = t->out_dir;
    o.seed = t->seed;
    o.steps = t->steps; o.seq = t->seq; o.micro_batch = t->micro_batch; o.accum = t->accum; o.warmup = t->warmup;
    o.lr = t->lr; o.min_lr = t->min_lr; o.wd = t->wd; o.b1 = t->b1; o.b2 = t->b2; o.eps = t->eps; o.clip = t->clip;
    o.eval_every = t->eval_every; o.eval_tokens = t->eval_tokens;
    o.hbm = pa->hbm;
    o.json = t->json;
    if (!o.json)
        printf("train --full: %llu training tokens, %llu validation tokens%s; %d steps of %d x %d x %d tokens, lr %g "
               "-> %g; out %s\n", (unsigned long long)train->n, (unsigned long long)val->n,
               val_given ? "" : " (held out from --data)", o.steps, o.accum, o.micro_batch, o.seq, (double)o.lr,
               (double)o.min_lr, o.out_path);
    tt_train_result res;
    if (fulltrain_run(&o, train, val, &res)) return tool_fail("train");
    if (!o.json)
        printf("done: %d steps%s, train loss %.4f -> %.4f, validation loss %.4f -> %.4f; model in %s\n",
               res.steps_done, res.interrupted ? " (interrupted)" : "", res.first_loss, res.last_loss, res.first_val,
               res.last_val, o.out_path);
    return 0;
}

/* The files train writes into its --out folder (besides TOOL_LOCK_FILE). */
static const char *const run_files[] = {CKPT_FILE, PEFT_TENSORS, PEFT_CONFIG, NULL};

/* 1 when path is (or will be) one of the run folder's own files: its
 * directory is dir and its name one of run_files or the lock. */
static int in_run_folder(const char *path, const char *dir) {
    char tmp[PATH_MAX], pd[PATH_MAX], od[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return 0;
    char *slash = strrchr(tmp, '/');
    const char *base = slash ? slash + 1 : tmp, *pdir = ".";
    if (slash) {
        *slash = 0;
        pdir = *tmp ? tmp : "/";
    }
    if (!realpath(pdir, pd) || !realpath(dir, od) || strcmp(pd, od) != 0) return 0;
    for (int i = 0; run_files[i]; i++)
        if (strcmp(base, run_files[i]) == 0) return 1;
    return strcmp(base, TOOL_LOCK_FILE) == 0;
}

/* The output rule (tools.h) for train's outputs, before any work: the run
 * folder --out (its checkpoint and adapter files; an existing run is
 * continued only with --resume naming it, replaced only with --force), locked
 * for as long as this process writes it; --trace FILE; with --full, the --out
 * store. 0, or 2 after the message. */
static int check_outputs(const tt_train_opts *o, int full, int force, const char *model, const char *data,
                         const char *val, const char *resume, const char *trace_path) {
    const char *inputs[] = {model, data, val ? val : "", NULL};
    if (full) {
        if (tool_check_out("train", "--out", o->out_dir, inputs, force)) return 2;
    } else {
        char rp[PATH_MAX], op[PATH_MAX];
        int continuing = resume && realpath(resume, rp) && realpath(o->out_dir, op) && strcmp(rp, op) == 0;
        if (!continuing && !force && tool_holds_run(o->out_dir)) {
            fprintf(stderr, "tiertrain train: --out %s holds a run (" CKPT_FILE "); pass --resume %s to continue it, "
                            "--force to start over, or give another directory\n", o->out_dir, o->out_dir);
            return 2;
        }
        if (tool_check_out_dir("train", "--out", o->out_dir, "a run", run_files, inputs, force || continuing)) return 2;
        if (mkdir(o->out_dir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "tiertrain train: cannot create --out %s: %s\n", o->out_dir, strerror(errno));
            return 2;
        }
        if (tool_lock_dir("train", o->out_dir) < 0) return 2; /* held until the process exits */
    }
    if (trace_path) {
        const char *ins[] = {model, data, val ? val : "", full ? o->out_dir : "", NULL};
        if (tool_check_out("train", "--trace", trace_path, ins, force)) return 2;
        if (!full && in_run_folder(trace_path, o->out_dir)) { /* --out exists by now */
            fprintf(stderr, "tiertrain train: --trace %s would replace a file of the run in --out %s; name another "
                            "file\n", trace_path, o->out_dir);
            return 2;
        }
    }
    return 0;
}

int cmd_train(int argc, char **argv) {
    const char *model, *data, *val, *out, *resume, *trace_path, *base_model;
    tool_plan_args pa = {0};
    long steps, warmup, eval_every, eval_tokens, save_every, stop_after, threads;
    uint64_t seed;
    double lr, min_lr, wd;
    int as_json, full, force, no_pack;
    const char *optim;
    long galore_rank, galore_every;
    double galore_scale;
    cli_opt opts[] = {
        {"model", 'm', CLI_STR, &model, NULL, "FILE", "model store (.tier) to train on (required)"},
        {"data", 'd', CLI_STR, &data, NULL, "FILE", "training tokens from `tiertrain tokenize` (required)"},
        {"val", 0, CLI_STR, &val, NULL, "FILE", "validation tokens (default: DATA.val if it exists, else the last 1% of DATA)"},
        {"out", 'o', CLI_STR, &out, NULL, "DIR", "where checkpoints and the PEFT adapter go (required; with --full: the trained store FILE)"},
        {"full", 0, CLI_FLAG, &full, NULL, NULL, "train every weight (f32 master weights, AdamW; lm_head frozen) instead of LoRA; needs an f32/bf16 store that fits in --hbm"},
        {"optim", 0, CLI_STR, &optim, "adamw", "NAME", "with --full: adamw, or galore (GaLore's low-rank projected Adam on the projections, AdamW on norms and embedding)"},
        {"galore-rank", 0, CLI_INT, &galore_rank, "128", "R", "with --optim galore: the projection rank (at most each matrix's smaller side)"},
        {"galore-update-every", 0, CLI_INT, &galore_every, "200", "T", "with --optim galore: a new projector from the gradient every T steps"},
        {"galore-scale", 0, CLI_FLOAT, &galore_scale, "0.25", "S", "with --optim galore: the projected update's scale (GaLore's alpha)"},
        TOOL_PLAN_OPTS(pa),
        {"base-model", 0, CLI_STR, &base_model, NULL, "NAME", "the adapter's base_model_name_or_path, the model PEFT loads it onto (default: the store's source from `import` when the store is not pruned; none for a pruned one, whose adapter `recover` maps back to the source)"},
        {"no-pack", 0, CLI_FLAG, &no_pack, NULL, NULL, "instruction data (tokenize --format jsonl): one example per sequence, padded, instead of packing several into each with attention and positions kept inside each example (with --full: always)"},
        {"rslora", 0, CLI_FLAG, &pa.rslora, NULL, NULL, "rank-stabilised LoRA: scale the adapter by alpha/sqrt(rank) instead of alpha/rank (PEFT's use_rslora)"},
        {"resume", 0, CLI_STR, &resume, NULL, "DIR", "continue the run whose checkpoint is in DIR (same flags)"},
        {"lr", 0, CLI_FLOAT, &lr, "1e-3", "LR", "peak learning rate (AdamW)"},
        {"min-lr", 0, CLI_FLOAT, &min_lr, "1e-4", "LR", "learning rate at the end of the cosine decay"},
        {"warmup", 0, CLI_INT, &warmup, "10", "N", "linear warmup steps"},
        {"steps", 's', CLI_INT, &steps, "200", "N", "optimizer steps"},
        {"wd", 0, CLI_FLOAT, &wd, "0", "W", "AdamW decoupled weight decay"},
        {"seed", 0, CLI_SEED, &seed, "1", "S", "seed for LoRA init, data sampling and dropout"},
        {"eval-every", 0, CLI_INT, &eval_every, "20", "N", "validation loss every N steps (and at the end)"},
        {"eval-tokens", 0, CLI_INT, &eval_tokens, "16384", "N", "validation tokens per evaluation"},
        {"save-every", 0, CLI_INT, &save_every, "50", "N", "checkpoint every N steps (and at the end)"},
        {"stop-after", 0, CLI_INT, &stop_after, "0", "N", "stop after step N with a checkpoint, as if interrupted (0: off)"},
        {"trace", 0, CLI_STR, &trace_path, NULL, "FILE", "write a Chrome/Perfetto trace of every read, copy, spill and compute"},
        {"threads", 0, CLI_INT, &threads, "0", "N", "BLAS threads (0: all cores)"},
        {"json", 0, CLI_FLAG, &as_json, NULL, NULL, "print one JSON object per step instead of text"},
        {"force", 0, CLI_FLAG, &force, NULL, NULL, "start over in an --out that holds a run (its checkpoint and adapter are replaced), replace an existing --trace FILE (with --full: the --out store)"},
        {0},
    };
    cli_cmd cmd = {"train", NULL,
                   "Trains LoRA adapters on a model store (streamed under --hbm); writes checkpoints and a PEFT "
                   "adapter to --out. With --full, trains every weight of a model that fits (LoRAM's alignment, "
                   "pre-training small models) and writes the trained store to --out.",
                   opts, 0, 0,
                   "tiertrain train --model tiny.tier --data corpus.tok --out run1 --steps 200"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    long rank = pa.rank, seq = pa.seq, micro = pa.micro;
    double alpha = pa.alpha, clip = pa.clip;
    uint64_t batch_tokens = pa.batch_tokens;
    const char *missing = !model ? "--model FILE" : !data ? "--data FILE" : !out ? "--out DIR" : NULL;
    if (missing) {
        fprintf(stderr, "tiertrain train: %s is required (see tiertrain train --help)\n", missing);
        return 2;
    }
    const char *bad = NULL;
    if (full && (resume || trace_path || stop_after))
        bad = "--full trains a resident model and writes it once: it takes no --resume, --trace or --stop-after";
    else if (full && pa.rslora) bad = "--rslora is a LoRA option; --full trains every weight without adapters";
    else if (strcmp(optim, "adamw") != 0 && strcmp(optim, "galore") != 0) bad = "--optim must be adamw or galore";
    else if (!full && strcmp(optim, "adamw") != 0) bad = "--optim galore trains every weight: it goes with --full";
    else if (galore_rank < 1 || galore_rank > 65536) bad = "--galore-rank must be 1..65536";
    else if (galore_every < 0 || galore_every > 100000000) bad = "--galore-update-every must be 0..100000000";
    else if (!(galore_scale > 0) || !isfinite((float)galore_scale)) bad = "--galore-scale must be a finite number > 0";
    else if (rank < 1 || rank > 4096) bad = "--rank must be 1..4096";
    else if (steps < 1 || steps > 100000000) bad = "--steps must be 1..100000000";
    else if (seq < 2 || seq > 1 << 20) bad = "--seq must be 2..1048576";
    else if (micro < 1 || micro > 65536) bad = "--micro-batch must be 1..65536";
    else if (!(lr > 0) || !isfinite((float)lr) || !(min_lr >= 0) || min_lr > lr)
        bad = "--lr must be a finite number > 0 and --min-lr within [0, lr]";
    else if (!(alpha > 0) || !isfinite(alpha)) bad = "--alpha must be a finite number > 0";
    else if (!(wd >= 0) || !isfinite((float)wd) || !(clip >= 0) || !isfinite((float)clip)) bad = "--wd and --clip must be finite and >= 0";
    else if (eval_tokens < 1 || eval_tokens > (1 << 30)) bad = "--eval-tokens must be 1..1G";
    else if (warmup < 0 || eval_every < 0 || save_every < 0 || stop_after < 0 || threads < 0 || warmup < 0)
        bad = "--warmup, --eval-every, --save-every, --stop-after and --threads cannot be negative";
    else if (batch_tokens < (uint64_t)(seq * micro) || batch_tokens % (uint64_t)(seq * micro))
        bad = "--batch-tokens must be a multiple of --seq x --micro-batch";
    if (bad) {
        fprintf(stderr, "tiertrain train: %s\n", bad);
        return 2;
    }
    if (base_model && tier_source_check(base_model, "--base-model")) { tool_fail("train"); return 2; }
    tt_train_opts o = {0};
    o.model_path = model;
    o.out_dir = out;
    o.resume_dir = resume;
    tt_plan_req req;
    if (tool_plan_flags("train", NULL, &pa, &req)) return 2;
    o.lora = exec_user_cfg(&req.user).lora; /* with --dropout */
    o.pack = !no_pack && !full;
    o.act_bf16 = req.act_bf16;
    o.hbm = req.hbm;
    o.seed = seed;
    o.steps = (int)steps; o.seq = (int)seq; o.micro_batch = (int)micro;
    o.accum = (int)(batch_tokens / (uint64_t)(seq * micro));
    o.warmup = (int)warmup;
    o.lr = (float)lr; o.min_lr = (float)min_lr; o.wd = (float)wd; o.clip = (float)clip;
    o.b1 = 0.9f; o.b2 = 0.999f; o.eps = 1e-8f;
    o.eval_every = (int)eval_every; o.eval_tokens = (int)eval_tokens; o.save_every = (int)save_every;
    o.stop_after = (int)stop_after;
    o.json = as_json;
    if (threads > 0) openblas_set_num_threads((int)threads);
    o.threads = openblas_get_num_threads();
    char vpath[4096];
    int val_implicit = !val; /* DATA.val, tokenize's split */
    if (!val && snprintf(vpath, sizeof vpath, "%s.val", data) < (int)sizeof vpath && access(vpath, F_OK) == 0)
        val = vpath;
    if (check_outputs(&o, full, force, model, data, val, resume, trace_path)) return 2;

    tokfile *tf = NULL, *vf = NULL;
    tt_tokens train = {0}, vt = {0};
    tier_store *st = NULL;
    tt_exec *ex = NULL;
    tt_trace *trace = NULL;
    int exit_code = 1;
    if (tokfile_open(data, &tf)) { tool_fail("train"); goto done; }
    if (val && tokfile_open(val, &vf)) { tool_fail("train"); goto done; }
    if (tier_open(&st, model)) { tool_fail("train"); goto done; }
    const tt_config *c = tier_config(st);
    o.base_fp = tier_base_fingerprint(c, tier_prune(st));
    int shrunk = 0; /* structurally pruned: the source model has other shapes */
    for (uint32_t l = 0; l < c->n_layers; l++) shrunk |= c->layers[l].pruned != 0;
    o.base_model = base_model ? base_model : shrunk ? NULL : tier_source(st);
    for (tokfile *f = tf; f; f = f == tf ? vf : NULL) {
        if (tokfile_vocab(f) > c->vocab) {
            fprintf(stderr, "tiertrain train: %s was tokenized for a vocabulary of %u but %s has %u tokens; tokenize "
                            "with the model's tokenizer\n", tokfile_path(f), tokfile_vocab(f), model, c->vocab);
            goto done;
        }
    }
    train = (tt_tokens){.t = tokfile_tokens(tf), .n = tokfile_count(tf), .flags = tokfile_flags(tf)};
    if (vf) vt = (tt_tokens){.t = tokfile_tokens(vf), .n = tokfile_count(vf), .flags = tokfile_flags(vf)};
    /* no window (no example with a target) to score: every validation loss would be nan */
    if (vf && (vt.flags ? vt.n < 2 : vt.n <= (uint64_t)seq)) {
        if (!val_implicit) {
            fprintf(stderr, "tiertrain train: --val %s holds %llu tokens, fewer than one --seq %ld window plus its "
                            "target; give more validation text (or leave --val out to hold out 1%% of --data)\n",
                    tokfile_path(vf), (unsigned long long)vt.n, seq);
            exit_code = 2;
            goto done;
        }
        fprintf(stderr, "tiertrain train: note: %s holds %llu tokens, fewer than one --seq %ld window; holding out "
                        "the last 1%% of --data for validation instead\n", tokfile_path(vf),
                (unsigned long long)vt.n, seq);
        tokfile_close(vf);
        vf = NULL;
    }
    if (!vf) { /* hold out the last 1% (examples: from the first example that starts in it, at least one) */
        uint64_t h = train.n / 100, cut = train.n - h;
        if (train.flags) {
            train_index_examples(&train);
            cut = train.n_ex > 1 ? train.starts[train.n_ex - 1] : train.n;
            for (uint64_t i = train.n_ex; i-- > 1;)
                if (train.starts[i] >= train.n - h) cut = train.starts[i];
            train_free_examples(&train);
        }
        vt = (tt_tokens){.t = train.t + cut, .n = train.n - cut, .flags = train.flags ? train.flags + cut : NULL};
        train.n = cut;
    }
    train_index_examples(&train);
    train_index_examples(&vt);
    if (train.flags) {
        uint64_t cut, untrained;
        train_example_stats(&train, (int)seq, &cut, &untrained);
        if (train.n_ex == 0 || untrained == train.n_ex) {
            fprintf(stderr, "tiertrain train: %s holds no example with a response within its first --seq %ld + 1 "
                            "tokens; raise --seq\n", data, seq);
            goto done;
        }
        if (!as_json)
            printf("data: %llu examples, %s%s\n", (unsigned long long)train.n_ex,
                   o.pack ? "packed into sequences (attention and positions kept inside each)"
                          : "one per sequence (padded)",
                   vt.flags ? "" : "; validation is plain text");
        if (cut)
            fprintf(stderr, "tiertrain train: note: %llu of %llu examples are longer than --seq + 1 = %ld tokens and "
                            "are cut there%s\n", (unsigned long long)cut, (unsigned long long)train.n_ex, seq + 1,
                    untrained ? "" : " (each keeps part of its response)");
        if (untrained)
            fprintf(stderr, "tiertrain train: note: %llu examples have no response within their first %ld tokens and "
                            "teach nothing; raise --seq\n", (unsigned long long)untrained, seq + 1);
    }
    if (full) {
        tt_galore_cfg gc = {(int)galore_rank, (int)galore_every, (float)galore_scale, 0};
        exit_code = run_full(&o, &pa, &train, &vt, vf != NULL, strcmp(optim, "galore") == 0 ? FULL_OPTIM_GALORE : FULL_OPTIM_ADAMW,
                             &gc);
        goto done;
    }
    tt_plan plan;
    if (plan_make(st, &req, &plan)) { tool_fail("train"); goto done; }
    /* with --trace every event is kept for the file (~60 MB; past that they are counted as dropped);
     * without it the trace only feeds the per-step busy/overlap figures and is cleared each step */
    trace = trace_create(trace_path ? 1u << 20 : 64u << 10);
    o.trace = trace;
    o.trace_keep = trace_path != NULL;
    if (exec_create(&ex, model, &plan, o.seed, trace)) { tool_fail("train"); goto done; }
    if (!as_json) {
        char tg[128];
        lora_targets_str(o.lora.targets, tg, sizeof tg);
        printf("train: %s (%s, %u layers), LoRA r=%ld alpha=%g%s on %s; %llu training tokens, %llu validation tokens%s\n",
               model, c->name, c->n_layers, rank, alpha, pa.rslora ? " (rslora: scale alpha/sqrt(r))" : "", tg, (unsigned long long)train.n, (unsigned long long)vt.n,
               vf ? "" : " (held out from --data)");
        printf("train: %d steps of %llu tokens (%d micro-batches of %ld x %ld), lr %g -> %g, warmup %ld, out %s\n",
               o.steps, (unsigned long long)batch_tokens, o.accum, micro, seq, lr, min_lr, warmup, out);
        char db[32], hb[32];
        printf("plan: %d of %u layer slots, activations %d on device / %d spilled, lm_head %s, host cache %s; "
               "device %s, host %s\n", plan.slots, c->n_layers, plan.dev_cells, plan.host_cells,
               plan.head_on_device ? "on device" : "streamed", plan.host_cache ? "yes" : "no",
               tt_fmt_bytes(plan.dev_bytes, db, sizeof db), tt_fmt_bytes(plan.host_bytes, hb, sizeof hb));
        fflush(stdout);
    }
    tt_train_result res;
    int trc = train_run(&o, ex, &train, &vt, &res);
    if (trace_path && trace_write_chrome(trace, trace_path)) tool_fail("train");
    else if (trace_path && !as_json) printf("trace: %s (%zu events; open it in Perfetto or chrome://tracing)\n", trace_path,
                                       trace_n_events(trace));
    if (trc) { tool_fail("train"); goto done; }
    if (!as_json && res.steps_done > 0) {
        char dp[32], hp[32];
        printf("done: %d steps, train loss %.4f -> %.4f, validation loss %.4f -> %.4f; adapter in %s\n",
               res.steps_done, res.first_loss, res.last_loss, res.first_val, res.last_val, out);
        printf("peak memory: device arena %s (planned %llu bytes, --hbm %s), host arena %s; NVMe read %.1f MB\n",
               tt_fmt_bytes(exec_dev_peak(ex), dp, sizeof dp), (unsigned long long)plan.dev_bytes,
               hbm_str(pa.hbm), tt_fmt_bytes(exec_host_peak(ex), hp, sizeof hp), exec_io_bytes(ex) / 1e6);
        if (res.dev_in_use)
            printf("GPU memory held after step 1 (NVML, everything: arena, context, kernels, workspaces): %s\n",
                   tt_fmt_bytes(res.dev_in_use, dp, sizeof dp));
    }
    exit_code = 0;
done:
    train_free_examples(&train);
    train_free_examples(&vt);
    exec_free(ex);
    trace_free(trace);
    tier_close(st);
    tokfile_close(tf);
    tokfile_close(vf);
    return exit_code;
}
