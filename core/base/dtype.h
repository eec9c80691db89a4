/* core/base/dtype.h — element types of stored tensors, bf16 and f16 conversion. */
#ifndef TT_DTYPE_H
#define TT_DTYPE_H

#include <stdint.h>
#include <string.h>

typedef enum tt_dtype {
    TT_DTYPE_F32 = 1,
    TT_DTYPE_BF16 = 2,
    TT_DTYPE_NF4 = 3,   /* NF4, f32 absmax per block of 64 */
    TT_DTYPE_NF4DQ = 4, /* NF4 with double-quantized absmax */
} tt_dtype;

/* "f32", "bf16", "nf4", "nf4-dq", or NULL for an unknown value. */
const char *dtype_name(uint32_t dtype);
/* Parses "f32" / "bf16" / "nf4" / "nf4-dq"; returns the dtype or 0. */
uint32_t dtype_parse(const char *s);
/* Serialized bytes of n values (NF4: nf4_layout_of(n).total). */
uint64_t dtype_bytes(uint32_t dtype, uint64_t n);
/* 1 for NF4, with or without double quantization. */
static inline int dtype_is_nf4(uint32_t dtype) { return dtype == TT_DTYPE_NF4 || dtype == TT_DTYPE_NF4DQ; }

/* The store's one decoder: values [v0, v0 + count) of a tensor of n values
 * stored as dtype (the blob in the layout of docs/FORMAT.md; NF4 4-byte
 * aligned, v0 a multiple of 64) into f32. The CPU backend, store reading,
 * export and merge all decode through it. */
void dtype_decode_f32(uint32_t dtype, const void *blob, uint64_t n, uint64_t v0, uint64_t count, float *out);

/* f32 -> bf16 with round-to-nearest-even (NaN stays NaN), and back. */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half (safetensors F16) -> f32, exact (subnormals normalised, inf/NaN kept). */
static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) u = sign | 0x7f800000u | (man << 13);     /* inf / NaN */
    else if (exp) u = sign | ((exp + 112) << 23) | (man << 13); /* normal */
    else if (!man) u = sign;                                    /* zero */
    else {                                                      /* subnormal: normalise */
        exp = 113;
        while (!(man & 0x400)) { man <<= 1; exp--; }
        u = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
