/* io/safetensors.c — safetensors reader (validate the whole header, then
 * pread tensors on demand) and writers (st_write: reference layout;
 * st_writer: streamed in the caller's order; both .partial + fsync +
 * rename). docs/FORMAT.md describes the format; io/safetensors.h the API. */
#include "io/safetensors.h"
#include "io/atomicfile.h"

#include "core/base/common.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- dtypes --------------------------------------------------------------- */

static const struct {
    const char *name;
    uint32_t size;
} g_dtypes[ST_DTYPE_COUNT] = {
    [ST_DTYPE_BOOL] = {"BOOL", 1},       [ST_DTYPE_U8] = {"U8", 1},
    [ST_DTYPE_I8] = {"I8", 1},           [ST_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
    [ST_DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [ST_DTYPE_F8_E8M0] = {"F8_E8M0", 1},
    [ST_DTYPE_I16] = {"I16", 2},         [ST_DTYPE_U16] = {"U16", 2},
    [ST_DTYPE_F16] = {"F16", 2},         [ST_DTYPE_BF16] = {"BF16", 2},
    [ST_DTYPE_I32] = {"I32", 4},         [ST_DTYPE_U32] = {"U32", 4},
    [ST_DTYPE_F32] = {"F32", 4},         [ST_DTYPE_C64] = {"C64", 8},
    [ST_DTYPE_F64] = {"F64", 8},         [ST_DTYPE_I64] = {"I64", 8},
    [ST_DTYPE_U64] = {"U64", 8},
};

const char *st_dtype_name(int dtype) {
    return dtype >= 0 && dtype < ST_DTYPE_COUNT ? g_dtypes[dtype].name : NULL;
}

int st_dtype_parse(const char *s) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(s, g_dtypes[i].name) == 0) return i;
    return -1;
}

uint32_t st_dtype_size(int dtype) {
    TT_ASSERT(dtype >= 0 && dtype < ST_DTYPE_COUNT);
    return g_dtypes[dtype].size;
}

static uint64_t get_le64(const uint8_t *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

static void put_le64(uint8_t *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}

/* a*b into *out; 0 on overflow. */
static int mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (a && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* ---- reader --------------------------------------------------------------- */

struct st_file {
    char *path;
    int fd;                /* -1 for a parsed buffer */
    uint64_t data_start;   /* 8 + N */
    uint32_t n;
    st_tensor *t;          /* [n], data-offset order */
    uint32_t *by_name;     /* [n], indices into t sorted by name */
    uint32_t n_meta;
    char **meta;           /* [2 * n_meta]: key, value, ... */
    uint64_t size;         /* the file's size and modification time at st_open: st_read checks them */
    struct timespec mtime;
};

void st_close(st_file *st) {
    if (!st) return;
    if (st->fd >= 0) close(st->fd);
    for (uint32_t i = 0; i < st->n; i++) free((char *)st->t[i].name);
    for (uint32_t i = 0; i < 2 * st->n_meta; i++) free(st->meta[i]);
    free(st->t);
    free(st->by_name);
    free(st->meta);
    free(st->path);
    free(st);
}

const char *st_path(const st_file *st) { return st->path; }
uint32_t st_count(const st_file *st) { return st->n; }
uint32_t st_metadata_count(const st_file *st) { return st->n_meta; }

const st_tensor *st_tensor_at(const st_file *st, uint32_t i) {
    TT_ASSERT(i < st->n);
    return &st->t[i];
}

void st_metadata_at(const st_file *st, uint32_t i, const char **key, const char **value) {
    TT_ASSERT(i < st->n_meta);
    *key = st->meta[2 * i];
    *value = st->meta[2 * i + 1];
}

const char *st_metadata(const st_file *st, const char *key) {
    for (uint32_t i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[2 * i], key) == 0) return st->meta[2 * i + 1];
    return NULL;
}

int st_find(const st_file *st, const char *name) {
    uint32_t lo = 0, hi = st->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->t[st->by_name[mid]].name, name);
        if (c == 0) return (int)st->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

/* Sorting helpers (qsort has no context argument; parsing is single-threaded
 * per call, so a thread-local pointer is enough). */
static _Thread_local const st_tensor *g_sort_t;

static int cmp_offset(const void *a, const void *b) {
    const st_tensor *x = &g_sort_t[*(const uint32_t *)a], *y = &g_sort_t[*(const uint32_t *)b];
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(g_sort_t[*(const uint32_t *)a].name, g_sort_t[*(const uint32_t *)b].name);
}

/* Reads a non-negative JSON integer; 0 if v is anything else. */
static int get_uint(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return 0;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

/* Validates one tensor entry of the header into *t (offset relative to the
 * data region for now). */
static int parse_entry(const char *file, const char *key, const json_t *v, uint64_t data_size, st_tensor *t) {
    if (!json_is_object(v))
        return TT_FAIL(-EINVAL, "%s: the header entry of tensor \"%s\" is not a JSON object; the file is corrupt", file,
                       key);
    const json_t *jd = json_object_get(v, "dtype");
    const json_t *js = json_object_get(v, "shape");
    const json_t *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return TT_FAIL(-EINVAL, "%s: tensor \"%s\" has no \"dtype\" string; the file is corrupt", file, key);
    int dt = st_dtype_parse(json_string_value(jd));
    if (dt < 0 && (strcmp(json_string_value(jd), "F4") == 0 || strncmp(json_string_value(jd), "F6_", 3) == 0))
        return TT_FAIL(-EINVAL,
                       "%s: tensor \"%s\" has the sub-byte dtype %.32s, which tiertrain does not read; convert "
                       "the tensor to F16, BF16 or F32",
                       file, key, json_string_value(jd));
    if (dt < 0)
        return TT_FAIL(-EINVAL,
                       "%s: tensor \"%s\" has dtype \"%.32s\", which tiertrain does not know (known: F32, F16, "
                       "BF16, F64, I64, I32, I16, I8, U8, BOOL, ...); convert the tensor or the file",
                       file, key, json_string_value(jd));
    if (!json_is_array(js))
        return TT_FAIL(-EINVAL, "%s: tensor \"%s\" has no \"shape\" array; the file is corrupt", file, key);
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIM)
        return TT_FAIL(-EINVAL, "%s: tensor \"%s\" has %zu dimensions, more than the %d supported", file, key, nd,
                       ST_MAX_DIM);
    t->dtype = (st_dtype)dt;
    t->ndim = (uint32_t)nd;
    uint64_t count = 1;
    for (size_t d = 0; d < nd; d++) {
        if (!get_uint(json_array_get(js, d), &t->shape[d]))
            return TT_FAIL(-EINVAL,
                           "%s: tensor \"%s\": shape entry %zu is not a non-negative integer; the file is corrupt",
                           file, key, d);
        if (!mul_ok(count, t->shape[d], &count))
            return TT_FAIL(-EINVAL, "%s: tensor \"%s\": the element count of its shape overflows; the file is corrupt",
                           file, key);
    }
    if (!mul_ok(count, g_dtypes[dt].size, &t->nbytes))
        return TT_FAIL(-EINVAL, "%s: tensor \"%s\": its byte size overflows; the file is corrupt", file, key);
    uint64_t b, e;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !get_uint(json_array_get(jo, 0), &b) ||
        !get_uint(json_array_get(jo, 1), &e))
        return TT_FAIL(-EINVAL,
                       "%s: tensor \"%s\": \"data_offsets\" is not a pair of non-negative integers; the file is "
                       "corrupt",
                       file, key);
    if (b > e)
        return TT_FAIL(-EINVAL,
                       "%s: tensor \"%s\": data_offsets [%llu, %llu] end before they begin; the file is corrupt", file,
                       key, (unsigned long long)b, (unsigned long long)e);
    if (e > data_size)
        return TT_FAIL(-EINVAL,
                       "%s: tensor \"%s\": data_offsets end at %llu, past the end of the data region (%llu bytes); "
                       "the file is truncated or corrupt",
                       file, key, (unsigned long long)e, (unsigned long long)data_size);
    if (e - b != t->nbytes)
        return TT_FAIL(-EINVAL, "%s: tensor \"%s\": data_offsets span %llu bytes but its dtype %s and shape need %llu; "
                       "the file is corrupt", file, key, (unsigned long long)(e - b), g_dtypes[dt].name,
                       (unsigned long long)t->nbytes);
    t->offset = b;
    return 0;
}

static int parse_metadata(const char *file, const json_t *v, st_file *st) {
    if (!json_is_object(v))
        return TT_FAIL(-EINVAL, "%s: \"__metadata__\" is not a JSON object of strings; the file is corrupt", file);
    size_t n = json_object_size(v);
    st->meta = tt_xcalloc(2 * n, sizeof *st->meta);
    const char *k;
    const json_t *x;
    json_object_foreach((json_t *)v, k, x) {
        if (!json_is_string(x))
            return TT_FAIL(-EINVAL, "%s: \"__metadata__\" value of \"%s\" is not a string; safetensors metadata maps "
                           "strings to strings", file, k);
        st->meta[2 * st->n_meta] = strdup(k);
        st->meta[2 * st->n_meta + 1] = strdup(json_string_value(x));
        TT_ASSERT(st->meta[2 * st->n_meta] && st->meta[2 * st->n_meta + 1]);
        st->n_meta++;
    }
    return 0;
}

/* Validates the header length of a file of file_size bytes. */
static int check_header_len(const char *file, uint64_t n, uint64_t file_size) {
    if (n > ST_MAX_HEADER)
        return TT_FAIL(-EINVAL, "%s: the header length field says %llu bytes, over the 100 MB limit; the file is "
                       "corrupt or not a safetensors file", file, (unsigned long long)n);
    if (n > file_size - 8)
        return TT_FAIL(-EINVAL,
                       "%s: the header length field (%llu bytes) runs past the end of the file (%llu bytes); the "
                       "file is truncated or not a safetensors file",
                       file, (unsigned long long)n, (unsigned long long)file_size);
    return 0;
}

/* Parses and validates the N header bytes of a file of file_size bytes into
 * st (tensors, name index, metadata). */
static int parse_header(const char *file, const uint8_t *json, uint64_t n, uint64_t file_size, st_file *st) {
    uint64_t data_size = file_size - 8 - n;
    st->data_start = 8 + n;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)json, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (strstr(jerr.text, "duplicate"))
            return TT_FAIL(
                -EINVAL,
                "%s: the header repeats a tensor name or metadata key (%s, line %d column %d); the file is corrupt",
                file, jerr.text, jerr.line, jerr.column);
        return TT_FAIL(-EINVAL,
                       "%s: the header is not valid JSON (%s, line %d column %d); the file is corrupt or not a "
                       "safetensors file",
                       file, jerr.text, jerr.line, jerr.column);
    }
    int rc = 0;
    if (!json_is_object(root)) {
        rc = TT_FAIL(-EINVAL, "%s: the header is not a JSON object; the file is corrupt or not a safetensors file",
                     file);
        goto out;
    }
    size_t cap = json_object_size(root);
    st->t = tt_xcalloc(cap, sizeof *st->t);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            rc = parse_metadata(file, v, st);
            if (rc) goto out;
            continue;
        }
        st_tensor *t = &st->t[st->n];
        rc = parse_entry(file, key, v, data_size, t);
        if (rc) goto out;
        t->name = strdup(key);
        TT_ASSERT(t->name);
        st->n++;
    }
    /* The tensors must tile [0, data_size): sort by offset, walk. */
    uint32_t *ord = tt_xcalloc(st->n, sizeof *ord);
    for (uint32_t i = 0; i < st->n; i++) ord[i] = i;
    g_sort_t = st->t;
    qsort(ord, st->n, sizeof *ord, cmp_offset);
    uint64_t pos = 0;
    for (uint32_t k = 0; k < st->n && rc == 0; k++) {
        const st_tensor *t = &st->t[ord[k]];
        if (t->offset < pos)
            rc = TT_FAIL(-EINVAL, "%s: tensor \"%s\" (bytes %llu..%llu) overlaps tensor \"%s\"; the file is corrupt",
                         file, t->name, (unsigned long long)t->offset, (unsigned long long)(t->offset + t->nbytes),
                         st->t[ord[k - 1]].name);
        else if (t->offset > pos)
            rc = TT_FAIL(-EINVAL,
                         "%s: the data region has a hole of %llu bytes before tensor \"%s\"; the file is corrupt", file,
                         (unsigned long long)(t->offset - pos), t->name);
        pos = t->offset + t->nbytes;
    }
    if (rc == 0 && pos != data_size)
        rc = TT_FAIL(-EINVAL,
                     "%s: the data region has %llu bytes but its tensors cover %llu; the file is corrupt or has "
                     "trailing bytes",
                     file, (unsigned long long)data_size, (unsigned long long)pos);
    if (rc == 0) {
        /* Keep the tensors in offset order with absolute offsets. */
        st_tensor *sorted = tt_xcalloc(st->n, sizeof *sorted);
        for (uint32_t k = 0; k < st->n; k++) {
            sorted[k] = st->t[ord[k]];
            sorted[k].offset += st->data_start;
        }
        free(st->t);
        st->t = sorted;
        st->by_name = tt_xcalloc(st->n, sizeof *st->by_name);
        for (uint32_t i = 0; i < st->n; i++) st->by_name[i] = i;
        g_sort_t = st->t;
        qsort(st->by_name, st->n, sizeof *st->by_name, cmp_name);
    }
    free(ord);
out:
    json_decref(root);
    return rc;
}

int st_parse_buffer(const void *buf, size_t len, const char *name) {
    const uint8_t *b = buf;
    if (len < 8)
        return TT_FAIL(-EINVAL, "%s is too short to be a safetensors file (%zu bytes, at least 8 needed)", name, len);
    uint64_t n = get_le64(b);
    int rc = check_header_len(name, n, len);
    if (rc) return rc;
    st_file *st = tt_xcalloc(1, sizeof *st);
    st->fd = -1;
    rc = parse_header(name, b + 8, n, len, st);
    st_close(st);
    return rc;
}

/* pread exactly n bytes at off; 0, or -EIO / -errno with a message. */
static int read_full(int fd, void *dst, uint64_t n, uint64_t off, const char *path) {
    uint8_t *p = dst;
    while (n) {
        ssize_t r = pread(fd, p, n > (1u << 30) ? (1u << 30) : n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            return TT_FAIL(-EIO, "reading %s at offset %llu failed: %s", path, (unsigned long long)off, strerror(e));
        }
        if (r == 0)
            return TT_FAIL(-EIO, "%s ends at offset %llu, before the data its header describes; the file was truncated "
                           "(re-copy it)", path, (unsigned long long)off);
        p += r;
        n -= (uint64_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int st_open(const char *path, st_file **out) {
    *out = NULL;
    uint64_t size;
    int fd = tt_open_regular(path, O_RDONLY, "safetensors file", "check the path", &size);
    if (fd < 0) return fd;
    if (size < 8) {
        close(fd);
        return TT_FAIL(-EINVAL, "%s is too short to be a safetensors file (%llu bytes, at least 8 needed)", path,
                       (unsigned long long)size);
    }
    uint8_t len8[8];
    int rc = read_full(fd, len8, 8, 0, path);
    uint64_t n = rc ? 0 : get_le64(len8);
    if (rc == 0) rc = check_header_len(path, n, size);
    if (rc) {
        close(fd);
        return rc;
    }
    uint8_t *hdr = malloc(n ? n : 1);
    if (!hdr) {
        close(fd);
        return TT_FAIL(-ENOMEM, "%s: out of memory reading its %llu-byte header", path, (unsigned long long)n);
    }
    st_file *st = tt_xcalloc(1, sizeof *st);
    st->fd = fd;
    struct stat sb = {0};
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        rc = TT_FAIL(-e, "cannot stat %s: %s", path, strerror(e));
    }
    st->size = size;
    st->mtime = sb.st_mtim;
    if (rc == 0) rc = read_full(fd, hdr, n, 8, path);
    if (rc == 0) rc = parse_header(path, hdr, n, size, st);
    free(hdr);
    if (rc) {
        st_close(st);
        return rc;
    }
    st->path = strdup(path);
    TT_ASSERT(st->path);
    *out = st;
    return 0;
}

int st_read(const st_file *st, uint32_t i, void *dst) {
    TT_ASSERT(i < st->n && st->fd >= 0);
    const st_tensor *t = &st->t[i];
    int rc = read_full(st->fd, dst, t->nbytes, t->offset, st->path);
    if (rc) return rc;
    /* safetensors carry no checksums: a file rewritten in place since st_open (a shard copied over during import)
     * would give other bytes silently. One fstat per tensor, after its read, finds it. */
    return tt_check_unchanged(st->fd, st->path, st->size, st->mtime,
                              "; put the original back (write a new file beside it and rename it into place, never "
                              "over the one being read) and run again");
}

/* ---- writer --------------------------------------------------------------- */

static _Thread_local const st_entry *g_sort_e;

/* The reference order: descending dtype (alignment), then name. */
static int cmp_entry(const void *a, const void *b) {
    const st_entry *x = &g_sort_e[*(const uint32_t *)a], *y = &g_sort_e[*(const uint32_t *)b];
    if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}




/* Builds the padded JSON header for entries in order ord; *out is malloc'd. */
static int build_header(const char *path, uint32_t n, const st_entry *e, const uint32_t *ord, const uint64_t *nbytes,
                        const char *const *metadata, char **out, uint64_t *out_len) {
    json_t *root = json_object();
    TT_ASSERT(root);
    int rc = 0;
    if (metadata) {
        json_t *md = json_object();
        TT_ASSERT(md);
        json_object_set_new(root, "__metadata__", md);
        for (const char *const *m = metadata; *m && rc == 0; m += 2) {
            TT_ASSERT(m[1] != NULL); /* keys and values come in pairs */
            if (json_object_get(md, m[0]))
                rc = TT_FAIL(-EINVAL, "cannot write %s: metadata key \"%s\" is given twice", path, m[0]);
            else if (json_object_set_new(md, m[0], json_string(m[1])) != 0) /* steals; NULL on bad UTF-8 */
                rc = TT_FAIL(-EINVAL, "cannot write %s: metadata entry \"%s\" is not valid UTF-8", path, m[0]);
        }
    }
    uint64_t off = 0;
    for (uint32_t k = 0; k < n && rc == 0; k++) {
        const st_entry *x = &e[ord[k]];
        json_t *shape = json_array();
        for (uint32_t d = 0; d < x->ndim; d++) json_array_append_new(shape, json_integer((json_int_t)x->shape[d]));
        json_t *t = json_pack("{s:s, s:o, s:[I,I]}", "dtype", g_dtypes[x->dtype].name, "shape", shape, "data_offsets",
                              (json_int_t)off, (json_int_t)(off + nbytes[ord[k]]));
        TT_ASSERT(t);
        off += nbytes[ord[k]];
        if (json_object_get(root, x->name)) {
            json_decref(t);
            rc = TT_FAIL(-EINVAL, "cannot write %s: tensor name \"%s\" is given twice", path, x->name);
        } else if (json_object_set_new(root, x->name, t) != 0) {
            rc = TT_FAIL(-EINVAL, "cannot write %s: tensor name \"%s\" is not valid UTF-8", path, x->name);
        }
    }
    char *s = rc ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (rc) return rc;
    TT_ASSERT(s);
    uint64_t len = strlen(s), padded = tt_align_up(len, 8);
    char *h = tt_xmalloc(padded);
    memcpy(h, s, len);
    memset(h + len, ' ', padded - len);
    free(s);
    *out = h;
    *out_len = padded;
    return 0;
}

struct st_writer {
    char *path;
    char *tmp;          /* "<path>.partial"; NULL once renamed or never created */
    int fd;
    uint64_t expected;  /* data bytes the header promises */
    uint64_t written;   /* data bytes received so far */
};

void st_writer_abort(st_writer *w) {
    if (!w) return;
    if (w->tmp) unlink(w->tmp); /* before the close: the lock covers it */
    if (w->fd >= 0) close(w->fd);
    free(w->tmp);
    free(w->path);
    free(w);
}

int st_writer_open(st_writer **out, const char *path, uint32_t n, const st_entry *entries,
                   const char *const *metadata) {
    *out = NULL;
    uint64_t *nbytes = tt_xcalloc(n, sizeof *nbytes);
    uint32_t *ord = tt_xcalloc(n, sizeof *ord);
    char *hdr = NULL;
    uint64_t hlen = 0, total = 0;
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        const st_entry *x = &entries[i];
        TT_ASSERT(x->name && x->dtype >= 0 && x->dtype < ST_DTYPE_COUNT && x->ndim <= ST_MAX_DIM);
        TT_ASSERT(x->ndim == 0 || x->shape);
        if (strcmp(x->name, "__metadata__") == 0) {
            rc = TT_FAIL(-EINVAL, "cannot write %s: \"__metadata__\" is reserved and cannot name a tensor", path);
            break;
        }
        uint64_t c = 1;
        for (uint32_t d = 0; d < x->ndim && rc == 0; d++)
            if (!mul_ok(c, x->shape[d], &c))
                rc = TT_FAIL(-EINVAL, "cannot write %s: tensor \"%s\" is too large", path, x->name);
        /* the INT64_MAX / 2 bound keeps the running total and the JSON offsets in range */
        if (rc == 0 && (!mul_ok(c, g_dtypes[x->dtype].size, &nbytes[i]) || nbytes[i] > (uint64_t)INT64_MAX / 2 ||
                        total + nbytes[i] > (uint64_t)INT64_MAX / 2))
            rc = TT_FAIL(-EINVAL, "cannot write %s: tensor \"%s\" is too large", path, x->name);
        total += nbytes[i];
        ord[i] = i;
    }
    if (rc == 0) rc = build_header(path, n, entries, ord, nbytes, metadata, &hdr, &hlen);
    if (rc == 0 && hlen > ST_MAX_HEADER)
        rc = TT_FAIL(-EINVAL, "cannot write %s: its header would be %llu bytes, over the 100 MB limit readers accept",
                     path, (unsigned long long)hlen);
    free(ord);
    free(nbytes);
    struct stat sb;
    if (rc == 0 && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        rc = TT_FAIL(-EISDIR, "%s is a directory; give a file name for the safetensors file", path);
    if (rc) {
        free(hdr);
        return rc;
    }

    st_writer *w = tt_xcalloc(1, sizeof *w);
    w->path = strdup(path);
    TT_ASSERT(w->path);
    w->expected = total;
    w->fd = tt_partial_open(path, &w->tmp);
    if (w->fd < 0) { /* w->tmp NULL: nothing of ours to remove */
        rc = w->fd;
        st_writer_abort(w);
        free(hdr);
        return rc;
    }
    uint8_t len8[8];
    put_le64(len8, hlen);
    int err = atomic_write_all(w->fd, len8, 8);
    if (!err) err = atomic_write_all(w->fd, hdr, hlen);
    free(hdr);
    if (err) {
        rc = atomic_write_fail(path, err, "writing");
        st_writer_abort(w);
        return rc;
    }
    *out = w;
    return 0;
}

int st_writer_write(st_writer *w, const void *data, uint64_t len) {
    TT_ASSERT(len <= w->expected - w->written); /* more data than the header describes */
    int err = atomic_write_all(w->fd, data, len);
    if (err) return atomic_write_fail(w->path, err, "writing");
    w->written += len;
    return 0;
}

int st_writer_finish(st_writer *w) {
    TT_ASSERT(w->written == w->expected); /* every tensor must have received all its bytes */
    int rc = 0;
    if (fsync(w->fd) != 0) rc = atomic_write_fail(w->path, errno, "syncing");
    if (rc == 0 && rename(w->tmp, w->path) != 0) rc = atomic_write_fail(w->path, errno, "renaming into place");
    if (rc == 0) { /* renamed before the close: the lock covers the file until it has left its temporary name */
        free(w->tmp);
        w->tmp = NULL;
        close(w->fd); /* synced: nothing left for close to report */
        w->fd = -1;
        atomic_sync_dir_of(w->path);
    }
    st_writer_abort(w); /* frees w; removes the partial file only after a failure */
    return rc;
}

int st_write(const char *path, uint32_t n, const st_entry *entries, const char *const *metadata) {
    /* The reference layout: the streaming writer puts tensors in the order it
     * is given, so hand it the entries sorted. */
    uint32_t *ord = tt_xcalloc(n, sizeof *ord);
    st_entry *sorted = tt_xcalloc(n, sizeof *sorted);
    for (uint32_t i = 0; i < n; i++) ord[i] = i;
    g_sort_e = entries;
    qsort(ord, n, sizeof *ord, cmp_entry);
    for (uint32_t k = 0; k < n; k++) sorted[k] = entries[ord[k]];
    free(ord);
    st_writer *w;
    int rc = st_writer_open(&w, path, n, sorted, metadata);
    for (uint32_t k = 0; k < n && rc == 0; k++) {
        uint64_t bytes = st_dtype_size(sorted[k].dtype);
        for (uint32_t d = 0; d < sorted[k].ndim; d++) bytes *= sorted[k].shape[d]; /* cannot overflow: checked by open */
        TT_ASSERT(bytes == 0 || sorted[k].data);
        if (bytes) rc = st_writer_write(w, sorted[k].data, bytes);
    }
    if (rc == 0) rc = st_writer_finish(w);
    else st_writer_abort(w); /* NULL when open failed */
    free(sorted);
    return rc;
}
