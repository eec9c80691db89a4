/* sched/stream.h — the weight provider and the activation store: what the
 * step loop (core/exec.c) streams through (DESIGN.md, "The streaming step
 * loop" and "Asynchrony").
 *
 * - Two arenas are reserved once: the device arena of exactly plan->dev_bytes
 *   (<= --hbm) and the pinned host arena (<= --host, anonymous mmap registered
 *   with io_uring and the backend). The step loop's owner carves its regions
 *   first (plan->req.user), then every region of the runtime follows.
 * - Weight provider: stream_acquire(l) returns layer l's device slot, loading
 *   it if no prefetch did (NVMe -> pinned host -> device on the host-to-device
 *   queue), and makes the compute queue wait for the load's event;
 *   stream_release(l) records the compute queue's "done" event, and the slot
 *   is refilled only after it. Slots are evicted by the step's known access
 *   order (forward 0..L-1, then backward L-1..0, or forward again with
 *   req.forward_only: the layer needed furthest in
 *   the future goes); with a host cache the model is read from NVMe once.
 * - Activation store: the layer-boundary activation of (layer l, micro-batch
 *   k) is a cell — the checkpoint in the forward pass, replaced by its
 *   gradient in the backward pass. A cell stays on the device or spills to
 *   the host (plan->dev_cells), and comes back ahead of its use. Buffers come
 *   from one pool (stream_buf_get/put); each carries the event of its last
 *   use, which its next user's queue waits for.
 * - Every read, copy, decompression and spill is recorded in the trace when
 *   one is given.
 *
 * The step loop must read cells in the order stream_begin's `backward` pass
 * describes (forward: cells 1..L for every micro-batch; backward: for each
 * layer from the top, the checkpoint and then the gradient of each
 * micro-batch), which is how unspills are prefetched. */
#ifndef TT_STREAM_H
#define TT_STREAM_H

#include <stdint.h>

#include "io/tier.h"
#include "sched/plan.h"
#include "sched/trace.h"

typedef struct tt_stream tt_stream;
struct tt_arena;

/* Reopens store (the one plan was made for: tier_reopen, so every read is of the
 * file the caller opened, whatever happens to its path meanwhile; the caller may
 * close store afterwards), reserves both arenas, carves them (calling
 * plan->req.user.carve with keep), reads the embedding and the head, and
 * starts the IO and copy threads. trace may be NULL. Returns 0 or -errno with
 * a message. */
int stream_create(tt_stream **out, const tier_store *store, const tt_plan *plan, void *keep, tt_trace *trace);
void stream_free(tt_stream *s);

const tier_store *stream_store(const tt_stream *s);
/* The embedding tensor's blob (host memory) and dtype. */
const void *stream_embed(const tt_stream *s, uint32_t *dtype);
/* The head extent: on the device (lm_head on the device; *norm_dev NULL) or
 * in host memory with the final norm's device copy in *norm_dev. */
const void *stream_head(const tt_stream *s, const void **norm_dev);

/* ---- weight provider ---- */
/* Layer l at access position pos (0..2L-1) into *ext (the device extent);
 * the compute queue's later work waits for its load. -errno on an IO error
 * (the message names the file and offset). */
int stream_acquire(tt_stream *s, int l, int pos, const void **ext);
/* The compute queue is done with layer l once the work issued so far has run. */
void stream_release(tt_stream *s, int l, int next_pos);
/* IO only: the layer accesses of one step, loading what the slots lack. */
int stream_io_pass(tt_stream *s);
/* req.trainable: the layers' master layout — every tensor of layer l as f32
 * (whatever the store holds: f32 or bf16), in the extent's order, each at a
 * 256-byte boundary. Returns the layer's master bytes (its slot and cache
 * size); offs (may be NULL) receives each of its tensors' byte offsets
 * (extent->n_tensors entries). A pure function of the store. */
uint64_t stream_master_layout(const tier_store *s, int l, uint64_t *offs);
/* req.trainable: the compute queue's work issued so far has updated layer l
 * in its slot (acquired, not yet released): copies the slot back to the host
 * cache on the compute queue; a later load of l waits for that copy. */
void stream_writeback(tt_stream *s, int l);
/* req.trainable: layer l's master extent (stream_master_layout) in the host
 * cache (every layer is read and widened into it at stream_create). Current once the backend is synchronised
 * after the last stream_writeback of l. */
void *stream_layer_host(tt_stream *s, int l);

/* ---- activation store ---- */
void stream_begin(tt_stream *s, int backward);  /* before a step's first cell access */
void stream_end(tt_stream *s);                  /* after its last: waits for copies, checks nothing leaked */
void *stream_buf_get(tt_stream *s);             /* a free device buffer of one cell (its last use waited for) */
void stream_buf_put(tt_stream *s, void *b);     /* back, after the compute queue's work issued so far */
/* The device copy of cell (l, k), l in 1..L (unspilled now if no prefetch did). */
void *stream_cell_get(tt_stream *s, int l, int k);
/* Stores buffer b (from stream_buf_get) as cell (l, k)'s value: kept, or spilled once computed. */
void stream_cell_put(tt_stream *s, int l, int k, void *b);
/* Done with the device copy of (l, k) for now: a host cell's copy goes back
 * to the pool; a device cell keeps its value unless drop. */
void stream_cell_done(tt_stream *s, int l, int k, int drop);

/* Peak bytes used so far in the device and host arenas; NVMe bytes read. */
uint64_t stream_dev_peak(const tt_stream *s);
uint64_t stream_host_peak(const tt_stream *s);
uint64_t stream_io_bytes(const tt_stream *s);

/* Test hook: the n-th NVMe read request from now fails with -err (between steps only). */
void stream_inject_io_fault(tt_stream *s, uint64_t nth, int err);

/* The carving shared with the planner: sizes every region of plan p (the
 * user's and the runtime's) into the measuring arenas dev and host. */
void stream_measure(const tier_store *s, const tt_plan *p, struct tt_arena *dev, struct tt_arena *host);

#endif
