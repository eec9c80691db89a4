/* tools/main.c — the tiertrain program: dispatches to the subcommands. */
#include "tools/tools.h"

#include "core/base/common.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} g_cmds[] = {
    {"synth", cmd_synth, "write a random-weight model store at real shapes (optionally LoRAM-pruned, NF4)"},
    {"info", cmd_info, "show a store's config, per-layer dimensions, parameter count and bytes per tier"},
    {"verify", cmd_verify, "check every extent checksum of a store"},
    {"tokenize", cmd_tokenize, "turn text into a token file (byte-level or a Hugging Face tokenizer.json)"},
    {"detokenize", cmd_detokenize, "turn a token file (or ids) back into text"},
    {"plan", cmd_plan, "show the memory plan for a model, batch and --hbm/--host budgets"},
    {"import", cmd_import, "convert a Hugging Face LLaMA checkpoint directory into a store"},
    {"export", cmd_export, "write a store as a Hugging Face checkpoint directory (safetensors + config.json)"},
    {"prune", cmd_prune, "prune a store: structured (LoRAM), random, 2:4 or unstructured"},
    {"quantize", cmd_quantize, "quantize a store's projections to NF4"},
    {"train", cmd_train, "train LoRA adapters on a store, or every weight with --full"},
    {"recover", cmd_recover, "scatter a pruned model's LoRA adapter back to the original shapes (LoRAM)"},
    {"merge", cmd_merge, "merge a LoRA adapter into a store's weights"},
    {"eval", cmd_eval, "perplexity of a store (with an optional adapter) on a token file"},
    {"generate", cmd_generate, "generate text from a store (with an optional adapter), KV-cached and streamed"},
    {"chat", cmd_chat, "talk with a store (with an optional adapter) in its chat template, answers streamed"},
    {"bench", cmd_bench, "benchmarks: io (the store's reads), overlap (IO hidden behind compute), kernels, generate"},
    {"trace", cmd_trace, "draw a trace written by --trace as an SVG timeline (one step or all)"},
};
#define N_CMDS (sizeof g_cmds / sizeof g_cmds[0])

static void usage(FILE *f) {
    fprintf(f, "usage: tiertrain COMMAND [options]\n\n"
               "tiertrain: an out-of-core, memory-tiered LLaMA trainer (LoRAM: train small, infer large).\n\n"
               "commands:\n");
    for (size_t i = 0; i < N_CMDS; i++) fprintf(f, "  %-10s %s\n", g_cmds[i].name, g_cmds[i].summary);
    fprintf(f, "\n`tiertrain COMMAND --help` (or `tiertrain help COMMAND`) lists a command's options with their "
               "defaults.\n");
}

json_t *tool_json_path(const char *s) {
    char e[4200];
    json_t *js = json_string(tt_escape(s, e, sizeof e));
    TT_ASSERT(js); /* tt_escape's output is valid UTF-8 */
    return js;
}

char *tool_json_quote(const char *s) {
    json_t *js = tool_json_path(s);
    char *q = json_dumps(js, JSON_ENCODE_ANY);
    json_decref(js);
    TT_ASSERT(q);
    return q;
}

static int g_stdin_closed;
int tool_stdin_closed(void) { return g_stdin_closed; }

/* OpenBLAS's working buffer: 128 MiB of address space, and a page, for each thread (drivers/common.h
 * BUFFER_SIZE on x86-64), with room to spare. A thread it adds needs its stack too (blas_room). */
#define BLAS_BUFFER_BYTES ((size_t)130 << 20)

/* 0 when the address-space limit leaves room for n more buffers (with_stacks: and as many thread stacks), or
 * there is no limit; else -ENOMEM after the sentence (with_stacks: they are for --threads added). The probe
 * maps address space only (PROT_NONE, MAP_NORESERVE): nothing is committed, so only the limit can refuse it. */
static int blas_room(const char *cmd, int n, int with_stacks) {
    uint64_t limit;
    if (n <= 0 || !tt_rlimit_set(RLIMIT_AS, &limit)) return 0;
    size_t stack = 0, each;
    pthread_attr_t at;
    if (with_stacks && pthread_attr_init(&at) == 0) { /* a new thread's default stack, as glibc sizes it */
        if (pthread_attr_getstacksize(&at, &stack) != 0) stack = (size_t)8 << 20;
        pthread_attr_destroy(&at);
    }
    each = BLAS_BUFFER_BYTES + stack + ((size_t)64 << 10); /* and a guard page, with room */
    void *room = mmap(NULL, (size_t)n * each, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (room != MAP_FAILED) {
        munmap(room, (size_t)n * each);
        return 0;
    }
    char what[96];
    if (with_stacks) snprintf(what, sizeof what, "and stacks of %d more --threads (%zu MiB)", n, (size_t)n * each >> 20);
    else snprintf(what, sizeof what, "(%zu MiB for %d thread%s)", (size_t)n * each >> 20, n, n == 1 ? "" : "s");
    /* one thread already: fewer is no way on */
    const char *fewer = with_stacks ? ", or run fewer BLAS threads (a smaller --threads)"
                        : n > 1 ? ", or run fewer BLAS threads (OPENBLAS_NUM_THREADS=1)" : "";
    fprintf(stderr, "tiertrain %s: the address-space limit (ulimit -v %llu KiB) leaves no room for the BLAS "
                    "library's working buffers %s; raise it%s\n",
            cmd, (unsigned long long)(limit >> 10), what, fewer);
    return -ENOMEM;
}

/* A product large enough to run on every thread: each takes its buffer now, and OpenBLAS keeps them for
 * every later call. */
static void blas_warm(void) {
    static float a[512 * 512], b[512 * 512], c[512 * 512];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 512, 512, 512, 1.0f, a, 512, b, 512, 0.0f, c, 512);
}

int tool_blas_ready(const char *cmd) {
    if (!tt_rlimit_set(RLIMIT_AS, NULL)) return 0;
    /* OpenBLAS 0.3.21 (Debian 12's, and the GPU bundle's): its threads take theirs as they start, when the
     * library loads, and one that could not is retrying still: room for every thread's, or a refusal, before
     * the calling thread takes its own. (Later versions take every buffer as the library loads, before main.) */
    if (blas_room(cmd, openblas_get_num_threads(), 0)) return -ENOMEM;
    blas_warm();
    return 0;
}

int tool_blas_threads(const char *cmd, int threads) {
    if (threads <= 0) return 0;
    int more = threads - openblas_get_num_threads();
    if (blas_room(cmd, more, 1)) return -ENOMEM;
    openblas_set_num_threads(threads);
    if (more > 0 && tt_rlimit_set(RLIMIT_AS, NULL)) blas_warm();
    return 0;
}

int tool_fail(const char *cmd) {
    fprintf(stderr, "tiertrain %s: %s\n", cmd, tt_lasterr());
    return 1;
}

char *fmt_params(uint64_t n, char *buf, unsigned long cap) {
    if (n >= 1000000000ull) snprintf(buf, cap, "%.2fB", (double)n / 1e9);
    else snprintf(buf, cap, "%.2fM", (double)n / 1e6);
    return buf;
}

void progress_start(tool_progress *p, const char *what, uint64_t total) {
    p->what = what;
    p->total = total ? total : 1;
    p->t0 = p->last = tt_now();
    p->last_decile = 0;
    p->tty = isatty(2);
}

static void progress_print(tool_progress *p, uint64_t done, int final) {
    double dt = tt_now() - p->t0;
    double rate = dt > 0 ? (double)done / dt : 0;
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0;
    char a[32], b[32];
    fprintf(stderr, "%s%s: %s / %s (%3.0f%%), %.0f MB/s, %s %.0fs%s", p->tty ? "\r" : "", p->what,
            tt_fmt_bytes(done, a, sizeof a), tt_fmt_bytes(p->total, b, sizeof b), 100.0 * (double)done / (double)p->total,
            rate / 1e6, final ? "took" : "ETA", final ? dt : eta, p->tty ? "   " : "\n");
    if (final && p->tty) fputc('\n', stderr);
}

void progress_update(tool_progress *p, uint64_t done) {
    double now = tt_now();
    int decile = (int)(10 * done / p->total);
    if (now - p->t0 < 1.0) return; /* quick work stays quiet */
    if (p->tty ? now - p->last >= 0.5 : decile > p->last_decile) {
        p->last = now;
        p->last_decile = decile;
        progress_print(p, done, 0);
    }
}

void progress_end(tool_progress *p, uint64_t done) {
    if (tt_now() - p->t0 >= 1.0) progress_print(p, done, 1);
}

/* A standard stream the caller closed: its descriptor would go to the next file opened (a store read as
 * chat's input, a log written into a store). stdin and stderr get /dev/null (stdin noted for the commands that
 * read it); a closed stdout would lose the results silently: refused. */
static int std_streams(void) {
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
        if (fd == 1) {
            fprintf(stderr, "tiertrain: standard output is closed; redirect it (e.g. >/dev/null) to run without it\n");
            return 2;
        }
        int got = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        if (got != fd) return 2; /* the lowest free descriptor is fd: anything else is no state to run in */
        if (fd == 0) g_stdin_closed = 1;
    }
    return 0;
}

/* What a command wrote to stdout must have arrived (a full disk under `> results.jsonl`): else it fails. */
static int stdout_flushed(const char *cmd, int rc) {
    errno = 0;
    int bad = fflush(stdout) != 0, e = errno;
    if (!bad && !ferror(stdout)) return rc;
    if (bad && e) fprintf(stderr, "tiertrain %s: cannot write standard output: %s; what it printed is incomplete\n", cmd,
                          strerror(e));
    else fprintf(stderr, "tiertrain %s: a write to standard output failed; what it printed is incomplete\n", cmd);
    return rc ? rc : 1;
}

int main(int argc, char **argv) {
    if (std_streams()) return 2;
    /* a write past the file size limit (ulimit -f) fails with EFBIG, reported as any failed write is (its
     * .partial file removed), instead of SIGXFSZ ending the process without a word */
    signal(SIGXFSZ, SIG_IGN);
    static char *h[64];
    if (argc >= 3 && strcmp(argv[1], "help") == 0) { /* help COMMAND [SUB ...]: COMMAND [SUB ...] --help */
        if (argc + 1 > (int)(sizeof h / sizeof h[0])) {
            fprintf(stderr, "tiertrain help: give a command (and a subcommand), as in `tiertrain help bench io`\n");
            return 2;
        }
        h[0] = argv[0];
        for (int i = 2; i < argc; i++) h[i - 1] = argv[i];
        h[argc - 1] = "--help";
        h[argc] = NULL;
        argv = h;
    }
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : stdout_flushed("--help", 0);
    }
    for (size_t i = 0; i < N_CMDS; i++)
        if (strcmp(argv[1], g_cmds[i].name) == 0) {
            if (tool_blas_ready(argv[1])) _exit(1); /* not exit: it would wait for a library thread still retrying */
            return stdout_flushed(argv[1], g_cmds[i].fn(argc - 2, argv + 2));
        }
    char e[256];
    fprintf(stderr, "tiertrain: unknown command '%s'; run `tiertrain --help` for the list\n",
            tt_escape(argv[1], e, sizeof e));
    return 2;
}
