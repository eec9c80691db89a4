/* tests/fuzz_tokfile.c — libFuzzer target for the token file reader
 * (core/tokfile.c). `make fuzz` builds it; run:
 *   build/fuzz/fuzz_tokfile NEW_DIR tests/corpus/tokfile
 *
 * The input is a whole token file; it is opened from disk as `train` and
 * `eval` open theirs (mmap), and an accepted file has every token read and
 * checked against the vocabulary it declares. */
#include "core/tokfile.h"
#include "tests/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_put("input.tok", data, size);
    tokfile *tf;
    if (tokfile_open(path, &tf) == 0) {
        const uint32_t *t = tokfile_tokens(tf);
        for (uint64_t i = 0; i < tokfile_count(tf); i++)
            if (t[i] >= tokfile_vocab(tf)) abort(); /* the reader promised every token is in range */
        if (tokfile_eot(tf) >= tokfile_vocab(tf)) abort();
        tokfile_close(tf);
    }
    return 0;
}
