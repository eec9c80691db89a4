/* tests/test_cuda_blas.c — cuBLAS and cuBLASLt opened at run time
 * (kernels/cuda/cuda_gemm.cu, cuda_blas_open), checked without a GPU: the
 * toolkit's libraries give every function the backend calls (by the names
 * the loader asks for: cublasCreate_v2, not the header's macro); a library
 * that cannot be loaded, or one without those functions, is refused in one
 * sentence that names it; and once opened, a second call does nothing.
 * tiertrain itself no longer needs cuBLAS to start (tests/test_cli.sh's
 * ldd check). Skips (77) in a build without CUDA. */
#include "tests/test.h"

#include <string.h>

#ifdef TT_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"

int main(void) {
    char why[512] = "";
    /* a missing cuBLASLt, then a missing cuBLAS: each named, with what to do */
    CHECK_EQ_INT(cuda_blas_open("libcublasLt-missing.so.13", NULL, why, sizeof why), -1);
    CHECK_MSG(strstr(why, "cannot load libcublasLt-missing.so.13 (") && strstr(why, "LD_LIBRARY_PATH") &&
                  strstr(why, "--device cpu"),
              "%s", why);
    CHECK_EQ_INT(cuda_blas_open(NULL, "libcublas-missing.so.13", why, sizeof why), -1);
    CHECK_MSG(strstr(why, "cannot load libcublas-missing.so.13 ("), "%s", why);
    /* a library that loads but is not cuBLASLt: the first function it lacks, named */
    CHECK_EQ_INT(cuda_blas_open("libm.so.6", NULL, why, sizeof why), -1);
    CHECK_MSG(strstr(why, "libm.so.6 has no cublasLtCreate (cuBLAS 13 is needed)"), "%s", why);
    /* the toolkit's: every function found (-1 here would name the one missing) */
    why[0] = 0;
    int rc = cuda_blas_open(NULL, NULL, why, sizeof why);
    CHECK_MSG(rc == 0, "%s", why);
    if (rc == 0) {
        /* opened: later calls, whatever they name, do nothing */
        CHECK_EQ_INT(cuda_blas_open("libcublasLt-missing.so.13", NULL, why, sizeof why), 0);
        printf("test_cuda_blas: cuBLAS and cuBLASLt opened, every function found\n");
    }
    TEST_END();
}
#else
int main(void) {
    printf("SKIP: a build without CUDA\n");
    return 77;
}
#endif
