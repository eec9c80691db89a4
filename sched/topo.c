/* sched/topo.c — machine topology from hwloc and thread pinning (see
 * sched/topo.h). Containers and VMs sometimes hide parts of the topology, so
 * every count falls back to something usable: no PUs found -> the online CPU
 * count, no cores -> one core per PU (pinning then uses PUs), no packages or
 * NUMA nodes -> 1. */
#include "sched/topo.h"

#include "core/base/common.h"

#include <errno.h>
#include <hwloc.h>
#include <string.h>
#include <unistd.h>

struct tt_topo {
    hwloc_topology_t topo;
    int npackages, ncores, npus, nnuma;
    /* what a "core" index refers to: HWLOC_OBJ_CORE, HWLOC_OBJ_PU, or
     * HWLOC_OBJ_TYPE_MAX when hwloc found no PU at all (index = OS CPU number) */
    hwloc_obj_type_t core_type;
    unsigned long long llc_bytes;
    unsigned llc_level; /* 1..5, 0 if unknown */
};

static int count(hwloc_topology_t t, hwloc_obj_type_t type) {
    int n = hwloc_get_nbobjs_by_type(t, type);
    return n > 0 ? n : 0; /* -1 means "at several depths"; not for these types */
}

int topo_init(tt_topo **out) {
    TT_ASSERT(out);
    *out = NULL;
    tt_topo *tp = tt_xcalloc(1, sizeof *tp);
    if (hwloc_topology_init(&tp->topo) != 0) {
        int e = errno ? errno : ENOMEM;
        free(tp);
        return TT_FAIL(-e, "cannot initialise hwloc to discover the machine topology: %s",
                       strerror(e));
    }
    if (hwloc_topology_load(tp->topo) != 0) {
        int e = errno ? errno : EINVAL;
        hwloc_topology_destroy(tp->topo);
        free(tp);
        return TT_FAIL(-e, "cannot discover the machine topology with hwloc: %s; try "
                       "HWLOC_COMPONENTS=linux or run outside the sandbox", strerror(e));
    }
    hwloc_topology_t t = tp->topo;
    tp->npus = count(t, HWLOC_OBJ_PU);
    tp->ncores = count(t, HWLOC_OBJ_CORE);
    tp->npackages = count(t, HWLOC_OBJ_PACKAGE);
    tp->nnuma = count(t, HWLOC_OBJ_NUMANODE);
    tp->core_type = HWLOC_OBJ_CORE;
    if (tp->npus == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        tp->npus = n > 0 ? (int)n : 1;
        tp->ncores = tp->npus;
        tp->core_type = HWLOC_OBJ_TYPE_MAX;
    } else if (tp->ncores == 0 || tp->ncores > tp->npus) {
        tp->ncores = tp->npus;
        tp->core_type = HWLOC_OBJ_PU;
    }
    if (tp->npackages < 1) tp->npackages = 1;
    if (tp->npackages > tp->ncores) tp->npackages = tp->ncores;
    if (tp->nnuma < 1) tp->nnuma = 1;

    for (hwloc_obj_type_t ct = HWLOC_OBJ_L1CACHE; ct <= HWLOC_OBJ_L5CACHE; ct++) {
        int n = count(t, ct);
        for (int i = 0; i < n; i++) {
            hwloc_obj_t o = hwloc_get_obj_by_type(t, ct, (unsigned)i);
            if (o && o->attr && o->attr->cache.size > tp->llc_bytes) {
                tp->llc_bytes = o->attr->cache.size;
                tp->llc_level = o->attr->cache.depth;
            }
        }
    }
    *out = tp;
    return 0;
}

void topo_free(tt_topo *t) {
    if (!t) return;
    hwloc_topology_destroy(t->topo);
    free(t);
}

int topo_npackages(const tt_topo *t) { return t->npackages; }
int topo_ncores(const tt_topo *t) { return t->ncores; }
int topo_npus(const tt_topo *t) { return t->npus; }
int topo_nnuma(const tt_topo *t) { return t->nnuma; }
unsigned long long topo_llc_bytes(const tt_topo *t) { return t->llc_bytes; }

int topo_io_core(const tt_topo *t) { return t->ncores > 1 ? t->ncores - 1 : 0; }
int topo_compute_cores(const tt_topo *t) { return t->ncores > 1 ? t->ncores - 1 : 1; }

int topo_pin_thread(tt_topo *t, int core) {
    TT_ASSERT(t && core >= 0 && core < t->ncores);
    hwloc_bitmap_t set;
    if (t->core_type == HWLOC_OBJ_TYPE_MAX) {
        set = hwloc_bitmap_alloc();
        if (set) hwloc_bitmap_only(set, (unsigned)core);
    } else {
        hwloc_obj_t o = hwloc_get_obj_by_type(t->topo, t->core_type, (unsigned)core);
        TT_ASSERT(o && o->cpuset);
        set = hwloc_bitmap_dup(o->cpuset);
    }
    if (!set) return TT_FAIL(-ENOMEM, "out of memory pinning a thread to core %d", core);
    int rc = 0;
    if (hwloc_set_cpubind(t->topo, set, HWLOC_CPUBIND_THREAD) != 0) {
        int e = errno ? errno : EINVAL;
        char *list = NULL;
        if (hwloc_bitmap_list_asprintf(&list, set) < 0) list = NULL;
        tt_seterr("cannot pin this thread to core %d (CPUs %s): %s; thread binding is not "
                  "permitted here (a container?), run without pinning",
                  core, list ? list : "?", strerror(e));
        free(list);
        rc = -e;
    }
    hwloc_bitmap_free(set);
    return rc;
}

void topo_describe(const tt_topo *t, char *buf, size_t cap) {
    TT_ASSERT(t && buf && cap > 0);
    char cache[48];
    if (t->llc_bytes) {
        char b[32];
        snprintf(cache, sizeof cache, "L%u %s", t->llc_level,
                 tt_fmt_bytes(t->llc_bytes, b, sizeof b));
    } else {
        snprintf(cache, sizeof cache, "cache size unknown");
    }
    snprintf(buf, cap, "%d package%s, %d core%s, %d PU%s, %d NUMA node%s, %s", t->npackages,
             t->npackages == 1 ? "" : "s", t->ncores, t->ncores == 1 ? "" : "s", t->npus,
             t->npus == 1 ? "" : "s", t->nnuma, t->nnuma == 1 ? "" : "s", cache);
}
