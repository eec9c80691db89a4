/* tests/fuzz_lz4page.c — libFuzzer target for the lz4 page codec
 * (io/lz4page.c). `make fuzz` builds it; run:
 *   build/fuzz/fuzz_lz4page NEW_DIR tests/corpus/lz4page
 *
 * The first input byte picks the mode:
 * - even: the rest is a stored extent, decoded with the raw length its own
 *   header claims (up to 4 MiB; most forged lengths are then consistent, so
 *   the page table and the pages are what get checked) or, for odd values of
 *   the second byte, with a length the header does not claim;
 * - odd: the rest is raw data, compressed and decompressed again, which must
 *   give back the same bytes (the round trip the store writer relies on). */
#include "io/lz4page.h"
#include "tests/fuzz.h"

#define MAX_RAW (4ull << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int roundtrip = data[0] & 1, other_len = data[1] & 1;
    uint8_t *in = fuzz_copy(data + 2, size - 2);
    uint64_t n = size - 2;
    if (!roundtrip) {
        uint64_t raw_len = n >= 16 ? fuzz_ld64(in + 8) : n;
        if (other_len || raw_len > MAX_RAW) raw_len = (n * 3 + data[1]) % MAX_RAW;
        uint8_t *raw = malloc(raw_len ? raw_len : 1);
        if (!raw) abort();
        (void)lz4page_decompress(in, n, raw, raw_len);
        free(raw);
    } else {
        uint64_t cap = lz4page_bound(n), stored;
        uint8_t *st = malloc(cap), *back = malloc(n ? n : 1);
        if (!st || !back) abort();
        if (lz4page_compress(in, n, st, cap, &stored) != 0) {
            fprintf(stderr, "compress refused %llu bytes into its bound: %s\n", (unsigned long long)n, tt_lasterr());
            abort();
        }
        if (stored > cap || lz4page_decompress(st, stored, back, n) != 0 || (n && memcmp(back, in, n) != 0)) {
            fprintf(stderr, "round trip of %llu bytes failed: %s\n", (unsigned long long)n, tt_lasterr());
            abort();
        }
        free(st);
        free(back);
    }
    free(in);
    return 0;
}
