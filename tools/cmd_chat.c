/* tools/cmd_chat.c — `tiertrain chat`: a conversation with a store (and an
 * optional LoRA adapter) through core/generate.h, under the same --hbm/--host
 * budgets as training.
 *
 * One line of standard input is one user message ("> " on standard error
 * when it is a terminal); the answer streams to standard output, followed by
 * a newline. The conversation is rendered with the model's chat template
 * (core/chat.h chat_render_prompt, the generation prompt included), and the
 * answer ends at the template's end-of-turn token (chat_stop_ids); the answer
 * without it joins the history as an assistant turn. When the history and
 * --max-new-tokens no longer fit --context, the oldest user/assistant pairs
 * are dropped (the system message stays), said once on standard error.
 *
 * Ctrl-C ends the current answer at its next token (what was printed stays
 * in the history) and the session goes on; at the prompt it ends the
 * session, as Ctrl-D (end of input) does: exit 0 either way. A second Ctrl-C
 * before the answer has stopped (a long prompt pass) quits at once (130).
 *
 * Each turn runs the whole rendered history through gen_run, whose prompt
 * pass refills the KV cache: simple and correct, at the price of that pass
 * per turn (keeping the cache across turns would save it).
 */
#include "core/base/common.h"
#include "core/chat.h"
#include "core/generate.h"
#include "core/tokenizer.h"
#include "io/peft.h"
#include "tools/cli.h"
#include "tools/gen_common.h"
#include "tools/tools.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The answer being generated. */
typedef struct answer {
    tt_tokenizer *tok;
    const gen_params *gp;
    tokenizer_ids ids;   /* its tokens, the end-of-turn one excluded */
    char *text;          /* their text as valid UTF-8 (malloc'ed), NULL before the first */
    size_t len, printed; /* bytes of text; written to stdout already */
} answer;

/* a->text from a->ids (final: a sequence cut at the end becomes U+FFFD too). */
static void answer_text(answer *a, int final) {
    free(a->text);
    a->text = tool_gen_text(a->tok, &a->ids, final, &a->len);
}

static int on_token(void *vc, int i, uint32_t token, const float *logits) {
    (void)i;
    (void)logits;
    answer *a = vc;
    int end = 0;
    for (int e = 0; e < a->gp->n_eos; e++) end |= a->gp->eos[e] == token;
    size_t tl;
    if (!end && tokenizer_token(a->tok, token, &tl)) { /* an id past the tokenizer's (a padded vocabulary) has no text */
        tokenizer_ids_push(&a->ids, token);
        answer_text(a, 0);
        size_t e = tool_utf8_printable(a->text, a->len, 0);
        if (e > a->printed) {
            fwrite(a->text + a->printed, 1, e - a->printed, stdout);
            fflush(stdout);
            a->printed = e;
        }
    }
    return tool_interrupted ? -1 : 0;
}

static const char *why_name(int why, int interrupted) {
    if (interrupted) return "Ctrl-C";
    switch (why) {
    case GEN_EOS: return "end of turn";
    case GEN_LENGTH: return "--max-new-tokens";
    case GEN_CONTEXT: return "end of context";
    default: return "?";
    }
}

/* The conversation: m[0] the system message when there is one; contents are
 * owned (malloc'ed). */
typedef struct history {
    chat_message *m;
    int n, cap;
} history;

static void hist_push(history *h, chat_role role, const char *text, size_t len) {
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 16;
        h->m = realloc(h->m, (size_t)h->cap * sizeof *h->m);
        TT_ASSERT(h->m);
    }
    char *c = tt_xmalloc(len + 1);
    memcpy(c, text, len);
    c[len] = 0;
    h->m[h->n++] = (chat_message){role, c};
}

/* Drops messages [i, i + k). */
static void hist_drop(history *h, int i, int k) {
    if (k == 0) return;
    for (int j = i; j < i + k; j++) free((char *)h->m[j].content);
    memmove(h->m + i, h->m + i + k, (size_t)(h->n - i - k) * sizeof *h->m);
    h->n -= k;
}

/* Waits for input on a terminal: 1 when a line can be read, 0 after Ctrl-C.
 * Polls so that a SIGINT another thread (a BLAS worker) takes still ends
 * the wait; a terminal hands over one line per read, so nothing sits in
 * stdin's buffer unseen. */
static int wait_input(void) {
    struct pollfd pf = {.fd = 0, .events = POLLIN};
    while (!tool_interrupted) {
        int r = poll(&pf, 1, 250);
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) return 1; /* let the read report it */
    }
    return 0;
}

int cmd_chat(int argc, char **argv) {
    const char *model, *adapter, *tok_spec, *tpl_name, *system_msg;
    long max_new, top_k, context, chunk;
    double temperature, top_p;
    uint64_t seed;
    int stats;
    tool_plan_args pa = {0};
    cli_opt opts[] = {
        {"model", 'm', CLI_STR, &model, NULL, "FILE", "model store (.tier) (required)"},
        {"adapter", 'a', CLI_STR, &adapter, NULL, "DIR", "PEFT adapter with the store's shapes (default: none)"},
        {"tokenizer", 0, CLI_STR, &tok_spec, "bytes", "T", "bytes, or a Hugging Face tokenizer.json (or its folder)"},
        {"template", 0, CLI_STR, &tpl_name, NULL, "NAME", "chat template: llama3, llama2, chatml or none (default: the "
                                                          "tokenizer_config.json next to --tokenizer names it; none for bytes)"},
        {"system", 0, CLI_STR, &system_msg, NULL, "TEXT", "system message opening the conversation (default: none)"},
        {"max-new-tokens", 'n', CLI_INT, &max_new, "512", "N", "tokens per answer at most"},
        {"temperature", 0, CLI_FLOAT, &temperature, "0.7", "T", "sampling temperature (0: greedy)"},
        {"top-k", 0, CLI_INT, &top_k, "40", "K", "sample among the K most likely tokens (0: all)"},
        {"top-p", 0, CLI_FLOAT, &top_p, "0.9", "P", "sample among the most likely tokens holding P of the mass (1: all)"},
        {"seed", 0, CLI_SEED, &seed, "1", "S", "sampling seed (answer i draws from its own stream: a session replays)"},
        {"context", 0, CLI_INT, &context, "0", "N", "KV cache positions: history + answer (0: the model's max_pos, at most 4096)"},
        {"prefill-chunk", 0, CLI_INT, &chunk, "256", "N", "history tokens per pass over the layers, 2..65536"},
        {"stats", 0, CLI_FLAG, &stats, NULL, NULL, "after each answer, print its prompt and answer tokens, why it ended and the speed on stderr"},
        {"hbm", 0, CLI_SIZE, &pa.hbm, "0", "SIZE", "device memory budget, e.g. 4G (0: unlimited, every layer resident)"},
        {"host", 0, CLI_SIZE, &pa.host, "0", "SIZE", "pinned host memory budget (0: what the machine has available now)"},
        {"lm-head", 0, CLI_STR, &pa.lm_head, "auto", "WHERE", "lm_head on the device, streamed from the host, or auto"},
        {"device", 0, CLI_STR, &pa.device, "cpu", "NAME", "compute backend: cpu, cpu-async (asynchronous queues, for testing) or cuda"},
        {"act-dtype", 0, CLI_STR, &pa.act_dtype, "auto", "T", "activations and the KV cache: f32, bf16 or auto (bf16 with cuda)"},
        {0},
    };
    cli_cmd cmd = {"chat", NULL,
                   "Talks with a store (with an optional LoRA adapter) in its chat template: one line of input is one "
                   "message, the answer streams out; Ctrl-C stops an answer, Ctrl-D (end of input) ends the session.",
                   opts, 0, 0,
                   "tiertrain chat --model llama3.1-8b.tier --adapter run1 --tokenizer llama3.1/ --system 'Be brief.'"};
    char *posa[1];
    int npos, rc = cli_parse(&cmd, argc, argv, posa, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    if (tool_stdin_closed()) {
        fprintf(stderr, "tiertrain chat: standard input is closed; chat reads the user's messages from it (a terminal, "
                        "or a file or pipe of one message a line)\n");
        return 2;
    }
    int tpl = tpl_name ? chat_template_parse(tpl_name) : -1;
    const char *bad = !model ? "--model FILE is required"
                    : tpl_name && (tpl < 0 || tpl == CHAT_ALPACA) ? "--template must be llama3, llama2, chatml or none"
                    : max_new < 1 || max_new > 1 << 20 ? "--max-new-tokens must be 1..1048576"
                    : !(temperature >= 0) ? "--temperature must be at least 0"
                    : top_k < 0 ? "--top-k must be at least 0"
                    : !(top_p > 0 && top_p <= 1) ? "--top-p must be in (0, 1]"
                    : context < 0 || context > 1 << 20 ? "--context must be 0..1048576"
                    : chunk < 2 || chunk > 1 << 16 ? "--prefill-chunk must be 2..65536" : NULL;
    if (bad) {
        fprintf(stderr, "tiertrain chat: %s (see tiertrain chat --help)\n", bad);
        return 2;
    }

    int exit_code = 1, tty = isatty(0);
    tt_tokenizer *tok = NULL;
    tier_store *st = NULL;
    peft_adapter a = {0};
    tt_gen *g = NULL;
    history h = {0};
    tokenizer_ids prompt = {0};
    answer ans = {0};
    char *line = NULL;
    size_t line_cap = 0;
    struct sigaction old;
    tool_sigint_catch(&old, NULL); /* no SA_RESTART: Ctrl-C interrupts a read at the prompt */

    if (tokenizer_open(tok_spec, &tok)) { tool_fail("chat"); goto done; }
    if (tpl < 0) {
        char why[600];
        tpl = chat_template_of(tok_spec, why, sizeof why);
        if (tpl < 0 && tokenizer_kind_of(tok) == TOKENIZER_BYTES) tpl = CHAT_NONE;
        if (tpl < 0) {
            fprintf(stderr, "tiertrain chat: --template is required: %s; give the model's: llama3, llama2, chatml or "
                            "none\n", why);
            exit_code = 2;
            goto done;
        }
    }
    /* the template's special tokens: refused now rather than at the first message */
    chat_message probe = {CHAT_ROLE_USER, "?"};
    if (chat_render_prompt(tok, tpl, &probe, 1, &prompt)) { tool_fail("chat"); goto done; }
    if (tier_open(&st, model)) { tool_fail("chat"); goto done; }
    const tt_config *c = tier_config(st);
    if (tool_vocab_check("chat", tok, st, model)) goto done;
    long cap = context ? context : c->max_pos < 4096 ? (long)c->max_pos : 4096;
    if (tool_context_check("chat", "--context", cap, st, model)) {
        exit_code = 2;
        goto done;
    }
    if (max_new >= cap) {
        fprintf(stderr, "tiertrain chat: --max-new-tokens %ld leaves no room for a message in a context of %ld "
                        "positions; lower it%s\n", max_new, cap, context ? " or raise --context" : "");
        exit_code = 2;
        goto done;
    }
    if (system_msg) { /* the system message with the shortest message: if that does not fit, none will */
        chat_message both[2] = {{CHAT_ROLE_SYSTEM, system_msg}, probe};
        prompt.n = 0;
        if (chat_render_prompt(tok, tpl, both, 2, &prompt)) { tool_fail("chat"); goto done; }
        if ((long)prompt.n >= cap) {
            fprintf(stderr, "tiertrain chat: the system message (--system) takes %zu tokens in the template, which "
                            "leaves no room for a message in a context of %ld positions; shorten it or raise "
                            "--context\n", prompt.n, cap);
            exit_code = 2;
            goto done;
        }
    }
    if (tool_adapter_open("chat", adapter, st, model, &a)) goto done;
    int C = chunk < cap ? (int)chunk : (int)cap;
    if ((rc = tool_gen_create("chat", st, model, &pa, adapter ? &a : NULL, 1, C, (int)cap, &g))) {
        exit_code = rc;
        goto done;
    }

    uint32_t stop[2];
    int n_stop = chat_stop_ids(tok, tpl, stop);
    TT_ASSERT(n_stop > 0); /* the probe rendered: the template's tokens are there */
    gen_params gp = {(int)max_new, (float)temperature, (int)top_k, (float)top_p, seed, stop, n_stop};
    int sys = system_msg != NULL, warned = 0;
    if (system_msg) hist_push(&h, CHAT_ROLE_SYSTEM, system_msg, strlen(system_msg));
    if (tty)
        fprintf(stderr, "chat: %s%s%s, template %s, context %ld, answers of up to %ld tokens. Ctrl-C stops an "
                        "answer, Ctrl-D ends.\n", model, adapter ? " + " : "", adapter ? adapter : "",
                chat_template_name(tpl), cap, max_new);
    for (uint64_t turn = 0;;) {
        if (tool_interrupted) break; /* Ctrl-C while loading or at the prompt */
        if (tty) {
            fputs("> ", stderr);
            fflush(stderr);
            if (!wait_input()) { fputc('\n', stderr); break; }
        }
        errno = 0;
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) {
            if (tool_interrupted || feof(stdin)) {
                if (tty) fputc('\n', stderr);
                break;
            }
            fprintf(stderr, "tiertrain chat: cannot read standard input: %s\n", strerror(errno));
            goto done;
        }
        size_t k = (size_t)got;
        while (k && (line[k - 1] == '\n' || line[k - 1] == '\r')) k--;
        if (line[strspn(line, " \t\r\n")] == '\0') continue; /* a blank line: nothing to send */
        hist_push(&h, CHAT_ROLE_USER, line, k);

        /* a message the context cannot hold even alone (with the system message) is not sent, and costs the
         * history nothing */
        chat_message alone[2] = {h.m[0], h.m[h.n - 1]};
        prompt.n = 0;
        if (chat_render_prompt(tok, tpl, alone + !sys, 1 + sys, &prompt)) { tool_fail("chat"); goto done; }
        if ((long)prompt.n >= cap) {
            fprintf(stderr, "chat: this message takes %zu tokens%s, which the context of %ld positions cannot hold "
                            "(--context); it is not sent\n", prompt.n, sys ? " with the system message" : "", cap);
            hist_drop(&h, h.n - 1, 1);
            continue;
        }
        /* the history that fits with the answer: the oldest pairs go first */
        int dropped = 0;
        for (;;) {
            prompt.n = 0;
            if (chat_render_prompt(tok, tpl, h.m, h.n, &prompt)) { tool_fail("chat"); goto done; }
            if ((long)prompt.n + max_new <= cap || h.n - sys <= 1) break;
            hist_drop(&h, sys, 2);
            dropped = 1;
        }
        if (dropped && !warned) {
            fprintf(stderr, "chat: the conversation no longer fits --context %ld with --max-new-tokens %ld: the oldest "
                            "turns are dropped from now on%s\n", cap, max_new, sys ? " (the system message stays)" : "");
            warned = 1;
        }

        const uint32_t *pp[1] = {prompt.v};
        int lens[1] = {(int)prompt.n}, why = 0;
        free(ans.text);
        tokenizer_ids_free(&ans.ids);
        ans = (answer){.tok = tok, .gp = &gp};
        double t0 = tt_now();
        if (gen_run(g, 1, pp, lens, &gp, &turn, on_token, &ans, &why)) { tool_fail("chat"); goto done; }
        double secs = tt_now() - t0;
        int interrupted = tool_interrupted != 0;
        tool_interrupted = 0; /* it ended this answer, not the session */
        if (ans.ids.n) answer_text(&ans, 1); /* what was held back, U+FFFD if it stays incomplete */
        fwrite(ans.text ? ans.text + ans.printed : "", 1, ans.text ? ans.len - ans.printed : 0, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        /* the history holds exactly what was printed (as a Hugging Face chat loop appends decode()'s text) */
        hist_push(&h, CHAT_ROLE_ASSISTANT, ans.text ? ans.text : "", ans.text ? ans.len : 0);
        turn++;
        if (stats)
            fprintf(stderr, "chat: answer %llu: prompt %zu tokens, %zu new, ended by %s, %.1f tokens/s\n",
                    (unsigned long long)turn, prompt.n, ans.ids.n, why_name(why, interrupted),
                    secs > 0 ? (double)ans.ids.n / secs : 0.0);
        else if (why == GEN_CONTEXT && !interrupted)
            fprintf(stderr, "chat: the answer stopped at the end of the context (--context %ld)\n", cap);
    }
    exit_code = 0;
done:
    tool_sigint_restore(&old);
    free(line);
    free(ans.text);
    tokenizer_ids_free(&ans.ids);
    tokenizer_ids_free(&prompt);
    hist_drop(&h, 0, h.n);
    free(h.m);
    gen_free(g);
    peft_free(&a);
    tier_close(st);
    tokenizer_free(tok);
    return exit_code;
}
