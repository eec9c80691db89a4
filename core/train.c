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
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>
#include <unistd.h>

_Static_assert((int)TT_PROJ_COUNT == (int)PEFT_N_PROJ, "LoRA projections and PEFT projections share one order");
_Static_assert(TT_MIX_MAX == CKPT_MIX_MAX, "a checkpoint records every source a mixture can have");

/* The stop request: the first signal's number (0: none). Atomic: the handler runs on whichever thread the
 * signal finds (an OpenBLAS or IO thread) while the loop's thread reads it. */
static atomic_int g_stop_signal;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "a signal handler may touch lock-free atomics only");

static struct sigaction g_old_int, g_old_term, g_old_hup;
/* What the first signal prints, by g_stop_phase: 0 in the validation before step 1, 1 from step 1 on. */
static char g_stop_notice[2][320];
static size_t g_stop_notice_len[2];
static atomic_int g_stop_phase, g_stop_in_phase; /* the phase now, and the one the first signal came in */

/* The first signal asks for the stop and says so at once (a step, or a validation, can take minutes). Ctrl-C
 * again ends the process now, as a signal does outside the loop: the partial outputs removed
 * (tt_partial_note), then the default action (never "ignored", as a background job's SIGINT starts: the user
 * asked twice). A SIGTERM or SIGHUP after the first signal changes nothing: systemd ends a session with TERM
 * then HUP, and a closed ssh session can send HUP twice; the stop under way is what they ask for. */
static void on_signal(int sig) {
    int saved = errno, none = 0;
    if (atomic_compare_exchange_strong(&g_stop_signal, &none, sig)) {
        int ph = atomic_load(&g_stop_phase);
        atomic_store(&g_stop_in_phase, ph);
        ssize_t w = write(STDERR_FILENO, g_stop_notice[ph], g_stop_notice_len[ph]);
        (void)w; /* a closed terminal: nothing to tell */
    } else if (sig == SIGINT) {
        tt_partial_remove_all();
        signal(sig, SIG_DFL);
        raise(sig); /* delivered once this handler returns (sig is blocked in it) */
    }
    errno = saved;
}

static void set_notice(int phase, int n) {
    size_t cap = sizeof g_stop_notice[phase] - 1;
    g_stop_notice_len[phase] = n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap;
}

void train_stop_arm(int first_step, const char *after) {
    set_notice(0, snprintf(g_stop_notice[0], sizeof g_stop_notice[0], "\ntiertrain train: stopping before step %d "
                           "(a validation under way is cut short); nothing is written\n", first_step));
    set_notice(1, snprintf(g_stop_notice[1], sizeof g_stop_notice[1], "\ntiertrain train: stopping after the step "
                           "under way (a validation under way is cut short), then %s; Ctrl-C again quits at once "
                           "without it\n", after));
    atomic_store(&g_stop_phase, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    atomic_store(&g_stop_signal, 0);
    sigaction(SIGINT, &sa, &g_old_int);
    sigaction(SIGTERM, &sa, &g_old_term);
    /* a closed terminal or ssh session: stop as on Ctrl-C, with a checkpoint; but a run started under nohup
     * (SIGHUP ignored) is meant to outlive its terminal, and keeps going */
    sigaction(SIGHUP, NULL, &g_old_hup);
    if (g_old_hup.sa_handler != SIG_IGN) sigaction(SIGHUP, &sa, NULL);
}

int train_stop_requested(void) { return atomic_load(&g_stop_signal); }

/* Set by train_loop around a validation that a stop request may cut short: train_eval_with then stops before
 * its next batch and sets g_val_cut (a validation of 16K tokens streamed through a 70B takes a while; the stop
 * should not wait for it). */
static int g_val_stoppable, g_val_cut;

void train_stop_disarm(void) {
    sigaction(SIGINT, &g_old_int, NULL);
    sigaction(SIGTERM, &g_old_term, NULL);
    sigaction(SIGHUP, &g_old_hup, NULL);
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

void train_example_stats(const tt_tokens *tok, int seq, uint64_t *cut, uint64_t *untrained, uint64_t *lost) {
    *cut = *untrained = *lost = 0;
    for (uint64_t i = 0; i < tok->n_ex; i++) {
        uint64_t s, e;
        example_at(tok, i, &s, &e);
        *cut += e - s > (uint64_t)seq + 1;
        *untrained += train_example_targets(tok, i, seq) == 0;
        for (uint64_t p = s + (uint64_t)seq + 1; p < e; p++) *lost += (tok->flags[p] & TOKFILE_TRAIN) != 0;
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

/* One sequence of S positions from tok drawn from r: a window of plain text (seg, when given: one segment),
 * or an example (seg: packed examples). */
static void sample_row(const tt_tokens *tok, tt_rng *r, int S, int32_t *in, int32_t *tgt, tt_real *wt, int32_t *seg) {
    if (tok->flags) {
        TT_ASSERT(tok->n_ex > 0);
        if (seg) packed_row(tok, r, S, in, tgt, wt, seg);
        else (void)example_row(tok, rng_below(r, tok->n_ex), S, in, tgt, wt);
        return;
    }
    uint64_t off = rng_below(r, tok->n - (uint64_t)S);
    for (int t = 0; t < S; t++) {
        in[t] = (int32_t)tok->t[off + t];
        tgt[t] = (int32_t)tok->t[off + t + 1];
        wt[t] = 1;
    }
    if (seg) memset(seg, 0, (size_t)S * sizeof *seg);
}

static void sampler_seed(tt_rng *r, uint64_t seed, int step, int micro) {
    rng_seed(r, seed ^ 0xda7a5eedull, ((uint64_t)step << 20) ^ (uint64_t)micro);
}

void train_sample_batch(const tt_tokens *tok, uint64_t seed, int step, int micro, int B, int seq, int32_t *in,
                        int32_t *tgt, tt_real *wt, int32_t *seg) {
    tt_rng r;
    sampler_seed(&r, seed, step, micro);
    for (int b = 0; b < B; b++)
        sample_row(tok, &r, seq, in + b * seq, tgt + b * seq, wt + b * seq, seg ? seg + b * seq : NULL);
}

int train_sample_mix(const tt_mix *m, uint64_t seed, int step, int micro, int B, int S, int32_t *in, int32_t *tgt,
                     tt_real *wt, int32_t *seg) {
    int active = 0, only = 0;
    double total = 0;
    for (int i = 0; i < m->n; i++)
        if (m->w[i] > 0) { active++; only = i; total += m->w[i]; }
    TT_ASSERT(active > 0);
    if (active == 1) { /* no source to choose: exactly the single source's batch */
        train_sample_batch(&m->train[only], seed, step, micro, B, S, in, tgt, wt, seg);
        return m->train[only].flags ? B : 0;
    }
    tt_rng r;
    sampler_seed(&r, seed, step, micro);
    int ex = 0;
    for (int b = 0; b < B; b++) {
        double u = rng_uniform(&r) * total, c = 0;
        int src = only; /* the last one with a weight: u past every boundary by rounding */
        for (int i = 0; i < m->n; i++) {
            if (!(m->w[i] > 0)) continue;
            c += m->w[i];
            if (u < c) { src = i; break; }
        }
        sample_row(&m->train[src], &r, S, in + (size_t)b * S, tgt + (size_t)b * S, wt + (size_t)b * S,
                   seg ? seg + (size_t)b * S : NULL);
        ex += m->train[src].flags != NULL;
    }
    return ex;
}

const char *train_mix_name(const tt_mix *m, int i, char *buf, size_t cap) {
    if (m->name[i]) return m->name[i];
    snprintf(buf, cap, "source %d", i + 1);
    return buf;
}

void train_mix_single(tt_mix *m, const tt_tokens *train, const tt_tokens *val) {
    memset(m, 0, sizeof *m);
    m->n = 1;
    m->train[0] = *train;
    if (val) m->val[0] = *val;
    m->base[0] = m->w[0] = 1;
    m->ref[0] = NAN;
}

void train_mix_reweight(int n, const double *base, const double *loss, const double *ref, double tau, double *w,
                        double *gap) {
    TT_ASSERT(n >= 1 && n <= TT_MIX_MAX && tau > 0);
    double g[TT_MIX_MAX], gmax = -INFINITY, z = 0;
    for (int i = 0; i < n; i++) {
        double d = loss[i] - ref[i];
        g[i] = d > 0 ? d : 0; /* NaN (nothing scored) counts as no gap */
        if (base[i] > 0 && g[i] > gmax) gmax = g[i];
    }
    TT_ASSERT(gmax >= 0); /* some source has a weight */
    for (int i = 0; i < n; i++) {
        w[i] = base[i] > 0 ? base[i] * exp((g[i] - gmax) / tau) : 0; /* <= base[i]: no overflow */
        z += w[i];
        if (gap) gap[i] = g[i];
    }
    for (int i = 0; i < n; i++) w[i] /= z; /* z >= the base of the source at gmax > 0 */
}

int train_mix_reference(tt_exec *e, tt_mix *m, int max_tokens) {
    for (int i = 0; i < m->n; i++) {
        m->ref[i] = NAN;
        const tt_tokens *v = &m->val[i];
        if (v->flags ? v->n_ex == 0 : v->n <= (uint64_t)exec_plan(e)->req.seq) continue; /* nothing to score */
        int rc = train_eval(e, v, max_tokens, &m->ref[i]);
        if (rc) return rc;
    }
    return 0;
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
        if (g_val_stoppable && train_stop_requested()) { g_val_cut = 1; rc = -EINTR; break; }
        if ((rc = tokfile_check(tok->file)) || (rc = fn(ctx, in, tgt, wt, &l))) break; /* scores what was read */
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
        if (g_val_stoppable && train_stop_requested()) { g_val_cut = 1; rc = -EINTR; break; }
        if ((rc = tokfile_check(tok->file)) || (rc = fn(ctx, in, tgt, wt, &l))) break;
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
    /* the run folder, made when the run started: gone now (moved away while the run worked), it is not made
     * again here (peft_write makes a missing folder) — the run would go on saving into a new, empty one */
    struct stat sb;
    int rc = stat(dir, &sb) == 0 ? peft_write(dir, &a)
                                 : TT_FAIL(-ENOENT, "writing the adapter into %s failed: the folder is gone", dir);
    free(a.lora);
    free(f);
    return rc;
}

/* XXH3-64 of a source's training tokens, and of its target flags when it has them. */
static uint64_t data_hash(const tt_tokens *t) {
    uint64_t h = XXH3_64bits(t->t, t->n * sizeof *t->t);
    if (t->flags) h ^= XXH3_64bits(t->flags, t->n) * 0x9e3779b97f4a7c15ull; /* the masks too */
    return h;
}

void train_ckpt_fill(ckpt_state *st, const tt_train_opts *o, const tt_config *c, const tt_lora_cfg *lc,
                     uint64_t n_params, const tt_mix *mix, int step, uint64_t tokens_seen) {
    memset(st, 0, sizeof *st);
    st->step = (uint64_t)step;
    st->seed = o->seed;
    st->model_fp = config_fingerprint(c);
    st->weights_fp = o->weights_fp;
    st->n_params = n_params;
    st->real_bytes = lc ? sizeof(tt_real) : 4; /* full training: f32 master weights */
    st->full = lc == NULL;
    if (lc) {
        st->rank = (uint32_t)lc->rank;
        st->targets = lc->targets;
        st->alpha = lc->alpha;
        st->dropout = lc->dropout;
        st->rslora = (uint32_t)lc->rslora;
    }
    st->steps = (uint32_t)o->steps; st->seq = (uint32_t)o->seq; st->micro_batch = (uint32_t)o->micro_batch;
    st->accum = (uint32_t)o->accum; st->warmup = (uint32_t)o->warmup;
    st->lr = o->lr; st->min_lr = o->min_lr; st->wd = o->wd; st->b1 = o->b1; st->b2 = o->b2; st->eps = o->eps;
    st->clip = o->clip;
    st->tokens_seen = tokens_seen;
    int examples = 0;
    for (int i = 0; i < mix->n; i++) examples |= mix->train[i].flags != NULL;
    if (mix->n == 1) { /* one source: the record it always had */
        st->data_tokens = mix->train[0].n;
        st->data_hash = data_hash(&mix->train[0]);
    } else {
        int dyn = mix->mode == TT_MIX_DYNAMIC;
        st->mix_n = (uint32_t)mix->n;
        st->mix_mode = (uint32_t)mix->mode;
        st->mix_every = dyn ? (uint32_t)mix->every : 0; /* static: neither matters */
        st->mix_tau = dyn ? (float)mix->tau : 0;
        for (int i = 0; i < mix->n; i++) {
            st->mix_tokens[i] = mix->train[i].n;
            st->mix_hash[i] = data_hash(&mix->train[i]);
            st->mix_base[i] = mix->base[i];
            st->mix_w[i] = mix->w[i];
            st->mix_ref[i] = dyn ? mix->ref[i] : 0;
            st->data_tokens += mix->train[i].n;
        }
        st->data_hash = XXH3_64bits(st->mix_hash, (size_t)mix->n * sizeof st->mix_hash[0]);
    }
    /* the validation tokens (a dynamic mixture's weights follow their losses; a static run's scores) and how many
     * of them a score takes: --eval-tokens, or the largest source's where that is fewer (the same scores) */
    uint64_t vh[TT_MIX_MAX], vmax = 0;
    for (int i = 0; i < mix->n; i++) {
        st->val_tokens += mix->val[i].n;
        vh[i] = mix->val[i].n ? data_hash(&mix->val[i]) : 0;
        if (mix->val[i].n > vmax) vmax = mix->val[i].n;
    }
    if (st->val_tokens && o->eval_tokens > 0) {
        st->val_hash = mix->n == 1 ? vh[0] : XXH3_64bits(vh, (size_t)mix->n * sizeof vh[0]);
        if (!st->val_hash) st->val_hash = 1; /* 0 means not recorded */
        st->eval_tokens = (uint32_t)((uint64_t)o->eval_tokens < vmax ? (uint64_t)o->eval_tokens : vmax);
    } else {
        st->val_tokens = 0; /* none scored: nothing recorded */
    }
    st->threads = (uint32_t)o->threads;
    st->act_bf16 = (uint32_t)o->act_bf16;
    st->no_pack = examples && !o->pack; /* the sampler differs: resume must match */
}

static int save_checkpoint(const tt_train_opts *o, const tt_model *m, const tt_lora *lo, const tt_mix *mix,
                           int step, uint64_t tokens_seen, int *said) {
    ckpt_state st;
    train_ckpt_fill(&st, o, model_config(m), &lo->cfg, lo->n, mix, step, tokens_seen);
    size_t n = lo->n;
    void *p = tt_xmalloc(n * sizeof(tt_real) + 1);
    float *mm = tt_xmalloc(n * sizeof(float) + 1), *vv = tt_xmalloc(n * sizeof(float) + 1);
    lora_params_get(lo, p);
    lora_moments_get(lo, mm, vv);
    int rc = ckpt_write(o->out_dir, &st, p, mm, vv);
    free(p); free(mm); free(vv);
    if (rc == 0 && (rc = write_adapter(o, m, lo, o->out_dir)) && (*said = 1))
        /* what stands, and the way on: a resume at this step makes no step and writes the adapter (train_run) */
        rc = TT_FAIL(rc, "%s; the checkpoint of step %d in %s is whole: once the adapter can be written, run the same "
                     "command with --resume %s", tt_lasterr(), step, o->out_dir, o->out_dir);
    return rc;
}

int train_ckpt_match(const char *path, const ckpt_state *st, const ckpt_state *want, const tt_mix *mix) {
    int rc = 0;
    char nb[32];
    if (st->full != want->full)
        return TT_FAIL(-EINVAL, "the checkpoint in %s was written by %s; resume it with %s", path,
                       st->full ? "full training (train --full)" : "LoRA training", st->full ? "--full" : "LoRA (no --full)");
    if (want->full && (st->optim != want->optim || st->galore_rank != want->galore_rank ||
                       st->galore_every != want->galore_every || st->galore_scale != want->galore_scale))
        return TT_FAIL(-EINVAL, "the checkpoint in %s was made with another optimizer (%s%s); resume with the same "
                       "--optim and --galore-* flags", path, st->optim ? "galore" : "adamw",
                       st->optim ? ", other --galore-rank / --galore-update-every / --galore-scale" : "");
    if (st->model_fp != want->model_fp) rc = TT_FAIL(-EINVAL, "the checkpoint in %s was made for another model", path);
    else if (st->weights_fp && want->weights_fp && st->weights_fp != want->weights_fp)
        rc = TT_FAIL(-EINVAL, "the checkpoint in %s was trained on another store of these shapes (its extents' checksums "
                     "differ: other weights, quantization, pruning or compression); resume with the --model it was "
                     "trained on", path);
    else if (want->full && st->n_params != want->n_params)
        rc = TT_FAIL(-EINVAL, "the checkpoint in %s holds %llu values, this run's model and optimizer %llu; resume "
                     "with the same --model and --galore-rank", path, (unsigned long long)st->n_params,
                     (unsigned long long)want->n_params);
    else if (st->real_bytes != want->real_bytes)
        rc = TT_FAIL(-EINVAL, "the checkpoint in %s was written by a build with another precision", path);
    else if (st->n_params != want->n_params || st->rank != want->rank || st->targets != want->targets || st->alpha != want->alpha ||
             st->rslora != want->rslora) {
        char tw[96], tn[96];
        lora_targets_str(st->targets, tw, sizeof tw);
        lora_targets_str(want->targets, tn, sizeof tn);
        rc = TT_FAIL(-EINVAL, "the checkpoint in %s has another LoRA shape (rank %u, alpha %g%s, on %s; this run: rank %u, "
                     "alpha %g%s, on %s)", path, st->rank, (double)st->alpha, st->rslora ? ", --rslora" : "", tw,
                     want->rank, (double)want->alpha, want->rslora ? ", --rslora" : "", tn);
    }
    else if (st->mix_n != want->mix_n)
        rc = TT_FAIL(-EINVAL, "the checkpoint in %s was trained on %u data source%s, this run has %u; resume with the "
                     "same --data", path, st->mix_n ? st->mix_n : 1, st->mix_n ? "s" : "",
                     want->mix_n ? want->mix_n : 1);
    else if (st->data_tokens != want->data_tokens || st->data_hash != want->data_hash)
        rc = st->data_tokens != want->data_tokens
                 ? TT_FAIL(-EINVAL, "the checkpoint in %s was trained on other data (%llu tokens then, %llu now); resume "
                           "with the same --data (and the same validation split)", path,
                           (unsigned long long)st->data_tokens, (unsigned long long)want->data_tokens)
                 : TT_FAIL(-EINVAL, "the checkpoint in %s was trained on other data (as many tokens, %llu, but other "
                           "ones, or the sources in another order); resume with the same --data, in the same order",
                           path, (unsigned long long)want->data_tokens);
    else {
        static const char *const dtypes[] = {"f32", "bf16"}, *const modes[] = {"static", "dynamic"},
                                 *const onoff[] = {"off", "on"};
        const struct { const char *name; double was, now; const char *const *words; } opt[] = {
            {"--seed", (double)st->seed, (double)want->seed, NULL}, {"--seq", st->seq, want->seq, NULL},
            {"--micro-batch", st->micro_batch, want->micro_batch, NULL},
            {"--batch-tokens / (seq x micro-batch)", st->accum, want->accum, NULL},
            {"--steps", st->steps, want->steps, NULL}, {"--warmup", st->warmup, want->warmup, NULL},
            {"--lr", st->lr, want->lr, NULL}, {"--min-lr", st->min_lr, want->min_lr, NULL},
            {"--wd", st->wd, want->wd, NULL}, {"--clip", st->clip, want->clip, NULL},
            {"--dropout", st->dropout, want->dropout, NULL}, {"--threads", st->threads, want->threads, NULL},
            {"--act-dtype", st->act_bf16, want->act_bf16, dtypes}, {"--no-pack", st->no_pack, want->no_pack, onoff},
            {"--mix", st->mix_mode, want->mix_mode, modes}, {"--mix-every", st->mix_every, want->mix_every, NULL},
            {"--mix-temp", st->mix_tau, want->mix_tau, NULL},
        };
        for (size_t i = 0; i < sizeof opt / sizeof opt[0] && rc == 0; i++) {
            if (opt[i].was == opt[i].now) continue;
            char was[32], now[32];
            const char *const *w = opt[i].words;
            if (w) {
                snprintf(was, sizeof was, "%s", w[opt[i].was != 0]);
                snprintf(now, sizeof now, "%s", w[opt[i].now != 0]);
            } else {
                snprintf(was, sizeof was, "%g", opt[i].was);
                snprintf(now, sizeof now, "%g", opt[i].now);
            }
            const char *why = strcmp(opt[i].name, "--steps") == 0
                                  ? " (the learning-rate schedule is laid out over --steps: a run's length is fixed "
                                    "when it starts)"
                              : strcmp(opt[i].name, "--threads") == 0
                                  ? " (--threads 0, every core, counts this machine's: give the run's count with "
                                    "--threads to resume it bit for bit)"
                                  : "";
            rc = TT_FAIL(-EINVAL, "the checkpoint in %s was made with other training options (%s was %s, now %s); "
                         "resume with the same flags%s", path, opt[i].name, was, now, why);
        }
        for (uint32_t i = 0; i < want->mix_n && rc == 0; i++)
            if (st->mix_base[i] != want->mix_base[i])
                rc = TT_FAIL(-EINVAL, "the checkpoint in %s was made with other --data weights (source %u, %s: %g "
                             "then, %g now, normalised); resume with the same flags", path, i + 1,
                             train_mix_name(mix, (int)i, nb, sizeof nb), st->mix_base[i], want->mix_base[i]);
    }
    if (rc == 0 && st->val_hash && (st->val_hash != want->val_hash || st->eval_tokens != want->eval_tokens)) {
        char what[128], fix[64];
        const int files = st->val_hash != want->val_hash;
        if (st->val_tokens != want->val_tokens)
            snprintf(what, sizeof what, "%llu validation tokens then, %llu now", (unsigned long long)st->val_tokens,
                     (unsigned long long)want->val_tokens);
        else if (files)
            snprintf(what, sizeof what, "as many validation tokens, %llu, but other ones",
                     (unsigned long long)want->val_tokens);
        else
            snprintf(what, sizeof what, "%u tokens a score then, %u now", st->eval_tokens, want->eval_tokens);
        if (files) snprintf(fix, sizeof fix, "the validation files it had (FILE.val, or --val)");
        else snprintf(fix, sizeof fix, "--eval-tokens %u", st->eval_tokens);
        if (want->mix_mode == TT_MIX_DYNAMIC) /* the sampler's weights follow the validation losses */
            rc = TT_FAIL(-EINVAL, "the checkpoint in %s was validated on other tokens (%s), and a dynamic mixture's "
                         "weights follow its validation losses; resume with %s", path, what, fix);
        else /* the training is the same; its scores from here on are on other tokens */
            fprintf(stderr, "tiertrain train: note: the checkpoint in %s was validated on other tokens (%s): the "
                    "validation losses from here on are not comparable with the run's earlier ones (those of %s "
                    "are)\n", path, what, fix);
    }
    return rc;
}

void train_ckpt_restore_mix(const ckpt_state *st, tt_mix *mix) {
    for (uint32_t i = 0; i < st->mix_n; i++) { /* the sampler as it was after that step, and the reference */
        mix->w[i] = st->mix_w[i];
        if (mix->mode == TT_MIX_DYNAMIC) mix->ref[i] = st->mix_ref[i];
    }
}

/* Restores a checkpoint into lo (and the mixture's weights into mix) after
 * checking it belongs to this run: the same model, LoRA shape, data and
 * options, else continuing would not be the run that was interrupted. */
static int load_checkpoint(const tt_train_opts *o, const tt_model *m, tt_lora *lo, tt_mix *mix, int *step,
                           uint64_t *seen) {
    ckpt_state st;
    void *p;
    float *mm, *vv;
    int rc = ckpt_read(o->resume_dir, &st, &p, &mm, &vv);
    if (rc) return rc;
    ckpt_state want;
    train_ckpt_fill(&want, o, model_config(m), &lo->cfg, lo->n, mix, 0, 0);
    rc = train_ckpt_match(o->resume_dir, &st, &want, mix);
    if (rc == 0) {
        lora_params_set(lo, p);
        lora_moments_set(lo, mm, vv);
        *step = (int)st.step;
        *seen = st.tokens_seen;
        train_ckpt_restore_mix(&st, mix);
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
    const tt_mix *mix;
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
static int lora_save(void *ctx, int step, uint64_t seen, int *said) {
    lora_ctx *c = ctx;
    return save_checkpoint(c->o, c->m, c->lo, c->mix, step, seen, said);
}

int train_run(const tt_train_opts *o, tt_exec *e, const tt_tokens *train, const tt_tokens *val,
              tt_train_result *res) {
    memset(res, 0, sizeof *res);
    res->first_val = res->last_val = res->first_loss = res->last_loss = NAN;
    const tt_model *m = exec_model(e);
    const tt_config *c = model_config(m);
    const tt_plan *plan = exec_plan(e);
    int B = o->micro_batch, S = o->seq, K = o->accum;
    TT_ASSERT(plan->req.B == B && plan->req.seq == S && plan->req.K == K);
    TT_ASSERT(o->clip <= 0 || exec_user_cfg(&plan->req.user).defer_optimizer);
    tt_mix one, *mix = o->mix;
    if (!mix) {
        train_mix_single(&one, train, val);
        mix = &one;
    } else TT_ASSERT(!train && !val); /* the mixture's sources are the data */
    for (int k = 0; k < mix->n; k++) {
        const tt_tokens *tr = &mix->train[k];
        char what[1100], nb[32];
        snprintf(what, sizeof what, "the training data%s%s", mix->n > 1 ? " of " : "",
                 mix->n > 1 ? train_mix_name(mix, k, nb, sizeof nb) : "");
        if (tr->flags ? tr->n_ex == 0 : tr->n < (uint64_t)S + 1)
            return TT_FAIL(-EINVAL, "%s has %llu tokens, %s; use more data%s", what, (unsigned long long)tr->n,
                           tr->flags ? "no example" : "fewer than --seq + 1", tr->flags ? "" : " or a shorter --seq");
        for (uint64_t i = 0; i < tr->n; i++)
            if (tr->t[i] >= c->vocab)
                return TT_FAIL(-EINVAL, "token %u in %s is outside the model's vocabulary of %u; tokenize with the "
                               "model's tokenizer", tr->t[i], what, c->vocab);
    }
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
        rc = load_checkpoint(o, m, lo, mix, &step, &seen);
        if (rc) return rc;
        if (!o->quiet && !o->json) printf("resumed from %s at step %d\n", o->resume_dir, step);
    }
    lora_ctx lc = {o, e, m, lo, mix};
    static const tt_loop_ops ops = {lora_step, lora_eval, lora_save};
    rc = train_loop(o, &ops, &lc, mix, step, seen, res);
    /* resumed at --steps: the loop saved nothing, yet --out must hold the adapter of the run's last step, which
     * the run that wrote the checkpoint may have failed to write after it (a full disk) */
    if (rc == 0 && step > 0 && res->steps_done == step) rc = write_adapter(o, m, lo, o->out_dir);
    return rc;
}

/* What an early end leaves behind, as the loop's messages say it: the last
 * checkpoint in --out when one exists (it is intact: checkpoints are written
 * atomically) and the step it holds (saved; 0: this run has saved none, so a
 * checkpoint there is an earlier run's, which --force is starting over),
 * else that nothing was written. */
static void kept_msg(const tt_train_opts *o, const tt_loop_ops *ops, int saved, char *kept, size_t kc, char *nothing,
                     size_t nc) {
    int has = ops->save && ckpt_exists(o->out_dir);
    if (has && saved > 0) snprintf(kept, kc, "the last checkpoint in %s (step %d) is intact", o->out_dir, saved);
    else if (has) snprintf(kept, kc, "this run wrote no checkpoint yet (the one in %s is the earlier run's)", o->out_dir);
    else snprintf(kept, kc, "no checkpoint was written yet");
    if (has) snprintf(nothing, nc, "nothing was saved (%s)", kept);
    else snprintf(nothing, nc, "nothing was written");
    /* and what a device failure that ends the process says stands (tt_device_failed): from here to the process's
     * end, the final outputs' writing included (a checkpoint stands till then); the --resume only of this run's
     * own checkpoint (an earlier run's, which --force set aside, is not to be continued) */
    char fc[2048]; /* as much as tt_fatal_context keeps */
    if (has && saved > 0)
        snprintf(fc, sizeof fc, "%s: continue with --resume %s%s", kept, o->out_dir, o->resume_more ? o->resume_more : "");
    tt_fatal_context(has && saved > 0 ? fc : nothing);
}

/* ,"key":[v0,v1,...]: losses (loss 1) as val_loss is printed, weights to 6 digits; null where v is NaN (JSON has
 * no NaN). */
static void json_array(const char *key, const double *v, int n, int loss) {
    printf(",\"%s\":[", key);
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) printf(loss ? "%s%.6f" : "%s%.6g", i ? "," : "", v[i]);
        else printf("%snull", i ? "," : "");
    printf("]");
}

/* 0 while every source's token files are as the run opened them (tokfile_check). */
static int mix_unchanged(const tt_mix *m) {
    for (int i = 0; i < m->n; i++) {
        int rc = tokfile_check(m->train[i].file);
        if (!rc && m->val[i].file != m->train[i].file) rc = tokfile_check(m->val[i].file);
        if (rc) return rc;
    }
    return 0;
}

/* One validation: every source's val that has something to score (per[i], NAN for the rest), and their mean
 * weighted by the base weights (over the sources scored; one source: its loss, exactly). */
static int mix_validate(const tt_train_opts *o, const tt_loop_ops *ops, void *ctx, const tt_mix *m, const int *can,
                        double *per, double *mean) {
    double sum = 0, wsum = 0;
    for (int i = 0; i < m->n; i++) {
        per[i] = NAN;
        if (!can[i]) continue;
        int rc = ops->eval(ctx, &m->val[i], o->eval_tokens, &per[i]);
        if (rc) return rc;
        if (m->base[i] > 0 && !isnan(per[i])) {
            sum += m->base[i] * per[i];
            wsum += m->base[i];
        }
    }
    *mean = wsum > 0 ? sum / wsum : NAN;
    return 0;
}

/* 1 when a source scored (can[i]) has a non-finite loss, that loss in *bad. */
static int nonfinite_loss(const double *loss, const int *can, int n, double *bad) {
    for (int i = 0; i < n; i++)
        if (can[i] && !isfinite(loss[i])) {
            *bad = loss[i];
            return 1;
        }
    return 0;
}

/* The text line of a re-weighting (after step `step`; 0: before step 1). */
static void print_reweight(const tt_mix *m, int step, const double *loss, const double *gap) {
    char nb[32];
    printf("mix %s step %d:", step ? "after" : "before", step ? step : 1);
    for (int i = 0; i < m->n; i++)
        printf("%s %s %.4f (val %.4f, reference %.4f, gap %.4f)", i ? "," : "", train_mix_name(m, i, nb, sizeof nb),
               m->w[i], loss[i], m->ref[i], gap[i]);
    printf("\n");
}

void train_result_summary(const tt_train_result *r, char *b, size_t n) {
    char steps[64], val[160];
    if (r->steps_done <= r->start_step) { /* resumed at --steps: nothing was left to do */
        snprintf(b, n, "no step to make (resumed after step %d, the run's last)", r->start_step);
        return;
    }
    if (r->start_step > 0)
        snprintf(steps, sizeof steps, "steps %d-%d (resumed after step %d)", r->start_step + 1, r->steps_done,
                 r->start_step);
    else snprintf(steps, sizeof steps, "%d steps", r->steps_done);
    char first[48] = "", last[48] = "";
    if (r->first_val_step > 0) /* a resumed run: its first score came after a step of its own */
        snprintf(first, sizeof first, " (after step %d)", r->first_val_step);
    if (r->last_val_step != r->steps_done) /* stopped early, or a validation cut short: not at the end */
        snprintf(last, sizeof last, " (after step %d)", r->last_val_step);
    if (isnan(r->first_val)) snprintf(val, sizeof val, "no validation");
    else if (r->last_val_step == 0) /* stopped before the first scheduled validation */
        snprintf(val, sizeof val, "validation loss %.4f before training, none after", r->first_val);
    else if (r->first_val_step == r->last_val_step) /* one score */
        snprintf(val, sizeof val, "validation loss %.4f after step %d", r->last_val, r->last_val_step);
    else snprintf(val, sizeof val, "validation loss %.4f%s -> %.4f%s", r->first_val, first, r->last_val, last);
    if (isnan(r->first_loss)) /* every step drew prompts only */
        snprintf(b, n, "%s%s, no step had a target to train on, %s", steps, r->interrupted ? " (interrupted)" : "", val);
    else
        snprintf(b, n, "%s%s, train loss %.4f -> %.4f, %s", steps, r->interrupted ? " (interrupted)" : "",
                 r->first_loss, r->last_loss, val);
}

/* train.h. The validations left: multiples of --eval-every and of m (less those of both), and the last step
 * unless it is one of those. */
double train_eta_s(const tt_train_opts *o, int any_val, long long m, int step, double per_step, double per_val) {
    long long end = o->stop_after > step && o->stop_after < o->steps ? o->stop_after : o->steps, e = o->eval_every;
    if (end <= step) return 0;
    long long nv = 0;
    if (any_val) {
        if (e > 0) nv += end / e - step / e;
        if (m > 0) {
            long long a = e, b = m; /* lcm(e, m): the reweights that are validations anyway */
            while (b) { long long t = a % b; a = b; b = t; }
            long long l = e > 0 ? e / a * m : 0;
            nv += end / m - step / m - (l > 0 ? end / l - step / l : 0);
        }
        if (!((e > 0 && end % e == 0) || (m > 0 && end % m == 0))) nv++; /* the last step's */
    }
    return per_step * (double)(end - step) + per_val * (double)nv;
}

int train_loop(const tt_train_opts *o, const tt_loop_ops *ops, void *ctx, tt_mix *mix, int start, uint64_t seen,
               tt_train_result *res) {
    int B = o->micro_batch, S = o->seq, T = B * S, K = o->accum, step = start, rc = 0, N = mix->n;
    res->start_step = res->steps_done = start;
    TT_ASSERT(N >= 1 && N <= TT_MIX_MAX);
    int dyn = N > 1 && mix->mode == TT_MIX_DYNAMIC;
    TT_ASSERT(!dyn || mix->every > 0);
    int can_val[TT_MIX_MAX], any_val = 0, examples = 0;
    char nb[32];
    for (int i = 0; i < N; i++) {
        const tt_tokens *v = &mix->val[i];
        /* something to score: a window, or an example with a target within its first S + 1 tokens */
        uint64_t cut, untrained = 0, lost;
        if (v->flags) train_example_stats(v, S, &cut, &untrained, &lost);
        can_val[i] = v->flags ? untrained < v->n_ex : v->n > (uint64_t)S;
        any_val |= can_val[i];
        examples |= mix->train[i].flags != NULL;
        if (dyn && (!can_val[i] || !isfinite(mix->ref[i])))
            return TT_FAIL(-EINVAL, "a dynamic mixture scores every source's validation tokens, but %s has %s; give "
                           "it more text (or a SOURCE.val file)", train_mix_name(mix, i, nb, sizeof nb),
                           can_val[i] ? "no reference loss (the reference scored nothing)" : "none to score");
    }
    /* what an early end leaves behind, for the messages */
    char kept[1200], nothing[1300];
    int saved = start; /* the step of the last checkpoint (0: none; a resumed run's is its start) */
    kept_msg(o, ops, saved, kept, sizeof kept, nothing, sizeof nothing);
    train_stop_arm(start + 1, ops->save ? "writing a checkpoint" : "writing the model as it is");
    fflush(stdout); /* the run's header lines, before a validation that may take a while */

    size_t n = (size_t)K * T;
    int32_t *in = tt_xmalloc(n * sizeof *in), *tgt = tt_xmalloc(n * sizeof *tgt);
    tt_real *wt = tt_xmalloc(n * sizeof *wt);
    int32_t *seg = examples && o->pack ? tt_xmalloc(n * sizeof *seg) : NULL;
    double vl[TT_MIX_MAX], gap[TT_MIX_MAX], drawn[TT_MIX_MAX]; /* drawn: the weights of this step's draws */
    /* the time so far and to go: the steps' and the validations' apart (a validation of --eval-tokens can take
     * longer than a step: an ETA from the steps' pace alone was off by the validations still to come) */
    const double t_run = tt_now();
    if (o->stop_after > 0 && o->stop_after <= start && start < o->steps && !o->quiet) /* passed already: no stop */
        fprintf(stderr, "tiertrain train: note: --stop-after %d is not after the checkpoint's step %d: the run goes on "
                        "to --steps %d\n", o->stop_after, start, o->steps);
    double val_s = 0;
    int n_val = 0;
    if (any_val && start == 0) {
        g_val_stoppable = 1; /* nothing to keep yet: a stop ends the run with nothing written */
        rc = mix_validate(o, ops, ctx, mix, can_val, vl, &res->first_val);
        g_val_stoppable = 0;
        val_s += tt_now() - t_run;
        n_val++;
    }
    atomic_store(&g_stop_phase, 1); /* from here on a stop keeps the step under way */
    double bad;
    if (train_stop_requested() && atomic_load(&g_stop_in_phase) == 0) /* as its notice said */
        rc = TT_FAIL(-EINTR, "interrupted before step %d%s; nothing was trained or written", start + 1,
                     any_val && start == 0 ? ", in the validation before training" : "");
    else if (rc) rc = TT_FAIL(rc, "validation before step 1 failed: %s", tt_lasterr());
    else if (any_val && start == 0 && nonfinite_loss(vl, can_val, N, &bad)) /* before any update: not the lr */
        rc = TT_FAIL(-EINVAL, "the validation loss before training is %s: the model computes non-finite values on "
                     "this data before any update (weights too large for its arithmetic, or a damaged store; "
                     "`tiertrain eval` scores it alone); nothing was trained or written",
                     isnan(bad) ? "NaN" : "infinite");
    if (rc) {
        free(in); free(tgt); free(wt); free(seg);
        train_stop_disarm();
        return rc;
    }
    if (any_val && start == 0) {
        res->last_val = res->first_val;
        memcpy(drawn, mix->w, sizeof drawn);
        if (dyn) train_mix_reweight(N, mix->base, vl, mix->ref, mix->tau, mix->w, gap);
        if (o->json) {
            printf("{\"step\":0,\"steps\":%d,\"val_loss\":", o->steps);
            printf(isfinite(res->first_val) ? "%.6f" : "null", res->first_val);
            if (N > 1) {
                json_array("val_losses", vl, N, 1);
                json_array("mix", drawn, N, 0);
            }
            if (dyn) {
                json_array("ref_losses", mix->ref, N, 1);
                json_array("mix_gap", gap, N, 1);
                json_array("mix_next", mix->w, N, 0);
            }
            printf("}\n");
        } else if (!o->quiet) {
            printf("step 0/%d  val %.4f (before training", o->steps, res->first_val);
            for (int i = 0; N > 1 && i < N; i++)
                printf("%s %s %.4f", i ? "," : ";", train_mix_name(mix, i, nb, sizeof nb), vl[i]);
            printf(")\n");
            if (dyn) print_reweight(mix, 0, vl, gap);
        }
        fflush(stdout); /* before a step that may take a while */
    }
    double t0 = tt_now();
    const double val_at_t0 = val_s; /* the validation before training, not one of the steps' */
    while (step < o->steps) {
        step++;
        double ts = tt_now();
        if (o->trace) {
            if (!o->trace_keep) trace_clear(o->trace); /* statistics only: the buffer never fills */
            trace_step_begin(o->trace, ts);
        }
        double lr = train_lr(o, step);
        int ex_rows = 0; /* sequences from example sources: none, and the step needs no segments */
        for (int k = 0; k < K; k++)
            ex_rows += train_sample_mix(mix, o->seed, step, k, B, S, in + (size_t)k * T, tgt + (size_t)k * T,
                                        wt + (size_t)k * T, seg ? seg + (size_t)k * T : NULL);
        memcpy(drawn, mix->w, sizeof drawn);
        if ((rc = mix_unchanged(mix))) { /* what was just drawn is what was validated */
            rc = TT_FAIL(rc, "before step %d: %s; %s", step, tt_lasterr(), kept);
            break;
        }
        uint64_t drop = o->lora.dropout > 0 ? ((o->seed * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)step << 24)) | 1 : 0;
        double loss = 0, gnorm = 0;
        /* a step of examples can draw only prompts: no target, no loss (printed as -) */
        int scored = model_target_weight(tgt, wt, (size_t)K * T) > 0;
        rc = ops->step(ctx, in, tgt, wt, ex_rows ? seg : NULL, lr, step, drop, &loss, &gnorm);
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
        if (scored && isnan(res->first_loss)) res->first_loss = loss;
        if (step == start + 1) {
            /* the warm-up pass is done: every kernel a step runs is loaded and every library workspace taken */
            be_prof_window(step + 1);
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
        if (scored) res->last_loss = loss;
        res->steps_done = step;
        double now = tt_now(), el = now - t_run; /* since the run began: the validation before training too */
        tt_trace_stats ts_stats = {0};
        if (o->trace) trace_step_stats(o->trace, now, &ts_stats);
        double vloss = NAN;
        int stop_sig = train_stop_requested(); /* read once: the save and the stop below must agree */
        int last = step == o->steps || step == o->stop_after || stop_sig;
        int reweight = dyn && step % mix->every == 0; /* at multiples only: a resume re-weights where one run does */
        int validated = 0;
        /* a stop request skips the validation, and one that comes during it cuts it short: the checkpoint is
         * what the user waits for (--resume scores it) -- except a dynamic mixture's re-weighting, which the
         * checkpoint records, so that a resumed run draws as one uninterrupted run does */
        if (any_val && !(stop_sig && !reweight) &&
            ((o->eval_every > 0 && step % o->eval_every == 0) || last || reweight)) {
            be_prof_pause(1); /* TT_PROFILE_OPS: the training steps' ops by themselves */
            g_val_stoppable = !reweight;
            g_val_cut = 0;
            double tv = tt_now();
            rc = mix_validate(o, ops, ctx, mix, can_val, vl, &vloss);
            val_s += tt_now() - tv;
            n_val++;
            g_val_stoppable = 0;
            be_prof_pause(0); /* a val file rewritten meanwhile: train_eval_with's check of each batch it scores */
            if (g_val_cut) { /* cut short: this step stops the run, unscored (the stop is read again below) */
                vloss = NAN;
                rc = 0;
            } else if (rc) {
                rc = TT_FAIL(rc, "validation after step %d failed: %s; %s", step, tt_lasterr(), kept);
                break;
            } else {
                validated = 1;
                if (isnan(res->first_val)) res->first_val = vloss, res->first_val_step = step;
                res->last_val = vloss;
                res->last_val_step = step;
            }
        }
        if (reweight) train_mix_reweight(N, mix->base, vl, mix->ref, mix->tau, mix->w, gap);
        if (!stop_sig && (stop_sig = train_stop_requested())) last = 1; /* came during a validation not cut */
        if (o->json) {
            char ls[32] = "null";
            if (scored) snprintf(ls, sizeof ls, "%.6f", loss);
            printf("{\"step\":%d,\"steps\":%d,\"loss\":%s,\"lr\":%.6g,\"grad_norm\":%.6g,\"tokens_per_s\":%.1f,"
                   "\"elapsed_s\":%.3f,\"step_s\":%.4f",
                   step, o->steps, ls, lr, gnorm, (double)n / (now - ts), el, now - ts);
            if (o->trace)
                printf(",\"io_busy_pct\":%.1f,\"compute_busy_pct\":%.1f,\"overlap_eff\":%.3f", ts_stats.io_pct,
                       ts_stats.compute_pct, ts_stats.overlap_eff);
            if (!isnan(vloss)) printf(",\"val_loss\":%.6f", vloss);
            if (step == start + 1 && res->dev_in_use) printf(",\"gpu_bytes_in_use\":%llu", (unsigned long long)res->dev_in_use);
            if (N > 1) {
                json_array("mix", drawn, N, 0); /* the weights this step's sequences were drawn with */
                if (validated) json_array("val_losses", vl, N, 1);
                if (reweight) {
                    json_array("mix_gap", gap, N, 1);
                    json_array("mix_next", mix->w, N, 0); /* from the next step on */
                }
            }
            printf("}\n");
        } else if (!o->quiet) {
            char el_s[32], eta[32];
            const double tp = tt_now(); /* after this step's validation */
            fmt_time(tp - t_run, el_s, sizeof el_s); /* the whole run's, validations included */
            fmt_time(train_eta_s(o, any_val, dyn ? mix->every : 0, step, (tp - t0 - (val_s - val_at_t0)) / (step - start),
                                 n_val ? val_s / n_val : 0),
                     eta, sizeof eta);
            char ls[32] = "-     ";
            if (scored) snprintf(ls, sizeof ls, "%.4f", loss);
            printf("step %*d/%d  loss %s  lr %.2e  gnorm %.3f  %6.0f tok/s  elapsed %s  eta %s", (int)log10(o->steps) + 1,
                   step, o->steps, ls, lr, gnorm, (double)n / (now - ts), el_s, eta);
            if (o->trace)
                printf("  io %3.0f%%  compute %3.0f%%  overlap %.2f", ts_stats.io_pct, ts_stats.compute_pct,
                       ts_stats.overlap_eff);
            if (!isnan(vloss)) printf("  val %.4f", vloss);
            for (int i = 0; validated && N > 1 && i < N; i++)
                printf("%s%s %.4f", i ? ", " : " (", train_mix_name(mix, i, nb, sizeof nb), vl[i]);
            printf("%s\n", validated && N > 1 ? ")" : "");
            if (reweight) print_reweight(mix, step, vl, gap);
        }
        fflush(stdout);
        if (ops->save && ((o->save_every > 0 && step % o->save_every == 0) || last)) {
            int said = 0;
            rc = ops->save(ctx, step, seen, &said);
            struct stat ds;
            if (rc && stat(o->out_dir, &ds) != 0) /* moved or removed while the run worked: its checkpoints went too */
                rc = TT_FAIL(rc, "%s; the run folder %s is gone (moved or removed while the run worked)%s", tt_lasterr(),
                             o->out_dir, saved ? ": its last checkpoint went with it; --resume the folder where it "
                                                 "is now" : "");
            else if (rc && !said) /* the write is atomic: what was saved before stands (a full disk at the first
                                   * save: nothing); an adapter write that failed after a whole checkpoint said so */
                rc = TT_FAIL(rc, "%s; %s", tt_lasterr(), kept);
            if (rc) {
                res->failed_save = step;
                break;
            }
            saved = step;
            kept_msg(o, ops, saved, kept, sizeof kept, nothing, sizeof nothing); /* a checkpoint exists now */
        }
        if (stop_sig || step == o->stop_after) {
            res->interrupted = stop_sig;
            if (ops->save && !o->quiet && !o->json)
                printf("%s at step %d; checkpoint written to %s (continue with --resume %s%s)\n",
                       stop_sig ? "interrupted" : "stopped", step, o->out_dir, o->out_dir,
                       o->resume_more ? o->resume_more : "");
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
