rockspec_format = "3.0"
package = "ublk"
version = "0.2.0-1"
source = {
  -- the release tarball (make dist: dist/ublk-0.2.0.tar.gz), found beside this file in the
  -- .src.rock that make rock packs
  url = "ublk-0.2.0.tar.gz",
  dir = "ublk-0.2.0",
}
description = {
  summary = "Linux userspace block devices (ublk) from Lua 5.4",
  detailed = [[
A C module wraps the ublk control and queue rings with liburing; Lua scripts declare devices
(size, queues, depth, limits, target). Kernel errors come back as sentences; `ublk doctor` tells
what the running kernel supports and `ublk decode` reads SQEs and control buffers as the kernel does.
]],
  license = "MIT",
  labels = { "linux", "block", "io_uring", "ublk" },
}
dependencies = { "lua >= 5.4" }
external_dependencies = {
  LIBURING = { header = "liburing.h", library = "uring" },
}
build = {
  type = "builtin",
  modules = {
    ["ublk.core"] = {
      sources = {
        "csrc/core/ctrl.c", "csrc/core/handoff.c", "csrc/core/layout.c", "csrc/core/queue.c",
        "csrc/core/queue_thread.c", "csrc/core/server.c", "csrc/core/targets/file.c",
        "csrc/core/targets/lua.c", "csrc/core/targets/null.c", "csrc/core/targets/ram.c",
        "csrc/core/targets/targets.c", "csrc/lua/backing.c", "csrc/lua/bridge.c", "csrc/lua/control.c",
        "csrc/lua/device.c", "csrc/lua/dispatch.c", "csrc/lua/layout.c", "csrc/lua/module.c",
        "csrc/lua/process.c", "csrc/lua/request.c", "csrc/lua/rings.c", "csrc/lua/util.c" },
      defines = { "_GNU_SOURCE" },
      libraries = { "uring", "pthread" },
      incdirs = { "$(LIBURING_INCDIR)" },
      libdirs = { "$(LIBURING_LIBDIR)" },
    },
    ublk = "lua/ublk.lua",
    ["ublk.params"] = "lua/ublk/params.lua",
    ["ublk.control"] = "lua/ublk/control.lua",
    ["ublk.errors"] = "lua/ublk/errors.lua",
    ["ublk.decode"] = "lua/ublk/decode.lua",
    ["ublk.doctor"] = "lua/ublk/doctor.lua",
    ["ublk.cli"] = "lua/ublk/cli.lua",
    ["ublk.targets"] = "lua/ublk/targets.lua",
    ["ublk.handler"] = "lua/ublk/handler.lua",
    ["ublk.device"] = "lua/ublk/device.lua",
    ["ublk.records"] = "lua/ublk/records.lua",
    ["ublk.background"] = "lua/ublk/background.lua",
    ["ublk.version"] = "lua/ublk/version.lua",
  },
  install = { bin = { ublk = "bin/ublk" } },
}
test = { type = "command", command = "make test" }
