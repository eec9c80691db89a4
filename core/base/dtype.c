/* core/base/dtype.c — dtype names and sizes. */
#include "core/base/dtype.h"

#include "core/base/common.h"
#include "core/base/nf4.h"

const char *dtype_name(uint32_t d) {
    switch (d) {
    case TT_DTYPE_F32: return "f32";
    case TT_DTYPE_BF16: return "bf16";
    case TT_DTYPE_NF4: return "nf4";
    case TT_DTYPE_NF4DQ: return "nf4-dq";
    default: return NULL;
    }
}

uint32_t dtype_parse(const char *s) {
    for (uint32_t d = TT_DTYPE_F32; d <= TT_DTYPE_NF4DQ; d++)
        if (strcmp(s, dtype_name(d)) == 0) return d;
    return 0;
}

uint64_t dtype_bytes(uint32_t d, uint64_t n) {
    nf4_layout l;
    switch (d) {
    case TT_DTYPE_F32: return 4 * n;
    case TT_DTYPE_BF16: return 2 * n;
    case TT_DTYPE_NF4:
    case TT_DTYPE_NF4DQ: nf4_layout_of(n, d == TT_DTYPE_NF4DQ, &l); return l.total;
    default: TT_ASSERT(!"unknown dtype"); return 0;
    }
}

void dtype_decode_f32(uint32_t dtype, const void *blob, uint64_t n, uint64_t v0, uint64_t count, float *out) {
    TT_ASSERT(v0 <= n && count <= n - v0);
    const uint8_t *b = blob;
    switch (dtype) {
    case TT_DTYPE_F32: memcpy(out, b + v0 * sizeof(float), count * sizeof(float)); break;
    case TT_DTYPE_BF16:
        for (uint64_t i = 0; i < count; i++) {
            uint16_t h; /* memcpy: the blob need not be 2-byte aligned */
            memcpy(&h, b + (v0 + i) * sizeof h, sizeof h);
            out[i] = bf16_to_f32(h);
        }
        break;
    case TT_DTYPE_NF4:
    case TT_DTYPE_NF4DQ: nf4_dequantize_range(b, n, dtype == TT_DTYPE_NF4DQ, v0, count, out); break;
    default: TT_ASSERT(!"unknown dtype");
    }
}
