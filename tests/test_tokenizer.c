/* tests/test_tokenizer.c — the byte-level tokenizer, the Hugging Face BPE
 * tokenizer on a hand-made tokenizer.json (tests/fixtures/tokenizer-mini.json)
 * under both pre-tokenizers, round trips, and malformed tokenizer.json files.
 *
 * The fixture: ids 0..255 are the 256 byte tokens in byte order (the token
 * string is the byte's GPT-2 unicode character: ' ' -> "Ġ", '\n' -> "Ċ",
 * '\t' -> "ĉ", '\r' -> "č", 0xC3 -> "Ã", 0xA9 -> "©"; so a byte's id is its
 * value). Merge r (0-based; r is its rank) gives the token it makes the next
 * id from 256 on, unless that token exists already (r 79, 81, 89):
 *
 *   r  merge       id    r  merge       id    r  merge       id
 *   0  Ġ t     ->  256   29 ca f    ->  285   58 Ġ S     ->  314
 *   1  h e     ->  257   30 caf Ã©  ->  286   59 Ġ ,     ->  315
 *   2  Ġt he   ->  258   31 d o     ->  287   60 , Ġ     ->  316
 *   3  i n     ->  259   32 do n    ->  288   61 ? !     ->  317
 *   4  Ġ a     ->  260   33 Ġ don   ->  289   62 Ġ .     ->  318
 *   5  e r     ->  261   34 Ġ h     ->  290   63 . .     ->  319
 *   6  o n     ->  262   35 Ġh e    ->  291   64 .. .    ->  320
 *   7  Ġ c     ->  263   36 Ġhe ll  ->  292   65 Ġ ...   ->  321
 *   8  a t     ->  264   37 Ġhell o ->  293   66 ĉ ĉ     ->  322
 *   9  Ġc at   ->  265   38 H e     ->  294   67 č Ċ     ->  323
 *   10 i s     ->  266   39 He ll   ->  295   68 Ġ Ċ     ->  324
 *   11 Ġ is    ->  267   40 Hell o  ->  296   69 s t     ->  325
 *   12 ' s     ->  268   41 Ġ w     ->  297   70 Ġ st    ->  326
 *   13 ' t     ->  269   42 o r     ->  298   71 Ġ re    ->  327
 *   14 l l     ->  270   43 Ġw or   ->  299   72 e d     ->  328
 *   15 ' ll    ->  271   44 l d     ->  300   73 Ġ ed    ->  329
 *   16 Ġ 1     ->  272   45 Ġwor ld ->  301   74 a n     ->  330
 *   17 1 2     ->  273   46 i t     ->  302   75 Ġ an    ->  331
 *   18 12 3    ->  274   47 Ġ it    ->  303   76 an d    ->  332
 *   19 4 5     ->  275   48 Ġ (     ->  304   77 n d     ->  333
 *   20 Ġ1 2    ->  276   49 Ġ( !    ->  305   78 Ġa nd   ->  334
 *   21 Ċ Ċ     ->  277   50 Ġ T     ->  306   79 Ġ and   ->  334
 *   22 Ġ Ġ     ->  278   51 Ġ R     ->  307   80 Ġ ĠĠ    ->  335
 *   23 ĠĠ ĠĠ   ->  279   52 r e     ->  308   81 ĠĠ Ġ    ->  335
 *   24 ! !     ->  280   53 ' re    ->  309   82 w or    ->  336
 *   25 !! !    ->  281   54 v e     ->  310   83 wor ld  ->  337
 *   26 . Ċ     ->  282   55 ' ve    ->  311   84 o k     ->  338
 *   27 Ã ©     ->  283   56 ' m     ->  312   85 ' S     ->  339
 *   28 c a     ->  284   57 ' d     ->  313   86 ĉ x     ->  340
 *                                             87 'S at   ->  341
 *                                             88 i â     ->  342
 *                                             89 Ġ a     ->  260
 *
 * Merge 89 repeats merge 4: as in Hugging Face (a map filled in rank order),
 * the later rank wins, so (Ġ, a) has rank 89. "â" is 0xE2, the first byte of
 * the curly quotes U+201C/U+201D. "Ġzz" = 343 is in the vocab but made by no
 * merge; the added tokens are <|begin_of_text|> = 344 and <|end_of_text|> =
 * 345. The fixture's pre-tokenizer is LLaMA-3's (Sequence[Split(regex),
 * ByteLevel]); the GPT-2 variant swaps in ByteLevel(use_regex=true). Every expected id list below was derived by
 * hand as the comments show, and agrees with Hugging Face tokenizers 0.23.
 */
#include "core/base/common.h"
#include "core/tokenizer.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIXTURE "tests/fixtures/tokenizer-mini.json"
#define MAXIDS 16

typedef struct expect {
    const char *text;
    uint32_t ids[MAXIDS];
    int n;
} expect;

/* LLaMA-3 pre-tokenizer. */
static const expect k_llama3[] = {
    /* "Hello": H e l l o -> (l,l) r14 -> H e ll o -> (H,e) r38 -> He ll o -> r39 -> Hell o -> r40 -> Hello.
     * " world": Ġ w o r l d -> (Ġ,w) r41 -> (o,r) r42 -> (Ġw,or) r43 -> (l,d) r44 -> (Ġwor,ld) r45. */
    {"Hello world", {296, 301}, 2},
    /* Ġ t h e -> Ġt(r0) -> he(r1) -> Ġthe(r2); Ġ c a t -> Ġc(r7) -> at(r8) -> Ġcat(r9). */
    {" the cat", {258, 265}, 2},
    /* contractions are their own pre-token: "it" (i t -> r46) + "'s" (r12) */
    {"it's", {302, 268}, 2},
    /* (?i:...) makes "'S" one pre-token, which merge r85 joins; GPT-2 differs */
    {"IT'S", {73, 84, 339}, 3},
    /* ...and ends it there: "'S" | "at" (without the contraction, [^\r\n\p{L}\p{N}]?\p{L}+
     * would take "'Sat" whole and merge r87 would make 341) */
    {"'Sat", {339, 264}, 2},
    {"'sat", {268, 264}, 2},
    /* "don" + "'t": d o n -> (o,n) r6 first -> d on (no merge) ; "'t" r13 */
    {"don't", {100, 262, 269}, 3},
    {"I'll", {73, 271}, 2},      /* "I" + "'ll" (l l r14, then ' ll r15) */
    {"they've", {116, 257, 121, 311}, 4}, /* t he y + 've (v e r54, ' ve r55) */
    {"we'RE", {119, 101, 39, 82, 69}, 5}, /* "'RE" is one pre-token but no merge covers it */
    /* "'s" then "teve"... no: "'s" matches first, then "teve" is letters: the regex's quirk */
    {"she's 'steve", {115, 257, 268, 32, 39, 325, 101, 310}, 8},
    /* " 12345": a space before digits stands alone; digits go in groups of at most 3:
     * " " | "123" (1 2 -> r17, 12 3 -> r18) | "45" (r19). */
    {" 12345", {32, 274, 275}, 3},
    /* "1245" -> "124" | "5": 1 2 4 -> 12 4 ; the GPT-2 regex keeps 1245 whole (12 45) */
    {"1245", {273, 52, 53}, 3},
    {"1234567", {274, 275, 54, 55}, 4}, /* 123 | 456 -> 45 6 | 7 */
    /* \s*[\r\n]+ takes both newlines: Ċ Ċ -> r21 */
    {"a\n\nb", {97, 277, 98}, 3},
    /* punctuation takes trailing newlines: ".\n" -> r26 */
    {"x.\nY", {120, 282, 89}, 3},
    /* " \n" (up to the last newline, r68), then " there" = Ġthe(r0,r1,r2) re(r52) */
    {"hi \n there", {104, 105, 324, 258, 308}, 5},
    /* \s+(?!\S) leaves the last space to the word: "  " (r22) + " b" */
    {"a   b", {97, 278, 32, 98}, 4},
    /* trailing spaces stay one pre-token: Ġ Ġ Ġ Ġ -> ĠĠ Ġ Ġ (leftmost r22) -> ĠĠ ĠĠ (r22 beats r81) -> r23 */
    {"a    ", {97, 279}, 2},
    {"a   ", {97, 335}, 2}, /* Ġ Ġ Ġ -> ĠĠ Ġ -> (ĠĠ,Ġ) r81 */
    /* [^\r\n\p{L}\p{N}]?\p{L}+ lets a tab lead a word: "\t" | "\tx" (r86) */
    {"\t\tx", {9, 340}, 2},
    {"x\t\t", {120, 322}, 2},          /* trailing tabs: ĉ ĉ r66 */
    {"a\r\nb", {97, 323, 98}, 3},      /* \r\n one pre-token: r67 */
    {"wow!!!", {119, 111, 119, 281}, 4}, /* ! ! ! -> !! ! (leftmost) -> !!! */
    /* " ?[^\s\p{L}\p{N}]+": "Ġ(!?)" -> Ġ( (r48) -> Ġ(! (r49), ? and ) stay */
    {" (!?)", {305, 63, 41}, 3},
    /* "Hi" "," " the" " end" "...": Ġ e n d -> n d r77 (no Ġe); . . . -> .. . -> ... */
    {"Hi, the end...", {72, 105, 44, 258, 32, 101, 333, 320}, 8},
    /* Ġ a n d: (Ġ,a) has rank 89 (the repeat wins), so a n (r74) first -> Ġ an d -> Ġan (r75) d;
     * (with the first rank it would be Ġa(r4) nd(r77) -> Ġand(r78) = 334) */
    {" and", {331, 100}, 2},
    {" at", {32, 264}, 2},  /* at (r8) before (Ġ,a) (r89); "Ġ at" is no merge */
    {"and", {332}, 1},      /* a n d -> an(r74) d -> and(r76) */
    {"stand", {325, 332}, 2}, /* st(r69) a n d -> st an d -> st and */
    /* é is C3 A9 = "Ã©": Ã © r27 first, then ca(r28), caf(r29), cafÃ©(r30) */
    {"caf\xc3\xa9", {286}, 1},
    /* Ġ c a f Ã © -> Ġc (r7) beats ca (r28), and "Ġc a" is no merge */
    {" caf\xc3\xa9", {263, 97, 102, 283}, 4},
    /* curly quotes (U+201C/U+201D, E2 80 9C/9D) are punctuation: "“hi" | "”" */
    {"\xe2\x80\x9chi\xe2\x80\x9d", {226, 128, 156, 104, 105, 226, 128, 157}, 8},
    /* "hi" | "”." : were ” a letter, "hi”" would be one pre-token and (i, â) (r88) would merge */
    {"hi\xe2\x80\x9d.", {104, 105, 226, 128, 157, 46}, 6},
    {" zz", {32, 122, 122}, 3}, /* Ġzz is in the vocab but no merge makes it */
    {"", {0}, 0},
};

/* GPT-2 pre-tokenizer (ByteLevel with use_regex): only what differs, plus a few shared. */
static const expect k_gpt2[] = {
    {"Hello world", {296, 301}, 2},
    {"IT'S", {73, 84, 39, 83}, 4},          /* case-sensitive: "IT" "'" "S" */
    {"'Sat", {39, 83, 264}, 3},             /* "'" "Sat" */
    {"it's", {302, 268}, 2},
    /* " 12345" is one pre-token: Ġ1 (r16) 2 3 4 5 -> 45 (r19) -> Ġ12 (r20) 3 45 */
    {" 12345", {276, 51, 275}, 3},
    {"1245", {273, 275}, 2},               /* \p{N}+ keeps 1245 whole: 12 45 */
    {"a\n\nb", {97, 10, 10, 98}, 4},       /* \s+(?!\S) then \s+: one newline each */
    {"x.\nY", {120, 46, 10, 89}, 4},
    {"a\r\nb", {97, 13, 10, 98}, 4},
    {"\t\tx", {9, 9, 120}, 3},             /* only a space may lead a word */
    {"a   b", {97, 278, 32, 98}, 4},
    {"a    ", {97, 279}, 2},
    {" (!?)", {305, 63, 41}, 3},
    {"she's 'steve", {115, 257, 268, 32, 39, 325, 101, 310}, 8},
};

static int ids_equal(const tokenizer_ids *got, const expect *e) {
    if ((int)got->n != e->n) return 0;
    for (int i = 0; i < e->n; i++)
        if (got->v[i] != e->ids[i]) return 0;
    return 1;
}

static void print_ids(const char *what, const uint32_t *v, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %u", v[i]);
    fputc('\n', stderr);
}

static void check_table(tt_tokenizer *t, const expect *tab, size_t n, const char *name) {
    tokenizer_ids ids = {0};
    for (size_t k = 0; k < n; k++) {
        ids.n = 0;
        tokenizer_encode(t, tab[k].text, strlen(tab[k].text), &ids);
        if (!ids_equal(&ids, &tab[k])) {
            CHECK_MSG(0, "%s: encoding \"%s\"", name, tab[k].text);
            print_ids("got", ids.v, ids.n);
            print_ids("expected", tab[k].ids, (size_t)tab[k].n);
        }
        char *back;
        size_t blen;
        CHECK(tokenizer_decode(t, ids.v, ids.n, &back, &blen) == 0);
        CHECK_MSG(back && blen == strlen(tab[k].text) && memcmp(back, tab[k].text, blen) == 0, "%s: decode \"%s\"",
                  name, tab[k].text);
        free(back);
    }
    tokenizer_ids_free(&ids);
}

/* decode(encode(s)) == s */
static int round_trips(tt_tokenizer *t, const char *s, size_t n) {
    tokenizer_ids ids = {0};
    tokenizer_encode(t, s, n, &ids);
    char *back;
    size_t blen;
    int ok = tokenizer_decode(t, ids.v, ids.n, &back, &blen) == 0 && blen == n && memcmp(back, s, n) == 0;
    for (size_t i = 0; i < ids.n; i++) ok = ok && ids.v[i] < tokenizer_vocab_size(t);
    free(back);
    tokenizer_ids_free(&ids);
    return ok;
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) { /* xorshift64* */
    g_rng ^= g_rng >> 12; g_rng ^= g_rng << 25; g_rng ^= g_rng >> 27;
    return (uint32_t)((g_rng * 0x2545F4914F6CDD1Dull) >> 32);
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Random text: ASCII words, spaces/newlines/tabs, digits, punctuation,
 * Latin-1 / CJK / emoji code points, and (when raw) arbitrary bytes. */
static size_t random_text(char *buf, size_t cap, int raw) {
    static const char pieces[][8] = {"the", " ", "  ", "\n", "\r\n", "\t", "'s", "'LL", "123", "4567", "!!", "...",
                                     " (", "?!", "cat", "Hello", " world", "\n\n", " \n ", ","};
    size_t n = 0, len = 1 + rnd() % (cap / 8);
    while (n + 8 < len) {
        uint32_t r = rnd() % 10;
        if (r < 5) {
            const char *p = pieces[rnd() % (sizeof pieces / sizeof pieces[0])];
            memcpy(buf + n, p, strlen(p));
            n += strlen(p);
        } else if (r < 8) {
            static const uint32_t ranges[][2] = {{0x20, 0x7E}, {0xA0, 0xFF}, {0x370, 0x3FF}, {0x2000, 0x206F},
                                                 {0x3000, 0x30FF}, {0x4E00, 0x4FFF}, {0x1F300, 0x1F64F}, {0x0, 0x1F}};
            const uint32_t *rg = ranges[rnd() % 8];
            n += put_utf8(buf + n, rg[0] + rnd() % (rg[1] - rg[0] + 1));
        } else if (raw) {
            buf[n++] = (char)(rnd() & 0xFF);
        } else {
            buf[n++] = 'a' + (char)(rnd() % 26);
        }
    }
    return n;
}

static char g_dir[512];

/* Writes root (a modified copy of the fixture) to DIR/name; returns the path (static buffer). */
static const char *write_json(json_t *root, const char *name) {
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    if (json_dump_file(root, path, JSON_COMPACT) != 0) { perror(path); exit(1); }
    return path;
}

static const char *write_text(const char *text, const char *name) {
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    fixture_spit(path, text, strlen(text));
    return path;
}

static json_t *load_fixture(void) {
    json_error_t je;
    json_t *root = json_load_file(FIXTURE, 0, &je);
    if (!root) {
        fprintf(stderr, "cannot load %s (run the test from the repository root): %s\n", FIXTURE, je.text);
        exit(1);
    }
    return root;
}

/* Opens path and expects failure rc with the path and `needle` in the message. */
static void expect_open_error(const char *path, int rc_expected, const char *needle) {
    tt_tokenizer *t = NULL;
    int rc = tokenizer_open_hf(path, &t);
    CHECK_MSG(rc == rc_expected, "%s: rc %d, expected %d (%s)", needle, rc, rc_expected, tt_lasterr());
    CHECK(t == NULL);
    CHECK_MSG(strstr(tt_lasterr(), path) != NULL, "message lacks the file name: %s", tt_lasterr());
    CHECK_MSG(strstr(tt_lasterr(), needle) != NULL, "message lacks '%s': %s", needle, tt_lasterr());
    tokenizer_free(t);
}

static void test_bytes(void) {
    tt_tokenizer *t = tokenizer_open_bytes();
    CHECK_EQ_INT(tokenizer_vocab_size(t), 257);
    CHECK_EQ_INT(tokenizer_eot_id(t), 256);
    CHECK(tokenizer_kind_of(t) == TOKENIZER_BYTES);
    char all[256];
    for (int i = 0; i < 256; i++) all[i] = (char)i;
    tokenizer_ids ids = {0};
    tokenizer_encode(t, all, 256, &ids);
    CHECK_EQ_INT(ids.n, 256);
    for (int i = 0; i < 256; i++) CHECK_EQ_INT(ids.v[i], i);
    CHECK(round_trips(t, all, 256));
    /* "<|endoftext|>" is text unless parse_special is on */
    const char *s = "a<|endoftext|>b";
    ids.n = 0;
    tokenizer_encode(t, s, strlen(s), &ids);
    CHECK_EQ_INT(ids.n, strlen(s));
    tokenizer_set_parse_special(t, 1);
    ids.n = 0;
    tokenizer_encode(t, s, strlen(s), &ids);
    CHECK_EQ_INT(ids.n, 3);
    if (ids.n == 3) { CHECK_EQ_INT(ids.v[0], 'a'); CHECK_EQ_INT(ids.v[1], 256); CHECK_EQ_INT(ids.v[2], 'b'); }
    char *back;
    size_t blen;
    CHECK(tokenizer_decode(t, ids.v, ids.n, &back, &blen) == 0 && blen == strlen(s) && memcmp(back, s, blen) == 0);
    free(back);
    uint32_t bad = 257;
    CHECK(tokenizer_decode(t, &bad, 1, &back, &blen) == -EINVAL && back == NULL);
    tokenizer_ids_free(&ids);
    tokenizer_free(t);
}

static void test_fixture(void) {
    tt_tokenizer *t;
    int rc = tokenizer_open_hf(FIXTURE, &t);
    CHECK_MSG(rc == 0, "open %s: %s", FIXTURE, tt_lasterr());
    if (rc) return;
    CHECK(tokenizer_kind_of(t) == TOKENIZER_HF_BPE);
    CHECK_EQ_INT(tokenizer_vocab_size(t), 346);
    CHECK_EQ_INT(tokenizer_eot_id(t), 345); /* <|end_of_text|> */
    size_t len;
    const char *tok = tokenizer_token(t, 258, &len);
    CHECK(tok && len == 4 && memcmp(tok, " the", 4) == 0);
    tok = tokenizer_token(t, 283, &len);
    CHECK(tok && len == 2 && memcmp(tok, "\xc3\xa9", 2) == 0);
    tok = tokenizer_token(t, 344, &len);
    CHECK(tok && len == 17 && memcmp(tok, "<|begin_of_text|>", 17) == 0);
    CHECK(tokenizer_token(t, 346, &len) == NULL);
    check_table(t, k_llama3, sizeof k_llama3 / sizeof k_llama3[0], "llama3");

    /* added tokens: plain text by default, their ids with parse_special */
    tokenizer_ids ids = {0};
    const char *s = "a<|begin_of_text|>b<|end_of_text|>";
    tokenizer_encode(t, s, strlen(s), &ids);
    CHECK(ids.n > 4);
    tokenizer_set_parse_special(t, 1);
    ids.n = 0;
    tokenizer_encode(t, s, strlen(s), &ids);
    static const expect sp = {"", {97, 344, 98, 345}, 4};
    CHECK_MSG(ids_equal(&ids, &sp), "parse_special");
    tokenizer_set_parse_special(t, 0);

    /* round trips: random valid UTF-8, random bytes (invalid UTF-8 too) */
    char buf[4096];
    for (int k = 0; k < 300; k++) {
        size_t n = random_text(buf, sizeof buf, k % 2);
        if (!round_trips(t, buf, n)) { CHECK_MSG(0, "round trip of random text %d (%zu bytes)", k, n); break; }
    }
    for (int k = 0; k < 100; k++) {
        size_t n = rnd() % 64;
        for (size_t i = 0; i < n; i++) buf[i] = (char)rnd();
        if (!round_trips(t, buf, n)) { CHECK_MSG(0, "round trip of random bytes %d", k); break; }
    }
    /* one long pre-token (a 100k space run, a 100k letter run) goes through the heap BPE */
    size_t big = 100000;
    char *b = malloc(big);
    memset(b, ' ', big);
    CHECK(round_trips(t, b, big));
    ids.n = 0;
    tokenizer_encode(t, b, big, &ids);
    CHECK_EQ_INT(ids.n, big / 4); /* Ġ x 100000 -> pairs -> quads: 25000 x ĠĠĠĠ */
    CHECK(ids.n > 0 && ids.v[0] == 279 && ids.v[ids.n - 1] == 279);
    memset(b, 'l', big);
    ids.n = 0;
    tokenizer_encode(t, b, big, &ids);
    CHECK_EQ_INT(ids.n, big / 2); /* l l -> ll, 50000 times */
    free(b);
    uint32_t bad = 346;
    char *back;
    CHECK(tokenizer_decode(t, &bad, 1, &back, &len) == -EINVAL && strstr(tt_lasterr(), "346"));
    tokenizer_ids_free(&ids);
    tokenizer_free(t);
}

static void test_variants(void) {
    /* GPT-2 pre-tokenizer */
    json_t *root = load_fixture();
    json_object_set_new(root, "pre_tokenizer", json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space",
                                                         0, "trim_offsets", 1, "use_regex", 1));
    tt_tokenizer *t;
    const char *p = write_json(root, "gpt2.json");
    int rc = tokenizer_open_hf(p, &t);
    CHECK_MSG(rc == 0, "open gpt2 variant: %s", tt_lasterr());
    if (rc == 0) {
        check_table(t, k_gpt2, sizeof k_gpt2 / sizeof k_gpt2[0], "gpt2");
        char buf[4096];
        for (int k = 0; k < 200; k++) {
            size_t n = random_text(buf, sizeof buf, k % 2);
            if (!round_trips(t, buf, n)) { CHECK_MSG(0, "gpt2 round trip %d", k); break; }
        }
        tokenizer_free(t);
    }
    json_decref(root);

    /* merges as ["a", "b"] pairs (the newer tokenizers format): same results */
    root = load_fixture();
    json_t *merges = json_object_get(json_object_get(root, "model"), "merges"), *pairs = json_array();
    for (size_t i = 0; i < json_array_size(merges); i++) {
        char *m = strdup(json_string_value(json_array_get(merges, i)));
        char *sp = strchr(m, ' ');
        *sp = '\0';
        json_array_append_new(pairs, json_pack("[s,s]", m, sp + 1));
        free(m);
    }
    json_object_set_new(json_object_get(root, "model"), "merges", pairs);
    p = write_json(root, "pairs.json");
    rc = tokenizer_open_hf(p, &t);
    CHECK_MSG(rc == 0, "open pairs variant: %s", tt_lasterr());
    if (rc == 0) {
        check_table(t, k_llama3, sizeof k_llama3 / sizeof k_llama3[0], "pairs");
        tokenizer_free(t);
    }
    json_decref(root);

    /* ignore_merges (LLaMA-3 sets it): a pre-token that is in the vocab is one token */
    root = load_fixture();
    json_object_set_new(json_object_get(root, "model"), "ignore_merges", json_true());
    p = write_json(root, "ignore.json");
    rc = tokenizer_open_hf(p, &t);
    CHECK_MSG(rc == 0, "open ignore_merges variant: %s", tt_lasterr());
    if (rc == 0) {
        static const expect im[] = {
            {" zz", {343}, 1},           /* "Ġzz" is in the vocab */
            {"don't", {288, 269}, 2},    /* "don" is in the vocab (BPE alone gives d on) */
            {" the cat", {258, 265}, 2}, /* unchanged */
        };
        check_table(t, im, 3, "ignore_merges");
        tokenizer_free(t);
    }
    json_decref(root);

    /* a directory holding tokenizer.json opens too */
    char sub[600];
    snprintf(sub, sizeof sub, "%s/model", g_dir);
    mkdir(sub, 0755);
    root = load_fixture();
    write_json(root, "model/tokenizer.json");
    json_decref(root);
    rc = tokenizer_open_hf(sub, &t);
    CHECK_MSG(rc == 0, "open a directory with tokenizer.json: %s", tt_lasterr());
    if (rc == 0) tokenizer_free(t);
    rc = tokenizer_open("bytes", &t);
    CHECK(rc == 0 && tokenizer_kind_of(t) == TOKENIZER_BYTES);
    tokenizer_free(t);
}

/* Applies one change to the fixture, writes it, expects -EINVAL naming the file and `needle`. */
typedef void (*mutate_fn)(json_t *root);
static void m_no_model(json_t *r) { json_object_del(r, "model"); }
static void m_model_string(json_t *r) { json_object_set_new(r, "model", json_string("BPE")); }
static void m_wordpiece(json_t *r) { json_object_set_new(json_object_get(r, "model"), "type", json_string("WordPiece")); }
static void m_merges_obj(json_t *r) { json_object_set_new(json_object_get(r, "model"), "merges", json_object()); }
static void m_no_merges(json_t *r) { json_object_del(json_object_get(r, "model"), "merges"); }
static void m_no_vocab(json_t *r) { json_object_del(json_object_get(r, "model"), "vocab"); }
static void m_id_range(json_t *r) {
    json_object_set_new(json_object_get(json_object_get(r, "model"), "vocab"), "ok", json_integer(100000));
}
static void m_id_negative(json_t *r) {
    json_object_set_new(json_object_get(json_object_get(r, "model"), "vocab"), "ok", json_integer(-1));
}
static void m_id_string(json_t *r) {
    json_object_set_new(json_object_get(json_object_get(r, "model"), "vocab"), "ok", json_string("338"));
}
static void m_id_dup(json_t *r) {
    json_object_set_new(json_object_get(json_object_get(r, "model"), "vocab"), "ok", json_integer(337));
}
static void m_merge_unknown(json_t *r) {
    json_array_append_new(json_object_get(json_object_get(r, "model"), "merges"), json_string("q zzz"));
}
static void m_merge_result(json_t *r) { /* "a b" exists as tokens but "ab" is not in the vocab */
    json_array_append_new(json_object_get(json_object_get(r, "model"), "merges"), json_string("a b"));
}
static void m_merge_shape(json_t *r) {
    json_array_append_new(json_object_get(json_object_get(r, "model"), "merges"), json_integer(7));
}
static void m_no_byte(json_t *r) { json_object_del(json_object_get(json_object_get(r, "model"), "vocab"), "~"); }
static void m_no_eot(json_t *r) { json_object_set_new(r, "added_tokens", json_array()); }
static void m_added_bad(json_t *r) {
    json_array_append_new(json_object_get(r, "added_tokens"), json_pack("{s:s}", "content", "<x>"));
}
static void m_normalizer(json_t *r) { json_object_set_new(r, "normalizer", json_pack("{s:s}", "type", "NFC")); }
static void m_no_pre(json_t *r) { json_object_del(r, "pre_tokenizer"); }
static void m_regex(json_t *r) {
    json_t *split = json_array_get(json_object_get(json_object_get(r, "pre_tokenizer"), "pretokenizers"), 0);
    json_object_set_new(json_object_get(split, "pattern"), "Regex", json_string("\\w+|\\s+"));
}
static void m_no_bytelevel(json_t *r) {
    json_array_remove(json_object_get(json_object_get(r, "pre_tokenizer"), "pretokenizers"), 1);
}
static void m_prefix_space(json_t *r) {
    json_object_set_new(r, "pre_tokenizer", json_pack("{s:s,s:b}", "type", "ByteLevel", "add_prefix_space", 1));
}
static void m_suffix(json_t *r) {
    json_object_set_new(json_object_get(r, "model"), "end_of_word_suffix", json_string("</w>"));
}
static void m_top_array(json_t *r) { (void)r; }

/* ---- SentencePiece-style BPE (LLaMA-2) ----------------------------------------------
 * A hand-made tokenizer.json: <unk> 0, <s> 1, </s> 2, the byte tokens <0x00>..<0xFF> 3..258,
 * then "▁" 259, "a" 260, "b" 261, "▁a" 262, "ab" 263, "▁ab" 264, "c" 265, "ca" 266; merges in rank
 * order: (▁ a) 0, (a b) 1, (▁a b) 2, (c a) 3. Expected ids, derived by hand:
 *   "ab"   -> ▁ab: ▁ a b, (▁ a) rank 0 first -> ▁a b -> (▁a b) -> [264]
 *   "a b"  -> ▁a▁b: ▁ a ▁ b -> ▁a ▁ b, no more pairs -> [262, 259, 261]
 *   "cab"  -> ▁cab: pairs (▁ c) none, (c a) 3, (a b) 1: (a b) first -> ▁ c ab -> [259, 265, 263]
 *   "é"    -> ▁é: é is not in the vocab, its bytes C3 A9 are -> [259, 3 + 0xC3, 3 + 0xA9]
 *   "<s>a" -> with special tokens parsed: <s>, then the segment "a" gets its own ▁ -> [1, 262]
 * and decoding drops the one space the encoder prepended. */
static json_t *sp_fixture(void) {
    json_t *vocab = json_object();
    json_object_set_new(vocab, "<unk>", json_integer(0));
    json_object_set_new(vocab, "<s>", json_integer(1));
    json_object_set_new(vocab, "</s>", json_integer(2));
    for (int b = 0; b < 256; b++) {
        char n[8];
        snprintf(n, sizeof n, "<0x%02X>", b);
        json_object_set_new(vocab, n, json_integer(3 + b));
    }
    const char *pieces[] = {"\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a", "ab", "\xe2\x96\x81" "ab", "c", "ca"};
    for (int i = 0; i < 8; i++) json_object_set_new(vocab, pieces[i], json_integer(259 + i));
    json_t *merges = json_pack("[s,s,s,s]", "\xe2\x96\x81 a", "a b", "\xe2\x96\x81" "a b", "c a");
    json_t *added = json_array();
    const char *sp[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++)
        json_array_append_new(added, json_pack("{s:i,s:s,s:b}", "id", i, "content", sp[i], "special", 1));
    json_t *norm = json_pack("{s:s,s:[{s:s,s:s},{s:s,s:{s:s},s:s}]}", "type", "Sequence", "normalizers", "type",
                             "Prepend", "prepend", "\xe2\x96\x81", "type", "Replace", "pattern", "String", " ",
                             "content", "\xe2\x96\x81");
    return json_pack("{s:o,s:o,s:n,s:{s:s,s:o,s:o,s:s,s:b,s:b}}", "added_tokens", added, "normalizer", norm,
                     "pre_tokenizer", "model", "type", "BPE", "vocab", vocab, "merges", merges, "unk_token", "<unk>",
                     "fuse_unk", 1, "byte_fallback", 1);
}

static void test_sentencepiece(void) {
    json_t *root = sp_fixture();
    tt_tokenizer *t;
    CHECK_MSG(tokenizer_open_hf(write_json(root, "sp.json"), &t) == 0, "%s", tt_lasterr());
    static const expect tab[] = {
        {"ab", {264}, 1},
        {"a b", {262, 259, 261}, 3},
        {"cab", {259, 265, 263}, 3},
        {"\xc3\xa9", {259, 3 + 0xC3, 3 + 0xA9}, 3},
        {" a", {259, 262}, 2},
    };
    check_table(t, tab, sizeof tab / sizeof *tab, "sentencepiece");
    CHECK_EQ_INT(tokenizer_eot_id(t), 2);
    tokenizer_ids ids = {0};
    tokenizer_set_parse_special(t, 1);
    tokenizer_encode(t, "<s>a", 4, &ids);
    CHECK_MSG(ids.n == 2 && ids.v[0] == 1 && ids.v[1] == 262, "<s>a: %zu ids, %u %u", ids.n, ids.v[0],
              ids.n > 1 ? ids.v[1] : 0);
    tokenizer_free(t);
    /* Metaspace(prepend_scheme "first"): only the text's first segment gets the ▁ */
    json_object_set_new(root, "normalizer", json_null());
    json_object_set_new(root, "pre_tokenizer", json_pack("{s:s,s:s,s:s,s:b}", "type", "Metaspace", "replacement",
                                                         "\xe2\x96\x81", "prepend_scheme", "first", "split", 0));
    CHECK_MSG(tokenizer_open_hf(write_json(root, "sp-first.json"), &t) == 0, "%s", tt_lasterr());
    tokenizer_set_parse_special(t, 1);
    ids.n = 0;
    tokenizer_encode(t, "a<s>a", 5, &ids);
    CHECK_MSG(ids.n == 3 && ids.v[0] == 262 && ids.v[1] == 1 && ids.v[2] == 260, "a<s>a with prepend first");
    tokenizer_free(t);
    /* no byte token for 0xC3: é becomes <unk>, and two such characters in a row one fused <unk> */
    json_object_del(json_object_get(json_object_get(root, "model"), "vocab"), "<0xC3>");
    json_object_set_new(root, "pre_tokenizer", json_null());
    json_object_set_new(root, "normalizer", json_pack("{s:s,s:[{s:s,s:{s:s},s:s}]}", "type", "Sequence",
                                                      "normalizers", "type", "Replace", "pattern", "String", " ",
                                                      "content", "\xe2\x96\x81"));
    CHECK_MSG(tokenizer_open_hf(write_json(root, "sp-unk.json"), &t) == 0, "%s", tt_lasterr());
    ids.n = 0;
    tokenizer_encode(t, "a\xc3\xa9\xc3\xa8" "b", 6, &ids); /* no prepend (no Prepend step): a <unk> b */
    CHECK_MSG(ids.n == 3 && ids.v[0] == 260 && ids.v[1] == 0 && ids.v[2] == 261, "unk fallback: %zu ids", ids.n);
    tokenizer_free(t);
    /* what is not supported is refused, naming the field */
    json_object_set_new(root, "normalizer", json_pack("{s:s}", "type", "NFKC"));
    expect_open_error(write_json(root, "sp-nfkc.json"), -EINVAL, "normalizer is not a Sequence");
    json_object_set_new(root, "normalizer", json_null());
    json_object_set_new(root, "pre_tokenizer", json_pack("{s:s,s:s,s:b}", "type", "Metaspace", "replacement",
                                                         "\xe2\x96\x81", "split", 1));
    expect_open_error(write_json(root, "sp-split.json"), -EINVAL, "split true");
    tokenizer_ids_free(&ids);
    json_decref(root);
}

/* The real LLaMA-2 and LLaMA-3.1 tokenizer.json files of ../shared/data/tokenizers against ids that Hugging
 * Face tokenizers 0.23.3 produced (tests/fixtures/hf-reference-ids.jsonl: encode(text,
 * add_special_tokens=False) of every line of tests/fixtures/multilingual.txt and unicode-edges.txt; 20+
 * scripts, non-Latin digits, combining and vowel marks, emoji sequences, unassigned and private-use code
 * points, characters that need LLaMA-2's byte fallback). Skipped when ../shared is absent. */
static void test_reference(void) {
    static const char *dir = "../shared/data/tokenizers";
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        fprintf(stderr, "note: %s is absent: the real-tokenizer reference check is skipped\n", dir);
        return;
    }
    FILE *f = fopen("tests/fixtures/hf-reference-ids.jsonl", "r");
    CHECK(f != NULL);
    if (!f) return;
    tt_tokenizer *tk[2] = {NULL, NULL};
    const char *names[2] = {"llama2", "llama3.1"};
    for (int k = 0; k < 2; k++) {
        char p[300];
        snprintf(p, sizeof p, "%s/%s/tokenizer.json", dir, names[k]);
        CHECK_MSG(tokenizer_open_hf(p, &tk[k]) == 0, "%s", tt_lasterr());
    }
    char line[65536];
    int n = 0, bad = 0;
    tokenizer_ids ids = {0};
    while (tk[0] && tk[1] && fgets(line, sizeof line, f)) {
        json_error_t je;
        json_t *r = json_loads(line, 0, &je);
        const char *name = json_string_value(json_object_get(r, "tokenizer"));
        const json_t *text = json_object_get(r, "text"), *want = json_object_get(r, "ids");
        TT_ASSERT(r && name && json_is_string(text) && json_is_array(want));
        tt_tokenizer *t = tk[strcmp(name, "llama2") == 0 ? 0 : 1];
        ids.n = 0;
        tokenizer_encode(t, json_string_value(text), json_string_length(text), &ids);
        int same = ids.n == json_array_size(want);
        for (size_t i = 0; same && i < ids.n; i++) same = ids.v[i] == (uint32_t)json_integer_value(json_array_get(want, i));
        char *back = NULL;
        size_t blen = 0;
        same = same && tokenizer_decode(t, ids.v, ids.n, &back, &blen) == 0 && blen == json_string_length(text) &&
               memcmp(back, json_string_value(text), blen) == 0;
        if (!same && bad++ < 5) CHECK_MSG(0, "%s: \"%.60s\" differs from Hugging Face's ids or does not decode back", name,
                                          json_string_value(text));
        free(back);
        json_decref(r);
        n++;
    }
    fclose(f);
    CHECK_MSG(bad == 0 && n >= 100, "%d of %d reference lines differ", bad, n);
    tokenizer_ids_free(&ids);
    tokenizer_free(tk[0]);
    tokenizer_free(tk[1]);
}

static void test_malformed(void) {
    static const struct {
        const char *name, *needle;
        mutate_fn fn;
    } cases[] = {
        {"no-model.json", "\"model\" is missing", m_no_model},
        {"model-string.json", "\"model\" is missing or not an object", m_model_string},
        {"wordpiece.json", "model.type is \"WordPiece\"", m_wordpiece},
        {"merges-object.json", "model.merges is missing or not an array", m_merges_obj},
        {"no-merges.json", "model.merges is missing or not an array", m_no_merges},
        {"no-vocab.json", "model.vocab is missing", m_no_vocab},
        {"id-range.json", "model.vocab[\"ok\"] is not an integer id", m_id_range},
        {"id-negative.json", "model.vocab[\"ok\"] is not an integer id", m_id_negative},
        {"id-string.json", "model.vocab[\"ok\"] is not an integer id", m_id_string},
        {"id-dup.json", "gives id 337 to two tokens", m_id_dup},
        {"merge-unknown.json", "uses \"zzz\", which is not in model.vocab", m_merge_unknown},
        {"merge-result.json", "makes \"ab\", which is not in model.vocab", m_merge_result},
        {"merge-shape.json", "model.merges[90] is neither", m_merge_shape},
        {"no-byte.json", "no token for byte 0x7e", m_no_byte},
        {"no-eot.json", "no end-of-text token", m_no_eot},
        {"added-bad.json", "added_tokens[2] lacks an integer \"id\"", m_added_bad},
        {"normalizer.json", "normalizer \"NFC\" is not supported", m_normalizer},
        {"no-pre.json", "pre_tokenizer is missing", m_no_pre},
        {"regex.json", "regex \"\\w+|\\s+\" is not one tiertrain implements", m_regex},
        {"no-bytelevel.json", "no ByteLevel step", m_no_bytelevel},
        {"prefix-space.json", "add_prefix_space true", m_prefix_space},
        {"suffix.json", "model.end_of_word_suffix is set", m_suffix},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *root = load_fixture();
        cases[i].fn(root);
        expect_open_error(write_json(root, cases[i].name), -EINVAL, cases[i].needle);
        json_decref(root);
    }
    (void)m_top_array;
    expect_open_error(write_text("[1, 2, 3]", "array.json"), -EINVAL, "the top level is not a JSON object");
    expect_open_error(write_text("{\"model\": {\"vocab\": ", "cut.json"), -EINVAL, "is not valid JSON");
    expect_open_error(write_text("", "empty.json"), -EINVAL, "is not valid JSON");
    char p[600];
    snprintf(p, sizeof p, "%s/nope.json", g_dir);
    expect_open_error(p, -ENOENT, "does not exist");
    snprintf(p, sizeof p, "%s/emptydir", g_dir);
    mkdir(p, 0755);
    expect_open_error(p, -EISDIR, "is a directory without a tokenizer.json");
}

int main(void) {
    char *tmp = fixture_tmpdir();
    snprintf(g_dir, sizeof g_dir, "%s", tmp);
    free(tmp);
    test_bytes();
    test_fixture();
    test_variants();
    test_malformed();
    test_sentencepiece();
    test_reference();
    fixture_rm_rf(g_dir);
    TEST_END();
}
