/* sched/topo.h — machine topology from hwloc, and pinning of the IO thread and
 * worker threads to cores. The IO thread gets its own core when the machine
 * has more than one (the last core), compute workers the rest. */
#ifndef TT_TOPO_H
#define TT_TOPO_H

#include <stddef.h>

typedef struct tt_topo tt_topo;

/* Discovers the topology. Returns 0, or -errno with tt_lasterr set. */
int topo_init(tt_topo **out);
void topo_free(tt_topo *t);  /* NULL is fine */

int topo_npackages(const tt_topo *t);
int topo_ncores(const tt_topo *t);
int topo_npus(const tt_topo *t);
int topo_nnuma(const tt_topo *t);
/* Size in bytes of the largest cache level found (0 if unknown). */
unsigned long long topo_llc_bytes(const tt_topo *t);

/* Core index the IO thread should use (ncores-1), and the number of cores
 * left for compute workers (at least 1). */
int topo_io_core(const tt_topo *t);
int topo_compute_cores(const tt_topo *t);

/* Binds the calling thread to core `core` (0..ncores-1): its whole cpuset.
 * Returns 0 or -errno (e.g. binding not permitted), with tt_lasterr set. */
int topo_pin_thread(tt_topo *t, int core);

/* One line such as "1 package, 2 cores, 2 PUs, 1 NUMA node, L3 32.00 MiB". */
void topo_describe(const tt_topo *t, char *buf, size_t cap);

#endif
