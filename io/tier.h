/* io/tier.h — the .tier model store: reader and writer.
 *
 * A store holds one model: a fixed header, a metadata section (the model
 * config with per-layer dimensions, extent and tensor directories, the
 * optional pruning map), and a data region where every extent (the embedding,
 * each layer, the head) is one contiguous run of bytes aligned to 4096, with
 * an XXH3-64 checksum. docs/FORMAT.md describes every field.
 *
 * The reader validates the whole header and directory before anything uses
 * them; data extents are read by the caller (io/uring.h) at the offsets given
 * here and checked with tier_extent_check.
 *
 * The writer streams: tensors are appended in table order (config_tensor),
 * each extent's checksum is computed on the fly, and the header is written
 * last; the file is built under "<path>.partial", fsynced and renamed, so a
 * reader never sees half a store.
 */
#ifndef TT_TIER_H
#define TT_TIER_H

#include <stdint.h>

#include "core/base/config.h"

#define TIER_MAGIC "TIERSTOR"
#define TIER_VERSION 1u
#define TIER_ALIGN 4096u        /* extent alignment in the file */
#define TIER_TENSOR_ALIGN 256u  /* tensor alignment inside an extent */
#define TIER_HEADER_BYTES 128u

typedef enum tier_codec {
    TIER_CODEC_RAW = 0,
    TIER_CODEC_LZ4 = 1, /* io/lz4page.h page codec */
} tier_codec;

typedef struct tier_extent {
    uint64_t offset;   /* file offset, multiple of TIER_ALIGN */
    uint64_t stored;   /* bytes in the file (before padding) */
    uint64_t raw;      /* bytes once decoded */
    uint64_t checksum; /* XXH3-64 of the stored bytes */
    uint32_t codec;    /* tier_codec */
    uint32_t first_tensor, n_tensors;
} tier_extent;

typedef struct tier_tensor {
    char name[TT_NAME_MAX];
    uint32_t dtype;    /* tt_dtype */
    uint32_t extent;
    uint32_t ndim;
    uint64_t rows, cols;
    uint64_t offset;   /* inside the decoded extent, multiple of TIER_TENSOR_ALIGN */
    uint64_t nbytes;   /* dtype_bytes(dtype, rows*cols) */
} tier_tensor;

/* Kept indices of the original model, for each pruned layer: n_kv_heads of
 * that layer KV-head indices and ffn MLP-channel indices, strictly increasing.
 * Query heads follow their KV head (GQA groups are kept whole). Layers that
 * are not pruned have NULL arrays. */
typedef struct tier_prune_map {
    uint32_t *kv[TT_MAX_LAYERS];
    uint32_t *ffn[TT_MAX_LAYERS];
} tier_prune_map;

/* ---- reader --------------------------------------------------------------- */

typedef struct tier_store tier_store;

/* Opens and validates a store. Returns 0, or -errno with one sentence naming
 * path and the problem (missing, a directory, truncated, corrupt header,
 * unsupported version, inconsistent directory). */
int tier_open(tier_store **out, const char *path);
/* A store of its own (tier_close frees it) over the file s was opened from, the same
 * file even where another was renamed over s's path since, or it was removed: what a
 * part of a command that reads the data takes from the caller's store, so that
 * every part of a run reads one file. s must come from tier_open. Returns 0, or
 * -EIO with a message where the file was modified since s was opened
 * (tier_check_unchanged). */
int tier_reopen(tier_store **out, const tier_store *s);
/* The open file the store's extents are read from (uring_reader_reopen); -1 for
 * tier_describe's and tier_open_buffer's stores. */
int tier_fd(const tier_store *s);
/* 0 while the store's file has the size and modification time it had when
 * opened; else -EIO with a message saying it was modified while the run read it
 * (one fstat). */
int tier_check_unchanged(const tier_store *s);
/* A store as `synth` would write it for cfg with dtypes (raw extents, no
 * pruning map, no file): its directory, offsets and sizes, for planning a
 * model that is not on disk (plan --preset). Its data cannot be read; name
 * is what tier_path gives. Returns 0 or -EINVAL (an invalid config). */
int tier_describe(tier_store **out, const tt_config *cfg, const uint32_t *dtypes, const char *name);
void tier_close(tier_store *s); /* NULL is fine */

const char *tier_path(const tier_store *s);
const tt_config *tier_config(const tier_store *s);
uint64_t tier_file_size(const tier_store *s);
uint64_t tier_data_offset(const tier_store *s);
uint32_t tier_n_extents(const tier_store *s);
const tier_extent *tier_extent_at(const tier_store *s, uint32_t i);
uint32_t tier_n_tensors(const tier_store *s);
const tier_tensor *tier_tensor_at(const tier_store *s, uint32_t i);
/* Index of the tensor named name, or -1. */
int tier_find_tensor(const tier_store *s, const char *name);
/* The pruning map, or NULL when the store has none. */
const tier_prune_map *tier_prune(const tier_store *s);
/* The model the store was made from, as recorded by `import` (the Hugging
 * Face directory or hub name; --base-model) and carried by prune, quantize
 * and merge: what an adapter's base_model_name_or_path names. NULL: none
 * (synth, and stores written before the record existed). */
const char *tier_source(const tier_store *s);
/* Human name of extent i: "embedding", "layer 12", "head". */
const char *tier_extent_name(const tier_store *s, uint32_t i, char *buf, uint64_t cap);

/* Checks the checksum of extent i given its stored bytes. Returns 0 or -EIO
 * with a message naming the file, the extent and its offset; or, where the
 * file was modified since it was opened, tier_check_unchanged's message (the
 * store is not corrupt then: it was rewritten under the run). */
int tier_extent_check(const tier_store *s, uint32_t i, const void *stored);
/* Decodes extent i (stored bytes -> raw bytes, raw holds ext->raw bytes).
 * Returns 0 or -EINVAL for a corrupt lz4 extent. */
int tier_extent_decode(const tier_store *s, uint32_t i, const void *stored, void *raw);

/* Validates a store image held in memory (header and metadata only; len is
 * taken as the file size). Returns 0 or -errno with a message. Used by the
 * fuzz target and the malformed-header corpus test. */
int tier_parse_buffer(const void *buf, uint64_t len, const char *name);
/* The same, returning the store (named name; tier_close frees it) whose
 * extents lie in buf at their offsets: the fuzz target decodes them. */
int tier_open_buffer(tier_store **out, const void *buf, uint64_t len, const char *name);

/* ---- writer --------------------------------------------------------------- */

typedef struct tier_writer tier_writer;

typedef struct tier_write_opts {
    const uint32_t *dtypes; /* dtype of each tensor, config_tensor order */
    const tier_prune_map *prune; /* NULL: no pruning map */
    int lz4;                /* 1: lz4-compress extents when that saves >= 1/8 */
    const char *source;     /* the model's source record (tier_source), NULL: none */
} tier_write_opts;

/* The longest source record. */
#define TIER_SOURCE_MAX 1024
/* 0 when source can be a source record (1..TIER_SOURCE_MAX bytes of UTF-8
 * without control characters), else -EINVAL with a message naming what. */
int tier_source_check(const char *source, const char *what);

/* Starts writing a store for cfg. dtypes must be allowed for each tensor's
 * role (norms f32; embedding and lm_head f32/bf16; projections any dtype).
 * Returns 0 or -errno with a message. */
int tier_writer_open(tier_writer **out, const char *path, const tt_config *cfg, const tier_write_opts *opts);
/* Byte size tensor i will take (its tier_tensor.nbytes). */
uint64_t tier_writer_tensor_bytes(const tier_writer *w, uint32_t i);
/* Appends n bytes of tensor i's data; tensors must come in order and each
 * must receive exactly its nbytes (across any number of calls). Returns 0 or
 * -errno (disk full, IO error) with a message; after an error only
 * tier_writer_abort is allowed. */
int tier_writer_write(tier_writer *w, uint32_t i, const void *data, uint64_t n);
/* Writes the directory and header, fsyncs and renames into place; frees w.
 * Returns 0 or -errno (the partial file is removed). */
int tier_writer_finish(tier_writer *w);
/* Removes the partial file and frees w. NULL is fine. */
void tier_writer_abort(tier_writer *w);

/* Identity of a model's shapes and pruning map (map may be NULL): what an
 * adapter trained on it fits. Stores that differ only in dtypes, weights or
 * name share it. */
uint64_t tier_base_fingerprint(const tt_config *cfg, const tier_prune_map *map);
/* Identity of a store's weights: XXH3-64 over every extent's checksum and
 * decoded size (from the directory: nothing is read). Stores of one shape
 * with other values (another seed, quantization or pruning) differ, and so
 * do the same values stored with another codec (the checksums are of the
 * stored bytes); a copy or a move of the file does not. Never 0 (checkpoints:
 * "not recorded"). */
uint64_t tier_weights_fingerprint(const tier_store *s);

/* ---- sizes ---------------------------------------------------------------- */

/* Exact size of the store that tier_writer would produce for cfg with these
 * dtypes and no compression (the formula of docs/FORMAT.md). */
uint64_t tier_predict_size(const tt_config *cfg, const uint32_t *dtypes, int has_prune_map, const char *source);

#endif
