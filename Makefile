# ForgeBox build.  `make` builds build/forgebox and build/fb-agent; `make image`
# builds the guest image (skipped when its inputs are unchanged); `make test`
# runs every test; `make run` installs, builds and runs the demonstration.

CC      ?= cc
BUILD   ?= build
IMAGE   ?= $(BUILD)/image

WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral
HARDEN  := -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE
CFLAGS  ?= -O2 -g
# EXTRA_* carry sanitizer flags (make sanitize) without replacing these.
override CFLAGS  += -std=gnu17 $(WARN) $(HARDEN) -Isrc -MMD -MP $(EXTRA_CFLAGS)
override LDFLAGS += -pie -Wl,-z,relro,-z,now $(EXTRA_LDFLAGS)

HOST_LIBS  := -ljansson -lsodium
AGENT_LIBS := -ljansson -lseccomp

COMMON_SRC := src/common/util.c src/proto/proto.c
AGENT_SRC  := $(wildcard src/agent/*.c)
LIB_SRC    := $(wildcard src/sandbox/*.c src/image/*.c) $(COMMON_SRC)
CLI_SRC    := $(wildcard src/cli/*.c)

COMMON_OBJ      := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o)
AGENT_OBJ       := $(AGENT_SRC:%.c=$(BUILD)/obj-static/%.o) $(COMMON_SRC:%.c=$(BUILD)/obj-static/%.o)
LIB_OBJ         := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
HOST_OBJ        := $(CLI_SRC:%.c=$(BUILD)/obj/%.o) $(LIB_OBJ)

.PHONY: all image test unit integration run sanitize bench clean deps
all: $(BUILD)/forgebox $(BUILD)/fb-agent

deps:
	./scripts/install-deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The agent is static (it runs alone in the guest) and built without -fPIE
# so that glibc's static startup is used as intended.
$(BUILD)/obj-static/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -fPIE,$(CFLAGS)) -c $< -o $@

$(BUILD)/forgebox: $(HOST_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(HOST_LIBS)

$(BUILD)/fb-agent: $(AGENT_OBJ)
	$(CC) -static -Wl,-z,relro,-z,now -o $@ $^ $(AGENT_LIBS)

# ---- guest image -----------------------------------------------------------
IMAGE_INPUTS := $(wildcard guest/*) $(BUILD)/fb-agent $(BUILD)/forgebox
image: $(IMAGE)/manifest.json
$(IMAGE)/manifest.json: $(IMAGE_INPUTS)
	FORGEBOX=$(BUILD)/forgebox ./guest/build-image.sh $(IMAGE) $(BUILD)/fb-agent

# ---- tests -----------------------------------------------------------------
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
UNIT_LIBS  := -lcmocka

$(BUILD)/tests/test_%: tests/unit/test_%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(UNIT_LIBS) $(HOST_LIBS)

unit: $(UNIT_TESTS)
	./tests/run-unit.sh $(UNIT_TESTS)

test: deps all image $(UNIT_TESTS) $(BUILD)/fb-driver
	./tests/run-all.sh

run: deps all image
	./scripts/demo.sh

sanitize:
	$(MAKE) BUILD=build-san CFLAGS="-O1 -g" \
	        EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	        EXTRA_LDFLAGS="-fsanitize=address,undefined" build-san/forgebox unit

bench: all image $(BUILD)/fb-bench
	./bench/run.sh

clean:
	rm -rf $(BUILD) build-san

-include $(shell find $(BUILD)/obj $(BUILD)/obj-static $(BUILD)/tests -name '*.d' 2>/dev/null)

$(BUILD)/fb-bench: bench/fb_bench.c $(LIB_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(HOST_LIBS)

# Test drivers that use the sandbox library directly.
$(BUILD)/fb-driver: tests/tools/fb_driver.c $(LIB_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(HOST_LIBS)
