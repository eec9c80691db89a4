/* tests/test_trace.c — the event trace (sched/trace.h): events recorded from
 * two threads at once all arrive; per-step statistics on constructed
 * timelines with explicit times (union of overlapping intervals per side,
 * events before the step begin left out, events cut at `now`, a zero-length
 * step, random timelines against a brute-force union on an integer grid); a
 * full trace counts dropped events (also under two threads) and says so when
 * written; the Chrome trace parses back with jansson (traceEvents array,
 * thread_name metadata for every track, every X event with name / cat / ph /
 * ts / dur / pid / tid, times and layers as recorded, IO and compute on
 * different tids, escaped names intact, no .partial left); an unwritable path
 * gives -errno with the path in the message. Device-timed spans
 * (cpu-async's queues, seeded delays): a span's event lasts while its queue
 * ran the work (milliseconds of delays), not while the host issued it, and
 * starts after the span was begun; a span with every slot in flight is
 * dropped; the plain CPU backend has no timers and spans are host
 * intervals. */
#include "sched/trace.h"

#include "core/base/common.h"
#include "kernels/backend.h"
#include "tests/test.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[512];

static void make_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/tt-trace.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); exit(1); }
}

/* ---- threads ------------------------------------------------------------- */

#define PER_THREAD 50000

static pthread_barrier_t g_start; /* both recorders start together */

typedef struct rec_arg {
    tt_trace *t;
    int track;
    const char *name;
} rec_arg;

static void *recorder(void *p) {
    rec_arg *a = p;
    pthread_barrier_wait(&g_start);
    for (int i = 0; i < PER_THREAD; i++) {
        double t0 = tt_now();
        trace_add(a->t, a->track, a->name, i, t0, t0 + 1e-6);
    }
    return NULL;
}

static void record_two_threads(tt_trace *t) {
    pthread_t th[2];
    rec_arg args[2] = {{t, TRACE_IO, "read"}, {t, TRACE_COMPUTE, "fwd"}};
    TT_ASSERT(pthread_barrier_init(&g_start, NULL, 2) == 0);
    for (int i = 0; i < 2; i++) TT_ASSERT(pthread_create(&th[i], NULL, recorder, &args[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&g_start);
}

/* Loads path with jansson; NULL (and a failed check) when it is not JSON. */
static json_t *load_json(const char *path) {
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    CHECK_MSG(j != NULL, "%s is not valid JSON: line %d: %s", path, err.line, err.text);
    return j;
}

static void test_threads(void) {
    tt_trace *t = trace_create(2 * PER_THREAD);
    record_two_threads(t);
    CHECK_EQ_INT(trace_n_events(t), 2 * PER_THREAD);
    CHECK_EQ_INT(trace_n_dropped(t), 0);

    /* every event arrived intact: per track, layers 0..PER_THREAD-1 once each */
    char path[600];
    snprintf(path, sizeof path, "%s/threads.json", g_dir);
    CHECK_EQ_INT(trace_write_chrome(t, path), 0);
    json_t *j = load_json(path);
    if (j) {
        json_t *evs = json_object_get(j, "traceEvents");
        static unsigned char seen[2][PER_THREAD];
        memset(seen, 0, sizeof seen);
        int bad = 0;
        size_t i;
        json_t *e;
        json_array_foreach(evs, i, e) {
            if (strcmp(json_string_value(json_object_get(e, "ph")), "X") != 0) continue;
            int tid = (int)json_integer_value(json_object_get(e, "tid"));
            json_int_t layer = json_integer_value(json_object_get(json_object_get(e, "args"), "layer"));
            const char *name = json_string_value(json_object_get(e, "name"));
            int k = tid == TRACE_IO + 1 ? 0 : tid == TRACE_COMPUTE + 1 ? 1 : -1;
            if (k < 0 || layer < 0 || layer >= PER_THREAD || seen[k][layer] ||
                strcmp(name, k == 0 ? "read" : "fwd") != 0) {
                bad++;
                continue;
            }
            seen[k][layer] = 1;
        }
        CHECK_EQ_INT(bad, 0);
        int missing = 0;
        for (int k = 0; k < 2; k++)
            for (int l = 0; l < PER_THREAD; l++) missing += !seen[k][l];
        CHECK_EQ_INT(missing, 0);
        json_decref(j);
    }
    trace_free(t);

    /* two threads filling a small trace: recorded + dropped = all */
    t = trace_create(1000);
    record_two_threads(t);
    CHECK_EQ_INT(trace_n_events(t), 1000);
    CHECK_EQ_INT(trace_n_dropped(t), 2 * PER_THREAD - 1000);
    trace_free(t);
}

/* ---- statistics -------------------------------------------------------- */

static void test_stats_known(void) {
    tt_trace *t = trace_create(64);
    tt_trace_stats s;

    /* the brief's example: io [0,1],[2,3]; compute [0.5,2.5]; a 4 s step */
    trace_add(t, TRACE_IO, "read", 1, 50.0, 51.0); /* before the step: left out */
    trace_step_begin(t, 100.0);
    trace_add(t, TRACE_COMPUTE, "fwd", 0, 100.5, 102.5);
    trace_add(t, TRACE_IO, "read", 2, 102.0, 103.0); /* recorded out of order */
    trace_add(t, TRACE_IO, "read", 1, 100.0, 101.0);
    trace_add(t, TRACE_IO, "read", 0, 99.5, 100.5);  /* started before the begin: previous step's */
    trace_step_stats(t, 104.0, &s);
    CHECK_NEAR(s.step_time, 4.0, 1e-12);
    CHECK_NEAR(s.io_busy, 2.0, 1e-12);
    CHECK_NEAR(s.compute_busy, 2.0, 1e-12);
    CHECK_NEAR(s.io_pct, 50.0, 1e-9);
    CHECK_NEAR(s.compute_pct, 50.0, 1e-9);
    CHECK_NEAR(s.overlap_eff, 0.5, 1e-12);
    CHECK_EQ_INT(s.n_events, 3);
    CHECK_EQ_INT(s.n_dropped, 0);

    /* next step: the IO side is io + copy + decompress + spill, unioned;
     * compute + optimizer unioned; an event running past `now` is cut there */
    trace_step_begin(t, 200.0);
    trace_add(t, TRACE_IO, "read", 0, 200.0, 202.0);
    trace_add(t, TRACE_COPY, "h2d", 0, 201.0, 203.0);       /* overlaps: union [200,203] */
    trace_add(t, TRACE_SPILL, "spill", 0, 202.5, 202.7);    /* inside */
    trace_add(t, TRACE_DECOMPRESS, "lz4", 0, 205.0, 206.0); /* separate: +1 */
    trace_add(t, TRACE_COMPUTE, "fwd", 0, 203.2, 204.0);
    trace_add(t, TRACE_OPT, "adamw", 0, 203.0, 203.5);       /* union [203,204] */
    trace_add(t, TRACE_COMPUTE, "bwd", 0, 207.5, 210.0);     /* cut at 208: +0.5 */
    trace_add(t, TRACE_COMPUTE, "late", 0, 209.0, 209.5);    /* starts after now: left out */
    trace_step_stats(t, 208.0, &s);
    CHECK_NEAR(s.step_time, 8.0, 1e-12);
    CHECK_NEAR(s.io_busy, 4.0, 1e-9);
    CHECK_NEAR(s.compute_busy, 1.5, 1e-9);
    CHECK_NEAR(s.io_pct, 50.0, 1e-9);
    CHECK_NEAR(s.compute_pct, 100.0 * 1.5 / 8.0, 1e-9);
    CHECK_NEAR(s.overlap_eff, 0.5, 1e-9);
    CHECK_EQ_INT(s.n_events, 7);

    /* perfect overlap: compute the whole step, IO under it */
    trace_step_begin(t, 300.0);
    trace_add(t, TRACE_COMPUTE, "fwd", 0, 300.0, 302.0);
    trace_add(t, TRACE_IO, "read", 1, 300.0, 301.5);
    trace_step_stats(t, 302.0, &s);
    CHECK_NEAR(s.overlap_eff, 1.0, 1e-12);
    CHECK_NEAR(s.compute_pct, 100.0, 1e-9);
    CHECK_NEAR(s.io_pct, 75.0, 1e-9);

    /* an empty step of non-zero length, and a zero-length step */
    trace_step_begin(t, 400.0);
    trace_step_stats(t, 401.0, &s);
    CHECK_NEAR(s.io_busy, 0.0, 0);
    CHECK_NEAR(s.compute_busy, 0.0, 0);
    CHECK_NEAR(s.overlap_eff, 0.0, 0);
    CHECK_EQ_INT(s.n_events, 0);
    trace_step_stats(t, 400.0, &s);
    CHECK_NEAR(s.step_time, 0.0, 0);
    CHECK_NEAR(s.overlap_eff, 1.0, 0);
    CHECK_NEAR(s.io_pct, 0.0, 0);
    CHECK_NEAR(s.compute_pct, 0.0, 0);
    trace_free(t);
}

/* Random timelines on an integer grid against a brute-force union. */
static void test_stats_random(void) {
    enum { GRID = 400, N = 300 };
    tt_trace *t = trace_create(N);
    uint32_t x = 12345;
    for (int round = 0; round < 20; round++) {
        double base = 1000.0 * (round + 1);
        trace_step_begin(t, base);
        static unsigned char io_cov[GRID], c_cov[GRID];
        memset(io_cov, 0, sizeof io_cov);
        memset(c_cov, 0, sizeof c_cov);
        int n = 0;
        for (int i = 0; i < N / 20; i++) {
            x = x * 1664525u + 1013904223u;
            int a = (int)(x >> 8) % GRID;
            x = x * 1664525u + 1013904223u;
            int len = (int)(x >> 8) % 40;
            int b = a + len > GRID ? GRID : a + len;
            int track = (int)((x >> 20) % TRACE_N_TRACKS);
            trace_add(t, track, "ev", i, base + a, base + b);
            unsigned char *cov = track == TRACE_COMPUTE || track == TRACE_OPT ? c_cov : io_cov;
            for (int c = a; c < b; c++) cov[c] = 1;
            n++;
        }
        int io = 0, cb = 0;
        for (int c = 0; c < GRID; c++) io += io_cov[c], cb += c_cov[c];
        tt_trace_stats s;
        trace_step_stats(t, base + GRID, &s);
        CHECK_MSG(fabs(s.io_busy - io) < 1e-6, "round %d: io_busy %g, want %d", round, s.io_busy, io);
        CHECK_MSG(fabs(s.compute_busy - cb) < 1e-6, "round %d: compute_busy %g, want %d", round, s.compute_busy, cb);
        CHECK_EQ_INT(s.n_events, n);
        CHECK_NEAR(s.overlap_eff, (io > cb ? io : cb) / (double)GRID, 1e-9);
    }
    trace_free(t);
}

/* ---- Chrome trace ------------------------------------------------------ */

/* Name with everything JSON must escape (a string literal: the trace keeps the pointer). */
static const char *const WEIRD = "fwd \"q\\k\"\n\t\x01 layer";

static void test_chrome(void) {
    tt_trace *t = trace_create(100);
    double o = trace_origin(t);
    struct {
        int track;
        const char *name;
        int64_t arg;
        double t0, t1;
    } want[] = {
        {TRACE_IO, "read", 3, o + 0.001, o + 0.0025},
        {TRACE_COPY, "h2d", 3, o + 0.0025, o + 0.003},
        {TRACE_DECOMPRESS, "lz4", 3, o + 0.003, o + 0.0031},
        {TRACE_COMPUTE, WEIRD, 3, o + 0.004, o + 0.010},
        {TRACE_SPILL, "spill", 3, o + 0.005, o + 0.006},
        {TRACE_OPT, "adamw", -1, o + 0.010, o + 0.011},
        {TRACE_COMPUTE, "head", -1, o + 0.011, o + 0.011}, /* zero duration */
    };
    int nw = (int)(sizeof want / sizeof want[0]);
    for (int i = 0; i < nw; i++) trace_add(t, want[i].track, want[i].name, want[i].arg, want[i].t0, want[i].t1);

    char path[600], partial[700];
    snprintf(path, sizeof path, "%s/trace.json", g_dir);
    snprintf(partial, sizeof partial, "%s.partial", path);
    CHECK_EQ_INT(trace_write_chrome(t, path), 0);
    struct stat sb;
    CHECK(stat(partial, &sb) != 0);

    json_t *j = load_json(path);
    if (!j) { trace_free(t); return; }
    CHECK(json_is_object(j));
    CHECK(json_is_string(json_object_get(j, "displayTimeUnit")) &&
          strcmp(json_string_value(json_object_get(j, "displayTimeUnit")), "ms") == 0);
    json_t *evs = json_object_get(j, "traceEvents");
    CHECK(json_is_array(evs));
    int thread_named[TRACE_N_TRACKS] = {0};
    int nx = 0, io_tid = -1, compute_tid = -1;
    size_t i;
    json_t *e;
    json_array_foreach(evs, i, e) {
        CHECK(json_is_object(e));
        const char *ph = json_string_value(json_object_get(e, "ph"));
        CHECK(ph != NULL);
        if (!ph) continue;
        if (strcmp(ph, "M") == 0) {
            const char *name = json_string_value(json_object_get(e, "name"));
            CHECK(name != NULL);
            CHECK_EQ_INT(json_integer_value(json_object_get(e, "pid")), 1);
            if (name && strcmp(name, "thread_name") == 0) {
                json_int_t tid = json_integer_value(json_object_get(e, "tid"));
                const char *tn = json_string_value(json_object_get(json_object_get(e, "args"), "name"));
                CHECK(tid >= 1 && tid <= TRACE_N_TRACKS);
                if (tid >= 1 && tid <= TRACE_N_TRACKS && tn) {
                    CHECK(strcmp(tn, trace_track_name((int)tid - 1)) == 0);
                    thread_named[tid - 1]++;
                }
            }
            continue;
        }
        CHECK_MSG(strcmp(ph, "X") == 0, "unexpected phase %s", ph);
        json_t *name = json_object_get(e, "name"), *cat = json_object_get(e, "cat"), *ts = json_object_get(e, "ts"),
               *dur = json_object_get(e, "dur"), *pid = json_object_get(e, "pid"), *tid = json_object_get(e, "tid");
        CHECK(json_is_string(name) && json_is_string(cat) && json_is_number(ts) && json_is_number(dur) &&
              json_is_integer(pid) && json_is_integer(tid));
        if (!(json_is_string(name) && json_is_string(cat) && json_is_number(ts) && json_is_number(dur) &&
              json_is_integer(pid) && json_is_integer(tid)) || nx >= nw) {
            nx++;
            continue;
        }
        /* events come out in recording order */
        CHECK_EQ_INT(json_integer_value(pid), 1);
        CHECK_EQ_INT(json_integer_value(tid), want[nx].track + 1);
        CHECK_MSG(strcmp(json_string_value(name), want[nx].name) == 0, "event %d: name \"%s\"", nx,
                  json_string_value(name));
        CHECK(strcmp(json_string_value(cat), trace_track_name(want[nx].track)) == 0);
        CHECK_NEAR(json_number_value(ts), (want[nx].t0 - o) * 1e6, 0.002);
        CHECK_NEAR(json_number_value(dur), (want[nx].t1 - want[nx].t0) * 1e6, 0.002);
        json_t *args = json_object_get(e, "args");
        if (want[nx].arg >= 0) {
            CHECK(json_is_integer(json_object_get(args, "layer")));
            CHECK_EQ_INT(json_integer_value(json_object_get(args, "layer")), want[nx].arg);
        } else {
            CHECK(args == NULL);
        }
        if (want[nx].track == TRACE_IO) io_tid = (int)json_integer_value(tid);
        if (want[nx].track == TRACE_COMPUTE) compute_tid = (int)json_integer_value(tid);
        nx++;
    }
    CHECK_EQ_INT(nx, nw);
    for (int k = 0; k < TRACE_N_TRACKS; k++) CHECK_MSG(thread_named[k] == 1, "track %d named %d times", k, thread_named[k]);
    CHECK(io_tid > 0 && compute_tid > 0 && io_tid != compute_tid);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "otherData"), "dropped_events")), 0);
    json_decref(j);

    /* writing again replaces the file */
    trace_add(t, TRACE_IO, "read", 4, o + 0.02, o + 0.03);
    CHECK_EQ_INT(trace_write_chrome(t, path), 0);
    j = load_json(path);
    if (j) {
        CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "otherData"), "events")), nw + 1);
        json_decref(j);
    }
    trace_free(t);
}

static void test_names(void) {
    CHECK(strcmp(trace_track_name(TRACE_IO), "io") == 0);
    CHECK(strcmp(trace_track_name(TRACE_COPY), "copy") == 0);
    CHECK(strcmp(trace_track_name(TRACE_DECOMPRESS), "decompress") == 0);
    CHECK(strcmp(trace_track_name(TRACE_COMPUTE), "compute") == 0);
    CHECK(strcmp(trace_track_name(TRACE_SPILL), "spill") == 0);
    CHECK(strcmp(trace_track_name(TRACE_OPT), "optimizer") == 0);
}

/* Reads path into buf (NUL-terminated); 0 on failure. */
static size_t slurp(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = 0;
    return n;
}

static void test_dropped(void) {
    tt_trace *t = trace_create(5);
    double o = trace_origin(t);
    for (int i = 0; i < 8; i++) trace_add(t, TRACE_IO, "read", i, o + i, o + i + 0.5);
    CHECK_EQ_INT(trace_n_events(t), 5);
    CHECK_EQ_INT(trace_n_dropped(t), 3);
    tt_trace_stats s;
    trace_step_begin(t, o);
    trace_step_stats(t, o + 10, &s);
    CHECK_EQ_INT(s.n_events, 5);
    CHECK_EQ_INT(s.n_dropped, 3);
    CHECK_NEAR(s.io_busy, 2.5, 1e-9);

    /* the writer says so: in the file, and on stderr */
    char path[600], errpath[600];
    snprintf(path, sizeof path, "%s/dropped.json", g_dir);
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", g_dir);
    fflush(stderr);
    int saved = dup(2);
    FILE *ef = fopen(errpath, "w");
    TT_ASSERT(saved >= 0 && ef);
    dup2(fileno(ef), 2);
    int rc = trace_write_chrome(t, path);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(ef);
    CHECK_EQ_INT(rc, 0);
    char msg[2048];
    slurp(errpath, msg, sizeof msg);
    CHECK_MSG(strstr(msg, "3 events were dropped") != NULL && strstr(msg, path) != NULL, "stderr: %s", msg);
    json_t *j = load_json(path);
    if (j) {
        json_t *od = json_object_get(j, "otherData");
        CHECK_EQ_INT(json_integer_value(json_object_get(od, "dropped_events")), 3);
        CHECK_EQ_INT(json_integer_value(json_object_get(od, "events")), 5);
        int nx = 0;
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(j, "traceEvents"), i, e) nx += strcmp(json_string_value(json_object_get(e, "ph")), "X") == 0;
        CHECK_EQ_INT(nx, 5);
        json_decref(j);
    }
    trace_free(t);

    /* a zero-capacity trace drops everything and still writes */
    t = trace_create(0);
    trace_add(t, TRACE_COMPUTE, "fwd", 0, 1.0, 2.0);
    CHECK_EQ_INT(trace_n_events(t), 0);
    CHECK_EQ_INT(trace_n_dropped(t), 1);
    trace_free(t);
    trace_free(NULL);
}

static void test_unwritable(void) {
    tt_trace *t = trace_create(4);
    trace_add(t, TRACE_IO, "read", 0, trace_origin(t), trace_origin(t) + 1);
    char path[700];
    snprintf(path, sizeof path, "%s/no-such-dir/trace.json", g_dir);
    tt_seterr("%s", "");
    int rc = trace_write_chrome(t, path);
    CHECK_EQ_INT(rc, -ENOENT);
    CHECK_MSG(strstr(tt_lasterr(), path) != NULL, "message: %s", tt_lasterr());

    /* parent is a regular file */
    char file[600];
    snprintf(file, sizeof file, "%s/plain", g_dir);
    FILE *f = fopen(file, "w");
    TT_ASSERT(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/trace.json", file);
    rc = trace_write_chrome(t, path);
    CHECK_EQ_INT(rc, -ENOTDIR);
    CHECK_MSG(strstr(tt_lasterr(), path) != NULL, "message: %s", tt_lasterr());

    /* the path is a directory: the rename fails, nothing is left behind */
    snprintf(path, sizeof path, "%s/adir", g_dir);
    TT_ASSERT(mkdir(path, 0755) == 0);
    rc = trace_write_chrome(t, path);
    CHECK(rc < 0);
    CHECK_MSG(strstr(tt_lasterr(), path) != NULL, "message: %s", tt_lasterr());
    char partial[800];
    snprintf(partial, sizeof partial, "%s.partial", path);
    struct stat sb;
    CHECK(stat(partial, &sb) != 0);
    trace_free(t);
}

/* ---- device-timed spans -------------------------------------------------- */

static void test_dev_spans(void) {
    be_use(backend_cpu_async());
    cpu_async_configure(7, 5000); /* a quarter of the tasks sleep up to 5 ms first */
    tt_trace *t = trace_create(64);
    CHECK_EQ_INT(trace_dev_enable(t, 4), 1);
    tt_queue *q = be_queue_new();
    tt_real *x = be_alloc(1024 * sizeof(tt_real)), *y = be_alloc(1024 * sizeof(tt_real));
    double h0 = tt_now();
    trace_step_begin(t, h0);
    tt_span s = trace_span_begin(t, NULL);
    for (int i = 0; i < 60; i++) be_fill(x, 1024, (tt_real)i);
    trace_span_end(t, s, NULL, TRACE_COMPUTE, "fills", 1);
    tt_span c = trace_span_begin(t, q);
    be_copy_async(y, x, 1024 * sizeof(tt_real), BE_D2D, q);
    trace_span_end(t, c, q, TRACE_COPY, "copy", 2);
    double issued = tt_now() - h0;
    be_synchronize();
    trace_dev_flush(t);
    tt_trace_stats st;
    trace_step_stats(t, tt_now(), &st);
    CHECK_EQ_INT((int)st.n_events, 2); /* both, each starting after the step began */
    /* the fills' span is their run: 60 tasks, about 15 of them sleeping (seeded) */
    CHECK_MSG(st.compute_busy >= 0.001, "the compute span lasted %.6f s (issued in %.6f s)", st.compute_busy, issued);
    CHECK(st.io_busy >= 0);
    CHECK_EQ_INT((int)trace_n_dropped(t), 0);
    /* flushing again records nothing twice */
    trace_dev_flush(t);
    CHECK_EQ_INT((int)trace_n_events(t), 2);

    /* one slot: a second span begun while the first is in flight is dropped */
    tt_trace *t1 = trace_create(8);
    CHECK_EQ_INT(trace_dev_enable(t1, 1), 1);
    tt_span a = trace_span_begin(t1, NULL), b = trace_span_begin(t1, NULL);
    trace_span_end(t1, a, NULL, TRACE_COMPUTE, "a", 0);
    trace_span_end(t1, b, NULL, TRACE_COMPUTE, "b", 0);
    be_synchronize();
    trace_dev_flush(t1);
    CHECK_EQ_INT((int)trace_n_events(t1), 1);
    CHECK_EQ_INT((int)trace_n_dropped(t1), 1);
    /* the slot is free again */
    tt_span c2 = trace_span_begin(t1, NULL);
    trace_span_end(t1, c2, NULL, TRACE_COMPUTE, "c", 0);
    be_synchronize();
    trace_dev_flush(t1);
    CHECK_EQ_INT((int)trace_n_events(t1), 2);
    trace_free(t1);
    trace_free(t);
    be_free(x);
    be_free(y);
    be_queue_free(q);
    cpu_async_configure(1, 0);

    /* the CPU backend has no timers: spans are the host's intervals */
    be_use(backend_cpu());
    tt_trace *t2 = trace_create(8);
    CHECK_EQ_INT(trace_dev_enable(t2, 4), 0);
    double g0 = tt_now();
    tt_span h = trace_span_begin(t2, NULL);
    trace_span_end(t2, h, NULL, TRACE_COMPUTE, "host", 0);
    CHECK_EQ_INT((int)trace_n_events(t2), 1);
    trace_step_begin(t2, g0);
    trace_step_stats(t2, tt_now(), &st);
    CHECK_EQ_INT((int)st.n_events, 1);
    trace_free(t2);
}

int main(void) {
    make_tmpdir();
    test_dev_spans();
    test_names();
    test_stats_known();
    test_stats_random();
    test_threads();
    test_chrome();
    test_dropped();
    test_unwritable();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_dir);
    TEST_END();
}
