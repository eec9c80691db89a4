/* tools/cmd_eval.c — `tiertrain eval`: a store, with an optional LoRA adapter,
 * scored under the same --hbm/--host budgets as training.
 *
 *   --data FILE   the perplexity of a token file, through the training
 *                 executor (--per-token OUT: each scored token's log-prob);
 *   --task FILE   lm-evaluation-harness style tasks, one JSON object a line:
 *                 multiple choice {"context", "choices", "label"} (acc and
 *                 acc_norm from the choices' log-likelihoods, rows of --seq
 *                 tokens through exec_eval_tokens) and generative exact match
 *                 {"prompt", "answer"} (greedy completions from
 *                 core/generate.h, an answer cut out of each by --answer-regex).
 *
 * Conventions follow lm-evaluation-harness (lm_eval/api/task.py, models/
 * huggingface.py): a request's tokens are the encoding of context +
 * continuation split at the context's token count, with the context's
 * trailing whitespace moved to the continuation first (_encode_pair); acc_norm
 * divides each log-likelihood by the choice's length in characters; a
 * request longer than --seq + 1 tokens loses the start of its context;
 * standard errors are the sample standard deviation over sqrt(n). */
#include "core/base/common.h"
#include "core/exec.h"
#include "core/generate.h"
#include "core/loram.h"
#include "core/tokenizer.h"
#include "core/tokfile.h"
#include "core/train.h"
#include "io/atomicfile.h"
#include "io/peft.h"
#include "sched/plan.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* train_eval counts tokens in an int, so a long file is evaluated in slices
 * of at most this many tokens (whole passes, so no slice is padded but the last). */
#define EVAL_SLICE_TOKENS (1u << 30)

/* Prompt tokens per sequence per pass over the layers when generating. */
#define TASK_PREFILL_CHUNK 256

/* The default --answer-regex: the last number in the completion (GSM8K). */
#define TASK_ANSWER_RE "(-?[0-9][0-9,.]*)"

/* A progress line on stderr for evaluations that take over a second:
 * rewritten in place on a terminal, one line per 10% otherwise. */
typedef struct eval_progress {
    double t0, last;
    int decile, tty, shown;
} eval_progress;

/* unit: what done/total count ("tokens"); loss_sum: NAN for none. */
static void eval_progress_show(eval_progress *p, uint64_t done, uint64_t total, const char *unit, double loss_sum) {
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

/* Ends a progress line left open on a terminal. */
static void eval_progress_end(const eval_progress *p) {
    if (p->tty && p->shown) fputc('\n', stderr);
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(tt_xmalloc(n), s, n);
}

/* ---- --data: perplexity, and --per-token ------------------------------------ */

/* train_eval_with's evaluator: exec_eval, or with --per-token exec_eval_tokens
 * and a line per scored token. Rows come in the order train_eval_with fills
 * them: examples one per row from the first (padding rows only after the
 * last), windows of S + 1 tokens consecutive from base. */
typedef struct per_token_ctx {
    tt_exec *ex;
    FILE *f;              /* NULL: no --per-token */
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
    return 0;
}

/* ---- --task: the task file ------------------------------------------------- */

/* One request of a multiple-choice item: the tokens of context + choice, of
 * which the first ctx are the context's. */
typedef struct mc_req {
    uint32_t *tok;
    int n, ctx;
    double ll;     /* the continuation's summed log-likelihood */
    double chars;  /* the choice's length in characters (acc_norm) */
} mc_req;

typedef struct mc_item {
    uint64_t line;
    int n_choices, label, first; /* its requests: reqs[first .. first + n_choices) */
    int pred, pred_norm;         /* argmax of the log-likelihoods, and of them per character */
} mc_item;

typedef struct gen_item {
    uint64_t line;
    char *prompt, *answer;
    char *completion;            /* generated text (cut at --stop), completion_len bytes */
    size_t completion_len;
    char *extracted;             /* the answer found in it ("" for none), normalised */
    int match;
} gen_item;

typedef struct task_set {
    mc_item *mc;
    mc_req *reqs;
    gen_item *gen;
    int n_mc, n_req, n_gen;
    uint64_t cut;          /* requests longer than seq + 1 tokens (left-truncated) */
} task_set;

static void task_free(task_set *t) {
    for (int i = 0; i < t->n_req; i++) free(t->reqs[i].tok);
    for (int i = 0; i < t->n_gen; i++) {
        gen_item *g = &t->gen[i];
        free(g->prompt); free(g->answer); free(g->completion); free(g->extracted);
    }
    free(t->reqs);
    free(t->mc);
    free(t->gen);
    memset(t, 0, sizeof *t);
}

/* How the task's text becomes tokens. */
typedef struct task_enc {
    tt_tokenizer *tok;
    uint32_t bos;          /* UINT32_MAX: none */
    uint32_t eot;          /* prefix of an empty context (lm-eval's prefix token) */
    int seq;
    tokenizer_ids whole, ctx;
} task_enc;

/* UTF-8 characters of s[0..n): what Python's len() counts (bytes that are not
 * valid UTF-8 count one each, as a lead byte would). */
static double utf8_chars(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return (double)c;
}

/* The request for context + choice, as lm-eval's _encode_pair: the context's
 * trailing whitespace moves to the continuation, the whole text is encoded,
 * and the continuation is what follows the context's own token count. Returns
 * 0, or -EINVAL with a message naming path:line when it has no token or more
 * than --seq. */
static int mc_encode(task_enc *e, const char *ctx, const char *choice, const char *path, uint64_t line, int ci,
                     mc_req *r) {
    size_t cl = strlen(ctx), chl = strlen(choice), keep = cl;
    while (keep > 0 && (ctx[keep - 1] == ' ' || ctx[keep - 1] == '\t' || ctx[keep - 1] == '\n' ||
                        ctx[keep - 1] == '\r' || ctx[keep - 1] == '\v' || ctx[keep - 1] == '\f'))
        keep--;
    char *text = tt_xmalloc(cl + chl + 1);
    memcpy(text, ctx, cl);
    memcpy(text + cl, choice, chl + 1);
    e->whole.n = e->ctx.n = 0;
    if (e->bos != UINT32_MAX) { tokenizer_ids_push(&e->whole, e->bos); tokenizer_ids_push(&e->ctx, e->bos); }
    tokenizer_encode(e->tok, text, cl + chl, &e->whole);
    tokenizer_encode(e->tok, text, keep, &e->ctx);
    free(text);
    size_t c = e->ctx.n < e->whole.n ? e->ctx.n : e->whole.n;
    if (e->whole.n <= c)
        return TT_FAIL(-EINVAL, "%s:%llu: \"choices\"[%d] adds no token to the context; give a non-empty choice", path,
                       (unsigned long long)line, ci);
    if (e->whole.n - c > (size_t)e->seq)
        return TT_FAIL(-EINVAL, "%s:%llu: \"choices\"[%d] is %zu tokens, more than --seq %d can score; raise --seq", path,
                       (unsigned long long)line, ci, e->whole.n - c, e->seq);
    int pre = c == 0; /* an empty context: the end-of-text token predicts the first continuation token */
    r->n = (int)(e->whole.n + (size_t)pre);
    r->ctx = (int)c + pre;
    r->tok = tt_xmalloc((size_t)r->n * sizeof *r->tok);
    if (pre) r->tok[0] = e->eot;
    memcpy(r->tok + pre, e->whole.v, e->whole.n * sizeof *r->tok);
    r->chars = utf8_chars(choice, chl);
    r->ll = 0;
    return 0;
}

/* A JSON integer, or a string, as text (GSM8K's answers are numbers). */
static char *json_text(json_t *v) {
    if (json_is_string(v)) return xstrdup(json_string_value(v));
    char buf[32];
    snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return xstrdup(buf);
}

/* One line of the task file into t (kind by its fields). */
static int task_line(task_set *t, task_enc *e, const char *path, uint64_t no, json_t *o) {
    json_t *choices = json_object_get(o, "choices"), *prompt = json_object_get(o, "prompt");
    const char *why = NULL;
    if (choices) {
        json_t *ctx = json_object_get(o, "context"), *label = json_object_get(o, "label");
        size_t n = json_is_array(choices) ? json_array_size(choices) : 0;
        why = !ctx ? "\"context\" is missing" : !json_is_string(ctx) ? "\"context\" is not a string"
            : !json_is_array(choices) ? "\"choices\" is not an array" : n == 0 ? "\"choices\" is empty"
            : n > 1 << 16 ? "\"choices\" has more than 65536 entries" : !label ? "\"label\" is missing"
            : !json_is_integer(label) ? "\"label\" is not an integer" : NULL;
        if (why) return TT_FAIL(-EINVAL, "%s:%llu: %s", path, (unsigned long long)no, why);
        json_int_t lab = json_integer_value(label);
        if (lab < 0 || lab >= (json_int_t)n)
            return TT_FAIL(-EINVAL, "%s:%llu: \"label\" %" JSON_INTEGER_FORMAT " is out of range for %zu choices (0..%zu)",
                           path, (unsigned long long)no, lab, n, n - 1);
        for (size_t i = 0; i < n; i++) {
            json_t *ch = json_array_get(choices, i);
            if (!json_is_string(ch))
                return TT_FAIL(-EINVAL, "%s:%llu: \"choices\"[%zu] is not a string", path, (unsigned long long)no, i);
            if (json_string_length(ch) == 0)
                return TT_FAIL(-EINVAL, "%s:%llu: \"choices\"[%zu] is empty", path, (unsigned long long)no, i);
        }
        if ((t->n_mc & (t->n_mc - 1)) == 0) {
            t->mc = realloc(t->mc, (size_t)(t->n_mc ? 2 * t->n_mc : 1) * sizeof *t->mc);
            TT_ASSERT(t->mc);
        }
        t->reqs = realloc(t->reqs, ((size_t)t->n_req + n) * sizeof *t->reqs);
        TT_ASSERT(t->reqs);
        mc_item *it = &t->mc[t->n_mc];
        *it = (mc_item){no, (int)n, (int)lab, t->n_req, 0, 0};
        for (size_t i = 0; i < n; i++) {
            int rc = mc_encode(e, json_string_value(ctx), json_string_value(json_array_get(choices, i)), path, no,
                               (int)i, &t->reqs[t->n_req]);
            if (rc) return rc;
            mc_req *r = &t->reqs[t->n_req++];
            t->cut += r->n > e->seq + 1;
        }
        t->n_mc++;
        return 0;
    }
    if (prompt) {
        json_t *ans = json_object_get(o, "answer");
        why = !json_is_string(prompt) ? "\"prompt\" is not a string" : !ans ? "\"answer\" is missing"
            : !json_is_string(ans) && !json_is_integer(ans) ? "\"answer\" is not a string" : NULL;
        if (why) return TT_FAIL(-EINVAL, "%s:%llu: %s", path, (unsigned long long)no, why);
        if ((t->n_gen & (t->n_gen - 1)) == 0) {
            t->gen = realloc(t->gen, (size_t)(t->n_gen ? 2 * t->n_gen : 1) * sizeof *t->gen);
            TT_ASSERT(t->gen);
        }
        t->gen[t->n_gen++] = (gen_item){no, xstrdup(json_string_value(prompt)), json_text(ans), NULL, 0, NULL, 0};
        return 0;
    }
    return TT_FAIL(-EINVAL, "%s:%llu: neither a \"choices\" field (multiple choice: context, choices, label) nor a "
                   "\"prompt\" field (exact match: prompt, answer)", path, (unsigned long long)no);
}

/* Reads the task file (blank lines skipped; at most limit items, 0: all). */
static int task_read(const char *path, task_enc *e, long limit, task_set *t) {
    FILE *f = fopen(path, "rb");
    if (!f) return TT_FAIL(-errno, "cannot open --task %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    uint64_t no = 0;
    int rc = 0;
    while ((!limit || t->n_mc + t->n_gen < limit) && (got = getline(&line, &cap, f)) >= 0) {
        no++;
        size_t k = (size_t)got;
        while (k && (line[k - 1] == '\n' || line[k - 1] == '\r')) line[--k] = 0;
        size_t s = 0;
        while (s < k && (line[s] == ' ' || line[s] == '\t')) s++;
        if (s == k) continue;
        json_error_t je;
        json_t *o = json_loadb(line, k, JSON_REJECT_DUPLICATES, &je);
        if (!o || !json_is_object(o)) {
            if (o) rc = TT_FAIL(-EINVAL, "%s:%llu: the line is not a JSON object", path, (unsigned long long)no);
            else
                rc = TT_FAIL(-EINVAL, "%s:%llu: not valid JSON (column %d: %s); each line must be one JSON object", path,
                             (unsigned long long)no, je.column, je.text);
            json_decref(o);
            break;
        }
        rc = task_line(t, e, path, no, o);
        json_decref(o);
        if (rc) break;
    }
    if (!rc && ferror(f)) rc = TT_FAIL(-EIO, "cannot read --task %s: %s", path, strerror(errno));
    if (!rc && t->n_mc + t->n_gen == 0)
        rc = TT_FAIL(-EINVAL, "--task %s holds no task line; give one JSON object per line", path);
    free(line);
    fclose(f);
    return rc;
}

/* ---- --task: multiple choice ----------------------------------------------- */

/* Every request's log-likelihood: one request per row of S positions (its
 * last S + 1 tokens), weight 1 on the continuation's targets, K*B rows per
 * pass of exec_eval_tokens. */
static int mc_score(tt_exec *ex, task_set *t) {
    const tt_plan *p = exec_plan(ex);
    int S = p->req.seq, rows = p->req.K * p->req.B;
    size_t n = (size_t)rows * (size_t)S;
    int32_t *in = tt_xmalloc(n * sizeof *in), *tgt = tt_xmalloc(n * sizeof *tgt);
    tt_real *wt = tt_xmalloc(n * sizeof *wt);
    double *nll = tt_xmalloc(n * sizeof *nll);
    eval_progress prog = {tt_now(), 0, 0, isatty(2), 0};
    int rc = 0;
    for (int r0 = 0; r0 < t->n_req && !rc; r0 += rows) {
        for (int b = 0; b < rows; b++) {
            int32_t *bi = in + (size_t)b * S, *bt = tgt + (size_t)b * S;
            tt_real *bw = wt + (size_t)b * S;
            const mc_req *q = r0 + b < t->n_req ? &t->reqs[r0 + b] : NULL;
            int start = q && q->n > S + 1 ? q->n - (S + 1) : 0, m = q ? q->n - start : 0; /* m <= S + 1 tokens */
            for (int i = 0; i < S; i++) {
                int ok = i + 1 < m;
                bi[i] = ok ? (int32_t)q->tok[start + i] : 0;
                bt[i] = ok ? (int32_t)q->tok[start + i + 1] : -1;
                bw[i] = ok && start + i + 1 >= q->ctx ? 1 : 0;
            }
        }
        if ((rc = exec_eval_tokens(ex, in, tgt, wt, NULL, nll))) break;
        for (int b = 0; b < rows && r0 + b < t->n_req; b++) {
            double ll = 0;
            for (int i = 0; i < S; i++)
                if (wt[(size_t)b * S + i] != 0) ll -= nll[(size_t)b * S + i];
            t->reqs[r0 + b].ll = ll;
        }
        int done = r0 + rows < t->n_req ? r0 + rows : t->n_req;
        eval_progress_show(&prog, (uint64_t)done, (uint64_t)t->n_req, "requests", NAN);
    }
    eval_progress_end(&prog);
    free(in); free(tgt); free(wt); free(nll);
    return rc;
}

/* ---- --task: generative exact match ---------------------------------------- */

typedef struct task_gen_ctx {
    tt_tokenizer *tok;
    const char *stop;
    const gen_params *gp;
    tokenizer_ids *ids;   /* per prompt of the batch: generated tokens, end-of-sequence excluded */
    int *stopped;         /* per prompt: the stop string appeared */
} task_gen_ctx;

static int task_on_token(void *vc, int i, uint32_t token, const float *logits) {
    (void)logits;
    task_gen_ctx *c = vc;
    for (int e = 0; e < c->gp->n_eos; e++)
        if (c->gp->eos[e] == token) return 0; /* gen_run ends the sequence */
    size_t tl;
    if (!tokenizer_token(c->tok, token, &tl)) return 0; /* an id past the tokenizer's (a padded vocabulary) */
    tokenizer_ids_push(&c->ids[i], token);
    if (!c->stop) return 0;
    char *text;
    size_t len;
    TT_ASSERT(tokenizer_decode(c->tok, c->ids[i].v, c->ids[i].n, &text, &len) == 0);
    c->stopped[i] = strstr(text, c->stop) != NULL;
    free(text);
    return c->stopped[i];
}

/* s[0..n) as valid UTF-8 in a new buffer (*len bytes, NUL-terminated): each
 * byte that starts no valid sequence becomes U+FFFD, as Hugging Face's decode
 * (and so lm-eval) and `tiertrain generate` make a byte-level model's text.
 * (tools/cmd_generate.c has the same rule, with sequences still growing.) */
static char *utf8_clean(const char *s, size_t n, size_t *len) {
    char *o = tt_xmalloc(3 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        const unsigned char *u = (const unsigned char *)s + i;
        unsigned c = u[0];
        int q = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        for (int b = 1; b < q; b++)
            if ((size_t)b >= n - i || u[b] < (b == 1 ? lo : 0x80) || u[b] > (b == 1 ? hi : 0xBF)) q = 0;
        if (q == 0) {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
            continue;
        }
        memcpy(o + k, s + i, (size_t)q);
        k += (size_t)q;
        i += (size_t)q;
    }
    o[k] = 0;
    *len = k;
    return o;
}

/* lm-eval's GSM8K normalisation (regexes_to_ignore ",", "\$", "\.$" and
 * surrounding whitespace) of s[0..n), into a new string. */
static char *answer_norm(const char *s, size_t n) {
    char *o = tt_xmalloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] != ',' && s[i] != '$') o[k++] = s[i];
    o[k] = 0;
    while (k && strchr(" \t\r\n", o[k - 1])) o[--k] = 0;
    if (k && o[k - 1] == '.') o[--k] = 0;
    size_t a = 0;
    while (o[a] && strchr(" \t\r\n", o[a])) a++;
    memmove(o, o + a, k - a + 1);
    return o;
}

/* The last match of re in text (its first group when it has one), normalised;
 * "" when nothing matches. NUL bytes in the completion are read as spaces. */
static char *answer_extract(const regex_t *re, const char *text, size_t len) {
    char *s = tt_xmalloc(len + 1);
    for (size_t i = 0; i < len; i++) s[i] = text[i] ? text[i] : ' ';
    s[len] = 0;
    const char *p = s, *best = "";
    size_t best_n = 0;
    regmatch_t m[2];
    int flags = 0;
    while (regexec(re, p, 2, m, flags) == 0) {
        int g = re->re_nsub > 0 && m[1].rm_so >= 0;
        best = p + m[g].rm_so;
        best_n = (size_t)(m[g].rm_eo - m[g].rm_so);
        if (m[0].rm_eo > 0) p += m[0].rm_eo;
        else if (*p) p++;
        else break;
        if (!*p) break;
        flags = REG_NOTBOL;
    }
    char *o = answer_norm(best, best_n);
    free(s);
    return o;
}

/* ---- the command ------------------------------------------------------------ */

/* What both kinds of evaluation take: the store, the adapter, the LoRA shape
 * the runtime carries and the budget flags. */
typedef struct eval_setup {
    const char *model, *adapter;
    tier_store *st;
    const peft_adapter *a;
    tt_lora_cfg lora;
    tool_plan_args pa;
    int as_json;
} eval_setup;

/* A plan for the training executor (forward only) and the executor, with
 * the adapter loaded. Returns 0, 2 (a usage error, printed) or 1 (printed). */
static int exec_open(const eval_setup *es, const tool_plan_args *pa, tt_plan *plan, tt_exec **ex) {
    tt_plan_req req;
    int rc = tool_plan_flags("eval", es->st, pa, &req);
    if (rc) return rc;
    exec_user(&req.user, &es->lora, exec_user_cfg(&req.user).defer_optimizer);
    if (plan_make(es->st, &req, plan) || exec_create(ex, es->model, plan, 1, NULL) ||
        (es->adapter && loram_load_lora(exec_lora(*ex), es->a)))
        return tool_fail("eval");
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
    char *pt_tmp = NULL;
    double *pt_nll = NULL;
    int exit_code = 1, rc;
    if (tokfile_open(data, &tf)) { tool_fail("eval"); goto done; }
    /* Windows of seq + 1 tokens, consecutive (each starts where the last one's
     * targets ended), as train_eval cuts them; examples (a version-2 file): each
     * its own row, scored on its response tokens only. */
    const uint64_t n = tokfile_count(tf);
    const uint32_t *tk = tokfile_tokens(tf);
    exs = (tt_tokens){.t = tk, .n = n, .flags = tokfile_flags(tf)};
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
            if (tk[i] >= c->vocab) {
                fprintf(stderr, "tiertrain eval: %s holds token %u at position %llu, outside the vocabulary of %s (%u "
                                "tokens); tokenize with the model's tokenizer\n",
                        data, tk[i], (unsigned long long)i, model, c->vocab);
                goto done;
            }

    tt_plan plan;
    if ((rc = exec_open(es, &es->pa, &plan, &ex))) { exit_code = rc; goto done; }
    if (per_token) { /* written beside it and renamed over it at the end: never seen half-written */
        size_t pl = strlen(per_token) + sizeof ".partial";
        pt_tmp = tt_xmalloc(pl);
        snprintf(pt_tmp, pl, "%s.partial", per_token);
        if (!(ptf = fopen(pt_tmp, "wb"))) {
            fprintf(stderr, "tiertrain eval: cannot create %s: %s\n", pt_tmp, strerror(errno));
            free(pt_tmp);
            pt_tmp = NULL;
            goto done;
        }
        pt_nll = tt_xmalloc((size_t)plan.req.K * plan.req.B * S * sizeof *pt_nll);
    }
    per_token_ctx ptc = {ex, ptf, &exs, 0, 0, (int)S, pt_nll};
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
    for (uint64_t w0 = 0; w0 < windows; w0 += per) {
        uint64_t w = windows - w0 < per ? windows - w0 : per;
        /* exactly w windows: w * S + 1 tokens, at most w * S of them predicted */
        tt_tokens slice = {.t = tk + w0 * S, .n = w * S + 1};
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
    }
    eval_progress_end(&prog);
    double loss = sum / (double)count, ppl = exp(loss);
    if (!isfinite(loss)) {
        fprintf(stderr, "tiertrain eval: the loss of %s%s%s on %s is not finite: the model's weights hold inf/NaN "
                        "or its activations overflow; check the store with tiertrain verify\n",
                model, adapter ? " + " : "", adapter ? adapter : "", data);
        goto done;
    }
    if (ptf) {
        int bad = fflush(ptf) != 0 || ferror(ptf) || fsync(fileno(ptf)) != 0;
        int err = errno;
        bad |= fclose(ptf) != 0;
        ptf = NULL;
        if (bad) {
            fprintf(stderr, "tiertrain eval: cannot write --per-token %s: %s\n", per_token, strerror(err ? err : EIO));
            goto done;
        }
        char *tmp = pt_tmp;
        pt_tmp = NULL;
        if (atomic_commit(tmp, per_token)) { tool_fail("eval"); goto done; }
    }
    if (es->as_json) {
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
    if (ptf) fclose(ptf);
    if (pt_tmp) { unlink(pt_tmp); free(pt_tmp); }
    free(pt_nll);
    train_free_examples(&exs);
    exec_free(ex);
    tokfile_close(tf);
    return exit_code;
}

/* The --task flags. */
typedef struct task_opts {
    const char *path, *tok_spec, *stop, *samples;
    const regex_t *re;
    long limit, max_new, batch;
    int no_bos;
} task_opts;

/* Greedy completions of the generative items; *em: how many match their answer. */
static int gen_score(const eval_setup *es, const task_opts *o, tt_tokenizer *tok, const task_enc *te,
                     task_set *ts, int *em) {
    const tt_config *c = tier_config(es->st);
    if (o->max_new >= (long)c->max_pos) {
        fprintf(stderr, "tiertrain eval: --max-new-tokens %ld leaves no room for a prompt in the %u positions of %s; "
                        "lower it\n", o->max_new, c->max_pos, es->model);
        return 1;
    }
    /* the prompts' tokens, each cut to its last max_pos - max_new (lm-eval keeps a context's end too) */
    tokenizer_ids *pids = tt_xcalloc((size_t)ts->n_gen, sizeof *pids);
    int longest = 1, room = (int)(c->max_pos - (uint32_t)o->max_new), cut = 0;
    for (int i = 0; i < ts->n_gen; i++) {
        tokenizer_ids *p = &pids[i];
        if (te->bos != UINT32_MAX) tokenizer_ids_push(p, te->bos);
        tokenizer_encode(tok, ts->gen[i].prompt, strlen(ts->gen[i].prompt), p);
        if (p->n == 0) tokenizer_ids_push(p, te->eot); /* an empty prompt: lm-eval's prefix token */
        if (p->n > (size_t)room) {
            memmove(p->v, p->v + (p->n - (size_t)room), (size_t)room * sizeof *p->v);
            p->n = (size_t)room;
            cut++;
        }
        if ((int)p->n > longest) longest = (int)p->n;
    }
    if (cut)
        fprintf(stderr, "tiertrain eval: note: %d prompts are longer than the model's %u positions less "
                        "--max-new-tokens; they lose their start\n", cut, c->max_pos);
    int GB = ts->n_gen < o->batch ? ts->n_gen : (int)o->batch, rc;
    int C = longest < TASK_PREFILL_CHUNK ? (longest < 2 ? 2 : longest) : TASK_PREFILL_CHUNK;
    long cap = longest + o->max_new;
    if (cap > (long)c->max_pos) cap = c->max_pos;
    tool_plan_args ga = es->pa;
    ga.seq = C;
    ga.micro = GB;
    ga.batch_tokens = (uint64_t)GB * (uint64_t)C;
    ga.targets = "q";
    tt_plan_req req;
    tt_plan plan;
    tt_gen *g = NULL;
    tokenizer_ids *outs = tt_xcalloc((size_t)GB, sizeof *outs);
    int *stopped = tt_xcalloc((size_t)GB, sizeof *stopped), exit_code = 1;
    if ((rc = tool_plan_flags("eval", es->st, &ga, &req))) { exit_code = rc; goto done; }
    gen_plan_req(&req, es->st, &es->lora, GB, C, (int)cap);
    if (plan_make(es->st, &req, &plan) || gen_create(&g, es->model, &plan) ||
        (es->adapter && loram_load_lora(gen_lora(g), es->a))) {
        tool_fail("eval");
        goto done;
    }
    uint32_t eos[2];
    int n_eos = 0;
    eos[n_eos++] = te->eot;
    uint32_t eot_turn = tokenizer_added_id(tok, "<|eot_id|>"); /* LLaMA-3 instruct ends a turn with it */
    if (eot_turn != UINT32_MAX && eot_turn != eos[0]) eos[n_eos++] = eot_turn;
    gen_params gp = {(int)o->max_new, 0.f, 0, 1.f, 0, eos, n_eos}; /* greedy */
    task_gen_ctx gc = {tok, o->stop, &gp, outs, stopped};
    eval_progress prog = {tt_now(), 0, 0, isatty(2), 0};
    *em = 0;
    for (int first = 0; first < ts->n_gen; first += GB) {
        int nb = ts->n_gen - first < GB ? ts->n_gen - first : GB;
        const uint32_t *pp[4096];
        int lens[4096];
        for (int i = 0; i < nb; i++) {
            pp[i] = pids[first + i].v;
            lens[i] = (int)pids[first + i].n;
            outs[i].n = 0;
            stopped[i] = 0;
        }
        if (gen_run(g, nb, pp, lens, &gp, NULL, task_on_token, &gc, NULL)) {
            eval_progress_end(&prog);
            tool_fail("eval");
            goto done;
        }
        for (int i = 0; i < nb; i++) {
            char *raw;
            size_t len;
            TT_ASSERT(tokenizer_decode(tok, outs[i].v, outs[i].n, &raw, &len) == 0);
            char *text = utf8_clean(raw, len, &len);
            free(raw);
            const char *hit = o->stop ? strstr(text, o->stop) : NULL;
            if (hit) len = (size_t)(hit - text);
            gen_item *it = &ts->gen[first + i];
            char *x = answer_extract(o->re, text, len);
            size_t xl;
            it->extracted = utf8_clean(x, strlen(x), &xl); /* a byte-wise match may split a character */
            free(x);
            char *want = answer_norm(it->answer, strlen(it->answer));
            it->match = *it->extracted && strcasecmp(it->extracted, want) == 0; /* lm-eval's gsm8k: ignore_case */
            *em += it->match;
            free(want);
            text[len] = 0;
            it->completion = text;
            it->completion_len = len;
        }
        eval_progress_show(&prog, (uint64_t)(first + nb), (uint64_t)ts->n_gen, "prompts", NAN);
    }
    eval_progress_end(&prog);
    exit_code = 0;
done:
    gen_free(g);
    for (int i = 0; i < GB; i++) tokenizer_ids_free(&outs[i]);
    free(outs);
    free(stopped);
    for (int i = 0; i < ts->n_gen; i++) tokenizer_ids_free(&pids[i]);
    free(pids);
    return exit_code;
}

/* Mean and lm-eval's standard error of the mean (sample stddev / sqrt(n)) of
 * n scores of 0/1 with k ones: sqrt(p (1 - p) / (n - 1)); NAN for n < 2. */
static void mean_stderr(int k, int n, double *mean, double *se) {
    *mean = n ? (double)k / n : NAN;
    *se = n > 1 ? sqrt(*mean * (1 - *mean) / (n - 1)) : NAN;
}

static void json_num(json_t *o, const char *key, double v) {
    json_object_set_new(o, key, isfinite(v) ? json_real(v) : json_null());
}

static const char *fmt_se(double se, char *buf, size_t cap) {
    if (isnan(se)) snprintf(buf, cap, "n/a");
    else snprintf(buf, cap, "%.4f", se);
    return buf;
}

/* --samples: one JSON line per item, in the file's order (lm-eval's
 * --log_samples): a multiple-choice item's log-likelihoods and predictions,
 * a generative item's completion and the answer found in it. Written whole
 * or not at all. */
static int samples_write(const char *path, const task_set *ts) {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (int i = 0, k = 0; i < ts->n_mc || k < ts->n_gen;) {
        int mc = i < ts->n_mc && (k == ts->n_gen || ts->mc[i].line < ts->gen[k].line);
        json_t *j;
        if (mc) {
            const mc_item *it = &ts->mc[i++];
            json_t *lls = json_array();
            for (int c = 0; c < it->n_choices; c++) json_array_append_new(lls, json_real(ts->reqs[it->first + c].ll));
            j = json_pack("{s:I, s:s, s:i, s:o, s:i, s:i, s:i, s:i}", "line", (json_int_t)it->line, "kind",
                          "multiple_choice", "label", it->label, "loglikelihoods", lls, "pred", it->pred, "pred_norm",
                          it->pred_norm, "acc", it->pred == it->label, "acc_norm", it->pred_norm == it->label);
        } else {
            const gen_item *it = &ts->gen[k++];
            j = json_pack("{s:I, s:s, s:o, s:o, s:o, s:i}", "line", (json_int_t)it->line, "kind", "exact_match",
                          "completion", json_stringn(it->completion, it->completion_len), "extracted",
                          json_string(it->extracted), "answer", json_string(it->answer), "exact_match", it->match);
        }
        char *line = j ? json_dumps(j, JSON_COMPACT) : NULL; /* the texts are valid UTF-8 (utf8_clean, jansson) */
        json_decref(j);
        TT_ASSERT(line);
        size_t ll = strlen(line);
        if (len + ll + 1 > cap) {
            cap = (len + ll + 1) * 2;
            buf = realloc(buf, cap);
            TT_ASSERT(buf);
        }
        memcpy(buf + len, line, ll);
        len += ll;
        buf[len++] = '\n';
        free(line);
    }
    int rc = atomic_write_file(path, buf ? buf : "", len);
    free(buf);
    return rc;
}

/* --task: accuracy on a task file. Returns the exit code. */
static int eval_task(const eval_setup *es, const task_opts *o) {
    const tt_config *c = tier_config(es->st);
    tt_tokenizer *tok = NULL;
    task_set ts = {0};
    task_enc te = {0};
    tt_exec *ex = NULL;
    int exit_code = 1, rc;
    if (tokenizer_open(o->tok_spec, &tok)) { tool_fail("eval"); goto done; }
    uint32_t tv = tokenizer_vocab_size(tok); /* generate's check */
    if (tv > c->vocab || c->vocab - tv > c->vocab / 64 + 64) {
        fprintf(stderr, "tiertrain eval: the tokenizer %s has %u tokens but %s has a vocabulary of %u: give the "
                        "tokenizer the model was trained with (--tokenizer)\n", tokenizer_name(tok), tv, es->model,
                c->vocab);
        goto done;
    }
    te.tok = tok;
    te.seq = (int)es->pa.seq;
    te.bos = UINT32_MAX;
    te.eot = tokenizer_eot_id(tok);
    if (!o->no_bos && tokenizer_kind_of(tok) == TOKENIZER_HF_BPE) { /* as generate: <s> where the tokenizer has one */
        te.bos = tokenizer_added_id(tok, "<|begin_of_text|>");
        if (te.bos == UINT32_MAX) te.bos = tokenizer_added_id(tok, "<s>");
    }
    if (task_read(o->path, &te, o->limit, &ts)) { tool_fail("eval"); goto done; }
    if (ts.cut)
        fprintf(stderr, "tiertrain eval: note: %llu of %d choices are longer than --seq + 1 = %ld tokens; their "
                        "contexts lose their start (as lm-eval-harness truncates them)\n",
                (unsigned long long)ts.cut, ts.n_req, es->pa.seq + 1);
    int acc_k = 0, norm_k = 0, em_k = 0;
    if (ts.n_mc) {
        tt_plan plan;
        if ((rc = exec_open(es, &es->pa, &plan, &ex))) { exit_code = rc; goto done; }
        if (mc_score(ex, &ts)) { tool_fail("eval"); goto done; }
        exec_free(ex); /* its memory goes back before generation's */
        ex = NULL;
        for (int i = 0; i < ts.n_mc; i++) {
            const mc_item *it = &ts.mc[i];
            const mc_req *r = ts.reqs + it->first;
            int best = 0, best_norm = 0; /* the first largest, as numpy's argmax */
            for (int j = 1; j < it->n_choices; j++) {
                if (r[j].ll > r[best].ll) best = j;
                if (r[j].ll / r[j].chars > r[best_norm].ll / r[best_norm].chars) best_norm = j;
            }
            ts.mc[i].pred = best;
            ts.mc[i].pred_norm = best_norm;
            acc_k += best == it->label;
            norm_k += best_norm == it->label;
        }
    }
    if (ts.n_gen && (rc = gen_score(es, o, tok, &te, &ts, &em_k))) { exit_code = rc; goto done; }
    if (o->samples && samples_write(o->samples, &ts)) { tool_fail("eval"); goto done; }
    double acc, acc_se, norm, norm_se, em, em_se;
    mean_stderr(acc_k, ts.n_mc, &acc, &acc_se);
    mean_stderr(norm_k, ts.n_mc, &norm, &norm_se);
    mean_stderr(em_k, ts.n_gen, &em, &em_se);
    if (es->as_json) {
        /* NULL when a path is not valid UTF-8 (json_pack refuses it) */
        json_t *j = json_pack("{s:s, s:i}", "task", o->path, "n", ts.n_mc + ts.n_gen);
        int paths_ok = j != NULL;
        if (!j) j = json_object();
        if (ts.n_mc) {
            json_object_set_new(j, "n_multiple_choice", json_integer(ts.n_mc));
            json_num(j, "acc", acc);
            json_num(j, "acc_stderr", acc_se);
            json_num(j, "acc_norm", norm);
            json_num(j, "acc_norm_stderr", norm_se);
        }
        if (ts.n_gen) {
            json_object_set_new(j, "n_exact_match", json_integer(ts.n_gen));
            json_num(j, "exact_match", em);
            json_num(j, "exact_match_stderr", em_se);
        }
        json_t *m = json_pack("{s:s, s:s?}", "model", es->model, "adapter", es->adapter);
        paths_ok &= m != NULL && json_object_update(j, m) == 0;
        json_decref(m);
        char *txt = paths_ok ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!txt) {
            fprintf(stderr, "tiertrain eval: cannot print --json: a path is not valid UTF-8; run without --json\n");
            goto done;
        }
        printf("%s\n", txt);
        free(txt);
    } else {
        char a1[16], a2[16];
        if (ts.n_mc)
            printf("acc %.4f ± %s (n=%d), acc_norm %.4f ± %s (n=%d)\n", acc, fmt_se(acc_se, a1, sizeof a1), ts.n_mc,
                   norm, fmt_se(norm_se, a2, sizeof a2), ts.n_mc);
        if (ts.n_gen) printf("exact_match %.4f ± %s (n=%d)\n", em, fmt_se(em_se, a1, sizeof a1), ts.n_gen);
    }
    exit_code = 0;
done:
    exec_free(ex);
    tokenizer_ids_free(&te.whole);
    tokenizer_ids_free(&te.ctx);
    task_free(&ts);
    tokenizer_free(tok);
    return exit_code;
}

int cmd_eval(int argc, char **argv) {
    const char *model, *adapter, *data, *per_token, *task, *samples, *tok_spec, *answer_re, *stop;
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
        {"answer-regex", 0, CLI_STR, &answer_re, TASK_ANSWER_RE, "RE",
         "with --task: POSIX extended regex; its last match in a completion (its first group, if any) is the answer"},
        {"max-new-tokens", 'n', CLI_INT, &max_new, "256", "N", "with --task: tokens to generate at most per prompt"},
        {"stop", 0, CLI_STR, &stop, NULL, "STR", "with --task: end a completion where this text appears (default: none)"},
        {"batch", 0, CLI_INT, &gen_batch, "8", "N", "with --task: prompts generated together (each layer load serves them all)"},
        /* the budget and batch-shape flags of train, less the LoRA ones (the adapter fixes rank, alpha and targets) */
        {"hbm", 0, CLI_SIZE, &pa.hbm, "0", "SIZE", "device memory budget, e.g. 8G (0: unlimited, every layer resident)"},
        {"host", 0, CLI_SIZE, &pa.host, "0", "SIZE", "pinned host memory budget (0: unlimited)"},
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
    else if (pa.micro < 1 || pa.micro > 65536 || (int64_t)pa.micro * pa.seq > (1 << 24))
        bad = "--micro-batch must be at least 1, with --seq x --micro-batch at most 16M tokens";
    else if (pa.batch_tokens > EVAL_SLICE_TOKENS) bad = "--batch-tokens must be at most 1G";
    else if (pa.batch_tokens < (uint64_t)(pa.seq * pa.micro) || pa.batch_tokens % (uint64_t)(pa.seq * pa.micro))
        bad = "--batch-tokens must be a multiple of --seq x --micro-batch (lower --seq or --micro-batch, or raise "
              "--batch-tokens)";
    else if (limit < 0) bad = "--limit must be at least 0";
    else if (max_new < 1 || max_new > 1 << 20) bad = "--max-new-tokens must be 1..1048576";
    else if (gen_batch < 1 || gen_batch > 4096) bad = "--batch must be 1..4096";
    else if (stop && !*stop) bad = "--stop must not be empty";
    if (bad) {
        fprintf(stderr, "tiertrain eval: %s\n", bad);
        return 2;
    }
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
    const tt_config *c = tier_config(st);
    if (adapter && (peft_read(adapter, 0, &a) || loram_check_adapter(&a, adapter, c, model) ||
                    loram_check_base(&a, adapter, c, tier_prune(st), model))) {
        tool_fail("eval");
        goto done;
    }
    /* The runtime always carries a LoRA. Without an adapter it is rank 1 on
     * q_proj with B = 0 (PEFT's initialisation, which exec_create applies):
     * its term is exactly zero, so this is the bare model at the least cost. */
    eval_setup es = {model, adapter, st, &a,
                     adapter ? (tt_lora_cfg){(int)a.rank, a.alpha, 0.f, a.target_mask, a.rslora}
                             : (tt_lora_cfg){1, 1.f, 0.f, 1u << TT_PROJ_Q, 0},
                     pa, as_json};
    if (data) exit_code = eval_data(&es, data, max_tokens, per_token);
    else {
        task_opts to = {task, tok_spec, stop, samples, &re, limit, max_new, gen_batch, no_bos};
        exit_code = eval_task(&es, &to);
    }
done:
    if (task) regfree(&re);
    peft_free(&a);
    tier_close(st);
    return exit_code;
}
