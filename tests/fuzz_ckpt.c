/* tests/fuzz_ckpt.c — libFuzzer target for the checkpoint reader
 * (io/ckpt.c, what `train --resume` reads). `make fuzz` builds it; run:
 *   build/fuzz/fuzz_ckpt NEW_DIR tests/corpus/ckpt
 *
 * The input is a whole checkpoint.bin. Its payload length and checksum are
 * re-forged (tests/fuzz.h), so every mutation of the run record — counts,
 * steps, sizes, floats — reaches the checks behind the checksum, which must
 * refuse what cannot be a run before it sizes an allocation. */
#include "io/ckpt.h"
#include "tests/fuzz.h"

#include <xxhash.h>

#define HEADER 32u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *b = fuzz_copy(data, size);
    if (size >= HEADER) {
        uint64_t payload = size - HEADER, sum = XXH3_64bits(b + HEADER, payload);
        memcpy(b + 16, &payload, 8);
        memcpy(b + 24, &sum, 8);
    }
    (void)fuzz_put(CKPT_FILE, b, size);
    free(b);
    ckpt_state st;
    void *params;
    float *m, *v;
    if (ckpt_read(fuzz_dir(), &st, &params, &m, &v) == 0) {
        /* what was promised: n_params entries of each, all readable */
        volatile float acc = 0;
        for (uint64_t i = 0; i < st.n_params; i++) acc += m[i] + v[i];
        (void)acc;
        free(params);
        free(m);
        free(v);
    }
    return 0;
}
