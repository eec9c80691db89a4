/* core/chat.c — JSONL instruction records, chat templates and loss masks
 * (core/chat.h). */
#include "core/chat.h"

#include "core/base/common.h"
#include "core/tokfile.h"

#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>

enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT };
static const char *const g_role[] = {"system", "user", "assistant"};

typedef struct chat_msg {
    int role;
    char *content;
} chat_msg;

struct chat_example {
    const char *file;
    uint64_t line;
    char *text;                /* a {"text"} record, else NULL */
    chat_msg *m;
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

int chat_template_of(const char *tokenizer_path) {
    struct stat sb;
    if (stat(tokenizer_path, &sb) != 0) return -1;
    char *copy = strdup(tokenizer_path);
    TT_ASSERT(copy);
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", S_ISDIR(sb.st_mode) ? tokenizer_path : dirname(copy));
    free(copy);
    if (tt_not_regular(path)) return -1;
    json_t *root = json_load_file(path, 0, NULL);
    const json_t *ct = json_object_get(root, "chat_template");
    if (json_is_array(ct)) /* [{"name": "default", "template": ...}, ...] */
        for (size_t i = 0; i < json_array_size(ct); i++)
            if (is_default(json_object_get(json_array_get(ct, i), "name")))
                ct = json_object_get(json_array_get(ct, i), "template");
    const char *s = json_string_value(ct);
    int tpl = !s ? -1
              : strstr(s, "<|start_header_id|>") ? CHAT_LLAMA3
              : strstr(s, "[INST]")              ? CHAT_LLAMA2
              : strstr(s, "<|im_start|>")        ? CHAT_CHATML
                                                 : -1;
    json_decref(root);
    return tpl;
}

void chat_example_free(chat_example *ex) {
    if (!ex) return;
    free(ex->text);
    for (int i = 0; i < ex->n; i++) free(ex->m[i].content);
    free(ex->m);
    free(ex->instruction);
    free(ex->input);
    free(ex);
}

int chat_turns(const chat_example *ex) {
    int k = 0;
    for (int i = 0; i < ex->n; i++) k += ex->m[i].role == ROLE_ASSISTANT;
    return k;
}

#define BAD(...) (rc = TT_FAIL(-EINVAL, __VA_ARGS__), chat_example_free(ex), json_decref(root), rc)

static void add_msg(chat_example *ex, int role, const char *content) {
    ex->m = realloc(ex->m, (size_t)(ex->n + 1) * sizeof *ex->m);
    TT_ASSERT(ex->m);
    ex->m[ex->n].role = role;
    ex->m[ex->n].content = strdup(content);
    TT_ASSERT(ex->m[ex->n].content);
    ex->n++;
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
            int r = strcmp(role, "system") == 0                                    ? ROLE_SYSTEM
                    : strcmp(role, "user") == 0 || strcmp(role, "human") == 0      ? ROLE_USER
                    : strcmp(role, "assistant") == 0 || strcmp(role, "gpt") == 0   ? ROLE_ASSISTANT
                                                                                   : -1;
            if (r < 0)
                return BAD("%s:%llu: %s[%zu].%s is \"%.40s\"; expected system, user or assistant%s", file,
                           (unsigned long long)line_no, key, i, rk, role, msgs ? "" : " (ShareGPT: human, gpt)");
            if (r == ROLE_SYSTEM && i != 0)
                return BAD("%s:%llu: %s[%zu] is a system message; only the first message may be one", file,
                           (unsigned long long)line_no, key, i);
            if (r == ROLE_ASSISTANT && content[strspn(content, " \t\r\n")] == '\0')
                return BAD("%s:%llu: %s[%zu].%s is an empty response; there is nothing to train on", file,
                           (unsigned long long)line_no, key, i, ck);
            add_msg(ex, r, content);
        }
        if (ex->m[ex->n - 1].role != ROLE_ASSISTANT)
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
        if (outp[strspn(outp, " \t\r\n")] == '\0')
            return BAD("%s:%llu: \"output\" is empty; there is nothing to train on", file, (unsigned long long)line_no);
        ex->instruction = strdup(ins);
        ex->input = inp && *inp ? strdup(inp) : NULL;
        size_t l = strlen(ins) + (inp ? strlen(inp) : 0) + 3;
        char *user = tt_xmalloc(l);
        snprintf(user, l, "%s%s%s", ins, ex->input ? "\n\n" : "", ex->input ? inp : "");
        add_msg(ex, ROLE_USER, user);
        free(user);
        add_msg(ex, ROLE_ASSISTANT, outp);
    } else if (json_object_get(root, "prompt") || json_object_get(root, "completion")) {
        int np, nc;
        const char *p = str_field(root, "prompt", &np), *c = str_field(root, "completion", &nc);
        if (!p || np) return BAD("%s:%llu: \"prompt\" is missing or not a string", file, (unsigned long long)line_no);
        if (!c || nc) return BAD("%s:%llu: \"completion\" is missing or not a string", file, (unsigned long long)line_no);
        if (c[strspn(c, " \t\r\n")] == '\0')
            return BAD("%s:%llu: \"completion\" is empty; there is nothing to train on", file, (unsigned long long)line_no);
        add_msg(ex, ROLE_USER, p);
        add_msg(ex, ROLE_ASSISTANT, c);
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

/* The id of added token s, or fails naming it. */
static int need(const tt_tokenizer *t, const chat_example *ex, int tpl, const char *s, uint32_t *id) {
    *id = tokenizer_added_id(t, s);
    if (*id != UINT32_MAX) return 0;
    return TT_FAIL(-EINVAL, "%s:%llu: the %s template needs the special token %s, which the tokenizer %s lacks; "
                   "choose the template of the model's tokenizer (--template)", ex->file, (unsigned long long)ex->line,
                   chat_template_name(tpl), s, tokenizer_name(t));
}

static const char ALPACA_IN[] = "Below is an instruction that describes a task, paired with an input that provides "
                                "further context. Write a response that appropriately completes the request.\n\n"
                                "### Instruction:\n";
static const char ALPACA_NO_IN[] = "Below is an instruction that describes a task. Write a response that "
                                   "appropriately completes the request.\n\n### Instruction:\n";

int chat_render(tt_tokenizer *t, int tpl, const chat_example *ex, int train_on_prompt, tokenizer_ids *ids,
                tokenizer_ids *flags) {
    tokenizer_set_parse_special(t, 0);
    rbuf r = {.t = t, .ids = ids, .flags = flags, .all = train_on_prompt};
    size_t ids0 = ids->n, flags0 = flags->n;
    int rc = 0;
    uint32_t eot = tokenizer_eot_id(t);
    const char *b;
    size_t n;
    if (ex->text) { /* plain text whatever the template */
        r.all = 1;
        r_str(&r, ex->text, 1);
        r_special(&r, eot, 1);
        goto done;
    }
    switch (tpl) {
    case CHAT_LLAMA3: {
        uint32_t bos, sh, eh, et;
        if ((rc = need(t, ex, tpl, "<|begin_of_text|>", &bos)) || (rc = need(t, ex, tpl, "<|start_header_id|>", &sh)) ||
            (rc = need(t, ex, tpl, "<|end_header_id|>", &eh)) || (rc = need(t, ex, tpl, "<|eot_id|>", &et)))
            break;
        r_special(&r, bos, 0);
        for (int i = 0; i < ex->n; i++) {
            int a = ex->m[i].role == ROLE_ASSISTANT;
            r_special(&r, sh, 0);
            r_str(&r, g_role[ex->m[i].role], 0);
            r_special(&r, eh, 0);
            r_str(&r, "\n\n", 0);
            py_strip(ex->m[i].content, &b, &n);
            r_text(&r, b, n, a);
            r_special(&r, et, a);
        }
        break;
    }
    case CHAT_LLAMA2: {
        uint32_t bos, eos;
        if ((rc = need(t, ex, tpl, "<s>", &bos)) || (rc = need(t, ex, tpl, "</s>", &eos))) break;
        int i0 = ex->n && ex->m[0].role == ROLE_SYSTEM;
        for (int i = i0; i < ex->n; i++) {
            int want = (i - i0) % 2 == 0 ? ROLE_USER : ROLE_ASSISTANT;
            if (ex->m[i].role != want) {
                rc = TT_FAIL(-EINVAL, "%s:%llu: message %d is from the %s where the llama2 template needs the %s: its "
                             "turns must alternate user/assistant", ex->file, (unsigned long long)ex->line, i,
                             g_role[ex->m[i].role], g_role[want]);
                break;
            }
            if (want == ROLE_USER) {
                /* content = '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + user on the first turn; then strip() */
                const char *u = ex->m[i].content;
                char *joined = NULL;
                if (i == i0 && i0) {
                    size_t l = strlen(ex->m[0].content) + strlen(u) + 32;
                    joined = tt_xmalloc(l);
                    snprintf(joined, l, "<<SYS>>\n%s\n<</SYS>>\n\n%s", ex->m[0].content, u);
                    u = joined;
                }
                py_strip(u, &b, &n);
                r_special(&r, bos, 0);
                r_str(&r, "[INST] ", 0);
                r_text(&r, b, n, 0);
                r_str(&r, " [/INST]", 0);
                free(joined);
            } else {
                py_strip(ex->m[i].content, &b, &n);
                r_str(&r, " ", 1);
                r_text(&r, b, n, 1);
                r_str(&r, " ", 1);
                r_special(&r, eos, 1);
            }
        }
        break;
    }
    case CHAT_CHATML: {
        uint32_t st, en;
        if ((rc = need(t, ex, tpl, "<|im_start|>", &st)) || (rc = need(t, ex, tpl, "<|im_end|>", &en))) break;
        for (int i = 0; i < ex->n; i++) {
            int a = ex->m[i].role == ROLE_ASSISTANT;
            r_special(&r, st, 0);
            r_str(&r, g_role[ex->m[i].role], 0);
            r_str(&r, "\n", 0);
            r_str(&r, ex->m[i].content, a);
            r_special(&r, en, a);
            r_str(&r, "\n", 0);
        }
        break;
    }
    case CHAT_ALPACA: {
        if (ex->n != 2 || ex->m[0].role != ROLE_USER) {
            rc = TT_FAIL(-EINVAL, "%s:%llu: the alpaca template renders one instruction and one response; this "
                         "record has %d messages%s", ex->file, (unsigned long long)ex->line, ex->n,
                         ex->n && ex->m[0].role == ROLE_SYSTEM ? " and a system message" : "");
            break;
        }
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
        r_special(&r, eot, 1);
        break;
    }
    default: /* none */
        for (int i = 0; i < ex->n; i++) {
            int a = ex->m[i].role == ROLE_ASSISTANT;
            r_str(&r, ex->m[i].content, a);
            if (a) r_special(&r, eot, 1);
        }
        break;
    }
done:
    if (rc == 0) r_flush(&r);
    else { /* nothing of a refused example stays */
        ids->n = ids0;
        flags->n = flags0;
    }
    free(r.seg);
    tokenizer_ids_free(&r.offs);
    return rc;
}
