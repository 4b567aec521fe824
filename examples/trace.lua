-- A disk that logs every request: IMAGE served by plain Lua file I/O, one line per request (op,
-- offset, length, latency) and a latency histogram when it stops. The latency is the server's: from
-- the moment the server got the request from the kernel (req.received) to the handler's answer, so
-- it includes the wait behind the other requests of its batch.
--
--   lua5.4 examples/trace.lua IMAGE [LOG]     (as root; the log goes to LOG, or to stderr)
--
-- Prints "ublk device N: /dev/ublkbN ..." once the disk is usable, serves until Ctrl-C, SIGTERM or
-- `ublk del N`, then deletes it and prints the histogram.
local ublk = require("ublk")

local path = arg[1] or error("usage: lua5.4 examples/trace.lua IMAGE [LOG]", 0)
local image = assert(io.open(path, "r+b"))
image:setvbuf("no") -- every write reaches the file before the request is answered
local size = image:seek("end")
if size == 0 or size % 4096 ~= 0 then
  error(("trace.lua: %s holds %d bytes: the image must be a non-empty multiple of 4096 bytes"):format(path, size), 0)
end
local log = arg[2] and assert(io.open(arg[2], "w")) or io.stderr
log:setvbuf("line")

local buckets, count, worst = {}, 0, 0 -- bucket b: latencies from 2^(b-1) to 2^b microseconds

-- Wrap an op's function: answer as it does, then log the request and its latency.
local function traced(fn)
  return function(req)
    local a, b = fn(req)
    local us = (ublk.now() - req.received) * 1e6
    log:write(("%-5s offset %12d length %8d latency %9.1f us\n"):format(req.op, req.offset, req.length, us))
    local bucket = 0
    while (1 << bucket) < us do bucket = bucket + 1 end
    buckets[bucket] = (buckets[bucket] or 0) + 1
    count, worst = count + 1, math.max(worst, us)
    return a, b
  end
end

local dev <close> = assert(ublk.new {
  size = size, block_size = 4096, queues = 2,
  handler = {
    -- a read may answer with a string of the request's length
    read = traced(function(req)
      image:seek("set", req.offset)
      return image:read(req.length)
    end),
    write = traced(function(req)
      image:seek("set", req.offset)
      image:write(req.buf:read())
    end),
    flush = traced(function() end), -- unbuffered: nothing is waiting to be written
  },
})
assert(dev:start())
io.stdout:setvbuf("line")
print(("ublk device %d: %s (tracing %s to %s)"):format(dev.id, dev.path, path, arg[2] or "stderr"))
local _, why = assert(dev:run())
print(("stopped (%s) and deleted; %d requests, the slowest %.1f us"):format(why, count, worst))
local most, low, high = 0, math.huge, 0
for b, n in pairs(buckets) do most, low, high = math.max(most, n), math.min(low, b), math.max(high, b) end
for b = low, high do
  local n = buckets[b] or 0
  print(("%10s us %8d %s"):format(b == 0 and "<= 1" or ("<= " .. (1 << b)), n, string.rep("#", math.ceil(n * 50 / most))))
end
if log ~= io.stderr then log:close() end
