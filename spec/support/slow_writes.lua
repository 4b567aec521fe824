-- A file-backed device whose writes wait DELAY seconds in a hook before they go to the file, so that
-- a request is surely with the server when a spec kills it. Run again by `ublk recover`, it
-- recovers the device (UBLK_RECOVER) and serves it the same way.
--   lua5.4 spec/support/slow_writes.lua FILE MODE DELAY
local ublk = require("ublk")

local path, mode, delay = arg[1], arg[2], tonumber(arg[3])
local dev <close> = assert(ublk.new { target = "file", path = path, recovery = mode,
  hooks = { write = function() ublk.sleep(delay) end } })
assert(dev:start())
io.stdout:setvbuf("line")
print(("ublk device %d: %s"):format(dev.id, dev.path))
assert(dev:run())
