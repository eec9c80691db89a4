/* tools/cmd_eval_task.c — `tiertrain eval --task FILE`: lm-evaluation-harness
 * style tasks, one JSON object a line: multiple choice {"context", "choices",
 * "label"} (acc and acc_norm from the choices' log-likelihoods, rows of --seq
 * tokens through exec_eval_tokens) and generative exact match {"prompt",
 * "answer"} (greedy completions from core/generate.h, an answer cut out of
 * each by --answer-regex). The options and the setup are tools/cmd_eval.c's.
 *
 * Conventions follow lm-evaluation-harness (lm_eval/api/task.py, models/
 * huggingface.py): a request's tokens are the encoding of context +
 * continuation split at the context's token count, with the context's
 * trailing whitespace moved to the continuation first (_encode_pair); acc_norm
 * divides each log-likelihood by the choice's length in characters; a
 * request longer than --seq + 1 tokens loses the start of its context;
 * standard errors are the sample standard deviation over sqrt(n). */
#include "tools/cmd_eval.h"

#include "core/base/common.h"
#include "core/exec.h"
#include "core/generate.h"
#include "core/tokenizer.h"
#include "io/atomicfile.h"
#include "tools/gen_common.h"
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

/* Prompt tokens per sequence per pass over the layers when generating. */
#define TASK_PREFILL_CHUNK 256

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
    if (json_is_string(v)) return tool_xstrdup(json_string_value(v));
    char buf[32];
    snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return tool_xstrdup(buf);
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
        t->gen[t->n_gen++] = (gen_item){no, tool_xstrdup(json_string_value(prompt)), json_text(ans), NULL, 0, NULL, 0};
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
    uint64_t no = 0;
    int rc = 0;
    json_t *o;
    json_error_t je;
    while ((!limit || t->n_mc + t->n_gen < limit) &&
           tool_jsonl_next(f, &line, &cap, &no, JSON_REJECT_DUPLICATES, &o, &je)) {
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
    const cli_strs *stop;
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
    if (!c->stop->n) return 0;
    char *text;
    size_t len;
    TT_ASSERT(tokenizer_decode(c->tok, c->ids[i].v, c->ids[i].n, &text, &len) == 0);
    c->stopped[i] = tool_stop_find(text, c->stop) != NULL;
    free(text);
    return c->stopped[i];
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

/* Greedy completions of the generative items; *em: how many match their answer. */
static int gen_score(const eval_setup *es, const eval_task_opts *o, tt_tokenizer *tok, const task_enc *te,
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
    tt_gen *g = NULL;
    tokenizer_ids *outs = tt_xcalloc((size_t)GB, sizeof *outs);
    int *stopped = tt_xcalloc((size_t)GB, sizeof *stopped), exit_code = 1;
    tool_plan_args ga = es->pa;
    ga.gen_flags = "--batch / --max-new-tokens"; /* what a refused plan asks to lower: eval's flags, not generate's */
    if ((rc = tool_gen_create("eval", es->st, es->model, &ga, es->a, GB, C, (int)cap, &g))) {
        exit_code = rc;
        goto done;
    }
    uint32_t eos[2];
    int n_eos = tool_gen_eos(tok, eos); /* eos[0] is te->eot */
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
            size_t len;
            char *text = tool_gen_text(tok, &outs[i], 1, &len); /* as Hugging Face's decode (and so lm-eval) */
            const char *hit = tool_stop_find(text, o->stop);
            if (hit) len = (size_t)(hit - text);
            gen_item *it = &ts->gen[first + i];
            char *x = answer_extract(o->re, text, len);
            size_t xl;
            it->extracted = tool_utf8_clean(x, strlen(x), 1, &xl); /* a byte-wise match may split a character */
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

/* ---- --task: the scores ----------------------------------------------------- */

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
        tool_jsonl_append(j, &buf, &len, &cap); /* the texts are valid UTF-8 (tool_utf8_clean, jansson) */
    }
    int rc = atomic_write_file(path, buf ? buf : "", len);
    free(buf);
    return rc;
}

/* --task: accuracy on a task file. Returns the exit code. */
int eval_task(const eval_setup *es, const eval_task_opts *o) {
    tt_tokenizer *tok = NULL;
    task_set ts = {0};
    task_enc te = {0};
    tt_exec *ex = NULL;
    int exit_code = 1, rc;
    if (tokenizer_open(o->tok_spec, &tok)) { tool_fail("eval"); goto done; }
    if (tool_vocab_check("eval", tok, es->st, es->model)) goto done;
    te.tok = tok;
    te.seq = (int)es->pa.seq;
    te.bos = tool_gen_bos(tok, o->no_bos); /* as generate */
    te.eot = tokenizer_eot_id(tok);
    if (task_read(o->path, &te, o->limit, &ts)) { tool_fail("eval"); goto done; }
    if (ts.cut)
        fprintf(stderr, "tiertrain eval: note: %llu of %d choices are longer than --seq + 1 = %ld tokens; their "
                        "contexts lose their start (as lm-eval-harness truncates them)\n",
                (unsigned long long)ts.cut, ts.n_req, es->pa.seq + 1);
    int acc_k = 0, norm_k = 0, em_k = 0;
    if (ts.n_mc) {
        tt_plan plan;
        if ((rc = eval_exec_open(es, &es->pa, &plan, &ex))) { exit_code = rc; goto done; }
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
    /* the scores are printed whether --samples could be written or not (its failure after them, exit 1) */
    const int samples_failed = o->samples && samples_write(o->samples, &ts);
    double acc, acc_se, norm, norm_se, em, em_se;
    mean_stderr(acc_k, ts.n_mc, &acc, &acc_se);
    mean_stderr(norm_k, ts.n_mc, &norm, &norm_se);
    mean_stderr(em_k, ts.n_gen, &em, &em_se);
    if (es->as_json) {
        json_t *j = json_pack("{s:o, s:i}", "task", tool_json_path(o->path), "n", ts.n_mc + ts.n_gen);
        TT_ASSERT(j);
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
        json_object_set_new(j, "model", tool_json_path(es->model));
        json_object_set_new(j, "adapter", es->adapter ? tool_json_path(es->adapter) : json_null());
        char *txt = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        TT_ASSERT(txt); /* the numbers are finite (json_num) and the strings UTF-8 */
        printf("%s\n", txt);
        free(txt);
    } else {
        char a1[16], a2[16];
        if (ts.n_mc)
            printf("acc %.4f ± %s (n=%d), acc_norm %.4f ± %s (n=%d)\n", acc, fmt_se(acc_se, a1, sizeof a1), ts.n_mc,
                   norm, fmt_se(norm_se, a2, sizeof a2), ts.n_mc);
        if (ts.n_gen) printf("exact_match %.4f ± %s (n=%d)\n", em, fmt_se(em_se, a1, sizeof a1), ts.n_gen);
    }
    if (samples_failed) {
        fflush(stdout);
        tool_fail("eval");
        goto done;
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
