/* tools/cmd_generate.c — `tiertrain generate`: text from a store (with an
 * optional LoRA adapter, e.g. a recovered one on the original model) through
 * core/generate.h, streamed under the same --hbm/--host budgets as training.
 * One --prompt prints its text as it is generated; --prompts FILE.jsonl runs
 * batches of --batch prompts (each layer load serves the whole batch) and
 * writes one JSON line per prompt. With -o the JSON lines go to the file,
 * --prompt's one too (nothing is streamed). */
#include "core/base/common.h"
#include "core/generate.h"
#include "core/tokenizer.h"
#include "io/atomicfile.h"
#include "io/peft.h"
#include "tools/cli.h"
#include "tools/gen_common.h"
#include "tools/tools.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What each prompt of a batch has produced. */
typedef struct prompt_out {
    tokenizer_ids ids;   /* generated tokens, the end-of-sequence one excluded */
    char *text;          /* their text (cut at a stop string) */
    size_t len, printed; /* bytes of text; streamed already */
    int stopped;         /* a stop string ended it */
} prompt_out;

typedef struct gen_ctx {
    tt_tokenizer *tok;
    const cli_strs *stop;
    const gen_params *gp;
    prompt_out *out;
    int stream;          /* print prompt 0's text as it comes */
} gen_ctx;

static int on_token(void *vc, int i, uint32_t token, const float *logits) {
    (void)logits;
    gen_ctx *c = vc;
    prompt_out *o = &c->out[i];
    int eos = 0;
    for (int e = 0; e < c->gp->n_eos; e++) eos |= c->gp->eos[e] == token;
    size_t tl;
    if (!eos && tokenizer_token(c->tok, token, &tl)) { /* an id past the tokenizer's (a padded vocabulary) has no text */
        tokenizer_ids_push(&o->ids, token);
        free(o->text);
        o->text = tool_gen_text(c->tok, &o->ids, 0, &o->len);
        const char *hit = tool_stop_find(o->text, c->stop);
        if (hit) {
            o->len = (size_t)(hit - o->text);
            o->text[o->len] = 0;
            o->stopped = 1;
        }
        if (c->stream && i == 0) {
            size_t hold = o->stopped ? 0 : tool_stop_hold(c->stop);
            size_t e = tool_utf8_printable(o->text, o->len, hold > 0 ? hold - 1 : 0);
            if (e > o->printed) {
                fwrite(o->text + o->printed, 1, e - o->printed, stdout);
                fflush(stdout);
                o->printed = e;
            }
        }
    }
    if (tool_interrupted) return -1;
    return o->stopped ? 1 : 0;
}

static const char *why_name(int why) {
    switch (why) {
    case GEN_EOS: return "eos";
    case GEN_LENGTH: return "length";
    case GEN_CONTEXT: return "context";
    case GEN_CALLER: return "stop";
    default: return "interrupted";
    }
}

/* The prompts of a JSONL file: {"prompt": TEXT} per line (blank lines skipped),
 * into *out, and each one's line number into *lines (FILE:LINE in later
 * messages: with blank lines skipped, a prompt's index does not find it). */
static int read_prompts(const char *path, char ***out, uint64_t **lines, int *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return TT_FAIL(-errno, "cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int count = 0, rc = 0;
    uint64_t no = 0;
    char **v = NULL;
    uint64_t *at = NULL;
    json_t *o;
    json_error_t je;
    while (tool_jsonl_next(f, &line, &cap, &no, 0, &o, &je)) {
        json_t *p = o && json_is_object(o) ? json_object_get(o, "prompt") : NULL;
        if (!o || !json_is_object(o) || !p || !json_is_string(p)) {
            rc = TT_FAIL(-EINVAL, "%s:%llu: %s; each line must be an object {\"prompt\": TEXT}", path,
                         (unsigned long long)no, !o ? je.text : !json_is_object(o) ? "not a JSON object"
                                                 : !p ? "no \"prompt\" field" : "\"prompt\" is not a string");
            json_decref(o);
            break;
        }
        v = realloc(v, (size_t)(count + 1) * sizeof *v);
        at = realloc(at, (size_t)(count + 1) * sizeof *at);
        TT_ASSERT(v && at);
        at[count] = no;
        v[count++] = tool_xstrdup(json_string_value(p));
        json_decref(o);
    }
    if (!rc && ferror(f)) rc = TT_FAIL(-EIO, "cannot read %s: %s", path, strerror(errno));
    if (!rc && count == 0) rc = TT_FAIL(-EINVAL, "%s holds no prompt; give one {\"prompt\": TEXT} object per line", path);
    free(line);
    fclose(f);
    if (rc) {
        for (int i = 0; i < count; i++) free(v[i]);
        free(v);
        free(at);
        return rc;
    }
    *out = v;
    *lines = at;
    *n = count;
    return 0;
}

int cmd_generate(int argc, char **argv) {
    const char *model, *adapter, *tok_spec, *prompt, *prompts_path, *out_path;
    cli_strs stop = {0};
    long max_new, top_k, batch, context, chunk;
    double temperature, top_p;
    uint64_t seed;
    int no_bos, force, as_json;
    tool_plan_args pa = {0};
    cli_opt opts[] = {
        {"model", 'm', CLI_STR, &model, NULL, "FILE", "model store (.tier) (required)"},
        {"adapter", 'a', CLI_STR, &adapter, NULL, "DIR", "PEFT adapter with the store's shapes (default: none)"},
        {"tokenizer", 0, CLI_STR, &tok_spec, "bytes", "T", "bytes, or a Hugging Face tokenizer.json (or its folder)"},
        {"prompt", 'p', CLI_STR, &prompt, NULL, "TEXT", "one prompt: its text is printed as it is generated"},
        {"prompts", 0, CLI_STR, &prompts_path, NULL, "FILE", "JSONL, one {\"prompt\": TEXT} per line: one JSON line out per prompt"},
        {"output", 'o', CLI_STR, &out_path, NULL, "FILE", "write the JSON lines here, --prompt's one too: nothing is streamed (default, or -: standard output)"},
        {"force", 'f', CLI_FLAG, &force, NULL, NULL, "overwrite --output"},
        {"max-new-tokens", 'n', CLI_INT, &max_new, "128", "N", "tokens to generate at most per prompt"},
        {"temperature", 0, CLI_FLOAT, &temperature, "0", "T", "sampling temperature (0: greedy)"},
        {"top-k", 0, CLI_INT, &top_k, "0", "K", "sample among the K most likely tokens (0: all)"},
        {"top-p", 0, CLI_FLOAT, &top_p, "1", "P", "sample among the most likely tokens holding P of the mass (1: all)"},
        {"seed", 0, CLI_SEED, &seed, "1", "S", "sampling seed (prompt i of the file draws from its own stream)"},
        {"stop", 0, CLI_STRS, &stop, NULL, "STR", "end a completion where this text appears (it is not kept)"},
        {"no-bos", 0, CLI_FLAG, &no_bos, NULL, NULL, "do not start prompts with the tokenizer's <s> / <|begin_of_text|>"},
        {"batch", 0, CLI_INT, &batch, "8", "N", "prompts per batch: each layer load serves them all"},
        {"context", 0, CLI_INT, &context, "0", "N", "KV cache positions per prompt (0: longest prompt + --max-new-tokens, at most the model's max_pos)"},
        {"prefill-chunk", 0, CLI_INT, &chunk, "256", "N", "prompt tokens per sequence per pass over the layers, 2..65536"},
        {"hbm", 0, CLI_SIZE, &pa.hbm, "0", "SIZE", "device memory budget, e.g. 4G (0: unlimited, every layer resident)"},
        {"host", 0, CLI_SIZE, &pa.host, "0", "SIZE", "pinned host memory budget (0: what the machine has available now)"},
        {"lm-head", 0, CLI_STR, &pa.lm_head, "auto", "WHERE", "lm_head on the device, streamed from the host, or auto"},
        {"device", 0, CLI_STR, &pa.device, "cpu", "NAME", "compute backend: cpu, cpu-async (asynchronous queues, for testing) or cuda"},
        {"act-dtype", 0, CLI_STR, &pa.act_dtype, "auto", "T", "activations and the KV cache: f32, bf16 or auto (bf16 with cuda)"},
        {"json", 0, CLI_FLAG, &as_json, NULL, NULL, "with --prompt: print one JSON line instead of streaming the text (-o implies it)"},
        {0},
    };
    cli_cmd cmd = {"generate", NULL,
                   "Generates text from a store (with an optional LoRA adapter) with a KV cache, streamed under the "
                   "--hbm/--host budgets like training.",
                   opts, 0, 0, "tiertrain generate --model tiny.tier --adapter run1 --prompt 'The committee'"};
    char *posa[1];
    int npos, rc = cli_parse(&cmd, argc, argv, posa, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    pa.gen_flags = "--batch / --prefill-chunk / --context"; /* named when the planner refuses */
    const char *bad = !model ? "--model FILE is required" : !prompt == !prompts_path ? "give one of --prompt TEXT and --prompts FILE"
                    : max_new < 1 || max_new > 1 << 20 ? "--max-new-tokens must be 1..1048576"
                    : !(temperature >= 0) ? "--temperature must be at least 0"
                    : top_k < 0 ? "--top-k must be at least 0"
                    : !(top_p > 0 && top_p <= 1) ? "--top-p must be in (0, 1]"
                    : batch < 1 || batch > 4096 ? "--batch must be 1..4096"
                    : context < 0 || context > 1 << 20 ? "--context must be 0..1048576"
                    : chunk < 2 || chunk > 1 << 16 ? "--prefill-chunk must be 2..65536"
                    : NULL;
    if (bad) {
        fprintf(stderr, "tiertrain generate: %s (see tiertrain generate --help)\n", bad);
        return 2;
    }
    if (tool_stop_check("generate", &stop)) return 2;
    const char *inputs[] = {model, adapter ? adapter : "", prompts_path ? prompts_path : "", NULL};
    if (out_path && strcmp(out_path, "-") == 0) out_path = NULL; /* -o -: standard output, as without -o */
    if (out_path && tool_check_out("generate", "-o", out_path, inputs, force)) return 2;

    int exit_code = 1, np = 0, B = 0;
    char **texts = NULL;
    uint64_t *lines = NULL; /* --prompts: each prompt's line in the file */
    tt_tokenizer *tok = NULL;
    tier_store *st = NULL;
    peft_adapter a = {0};
    tt_gen *g = NULL;
    tokenizer_ids *pids = NULL;
    prompt_out *outs = NULL;
    char *jsonl = NULL;
    size_t jl = 0;
    atomic_partial part = {-1, NULL}; /* -o: the lines go to OUT.partial as their batch ends */
    if (prompt) {
        texts = tt_xcalloc(1, sizeof *texts);
        texts[0] = tool_xstrdup(prompt);
        np = 1;
    } else if (read_prompts(prompts_path, &texts, &lines, &np)) {
        tool_fail("generate");
        goto done;
    }
    if (tokenizer_open(tok_spec, &tok)) { tool_fail("generate"); goto done; }
    if (tier_open(&st, model)) { tool_fail("generate"); goto done; }
    const tt_config *c = tier_config(st);
    if ((rc = tool_context_check("generate", "--context", context, st, model))) {
        exit_code = rc;
        goto done;
    }
    if (tool_vocab_check("generate", tok, st, model) || tool_adapter_open("generate", adapter, st, model, &a))
        goto done;
    /* the prompts' tokens: <s> first where the tokenizer has one */
    uint32_t bos = tool_gen_bos(tok, no_bos);
    pids = tt_xcalloc((size_t)np, sizeof *pids);
    int longest = 1;
    for (int i = 0; i < np; i++) {
        if (bos != UINT32_MAX) tokenizer_ids_push(&pids[i], bos);
        tokenizer_encode(tok, texts[i], strlen(texts[i]), &pids[i]);
        if (pids[i].n == 0) {
            if (prompts_path)
                fprintf(stderr, "tiertrain generate: %s:%llu: the prompt is empty; give some text\n", prompts_path,
                        (unsigned long long)lines[i]);
            else
                fprintf(stderr, "tiertrain generate: --prompt is empty; give some text\n");
            goto done;
        }
        if ((long)pids[i].n > longest) longest = (int)pids[i].n;
    }
    long cap = context ? context : longest + max_new;
    if (!context && cap > (long)c->max_pos) cap = c->max_pos;
    for (int i = 0; i < np; i++)
        if ((long)pids[i].n >= cap) {
            char where[64];
            if (prompts_path) snprintf(where, sizeof where, ":%llu: the prompt", (unsigned long long)lines[i]);
            fprintf(stderr, "tiertrain generate: %s%s has %zu tokens, which leaves no room in the context of %ld "
                            "positions (%s); shorten it%s\n", prompts_path ? prompts_path : "--prompt",
                    prompts_path ? where : "", pids[i].n, cap,
                    context ? "--context" : "the model's max_pos", context ? " or raise --context" : "");
            goto done;
        }
    B = np < batch ? np : (int)batch;
    int C = longest < chunk ? (longest < 2 ? 2 : longest) : (int)chunk;
    if ((rc = tool_gen_create("generate", st, model, &pa, adapter ? &a : NULL, B, C, (int)cap, &g))) {
        exit_code = rc;
        goto done;
    }

    uint32_t eos[2];
    int n_eos = tool_gen_eos(tok, eos);
    gen_params gp = {(int)max_new, (float)temperature, (int)top_k, (float)top_p, seed, eos, n_eos};
    outs = tt_xcalloc((size_t)B, sizeof *outs);
    gen_ctx gc = {tok, &stop, &gp, outs, prompt && !as_json && !out_path};
    /* -o's file, before the first prompt: a full disk or an unwritable folder is said now, not after every
     * prompt was generated (and what they made lost) */
    if (out_path && atomic_partial_open(out_path, &part)) { tool_fail("generate"); goto done; }
    struct sigaction old;
    tool_sigint_catch(&old, "\ntiertrain generate: stopping at the next token; Ctrl-C again quits at once\n");
    size_t jcap = 0;
    int interrupted = 0;
    uint64_t total_new = 0;
    double t_all = tt_now();
    for (int first = 0; first < np && !interrupted; first += B) {
        int n = np - first < B ? np - first : B;
        const uint32_t *pp[4096];
        int lens[4096], why[4096];
        uint64_t streams[4096];
        for (int i = 0; i < n; i++) {
            pp[i] = pids[first + i].v;
            lens[i] = (int)pids[first + i].n;
            streams[i] = (uint64_t)(first + i);
            free(outs[i].text);
            tokenizer_ids_free(&outs[i].ids);
            memset(&outs[i], 0, sizeof outs[i]);
        }
        double t0 = tt_now();
        if (gen_run(g, n, pp, lens, &gp, streams, on_token, &gc, why)) {
            tool_sigint_restore(&old);
            tool_fail("generate");
            goto done;
        }
        double secs = tt_now() - t0;
        interrupted = tool_interrupted != 0;
        for (int i = 0; i < n; i++) {
            prompt_out *o = &outs[i];
            total_new += o->ids.n;
            if (o->text) { /* a sequence cut at the very end is complete now: U+FFFD */
                char *f = tool_utf8_clean(o->text, o->len, 1, &o->len);
                free(o->text);
                o->text = f;
            }
            if (gc.stream) { /* the rest of the text, and a newline */
                fwrite(o->text ? o->text + o->printed : "", 1, o->text ? o->len - o->printed : 0, stdout);
                fputc('\n', stdout);
                fflush(stdout);
                continue;
            }
            size_t pl;
            char *ptext = tool_utf8_clean(texts[first + i], strlen(texts[first + i]), 1, &pl);
            json_t *j = json_pack("{s:s%, s:s%, s:I, s:f, s:s}", "prompt", ptext, pl, "completion",
                                  o->text ? o->text : "", o->text ? o->len : 0, "tokens", (json_int_t)o->ids.n,
                                  "seconds", secs, "stop", interrupted && !why[i] ? "interrupted" : why_name(why[i]));
            free(ptext);
            size_t ll = tool_jsonl_append(j, &jsonl, &jl, &jcap); /* the texts are valid UTF-8 (tool_utf8_clean) */
            if (!out_path) { fwrite(jsonl + jl - ll, 1, ll, stdout); fflush(stdout); }
        }
        int werr = out_path && jl ? atomic_write_all(part.fd, jsonl, jl) : 0;
        jl = 0; /* written (or printed): the buffer is the next batch's */
        if (werr) { /* the first failed write ends the run: no prompt more is generated for nothing */
            tool_sigint_restore(&old);
            atomic_write_fail(out_path, werr, "writing");
            tool_fail("generate");
            goto done;
        }
        if (prompts_path)
            fprintf(stderr, "generate: %d / %d prompts, %.1f tokens/s\n", first + n, np,
                    (double)total_new / (tt_now() - t_all));
    }
    tool_sigint_restore(&old);
    if (out_path && atomic_commit(&part, out_path)) { tool_fail("generate"); goto done; }
    if (interrupted) {
        fprintf(stderr, "tiertrain generate: interrupted; what was generated is %s\n",
                out_path ? "in the output file" : "above");
        exit_code = 130;
        goto done;
    }
    exit_code = 0;
done:
    for (int i = 0; outs && i < B; i++) { free(outs[i].text); tokenizer_ids_free(&outs[i].ids); }
    free(outs);
    for (int i = 0; pids && i < np; i++) tokenizer_ids_free(&pids[i]);
    free(pids);
    for (int i = 0; i < np; i++) free(texts[i]);
    free(texts);
    free(lines);
    atomic_partial_drop(&part); /* a run that failed or stopped early leaves no OUT.partial */
    free(jsonl);
    gen_free(g);
    peft_free(&a);
    tier_close(st);
    tokenizer_free(tok);
    return exit_code;
}
