/* tests/fuzz_safetensors.c — libFuzzer target for the safetensors header
 * parser (io/safetensors.c). `make fuzz` builds it; run:
 *   build/fuzz/fuzz_safetensors NEW_DIR tests/corpus/safetensors
 *
 * The input is a whole file image (its length is the file size). The format
 * has no checksum, so no forging is needed: every mutation reaches the
 * length, JSON and layout validation. The seeds (valid files and one file per
 * malformation) are written by tests/test_safetensors.c. */
#include "core/base/common.h"
#include "io/safetensors.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* An exact-size copy, so ASan catches any read past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    (void)st_parse_buffer(buf, size, "fuzz-input");
    free(buf);
    return 0;
}
