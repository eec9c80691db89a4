/* sched/plan.h — the memory planner: turns a model store, a batch shape and
 * the two budgets (--hbm for the device, --host for pinned host memory) into
 * a concrete plan — how many layer slots (and so how many layers are
 * prefetched ahead), whether lm_head stays on the device, how many
 * layer-boundary activations stay on the device and how many spill to the
 * host, whether every layer is cached in host memory between steps — and
 * the exact bytes of each region (sched/stream.c carves the arenas with the
 * same code, measuring first). An impossible budget is refused with the
 * smallest budget that would work.
 *
 * The planner does not know what trains: the step loop's owner (core/)
 * describes its device regions (LoRA state, workspace) by a tt_dev_user —
 * a carving callback and its configuration, copied by value — and the
 * planner measures them by calling it. */
#ifndef TT_PLAN_H
#define TT_PLAN_H

#include <stdalign.h>
#include <stdint.h>
#include <stdio.h>

#include "core/base/alloc.h"
#include "io/tier.h"

#define PLAN_TRANSIT 6  /* device activation buffers beyond the resident ones (temporaries, spills in flight) */
#define PLAN_UNSPILL_AHEAD 2

enum { PLAN_HEAD_AUTO = 0, PLAN_HEAD_DEVICE, PLAN_HEAD_HOST };

struct tt_plan;

/* The regions of whoever runs the step loop, carved from the arenas first:
 * carve(u, store, plan, dev, host, keep) takes its buffers from the device
 * and pinned host arenas (measuring when dev->measuring: then keep is NULL
 * and nothing is kept; otherwise keep is the owner's object, which records
 * them). cfg holds the owner's configuration (copied with the request). */
#define PLAN_USER_CFG 64
typedef struct tt_dev_user {
    int (*carve)(const struct tt_dev_user *u, const tier_store *s, const struct tt_plan *p, const tt_alloc *dev,
                 const tt_alloc *host, void *keep);
    alignas(8) unsigned char cfg[PLAN_USER_CFG];
} tt_dev_user;

typedef struct tt_plan_req {
    uint64_t hbm, host;   /* budgets in bytes; 0 = unlimited (everything resident) */
    int B, seq, K;        /* micro-batch of B sequences of seq tokens; K micro-batches per step */
    tt_dev_user user;     /* the step loop's own device regions (required) */
    int lm_head;          /* PLAN_HEAD_AUTO, PLAN_HEAD_DEVICE or PLAN_HEAD_HOST */
    int no_host_cache;    /* never cache layers on the host (IO benchmarks: read NVMe every step) */
    int act_bf16;         /* activations in bf16: the cells (checkpoints, their gradients, spills) and the workspace */
    double io_gbps;       /* measured NVMe read bandwidth, 0 = unknown */
    double gflops;        /* measured compute throughput, 0 = unknown */
    uint64_t host_avail;  /* the memory the machine has available (MemAvailable), which the plan must fit: one
                           * that does not is planned again with the host budget host_avail (a host budget
                           * given and smaller stays), unless what_if; 0 = no such check */
    int what_if;          /* the plan command's: a plan within a host budget that exceeds host_avail is kept and
                           * marked (plan.over_avail), not planned again (it may be for later, or another machine);
                           * the same for an --hbm beyond dev_avail (plan.over_dev_avail) */
    uint64_t dev_avail;   /* the largest --hbm the GPU can give now (be_dev_avail), which the plan must fit: one
                           * that does not is planned again with the device budget dev_avail (a smaller --hbm
                           * given stays), unless what_if and --hbm given; 0 = no such check */
    int forward_only;     /* generation: every pass walks the layers forward (0..L-1, again and again); no
                           * activation cells (the owner keeps its own buffers, taken with stream_buf_get) */
    const char *gen_flags; /* forward_only: the command's flags that shrink the plan (prompts per batch, prompt
                           * chunk, KV positions), named in refusals, e.g. "--batch / --prefill-chunk /
                           * --context"; NULL: those said in words (training's flags mean nothing there) */
    int user_units;       /* optional device regions of the owner (generation: one layer's KV cache each), placed
                           * on the device as the budget allows (plan.user_dev), the rest in the host arena */
    int min_slots;        /* 1: a plan may hold a single layer slot (no prefetch; loads wait) when two do not fit
                           * (Taylor calibration of layers as large as the budget); 0: at least two */
    int no_user_opt;      /* never place the owner's optional region (plan.user_opt): a comparison's second plan
                           * (bench overlap's compute-only run) as its first */
    int trainable;        /* full-parameter training: the layers change. Every layer extent lives in the host
                           * cache (always on; read from NVMe once), which holds the master weights: the owner
                           * updates a layer in its slot and writes it back (stream_writeback) */
} tt_plan_req;

typedef struct tt_plan {
    tt_plan_req req;
    int L;
    int slots;            /* device layer slots */
    int prefetch;         /* layers loaded ahead of compute = slots - 1 */
    int head_on_device;   /* lm_head resident on the device (else streamed in vocab chunks from the host) */
    int host_cache;       /* every layer extent kept in host memory between steps */
    int dev_cells;        /* layer-boundary activations kept on the device (of L * K) */
    int host_cells;       /* ... spilled to the host */
    uint64_t dev_bytes, host_bytes;       /* what the arenas will hold: the predicted peaks */
    uint64_t io_bytes_first, io_bytes_step; /* NVMe reads in the first step and in later steps */
    double flops_step;
    double pred_io_s, pred_compute_s, pred_step_s; /* 0 when the bandwidths are unknown */
    int host_from_avail;  /* req.host was set from req.host_avail (no --host given, or one beyond it: a run's) */
    uint64_t over_avail;  /* req.what_if: the host memory available that the plan (within --host) exceeds; else 0 */
    int hbm_from_avail;   /* req.hbm was set from req.dev_avail (no --hbm given, or one beyond it: a run's) */
    uint64_t over_dev_avail; /* req.what_if: the dev_avail that the plan (within --hbm) exceeds; else 0 */
    int user_dev;         /* of req.user_units, how many the owner's carve puts on the device (the first ones) */
    int user_opt;         /* 1: the owner's optional device region is placed (the step loop's decoded layer,
                           * core/exec.c); the planner places it where the owner's carve takes one (its bytes
                           * measured): after lm_head and a third slot, before the activations, where that
                           * costs no slot and no host cache and both budgets hold it; else last, where it fits */
} tt_plan;

/* Makes a plan. Returns 0, or -ENOSPC with a message naming the budget
 * option and the smallest value that would work, or -ENOMEM where the
 * memory the machine has available (req.host_avail) or the GPU can give
 * (req.dev_avail) holds no plan. */
int plan_make(const tier_store *s, const tt_plan_req *req, tt_plan *out);

/* Host memory the plan takes: the pinned arena, plus the device arena where
 * the backend's device is host memory (the CPU backends). */
uint64_t plan_ram_bytes(const tt_plan *p);

/* The one --hbm check: what the device holds for `arena` bytes carved from
 * its arena — the arena plus what the backend keeps outside it
 * (be_reserved_bytes) — into *total; 1 when that fits hbm (0 = unlimited).
 * The planner and full training both decide with it. */
int plan_dev_fits(uint64_t arena, uint64_t hbm, uint64_t *total);

/* plan_make's rule for a GPU that can give dev_avail now (tt_plan_req.dev_avail; 0: none), for the callers that
 * decide without plan_make (full training's resident run, the --rank hint): the --hbm that binds is dev_avail where
 * no --hbm is given or, unless what_if, one beyond it; otherwise hbm as given. */
uint64_t plan_hbm_bound(uint64_t hbm, uint64_t dev_avail, int what_if);

/* The smallest plan's device and host bytes (what plan_make would ask for). */
void plan_minimum(const tier_store *s, const tt_plan_req *req, uint64_t *dev, uint64_t *host);

/* The memory table (every region, bytes, tier) and the decisions. */
void plan_print(const tier_store *s, const tt_plan *p, FILE *f);
/* One JSON object (no newline). */
void plan_print_json(const tier_store *s, const tt_plan *p, FILE *f);

#endif
