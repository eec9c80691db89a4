/* tools/cli.c — table-driven option parsing for the tiertrain commands. */
#include "tools/cli.h"

#include "core/base/common.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* An argument as a message shows it: through tt_escape, so no escape sequence or line break from the command
 * line reaches the terminal (an unknown option may be a file named "-\033[2J"); cut at 256 bytes. */
#define CLI_SHOWN 256

static int set_value(const cli_cmd *cmd, const cli_opt *o, const char *v) {
    char *end, e[CLI_SHOWN];
    switch (o->type) {
    case CLI_STR: *(const char **)o->dst = v; return 0;
    case CLI_STRS: {
        cli_strs *a = o->dst;
        if (a->n == CLI_STRS_MAX) {
            fprintf(stderr, "tiertrain %s: --%s may be given at most %d times\n", cmd->name, o->name, CLI_STRS_MAX);
            return 2;
        }
        a->v[a->n++] = v;
        return 0;
    }
    case CLI_FLAG: *(int *)o->dst = 1; return 0;
    case CLI_INT: {
        errno = 0;
        long x = strtol(v, &end, 10);
        if (errno == ERANGE || (end != v && !*end && (x < INT_MIN || x > INT_MAX))) {
            /* every count, size and length a flag gives is an int where it is used: none is truncated */
            fprintf(stderr, "tiertrain %s: --%s must be a whole number from %d to %d, not '%s'\n", cmd->name,
                    o->name, INT_MIN, INT_MAX, tt_escape(v, e, sizeof e));
            return 2;
        }
        if (errno || end == v || *end) break;
        *(long *)o->dst = x;
        return 0;
    }
    case CLI_SEED: {
        errno = 0;
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || end == v || *end || *v == '-') {
            fprintf(stderr, "tiertrain %s: --%s expects a whole number from 0 to %llu, not '%s'\n", cmd->name,
                    o->name, (unsigned long long)UINT64_MAX, tt_escape(v, e, sizeof e));
            return 2;
        }
        *(uint64_t *)o->dst = (uint64_t)x;
        return 0;
    }
    case CLI_FLOAT: {
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end) break;
        /* no NaN, no infinity, nothing a float cannot hold (an underflow to a tiny value is kept) */
        if (!isfinite(x) || fabs(x) > FLT_MAX) {
            fprintf(stderr, "tiertrain %s: --%s must be a finite number of magnitude at most %g, not '%s'\n",
                    cmd->name, o->name, (double)FLT_MAX, tt_escape(v, e, sizeof e));
            return 2;
        }
        *(double *)o->dst = x;
        return 0;
    }
    case CLI_SIZE:
        if (tt_parse_size(v, (uint64_t *)o->dst) == 0) return 0;
        fprintf(stderr, "tiertrain %s: --%s expects a size such as 4096, 512M or 20G, not '%s'\n", cmd->name,
                o->name, tt_escape(v, e, sizeof e));
        return 2;
    }
    fprintf(stderr, "tiertrain %s: --%s expects a %s, not '%s'\n", cmd->name, o->name,
            o->type == CLI_INT ? "whole number" : "number", tt_escape(v, e, sizeof e));
    return 2;
}

void cli_usage(const cli_cmd *cmd, FILE *f) {
    fprintf(f, "usage: tiertrain %s [options]%s%s\n\n%s\n\noptions:\n", cmd->name, cmd->synopsis ? " " : "",
            cmd->synopsis ? cmd->synopsis : "", cmd->summary);
    for (const cli_opt *o = cmd->opts; o && o->name; o++) {
        char left[64];
        if (o->short_name)
            snprintf(left, sizeof left, "-%c, --%s%s%s", o->short_name, o->name, o->metavar ? " " : "",
                     o->metavar ? o->metavar : "");
        else
            snprintf(left, sizeof left, "    --%s%s%s", o->name, o->metavar ? " " : "", o->metavar ? o->metavar : "");
        fprintf(f, "  %-28s %s", left, o->help);
        if (o->type == CLI_STRS) fprintf(f, " (repeatable, up to %d times)", CLI_STRS_MAX);
        if (o->def) fprintf(f, " (default: %s)", o->def);
        /* a value option without a default says so, unless its text already does (required, or a default that
         * depends on other flags) */
        else if (o->type != CLI_FLAG && !strstr(o->help, "default") && !strstr(o->help, "required"))
            fputs(" (default: none)", f);
        fputc('\n', f);
    }
    fprintf(f, "  %-28s %s\n", "-h, --help", "show this help and exit");
    if (cmd->example) fprintf(f, "\nexample:\n  %s\n", cmd->example);
}

/* The options the last cli_parse was given (their dst), for cli_given. */
static const void *g_given[64];
static int g_ngiven;

int cli_given(const void *dst) {
    for (int i = 0; i < g_ngiven; i++)
        if (g_given[i] == dst) return 1;
    return 0;
}

static void mark_given(const cli_opt *o) {
    if (!cli_given(o->dst) && g_ngiven < (int)(sizeof g_given / sizeof g_given[0])) g_given[g_ngiven++] = o->dst;
}

/* Edit distance between a[0..n) and b[0..m) (insertions, deletions, substitutions), capped at 9. */
static int edits(const char *a, size_t n, const char *b, size_t m) {
    if (n > 40 || m > 40) return 9;
    int d[41][41];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int x = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]), y = d[i - 1][j] + 1, z = d[i][j - 1] + 1;
            d[i][j] = x < y ? (x < z ? x : z) : (y < z ? y : z);
        }
    return d[n][m] < 9 ? d[n][m] : 9;
}

/* The option an unknown long one (nm, up to any '=') was likely meant as: one whose name starts with it or that it
 * starts with (--out for --output), else one within two edits (--micro-batches for --micro-batch); NULL where none
 * is, or two are equally near. */
static const cli_opt *nearest(const cli_cmd *cmd, const char *nm) {
    const char *eq = strchr(nm, '=');
    size_t len = eq ? (size_t)(eq - nm) : strlen(nm);
    if (len < 3) return NULL;
    const cli_opt *best = NULL;
    int best_d = 3, ties = 0;
    for (const cli_opt *c = cmd->opts; c && c->name; c++) {
        size_t cl = strlen(c->name);
        int dd = cl >= 3 && strncmp(c->name, nm, cl < len ? cl : len) == 0 ? 1 : edits(nm, len, c->name, cl);
        if (dd < best_d) best = c, best_d = dd, ties = 0;
        else if (dd == best_d) ties++;
    }
    return ties ? NULL : best;
}

int cli_parse(const cli_cmd *cmd, int argc, char **argv, char **pos, int *npos) {
    *npos = 0;
    g_ngiven = 0;
    for (cli_opt *o = cmd->opts; o && o->name; o++) {
        if (o->type == CLI_FLAG) *(int *)o->dst = 0;
        else if (o->type == CLI_STRS) {
            TT_ASSERT(!o->def); /* a repeated flag adds to its values: a default would be one of them */
            ((cli_strs *)o->dst)->n = 0;
        } else if (o->def) {
            int rc = set_value(cmd, o, o->def);
            TT_ASSERT(rc == 0); /* defaults in the tables must parse */
        } else if (o->type == CLI_STR) *(const char **)o->dst = NULL;
    }
    int only_pos = 0;
    char e[CLI_SHOWN];
    for (int i = 0; i < argc; i++) {
        char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            if (*npos >= cmd->max_pos) {
                fprintf(stderr, "tiertrain %s: unexpected argument '%s' (see --help)\n", cmd->name,
                        tt_escape(a, e, sizeof e));
                return 2;
            }
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) { only_pos = 1; continue; }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cli_usage(cmd, stdout);
            return 1;
        }
        const cli_opt *o = NULL;
        const char *val = NULL;
        if (a[1] == '-') {
            const char *nm = a + 2, *eq = strchr(nm, '=');
            size_t len = eq ? (size_t)(eq - nm) : strlen(nm);
            for (const cli_opt *c = cmd->opts; c && c->name; c++)
                if (strlen(c->name) == len && strncmp(c->name, nm, len) == 0) o = c;
            if (eq) val = eq + 1;
        } else if (a[2] == '\0') {
            for (const cli_opt *c = cmd->opts; c && c->name; c++)
                if (c->short_name == a[1]) o = c;
        }
        if (!o) {
            const cli_opt *near = a[1] == '-' ? nearest(cmd, a + 2) : NULL;
            char hint[96] = "";
            if (near) snprintf(hint, sizeof hint, "did you mean --%s? ", near->name);
            fprintf(stderr, "tiertrain %s: unknown option '%s' (%ssee tiertrain %s --help)\n", cmd->name,
                    tt_escape(a, e, sizeof e), hint, cmd->name);
            return 2;
        }
        mark_given(o);
        if (o->type == CLI_FLAG) {
            if (val) {
                fprintf(stderr, "tiertrain %s: --%s takes no value\n", cmd->name, o->name);
                return 2;
            }
            *(int *)o->dst = 1;
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tiertrain %s: %s needs a value (see --help)\n", cmd->name,
                        tt_escape(a, e, sizeof e));
                return 2;
            }
            val = argv[++i];
        }
        int rc = set_value(cmd, o, val);
        if (rc) return rc;
    }
    if (*npos < cmd->min_pos) {
        fprintf(stderr, "tiertrain %s: missing %s (see tiertrain %s --help)\n", cmd->name,
                cmd->synopsis ? cmd->synopsis : "argument", cmd->name);
        return 2;
    }
    return 0;
}
