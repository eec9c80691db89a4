/* core/fulltrain.h — full-parameter training of a model that fits in memory
 * (fp32 master weights, AdamW; lm_head frozen as in LoRAM's alignment), and
 * the weight gradients of calibration data for Taylor pruning importance. */
#ifndef TT_FULLTRAIN_H
#define TT_FULLTRAIN_H

#include <stdint.h>

#include "core/galore.h"
#include "core/train.h"

enum { FULL_OPTIM_ADAMW = 0, FULL_OPTIM_GALORE = 1 };

typedef struct tt_full_opts {
    const char *model_path;   /* source store: f32 or bf16 weights */
    uint64_t weights_fp;      /* its tier_weights_fingerprint, recorded in checkpoints and checked on resume (0: none) */
    const char *out_path;     /* the trained store (same dtypes and pruning map as the source) */
    uint64_t seed;
    int steps, seq, micro_batch, accum, warmup;
    float lr, min_lr, wd, b1, b2, eps, clip; /* wd applies to the projections only */
    int eval_every, eval_tokens;
    uint64_t hbm;             /* device budget (0: unlimited) */
    uint64_t host;            /* pinned host budget of the streamed run (0: unlimited) */
    uint64_t host_avail;      /* the streamed plan's hints, as plan --full gets them (tt_plan_req): the memory
                               * the machine has available (0: unchecked) */
    uint64_t dev_avail;       /* ... and the most the GPU can give (tt_plan_req.dev_avail; 0: unchecked) */
    int lm_head;              /* tt_plan_req.lm_head: PLAN_HEAD_AUTO (0), _DEVICE or _HOST */
    int stream;               /* 1: train on the streaming executor (sched/stream.h): each layer's f32 master
                               * weights and optimizer state live in the host arena and come to the device with
                               * the layer, its update follows its backward at once (no whole-model gradient; a
                               * teacher streams too); needs --clip 0. 0: everything resident on the device */
    int optim;                /* FULL_OPTIM_ADAMW, or FULL_OPTIM_GALORE: GaLore on the projections (core/galore.h),
                               * AdamW on the norms and the embedding */
    tt_galore_cfg galore;     /* with FULL_OPTIM_GALORE (its seed: the run's) */
    int json, quiet;
    tt_mix *mix;              /* several --data sources (core/train.h; fulltrain_run takes no train, val then); NULL: one */
    const char *teacher_path; /* distillation from this store (resident, frozen; same hidden size and vocabulary):
                               * the objective is (1 - distill_weight) CE + distill_weight temp^2 KL (model.h's
                               * tt_distill); NULL: plain LM loss */
    float distill_weight, distill_temp;
    /* checkpoints: ckpt_dir (NULL: none) receives checkpoint.bin (io/ckpt.h, full = 1: weights, optimizer
     * state, step, data position) every save_every steps (0: at the end only), at stop_after (0: none) and on
     * Ctrl-C; resume_dir: continue the run whose checkpoint is there (the same model, data and options) */
    const char *ckpt_dir, *resume_dir;
    int save_every, stop_after;
} tt_full_opts;

/* The optimizer state's device bytes for full training of cfg with o's
 * optimizer (AdamW moments; GaLore's projectors and moments), what AdamW
 * alone would take, for the comparison, and GaLore's shared workspace
 * (scratch for one matrix's step: 0 with AdamW). */
void fulltrain_optim_bytes(const tt_config *cfg, const tt_full_opts *o, uint64_t *bytes, uint64_t *adamw_bytes,
                           uint64_t *ws_bytes);

/* The inputs full training refuses whatever the budget, one check for
 * train --full (resident and streamed) and plan --full: a store s (open; it
 * may be described, not on disk) with a weight that is not f32 or bf16 (NF4:
 * "has NF4 weights ..."), and a teacher_path (NULL: none) whose hidden size
 * or vocabulary differ from s's. *teacher_tied (may be NULL): the teacher's
 * lm_head is its embedding. Returns 0, or -errno with one sentence naming the
 * store and the tensor, or the teacher and both sizes (tier_open's, for a
 * teacher that cannot be read). */
struct tier_store;
int fulltrain_check_inputs(const struct tier_store *s, const char *teacher_path, int *teacher_tied);

/* The resident run's device arena for o on store s (open; it may be
 * described): f32 weights, their gradients, the optimizer state, lm_head,
 * the workspace (and a --teacher's weights and workspace) — what train
 * --full checks against --hbm (plan_dev_fits) to run resident, else it
 * streams. A sparse store's masks come on top (known once its weights are
 * read). Returns 0, or -errno with a message (fulltrain_check_inputs'). */
struct tier_store;
int fulltrain_resident_bytes(const struct tier_store *s, const tt_full_opts *o, uint64_t *bytes);

/* The streamed run's plan request for o (sched/plan.h; req.trainable), its
 * plan (p may be NULL) and, when min_dev != NULL, the smallest plan's device
 * and host bytes. Returns 0 or -errno with a message (the store cannot be
 * read; -ENOSPC: the budgets are too small, naming the option). */
struct tt_plan;
struct tt_plan_req;
struct tier_store;
void fulltrain_plan_req(const tt_full_opts *o, struct tt_plan_req *req);
int fulltrain_plan(const tt_full_opts *o, struct tt_plan *p, uint64_t *min_dev, uint64_t *min_host);
/* The streamed run's plans for o on the model's store s (open; it may be
 * described, not on disk): with o->teacher_path, distillation's teacher gets
 * its smallest plan on its own stream first (*tp) and the model plans in what
 * that leaves (*so: o with the model's budgets, which *p's request points
 * at: keep so alive with p); without one, *so = *o and *tp is untouched.
 * hints (may be NULL): the plan request's host_avail, io_gbps, gflops and
 * lm_head. Returns 0, or -errno with a message (-ENOSPC: the budget too
 * small for the teacher alone, or for both, naming the option and the
 * smallest that works). */
int fulltrain_plans(const struct tier_store *s, const tt_full_opts *o, const struct tt_plan_req *hints,
                    tt_full_opts *so, struct tt_plan *tp, struct tt_plan *p);
/* For a streamed plan p of store s: the f32 master weights' bytes (the host
 * cache) and the host-to-device and device-to-host bytes of a step (layer
 * loads the slots miss, every layer's optimizer state in and out, every
 * layer written back). */
struct tier_store;
void fulltrain_stream_bytes(const struct tier_store *s, const tt_full_opts *o, const struct tt_plan *p,
                            uint64_t *master, uint64_t *h2d, uint64_t *d2h);

/* Full-parameter training on train (validation on val, may be NULL) — or on
 * o->mix's sources (train, val NULL) — then writes the store to o->out_path
 * (also after Ctrl-C, at the step reached). Resident unless o->stream, or
 * when the resident run does not fit o->hbm: then streamed. --out (and
 * --ckpt) without room for what the run writes is refused before step 1.
 * Returns 0 or -errno with a message; on error no output is written, except
 * where only the last step's checkpoint failed: the store is written all the
 * same (and the error says so). */
int fulltrain_run(const tt_full_opts *o, const tt_tokens *train, const tt_tokens *val, tt_train_result *res);

/* dL/dW of the linear projections of layers [layer_a, layer_b) of the store
 * at store_path, where L is the mean next-token NLL over `samples` windows of
 * seq + 1 tokens spread evenly over tokens[0..n): window s starts at
 * s * ((n - 1) / samples). The model is loaded resident (memory: the store's
 * weights plus one f32 gradient per projection in the range). grads:
 * config_n_tensors(cfg) pointers; on success grads[i] is a malloc'ed
 * (rows * cols) f32 array for every TT_ROLE_LINEAR tensor i in the range and
 * NULL for the others (the caller frees them); on failure all are NULL.
 * Returns 0 or -errno with a message (seq < 2, too few tokens, token ids
 * outside the vocabulary, out of memory, IO error). */
int fulltrain_calib_grads(const char *store_path, const uint32_t *tokens, uint64_t n, int samples, int seq,
                          uint32_t layer_a, uint32_t layer_b, float **grads);

/* fulltrain_calib_grads on the streaming runtime (core/exec.h, sched/stream.h)
 * under the budgets hbm / host (0: unlimited, the planner decides as for
 * training): the store's layers stream through the device, never all
 * resident, and each layer's projection gradients are copied out after its
 * backward into a temporary file in tmp_dir (unlinked at once: nothing is
 * left behind, even after a crash), mapped read-only at the end: grads[i]
 * point into that mapping, which *map / *map_len describe (munmap it; the
 * grads are not freed one by one). The same values as fulltrain_calib_grads
 * (tests/test_prune.c). Returns 0 or -errno with a message (as
 * fulltrain_calib_grads; a budget too small, naming the option; no space
 * for the gradients in tmp_dir). */
int fulltrain_calib_grads_stream(const char *store_path, const uint32_t *tokens, uint64_t n, int samples, int seq,
                                 uint32_t layer_a, uint32_t layer_b, uint64_t hbm, uint64_t host, const char *tmp_dir,
                                 float **grads, void **map, uint64_t *map_len);

#endif
