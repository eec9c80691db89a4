/* kernels/adamw.h — AdamW's update of one element, shared by the CPU
 * reference (kernels/cpu/cpu.c) and the CUDA kernel (kernels/cuda/
 * cuda_backend.cu): the same double-precision operations in the same order,
 * with the constants computed once on the host by tt_adamw_consts, and never
 * contracted into FMAs on the GPU (nvcc fuses a * b + c unless told not to;
 * ISO C does not). So the two backends step a tensor to the same bits — and a
 * full-training run that steps most tensors on the GPU and the streamed
 * embedding on the host matches the resident run that steps all of them on
 * the GPU. */
#ifndef TT_KERNELS_ADAMW_H
#define TT_KERNELS_ADAMW_H

#include <math.h>

#ifdef __CUDACC__
#define TT_ADAMW_HD static inline __host__ __device__
#else
#define TT_ADAMW_HD static inline
#endif

/* The step's constants (double): the moments' decay and its complement, the
 * bias-corrected step size, sqrt of the second moment's bias correction, the
 * decoupled weight decay's factor, and eps. */
typedef struct tt_adamw_k {
    double b1, nb1, b2, nb2, step_size, bc2_sqrt, decay, eps;
} tt_adamw_k;

static inline tt_adamw_k tt_adamw_consts(float lr, float b1, float b2, float eps, float wd, int step) {
    const double bc1 = 1 - pow((double)b1, step), bc2 = 1 - pow((double)b2, step);
    tt_adamw_k k = {(double)b1, 1 - (double)b1, (double)b2, 1 - (double)b2, (double)lr / bc1, sqrt(bc2),
                    1 - (double)lr * wd, (double)eps};
    return k;
}

/* m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g g (each rounded to float once);
 * returns the new p = p (1 - lr wd) - step_size m / (sqrt(v) / sqrt(bc2) + eps)
 * in double (the caller rounds it to its parameters' type). */
TT_ADAMW_HD double tt_adamw_elem(const tt_adamw_k *k, double p, double g, float *m, float *v) {
#ifdef __CUDA_ARCH__
    *m = (float)__dadd_rn(__dmul_rn(k->b1, (double)*m), __dmul_rn(k->nb1, g));
    *v = (float)__dadd_rn(__dmul_rn(k->b2, (double)*v), __dmul_rn(__dmul_rn(k->nb2, g), g));
    const double denom = __dadd_rn(__ddiv_rn(__dsqrt_rn((double)*v), k->bc2_sqrt), k->eps);
    return __dsub_rn(__dmul_rn(p, k->decay), __ddiv_rn(__dmul_rn(k->step_size, (double)*m), denom));
#else
    *m = (float)(k->b1 * *m + k->nb1 * g);
    *v = (float)(k->b2 * *v + k->nb2 * g * g);
    const double denom = sqrt((double)*v) / k->bc2_sqrt + k->eps;
    return p * k->decay - k->step_size * *m / denom;
#endif
}

#endif
