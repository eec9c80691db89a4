#!/usr/bin/env python3
"""tools/chat_crosscheck.py — the reference for tiertrain's chat templates and loss masks.

An optional tool (it needs `pip install transformers jinja2 tokenizers`). It renders every record of
tests/fixtures/chat-records.jsonl with every template through Hugging Face
`PreTrainedTokenizerFast.apply_chat_template(..., tokenize=True, return_assistant_tokens_mask=True)`,
with the templates written below in Jinja as the models publish them plus `{% generation %}` tags around
what is trained (the assistant's content and its end-of-turn token), and writes
tests/fixtures/chat-reference.jsonl: per (tokenizer, template, record) the rendered text, the ids and
the assistant mask. tests/test_chat.c compares tiertrain's rendering (core/chat.c) with it.

It also writes tests/fixtures/chat-prompt-reference.jsonl, the conversations `tiertrain chat` sends to
the model (core/chat.c chat_render_prompt): every prefix of the records' conversations that ends with a
user message, plus the conversations in PROMPTS below, rendered with add_generation_prompt=True (llama3:
Meta's own template from tokenizer_config.json, checked to agree with LLAMA3 + its generation prompt;
chatml: <|im_start|>assistant\n; llama2 and none add nothing), per (tokenizer, template, messages) the
text and the ids.

The llama3 template is checked to render exactly as the chat_template in
../shared/data/tokenizers/llama3.1/tokenizer_config.json (Meta's, without the tags); llama2 is
Llama-2-chat's published template; chatml the common ChatML one (OpenHermes, Qwen); alpaca Stanford
Alpaca's prompt. chatml needs <|im_start|> and <|im_end|>, which neither LLaMA tokenizer has: it is
rendered with the LLaMA-3.1 tokenizer plus those two special tokens (ids 128256 and 128257), and
test_chat.c adds them to its own copy of the file the same way.

    python3 tools/chat_crosscheck.py            # rewrites both fixture files
"""
import json
import os
import sys

SHARED = "../shared/data/tokenizers"

LLAMA3 = ("{% for message in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
          "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
          "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}"
          "{% endgeneration %}{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}")
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
          "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
          "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
          "{% if loop.index0 == 0 and system_message != false %}"
          "{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}"
          "{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{% generation %}{{ ' ' + content.strip() + ' ' + eos_token }}"
          "{% endgeneration %}{% endif %}{% endfor %}")
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
          "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
          "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}")
ALPACA = ("{{ bos_token }}{% if input %}Below is an instruction that describes a task, paired with an input that "
          "provides further context. Write a response that appropriately completes the request.\n\n"
          "### Instruction:\n{{ instruction }}\n\n### Input:\n{{ input }}\n\n### Response:\n{% else %}"
          "Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\n{{ instruction }}\n\n### Response:\n{% endif %}"
          "{% generation %}{{ messages[1]['content'] + eos_token }}{% endgeneration %}")
NONE = ("{% for message in messages %}{% if message['role'] == 'assistant' %}{% generation %}"
        "{{ message['content'] + eos_token }}{% endgeneration %}{% else %}{{ message['content'] }}{% endif %}"
        "{% endfor %}")
TEMPLATES = {"llama3": LLAMA3, "llama2": LLAMA2, "chatml": CHATML, "alpaca": ALPACA, "none": NONE}
# add_generation_prompt=True: what each template adds after the conversation (Llama-2-chat's and none add nothing)
GEN_PROMPT = {"llama3": "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
              "chatml": "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}", "llama2": "", "none": ""}

# conversations to answer besides the records' prefixes: a history with padded and decoded-looking answers
# (llama2's " answer " with its spaces), template markup as text, a system message and several turns, an
# empty answer (an interrupted one). Not here: the text of a special token inside a message, which HF's
# apply_chat_template parses into the token and tiertrain keeps as text (tests/test_chat.c checks that).
PROMPTS = [
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": " Hello! How can I help you today? "}, {"role": "user", "content": "Tell me a joke."}],
    [{"role": "user", "content": "Does [/INST] or <<SYS>> or ### Response: end this?"}],
    [{"role": "user", "content": "  first\n"}, {"role": "assistant", "content": "\n one \n"},
     {"role": "user", "content": "second"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "third "}],
    [{"role": "system", "content": "Réponds en français."}, {"role": "user", "content": "Bonjour 😀 — 日本語?"},
     {"role": "assistant", "content": "Oui."}, {"role": "user", "content": "Et ensuite ?"}],
]


def conversation(rec):
    """The record as (messages, alpaca instruction, alpaca input) as core/chat.c reads it."""
    if "messages" in rec:
        return [{"role": m["role"], "content": m["content"]} for m in rec["messages"]], None, None
    if "conversations" in rec:
        role = {"human": "user", "gpt": "assistant"}
        return [{"role": role.get(m["from"], m["from"]), "content": m["value"]} for m in rec["conversations"]], None, None
    if "instruction" in rec:
        inp = rec.get("input") or None
        user = rec["instruction"] + ("\n\n" + inp if inp else "")
        return [{"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}], rec["instruction"], inp
    if "prompt" in rec:
        return [{"role": "user", "content": rec["prompt"]}, {"role": "assistant", "content": rec["completion"]}], None, None
    raise ValueError("a text record")


def main():
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, AddedToken
    import transformers

    toks = {}
    for name, bos, eos in (("llama3.1", "<|begin_of_text|>", "<|end_of_text|>"), ("llama2", "<s>", "</s>")):
        path = f"{SHARED}/{name}/tokenizer.json"
        toks[name] = PreTrainedTokenizerFast(tokenizer_file=path, bos_token=bos, eos_token=eos)
    t = Tokenizer.from_file(f"{SHARED}/llama3.1/tokenizer.json")
    t.add_special_tokens([AddedToken("<|im_start|>", special=True), AddedToken("<|im_end|>", special=True)])
    assert t.token_to_id("<|im_start|>") == 128256 and t.token_to_id("<|im_end|>") == 128257
    toks["llama3.1+chatml"] = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<|begin_of_text|>",
                                                      eos_token="<|end_of_text|>")
    # the llama3 template renders as Meta's own (which has no generation tags)
    meta = json.load(open(f"{SHARED}/llama3.1/tokenizer_config.json"))["chat_template"]
    plan = [("llama3.1", "llama3"), ("llama3.1", "alpaca"), ("llama3.1", "none"), ("llama2", "llama2"),
            ("llama2", "alpaca"), ("llama2", "none"), ("llama3.1+chatml", "chatml")]
    out = open("tests/fixtures/chat-reference.jsonl", "w", encoding="utf-8")
    n = 0
    for line in open("tests/fixtures/chat-records.jsonl", encoding="utf-8"):
        rec = json.loads(line)
        for tname, tpl in plan:
            tk = toks[tname]
            if "text" in rec:
                if tpl != "none":
                    continue
                ids = tk(rec["text"], add_special_tokens=False)["input_ids"] + [tk.eos_token_id]
                text, mask = rec["text"] + tk.eos_token, [1] * len(ids)
            else:
                msgs, ins, inp = conversation(rec)
                if tpl == "alpaca" and (len(msgs) != 2 or msgs[0]["role"] != "user"):
                    continue
                if tpl == "llama2" and any(m["role"] != ("user", "assistant")[i % 2]
                                           for i, m in enumerate(msgs[1:] if msgs[0]["role"] == "system" else msgs)):
                    continue
                kw = {"instruction": ins if ins is not None else msgs[0]["content"], "input": inp}
                text = tk.apply_chat_template(msgs, chat_template=TEMPLATES[tpl], tokenize=False, **kw)
                if tpl == "llama3":
                    assert text == tk.apply_chat_template(msgs, chat_template=meta, tokenize=False), "llama3 != Meta's"
                enc = tk.apply_chat_template(msgs, chat_template=TEMPLATES[tpl], tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True, **kw)
                ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
                assert ids == tk(text, add_special_tokens=False)["input_ids"]
            out.write(json.dumps({"tokenizer": tname, "template": tpl, "record": line.strip(), "text": text,
                                  "ids": ids, "mask": mask}, ensure_ascii=True) + "\n")
            n += 1
    out.close()
    print(f"chat_crosscheck: {n} renderings written to tests/fixtures/chat-reference.jsonl "
          f"(transformers {transformers.__version__})")

    # conversations to answer: add_generation_prompt=True
    convs = []
    for line in open("tests/fixtures/chat-records.jsonl", encoding="utf-8"):
        rec = json.loads(line)
        if "text" in rec:
            continue
        msgs = conversation(rec)[0]
        convs += [msgs[:i + 1] for i, m in enumerate(msgs) if m["role"] == "user"]
    convs += PROMPTS
    plan = [("llama3.1", "llama3"), ("llama3.1", "none"), ("llama2", "llama2"), ("llama2", "none"),
            ("llama3.1+chatml", "chatml")]
    out = open("tests/fixtures/chat-prompt-reference.jsonl", "w", encoding="utf-8")
    n = 0
    for msgs in convs:
        for tname, tpl in plan:
            tk = toks[tname]
            template = TEMPLATES[tpl] + GEN_PROMPT[tpl]
            text = tk.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=True)
            if tpl == "llama3":
                assert text == tk.apply_chat_template(msgs, chat_template=meta, tokenize=False,
                                                      add_generation_prompt=True), "llama3 != Meta's"
            ids = list(tk.apply_chat_template(msgs, chat_template=template, tokenize=True, return_dict=True,
                                              add_generation_prompt=True)["input_ids"])
            assert ids == tk(text, add_special_tokens=False)["input_ids"]
            out.write(json.dumps({"tokenizer": tname, "template": tpl, "messages": msgs, "text": text, "ids": ids},
                                 ensure_ascii=True) + "\n")
            n += 1
    out.close()
    print(f"chat_crosscheck: {n} renderings with add_generation_prompt written to "
          f"tests/fixtures/chat-prompt-reference.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
