/* core/base/rng.c — xoshiro256** (Blackman & Vigna), splitmix64 seeding. */
#include "core/base/rng.h"

#include "core/base/common.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void rng_seed(tt_rng *r, uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xd1342543de82ef95ull);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

uint64_t rng_next(tt_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double rng_uniform(tt_rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

uint64_t rng_below(tt_rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = rng_next(r); while (x >= limit);
    return x % n;
}

double rng_normal(tt_rng *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void rng_fill_normalish(tt_rng *r, float *out, uint64_t n, float std) {
    /* Sum of 4 uniforms on [0, 65536): mean 131070, variance 4 * (65536^2-1)/12. */
    const float scale = std / 37837.23f; /* sqrt(4 * (65536^2 - 1) / 12) */
    for (uint64_t i = 0; i < n; i++) {
        uint64_t x = rng_next(r);
        uint32_t s = (uint32_t)(x & 0xffff) + (uint32_t)((x >> 16) & 0xffff) + (uint32_t)((x >> 32) & 0xffff) +
                     (uint32_t)(x >> 48);
        out[i] = ((float)s - 131070.f) * scale;
    }
}

uint64_t rng_hash_str(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

void rng_subset(tt_rng *r, uint32_t n, uint32_t k, uint32_t *out) {
    TT_ASSERT(k <= n);
    uint32_t *perm = tt_xmalloc((size_t)n * sizeof *perm);
    for (uint32_t i = 0; i < n; i++) perm[i] = i;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t j = i + (uint32_t)rng_below(r, n - i);
        uint32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
    uint8_t *mark = tt_xcalloc(n, 1); /* mark the chosen, then emit them in order */
    for (uint32_t i = 0; i < k; i++) mark[perm[i]] = 1;
    for (uint32_t i = 0, m = 0; i < n; i++)
        if (mark[i]) out[m++] = i;
    free(mark);
    free(perm);
}
