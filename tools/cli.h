/* tools/cli.h — one option table per command: parsing, defaults and the usage
 * text are all generated from it, so --help always lists every flag with its
 * default (STYLE.md 13). Unknown flags and bad values are errors. */
#ifndef TT_CLI_H
#define TT_CLI_H

#include <stdint.h>
#include <stdio.h>

typedef enum cli_type {
    CLI_STR,   /* const char * */
    CLI_INT,   /* long, within the range of int (counts, sizes, lengths: none is truncated where it is used) */
    CLI_FLOAT, /* double: finite, of magnitude at most FLT_MAX (no NaN, no infinity) */
    CLI_SEED,  /* uint64_t, 0 .. 2^64 - 1 */
    CLI_SIZE,  /* uint64_t, accepts 4096, 512K, 20G */
    CLI_FLAG,  /* int, set to 1 when present */
    CLI_STRS,  /* cli_strs: repeatable, every value kept in order (the default must be NULL) */
} cli_type;

/* A repeatable string option's values (CLI_STRS): at most CLI_STRS_MAX; one more is a usage error. */
#define CLI_STRS_MAX 16
typedef struct cli_strs {
    const char *v[CLI_STRS_MAX];
    int n;
} cli_strs;

typedef struct cli_opt {
    const char *name;    /* long name without dashes, e.g. "prune-ratio" */
    char short_name;     /* e.g. 'o', or 0 */
    cli_type type;
    void *dst;
    const char *def;     /* default as text (NULL: none / required handled by the command) */
    const char *metavar; /* e.g. "R" */
    const char *help;
} cli_opt;

typedef struct cli_cmd {
    const char *name;     /* "synth", "bench io" */
    const char *synopsis; /* positional part, e.g. "FILE" */
    const char *summary;  /* one sentence */
    cli_opt *opts;        /* terminated by an entry with name == NULL */
    int min_pos, max_pos; /* positional argument count bounds */
    const char *example;  /* an example command line, or NULL */
} cli_cmd;

/* Parses argv[0..argc) (argv[0] is the first argument after the command
 * name). Positional arguments go to pos[0..*npos). Returns 0 to run the
 * command, 1 when --help was printed (exit 0), 2 on a usage error (message
 * printed to stderr; exit 2). */
int cli_parse(const cli_cmd *cmd, int argc, char **argv, char **pos, int *npos);
/* 1 when the last cli_parse set the option whose dst is dst from the command line (not its default): a
 * command refuses a flag given where it has no effect. */
int cli_given(const void *dst);
void cli_usage(const cli_cmd *cmd, FILE *f);

#endif
