/* tests/test_arena.c — bump arenas (sched/arena.h): a measuring arena and a
 * wrapping arena give the same offsets, used and peak for the same sequence,
 * and a wrap of exactly the measured peak is enough; every pointer is
 * 256-aligned, distinct and non-NULL (measuring: 4096 + offset); labels are
 * summed and counted in first-seen order; mark/release restores used and the
 * label table, keeps the peak, nests, and a label used per scope does not
 * grow with the number of scopes; the printed table has the labels, the
 * total and aligned columns; an allocation past the capacity, a release of a
 * mark that is not open and a too-long label abort (checked in forked
 * children, which must die of SIGABRT with a message naming the arena). */
#include "sched/arena.h"

#include "core/base/common.h"
#include "tests/test.h"

#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define NSEQ 32

/* The reference sequence; records each allocation's offset from the arena's
 * start (pointer - base, or pointer - 4096 when measuring). */
typedef struct seq_result {
    size_t off[NSEQ];
    int n;
    size_t used_end, peak_end, used_mid;
} seq_result;

static void run_sequence(tt_arena *a, seq_result *r) {
    uintptr_t base = arena_base(a) ? (uintptr_t)arena_base(a) : 4096u;
    static const size_t sizes[] = {1000, 0, 1, 255, 256, 257, 3 * 4096 + 7, 64};
    static const char *labels[] = {"layer slots", "scratch", "activations", "layer slots",
                                   "lora",        "scratch", "activations", "lora"};
    r->n = 0;
    for (int i = 0; i < 8; i++) {
        void *p = arena_alloc(a, sizes[i], labels[i]);
        r->off[r->n++] = (uintptr_t)p - base;
        /* fill what was asked for: ASan catches a region that is too small */
        if (arena_base(a) && sizes[i]) memset(p, 0xab, sizes[i]);
    }
    size_t m = arena_mark(a);
    for (int i = 0; i < 3; i++) {
        void *p = arena_alloc(a, 5000 + (size_t)i, "temp");
        r->off[r->n++] = (uintptr_t)p - base;
        if (arena_base(a)) memset(p, 0xcd, 5000 + (size_t)i);
    }
    r->used_mid = arena_used(a);
    arena_release(a, m);
    void *p = arena_alloc(a, 100, "lora");
    r->off[r->n++] = (uintptr_t)p - base;
    if (arena_base(a)) memset(p, 0xef, 100);
    r->used_end = arena_used(a);
    r->peak_end = arena_peak(a);
}

static void test_measure_vs_wrap(void) {
    tt_arena *m = arena_measure("measure");
    CHECK(arena_base(m) == NULL);
    CHECK(arena_capacity(m) == SIZE_MAX);
    CHECK(strcmp(arena_name(m), "measure") == 0);
    CHECK_EQ_INT(arena_used(m), 0);
    seq_result rm, rw;
    run_sequence(m, &rm);

    /* exactly the measured peak, in a buffer of exactly that size */
    size_t cap = arena_peak(m);
    void *buf = NULL;
    CHECK_EQ_INT(posix_memalign(&buf, ARENA_ALIGN, cap), 0);
    tt_arena *w = arena_wrap("device", buf, cap);
    CHECK(arena_base(w) == buf);
    CHECK_EQ_INT(arena_capacity(w), cap);
    run_sequence(w, &rw);

    CHECK_EQ_INT(rm.n, rw.n);
    for (int i = 0; i < rm.n; i++) {
        CHECK_MSG(rm.off[i] == rw.off[i], "allocation %d: measure offset %zu, wrap offset %zu", i, rm.off[i], rw.off[i]);
        CHECK_MSG(rm.off[i] % ARENA_ALIGN == 0, "allocation %d: offset %zu not aligned", i, rm.off[i]);
    }
    CHECK_EQ_INT(rm.used_end, rw.used_end);
    CHECK_EQ_INT(rm.peak_end, rw.peak_end);
    CHECK_EQ_INT(rm.used_mid, rw.used_mid);
    CHECK_EQ_INT(arena_peak(w), cap);

    /* expected offsets, worked out by hand: 1000 -> [0,1000); 0 (as 1) at 1024;
     * 1 at 1280; 255 at 1536; 256 at 1792; 257 at 2048; 12295 at 2560 (to 14855);
     * 64 at 15104 (to 15168) */
    static const size_t want[8] = {0, 1024, 1280, 1536, 1792, 2048, 2560, 15104};
    for (int i = 0; i < 8; i++) CHECK_EQ_INT(rm.off[i], want[i]);
    /* temps at 15360, 20480, 25600 (+5002 = 30602 peak); after the release
     * "lora" 100 at 15360 again */
    CHECK_EQ_INT(rm.off[8], 15360);
    CHECK_EQ_INT(rm.off[9], 20480);
    CHECK_EQ_INT(rm.off[10], 25600);
    CHECK_EQ_INT(rm.used_mid, 25600 + 5002);
    CHECK_EQ_INT(rm.off[11], 15360);
    CHECK_EQ_INT(rm.used_end, 15460);
    CHECK_EQ_INT(rm.peak_end, 30602);

    /* same label tables */
    CHECK_EQ_INT(arena_n_labels(m), arena_n_labels(w));
    for (int i = 0; i < arena_n_labels(m) && i < arena_n_labels(w); i++) {
        const char *lm, *lw;
        size_t bm, bw;
        int cm, cw;
        arena_label(m, i, &lm, &bm, &cm);
        arena_label(w, i, &lw, &bw, &cw);
        CHECK(strcmp(lm, lw) == 0);
        CHECK_EQ_INT(bm, bw);
        CHECK_EQ_INT(cm, cw);
    }
    arena_free(m);
    arena_free(w);
    CHECK(((unsigned char *)buf)[0] == 0xab); /* arena_free left the region alone */
    free(buf);
}

static void test_pointers(void) {
    tt_arena *m = arena_measure("m");
    void *prev = NULL;
    for (int i = 0; i < 50; i++) {
        size_t n = (size_t)(i * 37 % 300);
        void *p = arena_alloc(m, n, "x");
        CHECK(p != NULL);
        CHECK_EQ_INT((uintptr_t)p % ARENA_ALIGN, 0);
        CHECK((uintptr_t)p >= 4096);
        CHECK(p != prev && (uintptr_t)p > (uintptr_t)prev);
        prev = p;
    }
    /* the first allocation of a measuring arena is the fake base itself */
    tt_arena *m2 = arena_measure("m2");
    CHECK((uintptr_t)arena_alloc(m2, 10, "a") == 4096);
    CHECK((uintptr_t)arena_alloc(m2, 10, "a") == 4096 + 256);
    arena_free(m2);
    arena_free(m);

    /* a long name is truncated, not overflowed */
    char longname[200];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    tt_arena *ln = arena_measure(longname);
    CHECK(strlen(arena_name(ln)) < sizeof longname - 1 && strncmp(arena_name(ln), longname, 20) == 0);
    arena_free(ln);
}

static void test_labels(void) {
    tt_arena *a = arena_measure("host");
    arena_alloc(a, 4u << 20, "layer slots");
    arena_alloc(a, 1000, "staging ring");
    arena_alloc(a, 4u << 20, "layer slots");
    arena_alloc(a, 24, "staging ring");
    arena_alloc(a, 7, "spill");
    CHECK_EQ_INT(arena_n_labels(a), 3);
    const char *l;
    size_t b;
    int c;
    arena_label(a, 0, &l, &b, &c);
    CHECK(strcmp(l, "layer slots") == 0);
    CHECK_EQ_INT(b, 8u << 20);
    CHECK_EQ_INT(c, 2);
    arena_label(a, 1, &l, &b, &c);
    CHECK(strcmp(l, "staging ring") == 0);
    CHECK_EQ_INT(b, 1024);
    CHECK_EQ_INT(c, 2);
    arena_label(a, 2, &l, NULL, NULL); /* NULL outputs are fine */
    CHECK(strcmp(l, "spill") == 0);
    arena_label(a, 2, NULL, &b, &c);
    CHECK_EQ_INT(b, 7);
    CHECK_EQ_INT(c, 1);

    /* labels are compared by content and copied */
    char dyn[32];
    snprintf(dyn, sizeof dyn, "%s", "spill");
    arena_alloc(a, 3, dyn);
    snprintf(dyn, sizeof dyn, "%s", "clobbered");
    CHECK_EQ_INT(arena_n_labels(a), 3);
    arena_label(a, 2, &l, &b, &c);
    CHECK(strcmp(l, "spill") == 0);
    CHECK_EQ_INT(b, 10);
    CHECK_EQ_INT(c, 2);
    arena_free(a);
}

static void test_mark_release(void) {
    tt_arena *a = arena_measure("act");
    arena_alloc(a, 1000, "weights");
    size_t used0 = arena_used(a);
    CHECK_EQ_INT(used0, 1000);
    size_t m0 = arena_mark(a);
    CHECK_EQ_INT(m0, used0);
    arena_alloc(a, 10000, "fwd scratch");
    size_t m1 = arena_mark(a);
    arena_alloc(a, 20000, "inner");
    size_t peak = arena_peak(a);
    CHECK_EQ_INT(peak, 1024 + 10240 + 20000);
    arena_release(a, m1);
    CHECK_EQ_INT(arena_used(a), 1024 + 10000);
    CHECK_EQ_INT(arena_peak(a), peak);
    arena_release(a, m0);
    CHECK_EQ_INT(arena_used(a), used0);
    CHECK_EQ_INT(arena_peak(a), peak);

    /* releasing an outer mark closes the inner ones too */
    size_t o = arena_mark(a);
    arena_alloc(a, 5, "fwd scratch");
    (void)arena_mark(a);
    arena_alloc(a, 5, "inner");
    arena_release(a, o);
    CHECK_EQ_INT(arena_used(a), used0);

    /* a scope taken per layer: the label's count and bytes do not grow */
    for (int layer = 0; layer < 200; layer++) {
        size_t m = arena_mark(a);
        arena_alloc(a, 300, "layer scratch");
        arena_alloc(a, 300, "layer scratch");
        arena_release(a, m);
    }
    int found = 0;
    for (int i = 0; i < arena_n_labels(a); i++) {
        const char *l;
        size_t b;
        int c;
        arena_label(a, i, &l, &b, &c);
        if (strcmp(l, "layer scratch") == 0) {
            found = 1;
            CHECK_EQ_INT(c, 2);
            CHECK_EQ_INT(b, 600);
        }
        if (strcmp(l, "fwd scratch") == 0) { /* high-water: the 10000 scope */
            CHECK_EQ_INT(c, 1);
            CHECK_EQ_INT(b, 10000);
        }
        if (strcmp(l, "weights") == 0) {
            CHECK_EQ_INT(c, 1);
            CHECK_EQ_INT(b, 1000);
        }
    }
    CHECK(found);
    CHECK_EQ_INT(arena_peak(a), peak);

    /* a later, larger scope raises the label's high-water mark to its size */
    size_t ms = arena_mark(a);
    arena_alloc(a, 100, "grows");
    arena_release(a, ms);
    ms = arena_mark(a);
    arena_alloc(a, 150, "grows");
    arena_release(a, ms);
    ms = arena_mark(a);
    arena_alloc(a, 60, "grows");
    arena_alloc(a, 60, "grows");
    arena_release(a, ms);
    for (int i = 0; i < arena_n_labels(a); i++) {
        const char *l;
        size_t b;
        int c;
        arena_label(a, i, &l, &b, &c);
        if (strcmp(l, "grows") == 0) {
            CHECK_EQ_INT(b, 150);
            CHECK_EQ_INT(c, 1);
        }
    }

    /* after a release the space is reused */
    size_t m = arena_mark(a);
    void *p1 = arena_alloc(a, 64, "x");
    arena_release(a, m);
    void *p2 = arena_alloc(a, 64, "x");
    CHECK(p1 == p2);

    /* release(0) empties the arena and closes open marks; the peak stays */
    (void)arena_mark(a);
    arena_alloc(a, 10, "x");
    arena_release(a, 0);
    CHECK_EQ_INT(arena_used(a), 0);
    CHECK_EQ_INT(arena_peak(a), peak);
    CHECK((uintptr_t)arena_alloc(a, 1, "x") == 4096);
    for (int i = 0; i < ARENA_MAX_MARKS; i++) (void)arena_mark(a); /* all marks free again */
    arena_free(a);
}

static void test_print_table(void) {
    tt_arena *a = arena_measure("device");
    arena_alloc(a, (size_t)(4.1 * 1048576), "layer slots");
    arena_alloc(a, (size_t)(4.1 * 1048576), "layer slots");
    arena_alloc(a, 3u << 20, "dequant scratch");
    arena_alloc(a, 512, "lora params + optimizer");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    TT_ASSERT(f);
    arena_print_table(a, f);
    fclose(f);
    fputs(buf, stdout);
    CHECK(strstr(buf, "device") != NULL);
    CHECK(strstr(buf, "layer slots") != NULL);
    CHECK(strstr(buf, "dequant scratch") != NULL);
    CHECK(strstr(buf, "lora params + optimizer") != NULL);
    CHECK(strstr(buf, "8.20 MiB") != NULL);  /* 2 x 4.1 MiB */
    CHECK(strstr(buf, "3.00 MiB") != NULL);
    CHECK(strstr(buf, "512 B") != NULL);
    CHECK(strstr(buf, "total") != NULL);
    char want_total[32];
    CHECK(strstr(buf, tt_fmt_bytes((size_t)(4.1 * 1048576) * 2 + (3u << 20) + 512, want_total, sizeof want_total)));
    /* aligned columns: the header, each label and the total line have the
     * same length (bytes right-aligned in the last column) */
    int nlines = 0;
    size_t width = 0;
    for (char *s = buf, *e; (e = strchr(s, '\n')) && nlines < 5; s = e + 1, nlines++) {
        size_t w = (size_t)(e - s);
        if (nlines == 0) width = w;
        CHECK_MSG(w == width, "line %d is %zu characters, the header %zu", nlines, w, width);
    }
    CHECK_EQ_INT(nlines, 5);
    /* the line for "layer slots" says count 2; "total" says 4 */
    char *ls = strstr(buf, "layer slots");
    CHECK(ls && strstr(ls, " 2 ") && strstr(ls, " 2 ") < strchr(ls, '\n'));
    char *tl = strstr(buf, "total");
    CHECK(tl && strstr(tl, " 4 ") && strstr(tl, " 4 ") < strchr(tl, '\n'));
    CHECK(strstr(buf, "unlimited") != NULL);
    free(buf);
    arena_free(a);

    /* a wrapped arena prints its capacity */
    static _Alignas(256) unsigned char region[4096];
    tt_arena *w = arena_wrap("host", region, sizeof region);
    arena_alloc(w, 100, "staging");
    f = open_memstream(&buf, &len);
    arena_print_table(w, f);
    fclose(f);
    CHECK(strstr(buf, "capacity 4.00 KiB") != NULL);
    CHECK(strstr(buf, "staging") != NULL);
    free(buf);
    arena_free(w);
}

/* Runs fn in a forked child with stderr to a pipe; checks that the child died
 * of SIGABRT and that its stderr holds every needle (NULL-terminated). */
static void expect_abort(const char *what, void (*fn)(void), const char *const *needles) {
    int pfd[2];
    TT_ASSERT(pipe(pfd) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    TT_ASSERT(pid >= 0);
    if (pid == 0) {
        struct rlimit nocore = {0, 0};
        setrlimit(RLIMIT_CORE, &nocore);
        close(pfd[0]);
        dup2(pfd[1], 2);
        fn();
        _exit(0); /* fn was supposed to abort */
    }
    close(pfd[1]);
    char msg[4096];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof msg - 1 && (r = read(pfd[0], msg + n, sizeof msg - 1 - n)) > 0) n += (size_t)r;
    msg[n] = 0;
    close(pfd[0]);
    int st = 0;
    TT_ASSERT(waitpid(pid, &st, 0) == pid);
    CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "%s: child status %#x, want death by SIGABRT", what, st);
    for (int i = 0; needles[i]; i++)
        CHECK_MSG(strstr(msg, needles[i]) != NULL, "%s: message lacks \"%s\": %s", what, needles[i], msg);
    fprintf(stderr, "(expected) %s: %s", what, msg);
}

static void over_capacity(void) {
    static _Alignas(256) unsigned char region[1024];
    tt_arena *a = arena_wrap("pinned host", region, sizeof region);
    arena_alloc(a, 600, "staging ring");
    arena_alloc(a, 300, "layer slots"); /* 424 left, but from the next aligned offset (768) only 256 */
}

static void exact_fit_then_one_more(void) {
    static _Alignas(256) unsigned char region[1024];
    tt_arena *a = arena_wrap("dev", region, sizeof region);
    arena_alloc(a, 1024, "all"); /* exactly full: fine */
    arena_alloc(a, 1, "one more");
}

static void release_not_open(void) {
    tt_arena *a = arena_measure("m");
    arena_alloc(a, 10, "x");
    arena_release(a, 5);
}

static void too_many_labels(void) {
    tt_arena *a = arena_measure("labels");
    for (int i = 0; i <= ARENA_MAX_LABELS; i++) {
        char l[16];
        snprintf(l, sizeof l, "l%d", i);
        arena_alloc(a, 1, l);
    }
}

static void test_aborts(void) {
    const char *cap[] = {"pinned host", "layer slots", "300 bytes", "424 bytes", "256 from the next", NULL};
    expect_abort("over capacity", over_capacity, cap);
    const char *one[] = {"\"dev\"", "one more", "0 bytes", NULL};
    expect_abort("exact fit then one more", exact_fit_then_one_more, one);
    const char *rel[] = {"not open", NULL};
    expect_abort("release of a mark not open", release_not_open, rel);
    const char *lab[] = {"labels", "64 labels", NULL};
    expect_abort("too many labels", too_many_labels, lab);
}

int main(void) {
    test_measure_vs_wrap();
    test_pointers();
    test_labels();
    test_mark_release();
    test_print_table();
    test_aborts();
    TEST_END();
}
