/* core/train.c — the LoRA training loop. */
#include "core/train.h"

#include "core/base/common.h"
#include "core/base/rng.h"
#include "io/ckpt.h"
#include "io/peft.h"
#include "core/exec.h"
#include "core/tokfile.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>
#include <unistd.h>

_Static_assert((int)TT_PROJ_COUNT == (int)PEFT_N_PROJ, "LoRA projections and PEFT projections share one order");

static volatile sig_atomic_t g_stop_signal;

static struct sigaction g_old_int, g_old_term;

static void on_signal(int sig) { g_stop_signal = sig; }

void train_stop_arm(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C ends the process at once */
    g_stop_signal = 0;
    sigaction(SIGINT, &sa, &g_old_int);
    sigaction(SIGTERM, &sa, &g_old_term);
}

int train_stop_requested(void) { return g_stop_signal; }

void train_stop_disarm(void) {
    sigaction(SIGINT, &g_old_int, NULL);
    sigaction(SIGTERM, &g_old_term, NULL);
}

double train_lr(const tt_train_opts *o, int step) {
    if (o->warmup > 0 && step <= o->warmup) return (double)o->lr * step / o->warmup;
    int decay = o->steps - o->warmup;
    if (decay <= 0) return o->lr;
    double p = (double)(step - o->warmup) / decay;
    if (p > 1) p = 1;
    return o->min_lr + 0.5 * ((double)o->lr - o->min_lr) * (1.0 + cos(M_PI * p));
}

void train_index_examples(tt_tokens *tok) {
    tok->starts = NULL;
    tok->n_ex = 0;
    if (!tok->flags) return;
    for (uint64_t i = 0; i < tok->n; i++) tok->n_ex += (tok->flags[i] & TOKFILE_START) != 0;
    tok->starts = tt_xmalloc((tok->n_ex ? tok->n_ex : 1) * sizeof *tok->starts);
    for (uint64_t i = 0, k = 0; i < tok->n; i++)
        if (tok->flags[i] & TOKFILE_START) tok->starts[k++] = i;
}

void train_free_examples(tt_tokens *tok) {
    free(tok->starts);
    tok->starts = NULL;
    tok->n_ex = 0;
}

/* Example e as [*s, *e). */
static void example_at(const tt_tokens *tok, uint64_t i, uint64_t *s, uint64_t *e) {
    *s = tok->starts[i];
    *e = i + 1 < tok->n_ex ? tok->starts[i + 1] : tok->n;
}

/* One row of S positions from example i: its tokens predicting the next, weighted by their target flag; past
 * the example (or past S + 1 tokens of it) padding with no target. Returns the row's weight. */
static double example_row(const tt_tokens *tok, uint64_t i, int S, int32_t *in, int32_t *tgt, tt_real *wt) {
    uint64_t s, e;
    example_at(tok, i, &s, &e);
    double w = 0;
    for (int t = 0; t < S; t++) {
        uint64_t p = s + (uint64_t)t;
        int ok = p + 1 < e;
        in[t] = (int32_t)tok->t[ok ? p : s];
        tgt[t] = ok ? (int32_t)tok->t[p + 1] : -1;
        wt[t] = ok && (tok->flags[p + 1] & TOKFILE_TRAIN) ? 1 : 0;
        w += wt[t];
    }
    return w;
}

uint64_t train_example_targets(const tt_tokens *tok, uint64_t i, int seq) {
    uint64_t s, e, n = 0;
    example_at(tok, i, &s, &e);
    for (uint64_t p = s + 1; p < e && p <= s + (uint64_t)seq; p++) n += (tok->flags[p] & TOKFILE_TRAIN) != 0;
    return n;
}

void train_example_stats(const tt_tokens *tok, int seq, uint64_t *cut, uint64_t *untrained) {
    *cut = *untrained = 0;
    for (uint64_t i = 0; i < tok->n_ex; i++) {
        uint64_t s, e;
        example_at(tok, i, &s, &e);
        *cut += e - s > (uint64_t)seq + 1;
        *untrained += train_example_targets(tok, i, seq) == 0;
    }
}

/* Packs examples drawn from r into one row of S positions (train_sample_batch). */
static void packed_row(const tt_tokens *tok, tt_rng *r, int S, int32_t *in, int32_t *tgt, tt_real *wt, int32_t *seg) {
    int a = 0;
    for (;;) {
        uint64_t i = rng_below(r, tok->n_ex), s, e;
        example_at(tok, i, &s, &e);
        uint64_t len = e - s;
        if (a > 0 && len > (uint64_t)(S - a)) break; /* the next one does not fit whole: padding */
        int n = len > (uint64_t)(S - a) ? S - a : (int)len; /* positions it takes (the first one: cut at S) */
        for (int t = 0; t < n; t++) {
            uint64_t p = s + (uint64_t)t;
            int ok = p + 1 < e; /* its last token predicts nothing: the next position is another example's */
            in[a + t] = (int32_t)tok->t[p];
            tgt[a + t] = ok ? (int32_t)tok->t[p + 1] : -1;
            wt[a + t] = ok && (tok->flags[p + 1] & TOKFILE_TRAIN) ? 1 : 0;
            seg[a + t] = a;
        }
        a += n;
        if (a == S) return;
    }
    for (int t = a; t < S; t++) in[t] = in[a - 1], tgt[t] = -1, wt[t] = 0, seg[t] = a;
}

void train_sample_batch(const tt_tokens *tok, uint64_t seed, int step, int micro, int B, int seq, int32_t *in,
                        int32_t *tgt, tt_real *wt, int32_t *seg) {
    tt_rng r;
    rng_seed(&r, seed ^ 0xda7a5eedull, ((uint64_t)step << 20) ^ (uint64_t)micro);
    for (int b = 0; b < B; b++) {
        if (tok->flags) {
            TT_ASSERT(tok->n_ex > 0);
            if (seg) packed_row(tok, &r, seq, in + b * seq, tgt + b * seq, wt + b * seq, seg + b * seq);
            else (void)example_row(tok, rng_below(&r, tok->n_ex), seq, in + b * seq, tgt + b * seq, wt + b * seq);
            continue;
        }
        uint64_t off = rng_below(&r, tok->n - (uint64_t)seq);
        for (int t = 0; t < seq; t++) {
            in[b * seq + t] = (int32_t)tok->t[off + t];
            tgt[b * seq + t] = (int32_t)tok->t[off + t + 1];
            wt[b * seq + t] = 1;
        }
    }
}

static int eval_exec(void *ctx, const int32_t *in, const int32_t *tgt, const tt_real *wt, double *loss) {
    return exec_eval(ctx, in, tgt, wt, loss);
}

int train_eval(tt_exec *e, const tt_tokens *tok, int max_tokens, double *loss_out) {
    const tt_plan *p = exec_plan(e);
    return train_eval_with(eval_exec, e, p->req.B, p->req.seq, p->req.K, tok, max_tokens, loss_out);
}

int train_eval_with(train_eval_fn fn, void *ctx, int B, int S, int K, const tt_tokens *tok, int max_tokens,
                    double *loss_out) {
    int T = B * S;
    size_t n = (size_t)K * T;
    int32_t *in = tt_xmalloc(n * sizeof *in), *tgt = tt_xmalloc(n * sizeof *tgt);
    tt_real *wt = tt_xmalloc(n * sizeof *wt);
    double loss = 0, count = 0;
    uint64_t pos = 0;
    int rc = 0;
    /* examples: one per row, in order, until max_tokens targets are scored */
    for (uint64_t ex = 0; tok->flags && ex < tok->n_ex && count < max_tokens;) {
        for (int b = 0; b < K * B; b++) {
            size_t o = (size_t)b * S;
            if (ex < tok->n_ex && count < max_tokens) count += example_row(tok, ex++, S, in + o, tgt + o, wt + o);
            else
                for (int t = 0; t < S; t++) in[o + t] = 0, tgt[o + t] = -1, wt[o + t] = 0;
        }
        double l = 0;
        if ((rc = fn(ctx, in, tgt, wt, &l))) break;
        loss += l;
    }
    while (!tok->flags && count < max_tokens && pos + (uint64_t)S + 1 <= tok->n) {
        /* K x B consecutive windows of seq + 1 tokens; the ones past the end are padding with weight 0 */
        for (int b = 0; b < K * B; b++) {
            int ok = pos + (uint64_t)S + 1 <= tok->n && count < max_tokens;
            for (int t = 0; t < S; t++) {
                in[(size_t)b * S + t] = ok ? (int32_t)tok->t[pos + t] : 0;
                tgt[(size_t)b * S + t] = ok ? (int32_t)tok->t[pos + t + 1] : -1;
                wt[(size_t)b * S + t] = ok ? 1 : 0;
            }
            if (ok) { pos += (uint64_t)S; count += S; }
        }
        double l = 0;
        if ((rc = fn(ctx, in, tgt, wt, &l))) break;
        loss += l;
    }
    free(in); free(tgt); free(wt);
    *loss_out = count > 0 && rc == 0 ? loss / count : NAN;
    return rc;
}

static int write_adapter(const tt_train_opts *o, const tt_model *m, const tt_lora *lo, const char *dir) {
    const tt_config *c = model_config(m);
    peft_adapter a;
    memset(&a, 0, sizeof a);
    a.n_layers = c->n_layers;
    a.rank = (uint32_t)lo->cfg.rank;
    a.alpha = lo->cfg.alpha;
    a.rslora = lo->cfg.rslora;
    a.dropout = lo->cfg.dropout;
    a.target_mask = lo->cfg.targets;
    a.base_model = o->base_model;
    a.base_fp = o->base_fp;
    size_t bytes = lo->n * sizeof(tt_real);
    tt_real *host = tt_xmalloc(bytes ? bytes : 1);
    lora_params_get(lo, host);
    float *f = tt_xmalloc((lo->n ? lo->n : 1) * sizeof *f);
    for (size_t i = 0; i < lo->n; i++) f[i] = (float)host[i];
    free(host);
    a.lora = tt_xcalloc((size_t)c->n_layers * PEFT_N_PROJ, sizeof *a.lora);
    for (uint32_t l = 0; l < c->n_layers; l++)
        for (int p = 0; p < TT_PROJ_COUNT; p++) {
            const tt_lora_slot *s = &lo->slot[l][p];
            if (!s->in) continue;
            peft_lora *e = peft_at(&a, l, p);
            e->in = (uint32_t)s->in;
            e->out = (uint32_t)s->out;
            e->A = f + s->a;
            e->B = f + s->b;
        }
    int rc = peft_write(dir, &a);
    free(a.lora);
    free(f);
    return rc;
}

static void fill_state(ckpt_state *st, const tt_train_opts *o, const tt_model *m, const tt_lora *lo,
                       const tt_tokens *train, int step, uint64_t tokens_seen) {
    memset(st, 0, sizeof *st);
    st->step = (uint64_t)step;
    st->seed = o->seed;
    st->model_fp = config_fingerprint(model_config(m));
    st->n_params = lo->n;
    st->real_bytes = sizeof(tt_real);
    st->rank = (uint32_t)lo->cfg.rank;
    st->targets = lo->cfg.targets;
    st->alpha = lo->cfg.alpha;
    st->dropout = lo->cfg.dropout;
    st->steps = (uint32_t)o->steps; st->seq = (uint32_t)o->seq; st->micro_batch = (uint32_t)o->micro_batch;
    st->accum = (uint32_t)o->accum; st->warmup = (uint32_t)o->warmup;
    st->lr = o->lr; st->min_lr = o->min_lr; st->wd = o->wd; st->b1 = o->b1; st->b2 = o->b2; st->eps = o->eps;
    st->clip = o->clip;
    st->tokens_seen = tokens_seen;
    st->data_tokens = train->n;
    st->data_hash = XXH3_64bits(train->t, train->n * sizeof *train->t);
    if (train->flags) st->data_hash ^= XXH3_64bits(train->flags, train->n) * 0x9e3779b97f4a7c15ull; /* the masks too */
    st->threads = (uint32_t)o->threads;
    st->act_bf16 = (uint32_t)o->act_bf16;
    st->rslora = (uint32_t)lo->cfg.rslora;
    st->no_pack = train->flags && !o->pack; /* the sampler differs: resume must match */
}

static int save_checkpoint(const tt_train_opts *o, const tt_model *m, const tt_lora *lo, const tt_tokens *train,
                           int step, uint64_t tokens_seen) {
    ckpt_state st;
    fill_state(&st, o, m, lo, train, step, tokens_seen);
    size_t n = lo->n;
    void *p = tt_xmalloc(n * sizeof(tt_real) + 1);
    float *mm = tt_xmalloc(n * sizeof(float) + 1), *vv = tt_xmalloc(n * sizeof(float) + 1);
    lora_params_get(lo, p);
    lora_moments_get(lo, mm, vv);
    int rc = ckpt_write(o->out_dir, &st, p, mm, vv);
    free(p); free(mm); free(vv);
    if (rc == 0) rc = write_adapter(o, m, lo, o->out_dir);
    return rc;
}

/* Restores a checkpoint into lo after checking it belongs to this run: the
 * same model, LoRA shape, data and options, else continuing would not be the
 * run that was interrupted. */
static int load_checkpoint(const tt_train_opts *o, const tt_model *m, tt_lora *lo, const tt_tokens *train, int *step,
                           uint64_t *seen) {
    ckpt_state st;
    void *p;
    float *mm, *vv;
    int rc = ckpt_read(o->resume_dir, &st, &p, &mm, &vv);
    if (rc) return rc;
    ckpt_state want;
    fill_state(&want, o, m, lo, train, 0, 0);
    if (st.model_fp != want.model_fp) rc = TT_FAIL(-EINVAL, "the checkpoint in %s was made for another model", o->resume_dir);
    else if (st.real_bytes != want.real_bytes)
        rc = TT_FAIL(-EINVAL, "the checkpoint in %s was written by a build with another precision", o->resume_dir);
    else if (st.n_params != want.n_params || st.rank != want.rank || st.targets != want.targets || st.alpha != want.alpha ||
             st.rslora != want.rslora)
        rc = TT_FAIL(-EINVAL, "the checkpoint in %s has another LoRA shape (rank %u, alpha %g%s; this run: rank %u, alpha "
                     "%g%s, or other --targets)", o->resume_dir, st.rank, (double)st.alpha, st.rslora ? ", --rslora" : "",
                     want.rank, (double)want.alpha, want.rslora ? ", --rslora" : "");
    else if (st.data_tokens != want.data_tokens || st.data_hash != want.data_hash)
        rc = TT_FAIL(-EINVAL, "the checkpoint in %s was trained on other data (%llu tokens then, %llu now); resume with "
                     "the same --data (and the same validation split)", o->resume_dir,
                     (unsigned long long)st.data_tokens, (unsigned long long)want.data_tokens);
    else {
        const struct { const char *name; double was, now; } opt[] = {
            {"--seed", (double)st.seed, (double)want.seed}, {"--seq", st.seq, want.seq},
            {"--micro-batch", st.micro_batch, want.micro_batch}, {"--batch-tokens / (seq x micro-batch)", st.accum, want.accum},
            {"--steps", st.steps, want.steps}, {"--warmup", st.warmup, want.warmup}, {"--lr", st.lr, want.lr},
            {"--min-lr", st.min_lr, want.min_lr}, {"--wd", st.wd, want.wd}, {"--clip", st.clip, want.clip},
            {"--dropout", st.dropout, want.dropout}, {"--threads", st.threads, want.threads},
            {"--act-dtype (1 = bf16)", st.act_bf16, want.act_bf16}, {"--no-pack", st.no_pack, want.no_pack},
        };
        for (size_t i = 0; i < sizeof opt / sizeof opt[0] && rc == 0; i++)
            if (opt[i].was != opt[i].now)
                rc = TT_FAIL(-EINVAL, "the checkpoint in %s was made with other training options (%s was %g, now %g); "
                             "resume with the same flags", o->resume_dir, opt[i].name, opt[i].was, opt[i].now);
    }
    if (rc == 0) {
        lora_params_set(lo, p);
        lora_moments_set(lo, mm, vv);
        *step = (int)st.step;
        *seen = st.tokens_seen;
    }
    free(p); free(mm); free(vv);
    return rc;
}

static void fmt_time(double s, char *buf, size_t cap) {
    long t = (long)(s + 0.5);
    snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

/* LoRA training's side of the loop: the executor's step, validation through
 * it, checkpoints + the PEFT adapter. */
typedef struct lora_ctx {
    const tt_train_opts *o;
    tt_exec *e;
    const tt_model *m;
    tt_lora *lo;
    const tt_tokens *train;
} lora_ctx;

static int lora_step(void *ctx, const int32_t *in, const int32_t *tgt, const tt_real *wt, const int32_t *seg,
                     double lr, int step, uint64_t drop, double *loss, double *gnorm) {
    lora_ctx *c = ctx;
    const tt_train_opts *o = c->o;
    exec_set_segments(c->e, seg);
    int rc = exec_step(c->e, in, tgt, wt, (float)lr, step, o->b1, o->b2, o->eps, o->wd, o->clip, drop, loss, gnorm);
    exec_set_segments(c->e, NULL); /* evaluation: one example per sequence */
    return rc;
}
static int lora_eval(void *ctx, const tt_tokens *val, int max_tokens, double *loss) {
    return train_eval(((lora_ctx *)ctx)->e, val, max_tokens, loss);
}
static int lora_save(void *ctx, int step, uint64_t seen) {
    lora_ctx *c = ctx;
    return save_checkpoint(c->o, c->m, c->lo, c->train, step, seen);
}

int train_run(const tt_train_opts *o, tt_exec *e, const tt_tokens *train, const tt_tokens *val,
              tt_train_result *res) {
    memset(res, 0, sizeof *res);
    res->first_val = res->last_val = NAN;
    const tt_model *m = exec_model(e);
    const tt_config *c = model_config(m);
    const tt_plan *plan = exec_plan(e);
    int B = o->micro_batch, S = o->seq, K = o->accum;
    TT_ASSERT(plan->req.B == B && plan->req.seq == S && plan->req.K == K);
    TT_ASSERT(o->clip <= 0 || exec_user_cfg(&plan->req.user).defer_optimizer);
    if (train->flags ? train->n_ex == 0 : train->n < (uint64_t)S + 1)
        return TT_FAIL(-EINVAL, "the training data has %llu tokens, %s; use more data%s", (unsigned long long)train->n,
                       train->flags ? "no example" : "fewer than --seq + 1", train->flags ? "" : " or a shorter --seq");
    for (uint64_t i = 0; i < train->n; i++)
        if (train->t[i] >= c->vocab)
            return TT_FAIL(-EINVAL, "token %u in the training data is outside the model's vocabulary of %u; "
                           "tokenize with the model's tokenizer", train->t[i], c->vocab);
    struct stat sb;
    if (mkdir(o->out_dir, 0755) != 0 && errno != EEXIST)
        return TT_FAIL(-errno, "cannot create --out %s: %s", o->out_dir, strerror(errno));
    if (stat(o->out_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return TT_FAIL(-ENOTDIR, "--out %s is not a directory", o->out_dir);
    if (access(o->out_dir, W_OK) != 0)
        return TT_FAIL(-EACCES, "--out %s is not writable", o->out_dir);

    tt_lora *lo = exec_lora(e);
    int step = 0, rc = 0;
    uint64_t seen = 0;
    if (o->resume_dir) {
        rc = load_checkpoint(o, m, lo, train, &step, &seen);
        if (rc) return rc;
        if (!o->quiet && !o->json) printf("resumed from %s at step %d\n", o->resume_dir, step);
    }
    lora_ctx lc = {o, e, m, lo, train};
    static const tt_loop_ops ops = {lora_step, lora_eval, lora_save};
    return train_loop(o, &ops, &lc, train, val, step, seen, res);
}

/* What an early end leaves behind, as the loop's messages say it: the last
 * checkpoint in --out when one exists (it is intact: checkpoints are written
 * atomically), else that nothing was written. */
static void kept_msg(const tt_train_opts *o, const tt_loop_ops *ops, char *kept, size_t kc, char *nothing, size_t nc) {
    char ck[1100];
    struct stat sb;
    int has = ops->save && snprintf(ck, sizeof ck, "%s/" CKPT_FILE, o->out_dir) < (int)sizeof ck && stat(ck, &sb) == 0;
    if (has) snprintf(kept, kc, "the last checkpoint in %s is intact", o->out_dir);
    else snprintf(kept, kc, "no checkpoint was written yet");
    if (has) snprintf(nothing, nc, "nothing was saved (%s)", kept);
    else snprintf(nothing, nc, "nothing was written");
}

int train_loop(const tt_train_opts *o, const tt_loop_ops *ops, void *ctx, const tt_tokens *train,
               const tt_tokens *val, int start, uint64_t seen, tt_train_result *res) {
    int B = o->micro_batch, S = o->seq, T = B * S, K = o->accum, step = start, rc = 0;
    /* what an early end leaves behind, for the messages */
    char kept[1200], nothing[1300];
    kept_msg(o, ops, kept, sizeof kept, nothing, sizeof nothing);
    train_stop_arm();

    size_t n = (size_t)K * T;
    int32_t *in = tt_xmalloc(n * sizeof *in), *tgt = tt_xmalloc(n * sizeof *tgt);
    tt_real *wt = tt_xmalloc(n * sizeof *wt);
    int32_t *seg = train->flags && o->pack ? tt_xmalloc(n * sizeof *seg) : NULL;
    int can_val = val && (val->flags ? val->n_ex > 0 : val->n > (uint64_t)S); /* something to score */
    if (can_val && start == 0) {
        rc = ops->eval(ctx, val, o->eval_tokens, &res->first_val);
        if (rc) {
            rc = TT_FAIL(rc, "validation before step 1 failed: %s", tt_lasterr());
            free(in); free(tgt); free(wt); free(seg);
            train_stop_disarm();
            return rc;
        }
        res->last_val = res->first_val;
        if (o->json) printf("{\"step\":0,\"steps\":%d,\"val_loss\":%.6f}\n", o->steps, res->first_val);
        else if (!o->quiet) printf("step 0/%d  val %.4f (before training)\n", o->steps, res->first_val);
    }
    double t0 = tt_now();
    while (step < o->steps) {
        step++;
        double ts = tt_now();
        if (o->trace) {
            if (!o->trace_keep) trace_clear(o->trace); /* statistics only: the buffer never fills */
            trace_step_begin(o->trace, ts);
        }
        double lr = train_lr(o, step);
        for (int k = 0; k < K; k++)
            train_sample_batch(train, o->seed, step, k, B, S, in + (size_t)k * T, tgt + (size_t)k * T,
                               wt + (size_t)k * T, seg ? seg + (size_t)k * T : NULL);
        uint64_t drop = o->lora.dropout > 0 ? ((o->seed * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)step << 24)) | 1 : 0;
        double loss = 0, gnorm = 0;
        rc = ops->step(ctx, in, tgt, wt, seg, lr, step, drop, &loss, &gnorm);
        if (rc) {
            rc = TT_FAIL(rc, "step %d failed: %s; %s", step, tt_lasterr(), kept);
            break;
        }
        if (!isfinite(gnorm) || !isfinite(loss)) {
            rc = TT_FAIL(-EINVAL, "the %s became %g at step %d; %s; lower --lr (now %g) or check the data",
                         isfinite(loss) ? "gradient norm" : "loss", isfinite(loss) ? gnorm : loss, step,
                         nothing,
                         (double)o->lr);
            break;
        }
        seen += (uint64_t)n;
        if (step == start + 1) {
            res->first_loss = loss;
            /* the warm-up pass is done: every kernel a step runs is loaded and every library workspace taken */
            uint64_t used;
            if (be_dev_in_use(&used) == 0) {
                res->dev_in_use = used;
                if (o->hbm && used > o->hbm) {
                    char u[32], h[32], sug[32];
                    uint64_t over = used - o->hbm, margin = (uint64_t)64 << 20;
                    tt_fmt_bytes(used, u, sizeof u);
                    tt_fmt_bytes(o->hbm, h, sizeof h);
                    tt_fmt_bytes(o->hbm > 2 * over + margin ? o->hbm - over - margin : 0, sug, sizeof sug);
                    rc = TT_FAIL(-ENOMEM,
                                 "after the first step this process holds %s of GPU memory (NVML), above --hbm %s: the "
                                 "CUDA context, kernels and library workspaces outside the arena took more than the "
                                 "plan counted; %s; run again with --hbm %s (the arena that much smaller)",
                                 u, h, nothing, sug);
                    break;
                }
            }
        }
        res->last_loss = loss;
        res->steps_done = step;
        double now = tt_now(), el = now - t0, per = el / (step - start);
        tt_trace_stats ts_stats = {0};
        if (o->trace) trace_step_stats(o->trace, now, &ts_stats);
        double vloss = NAN;
        int stop_sig = train_stop_requested(); /* read once: the save and the stop below must agree */
        int last = step == o->steps || step == o->stop_after || stop_sig;
        if (can_val && ((o->eval_every > 0 && step % o->eval_every == 0) || last)) {
            rc = ops->eval(ctx, val, o->eval_tokens, &vloss);
            if (rc) {
                rc = TT_FAIL(rc, "validation after step %d failed: %s; %s", step, tt_lasterr(), kept);
                break;
            }
            if (isnan(res->first_val)) res->first_val = vloss;
            res->last_val = vloss;
        }
        if (o->json) {
            printf("{\"step\":%d,\"steps\":%d,\"loss\":%.6f,\"lr\":%.6g,\"grad_norm\":%.6g,\"tokens_per_s\":%.1f,"
                   "\"elapsed_s\":%.3f,\"step_s\":%.4f",
                   step, o->steps, loss, lr, gnorm, (double)n / (now - ts), el, now - ts);
            if (o->trace)
                printf(",\"io_busy_pct\":%.1f,\"compute_busy_pct\":%.1f,\"overlap_eff\":%.3f", ts_stats.io_pct,
                       ts_stats.compute_pct, ts_stats.overlap_eff);
            if (!isnan(vloss)) printf(",\"val_loss\":%.6f", vloss);
            if (step == start + 1 && res->dev_in_use) printf(",\"gpu_bytes_in_use\":%llu", (unsigned long long)res->dev_in_use);
            printf("}\n");
        } else if (!o->quiet) {
            char el_s[32], eta[32];
            fmt_time(el, el_s, sizeof el_s);
            fmt_time(per * (o->steps - step), eta, sizeof eta);
            printf("step %*d/%d  loss %.4f  lr %.2e  gnorm %.3f  %6.0f tok/s  elapsed %s  eta %s", (int)log10(o->steps) + 1,
                   step, o->steps, loss, lr, gnorm, (double)n / (now - ts), el_s, eta);
            if (o->trace)
                printf("  io %3.0f%%  compute %3.0f%%  overlap %.2f", ts_stats.io_pct, ts_stats.compute_pct,
                       ts_stats.overlap_eff);
            if (!isnan(vloss)) printf("  val %.4f", vloss);
            printf("\n");
        }
        fflush(stdout);
        if (ops->save && ((o->save_every > 0 && step % o->save_every == 0) || last)) {
            rc = ops->save(ctx, step, seen);
            if (rc) break;
            kept_msg(o, ops, kept, sizeof kept, nothing, sizeof nothing); /* a checkpoint exists now */
        }
        if (stop_sig || step == o->stop_after) {
            res->interrupted = stop_sig != 0;
            if (ops->save && !o->quiet && !o->json)
                printf("%s at step %d; checkpoint written to %s (continue with --resume %s)\n",
                       stop_sig ? "interrupted" : "stopped", step, o->out_dir, o->out_dir);
            else if (!ops->save && !o->quiet)
                fprintf(stderr, "%s at step %d: writing the model as it is now\n",
                        stop_sig ? "interrupted" : "stopped", step);
            break;
        }
    }
    train_stop_disarm();
    free(in); free(tgt); free(wt); free(seg);
    return rc;
}
