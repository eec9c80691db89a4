/* sched/scan.c — a pinned IO thread filling a ring of staging slots. */
#include "sched/scan.h"

#include "core/base/common.h"
#include "io/uring.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

void scan_opts_default(scan_opts *o) {
    uring_opts u;
    uring_opts_default(&u);
    *o = (scan_opts){u.qd, u.chunk, 1, 2, 0, NULL, u.engine};
}

typedef struct piece {
    uint32_t extent;
    uint64_t off, len;  /* inside the extent's stored bytes */
    uint64_t file_off, read_len; /* 4096-aligned */
} piece;

enum { SLOT_FREE, SLOT_READING, SLOT_READY };

typedef struct scan_job {
    const tier_store *s;
    const scan_opts *o;
    piece *pieces;
    uint32_t npieces;
    uint8_t *buf;            /* slots * slot_bytes, registered with the ring */
    uint64_t slot_bytes;
    unsigned nslots;
    int *slot_state;
    uint32_t *slot_piece;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;                /* consumer asks the IO thread to stop */
    int io_rc;               /* IO thread's error */
    char io_msg[1024];
    int io_done;
    scan_stats *st;
} scan_job;

static void *io_thread(void *arg) {
    scan_job *j = arg;
    int rc = 0;
    uring_reader *r = NULL;
    /* the reader first: the threads engine's workers must not inherit this thread's pinning */
    uring_opts uo = {j->o->qd, j->o->chunk, j->o->direct, j->o->engine};
    rc = uring_reader_reopen(&r, tier_fd(j->s), tier_path(j->s), &uo);
    if (rc == 0) {
        unsigned nw;
        const char *en = uring_reader_engine(r, &nw);
        if (nw) snprintf(j->st->engine, sizeof j->st->engine, "%s (%u)", en, nw);
        else snprintf(j->st->engine, sizeof j->st->engine, "%s", en);
        j->st->workers = nw;
        j->st->direct = uring_reader_direct(r);
    }
    if (j->o->topo) {
        int core = topo_io_core(j->o->topo);
        if (topo_pin_thread(j->o->topo, core) == 0) j->st->pinned_core = core;
        else snprintf(j->st->pin_error, sizeof j->st->pin_error, "%s", tt_lasterr());
    }
    if (rc == 0) rc = uring_reader_register_or_plain(r, j->buf, (size_t)j->slot_bytes * j->nslots);
    uint32_t next = 0, inflight = 0;
    while (rc == 0) {
        pthread_mutex_lock(&j->mu);
        /* Fill every free slot, in piece order. */
        unsigned free_slot = j->nslots;
        while (!j->stop && next < j->npieces) {
            free_slot = j->nslots;
            for (unsigned k = 0; k < j->nslots; k++)
                if (j->slot_state[k] == SLOT_FREE) { free_slot = k; break; }
            if (free_slot == j->nslots) break;
            j->slot_state[free_slot] = SLOT_READING;
            j->slot_piece[free_slot] = next;
            pthread_mutex_unlock(&j->mu);
            const piece *p = &j->pieces[next];
            rc = uring_reader_submit(r, j->buf + free_slot * j->slot_bytes, p->file_off, p->read_len, free_slot);
            pthread_mutex_lock(&j->mu);
            if (rc) break;
            next++;
            inflight++;
        }
        if (rc || j->stop || (next == j->npieces && inflight == 0)) {
            pthread_mutex_unlock(&j->mu);
            break;
        }
        if (inflight == 0) { /* all slots busy with the consumer */
            pthread_cond_wait(&j->cv, &j->mu);
            pthread_mutex_unlock(&j->mu);
            continue;
        }
        pthread_mutex_unlock(&j->mu);
        uint64_t tag;
        rc = uring_reader_wait(r, &tag);
        inflight--;
        if (rc) break;
        pthread_mutex_lock(&j->mu);
        j->slot_state[tag] = SLOT_READY;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
    }
    /* Drain what is still in flight before the buffers can go away. */
    while (inflight > 0) {
        uint64_t tag;
        int drc = uring_reader_wait(r, &tag);
        if (drc == -EAGAIN) break;
        inflight--;
    }
    if (r) {
        uring_stats us;
        uring_reader_stats(r, &us);
        j->st->bytes = us.bytes;
    }
    uring_reader_close(r);
    pthread_mutex_lock(&j->mu);
    if (rc) {
        j->io_rc = rc;
        snprintf(j->io_msg, sizeof j->io_msg, "%s", tt_lasterr());
    }
    j->io_done = 1;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

int scan_extents(const tier_store *s, const uint32_t *extents, uint32_t n, const scan_opts *o, scan_fn fn,
                 void *user, scan_stats *st) {
    memset(st, 0, sizeof *st);
    st->pinned_core = -1;
    uint64_t slot = o->slot_bytes;
    if (slot == 0)
        for (uint32_t i = 0; i < n; i++) {
            uint64_t b = tt_align_up(tier_extent_at(s, extents[i])->stored, UR_ALIGN);
            if (b > slot) slot = b;
        }
    slot = tt_align_up(slot ? slot : UR_ALIGN, UR_ALIGN);
    TT_ASSERT(o->slots >= 1 && o->qd >= 1 && o->chunk % UR_ALIGN == 0);

    /* Cut the extents into slot-sized pieces. */
    uint32_t np = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t b = tier_extent_at(s, extents[i])->stored;
        np += (uint32_t)(b ? tt_div_up(b, slot) : 1);
    }
    scan_job j = {0};
    j.s = s;
    j.o = o;
    j.st = st;
    j.pieces = tt_xcalloc(np, sizeof *j.pieces);
    for (uint32_t i = 0, k = 0; i < n; i++) {
        const tier_extent *e = tier_extent_at(s, extents[i]);
        uint64_t off = 0;
        do {
            uint64_t len = e->stored - off < slot ? e->stored - off : slot;
            j.pieces[k++] = (piece){extents[i], off, len, e->offset + off, tt_align_up(len ? len : 1, UR_ALIGN)};
            off += len;
        } while (off < e->stored);
    }
    j.npieces = np;
    j.slot_bytes = slot;
    j.nslots = o->slots;
    j.buf = iobuf_alloc((size_t)slot * o->slots);
    if (!j.buf) {
        free(j.pieces);
        return -ENOMEM;
    }
    j.slot_state = tt_xcalloc(o->slots, sizeof *j.slot_state);
    j.slot_piece = tt_xcalloc(o->slots, sizeof *j.slot_piece);
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);

    double t0 = tt_now();
    pthread_t th;
    int rc = pthread_create(&th, NULL, io_thread, &j), started = rc == 0;
    if (!started) /* out of threads (ulimit -u) or room for stacks (ulimit -v) */
        rc = TT_FAIL(-rc, "cannot start the thread that reads %s: %s%s", tier_path(s), strerror(rc),
                     tt_thread_start_hint(rc));
    for (uint32_t k = 0; k < np && rc == 0; k++) {
        /* Wait for piece k to be ready in some slot. */
        double w0 = tt_now();
        pthread_mutex_lock(&j.mu);
        unsigned found;
        for (;;) {
            found = o->slots;
            for (unsigned q = 0; q < o->slots; q++)
                if (j.slot_state[q] == SLOT_READY && j.slot_piece[q] == k) found = q;
            if (found < o->slots || j.io_rc || j.io_done) break;
            pthread_cond_wait(&j.cv, &j.mu);
        }
        if (found == o->slots) {
            rc = j.io_rc ? j.io_rc : -EIO;
            tt_seterr("%s", j.io_rc ? j.io_msg : "the IO thread stopped early");
            pthread_mutex_unlock(&j.mu);
            break;
        }
        pthread_mutex_unlock(&j.mu);
        st->consumer_wait += tt_now() - w0;
        const piece *p = &j.pieces[k];
        const tier_extent *e = tier_extent_at(s, p->extent);
        rc = fn(user, p->extent, p->off, j.buf + found * slot, p->len, p->off + p->len == e->stored);
        pthread_mutex_lock(&j.mu);
        j.slot_state[found] = SLOT_FREE;
        pthread_cond_broadcast(&j.cv);
        pthread_mutex_unlock(&j.mu);
    }
    st->wall = tt_now() - t0;
    pthread_mutex_lock(&j.mu);
    j.stop = 1;
    pthread_cond_broadcast(&j.cv);
    pthread_mutex_unlock(&j.mu);
    if (started) pthread_join(th, NULL);
    if (rc == 0 && j.io_rc) {
        rc = j.io_rc;
        tt_seterr("%s", j.io_msg);
    }
    pthread_mutex_destroy(&j.mu);
    pthread_cond_destroy(&j.cv);
    iobuf_free(j.buf, (size_t)slot * o->slots);
    free(j.slot_state);
    free(j.slot_piece);
    free(j.pieces);
    return rc;
}
