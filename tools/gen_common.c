/* tools/gen_common.c — what generate, chat and eval --task share (see
 * tools/gen_common.h): UTF-8 cleaning, the tokenizer and adapter checks, the
 * generation engine's setup, <s> and end-of-sequence ids, JSON lines,
 * Ctrl-C. */
#include "tools/gen_common.h"

#include "core/base/common.h"
#include "core/loram.h"
#include "sched/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

/* ---- valid UTF-8 ------------------------------------------------------------ */

/* The length of the UTF-8 sequence at s (n bytes there): 1..4 when valid, 0
 * when not, -1 when s ends inside what could still become a valid one. */
static int utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!len) return 0;
    unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return -1;
        unsigned b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) return 0;
    }
    return len;
}

char *tool_utf8_clean(const char *s, size_t n, int final, size_t *len) {
    char *o = tt_xmalloc(3 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        int q = utf8_seq((const unsigned char *)s + i, n - i);
        if (q < 0 && !final) q = (int)(n - i);
        if (q <= 0) {
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

size_t tool_utf8_printable(const char *s, size_t n, size_t hold) {
    size_t e = n > hold ? n - hold : 0, i = e;
    while (i > 0 && e - i < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
    if (i > 0 && utf8_seq((const unsigned char *)s + i - 1, e - (i - 1)) < 0) e = i - 1; /* cut: wait for the rest */
    return e;
}

char *tool_gen_text(const tt_tokenizer *tok, const tokenizer_ids *ids, int final, size_t *len) {
    char *raw;
    size_t rl;
    TT_ASSERT(tokenizer_decode(tok, ids->v, ids->n, &raw, &rl) == 0);
    char *text = tool_utf8_clean(raw, rl, final, len);
    free(raw);
    return text;
}

/* ---- the model -------------------------------------------------------------- */

/* A tokenizer of tv tokens serves a model of mv: the same vocabulary, or the model's embedding padded a little
 * past it (to a multiple of 64, as some checkpoints are). */
static int vocab_fits(uint32_t tv, uint32_t mv) { return tv <= mv && mv - tv <= mv / 64 + 64; }

void tool_tokfile_vocab_note(const char *cmd, const char *path, uint32_t file_vocab, const char *model,
                             uint32_t model_vocab) {
    if (vocab_fits(file_vocab, model_vocab)) return;
    fprintf(stderr, "tiertrain %s: note: %s was tokenized for a vocabulary of %u tokens but %s has %u: its ids mean "
                    "other tokens to this model (fine for timing random weights; to train or score the model, "
                    "tokenize with its tokenizer)\n", cmd, path, file_vocab, model, model_vocab);
}

int tool_vocab_check(const char *cmd, const tt_tokenizer *tok, const tier_store *st, const char *model) {
    const tt_config *c = tier_config(st);
    uint32_t tv = tokenizer_vocab_size(tok);
    if (vocab_fits(tv, c->vocab)) return 0;
    fprintf(stderr, "tiertrain %s: the tokenizer %s has %u tokens but %s has a vocabulary of %u: give the "
                    "tokenizer the model was trained with (--tokenizer)\n",
            cmd, tokenizer_name(tok), tv, model, c->vocab);
    return 1;
}

int tool_context_check(const char *cmd, const char *flags, long cap, const tier_store *st, const char *model) {
    const tt_config *c = tier_config(st);
    if (cap <= (long)c->max_pos) return 0;
    fprintf(stderr, "tiertrain %s: %s %ld is more than the %u positions %s was built for; give at most that\n", cmd,
            flags, cap, c->max_pos, model);
    return 2;
}

int tool_adapter_open(const char *cmd, const char *dir, const tier_store *st, const char *model, peft_adapter *a) {
    if (!dir) return 0;
    const tt_config *c = tier_config(st);
    if (peft_read(dir, 0, a) || loram_check_adapter(a, dir, c, model) ||
        loram_check_base(a, dir, c, tier_prune(st), model))
        return tool_fail(cmd);
    return 0;
}

tt_lora_cfg tool_lora_cfg(const peft_adapter *a) {
    return a ? (tt_lora_cfg){(int)a->rank, a->alpha, 0.f, a->target_mask, a->rslora}
             : (tt_lora_cfg){1, 1.f, 0.f, 1u << TT_PROJ_Q, 0};
}

int tool_gen_create(const char *cmd, const tier_store *st, const char *model, const tool_plan_args *pa,
                    const peft_adapter *a, int B, int C, int cap, tt_gen **g) {
    *g = NULL;
    tool_plan_args ga = *pa;
    ga.seq = C;
    ga.micro = B;
    ga.batch_tokens = (uint64_t)B * (uint64_t)C;
    ga.rank = 1; /* placeholders for tool_plan_flags' LoRA fields: gen_plan_req sets the LoRA */
    ga.alpha = 1;
    ga.targets = "q";
    tt_plan_req req;
    int rc = tool_plan_flags(cmd, st, &ga, &req);
    if (rc) return rc;
    tt_lora_cfg lora = tool_lora_cfg(a);
    gen_plan_req(&req, st, &lora, B, C, cap);
    tt_plan plan;
    if (plan_make(st, &req, &plan) || gen_create(g, st, &plan) || (a && loram_load_lora(gen_lora(*g), a))) {
        gen_free(*g);
        *g = NULL;
        return tool_fail(cmd);
    }
    tool_plan_gpu_note(cmd, &plan);
    return 0;
}

uint32_t tool_gen_bos(const tt_tokenizer *tok, int no_bos) {
    if (no_bos || tokenizer_kind_of(tok) != TOKENIZER_HF_BPE) return UINT32_MAX;
    uint32_t bos = tokenizer_added_id(tok, "<|begin_of_text|>");
    return bos != UINT32_MAX ? bos : tokenizer_added_id(tok, "<s>");
}

int tool_gen_eos(const tt_tokenizer *tok, uint32_t eos[2]) {
    int n = 0;
    eos[n++] = tokenizer_eot_id(tok);
    uint32_t eot = tokenizer_added_id(tok, "<|eot_id|>");
    if (eot != UINT32_MAX && eot != eos[0]) eos[n++] = eot;
    return n;
}

/* ---- JSON lines ------------------------------------------------------------- */

int tool_jsonl_next(FILE *f, char **line, size_t *cap, uint64_t *no, size_t flags, json_t **o, json_error_t *je) {
    ssize_t got;
    while ((got = getline(line, cap, f)) >= 0) {
        ++*no;
        char *l = *line;
        size_t k = (size_t)got;
        while (k && (l[k - 1] == '\n' || l[k - 1] == '\r')) l[--k] = 0;
        size_t s = 0;
        while (s < k && (l[s] == ' ' || l[s] == '\t')) s++;
        if (s == k) continue;
        *o = json_loadb(l, k, flags, je);
        return 1;
    }
    return 0;
}

size_t tool_jsonl_append(json_t *j, char **buf, size_t *len, size_t *cap) {
    char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    TT_ASSERT(line);
    size_t ll = strlen(line);
    if (*len + ll + 1 > *cap) {
        *cap = (*len + ll + 1) * 2;
        *buf = realloc(*buf, *cap);
        TT_ASSERT(*buf);
    }
    memcpy(*buf + *len, line, ll);
    *len += ll;
    (*buf)[(*len)++] = '\n';
    free(line);
    return ll + 1;
}

/* ---- Ctrl-C ----------------------------------------------------------------- */

volatile sig_atomic_t tool_interrupted;
static const char *g_sigint_msg;

/* The second Ctrl-C ends the process as a signal does outside (core/train.c's on_signal likewise): the partial
 * outputs removed (tt_partial_note), then the default action (never "ignored", as a background job's SIGINT
 * starts: the user asked twice). */
static void on_sigint(int sig) {
    int e = errno;
    if (!tool_interrupted) {
        tool_interrupted = 1;
        if (g_sigint_msg) {
            ssize_t w = write(STDERR_FILENO, g_sigint_msg, strlen(g_sigint_msg));
            (void)w;
        }
    } else {
        tt_partial_remove_all();
        signal(sig, SIG_DFL);
        raise(sig); /* delivered once this handler returns (sig is blocked in it) */
    }
    errno = e;
}

void tool_sigint_catch(struct sigaction *old, const char *msg) {
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    tool_interrupted = 0;
    g_sigint_msg = msg;
    sigaction(SIGINT, &sa, old);
}

void tool_sigint_restore(const struct sigaction *old) {
    sigaction(SIGINT, old, NULL);
}

const char *tool_stop_find(const char *text, const cli_strs *stops) {
    const char *first = NULL;
    for (int k = 0; k < stops->n; k++) {
        const char *hit = strstr(text, stops->v[k]);
        if (hit && (!first || hit < first)) first = hit;
    }
    return first;
}

size_t tool_stop_hold(const cli_strs *stops) {
    size_t m = 0;
    for (int k = 0; k < stops->n; k++)
        if (strlen(stops->v[k]) > m) m = strlen(stops->v[k]);
    return m;
}

int tool_stop_check(const char *cmd, const cli_strs *stops) {
    for (int k = 0; k < stops->n; k++)
        if (!*stops->v[k]) {
            fprintf(stderr, "tiertrain %s: --stop must not be empty\n", cmd);
            return 2;
        }
    return 0;
}

char *tool_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(tt_xmalloc(n), s, n);
}
