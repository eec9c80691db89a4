/* core/base/rng.h — a small deterministic RNG (xoshiro256**, seeded with
 * splitmix64), so that every random choice of tiertrain is reproducible from
 * a seed, on every machine. */
#ifndef TT_RNG_H
#define TT_RNG_H

#include <stdint.h>

typedef struct tt_rng {
    uint64_t s[4];
} tt_rng;

/* Seeds from a 64-bit seed and a stream id (e.g. a hash of a tensor name), so
 * independent streams can be generated in any order. */
void rng_seed(tt_rng *r, uint64_t seed, uint64_t stream);
uint64_t rng_next(tt_rng *r);
/* Uniform in [0, 1). */
double rng_uniform(tt_rng *r);
/* Uniform integer in [0, n), n > 0 (no modulo bias). */
uint64_t rng_below(tt_rng *r, uint64_t n);
/* A uniformly random k of 0..n-1 (partial Fisher-Yates), strictly increasing, into out[k]. */
void rng_subset(tt_rng *r, uint32_t n, uint32_t k, uint32_t *out);
/* Standard normal (Box–Muller, exact up to double rounding). */
double rng_normal(tt_rng *r);
/* Fills out[0..n) with approximately normal values of standard deviation std:
 * the sum of four 16-bit uniforms (Irwin–Hall), centred and scaled. About 20x
 * faster than Box–Muller; used for random synthetic weights, where the exact
 * shape of the distribution does not matter. */
void rng_fill_normalish(tt_rng *r, float *out, uint64_t n, float std);

/* 64-bit FNV-1a of a string, for stream ids. */
uint64_t rng_hash_str(const char *s);

#endif
