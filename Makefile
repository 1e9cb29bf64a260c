# bft — BERT fine-tuning inside PostgreSQL.
#
#   make                 build bft.so (extension) and build/bft-cli
#   make install         install the extension into the server found by pg_config
#   make unit            build the engine's C unit tests (build/tests/)
#   make installcheck    pg_regress against a running server (tests/run_all.sh does it all)
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
EXTRA_CLEAN = build

BUILD ?= build
# -march=native by default: bft is built from source on the machine that runs it.
BFT_MARCH ?= -march=native
ENGINE_PKGS = json-c icu-uc
ENGINE_CFLAGS = -std=c11 -O3 $(BFT_MARCH) -fPIC -g -Wall -Wextra -D_GNU_SOURCE \
	-fno-math-errno -Isrc/engine $(shell pkg-config --cflags $(ENGINE_PKGS) 2>/dev/null)
ENGINE_LIBS = -lopenblas $(shell pkg-config --libs $(ENGINE_PKGS) 2>/dev/null) -lm -lpthread

ENGINE_SRCS = $(sort $(wildcard src/engine/*.c))
ENGINE_OBJS = $(ENGINE_SRCS:src/engine/%.c=$(BUILD)/engine/%.o)
ENGINE_LIB = $(BUILD)/libbftengine.a

CLI_SRCS = $(sort $(wildcard src/cli/*.c))
CLI_OBJS = $(CLI_SRCS:src/cli/%.c=$(BUILD)/cli/%.o)
CLI = $(BUILD)/bft-cli

UNIT_SRCS = $(sort $(wildcard tests/engine/test_*.c))
UNIT_BINS = $(UNIT_SRCS:tests/engine/%.c=$(BUILD)/tests/%)

FUZZ_SRCS = $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS = $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)

PG_CPPFLAGS = -Isrc/engine
SHLIB_LINK += $(ENGINE_LIB) $(ENGINE_LIBS)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifeq ($(PGXS),)
$(error pg_config not found: install postgresql-server-dev-15 (tests/install_deps.sh does))
endif
include $(PGXS)

all: $(CLI)

# bft.so needs the engine archive.
$(shlib): $(ENGINE_LIB)
$(OBJS): $(wildcard src/pg/*.h) $(wildcard src/engine/*.h)

$(BUILD)/engine/%.o: src/engine/%.c $(wildcard src/engine/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ENGINE_CFLAGS) -c $< -o $@

$(ENGINE_LIB): $(ENGINE_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/cli/%.o: src/cli/%.c $(wildcard src/cli/*.h) $(wildcard src/engine/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ENGINE_CFLAGS) -Isrc/cli -c $< -o $@

$(CLI): $(CLI_OBJS) $(ENGINE_LIB)
	$(CC) -o $@ $(CLI_OBJS) $(ENGINE_LIB) $(ENGINE_LIBS) -lcsv

$(BUILD)/tests/%: tests/engine/%.c tests/lib/test.h $(ENGINE_LIB)
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

.PHONY: unit fuzz
