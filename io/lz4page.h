/* io/lz4page.h — the lz4 page codec for compressible extents (2:4 or
 * unstructured pruned tensors, mostly zeros). An extent of raw_len bytes is cut
 * into pages of LZ4PAGE_SIZE bytes (the last may be shorter), each compressed
 * on its own so a reader can decompress page by page. Stored layout (all
 * little-endian), documented again in docs/FORMAT.md:
 *   u32 magic 'LZ4P' (0x50345a4c), u32 page_size, u64 raw_len, u32 npages,
 *   u32 reserved (0), u32 csize[npages], then the pages back to back.
 *   csize[i] == raw size of page i means the page is stored uncompressed
 *   (lz4 did not make it smaller).
 */
#ifndef TT_LZ4PAGE_H
#define TT_LZ4PAGE_H

#include <stdint.h>

#define LZ4PAGE_MAGIC 0x50345a4cu
#define LZ4PAGE_SIZE (64u * 1024u)

/* Largest stored size lz4page_compress can produce for raw_len bytes. */
uint64_t lz4page_bound(uint64_t raw_len);

/* Compresses raw[0..raw_len) into dst (capacity dst_cap >= lz4page_bound).
 * Returns 0 and sets *stored_len, or -EINVAL / -ENOSPC (with tt_seterr). */
int lz4page_compress(const void *raw, uint64_t raw_len, void *dst, uint64_t dst_cap,
                     uint64_t *stored_len);

/* Validates the stored form (magic, sizes, every page's size and content) and
 * decompresses it into raw[0..raw_len). raw_len must equal the stored raw_len,
 * and stored_len must be exactly what lz4page_compress returned (the header,
 * size table and pages must fill it; padding after it is not part of it).
 * Returns 0, or -EINVAL (corrupt; with tt_seterr) — never reads or writes out
 * of bounds, whatever src holds. After a failure raw holds garbage. */
int lz4page_decompress(const void *src, uint64_t stored_len, void *raw, uint64_t raw_len);

#endif
