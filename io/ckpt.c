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

_Static_assert(offsetof(ckpt_state, rslora) == CKPT_STATE_V1_BYTES && sizeof(ckpt_state) == 144,
               "the checkpoint's run record changed: keep the old sizes readable (io/ckpt.h)");


static void path_in(char *buf, size_t cap, const char *dir) { snprintf(buf, cap, "%s/%s", dir, CKPT_FILE); }

int ckpt_write(const char *dir, const ckpt_state *st, const void *params, const float *m, const float *v) {
    char path[4096];
    path_in(path, sizeof path, dir);
    size_t pbytes = st->n_params * st->real_bytes, mbytes = st->n_params * sizeof(float);
    uint64_t payload = sizeof *st + pbytes + 2 * mbytes;
    XXH3_state_t *x = XXH3_createState();
    TT_ASSERT(x);
    XXH3_64bits_reset(x);
    XXH3_64bits_update(x, st, sizeof *st);
    XXH3_64bits_update(x, params, pbytes);
    XXH3_64bits_update(x, m, mbytes);
    XXH3_64bits_update(x, v, mbytes);
    uint64_t sum = XXH3_64bits_digest(x);
    XXH3_freeState(x);
    uint8_t hdr[HEADER_BYTES] = {0};
    uint32_t ver = CKPT_VERSION, sbytes = sizeof *st;
    memcpy(hdr, CKPT_MAGIC, 8);
    memcpy(hdr + 8, &ver, 4);
    memcpy(hdr + 12, &sbytes, 4);
    memcpy(hdr + 16, &payload, 8);
    memcpy(hdr + 24, &sum, 8);
    const void *parts[] = {hdr, st, params, m, v};
    size_t sizes[] = {HEADER_BYTES, sizeof *st, pbytes, mbytes, mbytes};
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
    if (sbytes != sizeof *st && sbytes != CKPT_STATE_V1_BYTES) {
        rc = TT_FAIL(-EINVAL, "%s: its run record is %u bytes where version %u has %zu (or %u before --rslora); the "
                     "file is damaged", path, sbytes, CKPT_VERSION, sizeof *st, CKPT_STATE_V1_BYTES);
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
    if (st->rank == 0 || st->rank > 65536 || !isfinite(st->alpha) || !(st->dropout >= 0 && st->dropout < 1) ||
        st->seq == 0 || st->micro_batch == 0 || st->accum == 0 || st->warmup > INT32_MAX || !isfinite(st->lr) ||
        !isfinite(st->min_lr) || !isfinite(st->wd) || !isfinite(st->clip) || st->act_bf16 > 1 || st->rslora > 1 ||
        st->no_pack > 1) {
        rc = TT_FAIL(-EINVAL, "%s: its run record holds impossible values (rank %u, alpha %g, dropout %g, seq %u, "
                     "micro-batch %u, lr %g); the file is damaged", path, st->rank, (double)st->alpha,
                     (double)st->dropout, st->seq, st->micro_batch, (double)st->lr);
        goto out;
    }
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
