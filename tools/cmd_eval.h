/* tools/cmd_eval.h — what the two halves of `tiertrain eval` share: the
 * command with --data (tools/cmd_eval.c) and --task (tools/cmd_eval_task.c).
 * Used by those two files only. */
#ifndef TT_TOOLS_CMD_EVAL_H
#define TT_TOOLS_CMD_EVAL_H

#include "core/exec.h"
#include "core/lora.h"
#include "io/peft.h"
#include "io/tier.h"
#include "sched/plan.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <regex.h>
#include <stdint.h>

/* The default --answer-regex: the last number in the completion (GSM8K). */
#define EVAL_ANSWER_RE "(-?[0-9][0-9,.]*)"

/* A progress line on stderr for evaluations that take over a second:
 * rewritten in place on a terminal, one line per 10% otherwise. */
typedef struct eval_progress {
    double t0, last;
    int decile, tty, shown;
} eval_progress;

/* unit: what done/total count ("tokens"); loss_sum: NAN for none. */
void eval_progress_show(eval_progress *p, uint64_t done, uint64_t total, const char *unit, double loss_sum);
/* Ends a progress line left open on a terminal. */
void eval_progress_end(const eval_progress *p);

/* What both kinds of evaluation take: the store, the adapter (a: NULL for
 * none), the LoRA shape the runtime carries (tool_lora_cfg) and the budget
 * flags. */
typedef struct eval_setup {
    const char *model, *adapter;
    tier_store *st;
    const peft_adapter *a;
    tt_lora_cfg lora;
    tool_plan_args pa;
    int as_json;
} eval_setup;

/* A plan for the training executor (forward only) and the executor, with
 * the adapter loaded. Returns 0, 2 (a usage error, printed) or 1 (printed). */
int eval_exec_open(const eval_setup *es, const tool_plan_args *pa, tt_plan *plan, tt_exec **ex);

/* The --task flags. */
typedef struct eval_task_opts {
    const char *path, *tok_spec, *samples;
    const cli_strs *stop;       /* --stop, repeatable (n 0: none) */
    const regex_t *re;
    long limit, max_new, batch;
    int no_bos;
} eval_task_opts;

/* --task: accuracy on a task file (tools/cmd_eval_task.c). Returns the exit
 * code. */
int eval_task(const eval_setup *es, const eval_task_opts *o);

#endif
