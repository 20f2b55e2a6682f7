# ForgeBox build.  `make` builds build/forgebox and build/fb-agent; `make image`
# builds the guest image (skipped when its inputs are unchanged); `make test`
# runs every test; `make run` installs, builds and runs the demonstration.

CC      ?= cc
BUILD   ?= build
IMAGE   ?= $(BUILD)/image

WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral
HARDEN  := -fstack-protector-strong -fstack-clash-protection -D_FORTIFY_SOURCE=2 -fPIE
CFLAGS  ?= -O2 -g
# EXTRA_* carry sanitizer flags (make sanitize) without replacing these.
override CFLAGS  += -std=gnu17 $(WARN) $(HARDEN) -Isrc $(shell pkg-config --cflags libpq) -MMD -MP $(EXTRA_CFLAGS)
override LDFLAGS += -pie -Wl,-z,relro,-z,now $(EXTRA_LDFLAGS)

# libpq, libmicrohttpd, libcurl and GnuTLS are not linked: they (and the ~30
# libraries they pull in) are loaded on first use through the shims in
# src/common/lazy_*.c, so that verbs which never use them (forgebox run)
# do not pay for loading them at every start (src/common/lazylib.h).  Nor
# are libsqlite3, libevent, libcares and libyaml (the same shims, session 5).
HOST_LIBS  := -ljansson -lsodium -lpthread -lm
AGENT_LIBS := -ljansson

COMMON_SRC := src/common/util.c src/common/time.c src/common/utf8.c $(wildcard src/proto/*.c)
# seccomp_rules.c is the seccomp policy, run at build time (gen-seccomp
# below), not linked into the agent.
AGENT_SRC  := $(filter-out src/agent/seccomp_rules.c src/agent/glibc_abi.c src/agent/memcpy.c,$(wildcard src/agent/*.c))

# The agent's C library.  musl when musl-gcc is installed (musl-tools,
# scripts/install-deps.sh): a static glibc program spends ~0.5 ms of CPU at
# every start in CPUID instructions (init_cpu_features, cacheinfo), each a
# trap to the hypervisor on our machines, and the agent starts once per jail
# and per VM boot; a static musl program runs none (bench/README.md, "Session
# 7: fb-agent on musl").  glibc otherwise, as before; `make AGENT_LIBC=glibc`
# forces it.  With musl, Debian's glibc-built libjansson.a is linked as it
# is, with src/agent/glibc_abi.c supplying the few glibc-only symbols it
# needs (that file says why each is safe), src/agent/memcpy.c replaces
# musl's memcpy (rep movsq: slow for the agent's short copies), and only the kernel's uapi
# headers and jansson's two headers are added to musl's include path
# ($(BUILD)/musl-include), never glibc's /usr/include.
MUSL_GCC   ?= $(shell command -v musl-gcc 2>/dev/null)
AGENT_LIBC ?= $(if $(MUSL_GCC),musl,glibc)
ifeq ($(AGENT_LIBC),musl)
AGENT_CC      := $(MUSL_GCC)
AGENT_OBJDIR  := $(BUILD)/obj-musl
AGENT_SRC     += src/agent/glibc_abi.c src/agent/memcpy.c
AGENT_LIBS    := $(shell pkg-config --variable=libdir jansson)/libjansson.a
AGENT_INC     := $(BUILD)/musl-include/.stamp
AGENT_CFLAGS   = $(filter-out -fPIE -I/usr/include/%,$(CFLAGS)) -isystem $(BUILD)/musl-include $(AGENT_FORTIFY)
# glibc's _FORTIFY_SOURCE lives in its headers; musl has none, so the
# agent's own sources get src/agent/fortify_musl.h first (it says how), all
# but the two files that define what those checks call.
AGENT_FORTIFY  = -include src/agent/fortify_musl.h
$(AGENT_OBJDIR)/src/agent/glibc_abi.o $(AGENT_OBJDIR)/src/agent/memcpy.o: AGENT_FORTIFY =
else
AGENT_CC      := $(CC)
AGENT_OBJDIR  := $(BUILD)/obj-static
AGENT_INC     :=
AGENT_CFLAGS   = $(filter-out -fPIE,$(CFLAGS))
endif
LIB_SRC    := $(wildcard src/common/lazy*.c src/sandbox/*.c src/image/*.c src/store/*.c src/audit/*.c src/auth/*.c src/policy/*.c src/config/*.c src/core/*.c src/gateway/*.c src/egress/*.c src/llm/*.c src/engine/*.c src/compat/e2b/*.c src/mcp/*.c src/ca/*.c src/node/*.c) $(COMMON_SRC)
CLI_SRC    := $(wildcard src/cli/*.c)

COMMON_OBJ      := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o)
AGENT_OBJ       := $(AGENT_SRC:%.c=$(AGENT_OBJDIR)/%.o) $(COMMON_SRC:%.c=$(AGENT_OBJDIR)/%.o)
# The schema migrations are compiled in: build/gen/migrations.c (below).
# The SQL repositories are compiled twice: as they are for SQLite, and with
# store/pg_names.h for PostgreSQL (src/store/pg_names.h says why).
SQL_REPO_SRC    := $(filter-out src/store/sqlite_sql.c src/store/sqlite_store.c,$(wildcard src/store/sqlite_*.c))
PG_REPO_OBJ     := $(SQL_REPO_SRC:src/store/%.c=$(BUILD)/obj/pg/%.o)
LIB_OBJ         := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(PG_REPO_OBJ) $(BUILD)/obj/gen/migrations.o $(BUILD)/obj/gen/e2b_repl.o $(BUILD)/obj/gen/console.o \
                   $(BUILD)/obj/gen/capstone_stub.o
HOST_OBJ        := $(CLI_SRC:%.c=$(BUILD)/obj/%.o) $(LIB_OBJ)

.PHONY: all image e2b-sdk test unit integration run sanitize sanitize-integration fuzz bench clean deps
all: $(BUILD)/forgebox $(BUILD)/fb-agent

deps:
	./scripts/install-deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/pg/%.o: src/store/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -include store/pg_names.h -c $< -o $@

# The agent is static (it runs alone in the guest) and built without -fPIE
# so that the libc's static startup is used as intended.
$(AGENT_OBJDIR)/%.o: %.c $(AGENT_INC)
	@mkdir -p $(dir $@)
	$(AGENT_CC) $(AGENT_CFLAGS) -c $< -o $@

# musl's include path gets the kernel's uapi headers (linux/, asm/,
# asm-generic/: seccomp, landlock, capability, ...) and jansson's headers,
# as links to Debian's, and nothing else of /usr/include.
$(BUILD)/musl-include/.stamp: Makefile
	@rm -rf $(dir $@) && mkdir -p $(dir $@)
	ln -s /usr/include/linux /usr/include/asm-generic $(dir $@)
	ln -s /usr/include/$(shell $(CC) -dumpmachine)/asm $(dir $@)asm
	ln -s $(shell pkg-config --variable=includedir jansson)/jansson.h \
	      $(shell pkg-config --variable=includedir jansson)/jansson_config.h $(dir $@)
	@touch $@

# Which libc the agent was linked with: a switch (AGENT_LIBC=...) relinks.
$(BUILD)/agent-libc: FORCE
	@mkdir -p $(BUILD); echo $(AGENT_LIBC) | cmp -s - $@ || echo $(AGENT_LIBC) > $@
.PHONY: FORCE

# Schema migrations (src/store/migrations/NNN_name.sql) become byte arrays in
# a generated C file, so the binary carries its schema and nothing is read
# from disk at run time.  od(1) writes any byte as 0xNN, so no quoting rules
# apply; NNN is the schema version (src/store/store.c checks 1, 2, 3, ...).
MIGRATIONS := $(sort $(wildcard src/store/migrations/*.sql))
PG_MIGRATIONS := $(sort $(wildcard src/store/migrations/pg/*.sql))
# $(call emit_migrations,FILES,ARRAY): one byte array per file and the table.
define emit_migrations
	   i=0; for f in $(1); do i=$$((i + 1)); \
	       echo "static const unsigned char $(2)_$$i[] = {"; \
	       od -An -v -tx1 "$$f" | sed 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	       echo '0x00 };'; \
	   done; \
	   echo 'const fb_migration $(2)[] = {'; \
	   i=0; for f in $(1); do i=$$((i + 1)); n=$$(basename "$$f" .sql); \
	       echo "    { $$(expr "$${n%%_*}" + 0), \"$$n\", (const char *)$(2)_$$i, sizeof $(2)_$$i - 1 },"; \
	   done; \
	   echo '};'; \
	   echo 'const size_t $(2)_count = sizeof $(2) / sizeof $(2)[0];';
endef
$(BUILD)/gen/migrations.c: $(MIGRATIONS) $(PG_MIGRATIONS) Makefile
	@mkdir -p $(dir $@)
	@set -e; { echo '/* Generated by the Makefile from the files in src/store/migrations/; do not edit. */'; \
	   echo '#include "store/migrations.h"'; \
	   $(call emit_migrations,$(MIGRATIONS),fb_migrations) \
	   $(call emit_migrations,$(PG_MIGRATIONS),fb_pg_migrations) \
	 } > $@.tmp && mv $@.tmp $@

# The admin console (console/) is compiled in the same way, each file with
# the sha256 of its bytes (src/gateway/console_assets.h, h_console.c).
CONSOLE_FILES := $(sort $(shell find console -type f 2>/dev/null))
$(BUILD)/gen/console.c: $(CONSOLE_FILES) Makefile
	@mkdir -p $(dir $@)
	@set -e; { echo '/* Generated by the Makefile from the files in console/; do not edit. */'; \
	   echo '#include "gateway/console_assets.h"'; \
	   i=0; for f in $(CONSOLE_FILES); do i=$$((i + 1)); \
	       echo "static const unsigned char file_$$i[] = {"; \
	       od -An -v -tx1 "$$f" | sed 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	       echo '0x00 };'; \
	   done; \
	   echo 'const gw_asset gw_console_assets[] = {'; \
	   i=0; for f in $(CONSOLE_FILES); do i=$$((i + 1)); \
	       echo "    { \"$${f#console/}\", file_$$i, sizeof file_$$i - 1, \"$$(sha256sum "$$f" | cut -c1-64)\" },"; \
	   done; \
	   echo '    { 0, 0, 0, 0 } };'; \
	   echo "const size_t gw_console_assets_count = $$i;"; \
	 } > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/console.o: $(BUILD)/gen/console.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/gen/migrations.o: $(BUILD)/gen/migrations.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The E2B listener's code-interpreter program (src/compat/e2b/repl.py),
# carried by the binary and uploaded into sandboxes, as bytes like the
# migrations.
$(BUILD)/gen/e2b_repl.c: src/compat/e2b/repl.py Makefile
	@mkdir -p $(dir $@)
	@set -e; { echo '/* Generated by the Makefile from src/compat/e2b/repl.py; do not edit. */'; \
	   echo '#include <stddef.h>'; \
	   echo 'const unsigned char fb_e2b_repl_py[] = {'; \
	   od -An -v -tx1 src/compat/e2b/repl.py | sed 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	   echo '0x00 };'; \
	   echo 'const size_t fb_e2b_repl_py_len = sizeof fb_e2b_repl_py - 1;'; \
	 } > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/e2b_repl.o: $(BUILD)/gen/e2b_repl.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The Capstone stub QEMU loads instead of the real disassembler
# (src/qemu-stub/capstone.c, src/sandbox/qemu_stub.h): a shared object with
# no libc and nothing to relocate, carried by the binary as bytes and
# written into QEMU's private root at each VM start.
$(BUILD)/qemu-stub/libcapstone.so.4: src/qemu-stub/capstone.c Makefile
	@mkdir -p $(dir $@)
	$(CC) -O2 -std=gnu17 -Wall -Wextra -Werror -fPIC -shared -nostdlib -fno-stack-protector -U_FORTIFY_SOURCE \
	    -Wl,-soname,libcapstone.so.4 -Wl,-z,relro,-z,now,-z,noexecstack -s -o $@ $<

$(BUILD)/gen/capstone_stub.c: $(BUILD)/qemu-stub/libcapstone.so.4 Makefile
	@mkdir -p $(dir $@)
	@set -e; { echo '/* Generated by the Makefile from src/qemu-stub/capstone.c; do not edit. */'; \
	   echo '#include <stddef.h>'; \
	   echo 'const unsigned char fb_qemu_capstone_stub[] = {'; \
	   od -An -v -tx1 $< | sed 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	   echo '};'; \
	   echo 'const size_t fb_qemu_capstone_stub_len = sizeof fb_qemu_capstone_stub;'; \
	 } > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/capstone_stub.o: $(BUILD)/gen/capstone_stub.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/forgebox: $(HOST_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(HOST_LIBS)

$(BUILD)/fb-agent: $(AGENT_OBJ) $(BUILD)/agent-libc
	$(AGENT_CC) -static -Wl,-z,relro,-z,now -o $@.tmp $(AGENT_OBJ) $(AGENT_LIBS)
	@# The child of exec.c's raw clone relies on the agent having one thread.
	@if nm $@.tmp | grep -qw pthread_create; then echo "fb-agent must not start threads (exec.c, spawn_process)" >&2; rm -f $@.tmp; exit 1; fi
	mv $@.tmp $@

# The tool-process seccomp programs, compiled at build time from the rule
# list in src/agent/seccomp_rules.c (with libseccomp, on this x86-64 host)
# into build/gen/seccomp_bpf.h, which the agent loads as it is.
SECCOMP_GEN_SRC := tools/gen_seccomp.c src/agent/seccomp_rules.c src/common/util.c src/common/time.c
$(BUILD)/gen-seccomp: $(SECCOMP_GEN_SRC) src/agent/seccomp_rules.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(SECCOMP_GEN_SRC) -lseccomp
$(BUILD)/gen/seccomp_bpf.h: $(BUILD)/gen-seccomp
	@mkdir -p $(dir $@)
	$(BUILD)/gen-seccomp $@
$(AGENT_OBJDIR)/src/agent/harden.o: $(BUILD)/gen/seccomp_bpf.h
$(AGENT_OBJDIR)/src/agent/harden.o: override CFLAGS += -iquote $(BUILD)/gen

# ---- guest image -----------------------------------------------------------
IMAGE_INPUTS := $(wildcard guest/*) $(BUILD)/fb-agent $(BUILD)/forgebox
image: $(IMAGE)/manifest.json
$(IMAGE)/manifest.json: $(IMAGE_INPUTS)
	FORGEBOX=$(BUILD)/forgebox ./guest/build-image.sh $(IMAGE) $(BUILD)/fb-agent

# ---- tests -----------------------------------------------------------------
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
UNIT_LIBS  := -lcmocka

# $< and the objects only: a .c a test includes (test_agent_memcpy.c) is
# among the prerequisites through its .d file, not a unit of its own.
$(BUILD)/tests/test_%: tests/unit/test_%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(filter %.o,$^) $(UNIT_LIBS) $(HOST_LIBS)

# The seccomp test rebuilds the programs from the rules (libseccomp) and
# compares them with the generated header the agent loads.
$(BUILD)/tests/test_seccomp: tests/unit/test_seccomp.c src/agent/seccomp_rules.c $(BUILD)/gen/seccomp_bpf.h $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -iquote $(BUILD)/gen $(LDFLAGS) -o $@ $(filter %.c %.o,$^) $(UNIT_LIBS) $(HOST_LIBS) -lseccomp

unit: $(UNIT_TESTS)
	./tests/run-unit.sh $(UNIT_TESTS)

test: deps all image e2b-sdk $(UNIT_TESTS) $(BUILD)/fb-driver $(BUILD)/fb-egress-probe $(BUILD)/fb-llm-probe
	./tests/run-all.sh

# The black-box suite alone (real sandboxes, a real gateway), in parallel
# workers like `make test`.  PYTEST_ARGS narrows it: PYTEST_ARGS='-k jail'.
integration: all image e2b-sdk $(BUILD)/fb-driver $(BUILD)/fb-egress-probe $(BUILD)/fb-llm-probe
	./tests/run-integration.sh $(PYTEST_ARGS)

# The real E2B SDKs the E2B-compatibility tests drive, pinned by the
# lockfile (tests/integration/test_e2b_compat.py; the test installs them
# itself when run alone).
E2B_SDK := tests/compat/e2b/node_modules/.package-lock.json
e2b-sdk: $(E2B_SDK)
$(E2B_SDK): tests/compat/e2b/package.json tests/compat/e2b/package-lock.json
	npm ci --no-audit --no-fund --prefix tests/compat/e2b

run: deps all image
	./scripts/demo.sh

SAN_MAKE = $(MAKE) BUILD=build-san CFLAGS="-O1 -g" \
	        EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	        EXTRA_LDFLAGS="-fsanitize=address,undefined"
sanitize:
	$(SAN_MAKE) build-san/forgebox unit

# The integration suite against an ASan+UBSan build of the host binary (the
# guest agent is static and stays as it is: it runs in the normal image).
# A sanitizer report in the gateway or `forgebox run` fails the test that
# caused it (the binary aborts), and tests/run-integration.sh fails the run
# if any report landed in build-san/sanitizer/.
sanitize-integration: all image
	$(SAN_MAKE) build-san/forgebox build-san/fb-driver build-san/fb-egress-probe build-san/fb-llm-probe
	FORGEBOX_BIN=$(CURDIR)/build-san/forgebox FORGEBOX_SANITIZED=1 \
	    FORGEBOX_IMAGE=$(CURDIR)/$(IMAGE) ./tests/run-integration.sh $(PYTEST_ARGS)

bench: all image $(BUILD)/fb-bench $(BUILD)/fb-api-bench
	./bench/run.sh

clean:
	rm -rf $(BUILD) build-san $(FUZZ_BUILD)

-include $(shell find $(BUILD)/obj $(BUILD)/obj-static $(BUILD)/obj-musl $(BUILD)/tests -name '*.d' 2>/dev/null)

$(BUILD)/fb-bench: bench/fb_bench.c $(LIB_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(HOST_LIBS)

# The exec round trip through the API beside the agent channel, both from C (bench/api_exec.py).
$(BUILD)/fb-api-bench: bench/fb_api_bench.c $(LIB_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(HOST_LIBS)

# Test drivers that use the sandbox library directly.
$(BUILD)/fb-driver: tests/tools/fb_driver.c $(LIB_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(HOST_LIBS)

# The egress proxy alone, driven from its command line (tests/integration/test_egress_proxy.py).
$(BUILD)/fb-egress-probe: tests/tools/fb_egress_probe.c $(LIB_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(HOST_LIBS)

# One provider call (src/llm) against tests/tools/fake_llm.py.
$(BUILD)/fb-llm-probe: tests/tools/fb_llm_probe.c $(LIB_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(HOST_LIBS)

# ---- fuzzing (clang's libFuzzer) --------------------------------------------
# Each target runs for FUZZ_TIME seconds from the corpus kept in
# tests/fuzz/corpus/<target>/; new finds go to build-fuzz/, the repository's
# corpus is only read.  `make fuzz` runs every tests/fuzz/fuzz_*.c in turn.
FUZZ_BUILD := build-fuzz
FUZZ_CC    ?= clang
FUZZ_TIME  ?= 30
FUZZ_FLAGS := -std=gnu17 -Isrc $(shell pkg-config --cflags libpq) -g -O1 -fno-omit-frame-pointer \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_RUN   := -max_len=200000 -timeout=10 -rss_limit_mb=2048
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
# Everything the library links from build/gen (schema, console files, the E2B REPL,
# QEMU's Capstone stub).
GEN_SRC    := $(BUILD)/gen/migrations.c $(BUILD)/gen/console.c $(BUILD)/gen/e2b_repl.c $(BUILD)/gen/capstone_stub.c

$(FUZZ_BUILD)/fuzz_proto: tests/fuzz/fuzz_proto.c $(COMMON_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -ljansson
$(FUZZ_BUILD)/fuzz_router: tests/fuzz/fuzz_router.c $(LIB_SRC) $(PG_REPO_OBJ) $(GEN_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ $(HOST_LIBS)
$(FUZZ_BUILD)/fuzz_llm_stream: tests/fuzz/fuzz_llm_stream.c src/llm/sse.c src/llm/turn.c src/llm/conv.c \
		src/llm/openai.c src/llm/anthropic.c src/common/util.c src/common/time.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -ljansson
$(FUZZ_BUILD)/fuzz_mcp: tests/fuzz/fuzz_mcp.c $(LIB_SRC) $(PG_REPO_OBJ) $(GEN_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ $(HOST_LIBS)
$(FUZZ_BUILD)/fuzz_body: tests/fuzz/fuzz_body.c src/gateway/body.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -ljansson

.PHONY: $(FUZZ_TARGETS:%=fuzz-%)
$(FUZZ_TARGETS:%=fuzz-%): fuzz-%: $(FUZZ_BUILD)/fuzz_%
	@mkdir -p $(FUZZ_BUILD)/corpus-$*
	$< -max_total_time=$(FUZZ_TIME) $(FUZZ_RUN) $(FUZZ_BUILD)/corpus-$* tests/fuzz/corpus/$*

fuzz:
	@for t in $(FUZZ_TARGETS); do $(MAKE) --no-print-directory fuzz-$$t FUZZ_TIME=$(FUZZ_TIME) || exit 1; done
