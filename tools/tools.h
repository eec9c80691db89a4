/* tools/tools.h — the subcommands of the tiertrain program and what they share. */
#ifndef TT_TOOLS_H
#define TT_TOOLS_H

#include <stdint.h>

int cmd_synth(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_train(int argc, char **argv);

/* Prints "tiertrain CMD: <tt_lasterr()>" to stderr and returns exit code 1. */
int tool_fail(const char *cmd);

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
