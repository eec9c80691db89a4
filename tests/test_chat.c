/* tests/test_chat.c — instruction records, chat templates and loss masks (core/chat.c).
 *
 * 1. Against Hugging Face: every rendering of tests/fixtures/chat-reference.jsonl (written by
 *    tools/chat_crosscheck.py with transformers 5.24 apply_chat_template and return_assistant_tokens_mask:
 *    each record shape x llama3 / llama2 / chatml / alpaca / none on the real LLaMA-3.1 and LLaMA-2
 *    tokenizers) must give the same ids, and the training targets must be exactly HF's assistant mask;
 *    the first token starts the example. Skipped when ../shared is absent.
 * 2. Without ../shared: special-token text inside a message stays text; a template whose special tokens
 *    the tokenizer lacks, alpaca with several turns, llama2 turns out of order are refused naming
 *    FILE:LINE; --train-on-prompt trains every token; and malformed records (bad JSON, missing fields,
 *    unknown roles, empty responses, a conversation ending with the user, unknown shapes) are refused
 *    with the file, the line and the field.
 * 3. Conversations to answer (chat_render_prompt, `tiertrain chat`): every rendering of
 *    tests/fixtures/chat-prompt-reference.jsonl (tools/chat_crosscheck.py: HF apply_chat_template with
 *    add_generation_prompt=True; record prefixes ending with a user turn and a few histories, with
 *    llama3 / llama2 / chatml / none) must give the same ids, and the stop ids of each template are its
 *    end-of-turn token then end-of-text (skipped without ../shared). Without ../shared: none on bytes
 *    renders the contents one after the other with end-of-text after each answer, special-token text
 *    stays text; a conversation that does not end with the user, a late system message, no message,
 *    alpaca and a template whose tokens the tokenizer lacks are refused with nothing appended.
 */
#include "core/base/common.h"
#include "core/chat.h"
#include "core/tokfile.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>

#define SHARED "../shared/data/tokenizers"

static char g_dir[512];

/* The LLaMA-3.1 tokenizer.json with <|im_start|> 128256 and <|im_end|> 128257 added (as the reference's). */
static const char *chatml_tokenizer(void) {
    static char path[600];
    json_t *root = json_load_file(SHARED "/llama3.1/tokenizer.json", 0, NULL);
    TT_ASSERT(root);
    json_t *added = json_object_get(root, "added_tokens");
    const char *names[2] = {"<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 2; i++)
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", 128256 + i, "content", names[i],
                                               "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1));
    snprintf(path, sizeof path, "%s/chatml-tokenizer.json", g_dir);
    TT_ASSERT(json_dump_file(root, path, JSON_COMPACT) == 0);
    json_decref(root);
    return path;
}

/* The tokenizers the Hugging Face references were made with: LLaMA-3.1, LLaMA-2, and LLaMA-3.1 with ChatML's tokens. */
static void reference_tokenizers(tt_tokenizer *tk[3]) {
    CHECK(tokenizer_open_hf(SHARED "/llama3.1/tokenizer.json", &tk[0]) == 0);
    CHECK(tokenizer_open_hf(SHARED "/llama2/tokenizer.json", &tk[1]) == 0);
    CHECK_MSG(tokenizer_open_hf(chatml_tokenizer(), &tk[2]) == 0, "%s", tt_lasterr());
}

static void test_reference(void) {
    struct stat sb;
    if (stat(SHARED, &sb) != 0) {
        fprintf(stderr, "note: %s is absent: the Hugging Face chat-template comparison is skipped\n", SHARED);
        return;
    }
    const char *names[3] = {"llama3.1", "llama2", "llama3.1+chatml"};
    tt_tokenizer *tk[3];
    reference_tokenizers(tk);
    FILE *f = fopen("tests/fixtures/chat-reference.jsonl", "r");
    TT_ASSERT(f);
    char line[1 << 16];
    int n = 0, bad = 0, templates_seen = 0;
    tokenizer_ids ids = {0}, fl = {0};
    while (fgets(line, sizeof line, f)) {
        json_t *r = json_loads(line, 0, NULL);
        TT_ASSERT(r);
        const char *tn = json_string_value(json_object_get(r, "tokenizer")),
                   *tpl = json_string_value(json_object_get(r, "template")),
                   *rec = json_string_value(json_object_get(r, "record"));
        const json_t *want = json_object_get(r, "ids"), *mask = json_object_get(r, "mask");
        int k = strcmp(tn, names[0]) == 0 ? 0 : strcmp(tn, names[1]) == 0 ? 1 : 2;
        templates_seen |= 1 << chat_template_parse(tpl);
        chat_example *ex;
        int rc = chat_parse("chat-records.jsonl", 1, rec, strlen(rec), &ex);
        CHECK_MSG(rc == 0, "%s", tt_lasterr());
        ids.n = fl.n = 0;
        rc = rc ? rc : chat_render(tk[k], chat_template_parse(tpl), ex, 0, &ids, &fl);
        chat_example_free(ex);
        int same = rc == 0 && ids.n == json_array_size(want) && fl.n == ids.n;
        for (size_t i = 0; same && i < ids.n; i++)
            same = ids.v[i] == (uint32_t)json_integer_value(json_array_get(want, i)) &&
                   (fl.v[i] & TOKFILE_TRAIN) == (uint32_t)json_integer_value(json_array_get(mask, i)) &&
                   (fl.v[i] & TOKFILE_START) == (i == 0 ? TOKFILE_START : 0);
        if (!same && bad++ < 4) {
            CHECK_MSG(0, "%s / %s: %.70s", tn, tpl, rec);
            for (size_t i = 0; i < ids.n && i < json_array_size(want); i++)
                if (ids.v[i] != (uint32_t)json_integer_value(json_array_get(want, i)) ||
                    (fl.v[i] & 1) != (uint32_t)json_integer_value(json_array_get(mask, i))) {
                    fprintf(stderr, "  first difference at token %zu: id %u train %u, HF id %lld mask %lld (%zu vs %zu "
                                    "tokens)\n", i, ids.v[i], fl.v[i] & 1,
                            (long long)json_integer_value(json_array_get(want, i)),
                            (long long)json_integer_value(json_array_get(mask, i)), ids.n, json_array_size(want));
                    break;
                }
        }
        json_decref(r);
        n++;
    }
    fclose(f);
    CHECK_MSG(bad == 0, "%d of %d renderings differ from Hugging Face's", bad, n);
    CHECK_MSG(n >= 50 && templates_seen == 0x1f, "the reference covers %d renderings, templates %#x", n, templates_seen);
    tokenizer_ids_free(&ids);
    tokenizer_ids_free(&fl);
    for (int i = 0; i < 3; i++) tokenizer_free(tk[i]);
}

/* chat_parse must refuse line with rc -EINVAL and a message holding FILE:7 and needle. */
static void bad_record(const char *line, const char *needle) {
    chat_example *ex = (chat_example *)1;
    int rc = chat_parse("data.jsonl", 7, line, strlen(line), &ex);
    CHECK_MSG(rc == -EINVAL && ex == NULL, "accepted: %s", line);
    CHECK_MSG(strstr(tt_lasterr(), "data.jsonl:7:") && strstr(tt_lasterr(), needle), "'%s': %s", needle, tt_lasterr());
}

static void test_errors(void) {
    bad_record("{\"prompt\": \"a\", ", "not valid JSON");
    bad_record("[1, 2]", "not a JSON object");
    bad_record("{\"question\": \"a\", \"answer\": \"b\"}", "none of the fields tiertrain reads");
    bad_record("{\"instruction\": \"a\", \"input\": \"\"}", "\"output\" is missing");
    bad_record("{\"instruction\": 5, \"output\": \"b\"}", "\"instruction\" is not a string");
    bad_record("{\"instruction\": \"a\", \"output\": \"  \"}", "\"output\" is empty");
    bad_record("{\"prompt\": \"a\"}", "\"completion\" is missing");
    bad_record("{\"prompt\": \"a\", \"completion\": \"\"}", "\"completion\" is empty");
    bad_record("{\"messages\": []}", "\"messages\" must be a non-empty list");
    bad_record("{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}", "messages[0].role is \"bot\"");
    bad_record("{\"messages\": [{\"role\": \"user\"}]}", "messages[0].content is missing");
    bad_record("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"\"}]}",
               "messages[1].content is an empty response");
    bad_record("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}", "end with a user message");
    bad_record("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"system\", \"content\": \"s\"}, "
               "{\"role\": \"assistant\", \"content\": \"a\"}]}", "messages[1] is a system message");
    bad_record("{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"robot\", \"value\": \"a\"}]}",
               "conversations[1].from is \"robot\"");
    bad_record("{\"text\": \"\"}", "\"text\" is empty");
    bad_record("{\"text\": 3}", "\"text\" is not a string");
}

static chat_role role_of(const char *r) {
    return strcmp(r, "system") == 0 ? CHAT_ROLE_SYSTEM : strcmp(r, "user") == 0 ? CHAT_ROLE_USER : CHAT_ROLE_ASSISTANT;
}

static void test_prompt_reference(void) {
    struct stat sb;
    if (stat(SHARED, &sb) != 0) {
        fprintf(stderr, "note: %s is absent: the Hugging Face generation-prompt comparison is skipped\n", SHARED);
        return;
    }
    const char *names[3] = {"llama3.1", "llama2", "llama3.1+chatml"};
    tt_tokenizer *tk[3];
    reference_tokenizers(tk);
    FILE *f = fopen("tests/fixtures/chat-prompt-reference.jsonl", "r");
    TT_ASSERT(f);
    char line[1 << 16];
    int n = 0, bad = 0, templates_seen = 0, multi = 0;
    tokenizer_ids ids = {0};
    while (fgets(line, sizeof line, f)) {
        json_t *r = json_loads(line, 0, NULL);
        TT_ASSERT(r);
        const char *tn = json_string_value(json_object_get(r, "tokenizer")),
                   *tpl = json_string_value(json_object_get(r, "template"));
        const json_t *want = json_object_get(r, "ids"), *msgs = json_object_get(r, "messages");
        int k = strcmp(tn, names[0]) == 0 ? 0 : strcmp(tn, names[1]) == 0 ? 1 : 2;
        templates_seen |= 1 << chat_template_parse(tpl);
        chat_message m[16];
        int nm = (int)json_array_size(msgs);
        TT_ASSERT(nm <= 16);
        for (int i = 0; i < nm; i++) {
            const json_t *o = json_array_get(msgs, (size_t)i);
            m[i] = (chat_message){role_of(json_string_value(json_object_get(o, "role"))),
                                  json_string_value(json_object_get(o, "content"))};
        }
        multi += nm >= 4;
        ids.n = 0;
        tokenizer_ids_push(&ids, 7); /* appended after what is there */
        int rc = chat_render_prompt(tk[k], chat_template_parse(tpl), m, nm, &ids);
        int same = rc == 0 && ids.n == json_array_size(want) + 1 && ids.v[0] == 7;
        for (size_t i = 0; same && i + 1 < ids.n; i++)
            same = ids.v[i + 1] == (uint32_t)json_integer_value(json_array_get(want, i));
        if (!same && bad++ < 4) {
            CHECK_MSG(0, "%s / %s: %s (%s)", tn, tpl, json_string_value(json_object_get(r, "text")),
                      rc ? tt_lasterr() : "different ids");
            for (size_t i = 0; rc == 0 && i + 1 < ids.n && i < json_array_size(want); i++)
                if (ids.v[i + 1] != (uint32_t)json_integer_value(json_array_get(want, i))) {
                    fprintf(stderr, "  first difference at token %zu: id %u, HF id %lld (%zu vs %zu tokens)\n", i,
                            ids.v[i + 1], (long long)json_integer_value(json_array_get(want, i)), ids.n - 1,
                            json_array_size(want));
                    break;
                }
        }
        json_decref(r);
        n++;
    }
    fclose(f);
    CHECK_MSG(bad == 0, "%d of %d generation prompts differ from Hugging Face's", bad, n);
    const int want_tpl = 1 << CHAT_NONE | 1 << CHAT_LLAMA3 | 1 << CHAT_LLAMA2 | 1 << CHAT_CHATML;
    CHECK_MSG(n >= 50 && templates_seen == want_tpl && multi >= 10, "the reference covers %d renderings (%d with a "
              "history), templates %#x", n, multi, templates_seen);
    /* the templates the folders name (llama2's copy names none) */
    CHECK(chat_template_of(SHARED "/llama3.1", NULL, 0) == CHAT_LLAMA3);
    CHECK(chat_template_of(SHARED "/llama3.1/tokenizer.json", NULL, 0) == CHAT_LLAMA3);
    char why[600];
    CHECK(chat_template_of(SHARED "/llama2", why, sizeof why) == -1 && strstr(why, "names no chat template"));
    /* where generation stops: the template's end of turn, then end-of-text */
    uint32_t st[2];
    CHECK(chat_stop_ids(tk[0], CHAT_LLAMA3, st) == 2 && st[0] == 128009 && st[1] == 128001);
    CHECK(chat_stop_ids(tk[0], CHAT_NONE, st) == 1 && st[0] == 128001);
    CHECK(chat_stop_ids(tk[1], CHAT_LLAMA2, st) == 1 && st[0] == 2);
    CHECK(chat_stop_ids(tk[2], CHAT_CHATML, st) == 2 && st[0] == 128257 && st[1] == 128001);
    CHECK(chat_stop_ids(tk[1], CHAT_LLAMA3, st) == 0 && chat_stop_ids(tk[0], CHAT_CHATML, st) == 0);
    tokenizer_ids_free(&ids);
    for (int i = 0; i < 3; i++) tokenizer_free(tk[i]);
}

/* chat_render_prompt on bytes: the none layout exactly, and the refusals (nothing appended). */
static void test_prompt_rules(void) {
    tt_tokenizer *t = tokenizer_open_bytes();
    tokenizer_ids ids = {0};
    chat_message m[5] = {{CHAT_ROLE_SYSTEM, "S."}, {CHAT_ROLE_USER, "u1"}, {CHAT_ROLE_ASSISTANT, " a<|endoftext|>"},
                         {CHAT_ROLE_USER, "u2"}, {CHAT_ROLE_ASSISTANT, "x"}};
    CHECK(chat_render_prompt(t, CHAT_NONE, m, 4, &ids) == 0);
    const char *text = "S.u1 a<|endoftext|>";
    size_t tl = strlen(text);
    int same = ids.n == tl + 1 + 2;
    for (size_t i = 0; same && i < tl; i++) same = ids.v[i] == (uint8_t)text[i];
    CHECK_MSG(same && ids.v[tl] == TOKENIZER_BYTES_EOT && ids.v[tl + 1] == 'u' && ids.v[tl + 2] == '2',
              "none: %zu ids", ids.n);
    uint32_t st[2] = {0, 0};
    CHECK(chat_stop_ids(t, CHAT_NONE, st) == 1 && st[0] == TOKENIZER_BYTES_EOT);
    CHECK(chat_stop_ids(t, CHAT_LLAMA3, st) == 0);
    /* refusals leave ids as they were */
    ids.n = 1;
    CHECK(chat_render_prompt(t, CHAT_NONE, m, 5, &ids) == -EINVAL && ids.n == 1);
    CHECK_MSG(strstr(tt_lasterr(), "must end with a user message") && strstr(tt_lasterr(), "the assistant"), "%s",
              tt_lasterr());
    CHECK(chat_render_prompt(t, CHAT_NONE, m, 0, &ids) == -EINVAL && ids.n == 1);
    chat_message late[3] = {{CHAT_ROLE_USER, "u"}, {CHAT_ROLE_SYSTEM, "s"}, {CHAT_ROLE_USER, "v"}};
    CHECK(chat_render_prompt(t, CHAT_NONE, late, 3, &ids) == -EINVAL && ids.n == 1);
    CHECK_MSG(strstr(tt_lasterr(), "message 1 is a system message"), "%s", tt_lasterr());
    CHECK(chat_render_prompt(t, CHAT_LLAMA3, m, 4, &ids) == -EINVAL && ids.n == 1);
    CHECK_MSG(strstr(tt_lasterr(), "needs the special token <|begin_of_text|>"), "%s", tt_lasterr());
    CHECK(chat_render_prompt(t, CHAT_CHATML, m + 1, 1, &ids) == -EINVAL && ids.n == 1);
    CHECK(chat_render_prompt(t, CHAT_ALPACA, m + 1, 1, &ids) == -EINVAL && ids.n == 1);
    CHECK_MSG(strstr(tt_lasterr(), "alpaca"), "%s", tt_lasterr());
    tokenizer_free(t);
    /* llama2's alternation, on tests/fixtures/tokenizer-mini.json plus <s> 346 and </s> 347 */
    json_t *root = json_load_file("tests/fixtures/tokenizer-mini.json", 0, NULL);
    TT_ASSERT(root);
    const char *names[2] = {"<s>", "</s>"};
    for (int i = 0; i < 2; i++)
        json_array_append_new(json_object_get(root, "added_tokens"),
                              json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", 346 + i, "content", names[i],
                                        "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1));
    char path[600];
    snprintf(path, sizeof path, "%s/llama2-mini.json", g_dir);
    TT_ASSERT(json_dump_file(root, path, JSON_COMPACT) == 0);
    json_decref(root);
    CHECK_MSG(tokenizer_open_hf(path, &t) == 0, "%s", tt_lasterr());
    ids.n = 0;
    CHECK(chat_render_prompt(t, CHAT_LLAMA2, m, 4, &ids) == 0 && ids.n > 4 && ids.v[0] == 346);
    int starts = 0, ends = 0;
    for (size_t i = 0; i < ids.n; i++) starts += ids.v[i] == 346, ends += ids.v[i] == 347;
    CHECK_MSG(starts == 2 && ends == 1 && ids.v[ids.n - 1] != 347, "llama2: %d <s>, %d </s>", starts, ends);
    CHECK(chat_stop_ids(t, CHAT_LLAMA2, st) == 2 && st[0] == 347 && st[1] == 345); /* </s>, <|end_of_text|> */
    size_t before = ids.n;
    chat_message twice[2] = {{CHAT_ROLE_USER, "u"}, {CHAT_ROLE_USER, "v"}};
    CHECK(chat_render_prompt(t, CHAT_LLAMA2, twice, 2, &ids) == -EINVAL && ids.n == before);
    CHECK_MSG(strstr(tt_lasterr(), "message 1 is from the user where the llama2 template needs the assistant"), "%s",
              tt_lasterr());
    tokenizer_ids_free(&ids);
    tokenizer_free(t);
}

static void test_render_rules(void) {
    tt_tokenizer *t = tokenizer_open_bytes();
    chat_example *ex;
    tokenizer_ids ids = {0}, fl = {0};
    /* none: "Q?" context, "A<|endoftext|>" trained; the special-token text in the answer stays bytes */
    const char *rec = "{\"prompt\": \"Q?\", \"completion\": \"A<|endoftext|>\"}";
    CHECK(chat_parse("d.jsonl", 1, rec, strlen(rec), &ex) == 0);
    CHECK(chat_render(t, CHAT_NONE, ex, 0, &ids, &fl) == 0);
    CHECK_EQ_INT(ids.n, 2 + 14 + 1);
    CHECK(ids.v[ids.n - 1] == TOKENIZER_BYTES_EOT && ids.v[3] == '<'); /* the text is bytes, the last id the eot */
    CHECK(fl.v[0] == TOKFILE_START && fl.v[1] == 0 && fl.v[2] == TOKFILE_TRAIN && fl.v[ids.n - 1] == TOKFILE_TRAIN);
    /* --train-on-prompt: every token */
    ids.n = fl.n = 0;
    CHECK(chat_render(t, CHAT_NONE, ex, 1, &ids, &fl) == 0);
    CHECK(fl.v[0] == (TOKFILE_START | TOKFILE_TRAIN) && fl.v[1] == TOKFILE_TRAIN);
    /* alpaca on bytes: no BOS, the prompt, the output and end-of-text */
    ids.n = fl.n = 0;
    CHECK(chat_render(t, CHAT_ALPACA, ex, 0, &ids, &fl) == 0);
    CHECK(ids.v[0] == 'B' && fl.v[0] == TOKFILE_START && ids.v[ids.n - 1] == TOKENIZER_BYTES_EOT);
    /* llama3 needs its header tokens */
    ids.n = fl.n = 0;
    CHECK(chat_render(t, CHAT_LLAMA3, ex, 0, &ids, &fl) == -EINVAL && ids.n == 0 && fl.n == 0);
    CHECK_MSG(strstr(tt_lasterr(), "d.jsonl:1:") && strstr(tt_lasterr(), "<|begin_of_text|>"), "%s", tt_lasterr());
    chat_example_free(ex);
    /* alpaca: one instruction and one response */
    rec = "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}, "
          "{\"role\": \"user\", \"content\": \"c\"}, {\"role\": \"assistant\", \"content\": \"d\"}]}";
    CHECK(chat_parse("d.jsonl", 2, rec, strlen(rec), &ex) == 0 && chat_turns(ex) == 2);
    CHECK(chat_render(t, CHAT_ALPACA, ex, 0, &ids, &fl) == -EINVAL && strstr(tt_lasterr(), "one instruction"));
    chat_example_free(ex);
    /* llama2: turns must alternate */
    rec = "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"b\"}, "
          "{\"role\": \"assistant\", \"content\": \"c\"}]}";
    CHECK(chat_parse("d.jsonl", 3, rec, strlen(rec), &ex) == 0);
    CHECK(chat_render(t, CHAT_LLAMA2, ex, 0, &ids, &fl) == -EINVAL); /* bytes lacks <s>: refused either way */
    chat_example_free(ex);
    CHECK(chat_template_parse("llama3") == CHAT_LLAMA3 && chat_template_parse("mistral") == -1);
    CHECK(chat_template_of("bytes", NULL, 0) == -1);
    /* a tokenizer_config.json with model_max_length 1e30 written as an integer (as HF writes it) */
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", g_dir);
    FILE *f = fopen(cfg, "w");
    TT_ASSERT(f);
    fputs("{\"model_max_length\": 1000000000000000019884624838656, \"chat_template\": \"{% for message in messages "
          "%}{{'<|im_start|>' + message['role'] + '\\n'}}{% endfor %}\"}\n", f);
    fclose(f);
    CHECK_MSG(chat_template_of(g_dir, NULL, 0) == CHAT_CHATML, "%d", chat_template_of(g_dir, NULL, 0));
    char why[600];
    /* variants whose text differs from the family's published template are not taken for it, and say why */
    static const struct { const char *tpl, *why; } variants[] = {
        {"{{ '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\n' }}",
         "Llama-3.1's chat template"},
        {"{{ bos_token }}{% for m in messages %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endfor %}",
         "without Llama-2's <<SYS>> block"},
        {"{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}", "adds a system message"},
        {"{{ messages[0]['content'] }}", "a chat template tiertrain does not render"},
    };
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        f = fopen(cfg, "w");
        TT_ASSERT(f);
        fprintf(f, "{\"chat_template\": \"%s\"}\n", variants[v].tpl);
        fclose(f);
        CHECK_MSG(chat_template_of(g_dir, why, sizeof why) == -1 && strstr(why, variants[v].why), "variant %zu: %s", v,
                  why);
    }
    f = fopen(cfg, "w");
    TT_ASSERT(f);
    fputs("{bad json", f);
    fclose(f);
    CHECK_MSG(chat_template_of(g_dir, why, sizeof why) == -1 && strstr(why, "is not valid JSON (line 1"), "%s", why);
    remove(cfg);
    CHECK(chat_template_of(g_dir, why, sizeof why) == -1 && strstr(why, "there is no ") &&
          strstr(why, "tokenizer_config.json"));
    tokenizer_ids_free(&ids);
    tokenizer_ids_free(&fl);
    tokenizer_free(t);
}

int main(void) {
    char *tmp = fixture_tmpdir();
    snprintf(g_dir, sizeof g_dir, "%s", tmp);
    free(tmp);
    test_errors();
    test_render_rules();
    test_prompt_rules();
    test_reference();
    test_prompt_reference();
    fixture_rm_rf(g_dir);
    TEST_END();
}
