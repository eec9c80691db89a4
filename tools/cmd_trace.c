/* tools/cmd_trace.c — `tiertrain trace TRACE.json`: draws a trace written by
 * `--trace` (sched/trace.h's Chrome JSON) as an SVG timeline: one row per
 * track (io, copy, decompress, compute, spill, optimizer), each event a bar
 * (hover: its name, layer, start and length), the steps' starts as dashed
 * lines, a time axis, and per track the share of the window it was busy, with
 * the overlap figures of sched/trace.h (the IO side's and the compute side's
 * busy time, overlap efficiency) over the window. --step N draws one step. */
#include "core/base/common.h"
#include "io/atomicfile.h"
#include "sched/trace.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

typedef struct tev {
    double t0, t1; /* microseconds */
    const char *name;
    long long layer; /* -1: none */
    int row;
} tev;

typedef struct trow {
    int tid, sort, pos; /* pos: its place in the file's order */
    const char *name;
    int track;   /* sched/trace.h's track of that name, -1: another */
    double busy; /* microseconds within the window (union) */
} trow;

enum { MAX_ROWS = 64 };

static int row_of(trow *rows, int *nrows, int tid) {
    for (int r = 0; r < *nrows; r++)
        if (rows[r].tid == tid) return r;
    if (*nrows == MAX_ROWS) return -1;
    rows[*nrows] = (trow){tid, INT_MAX, *nrows, NULL, -1, 0};
    return (*nrows)++;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
/* By sort index, ties in the file's order; tracks without one last, by tid. */
static int cmp_row(const void *a, const void *b) {
    const trow *x = a, *y = b;
    if (x->sort != y->sort) return x->sort < y->sort ? -1 : 1;
    return x->sort == INT_MAX ? (x->tid > y->tid) - (x->tid < y->tid) : (x->pos > y->pos) - (x->pos < y->pos);
}

/* Text for SVG (the trace's names are the program's own, but a file is input). */
static void put_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else if ((unsigned char)*s >= 0x20) fputc(*s, f);
    }
}

static const char *track_color(int track) {
    static const char *const c[TRACE_N_TRACKS] = {[TRACE_IO] = "#4e79a7",         [TRACE_COPY] = "#f28e2b",
                                                  [TRACE_DECOMPRESS] = "#76b7b2", [TRACE_COMPUTE] = "#59a14f",
                                                  [TRACE_SPILL] = "#e15759",      [TRACE_OPT] = "#b07aa1"};
    return track >= 0 && track < TRACE_N_TRACKS ? c[track] : "#9c755f";
}

/* A tick step of 1, 2 or 5 times a power of ten giving about 8 ticks over span. */
static double tick_step(double span) {
    double raw = span / 8, p = pow(10, floor(log10(raw)));
    return raw / p < 2 ? p : raw / p < 5 ? 2 * p : 5 * p;
}

static const char *fmt_us(double us, char *b, size_t cap) {
    if (us == 0) snprintf(b, cap, "0");
    else if (fabs(us) >= 1e6) snprintf(b, cap, "%.3g s", us / 1e6);
    else if (fabs(us) >= 1e3) snprintf(b, cap, "%.3g ms", us / 1e3);
    else snprintf(b, cap, "%.3g us", us);
    return b;
}

int cmd_trace(int argc, char **argv) {
    const char *out_s;
    long step, width;
    double from_ms, to_ms;
    int force;
    cli_opt opts[] = {
        {"out", 'o', CLI_STR, &out_s, NULL, "FILE", "the SVG to write (default: the trace's name with .svg for .json)"},
        {"step", 0, CLI_INT, &step, "0", "N", "draw step N only (1: the first step the trace marks; 0: the whole trace)"},
        {"from", 0, CLI_FLOAT, &from_ms, "-1", "MS", "draw from this time (milliseconds since the trace's start; -1: its start)"},
        {"to", 0, CLI_FLOAT, &to_ms, "-1", "MS", "draw up to this time (milliseconds; -1: the end)"},
        {"width", 0, CLI_INT, &width, "1400", "PX", "the picture's width in pixels (400..20000)"},
        {"force", 0, CLI_FLAG, &force, NULL, NULL, "replace an existing output file"},
        {0},
    };
    cli_cmd cmd = {"trace", "TRACE.json",
                   "Draws a trace written by --trace (train, eval, bench overlap) as an SVG timeline: one row per track "
                   "(NVMe reads, copies, decompression, compute, spills, optimizer), each event a bar, the steps' "
                   "starts marked, and how busy each track and each side (IO, compute) was, with the overlap efficiency, "
                   "over the window drawn.",
                   opts, 1, 1, "tiertrain trace run.trace.json --step 2 -o step2.svg"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    const char *bad = step < 0                                  ? "--step must be 0 (the whole trace) or a step number"
                      : width < 400 || width > 20000              ? "--width must be 400..20000 pixels"
                      : from_ms < 0 && from_ms != -1              ? "--from must be a time >= 0 ms (or -1: the start)"
                      : to_ms < 0 && to_ms != -1                  ? "--to must be a time >= 0 ms (or -1: the end)"
                      : to_ms != -1 && to_ms <= (from_ms > 0 ? from_ms : 0) ? "--to must be after --from (and after 0)"
                      : step && (from_ms != -1 || to_ms != -1)    ? "--step is not combined with --from or --to"
                                                                  : NULL;
    if (bad) {
        fprintf(stderr, "tiertrain trace: %s\n", bad);
        return 2;
    }
    const char *in = pos[0];
    char *out;
    {
        const char *base = out_s ? out_s : in;
        size_t n = strlen(base);
        out = tt_xmalloc(n + 5);
        memcpy(out, base, n + 1);
        if (!out_s) {
            if (n > 5 && strcmp(in + n - 5, ".json") == 0) out[n - 5] = 0;
            strcat(out, ".svg");
        }
    }
    const char *inputs[] = {in, NULL};
    if (tool_check_out("trace", "-o", out, inputs, force)) {
        free(out);
        return 2;
    }

    struct stat ist;
    char why[160] = "";
    if (stat(in, &ist) != 0) snprintf(why, sizeof why, errno == ENOENT ? "does not exist" : "cannot be read (%s)",
                                      strerror(errno));
    else if (!S_ISREG(ist.st_mode)) snprintf(why, sizeof why, S_ISDIR(ist.st_mode) ? "is a directory" : "is not a regular file");
    if (*why) {
        fprintf(stderr, "tiertrain trace: %s %s; give a trace written with --trace on train, eval or bench overlap\n",
                in, why);
        free(out);
        return 1;
    }
    json_error_t jerr;
    json_t *root = json_load_file(in, 0, &jerr);
    json_t *evs = root ? json_object_get(root, "traceEvents") : NULL;
    if (!root || !json_is_array(evs)) {
        if (!root)
            fprintf(stderr, "tiertrain trace: %s is not a trace (line %d: %s); write one with --trace on train, eval or "
                            "bench overlap\n", in, jerr.line, jerr.text);
        else fprintf(stderr, "tiertrain trace: %s has no traceEvents array: not a trace written by --trace\n", in);
        json_decref(root);
        free(out);
        return 1;
    }
    trow rows[MAX_ROWS];
    int nrows = 0;
    size_t nev = 0, nsteps = 0, n = json_array_size(evs);
    tev *ev = tt_xmalloc((n ? n : 1) * sizeof *ev);
    double *steps = tt_xmalloc((n ? n : 1) * sizeof *steps), tmax = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(evs, i), *ph = json_object_get(e, "ph"), *args = json_object_get(e, "args");
        const char *p = json_string_value(ph), *name = json_string_value(json_object_get(e, "name"));
        json_t *tid_j = json_object_get(e, "tid"), *ts = json_object_get(e, "ts");
        if (!p || !json_is_integer(tid_j)) continue;
        int tid = (int)json_integer_value(tid_j);
        if (!strcmp(p, "M") && name && (!strcmp(name, "thread_name") || !strcmp(name, "thread_sort_index"))) {
            int r = row_of(rows, &nrows, tid);
            if (r < 0) continue;
            if (!strcmp(name, "thread_name")) rows[r].name = json_string_value(json_object_get(args, "name"));
            else rows[r].sort = (int)json_integer_value(json_object_get(args, "sort_index"));
        } else if (!strcmp(p, "i") && name && !strcmp(name, "step") && json_is_number(ts)) {
            steps[nsteps++] = json_number_value(ts);
        } else if (!strcmp(p, "X") && json_is_number(ts) && json_is_number(json_object_get(e, "dur"))) {
            int r = row_of(rows, &nrows, tid);
            double t0 = json_number_value(ts), d = json_number_value(json_object_get(e, "dur"));
            if (r < 0 || !isfinite(t0) || !isfinite(d) || d < 0 || !isfinite(t0 + d)) continue;
            json_t *l = json_object_get(args, "layer");
            ev[nev++] = (tev){t0, t0 + d, name ? name : "?", json_is_integer(l) ? json_integer_value(l) : -1, r};
            if (t0 + d > tmax) tmax = t0 + d;
        }
    }
    if (nev == 0) {
        fprintf(stderr, "tiertrain trace: %s holds no event to draw; write a trace with --trace on train, eval or bench "
                        "overlap\n", in);
        rc = 1;
        goto done;
    }
    /* the window, microseconds */
    double w0 = 0, w1 = tmax;
    qsort(steps, nsteps, sizeof *steps, cmp_double);
    if (step) {
        if ((size_t)step > nsteps) {
            fprintf(stderr, "tiertrain trace: %s marks %zu step%s; --step must be 1..%zu (0: the whole trace)\n", in,
                    nsteps, nsteps == 1 ? "" : "s", nsteps);
            rc = 2;
            goto done;
        }
        w0 = steps[step - 1];
        w1 = (size_t)step < nsteps ? steps[step] : tmax;
    }
    if (from_ms >= 0) w0 = from_ms * 1e3;
    if (to_ms >= 0) w1 = to_ms * 1e3;
    size_t shown = 0;
    for (size_t i = 0; i < nev; i++) shown += ev[i].t1 > w0 && ev[i].t0 < w1;
    if (!shown || !(w1 > w0)) {
        char a[32], b[32];
        char m[32];
        fprintf(stderr, "tiertrain trace: %s has no event between %s and %s (%zu events from 0 to %s); choose --from and "
                        "--to inside that\n", in, fmt_us(w0, a, sizeof a), fmt_us(w1, b, sizeof b), nev,
                fmt_us(tmax, m, sizeof m));
        rc = 1;
        goto done;
    }
    /* rows in the writer's order (the events follow their rows); busy time per row and per side in the window */
    int at[MAX_ROWS]; /* a row's place after the sort, by its place before */
    qsort(rows, (size_t)nrows, sizeof *rows, cmp_row);
    for (int r = 0; r < nrows; r++) {
        at[rows[r].pos] = r;
        rows[r].track = trace_track_of(rows[r].name);
    }
    for (size_t i = 0; i < nev; i++) ev[i].row = at[ev[i].row];
    tt_interval *iv = tt_xmalloc((nev ? nev : 1) * sizeof *iv);
    double io_busy = 0, cp_busy = 0;
    for (int side = -2; side < nrows; side++) { /* -2: IO side, -1: compute side, then each row */
        size_t k = 0;
        for (size_t i = 0; i < nev; i++) {
            int tr = rows[ev[i].row].track;
            int in_set = side >= 0 ? ev[i].row == side : tr >= 0 && trace_track_is_io(tr) == (side == -2);
            if (!in_set || ev[i].t1 <= w0 || ev[i].t0 >= w1) continue;
            iv[k++] = (tt_interval){ev[i].t0 > w0 ? ev[i].t0 : w0, ev[i].t1 < w1 ? ev[i].t1 : w1};
        }
        double u = trace_union_length(iv, k);
        if (side == -2) io_busy = u;
        else if (side == -1) cp_busy = u;
        else rows[side].busy = u;
    }
    free(iv);

    /* the picture */
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    TT_ASSERT(f); /* out of memory */
    const double L = 170, R = 20, top = 58, rh = 30, plot_w = (double)width - L - R, span = w1 - w0;
    const double H = top + rh * nrows + 56;
    char a[32], b[32], c[32];
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%ld\" "
               "height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", width, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"10\" y=\"20\" font-size=\"15\">");
    put_text(f, in);
    if (step) fprintf(f, ": step %ld", step);
    fprintf(f, ", %s .. %s (%s)</text>\n", fmt_us(w0, a, sizeof a), fmt_us(w1, b, sizeof b), fmt_us(span, c, sizeof c));
    fprintf(f, "<text x=\"10\" y=\"40\">IO side busy %.1f%%, compute side busy %.1f%%, overlap efficiency %.3f "
               "(the busier side's time over the window; 1: it never waited)</text>\n",
            100 * io_busy / span, 100 * cp_busy / span, (io_busy > cp_busy ? io_busy : cp_busy) / span);
    for (int r = 0; r < nrows; r++) {
        double y = top + rh * r;
        fprintf(f, "<text x=\"10\" y=\"%.1f\">", y + rh / 2 + 4);
        if (rows[r].name) put_text(f, rows[r].name);
        else fprintf(f, "track %d", rows[r].tid);
        fprintf(f, "</text><text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#555\">%.1f%%</text>\n", L - 8,
                y + rh / 2 + 4, 100 * rows[r].busy / span);
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#f3f3f3\"/>\n", L, y + 3, plot_w,
                rh - 6);
    }
    for (size_t i = 0; i < nev; i++) {
        const tev *e = &ev[i];
        if (e->t1 <= w0 || e->t0 >= w1) continue;
        double x0 = L + ((e->t0 > w0 ? e->t0 : w0) - w0) / span * plot_w;
        double x1 = L + ((e->t1 < w1 ? e->t1 : w1) - w0) / span * plot_w;
        fprintf(f, "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" fill=\"%s\"><title>", x0,
                top + rh * e->row + 5, x1 - x0 < 0.5 ? 0.5 : x1 - x0, rh - 10, track_color(rows[e->row].track));
        put_text(f, e->name);
        if (e->layer >= 0) fprintf(f, " layer %lld", e->layer);
        fprintf(f, ": at %s, %s</title></rect>\n", fmt_us(e->t0, a, sizeof a), fmt_us(e->t1 - e->t0, b, sizeof b));
    }
    const double ybot = top + rh * nrows;
    for (size_t k = 0; k < nsteps; k++) {
        if (steps[k] < w0 || steps[k] > w1) continue;
        double x = L + (steps[k] - w0) / span * plot_w;
        int right = x > L + plot_w - 50; /* the label left of a line near the right edge */
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>"
                   "<text x=\"%.2f\" y=\"%.1f\" font-size=\"10\"%s>step %zu</text>\n",
                x, top - 4, x, ybot, right ? x - 3 : x + 3, top - 6, right ? " text-anchor=\"end\"" : "", k + 1);
    }
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000\"/>\n", L, ybot + 4, L + plot_w,
            ybot + 4);
    /* about 8 ticks; by count, so that a step below the doubles' spacing at huge times cannot stall the loop */
    double st = tick_step(span), t_first = ceil(w0 / st) * st;
    for (int k = 0; k < 32; k++) {
        double t = t_first + k * st;
        if (t > w1 + st * 1e-9) break;
        double x = L + (t - w0) / span * plot_w;
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#000\"/><text x=\"%.2f\" y=\"%.1f\" "
                   "text-anchor=\"middle\">%s</text>\n", x, ybot + 4, x, ybot + 9, x, ybot + 22, fmt_us(t, a, sizeof a));
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">time since the trace's start; %zu events drawn of %zu</text>\n"
               "</svg>\n", L, ybot + 42, shown, nev);
    TT_ASSERT(fclose(f) == 0);
    if (atomic_write_file(out, buf, blen)) rc = tool_fail("trace");
    else printf("%s: %zu events on %d tracks, %s .. %s; IO side busy %.1f%%, compute side %.1f%%, overlap efficiency "
                "%.3f\n", out, shown, nrows, fmt_us(w0, a, sizeof a), fmt_us(w1, b, sizeof b), 100 * io_busy / span,
                100 * cp_busy / span, (io_busy > cp_busy ? io_busy : cp_busy) / span);
    free(buf);
done:
    free(ev);
    free(steps);
    json_decref(root);
    free(out);
    return rc;
}
