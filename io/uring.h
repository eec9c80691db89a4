/* io/uring.h — the io_uring read engine. Reads byte ranges of one file, opened
 * O_DIRECT and registered as a fixed file, into buffers that were registered
 * with the ring (fixed buffers), with up to `qd` requests of at most `chunk`
 * bytes in flight. Every completion is checked against the requested length;
 * short reads are resubmitted for the remainder, errors come back as -errno
 * with the file and offset in tt_lasterr().
 *
 * Where io_uring is refused (kernel.io_uring_disabled, Docker's default
 * seccomp profile, gVisor), the same interface runs on worker threads that
 * each issue pread(2) on the same O_DIRECT descriptor: the "threads" engine.
 * Everything above holds for it too (request cutting, short-read resubmission,
 * completion order, fault injection, statistics); buffer registration is a
 * no-op. opts.engine, or the environment variable TT_IO_ENGINE=auto|uring|
 * threads, chooses: auto (the default) takes io_uring and falls back to the
 * threads with one line on stderr; uring refuses to fall back.
 *
 * Buffers come from iobuf_alloc (anonymous mmap, 4096-aligned), so that later
 * they can also be registered with CUDA (cudaHostRegister).
 *
 * O_DIRECT rules: offset, length and destination must be multiples of 4096
 * (UR_ALIGN); the store pads every extent and the file to 4096 bytes.
 *
 * A reader is used by one thread at a time (the IO thread).
 */
#ifndef TT_URING_H
#define TT_URING_H

#include <stddef.h>
#include <stdint.h>

#define UR_ALIGN 4096u

typedef struct uring_reader uring_reader;

typedef struct uring_opts {
    unsigned qd;     /* requests in flight (default 32) */
    uint64_t chunk;  /* bytes per request, multiple of 4096 (default 1 MiB) */
    int direct;      /* 1: O_DIRECT (default; the page cache where the filesystem refuses it); 0: buffered */
    int engine;      /* UR_ENGINE_*; 0 (auto) by default */
} uring_opts;

enum {
    UR_ENGINE_AUTO = 0, /* TT_IO_ENGINE if set, else io_uring with the threads as fallback */
    UR_ENGINE_URING,    /* io_uring only */
    UR_ENGINE_THREADS,  /* pread(2) worker threads */
};
/* Worker threads of the threads engine: min(qd, UR_THREADS_MAX). */
#define UR_THREADS_MAX 16u

/* Fills the defaults above. */
void uring_opts_default(uring_opts *o);

/* Anonymous-mmap buffer of len bytes (rounded up to 4096), zero-filled.
 * Returns NULL and sets tt_lasterr on failure. Free with iobuf_free. */
void *iobuf_alloc(size_t len);
void iobuf_free(void *p, size_t len);

/* Opens path for reading and sets up the ring (or the worker threads).
 * Returns 0, or -errno with a message: a missing file, a directory, an unknown
 * TT_IO_ENGINE, or io_uring not available on this system (ENOSYS / EPERM from
 * io_uring_setup) where the engine is uring, each get one clear sentence. */
int uring_reader_open(uring_reader **out, const char *path, const uring_opts *opts);
/* The same for the file open as fd (named path in messages): that file, even
 * where another was renamed over path since or it was removed (a store's data
 * is read from the file its metadata came from: tier_fd). fd stays the caller's. */
int uring_reader_reopen(uring_reader **out, int fd, const char *path, const uring_opts *opts);
void uring_reader_close(uring_reader *r);           /* NULL is fine */

/* Size of the opened file in bytes. */
uint64_t uring_reader_file_size(const uring_reader *r);

/* 1 when the file was opened O_DIRECT; 0 for buffered reads: asked for, or
 * where the file's filesystem refused O_DIRECT (open, given direct, then
 * takes the page cache and says so once per process on stderr). */
int uring_reader_direct(const uring_reader *r);

/* The engine that reads: "io_uring" or "threads" (with the worker count in
 * *workers when not NULL; 0 for io_uring). */
const char *uring_reader_engine(const uring_reader *r, unsigned *workers);

/* Registers [base, base+len) as fixed buffers (split into <= 1 GiB pieces).
 * Reads whose destination lies inside it use IORING_OP_READ_FIXED; others use
 * plain reads. Call at most once per reader. base must be 4096-aligned (as
 * iobuf_alloc's are); a len that is not a multiple of 4096 is rounded down.
 * A failure (typically ENOMEM from the locked-memory limit) returns -errno
 * with a message; the reader stays usable with plain reads. The threads
 * engine registers nothing and returns 0. */
int uring_reader_register(uring_reader *r, void *base, size_t len);
/* The same, for callers that can read without it: where the locked-memory
 * limit refuses the registration (ENOMEM: `ulimit -l`, which a user without
 * CAP_IPC_LOCK has at 8 MiB by default), says so once per process on stderr
 * and returns 0; the reads then go without fixed buffers (the same bytes, a
 * little more kernel work each). Other failures are returned. */
int uring_reader_register_or_plain(uring_reader *r, void *base, size_t len);

/* Asynchronous interface. submit queues a read of len bytes at file offset off
 * into dst (all 4096-aligned, and off+len within the file rounded up to 4096),
 * identified by tag; it is split into chunk-sized requests and as many are put
 * in flight as qd allows. wait blocks until some queued read has completed in
 * full (or failed) and returns 0 with *tag set, -errno for a failed read (*tag
 * set too), or -EAGAIN when nothing is queued. Bytes of dst past the end of
 * the file (the padding of its last 4096-byte block) are zero-filled. A failed
 * read's tag comes back only once none of its requests is in flight any more,
 * so its buffer may be reused at once. Reads complete in any order; wait
 * returns them in the order they completed. submit returns 0, or -EINVAL with
 * a message for a read past the end of the file (a truncated store); wrong
 * alignment is a programming error (assertion). */
int uring_reader_submit(uring_reader *r, void *dst, uint64_t off, uint64_t len, uint64_t tag);
int uring_reader_wait(uring_reader *r, uint64_t *tag);

/* Synchronous read: submit + wait for that read. Reads queued earlier keep
 * going; those that complete meanwhile are returned by later waits. */
int uring_reader_read(uring_reader *r, void *dst, uint64_t off, uint64_t len);

/* Fault injection for tests: the n-th request completed from now on (1 = the
 * next) fails with -err as if the kernel had returned it. 0 disables. */
void uring_reader_inject_fault(uring_reader *r, uint64_t nth, int err);
/* Short-read injection for tests: the n-th request completed from now on (1 =
 * the next) reports only half of the bytes it read (rounded down to 4096 under
 * O_DIRECT; a request too small to halve is left alone), and the bytes after
 * that are overwritten with garbage, so the data is only right if the engine
 * resubmits the remainder. 0 disables. */
void uring_reader_inject_short(uring_reader *r, uint64_t nth);
/* Delay injection for tests (threads engine; the io_uring engine ignores it):
 * each worker sleeps usec microseconds before each pread, so that reads are
 * still in flight when the caller closes or waits. 0 disables. */
void uring_reader_inject_delay(uring_reader *r, unsigned usec);

/* Totals since open: bytes read, requests completed, short reads retried;
 * and the most requests in flight at once (for the threads engine: preads
 * running at once). */
typedef struct uring_stats {
    uint64_t bytes, requests, short_reads;
    unsigned max_inflight;
} uring_stats;
void uring_reader_stats(const uring_reader *r, uring_stats *out);

#endif
