/* tests/cuda_emu/emu_cudnn.cc — cuDNN's attention for the emulated GPU: the
 * API of kernels/cuda/cuda_cudnn.h (which the emulated binaries link instead
 * of cuda_cudnn.c) computed by the CPU reference on the emulated device
 * memory. What it checks is the backend's side of TT_CUDA_ATTN=cudnn — the
 * scratch layout and its size, the log-sum-exp moved to and from cuDNN's
 * packed (B, H, S) layout, the plan cache, packed examples and refused shapes
 * taking the kernels — not cuDNN's graphs (tests/test_cudnn_plan.c plans
 * those for an H200; only a GPU runs them).
 *
 * Every buffer a real engine writes is written here through
 * cudaMemsetAsync first (a pattern cuDNN would overwrite), so the emulator
 * checks it lies inside one live arena block, as it checks every copy:
 * the backward's row sums and dQ accumulator, and the whole workspace the
 * plan asks (tt_sdpa_workspace_estimate, what cuDNN 9.19 asks).
 *
 * TT_EMU_CUDNN=missing: the library does not load (the refusal of a machine
 * without cuDNN); TT_EMU_CUDNN=refuse:SEQ: shapes of that sequence length
 * get no plan. */
#include "kernels/cuda/cuda_cudnn.h"

extern "C" {
#include "kernels/backend.h"
}

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <functional>
#include <vector>

struct tt_cudnn {
    int unused;
};
struct tt_sdpa_plan {
    int dir;
    tt_sdpa_shape sh;
};

static const char *mode(void) {
    const char *m = getenv("TT_EMU_CUDNN");
    return m ? m : "";
}

tt_cudnn *tt_cudnn_open(char *why, size_t n) {
    if (strcmp(mode(), "missing") == 0) {
        snprintf(why, n, "cannot load libcudnn.so.9 (TT_EMU_CUDNN=missing)");
        return NULL;
    }
    static tt_cudnn c;
    return &c;
}
void tt_cudnn_close(tt_cudnn *) {}
size_t tt_cudnn_version(const tt_cudnn *) { return 91900; }
void *tt_cudnn_handle(tt_cudnn *c, void *, char *, size_t) { return c; }
void tt_cudnn_handle_free(tt_cudnn *, void *) {}

tt_sdpa_plan *tt_sdpa_plan_new(tt_cudnn *, void *handle, const char *, int dir, tt_sdpa_shape sh, char *why,
                               size_t n) {
    if (!handle) {
        snprintf(why, n, "the emulated cuDNN plans only for its own (emulated) GPU");
        return NULL;
    }
    const char *m = mode();
    if (strncmp(m, "refuse:", 7) == 0 && atoi(m + 7) == sh.S) {
        snprintf(why, n, "cuDNN 91900 has no engine for this attention graph on this GPU (TT_EMU_CUDNN=%s)", m);
        return NULL;
    }
    return new tt_sdpa_plan{dir, sh};
}
void tt_sdpa_plan_free(tt_sdpa_plan *p) { delete p; }
int64_t tt_sdpa_plan_workspace(const tt_sdpa_plan *p) { return (int64_t)tt_sdpa_workspace_estimate(p->dir, p->sh); }
int64_t tt_sdpa_plan_engine(const tt_sdpa_plan *p) { return p->dir == TT_SDPA_FWD ? 2 : 6; }
int tt_sdpa_loaded(const tt_sdpa_plan *) { return 1; }

/* cudaMemsetAsync on the compute stream the handle issues to: the emulator checks its span at once. */
extern cudaStream_t g_compute;
/* cuda_emu.cc: fn run as an operation of stream q (at once; with TT_EMU_DEFER when the stream reaches it). */
void tt_emu_stream_call(cudaStream_t q, const char *what, std::function<void()> fn);

/* The reference computation of the plan's direction, on the device buffers. */
static void sdpa_compute(int dir, const tt_sdpa_shape sh, const tt_sdpa_scratch l, size_t T, const tt_sdpa_io *io,
                         const tt_backend *cpu) {
    float *packed = (float *)((char *)io->scratch + l.lse); /* (B, H, S) */
    std::vector<float> lse(T * sh.H);     /* (B*S, H), the reference's */
    std::vector<unsigned char> sc(cpu->attn_scratch_bytes(sh.B, sh.S, sh.H, sh.Hkv, sh.D, BE_BF16));
    auto at = [&](size_t b, size_t h, size_t s) { return (b * sh.H + h) * sh.S + s; };
    if (dir == TT_SDPA_FWD) {
        cpu->attn_fwd(sh.B, sh.S, sh.H, sh.Hkv, sh.D, io->q, io->k, io->v, io->o, lse.data(), NULL, sc.data(), BE_BF16);
        for (size_t b = 0; b < (size_t)sh.B; b++)
            for (size_t s = 0; s < (size_t)sh.S; s++)
                for (size_t h = 0; h < (size_t)sh.H; h++) packed[at(b, h, s)] = lse[(b * sh.S + s) * sh.H + h];
    } else {
        for (size_t b = 0; b < (size_t)sh.B; b++)
            for (size_t s = 0; s < (size_t)sh.S; s++)
                for (size_t h = 0; h < (size_t)sh.H; h++) lse[(b * sh.S + s) * sh.H + h] = packed[at(b, h, s)];
        cpu->attn_bwd(sh.B, sh.S, sh.H, sh.Hkv, sh.D, io->q, io->k, io->v, io->o, lse.data(), io->dout, io->dq, io->dk,
                      io->dv, NULL, sc.data(), BE_BF16);
    }
}

int tt_sdpa_run(tt_sdpa_plan *p, void *, const tt_sdpa_io *io, char *why, size_t n) {
    const tt_sdpa_shape sh = p->sh;
    const tt_backend *cpu = backend_cpu();
    const tt_sdpa_scratch l = tt_sdpa_layout(sh);
    const size_t T = (size_t)sh.B * sh.S;
    if (p->dir == TT_SDPA_BWD) {
        if (cudaMemsetAsync((char *)io->scratch + l.sum, 0x7f, l.workspace - l.sum, g_compute) != cudaSuccess) {
            snprintf(why, n, "the backward's buffers");
            return -1;
        }
    }
    const size_t ws = tt_sdpa_workspace_estimate(p->dir, sh);
    if (ws && cudaMemsetAsync(io->workspace, 0x7f, ws, g_compute) != cudaSuccess) {
        snprintf(why, n, "the workspace");
        return -1;
    }
    /* the engine's work, in the stream's order: the shape and the pointers taken now, as cuDNN takes them */
    tt_emu_stream_call(g_compute, "cuDNN attention", [dir = p->dir, sh, l, T, io = *io, cpu] {
        sdpa_compute(dir, sh, l, T, &io, cpu);
    });
    return 0;
}