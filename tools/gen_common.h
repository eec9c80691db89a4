/* tools/gen_common.h — what the commands that generate text share (generate,
 * chat, eval --task): valid UTF-8 out of a byte-level model's tokens, the
 * checks of a tokenizer and an adapter against the store, the generation
 * engine with its LoRA, the tokenizer's <s> and end-of-sequence ids, JSON
 * lines in and out, and Ctrl-C. Each function given a cmd ("generate", ...)
 * prints one line naming it when it fails and returns the exit code, as
 * tool_fail does. */
#ifndef TT_TOOLS_GEN_COMMON_H
#define TT_TOOLS_GEN_COMMON_H

#include "core/generate.h"
#include "core/tokenizer.h"
#include "io/peft.h"
#include "io/tier.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <jansson.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- valid UTF-8 ------------------------------------------------------------ */

/* s[0..n) as valid UTF-8 in a new buffer (malloc'ed, *len bytes,
 * NUL-terminated): each byte that starts no valid sequence becomes U+FFFD, as
 * Hugging Face's decode makes a byte-level model's text. A sequence cut at
 * the end is kept as it is unless final (the next token may complete it;
 * tool_utf8_printable holds it back); final turns it into U+FFFD too. */
char *tool_utf8_clean(const char *s, size_t n, int final, size_t *len);

/* How many bytes of s[0..n) can be printed now: not a UTF-8 sequence cut at
 * the end (it waits for the rest), and not the last `hold` bytes (0: none;
 * generate holds back what may start its --stop string). */
size_t tool_utf8_printable(const char *s, size_t n, size_t hold);

/* The text of ids (tokenizer_decode) through tool_utf8_clean(final): a new
 * malloc'ed string of *len bytes. */
char *tool_gen_text(const tt_tokenizer *tok, const tokenizer_ids *ids, int final, size_t *len);

/* ---- the model -------------------------------------------------------------- */

/* The tokenizer against the vocabulary of the store st (model: its path):
 * at most as many tokens, and at most 1/64 + 64 fewer (a padded embedding).
 * Returns 0, or 1 after printing that the tokenizer does not match. */
int tool_vocab_check(const char *cmd, const tt_tokenizer *tok, const tier_store *st, const char *model);
/* A token file tokenized for another vocabulary than the model's (tool_vocab_check's rule): a note on stderr
 * that its ids mean other tokens to this model (what a throughput run on random weights does on purpose). The
 * ids themselves must still fit the model: the callers refuse those that do not. */
void tool_tokfile_vocab_note(const char *cmd, const char *path, uint32_t file_vocab, const char *model,
                             uint32_t model_vocab);

/* The KV cache positions cap that flags ask for ("--context", or what sets
 * it) against the positions the store st (model: its path) was built for
 * (max_pos): rope and the model were never trained past them. Returns 0, or
 * 2 after printing a usage error for cmd. */
int tool_context_check(const char *cmd, const char *flags, long cap, const tier_store *st, const char *model);

/* Reads the PEFT adapter in dir into *a (free it with peft_free, also after
 * a failure) and checks that it fits the store st (model: its path): shapes
 * (loram_check_adapter) and base model (loram_check_base, a pruned store's
 * map). dir NULL: no adapter, returns 0 and leaves *a alone. Returns 0, or 1
 * after printing the reason. */
int tool_adapter_open(const char *cmd, const char *dir, const tier_store *st, const char *model, peft_adapter *a);

/* The LoRA shape the runtime carries: adapter a's (NULL: none, then rank 1
 * on q_proj, whose B is zero at creation: its term is exactly zero, so this
 * is the bare model at the least cost). */
tt_lora_cfg tool_lora_cfg(const peft_adapter *a);

/* The generation engine on store st (model: its path) for B sequences per
 * batch, prompt chunks of C tokens and KV caches of cap positions: the
 * budgets and backend of pa (its batch shape and LoRA fields are ignored),
 * the LoRA of adapter a (NULL: the bare model, tool_lora_cfg) loaded.
 * Returns 0 with *g set (gen_free), or 2 (a usage error) or 1 after
 * printing the reason; *g is NULL then. */
int tool_gen_create(const char *cmd, const tier_store *st, const char *model, const tool_plan_args *pa,
                    const peft_adapter *a, int B, int C, int cap, tt_gen **g);

/* The id a prompt starts with: <|begin_of_text|> or <s> where a Hugging Face
 * tokenizer has one (as its LLaMA tokenizers add it), else (or with no_bos)
 * UINT32_MAX: none. */
uint32_t tool_gen_bos(const tt_tokenizer *tok, int no_bos);

/* Fills eos with the ids that end a sequence: the tokenizer's end of text,
 * and <|eot_id|> where it has one (LLaMA-3 instruct ends a turn with it).
 * Returns how many (1 or 2). */
int tool_gen_eos(const tt_tokenizer *tok, uint32_t eos[2]);

/* ---- JSON lines ------------------------------------------------------------- */

/* The next line of f that is not blank (only spaces and tabs), parsed as
 * JSON with jansson's flags: 1 with *o (NULL when the line is not valid
 * JSON: *je says why), 0 at the end of the file or on a read error (check
 * ferror; errno is getline's). Its trailing "\n" / "\r\n" is cut; *line and
 * *cap are getline's buffer (free *line at the end); *no counts the lines
 * read, blank ones included (FILE:LINE in messages). */
int tool_jsonl_next(FILE *f, char **line, size_t *cap, uint64_t *no, size_t flags, json_t **o, json_error_t *je);

/* Appends j as one compact JSON line and its "\n" to *buf (*len bytes used
 * of *cap, grown with realloc) and drops the reference to j. j must print:
 * not NULL, its strings valid UTF-8 (asserted). Returns the bytes appended:
 * the line is (*buf + *len - that, that). */
size_t tool_jsonl_append(json_t *j, char **buf, size_t *len, size_t *cap);

/* ---- Ctrl-C ----------------------------------------------------------------- */

/* Set by SIGINT between tool_sigint_catch and tool_sigint_restore; the
 * caller reads it (a gen_token_fn returns -1 on it) and may clear it. */
extern volatile sig_atomic_t tool_interrupted;

/* SIGINT sets tool_interrupted instead of ending the process, writing msg
 * (NULL: nothing) to stderr; a second one while tool_interrupted is still
 * set quits at once (partial outputs removed, exit by SIGINT). Without
 * SA_RESTART, so a blocking read returns (EINTR). The handler it replaces
 * goes into *old; msg must outlive the catch. */
void tool_sigint_catch(struct sigaction *old, const char *msg);
/* Puts back the handler tool_sigint_catch saved. */
void tool_sigint_restore(const struct sigaction *old);

/* --stop (repeatable): where the first of the stop strings starts in text
 * (NUL-terminated), or NULL; and the longest one's length (a streamed text
 * holds back one byte less, which may still become a stop string). */
const char *tool_stop_find(const char *text, const cli_strs *stops);
size_t tool_stop_hold(const cli_strs *stops);
/* 2 after printing a usage error for cmd when one of the stop strings is empty, else 0. */
int tool_stop_check(const char *cmd, const cli_strs *stops);

/* A malloc'ed copy of s (aborts on out-of-memory, as tt_xmalloc). */
char *tool_xstrdup(const char *s);

#endif
