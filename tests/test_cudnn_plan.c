/* tests/test_cudnn_plan.c — the cuDNN attention graphs (kernels/cuda/cuda_cudnn.c),
 * checked without a GPU: cuDNN plans them for an H200 described by its
 * device properties, which runs its heuristics, its support checks and the
 * compilation of each fused kernel for sm_90 — everything but loading the
 * kernel, which needs the driver. Where no driver is installed the CUDA
 * toolkit's stub libcuda.so.1 is loaded first so cuDNN gets that far (the
 * stub fails the load, which is where an unloaded plan stops).
 *
 * For every shape the backend meets (the op test's, llama3.1-8b's and the
 * pruned 70B's training shapes, multi-head, small and odd ones): both
 * directions get an engine, and the workspace it asks is within what the
 * backend reserves (tt_sdpa_workspace_estimate). A Volta (sm_70) gets no
 * engine, and shapes outside the supported range are refused by name: the
 * refusals the backend turns into its fallback.
 *
 * Skips (77) where cuDNN 9 is not installed. */
#include "kernels/cuda/cuda_cudnn.h"

#include "core/base/common.h"
#include "tests/test.h"

#include <dlfcn.h>
#include <string.h>

/* cuDNN's runtime compiler (NVRTC) keeps what it allocates for each kernel it
 * builds: under AddressSanitizer, leak checking is paused while cuDNN works
 * (out-of-bounds accesses are still checked). */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define LEAKS_OFF() __lsan_disable()
#define LEAKS_ON() __lsan_enable()
/* the plans' code is the same for every shape, and each plan is seconds of NVRTC under ASan: the release build
 * plans every shape (the workspace check is numeric), this one the real op shape and the two odd ones */
#define ASAN_SHAPE(i) ((i) == 0 || (i) >= 6)
#else
#define ASAN_SHAPE(i) 1
#define LEAKS_OFF() ((void)0)
#define LEAKS_ON() ((void)0)
#endif

/* An H200 as cudaGetDeviceProperties reports it (132 SMs, 227 KiB of shared
 * memory per block opt-in, 60 MiB of L2), in cuDNN's device-property JSON. */
static const char *h200 =
    "{\"deviceName\":\"NVIDIA H200\",\"deviceVer\":900,\"driverVer\":13000,\"cudaDeviceId\":0,"
    "\"totalGlobalMem\":150754820096,\"maxGridSize\":[2147483647,65535,65535],\"maxBlockSize\":[1024,1024,64],"
    "\"regsPerBlock\":65536,\"multiProcessorCount\":132,\"warpSize\":32,\"maxSharedMemoryPerBlock\":49152,"
    "\"maxSharedMemoryPerBlockOptin\":232448,\"reservedSharedMemoryPerBlock\":1024,\"maxRegistersPerSM\":65536,"
    "\"maxCtasPerSM\":32,\"maxThreadsPerBlock\":1024,\"maxThreadsPerSM\":2048,\"pciDeviceId\":0,\"isTccDriver\":0,"
    "\"supportCoopLaunch\":1,\"smClockRateKHz\":1980000,\"memClockRateKHz\":3201000,\"l2CacheSize\":62914560}";

static void driver_or_stub(void) {
    if (dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL)) return;
    const char *home = getenv("CUDA_HOME");
    char path[512];
    snprintf(path, sizeof path, "%s/lib64/stubs/libcuda.so", home && *home ? home : "/usr/local/cuda");
    if (!dlopen(path, RTLD_NOW | RTLD_GLOBAL)) /* its soname is libcuda.so.1: cuDNN's dlopen finds it loaded */
        fprintf(stderr, "test_cudnn_plan: no libcuda.so.1 and no stub at %s: cuDNN stops before compiling\n", path);
}

int main(void) {
    char why[1024] = "";
    tt_cudnn *c = tt_cudnn_open(why, sizeof why);
    if (!c) {
        fprintf(stderr, "test_cudnn_plan: skipped: %s\n", why);
        return 77;
    }
    driver_or_stub();
    printf("cuDNN %zu\n", tt_cudnn_version(c));
    LEAKS_OFF();

    const tt_sdpa_shape shapes[] = {
        {2, 4096, 16, 2, 128}, /* test_cuda_ops' real shape */
        {4, 2048, 32, 8, 128}, /* llama3.1-8b, an 8192-token micro-batch at seq 2048 */
        {2, 4096, 32, 8, 128}, /* ... at seq 4096 */
        {1, 4096, 64, 8, 128}, /* llama3.1-70b (heads kept whole by the pruning) at seq 4096 */
        {1, 8192, 64, 8, 128}, /* ... at seq 8192 */
        {2, 4096, 32, 32, 128}, /* llama2-7b: multi-head */
        {1, 100, 4, 2, 64},     /* a sequence no tile divides */
        {3, 256, 5, 1, 96},     /* odd head count, head_dim 96 */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int dir = TT_SDPA_FWD; dir <= TT_SDPA_BWD && ASAN_SHAPE(i); dir++) {
            const tt_sdpa_shape sh = shapes[i];
            tt_sdpa_plan *p = tt_sdpa_plan_new(c, NULL, h200, dir, sh, why, sizeof why);
            CHECK_MSG(p, "%s B %d S %d heads %d/%d D %d: %s", dir ? "backward" : "forward", sh.B, sh.S, sh.H, sh.Hkv,
                      sh.D, why);
            if (!p) continue;
            const int64_t ws = tt_sdpa_plan_workspace(p);
            printf("%-8s B %d S %5d heads %2d/%-2d D %3d: engine %lld, workspace %.2f MiB (reserved %.2f)%s\n",
                   dir ? "backward" : "forward", sh.B, sh.S, sh.H, sh.Hkv, sh.D, (long long)tt_sdpa_plan_engine(p),
                   ws / 1048576.0, tt_sdpa_workspace_estimate(dir, sh) / 1048576.0,
                   tt_sdpa_loaded(p) ? "" : ", compiled for sm_90, not loaded");
            CHECK(tt_sdpa_plan_engine(p) >= 0);
            CHECK_MSG(ws >= 0 && (size_t)ws <= tt_sdpa_workspace_estimate(dir, sh),
                      "workspace %lld over the reserved %zu", (long long)ws, tt_sdpa_workspace_estimate(dir, sh));
            tt_sdpa_plan_free(p);
        }

    /* a GPU without the engines (sm_70): no plan, and a reason */
    char volta[2048];
    snprintf(volta, sizeof volta, "%s", h200);
    char *v = strstr(volta, "\"deviceVer\":900");
    TT_ASSERT(v);
    memcpy(v, "\"deviceVer\":700", strlen("\"deviceVer\":700"));
    const tt_sdpa_shape small = {1, 256, 4, 2, 64};
    why[0] = 0;
    tt_sdpa_plan *p = tt_sdpa_plan_new(c, NULL, volta, TT_SDPA_FWD, small, why, sizeof why);
    CHECK_MSG(!p, "a plan for sm_70");
    CHECK_MSG(strstr(why, "engine"), "sm_70's refusal: '%s'", why);
    tt_sdpa_plan_free(p);

    /* shapes outside the range: named in the refusal */
    const tt_sdpa_shape bad[] = {{1, 256, 4, 3, 64}, {1, 256, 4, 2, 60}, {1, 256, 4, 2, 264}, {0, 256, 4, 2, 64}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = 0;
        p = tt_sdpa_plan_new(c, NULL, h200, TT_SDPA_BWD, bad[i], why, sizeof why);
        CHECK_MSG(!p, "a plan for heads %d/%d head_dim %d", bad[i].H, bad[i].Hkv, bad[i].D);
        CHECK_MSG(strstr(why, "not supported"), "refusal: '%s'", why);
        tt_sdpa_plan_free(p);
    }
    LEAKS_ON();
    tt_cudnn_close(c);
    TEST_END();
}
