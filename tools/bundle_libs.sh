#!/bin/sh
# tools/bundle_libs.sh BINARY — the GPU machine's allow-list: BINARY (from
# `make gpu-bundle`) may load only glibc's libraries, the C++/gcc runtime,
# libudev and the CUDA runtime (cuBLAS and cuDNN are opened at run time, from
# that machine's CUDA install: tools/gpu_check.sh finds them); every other library
# (liburing, hwloc, lz4, xxhash, jansson, OpenBLAS, gfortran, ...) must be
# linked in statically, since nothing can be installed there. Prints each
# library outside the list; exit 1 if any, 2 if ldd cannot read BINARY.
bin=${1:?usage: tools/bundle_libs.sh BINARY}
libs=$(ldd "$bin" 2>&1) || { echo "ldd $bin failed: $libs"; exit 2; }
bad=$(echo "$libs" | awk '{print $1}' | grep -v -E \
    '^(linux-vdso\.so|/lib64/ld-linux|ld-linux|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|libgcc_s\.so|libstdc\+\+\.so|libudev\.so|libcudart\.so)')
if [ -n "$bad" ]; then
    echo "$bin loads libraries the GPU machine does not have: $(echo $bad)"
    exit 1
fi
exit 0
