/* tests/fuzz_jsonl.c — libFuzzer target for the instruction-record reader and the chat templates
 * (core/chat.c: what `tokenize --format jsonl` runs on each line). `make fuzz` builds it; run:
 *   build/fuzz/fuzz_jsonl NEW_DIR tests/corpus/jsonl
 *
 * The input is a JSONL text; each line is parsed, and a record that parses is rendered with every
 * template on the byte-level tokenizer and on tests/fixtures/tokenizer-mini.json (whose missing special
 * tokens some templates must refuse), with and without --train-on-prompt. Every rendering must keep ids
 * and flags in step, start with an example start and flag only targets and starts. */
#include "core/chat.h"
#include "core/tokfile.h"
#include "tests/fuzz.h"

static tt_tokenizer *g_tok[2];

static void check(tt_tokenizer *t, const chat_example *ex) {
    tokenizer_ids ids = {0}, fl = {0};
    for (int tpl = CHAT_NONE; tpl <= CHAT_ALPACA; tpl++)
        for (int all = 0; all < 2; all++) {
            ids.n = fl.n = 0;
            if (chat_render(t, tpl, ex, all, &ids, &fl) != 0) {
                if (ids.n || fl.n) abort(); /* a refused example leaves nothing */
                continue;
            }
            if (ids.n != fl.n || ids.n == 0 || !(fl.v[0] & TOKFILE_START)) abort();
            for (size_t i = 0; i < ids.n; i++)
                if (ids.v[i] >= tokenizer_vocab_size(t) || fl.v[i] > (TOKFILE_TRAIN | TOKFILE_START) ||
                    (i && (fl.v[i] & TOKFILE_START)) || (all && !(fl.v[i] & TOKFILE_TRAIN)))
                    abort();
        }
    tokenizer_ids_free(&ids);
    tokenizer_ids_free(&fl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok[0]) {
        g_tok[0] = tokenizer_open_bytes();
        if (tokenizer_open_hf("tests/fixtures/tokenizer-mini.json", &g_tok[1]) != 0) {
            fprintf(stderr, "fuzz_jsonl: run from the repository root: %s\n", tt_lasterr());
            abort();
        }
    }
    uint8_t *buf = fuzz_copy(data, size);
    uint64_t no = 0;
    for (size_t a = 0; a < size;) {
        size_t b = a;
        while (b < size && buf[b] != '\n') b++;
        no++;
        chat_example *ex;
        if (chat_parse("fuzz.jsonl", no, (const char *)buf + a, b - a, &ex) == 0) {
            if (chat_turns(ex) < 0) abort();
            check(g_tok[0], ex);
            check(g_tok[1], ex);
            chat_example_free(ex);
        }
        a = b + 1;
    }
    free(buf);
    return 0;
}
