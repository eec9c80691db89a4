/* core/train.h — the LoRA training loop (reference, everything resident):
 * deterministic data sampling, gradient accumulation over micro-batches,
 * global gradient-norm clipping, AdamW with linear warmup + cosine decay,
 * periodic validation, checkpoints that resume bit-exactly, PEFT export, and
 * a clean stop with a checkpoint on SIGINT/SIGTERM/SIGHUP. */
#ifndef TT_TRAIN_H
#define TT_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "core/lora.h"
#include "core/model.h"
#include "sched/trace.h"

typedef struct tt_exec tt_exec;

/* Training or validation tokens. Plain documents (a version-1 token file):
 * flags NULL, windows of seq + 1 tokens anywhere. Examples (version 2):
 * flags (TOKFILE_TRAIN, TOKFILE_START) and the index train_index_examples
 * builds; each sequence is one example from its start, cut at seq + 1 tokens
 * and padded (no target, weight 0), and only TOKFILE_TRAIN tokens are targets. */
typedef struct tt_tokens {
    const uint32_t *t;
    uint64_t n;
    const uint8_t *flags;   /* NULL: plain documents */
    uint64_t *starts;       /* examples: where each starts (train_index_examples; free with train_free_examples) */
    uint64_t n_ex;
    const struct tokfile *file; /* where t lies (tokfile_check each step), or NULL */
} tt_tokens;

/* Builds tok->starts / n_ex from tok->flags (nothing for plain documents). */
void train_index_examples(tt_tokens *tok);
void train_free_examples(tt_tokens *tok);
/* Examples: how many are longer than seq + 1 tokens (cut), how many have
 * no target within their first seq + 1 tokens (they teach nothing), and the
 * targets the cut leaves out (lost: never trained on, never scored). */
void train_example_stats(const tt_tokens *tok, int seq, uint64_t *cut, uint64_t *untrained, uint64_t *lost);
/* The targets example i has within its first seq + 1 tokens: what one row of it scores. */
uint64_t train_example_targets(const tt_tokens *tok, uint64_t i, int seq);

/* A data mixture (LoRAShear's knowledge recovery: train on several sources
 * at once, weighted toward where the model has lost most). Each training
 * sequence comes from source i with probability w[i] (train_sample_mix); each
 * source keeps its own validation split. Static: w = base for the whole run.
 * Dynamic: before step 1 and after every `every` steps the loop scores every
 * source's validation split and re-weights (train_mix_reweight) against the
 * reference model's losses ref[] (the original, unpruned store, scored once
 * before training). A single --data is a mixture of one source, drawn exactly
 * as train_sample_batch draws it. */
#define TT_MIX_MAX 16
enum { TT_MIX_STATIC = 0, TT_MIX_DYNAMIC = 1 };
typedef struct tt_mix {
    int n;                          /* sources, 1..TT_MIX_MAX */
    const char *name[TT_MIX_MAX];   /* for the log (the --data path); NULL: "source i" */
    tt_tokens train[TT_MIX_MAX];    /* each source's training tokens */
    tt_tokens val[TT_MIX_MAX];      /* and validation tokens (n == 0: none) */
    double base[TT_MIX_MAX];        /* the --data weights, normalised (sum 1) */
    double w[TT_MIX_MAX];           /* the sampler's weights now (normalised); a resume restores them */
    int mode;                       /* TT_MIX_STATIC / TT_MIX_DYNAMIC */
    int every;                      /* dynamic: re-weight after every `every` steps (and before step 1) */
    double tau;                     /* dynamic: the temperature of the re-weighting, nats/token */
    double ref[TT_MIX_MAX];         /* dynamic: the reference model's validation loss per source */
} tt_mix;

/* Source i's name for messages and the log: m->name[i], or "source i+1" in buf. */
const char *train_mix_name(const tt_mix *m, int i, char *buf, size_t cap);

/* A mixture of one source (train, val: val may be NULL). */
void train_mix_single(tt_mix *m, const tt_tokens *train, const tt_tokens *val);

/* The dynamic re-weighting: w[i] = base[i] * exp((gap[i] - gmax) / tau) / Z,
 * gap[i] = max(0, loss[i] - ref[i]) (0 where loss or ref is NaN), gmax the
 * largest gap among sources with base > 0, Z the sum (so sum w = 1; a source
 * of base weight 0 stays at 0). Equal gaps give back the base weights; a
 * source 1 nat/token further above its reference gets exp(1 / tau) times the
 * weight. gap may be NULL. */
void train_mix_reweight(int n, const double *base, const double *loss, const double *ref, double tau, double *w,
                        double *gap);

typedef struct tt_train_opts {
    const char *model_path;   /* the store */
    const char *base_model;   /* the adapter's base_model_name_or_path (NULL: null) */
    uint64_t base_fp;         /* tier_base_fingerprint of the store, recorded in the adapter (0: none) */
    uint64_t weights_fp;      /* tier_weights_fingerprint of the store, recorded in checkpoints and checked on
                               * resume (0: none) */
    const char *out_dir;
    const char *resume_more;  /* what "continue with --resume DIR" adds (full training: " --force", its --out store
                               * being written at the stop); NULL: nothing */
    const char *resume_dir;   /* NULL: fresh run */
    tt_lora_cfg lora;
    uint64_t seed;
    int steps, seq, micro_batch, accum, warmup;
    float lr, min_lr, wd, b1, b2, eps, clip;
    int eval_every;           /* steps between validations (0: only at the end) */
    int eval_tokens;          /* validation tokens per evaluation */
    int save_every;           /* steps between checkpoints (0: only at the end) */
    int stop_after;           /* stop (with a checkpoint) after this step; 0: run to the end */
    int json;                 /* one JSON object per step on stdout */
    int threads;              /* BLAS threads in use (recorded in checkpoints; resume must match) */
    int act_bf16;             /* the plan's activation cells are bf16 (recorded in checkpoints; resume must match) */
    int pack;                 /* examples (version-2 data): pack several into a sequence (train_sample_batch) */
    uint64_t hbm;             /* the device budget (0: none), checked against what the device holds after step 1 */
    tt_trace *trace;          /* per-step IO/compute busy and overlap in the progress line; NULL: off */
    int trace_keep;           /* keep every event (a trace file is written); else cleared each step */
    int quiet;
    tt_mix *mix;              /* several --data sources (train_run / train_loop take theirs, not train and val);
                               * NULL: one source. Its w changes as the run re-weights (dynamic) */
} tt_train_opts;

typedef struct tt_train_result {
    int steps_done;               /* the run's steps so far, a resumed run's start included */
    int start_step;               /* the step a resumed run went on from (0: a fresh run) */
    double first_loss, last_loss; /* of this run's first and last steps */
    double first_val, last_val;   /* NAN if no validation ran (a mixture: the base-weighted mean over its sources) */
    int first_val_step;           /* the step first_val was scored after (0: before training) */
    int last_val_step;            /* the step last_val was scored after */
    int interrupted;              /* the signal that stopped the run early (0: none; --stop-after is not one) */
    int failed_save;              /* the step whose save failed and ended the run (0: none) */
    uint64_t dev_in_use;          /* device memory the process held after the first step (0: not measured) */
} tt_train_result;

/* The run's summary for `done: ...`: "40 steps, train loss A -> B, validation loss C -> D", with the steps
 * this run made where it resumed ("steps 21-40 (resumed after step 20)"), "(interrupted)" where a signal
 * ended it, and one validation loss where it scored only one (a resumed run's first score: after which step). */
void train_result_summary(const tt_train_result *r, char *b, size_t n);

/* Ctrl-C / SIGTERM / SIGHUP ask the running training loop to stop cleanly after its
 * step (a validation under way is cut short; before first_step, the run's first,
 * nothing is written): arm installs the handlers, whose first signal prints a line
 * on stderr naming what the stop leaves (after: "writing a checkpoint") and where
 * a second Ctrl-C ends the process at once (the partial outputs removed, then
 * SIGINT's default action; a second SIGTERM or SIGHUP changes nothing);
 * requested returns the first signal's number (0: none), disarm restores the
 * previous handlers. One loop at a time. */
void train_stop_arm(int first_step, const char *after);
int train_stop_requested(void);
void train_stop_disarm(void);

/* Checkpoints (io/ckpt.h) shared by LoRA and full training. train_ckpt_fill:
 * the run record of o's run on config c at step (seen tokens): LoRA with lc
 * and n_params adapter values, or full training when lc is NULL (the caller
 * sets optim and the GaLore fields). train_ckpt_match: 0 when a read record
 * st belongs to the run whose record is want (the same kind of training,
 * model, shapes, data and options), else -EINVAL naming what differs and
 * the flag to fix (path: the checkpoint, for the message).
 * train_ckpt_restore_mix: the mixture's weights as they were at st. */
struct ckpt_state;
void train_ckpt_fill(struct ckpt_state *st, const tt_train_opts *o, const tt_config *c, const tt_lora_cfg *lc,
                     uint64_t n_params, const tt_mix *mix, int step, uint64_t seen);
int train_ckpt_match(const char *path, const struct ckpt_state *st, const struct ckpt_state *want, const tt_mix *mix);
void train_ckpt_restore_mix(const struct ckpt_state *st, tt_mix *mix);

/* Learning rate at step s (1-based): linear warmup from 0 over `warmup`
 * steps, then cosine decay from lr to min_lr at `steps`. */
double train_lr(const tt_train_opts *o, int step);
/* Seconds to the run's end after step `step` (the progress line's ETA): each step left at per_step, each
 * validation left at per_val (every --eval-every steps, every m steps of a dynamic mixture (0: none), and at the
 * last step; any_val 0: none), up to --stop-after where that comes first. */
double train_eta_s(const tt_train_opts *o, int any_val, long long m, int step, double per_step, double per_val);

/* The training loop both LoRA training (train_run) and full training
 * (fulltrain_run) run: per step the schedule's learning rate, K sampled
 * micro-batches (train_sample_batch), the step, the finiteness check, the
 * validation cadence, the progress line (or JSON), the checkpoint cadence and
 * a clean stop on SIGINT/SIGTERM/SIGHUP or at o->stop_after. What differs is in ops:
 * step runs one optimizer step on in/tgt/wt (K*B*S each) into *loss (mean per
 * weighted token) and *gnorm; eval scores a validation set; save (NULL: the
 * run keeps nothing between steps) writes a checkpoint at step with `seen`
 * tokens trained on. start: the step already done (a resume). */
typedef struct tt_loop_ops {
    /* seg: packed examples (K*B*seq, train_sample_batch) or NULL */
    int (*step)(void *ctx, const int32_t *in, const int32_t *tgt, const tt_real *wt, const int32_t *seg, double lr,
                int step, uint64_t drop_seed, double *loss, double *gnorm);
    int (*eval)(void *ctx, const tt_tokens *val, int max_tokens, double *loss);
    /* *said (0 on entry): set where a failure's message already says what stands (LoRA: the checkpoint written
     * whole, the adapter after it not), so that the loop adds nothing */
    int (*save)(void *ctx, int step, uint64_t seen, int *said);
} tt_loop_ops;
/* mix: the sources (a mixture of one for a single --data); validation scores
 * each source's val (a mixture's val_loss is their base-weighted mean), and a
 * dynamic mixture is re-weighted in it (mix->w). */
int train_loop(const tt_train_opts *o, const tt_loop_ops *ops, void *ctx, tt_mix *mix, int start, uint64_t seen,
               tt_train_result *res);

/* Runs (or resumes) training on the executor e (its plan fixes the batch
 * shape: micro_batch, seq, accum must match; clip > 0 needs a plan with
 * defer_optimizer). With o->mix, its sources are the data (train and val
 * are not used: pass NULL); a resume restores the mixture's weights.
 * Returns 0 or -errno with a message. */
int train_run(const tt_train_opts *o, tt_exec *e, const tt_tokens *train, const tt_tokens *val, tt_train_result *res);

/* Mean loss (nats/token) of the model + adapter over up to max_tokens of
 * tokens, in consecutive windows of seq + 1 (streamed like training), into
 * *loss (NAN when there are too few tokens). Returns 0 or -errno (IO error). */
int train_eval(tt_exec *e, const tt_tokens *tok, int max_tokens, double *loss);

/* The same over any evaluator: fn(ctx, inputs, targets, weights, &loss_sum)
 * scores K micro-batches of B x S tokens (summed weighted NLL). */
typedef int (*train_eval_fn)(void *ctx, const int32_t *in, const int32_t *tgt, const tt_real *wt, double *loss);
int train_eval_with(train_eval_fn fn, void *ctx, int B, int S, int K, const tt_tokens *tok, int max_tokens,
                    double *loss);

/* Fills micro-batch `micro` of step `step`: B windows of S+1 tokens at
 * offsets drawn from (seed, step, micro) — or, for examples, B examples drawn
 * so — a pure function of the step, so resuming needs no sampler state.
 * in/tgt/wt hold B*S entries each (wt: 1, or the example's target flags).
 * seg (examples only; NULL: one example per sequence): examples are packed —
 * drawn one after another into a sequence while the next one fits whole (the
 * first is cut at S positions), each occupying as many positions as it has
 * tokens, its last one predicting nothing; seg[i] is where token i's example
 * starts in its sequence (the padding after the last example is one more
 * segment). */
void train_sample_batch(const tt_tokens *tok, uint64_t seed, int step, int micro, int B, int S, int32_t *in,
                        int32_t *tgt, tt_real *wt, int32_t *seg);

/* The same from a mixture: per sequence, a uniform draw from the same
 * (seed, step, micro) stream picks source i with probability w[i] (the first
 * i whose cumulative weight exceeds it), then the sequence is drawn from that
 * source as train_sample_batch draws one. With one source of weight > 0 no
 * source is drawn: the batch is train_sample_batch's from that source, bit
 * for bit (a single --data, or --data A:1 --data B:0, samples as --data A).
 * seg as above (NULL: no source is packed); a plain-text sequence in a packed
 * batch is one segment (seg 0). Returns how many of the B sequences came
 * from example (version-2) sources. */
int train_sample_mix(const tt_mix *m, uint64_t seed, int step, int micro, int B, int S, int32_t *in, int32_t *tgt,
                     tt_real *wt, int32_t *seg);

/* Scores each source's validation tokens on e (the reference model) into
 * m->ref (NAN where a source has nothing to score). Returns 0 or -errno. */
int train_mix_reference(tt_exec *e, tt_mix *m, int max_tokens);

#endif
