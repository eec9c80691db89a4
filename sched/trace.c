/* sched/trace.c — preallocated event trace, per-step overlap statistics and
 * the Chrome trace-event writer.
 *
 * Recording: a mutex serialises writers; the event count is published with a
 * release store after the event is written, so readers (statistics, writer)
 * load it with acquire and read events [0, n) without the lock — recorded
 * events never change. Statistics use scratch preallocated at create (one
 * interval per event) and an in-place heap sort, so they do not allocate
 * either (glibc's qsort may call malloc). */
#include "sched/trace.h"

#include "core/base/common.h"
#include "io/atomicfile.h"
#include "kernels/backend.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

typedef struct trace_event {
    double t0, t1;    /* tt_now() seconds */
    const char *name; /* static string */
    int64_t arg;      /* layer, -1 none */
    int track;
} trace_event;

struct tt_trace {
    pthread_mutex_t lock;       /* serialises trace_add */
    pthread_mutex_t stats_lock; /* step_begin / step_stats: step_t0 and scratch */
    trace_event *ev;            /* [cap] */
    tt_interval *scratch;       /* [cap], statistics only */
    size_t cap;
    _Atomic size_t n;           /* events recorded (published with release) */
    _Atomic size_t dropped;
    double origin;
    double step_t0;
    double *steps;              /* [TRACE_MAX_STEPS]: each trace_step_begin's time, under stats_lock */
    size_t n_steps;
    /* device-timed spans (trace_dev_enable): slots under `lock` */
    struct dev_span *dev;       /* [n_dev] */
    size_t *dev_free, n_free;   /* a stack of free slot indices */
    size_t *dev_done;           /* [n_dev], trace_dev_flush's scratch */
    size_t n_dev;
    tt_event *anchor;
    pthread_mutex_t flush_lock; /* one flush at a time */
};

/* A device span's slot: its two timing events, and what to record once both are reached. */
enum { SPAN_FREE = 0, SPAN_OPEN, SPAN_ENDED };
typedef struct dev_span {
    tt_event *a, *b;
    const char *name;
    int64_t arg;
    int track, state;
} dev_span;

enum { TRACE_MAX_STEPS = 1 << 16 }; /* step marks kept (later steps are not marked) */

static const char *const g_track_names[TRACE_N_TRACKS] = {"io", "copy", "decompress", "compute", "spill", "optimizer"};

int trace_track_is_io(int track) {
    return track == TRACE_IO || track == TRACE_COPY || track == TRACE_DECOMPRESS || track == TRACE_SPILL;
}

const char *trace_track_name(int track) {
    TT_ASSERT(track >= 0 && track < TRACE_N_TRACKS);
    return g_track_names[track];
}

int trace_track_of(const char *name) {
    for (int k = 0; name && k < TRACE_N_TRACKS; k++)
        if (strcmp(name, g_track_names[k]) == 0) return k;
    return -1;
}

tt_trace *trace_create(size_t max_events) {
    tt_trace *t = tt_xcalloc(1, sizeof *t);
    TT_ASSERT(max_events < SIZE_MAX / sizeof(trace_event));
    t->cap = max_events;
    /* memset touches every page now, so recording does not page-fault later */
    t->ev = tt_xmalloc(max_events * sizeof *t->ev);
    memset(t->ev, 0, max_events * sizeof *t->ev);
    t->steps = tt_xcalloc(TRACE_MAX_STEPS, sizeof *t->steps);
    t->scratch = tt_xmalloc(max_events * sizeof *t->scratch);
    memset(t->scratch, 0, max_events * sizeof *t->scratch);
    TT_ASSERT(pthread_mutex_init(&t->lock, NULL) == 0);
    TT_ASSERT(pthread_mutex_init(&t->stats_lock, NULL) == 0);
    TT_ASSERT(pthread_mutex_init(&t->flush_lock, NULL) == 0);
    atomic_init(&t->n, 0);
    atomic_init(&t->dropped, 0);
    t->origin = tt_now();
    t->step_t0 = t->origin;
    return t;
}

void trace_free(tt_trace *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_dev; i++) {
        be_event_free(t->dev[i].a);
        be_event_free(t->dev[i].b);
    }
    if (t->anchor) be_event_free(t->anchor);
    free(t->dev);
    free(t->dev_free);
    free(t->dev_done);
    pthread_mutex_destroy(&t->flush_lock);
    pthread_mutex_destroy(&t->lock);
    pthread_mutex_destroy(&t->stats_lock);
    free(t->ev);
    free(t->scratch);
    free(t->steps);
    free(t);
}

void trace_add(tt_trace *t, int track, const char *name, int64_t arg, double t0, double t1) {
    TT_ASSERT(track >= 0 && track < TRACE_N_TRACKS);
    TT_ASSERT(name != NULL);
    TT_ASSERT(t0 <= t1);
    pthread_mutex_lock(&t->lock);
    size_t i = atomic_load_explicit(&t->n, memory_order_relaxed);
    if (i < t->cap) {
        t->ev[i] = (trace_event){t0, t1, name, arg, track};
        atomic_store_explicit(&t->n, i + 1, memory_order_release);
    } else {
        atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&t->lock);
}

/* ---- device-timed spans ----------------------------------------------------------- */

int trace_dev_enable(tt_trace *t, size_t max_spans) {
    if (t->n_dev || !max_spans) return t->n_dev > 0;
    tt_event *anchor = be_timer_new();
    if (!anchor) return 0; /* the backend runs work at the call: the host's clock is right */
    t->anchor = anchor;
    t->dev = tt_xcalloc(max_spans, sizeof *t->dev);
    t->dev_free = tt_xmalloc(max_spans * sizeof *t->dev_free);
    t->dev_done = tt_xmalloc(max_spans * sizeof *t->dev_done);
    for (size_t i = 0; i < max_spans; i++) {
        t->dev[i].a = be_timer_new();
        t->dev[i].b = be_timer_new();
        t->dev_free[i] = max_spans - 1 - i;
    }
    t->n_free = max_spans;
    pthread_mutex_lock(&t->lock);
    t->n_dev = max_spans; /* published last: spans begun from now on are timed */
    pthread_mutex_unlock(&t->lock);
    return 1;
}

tt_span trace_span_begin(tt_trace *t, tt_queue *q) {
    tt_span s = {-1, tt_now()};
    if (!t) return s;
    pthread_mutex_lock(&t->lock);
    if (t->n_dev) {
        if (t->n_free) {
            s.slot = (long)t->dev_free[--t->n_free];
            t->dev[s.slot].state = SPAN_OPEN;
        } else {
            s.slot = -2; /* every slot waits for its work: this span is dropped */
        }
    }
    pthread_mutex_unlock(&t->lock);
    if (s.slot >= 0) be_event_record(t->dev[s.slot].a, q);
    return s;
}

void trace_span_end(tt_trace *t, tt_span s, tt_queue *q, int track, const char *name, int64_t arg) {
    if (!t) return;
    if (s.slot == -1) { trace_add(t, track, name, arg, s.t0, tt_now()); return; }
    if (s.slot == -2) { atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed); return; }
    TT_ASSERT(track >= 0 && track < TRACE_N_TRACKS && name != NULL);
    dev_span *d = &t->dev[s.slot];
    be_event_record(d->b, q);
    pthread_mutex_lock(&t->lock);
    d->name = name;
    d->arg = arg;
    d->track = track;
    d->state = SPAN_ENDED;
    pthread_mutex_unlock(&t->lock);
}

void trace_dev_flush(tt_trace *t) {
    if (!t || !t->n_dev) return;
    pthread_mutex_lock(&t->flush_lock);
    /* the spans whose work is done, found before the anchor is recorded: each precedes it */
    size_t n = 0;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->n_dev; i++)
        if (t->dev[i].state == SPAN_ENDED && be_event_query(t->dev[i].b)) t->dev_done[n++] = i;
    pthread_mutex_unlock(&t->lock);
    if (n) {
        be_event_record(t->anchor, NULL);
        be_event_sync(t->anchor);
        double h = tt_now(); /* the anchor's mark, on the host's clock (after it: the sync's latency) */
        for (size_t j = 0; j < n; j++) {
            dev_span *d = &t->dev[t->dev_done[j]];
            double t0 = h - be_timer_elapsed(d->a, t->anchor), t1 = h - be_timer_elapsed(d->b, t->anchor);
            trace_add(t, d->track, d->name, d->arg, t0, t1 > t0 ? t1 : t0);
        }
        pthread_mutex_lock(&t->lock);
        for (size_t j = 0; j < n; j++) {
            t->dev[t->dev_done[j]].state = SPAN_FREE;
            t->dev_free[t->n_free++] = t->dev_done[j];
        }
        pthread_mutex_unlock(&t->lock);
    }
    pthread_mutex_unlock(&t->flush_lock);
}

size_t trace_count(const tt_trace *t, int track) {
    size_t n = atomic_load_explicit(&t->n, memory_order_acquire), c = 0;
    for (size_t i = 0; i < n; i++) c += t->ev[i].track == track;
    return c;
}

size_t trace_n_events(const tt_trace *t) { return atomic_load_explicit(&t->n, memory_order_acquire); }
size_t trace_n_dropped(const tt_trace *t) { return atomic_load_explicit(&t->dropped, memory_order_relaxed); }
double trace_origin(const tt_trace *t) { return t->origin; }

void trace_clear(tt_trace *t) {
    pthread_mutex_lock(&t->lock);
    pthread_mutex_lock(&t->stats_lock);
    atomic_store(&t->n, 0);
    atomic_store(&t->dropped, 0);
    t->n_steps = 0;
    pthread_mutex_unlock(&t->stats_lock);
    pthread_mutex_unlock(&t->lock);
}

void trace_step_begin(tt_trace *t, double now) {
    pthread_mutex_lock(&t->stats_lock);
    t->step_t0 = now;
    if (t->n_steps < TRACE_MAX_STEPS) t->steps[t->n_steps++] = now;
    pthread_mutex_unlock(&t->stats_lock);
}

/* In-place heap sort of iv[0..n) by t0. */
static void sift_down(tt_interval *iv, size_t root, size_t n) {
    for (;;) {
        size_t c = 2 * root + 1;
        if (c >= n) return;
        if (c + 1 < n && iv[c + 1].t0 > iv[c].t0) c++;
        if (!(iv[c].t0 > iv[root].t0)) return;
        tt_interval tmp = iv[c];
        iv[c] = iv[root];
        iv[root] = tmp;
        root = c;
    }
}

static void sort_by_start(tt_interval *iv, size_t n) {
    if (n < 2) return;
    for (size_t i = n / 2; i-- > 0;) sift_down(iv, i, n);
    for (size_t end = n - 1; end > 0; end--) {
        tt_interval tmp = iv[0];
        iv[0] = iv[end];
        iv[end] = tmp;
        sift_down(iv, 0, end);
    }
}

double trace_union_length(tt_interval *iv, size_t n) {
    sort_by_start(iv, n);
    double total = 0, s = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || iv[i].t0 > e) {
            total += e - s;
            s = iv[i].t0;
            e = iv[i].t1;
        } else if (iv[i].t1 > e) {
            e = iv[i].t1;
        }
    }
    if (n) total += e - s;
    return total;
}

/* Collects the step's intervals of one side into scratch; returns how many. */
static size_t collect(tt_trace *t, size_t n, double begin, double now, int io_side) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const trace_event *e = &t->ev[i];
        if (e->t0 < begin || e->t0 > now || trace_track_is_io(e->track) != io_side) continue;
        t->scratch[k++] = (tt_interval){e->t0, e->t1 < now ? e->t1 : now};
    }
    return k;
}

void trace_step_stats(tt_trace *t, double now, tt_trace_stats *out) {
    memset(out, 0, sizeof *out);
    size_t n = trace_n_events(t);
    pthread_mutex_lock(&t->stats_lock);
    double begin = t->step_t0;
    size_t nio = collect(t, n, begin, now, 1);
    out->io_busy = trace_union_length(t->scratch, nio);
    size_t nc = collect(t, n, begin, now, 0);
    out->compute_busy = trace_union_length(t->scratch, nc);
    pthread_mutex_unlock(&t->stats_lock);
    out->n_events = nio + nc;
    out->n_dropped = trace_n_dropped(t);
    out->step_time = now - begin;
    if (out->step_time > 0) {
        out->io_pct = 100.0 * out->io_busy / out->step_time;
        out->compute_pct = 100.0 * out->compute_busy / out->step_time;
        out->overlap_eff = (out->io_busy > out->compute_busy ? out->io_busy : out->compute_busy) / out->step_time;
    } else {
        out->step_time = 0;
        out->overlap_eff = 1.0;
    }
}

/* s as a JSON string (quotes included). */
static void put_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

static void put_events(FILE *f, const tt_trace *t, size_t n) {
    fputs("{\"traceEvents\":[\n", f);
    fputs("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"tid\":0,\"args\":{\"name\":\"tiertrain\"}}", f);
    for (int k = 0; k < TRACE_N_TRACKS; k++) {
        fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"args\":{\"name\":", k + 1);
        put_json_string(f, g_track_names[k]);
        fputs("}}", f);
        fprintf(f, ",\n{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"args\":{\"sort_index\":%d}}",
                k + 1, k);
    }
    for (size_t i = 0; i < n; i++) {
        const trace_event *e = &t->ev[i];
        fputs(",\n{\"name\":", f);
        put_json_string(f, e->name);
        fputs(",\"cat\":", f);
        put_json_string(f, g_track_names[e->track]);
        fprintf(f, ",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":1,\"tid\":%d", (e->t0 - t->origin) * 1e6,
                (e->t1 - e->t0) * 1e6, e->track + 1);
        if (e->arg >= 0) fprintf(f, ",\"args\":{\"layer\":%lld}", (long long)e->arg);
        fputc('}', f);
    }
    pthread_mutex_lock((pthread_mutex_t *)&t->stats_lock);
    for (size_t k = 0; k < t->n_steps; k++)
        fprintf(f, ",\n{\"name\":\"step\",\"ph\":\"i\",\"s\":\"g\",\"ts\":%.3f,\"pid\":1,\"tid\":0,\"args\":{\"step\":%zu}}",
                (t->steps[k] - t->origin) * 1e6, k + 1);
    pthread_mutex_unlock((pthread_mutex_t *)&t->stats_lock);
    fprintf(f, "\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":{\"events\":%zu,\"dropped_events\":%zu,\"capacity\":%zu}}\n",
            n, trace_n_dropped(t), t->cap);
}

int trace_write_chrome(const tt_trace *t, const char *path) {
    atomic_partial pf;
    int rc = atomic_partial_open(path, &pf);
    return rc ? rc : trace_write_chrome_held(t, path, &pf);
}

int trace_write_chrome_held(const tt_trace *t, const char *path, atomic_partial *pf) {
    size_t n = trace_n_events(t), dropped = trace_n_dropped(t);
    char *tmp = pf->tmp;
    int fd = pf->fd;
    TT_ASSERT(tmp);
    pf->fd = -1; /* closed below, whatever happens */
    pf->tmp = NULL;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = errno;
        unlink(tmp); /* before the close: the lock covers it */
        close(fd);
        tt_seterr("cannot write the trace file %s: %s", path, strerror(e));
        free(tmp);
        return -e;
    }
    errno = 0;
    put_events(f, t, n);
    int e = 0;
    if (fflush(f) != 0 || ferror(f)) e = errno ? errno : EIO;
    else if (fsync(fd) != 0) e = errno;
    /* renamed before the close: the lock covers the file until it has left its temporary name */
    if (!e && rename(tmp, path) != 0) e = errno;
    if (e) {
        unlink(tmp);
        fclose(f);
        tt_seterr("writing the trace file %s failed: %s%s", path, strerror(e),
                  e == ENOSPC || e == EDQUOT ? "; free some space and try again" : "");
        free(tmp);
        return -e;
    }
    fclose(f); /* flushed and synced: nothing left for it to report */
    atomic_sync_dir_of(path); /* make the rename durable */
    free(tmp);
    if (dropped)
        fprintf(stderr, "tiertrain: warning: the trace %s is incomplete: %zu events were dropped because the trace "
                        "was full (%zu events); give it more room\n", path, dropped, t->cap);
    return 0;
}
