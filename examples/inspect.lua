-- Create a ublk device, show what the kernel made of it, and delete it.
--   lua5.4 examples/inspect.lua            (as root, on a kernel with ublk_drv)
local ublk = require("ublk")
local human = require("ublk.params").human

local dev <close> = assert(ublk.new {
  size = 64 * 2^20, queues = 2, depth = 64, block_size = 4096, max_io = 512 * 1024,
  discard = true, volatile_cache = true,
})
print(("created ublk device %d: control node %s, disk %s (appears when the device is started)"):format(
  dev.id, dev.char_path, dev.path))

local info = assert(dev:info())
print(("  state %s, %d queues of depth %d, requests up to %s, owner %d:%d"):format(
  info.state, info.queues, info.depth, human(info.max_io), info.owner_uid, info.owner_gid))
print("  flags: " .. table.concat(info.flags, ", "))

local p = assert(dev:params())
print(("  size %s in %d-byte blocks (physical %d), io_min %d, io_opt %d"):format(
  human(p.size), p.block_size, p.physical_block_size, p.io_min, p.io_opt))
print(("  write cache %s, FUA %s, discard %s (granularity %d, up to %s)"):format(
  p.volatile_cache and "yes" or "no", p.fua and "yes" or "no", p.discard and "yes" or "no",
  p.discard_granularity or 0, human(p.max_discard or 0)))
for q = 0, info.queues - 1 do
  print(("  queue %d runs on CPUs %s"):format(q, table.concat(assert(dev:queue_affinity(q)), ",")))
end

assert(dev:delete())
print(("deleted ublk device %d; devices left: %d"):format(info.id, #assert(ublk.list())))
