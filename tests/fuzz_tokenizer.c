/* tests/fuzz_tokenizer.c — libFuzzer target for the Hugging Face
 * tokenizer.json loader and the encoder/decoder built from it
 * (core/tokenizer.c). `make fuzz` builds it; run:
 *   build/fuzz/fuzz_tokenizer NEW_DIR tests/corpus/tokenizer
 *
 * The input is a whole tokenizer.json, opened from disk as `tokenize` opens
 * it. A file that loads is then used: a fixed text (words, digits, spaces,
 * newlines, special-token names, invalid UTF-8) and the input's own bytes are
 * encoded with and without special-token parsing, every id must lie below
 * the vocabulary size, the ids decode back, and ids taken from the input
 * (in range or not) are decoded and looked up. */
#include "core/tokenizer.h"
#include "tests/fuzz.h"

static const char TEXT[] = "Hello world! The 2nd of 12345 tokens,\n\n  indented  <|begin_of_text|><s></s> caf\xc3\xa9 "
                           "\xe4\xb8\xad\xe6\x96\x87 \xff\xfe bad \xc3 utf8 'll 've\t\r\n end";

static void use(tt_tokenizer *t, const char *text, size_t len) {
    tokenizer_ids ids = {0};
    tokenizer_encode(t, text, len, &ids);
    uint32_t vocab = tokenizer_vocab_size(t);
    for (size_t i = 0; i < ids.n; i++)
        if (ids.v[i] >= vocab) abort(); /* the encoder promised ids below the vocabulary size */
    char *out;
    size_t n;
    if (tokenizer_decode(t, ids.v, ids.n, &out, &n) == 0) free(out);
    tokenizer_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_put("tokenizer.json", data, size);
    tt_tokenizer *t;
    if (tokenizer_open_hf(path, &t) != 0) return 0;
    for (int special = 0; special < 2; special++) {
        tokenizer_set_parse_special(t, special);
        use(t, TEXT, sizeof TEXT - 1);
        use(t, (const char *)data, size < 4096 ? size : 4096);
    }
    uint32_t ids[64];
    size_t n = 0;
    for (size_t i = 0; i + 4 <= size && n < 64; i += 97) ids[n++] = fuzz_ld32(data + i) % (tokenizer_vocab_size(t) + 8);
    size_t len;
    for (size_t i = 0; i < n; i++) (void)tokenizer_token(t, ids[i], &len);
    char *out;
    if (tokenizer_decode(t, ids, n, &out, &len) == 0) free(out);
    (void)tokenizer_eot_id(t);
    tokenizer_free(t);
    return 0;
}
