/* tests/test_common.c — tt_escape, the one way names and text from files
 * reach the terminal: every byte that could start an escape sequence (C0
 * controls, DEL, C1 controls in UTF-8 or raw) and malformed UTF-8 come out as
 * visible \xNN; printable ASCII and well-formed UTF-8 pass unchanged; a long
 * string is cut with "..." within the buffer; escaping is idempotent; every
 * error message (tt_seterr) is escaped. tt_parse_size, the size options'
 * parser: suffixes, fractions of a unit, and refusals (a sign, a fraction that
 * would read as 0, overflow, trailing junk); tt_fmt_bytes_up, the figure a
 * refusal asks for: read back, it is at least the need, and one hundredth of
 * its unit less is not. tt_even_chunk: chunk sizes.
 * tt_partial_open: a ".partial" file locked by another writer (another open
 * file description) is refused, untouched; once released it is reused and
 * emptied; a signal removes this process's partial file, but not one another
 * writer made under the same name after this one renamed its own away, and
 * still does when the program had its own handler at the first one. */
#include "core/base/common.h"
#include "tests/test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void expect(const char *in, const char *want, size_t cap) {
    char buf[256];
    memset(buf, 'Z', sizeof buf);
    const char *got = tt_escape(in, buf, cap);
    CHECK_MSG(got == buf && strcmp(got, want) == 0, "tt_escape(cap %zu): got '%s', want '%s'", cap, got, want);
    CHECK_MSG(strlen(buf) < cap && buf[cap] == 'Z', "tt_escape(cap %zu) wrote past its buffer", cap);
}

static void size_is(const char *in, int ok, uint64_t want) {
    uint64_t got = 12345;
    int rc = tt_parse_size(in, &got);
    if (ok) CHECK_MSG(rc == 0 && got == want, "tt_parse_size(%s): rc %d, %llu, want %llu", in, rc,
                      (unsigned long long)got, (unsigned long long)want);
    else CHECK_MSG(rc != 0 && got == 12345, "tt_parse_size(%s) accepted: %llu", in, (unsigned long long)got);
}

/* the size of path, -1 when it does not exist */
static long long size_of(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* tt_partial_open(out): its fd, having checked the name it gives (tmp, "<out>.partial"; NULL on failure) */
static int partial_open_at(const char *out, const char *tmp) {
    char *name = (char *)"unset";
    int fd = tt_partial_open(out, &name);
    CHECK_MSG(fd >= 0 ? name && strcmp(name, tmp) == 0 : name == NULL, "tt_partial_open(%s): fd %d, name %s", out, fd,
              name ? name : "NULL");
    if (fd >= 0) free(name);
    return fd;
}

/* In a child: tt_partial_open(out), optionally rename it to out and close it, optionally make a new file at tmp
 * (another writer's), then SIGTERM. Returns whether tmp exists afterwards. */
static int partial_after_signal(const char *tmp, const char *out, int renamed) {
    unlink(tmp);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = partial_open_at(out, tmp);
        if (fd < 0) _exit(3);
        if (renamed) {
            if (rename(tmp, out) != 0) _exit(4);
            int other = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644); /* another writer's */
            if (other < 0) _exit(5);
            close(other);
            close(fd);
        }
        raise(SIGTERM);
        _exit(6);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "the child did not end by SIGTERM (status %d)", st);
    return size_of(tmp) >= 0;
}

static void partial_lock(void) {
    char dir[] = "/tmp/tt_common_XXXXXX";
    TT_ASSERT(mkdtemp(dir));
    char out[64], tmp[80];
    snprintf(out, sizeof out, "%s/o.bin", dir);
    snprintf(tmp, sizeof tmp, "%s.partial", out);
    int fd = open(tmp, O_WRONLY | O_CREAT, 0644); /* a stale file (a kill -9): reused, emptied */
    CHECK(fd >= 0 && write(fd, "stale", 5) == 5);
    close(fd);
    int a = partial_open_at(out, tmp);
    CHECK_MSG(a >= 0 && size_of(tmp) == 0, "a stale partial file: fd %d, size %lld", a, size_of(tmp));
    CHECK(write(a, "abc", 3) == 3);
    int b = partial_open_at(out, tmp); /* another open file description: another writer */
    CHECK_MSG(b == -EBUSY && strstr(tt_lasterr(), "another process is writing") && strstr(tt_lasterr(), out),
              "a locked partial file: rc %d, '%s'", b, tt_lasterr());
    CHECK_MSG(size_of(tmp) == 3, "the holder's file was changed: %lld bytes", size_of(tmp));
    if (b >= 0) close(b);
    close(a);
    int c = partial_open_at(out, tmp); /* released: reused */
    CHECK_MSG(c >= 0 && size_of(tmp) == 0, "a released partial file: fd %d, size %lld", c, size_of(tmp));
    if (c >= 0) close(c);
    CHECK_MSG(!partial_after_signal(tmp, out, 0), "a signal left this process's partial file");
    CHECK_MSG(partial_after_signal(tmp, out, 1), "a signal removed a partial file this process no longer wrote");
    unlink(tmp);
    unlink(out);
    rmdir(dir);
}

/* tt_fmt_bytes_up(n) read back (the space dropped) is >= n, and one hundredth of its unit less is < n: the
 * smallest such figure (tt_fmt_bytes rounds to the nearest, below n about half the time above 1 GiB). */
static void fmt_up_is_least(uint64_t n) {
    char f[48], s[48], u[8];
    unsigned long long whole, cents;
    uint64_t back = 0, less = 0;
    tt_fmt_bytes_up(n, f, sizeof f);
    if (n < 1024) {
        CHECK_MSG(sscanf(f, "%llu B", &whole) == 1 && whole == n, "tt_fmt_bytes_up(%llu) = '%s'", (unsigned long long)n, f);
        return;
    }
    if (sscanf(f, "%llu.%2llu %7s", &whole, &cents, u) != 3) {
        CHECK_MSG(0, "tt_fmt_bytes_up(%llu) = '%s': not N.NN UNIT", (unsigned long long)n, f);
        return;
    }
    snprintf(s, sizeof s, "%llu.%02llu%s", whole, cents, u);
    CHECK_MSG(tt_parse_size(s, &back) == 0 && back >= n, "tt_fmt_bytes_up(%llu) = '%s' reads back as %llu",
              (unsigned long long)n, f, (unsigned long long)back);
    unsigned long long c = whole * 100 + cents - 1;
    snprintf(s, sizeof s, "%llu.%02llu%s", c / 100, c % 100, u);
    CHECK_MSG(c == 0 || (tt_parse_size(s, &less) == 0 && less < n), "tt_fmt_bytes_up(%llu) = '%s': '%s' (%llu) is "
              "enough too", (unsigned long long)n, f, s, (unsigned long long)less);
}

static void own_handler(int sig) { (void)sig; }

/* The program's own SIGTERM handler when a partial file is first noted (train's, during its loop), the default
 * restored after it: a partial file opened then is still removed by the signal, the first one too. */
static void partial_after_own_handler(void) {
    char dir[] = "/tmp/tt_common_XXXXXX";
    TT_ASSERT(mkdtemp(dir));
    char a[64], b[64], ta[80], tb[80];
    snprintf(a, sizeof a, "%s/a.bin", dir);
    snprintf(b, sizeof b, "%s/b.bin", dir);
    snprintf(ta, sizeof ta, "%s.partial", a);
    snprintf(tb, sizeof tb, "%s.partial", b);
    pid_t pid = fork();
    if (pid == 0) {
        struct sigaction own, dfl;
        memset(&own, 0, sizeof own);
        memset(&dfl, 0, sizeof dfl);
        own.sa_handler = own_handler;
        dfl.sa_handler = SIG_DFL;
        sigaction(SIGTERM, &own, NULL);
        int fa = partial_open_at(a, ta);
        sigaction(SIGTERM, &dfl, NULL);
        int fb = partial_open_at(b, tb);
        if (fa < 0 || fb < 0) _exit(3);
        raise(SIGTERM);
        _exit(6);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "the child did not end by SIGTERM (status %d)", st);
    CHECK_MSG(size_of(ta) < 0 && size_of(tb) < 0, "a signal after the program's own handler left partial files "
              "(%s: %lld bytes, %s: %lld bytes)", ta, size_of(ta), tb, size_of(tb));
    unlink(ta);
    unlink(tb);
    rmdir(dir);
}

/* An allocation tt_xmalloc cannot make (in a child): one sentence, exit 1 (no abort, no core dump), and the
 * partial file the process was writing removed. Not under ASan, whose allocator reports the size itself. */
static void out_of_memory_cleans(void) {
#if !defined(__SANITIZE_ADDRESS__)
    char dir[] = "/tmp/tt_common_XXXXXX";
    TT_ASSERT(mkdtemp(dir));
    char out[64], tmp[80], errf[80];
    snprintf(out, sizeof out, "%s/o.bin", dir);
    snprintf(tmp, sizeof tmp, "%s.partial", out);
    snprintf(errf, sizeof errf, "%s/err", dir);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(errf, "w", stderr)) _exit(3);
        int fd = partial_open_at(out, tmp);
        if (fd < 0) _exit(4);
        volatile size_t huge = SIZE_MAX - 4096; /* no allocator grants it */
        void *p = tt_xmalloc(huge);
        free(p);
        _exit(5);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    char msg[512] = "";
    FILE *f = fopen(errf, "r");
    if (f) {
        if (!fgets(msg, sizeof msg, f)) msg[0] = 0;
        fclose(f);
    }
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 1, "out of memory: the child's status is %d, not exit 1", st);
    CHECK_MSG(strstr(msg, "tiertrain: out of memory allocating") && strstr(msg, "ulimit -v"), "out of memory: '%s'",
              msg);
    CHECK_MSG(size_of(tmp) < 0, "out of memory left the partial file %s", tmp);
    unlink(tmp);
    unlink(errf);
    rmdir(dir);
#endif
}

int main(void) {
    out_of_memory_cleans();
    partial_after_own_handler();
    partial_lock();
    size_is("0", 1, 0);
    size_is("64", 1, 64);
    size_is("4K", 1, 4096);
    size_is("1.5GiB", 1, 3ull << 29);
    size_is("20G", 1, 20ull << 30);
    size_is("1.3G", 1, 1395864371);    /* a fraction of a unit: truncated to bytes */
    size_is("2.5", 1, 2);
    size_is("1e-45", 0, 0);            /* positive but below 1: would read as 0 ("all") */
    size_is("0.99999999999", 0, 0);
    size_is("-1", 0, 0);
    size_is("1e39", 0, 0);
    size_is("nan", 0, 0);
    size_is("4X", 0, 0);
    size_is("", 0, 0);
    uint64_t g = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 20000; i++) { /* sizes from bytes to TiB, and whole MiB as the refusals give them */
        g = g * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t n = (g >> 20) >> (g % 44);
        fmt_up_is_least(n);
        fmt_up_is_least(tt_align_up(n, 1 << 20));
    }
    char nearest[32], up[32];
    uint64_t need = (5ull << 30) + (66ull << 20); /* 5.064 GiB: "5.06 GiB" is 4.6 MiB short of it */
    CHECK(strcmp(tt_fmt_bytes(need, nearest, sizeof nearest), "5.06 GiB") == 0);
    CHECK(strcmp(tt_fmt_bytes_up(need, up, sizeof up), "5.07 GiB") == 0);
    CHECK(strcmp(tt_fmt_bytes_up(2394ull << 20, up, sizeof up), "2.34 GiB") == 0); /* 2.338 GiB */
    CHECK(strcmp(tt_fmt_bytes_up(7ull << 20, up, sizeof up), "7.00 MiB") == 0);
    expect("model.layers.0.q_proj", "model.layers.0.q_proj", 64);
    expect("", "", 8);
    expect("caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80", 64); /* é, 中, 😀 */
    expect("\x1b[2J\x1b]0;pwned\x07", "\\x1b[2J\\x1b]0;pwned\\x07", 64);                              /* ESC, BEL */
    expect("a\tb\nc\rd\x7f", "a\\x09b\\x0ac\\x0dd\\x7f", 64);
    expect("\xc2\x9b" "31m", "\\xc2\\x9b31m", 64);                          /* C1 CSI in UTF-8 */
    expect("\x9b" "31m", "\\x9b31m", 64);                                   /* raw C1 CSI */
    expect("\xc3", "\\xc3", 64);                                            /* cut sequence */
    expect("\xe0\x80\xaf", "\\xe0\\x80\\xaf", 64);                          /* overlong */
    expect("\xed\xa0\x80", "\\xed\\xa0\\x80", 64);                          /* surrogate */
    expect("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80", 64);                 /* beyond U+10FFFF */
    expect("C:\\dir\\x", "C:\\dir\\x", 64);                                 /* backslashes as they are */
    expect("abcdefghij", "abcd...", 8);
    expect("abcdefg", "abcdefg", 8);                                        /* exactly fits */
    expect("\x1b\x1b\x1b", "\\x1b...", 9);
    /* idempotent: escaping an escaped string changes nothing (messages embed messages) */
    char once[64], twice[64];
    tt_escape("\x1b[31m\xc3 caf\xc3\xa9\x7f", once, sizeof once);
    tt_escape(once, twice, sizeof twice);
    CHECK_MSG(strcmp(once, twice) == 0, "not idempotent: '%s' then '%s'", once, twice);
    /* every error message is escaped: a forged name cannot reach the terminal raw */
    tt_seterr("tensor '%s' is unknown", "x\x1b]0;t\x07");
    CHECK_MSG(strcmp(tt_lasterr(), "tensor 'x\\x1b]0;t\\x07' is unknown") == 0, "%s", tt_lasterr());
    /* tt_even_chunk: the fewest chunks, as even as they go, aligned where the cap allows */
    CHECK_EQ_INT((int)tt_even_chunk(8192, 1170, 64), 1024);  /* 8 x 1024, not 7 x 1170 + 2 */
    CHECK_EQ_INT((int)tt_even_chunk(4096, 3898, 64), 2048);  /* the pruned 70B's MLP at 16M values */
    CHECK_EQ_INT((int)tt_even_chunk(4096, 8192, 64), 4096);  /* one chunk */
    CHECK_EQ_INT((int)tt_even_chunk(1000, 300, 64), 256);    /* 4 chunks: 250 each, rounded up to 256 (under 300) */
    CHECK_EQ_INT((int)tt_even_chunk(1000, 255, 64), 250);    /* 4 x 250: 256 is over the cap */
    CHECK_EQ_INT((int)tt_even_chunk(7, 0, 64), 1);           /* a cap of 0 is 1 */
    for (uint64_t n = 1; n <= 300; n++)
        for (uint64_t cap = 1; cap <= n + 2; cap++) {
            uint64_t r = tt_even_chunk(n, cap, 8), k = tt_div_up(n, r);
            CHECK_MSG(r >= 1 && r <= (cap < n ? cap : n) && k == tt_div_up(n, cap < n ? cap : n),
                      "tt_even_chunk(%llu, %llu, 8) = %llu: %llu chunks", (unsigned long long)n,
                      (unsigned long long)cap, (unsigned long long)r, (unsigned long long)k);
        }
    TEST_END();
}
