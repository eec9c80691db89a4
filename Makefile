# tiertrain — build, test and install dependencies.
#
#   make            build ./tiertrain (release, -O2 -g)
#   make test       build and run every test, then again under ASan+UBSan,
#                   and the cpu-async streaming test under ThreadSanitizer,
#                   and the CUDA backend on the emulated GPU (build/emu/);
#                   ends with "N passed, N failed"
#   make deps       install the Debian packages the project needs (as root),
#                   otherwise print the exact apt-get line
#   make fuzz       build the libFuzzer targets (clang) into build/fuzz/
#   make fuzz-long  run each fuzz target for FUZZ_TIME seconds (default 600)
#   make demo       the quick-start job on the built-in tiny model
#   make bench      the IO benchmark on a generated store (see README)
#   make gpu-bundle statically linked tiertrain + test_cuda_ops packed in
#                   build/gpu-bundle.tar.xz for a GPU machine without the -dev
#                   packages (tools/gpu_check.sh runs it there)
#   NO_CUDA=1       do not build the CUDA backend even when nvcc is found

CC      ?= cc
CLANG   ?= clang
BUILD   ?= build
OPT     ?= -O2
CSTD    := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wvla
CFLAGS  += $(CSTD) $(OPT) -g $(WARN) -I. -pthread
LDLIBS  := -luring -lhwloc -llz4 -lxxhash -ljansson -lutf8proc -lopenblas -lm -pthread
# gpu-bundle's binaries: the release objects linked with the non-CUDA
# libraries and the CUDA runtime statically, so that they run on a machine
# without the Debian -dev packages (the GPU machine, tools/gpu_check.sh);
# cuBLAS and cuDNN are opened at run time (they come with the CUDA toolkit
# there), libudev stays shared (hwloc's; in every base image).
STATIC_LDLIBS := -Wl,-Bstatic -luring -lhwloc -llz4 -lxxhash -ljansson -lutf8proc -lopenblas -lgfortran -lquadmath \
                 -Wl,-Bdynamic -l:libudev.so.1 -lm -pthread

# ---- Debian packages ------------------------------------------------------
DEB_PKGS := make gcc libc6-dev liburing-dev libhwloc-dev liblz4-dev libxxhash-dev libjansson-dev libutf8proc-dev \
            libopenblas-dev pkg-config fio clang libclang-rt-dev

# A build without the packages' headers stops here with what to run, not at
# the first compiler error (make deps / make test / make demo install them first).
DEP_HEADERS := liburing.h hwloc.h lz4.h xxhash.h jansson.h utf8proc.h cblas.h
have_header = $(wildcard /usr/include/$(1) /usr/include/*/$(1) /usr/include/*/*/$(1))
MISSING_HEADERS := $(strip $(foreach h,$(DEP_HEADERS),$(if $(call have_header,$(h)),,$(h))))
ifneq ($(MISSING_HEADERS),)
  ifeq ($(filter deps test demo bench clean,$(MAKECMDGOALS)),)
    $(error missing headers: $(MISSING_HEADERS); run `make deps` (installs the Debian packages) first)
  endif
endif

# ---- CUDA detection (STYLE.md 12) -----------------------------------------
ifeq ($(NO_CUDA),1)
  NVCC :=
else ifneq ($(NO_CUDA),)
  ifneq ($(NO_CUDA),0)
    $(error NO_CUDA must be 0 or 1, not '$(NO_CUDA)')
  endif
endif
ifneq ($(NO_CUDA),1)
  NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
endif
ifneq ($(strip $(NVCC)),)
  CUDA_MSG := CUDA backend: yes ($(NVCC))
  CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
  CUDA_SRC  := $(sort $(wildcard kernels/cuda/*.cu))
  CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=compute_80
  NVCCFLAGS := -std=c++17 -O2 -g -I. $(CUDA_ARCH) -Xcompiler -Wall,-Wextra,-Werror -Werror all-warnings
  CUDA_DEFS := -DTT_HAVE_CUDA -I$(CUDA_HOME)/include
  CUDA_LIBS := -L$(CUDA_HOME)/lib64 -lcudart -lstdc++ -Wl,-rpath,$(CUDA_HOME)/lib64
  STATIC_CUDA_LIBS := -L$(CUDA_HOME)/lib64 -lcudart_static -Wl,-Bstatic -lstdc++ -Wl,-Bdynamic -ldl -lrt \
                      -Wl,-rpath,$(CUDA_HOME)/lib64
else
  CUDA_MSG := CUDA backend: no$(if $(filter 1,$(NO_CUDA)), (NO_CUDA=1), (nvcc not found))
endif
ifeq ($(filter deps clean,$(MAKECMDGOALS)),)
  $(info $(CUDA_MSG))
endif

# ---- sources ----------------------------------------------------------------
LIB_SRC  := $(sort $(wildcard core/base/*.c core/*.c io/*.c sched/*.c kernels/*.c kernels/cpu/*.c kernels/cpu-async/*.c \
                                     kernels/cuda/*.c))
TOOL_SRC := $(sort $(wildcard tools/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_SH  := $(sort $(wildcard tests/test_*.sh))

LIB_OBJ   = $(LIB_SRC:%.c=$(B)/%.o)
# CUDA objects (one build serves the release and sanitizer binaries, and gpu-bundle's static ones; float only)
CUDA_BUILD ?= $(BUILD)/cuda
CUDA_OBJ  = $(CUDA_SRC:%.cu=$(CUDA_BUILD)/%.o)
TOOL_OBJ  = $(TOOL_SRC:%.c=$(B)/%.o)

B := $(BUILD)/rel
A := $(BUILD)/asan
# double-precision builds (-DTT_F64) for the finite-difference gradient tests (tests/test_grad_*.c)
F := $(BUILD)/f64
FA := $(BUILD)/f64asan
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# ThreadSanitizer build (no CUDA) of the tests that drive the asynchronous backend (cpu-async) and the
# read engine's pread threads (test_uring) and the op profile's event pool (test_opprof)
TS := $(BUILD)/tsan
TSAN_FLAGS := -fsanitize=thread -fno-omit-frame-pointer
TSAN_TESTS := test_stream_async test_generate test_uring test_opprof

# make test, demo, bench and gpu-bundle build on every CPU (JOBS=N for fewer) unless make was given -j itself
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
BUILD_JOBS = $(if $(findstring jobserver,$(MAKEFLAGS)),,-j$(JOBS))

.PHONY: all test run-tests deps fuzz fuzz-long corpus demo bench gpu-bundle clean
.SECONDARY:
.DELETE_ON_ERROR:
all: tiertrain

tiertrain: $(B)/tiertrain
	@cp $< $@

# release objects
$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CUDA_DEFS) -MMD -MP -c $< -o $@

# sanitizer objects
$(A)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CUDA_DEFS) -O1 $(ASAN_FLAGS) -MMD -MP -c $< -o $@

# CUDA objects; ptxas's resource report (registers, stack, spills per kernel) kept beside each in
# .o.ptxas (tests/test_cuda_rules.sh checks it: no kernel spills); anything else nvcc says is shown
$(CUDA_BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -Xptxas -v -MMD -MP -c $< -o $@ 2>$@.ptxas || { cat $@.ptxas >&2; rm -f $@; exit 1; }
	@grep -v -e '^ptxas info' -e 'bytes stack frame' $@.ptxas >&2 || true

$(F)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DTT_F64 -MMD -MP -c $< -o $@

$(TS)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -O1 $(TSAN_FLAGS) -MMD -MP -c $< -o $@

$(TS)/tests/%: $(TS)/tests/%.o $(LIB_SRC:%.c=$(TS)/%.o)
	$(CC) $(CFLAGS) $(TSAN_FLAGS) $^ -o $@ $(LDLIBS)

$(FA)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DTT_F64 -O1 $(ASAN_FLAGS) -MMD -MP -c $< -o $@

$(B)/tiertrain: $(LIB_SRC:%.c=$(B)/%.o) $(TOOL_SRC:%.c=$(B)/%.o) $(CUDA_OBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) $(CUDA_LIBS)

$(A)/tiertrain: $(LIB_SRC:%.c=$(A)/%.o) $(TOOL_SRC:%.c=$(A)/%.o) $(CUDA_OBJ)
	$(CC) $(CFLAGS) $(ASAN_FLAGS) $^ -o $@ $(LDLIBS) $(CUDA_LIBS)

$(B)/tests/%: $(B)/tests/%.o $(LIB_SRC:%.c=$(B)/%.o) $(CUDA_OBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) $(CUDA_LIBS)

$(A)/tests/%: $(A)/tests/%.o $(LIB_SRC:%.c=$(A)/%.o) $(CUDA_OBJ)
	$(CC) $(CFLAGS) $(ASAN_FLAGS) $^ -o $@ $(LDLIBS) $(CUDA_LIBS)

# ---- the emulated GPU (tests/cuda_emu/cuda_emu.h) ------------------------------
# The CUDA backend's sources rewritten as host C++ (tests/cuda_emu/rewrite.pl)
# and linked with an emulated runtime, cuBLAS and cuBLASLt instead of the real
# ones: $(EMU)/tests/test_cuda_ops and $(EMU)/tiertrain run the GPU code path on
# the CPU (tests/test_cuda_emu.sh). Needs the CUDA headers (built with nvcc).
EMU := $(BUILD)/emu
EMU_CXXFLAGS := -std=c++17 -O2 -g -I. -I$(CUDA_HOME)/include -pthread -Wall -Wextra -Werror
# The kernels' every load and store calls the emulator's access check
# (tests/cuda_emu/cuda_emu.cc, "what a kernel touches"): ThreadSanitizer's
# instrumentation, which calls a hook for every load and store, the store of a
# read-modify-write included (no runtime is linked: the hooks are the
# emulator's), and no vectorising or merging of accesses by the host compiler,
# which would make wider accesses than the kernel's source does, nor splitting
# of a vector type's access (a float4 load stays one 16-byte load, as on the GPU).
EMU_KFLAGS := -fsanitize=thread --param tsan-instrument-func-entry-exit=0 -fno-tree-vectorize -fno-tree-slp-vectorize \
	-fno-store-merging -fno-tree-sra
EMU_OBJ = $(CUDA_SRC:kernels/cuda/%.cu=$(EMU)/%.o) $(EMU)/cuda_emu.o $(EMU)/emu_cudnn.o
# cuDNN cannot run on the emulated GPU: tests/cuda_emu/emu_cudnn.cc stands in for kernels/cuda/cuda_cudnn.c
EMU_LIB = $(filter-out $(B)/kernels/cuda/cuda_cudnn.o,$(LIB_SRC:%.c=$(B)/%.o))
EMU_BINS := $(if $(NVCC),$(EMU)/tiertrain $(EMU)/tests/test_cuda_ops $(EMU)/tests/emu_selftest)
$(EMU)/%.cc: kernels/cuda/%.cu tests/cuda_emu/rewrite.pl
	@mkdir -p $(dir $@)
	perl tests/cuda_emu/rewrite.pl $< >$@
# the kernels' objects are rebuilt when their flags change (build/emu/kflags holds the last ones)
$(EMU)/kflags: FORCE
	@mkdir -p $(dir $@)
	@echo '$(EMU_CXXFLAGS) $(EMU_KFLAGS)' | cmp -s - $@ || echo '$(EMU_CXXFLAGS) $(EMU_KFLAGS)' >$@
FORCE:
.PHONY: FORCE
$(EMU)/%.o: $(EMU)/%.cc tests/cuda_emu/cuda_emu.h $(EMU)/kflags
	$(CXX) $(EMU_CXXFLAGS) $(EMU_KFLAGS) -include tests/cuda_emu/cuda_emu.h -MMD -MP -c $< -o $@
$(EMU)/tests/emu_selftest.cc: tests/cuda_emu/emu_selftest.cu tests/cuda_emu/rewrite.pl
	@mkdir -p $(dir $@)
	perl tests/cuda_emu/rewrite.pl $< >$@
$(EMU)/tests/emu_selftest: $(EMU)/tests/emu_selftest.o $(EMU)/cuda_emu.o $(B)/sched/arena.o $(B)/core/base/common.o
	$(CXX) $(EMU_CXXFLAGS) $^ -o $@ -lopenblas
$(EMU)/cuda_emu.o $(EMU)/emu_cudnn.o: $(EMU)/%.o: tests/cuda_emu/%.cc tests/cuda_emu/cuda_emu.h
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -MMD -MP -c $< -o $@
$(EMU)/tiertrain: $(EMU_LIB) $(TOOL_SRC:%.c=$(B)/%.o) $(EMU_OBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) -lstdc++
$(EMU)/tests/%: $(B)/tests/%.o $(EMU_LIB) $(EMU_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) -lstdc++

# gradient tests link the double-precision objects (shortest-stem rule wins)
$(B)/tests/test_grad_%: $(F)/tests/test_grad_%.o $(LIB_SRC:%.c=$(F)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(A)/tests/test_grad_%: $(FA)/tests/test_grad_%.o $(LIB_SRC:%.c=$(FA)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ASAN_FLAGS) $^ -o $@ $(LDLIBS)

# tests also built with -DTT_F64, as tests/NAME_f64 (the double build checks tighter tolerances)
F64_TWINS := test_galore test_generate
$(B)/tests/%_f64: $(F)/tests/%.o $(LIB_SRC:%.c=$(F)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(A)/tests/%_f64: $(FA)/tests/%.o $(LIB_SRC:%.c=$(FA)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ASAN_FLAGS) $^ -o $@ $(LDLIBS)

TESTS_REL  := $(TEST_SRC:tests/%.c=$(B)/tests/%) $(F64_TWINS:%=$(B)/tests/%_f64)
TESTS_ASAN := $(TEST_SRC:tests/%.c=$(A)/tests/%) $(F64_TWINS:%=$(A)/tests/%_f64)

# deps first, then everything else (also under make -j)
test: deps
	@$(MAKE) --no-print-directory $(BUILD_JOBS) run-tests

run-tests: $(B)/tiertrain $(A)/tiertrain $(TESTS_REL) $(TESTS_ASAN) $(TSAN_TESTS:%=$(TS)/tests/%) $(EMU_BINS) fuzz
	@TSAN_DIR="$(TS)" TSAN_TESTS="$(TSAN_TESTS)" sh tests/run.sh "$(B)" "$(A)" $(notdir $(TESTS_REL)) -- $(TEST_SH)

# ---- fuzzing (libFuzzer needs clang) ----------------------------------------
# The library is compiled once for all targets (instrumented, ASan + UBSan
# with UBSan findings fatal), each target links it with its tests/fuzz_*.c.
FUZZ_SRC   := $(sort $(wildcard tests/fuzz_*.c))
FUZZ_NAMES := $(FUZZ_SRC:tests/%.c=%)
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_OBJ    = $(LIB_SRC:%.c=$(BUILD)/fuzz/obj/%.o)
fuzz: $(FUZZ_NAMES:%=$(BUILD)/fuzz/%)
$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CLANG) $(CSTD) -O1 -g -I. -pthread -fsanitize=fuzzer-no-link $(FUZZ_SAN) -MMD -MP -c $< -o $@
$(BUILD)/fuzz/fuzz_%: tests/fuzz_%.c tests/fuzz.h $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	$(CLANG) $(CSTD) -O1 -g -I. -pthread -fsanitize=fuzzer $(FUZZ_SAN) $< $(FUZZ_OBJ) -o $@ $(LDLIBS)

# make corpus: rewrites the generated seeds (tests/corpus_gen.c) in tests/corpus/
corpus: $(B)/tests/corpus_gen
	$(B)/tests/corpus_gen tests/corpus

# make fuzz-long [FUZZ_TIME=600] [FUZZ_TARGETS="fuzz_tier fuzz_ckpt"]: each
# target for FUZZ_TIME seconds on its corpus (tests/corpus/NAME), one after
# the other; logs and any crash input in build/fuzz/long/. Ends with a table.
FUZZ_TIME    ?= 600
FUZZ_TARGETS ?= $(FUZZ_NAMES)
fuzz-long: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
	@sh tools/fuzz_long.sh "$(BUILD)/fuzz" "$(FUZZ_TIME)" $(FUZZ_TARGETS)

# ---- the quick-start job -----------------------------------------------------
demo: deps
	@$(MAKE) --no-print-directory $(BUILD_JOBS) tiertrain
	@sh tools/demo.sh

bench: deps
	@$(MAKE) --no-print-directory $(BUILD_JOBS) tiertrain
	@sh tools/bench_io.sh

# ---- the GPU machine's binaries (tools/gpu_check.sh runs them there) ----------
# The release objects (the compiler flags are the same), linked statically: STATIC_LDLIBS above.
GPU_BINS := $(BUILD)/static/tiertrain $(BUILD)/static/tests/test_cuda_ops
$(BUILD)/static/tiertrain: $(LIB_SRC:%.c=$(B)/%.o) $(TOOL_SRC:%.c=$(B)/%.o) $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ $(STATIC_LDLIBS) $(STATIC_CUDA_LIBS)
$(BUILD)/static/tests/test_cuda_ops: $(B)/tests/test_cuda_ops.o $(LIB_SRC:%.c=$(B)/%.o) $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ $(STATIC_LDLIBS) $(STATIC_CUDA_LIBS)
gpu-bundle: deps
	@test -n "$(NVCC)" || { echo "gpu-bundle: needs nvcc (CUDA toolkit)"; exit 1; }
	@$(MAKE) --no-print-directory $(BUILD_JOBS) $(GPU_BINS)
	@rm -rf build/gpu && mkdir -p build/gpu && cp $(GPU_BINS) build/gpu/ && strip --strip-debug build/gpu/*
	@for b in build/gpu/*; do sh tools/bundle_libs.sh $$b || exit 1; done
	@echo "built $$(date -u '+%Y-%m-%d %H:%M UTC') from commit $$(git rev-parse --short HEAD 2>/dev/null || echo '?')$$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes'), sources $$(sh tools/src_hash.sh)" >build/gpu/BUILD
	@tar -C build -cJf build/gpu-bundle.tar.xz gpu
	@echo "gpu-bundle: build/gpu-bundle.tar.xz ($$(du -h build/gpu-bundle.tar.xz | cut -f1)); tools/gpu_check.sh unpacks and runs it"

# ---- dependencies ------------------------------------------------------------
deps:
	@sh tools/deps.sh deps $(DEB_PKGS)

clean:
	rm -rf $(BUILD) tiertrain

-include $(sort $(shell find $(BUILD) $(CUDA_BUILD) -name '*.d' 2>/dev/null))
