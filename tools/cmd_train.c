/* tools/cmd_train.c — `tiertrain train`: LoRA training of a store on a token
 * file — or on a mixture of several (--data FILE:W repeated, --mix static or
 * dynamic against a --reference store) — with checkpoints, resume and PEFT
 * export (core/train.c does the work). */
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
#include "tools/gen_common.h"
#include "io/ckpt.h"
#include "io/peft.h"
#include "tools/tools.h"
#include "io/atomicfile.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *hbm_str(uint64_t b) {
    static char buf[32];
    return b ? tt_fmt_bytes(b, buf, sizeof buf) : "unlimited";
}

/* train --full: every weight, resident (core/fulltrain.c). */
/* A run a signal stopped (its checkpoint written) exits 128 + the signal's number, as a shell reports a process
 * the signal ended (130 for Ctrl-C): `train ... && recover ...` does not go on with an adapter trained part of
 * the way. --stop-after N is a stop asked for: 0. */
static int stopped_exit(const tt_train_result *r) { return r->interrupted ? 128 + r->interrupted : 0; }
static const char *signal_name(int sig) {
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "a signal";
}

/* The header's word on a warmup as long as the run or longer (README's short examples, a --steps cut without
 * --warmup): the schedule then never reaches its peak or decays, which the flags alone do not show. */
static const char *warmup_note(long warmup, long steps, double lr, char *b, size_t n) {
    if (warmup < steps) return "";
    snprintf(b, n, " (not below --steps: the learning rate climbs all run, to %g at step %ld, and never decays)",
             lr * (double)steps / (double)warmup, steps);
    return b;
}

/* 1 when --out's file system has room for the run's saves of n LoRA values: checkpoint.bin (the values and AdamW's
 * two moments) and the adapter (f32 at most), beside what it holds now, which stays until the new files are renamed
 * over it — and where --out holds no checkpoint yet and the run saves more than once (twice), room for a second
 * checkpoint beside the first. Else 0 after the sentence: found before the first step, not at a save. */
static int out_has_room(const char *dir, size_t n, int twice) {
    uint64_t avail, dev;
    if (atomic_fs_room(dir, 1, &avail, &dev) != 0) return 1; /* cannot tell: the save will say */
    const int has = tool_holds_run(dir);
    const uint64_t ckb = (uint64_t)n * (sizeof(tt_real) + 2 * sizeof(float)),
                   need = ckb * (!has && twice ? 2 : 1) + (uint64_t)n * sizeof(float) + ((uint64_t)1 << 20);
    if (avail >= need) return 1;
    char a[32], b[32];
    fprintf(stderr, "tiertrain train: --out %s has %s free, but %s takes %s; free some space or give another --out\n",
            dir, tt_fmt_bytes(avail, a, sizeof a),
            !has && twice ? "the run's saves (a checkpoint beside the last one, and the adapter)"
                          : "a save (checkpoint and adapter)",
            tt_fmt_bytes(need, b, sizeof b));
    return 0;
}

/* msg, formatted: a usage error naming the flag given. */
__attribute__((format(printf, 3, 4))) static const char *say(char *msg, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
    return msg;
}

/* The summary object --json prints last (LoRA and full training): the steps made and planned, a stop's signal, the
 * step resumed after, the first and last losses; the caller adds what its run wrote and used. */
static json_t *summary_json(const tt_train_result *res, int steps) {
    json_t *j = json_object();
    json_object_set_new(j, "done", json_true());
    json_object_set_new(j, "steps", json_integer(res->steps_done));
    json_object_set_new(j, "steps_planned", json_integer(steps));
    if (res->interrupted) json_object_set_new(j, "interrupted", json_string(signal_name(res->interrupted)));
    if (res->start_step > 0) json_object_set_new(j, "resumed_after", json_integer(res->start_step));
    const char *lk[4] = {"train_loss_first", "train_loss_last", "val_loss_first", "val_loss_last"};
    /* val_loss_last: a score after a step (a run stopped before its first scheduled validation has none) */
    const double lv[4] = {res->first_loss, res->last_loss, res->first_val, res->last_val_step ? res->last_val : NAN};
    for (int i = 0; i < 4; i++) /* (no step made: a resume at --steps has no losses of its own) */
        if (isfinite(lv[i]) && res->steps_done > res->start_step) json_object_set_new(j, lk[i], json_real(lv[i]));
    return j;
}

static int run_full(const tt_train_opts *t, const tool_plan_args *pa, const tt_tokens *train, const tt_tokens *val,
                    int val_given, int optim, const tt_galore_cfg *gc, const char *teacher, double dweight,
                    double dtemp, int stream, const char *ckpt) {
    tt_full_opts o = {0};
    o.resume_dir = t->resume_dir;
    o.ckpt_dir = ckpt ? ckpt : t->resume_dir;
    o.save_every = t->save_every;
    o.stop_after = t->stop_after;
    o.stream = stream;
    o.host = pa->host;
    o.teacher_path = teacher;
    o.distill_weight = (float)dweight;
    o.distill_temp = (float)dtemp;
    o.mix = t->mix;
    o.optim = optim;
    o.galore = *gc;
    o.galore.seed = t->seed;
    o.model_path = t->model_path;
    o.weights_fp = t->weights_fp;
    o.out_path = t->out_dir;
    o.seed = t->seed;
    o.steps = t->steps; o.seq = t->seq; o.micro_batch = t->micro_batch; o.accum = t->accum; o.warmup = t->warmup;
    o.lr = t->lr; o.min_lr = t->min_lr; o.wd = t->wd; o.b1 = t->b1; o.b2 = t->b2; o.eps = t->eps; o.clip = t->clip;
    o.eval_every = t->eval_every; o.eval_tokens = t->eval_tokens;
    /* the streamed plan's hints, as plan --full takes them from the same flags (tool_plan_flags) */
    o.host_avail = tt_mem_available();
    o.dev_avail = be_dev_avail(); /* the backend tool_plan_flags started */
    /* the GPU binds as an --hbm of what it can give now: the resident run where that holds it, else streamed within
     * it (with a --teacher, the teacher's share first), as a LoRA run's plan */
    int by_gpu;
    o.hbm = tool_full_hbm("train --full", pa->hbm, o.dev_avail, 0, !t->json, &by_gpu);
    o.lm_head = strcmp(pa->lm_head, "auto") == 0 ? PLAN_HEAD_AUTO : strcmp(pa->lm_head, "device") == 0 ? PLAN_HEAD_DEVICE
              : strcmp(pa->lm_head, "host") == 0 ? PLAN_HEAD_HOST : -1;
    if (o.lm_head < 0) {
        fprintf(stderr, "tiertrain train: --lm-head must be auto, device or host, not '%s'\n", pa->lm_head);
        return 2;
    }
    o.json = t->json;
    uint64_t nt = o.mix ? 0 : train->n, nv = o.mix ? 0 : val->n; /* a mixture: its sources' sums */
    for (int i = 0; o.mix && i < o.mix->n; i++) nt += o.mix->train[i].n, nv += o.mix->val[i].n;
    char wn[160];
    if (!o.json)
        printf("train --full: %llu training tokens, %llu validation tokens%s; %d steps of %d x %d x %d tokens, lr %g "
               "-> %g, warmup %d%s; out %s\n", (unsigned long long)nt, (unsigned long long)nv,
               o.mix ? " (the sources above)" : val_given ? "" : " (held out from --data)", o.steps, o.accum,
               o.micro_batch, o.seq, (double)o.lr, (double)o.min_lr, o.warmup,
               warmup_note(o.warmup, o.steps, (double)o.lr, wn, sizeof wn), o.out_path);
    tt_train_result res;
    if (fulltrain_run(&o, o.mix ? NULL : train, o.mix ? NULL : val, &res)) {
        if (by_gpu) tool_full_hbm_refused();
        return tool_fail("train");
    }
    if (!o.json) {
        char sum[320];
        train_result_summary(&res, sum, sizeof sum);
        printf("done: %s; model in %s\n", sum, o.out_path);
        if (res.dev_in_use) {
            char du[32];
            printf("GPU memory held after step 1 (NVML, everything: the weights, optimizer state, context, "
                   "workspaces): %s\n", tt_fmt_bytes(res.dev_in_use, du, sizeof du));
        }
    } else if (res.steps_done > 0) { /* as LoRA's: one object after the steps' */
        json_t *j = summary_json(&res, o.steps);
        json_object_set_new(j, "model", json_string(o.out_path)); /* not set where it is not UTF-8 */
        if (res.dev_in_use) json_object_set_new(j, "gpu_bytes_in_use", json_integer((json_int_t)res.dev_in_use));
        char *txt = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (txt) puts(txt);
        free(txt);
        json_decref(j);
    }
    return stopped_exit(&res);
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

/* train's inputs: the model, each --data and its validation file, the --reference and --teacher stores. */
#define TRAIN_MAX_INPUTS (3 + 2 * TT_MIX_MAX)

/* claim_run_dir's check of what dir holds: 0, or 2 after the message. */
static int run_dir_refused(const char *flag, const char *dir, const char *const *files, const char *const *inputs,
                           int force, int continuing) {
    if (!continuing && !force && tool_holds_run(dir)) {
        fprintf(stderr, "tiertrain train: %s %s holds a run (" CKPT_FILE "); pass --resume %s to continue it, "
                        "--force to start over, or give another directory\n", flag, dir, dir);
        return 2;
    }
    return tool_check_out_dir("train", flag, dir, "a run", files, inputs, force || continuing) ? 2 : 0;
}

/* Claims a run folder dir (flag names it in messages; files: what train writes into it, NULL-terminated) as
 * the output rule (tools.h) has it, before any work: a folder holding a run is continued only with --resume
 * naming it, replaced only with --force; it is created when missing (*made_dir set) and locked for as long as
 * this process writes it. 0, or 2 after the message. */
static int claim_run_dir(const char *flag, const char *dir, const char *const *files, const char *const *inputs,
                         const char *resume, int force, int *made_dir) {
    char rp[PATH_MAX], op[PATH_MAX];
    int continuing = resume && realpath(resume, rp) && realpath(dir, op) && strcmp(rp, op) == 0;
    if (run_dir_refused(flag, dir, files, inputs, force, continuing)) return 2;
    if (mkdir(dir, 0755) == 0) {
        *made_dir = 1;
        tt_partial_note_dir(dir); /* a signal before the run wrote into it (Ctrl-C while loading) leaves no folder */
    } else if (errno != EEXIST) {
        fprintf(stderr, "tiertrain train: cannot create %s %s: %s\n", flag, dir, strerror(errno));
        return 2;
    }
    if (tool_lock_dir("train", dir) < 0) return 2; /* held until the process exits, then removed */
    /* again under the lock: a train that held the folder until now may have finished a run in it meanwhile */
    return run_dir_refused(flag, dir, files, inputs, force, continuing);
}

/* The output rule (tools.h) for train's outputs, before any work: the run
 * folder --out (its checkpoint and adapter files), or with --full the
 * checkpoint folder (--ckpt, else --resume's) and the --out store; --trace
 * FILE. inputs: NULL-terminated, at most TRAIN_MAX_INPUTS. *run_dir: the run
 * folder claimed (NULL: none); *made_dir: set when it was created here
 * (abandon_out_dir). 0, or 2 after the message. */
static int check_outputs(const tt_train_opts *o, int full, int force, const char *const *inputs, const char *resume,
                         const char *ckpt, const char *trace_path, const char **run_dir, int *made_dir) {
    static const char *const ckpt_files[] = {CKPT_FILE, NULL};
    *run_dir = full ? (ckpt ? ckpt : resume) : o->out_dir;
    if (*run_dir && claim_run_dir(full && ckpt ? "--ckpt" : full ? "--resume" : "--out", *run_dir,
                                  full ? ckpt_files : run_files, inputs, resume, force, made_dir))
        return 2;
    if (full && tool_check_out("train", "--out", o->out_dir, inputs, force)) return 2;
    if (trace_path) {
        const char *ins[TRAIN_MAX_INPUTS + 2];
        int k = 0;
        for (; inputs[k]; k++) ins[k] = inputs[k];
        TT_ASSERT(k <= TRAIN_MAX_INPUTS);
        ins[k++] = full ? o->out_dir : ""; /* the store --full writes */
        ins[k] = NULL;
        if (tool_check_out("train", "--trace", trace_path, ins, force)) return 2;
        if (!full && in_run_folder(trace_path, o->out_dir)) { /* --out exists by now */
            fprintf(stderr, "tiertrain train: --trace %s would replace a file of the run in --out %s; name another "
                            "file\n", trace_path, o->out_dir);
            return 2;
        }
    }
    return 0;
}

/* A run that fails before writing anything into the --out folder it created (an input refused after the
 * output check, or its lock not taken) leaves no folder behind: its own lock file goes (never another train's:
 * a folder it created but another train locked first is that one's), then the folder if that left it empty. */
static void abandon_out_dir(const char *dir) {
    tool_unlock_dir(); /* its own lock file only: another train's is that one's */
    rmdir(dir); /* fails, and keeps everything, when the run wrote something or another train's lock is in it */
}

/* One --data source: FILE or FILE:W, its validation split and its tokens. */
typedef struct source {
    char path[PATH_MAX];   /* the token file */
    double weight;         /* as given (1 without :W) */
    char vpath[PATH_MAX];  /* FILE.val, when it exists */
    const char *val;       /* the validation file (--val or FILE.val); NULL: the held-out tail */
    int val_implicit;      /* val is FILE.val (tokenize's split), not --val */
    tokfile *tf, *vf;
    tt_tokens train, vt;
} source;

/* Splits --data ARG into the file and its weight: a file named ARG is taken whole (weight 1); else the text
 * after the last ':' (with no '/') is the weight. 0, or 2 after the message. */
static int source_parse(const char *arg, source *src) {
    const char *colon = strrchr(arg, ':');
    size_t len = strlen(arg);
    src->weight = 1;
    if (access(arg, F_OK) != 0 && colon && !strchr(colon + 1, '/')) {
        char *end;
        double w = strtod(colon + 1, &end);
        if (colon[1] == 0 || *end || !isfinite(w) || !(w >= 0) || w > FLT_MAX) {
            fprintf(stderr, "tiertrain train: --data %s: the weight after ':' must be a finite number >= 0 (FILE:W, "
                            "e.g. corpus.tok:0.5), not '%s'\n", arg, colon + 1);
            return 2;
        }
        src->weight = w;
        len = (size_t)(colon - arg);
        if (len == 0) {
            fprintf(stderr, "tiertrain train: --data %s names no file before its weight (FILE:W)\n", arg);
            return 2;
        }
    }
    if (len >= sizeof src->path) {
        fprintf(stderr, "tiertrain train: --data %.64s...: the path is longer than %d bytes\n", arg, PATH_MAX - 1);
        return 2;
    }
    memcpy(src->path, arg, len);
    src->path[len] = 0;
    return 0;
}

/* A source's tokens once its files are open: the vocabulary check, the validation split (a too-short FILE.val
 * gives way to the held-out tail; a too-short --val is an error), the examples' index and notes. name: how the
 * messages name the source ("" with one source, whose messages stay as they were). 0, or the exit code after
 * the message. */
static int source_load(source *src, const tt_config *c, const char *model, long seq, int pack, int as_json,
                       const char *name) {
    for (tokfile *f = src->tf; f; f = f == src->tf ? src->vf : NULL) {
        if (tokfile_vocab(f) > c->vocab) {
            fprintf(stderr, "tiertrain train: %s was tokenized for a vocabulary of %u but %s has %u tokens; tokenize "
                            "with the model's tokenizer\n", tokfile_path(f), tokfile_vocab(f), model, c->vocab);
            return 1;
        }
        tool_tokfile_vocab_note("train", tokfile_path(f), tokfile_vocab(f), model, c->vocab);
    }
    tt_tokens *train = &src->train, *vt = &src->vt;
    *train = (tt_tokens){.t = tokfile_tokens(src->tf), .n = tokfile_count(src->tf), .flags = tokfile_flags(src->tf),
                         .file = src->tf};
    if (src->vf)
        *vt = (tt_tokens){.t = tokfile_tokens(src->vf), .n = tokfile_count(src->vf), .flags = tokfile_flags(src->vf),
                          .file = src->vf};
    /* no window (no example with a target) to score: every validation loss would be nan */
    if (src->vf && (vt->flags ? vt->n < 2 : vt->n <= (uint64_t)seq)) {
        if (!src->val_implicit) {
            fprintf(stderr, "tiertrain train: --val %s holds %llu tokens, fewer than one --seq %ld window plus its "
                            "target; give more validation text (or leave --val out to hold out 1%% of --data)\n",
                    tokfile_path(src->vf), (unsigned long long)vt->n, seq);
            return 2;
        }
        fprintf(stderr, "tiertrain train: note: %s holds %llu tokens, fewer than one --seq %ld window; holding out "
                        "the last 1%% of %s for validation instead\n", tokfile_path(src->vf),
                (unsigned long long)vt->n, seq, *name ? src->path : "--data");
        tokfile_close(src->vf);
        src->vf = NULL;
        *vt = (tt_tokens){0};
    }
    if (!src->vf) { /* hold out the last 1% (examples: from the first example that starts in it, at least one) */
        uint64_t h = train->n / 100, cut = train->n - h;
        if (train->flags) {
            train_index_examples(train);
            cut = train->n_ex > 1 ? train->starts[train->n_ex - 1] : train->n;
            for (uint64_t i = train->n_ex; i-- > 1;)
                if (train->starts[i] >= train->n - h) cut = train->starts[i];
            train_free_examples(train);
        }
        *vt = (tt_tokens){.t = train->t + cut, .n = train->n - cut, .flags = train->flags ? train->flags + cut : NULL,
                          .file = src->tf};
        train->n = cut;
    }
    train_index_examples(train);
    train_index_examples(vt);
    if (train->flags) {
        uint64_t cut, untrained, lost;
        train_example_stats(train, (int)seq, &cut, &untrained, &lost);
        if (train->n_ex == 0) {
            fprintf(stderr, "tiertrain train: %s holds no example; tokenize some records into it (tokenize --format "
                            "jsonl)\n", src->path);
            return 1;
        }
        if (untrained == train->n_ex) {
            fprintf(stderr, "tiertrain train: %s holds no example with a response within its first --seq %ld + 1 "
                            "tokens; raise --seq\n", src->path, seq);
            return 1;
        }
        if (!as_json)
            printf("data%s%s: %llu examples, %s%s\n", *name ? " " : "", name, (unsigned long long)train->n_ex,
                   pack ? "packed into sequences (attention and positions kept inside each)"
                        : "one per sequence (padded)",
                   vt->flags ? "" : "; validation is plain text");
        if (cut)
            fprintf(stderr, "tiertrain train: note: %s%s%llu of %llu examples are longer than --seq + 1 = %ld tokens and "
                            "are cut there%s: %llu response tokens are never trained on\n", name, *name ? ": " : "",
                    (unsigned long long)cut, (unsigned long long)train->n_ex, seq + 1,
                    untrained ? "" : " (each keeps part of its response)", (unsigned long long)lost);
        if (untrained)
            fprintf(stderr, "tiertrain train: note: %s%s%llu examples have no response within their first %ld tokens "
                            "and teach nothing; raise --seq\n", name, *name ? ": " : "", (unsigned long long)untrained,
                    seq + 1);
    }
    if (vt->flags) { /* the validation examples: what a score leaves out, or that nothing can be scored */
        uint64_t cut, untrained, lost;
        train_example_stats(vt, (int)seq, &cut, &untrained, &lost);
        char held[PATH_MAX + 64];
        snprintf(held, sizeof held, "the held-out last 1%% of %s", src->path);
        const char *vname = src->vf ? tokfile_path(src->vf) : held;
        if (untrained == vt->n_ex && !src->val_implicit) {
            fprintf(stderr, "tiertrain train: --val %s: none of its %llu examples has a response within its first --seq "
                            "%ld + 1 tokens, so there is nothing to score; raise --seq\n", vname,
                    (unsigned long long)vt->n_ex, seq);
            return 2;
        }
        if (vt->n_ex == 0)
            fprintf(stderr, "tiertrain train: note: %s holds no example to validate on: no validation (give --val "
                            "FILE)\n", vname);
        else if (untrained == vt->n_ex)
            fprintf(stderr, "tiertrain train: note: %s: none of its %llu validation examples has a response within its "
                            "first --seq %ld + 1 tokens: no validation (raise --seq to have one)\n", vname,
                    (unsigned long long)vt->n_ex, seq);
        else if (cut)
            fprintf(stderr, "tiertrain train: note: %s: %llu of %llu validation examples are longer than --seq + 1 = %ld "
                            "tokens and are cut there: %llu response tokens are never scored\n", vname,
                    (unsigned long long)cut, (unsigned long long)vt->n_ex, seq + 1, (unsigned long long)lost);
    }
    return 0;
}

/* --mix dynamic: the reference store's validation loss on each source (m->ref), through a streaming executor
 * of its own under the run's budget and batch shape (a rank-1 LoRA with B = 0: the bare model, as eval scores
 * it), freed before training starts. 0, or the exit code after the message. */
static int reference_losses(const char *path, tier_store *rs, const tt_plan_req *run_req, tt_mix *m, int eval_tokens,
                            int as_json) {
    tt_plan_req req = *run_req;
    tt_lora_cfg bare = {1, 1.f, 0.f, 1u << TT_PROJ_Q, 0};
    exec_user(&req.user, &bare, 0); /* no optimizer */
    tt_plan plan;
    tt_exec *ex = NULL;
    if (plan_make(rs, &req, &plan)) { /* a budget the reference does not fit: say which store (the model is planned after) */
        fprintf(stderr, "tiertrain train: --reference %s: %s\n", path, tt_lasterr());
        return 1;
    }
    if (exec_create(&ex, rs, &plan, 1, NULL) || train_mix_reference(ex, m, eval_tokens)) {
        exec_free(ex);
        return tool_fail("train");
    }
    exec_free(ex);
    char nb[32];
    for (int i = 0; i < m->n; i++)
        if (!isfinite(m->ref[i])) {
            fprintf(stderr, "tiertrain train: --reference %s scored nothing on the validation tokens of %s; give that "
                            "source more validation text\n", path, train_mix_name(m, i, nb, sizeof nb));
            return 1;
        }
    if (!as_json) {
        printf("reference %s: validation loss", path);
        for (int i = 0; i < m->n; i++) printf("%s %s %.4f", i ? "," : "", train_mix_name(m, i, nb, sizeof nb), m->ref[i]);
        printf("\n");
        fflush(stdout);
    }
    return 0;
}

int cmd_train(int argc, char **argv) {
    const char *model, *val, *out, *resume, *trace_path, *base_model, *mix_mode, *reference, *teacher, *ckpt;
    cli_strs data;
    tool_plan_args pa = {0};
    long steps, warmup, eval_every, eval_tokens, save_every, stop_after, threads, mix_every;
    uint64_t seed;
    double lr, min_lr, wd, mix_temp, distill_weight, distill_temp;
    int as_json, full, force, no_pack, stream;
    const char *optim;
    long galore_rank, galore_every;
    double galore_scale;
    cli_opt opts[] = {
        {"model", 'm', CLI_STR, &model, NULL, "FILE", "model store (.tier) to train on (required)"},
        {"data", 'd', CLI_STRS, &data, NULL, "FILE[:W]", "training tokens from `tiertrain tokenize` (required); given more than once, a data mixture: each sequence is drawn from FILE with probability W / (sum of the weights) (W: a number >= 0, default 1), each source validated on its own FILE.val or held-out tail"},
        {"val", 0, CLI_STR, &val, NULL, "FILE", "validation tokens (default: DATA.val if it exists, else the last 1% of DATA; one --data only)"},
        {"out", 'o', CLI_STR, &out, NULL, "DIR", "where checkpoints and the PEFT adapter go (required; with --full: the trained store FILE)"},
        {"full", 0, CLI_FLAG, &full, NULL, NULL, "train every weight (f32 master weights, AdamW; lm_head frozen) instead of LoRA; needs an f32/bf16 store that fits in --hbm"},
        {"ckpt", 0, CLI_STR, &ckpt, NULL, "DIR", "with --full: write checkpoints (the weights, the optimizer state, the step and the data position) into DIR every --save-every steps, at the end, at --stop-after and on Ctrl-C; continue with --resume DIR (default with --resume: that DIR)"},
        {"stream", 0, CLI_FLAG, &stream, NULL, NULL, "with --full: stream the layers even when the model fits --hbm (each layer's f32 master weights and optimizer state in the host arena, its update right after its backward; what a run whose resident need exceeds --hbm does by itself); needs --clip 0"},
        {"optim", 0, CLI_STR, &optim, "adamw", "NAME", "with --full: adamw, or galore (GaLore's low-rank projected Adam on the projections, AdamW on norms and embedding)"},
        {"galore-rank", 0, CLI_INT, &galore_rank, "128", "R", "with --optim galore: the projection rank (at most each matrix's smaller side)"},
        {"galore-update-every", 0, CLI_INT, &galore_every, "200", "T", "with --optim galore: a new projector from the gradient every T steps"},
        {"galore-scale", 0, CLI_FLOAT, &galore_scale, "0.25", "S", "with --optim galore: the projected update's scale (GaLore's alpha)"},
        {"teacher", 0, CLI_STR, &teacher, NULL, "FILE", "with --full: align by distillation from this store (the original, unpruned model; resident, frozen; same hidden size and vocabulary): the loss becomes (1 - W) cross-entropy + W T^2 KL(teacher || model) of the next-token distributions at temperature T; validation stays cross-entropy"},
        {"distill-weight", 0, CLI_FLOAT, &distill_weight, "0.5", "W", "with --teacher: the KL term's weight W in [0,1] (1: distillation alone)"},
        {"distill-temp", 0, CLI_FLOAT, &distill_temp, "1", "T", "with --teacher: the temperature T (> 0) both distributions are softened with"},
        {"mix", 0, CLI_STR, &mix_mode, "static", "MODE", "with several --data: static (the weights as given), or dynamic (LoRAShear's knowledge recovery: before step 1 and every --mix-every steps, weight W_i * exp(gap_i / T) normalised, gap_i = max(0, val loss_i - the --reference model's); needs --reference)"},
        {"reference", 0, CLI_STR, &reference, NULL, "FILE", "with --mix dynamic: the original (unpruned) store whose validation loss on each source the run recovers toward; its vocabulary must be the model's"},
        {"mix-every", 0, CLI_INT, &mix_every, "20", "N", "with --mix dynamic: re-weight after every N steps (each source's validation scored then)"},
        {"mix-temp", 0, CLI_FLOAT, &mix_temp, "0.25", "T", "with --mix dynamic: the temperature T in nats/token: a source T further above its reference gets e times the weight"},
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
        {"eval-tokens", 0, CLI_INT, &eval_tokens, "16384", "N", "validation tokens per evaluation (per source, with several --data)"},
        {"save-every", 0, CLI_INT, &save_every, "50", "N", "checkpoint every N steps (and at the end)"},
        {"stop-after", 0, CLI_INT, &stop_after, "0", "N", "stop after step N with a checkpoint, as an interrupted run does, but exit 0 (0: off)"},
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
    /* a reader of its output gone (`train | tee log`, and Ctrl-C ended tee too; a closed ssh session) must not
     * end a run before its checkpoint: its prints fail instead (the exit says so) */
    signal(SIGPIPE, SIG_IGN);
    long rank = pa.rank, seq = pa.seq, micro = pa.micro;
    double alpha = pa.alpha, clip = pa.clip;
    uint64_t batch_tokens = pa.batch_tokens;
    const char *missing = !model ? "--model FILE" : !data.n ? "--data FILE" : !out ? "--out DIR" : NULL;
    if (missing) {
        fprintf(stderr, "tiertrain train: %s is required (see tiertrain train --help)\n", missing);
        return 2;
    }
    int dynamic = strcmp(mix_mode, "dynamic") == 0;
    /* a flag given where it has no effect is refused, named, as a wrong one is (a user who set it expects it to
     * do something) */
    const char *lora_only = cli_given(&pa.rank) ? "--rank" : cli_given(&pa.alpha) ? "--alpha"
                          : cli_given(&pa.dropout) ? "--dropout" : cli_given(&pa.targets) ? "--targets" : NULL;
    const char *galore_only = cli_given(&galore_rank) ? "--galore-rank" : cli_given(&galore_every) ? "--galore-update-every"
                            : cli_given(&galore_scale) ? "--galore-scale" : NULL;
    const char *teacher_only = cli_given(&distill_weight) ? "--distill-weight"
                             : cli_given(&distill_temp) ? "--distill-temp" : NULL;
    const char *dynamic_only = cli_given(&mix_every) ? "--mix-every" : cli_given(&mix_temp) ? "--mix-temp" : NULL;
    char msg[200];
    const char *bad = NULL;
    if (full && trace_path) bad = "--trace follows the LoRA runtime; --full takes no --trace yet";
    else if (full && stop_after && !ckpt && !resume) bad = "--stop-after with --full needs --ckpt DIR for its checkpoint";
    else if (!full && ckpt) bad = "--ckpt is full training's (--full); LoRA runs keep their checkpoints in --out";
    else if (full && pa.rslora) bad = "--rslora is a LoRA option; --full trains every weight without adapters";
    else if (full && lora_only)
        bad = say(msg, sizeof msg, "%s is a LoRA option; --full trains every weight without adapters", lora_only);
    else if (strcmp(optim, "adamw") != 0 && strcmp(optim, "galore") != 0) bad = "--optim must be adamw or galore";
    else if (!full && strcmp(optim, "adamw") != 0) bad = "--optim galore trains every weight: it goes with --full";
    else if (strcmp(optim, "galore") != 0 && galore_only)
        bad = say(msg, sizeof msg, "%s goes with --optim galore (and --full)", galore_only);
    else if (galore_rank < 1 || galore_rank > 65536) bad = "--galore-rank must be 1..65536";
    else if (galore_every < 0 || galore_every > 100000000) bad = "--galore-update-every must be 0..100000000";
    else if (!(galore_scale > 0) || !isfinite((float)galore_scale)) bad = "--galore-scale must be a finite number > 0";
    else if (!dynamic && strcmp(mix_mode, "static") != 0) bad = "--mix must be static or dynamic";
    else if (dynamic && data.n < 2) bad = "--mix dynamic re-weights several sources: give --data more than once";
    else if (dynamic && !reference)
        bad = "--mix dynamic needs --reference FILE, the original store whose validation losses the run recovers toward";
    else if (!dynamic && reference) bad = "--reference goes with --mix dynamic";
    else if (teacher && !full) bad = "--teacher distills into every weight: it goes with --full";
    else if (!teacher && teacher_only) bad = say(msg, sizeof msg, "%s goes with --teacher (and --full)", teacher_only);
    else if (full && base_model) bad = "--base-model names the adapter's base model; --full writes a store, no adapter";
    else if (!dynamic && dynamic_only)
        bad = say(msg, sizeof msg, "%s goes with --mix dynamic (several --data and a --reference)", dynamic_only);
    else if (stream && !full) bad = "--stream is full training's: it goes with --full (LoRA training always streams)";
    else if (!(distill_weight >= 0 && distill_weight <= 1)) bad = "--distill-weight must be in [0,1]";
    else if (!(distill_temp > 0) || !isfinite((float)distill_temp) || distill_temp > 1000)
        bad = "--distill-temp must be a number in (0, 1000]";
    else if (mix_every < 1 || mix_every > 100000000) bad = "--mix-every must be 1..100000000";
    else if (!(mix_temp > 0) || !isfinite((float)mix_temp) || (float)mix_temp < FLT_MIN)
        bad = "--mix-temp must be a finite number > 0 (at least 1.2e-38)";
    else if (val && data.n > 1)
        bad = "--val names one validation file; with several --data each source is validated on its FILE.val, else "
              "its last 1%";
    else if (rank < 1 || rank > 4096) bad = "--rank must be 1..4096";
    else if (steps < 1 || steps > 100000000) bad = "--steps must be 1..100000000";
    else if (seq < 2 || seq > 1 << 20) bad = "--seq must be 2..1048576";
    else if (micro < 1 || micro > TOOL_MICRO_MAX) bad = "--micro-batch must be 1.." TOOL_MICRO_MAX_S;
    else if (!(lr > 0) || !isfinite((float)lr) || !(min_lr >= 0) || min_lr > lr)
        bad = "--lr must be a finite number > 0 and --min-lr within [0, lr]";
    else if (!(alpha > 0) || !isfinite(alpha)) bad = "--alpha must be a finite number > 0";
    else if (!(wd >= 0) || !isfinite((float)wd)) bad = "--wd must be a finite number >= 0";
    else if (!(clip >= 0) || !isfinite((float)clip)) bad = "--clip must be a finite number >= 0 (0: no clipping)";
    else if (eval_tokens < 1 || eval_tokens > (1 << 30)) bad = "--eval-tokens must be 1..1G";
    else if (warmup < 0) bad = "--warmup cannot be negative";
    else if (eval_every < 0) bad = "--eval-every cannot be negative (0: only before training and at the end)";
    else if (save_every < 0) bad = "--save-every cannot be negative (0: at the end and at a stop only)";
    else if (stop_after < 0) bad = "--stop-after cannot be negative (0: off)";
    else if (threads < 0) bad = "--threads cannot be negative (0: all cores)";
    else if (batch_tokens < (uint64_t)(seq * micro) || batch_tokens % (uint64_t)(seq * micro))
        bad = "--batch-tokens must be a multiple of --seq x --micro-batch";
    if (bad) {
        fprintf(stderr, "tiertrain train: %s\n", bad);
        return 2;
    }
    if (base_model && tier_source_check(base_model, "--base-model")) { tool_fail("train"); return 2; }
    _Static_assert(CLI_STRS_MAX <= TT_MIX_MAX, "every --data fits a mixture");
    int nsrc = data.n;
    source *srcs = tt_xcalloc((size_t)nsrc, sizeof *srcs);
    double wsum = 0;
    for (int i = 0; i < nsrc; i++) {
        if (source_parse(data.v[i], &srcs[i])) { free(srcs); return 2; }
        wsum += srcs[i].weight;
        for (int j = 0; j < i; j++) /* one file twice (by another path too): two sources of the same tokens */
            if (tool_same_file(srcs[i].path, srcs[j].path)) {
                fprintf(stderr, "tiertrain train: --data %s and --data %s are the same file; give each source once "
                                "(FILE:W weights it)\n", srcs[j].path, srcs[i].path);
                free(srcs);
                return 2;
            }
    }
    if (!(wsum > 0)) { /* each weight is at most FLT_MAX: 16 of them add up within a double */
        fprintf(stderr, "tiertrain train: --data: every weight is 0; give at least one source a weight > 0\n");
        free(srcs);
        return 2;
    }
    tt_train_opts o = {0};
    o.model_path = model;
    o.out_dir = out;
    o.resume_dir = resume;
    tt_plan_req req;
    if (tool_plan_flags("train", NULL, &pa, &req)) { free(srcs); return 2; }
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
    if (tool_blas_threads("train", (int)threads)) { free(srcs); return 1; }
    o.threads = openblas_get_num_threads();
    const char *inputs[TRAIN_MAX_INPUTS + 1];
    int ni = 0;
    inputs[ni++] = model;
    for (int i = 0; i < nsrc; i++) {
        source *src = &srcs[i];
        src->val = nsrc == 1 ? val : NULL;
        src->val_implicit = !src->val; /* FILE.val, tokenize's split */
        if (!src->val && snprintf(src->vpath, sizeof src->vpath, "%s.val", src->path) < (int)sizeof src->vpath &&
            access(src->vpath, F_OK) == 0)
            src->val = src->vpath;
        inputs[ni++] = src->path;
        if (src->val) inputs[ni++] = src->val;
    }
    if (reference) inputs[ni++] = reference;
    if (teacher) inputs[ni++] = teacher;
    inputs[ni] = NULL;
    if (teacher && access(teacher, R_OK) != 0) {
        fprintf(stderr, "tiertrain train: --teacher %s cannot be read (%s); give the original model's store\n", teacher,
                strerror(errno));
        free(srcs);
        return 2;
    }
    int made_dir = 0;
    const char *run_dir = NULL;
    if (check_outputs(&o, full, force, inputs, resume, ckpt, trace_path, &run_dir, &made_dir)) {
        if (made_dir) abandon_out_dir(run_dir);
        free(srcs);
        return 2;
    }

    tt_mix *mix = NULL;
    tier_store *st = NULL, *rs = NULL;
    tt_exec *ex = NULL;
    tt_trace *trace = NULL;
    int exit_code = 1;
    /* --trace held from now on: a second run writing it is refused before it trains, not at its end */
    atomic_partial tfile = {-1, NULL};
    if (trace_path && atomic_partial_open(trace_path, &tfile)) { tool_fail("train"); goto done; }
    for (int i = 0; i < nsrc; i++) {
        if (tokfile_open(srcs[i].path, &srcs[i].tf)) { tool_fail("train"); goto done; }
        if (srcs[i].val && tokfile_open(srcs[i].val, &srcs[i].vf)) { tool_fail("train"); goto done; }
    }
    if (tier_open(&st, model)) { tool_fail("train"); goto done; }
    const tt_config *c = tier_config(st);
    o.base_fp = tier_base_fingerprint(c, tier_prune(st));
    o.weights_fp = tier_weights_fingerprint(st);
    int shrunk = 0; /* structurally pruned: the source model has other shapes */
    for (uint32_t l = 0; l < c->n_layers; l++) shrunk |= c->layers[l].pruned != 0;
    o.base_model = base_model ? base_model : shrunk ? NULL : tier_source(st);
    for (int i = 0; i < nsrc; i++)
        if ((exit_code = source_load(&srcs[i], c, model, seq, o.pack, as_json, nsrc > 1 ? srcs[i].path : ""))) goto done;
    exit_code = 1;
    tt_tokens *train = &srcs[0].train, *vt = &srcs[0].vt;
    uint64_t n_train = 0, n_val = 0;
    for (int i = 0; i < nsrc; i++) n_train += srcs[i].train.n, n_val += srcs[i].vt.n;
    if (nsrc > 1) { /* a mixture: the loop takes its sources */
        mix = tt_xcalloc(1, sizeof *mix);
        mix->n = nsrc;
        mix->mode = dynamic ? TT_MIX_DYNAMIC : TT_MIX_STATIC;
        mix->every = (int)mix_every;
        mix->tau = (float)mix_temp; /* as the checkpoint records it */
        for (int i = 0; i < nsrc; i++) {
            mix->name[i] = srcs[i].path;
            mix->train[i] = srcs[i].train;
            mix->val[i] = srcs[i].vt;
            mix->base[i] = mix->w[i] = srcs[i].weight / wsum;
            mix->ref[i] = NAN;
            const tt_tokens *v = &srcs[i].vt;
            if (dynamic && (v->flags ? v->n_ex == 0 : v->n <= (uint64_t)seq)) {
                fprintf(stderr, "tiertrain train: --mix dynamic scores each source's validation tokens, but %s has "
                                "%llu, fewer than one --seq %ld window plus its target; give it more text or a %s.val "
                                "file\n", srcs[i].path, (unsigned long long)v->n, seq, srcs[i].path);
                goto done;
            }
        }
        o.mix = mix;
        if (!as_json) {
            printf("data: a %s mixture of %d sources%s\n", dynamic ? "dynamic" : "static", nsrc,
                   dynamic ? "" : " (the weights stay as given)");
            for (int i = 0; i < nsrc; i++)
                printf("  %s: weight %.4f, %llu training tokens, %llu validation tokens (%s)\n", srcs[i].path,
                       mix->base[i], (unsigned long long)srcs[i].train.n, (unsigned long long)srcs[i].vt.n,
                       srcs[i].vf ? tokfile_path(srcs[i].vf) : "held out: its last 1%");
        }
    }
    if (reference) {
        if (tier_open(&rs, reference)) { tool_fail("train"); goto done; }
        if (tier_config(rs)->vocab != c->vocab) {
            fprintf(stderr, "tiertrain train: --reference %s has a vocabulary of %u tokens but --model %s has %u; the "
                            "reference must be the model's original store (the same tokenizer)\n", reference,
                    tier_config(rs)->vocab, model, c->vocab);
            goto done;
        }
        /* a resume takes the reference's losses from the checkpoint, as the interrupted run scored them */
        if (!resume && (exit_code = reference_losses(reference, rs, &req, mix, (int)eval_tokens, as_json))) goto done;
        exit_code = 1;
        tier_close(rs);
        rs = NULL;
    }
    if (full) {
        tt_galore_cfg gc = {(int)galore_rank, (int)galore_every, (float)galore_scale, 0};
        exit_code = run_full(&o, &pa, train, vt, srcs[0].vf != NULL,
                             strcmp(optim, "galore") == 0 ? FULL_OPTIM_GALORE : FULL_OPTIM_ADAMW, &gc, teacher,
                             distill_weight, distill_temp, stream, ckpt);
        goto done;
    }
    tt_plan plan;
    if (plan_make(st, &req, &plan)) {
        tool_plan_rank_hint(st, &pa, 0, 0, 0, 0);
        tool_fail("train");
        goto done;
    }
    /* with --trace every event is kept for the file (~60 MB; past that they are counted as dropped);
     * without it the trace only feeds the per-step busy/overlap figures and is cleared each step */
    trace = trace_create(trace_path ? 1u << 20 : 64u << 10);
    o.trace = trace;
    o.trace_keep = trace_path != NULL;
    if (exec_create(&ex, st, &plan, o.seed, trace)) { tool_fail("train"); goto done; }
    if (!out_has_room(out, exec_lora(ex)->n, save_every > 0 && save_every < steps)) goto done;
    if (!as_json) {
        char tg[128];
        lora_targets_str(o.lora.targets, tg, sizeof tg);
        printf("train: %s (%s, %u layers), LoRA r=%ld alpha=%g%s on %s; %llu training tokens, %llu validation tokens%s\n",
               model, c->name, c->n_layers, rank, alpha, pa.rslora ? " (rslora: scale alpha/sqrt(r))" : "", tg,
               (unsigned long long)n_train, (unsigned long long)n_val,
               mix ? " (the sources above)" : srcs[0].vf ? "" : " (held out from --data)");
        char wn[160];
        printf("train: %d steps of %llu tokens (%d micro-batches of %ld x %ld), lr %g -> %g, warmup %ld%s, out %s\n",
               o.steps, (unsigned long long)batch_tokens, o.accum, micro, seq, lr, min_lr, warmup,
               warmup_note(warmup, steps, lr, wn, sizeof wn), out);
        char db[32], hb[32], gb[32], within[96] = "";
        if (plan.hbm_from_avail) /* no --hbm, or one beyond the GPU */
            snprintf(within, sizeof within, " (within --hbm %s: the most the GPU can give now)",
                     tt_fmt_bytes(plan.req.hbm, gb, sizeof gb));
        printf("plan: %d of %u layer slots, activations %d on device / %d spilled, lm_head %s, host cache %s; "
               "device %s%s, host %s\n", plan.slots, c->n_layers, plan.dev_cells, plan.host_cells,
               plan.head_on_device ? "on device" : "streamed", plan.host_cache ? "yes" : "no",
               tt_fmt_bytes(plan.dev_bytes, db, sizeof db), within, tt_fmt_bytes(plan.host_bytes, hb, sizeof hb));
        fflush(stdout);
    }
    tt_train_result res;
    int trc = train_run(&o, ex, mix ? NULL : train, mix ? NULL : vt, &res);
    int trace_failed = trace_path && trace_write_chrome_held(trace, trace_path, &tfile); /* the adapter stands; the exit says it */
    if (trace_failed) tool_fail("train");
    else if (trace_path && !as_json) printf("trace: %s (%zu events; open it in Perfetto or chrome://tracing)\n", trace_path,
                                       trace_n_events(trace));
    if (trc) { tool_fail("train"); goto done; }
    if (as_json && res.steps_done > 0) { /* the run's summary, as the text's last lines: one object after the steps' */
        json_t *j = summary_json(&res, (int)steps);
        json_object_set_new(j, "adapter", json_string(out)); /* not set where out is not UTF-8 */
        json_object_set_new(j, "dev_arena_peak", json_integer((json_int_t)exec_dev_peak(ex)));
        json_object_set_new(j, "dev_planned", json_integer((json_int_t)plan.dev_bytes));
        json_object_set_new(j, "hbm", json_integer((json_int_t)(plan.hbm_from_avail ? plan.req.hbm : pa.hbm)));
        if (plan.hbm_from_avail) json_object_set_new(j, "hbm_from_gpu", json_true()); /* no --hbm, or one beyond it */
        json_object_set_new(j, "host_arena_peak", json_integer((json_int_t)exec_host_peak(ex)));
        json_object_set_new(j, "io_bytes", json_integer((json_int_t)exec_io_bytes(ex)));
        if (res.dev_in_use) json_object_set_new(j, "gpu_bytes_in_use", json_integer((json_int_t)res.dev_in_use));
        char *txt = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (txt) puts(txt);
        free(txt);
        json_decref(j);
    }
    if (!as_json && res.steps_done > 0) {
        char dp[32], hp[32];
        char sum[320];
        train_result_summary(&res, sum, sizeof sum);
        printf("done: %s; adapter in %s\n", sum, out);
        if (mix) {
            printf("mix at the end:");
            for (int i = 0; i < nsrc; i++) printf("%s %s %.4f", i ? "," : "", srcs[i].path, mix->w[i]);
            printf("\n");
        }
        printf("peak memory: device arena %s (planned %llu bytes, --hbm %s), host arena %s; NVMe read %.1f MB\n",
               tt_fmt_bytes(exec_dev_peak(ex), dp, sizeof dp), (unsigned long long)plan.dev_bytes,
               hbm_str(plan.hbm_from_avail ? plan.req.hbm : pa.hbm), tt_fmt_bytes(exec_host_peak(ex), hp, sizeof hp),
               exec_io_bytes(ex) / 1e6);
        if (res.dev_in_use)
            printf("GPU memory held after step 1 (NVML, everything: arena, context, kernels, workspaces): %s\n",
                   tt_fmt_bytes(res.dev_in_use, dp, sizeof dp));
    }
    exit_code = trace_failed ? 1 : stopped_exit(&res);
done:
    for (int i = 0; i < nsrc; i++) {
        train_free_examples(&srcs[i].train);
        train_free_examples(&srcs[i].vt);
        tokfile_close(srcs[i].tf);
        tokfile_close(srcs[i].vf);
    }
    free(srcs);
    free(mix);
    exec_free(ex);
    trace_free(trace);
    atomic_partial_drop(&tfile); /* a run that failed before writing it */
    tier_close(rs);
    tier_close(st);
    if (exit_code && made_dir) abandon_out_dir(run_dir);
    return exit_code;
}
