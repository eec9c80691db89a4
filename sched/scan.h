/* sched/scan.h — reads a list of store extents in order through a ring of
 * staging slots: a pinned IO thread keeps the io_uring engine busy while the
 * calling thread consumes finished slots (checksums, decode, ...). This is the
 * read path of `verify` and `bench io`, and the layer prefetch pattern of the
 * trainer in its simplest form (one pass, no eviction).
 *
 * An extent larger than a slot is delivered in several pieces, in order. */
#ifndef TT_SCAN_H
#define TT_SCAN_H

#include <stdint.h>

#include "io/tier.h"
#include "sched/topo.h"

typedef struct scan_opts {
    unsigned qd;          /* io_uring requests in flight (default 32) */
    uint64_t chunk;       /* bytes per request (default 1 MiB) */
    int direct;           /* O_DIRECT (default 1) */
    unsigned slots;       /* staging slots (default 2) */
    uint64_t slot_bytes;  /* bytes per slot, multiple of 4096; 0 = the largest extent listed */
    tt_topo *topo;        /* pin the IO thread to topo_io_core when not NULL */
    int engine;           /* UR_ENGINE_* (default auto) */
} scan_opts;

void scan_opts_default(scan_opts *o);

/* Called on the calling thread for each piece, in order: extent index, offset
 * of the piece inside the extent's stored bytes, the bytes, and whether it is
 * the extent's last piece. Returns 0, or -errno (with tt_seterr) to stop. */
typedef int (*scan_fn)(void *user, uint32_t extent, uint64_t off, const void *data, uint64_t len, int last);

typedef struct scan_stats {
    uint64_t bytes;        /* bytes read from the file (padded to 4096) */
    double wall;           /* seconds from the first submit to the last piece consumed */
    double consumer_wait;  /* seconds the caller waited for data */
    int pinned_core;       /* core the IO thread ran on, -1 if not pinned */
    char pin_error[160];   /* why pinning failed, if it did */
    char engine[32];       /* the engine that read: "io_uring" or "threads (N)" */
    unsigned workers;      /* its pread threads (0: io_uring) */
    int direct;            /* read with O_DIRECT (0: the filesystem refused it, or o->direct was 0) */
} scan_stats;

/* Reads extents[0..n) of s. Returns 0, the callback's error, or -errno for
 * an IO error (message names the file and offset). */
int scan_extents(const tier_store *s, const uint32_t *extents, uint32_t n, const scan_opts *o, scan_fn fn,
                 void *user, scan_stats *st);

#endif
