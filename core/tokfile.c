/* core/tokfile.c — writing (streamed, .partial + fsync + rename) and reading
 * (mmap + full validation) of token files; layout in core/tokfile.h. */
#include "core/tokfile.h"

#include "core/base/common.h"
#include "io/atomicfile.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token files are mapped as little-endian u32: build on a little-endian host"
#endif

#define WBUF_TOKENS (1u << 18) /* 1 MiB write-behind buffer */

struct tokfile_writer {
    char *path, *tmp;
    int fd;
    uint32_t vocab, eot;
    uint64_t count;  /* tokens appended */
    uint32_t *buf;   /* (WBUF_TOKENS) pending tokens */
    size_t nbuf;
    int failed;
    int sealed;      /* header written and synced: only the rename is left */
    int v2;
    uint8_t *flags;  /* version 2: every token's flags, written at finish */
    size_t flags_cap;
};

static int w_fail(tokfile_writer *w, int err, const char *what) {
    w->failed = 1;
    return atomic_write_fail(w->path, err, what);
}

static int write_all(tokfile_writer *w, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t r = write(w->fd, p, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return w_fail(w, errno, "writing");
        }
        if (r == 0) return w_fail(w, EIO, "writing");
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static void make_header(uint8_t h[TOKFILE_HEADER_BYTES], int v2, uint64_t count, uint32_t vocab, uint32_t eot) {
    memcpy(h, TOKFILE_MAGIC, 8);
    put32(h + 8, v2 ? TOKFILE_VERSION_2 : TOKFILE_VERSION);
    put32(h + 12, TOKFILE_DTYPE_U32);
    put64(h + 16, count);
    put32(h + 24, vocab);
    put32(h + 28, eot);
}

void tokfile_write_abort(tokfile_writer *w) {
    if (!w) return;
    if (w->tmp) unlink(w->tmp); /* before the close: the lock covers it */
    if (w->fd >= 0) close(w->fd);
    free(w->path);
    free(w->tmp);
    free(w->buf);
    free(w->flags);
    free(w);
}

static int write_open(const char *path, uint32_t vocab, uint32_t eot, int v2, tokfile_writer **out) {
    TT_ASSERT(vocab > 0 && eot < vocab);
    *out = NULL;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return TT_FAIL(-EISDIR, "%s is a directory; give a file name for the token file", path);
    tokfile_writer *w = tt_xcalloc(1, sizeof *w);
    w->fd = -1;
    w->vocab = vocab;
    w->eot = eot;
    w->v2 = v2;
    w->path = strdup(path);
    TT_ASSERT(w->path);
    w->fd = tt_partial_open(path, &w->tmp);
    if (w->fd < 0) { /* w->tmp NULL: nothing of ours to remove (not someone else's file) */
        int rc = w->fd;
        tokfile_write_abort(w);
        return rc;
    }
    w->buf = tt_xmalloc(WBUF_TOKENS * sizeof *w->buf);
    uint8_t h[TOKFILE_HEADER_BYTES]; /* count 0 until finish: an interrupted file never looks complete */
    make_header(h, v2, 0, vocab, eot);
    int rc = write_all(w, h, sizeof h);
    if (rc) { tokfile_write_abort(w); return rc; }
    *out = w;
    return 0;
}

int tokfile_write_open(const char *path, uint32_t vocab, uint32_t eot, tokfile_writer **out) {
    return write_open(path, vocab, eot, 0, out);
}

int tokfile_write_open_v2(const char *path, uint32_t vocab, uint32_t eot, tokfile_writer **out) {
    return write_open(path, vocab, eot, 1, out);
}

static int flush(tokfile_writer *w) {
    int rc = write_all(w, w->buf, w->nbuf * sizeof *w->buf);
    w->nbuf = 0;
    return rc;
}

static int append_tokens(tokfile_writer *w, const uint32_t *tokens, size_t n) {
    for (size_t i = 0; i < n; i++) {
        TT_ASSERT(tokens[i] < w->vocab);
        w->buf[w->nbuf++] = tokens[i];
        if (w->nbuf == WBUF_TOKENS) {
            int rc = flush(w);
            if (rc) return rc;
        }
    }
    w->count += n;
    return 0;
}

int tokfile_append_flags(tokfile_writer *w, const uint32_t *tokens, const uint8_t *flags, size_t n) {
    TT_ASSERT(w->v2 && !w->failed && (n == 0 || w->count > 0 || (flags[0] & TOKFILE_START)));
    if (w->count + n > w->flags_cap) {
        size_t cap = w->flags_cap ? w->flags_cap : 1u << 16;
        while (cap < w->count + n) cap *= 2;
        uint8_t *f = realloc(w->flags, cap);
        if (!f) { w->failed = 1; return TT_FAIL(-ENOMEM, "out of memory holding the flags of %s", w->path); }
        w->flags = f;
        w->flags_cap = cap;
    }
    for (size_t i = 0; i < n; i++) TT_ASSERT(flags[i] <= (TOKFILE_TRAIN | TOKFILE_START));
    memcpy(w->flags + w->count, flags, n);
    return append_tokens(w, tokens, n);
}

int tokfile_append(tokfile_writer *w, const uint32_t *tokens, size_t n) {
    TT_ASSERT(!w->failed && !w->v2);
    return append_tokens(w, tokens, n);
}

uint64_t tokfile_write_count(const tokfile_writer *w) { return w->count; }

int tokfile_write_seal(tokfile_writer *w) {
    TT_ASSERT(!w->failed && !w->sealed);
    int rc = flush(w);
    if (rc == 0 && w->v2 && w->count) rc = write_all(w, w->flags, w->count);
    uint8_t h[TOKFILE_HEADER_BYTES];
    make_header(h, w->v2, w->count, w->vocab, w->eot);
    for (size_t done = 0; rc == 0 && done < sizeof h;) { /* a short write goes on where it stopped */
        ssize_t r = pwrite(w->fd, h + done, sizeof h - done, (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) rc = w_fail(w, r < 0 ? errno : EIO, "writing the header of");
        else done += (size_t)r;
    }
    if (rc == 0 && fsync(w->fd) != 0) rc = w_fail(w, errno, "syncing");
    w->sealed = rc == 0; /* still open: the lock covers the file until commit has renamed it */
    return rc;
}

int tokfile_write_commit(tokfile_writer *w) {
    TT_ASSERT(!w->failed && w->sealed);
    int rc = 0;
    if (rename(w->tmp, w->path) != 0) rc = w_fail(w, errno, "renaming into place");
    if (rc == 0) {
        free(w->tmp); /* renamed: nothing left to remove; abort below closes it (synced: nothing to report) */
        w->tmp = NULL;
        atomic_sync_dir_of(w->path); /* best effort: the rename itself is durable */
    }
    tokfile_write_abort(w);
    return rc;
}

int tokfile_write_finish(tokfile_writer *w) {
    int rc = tokfile_write_seal(w);
    if (rc) {
        tokfile_write_abort(w);
        return rc;
    }
    return tokfile_write_commit(w);
}

/* ---- reading ---- */

struct tokfile {
    char *path;
    void *map;
    size_t map_len;
    const uint32_t *tokens;
    const uint8_t *flags; /* version 2, else NULL */
    uint64_t count;
    uint32_t vocab, eot;
    int fd;                 /* the mapped file itself, for tokfile_check */
    struct timespec mtime;  /* as validated (its size: map_len) */
};

void tokfile_close(tokfile *tf) {
    if (!tf) return;
    if (tf->map) {
        tt_mapped_forget(tf->map);
        munmap(tf->map, tf->map_len);
    }
    if (tf->fd >= 0) close(tf->fd);
    free(tf->path);
    free(tf);
}

static int validate(tokfile *tf, const uint8_t *p, uint64_t size, const char *path) {
    if (memcmp(p, TOKFILE_MAGIC, 8) != 0)
        return TT_FAIL(-EINVAL, "%s is not a tiertrain token file (bad magic); create one with `tiertrain tokenize`",
                       path);
    uint32_t version = get32(p + 8), dtype = get32(p + 12);
    if (version != TOKFILE_VERSION && version != TOKFILE_VERSION_2)
        return TT_FAIL(-EINVAL, "%s is token-file version %u, this tiertrain reads versions 1 and 2; re-create it "
                       "with `tiertrain tokenize`", path, version);
    int v2 = version == TOKFILE_VERSION_2;
    if (dtype != TOKFILE_DTYPE_U32)
        return TT_FAIL(-EINVAL, "%s: the token file header is corrupt (dtype %u, expected 1 = u32); re-create it with "
                       "`tiertrain tokenize`", path, dtype);
    uint64_t count = get64(p + 16);
    uint32_t vocab = get32(p + 24), eot = get32(p + 28);
    if (vocab == 0 || eot >= vocab)
        return TT_FAIL(-EINVAL, "%s: the token file header is corrupt (vocab %u, end-of-text id %u); re-create it "
                       "with `tiertrain tokenize`", path, vocab, eot);
    uint64_t body = size - TOKFILE_HEADER_BYTES, per = v2 ? 5 : 4; /* a u32 token (and its flags byte) */
    if (count > body / per || body != per * count) {
        if (count > body / per)
            return TT_FAIL(-EINVAL, "%s is truncated: its header says %llu tokens but only %llu bytes of tokens "
                           "follow; re-create it with `tiertrain tokenize`", path, (unsigned long long)count,
                           (unsigned long long)body);
        return TT_FAIL(-EINVAL, "%s is corrupt: %llu bytes follow the header where its %llu tokens take %llu; "
                       "re-create it with `tiertrain tokenize`", path, (unsigned long long)body,
                       (unsigned long long)count, (unsigned long long)(per * count));
    }
    if (v2) {
        const uint8_t *f = p + TOKFILE_HEADER_BYTES + 4 * count;
        for (uint64_t i = 0; i < count; i++)
            if (f[i] > (TOKFILE_TRAIN | TOKFILE_START) || (i == 0 && !(f[i] & TOKFILE_START)))
                return TT_FAIL(-EINVAL, "%s is corrupt: token %llu has flags %u (%s); re-create it with `tiertrain "
                               "tokenize`", path, (unsigned long long)i, f[i],
                               i == 0 ? "the first token must start an example" : "only bits 0 and 1 are defined");
        tf->flags = f;
    }
    const uint32_t *tok = (const uint32_t *)(p + TOKFILE_HEADER_BYTES);
    for (uint64_t i = 0; i < count; i++)
        if (tok[i] >= vocab)
            return TT_FAIL(-EINVAL, "%s is corrupt: token %llu is %u, not below the vocab size %u; re-create it "
                           "with `tiertrain tokenize`", path, (unsigned long long)i, tok[i], vocab);
    tf->tokens = tok;
    tf->count = count;
    tf->vocab = vocab;
    tf->eot = eot;
    return 0;
}

int tokfile_open(const char *path, tokfile **out) {
    *out = NULL;
    uint64_t size;
    int fd = tt_open_regular(path, O_RDONLY, "token file", "create a token file with `tiertrain tokenize`", &size);
    if (fd < 0) return fd;
    if (size < TOKFILE_HEADER_BYTES) {
        close(fd);
        return TT_FAIL(-EINVAL, "%s is too short to be a token file (%llu bytes, the header alone is %u); re-create "
                       "it with `tiertrain tokenize`", path, (unsigned long long)size, TOKFILE_HEADER_BYTES);
    }
    struct stat st;
    if (fstat(fd, &st)) {
        int e = errno;
        close(fd);
        return TT_FAIL(-e, "cannot stat %s: %s", path, strerror(e));
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    if (map == MAP_FAILED) {
        close(fd);
        return TT_FAIL(-e, "cannot map %s: %s", path, strerror(e));
    }
    tokfile *tf = tt_xcalloc(1, sizeof *tf);
    tf->fd = fd;
    tf->mtime = st.st_mtim;
    tf->map = map;
    tf->map_len = size;
    tt_mapped_note(map, size, path);
    int rc = validate(tf, map, size, path);
    if (rc) {
        tokfile_close(tf);
        return rc;
    }
    tf->path = strdup(path);
    TT_ASSERT(tf->path);
    *out = tf;
    return 0;
}

int tokfile_check(const tokfile *tf) {
    if (!tf) return 0;
    return tt_check_unchanged(tf->fd, tf->path, tf->map_len, tf->mtime,
                              " (token files are read in place, not copied); put the original back, or write new data "
                              "to another file with `tiertrain tokenize`");
}

const uint32_t *tokfile_tokens(const tokfile *tf) { return tf->tokens; }
uint64_t tokfile_count(const tokfile *tf) { return tf->count; }
uint32_t tokfile_vocab(const tokfile *tf) { return tf->vocab; }
uint32_t tokfile_eot(const tokfile *tf) { return tf->eot; }
const char *tokfile_path(const tokfile *tf) { return tf->path; }
const uint8_t *tokfile_flags(const tokfile *tf) { return tf->flags; }
