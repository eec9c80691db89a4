/* sched/stream.c — the weight provider and the activation store (see
 * stream.h). Three threads: the caller (core/exec.c's step loop) issues the
 * compute on the backend's compute queue; the IO
 * thread loads layers (NVMe -> pinned host -> device slot, copies on the
 * host-to-device queue); the copy thread spills and unspills activations
 * (device-to-host and host-to-device queues). One mutex and one condition
 * variable guard the host-side state (slot and cell states, the two command
 * queues, the free list of activation buffers).
 *
 * The device-side order (DESIGN.md, "Asynchrony"): a kernel having been
 * launched says nothing about it having run, so every hand-over of device
 * memory between queues goes through an event. A slot's copy waits for the
 * slot's "done" event (recorded on the compute queue when the layer is
 * released) and records "ready", which the compute queue waits for before
 * the layer's ops. Each activation buffer carries one event, recorded by the
 * queue that used it last before it goes back to the free list (or to a
 * spill); whoever takes it next makes its queue wait for that event. */
#include "sched/stream.h"

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "io/uring.h"
#include "kernels/backend.h"
#include "sched/arena.h"
#include "sched/topo.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { SLOT_EMPTY, SLOT_LOADING, SLOT_READY };
enum { CELL_DEV, CELL_HOST };
enum { DROP_NONE, DROP_SLOT, DROP_DECODE }; /* tt_stream.drop_wait */

typedef struct slot {
    int layer;      /* -1: none */
    int state;
    int busy;       /* in use by the compute thread */
    void *buf;      /* device, slot_bytes */
    tt_event *ready; /* the load's copy (h2d queue) */
    tt_event *done;  /* the compute queue's last use of the slot */
} slot;

/* A layer-boundary activation of one micro-batch: the input of layer l
 * (the checkpoint), replaced in the backward pass by the gradient w.r.t. it. */
typedef struct cell {
    int home;             /* CELL_DEV or CELL_HOST */
    void *dev;            /* device buffer: the value (dev cell) or an unspilled copy (host cell) */
    void *host;           /* host buffer of a host cell */
    int spilling, unspilling;
    int phase;            /* values stored this step: 1 = checkpoint, 2 = gradient */
} cell;

enum { CMD_LOAD, CMD_SPILL, CMD_UNSPILL };
typedef struct cmd {
    int kind, layer, slot;  /* load */
    int l, k;               /* spill / unspill */
    void *buf;
} cmd;

/* A ring of commands. Each holds what it works on until it is done (a load its
 * slot, a spill or unspill a cell buffer), so the IO queue never holds more than
 * plan.slots commands and the copy queue more than the cell buffers: each is
 * sized one more than that (queue_init). */
typedef struct queue {
    cmd *c;
    int cap, head, tail;
} queue;

/* Every region carved from the two arenas. */
typedef struct regions {
    void **slot_buf;         /* [slots] device */
    void *head;              /* device: the head extent, or only the final norm */
    void **cell_buf;         /* [dev_cells + PLAN_TRANSIT] device, cell bytes each (f32 or bf16 values) */
    uint8_t *staging;        /* host: NVMe reads (also the head on its way to the device) */
    uint8_t *staging2;       /* host: the second layer staging buffer (reads alternate while a copy is in flight) */
    uint8_t *embed;          /* host: the embedding extent */
    uint8_t *head_host;      /* host: the head extent when lm_head is streamed */
    uint8_t *decode;         /* host: lz4 decode buffer (no host cache) */
    void **cell_host;        /* [(L+1) * K] host buffer of each host cell */
    uint8_t **cache;         /* [L] host layer cache, or NULL */
} regions;

typedef struct sizes {
    uint64_t slot, cell, stage, stage_layer, embed, head; /* cell: one (T, hidden) activation in its stored form */
    uint64_t decode;      /* trainable: the largest decoded extent (its tensors are widened from there) */
    int has_lz4;
} sizes;

struct tt_stream {
    tt_plan plan;
    tier_store *s;
    tt_trace *trace;
    tt_topo *topo;
    void *dev_base, *host_base;
    size_t dev_len, host_len;
    int host_registered;
    tt_arena *dev, *host;
    const void *embed, *head_ext, *head_norm; /* the fixed extents (stream_embed, stream_head) */
    uint32_t embed_dtype;
    regions r;
    sizes sz;
    slot *slots;
    tt_queue *h2d, *d2h, *up; /* layer loads, spills, unspills; NULL where the backend has no queues */
    tt_event *stage_ev[3];    /* the last copy out of each staging buffer ([0], [1]) and the decode buffer ([2]) */
    int stage_next;           /* IO thread: the staging buffer of the next read */
    tt_event **buf_ev;        /* [dev_cells + PLAN_TRANSIT]: the last use of r.cell_buf[i] */
    int drop_wait;            /* test only, TT_TEST_DROP_WAIT: DROP_SLOT (=slot) loads skip the slot's done
                               * event, DROP_DECODE (=decode) a decode skips the wait for the last copy out of
                               * the decode buffer */
    void **free_bufs;
    int n_free;
    cell *cells;
    int *cached;              /* host cache holds layer l */
    tt_event **wb_ev;         /* [L] req.trainable: the last write-back of layer l into the host cache */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t io_th, copy_th;
    int threads_started;      /* bit 0: io_th, bit 1: copy_th running (joined by stream_free) */
    queue ioq, cpq;
    int stop;
    int io_rc;
    char io_msg[1024];
    uring_reader *reader;
    uint64_t io_bytes;
    int L, K;
    int *access;              /* 2L: forward then backward layer order */
    int (*reads)[3];          /* the step's cell reads in order (l, k, phase needed), for unspill prefetch */
    int n_reads, next_read, cur_read, unspill_inflight;
    int copies_inflight;      /* spill/unspill commands queued or running */
};

/* ---- small helpers ---------------------------------------------------------- */

static void queue_init(queue *q, int most) {
    q->cap = most + 1;
    q->c = tt_xcalloc((size_t)q->cap, sizeof *q->c);
}
static void qpush(queue *q, cmd c) {
    TT_ASSERT((q->tail + 1) % q->cap != q->head);
    q->c[q->tail] = c;
    q->tail = (q->tail + 1) % q->cap;
}
static int qpop(queue *q, cmd *c) {
    if (q->head == q->tail) return 0;
    *c = q->c[q->head];
    q->head = (q->head + 1) % q->cap;
    return 1;
}

static void rec(tt_stream *e, int track, const char *name, int64_t arg, double t0) {
    if (e->trace) trace_add(e->trace, track, name, arg, t0, tt_now());
}

static cell *cell_at(tt_stream *e, int l, int k) {
    TT_ASSERT(l >= 1 && l <= e->L && k >= 0 && k < e->K);
    return &e->cells[(size_t)l * e->K + k];
}

/* The event of activation buffer b (one of r.cell_buf). */
static tt_event *buf_ev(tt_stream *e, const void *b) {
    for (int i = 0; i < e->plan.dev_cells + PLAN_TRANSIT; i++)
        if (e->r.cell_buf[i] == b) return e->buf_ev[i];
    TT_ASSERT(!"not an activation buffer");
    return NULL;
}

static int cell_home(const tt_plan *p, int L, int l, int k) {
    int from_top = (L - l) * p->req.K + k; /* the last layers' activations are needed first in backward */
    return from_top < p->dev_cells ? CELL_DEV : CELL_HOST;
}

/* ---- carving (shared with the planner) ------------------------------------- */

uint64_t stream_master_layout(const tier_store *s, int l, uint64_t *offs) {
    const tier_extent *x = tier_extent_at(s, TT_EXTENT_LAYER(l));
    uint64_t at = 0;
    for (uint32_t i = 0; i < x->n_tensors; i++) {
        const tier_tensor *t = tier_tensor_at(s, x->first_tensor + i);
        if (offs) offs[i] = at;
        at += tt_align_up(t->rows * t->cols * 4, 256);
    }
    return at;
}

/* The bytes layer l takes in a slot and in the host cache: its decoded extent, or (trainable) its master. */
static uint64_t layer_bytes(const tier_store *s, const tt_plan *p, int l) {
    return p->req.trainable ? stream_master_layout(s, l, NULL) : tier_extent_at(s, TT_EXTENT_LAYER(l))->raw;
}

static void region_sizes(const tier_store *s, const tt_plan *p, sizes *z) {
    const tt_config *cfg = tier_config(s);
    memset(z, 0, sizeof *z);
    for (uint32_t l = 0; l < cfg->n_layers; l++) {
        const tier_extent *x = tier_extent_at(s, TT_EXTENT_LAYER(l));
        uint64_t lb = layer_bytes(s, p, (int)l);
        if (lb > z->slot) z->slot = lb;
        if (p->req.trainable && x->raw > z->decode) z->decode = x->raw;
        if (x->stored > z->stage) z->stage = x->stored;
        if (x->codec != TIER_CODEC_RAW) z->has_lz4 = 1;
    }
    z->stage_layer = tt_align_up(z->stage, UR_ALIGN);
    const tier_extent *h = tier_extent_at(s, TT_EXTENT_HEAD(cfg)), *em = tier_extent_at(s, TT_EXTENT_EMBED(cfg));
    /* the head passes through staging only on its way to the device (streamed, it is read into its own host
     * region), the embedding only when it must be decompressed */
    if (p->head_on_device && h->stored > z->stage) z->stage = h->stored;
    if (em->stored > z->stage && em->codec != TIER_CODEC_RAW) z->stage = em->stored;
    z->slot = tt_align_up(z->slot, 256);
    z->stage = tt_align_up(z->stage, UR_ALIGN);
    z->embed = tt_align_up(em->raw, UR_ALIGN);
    z->head = tt_align_up(h->raw, UR_ALIGN);
    z->cell = (uint64_t)p->req.B * p->req.seq * cfg->hidden * be_elem_size(p->req.act_bf16 ? BE_BF16 : BE_REAL);
}

static void *arena_fn(void *ctx, size_t bytes, const char *label) { return arena_alloc(ctx, bytes, label); }
/* The user's host regions in whole O_DIRECT blocks: the staging buffer after them stays aligned for io_uring. */
static void *arena_fn_blocks(void *ctx, size_t bytes, const char *label) {
    return arena_alloc(ctx, tt_align_up(bytes, UR_ALIGN), label);
}

/* Carves every region of plan p, in one fixed order, from dev and host: the
 * user's (the step loop's owner) first, then the runtime's. With e == NULL
 * the arenas are measuring ones and nothing is kept. */
static int carve(const tier_store *s, const tt_plan *p, tt_arena *dev, tt_arena *host, tt_stream *e, void *keep) {
    const tt_config *cfg = tier_config(s);
    int L = (int)cfg->n_layers, K = p->req.K;
    sizes z;
    region_sizes(s, p, &z);
    tt_alloc da = {arena_fn, dev, e == NULL}, ha = {arena_fn_blocks, host, e == NULL};
    TT_ASSERT(p->req.user.carve);
    int rc = p->req.user.carve(&p->req.user, s, p, &da, &ha, e ? keep : NULL);
    if (rc) return rc;
    regions *r = e ? &e->r : NULL;
    for (int i = 0; i < p->slots; i++) {
        void *b = arena_alloc(dev, z.slot, "layer slots");
        if (r) r->slot_buf[i] = b;
    }
    void *hd = arena_alloc(dev, p->head_on_device ? z.head : 4u * cfg->hidden,
                           p->head_on_device ? "head (final norm + lm_head)" : "final norm");
    if (r) r->head = hd;
    for (int i = 0; i < p->dev_cells + PLAN_TRANSIT; i++) {
        void *b = arena_alloc(dev, z.cell, p->req.act_bf16 ? "activation cells (bf16)" : "activation cells");
        if (r) r->cell_buf[i] = b;
    }
    void *st = arena_alloc(host, z.stage, "staging (NVMe reads)");
    /* a second one, for the next layer's read while the last one's copy to the device runs (without a host
     * cache: with one, the copy is from the cache) */
    void *st2 = p->host_cache ? NULL : arena_alloc(host, z.stage_layer, "staging (NVMe reads)");
    void *em = arena_alloc(host, z.embed, "embedding");
    void *hh = p->head_on_device ? NULL : arena_alloc(host, z.head, "head (lm_head streamed)");
    void *dc = p->req.trainable ? arena_alloc(host, tt_align_up(z.decode, 256), "decode (widened to f32 from here)")
               : z.has_lz4 && !p->host_cache ? arena_alloc(host, z.slot, "lz4 decode") : NULL;
    if (r) { r->staging = st; r->staging2 = st2; r->embed = em; r->head_host = hh; r->decode = dc; }
    for (int l = 1; l <= L; l++)
        for (int k = 0; k < K; k++) {
            int spilled = !p->req.forward_only && cell_home(p, L, l, k) == CELL_HOST; /* generation: no cells */
            void *b = spilled ? arena_alloc(host, z.cell, "spilled activations") : NULL;
            if (r) r->cell_host[(size_t)l * K + k] = b;
        }
    for (int l = 0; p->host_cache && l < L; l++) { /* each layer its own size (pruned layers are far smaller) */
        void *b = arena_alloc(host, tt_align_up(layer_bytes(s, p, l), 256),
                              p->req.trainable ? "layer cache (f32 master weights)" : "layer cache");
        if (r) r->cache[l] = b;
    }
    return 0;
}

void stream_measure(const tier_store *s, const tt_plan *p, tt_arena *dev, tt_arena *host) {
    int rc = carve(s, p, dev, host, NULL, NULL);
    TT_ASSERT(rc == 0);
}

/* ---- the IO thread: layer loads --------------------------------------------- */

static void io_fail(tt_stream *e, int rc, const char *msg) {
    pthread_mutex_lock(&e->mu);
    if (!e->io_rc) {
        e->io_rc = rc;
        snprintf(e->io_msg, sizeof e->io_msg, "%s", msg);
    }
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

/* Reads extent x of the store into dst (host, registered), checks it. */
static int read_checked(tt_stream *e, uint32_t ext, uint8_t *dst, int64_t arg) {
    const tier_extent *x = tier_extent_at(e->s, ext);
    double t0 = tt_now();
    int rc = uring_reader_read(e->reader, dst, x->offset, tt_align_up(x->stored, UR_ALIGN));
    if (rc == 0) rc = tier_extent_check(e->s, ext, dst);
    rec(e, TRACE_IO, "read", arg, t0);
    if (rc == 0) {
        pthread_mutex_lock(&e->mu);
        e->io_bytes += tt_align_up(x->stored, UR_ALIGN);
        pthread_mutex_unlock(&e->mu);
    }
    return rc;
}

/* IO thread: the decode buffer is about to be rewritten: its last copy to the device (queued behind the
 * compute queue's release of a slot) must have left it. Waiting here, not after queuing that copy, lets
 * the next layer's read into a staging buffer run while the copy waits. */
static void decode_buf_wait(tt_stream *e) {
    if (e->drop_wait != DROP_DECODE) be_event_sync(e->stage_ev[2]);
}

/* Brings layer l's raw extent to host memory: the cache, or a staging buffer
 * (the two alternate; *st says which, -1: none) or the decode buffer. */
static int layer_to_host(tt_stream *e, int l, const uint8_t **raw, int *st) {
    uint32_t ext = TT_EXTENT_LAYER(l);
    const tier_extent *x = tier_extent_at(e->s, ext);
    *st = -1;
    if (e->plan.host_cache && e->cached[l]) {
        *raw = e->r.cache[l];
        return 0;
    }
    int i = e->r.staging2 ? e->stage_next : 0;
    e->stage_next ^= 1;
    uint8_t *stage = i ? e->r.staging2 : e->r.staging;
    be_event_sync(e->stage_ev[i]); /* its last copy to the device has left it */
    int rc = read_checked(e, ext, stage, l);
    if (rc) return rc;
    if (e->wb_ev) { /* trainable: decode, then widen every tensor to f32 at its master offset in the cache */
        const uint8_t *raw_ext = stage;
        if (x->codec != TIER_CODEC_RAW) {
            decode_buf_wait(e);
            if ((rc = tier_extent_decode(e->s, ext, stage, e->r.decode))) return rc;
            raw_ext = e->r.decode;
        }
        uint64_t offs[64];
        TT_ASSERT(x->n_tensors <= 64);
        stream_master_layout(e->s, l, offs);
        for (uint32_t j = 0; j < x->n_tensors; j++) {
            const tier_tensor *t = tier_tensor_at(e->s, x->first_tensor + j);
            float *dst = (float *)(e->r.cache[l] + offs[j]);
            const uint8_t *src = raw_ext + t->offset;
            uint64_t n = t->rows * t->cols;
            if (t->dtype == TT_DTYPE_F32) memcpy(dst, src, n * 4);
            else if (t->dtype == TT_DTYPE_BF16)
                for (uint64_t v = 0; v < n; v++) dst[v] = bf16_to_f32(((const uint16_t *)src)[v]);
            else return TT_FAIL(-EINVAL, "%s: %s is %s; full training needs f32 or bf16 weights", tier_path(e->s),
                                t->name, dtype_name(t->dtype));
        }
        e->cached[l] = 1;
        *raw = e->r.cache[l];
        return 0;
    }
    uint8_t *out = e->plan.host_cache ? e->r.cache[l] : (x->codec == TIER_CODEC_RAW ? stage : e->r.decode);
    if (out == stage) *st = i;
    else {
        if (out == e->r.decode) decode_buf_wait(e);
        double t0 = tt_now();
        rc = tier_extent_decode(e->s, ext, stage, out);
        rec(e, x->codec == TIER_CODEC_RAW ? TRACE_COPY : TRACE_DECOMPRESS,
            x->codec == TIER_CODEC_RAW ? "to cache" : "lz4", l, t0);
        if (rc) return rc;
    }
    if (e->plan.host_cache) e->cached[l] = 1;
    *raw = out;
    return 0;
}

static void *io_main(void *arg) {
    tt_stream *e = arg;
    if (e->topo) topo_pin_thread(e->topo, topo_io_core(e->topo)); /* best effort */
    for (;;) {
        cmd c;
        pthread_mutex_lock(&e->mu);
        while (!e->stop && !qpop(&e->ioq, &c)) pthread_cond_wait(&e->cv, &e->mu);
        int stop = e->stop, failed = e->io_rc != 0;
        pthread_mutex_unlock(&e->mu);
        if (stop) break;
        if (failed) continue; /* drain: the step is failing */
        const uint8_t *raw = NULL;
        int st;
        int rc = layer_to_host(e, c.layer, &raw, &st);
        if (rc) {
            io_fail(e, rc, tt_lasterr());
            continue;
        }
        slot *sl = &e->slots[c.slot];
        if (e->drop_wait != DROP_SLOT) be_queue_wait(e->h2d, sl->done); /* the compute queue is done with what it held */
        /* full training: the cache holds the layer's last update (the slot's done event covers it only when the
         * layer comes back into the slot it left) */
        if (e->wb_ev) be_queue_wait(e->h2d, e->wb_ev[c.layer]);
        tt_span sp = trace_span_begin(e->trace, e->h2d); /* when the copy runs (device time where there is one) */
        be_copy_async(sl->buf, raw, layer_bytes(e->s, &e->plan, c.layer), BE_H2D, e->h2d);
        trace_span_end(e->trace, sp, e->h2d, TRACE_COPY, "to device", c.layer);
        be_event_record(sl->ready, e->h2d);
        if (st >= 0) be_event_record(e->stage_ev[st], e->h2d); /* the read after next waits for it */
        else if (raw == e->r.decode) be_event_record(e->stage_ev[2], e->h2d); /* the next decode waits for it */
        pthread_mutex_lock(&e->mu);
        e->slots[c.slot].state = SLOT_READY;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
    }
    return NULL;
}

/* ---- the copy thread: activation spills ------------------------------------- */

static void buf_free_locked(tt_stream *e, void *b);

static void *copy_main(void *arg) {
    tt_stream *e = arg;
    if (e->topo) topo_pin_thread(e->topo, topo_io_core(e->topo));
    size_t bytes = e->sz.cell;
    for (;;) {
        cmd c;
        pthread_mutex_lock(&e->mu);
        while (!e->stop && !qpop(&e->cpq, &c)) pthread_cond_wait(&e->cv, &e->mu);
        int stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        if (stop) break;
        cell *x = cell_at(e, c.l, c.k);
        tt_event *ev = buf_ev(e, c.buf);
        tt_queue *q = c.kind == CMD_SPILL ? e->d2h : e->up; /* not behind a layer load's wait on the compute queue */
        be_queue_wait(q, ev); /* spill: the value was computed; unspill: the buffer's last use is over */
        tt_span sp = trace_span_begin(e->trace, q);
        if (c.kind == CMD_SPILL) be_copy_async(x->host, c.buf, bytes, BE_D2H, q);
        else be_copy_async(c.buf, x->host, bytes, BE_H2D, q);
        trace_span_end(e->trace, sp, q, TRACE_SPILL, c.kind == CMD_SPILL ? "spill" : "unspill", c.l);
        be_event_record(ev, q);
        be_event_sync(ev); /* the host copy is complete (the copy thread works one command at a time) */
        pthread_mutex_lock(&e->mu);
        if (c.kind == CMD_SPILL) {
            x->spilling--;
            buf_free_locked(e, c.buf); /* the device copy is no longer needed */
        } else {
            x->unspilling = 0;
            x->dev = c.buf;
            e->unspill_inflight--;
        }
        e->copies_inflight--;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
    }
    return NULL;
}

/* ---- activation buffers and cells (compute thread; lock held inside) ------- */

/* A free activation buffer for the compute queue (which waits for its last use). */
void *stream_buf_get(tt_stream *e) {
    pthread_mutex_lock(&e->mu);
    while (e->n_free == 0) pthread_cond_wait(&e->cv, &e->mu); /* a spill in flight will return one */
    void *b = e->free_bufs[--e->n_free];
    pthread_mutex_unlock(&e->mu);
    be_queue_wait(NULL, buf_ev(e, b));
    return b;
}

/* Back to the free list; the caller recorded b's event after its last use. */
static void buf_free_locked(tt_stream *e, void *b) {
    TT_ASSERT(e->n_free < e->plan.dev_cells + PLAN_TRANSIT);
    e->free_bufs[e->n_free++] = b;
}
/* The compute thread is done with b: after the ops issued so far. */
static void buf_put_locked(tt_stream *e, void *b) {
    be_event_record(buf_ev(e, b), NULL);
    buf_free_locked(e, b);
}

/* Starts unspills for the next host-cell reads of the step, in order, as soon
 * as the value they need has been stored (a read of a gradient must not
 * fetch the checkpoint it replaces). At most PLAN_UNSPILL_AHEAD reads ahead:
 * an unspilled copy holds its buffer until its read, and the free buffers are
 * also the ones the dev cells not yet stored will take (a prefetch that ran
 * further, into the backward pass's reads, kept them from the forward pass,
 * which then waited for a buffer forever). */
static void prefetch_unspills_locked(tt_stream *e) {
    while (e->next_read < e->n_reads && e->next_read < e->cur_read + PLAN_UNSPILL_AHEAD &&
           e->unspill_inflight < PLAN_UNSPILL_AHEAD && e->n_free > 3) {
        int l = e->reads[e->next_read][0], k = e->reads[e->next_read][1], phase = e->reads[e->next_read][2];
        cell *x = cell_at(e, l, k);
        if (x->home == CELL_HOST && x->phase < phase) break; /* not produced yet */
        e->next_read++;
        if (x->home != CELL_HOST || x->dev || x->unspilling) continue;
        x->unspilling = 1;
        e->unspill_inflight++;
        qpush(&e->cpq, (cmd){CMD_UNSPILL, 0, 0, l, k, e->free_bufs[--e->n_free]});
        e->copies_inflight++;
    }
    pthread_cond_broadcast(&e->cv);
}

/* The device copy of cell (l, k), unspilling it now if no prefetch did. */
void *stream_cell_get(tt_stream *e, int l, int k) {
    cell *x = cell_at(e, l, k);
    /* the reads list follows exactly this order of stream_cell_get calls */
    TT_ASSERT(e->cur_read < e->n_reads && e->reads[e->cur_read][0] == l && e->reads[e->cur_read][1] == k);
    e->cur_read++;
    if (e->next_read < e->cur_read) e->next_read = e->cur_read; /* never prefetch a read already done */
    if (x->home == CELL_DEV) {
        TT_ASSERT(x->dev);
        return x->dev;
    }
    pthread_mutex_lock(&e->mu);
    if (!x->dev && !x->unspilling) {
        while (e->n_free == 0) pthread_cond_wait(&e->cv, &e->mu);
        x->unspilling = 1;
        e->unspill_inflight++;
        qpush(&e->cpq, (cmd){CMD_UNSPILL, 0, 0, l, k, e->free_bufs[--e->n_free]});
        e->copies_inflight++;
        pthread_cond_broadcast(&e->cv);
    }
    while (x->unspilling) pthread_cond_wait(&e->cv, &e->mu);
    prefetch_unspills_locked(e);
    void *b = x->dev;
    pthread_mutex_unlock(&e->mu);
    be_queue_wait(NULL, buf_ev(e, b)); /* the unspill's copy */
    return b;
}

/* Stores b (device) as the value of cell (l, k): kept (dev cell) or spilled. */
void stream_cell_put(tt_stream *e, int l, int k, void *b) {
    cell *x = cell_at(e, l, k);
    pthread_mutex_lock(&e->mu);
    x->phase++;
    if (x->home == CELL_DEV) {
        if (x->dev) buf_put_locked(e, x->dev);
        x->dev = b;
    } else {
        if (x->dev) { buf_put_locked(e, x->dev); x->dev = NULL; }
        be_event_record(buf_ev(e, b), NULL); /* the spill waits for the value */
        x->spilling++;
        qpush(&e->cpq, (cmd){CMD_SPILL, 0, 0, l, k, b});
        e->copies_inflight++;
    }
    prefetch_unspills_locked(e);
    pthread_mutex_unlock(&e->mu);
}

/* Done with the device copy of cell (l, k) for now (a host cell's copy is
 * dropped; a dev cell keeps its value unless drop). */
void stream_cell_done(tt_stream *e, int l, int k, int drop) {
    cell *x = cell_at(e, l, k);
    pthread_mutex_lock(&e->mu);
    if ((x->home == CELL_HOST || drop) && x->dev) {
        buf_put_locked(e, x->dev);
        x->dev = NULL;
    }
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

/* ---- layer slots ------------------------------------------------------------ */

/* Next position >= from (in a repeating 2L access sequence) using layer l. */
static int next_use(const tt_stream *e, int l, int from) {
    for (int d = 0; d < 4 * e->L; d++)
        if (e->access[(from + d) % (2 * e->L)] == l) return from + d;
    return from + 4 * e->L;
}

static int slot_of_locked(const tt_stream *e, int l) {
    for (int i = 0; i < e->plan.slots; i++)
        if (e->slots[i].layer == l) return i;
    return -1;
}

/* Issues loads for the layers needed at positions pos .. pos+prefetch that
 * are not in a slot, evicting the layer needed furthest in the future. */
static void schedule_loads_locked(tt_stream *e, int pos) {
    for (int d = 0; d <= e->plan.prefetch; d++) {
        int l = e->access[(pos + d) % (2 * e->L)];
        if (slot_of_locked(e, l) >= 0) continue;
        int victim = -1, best = -1;
        for (int i = 0; i < e->plan.slots; i++) {
            slot *sl = &e->slots[i];
            if (sl->busy || sl->state == SLOT_LOADING) continue;
            if (sl->layer < 0) { victim = i; break; }
            int nu = next_use(e, sl->layer, pos);
            if (nu <= pos + d) continue; /* needed sooner than the layer we would load */
            if (nu > best) { best = nu; victim = i; }
        }
        if (victim < 0) return;
        slot *v = &e->slots[victim];
        v->layer = l;
        v->state = SLOT_LOADING;
        v->busy = 0;
        qpush(&e->ioq, (cmd){CMD_LOAD, l, victim, 0, 0, NULL});
    }
    pthread_cond_broadcast(&e->cv);
}

int stream_acquire(tt_stream *e, int l, int pos, const void **ext) {
    pthread_mutex_lock(&e->mu);
    schedule_loads_locked(e, pos);
    int i;
    for (;;) {
        i = slot_of_locked(e, l);
        if (e->io_rc) break;
        if (i >= 0 && e->slots[i].state == SLOT_READY) break;
        if (i < 0) schedule_loads_locked(e, pos);
        pthread_cond_wait(&e->cv, &e->mu);
    }
    int rc = e->io_rc;
    if (rc) {
        tt_seterr("%s", e->io_msg);
        pthread_mutex_unlock(&e->mu);
        return rc;
    }
    e->slots[i].busy = 1;
    tt_event *ready = e->slots[i].ready;
    pthread_mutex_unlock(&e->mu);
    be_queue_wait(NULL, ready); /* the layer's ops follow its copy */
    *ext = e->slots[i].buf;
    return 0;
}

void stream_release(tt_stream *e, int l, int next_pos) {
    pthread_mutex_lock(&e->mu);
    int i = slot_of_locked(e, l);
    TT_ASSERT(i >= 0);
    be_event_record(e->slots[i].done, NULL); /* a load into it waits for the ops issued so far */
    e->slots[i].busy = 0;
    schedule_loads_locked(e, next_pos);
    pthread_mutex_unlock(&e->mu);
}

/* ---- creation ---------------------------------------------------------------- */

static int load_fixed_extents(tt_stream *e) {
    const tt_config *c = tier_config(e->s);
    /* the embedding stays on the host */
    uint32_t ext = TT_EXTENT_EMBED(c);
    const tier_extent *x = tier_extent_at(e->s, ext);
    int rc = read_checked(e, ext, x->codec == TIER_CODEC_RAW ? e->r.embed : e->r.staging, -1);
    if (rc) return rc;
    if (x->codec != TIER_CODEC_RAW && (rc = tier_extent_decode(e->s, ext, e->r.staging, e->r.embed))) return rc;
    const tier_tensor *t = tier_tensor_at(e->s, x->first_tensor);
    e->embed = e->r.embed + t->offset;
    e->embed_dtype = t->dtype;
    /* the head: on the device, or on the host with its norm copied to the device */
    ext = TT_EXTENT_HEAD(c);
    x = tier_extent_at(e->s, ext);
    uint8_t *host = e->plan.head_on_device ? e->r.staging : e->r.head_host;
    rc = read_checked(e, ext, host, -1);
    if (rc) return rc;
    if (e->plan.head_on_device) {
        be_to_device(e->r.head, host, x->raw);
        e->head_ext = e->r.head;
        e->head_norm = NULL;
    } else {
        const tier_tensor *norm = tier_tensor_at(e->s, x->first_tensor);
        be_to_device(e->r.head, host + norm->offset, 4u * c->hidden);
        e->head_ext = host;
        e->head_norm = e->r.head; /* the norm is read on the device: its device copy */
    }
    return 0;
}

void stream_free(tt_stream *e) {
    if (!e) return;
    if (e->threads_started) {
        pthread_mutex_lock(&e->mu);
        e->stop = 1;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
        if (e->threads_started & 1) pthread_join(e->io_th, NULL);
        if (e->threads_started & 2) pthread_join(e->copy_th, NULL);
    }
    be_synchronize(); /* nothing still reads or writes what is freed below */
    for (int i = 0; e->slots && i < e->plan.slots; i++) {
        be_event_free(e->slots[i].ready);
        be_event_free(e->slots[i].done);
    }
    for (int i = 0; e->buf_ev && i < e->plan.dev_cells + PLAN_TRANSIT; i++) be_event_free(e->buf_ev[i]);
    free(e->buf_ev);
    for (int i = 0; i < 3; i++) be_event_free(e->stage_ev[i]);
    for (int l = 0; e->wb_ev && l < e->L; l++) be_event_free(e->wb_ev[l]);
    free(e->wb_ev);
    be_queue_free(e->h2d);
    be_queue_free(e->d2h);
    be_queue_free(e->up);
    uring_reader_close(e->reader);
    if (e->dev) arena_free(e->dev);
    if (e->host) arena_free(e->host);
    be_free(e->dev_base);
    if (e->host_registered) be_host_unregister(e->host_base);
    if (e->host_base) munmap(e->host_base, e->host_len);
    tier_close(e->s);
    topo_free(e->topo);
    free(e->r.slot_buf); free(e->r.cell_buf); free(e->r.cell_host); free(e->r.cache);
    free(e->ioq.c); free(e->cpq.c);
    free(e->slots); free(e->free_bufs); free(e->cells); free(e->cached); free(e->access); free(e->reads);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

int stream_create(tt_stream **out, const tier_store *store, const tt_plan *plan, void *keep, tt_trace *trace) {
    *out = NULL;
    tt_stream *e = tt_xcalloc(1, sizeof *e);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->plan = *plan;
    e->trace = trace;
    int rc = tier_reopen(&e->s, store);
    if (rc) { stream_free(e); return rc; }
    const tt_config *c = tier_config(e->s);
    e->L = (int)c->n_layers;
    e->K = plan->req.K;
    region_sizes(e->s, plan, &e->sz);
    int L = e->L, K = e->K, pool = plan->dev_cells + PLAN_TRANSIT;
    e->r.slot_buf = tt_xcalloc((size_t)plan->slots, sizeof *e->r.slot_buf);
    e->r.cell_buf = tt_xcalloc((size_t)pool, sizeof *e->r.cell_buf);
    e->r.cell_host = tt_xcalloc((size_t)(L + 1) * K, sizeof *e->r.cell_host);
    e->r.cache = tt_xcalloc((size_t)L, sizeof *e->r.cache);
    e->slots = tt_xcalloc((size_t)plan->slots, sizeof *e->slots);
    e->free_bufs = tt_xcalloc((size_t)pool, sizeof *e->free_bufs);
    queue_init(&e->ioq, plan->slots);
    queue_init(&e->cpq, pool);
    e->cells = tt_xcalloc((size_t)(L + 1) * K, sizeof *e->cells);
    e->cached = tt_xcalloc((size_t)L, sizeof *e->cached);
    e->access = tt_xcalloc(2 * (size_t)L, sizeof *e->access);
    e->reads = tt_xcalloc(4 * (size_t)(L + 1) * K + 1, sizeof *e->reads);
    for (int l = 0; l < L; l++) { e->access[l] = l; e->access[L + l] = plan->req.forward_only ? l : L - 1 - l; }

    /* Both arenas, reserved once: exactly what the plan measured. */
    e->dev_len = plan->dev_bytes;
    e->dev_base = be_alloc(e->dev_len);
    if (!e->dev_base) {
        const uint64_t gpu = be_dev_avail(); /* a GPU: its memory, not this process's limits, refused it */
        char g[32], gs[96];
        if (gpu) snprintf(gs, sizeof gs, ": the GPU can give %s now (as an --hbm); lower --hbm", tt_fmt_bytes(gpu, g, sizeof g));
        rc = TT_FAIL(-ENOMEM, "cannot reserve the device arena of %llu bytes (--hbm)%s", (unsigned long long)e->dev_len,
                     gpu ? gs : tt_reserve_hint());
        stream_free(e);
        return rc;
    }
    e->host_len = tt_align_up(plan->host_bytes ? plan->host_bytes : 1, UR_ALIGN);
    /* populated now, as pinned memory is: no page faults inside the step loop */
    e->host_base = mmap(NULL, e->host_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (e->host_base == MAP_FAILED) {
        e->host_base = NULL;
        rc = TT_FAIL(-ENOMEM, "cannot reserve the host arena of %llu bytes (--host)%s", (unsigned long long)e->host_len,
                     tt_reserve_hint());
        stream_free(e);
        return rc;
    }
    if (be_host_register(e->host_base, e->host_len)) { /* pinned for the device's copies (CUDA) */
        rc = TT_FAIL(-ENOMEM, "%s", tt_lasterr());
        stream_free(e);
        return rc;
    }
    e->host_registered = 1;
    e->dev = arena_wrap("device", e->dev_base, e->dev_len);
    e->host = arena_wrap("host", e->host_base, e->host_len);
    rc = carve(e->s, plan, e->dev, e->host, e, keep);
    if (rc) { stream_free(e); return rc; }
    for (int i = 0; i < plan->slots; i++)
        e->slots[i] = (slot){-1, SLOT_EMPTY, 0, e->r.slot_buf[i], be_event_new(), be_event_new()};
    e->buf_ev = tt_xcalloc((size_t)pool, sizeof *e->buf_ev);
    for (int i = 0; i < pool; i++) {
        e->buf_ev[i] = be_event_new();
        e->free_bufs[e->n_free++] = e->r.cell_buf[i];
    }
    e->h2d = be_queue_new();
    e->d2h = be_queue_new();
    e->up = be_queue_new();
    for (int i = 0; i < 3; i++) e->stage_ev[i] = be_event_new();
    const char *dw = getenv("TT_TEST_DROP_WAIT");
    e->drop_wait = !dw ? DROP_NONE : strcmp(dw, "slot") == 0 ? DROP_SLOT : strcmp(dw, "decode") == 0 ? DROP_DECODE
                                                                                                     : DROP_NONE;
    for (int l = 1; l <= L; l++)
        for (int k = 0; k < K; k++) {
            cell *x = cell_at(e, l, k);
            x->home = cell_home(plan, L, l, k);
            x->host = e->r.cell_host[(size_t)l * K + k];
        }
    /* The IO engine: O_DIRECT reads into the registered host arena. */
    uring_opts uo;
    uring_opts_default(&uo);
    rc = uring_reader_reopen(&e->reader, tier_fd(e->s), tier_path(e->s), &uo);
    if (rc == 0) rc = uring_reader_register_or_plain(e->reader, e->host_base, e->host_len);
    if (rc == 0) rc = load_fixed_extents(e);
    if (rc == 0 && plan->req.trainable) { /* every layer into the host cache now: the master weights */
        TT_ASSERT(plan->host_cache);
        e->wb_ev = tt_xcalloc((size_t)L, sizeof *e->wb_ev);
        for (int l = 0; l < L && rc == 0; l++) {
            const uint8_t *raw;
            int st;
            e->wb_ev[l] = be_event_new();
            rc = layer_to_host(e, l, &raw, &st);
        }
    }
    if (rc) { stream_free(e); return rc; }
    if (topo_init(&e->topo) != 0) e->topo = NULL;
    int err = pthread_create(&e->io_th, NULL, io_main, e);
    if (err == 0) e->threads_started |= 1;
    if (err == 0 && (err = pthread_create(&e->copy_th, NULL, copy_main, e)) == 0) e->threads_started |= 2;
    if (err) { /* out of threads (ulimit -u) or room for stacks (ulimit -v): the started one is stopped, joined */
        rc = TT_FAIL(-err, "cannot start the threads that stream %s: %s%s", tier_path(e->s), strerror(err),
                     tt_thread_start_hint(err));
        stream_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

const tier_store *stream_store(const tt_stream *e) { return e->s; }
const void *stream_embed(const tt_stream *e, uint32_t *dtype) {
    *dtype = e->embed_dtype;
    return e->embed;
}
const void *stream_head(const tt_stream *e, const void **norm_dev) {
    *norm_dev = e->head_norm;
    return e->head_ext;
}
uint64_t stream_dev_peak(const tt_stream *e) { return arena_peak(e->dev); }
uint64_t stream_host_peak(const tt_stream *e) { return arena_peak(e->host); }
uint64_t stream_io_bytes(const tt_stream *e) {
    pthread_mutex_lock((pthread_mutex_t *)&e->mu);
    uint64_t b = e->io_bytes;
    pthread_mutex_unlock((pthread_mutex_t *)&e->mu);
    return b;
}
void stream_inject_io_fault(tt_stream *e, uint64_t nth, int err) { uring_reader_inject_fault(e->reader, nth, err); }

/* ---- one step ---------------------------------------------------------------- */

/* The order in which the step reads host cells (for unspill prefetch). */
static void plan_reads(tt_stream *e, int backward) {
    int L = e->L, K = e->K, n = 0;
#define READ(l_, k_, ph_) (e->reads[n][0] = (l_), e->reads[n][1] = (k_), e->reads[n][2] = (ph_), n++)
    for (int l = 1; l < L; l++)
        for (int k = 0; k < K; k++) READ(l, k, 1);
    for (int k = 0; k < K; k++) READ(L, k, 1);
    if (backward)
        for (int l = L - 1; l >= 0; l--)
            for (int k = 0; k < K; k++) {
                if (l > 0) READ(l, k, 1);
                READ(l + 1, k, 2);
            }
#undef READ
    e->n_reads = n;
    e->next_read = e->cur_read = 0;
    for (int l = 1; l <= L; l++)
        for (int k = 0; k < K; k++) cell_at(e, l, k)->phase = 0;
}

void stream_begin(tt_stream *e, int backward) {
    plan_reads(e, backward);
    pthread_mutex_lock(&e->mu);
    prefetch_unspills_locked(e);
    pthread_mutex_unlock(&e->mu);
}

/* Waits until no spill or unspill is queued or running; then every
 * activation buffer must be back in the free list (nothing leaked). */
void stream_end(tt_stream *e) {
    pthread_mutex_lock(&e->mu);
    while (e->copies_inflight > 0) pthread_cond_wait(&e->cv, &e->mu);
    for (int l = 1; l <= e->L; l++)
        for (int k = 0; k < e->K; k++) {
            cell *x = cell_at(e, l, k);
            if (x->dev) { buf_put_locked(e, x->dev); x->dev = NULL; } /* eval leaves nothing; a failed step may */
        }
    TT_ASSERT(e->n_free == e->plan.dev_cells + PLAN_TRANSIT);
    pthread_mutex_unlock(&e->mu);
}


void stream_writeback(tt_stream *e, int l) {
    TT_ASSERT(e->wb_ev && l >= 0 && l < e->L && e->cached[l]);
    pthread_mutex_lock(&e->mu);
    int i = slot_of_locked(e, l);
    TT_ASSERT(i >= 0 && e->slots[i].busy);
    void *src = e->slots[i].buf;
    pthread_mutex_unlock(&e->mu);
    double t0 = tt_now();
    be_copy_async(e->r.cache[l], src, stream_master_layout(e->s, l, NULL), BE_D2H, NULL);
    be_event_record(e->wb_ev[l], NULL);
    rec(e, TRACE_COPY, "write-back", l, t0);
}

void *stream_layer_host(tt_stream *e, int l) {
    TT_ASSERT(e->wb_ev && l >= 0 && l < e->L && e->cached[l]);
    return e->r.cache[l];
}

int stream_io_pass(tt_stream *e) {
    for (int pos = 0; pos < 2 * e->L; pos++) {
        const void *ext;
        int l = e->access[pos], rc = stream_acquire(e, l, pos, &ext);
        if (rc) return rc;
        stream_release(e, l, pos + 1);
    }
    return 0;
}

void stream_buf_put(tt_stream *e, void *b) {
    pthread_mutex_lock(&e->mu);
    buf_put_locked(e, b);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}
