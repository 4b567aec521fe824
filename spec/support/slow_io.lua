-- A file-backed device whose requests of one op (read or write) wait DELAY seconds in a hook before
-- they go to the file, so that a request is surely with the server when a spec kills it. Run again
-- by `ublk recover`, it recovers the device (UBLK_RECOVER) and serves it the same way. The hook
-- makes FILE.held when a request reaches it, for the spec to know.
--   lua5.4 spec/support/slow_io.lua FILE MODE DELAY OP
local ublk = require("ublk")

local path, mode, delay, op = arg[1], arg[2], tonumber(arg[3]), arg[4]
local dev <close> = assert(ublk.new { target = "file", path = path, recovery = mode,
  hooks = { [op] = function()
    assert(io.open(path .. ".held", "w")):close()
    ublk.sleep(delay)
  end } })
assert(dev:start())
io.stdout:setvbuf("line")
print(("ublk device %d: %s"):format(dev.id, dev.path))
assert(dev:run())
