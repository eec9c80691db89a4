/* io/tier.c — .tier store reader and writer (layout in docs/FORMAT.md). */
#include "io/tier.h"

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "io/atomicfile.h"
#include "io/lz4page.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the .tier format is little-endian");

#define CONFIG_RECORD 128u
#define LAYER_RECORD 16u
#define EXTENT_RECORD 48u
#define TENSOR_RECORD 112u
#define FLAG_PRUNE_MAP 1u
#define FLAG_SOURCE 2u /* a source record follows the pruning map */

/* ---- little-endian cursor -------------------------------------------------- */

typedef struct cursor {
    uint8_t *p;
    uint64_t pos, cap;
} cursor;

static void put(cursor *c, const void *v, uint64_t n) {
    TT_ASSERT(c->pos + n <= c->cap);
    memcpy(c->p + c->pos, v, n);
    c->pos += n;
}
static void put_u32(cursor *c, uint32_t v) { put(c, &v, 4); }
static void put_u64(cursor *c, uint64_t v) { put(c, &v, 8); }
static void put_f32(cursor *c, float v) { put(c, &v, 4); }
/* Reads are bounds-checked by the caller (sizes are validated first). */
static void get(cursor *c, void *v, uint64_t n) {
    TT_ASSERT(c->pos + n <= c->cap);
    memcpy(v, c->p + c->pos, n);
    c->pos += n;
}
static uint32_t get_u32(cursor *c) { uint32_t v; get(c, &v, 4); return v; }
static uint64_t get_u64(cursor *c) { uint64_t v; get(c, &v, 8); return v; }
static float get_f32(cursor *c) { float v; get(c, &v, 4); return v; }

/* ---- layout shared by writer and size prediction ------------------------- */

static uint64_t prune_map_bytes(const tt_config *cfg) {
    uint64_t n = 0;
    for (uint32_t l = 0; l < cfg->n_layers; l++)
        if (cfg->layers[l].pruned) n += 4ull * (cfg->layers[l].n_kv_heads + cfg->layers[l].ffn);
    return n;
}

/* source: the source record's text, NULL when there is none */
static uint64_t meta_bytes(const tt_config *cfg, int has_map, const char *source) {
    return CONFIG_RECORD + (uint64_t)LAYER_RECORD * cfg->n_layers + (uint64_t)EXTENT_RECORD * TT_N_EXTENTS(cfg) +
           (uint64_t)TENSOR_RECORD * config_n_tensors(cfg) + (has_map ? prune_map_bytes(cfg) : 0) +
           (source ? 4 + strlen(source) : 0);
}

int tier_source_check(const char *source, const char *what) {
    size_t n = strlen(source);
    if (n == 0 || n > TIER_SOURCE_MAX)
        return TT_FAIL(-EINVAL, "%s must be 1..%d bytes long (it has %zu)", what, TIER_SOURCE_MAX, n);
    char clean[TIER_SOURCE_MAX + 8]; /* a plain name comes out of tt_escape unchanged */
    if (strcmp(tt_escape(source, clean, sizeof clean), source) != 0)
        return TT_FAIL(-EINVAL, "%s holds control characters or malformed UTF-8 (%s); give a plain name or path", what,
                       clean);
    return 0;
}

/* Fills tensors[] (offset inside extent, nbytes) and extents[] (raw size,
 * tensor range) for cfg/dtypes. */
static void compute_layout(const tt_config *cfg, const uint32_t *dtypes, tier_tensor *tensors,
                           tier_extent *extents) {
    uint32_t nt = config_n_tensors(cfg), ne = TT_N_EXTENTS(cfg);
    for (uint32_t e = 0; e < ne; e++) extents[e] = (tier_extent){0};
    uint64_t pos = 0;
    uint32_t cur = UINT32_MAX;
    tt_tensor_desc d;
    for (uint32_t i = 0; i < nt; i++) {
        config_tensor(cfg, i, &d);
        if (d.extent != cur) {
            cur = d.extent;
            pos = 0;
            extents[cur].first_tensor = i;
        }
        tier_tensor *t = &tensors[i];
        memset(t, 0, sizeof *t);
        memcpy(t->name, d.name, sizeof t->name);
        t->dtype = dtypes[i];
        t->extent = d.extent;
        t->ndim = d.ndim;
        t->rows = d.rows;
        t->cols = d.cols;
        t->offset = pos;
        t->nbytes = dtype_bytes(dtypes[i], d.rows * d.cols);
        pos = tt_align_up(pos + t->nbytes, TIER_TENSOR_ALIGN);
        extents[cur].n_tensors++;
        extents[cur].raw = pos;
    }
}

static int dtype_allowed(uint32_t role, uint32_t dtype) {
    switch (role) {
    case TT_ROLE_NORM: return dtype == TT_DTYPE_F32;
    case TT_ROLE_EMBED:
    case TT_ROLE_LM_HEAD: return dtype == TT_DTYPE_F32 || dtype == TT_DTYPE_BF16;
    default: return dtype_name(dtype) != NULL;
    }
}

uint64_t tier_predict_size(const tt_config *cfg, const uint32_t *dtypes, int has_map, const char *source) {
    uint32_t nt = config_n_tensors(cfg), ne = TT_N_EXTENTS(cfg);
    tier_tensor *t = tt_xcalloc(nt, sizeof *t);
    tier_extent *e = tt_xcalloc(ne, sizeof *e);
    compute_layout(cfg, dtypes, t, e);
    uint64_t size = tt_align_up(TIER_HEADER_BYTES + meta_bytes(cfg, has_map, source), TIER_ALIGN);
    for (uint32_t i = 0; i < ne; i++) size += tt_align_up(e[i].raw, TIER_ALIGN);
    free(t);
    free(e);
    return size;
}

/* ---- serialization of the metadata ------------------------------------------ */

static void put_config(cursor *c, const tt_config *cfg) {
    uint64_t start = c->pos;
    put_u32(c, cfg->n_layers); put_u32(c, cfg->hidden); put_u32(c, cfg->vocab); put_u32(c, cfg->head_dim);
    put_u32(c, cfg->n_heads); put_u32(c, cfg->n_kv_heads); put_u32(c, cfg->ffn); put_u32(c, cfg->max_pos);
    put_u32(c, cfg->tie_embeddings); put_u32(c, cfg->bos_id); put_u32(c, cfg->eos_id);
    put_f32(c, cfg->rms_eps); put_f32(c, cfg->rope_theta); put_u32(c, cfg->rope_type);
    put_f32(c, cfg->rope_factor); put_f32(c, cfg->rope_low_freq); put_f32(c, cfg->rope_high_freq);
    put_u32(c, cfg->rope_orig_max_pos);
    put(c, cfg->name, sizeof cfg->name);
    while (c->pos - start < CONFIG_RECORD) put_u32(c, 0);
}

static void get_config(cursor *c, tt_config *cfg) {
    uint64_t start = c->pos;
    cfg->n_layers = get_u32(c); cfg->hidden = get_u32(c); cfg->vocab = get_u32(c); cfg->head_dim = get_u32(c);
    cfg->n_heads = get_u32(c); cfg->n_kv_heads = get_u32(c); cfg->ffn = get_u32(c); cfg->max_pos = get_u32(c);
    cfg->tie_embeddings = get_u32(c); cfg->bos_id = get_u32(c); cfg->eos_id = get_u32(c);
    cfg->rms_eps = get_f32(c); cfg->rope_theta = get_f32(c); cfg->rope_type = get_u32(c);
    cfg->rope_factor = get_f32(c); cfg->rope_low_freq = get_f32(c); cfg->rope_high_freq = get_f32(c);
    cfg->rope_orig_max_pos = get_u32(c);
    get(c, cfg->name, sizeof cfg->name);
    config_clean_name(cfg);
    c->pos = start + CONFIG_RECORD;
}

static void put_extent(cursor *c, const tier_extent *e) {
    put_u64(c, e->offset); put_u64(c, e->stored); put_u64(c, e->raw); put_u64(c, e->checksum);
    put_u32(c, e->codec); put_u32(c, 0); put_u32(c, e->first_tensor); put_u32(c, e->n_tensors);
}

static void get_extent(cursor *c, tier_extent *e) {
    e->offset = get_u64(c); e->stored = get_u64(c); e->raw = get_u64(c); e->checksum = get_u64(c);
    e->codec = get_u32(c); (void)get_u32(c); e->first_tensor = get_u32(c); e->n_tensors = get_u32(c);
}

static void put_tensor(cursor *c, const tier_tensor *t) {
    put(c, t->name, sizeof t->name);
    put_u32(c, t->dtype); put_u32(c, t->extent); put_u32(c, t->ndim); put_u32(c, 0);
    put_u64(c, t->rows); put_u64(c, t->cols); put_u64(c, t->offset); put_u64(c, t->nbytes);
}

static void get_tensor(cursor *c, tier_tensor *t) {
    get(c, t->name, sizeof t->name);
    t->dtype = get_u32(c); t->extent = get_u32(c); t->ndim = get_u32(c); (void)get_u32(c);
    t->rows = get_u64(c); t->cols = get_u64(c); t->offset = get_u64(c); t->nbytes = get_u64(c);
}

/* ---- reader --------------------------------------------------------------- */

struct tier_store {
    char *path;
    tt_config cfg;
    uint64_t file_size, data_offset;
    uint32_t n_extents, n_tensors;
    tier_extent *extents;
    tier_tensor *tensors;
    int has_map;
    tier_prune_map map;
    uint32_t *map_storage;
    char *source;        /* the source record, NULL: none */
    int fd;              /* the file the metadata came from, open for the store's life (-1: none); its data is
                          * read through it (tier_fd), so a store renamed over path is never mixed in */
    struct timespec mtime; /* at open (with file_size): tier_check_unchanged */
};

void tier_close(tier_store *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    free(s->path);
    free(s->extents);
    free(s->tensors);
    free(s->map_storage);
    free(s->source);
    free(s);
}

static int read_full(int fd, void *buf, uint64_t n, uint64_t off, const char *path) {
    uint8_t *p = buf;
    while (n) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return TT_FAIL(-errno, "%s: read failed at offset %llu: %s", path, (unsigned long long)off,
                           strerror(errno));
        }
        if (r == 0) return TT_FAIL(-EIO, "%s: unexpected end of file at offset %llu", path, (unsigned long long)off);
        p += r; n -= (uint64_t)r; off += (uint64_t)r;
    }
    return 0;
}

#define CORRUPT(...) TT_FAIL(-EINVAL, __VA_ARGS__)

static int check_indices(const uint32_t *idx, uint32_t n, uint32_t limit) {
    for (uint32_t i = 0; i < n; i++)
        if (idx[i] >= limit || (i && idx[i] <= idx[i - 1])) return 0;
    return 1;
}

/* The fields of the fixed header that locate the rest. */
typedef struct header {
    uint64_t meta_size, data_off, file_size, meta_sum;
    uint32_t nt, ne, flags;
} header;

/* Validates the fixed header (TIER_HEADER_BYTES bytes at hdr) of a file of
 * actual_size bytes. */
static int parse_header(const uint8_t *hdr, const char *path, uint64_t actual_size, header *h) {
    if (memcmp(hdr, TIER_MAGIC, 8) != 0)
        return CORRUPT("%s is not a tiertrain store (bad magic); create one with `tiertrain synth`", path);
    cursor c = {(uint8_t *)hdr, 8, TIER_HEADER_BYTES};
    uint32_t version = get_u32(&c), header_bytes = get_u32(&c);
    uint64_t meta_off = get_u64(&c);
    h->meta_size = get_u64(&c); h->data_off = get_u64(&c); h->file_size = get_u64(&c);
    h->nt = get_u32(&c); h->ne = get_u32(&c);
    h->meta_sum = get_u64(&c);
    h->flags = get_u32(&c);
    uint64_t hsum;
    memcpy(&hsum, hdr + TIER_HEADER_BYTES - 8, 8);
    if (XXH3_64bits(hdr, TIER_HEADER_BYTES - 8) != hsum)
        return CORRUPT("%s: the store header is corrupt (checksum mismatch); re-create the store", path);
    if (version != TIER_VERSION)
        return CORRUPT("%s: store format version %u is not supported (this tiertrain reads version %u)", path,
                       version, TIER_VERSION);
    if (header_bytes != TIER_HEADER_BYTES || meta_off != TIER_HEADER_BYTES ||
        h->flags > (FLAG_PRUNE_MAP | FLAG_SOURCE))
        return CORRUPT("%s: the store header is corrupt (bad header size, metadata offset or flags)", path);
    if (h->file_size != actual_size)
        return CORRUPT("%s is %s: the header says %llu bytes but the file has %llu; re-create or re-copy it", path,
                       actual_size < h->file_size ? "truncated" : "longer than its header says",
                       (unsigned long long)h->file_size, (unsigned long long)actual_size);
    if (h->file_size % TIER_ALIGN || h->data_off % TIER_ALIGN || h->meta_size > h->data_off ||
        h->data_off - h->meta_size < TIER_HEADER_BYTES || h->data_off > h->file_size ||
        h->meta_size < CONFIG_RECORD || h->meta_size > (1ull << 32))
        return CORRUPT("%s: the store header is corrupt (metadata or data region out of range)", path);
    return 0;
}

/* Validates the metadata section (h->meta_size bytes at meta) and fills s. */
static int parse_meta(tier_store *s, const header *h, const uint8_t *meta, const char *path) {
    uint64_t meta_size = h->meta_size, data_off = h->data_off, file_size = h->file_size;
    uint32_t nt = h->nt, ne = h->ne;
    if (XXH3_64bits(meta, meta_size) != h->meta_sum)
        return CORRUPT("%s: the store metadata is corrupt (checksum mismatch); re-create the store", path);
    cursor c = {(uint8_t *)meta, 0, meta_size};
    get_config(&c, &s->cfg);
    tt_config *cfg = &s->cfg;
    if (cfg->n_layers == 0 || cfg->n_layers > TT_MAX_LAYERS)
        return CORRUPT("%s: layer count %u is outside 1..%d", path, cfg->n_layers, TT_MAX_LAYERS);
    if (meta_size < CONFIG_RECORD + (uint64_t)LAYER_RECORD * cfg->n_layers)
        return CORRUPT("%s: the store metadata is too short for %u layers", path, cfg->n_layers);
    for (uint32_t l = 0; l < cfg->n_layers; l++) {
        tt_layer_dims *d = &cfg->layers[l];
        d->n_heads = get_u32(&c); d->n_kv_heads = get_u32(&c); d->ffn = get_u32(&c); d->pruned = get_u32(&c);
    }
    int rc = config_validate(cfg, path);
    if (rc) return rc;
    if (ne != TT_N_EXTENTS(cfg) || nt != config_n_tensors(cfg))
        return CORRUPT("%s: the directory lists %u extents and %u tensors, but the model needs %u and %u", path, ne,
                       nt, TT_N_EXTENTS(cfg), config_n_tensors(cfg));
    int has_map = (h->flags & FLAG_PRUNE_MAP) != 0, has_source = (h->flags & FLAG_SOURCE) != 0;
    uint64_t need = meta_bytes(cfg, has_map, NULL), src_len = 0;
    if (has_source) { /* its length sits at the end of the records before it */
        if (meta_size < need + 4)
            return CORRUPT("%s: the store metadata has %llu bytes, too few for its source record", path,
                           (unsigned long long)meta_size);
        const uint8_t *q = meta + need;
        uint32_t n = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
        if (n == 0 || n > TIER_SOURCE_MAX)
            return CORRUPT("%s: the source record is %u bytes long (1..%d)", path, n, TIER_SOURCE_MAX);
        src_len = n;
        need += 4 + src_len;
    }
    if (meta_size != need)
        return CORRUPT("%s: the store metadata has %llu bytes, the directory needs %llu", path,
                       (unsigned long long)meta_size, (unsigned long long)need);

    s->n_extents = ne;
    s->n_tensors = nt;
    s->extents = tt_xcalloc(ne, sizeof *s->extents);
    s->tensors = tt_xcalloc(nt, sizeof *s->tensors);
    for (uint32_t i = 0; i < ne; i++) get_extent(&c, &s->extents[i]);
    for (uint32_t i = 0; i < nt; i++) get_tensor(&c, &s->tensors[i]);

    /* Extents: aligned, inside the data region, in file order, no overlap. */
    uint64_t end = data_off;
    for (uint32_t i = 0; i < ne; i++) {
        const tier_extent *e = &s->extents[i];
        if (e->offset % TIER_ALIGN || e->offset < end || e->stored > file_size - e->offset ||
            tt_align_up(e->offset + e->stored, TIER_ALIGN) > file_size)
            return CORRUPT("%s: extent %u lies outside the data region or overlaps the previous one", path, i);
        if (e->codec > TIER_CODEC_LZ4 || (e->codec == TIER_CODEC_RAW && e->stored != e->raw) ||
            (e->codec == TIER_CODEC_LZ4 && e->stored > lz4page_bound(e->raw)) || e->raw > (1ull << 40))
            return CORRUPT("%s: extent %u has an invalid codec or size", path, i);
        end = e->offset + e->stored;
    }
    /* Tensors: exactly the model's table, sizes consistent, inside extents. */
    tt_tensor_desc d;
    uint64_t tend = 0;
    for (uint32_t i = 0; i < nt; i++) {
        tier_tensor *t = &s->tensors[i];
        config_tensor(cfg, i, &d);
        if (memchr(t->name, '\0', sizeof t->name) == NULL || strcmp(t->name, d.name) != 0)
            return CORRUPT("%s: tensor %u should be '%s' but the directory has another name", path, i, d.name);
        if (t->extent != d.extent || t->ndim != d.ndim || t->rows != d.rows || t->cols != d.cols)
            return CORRUPT("%s: tensor '%s' has %uD shape (%llu, %llu) in extent %u; the model config needs %uD "
                           "(%llu, %llu) in extent %u",
                           path, d.name, t->ndim, (unsigned long long)t->rows, (unsigned long long)t->cols, t->extent,
                           d.ndim, (unsigned long long)d.rows, (unsigned long long)d.cols, d.extent);
        if (!dtype_allowed(d.role, t->dtype))
            return CORRUPT("%s: tensor '%s' has dtype %u, which is not valid for it", path, d.name, t->dtype);
        const tier_extent *e = &s->extents[t->extent];
        if (i == e->first_tensor) tend = 0;
        if (i < e->first_tensor || i >= (uint64_t)e->first_tensor + e->n_tensors)
            return CORRUPT("%s: tensor '%s' is not in the tensor range of its extent", path, d.name);
        if (t->nbytes != dtype_bytes(t->dtype, t->rows * t->cols) || t->offset % TIER_TENSOR_ALIGN ||
            t->offset < tend || t->offset > e->raw || t->nbytes > e->raw - t->offset)
            return CORRUPT("%s: tensor '%s' has a size or offset outside its extent", path, d.name);
        tend = t->offset + t->nbytes;
    }
    for (uint32_t i = 0; i < ne; i++) {
        const tier_extent *e = &s->extents[i];
        if (e->n_tensors == 0 || (uint64_t)e->first_tensor + e->n_tensors > nt ||
            s->tensors[e->first_tensor].extent != i)
            return CORRUPT("%s: extent %u has an invalid tensor range", path, i);
    }
    /* Pruning map. */
    s->has_map = has_map;
    if (has_map) {
        uint64_t nmap = prune_map_bytes(cfg) / 4;
        s->map_storage = tt_xcalloc(nmap ? nmap : 1, 4);
        get(&c, s->map_storage, nmap * 4);
        uint32_t *p = s->map_storage;
        for (uint32_t l = 0; l < cfg->n_layers; l++) {
            const tt_layer_dims *ld = &cfg->layers[l];
            if (!ld->pruned) continue;
            s->map.kv[l] = p; p += ld->n_kv_heads;
            s->map.ffn[l] = p; p += ld->ffn;
            if (!check_indices(s->map.kv[l], ld->n_kv_heads, cfg->n_kv_heads) ||
                !check_indices(s->map.ffn[l], ld->ffn, cfg->ffn))
                return CORRUPT("%s: the pruning map of layer %u has indices out of range or out of order", path, l);
        }
    }
    /* Source record: what the model is (checked like the writer's input). */
    if (has_source) {
        (void)get_u32(&c);
        s->source = tt_xmalloc(src_len + 1);
        get(&c, s->source, src_len);
        s->source[src_len] = '\0';
        char what[600];
        snprintf(what, sizeof what, "%s: the source record", path);
        if (memchr(s->source, '\0', src_len) || tier_source_check(s->source, what))
            return CORRUPT("%s: the source record is not a plain name or path (a NUL or control character); the store "
                           "is corrupt", path);
    }
    s->file_size = file_size;
    s->data_offset = data_off;
    return 0;
}

/* Validates a whole store image held in memory (header + metadata; data
 * extents are checked by tier_extent_check/decode on demand). For the fuzz
 * target and tests: with out non-NULL the store is returned (named name) and
 * its extents lie in buf at their offsets. */
int tier_open_buffer(tier_store **out, const void *buf, uint64_t len, const char *name) {
    if (out) *out = NULL;
    if (len < TIER_HEADER_BYTES)
        return TT_FAIL(-EINVAL, "%s is too short to be a tiertrain store (%llu bytes)", name, (unsigned long long)len);
    tier_store *s = tt_xcalloc(1, sizeof *s);
    s->fd = -1;
    header h;
    int rc = parse_header(buf, name, len, &h);
    if (rc == 0) rc = parse_meta(s, &h, (const uint8_t *)buf + TIER_HEADER_BYTES, name);
    if (rc || !out) {
        tier_close(s);
        return rc;
    }
    s->path = strdup(name);
    TT_ASSERT(s->path);
    *out = s;
    return 0;
}

int tier_parse_buffer(const void *buf, uint64_t len, const char *name) {
    return tier_open_buffer(NULL, buf, len, name);
}

int tier_describe(tier_store **out, const tt_config *cfg, const uint32_t *dtypes, const char *name) {
    *out = NULL;
    int rc = config_validate(cfg, name);
    if (rc) return rc;
    tier_store *s = tt_xcalloc(1, sizeof *s);
    s->fd = -1;
    s->path = strdup(name);
    TT_ASSERT(s->path);
    s->cfg = *cfg;
    s->n_tensors = config_n_tensors(cfg);
    s->n_extents = TT_N_EXTENTS(cfg);
    s->tensors = tt_xcalloc(s->n_tensors, sizeof *s->tensors);
    s->extents = tt_xcalloc(s->n_extents, sizeof *s->extents);
    compute_layout(cfg, dtypes, s->tensors, s->extents);
    s->data_offset = tt_align_up(TIER_HEADER_BYTES + meta_bytes(cfg, 0, NULL), TIER_ALIGN);
    uint64_t at = s->data_offset;
    for (uint32_t i = 0; i < s->n_extents; i++) { /* as the writer lays them out, raw */
        s->extents[i].offset = at;
        s->extents[i].stored = s->extents[i].raw;
        s->extents[i].codec = TIER_CODEC_RAW;
        at += tt_align_up(s->extents[i].raw, TIER_ALIGN);
    }
    s->file_size = at;
    *out = s;
    return 0;
}

/* Reads and validates the store open as fd (fsize bytes, named path); the store keeps fd, or closes it on
 * failure. */
static int open_fd(tier_store **out, int fd, const char *path, uint64_t fsize) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return TT_FAIL(-e, "cannot stat %s: %s", path, strerror(e));
    }
    if (fsize < TIER_HEADER_BYTES) {
        close(fd);
        return TT_FAIL(-EINVAL, "%s is too short to be a tiertrain store (%llu bytes)", path, (unsigned long long)fsize);
    }
    uint8_t hdr[TIER_HEADER_BYTES];
    tier_store *s = tt_xcalloc(1, sizeof *s);
    s->fd = fd;
    s->mtime = st.st_mtim;
    uint8_t *meta = NULL;
    header h;
    int rc = read_full(fd, hdr, sizeof hdr, 0, path);
    if (rc == 0) rc = parse_header(hdr, path, fsize, &h);
    if (rc == 0 && !(meta = malloc(h.meta_size)))
        rc = TT_FAIL(-ENOMEM, "%s: out of memory reading the store metadata", path);
    if (rc == 0) rc = read_full(fd, meta, h.meta_size, TIER_HEADER_BYTES, path);
    if (rc == 0) rc = parse_meta(s, &h, meta, path);
    free(meta);
    if (rc) {
        tier_close(s);
        return rc;
    }
    s->path = strdup(path);
    TT_ASSERT(s->path);
    *out = s;
    return 0;
}

int tier_open(tier_store **out, const char *path) {
    *out = NULL;
    uint64_t fsize;
    int fd = tt_open_regular(path, O_RDONLY, "store file", "create a store with `tiertrain synth`", &fsize);
    if (fd < 0) return fd;
    return open_fd(out, fd, path, fsize);
}

int tier_check_unchanged(const tier_store *s) {
    if (s->fd < 0) return 0;
    return tt_check_unchanged(s->fd, s->path, s->file_size, s->mtime,
                              " (stores are read in place, not copied); put the original back, and write a new store "
                              "to another file (or rename it over this one: a run goes on with the file it opened)");
}

int tier_reopen(tier_store **out, const tier_store *s) {
    *out = NULL;
    TT_ASSERT(s->fd >= 0);
    int rc = tier_check_unchanged(s);
    if (rc) return rc;
    int fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        return TT_FAIL(-e, "cannot reopen %s: %s", s->path, strerror(e));
    }
    return open_fd(out, fd, s->path, s->file_size);
}

int tier_fd(const tier_store *s) { return s->fd; }

const char *tier_path(const tier_store *s) { return s->path; }
const tt_config *tier_config(const tier_store *s) { return &s->cfg; }
uint64_t tier_file_size(const tier_store *s) { return s->file_size; }
uint64_t tier_data_offset(const tier_store *s) { return s->data_offset; }
uint32_t tier_n_extents(const tier_store *s) { return s->n_extents; }
uint32_t tier_n_tensors(const tier_store *s) { return s->n_tensors; }
const tier_prune_map *tier_prune(const tier_store *s) { return s->has_map ? &s->map : NULL; }
const char *tier_source(const tier_store *s) { return s->source; }

const tier_extent *tier_extent_at(const tier_store *s, uint32_t i) {
    TT_ASSERT(i < s->n_extents);
    return &s->extents[i];
}

const tier_tensor *tier_tensor_at(const tier_store *s, uint32_t i) {
    TT_ASSERT(i < s->n_tensors);
    return &s->tensors[i];
}

int tier_find_tensor(const tier_store *s, const char *name) {
    for (uint32_t i = 0; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i].name, name) == 0) return (int)i;
    return -1;
}

const char *tier_extent_name(const tier_store *s, uint32_t i, char *buf, uint64_t cap) {
    if (i == TT_EXTENT_EMBED(&s->cfg)) snprintf(buf, cap, "embedding");
    else if (i == TT_EXTENT_HEAD(&s->cfg)) snprintf(buf, cap, "head");
    else snprintf(buf, cap, "layer %u", i - 1);
    return buf;
}

int tier_extent_check(const tier_store *s, uint32_t i, const void *stored) {
    const tier_extent *e = tier_extent_at(s, i);
    if (XXH3_64bits(stored, e->stored) == e->checksum) return 0;
    int rc = tier_check_unchanged(s); /* not corrupt: rewritten under the run (one fstat, on a mismatch only) */
    if (rc) return rc;
    char nm[32];
    return TT_FAIL(-EIO, "%s: checksum mismatch in extent %u (%s) at offset %llu: the store is corrupt; re-create it",
                   s->path, i, tier_extent_name(s, i, nm, sizeof nm), (unsigned long long)e->offset);
}

int tier_extent_decode(const tier_store *s, uint32_t i, const void *stored, void *raw) {
    const tier_extent *e = tier_extent_at(s, i);
    if (e->codec == TIER_CODEC_RAW) {
        memcpy(raw, stored, e->raw);
        return 0;
    }
    int rc = lz4page_decompress(stored, e->stored, raw, e->raw);
    if (rc) {
        char nm[32];
        return TT_FAIL(rc, "%s: extent %u (%s) does not decompress: %s", s->path, i,
                       tier_extent_name(s, i, nm, sizeof nm), tt_lasterr());
    }
    return 0;
}

/* ---- writer --------------------------------------------------------------- */

#define WBUF_BYTES (8u << 20)

struct tier_writer {
    char *path, *tmp;
    int fd;
    int failed;
    tt_config cfg;
    uint32_t n_tensors, n_extents, flags;
    tier_tensor *tensors;
    tier_extent *extents;
    const tier_prune_map *prune;
    char *source;          /* the source record, NULL: none */
    int lz4;
    uint32_t cur;          /* tensor being written */
    uint64_t cur_done;     /* bytes of it received */
    uint64_t ext_pos;      /* raw bytes of the current extent written so far */
    uint64_t file_pos;     /* where the current extent starts in the file */
    uint64_t data_offset;
    XXH3_state_t *xx;
    uint8_t *wbuf;         /* write-behind buffer (raw codec) */
    uint64_t wlen;
    uint8_t *ebuf;         /* whole raw extent (lz4 codec) */
};

static int w_fail(tier_writer *w, int err, const char *what) {
    w->failed = 1;
    return atomic_write_fail(w->path, err, what);
}

static int w_pwrite(tier_writer *w, const void *buf, uint64_t n, uint64_t off) {
    const uint8_t *p = buf;
    while (n) {
        ssize_t r = pwrite(w->fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return w_fail(w, errno, "writing");
        }
        if (r == 0) return w_fail(w, EIO, "writing");
        p += r; n -= (uint64_t)r; off += (uint64_t)r;
    }
    return 0;
}

static int w_flush(tier_writer *w) {
    if (!w->wlen) return 0;
    int rc = w_pwrite(w, w->wbuf, w->wlen, w->file_pos + w->ext_pos - w->wlen);
    w->wlen = 0;
    return rc;
}

/* Only layer extents are lz4 candidates (masked/sparse pruned weights); the
 * embedding and head always stream raw. */
static int w_lz4(const tier_writer *w, uint32_t ei) {
    return w->lz4 && ei != TT_EXTENT_EMBED(&w->cfg) && ei != TT_EXTENT_HEAD(&w->cfg);
}

/* Appends raw bytes of the current extent (data or zero padding). */
static int w_append(tier_writer *w, uint32_t ei, const void *data, uint64_t n) {
    const uint8_t *p = data;
    TT_ASSERT(w->ext_pos + n <= w->extents[ei].raw);
    if (w_lz4(w, ei)) {
        if (p) memcpy(w->ebuf + w->ext_pos, p, n);
        else memset(w->ebuf + w->ext_pos, 0, n);
        w->ext_pos += n;
        return 0;
    }
    while (n) {
        uint64_t k = WBUF_BYTES - w->wlen;
        if (k > n) k = n;
        if (p) { memcpy(w->wbuf + w->wlen, p, k); p += k; }
        else memset(w->wbuf + w->wlen, 0, k);
        XXH3_64bits_update(w->xx, w->wbuf + w->wlen, k);
        w->wlen += k;
        w->ext_pos += k;
        n -= k;
        if (w->wlen == WBUF_BYTES) {
            int rc = w_flush(w);
            if (rc) return rc;
        }
    }
    return 0;
}

static int w_end_extent(tier_writer *w, uint32_t ei) {
    tier_extent *e = &w->extents[ei];
    TT_ASSERT(w->ext_pos == e->raw);
    e->offset = w->file_pos;
    e->codec = TIER_CODEC_RAW;
    e->stored = e->raw;
    int rc;
    if (w_lz4(w, ei)) {
        uint64_t cap = lz4page_bound(e->raw);
        uint8_t *cbuf = malloc(cap);
        if (!cbuf) return TT_FAIL(-ENOMEM, "out of memory compressing an extent of %s", w->path);
        uint64_t clen = 0;
        rc = lz4page_compress(w->ebuf, e->raw, cbuf, cap, &clen);
        const uint8_t *src = w->ebuf;
        if (rc == 0 && clen <= e->raw - e->raw / 8) {
            e->codec = TIER_CODEC_LZ4;
            e->stored = clen;
            src = cbuf;
        }
        e->checksum = XXH3_64bits(src, e->stored);
        rc = w_pwrite(w, src, e->stored, e->offset);
        free(cbuf);
        if (rc) return rc;
    } else {
        rc = w_flush(w);
        if (rc) return rc;
        e->checksum = XXH3_64bits_digest(w->xx);
    }
    w->file_pos = tt_align_up(e->offset + e->stored, TIER_ALIGN);
    w->ext_pos = 0;
    XXH3_64bits_reset(w->xx);
    return 0;
}

static int w_begin_extent(tier_writer *w, uint32_t ei) {
    if (!w_lz4(w, ei)) return 0;
    free(w->ebuf);
    w->ebuf = malloc(w->extents[ei].raw ? w->extents[ei].raw : 1);
    if (!w->ebuf) return TT_FAIL(-ENOMEM, "out of memory buffering an extent of %s", w->path);
    return 0;
}

int tier_writer_open(tier_writer **out, const char *path, const tt_config *cfg, const tier_write_opts *o) {
    *out = NULL;
    int rc = config_validate(cfg, path);
    if (rc) return rc;
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(cfg); i++) {
        config_tensor(cfg, i, &d);
        if (!dtype_allowed(d.role, o->dtypes[i]))
            return TT_FAIL(-EINVAL, "dtype %s is not allowed for tensor %s",
                           dtype_name(o->dtypes[i]) ? dtype_name(o->dtypes[i]) : "?", d.name);
    }
    if (o->prune) {
        for (uint32_t l = 0; l < cfg->n_layers; l++) {
            if (!cfg->layers[l].pruned) continue;
            if (!o->prune->kv[l] || !o->prune->ffn[l] ||
                !check_indices(o->prune->kv[l], cfg->layers[l].n_kv_heads, cfg->n_kv_heads) ||
                !check_indices(o->prune->ffn[l], cfg->layers[l].ffn, cfg->ffn))
                return TT_FAIL(-EINVAL, "the pruning map of layer %u is missing or has invalid indices", l);
        }
    }
    if (o->source && (rc = tier_source_check(o->source, "the model's source name"))) return rc;
    tier_writer *w = tt_xcalloc(1, sizeof *w);
    w->fd = -1;
    w->cfg = *cfg;
    w->path = strdup(path);
    w->n_tensors = config_n_tensors(cfg);
    w->n_extents = TT_N_EXTENTS(cfg);
    w->tensors = tt_xcalloc(w->n_tensors, sizeof *w->tensors);
    w->extents = tt_xcalloc(w->n_extents, sizeof *w->extents);
    compute_layout(cfg, o->dtypes, w->tensors, w->extents);
    w->prune = o->prune;
    w->source = o->source ? strdup(o->source) : NULL;
    w->flags = (o->prune ? FLAG_PRUNE_MAP : 0) | (o->source ? FLAG_SOURCE : 0);
    w->lz4 = o->lz4;
    w->data_offset = tt_align_up(TIER_HEADER_BYTES + meta_bytes(cfg, o->prune != NULL, o->source), TIER_ALIGN);
    w->file_pos = w->data_offset;
    w->xx = XXH3_createState();
    TT_ASSERT(w->path && w->xx);
    XXH3_64bits_reset(w->xx);
    w->wbuf = tt_xmalloc(WBUF_BYTES);

    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        tier_writer_abort(w);
        return TT_FAIL(-EISDIR, "%s is a directory; give a file name for the store", path);
    }
    w->fd = tt_partial_open(path, &w->tmp);
    if (w->fd < 0) { /* w->tmp NULL: nothing of ours to remove */
        rc = w->fd;
        tier_writer_abort(w);
        return rc;
    }
    rc = w_begin_extent(w, 0);
    if (rc) { tier_writer_abort(w); return rc; }
    *out = w;
    return 0;
}

uint64_t tier_writer_tensor_bytes(const tier_writer *w, uint32_t i) {
    TT_ASSERT(i < w->n_tensors);
    return w->tensors[i].nbytes;
}

int tier_writer_write(tier_writer *w, uint32_t i, const void *data, uint64_t n) {
    TT_ASSERT(!w->failed && i == w->cur && i < w->n_tensors);
    const tier_tensor *t = &w->tensors[i];
    TT_ASSERT(w->cur_done + n <= t->nbytes);
    if (w->cur_done == 0 && w->ext_pos < t->offset) { /* padding before the tensor */
        int rc = w_append(w, t->extent, NULL, t->offset - w->ext_pos);
        if (rc) return rc;
    }
    int rc = w_append(w, t->extent, data, n);
    if (rc) return rc;
    w->cur_done += n;
    if (w->cur_done < t->nbytes) return 0;
    /* Tensor complete: pad, close the extent if it was its last tensor. */
    const tier_extent *e = &w->extents[t->extent];
    w->cur++;
    w->cur_done = 0;
    if (w->cur == e->first_tensor + e->n_tensors) {
        rc = w_append(w, t->extent, NULL, e->raw - w->ext_pos);
        if (rc == 0) rc = w_end_extent(w, t->extent);
        if (rc == 0 && w->cur < w->n_tensors) rc = w_begin_extent(w, t->extent + 1);
    }
    return rc;
}

int tier_writer_finish(tier_writer *w) {
    TT_ASSERT(!w->failed && w->cur == w->n_tensors);
    uint64_t msize = meta_bytes(&w->cfg, w->prune != NULL, w->source);
    uint64_t hsize = w->data_offset;
    uint8_t *buf = tt_xcalloc(1, hsize);
    cursor c = {buf + TIER_HEADER_BYTES, 0, msize};
    put_config(&c, &w->cfg);
    for (uint32_t l = 0; l < w->cfg.n_layers; l++) {
        const tt_layer_dims *d = &w->cfg.layers[l];
        put_u32(&c, d->n_heads); put_u32(&c, d->n_kv_heads); put_u32(&c, d->ffn); put_u32(&c, d->pruned);
    }
    for (uint32_t i = 0; i < w->n_extents; i++) put_extent(&c, &w->extents[i]);
    for (uint32_t i = 0; i < w->n_tensors; i++) put_tensor(&c, &w->tensors[i]);
    if (w->prune)
        for (uint32_t l = 0; l < w->cfg.n_layers; l++) {
            if (!w->cfg.layers[l].pruned) continue;
            put(&c, w->prune->kv[l], 4ull * w->cfg.layers[l].n_kv_heads);
            put(&c, w->prune->ffn[l], 4ull * w->cfg.layers[l].ffn);
        }
    if (w->source) {
        put_u32(&c, (uint32_t)strlen(w->source));
        put(&c, w->source, strlen(w->source));
    }
    TT_ASSERT(c.pos == msize);
    uint64_t file_size = w->file_pos;
    cursor h = {buf, 0, TIER_HEADER_BYTES};
    put(&h, TIER_MAGIC, 8);
    put_u32(&h, TIER_VERSION); put_u32(&h, TIER_HEADER_BYTES);
    put_u64(&h, TIER_HEADER_BYTES); put_u64(&h, msize); put_u64(&h, w->data_offset); put_u64(&h, file_size);
    put_u32(&h, w->n_tensors); put_u32(&h, w->n_extents);
    put_u64(&h, XXH3_64bits(buf + TIER_HEADER_BYTES, msize));
    put_u32(&h, w->flags);
    h.pos = TIER_HEADER_BYTES - 8;
    put_u64(&h, XXH3_64bits(buf, TIER_HEADER_BYTES - 8));

    int rc = w_pwrite(w, buf, hsize, 0);
    free(buf);
    if (rc == 0 && ftruncate(w->fd, (off_t)file_size) != 0) rc = w_fail(w, errno, "sizing");
    if (rc == 0 && fsync(w->fd) != 0) rc = w_fail(w, errno, "syncing");
    if (rc == 0 && rename(w->tmp, w->path) != 0) rc = w_fail(w, errno, "renaming into place");
    if (rc) {
        tier_writer_abort(w);
        return rc;
    }
    free(w->tmp); /* renamed before the close: the lock covers the file until it has left its temporary name */
    w->tmp = NULL;
    close(w->fd); /* synced: nothing left for close to report */
    w->fd = -1;
    atomic_sync_dir_of(w->path);
    tier_writer_abort(w);
    return 0;
}

void tier_writer_abort(tier_writer *w) {
    if (!w) return;
    if (w->tmp) unlink(w->tmp); /* before the close: the lock covers it */
    if (w->fd >= 0) close(w->fd);
    if (w->xx) XXH3_freeState(w->xx);
    free(w->path);
    free(w->tmp);
    free(w->source);
    free(w->tensors);
    free(w->extents);
    free(w->wbuf);
    free(w->ebuf);
    free(w);
}

uint64_t tier_base_fingerprint(const tt_config *cfg, const tier_prune_map *map) {
    XXH3_state_t *st = XXH3_createState();
    TT_ASSERT(st);
    XXH3_64bits_reset(st);
    uint64_t cf = config_fingerprint(cfg);
    XXH3_64bits_update(st, &cf, sizeof cf);
    for (uint32_t l = 0; map && l < cfg->n_layers; l++) {
        if (!map->kv[l]) continue;
        XXH3_64bits_update(st, &l, sizeof l);
        XXH3_64bits_update(st, map->kv[l], cfg->layers[l].n_kv_heads * sizeof(uint32_t));
        XXH3_64bits_update(st, map->ffn[l], cfg->layers[l].ffn * sizeof(uint32_t));
    }
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h ? h : 1; /* 0 means "not recorded" in adapters */
}

uint64_t tier_weights_fingerprint(const tier_store *s) {
    XXH3_state_t *st = XXH3_createState();
    TT_ASSERT(st);
    XXH3_64bits_reset(st);
    for (uint32_t i = 0; i < tier_n_extents(s); i++) {
        const tier_extent *e = tier_extent_at(s, i);
        const uint64_t k[2] = {e->checksum, e->raw};
        XXH3_64bits_update(st, k, sizeof k);
    }
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h ? h : 1;
}
