/* core/base/common.h — things every folder of tiertrain uses: always-on assertions,
 * the "last error" message that travels with a -errno return, size parsing and
 * small helpers for little-endian fixed-width values.
 *
 * Two kinds of errors (STYLE.md 6):
 *   - programming errors: TT_ASSERT, on in every build, prints file:line and aborts;
 *   - failures the user can cause: the function returns -errno (e.g. -EINVAL for a
 *     corrupt file) and first calls tt_seterr() with one sentence naming the file or
 *     option and what to do. The command prints tt_lasterr() and exits non-zero.
 */
#ifndef TT_COMMON_H
#define TT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define TT_ASSERT(cond)                                                        \
    do {                                                                       \
        if (!(cond)) tt_assert_fail(#cond, __FILE__, __LINE__);                \
    } while (0)

__attribute__((noreturn)) void tt_assert_fail(const char *expr, const char *file, int line);

/* Sets this thread's last error message (printf-style). Returns nothing; the
 * caller returns its -errno code right after. */
void tt_seterr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* This thread's last error message ("" if none was set). */
const char *tt_lasterr(void);
/* Convenience: tt_seterr(...) and return rc (rc is a negative errno). */
#define TT_FAIL(rc, ...) (tt_seterr(__VA_ARGS__), (rc))

/* Parses a byte size: "4096", "512K", "512M", "20G", "1T" (binary units, an
 * optional trailing 'B' or "iB"). Returns 0 and sets *out, or -EINVAL. */
int tt_parse_size(const char *s, uint64_t *out);
/* 0 while the file open as fd still has the size and modification time it had
 * when a run opened it (one fstat); else -EIO with "PATH was modified while
 * this run was reading it" followed by advice ("; put the original back ..."),
 * or fstat's -errno. Inputs read in place over a run (token files, stores,
 * safetensors) check it, so a file rewritten under the run is one line, not
 * other data taken silently. */
int tt_check_unchanged(int fd, const char *path, uint64_t size, struct timespec mtime, const char *advice);
/* Formats a byte count as "1.23 GiB" into buf (at least 32 bytes); returns buf. */
char *tt_fmt_bytes(uint64_t n, char *buf, size_t cap);
/* The same, rounded up: the smallest figure of that form that reads back
 * (tt_parse_size, with the space dropped) as at least n bytes — for a budget
 * a message asks for ("needs --hbm 2.24 GiB" must be enough as --hbm 2.24G). */
char *tt_fmt_bytes_up(uint64_t n, char *buf, size_t cap);
/* A string from a file (a name, a path, a token), made safe for a terminal
 * or a log: printable ASCII and well-formed UTF-8 as they are; control
 * characters (C0, DEL, C1) and malformed UTF-8 as \xNN, so no escape
 * sequence reaches the terminal. Idempotent (its output passes unchanged), so
 * messages that embed messages stay readable; every tt_seterr message goes
 * through it. Cut with "..." to fit cap (at least 8); returns buf. */
const char *tt_escape(const char *s, char *buf, size_t cap);

/* Opens path (open(2) flags, O_CLOEXEC added) and checks it is a regular
 * file. Returns the fd and sets *size, or -errno with one sentence:
 * "PATH does not exist; HINT", "PATH is a directory, not a KIND", ... */
int tt_open_regular(const char *path, int flags, const char *kind, const char *hint, uint64_t *size);
/* 1 when path exists and is not a regular file (a FIFO or a device would
 * block or never end a reader that opens it): check before a library opens
 * it by name. */
int tt_not_regular(const char *path);

/* Monotonic wall clock in seconds. */
double tt_now(void);

/* 1 when the soft limit `resource` (RLIMIT_AS: ulimit -v, RLIMIT_FSIZE: ulimit -f) is set, its value in *cur
 * (may be NULL); 0 when it is unlimited or cannot be read. */
int tt_rlimit_set(int resource, uint64_t *cur);

/* The advice for a thread that could not start (err: pthread_create's), "; ..." to end a sentence with:
 * EAGAIN is the process limit (ulimit -u), or, under an address-space limit, no room for the thread's stack
 * (ulimit -v); "" for any other error. */
const char *tt_thread_start_hint(int err);
/* The advice for memory that could not be reserved, "; ..." to end a sentence with: under an address-space
 * limit, that limit (ulimit -v); "" without one. */
const char *tt_reserve_hint(void);

/* A file being written under its temporary name ("<output>.partial") before
 * it is renamed into place: noted here, it is removed if SIGTERM, SIGHUP,
 * SIGINT or SIGPIPE (a reader of stdout gone) ends the process (a handler installed at each note, for each of
 * these signals whose disposition is the default then; it removes every
 * noted path that still exists, then lets the signal end the process). A
 * renamed or removed file needs no un-noting: its temporary name is gone
 * (tt_partial_open's files are removed only while still this process's: the
 * name may hold another writer's file by then). Up to 64 distinct paths a
 * process. */
void tt_partial_note(const char *tmp_path);
/* The temporary name of the output out, malloc'ed: "<out>.partial", or, where
 * that would be longer than a file name may be (NAME_MAX), out's name cut and
 * followed by "~" and 16 hex digits of a hash of the whole name, then
 * ".partial" (the same for the same out, so writers of it still meet). */
char *tt_partial_path(const char *out);
/* Opens tt_partial_path(out), the temporary name of the output out, for writing,
 * that name malloc'ed into *tmp_out (NULL on failure): created if missing (mode 0644), locked against every other writer
 * (flock LOCK_EX, not waited for), only then emptied and noted as above. A
 * stale file (left by a kill -9) holds no lock and is reused. Returns the fd,
 * or -errno with one sentence naming out: -EBUSY when another process holds
 * the lock ("another process is writing OUT ..."), its file then untouched
 * and not noted. The lock lasts while the fd (or a dup of it) is open: rename
 * tmp_path into place BEFORE closing it, and on failure unlink it before
 * closing, so no other writer's file is ever renamed or removed. A signal that
 * ends the process removes tmp_path only while it is still this fd's file
 * (SIGTERM, SIGHUP and SIGINT wait while it is opened and noted). On a file
 * system without flock the file is written unlocked. */
int tt_partial_open(const char *out, char **tmp_out);
/* Marks out as an output found absent before the work began and not to be replaced (no --force): a later
 * tt_partial_open(out) that finds out there once it holds the lock — another process wrote it meanwhile, the
 * lock keeping any other from renaming into it from then on — removes its partial file and returns -EEXIST
 * with a sentence naming out. Up to 64 outputs a process; out's folder must exist. The mark is spent by that
 * tt_partial_open (a later write of out by this process is not refused for it). */
void tt_partial_new_only(const char *out);
/* Drops tt_partial_new_only's mark of out (a forced write that follows an unforced one that failed early). */
void tt_partial_new_only_clear(const char *out);
/* A directory a writer created for its output, noted the same way: a signal
 * that ends the process removes it (rmdir) after the noted files, if it is
 * empty then; one that holds anything stays. Note it only when this process
 * made it. */
void tt_partial_note_dir(const char *dir);
/* A file this process holds open as fd (a lock file), noted the same way: a signal that ends the process
 * removes path only while it is still fd's file (once fd is closed, or the name holds another file, never). */
void tt_partial_note_held(const char *path, int fd);
/* Removes what is noted above now, as the handler does; async-signal-safe: for a program's own handler that
 * ends the process (train's second Ctrl-C). */
void tt_partial_remove_all(void);
/* A device failed under the process in a way it cannot go on from (a CUDA error: a GPU fault, another process's
 * memory, a driver that stopped): prints "tiertrain: WHAT" and, where one is set, "; " and the context below,
 * removes the partial outputs noted above and exits 1 (no core dump: the process did nothing wrong). Any thread;
 * the first caller speaks, a later one waits for the end. */
__attribute__((noreturn)) void tt_device_failed(const char *what);
/* What stands of the work should the process end in tt_device_failed, as a clause ("the last checkpoint in DIR
 * (step 8) is intact: continue with --resume DIR"); copied (up to 2 KiB); NULL or "" clears it. A training loop
 * sets it from its start on and leaves it (what it says stands while the final outputs are written). */
void tt_fatal_context(const char *s);
/* An input file mapped read-only at addr (len bytes): if the file shrinks
 * while mapped, reading past its new end raises SIGBUS; the handler installed
 * on the first note then prints one line naming path, removes the partial
 * files noted above and exits 1 (a SIGBUS elsewhere ends the process as
 * before). Forget the mapping before munmap. Up to 64 mappings at a time
 * (more go unnamed). */
void tt_mapped_note(const void *addr, size_t len, const char *path);
void tt_mapped_forget(const void *addr);
/* The memory the machine can give now without swapping (MemAvailable of
 * /proc/meminfo), in bytes; 0 when it cannot be read. */
uint64_t tt_mem_available(void);

static inline uint64_t tt_align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }
static inline uint64_t tt_div_up(uint64_t x, uint64_t d) { return (x + d - 1) / d; }
/* Rows per chunk when n rows go through in chunks of at most cap: as even as
 * the fewest chunks allow, rounded up to a multiple of align where that still
 * fits the cap (8192 rows at a cap of 1170 and align 64: 8 x 1024, not
 * 7 x 1170 and 2). n when cap >= n. */
static inline uint64_t tt_even_chunk(uint64_t n, uint64_t cap, uint64_t align) {
    if (cap < 1) cap = 1;
    if (cap >= n) return n;
    uint64_t rows = tt_div_up(n, tt_div_up(n, cap)), up = tt_align_up(rows, align ? align : 1);
    return up <= cap ? up : rows;
}

/* malloc/calloc that abort on out-of-memory (for small bookkeeping
 * allocations only; large buffers go through arenas or return -ENOMEM). */
void *tt_xmalloc(size_t n);
void *tt_xcalloc(size_t n, size_t size);

#endif
