/* core/base/nf4.c — NF4 blockwise quantization and its double quantization, bit
 * for bit as bitsandbytes' CUDA kernels (kQuantizeBlockwise / dQuantizeNF4 /
 * dQuantize / kDequantizeBlockwise) compute them, on the CPU. See core/base/nf4.h
 * for the format; tests/test_nf4.c checks this file against the independent
 * Python reference tests/ref/nf4_ref.py.
 *
 * Where this file departs from bitsandbytes (the dequantized values are the
 * same in every case):
 *   - an all-zero block (absmax 0) stores code 7 (0.0); bitsandbytes computes
 *     0 * (1/0) = NaN and stores code 0 (-1.0 * 0 = 0);
 *   - a double-quant block whose max |absmax - offset| is 0 stores index 127
 *     (0.0); bitsandbytes' NaN path stores index 0;
 *   - offset = mean(absmax) is summed in double (torch: float32 reduction);
 *   - the unused low nibble after an odd trailing element is 0 (bitsandbytes
 *     quantizes a zero pad there: code 7).
 * Inputs must be finite: NaN/Inf are not checked for (a NaN quantizes to code
 * 0, as in bitsandbytes).
 *
 * Nothing here allocates except nf4_quantize_tensor with double quant, which
 * needs the f32 absmax of the whole tensor before it can compute their mean.
 */
#include "core/base/nf4.h"

#include "core/base/common.h"

#include <math.h>
#include <string.h>

/* bitsandbytes dDequantizeNF4 (float32 values; index = 4-bit code). */
const float nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

/* The 15 decision thresholds of bitsandbytes' dQuantizeNF4, ascending, as the
 * float literals it writes (csrc/kernels.cu), which a C or CUDA compiler rounds
 * to the nearest float. Each literal is the exact midpoint of two adjacent
 * code values, (c[k] + c[k+1]) / 2 computed in double, printed to 16-17
 * digits. Where that midpoint falls exactly between two floats (k = 0, 1, 3,
 * 4, 8, 12, 14) the digits pick the side, so for k = 0, 8, 12 and 14 the
 * threshold is one float away from the round-to-even (float)midpoint; we keep
 * bitsandbytes' floats (the test checks all of this). Value x gets code k =
 * the number of thresholds with x > nf4_thr[k], which is what the decision
 * tree computes (its comparisons are all `x > t`: a value exactly on a
 * threshold gets the lower code; a NaN gets code 0). */
#define nf4_thr_0 -0.8480964004993439f
#define nf4_thr_1 -0.6106329262256622f
#define nf4_thr_2 -0.4599952697753906f
#define nf4_thr_3 -0.33967943489551544f
#define nf4_thr_4 -0.23460740596055984f
#define nf4_thr_5 -0.13791173323988914f
#define nf4_thr_6 -0.045525018125772476f
#define nf4_thr_7 0.03979014977812767f
#define nf4_thr_8 0.1202552504837513f
#define nf4_thr_9 0.2035212516784668f
#define nf4_thr_10 0.2920137718319893f
#define nf4_thr_11 0.3893125355243683f
#define nf4_thr_12 0.5016634166240692f
#define nf4_thr_13 0.6427869200706482f
#define nf4_thr_14 0.8614784181118011f
static const float nf4_thr[15] = {
    nf4_thr_0, nf4_thr_1, nf4_thr_2, nf4_thr_3, nf4_thr_4, nf4_thr_5, nf4_thr_6, nf4_thr_7,
    nf4_thr_8, nf4_thr_9, nf4_thr_10, nf4_thr_11, nf4_thr_12, nf4_thr_13, nf4_thr_14,
};

/* bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7,
 * total_bits=8), float32, ascending: for i in 0..6, the 2**i means of
 * adjacent points of torch.linspace(0.1, 1, 2**i + 1) (float32), times
 * 10**(i-6), with both signs; then 0 and 1.0. Index 127 is 0.0, 255 is 1.0, 0
 * is -0.99296875 (there is no -1.0). The table was printed by
 *     python3 tests/ref/nf4_ref.py table
 * whose linspace_f32() rounds as torch's CPU kernel does; it equals, entry for
 * entry, the table torch prints for bitsandbytes' create_dynamic_map(). */
const float nf4_dynamic_map[256] = {
    -0.992968738f,    -0.978906274f,    -0.96484375f,     -0.950781226f,
    -0.936718762f,    -0.922656238f,    -0.908593774f,    -0.89453125f,
    -0.880468726f,    -0.866406262f,    -0.852343738f,    -0.838281274f,
    -0.82421875f,     -0.810156226f,    -0.796093762f,    -0.782031238f,
    -0.767968774f,    -0.75390625f,     -0.739843726f,    -0.725781262f,
    -0.711718798f,    -0.697656274f,    -0.68359375f,     -0.669531226f,
    -0.655468762f,    -0.641406298f,    -0.627343774f,    -0.61328125f,
    -0.599218726f,    -0.585156262f,    -0.571093798f,    -0.557031274f,
    -0.54296875f,     -0.528906226f,    -0.514843702f,    -0.500781238f,
    -0.486718714f,    -0.47265625f,     -0.458593726f,    -0.444531262f,
    -0.430468738f,    -0.416406244f,    -0.40234375f,     -0.388281226f,
    -0.374218762f,    -0.360156238f,    -0.346093744f,    -0.33203125f,
    -0.317968726f,    -0.303906262f,    -0.289843738f,    -0.275781274f,
    -0.26171875f,     -0.247656241f,    -0.233593747f,    -0.219531253f,
    -0.205468744f,    -0.19140625f,     -0.177343756f,    -0.163281247f,
    -0.149218753f,    -0.135156244f,    -0.12109375f,     -0.107031256f,
    -0.0985937491f,   -0.0957812592f,   -0.0929687545f,   -0.0901562497f,
    -0.0873437524f,   -0.0845312476f,   -0.0817187577f,   -0.078906253f,
    -0.0760937482f,   -0.0732812509f,   -0.0704687461f,   -0.0676562563f,
    -0.0648437515f,   -0.0620312504f,   -0.0592187531f,   -0.0564062484f,
    -0.053593751f,    -0.05078125f,     -0.047968749f,    -0.0451562516f,
    -0.0423437469f,   -0.0395312496f,   -0.0367187522f,   -0.0339062512f,
    -0.0310937501f,   -0.028281251f,    -0.0254687499f,   -0.0226562507f,
    -0.0198437516f,   -0.0170312505f,   -0.0142187504f,   -0.0114062503f,
    -0.00971874967f,  -0.00915624946f,  -0.00859375019f,  -0.00803124998f,
    -0.00746874977f,  -0.00690625003f,  -0.00634374982f,  -0.00578125007f,
    -0.00521875033f,  -0.00465624966f,  -0.00409374991f,  -0.00353124971f,
    -0.00296874996f,  -0.00240624999f,  -0.00184375001f,  -0.00128124992f,
    -0.000943750085f, -0.000831249985f, -0.00071875006f,  -0.000606250076f,
    -0.000493750034f, -0.000381250022f, -0.000268750038f, -0.000156250011f,
    -8.87499991e-05f, -6.62500024e-05f, -4.37499984e-05f, -2.12499981e-05f,
    -7.7499999e-06f,  -3.25000019e-06f, -5.50000038e-07f, 0.0f,
    5.50000038e-07f,  3.25000019e-06f,  7.7499999e-06f,   2.12499981e-05f,
    4.37499984e-05f,  6.62500024e-05f,  8.87499991e-05f,  0.000156250011f,
    0.000268750038f,  0.000381250022f,  0.000493750034f,  0.000606250076f,
    0.00071875006f,   0.000831249985f,  0.000943750085f,  0.00128124992f,
    0.00184375001f,   0.00240624999f,   0.00296874996f,   0.00353124971f,
    0.00409374991f,   0.00465624966f,   0.00521875033f,   0.00578125007f,
    0.00634374982f,   0.00690625003f,   0.00746874977f,   0.00803124998f,
    0.00859375019f,   0.00915624946f,   0.00971874967f,   0.0114062503f,
    0.0142187504f,    0.0170312505f,    0.0198437516f,    0.0226562507f,
    0.0254687499f,    0.028281251f,     0.0310937501f,    0.0339062512f,
    0.0367187522f,    0.0395312496f,    0.0423437469f,    0.0451562516f,
    0.047968749f,     0.05078125f,      0.053593751f,     0.0564062484f,
    0.0592187531f,    0.0620312504f,    0.0648437515f,    0.0676562563f,
    0.0704687461f,    0.0732812509f,    0.0760937482f,    0.078906253f,
    0.0817187577f,    0.0845312476f,    0.0873437524f,    0.0901562497f,
    0.0929687545f,    0.0957812592f,    0.0985937491f,    0.107031256f,
    0.12109375f,      0.135156244f,     0.149218753f,     0.163281247f,
    0.177343756f,     0.19140625f,      0.205468744f,     0.219531253f,
    0.233593747f,     0.247656241f,     0.26171875f,      0.275781274f,
    0.289843738f,     0.303906262f,     0.317968726f,     0.33203125f,
    0.346093744f,     0.360156238f,     0.374218762f,     0.388281226f,
    0.40234375f,      0.416406244f,     0.430468738f,     0.444531262f,
    0.458593726f,     0.47265625f,      0.486718714f,     0.500781238f,
    0.514843702f,     0.528906226f,     0.54296875f,      0.557031274f,
    0.571093798f,     0.585156262f,     0.599218726f,     0.61328125f,
    0.627343774f,     0.641406298f,     0.655468762f,     0.669531226f,
    0.68359375f,      0.697656274f,     0.711718798f,     0.725781262f,
    0.739843726f,     0.75390625f,      0.767968774f,     0.782031238f,
    0.796093762f,     0.810156226f,     0.82421875f,      0.838281274f,
    0.852343738f,     0.866406262f,     0.880468726f,     0.89453125f,
    0.908593774f,     0.922656238f,     0.936718762f,     0.950781226f,
    0.96484375f,      0.978906274f,     0.992968738f,     1.0f,
};

#define NF4_DYN_ZERO 127 /* index of 0.0 in nf4_dynamic_map */

/* ---- NF4 codes ------------------------------------------------------------ */

/* Code index of a value already scaled into [-1, 1]: the count of thresholds
 * below it (scalar reference; quant_block64 computes the same 4 at a time). */
static inline unsigned nf4_index(float x) {
    unsigned q = 0;
    for (int k = 0; k < 15; k++) q += x > nf4_thr[k];
    return q;
}

uint8_t nf4_quantize_value(float x) { return (uint8_t)nf4_index(x); }

/* The hot loop uses GCC/clang vector extensions (4 float32 lanes: plain SSE2
 * on a baseline x86-64 build, NEON on arm64): the decision tree's branches
 * are unpredictable on real weights, and -O2 does not vectorize the scalar
 * form. Every lane does the same IEEE float32 operations as the scalar code
 * (the test compares the two on random data). */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "core/base/nf4.c packs nibbles through 64-bit lanes and assumes little-endian"
#endif
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef uint64_t v2u64 __attribute__((vector_size(16)));

#define SPLAT4(t) {t, t, t, t}
static const v4f nf4_thr_v[15] = {
    SPLAT4(nf4_thr_0), SPLAT4(nf4_thr_1), SPLAT4(nf4_thr_2), SPLAT4(nf4_thr_3), SPLAT4(nf4_thr_4),
    SPLAT4(nf4_thr_5), SPLAT4(nf4_thr_6), SPLAT4(nf4_thr_7), SPLAT4(nf4_thr_8), SPLAT4(nf4_thr_9),
    SPLAT4(nf4_thr_10), SPLAT4(nf4_thr_11), SPLAT4(nf4_thr_12), SPLAT4(nf4_thr_13), SPLAT4(nf4_thr_14),
};

/* One full block: x f32[64] -> out u8[32] (high nibble first), *absmax. */
static inline void quant_block64(const float *restrict x, uint8_t *restrict out, float *restrict absmax) {
    const v4i nosign = SPLAT4(0x7fffffff);
    v4f m4 = SPLAT4(0.0f);
    for (int j = 0; j < NF4_BLOCK; j += 4) {
        v4f a;
        memcpy(&a, x + j, sizeof a);
        a = (v4f)((v4i)a & nosign);                    /* fabsf */
        v4i gt = a > m4;                               /* m = a > m ? a : m */
        m4 = (v4f)(((v4i)a & gt) | ((v4i)m4 & ~gt));
    }
    float m = 0.0f;
    for (int k = 0; k < 4; k++) m = m4[k] > m ? m4[k] : m;
    *absmax = m;
    /* bitsandbytes multiplies by the reciprocal; absmax 0 -> scale 0 -> code 7 */
    const float s = m > 0.0f ? 1.0f / m : 0.0f;
    const v4f s4 = SPLAT4(s);
    for (int j = 0; j < NF4_BLOCK; j += 4) {
        v4f v;
        memcpy(&v, x + j, sizeof v);
        v *= s4;
        v4i q = SPLAT4(0);
#pragma GCC unroll 15
        for (int k = 0; k < 15; k++) q -= v > nf4_thr_v[k]; /* true is -1 */
        /* lanes (2i, 2i+1) share a 64-bit word (low, high): one byte each */
        v2u64 w = (v2u64)q;
        w = ((w & 15) << 4) | (w >> 32);
        out[j / 2] = (uint8_t)w[0];
        out[j / 2 + 1] = (uint8_t)w[1];
    }
}

void nf4_quantize_blocks(const float *x, uint64_t n, uint8_t *codes, float *absmax) {
    const uint64_t nfull = n / NF4_BLOCK, rem = n % NF4_BLOCK;
    for (uint64_t b = 0; b < nfull; b++)
        quant_block64(x + b * NF4_BLOCK, codes + b * (NF4_BLOCK / 2), absmax + b);
    if (rem) {
        /* the last, partial block: zero padding changes neither absmax nor
         * the codes of the real values */
        float pad[NF4_BLOCK] = {0};
        uint8_t q[NF4_BLOCK / 2];
        memcpy(pad, x + nfull * NF4_BLOCK, rem * sizeof(float));
        quant_block64(pad, q, absmax + nfull);
        if (rem & 1) q[rem / 2] &= 0xF0; /* unused low nibble = 0 */
        memcpy(codes + nfull * (NF4_BLOCK / 2), q, (rem + 1) / 2);
    }
}

void nf4_dequantize_blocks(const uint8_t *codes, const float *absmax, uint64_t n, float *out) {
    const uint64_t nfull = n / NF4_BLOCK, rem = n % NF4_BLOCK;
    for (uint64_t b = 0; b < nfull; b++) {
        const uint8_t *c = codes + b * (NF4_BLOCK / 2);
        float *o = out + b * NF4_BLOCK;
        const float a = absmax[b];
        for (int j = 0; j < NF4_BLOCK / 2; j++) {
            o[2 * j] = nf4_code[c[j] >> 4] * a;
            o[2 * j + 1] = nf4_code[c[j] & 15] * a;
        }
    }
    if (rem) {
        const uint8_t *c = codes + nfull * (NF4_BLOCK / 2);
        float *o = out + nfull * NF4_BLOCK;
        const float a = absmax[nfull];
        for (uint64_t j = 0; j < rem; j++)
            o[j] = nf4_code[(j & 1) ? (c[j / 2] & 15) : (c[j / 2] >> 4)] * a;
    }
}

/* ---- double quantization ------------------------------------------------- */

/* Index of the nf4_dynamic_map entry nearest to x, exactly as bitsandbytes'
 * dQuantize<0> picks it: with k the last entry below x (map[k] < x <=
 * map[k+1]), the float midpoint m = (map[k] + map[k+1]) * 0.5f decides: x > m
 * -> k+1, x < m -> k, x == m -> whichever of k, k+1 is even (dQuantize's
 * 7-step pivot search ends on even leaves and keeps the leaf on a tie).
 * x <= map[0] -> 0; x > 1.0 -> 255. Nearest by absolute distance, up to the
 * rounding of m. */
static inline uint8_t dyn_index(float x) {
    /* lo = number of entries < x, capped at 255 (branch-free binary search) */
    unsigned lo = 0;
#pragma GCC unroll 8
    for (unsigned step = 128; step; step >>= 1) lo += step * (unsigned)(nf4_dynamic_map[lo + step - 1] < x);
    /* k: map[k] < x <= map[k+1]; x <= map[0] gives k = 0 and x > 1.0 gives
     * k = 254, where the midpoint test below then yields 0 and 255 */
    const unsigned k = lo ? lo - 1 : 0;
    const float m = (nf4_dynamic_map[k] + nf4_dynamic_map[k + 1]) * 0.5f;
    return (uint8_t)(k + (x > m) + ((x == m) & (k & 1)));
}

void nf4_double_quant(const float *absmax, uint64_t nb, uint8_t *qabsmax, float *absmax2, float *offset) {
    double sum = 0.0;
    for (uint64_t i = 0; i < nb; i++) sum += absmax[i];
    const float off = nb ? (float)(sum / (double)nb) : 0.0f;
    *offset = off;
    for (uint64_t b0 = 0; b0 < nb; b0 += NF4_DQ_BLOCK) {
        const uint64_t len = nb - b0 < NF4_DQ_BLOCK ? nb - b0 : NF4_DQ_BLOCK;
        const float *a = absmax + b0;
        float m = 0.0f;
        for (uint64_t j = 0; j < len; j++) {
            float d = fabsf(a[j] - off);
            m = d > m ? d : m;
        }
        absmax2[b0 / NF4_DQ_BLOCK] = m;
        if (m == 0.0f) { /* every absmax equals the offset */
            memset(qabsmax + b0, NF4_DYN_ZERO, len);
            continue;
        }
        const float s = 1.0f / m;
        for (uint64_t j = 0; j < len; j++) qabsmax[b0 + j] = dyn_index((a[j] - off) * s);
    }
}

void nf4_double_dequant(const uint8_t *qabsmax, const float *absmax2, float offset, uint64_t nb, float *absmax) {
    for (uint64_t i = 0; i < nb; i++) {
        /* two roundings, as bitsandbytes (dequantize_blockwise, then
         * += offset): volatile keeps a compiler allowed to contract (gnu11
         * with FMA hardware) from fusing them into one fmaf */
        volatile float t = nf4_dynamic_map[qabsmax[i]] * absmax2[i / NF4_DQ_BLOCK];
        absmax[i] = t + offset;
    }
}

/* ---- whole-tensor blobs -------------------------------------------------- */

void nf4_layout_of(uint64_t n, int double_quant, nf4_layout *out) {
    nf4_layout L = {0};
    L.n = n;
    L.nblocks = tt_div_up(n, NF4_BLOCK);
    L.double_quant = double_quant ? 1 : 0;
    L.codes_off = 0;
    L.absmax_off = tt_align_up(tt_div_up(n, 2), 16);
    uint64_t end;
    if (!double_quant) {
        end = L.absmax_off + L.nblocks * sizeof(float);
    } else {
        L.nblocks2 = tt_div_up(L.nblocks, NF4_DQ_BLOCK);
        L.absmax2_off = tt_align_up(L.absmax_off + L.nblocks, 16);
        L.offset_off = tt_align_up(L.absmax2_off + L.nblocks2 * sizeof(float), 16);
        end = L.offset_off + sizeof(float);
    }
    L.total = tt_align_up(end, 16);
    *out = L;
}

static void zero_gap(uint8_t *blob, uint64_t from, uint64_t to) {
    if (to > from) memset(blob + from, 0, to - from);
}

void nf4_quantize_tensor(const float *x, uint64_t n, int double_quant, uint8_t *blob) {
    nf4_layout L;
    nf4_layout_of(n, double_quant, &L);
    TT_ASSERT(((uintptr_t)blob & (sizeof(float) - 1)) == 0);
    zero_gap(blob, tt_div_up(n, 2), L.absmax_off);
    if (!L.double_quant) {
        nf4_quantize_blocks(x, n, blob + L.codes_off, (float *)(blob + L.absmax_off));
        zero_gap(blob, L.absmax_off + L.nblocks * sizeof(float), L.total);
        return;
    }
    /* the f32 absmax of every block, only until they are double-quantized */
    float *absmax = tt_xmalloc(L.nblocks * sizeof(float));
    nf4_quantize_blocks(x, n, blob + L.codes_off, absmax);
    float off;
    nf4_double_quant(absmax, L.nblocks, blob + L.absmax_off, (float *)(blob + L.absmax2_off), &off);
    free(absmax);
    memcpy(blob + L.offset_off, &off, sizeof off);
    zero_gap(blob, L.absmax_off + L.nblocks, L.absmax2_off);
    zero_gap(blob, L.absmax2_off + L.nblocks2 * sizeof(float), L.offset_off);
    zero_gap(blob, L.offset_off + sizeof(float), L.total);
}

void nf4_dequantize_tensor(const uint8_t *blob, uint64_t n, int double_quant, float *out) {
    nf4_dequantize_range(blob, n, double_quant, 0, n, out);
}

void nf4_dequantize_range(const uint8_t *blob, uint64_t n, int double_quant, uint64_t v0, uint64_t count, float *out) {
    nf4_layout L;
    nf4_layout_of(n, double_quant, &L);
    TT_ASSERT(((uintptr_t)blob & (sizeof(float) - 1)) == 0 && v0 % NF4_BLOCK == 0 && v0 <= n && count <= n - v0);
    const uint8_t *codes = blob + L.codes_off;
    float off = 0;
    if (L.double_quant) memcpy(&off, blob + L.offset_off, sizeof off);
    /* at most one double-quant block (256 absmax values, 16384 values) at a time */
    const uint64_t span = (uint64_t)NF4_DQ_BLOCK * NF4_BLOCK;
    float absbuf[NF4_DQ_BLOCK];
    for (uint64_t i0 = v0, end = v0 + count; i0 < end;) {
        const uint64_t stop = (i0 / span + 1) * span < end ? (i0 / span + 1) * span : end;
        const uint64_t len = stop - i0, b0 = i0 / NF4_BLOCK, nb = (len + NF4_BLOCK - 1) / NF4_BLOCK;
        const float *absmax = (const float *)(blob + L.absmax_off) + b0;
        if (L.double_quant) {
            nf4_double_dequant(blob + L.absmax_off + b0, (const float *)(blob + L.absmax2_off) + i0 / span, off, nb,
                               absbuf);
            absmax = absbuf;
        }
        nf4_dequantize_blocks(codes + i0 / 2, absmax, len, out + (i0 - v0));
        i0 = stop;
    }
}
