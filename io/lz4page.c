/* io/lz4page.c — the lz4 page codec (layout in io/lz4page.h and docs/FORMAT.md).
 *
 * Decompression trusts nothing in the stored form: the header, the size table
 * and the sum of the page sizes are checked against stored_len before any page
 * is touched, and each page must decompress to exactly its raw size. */
#include "io/lz4page.h"

#include "core/base/common.h"

#include <errno.h>
#include <lz4.h>
#include <string.h>

#define HDR_BYTES 24u /* magic, page_size, raw_len, npages, reserved */

static void st32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void st64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t ld32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t ld64(const uint8_t *p) { return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32; }

static uint64_t npages_of(uint64_t raw_len) { return tt_div_up(raw_len, LZ4PAGE_SIZE); }

/* raw size of page i of an extent of raw_len bytes */
static uint32_t page_raw(uint64_t raw_len, uint64_t i) {
    uint64_t left = raw_len - i * LZ4PAGE_SIZE;
    return (uint32_t)(left < LZ4PAGE_SIZE ? left : LZ4PAGE_SIZE);
}

uint64_t lz4page_bound(uint64_t raw_len) {
    /* a page is never stored larger than raw */
    return HDR_BYTES + 4 * npages_of(raw_len) + raw_len;
}

int lz4page_compress(const void *raw, uint64_t raw_len, void *dst, uint64_t dst_cap,
                     uint64_t *stored_len) {
    TT_ASSERT((raw || raw_len == 0) && dst && stored_len);
    uint64_t np = npages_of(raw_len);
    if (np > UINT32_MAX)
        return TT_FAIL(-EINVAL, "lz4 page codec: an extent of %llu bytes has too many pages",
                       (unsigned long long)raw_len);
    uint64_t table = HDR_BYTES + 4 * np;
    if (dst_cap < table)
        return TT_FAIL(-ENOSPC, "lz4 page codec: output buffer of %llu bytes is too small "
                       "(need up to %llu)", (unsigned long long)dst_cap,
                       (unsigned long long)lz4page_bound(raw_len));
    const uint8_t *in = raw;
    uint8_t *out = dst;
    st32(out, LZ4PAGE_MAGIC);
    st32(out + 4, LZ4PAGE_SIZE);
    st64(out + 8, raw_len);
    st32(out + 16, (uint32_t)np);
    st32(out + 20, 0);
    uint64_t pos = table;
    for (uint64_t i = 0; i < np; i++) {
        uint32_t n = page_raw(raw_len, i);
        const uint8_t *src = in + i * LZ4PAGE_SIZE;
        uint64_t room = dst_cap - pos;
        /* accept the compressed form only if it is strictly smaller */
        int cap = (int)(room < n - 1 ? room : n - 1);
        int c = cap > 0 ? LZ4_compress_default((const char *)src, (char *)out + pos, (int)n, cap)
                        : 0;
        if (c > 0) {
            TT_ASSERT((uint32_t)c < n);
            st32(out + HDR_BYTES + 4 * i, (uint32_t)c);
            pos += (uint64_t)c;
        } else {
            if (room < n)
                return TT_FAIL(-ENOSPC, "lz4 page codec: output buffer of %llu bytes is too "
                               "small (need up to %llu)", (unsigned long long)dst_cap,
                               (unsigned long long)lz4page_bound(raw_len));
            memcpy(out + pos, src, n);
            st32(out + HDR_BYTES + 4 * i, n);
            pos += n;
        }
    }
    *stored_len = pos;
    return 0;
}

int lz4page_decompress(const void *src, uint64_t stored_len, void *raw, uint64_t raw_len) {
    TT_ASSERT((src || stored_len == 0) && (raw || raw_len == 0));
    const uint8_t *in = src;
    if (stored_len < HDR_BYTES)
        return TT_FAIL(-EINVAL, "corrupt lz4 page extent: %llu bytes, shorter than its "
                       "%u-byte header; the store is damaged (run `tiertrain verify`)",
                       (unsigned long long)stored_len, HDR_BYTES);
    uint32_t magic = ld32(in), psize = ld32(in + 4), np = ld32(in + 16), resv = ld32(in + 20);
    uint64_t rl = ld64(in + 8);
    if (magic != LZ4PAGE_MAGIC)
        return TT_FAIL(-EINVAL, "corrupt lz4 page extent: bad magic %#x (want %#x); the "
                       "store is damaged (run `tiertrain verify`)", magic, LZ4PAGE_MAGIC);
    if (psize != LZ4PAGE_SIZE)
        return TT_FAIL(-EINVAL, "corrupt lz4 page extent: page size %u is not %u; the store "
                       "is damaged or from another version", psize, LZ4PAGE_SIZE);
    if (rl != raw_len)
        return TT_FAIL(-EINVAL, "corrupt lz4 page extent: it holds %llu raw bytes but the "
                       "tensor directory expects %llu; the store is damaged",
                       (unsigned long long)rl, (unsigned long long)raw_len);
    if ((uint64_t)np != npages_of(raw_len))
        return TT_FAIL(-EINVAL, "corrupt lz4 page extent: %u pages for %llu raw bytes "
                       "(want %llu); the store is damaged", np, (unsigned long long)raw_len,
                       (unsigned long long)npages_of(raw_len));
    if (resv != 0)
        return TT_FAIL(-EINVAL, "corrupt lz4 page extent: reserved header field is %#x, not "
                       "0; the store is damaged", resv);
    uint64_t table = HDR_BYTES + 4 * (uint64_t)np;
    if (stored_len < table)
        return TT_FAIL(-EINVAL, "corrupt lz4 page extent: %llu bytes cannot hold the size "
                       "table of %u pages; the store is truncated",
                       (unsigned long long)stored_len, np);
    /* every page size in range, and all of them exactly filling stored_len */
    uint64_t total = table;
    for (uint32_t i = 0; i < np; i++) {
        uint32_t cs = ld32(in + HDR_BYTES + 4 * (uint64_t)i), n = page_raw(raw_len, i);
        if (cs == 0 || cs > n)
            return TT_FAIL(-EINVAL, "corrupt lz4 page extent: page %u has stored size %u "
                           "(must be 1..%u); the store is damaged", i, cs, n);
        total += cs;
    }
    if (total != stored_len)
        return TT_FAIL(-EINVAL, "corrupt lz4 page extent: its pages add up to %llu bytes but "
                       "%llu are stored; the store is damaged or truncated",
                       (unsigned long long)total, (unsigned long long)stored_len);
    uint8_t *out = raw;
    uint64_t pos = table;
    for (uint32_t i = 0; i < np; i++) {
        uint32_t cs = ld32(in + HDR_BYTES + 4 * (uint64_t)i), n = page_raw(raw_len, i);
        uint8_t *d = out + (uint64_t)i * LZ4PAGE_SIZE;
        if (cs == n) {
            memcpy(d, in + pos, n);
        } else {
            int got = LZ4_decompress_safe((const char *)in + pos, (char *)d, (int)cs, (int)n);
            if (got != (int)n)
                return TT_FAIL(-EINVAL, "corrupt lz4 page extent: page %u (at byte %llu) does "
                               "not decompress to %u bytes; the store is damaged (run "
                               "`tiertrain verify`)", i, (unsigned long long)pos, n);
        }
        pos += cs;
    }
    return 0;
}
