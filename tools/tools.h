/* tools/tools.h — the subcommands of the tiertrain program and what they share. */
#ifndef TT_TOOLS_H
#define TT_TOOLS_H

#include <stdint.h>

int cmd_synth(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_trace(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_recover(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int bench_generate(int argc, char **argv); /* `bench generate` (tools/cmd_bench_gen.c) */

/* The batch-shape and budget flags shared by plan, train and bench overlap. */
typedef struct tool_plan_args {
    uint64_t hbm, host, batch_tokens;
    long seq, micro, rank;
    double alpha, clip, dropout;
    const char *targets, *lm_head, *device, *act_dtype;
    int planning_only; /* set by `plan`: --device cuda without a GPU uses the CUDA estimate */
    int rslora;        /* train --rslora: LoRA scaling alpha / sqrt(rank) */
    const char *gen_flags; /* a generating command's flags that shrink its plan (tt_plan_req.gen_flags) */
} tool_plan_args;

/* The largest --micro-batch: the sequences of a micro-batch are a GPU grid's third dimension in the CUDA
 * attention kernels, which holds at most 65535 (every backend takes the same range). */
#define TOOL_MICRO_MAX 65535
#define TOOL_MICRO_MAX_S "65535"

/* Option-table entries for tool_plan_args a (use inside a cli_opt array). */
#define TOOL_PLAN_OPTS(a)                                                                                          \
    {"hbm", 0, CLI_SIZE, &(a).hbm, "0", "SIZE", "device memory budget, e.g. 8G (0: unlimited, every layer resident)"}, \
    {"host", 0, CLI_SIZE, &(a).host, "0", "SIZE", "pinned host memory budget (0: what the machine has available now, MemAvailable)"},                       \
    {"seq", 0, CLI_INT, &(a).seq, "256", "N", "tokens per sequence"},                                                \
    {"batch-tokens", 0, CLI_SIZE, &(a).batch_tokens, "4096", "N", "tokens per optimizer step (a multiple of seq * micro-batch)"}, \
    {"micro-batch", 0, CLI_INT, &(a).micro, "4", "N", "sequences per micro-batch"},                                  \
    {"rank", 'r', CLI_INT, &(a).rank, "8", "R", "LoRA rank"},                                                        \
    {"alpha", 0, CLI_FLOAT, &(a).alpha, "16", "A", "LoRA alpha"},                                                    \
    {"dropout", 0, CLI_FLOAT, &(a).dropout, "0", "P", "LoRA dropout probability (its masks take device memory)"},   \
    {"targets", 't', CLI_STR, &(a).targets, "all", "LIST", "projections with LoRA: q,k,v,o,gate,up,down or all"},     \
    {"clip", 0, CLI_FLOAT, &(a).clip, "1", "C", "gradient clipping (> 0 keeps every layer's LoRA gradients to the step's end)"}, \
    {"lm-head", 0, CLI_STR, &(a).lm_head, "auto", "WHERE", "lm_head on the device, streamed from the host, or auto"}, \
    {"device", 0, CLI_STR, &(a).device, "cpu", "NAME", "compute backend: cpu, cpu-async (asynchronous queues, for testing) or cuda"},                            \
    {"act-dtype", 0, CLI_STR, &(a).act_dtype, "auto", "T", "activations, their gradients, checkpoints, spills and the workspace: f32, bf16 (half the memory, tensor-core products) or auto (bf16 with --device cuda, else f32)"}

struct tier_store;
struct tt_plan_req;
/* Checks a, selects the --device backend and fills req (budgets, batch
 * shape, LoRA). Returns 0, or 2 after printing a usage error for cmd. */
int tool_plan_flags(const char *cmd, const struct tier_store *s, const tool_plan_args *a, struct tt_plan_req *req);
/* train --full and plan --full (which decide the resident run without plan_make): the --hbm to plan full training
 * within, plan_hbm_bound's, and a line on stdout saying so where the GPU's figure binds (say). *by_gpu: 1 then, so
 * that a refusal gets tool_full_hbm_refused's words. */
uint64_t tool_full_hbm(const char *who, uint64_t hbm, uint64_t dev_avail, int what_if, int say, int *by_gpu);
/* After such a refusal: tt_lasterr says that its --hbm is the GPU's figure (raising one is no way out). */
void tool_full_hbm_refused(void);
struct tt_plan;
/* A note on stderr where plan was made within what the GPU can give (plan.hbm_from_avail: no --hbm, or a larger
 * one, on a GPU that cannot hold the plan asked for), for the commands that print no plan of their own (eval,
 * generate, chat): the layers stream then, and a run is slower than one resident. */
void tool_plan_gpu_note(const char *cmd, const struct tt_plan *plan);
/* After plan_make refused a's request (plan, train): when the LoRA state is
 * what does not fit (rank 1 passes the check --rank failed), tt_lasterr
 * becomes a message naming --rank and the largest rank that fits, instead of
 * a batch shape that would not help; otherwise it stays as it is. generate,
 * context, io_gbps, gflops: plan's request options (0 for train). */
void tool_plan_rank_hint(const struct tier_store *s, const tool_plan_args *a, int generate, long context,
                         double io_gbps, double gflops);

/* --act-dtype's value (NULL: auto) for a backend name: 1 bf16, 0 f32 (auto:
 * bf16 with cuda, f32 elsewhere), or -1 after printing a usage error for cmd. */
int tool_act_bf16(const char *cmd, const char *act_dtype, const char *device);

/* ---- the output rule (tools/outputs.c), checked before any work ----
 * An output is refused when it is empty, names an input of the command
 * (the same file through any path or link, or a file inside an input
 * directory) or its "<output>.partial" (written first) does, exists and force is 0 (--force), is not a regular file, or
 * sits in a directory that is missing or not writable. Each returns 0, or 2
 * after printing one line that names cmd, the flag and the path. inputs:
 * NULL-terminated; an empty string is skipped. */
int tool_check_out(const char *cmd, const char *flag, const char *path, const char *const *inputs, int force);
/* 1 when a and b name one existing file (through any link or path). */
int tool_same_file(const char *a, const char *b);
/* A directory output: it may exist (writable) or will be created (its parent
 * writable); each of names inside it is an output as above. what says what
 * those files are ("a checkpoint") in the message. */
int tool_check_out_dir(const char *cmd, const char *flag, const char *dir, const char *what, const char *const *names,
                       const char *const *inputs, int force);
/* 1 when DIR holds a training run (its CKPT_FILE): such a folder is continued
 * with --resume, never written into by another command. */
int tool_holds_run(const char *dir);
#define TOOL_LOCK_FILE ".tiertrain.lock"
/* Locks DIR (DIR/TOOL_LOCK_FILE, flock, this process's id written in it)
 * until the process exits, which removes the file (a crash leaves it, but
 * not the lock): the fd, or -1 after printing which process holds it. DIR
 * must exist; one lock a process. */
int tool_lock_dir(const char *cmd, const char *dir);
/* Releases the lock tool_lock_dir took (its file removed while still held) before the exit would; nothing
 * when this process holds none (then nothing in DIR is its own to remove). */
void tool_unlock_dir(void);

/* OpenBLAS takes a working buffer (128 MiB of address space) for each thread at its first product, and where
 * it cannot (an address-space limit, ulimit -v) it retries forever. Under such a limit this makes it take its
 * buffers now, before the command's own memory, once it has checked that the space is there for every thread's
 * (one of its threads may be retrying since it loaded): 0, or -ENOMEM after one sentence naming the limit (then
 * end with _exit: exit would join that thread). Without a limit it does nothing. main calls it before every
 * command. */
int tool_blas_ready(const char *cmd);
/* openblas_set_num_threads(threads) for a command's --threads (0: as it is), each thread it adds checked and
 * its buffer taken as tool_blas_ready does: 0, or -ENOMEM after the sentence. */
int tool_blas_threads(const char *cmd, int threads);

/* Prints "tiertrain CMD: <tt_lasterr()>" to stderr and returns exit code 1. */
int tool_fail(const char *cmd);
/* s (a path, as given) as a JSON string literal, quotes included: made valid UTF-8 (tt_escape) and quoted by
 * jansson, so a '"' or '\' stays JSON. malloc'ed. */
char *tool_json_quote(const char *s);
/* s (a path, as given) as a jansson string made valid UTF-8 (tt_escape), which json_pack's "o" takes; a bare
 * "s" would refuse a path that is not UTF-8 and lose the whole object. A new reference. */
struct json_t *tool_json_path(const char *s);
/* 1 when the process started with standard input closed (main gave it /dev/null). */
int tool_stdin_closed(void);

/* "17.85B" or "3.03M" into buf (at least 16 bytes); returns buf. */
char *fmt_params(uint64_t n, char *buf, unsigned long cap);

/* Progress reporting for long work on stderr: a line rewritten in place on a
 * terminal, one line per 10% otherwise. */
typedef struct tool_progress {
    const char *what;
    uint64_t total;
    double t0, last;
    int last_decile;
    int tty;
} tool_progress;
void progress_start(tool_progress *p, const char *what, uint64_t total);
void progress_update(tool_progress *p, uint64_t done);
void progress_end(tool_progress *p, uint64_t done);

#endif
