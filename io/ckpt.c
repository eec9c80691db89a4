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
               sizeof(ckpt_state) == 824 &&
               sizeof ((ckpt_state *)0)->mix_w / sizeof(double) == CKPT_MIX_MAX,
               "the checkpoint's run record changed: keep the old sizes readable (io/ckpt.h)");

/* The record size a state is written with: a run of one source keeps the record it had before mixtures. */
static uint32_t record_bytes(const ckpt_state *st) {
    return st->full ? (uint32_t)sizeof *st : st->mix_n ? CKPT_STATE_V3_BYTES : CKPT_STATE_V2_BYTES;
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

static void path_in(char *buf, size_t cap, const char *dir) { snprintf(buf, cap, "%s/%s", dir, CKPT_FILE); }

int ckpt_write(const char *dir, const ckpt_state *st, const void *params, const float *m, const float *v) {
    char path[4096];
    path_in(path, sizeof path, dir);
    size_t pbytes = st->n_params * st->real_bytes, mbytes = st->n_params * sizeof(float);
    uint32_t sbytes = record_bytes(st);
    uint64_t payload = sbytes + pbytes + 2 * mbytes;
    XXH3_state_t *x = XXH3_createState();
    TT_ASSERT(x);
    XXH3_64bits_reset(x);
    XXH3_64bits_update(x, st, sbytes);
    XXH3_64bits_update(x, params, pbytes);
    XXH3_64bits_update(x, m, mbytes);
    XXH3_64bits_update(x, v, mbytes);
    uint64_t sum = XXH3_64bits_digest(x);
    XXH3_freeState(x);
    uint8_t hdr[HEADER_BYTES] = {0};
    uint32_t ver = CKPT_VERSION;
    memcpy(hdr, CKPT_MAGIC, 8);
    memcpy(hdr + 8, &ver, 4);
    memcpy(hdr + 12, &sbytes, 4);
    memcpy(hdr + 16, &payload, 8);
    memcpy(hdr + 24, &sum, 8);
    const void *parts[] = {hdr, st, params, m, v};
    size_t sizes[] = {HEADER_BYTES, sbytes, pbytes, mbytes, mbytes};
    return atomic_write_parts(path, parts, sizes, 5);
}

int ckpt_read(const char *dir, ckpt_state *st, void **params, float **m, float **v) {
    *params = NULL; *m = *v = NULL;
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
    uint8_t *body = NULL;
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
    if (sbytes != sizeof *st && sbytes != CKPT_STATE_V3_BYTES && sbytes != CKPT_STATE_V2_BYTES &&
        sbytes != CKPT_STATE_V1_BYTES) {
        rc = TT_FAIL(-EINVAL, "%s: its run record is %u bytes where version %u has %zu (full training), %u (a data "
                     "mixture), %u (one source) or %u (before --rslora); the file is damaged", path, sbytes,
                     CKPT_VERSION, sizeof *st, CKPT_STATE_V3_BYTES, CKPT_STATE_V2_BYTES, CKPT_STATE_V1_BYTES);
        goto out;
    }
    if (payload != (uint64_t)sb.st_size - HEADER_BYTES || payload < sbytes) {
        rc = TT_FAIL(-EINVAL, "%s is truncated or padded: %llu payload bytes announced, %llu present", path,
                     (unsigned long long)payload, (unsigned long long)(sb.st_size - HEADER_BYTES));
        goto out;
    }
    body = malloc(payload);
    if (!body) { rc = TT_FAIL(-ENOMEM, "out of memory reading %s", path); goto out; }
    for (uint64_t done = 0; done < payload;) {
        ssize_t r = pread(fd, body + done, payload - done, (off_t)(HEADER_BYTES + done));
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            rc = TT_FAIL(-EIO, "reading %s failed", path);
            goto out;
        }
        done += (uint64_t)r;
    }
    if (XXH3_64bits(body, payload) != sum) {
        rc = TT_FAIL(-EINVAL, "%s is corrupt (checksum mismatch); resume from an intact checkpoint", path);
        goto out;
    }
    memset(st, 0, sizeof *st);
    memcpy(st, body, sbytes);
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
    if ((rc = check_mix(st, path))) goto out;
    size_t pbytes = st->n_params * st->real_bytes, mbytes = st->n_params * sizeof(float);
    *params = tt_xmalloc(pbytes ? pbytes : 1);
    *m = tt_xmalloc(mbytes ? mbytes : 1);
    *v = tt_xmalloc(mbytes ? mbytes : 1);
    memcpy(*params, body + sbytes, pbytes);
    memcpy(*m, body + sbytes + pbytes, mbytes);
    memcpy(*v, body + sbytes + pbytes + mbytes, mbytes);
out:
    free(body);
    close(fd);
    return rc;
}
