-- A RAM disk written in Lua: a sparse table of 4 KiB blocks, zeros where never written.
--
--   lua5.4 examples/ramdisk.lua [SIZE [QUEUES [DEPTH]]]     (as root; default 256M, 2 queues, depth 64)
--
-- Prints "ublk device N: /dev/ublkbN ..." once the disk is usable, serves until Ctrl-C, SIGTERM or
-- `ublk del N`, then deletes it. Every request is answered by the Lua functions below, on this
-- script's thread; the kernel is told the device takes discard and write-zeroes (they free blocks)
-- and flush (nothing to do: the data is as durable as it will ever be).
local ublk = require("ublk")

local size, queues, depth = arg[1] or "256M", tonumber(arg[2] or 2), tonumber(arg[3] or 64)
local BS = 4096
local blocks = {} -- block number -> its 4096 bytes; missing: zeros

local function forget(req) -- discard and write-zeroes: both leave zeros
  for b = req.offset // BS, (req.offset + req.length) // BS - 1 do blocks[b] = nil end
end

local dev <close> = assert(ublk.new {
  size = size, block_size = BS, queues = queues, depth = depth,
  discard_granularity = BS,
  handler = {
    read = function(req)
      local buf, first = req.buf, req.offset // BS
      for i = 0, req.length // BS - 1 do
        local data = blocks[first + i]
        if data then buf:write(i * BS, data) else buf:fill(0, i * BS, BS) end
      end
    end,
    write = function(req)
      local buf, first = req.buf, req.offset // BS
      for i = 0, req.length // BS - 1 do blocks[first + i] = buf:read(i * BS, BS) end
    end,
    flush = function() end,
    discard = forget,
    write_zeroes = forget,
  },
})
assert(dev:start())
io.stdout:setvbuf("line")
print(("ublk device %d: %s (Lua RAM disk, %s, %d queues of depth %d)"):format(dev.id, dev.path, size, queues, depth))
local _, why = assert(dev:run())
local n = 0
for _ in pairs(blocks) do n = n + 1 end
print(("stopped (%s) and deleted; %d blocks were written"):format(why, n))
