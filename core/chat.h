/* core/chat.h — instruction data: JSONL records, chat templates, loss masks.
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
 * chat_template next to tokenizer_path: <|start_header_id|> llama3, [INST]
 * llama2, <|im_start|> chatml), or -1 when there is none or it is not one of
 * these. */
int chat_template_of(const char *tokenizer_path);

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

#endif
