/* tools/cmd_tokenize.c — `tiertrain tokenize`: text file -> token files.
 *
 * The input is streamed line by line. Documents (--doc-sep):
 *   line   each line is a document (its "\n" and a trailing "\r" dropped);
 *          blank lines are skipped. Default: one sentence per line corpora.
 *   blank  paragraphs separated by one or more blank lines; a document keeps
 *          the newlines between its lines, not the last one.
 *   none   the whole file, byte for byte, is one document.
 * Each document is encoded and followed by the tokenizer's end-of-text id.
 *
 * Validation split (--val-frac F, deterministic, one pass): document i
 * (0-based) goes to OUT.val when floor((i+1)·F) > floor(i·F) — every (1/F)-th
 * document (F = 0.01: documents 99, 199, ...), floor(N·F) of them in all. It
 * samples the whole file rather than its end, which matters for corpora made
 * of sections (nlp-corpus.txt: reviews, then UN documents, then news, ...).
 *
 * Memory stays bounded for huge documents: once a document's pending text
 * passes 1 MiB it is encoded up to a line start that begins with a printable,
 * non-space ASCII character — a point where both pre-tokenizer regexes always
 * cut, so the tokens are the same as encoding the document whole.
 */
#include "core/base/common.h"
#include "core/chat.h"
#include "core/tokenizer.h"
#include "core/tokfile.h"
#include "io/atomicfile.h"
#include "io/ckpt.h"
#include "io/tier.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FLUSH_BYTES (1u << 20)
#define VAL_DEN 1000000ull /* --val-frac resolution */

enum { SEP_LINE, SEP_BLANK, SEP_NONE };

typedef struct tok_ctx {
    tt_tokenizer *tok;
    tokfile_writer *w[2]; /* train, val (NULL when --val-frac 0) */
    tokenizer_ids ids;
    uint64_t val_num;     /* F * VAL_DEN */
    uint64_t doc;         /* index of the current document */
    int doc_open;         /* part of the current document was already encoded */
    uint64_t docs[2], tokens[2], text_bytes;
    char *buf;            /* pending text of the current document */
    size_t len, cap;
} tok_ctx;

static int is_val(const tok_ctx *c, uint64_t i) {
    return c->val_num && (i + 1) * c->val_num / VAL_DEN > i * c->val_num / VAL_DEN;
}

static void buf_add(tok_ctx *c, const char *s, size_t n) {
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + n) cap *= 2;
        c->buf = realloc(c->buf, cap);
        TT_ASSERT(c->buf);
        c->cap = cap;
    }
    memcpy(c->buf + c->len, s, n);
    c->len += n;
}

/* Encodes the pending text and appends it (plus end-of-text when end) to the
 * current document's file; empties the pending text. */
static int emit(tok_ctx *c, int end) {
    int which = is_val(c, c->doc);
    c->ids.n = 0;
    tokenizer_encode(c->tok, c->buf, c->len, &c->ids);
    c->text_bytes += c->len;
    c->len = 0;
    if (end) tokenizer_ids_push(&c->ids, tokenizer_eot_id(c->tok));
    c->tokens[which] += c->ids.n;
    int rc = tokfile_append(c->w[which], c->ids.v, c->ids.n);
    if (rc) return rc;
    if (end) {
        c->docs[which]++;
        c->doc++;
        c->doc_open = 0;
    } else {
        c->doc_open = 1;
    }
    return 0;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n' && s[i] != '\v' && s[i] != '\f') return 0;
    return 1;
}

/* A line starting here is a safe place to cut a document (see the top). */
static int safe_cut(const char *line, size_t n) { return n > 0 && line[0] > ' ' && line[0] < 0x7f; }

static int process_line(tok_ctx *c, int sep, const char *line, size_t n) {
    if (sep == SEP_LINE) {
        size_t m = n;
        if (m && line[m - 1] == '\n') m--;
        if (m && line[m - 1] == '\r') m--;
        if (is_blank(line, m)) return 0;
        buf_add(c, line, m);
        return emit(c, 1);
    }
    if (sep == SEP_BLANK && is_blank(line, n)) {
        if (c->len == 0 && !c->doc_open) return 0; /* between paragraphs */
        while (c->len && (c->buf[c->len - 1] == '\n' || c->buf[c->len - 1] == '\r')) c->len--;
        return emit(c, 1);
    }
    int rc = 0;
    if (c->len >= FLUSH_BYTES && safe_cut(line, n)) rc = emit(c, 0);
    buf_add(c, line, n);
    return rc;
}

static int finish_input(tok_ctx *c, int sep) {
    if (sep == SEP_LINE) return 0;
    if (sep == SEP_BLANK)
        while (c->len && (c->buf[c->len - 1] == '\n' || c->buf[c->len - 1] == '\r')) c->len--;
    if (c->len == 0 && !c->doc_open) return 0;
    return emit(c, 1);
}

#define MAX_JSONL_LINE (16u << 20)

/* After getline returned -1 short of the end of input (a read error, or a line too long to allocate:
 * ENOMEM, which sets no error flag), line_no the line it was reading. */
static int read_failed(const char *input, uint64_t line_no) {
    if (errno == ENOMEM)
        return TT_FAIL(-ENOMEM, "%s:%llu: the line is too long to hold in memory; split the file into shorter lines",
                       input, (unsigned long long)line_no);
    return TT_FAIL(-EIO, "reading %s failed at line %llu: %s", input, (unsigned long long)line_no,
                   strerror(errno ? errno : EIO));
}

/* tokenize --format jsonl: every non-blank line one example (core/chat.h), rendered with tpl into a
 * version-2 file (per-token flags); every (1/F)-th example to OUT.val. Returns 0 or 1 after a message. */
static int tokenize_jsonl(tok_ctx *c, FILE *f, const char *input, int tpl, int train_on_prompt, tool_progress *prog,
                          uint64_t *bytes, uint64_t *targets) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t no = 0;
    tokenizer_ids fl = {0};
    uint8_t *f8 = NULL;
    size_t f8_cap = 0;
    int rc = 0;
    errno = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        no++;
        *bytes += (uint64_t)n;
        if ((no & 255) == 0) progress_update(prog, *bytes);
        if ((size_t)n > MAX_JSONL_LINE) {
            rc = TT_FAIL(-EINVAL, "%s:%llu: the line is %zd bytes long, more than the %u MiB a record may have; shorten "
                         "or drop that record", input, (unsigned long long)no, n, MAX_JSONL_LINE >> 20);
            break;
        }
        /* a UTF-8 byte-order mark (editors on Windows write one) is no part of the first record */
        const char *rec = line;
        size_t rn = (size_t)n;
        if (no == 1 && rn >= 3 && memcmp(rec, "\xef\xbb\xbf", 3) == 0) rec += 3, rn -= 3;
        if (is_blank(rec, rn)) continue;
        chat_example *ex;
        if ((rc = chat_parse(input, no, rec, rn, &ex))) break;
        c->ids.n = fl.n = 0;
        rc = chat_render(c->tok, tpl, ex, train_on_prompt, &c->ids, &fl);
        chat_example_free(ex);
        if (rc) break;
        if (fl.n > f8_cap) {
            f8_cap = 2 * fl.n;
            free(f8);
            f8 = tt_xmalloc(f8_cap);
        }
        for (size_t i = 0; i < fl.n; i++) {
            f8[i] = (uint8_t)fl.v[i];
            *targets += fl.v[i] & TOKFILE_TRAIN;
        }
        int which = is_val(c, c->doc);
        c->text_bytes += (uint64_t)n;
        c->tokens[which] += c->ids.n;
        c->docs[which]++;
        c->doc++;
        rc = tokfile_append_flags(c->w[which], c->ids.v, f8, c->ids.n);
    }
    if (rc == 0 && !feof(f)) rc = read_failed(input, no + 1);
    free(line);
    free(f8);
    tokenizer_ids_free(&fl);
    return rc ? tool_fail("tokenize") : 0;
}

/* What a file starting with b[0..n) is when it is plainly not text: one of tiertrain's own files, or a
 * compressed one (corpus.txt.gz given as it is); NULL otherwise. *unpack: the command that decompresses it
 * (NULL: none). The byte-level tokenizers would turn any of these into tokens without a word. */
static const char *not_text(const unsigned char *b, size_t n, const char **unpack) {
    static const struct { const char *magic; size_t len; const char *what, *unpack; } kinds[] = {
        {TIER_MAGIC, 8, "a tiertrain model store", NULL},
        {TOKFILE_MAGIC, 8, "a tiertrain token file (tokenize's output)", NULL},
        {CKPT_MAGIC, 8, "a tiertrain checkpoint", NULL},
        {"\x1f\x8b", 2, "gzip-compressed", "zcat"},
        {"\x28\xb5\x2f\xfd", 4, "zstd-compressed", "zstdcat"},
        {"\xfd" "7zXZ", 5, "xz-compressed", "xzcat"},
    };
    /* bzip2: "BZh", the block size 1-9, then a block's magic (pi's digits) or the empty stream's end (sqrt(pi)):
     * a text line may well start with "BZh" */
    if (n >= 8 && memcmp(b, "BZh", 3) == 0 && b[3] >= '1' && b[3] <= '9' &&
        (memcmp(b + 4, "1AY&", 4) == 0 || memcmp(b + 4, "\x17\x72\x45\x38", 4) == 0)) {
        *unpack = "bzcat";
        return "bzip2-compressed";
    }
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (n >= kinds[i].len && memcmp(b, kinds[i].magic, kinds[i].len) == 0) {
            *unpack = kinds[i].unpack;
            return kinds[i].what;
        }
    return NULL;
}

int cmd_tokenize(int argc, char **argv) {
    const char *input, *tok_spec, *sep_s, *out, *format, *tpl_s;
    double frac;
    int special, force, train_on_prompt;
    cli_opt opts[] = {
        {"input", 'i', CLI_STR, &input, NULL, "FILE", "text file to tokenize (required; streamed)"},
        {"tokenizer", 't', CLI_STR, &tok_spec, "bytes", "T",
         "`bytes` (vocab 257: the 256 bytes + end-of-text) or a Hugging Face tokenizer.json (or its folder)"},
        {"doc-sep", 0, CLI_STR, &sep_s, "line", "MODE",
         "documents are: line (each non-blank line), blank (paragraphs between blank lines), none (the whole file)"},
        {"val-frac", 0, CLI_FLOAT, &frac, "0.01", "F",
         "every (1/F)-th document goes to OUT.val instead of OUT; 0: no validation file"},
        {"special", 0, CLI_FLAG, &special, NULL, NULL,
         "encode added-token strings in the text (e.g. <|end_of_text|>) as their ids; default: as plain text"},
        {"format", 0, CLI_STR, &format, "text", "F",
         "text (documents, --doc-sep) or jsonl (one instruction record per line: text, Alpaca instruction/input/"
         "output, prompt/completion, chat messages, ShareGPT conversations; loss on the responses only)"},
        {"template", 0, CLI_STR, &tpl_s, NULL, "T",
         "with jsonl: the chat template, llama3, llama2, chatml, alpaca or none (default: the one the tokenizer's "
         "tokenizer_config.json names)"},
        {"train-on-prompt", 0, CLI_FLAG, &train_on_prompt, NULL, NULL,
         "with jsonl: every token is a training target, the prompt's too"},
        {"output", 'o', CLI_STR, &out, NULL, "OUT", "token file to write (required); see docs/FORMAT.md"},
        {"force", 0, CLI_FLAG, &force, NULL, NULL, "replace OUT and OUT.val if they exist (and remove an OUT.val this run does not write)"},
        {0},
    };
    cli_cmd cmd = {"tokenize", NULL,
                   "Turns a text file into token files: documents, each followed by end-of-text, in OUT and OUT.val.",
                   opts, 0, 0,
                   "tiertrain tokenize --input corpus.txt --tokenizer Meta-Llama-3-8B/tokenizer.json -o corpus.tok"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    if (!input) {
        fprintf(stderr, "tiertrain tokenize: --input FILE is required (the text to tokenize)\n");
        return 2;
    }
    if (!out) {
        fprintf(stderr, "tiertrain tokenize: -o OUT is required (the token file to write)\n");
        return 2;
    }
    int sep = strcmp(sep_s, "line") == 0 ? SEP_LINE : strcmp(sep_s, "blank") == 0 ? SEP_BLANK
            : strcmp(sep_s, "none") == 0 ? SEP_NONE : -1;
    if (sep < 0) {
        fprintf(stderr, "tiertrain tokenize: --doc-sep must be line, blank or none, not '%s'\n", sep_s);
        return 2;
    }
    if (!(frac == 0.0 || (frac >= 1.0 / VAL_DEN && frac < 1.0))) {
        fprintf(stderr, "tiertrain tokenize: --val-frac must be 0, or at least 0.000001 and below 1, not %g\n", frac);
        return 2;
    }
    int jsonl = strcmp(format, "jsonl") == 0, tpl = -1;
    if (!jsonl && strcmp(format, "text") != 0) {
        fprintf(stderr, "tiertrain tokenize: --format must be text or jsonl, not '%s'\n", format);
        return 2;
    }
    if (!jsonl && (tpl_s || train_on_prompt)) {
        fprintf(stderr, "tiertrain tokenize: --%s goes with --format jsonl\n", tpl_s ? "template" : "train-on-prompt");
        return 2;
    }
    if (jsonl && special) {
        fprintf(stderr, "tiertrain tokenize: --special is for text; with --format jsonl special tokens come from the "
                        "template only, never from the records' text\n");
        return 2;
    }
    if (jsonl) {
        char why[600];
        tpl = tpl_s ? chat_template_parse(tpl_s) : chat_template_of(tok_spec, why, sizeof why);
        if (tpl < 0) {
            if (tpl_s) fprintf(stderr, "tiertrain tokenize: --template must be llama3, llama2, chatml, alpaca or none, not "
                                       "'%s'\n", tpl_s);
            else fprintf(stderr, "tiertrain tokenize: --template is required: %s; give llama3, llama2, chatml, alpaca or "
                                 "none\n", why);
            return 2;
        }
    }

    struct stat st;
    if (stat(input, &st) != 0) {
        int e = errno;
        if (e == ENOENT)
            fprintf(stderr, "tiertrain tokenize: %s does not exist; give the text file to tokenize with --input\n",
                    input);
        else
            fprintf(stderr, "tiertrain tokenize: cannot open %s: %s\n", input, strerror(e));
        return 1;
    }
    if (S_ISDIR(st.st_mode)) {
        fprintf(stderr, "tiertrain tokenize: %s is a directory; give a text file with --input\n", input);
        return 1;
    }
    if (!S_ISREG(st.st_mode)) { /* a FIFO or a device would block or never end */
        fprintf(stderr, "tiertrain tokenize: %s is not a regular file; give a text file with --input\n", input);
        return 1;
    }
    size_t vl = strlen(out) + sizeof ".val";
    char *val_path = tt_xmalloc(vl);
    snprintf(val_path, vl, "%s.val", out);
    /* OUT and OUT.val are both outputs (train reads OUT.val as OUT's validation set): with no validation split a
     * stale OUT.val is an output too, removed once OUT is written */
    struct stat tst;
    const char *inputs[] = {input, stat(tok_spec, &tst) == 0 ? tok_spec : "", NULL};
    if (tool_check_out("tokenize", "-o", out, inputs, force) ||
        tool_check_out("tokenize", "-o (its validation file)", val_path, inputs, force)) {
        free(val_path);
        return 2;
    }

    tok_ctx c = {0};
    c.val_num = (uint64_t)llround(frac * (double)VAL_DEN);
    FILE *f = NULL;
    char *line = NULL;
    size_t line_cap = 0;
    int exit_code = 1;
    if (tokenizer_open(tok_spec, &c.tok)) { tool_fail("tokenize"); goto done; }
    tokenizer_set_parse_special(c.tok, special);
    f = fopen(input, "rb");
    if (!f) {
        fprintf(stderr, "tiertrain tokenize: cannot open %s: %s\n", input, strerror(errno));
        goto done;
    }
    unsigned char head[8];
    size_t nhead = fread(head, 1, sizeof head, f);
    const char *unpack, *kind = not_text(head, nhead, &unpack);
    if (kind) {
        if (unpack)
            fprintf(stderr, "tiertrain tokenize: %s is %s; decompress it first (%s %s > FILE) and give that with "
                            "--input\n", input, kind, unpack, input);
        else
            fprintf(stderr, "tiertrain tokenize: %s is %s, not %s; give a text file with --input\n", input, kind,
                    jsonl ? "JSON lines" : "text");
        goto done; /* exit 1, as for a missing input */
    }
    rewind(f);
    uint32_t vocab = tokenizer_vocab_size(c.tok), eot = tokenizer_eot_id(c.tok);
    int (*open_w)(const char *, uint32_t, uint32_t, tokfile_writer **) = jsonl ? tokfile_write_open_v2 : tokfile_write_open;
    if (open_w(out, vocab, eot, &c.w[0])) { tool_fail("tokenize"); goto done; }
    if (c.val_num && open_w(val_path, vocab, eot, &c.w[1])) { tool_fail("tokenize"); goto done; }

    double t0 = tt_now();
    tool_progress prog;
    progress_start(&prog, "tokenize", (uint64_t)st.st_size);
    uint64_t done_bytes = 0, nlines = 0, targets = 0;
    ssize_t n;
    errno = 0;
    if (jsonl && tokenize_jsonl(&c, f, input, tpl, train_on_prompt, &prog, &done_bytes, &targets)) goto done;
    while (!jsonl && (n = getline(&line, &line_cap, f)) > 0) {
        if (process_line(&c, sep, line, (size_t)n)) { tool_fail("tokenize"); goto done; }
        done_bytes += (uint64_t)n;
        if ((++nlines & 1023) == 0) progress_update(&prog, done_bytes);
    }
    if (!feof(f)) {
        read_failed(input, nlines + 1);
        tool_fail("tokenize");
        goto done;
    }
    if (!jsonl && finish_input(&c, sep)) { tool_fail("tokenize"); goto done; }
    progress_end(&prog, done_bytes);
    uint64_t ndocs = c.docs[0] + c.docs[1];
    if (ndocs == 0) {
        fprintf(stderr, "tiertrain tokenize: %s holds no %s (it is empty or only blank lines); nothing was "
                "written\n", input, jsonl ? "records" : "documents");
        goto done;
    }
    /* all or nothing: both files written whole before either replaces an earlier run's (OUT without its
     * OUT.val would look complete) */
    if (tokfile_write_seal(c.w[0]) || (c.w[1] && tokfile_write_seal(c.w[1]))) { tool_fail("tokenize"); goto done; }
    rc = c.w[1] ? tokfile_write_commit(c.w[1]) : 0;
    c.w[1] = NULL;
    if (rc) { tool_fail("tokenize"); goto done; } /* OUT.partial removed at done */
    rc = tokfile_write_commit(c.w[0]);
    c.w[0] = NULL;
    if (rc) { tool_fail("tokenize"); goto done; }
    if (!c.val_num && unlink(val_path) == 0) { /* --force: an earlier run's OUT.val does not belong to this OUT */
        fprintf(stderr, "tiertrain tokenize: removed %s from an earlier run (this one has no validation split)\n",
                val_path);
    }
    double dt = tt_now() - t0;
    uint64_t ntok = c.tokens[0] + c.tokens[1], text_tok = ntok - ndocs;
    char a[32];
    printf("tokenize: %s (%s) -> %s%s%s\n", input, tt_fmt_bytes((uint64_t)st.st_size, a, sizeof a), out,
           c.val_num ? ", " : "", c.val_num ? val_path : "");
    if (jsonl) {
        printf("tokenizer: %s (vocab %u, end-of-text id %u); one record per line, template %s\n", tokenizer_name(c.tok),
               vocab, eot, chat_template_name(tpl));
        printf("examples: %llu (train %llu, val %llu)\n", (unsigned long long)ndocs, (unsigned long long)c.docs[0],
               (unsigned long long)c.docs[1]);
        printf("tokens: %llu (train %llu, val %llu), %llu of them training targets (%s)\n", (unsigned long long)ntok,
               (unsigned long long)c.tokens[0], (unsigned long long)c.tokens[1], (unsigned long long)targets,
               train_on_prompt ? "--train-on-prompt: all" : "the responses and their end-of-turn tokens");
    } else {
        printf("tokenizer: %s (vocab %u, end-of-text id %u); %s\n", tokenizer_name(c.tok), vocab, eot,
               sep == SEP_LINE ? "one document per line" : sep == SEP_BLANK ? "documents separated by blank lines"
                                                                             : "the whole file is one document");
        printf("documents: %llu (train %llu, val %llu)\n", (unsigned long long)ndocs, (unsigned long long)c.docs[0],
               (unsigned long long)c.docs[1]);
        printf("tokens: %llu (train %llu, val %llu), each document followed by end-of-text\n", (unsigned long long)ntok,
               (unsigned long long)c.tokens[0], (unsigned long long)c.tokens[1]);
        printf("bytes/token: %.3f (%llu text bytes in %llu tokens, end-of-text not counted)\n",
               text_tok ? (double)c.text_bytes / (double)text_tok : 0.0, (unsigned long long)c.text_bytes,
               (unsigned long long)text_tok);
    }
    printf("took %.2f s (%.1f MB/s)\n", dt, dt > 0 ? (double)done_bytes / dt / 1e6 : 0.0);
    if (c.val_num && c.docs[1] == 0)
        fprintf(stderr, "tiertrain tokenize: warning: %s is empty: %llu %s are too few for --val-frac %g\n",
                val_path, (unsigned long long)ndocs, jsonl ? "examples" : "documents", frac);
    exit_code = 0;
done:
    tokfile_write_abort(c.w[0]);
    tokfile_write_abort(c.w[1]);
    if (f) fclose(f);
    free(line);
    free(c.buf);
    free(val_path);
    tokenizer_ids_free(&c.ids);
    tokenizer_free(c.tok);
    return exit_code;
}

/* ---- detokenize ----------------------------------------------------------------- */

/* Appends n bytes to the output (stdout, or the -o file's ".partial"). */
static int put_bytes(int fd, const char *path, const void *b, size_t n) {
    int e = atomic_write_all(fd, b, n);
    return e ? atomic_write_fail(path, e, "writing") : 0;
}

int cmd_detokenize(int argc, char **argv) {
    const char *tok_spec, *out, *ids_s;
    int keep_eot, force;
    cli_opt opts[] = {
        {"tokenizer", 't', CLI_STR, &tok_spec, "bytes", "T", "the tokenizer FILE was made with: `bytes` or a tokenizer.json (or its folder)"},
        {"ids", 0, CLI_STR, &ids_s, NULL, "LIST", "decode these comma-separated ids instead of a token file"},
        {"eot", 0, CLI_FLAG, &keep_eot, NULL, NULL, "write the end-of-text token's text after each document instead of a newline"},
        {"output", 'o', CLI_STR, &out, NULL, "OUT", "text file to write (default, or -: standard output)"},
        {"force", 0, CLI_FLAG, &force, NULL, NULL, "replace OUT if it exists"},
        {0},
    };
    cli_cmd cmd = {"detokenize", "[FILE]",
                   "Turns a token file (or --ids) back into text: each document decoded, followed by a newline (an "
                   "instruction file: each example as rendered, special tokens as their text).",
                   opts, 0, 1, "tiertrain detokenize corpus.tok --tokenizer Meta-Llama-3-8B/tokenizer.json | head"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    if ((npos == 1) == (ids_s != NULL)) {
        fprintf(stderr, "tiertrain detokenize: give a token FILE or --ids LIST (one of them)\n");
        return 2;
    }
    if (keep_eot && ids_s) {
        fprintf(stderr, "tiertrain detokenize: --eot applies to a token file's documents; --ids are decoded as "
                        "given, end-of-text ids included\n");
        return 2;
    }
    tokenizer_ids list = {0};
    for (const char *p = ids_s; p && *p;) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || errno || v > UINT32_MAX || (*end && *end != ',') || *p == '-' || *p == ' ') {
            fprintf(stderr, "tiertrain detokenize: --ids must be comma-separated token ids (0..4294967295), not '%s'\n",
                    ids_s);
            tokenizer_ids_free(&list);
            return 2;
        }
        tokenizer_ids_push(&list, (uint32_t)v);
        p = *end ? end + 1 : end;
    }
    const char *inputs[] = {npos ? pos[0] : "", tok_spec, NULL};
    if (out && strcmp(out, "-") == 0) out = NULL; /* -o -: standard output, as without -o */
    if (out && tool_check_out("detokenize", "-o", out, inputs, force)) {
        tokenizer_ids_free(&list);
        return 2;
    }
    tt_tokenizer *tok = NULL;
    tokfile *tf = NULL;
    char *text = NULL;
    atomic_partial part = {-1, NULL};
    int fd = 1, exit_code = 1;
    if (tokenizer_open(tok_spec, &tok)) { tool_fail("detokenize"); goto done; }
    const uint32_t *ids = list.v;
    uint64_t n = list.n;
    if (npos) {
        if (tokfile_open(pos[0], &tf)) { tool_fail("detokenize"); goto done; }
        if (tokfile_vocab(tf) > tokenizer_vocab_size(tok) || tokfile_eot(tf) != tokenizer_eot_id(tok)) {
            fprintf(stderr, "tiertrain detokenize: %s was made by a tokenizer with vocab %u and end-of-text id %u; %s "
                            "has vocab %u and end-of-text id %u: give the tokenizer it was made with (--tokenizer)\n",
                    pos[0], tokfile_vocab(tf), tokfile_eot(tf), tok_spec, tokenizer_vocab_size(tok),
                    tokenizer_eot_id(tok));
            goto done;
        }
        if (keep_eot && tokfile_flags(tf)) {
            fprintf(stderr, "tiertrain detokenize: --eot applies to plain token files; %s holds instruction examples, "
                            "each written as rendered (its end-of-turn tokens as text), one per line\n", pos[0]);
            goto done;
        }
        ids = tokfile_tokens(tf);
        n = tokfile_count(tf);
    }
    if (out) {
        if (atomic_partial_open(out, &part)) { tool_fail("detokenize"); goto done; }
        fd = part.fd;
    }
    const char *where = out ? out : "standard output";
    uint32_t eot = tokenizer_eot_id(tok);
    size_t eot_len = 0;
    const char *eot_text = tokenizer_token(tok, eot, &eot_len);
    const uint8_t *flags = tf ? tokfile_flags(tf) : NULL; /* examples: each one line, its end-of-text kept */
    for (uint64_t i = 0; i < n;) {
        uint64_t j = i;
        if (flags) /* an example: up to the next one's start */
            while (++j < n && !(flags[j] & TOKFILE_START)) {}
        else
            while (j < n && !(npos && ids[j] == eot)) j++; /* a document: up to its end-of-text */
        size_t len;
        if (tokenizer_decode(tok, ids + i, j - i, &text, &len)) {
            fprintf(stderr, "tiertrain detokenize: %s: %s\n", npos ? pos[0] : "--ids", tt_lasterr());
            goto done;
        }
        rc = put_bytes(fd, where, text, len);
        free(text);
        text = NULL;
        if (rc == 0 && (flags || j < n))
            rc = keep_eot && !flags ? put_bytes(fd, where, eot_text, eot_len) : put_bytes(fd, where, "\n", 1);
        if (rc == 0 && !npos) rc = put_bytes(fd, where, "\n", 1);
        if (rc) { tool_fail("detokenize"); goto done; }
        i = flags ? j : j < n ? j + 1 : j;
    }
    if (out && atomic_commit(&part, out)) { tool_fail("detokenize"); goto done; }
    exit_code = 0;
done:
    atomic_partial_drop(&part); /* after a failure: removed, then closed */
    free(text);
    tokfile_close(tf);
    tokenizer_free(tok);
    tokenizer_ids_free(&list);
    return exit_code;
}
