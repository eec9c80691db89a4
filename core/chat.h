/* core/chat.h — instruction data: JSONL records, chat templates, loss masks;
 * and conversations to answer (chat_render_prompt, for `tiertrain chat`).
 *
 * A record is one JSON object per line, in one of the common shapes:
 *   {"text": T}                                  plain text, every token trained
 *   {"instruction": I, "input": X, "output": O}  Alpaca ("input" optional)
 *   {"prompt": P, "completion": C}
 *   {"messages": [{"role": R, "content": S}, ...]}          R: system, user, assistant
 *   {"conversations": [{"from": F, "value": S}, ...]}        ShareGPT; F: system, human, gpt
 *                                                            (user and assistant too)
 * The non-text shapes become a conversation: an optional system message, then
 * user and assistant turns, ending with an assistant turn (a response to train
 * on). A template renders it as the models' published chat templates do, with
 * their special tokens as ids (never parsed out of the text):
 *   llama3  <|begin_of_text|> + per message <|start_header_id|>ROLE<|end_header_id|>\n\n
 *           + content.strip() + <|eot_id|>               (Meta-Llama-3-Instruct)
 *   llama2  per user turn <s>[INST] (<<SYS>>\nSYSTEM\n<</SYS>>\n\n on the first) + user.strip()
 *           + " [/INST]", per assistant turn " " + content.strip() + " " + </s>   (Llama-2-chat)
 *   chatml  per message <|im_start|>ROLE\n + content + <|im_end|> + "\n"
 *   alpaca  BOS + Stanford Alpaca's prompt (with or without ### Input:) + output + EOS;
 *           one instruction and one response, no system message
 *   none    the contents one after the other, each assistant turn followed by end-of-text
 * A {"text"} record is rendered as none whatever the template.
 *
 * Loss mask: the tokens of every assistant content (its text and, for llama2,
 * the spaces the template puts around it) and the end-of-turn token after it
 * are training targets; the rest (BOS, headers, system and user turns,
 * separators) is context only. A text token is a target when any of its bytes
 * lies in an assistant span (as Hugging Face's assistant mask marks it). With
 * train_on_prompt every token is a target.
 */
#ifndef TT_CHAT_H
#define TT_CHAT_H

#include "core/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

typedef enum chat_template {
    CHAT_NONE = 0,
    CHAT_LLAMA3,
    CHAT_LLAMA2,
    CHAT_CHATML,
    CHAT_ALPACA,
} chat_template;

/* "none", "llama3", ... -> the template, or -1. */
int chat_template_parse(const char *name);
const char *chat_template_name(int tpl);
/* The template a tokenizer's folder names (tokenizer_config.json's
 * chat_template next to tokenizer_path: Meta-Llama-3's llama3, Llama-2-chat's
 * llama2, plain ChatML), or -1 when there is none or it renders otherwise
 * than these — with why (one clause naming the file: missing, not JSON, no
 * chat_template, or a variant such as Llama-3.1's dated system block,
 * Mistral's [INST] without <<SYS>>, ChatML with a default system message)
 * in why (cap bytes; NULL: not wanted). */
int chat_template_of(const char *tokenizer_path, char *why, size_t cap);

typedef struct chat_example chat_example;

/* Parses one JSONL line (line_no for messages) of file. Returns 0 and sets
 * *out (free with chat_example_free), or -EINVAL with one sentence naming
 * FILE:LINE and the field (bad JSON, an unknown shape, a missing or non-string
 * field, an unknown role, an empty response, a conversation that does not end
 * with the assistant). */
int chat_parse(const char *file, uint64_t line_no, const char *line, size_t len, chat_example **out);
void chat_example_free(chat_example *ex);

/* Renders ex with tpl and appends its tokens and their flags (TOKFILE_TRAIN
 * on targets, TOKFILE_START on the first) to ids / flags (flags grows with
 * ids: flags->v[i] is the flags of ids->v[i]). Returns 0, or -EINVAL naming
 * FILE:LINE when the template cannot render it (a special token the tokenizer
 * lacks, alpaca with a system message or several turns, llama2 turns that do
 * not alternate). The tokenizer's special-token parsing is turned off. */
int chat_render(tt_tokenizer *t, int tpl, const chat_example *ex, int train_on_prompt, tokenizer_ids *ids,
                tokenizer_ids *flags);

/* The number of assistant turns of ex (0 for a text record). */
int chat_turns(const chat_example *ex);

/* ---- conversations to answer (the chat command) ------------------------------------ */

typedef enum chat_role {
    CHAT_ROLE_SYSTEM = 0,
    CHAT_ROLE_USER,
    CHAT_ROLE_ASSISTANT,
} chat_role;

/* One message of a conversation the caller holds (e.g. the chat command's history). */
typedef struct chat_message {
    chat_role role;
    const char *content; /* NUL-terminated text (UTF-8 expected), not owned */
} chat_message;

/* Renders the conversation m[0..n) for the model to answer and appends its ids
 * to ids: an optional system message first, then user and assistant turns
 * ending with a user turn, rendered as chat_render renders them, then the
 * template's generation prompt, as Hugging Face's apply_chat_template(...,
 * add_generation_prompt=True) renders the published templates:
 *   llama3  ... <|start_header_id|>assistant<|end_header_id|>\n\n
 *   llama2  ... <s>[INST] USER [/INST]       (nothing added: the model goes on
 *           with " ANSWER </s>"; the system message goes into the first turn)
 *   chatml  ... <|im_start|>assistant\n
 *   none    the contents one after the other, each assistant turn followed by
 *           end-of-text; nothing added
 * An assistant turn's content is rendered as the template renders a response
 * (llama3 and llama2 strip it), so an answer decoded from the model's ids goes
 * into the history as it came. Returns 0, or -EINVAL with one sentence and
 * nothing appended: no message, the last not from the user, a system message
 * after the first, llama2 turns that do not alternate, a special token the
 * tokenizer lacks, alpaca (a single-turn training format). The tokenizer's
 * special-token parsing is turned off: text that looks like a special token
 * stays text. Checked against Hugging Face (tests/test_chat.c,
 * tests/fixtures/chat-prompt-reference.jsonl). */
int chat_render_prompt(tt_tokenizer *t, int tpl, const chat_message *m, int n, tokenizer_ids *ids);

/* The ids that end an assistant turn under tpl, for generation to stop at:
 * the template's end-of-turn token (llama3 <|eot_id|>, llama2 </s>, chatml
 * <|im_end|>; none: the end-of-text) first, then the tokenizer's end-of-text
 * when it differs. Writes 1 or 2 ids to out and returns their count; 0 when
 * the tokenizer lacks the template's token (chat_render_prompt then fails
 * naming it). */
int chat_stop_ids(const tt_tokenizer *t, int tpl, uint32_t out[2]);

#endif
