/* tools/cmd_verify.c — `tiertrain verify FILE`: reads every extent and checks
 * its checksum (and that lz4 extents decompress). Exit 0 only if all match. */
#include "core/base/common.h"
#include "io/tier.h"
#include "io/uring.h"
#include "sched/scan.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <errno.h>
#include <string.h>
#include <xxhash.h>

typedef struct verify_ctx {
    const tier_store *s;
    XXH3_state_t *xx;
    uint8_t *raw;          /* decode buffer for lz4 extents */
    uint32_t bad;
    uint64_t done;
    tool_progress prog;
} verify_ctx;

static int on_piece(void *user, uint32_t e, uint64_t off, const void *data, uint64_t len, int last) {
    verify_ctx *v = user;
    const tier_extent *x = tier_extent_at(v->s, e);
    if (off == 0) XXH3_64bits_reset(v->xx);
    XXH3_64bits_update(v->xx, data, len);
    v->done += len;
    progress_update(&v->prog, v->done);
    if (!last) return 0;
    char nm[32];
    if (XXH3_64bits_digest(v->xx) != x->checksum) {
        printf("%s: checksum mismatch in extent %u (%s) at offset %llu\n", tier_path(v->s), e,
                tier_extent_name(v->s, e, nm, sizeof nm), (unsigned long long)x->offset);
        v->bad++;
    } else if (x->codec != TIER_CODEC_RAW) {
        TT_ASSERT(off == 0); /* lz4 extents are delivered whole (slot sized for them) */
        if (tier_extent_decode(v->s, e, data, v->raw)) {
            printf("%s\n", tt_lasterr());
            v->bad++;
        }
    }
    return 0;
}

int cmd_verify(int argc, char **argv) {
    long qd;
    uint64_t chunk;
    cli_opt opts[] = {
        {"qd", 0, CLI_INT, &qd, "32", "N", "reads in flight (io_uring; where it is refused, min(N, 16) pread threads)"},
        {"chunk", 0, CLI_SIZE, &chunk, "1M", "SIZE", "bytes per read request (multiple of 4K)"},
        {0},
    };
    cli_cmd cmd = {"verify", "FILE", "Checks every extent checksum of a store; exits 0 only if all match.", opts, 1, 1,
                   "tiertrain verify model.tier"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    if (qd < 1 || qd > 4096 || chunk < 4096 || chunk % 4096 || chunk > (1u << 30)) {
        fprintf(stderr, "tiertrain verify: %s\n", qd < 1 || qd > 4096 ? "--qd must be 1..4096"
                                                                     : "--chunk must be a multiple of 4K up to 1G");
        return 2;
    }
    tier_store *s;
    if (tier_open(&s, pos[0])) return tool_fail("verify");
    uint32_t n = tier_n_extents(s);
    uint32_t *ext = tt_xcalloc(n, sizeof *ext);
    uint64_t total = 0, max_lz4 = 0, max_raw = 0;
    for (uint32_t i = 0; i < n; i++) {
        const tier_extent *e = tier_extent_at(s, i);
        ext[i] = i;
        total += e->stored;
        if (e->codec != TIER_CODEC_RAW) {
            if (e->stored > max_lz4) max_lz4 = e->stored;
            if (e->raw > max_raw) max_raw = e->raw;
        }
    }
    verify_ctx v = {s, XXH3_createState(), max_raw ? tt_xmalloc(max_raw) : NULL, 0, 0, {0}};
    scan_opts so;
    scan_opts_default(&so);
    so.qd = (unsigned)qd;
    so.chunk = chunk;
    so.slot_bytes = tt_align_up(max_lz4 > (64u << 20) ? max_lz4 : (64u << 20), 4096);
    tt_topo *topo = NULL;
    if (topo_init(&topo) == 0) so.topo = topo;
    scan_stats st;
    progress_start(&v.prog, "verify", total);
    rc = scan_extents(s, ext, n, &so, on_piece, &v, &st);
    int exit_code = 0;
    if (rc) {
        exit_code = tool_fail("verify");
    } else if (v.bad) {
        fprintf(stderr, "tiertrain verify: %s: %u of %u extents are corrupt; re-create the store\n", pos[0], v.bad, n);
        exit_code = 1;
    } else {
        progress_end(&v.prog, total);
        char b[32];
        printf("%s: all %u extents OK (%s, %.2f GB/s)\n", pos[0], n, tt_fmt_bytes(total, b, sizeof b),
               st.wall > 0 ? (double)total / st.wall / 1e9 : 0.0);
    }
    topo_free(topo);
    XXH3_freeState(v.xx);
    free(v.raw);
    free(ext);
    tier_close(s);
    return exit_code;
}
