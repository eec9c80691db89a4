/* core/base/nf4.h — 4-bit NormalFloat (NF4) blockwise quantization exactly as
 * QLoRA / bitsandbytes define it (CPU reference implementation).
 *
 *   - code book: the 16 NF4 values (nf4_code), blocks of NF4_BLOCK = 64 values,
 *     one absmax per block; value i of a block is stored as the index of the
 *     nearest code to x_i * (1/absmax) (bitsandbytes' decision tree); two codes
 *     per byte, the first element in the HIGH nibble (bitsandbytes packing);
 *   - double quantization: the absmax values of a tensor, minus their mean
 *     (`offset`), are quantized to 8 bits blockwise (NF4_DQ_BLOCK = 256 absmax
 *     values per block) with bitsandbytes' signed dynamic map (nf4_dynamic_map,
 *     create_dynamic_map(signed=True)) and one f32 absmax2 per block of 256.
 *
 * The serialized form of one quantized tensor ("blob") is described by
 * nf4_layout(): parts in this order, each starting at a 16-byte aligned offset
 * from the blob start, total size rounded up to 16:
 *   codes    u8[ceil(n/2)]
 *   no double quant:  absmax  f32[nb]                      (nb = ceil(n/64))
 *   double quant:     qabsmax u8[nb]; absmax2 f32[ceil(nb/256)]; offset f32[1]
 * docs/FORMAT.md repeats this field by field.
 */
#ifndef TT_NF4_H
#define TT_NF4_H

#include <stdint.h>

#define NF4_BLOCK 64
#define NF4_DQ_BLOCK 256

extern const float nf4_code[16];
extern const float nf4_dynamic_map[256];

typedef struct nf4_layout {
    uint64_t n;            /* number of values */
    uint64_t nblocks;      /* ceil(n / 64) */
    uint64_t nblocks2;     /* ceil(nblocks / 256), 0 without double quant */
    int double_quant;
    uint64_t codes_off;    /* always 0 */
    uint64_t absmax_off;   /* f32[nblocks] (no dq) or u8[nblocks] (dq) */
    uint64_t absmax2_off;  /* f32[nblocks2] (dq only, else 0) */
    uint64_t offset_off;   /* f32 (dq only, else 0) */
    uint64_t total;        /* blob bytes, multiple of 16 */
} nf4_layout;

void nf4_layout_of(uint64_t n, int double_quant, nf4_layout *out);

/* Index (0..15) of the NF4 code nearest to a value already scaled into
 * [-1, 1], using bitsandbytes' dQuantizeNF4 thresholds. */
uint8_t nf4_quantize_value(float x);

/* Quantizes n values (n even, or the tensor's last chunk) block by block:
 * codes u8[ceil(n/2)] (packed, high nibble first), absmax f32[ceil(n/64)].
 * Chunks of a larger tensor may be quantized by separate calls as long as each
 * chunk except the last holds a multiple of 64 values. Values must be finite.
 * An all-zero block gets absmax 0 and code 7 (0.0); after an odd last value
 * the unused low nibble is 0. Writes exactly ceil(n/2) code bytes. */
void nf4_quantize_blocks(const float *x, uint64_t n, uint8_t *codes, float *absmax);

/* Inverse of nf4_quantize_blocks: out[i] = nf4_code[code_i] * absmax[i/64]. */
void nf4_dequantize_blocks(const uint8_t *codes, const float *absmax, uint64_t n, float *out);

/* Double quantization of nb absmax values: offset = mean(absmax); each block of
 * 256 (absmax - offset) values is scaled by 1/max|.| and mapped to the nearest
 * entry of nf4_dynamic_map. qabsmax u8[nb], absmax2 f32[ceil(nb/256)].
 * (The mean is summed in double; a block whose max|.| is 0 stores index 127,
 * the entry 0.0; ties between two entries go to the even index, as in
 * bitsandbytes' dQuantize.) */
void nf4_double_quant(const float *absmax, uint64_t nb, uint8_t *qabsmax, float *absmax2, float *offset);

/* absmax[i] = nf4_dynamic_map[qabsmax[i]] * absmax2[i/256] + offset. */
void nf4_double_dequant(const uint8_t *qabsmax, const float *absmax2, float offset, uint64_t nb, float *absmax);

/* Whole-tensor helpers on a blob laid out by nf4_layout_of(n, dq).
 * blob must hold layout.total bytes and be at least 4-byte aligned (asserted);
 * padding bytes are written as zero. With double quant, nf4_quantize_tensor
 * allocates (and frees) f32[nblocks] scratch for the absmax values. */
void nf4_quantize_tensor(const float *x, uint64_t n, int double_quant, uint8_t *blob);
void nf4_dequantize_tensor(const uint8_t *blob, uint64_t n, int double_quant, float *out);
/* Values [v0, v0 + count) of the same blob into out (count); v0 a multiple
 * of 64. The same arithmetic as the whole tensor, bit for bit. */
void nf4_dequantize_range(const uint8_t *blob, uint64_t n, int double_quant, uint64_t v0, uint64_t count, float *out);

#endif
