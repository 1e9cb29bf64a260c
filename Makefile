# bft — BERT fine-tuning inside PostgreSQL.
#
#   make                 build bft.so (extension) and build/bft-cli
#   make engine cli      build/libbftengine.a and build/bft-cli only (no pg_config needed)
#   make install         install the extension into the server found by pg_config
#   make unit            build the engine's C unit tests (build/tests/)
#   make installcheck    pg_regress against a running server (tests/run_all.sh does it all)
#   make prove_installcheck  the TAP tests (tests/t) in clusters of their own
#   make fuzz            build libFuzzer targets (clang-14) into build/fuzz/
#
# Engine objects are compiled with the project's own C11 flags (no Postgres
# headers) into build/libbftengine.a, linked into both bft.so and bft-cli.
# BUILD=dir puts every engine/CLI/test artefact under another directory.

EXTENSION = bft
MODULE_big = bft
DATA = $(wildcard sql/bft--*.sql)
PG_SRCS = $(wildcard src/pg/*.c)
OBJS = $(PG_SRCS:.c=.o)
REGRESS = $(sort $(filter-out bft--%,$(basename $(notdir $(wildcard sql/*.sql)))))
REGRESS_OPTS = --inputdir=. --load-extension=bft
# isolation specs (pg_isolation_regress): tests/isolation/specs, expected/
ISOLATION = $(sort $(basename $(notdir $(wildcard tests/isolation/specs/*.spec))))
ISOLATION_OPTS = --inputdir=tests/isolation --load-extension=bft
EXTRA_CLEAN = build output_iso

BUILD ?= build
PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
# The default build runs on any x86-64: no -march; the CPU backend's
# elementwise loops (src/engine/ops_cpu.c) carry AVX-512, AVX2 and baseline
# versions chosen at run time (gcc target_clones). BFT_MARCH=-march=native
# builds for this machine's CPU only (tests/bench/bench_portable.sh compares).
BFT_MARCH ?=
ENGINE_PKGS = json-c icu-uc
ENGINE_CFLAGS = -std=c11 -O3 $(BFT_MARCH) -fPIC -g -Wall -Wextra -D_GNU_SOURCE \
	-fno-math-errno -Isrc/engine $(shell pkg-config --cflags $(ENGINE_PKGS) 2>/dev/null)
ENGINE_LIBS = -ldl $(shell pkg-config --libs $(ENGINE_PKGS) 2>/dev/null) -lm -lpthread

ENGINE_SRCS = $(sort $(wildcard src/engine/*.c))
ENGINE_OBJS = $(ENGINE_SRCS:src/engine/%.c=$(BUILD)/engine/%.o)
ENGINE_LIB = $(BUILD)/libbftengine.a

# ---- CUDA backend (src/engine/cuda/) ------------------------------------------
# make USE_CUDA=1 builds the cuBLAS/CUDA backend as $(BUILD)/bft_cuda.so (the
# kernels + cudart + cuBLAS), which the engine dlopen()s at the first CUDA
# request (cuda_loader.c): bft.so and bft-cli do not link CUDA, so they load as
# fast without a GPU as a CPU-only build. The default is 1 when nvcc exists at
# $(CUDA_HOME)/bin/nvcc (and cuBLAS beside it); USE_CUDA=0 forces a CPU-only build. libcuda (the driver)
# is never linked: cudart loads it, so a CUDA build runs on machines without a
# GPU or driver (device cuda then reports "no CUDA device"). make install puts
# bft_cuda.so next to bft.so in $(pkglibdir).
CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(CUDA_HOME)/bin/nvcc
ifeq ($(origin USE_CUDA),undefined)
USE_CUDA := $(if $(and $(wildcard $(NVCC)),$(wildcard $(CUDA_HOME)/lib64/libcublas.so)),1,0)
endif
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90]
NVCC_FLAGS = -O3 -std=c++17 $(CUDA_ARCH) -DBFT_CUDA_MODULE -Isrc/engine -Isrc/engine/cuda \
	-Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Wextra,-fno-exceptions,-fno-rtti,-fno-threadsafe-statics
CUDA_MODULE_LIBS = -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcublasLt -lcudart -lm
ENGINE_SRCS += src/engine/cuda/cuda_loader.c
CUDA_STAMP = $(BUILD)/engine/cuda/.use_cuda_$(USE_CUDA)
# (the rules below must not become the default goal: restore it afterwards)
BFT_SAVED_GOAL := $(.DEFAULT_GOAL)
ifeq ($(USE_CUDA),1)
CUDA_MODULE = $(BUILD)/bft_cuda.so
$(BUILD)/engine/cuda/cuda_loader.o: ENGINE_CFLAGS += -DBFT_WITH_CUDA
$(CUDA_MODULE): $(BUILD)/engine/cuda/ops_cuda.o
	$(CC) -shared -o $@ $< $(CUDA_MODULE_LIBS) -Wl,--no-undefined
all unit $(BUILD)/bft-cli $(BUILD)/tests/test_cuda: $(CUDA_MODULE)
ifneq ($(PGXS),)
install: install-bft-cuda
install-bft-cuda: $(CUDA_MODULE)
	$(INSTALL_SHLIB) $(CUDA_MODULE) '$(DESTDIR)$(pkglibdir)/bft_cuda.so'
uninstall: uninstall-bft-cuda
uninstall-bft-cuda:
	rm -f '$(DESTDIR)$(pkglibdir)/bft_cuda.so'
endif
.PHONY: install-bft-cuda uninstall-bft-cuda
endif
$(CUDA_STAMP):
	@mkdir -p $(dir $@)
	@rm -f $(dir $@).use_cuda_*
	@touch $@
$(BUILD)/engine/cuda/cuda_loader.o: $(CUDA_STAMP) $(wildcard src/engine/cuda/*.h)
$(BUILD)/engine/cuda/%.o: src/engine/cuda/%.cu $(wildcard src/engine/cuda/*.h) $(wildcard src/engine/*.h)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@
# The CUDA emulator (tests only, tests/cuda_emu): ops_cuda.cu rewritten by
# convert.sed and compiled by the host C++ compiler against the emulator's
# runtime/cuBLAS, as $(BUILD)/emu/bft_cuda.so; BFT_CUDA_MODULE=$(BUILD)/emu/bft_cuda.so
# runs the CUDA backend's host code and kernels on the CPU. Never installed.
EMU_MODULE = $(BUILD)/emu/bft_cuda.so
EMU_CXXFLAGS = -std=c++17 -O2 -g -fPIC -Wall -Wextra -U_FORTIFY_SOURCE -fno-strict-aliasing \
	-fvisibility=hidden -DBFT_CUDA_MODULE -Itests/cuda_emu/include -Isrc/engine -Isrc/engine/cuda
define emu_convert
	@mkdir -p $(dir $@)
	( echo '#line 1 "$<"'; sed -E -f tests/cuda_emu/convert.sed $< ) > $@.tmp
	@if grep -n '<<<' $@.tmp; then echo "convert.sed left a kernel launch unconverted"; exit 1; fi
	mv $@.tmp $@
endef
$(BUILD)/emu/ops_cuda_emu.cpp: src/engine/cuda/ops_cuda.cu tests/cuda_emu/convert.sed
	$(emu_convert)
$(BUILD)/emu/test_emu.cpp: tests/cuda_emu/test_emu.cu tests/cuda_emu/convert.sed
	$(emu_convert)
# the emulator's own tests (no nvcc needed: built in every `make unit`)
$(BUILD)/tests/test_emu: $(BUILD)/emu/test_emu.cpp $(BUILD)/emu/emu.o tests/lib/test.h
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -Itests/lib -o $@ $< $(BUILD)/emu/emu.o -lopenblas -lpthread -lm
unit: $(BUILD)/tests/test_emu
$(BUILD)/emu/%.o: $(BUILD)/emu/%.cpp $(wildcard tests/cuda_emu/include/*.h) $(wildcard src/engine/cuda/*.h) $(wildcard src/engine/*.h)
	$(CXX) $(EMU_CXXFLAGS) -c $< -o $@
$(BUILD)/emu/emu.o: tests/cuda_emu/emu.cpp $(wildcard tests/cuda_emu/include/*.h)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -c $< -o $@
$(EMU_MODULE): $(BUILD)/emu/ops_cuda_emu.o $(BUILD)/emu/emu.o
	$(CXX) -shared -o $@ $^ -Wl,--no-undefined -lopenblas -lpthread -lm
emu: $(EMU_MODULE)
.PHONY: emu
ifeq ($(USE_CUDA),1)
unit: $(EMU_MODULE)
endif
.DEFAULT_GOAL := $(BFT_SAVED_GOAL)
# ---- end of the CUDA block ----------------------------------------------------

CLI_SRCS = $(sort $(wildcard src/cli/*.c))
CLI_OBJS = $(CLI_SRCS:src/cli/%.c=$(BUILD)/cli/%.o)
CLI = $(BUILD)/bft-cli

UNIT_SRCS = $(sort $(wildcard tests/engine/test_*.c))
UNIT_BINS = $(UNIT_SRCS:tests/engine/%.c=$(BUILD)/tests/%)

FUZZ_SRCS = $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS = $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)

PG_CPPFLAGS = -Isrc/engine
SHLIB_LINK += $(ENGINE_LIB) $(ENGINE_LIBS)

ifneq ($(PGXS),)
include $(PGXS)
all: $(CLI)

# TAP tests (tests/t/*.pl on PostgreSQL::Test::Cluster): each starts its own
# clusters of the installed server (pg_config's bindir) with bft installed
# (make install first), on free ports. Run as a non-root user (initdb refuses
# root). TAP_TESTDIR: where tmp_check/ (data directories, logs) goes.
# PROVE_TESTS picks tests, PROVE_FLAGS adds prove options (e.g. -v).
PROVE_TESTS ?= tests/t/*.pl
TAP_TESTDIR ?= $(CURDIR)
prove_installcheck:
	@if [ "$$(id -u)" = 0 ]; then echo "make prove_installcheck: initdb refuses root; run it as another user (tests/run_all.sh runs it as postgres)"; exit 1; fi
	rm -rf '$(TAP_TESTDIR)'/tmp_check
	$(MKDIR_P) '$(TAP_TESTDIR)'/tmp_check
	TESTDIR='$(TAP_TESTDIR)' PATH="$(bindir):$$PATH" PGPORT='6$(DEF_PGPORT)' \
	    PG_REGRESS='$(top_builddir)/src/test/regress/pg_regress' \
	    $(PROVE) $(PG_PROVE_FLAGS) -I tests/t $(PROVE_FLAGS) $(PROVE_TESTS)
.PHONY: prove_installcheck
else
# Without pg_config (no PostgreSQL server headers) the engine, bft-cli and the
# unit tests still build: make engine cli unit. The extension's targets say
# what is missing.
all: $(CLI)
	@echo "pg_config not found: built the engine and $(CLI) only; for the extension install postgresql-server-dev-15 (tests/install_deps.sh does) or pass PG_CONFIG=/path/to/pg_config"
install installcheck installdirs uninstall bft.so:
	@echo "make $@: pg_config not found: install postgresql-server-dev-15 (tests/install_deps.sh does) or pass PG_CONFIG=/path/to/pg_config"; exit 1
clean:
	rm -rf $(BUILD)
endif

engine: $(ENGINE_LIB)
cli: $(CLI)

# bft.so needs the engine archive.
$(shlib): $(ENGINE_LIB)
$(OBJS): $(wildcard src/pg/*.h) $(wildcard src/engine/*.h)

$(BUILD)/engine/%.o: src/engine/%.c $(wildcard src/engine/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ENGINE_CFLAGS) -c $< -o $@

# AVX-512 versions of the CPU backend's loops use 512-bit vectors (gcc's
# default preference is 256-bit).
ifneq ($(filter x86_64%,$(shell $(CC) -dumpmachine)),)
$(BUILD)/engine/ops_cpu.o: ENGINE_CFLAGS += -mprefer-vector-width=512
endif

$(ENGINE_LIB): $(ENGINE_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/cli/%.o: src/cli/%.c $(wildcard src/cli/*.h) $(wildcard src/engine/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ENGINE_CFLAGS) -Isrc/cli -c $< -o $@

$(CLI): $(CLI_OBJS) $(ENGINE_LIB)
	$(CC) -o $@ $(CLI_OBJS) $(ENGINE_LIB) $(ENGINE_LIBS) -lcsv

$(BUILD)/tests/%: tests/engine/%.c $(wildcard tests/lib/*.h) $(ENGINE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ENGINE_CFLAGS) -Itests/lib -o $@ $< $(ENGINE_LIB) $(ENGINE_LIBS)

unit: $(UNIT_BINS) $(CLI)

# libFuzzer targets: the engine sources are recompiled with ASan + coverage.
FUZZ_CC ?= clang-14
FUZZ_CFLAGS = -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
	-Isrc/engine $(shell pkg-config --cflags $(ENGINE_PKGS) 2>/dev/null)
$(BUILD)/fuzz/%: tests/fuzz/%.c $(ENGINE_SRCS) $(wildcard src/engine/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(ENGINE_SRCS) $(ENGINE_LIBS)

fuzz: $(FUZZ_BINS)

.PHONY: unit fuzz engine cli
