/* io/safetensors.h — Hugging Face safetensors files: a validating reader and
 * an atomic writer.
 *
 * Layout (docs/FORMAT.md): u64 little-endian N, then N bytes of UTF-8 JSON
 * (an object: tensor name -> {"dtype", "shape", "data_offsets": [begin, end]}
 * plus an optional "__metadata__" object of string -> string; the writer pads
 * it with spaces to a multiple of 8), then the data region. Offsets are
 * relative to the first byte after the header; the tensors must tile the data
 * region exactly (no hole, no overlap, nothing after the last one), as the
 * reference implementation (huggingface/safetensors) requires.
 *
 * The reader validates the whole header before anything uses it: a file that
 * breaks any rule is refused with -EINVAL and one sentence naming the file and
 * the tensor or field. Data is read with pread on demand (st_read).
 *
 * The writer lays tensors out as the reference does — sorted by dtype in
 * descending alignment order, then by name (for a single dtype: by name) —
 * with the header entries in that same order, builds the file under
 * "<path>.partial", fsyncs it and renames it into place. The streaming writer
 * (st_writer) takes the tensors' names, dtypes and shapes first, writes the
 * header, then receives the data in the order given, so a model far larger
 * than memory can be written tensor by tensor; same atomicity.
 */
#ifndef TT_SAFETENSORS_H
#define TT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIM 8                        /* largest rank accepted */
#define ST_MAX_HEADER 100000000ull          /* header bytes (the reference's limit) */

/* Element types. The order is the reference's (increasing alignment); the
 * writer sorts by it. Sub-byte types (F4, F6_*) are refused by the reader. */
typedef enum st_dtype {
    ST_DTYPE_BOOL = 0,
    ST_DTYPE_U8,
    ST_DTYPE_I8,
    ST_DTYPE_F8_E5M2,
    ST_DTYPE_F8_E4M3,
    ST_DTYPE_F8_E8M0,
    ST_DTYPE_I16,
    ST_DTYPE_U16,
    ST_DTYPE_F16,
    ST_DTYPE_BF16,
    ST_DTYPE_I32,
    ST_DTYPE_U32,
    ST_DTYPE_F32,
    ST_DTYPE_C64,
    ST_DTYPE_F64,
    ST_DTYPE_I64,
    ST_DTYPE_U64,
    ST_DTYPE_COUNT
} st_dtype;

/* "F32", "BF16", ... (the header spelling); NULL for an out-of-range value. */
const char *st_dtype_name(int dtype);
/* Parses a header dtype string; returns the dtype or -1. */
int st_dtype_parse(const char *s);
/* Bytes per element (1, 2, 4 or 8). */
uint32_t st_dtype_size(int dtype);

/* ---- reader --------------------------------------------------------------- */

typedef struct st_file st_file;

typedef struct st_tensor {
    const char *name;          /* owned by the st_file */
    st_dtype dtype;
    uint32_t ndim;             /* 0..ST_MAX_DIM; 0 = a scalar (1 element) */
    uint64_t shape[ST_MAX_DIM];
    uint64_t offset;           /* absolute file offset of the first byte */
    uint64_t nbytes;           /* product(shape) * st_dtype_size(dtype); may be 0 */
} st_tensor;

/* Opens path and validates its header. On success *out owns an open file
 * descriptor and a copy of the header; free it with st_close. Returns 0, or
 * -errno with one sentence naming path (-ENOENT missing, -EISDIR not a
 * regular file, -EINVAL malformed header, -EIO read error). */
int st_open(const char *path, st_file **out);
void st_close(st_file *st); /* NULL is fine */

const char *st_path(const st_file *st);
uint32_t st_count(const st_file *st);
/* Tensor i (0 <= i < st_count) in data-offset order. */
const st_tensor *st_tensor_at(const st_file *st, uint32_t i);
/* Index of the tensor named name, or -1. */
int st_find(const st_file *st, const char *name);
/* Reads tensor i's nbytes raw bytes (little-endian, row-major) into dst.
 * Returns 0, or -EIO with a message when the file cannot be read in full
 * (e.g. truncated since st_open) or was modified since st_open (its size or
 * modification time moved: one fstat per read). */
int st_read(const st_file *st, uint32_t i, void *dst);
/* Value of "__metadata__"[key], or NULL (also when there is no metadata). */
const char *st_metadata(const st_file *st, const char *key);
uint32_t st_metadata_count(const st_file *st);
/* Key/value pair i of "__metadata__" (header order); pointers owned by st. */
void st_metadata_at(const st_file *st, uint32_t i, const char **key, const char **value);

/* Validates a whole file image held in memory (len is taken as the file
 * size); name is used in messages only. Returns 0 or -EINVAL with a message.
 * Used by the fuzz target (tests/fuzz_safetensors.c) and the tests. */
int st_parse_buffer(const void *buf, size_t len, const char *name);

/* ---- writer --------------------------------------------------------------- */

typedef struct st_entry {
    const char *name;          /* UTF-8, unique, not "__metadata__" */
    st_dtype dtype;
    uint32_t ndim;             /* 0..ST_MAX_DIM */
    const uint64_t *shape;     /* ndim values; may be NULL when ndim is 0 */
    const void *data;          /* product(shape) * dtype size bytes; NULL only when that is 0 */
} st_entry;

/* Writes n tensors and optional metadata to path. metadata is NULL or a
 * NULL-terminated array of alternating keys and values, e.g.
 * (const char *[]){"format", "pt", NULL}. The file is built under
 * "<path>.partial", fsynced and renamed; on any failure the partial file is
 * removed and an existing file at path is left untouched. Returns 0, or
 * -errno with one sentence naming path (-EINVAL duplicate or reserved names,
 * invalid UTF-8, -ENOSPC disk full, ...). */
int st_write(const char *path, uint32_t n, const st_entry *entries, const char *const *metadata);

/* The streaming writer: the tensors are laid out and listed in the header in
 * the order of entries (readers accept any order; st_write's sorted order is
 * what the reference writer produces). */
typedef struct st_writer st_writer;

/* Validates entries (their data fields are ignored), creates "<path>.partial"
 * and writes the header. Same rules and errors as st_write. On success *out
 * must be finished or aborted. Returns 0 or -errno with one sentence naming
 * path. */
int st_writer_open(st_writer **out, const char *path, uint32_t n, const st_entry *entries,
                   const char *const *metadata);
/* Appends len bytes of tensor data: the tensors' bytes back to back in entry
 * order, in pieces of any size (writing more than the header describes is a
 * programming error). Returns 0, or -errno (-ENOSPC disk full, -EFBIG, -EIO)
 * with a message naming path; after an error only st_writer_abort is allowed. */
int st_writer_write(st_writer *w, const void *data, uint64_t len);
/* Checks that every byte was received (assertion), fsyncs, renames
 * "<path>.partial" to path and frees w. Returns 0, or -errno with a message
 * (the partial file is removed, an older path is left untouched). */
int st_writer_finish(st_writer *w);
/* Removes the partial file and frees w. NULL is fine. */
void st_writer_abort(st_writer *w);

#endif
