/* io/uring.c — the io_uring read engine (see io/uring.h).
 *
 * A submitted read is a "job". Jobs are cut into requests of at most `chunk`
 * bytes (never straddling a registered-buffer piece, so READ_FIXED always sees
 * one buffer index), and up to qd requests are in flight. Each in-flight
 * request holds one of qd preallocated slots; an SQE's user_data is its slot
 * index + 1. A short read keeps its slot and is resubmitted for the remainder.
 *
 * Jobs live in a growable array (grown only when more reads are queued than
 * ever before, so not in the steady state) and sit on one of three lists,
 * linked through ur_job.next: the free list, the issue queue (jobs that still
 * have bytes to hand to requests, oldest first) and the done queue (jobs that
 * finished or failed and have nothing in flight, in completion order), which
 * wait() pops.
 *
 * The threads engine replaces only the ring: a prepared request's slot goes on
 * a queue that worker threads take from (one pread each), and a worker puts
 * the slot and its result on a completion queue that the reader's thread
 * takes from where it would reap CQEs. Everything else (jobs, slots, short
 * reads, faults) is the same code for both engines.
 */
#include "io/uring.h"

#include "core/base/common.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define UR_MAX_QD 4096u
#define UR_MAX_CHUNK (1ull << 30)
#define UR_REG_PIECE (1ull << 30) /* the kernel's limit for one fixed buffer */
#define UR_NONE UINT32_MAX
#define UR_JOBS_INIT 16u

enum { UR_JOB_FREE, UR_JOB_ACTIVE, UR_JOB_DONE };

typedef struct ur_job {
    uint64_t tag;
    uint8_t *dst;
    uint64_t off, len;
    uint64_t issued;   /* bytes handed to requests so far */
    uint32_t inflight; /* requests of this job holding a slot */
    uint32_t next;     /* link: free list, issue queue or done queue */
    int state;         /* UR_JOB_* */
    int queued;        /* on the issue queue */
    int err;           /* 0, or the first -errno */
    char msg[320];     /* the message that goes with err */
} ur_job;

/* A singly linked queue of jobs through ur_job.next (UR_NONE: empty / the end). */
typedef struct ur_queue {
    uint32_t head, tail;
} ur_queue;

typedef struct ur_done_ent {
    uint32_t slot;
    int res; /* bytes read, or -errno */
} ur_done_ent;

typedef struct ur_req {
    uint32_t job;
    uint32_t len;  /* bytes still wanted (shrinks after a short read) */
    uint64_t off;  /* file offset of those bytes */
    uint8_t *dst;
    int buf_index; /* registered piece, or -1 for a plain read */
} ur_req;

struct uring_reader {
    struct io_uring ring;
    int ring_ok;
    int engine; /* UR_ENGINE_URING or UR_ENGINE_THREADS */

    /* the threads engine: tq holds slots waiting for a worker, dq finished
     * reads (each at most qd long, as at most qd slots are in flight) */
    pthread_t *workers;
    unsigned nworkers;
    int tsync; /* tmu and the two conditions are initialised */
    pthread_mutex_t tmu;
    pthread_cond_t twork, tdone;
    uint32_t *tq;
    unsigned tq_head, tq_n;
    ur_done_ent *dq, *dtake;
    unsigned dq_head, dq_n;
    unsigned tbusy; /* workers inside pread */
    atomic_uint tbusy_max; /* written under tmu, read by stats without it */
    int tstop;
    int fd;
    char *path;
    uint64_t size;
    unsigned qd;
    uint64_t chunk;
    int direct;

    ur_req *reqs;        /* [qd] request slots */
    uint32_t *free_reqs; /* [qd] stack of free slot indices */
    unsigned nfree_reqs;
    unsigned ninflight; /* slots in use = qd - nfree_reqs */

    ur_job *jobs;
    uint32_t jobs_cap;
    uint32_t free_job;
    ur_queue issue, done; /* jobs with bytes to hand out, oldest first; finished jobs, in finishing order */
    uint32_t nactive; /* jobs queued and not yet on the done queue */

    uintptr_t reg_base; /* registered fixed buffers, 0 if none */
    uint64_t reg_len;

    uint64_t fault_countdown;
    int fault_err; /* negative errno */
    uint64_t short_countdown;
    _Atomic unsigned delay_us; /* uring_reader_inject_delay: the workers read it unlocked */

    int broken; /* sticky -errno after the ring itself failed */
    char broken_msg[320];

    uring_stats st;
};

void uring_opts_default(uring_opts *o) {
    o->qd = 32;
    o->chunk = 1u << 20;
    o->direct = 1;
    o->engine = UR_ENGINE_AUTO;
}

/* ---- buffers ------------------------------------------------------------ */

void *iobuf_alloc(size_t len) {
    if (len > SIZE_MAX - UR_ALIGN) {
        tt_seterr("cannot allocate an IO buffer of %zu bytes: too large", len);
        return NULL;
    }
    size_t n = (size_t)tt_align_up(len ? len : 1, UR_ALIGN);
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        char b[32];
        tt_seterr("cannot allocate %s of IO buffer memory: %s; lower the --host budget",
                  tt_fmt_bytes(n, b, sizeof b), strerror(errno));
        return NULL;
    }
    return p;
}

void iobuf_free(void *p, size_t len) {
    if (!p) return;
    munmap(p, (size_t)tt_align_up(len ? len : 1, UR_ALIGN));
}

/* ---- job lists ---------------------------------------------------------- */

static uint32_t ur_job_new(uring_reader *r) {
    if (r->free_job == UR_NONE) {
        uint32_t old = r->jobs_cap, cap = old ? old * 2 : UR_JOBS_INIT;
        TT_ASSERT(cap > old && cap < UR_NONE);
        ur_job *nj = realloc(r->jobs, (size_t)cap * sizeof *nj);
        if (!nj) {
            fprintf(stderr, "tiertrain: out of memory growing the io job table\n");
            abort();
        }
        r->jobs = nj;
        for (uint32_t i = old; i < cap; i++) {
            nj[i].state = UR_JOB_FREE;
            nj[i].next = i + 1 < cap ? i + 1 : UR_NONE;
        }
        r->free_job = old;
        r->jobs_cap = cap;
    }
    uint32_t j = r->free_job;
    ur_job *job = &r->jobs[j];
    TT_ASSERT(job->state == UR_JOB_FREE);
    r->free_job = job->next;
    job->next = UR_NONE;
    job->state = UR_JOB_ACTIVE;
    job->queued = 0;
    job->inflight = 0;
    job->issued = 0;
    job->err = 0;
    job->msg[0] = '\0';
    r->nactive++;
    return j;
}

static void ur_job_free(uring_reader *r, uint32_t j) {
    ur_job *job = &r->jobs[j];
    TT_ASSERT(job->state == UR_JOB_DONE && job->inflight == 0 && !job->queued);
    job->state = UR_JOB_FREE;
    job->next = r->free_job;
    r->free_job = j;
}

static void ur_queue_push(uring_reader *r, ur_queue *q, uint32_t j) {
    r->jobs[j].next = UR_NONE;
    if (q->tail == UR_NONE) q->head = j;
    else r->jobs[q->tail].next = j;
    q->tail = j;
}

/* Unlinks j from q (which holds few jobs; a scan is fine). */
static void ur_queue_remove(uring_reader *r, ur_queue *q, uint32_t j) {
    uint32_t prev = UR_NONE, cur = q->head;
    while (cur != UR_NONE && cur != j) {
        prev = cur;
        cur = r->jobs[cur].next;
    }
    TT_ASSERT(cur == j);
    uint32_t nx = r->jobs[j].next;
    if (prev == UR_NONE) q->head = nx;
    else r->jobs[prev].next = nx;
    if (q->tail == j) q->tail = prev;
    r->jobs[j].next = UR_NONE;
}

static void ur_issue_push(uring_reader *r, uint32_t j) {
    r->jobs[j].queued = 1;
    ur_queue_push(r, &r->issue, j);
}

static void ur_issue_remove(uring_reader *r, uint32_t j) {
    ur_queue_remove(r, &r->issue, j);
    r->jobs[j].queued = 0;
}

/* Moves j to the done queue once nothing of it is in flight and it either
 * failed or has handed out (and therefore completed) all its bytes. */
static void ur_maybe_finish(uring_reader *r, uint32_t j) {
    ur_job *job = &r->jobs[j];
    if (job->state != UR_JOB_ACTIVE || job->inflight > 0) return;
    if (!job->err && job->issued < job->len) return;
    TT_ASSERT(!job->queued);
    job->state = UR_JOB_DONE;
    ur_queue_push(r, &r->done, j);
    TT_ASSERT(r->nactive > 0);
    r->nactive--;
}

/* Marks job j failed with err (keeps the first failure). It issues nothing
 * more; requests still in flight drain before it reaches the done queue. */
__attribute__((format(printf, 4, 5)))
static void ur_job_fail(uring_reader *r, uint32_t j, int err, const char *fmt, ...) {
    ur_job *job = &r->jobs[j];
    if (job->err) return;
    job->err = err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(job->msg, sizeof job->msg, fmt, ap);
    va_end(ap);
    if (job->queued) ur_issue_remove(r, j);
}

/* ---- requests ----------------------------------------------------------- */

/* Hands slot s to a worker (threads engine). */
static void ur_thread_queue(uring_reader *r, uint32_t s) {
    pthread_mutex_lock(&r->tmu);
    TT_ASSERT(r->tq_n < r->qd);
    r->tq[(r->tq_head + r->tq_n++) % r->qd] = s;
    pthread_cond_signal(&r->twork);
    pthread_mutex_unlock(&r->tmu);
}

static void ur_prep(uring_reader *r, uint32_t s) {
    if (r->engine == UR_ENGINE_THREADS) {
        ur_thread_queue(r, s);
        return;
    }
    ur_req *q = &r->reqs[s];
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    /* At most qd SQEs are ever prepared but not yet completed, and the SQ ring
     * has at least qd entries, so there is always room. */
    TT_ASSERT(sqe != NULL);
    if (q->buf_index >= 0)
        io_uring_prep_read_fixed(sqe, 0, q->dst, q->len, q->off, q->buf_index);
    else
        io_uring_prep_read(sqe, 0, q->dst, q->len, q->off);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, (uint64_t)s + 1);
}

/* Hands out requests from the oldest jobs while slots are free. */
static void ur_fill(uring_reader *r) {
    while (r->nfree_reqs > 0 && r->issue.head != UR_NONE) {
        uint32_t j = r->issue.head;
        ur_job *job = &r->jobs[j];
        uint64_t pos = job->issued;
        uint64_t n = job->len - pos;
        if (n > r->chunk) n = r->chunk;
        uint8_t *dst = job->dst + pos;
        uintptr_t d = (uintptr_t)dst;
        int bi = -1;
        if (r->reg_len) {
            uintptr_t b = r->reg_base, e = r->reg_base + r->reg_len;
            if (d >= b && d < e) {
                uint64_t rel = d - b;
                bi = (int)(rel / UR_REG_PIECE);
                uint64_t piece_end = (uint64_t)(bi + 1) * UR_REG_PIECE;
                if (piece_end > r->reg_len) piece_end = r->reg_len;
                if (rel + n > piece_end) n = piece_end - rel;
            } else if (d < b && d + n > b) {
                n = b - d; /* the rest starts inside the registered range */
            }
        }
        TT_ASSERT(n > 0 && n <= UR_MAX_CHUNK);
        uint32_t s = r->free_reqs[--r->nfree_reqs];
        ur_req *q = &r->reqs[s];
        q->job = j;
        q->len = (uint32_t)n;
        q->off = job->off + pos;
        q->dst = dst;
        q->buf_index = bi;
        ur_prep(r, s);
        r->ninflight++;
        if (r->ninflight > r->st.max_inflight) r->st.max_inflight = r->ninflight;
        job->inflight++;
        job->issued += n;
        if (job->issued == job->len) ur_issue_remove(r, j);
    }
}

/* Releases slot s (its request is finished, well or badly). */
static void ur_req_release(uring_reader *r, uint32_t s) {
    uint32_t j = r->reqs[s].job;
    ur_job *job = &r->jobs[j];
    TT_ASSERT(job->inflight > 0 && r->ninflight > 0);
    job->inflight--;
    r->ninflight--;
    r->free_reqs[r->nfree_reqs++] = s;
    ur_maybe_finish(r, j);
}

/* Handles the completion of slot s with result res (bytes or -errno). */
static void ur_complete(uring_reader *r, uint32_t s, int res) {
    TT_ASSERT(s < r->qd);
    ur_req *q = &r->reqs[s];
    uint32_t j = q->job;
    ur_job *job = &r->jobs[j];
    TT_ASSERT(job->state == UR_JOB_ACTIVE && job->inflight > 0);
    r->st.requests++;

    /* test hooks */
    int fault = r->fault_countdown && --r->fault_countdown == 0;
    int shorten = r->short_countdown && --r->short_countdown == 0;
    if (fault) {
        res = r->fault_err;
    } else if (shorten && res > 0) {
        uint32_t t = (uint32_t)res / 2;
        if (r->direct) t &= ~(UR_ALIGN - 1);
        if (t > 0) {
            memset(q->dst + t, 0xA5, (size_t)res - t);
            res = (int)t;
        }
    }

    if (job->err) { /* already failed: just drain */
        if (res > 0) r->st.bytes += (uint64_t)res;
        ur_req_release(r, s);
        return;
    }
    if (res < 0) {
        ur_job_fail(r, j, res, "read of %s at offset %llu (%u bytes) failed: %s", r->path,
                    (unsigned long long)q->off, q->len, strerror(-res));
        ur_req_release(r, s);
        return;
    }
    uint64_t got = (uint64_t)res;
    TT_ASSERT(got <= q->len);
    r->st.bytes += got;
    if (got < q->len && q->off + got < r->size) {
        /* Short read before the end of the file: resubmit the remainder.
         * Under O_DIRECT the remainder must stay 4096-aligned, so the few
         * bytes past the last whole block are read again. */
        uint64_t step = r->direct ? (got & ~(uint64_t)(UR_ALIGN - 1)) : got;
        if (got == 0) {
            ur_job_fail(r, j, -EIO,
                        "read of %s at offset %llu (%u bytes) failed: unexpected end of file "
                        "(it had %llu bytes when opened); was it truncated meanwhile?",
                        r->path, (unsigned long long)q->off, q->len,
                        (unsigned long long)r->size);
            ur_req_release(r, s);
            return;
        }
        if (step == 0) {
            ur_job_fail(r, j, -EIO,
                        "read of %s at offset %llu (%u bytes) failed: the kernel returned "
                        "%llu bytes, less than one 4096-byte block, under O_DIRECT",
                        r->path, (unsigned long long)q->off, q->len, (unsigned long long)got);
            ur_req_release(r, s);
            return;
        }
        q->off += step;
        q->dst += step;
        q->len -= (uint32_t)step;
        r->st.short_reads++;
        ur_prep(r, s); /* keeps its slot; submitted with the next batch */
        return;
    }
    /* The last block of a file whose size is not a multiple of 4096: the
     * part past the end reads as zeros. */
    if (got < q->len) memset(q->dst + got, 0, q->len - got);
    ur_req_release(r, s);
}

__attribute__((format(printf, 3, 4)))
static int ur_break(uring_reader *r, int err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->broken_msg, sizeof r->broken_msg, fmt, ap);
    va_end(ap);
    r->broken = err;
    return TT_FAIL(err, "%s", r->broken_msg);
}

static void ur_reap(uring_reader *r) {
    struct io_uring_cqe *cqe;
    while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&r->ring, cqe);
        TT_ASSERT(ud >= 1 && ud <= r->qd);
        ur_complete(r, (uint32_t)(ud - 1), res);
    }
}

/* Submits what is prepared without waiting. A transient refusal (EAGAIN,
 * EBUSY) is left for the next call to retry. */
static int ur_kick(uring_reader *r) {
    if (r->engine == UR_ENGINE_THREADS) return 0; /* the workers have them already */
    if (io_uring_sq_ready(&r->ring) == 0) return 0;
    int rc;
    do rc = io_uring_submit(&r->ring);
    while (rc == -EINTR);
    if (rc < 0 && rc != -EAGAIN && rc != -EBUSY)
        return ur_break(r, rc, "io_uring submission for %s failed: %s", r->path, strerror(-rc));
    return 0;
}

/* Puts requests in flight, waits for at least one completion and handles
 * every completion that is ready. Called only while some job is active, which
 * guarantees something is (or can be put) in flight. */
static int ur_progress(uring_reader *r) {
    if (r->broken) return TT_FAIL(r->broken, "%s", r->broken_msg);
    ur_fill(r);
    TT_ASSERT(r->ninflight > 0);
    if (r->engine == UR_ENGINE_THREADS) {
        /* take every finished read at once, then handle them unlocked (a
         * short read's remainder goes back to the workers' queue) */
        pthread_mutex_lock(&r->tmu);
        while (r->dq_n == 0) pthread_cond_wait(&r->tdone, &r->tmu);
        unsigned n = r->dq_n;
        for (unsigned i = 0; i < n; i++) r->dtake[i] = r->dq[(r->dq_head + i) % r->qd];
        r->dq_head = (r->dq_head + n) % r->qd;
        r->dq_n = 0;
        pthread_mutex_unlock(&r->tmu);
        for (unsigned i = 0; i < n; i++) ur_complete(r, r->dtake[i].slot, r->dtake[i].res);
        return 0;
    }
    int rc;
    do rc = io_uring_submit_and_wait(&r->ring, 1);
    while (rc == -EINTR);
    if (rc == -EAGAIN || rc == -EBUSY) {
        /* the kernel is short of resources: take what completed, else back off */
        if (io_uring_cq_ready(&r->ring) == 0) {
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    } else if (rc < 0) {
        return ur_break(r, rc, "io_uring submission for %s failed: %s", r->path, strerror(-rc));
    }
    ur_reap(r);
    return 0;
}

/* ---- public interface --------------------------------------------------- */

/* Waits for every request in flight so that no buffer is written after this
 * returns (the ring's own teardown would not wait for them). */
static void ur_drain(uring_reader *r) {
    if (!r->ring_ok || r->broken) return;
    if (io_uring_sq_ready(&r->ring) && io_uring_submit(&r->ring) < 0) return;
    while (r->ninflight > 0) {
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe(&r->ring, &cqe);
        if (rc == -EINTR) continue;
        if (rc < 0) return;
        io_uring_cqe_seen(&r->ring, cqe);
        r->ninflight--;
    }
}

/* Stops the workers: each finishes the read it is doing (reads still queued
 * are dropped), so that no buffer is written after this returns. */
static void ur_threads_stop(uring_reader *r) {
    if (r->tsync) {
        pthread_mutex_lock(&r->tmu);
        r->tstop = 1;
        pthread_cond_broadcast(&r->twork);
        pthread_mutex_unlock(&r->tmu);
    }
    for (unsigned i = 0; i < r->nworkers; i++) pthread_join(r->workers[i], NULL);
    if (r->tsync) {
        pthread_mutex_destroy(&r->tmu);
        pthread_cond_destroy(&r->twork);
        pthread_cond_destroy(&r->tdone);
    }
    free(r->workers);
    free(r->tq);
    free(r->dq);
    free(r->dtake);
}

static void *ur_worker(void *arg) {
    uring_reader *r = arg;
    pthread_mutex_lock(&r->tmu);
    for (;;) {
        while (!r->tstop && r->tq_n == 0) pthread_cond_wait(&r->twork, &r->tmu);
        if (r->tstop) break;
        uint32_t s = r->tq[r->tq_head];
        r->tq_head = (r->tq_head + 1) % r->qd;
        r->tq_n--;
        ur_req q = r->reqs[s]; /* the reader's thread does not touch it until the result is back */
        if (++r->tbusy > atomic_load_explicit(&r->tbusy_max, memory_order_relaxed))
            atomic_store_explicit(&r->tbusy_max, r->tbusy, memory_order_relaxed);
        pthread_mutex_unlock(&r->tmu);
        unsigned delay = atomic_load_explicit(&r->delay_us, memory_order_relaxed);
        if (delay) {
            struct timespec ts = {delay / 1000000, (long)(delay % 1000000) * 1000};
            while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
        }
        ssize_t n;
        do n = pread(r->fd, q.dst, q.len, (off_t)q.off);
        while (n < 0 && errno == EINTR);
        int res = n < 0 ? -errno : (int)n;
        pthread_mutex_lock(&r->tmu);
        r->tbusy--;
        TT_ASSERT(r->dq_n < r->qd);
        r->dq[(r->dq_head + r->dq_n++) % r->qd] = (ur_done_ent){s, res};
        pthread_cond_signal(&r->tdone);
    }
    pthread_mutex_unlock(&r->tmu);
    return NULL;
}

/* Starts min(qd, UR_THREADS_MAX) workers. */
static int ur_threads_start(uring_reader *r) {
    r->tq = tt_xcalloc(r->qd, sizeof *r->tq);
    r->dq = tt_xcalloc(r->qd, sizeof *r->dq);
    r->dtake = tt_xcalloc(r->qd, sizeof *r->dtake);
    unsigned want = r->qd < UR_THREADS_MAX ? r->qd : UR_THREADS_MAX;
    r->workers = tt_xcalloc(want, sizeof *r->workers);
    r->tmu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    r->twork = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    r->tdone = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    r->tsync = 1;
    /* the workers take no signals (the process's handlers run on the threads that expect them) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = 0;
    for (unsigned i = 0; i < want && !e; i++) {
        e = pthread_create(&r->workers[i], NULL, ur_worker, r);
        if (!e) r->nworkers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e)
        return TT_FAIL(-e, "cannot start IO thread %u of %u for %s: %s%s", r->nworkers + 1, want, r->path, strerror(e),
                       tt_thread_start_hint(e));
    return 0;
}

/* The engine opts asks for, TT_IO_ENGINE deciding where it says auto. */
static int ur_engine_choice(int engine, int *out) {
    if (engine != UR_ENGINE_AUTO) {
        TT_ASSERT(engine == UR_ENGINE_URING || engine == UR_ENGINE_THREADS);
        *out = engine;
        return 0;
    }
    const char *v = getenv("TT_IO_ENGINE");
    if (!v || !*v || !strcmp(v, "auto")) *out = UR_ENGINE_AUTO;
    else if (!strcmp(v, "uring") || !strcmp(v, "io_uring")) *out = UR_ENGINE_URING;
    else if (!strcmp(v, "threads")) *out = UR_ENGINE_THREADS;
    else return TT_FAIL(-EINVAL, "TT_IO_ENGINE=%s is not an IO engine; use auto, uring or threads", v);
    return 0;
}

void uring_reader_close(uring_reader *r) {
    if (!r) return;
    ur_threads_stop(r);
    ur_drain(r);
    if (r->ring_ok) io_uring_queue_exit(&r->ring);
    if (r->fd >= 0) close(r->fd);
    free(r->path);
    free(r->reqs);
    free(r->free_reqs);
    free(r->jobs);
    free(r);
}

/* Sets up the ring and registers the file with it. Returns 0, or -errno with
 * *call naming the system call that failed (the ring is gone again then). */
static int ur_ring_start(uring_reader *r, const char **call) {
    *call = "io_uring_setup";
    int rc = io_uring_queue_init(r->qd, &r->ring, 0);
    if (rc < 0) return rc;
    r->ring_ok = 1;
    *call = "io_uring_register";
    rc = io_uring_register_files(&r->ring, &r->fd, 1);
    if (rc < 0) { /* gVisor's optional io_uring, or a filter that lets only the setup through */
        io_uring_queue_exit(&r->ring);
        r->ring_ok = 0;
    }
    return rc;
}

/* Says once per process, on stderr, that io_uring was refused and the threads read instead. */
static void ur_fallback_note(const char *call, int rc, unsigned qd) {
    static atomic_int said;
    if (atomic_exchange(&said, 1)) return;
    fprintf(stderr,
            "tiertrain: io_uring is not available here (%s: %s; %s); reading with %u pread "
            "threads instead (TT_IO_ENGINE=threads chooses them without this note)\n",
            call, strerror(-rc),
            rc == -ENOMEM ? "the locked-memory limit, `ulimit -l`, is too small for its rings"
                          : "kernel.io_uring_disabled, a seccomp filter such as Docker's default, or the container "
                            "runtime refuses it",
            qd < UR_THREADS_MAX ? qd : UR_THREADS_MAX);
}

/* Says once per process that path is read through the page cache. */
static void ur_no_direct_note(const char *path) {
    static atomic_int said;
    if (atomic_exchange(&said, 1)) return;
    fprintf(stderr,
            "tiertrain: %s is on a filesystem without direct IO (O_DIRECT: tmpfs before Linux 6.6, some FUSE and "
            "network filesystems); reading it through the page cache instead\n",
            path);
}

/* Opens what a reader reads: path, or (from >= 0) the file open as from, through its /proc/self/fd link: an
 * open of its own (O_DIRECT here leaves from's other readers alone) of the same file, whatever was renamed over
 * path since, or where it was removed. */
static int ur_open_file(const char *path, int from, int flags, uint64_t *size) {
    if (from < 0) return tt_open_regular(path, flags, "file", "check the path", size);
    char via[64];
    snprintf(via, sizeof via, "/proc/self/fd/%d", from);
    int fd = open(via, flags | O_CLOEXEC);
    struct stat st, was;
    if (fd < 0 && errno == ENOENT) { /* no /proc (a bare chroot): path, while it still names from's file */
        fd = open(path, flags | O_CLOEXEC);
        if (fd >= 0 && (fstat(fd, &st) != 0 || fstat(from, &was) != 0 || st.st_dev != was.st_dev ||
                        st.st_ino != was.st_ino)) {
            close(fd);
            return TT_FAIL(-EIO, "%s was replaced while this run was reading it, and without /proc the file it "
                           "opened cannot be opened again; put the original back, or mount /proc", path);
        }
    }
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        if (e == EINVAL) return -EINVAL; /* O_DIRECT refused: the caller reads through the page cache */
        return TT_FAIL(-e, "cannot reopen %s (through %s): %s", path, via, strerror(e));
    }
    *size = (uint64_t)st.st_size;
    return fd;
}

static int ur_open(uring_reader **out, const char *path, int from, const uring_opts *opts) {
    TT_ASSERT(out && path);
    *out = NULL;
    uring_opts o;
    if (opts) o = *opts;
    else uring_opts_default(&o);
    if (o.qd == 0 || o.qd > UR_MAX_QD)
        return TT_FAIL(-EINVAL, "io queue depth %u is out of range; use 1 to %u", o.qd, UR_MAX_QD);
    if (o.chunk == 0 || o.chunk % UR_ALIGN || o.chunk > UR_MAX_CHUNK)
        return TT_FAIL(-EINVAL,
                       "io chunk size %llu is invalid; use a multiple of 4 KiB up to 1 GiB",
                       (unsigned long long)o.chunk);
    int engine;
    int erc = ur_engine_choice(o.engine, &engine);
    if (erc) return erc;

    uint64_t size;
    int fd = ur_open_file(path, from, O_RDONLY | (o.direct ? O_DIRECT : 0), &size), no_direct = 0;
    if (fd == -EINVAL && o.direct) {
        /* a filesystem without direct IO: the page cache will do */
        fd = ur_open_file(path, from, O_RDONLY, &size);
        no_direct = fd >= 0;
        o.direct = 0;
    }
    if (fd < 0) return fd;

    if (no_direct) ur_no_direct_note(path);

    uring_reader *r = tt_xcalloc(1, sizeof *r);
    r->fd = fd;
    size_t pl = strlen(path);
    r->path = tt_xmalloc(pl + 1);
    memcpy(r->path, path, pl + 1);
    r->size = size;
    r->qd = o.qd;
    r->chunk = o.chunk;
    r->direct = o.direct != 0;
    r->reqs = tt_xcalloc(o.qd, sizeof *r->reqs);
    r->free_reqs = tt_xcalloc(o.qd, sizeof *r->free_reqs);
    for (unsigned i = 0; i < o.qd; i++) r->free_reqs[i] = o.qd - 1 - i;
    r->nfree_reqs = o.qd;
    r->free_job = UR_NONE;
    r->issue.head = r->issue.tail = UR_NONE;
    r->done.head = r->done.tail = UR_NONE;

    const char *call = "io_uring_setup";
    int rc = engine == UR_ENGINE_THREADS ? -ENOSYS : ur_ring_start(r, &call);
    int refused = rc == -ENOSYS || rc == -EPERM || rc == -EACCES;
    /* ENOMEM: kernels before 5.12 count the rings against `ulimit -l` */
    if (engine != UR_ENGINE_URING && (refused || rc == -ENOMEM)) {
        if (engine == UR_ENGINE_AUTO) ur_fallback_note(call, rc, o.qd);
        r->engine = UR_ENGINE_THREADS;
        rc = ur_threads_start(r);
        if (rc < 0) {
            uring_reader_close(r);
            return rc;
        }
        *out = r;
        return 0;
    }
    r->engine = UR_ENGINE_URING;
    if (rc < 0) {
        if (refused)
            tt_seterr("io_uring is not available on this system (%s: %s); it is "
                      "disabled by the kernel (kernel.io_uring_disabled), a seccomp filter or "
                      "the container runtime; run tiertrain where io_uring is allowed, or "
                      "with TT_IO_ENGINE=auto or threads", call, strerror(-rc));
        else if (strcmp(call, "io_uring_setup"))
            tt_seterr("cannot register %s with io_uring: %s", path, strerror(-rc));
        else if (rc == -ENOMEM)
            tt_seterr("cannot set up an io_uring of depth %u: out of locked memory; raise "
                      "`ulimit -l` or lower the queue depth", o.qd);
        else
            tt_seterr("cannot set up an io_uring of depth %u for %s: %s", o.qd, path,
                      strerror(-rc));
        uring_reader_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

int uring_reader_open(uring_reader **out, const char *path, const uring_opts *opts) {
    return ur_open(out, path, -1, opts);
}

int uring_reader_reopen(uring_reader **out, int fd, const char *path, const uring_opts *opts) {
    TT_ASSERT(fd >= 0);
    return ur_open(out, path, fd, opts);
}

uint64_t uring_reader_file_size(const uring_reader *r) { return r->size; }

int uring_reader_direct(const uring_reader *r) {
    TT_ASSERT(r);
    return r->direct;
}

const char *uring_reader_engine(const uring_reader *r, unsigned *workers) {
    TT_ASSERT(r);
    if (workers) *workers = r->nworkers;
    return r->engine == UR_ENGINE_THREADS ? "threads" : "io_uring";
}

int uring_reader_register(uring_reader *r, void *base, size_t len) {
    TT_ASSERT(r && base);
    if (r->engine == UR_ENGINE_THREADS) return 0; /* pread needs no registration */
    TT_ASSERT(r->reg_len == 0); /* at most once per reader */
    TT_ASSERT((uintptr_t)base % UR_ALIGN == 0);
    uint64_t rlen = (uint64_t)len & ~(uint64_t)(UR_ALIGN - 1);
    TT_ASSERT(rlen > 0);
    uint64_t n = tt_div_up(rlen, UR_REG_PIECE);
    if (n > 16384) {
        char b[32];
        return TT_FAIL(-EINVAL, "cannot register %s of IO buffers with io_uring: more than "
                       "the kernel's 16384 GiB limit", tt_fmt_bytes(rlen, b, sizeof b));
    }
    struct iovec *iov = tt_xcalloc((size_t)n, sizeof *iov);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t o = i * UR_REG_PIECE;
        iov[i].iov_base = (uint8_t *)base + o;
        iov[i].iov_len = (size_t)(rlen - o < UR_REG_PIECE ? rlen - o : UR_REG_PIECE);
    }
    int rc = io_uring_register_buffers(&r->ring, iov, (unsigned)n);
    free(iov);
    if (rc < 0) {
        char b[32], lb[32];
        if (rc == -ENOMEM) {
            struct rlimit rl;
            const char *lim = "unknown";
            if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0)
                lim = rl.rlim_cur == RLIM_INFINITY ? "unlimited"
                                                    : tt_fmt_bytes(rl.rlim_cur, lb, sizeof lb);
            return TT_FAIL(rc, "cannot register %s of IO buffers with io_uring: out of "
                           "locked memory (ulimit -l is %s); raise it with `ulimit -l "
                           "unlimited` (or a memlock line in /etc/security/limits.conf)",
                           tt_fmt_bytes(rlen, b, sizeof b), lim);
        }
        return TT_FAIL(rc, "cannot register %s of IO buffers with io_uring: %s",
                       tt_fmt_bytes(rlen, b, sizeof b), strerror(-rc));
    }
    r->reg_base = (uintptr_t)base;
    r->reg_len = rlen;
    return 0;
}

int uring_reader_register_or_plain(uring_reader *r, void *base, size_t len) {
    int rc = uring_reader_register(r, base, len);
    if (rc != -ENOMEM) return rc;
    static atomic_int said;
    if (!atomic_exchange(&said, 1))
        fprintf(stderr, "tiertrain: %s; until then, reading without registered buffers (a little slower)\n",
                tt_lasterr());
    return 0;
}

/* Queues a read; sets *jout to its job. */
static int ur_submit_job(uring_reader *r, void *dst, uint64_t off, uint64_t len, uint64_t tag,
                         uint32_t *jout) {
    TT_ASSERT(r && dst);
    TT_ASSERT((uintptr_t)dst % UR_ALIGN == 0);
    TT_ASSERT(off % UR_ALIGN == 0 && len % UR_ALIGN == 0);
    TT_ASSERT((uintptr_t)dst + len >= (uintptr_t)dst); /* no wrap-around */
    if (r->broken) return TT_FAIL(r->broken, "%s", r->broken_msg);
    uint64_t end = tt_align_up(r->size, UR_ALIGN);
    if (off > end || len > end - off)
        return TT_FAIL(-EINVAL,
                       "read of %s at offset %llu (%llu bytes) goes past the end of the file "
                       "(%llu bytes); the file is truncated or its directory is corrupt",
                       r->path, (unsigned long long)off, (unsigned long long)len,
                       (unsigned long long)r->size);
    uint32_t j = ur_job_new(r);
    ur_job *job = &r->jobs[j];
    job->tag = tag;
    job->dst = dst;
    job->off = off;
    job->len = len;
    if (len > 0) ur_issue_push(r, j);
    else ur_maybe_finish(r, j);
    *jout = j;
    ur_fill(r);
    return ur_kick(r);
}

int uring_reader_submit(uring_reader *r, void *dst, uint64_t off, uint64_t len, uint64_t tag) {
    uint32_t j;
    return ur_submit_job(r, dst, off, len, tag, &j);
}

int uring_reader_wait(uring_reader *r, uint64_t *tag) {
    TT_ASSERT(r && tag);
    while (r->done.head == UR_NONE) {
        if (r->nactive == 0) return -EAGAIN;
        int rc = ur_progress(r);
        if (rc < 0) return rc;
    }
    /* keep the device busy with queued work while the caller handles this one */
    if (r->nfree_reqs > 0 && r->issue.head != UR_NONE && !r->broken) {
        ur_fill(r);
        (void)ur_kick(r); /* a failure is sticky and reported by the next call */
    }
    uint32_t j = r->done.head;
    ur_queue_remove(r, &r->done, j);
    ur_job *job = &r->jobs[j];
    *tag = job->tag;
    int err = job->err;
    if (err) tt_seterr("%s", job->msg);
    ur_job_free(r, j);
    return err;
}

#ifdef __SANITIZE_THREAD__
/* The kernel writes dst on this thread's behalf; ThreadSanitizer does not see
 * it, so say so: a buffer still read by another thread (an asynchronous copy
 * not waited for) then shows up as a race, as it is one. */
void __tsan_write_range(void *addr, unsigned long size);
#define KERNEL_WROTE(p, n) __tsan_write_range((p), (unsigned long)(n))
#else
#define KERNEL_WROTE(p, n) ((void)0)
#endif

int uring_reader_read(uring_reader *r, void *dst, uint64_t off, uint64_t len) {
    KERNEL_WROTE(dst, len);
    uint32_t j;
    int rc = ur_submit_job(r, dst, off, len, UINT64_MAX, &j);
    if (rc < 0) return rc;
    while (r->jobs[j].state != UR_JOB_DONE) {
        rc = ur_progress(r);
        if (rc < 0) return rc;
    }
    ur_queue_remove(r, &r->done, j);
    int err = r->jobs[j].err;
    if (err) tt_seterr("%s", r->jobs[j].msg);
    ur_job_free(r, j);
    return err;
}

void uring_reader_inject_fault(uring_reader *r, uint64_t nth, int err) {
    TT_ASSERT(r && (nth == 0 || err != 0));
    r->fault_countdown = nth;
    r->fault_err = err > 0 ? -err : err;
}

void uring_reader_inject_short(uring_reader *r, uint64_t nth) {
    TT_ASSERT(r);
    r->short_countdown = nth;
}

void uring_reader_inject_delay(uring_reader *r, unsigned usec) {
    TT_ASSERT(r);
    atomic_store_explicit(&r->delay_us, usec, memory_order_relaxed);
}

void uring_reader_stats(const uring_reader *r, uring_stats *out) {
    TT_ASSERT(r && out);
    *out = r->st;
    if (r->engine == UR_ENGINE_THREADS) /* preads running at once, not slots handed out */
        out->max_inflight = atomic_load_explicit(&r->tbusy_max, memory_order_relaxed);
}
