/* core/base/common.c — assertions, the per-thread error message, size parsing. */
#include "core/base/common.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

/* room for two whole paths and the sentence around them: a message cut short loses its end, which says what
 * went wrong and what to do */
static _Thread_local char g_err[2 * PATH_MAX + 1024];

static void partial_remove_all(void);
void tt_partial_remove_all(void) { partial_remove_all(); }

void tt_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "tiertrain: internal error: assertion `%s' failed at %s:%d\n", expr, file, line);
    fflush(stderr);
    partial_remove_all(); /* no half-written output left behind, even so */
    abort();
}

void tt_seterr(const char *fmt, ...) {
    /* format into a local buffer first: the arguments may include tt_lasterr() itself */
    char buf[sizeof g_err];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* names and values from files are part of messages: none may reach the terminal as an escape sequence */
    tt_escape(buf, g_err, sizeof g_err);
}

const char *tt_lasterr(void) { return g_err; }

int tt_parse_size(const char *s, uint64_t *out) {
    if (!s || !*s) return -EINVAL;
    const char *p = s;
    if (!isdigit((unsigned char)*p)) return -EINVAL;
    errno = 0;
    char *end;
    double v = strtod(p, &end);
    if (errno || end == p || v < 0) return -EINVAL;
    uint64_t mul = 1;
    switch (toupper((unsigned char)*end)) {
    case '\0': break;
    case 'K': mul = 1ull << 10; end++; break;
    case 'M': mul = 1ull << 20; end++; break;
    case 'G': mul = 1ull << 30; end++; break;
    case 'T': mul = 1ull << 40; end++; break;
    default: break;
    }
    if (mul > 1 && *end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end != '\0') return -EINVAL;
    double bytes = v * (double)mul;
    if (bytes > 1.8e19) return -EINVAL;
    if (bytes > 0 && bytes < 1) return -EINVAL; /* would read as 0, which options take as "all" or "auto" */
    *out = (uint64_t)bytes;
    return 0;
}

/* Length of the well-formed UTF-8 sequence at p (2..4), 0 if there is none or
 * it encodes a C1 control character (U+0080..U+009F). */
static size_t utf8_len(const unsigned char *p) {
    unsigned char c = p[0];
    size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f) || (c == 0xf0 && p[1] < 0x90) ||
        (c == 0xf4 && p[1] > 0x8f) || (c == 0xc2 && p[1] < 0xa0))
        return 0; /* overlong, surrogate, beyond U+10FFFF, C1 control */
    return n;
}

/* The escaped form of the character at p: its bytes in piece (up to 4, or
 * "\\xNN"), their count in *n; returns how many input bytes it takes. */
static size_t escape_one(const unsigned char *p, char piece[8], size_t *n) {
    size_t take = 1;
    if (*p >= 0x20 && *p < 0x7f) {
        piece[0] = (char)*p;
        *n = 1;
    } else if (*p >= 0x80 && (take = utf8_len(p)) > 0) {
        memcpy(piece, p, take);
        *n = take;
    } else {
        take = 1;
        *n = (size_t)snprintf(piece, 8, "\\x%02x", *p);
    }
    return take;
}

const char *tt_escape(const char *s, char *buf, size_t cap) {
    TT_ASSERT(cap >= 8);
    char piece[8];
    size_t total = 0, n;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        p += escape_one(p, piece, &n);
        total += n;
    }
    size_t room = total < cap ? total : cap - 4, o = 0; /* cut: leave room for "..." and the NUL */
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        p += escape_one(p, piece, &n);
        if (o + n > room) break;
        memcpy(buf + o, piece, n);
        o += n;
    }
    if (total >= cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

char *tt_fmt_bytes(uint64_t n, char *buf, size_t cap) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024.0 && u < 4) { v /= 1024.0; u++; }
    if (u == 0) snprintf(buf, cap, "%llu B", (unsigned long long)n);
    else snprintf(buf, cap, "%.2f %s", v, units[u]);
    return buf;
}

int tt_check_unchanged(int fd, const char *path, uint64_t size, struct timespec mtime, const char *advice) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        return TT_FAIL(-e, "cannot stat %s: %s", path, strerror(e));
    }
    if ((uint64_t)st.st_size != size || st.st_mtim.tv_sec != mtime.tv_sec || st.st_mtim.tv_nsec != mtime.tv_nsec)
        return TT_FAIL(-EIO, "%s was modified while this run was reading it%s", path, advice);
    return 0;
}

char *tt_fmt_bytes_up(uint64_t n, char *buf, size_t cap) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024.0 && u < 4) { v /= 1024.0; u++; }
    if (u == 0) return tt_fmt_bytes(n, buf, cap);
    uint64_t c = (uint64_t)ceil(v * 100.0), back = 0; /* hundredths of the unit */
    for (;; c++) { /* as the figure reads back: a step past where the double's rounding fell short */
        char s[48];
        snprintf(s, sizeof s, "%llu.%02llu%s", (unsigned long long)(c / 100), (unsigned long long)(c % 100), units[u]);
        if (tt_parse_size(s, &back) == 0 && back >= n) break;
    }
    snprintf(buf, cap, "%llu.%02llu %s", (unsigned long long)(c / 100), (unsigned long long)(c % 100), units[u]);
    return buf;
}

int tt_open_regular(const char *path, int flags, const char *kind, const char *hint, uint64_t *size) {
    /* O_NONBLOCK: a FIFO would block the open itself until a writer came; the type is checked first */
    int fd = open(path, flags | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) return TT_FAIL(-ENOENT, "%s does not exist; %s", path, hint);
        if (e == EACCES || e == EPERM)
            return TT_FAIL(-e, "cannot open %s: permission denied; check its permissions", path);
        return TT_FAIL(-e, "cannot open %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return TT_FAIL(-e, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        if (S_ISDIR(st.st_mode)) return TT_FAIL(-EISDIR, "%s is a directory, not a %s", path, kind);
        return TT_FAIL(-EINVAL, "%s is not a regular file (a device, pipe or socket); give the path of a %s", path,
                       kind);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *size = (uint64_t)st.st_size;
    return fd;
}

int tt_not_regular(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && !S_ISREG(st.st_mode);
}

int tt_rlimit_set(int resource, uint64_t *cur) {
    struct rlimit rl;
    if (getrlimit(resource, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 0;
    if (cur) *cur = (uint64_t)rl.rlim_cur;
    return 1;
}

const char *tt_thread_start_hint(int err) {
    if (err != EAGAIN) return "";
    if (tt_rlimit_set(RLIMIT_AS, NULL))
        return "; raise the address-space limit (ulimit -v: each thread needs room for its stack) or the process "
               "limit (ulimit -u)";
    return "; raise the process limit (ulimit -u)";
}

const char *tt_reserve_hint(void) {
    return tt_rlimit_set(RLIMIT_AS, NULL) ? "; the address-space limit (ulimit -v) may be what refuses it: raise it" : "";
}

double tt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* An allocation that cannot fail was refused: one sentence, this process's partial outputs removed, exit 1 (not
 * abort: no core dump of a process that merely ran out of memory; _exit: the libraries' exit handlers may need
 * memory themselves). */
__attribute__((noreturn)) static void out_of_memory(size_t bytes) {
    char n[32];
    fprintf(stderr, "tiertrain: out of memory allocating %s; free memory or raise the process's limit (ulimit -v) "
                    "and run again\n", tt_fmt_bytes(bytes, n, sizeof n));
    fflush(stderr);
    partial_remove_all();
    _exit(1);
}

static pthread_mutex_t g_fatal_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_fatal_ctx[2048];

void tt_fatal_context(const char *s) {
    pthread_mutex_lock(&g_fatal_mu);
    tt_escape(s ? s : "", g_fatal_ctx, sizeof g_fatal_ctx); /* it names paths: no escape sequence reaches the terminal */
    pthread_mutex_unlock(&g_fatal_mu);
}

void tt_device_failed(const char *what) {
    static atomic_int spoken;
    if (atomic_exchange(&spoken, 1)) /* another thread is ending the process: its sentence is the one */
        for (;;) pause();
    pthread_mutex_lock(&g_fatal_mu); /* held until the end: no context changes under the sentence */
    fprintf(stderr, "tiertrain: %s%s%s\n", what, g_fatal_ctx[0] ? "; " : "", g_fatal_ctx);
    fflush(stderr);
    partial_remove_all();
    _exit(1); /* as out_of_memory: the libraries' exit handlers would talk to the failed device */
}

void *tt_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) out_of_memory(n);
    return p;
}

void *tt_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) out_of_memory(size && n > SIZE_MAX / size ? SIZE_MAX : n * size);
    return p;
}

uint64_t tt_mem_available(void) {
    /* tests only (tests/test_stream_cli.sh): TT_TEST_MEM_AVAILABLE=BYTES stands in for MemAvailable */
    const char *t = getenv("TT_TEST_MEM_AVAILABLE");
    if (t && *t) return strtoull(t, NULL, 10);
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb << 10;
}

/* ---- partial files removed when a signal ends the process ---------------------------------------------------- */

#define PARTIAL_MAX 64
#define PARTIAL_ANY (-1)  /* g_partial_fd: remove whatever the name holds (tt_partial_note) */
#define PARTIAL_NONE (-2) /* g_partial_fd: nothing of this process's there now */
static char *g_partial[PARTIAL_MAX]; /* set once each, never freed: the handler may read any of them */
static char g_partial_dir[PARTIAL_MAX]; /* 1: g_partial[i] is a directory (tt_partial_note_dir) */
/* the fd tt_partial_open returned for g_partial[i], or PARTIAL_*: once this process has renamed its file away
 * (and closed the fd), the name may hold another writer's file, which the handler must leave alone */
static volatile sig_atomic_t g_partial_fd[PARTIAL_MAX];
static volatile sig_atomic_t g_n_partial;
static pthread_mutex_t g_partial_mu = PTHREAD_MUTEX_INITIALIZER;

/* Is the file that path names the one this process has open as fd, and no other process's to write? flock on
 * an fd whose open file holds the lock succeeds; one another writer holds fails. Async-signal-safe (plain
 * system calls). */
static int partial_ours(const char *path, int fd) {
    struct stat a, b;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 && errno != EINVAL && errno != ENOLCK && errno != EOPNOTSUPP)
        return 0; /* EBADF: closed, renamed away; EWOULDBLOCK: another writer's (no flock: as if locked) */
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* async-signal-safe: the files first, then the directories that held them, innermost (latest) first; rmdir
 * removes only an empty one */
static void partial_remove_all(void) {
    int saved = errno;
    for (sig_atomic_t i = 0; i < g_n_partial; i++) {
        int fd = (int)g_partial_fd[i];
        if (g_partial_dir[i] || fd == PARTIAL_NONE || (fd >= 0 && !partial_ours(g_partial[i], fd))) continue;
        unlink(g_partial[i]);
    }
    for (sig_atomic_t i = g_n_partial; i-- > 0;)
        if (g_partial_dir[i]) rmdir(g_partial[i]);
    errno = saved;
}

static void partial_on_signal(int sig) {
    partial_remove_all();
    raise(sig); /* SA_RESETHAND: the default action now ends the process */
}

/* fd: what g_partial_fd holds for path (a file's fd, or PARTIAL_*) */
static void partial_note(const char *path, int is_dir, int fd) {
    TT_ASSERT(path);
    pthread_mutex_lock(&g_partial_mu);
    int n = (int)g_n_partial, known = 0;
    for (int i = 0; i < n && !known; i++)
        if (strcmp(g_partial[i], path) == 0) {
            known = 1;
            g_partial_fd[i] = fd; /* written again (a checkpoint each N steps): its new fd */
        }
    /* at every note, not only the first: one made while the program had its own handler (train's, during its
     * loop) finds the default back once that is restored (the trained store written after the loop) */
    /* SIGPIPE: `synth ... | head` ends the writer at its next print once head is gone, as a Ctrl-C would */
    static const int sigs[] = {SIGTERM, SIGHUP, SIGINT, SIGPIPE};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old, sa;
        if (sigaction(sigs[i], NULL, &old) != 0 || old.sa_handler != SIG_DFL) continue; /* ours, or the program's */
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = partial_on_signal;
        sa.sa_flags = SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
    if (!known && n < PARTIAL_MAX) {
        char *copy = strdup(path);
        if (copy) {
            g_partial[n] = copy;
            g_partial_dir[n] = (char)is_dir;
            g_partial_fd[n] = fd;
            g_n_partial = n + 1; /* published after the string and its kind */
        }
    }
    pthread_mutex_unlock(&g_partial_mu);
}

void tt_partial_note(const char *tmp_path) { partial_note(tmp_path, 0, PARTIAL_ANY); }
void tt_partial_note_dir(const char *dir) { partial_note(dir, 1, PARTIAL_ANY); }
void tt_partial_note_held(const char *path, int fd) {
    TT_ASSERT(fd >= 0);
    partial_note(path, 0, fd);
}

/* ---- outputs that may not replace an existing file (tt_partial_new_only) ------------------------------------ */

/* An output by its folder's identity and its name, so that "d/x" and "./d//x" meet. 0, or -1 when the folder
 * cannot be found. */
static int output_id(const char *out, struct stat *dir_st, const char **base) {
    const char *slash = strrchr(out, '/');
    char dir[PATH_MAX];
    size_t dl = slash ? (size_t)(slash - out) : 0;
    if (dl >= sizeof dir) return -1;
    snprintf(dir, sizeof dir, "%.*s", (int)dl, out);
    *base = slash ? slash + 1 : out;
    return stat(slash ? (dl ? dir : "/") : ".", dir_st);
}

static struct {
    dev_t dev;
    ino_t ino;
    char *name;
} g_new_only[PARTIAL_MAX];
static int g_n_new_only;

void tt_partial_new_only(const char *out) {
    TT_ASSERT(out);
    struct stat d;
    const char *base;
    if (output_id(out, &d, &base) != 0) return;
    pthread_mutex_lock(&g_partial_mu);
    if (g_n_new_only < PARTIAL_MAX && (g_new_only[g_n_new_only].name = strdup(base))) {
        g_new_only[g_n_new_only].dev = d.st_dev;
        g_new_only[g_n_new_only].ino = d.st_ino;
        g_n_new_only++;
    }
    pthread_mutex_unlock(&g_partial_mu);
}

/* The entries that name out (by its folder's identity and its name) are dropped; with taken, returns 1 when there
 * was one and out exists now (a mark is spent by the write it was for: this process may write out again later). */
static int new_only_drop(const char *out, int taken) {
    struct stat d, st;
    const char *base;
    if (output_id(out, &d, &base) != 0) return 0;
    int hit = 0;
    pthread_mutex_lock(&g_partial_mu);
    for (int i = 0; i < g_n_new_only;) {
        if (g_new_only[i].dev == d.st_dev && g_new_only[i].ino == d.st_ino && strcmp(g_new_only[i].name, base) == 0) {
            hit = 1;
            free(g_new_only[i].name);
            g_new_only[i] = g_new_only[--g_n_new_only];
        } else i++;
    }
    pthread_mutex_unlock(&g_partial_mu);
    return taken && hit && lstat(out, &st) == 0;
}

void tt_partial_new_only_clear(const char *out) {
    TT_ASSERT(out);
    (void)new_only_drop(out, 0);
}

static int new_only_taken(const char *out) { return new_only_drop(out, 1); }

/* The body of tt_partial_open, run with SIGTERM, SIGHUP and SIGINT blocked in this thread: one that arrives
 * meanwhile is handled after it, when the file is noted as this process's or was never its. */
static int partial_open(const char *tmp_path, const char *out) {
    for (int tries = 0; tries < 16; tries++) {
        int fd = open(tmp_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644); /* no O_TRUNC: it may be another's */
        if (fd < 0) {
            int e = errno;
            struct stat ls, ds;
            const char *base;
            if (e == ENOENT && lstat(tmp_path, &ls) == 0 && S_ISLNK(ls.st_mode)) /* O_CREAT follows it to nowhere */
                return TT_FAIL(-e, "cannot create %s: %s is a symbolic link to a missing file; remove it", out,
                               tmp_path);
            if (e == ENOENT && (output_id(out, &ds, &base) != 0 || !S_ISDIR(ds.st_mode)))
                return TT_FAIL(-e, "cannot create %s: its folder does not exist", out);
            if (e == ENOENT) /* the folder exists but takes no new files (/proc, /sys) */
                return TT_FAIL(-e, "cannot create %s: its folder takes no new files; write it elsewhere", out);
            if (e == ENOSPC || e == EDQUOT) /* df may still show free bytes: the file system's inodes are used up */
                return TT_FAIL(-e, "cannot create %s: its file system has no room for another file (%s); free some, "
                               "or write it elsewhere", out, e == EDQUOT ? "the disk quota is used up"
                                                                          : "no space, or no free inodes: df -i");
            if (e == EROFS)
                return TT_FAIL(-e, "cannot create %s: its file system is read-only; write it elsewhere", out);
            return TT_FAIL(-e, "cannot create %s: %s", out, strerror(e));
        }
        partial_note(tmp_path, 0, fd); /* removed by a signal if it is ours (partial_ours) */
        int locked = flock(fd, LOCK_EX | LOCK_NB) == 0;
        if (!locked && errno == EWOULDBLOCK) { /* another writer's */
            partial_note(tmp_path, 0, PARTIAL_NONE);
            close(fd);
            break;
        }
        /* a file system without flock: written unlocked. Locked: the holder may have renamed its file into place
         * (or removed it) between our open and our lock, so the lock counts only on the file the name holds now */
        struct stat a, b;
        if (fstat(fd, &a) != 0 || (locked && (stat(tmp_path, &b) != 0 || a.st_dev != b.st_dev ||
                                              a.st_ino != b.st_ino))) {
            partial_note(tmp_path, 0, PARTIAL_NONE);
            close(fd);
            continue;
        }
        if (new_only_taken(out)) { /* written by another process since the command checked it was absent */
            partial_note(tmp_path, 0, PARTIAL_NONE);
            unlink(tmp_path); /* ours: locked, or on a file system without flock taken as ours, as below */
            close(fd);
            return TT_FAIL(-EEXIST, "%s was written by another process while this one worked; pass --force to "
                                    "replace it, or write elsewhere", out);
        }
        if (ftruncate(fd, 0) != 0 && errno != EINVAL) { /* EINVAL: not a regular file, as O_TRUNC ignored it */
            int e = errno;
            partial_note(tmp_path, 0, PARTIAL_NONE);
            unlink(tmp_path); /* ours: locked */
            close(fd);
            return TT_FAIL(-e, "cannot create %s: emptying %s failed: %s", out, tmp_path, strerror(e));
        }
        return fd;
    }
    return TT_FAIL(-EBUSY, "another process is writing %s (%s is locked); wait for it to finish or write elsewhere",
                   out, tmp_path);
}

char *tt_partial_path(const char *out) {
    TT_ASSERT(out);
    const char *slash = strrchr(out, '/'), *base = slash ? slash + 1 : out;
    size_t dl = (size_t)(base - out), bl = strlen(base), keep = bl;
    char tail[40] = ".partial";
    if (bl + strlen(tail) > NAME_MAX) { /* "~" and 16 hex digits of the whole name's FNV-1a keep it one name */
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t i = 0; i < bl; i++) h = (h ^ (uint8_t)base[i]) * 0x100000001b3ull;
        snprintf(tail, sizeof tail, "~%016llx.partial", (unsigned long long)h);
        keep = NAME_MAX - strlen(tail);
        while (keep > 0 && ((uint8_t)base[keep] & 0xc0) == 0x80) keep--; /* not inside a UTF-8 character */
    }
    size_t tl = dl + keep + strlen(tail) + 1;
    char *tmp = tt_xmalloc(tl);
    snprintf(tmp, tl, "%.*s%.*s%s", (int)dl, out, (int)keep, base, tail);
    return tmp;
}

int tt_partial_open(const char *out, char **tmp_out) {
    TT_ASSERT(out && tmp_out);
    char *tmp_path = tt_partial_path(out);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int fd = partial_open(tmp_path, out);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (fd < 0) { /* nothing of ours to remove */
        free(tmp_path);
        tmp_path = NULL;
    }
    *tmp_out = tmp_path;
    return fd;
}

/* ---- input files mapped into memory: a SIGBUS inside one names the file ------------------------------------- */

#define MAPPED_MAX 64
static struct {
    const char *volatile lo;      /* the mapping; NULL: a free slot */
    size_t len;
    char msg[512];                /* the sentence the handler writes, made when noted */
    size_t msg_len;
} g_mapped[MAPPED_MAX];
static pthread_mutex_t g_mapped_mu = PTHREAD_MUTEX_INITIALIZER;

static void mapped_on_sigbus(int sig, siginfo_t *si, void *ctx) {
    (void)ctx;
    const char *a = si->si_addr;
    for (int i = 0; i < MAPPED_MAX; i++) {
        const char *lo = g_mapped[i].lo;
        if (lo && a >= lo && (size_t)(a - lo) < g_mapped[i].len) {
            if (write(STDERR_FILENO, g_mapped[i].msg, g_mapped[i].msg_len) < 0) { /* nothing more to try */
            }
            partial_remove_all();
            _exit(1);
        }
    }
    (void)sig; /* not an input's: SA_RESETHAND, so the access faults again and the default action ends the process */
}

void tt_mapped_note(const void *addr, size_t len, const char *path) {
    TT_ASSERT(addr && path);
    pthread_mutex_lock(&g_mapped_mu);
    static int installed;
    if (!installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = mapped_on_sigbus;
        sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        installed = sigaction(SIGBUS, &sa, NULL) == 0;
    }
    for (int i = 0; i < MAPPED_MAX; i++)
        if (!g_mapped[i].lo) {
            char name[256];
            int n = snprintf(g_mapped[i].msg, sizeof g_mapped[i].msg,
                             "tiertrain: %s became shorter while it was being read (truncated, or rewritten in "
                             "place); restore it, or write new files under another name, and run again\n",
                             tt_escape(path, name, sizeof name));
            g_mapped[i].msg_len = n < (int)sizeof g_mapped[i].msg ? (size_t)n : sizeof g_mapped[i].msg - 1;
            g_mapped[i].len = len;
            g_mapped[i].lo = addr; /* published last */
            break;
        }
    pthread_mutex_unlock(&g_mapped_mu);
}

void tt_mapped_forget(const void *addr) {
    pthread_mutex_lock(&g_mapped_mu);
    for (int i = 0; i < MAPPED_MAX; i++)
        if (g_mapped[i].lo == addr) g_mapped[i].lo = NULL;
    pthread_mutex_unlock(&g_mapped_mu);
}
