-- A copy-on-write disk: reads come from a base image until a block is written; written blocks live
-- in memory, or with OVERLAY in that file (and OVERLAY.map, a byte per block), where they outlive
-- the server. The base is opened read-only and never modified, so one golden image can back many
-- throw-away disks (a test run's, a VM's).
--
--   lua5.4 examples/cow.lua BASE [OVERLAY]     (as root; BASE's size must be a multiple of 4 KiB)
--
-- Prints "ublk device N: /dev/ublkbN ..." once the disk is usable, serves until Ctrl-C, SIGTERM or
-- `ublk del N`, then deletes it and says how many blocks were written. Every request is answered by
-- the Lua functions below. With OVERLAY the device has recovery = "requeue": when this process is
-- killed, `ublk recover N` runs it again and the disk goes on with what was written.
local ublk = require("ublk")

local path = arg[1] or error("usage: lua5.4 examples/cow.lua BASE [OVERLAY]", 0)
local base = assert(io.open(path, "rb"))
local size = base:seek("end")
local BS = 4096
if size == 0 or size % BS ~= 0 then
  error(("cow.lua: %s holds %d bytes: the base must be a non-empty multiple of %d bytes"):format(path, size, BS), 0)
end
local ZERO = string.rep("\0", BS)

-- Written blocks: block number -> its bytes (in memory), or -> true (in the overlay file).
local written = {}
local overlay, map
if arg[2] then
  local function open(name) -- kept, or made empty
    return io.open(name, "r+b") or assert(io.open(name, "w+b"))
  end
  overlay, map = open(arg[2]), open(arg[2] .. ".map")
  -- unbuffered: a block is in the file (the kernel's page cache) before its request is answered
  overlay:setvbuf("no")
  map:setvbuf("no")
end

-- The overlay's marks, read at the first request: a server taking the device over starts while the
-- old one still writes, and the kernel sends it requests only once the old one has let go.
local loaded = not overlay
local function load_marks()
  loaded = true
  map:seek("set", 0)
  local marks = map:read("a")
  for b = 1, #marks do if marks:byte(b) == 1 then written[b - 1] = true end end
end

local function block(b)
  local data = written[b]
  if data ~= true then return data end
  overlay:seek("set", b * BS)
  return overlay:read(BS)
end

local function keep(b, data)
  if not overlay then written[b] = data return end
  overlay:seek("set", b * BS)
  overlay:write(data)
  if not written[b] then -- the mark after the data: a block marked is a block whole
    map:seek("set", b)
    map:write("\1")
    written[b] = true
  end
end

local function read(req)
  if not loaded then load_marks() end
  local buf, first, n = req.buf, req.offset // BS, req.length // BS
  local i = 0
  while i < n do
    local data = written[first + i] and block(first + i)
    if data then
      buf:write(i * BS, data)
      i = i + 1
    else -- a run of blocks never written: one read of the base
      local j = i + 1
      while j < n and not written[first + j] do j = j + 1 end
      base:seek("set", (first + i) * BS)
      buf:write(i * BS, base:read((j - i) * BS))
      i = j
    end
  end
end

local function write(req)
  if not loaded then load_marks() end
  local buf, first = req.buf, req.offset // BS
  for i = 0, req.length // BS - 1 do keep(first + i, buf:read(i * BS, BS)) end
end

local function zero(req) -- discard and write-zeroes: zeros from now on, whatever the base holds
  if not loaded then load_marks() end
  for b = req.offset // BS, (req.offset + req.length) // BS - 1 do keep(b, ZERO) end
end

local dev <close> = assert(ublk.new {
  size = size, block_size = BS, queues = 2, depth = 64, discard_granularity = BS,
  recovery = overlay and "requeue" or nil,
  handler = { read = read, write = write, flush = function() end, discard = zero, write_zeroes = zero },
})
assert(dev:start())
io.stdout:setvbuf("line")
print(("ublk device %d: %s (copy-on-write over %s, %d MiB)"):format(dev.id, dev.path, path, size // 2^20))
local _, why = assert(dev:run())
local n = 0
for _ in pairs(written) do n = n + 1 end
local ending = why == "handed over" and "handed over to the next server" or ("stopped (%s) and deleted"):format(why)
print(("%s; %d blocks were written, %s is untouched"):format(ending, n, path))
