/* tests/fuzz_tier.c — libFuzzer target for the store: its header and
 * directory parser and the data extents behind them (io/tier.c,
 * io/lz4page.c). `make fuzz` builds it; run:
 *   build/fuzz/fuzz_tier NEW_DIR tests/corpus/tier
 *
 * The input is a whole store image (its length is the file size). The header
 * and metadata checksums are re-forged (tests/fuzz.h) so that mutations reach
 * the structural validation; a store that passes it has every extent
 * checksummed and decoded (raw or lz4 pages) as the streaming reader would,
 * whether or not its checksum matches, so the page decoder sees forged pages
 * too. */
#include "io/tier.h"
#include "tests/fuzz.h"

#include <xxhash.h>

#define MAX_RAW (16ull << 20) /* larger extents are skipped (the fuzzer's memory limit) */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = fuzz_copy(data, size);
    if (size >= TIER_HEADER_BYTES) {
        uint64_t meta_size = fuzz_ld64(buf + 24);
        if (meta_size <= size - TIER_HEADER_BYTES) {
            uint64_t sum = XXH3_64bits(buf + TIER_HEADER_BYTES, meta_size);
            memcpy(buf + 56, &sum, 8);
        }
        uint64_t hsum = XXH3_64bits(buf, TIER_HEADER_BYTES - 8);
        memcpy(buf + TIER_HEADER_BYTES - 8, &hsum, 8);
    }
    tier_store *s;
    if (tier_open_buffer(&s, buf, size, "fuzz-input") == 0) {
        for (uint32_t i = 0; i < tier_n_extents(s); i++) {
            const tier_extent *e = tier_extent_at(s, i);
            if (e->raw > MAX_RAW) continue;
            const uint8_t *stored = buf + e->offset; /* validated: inside the image */
            (void)tier_extent_check(s, i, stored);
            uint8_t *raw = malloc(e->raw ? e->raw : 1);
            if (!raw) abort();
            (void)tier_extent_decode(s, i, stored, raw);
            free(raw);
        }
        tier_close(s);
    }
    free(buf);
    return 0;
}
