/* core/tokfile.h — token files: what `tiertrain tokenize` writes and the
 * trainer's data loader reads. Layout (docs/FORMAT.md, "Token files"):
 *
 *   offset 0   char[8] magic   "TTTOKENS"
 *          8   u32     version 1
 *         12   u32     dtype   1 = u32 tokens
 *         16   u64     count   number of tokens
 *         24   u32     vocab   every token is < vocab
 *         28   u32     eot     the end-of-text id (< vocab) that ends each document
 *         32   u32[count] tokens, little-endian
 *   version 2 only (instruction data: `tokenize --format jsonl`):
 *         32 + 4 count   u8[count] flags: TOKFILE_TRAIN (bit 0) the token is a
 *                        training target (a response token, or its end of
 *                        turn); TOKFILE_START (bit 1) an example starts here
 *                        (the first token has it); other bits 0
 *
 * Version 1 files are plain documents: every token is a target and examples
 * do not exist (windows run across documents).
 *
 * The writer streams tokens to "PATH.partial", then fsyncs and renames it to
 * PATH: a token file that exists is complete. The reader maps the file and
 * validates every field and every token before handing out the pointer.
 * Both assume a little-endian host (checked at compile time).
 */
#ifndef TT_TOKFILE_H
#define TT_TOKFILE_H

#include <stddef.h>
#include <stdint.h>

#define TOKFILE_MAGIC "TTTOKENS"
#define TOKFILE_VERSION 1u   /* documents */
#define TOKFILE_VERSION_2 2u /* examples with per-token flags */
#define TOKFILE_TRAIN 1u
#define TOKFILE_START 2u
#define TOKFILE_DTYPE_U32 1u
#define TOKFILE_HEADER_BYTES 32u

/* ---- writing ---- */

typedef struct tokfile_writer tokfile_writer;

/* Creates PATH.partial for a file of tokens < vocab with end-of-text eot
 * (0 < vocab, eot < vocab, else an assertion). Returns 0 and sets *out, or
 * -errno after tt_seterr naming PATH (a directory, a missing folder, no
 * permission). */
int tokfile_write_open(const char *path, uint32_t vocab, uint32_t eot, tokfile_writer **out);
/* The same for a version-2 file: append its tokens with tokfile_append_flags
 * (the flags are kept in memory, a byte per token, until finish). */
int tokfile_write_open_v2(const char *path, uint32_t vocab, uint32_t eot, tokfile_writer **out);
/* Appends tokens[0..n) with their flags (version 2 only; the first token
 * appended must have TOKFILE_START). */
int tokfile_append_flags(tokfile_writer *w, const uint32_t *tokens, const uint8_t *flags, size_t n);

/* Appends tokens[0..n) (each < vocab, else an assertion). Returns 0 or -errno
 * after tt_seterr naming the file (disk full, IO error); after an error only
 * tokfile_write_abort may be called. */
int tokfile_append(tokfile_writer *w, const uint32_t *tokens, size_t n);

/* Tokens appended so far. */
uint64_t tokfile_write_count(const tokfile_writer *w);

/* Writes the header, fsyncs, renames PATH.partial to PATH. Frees w in every
 * case; on error (-errno, tt_seterr) PATH.partial is removed and PATH is as it
 * was. */
int tokfile_write_finish(tokfile_writer *w);

/* finish in two halves, for outputs that must appear together (OUT and
 * OUT.val): seal writes the header and fsyncs PATH.partial (on error -errno
 * after tt_seterr; then only tokfile_write_abort); commit renames it to PATH,
 * then closes it (its lock against other writers held until it has left its
 * temporary name) and frees w in every case (on error PATH.partial is removed). */
int tokfile_write_seal(tokfile_writer *w);
int tokfile_write_commit(tokfile_writer *w);

/* Removes PATH.partial and frees w (NULL is fine). PATH is left untouched. */
void tokfile_write_abort(tokfile_writer *w);

/* ---- reading ---- */

typedef struct tokfile tokfile;

/* Maps and validates PATH. Returns 0 and sets *out, or -errno after tt_seterr
 * with one sentence naming the file (-ENOENT, -EISDIR, -EINVAL for a file that
 * is not a token file, truncated, oversized or holds a token >= vocab). */
int tokfile_open(const char *path, tokfile **out);
void tokfile_close(tokfile *tf); /* NULL is fine */

/* 0 while the file is as tokfile_open validated it (its size and mtime), else
 * -EIO with one sentence naming it: a file rewritten in place under a run
 * would feed it other tokens, or ids beyond the vocabulary. NULL is fine. */
int tokfile_check(const tokfile *tf);
/* (count) u32 tokens, each < tokfile_vocab; valid until tokfile_close. */
const uint32_t *tokfile_tokens(const tokfile *tf);
uint64_t tokfile_count(const tokfile *tf);
uint32_t tokfile_vocab(const tokfile *tf);
uint32_t tokfile_eot(const tokfile *tf);
/* Version 2: the flags of every token (TOKFILE_TRAIN, TOKFILE_START); NULL
 * for a version-1 file. */
const uint8_t *tokfile_flags(const tokfile *tf);
const char *tokfile_path(const tokfile *tf);

#endif
