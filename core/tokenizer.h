/* core/tokenizer.h — text <-> token ids. Three tokenizers behind one handle:
 *
 *   - byte level: vocab 257; ids 0..255 are the bytes, 256 is "<|endoftext|>";
 *   - a Hugging Face tokenizer.json holding a byte-level BPE model as GPT-2
 *     and LLaMA-3 ship it: model.type "BPE" with "vocab" and "merges", the
 *     GPT-2 byte-to-unicode mapping, and as pre-tokenizer either ByteLevel
 *     alone (the GPT-2 regex) or Sequence[Split(LLaMA-3 regex), ByteLevel];
 *   - a SentencePiece-style BPE tokenizer.json as LLaMA-2, Mistral and
 *     TinyLlama ship it (model.byte_fallback true): spaces become U+2581 and
 *     one is prepended to the text (the normalizer Sequence[Prepend, Replace],
 *     or the pre-tokenizer Metaspace with prepend_scheme always / first), the
 *     whole segment is one BPE word over its characters, a character outside
 *     the vocabulary becomes its bytes' <0xXX> tokens (else unk, consecutive
 *     ones fused when fuse_unk), and decoding drops the prepended space.
 *
 * The two pre-tokenizer regexes are implemented by hand (tokenizer.c); their
 * classes \p{L}, \p{N} come from utf8proc's Unicode general categories (the
 * ones Hugging Face's Oniguruma uses: marks, symbols and unassigned code
 * points are neither) and \s is Unicode White_Space. Bytes that are not
 * valid UTF-8 are each one "other" code point (HF would refuse such text; we
 * keep it, and decoding gives the same bytes back).
 *
 * Not supported (open fails with a sentence naming the field): other
 * normalizers, other models (WordPiece, Unigram), continuing_subword_prefix /
 * end_of_word_suffix, add_prefix_space on ByteLevel, Metaspace split true,
 * Split patterns other than the two regexes, and byte-level vocabularies
 * missing one of the 256 byte tokens.
 *
 * Checked against Hugging Face tokenizers 0.23.3 (tools/tok_crosscheck.py):
 * on the real LLaMA-2 and LLaMA-3.1 tokenizer.json files, the same ids for the
 * 100,100 lines of shared/data/nlp-corpus.txt, tests/fixtures/multilingual.txt
 * and unicode-edges.txt and 20,000 random multi-script lines, and decoding
 * gives each line back; tests/test_tokenizer.c replays the fixtures' ids.
 *
 * A tokenizer is not thread-safe: encoding uses scratch buffers in the handle.
 * Use one handle per thread.
 */
#ifndef TT_TOKENIZER_H
#define TT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tt_tokenizer tt_tokenizer;

typedef enum tokenizer_kind {
    TOKENIZER_BYTES = 1,
    TOKENIZER_HF_BPE = 2,
} tokenizer_kind;

/* The byte-level vocabulary. */
#define TOKENIZER_BYTES_VOCAB 257u
#define TOKENIZER_BYTES_EOT 256u

/* A growable array of token ids that encode appends to. Start from
 * {0} (or after tokenizer_ids_free); reuse it by setting n = 0. */
typedef struct tokenizer_ids {
    uint32_t *v;
    size_t n, cap;
} tokenizer_ids;
void tokenizer_ids_free(tokenizer_ids *ids);
void tokenizer_ids_push(tokenizer_ids *ids, uint32_t id); /* aborts on out-of-memory */

/* Opens the byte-level tokenizer. Never fails; free with tokenizer_free. */
tt_tokenizer *tokenizer_open_bytes(void);

/* Opens a Hugging Face tokenizer.json (a directory holding one is accepted
 * too). Returns 0 and sets *out (free with tokenizer_free), or a negative
 * errno after tt_seterr() with one sentence naming the file and the missing or
 * invalid field (-ENOENT, -EISDIR, -EINVAL for malformed or unsupported JSON). */
int tokenizer_open_hf(const char *path, tt_tokenizer **out);

/* spec "bytes": tokenizer_open_bytes(); anything else: tokenizer_open_hf(spec).
 * Returns as tokenizer_open_hf. */
int tokenizer_open(const char *spec, tt_tokenizer **out);

void tokenizer_free(tt_tokenizer *t); /* NULL is fine */

tokenizer_kind tokenizer_kind_of(const tt_tokenizer *t);
/* "bytes" or the tokenizer.json path. */
const char *tokenizer_name(const tt_tokenizer *t);
/* One more than the largest id (ids with no token are possible but never
 * produced by encode). */
uint32_t tokenizer_vocab_size(const tt_tokenizer *t);
/* The end-of-text id: 256 for bytes; for tokenizer.json the first of
 * "<|end_of_text|>", "<|endoftext|>", "</s>" found among added_tokens, then
 * in the vocab (open fails when none is there). */
uint32_t tokenizer_eot_id(const tt_tokenizer *t);

/* When on, the exact strings of added_tokens (for bytes: "<|endoftext|>")
 * found in the text encode to their ids; when off (the default), such strings
 * are ordinary text. HF's lstrip/rstrip/single_word flags are ignored. */
void tokenizer_set_parse_special(tt_tokenizer *t, int on);

/* Encodes text[0..len) (any bytes; UTF-8 expected) and appends the ids to
 * *out. Never fails (every byte has a token). Appends nothing for len 0, and
 * no BOS/EOS ever (tokenizer.json's post_processor is not applied). */
void tokenizer_encode(tt_tokenizer *t, const char *text, size_t len, tokenizer_ids *out);

/* The bytes a token decodes to (*len set; not NUL-terminated), or NULL when
 * id has no token. Valid while t is open. */
const char *tokenizer_token(const tt_tokenizer *t, uint32_t id, size_t *len);

/* Decodes ids[0..n) into a new malloc'ed buffer *out of *len bytes (plus a
 * terminating NUL not counted in *len; the caller frees). Added tokens decode
 * to their text. Returns 0, or -EINVAL (with tt_seterr) for an id with no
 * token; *out is then NULL. */
int tokenizer_decode(const tt_tokenizer *t, const uint32_t *ids, size_t n, char **out, size_t *len);

/* The id of the added token whose text is content (e.g. "<|eot_id|>"), or
 * UINT32_MAX when the tokenizer has none. */
uint32_t tokenizer_added_id(const tt_tokenizer *t, const char *content);

/* Encodes text as one segment without added tokens (special-token parsing
 * off) that starts the whole text when first (SentencePiece's Metaspace
 * "first" prepends its space only there), appending each new token's start:
 * the byte offset in text of the first byte it stands for (the space a
 * SentencePiece tokenizer prepends counts as offset 0). */
void tokenizer_encode_offsets(tt_tokenizer *t, const char *text, size_t len, int first, tokenizer_ids *out,
                              tokenizer_ids *offsets);

#endif
