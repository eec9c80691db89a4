/* tests/test_safetensors.c — the safetensors reader and writer (io/safetensors.h).
 *
 * 1. Round trip: tensors of every common dtype and shape (a 0-d scalar, an
 *    empty tensor, rank 8) and metadata, written with st_write and read back
 *    with st_open / st_read bit for bit.
 * 2. Spec check of the written bytes, done without the reader: the 8-byte
 *    length, the JSON parsed here with jansson, dtype strings, shape x size
 *    = offset span, offsets contiguous from 0 in the reference order
 *    (descending dtype, then name), header padded with spaces to a multiple
 *    of 8, file size = 8 + N + data; plus the exact bytes of the reference
 *    implementation's own serialization tests.
 * 3. Malformed files (one per rule of the format), each refused with -EINVAL
 *    and a message naming the file, by st_open and by st_parse_buffer on an
 *    exact-size copy (so ASan sees any read past the end).
 * 4. Writer failures: duplicate / reserved / non-UTF-8 names, a missing
 *    directory, a directory as path, and a write cut short (RLIMIT_FSIZE):
 *    nothing half-written, an older file left intact.
 * 5. Random byte mutations of a valid file must never crash the parser.
 * 6. Replays tests/corpus/safetensors/: "ok-*" must parse, "bad-*" must be
 *    refused. Those files are written by this program with
 *    TT_WRITE_CORPUS=tests/corpus/safetensors and seed tests/fuzz_safetensors.c.
 */
#include "core/base/common.h"
#include "io/safetensors.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmp[512];
static const char *g_corpus_out;

/* ---- helpers ---------------------------------------------------------------- */

static uint64_t le64(const uint8_t *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

/* The safetensors dtype table as the spec gives it, independent of the
 * library's: header spelling, element size, the reference's sort rank. */
static const struct { const char *name; int size; int rank; } k_spec[] = {
    {"BOOL", 1, 0}, {"U8", 1, 1},   {"I8", 1, 2},   {"F8_E5M2", 1, 3}, {"F8_E4M3", 1, 4}, {"F8_E8M0", 1, 5},
    {"I16", 2, 6},  {"U16", 2, 7},  {"F16", 2, 8},  {"BF16", 2, 9},    {"I32", 4, 10},    {"U32", 4, 11},
    {"F32", 4, 12}, {"C64", 8, 13}, {"F64", 8, 14}, {"I64", 8, 15},    {"U64", 8, 16},
};

static int spec_dtype(const char *s) {
    for (size_t i = 0; i < sizeof k_spec / sizeof *k_spec; i++)
        if (strcmp(s, k_spec[i].name) == 0) return (int)i;
    return -1;
}

/* ---- 1 + 2: round trip and spec check --------------------------------------- */

typedef struct tcase {
    const char *name;
    st_dtype dtype;
    uint32_t ndim;
    uint64_t shape[ST_MAX_DIM];
} tcase;

/* Deliberately not in any sorted order. */
static const tcase k_cases[] = {
    {"w.f32", ST_DTYPE_F32, 2, {2, 3}},
    {"b.bf16", ST_DTYPE_BF16, 1, {4}},
    {"a.i64", ST_DTYPE_I64, 2, {2, 2}},
    {"c.u8", ST_DTYPE_U8, 1, {5}},
    {"flag", ST_DTYPE_BOOL, 1, {3}},
    {"d.f64", ST_DTYPE_F64, 3, {1, 1, 2}},
    {"scalar", ST_DTYPE_I8, 0, {0}},
    {"empty", ST_DTYPE_F32, 2, {0, 3}},
    {"rank8", ST_DTYPE_F16, 8, {1, 2, 1, 2, 1, 1, 1, 2}},
    {"z.i32", ST_DTYPE_I32, 1, {3}},
    {"h.i16", ST_DTYPE_I16, 2, {3, 1}},
    {"A.f32", ST_DTYPE_F32, 1, {1}},
    {"é.unicode", ST_DTYPE_U8, 1, {2}},
};
#define N_CASES (sizeof k_cases / sizeof *k_cases)
static const char *const k_meta[] = {"format", "pt", "note", "héllo \"quoted\" \\ /", "empty", "", NULL};

static uint64_t case_bytes(const tcase *c) {
    uint64_t n = (uint64_t)k_spec[spec_dtype(st_dtype_name(c->dtype))].size;
    for (uint32_t d = 0; d < c->ndim; d++) n *= c->shape[d];
    return n;
}

static uint8_t *case_data(uint32_t i, uint64_t n) {
    uint8_t *b = malloc(n ? n : 1);
    for (uint64_t j = 0; j < n; j++) b[j] = fixture_byte(i, j, 0);
    if (k_cases[i].dtype == ST_DTYPE_BOOL)
        for (uint64_t j = 0; j < n; j++) b[j] &= 1;
    return b;
}

/* Independent check of a file's bytes against the format. expect_n tensors;
 * data[i] / names[i] give the expected bytes of each. */
static void spec_check(const char *path, uint32_t expect_n, const char *const *names, uint8_t *const *data,
                       const char *const *meta) {
    uint64_t len;
    uint8_t *b = fixture_slurp(path, &len);
    CHECK(b != NULL);
    if (!b) return;
    CHECK(len >= 8);
    uint64_t n = le64(b);
    CHECK_MSG(n % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)n);
    CHECK(8 + n <= len);
    if (8 + n > len) { free(b); return; }
    const char *h = (const char *)b + 8;
    uint64_t end = n;
    while (end > 0 && h[end - 1] == ' ') end--;
    CHECK_MSG(end > 0 && h[end - 1] == '}', "header does not end with '}' followed only by spaces");
    CHECK_MSG(n - end < 8, "more than 7 bytes of padding");
    CHECK(h[0] == '{');
    json_error_t err;
    json_t *root = json_loadb(h, (size_t)end, JSON_REJECT_DUPLICATES, &err);
    CHECK_MSG(root != NULL, "header JSON does not parse: %s", err.text);
    if (!root) { free(b); return; }
    const char *key;
    json_t *v;
    uint64_t pos = 0;
    uint32_t seen = 0, k = 0;
    int prev_rank = 1 << 30;
    const char *prev_name = NULL;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            CHECK_MSG(k == 0, "__metadata__ is not the first key (the reference writes it first)");
            CHECK(json_is_object(v));
            uint32_t nm = 0;
            for (const char *const *m = meta; m && *m; m += 2, nm++) {
                const json_t *x = json_object_get(v, m[0]);
                CHECK_MSG(json_is_string(x) && strcmp(json_string_value(x), m[1]) == 0, "metadata %s", m[0]);
            }
            CHECK_EQ_INT(json_object_size(v), nm);
            k++;
            continue;
        }
        k++;
        seen++;
        const json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
                     *jo = json_object_get(v, "data_offsets");
        CHECK_EQ_INT(json_object_size(v), 3);
        CHECK(json_is_string(jd) && json_is_array(js) && json_is_array(jo) && json_array_size(jo) == 2);
        if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) || json_array_size(jo) != 2) continue;
        int dt = spec_dtype(json_string_value(jd));
        CHECK_MSG(dt >= 0, "dtype %s is not a safetensors dtype", json_string_value(jd));
        if (dt < 0) continue;
        uint64_t count = 1;
        for (size_t d = 0; d < json_array_size(js); d++) {
            CHECK(json_is_integer(json_array_get(js, d)) && json_integer_value(json_array_get(js, d)) >= 0);
            count *= (uint64_t)json_integer_value(json_array_get(js, d));
        }
        uint64_t ob = (uint64_t)json_integer_value(json_array_get(jo, 0));
        uint64_t oe = (uint64_t)json_integer_value(json_array_get(jo, 1));
        CHECK_MSG(ob == pos, "%s: offsets not contiguous (begins at %llu, previous ended at %llu)", key,
                  (unsigned long long)ob, (unsigned long long)pos);
        CHECK_MSG(oe - ob == count * (uint64_t)k_spec[dt].size, "%s: offset span != shape x dtype size", key);
        /* reference order: descending dtype rank, then name */
        int rank = k_spec[dt].rank;
        CHECK_MSG(rank < prev_rank || (rank == prev_rank && strcmp(prev_name, key) < 0),
                  "%s is out of the reference order (descending dtype, then name)", key);
        prev_rank = rank;
        prev_name = key;
        pos = oe;
        /* the bytes are the ones given */
        for (uint32_t i = 0; i < expect_n; i++)
            if (strcmp(names[i], key) == 0 && 8 + n + oe <= len)
                CHECK_MSG(oe == ob || memcmp(b + 8 + n + ob, data[i], oe - ob) == 0, "%s: data bytes differ", key);
    }
    CHECK_EQ_INT(seen, expect_n);
    CHECK_EQ_INT(len, 8 + n + pos);
    json_decref(root);
    free(b);
}

static void test_round_trip(void) {
    char path[700];
    snprintf(path, sizeof path, "%s/rt.safetensors", g_tmp);
    st_entry e[N_CASES];
    uint8_t *data[N_CASES];
    const char *names[N_CASES];
    for (uint32_t i = 0; i < N_CASES; i++) {
        data[i] = case_data(i, case_bytes(&k_cases[i]));
        names[i] = k_cases[i].name;
        e[i] = (st_entry){k_cases[i].name, k_cases[i].dtype, k_cases[i].ndim, k_cases[i].shape, data[i]};
    }
    int rc = st_write(path, N_CASES, e, k_meta);
    CHECK_MSG(rc == 0, "st_write: %s", tt_lasterr());
    char partial[720];
    snprintf(partial, sizeof partial, "%s.partial", path);
    CHECK(!fixture_exists(partial));
    spec_check(path, N_CASES, names, data, k_meta);

    st_file *st = NULL;
    rc = st_open(path, &st);
    CHECK_MSG(rc == 0, "st_open: %s", tt_lasterr());
    if (rc == 0) {
        CHECK_EQ_INT(st_count(st), N_CASES);
        CHECK(strcmp(st_path(st), path) == 0);
        for (uint32_t i = 0; i < N_CASES; i++) {
            int j = st_find(st, k_cases[i].name);
            CHECK_MSG(j >= 0, "%s not found", k_cases[i].name);
            if (j < 0) continue;
            const st_tensor *t = st_tensor_at(st, (uint32_t)j);
            CHECK(strcmp(t->name, k_cases[i].name) == 0);
            CHECK_EQ_INT(t->dtype, k_cases[i].dtype);
            CHECK_EQ_INT(t->ndim, k_cases[i].ndim);
            for (uint32_t d = 0; d < t->ndim; d++) CHECK_EQ_INT(t->shape[d], k_cases[i].shape[d]);
            CHECK_EQ_INT(t->nbytes, case_bytes(&k_cases[i]));
            uint8_t *got = malloc(t->nbytes + 1);
            CHECK_MSG(st_read(st, (uint32_t)j, got) == 0, "st_read: %s", tt_lasterr());
            CHECK_MSG(memcmp(got, data[i], t->nbytes) == 0, "%s: bytes differ", k_cases[i].name);
            free(got);
        }
        /* offsets are absolute and increasing */
        for (uint32_t i = 1; i < st_count(st); i++)
            CHECK(st_tensor_at(st, i)->offset == st_tensor_at(st, i - 1)->offset + st_tensor_at(st, i - 1)->nbytes);
        CHECK(st_find(st, "missing") == -1);
        CHECK(st_find(st, "__metadata__") == -1);
        CHECK(st_metadata(st, "format") && strcmp(st_metadata(st, "format"), "pt") == 0);
        CHECK(st_metadata(st, "note") && strcmp(st_metadata(st, "note"), k_meta[3]) == 0);
        CHECK(st_metadata(st, "empty") && strcmp(st_metadata(st, "empty"), "") == 0);
        CHECK(st_metadata(st, "absent") == NULL);
        CHECK_EQ_INT(st_metadata_count(st), 3);
        st_close(st);
    }
    uint64_t len;
    uint8_t *img = fixture_slurp(path, &len);
    CHECK(img && st_parse_buffer(img, len, "rt.safetensors") == 0);
    if (g_corpus_out && img) {
        char out[700];
        snprintf(out, sizeof out, "%s/ok-roundtrip.safetensors", g_corpus_out);
        fixture_spit(out, img, len);
    }
    free(img);

    /* A single dtype: the header order is plain name order. */
    snprintf(path, sizeof path, "%s/one.safetensors", g_tmp);
    uint64_t sh[2] = {2, 2};
    float vals[4] = {1, 2, 3, 4};
    st_entry one[3] = {{"zeta", ST_DTYPE_F32, 2, sh, vals}, {"alpha", ST_DTYPE_F32, 2, sh, vals},
                       {"mid", ST_DTYPE_F32, 1, sh, vals}};
    CHECK(st_write(path, 3, one, NULL) == 0);
    const char *nm[3] = {"zeta", "alpha", "mid"};
    uint8_t *dp[3] = {(uint8_t *)vals, (uint8_t *)vals, (uint8_t *)vals};
    spec_check(path, 3, nm, dp, NULL);
    img = fixture_slurp(path, &len);
    const char *want = "{\"alpha\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                       "\"mid\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]},"
                       "\"zeta\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[24,40]}}";
    CHECK(img && len > 8 + strlen(want) && memcmp(img + 8, want, strlen(want)) == 0);
    free(img);
    for (uint32_t i = 0; i < N_CASES; i++) free(data[i]);
}

/* The exact bytes of the reference implementation's serialization tests
 * (huggingface/safetensors tensor.rs: forced alignment, empty, metadata). */
static void test_reference_bytes(void) {
    char path[700];
    snprintf(path, sizeof path, "%s/ref.safetensors", g_tmp);
    float v[6] = {0, 1, 2, 3, 4, 5};
    uint64_t sh[4] = {1, 1, 2, 3};
    st_entry e = {"attn0", ST_DTYPE_F32, 4, sh, v};
    static const char *const cases[3] = {
        "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       ",
        "{}      ",
        "{\"__metadata__\":{\"framework\":\"pt\"}}     ",
    };
    for (int c = 0; c < 3; c++) {
        const char *const md[] = {"framework", "pt", NULL};
        CHECK(st_write(path, c == 0 ? 1 : 0, &e, c == 2 ? md : NULL) == 0);
        uint64_t len;
        uint8_t *b = fixture_slurp(path, &len);
        uint64_t hl = strlen(cases[c]), dl = c == 0 ? 24 : 0;
        CHECK_MSG(b && len == 8 + hl + dl && le64(b) == hl && memcmp(b + 8, cases[c], hl) == 0 &&
                  (dl == 0 || memcmp(b + 8 + hl, v, dl) == 0), "reference case %d: bytes differ", c);
        if (g_corpus_out && b) {
            char out[700];
            snprintf(out, sizeof out, "%s/ok-reference-%d.safetensors", g_corpus_out, c);
            fixture_spit(out, b, len);
        }
        free(b);
    }
}

/* ---- 3: malformed files ------------------------------------------------------ */

typedef struct bad_case {
    const char *name;
    const char *json;      /* header text */
    uint64_t data;         /* bytes of data after the header */
    int64_t len_field;     /* >= 0: write this as N instead of strlen(json) */
    int64_t total;         /* > 0: cut the file to this many bytes */
} bad_case;

#define T1B "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}" /* tensor a, bytes 0..8 */
#define T1(extra) "{" T1B extra "}"

static const bad_case k_bad[] = {
    {"too-short", "", 0, -1, 5},
    {"header-past-eof", T1(""), 8, 1000, 0},
    {"header-over-limit", T1(""), 8, 200000000, 0},
    {"header-len-huge", T1(""), 8, INT64_MAX, 0},
    {"invalid-json", "{\"a\":{\"dtype\":\"F32\",", 0, -1, 0},
    {"trailing-garbage", T1("") "x", 8, -1, 0},
    {"nul-padding", T1("") "\0\0\0", 8, -1, 0},
    {"not-object", "[1,2]", 0, -1, 0},
    {"entry-not-object", "{\"a\":5}", 0, -1, 0},
    {"unknown-dtype", "{\"a\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1, 0},
    {"sub-byte-dtype", "{\"a\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1, -1, 0},
    {"dtype-not-string", "{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1, 0},
    {"missing-dtype", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1, 0},
    {"missing-shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, -1, 0},
    {"missing-offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, -1, 0},
    {"offsets-past-end", T1(""), 4, -1, 0},
    {"offsets-reversed", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, -1, 0},
    {"offsets-three", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 8, -1, 0},
    {"offsets-negative", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, -1, 0},
    {"offsets-float", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.0]}}", 8, -1, 0},
    {"overlap", T1(",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}"), 12, -1, 0},
    {"overlap-same", T1(",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"), 8, -1, 0},
    {"empty-inside-other", T1(",\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}"), 8, -1, 0},
    {"hole", T1(",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}"), 20, -1, 0},
    {"hole-at-start", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, -1, 0},
    {"trailing-data", T1(""), 12, -1, 0},
    {"size-mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, -1, 0},
    {"negative-shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, -1, 0},
    {"float-shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, -1, 0},
    {"string-shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, -1, 0},
    {"shape-not-array", "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, -1, 0},
    {"rank-9", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, -1, 0},
    {"shape-overflow",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}", 0, -1, 0},
    {"bytes-overflow", "{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 0, -1, 0},
    {"huge-integer", "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}", 8, -1, 0},
    {"duplicate-key", T1(",\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}"), 16, -1, 0},
    {"duplicate-metadata-key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, -1, 0},
    {"metadata-non-string", "{\"__metadata__\":{\"format\":1}," T1B "}", 8, -1, 0},
    {"metadata-null", "{\"__metadata__\":{\"format\":null}}", 0, -1, 0},
    {"metadata-not-object", "{\"__metadata__\":\"pt\"}", 0, -1, 0},
    {"invalid-utf8-name", "{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1, 0},
    {"nul-escape-name", "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1, 0},
};
#define N_BAD (sizeof k_bad / sizeof *k_bad)

/* Builds the file image of a case (its header text may hold NULs: length
 * from sizeof-less strlen is wrong there, so nul-padding is special-cased). */
static uint8_t *bad_image(const bad_case *c, uint64_t *len) {
    uint64_t hl = strlen(c->json);
    if (strcmp(c->name, "nul-padding") == 0) hl += 3;
    uint64_t n = 8 + hl + c->data;
    uint8_t *b = calloc(1, n);
    uint64_t field = c->len_field >= 0 ? (uint64_t)c->len_field : hl;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(field >> (8 * i));
    memcpy(b + 8, c->json, hl);
    for (uint64_t j = 0; j < c->data; j++) b[8 + hl + j] = (uint8_t)(j * 37 + 1);
    if (c->total > 0 && (uint64_t)c->total < n) n = (uint64_t)c->total;
    *len = n;
    return b;
}

static void test_malformed(void) {
    for (size_t i = 0; i < N_BAD; i++) {
        const bad_case *c = &k_bad[i];
        uint64_t n;
        uint8_t *img = bad_image(c, &n);
        char fname[128], path[700];
        snprintf(fname, sizeof fname, "bad-%s.safetensors", c->name);
        snprintf(path, sizeof path, "%s/%s", g_tmp, fname);
        fixture_spit(path, img, n);
        if (g_corpus_out) {
            char out[700];
            snprintf(out, sizeof out, "%s/%s", g_corpus_out, fname);
            fixture_spit(out, img, n);
        }
        st_file *st = (st_file *)1;
        int rc = st_open(path, &st);
        CHECK_MSG(rc == -EINVAL, "%s: st_open expected -EINVAL, got %d (%s)", c->name, rc, tt_lasterr());
        CHECK_MSG(st == NULL, "%s: *out not cleared", c->name);
        CHECK_MSG(strstr(tt_lasterr(), path) != NULL, "%s: message does not name the file: %s", c->name, tt_lasterr());
        if (rc == 0) st_close(st);
        uint8_t *exact = malloc(n ? n : 1);
        memcpy(exact, img, n);
        rc = st_parse_buffer(exact, n, fname);
        CHECK_MSG(rc == -EINVAL, "%s: st_parse_buffer expected -EINVAL, got %d (%s)", c->name, rc, tt_lasterr());
        CHECK_MSG(strstr(tt_lasterr(), fname) != NULL, "%s: message does not name the file: %s", c->name,
                  tt_lasterr());
        if (getenv("TT_VERBOSE")) fprintf(stderr, "%-24s %s\n", c->name, tt_lasterr());
        free(exact);
        free(img);
    }
    /* Messages name the tensor or field at fault. */
    static const struct { const char *c, *word; } named[] = {
        {"unknown-dtype", "Q7"}, {"overlap", "\"b\""}, {"hole", "\"b\""}, {"size-mismatch", "\"a\""},
        {"metadata-non-string", "format"}, {"negative-shape", "shape"}, {"duplicate-key", "repeats"},
    };
    for (size_t k = 0; k < sizeof named / sizeof *named; k++)
        for (size_t i = 0; i < N_BAD; i++) {
            if (strcmp(k_bad[i].name, named[k].c) != 0) continue;
            uint64_t n;
            uint8_t *img = bad_image(&k_bad[i], &n);
            (void)st_parse_buffer(img, n, "x.safetensors");
            CHECK_MSG(strstr(tt_lasterr(), named[k].word) != NULL, "%s: message lacks %s: %s", named[k].c,
                      named[k].word, tt_lasterr());
            free(img);
        }
    /* Not a file at all. */
    st_file *st = NULL;
    char path[700];
    snprintf(path, sizeof path, "%s/none.safetensors", g_tmp);
    CHECK(st_open(path, &st) == -ENOENT && strstr(tt_lasterr(), path));
    CHECK(st_open(g_tmp, &st) == -EISDIR && strstr(tt_lasterr(), g_tmp));

    /* Valid edge cases the reader must accept (written to the corpus too). */
    static const struct { const char *name, *json; uint64_t data; } ok[] = {
        {"unpadded", T1(""), 8},
        {"header-order-differs", "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[8,10]}," T1B "}", 10},
        {"zero-size-between", T1(",\"e\":{\"dtype\":\"I64\",\"shape\":[0,5],\"data_offsets\":[8,8]},"
                                  "\"f\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[8,9]}"), 9},
        {"whitespace-and-extra-field", " {\n \"a\" : {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8],"
                                       " \"extra\": 1}\n}\n  ", 8},
        {"metadata-only", "{\"__metadata__\":{\"format\":\"pt\"}}", 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        bad_case c = {ok[i].name, ok[i].json, ok[i].data, -1, 0};
        uint64_t n;
        uint8_t *img = bad_image(&c, &n);
        char fname[128];
        snprintf(fname, sizeof fname, "ok-%s.safetensors", ok[i].name);
        CHECK_MSG(st_parse_buffer(img, n, fname) == 0, "%s refused: %s", fname, tt_lasterr());
        if (g_corpus_out) {
            snprintf(path, sizeof path, "%s/%s", g_corpus_out, fname);
            fixture_spit(path, img, n);
        }
        free(img);
    }
}

/* ---- 4: writer failures ------------------------------------------------------ */

static void test_writer_errors(void) {
    char path[700], partial[720];
    snprintf(path, sizeof path, "%s/w.safetensors", g_tmp);
    snprintf(partial, sizeof partial, "%s.partial", path);
    uint64_t sh[1] = {4};
    float v[4] = {1, 2, 3, 4};
    st_entry dup[2] = {{"x", ST_DTYPE_F32, 1, sh, v}, {"x", ST_DTYPE_I32, 1, sh, v}};
    CHECK(st_write(path, 2, dup, NULL) == -EINVAL && strstr(tt_lasterr(), path) && strstr(tt_lasterr(), "\"x\""));
    st_entry res[1] = {{"__metadata__", ST_DTYPE_F32, 1, sh, v}};
    CHECK(st_write(path, 1, res, NULL) == -EINVAL && strstr(tt_lasterr(), path));
    st_entry bad8[1] = {{"bad\xff", ST_DTYPE_F32, 1, sh, v}};
    CHECK(st_write(path, 1, bad8, NULL) == -EINVAL && strstr(tt_lasterr(), path));
    const char *const dupmeta[] = {"k", "1", "k", "2", NULL};
    CHECK(st_write(path, 0, NULL, dupmeta) == -EINVAL && strstr(tt_lasterr(), path));
    CHECK(!fixture_exists(path) && !fixture_exists(partial));

    char missing[700];
    snprintf(missing, sizeof missing, "%s/no/such/dir/x.safetensors", g_tmp);
    CHECK(st_write(missing, 1, dup, NULL) == -ENOENT && strstr(tt_lasterr(), missing));
    CHECK(st_write(g_tmp, 1, dup, NULL) == -EISDIR && strstr(tt_lasterr(), g_tmp));

    /* A write cut short: an older file stays, no partial file remains. */
    CHECK(st_write(path, 1, dup, NULL) == 0);
    uint64_t old_len;
    uint8_t *old = fixture_slurp(path, &old_len);
    uint64_t big_shape[1] = {1 << 16};
    float *big = calloc(1 << 16, sizeof *big);
    st_entry be[1] = {{"big", ST_DTYPE_F32, 1, big_shape, big}};
    struct rlimit saved, lim;
    getrlimit(RLIMIT_FSIZE, &saved);
    lim = saved;
    lim.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        int rc = st_write(path, 1, be, NULL);
        setrlimit(RLIMIT_FSIZE, &saved);
        CHECK_MSG(rc == -EFBIG && strstr(tt_lasterr(), path), "cut write: rc %d (%s)", rc, tt_lasterr());
        CHECK(!fixture_exists(partial));
        uint64_t now_len;
        uint8_t *now = fixture_slurp(path, &now_len);
        CHECK(now && now_len == old_len && memcmp(now, old, old_len) == 0);
        free(now);
    } else {
        fprintf(stderr, "note: setrlimit(RLIMIT_FSIZE) refused; cut-write case not run\n");
    }
    signal(SIGXFSZ, prev);
    free(big);
    free(old);
}

/* ---- 5: random mutations ---------------------------------------------------- */

static void test_mutations(void) {
    char path[700];
    snprintf(path, sizeof path, "%s/rt.safetensors", g_tmp);
    uint64_t len;
    uint8_t *img = fixture_slurp(path, &len);
    CHECK(img != NULL);
    if (!img) return;
    uint32_t x = 12345;
    int accepted = 0;
    for (int it = 0; it < 3000; it++) {
        uint8_t *b = malloc(len);
        memcpy(b, img, len);
        int flips = 1 + it % 4;
        for (int f = 0; f < flips; f++) {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5;
            uint64_t pos = it % 3 == 0 ? x % 8 : 8 + x % (len - 8);
            b[pos] = (uint8_t)(x >> 8);
        }
        uint64_t n = it % 7 == 0 ? x % len : len;
        if (st_parse_buffer(b, n, "mut.safetensors") == 0) accepted++;
        else CHECK(strstr(tt_lasterr(), "mut.safetensors") != NULL);
        free(b);
    }
    CHECK(accepted < 3000);
    free(img);
}

/* A file rewritten in place after st_open (a shard copied over while import reads it): the next st_read is one
 * -EIO naming the file, not the new bytes (safetensors carry no checksums to catch them later). */
static void test_changed(void) {
    char path[700];
    snprintf(path, sizeof path, "%s/chg.safetensors", g_tmp);
    uint64_t sh[1] = {4};
    float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, got[4];
    st_entry e[2] = {{"a", ST_DTYPE_F32, 1, sh, a}, {"b", ST_DTYPE_F32, 1, sh, b}};
    CHECK(st_write(path, 2, e, NULL) == 0);
    st_file *st = NULL;
    CHECK_MSG(st_open(path, &st) == 0, "%s", tt_lasterr());
    if (!st) return;
    CHECK(st_read(st, (uint32_t)st_find(st, "a"), got) == 0 && memcmp(got, a, sizeof a) == 0);
    /* the same size, other values for b; the modification time set apart from the open's (a coarse clock) */
    int fd = open(path, O_WRONLY);
    const st_tensor *tb = st_tensor_at(st, (uint32_t)st_find(st, "b"));
    CHECK(fd >= 0 && pwrite(fd, a, sizeof a, (off_t)tb->offset) == (ssize_t)sizeof a);
    struct timespec ts[2] = {{0, UTIME_OMIT}, {12345, 0}};
    CHECK(fd >= 0 && futimens(fd, ts) == 0);
    if (fd >= 0) close(fd);
    CHECK_EQ_INT(st_read(st, (uint32_t)st_find(st, "b"), got), -EIO);
    CHECK_MSG(strstr(tt_lasterr(), path) && strstr(tt_lasterr(), "was modified while this run was reading it"),
              "message: %s", tt_lasterr());
    st_close(st);
}

/* ---- 6: corpus ---------------------------------------------------------------- */

/* One file of tests/corpus/safetensors (fixture_replay_corpus): parsed from
 * memory and opened from disk, both must agree with its name. */
static void replay_one(const char *path, const char *name, const uint8_t *b, uint64_t n, int ok) {
    int rc = st_parse_buffer(b, n, name);
    st_file *st = NULL;
    int rc2 = st_open(path, &st);
    st_close(st);
    if (ok) CHECK_MSG(rc == 0 && rc2 == 0, "%s refused: %s", name, tt_lasterr());
    else CHECK_MSG(rc == -EINVAL && rc2 == -EINVAL, "%s accepted or wrong error %d/%d", name, rc, rc2);
}

int main(void) {
    char *tmp = fixture_tmpdir();
    snprintf(g_tmp, sizeof g_tmp, "%s", tmp);
    const char *out = getenv("TT_WRITE_CORPUS");
    g_corpus_out = out && *out ? out : NULL;
    test_round_trip();
    test_reference_bytes();
    test_malformed();
    test_writer_errors();
    test_mutations();
    test_changed();
    fixture_replay_corpus("tests/corpus/safetensors", replay_one, 5, 30);
    fixture_rm_rf(tmp);
    free(tmp);
    TEST_END();
}
