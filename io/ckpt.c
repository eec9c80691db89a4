/* io/ckpt.c — checkpoint files. */
#include "io/ckpt.h"
#include "io/atomicfile.h"

#include "core/base/common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define HEADER_BYTES 32u /* magic, version, state bytes, payload bytes, checksum */

_Static_assert(offsetof(ckpt_state, rslora) == CKPT_STATE_V1_BYTES &&
               offsetof(ckpt_state, mix_n) == CKPT_STATE_V2_BYTES && offsetof(ckpt_state, full) == CKPT_STATE_V3_BYTES &&
               offsetof(ckpt_state, weights_fp) == CKPT_STATE_V4_BYTES &&
               offsetof(ckpt_state, val_tokens) == CKPT_STATE_V5_BYTES && sizeof(ckpt_state) == 856 &&
               sizeof ((ckpt_state *)0)->mix_w / sizeof(double) == CKPT_MIX_MAX,
               "the checkpoint's run record changed: keep the old sizes readable (io/ckpt.h)");

/* The record size a state is written with: all of it where the validation's identity is recorded, else the
 * record such a run wrote before (a run of one source keeps the one it had before mixtures). */
static uint32_t record_bytes(const ckpt_state *st) {
    if (st->val_hash) return (uint32_t)sizeof *st;
    if (st->weights_fp) return CKPT_STATE_V5_BYTES;
    return st->full ? CKPT_STATE_V4_BYTES : st->mix_n ? CKPT_STATE_V3_BYTES : CKPT_STATE_V2_BYTES;
}

/* The mixture record: a source count that indexes its arrays, weights that are a distribution (within
 * rounding), a known mode; a dynamic mixture's temperature and every-N that the run can use. */
static int check_mix(const ckpt_state *st, const char *path) {
    if (st->mix_n == 0) return 0;
    if (st->mix_n < 2 || st->mix_n > (uint32_t)CKPT_MIX_MAX || st->mix_mode > 1)
        return TT_FAIL(-EINVAL, "%s: its data mixture record holds impossible values (mix_n %u sources, mode %u); the "
                       "file is damaged", path, st->mix_n, st->mix_mode);
    double sb = 0, sw = 0;
    int ok = 1;
    for (uint32_t i = 0; i < st->mix_n; i++) {
        ok &= st->mix_base[i] >= 0 && st->mix_base[i] <= 1 && st->mix_w[i] >= 0 && st->mix_w[i] <= 1;
        ok &= !st->mix_mode || isfinite(st->mix_ref[i]); /* dynamic: every source was scored */
        sb += st->mix_base[i];
        sw += st->mix_w[i];
    }
    if (!ok || !(fabs(sb - 1) < 1e-9) || !(fabs(sw - 1) < 1e-9) ||
        (st->mix_mode && (st->mix_every == 0 || st->mix_every > INT32_MAX || !isfinite(st->mix_tau) ||
                          !(st->mix_tau > 0))))
        return TT_FAIL(-EINVAL, "%s: its data mixture record holds impossible values (mix weights that are not a "
                       "distribution, a reference loss that is not finite, or --mix-every %u, --mix-temp %g); the "
                       "file is damaged", path, st->mix_every, (double)st->mix_tau);
    return 0;
}

/* dir's checkpoint file into buf; 0 where the path does not fit. */
static int path_in(char *buf, size_t cap, const char *dir) {
    return snprintf(buf, cap, "%s/%s", dir, CKPT_FILE) < (int)cap;
}

int ckpt_exists(const char *dir) {
    char p[4200];
    struct stat st;
    return path_in(p, sizeof p, dir) && stat(p, &st) == 0;
}

/* ---- writing --------------------------------------------------------------------
 * The header's checksum covers the payload, which is hashed as it is
 * appended; the header goes last, over the zeros left for it. */
struct ckpt_writer {
    char path[4096];
    atomic_partial part; /* "<path>.partial", open and locked */
    uint32_t sbytes;
    uint64_t payload, done; /* the payload's bytes: announced, appended */
    XXH3_state_t *x;
};

/* Frees w, removing its partial file; returns rc. */
static int writer_drop(ckpt_writer *w, int rc) {
    atomic_partial_drop(&w->part);
    XXH3_freeState(w->x);
    free(w);
    return rc;
}

int ckpt_writer_open(ckpt_writer **out, const char *dir, const ckpt_state *st) {
    *out = NULL;
    ckpt_writer *w = tt_xcalloc(1, sizeof *w);
    path_in(w->path, sizeof w->path, dir);
    int rc = atomic_partial_open(w->path, &w->part);
    if (rc) {
        free(w);
        return rc;
    }
    w->sbytes = record_bytes(st);
    w->payload = w->sbytes + st->n_params * (st->real_bytes + 2 * sizeof(float));
    w->x = XXH3_createState();
    TT_ASSERT(w->x);
    XXH3_64bits_reset(w->x);
    static const uint8_t zero[HEADER_BYTES];
    int e = atomic_write_all(w->part.fd, zero, HEADER_BYTES);
    if (e) return writer_drop(w, atomic_write_fail(w->path, e, "writing"));
    rc = ckpt_writer_put(w, st, w->sbytes); /* the record: the payload's first bytes */
    if (rc == 0) *out = w;
    return rc;
}

int ckpt_writer_put(ckpt_writer *w, const void *data, size_t bytes) {
    TT_ASSERT(w->done + bytes <= w->payload); /* the pieces add up to what the record announces */
    int e = atomic_write_all(w->part.fd, data, bytes);
    if (e) return writer_drop(w, atomic_write_fail(w->path, e, "writing"));
    XXH3_64bits_update(w->x, data, bytes);
    w->done += bytes;
    return 0;
}

int ckpt_writer_zeros(ckpt_writer *w, uint64_t bytes) {
    static const uint8_t zero[1 << 20]; /* GaLore's moment sections are mostly zeros: few, large writes */
    while (bytes) {
        size_t n = bytes < sizeof zero ? (size_t)bytes : sizeof zero;
        int rc = ckpt_writer_put(w, zero, n);
        if (rc) return rc;
        bytes -= n;
    }
    return 0;
}

int ckpt_writer_close(ckpt_writer *w) {
    TT_ASSERT(w->done == w->payload);
    uint8_t hdr[HEADER_BYTES] = {0};
    uint32_t ver = CKPT_VERSION;
    uint64_t sum = XXH3_64bits_digest(w->x);
    memcpy(hdr, CKPT_MAGIC, 8);
    memcpy(hdr + 8, &ver, 4);
    memcpy(hdr + 12, &w->sbytes, 4);
    memcpy(hdr + 16, &w->payload, 8);
    memcpy(hdr + 24, &sum, 8);
    for (size_t done = 0; done < HEADER_BYTES;) {
        ssize_t r = pwrite(w->part.fd, hdr + done, HEADER_BYTES - done, (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return writer_drop(w, atomic_write_fail(w->path, r < 0 ? errno : EIO, "writing"));
        done += (size_t)r;
    }
    /* synced, renamed into place (or removed), then closed */
    int rc = atomic_commit(&w->part, w->path);
    XXH3_freeState(w->x);
    free(w);
    return rc;
}

void ckpt_writer_abort(ckpt_writer *w) {
    if (w) writer_drop(w, 0);
}

int ckpt_write(const char *dir, const ckpt_state *st, const void *params, const float *m, const float *v) {
    ckpt_writer *w;
    int rc = ckpt_writer_open(&w, dir, st);
    size_t pbytes = st->n_params * st->real_bytes, mbytes = st->n_params * sizeof(float);
    if (rc == 0) rc = ckpt_writer_put(w, params, pbytes);
    if (rc == 0) rc = ckpt_writer_put(w, m, mbytes);
    if (rc == 0) rc = ckpt_writer_put(w, v, mbytes);
    return rc ? rc : ckpt_writer_close(w);
}

/* ---- reading --------------------------------------------------------------------
 * The payload is read once, in order, for its checksum (and the record at its
 * start); the parameters and moments are then read where the caller asks. */
struct ckpt_reader {
    char path[4096];
    int fd;
    uint64_t base;          /* the parameters' file offset */
    uint64_t size[3];       /* params, m, v: bytes */
};

int ckpt_reader_open(ckpt_reader **out, const char *dir, ckpt_state *st) {
    *out = NULL;
    char path[4096];
    path_in(path, sizeof path, dir);
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return TT_FAIL(-ENOENT, "--resume %s: no such checkpoint directory", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block the open */
    if (fd < 0)
        return TT_FAIL(-errno, "%s: cannot open the checkpoint (%s); was the run started with --out %s?", path,
                       strerror(errno), dir);
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return TT_FAIL(-EINVAL, "%s is not a regular file; it is not a usable checkpoint", path);
    }
    int rc = 0;
    uint8_t hdr[HEADER_BYTES];
    uint8_t *buf = NULL;
    XXH3_state_t *x = NULL;
    if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size < HEADER_BYTES + CKPT_STATE_V1_BYTES ||
        pread(fd, hdr, HEADER_BYTES, 0) != HEADER_BYTES) {
        rc = TT_FAIL(-EINVAL, "%s is truncated; it is not a usable checkpoint", path);
        goto out;
    }
    uint32_t ver, sbytes;
    uint64_t payload, sum;
    memcpy(&ver, hdr + 8, 4); memcpy(&sbytes, hdr + 12, 4); memcpy(&payload, hdr + 16, 8); memcpy(&sum, hdr + 24, 8);
    if (memcmp(hdr, CKPT_MAGIC, 8) != 0) { rc = TT_FAIL(-EINVAL, "%s is not a tiertrain checkpoint", path); goto out; }
    if (ver != CKPT_VERSION) {
        rc = TT_FAIL(-EINVAL, "%s: checkpoint version %u is not supported (this tiertrain reads version %u)", path,
                     ver, CKPT_VERSION);
        goto out;
    }
    if (sbytes != sizeof *st && sbytes != CKPT_STATE_V5_BYTES && sbytes != CKPT_STATE_V4_BYTES &&
        sbytes != CKPT_STATE_V3_BYTES && sbytes != CKPT_STATE_V2_BYTES && sbytes != CKPT_STATE_V1_BYTES) {
        rc = TT_FAIL(-EINVAL, "%s: its run record is %u bytes where version %u has %zu (with the validation's "
                     "identity), %u (the weights'), %u (full training), %u (a data mixture), %u (one source) or %u "
                     "(before --rslora); the file is damaged", path, sbytes, CKPT_VERSION, sizeof *st,
                     CKPT_STATE_V5_BYTES, CKPT_STATE_V4_BYTES, CKPT_STATE_V3_BYTES, CKPT_STATE_V2_BYTES,
                     CKPT_STATE_V1_BYTES);
        goto out;
    }
    if (payload != (uint64_t)sb.st_size - HEADER_BYTES || payload < sbytes) {
        rc = TT_FAIL(-EINVAL, "%s is truncated or padded: %llu payload bytes announced, %llu present", path,
                     (unsigned long long)payload, (unsigned long long)(sb.st_size - HEADER_BYTES));
        goto out;
    }
    /* the checksum over the payload, 8 MiB at a time; the record is its first sbytes */
    const size_t chunk = (size_t)8 << 20;
    buf = malloc(chunk);
    x = XXH3_createState();
    if (!buf || !x) { rc = TT_FAIL(-ENOMEM, "out of memory reading %s", path); goto out; }
    XXH3_64bits_reset(x);
    memset(st, 0, sizeof *st);
    for (uint64_t done = 0; done < payload;) {
        size_t want = payload - done < chunk ? (size_t)(payload - done) : chunk;
        ssize_t r = pread(fd, buf, want, (off_t)(HEADER_BYTES + done));
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            rc = TT_FAIL(-EIO, "reading %s failed", path);
            goto out;
        }
        if (done < sbytes) memcpy((uint8_t *)st + done, buf, sbytes - done < (uint64_t)r ? sbytes - done : (size_t)r);
        XXH3_64bits_update(x, buf, (size_t)r);
        done += (uint64_t)r;
    }
    if (XXH3_64bits_digest(x) != sum) {
        rc = TT_FAIL(-EINVAL, "%s is corrupt (checksum mismatch); resume from an intact checkpoint", path);
        goto out;
    }
    /* every count checked before it sizes anything (a forged n_params must not wrap the products) */
    if (st->real_bytes != 4 && st->real_bytes != 8) {
        rc = TT_FAIL(-EINVAL, "%s: real_bytes is %u (4 or 8 expected)", path, st->real_bytes);
        goto out;
    }
    uint64_t per = st->real_bytes + 2 * sizeof(float);
    if (st->n_params > (payload - sbytes) / per || sbytes + st->n_params * per != payload) {
        rc = TT_FAIL(-EINVAL, "%s: n_params %llu does not match the %llu bytes of parameters and moments present", path,
                     (unsigned long long)st->n_params, (unsigned long long)(payload - sbytes));
        goto out;
    }
    if (st->steps == 0 || st->steps > INT32_MAX || st->step > st->steps) {
        rc = TT_FAIL(-EINVAL, "%s: step %llu of %u steps is not a step of the run", path, (unsigned long long)st->step,
                     st->steps);
        goto out;
    }
    if ((!st->full && (st->rank == 0 || st->rank > 65536)) || !isfinite(st->alpha) || !(st->dropout >= 0 && st->dropout < 1) ||
        st->seq == 0 || st->micro_batch == 0 || st->accum == 0 || st->warmup > INT32_MAX || !isfinite(st->lr) ||
        !isfinite(st->min_lr) || !isfinite(st->wd) || !isfinite(st->clip) || st->act_bf16 > 1 || st->rslora > 1 ||
        st->no_pack > 1) {
        rc = TT_FAIL(-EINVAL, "%s: its run record holds impossible values (rank %u, alpha %g, dropout %g, seq %u, "
                     "micro-batch %u, lr %g); the file is damaged", path, st->rank, (double)st->alpha,
                     (double)st->dropout, st->seq, st->micro_batch, (double)st->lr);
        goto out;
    }
    if (st->full > 1 || (st->full && (st->rank != 0 || st->real_bytes != 4 || st->optim > 1 ||
                                      (st->optim && (st->galore_rank == 0 || st->galore_rank > 65536 ||
                                                     st->galore_every > 100000000 || !isfinite(st->galore_scale) ||
                                                     !(st->galore_scale > 0))) ||
                                      st->reserved != 0))) {
        rc = TT_FAIL(-EINVAL, "%s: its full-training record holds impossible values (full %u, optim %u, GaLore rank %u, "
                     "scale %g); the file is damaged", path, st->full, st->optim, st->galore_rank,
                     (double)st->galore_scale);
        goto out;
    }
    if (st->reserved2 != 0 || (st->val_hash ? st->val_tokens == 0 || st->eval_tokens == 0
                                             : st->val_tokens != 0 || st->eval_tokens != 0)) {
        rc = TT_FAIL(-EINVAL, "%s: its validation record holds impossible values (%llu tokens, hash %016llx, "
                     "--eval-tokens %u); the file is damaged", path, (unsigned long long)st->val_tokens,
                     (unsigned long long)st->val_hash, st->eval_tokens);
        goto out;
    }
    if ((rc = check_mix(st, path))) goto out;
    ckpt_reader *r = tt_xcalloc(1, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", path);
    r->fd = fd;
    r->base = HEADER_BYTES + sbytes;
    r->size[0] = st->n_params * st->real_bytes;
    r->size[1] = r->size[2] = st->n_params * sizeof(float);
    *out = r;
    fd = -1;
out:
    free(buf);
    XXH3_freeState(x);
    if (fd >= 0) close(fd);
    return rc;
}

int ckpt_reader_get(ckpt_reader *r, int section, uint64_t offset, void *dst, size_t bytes) {
    TT_ASSERT(section >= 0 && section < 3 && offset + bytes <= r->size[section]); /* within what the record sized */
    uint64_t at = r->base + offset;
    for (int s = 0; s < section; s++) at += r->size[s];
    for (size_t done = 0; done < bytes;) {
        ssize_t n = pread(r->fd, (uint8_t *)dst + done, bytes - done, (off_t)(at + done));
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            return TT_FAIL(-EIO, "reading %s failed%s", r->path, n == 0 ? ": it was cut short while reading" : "");
        }
        done += (size_t)n;
    }
    return 0;
}

void ckpt_reader_close(ckpt_reader *r) {
    if (!r) return;
    close(r->fd);
    free(r);
}

int ckpt_read(const char *dir, ckpt_state *st, void **params, float **m, float **v) {
    *params = NULL; *m = *v = NULL;
    ckpt_reader *r;
    int rc = ckpt_reader_open(&r, dir, st);
    if (rc) return rc;
    *params = tt_xmalloc(r->size[0] ? r->size[0] : 1);
    *m = tt_xmalloc(r->size[1] ? r->size[1] : 1);
    *v = tt_xmalloc(r->size[2] ? r->size[2] : 1);
    rc = ckpt_reader_get(r, 0, 0, *params, r->size[0]);
    if (rc == 0) rc = ckpt_reader_get(r, 1, 0, *m, r->size[1]);
    if (rc == 0) rc = ckpt_reader_get(r, 2, 0, *v, r->size[2]);
    ckpt_reader_close(r);
    if (rc) {
        free(*params); free(*m); free(*v);
        *params = NULL; *m = *v = NULL;
    }
    return rc;
}
