-- The file target with a pass-through Lua write hook, for `make bench` (its device file-hook: see
-- tools/bench.d/report.lua help): every write goes to Lua first, whose hook returns nothing, so the
-- request goes on to the C file target. Reads never reach Lua. The device is served as ublk.new
-- serves hooks by default: this script's thread owns the queue ring, so the C work (every read, and
-- each write once its hook passed it) runs here too, without entering Lua.
--
--   lua5.4 tools/bench.d/hooked-file.lua PATH [QUEUES [DEPTH]]     (as root; default 1 queue, depth 128)
--
-- Prints "ublk device N: /dev/ublkbN ..." once usable; serves until SIGINT, SIGTERM or `ublk del N`,
-- then stops and deletes the device.
local ublk = require("ublk")

local path = arg[1] or error("usage: hooked-file.lua PATH [QUEUES [DEPTH]]")
local queues, depth = tonumber(arg[2] or 1), tonumber(arg[3] or 128)
local writes = 0

local dev <close> = assert(ublk.new {
  target = "file", path = path, queues = queues, depth = depth,
  hooks = { write = function() writes = writes + 1 end }, -- nothing returned: on to the C target
})
assert(dev:start())
io.stdout:setvbuf("line")
print(("ublk device %d: %s (file target on %s, pass-through write hook, %d queue(s) of depth %d)")
  :format(dev.id, dev.path, path, queues, depth))
local _, why = assert(dev:run())
print(("stopped (%s) and deleted; the hook saw %d writes"):format(why, writes))
