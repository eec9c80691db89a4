/* tests/fuzz_tier.c — libFuzzer target for the store header/directory parser.
 * `make fuzz` builds it; run: build/fuzz/fuzz_tier NEW_DIR tests/corpus/tier
 *
 * The input is a whole store image (its length is the file size). Most random
 * mutations would only hit the checksums, so the target first recomputes the
 * header and metadata checksums (as a forger would) whenever the header
 * fields allow it: the fuzzer then exercises the structural validation
 * (the checksum comparison itself is covered by tests/test_tier.c). */
#include "core/base/common.h"
#include "io/tier.h"

#include <string.h>
#include <xxhash.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    if (size >= TIER_HEADER_BYTES) {
        uint64_t meta_size;
        memcpy(&meta_size, buf + 24, 8);
        if (meta_size <= size - TIER_HEADER_BYTES) {
            uint64_t sum = XXH3_64bits(buf + TIER_HEADER_BYTES, meta_size);
            memcpy(buf + 56, &sum, 8);
        }
        uint64_t hsum = XXH3_64bits(buf, TIER_HEADER_BYTES - 8);
        memcpy(buf + TIER_HEADER_BYTES - 8, &hsum, 8);
    }
    (void)tier_parse_buffer(buf, size, "fuzz-input");
    free(buf);
    return 0;
}
