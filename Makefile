# lua-ublk: `make` builds ublk.core into build/; `make test` runs every spec (host, then the real
# driver natively or in the test VM on each kernel) and ends with "N passed, N failed"; `make demo`.
LUA        ?= lua5.4
LUA_INC    ?= /usr/include/lua5.4
KERNELS    ?= 6.12 7.3
KERNEL     ?=
CC         ?= cc
OPT        ?= -O2 -g
WARN       := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wcast-qual \
              -Wpointer-arith -Wformat=2 -Wundef
CFLAGS_ALL := -std=gnu11 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(WARN) -I$(LUA_INC) $(OPT)
SANITIZE   := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LIBS       := -luring -lpthread

# csrc/core: the kernel-facing C (no <lua.h>); csrc/lua: the Lua binding, one file per Lua type.
SRCS := $(wildcard csrc/core/*.c csrc/core/targets/*.c csrc/lua/*.c)
HDRS := $(wildcard csrc/core/*.h csrc/lua/*.h)
OBJS := $(SRCS:csrc/%.c=build/obj/%.o)
ASAN_OBJS := $(SRCS:csrc/%.c=build/asan-obj/%.o)

# Debian packages the build, the specs, the VM and the demo need.
DEB_PACKAGES := liblua5.4-dev lua5.4 liburing-dev luarocks lua-busted fio qemu-system-x86 \
                busybox-static cpio xz-utils zstd kmod gcc make e2fsprogs util-linux nbdkit nbdkit-plugin-lua nbd-client lua-dkjson lua-luv \
                zip lua-ldoc lua-markdown lua-check chromium

# The release: its version is lua/ublk/version.lua's; its rockspec is made from the scm one.
VERSION    := $(shell $(LUA) -e 'io.write(dofile("lua/ublk/version.lua"))' 2>/dev/null)
ROCKSPEC   := rockspec/ublk-$(VERSION)-1.rockspec
DIST       := dist/ublk-$(VERSION).tar.gz
ROCK       := dist/ublk-$(VERSION)-1.src.rock

.PHONY: all asan deps test test-host test-kernel demo bench clean rockspec dist rock doc lint
all: build/ublk/core.so
asan: build/asan/ublk/core.so

build/obj/%.o: csrc/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@
build/ublk/core.so: $(OBJS)
	@mkdir -p $(@D)
	$(CC) -shared -o $@ $(OBJS) $(LIBS)

build/asan-obj/%.o: csrc/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(SANITIZE) -c $< -o $@
build/asan/ublk/core.so: $(ASAN_OBJS)
	@mkdir -p $(@D)
	$(CC) -shared $(SANITIZE) -o $@ $(ASAN_OBJS) $(LIBS)

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing $$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root, or install: $$missing" >&2; exit 1; fi; \
	  (apt-get update -q || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# Every spec: luacheck, host specs with the ASan build, then the kernel specs natively or in the VM per kernel.
test: deps all asan
	@tools/test-all $(if $(KERNEL),$(KERNEL),$(KERNELS))

# The API reference (LDoc, config.ld): build/doc/index.html.
doc:
	@rm -rf build/doc && ldoc . >/dev/null && echo "make doc: build/doc/index.html"

# luacheck (.luacheckrc) over every Lua file of ours.
lint:
	@luacheck -q .

# fio in the VM on each kernel: our targets beside null_blk, brd, loop and nbdkit (a table, and JSON in build/)
bench: deps all
	@tools/bench $(if $(KERNEL),--kernel $(KERNEL),)

# The release's rockspec (committed; a host spec checks it is what this makes), its tarball (every
# file git tracks or would, under ublk-VERSION/), and the .src.rock of the two, which luarocks installs offline.
rockspec: $(ROCKSPEC)
$(ROCKSPEC): rockspec/ublk-scm-1.rockspec lua/ublk/version.lua tools/rockspec
	$(LUA) tools/rockspec $(VERSION) < $< > $@.tmp && mv $@.tmp $@
dist: $(DIST)
$(DIST): $(ROCKSPEC) $(shell git ls-files --cached --others --exclude-standard 2>/dev/null)
	@mkdir -p dist
	git ls-files -z --cached --others --exclude-standard | tar --null -T - --transform 's,^,ublk-$(VERSION)/,' -czf $@.tmp && mv $@.tmp $@
rock: $(ROCK)
$(ROCK): $(DIST) $(ROCKSPEC)
	rm -f $@ && cp $(ROCKSPEC) dist/ && cd dist && zip -q $(notdir $@) $(notdir $(ROCKSPEC)) $(notdir $(DIST))

demo: deps all
	@tools/demo $(if $(KERNEL),$(KERNEL),6.12)

clean:
	rm -rf build dist
