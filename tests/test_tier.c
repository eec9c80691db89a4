/* tests/test_tier.c — the .tier store: write/read round trip for every dtype,
 * with and without pruning map and lz4; predicted size; corruption and
 * writer failures give clean errors and leave nothing half-written. */
#include "core/base/common.h"
#include "io/lz4page.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

/* Opens path and checks config, directory and every tensor's bytes. */
static void check_roundtrip(const char *path, const tt_config *c, const uint32_t *dtypes,
                            const tier_prune_map *map, int zero_pct, int expect_lz4) {
    tier_store *s;
    int rc = tier_open(&s, path);
    CHECK_MSG(rc == 0, "tier_open: %s", tt_lasterr());
    if (rc) return;
    const tt_config *r = tier_config(s);
    CHECK(strcmp(r->name, c->name) == 0);
    CHECK_EQ_INT(r->n_layers, c->n_layers);
    CHECK_EQ_INT(r->hidden, c->hidden);
    CHECK_EQ_INT(r->vocab, c->vocab);
    CHECK(r->rms_eps == c->rms_eps && r->rope_theta == c->rope_theta);
    CHECK(memcmp(r->layers, c->layers, sizeof(tt_layer_dims) * c->n_layers) == 0);
    CHECK_EQ_INT(tier_n_tensors(s), config_n_tensors(c));
    CHECK_EQ_INT(tier_n_extents(s), TT_N_EXTENTS(c));
    if (!expect_lz4) CHECK_EQ_INT(tier_file_size(s), tier_predict_size(c, dtypes, map != NULL, NULL));
    uint64_t len;
    uint8_t *file = fixture_slurp(path, &len);
    TT_ASSERT(file);
    int saw_lz4 = 0;
    for (uint32_t e = 0; e < tier_n_extents(s); e++) {
        const tier_extent *x = tier_extent_at(s, e);
        CHECK(x->offset % TIER_ALIGN == 0);
        CHECK(tier_extent_check(s, e, file + x->offset) == 0);
        uint8_t *raw = malloc(x->raw);
        CHECK(tier_extent_decode(s, e, file + x->offset, raw) == 0);
        saw_lz4 |= x->codec == TIER_CODEC_LZ4;
        for (uint32_t i = x->first_tensor; i < x->first_tensor + x->n_tensors; i++) {
            const tier_tensor *t = tier_tensor_at(s, i);
            CHECK_EQ_INT(t->dtype, dtypes[i]);
            CHECK_EQ_INT(t->nbytes, dtype_bytes(dtypes[i], t->rows * t->cols));
            uint64_t bad = 0;
            for (uint64_t j = 0; j < t->nbytes; j++) bad += raw[t->offset + j] != fixture_byte(i, j, zero_pct);
            CHECK_MSG(bad == 0, "tensor %s: %llu bytes differ", t->name, (unsigned long long)bad);
        }
        free(raw);
    }
    CHECK_EQ_INT(saw_lz4, expect_lz4);
    const tier_prune_map *m = tier_prune(s);
    CHECK((m != NULL) == (map != NULL));
    if (m && map)
        for (uint32_t l = 0; l < c->n_layers; l++) {
            if (!c->layers[l].pruned) continue;
            CHECK(memcmp(m->kv[l], map->kv[l], 4 * c->layers[l].n_kv_heads) == 0);
            CHECK(memcmp(m->ffn[l], map->ffn[l], 4 * c->layers[l].ffn) == 0);
        }
    free(file);
    tier_close(s);
}

static void test_roundtrips(const char *dir) {
    char path[600];
    tt_config c;
    fixture_micro_config(&c);
    const uint32_t lins[] = {TT_DTYPE_F32, TT_DTYPE_BF16, TT_DTYPE_NF4, TT_DTYPE_NF4DQ};
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof path, "%s/rt%d.tier", dir, k);
        uint32_t *dt = fixture_dtypes(&c, lins[k]);
        CHECK_MSG(fixture_write_store(path, &c, dt, NULL, 0, 0) == 0, "%s", tt_lasterr());
        check_roundtrip(path, &c, dt, NULL, 0, 0);
        free(dt);
    }
    /* Pruned layer 1 with a pruning map. */
    tt_config p = c;
    CHECK(config_prune(&p, 0.5, 1, 2) == 0);
    CHECK_EQ_INT(p.layers[1].n_kv_heads, 1);
    CHECK_EQ_INT(p.layers[1].n_heads, 2);
    CHECK_EQ_INT(p.layers[1].ffn, 48);
    tier_prune_map map;
    memset(&map, 0, sizeof map);
    uint32_t kv[1] = {1}, ffn[48];
    for (uint32_t i = 0; i < 48; i++) ffn[i] = 2 * i + 1;
    map.kv[1] = kv;
    map.ffn[1] = ffn;
    snprintf(path, sizeof path, "%s/pruned.tier", dir);
    uint32_t *dt = fixture_dtypes(&p, TT_DTYPE_NF4DQ);
    CHECK_MSG(fixture_write_store(path, &p, dt, &map, 0, 0) == 0, "%s", tt_lasterr());
    check_roundtrip(path, &p, dt, &map, 0, 0);
    /* A map with indices out of order is refused by the writer. */
    ffn[3] = ffn[2];
    CHECK(fixture_write_store(path, &p, dt, &map, 0, 0) == -EINVAL);
    free(dt);
    /* lz4 extents when the data is mostly zeros; raw when it is not. */
    snprintf(path, sizeof path, "%s/lz4.tier", dir);
    dt = fixture_dtypes(&c, TT_DTYPE_F32);
    CHECK_MSG(fixture_write_store(path, &c, dt, NULL, 1, 80) == 0, "%s", tt_lasterr());
    check_roundtrip(path, &c, dt, NULL, 80, 1);
    snprintf(path, sizeof path, "%s/lz4-incompressible.tier", dir);
    CHECK_MSG(fixture_write_store(path, &c, dt, NULL, 1, 0) == 0, "%s", tt_lasterr());
    check_roundtrip(path, &c, dt, NULL, 0, 0);
    free(dt);
}

static void expect_open_fails(const char *path, int err, const char *needle) {
    tier_store *s = NULL;
    int rc = tier_open(&s, path);
    CHECK_MSG(rc == err, "%s: expected %d, got %d (%s)", path, err, rc, tt_lasterr());
    CHECK(s == NULL);
    CHECK_MSG(strstr(tt_lasterr(), needle) != NULL, "message '%s' lacks '%s'", tt_lasterr(), needle);
    CHECK_MSG(strstr(tt_lasterr(), path) != NULL, "message '%s' does not name the file", tt_lasterr());
}

static void test_bad_files(const char *dir) {
    char good[600], bad[600];
    tt_config c;
    fixture_micro_config(&c);
    uint32_t *dt = fixture_dtypes(&c, TT_DTYPE_NF4DQ);
    snprintf(good, sizeof good, "%s/good.tier", dir);
    CHECK(fixture_write_store(good, &c, dt, NULL, 0, 0) == 0);
    free(dt);
    uint64_t len;
    uint8_t *img = fixture_slurp(good, &len);
    TT_ASSERT(img);
    snprintf(bad, sizeof bad, "%s/bad.tier", dir);

    expect_open_fails("/nonexistent/dir/x.tier", -ENOENT, "does not exist");
    expect_open_fails(dir, -EISDIR, "directory");
    fixture_spit(bad, img, len - 4096);
    expect_open_fails(bad, -EINVAL, "truncated");
    fixture_spit(bad, img, 100);
    expect_open_fails(bad, -EINVAL, "too short");
    uint8_t *m = malloc(len);
    memcpy(m, img, len);
    m[0] ^= 0x20;
    fixture_spit(bad, m, len);
    expect_open_fails(bad, -EINVAL, "bad magic");
    memcpy(m, img, len);
    m[40] ^= 1;
    fixture_spit(bad, m, len);
    expect_open_fails(bad, -EINVAL, "header is corrupt");
    memcpy(m, img, len);
    m[300] ^= 1;
    fixture_spit(bad, m, len);
    expect_open_fails(bad, -EINVAL, "metadata is corrupt");

    /* A flipped byte in a data extent: the store opens, the checksum catches it. */
    memcpy(m, img, len);
    tier_store *s;
    CHECK(tier_open(&s, good) == 0);
    const tier_extent *x = tier_extent_at(s, TT_EXTENT_LAYER(1));
    m[x->offset + x->stored / 2] ^= 0x01;
    CHECK(tier_extent_check(s, TT_EXTENT_LAYER(1), m + x->offset) == -EIO);
    CHECK(strstr(tt_lasterr(), "checksum mismatch") && strstr(tt_lasterr(), "layer 1"));
    CHECK(tier_extent_check(s, TT_EXTENT_LAYER(0), m + tier_extent_at(s, TT_EXTENT_LAYER(0))->offset) == 0);
    tier_close(s);
    free(m);
    free(img);
}

static void test_writer_failures(const char *dir) {
    char path[600], partial[640];
    tt_config c;
    fixture_micro_config(&c);
    uint32_t *dt = fixture_dtypes(&c, TT_DTYPE_F32);
    tier_write_opts o = {dt, NULL, 0, NULL};
    tier_writer *w;
    /* A directory as output. */
    CHECK(tier_writer_open(&w, dir, &c, &o) == -EISDIR);
    /* A norm stored as nf4 is refused. */
    dt[1] = TT_DTYPE_NF4;
    CHECK(tier_writer_open(&w, "x.tier", &c, &o) == -EINVAL);
    dt[1] = TT_DTYPE_F32;
    /* Abort leaves neither the store nor the partial file. */
    snprintf(path, sizeof path, "%s/aborted.tier", dir);
    snprintf(partial, sizeof partial, "%s.partial", path);
    CHECK(tier_writer_open(&w, path, &c, &o) == 0);
    uint8_t buf[64] = {0};
    CHECK(tier_writer_write(w, 0, buf, sizeof buf) == 0);
    tier_writer_abort(w);
    CHECK(access(path, F_OK) != 0 && access(partial, F_OK) != 0);
    /* "Disk full": a file size limit makes write() fail with EFBIG. The error
     * names the file and the partial file is removed. */
    snprintf(path, sizeof path, "%s/full.tier", dir);
    snprintf(partial, sizeof partial, "%s.partial", path);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 64 * 1024;
    setrlimit(RLIMIT_FSIZE, &lim);
    int rc = fixture_write_store(path, &c, dt, NULL, 0, 0);
    setrlimit(RLIMIT_FSIZE, &old);
    CHECK_MSG(rc == -EFBIG, "rc %d: %s", rc, tt_lasterr());
    CHECK(strstr(tt_lasterr(), path) != NULL);
    CHECK(access(path, F_OK) != 0 && access(partial, F_OK) != 0);
    free(dt);
}

static void test_config(void) {
    tt_config c;
    CHECK(config_preset("llama3.1-70b", &c) == 0);
    CHECK_EQ_INT(config_n_params(&c), 70553706496ull);
    uint32_t a, b;
    config_default_prune_layers(&c, &a, &b);
    CHECK_EQ_INT(a, 4);
    CHECK_EQ_INT(b, 78);
    CHECK(config_prune(&c, 0.85, a, b) == 0);
    /* LoRAM: kv' = 8 - floor(6.8) = 2 (16 query heads), ffn' = 28672 - ceil(24371.2) = 4300. */
    CHECK_EQ_INT(c.layers[4].n_kv_heads, 2);
    CHECK_EQ_INT(c.layers[4].n_heads, 16);
    CHECK_EQ_INT(c.layers[4].ffn, 4300);
    CHECK_EQ_INT(c.layers[3].ffn, 28672);
    CHECK_EQ_INT(c.layers[78].ffn, 28672);
    /* 17.85B in all, embeddings and lm_head included (DESIGN.md). */
    CHECK_NEAR((double)config_n_params(&c) / 1e9, 17.85, 0.005);
    CHECK(config_validate(&c, "x") == 0);
    /* numbers from a file: finite and in range, or refused naming the field */
    tt_config bad = c;
    bad.rope_theta = INFINITY;
    CHECK(config_validate(&bad, "x") == -EINVAL && strstr(tt_lasterr(), "rope_theta inf"));
    bad = c;
    bad.rope_factor = INFINITY;
    CHECK(config_validate(&bad, "x") == -EINVAL && strstr(tt_lasterr(), "rope scaling"));
    bad = c;
    bad.rms_eps = NAN;
    CHECK(config_validate(&bad, "x") == -EINVAL && strstr(tt_lasterr(), "rms_eps nan"));
    bad = c;
    bad.max_pos = 0; /* export would write a config.json that import refuses */
    CHECK(config_validate(&bad, "x") == -EINVAL && strstr(tt_lasterr(), "context length"));
    CHECK(config_prune(&c, 1.0, 4, 78) == -EINVAL);
    CHECK(config_prune(&c, 0.5, 10, 5) == -EINVAL);
    CHECK(config_prune(&c, 0.99999, 4, 78) == -EINVAL); /* ffn' = 28672 - ceil(28671.7) = 0 */
    CHECK(config_preset("llama-9000", &c) == -EINVAL);
    CHECK(strstr(tt_lasterr(), "llama3.1-8b") != NULL);
}

int main(void) {
    char *dir = fixture_tmpdir();
    test_config();
    test_roundtrips(dir);
    test_bad_files(dir);
    test_writer_failures(dir);
    fixture_rm_rf(dir);
    free(dir);
    TEST_END();
}
