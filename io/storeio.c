/* io/storeio.c — see storeio.h. */
#include "io/storeio.h"

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
#include "io/uring.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void tensor_encode(uint32_t dtype, const float *x, uint64_t n, void *blob) {
    switch (dtype) {
    case TT_DTYPE_F32: memcpy(blob, x, n * sizeof(float)); break;
    case TT_DTYPE_BF16: {
        uint16_t *h = blob;
        for (uint64_t i = 0; i < n; i++) h[i] = f32_to_bf16(x[i]);
        break;
    }
    case TT_DTYPE_NF4:
    case TT_DTYPE_NF4DQ: nf4_quantize_tensor(x, n, dtype == TT_DTYPE_NF4DQ, blob); break;
    default: TT_ASSERT(!"tensor_encode: unknown dtype");
    }
}

int store_file_open(uring_reader **out, const tier_store *s) {
    uring_opts o;
    uring_opts_default(&o);
    o.direct = 0; /* the tools read once, through the page cache */
    return uring_reader_reopen(out, tier_fd(s), tier_path(s), &o);
}

int store_read_extent(const tier_store *s, uring_reader *ur, uint32_t e, uint8_t **raw_out) {
    const tier_extent *x = tier_extent_at(s, e);
    uint64_t len = tt_align_up(x->stored ? x->stored : 1, UR_ALIGN); /* extents start and end on 4096 bytes */
    uint8_t *stored = aligned_alloc(UR_ALIGN, len);
    uint8_t *raw = x->codec == TIER_CODEC_RAW ? stored : malloc(x->raw ? x->raw : 1);
    if (!stored || !raw) {
        if (raw != stored) free(raw);
        free(stored);
        return TT_FAIL(-ENOMEM, "out of memory reading %s", tier_path(s));
    }
    int rc = uring_reader_read(ur, stored, x->offset, len);
    if (rc) {
        free(stored);
        if (raw != stored) free(raw);
        return rc;
    }
    rc = tier_extent_check(s, e, stored);
    if (rc == 0 && raw != stored) rc = tier_extent_decode(s, e, stored, raw);
    if (raw != stored) free(stored);
    if (rc) {
        free(raw);
        return rc;
    }
    *raw_out = raw;
    return 0;
}

int store_reader_open(store_reader *r, const char *path) {
    memset(r, 0, sizeof *r);
    r->cur = UINT32_MAX;
    int rc = tier_open(&r->s, path);
    if (rc) return rc;
    rc = store_file_open(&r->ur, r->s);
    if (rc) {
        tier_close(r->s);
        r->s = NULL;
        return rc;
    }
    return 0;
}

void store_reader_close(store_reader *r) {
    if (!r->s) return;
    uring_reader_close(r->ur);
    free(r->raw);
    tier_close(r->s);
    memset(r, 0, sizeof *r);
}

uint32_t store_reader_dtype(const store_reader *r, uint32_t i) { return tier_tensor_at(r->s, i)->dtype; }

int store_reader_tensor(store_reader *r, uint32_t i, float *out) {
    const tier_tensor *t = tier_tensor_at(r->s, i);
    if (t->extent != r->cur) {
        free(r->raw);
        r->raw = NULL;
        r->cur = UINT32_MAX;
        int rc = store_read_extent(r->s, r->ur, t->extent, &r->raw);
        if (rc) return rc;
        r->cur = t->extent;
    }
    dtype_decode_f32(t->dtype, r->raw + t->offset, t->rows * t->cols, 0, t->rows * t->cols, out);
    return 0;
}

uint64_t store_max_tensor(const tt_config *cfg) {
    uint64_t m = 0;
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(cfg); i++) {
        config_tensor(cfg, i, &d);
        if (d.rows * d.cols > m) m = d.rows * d.cols;
    }
    return m;
}

void store_default_dtypes(const tt_config *cfg, uint32_t linear, uint32_t other, uint32_t *dtypes) {
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(cfg); i++) {
        config_tensor(cfg, i, &d);
        dtypes[i] = d.role == TT_ROLE_LINEAR ? linear
                  : d.role == TT_ROLE_NORM   ? TT_DTYPE_F32
                  : other == TT_DTYPE_F32    ? TT_DTYPE_F32
                                             : TT_DTYPE_BF16;
    }
}

int store_check_finite(const char *from, const char *tensor, const float *x, uint64_t n, uint64_t cols,
                       const char *why) {
    TT_ASSERT(cols > 0);
    for (uint64_t j = 0; j < n; j++)
        if (!isfinite(x[j])) {
            char at[64];
            if (cols == 1) snprintf(at, sizeof at, "index %llu", (unsigned long long)j); /* a vector (a norm) */
            else snprintf(at, sizeof at, "row %llu, column %llu", (unsigned long long)(j / cols), (unsigned long long)(j % cols));
            return TT_FAIL(-EINVAL, "%s: tensor %s holds %s at %s; %s", from, tensor,
                           isnan(x[j]) ? "NaN" : x[j] > 0 ? "+inf" : "-inf", at, why);
        }
    return 0;
}

int store_check_quantizable(const char *from, const char *tensor, const float *x, uint64_t n, uint64_t cols) {
    return store_check_finite(from, tensor, x, n, cols, "cannot quantize it to NF4");
}

int store_write(const char *path, const tt_config *cfg, const tier_write_opts *opts, store_fill_fn fill, void *ctx) {
    uint64_t maxn = store_max_tensor(cfg);
    float *vals = malloc(maxn * sizeof *vals);
    uint8_t *blob = malloc(dtype_bytes(TT_DTYPE_F32, maxn) + 16);
    tier_writer *w = NULL;
    int rc = 0;
    if (!vals || !blob) rc = TT_FAIL(-ENOMEM, "out of memory writing %s", path);
    if (rc == 0) rc = tier_writer_open(&w, path, cfg, opts);
    tt_tensor_desc d;
    for (uint32_t i = 0; rc == 0 && i < config_n_tensors(cfg); i++) {
        config_tensor(cfg, i, &d);
        uint64_t n = d.rows * d.cols;
        rc = fill(ctx, i, &d, vals);
        if (rc) break;
        /* a net under fills that do not check (quantize and import do, naming their input) */
        if (dtype_is_nf4(opts->dtypes[i]))
            rc = store_check_quantizable(path, d.name, vals, n, d.cols);
        if (rc) break;
        tensor_encode(opts->dtypes[i], vals, n, blob);
        rc = tier_writer_write(w, i, blob, tier_writer_tensor_bytes(w, i));
    }
    if (w) {
        if (rc) tier_writer_abort(w);
        else rc = tier_writer_finish(w);
    }
    free(vals);
    free(blob);
    return rc;
}

int store_check_output(const char *opt, const char *out, const char *in) {
    struct stat a, b;
    if (in && (strcmp(in, out) == 0 ||
               (stat(in, &a) == 0 && stat(out, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)))
        return TT_FAIL(-EINVAL, "%s %s is the input %s; write the result to a new file", opt, out, in);
    if (stat(out, &b) == 0 && S_ISDIR(b.st_mode))
        return TT_FAIL(-EISDIR, "%s %s is a directory; give the file to write", opt, out);
    char *copy = tt_xmalloc(strlen(out) + 1);
    strcpy(copy, out);
    const char *parent = dirname(copy);
    int rc = 0;
    if (stat(parent, &b) != 0 || !S_ISDIR(b.st_mode))
        rc = TT_FAIL(-ENOENT, "cannot write %s %s: the folder %s does not exist", opt, out, parent);
    else if (access(parent, W_OK) != 0)
        rc = errno == EROFS ? TT_FAIL(-EROFS, "cannot write %s %s: the folder %s is on a read-only file system; write "
                                              "elsewhere", opt, out, parent)
                            : TT_FAIL(-EACCES, "cannot write %s %s: the folder %s is not writable", opt, out, parent);
    free(copy);
    return rc;
}

void store_prune_map_clear(tier_prune_map *map) {
    for (uint32_t l = 0; l < TT_MAX_LAYERS; l++) {
        free(map->kv[l]);
        free(map->ffn[l]);
        map->kv[l] = map->ffn[l] = NULL;
    }
}
