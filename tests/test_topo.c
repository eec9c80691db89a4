/* tests/test_topo.c — hwloc topology: counts are >= 1 and consistent, the
 * description is non-empty, and pinning the calling thread to a core changes
 * that thread's affinity (checked with sched_getaffinity against the core's
 * CPUs, found through a second, independent hwloc topology) and nothing else's.
 * Where the sandbox forbids binding, the failure must be a clean -errno with a
 * message, and the affinity must be left as it was. */
#include "sched/topo.h"

#include "core/base/common.h"
#include "tests/test.h"

#include <errno.h>
#include <hwloc.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>

static int g_binding_forbidden;

/* Expected Linux CPU set of core `core`, mirroring topo.c's fallbacks. */
static void core_cpus(int core, int ncores, cpu_set_t *want) {
    CPU_ZERO(want);
    hwloc_topology_t t;
    if (hwloc_topology_init(&t) || hwloc_topology_load(t)) {
        fprintf(stderr, "test: hwloc failed\n");
        exit(1);
    }
    hwloc_obj_type_t type = HWLOC_OBJ_CORE;
    if (hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE) != ncores) type = HWLOC_OBJ_PU;
    hwloc_obj_t o = hwloc_get_obj_by_type(t, type, (unsigned)core);
    if (o) {
        int i;
        hwloc_bitmap_foreach_begin(i, o->cpuset) CPU_SET(i, want);
        hwloc_bitmap_foreach_end();
    } else {
        CPU_SET(core, want); /* hwloc found no PUs at all */
    }
    hwloc_topology_destroy(t);
}

/* Pins this thread to `core` and checks the result. */
static void pin_and_check(tt_topo *t, int core) {
    cpu_set_t before, after, want;
    CHECK_EQ_INT(sched_getaffinity(0, sizeof before, &before), 0);
    tt_seterr("%s", "");
    int rc = topo_pin_thread(t, core);
    CHECK_EQ_INT(sched_getaffinity(0, sizeof after, &after), 0);
    if (rc == 0) {
        core_cpus(core, topo_ncores(t), &want);
        CHECK_MSG(CPU_EQUAL(&after, &want), "core %d: affinity has %d CPUs, want %d", core,
                  CPU_COUNT(&after), CPU_COUNT(&want));
        CHECK(CPU_COUNT(&after) >= 1);
        CHECK(CPU_COUNT(&after) <= topo_npus(t));
    } else {
        g_binding_forbidden = 1;
        fprintf(stderr, "note: binding refused: %s\n", tt_lasterr());
        CHECK(rc < 0 && rc > -4096);
        CHECK(strstr(tt_lasterr(), "pin") != NULL);
        CHECK(CPU_EQUAL(&before, &after)); /* nothing changed */
    }
}

typedef struct {
    tt_topo *t;
    int core;
} pin_arg;

static void *pin_thread(void *p) {
    pin_arg *a = p;
    pin_and_check(a->t, a->core);
    return NULL;
}

int main(void) {
    tt_topo *t = NULL;
    int rc = topo_init(&t);
    CHECK_MSG(rc == 0, "topo_init: %d %s", rc, tt_lasterr());
    if (rc) TEST_END();

    int pk = topo_npackages(t), co = topo_ncores(t), pu = topo_npus(t), nu = topo_nnuma(t);
    CHECK(pk >= 1 && co >= 1 && pu >= 1 && nu >= 1);
    CHECK(pu >= co && co >= pk);
    CHECK(topo_io_core(t) >= 0 && topo_io_core(t) < co);
    CHECK(topo_compute_cores(t) >= 1);
    if (co > 1) {
        CHECK_EQ_INT(topo_io_core(t), co - 1);
        CHECK_EQ_INT(topo_compute_cores(t), co - 1);
    }
    char desc[256] = "";
    topo_describe(t, desc, sizeof desc);
    fprintf(stderr, "topology: %s\n", desc);
    CHECK(strlen(desc) > 0);
    char want[64];
    snprintf(want, sizeof want, "%d core%s", co, co == 1 ? "" : "s");
    CHECK(strstr(desc, want) != NULL);
    if (topo_llc_bytes(t)) CHECK(strstr(desc, "L") != NULL);
    char tiny[8];
    topo_describe(t, tiny, sizeof tiny); /* truncates, stays terminated */
    CHECK(strlen(tiny) == sizeof tiny - 1);

    cpu_set_t orig, now;
    CHECK_EQ_INT(sched_getaffinity(0, sizeof orig, &orig), 0);

    /* another thread pins itself to the IO core; this thread is untouched */
    pin_arg a = {t, topo_io_core(t)};
    pthread_t th;
    CHECK_EQ_INT(pthread_create(&th, NULL, pin_thread, &a), 0);
    pthread_join(th, NULL);
    CHECK_EQ_INT(sched_getaffinity(0, sizeof now, &now), 0);
    CHECK(CPU_EQUAL(&orig, &now));

    /* this thread, to every core in turn */
    for (int c = 0; c < co && c < 64; c++) pin_and_check(t, c);
    pin_and_check(t, topo_io_core(t));
    if (g_binding_forbidden) fprintf(stderr, "note: thread binding is forbidden here\n");

    sched_setaffinity(0, sizeof orig, &orig);
    topo_free(t);
    topo_free(NULL);
    TEST_END();
}
