/* tools/cmd_bench.c — `tiertrain bench io FILE`: reads every layer extent of a
 * store as the trainer does (O_DIRECT, io_uring, registered staging slots,
 * pinned IO thread) and, in the same run, with the pread threads that read
 * where io_uring is refused, and with plain buffered read(2) calls after
 * dropping the file from the page cache. */
#include "core/base/common.h"
#include "io/tier.h"
#include "io/uring.h"
#include "sched/scan.h"
#include "sched/topo.h"
#include "tools/cli.h"
#include "tools/tools.h"
#include "core/base/rng.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
#include "kernels/backend.h"
#include "core/exec.h"
#include "sched/plan.h"
#include "sched/trace.h"

#include <cblas.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

typedef struct bench_ctx {
    int verify;
    const tier_store *s;
    uint32_t bad;
    uint64_t done;
    tool_progress prog;
    int quiet;
} bench_ctx;

static int on_piece(void *user, uint32_t e, uint64_t off, const void *data, uint64_t len, int last) {
    bench_ctx *b = user;
    if (b->verify && off == 0 && last) b->bad += tier_extent_check(b->s, e, data) != 0;
    b->done += len;
    if (!b->quiet) progress_update(&b->prog, b->done);
    return 0;
}

/* Plain buffered reads of the same extents, page cache dropped first. */
static int buffered_read(const tier_store *s, const uint32_t *ext, uint32_t n, uint64_t chunk, double *secs,
                         uint64_t *bytes) {
    int fd = open(tier_path(s), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return TT_FAIL(-errno, "cannot open %s: %s", tier_path(s), strerror(errno));
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    uint8_t *buf = tt_xmalloc(chunk);
    *bytes = 0;
    double t0 = tt_now();
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        const tier_extent *e = tier_extent_at(s, ext[i]);
        for (uint64_t off = 0; off < e->stored;) {
            uint64_t k = e->stored - off < chunk ? e->stored - off : chunk;
            ssize_t r = pread(fd, buf, k, (off_t)(e->offset + off));
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                rc = TT_FAIL(r < 0 ? -errno : -EIO, "buffered read of %s at offset %llu failed: %s", tier_path(s),
                             (unsigned long long)(e->offset + off), r < 0 ? strerror(errno) : "end of file");
                break;
            }
            off += (uint64_t)r;
            *bytes += (uint64_t)r;
        }
    }
    *secs = tt_now() - t0;
    free(buf);
    close(fd);
    return rc;
}

/* One pass over the extents with engine (UR_ENGINE_*), a progress bar named after it. */
static int scan_pass(const tier_store *s, const uint32_t *ext, uint32_t n, const scan_opts *base, int engine,
                     int verify, uint64_t total, scan_stats *st, const char *file) {
    scan_opts so = *base;
    so.engine = engine;
    bench_ctx b = {verify, s, 0, 0, {0}, 0};
    progress_start(&b.prog, engine == UR_ENGINE_THREADS ? "pread threads" : "layers", total);
    if (scan_extents(s, ext, n, &so, on_piece, &b, st)) return tool_fail("bench io");
    if (b.bad) {
        fprintf(stderr, "tiertrain bench io: %s: %u layer extents failed their checksum; run `tiertrain verify`\n",
                file, b.bad);
        return 1;
    }
    return 0;
}

static int bench_io(int argc, char **argv) {
    long qd, slots;
    uint64_t chunk;
    int as_json, verify, no_buffered, no_threads, no_pin;
    cli_opt opts[] = {
        {"qd", 0, CLI_INT, &qd, "32", "N", "reads in flight (io_uring; where it is refused, min(N, 16) pread threads)"},
        {"chunk", 0, CLI_SIZE, &chunk, "1M", "SIZE", "bytes per read request (multiple of 4K)"},
        {"slots", 0, CLI_INT, &slots, "2", "N", "staging slots (layers in flight), each the size of the largest layer"},
        {"verify", 0, CLI_FLAG, &verify, NULL, NULL, "also check every extent's checksum on the consuming thread"},
        {"no-buffered", 0, CLI_FLAG, &no_buffered, NULL, NULL, "skip the buffered-read comparison"},
        {"no-threads", 0, CLI_FLAG, &no_threads, NULL, NULL,
         "skip the comparison with the pread threads (the engine where io_uring is refused)"},
        {"no-pin", 0, CLI_FLAG, &no_pin, NULL, NULL, "do not pin the IO thread to a core"},
        {"json", 0, CLI_FLAG, &as_json, NULL, NULL, "end with one JSON object on the last line"},
        {0},
    };
    cli_cmd cmd = {"bench io", "FILE",
                   "Reads every layer extent of a store as the trainer will (O_DIRECT + io_uring) and compares with "
                   "the pread threads that read where io_uring is refused, and with plain buffered reads. "
                   "TT_IO_ENGINE=threads makes the threads the first engine too.",
                   opts, 1, 1, "tiertrain bench io model.tier --qd 32 --chunk 1M --json"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    const char *bad = qd < 1 || qd > 4096 ? "--qd must be 1..4096"
                    : chunk < 4096 || chunk % 4096 || chunk > (1u << 30) ? "--chunk must be a multiple of 4K up to 1G"
                    : slots < 1 || slots > 64 ? "--slots must be 1..64" : NULL;
    if (bad) {
        fprintf(stderr, "tiertrain bench io: %s\n", bad);
        return 2;
    }
    tier_store *s;
    if (tier_open(&s, pos[0])) return tool_fail("bench io");
    const tt_config *cfg = tier_config(s);
    uint32_t n = cfg->n_layers;
    uint32_t *ext = tt_xcalloc(n, sizeof *ext);
    uint64_t total = 0, largest = 0;
    for (uint32_t l = 0; l < n; l++) {
        ext[l] = TT_EXTENT_LAYER(l);
        uint64_t b = tier_extent_at(s, ext[l])->stored;
        total += b;
        largest = b > largest ? b : largest;
    }
    /* the staging slots are pinned host memory, each the largest layer: refused before a 70B store's --slots 64
     * (27 GB) takes the machine down */
    uint64_t avail = tt_mem_available(), need = (uint64_t)slots * largest;
    if (avail && need > avail / 2) {
        char nb[32], ab[32], lb[32];
        fprintf(stderr, "tiertrain bench io: --slots %ld needs %s of staging memory (%ld x the largest layer, %s), "
                        "more than half of the %s this machine has available; lower --slots\n", slots,
                tt_fmt_bytes(need, nb, sizeof nb), slots, tt_fmt_bytes(largest, lb, sizeof lb),
                tt_fmt_bytes(avail, ab, sizeof ab));
        free(ext);
        tier_close(s);
        return 2;
    }
    tt_topo *topo = NULL;
    char topo_desc[256] = "unknown";
    if (topo_init(&topo) == 0) topo_describe(topo, topo_desc, sizeof topo_desc);
    else fprintf(stderr, "bench io: hwloc topology unavailable: %s\n", tt_lasterr());
    char tb[32], cb[32];
    printf("bench io: %s, %u layer extents, %s; qd %ld, chunk %s, %ld slots\n", pos[0], n,
           tt_fmt_bytes(total, tb, sizeof tb), qd, tt_fmt_bytes(chunk, cb, sizeof cb), slots);
    printf("topology: %s\n", topo_desc);

    scan_opts so;
    scan_opts_default(&so);
    so.qd = (unsigned)qd;
    so.chunk = chunk;
    so.slots = (unsigned)slots;
    so.topo = no_pin ? NULL : topo;
    scan_stats st, tst;
    int exit_code = scan_pass(s, ext, n, &so, UR_ENGINE_AUTO, verify, total, &st, pos[0]);
    if (exit_code) goto out;
    double gbps = (double)st.bytes / st.wall / 1e9, tgbps = 0, tsecs = 0;
    if (st.pinned_core >= 0) printf("io thread: pinned to core %d\n", st.pinned_core);
    else printf("io thread: not pinned%s%s\n", st.pin_error[0] ? ": " : "", st.pin_error);
    char label[48];
    const char *eng = st.workers ? "threads" : "io_uring";
    snprintf(label, sizeof label, "%s %s:", eng,
             st.direct ? "O_DIRECT" : "page cache");
    printf("%-19s %8.3f s  %7.3f GB/s  (consumer waited %.3f s)\n", label, st.wall, gbps, st.consumer_wait);
    if (!st.workers) {
        if (!no_threads) { /* the engine where io_uring is refused, on the same bytes */
            exit_code = scan_pass(s, ext, n, &so, UR_ENGINE_THREADS, verify, total, &tst, pos[0]);
            if (exit_code) goto out;
            tsecs = tst.wall;
            tgbps = (double)tst.bytes / tst.wall / 1e9;
            printf("pread threads:      %8.3f s  %7.3f GB/s  (%s, %s)\n", tsecs, tgbps, tst.engine,
                   tst.direct ? "O_DIRECT" : "page cache");
            printf("io_uring / threads: %.2fx\n", gbps / tgbps);
        }
    } else {
        printf("engine: %s (TT_IO_ENGINE, or io_uring refused here)\n", st.engine);
    }
    double bsecs = 0, bgbps = 0;
    uint64_t bbytes = 0;
    if (!no_buffered) {
        if (buffered_read(s, ext, n, chunk, &bsecs, &bbytes)) {
            exit_code = tool_fail("bench io");
            goto out;
        }
        bgbps = (double)bbytes / bsecs / 1e9;
        printf("buffered read(2):   %8.3f s  %7.3f GB/s  (page cache dropped with fadvise first)\n", bsecs, bgbps);
        printf("%s / buffered: %.2fx\n", eng, gbps / bgbps);
    }
    if (as_json) {
        /* The layer extents are contiguous: [range_offset, range_offset + range_bytes) is what
         * `make bench` hands to fio for the side-by-side comparison. */
        const tier_extent *first = tier_extent_at(s, ext[0]), *last = tier_extent_at(s, ext[n - 1]);
        uint64_t range_end = tt_align_up(last->offset + last->stored, UR_ALIGN);
        json_t *j = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:s,s:I,s:i,s:b}", "file",
                              pos[0], "engine", st.engine,
                              "layers", (json_int_t)n, "bytes", (json_int_t)st.bytes, "range_offset",
                              (json_int_t)first->offset, "range_bytes", (json_int_t)(range_end - first->offset),
                              "qd", (json_int_t)qd, "chunk",
                              (json_int_t)chunk, "slots", (json_int_t)slots, "seconds", st.wall, "gbps", gbps,
                              "threads_seconds", tsecs, "threads_gbps", tgbps, "buffered_seconds", bsecs,
                              "buffered_gbps", bgbps, "topology", topo_desc, "io_core",
                              (json_int_t)st.pinned_core, "verified", verify, "direct", st.direct);
        char *txt = json_dumps(j, JSON_COMPACT);
        puts(txt);
        free(txt);
        json_decref(j);
    }
out:
    topo_free(topo);
    free(ext);
    tier_close(s);
    return exit_code;
}


/* ---- bench overlap ------------------------------------------------------------ */

/* Runs `steps` training steps on e with fixed random tokens; returns seconds. */
static int timed_steps(tt_exec *e, int steps, double *secs, tt_trace *trace, double *io_busy, double *compute_busy) {
    const tt_plan *p = exec_plan(e);
    size_t n = (size_t)p->req.K * p->req.B * p->req.seq;
    uint32_t vocab = model_config(exec_model(e))->vocab;
    int32_t *in = tt_xmalloc(n * sizeof *in), *tg = tt_xmalloc(n * sizeof *tg);
    tt_real *w = tt_xmalloc(n * sizeof *w);
    tt_rng r;
    rng_seed(&r, 1, 2);
    for (size_t i = 0; i < n; i++) { in[i] = (int32_t)rng_below(&r, vocab); tg[i] = (int32_t)rng_below(&r, vocab); w[i] = 1; }
    int rc = 0;
    double t0 = tt_now();
    for (int st = 1; st <= steps && rc == 0; st++) {
        double ts = tt_now(), loss, g;
        if (trace) trace_step_begin(trace, ts);
        rc = exec_step(e, in, tg, w, 1e-4f, st, 0.9f, 0.999f, 1e-8f, 0.f, exec_user_cfg(&p->req.user).defer_optimizer ? 1.f : 0.f, 0, &loss, &g);
        if (trace && rc == 0) {
            tt_trace_stats s;
            trace_step_stats(trace, tt_now(), &s);
            *io_busy += s.io_busy;
            *compute_busy += s.compute_busy;
        }
    }
    *secs = tt_now() - t0;
    free(in); free(tg); free(w);
    return rc;
}

static int bench_overlap(int argc, char **argv) {
    const char *model, *trace_path;
    tool_plan_args a = {0};
    long steps, threads;
    int as_json, force;
    cli_opt opts[] = {
        {"model", 'm', CLI_STR, &model, NULL, "FILE", "model store (.tier) (required)"},
        TOOL_PLAN_OPTS(a),
        {"steps", 's', CLI_INT, &steps, "3", "N", "steps timed in each of the three runs"},
        {"threads", 0, CLI_INT, &threads, "0", "N", "BLAS threads (0: all cores)"},
        {"trace", 0, CLI_STR, &trace_path, NULL, "FILE", "Chrome trace of the streamed run"},
        {"force", 0, CLI_FLAG, &force, NULL, NULL, "replace the --trace FILE if it exists"},
        {"json", 0, CLI_FLAG, &as_json, NULL, NULL, "end with one JSON object on the last line"},
        {0},
    };
    cli_cmd cmd = {"bench overlap", NULL,
                   "Times training steps streamed under the budgets and, in the same run, the same steps with IO only "
                   "and with compute only (weights resident); prints the overlap efficiency = max(IO, compute) / streamed.",
                   opts, 0, 0,
                   "tiertrain bench overlap --model small-f32.tier --hbm 24M --host 1G --seq 128 --micro-batch 1 --batch-tokens 4096"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    if (!model || steps < 1 || threads < 0 || threads > 1024) { /* only what is wrong */
        fprintf(stderr, "tiertrain bench overlap: %s\n",
                !model ? "--model FILE is required (the store to time)"
                : steps < 1 ? "--steps must be at least 1" : "--threads must be 0..1024 (0: all cores)");
        return 2;
    }
    const char *inputs[] = {model, NULL};
    if (trace_path && tool_check_out("bench overlap", "--trace", trace_path, inputs, force)) return 2;
    if (tool_blas_threads("bench overlap", (int)threads)) return 1;
    tier_store *s = NULL;
    tt_exec *ex = NULL, *res_ex = NULL;
    tt_trace *trace = NULL;
    int exit_code = 1;
    atomic_partial tfile = {-1, NULL}; /* --trace held from now on: a second writer is refused before the runs */
    if (trace_path && atomic_partial_open(trace_path, &tfile)) { tool_fail("bench overlap"); goto out; }
    if (tier_open(&s, model)) { tool_fail("bench overlap"); goto out; }
    tt_plan_req req;
    if ((rc = tool_plan_flags("bench overlap", s, &a, &req))) { exit_code = rc; goto out; }
    req.no_host_cache = 1; /* every step reads its layers from NVMe (O_DIRECT) */
    tt_plan p, pr;
    if (plan_make(s, &req, &p)) { tool_fail("bench overlap"); goto out; }
    tt_plan_req rr = req;
    rr.hbm = rr.host = 0;
    rr.dev_avail = 0; /* resident, or the comparison means nothing: a GPU too small for it refuses the arena */
    rr.no_user_opt = !p.user_opt; /* the same products: a decoded layer in both or in neither */
    if (plan_make(s, &rr, &pr)) { tool_fail("bench overlap"); goto out; }
    char sb[32], db[32], hb[32];
    uint64_t layers = 0;
    for (uint32_t l = 0; l < tier_config(s)->n_layers; l++) layers += tier_extent_at(s, TT_EXTENT_LAYER(l))->stored;
    printf("bench overlap: %s, layers %s; plan: %d of %d slots, %d/%d activations spilled, device %s, host %s\n", model,
           tt_fmt_bytes(layers, sb, sizeof sb), p.slots, p.L, p.host_cells, p.dev_cells + p.host_cells,
           tt_fmt_bytes(p.dev_bytes, db, sizeof db), tt_fmt_bytes(p.host_bytes, hb, sizeof hb));
    printf("batch: %d micro-batches of %d x %d tokens per step, %ld steps per run\n", p.req.K, p.req.B, p.req.seq, steps);
    fflush(stdout);
    /* Streamed and compute-only (everything resident) steps alternate, one of
     * each per round, so that drift on a shared machine hits both alike; one
     * untimed step first on each (first touches, first loads). Then the IO
     * alone: the same layer loads with no compute. */
    double t_stream = 0, t_io, t_comp = 0, io_busy = 0, comp_busy = 0, dummy = 0, t1;
    trace = trace_create(256u << 10); /* the busy figures (cleared each step without --trace), or the --trace */
    if (exec_create(&ex, s, &p, 1, trace) || exec_create(&res_ex, s, &pr, 1, NULL)) {
        tool_fail("bench overlap");
        goto out;
    }
    if (timed_steps(ex, 1, &dummy, NULL, &dummy, &dummy) || timed_steps(res_ex, 1, &dummy, NULL, &dummy, &dummy)) {
        tool_fail("bench overlap");
        goto out;
    }
    be_prof_window(2); /* TT_PROFILE_OPS: the timed steps of both runs, without the warm-up */
    uint64_t io0 = exec_io_bytes(ex);
    for (long i = 0; i < steps; i++) {
        if (!trace_path) trace_clear(trace); /* the busy figures only: the buffer never fills, however many steps */
        if (timed_steps(ex, 1, &t1, trace, &io_busy, &comp_busy)) { tool_fail("bench overlap"); goto out; }
        t_stream += t1;
        if (timed_steps(res_ex, 1, &t1, NULL, &dummy, &dummy)) { tool_fail("bench overlap"); goto out; }
        t_comp += t1;
    }
    uint64_t io_stream = exec_io_bytes(ex) - io0;
    /* --trace's file holds the streamed steps alone (the IO-only passes below would add their reads); the figures
     * are printed whether it could be written or not, its failure after them */
    const int trace_failed = trace_path && trace_write_chrome_held(trace, trace_path, &tfile);
    char trace_err[1024] = "";
    if (trace_failed) snprintf(trace_err, sizeof trace_err, "%s", tt_lasterr());
    if (exec_io_pass(ex)) { tool_fail("bench overlap"); goto out; }
    double t0 = tt_now();
    for (long i = 0; i < steps; i++)
        if (exec_io_pass(ex)) { tool_fail("bench overlap"); goto out; }
    t_io = tt_now() - t0;
    double tokens = (double)steps * p.req.K * p.req.B * p.req.seq;
    double eff = (t_io > t_comp ? t_io : t_comp) / t_stream;
    printf("streamed:      %8.3f s  %8.0f tokens/s  (NVMe %s read, %.2f GB/s; trace: IO busy %.0f%%, "
           "compute busy %.0f%%%s)\n",
           t_stream, tokens / t_stream, tt_fmt_bytes(io_stream, sb, sizeof sb), io_stream / t_stream / 1e9,
           100 * io_busy / t_stream, 100 * comp_busy / t_stream,
           trace_n_dropped(trace) ? ", too low: the --trace filled up; fewer --steps" : "");
    printf("IO only:       %8.3f s\n", t_io);
    printf("compute only:  %8.3f s  %8.0f tokens/s  (weights resident)\n", t_comp, tokens / t_comp);
    printf("overlap efficiency = max(IO, compute) / streamed = %.3f\n", eff);
    if (as_json) {
        char *mq = tool_json_quote(model);
        printf("{\"model\":%s,\"steps\":%ld,\"tokens_per_step\":%.0f,\"hbm\":%llu,\"host\":%llu,\"dev_bytes\":%llu,"
               "\"host_bytes\":%llu,\"slots\":%d,\"spilled\":%d,\"streamed_s\":%.4f,\"io_only_s\":%.4f,"
               "\"compute_only_s\":%.4f,\"overlap_eff\":%.4f,\"io_bytes\":%llu}\n",
               mq, steps, tokens / steps, (unsigned long long)req.hbm, (unsigned long long)req.host,
               (unsigned long long)p.dev_bytes, (unsigned long long)p.host_bytes, p.slots, p.host_cells, t_stream,
               t_io, t_comp, eff, (unsigned long long)io_stream);
        free(mq);
    }
    if (trace_failed) {
        fflush(stdout);
        tt_seterr("%s", trace_err);
        tool_fail("bench overlap");
        goto out;
    }
    exit_code = 0;
out:
    atomic_partial_drop(&tfile); /* a run that failed before writing it */
    exec_free(ex);
    exec_free(res_ex);
    trace_free(trace);
    tier_close(s);
    return exit_code;
}


/* ---- bench kernels ------------------------------------------------------------- */

typedef struct kbench {
    const char *op, *unit;
    double value, ms;
} kbench;

/* Waits for the device: a 4-byte copy to the host is synchronous. */
static void sync_dev(const void *p) {
    float f;
    be_to_host(&f, p, sizeof f);
}

static double time_it(void (*fn)(void *), void *ctx, const void *sync, int iters) {
    fn(ctx); /* warm-up */
    sync_dev(sync);
    double t0 = tt_now();
    for (int i = 0; i < iters; i++) fn(ctx);
    sync_dev(sync);
    return (tt_now() - t0) / iters;
}

/* A (M, K), C (M, N) and W (N, K, the dequantized weight) are activations of
 * type dt; B (N, K) tt_real (norm weights, AdamW's parameters), R (M)
 * rstd; G, mo, vo (n) AdamW's gradients and moments. */
typedef struct kctx {
    int M, N, K, dt;
    void *A, *C, *W;
    tt_real *B, *R, *G;
    float *mo, *vo;
    void *blob;
    size_t n;
} kctx;

static void run_gemm(void *p) {
    kctx *c = p;
    be_gemm_t(0, 1, c->M, c->N, c->K, 1, c->A, c->dt, c->K, c->W, c->dt, c->K, 0, c->C, c->dt, c->N);
}
/* LoRA's rank-16 products at the gemm's shape: z = x A^T (x: M x K, A: 16 x K), and dA += dz^T x. */
#define KB_RANK 16
static void run_lora_fwd(void *p) {
    kctx *c = p;
    be_gemm_t(0, 1, c->M, KB_RANK, c->K, 1, c->A, c->dt, c->K, c->W, c->dt, c->K, 0, c->C, c->dt, KB_RANK);
}
static void run_lora_dA(void *p) {
    kctx *c = p;
    be_gemm_t(1, 0, KB_RANK, c->K, c->M, 1, c->C, c->dt, KB_RANK, c->A, c->dt, c->K, 1, c->B, BE_REAL, c->K);
}
static void run_dequant(void *p) {
    kctx *c = p;
    be_dequant(TT_DTYPE_NF4DQ, c->blob, (size_t)c->N * c->K, c->W, c->dt);
}
static void run_dequant_gemm(void *p) {
    run_dequant(p);
    run_gemm(p);
}
/* RMSNorm over M rows of min(K, N) values: x from A (M x K), y into C (M x N). */
static int rms_width(const kctx *c) { return c->K < c->N ? c->K : c->N; }
static void run_rms(void *p) {
    kctx *c = p;
    be_rmsnorm_fwd(c->M, rms_width(c), c->A, c->B, 1e-5f, c->C, c->R, c->dt);
}
static void run_swiglu(void *p) {
    kctx *c = p;
    be_swiglu_fwd(c->n, c->A, c->W, c->C, c->dt);
}
/* LoRA dropout (p 0.05) on the rows of x (M x K, A) that C holds (c->n
 * values: at least one row when rows > 0), as core/model.c applies it. */
static int dropout_rows(const kctx *c) { return (int)(c->n / (size_t)c->K); }
static void run_dropout(void *p) {
    kctx *c = p;
    be_dropout(dropout_rows(c), c->K, 1, (uint64_t)3 << 32, 0.05f, 1 / 0.95f, c->A, c->C, 0, c->dt);
}
/* Causal attention at (1, seq, heads, kv_heads, head_dim), bench kernels' own shape. */
typedef struct actx {
    int seq, nh, nkv, hd, dt;
    void *q, *k, *v, *o, *dout, *dq, *dk, *dv, *scratch;
    tt_real *lse;
} actx;
static void run_attn_fwd(void *p) {
    actx *a = p;
    be_attn_fwd(1, a->seq, a->nh, a->nkv, a->hd, a->q, a->k, a->v, a->o, a->lse, NULL, a->scratch, a->dt);
}
static void run_attn_bwd(void *p) {
    actx *a = p;
    be_attn_bwd(1, a->seq, a->nh, a->nkv, a->hd, a->q, a->k, a->v, a->o, a->lse, a->dout, a->dq, a->dk, a->dv, NULL,
                a->scratch, a->dt);
}

/* Appends the attention rows (TFLOP/s, causal FLOPs: the forward's two
 * products over the lower triangle, 2 seq^2 hd heads; the backward counted as
 * 2.5 forwards, FlashAttention's convention); returns the new count, or -1
 * when device memory runs out. Inputs: the NF4 test weights' values. */
static int bench_attn(const kctx *c, int seq, int nh, int nkv, int hd, int iters, kbench *res, int nr) {
    actx a = {seq, nh, nkv, hd, c->dt, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t es = be_elem_size(c->dt), nq = (size_t)seq * nh * hd, nk = (size_t)seq * nkv * hd;
    void **bufs[] = {&a.q, &a.o, &a.dout, &a.dq, &a.k, &a.v, &a.dk, &a.dv};
    for (int i = 0; i < 8; i++) *bufs[i] = be_alloc((i < 4 ? nq : nk) * es);
    a.lse = be_alloc((size_t)seq * nh * sizeof(tt_real));
    a.scratch = be_alloc(be_attn_scratch_bytes(1, seq, nh, nkv, hd, c->dt));
    int ok = a.lse && a.scratch;
    for (int i = 0; i < 8; i++) ok = ok && *bufs[i];
    if (ok) {
        size_t wn = (size_t)c->N * c->K;
        /* the test weights' values (the rest of a buffer stays 0): small scores, which the timing does not
         * depend on */
        for (int i = 0; i < 8; i++) {
            size_t n = (i < 4 ? nq : nk) / 64 * 64;
            be_dequant_range(TT_DTYPE_NF4DQ, c->blob, wn, 0, n < wn / 64 * 64 ? n : wn / 64 * 64, *bufs[i], c->dt);
        }
        double f = 2.0 * seq * (double)seq * hd * nh;
        double t = time_it(run_attn_fwd, &a, a.o, iters);
        res[nr++] = (kbench){"attention fwd (causal)", "TFLOP/s", f / t / 1e12, t * 1e3};
        t = time_it(run_attn_bwd, &a, a.dq, iters);
        res[nr++] = (kbench){"attention bwd (causal)", "TFLOP/s", 2.5 * f / t / 1e12, t * 1e3};
    }
    for (int i = 0; i < 8; i++) be_free(*bufs[i]);
    be_free(a.lse);
    be_free(a.scratch);
    return ok ? nr : -1;
}

static void run_adamw(void *p) {
    kctx *c = p;
    be_adamw(c->n, c->B, c->G, c->mo, c->vo, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.f, 1);
}

/* Host-to-device copies of bytes from src into dst, iters times after one
 * warm-up; GB/s (be_to_device is synchronous). */
static double copy_gbps(void *dst, const void *src, size_t bytes, int iters) {
    be_to_device(dst, src, bytes);
    double t0 = tt_now();
    for (int i = 0; i < iters; i++) be_to_device(dst, src, bytes);
    return (double)bytes * iters / (tt_now() - t0) / 1e9;
}

/* The copies the streaming runtime makes, side by side: from the registered
 * host arena (anonymous mmap + be_host_register, as sched/stream.c reserves
 * it), from the runtime's own pinned memory (the peak; CUDA only) and from
 * plain pageable memory. Appends rows to res; returns the new count, or -1
 * when host memory runs out. */
static int bench_copies(size_t bytes, int iters, kbench *res, int nr, double *reg_over_pinned) {
    void *dev = be_alloc(bytes);
    void *reg = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *pageable = malloc(bytes), *pinned = be_host_alloc_pinned(bytes);
    int ok = dev && reg != MAP_FAILED && pageable;
    double g_reg = 0;
    if (ok) {
        memset(reg, 1, bytes); /* touch every page before it is pinned */
        memset(pageable, 1, bytes);
        if (be_host_register(reg, bytes)) {
            fprintf(stderr, "bench kernels: %s; the registered-arena copy is measured unpinned\n", tt_lasterr());
        } else {
            g_reg = copy_gbps(dev, reg, bytes, iters);
            res[nr++] = (kbench){"h2d, registered arena", "GB/s", g_reg, bytes / g_reg / 1e6};
            be_host_unregister(reg);
        }
        if (pinned) {
            memset(pinned, 1, bytes);
            double g = copy_gbps(dev, pinned, bytes, iters);
            res[nr++] = (kbench){"h2d, cudaMallocHost (peak)", "GB/s", g, bytes / g / 1e6};
            if (g_reg > 0) *reg_over_pinned = g_reg / g;
        }
        double g = copy_gbps(dev, pageable, bytes, iters);
        res[nr++] = (kbench){"h2d, pageable malloc", "GB/s", g, bytes / g / 1e6};
    }
    be_free(dev);
    if (reg != MAP_FAILED) munmap(reg, bytes);
    free(pageable);
    be_host_free_pinned(pinned);
    return ok ? nr : -1;
}

static int bench_kernels(int argc, char **argv) {
    const char *device, *act_dtype, *attn_seq_s;
    long m, n, k, iters, copy_mb, heads, kv_heads, head_dim;
    int as_json;
    cli_opt opts[] = {
        {"device", 0, CLI_STR, &device, "cuda", "NAME", "backend to measure: cuda or cpu"},
        {"act-dtype", 0, CLI_STR, &act_dtype, "auto", "T", "activation type of the ops: f32, bf16 or auto (bf16 with --device cuda, else f32)"},
        {"m", 0, CLI_INT, &m, "8192", "M", "GEMM rows (tokens)"},
        {"n", 0, CLI_INT, &n, "28672", "N", "GEMM columns (output features)"},
        {"k", 0, CLI_INT, &k, "8192", "K", "GEMM inner dimension (input features)"},
        {"iters", 0, CLI_INT, &iters, "10", "N", "timed repetitions per op"},
        {"copy-mb", 0, CLI_INT, &copy_mb, "1024", "MB", "bytes per host-to-device copy (MiB); 0 skips the copies"},
        {"attn-seq", 0, CLI_STR, &attn_seq_s, "auto", "N", "causal attention's sequence length: auto (4096 on cuda, 256 on the CPU); 0 skips it"},
        {"heads", 0, CLI_INT, &heads, "16", "N", "attention's query heads"},
        {"kv-heads", 0, CLI_INT, &kv_heads, "2", "N", "attention's KV heads (grouped-query; divides --heads)"},
        {"head-dim", 0, CLI_INT, &head_dim, "128", "N", "attention's head_dim (even)"},
        {"json", 0, CLI_FLAG, &as_json, NULL, NULL, "end with one JSON object on the last line"},
        {0},
    };
    cli_cmd cmd = {"bench kernels", NULL,
                   "Per-op throughput of a backend: GEMM (TFLOP/s), NF4 dequantization and dequant+GEMM against plain "
                   "GEMM, LoRA's rank-16 products x A^T and dz^T x at the GEMM's M and K (GB/s: bandwidth-bound), causal "
                   "attention forward and backward (TFLOP/s), RMSNorm, SwiGLU, AdamW (GB/s), and "
                   "host-to-device copies from the registered host arena against the runtime's pinned memory and "
                   "pageable memory (GB/s).",
                   opts, 0, 0, "tiertrain bench kernels --device cuda --m 8192 --n 28672 --k 8192 --json"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    const char *bad = m < 1 ? "--m must be at least 1" : n < 1 ? "--n must be at least 1"
                    : k < 64 || k % 64 ? "--k must be a multiple of 64 (an NF4 block)"
                    : iters < 1 || iters > 100000 ? "--iters must be 1..100000"
                    : copy_mb < 0 || copy_mb > 65536 ? "--copy-mb must be 0..65536" : NULL;
    if (bad) {
        fprintf(stderr, "tiertrain bench kernels: %s\n", bad);
        return 2;
    }
    long attn_seq = strcmp(attn_seq_s, "auto") == 0 ? (strcmp(device, "cuda") == 0 ? 4096 : 256) : -1;
    if (attn_seq < 0) {
        char *end;
        attn_seq = strtol(attn_seq_s, &end, 10);
        if (*end || end == attn_seq_s) attn_seq = -1;
    }
    bad = attn_seq < 0 || attn_seq > (1 << 20) ? "--attn-seq must be auto or 0..1048576"
        : heads < 1 || heads > 1024 ? "--heads must be 1..1024"
        : kv_heads < 1 || heads % kv_heads ? "--kv-heads must divide --heads"
        : head_dim < 2 || head_dim > 1024 || head_dim % 2 ? "--head-dim must be even, 2..1024" : NULL;
    if (bad) {
        fprintf(stderr, "tiertrain bench kernels: %s\n", bad);
        return 2;
    }
    const tt_backend *be = be_by_name(device);
    if (!be) return tool_fail("bench kernels");
    be_use(be);
    int bf = tool_act_bf16("bench kernels", act_dtype, device);
    if (bf < 0) return 2;
    kctx c = {.M = (int)m, .N = (int)n, .K = (int)k, .dt = bf ? BE_BF16 : BE_REAL};
    size_t wn = (size_t)n * k, es = be_elem_size(c.dt);
    c.n = (size_t)m * k < wn ? (size_t)m * k : wn;
    if ((size_t)m * n < c.n) c.n = (size_t)m * n; /* the element-wise ops' length: fits A, C and W */
    nf4_layout L;
    nf4_layout_of(wn, 1, &L);
    c.A = be_alloc((size_t)m * k * es);
    c.C = be_alloc((size_t)m * n * es);
    c.W = be_alloc(wn * es);
    c.B = be_alloc(wn * sizeof(tt_real));
    c.R = be_alloc((size_t)m * sizeof(tt_real));
    c.G = be_alloc(c.n * sizeof(tt_real));
    c.mo = be_alloc(c.n * sizeof(float));
    c.vo = be_alloc(c.n * sizeof(float));
    c.blob = be_alloc(L.total);
    void *all[] = {c.A, c.C, c.W, c.B, c.R, c.G, c.mo, c.vo, c.blob};
    const size_t nall = sizeof all / sizeof all[0];
    for (size_t i = 0; i < nall; i++)
        if (!all[i]) {
            fprintf(stderr, "tiertrain bench kernels: out of device memory for %ldx%ld x %ldx%ld; use smaller "
                            "--m/--n/--k\n", m, k, n, k);
            for (size_t j = 0; j < nall; j++) be_free(all[j]);
            return 1;
        }
    /* weights: random normal, quantized on the host */
    float *h = tt_xmalloc(wn * sizeof *h);
    tt_rng r;
    rng_seed(&r, 1, 1);
    rng_fill_normalish(&r, h, wn, 0.02f);
    uint8_t *blob = tt_xmalloc(L.total);
    nf4_quantize_tensor(h, wn, 1, blob);
    be_to_device(c.blob, blob, L.total);
    tt_real *hr = tt_xmalloc(wn * sizeof *hr);
    for (size_t i = 0; i < wn; i++) hr[i] = h[i];
    be_to_device(c.B, hr, wn * sizeof *hr);
    free(hr);
    free(blob);
    free(h);
    be_dequant(TT_DTYPE_NF4DQ, c.blob, wn, c.W, c.dt);
    size_t an = (size_t)m * k < wn ? (size_t)m * k : wn; /* A: the weights' first values (the rest stays 0) */
    be_dequant_range(TT_DTYPE_NF4DQ, c.blob, wn, 0, an / 64 * 64, c.A, c.dt);
    be_fill(c.G, c.n, 0.01f);
    kbench res[16];
    int exit_code = 1;
    int nr = 0;
    double flops = 2.0 * m * n * k;
    double t = time_it(run_gemm, &c, c.C, (int)iters);
    res[nr++] = (kbench){bf ? "gemm bf16 (cuBLAS/BLAS)" : "gemm f32 (cuBLAS/BLAS)", "TFLOP/s", flops / t / 1e12,
                         t * 1e3};
    double tg = t;
    t = time_it(run_dequant_gemm, &c, c.C, (int)iters);
    res[nr++] = (kbench){"nf4 dequant + gemm", "TFLOP/s", flops / t / 1e12, t * 1e3};
    double td = t;
    t = time_it(run_dequant, &c, c.W, (int)iters);
    res[nr++] = (kbench){"nf4-dq dequant", "GB/s", ((double)L.total + wn * es) / t / 1e9, t * 1e3};
    if (n >= KB_RANK) { /* bandwidth-bound: the bytes of x (M x K) dominate; C, W and B hold the rank-sized sides */
        t = time_it(run_lora_fwd, &c, c.C, (int)iters);
        res[nr++] = (kbench){"lora x A^T (rank 16)", "GB/s",
                             es * ((double)m * k + KB_RANK * k + (double)m * KB_RANK) / t / 1e9, t * 1e3};
        t = time_it(run_lora_dA, &c, c.B, (int)iters);
        res[nr++] = (kbench){"lora dz^T x (rank 16)", "GB/s",
                             (es * ((double)m * KB_RANK + (double)m * k) + 2.0 * sizeof(tt_real) * KB_RANK * k) / t / 1e9,
                             t * 1e3};
    }
    if (attn_seq > 0) {
        int nr2 = bench_attn(&c, (int)attn_seq, (int)heads, (int)kv_heads, (int)head_dim, (int)iters, res, nr);
        if (nr2 < 0) {
            fprintf(stderr, "tiertrain bench kernels: out of device memory for attention at --attn-seq %ld; lower it\n",
                    attn_seq);
            goto out;
        }
        nr = nr2;
    }
    t = time_it(run_rms, &c, c.C, (int)iters);
    res[nr++] = (kbench){"rmsnorm fwd", "GB/s", 2.0 * m * rms_width(&c) * es / t / 1e9, t * 1e3};
    t = time_it(run_swiglu, &c, c.C, (int)iters);
    res[nr++] = (kbench){"swiglu fwd", "GB/s", 3.0 * c.n * es / t / 1e9, t * 1e3};
    if (dropout_rows(&c) > 0) { /* bandwidth-bound: x read, the dropped x written */
        t = time_it(run_dropout, &c, c.C, (int)iters);
        res[nr++] = (kbench){"LoRA dropout", "GB/s", 2.0 * dropout_rows(&c) * c.K * es / t / 1e9, t * 1e3};
    }
    t = time_it(run_adamw, &c, c.B, (int)iters);
    res[nr++] = (kbench){"adamw", "GB/s", 6.0 * c.n * 4 / t / 1e9, t * 1e3};
    double reg_over_pinned = 0;
    if (copy_mb > 0) {
        int nr2 = bench_copies((size_t)copy_mb << 20, (int)iters, res, nr, &reg_over_pinned);
        if (nr2 < 0) {
            fprintf(stderr, "tiertrain bench kernels: out of memory for %ld MiB copy buffers; lower --copy-mb\n",
                    copy_mb);
            goto out;
        }
        nr = nr2;
    }
    printf("bench kernels on %s (%s activations): gemm (%ld x %ld) x (%ld x %ld)^T, %ld iterations\n", be->name,
           bf ? "bf16" : "f32", m, k, n, k, iters);
    const char *apath = attn_seq > 0 ? be_attn_path_name(1, (int)attn_seq, (int)heads, (int)kv_heads, (int)head_dim,
                                                         bf ? BE_BF16 : BE_REAL)
                                     : "";
    if (attn_seq > 0)
        printf("  attention: seq %ld, %ld query / %ld KV heads, head_dim %ld, causal: %s\n", attn_seq, heads, kv_heads,
               head_dim, apath);
    printf("  %-26s %12s %10s\n", "op", "throughput", "ms");
    for (int i = 0; i < nr; i++) printf("  %-26s %8.2f %-8s %8.3f\n", res[i].op, res[i].value, res[i].unit, res[i].ms);
    printf("  dequant+gemm / plain gemm throughput: %.2f\n", tg / td);
    if (reg_over_pinned > 0) printf("  registered arena / pinned peak (h2d): %.2f\n", reg_over_pinned);
    if (as_json) {
        printf("{\"device\":\"%s\",\"act_dtype\":\"%s\",\"m\":%ld,\"n\":%ld,\"k\":%ld", be->name, bf ? "bf16" : "f32", m,
               n, k);
        for (int i = 0; i < nr; i++) printf(",\"%s\":%.4f", res[i].op, res[i].value);
        printf(",\"dequant_gemm_ratio\":%.4f", tg / td);
        if (reg_over_pinned > 0) printf(",\"registered_over_pinned\":%.4f", reg_over_pinned);
        if (attn_seq > 0) printf(",\"attention_path\":\"%s\"", apath);
        printf("}\n");
    }
    exit_code = 0;
out:
    for (size_t j = 0; j < nall; j++) be_free(all[j]);
    return exit_code;
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 1 && strcmp(argv[0], "io") == 0) return bench_io(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "overlap") == 0) return bench_overlap(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "kernels") == 0) return bench_kernels(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "generate") == 0) return bench_generate(argc - 1, argv + 1);
    if (argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
        printf("usage: tiertrain bench io|overlap|kernels|generate [options]\n\n"
               "  io       read every layer extent as the trainer does (`tiertrain bench io --help`)\n"
               "  overlap  streamed vs IO-only vs compute-only training steps (`tiertrain bench overlap --help`)\n"
               "  kernels  per-op throughput of a backend (`tiertrain bench kernels --help`)\n"
               "  generate generation tokens/s, resident vs streamed (`tiertrain bench generate --help`)\n");
        return 0;
    }
    fprintf(stderr, "tiertrain bench: expected a benchmark name: io, overlap, kernels or generate (see tiertrain bench --help)\n");
    return 2;
}
