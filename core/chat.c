/* core/chat.c — JSONL instruction records, chat templates, loss masks and conversations to answer
 * (core/chat.h). */
#include "core/chat.h"

#include "core/base/common.h"
#include "core/tokfile.h"

#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const g_role[] = {"system", "user", "assistant"};

struct chat_example {
    const char *file;
    uint64_t line;
    char *text;                /* a {"text"} record, else NULL */
    chat_message *m;           /* each content malloc'ed (owned) */
    int n;
    char *instruction, *input; /* an Alpaca record (input may be NULL) */
};

static const char *const g_tpl[] = {"none", "llama3", "llama2", "chatml", "alpaca"};

int chat_template_parse(const char *name) {
    for (int i = 0; i < (int)(sizeof g_tpl / sizeof *g_tpl); i++)
        if (strcmp(name, g_tpl[i]) == 0) return i;
    return -1;
}

const char *chat_template_name(int tpl) { return tpl >= 0 && tpl <= CHAT_ALPACA ? g_tpl[tpl] : "?"; }

static int is_default(const json_t *name) { return json_is_string(name) && strcmp(json_string_value(name), "default") == 0; }

int chat_template_of(const char *tokenizer_path, char *why, size_t cap) {
    char dummy[8];
    if (!why) why = dummy, cap = sizeof dummy;
    if (strcmp(tokenizer_path, "bytes") == 0) {
        snprintf(why, cap, "the byte-level tokenizer names no chat template");
        return -1;
    }
    struct stat sb;
    if (stat(tokenizer_path, &sb) != 0) {
        snprintf(why, cap, "%s does not exist", tokenizer_path);
        return -1;
    }
    char *copy = strdup(tokenizer_path);
    TT_ASSERT(copy);
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", S_ISDIR(sb.st_mode) ? tokenizer_path : dirname(copy));
    free(copy);
    if (access(path, F_OK) != 0) {
        snprintf(why, cap, "there is no %s", path);
        return -1;
    }
    if (tt_not_regular(path)) {
        snprintf(why, cap, "%s is not a regular file", path);
        return -1;
    }
    /* JSON_DECODE_INT_AS_REAL: model_max_length is often 1e30 written as an integer, too big for jansson's */
    json_error_t je;
    json_t *root = json_load_file(path, JSON_DECODE_INT_AS_REAL, &je);
    if (!root) {
        snprintf(why, cap, "%s is not valid JSON (line %d: %s)", path, je.line, je.text);
        return -1;
    }
    const json_t *ct = json_object_get(root, "chat_template");
    if (json_is_array(ct)) /* [{"name": "default", "template": ...}, ...] */
        for (size_t i = 0; i < json_array_size(ct); i++)
            if (is_default(json_object_get(json_array_get(ct, i), "name")))
                ct = json_object_get(json_array_get(ct, i), "template");
    const char *s = json_string_value(ct);
    /* the family by its markers, then the variants that render other text than the family's published
     * template (a fine-tune must see what the model sees at inference) */
    int tpl = -1;
    if (!s) snprintf(why, cap, "%s names no chat template", path);
    else if (strstr(s, "<|start_header_id|>")) {
        if (strstr(s, "Cutting Knowledge Date") || strstr(s, "Today Date"))
            snprintf(why, cap, "%s holds Llama-3.1's chat template, whose system block carries a knowledge cutoff and "
                               "today's date; --template llama3 renders Meta-Llama-3's, without them", path);
        else tpl = CHAT_LLAMA3;
    } else if (strstr(s, "[INST]")) {
        if (strstr(s, "<<SYS>>")) tpl = CHAT_LLAMA2;
        else snprintf(why, cap, "%s holds an [INST] template without Llama-2's <<SYS>> block (Mistral's?), which "
                                "--template llama2 does not render", path);
    } else if (strstr(s, "<|im_start|>")) {
        if (strstr(s, "You are")) /* a system message the template adds by itself (Qwen's) */
            snprintf(why, cap, "%s holds a ChatML template that adds a system message of its own, which --template "
                               "chatml does not", path);
        else tpl = CHAT_CHATML;
    } else snprintf(why, cap, "%s holds a chat template tiertrain does not render", path);
    json_decref(root);
    return tpl;
}

void chat_example_free(chat_example *ex) {
    if (!ex) return;
    free(ex->text);
    for (int i = 0; i < ex->n; i++) free((char *)ex->m[i].content);
    free(ex->m);
    free(ex->instruction);
    free(ex->input);
    free(ex);
}

int chat_turns(const chat_example *ex) {
    int k = 0;
    for (int i = 0; i < ex->n; i++) k += ex->m[i].role == CHAT_ROLE_ASSISTANT;
    return k;
}

#define BAD(...) (rc = TT_FAIL(-EINVAL, __VA_ARGS__), chat_example_free(ex), json_decref(root), rc)

/* Python's str.strip(): the white space str.isspace() knows, at both ends. */
static int py_space_at(const char *s, size_t n, size_t *len) {
    const unsigned char *p = (const unsigned char *)s;
    if (n >= 1 && ((p[0] >= 0x09 && p[0] <= 0x0d) || (p[0] >= 0x1c && p[0] <= 0x20))) { *len = 1; return 1; }
    if (n >= 2 && p[0] == 0xc2 && (p[1] == 0x85 || p[1] == 0xa0)) { *len = 2; return 1; }
    if (n >= 3 && p[0] == 0xe1 && p[1] == 0x9a && p[2] == 0x80) { *len = 3; return 1; }             /* U+1680 */
    if (n >= 3 && p[0] == 0xe2 && p[1] == 0x80 && (p[2] <= 0x8a || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf)) {
        *len = 3;                                                                                    /* U+2000.. */
        return 1;
    }
    if (n >= 3 && p[0] == 0xe2 && p[1] == 0x81 && p[2] == 0x9f) { *len = 3; return 1; }             /* U+205F */
    if (n >= 3 && p[0] == 0xe3 && p[1] == 0x80 && p[2] == 0x80) { *len = 3; return 1; }             /* U+3000 */
    return 0;
}

static void py_strip(const char *s, const char **b, size_t *n) {
    size_t len = strlen(s), k;
    while (len && py_space_at(s, len, &k)) { s += k; len -= k; }
    for (;;) { /* from the end: try each width */
        int cut = 0;
        for (size_t w = 1; w <= 3 && w <= len; w++)
            if (py_space_at(s + len - w, w, &k) && k == w) { len -= w; cut = 1; break; }
        if (!cut) break;
    }
    *b = s;
    *n = len;
}

/* 1 when s is nothing but such white space: a response the templates' strip() leaves empty. */
static int py_blank(const char *s) {
    const char *b;
    size_t n;
    py_strip(s, &b, &n);
    return n == 0;
}

static void add_msg(chat_example *ex, chat_role role, const char *content) {
    ex->m = realloc(ex->m, (size_t)(ex->n + 1) * sizeof *ex->m);
    TT_ASSERT(ex->m);
    char *copy = strdup(content);
    TT_ASSERT(copy);
    ex->m[ex->n++] = (chat_message){role, copy};
}

/* A string field of obj, or NULL (with *present when it exists but is no string). */
static const char *str_field(const json_t *obj, const char *key, int *not_string) {
    const json_t *v = json_object_get(obj, key);
    *not_string = v && !json_is_string(v) && !json_is_null(v);
    return json_string_value(v);
}

int chat_parse(const char *file, uint64_t line_no, const char *line, size_t len, chat_example **out) {
    *out = NULL;
    int rc = 0;
    json_error_t je;
    chat_example *ex = NULL;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!root && strstr(je.text, "JSON_ALLOW_NUL")) /* jansson's text names its own flag */
        return TT_FAIL(-EINVAL, "%s:%llu: a string holds \\u0000 (a NUL character) near column %d; remove it", file,
                       (unsigned long long)line_no, je.column);
    if (!root)
        return TT_FAIL(-EINVAL, "%s:%llu: not valid JSON (column %d: %s); each line must be one JSON object", file,
                       (unsigned long long)line_no, je.column, je.text);
    if (!json_is_object(root)) return BAD("%s:%llu: the line is not a JSON object", file, (unsigned long long)line_no);
    ex = tt_xcalloc(1, sizeof *ex);
    ex->file = file;
    ex->line = line_no;
    int ns;
    const json_t *msgs = json_object_get(root, "messages"), *conv = json_object_get(root, "conversations");
    if (msgs || conv) {
        const json_t *a = msgs ? msgs : conv;
        const char *key = msgs ? "messages" : "conversations", *rk = msgs ? "role" : "from",
                   *ck = msgs ? "content" : "value";
        if (!json_is_array(a) || json_array_size(a) == 0)
            return BAD("%s:%llu: \"%s\" must be a non-empty list of messages", file, (unsigned long long)line_no, key);
        for (size_t i = 0; i < json_array_size(a); i++) {
            const json_t *m = json_array_get(a, i);
            const char *role = json_string_value(json_object_get(m, rk));
            const char *content = str_field(m, ck, &ns);
            if (!json_is_object(m) || !role)
                return BAD("%s:%llu: %s[%zu].%s is missing or not a string", file, (unsigned long long)line_no, key,
                           i, rk);
            if (!content)
                return BAD("%s:%llu: %s[%zu].%s is missing or not a string", file, (unsigned long long)line_no, key,
                           i, ck);
            int r = strcmp(role, "system") == 0                                    ? CHAT_ROLE_SYSTEM
                    : strcmp(role, "user") == 0 || strcmp(role, "human") == 0      ? CHAT_ROLE_USER
                    : strcmp(role, "assistant") == 0 || strcmp(role, "gpt") == 0   ? CHAT_ROLE_ASSISTANT
                                                                                   : -1;
            if (r < 0)
                return BAD("%s:%llu: %s[%zu].%s is \"%.40s\"; expected system, user or assistant%s", file,
                           (unsigned long long)line_no, key, i, rk, role, msgs ? "" : " (ShareGPT: human, gpt)");
            if (r == CHAT_ROLE_SYSTEM && i != 0)
                return BAD("%s:%llu: %s[%zu] is a system message; only the first message may be one", file,
                           (unsigned long long)line_no, key, i);
            if (r == CHAT_ROLE_ASSISTANT && py_blank(content))
                return BAD("%s:%llu: %s[%zu].%s is an empty response; there is nothing to train on", file,
                           (unsigned long long)line_no, key, i, ck);
            add_msg(ex, r, content);
        }
        if (ex->m[ex->n - 1].role != CHAT_ROLE_ASSISTANT)
            return BAD("%s:%llu: the %s end with a %s message; a training example ends with the assistant's response",
                       file, (unsigned long long)line_no, key, g_role[ex->m[ex->n - 1].role]);
    } else if (json_object_get(root, "instruction")) {
        int ni, nn, no;
        const char *ins = str_field(root, "instruction", &ni), *inp = str_field(root, "input", &nn),
                   *outp = str_field(root, "output", &no);
        if (!ins || ni || nn || no)
            return BAD("%s:%llu: \"%s\" is not a string (an Alpaca record has instruction, input and output)", file,
                       (unsigned long long)line_no, !ins || ni ? "instruction" : nn ? "input" : "output");
        if (!outp) return BAD("%s:%llu: \"output\" is missing (an Alpaca record has instruction, input and output)", file,
                              (unsigned long long)line_no);
        if (py_blank(outp))
            return BAD("%s:%llu: \"output\" is empty; there is nothing to train on", file, (unsigned long long)line_no);
        ex->instruction = strdup(ins);
        ex->input = inp && *inp ? strdup(inp) : NULL;
        size_t l = strlen(ins) + (inp ? strlen(inp) : 0) + 3;
        char *user = tt_xmalloc(l);
        snprintf(user, l, "%s%s%s", ins, ex->input ? "\n\n" : "", ex->input ? inp : "");
        add_msg(ex, CHAT_ROLE_USER, user);
        free(user);
        add_msg(ex, CHAT_ROLE_ASSISTANT, outp);
    } else if (json_object_get(root, "prompt") || json_object_get(root, "completion")) {
        int np, nc;
        const char *p = str_field(root, "prompt", &np), *c = str_field(root, "completion", &nc);
        if (!p || np) return BAD("%s:%llu: \"prompt\" is missing or not a string", file, (unsigned long long)line_no);
        if (!c || nc) return BAD("%s:%llu: \"completion\" is missing or not a string", file, (unsigned long long)line_no);
        if (py_blank(c))
            return BAD("%s:%llu: \"completion\" is empty; there is nothing to train on", file, (unsigned long long)line_no);
        add_msg(ex, CHAT_ROLE_USER, p);
        add_msg(ex, CHAT_ROLE_ASSISTANT, c);
    } else if (json_object_get(root, "text")) {
        const char *t = str_field(root, "text", &ns);
        if (!t) return BAD("%s:%llu: \"text\" is not a string", file, (unsigned long long)line_no);
        if (!*t) return BAD("%s:%llu: \"text\" is empty", file, (unsigned long long)line_no);
        ex->text = strdup(t);
        TT_ASSERT(ex->text);
    } else {
        return BAD("%s:%llu: the record has none of the fields tiertrain reads: \"text\", \"instruction\"/\"output\" "
                   "(Alpaca), \"prompt\"/\"completion\", \"messages\" or \"conversations\" (ShareGPT)", file,
                   (unsigned long long)line_no);
    }
    json_decref(root);
    *out = ex;
    return 0;
}
#undef BAD

/* ---- rendering ------------------------------------------------------------------ */

typedef struct span {
    size_t a, b;
} span;

typedef struct rbuf {
    tt_tokenizer *t;
    tokenizer_ids *ids, *flags, offs;
    char *seg; /* the text since the last special token */
    size_t n, cap;
    span sp[64];
    int nsp, all, started;
} rbuf;

static void r_text(rbuf *r, const char *s, size_t n, int trained) {
    if (r->n + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;
        while (cap < r->n + n + 1) cap *= 2;
        r->seg = realloc(r->seg, cap);
        TT_ASSERT(r->seg);
        r->cap = cap;
    }
    if (trained && n) {
        if (r->nsp && r->sp[r->nsp - 1].b == r->n) r->sp[r->nsp - 1].b = r->n + n;
        else {
            TT_ASSERT(r->nsp < 64);
            r->sp[r->nsp++] = (span){r->n, r->n + n};
        }
    }
    memcpy(r->seg + r->n, s, n);
    r->n += n;
}

/* The flags of the next token: a target when trained (or with train_on_prompt), the example's start if first. */
static void r_flag(rbuf *r, int trained) {
    tokenizer_ids_push(r->flags, (trained || r->all ? TOKFILE_TRAIN : 0) | (r->started ? 0 : TOKFILE_START));
    r->started = 1;
}

static void r_push(rbuf *r, uint32_t id, int trained) {
    tokenizer_ids_push(r->ids, id);
    r_flag(r, trained);
}

static void r_flush(rbuf *r) {
    if (!r->n) return;
    size_t base = r->ids->n;
    r->offs.n = 0;
    tokenizer_encode_offsets(r->t, r->seg, r->n, !r->started, r->ids, &r->offs);
    TT_ASSERT(r->offs.n == r->ids->n - base);
    for (size_t i = 0; i < r->offs.n; i++) {
        /* the token's bytes [o, e): a target when any of them is in a trained span (Hugging Face's
         * assistant mask) */
        size_t o = r->offs.v[i], e = i + 1 < r->offs.n ? r->offs.v[i + 1] : r->n;
        if (e <= o) e = o + 1;
        int trained = 0;
        for (int k = 0; k < r->nsp && !trained; k++) trained = o < r->sp[k].b && e > r->sp[k].a;
        r_flag(r, trained);
    }
    r->n = 0;
    r->nsp = 0;
}

static void r_special(rbuf *r, uint32_t id, int trained) {
    r_flush(r);
    r_push(r, id, trained);
}

static void r_str(rbuf *r, const char *s, int trained) { r_text(r, s, strlen(s), trained); }

/* The id of added token s, or fails naming it (where: "FILE:LINE: " or ""). */
static int need(const tt_tokenizer *t, const char *where, int tpl, const char *s, uint32_t *id) {
    *id = tokenizer_added_id(t, s);
    if (*id != UINT32_MAX) return 0;
    return TT_FAIL(-EINVAL, "%sthe %s template needs the special token %s, which the tokenizer %s lacks; "
                   "choose the template of the model's tokenizer (--template)", where, chat_template_name(tpl), s,
                   tokenizer_name(t));
}

static const char ALPACA_IN[] = "Below is an instruction that describes a task, paired with an input that provides "
                                "further context. Write a response that appropriately completes the request.\n\n"
                                "### Instruction:\n";
static const char ALPACA_NO_IN[] = "Below is an instruction that describes a task. Write a response that "
                                   "appropriately completes the request.\n\n### Instruction:\n";

/* Renders the messages m[0..n) with tpl (llama3, llama2, chatml or none) into r, each assistant turn a
 * target; gen: then the template's generation prompt (the conversation ends with the user). where prefixes
 * the error messages. */
static int render_msgs(rbuf *r, int tpl, const chat_message *m, int n, int gen, const char *where) {
    tt_tokenizer *t = r->t;
    int rc = 0;
    const char *b;
    size_t len;
    switch (tpl) {
    case CHAT_LLAMA3: {
        uint32_t bos, sh, eh, et;
        if ((rc = need(t, where, tpl, "<|begin_of_text|>", &bos)) || (rc = need(t, where, tpl, "<|start_header_id|>", &sh)) ||
            (rc = need(t, where, tpl, "<|end_header_id|>", &eh)) || (rc = need(t, where, tpl, "<|eot_id|>", &et)))
            return rc;
        r_special(r, bos, 0);
        for (int i = 0; i < n; i++) {
            int a = m[i].role == CHAT_ROLE_ASSISTANT;
            r_special(r, sh, 0);
            r_str(r, g_role[m[i].role], 0);
            r_special(r, eh, 0);
            r_str(r, "\n\n", 0);
            py_strip(m[i].content, &b, &len);
            r_text(r, b, len, a);
            r_special(r, et, a);
        }
        if (gen) { /* <|start_header_id|>assistant<|end_header_id|>\n\n */
            r_special(r, sh, 0);
            r_str(r, g_role[CHAT_ROLE_ASSISTANT], 0);
            r_special(r, eh, 0);
            r_str(r, "\n\n", 0);
        }
        return 0;
    }
    case CHAT_LLAMA2: { /* the user's turn ends with " [/INST]": the model goes on with " answer </s>" */
        uint32_t bos, eos;
        if ((rc = need(t, where, tpl, "<s>", &bos)) || (rc = need(t, where, tpl, "</s>", &eos))) return rc;
        int i0 = n && m[0].role == CHAT_ROLE_SYSTEM;
        for (int i = i0; i < n; i++) {
            chat_role want = (i - i0) % 2 == 0 ? CHAT_ROLE_USER : CHAT_ROLE_ASSISTANT;
            if (m[i].role != want)
                return TT_FAIL(-EINVAL, "%smessage %d is from the %s where the llama2 template needs the %s: its "
                               "turns must alternate user/assistant", where, i, g_role[m[i].role], g_role[want]);
            if (want == CHAT_ROLE_USER) {
                /* content = '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + user on the first turn; then strip() */
                const char *u = m[i].content;
                char *joined = NULL;
                if (i == i0 && i0) {
                    size_t l = strlen(m[0].content) + strlen(u) + 32;
                    joined = tt_xmalloc(l);
                    snprintf(joined, l, "<<SYS>>\n%s\n<</SYS>>\n\n%s", m[0].content, u);
                    u = joined;
                }
                py_strip(u, &b, &len);
                r_special(r, bos, 0);
                r_str(r, "[INST] ", 0);
                r_text(r, b, len, 0);
                r_str(r, " [/INST]", 0);
                free(joined);
            } else {
                py_strip(m[i].content, &b, &len);
                r_str(r, " ", 1);
                r_text(r, b, len, 1);
                r_str(r, " ", 1);
                r_special(r, eos, 1);
            }
        }
        return 0;
    }
    case CHAT_CHATML: {
        uint32_t st, en;
        if ((rc = need(t, where, tpl, "<|im_start|>", &st)) || (rc = need(t, where, tpl, "<|im_end|>", &en))) return rc;
        for (int i = 0; i < n; i++) {
            int a = m[i].role == CHAT_ROLE_ASSISTANT;
            r_special(r, st, 0);
            r_str(r, g_role[m[i].role], 0);
            r_str(r, "\n", 0);
            r_str(r, m[i].content, a);
            r_special(r, en, a);
            r_str(r, "\n", 0);
        }
        if (gen) { /* <|im_start|>assistant\n */
            r_special(r, st, 0);
            r_str(r, g_role[CHAT_ROLE_ASSISTANT], 0);
            r_str(r, "\n", 0);
        }
        return 0;
    }
    default: /* none: no generation prompt */
        TT_ASSERT(tpl == CHAT_NONE);
        for (int i = 0; i < n; i++) {
            int a = m[i].role == CHAT_ROLE_ASSISTANT;
            r_str(r, m[i].content, a);
            if (a) r_special(r, tokenizer_eot_id(t), 1);
        }
        return 0;
    }
}

int chat_render(tt_tokenizer *t, int tpl, const chat_example *ex, int train_on_prompt, tokenizer_ids *ids,
                tokenizer_ids *flags) {
    tokenizer_set_parse_special(t, 0);
    rbuf r = {.t = t, .ids = ids, .flags = flags, .all = train_on_prompt};
    size_t ids0 = ids->n, flags0 = flags->n;
    int rc = 0;
    char where[4200];
    snprintf(where, sizeof where, "%s:%llu: ", ex->file, (unsigned long long)ex->line);
    if (ex->text) { /* plain text whatever the template */
        r.all = 1;
        r_str(&r, ex->text, 1);
        r_special(&r, tokenizer_eot_id(t), 1);
    } else if (tpl == CHAT_ALPACA) {
        if (ex->n != 2 || ex->m[0].role != CHAT_ROLE_USER) {
            rc = TT_FAIL(-EINVAL, "%sthe alpaca template renders one instruction and one response; this record has %d "
                         "messages%s", where, ex->n, ex->n && ex->m[0].role == CHAT_ROLE_SYSTEM ? " and a system message" : "");
        } else {
            uint32_t bos = tokenizer_added_id(t, "<s>");
            if (bos == UINT32_MAX) bos = tokenizer_added_id(t, "<|begin_of_text|>");
            if (bos != UINT32_MAX) r_special(&r, bos, 0);
            const char *ins = ex->instruction ? ex->instruction : ex->m[0].content;
            r_str(&r, ex->input ? ALPACA_IN : ALPACA_NO_IN, 0);
            r_str(&r, ins, 0);
            if (ex->input) {
                r_str(&r, "\n\n### Input:\n", 0);
                r_str(&r, ex->input, 0);
            }
            r_str(&r, "\n\n### Response:\n", 0);
            r_str(&r, ex->m[1].content, 1);
            r_special(&r, tokenizer_eot_id(t), 1);
        }
    } else {
        rc = render_msgs(&r, tpl, ex->m, ex->n, 0, where);
    }
    if (rc == 0) r_flush(&r);
    else { /* nothing of a refused example stays */
        ids->n = ids0;
        flags->n = flags0;
    }
    free(r.seg);
    tokenizer_ids_free(&r.offs);
    return rc;
}

int chat_render_prompt(tt_tokenizer *t, int tpl, const chat_message *m, int n, tokenizer_ids *ids) {
    TT_ASSERT(tpl >= CHAT_NONE && tpl <= CHAT_ALPACA && n >= 0);
    if (tpl == CHAT_ALPACA)
        return TT_FAIL(-EINVAL, "the alpaca template renders one instruction and its response for training, not a "
                       "conversation; chat with llama3, llama2, chatml or none");
    if (n == 0 || m[n - 1].role != CHAT_ROLE_USER)
        return TT_FAIL(-EINVAL, "a conversation to answer must end with a user message (it has %d messages%s%s)", n,
                       n ? ", the last from the " : "", n ? g_role[m[n - 1].role] : "");
    for (int i = 0; i < n; i++) {
        TT_ASSERT(m[i].role <= CHAT_ROLE_ASSISTANT && m[i].content);
        if (m[i].role == CHAT_ROLE_SYSTEM && i != 0)
            return TT_FAIL(-EINVAL, "message %d is a system message; only the first message may be one", i);
    }
    tokenizer_set_parse_special(t, 0);
    tokenizer_ids flags = {0};
    rbuf r = {.t = t, .ids = ids, .flags = &flags};
    size_t ids0 = ids->n;
    int rc = render_msgs(&r, tpl, m, n, 1, "");
    if (rc == 0) r_flush(&r);
    else ids->n = ids0;
    free(r.seg);
    tokenizer_ids_free(&r.offs);
    tokenizer_ids_free(&flags);
    return rc;
}

int chat_stop_ids(const tt_tokenizer *t, int tpl, uint32_t out[2]) {
    const char *turn_end = tpl == CHAT_LLAMA3 ? "<|eot_id|>" : tpl == CHAT_LLAMA2 ? "</s>"
                         : tpl == CHAT_CHATML ? "<|im_end|>" : NULL;
    uint32_t eot = tokenizer_eot_id(t);
    int k = 0;
    if (turn_end) {
        uint32_t id = tokenizer_added_id(t, turn_end);
        if (id == UINT32_MAX) return 0;
        out[k++] = id;
    }
    if (k == 0 || out[0] != eot) out[k++] = eot;
    return k;
}
