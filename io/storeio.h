/* io/storeio.h — a store's tensors as f32, tensor by tensor: the shared
 * machinery of import, export, prune, quantize, merge and train --full.
 *
 * Reading: a store_reader hands out tensor i (config_tensor order) decoded to
 * f32 (NF4/NF4-dq dequantized, bf16 widened), reading and checking one extent
 * at a time, so only one layer's bytes are in memory.
 *
 * Writing: store_write fills each tensor of the new config as f32 through a
 * callback and encodes it in the tensor's dtype (NF4 quantized, bf16 rounded
 * to nearest even); the store appears atomically (tier_writer) or not at all.
 */
#ifndef TT_STOREIO_H
#define TT_STOREIO_H

#include <stdint.h>

#include "core/base/config.h"
#include "io/tier.h"

/* Encodes n f32 values as dtype into blob (dtype_bytes(dtype, n) bytes;
 * 4-byte aligned). Values must be finite for NF4. */
void tensor_encode(uint32_t dtype, const float *x, uint64_t n, void *blob);

/* The store's one reader is io/uring.c's engine: the trainer reads through
 * it with O_DIRECT into its pinned arena, the tools here buffered. */
struct uring_reader;
/* Opens s's file (the one tier_open read its metadata from) for buffered reads
 * through the engine. Returns 0 or -errno with a message. */
int store_file_open(struct uring_reader **out, const tier_store *s);

/* Reads extent e of s through ur, checks its checksum and decodes it;
 * *raw_out (heap, free() it; ext->raw bytes) on success. Returns 0 or -errno
 * with a message naming the file and the offset. */
int store_read_extent(const tier_store *s, struct uring_reader *ur, uint32_t e, uint8_t **raw_out);

typedef struct store_reader {
    tier_store *s;
    struct uring_reader *ur;
    uint32_t cur;    /* extent held in raw, or UINT32_MAX */
    uint8_t *raw;
} store_reader;

/* Opens path for reading tensors. Returns 0 or -errno with a message. */
int store_reader_open(store_reader *r, const char *path);
void store_reader_close(store_reader *r); /* zeroed or closed is fine */
static inline const tt_config *store_reader_config(const store_reader *r) { return tier_config(r->s); }
/* Tensor i as f32 into out (rows * cols floats). Returns 0 or -errno (IO
 * error, checksum mismatch) with a message naming the file. */
int store_reader_tensor(store_reader *r, uint32_t i, float *out);
/* The stored dtype of tensor i. */
uint32_t store_reader_dtype(const store_reader *r, uint32_t i);

/* Largest rows * cols over the tensors of cfg. */
uint64_t store_max_tensor(const tt_config *cfg);

/* The usual dtype of each tensor: linear projections `linear`, norms f32,
 * embedding and lm_head f32 when `other` is f32, else bf16. */
void store_default_dtypes(const tt_config *cfg, uint32_t linear, uint32_t other, uint32_t *dtypes);

/* Fills out (d->rows * d->cols floats) with tensor i of the store being
 * written. Returns 0 or -errno with a message. */
typedef int (*store_fill_fn)(void *ctx, uint32_t i, const tt_tensor_desc *d, float *out);

/* 0 when x[0..n) (tensor's values, cols a row; 1: a vector) are all finite, else -EINVAL with a sentence naming
 * from (the file the values came from), the tensor, where the first one is, and then why (the caller's
 * consequence and advice: "cannot quantize it to NF4"). */
int store_check_finite(const char *from, const char *tensor, const float *x, uint64_t n, uint64_t cols,
                       const char *why);
/* store_check_finite for NF4 (a NaN would quantize to an arbitrary code). */
int store_check_quantizable(const char *from, const char *tensor, const float *x, uint64_t n, uint64_t cols);

/* Writes a store for cfg at path: every tensor, in order, from fill, encoded
 * as opts->dtypes say (fill may report progress itself: it sees every i).
 * Returns 0, or -errno with a message (no file is left at path; an existing
 * file there is untouched). */
int store_write(const char *path, const tt_config *cfg, const tier_write_opts *opts, store_fill_fn fill, void *ctx);

/* Checks, before any long work, that a command can write its output file
 * `out` (named by option `opt`, e.g. "-o"): it is not a directory, its
 * folder exists and is writable, and it is not the same file as `in` (the
 * input; may be NULL) — same path or same inode. Returns 0 or -errno with one
 * sentence naming the option and the path. */
int store_check_output(const char *opt, const char *out, const char *in);

/* Frees every array of a pruning map (not the map itself). */
void store_prune_map_clear(tier_prune_map *map);

#endif
