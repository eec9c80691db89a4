/* core/tokenizer.c — the byte-level tokenizer and Hugging Face byte-level BPE
 * (tokenizer.json) with hand-written GPT-2 / LLaMA-3 pre-tokenizers.
 *
 * Encoding a BPE text: split out added tokens (only when parse_special is on),
 * cut each remaining segment into pre-tokens with the regex stages (a match
 * function per regex, over code points decoded on the fly from UTF-8), then
 * run BPE on each pre-token's bytes: start from one symbol per byte (the id of
 * the byte's GPT-2 unicode character), repeatedly merge the adjacent pair of
 * lowest merge rank (leftmost first on ties) using a binary heap with lazy
 * invalidation — the same order Hugging Face's BPE::merge_word uses. Merge
 * lookup is an open-addressing hash table keyed by the (left id, right id)
 * pair; token strings are found through a second one keyed by the string.
 */
#include "core/tokenizer.h"

#include "core/base/common.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#define NO_TOKEN UINT32_MAX
#define MAX_IDS (1u << 28) /* sanity bound on ids in a tokenizer.json */
#define MAX_STAGES 4

enum { CLS_L, CLS_N, CLS_S, CLS_O, CLS_END };
enum { PRE_GPT2 = 1, PRE_LLAMA3 = 2 };
enum { SP_PREPEND_NEVER, SP_PREPEND_ALWAYS, SP_PREPEND_FIRST };

static const char SP_SPACE[] = "\xe2\x96\x81"; /* U+2581, SentencePiece's space */

static const char RE_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char RE_LLAMA3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ---- growable byte arena ----------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static uint32_t sbuf_add(sbuf *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->n + n + 1 > cap) cap *= 2;
        char *p = realloc(b->p, cap);
        TT_ASSERT(p);
        b->p = p;
        b->cap = cap;
    }
    TT_ASSERT(b->n + n < UINT32_MAX);
    uint32_t off = (uint32_t)b->n;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0'; /* strings in the arena stay NUL-terminated if added with their NUL */
    return off;
}

static uint64_t hash_bytes(const void *s, size_t n) { /* FNV-1a 64, then a finalizer */
    const uint8_t *p = s;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ull; }
    h ^= h >> 33; h *= 0xff51afd7ed558ccdull; h ^= h >> 33;
    return h;
}

/* ---- string -> id (open addressing, linear probing, load <= 1/2) ------------- */

typedef struct str_slot {
    uint32_t off, len, id; /* id == NO_TOKEN: empty */
} str_slot;

typedef struct strmap {
    str_slot *s;
    size_t mask;
} strmap;

static void strmap_init(strmap *m, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    m->s = tt_xmalloc(cap * sizeof *m->s);
    for (size_t i = 0; i < cap; i++) m->s[i].id = NO_TOKEN;
    m->mask = cap - 1;
}

/* The slot holding key (id != NO_TOKEN) or the empty slot where it would go. */
static str_slot *strmap_find(const strmap *m, const char *arena, const void *key, size_t len) {
    size_t i = (size_t)hash_bytes(key, len) & m->mask;
    for (;;) {
        str_slot *e = &m->s[i];
        if (e->id == NO_TOKEN || (e->len == len && memcmp(arena + e->off, key, len) == 0)) return e;
        i = (i + 1) & m->mask;
    }
}

static uint32_t strmap_get(const strmap *m, const char *arena, const void *key, size_t len) {
    return m->s ? strmap_find(m, arena, key, len)->id : NO_TOKEN;
}

/* ---- (left, right) -> (rank, merged id) --------------------------------------- */

typedef struct merge_slot {
    uint64_t key; /* UINT64_MAX: empty */
    uint32_t rank, id;
} merge_slot;

typedef struct mergemap {
    merge_slot *s;
    size_t mask;
    int shift;
} mergemap;

static void mergemap_init(mergemap *m, size_t n) {
    size_t cap = 16;
    int bits = 4;
    while (cap < 2 * n) { cap *= 2; bits++; }
    m->s = tt_xmalloc(cap * sizeof *m->s);
    for (size_t i = 0; i < cap; i++) m->s[i].key = UINT64_MAX;
    m->mask = cap - 1;
    m->shift = 64 - bits;
}

static merge_slot *mergemap_find(const mergemap *m, uint32_t a, uint32_t b) {
    uint64_t key = (uint64_t)a << 32 | b;
    size_t i = (size_t)((key * 0x9e3779b97f4a7c15ull) >> m->shift);
    for (;;) {
        merge_slot *e = &m->s[i];
        if (e->key == key || e->key == UINT64_MAX) return e;
        i = (i + 1) & m->mask;
    }
}

/* ---- the handle ------------------------------------------------------------- */

typedef struct added_tok {
    uint32_t off, len, id; /* content in t->strs */
} added_tok;

typedef struct heap_ent {
    uint32_t rank, l, r, a, b, id; /* merge symbols l,r (ids a,b) into id */
} heap_ent;

struct tt_tokenizer {
    tokenizer_kind kind;
    char *name;
    uint32_t vocab, eot;
    int parse_special;
    /* decoding: bytes of token id at bytes.p + tok_off[id], tok_len[id] (NO_TOKEN: none) */
    uint32_t *tok_off, *tok_len;
    sbuf bytes;
    /* added tokens, longest first, and a bitmap of their first bytes */
    added_tok *added;
    uint32_t n_added;
    uint8_t first_byte[32];
    /* BPE */
    sbuf strs;           /* token strings (GPT-2 unicode form) and added contents */
    strmap vocab_map;    /* token string -> id */
    mergemap merges;
    uint32_t byte_id[256];
    int n_stages, stages[MAX_STAGES];
    int ignore_merges;
    /* SentencePiece-style BPE (LLaMA-2): spaces become U+2581, prepended to each segment (SP_PREPEND_ALWAYS,
     * the Prepend normalizer and Metaspace "always") or to the text's first (SP_PREPEND_FIRST); characters not
     * in the vocab fall back to their bytes' <0xXX> tokens, else to unk (consecutive ones fused) */
    int sp, sp_prepend;
    uint32_t fallback_id[256]; /* id of "<0xXX>", NO_TOKEN: none */
    uint32_t unk;              /* NO_TOKEN: none */
    int fuse_unk;
    /* scratch for one pre-token (encode is not reentrant) */
    uint32_t *sym, *nxt, *prv;
    heap_ent *heap;
    size_t sym_cap, heap_cap;
    sbuf mapped;
};

static uint32_t g_b2u[256];  /* GPT-2 bytes_to_unicode */
static int16_t g_u2b[324];   /* its inverse (code points 0..323), -1: none */
static uint8_t g_ascii_cls[128];

static void tables_init(void) {
    int n = 0;
    for (int i = 0; i < 324; i++) g_u2b[i] = -1;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        g_b2u[b] = keep ? (uint32_t)b : (uint32_t)(256 + n++);
        g_u2b[g_b2u[b]] = (int16_t)b;
    }
    TT_ASSERT(n == 68);
    for (int c = 0; c < 128; c++) {
        uint8_t k = CLS_O;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) k = CLS_L;
        else if (c >= '0' && c <= '9') k = CLS_N;
        else if (c == ' ' || (c >= '\t' && c <= '\r')) k = CLS_S;
        g_ascii_cls[c] = k;
    }
}

static size_t utf8_put(char *o, uint32_t cp) {
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

/* Decodes one code point of s[0..n) (n >= 1) strictly: returns its length and
 * sets *cp, or returns 1 with *cp = NO_TOKEN for a byte that does not start a
 * valid, shortest-form, non-surrogate sequence. */
static size_t utf8_get(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    size_t len;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; min = 0x10000; }
    else { *cp = NO_TOKEN; return 1; }
    if (len > n) { *cp = NO_TOKEN; return 1; }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) { *cp = NO_TOKEN; return 1; }
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) { *cp = NO_TOKEN; return 1; }
    *cp = v;
    return len;
}

/* ---- Unicode classes -------------------------------------------------------- */

/* \s: Unicode White_Space (the property Oniguruma's \s matches; it has not
 * changed since Unicode 6). */
static int is_white_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

/* \p{L} (categories Lu Ll Lt Lm Lo), \p{N} (Nd Nl No), \s, or neither — from
 * utf8proc's Unicode tables (the general categories Hugging Face's Oniguruma
 * classes use; marks, unassigned code points and symbols are "other"). */
static int cp_class(uint32_t cp) {
    if (cp < 0x80) return g_ascii_cls[cp];
    if (cp == NO_TOKEN) return CLS_O; /* a byte of invalid UTF-8 */
    if (is_white_space(cp)) return CLS_S;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return CLS_L;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return CLS_N;
    default:
        return CLS_O;
    }
}

typedef struct cpi {
    uint32_t cp;
    uint8_t cls, len;
} cpi;

/* The code point at s[p] (p <= hi; at hi: CLS_END). */
static inline cpi cp_at(const uint8_t *s, size_t p, size_t hi) {
    cpi x;
    if (p >= hi) { x.cp = NO_TOKEN; x.cls = CLS_END; x.len = 0; return x; }
    if (s[p] < 0x80) { x.cp = s[p]; x.cls = g_ascii_cls[s[p]]; x.len = 1; return x; }
    x.len = (uint8_t)utf8_get(s + p, hi - p, &x.cp);
    x.cls = (uint8_t)cp_class(x.cp);
    return x;
}

static size_t run_of(const uint8_t *s, size_t p, size_t hi, int cls) {
    for (;;) {
        cpi x = cp_at(s, p, hi);
        if (x.cls != cls) return p;
        p += x.len;
    }
}

/* s[p] is '\''; the byte length of 's|'t|'re|'ve|'m|'ll|'d matched there
 * (case-insensitively when icase; ASCII folding only), or 0. */
static size_t contraction(const uint8_t *s, size_t p, size_t hi, int icase) {
    static const char *suf[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    for (int k = 0; k < 7; k++) {
        size_t n = strlen(suf[k]), i;
        if (p + 1 + n > hi) continue;
        for (i = 0; i < n; i++) {
            int c = s[p + 1 + i];
            if (icase && c >= 'A' && c <= 'Z') c += 'a' - 'A';
            if (c != suf[k][i]) break;
        }
        if (i == n) return 1 + n;
    }
    return 0;
}

/* End of the whitespace run starting at i for \s+(?!\S)|\s+ : the whole run
 * when it reaches hi or is a single code point, else all but its last one. */
static size_t space_tail(const uint8_t *s, size_t i, size_t hi) {
    size_t p = i, last = i, n = 0;
    for (;;) {
        cpi x = cp_at(s, p, hi);
        if (x.cls != CLS_S) break;
        last = p;
        p += x.len;
        n++;
    }
    return (p < hi && n > 1) ? last : p;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Returns the end of the match starting at i (< hi); every position matches. */
static size_t match_gpt2(const uint8_t *s, size_t i, size_t hi) {
    cpi a = cp_at(s, i, hi);
    if (a.cp == '\'') {
        size_t k = contraction(s, i, hi, 0);
        if (k) return i + k;
    }
    cpi b = cp_at(s, i + a.len, hi);
    static const int order[3] = {CLS_L, CLS_N, CLS_O};
    for (int k = 0; k < 3; k++) {
        if (a.cp == ' ' && b.cls == order[k]) return run_of(s, i + 1, hi, order[k]);
        if (a.cls == order[k]) return run_of(s, i, hi, order[k]);
    }
    return space_tail(s, i, hi);
}

/* LLaMA-3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_llama3(const uint8_t *s, size_t i, size_t hi) {
    cpi a = cp_at(s, i, hi);
    if (a.cp == '\'') {
        size_t k = contraction(s, i, hi, 1);
        if (k) return i + k;
    }
    if (a.cls == CLS_L) return run_of(s, i, hi, CLS_L);
    cpi b = cp_at(s, i + a.len, hi);
    if (a.cls != CLS_N && a.cp != '\r' && a.cp != '\n' && b.cls == CLS_L) return run_of(s, i + a.len, hi, CLS_L);
    if (a.cls == CLS_N) {
        size_t p = i;
        for (int n = 0; n < 3; n++) {
            cpi x = cp_at(s, p, hi);
            if (x.cls != CLS_N) break;
            p += x.len;
        }
        return p;
    }
    size_t o = (a.cp == ' ' && b.cls == CLS_O) ? i + 1 : (a.cls == CLS_O ? i : hi + 1);
    if (o <= hi) {
        size_t p = run_of(s, o, hi, CLS_O);
        while (p < hi && (s[p] == '\r' || s[p] == '\n')) p++;
        return p;
    }
    TT_ASSERT(a.cls == CLS_S);
    /* \s*[\r\n]+ : up to and including the last \r or \n of the whitespace run */
    size_t p = i, nl_end = 0;
    for (;;) {
        cpi x = cp_at(s, p, hi);
        if (x.cls != CLS_S) break;
        p += x.len;
        if (x.cp == '\r' || x.cp == '\n') nl_end = p;
    }
    if (nl_end) return nl_end;
    return space_tail(s, i, hi);
}

/* ---- encoding --------------------------------------------------------------- */

static void ids_reserve(tokenizer_ids *o, size_t extra) {
    if (o->n + extra <= o->cap) return;
    size_t cap = o->cap ? o->cap : 1024;
    while (cap < o->n + extra) cap *= 2;
    uint32_t *v = realloc(o->v, cap * sizeof *v);
    if (!v) { fprintf(stderr, "tiertrain: out of memory growing a token array to %zu ids\n", cap); abort(); }
    o->v = v;
    o->cap = cap;
}

static inline void ids_push(tokenizer_ids *o, uint32_t id) {
    if (o->n == o->cap) ids_reserve(o, 1);
    o->v[o->n++] = id;
}

void tokenizer_ids_push(tokenizer_ids *ids, uint32_t id) { ids_push(ids, id); }

void tokenizer_ids_free(tokenizer_ids *ids) {
    free(ids->v);
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

static void heap_push(tt_tokenizer *t, size_t *n, heap_ent e) {
    heap_ent *h = t->heap;
    size_t i = (*n)++;
    TT_ASSERT(i < t->heap_cap);
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].rank < e.rank || (h[p].rank == e.rank && h[p].l <= e.l)) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static heap_ent heap_pop(tt_tokenizer *t, size_t *n) {
    heap_ent *h = t->heap, top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && (h[c + 1].rank < h[c].rank || (h[c + 1].rank == h[c].rank && h[c + 1].l < h[c].l))) c++;
        if (last.rank < h[c].rank || (last.rank == h[c].rank && last.l <= h[c].l)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static void try_pair(tt_tokenizer *t, size_t *nh, uint32_t l, uint32_t r) {
    const merge_slot *m = mergemap_find(&t->merges, t->sym[l], t->sym[r]);
    if (m->key == UINT64_MAX) return;
    heap_push(t, nh, (heap_ent){m->rank, l, r, t->sym[l], t->sym[r], m->id});
}

/* Room for m symbols in the merge scratch. */
static void sym_reserve(tt_tokenizer *t, size_t m) {
    TT_ASSERT(m < UINT32_MAX / 4);
    if (m <= t->sym_cap) return;
    free(t->sym); free(t->nxt); free(t->prv); free(t->heap);
    t->sym_cap = m < 64 ? 64 : m * 2;
    t->sym = tt_xmalloc(t->sym_cap * sizeof *t->sym);
    t->nxt = tt_xmalloc(t->sym_cap * sizeof *t->nxt);
    t->prv = tt_xmalloc(t->sym_cap * sizeof *t->prv);
    t->heap_cap = 3 * t->sym_cap; /* n-1 initial pairs + at most 2 per merge */
    t->heap = tt_xmalloc(t->heap_cap * sizeof *t->heap);
}

/* Merges the n symbols t->sym[0..n) by rank and appends the result. */
static void bpe_merge(tt_tokenizer *t, uint32_t n, tokenizer_ids *out) {
    for (uint32_t i = 0; i < n; i++) {
        t->nxt[i] = i + 1;
        t->prv[i] = i ? i - 1 : NO_TOKEN;
    }
    size_t nh = 0;
    for (uint32_t i = 0; i + 1 < n; i++) try_pair(t, &nh, i, i + 1);
    while (nh) {
        heap_ent e = heap_pop(t, &nh);
        /* stale: one side was merged away or changed since this pair was queued */
        if (t->sym[e.l] != e.a || t->nxt[e.l] != e.r || t->sym[e.r] != e.b) continue;
        t->sym[e.l] = e.id;
        t->sym[e.r] = NO_TOKEN;
        t->nxt[e.l] = t->nxt[e.r];
        if (t->nxt[e.l] < n) t->prv[t->nxt[e.l]] = e.l;
        if (t->prv[e.l] != NO_TOKEN) try_pair(t, &nh, t->prv[e.l], e.l);
        if (t->nxt[e.l] < n) try_pair(t, &nh, e.l, t->nxt[e.l]);
    }
    for (uint32_t i = 0; i < n; i = t->nxt[i]) ids_push(out, t->sym[i]);
}

/* Byte-level BPE on one pre-token p[0..m) (m >= 1); appends its ids. */
static void bpe(tt_tokenizer *t, const uint8_t *p, size_t m, tokenizer_ids *out) {
    if (m == 1) { ids_push(out, t->byte_id[p[0]]); return; }
    if (t->ignore_merges) { /* a whole pre-token that is in the vocab is one token */
        t->mapped.n = 0;
        for (size_t i = 0; i < m; i++) {
            char u[4];
            size_t k = utf8_put(u, g_b2u[p[i]]);
            sbuf_add(&t->mapped, u, k);
        }
        uint32_t id = strmap_get(&t->vocab_map, t->strs.p, t->mapped.p, t->mapped.n);
        if (id != NO_TOKEN) { ids_push(out, id); return; }
    }
    sym_reserve(t, m);
    for (size_t i = 0; i < m; i++) t->sym[i] = t->byte_id[p[i]];
    bpe_merge(t, (uint32_t)m, out);
}

/* SentencePiece-style BPE on one segment s[0..len) (len >= 1): the segment
 * normalized (U+2581 for each space, one prepended when prepend), one symbol
 * per character (a byte that is not valid UTF-8 is a character of its own),
 * characters outside the vocab as their <0xXX> byte tokens or unk, merged. */
static void sp_encode(tt_tokenizer *t, const uint8_t *s, size_t len, int prepend, tokenizer_ids *out) {
    sbuf *b = &t->mapped;
    b->n = 0;
    if (prepend) sbuf_add(b, SP_SPACE, 3);
    size_t from = 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] == ' ') {
            sbuf_add(b, s + from, i - from);
            sbuf_add(b, SP_SPACE, 3);
            from = i + 1;
        }
    sbuf_add(b, s + from, len - from);
    const uint8_t *p = (const uint8_t *)b->p;
    size_t m = b->n;
    sym_reserve(t, m); /* a symbol per character, or per byte of a character that falls back */
    uint32_t n = 0;
    int last_unk = 0;
    for (size_t i = 0; i < m;) {
        uint32_t cp;
        size_t k = utf8_get(p + i, m - i, &cp);
        uint32_t id = strmap_get(&t->vocab_map, t->strs.p, p + i, k);
        if (id != NO_TOKEN) {
            t->sym[n++] = id;
            last_unk = 0;
        } else {
            int all = 1;
            for (size_t j = 0; j < k; j++) all &= t->fallback_id[p[i + j]] != NO_TOKEN;
            if (all) {
                for (size_t j = 0; j < k; j++) t->sym[n++] = t->fallback_id[p[i + j]];
                last_unk = 0;
            } else if (t->unk != NO_TOKEN && !(t->fuse_unk && last_unk)) {
                t->sym[n++] = t->unk;
                last_unk = 1;
            }
        }
        i += k;
    }
    if (n) bpe_merge(t, n, out);
}

/* Applies regex stage k to s[lo..hi), recursing into the next stage per piece. */
static void pretok(tt_tokenizer *t, int k, const uint8_t *s, size_t lo, size_t hi, tokenizer_ids *out) {
    if (k == t->n_stages) { bpe(t, s + lo, hi - lo, out); return; }
    for (size_t i = lo; i < hi;) {
        size_t j = t->stages[k] == PRE_GPT2 ? match_gpt2(s, i, hi) : match_llama3(s, i, hi);
        TT_ASSERT(j > i && j <= hi);
        pretok(t, k + 1, s, i, j, out);
        i = j;
    }
}

/* A segment without added tokens; first: it starts the text. */
static void encode_plain(tt_tokenizer *t, const uint8_t *s, size_t len, int first, tokenizer_ids *out) {
    if (len == 0) return;
    if (t->kind == TOKENIZER_BYTES) {
        ids_reserve(out, len);
        for (size_t i = 0; i < len; i++) out->v[out->n + i] = s[i];
        out->n += len;
        return;
    }
    if (t->sp) {
        sp_encode(t, s, len, t->sp_prepend == SP_PREPEND_ALWAYS || (t->sp_prepend == SP_PREPEND_FIRST && first), out);
        return;
    }
    pretok(t, 0, s, 0, len, out);
}

void tokenizer_encode(tt_tokenizer *t, const char *text, size_t len, tokenizer_ids *out) {
    const uint8_t *s = (const uint8_t *)text;
    if (!t->parse_special || t->n_added == 0) { encode_plain(t, s, len, 1, out); return; }
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (!(t->first_byte[s[i] >> 3] & (1u << (s[i] & 7)))) continue;
        for (uint32_t k = 0; k < t->n_added; k++) {
            const added_tok *a = &t->added[k];
            if (a->len > len - i || memcmp(s + i, t->strs.p + a->off, a->len) != 0) continue;
            encode_plain(t, s + start, i - start, start == 0, out);
            ids_push(out, a->id);
            start = i + a->len;
            i = start - 1;
            break;
        }
    }
    encode_plain(t, s + start, len - start, start == 0, out);
}

/* ---- decoding, accessors ------------------------------------------------------ */

const char *tokenizer_token(const tt_tokenizer *t, uint32_t id, size_t *len) {
    if (id >= t->vocab || t->tok_len[id] == NO_TOKEN) return NULL;
    *len = t->tok_len[id];
    return t->bytes.p + t->tok_off[id];
}

int tokenizer_decode(const tt_tokenizer *t, const uint32_t *ids, size_t n, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    size_t total = 0, l;
    for (size_t i = 0; i < n; i++) {
        if (!tokenizer_token(t, ids[i], &l))
            return TT_FAIL(-EINVAL, "token id %u (at position %zu) has no token in %s (vocab %u)", ids[i], i,
                           t->name, t->vocab);
        total += l;
    }
    char *o = tt_xmalloc(total + 1);
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        const char *b = tokenizer_token(t, ids[i], &l);
        memcpy(o + pos, b, l);
        pos += l;
    }
    o[pos] = '\0';
    if (t->sp && pos > 0 && o[0] == ' ') { /* the decoder's Strip(" ", 1, 0): the space the encoder prepended */
        memmove(o, o + 1, pos);
        pos--;
    }
    *out = o;
    *len = pos;
    return 0;
}

uint32_t tokenizer_added_id(const tt_tokenizer *t, const char *content) {
    size_t n = strlen(content);
    for (uint32_t k = 0; k < t->n_added; k++)
        if (t->added[k].len == n && memcmp(t->strs.p + t->added[k].off, content, n) == 0) return t->added[k].id;
    return UINT32_MAX;
}

void tokenizer_encode_offsets(tt_tokenizer *t, const char *text, size_t len, int first, tokenizer_ids *out,
                              tokenizer_ids *offsets) {
    size_t base = out->n;
    encode_plain(t, (const uint8_t *)text, len, first, out);
    /* the tokens' bytes are the text's, in order; a SentencePiece tokenizer's first token may carry the space it
     * prepended */
    size_t pos = 0, l;
    int lead = t->sp && len > 0 && (t->sp_prepend == SP_PREPEND_ALWAYS || (t->sp_prepend == SP_PREPEND_FIRST && first));
    for (size_t i = base; i < out->n; i++) {
        tokenizer_ids_push(offsets, (uint32_t)(pos > 0 && lead ? pos - 1 : pos));
        if (tokenizer_token(t, out->v[i], &l)) pos += l;
    }
}

tokenizer_kind tokenizer_kind_of(const tt_tokenizer *t) { return t->kind; }
const char *tokenizer_name(const tt_tokenizer *t) { return t->name; }
uint32_t tokenizer_vocab_size(const tt_tokenizer *t) { return t->vocab; }
uint32_t tokenizer_eot_id(const tt_tokenizer *t) { return t->eot; }
void tokenizer_set_parse_special(tt_tokenizer *t, int on) { t->parse_special = on != 0; }

void tokenizer_free(tt_tokenizer *t) {
    if (!t) return;
    free(t->name);
    free(t->tok_off);
    free(t->tok_len);
    free(t->bytes.p);
    free(t->added);
    free(t->strs.p);
    free(t->vocab_map.s);
    free(t->merges.s);
    free(t->sym);
    free(t->nxt);
    free(t->prv);
    free(t->heap);
    free(t->mapped.p);
    free(t);
}

static tt_tokenizer *tok_new(tokenizer_kind kind, const char *name) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, tables_init);
    tt_tokenizer *t = tt_xcalloc(1, sizeof *t);
    t->kind = kind;
    t->name = strdup(name);
    TT_ASSERT(t->name);
    return t;
}

static void alloc_ids(tt_tokenizer *t, uint32_t vocab) {
    t->vocab = vocab;
    t->tok_off = tt_xcalloc(vocab, sizeof *t->tok_off);
    t->tok_len = tt_xmalloc((size_t)vocab * sizeof *t->tok_len);
    for (uint32_t i = 0; i < vocab; i++) t->tok_len[i] = NO_TOKEN;
}

static void set_token_bytes(tt_tokenizer *t, uint32_t id, const void *b, size_t n) {
    t->tok_off[id] = sbuf_add(&t->bytes, b, n);
    t->tok_len[id] = (uint32_t)n;
}

static int cmp_added_len(const void *x, const void *y) {
    const added_tok *a = x, *b = y;
    return a->len != b->len ? (a->len > b->len ? -1 : 1) : (a->id > b->id) - (a->id < b->id);
}

static void finish_added(tt_tokenizer *t) {
    qsort(t->added, t->n_added, sizeof *t->added, cmp_added_len);
    memset(t->first_byte, 0, sizeof t->first_byte);
    for (uint32_t k = 0; k < t->n_added; k++) {
        uint8_t c = (uint8_t)t->strs.p[t->added[k].off];
        t->first_byte[c >> 3] |= (uint8_t)(1u << (c & 7));
    }
}

tt_tokenizer *tokenizer_open_bytes(void) {
    tt_tokenizer *t = tok_new(TOKENIZER_BYTES, "bytes");
    alloc_ids(t, TOKENIZER_BYTES_VOCAB);
    for (uint32_t b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        set_token_bytes(t, b, &c, 1);
    }
    static const char eot[] = "<|endoftext|>";
    set_token_bytes(t, TOKENIZER_BYTES_EOT, eot, sizeof eot - 1);
    t->eot = TOKENIZER_BYTES_EOT;
    t->added = tt_xmalloc(sizeof *t->added);
    t->added[0] = (added_tok){sbuf_add(&t->strs, eot, sizeof eot - 1), sizeof eot - 1, TOKENIZER_BYTES_EOT};
    t->n_added = 1;
    finish_added(t);
    return t;
}

/* ---- tokenizer.json ------------------------------------------------------------ */

/* A JSON string shortened for messages. */
#define SHOW(s) (int)(strlen(s) > 40 ? 40 : strlen(s)), (s), (strlen(s) > 40 ? "..." : "")

static int bad(const char *path, const char *what) {
    return TT_FAIL(-EINVAL, "%s: %s; expected a Hugging Face BPE tokenizer.json: byte-level (GPT-2, LLaMA-3) or "
                   "SentencePiece-style (LLaMA-2, Mistral, TinyLlama)", path, what);
}

static int parse_pre(tt_tokenizer *t, const json_t *p, const char *path, int depth, int *has_bytelevel) {
    char msg[200];
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!json_is_object(p) || !type) return bad(path, "a pre_tokenizer entry has no \"type\"");
    if (strcmp(type, "Sequence") == 0 && depth == 0) {
        const json_t *a = json_object_get(p, "pretokenizers");
        if (!json_is_array(a)) return bad(path, "pre_tokenizer.pretokenizers is missing or not an array");
        for (size_t i = 0; i < json_array_size(a); i++) {
            int rc = parse_pre(t, json_array_get(a, i), path, depth + 1, has_bytelevel);
            if (rc) return rc;
        }
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        *has_bytelevel = 1;
        if (json_is_true(json_object_get(p, "add_prefix_space")))
            return TT_FAIL(-EINVAL, "%s: the ByteLevel pre_tokenizer has add_prefix_space true, which tiertrain does "
                           "not support; set it to false", path);
        const json_t *ur = json_object_get(p, "use_regex");
        if (ur && !json_is_boolean(ur)) return bad(path, "ByteLevel.use_regex is not true or false");
        if (!ur || json_is_true(ur)) {
            if (t->n_stages == MAX_STAGES) return bad(path, "the pre_tokenizer has too many regex steps");
            t->stages[t->n_stages++] = PRE_GPT2;
        }
        return 0;
    }
    if (strcmp(type, "Split") == 0) {
        const char *re = json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex"));
        const char *beh = json_string_value(json_object_get(p, "behavior"));
        if (!re) return bad(path, "a Split pre_tokenizer has no pattern.Regex");
        if (!beh || strcmp(beh, "Isolated") != 0 || json_is_true(json_object_get(p, "invert")))
            return bad(path, "a Split pre_tokenizer is not behavior \"Isolated\" with invert false");
        int which = strcmp(re, RE_LLAMA3) == 0 ? PRE_LLAMA3 : strcmp(re, RE_GPT2) == 0 ? PRE_GPT2 : 0;
        if (!which)
            return TT_FAIL(-EINVAL, "%s: the Split pre_tokenizer regex \"%.*s%s\" is not one tiertrain implements "
                           "(it knows the GPT-2 and LLaMA-3 regexes)", path, SHOW(re));
        if (t->n_stages == MAX_STAGES) return bad(path, "the pre_tokenizer has too many regex steps");
        t->stages[t->n_stages++] = which;
        return 0;
    }
    snprintf(msg, sizeof msg, "pre_tokenizer type \"%.40s\" is not supported", type);
    return bad(path, msg);
}

/* A JSON integer id in [0, limit). */
static int get_id(const json_t *v, uint32_t limit, uint32_t *id) {
    if (!json_is_integer(v)) return 0;
    json_int_t x = json_integer_value(v);
    if (x < 0 || x >= (json_int_t)limit) return 0;
    *id = (uint32_t)x;
    return 1;
}

/* GPT-2 unicode token string -> the bytes it stands for (code points outside
 * the byte map stand for their own UTF-8). */
static void unmap_token(tt_tokenizer *t, uint32_t id, const char *s, size_t n) {
    char *b = tt_xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_get((const uint8_t *)s + i, n - i, &cp);
        if (cp < 324 && g_u2b[cp] >= 0) b[o++] = (char)g_u2b[cp];
        else { memcpy(b + o, s + i, k); o += k; }
        i += k;
    }
    set_token_bytes(t, id, b, o);
    free(b);
}

/* SentencePiece token string -> the bytes it stands for: "<0xXX>" one byte,
 * otherwise the string with U+2581 as a space. */
static void sp_token(tt_tokenizer *t, uint32_t id, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    const char *h1, *h2;
    if (n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' && s[3] && s[4] && (h1 = strchr(hex, s[3])) &&
        (h2 = strchr(hex, s[4]))) {
        char c = (char)((h1 - hex) * 16 + (h2 - hex));
        set_token_bytes(t, id, &c, 1);
        return;
    }
    char *b = tt_xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && memcmp(s + i, SP_SPACE, 3) == 0) { b[o++] = ' '; i += 3; }
        else b[o++] = s[i++];
    }
    set_token_bytes(t, id, b, o);
    free(b);
}

/* Is v the JSON string s? */
static int is_str(const json_t *v, const char *s) { return json_is_string(v) && strcmp(json_string_value(v), s) == 0; }

/* The front end of a SentencePiece-style tokenizer.json (model.byte_fallback
 * true): either the normalizer Sequence[Prepend("▁"), Replace(" " -> "▁")]
 * with no pre_tokenizer (LLaMA-2, TinyLlama), or no normalizer and the
 * pre_tokenizer Metaspace("▁", prepend_scheme always|first, split false). */
static int parse_sp_front(tt_tokenizer *t, const json_t *root, const char *path) {
    const json_t *norm = json_object_get(root, "normalizer"), *pre = json_object_get(root, "pre_tokenizer");
    if (norm && !json_is_null(norm)) {
        if (pre && !json_is_null(pre)) return bad(path, "a SentencePiece-style tokenizer with both a normalizer and a pre_tokenizer is not supported");
        const json_t *seq = json_object_get(norm, "normalizers");
        int prepend = 0, replace = 0;
        if (!is_str(json_object_get(norm, "type"), "Sequence") || !json_is_array(seq))
            return bad(path, "the normalizer is not a Sequence (SentencePiece-style: Prepend and Replace)");
        for (size_t i = 0; i < json_array_size(seq); i++) {
            const json_t *n = json_array_get(seq, i), *type = json_object_get(n, "type");
            if (is_str(type, "Prepend") && is_str(json_object_get(n, "prepend"), SP_SPACE) && !prepend && !replace)
                prepend = 1;
            else if (is_str(type, "Replace") && is_str(json_object_get(json_object_get(n, "pattern"), "String"), " ") &&
                     is_str(json_object_get(n, "content"), SP_SPACE) && !replace)
                replace = 1;
            else
                return bad(path, "a normalizer step is neither Prepend(\"\u2581\") nor Replace(\" \" -> \"\u2581\"), the "
                                 "SentencePiece-style steps tiertrain implements");
        }
        if (!replace) return bad(path, "the normalizer does not replace spaces with \"\u2581\"");
        t->sp_prepend = prepend ? SP_PREPEND_ALWAYS : SP_PREPEND_NEVER;
        return 0;
    }
    if (!pre || json_is_null(pre))
        return bad(path, "a SentencePiece-style tokenizer (byte_fallback) has neither the Prepend/Replace normalizer "
                         "nor a Metaspace pre_tokenizer");
    if (!is_str(json_object_get(pre, "type"), "Metaspace") || !is_str(json_object_get(pre, "replacement"), SP_SPACE))
        return bad(path, "the pre_tokenizer of a SentencePiece-style tokenizer is not Metaspace(\"\u2581\")");
    if (json_is_true(json_object_get(pre, "split")))
        return bad(path, "Metaspace with split true is not supported (LLaMA-2 style tokenizers use split false)");
    const json_t *scheme = json_object_get(pre, "prepend_scheme");
    if (is_str(scheme, "always") || (!scheme && !json_is_false(json_object_get(pre, "add_prefix_space"))))
        t->sp_prepend = SP_PREPEND_ALWAYS;
    else if (is_str(scheme, "first")) t->sp_prepend = SP_PREPEND_FIRST;
    else if (is_str(scheme, "never") || (!scheme && json_is_false(json_object_get(pre, "add_prefix_space"))))
        t->sp_prepend = SP_PREPEND_NEVER;
    else return bad(path, "Metaspace.prepend_scheme is not always, first or never");
    return 0;
}

static int parse_merges(tt_tokenizer *t, const json_t *merges, const char *path) {
    size_t n = json_array_size(merges);
    mergemap_init(&t->merges, n);
    char *cat = NULL;
    size_t cat_cap = 0;
    int rc = 0;
    for (size_t r = 0; r < n && rc == 0; r++) {
        const json_t *m = json_array_get(merges, r);
        const char *a = NULL, *b = NULL, *sp;
        size_t la = 0, lb = 0;
        if (json_is_string(m) && (sp = strchr(json_string_value(m), ' ')) && !strchr(sp + 1, ' ')) {
            a = json_string_value(m);
            la = (size_t)(sp - a);
            b = sp + 1;
            lb = strlen(b);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            la = strlen(a);
            lb = strlen(b);
        }
        if (!a || !la || !lb) {
            rc = TT_FAIL(-EINVAL, "%s: model.merges[%zu] is neither a \"left right\" string nor a [\"left\", "
                         "\"right\"] pair; the file is damaged or not a byte-level BPE tokenizer.json", path, r);
            break;
        }
        uint32_t ia = strmap_get(&t->vocab_map, t->strs.p, a, la);
        uint32_t ib = strmap_get(&t->vocab_map, t->strs.p, b, lb);
        if (la + lb + 1 > cat_cap) {
            cat_cap = 2 * (la + lb + 1);
            free(cat);
            cat = tt_xmalloc(cat_cap);
        }
        memcpy(cat, a, la);
        memcpy(cat + la, b, lb);
        cat[la + lb] = '\0';
        uint32_t iab = strmap_get(&t->vocab_map, t->strs.p, cat, la + lb);
        if (ia == NO_TOKEN || ib == NO_TOKEN || iab == NO_TOKEN) {
            const char *miss = ia == NO_TOKEN ? a : ib == NO_TOKEN ? b : cat;
            size_t lm = ia == NO_TOKEN ? la : ib == NO_TOKEN ? lb : la + lb;
            rc = TT_FAIL(-EINVAL, "%s: model.merges[%zu] %s \"%.*s%s\", which is not in model.vocab; the file is "
                         "damaged or its vocab and merges do not belong together", path, r,
                         miss == cat ? "makes" : "uses", (int)(lm > 40 ? 40 : lm), miss, lm > 40 ? "..." : "");
            break;
        }
        /* A repeated pair takes its later rank, as in Hugging Face (and GPT-2's
         * Python, which both fill a map in rank order). */
        *mergemap_find(&t->merges, ia, ib) = (merge_slot){(uint64_t)ia << 32 | ib, (uint32_t)r, iab};
    }
    free(cat);
    return rc;
}

static int parse_hf(tt_tokenizer *t, const json_t *root, const char *path) {
    char msg[200];
    if (!json_is_object(root)) return bad(path, "the top level is not a JSON object");
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return bad(path, "\"model\" is missing or not an object");
    const json_t *type = json_object_get(model, "type");
    if (type && (!json_is_string(type) || strcmp(json_string_value(type), "BPE") != 0)) {
        snprintf(msg, sizeof msg, "model.type is \"%.40s\", not \"BPE\"",
                 json_is_string(type) ? json_string_value(type) : "?");
        return bad(path, msg);
    }
    static const char *unsupported_str[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(model, unsupported_str[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0)) {
            snprintf(msg, sizeof msg, "model.%s is set, which tiertrain does not support", unsupported_str[i]);
            return bad(path, msg);
        }
    }
    t->sp = json_is_true(json_object_get(model, "byte_fallback"));
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    int rc;
    if (t->sp) {
        if (t->ignore_merges) return bad(path, "model.ignore_merges with byte_fallback is not supported");
        if ((rc = parse_sp_front(t, root, path))) return rc;
        t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
    } else {
        const json_t *norm = json_object_get(root, "normalizer");
        if (norm && !json_is_null(norm)) {
            const char *nt = json_string_value(json_object_get(norm, "type"));
            snprintf(msg, sizeof msg, "normalizer \"%.40s\" is not supported (GPT-2 and LLaMA-3 have none)",
                     nt ? nt : "?");
            return bad(path, msg);
        }
        const json_t *pre = json_object_get(root, "pre_tokenizer");
        if (!pre || json_is_null(pre)) return bad(path, "pre_tokenizer is missing (byte-level BPE needs ByteLevel)");
        int has_bl = 0;
        if ((rc = parse_pre(t, pre, path, 0, &has_bl))) return rc;
        if (!has_bl) return bad(path, "the pre_tokenizer has no ByteLevel step");
    }

    const json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) return bad(path, "model.vocab is missing or not an object");
    const json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges)) return bad(path, "model.merges is missing or not an array");
    const json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added)) return bad(path, "added_tokens is not an array");
    size_t n_vocab = json_object_size(vocab), n_added = json_array_size(added);
    if (n_vocab == 0) return bad(path, "model.vocab is empty");
    if (n_vocab + n_added >= MAX_IDS) return bad(path, "model.vocab is too large");
    /* Ids are dense in real files; allow holes, but refuse wild ids (they size the tables). */
    uint32_t limit = (uint32_t)(2 * (n_vocab + n_added) + 256), max_id = 0, id = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)vocab, key, v) {
        if (!get_id(v, limit, &id))
            return TT_FAIL(-EINVAL, "%s: model.vocab[\"%.*s%s\"] is not an integer id in 0..%u; the file is damaged",
                           path, SHOW(key), limit - 1);
        if (id > max_id) max_id = id;
    }
    for (size_t i = 0; i < n_added; i++) {
        const json_t *a = json_array_get(added, i);
        const char *content = json_string_value(json_object_get(a, "content"));
        if (!get_id(json_object_get(a, "id"), limit, &id) || !content || !*content)
            return TT_FAIL(-EINVAL, "%s: added_tokens[%zu] lacks an integer \"id\" in 0..%u or a non-empty string "
                           "\"content\"; the file is damaged", path, i, limit - 1);
        if (id > max_id) max_id = id;
    }
    alloc_ids(t, max_id + 1);
    strmap_init(&t->vocab_map, n_vocab);
    json_object_foreach((json_t *)vocab, key, v) {
        get_id(v, limit, &id);
        size_t len = strlen(key);
        if (len == 0) return bad(path, "model.vocab has an empty token");
        if (t->tok_len[id] != NO_TOKEN)
            return TT_FAIL(-EINVAL, "%s: model.vocab gives id %u to two tokens (one is \"%.*s%s\"); the file is "
                           "damaged", path, id, SHOW(key));
        str_slot *e = strmap_find(&t->vocab_map, t->strs.p, key, len);
        TT_ASSERT(e->id == NO_TOKEN); /* jansson rejected duplicate keys */
        *e = (str_slot){sbuf_add(&t->strs, key, len), (uint32_t)len, id};
        if (t->sp) sp_token(t, id, key, len);
        else unmap_token(t, id, key, len);
    }
    if (t->sp) {
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->fallback_id[b] = strmap_get(&t->vocab_map, t->strs.p, name, 6);
        }
        const char *unk = json_string_value(json_object_get(model, "unk_token"));
        t->unk = unk ? strmap_get(&t->vocab_map, t->strs.p, unk, strlen(unk)) : NO_TOKEN;
    }
    for (int b = 0; b < 256 && !t->sp; b++) {
        char u[4];
        size_t k = utf8_put(u, g_b2u[b]);
        t->byte_id[b] = strmap_get(&t->vocab_map, t->strs.p, u, k);
        if (t->byte_id[b] == NO_TOKEN)
            return TT_FAIL(-EINVAL, "%s: model.vocab has no token for byte 0x%02x (\"%.*s\"); a byte-level BPE vocab "
                           "has all 256", path, b, (int)k, u);
    }
    rc = parse_merges(t, merges, path);
    if (rc) return rc;
    t->added = tt_xcalloc(n_added ? n_added : 1, sizeof *t->added);
    for (size_t i = 0; i < n_added; i++) {
        const json_t *a = json_array_get(added, i);
        const char *content = json_string_value(json_object_get(a, "content"));
        get_id(json_object_get(a, "id"), limit, &id);
        size_t len = strlen(content);
        t->added[t->n_added++] = (added_tok){sbuf_add(&t->strs, content, len), (uint32_t)len, id};
        set_token_bytes(t, id, content, len); /* added tokens decode to their text */
    }
    finish_added(t);
    static const char *eots[] = {"<|end_of_text|>", "<|endoftext|>", "</s>"};
    t->eot = NO_TOKEN;
    for (int k = 0; k < 3 && t->eot == NO_TOKEN; k++) {
        for (uint32_t i = 0; i < t->n_added; i++)
            if (t->added[i].len == strlen(eots[k]) && memcmp(t->strs.p + t->added[i].off, eots[k], t->added[i].len) == 0)
                t->eot = t->added[i].id;
        if (t->eot == NO_TOKEN) t->eot = strmap_get(&t->vocab_map, t->strs.p, eots[k], strlen(eots[k]));
    }
    if (t->eot == NO_TOKEN)
        return TT_FAIL(-EINVAL, "%s has no end-of-text token (<|end_of_text|>, <|endoftext|> or </s>) in added_tokens "
                       "or model.vocab; tiertrain ends every document with one", path);
    return 0;
}

int tokenizer_open_hf(const char *path, tt_tokenizer **out) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        if (e == ENOENT)
            return TT_FAIL(-ENOENT, "%s does not exist; give the path of a Hugging Face tokenizer.json (or `bytes` "
                           "for the byte-level tokenizer)", path);
        return TT_FAIL(-e, "cannot open %s: %s", path, strerror(e));
    }
    char *file;
    if (S_ISDIR(st.st_mode)) {
        size_t n = strlen(path) + sizeof "/tokenizer.json";
        file = tt_xmalloc(n);
        snprintf(file, n, "%s/tokenizer.json", path);
        if (stat(file, &st) != 0) {
            free(file);
            return TT_FAIL(-EISDIR, "%s is a directory without a tokenizer.json; give the path of a Hugging Face "
                           "tokenizer.json", path);
        }
    } else {
        file = strdup(path);
        TT_ASSERT(file);
    }
    if (!S_ISREG(st.st_mode)) {
        int rc = TT_FAIL(-EINVAL, "%s is not a regular file; give the path of a Hugging Face tokenizer.json", file);
        free(file);
        return rc;
    }
    json_error_t je;
    if (tt_not_regular(file)) {
        int rc = TT_FAIL(-EINVAL, "%s is not a regular file; give a tokenizer.json", file);
        free(file);
        return rc;
    }
    /* a folder's other JSON files, given for tokenizer.json (the name is what the folder gives them) */
    const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
    static const char *const others[][2] = {{"tokenizer_config.json", "the tokenizer's settings"},
                                            {"special_tokens_map.json", "the special tokens' names"},
                                            {"config.json", "the model's configuration"},
                                            {"generation_config.json", "the generation settings"}};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        if (strcmp(base, others[i][0]) == 0) {
            int rc = TT_FAIL(-EINVAL, "%s holds %s, not the tokenizer; give the tokenizer.json beside it, or its "
                             "folder", file, others[i][1]);
            free(file);
            return rc;
        }
    json_t *root = json_load_file(file, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        int rc;
        if (json_error_code(&je) == json_error_cannot_open_file)
            rc = TT_FAIL(-EACCES, "cannot read %s: %s", file, je.text);
        else if (json_error_code(&je) == json_error_out_of_memory)
            rc = TT_FAIL(-ENOMEM, "out of memory reading %s", file);
        else
            rc = TT_FAIL(-EINVAL, "%s is not valid JSON (line %d, column %d: %s); expected a Hugging Face "
                         "tokenizer.json", file, je.line, je.column, je.text);
        free(file);
        return rc;
    }
    tt_tokenizer *t = tok_new(TOKENIZER_HF_BPE, file);
    int rc = parse_hf(t, root, file);
    json_decref(root);
    free(file);
    if (rc) {
        tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int tokenizer_open(const char *spec, tt_tokenizer **out) {
    if (strcmp(spec, "bytes") == 0) {
        *out = tokenizer_open_bytes();
        return 0;
    }
    return tokenizer_open_hf(spec, out);
}
